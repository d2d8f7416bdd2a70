/*
 * vhdx: allocating writes of payload blocks, with guest data written
 * outside s->lock and many allocations in flight at once.
 *
 * 1. Under s->lock the block gets its home (the space its entry kept, or new
 *    space) and an in-flight record (fmt-util.h).
 * 2. Without it the parts of the block the write leaves are zeroed, then the
 *    write's data goes out. Once the zeroing is done, other writes of the
 *    same block ("joiners") write their data into the block too, instead of
 *    waiting; they complete when the block is published.
 * 3. The allocation waits for its joiners' data, then queues itself for
 *    publishing. Whichever allocation finds nobody publishing takes every
 *    queued one (at most PUBLISH_MAX), flushes their data once without the
 *    lock, and writes all their BAT entries under it: one log entry holding
 *    their BAT sectors (log.c), or the sectors in place with
 *    metadata-log=off. So concurrent allocations share one data flush and
 *    one log transaction instead of one of each per block.
 *
 * Reads do not wait: until the entry is published they see the block's old
 * state (zeroes or the parent), which is also what the new block holds
 * outside the writes still in flight, none of which has completed.
 * Check, discard and resize wait for every allocation in flight
 * (vhdx_alloc_drain); close runs drained.
 *
 * Crash safety: an entry is written only after a flush that follows the
 * zeroing and the allocating write's data (and the data of every joiner that
 * started before the allocation queued itself); a joiner that starts later
 * writes over zeroes that are durable already, so the entry never points at
 * stale bytes of the file. A failed zeroing, data write, flush or BAT write
 * leaves the old entry (in memory too) and fails the write and its joiners;
 * the space is taken again by the next allocation when it was the end of the
 * file, else it stays unreferenced (found again by the next gap scan,
 * space.c).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define PUBLISH_MAX 64 /* allocations per shared flush and log entry */

typedef struct VhdxAlloc {
    FmtInflight in;
    uint64_t host;
    bool filled;              /* zeroing done: joiners may write */
    bool done;                /* published or failed: ret is final */
    int ret;
    unsigned refs;            /* joiners that have yet to read ret */
    unsigned writing;         /* joiners' data writes in flight */
    struct VhdxAlloc *next;   /* queued for publishing */
} VhdxAlloc;

static VhdxAlloc *alloc_of(BDRVVhdxState *s, uint64_t block)
{
    FmtInflight *f = fmt_inflight_find(&s->allocs, block);

    return f ? (VhdxAlloc *)((char *)f - offsetof(VhdxAlloc, in)) : NULL;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Whether off overlaps the home of an allocation in flight (not in the BAT yet). */
static bool overlaps_inflight(BDRVVhdxState *s, uint64_t off)
{
    for (FmtInflight *f = s->allocs.head; f; f = f->next) {
        VhdxAlloc *a = (VhdxAlloc *)((char *)f - offsetof(VhdxAlloc, in));

        if (overlaps(off, s->block_size, a->host, s->block_size)) {
            return true;
        }
    }
    return false;
}

uint64_t vhdx_block_home(BDRVVhdxState *s, uint64_t block, uint64_t e)
{
    uint64_t off = e & VHDX_BAT_OFFSET_MASK;

    if (!off || !vhdx_space_kept_ok(s, vhdx_bat_index(s, block), off) ||
        overlaps_inflight(s, off)) {
        off = vhdx_alloc_space(s, s->block_size);
    }
    return off;
}

int coroutine_fn vhdx_fill_block(BlockDriverState *bs, uint64_t host, uint64_t in, uint64_t n)
{
    BDRVVhdxState *s = bs->opaque;
    int ret = 0;

    if (in) {
        ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)host, (int64_t)in, 0);
    }
    if (ret == 0 && in + n < s->block_size) {
        ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)(host + in + n),
                                    (int64_t)(s->block_size - in - n), 0);
    }
    return ret;
}

/*
 * Writes the BAT entries of the n allocations of batch (their data durable):
 * their BAT sectors through one log entry, or in place. On failure the
 * entries in memory are restored. Holds s->lock.
 */
static int coroutine_fn write_entries(BlockDriverState *bs, VhdxAlloc **batch, int n)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t unit = s->metadata_log ? VHDX_LOG_SECTOR : 512;
    uint64_t idx[PUBLISH_MAX], old[PUBLISH_MAX], offs[PUBLISH_MAX];
    uint32_t ns = 0;
    uint8_t *buf;
    int ret = 0;

    for (int i = 0; i < n; i++) {
        uint64_t off;
        uint32_t j = 0;

        idx[i] = vhdx_bat_index(s, batch[i]->in.first);
        old[i] = s->bat[idx[i]];
        s->bat[idx[i]] = batch[i]->host | VHDX_PAYLOAD_FULLY_PRESENT;
        off = s->bat_offset + ((idx[i] * 8) & ~(unit - 1));
        while (j < ns && offs[j] != off) {
            j++;
        }
        if (j == ns) {
            offs[ns++] = off;
        }
    }
    buf = calloc(ns, unit);
    if (!buf) {
        ret = -ENOMEM;
    }
    for (uint32_t j = 0; buf && j < ns; j++) {
        uint64_t first = (offs[j] - s->bat_offset) / 8;

        for (uint64_t i = 0; i < unit / 8 && first + i < s->bat_entries; i++) {
            st_le64(buf + j * unit + i * 8, s->bat[first + i]);
        }
    }
    if (buf && s->metadata_log) {
        ret = vhdx_log_write_sectors(bs, offs, buf, ns);
    }
    for (uint32_t j = 0; buf && !s->metadata_log && j < ns && ret == 0; j++) {
        ret = vhdx_co_pwrite(bs->file, offs[j], buf + j * unit, unit);
    }
    free(buf);
    for (int i = n - 1; ret < 0 && i >= 0; i--) {
        s->bat[idx[i]] = old[i];
    }
    return ret;
}

/* Publishes up to PUBLISH_MAX queued allocations: one flush, then their entries. */
static void coroutine_fn publish_batch(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;
    VhdxAlloc *batch[PUBLISH_MAX];
    int n = 0, ret;

    while (s->publish_head && n < PUBLISH_MAX) {
        batch[n++] = s->publish_head;
        s->publish_head = s->publish_head->next;
    }
    s->publishing = true;
    co_mutex_unlock(&s->lock);
    BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_DISK);
    ret = bdrv_co_flush(bs->file->bs); /* the data is durable before the entries */
    co_mutex_lock(&s->lock);
    if (ret == 0) {
        BLKDBG_EVENT(bs->file, BLKDBG_MAP_UPDATE);
        ret = write_entries(bs, batch, n);
    }
    for (int i = 0; i < n; i++) {
        batch[i]->ret = ret;
        batch[i]->done = true;
    }
    s->publish_waiting -= (unsigned)n;
    s->publishing = false;
    co_queue_restart_all(&s->allocs.wait);
}

/* Publishes a (its data written): after its joiners' data, in a shared batch. */
static int coroutine_fn publish(BlockDriverState *bs, VhdxAlloc *a)
{
    BDRVVhdxState *s = bs->opaque;

    while (a->writing) {
        fmt_inflight_wait(&s->allocs, &s->lock);
    }
    a->next = s->publish_head;
    s->publish_head = a;
    s->publish_waiting++;
    while (!a->done) {
        if (s->publishing) {
            fmt_inflight_wait(&s->allocs, &s->lock);
        } else {
            publish_batch(bs);
        }
    }
    return a->ret;
}

/* Writes into a's block (zeroed) and completes once it is published. Releases s->lock. */
static int coroutine_fn join(BlockDriverState *bs, VhdxAlloc *a, uint64_t in, uint64_t n,
                             IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    a->refs++;
    a->writing++;
    co_mutex_unlock(&s->lock);
    ret = bdrv_co_pwritev_part(bs->file, (int64_t)(a->host + in), (int64_t)n, qiov, qoff, 0);
    co_mutex_lock(&s->lock);
    a->writing--;
    co_queue_restart_all(&s->allocs.wait);
    while (!a->done) {
        fmt_inflight_wait(&s->allocs, &s->lock);
    }
    ret = ret ? ret : a->ret;
    a->refs--;
    co_queue_restart_all(&s->allocs.wait);
    co_mutex_unlock(&s->lock);
    return ret;
}

/* Allocates block (not present) for [in, in + n); see the top of the file. */
static int coroutine_fn alloc_write(BlockDriverState *bs, uint64_t block, uint64_t in,
                                    uint64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    VhdxAlloc a = { .host = vhdx_block_home(s, block, s->bat[vhdx_bat_index(s, block)]) };
    int ret;

    if (!a.host) {
        co_mutex_unlock(&s->lock);
        return -ENOSPC;
    }
    fmt_inflight_begin(&s->allocs, &a.in, block, 1);
    co_mutex_unlock(&s->lock);

    BLKDBG_EVENT(bs->file, BLKDBG_CLUSTER_ALLOC);
    ret = vhdx_fill_block(bs, a.host, in, n);
    if (ret == 0) {
        co_mutex_lock(&s->lock);
        a.filled = true;
        co_queue_restart_all(&s->allocs.wait);
        co_mutex_unlock(&s->lock);
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
        ret = bdrv_co_pwritev_part(bs->file, (int64_t)(a.host + in), (int64_t)n, qiov, qoff,
                                   0);
    }

    co_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = publish(bs, &a);
    } else {
        while (a.writing) {
            fmt_inflight_wait(&s->allocs, &s->lock);
        }
        a.ret = ret;
        a.done = true;
        co_queue_restart_all(&s->allocs.wait);
    }
    while (a.refs) {
        fmt_inflight_wait(&s->allocs, &s->lock);
    }
    if (ret < 0 && a.host + s->block_size == s->file_end) {
        s->file_end = a.host; /* nothing points at it: the next allocation takes it again */
    }
    fmt_inflight_end(&s->allocs, &a.in);
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn vhdx_write_block(BlockDriverState *bs, uint64_t block, uint64_t in, uint64_t n,
                                  IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    VhdxAlloc *a;
    uint64_t e, st;
    int ret;

    co_mutex_lock(&s->lock);
    while ((a = alloc_of(s, block)) != NULL) {
        if (a->filled && !a->done) {
            return join(bs, a, in, n, qiov, qoff);
        }
        fmt_inflight_wait(&s->allocs, &s->lock);
    }
    e = s->bat[vhdx_bat_index(s, block)];
    st = e & VHDX_BAT_STATE_MASK;
    if (st == VHDX_PAYLOAD_FULLY_PRESENT) {
        co_mutex_unlock(&s->lock);
        return bdrv_co_pwritev_part(bs->file, (int64_t)((e & VHDX_BAT_OFFSET_MASK) + in),
                                    (int64_t)n, qiov, qoff, 0);
    }
    if (s->has_parent && (st == VHDX_PAYLOAD_PARTIALLY_PRESENT ||
                          (st == VHDX_PAYLOAD_NOT_PRESENT && n < vhdx_block_used(s, block)))) {
        ret = vhdx_write_partial(bs, block, e, in, n, qiov, qoff);
        co_mutex_unlock(&s->lock);
        return ret;
    }
    return alloc_write(bs, block, in, n, qiov, qoff);
}

void coroutine_fn vhdx_alloc_drain(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;

    fmt_inflight_wait_all(&s->allocs, &s->lock);
}
