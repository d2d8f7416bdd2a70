/*
 * vhdx: discard.
 *
 * Only blocks the discard covers wholly change (the disk's last block
 * counts as whole up to the disk's end); a partly covered block is left as
 * it is (discard is advisory). In a dynamic or fixed image a present block
 * becomes PAYLOAD_BLOCK_UNMAPPED and keeps its FileOffsetMB, which the
 * specification allows, so a later write reuses its space (vhdx_block_home in
 * alloc.c); an UNMAPPED block reads as zeroes here and in qemu. In a
 * differencing image every state but ZERO becomes PAYLOAD_BLOCK_ZERO
 * (FileOffsetMB 0, as the specification reserves it): a discarded range
 * reads as zeroes, not as the parent's data; the block's space stays in the
 * file, which has no free-space map.
 *
 * Order: the BAT sectors of the changed entries are written (through the
 * log by default, in place with metadata-log=off: every entry alone is
 * valid before and after), then the host ranges of the unmapped blocks are
 * discarded in the file (after the entries no longer point at their data as
 * present, so a crash never leaves a present block over a punched range).
 */
#include <errno.h>
#include <stdlib.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

/* The new entry of block e after a whole-block discard, or e itself. */
static uint64_t discarded(const BDRVVhdxState *s, uint64_t e)
{
    uint64_t st = e & VHDX_BAT_STATE_MASK;

    if (s->has_parent) {
        return st == VHDX_PAYLOAD_ZERO ? e : VHDX_PAYLOAD_ZERO;
    }
    if (st == VHDX_PAYLOAD_FULLY_PRESENT) {
        return (e & VHDX_BAT_OFFSET_MASK) | VHDX_PAYLOAD_UNMAPPED;
    }
    return e;
}

#define BATCH 8192 /* blocks per BAT update */

/* Discards blocks [first, last), at most BATCH. */
static int coroutine_fn discard_blocks(BlockDriverState *bs, uint64_t first, uint64_t last)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t lo = UINT64_MAX, hi = 0;
    uint64_t *old = malloc((last - first) * sizeof(*old));
    int ret;

    if (!old) {
        return -ENOMEM;
    }
    co_mutex_lock(&s->lock);
    ret = vhdx_alloc_drain(bs); /* no block of the range is being allocated */
    ret = ret ? ret : vhdx_log_start(bs);
    for (uint64_t b = first; ret == 0 && b < last; b++) {
        uint64_t idx = vhdx_bat_index(s, b), e = s->bat[idx];

        old[b - first] = e;
        if (discarded(s, e) != e) {
            s->bat[idx] = discarded(s, e);
            lo = idx < lo ? idx : lo;
            hi = idx + 1;
        }
    }
    if (ret == 0 && hi) {
        ret = vhdx_write_bat(bs, lo, hi, s->metadata_log);
        if (ret == 0 && !s->metadata_log) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    for (uint64_t b = first; b < last; b++) {
        uint64_t e = old[b - first], st = e & VHDX_BAT_STATE_MASK;

        if (ret < 0) {
            s->bat[vhdx_bat_index(s, b)] = e; /* the entries on disk are old or new */
        } else if (st == VHDX_PAYLOAD_FULLY_PRESENT || st == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
            /* Advisory: a file that cannot punch keeps the data. */
            (void)bdrv_co_pdiscard(bs->file, (int64_t)(e & VHDX_BAT_OFFSET_MASK),
                                   (int64_t)s->block_size);
        }
    }
    co_mutex_unlock(&s->lock);
    free(old);
    return ret;
}

int coroutine_fn vhdx_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t off = (uint64_t)offset, end = off + (uint64_t)bytes;
    uint64_t first = div_round_up_u64(off, s->block_size), last = end / s->block_size;
    int ret = 0;

    if (end >= s->disk_size) {
        last = s->payload_blocks; /* the last block ends with the disk */
    }
    for (uint64_t b = first; b < last && ret == 0; b += BATCH) {
        ret = discard_blocks(bs, b, last - b < BATCH ? last : b + BATCH);
    }
    return ret;
}
