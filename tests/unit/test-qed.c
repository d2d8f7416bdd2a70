/*
 * Unit tests: the qed format driver (drivers/format/qed.c): create options,
 * reads and allocating writes over a backing file, zero clusters, block
 * status, the need-check flag (set by the first allocation, cleared on a
 * clean close), concurrent allocating writes (data written outside table_lock,
 * writers of a cluster being allocated wait for it), check, change_backing_file.
 * qemu-img interop and corrupt images are in tests/interop/qed-*.sh.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include "block/block-int.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096], base[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qed");
    drv_test_path(base, sizeof(base), "qed-base");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(base);
    return 0;
}

static int create(const char *optstr, char *errmsg, size_t errlen)
{
    return drv_test_create("qed", img, optstr, errmsg, errlen);
}

static BlockBackend *open_qed(int flags)
{
    return drv_test_open_image("qed", img, flags);
}

static uint8_t header_features(void)
{
    uint8_t b;
    int fd = open(img, O_RDONLY);

    assert_int_equal(pread(fd, &b, 1, 16), 1);
    close(fd);
    return b;
}

static void test_qed_create_options(void **state)
{
    char msg[1024];
    BlockDriverInfo bdi;
    BlockBackend *blk;

    assert_true(create("size=1M,cluster_size=3k", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "cluster size 3072"));
    assert_true(create("size=1M,table_size=32", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "table size 32"));
    assert_true(create("size=1P,cluster_size=4k,table_size=1", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "exceeds what the tables map"));
    assert_true(create("size=1M,bogus=1", msg, sizeof(msg)) < 0);

    assert_int_equal(create("size=5M,cluster_size=16k,table_size=2", NULL, 0), 0);
    blk = open_qed(0);
    assert_int_equal(blk_getlength(blk), 5 * MiB);
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 16 * KiB);
    assert_false(bdi.is_dirty);
    blk_unref(blk);
    assert_non_null(bdrv_create_opts("qed"));
}

static void make_base(int64_t len, uint8_t byte)
{
    int fd = open(base, O_RDWR | O_CREAT | O_TRUNC, 0644);
    uint8_t *buf = malloc((size_t)len);

    memset(buf, byte, (size_t)len);
    assert_int_equal(pwrite(fd, buf, (size_t)len, 0), len);
    close(fd);
    free(buf);
}

typedef struct StatusQuery {
    BlockDriverState *bs;
    int64_t offset, bytes, pnum, map;
    BlockDriverState *file;
    int ret;
} StatusQuery;

static void coroutine_fn status_co(void *opaque)
{
    StatusQuery *q = opaque;

    q->ret = bdrv_co_block_status(q->bs, q->offset, q->bytes, &q->pnum, &q->map, &q->file);
}

static int status(BlockBackend *blk, int64_t offset, int64_t bytes, StatusQuery *q)
{
    *q = (StatusQuery){ .bs = blk_bs(blk), .offset = offset, .bytes = bytes };
    drv_test_run_co(blk_get_aio_context(blk), status_co, q);
    return q->ret;
}

static void test_qed_backing_and_zero(void **state)
{
    uint8_t *want = malloc(4 * MiB), *buf = malloc(4 * MiB);
    char opts[8192];
    BlockDriverInfo bdi;
    BlockBackend *blk;
    StatusQuery q;
    int ret;

    make_base(3 * MiB, 0x5b); /* shorter than the image: zeroes after it */
    snprintf(opts, sizeof(opts), "size=4M,backing_file=%s,backing_fmt=raw",
             strrchr(base, '/') + 1);
    assert_int_equal(create(opts, NULL, 0), 0);
    blk = open_qed(BDRV_O_RDWR);
    assert_string_equal(blk_bs(blk)->backing_format, "raw");
    memset(want, 0x5b, 3 * MiB);
    memset(want + 3 * MiB, 0, MiB);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    assert_false(header_features() & 2);

    /* A partial write copies the rest of its cluster from the backing file. */
    memset(want + 100 * KiB, 0x11, 3000);
    assert_int_equal(blk_pwrite(blk, 100 * KiB, 3000, want + 100 * KiB, 0), 0);
    assert_int_equal(header_features() & 2, 2); /* need-check while open */
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_true(bdi.is_dirty);

    /* Zero clusters hide the backing file. */
    assert_int_equal(blk_pwrite_zeroes(blk, MiB, 256 * KiB, 0), 0);
    memset(want + MiB, 0, 256 * KiB);
    ret = status(blk, MiB, 512 * KiB, &q);
    assert_true(ret & BDRV_BLOCK_ZERO);
    assert_int_equal(q.pnum, 256 * KiB);
    ret = status(blk, 64 * KiB, 128 * KiB, &q);
    assert_true(ret & BDRV_BLOCK_DATA);
    assert_int_equal(q.pnum, 64 * KiB);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    /* Unaligned zero writes fall back to writing zeroes. */
    assert_int_equal(blk_pwrite_zeroes(blk, 2 * MiB + 512, 1024, 0), 0);
    memset(want + 2 * MiB + 512, 0, 1024);
    /* Reopening read-only is a clean point; read-write again marks on allocation. */
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    assert_int_equal(header_features() & 2, 0);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), false, NULL), 0);
    assert_int_equal(blk_pwrite(blk, 3 * MiB, 512, want + 3 * MiB, 0), 0);
    assert_int_equal(header_features() & 2, 2);
    blk_unref(blk);
    assert_int_equal(header_features() & 2, 0); /* cleared on a clean close */

    blk = open_qed(0);
    assert_int_equal(blk_pread(blk, 0, 4 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 4 * MiB);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_qed_concurrent_alloc(void **state)
{
    enum { N = 32, LEN = 24 * KiB };
    uint8_t *want = malloc(N * LEN), *buf = malloc(N * LEN);
    BdrvCheckResult res = { 0 };
    DrvTestReq reqs[N];
    BlockBackend *blk;
    int pending = N;

    /* Small clusters and tables: requests share clusters and L2 tables. */
    assert_int_equal(create("size=64M,cluster_size=4k,table_size=2", NULL, 0), 0);
    blk = open_qed(BDRV_O_RDWR);
    drv_test_pattern(want, N * LEN, 8);
    for (int i = 0; i < N; i++) {
        /* Spread over several L2 tables (each maps 4 MiB here). */
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + (size_t)i * LEN, LEN);
        blk_aio_pwritev(blk, (int64_t)(i % 4) * 5 * MiB + (i / 4) * LEN, &reqs[i].qiov, 0,
                        drv_test_req_done, &reqs[i]);
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
        assert_int_equal(blk_pread(blk, (int64_t)(i % 4) * 5 * MiB + (i / 4) * LEN, LEN,
                                   buf + (size_t)i * LEN, 0), 0);
    }
    assert_memory_equal(buf, want, N * LEN);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
    free(want);
    free(buf);
}

/*
 * The data of an allocating write goes out without table_lock: while a
 * partial write's new cluster (copied from the backing file) is held inside
 * its data write by a blkdebug breakpoint, an allocating write of another
 * cluster, a read of the same cluster's other bytes (backing data) and a
 * flush all complete; a write of other bytes of the same cluster waits for
 * it (it would take a second cluster and lose one of the two writes). Then
 * everything reads back, check finds no leak, qemu-img check and compare
 * agree.
 */
static void test_qed_alloc_unlocked(void **state)
{
    enum { CL = 64 * KiB, A = CL + 4 * KiB, B = CL + 32 * KiB, R = CL + 48 * KiB };
    uint8_t *want = malloc(MiB), *buf = malloc(MiB), *w2 = want + 3 * CL;
    char opts[8192];
    int pending_a = 1, pending = 0, pending_b = 1;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BdrvCheckResult res = { 0 };
    BlockDriverState *bs;
    BlockBackend *blk;

    make_base(MiB, 0x5b);
    snprintf(opts, sizeof(opts), "size=1M,backing_file=%s,backing_fmt=raw",
             strrchr(base, '/') + 1);
    assert_int_equal(create(opts, NULL, 0), 0);
    snprintf(opts, sizeof(opts), "driver=qed,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    bs = blk_bs(blk);
    memset(want, 0x5b, MiB);
    memset(want + A, 0xa1, 4 * KiB);
    memset(want + B, 0xb2, 4 * KiB);
    drv_test_pattern(w2, CL, 3);

    assert_int_equal(bdrv_debug_breakpoint(bs, "cow_write", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 4 * KiB);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true); /* the backing read completes first */
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    /* Another cluster, a read of other bytes of the same one, a flush: not held. */
    pending = 3;
    iovector_init_buf(&r2.qiov, w2, CL);
    blk_aio_pwritev(blk, 3 * CL, &r2.qiov, 0, drv_test_req_done, &r2);
    iovector_init_buf(&rr.qiov, buf, 4 * KiB);
    blk_aio_preadv(blk, R, &rr.qiov, 0, drv_test_req_done, &rr);
    blk_aio_flush(blk, drv_test_req_done, &rf);
    /* Other bytes of the same cluster: held behind the allocation. */
    iovector_init_buf(&rb.qiov, want + B, 4 * KiB);
    blk_aio_pwritev(blk, B, &rb.qiov, 0, drv_test_req_done, &rb);
    drv_test_wait(blk, &pending);
    assert_int_equal(r2.ret, 0);
    assert_int_equal(rr.ret, 0);
    assert_int_equal(rf.ret, 0);
    assert_memory_equal(buf, want + R, 4 * KiB);
    drv_test_poll_some(blk);
    assert_int_equal(pending_a + pending_b, 2);
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    assert_int_equal(bdrv_debug_resume(bs, "a"), 0);
    drv_test_wait(blk, &pending_a);
    drv_test_wait(blk, &pending_b);
    assert_int_equal(ra.ret, 0);
    assert_int_equal(rb.ret, 0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    assert_int_equal(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    blk_unref(blk);

    blk = open_qed(0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    blk_unref(blk);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        char raw[4096];
        int fd;

        drv_test_path(raw, sizeof(raw), "qed-raw");
        fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_int_equal(pwrite(fd, want, MiB, 0), MiB);
        close(fd);
        assert_int_equal(drv_test_sh("qemu-img check -q -f qed '%s'", img), 0);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f qed -F raw '%s' '%s'", img, raw),
                         0);
        unlink(raw);
    }
    free(want);
    free(buf);
}

static void test_qed_change_backing(void **state)
{
    char longname[5000];
    Error *err = NULL;
    BlockBackend *blk;

    make_base(MiB, 0x33);
    assert_int_equal(create("size=1M", NULL, 0), 0);
    blk = open_qed(BDRV_O_RDWR);
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), strrchr(base, '/') + 1, "raw",
                                              NULL), 0);
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_true(bdrv_change_backing_file(blk_bs(blk), longname, NULL, &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "does not fit"));
    error_free(err);
    blk_unref(blk);

    blk = open_qed(0);
    uint8_t buf[512], want[512];
    memset(want, 0x33, sizeof(want));
    assert_int_equal(blk_pread(blk, 4096, 512, buf, 0), 0);
    assert_memory_equal(buf, want, 512);
    assert_int_equal(header_features(), 5);
    blk_unref(blk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qed_create_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qed_backing_and_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qed_concurrent_alloc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qed_alloc_unlocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qed_change_backing, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
