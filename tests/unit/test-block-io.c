/*
 * Unit tests for the request layer (block/io*.c), against RAM-backed test
 * drivers defined here: "testram" (a protocol node with configurable limits,
 * a call log and a switch that parks requests until released), "testram-nz"
 * (the same without co_pwrite_zeroes) and "testcow" (a format node with a
 * 512-byte allocation map that reads unallocated blocks from its backing).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <coblk/block-driver.h>
#include <coblk/block.h>

#define MAX_CALLS 8192
#define MAX_PARKED 64

typedef struct TestCfg {
    int64_t size;
    uint32_t align;
    uint32_t min_mem_align;
    int64_t max_transfer;
    int max_iov;
    uint32_t pwz_align;
    int64_t max_pwz;
    uint32_t discard_align;
    int64_t max_discard;
    unsigned write_flags;
    unsigned zero_flags;
    bool zeroes_enotsup; /* co_pwrite_zeroes answers -ENOTSUP */
} TestCfg;

typedef struct Call {
    char op; /* r w z d f o (flush_to_os) t */
    int64_t offset;
    int64_t bytes;
    unsigned flags;
    const void *iov1; /* base of the second iovec piece of the range, if any */
} Call;

typedef struct TestRam {
    TestCfg cfg;
    uint8_t *data;
    uint8_t *alloc; /* testcow: one byte per 512-byte block */
    int64_t size;
    Call calls[MAX_CALLS];
    int ncalls;
    int violations; /* requests that broke the driver contract */
    bool yield;     /* each request yields to the loop once before its work */
    bool park;      /* requests wait until released */
    char fail_op;   /* requests of this op ('r', 'w', 'f') fail with -EIO */
    Coroutine *parked[MAX_PARKED];
    int nparked;
} TestRam;

static TestCfg next_cfg;
static AioContext *ctx;

/* ---------------------------------------------------------------------- */
/* Test drivers */

static int tr_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    TestRam *s = bs->opaque;

    s->cfg = next_cfg;
    s->size = s->cfg.size ? s->cfg.size : 1024 * 1024;
    s->data = calloc(1, (size_t)s->size);
    s->alloc = calloc(1, (size_t)(s->size / 512 + 1));
    bs->supported_write_flags = s->cfg.write_flags;
    bs->supported_zero_flags = s->cfg.zero_flags;
    bopts_del(options, "filename");
    return s->data && s->alloc ? 0 : -ENOMEM;
}

/* Flushes to disk and calls after the last flush of the last node closed. */
static int closed_flushes, closed_after_flush;

static void tr_close(BlockDriverState *bs)
{
    TestRam *s = bs->opaque;

    closed_flushes = 0;
    closed_after_flush = 0;
    for (int i = 0; i < s->ncalls; i++) {
        closed_flushes += s->calls[i].op == 'f';
        closed_after_flush = s->calls[i].op == 'f' ? 0 : closed_after_flush + 1;
    }
    free(s->data);
    free(s->alloc);
}

static void tr_refresh_limits(BlockDriverState *bs, Error **errp)
{
    TestRam *s = bs->opaque;

    bs->bl.request_alignment = s->cfg.align ? s->cfg.align : 1;
    bs->bl.min_mem_alignment = s->cfg.min_mem_align ? s->cfg.min_mem_align : 1;
    bs->bl.max_transfer = s->cfg.max_transfer;
    bs->bl.max_iov = s->cfg.max_iov;
    bs->bl.pwrite_zeroes_alignment = s->cfg.pwz_align;
    bs->bl.max_pwrite_zeroes = s->cfg.max_pwz;
    bs->bl.pdiscard_alignment = s->cfg.discard_align;
    bs->bl.max_pdiscard = s->cfg.max_discard;
}

static void coroutine_fn tr_wait(TestRam *s)
{
    if (s->yield) {
        aio_co_schedule(ctx, coroutine_self());
        coroutine_yield();
    }
    if (s->park && s->nparked < MAX_PARKED) {
        s->parked[s->nparked++] = coroutine_self();
        coroutine_yield();
    }
}

static void tr_log(TestRam *s, char op, int64_t offset, int64_t bytes, unsigned flags)
{
    if (s->ncalls < MAX_CALLS) {
        s->calls[s->ncalls++] = (Call){ op, offset, bytes, flags, NULL };
    }
}

static void tr_log_iov(TestRam *s, IOVector *qiov, size_t qiov_offset)
{
    size_t skip = qiov_offset;

    for (int i = 0; i < qiov->niov; i++) {
        if (skip < qiov->iov[i].iov_len) {
            if (i + 1 < qiov->niov) {
                s->calls[s->ncalls - 1].iov1 = qiov->iov[i + 1].iov_base;
            }
            return;
        }
        skip -= qiov->iov[i].iov_len;
    }
}

/* Counts contract violations: alignment, max_transfer, max_iov, memory alignment. */
static void tr_check(BlockDriverState *bs, int64_t offset, int64_t bytes, IOVector *qiov,
                     size_t qiov_offset)
{
    TestRam *s = bs->opaque;
    uint32_t a = bs->bl.request_alignment;
    int64_t left = bytes;
    size_t skip = qiov_offset;
    int used = 0;

    if (offset % a || bytes % a || offset + bytes > s->size) {
        s->violations++;
    }
    if (bs->bl.max_transfer && bytes > bs->bl.max_transfer) {
        s->violations++;
    }
    for (int i = 0; qiov && i < qiov->niov && left > 0; i++) {
        size_t len = qiov->iov[i].iov_len;
        uintptr_t base = (uintptr_t)qiov->iov[i].iov_base;

        if (skip >= len) {
            skip -= len;
            continue;
        }
        len -= skip;
        base += skip;
        skip = 0;
        len = (int64_t)len > left ? (size_t)left : len;
        if (s->cfg.min_mem_align > 1 &&
            (base % s->cfg.min_mem_align || len % s->cfg.min_mem_align)) {
            s->violations++;
        }
        left -= (int64_t)len;
        used++;
    }
    if (s->cfg.max_iov && used > s->cfg.max_iov) {
        s->violations++;
    }
}

static int coroutine_fn tr_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    TestRam *s = bs->opaque;

    tr_check(bs, offset, bytes, qiov, qiov_offset);
    tr_log(s, 'r', offset, bytes, flags);
    tr_wait(s);
    if (s->fail_op == 'r') {
        return -EIO;
    }
    iovector_from_buf(qiov, qiov_offset, s->data + offset, (size_t)bytes);
    return 0;
}

static int coroutine_fn tr_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    TestRam *s = bs->opaque;

    tr_check(bs, offset, bytes, qiov, qiov_offset);
    if (flags & ~s->cfg.write_flags) {
        s->violations++;
    }
    tr_log(s, 'w', offset, bytes, flags);
    tr_log_iov(s, qiov, qiov_offset);
    tr_wait(s);
    iovector_to_buf(qiov, qiov_offset, s->data + offset, (size_t)bytes);
    memset(s->alloc + offset / 512, 1, (size_t)((bytes + 511) / 512));
    return 0;
}

static int coroutine_fn tr_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         BdrvRequestFlags flags)
{
    TestRam *s = bs->opaque;

    tr_check(bs, offset, bytes, NULL, 0);
    if (flags & ~s->cfg.zero_flags) {
        s->violations++;
    }
    if (s->cfg.max_pwz && bytes > s->cfg.max_pwz) {
        s->violations++;
    }
    if (s->cfg.pwz_align && (offset % s->cfg.pwz_align || bytes % s->cfg.pwz_align)) {
        s->violations++;
    }
    tr_log(s, 'z', offset, bytes, flags);
    if (s->cfg.zeroes_enotsup) {
        return -ENOTSUP;
    }
    tr_wait(s);
    memset(s->data + offset, 0, (size_t)bytes);
    return 0;
}

static int coroutine_fn tr_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    TestRam *s = bs->opaque;

    if (s->cfg.discard_align && (offset % s->cfg.discard_align || bytes % s->cfg.discard_align)) {
        s->violations++;
    }
    if (s->cfg.max_discard && bytes > s->cfg.max_discard) {
        s->violations++;
    }
    tr_log(s, 'd', offset, bytes, 0);
    memset(s->data + offset, 0, (size_t)bytes);
    return 0;
}

static int coroutine_fn tr_flush_to_os(BlockDriverState *bs)
{
    tr_log(bs->opaque, 'o', 0, 0, 0);
    return 0;
}

static int coroutine_fn tr_flush_to_disk(BlockDriverState *bs)
{
    TestRam *s = bs->opaque;

    tr_log(s, 'f', 0, 0, 0);
    tr_wait(s);
    return s->fail_op == 'f' ? -EIO : 0;
}

static int64_t coroutine_fn tr_getlength(BlockDriverState *bs)
{
    return ((TestRam *)bs->opaque)->size;
}

static int coroutine_fn tr_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                    PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    TestRam *s = bs->opaque;
    uint8_t *d = realloc(s->data, offset ? (size_t)offset : 1);

    if (!d) {
        return -ENOMEM;
    }
    if (offset > s->size) {
        memset(d + s->size, 0, (size_t)(offset - s->size));
    }
    s->data = d;
    s->size = offset;
    tr_log(s, 't', offset, 0, 0);
    return 0;
}

static const BlockDriver bdrv_testram = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "testram",
    .instance_size = sizeof(TestRam),
    .is_protocol = true,
    .bdrv_open = tr_open,
    .bdrv_close = tr_close,
    .refresh_limits = tr_refresh_limits,
    .co_preadv = tr_preadv,
    .co_pwritev = tr_pwritev,
    .co_pwrite_zeroes = tr_pwrite_zeroes,
    .co_pdiscard = tr_pdiscard,
    .co_flush_to_os = tr_flush_to_os,
    .co_flush_to_disk = tr_flush_to_disk,
    .co_truncate = tr_truncate,
    .co_getlength = tr_getlength,
};

static const BlockDriver bdrv_testram_nz = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "testram-nz",
    .instance_size = sizeof(TestRam),
    .is_protocol = true,
    .bdrv_open = tr_open,
    .bdrv_close = tr_close,
    .refresh_limits = tr_refresh_limits,
    .co_preadv = tr_preadv,
    .co_pwritev = tr_pwritev,
    .co_flush_to_disk = tr_flush_to_disk,
    .co_getlength = tr_getlength,
};

/* testcow: allocation per 512-byte block; unallocated blocks come from the backing node. */
static int coroutine_fn cow_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    TestRam *s = bs->opaque;

    tr_log(s, 'r', offset, bytes, flags);
    for (int64_t pos = offset; pos < offset + bytes; pos += 512) {
        size_t qo = qiov_offset + (size_t)(pos - offset);
        int ret;

        if (s->alloc[pos / 512]) {
            iovector_from_buf(qiov, qo, s->data + pos, 512);
            continue;
        }
        iovector_memset(qiov, qo, 0, 512);
        if (bs->backing && pos < bdrv_co_getlength(bs->backing->bs)) {
            ret = bdrv_co_preadv_part(bs->backing, pos, 512, qiov, qo, 0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

static int coroutine_fn cow_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                         int64_t bytes, int64_t *pnum, int64_t *map,
                                         BlockDriverState **file)
{
    TestRam *s = bs->opaque;
    uint8_t a = s->alloc[offset / 512];
    int64_t n = 0;

    while (n < bytes && s->alloc[(offset + n) / 512] == a) {
        n += 512;
    }
    *pnum = n < bytes ? n : bytes;
    *map = offset;
    *file = bs;
    return a ? BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID : 0;
}

static void cow_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = 512;
}

static const BlockDriver bdrv_testcow = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "testcow",
    .instance_size = sizeof(TestRam),
    .is_format = true,
    .supports_backing = true,
    .is_protocol = true, /* opens without a file child */
    .bdrv_open = tr_open,
    .bdrv_close = tr_close,
    .refresh_limits = cow_refresh_limits,
    .co_preadv = cow_preadv,
    .co_pwritev = tr_pwritev,
    .co_block_status = cow_block_status,
    .co_getlength = tr_getlength,
};

/* ---------------------------------------------------------------------- */
/* Plumbing: nodes, requests run in coroutines, polling */

typedef struct Node {
    BlockDriverState *bs;
    BdrvChild child; /* a private link for issuing requests; not in bs->parents */
    TestRam *s;
} Node;

static void node_open(Node *n, const char *drv, const TestCfg *cfg, int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    bopts_set(o, "driver", drv);
    next_cfg = *cfg;
    n->bs = bdrv_open(NULL, o, flags | BDRV_O_NO_BACKING, &err);
    if (!n->bs) {
        fprintf(stderr, "open %s: %s\n", drv, error_get_pretty(err));
        error_free(err);
    }
    assert_non_null(n->bs);
    n->s = n->bs->opaque;
    memset(&n->child, 0, sizeof(n->child));
    n->child.bs = n->bs;
    n->child.name = (char *)"test";
}

static void node_close(Node *n)
{
    bdrv_unref(n->bs);
    n->bs = NULL;
}

enum { OP_READ, OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_TRUNC, OP_STATUS, OP_READ_QIOV,
       OP_WRITE_QIOV };

typedef struct Req {
    int op;
    BdrvChild *c;
    int64_t offset;
    int64_t bytes;
    void *buf;
    IOVector *qiov;
    size_t qiov_offset;
    int flags;
    BlockDriverState *base;
    int64_t pnum;
    int depth;
    int ret;
    bool done;
    int order;      /* completion order (writes) */
    uint8_t *shadow; /* applied at completion when non-NULL */
} Req;

static int completions;

static void coroutine_fn req_entry(void *opaque)
{
    Req *r = opaque;
    IOVector v;

    if (r->buf) {
        iovector_init_buf(&v, r->buf, (size_t)r->bytes);
    }
    switch (r->op) {
    case OP_READ:
        r->ret = bdrv_co_preadv(r->c, r->offset, r->bytes, &v, r->flags);
        break;
    case OP_WRITE:
        r->ret = bdrv_co_pwritev(r->c, r->offset, r->bytes, &v, r->flags);
        break;
    case OP_READ_QIOV:
        r->ret = bdrv_co_preadv_part(r->c, r->offset, r->bytes, r->qiov, r->qiov_offset,
                                     r->flags);
        break;
    case OP_WRITE_QIOV:
        r->ret = bdrv_co_pwritev_part(r->c, r->offset, r->bytes, r->qiov, r->qiov_offset,
                                      r->flags);
        break;
    case OP_ZERO:
        r->ret = bdrv_co_pwrite_zeroes(r->c, r->offset, r->bytes, r->flags);
        break;
    case OP_DISCARD:
        r->ret = bdrv_co_pdiscard(r->c, r->offset, r->bytes);
        break;
    case OP_FLUSH:
        r->ret = bdrv_co_flush(r->c->bs);
        break;
    case OP_TRUNC:
        r->ret = bdrv_co_truncate(r->c, r->offset, true, PREALLOC_MODE_OFF, 0, NULL);
        break;
    case OP_STATUS:
        r->ret = bdrv_co_block_status_above(r->c->bs, r->base, r->offset, r->bytes, &r->pnum,
                                            NULL, NULL, &r->depth);
        break;
    }
    if (r->shadow && r->ret == 0) {
        memcpy(r->shadow + r->offset, r->buf, (size_t)r->bytes);
    }
    r->order = completions++;
    r->done = true;
}

static void req_start(Req *r)
{
    r->done = false;
    aio_co_enter(ctx, coroutine_create(req_entry, r));
}

static void req_wait(Req *r)
{
    while (!r->done) {
        aio_poll(ctx, true);
    }
}

static int run(Req r)
{
    req_start(&r);
    req_wait(&r);
    return r.ret;
}

static int do_io(int op, Node *n, int64_t offset, int64_t bytes, void *buf, int flags)
{
    return run((Req){ .op = op, .c = &n->child, .offset = offset, .bytes = bytes, .buf = buf,
                      .flags = flags });
}

static void release_parked(TestRam *s)
{
    int n = s->nparked;

    s->nparked = 0;
    for (int i = 0; i < n; i++) {
        aio_co_wake(s->parked[i]);
    }
}

static void fill_pattern(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        p[i] = (uint8_t)((i * 131 + seed * 7 + (i >> 8)) ^ seed);
    }
}

static int count_calls(TestRam *s, char op)
{
    int n = 0;

    for (int i = 0; i < s->ncalls; i++) {
        n += s->calls[i].op == op;
    }
    return n;
}

static int setup(void **state)
{
    static bool registered;
    Error *err = NULL;

    ctx = aio_context_new(&err);
    assert_non_null(ctx);
    aio_context_set_current(ctx);
    if (!registered) {
        assert_int_equal(bdrv_register(&bdrv_testram, &err), 0);
        assert_int_equal(bdrv_register(&bdrv_testram_nz, &err), 0);
        assert_int_equal(bdrv_register(&bdrv_testcow, &err), 0);
        registered = true;
    }
    return 0;
}

static int teardown(void **state)
{
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Alignment: unaligned reads and writes, byte-exact */

static void check_unaligned_rw(uint32_t align, uint32_t min_mem_align)
{
    TestCfg cfg = { .size = 64 * 1024, .align = align, .min_mem_align = min_mem_align };
    static const int64_t heads[] = { 0, 1, 511, 512, 513, 4095, 4096, 4097 };
    static const int64_t lens[] = { 1, 7, 511, 512, 513, 4096, 5000, 12289 };
    uint8_t *shadow = malloc((size_t)cfg.size);
    uint8_t *buf = malloc(20000);
    uint8_t *out = malloc(20000);
    unsigned seed = 1;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    fill_pattern(shadow, (size_t)cfg.size, 99);
    assert_int_equal(do_io(OP_WRITE, &n, 0, cfg.size, shadow, 0), 0);
    for (size_t h = 0; h < sizeof(heads) / sizeof(heads[0]); h++) {
        for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++) {
            int64_t off = heads[h] + 8192;
            int64_t len = lens[l];

            fill_pattern(buf, (size_t)len, ++seed);
            assert_int_equal(do_io(OP_WRITE, &n, off, len, buf, 0), 0);
            memcpy(shadow + off, buf, (size_t)len);
            assert_memory_equal(n.s->data, shadow, (size_t)cfg.size);
            memset(out, 0xcc, (size_t)len + 2);
            assert_int_equal(do_io(OP_READ, &n, off - 1, len + 2, out, 0), 0);
            assert_memory_equal(out, shadow + off - 1, (size_t)len + 2);
        }
    }
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(shadow);
    free(buf);
    free(out);
}

static void test_block_io_unaligned_rw_512(void **state)
{
    check_unaligned_rw(512, 1);
}

static void test_block_io_unaligned_rw_4096(void **state)
{
    check_unaligned_rw(4096, 1);
}

static void test_block_io_unaligned_rw_mem_align(void **state)
{
    check_unaligned_rw(512, 512);
}

static void test_block_io_rmw_touches_only_head_and_tail(void **state)
{
    TestCfg cfg = { .align = 4096 };
    uint8_t *buf = malloc(5 * 4096);
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    fill_pattern(buf, 5 * 4096, 3);
    n.s->ncalls = 0;
    /* [4096 + 100, 4 * 4096 + 200): head block 4096, tail block 16384, middle direct. */
    assert_int_equal(do_io(OP_WRITE, &n, 4096 + 100, 3 * 4096 + 100, buf, 0), 0);
    assert_int_equal(count_calls(n.s, 'r'), 2);
    assert_int_equal(n.s->calls[0].op, 'r');
    assert_int_equal(n.s->calls[0].offset, 4096);
    assert_int_equal(n.s->calls[0].bytes, 4096);
    assert_int_equal(n.s->calls[1].offset, 4 * 4096);
    assert_int_equal(n.s->calls[1].bytes, 4096);
    assert_int_equal(n.s->calls[2].op, 'w');
    assert_int_equal(n.s->calls[2].offset, 4096);
    assert_int_equal(n.s->calls[2].bytes, 4 * 4096);
    assert_memory_equal(n.s->data + 4096 + 100, buf, 3 * 4096 + 100);

    /* Head and tail in one block: one read. */
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_WRITE, &n, 8192 + 10, 20, buf, 0), 0);
    assert_int_equal(n.s->ncalls, 2);
    assert_int_equal(n.s->calls[0].op, 'r');
    assert_int_equal(n.s->calls[0].offset, 8192);
    assert_int_equal(n.s->calls[1].op, 'w');
    assert_int_equal(n.s->calls[1].bytes, 4096);

    /* Aligned: no read at all. */
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_WRITE, &n, 8192, 8192, buf, 0), 0);
    assert_int_equal(n.s->ncalls, 1);
    assert_int_equal(n.s->calls[0].op, 'w');
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(buf);
}

/* 512-byte writes on a 4K node needing 512-byte memory alignment: the middle is not copied. */
static void test_block_io_rmw_middle_by_reference(void **state)
{
    TestCfg cfg = { .align = 4096, .min_mem_align = 512 };
    uint8_t *buf = NULL;
    uint8_t *out = NULL;
    Node n;

    assert_int_equal(posix_memalign((void **)&buf, 4096, 4 * 4096), 0);
    assert_int_equal(posix_memalign((void **)&out, 4096, 4 * 4096), 0);
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    fill_pattern(buf, 4 * 4096, 11);
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_WRITE, &n, 4096 + 512, 3 * 4096, buf, 0), 0);
    assert_int_equal(count_calls(n.s, 'r'), 2);
    assert_int_equal(count_calls(n.s, 'w'), 1);
    assert_int_equal(n.s->calls[2].offset, 4096);
    assert_int_equal(n.s->calls[2].bytes, 4 * 4096);
    assert_ptr_equal(n.s->calls[2].iov1, buf + 4096 - 512);
    assert_memory_equal(n.s->data + 4096 + 512, buf, 3 * 4096);
    assert_int_equal(do_io(OP_READ, &n, 4096 + 512, 3 * 4096, out, 0), 0);
    assert_memory_equal(out, buf, 3 * 4096);
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(buf);
    free(out);
}

/* Many coroutines write overlapping unaligned ranges; the driver yields mid-request. */
static void test_block_io_concurrent_overlapping_writes(void **state)
{
    enum { NREQ = 48 };
    TestCfg cfg = { .size = 32 * 1024, .align = 512, .max_transfer = 2048 };
    uint8_t *shadow = calloc(1, (size_t)cfg.size);
    Req *reqs = calloc(NREQ, sizeof(Req));
    unsigned rnd = 12345;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    n.s->yield = true;
    for (int i = 0; i < NREQ; i++) {
        Req *r = &reqs[i];

        rnd = rnd * 1103515245 + 12345;
        r->offset = (rnd >> 8) % 6000 + 1000;
        r->bytes = (rnd >> 4) % 3000 + 1;
        if (r->offset % 512 == 0 && r->bytes % 512 == 0) {
            r->bytes++;
        }
        r->buf = malloc((size_t)r->bytes);
        memset(r->buf, i + 1, (size_t)r->bytes);
        r->op = OP_WRITE;
        r->c = &n.child;
        r->shadow = shadow;
        req_start(r);
    }
    for (int i = 0; i < NREQ; i++) {
        req_wait(&reqs[i]);
        assert_int_equal(reqs[i].ret, 0);
    }
    /* Each shadow update ran when its request completed, before the next conflicting one began. */
    assert_memory_equal(n.s->data, shadow, (size_t)cfg.size);
    assert_int_equal(n.s->violations, 0);
    assert_int_equal(bdrv_get_in_flight(n.bs), 0);
    for (int i = 0; i < NREQ; i++) {
        free(reqs[i].buf);
    }
    node_close(&n);
    free(reqs);
    free(shadow);
}

/* ---------------------------------------------------------------------- */
/* Splitting */

static void test_block_io_max_transfer_split(void **state)
{
    TestCfg cfg = { .align = 512, .max_transfer = 4096 };
    size_t len = 10 * 4096 + 1000;
    uint8_t *buf = malloc(len);
    uint8_t *out = malloc(len);
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    fill_pattern(buf, len, 5);
    assert_int_equal(do_io(OP_WRITE, &n, 300, (int64_t)len, buf, 0), 0);
    assert_int_equal(do_io(OP_READ, &n, 300, (int64_t)len, out, 0), 0);
    assert_memory_equal(out, buf, len);
    for (int i = 0; i < n.s->ncalls; i++) {
        assert_true(n.s->calls[i].bytes <= 4096);
    }
    assert_true(count_calls(n.s, 'w') >= 11);
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(buf);
    free(out);
}

static void test_block_io_max_iov_split(void **state)
{
    TestCfg cfg = { .align = 512, .max_iov = 4 };
    enum { NPIECE = 32 };
    uint8_t *back = malloc(NPIECE * 512);
    uint8_t *out = malloc(NPIECE * 512);
    struct iovec iov[NPIECE];
    IOVector qiov;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    fill_pattern(back, NPIECE * 512, 8);
    for (int i = 0; i < NPIECE; i++) {
        iov[i].iov_base = back + i * 512;
        iov[i].iov_len = 512;
    }
    iovector_init_external(&qiov, iov, NPIECE);
    assert_int_equal(run((Req){ .op = OP_WRITE_QIOV, .c = &n.child, .offset = 0,
                                .bytes = NPIECE * 512, .qiov = &qiov }), 0);
    assert_memory_equal(n.s->data, back, NPIECE * 512);
    assert_int_equal(count_calls(n.s, 'w'), NPIECE / 4);
    memset(back, 0, NPIECE * 512);
    assert_int_equal(run((Req){ .op = OP_READ_QIOV, .c = &n.child, .offset = 0,
                                .bytes = NPIECE * 512, .qiov = &qiov }), 0);
    assert_memory_equal(n.s->data, back, NPIECE * 512);
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(back);
    free(out);
}

/* ---------------------------------------------------------------------- */
/* Write-zeroes, FUA, detect-zeroes, discard */

static void test_block_io_write_zeroes_driver_and_limits(void **state)
{
    TestCfg cfg = { .align = 512, .pwz_align = 4096, .max_pwz = 8192,
                    .zero_flags = BDRV_REQ_MAY_UNMAP };
    uint8_t *ones = malloc(65536);
    Node n;

    /* Without discard=unmap, MAY_UNMAP is dropped. */
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_ZERO, &n, 0, 4096, NULL, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(n.s->ncalls, 1);
    assert_int_equal(n.s->calls[0].flags, 0);
    node_close(&n);

    node_open(&n, "testram", &cfg, BDRV_O_RDWR | BDRV_O_UNMAP);
    memset(ones, 0xff, 65536);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 65536, ones, 0), 0);
    n.s->ncalls = 0;
    /* [1000, 30000): RMW head block 512, zero buffers to 4096, driver 4096..28672, tail. */
    assert_int_equal(do_io(OP_ZERO, &n, 1000, 29000, NULL, BDRV_REQ_MAY_UNMAP), 0);
    for (int64_t i = 0; i < 65536; i++) {
        uint8_t want = (i >= 1000 && i < 30000) ? 0 : 0xff;

        if (n.s->data[i] != want) {
            fail_msg("byte %lld is %u", (long long)i, n.s->data[i]);
        }
    }
    assert_true(count_calls(n.s, 'z') >= 3);
    for (int i = 0; i < n.s->ncalls; i++) {
        if (n.s->calls[i].op == 'z') {
            assert_int_equal(n.s->calls[i].flags, BDRV_REQ_MAY_UNMAP);
        }
    }
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(ones);
}

static void test_block_io_write_zeroes_fallback(void **state)
{
    TestCfg cfg = { .align = 512, .max_transfer = 4096 };
    uint8_t *ones = malloc(65536);
    Node n;

    /* No co_pwrite_zeroes: zero buffers, split at max_transfer. */
    node_open(&n, "testram-nz", &cfg, BDRV_O_RDWR);
    memset(ones, 0xff, 65536);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 65536, ones, 0), 0);
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_ZERO, &n, 512, 20480, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'w'), 5);
    assert_true(iovector_is_zero(&(IOVector){ .iov = &(struct iovec){ n.s->data + 512, 20480 },
                                              .niov = 1, .size = 20480 }, 0, 20480));
    assert_int_equal(n.s->data[511], 0xff);
    assert_int_equal(n.s->data[512 + 20480], 0xff);
    /* NO_FALLBACK without a driver callback: -ENOTSUP, nothing written. */
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_ZERO, &n, 0, 4096, NULL, BDRV_REQ_NO_FALLBACK), -ENOTSUP);
    assert_int_equal(n.s->ncalls, 0);
    assert_int_equal(n.s->data[0], 0xff);
    node_close(&n);

    /* A driver that answers -ENOTSUP: fallback, unless NO_FALLBACK. */
    cfg.zeroes_enotsup = true;
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 65536, ones, 0), 0);
    assert_int_equal(do_io(OP_ZERO, &n, 4096, 4096, NULL, BDRV_REQ_NO_FALLBACK), -ENOTSUP);
    assert_int_equal(n.s->data[4096], 0xff);
    assert_int_equal(do_io(OP_ZERO, &n, 4096, 4096, NULL, 0), 0);
    assert_int_equal(n.s->data[4096], 0);
    assert_int_equal(n.s->data[8191], 0);
    assert_int_equal(n.s->data[8192], 0xff);
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(ones);
}

static void test_block_io_fua_emulated_by_flush(void **state)
{
    TestCfg cfg = { .align = 1 };
    uint8_t buf[100] = { 1 };
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 100, buf, BDRV_REQ_FUA), 0);
    assert_int_equal(n.s->ncalls, 3);
    assert_int_equal(n.s->calls[0].op, 'w');
    assert_int_equal(n.s->calls[0].flags, 0);
    assert_int_equal(n.s->calls[1].op, 'o');
    assert_int_equal(n.s->calls[2].op, 'f');
    node_close(&n);

    /* A driver with FUA gets the flag and no flush. */
    cfg.write_flags = BDRV_REQ_FUA;
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 100, buf, BDRV_REQ_FUA), 0);
    assert_int_equal(n.s->ncalls, 1);
    assert_int_equal(n.s->calls[0].flags, BDRV_REQ_FUA);
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
}

static void test_block_io_detect_zeroes(void **state)
{
    TestCfg cfg = { .align = 512, .zero_flags = BDRV_REQ_MAY_UNMAP };
    uint8_t *zero = calloc(1, 8192);
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR | BDRV_O_UNMAP);
    n.bs->detect_zeroes = BDRV_DETECT_ZEROES_OFF;
    assert_int_equal(do_io(OP_WRITE, &n, 0, 8192, zero, 0), 0);
    assert_int_equal(count_calls(n.s, 'w'), 1);
    assert_int_equal(count_calls(n.s, 'z'), 0);

    n.s->ncalls = 0;
    n.bs->detect_zeroes = BDRV_DETECT_ZEROES_ON;
    assert_int_equal(do_io(OP_WRITE, &n, 0, 8192, zero, 0), 0);
    assert_int_equal(count_calls(n.s, 'w'), 0);
    assert_int_equal(count_calls(n.s, 'z'), 1);
    assert_int_equal(n.s->calls[0].flags, 0);

    n.s->ncalls = 0;
    n.bs->detect_zeroes = BDRV_DETECT_ZEROES_UNMAP;
    assert_int_equal(do_io(OP_WRITE, &n, 0, 8192, zero, 0), 0);
    assert_int_equal(count_calls(n.s, 'z'), 1);
    assert_int_equal(n.s->calls[0].flags, BDRV_REQ_MAY_UNMAP);

    /* Non-zero data is written as data. */
    n.s->ncalls = 0;
    zero[4000] = 1;
    assert_int_equal(do_io(OP_WRITE, &n, 0, 8192, zero, 0), 0);
    assert_int_equal(count_calls(n.s, 'w'), 1);
    assert_int_equal(n.s->data[4000], 1);
    node_close(&n);
    free(zero);
}

static void test_block_io_discard(void **state)
{
    TestCfg cfg = { .align = 512, .discard_align = 4096, .max_discard = 8192 };
    uint8_t *ones = malloc(65536);
    Node n;

    memset(ones, 0xff, 65536);
    /* Without discard=unmap: success, nothing done. */
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 65536, ones, 0), 0);
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_DISCARD, &n, 0, 65536, NULL, 0), 0);
    assert_int_equal(n.s->ncalls, 0);
    node_close(&n);

    node_open(&n, "testram", &cfg, BDRV_O_RDWR | BDRV_O_UNMAP);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 65536, ones, 0), 0);
    n.s->ncalls = 0;
    /* [1000, 30000) -> aligned [4096, 28672) in pieces of at most 8192. */
    assert_int_equal(do_io(OP_DISCARD, &n, 1000, 29000, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'd'), 3);
    assert_int_equal(n.s->calls[0].offset, 4096);
    assert_int_equal(n.s->data[4095], 0xff);
    assert_int_equal(n.s->data[4096], 0);
    assert_int_equal(n.s->data[28671], 0);
    assert_int_equal(n.s->data[28672], 0xff);
    /* Smaller than the granularity: dropped. */
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_DISCARD, &n, 40000, 3000, NULL, 0), 0);
    assert_int_equal(n.s->ncalls, 0);
    assert_int_equal(n.s->violations, 0);
    node_close(&n);
    free(ones);
}

/* ---------------------------------------------------------------------- */
/* Flush */

static void test_block_io_flush_skipped_when_clean(void **state)
{
    TestCfg cfg = { 0 };
    uint8_t buf[10] = { 0 };
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'f'), 0);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 10, buf, 0), 0);
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'f'), 1);
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'f'), 1);
    node_close(&n);

    /* cache.no-flush: flush_to_os only. */
    node_open(&n, "testram", &cfg, BDRV_O_RDWR | BDRV_O_NO_FLUSH);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 10, buf, 0), 0);
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'o'), 1);
    assert_int_equal(count_calls(n.s, 'f'), 0);
    node_close(&n);
}

/* Close makes what was written durable (as QEMU's), unless flushes are no-ops. */
static void test_block_io_flush_on_close(void **state)
{
    TestCfg cfg = { 0 };
    uint8_t buf[10] = { 0 };
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 10, buf, 0), 0);
    node_close(&n);
    assert_int_equal(closed_flushes, 1);
    assert_int_equal(closed_after_flush, 0);

    /* Nothing written since the last flush: no second one. */
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 10, buf, 0), 0);
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    node_close(&n);
    assert_int_equal(closed_flushes, 1);

    /* A truncate counts as a write. */
    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_TRUNC, &n, 4096, 0, NULL, 0), 0);
    node_close(&n);
    assert_int_equal(closed_flushes, 1);
    assert_int_equal(closed_after_flush, 0);

    /* cache.no-flush (cache=unsafe): none. */
    node_open(&n, "testram", &cfg, BDRV_O_RDWR | BDRV_O_NO_FLUSH);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 10, buf, 0), 0);
    node_close(&n);
    assert_int_equal(closed_flushes, 0);
}

static void test_block_io_flush_coalesced(void **state)
{
    TestCfg cfg = { 0 };
    uint8_t buf[10] = { 0 };
    Req f[5];
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_WRITE, &n, 0, 10, buf, 0), 0);
    n.s->park = true;
    for (int i = 0; i < 5; i++) {
        f[i] = (Req){ .op = OP_FLUSH, .c = &n.child };
        req_start(&f[i]);
    }
    while (n.s->nparked == 0) {
        aio_poll(ctx, true);
    }
    n.s->park = false;
    release_parked(n.s);
    for (int i = 0; i < 5; i++) {
        req_wait(&f[i]);
        assert_int_equal(f[i].ret, 0);
    }
    assert_int_equal(count_calls(n.s, 'f'), 1);
    node_close(&n);
}

static void test_block_io_errors_propagate(void **state)
{
    TestCfg cfg = { .align = 512 };
    uint8_t buf[100];
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    memset(buf, 1, sizeof(buf));
    /* The read half of a read-modify-write fails: nothing is written. */
    n.s->fail_op = 'r';
    assert_int_equal(do_io(OP_WRITE, &n, 10, 100, buf, 0), -EIO);
    assert_int_equal(count_calls(n.s, 'w'), 0);
    assert_int_equal(n.s->data[10], 0);
    assert_int_equal(do_io(OP_READ, &n, 0, 100, buf, 0), -EIO);
    n.s->fail_op = 0;
    assert_int_equal(bdrv_get_in_flight(n.bs), 0);

    /* A failed flush does not count as clean: the next flush retries. */
    assert_int_equal(do_io(OP_WRITE, &n, 0, 100, buf, 0), 0);
    n.s->fail_op = 'f';
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), -EIO);
    n.s->fail_op = 0;
    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'f'), 1);
    node_close(&n);
}

/* ---------------------------------------------------------------------- */
/* Validation */

static void test_block_io_read_only_eperm(void **state)
{
    TestCfg cfg = { 0 };
    uint8_t buf[512] = { 1 };
    Node n;

    node_open(&n, "testram", &cfg, 0);
    assert_true(bdrv_is_read_only(n.bs));
    assert_int_equal(do_io(OP_WRITE, &n, 0, 512, buf, 0), -EPERM);
    assert_int_equal(do_io(OP_ZERO, &n, 0, 512, NULL, 0), -EPERM);
    assert_int_equal(do_io(OP_DISCARD, &n, 0, 512, NULL, 0), -EPERM);
    assert_int_equal(do_io(OP_TRUNC, &n, 4096, 0, NULL, 0), -EPERM);
    assert_int_equal(n.s->ncalls, 0);
    assert_int_equal(n.s->data[0], 0);
    assert_int_equal(do_io(OP_READ, &n, 0, 512, buf, 0), 0);
    node_close(&n);
}

static void test_block_io_invalid_ranges(void **state)
{
    TestCfg cfg = { 0 };
    uint8_t buf[512] = { 0 };
    IOVector small;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(do_io(OP_READ, &n, -1, 10, buf, 0), -EINVAL);
    assert_int_equal(do_io(OP_WRITE, &n, -512, 10, buf, 0), -EINVAL);
    assert_int_equal(do_io(OP_ZERO, &n, 0, -1, NULL, 0), -EINVAL);
    assert_int_equal(do_io(OP_ZERO, &n, INT64_MAX - 10, 100, NULL, 0), -EINVAL);
    assert_int_equal(do_io(OP_ZERO, &n, BDRV_MAX_LENGTH - 512, 1024, NULL, 0), -EINVAL);
    assert_int_equal(do_io(OP_DISCARD, &n, INT64_MAX, INT64_MAX, NULL, 0), -EINVAL);
    iovector_init_buf(&small, buf, 100);
    assert_int_equal(run((Req){ .op = OP_WRITE_QIOV, .c = &n.child, .offset = 0, .bytes = 101,
                                .qiov = &small }), -EINVAL);
    assert_int_equal(run((Req){ .op = OP_READ_QIOV, .c = &n.child, .offset = 0, .bytes = 50,
                                .qiov = &small, .qiov_offset = 51 }), -EINVAL);
    assert_int_equal(run((Req){ .op = OP_READ_QIOV, .c = &n.child, .offset = 0, .bytes = 50,
                                .qiov = &small, .qiov_offset = 50 }), 0);
    assert_int_equal(do_io(OP_TRUNC, &n, -1, 0, NULL, 0), -EINVAL);
    assert_int_equal(n.s->ncalls, 1);
    node_close(&n);
}

static void test_block_io_truncate_and_length(void **state)
{
    TestCfg cfg = { .size = 8192 };
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(bdrv_getlength(n.bs), 8192);
    assert_int_equal(do_io(OP_TRUNC, &n, 100000, 0, NULL, 0), 0);
    assert_int_equal(bdrv_getlength(n.bs), 100000);
    node_close(&n);
}

static void test_block_io_limits_validated(void **state)
{
    TestCfg cfg = { .align = 512, .max_transfer = 1000, .pwz_align = 1000, .max_pwz = 5000,
                    .discard_align = 100 };
    BlockOpts *o;
    Error *err = NULL;
    uint8_t buf[16] = { 0 };
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    assert_int_equal(n.bs->bl.request_alignment, 512);
    assert_int_equal(n.bs->bl.max_transfer, 512);
    assert_int_equal(n.bs->bl.pwrite_zeroes_alignment, 1024);
    assert_int_equal(n.bs->bl.max_pwrite_zeroes, 4096);
    assert_int_equal(n.bs->bl.pdiscard_alignment, 512);
    assert_true(n.bs->bl.max_iov > 0);
    assert_int_equal(n.bs->bl.opt_mem_alignment, 4096);
    /* A compressed write to a driver that cannot compress. */
    assert_int_equal(do_io(OP_WRITE, &n, 0, 16, buf, BDRV_REQ_WRITE_COMPRESSED), -ENOTSUP);
    node_close(&n);

    /* request_alignment must be a power of two. */
    cfg = (TestCfg){ .align = 3 };
    next_cfg = cfg;
    o = bopts_new();
    bopts_set(o, "driver", "testram");
    assert_null(bdrv_open(NULL, o, BDRV_O_RDWR | BDRV_O_NO_BACKING, &err));
    assert_non_null(err);
    assert_non_null(strstr(error_get_pretty(err), "request_alignment 3"));
    error_free(err);
}

/* ---------------------------------------------------------------------- */
/* Drain */

static void release_bh(void *opaque)
{
    TestRam *s = opaque;

    s->park = false;
    release_parked(s);
}

static void test_block_io_drain_waits_for_in_flight(void **state)
{
    TestCfg cfg = { .align = 512 };
    uint8_t buf[4096] = { 7 };
    Req r[3];
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    n.s->park = true;
    for (int i = 0; i < 3; i++) {
        r[i] = (Req){ .op = i == 1 ? OP_READ : OP_WRITE, .c = &n.child, .offset = i * 8192,
                      .bytes = 4096, .buf = buf };
        req_start(&r[i]);
    }
    assert_int_equal(n.s->nparked, 3);
    assert_int_equal(bdrv_get_in_flight(n.bs), 3);
    aio_bh_schedule_oneshot(ctx, release_bh, n.s);
    bdrv_drained_begin(n.bs);
    for (int i = 0; i < 3; i++) {
        assert_true(r[i].done);
        assert_int_equal(r[i].ret, 0);
    }
    assert_int_equal(bdrv_get_in_flight(n.bs), 0);
    assert_int_equal(n.bs->quiesce_counter, 1);
    bdrv_drained_begin(n.bs); /* nested */
    assert_int_equal(n.bs->quiesce_counter, 2);
    bdrv_drained_end(n.bs);
    bdrv_drained_end(n.bs);
    assert_int_equal(n.bs->quiesce_counter, 0);
    node_close(&n);
}

typedef struct CoDrain {
    Node *n;
    bool done;
    unsigned in_flight_after;
} CoDrain;

static void coroutine_fn co_drain_entry(void *opaque)
{
    CoDrain *d = opaque;

    bdrv_drained_begin(d->n->bs);
    d->in_flight_after = bdrv_get_in_flight(d->n->bs);
    bdrv_drained_end(d->n->bs);
    d->done = true;
}

static void test_block_io_drain_from_coroutine(void **state)
{
    TestCfg cfg = { 0 };
    uint8_t buf[512] = { 1 };
    CoDrain d;
    Req w;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    n.s->park = true;
    w = (Req){ .op = OP_WRITE, .c = &n.child, .offset = 0, .bytes = 512, .buf = buf };
    req_start(&w);
    d = (CoDrain){ .n = &n, .in_flight_after = 99 };
    aio_co_enter(ctx, coroutine_create(co_drain_entry, &d));
    assert_false(d.done);
    aio_bh_schedule_oneshot(ctx, release_bh, n.s);
    while (!d.done) {
        aio_poll(ctx, true);
    }
    assert_true(w.done);
    assert_int_equal(d.in_flight_after, 0);
    assert_int_equal(n.bs->quiesce_counter, 0);
    node_close(&n);
}

/* Reads wait for an overlapping serialising (RMW) write. */
static void test_block_io_read_waits_for_rmw(void **state)
{
    TestCfg cfg = { .align = 4096 };
    uint8_t wbuf[100];
    uint8_t rbuf[100];
    Req w;
    Req rd;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    memset(wbuf, 0x5a, sizeof(wbuf));
    n.s->park = true;
    w = (Req){ .op = OP_WRITE, .c = &n.child, .offset = 10, .bytes = 100, .buf = wbuf };
    req_start(&w);
    assert_int_equal(n.s->nparked, 1); /* parked in the head read */
    n.s->park = false;
    rd = (Req){ .op = OP_READ, .c = &n.child, .offset = 50, .bytes = 100, .buf = rbuf };
    req_start(&rd);
    assert_false(rd.done); /* waits for the write */
    release_parked(n.s);
    req_wait(&w);
    req_wait(&rd);
    assert_memory_equal(rbuf, wbuf, 60);
    node_close(&n);
}

/*
 * A plain read that began while no serialising request was in flight is not
 * listed on the node, only counted; a discard (serialising) that begins
 * later must still wait for it. A plain write that begins while the discard
 * waits is listed, and runs (no overlap with the discard).
 */
static void test_block_io_discard_waits_for_unlisted_read(void **state)
{
    TestCfg cfg = { .align = 512 };
    uint8_t buf[4096], back[4096], wbuf[4096];
    Req rd, d, w;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR | BDRV_O_UNMAP);
    memset(buf, 0x11, sizeof(buf));
    assert_int_equal(do_io(OP_WRITE, &n, 0, 4096, buf, 0), 0);
    n.s->park = true;
    rd = (Req){ .op = OP_READ, .c = &n.child, .offset = 0, .bytes = 4096, .buf = back };
    req_start(&rd);
    assert_int_equal(n.s->nparked, 1);
    assert_null(n.bs->tracked_requests); /* counted, not listed */
    assert_int_equal(n.bs->unlisted_in_flight, 1);
    n.s->park = false;
    n.s->ncalls = 0;
    d = (Req){ .op = OP_DISCARD, .c = &n.child, .offset = 0, .bytes = 4096 };
    req_start(&d);
    for (int i = 0; i < 10; i++) {
        aio_poll(ctx, false);
    }
    assert_false(d.done);
    assert_int_equal(count_calls(n.s, 'd'), 0);
    memset(wbuf, 0x22, sizeof(wbuf));
    w = (Req){ .op = OP_WRITE, .c = &n.child, .offset = 8192, .bytes = 4096, .buf = wbuf };
    req_start(&w);
    req_wait(&w);
    assert_int_equal(w.ret, 0);
    assert_false(d.done);
    release_parked(n.s);
    req_wait(&rd);
    req_wait(&d);
    assert_int_equal(rd.ret, 0);
    assert_int_equal(d.ret, 0);
    assert_memory_equal(back, buf, sizeof(back)); /* read before the discard */
    assert_int_equal(count_calls(n.s, 'd'), 1);
    memset(buf, 0, sizeof(buf));
    assert_memory_equal(n.s->data, buf, 4096);
    assert_memory_equal(n.s->data + 8192, wbuf, 4096);
    assert_null(n.bs->tracked_requests);
    assert_int_equal(n.bs->unlisted_in_flight, 0);
    assert_int_equal(n.bs->serialising_in_flight, 0);
    node_close(&n);
}

/*
 * A read-modify-write (serialising) waits for an unlisted aligned write of
 * the same block: the write lands first, the RMW reads it and patches it.
 * Without the wait the parked write would overwrite the RMW's bytes.
 */
static void test_block_io_rmw_waits_for_unlisted_write(void **state)
{
    TestCfg cfg = { .align = 4096 };
    uint8_t w1[4096], small[100], want[4096];
    Req a, b;
    Node n;

    node_open(&n, "testram", &cfg, BDRV_O_RDWR);
    memset(w1, 0xaa, sizeof(w1));
    memset(small, 0xbb, sizeof(small));
    n.s->park = true;
    a = (Req){ .op = OP_WRITE, .c = &n.child, .offset = 0, .bytes = 4096, .buf = w1 };
    req_start(&a);
    assert_int_equal(n.s->nparked, 1);
    assert_int_equal(n.bs->unlisted_in_flight, 1);
    n.s->park = false;
    n.s->ncalls = 0;
    b = (Req){ .op = OP_WRITE, .c = &n.child, .offset = 100, .bytes = 100, .buf = small };
    req_start(&b);
    for (int i = 0; i < 10; i++) {
        aio_poll(ctx, false);
    }
    assert_false(b.done);
    assert_int_equal(n.s->ncalls, 0); /* not even its head read */
    release_parked(n.s);
    req_wait(&a);
    req_wait(&b);
    assert_int_equal(a.ret, 0);
    assert_int_equal(b.ret, 0);
    memcpy(want, w1, sizeof(want));
    memcpy(want + 100, small, sizeof(small));
    assert_memory_equal(n.s->data, want, sizeof(want));
    assert_null(n.bs->tracked_requests);
    assert_int_equal(n.bs->unlisted_in_flight, 0);
    assert_int_equal(n.bs->serialising_in_flight, 0);
    node_close(&n);
}

/* ---------------------------------------------------------------------- */
/* Block status and copy-on-read over a two-layer chain */

static void chain_open(Node *top, Node *base)
{
    TestCfg cfg = { .size = 64 * 1024 };
    TestCfg small = { .size = 32 * 1024 };
    uint8_t *buf = malloc(64 * 1024);

    node_open(base, "testcow", &small, BDRV_O_RDWR);
    node_open(top, "testcow", &cfg, BDRV_O_RDWR);
    bdrv_attach_child(top->bs, base->bs, "backing", BDRV_CHILD_COW);
    assert_ptr_equal(bdrv_backing_bs(top->bs), base->bs);
    /* base: [0, 16K) data; top: [8K, 12K) data. */
    memset(buf, 0xbb, 16384);
    assert_int_equal(do_io(OP_WRITE, base, 0, 16384, buf, 0), 0);
    memset(buf, 0x77, 4096);
    assert_int_equal(do_io(OP_WRITE, top, 8192, 4096, buf, 0), 0);
    free(buf);
}

static void test_block_io_block_status_above_chain(void **state)
{
    Node top;
    Node base;
    Req r;

    chain_open(&top, &base);
    r = (Req){ .op = OP_STATUS, .c = &top.child, .offset = 0, .bytes = 65536 };
    req_start(&r);
    req_wait(&r);
    assert_true(r.ret & BDRV_BLOCK_ALLOCATED);
    assert_true(r.ret & BDRV_BLOCK_DATA);
    assert_int_equal(r.pnum, 8192);
    assert_int_equal(r.depth, 2);

    r = (Req){ .op = OP_STATUS, .c = &top.child, .offset = 8192, .bytes = 65536 - 8192 };
    req_start(&r);
    req_wait(&r);
    assert_true(r.ret & BDRV_BLOCK_ALLOCATED);
    assert_int_equal(r.pnum, 4096);
    assert_int_equal(r.depth, 1);

    r = (Req){ .op = OP_STATUS, .c = &top.child, .offset = 12288, .bytes = 65536 - 12288 };
    req_start(&r);
    req_wait(&r);
    assert_int_equal(r.pnum, 4096);
    assert_int_equal(r.depth, 2);

    /* Unallocated in both within base's length: base (a format without backing) says zero. */
    r = (Req){ .op = OP_STATUS, .c = &top.child, .offset = 16384, .bytes = 65536 - 16384 };
    req_start(&r);
    req_wait(&r);
    assert_true(r.ret & BDRV_BLOCK_ZERO);
    assert_false(r.ret & BDRV_BLOCK_ALLOCATED);
    assert_int_equal(r.depth, 0);

    /* Beyond the end of the shorter backing node: zero, unallocated everywhere. */
    r = (Req){ .op = OP_STATUS, .c = &top.child, .offset = 40000, .bytes = 1000 };
    req_start(&r);
    req_wait(&r);
    assert_true(r.ret & BDRV_BLOCK_ZERO);
    assert_int_equal(r.pnum, 1000);
    assert_int_equal(r.depth, 0);

    /* base as the limit: only top is asked. */
    r = (Req){ .op = OP_STATUS, .c = &top.child, .base = base.bs, .offset = 0, .bytes = 65536 };
    req_start(&r);
    req_wait(&r);
    assert_false(r.ret & BDRV_BLOCK_ALLOCATED);
    assert_int_equal(r.pnum, 8192);
    assert_int_equal(r.depth, 0);

    /* The end of the node. */
    r = (Req){ .op = OP_STATUS, .c = &top.child, .offset = 65536 - 512, .bytes = 512 };
    req_start(&r);
    req_wait(&r);
    assert_true(r.ret & BDRV_BLOCK_EOF);

    node_close(&top);
    node_close(&base);
}

static void test_block_io_copy_on_read(void **state)
{
    uint8_t buf[20000];
    Node top;
    Node base;

    chain_open(&top, &base);
    top.s->ncalls = 0;
    assert_int_equal(do_io(OP_READ, &top, 100, 16000, buf, BDRV_REQ_COPY_ON_READ), 0);
    for (int i = 0; i < 16000; i++) {
        int64_t off = 100 + i;
        uint8_t want = (off >= 8192 && off < 12288) ? 0x77 : 0xbb;

        if (buf[i] != want) {
            fail_msg("byte %lld is %#x", (long long)off, buf[i]);
        }
    }
    /* Now allocated in top: [0, 8K) and [12K, 16K) (the aligned cover) were copied. */
    assert_int_equal(top.s->alloc[0], 1);
    assert_int_equal(top.s->alloc[15], 1);
    assert_int_equal(top.s->alloc[31], 1);
    assert_int_equal(top.s->alloc[32], 0);
    assert_int_equal(top.s->data[0], 0xbb);
    assert_int_equal(top.s->data[16000], 0xbb);
    assert_true(count_calls(top.s, 'w') >= 2);
    /* Reading again copies nothing. */
    top.s->ncalls = 0;
    assert_int_equal(do_io(OP_READ, &top, 100, 16000, buf, BDRV_REQ_COPY_ON_READ), 0);
    assert_int_equal(count_calls(top.s, 'w'), 0);
    node_close(&top);
    node_close(&base);
}

/* The in-tree raw format over a test protocol node: RAW status, limits, flush recursion. */
static void test_block_io_raw_over_protocol(void **state)
{
    TestCfg cfg = { .align = 4096, .max_transfer = 8192 };
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockDriverState *proto;
    uint8_t buf[3000];
    Node n;
    Req r;

    bopts_set(o, "driver", "raw");
    bopts_set(o, "file.driver", "testram");
    next_cfg = cfg;
    n.bs = bdrv_open(NULL, o, BDRV_O_RDWR, &err);
    if (!n.bs) {
        fail_msg("open raw: %s", error_get_pretty(err));
    }
    memset(&n.child, 0, sizeof(n.child));
    n.child.bs = n.bs;
    proto = bdrv_file_bs(n.bs);
    assert_non_null(proto);
    n.s = proto->opaque;
    assert_int_equal(n.bs->bl.max_transfer, 8192);

    memset(buf, 0x42, sizeof(buf));
    assert_int_equal(do_io(OP_WRITE, &n, 5000, 3000, buf, 0), 0);
    assert_memory_equal(n.s->data + 5000, buf, 3000);
    assert_int_equal(n.s->violations, 0);

    r = (Req){ .op = OP_STATUS, .c = &n.child, .offset = 100, .bytes = 10000 };
    req_start(&r);
    req_wait(&r);
    assert_true(r.ret >= 0);
    assert_int_equal(r.ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_RAW),
                     BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED);
    assert_int_equal(r.pnum, 10000);

    n.s->ncalls = 0;
    assert_int_equal(do_io(OP_FLUSH, &n, 0, 0, NULL, 0), 0);
    assert_int_equal(count_calls(n.s, 'f'), 1);
    node_close(&n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_io_unaligned_rw_512),
        cmocka_unit_test(test_block_io_unaligned_rw_4096),
        cmocka_unit_test(test_block_io_unaligned_rw_mem_align),
        cmocka_unit_test(test_block_io_rmw_touches_only_head_and_tail),
        cmocka_unit_test(test_block_io_rmw_middle_by_reference),
        cmocka_unit_test(test_block_io_concurrent_overlapping_writes),
        cmocka_unit_test(test_block_io_max_transfer_split),
        cmocka_unit_test(test_block_io_max_iov_split),
        cmocka_unit_test(test_block_io_write_zeroes_driver_and_limits),
        cmocka_unit_test(test_block_io_write_zeroes_fallback),
        cmocka_unit_test(test_block_io_fua_emulated_by_flush),
        cmocka_unit_test(test_block_io_detect_zeroes),
        cmocka_unit_test(test_block_io_discard),
        cmocka_unit_test(test_block_io_flush_skipped_when_clean),
        cmocka_unit_test(test_block_io_flush_coalesced),
        cmocka_unit_test(test_block_io_flush_on_close),
        cmocka_unit_test(test_block_io_errors_propagate),
        cmocka_unit_test(test_block_io_read_only_eperm),
        cmocka_unit_test(test_block_io_invalid_ranges),
        cmocka_unit_test(test_block_io_truncate_and_length),
        cmocka_unit_test(test_block_io_limits_validated),
        cmocka_unit_test(test_block_io_drain_waits_for_in_flight),
        cmocka_unit_test(test_block_io_drain_from_coroutine),
        cmocka_unit_test(test_block_io_read_waits_for_rmw),
        cmocka_unit_test(test_block_io_discard_waits_for_unlisted_read),
        cmocka_unit_test(test_block_io_rmw_waits_for_unlisted_write),
        cmocka_unit_test(test_block_io_block_status_above_chain),
        cmocka_unit_test(test_block_io_copy_on_read),
        cmocka_unit_test(test_block_io_raw_over_protocol),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
