/*
 * Unit tests: native FUA in the file protocol driver (drivers/protocol/file.c).
 * A write with BDRV_REQ_FUA is one pwritev2(RWF_DSYNC) through every engine
 * (io_uring, native, threads) and issues no fdatasync, while a plain write
 * and a flush issue one; a kernel refusing RWF_DSYNC (the engine test hook)
 * falls back to write + fdatasync and the node stops advertising FUA;
 * cache.no-flush drops FUA; a writethrough BlockBackend's writes are FUA.
 * The counts come from the engine's statistics (aio/engine-int.h).
 */
#include <sys/uio.h>

#include "drv-test-util.h"

#include "aio/engine-int.h"
#include "block/block-int.h"
#include "drivers/protocol/file-int.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "fua");
    drv_test_make_file(img, 4 * MiB, 0);
    return 0;
}

static int teardown(void **state)
{
    aio_io_refuse_rwf(0);
    unlink(img);
    return 0;
}

/* Opens img with aio=engine (O_DIRECT with direct) and extra options; NULL to skip. */
static BlockBackend *open_file(const char *engine, bool direct, const char *extra)
{
    char opts[8192];
    BlockBackend *blk;
    BDRVFileState *s;

    if (direct && !drv_test_direct_ok(drv_test_dir())) {
        print_message("skipping O_DIRECT case: %s refuses O_DIRECT\n", drv_test_dir());
        return NULL;
    }
    snprintf(opts, sizeof(opts), "driver=file,filename=%s,aio=%s%s%s%s", img, engine,
             direct ? ",cache.direct=on" : "", *extra ? "," : "", extra);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    if (strcmp(aio_engine_type_name(aio_engine_type(s->engine)), engine) != 0) {
        print_message("skipping %s: the engine is not available here\n", engine);
        blk_unref(blk);
        return NULL;
    }
    return blk;
}

/* The engine statistics of blk's file node, zeroed. */
static AioEngine *file_engine(BlockBackend *blk)
{
    BDRVFileState *s = blk_bs(blk)->opaque;

    aio_engine_reset_stats(s->engine);
    return s->engine;
}

static AioEngineStats stats_of(AioEngine *e)
{
    AioEngineStats st;

    aio_engine_get_stats(e, &st);
    return st;
}

/* Writes len bytes of pattern seed at off with flags, then reads them back. */
static void write_check(BlockBackend *blk, int64_t off, size_t len, uint8_t seed, int flags)
{
    uint8_t *w = malloc(len), *r = malloc(len);

    drv_test_pattern(w, len, seed);
    assert_int_equal(blk_pwrite(blk, off, (int64_t)len, w, flags), 0);
    memset(r, 0xcc, len);
    assert_int_equal(blk_pread(blk, off, (int64_t)len, r, 0), 0);
    assert_memory_equal(r, w, len);
    free(w);
    free(r);
}

/* A FUA write is one RWF_DSYNC write and no sync; a plain write and a flush is one sync. */
static void fua_with(const char *engine, bool direct)
{
    BlockBackend *blk = open_file(engine, direct, "");
    AioEngineStats st;
    AioEngine *e;

    if (!blk) {
        return;
    }
    assert_true(blk_bs(blk)->supported_write_flags & BDRV_REQ_FUA);
    e = file_engine(blk);
    write_check(blk, 64 * KiB, 4 * KiB, 1, BDRV_REQ_FUA);
    write_check(blk, 1 * MiB, 128 * KiB, 2, BDRV_REQ_FUA);
    st = stats_of(e);
    assert_int_equal(st.dsync_writes, 2);
    assert_int_equal(st.syncs, 0);

    e = file_engine(blk);
    write_check(blk, 2 * MiB, 4 * KiB, 3, 0);
    assert_int_equal(blk_flush(blk), 0);
    st = stats_of(e);
    assert_int_equal(st.dsync_writes, 0);
    assert_int_equal(st.syncs, 1);

    /* Writethrough: every write is FUA, so none needs a flush after it. */
    blk_set_enable_write_cache(blk, false);
    e = file_engine(blk);
    write_check(blk, 3 * MiB, 8 * KiB, 4, 0);
    st = stats_of(e);
    assert_int_equal(st.dsync_writes, 1);
    assert_int_equal(st.syncs, 0);
    blk_unref(blk);

    /* The FUA-written data is in the file. */
    blk = open_file(engine, direct, "");
    assert_non_null(blk);
    {
        uint8_t w[4 * KiB], r[4 * KiB];

        drv_test_pattern(w, sizeof(w), 1);
        assert_int_equal(blk_pread(blk, 64 * KiB, sizeof(r), r, 0), 0);
        assert_memory_equal(r, w, sizeof(w));
    }
    blk_unref(blk);
}

static void test_file_fua_threads(void **state)
{
    fua_with("threads", false);
    fua_with("threads", true);
}

static void test_file_fua_native(void **state)
{
    fua_with("native", true);
}

static void test_file_fua_io_uring(void **state)
{
    fua_with("io_uring", false);
    fua_with("io_uring", true);
}

/*
 * RWF_DSYNC refused: the first FUA write falls back to write + fdatasync and
 * the node stops advertising FUA; later FUA writes are emulated by the block
 * layer (write, then flush), also through a raw node that still advertises it.
 */
static void fallback_with(const char *engine, bool direct)
{
    char opts[8192];
    BlockBackend *blk;
    AioEngineStats st;
    AioEngine *e;

    aio_io_refuse_rwf(RWF_DSYNC);
    blk = open_file(engine, direct, "");
    if (!blk) {
        aio_io_refuse_rwf(0);
        return;
    }
    assert_true(blk_bs(blk)->supported_write_flags & BDRV_REQ_FUA);
    e = file_engine(blk);
    write_check(blk, 0, 4 * KiB, 5, BDRV_REQ_FUA);
    st = stats_of(e);
    assert_int_equal(st.dsync_writes, 0);
    assert_int_equal(st.syncs, 1);
    assert_false(blk_bs(blk)->supported_write_flags & BDRV_REQ_FUA);

    e = file_engine(blk);
    write_check(blk, 8 * KiB, 4 * KiB, 6, BDRV_REQ_FUA);
    st = stats_of(e);
    assert_int_equal(st.dsync_writes, 0);
    assert_int_equal(st.syncs, 1);
    blk_unref(blk);

    snprintf(opts, sizeof(opts), "driver=raw,file.driver=file,file.filename=%s,file.aio=%s%s",
             img, engine, direct ? ",cache.direct=on" : "");
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    e = ((BDRVFileState *)blk_bs(blk)->file->bs->opaque)->engine;
    aio_engine_reset_stats(e);
    write_check(blk, 16 * KiB, 4 * KiB, 7, BDRV_REQ_FUA); /* fallback on the file node */
    write_check(blk, 24 * KiB, 4 * KiB, 8, BDRV_REQ_FUA); /* emulated there */
    st = stats_of(e);
    assert_int_equal(st.dsync_writes, 0);
    assert_int_equal(st.syncs, 2);
    blk_unref(blk);
    aio_io_refuse_rwf(0);

    /* Everything written is in the file. */
    blk = open_file(engine, direct, "");
    assert_non_null(blk);
    for (int i = 0; i < 4; i++) {
        static const int64_t offs[] = { 0, 8 * KiB, 16 * KiB, 24 * KiB };
        uint8_t w[4 * KiB], r[4 * KiB];

        drv_test_pattern(w, sizeof(w), (uint8_t)(5 + i));
        assert_int_equal(blk_pread(blk, offs[i], sizeof(r), r, 0), 0);
        assert_memory_equal(r, w, sizeof(w));
    }
    blk_unref(blk);
}

static void test_file_fua_fallback(void **state)
{
    fallback_with("threads", false);
    fallback_with("native", true);
    fallback_with("io_uring", false);
}

typedef struct DriverWrite {
    BlockDriverState *bs;
    int64_t offset;
    IOVector *qiov;
    int ret;
} DriverWrite;

static void coroutine_fn driver_write_co(void *opaque)
{
    DriverWrite *w = opaque;

    w->ret = w->bs->drv->co_pwritev(w->bs, w->offset, (int64_t)w->qiov->size, w->qiov, 0,
                                    BDRV_REQ_FUA);
}

/* A write's own -EINVAL (here: not O_DIRECT aligned, bypassing padding) is not a refusal. */
static void test_file_fua_write_error_kept(void **state)
{
    BlockBackend *blk = open_file("threads", true, "");
    BlockDriverState *bs;
    uint8_t *buf = NULL;
    IOVector qiov;

    if (!blk) {
        return;
    }
    bs = blk_bs(blk);
    if (bs->bl.request_alignment < 2) {
        blk_unref(blk);
        return;
    }
    assert_int_equal(posix_memalign((void **)&buf, 4096, 8 * KiB), 0);
    memset(buf, 0x5a, 8 * KiB);
    iovector_init_buf(&qiov, buf, 8 * KiB);
    /* The driver directly, at an offset O_DIRECT refuses: -EINVAL both ways. */
    DriverWrite w = { .bs = bs, .offset = 1, .qiov = &qiov };

    drv_test_run_co(blk_get_aio_context(blk), driver_write_co, &w);
    assert_int_equal(w.ret, -EINVAL);
    assert_true(bs->supported_write_flags & BDRV_REQ_FUA);
    free(buf);
    blk_unref(blk);
}

/* cache.no-flush: FUA is dropped like a flush; nothing is synced. */
static void test_file_fua_no_flush(void **state)
{
    static const char *const engines[] = { "threads", "io_uring" };

    for (size_t i = 0; i < sizeof(engines) / sizeof(engines[0]); i++) {
        BlockBackend *blk = open_file(engines[i], false, "cache.no-flush=on");
        AioEngineStats st;
        AioEngine *e;

        if (!blk) {
            continue;
        }
        e = file_engine(blk);
        write_check(blk, 0, 4 * KiB, 9, BDRV_REQ_FUA);
        write_check(blk, 4 * KiB, 4 * KiB, 10, 0);
        assert_int_equal(blk_flush(blk), 0);
        st = stats_of(e);
        assert_int_equal(st.dsync_writes, 0);
        assert_int_equal(st.syncs, 0);
        blk_unref(blk);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_fua_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fua_native, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fua_io_uring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fua_fallback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fua_write_error_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_fua_no_flush, setup, teardown),
    };

    unsetenv("COBLK_AIO_REFUSE_RWF"); /* the benchmark's switch would refuse RWF_DSYNC */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
