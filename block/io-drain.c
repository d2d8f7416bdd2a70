/*
 * coblk - the request layer: in-flight accounting, drain, polling, the
 * request-layer state of a node and its limits.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coblk-config.h"
#include "block/io-int.h"

#ifndef IOV_MAX
#define IOV_MAX 1024
#endif

/* Largest request_alignment accepted (keeps padded ranges and bounce buffers sane). */
#define BDRV_MAX_REQUEST_ALIGN (64u * 1024 * 1024)

void bdrv_io_init(BlockDriverState *bs)
{
    atomic_store(&bs->in_flight, 0);
    bs->quiesce_counter = 0;
    co_mutex_init(&bs->reqs_lock);
    bs->tracked_requests = NULL;
    bs->serialising_in_flight = 0;
    bs->unlisted_in_flight = 0;
    co_queue_init(&bs->unlisted_waiters);
    co_queue_init(&bs->flush_queue);
    bs->active_flush_req = false;
    bs->write_gen = 0;
    bs->flushed_gen = 0;
    bs->wr_highest_offset = 0;
    if (!bs->bl.request_alignment) {
        bs->bl.request_alignment = 1;
    }
    if (!bs->bl.min_mem_alignment) {
        bs->bl.min_mem_alignment = 1;
    }
    if (!bs->bl.opt_mem_alignment) {
        bs->bl.opt_mem_alignment = 4096;
    }
}

/* ---------------------------------------------------------------------- */
/* In flight and drain */

void bdrv_inc_in_flight(BlockDriverState *bs)
{
    atomic_fetch_add(&bs->in_flight, 1);
}

/*
 * A thread that drains a node whose context another thread runs (an
 * IOThread) must not poll that context: two threads would run one loop, and
 * aio_poll() would make the waiter believe it is that loop's thread, so its
 * later notifications to the loop would be skipped. It sleeps here instead;
 * a request that leaves a drained node idle bumps drain_seq and wakes it.
 */
static pthread_mutex_t drain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t drain_cond = PTHREAD_COND_INITIALIZER;
static unsigned drain_seq;          /* under drain_lock */
static atomic_int drain_sleepers;   /* threads in bdrv_poll_foreign() */

static void drain_wake_sleepers(void)
{
    pthread_mutex_lock(&drain_lock);
    drain_seq++;
    pthread_cond_broadcast(&drain_cond);
    pthread_mutex_unlock(&drain_lock);
}

void bdrv_dec_in_flight(BlockDriverState *bs)
{
    /* Only a drain waits for zero; wake its loop, or a waiter in another thread. */
    if (atomic_fetch_sub(&bs->in_flight, 1) == 1 && bs->quiesce_counter > 0) {
        if (bs->aio_context) {
            aio_notify(bs->aio_context);
        }
        if (atomic_load(&drain_sleepers) > 0) {
            drain_wake_sleepers();
        }
    }
}

unsigned bdrv_get_in_flight(const BlockDriverState *bs)
{
    return atomic_load(&((BlockDriverState *)bs)->in_flight);
}

/*
 * Waits until cond() is false while another thread runs the loop. Ordering:
 * the sleeper count is raised before cond() is read, and a finishing request
 * drops its count before it reads the sleeper count (both sequentially
 * consistent), so either cond() sees the drop or the request wakes us; the
 * sequence number read before cond() catches a wake between the two. Other
 * conditions (a BlockBackend's own count, a coroutine's result) have no
 * wake-up of their own: they are looked at again every FOREIGN_POLL_NS.
 */
#define FOREIGN_POLL_NS 1000000L

static void bdrv_poll_foreign(bool (*cond)(void *opaque), void *opaque)
{
    atomic_fetch_add(&drain_sleepers, 1);
    for (;;) {
        unsigned seq;

        pthread_mutex_lock(&drain_lock);
        seq = drain_seq;
        pthread_mutex_unlock(&drain_lock);
        if (!cond(opaque)) {
            break;
        }
        pthread_mutex_lock(&drain_lock);
        if (seq == drain_seq) {
            struct timespec ts;

            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += FOREIGN_POLL_NS;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&drain_cond, &drain_lock, &ts);
        }
        pthread_mutex_unlock(&drain_lock);
    }
    atomic_fetch_sub(&drain_sleepers, 1);
}

void bdrv_poll_while(BlockDriverState *bs, bool (*cond)(void *opaque), void *opaque)
{
    AioContext *ctx = bs->aio_context ? bs->aio_context : aio_context_current();

    if (ctx && ctx != aio_context_current() && atomic_load(&ctx->iothread_owned)) {
        bdrv_poll_foreign(cond, opaque);
        return;
    }
    while (cond(opaque)) {
        if (!ctx) {
            abort(); /* nothing could ever make progress */
        }
        aio_poll(ctx, true);
    }
}

/* Quiesces (begin) or releases (end) bs, its BlockBackend parents and its subtree. */
static void bdrv_drain_subtree(BlockDriverState *bs, bool begin)
{
    bool edge = begin ? bs->quiesce_counter++ == 0 : --bs->quiesce_counter == 0;

    if (edge) {
        for (BdrvChild *p = bs->parents; p; p = p->next_parent) {
            if (!p->parent) {
                if (begin) {
                    blk_root_drained_begin(p);
                } else {
                    blk_root_drained_end(p);
                }
            }
        }
    }
    for (BdrvChild *c = bs->children; c; c = c->next) {
        bdrv_drain_subtree(c->bs, begin);
    }
}

static bool bdrv_subtree_busy(void *opaque)
{
    BlockDriverState *bs = opaque;

    if (atomic_load(&bs->in_flight) > 0) {
        return true;
    }
    for (BdrvChild *c = bs->children; c; c = c->next) {
        if (bdrv_subtree_busy(c->bs)) {
            return true;
        }
    }
    return false;
}

/*
 * From a coroutine the loop cannot be polled (it may be running us): yield
 * through the scheduler until the subtree is idle instead. A coroutine that
 * drains a node it has a request in flight on deadlocks, as in plain code.
 */
static void coroutine_fn bdrv_co_wait_idle(BlockDriverState *bs)
{
    AioContext *ctx = bs->aio_context ? bs->aio_context : aio_context_current();

    while (bdrv_subtree_busy(bs)) {
        aio_co_schedule(ctx, coroutine_self());
        coroutine_yield();
    }
}

void bdrv_drained_begin(BlockDriverState *bs)
{
    bdrv_drain_subtree(bs, true);
    if (coroutine_in_coroutine()) {
        bdrv_co_wait_idle(bs);
    } else {
        bdrv_poll_while(bs, bdrv_subtree_busy, bs);
    }
}

void bdrv_drained_end(BlockDriverState *bs)
{
    if (bs->quiesce_counter <= 0) {
        return; /* unbalanced end: ignore rather than go negative */
    }
    bdrv_drain_subtree(bs, false);
}

void bdrv_drain(BlockDriverState *bs)
{
    bdrv_drained_begin(bs);
    bdrv_drained_end(bs);
}

/* ---------------------------------------------------------------------- */
/* Limits */

static bool is_pow2(uint64_t x)
{
    return x && !(x & (x - 1));
}

static int64_t min_nonzero(int64_t a, int64_t b)
{
    if (!a || (b && b < a)) {
        return b;
    }
    return a;
}

static uint32_t max_u32(uint32_t a, uint32_t b)
{
    return a > b ? a : b;
}

/* Takes from a child's limits what constrains requests passed through to it. */
static void bdrv_merge_limits(BlockLimits *dst, const BlockLimits *src, bool filter)
{
    dst->min_mem_alignment = max_u32(dst->min_mem_alignment, src->min_mem_alignment);
    dst->opt_mem_alignment = max_u32(dst->opt_mem_alignment, src->opt_mem_alignment);
    dst->max_transfer = min_nonzero(dst->max_transfer, src->max_transfer);
    dst->opt_transfer = dst->opt_transfer > src->opt_transfer ? dst->opt_transfer
                                                              : src->opt_transfer;
    dst->max_iov = (int)min_nonzero(dst->max_iov, src->max_iov);
    if (filter) {
        dst->request_alignment = max_u32(dst->request_alignment, src->request_alignment);
        dst->pwrite_zeroes_alignment =
            max_u32(dst->pwrite_zeroes_alignment, src->pwrite_zeroes_alignment);
        dst->pdiscard_alignment = max_u32(dst->pdiscard_alignment, src->pdiscard_alignment);
        dst->max_pwrite_zeroes = min_nonzero(dst->max_pwrite_zeroes, src->max_pwrite_zeroes);
        dst->max_pdiscard = min_nonzero(dst->max_pdiscard, src->max_pdiscard);
    }
}

/* Rounds a granularity up to a multiple of align (0 stays 0). */
static uint32_t round_gran(uint32_t g, uint32_t align)
{
    uint64_t r = ((uint64_t)g + align - 1) / align * align;

    return r > UINT32_MAX ? UINT32_MAX / align * align : (uint32_t)r;
}

/* Rounds a maximum down to a multiple of gran, at least gran (0 stays 0). */
static int64_t round_max(int64_t m, int64_t gran)
{
    if (m <= 0) {
        return 0;
    }
    m -= m % gran;
    return m ? m : gran;
}

static int bdrv_check_limits(BlockDriverState *bs, Error **errp)
{
    BlockLimits *bl = &bs->bl;
    uint32_t ra;

    bl->request_alignment = bl->request_alignment ? bl->request_alignment : 1;
    bl->min_mem_alignment = bl->min_mem_alignment ? bl->min_mem_alignment : 1;
    bl->opt_mem_alignment = max_u32(bl->opt_mem_alignment, bl->min_mem_alignment);
    ra = bl->request_alignment;
    if (!is_pow2(ra) || ra > BDRV_MAX_REQUEST_ALIGN || !is_pow2(bl->min_mem_alignment) ||
        !is_pow2(bl->opt_mem_alignment)) {
        error_setg(errp, "%s: invalid limits: request_alignment %u, min_mem_alignment %u, "
                   "opt_mem_alignment %u (powers of two required)", bs->filename, ra,
                   bl->min_mem_alignment, bl->opt_mem_alignment);
        return -EINVAL;
    }
    bl->max_transfer = round_max(bl->max_transfer, ra);
    bl->opt_transfer = round_max(bl->opt_transfer, ra);
    bl->pwrite_zeroes_alignment = round_gran(bl->pwrite_zeroes_alignment, ra);
    bl->pdiscard_alignment = round_gran(bl->pdiscard_alignment, ra);
    bl->max_pwrite_zeroes = round_max(bl->max_pwrite_zeroes,
                                      max_u32(bl->pwrite_zeroes_alignment, ra));
    bl->max_pdiscard = round_max(bl->max_pdiscard, max_u32(bl->pdiscard_alignment, ra));
    if (bl->max_iov <= 0) {
        bl->max_iov = IOV_MAX;
    }
    return 0;
}

int bdrv_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BlockLimits old = bs->bl;
    Error *local_err = NULL;
    int ret;

    memset(&bs->bl, 0, sizeof(bs->bl));
    bs->bl.request_alignment = 1;
    bs->bl.min_mem_alignment = 1;
    bs->bl.opt_mem_alignment = 4096;
    bs->bl.max_iov = IOV_MAX;
    for (BdrvChild *c = bs->children; c; c = c->next) {
        bool filter = (c->role & BDRV_CHILD_FILTERED) || (bs->drv && bs->drv->is_filter &&
                                                          c == bs->file);

        if (c->role & (BDRV_CHILD_DATA | BDRV_CHILD_FILTERED | BDRV_CHILD_COW) || filter) {
            bdrv_merge_limits(&bs->bl, &c->bs->bl, filter);
        }
    }
    if (bs->drv && bs->drv->refresh_limits) {
        bs->drv->refresh_limits(bs, &local_err);
        if (local_err) {
            error_propagate(errp, local_err);
            bs->bl = old;
            return -EINVAL;
        }
    }
    ret = bdrv_check_limits(bs, errp);
    if (ret < 0) {
        bs->bl = old;
    }
    return ret;
}
