/*
 * Unit tests: the null-co and null-aio protocol drivers
 * (drivers/protocol/null.c): size, read-zeroes, latency, block status,
 * the protocol prefix, and null-aio completing from the loop.
 */
#include "drv-test-util.h"

static const char *const drivers[] = { "null-co", "null-aio" };

static void test_null_default_size(void **state)
{
    for (int i = 0; i < 2; i++) {
        char opts[64];
        BlockBackend *blk;

        snprintf(opts, sizeof(opts), "driver=%s", drivers[i]);
        blk = drv_test_open_ok(opts, BDRV_O_RDWR);
        assert_int_equal(blk_getlength(blk), 1LL << 30);
        assert_string_equal(bdrv_get_format_name(blk_bs(blk)), drivers[i]);
        blk_unref(blk);
    }
}

static void test_null_size(void **state)
{
    BlockBackend *blk = drv_test_open_ok("driver=null-co,size=64M", 0);

    assert_int_equal(blk_getlength(blk), 64LL << 20);
    blk_unref(blk);
    blk = drv_test_open_ok("driver=null-aio,size=12345", 0);
    assert_int_equal(blk_getlength(blk), 12345);
    blk_unref(blk);
    drv_test_open_fails("driver=null-co,size=lots", 0, "size");
    drv_test_open_fails("driver=null-co,read-zeroes=maybe", 0, "read-zeroes");
    drv_test_open_fails("driver=null-co,latency-ns=-1", 0, "latency-ns");
    drv_test_open_fails("driver=null-co,bogus=1", 0, "bogus");
}

/* Without read-zeroes the buffer is left as it was; with it, zeroed. */
static void test_null_read_zeroes(void **state)
{
    uint8_t buf[4096], want[4096];

    for (int i = 0; i < 2; i++) {
        char opts[128];
        BlockBackend *blk;

        snprintf(opts, sizeof(opts), "driver=%s", drivers[i]);
        blk = drv_test_open_ok(opts, 0);
        memset(buf, 0xaa, sizeof(buf));
        memset(want, 0xaa, sizeof(want));
        assert_int_equal(blk_pread(blk, 8192, sizeof(buf), buf, 0), 0);
        assert_memory_equal(buf, want, sizeof(buf));
        blk_unref(blk);

        snprintf(opts, sizeof(opts), "driver=%s,read-zeroes=on", drivers[i]);
        blk = drv_test_open_ok(opts, 0);
        memset(want, 0, sizeof(want));
        assert_int_equal(blk_pread(blk, 8192, sizeof(buf), buf, 0), 0);
        assert_memory_equal(buf, want, sizeof(buf));
        blk_unref(blk);
    }
}

static void test_null_writes(void **state)
{
    uint8_t buf[4096] = { 1, 2, 3 };

    for (int i = 0; i < 2; i++) {
        char opts[128];
        BlockBackend *blk;

        snprintf(opts, sizeof(opts), "driver=%s,size=1M", drivers[i]);
        blk = drv_test_open_ok(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
        assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
        assert_int_equal(blk_pwrite(blk, 1, 17, buf, 0), 0);
        assert_int_equal(blk_pwrite_zeroes(blk, 4096, 65536, 0), 0);
        assert_int_equal(blk_pdiscard(blk, 4096, 65536), 0);
        assert_int_equal(blk_flush(blk), 0);
        blk_unref(blk);
    }
}

static void test_null_latency(void **state)
{
    for (int i = 0; i < 2; i++) {
        char opts[128];
        uint8_t buf[512];
        BlockBackend *blk;
        int64_t t0;

        snprintf(opts, sizeof(opts), "driver=%s,latency-ns=5000000", drivers[i]);
        blk = drv_test_open_ok(opts, 0);
        t0 = aio_clock_ns();
        assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
        assert_true(aio_clock_ns() - t0 >= 5000000);
        blk_unref(blk);
    }
}

typedef struct StatusQuery {
    BlockDriverState *bs;
    int64_t pnum, map;
    BlockDriverState *file;
    int ret;
} StatusQuery;

static void coroutine_fn status_co(void *opaque)
{
    StatusQuery *q = opaque;

    q->ret = bdrv_co_block_status(q->bs, 4096, 65536, &q->pnum, &q->map, &q->file);
}

static void test_null_block_status(void **state)
{
    BlockBackend *blk = drv_test_open_ok("driver=null-co,read-zeroes=on", 0);
    StatusQuery q = { .bs = blk_bs(blk) };

    drv_test_run_co(blk_get_aio_context(blk), status_co, &q);
    assert_true(q.ret >= 0);
    assert_true(q.ret & BDRV_BLOCK_ZERO);
    assert_true(q.ret & BDRV_BLOCK_OFFSET_VALID);
    assert_int_equal(q.pnum, 65536);
    assert_int_equal(q.map, 4096);
    blk_unref(blk);

    blk = drv_test_open_ok("driver=null-co", 0);
    q = (StatusQuery){ .bs = blk_bs(blk) };
    drv_test_run_co(blk_get_aio_context(blk), status_co, &q);
    assert_true(q.ret >= 0);
    assert_false(q.ret & BDRV_BLOCK_ZERO);
    blk_unref(blk);
}

static void test_null_protocol_prefix(void **state)
{
    for (int i = 0; i < 2; i++) {
        char name[64];
        Error *err = NULL;
        BlockBackend *blk;

        snprintf(name, sizeof(name), "%s://", drivers[i]);
        blk = blk_new_open(name, NULL, 0, &err);
        if (!blk) {
            fail_msg("open %s: %s", name, error_get_pretty(err));
        }
        /* A protocol URL gets a probed format (raw) over the protocol node. */
        BlockDriverState *proto = blk_bs(blk);

        if (strcmp(bdrv_get_format_name(proto), drivers[i]) != 0) {
            assert_string_equal(bdrv_get_format_name(proto), "raw");
            proto = bdrv_file_bs(proto);
        }
        assert_string_equal(bdrv_get_format_name(proto), drivers[i]);
        assert_int_equal(blk_getlength(blk), 1LL << 30);
        blk_unref(blk);
    }
}

typedef struct AioDone {
    int ret;
    int calls;
} AioDone;

static void aio_done_cb(void *opaque, int ret)
{
    AioDone *d = opaque;

    d->ret = ret;
    d->calls++;
}

/* null-aio requests complete through the loop, never inside the submission. */
static void test_null_aio_completes_later(void **state)
{
    BlockBackend *blk = drv_test_open_ok("driver=null-aio,read-zeroes=on", 0);
    uint8_t buf[4096];
    AioDone d = { .ret = -1 };
    IOVector qiov;

    memset(buf, 0xaa, sizeof(buf));
    iovector_init_buf(&qiov, buf, sizeof(buf));
    assert_non_null(blk_aio_preadv(blk, 0, &qiov, 0, aio_done_cb, &d));
    assert_int_equal(d.calls, 0);
    while (d.calls == 0) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(d.calls, 1);
    assert_int_equal(d.ret, 0);
    assert_int_equal(buf[0], 0);
    assert_int_equal(buf[4095], 0);
    blk_unref(blk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_null_default_size),
        cmocka_unit_test(test_null_size),
        cmocka_unit_test(test_null_read_zeroes),
        cmocka_unit_test(test_null_writes),
        cmocka_unit_test(test_null_latency),
        cmocka_unit_test(test_null_block_status),
        cmocka_unit_test(test_null_protocol_prefix),
        cmocka_unit_test(test_null_aio_completes_later),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
