/*
 * coblk - the request layer: copy-on-read.
 *
 * A read with BDRV_REQ_COPY_ON_READ (or on a node opened with
 * BDRV_O_COPY_ON_READ) copies every range that block status says is not
 * allocated in the node into it: the driver reads it (from the backing
 * chain) into a bounce buffer, writes it back into the node, and the part the
 * caller asked for is copied out. The caller tracks the request as
 * serialising, so no guest write can land between that read and write.
 */
#include <errno.h>

#include "coblk-config.h"
#include "block/io-int.h"

/* Copies [offset, offset + bytes) (aligned) through bounce chunks. */
static int coroutine_fn bdrv_cor_copy(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset)
{
    int64_t align = bs->bl.request_alignment;
    int64_t chunk = ALIGN_DOWN64(BDRV_BOUNCE_MAX, align);
    size_t balign = bdrv_bounce_align(bs);
    void *buf;
    int ret = 0;

    chunk = chunk ? chunk : align;
    chunk = bytes < chunk ? bytes : chunk;
    buf = bdrv_bounce_get((size_t)chunk, balign);
    if (!buf) {
        return -ENOMEM;
    }
    while (bytes > 0 && ret == 0) {
        int64_t n = bytes < chunk ? bytes : chunk;
        IOVector bv;

        iovector_init_buf(&bv, buf, (size_t)n);
        ret = bdrv_aligned_preadv(bs, offset, n, &bv, 0);
        if (ret == 0) {
            ret = bdrv_aligned_pwritev(bs, offset, n, &bv, 0, 0);
            bdrv_write_done(bs, offset, n);
        }
        if (ret == 0 && qiov) {
            iovector_from_buf(qiov, qiov_offset, buf, (size_t)n);
        }
        offset += n;
        qiov_offset += (size_t)n;
        bytes -= n;
    }
    bdrv_bounce_put(buf, (size_t)chunk, balign);
    return ret;
}

/*
 * Length of the next piece at offset and whether it is allocated: allocated
 * pieces are cut down to whole blocks, a block only partly allocated is copied.
 */
static int coroutine_fn bdrv_cor_next(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      int64_t *pn, bool *allocated)
{
    int64_t align = bs->bl.request_alignment;
    int64_t pnum = 0;
    int64_t n;
    int ret = bdrv_co_block_status(bs, offset, bytes, &pnum, NULL, NULL);

    if (ret < 0) {
        return ret;
    }
    if (pnum <= 0) {
        /* Past the end of the node: no status, read it as it is. */
        *pn = bytes;
        *allocated = true;
        return 0;
    }
    *allocated = ret & BDRV_BLOCK_ALLOCATED;
    n = *allocated ? ALIGN_DOWN64(pnum, align) : ALIGN_UP64(pnum, align);
    if (n == 0) {
        *allocated = false;
        n = ALIGN_UP64(pnum, align);
    }
    *pn = n < bytes ? n : bytes;
    return 0;
}

int coroutine_fn bdrv_co_do_copy_on_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov, size_t qiov_offset)
{
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t n;
        bool allocated;

        ret = bdrv_cor_next(bs, offset, bytes, &n, &allocated);
        if (ret < 0) {
            break;
        }
        if (!allocated) {
            ret = bdrv_cor_copy(bs, offset, n, qiov, qiov_offset);
        } else if (qiov) {
            ret = bdrv_aligned_preadv(bs, offset, n, qiov, qiov_offset);
        }
        offset += n;
        qiov_offset += (size_t)n;
        bytes -= n;
    }
    return ret;
}
