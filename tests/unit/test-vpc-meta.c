/*
 * Unit tests: vpc (VHD) discard (drivers/format/vpc-discard.c) and the
 * parent file name of differencing disks (drivers/format/vpc-parent.c).
 * qemu-img interop of both is in tests/interop/vpc-qemu.sh.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include "block/block-int.h"

#define MiB (1024 * 1024)

static char img[4096], parent[4096], parent2[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vpcm");
    drv_test_path(parent, sizeof(parent), "vpcm-parent");
    drv_test_path(parent2, sizeof(parent2), "vpcm-parent2");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(parent);
    unlink(parent2);
    return 0;
}

static void create(const char *path, const char *optstr)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, NULL), 0);
    if (bdrv_create("vpc", path, o, &err) < 0) {
        fail_msg("create %s: %s", optstr, error_get_pretty(err));
    }
}

static BlockBackend *open_vpc(const char *path, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=vpc,file.driver=file,file.filename=%s", path);
    return drv_test_open_ok(opts, flags);
}

static int64_t file_size(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

static void expect(BlockBackend *blk, const uint8_t *want, int64_t len)
{
    uint8_t *buf = malloc((size_t)len);

    assert_int_equal(blk_pread(blk, 0, len, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)len);
    free(buf);
}

static void check_clean(BlockBackend *blk)
{
    BdrvCheckResult res = { 0 };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions, 0);
    assert_int_equal(res.check_errors, 0);
}

/* Dynamic disk (2 MiB blocks): whole blocks unmap and read zero; partial ones keep data. */
static void test_vpc_discard(void **state)
{
    uint8_t *want = malloc(10 * MiB);
    int64_t len0, len1;
    BlockBackend *blk;

    create(img, "size=10M,force_size=on");
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, 10 * MiB, 3);
    assert_int_equal(blk_pwrite(blk, 0, 10 * MiB, want, 0), 0);
    len0 = file_size(img);

    /* No whole block inside: nothing changes. */
    assert_int_equal(blk_pdiscard(blk, MiB, 2 * MiB), 0);
    expect(blk, want, 10 * MiB);
    /* Blocks 1 and 2 (and partial pieces around them). */
    assert_int_equal(blk_pdiscard(blk, MiB + 512, 5 * MiB), 0);
    memset(want + 2 * MiB, 0, 4 * MiB);
    expect(blk, want, 10 * MiB);
    assert_int_equal(file_size(img), len0); /* their space is punched, not cut */

    /* The last block: the file gets shorter by one block and its bitmap. */
    assert_int_equal(blk_pdiscard(blk, 8 * MiB, 2 * MiB), 0);
    memset(want + 8 * MiB, 0, 2 * MiB);
    expect(blk, want, 10 * MiB);
    len1 = file_size(img);
    assert_int_equal(len1, len0 - 2 * MiB - 512);

    /* New blocks take the discarded places before the file grows. */
    memset(want + 2 * MiB + 4096, 0x5a, 8192);
    assert_int_equal(blk_pwrite(blk, 2 * MiB + 4096, 8192, want + 2 * MiB + 4096, 0), 0);
    memset(want + 4 * MiB, 0x6b, 512);
    assert_int_equal(blk_pwrite(blk, 4 * MiB, 512, want + 4 * MiB, 0), 0);
    assert_int_equal(file_size(img), len1);
    memset(want + 9 * MiB, 0x7c, 512);
    assert_int_equal(blk_pwrite(blk, 9 * MiB, 512, want + 9 * MiB, 0), 0);
    assert_int_equal(file_size(img), len0);
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);

    blk = open_vpc(img, 0);
    expect(blk, want, 10 * MiB);
    check_clean(blk);
    blk_unref(blk);

    /* Fixed disks keep their data (discard is advisory). */
    create(img, "size=4M,force_size=on,subformat=fixed");
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    memset(want, 0x44, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 0, 4 * MiB), 0);
    expect(blk, want, 4 * MiB);
    blk_unref(blk);
    free(want);
}

/* A differencing disk's unmapped blocks would read the parent: discard keeps them. */
static void test_vpc_discard_differencing(void **state)
{
    uint8_t *want = malloc(4 * MiB);
    char opt[8300];
    BlockBackend *blk;

    create(parent, "size=4M,force_size=on");
    blk = open_vpc(parent, BDRV_O_RDWR);
    memset(want, 0x77, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    blk_unref(blk);
    snprintf(opt, sizeof(opt), "backing_file=%s", strrchr(parent, '/') + 1);
    create(img, opt);
    blk = open_vpc(img, BDRV_O_RDWR | BDRV_O_UNMAP);
    memset(want, 0x12, 2 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 2 * MiB, want, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 0, 4 * MiB), 0);
    expect(blk, want, 4 * MiB);
    blk_unref(blk);
    free(want);
}

/* Writes 4 MiB of byte into a new parent at path. */
static void make_parent(const char *path, uint8_t byte, uint8_t *want)
{
    BlockBackend *blk;

    create(path, "size=4M,force_size=on");
    blk = open_vpc(path, BDRV_O_RDWR);
    memset(want, byte, 4 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, want, 0), 0);
    blk_unref(blk);
}

static void test_vpc_set_parent(void **state)
{
    uint8_t *want = malloc(4 * MiB);
    const char *p2 = strrchr(parent2, '/') + 1;
    char opt[8300], *got = NULL;
    uint8_t u1[16], u2[16];
    Error *err = NULL;
    BlockBackend *blk;

    make_parent(parent, 0x77, want);
    make_parent(parent2, 0x55, want);
    snprintf(opt, sizeof(opt), "backing_file=%s", strrchr(parent, '/') + 1);
    create(img, opt);
    blk = open_vpc(img, BDRV_O_RDWR);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u1), 0);
    memset(want + MiB, 0x11, 4096);
    assert_int_equal(blk_pwrite(blk, MiB, 4096, want + MiB, 0), 0);

    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), NULL, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "removing the parent"));
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), p2, NULL), 0);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &got), 0);
    assert_string_equal(got, p2);
    free(got);
    blk_unref(blk);

    /* The new parent's data shows through; the parent UUID stays as it was. */
    blk = open_vpc(img, BDRV_O_RDWR);
    assert_string_equal(blk_bs(blk)->backing_file, p2);
    expect(blk, want, 4 * MiB);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_PARENT, u2), 0);
    assert_memory_equal(u1, u2, 16);
    /* A new block after the reopen must not land on the moved header. */
    memset(want + 3 * MiB, 0x22, 8192);
    assert_int_equal(blk_pwrite(blk, 3 * MiB, 8192, want + 3 * MiB, 0), 0);
    check_clean(blk);
    blk_unref(blk);
    blk = open_vpc(img, BDRV_O_RDWR);
    expect(blk, want, 4 * MiB);
    /* Twice: the header moves again. */
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), strrchr(parent, '/') + 1, NULL), 0);
    blk_unref(blk);
    blk = open_vpc(img, 0);
    memset(want, 0x77, MiB);
    memset(want + MiB + 4096, 0x77, 2 * MiB - 4096);
    memset(want + 3 * MiB + 8192, 0x77, MiB - 8192);
    expect(blk, want, 4 * MiB);
    blk_unref(blk);

    /* A dynamic disk has no parent to rename. */
    blk = open_vpc(parent, BDRV_O_RDWR);
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), p2, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "not a differencing disk"));
    error_free(err);
    blk_unref(blk);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vpc_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_discard_differencing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_set_parent, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
