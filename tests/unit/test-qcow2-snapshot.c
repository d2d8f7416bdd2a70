/*
 * Unit tests: qcow2 internal snapshots and the vmstate area
 * (drivers/format/qcow2/snapshot.c): create / list / goto / delete with the
 * data read back and a clean check after each step, ids, errors, vmstate
 * save / load, and corrupt snapshot tables (absurd count, table past the
 * end of the file, snapshot L1 table too large) refused at open with a
 * message. tests/interop/qcow2-snapshot.sh does the same against qemu-img.
 */
#include "qcow2-test-edit.h"

#include "coblk/image.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2-snap");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

static void quiet(void *opaque, const char *msg)
{
    print_message("check: %s\n", msg);
}

static void assert_clean(BlockBackend *blk)
{
    BdrvCheckResult r = { .report = quiet };

    assert_int_equal(bdrv_check(blk_bs(blk), &r, BDRV_FIX_NONE), 0);
    assert_int_equal(r.corruptions, 0);
    assert_int_equal(r.leaks, 0);
    assert_int_equal(r.check_errors, 0);
}

static int snap(BlockBackend *blk, const char *id, const char *name, uint64_t vmsize)
{
    BlockSnapshotInfo sn = { 0 };
    Error *err = NULL;
    int ret;

    snprintf(sn.id_str, sizeof(sn.id_str), "%s", id);
    snprintf(sn.name, sizeof(sn.name), "%s", name);
    sn.date_sec = 1700000000;
    sn.vm_state_size = vmsize;
    sn.icount = UINT64_MAX;
    ret = bdrv_snapshot_create(blk_bs(blk), &sn, &err);
    error_free(err);
    return ret;
}

static void test_snapshot_cycle(void **state)
{
    BlockSnapshotInfo *list;
    BlockBackend *blk;
    Error *err = NULL;

    qe_create(img, "size=32M");
    blk = qe_open(img, BDRV_O_RDWR);
    qe_fill(blk, 0, MiB, 0x11);
    assert_int_equal(snap(blk, "", "one", 0), 0);
    assert_clean(blk);
    qe_fill(blk, 0, 64 * KiB, 0x22);        /* copy-on-write of a shared cluster */
    qe_fill(blk, 16 * MiB, 64 * KiB, 0x33);
    /* Inside a shared cluster whose table is cached: not COPIED, so no in-place write hit. */
    qe_fill(blk, 128 * KiB + 4 * KiB, 4 * KiB, 0x55);
    assert_int_equal(snap(blk, "", "two", 0), 0);
    qe_fill(blk, 64 * KiB, 64 * KiB, 0x44);
    assert_clean(blk);

    assert_int_equal(bdrv_snapshot_list(blk_bs(blk), &list), 2);
    assert_string_equal(list[0].id_str, "1");
    assert_string_equal(list[0].name, "one");
    assert_string_equal(list[1].id_str, "2");
    assert_string_equal(list[1].name, "two");
    assert_int_equal(list[1].disk_size, 32 * MiB);
    assert_int_equal(list[1].date_sec, 1700000000);
    free(list);

    assert_int_equal(bdrv_snapshot_goto(blk_bs(blk), "one", &err), 0);
    qe_expect(blk, 0, MiB, 0x11);
    qe_expect(blk, 16 * MiB, 64 * KiB, 0);
    assert_clean(blk);
    assert_int_equal(bdrv_snapshot_goto(blk_bs(blk), "2", &err), 0); /* by id */
    qe_expect(blk, 0, 64 * KiB, 0x22);
    qe_expect(blk, 64 * KiB, 64 * KiB, 0x11);
    qe_expect(blk, 128 * KiB, 4 * KiB, 0x11);
    qe_expect(blk, 128 * KiB + 4 * KiB, 4 * KiB, 0x55);
    qe_expect(blk, 128 * KiB + 8 * KiB, 56 * KiB, 0x11);
    qe_expect(blk, 16 * MiB, 64 * KiB, 0x33);

    assert_int_equal(bdrv_snapshot_delete(blk_bs(blk), NULL, "one", &err), 0);
    assert_clean(blk);
    assert_int_equal(bdrv_snapshot_delete(blk_bs(blk), "2", NULL, &err), 0);
    assert_clean(blk);
    assert_int_equal(bdrv_snapshot_list(blk_bs(blk), &list), 0);
    free(list);
    qe_expect(blk, 0, 64 * KiB, 0x22);
    qe_fill(blk, 0, 64 * KiB, 0x55);        /* OFLAG_COPIED set again: in place */
    assert_clean(blk);
    blk_unref(blk);

    blk = qe_open(img, 0);                  /* durable */
    qe_expect(blk, 0, 64 * KiB, 0x55);
    qe_expect(blk, 64 * KiB, 68 * KiB, 0x11);
    qe_expect(blk, 132 * KiB, 4 * KiB, 0x55);           /* snapshot "two" had it */
    qe_expect(blk, 136 * KiB, 888 * KiB, 0x11);
    assert_clean(blk);
    blk_unref(blk);
}

static void test_snapshot_errors(void **state)
{
    BlockBackend *blk;
    Error *err = NULL;

    qe_create(img, "size=4M");
    blk = qe_open(img, BDRV_O_RDWR);
    assert_int_equal(snap(blk, "7", "a", 0), 0);
    assert_int_equal(snap(blk, "7", "b", 0), -EEXIST);
    assert_int_equal(snap(blk, "", "c", 0), 0);  /* next id: 8 */
    assert_int_equal(bdrv_snapshot_goto(blk_bs(blk), "nosuch", &err), -ENOENT);
    assert_non_null(strstr(error_get_pretty(err), "nosuch"));
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_snapshot_delete(blk_bs(blk), "8", "a", &err), -ENOENT);
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_snapshot_delete(blk_bs(blk), "8", "c", &err), 0);
    blk_unref(blk);
    blk = qe_open(img, 0);
    assert_int_equal(snap(blk, "", "ro", 0), -EACCES);
    blk_unref(blk);
}

static void test_vmstate(void **state)
{
    uint8_t *a = malloc(300 * KiB), *b = malloc(300 * KiB);
    BlockBackend *blk;

    qe_create(img, "size=10M");
    blk = qe_open(img, BDRV_O_RDWR);
    qe_fill(blk, 0, 10 * MiB, 0x66);
    drv_test_pattern(a, 300 * KiB, 9);
    assert_int_equal(bdrv_save_vmstate(blk_bs(blk), a, 12345, 300 * KiB), 300 * KiB);
    assert_int_equal(snap(blk, "", "vm", 300 * KiB), 0);
    assert_int_equal(bdrv_load_vmstate(blk_bs(blk), b, 12345, 300 * KiB), 300 * KiB);
    assert_memory_equal(a, b, 300 * KiB);
    assert_int_equal(blk_getlength(blk), 10 * MiB);
    qe_expect(blk, 0, 10 * MiB, 0x66);
    assert_clean(blk);
    blk_unref(blk);
    blk = qe_open(img, 0);
    memset(b, 0, 300 * KiB);
    assert_int_equal(bdrv_load_vmstate(blk_bs(blk), b, 12345, 300 * KiB), 300 * KiB);
    assert_memory_equal(a, b, 300 * KiB);
    blk_unref(blk);
    free(a);
    free(b);
}

/* An image with one snapshot; returns the snapshot table offset. */
static uint64_t image_with_snapshot(void)
{
    BlockBackend *blk;

    qe_create(img, "size=4M");
    blk = qe_open(img, BDRV_O_RDWR);
    qe_fill(blk, 0, 64 * KiB, 1);
    assert_int_equal(snap(blk, "", "s", 0), 0);
    blk_unref(blk);
    return qe_rd64(img, 64);
}

static void test_corrupt_tables(void **state)
{
    char opts[4200];
    uint64_t st;

    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", img);
    image_with_snapshot();
    qe_wr32(img, 60, 100000);
    drv_test_open_fails(opts, 0, "nb_snapshots 100000");

    image_with_snapshot();
    qe_wr64(img, 64, 1ULL << 40);
    drv_test_open_fails(opts, 0, "outside the file");

    image_with_snapshot();
    qe_wr32(img, 60, 3000);     /* more entries than the table holds */
    drv_test_open_fails(opts, 0, "snapshot table");

    st = image_with_snapshot();
    qe_wr32(img, st + 8, 1U << 30);   /* snapshot L1 of 8 GiB */
    drv_test_open_fails(opts, 0, "snapshot L1 table");

    st = image_with_snapshot();
    qe_wr64(img, st, 1ULL << 40);     /* snapshot L1 past the end */
    drv_test_open_fails(opts, 0, "snapshot L1 table");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_snapshot_cycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmstate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_tables, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
