/*
 * vdi: resize (grow, with block moves when the map outgrows its room; shrink
 * of dynamic images).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

/* Drops the in-memory metadata and reads it again from the file (after a failed resize). */
static void coroutine_fn vdi_reload(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    free(s->map);
    free(s->owner);
    s->map = NULL;
    s->owner = NULL;
    fmt_defer_init(&s->dirty); /* committed before the resize began: the file is authoritative */
    if (vdi_co_read_meta(bs, s, NULL) < 0) {
        s->corrupt = true; /* no allocation until the image is reopened */
        s->blocks = 0;
        s->disk_size = 0;
    }
}

/* Zeroes guest bytes [from, end of from's block) if that block has a slot. */
static int coroutine_fn vdi_zero_block_tail(BlockDriverState *bs, uint64_t from)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t block = (uint32_t)(from / s->block_size), in = (uint32_t)(from % s->block_size);
    uint32_t e;

    if (in == 0 || block >= s->blocks) {
        return 0;
    }
    e = vdi_entry(s, block);
    if (!vdi_is_slot(s, e)) {
        return 0;
    }
    return bdrv_co_pwrite_zeroes(bs->file, vdi_slot_offset(s, e) + in,
                                 (int64_t)(s->block_size - in), 0);
}

/* Makes map and owner hold n entries (the new ones unset). */
static int vdi_grow_tables(BDRVVdiState *s, uint32_t n)
{
    uint8_t *map = realloc(s->map, (size_t)n * 4 + 1);
    uint32_t *owner;

    if (!map) {
        return -ENOMEM;
    }
    s->map = map;
    owner = realloc(s->owner, (size_t)n * 4 + 1);
    if (!owner) {
        return -ENOMEM;
    }
    s->owner = owner;
    return 0;
}

/* Writes the header with the new geometry fields and flushes. */
static int coroutine_fn vdi_commit_size(BlockDriverState *bs, uint64_t size, uint32_t blocks,
                                        uint32_t allocated, uint64_t off_bmap, uint64_t off_data)
{
    BDRVVdiState *s = bs->opaque;
    int ret = bdrv_co_flush(bs->file->bs);

    if (ret < 0) {
        return ret;
    }
    st_le64(s->hdr + VDI_OFF_DISK, size);
    st_le32(s->hdr + VDI_OFF_BLOCKS, blocks);
    st_le32(s->hdr + VDI_OFF_ALLOCATED, allocated);
    st_le32(s->hdr + VDI_OFF_BMAP, (uint32_t)off_bmap);
    st_le32(s->hdr + VDI_OFF_DATA, (uint32_t)off_data);
    ret = vdi_write_header(bs);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        s->disk_size = size;
        s->blocks = blocks;
        s->allocated = allocated;
        s->off_bmap = off_bmap;
        s->off_data = off_data;
    }
    return ret;
}

/*
 * The new map does not fit before the data: the first k slots (k = the new
 * map's size in blocks) are copied past the last slot and their map entries
 * repointed (flushed between), so that no entry uses them. While the copies
 * are counted, the header's block count grows with free entries (in the old
 * map area) to stay at least the allocated count, as VirtualBox requires;
 * if the old map area has no room for that (a full map of allocated blocks)
 * the grow is refused rather than done unsafely. Then the new map,
 * renumbered for a data offset k blocks later, is written where those slots
 * were; a single header write switches to the new layout (the old map area
 * stays as a gap). A crash before it leaves the old layout with leaked
 * slots; after it, the new one. Static images get their new slots at the end.
 */
static int coroutine_fn vdi_grow_relocate(BlockDriverState *bs, uint64_t size, uint32_t nb)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t old = s->blocks, alloc = s->allocated;
    uint64_t map_bytes = round_up_u64((uint64_t)nb * 4, VDI_SECTOR);
    uint32_t k = (uint32_t)div_round_up_u64(map_bytes, s->block_size);
    uint32_t m = k < alloc ? k : alloc, dest = alloc > k ? alloc : k;
    uint32_t add = s->type == VDI_TYPE_STATIC ? nb - old : 0;
    uint64_t off_bmap = s->off_data, off_data = s->off_data + (uint64_t)k * s->block_size;
    uint32_t tmp_blocks = dest + m > old ? dest + m : old; /* while the copies are counted */
    uint8_t *buf = NULL, *map;
    int ret = 0;

    if (off_data > UINT32_MAX) {
        return -EFBIG; /* the header's offsets are 32-bit */
    }
    if (m && s->off_bmap + (uint64_t)tmp_blocks * 4 > s->off_data) {
        return -ENOTSUP;
    }
    if (m && !(buf = malloc(s->block_size))) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < m && ret == 0; i++) {
        ret = vdi_copy_slot(bs, i, dest + i, buf);
    }
    free(buf);
    if (m && ret == 0 && tmp_blocks > old) {
        for (uint32_t b = old; b < tmp_blocks; b++) {
            vdi_set_entry(s, b, VDI_FREE);
        }
        ret = fmt_co_pwrite(bs->file, (int64_t)(s->off_bmap + (uint64_t)old * 4),
                            (int64_t)(tmp_blocks - old) * 4, s->map + (size_t)old * 4, 0);
    }
    if (m && ret == 0) {
        ret = vdi_commit_size(bs, s->disk_size, tmp_blocks, dest + m, s->off_bmap, s->off_data);
    }
    if (m && ret == 0) {
        for (uint32_t b = 0; b < old; b++) {
            uint32_t e = vdi_entry(s, b);

            if (vdi_is_slot(s, e) && e < m) {
                vdi_set_entry(s, b, dest + e);
            }
        }
        ret = vdi_write_map(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        return ret;
    }
    /* The new map, renumbered: every used slot is now k or more. */
    map = calloc(1, map_bytes);
    if (!map) {
        return -ENOMEM;
    }
    for (uint32_t b = 0; b < nb; b++) {
        uint32_t e = b < old ? vdi_entry(s, b) : VDI_FREE;

        if (b >= old && add) {
            e = alloc + (b - old);
        } else if (b < old && vdi_is_slot(s, e)) {
            e -= k;
        }
        st_le32(map + (size_t)b * 4, e);
    }
    ret = fmt_co_pwrite(bs->file, (int64_t)off_bmap, (int64_t)map_bytes, map, 0);
    if (ret == 0 && add) {
        ret = bdrv_co_truncate(bs->file, (int64_t)(off_data + (uint64_t)(alloc + add) *
                               s->block_size), true, PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret == 0) {
        ret = vdi_commit_size(bs, size, nb, alloc + add, off_bmap, off_data);
    }
    if (ret == 0) {
        memcpy(s->map, map, (size_t)nb * 4);
        vdi_build_owner(s);
    }
    free(map);
    return ret;
}

/* Grows to size (nb blocks): new map entries past the old ones, then the header. */
static int coroutine_fn vdi_grow(BlockDriverState *bs, uint64_t size, uint32_t nb)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t old = s->blocks, add;
    int ret = vdi_zero_block_tail(bs, s->disk_size);

    if (ret < 0 || nb <= old) {
        return ret ? ret : vdi_commit_size(bs, size, old, s->allocated, s->off_bmap,
                                           s->off_data);
    }
    ret = vdi_grow_tables(s, nb + (uint32_t)div_round_up_u64((uint64_t)nb * 4, s->block_size));
    if (ret < 0) {
        return ret;
    }
    if (s->off_bmap + (uint64_t)nb * 4 > s->off_data) {
        return vdi_grow_relocate(bs, size, nb);
    }
    add = s->type == VDI_TYPE_STATIC ? nb - old : 0;
    for (uint32_t b = old; b < nb; b++) {
        vdi_set_entry(s, b, add ? s->allocated + (b - old) : VDI_FREE);
    }
    /* Entries past the old count are not read until the header says so. */
    ret = fmt_co_pwrite(bs->file, (int64_t)(s->off_bmap + (uint64_t)old * 4),
                        (int64_t)(nb - old) * 4, s->map + (size_t)old * 4, 0);
    if (ret == 0 && add) {
        ret = bdrv_co_truncate(bs->file, vdi_slot_offset(s, s->allocated + add), true,
                               PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret == 0) {
        ret = vdi_commit_size(bs, size, nb, s->allocated + add, s->off_bmap, s->off_data);
    }
    if (ret == 0) {
        vdi_build_owner(s);
    }
    return ret;
}

/* Shrinks a dynamic image: the blocks past the end are released first, then the header. */
static int coroutine_fn vdi_shrink(BlockDriverState *bs, uint64_t size, uint32_t nb,
                                   Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    if (s->type != VDI_TYPE_DYNAMIC) {
        error_setg(errp, "vdi: cannot shrink '%s': it is a static image (every block is "
                   "preallocated); convert it to a dynamic one first", bs->filename);
        return -ENOTSUP;
    }
    ret = nb < s->blocks ? vdi_release_blocks(bs, nb, s->blocks - 1) : 0;
    ret = ret ? ret : vdi_zero_block_tail(bs, size);
    ret = ret ? ret : vdi_commit_size(bs, size, nb, s->allocated, s->off_bmap, s->off_data);
    if (ret == 0) {
        vdi_build_owner(s);
    } else {
        error_setg_errno(errp, ret, "vdi: could not shrink '%s'", bs->filename);
    }
    return ret;
}

/*
 * Resize. Grow: dynamic images get free map entries, static ones new zeroed
 * blocks; when the map does not fit before the data, blocks are moved to
 * make room (vdi_grow_relocate). Shrink (dynamic only, as VirtualBox, which
 * cannot shrink at all, keeps every block of a static image): the blocks
 * past the new end are released. The size must be a multiple of 512.
 */
int coroutine_fn vdi_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags,
                                 Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    uint64_t size = (uint64_t)offset;
    uint32_t nb;
    int ret;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "vdi: resize with preallocation=%s is not supported (static images "
                   "preallocate their new blocks)", prealloc == PREALLOC_MODE_FULL ? "full"
                   : prealloc == PREALLOC_MODE_FALLOC ? "falloc" : "metadata");
        return -ENOTSUP;
    }
    if (size % VDI_SECTOR || size > (uint64_t)VDI_BLOCKS_MAX * s->block_size) {
        error_setg(errp, "vdi: new size %llu of '%s' is not a multiple of %u or exceeds the "
                   "maximum %llu", (unsigned long long)size, bs->filename, VDI_SECTOR,
                   (unsigned long long)VDI_BLOCKS_MAX * s->block_size);
        return -EINVAL;
    }
    if (s->corrupt) {
        error_setg(errp, "vdi: '%s': the block map is corrupt; run 'check -r all' first",
                   bs->filename);
        return -EIO;
    }
    if (size == s->disk_size) {
        return 0;
    }
    nb = (uint32_t)div_round_up_u64(size, s->block_size);
    ret = vdi_mark_modified(bs);
    if (ret < 0) {
        error_setg_errno(errp, ret, "vdi: could not write the header of '%s'", bs->filename);
        return ret;
    }
    co_rwlock_wrlock(&s->lock);
    /* The resize rewrites and moves the map: nothing may be pending. */
    ret = vdi_commit(bs, false);
    ret = ret ? ret : vdi_trim(bs); /* the resize paths expect the file to end at the last slot */
    if (ret < 0) {
        co_rwlock_unlock(&s->lock);
        error_setg_errno(errp, ret, "vdi: could not write the block map of '%s'", bs->filename);
        return ret;
    }
    if (size < s->disk_size) {
        ret = vdi_shrink(bs, size, nb, errp);
    } else {
        ret = vdi_grow(bs, size, nb);
        if (ret == -ENOTSUP) {
            error_setg(errp, "vdi: cannot grow '%s' to %llu bytes crash-safely: its block map "
                       "is full and its blocks are allocated, so no block can be moved to "
                       "make room for a larger map; convert the image instead", bs->filename,
                       (unsigned long long)size);
        } else if (ret < 0) {
            error_setg_errno(errp, ret, "vdi: could not grow '%s' to %llu bytes", bs->filename,
                             (unsigned long long)size);
        }
    }
    if (ret < 0) {
        vdi_reload(bs);
    } else {
        ret = fmt_co_grow_reset(bs->file, &s->grow);
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not get the size of '%s'", bs->filename);
        }
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}
