/*
 * vhdx: allocating writes of payload blocks, with guest data written
 * outside s->lock and many allocations in flight at once.
 *
 * 1. Under s->lock the block gets its home (the space its entry kept, or new
 *    space) and an in-flight record (fmt-util.h).
 * 2. Without it the parts of the block the write leaves are zeroed, then the
 *    write's data goes out. Once the zeroing is done, other writes of the
 *    same block ("joiners") write their data into the block too, instead of
 *    waiting; they complete when the allocation does.
 * 3. Under s->lock again, once its joiners' data is written, the block's BAT
 *    entry is set in memory and its BAT sector marked dirty: the write
 *    completes without a flush. vhdx_commit writes the dirty sectors: one
 *    flush (the data of every block they point at), then all of them in one
 *    log entry (log.c), or in place with metadata-log=off. It runs at the
 *    guest's flush (and close), before any other BAT write (discard,
 *    resize, differencing partial writes, which would write those entries
 *    too), and when VHDX_DIRTY_MAX sectors are dirty. So a stream of
 *    allocating writes costs one flush and one log entry per guest flush,
 *    not one of each per block.
 *
 * Reads do not wait: until the entry is set they see the block's old state
 * (zeroes or the parent), which is also what the new block holds outside the
 * writes still in flight, none of which has completed. Check, discard and
 * resize wait for every allocation in flight and commit (vhdx_alloc_drain);
 * close runs drained and flushed.
 *
 * Crash safety: an entry reaches the file only after a flush that follows
 * the zeroing and the data of the write that allocated the block (and of
 * every joiner that started before it was set; a later joiner writes over
 * zeroes that are durable by then), so the on-disk BAT never points at
 * stale bytes of the file. A write acknowledged before a guest flush is
 * durable once that flush returns (it commits). A failed zeroing or data
 * write sets no entry and fails the write and its joiners; the space is
 * taken again by the next allocation when it was the end of the file, else
 * it stays unreferenced (found again by the next gap scan, space.c). A
 * failed commit keeps the sectors dirty: the next flush retries.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

typedef struct VhdxAlloc {
    FmtInflight in;
    uint64_t host;
    bool filled;              /* zeroing done: joiners may write */
    bool done;                /* entry set, or failed: ret is final */
    int ret;
    unsigned refs;            /* joiners that have yet to read ret */
    unsigned writing;         /* joiners' data writes in flight */
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

/* BAT sectors: 4 KiB through the log, 512 bytes in place. */
static uint64_t bat_unit(const BDRVVhdxState *s)
{
    return s->metadata_log ? VHDX_LOG_SECTOR : 512;
}

int coroutine_fn vhdx_commit(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t unit = bat_unit(s);
    uint8_t *buf;
    int ret;

    if (!s->n_dirty) {
        return 0;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_DISK);
    ret = bdrv_co_flush(bs->file->bs); /* the data is durable before the entries */
    if (ret < 0) {
        return ret;
    }
    buf = calloc(s->n_dirty, unit);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t j = 0; j < s->n_dirty; j++) {
        uint64_t first = (s->dirty[j] - s->bat_offset) / 8;

        for (uint64_t i = 0; i < unit / 8 && first + i < s->bat_entries; i++) {
            st_le64(buf + j * unit + i * 8, s->bat[first + i]);
        }
    }
    BLKDBG_EVENT(bs->file, BLKDBG_MAP_UPDATE);
    if (s->metadata_log) {
        ret = vhdx_log_write_sectors(bs, s->dirty, buf, s->n_dirty);
    }
    for (uint32_t j = 0; !s->metadata_log && j < s->n_dirty && ret == 0; j++) {
        ret = vhdx_co_pwrite(bs->file, s->dirty[j], buf + j * unit, unit);
    }
    free(buf);
    if (ret == 0) {
        s->n_dirty = 0;
    }
    return ret;
}

/* Sets a's entry in memory and marks its BAT sector dirty. Holds s->lock. */
static int coroutine_fn link_block(BlockDriverState *bs, VhdxAlloc *a)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t idx = vhdx_bat_index(s, a->in.first);
    uint64_t sec = s->bat_offset + ((idx * 8) & ~(bat_unit(s) - 1));
    uint32_t j = 0;
    int ret;

    while (j < s->n_dirty && s->dirty[j] != sec) {
        j++;
    }
    if (j == VHDX_DIRTY_MAX) {
        ret = vhdx_commit(bs);
        if (ret < 0) {
            return ret;
        }
        j = 0;
    }
    s->bat[idx] = a->host | VHDX_PAYLOAD_FULLY_PRESENT;
    if (j == s->n_dirty) {
        s->dirty[s->n_dirty++] = sec;
    }
    return 0;
}

/* Writes into a's block (zeroed) and completes with it. Releases s->lock. */
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
    while (a.writing) {
        fmt_inflight_wait(&s->allocs, &s->lock);
    }
    if (ret == 0) {
        ret = link_block(bs, &a);
    }
    a.ret = ret;
    a.done = true;
    co_queue_restart_all(&s->allocs.wait);
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
    uint64_t e = s->bat[vhdx_bat_index(s, block)], st;
    int ret;

    if ((e & VHDX_BAT_STATE_MASK) == VHDX_PAYLOAD_FULLY_PRESENT) {
        /* Present blocks do not move while requests run: no lock. */
        return bdrv_co_pwritev_part(bs->file, (int64_t)((e & VHDX_BAT_OFFSET_MASK) + in),
                                    (int64_t)n, qiov, qoff, 0);
    }
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

int coroutine_fn vhdx_alloc_drain(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;

    fmt_inflight_wait_all(&s->allocs, &s->lock);
    return vhdx_commit(bs);
}
