/*
 * Flat extents (FLAT, VMFS, and the files of vmfsThin / vmfsPreallocated
 * descriptors): guest bytes lie 1:1 in the extent file from a sector offset.
 */
#include <errno.h>
#include <inttypes.h>

#include "block/bytes.h"
#include "drivers/format/vmdk/vmdk-int.h"

int vmdk_flat_check(BlockDriverState *bs, VmdkExtent *e, Error **errp)
{
    uint64_t end;

    if (check_add_overflow(e->flat_offset, e->length, &end) || end > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "vmdk: %s: flat extent offset %" PRIu64 " + size %" PRIu64
                   " is out of range", bs->filename, e->flat_offset, e->length);
        return -EINVAL;
    }
    return 0;
}

int coroutine_fn vmdk_flat_preadv(VmdkExtent *e, uint64_t off, uint64_t bytes, IOVector *qiov,
                                  size_t qoff)
{
    return bdrv_co_preadv_part(e->child, (int64_t)(e->flat_offset + off), (int64_t)bytes, qiov,
                               qoff, 0);
}

int coroutine_fn vmdk_flat_pwritev(VmdkExtent *e, uint64_t off, uint64_t bytes, IOVector *qiov,
                                   size_t qoff, BdrvRequestFlags flags)
{
    if (!qiov) {
        return bdrv_co_pwrite_zeroes(e->child, (int64_t)(e->flat_offset + off), (int64_t)bytes,
                                     flags & BDRV_REQ_MAY_UNMAP);
    }
    return bdrv_co_pwritev_part(e->child, (int64_t)(e->flat_offset + off), (int64_t)bytes, qiov,
                                qoff, flags & BDRV_REQ_FUA);
}
