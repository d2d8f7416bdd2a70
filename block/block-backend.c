/*
 * BlockBackend: the handle users hold over a node graph, with coroutine,
 * callback (AIOCB) and plain-code request APIs.
 *
 * The async contract (as SPDK's): a blk_aio_* call that returns a handle
 * runs its callback exactly once, later, from a bottom half of the
 * BlockBackend's context. AIOCBs and their BHs come from a per-thread pool,
 * so a steady stream of requests allocates nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include "block/block-backend-int.h"

#define AIOCB_POOL_MAX 1024
/* Merged writes: at most this many iovec entries and this many bytes (when
 * the node sets no max_transfer). */
#define BLK_MERGE_MAX_IOV 64
#define BLK_MERGE_MAX_BYTES (1LL << 20)

/* Request kinds; the values double as BlockAcctType indices. */
typedef enum BlkAioOp {
    BLK_AIO_READ = BLOCK_ACCT_READ,
    BLK_AIO_WRITE = BLOCK_ACCT_WRITE,
    BLK_AIO_ZEROES = BLOCK_ACCT_ZEROES,
    BLK_AIO_DISCARD = BLOCK_ACCT_DISCARD,
    BLK_AIO_FLUSH = BLOCK_ACCT_FLUSH,
} BlkAioOp;

struct BlockAIOCB {
    BlockBackend *blk;
    BlockCompletionFunc *cb;
    void *opaque;
    BlkAioOp op;
    int64_t offset;
    int64_t bytes;
    IOVector *qiov;
    BdrvRequestFlags flags;
    int ret;
    bool queued;        /* waiting for a drain to end: cancellable */
    bool cancelled;
    bool cb_ran;
    int waiters;        /* blk_aio_cancel() callers holding it */
    AioBH *bh;          /* completion BH, kept with the pooled AIOCB */
    BlockAIOCB *pool_next;
    /* Write merging while plugged: the held list, and a merged group's
     * members behind their leader (which owns the merged vector). */
    BlockAIOCB *plug_next;
    BlockAIOCB *merged_next;
    IOVector merge_qiov;
    struct iovec merge_iov[BLK_MERGE_MAX_IOV];
};

static void blk_flush_plugged(BlockBackend *blk);

/* initial-exec like co_thread_tls: no __tls_get_addr() call per request when
 * the library is linked into a dlopen()ed module (fio's engine). */
static __thread BlockAIOCB *acb_pool __attribute__((tls_model("initial-exec")));
static __thread unsigned acb_pool_len __attribute__((tls_model("initial-exec")));

/* ---------------------------------------------------------------------- */
/* Creation and teardown */

static BlockBackend *blk_new(BlockDriverState *bs)
{
    BlockBackend *blk = calloc(1, sizeof(*blk));

    if (!blk) {
        return NULL;
    }
    blk->ctx = bdrv_get_aio_context(bs);
    co_queue_init(&blk->queued_requests);
    co_queue_init(&blk->stopped_requests);
    blk->enable_write_cache = true;
    /* Image creation writes protocol nodes (files) past their end to grow them. */
    blk->allow_write_beyond_eof = bs->drv && bs->drv->is_protocol && !bs->drv->is_format;
    blk->root = bdrv_root_attach_child(bs, "root", blk);
    /* Attached to an already drained subtree: start quiesced. */
    blk->quiesce_counter = bs->quiesce_counter;
    return blk;
}

BlockBackend *blk_new_open(const char *filename, BlockOpts *options, int flags, Error **errp)
{
    BlockDriverState *bs = bdrv_open(filename, options, flags, errp);
    BlockBackend *blk;

    if (!bs) {
        return NULL;
    }
    blk = blk_new(bs);
    bdrv_unref(bs);
    if (!blk) {
        error_setg(errp, "out of memory");
    }
    return blk;
}

BlockBackend *blk_new_with_bs(BlockDriverState *bs, Error **errp)
{
    BlockBackend *blk = blk_new(bs);

    if (!blk) {
        error_setg(errp, "out of memory");
    }
    return blk;
}

static bool blk_busy(void *opaque)
{
    BlockBackend *blk = opaque;

    return blk->in_flight > 0;
}

void blk_unref(BlockBackend *blk)
{
    if (!blk) {
        return;
    }
    /* Requests held by a STOP action get one last try and report. */
    blk_set_on_error(blk, BLOCK_ERROR_ACTION_REPORT, BLOCK_ERROR_ACTION_REPORT);
    blk_resume(blk);
    /* Requests held by a plug start now; requests parked behind a drain that
     * is still in force fail with -ECANCELED. */
    if (blk->plugged_head) {
        blk->plug_depth = 0;
        blk_flush_plugged(blk);
    }
    blk->closing = true;
    co_queue_restart_all(&blk->queued_requests);
    /* Let every request and pending completion finish first. */
    bdrv_poll_while(blk->root->bs, blk_busy, blk);
    bdrv_root_unref_child(blk->root);
    free(blk);
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    return blk->root->bs;
}

AioContext *blk_get_aio_context(BlockBackend *blk)
{
    return blk->ctx;
}

int64_t blk_getlength(BlockBackend *blk)
{
    return bdrv_getlength(blk->root->bs);
}

void blk_set_enable_write_cache(BlockBackend *blk, bool enable)
{
    blk->enable_write_cache = enable;
}

bool blk_enable_write_cache(BlockBackend *blk)
{
    return blk->enable_write_cache;
}

bool blk_is_read_only(BlockBackend *blk)
{
    return bdrv_is_read_only(blk->root->bs);
}

/* ---------------------------------------------------------------------- */
/* Drain hooks (called by block/io.c on root children) */

void blk_root_drained_begin(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    if (blk) {
        blk->quiesce_counter++;
    }
}

void blk_root_drained_end(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    if (blk && --blk->quiesce_counter == 0) {
        co_queue_restart_all(&blk->queued_requests);
    }
}

void blk_root_set_aio_context(BdrvChild *child, AioContext *ctx)
{
    BlockBackend *blk = child->opaque;

    if (blk) {
        blk->ctx = ctx;
    }
}

/*
 * Waits while the graph is drained. Returns false if the request must not
 * run: acb was cancelled meanwhile, or the BlockBackend is being freed under
 * a drain. An AIOCB's coroutine then runs in blk's (possibly new) context.
 */
static bool coroutine_fn blk_wait_while_drained(BlockBackend *blk, BlockAIOCB *acb)
{
    while (blk->quiesce_counter) {
        if ((acb && acb->cancelled) || blk->closing) {
            return false;
        }
        if (acb) {
            acb->queued = true;
        }
        co_queue_wait(&blk->queued_requests, NULL);
        if (acb) {
            acb->queued = false;
        }
    }
    /* The graph may have moved to another context while an AIOCB waited: its
     * coroutine is ours, so follow (a caller's coroutine stays where it is). */
    if (acb && coroutine_get_aio_context(coroutine_self()) != blk->ctx) {
        aio_co_schedule(blk->ctx, coroutine_self());
        coroutine_yield();
    }
    return !(acb && acb->cancelled) && !(blk->closing && blk->quiesce_counter);
}

/* ---------------------------------------------------------------------- */
/* Coroutine API */

static int coroutine_fn blk_co_do(BlockBackend *blk, BlkAioOp op, int64_t offset, int64_t bytes,
                                  IOVector *qiov, BdrvRequestFlags flags)
{
    BdrvChild *root = blk->root;

    if (!blk->enable_write_cache && (op == BLK_AIO_WRITE || op == BLK_AIO_ZEROES)) {
        flags |= BDRV_REQ_FUA; /* writethrough: durable before it completes */
    }
    switch (op) {
    case BLK_AIO_READ:
        return bdrv_co_preadv(root, offset, bytes, qiov, flags);
    case BLK_AIO_WRITE:
        return bdrv_co_pwritev(root, offset, bytes, qiov, flags);
    case BLK_AIO_ZEROES:
        return bdrv_co_pwrite_zeroes(root, offset, bytes, flags);
    case BLK_AIO_DISCARD:
        return bdrv_co_pdiscard(root, offset, bytes);
    case BLK_AIO_FLUSH:
        return bdrv_co_flush(root->bs);
    }
    return -EINVAL;
}

/*
 * As QEMU's blk_check_byte_request: a request must lie inside the node, else
 * -EIO (writes to a protocol root may extend it). The length is cached and
 * asked again only when a request seems to pass it, so requests inside the
 * node cost no length query; a node shrunk other than by blk_co_truncate()
 * of this backend is caught by its driver, as before.
 */
static int coroutine_fn blk_check_request(BlockBackend *blk, BlkAioOp op, int64_t offset,
                                          int64_t bytes)
{
    int64_t len;

    if (op == BLK_AIO_FLUSH) {
        return 0;
    }
    if (offset < 0 || bytes < 0) {
        return 0; /* the block layer's own checks answer -EINVAL */
    }
    if ((op == BLK_AIO_WRITE || op == BLK_AIO_ZEROES) && blk->allow_write_beyond_eof) {
        return 0;
    }
    if (offset <= blk->len_cache && bytes <= blk->len_cache - offset) {
        return 0;
    }
    len = bdrv_co_getlength(blk->root->bs);
    if (len < 0) {
        return (int)len;
    }
    blk->len_cache = len;
    return offset > len || bytes > len - offset ? -EIO : 0;
}

/* Runs one request with accounting and the error policy. */
static int coroutine_fn blk_co_do_policed(BlockBackend *blk, BlkAioOp op, int64_t offset,
                                          int64_t bytes, IOVector *qiov,
                                          BdrvRequestFlags flags)
{
    int64_t start = aio_clock_ns();
    int ret = blk_check_request(blk, op, offset, bytes);

    if (ret < 0) {
        return ret;
    }
    for (;;) {
        ret = blk_co_do(blk, op, offset, bytes, qiov, flags);
        blk_acct_done(blk, (BlockAcctType)op, offset, bytes, ret, aio_clock_ns() - start);
        if (ret >= 0) {
            return ret;
        }
        ret = blk_error_action(blk, op == BLK_AIO_READ, ret);
        if (ret != -EAGAIN) {
            return ret; /* reported (or ignored: 0) */
        }
        /* STOP: held until blk_resume(), then retried. */
        start = aio_clock_ns();
    }
}

static int coroutine_fn blk_co_request(BlockBackend *blk, BlkAioOp op, int64_t offset,
                                       int64_t bytes, IOVector *qiov, BdrvRequestFlags flags)
{
    int ret;

    blk->in_flight++;
    if (blk_wait_while_drained(blk, NULL)) {
        ret = blk_co_do_policed(blk, op, offset, bytes, qiov, flags);
    } else {
        ret = -ECANCELED;
    }
    blk->in_flight--;
    return ret;
}

int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset, int64_t bytes,
                               IOVector *qiov, BdrvRequestFlags flags)
{
    return blk_co_request(blk, BLK_AIO_READ, offset, bytes, qiov, flags);
}

int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes,
                                IOVector *qiov, BdrvRequestFlags flags)
{
    return blk_co_request(blk, BLK_AIO_WRITE, offset, bytes, qiov, flags);
}

int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags)
{
    return blk_co_request(blk, BLK_AIO_ZEROES, offset, bytes, NULL, flags);
}

int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    return blk_co_request(blk, BLK_AIO_DISCARD, offset, bytes, NULL, 0);
}

int coroutine_fn blk_co_flush(BlockBackend *blk)
{
    return blk_co_request(blk, BLK_AIO_FLUSH, 0, 0, NULL, 0);
}

int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    int ret;

    blk->in_flight++;
    blk_wait_while_drained(blk, NULL);
    ret = bdrv_co_truncate(blk->root, offset, exact, prealloc, flags, errp);
    blk->len_cache = 0; /* ask the new length at the next request past it */
    blk->in_flight--;
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Plain-code API */

typedef struct BlkSync {
    BlockBackend *blk;
    BlkAioOp op;
    int64_t offset;
    int64_t bytes;
    IOVector *qiov;
    BdrvRequestFlags flags;
    bool exact;
    PreallocMode prealloc;
    Error **errp;
} BlkSync;

static int64_t coroutine_fn blk_sync_entry(void *opaque)
{
    BlkSync *s = opaque;

    return blk_co_request(s->blk, s->op, s->offset, s->bytes, s->qiov, s->flags);
}

static int blk_sync(BlockBackend *blk, BlkAioOp op, int64_t offset, int64_t bytes, void *buf,
                    BdrvRequestFlags flags)
{
    IOVector qiov;
    BlkSync s = { blk, op, offset, bytes, NULL, flags, false, PREALLOC_MODE_OFF, NULL };

    if (buf) {
        if (bytes < 0) {
            return -EINVAL;
        }
        iovector_init_buf(&qiov, buf, (size_t)bytes);
        s.qiov = &qiov;
    }
    return (int)bdrv_run_co(blk->ctx, blk_sync_entry, &s);
}

int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
              BdrvRequestFlags flags)
{
    return blk_sync(blk, BLK_AIO_READ, offset, bytes, buf, flags);
}

int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
               BdrvRequestFlags flags)
{
    return blk_sync(blk, BLK_AIO_WRITE, offset, bytes, (void *)buf, flags);
}

int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes, BdrvRequestFlags flags)
{
    return blk_sync(blk, BLK_AIO_ZEROES, offset, bytes, NULL, flags);
}

int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes)
{
    return blk_sync(blk, BLK_AIO_DISCARD, offset, bytes, NULL, 0);
}

int blk_flush(BlockBackend *blk)
{
    return blk_sync(blk, BLK_AIO_FLUSH, 0, 0, NULL, 0);
}

static int64_t coroutine_fn blk_truncate_entry(void *opaque)
{
    BlkSync *s = opaque;

    return blk_co_truncate(s->blk, s->offset, s->exact, s->prealloc, s->flags, s->errp);
}

int blk_truncate(BlockBackend *blk, int64_t offset, bool exact, PreallocMode prealloc,
                 BdrvRequestFlags flags, Error **errp)
{
    BlkSync s = { blk, BLK_AIO_FLUSH, offset, 0, NULL, flags, exact, prealloc, errp };

    return (int)bdrv_run_co(blk->ctx, blk_truncate_entry, &s);
}

/* ---------------------------------------------------------------------- */
/* Callback API */

static void blk_aio_complete_bh(void *opaque);

static BlockAIOCB *acb_get(BlockBackend *blk)
{
    BlockAIOCB *acb = COBLK_POOLS ? acb_pool : NULL;

    if (acb) {
        acb_pool = acb->pool_next;
        acb_pool_len--;
    } else {
        acb = calloc(1, sizeof(*acb));
        if (!acb) {
            abort();
        }
    }
    if (acb->bh && acb->bh->ctx != blk->ctx) {
        aio_bh_delete(acb->bh);
        acb->bh = NULL;
    }
    if (!acb->bh) {
        acb->bh = aio_bh_new(blk->ctx, blk_aio_complete_bh, acb);
    }
    acb->blk = blk;
    acb->queued = false;
    acb->cancelled = false;
    acb->cb_ran = false;
    acb->waiters = 0;
    acb->ret = -EINPROGRESS;
    return acb;
}

static void acb_put(BlockAIOCB *acb)
{
    if (COBLK_POOLS && acb_pool_len < AIOCB_POOL_MAX) {
        acb->pool_next = acb_pool;
        acb_pool = acb;
        acb_pool_len++;
        return;
    }
    aio_bh_delete(acb->bh);
    free(acb);
}

static void blk_aio_complete_bh(void *opaque)
{
    BlockAIOCB *acb = opaque;
    BlockBackend *blk = acb->blk;

    acb->cb(acb->opaque, acb->ret);
    acb->cb_ran = true;
    blk->in_flight--;
    if (acb->waiters == 0) {
        acb_put(acb);
    }
}

static void coroutine_fn blk_aio_entry(void *opaque)
{
    BlockAIOCB *acb = opaque;
    BlockBackend *blk = acb->blk;

    /* A merged group runs whole: its members were not cancelled with the leader. */
    if (!blk_wait_while_drained(blk, acb->merged_next ? NULL : acb)) {
        acb->ret = -ECANCELED;
    } else {
        acb->ret = blk_co_do_policed(blk, acb->op, acb->offset, acb->bytes, acb->qiov,
                                     acb->flags);
    }
    /* A merged group shares the leader's result; callbacks run in blk's context. */
    for (BlockAIOCB *m = acb; m; m = m->merged_next) {
        m->ret = acb->ret;
        if (m->bh->ctx != blk->ctx) {
            aio_bh_delete(m->bh);
            m->bh = aio_bh_new(blk->ctx, blk_aio_complete_bh, m);
        }
        aio_bh_schedule(m->bh);
    }
}

static void blk_aio_start(BlockAIOCB *acb)
{
    aio_co_enter(acb->blk->ctx, coroutine_create(blk_aio_entry, acb));
}

/* Can write b join the group that ends with prev (led by lead)? */
static bool can_merge(BlockBackend *blk, BlockAIOCB *lead, BlockAIOCB *prev, BlockAIOCB *b,
                      int64_t max_bytes)
{
    return b->op == BLK_AIO_WRITE && prev->op == BLK_AIO_WRITE && b->flags == lead->flags &&
           !b->cancelled && prev->offset + prev->bytes == b->offset && b->bytes > 0 &&
           (size_t)b->bytes == b->qiov->size && (size_t)prev->bytes == prev->qiov->size &&
           lead->bytes + b->bytes <= max_bytes &&
           lead->merge_qiov.niov + b->qiov->niov <= BLK_MERGE_MAX_IOV;
}

/* Turns lead into the leader of a merged write: its vector covers the group. */
static void merge_begin(BlockAIOCB *lead)
{
    if (lead->qiov->niov > BLK_MERGE_MAX_IOV) {
        lead->merge_qiov.niov = BLK_MERGE_MAX_IOV + 1; /* never merges */
        return;
    }
    memcpy(lead->merge_iov, lead->qiov->iov, sizeof(struct iovec) * (size_t)lead->qiov->niov);
    iovector_init_external(&lead->merge_qiov, lead->merge_iov, lead->qiov->niov);
}

static void merge_add(BlockAIOCB *lead, BlockAIOCB *b)
{
    memcpy(lead->merge_iov + lead->merge_qiov.niov, b->qiov->iov,
           sizeof(struct iovec) * (size_t)b->qiov->niov);
    iovector_init_external(&lead->merge_qiov, lead->merge_iov,
                           lead->merge_qiov.niov + b->qiov->niov);
    lead->bytes += b->bytes;
}

/* Starts the requests held while plugged, merging adjacent writes. */
static void blk_flush_plugged(BlockBackend *blk)
{
    BlockAIOCB *list = blk->plugged_head;
    int64_t max_bytes = blk->root->bs->bl.max_transfer ? blk->root->bs->bl.max_transfer
                                                        : BLK_MERGE_MAX_BYTES;

    blk->plugged_head = blk->plugged_tail = NULL;
    while (list) {
        BlockAIOCB *lead = list;
        BlockAIOCB *prev = lead;

        list = lead->plug_next;
        if (lead->op == BLK_AIO_WRITE) {
            merge_begin(lead);
            while (list && lead->merge_qiov.niov <= BLK_MERGE_MAX_IOV &&
                   can_merge(blk, lead, prev, list, max_bytes)) {
                BlockAIOCB *b = list;

                list = b->plug_next;
                merge_add(lead, b);
                prev->merged_next = b;
                prev = b;
                blk->stats.merged_ops[BLOCK_ACCT_WRITE]++;
            }
            if (lead->merged_next) {
                lead->qiov = &lead->merge_qiov;
            }
        }
        blk_aio_start(lead);
    }
}

static BlockAIOCB *blk_aio_submit(BlockBackend *blk, BlkAioOp op, int64_t offset,
                                  int64_t bytes, IOVector *qiov, BdrvRequestFlags flags,
                                  BlockCompletionFunc *cb, void *opaque)
{
    BlockAIOCB *acb = acb_get(blk);

    acb->op = op;
    acb->offset = offset;
    acb->bytes = bytes;
    acb->qiov = qiov;
    acb->flags = flags;
    acb->cb = cb;
    acb->opaque = opaque;
    acb->plug_next = NULL;
    acb->merged_next = NULL;
    blk->in_flight++;
    if (blk->plug_depth) {
        /* Held until unplug, where adjacent writes merge. */
        if (blk->plugged_tail) {
            blk->plugged_tail->plug_next = acb;
        } else {
            blk->plugged_head = acb;
        }
        blk->plugged_tail = acb;
        return acb;
    }
    blk_aio_start(acb);
    return acb;
}

BlockAIOCB *blk_aio_preadv(BlockBackend *blk, int64_t offset, IOVector *qiov,
                           BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_submit(blk, BLK_AIO_READ, offset, (int64_t)qiov->size, qiov, flags, cb,
                          opaque);
}

BlockAIOCB *blk_aio_pwritev(BlockBackend *blk, int64_t offset, IOVector *qiov,
                            BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_submit(blk, BLK_AIO_WRITE, offset, (int64_t)qiov->size, qiov, flags, cb,
                          opaque);
}

BlockAIOCB *blk_aio_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                  BdrvRequestFlags flags, BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_submit(blk, BLK_AIO_ZEROES, offset, bytes, NULL, flags, cb, opaque);
}

BlockAIOCB *blk_aio_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes,
                             BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_submit(blk, BLK_AIO_DISCARD, offset, bytes, NULL, 0, cb, opaque);
}

BlockAIOCB *blk_aio_flush(BlockBackend *blk, BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_submit(blk, BLK_AIO_FLUSH, 0, 0, NULL, 0, cb, opaque);
}

BlockAIOCB *blk_aio_readv_sectors(BlockBackend *blk, int64_t sector_num, IOVector *qiov,
                                  int nb_sectors, BlockCompletionFunc *cb, void *opaque)
{
    int64_t bytes = (int64_t)nb_sectors << BDRV_SECTOR_BITS;

    if (sector_num < 0 || nb_sectors < 0 || sector_num > (INT64_MAX >> BDRV_SECTOR_BITS) ||
        (size_t)bytes > qiov->size) {
        return blk_aio_submit(blk, BLK_AIO_READ, -1, 0, qiov, 0, cb, opaque); /* -EINVAL */
    }
    return blk_aio_submit(blk, BLK_AIO_READ, sector_num << BDRV_SECTOR_BITS, bytes, qiov, 0,
                          cb, opaque);
}

BlockAIOCB *blk_aio_writev_sectors(BlockBackend *blk, int64_t sector_num, IOVector *qiov,
                                   int nb_sectors, BlockCompletionFunc *cb, void *opaque)
{
    int64_t bytes = (int64_t)nb_sectors << BDRV_SECTOR_BITS;

    if (sector_num < 0 || nb_sectors < 0 || sector_num > (INT64_MAX >> BDRV_SECTOR_BITS) ||
        (size_t)bytes > qiov->size) {
        return blk_aio_submit(blk, BLK_AIO_WRITE, -1, 0, qiov, 0, cb, opaque); /* -EINVAL */
    }
    return blk_aio_submit(blk, BLK_AIO_WRITE, sector_num << BDRV_SECTOR_BITS, bytes, qiov, 0,
                          cb, opaque);
}

/* ---------------------------------------------------------------------- */
/* The classic node-level API, through a BlockBackend the node owns */

static BlockBackend *classic_blk(BlockDriverState *bs)
{
    if (!bs->classic_blk) {
        bs->classic_blk = blk_new(bs);
        if (!bs->classic_blk) {
            abort();
        }
        bs->refcnt--; /* the node owns it, not the other way round */
    }
    return bs->classic_blk;
}

void blk_free_classic(BlockDriverState *bs)
{
    BlockBackend *blk = bs->classic_blk;

    if (!blk) {
        return;
    }
    bdrv_poll_while(bs, blk_busy, blk);
    bs->classic_blk = NULL;
    bdrv_root_detach_child(blk->root);
    free(blk);
}

BlockAIOCB *bdrv_aio_readv(BlockDriverState *bs, int64_t sector_num, IOVector *qiov,
                           int nb_sectors, BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_readv_sectors(classic_blk(bs), sector_num, qiov, nb_sectors, cb, opaque);
}

BlockAIOCB *bdrv_aio_writev(BlockDriverState *bs, int64_t sector_num, IOVector *qiov,
                            int nb_sectors, BlockCompletionFunc *cb, void *opaque)
{
    return blk_aio_writev_sectors(classic_blk(bs), sector_num, qiov, nb_sectors, cb, opaque);
}

/* Takes acb out of the plugged list; true if it was there. */
static bool unplug_one(BlockBackend *blk, BlockAIOCB *acb)
{
    BlockAIOCB **pp = &blk->plugged_head;
    BlockAIOCB *prev = NULL;

    while (*pp && *pp != acb) {
        prev = *pp;
        pp = &(*pp)->plug_next;
    }
    if (!*pp) {
        return false;
    }
    *pp = acb->plug_next;
    if (blk->plugged_tail == acb) {
        blk->plugged_tail = prev;
    }
    acb->plug_next = NULL;
    return true;
}

void blk_aio_cancel_async(BlockAIOCB *acb)
{
    if (acb->cb_ran || acb->cancelled) {
        return;
    }
    acb->cancelled = true;
    /* Held by a plug: start it now; it sees the flag and fails -ECANCELED. */
    if (unplug_one(acb->blk, acb)) {
        blk_aio_start(acb);
        return;
    }
    /* A request still queued behind a drain gives up; one in flight finishes. */
    if (acb->queued) {
        co_queue_restart_all(&acb->blk->queued_requests);
    }
}

void blk_aio_cancel(BlockAIOCB *acb)
{
    AioContext *ctx = acb->blk->ctx;

    if (ctx != aio_context_current() && atomic_load(&ctx->iothread_owned)) {
        fprintf(stderr, "coblk: blk_aio_cancel() called outside the thread that runs the "
                "BlockBackend's IOThread; use blk_aio_cancel_async() from a bottom half "
                "of that context\n");
        abort();
    }
    acb->waiters++;
    blk_aio_cancel_async(acb);
    while (!acb->cb_ran) {
        aio_poll(ctx, true);
    }
    if (--acb->waiters == 0) {
        acb_put(acb);
    }
}

void blk_io_plug(BlockBackend *blk)
{
    blk->plug_depth++;
    aio_io_plug(blk->ctx);
}

void blk_io_unplug(BlockBackend *blk)
{
    if (--blk->plug_depth == 0) {
        blk_flush_plugged(blk);
    }
    aio_io_unplug(blk->ctx);
}
