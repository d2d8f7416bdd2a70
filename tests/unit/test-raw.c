/*
 * Unit tests: the raw format driver (drivers/format/raw.c) over a file:
 * pass-through, the offset/size window and its range errors, truncate,
 * block status, create, and the guessed-raw refusal of format magics in
 * sector 0 (with the magic table of block/registry.c).
 */
#include "drv-test-util.h"

#include "block/block-int.h"

#define MiB (1024 * 1024)

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "raw");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

/* "driver=raw,file.driver=file,file.filename=<img>" plus extra options. */
static const char *raw_opts(const char *extra)
{
    static char buf[8192];

    snprintf(buf, sizeof(buf), "driver=raw,file.driver=file,file.filename=%s%s%s", img,
             *extra ? "," : "", extra);
    return buf;
}

static void file_read(int64_t off, void *buf, size_t len)
{
    int fd = open(img, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static void test_raw_passthrough(void **state)
{
    uint8_t *want = malloc(MiB), *buf = malloc(MiB);
    BlockBackend *blk;

    drv_test_make_file(img, MiB, 0x21);
    blk = drv_test_open_ok(raw_opts(""), BDRV_O_RDWR);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "raw");
    assert_int_equal(blk_getlength(blk), MiB);
    file_read(0, want, MiB);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    drv_test_pattern(want, 5000, 7);
    assert_int_equal(blk_pwrite(blk, 3, 5000, want, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, 65536, 4096, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    file_read(3, buf, 5000);
    assert_memory_equal(buf, want, 5000);
    memset(want, 0, 4096);
    file_read(65536, buf, 4096);
    assert_memory_equal(buf, want, 4096);
    free(want);
    free(buf);
}

static void test_raw_window(void **state)
{
    uint8_t want[8192], buf[8192];
    BlockBackend *blk;

    drv_test_make_file(img, 65536, 0x33);
    blk = drv_test_open_ok(raw_opts("offset=4096,size=8192"), BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), 8192);
    file_read(4096, want, 8192);
    assert_int_equal(blk_pread(blk, 0, 8192, buf, 0), 0);
    assert_memory_equal(buf, want, 8192);

    drv_test_pattern(want, 1000, 5);
    assert_int_equal(blk_pwrite(blk, 100, 1000, want, 0), 0);
    file_read(4096 + 100, buf, 1000);
    assert_memory_equal(buf, want, 1000);

    /* Nothing past the window is reachable. */
    file_read(4096 + 8192, want, 4096);
    assert_true(blk_pwrite(blk, 8192 - 512, 1024, buf, 0) < 0);
    file_read(4096 + 8192, buf, 4096);
    assert_memory_equal(buf, want, 4096);
    assert_true(blk_truncate(blk, 16384, true, PREALLOC_MODE_OFF, 0, NULL) < 0);
    blk_unref(blk);

    /* Without size= the window runs to the end of the file. */
    blk = drv_test_open_ok(raw_opts("offset=61440"), 0);
    assert_int_equal(blk_getlength(blk), 4096);
    blk_unref(blk);
}

static void test_raw_window_errors(void **state)
{
    drv_test_make_file(img, 65536, 0);
    drv_test_open_fails(raw_opts("offset=100000"), 0, "offset 100000 is beyond the end");
    drv_test_open_fails(raw_opts("offset=4096,size=65536"), 0,
                        "offset 4096 + size 65536 exceeds the size");
    drv_test_open_fails(raw_opts("offset=1,size=18446744073709551615"), 0, "exceeds");
    drv_test_open_fails(raw_opts("size=abc"), 0, "size");
    drv_test_open_fails(raw_opts("offset=-1"), 0, "offset");
}

static void test_raw_truncate(void **state)
{
    Error *err = NULL;
    BlockBackend *blk;

    drv_test_make_file(img, 65536, 0);
    blk = drv_test_open_ok(raw_opts("offset=4096"), BDRV_O_RDWR);
    assert_int_equal(blk_truncate(blk, MiB, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), MiB);
    blk_unref(blk);
    blk = drv_test_open_ok(raw_opts(""), 0);
    assert_int_equal(blk_getlength(blk), MiB + 4096);
    blk_unref(blk);

    blk = drv_test_open_ok(raw_opts("size=4096"), BDRV_O_RDWR);
    assert_true(blk_truncate(blk, 8192, true, PREALLOC_MODE_OFF, 0, &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "cannot resize"));
    error_free(err);
    blk_unref(blk);
}

/*
 * The BlockBackend refuses requests past the end of a format node with -EIO
 * (as QEMU's blk_check_byte_request), also after a truncate moved the end;
 * a protocol root (image creation writes files that way) may still grow.
 */
static void test_raw_past_eof(void **state)
{
    static uint8_t buf[8192];
    char opts[4200];
    BlockBackend *blk;

    drv_test_make_file(img, 65536, 0);
    blk = drv_test_open_ok(raw_opts(""), BDRV_O_RDWR);
    assert_int_equal(blk_pread(blk, 65536 - 4096, 4096, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 65536 - 4096, 8192, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 65537, 0, buf, 0), -EIO);
    assert_int_equal(blk_pwrite(blk, 65536, 512, buf, 0), -EIO);
    assert_int_equal(blk_pwrite_zeroes(blk, 65536 - 512, 1024, 0), -EIO);
    assert_int_equal(blk_pdiscard(blk, 65536, 4096), -EIO);
    assert_int_equal(blk_getlength(blk), 65536);
    assert_int_equal(blk_truncate(blk, 32768, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_pread(blk, 32768, 512, buf, 0), -EIO);
    assert_int_equal(blk_truncate(blk, 131072, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_pread(blk, 65536, 8192, buf, 0), 0);
    blk_unref(blk);

    snprintf(opts, sizeof(opts), "driver=file,filename=%s", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 131072, 512, buf, 0), 0);
    assert_int_equal(blk_getlength(blk), 131072 + 512);
    assert_int_equal(blk_pread(blk, 131072 + 512, 512, buf, 0), -EIO);
    blk_unref(blk);
}

typedef struct StatusQuery {
    BlockDriverState *bs;
    int64_t offset, pnum, map;
    BlockDriverState *file;
    int ret;
} StatusQuery;

static void coroutine_fn status_co(void *opaque)
{
    StatusQuery *q = opaque;

    q->ret = bdrv_co_block_status(q->bs, q->offset, 4096, &q->pnum, &q->map, &q->file);
}

static void test_raw_block_status(void **state)
{
    BlockBackend *blk;
    StatusQuery q;

    drv_test_make_file(img, 65536, 0x44);
    blk = drv_test_open_ok(raw_opts("offset=8192"), 0);
    q = (StatusQuery){ .bs = blk_bs(blk), .offset = 4096 };
    drv_test_run_co(blk_get_aio_context(blk), status_co, &q);
    assert_true(q.ret >= 0);
    assert_true(q.ret & BDRV_BLOCK_OFFSET_VALID);
    assert_int_equal(q.map, 8192 + 4096);
    assert_ptr_equal(q.file, bdrv_file_bs(blk_bs(blk)));
    blk_unref(blk);
}

static void test_raw_known_magic(void **state)
{
    static const char *const magics[] = {
        "QFI\xfb", "QED", "KDMV", "# Disk DescriptorFile", "conectix", "vhdxfile",
        "WithoutFreeSpace", "WithouFreSpacExt", "Bochs Virtual HD Image",
        "#!/bin/sh\n#V2.0 Format\n",
    };
    uint8_t sector[512];

    for (size_t i = 0; i < sizeof(magics) / sizeof(magics[0]); i++) {
        memset(sector, 0, sizeof(sector));
        memcpy(sector, magics[i], strlen(magics[i]));
        assert_true(bdrv_buf_has_known_magic(sector, sizeof(sector)));
        /* One byte short of the magic is not enough. */
        assert_false(bdrv_buf_has_known_magic(sector, strlen(magics[i]) - 1));
    }
    memset(sector, 0, sizeof(sector));
    memcpy(sector, "<<< Oracle VM VirtualBox Disk Image >>>\n", 40);
    assert_false(bdrv_buf_has_known_magic(sector, sizeof(sector)));
    memcpy(sector + 64, "\x7f\x10\xda\xbe", 4);
    assert_true(bdrv_buf_has_known_magic(sector, sizeof(sector)));
    memset(sector, 'x', sizeof(sector));
    assert_false(bdrv_buf_has_known_magic(sector, sizeof(sector)));
    assert_false(bdrv_buf_has_known_magic(sector, 0));
}

/* CVE-2008-2004: a guessed raw image must not become a qcow2 image. */
static void test_raw_probed_refuses_magic(void **state)
{
    uint8_t sector[512] = "QFI\xfb", buf[512];
    Error *err = NULL;
    BlockBackend *blk;

    drv_test_make_file(img, 65536, 0);
    blk = blk_new_open(img, NULL, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("open %s: %s", img, error_get_pretty(err));
    }
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "raw");
    assert_true(blk_bs(blk)->probed);
    assert_int_equal(blk_pwrite(blk, 0, 512, sector, 0), -EPERM);
    assert_int_equal(blk_pwrite(blk, 0, 4, sector, 0), -EPERM);
    assert_int_equal(blk_pwrite(blk, 512, 512, sector, 0), 0);
    memset(buf, 0, sizeof(buf));
    buf[0] = 'Q';
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    blk_unref(blk);
    file_read(0, buf, 4);
    assert_memory_equal(buf, "Q\0\0\0", 4);

    /* An explicit driver=raw is trusted. */
    blk = drv_test_open_ok(raw_opts(""), BDRV_O_RDWR);
    assert_false(blk_bs(blk)->probed);
    assert_int_equal(blk_pwrite(blk, 0, 512, sector, 0), 0);
    blk_unref(blk);
    file_read(0, buf, 4);
    assert_memory_equal(buf, "QFI\xfb", 4);
}

typedef struct CreateArgs {
    int ret;
} CreateArgs;

static void coroutine_fn create_co(void *opaque)
{
    CreateArgs *a = opaque;
    const BlockDriver *drv = bdrv_find_format("raw");
    BlockOpts *o = bopts_new();

    assert_int_equal(bopts_set(o, "size", "3M"), 0);
    a->ret = drv->co_create_opts(drv, img, o, NULL);
    bopts_free(o);
}

static void test_raw_create(void **state)
{
    CreateArgs a = { 0 };
    struct stat st;

    unlink(img);
    drv_test_run_co(bdrv_default_aio_context(), create_co, &a);
    assert_int_equal(a.ret, 0);
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_size, 3 * MiB);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_raw_passthrough, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_window, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_window_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_truncate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_past_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_block_status, setup, teardown),
        cmocka_unit_test(test_raw_known_magic),
        cmocka_unit_test_setup_teardown(test_raw_probed_refuses_magic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_create, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
