/*
 * Unit tests: allocating writes of vmdk hosted sparse extents
 * (drivers/format/vmdk/alloc.c): their data goes out without the driver's
 * lock (a write held in its data write leaves other allocations, reads and
 * flushes free, while writers and readers of its grain wait), many of them
 * in flight at once in monolithicSparse and twoGbMaxExtentSparse images, and
 * a failed data write that links nothing and gives its grain back, and
 * grain table entries deferred to the next guest flush.
 * Each image is checked by coblk, and by Debian's qemu-img check and compare
 * when qemu-img is installed.
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include "block/bytes.h"
#include <coblk/image.h>

#define KiB 1024
#define MiB (1024 * 1024)
#define CL (64 * KiB) /* the grain size vmdk images are created with */

static char dir[4096], img[4200], base[4200], raw[4200];

static int setup(void **state)
{
    char rel[4096];

    snprintf(rel, sizeof(rel), "%s/vmdk-alloc-%d", drv_test_dir(), (int)getpid());
    mkdir(rel, 0755);
    if (!realpath(rel, dir)) {
        return -1;
    }
    snprintf(img, sizeof(img), "%s/t.vmdk", dir);
    snprintf(base, sizeof(base), "%s/base.vmdk", dir);
    snprintf(raw, sizeof(raw), "%s/want.raw", dir);
    return 0;
}

static int teardown(void **state)
{
    char cmd[8300];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void create(const char *path, const char *opts)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, opts, NULL, &err), 0);
    if (bdrv_create("vmdk", path, o, &err) < 0) {
        fail_msg("create %s (%s): %s", path, opts, error_get_pretty(err));
    }
}

/* Opens img with its file under blkdebug (extra: more blkdebug options, or ""). */
static BlockBackend *open_dbg(const char *extra)
{
    char opts[9000];

    snprintf(opts, sizeof(opts), "driver=vmdk,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s%s%s", img, *extra ? "," : "", extra);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

static BlockBackend *open_plain(int flags)
{
    char opts[4400];

    snprintf(opts, sizeof(opts), "driver=vmdk,file.driver=file,file.filename=%s", img);
    return drv_test_open_ok(opts, flags);
}

static void quiet(void *opaque, const char *msg)
{
}

/* coblk's check, then (if installed) qemu-img check and compare against want. */
static void expect_image(const uint8_t *want, int64_t size)
{
    BlockBackend *blk = open_plain(0);
    BdrvCheckResult res = { .report = quiet };
    uint8_t *buf = malloc((size_t)size);
    int fd;

    memset(buf, 0xee, (size_t)size);
    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)size);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.check_errors, 0);
    blk_unref(blk);
    free(buf);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") != 0) {
        return;
    }
    fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, want, (size_t)size, 0), size);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img check -q -f vmdk '%s'", img), 0);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f vmdk -F raw '%s' '%s'", img, raw), 0);
}

/*
 * A partial write of an unallocated grain (its new grain filled from the
 * parent) is held inside its data write by a blkdebug breakpoint. Meanwhile
 * an allocating write of another grain, a read of another grain and a flush
 * complete; a write of other bytes of the same grain and a read of it wait
 * (the write would take a second grain and lose one of the two writes).
 */
static void test_vmdk_alloc_unlocked(void **state)
{
    enum { A = CL + 4 * KiB, B = CL + 32 * KiB, R = 5 * CL + 512, S = CL + 48 * KiB };
    uint8_t *want = malloc(MiB), *buf = malloc(MiB), *sbuf = malloc(4 * KiB);
    uint8_t *w2 = want + 3 * CL;
    int pending_a = 1, pending = 0, pending_b = 2;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq rs = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BlockDriverState *bs;
    BlockBackend *blk;

    create(base, "size=1M");
    memset(want, 0x5b, MiB);
    {
        char opts[4400];

        snprintf(opts, sizeof(opts), "driver=vmdk,file.driver=file,file.filename=%s", base);
        blk = drv_test_open_ok(opts, BDRV_O_RDWR);
        assert_int_equal(blk_pwrite(blk, 0, MiB, want, 0), 0);
        blk_unref(blk);
    }
    create(img, "size=1M,backing_file=base.vmdk");
    blk = open_dbg("");
    bs = blk_bs(blk);
    assert_non_null(bdrv_backing_bs(bs));
    memset(want + A, 0xa1, 4 * KiB);
    memset(want + B, 0xb2, 4 * KiB);
    drv_test_pattern(w2, CL, 3);

    assert_int_equal(bdrv_debug_breakpoint(bs, "cow_write", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 4 * KiB);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true); /* the parent read completes first */
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    /* Another grain's allocation, a read of another grain, a flush: not held. */
    pending = 3;
    iovector_init_buf(&r2.qiov, w2, CL);
    blk_aio_pwritev(blk, 3 * CL, &r2.qiov, 0, drv_test_req_done, &r2);
    iovector_init_buf(&rr.qiov, buf, 4 * KiB);
    blk_aio_preadv(blk, R, &rr.qiov, 0, drv_test_req_done, &rr);
    blk_aio_flush(blk, drv_test_req_done, &rf);
    /* Other bytes of the same grain, written and read: held behind the allocation. */
    iovector_init_buf(&rb.qiov, want + B, 4 * KiB);
    blk_aio_pwritev(blk, B, &rb.qiov, 0, drv_test_req_done, &rb);
    iovector_init_buf(&rs.qiov, sbuf, 4 * KiB);
    blk_aio_preadv(blk, S, &rs.qiov, 0, drv_test_req_done, &rs);
    drv_test_wait(blk, &pending);
    assert_int_equal(r2.ret, 0);
    assert_int_equal(rr.ret, 0);
    assert_int_equal(rf.ret, 0);
    assert_memory_equal(buf, want + R, 4 * KiB);
    drv_test_poll_some(blk);
    assert_int_equal(pending_a + pending_b, 3);
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    assert_int_equal(bdrv_debug_resume(bs, "a"), 0);
    drv_test_wait(blk, &pending_a);
    drv_test_wait(blk, &pending_b);
    assert_int_equal(ra.ret, 0);
    assert_int_equal(rb.ret, 0);
    assert_int_equal(rs.ret, 0);
    assert_memory_equal(sbuf, want + S, 4 * KiB);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    blk_unref(blk);
    expect_image(want, MiB);
    free(want);
    free(buf);
    free(sbuf);
}

/*
 * Many allocating writes in flight at once: pieces of 24 KiB (grains shared
 * by two or three of them), writes of several grains with partial ends,
 * whole-grain zero writes over data and partial ones, across grain tables
 * (each maps 32 MiB). All land; the tables agree with the data.
 */
static void concurrent_writes(const char *subformat)
{
    enum { N = 48, LEN = 24 * KiB, SIZE = 96 * MiB, M = 6, Z = 8 };
    uint8_t *want = calloc(1, SIZE), *buf = malloc(SIZE);
    DrvTestReq reqs[N + M + Z];
    char opts[256];
    BlockBackend *blk;
    int pending = N + M + Z;

    snprintf(opts, sizeof(opts), "size=%d,subformat=%s", SIZE, subformat);
    create(img, opts);
    blk = open_plain(BDRV_O_RDWR);
    /* Data under the zero writes first. */
    drv_test_pattern(want + 40 * MiB, 8 * CL, 9);
    assert_int_equal(blk_pwrite(blk, 40 * MiB, 8 * CL, want + 40 * MiB, 0), 0);
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)(i % 3) * 33 * MiB + (i / 3) * LEN;

        drv_test_pattern(want + off, LEN, (uint8_t)(i + 20));
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + off, LEN);
        blk_aio_pwritev(blk, off, &reqs[i].qiov, 0, drv_test_req_done, &reqs[i]);
    }
    for (int i = 0; i < M; i++) {
        int64_t off = 20 * MiB + (int64_t)i * 5 * CL + 3 * KiB, len = 3 * CL + 5 * KiB;

        drv_test_pattern(want + off, (size_t)len, (uint8_t)(i + 90));
        reqs[N + i].pending = &pending;
        iovector_init_buf(&reqs[N + i].qiov, want + off, (size_t)len);
        blk_aio_pwritev(blk, off, &reqs[N + i].qiov, 0, drv_test_req_done, &reqs[N + i]);
    }
    for (int i = 0; i < Z; i++) {
        /* Whole grains over data and partial grains over data and over nothing. */
        int64_t off = i < 4 ? 40 * MiB + (int64_t)i * 2 * CL : 60 * MiB + (int64_t)i * CL + 512;
        int64_t len = i < 2 ? CL : 7 * KiB;

        memset(want + off, 0, (size_t)len);
        reqs[N + M + i].pending = &pending;
        blk_aio_pwrite_zeroes(blk, off, len, 0, drv_test_req_done, &reqs[N + M + i]);
    }
    drv_test_wait(blk, &pending);
    for (int i = 0; i < N + M + Z; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    assert_int_equal(blk_pread(blk, 0, SIZE, buf, 0), 0);
    assert_memory_equal(buf, want, SIZE);
    blk_unref(blk);
    expect_image(want, SIZE);
    free(want);
    free(buf);
}

static void test_vmdk_alloc_concurrent_monolithic(void **state)
{
    concurrent_writes("monolithicSparse");
}

static void test_vmdk_alloc_concurrent_2gb(void **state)
{
    concurrent_writes("twoGbMaxExtentSparse");
}

static int64_t file_len(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_size;
}

/*
 * A new grain's data write fails: the write fails, no entry points at the
 * grain (it reads as before), and the grain, the last one taken, is taken
 * again by the next allocation, so the file grows by one grain only.
 */
static void test_vmdk_alloc_write_error(void **state)
{
    uint8_t *want = calloc(1, 4 * MiB), *data = malloc(CL);
    BlockBackend *blk;
    int64_t len0;

    create(img, "size=4M");
    len0 = file_len(img);
    blk = open_dbg("file.inject-error.0.event=write_aio,file.inject-error.0.iotype=write,"
                   "file.inject-error.0.once=on,file.inject-error.0.errno=5");
    drv_test_pattern(data, CL, 7);
    assert_int_equal(blk_pwrite(blk, 2 * CL, CL, data, 0), -EIO);
    assert_int_equal(blk_pwrite(blk, 5 * CL, CL, data, 0), 0);
    memcpy(want + 5 * CL, data, CL);
    blk_unref(blk);
    /* The CID update may rewrite the embedded descriptor, never grow the file. */
    assert_int_equal(file_len(img), len0 + CL);
    expect_image(want, 4 * MiB);
    free(want);
    free(data);
}

/* The grain table entry of grain g as the file holds it (primary tables; 0 if none). */
static uint32_t disk_gte(uint64_t g)
{
    uint8_t b[8];
    uint64_t gd;
    uint32_t gt, gte;
    int fd = open(img, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, 8, 56), 8);
    gd = ld_le64(b);
    assert_int_equal(pread(fd, b, 4, (off_t)(gd * 512 + g / 512 * 4)), 4);
    gt = ld_le32(b);
    gte = 0;
    if (gt) {
        assert_int_equal(pread(fd, b, 4, (off_t)((uint64_t)gt * 512 + g % 512 * 4)), 4);
        gte = ld_le32(b);
    }
    close(fd);
    return gte;
}

/*
 * Grain table entries of new grains reach the file at the next guest flush
 * (after the data), when a dirty table must leave the cache (40 dirty tables,
 * 32 cache slots), at reopen read-only and at close; the data reads back all
 * along and the image checks clean.
 */
static void test_vmdk_alloc_deferred(void **state)
{
    enum { TABLES = 40 };
    const uint64_t span = 512ULL * CL; /* guest bytes one grain table maps */
    uint8_t *data = malloc(CL), *buf = malloc(CL);
    char opts[64];
    BlockBackend *blk;

    snprintf(opts, sizeof(opts), "size=%llu", (unsigned long long)(TABLES * span));
    create(img, opts);
    blk = open_plain(BDRV_O_RDWR);
    drv_test_pattern(data, CL, 1);
    assert_int_equal(blk_pwrite(blk, 3 * CL, CL, data, 0), 0);
    assert_int_equal(disk_gte(3), 0);                 /* in the cache only */
    assert_int_equal(blk_pread(blk, 3 * CL, CL, buf, 0), 0);
    assert_memory_equal(buf, data, CL);
    assert_int_equal(blk_flush(blk), 0);
    assert_true(disk_gte(3) > 1);                      /* the guest flush wrote it */

    /* One new grain in each table: past 32 dirty tables the cache must write them. */
    for (int t = 0; t < TABLES; t++) {
        drv_test_pattern(data, CL, (uint8_t)(t + 2));
        assert_int_equal(blk_pwrite(blk, (int64_t)(t * span + 7 * CL), CL, data, 0), 0);
    }
    assert_true(disk_gte(7) > 1);
    for (int t = 0; t < TABLES; t++) {
        drv_test_pattern(data, CL, (uint8_t)(t + 2));
        assert_int_equal(blk_pread(blk, (int64_t)(t * span + 7 * CL), CL, buf, 0), 0);
        assert_memory_equal(buf, data, CL);
    }
    assert_int_equal(disk_gte((TABLES - 1) * 512 + 7), 0); /* the last ones still wait */

    /* Going read-only writes them. */
    drv_test_pattern(data, CL, 99);
    assert_int_equal(blk_pwrite(blk, 2 * span + 9 * CL, CL, data, 0), 0);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    assert_true(disk_gte(2 * 512 + 9) > 1);
    assert_true(disk_gte((TABLES - 1) * 512 + 7) > 1);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), false, NULL), 0);

    /* Close writes the last one. */
    assert_int_equal(blk_pwrite(blk, 5 * span + 11 * CL, CL, data, 0), 0);
    blk_unref(blk);
    assert_true(disk_gte(5 * 512 + 11) > 1);
    blk = open_plain(0);
    assert_int_equal(blk_pread(blk, (int64_t)(5 * span + 11 * CL), CL, buf, 0), 0);
    assert_memory_equal(buf, data, CL);
    blk_unref(blk);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        assert_int_equal(drv_test_sh("qemu-img check -q -f vmdk '%s'", img), 0);
    }
    free(data);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vmdk_alloc_unlocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_alloc_concurrent_monolithic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_alloc_concurrent_2gb, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_alloc_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vmdk_alloc_deferred, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
