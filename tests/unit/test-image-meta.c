/*
 * Unit tests: VD-style metadata of block/image-meta.c through the public
 * API: the parent file name (get for every format, set where the format can
 * change its backing link, -ENOTSUP with a message elsewhere), timestamps
 * (vpc; read-only and unsupported refusals), bdrv_rename of a one-file
 * image (the node's file name follows) and driver capabilities.
 */
#include "drv-test-util.h"

static char base[4096], top[4096], other[4096];

static int setup(void **state)
{
    drv_test_path(base, sizeof(base), "meta-base");
    drv_test_path(top, sizeof(top), "meta-top");
    drv_test_path(other, sizeof(other), "meta-other");
    return 0;
}

static int teardown(void **state)
{
    unlink(base);
    unlink(top);
    unlink(other);
    return 0;
}

static void create(const char *fmt, const char *path, const char *optstr)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, NULL), 0);
    if (bdrv_create(fmt, path, o, &err) < 0) {
        fail_msg("create %s: %s", fmt, error_get_pretty(err));
    }
}

static BlockBackend *open_img(const char *fmt, const char *path, int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    bopts_set(o, "driver", fmt);
    blk = blk_new_open(path, o, flags | BDRV_O_NO_BACKING, &err);
    if (!blk) {
        fail_msg("open %s: %s", path, error_get_pretty(err));
    }
    return blk;
}

static void test_image_meta_parent_qcow2(void **state)
{
    char opts[8300], *name = NULL;
    Error *err = NULL;
    BlockBackend *blk;

    create("qcow2", base, "size=1M");
    snprintf(opts, sizeof(opts), "size=1M,backing_file=%s,backing_fmt=qcow2", base);
    create("qcow2", top, opts);
    blk = open_img("qcow2", top, BDRV_O_RDWR);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &name), 0);
    assert_string_equal(name, base);
    free(name);
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), other, &err), 0);
    blk_unref(blk);

    blk = open_img("qcow2", top, 0);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &name), 0);
    assert_string_equal(name, other);
    free(name);
    blk_unref(blk);
    /* No parent: 0 and NULL. */
    blk = open_img("qcow2", base, 0);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &name), 0);
    assert_null(name);
    blk_unref(blk);
}

static void test_image_meta_parent_unsupported(void **state)
{
    Error *err = NULL;
    BlockBackend *blk;
    char *name = NULL;

    create("vdi", base, "size=1M");
    blk = open_img("vdi", base, BDRV_O_RDWR);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &name), -ENOTSUP);
    assert_null(name);
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), "x.vdi", &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "Format 'vdi'"));
    assert_non_null(strstr(error_get_pretty(err), "does not support changing the parent"));
    error_free(err);
    blk_unref(blk);
}

/* A differencing VHD: the parent name comes from its locators, and can be rewritten. */
static void test_image_meta_parent_vpc(void **state)
{
    char opts[8300], *name = NULL;
    Error *err = NULL;
    BlockBackend *blk;
    int64_t t;

    create("vpc", base, "size=4M");
    snprintf(opts, sizeof(opts), "backing_file=%s,backing_fmt=vpc", base);
    create("vpc", top, opts);
    blk = open_img("vpc", top, BDRV_O_RDWR);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &name), 0);
    assert_non_null(name);
    assert_non_null(strstr(base, strrchr(name, '/') ? strrchr(name, '/') : name));
    free(name);
    /* Rewritten locators (vpc-parent.c; tests/unit/test-vpc-meta.c reads through them). */
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), other, NULL), 0);
    assert_int_equal(bdrv_get_parent_filename(blk_bs(blk), &name), 0);
    assert_string_equal(name, other);
    free(name);
    assert_int_equal(bdrv_set_parent_filename(blk_bs(blk), NULL, &err), -ENOTSUP);
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_set_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_PARENT_MODIFICATION,
                                        1234567890, &err), 0);
    assert_int_equal(bdrv_get_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_PARENT_MODIFICATION, &t),
                     0);
    assert_int_equal(t, 1234567890);
    blk_unref(blk);
}

static void test_image_meta_timestamp_refusals(void **state)
{
    Error *err = NULL;
    BlockBackend *blk;
    int64_t t = -1;

    create("vpc", base, "size=4M");
    blk = open_img("vpc", base, 0);
    assert_int_equal(bdrv_get_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_CREATION, &t), 0);
    assert_true(t > 946684800);
    assert_int_equal(bdrv_set_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_CREATION, t, &err),
                     -EACCES);
    assert_non_null(strstr(error_get_pretty(err), "read-only"));
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_get_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_PARENT_MODIFICATION, &t),
                     -ENOTSUP);
    blk_unref(blk);

    create("qcow2", base, "size=1M");
    blk = open_img("qcow2", base, BDRV_O_RDWR);
    assert_int_equal(bdrv_get_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_CREATION, &t), -ENOTSUP);
    assert_int_equal(bdrv_set_timestamp(blk_bs(blk), BLOCK_TIMESTAMP_CREATION, 0, &err),
                     -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "does not support stored timestamps"));
    error_free(err);
    blk_unref(blk);
}

static void test_image_meta_rename(void **state)
{
    uint8_t buf[4096], back[4096];
    Error *err = NULL;
    BlockBackend *blk;
    struct stat st;

    unlink(other);
    create("qcow2", base, "size=1M");
    blk = open_img("qcow2", base, BDRV_O_RDWR);
    drv_test_pattern(buf, sizeof(buf), 9);
    assert_int_equal(blk_pwrite(blk, 8192, sizeof(buf), buf, 0), 0);
    assert_int_equal(bdrv_rename(blk_bs(blk), other, &err), 0);
    assert_string_equal(bdrv_get_filename(blk_bs(blk)), other);
    assert_string_equal(bdrv_get_filename(bdrv_file_bs(blk_bs(blk))), other);
    assert_int_equal(stat(base, &st), -1);
    /* The open node keeps working on the renamed file. */
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
    blk = open_img("qcow2", other, 0);
    assert_int_equal(blk_pread(blk, 8192, sizeof(back), back, 0), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    assert_int_equal(blk_pread(blk, 0, sizeof(back), back, 0), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    /* The new name must not exist. */
    create("raw", base, "size=4096");
    assert_int_equal(bdrv_rename(blk_bs(blk), base, &err), -EEXIST);
    assert_non_null(strstr(error_get_pretty(err), "File exists"));
    error_free(err);
    blk_unref(blk);
}

static void test_image_meta_capabilities(void **state)
{
    unsigned vpc = bdrv_driver_capabilities("vpc");
    unsigned q2 = bdrv_driver_capabilities("qcow2");

    assert_true(vpc & BDRV_CAP_FORMAT);
    assert_true(vpc & BDRV_CAP_TIMESTAMP);
    assert_true(vpc & BDRV_CAP_UUID);
    assert_false(vpc & BDRV_CAP_SNAPSHOTS);
    assert_true(q2 & BDRV_CAP_SNAPSHOTS);
    assert_true(q2 & BDRV_CAP_BACKING);
    assert_false(q2 & BDRV_CAP_TIMESTAMP);
    assert_true(bdrv_driver_capabilities("file") & BDRV_CAP_PROTOCOL);
    assert_int_equal(bdrv_driver_capabilities("no-such-driver"), 0);
    assert_string_equal(bdrv_capability_name(BDRV_CAP_TIMESTAMP), "timestamp");
    assert_null(bdrv_capability_name(3));
    assert_string_equal(bdrv_driver_extensions("vpc")[0], "vhd");
    assert_null(bdrv_driver_extensions("raw"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_image_meta_parent_qcow2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_meta_parent_unsupported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_meta_parent_vpc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_meta_timestamp_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_image_meta_rename, setup, teardown),
        cmocka_unit_test(test_image_meta_capabilities),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
