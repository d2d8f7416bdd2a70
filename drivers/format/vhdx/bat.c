/*
 * vhdx: the block allocation table. Payload entries are interleaved with a
 * sector bitmap entry after every chunk_ratio payload entries, where
 * chunk_ratio = 2^23 * logical sector size / block size.
 *
 * A differencing image has a sector bitmap entry after its last chunk too
 * (entries = chunks * (chunk_ratio + 1)).
 *
 * Limits: the entry count is computed with checked arithmetic and must fit
 * the BAT region and VHDX_MAX_BAT_BYTES; every payload entry has a known
 * state (PARTIALLY_PRESENT only in differencing images); a FULLY_PRESENT or
 * PARTIALLY_PRESENT block lies at 1 MiB or more and its used part (the disk
 * may end inside the last block) ends inside the file; a PARTIALLY_PRESENT
 * block's chunk has a SB_PRESENT sector bitmap entry whose 1 MiB block lies
 * at 1 MiB or more inside the file. Sector bitmap entries of a
 * non-differencing image are not used.
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

uint64_t vhdx_bat_entries(const BDRVVhdxState *s, uint64_t payload)
{
    if (s->has_parent) {
        return div_round_up_u64(payload, s->chunk_ratio) * (s->chunk_ratio + 1);
    }
    return payload + (payload - 1) / s->chunk_ratio;
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
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        if (!s->has_parent) {
            break;
        }
        if ((s->bat[vhdx_sb_index(s, block)] & VHDX_BAT_STATE_MASK) != VHDX_SB_PRESENT) {
            error_setg(errp, "vhdx: %s: block %" PRIu64 " is partially present but its sector "
                       "bitmap block is not present", bs->filename, block);
            return -EINVAL;
        }
        /* fall through */
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
        break;
    }
    error_setg(errp, "vhdx: %s: BAT entry of block %" PRIu64 " has state %" PRIu64
               " (not valid in a%s image)", bs->filename, block, state,
               s->has_parent ? " differencing" : " non-differencing");
    return -EINVAL;
}

/* A differencing image's sector bitmap entries: SB_PRESENT ones lie inside the file. */
static int check_sb_entries(BlockDriverState *bs, uint64_t len, uint64_t *end, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;

    for (uint64_t i = s->chunk_ratio; s->has_parent && i < s->bat_entries;
         i += s->chunk_ratio + 1) {
        uint64_t e = s->bat[i], off = e & VHDX_BAT_OFFSET_MASK;

        if ((e & VHDX_BAT_STATE_MASK) == VHDX_SB_NOT_PRESENT) {
            continue;
        }
        if ((e & VHDX_BAT_STATE_MASK) != VHDX_SB_PRESENT || off < VHDX_MiB ||
            !range_within(off, VHDX_MiB, len)) {
            error_setg(errp, "vhdx: %s: sector bitmap entry %" PRIu64 " (%#" PRIx64 ") has a "
                       "bad state or lies outside the file (%" PRIu64 " bytes)", bs->filename,
                       i, e, len);
            return -EINVAL;
        }
        if (off + VHDX_MiB > *end) {
            *end = off + VHDX_MiB;
        }
    }
    return 0;
}

static int bat_geometry(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t bytes;

    s->chunk_ratio = ((1ULL << 23) * s->logical_sector) / s->block_size;
    s->payload_blocks = div_round_up_u64(s->disk_size, s->block_size);
    s->bat_entries = vhdx_bat_entries(s, s->payload_blocks);
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
    ret = check_sb_entries(bs, (uint64_t)len, &end, errp);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t b = 0; b < s->payload_blocks; b++) {
        ret = check_entry(bs, b, s->bat[vhdx_bat_index(s, b)], (uint64_t)len, &end, errp);
        if (ret < 0) {
            return ret;
        }
    }
    s->file_end = round_up_u64(end, VHDX_MiB);
    s->zero_from = s->file_end; /* past every byte of the file */
    return 0;
}

int coroutine_fn vhdx_bat_set(BlockDriverState *bs, uint64_t block, uint64_t entry)
{
    return vhdx_bat_set_idx(bs, vhdx_bat_index(bs->opaque, block), entry);
}

int coroutine_fn vhdx_bat_set_idx(BlockDriverState *bs, uint64_t idx, uint64_t entry)
{
    BDRVVhdxState *s = bs->opaque;
    /* Through the log: its 4 KiB sector; in place: the 512-byte sector. */
    uint64_t unit = s->metadata_log ? VHDX_LOG_SECTOR : 512;
    uint64_t sec = (idx * 8) & ~(unit - 1);
    uint64_t first = sec / 8, old = s->bat[idx];
    uint8_t *buf;
    int ret = vhdx_commit(bs); /* the sector may hold entries of new blocks */

    if (ret < 0) {
        return ret;
    }
    buf = calloc(1, unit);
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

#define LOG_CHUNK (64 * VHDX_KiB) /* BAT bytes per log entry */

/* Writes BAT entries [first, last) whole 4 KiB sectors, in place or through the log. */
int coroutine_fn vhdx_write_bat(BlockDriverState *bs, uint64_t first, uint64_t last, bool log)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t lo = first * 8 / VHDX_LOG_SECTOR * VHDX_LOG_SECTOR;
    uint64_t hi = round_up_u64(last * 8, VHDX_LOG_SECTOR);
    uint8_t *buf;
    int ret = vhdx_commit(bs); /* the sectors may hold entries of new blocks */

    if (ret < 0) {
        return ret;
    }
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

typedef struct Extent {
    uint64_t off, len;
} Extent;

static int cmp_extent(const void *a, const void *b)
{
    uint64_t x = ((const Extent *)a)->off, y = ((const Extent *)b)->off;

    return x < y ? -1 : x > y;
}

static bool overlaps(uint64_t o, uint64_t l, uint64_t ro, uint64_t rl)
{
    return o < ro + rl && ro < o + l;
}

/* The blocks in the file: present payload blocks and sector bitmap blocks. */
static uint64_t collect_extents(const BDRVVhdxState *s, Extent *x)
{
    uint64_t n = 0;

    for (uint64_t b = 0; b < s->payload_blocks; b++) {
        uint64_t e = s->bat[vhdx_bat_index(s, b)], st = e & VHDX_BAT_STATE_MASK;

        if (st == VHDX_PAYLOAD_FULLY_PRESENT || st == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
            x[n++] = (Extent){ e & VHDX_BAT_OFFSET_MASK, s->block_size };
        }
    }
    for (uint64_t i = s->chunk_ratio; s->has_parent && i < s->bat_entries;
         i += s->chunk_ratio + 1) {
        if ((s->bat[i] & VHDX_BAT_STATE_MASK) == VHDX_SB_PRESENT) {
            x[n++] = (Extent){ s->bat[i] & VHDX_BAT_OFFSET_MASK, VHDX_MiB };
        }
    }
    return n;
}

/*
 * Finds blocks (payload and sector bitmap) that overlap each other or the
 * log / BAT / metadata regions (open already checked each entry on its
 * own). Like qemu-img's vhdx check it reports no cluster counts or end
 * offset.
 */
int coroutine_fn vhdx_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVVhdxState *s = bs->opaque;
    Extent *x = malloc((s->bat_entries ? s->bat_entries : 1) * sizeof(*x));
    uint64_t n;

    if (!x) {
        res->check_errors++;
        return -ENOMEM;
    }
    co_mutex_lock(&s->lock);
    (void)vhdx_alloc_drain(bs); /* entries of allocations in flight are not set yet */
    n = collect_extents(s, x);
    co_mutex_unlock(&s->lock);
    qsort(x, n, sizeof(*x), cmp_extent);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t o = x[i].off, l = x[i].len;

        if ((i + 1 < n && x[i + 1].off < o + l) ||
            overlaps(o, l, s->bat_offset, s->bat_length) ||
            overlaps(o, l, s->meta_offset, s->meta_length) ||
            overlaps(o, l, s->hdr.log_offset, s->hdr.log_length)) {
            res->corruptions++;
            bdrv_check_report(res, "vhdx: %s: the block at %" PRIu64 " overlaps another block "
                              "or a metadata region", bs->filename, o);
        }
    }
    free(x);
    return 0;
}
