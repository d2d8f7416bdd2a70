/*
 * Unit tests: resize (bdrv truncate) of the qed, vdi, vpc, vmdk and vhdx
 * drivers. For each format and subformat: grow past what the metadata first
 * mapped (vdi moves data blocks for its map, vpc for its BAT), write past the
 * old end, reopen and read everything back (old data, the new area as
 * zeroes, the new data), check finds nothing; then the shrink rules of the
 * format (allowed: the dropped data is gone and a later grow reads zeroes;
 * refused: -ENOTSUP and the data intact); and the limits each format
 * refuses with a message.
 */
#include <errno.h>
#include <stdio.h>
#include <sys/stat.h>

#include "drv-test-util.h"

#include <coblk/image.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define S0 (10 * MiB)           /* created size */
#define S1 (300 * MiB)          /* grown size: past vdi's map and vpc's BAT sector */
#define CHUNK (64 * KiB)

static char img[4096];

typedef struct Case {
    const char *fmt;
    const char *create;         /* extra create options */
    bool shrink_ok;             /* shrinking below data is allowed */
} Case;

static const Case cases[] = {
    { "qed", "", false },
    { "vdi", "", true },
    { "vdi", "static=on", false },
    { "vpc", "", true },
    { "vpc", "subformat=fixed", true },
    { "vhdx", "", true },
    { "vhdx", "subformat=fixed", true },
    { "vmdk", "", false },
    { "vmdk", "subformat=monolithicFlat", true },
    { "vmdk", "subformat=twoGbMaxExtentSparse", false },
};

static char base[4000];

static int setup(void **state)
{
    /* ".vmdk" so that vmdk extent files are named <base>-flat.vmdk, <base>-s001.vmdk. */
    snprintf(base, sizeof(base), "%s/coblk-resize-%d", drv_test_dir(), (int)getpid());
    snprintf(img, sizeof(img), "%s.vmdk", base);
    return 0;
}

static void remove_image(void)
{
    char ext[4200];

    unlink(img);
    snprintf(ext, sizeof(ext), "%s-flat.vmdk", base);
    unlink(ext);
    for (int i = 1; i <= 5; i++) {
        snprintf(ext, sizeof(ext), "%s-s%03d.vmdk", base, i);
        unlink(ext);
        snprintf(ext, sizeof(ext), "%s-f%03d.vmdk", base, i);
        unlink(ext);
    }
}

static int teardown(void **state)
{
    remove_image();
    return 0;
}

static void create(const Case *c, int64_t size)
{
    char opts[512];
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    remove_image();
    snprintf(opts, sizeof(opts), "size=%lld%s%s", (long long)size, *c->create ? "," : "",
             c->create);
    assert_int_equal(bopts_parse_keyval(o, opts, NULL, NULL), 0);
    if (bdrv_create(c->fmt, img, o, &err) < 0) {
        fail_msg("create %s (%s): %s", c->fmt, c->create, error_get_pretty(err));
    }
}

static BlockBackend *open_img(const Case *c)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", c->fmt, img);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

static void put(BlockBackend *blk, int64_t off, uint8_t seed)
{
    uint8_t buf[CHUNK];

    drv_test_pattern(buf, CHUNK, seed);
    assert_int_equal(blk_pwrite(blk, off, CHUNK, buf, 0), 0);
}

static void expect(BlockBackend *blk, int64_t off, uint8_t seed, const char *what)
{
    uint8_t want[CHUNK], got[CHUNK];

    if (seed) {
        drv_test_pattern(want, CHUNK, seed);
    } else {
        memset(want, 0, CHUNK);
    }
    assert_int_equal(blk_pread(blk, off, CHUNK, got, 0), 0);
    if (memcmp(want, got, CHUNK)) {
        fail_msg("%s: data at %lld differs", what, (long long)off);
    }
}

/* Zero from off to end, read in chunks. */
static void expect_zero_range(BlockBackend *blk, int64_t off, int64_t end)
{
    uint8_t *buf = malloc(MiB);

    for (; off < end; off += MiB) {
        int64_t n = end - off < MiB ? end - off : MiB;

        assert_int_equal(blk_pread(blk, off, n, buf, 0), 0);
        for (int64_t i = 0; i < n; i++) {
            if (buf[i]) {
                fail_msg("byte %lld is 0x%02x, expected zero", (long long)(off + i), buf[i]);
            }
        }
    }
    free(buf);
}

static void no_corruption(BlockBackend *blk)
{
    BdrvCheckResult res = { 0 };
    int ret = bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE);

    assert_true(ret == 0 || ret == -ENOTSUP);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.check_errors, 0);
}

/* Grow, write past the old end, reopen, read back. Returns the grown size. */
static int64_t grow_case(const Case *c)
{
    BlockBackend *blk;
    Error *err = NULL;
    int64_t size;

    create(c, S0);
    blk = open_img(c);
    put(blk, 0, 1);
    put(blk, S0 - CHUNK, 2);
    if (blk_truncate(blk, S1, true, PREALLOC_MODE_OFF, 0, &err) < 0) {
        fail_msg("%s (%s): grow: %s", c->fmt, c->create, error_get_pretty(err));
    }
    size = blk_getlength(blk);
    /* vpc rounds up to a whole CHS geometry (by less than one cylinder). */
    assert_true(size >= S1 && size < S1 + 16 * 255 * 512);
    put(blk, S0 + MiB, 3);
    put(blk, size - CHUNK, 4);
    expect_zero_range(blk, S0, S0 + MiB);
    blk_unref(blk);

    blk = open_img(c);
    assert_int_equal(blk_getlength(blk), size);
    expect(blk, 0, 1, "first chunk");
    expect(blk, S0 - CHUNK, 2, "old last chunk");
    expect(blk, S0 + MiB, 3, "past the old end");
    expect(blk, size - CHUNK, 4, "new last chunk");
    expect_zero_range(blk, S0, S0 + MiB);
    expect_zero_range(blk, S0 + MiB + CHUNK, S0 + 8 * MiB);
    no_corruption(blk);
    blk_unref(blk);
    return size;
}

/* Shrink to between the old end and the data written past it. */
static void shrink_case(const Case *c, int64_t grown)
{
    BlockBackend *blk = open_img(c);
    int64_t to = S0 + MiB / 2, size;
    Error *err = NULL;
    int ret = blk_truncate(blk, to, true, PREALLOC_MODE_OFF, 0, &err);

    if (!c->shrink_ok) {
        if (ret != -ENOTSUP) {
            fail_msg("%s (%s): shrink returned %d, expected -ENOTSUP", c->fmt, c->create, ret);
        }
        assert_non_null(strstr(error_get_pretty(err), "shrink"));
        error_free(err);
        assert_int_equal(blk_getlength(blk), grown);
        expect(blk, S0 + MiB, 3, "data kept after a refused shrink");
        blk_unref(blk);
        return;
    }
    if (ret < 0) {
        fail_msg("%s (%s): shrink: %s", c->fmt, c->create, error_get_pretty(err));
    }
    size = blk_getlength(blk);
    assert_true(size >= to && size < to + 16 * 255 * 512);
    blk_unref(blk);

    blk = open_img(c);
    assert_int_equal(blk_getlength(blk), size);
    expect(blk, S0 - CHUNK, 2, "old last chunk after the shrink");
    no_corruption(blk);
    /* Growing again must not bring the dropped data back. */
    assert_int_equal(blk_truncate(blk, grown, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    expect_zero_range(blk, size, S0 + 2 * MiB);
    expect_zero_range(blk, grown - CHUNK, grown);
    no_corruption(blk);
    blk_unref(blk);
}

static void test_resize_all(void **state)
{
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int64_t grown = grow_case(&cases[i]);

        shrink_case(&cases[i], grown);
    }
}

/* An unallocated tail can always be dropped, even where data cannot be. */
static void test_shrink_unallocated_tail(void **state)
{
    static const Case q = { "qed", "", false };
    BlockBackend *blk;

    create(&q, S0);
    blk = open_img(&q);
    put(blk, S0 - CHUNK, 2);
    assert_int_equal(blk_truncate(blk, S1, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_truncate(blk, S0, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), S0);
    expect(blk, S0 - CHUNK, 2, "kept data");
    blk_unref(blk);
}

/* Resizes that a format cannot do fail with -ENOTSUP and a message. */
static void refuse(const Case *c, int64_t size, int64_t to, int want, const char *msg)
{
    BlockBackend *blk;
    Error *err = NULL;
    int ret;

    create(c, size);
    blk = open_img(c);
    ret = blk_truncate(blk, to, true, PREALLOC_MODE_OFF, 0, &err);
    if (ret != want || !err || !strstr(error_get_pretty(err), msg)) {
        fail_msg("%s (%s) to %lld: got %d '%s', expected %d '%s'", c->fmt, c->create,
                 (long long)to, ret, err ? error_get_pretty(err) : "", want, msg);
    }
    error_free(err);
    assert_int_equal(blk_getlength(blk), size);
    blk_unref(blk);
}

/*
 * vmdk: a grain directory sector maps 4 GiB of 64 KiB grains, so growing a
 * 10 MiB image to 10 GiB moves the directories to the end of the file.
 */
static void test_vmdk_gd_moves(void **state)
{
    static const Case c = { "vmdk", "", false };
    const int64_t to = 10240LL * MiB;
    BlockBackend *blk;

    create(&c, S0);
    blk = open_img(&c);
    put(blk, 0, 1);
    put(blk, S0 - CHUNK, 2);
    assert_int_equal(blk_truncate(blk, to, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    put(blk, to - CHUNK, 3);
    put(blk, to / 2, 4);
    put(blk, S0 - CHUNK, 5);
    blk_unref(blk);
    blk = open_img(&c);
    assert_int_equal(blk_getlength(blk), to);
    expect(blk, 0, 1, "first grain");
    expect(blk, S0 - CHUNK, 5, "rewritten old last grain");
    expect(blk, to / 2, 4, "middle of the new area");
    expect(blk, to - CHUNK, 3, "new end");
    expect(blk, S0, 0, "grown area");
    no_corruption(blk);
    /* Grows again from the moved directories (in their padding, then moved again). */
    assert_int_equal(blk_truncate(blk, 2 * to, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    put(blk, 2 * to - CHUNK, 6);
    blk_unref(blk);
    blk = open_img(&c);
    expect(blk, to - CHUNK, 3, "old end after the second grow");
    expect(blk, 2 * to - CHUNK, 6, "second new end");
    no_corruption(blk);
    blk_unref(blk);
}

/* The size of extent file k (from 1) of a twoGbMaxExtent image, or -1 if it is missing. */
static int64_t extent_file_size(char kind, int k)
{
    char path[4200];
    struct stat st;

    snprintf(path, sizeof(path), "%s-%c%03d.vmdk", base, kind, k);
    return stat(path, &st) == 0 ? (int64_t)st.st_size : -1;
}

/*
 * twoGbMaxExtentSparse / twoGbMaxExtentFlat: growing a 10 MiB image to
 * 5 GiB + 1 MiB fills its one extent to 2 GiB and adds <base>-s002.vmdk
 * (2 GiB) and <base>-s003.vmdk (1 GiB + 1 MiB); growing again to 7 GiB
 * fills the third and adds a fourth. The data stays, every extent takes
 * writes, the image reopens with the new size and checks clean.
 */
static void two_gb_grows(const Case *c, char kind)
{
    const int64_t g = 1024LL * MiB, to = 5 * g + MiB, to2 = 7 * g;
    BlockBackend *blk;

    create(c, S0);
    blk = open_img(c);
    put(blk, 0, 1);
    put(blk, S0 - CHUNK, 2);
    assert_int_equal(blk_truncate(blk, to, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), to);
    put(blk, 2 * g - CHUNK / 2, 3);   /* across the first extents' boundary */
    put(blk, 4 * g + 512, 4);
    put(blk, to - CHUNK, 5);
    blk_unref(blk);
    assert_true(extent_file_size(kind, 2) > 0 && extent_file_size(kind, 3) > 0);
    assert_int_equal(extent_file_size(kind, 4), -1);
    if (kind == 'f') {
        assert_int_equal(extent_file_size(kind, 1), 2 * g);
        assert_int_equal(extent_file_size(kind, 3), g + MiB);
    }
    blk = open_img(c);
    assert_int_equal(blk_getlength(blk), to);
    expect(blk, 0, 1, "first chunk");
    expect(blk, S0 - CHUNK, 2, "old last chunk");
    expect(blk, S0, 0, "grown area of the old extent");
    expect(blk, 2 * g - CHUNK / 2, 3, "across extents 1 and 2");
    expect(blk, 4 * g + 512, 4, "third extent");
    expect(blk, to - CHUNK, 5, "new end");
    no_corruption(blk);
    assert_int_equal(blk_truncate(blk, to2, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    put(blk, to2 - CHUNK, 6);
    put(blk, 6 * g - CHUNK / 2, 7);
    blk_unref(blk);
    blk = open_img(c);
    assert_int_equal(blk_getlength(blk), to2);
    expect(blk, to - CHUNK, 5, "old end after the second grow");
    expect(blk, 6 * g - CHUNK / 2, 7, "across extents 3 and 4");
    expect(blk, to2 - CHUNK, 6, "second new end");
    no_corruption(blk);
    blk_unref(blk);
    assert_int_equal(extent_file_size(kind, 5), -1);
}

static void test_vmdk_two_gb_adds_extents(void **state)
{
    static const Case sparse = { "vmdk", "subformat=twoGbMaxExtentSparse", false };
    static const Case flat = { "vmdk", "subformat=twoGbMaxExtentFlat", true };

    two_gb_grows(&sparse, 's');
    two_gb_grows(&flat, 'f');
}

/* A file already holding a new extent's name is never overwritten: the grow fails. */
static void test_vmdk_two_gb_name_taken(void **state)
{
    static const Case c = { "vmdk", "subformat=twoGbMaxExtentSparse", false };
    char path[4200];
    BlockBackend *blk;
    Error *err = NULL;
    FILE *f;

    create(&c, S0);
    snprintf(path, sizeof(path), "%s-s002.vmdk", base);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("not an extent", f);
    fclose(f);
    blk = open_img(&c);
    put(blk, 0, 1);
    assert_int_equal(blk_truncate(blk, 3LL * 1024 * MiB, true, PREALLOC_MODE_OFF, 0, &err),
                     -EEXIST);
    assert_non_null(strstr(error_get_pretty(err), "exists already"));
    error_free(err);
    assert_int_equal(blk_getlength(blk), S0);
    assert_int_equal(extent_file_size('s', 2), 13);
    blk_unref(blk);
    blk = open_img(&c);
    assert_int_equal(blk_getlength(blk), S0);
    expect(blk, 0, 1, "data after the refused grow");
    no_corruption(blk);
    blk_unref(blk);
}

static void test_limits(void **state)
{
    static const Case qed_small = { "qed", "cluster_size=4096,table_size=1", false };
    static const Case vhdx = { "vhdx", "block_size=1M", true };
    static const Case stream = { "vmdk", "subformat=streamOptimized", false };
    static const Case vmdk = { "vmdk", "", false };
    static const Case vdi = { "vdi", "", true };
    static const Case vdi_static = { "vdi", "static=on", false };

    refuse(&qed_small, S0, 2048LL * MiB, -ENOTSUP, "L1 table maps at most");
    /* 64 TiB in 1 MiB blocks: a 512 MiB BAT, past the 256 MiB limit (smaller BATs move). */
    refuse(&vhdx, S0, 64LL * 1024 * 1024 * MiB, -EFBIG, "BAT would need");
    refuse(&stream, S0, S1, -ENOTSUP, "streamOptimized");
    /* 10 MiB of 64 KiB grains: a directory past VMDK_MAX_GD_BYTES (32 MiB of entries). */
    refuse(&vmdk, S0, 4LL * 1024 * 1024 * 1024 * MiB, -ENOTSUP, "grain directory");
    refuse(&vdi, S0, S0 + 100, -EINVAL, "multiple of 512");
    /*
     * coblk's vdi images pad the map to a 1 MiB-aligned data offset: a map of
     * up to 262016 entries grows in place, and the first blocks can move to
     * make room past that, even in a static image.
     */
    create(&vdi_static, 128LL * MiB);
    {
        BlockBackend *blk = open_img(&vdi_static);
        uint8_t want[4096], buf[4096];

        drv_test_pattern(want, sizeof(want), 5);
        assert_int_equal(blk_pwrite(blk, 100LL * MiB, sizeof(want), want, 0), 0);
        assert_int_equal(blk_truncate(blk, S1, true, PREALLOC_MODE_OFF, 0, NULL), 0);
        assert_int_equal(blk_getlength(blk), S1);
        assert_int_equal(blk_pread(blk, 100LL * MiB, sizeof(buf), buf, 0), 0);
        assert_memory_equal(buf, want, sizeof(want));
        /* 300 GiB: a map past the padding; the first two blocks move to the end. */
        assert_int_equal(blk_truncate(blk, 300LL * 1024 * MiB, true, PREALLOC_MODE_OFF, 0,
                                      NULL), 0);
        assert_int_equal(blk_pread(blk, 100LL * MiB, sizeof(buf), buf, 0), 0);
        assert_memory_equal(buf, want, sizeof(want));
        assert_int_equal(blk_pread(blk, S1 - 4096, sizeof(buf), buf, 0), 0);
        memset(want, 0, sizeof(want));
        assert_memory_equal(buf, want, sizeof(want));
        blk_unref(blk);
        assert_int_equal(drv_test_sh("qemu-img check -q -f vdi '%s'", img), 0);
    }
    /* qemu-img's layout: the map ends where the data starts. */
    remove_image();
    assert_int_equal(drv_test_sh("qemu-img create -q -f vdi -o static=on '%s' 128M", img), 0);
    {
        BlockBackend *blk = open_img(&vdi_static);
        Error *err = NULL;

        assert_int_equal(blk_truncate(blk, S1, true, PREALLOC_MODE_OFF, 0, &err), -ENOTSUP);
        assert_non_null(strstr(error_get_pretty(err), "crash-safely"));
        error_free(err);
        assert_int_equal(blk_getlength(blk), 128LL * MiB);
        blk_unref(blk);
    }
    create(&vdi, S0);
    {
        BlockBackend *blk = open_img(&vdi);

        assert_int_equal(blk_truncate(blk, S1, true, PREALLOC_MODE_FULL, 0, NULL), -ENOTSUP);
        assert_int_equal(blk_getlength(blk), S0);
        blk_unref(blk);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_resize_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shrink_unallocated_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_gd_moves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_two_gb_adds_extents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_two_gb_name_taken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
