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
 *    completes without a flush. vhdx_commit writes the dirty sectors (and
 *    the sector bitmap pages that differencing partial writes set in
 *    memory, partial.c): one flush (the data of every block they point at),
 *    then all of them in one log entry (log.c), or in place with
 *    metadata-log=off (bitmap pages, a flush, BAT sectors). It runs at the
 *    guest's flush (and close), before any other BAT write (discard,
 *    resize, rebase, which would write those entries too), and when
 *    VHDX_DIRTY_MAX sectors (or VHDX_SB_DIRTY_MAX pages) are dirty. So a
 *    stream of allocating writes costs one flush and one log entry per
 *    guest flush, not one of each per block.
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
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

_Static_assert(offsetof(VhdxAlloc, j) == 0, "fmt_join_find returns the VhdxAlloc");

static VhdxAlloc *alloc_of(BDRVVhdxState *s, uint64_t block)
{
    return (VhdxAlloc *)fmt_join_find(&s->allocs, block);
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Whether off overlaps the home of an allocation in flight (not in the BAT yet). */
static bool overlaps_inflight(BDRVVhdxState *s, uint64_t off)
{
    for (FmtInflight *f = s->allocs.head; f; f = f->next) {
        const VhdxAlloc *a = (const VhdxAlloc *)f;

        if (overlaps(off, s->block_size, a->host, s->block_size)) {
            return true;
        }
    }
    return false;
}

uint64_t vhdx_block_home(BDRVVhdxState *s, uint64_t block, uint64_t e, bool *fresh)
{
    uint64_t off = e & VHDX_BAT_OFFSET_MASK;

    *fresh = false;
    if (!off || !vhdx_space_kept_ok(s, vhdx_bat_index(s, block), off) ||
        overlaps_inflight(s, off)) {
        off = vhdx_alloc_space(s, s->block_size, fresh);
    }
    return off;
}

/*
 * A fresh block (the common case: new space at the end of the file) needs
 * no zeroes: the file grows over it (BAT entries must lie inside the file,
 * bat.c), under s->lock so that no write of a later block can be past the
 * end meanwhile (a grow never shrinks, but its length check and the
 * ftruncate are two steps). Zeroing it instead (two fallocates) made the
 * bench's 64 KiB sequential writes 0.84 of raw (bench/README.md, vhdx).
 */
int coroutine_fn vhdx_fill_block(BlockDriverState *bs, uint64_t host, uint64_t in, uint64_t n,
                                 bool fresh)
{
    BDRVVhdxState *s = bs->opaque;
    int ret = 0;

    if (fresh) {
        ret = bdrv_co_truncate(bs->file, (int64_t)(host + s->block_size), false,
                               PREALLOC_MODE_OFF, 0, NULL);
        if (ret != -ENOTSUP) {
            return ret;
        }
        ret = 0; /* a protocol without truncate: zeroes, as for other blocks */
    }
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

/* Fills buf with the dirty BAT sectors (unit bytes each), in s->dirty's order. */
static void encode_dirty(const BDRVVhdxState *s, uint8_t *buf, uint64_t unit)
{
    for (uint32_t j = 0; j < s->n_dirty; j++) {
        uint64_t first = (s->dirty[j] - s->bat_offset) / 8;

        for (uint64_t i = 0; i < unit / 8 && first + i < s->bat_entries; i++) {
            st_le64(buf + j * unit + i * 8, s->bat[first + i]);
        }
    }
}

/* In place (metadata-log=off): the bitmap pages, a flush, then the BAT sectors. */
static int coroutine_fn commit_in_place(BlockDriverState *bs, const uint8_t *bat, uint64_t unit)
{
    BDRVVhdxState *s = bs->opaque;
    int ret = 0;

    for (uint32_t j = 0; j < s->n_sb_dirty && ret == 0; j++) {
        ret = vhdx_co_pwrite(bs->file, s->sb_dirty[j], s->sb_pages + j * VHDX_LOG_SECTOR,
                             VHDX_LOG_SECTOR);
    }
    if (ret == 0 && s->n_sb_dirty && s->n_dirty) {
        ret = bdrv_co_flush(bs->file->bs); /* the bits before the entries that use them */
    }
    for (uint32_t j = 0; j < s->n_dirty && ret == 0; j++) {
        ret = vhdx_co_pwrite(bs->file, s->dirty[j], bat + j * unit, unit);
    }
    return ret;
}

/* Through the log: the bitmap pages and the BAT sectors in one entry. */
static int coroutine_fn commit_logged(BlockDriverState *bs, const uint8_t *bat)
{
    BDRVVhdxState *s = bs->opaque;
    uint32_t n = s->n_sb_dirty + s->n_dirty;
    uint64_t offs[VHDX_SB_DIRTY_MAX + VHDX_DIRTY_MAX];
    uint8_t *buf;
    int ret;

    if (!s->n_sb_dirty) {
        return vhdx_log_write_sectors(bs, s->dirty, bat, s->n_dirty);
    }
    buf = malloc((size_t)n * VHDX_LOG_SECTOR);
    if (!buf) {
        return -ENOMEM;
    }
    memcpy(offs, s->sb_dirty, s->n_sb_dirty * sizeof(offs[0]));
    memcpy(buf, s->sb_pages, (size_t)s->n_sb_dirty * VHDX_LOG_SECTOR);
    if (s->n_dirty) {
        memcpy(offs + s->n_sb_dirty, s->dirty, s->n_dirty * sizeof(offs[0]));
        memcpy(buf + (size_t)s->n_sb_dirty * VHDX_LOG_SECTOR, bat,
               (size_t)s->n_dirty * VHDX_LOG_SECTOR);
    }
    ret = vhdx_log_write_sectors(bs, offs, buf, n);
    free(buf);
    return ret;
}

int coroutine_fn vhdx_commit(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t unit = bat_unit(s);
    uint8_t *buf = NULL;
    int ret;

    if (!s->n_dirty && !s->n_sb_dirty) {
        return 0;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_FLUSH_TO_DISK);
    ret = bdrv_co_flush(bs->file->bs); /* the data is durable before the entries and bits */
    if (ret < 0) {
        return ret;
    }
    if (s->n_dirty) {
        buf = calloc(s->n_dirty, unit);
        if (!buf) {
            return -ENOMEM;
        }
        encode_dirty(s, buf, unit);
    }
    BLKDBG_EVENT(bs->file, BLKDBG_MAP_UPDATE);
    ret = s->metadata_log ? commit_logged(bs, buf) : commit_in_place(bs, buf, unit);
    free(buf);
    if (ret == 0) {
        s->n_dirty = 0;
        s->n_sb_dirty = 0;
    }
    return ret;
}

int coroutine_fn vhdx_bat_defer(BlockDriverState *bs, uint64_t idx, uint64_t entry)
{
    BDRVVhdxState *s = bs->opaque;
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
    s->bat[idx] = entry;
    if (j == s->n_dirty) {
        s->dirty[s->n_dirty++] = sec;
    }
    return 0;
}

void vhdx_joined(FmtJoin *j, void *opaque)
{
    VhdxAlloc *a = (VhdxAlloc *)j;
    VhdxRange *r = opaque;

    r->next = a->joined;
    a->joined = r;
}

/*
 * Allocates block for [in, in + n); see the top of the file. Its place: what
 * entry e kept, else new space. A full block's place is zeroed around the
 * write (a fresh one only grown over, under the lock) and its entry says
 * FULLY_PRESENT; a differencing image's partial block (partial) only lies
 * inside the file, and its bits and entry come from vhdx_partial_link.
 * Called with s->lock held; releases it.
 */
int coroutine_fn vhdx_alloc_block(BlockDriverState *bs, uint64_t block, uint64_t e,
                                  uint64_t in, uint64_t n, IOVector *qiov, size_t qoff,
                                  bool partial)
{
    BDRVVhdxState *s = bs->opaque;
    bool fresh;
    VhdxAlloc a = { .host = vhdx_block_home(s, block, e, &fresh) };
    int ret;

    if (!a.host) {
        co_mutex_unlock(&s->lock);
        return -ENOSPC;
    }
    fmt_inflight_begin(&s->allocs, &a.j.in, block, 1);
    /* A fresh block's grow runs under the lock (vhdx_fill_block), other fills do not. */
    fresh = fresh && !partial;
    ret = fresh ? vhdx_fill_block(bs, a.host, in, n, true) : 0;
    co_mutex_unlock(&s->lock);

    BLKDBG_EVENT(bs->file, BLKDBG_CLUSTER_ALLOC);
    if (ret == 0 && !fresh) {
        ret = partial ? vhdx_partial_extend(bs, block, a.host, in, n)
                      : vhdx_fill_block(bs, a.host, in, n, false);
    }
    if (ret == 0) {
        co_mutex_lock(&s->lock);
        fmt_join_open(&s->allocs, &a.j);
        co_mutex_unlock(&s->lock);
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
        ret = bdrv_co_pwritev_part(bs->file, (int64_t)(a.host + in), (int64_t)n, qiov, qoff,
                                   0);
    }

    co_mutex_lock(&s->lock);
    fmt_join_seal(&s->allocs, &a.j, &s->lock);
    if (ret == 0) {
        ret = partial ? vhdx_partial_link(bs, &a, in, n)
                      : vhdx_bat_defer(bs, vhdx_bat_index(s, block),
                                       a.host | VHDX_PAYLOAD_FULLY_PRESENT);
    }
    ret = fmt_join_end(&s->allocs, &a.j, &s->lock, ret);
    if (ret < 0 && a.host + s->block_size == s->file_end) {
        s->file_end = a.host; /* nothing points at it: the next allocation takes it again */
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn vhdx_write_block(BlockDriverState *bs, uint64_t block, uint64_t in, uint64_t n,
                                  IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    VhdxAlloc *a;
    uint64_t e = s->bat[vhdx_bat_index(s, block)], st;

    if ((e & VHDX_BAT_STATE_MASK) == VHDX_PAYLOAD_FULLY_PRESENT) {
        /* Present blocks do not move while requests run: no lock. */
        return bdrv_co_pwritev_part(bs->file, (int64_t)((e & VHDX_BAT_OFFSET_MASK) + in),
                                    (int64_t)n, qiov, qoff, 0);
    }
    co_mutex_lock(&s->lock);
    while ((a = alloc_of(s, block)) != NULL) {
        if (fmt_join_can_join(&a->j)) {
            VhdxRange r = { .in = in, .n = n };

            return fmt_co_join(&s->allocs, &a->j, &s->lock, bs->file, (int64_t)(a->host + in),
                               (int64_t)n, qiov, qoff, vhdx_joined, &r);
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
        return vhdx_write_partial(bs, block, e, in, n, qiov, qoff);
    }
    return vhdx_alloc_block(bs, block, e, in, n, qiov, qoff, false);
}

int coroutine_fn vhdx_alloc_drain(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;

    fmt_inflight_wait_all(&s->allocs, &s->lock);
    return vhdx_commit(bs);
}
