/*
 * Unit tests: the qcow (version 1) format driver (drivers/format/qcow.c):
 * create options (encryption refused), reads and allocating writes over a
 * backing file, block status, concurrent allocating writes (data written
 * outside the lock, same-cluster writers waiting), a compressed
 * cluster built here with zlib (read, then rewritten when written to), and
 * an encrypted header refused with the method's name.
 * qemu-img interop and corrupt images are in tests/interop/qcow-*.sh.
 */
#include "drv-test-util.h"

#include <zlib.h>

#include <coblk/image.h>

#include "block/block-int.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096], base[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow");
    drv_test_path(base, sizeof(base), "qcow-base");
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
    return drv_test_create("qcow", img, optstr, errmsg, errlen);
}

static BlockBackend *open_qcow(int flags)
{
    return drv_test_open_image("qcow", img, flags);
}

static void test_qcow_create_options(void **state)
{
    char msg[1024];
    BlockDriverInfo bdi;
    BlockBackend *blk;

    assert_true(create("size=1M,encryption=on", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "encrypted images (AES) are not supported"));
    assert_true(create("size=0", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "out of range"));
    assert_true(create("size=1M,bogus=1", msg, sizeof(msg)) < 0);

    assert_int_equal(create("size=5M", NULL, 0), 0);
    blk = open_qcow(0);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "qcow");
    assert_int_equal(blk_getlength(blk), 5 * MiB);
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 4096);
    blk_unref(blk);
    assert_non_null(bdrv_create_opts("qcow"));
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

static void test_qcow_backing(void **state)
{
    uint8_t *want = malloc(2 * MiB), *buf = malloc(2 * MiB);
    char opts[8192];
    BlockBackend *blk;
    StatusQuery q;
    int fd;

    fd = open(base, O_RDWR | O_CREAT | O_TRUNC, 0644);
    memset(want, 0x4d, 2 * MiB);
    assert_int_equal(pwrite(fd, want, 2 * MiB, 0), 2 * MiB);
    close(fd);
    snprintf(opts, sizeof(opts), "size=2M,backing_file=%s,backing_fmt=raw",
             strrchr(base, '/') + 1);
    assert_int_equal(create(opts, NULL, 0), 0);
    blk = open_qcow(BDRV_O_RDWR);
    assert_non_null(bdrv_backing_bs(blk_bs(blk)));

    /* Partial clusters keep the backing data around the write. */
    memset(want + 1000, 0x12, 3000);
    assert_int_equal(blk_pwrite(blk, 512, 4096, want + 512, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 2 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 2 * MiB);

    q = (StatusQuery){ .bs = blk_bs(blk), .offset = 512, .bytes = MiB };
    drv_test_run_co(blk_get_aio_context(blk), status_co, &q);
    assert_true(q.ret & BDRV_BLOCK_DATA);
    assert_int_equal(q.pnum, 4096); /* 512-byte clusters over a backing file */
    q = (StatusQuery){ .bs = blk_bs(blk), .offset = 8192, .bytes = MiB };
    drv_test_run_co(blk_get_aio_context(blk), status_co, &q);
    assert_false(q.ret & BDRV_BLOCK_ALLOCATED);
    blk_unref(blk);

    blk = open_qcow(0);
    assert_int_equal(blk_pread(blk, 0, 2 * MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 2 * MiB);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_qcow_concurrent_alloc(void **state)
{
    enum { N = 32, LEN = 6 * KiB };
    uint8_t *want = malloc(N * LEN), *buf = malloc(N * LEN);
    DrvTestReq reqs[N];
    BlockBackend *blk;
    int pending = N;

    assert_int_equal(create("size=16M", NULL, 0), 0);
    blk = open_qcow(BDRV_O_RDWR);
    drv_test_pattern(want, N * LEN, 12);
    for (int i = 0; i < N; i++) {
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + (size_t)i * LEN, LEN);
        /* Alternate between two L2 tables (each maps 2 MiB) and share clusters. */
        blk_aio_pwritev(blk, (int64_t)(i % 2) * 8 * MiB + (i / 2) * LEN, &reqs[i].qiov, 0,
                        drv_test_req_done, &reqs[i]);
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    blk_unref(blk);
    blk = open_qcow(0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
        assert_int_equal(blk_pread(blk, (int64_t)(i % 2) * 8 * MiB + (i / 2) * LEN, LEN,
                                   buf + (size_t)i * LEN, 0), 0);
    }
    assert_memory_equal(buf, want, N * LEN);
    blk_unref(blk);
    free(want);
    free(buf);
}

/*
 * The data of an allocating write goes out without the lock: while a
 * partial write's new cluster (completed with zeroes) is held in its data
 * write by a blkdebug breakpoint, an allocating write of other clusters, a
 * read of the same cluster's other bytes (zeroes) and a
 * flush all complete; a write of other bytes of the same cluster waits (it
 * would take a second cluster and lose one of the two writes). Then
 * everything reads back, after a reopen too, and qemu-img compare agrees.
 */
static void test_qcow_alloc_unlocked(void **state)
{
    enum { CL = 4 * KiB, A = CL + 512, B = CL + 2048, R = CL + 3072 };
    uint8_t *want = malloc(MiB), *buf = malloc(MiB), *w2 = want + 3 * CL;
    char opts[8192];
    int pending_a = 1, pending = 0, pending_b = 1;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BlockDriverState *bs;
    BlockBackend *blk;

    /* No backing file: 4 KiB clusters (512 B ones over a backing file). */
    assert_int_equal(create("size=1M", NULL, 0), 0);
    snprintf(opts, sizeof(opts), "driver=qcow,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    bs = blk_bs(blk);
    memset(want, 0, MiB);
    memset(want + A, 0xa1, 512);
    memset(want + B, 0xb2, 512);
    drv_test_pattern(w2, 4 * CL, 3);

    assert_int_equal(bdrv_debug_breakpoint(bs, "cow_write", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 512);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    /* Other clusters (one run), a read of other bytes of the same one, a flush: not held. */
    pending = 3;
    iovector_init_buf(&r2.qiov, w2, 4 * CL);
    blk_aio_pwritev(blk, 3 * CL, &r2.qiov, 0, drv_test_req_done, &r2);
    iovector_init_buf(&rr.qiov, buf, 512);
    blk_aio_preadv(blk, R, &rr.qiov, 0, drv_test_req_done, &rr);
    blk_aio_flush(blk, drv_test_req_done, &rf);
    /* Other bytes of the same cluster: held behind the allocation. */
    iovector_init_buf(&rb.qiov, want + B, 512);
    blk_aio_pwritev(blk, B, &rb.qiov, 0, drv_test_req_done, &rb);
    drv_test_wait(blk, &pending);
    assert_int_equal(r2.ret, 0);
    assert_int_equal(rr.ret, 0);
    assert_int_equal(rf.ret, 0);
    assert_memory_equal(buf, want + R, 512);
    for (int i = 0; i < 50; i++) {
        aio_poll(blk_get_aio_context(blk), false);
    }
    assert_int_equal(pending_a + pending_b, 2);
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    assert_int_equal(bdrv_debug_resume(bs, "a"), 0);
    drv_test_wait(blk, &pending_a);
    drv_test_wait(blk, &pending_b);
    assert_int_equal(ra.ret, 0);
    assert_int_equal(rb.ret, 0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    blk_unref(blk);

    blk = open_qcow(0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    blk_unref(blk);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        char raw[4096];
        int fd;

        drv_test_path(raw, sizeof(raw), "qcow-raw");
        fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_int_equal(pwrite(fd, want, MiB, 0), MiB);
        close(fd);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f qcow -F raw '%s' '%s'", img, raw),
                         0);
        unlink(raw);
    }
    free(want);
    free(buf);
}

/*
 * More L2 tables than the cache holds (64 of 32 KiB over a backing file):
 * writes into 150 tables, reads them back while the tables come and go
 * (dirty ones are written first, never dropped), and after a reopen; two
 * passes over the same tables hit tables loaded again.
 */
static void test_qcow_many_tables(void **state)
{
    enum { N = 150, SPAN = 2 * MiB, LEN = 4 * KiB };
    uint8_t *want = malloc((size_t)N * LEN), *buf = malloc(LEN);
    char opts[8192];
    BlockBackend *blk;
    int fd;

    fd = open(base, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)N * SPAN), 0);
    close(fd);
    snprintf(opts, sizeof(opts), "size=%d,backing_file=%s,backing_fmt=raw", N * SPAN,
             strrchr(base, '/') + 1);
    assert_int_equal(create(opts, NULL, 0), 0);
    drv_test_pattern(want, (size_t)N * LEN, 21);
    blk = open_qcow(BDRV_O_RDWR);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            int64_t at = (int64_t)i * SPAN + 1024 + pass * 8 * KiB;

            assert_int_equal(blk_pwrite(blk, at, LEN, want + (size_t)i * LEN, 0), 0);
        }
        for (int i = N - 1; i >= 0; i--) {
            int64_t at = (int64_t)i * SPAN + 1024 + pass * 8 * KiB;

            assert_int_equal(blk_pread(blk, at, LEN, buf, 0), 0);
            assert_memory_equal(buf, want + (size_t)i * LEN, LEN);
        }
    }
    blk_unref(blk);
    blk = open_qcow(0);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            assert_int_equal(blk_pread(blk, (int64_t)i * SPAN + 1024 + pass * 8 * KiB, LEN, buf,
                                       0), 0);
            assert_memory_equal(buf, want + (size_t)i * LEN, LEN);
        }
    }
    blk_unref(blk);
    free(want);
    free(buf);
}

static uint64_t be64_read(int fd, off_t off);

/*
 * Sequential 64 KiB allocating writes land 64 KiB-aligned in the file: the
 * L2 tables share one reserved area instead of sitting between the runs of
 * data, and what the session left of that area is cut at close.
 */
static void test_qcow_aligned_data(void **state)
{
    enum { SIZE = 8 * MiB, LEN = 64 * KiB, TABLES = SIZE / (2 * MiB) };
    uint8_t *want = malloc(SIZE), *got = malloc(SIZE);
    uint64_t l1, tbl, end = 0;
    BlockBackend *blk;
    char opts[4400];
    struct stat st;
    int fd;

    assert_int_equal(create("size=8M", NULL, 0), 0);
    drv_test_pattern(want, SIZE, 5);
    /* Every write-zeroes request fails: a new table area past the end is only grown over. */
    snprintf(opts, sizeof(opts), "driver=qcow,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s,file.inject-error.0.event=none,"
             "file.inject-error.0.iotype=write-zeroes", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    for (int64_t at = 0; at < SIZE; at += LEN) {
        assert_int_equal(blk_pwrite(blk, at, LEN, want + at, 0), 0);
    }
    blk_unref(blk);

    fd = open(img, O_RDONLY);
    assert_true(fd >= 0);
    l1 = be64_read(fd, 40);
    for (int i = 0; i < TABLES; i++) {
        tbl = be64_read(fd, (off_t)(l1 + (uint64_t)i * 8));
        assert_int_equal(tbl / LEN, be64_read(fd, (off_t)l1) / LEN); /* one area */
        end = tbl + 4 * KiB > end ? tbl + 4 * KiB : end;
        for (int j = 0; j < 512; j += LEN / (4 * KiB)) {
            uint64_t e = be64_read(fd, (off_t)(tbl + (uint64_t)j * 8));

            assert_int_equal(e % LEN, 0);
            end = e + LEN > end ? e + LEN : end;
        }
    }
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, end); /* no unused table area left at the end */
    close(fd);

    blk = open_qcow(0);
    assert_int_equal(blk_pread(blk, 0, SIZE, got, 0), 0);
    assert_memory_equal(got, want, SIZE);
    blk_unref(blk);
    free(want);
    free(got);
}

/* Appends a raw-deflate compressed copy of a 4 KiB cluster; returns its L2 entry. */
static uint64_t append_compressed(int fd, const uint8_t *cluster)
{
    uint8_t out[8192];
    z_stream z = { 0 };
    off_t at = lseek(fd, 0, SEEK_END);
    uint64_t csize;

    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (uint8_t *)cluster;
    z.avail_in = 4096;
    z.next_out = out;
    z.avail_out = sizeof(out);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    csize = sizeof(out) - z.avail_out;
    deflateEnd(&z);
    assert_int_equal(pwrite(fd, out, csize, at), (ssize_t)csize);
    return (1ULL << 63) | (csize << (63 - 12)) | (uint64_t)at;
}

static void be64_write(int fd, off_t off, uint64_t v)
{
    uint8_t b[8];

    for (int i = 0; i < 8; i++) {
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    }
    assert_int_equal(pwrite(fd, b, 8, off), 8);
}

static uint64_t be64_read(int fd, off_t off)
{
    uint8_t b[8];
    uint64_t v = 0;

    assert_int_equal(pread(fd, b, 8, off), 8);
    for (int i = 0; i < 8; i++) {
        v = v << 8 | b[i];
    }
    return v;
}

static void test_qcow_compressed(void **state)
{
    uint8_t cluster[4096], buf[8192], want[8192];
    BlockBackend *blk;
    uint64_t l2, entry;
    int fd;

    assert_int_equal(create("size=1M", NULL, 0), 0);
    blk = open_qcow(BDRV_O_RDWR);
    memset(buf, 0, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0); /* allocates an L2 table */
    blk_unref(blk);

    /* Cluster 1 becomes a compressed cluster. */
    for (int i = 0; i < 4096; i++) {
        cluster[i] = (uint8_t)(i / 64);
    }
    fd = open(img, O_RDWR);
    l2 = be64_read(fd, 48);
    entry = append_compressed(fd, cluster);
    be64_write(fd, (off_t)l2 + 8, entry);
    close(fd);

    blk = open_qcow(BDRV_O_RDWR);
    assert_int_equal(blk_pread(blk, 4096, 4096, buf, 0), 0);
    assert_memory_equal(buf, cluster, 4096);
    /* A partial write decompresses the rest and moves the cluster. */
    memcpy(want, cluster, 4096);
    memset(want + 100, 0xee, 512);
    assert_int_equal(blk_pwrite(blk, 4096 + 100, 512, want + 100, 0), 0);
    assert_int_equal(blk_pread(blk, 4096, 4096, buf, 0), 0);
    assert_memory_equal(buf, want, 4096);
    blk_unref(blk);
    fd = open(img, O_RDONLY);
    assert_false(be64_read(fd, (off_t)l2 + 8) >> 63);
    close(fd);

    /* A compressed cluster whose data is not deflate fails to read, cleanly. */
    fd = open(img, O_RDWR);
    be64_write(fd, (off_t)l2 + 16, (1ULL << 63) | (100ULL << 51) | 600);
    close(fd);
    blk = open_qcow(0);
    assert_int_equal(blk_pread(blk, 8192, 512, buf, 0), -EIO);
    blk_unref(blk);
}

static void test_qcow_encrypted(void **state)
{
    uint8_t one[4] = { 0, 0, 0, 1 };
    char opts[8192];
    int fd;

    assert_int_equal(create("size=1M", NULL, 0), 0);
    fd = open(img, O_RDWR);
    assert_int_equal(pwrite(fd, one, 4, 36), 4);
    close(fd);
    snprintf(opts, sizeof(opts), "driver=qcow,file.driver=file,file.filename=%s", img);
    drv_test_open_fails(opts, 0, "encrypted with AES (crypt_method 1)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow_create_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_backing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_concurrent_alloc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_alloc_unlocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_many_tables, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_aligned_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow_encrypted, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
