/*
 * vdi: releasing slots: discard, zero writes, compact, and filling the holes
 * they leave (also used by check -r) so that the file ends at the last slot.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

/* Copies slot from to slot to (1 MiB through buf). */
int coroutine_fn vdi_copy_slot(BlockDriverState *bs, uint32_t from, uint32_t to,
                               uint8_t *buf)
{
    BDRVVdiState *s = bs->opaque;
    int ret = fmt_co_pread(bs->file, vdi_slot_offset(s, from), s->block_size, buf);

    if (ret < 0) {
        return ret;
    }
    return fmt_co_pwrite(bs->file, vdi_slot_offset(s, to), s->block_size, buf, 0);
}

/*
 * Fills the unreferenced slots below allocated with the highest used ones,
 * then lowers the count and shrinks the file (its grown tail first). The
 * caller flushed the map that unreferenced the holes. Called with the lock
 * held exclusively.
 */
int coroutine_fn vdi_fill_holes(BlockDriverState *bs, BlockProgressFn *progress,
                                void *opaque)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t lo = 0, hi = s->allocated, moved = 0;
    uint8_t *buf = NULL;
    int ret = vdi_trim(bs);

    if (ret < 0) {
        return ret;
    }

    for (;;) {
        while (lo < hi && s->owner[lo] != VDI_FREE) {
            lo++;
        }
        while (hi > lo && s->owner[hi - 1] == VDI_FREE) {
            hi--;
        }
        if (lo >= hi) {
            break;
        }
        if (!buf && !(buf = malloc(s->block_size))) {
            return -ENOMEM;
        }
        ret = vdi_copy_slot(bs, hi - 1, lo, buf);
        if (ret < 0) {
            goto out;
        }
        s->owner[lo] = s->owner[hi - 1];
        s->owner[hi - 1] = VDI_FREE;
        vdi_set_entry(s, s->owner[lo], lo);
        moved++;
        if (progress) {
            progress(opaque, lo, hi);
        }
    }
    /* Copies durable before the map points at them; the map before the count. */
    if (moved && ((ret = bdrv_co_flush(bs->file->bs)) < 0 || (ret = vdi_write_map(bs)) < 0)) {
        goto out;
    }
    if (hi != s->allocated) {
        if ((ret = bdrv_co_flush(bs->file->bs)) < 0) {
            goto out;
        }
        st_le32(s->hdr + VDI_OFF_ALLOCATED, hi);
        if ((ret = vdi_write_header(bs)) < 0 || (ret = bdrv_co_flush(bs->file->bs)) < 0) {
            goto out;
        }
        s->allocated = hi;
        ret = bdrv_co_truncate(bs->file, vdi_slot_offset(s, hi), true, PREALLOC_MODE_OFF, 0,
                               NULL);
    }
out:
    free(buf);
    vdi_count_leaked(s);
    if (moved || hi != s->allocated || ret < 0) {
        int r = fmt_co_grow_reset(bs->file, &s->grow);

        ret = ret ? ret : r;
    }
    return ret;
}

/* Marks the whole blocks [first, last] as zero, releasing their slots. Exclusive lock. */
int coroutine_fn vdi_release_blocks(BlockDriverState *bs, uint32_t first, uint32_t last)
{
    BDRVVdiState *s = bs->opaque;
    bool any = false;
    int ret;

    if (s->type != VDI_TYPE_DYNAMIC) {
        return -ENOTSUP; /* static images keep every block */
    }
    if (s->corrupt) {
        return -EIO;
    }
    /* The whole map is written below: the pending entries must be safe to write first. */
    ret = vdi_commit(bs, false);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t b = first; b <= last; b++) {
        uint32_t e = vdi_entry(s, b);

        if (vdi_is_slot(s, e)) {
            s->owner[e] = VDI_FREE;
            vdi_set_entry(s, b, VDI_ZERO);
            any = true;
        }
    }
    if (!any) {
        return 0;
    }
    /* Unreferenced on disk before anything moves into the freed slots. */
    ret = vdi_write_map(bs);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        vdi_build_owner(s);
        return ret;
    }
    return vdi_fill_holes(bs, NULL, NULL);
}

/* The whole blocks inside [offset, offset + bytes): false if none. */
static bool vdi_whole_blocks(const BDRVVdiState *s, int64_t offset, int64_t bytes,
                             uint32_t *first, uint32_t *last)
{
    int64_t end = offset + bytes;
    uint64_t f = div_round_up_u64((uint64_t)offset, s->block_size);
    uint64_t l;

    if (end == (int64_t)s->disk_size) {
        end = (int64_t)round_up_u64(s->disk_size, s->block_size);
    }
    l = (uint64_t)end / s->block_size;
    if (l <= f) {
        return false;
    }
    *first = (uint32_t)f;
    *last = (uint32_t)(l - 1);
    return true;
}

int coroutine_fn vdi_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t first, last;
    int ret;

    if (s->type != VDI_TYPE_DYNAMIC || !vdi_whole_blocks(s, offset, bytes, &first, &last)) {
        return 0; /* advisory: partial blocks and static images keep their data */
    }
    ret = vdi_mark_modified(bs);
    if (ret < 0) {
        return ret;
    }
    co_rwlock_wrlock(&s->lock);
    ret = vdi_release_blocks(bs, first, last);
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* Zeroes [offset, offset + n) of one block without allocating. */
static int coroutine_fn vdi_zero_chunk(BlockDriverState *bs, int64_t offset, int64_t n)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t block = (uint32_t)(offset / s->block_size);
    uint32_t e = vdi_entry(s, block);

    if (e == VDI_FREE || e == VDI_ZERO) {
        return 0;
    }
    if (!vdi_is_slot(s, e)) {
        return -EIO;
    }
    return bdrv_co_pwrite_zeroes(bs->file, vdi_slot_offset(s, e) + offset % s->block_size, n,
                                 0);
}

int coroutine_fn vdi_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, BdrvRequestFlags flags)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t first, last;
    int ret = vdi_mark_modified(bs);

    if (ret < 0) {
        return ret;
    }
    if ((flags & BDRV_REQ_MAY_UNMAP) && s->type == VDI_TYPE_DYNAMIC &&
        vdi_whole_blocks(s, offset, bytes, &first, &last)) {
        co_rwlock_wrlock(&s->lock);
        ret = vdi_release_blocks(bs, first, last);
        co_rwlock_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block;
        int64_t n;

        vdi_chunk(s, offset, bytes, &block, &in_block, &n);
        ret = vdi_zero_chunk(bs, offset, n);
        offset += n;
        bytes -= n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* Releases every block whose data is all zero, then shrinks the file. Runs drained. */
int coroutine_fn vdi_co_compact(BlockDriverState *bs, BlockProgressFn *progress,
                                void *opaque, Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    uint8_t *buf;
    IOVector qiov;
    bool any = false;
    int ret = 0;

    if (s->type != VDI_TYPE_DYNAMIC) {
        error_setg(errp, "'%s' is a static VDI image: compacting needs a dynamic one",
                   bs->filename);
        return -ENOTSUP;
    }
    if (s->corrupt) {
        error_setg(errp, "'%s': the block map is corrupt; run 'check -r all' first",
                   bs->filename);
        return -EIO;
    }
    buf = malloc(s->block_size);
    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    co_rwlock_wrlock(&s->lock);
    ret = vdi_commit(bs, false); /* the map is rewritten whole below */
    iovector_init_buf(&qiov, buf, s->block_size);
    for (uint32_t b = 0; b < s->blocks && ret == 0; b++) {
        uint32_t e = vdi_entry(s, b);

        if (!vdi_is_slot(s, e)) {
            continue;
        }
        ret = fmt_co_pread(bs->file, vdi_slot_offset(s, e), s->block_size, buf);
        if (ret == 0 && iovector_is_zero(&qiov, 0, s->block_size)) {
            s->owner[e] = VDI_FREE;
            vdi_set_entry(s, b, VDI_ZERO);
            any = true;
        }
        if (progress) {
            progress(opaque, b, (int64_t)s->blocks * 2);
        }
    }
    free(buf);
    if (ret == 0 && any) {
        ret = vdi_write_map(bs);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    if (ret == 0) {
        ret = vdi_fill_holes(bs, NULL, NULL);
    }
    if (ret < 0) {
        vdi_build_owner(s);
        error_setg_errno(errp, ret, "Could not compact '%s'", bs->filename);
    } else if (progress) {
        progress(opaque, (int64_t)s->blocks * 2, (int64_t)s->blocks * 2);
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}
