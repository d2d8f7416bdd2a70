/*
 * Copy offloading into a node (qemu-img convert -C): the driver maps or
 * allocates the host ranges of a guest range and the caller's fill function
 * puts the data there itself (copy_file_range), so the bytes never pass
 * through the request layer. The request layer still sees the range as a
 * write: tracked (serialised against overlapping requests), counted in
 * flight for drain, and the write generations of bs and of the nodes written
 * are bumped so that a flush after it is not skipped.
 */
#include <errno.h>
#include <stddef.h>

#include "block/block-int.h"
#include "block/io-int.h"

typedef struct CopyFill {
    BdrvCopyFillFn *fill;
    void *opaque;
} CopyFill;

static int coroutine_fn copy_fill(void *opaque, BlockDriverState *file, int64_t host,
                                  int64_t offset, int64_t bytes)
{
    CopyFill *c = opaque;
    int ret = c->fill(c->opaque, file, host, offset, bytes);

    /* Even a failed copy may have written part of the range. */
    bdrv_write_done(file, host, bytes);
    return ret;
}

int coroutine_fn bdrv_co_copy_range_to(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       BdrvCopyFillFn *fill, void *opaque)
{
    const BlockDriver *drv = bs ? bs->drv : NULL;
    CopyFill c = { fill, opaque };
    BdrvTrackedRequest req;
    int ret;

    if (!drv) {
        return -ENOMEDIUM;
    }
    ret = bdrv_check_request(offset, bytes, NULL, 0);
    if (ret < 0) {
        return ret;
    }
    if (drv->struct_size < offsetof(BlockDriver, co_copy_range_to) +
                           sizeof(drv->co_copy_range_to) || !drv->co_copy_range_to) {
        return -ENOTSUP;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    bdrv_inc_in_flight(bs);
    bdrv_tracked_begin(&req, bs, offset, bytes, BDRV_TRACKED_WRITE, 0);
    ret = drv->co_copy_range_to(bs, offset, bytes, copy_fill, &c);
    bdrv_write_done(bs, offset, bytes);
    bdrv_tracked_end(&req);
    bdrv_dec_in_flight(bs);
    return ret;
}
