/*
 * vdi: guest reads and writes, slot allocation for new blocks, block status.
 */
#include <errno.h>
#include <stddef.h>
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
 * Reuses a leaked slot (counted, owned by no block; see vdi_build_owner) for
 * block: it is zeroed whole first, as a failed or lost write may have left
 * bytes in it. Called with alloc_lock held and s->leaked > 0.
 */
static int coroutine_fn vdi_reuse_slot(BlockDriverState *bs, uint32_t block, uint32_t *slot)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t e = 0;
    int ret;

    while (e < s->allocated && s->owner[e] != VDI_FREE) {
        e++;
    }
    if (e == s->allocated) {
        s->leaked = 0; /* unreachable while the count holds */
        return -EAGAIN;
    }
    ret = bdrv_co_pwrite_zeroes(bs->file, vdi_slot_offset(s, e), s->block_size, 0);
    if (ret < 0) {
        return ret;
    }
    s->owner[e] = block;
    s->leaked--;
    *slot = e;
    return 0;
}

/*
 * Reserves a new slot for block, reading as zeroes, and returns it in *slot:
 * a leaked one if there is one, else the next one at the end of the data: the file is grown VDI_GROW_STEP ahead
 * (fmt-grow.h), so a slot in the part grown since open already reads as
 * zeroes; any other is zeroed first. The slot is counted (the header's new
 * count reaches the file at the next commit) but no map entry points at it
 * yet: vdi_publish() sets the entry once the block's data is written, so a
 * failed data write leaves the block as it was (unallocated, reading as
 * zeroes). Called with alloc_lock held.
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
    if (s->leaked) {
        ret = vdi_reuse_slot(bs, block, slot);
        if (ret != -EAGAIN) {
            return ret;
        }
    }
    if (e >= s->blocks) {
        return -EIO; /* unreachable while the invariant holds */
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
    st_le32(s->hdr + VDI_OFF_ALLOCATED, e + 1);
    s->allocated = e + 1;
    s->owner[e] = block;
    *slot = e;
    return 0;
}

/*
 * The data of a reserved slot is written: points the block's map entry at
 * it (in memory; its sector is written at the next commit, which runs here
 * first when the pending set is full). Called with alloc_lock held.
 */
static int coroutine_fn vdi_publish(BlockDriverState *bs, const VdiAlloc *a)
{
    BDRVVdiState *s = bs->opaque;
    uint64_t sector = (uint64_t)a->block * 4 / VDI_SECTOR;
    int ret;

    if (!fmt_defer_has_room(&s->dirty, sector, 1)) {
        ret = vdi_commit(bs, false);
        if (ret < 0) {
            return ret;
        }
    }
    vdi_set_entry(s, a->block, a->slot);
    fmt_defer_add(&s->dirty, sector, 1); /* room made above */
    return 0;
}

/*
 * The data write into a reserved slot failed: gives the slot back, to the
 * end of the data if it is still the last one (the next allocation zeroes
 * it again, as the failed write may have changed part of it), else as a
 * leaked slot that the next new block reuses (vdi_reuse_slot zeroes it).
 * Called with alloc_lock held.
 */
static void vdi_unreserve(BlockDriverState *bs, const VdiAlloc *a)
{
    BDRVVdiState *s = bs->opaque;

    s->owner[a->slot] = VDI_FREE;
    if (a->slot + 1 == s->allocated) {
        s->allocated = a->slot;
        st_le32(s->hdr + VDI_OFF_ALLOCATED, a->slot);
    } else {
        s->leaked++;
    }
}

static VdiAlloc *vdi_alloc_of(FmtJoin *j)
{
    return j ? (VdiAlloc *)((char *)j - offsetof(VdiAlloc, j)) : NULL;
}

/*
 * Writes into an unallocated block: joins the writer that allocates it, else
 * reserves a slot, writes the data into it without alloc_lock (in parallel
 * with the other writes, and the joiners'), and once its data and the
 * joiners' is written publishes the map entry, or gives the slot back (and
 * fails the joiners). Returns 0, 1 when the block was allocated by another
 * writer meanwhile (the caller writes into its slot), or -errno.
 */
static int coroutine_fn vdi_write_new_block(BlockDriverState *bs, uint32_t block,
                                            uint32_t in_block, int64_t n, IOVector *qiov,
                                            size_t qiov_offset)
{
    BDRVVdiState *s = bs->opaque;
    VdiAlloc a = { .block = block }, *o;
    uint32_t e;
    int ret;

    co_mutex_lock(&s->alloc_lock);
    while (((e = vdi_entry(s, block)) == VDI_FREE || e == VDI_ZERO) &&
           (o = vdi_alloc_of(fmt_join_find(&s->allocs, block))) != NULL) {
        if (fmt_join_can_join(&o->j)) {
            return fmt_co_join(&s->allocs, &o->j, &s->alloc_lock, bs->file,
                               vdi_slot_offset(s, o->slot) + in_block, n, qiov, qiov_offset,
                               NULL, NULL);
        }
        fmt_inflight_wait(&s->allocs, &s->alloc_lock); /* sealed or failed: wait until it ends */
    }
    if (e != VDI_FREE && e != VDI_ZERO) {
        co_mutex_unlock(&s->alloc_lock);
        return 1;
    }
    ret = vdi_alloc_slot(bs, block, &a.slot);
    if (ret < 0) {
        co_mutex_unlock(&s->alloc_lock);
        return ret;
    }
    fmt_inflight_begin(&s->allocs, &a.j.in, block, 1);
    fmt_join_open(&s->allocs, &a.j); /* the slot reads zero: joiners may write at once */
    co_mutex_unlock(&s->alloc_lock);

    ret = bdrv_co_pwritev_part(bs->file, vdi_slot_offset(s, a.slot) + in_block, n, qiov,
                               qiov_offset, 0);
    co_mutex_lock(&s->alloc_lock);
    /*
     * The entry goes in as soon as this write is done, not after the
     * joiners' writes: they complete one by one as theirs finish. Waiting
     * for all of them made every write of a new block complete at once, and
     * the queue ran dry between blocks (bench/README.md, vdi seq-write). A
     * joiner still writing is a write in flight to an allocated block.
     */
    if (ret == 0) {
        fmt_join_close(&a.j);
        ret = vdi_publish(bs, &a);
    }
    if (ret < 0) {
        fmt_join_seal(&s->allocs, &a.j, &s->alloc_lock); /* no joiner writes the slot any more */
        vdi_unreserve(bs, &a);
    }
    ret = fmt_join_end(&s->allocs, &a.j, &s->alloc_lock, ret);
    co_mutex_unlock(&s->alloc_lock);
    return ret;
}

static int coroutine_fn vdi_write_chunk(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                        int64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t e = vdi_entry(s, block);

    if (e == VDI_FREE || e == VDI_ZERO) {
        int ret = vdi_write_new_block(bs, block, in_block, n, qiov, qiov_offset);

        if (ret <= 0) {
            return ret;
        }
        e = vdi_entry(s, block);
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
