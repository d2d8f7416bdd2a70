/*
 * coblk - the request layer: write-zeroes and discard.
 *
 * Write-zeroes pads to request_alignment by read-modify-write of the head and
 * tail blocks, then hands pwrite_zeroes_alignment-aligned pieces (at most
 * max_pwrite_zeroes) to the driver, falling back to writing a shared buffer
 * of zeroes unless the caller said BDRV_REQ_NO_FALLBACK. Discard drops its
 * unaligned head and tail and is a no-op without discard=unmap.
 */
#include <errno.h>
#include <string.h>

#include "coblk-config.h"
#include "block/io-int.h"

static int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

/* Writes zero buffers over an aligned range; the shared zero buffer when it fits. */
static int coroutine_fn bdrv_write_zero_buffers(BlockDriverState *bs, int64_t offset,
                                                int64_t bytes, BdrvRequestFlags flags)
{
    int64_t align = bs->bl.request_alignment;
    int64_t chunk = ALIGN_DOWN64(BDRV_BOUNCE_MAX, align);
    size_t balign = bdrv_bounce_align(bs);
    void *zbuf = bdrv_zero_buf(bs->bl.min_mem_alignment);
    void *own = NULL;
    int ret = 0;

    if (!zbuf || chunk == 0) {
        chunk = chunk ? chunk : align;
        own = bdrv_bounce_get((size_t)chunk, balign);
        if (!own) {
            return -ENOMEM;
        }
        memset(own, 0, (size_t)chunk);
        zbuf = own;
    }
    while (bytes > 0 && ret == 0) {
        int64_t n = min64(bytes, chunk);
        IOVector bv;

        iovector_init_buf(&bv, zbuf, (size_t)n);
        ret = bdrv_aligned_pwritev(bs, offset, n, &bv, 0, flags & BDRV_REQ_FUA);
        offset += n;
        bytes -= n;
    }
    if (own) {
        bdrv_bounce_put(own, (size_t)chunk, balign);
    }
    return ret;
}

/* The driver's write-zeroes, or zero buffers if it has none or refuses. */
static int coroutine_fn bdrv_driver_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, BdrvRequestFlags flags)
{
    unsigned zflags = flags & bs->supported_zero_flags &
                      (BDRV_REQ_MAY_UNMAP | BDRV_REQ_FUA | BDRV_REQ_NO_FALLBACK);

    if (bs->drv->co_pwrite_zeroes) {
        int ret = bs->drv->co_pwrite_zeroes(bs, offset, bytes, (BdrvRequestFlags)zflags);

        if (ret != -ENOTSUP) {
            return ret;
        }
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        return -ENOTSUP;
    }
    return bdrv_write_zero_buffers(bs, offset, bytes, flags);
}

/* The zeroing granularity: pwrite_zeroes_alignment, at least request_alignment. */
static int64_t bdrv_zero_align(BlockDriverState *bs)
{
    int64_t za = bs->bl.pwrite_zeroes_alignment;

    return za > bs->bl.request_alignment ? za : bs->bl.request_alignment;
}

/* Write-zeroes of a request_alignment-aligned range, split per the zeroing limits. */
static int coroutine_fn bdrv_zeroes_aligned(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, BdrvRequestFlags flags)
{
    int64_t za = bdrv_zero_align(bs);
    int64_t max = bs->bl.max_pwrite_zeroes > 0 ? bs->bl.max_pwrite_zeroes : BDRV_MAX_LENGTH;
    int ret = 0;

    max -= max % za;
    max = max ? max : za;
    while (bytes > 0 && ret == 0) {
        int64_t head = offset % za;
        int64_t n;

        if (head || bytes < za) {
            /* Unaligned piece: the driver could not zero it efficiently. */
            n = head ? min64(za - head, bytes) : bytes;
            n = min64(n, max);
            if (flags & BDRV_REQ_NO_FALLBACK) {
                ret = bdrv_driver_pwrite_zeroes(bs, offset, n, flags);
            } else {
                ret = bdrv_write_zero_buffers(bs, offset, n, flags);
            }
        } else {
            n = min64(bytes - bytes % za, max);
            ret = bdrv_driver_pwrite_zeroes(bs, offset, n, flags);
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

/* Head block, aligned middle, tail block. */
static int coroutine_fn bdrv_zeroes_padded(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           BdrvRequestFlags flags)
{
    int64_t align = bs->bl.request_alignment;
    int64_t end = offset + bytes;
    int64_t mid = ALIGN_UP64(offset, align);
    int64_t mid_end = ALIGN_DOWN64(end, align);
    int ret = 0;

    if (mid > mid_end) {
        return bdrv_rmw_zero_block(bs, mid_end, offset, end, flags);
    }
    if (offset < mid) {
        ret = bdrv_rmw_zero_block(bs, mid - align, offset, mid, flags);
    }
    if (ret == 0 && mid_end > mid) {
        ret = bdrv_zeroes_aligned(bs, mid, mid_end - mid, flags);
    }
    if (ret == 0 && end > mid_end) {
        ret = bdrv_rmw_zero_block(bs, mid_end, mid_end, end, flags);
    }
    return ret;
}

int coroutine_fn bdrv_co_do_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          BdrvRequestFlags flags)
{
    int64_t align = bs->bl.request_alignment;
    bool padded = ((offset | (offset + bytes)) & (align - 1)) != 0;
    bool emulate_fua = !(bs->supported_zero_flags & BDRV_REQ_FUA) ||
                       !(bs->supported_write_flags & BDRV_REQ_FUA);
    BdrvTrackedRequest req;
    int ret;

    if (padded && (flags & BDRV_REQ_NO_FALLBACK)) {
        return -ENOTSUP; /* the unaligned ends would need data writes */
    }
    if (!bs->drv->co_pwrite_zeroes && (flags & BDRV_REQ_NO_FALLBACK)) {
        return -ENOTSUP;
    }
    /* With MAY_UNMAP the format may free host clusters: serialise as a discard. */
    bdrv_tracked_begin(&req, bs, offset, bytes, BDRV_TRACKED_WRITE,
                       (padded || (flags & (BDRV_REQ_SERIALISING | BDRV_REQ_MAY_UNMAP)))
                           ? (uint32_t)align : 0);
    bdrv_debug_event(bs, BLKDBG_PWRITEV_ZERO);
    ret = bdrv_zeroes_padded(bs, offset, bytes, flags);
    bdrv_write_done(bs, offset, bytes);
    if (ret == 0 && (flags & BDRV_REQ_FUA) && emulate_fua) {
        ret = bdrv_co_flush(bs);
    }
    bdrv_tracked_end(&req);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Discard */

static int64_t bdrv_discard_align(BlockDriverState *bs)
{
    int64_t da = bs->bl.pdiscard_alignment;

    return da > bs->bl.request_alignment ? da : bs->bl.request_alignment;
}

static int coroutine_fn bdrv_discard_aligned(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes)
{
    int64_t da = bdrv_discard_align(bs);
    int64_t max = bs->bl.max_pdiscard > 0 ? bs->bl.max_pdiscard : BDRV_MAX_LENGTH;
    int ret = 0;

    max -= max % da;
    max = max ? max : da;
    while (bytes > 0) {
        int64_t n = min64(bytes, max);

        ret = bs->drv->co_pdiscard(bs, offset, n);
        if (ret == -ENOTSUP) {
            ret = 0; /* discard is advisory */
        }
        if (ret < 0) {
            break;
        }
        offset += n;
        bytes -= n;
    }
    return ret;
}

int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes)
{
    BlockDriverState *bs;
    BdrvTrackedRequest req;
    int64_t da;
    int64_t start;
    int64_t end;
    int ret;

    if (!child || !child->bs || !child->bs->drv) {
        return -ENOMEDIUM;
    }
    ret = bdrv_check_request(offset, bytes, NULL, 0);
    if (ret < 0) {
        return ret;
    }
    bs = child->bs;
    if (bs->read_only) {
        return -EPERM;
    }
    if (!(bs->open_flags & BDRV_O_UNMAP) || !bs->drv->co_pdiscard) {
        return 0;
    }
    da = bdrv_discard_align(bs);
    start = (offset + da - 1) / da * da;
    end = (offset + bytes) / da * da;
    if (start >= end) {
        return 0;
    }
    bdrv_inc_in_flight(bs);
    /*
     * Serialising: a format may free the host clusters behind the range, so
     * a read or an in-place write of the same range still in flight must
     * finish first, and a later one must see the range discarded.
     */
    bdrv_tracked_begin(&req, bs, start, end - start, BDRV_TRACKED_DISCARD, 1);
    ret = bdrv_discard_aligned(bs, start, end - start);
    bs->write_gen++;
    bdrv_tracked_end(&req);
    bdrv_dec_in_flight(bs);
    return ret;
}
