/*
 * vdi: guest reads and writes, slot allocation for new blocks, block status.
 */
#include <errno.h>
#include <string.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

/* Splits [offset, offset + bytes) at the block boundary: block, offset in it, length. */
void vdi_chunk(const BDRVVdiState *s, int64_t offset, int64_t bytes, uint32_t *block,
               uint32_t *in_block, int64_t *n)
{
    *block = (uint32_t)(offset / s->block_size);
    *in_block = (uint32_t)(offset % s->block_size);
    *n = s->block_size - *in_block;
    if (*n > bytes) {
        *n = bytes;
    }
}

int coroutine_fn vdi_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                               IOVector *qiov, size_t qiov_offset,
                               BdrvRequestFlags flags)
{
    BDRVVdiState *s = bs->opaque;
    int ret = 0;

    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block, e;
        int64_t n;

        vdi_chunk(s, offset, bytes, &block, &in_block, &n);
        e = vdi_entry(s, block);
        if (e == VDI_FREE || e == VDI_ZERO) {
            iovector_memset(qiov, qiov_offset, 0, (size_t)n);
        } else if (!vdi_is_slot(s, e)) {
            ret = -EIO; /* out-of-range map entry: check -r repairs it */
        } else {
            ret = bdrv_co_preadv_part(bs->file, vdi_slot_offset(s, e) + in_block, n, qiov,
                                      qiov_offset, 0);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* Renews the modification UUID once per open, before the first change (as VirtualBox). */
int coroutine_fn vdi_mark_modified(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;
    uint8_t u[16];
    int ret = 0;

    if (s->modified) {
        return 0;
    }
    co_mutex_lock(&s->alloc_lock);
    if (!s->modified) {
        fmt_uuid_generate(u);
        vdi_uuid_swap(s->hdr + VDI_OFF_UUID + 16, u);
        ret = vdi_write_header(bs);
        s->modified = ret == 0;
    }
    co_mutex_unlock(&s->alloc_lock);
    return ret;
}

/*
 * Gives block a new slot at the end of the data, reading as zeroes, and
 * returns it in *slot: the file is grown VDI_GROW_STEP ahead (fmt-grow.h),
 * so a slot in the part grown since open already reads as zeroes; any other
 * is zeroed first. The entry is set in memory at once (its sector is written
 * at the next commit): the caller writes its data into the slot after
 * dropping alloc_lock, in parallel with the other writes. Until then the
 * slot reads as zeroes, as the unallocated block did, so a reader or a
 * commit that sees the entry early sees the block's old content. Called
 * with alloc_lock held.
 */
static int coroutine_fn vdi_alloc_slot(BlockDriverState *bs, uint32_t block, uint32_t *slot)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t e = s->allocated;
    int64_t at = vdi_slot_offset(s, e);
    uint64_t end = (uint64_t)at + s->block_size, unzeroed;
    int ret;

    if (s->corrupt) {
        return -EIO;
    }
    if (e >= s->blocks) {
        return -EIO; /* unreachable while the invariant holds */
    }
    if (!fmt_defer_has_room(&s->dirty, (uint64_t)block * 4 / VDI_SECTOR, 1)) {
        ret = vdi_commit(bs, false);
        if (ret < 0) {
            return ret;
        }
    }
    ret = fmt_co_grow_to(bs->file, &s->grow, end, (uint64_t)vdi_slot_offset(s, s->blocks));
    if (ret < 0) {
        return ret;
    }
    unzeroed = fmt_grow_unzeroed(&s->grow, (uint64_t)at, end);
    if (unzeroed) {
        ret = bdrv_co_pwrite_zeroes(bs->file, at, (int64_t)unzeroed, 0);
        if (ret < 0) {
            return ret;
        }
    }
    fmt_grow_written(&s->grow, end);
    /* In memory now; the count and the entry reach the file at the next commit. */
    st_le32(s->hdr + VDI_OFF_ALLOCATED, e + 1);
    s->allocated = e + 1;
    s->owner[e] = block;
    vdi_set_entry(s, block, e);
    fmt_defer_add(&s->dirty, (uint64_t)block * 4 / VDI_SECTOR, 1); /* room made above */
    *slot = e;
    return 0;
}

static int coroutine_fn vdi_write_chunk(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                        int64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t e = vdi_entry(s, block);
    int ret = 0;

    if (e == VDI_FREE || e == VDI_ZERO) {
        co_mutex_lock(&s->alloc_lock);
        e = vdi_entry(s, block);
        if (e == VDI_FREE || e == VDI_ZERO) {
            ret = vdi_alloc_slot(bs, block, &e);
        }
        co_mutex_unlock(&s->alloc_lock);
        if (ret < 0) {
            return ret;
        }
    }
    if (!vdi_is_slot(s, e)) {
        return -EIO;
    }
    return bdrv_co_pwritev_part(bs->file, vdi_slot_offset(s, e) + in_block, n, qiov,
                                qiov_offset, 0);
}

int coroutine_fn vdi_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                IOVector *qiov, size_t qiov_offset,
                                BdrvRequestFlags flags)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    if (offset + bytes > (int64_t)s->disk_size) {
        return -ENOSPC;
    }
    ret = vdi_mark_modified(bs);
    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block;
        int64_t n;

        vdi_chunk(s, offset, bytes, &block, &in_block, &n);
        ret = vdi_write_chunk(bs, block, in_block, n, qiov, qiov_offset);
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

int coroutine_fn vdi_co_block_status(BlockDriverState *bs, bool want_zero,
                                     int64_t offset, int64_t bytes, int64_t *pnum,
                                     int64_t *map, BlockDriverState **file)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t block, in_block, e;
    int64_t n;
    int ret;

    co_rwlock_rdlock(&s->lock);
    vdi_chunk(s, offset, bytes, &block, &in_block, &n);
    e = vdi_entry(s, block);
    if (vdi_is_slot(s, e)) {
        *map = vdi_slot_offset(s, e) + in_block;
        *file = bs->file->bs;
        ret = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
        /* Extend over blocks whose slots follow contiguously. */
        while (n < bytes && vdi_entry(s, block + 1) == e + 1 && vdi_is_slot(s, e + 1)) {
            block++;
            e++;
            n += bytes - n < s->block_size ? bytes - n : s->block_size;
        }
    } else if (e == VDI_FREE || e == VDI_ZERO) {
        ret = e == VDI_ZERO ? BDRV_BLOCK_ZERO : 0;
        while (n < bytes && vdi_entry(s, block + 1) == e) {
            block++;
            n += bytes - n < s->block_size ? bytes - n : s->block_size;
        }
    } else {
        ret = -EIO;
    }
    co_rwlock_unlock(&s->lock);
    *pnum = n;
    return ret;
}
