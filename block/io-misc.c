/*
 * coblk - the request layer: flush, truncate and length.
 */
#include <errno.h>

#include "coblk-config.h"
#include "block/io-int.h"

/* ---------------------------------------------------------------------- */
/* Flush */

/* The driver half of a flush: caches to the OS, then (unless no-flush) to disk. */
static int coroutine_fn bdrv_flush_node(BlockDriverState *bs)
{
    int ret = 0;

    if (bs->drv->co_flush_to_os) {
        bdrv_debug_event(bs, BLKDBG_FLUSH_TO_OS);
        ret = bs->drv->co_flush_to_os(bs);
    }
    if (ret == 0 && !(bs->open_flags & BDRV_O_NO_FLUSH) && bs->drv->co_flush_to_disk) {
        bdrv_debug_event(bs, BLKDBG_FLUSH_TO_DISK);
        ret = bs->drv->co_flush_to_disk(bs);
    }
    return ret;
}

/* Flushes every child; returns the first error but flushes them all. */
static int coroutine_fn bdrv_flush_children(BlockDriverState *bs)
{
    int ret = 0;

    for (BdrvChild *c = bs->children; c; c = c->next) {
        int r = bdrv_co_flush(c->bs);

        if (ret == 0) {
            ret = r;
        }
    }
    return ret;
}

/*
 * One flush at a time per node. A flush that had to wait skips the work when
 * the flush it waited for already covered every write it could have seen
 * (flushed_gen caught up with the write_gen it sampled), so concurrent
 * flushes coalesce.
 */
int coroutine_fn bdrv_co_flush(BlockDriverState *bs)
{
    unsigned gen;
    int ret = 0;

    if (!bs || !bs->drv || bs->read_only) {
        return 0;
    }
    bdrv_inc_in_flight(bs);
    co_mutex_lock(&bs->reqs_lock);
    gen = bs->write_gen;
    while (bs->active_flush_req) {
        co_queue_wait(&bs->flush_queue, &bs->reqs_lock);
    }
    bs->active_flush_req = true;
    co_mutex_unlock(&bs->reqs_lock);

    if (bs->flushed_gen != gen) {
        ret = bdrv_flush_node(bs);
        if (ret == 0) {
            ret = bdrv_flush_children(bs);
        }
        if (ret == 0) {
            bs->flushed_gen = gen;
        }
    }

    co_mutex_lock(&bs->reqs_lock);
    bs->active_flush_req = false;
    co_queue_next(&bs->flush_queue);
    co_mutex_unlock(&bs->reqs_lock);
    bdrv_dec_in_flight(bs);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Length */

int64_t coroutine_fn bdrv_co_getlength(BlockDriverState *bs)
{
    if (!bs || !bs->drv) {
        return -ENOMEDIUM;
    }
    if (bs->drv->co_getlength) {
        return bs->drv->co_getlength(bs);
    }
    if (bs->file) {
        return bdrv_co_getlength(bs->file->bs);
    }
    return -ENOTSUP;
}

typedef struct GetLengthCo {
    BlockDriverState *bs;
    int64_t ret;
    bool done;
} GetLengthCo;

static void coroutine_fn bdrv_getlength_entry(void *opaque)
{
    GetLengthCo *g = opaque;

    g->ret = bdrv_co_getlength(g->bs);
    g->done = true;
}

static bool bdrv_getlength_busy(void *opaque)
{
    return !((GetLengthCo *)opaque)->done;
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    GetLengthCo g = { .bs = bs };
    AioContext *ctx;

    if (coroutine_in_coroutine()) {
        return bdrv_co_getlength(bs);
    }
    if (!bs || !bs->drv) {
        return -ENOMEDIUM;
    }
    ctx = bs->aio_context ? bs->aio_context : aio_context_current();
    if (!ctx) {
        coroutine_enter(coroutine_create(bdrv_getlength_entry, &g));
    } else {
        aio_co_enter(ctx, coroutine_create(bdrv_getlength_entry, &g));
    }
    bdrv_poll_while(bs, bdrv_getlength_busy, &g);
    return g.ret;
}

/* ---------------------------------------------------------------------- */
/* Truncate */

static int bdrv_truncate_check(BlockDriverState *bs, int64_t offset, Error **errp)
{
    if (!bs || !bs->drv) {
        error_setg(errp, "no medium");
        return -ENOMEDIUM;
    }
    if (offset < 0 || offset > BDRV_MAX_LENGTH) {
        error_setg(errp, "%s: invalid size %lld", bs->filename, (long long)offset);
        return -EINVAL;
    }
    if (bs->read_only) {
        error_setg(errp, "%s: node is read-only", bs->filename);
        return -EPERM;
    }
    return 0;
}

int coroutine_fn bdrv_co_truncate(BdrvChild *child, int64_t offset, bool exact,
                                  PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    BlockDriverState *bs = child ? child->bs : NULL;
    BdrvTrackedRequest req;
    int64_t old;
    int ret = bdrv_truncate_check(bs, offset, errp);

    if (ret < 0) {
        return ret;
    }
    if (!bs->drv->co_truncate) {
        if (bs->drv->is_filter && bs->file) {
            return bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
        }
        error_setg(errp, "%s: driver '%s' does not support resizing", bs->filename,
                   bs->drv->format_name);
        return -ENOTSUP;
    }
    old = bdrv_co_getlength(bs);
    if (old < 0) {
        error_setg_errno(errp, (int)old, "%s: cannot get the current size", bs->filename);
        return (int)old;
    }
    bdrv_inc_in_flight(bs);
    old = old < offset ? old : offset;
    bdrv_tracked_begin(&req, bs, old, BDRV_MAX_LENGTH - old, BDRV_TRACKED_TRUNCATE, 1);
    flags &= bs->supported_truncate_flags;
    ret = bs->drv->co_truncate(bs, offset, exact, prealloc, flags, errp);
    if (ret == 0) {
        bs->write_gen++;
    }
    bdrv_tracked_end(&req);
    bdrv_dec_in_flight(bs);
    return ret;
}

/* Reads guest bytes an image does not hold: its backing file's, zeroes past the
 * backing file's end, or zeroes when there is none. */
int coroutine_fn bdrv_co_read_backing(BlockDriverState *bs, int64_t offset, int64_t n,
                                      IOVector *qiov, size_t qiov_offset)
{
    int64_t blen, in;

    if (!bs->backing) {
        iovector_memset(qiov, qiov_offset, 0, (size_t)n);
        return 0;
    }
    blen = bdrv_co_getlength(bs->backing->bs);
    if (blen < 0) {
        return (int)blen;
    }
    in = offset >= blen ? 0 : (blen - offset < n ? blen - offset : n);
    if (in < n) {
        iovector_memset(qiov, qiov_offset + (size_t)in, 0, (size_t)(n - in));
    }
    return in ? bdrv_co_preadv_part(bs->backing, offset, in, qiov, qiov_offset, 0) : 0;
}
