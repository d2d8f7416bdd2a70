/*
 * Unit tests: vmdk twoGbMaxExtentSparse / twoGbMaxExtentFlat growth after an
 * interrupted grow (drivers/format/vmdk/stray.c). A file of a new extent's
 * name that holds only (a torn copy of) what the grow writes is replaced;
 * any other file is refused with a message naming it and left untouched.
 * The grown image reads back its data, and coblk's check and qemu-img check
 * (when installed) find nothing.
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vmdk_grow_sparse_leftover_reused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_grow_sparse_foreign_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_grow_flat_leftovers, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
