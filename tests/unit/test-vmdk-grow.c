/*
 * Unit tests: vmdk twoGbMaxExtentSparse / twoGbMaxExtentFlat growth after an
 * interrupted grow (drivers/format/vmdk/stray.c). A file of a new extent's
 * name that holds only (a torn copy of) what the grow writes is replaced;
 * any other file is refused with a message naming it and left untouched.
 * The grown image reads back its data, and coblk's check and qemu-img check
 * (when installed) find nothing.
 * Descriptor rewrites (drivers/format/vmdk/desc-write.c): a descriptor file
 * is replaced by rename (a new inode, the old permissions, no temporary file
 * left); an embedded descriptor spanning sectors, torn by a simulated crash
 * between its sectors, is recovered from its copy (and repaired by a
 * read-write open), or refused when the copy is damaged too.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

#include "drv-test-util.h"

#include <coblk/image.h>

#define KiB 1024LL
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)
#define S0 (10 * MiB)
#define CHUNK (64 * KiB)

static char base[4000], img[4096], ref_base[4000], ref_img[4096];

static void ext_path(char *out, size_t len, const char *b, char kind, int k)
{
    snprintf(out, len, "%s-%c%03d.vmdk", b, kind, k);
}

static void remove_all(void)
{
    char p[4200];

    unlink(img);
    unlink(ref_img);
    for (int i = 1; i <= 4; i++) {
        for (const char *k = "sf"; *k; k++) {
            ext_path(p, sizeof(p), base, *k, i);
            unlink(p);
            ext_path(p, sizeof(p), ref_base, *k, i);
            unlink(p);
        }
    }
}

static int setup(void **state)
{
    snprintf(base, sizeof(base), "%s/coblk-vgrow-%d", drv_test_dir(), (int)getpid());
    snprintf(img, sizeof(img), "%s.vmdk", base);
    snprintf(ref_base, sizeof(ref_base), "%s/coblk-vgrow-ref-%d", drv_test_dir(),
             (int)getpid());
    snprintf(ref_img, sizeof(ref_img), "%s.vmdk", ref_base);
    remove_all();
    return 0;
}

static int teardown(void **state)
{
    remove_all();
    return 0;
}

static void create(const char *path, const char *sub, int64_t size)
{
    char opts[256];

    snprintf(opts, sizeof(opts), "size=%lld,subformat=%s", (long long)size, sub);
    assert_int_equal(drv_test_create("vmdk", path, opts, NULL, 0), 0);
}

static BlockBackend *open_img(void)
{
    return drv_test_open_image("vmdk", img, BDRV_O_RDWR);
}

static void put(BlockBackend *blk, int64_t off, uint8_t seed)
{
    uint8_t buf[CHUNK];

    drv_test_pattern(buf, CHUNK, seed);
    assert_int_equal(blk_pwrite(blk, off, CHUNK, buf, 0), 0);
}

static void expect(BlockBackend *blk, int64_t off, uint8_t seed)
{
    uint8_t want[CHUNK], got[CHUNK];

    drv_test_pattern(want, CHUNK, seed);
    assert_int_equal(blk_pread(blk, off, CHUNK, got, 0), 0);
    assert_memory_equal(want, got, CHUNK);
}

static void checks_clean(void)
{
    BlockBackend *blk = open_img();
    BdrvCheckResult res = { 0 };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.check_errors, 0);
    blk_unref(blk);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        assert_int_equal(drv_test_sh("qemu-img check -q -f vmdk '%s'", img), 0);
    }
}

static int64_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Grows the image (data at 0) to size; then writes and reads back past 2 GiB. */
static void grow_ok(int64_t size)
{
    BlockBackend *blk = open_img();
    Error *err = NULL;

    put(blk, 0, 1);
    if (blk_truncate(blk, size, true, PREALLOC_MODE_OFF, 0, &err) < 0) {
        fail_msg("grow: %s", error_get_pretty(err));
    }
    put(blk, size - CHUNK, 2);
    blk_unref(blk);
    blk = open_img();
    assert_int_equal(blk_getlength(blk), size);
    expect(blk, 0, 1);
    expect(blk, size - CHUNK, 2);
    blk_unref(blk);
    checks_clean();
}

/* The grow to size is refused naming path and why; path keeps len bytes. */
static void grow_refused(int64_t size, const char *path, const char *why, int64_t len)
{
    BlockBackend *blk = open_img();
    Error *err = NULL;

    put(blk, 0, 1);
    assert_int_equal(blk_truncate(blk, size, true, PREALLOC_MODE_OFF, 0, &err), -EEXIST);
    assert_non_null(strstr(error_get_pretty(err), path));
    if (!strstr(error_get_pretty(err), why)) {
        fail_msg("message '%s' lacks '%s'", error_get_pretty(err), why);
    }
    error_free(err);
    assert_int_equal(blk_getlength(blk), S0);
    blk_unref(blk);
    assert_int_equal(file_size(path), len);
    blk = open_img();
    expect(blk, 0, 1);
    blk_unref(blk);
    checks_clean();
}

/* Copies the first len bytes of from to to, zeroing the 512 bytes at hole (-1: none). */
static void copy_torn(const char *from, const char *to, int64_t len, int64_t hole)
{
    assert_int_equal(drv_test_sh("head -c %lld '%s' > '%s'", (long long)len, from, to), 0);
    if (hole >= 0) {
        assert_int_equal(drv_test_sh("dd if=/dev/zero of='%s' bs=512 seek=%lld count=1 "
                                     "conv=notrunc status=none", to, (long long)hole / 512), 0);
    }
}

/*
 * Sparse: the leftover is the new extent file as a grow to 3 GiB creates it
 * (taken from an image created at 3 GiB, whose second extent is the same),
 * first complete, then torn (cut short, its header sector zeroed), then
 * empty: each time the grow replaces it and the image is whole.
 */
static void test_vmdk_grow_sparse_leftover_reused(void **state)
{
    char ref[4200], path[4200];
    int64_t len;

    create(ref_img, "twoGbMaxExtentSparse", 3 * GiB);
    ext_path(ref, sizeof(ref), ref_base, 's', 2);
    ext_path(path, sizeof(path), base, 's', 2);
    len = file_size(ref);
    assert_true(len > 4096);
    for (int round = 0; round < 3; round++) {
        create(img, "twoGbMaxExtentSparse", S0);
        if (round == 0) {
            copy_torn(ref, path, len, -1);
        } else if (round == 1) {
            copy_torn(ref, path, len / 2, 0);
        } else {
            copy_torn(ref, path, 0, -1);
        }
        grow_ok(3 * GiB);
        assert_true(file_size(path) >= len); /* the new extent, plus a grain */
    }
}

/* Sparse: a leftover with a byte the new extent file would not hold is refused. */
static void test_vmdk_grow_sparse_foreign_refused(void **state)
{
    char ref[4200], path[4200];
    int64_t len;

    create(ref_img, "twoGbMaxExtentSparse", 3 * GiB);
    ext_path(ref, sizeof(ref), ref_base, 's', 2);
    ext_path(path, sizeof(path), base, 's', 2);
    len = file_size(ref);
    create(img, "twoGbMaxExtentSparse", S0);
    copy_torn(ref, path, len, -1);
    /* One byte in the (zero) padding of the header. */
    assert_int_equal(drv_test_sh("printf 'x' | dd of='%s' bs=1 seek=300 conv=notrunc "
                                 "status=none", path), 0);
    grow_refused(3 * GiB, path, "holds data the new extent file would not", len);
    /* Larger than the new extent file. */
    copy_torn(ref, path, len, -1);
    assert_int_equal(truncate(path, len + 512), 0);
    grow_refused(3 * GiB, path, "is larger", len + 512);
}

/* Flat: a leftover of zeroes (holes) is reused; one with data, a hard link or a symlink not. */
static void test_vmdk_grow_flat_leftovers(void **state)
{
    char path[4200], first[4200], target[4300];
    int fd;

    ext_path(path, sizeof(path), base, 'f', 2);
    ext_path(first, sizeof(first), base, 'f', 1);
    create(img, "twoGbMaxExtentFlat", S0);
    assert_int_equal(drv_test_sh("truncate -s 100M '%s'", path), 0);
    grow_ok(3 * GiB);
    assert_int_equal(file_size(path), 1 * GiB);

    create(img, "twoGbMaxExtentFlat", S0);
    drv_test_make_file(path, 0, 0);
    assert_int_equal(truncate(path, 200 * MiB), 0);
    fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "u", 1, 100 * MiB), 1);
    close(fd);
    grow_refused(3 * GiB, path, "holds data the new extent file would not", 200 * MiB);
    unlink(path);

    /* The first extent (all holes) under the new name: the image uses it. */
    create(img, "twoGbMaxExtentFlat", S0);
    assert_int_equal(link(first, path), 0);
    grow_refused(3 * GiB, path, "one of the image's extent files", S0 + 0 * MiB);
    unlink(path);

    /* A symlink is never followed. */
    snprintf(target, sizeof(target), "%s.target", path);
    drv_test_make_file(target, 0, 0);
    assert_int_equal(symlink(target, path), 0);
    grow_refused(3 * GiB, path, "not a regular file", (int64_t)0);
    unlink(path);
    unlink(target);
}

/* ---------------------------------------------------------------------- */
/* Descriptor rewrites */

static void test_vmdk_desc_file_replaced(void **state)
{
    struct stat a, b;

    create(img, "twoGbMaxExtentFlat", S0);
    assert_int_equal(chmod(img, 0640), 0);
    assert_int_equal(stat(img, &a), 0);
    grow_ok(3 * GiB);
    assert_int_equal(stat(img, &b), 0);
    assert_true(a.st_ino != b.st_ino);
    assert_int_equal(b.st_mode & 07777, 0640);
    assert_int_not_equal(drv_test_sh("ls '%s' | grep -q 'coblk-vgrow-%d.vmdk.coblk-'",
                                     drv_test_dir(), (int)getpid()), 0);
}

/* The embedded descriptor area of the sparse image at path: offset and size (bytes). */
static void desc_area(const char *path, off_t *off, size_t *cap)
{
    uint8_t hdr[512];
    int fd = open(path, O_RDONLY);
    uint64_t o = 0, c = 0;

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, hdr, 512, 0), 512);
    close(fd);
    for (int i = 7; i >= 0; i--) {
        o = o << 8 | hdr[28 + i];
        c = c << 8 | hdr[36 + i];
    }
    *off = (off_t)(o * 512);
    *cap = (size_t)(c * 512);
    assert_true(*cap >= 4096 && *cap <= 65536);
}

static void rw_area(const char *path, char *buf, size_t len, off_t at, bool write)
{
    int fd = open(path, write ? O_WRONLY : O_RDONLY);

    assert_true(fd >= 0);
    if (write) {
        assert_int_equal(pwrite(fd, buf, len, at), (ssize_t)len);
    } else {
        assert_int_equal(pread(fd, buf, len, at), (ssize_t)len);
    }
    close(fd);
}

/* Puts comment lines before the extent line so that it starts 24 bytes before sector 1. */
static void pad_descriptor(void)
{
    char *area, *out, *rw;
    size_t cap, n;
    off_t off;

    desc_area(img, &off, &cap);
    area = calloc(1, cap + 1);
    out = calloc(1, cap + 1);
    rw_area(img, area, cap, off, false);
    rw = strstr(area, "\nRW ");
    assert_non_null(rw);
    n = (size_t)(rw + 1 - area);
    assert_true(n < 400);
    memcpy(out, area, n);
    while (n < 488) {
        size_t len = 488 - n > 60 ? 60 : 488 - n < 3 ? 3 : 488 - n;

        memset(out + n, '#', len - 1);
        out[n + len - 1] = '\n';
        n += len;
    }
    strcpy(out + n, rw + 1);
    rw_area(img, out, cap, off, true);
    free(area);
    free(out);
}

static void expect_size(int64_t size, int flags)
{
    BlockBackend *blk = drv_test_open_image("vmdk", img, flags);

    assert_int_equal(blk_getlength(blk), size);
    expect(blk, 0, 1);
    blk_unref(blk);
}

/*
 * A monolithicSparse image whose descriptor spans two sectors grows (its
 * extent line changes); the torn state "new sector 0, old sector 1" opens
 * with the new size from the copy, read-only without touching the file, and
 * read-write repairs it (qemu-img then reads the new size). With the copy
 * damaged too, the open fails naming the checksum.
 */
static void test_vmdk_embedded_desc_torn(void **state)
{
    char *before, *after, *torn;
    BlockBackend *blk;
    size_t cap;
    off_t off;

    create(img, "monolithicSparse", S0);
    pad_descriptor();
    blk = open_img();
    put(blk, 0, 1);
    blk_unref(blk);
    desc_area(img, &off, &cap);
    before = calloc(1, cap + 1);
    after = calloc(1, cap + 1);
    torn = calloc(1, cap + 1);
    rw_area(img, before, cap, off, false);
    assert_non_null(strstr(before, "# coblk-crc32: "));
    blk = open_img();
    assert_int_equal(blk_truncate(blk, 2 * S0, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    blk_unref(blk);
    rw_area(img, after, cap, off, false);
    assert_memory_not_equal(before, after, 1024);
    checks_clean();

    memcpy(torn, after, cap);
    memcpy(torn + 512, before + 512, 512);
    rw_area(img, torn, cap, off, true);
    expect_size(2 * S0, 0);
    rw_area(img, before, cap, off, false); /* (reused as scratch) */
    assert_memory_equal(before, torn, cap);
    expect_size(2 * S0, BDRV_O_RDWR);
    rw_area(img, before, cap, off, false);
    assert_memory_equal(before, after, 1024);
    checks_clean();
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        assert_int_equal(drv_test_sh("qemu-img info -f vmdk '%s' | grep -q '(%lld bytes)'", img,
                                     (long long)(2 * S0)), 0);
    }

    memset(torn + cap / 2, 0, cap / 2);
    rw_area(img, torn, cap, off, true);
    {
        char opts[8192];

        snprintf(opts, sizeof(opts), "driver=vmdk,file.driver=file,file.filename=%s", img);
        drv_test_open_fails(opts, 0, "fails its checksum");
    }
    free(before);
    free(after);
    free(torn);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vmdk_grow_sparse_leftover_reused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_grow_sparse_foreign_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_grow_flat_leftovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_desc_file_replaced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_embedded_desc_torn, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
