/*
 * vhdx: resize (truncate), growing and shrinking the virtual disk.
 *
 * When the new size needs more BAT entries than the BAT region holds
 * (create rounds it up to 1 MiB, which covers about 128 Ki payload blocks),
 * the BAT moves to a new region at the end of the file (move_bat()): the
 * region is written whole (live entries, the new ones, zeroes) while no
 * header points at it, flushed; then region table 1 and region table 2 are
 * rewritten with the new BAT location (each through the log, or in place
 * and flushed one after the other with metadata-log=off: a reader takes the
 * first copy whose checksum holds, so a torn copy 1 leaves copy 2, the old
 * one); then the size item as below. A crash between the region tables and
 * the size item leaves the old size over a larger BAT, which is valid. The
 * old region's space is reused for new blocks once all that is durable
 * (space.c). Differencing images are not resized.
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
 * first (through the log, or in place; their space is reused for new blocks
 * once durable, space.c), the tail of the new last block is zeroed, flush,
 * then the size item as above.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"


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
    ret = ret ? ret : vhdx_write_bat(bs, old_entries, entries, false);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        s->bat_entries = old_entries;
        return ret;
    }
    s->file_end = end;
    if (s->zero_from < end) {
        s->zero_from = end; /* fixed images' new blocks: handed out */
    }
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
    ret = first < last ? vhdx_write_bat(bs, first, last, s->metadata_log) : 0;
    ret = ret ? ret : zero_block_tail(bs, size);
    return ret ? ret : bdrv_co_flush(bs->file->bs);
}

/* Reads the valid region table (copy 1, else copy 2) into buf (VHDX_REGION_SIZE). */
static int coroutine_fn read_region_table(BlockDriverState *bs, uint8_t *buf)
{
    for (int i = 0; i < 2; i++) {
        uint64_t off = i ? VHDX_REGION2_OFFSET : VHDX_REGION1_OFFSET;

        if (vhdx_co_pread(bs->file, off, buf, VHDX_REGION_SIZE) == 0 &&
            !memcmp(buf, "regi", 4) &&
            ld_le32(buf + 4) == vhdx_checksum(buf, VHDX_REGION_SIZE, 4)) {
            return 0;
        }
    }
    return -EIO;
}

/* Points the BAT entry of both region tables at [off, off + len). */
static int coroutine_fn write_region_tables(BlockDriverState *bs, uint64_t off, uint64_t len)
{
    BDRVVhdxState *s = bs->opaque;
    uint8_t *buf = malloc(VHDX_REGION_SIZE);
    uint32_t count;
    int ret = buf ? read_region_table(bs, buf) : -ENOMEM;

    count = ret == 0 ? ld_le32(buf + 8) : 0;
    ret = ret ? ret : -EIO;
    for (uint32_t i = 0; i < count && i < VHDX_MAX_ENTRIES; i++) {
        uint8_t *e = buf + 16 + (size_t)i * 32;

        if (!memcmp(e, vhdx_guid_bat.b, 16)) {
            st_le64(e + 16, off);
            st_le32(e + 24, (uint32_t)len);
            ret = 0;
        }
    }
    if (ret == 0) {
        st_le32(buf + 4, vhdx_checksum(buf, VHDX_REGION_SIZE, 4));
    }
    for (int i = 0; i < 2 && ret == 0; i++) {
        uint64_t at = i ? VHDX_REGION2_OFFSET : VHDX_REGION1_OFFSET;

        if (s->metadata_log) {
            ret = vhdx_log_write(bs, at, buf, VHDX_REGION_SIZE); /* flushes */
        } else {
            ret = vhdx_co_pwrite(bs->file, at, buf, VHDX_REGION_SIZE);
            ret = ret ? ret : bdrv_co_flush(bs->file->bs);
        }
    }
    free(buf);
    return ret;
}

/*
 * Grows the image into a new BAT region at the end of the file, sized for
 * entries; see the top of the file. On failure the old region stays live.
 */
static int coroutine_fn move_bat(BlockDriverState *bs, uint64_t payload, uint64_t entries)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t old_off = s->bat_offset, old_len = s->bat_length, old_entries = s->bat_entries;
    uint64_t len = round_up_u64(entries * 8, VHDX_MiB), off = s->file_end;
    uint64_t used = round_up_u64(entries * 8, VHDX_LOG_SECTOR);
    int ret;

    if (off + len > VHDX_MAX_FILE) {
        return -EFBIG;
    }
    s->bat_offset = off;
    s->bat_length = len;
    s->file_end = off + len;
    if (s->zero_from < s->file_end) {
        s->zero_from = s->file_end; /* the new BAT region */
    }
    ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)(off + used), (int64_t)(len - used), 0);
    ret = ret ? ret : grow(bs, payload, entries); /* new entries, in the new region; flush */
    ret = ret ? ret : vhdx_write_bat(bs, 0, old_entries, false);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    ret = ret ? ret : write_region_tables(bs, off, len);
    if (ret < 0) {
        s->bat_offset = old_off;
        s->bat_length = old_len;
        s->bat_entries = old_entries;
    }
    return ret;
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
    if (check_mul_overflow(entries, (uint64_t)8, &bytes) || bytes > VHDX_MAX_BAT_BYTES) {
        error_setg(errp, "vhdx: cannot grow '%s' to %" PRIu64 " bytes: the BAT would need %"
                   PRIu64 " entries, more than the limit of %" PRIu64 " bytes", bs->filename,
                   size, entries, VHDX_MAX_BAT_BYTES);
        return -EFBIG;
    }
    co_mutex_lock(&s->lock);
    ret = vhdx_alloc_drain(bs); /* the BAT and the space map stay still from here */
    ret = ret ? ret : vhdx_log_start(bs);
    if (ret == 0 && bytes > s->bat_length) {
        ret = move_bat(bs, payload, entries);
    } else if (ret == 0 && size > s->disk_size) {
        ret = entries > s->bat_entries ? grow(bs, payload, entries)
                                       : zero_block_tail(bs, s->disk_size);
    } else if (ret == 0) {
        ret = shrink(bs, size, payload);
    }
    ret = ret ? ret : write_size_item(bs, size);
    /* Durable now: the old BAT region or dropped blocks may be reused (space.c). */
    vhdx_space_invalidate(s);
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
