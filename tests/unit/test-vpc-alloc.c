/*
 * Unit tests: vpc writes outside alloc_lock (drivers/format/vpc-alloc.c):
 * while one allocation is held inside its data write, other allocations,
 * reads and flushes complete and a write to the same block joins it
 * (completing only after it; in a differencing disk too, its bits added to
 * the block's bitmap); allocations complete without a flush and
 * their entries are written at the guest's flush; differencing-disk bitmap
 * updates in flight together queue behind one shared flush; a failed data
 * write leaves the block unallocated and a failed commit fails the flush;
 * new blocks past the end of the file are not zeroed (it reads zero there),
 * those over data a power cut left past the footer are. Each ends with coblk's check
 * and a read-only reopen, and qemu-img compare (dynamic disks; qemu-img has
 * no check for vpc) when qemu-img is installed.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/vpc-int.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define DISK (16 * MiB)
#define BLK (2 * MiB)

static char img[4096], raw[4096], parent[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vpc-alloc");
    drv_test_path(raw, sizeof(raw), "vpc-alloc-raw");
    drv_test_path(parent, sizeof(parent), "vpc-alloc-parent");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(raw);
    unlink(parent);
    return 0;
}

/* Opens img through blkdebug (extra: more options, may be ""). */
static BlockBackend *open_dbg(const char *extra)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=vpc,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s%s", img, extra);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/* coblk's check, a read-only reopen reading want, qemu-img compare (dynamic disks). */
static void verify(const uint8_t *want, bool diff)
{
    uint8_t *buf = malloc(DISK);
    BdrvCheckResult res = { 0 };
    BlockBackend *blk = drv_test_open_image("vpc", img, 0);
    int fd;

    assert_int_equal(blk_pread(blk, 0, DISK, buf, 0), 0);
    assert_memory_equal(buf, want, DISK);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    blk_unref(blk);
    free(buf);
    if (diff || drv_test_sh("qemu-img --version >/dev/null 2>&1") != 0) {
        return;
    }
    fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(pwrite(fd, want, DISK, 0), DISK);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f vpc -F raw '%s' '%s'", img, raw), 0);
}

/* A differencing disk over a vpc parent holding a pattern (also in want). */
static void make_diff(uint8_t *want)
{
    char opts[8192];
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vpc", parent, "size=16M,force_size=on", NULL, 0), 0);
    blk = drv_test_open_image("vpc", parent, BDRV_O_RDWR);
    drv_test_pattern(want, DISK, 41);
    assert_int_equal(blk_pwrite(blk, 0, DISK, want, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "size=16M,force_size=on,backing_file=%s,backing_fmt=vpc",
             parent);
    assert_int_equal(drv_test_create("vpc", img, opts, NULL, 0), 0);
}

/*
 * A partial write of block 1 is held inside its data write: a whole-block
 * write of block 3, a read of other bytes of block 1 (zeroes: not published
 * yet) and a flush complete; a write of other bytes of block 1 joins the
 * allocation and completes only after it.
 */
static void test_vpc_alloc_unlocked(void **state)
{
    enum { A = BLK + 4 * KiB, B = BLK + 512 * KiB, R = BLK + 768 * KiB };
    uint8_t *want = calloc(1, DISK), *buf = malloc(64 * KiB), *w2 = want + 3 * BLK;
    int pending_a = 1, pending = 0, pending_b = 1;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BlockDriverState *bs;
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = open_dbg("");
    bs = blk_bs(blk);
    memset(want + A, 0xa1, 4 * KiB);
    memset(want + B, 0xb2, 64 * KiB);
    drv_test_pattern(w2, BLK, 3);

    assert_int_equal(bdrv_debug_breakpoint(bs, "write_aio", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 4 * KiB);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true); /* bitmap and zeroes complete first */
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    pending = 3;
    iovector_init_buf(&r2.qiov, w2, BLK);
    blk_aio_pwritev(blk, 3 * BLK, &r2.qiov, 0, drv_test_req_done, &r2);
    iovector_init_buf(&rr.qiov, buf, 64 * KiB);
    blk_aio_preadv(blk, R, &rr.qiov, 0, drv_test_req_done, &rr);
    blk_aio_flush(blk, drv_test_req_done, &rf);
    iovector_init_buf(&rb.qiov, want + B, 64 * KiB);
    blk_aio_pwritev(blk, B, &rb.qiov, 0, drv_test_req_done, &rb);
    drv_test_wait(blk, &pending);
    assert_int_equal(r2.ret, 0);
    assert_int_equal(rr.ret, 0);
    assert_int_equal(rf.ret, 0);
    assert_memory_equal(buf, want + R, 64 * KiB);
    drv_test_poll_some(blk);
    assert_int_equal(pending_a + pending_b, 2); /* the joiner waits for the allocation */
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    assert_int_equal(bdrv_debug_resume(bs, "a"), 0);
    drv_test_wait(blk, &pending_a);
    drv_test_wait(blk, &pending_b);
    assert_int_equal(ra.ret, 0);
    assert_int_equal(rb.ret, 0);
    blk_unref(blk);
    verify(want, false);
    free(want);
    free(buf);
}

/*
 * A differencing disk: a partial write of new block 1 is held inside its
 * data write; a whole-block write of block 3, a read of other bytes of
 * block 1 (the parent's: the block is not published yet) and a flush
 * complete; a write of other sectors of block 1 joins the allocation and
 * completes only after it, and its sectors' bits are in the block's bitmap
 * (the reopened image reads its data there, the parent's around both writes).
 */
static void test_vpc_alloc_diff_join(void **state)
{
    enum { A = BLK + 4 * KiB, B = BLK + 512 * KiB + 512, R = BLK + 768 * KiB };
    uint8_t *want = malloc(DISK), *buf = malloc(64 * KiB), *w2 = malloc(BLK);
    int pending_a = 1, pending = 3, pending_b = 1;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BlockDriverState *bs;
    BlockBackend *blk;
    FmtJoin *j;

    make_diff(want);
    blk = open_dbg("");
    bs = blk_bs(blk);
    memset(want + A, 0xa1, 4 * KiB);
    memset(want + B, 0xb2, 63 * KiB);
    drv_test_pattern(w2, BLK, 3);

    assert_int_equal(bdrv_debug_breakpoint(bs, "write_aio", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 4 * KiB);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true); /* bitmap and zeroes complete first */
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    iovector_init_buf(&r2.qiov, w2, BLK);
    blk_aio_pwritev(blk, 3 * BLK, &r2.qiov, 0, drv_test_req_done, &r2);
    iovector_init_buf(&rr.qiov, buf, 64 * KiB);
    blk_aio_preadv(blk, R, &rr.qiov, 0, drv_test_req_done, &rr);
    blk_aio_flush(blk, drv_test_req_done, &rf);
    iovector_init_buf(&rb.qiov, want + B, 63 * KiB);
    blk_aio_pwritev(blk, B, &rb.qiov, 0, drv_test_req_done, &rb);
    drv_test_wait(blk, &pending);
    assert_int_equal(r2.ret, 0);
    assert_int_equal(rr.ret, 0);
    assert_int_equal(rf.ret, 0);
    assert_memory_equal(buf, want + R, 64 * KiB);
    j = fmt_join_find(&((BDRVVpcState *)bs->opaque)->allocs, 1);
    assert_non_null(j);
    assert_int_equal(j->refs, 1); /* joined, not waiting */
    while (j->writing) {
        aio_poll(blk_get_aio_context(blk), true); /* its data goes out meanwhile */
    }
    drv_test_poll_some(blk);
    assert_int_equal(pending_a + pending_b, 2); /* the joiner completes with the allocation */
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    assert_int_equal(bdrv_debug_resume(bs, "a"), 0);
    drv_test_wait(blk, &pending_a);
    drv_test_wait(blk, &pending_b);
    assert_int_equal(ra.ret, 0);
    assert_int_equal(rb.ret, 0);
    memcpy(want + 3 * BLK, w2, BLK);
    blk_unref(blk);
    verify(want, true);
    free(want);
    free(buf);
    free(w2);
}

/* The BAT entry of block b as the file holds it. */
static uint32_t file_entry(BDRVVpcState *s, uint32_t b)
{
    uint8_t e[4];
    int fd = open(img, O_RDONLY);

    assert_int_equal(pread(fd, e, 4, (off_t)(s->bat_offset + (uint64_t)b * 4)), 4);
    close(fd);
    return ld_be32(e);
}

/* Writes the N requests of the shared-flush tests: blocks 0..7, then 0..3 again. */
enum { N = 12 };
static void start_writes(BlockBackend *blk, uint8_t *want, DrvTestReq *reqs, int *pending)
{
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)(i % 8) * BLK + (i / 8 + 1) * 512 * KiB + (i % 3) * 4 * KiB;

        drv_test_pattern(want + off, 128 * KiB, (uint8_t)(i + 1));
        reqs[i].pending = pending;
        iovector_init_buf(&reqs[i].qiov, want + off, 128 * KiB);
        blk_aio_pwritev(blk, off, &reqs[i].qiov, 0, drv_test_req_done, &reqs[i]);
    }
}

/*
 * Allocating writes in flight together (the second writes of blocks 0..3
 * join their allocations) complete without a flush: entries set in memory,
 * their BAT sector dirty, the file's BAT unchanged. The guest's flush
 * writes them.
 */
static void test_vpc_alloc_commit_at_flush(void **state)
{
    uint8_t *want = calloc(1, DISK);
    DrvTestReq reqs[N];
    BDRVVpcState *s;
    BlockBackend *blk;
    int pending = N;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = open_dbg("");
    s = blk_bs(blk)->opaque;
    start_writes(blk, want, reqs, &pending);
    drv_test_wait(blk, &pending);
    for (uint32_t b = 0; b < 8; b++) {
        assert_int_equal(reqs[b].ret, 0);
        assert_true(s->bat[b] != VHD_BAT_UNUSED);
        assert_int_equal(file_entry(s, b), VHD_BAT_UNUSED);
    }
    assert_int_equal(s->n_dirty, 1);
    assert_true(s->footer_dirty);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(s->n_dirty, 0);
    for (uint32_t b = 0; b < 8; b++) {
        assert_int_equal(file_entry(s, b), s->bat[b]);
    }
    blk_unref(blk);
    verify(want, false);
    free(want);
}

/*
 * A differencing disk: while the first bitmap update to publish is held
 * before its flush, the other writes that set new bits into blocks 0..1
 * (allocated before) queue behind that one flush; new blocks 2..7 and the
 * second writes of blocks 2..3 (which join their allocations) complete
 * meanwhile (no flush).
 */
static void test_vpc_alloc_bits_shared_flush(void **state)
{
    uint8_t *want = calloc(1, DISK);
    DrvTestReq reqs[N];
    BDRVVpcState *s;
    BlockDriverState *bs;
    BlockBackend *blk;
    int pending = N;

    make_diff(want);
    blk = open_dbg("");
    bs = blk_bs(blk);
    s = bs->opaque;
    for (int b = 0; b < 2; b++) {
        memset(want + b * BLK, 0x10 + b, 4 * KiB);
        assert_int_equal(blk_pwrite(blk, b * BLK, 4 * KiB, want + b * BLK, 0), 0);
    }
    assert_int_equal(bdrv_debug_breakpoint(bs, "flush_to_disk", "f"), 0);
    start_writes(blk, want, reqs, &pending);
    while (!bdrv_debug_is_suspended(bs, "f") || s->publish_waiting < 4 || pending > 4) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    drv_test_poll_some(blk);
    assert_int_equal(s->publish_waiting, 4);
    assert_int_equal(pending, 4);
    assert_int_equal(bdrv_debug_resume(bs, "f"), 0);
    drv_test_wait(blk, &pending);
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    blk_unref(blk);
    verify(want, true);
    free(want);
}

/* Going read-only writes the entries of new blocks (and the footers) first. */
static void test_vpc_alloc_reopen_ro(void **state)
{
    uint8_t *want = calloc(1, DISK);
    BDRVVpcState *s;
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = drv_test_open_image("vpc", img, BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    memset(want + 2 * BLK, 0x3c, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 2 * BLK, 64 * KiB, want + 2 * BLK, 0), 0);
    assert_int_equal(file_entry(s, 2), VHD_BAT_UNUSED);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    assert_int_equal(s->n_dirty, 0);
    assert_false(s->footer_dirty);
    assert_int_equal(file_entry(s, 2), s->bat[2]);
    blk_unref(blk);
    verify(want, false);
    free(want);
}

/*
 * A failed data write leaves the block unallocated: it reads zeroes, and the
 * next write allocates it. A failed commit fails the guest's flush and keeps
 * the entries dirty: the next flush writes them.
 */
static void test_vpc_alloc_write_error(void **state)
{
    uint8_t *want = calloc(1, DISK), *buf = malloc(64 * KiB);
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = open_dbg(",file.inject-error.0.event=write_aio,file.inject-error.0.iotype=write,"
                   "file.inject-error.0.once=on,file.inject-error.1.event=flush_to_disk,"
                   "file.inject-error.1.iotype=flush,file.inject-error.1.once=on");
    memset(buf, 0x77, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 2 * BLK, 64 * KiB, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 2 * BLK, 64 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 64 * KiB);
    memset(buf, 0x78, 64 * KiB);
    memset(want + 2 * BLK, 0x78, 64 * KiB);
    memset(want + 5 * BLK, 0x78, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 2 * BLK, 64 * KiB, buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 5 * BLK, 64 * KiB, buf, 0), 0);
    assert_int_equal(blk_flush(blk), -EIO);
    assert_int_equal(((BDRVVpcState *)blk_bs(blk)->opaque)->n_dirty, 1);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    verify(want, false);
    free(want);
    free(buf);
}

/* Opens img over blkdebug failing every write-zeroes request to the file. */
static BlockBackend *open_no_zeroes(void)
{
    return open_dbg(",file.inject-error.0.event=none,file.inject-error.0.iotype=write-zeroes");
}

/* Writes [off, off + len) of want in 64 KiB requests, 16 in flight. */
static void write_stream(BlockBackend *blk, uint8_t *want, int64_t off, int64_t len)
{
    enum { CHUNK = 64 * KiB, DEPTH = 16 };
    DrvTestReq reqs[DEPTH];
    int pending = 0;

    for (int64_t at = off; at < off + len;) {
        for (int i = 0; i < DEPTH && at < off + len; i++, at += CHUNK) {
            reqs[i] = (DrvTestReq){ .pending = &pending };
            pending++;
            iovector_init_buf(&reqs[i].qiov, want + at, CHUNK);
            blk_aio_pwritev(blk, at, &reqs[i].qiov, 0, drv_test_req_done, &reqs[i]);
        }
        drv_test_wait(blk, &pending);
        for (int i = 0; i < DEPTH; i++) {
            assert_int_equal(reqs[i].ret, 0);
        }
    }
}

/*
 * New blocks of a dynamic disk go past the end of the file, which reads
 * zero there: a sequential stream (16 writes in flight, most of them
 * joining allocations), a write inside a new block and one at its end
 * issue no write-zeroes to the file (every one fails here), and the rest of
 * their blocks reads zero.
 */
static void test_vpc_alloc_no_zeroes_past_end(void **state)
{
    uint8_t *want = calloc(1, DISK);
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = open_no_zeroes();
    drv_test_pattern(want, 5 * BLK, 7);
    write_stream(blk, want, 0, 5 * BLK);
    memset(want + 5 * BLK + 640 * KiB, 0x5a, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 5 * BLK + 640 * KiB, 64 * KiB, want + 5 * BLK + 640 * KiB,
                                0), 0);
    memset(want + 7 * BLK - 64 * KiB, 0x6b, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 7 * BLK - 64 * KiB, 64 * KiB, want + 7 * BLK - 64 * KiB,
                                0), 0);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    verify(want, false);
    free(want);
}

/* The same for a differencing disk: sectors outside a block's bitmap read the parent. */
static void test_vpc_alloc_no_zeroes_diff(void **state)
{
    uint8_t *want = calloc(1, DISK);
    BlockBackend *blk;

    make_diff(want);
    blk = open_no_zeroes();
    drv_test_pattern(want + BLK, 2 * BLK, 9);
    write_stream(blk, want, BLK, 2 * BLK);
    memset(want + 4 * BLK + 640 * KiB, 0x5a, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 4 * BLK + 640 * KiB, 64 * KiB, want + 4 * BLK + 640 * KiB,
                                0), 0);
    blk_unref(blk);
    verify(want, true);
    free(want);
}

/*
 * After a power cut, the file may hold data past its footer (a lost
 * allocation whose BAT entry never reached the disk): new blocks placed
 * there are zeroed around their writes, up to the end of that data (and
 * not past it), and read zero outside them.
 */
static void test_vpc_alloc_zeroes_lost_data(void **state)
{
    enum { JUNK = 3 * MiB };
    uint8_t *want = calloc(1, DISK), *junk = malloc(JUNK);
    BlockBackend *blk;
    struct stat st;
    int fd;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = drv_test_open_image("vpc", img, BDRV_O_RDWR);
    memset(want, 0x11, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 0, 64 * KiB, want, 0), 0);
    blk_unref(blk);
    memset(junk, 0xee, JUNK);
    fd = open(img, O_WRONLY);
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal(pwrite(fd, junk, JUNK, st.st_size), JUNK);
    close(fd);

    blk = drv_test_open_image("vpc", img, BDRV_O_RDWR);
    memset(want + 3 * BLK + 512 * KiB, 0x33, 64 * KiB); /* the junk's block */
    assert_int_equal(blk_pwrite(blk, 3 * BLK + 512 * KiB, 64 * KiB, want + 3 * BLK + 512 * KiB,
                                0), 0);
    memset(want + 4 * BLK + 1536 * KiB, 0x44, 64 * KiB); /* its head in the junk */
    assert_int_equal(blk_pwrite(blk, 4 * BLK + 1536 * KiB, 64 * KiB,
                                want + 4 * BLK + 1536 * KiB, 0), 0);
    blk_unref(blk);
    verify(want, false);
    free(want);
    free(junk);
}

/*
 * New blocks at the end of the file have their data 64 KiB-aligned in the
 * file (2 MiB blocks), after the dynamic header and BAT as well as after
 * another block, and the gaps before them read as nothing.
 */
static void test_vpc_alloc_data_aligned(void **state)
{
    uint8_t *want = calloc(1, DISK);
    BDRVVpcState *s;
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vpc", img, "size=16M,force_size=on", NULL, 0), 0);
    blk = drv_test_open_image("vpc", img, BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    drv_test_pattern(want + 2 * BLK, 3 * BLK, 5);
    write_stream(blk, want, 2 * BLK, 3 * BLK);
    memset(want + 6 * BLK + 4 * KiB, 0x66, 4 * KiB);
    assert_int_equal(blk_pwrite(blk, 6 * BLK + 4 * KiB, 4 * KiB, want + 6 * BLK + 4 * KiB, 0),
                     0);
    for (uint32_t b = 2; b < 7; b++) {
        if (b != 5) {
            assert_int_equal(((uint64_t)s->bat[b] * 512 + s->bitmap_size) % (64 * KiB), 0);
        }
    }
    assert_int_equal(s->bat[5], VHD_BAT_UNUSED);
    blk_unref(blk);
    verify(want, false);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vpc_alloc_unlocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_commit_at_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_bits_shared_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_diff_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_reopen_ro, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_no_zeroes_past_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_no_zeroes_diff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_zeroes_lost_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vpc_alloc_data_aligned, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
