/*
 * vhdx: resize (truncate), growing and shrinking the virtual disk.
 *
 * The BAT region keeps its place and length: the new size must need no more
 * BAT entries than the region holds (create rounds it up to 1 MiB, which
 * covers growth to about 128 Ki payload blocks), else -ENOTSUP; moving the
 * region is not implemented.
 *
 * Grow: the used part of the old last block past the old end is zeroed;
 * the new BAT entries (NOT_PRESENT, or for a fixed image - LeaveBlocksAllocated
 * set, as qemu-img and coblk create them - new zeroed blocks at the end of
 * the file) are
 * written in place: no reader looks at entries past the old count, and the
 * sector they share with live entries is rewritten with its live entries
 * unchanged. Flush. Then the Virtual Disk Size metadata item is written
 * through the log (metadata-log=on) or in place (one sector), and flushed:
 * that single update switches the size.
 *
 * Shrink: the BAT entries of the blocks past the new end become NOT_PRESENT
 * first (through the log, or in place; their space stays in the file, which
 * has no free-space map), the tail of the new last block is zeroed, flush,
 * then the size item as above.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define LOG_CHUNK (64 * VHDX_KiB) /* BAT bytes per log entry when shrinking */

static uint64_t entries_for(const BDRVVhdxState *s, uint64_t size, uint64_t *payload)
{
    *payload = div_round_up_u64(size, s->block_size);
    return *payload + (*payload - 1) / s->chunk_ratio;
}

/* Zeroes guest bytes [from, end of its block) when the block is present. */
static int coroutine_fn zero_block_tail(BlockDriverState *bs, uint64_t from)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t block = from / s->block_size, in = from % s->block_size, e;

    if (!in || block >= s->payload_blocks) {
        return 0;
    }
    e = s->bat[vhdx_bat_index(s, block)];
    if ((e & VHDX_BAT_STATE_MASK) != VHDX_PAYLOAD_FULLY_PRESENT) {
        return 0;
    }
    return bdrv_co_pwrite_zeroes(bs->file, (int64_t)((e & VHDX_BAT_OFFSET_MASK) + in),
                                 (int64_t)(s->block_size - in), 0);
}

/* Writes BAT entries [first, last) whole 4 KiB sectors, in place or through the log. */
static int coroutine_fn write_bat(BlockDriverState *bs, uint64_t first, uint64_t last,
                                  bool log)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t lo = first * 8 / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;
    uint64_t hi = round_up_u64(last * 8, VHDX_LOG_SECTOR);
    uint8_t *buf;
    int ret = 0;

    if (hi > s->bat_length) {
        hi = s->bat_length; /* the region is 1 MiB aligned: hi stays 4 KiB aligned */
    }
    buf = calloc(1, LOG_CHUNK);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint64_t pos = lo; pos < hi && ret == 0; pos += LOG_CHUNK) {
        uint64_t len = hi - pos < LOG_CHUNK ? hi - pos : LOG_CHUNK;

        memset(buf, 0, len);
        for (uint64_t i = 0; i < len / 8 && pos / 8 + i < s->bat_entries; i++) {
            st_le64(buf + i * 8, s->bat[pos / 8 + i]);
        }
        if (log) {
            ret = vhdx_log_write(bs, s->bat_offset + pos, buf, len);
        } else {
            ret = vhdx_co_pwrite(bs->file, s->bat_offset + pos, buf, len);
        }
    }
    free(buf);
    return ret;
}

/* Writes the Virtual Disk Size item (through the log when it is on) and flushes. */
static int coroutine_fn write_size_item(BlockDriverState *bs, uint64_t size)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t off = s->meta_offset + s->size_item_off;
    uint64_t page = off / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;
    uint8_t *buf;
    int ret;

    if (!s->metadata_log) {
        uint8_t b[8];

        st_le64(b, size);
        ret = vhdx_co_pwrite(bs->file, off, b, 8);
        return ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    buf = malloc(VHDX_LOG_SECTOR);
    if (!buf) {
        return -ENOMEM;
    }
    ret = vhdx_co_pread(bs->file, page, buf, VHDX_LOG_SECTOR);
    if (ret == 0) {
        st_le64(buf + (off - page), size);
        ret = vhdx_log_write(bs, page, buf, VHDX_LOG_SECTOR); /* flushes */
    }
    free(buf);
    return ret;
}

static int coroutine_fn grow(BlockDriverState *bs, uint64_t payload, uint64_t entries)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t old_entries = s->bat_entries, end = s->file_end;
    bool fixed = s->leave_allocated;
    uint64_t *bat;
    int ret = zero_block_tail(bs, s->disk_size);

    if (ret < 0) {
        return ret;
    }
    bat = realloc(s->bat, entries * 8);
    if (!bat) {
        return -ENOMEM;
    }
    s->bat = bat;
    memset(s->bat + old_entries, 0, (entries - old_entries) * 8);
    s->bat_entries = entries;
    for (uint64_t b = s->payload_blocks; fixed && b < payload; b++) {
        s->bat[vhdx_bat_index(s, b)] = end | VHDX_PAYLOAD_FULLY_PRESENT;
        end += s->block_size;
    }
    if (end > VHDX_MAX_FILE) {
        ret = -EFBIG;
    } else if (end > s->file_end) {
        ret = bdrv_co_truncate(bs->file, (int64_t)end, true, PREALLOC_MODE_OFF, 0, NULL);
    }
    ret = ret ? ret : write_bat(bs, old_entries, entries, false);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        s->bat_entries = old_entries;
        return ret;
    }
    s->file_end = end;
    return 0;
}

static int coroutine_fn shrink(BlockDriverState *bs, uint64_t size, uint64_t payload)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t first = vhdx_bat_index(s, payload), last = s->bat_entries;
    int ret;

    for (uint64_t b = payload; b < s->payload_blocks; b++) {
        s->bat[vhdx_bat_index(s, b)] = VHDX_PAYLOAD_NOT_PRESENT;
    }
    ret = first < last ? write_bat(bs, first, last, s->metadata_log) : 0;
    ret = ret ? ret : zero_block_tail(bs, size);
    return ret ? ret : bdrv_co_flush(bs->file->bs);
}

int coroutine_fn vhdx_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                  PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t size = (uint64_t)offset, payload, entries, bytes;
    int ret;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "vhdx: resize with preallocation is not supported (fixed images "
                   "allocate their new blocks)");
        return -ENOTSUP;
    }
    if (size == 0 || size > VHDX_MAX_DISK || size % s->logical_sector) {
        error_setg(errp, "vhdx: new size %" PRIu64 " of '%s' is not a multiple of the logical "
                   "sector size %u in 1..64 TiB", size, bs->filename, s->logical_sector);
        return -EINVAL;
    }
    if (size == s->disk_size) {
        return 0;
    }
    if (s->has_parent) {
        error_setg(errp, "vhdx: resizing the differencing image '%s' is not supported",
                   bs->filename);
        return -ENOTSUP;
    }
    entries = entries_for(s, size, &payload);
    if (check_mul_overflow(entries, (uint64_t)8, &bytes) || bytes > s->bat_length ||
        bytes > VHDX_MAX_BAT_BYTES) {
        error_setg(errp, "vhdx: cannot grow '%s' to %" PRIu64 " bytes: the BAT needs %" PRIu64
                   " entries, more than its region (%" PRIu64 " bytes) holds; moving the BAT "
                   "region is not supported (convert the image instead)", bs->filename, size,
                   entries, s->bat_length);
        return -ENOTSUP;
    }
    co_mutex_lock(&s->lock);
    ret = vhdx_log_start(bs);
    if (ret == 0 && size > s->disk_size) {
        ret = entries > s->bat_entries ? grow(bs, payload, entries)
                                       : zero_block_tail(bs, s->disk_size);
    } else if (ret == 0) {
        ret = shrink(bs, size, payload);
    }
    ret = ret ? ret : write_size_item(bs, size);
    if (ret == 0) {
        s->disk_size = size;
        s->payload_blocks = payload;
        s->bat_entries = entries;
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "vhdx: could not resize '%s' to %" PRIu64 " bytes",
                         bs->filename, size);
    }
    return ret;
}
