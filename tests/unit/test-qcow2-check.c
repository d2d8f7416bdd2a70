/*
 * Unit tests: qcow2 check and repair (drivers/format/qcow2/check.c and
 * rebuild.c) on images made by coblk and corrupted byte by byte here:
 * leaks, refcounts too low, refcount 0 (rebuild), OFLAG_COPIED, references
 * past the end of the file, the fragmentation figures. The interop script
 * tests/interop/qcow2-check.sh compares the same cases with qemu-img check.
 */
#include "qcow2-test-edit.h"

#include "coblk/image.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2-check");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

static void quiet(void *opaque, const char *msg)
{
    (*(int *)opaque)++;
}

/* Runs a check on a fresh open; returns the result. */
static BdrvCheckResult check(BdrvCheckMode fix)
{
    int reports = 0;
    BdrvCheckResult r = { .report = quiet, .report_opaque = &reports };
    BlockBackend *blk = qe_open(img, fix ? BDRV_O_RDWR : 0);

    assert_int_equal(bdrv_check(blk_bs(blk), &r, fix), 0);
    blk_unref(blk);
    if (r.corruptions || r.leaks) {
        assert_true(reports > 0);
    }
    return r;
}

static void assert_clean(void)
{
    BdrvCheckResult r = check(BDRV_FIX_NONE);

    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
    assert_int_equal(r.check_errors, 0);
}

/* 64 KiB clusters: 4 data clusters at 0, 1 at 8 MiB (same L2 table). */
static void make_image(void)
{
    BlockBackend *blk;

    qe_create(img, "size=64M");
    blk = qe_open(img, BDRV_O_RDWR);
    qe_fill(blk, 0, 256 * KiB, 0x11);
    qe_fill(blk, 8 * MiB, 64 * KiB, 0x22);
    blk_unref(blk);
}

static void assert_data(void)
{
    BlockBackend *blk = qe_open(img, 0);

    qe_expect(blk, 0, 256 * KiB, 0x11);
    qe_expect(blk, 8 * MiB, 64 * KiB, 0x22);
    blk_unref(blk);
}

static void test_check_clean(void **state)
{
    BdrvCheckResult r;

    make_image();
    r = check(BDRV_FIX_NONE);
    assert_int_equal(r.corruptions + r.leaks + r.check_errors, 0);
    assert_int_equal(r.total_clusters, 64 * MiB / (64 * KiB));
    assert_int_equal(r.allocated_clusters, 5);
    assert_true(r.fragmented_clusters <= r.allocated_clusters);
    assert_int_equal(r.compressed_clusters, 0);
    assert_true(r.image_end_offset > 0 && r.image_end_offset % (64 * KiB) == 0);
}

static void test_check_leaks(void **state)
{
    uint64_t c;
    BdrvCheckResult r;
    int fd;

    make_image();
    fd = open(img, O_RDWR);
    c = (uint64_t)lseek(fd, 0, SEEK_END) >> 16;
    assert_int_equal(ftruncate(fd, (off_t)((c + 2) << 16)), 0);
    close(fd);
    qe_setref(img, c, 1);
    qe_setref(img, c + 1, 5);
    r = check(BDRV_FIX_NONE);
    assert_int_equal(r.leaks, 2);
    assert_int_equal(r.corruptions, 0);
    r = check(BDRV_FIX_LEAKS);
    assert_int_equal(r.leaks_fixed, 2);
    assert_clean();
    assert_data();
}

static void test_check_refcount_low(void **state)
{
    BdrvCheckResult r;
    uint64_t e;

    make_image();
    e = qe_rd64(img, qe_l2slot(img, 0));
    /* refcount 0 on a used data cluster: an error that needs a rebuild */
    qe_setref(img, (e & 0x00fffffffffffe00ULL) >> 16, 0);
    r = check(BDRV_FIX_NONE);
    assert_true(r.corruptions >= 1);
    r = check(BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_true(r.corruptions_fixed >= 1);
    assert_clean();
    assert_data();
}

static void test_check_refcount_high(void **state)
{
    BdrvCheckResult r;
    uint64_t e;

    make_image();
    e = qe_rd64(img, qe_l2slot(img, 64 * KiB));
    qe_setref(img, (e & 0x00fffffffffffe00ULL) >> 16, 2);
    r = check(BDRV_FIX_NONE);
    assert_int_equal(r.leaks, 1);
    assert_int_equal(r.corruptions, 1); /* OFLAG_COPIED with refcount 2 */
    r = check(BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_int_equal(r.leaks_fixed, 1);
    assert_clean();
    assert_data();
}

static void test_check_copied(void **state)
{
    BdrvCheckResult r;
    uint64_t slot, l1;

    make_image();
    slot = qe_l2slot(img, 0);
    qe_wr64(img, slot, qe_rd64(img, slot) & ~(1ULL << 63));
    l1 = qe_rd64(img, 40);
    qe_wr64(img, l1, qe_rd64(img, l1) & ~(1ULL << 63));
    r = check(BDRV_FIX_NONE);
    assert_int_equal(r.corruptions, 2);
    r = check(BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_int_equal(r.corruptions_fixed, 2);
    assert_clean();
    assert_true(qe_rd64(img, slot) >> 63);
    assert_data();
}

static void test_check_past_eof(void **state)
{
    BdrvCheckResult r;

    make_image();
    qe_wr64(img, qe_l2slot(img, 128 * KiB), (1ULL << 63) | (1ULL << 30));
    r = check(BDRV_FIX_NONE);
    assert_true(r.corruptions >= 1);
    assert_int_equal(r.leaks, 1); /* the cluster the entry used to name */
}

static void test_check_reftable_broken(void **state)
{
    BdrvCheckResult r;
    uint64_t rt;

    make_image();
    rt = qe_rd64(img, 48);
    qe_wr64(img, rt + 8, 1ULL << 32); /* refcount block past the end of the file */
    r = check(BDRV_FIX_NONE);
    assert_true(r.corruptions >= 1);
    r = check(BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_true(r.corruptions_fixed >= 1);
    assert_clean();
    assert_data();
    assert_true(qe_rd64(img, 48) != rt); /* a new refcount table */
}

static void test_check_fix_read_only(void **state)
{
    BdrvCheckResult r = { 0 };
    BlockBackend *blk;

    make_image();
    blk = qe_open(img, 0);
    assert_int_equal(bdrv_check(blk_bs(blk), &r, BDRV_FIX_LEAKS), -EACCES);
    blk_unref(blk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check_clean, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_leaks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_refcount_low, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_refcount_high, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_copied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_past_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_reftable_broken, setup, teardown),
        cmocka_unit_test_setup_teardown(test_check_fix_read_only, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
