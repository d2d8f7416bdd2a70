/*
 * vdi: the header and the block map: checks on open (the limits enforced are
 * listed at vdi_check_header), reading the metadata, and writing the header,
 * the map and the deferred map entries (the commit described in vdi.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

/* VirtualBox's UUID layout <-> RFC 4122 order: swap the first three fields. */
void vdi_uuid_swap(uint8_t out[16], const uint8_t in[16])
{
    static const uint8_t perm[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };

    for (int i = 0; i < 16; i++) {
        out[i] = in[perm[i]];
    }
}

int coroutine_fn vdi_write_header(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return fmt_co_pwrite(bs->file, 0, VDI_HDR_BUF, s->hdr, 0);
}

int coroutine_fn vdi_write_map(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return fmt_co_pwrite(bs->file, (int64_t)s->off_bmap, (int64_t)s->blocks * 4, s->map, 0);
}

/* FmtDeferWriteFn: map sectors [first, first + count) (the last one may be partial). */
static int coroutine_fn vdi_write_map_run(void *opaque, uint64_t first, uint32_t count)
{
    BlockDriverState *bs = opaque;
    BDRVVdiState *s = bs->opaque;
    uint64_t map_len = (uint64_t)s->blocks * 4, start = first * VDI_SECTOR;
    uint64_t end = (first + count) * VDI_SECTOR;

    end = end < map_len ? end : map_len;
    if (start >= end) {
        return 0; /* unreachable: units come from entries inside the map */
    }
    return fmt_co_pwrite(bs->file, (int64_t)(s->off_bmap + start), (int64_t)(end - start),
                         s->map + start, 0);
}

/*
 * Writes the deferred map entries (see the crash-safety note at the top):
 * the count first, then a flush, then the map sectors, then a flush if
 * sync. Callers hold alloc_lock or the lock exclusively. Returns 0 or -errno
 * (the entries stay pending in memory).
 */
int coroutine_fn vdi_commit(BlockDriverState *bs, bool sync)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    if (!fmt_defer_pending(&s->dirty)) {
        return 0;
    }
    ret = vdi_write_header(bs);
    ret = ret ? ret : fmt_defer_commit(&s->dirty, bs->file, vdi_write_map_run, bs);
    if (ret == 0 && sync) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

/*
 * Cuts the file grown ahead of new slots back to the end of the last one,
 * where the paths that move slots, resize or repair expect it. The cut
 * part holds no counted slot. Callers hold alloc_lock or the lock
 * exclusively.
 */
int coroutine_fn vdi_trim(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return fmt_co_grow_trim(bs->file, &s->grow, (uint64_t)vdi_slot_offset(s, s->allocated));
}

/*
 * Checks the header against the file length. Limits enforced (as VirtualBox
 * and QEMU): version 1.1; header size 384..(block map offset - 72); type
 * dynamic or static; sector size 512; block size exactly 1 MiB with no extra
 * bytes; blocks in image <= VDI_BLOCKS_MAX and enough for the disk size;
 * blocks allocated <= blocks in image; block map and data offsets multiples
 * of 512, the map between the header and the data, and inside the file.
 */
static int vdi_check_header(BlockDriverState *bs, BDRVVdiState *s, int64_t file_len,
                            Error **errp)
{
    const char *fn = bs->filename;
    uint32_t version = ld_le32(s->hdr + VDI_OFF_VERSION);
    uint32_t hdr_size = ld_le32(s->hdr + VDI_OFF_HDR_SIZE);
    uint32_t sec_size = ld_le32(s->hdr + VDI_OFF_SECSIZE);
    uint32_t extra = ld_le32(s->hdr + VDI_OFF_BLKEXTRA);
    uint64_t map_end, blocks_bytes;

    if (ld_le32(s->hdr + VDI_OFF_SIG) != VDI_SIGNATURE) {
        error_setg(errp, "'%s' is not a VDI image (signature 0x%08x)", fn,
                   ld_le32(s->hdr + VDI_OFF_SIG));
        return -EINVAL;
    }
    if (version != VDI_VERSION_1_1) {
        error_setg(errp, "'%s': unsupported VDI version 0x%08x (only 1.1 is supported)", fn,
                   version);
        return -ENOTSUP;
    }
    if (s->type != VDI_TYPE_DYNAMIC && s->type != VDI_TYPE_STATIC) {
        error_setg(errp, "'%s': unsupported VDI image type %u (%s)", fn, s->type,
                   s->type == 4 ? "differencing images are not supported"
                   : s->type == 3 ? "undo images are not supported" : "unknown type");
        return -ENOTSUP;
    }
    if (hdr_size < VDI_HEADER_SIZE || hdr_size > 4096) {
        error_setg(errp, "'%s': header size %u out of range [%u, 4096]", fn, hdr_size,
                   VDI_HEADER_SIZE);
        return -EINVAL;
    }
    if (sec_size != VDI_SECTOR) {
        error_setg(errp, "'%s': sector size %u is not %u", fn, sec_size, VDI_SECTOR);
        return -ENOTSUP;
    }
    if (s->block_size != VDI_BLOCK_SIZE || extra != 0) {
        error_setg(errp, "'%s': block size %u (extra %u) is not supported (only 1 MiB, no "
                   "extra data)", fn, s->block_size, extra);
        return -ENOTSUP;
    }
    if (s->blocks > VDI_BLOCKS_MAX) {
        error_setg(errp, "'%s': blocks in image %u exceeds the limit %u", fn, s->blocks,
                   VDI_BLOCKS_MAX);
        return -EINVAL;
    }
    blocks_bytes = (uint64_t)s->blocks * s->block_size;
    if (s->disk_size > blocks_bytes) {
        error_setg(errp, "'%s': disk size %llu exceeds blocks in image %u * block size %u", fn,
                   (unsigned long long)s->disk_size, s->blocks, s->block_size);
        return -EINVAL;
    }
    if (s->allocated > s->blocks) {
        error_setg(errp, "'%s': blocks allocated %u exceeds blocks in image %u", fn,
                   s->allocated, s->blocks);
        return -EINVAL;
    }
    if (s->off_bmap % VDI_SECTOR || s->off_data % VDI_SECTOR) {
        error_setg(errp, "'%s': block map offset %llu or data offset %llu is not a multiple "
                   "of %u", fn, (unsigned long long)s->off_bmap,
                   (unsigned long long)s->off_data, VDI_SECTOR);
        return -EINVAL;
    }
    map_end = s->off_bmap + (uint64_t)s->blocks * 4;
    if (s->off_bmap < VDI_OFF_HDR_SIZE + (uint64_t)hdr_size || map_end > s->off_data ||
        map_end > (uint64_t)file_len) {
        error_setg(errp, "'%s': block map at %llu (%u entries) does not lie between the "
                   "header and the data offset %llu inside the file (%lld bytes)", fn,
                   (unsigned long long)s->off_bmap, s->blocks,
                   (unsigned long long)s->off_data, (long long)file_len);
        return -EINVAL;
    }
    return 0;
}

/*
 * Builds the slot -> block table (a shared or out-of-range entry marks
 * corrupt) and counts the leaked slots: counted in the header, owned by no
 * block (a crash or a failed write between reserving a slot and publishing
 * its map entry). New blocks reuse them before the file grows.
 */
void vdi_build_owner(BDRVVdiState *s)
{
    for (uint32_t i = 0; i < s->blocks; i++) {
        s->owner[i] = VDI_FREE;
    }
    s->corrupt = false;
    for (uint32_t b = 0; b < s->blocks; b++) {
        uint32_t e = vdi_entry(s, b);

        if (e == VDI_FREE || e == VDI_ZERO) {
            continue;
        }
        if (!vdi_is_slot(s, e) || s->owner[e] != VDI_FREE) {
            s->corrupt = true;
            continue;
        }
        s->owner[e] = b;
    }
    vdi_count_leaked(s);
}

/* Counts the slots below allocated that no block owns (after owner changed). */
void vdi_count_leaked(BDRVVdiState *s)
{
    s->leaked = 0;
    for (uint32_t i = 0; i < s->allocated && i < s->blocks; i++) {
        s->leaked += s->owner[i] == VDI_FREE;
    }
}

static int vdi_load_header(BlockDriverState *bs, BDRVVdiState *s, int64_t file_len,
                           Error **errp)
{
    s->type = ld_le32(s->hdr + VDI_OFF_TYPE);
    s->off_bmap = ld_le32(s->hdr + VDI_OFF_BMAP);
    s->off_data = ld_le32(s->hdr + VDI_OFF_DATA);
    s->disk_size = ld_le64(s->hdr + VDI_OFF_DISK);
    s->block_size = ld_le32(s->hdr + VDI_OFF_BLKSIZE);
    s->blocks = ld_le32(s->hdr + VDI_OFF_BLOCKS);
    s->allocated = ld_le32(s->hdr + VDI_OFF_ALLOCATED);
    return vdi_check_header(bs, s, file_len, errp);
}

int coroutine_fn vdi_co_read_meta(BlockDriverState *bs, BDRVVdiState *s,
                                  Error **errp)
{
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    if (file_len < VDI_HDR_BUF) {
        error_setg(errp, "'%s' is too short for a VDI header (%lld bytes)", bs->filename,
                   (long long)file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, 0, VDI_HDR_BUF, s->hdr);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
        return ret;
    }
    ret = vdi_load_header(bs, s, file_len, errp);
    if (ret < 0) {
        return ret;
    }
    /* Bounded by the file length (checked above) and VDI_BLOCKS_MAX. */
    s->map = malloc((size_t)s->blocks * 4 + 1);
    s->owner = malloc((size_t)s->blocks * 4 + 1);
    if (!s->map || !s->owner) {
        error_setg(errp, "Could not allocate the block map of '%s' (%u entries)", bs->filename,
                   s->blocks);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, (int64_t)s->off_bmap, (int64_t)s->blocks * 4, s->map);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the block map of '%s'", bs->filename);
        return ret;
    }
    vdi_build_owner(s);
    ret = fmt_co_grow_init(bs->file, &s->grow, VDI_GROW_STEP, s->block_size, PREALLOC_MODE_OFF);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not get the size of '%s'", bs->filename);
    }
    return ret;
}
