/*
 * qcow2's lock-free read hit path (qcow2_map_plain_hit): reads that find a
 * plain cluster in a cached L2 table while no coroutine holds s->lock go to
 * the data file without the lock and through bdrv_co_preadv_checked().
 *
 * The image lives in "yram", an in-memory protocol driver of this test whose
 * requests yield before they complete, so many are in flight at once and
 * interleave with metadata updates and cache evictions. A write lands when
 * it completes; a read fills its buffer when it completes (so a table being
 * loaded into the L2 cache holds stale bytes until then, and a stale mapping
 * shows as the wrong cluster's bytes), or, for the serialisation test, when
 * it is submitted (so a read that should have waited for an earlier write
 * but did not returns the old bytes).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drv-test-util.h"

#include "block/block-int.h"
#include "drivers/format/qcow2/qcow2.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define CS 4096                 /* cluster size: 512 entries, 2 MiB per L2 table */
#define DISK (32 * MiB)         /* 16 L2 tables; the L2 cache holds 4 */
#define NCL (DISK / CS)
#define L2N (CS / 8)            /* clusters per L2 table */

static char img[4096];

/* ---------------------------------------------------------------------- */
/* yram: an in-memory protocol whose requests complete after a yield */

static uint8_t *ram;
static int64_t ram_len, ram_cap;
static uint32_t ram_align = 1;

static int ram_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    char *fn = NULL;

    bopts_take_str(options, "filename", &fn, NULL);
    free(fn);
    return 0;
}

static int64_t coroutine_fn ram_getlength(BlockDriverState *bs)
{
    return ram_len;
}

static unsigned ram_delay;

/*
 * Lets the other coroutines run: completes from a bottom half, as a real
 * engine does, after 1 to 3 loop iterations (in turn), so that requests
 * overtake each other.
 */
static void coroutine_fn ram_yield(BlockDriverState *bs)
{
    for (unsigned n = 1 + ram_delay++ % 3; n; n--) {
        aio_co_schedule(bdrv_get_aio_context(bs), coroutine_self());
        coroutine_yield();
    }
}

static bool ram_read_early; /* reads take the bytes at submission (else at completion) */

static void ram_copy_out(int64_t offset, int64_t bytes, IOVector *qiov, size_t qoff)
{
    int64_t in = offset < ram_len ? (ram_len - offset < bytes ? ram_len - offset : bytes) : 0;

    iovector_from_buf(qiov, qoff, ram + offset, (size_t)in);
    iovector_memset(qiov, qoff + (size_t)in, 0, (size_t)(bytes - in));
}

/*
 * Late reads fill the caller's buffer only when they complete, as DMA does:
 * a metadata table being loaded holds stale bytes until then.
 */
static int coroutine_fn ram_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    /* The request layer pads everything to request_alignment. */
    assert_int_equal(offset % ram_align, 0);
    assert_int_equal(bytes % ram_align, 0);
    if (ram_read_early) {
        ram_copy_out(offset, bytes, qiov, qoff);
    }
    ram_yield(bs);
    if (!ram_read_early) {
        ram_copy_out(offset, bytes, qiov, qoff);
    }
    return 0;
}

static int coroutine_fn ram_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    assert_int_equal(offset % ram_align, 0);
    assert_int_equal(bytes % ram_align, 0);
    ram_yield(bs);
    /* The bytes land at completion. */
    if (offset + bytes > ram_cap) {
        return -ENOSPC;
    }
    if (offset > ram_len) {
        memset(ram + ram_len, 0, (size_t)(offset - ram_len));
    }
    iovector_to_buf(qiov, qoff, ram + offset, (size_t)bytes);
    ram_len = offset + bytes > ram_len ? offset + bytes : ram_len;
    return 0;
}

static int coroutine_fn ram_flush(BlockDriverState *bs)
{
    ram_yield(bs);
    return 0;
}

static void ram_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = ram_align;
}

static const BlockDriver bdrv_yram = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "yram",
    .protocol_name = "yram",
    .is_protocol = true,
    .bdrv_open = ram_open,
    .refresh_limits = ram_refresh_limits,
    .co_getlength = ram_getlength,
    .co_preadv = ram_preadv,
    .co_pwritev = ram_pwritev,
    .co_flush_to_disk = ram_flush,
};

static int setup(void **state)
{
    Error *err = NULL;

    drv_test_path(img, sizeof(img), "qcow2-cache");
    if (bdrv_register(&bdrv_yram, &err) < 0) {
        fail_msg("register yram: %s", error_get_pretty(err));
    }
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    free(ram);
    return 0;
}

/* A fresh empty qcow2 image of DISK bytes in yram; opens it with extra options. */
static BlockBackend *open_fresh(const char *extra, uint32_t align)
{
    char opts[1024];
    FILE *f;
    long len;

    assert_int_equal(drv_test_create("qcow2", img, "size=32M,cluster_size=4k", NULL, 0), 0);
    f = fopen(img, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    free(ram);
    ram_cap = 64 * MiB;
    ram = calloc(1, (size_t)ram_cap);
    assert_non_null(ram);
    assert_int_equal(fread(ram, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    ram_len = len;
    ram_align = align;
    ram_read_early = false;
    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=yram,file.filename=x%s%s",
             *extra ? "," : "", extra);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/* ---------------------------------------------------------------------- */
/* Cluster contents: every 8-byte word names its cluster, version and place. */

static void fill(uint8_t *buf, int64_t cluster, int version)
{
    for (int i = 0; i < CS / 8; i++) {
        uint64_t w = ((uint64_t)cluster << 32) | ((uint64_t)version << 16) | (uint64_t)i;

        memcpy(buf + i * 8, &w, 8);
    }
}

static bool is_version(const uint8_t *buf, int64_t cluster, int version)
{
    uint8_t want[CS];

    if (version == 0) {
        memset(want, 0, CS);
    } else {
        fill(want, cluster, version);
    }
    return memcmp(buf, want, CS) == 0;
}

typedef struct Op Op;

/* The ops of one test run: a pool of slots, and per cluster the ops in flight on it. */
typedef struct Run {
    Op *free;
    int pending, errors, bad;
    int version[NCL];        /* the latest version submitted */
    int busy[NCL];           /* ops in flight on the cluster */
    bool writing[NCL];       /* a write is among them */
} Run;

struct Op {
    Run *run;
    Op *next_free;
    IOVector qiov;
    uint8_t buf[2 * CS];
    int64_t cluster;
    int n;                   /* clusters it covers (reads: 1 or 2) */
    int before[2], after[2]; /* the versions a read may return, per cluster */
    bool read;
};

static void op_cb(void *opaque, int ret)
{
    Op *op = opaque;
    Run *r = op->run;

    r->pending--;
    r->errors += ret < 0;
    for (int k = 0; k < op->n; k++) {
        int64_t c = op->cluster + k;
        const uint8_t *b = op->buf + k * CS;
        uint64_t w;

        r->busy[c]--;
        if (!op->read) {
            r->writing[c] = false;
            continue;
        }
        if (ret < 0 || is_version(b, c, op->before[k]) || is_version(b, c, op->after[k])) {
            continue;
        }
        memcpy(&w, b, 8);
        print_error("read of cluster %lld returned word 0x%016llx (want version %d or %d)\n",
                    (long long)c, (unsigned long long)w, op->before[k], op->after[k]);
        r->bad++;
    }
    op->next_free = r->free;
    r->free = op;
}

/*
 * Submits nops random 4 KiB reads and (every fourth op) whole-cluster writes
 * over the disk, qd requests in flight. A write goes only to a cluster with
 * nothing in flight; a read of a cluster being written may return the
 * version before the write or the one it writes, any other read exactly
 * the latest version. Then checks every cluster holds its latest version.
 */
static void run_mix(BlockBackend *blk, Run *r, int nops, int qd, unsigned seed)
{
    AioContext *ctx = blk_get_aio_context(blk);
    Op *ops = calloc((size_t)qd, sizeof(*ops));
    uint8_t buf[CS];

    assert_non_null(ops);
    for (int i = 0; i < qd; i++) {
        ops[i].run = r;
        ops[i].next_free = i + 1 < qd ? &ops[i + 1] : NULL;
    }
    r->free = ops;
    for (int i = 0; i < nops; i++) {
        int64_t c = (int64_t)(rand_r(&seed) % (NCL - 1));
        bool write = i % 4 == 3;

        if (i % 4 == 1) {
            /* Across an L2 table boundary: the second half maps in another table. */
            c = (c / L2N % (NCL / L2N - 1)) * L2N + L2N - 1;
        }
        Op *op;

        while (!r->free) {
            aio_poll(ctx, true);
        }
        if (write && r->busy[c]) {
            write = false;
        }
        op = r->free;
        r->free = op->next_free;
        op->cluster = c;
        op->read = !write;
        op->n = write ? 1 : 1 + i % 2; /* reads of two clusters map twice */
        iovector_init_buf(&op->qiov, op->buf, (size_t)op->n * CS);
        r->pending++;
        for (int k = 0; k < op->n; k++) {
            int v = r->version[c + k];

            r->busy[c + k]++;
            op->after[k] = v;
            op->before[k] = r->writing[c + k] && v > 0 ? v - 1 : v;
        }
        if (write) {
            r->writing[c] = true;
            fill(op->buf, c, ++r->version[c]);
            blk_aio_pwritev(blk, c * CS, &op->qiov, 0, op_cb, op);
        } else {
            memset(op->buf, 0xee, sizeof(op->buf));
            blk_aio_preadv(blk, c * CS, &op->qiov, 0, op_cb, op);
        }
    }
    while (r->pending) {
        aio_poll(ctx, true);
    }
    assert_int_equal(r->errors, 0);
    assert_int_equal(r->bad, 0);
    for (int64_t c = 0; c < NCL; c++) {
        assert_int_equal(blk_pread(blk, c * CS, CS, buf, 0), 0);
        if (!is_version(buf, c, r->version[c])) {
            fail_msg("cluster %lld does not hold version %d", (long long)c, r->version[c]);
        }
    }
    free(ops);
}

/* Version 1 in every even cluster; odd clusters stay unallocated (version 0). */
static void prefill(BlockBackend *blk, Run *r)
{
    uint8_t buf[CS];

    memset(r, 0, sizeof(*r));
    for (int64_t c = 0; c < NCL; c += 2) {
        fill(buf, c, 1);
        assert_int_equal(blk_pwrite(blk, c * CS, CS, buf, 0), 0);
        r->version[c] = 1;
    }
}

/*
 * Readers of every L2 table while writers allocate clusters in the same
 * tables (L2 entries change under s->lock), rewrite allocated clusters in
 * place, and make the 4-table L2 cache evict and reload tables (dirty ones
 * are written first, and a table being loaded is indexed before its bytes
 * arrive): every read returns its cluster's version from before or after
 * the write in flight on it, never another cluster's bytes, and the final
 * contents are exact.
 */
static void test_qcow2_cache_readers_vs_writer(void **state)
{
    static Run r;
    BlockBackend *blk = open_fresh("l2-cache-size=16k", 1);

    prefill(blk, &r);
    run_mix(blk, &r, 6000, 48, 4242);
    blk_unref(blk);
}

/*
 * The same with the L2 tables all cached (no eviction): reads hit tables
 * that writers are updating, from many coroutines at once.
 */
static void test_qcow2_cache_readers_vs_writer_cached(void **state)
{
    static Run r;
    BlockBackend *blk = open_fresh("l2-cache-size=1M", 1);

    prefill(blk, &r);
    run_mix(blk, &r, 6000, 48, 99);
    blk_unref(blk);
}

/* ---------------------------------------------------------------------- */
/* The checked read of the data file still waits for serialising requests */

typedef struct SerArgs {
    BlockBackend *blk;
    int64_t guest, host, pnum;
    uint8_t *buf;
    int ret;
    bool done;
} SerArgs;

static void coroutine_fn map_co(void *opaque)
{
    SerArgs *a = opaque;
    BlockDriverState *file = NULL;
    int st = bdrv_co_block_status(blk_bs(a->blk), a->guest, CS, &a->pnum, &a->host, &file);

    assert_true(st >= 0 && (st & BDRV_BLOCK_OFFSET_VALID));
    assert_ptr_equal(file, blk_bs(a->blk)->file->bs);
}

static void coroutine_fn ser_write_co(void *opaque)
{
    SerArgs *a = opaque;
    IOVector q;

    iovector_init_buf(&q, a->buf, CS);
    a->ret = bdrv_co_pwritev(blk_bs(a->blk)->file, a->host, CS, &q, BDRV_REQ_SERIALISING);
    a->done = true;
}

static void read_cb(void *opaque, int ret)
{
    int *r = opaque;

    *r = ret;
}

/*
 * A guest read of a cached plain cluster takes the lock-free hit and reads
 * the data file through bdrv_co_preadv_checked(); while a serialising write
 * of that host range is in flight on the file node, the read still waits for
 * it and returns the new bytes (a yram read that did not wait would return
 * the old ones). With request_alignment 1 and 4096 on the file node.
 */
static void check_read_waits(uint32_t align)
{
    static uint8_t oldb[CS], newb[CS], got[CS];
    BlockBackend *blk = open_fresh("", align);
    AioContext *ctx = blk_get_aio_context(blk);
    BlockDriverState *file = blk_bs(blk)->file->bs;
    SerArgs a = { .blk = blk, .guest = 5 * CS, .buf = newb };
    IOVector q;
    int rret = 1;

    ram_read_early = true;
    fill(oldb, 5, 1);
    fill(newb, 5, 2);
    assert_int_equal(blk_pwrite(blk, a.guest, CS, oldb, 0), 0);
    assert_int_equal(blk_pread(blk, a.guest, CS, got, 0), 0); /* its L2 table is cached */
    assert_memory_equal(got, oldb, CS);
    drv_test_run_co(ctx, map_co, &a);
    assert_int_equal(a.pnum, CS);

    aio_co_enter(ctx, coroutine_create(ser_write_co, &a));
    assert_false(a.done); /* yielded in yram, bytes not yet written */
    assert_int_equal(file->serialising_in_flight, 1);
    memset(got, 0xee, CS);
    iovector_init_buf(&q, got, CS);
    blk_aio_preadv(blk, a.guest, &q, 0, read_cb, &rret);
    while (!a.done || rret == 1) {
        aio_poll(ctx, true);
    }
    assert_int_equal(a.ret, 0);
    assert_int_equal(rret, 0);
    assert_memory_equal(got, newb, CS);
    assert_int_equal(file->serialising_in_flight, 0);
    blk_unref(blk);
}

static void test_qcow2_cache_checked_read_waits(void **state)
{
    check_read_waits(1);
    check_read_waits(4096);
}

/*
 * Guest reads smaller than the data file's request_alignment (4096) that
 * take the lock-free hit: the checked read of the file node still pads
 * them (yram asserts it only sees aligned requests) and returns the exact
 * bytes, also for a read that straddles two clusters (mapped twice).
 */
static void test_qcow2_cache_checked_read_unaligned(void **state)
{
    static const struct { int64_t off, len; } cases[] = {
        { 5 * CS, 512 }, { 5 * CS + 1000, 17 }, { 5 * CS + CS - 3, 3 },
        { 5 * CS + CS - 3, 7 }, { 6 * CS + 513, CS - 513 }, { 5 * CS, 2 * CS },
    };
    static uint8_t want[2 * CS], got[2 * CS];
    BlockBackend *blk = open_fresh("", 4096);

    fill(want, 5, 3);
    fill(want + CS, 6, 4);
    assert_int_equal(blk_pwrite(blk, 5 * CS, 2 * CS, want, 0), 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(got, 0xee, sizeof(got));
        assert_int_equal(blk_pread(blk, cases[i].off, cases[i].len, got, 0), 0);
        assert_memory_equal(got, want + (cases[i].off - 5 * CS), (size_t)cases[i].len);
    }
    blk_unref(blk);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qcow2_cache_readers_vs_writer),
        cmocka_unit_test(test_qcow2_cache_readers_vs_writer_cached),
        cmocka_unit_test(test_qcow2_cache_checked_read_waits),
        cmocka_unit_test(test_qcow2_cache_checked_read_unaligned),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
