/*
 * qcow2: growing the image file ahead of allocations, trimming the unused
 * tail at close.
 *
 * New clusters go to the end of the image file, so allocating writes append
 * to it. On a disk file system an O_DIRECT write past the end of the file is
 * serialised (ext4 takes the inode lock exclusively and waits for the write
 * before the next one may start; io_uring hands such writes to one worker per
 * file), so 32 allocating writes in flight run one at a time. When an
 * allocating guest write gets clusters past the file's end, the file is grown
 * with fallocate to grow_step() beyond them: the next allocations' writes
 * land inside the file, in allocated (unwritten) extents, and run in
 * parallel. Metadata allocations (tables, snapshots, preallocation, which
 * extends the file itself in the asked mode) do not grow the file ahead.
 *
 * The refcounts, not the file length, say which clusters are in use: the
 * grown tail holds clusters of refcount 0, free, that read as zeroes. close
 * and a switch to read-only cut it back to the end of the last cluster with
 * a refcount (never below the file's length before the first grow). A tail
 * left by a crash is harmless: `qemu-img check` accepts it (free clusters
 * past the last used one) and the next allocations use it.
 *
 * data_hwm follows what was written: the file's length at open, then the end
 * of every cluster handed out (alloc_run) or written at a place chosen
 * outside the allocator (a refcount block at the start of its range, a new
 * refcount table, a rebuilt refcount structure). Clusters past it have never
 * been written since open and lie in the grown tail or past the file's end:
 * they read as zeroes, so an allocating write skips their zero COW areas.
 *
 * Every function here runs with s->lock held.
 */
#include <errno.h>

#include "qcow2.h"

/*
 * How far past the last cluster handed out the file is grown: a quarter of
 * its length, at least 8 MiB (or 16 clusters), at most 128 MiB. Each grow is
 * a fallocate that waits for the inode lock behind the buffered writes in
 * flight, and the allocating write that triggered it waits too: a file that
 * keeps growing (convert into a new image) makes O(log) of them instead of
 * one per 8 MiB (123 per GiB made convert -O qcow2 25 % slower). What a
 * crash leaves past the last cluster is free clusters.
 */
#define QCOW2_GROW_MIN (8ULL << 20)
#define QCOW2_GROW_MAX (128ULL << 20)

static uint64_t grow_step(const BDRVQcow2State *s, uint64_t len)
{
    uint64_t step = len / 4;

    step = step < QCOW2_GROW_MIN ? QCOW2_GROW_MIN : step;
    step = step > QCOW2_GROW_MAX ? QCOW2_GROW_MAX : step;
    return step > 16 * s->cluster_size ? step : 16 * s->cluster_size;
}

int coroutine_fn qcow2_grow_init(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t len = bdrv_co_getlength(bs->file->bs);

    if (len < 0) {
        return (int)len;
    }
    s->file_len_known = (uint64_t)len;
    qcow2_note_written(s, round_up_u64((uint64_t)len, s->cluster_size));
    /* Data clusters live in the data file: the image file only gets metadata. */
    s->grow_off = qcow2_has_data_file(s);
    return 0;
}

void qcow2_note_written(BDRVQcow2State *s, uint64_t end)
{
    if (end > s->data_hwm) {
        s->data_hwm = end;
    }
}

void coroutine_fn qcow2_grow_ahead(BlockDriverState *bs, uint64_t end)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t target;
    int64_t len;
    int ret;

    if (end <= s->file_len_known || s->grow_off) {
        return;
    }
    len = bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        return;
    }
    s->file_len_known = (uint64_t)len;
    if (end <= (uint64_t)len) {
        return;
    }
    target = round_up_u64(end + grow_step(s, (uint64_t)len), s->cluster_size);
    if (target >= QCOW2_MAX_OFFSET) {
        return;
    }
    if (!s->grown) {
        s->grow_floor = (uint64_t)len;
    }
    ret = bdrv_co_truncate(bs->file, (int64_t)target, false, PREALLOC_MODE_FALLOC, 0, NULL);
    if (ret < 0) {
        /* No fallocate, not a growable file, no space: the writes extend the file. */
        s->grow_off = true;
        return;
    }
    s->grown = true;
    s->file_len_known = target;
}

int coroutine_fn qcow2_trim_grown(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t used, keep;
    int64_t len;
    int ret;

    if (!s->grown) {
        return 0;
    }
    /* The refcounts on disk must say what the cut file holds before it is cut. */
    ret = bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        ret = qcow2_refcount_end(bs, &used);
    }
    len = ret < 0 ? ret : bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        return (int)len;
    }
    keep = used > s->grow_floor ? used : s->grow_floor;
    if ((uint64_t)len > keep) {
        ret = bdrv_co_truncate(bs->file, (int64_t)keep, true, PREALLOC_MODE_OFF, 0, NULL);
        if (ret < 0) {
            return ret;
        }
        len = (int64_t)keep;
    }
    s->grown = false;
    s->file_len_known = (uint64_t)len;
    return 0;
}
