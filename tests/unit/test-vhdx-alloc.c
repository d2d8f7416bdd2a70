/*
 * Unit tests: vhdx allocating writes outside the driver's lock
 * (drivers/format/vhdx/alloc.c): while one allocation is held inside its
 * data write, other allocations, reads and flushes complete and a write to
 * the same block joins it (completing only after it); allocations complete
 * without a flush and their entries are written at the guest's flush, one
 * flush and one log entry for all; a failed data write leaves no BAT entry
 * and a failed commit fails the flush; differencing partial writes
 * (partial.c) run outside the lock too, join, and leave their bits and
 * entries for the guest's flush. Each ends with coblk's check, and Debian's
 * qemu-img check and compare against the expected bytes when qemu-img is
 * installed (of the parent only for differencing images, which it refuses).
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define DISK (16 * MiB)

static char img[4096], raw[4096], parent[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "vhdx-alloc");
    drv_test_path(raw, sizeof(raw), "vhdx-alloc-raw");
    drv_test_path(parent, sizeof(parent), "vhdx-alloc-parent");
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

    snprintf(opts, sizeof(opts), "driver=vhdx,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s%s", img, extra);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/* coblk's check, a read-only reopen reading want, qemu-img check and compare. */
static void verify(const uint8_t *want)
{
    uint8_t *buf = malloc(DISK);
    BdrvCheckResult res = { 0 };
    BlockBackend *blk = drv_test_open_image("vhdx", img, 0);
    int fd;

    assert_int_equal(blk_pread(blk, 0, DISK, buf, 0), 0);
    assert_memory_equal(buf, want, DISK);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    blk_unref(blk);
    free(buf);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") != 0) {
        return;
    }
    fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_int_equal(pwrite(fd, want, DISK, 0), DISK);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img check -q -f vhdx '%s'", img), 0);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f vhdx -F raw '%s' '%s'", img, raw), 0);
}

/*
 * A partial write of block 1 is held inside its data write: a whole-block
 * write of block 3, a read of other bytes of block 1 (zeroes: not published
 * yet) and a flush complete; a write of other bytes of block 1 joins the
 * allocation and completes only after it.
 */
static void test_vhdx_alloc_unlocked(void **state)
{
    enum { A = MiB + 4 * KiB, B = MiB + 512 * KiB, R = MiB + 768 * KiB };
    uint8_t *want = calloc(1, DISK), *buf = malloc(64 * KiB), *w2 = want + 3 * MiB;
    int pending_a = 1, pending = 0, pending_b = 1;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BlockDriverState *bs;
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vhdx", img, "size=16M,block_size=1M", NULL, 0), 0);
    blk = open_dbg("");
    bs = blk_bs(blk);
    memset(want + A, 0xa1, 4 * KiB);
    memset(want + B, 0xb2, 64 * KiB);
    drv_test_pattern(w2, MiB, 3);

    assert_int_equal(bdrv_debug_breakpoint(bs, "write_aio", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 4 * KiB);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true); /* the zeroing completes first */
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    pending = 3;
    iovector_init_buf(&r2.qiov, w2, MiB);
    blk_aio_pwritev(blk, 3 * MiB, &r2.qiov, 0, drv_test_req_done, &r2);
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
    verify(want);
    free(want);
    free(buf);
}

/* The BAT entry of block b as the file holds it. */
static uint64_t file_entry(BDRVVhdxState *s, uint64_t b)
{
    uint8_t e[8];
    int fd = open(img, O_RDONLY);

    assert_int_equal(pread(fd, e, 8, (off_t)(s->bat_offset + vhdx_bat_index(s, b) * 8)), 8);
    close(fd);
    return ld_le64(e);
}

/*
 * N allocating writes in flight together complete without a flush: their
 * entries are set in memory, their BAT sector dirty, the file's BAT
 * unchanged. The guest's flush writes them: one flush and one log entry
 * (metadata-log=on) or the sector in place (off).
 */
static void run_commit_at_flush(bool log)
{
    enum { N = 12 };
    uint8_t *want = calloc(1, DISK);
    DrvTestReq reqs[N];
    BDRVVhdxState *s;
    BlockBackend *blk;
    int pending = N;

    assert_int_equal(drv_test_create("vhdx", img, "size=16M,block_size=1M", NULL, 0), 0);
    blk = open_dbg(log ? "" : ",metadata-log=off");
    s = blk_bs(blk)->opaque;
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)i * MiB + (i % 3) * 128 * KiB;

        drv_test_pattern(want + off, 256 * KiB, (uint8_t)(i + 1));
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + off, 256 * KiB);
        blk_aio_pwritev(blk, off, &reqs[i].qiov, 0, drv_test_req_done, &reqs[i]);
    }
    drv_test_wait(blk, &pending);
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
        assert_int_equal(s->bat[vhdx_bat_index(s, (uint64_t)i)] & VHDX_BAT_STATE_MASK,
                         VHDX_PAYLOAD_FULLY_PRESENT);
        assert_int_equal(file_entry(s, (uint64_t)i), VHDX_PAYLOAD_ZERO); /* as created */
    }
    assert_int_equal(s->n_dirty, 1);
    assert_int_equal(s->log_head, 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(s->n_dirty, 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(file_entry(s, (uint64_t)i), s->bat[vhdx_bat_index(s, (uint64_t)i)]);
    }
    if (log) {
        assert_int_equal(s->log_seq, 2); /* one log entry */
    } else {
        assert_int_equal(s->log_head, 0); /* none */
    }
    blk_unref(blk);
    verify(want);
    free(want);
}

static void test_vhdx_alloc_commit_at_flush(void **state)
{
    run_commit_at_flush(true);
    run_commit_at_flush(false);
}

/* A differencing image (1 MiB blocks) over a vhdx parent holding a pattern (also in want). */
static void make_diff(uint8_t *want)
{
    char opts[8192];
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vhdx", parent, "size=16M,block_size=1M", NULL, 0), 0);
    blk = drv_test_open_image("vhdx", parent, BDRV_O_RDWR);
    drv_test_pattern(want, DISK, 41);
    assert_int_equal(blk_pwrite(blk, 0, DISK, want, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "size=16M,block_size=1M,backing_file=%s,backing_fmt=vhdx",
             parent);
    assert_int_equal(drv_test_create("vhdx", img, opts, NULL, 0), 0);
}

/*
 * The differencing image reads want after a reopen and passes coblk's check;
 * qemu-img refuses differencing vhdx, so only the parent's qemu-img check.
 */
static void verify_diff(const uint8_t *want)
{
    uint8_t *buf = malloc(DISK);
    BdrvCheckResult res = { 0 };
    BlockBackend *blk = drv_test_open_image("vhdx", img, 0);

    assert_int_equal(blk_pread(blk, 0, DISK, buf, 0), 0);
    assert_memory_equal(buf, want, DISK);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    blk_unref(blk);
    free(buf);
    if (drv_test_sh("qemu-img --version >/dev/null 2>&1") == 0) {
        assert_int_equal(drv_test_sh("qemu-img check -q -f vhdx '%s'", parent), 0);
    }
}

/*
 * A differencing image: a partial write of NOT_PRESENT block 1 is held
 * inside its data write (without s->lock); a partial write of block 3
 * (another partial allocation), a read of other bytes of block 1 (the
 * parent's: not published yet) and a flush complete; a write of other
 * sectors of block 1 joins the allocation (its data written meanwhile) and
 * completes with it. Both complete without a flush: the block's entry and
 * bits are set in memory, written by the guest's flush (one log entry, or
 * in place with metadata-log=off); block 1 reads the two writes' data and
 * the parent's around them.
 */
static void run_diff_partial(bool log)
{
    enum { A = MiB + 4 * KiB, B = MiB + 512 * KiB + 512, R = MiB + 768 * KiB, C = 3 * MiB };
    uint8_t *want = malloc(DISK), *buf = malloc(64 * KiB);
    int pending_a = 1, pending = 2, pending_b = 1;
    DrvTestReq ra = { .pending = &pending_a }, rb = { .pending = &pending_b };
    DrvTestReq r2 = { .pending = &pending }, rr = { .pending = &pending };
    DrvTestReq rf = { .pending = &pending };
    BlockDriverState *bs;
    BDRVVhdxState *s;
    BlockBackend *blk;
    uint8_t *blk1;
    FmtJoin *j;

    make_diff(want);
    blk = open_dbg(log ? "" : ",metadata-log=off");
    bs = blk_bs(blk);
    s = bs->opaque;
    memset(want + A, 0xa1, 4 * KiB);
    memset(want + B, 0xb2, 63 * KiB);
    memset(want + C, 0xc3, 8 * KiB);

    assert_int_equal(bdrv_debug_breakpoint(bs, "write_aio", "a"), 0);
    iovector_init_buf(&ra.qiov, want + A, 4 * KiB);
    blk_aio_pwritev(blk, A, &ra.qiov, 0, drv_test_req_done, &ra);
    while (pending_a && !bdrv_debug_is_suspended(bs, "a")) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_true(bdrv_debug_is_suspended(bs, "a"));

    iovector_init_buf(&r2.qiov, want + C, 8 * KiB);
    blk_aio_pwritev(blk, C, &r2.qiov, 0, drv_test_req_done, &r2);
    iovector_init_buf(&rr.qiov, buf, 64 * KiB);
    blk_aio_preadv(blk, R, &rr.qiov, 0, drv_test_req_done, &rr);
    iovector_init_buf(&rb.qiov, want + B, 63 * KiB);
    blk_aio_pwritev(blk, B, &rb.qiov, 0, drv_test_req_done, &rb);
    drv_test_wait(blk, &pending);
    assert_int_equal(r2.ret, 0);
    assert_int_equal(rr.ret, 0);
    pending = 1;
    blk_aio_flush(blk, drv_test_req_done, &rf); /* after block 3's write completed */
    drv_test_wait(blk, &pending);
    assert_int_equal(rf.ret, 0);
    assert_memory_equal(buf, want + R, 64 * KiB);
    assert_int_equal(s->bat[vhdx_bat_index(s, 3)] & VHDX_BAT_STATE_MASK,
                     VHDX_PAYLOAD_PARTIALLY_PRESENT);
    assert_int_equal(file_entry(s, 3), s->bat[vhdx_bat_index(s, 3)]); /* the flush wrote it */
    j = fmt_join_find(&s->allocs, 1);
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
    assert_int_equal(s->bat[vhdx_bat_index(s, 1)] & VHDX_BAT_STATE_MASK,
                     VHDX_PAYLOAD_PARTIALLY_PRESENT);
    assert_int_equal(file_entry(s, 1), VHDX_PAYLOAD_NOT_PRESENT); /* not written yet */
    assert_true(s->n_dirty > 0 && s->n_sb_dirty > 0);
    blk1 = malloc(MiB);
    assert_int_equal(blk_pread(blk, MiB, MiB, blk1, 0), 0); /* its bits, from memory */
    assert_memory_equal(blk1, want + MiB, MiB);
    free(blk1);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(s->n_dirty + s->n_sb_dirty, 0);
    assert_int_equal(file_entry(s, 1), s->bat[vhdx_bat_index(s, 1)]);
    blk_unref(blk);
    verify_diff(want);
    free(want);
    free(buf);
}

static void test_vhdx_alloc_diff_partial(void **state)
{
    run_diff_partial(true);
    run_diff_partial(false);
}

/* Going read-only writes the entries of new blocks first. */
static void test_vhdx_alloc_reopen_ro(void **state)
{
    uint8_t *want = calloc(1, DISK);
    BDRVVhdxState *s;
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vhdx", img, "size=16M,block_size=1M", NULL, 0), 0);
    blk = drv_test_open_image("vhdx", img, BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    memset(want + 2 * MiB, 0x3c, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 2 * MiB, 64 * KiB, want + 2 * MiB, 0), 0);
    assert_int_equal(file_entry(s, 2), VHDX_PAYLOAD_ZERO);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    assert_int_equal(s->n_dirty, 0);
    assert_int_equal(file_entry(s, 2), s->bat[vhdx_bat_index(s, 2)]);
    blk_unref(blk);
    verify(want);
    free(want);
}

/*
 * A failed data write leaves the block not present: it reads zeroes, and
 * the next write allocates it. A failed commit fails the guest's flush and
 * keeps the entry dirty: the next flush writes it.
 */
static void test_vhdx_alloc_write_error(void **state)
{
    uint8_t *want = calloc(1, DISK), *buf = malloc(64 * KiB);
    BlockBackend *blk;

    assert_int_equal(drv_test_create("vhdx", img, "size=16M,block_size=1M", NULL, 0), 0);
    blk = open_dbg(",file.inject-error.0.event=write_aio,file.inject-error.0.iotype=write,"
                   "file.inject-error.0.once=on,file.inject-error.1.event=flush_to_disk,"
                   "file.inject-error.1.iotype=flush,file.inject-error.1.once=on");
    memset(buf, 0x77, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 2 * MiB, 64 * KiB, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 2 * MiB, 64 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 64 * KiB);
    memset(buf, 0x78, 64 * KiB);
    memset(want + 2 * MiB, 0x78, 64 * KiB);
    memset(want + 5 * MiB, 0x78, 64 * KiB);
    assert_int_equal(blk_pwrite(blk, 2 * MiB, 64 * KiB, buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 5 * MiB, 64 * KiB, buf, 0), 0);
    assert_int_equal(blk_flush(blk), -EIO);
    assert_int_equal(((BDRVVhdxState *)blk_bs(blk)->opaque)->n_dirty, 1);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    verify(want);
    free(want);
    free(buf);
}

/*
 * A new block at the end of the file needs no zeroes: it reads zero, and the
 * file only grows over it (qemu-img check wants every block inside the file).
 * Space that held data (a discarded block's kept offset) is still zeroed:
 * with write-zeroes failing, the write into it fails instead of showing the
 * old bytes.
 */
static void test_vhdx_alloc_fresh_no_zeroes(void **state)
{
    static const char no_zeroes[] =
        ",file.inject-error.0.event=none,file.inject-error.0.iotype=write-zeroes";
    uint8_t *want = calloc(1, DISK), *buf = malloc(DISK);
    BlockBackend *blk;
    char o[8192];

    assert_int_equal(drv_test_create("vhdx", img, "size=16M,block_size=1M", NULL, 0), 0);
    blk = open_dbg(no_zeroes);
    drv_test_pattern(want + MiB + 640 * KiB, 64 * KiB, 3);    /* head and tail left */
    drv_test_pattern(want + 4 * MiB, 3 * MiB, 4);             /* whole blocks */
    assert_int_equal(blk_pwrite(blk, MiB + 640 * KiB, 64 * KiB, want + MiB + 640 * KiB, 0), 0);
    for (int64_t at = 4 * MiB; at < 7 * MiB; at += 64 * KiB) {
        assert_int_equal(blk_pwrite(blk, at, 64 * KiB, want + at, 0), 0);
    }
    memset(want + 15 * MiB + 4 * KiB, 0x5d, 4 * KiB);         /* the last block */
    assert_int_equal(blk_pwrite(blk, 15 * MiB + 4 * KiB, 4 * KiB, want + 15 * MiB + 4 * KiB, 0),
                     0);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    verify(want);

    /* Block 1 discarded keeps its offset; a write there must zero the rest of it. */
    snprintf(o, sizeof(o), "driver=vhdx,file.driver=file,file.filename=%s,discard=unmap", img);
    blk = drv_test_open_ok(o, BDRV_O_RDWR);
    assert_int_equal(blk_pdiscard(blk, MiB, MiB), 0);
    memset(want + MiB, 0, MiB);
    blk_unref(blk);
    blk = open_dbg(no_zeroes);
    assert_int_equal(blk_pwrite(blk, MiB + 8 * KiB, 4 * KiB, buf, 0), -EIO);
    blk_unref(blk);
    blk = drv_test_open_image("vhdx", img, BDRV_O_RDWR);
    memset(want + MiB + 8 * KiB, 0x6e, 4 * KiB);
    assert_int_equal(blk_pwrite(blk, MiB + 8 * KiB, 4 * KiB, want + MiB + 8 * KiB, 0), 0);
    blk_unref(blk);
    verify(want);
    free(want);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_vhdx_alloc_unlocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_alloc_commit_at_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_alloc_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_alloc_reopen_ro, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_alloc_diff_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_vhdx_alloc_fresh_no_zeroes, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
