/*
 * coblk - the request layer: block status of a node and of a backing chain.
 */
#include <errno.h>
#include <stddef.h>

#include "coblk-config.h"
#include "block/io-int.h"

int coroutine_fn bdrv_co_block_status_from_file(BlockDriverState *bs, bool want_zero,
                                                int64_t offset, int64_t bytes, int64_t *pnum,
                                                int64_t *map, BlockDriverState **file)
{
    if (!bs->file) {
        return -ENOTSUP;
    }
    *pnum = bytes;
    *map = offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

/* The driver's answer for the aligned range, or the default for drivers without one. */
static int coroutine_fn bdrv_status_driver(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           int64_t *pnum, int64_t *map,
                                           BlockDriverState **file)
{
    if (bs->drv->co_block_status) {
        return bs->drv->co_block_status(bs, true, offset, bytes, pnum, map, file);
    }
    if (bs->file) {
        return bdrv_co_block_status_from_file(bs, true, offset, bytes, pnum, map, file);
    }
    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED | BDRV_BLOCK_OFFSET_VALID;
}

/*
 * A data range whose driver asked (RECURSE): the file's own status refines
 * it, as qemu-img map and qemu-nbd show it. The range ends where the file's
 * answer ends (so data and holes of the host file show up as separate
 * extents), reads as zero where the file is a hole, and past the file's end
 * (a format may map beyond it; those bytes read as zero). A failing file
 * query only costs the refinement.
 */
static int coroutine_fn bdrv_status_recurse(int ret, int64_t *pnum, int64_t map,
                                            BlockDriverState *file)
{
    int64_t fnum = 0;
    int fret;

    if (!(ret & BDRV_BLOCK_RECURSE) || !(ret & BDRV_BLOCK_OFFSET_VALID) || !file ||
        !(ret & BDRV_BLOCK_DATA) || (ret & BDRV_BLOCK_ZERO)) {
        return ret & ~BDRV_BLOCK_RECURSE;
    }
    fret = bdrv_co_block_status(file, map, *pnum, &fnum, NULL, NULL);
    ret &= ~BDRV_BLOCK_RECURSE;
    if (fret < 0) {
        return ret;
    }
    if ((fret & BDRV_BLOCK_EOF) && (fnum <= 0 || (fret & BDRV_BLOCK_ZERO))) {
        return ret | BDRV_BLOCK_ZERO;
    }
    if (fnum > 0) {
        *pnum = fnum < *pnum ? fnum : *pnum;
        ret |= fret & BDRV_BLOCK_ZERO;
    }
    return ret;
}

/* Zero/allocated inference of a format layer for a range it does not allocate. */
static int coroutine_fn bdrv_status_unallocated(BlockDriverState *bs, int ret, int64_t offset)
{
    BlockDriverState *backing = bs->backing ? bs->backing->bs : NULL;

    if (ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) {
        return ret | BDRV_BLOCK_ALLOCATED;
    }
    if (ret & BDRV_BLOCK_ALLOCATED) {
        return ret;
    }
    if (!backing && bs->drv->is_format) {
        bool backs = bs->drv->struct_size >= offsetof(BlockDriver, supports_backing) +
                                              sizeof(bool) &&
                     bs->drv->supports_backing;

        /* As qemu-img map: only a format that could defer to a backing
         * file leaves its unallocated ranges "not present". */
        return ret | BDRV_BLOCK_ZERO | (backs ? 0 : BDRV_BLOCK_ALLOCATED);
    }
    if (backing) {
        int64_t blen = bdrv_co_getlength(backing);

        if (blen >= 0 && offset >= blen) {
            return ret | BDRV_BLOCK_ZERO;
        }
    }
    return ret;
}

/* Asks the driver about the aligned cover of the range and trims the answer. */
static int coroutine_fn bdrv_status_aligned(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                            int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    int64_t align = bs->bl.request_alignment ? bs->bl.request_alignment : 1;
    int64_t aoff = ALIGN_DOWN64(offset, align);
    int64_t head = offset - aoff;
    int64_t abytes = ALIGN_UP64(offset + bytes, align) - aoff;
    int ret = bdrv_status_driver(bs, aoff, abytes, pnum, map, file);

    if (ret < 0) {
        return ret;
    }
    if (*pnum <= head || *pnum > abytes) {
        return -EIO; /* the driver broke its contract */
    }
    *pnum -= head;
    if (*pnum > bytes) {
        *pnum = bytes;
    }
    if (ret & BDRV_BLOCK_OFFSET_VALID) {
        *map += head;
    }
    return ret;
}

static int coroutine_fn bdrv_do_block_status(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, int64_t len, int64_t *pnum,
                                             int64_t *map, BlockDriverState **file)
{
    int ret = bdrv_status_aligned(bs, offset, bytes, pnum, map, file);

    if (ret < 0) {
        return ret;
    }
    if (ret & BDRV_BLOCK_RAW) {
        if (!(ret & BDRV_BLOCK_OFFSET_VALID) || !*file) {
            return -EIO;
        }
        return bdrv_co_block_status(*file, *map, *pnum, pnum, map, file);
    }
    ret = bdrv_status_recurse(ret, pnum, *map, *file);
    ret = bdrv_status_unallocated(bs, ret, offset);
    if (offset + *pnum == len) {
        ret |= BDRV_BLOCK_EOF;
    }
    return ret;
}

int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      int64_t *pnum, int64_t *map, BlockDriverState **file)
{
    int64_t local_map = 0;
    BlockDriverState *local_file = NULL;
    int64_t len;
    int ret;

    *pnum = 0;
    if (!bs || !bs->drv) {
        return -ENOMEDIUM;
    }
    ret = bdrv_check_request(offset, bytes, NULL, 0);
    if (ret < 0) {
        return ret;
    }
    len = bdrv_co_getlength(bs);
    if (len < 0) {
        return (int)len;
    }
    if (offset >= len) {
        return BDRV_BLOCK_EOF;
    }
    if (bytes > len - offset) {
        bytes = len - offset;
    }
    if (bytes == 0) {
        return 0;
    }
    bdrv_inc_in_flight(bs);
    ret = bdrv_do_block_status(bs, offset, bytes, len, pnum, &local_map, &local_file);
    bdrv_dec_in_flight(bs);
    if (ret >= 0 && map) {
        *map = local_map;
    }
    if (ret >= 0 && file) {
        *file = local_file;
    }
    return ret;
}

int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs, BlockDriverState *base,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file, int *depth)
{
    int d = 0;
    int ret = 0;
    int64_t n = bytes;

    *pnum = 0;
    for (BlockDriverState *p = bs; p && p != base; p = p->backing ? p->backing->bs : NULL) {
        int64_t pn = 0;

        d++;
        ret = bdrv_co_block_status(p, offset, n, &pn, map, file);
        if (ret < 0) {
            return ret;
        }
        if (pn == 0 && p != bs) {
            /* Past the end of a shorter backing file: reads as zeroes. */
            *pnum = n;
            d = 0;
            ret = BDRV_BLOCK_ZERO;
            break;
        }
        *pnum = pn;
        if (pn == 0 || (ret & BDRV_BLOCK_ALLOCATED)) {
            break;
        }
        if (ret & BDRV_BLOCK_ZERO) {
            d = 0; /* known zero and nothing below: unallocated everywhere */
            break;
        }
        n = pn;
    }
    if (!(ret & BDRV_BLOCK_ALLOCATED)) {
        d = 0;
    }
    if (depth) {
        *depth = d;
    }
    return ret;
}
