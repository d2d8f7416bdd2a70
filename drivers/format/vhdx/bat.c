/*
 * vhdx: the block allocation table. Payload entries are interleaved with a
 * sector bitmap entry after every chunk_ratio payload entries, where
 * chunk_ratio = 2^23 * logical sector size / block size.
 *
 * Limits: the entry count is computed with checked arithmetic and must fit
 * the BAT region and VHDX_MAX_BAT_BYTES; every payload entry has a known
 * state (PARTIALLY_PRESENT only in differencing images, which are refused);
 * a FULLY_PRESENT block lies at 1 MiB or more and its used part (the disk
 * may end inside the last block) ends inside the file.
 * Sector bitmap entries of a non-differencing image are not used.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

uint64_t vhdx_bat_index(const BDRVVhdxState *s, uint64_t block)
{
    return block + block / s->chunk_ratio;
}

static int check_entry(BlockDriverState *bs, uint64_t block, uint64_t entry, uint64_t len,
                       uint64_t *end, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t state = entry & VHDX_BAT_STATE_MASK, off = entry & VHDX_BAT_OFFSET_MASK;
    uint64_t used = s->disk_size - block * s->block_size; /* the last block may be partial */

    if (used > s->block_size) {
        used = s->block_size;
    }

    switch (state) {
    case VHDX_PAYLOAD_NOT_PRESENT:
    case VHDX_PAYLOAD_UNDEFINED:
    case VHDX_PAYLOAD_ZERO:
    case VHDX_PAYLOAD_UNMAPPED:
        return 0;
    case VHDX_PAYLOAD_FULLY_PRESENT:
        if (off < VHDX_MiB || !range_within(off, used, len)) {
            error_setg(errp, "vhdx: %s: BAT entry of block %" PRIu64 " points at %" PRIu64
                       ", outside the file (%" PRIu64 " bytes)", bs->filename, block, off, len);
            return -EINVAL;
        }
        if (off + s->block_size > *end) {
            *end = off + s->block_size;
        }
        return 0;
    default:
        error_setg(errp, "vhdx: %s: BAT entry of block %" PRIu64 " has state %" PRIu64
                   " (not valid in a non-differencing image)", bs->filename, block, state);
        return -EINVAL;
    }
}

static int bat_geometry(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t bytes;

    s->chunk_ratio = ((1ULL << 23) * s->logical_sector) / s->block_size;
    s->payload_blocks = div_round_up_u64(s->disk_size, s->block_size);
    s->bat_entries = s->payload_blocks + (s->payload_blocks - 1) / s->chunk_ratio;
    if (check_mul_overflow(s->bat_entries, (uint64_t)8, &bytes) || bytes > s->bat_length ||
        bytes > VHDX_MAX_BAT_BYTES) {
        error_setg(errp, "vhdx: %s: the BAT needs %" PRIu64 " entries, more than its region "
                   "(%" PRIu64 " bytes) or the limit of %" PRIu64 " bytes hold", bs->filename,
                   s->bat_entries, s->bat_length, VHDX_MAX_BAT_BYTES);
        return -EINVAL;
    }
    return 0;
}

int vhdx_load_bat(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    int64_t len = bdrv_getlength(bs->file->bs);
    uint64_t end;
    int ret = bat_geometry(bs, errp);

    if (ret < 0) {
        return ret;
    }
    if (len < 0) {
        return (int)len;
    }
    s->bat = malloc(s->bat_entries * 8);
    if (!s->bat) {
        error_setg(errp, "vhdx: %s: out of memory for the BAT", bs->filename);
        return -ENOMEM;
    }
    if (vhdx_pread_sync(bs->file, s->bat_offset, s->bat, s->bat_entries * 8) < 0) {
        error_setg(errp, "vhdx: %s: could not read the BAT", bs->filename);
        return -EIO;
    }
    end = (uint64_t)len;
    for (uint64_t i = 0; i < s->bat_entries; i++) {
        s->bat[i] = ld_le64(&s->bat[i]);
    }
    for (uint64_t b = 0; b < s->payload_blocks; b++) {
        ret = check_entry(bs, b, s->bat[vhdx_bat_index(s, b)], (uint64_t)len, &end, errp);
        if (ret < 0) {
            return ret;
        }
    }
    s->file_end = round_up_u64(end, VHDX_MiB);
    return 0;
}

int coroutine_fn vhdx_bat_set(BlockDriverState *bs, uint64_t block, uint64_t entry)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t idx = vhdx_bat_index(s, block);
    /* Through the log: its 4 KiB sector; in place: the 512-byte sector. */
    uint64_t unit = s->metadata_log ? VHDX_LOG_SECTOR : 512;
    uint64_t sec = (idx * 8) & ~(unit - 1);
    uint64_t first = sec / 8, old = s->bat[idx];
    uint8_t *buf = calloc(1, unit);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    s->bat[idx] = entry;
    for (uint64_t i = 0; i < unit / 8 && first + i < s->bat_entries; i++) {
        st_le64(buf + i * 8, s->bat[first + i]);
    }
    if (s->metadata_log) {
        ret = vhdx_log_write(bs, s->bat_offset + sec, buf, unit);
    } else {
        ret = vhdx_co_pwrite(bs->file, s->bat_offset + sec, buf, unit);
    }
    free(buf);
    if (ret < 0) {
        s->bat[idx] = old;
    }
    return ret;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/*
 * Finds blocks that overlap each other or the log / BAT / metadata regions
 * (open already checked each entry on its own). Like qemu-img's vhdx check
 * it reports no cluster counts or end offset.
 */
int coroutine_fn vhdx_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t *offs = malloc((s->payload_blocks ? s->payload_blocks : 1) * 8), n = 0;

    if (!offs) {
        res->check_errors++;
        return -ENOMEM;
    }
    for (uint64_t b = 0; b < s->payload_blocks; b++) {
        uint64_t e = s->bat[vhdx_bat_index(s, b)];

        if ((e & VHDX_BAT_STATE_MASK) == VHDX_PAYLOAD_FULLY_PRESENT) {
            offs[n++] = e & VHDX_BAT_OFFSET_MASK;
        }
    }
    qsort(offs, n, 8, cmp_u64);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t o = offs[i];

        if ((i + 1 < n && offs[i + 1] < o + s->block_size) ||
            (o < s->bat_offset + s->bat_length && s->bat_offset < o + s->block_size) ||
            (o < s->meta_offset + s->meta_length && s->meta_offset < o + s->block_size) ||
            (o < s->hdr.log_offset + s->hdr.log_length && s->hdr.log_offset < o + s->block_size)) {
            res->corruptions++;
            bdrv_check_report(res, "vhdx: %s: the block at %" PRIu64 " overlaps another block "
                              "or a metadata region", bs->filename, o);
        }
    }
    free(offs);
    return 0;
}
