/*
 * vhdx: partial writes of differencing images (PARTIALLY_PRESENT blocks),
 * with guest data written outside s->lock and the sector bitmap and BAT
 * updates written at the guest's flush, with the dynamic allocations'.
 *
 * A write into part of a NOT_PRESENT block allocates it: under s->lock the
 * chunk's sector bitmap block is made present if it is not (new space,
 * zeroed, its entry set in memory: once per chunk of 2^23 sectors), the
 * block gets its home and a joinable in-flight record (fmt-util.h). A
 * partial block needs no zeroing (only its written sectors' bits are ever
 * set): without the lock the file is extended when the block ends past it,
 * then the record opens and the write's data goes out; other writes of the
 * block join (their data without the lock, their ranges noted once it is
 * written). Under the lock again, once the joiners' data is written, the
 * block's bits are set in memory (its other bits cleared: a crash may have
 * left them set) and its entry set in memory, PARTIALLY_PRESENT, or
 * FULLY_PRESENT when every sector is present now; the write completes
 * without a flush. A write into part of a PARTIALLY_PRESENT block writes its
 * data without the lock, then under it sets its bits in memory (and
 * promotes the block when it is full).
 *
 * Bits set in memory live in a cache of 4 KiB bitmap pages (sb_pages, at
 * most VHDX_SB_DIRTY_MAX); reads of the bitmap (vhdx_sb_run: reads, block
 * status, promotion) look there first. vhdx_commit (alloc.c) writes them
 * with the dirty BAT sectors: one flush (the data of every block and bit),
 * then one log entry holding the pages and the BAT sectors (in place with
 * metadata-log=off: the pages, a flush, the BAT sectors). It runs at the
 * guest's flush, before other BAT writes, and when either cache is full.
 *
 * Crash safety: bits and entries are set in memory only after the data
 * they make visible is written, and reach the file only after a flush that
 * follows it; a new sector bitmap block is zeroed before its entry is set
 * in memory. Through the log the bits and entries of a commit land
 * together or not at all (replay); in place, the bits are durable before
 * the entries that make the blocks partial. A failed data write sets
 * nothing (a failed joiner adds no range); a failed commit keeps both
 * caches dirty for the next.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/vhdx/vhdx-int.h"

/* The cached page at file offset pg (4 KiB aligned), or NULL. */
static uint8_t *cached(const BDRVVhdxState *s, uint64_t pg)
{
    for (uint32_t i = 0; i < s->n_sb_dirty; i++) {
        if (s->sb_dirty[i] == pg) {
            return s->sb_pages + (size_t)i * VHDX_LOG_SECTOR;
        }
    }
    return NULL;
}

int coroutine_fn vhdx_sb_read(BlockDriverState *bs, uint64_t byte, uint8_t *buf, uint64_t len)
{
    BDRVVhdxState *s = bs->opaque;
    const uint8_t *page = cached(s, byte & ~(uint64_t)(VHDX_LOG_SECTOR - 1));

    if (page) {
        memcpy(buf, page + byte % VHDX_LOG_SECTOR, len);
        return 0;
    }
    return vhdx_co_pread(bs->file, byte, buf, (size_t)len);
}

uint32_t vhdx_sb_dirty_count(const BDRVVhdxState *s)
{
    return s->n_sb_dirty;
}

void vhdx_sb_free(BDRVVhdxState *s)
{
    free(s->sb_pages);
    s->sb_pages = NULL;
    s->n_sb_dirty = 0;
}

/* The page at pg, cached (read from the file when it is not). Holds s->lock. */
static int coroutine_fn page_of(BlockDriverState *bs, uint64_t pg, uint8_t **page)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    *page = cached(s, pg);
    if (*page) {
        return 0;
    }
    if (!s->sb_pages) {
        s->sb_pages = malloc((size_t)VHDX_SB_DIRTY_MAX * VHDX_LOG_SECTOR);
        if (!s->sb_pages) {
            return -ENOMEM;
        }
    }
    if (s->n_sb_dirty == VHDX_SB_DIRTY_MAX) {
        ret = vhdx_commit(bs); /* empties the cache */
        if (ret < 0) {
            return ret;
        }
    }
    *page = s->sb_pages + (size_t)s->n_sb_dirty * VHDX_LOG_SECTOR;
    ret = vhdx_co_pread(bs->file, pg, *page, VHDX_LOG_SECTOR);
    if (ret == 0) {
        s->sb_dirty[s->n_sb_dirty++] = pg;
    }
    return ret;
}

/*
 * Sets the bits of sectors [in, in + n) of block in memory; with fresh (the
 * block becomes PARTIALLY_PRESENT now) clears its other bits. Holds s->lock.
 */
static int coroutine_fn mark(BlockDriverState *bs, uint64_t block, uint64_t in, uint64_t n,
                             bool fresh)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t spb = s->block_size / s->logical_sector, base = block * spb;
    uint64_t wfirst = base + in / s->logical_sector, wlast = wfirst + n / s->logical_sector;
    uint64_t sec = fresh ? base : wfirst, last = fresh ? base + spb : wlast;
    int ret = 0;

    while (sec < last && ret == 0) {
        unsigned bit;
        uint64_t byte = vhdx_sb_byte(s, sec, &bit), pg = byte & ~(uint64_t)(VHDX_LOG_SECTOR - 1);
        uint8_t *page;

        ret = page_of(bs, pg, &page);
        for (; ret == 0 && sec < last; sec++) {
            byte = vhdx_sb_byte(s, sec, &bit);
            if (byte >= pg + VHDX_LOG_SECTOR) {
                break;
            }
            if (sec >= wfirst && sec < wlast) {
                page[byte - pg] |= (uint8_t)(1u << bit);
            } else {
                page[byte - pg] &= (uint8_t)~(1u << bit);
            }
        }
    }
    return ret;
}

/* Whether every sector of block is present (its bits, memory first). Holds s->lock. */
static int coroutine_fn all_present(BlockDriverState *bs, uint64_t block)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t used = vhdx_block_used(s, block), run = 0;
    int ret = vhdx_sb_run(bs, block * s->block_size, used, &run);

    return ret < 0 ? ret : (ret == 1 && run == used);
}

/*
 * Makes the sector bitmap block of block's chunk present when it is not:
 * new space, zeroed, its entry set in memory (written at the next commit,
 * after a flush). Holds s->lock.
 */
static int coroutine_fn ensure_sb(BlockDriverState *bs, uint64_t block)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t sbi = vhdx_sb_index(s, block), off;
    int ret;

    if ((s->bat[sbi] & VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT) {
        return 0;
    }
    off = vhdx_alloc_space(s, VHDX_MiB, NULL);
    if (!off) {
        return -ENOSPC;
    }
    ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)off, (int64_t)VHDX_MiB, 0);
    ret = ret ? ret : vhdx_bat_defer(bs, sbi, off | VHDX_SB_PRESENT);
    if (ret < 0 && off + VHDX_MiB == s->file_end) {
        s->file_end = off;
    }
    return ret;
}

int coroutine_fn vhdx_partial_link(BlockDriverState *bs, VhdxAlloc *a, uint64_t in,
                                  uint64_t n)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t block = a->j.in.first;
    int ret = mark(bs, block, in, n, true);

    for (VhdxRange *r = a->joined; r && ret == 0; r = r->next) {
        ret = mark(bs, block, r->in, r->n, false);
    }
    ret = ret ? ret : all_present(bs, block);
    if (ret < 0) {
        return ret;
    }
    return vhdx_bat_defer(bs, vhdx_bat_index(s, block),
                          a->host | (ret ? VHDX_PAYLOAD_FULLY_PRESENT
                                         : VHDX_PAYLOAD_PARTIALLY_PRESENT));
}

int coroutine_fn vhdx_partial_extend(BlockDriverState *bs, uint64_t block, uint64_t host,
                                     uint64_t in, uint64_t n)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t used = vhdx_block_used(s, block);
    int64_t len = bdrv_co_getlength(bs->file->bs);

    if (len < 0) {
        return (int)len;
    }
    if (in + n >= used || host + used <= (uint64_t)len) {
        return 0;
    }
    return bdrv_co_pwrite_zeroes(bs->file, (int64_t)(host + in + n), (int64_t)(used - in - n),
                                 0);
}

int coroutine_fn vhdx_write_partial(BlockDriverState *bs, uint64_t block, uint64_t e,
                                    uint64_t in, uint64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t idx = vhdx_bat_index(s, block), host = e & VHDX_BAT_OFFSET_MASK;
    int ret = ensure_sb(bs, block);

    if (ret == 0 && (e & VHDX_BAT_STATE_MASK) == VHDX_PAYLOAD_NOT_PRESENT) {
        return vhdx_alloc_block(bs, block, 0, in, n, qiov, qoff, true);
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
    ret = bdrv_co_pwritev_part(bs->file, (int64_t)(host + in), (int64_t)n, qiov, qoff, 0);
    co_mutex_lock(&s->lock);
    if (ret == 0 && s->bat[idx] == e) { /* else promoted meanwhile, or discarded */
        ret = mark(bs, block, in, n, false);
        ret = ret ? ret : all_present(bs, block);
        if (ret > 0) {
            ret = vhdx_bat_defer(bs, idx, host | VHDX_PAYLOAD_FULLY_PRESENT);
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}
