/*
 * vpc: resize (truncate) of fixed and dynamic VHD images.
 *
 * The size: unless the footer has the largest geometry (65535/16/255, where
 * the current size field rules), the new size is rounded up to a whole CHS
 * geometry, as qemu-img create and Virtual PC do, so that every reader (those
 * that size by geometry and those that use the size field) sees the same
 * disk; a warning names the rounded size. Sizes past the largest geometry
 * switch to it and to the size field, as create does.
 *
 * Dynamic disks: the BAT has max_table_entries entries; growing past them
 * extends the BAT in place. When a data block lies where the larger BAT
 * goes, that block is first moved to the end of the file (as VirtualBox does
 * for VDI): its copy and the footer after it are written and flushed before
 * its BAT entry points at the copy (flushed), and only then is its old place
 * reused. Order of the growth itself: new BAT entries (unused by
 * the old size), flush; the first sector of the dynamic header (entry count
 * and checksum), flush; the footer copy at 0 and the footer at the end,
 * flush. Shrinking unreferences the blocks past the new end first (their
 * space stays in the file: VHD has no free-space map), then the footers.
 *
 * Fixed disks: growing writes the new footer at the new end, marked "grow
 * in progress, old footer at X" in its reserved bytes (FT_GROW_MARK, which
 * other readers ignore), and flushes; then zeroes the old footer's sector
 * (now guest data) and flushes; then writes the footer without the mark and
 * flushes. A crash before the unmarked footer is durable leaves the mark:
 * the next open (vpc_fixed_recover) finds the old footer's sector, if it
 * still holds this disk's footer, and zeroes it (read-write), or reads it as
 * zeroes (read-only), so the grown area always reads zeroes. Shrinking
 * writes the footer at the new end, flushes and truncates the file.
 *
 * Differencing disks keep their parent's size: resizing them is refused.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/vpc-int.h"

/* Writes BAT entries [first, last) (the sectors that hold them, whole). */
static int coroutine_fn write_bat_range(BlockDriverState *bs, uint32_t first, uint32_t last)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t lo = first / 128 * 128;
    uint64_t len = ((uint64_t)last - lo) * 4;
    uint8_t *buf = malloc(len + 1);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t i = lo; i < last; i++) {
        st_be32(buf + (size_t)(i - lo) * 4, s->bat[i]);
    }
    ret = fmt_co_pwrite(bs->file, (int64_t)(s->bat_offset + (uint64_t)lo * 4), (int64_t)len,
                        buf, 0);
    free(buf);
    return ret;
}

/* Zeroes guest bytes [from, end of its block) of a dynamic disk if the block is allocated. */
static int coroutine_fn zero_block_tail(BlockDriverState *bs, uint64_t from)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t block = (uint32_t)(from / s->block_size), in = (uint32_t)(from % s->block_size);

    if (!in || block >= s->bat_entries || s->bat[block] == VHD_BAT_UNUSED) {
        return 0;
    }
    return bdrv_co_pwrite_zeroes(bs->file, (int64_t)s->bat[block] * VHD_SECTOR +
                                 s->bitmap_size + in, s->block_size - in, 0);
}

/* Where the BAT may end: the first data block, or none (UINT64_MAX). */
static uint64_t bat_limit(const BDRVVpcState *s)
{
    uint64_t lim = UINT64_MAX;

    for (uint32_t i = 0; i < s->bat_entries; i++) {
        if (s->bat[i] != VHD_BAT_UNUSED && (uint64_t)s->bat[i] * VHD_SECTOR < lim) {
            lim = (uint64_t)s->bat[i] * VHD_SECTOR;
        }
    }
    return lim;
}

/* Moves the data block that starts at lim (bitmap and data) to the end of the file. */
static int coroutine_fn move_block(BlockDriverState *bs, uint64_t lim, uint8_t *buf)
{
    BDRVVpcState *s = bs->opaque;
    uint64_t len = (uint64_t)s->bitmap_size + s->block_size, to = (uint64_t)s->free_off;
    uint32_t b = 0;
    int ret;

    while (b < s->bat_entries && (uint64_t)s->bat[b] * VHD_SECTOR != lim) {
        b++;
    }
    if (b == s->bat_entries || to / VHD_SECTOR > UINT32_MAX - 1) {
        return -EFBIG;
    }
    ret = fmt_co_pread(bs->file, (int64_t)lim, (int64_t)len, buf);
    ret = ret ? ret : fmt_co_pwrite(bs->file, (int64_t)to, (int64_t)len, buf, 0);
    if (ret < 0) {
        return ret;
    }
    s->free_off = (int64_t)(to + len);
    ret = vpc_write_footers(bs);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        s->bat[b] = (uint32_t)(to / VHD_SECTOR);
        ret = write_bat_range(bs, b, b + 1);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
        if (ret < 0) {
            s->bat[b] = (uint32_t)(lim / VHD_SECTOR);
        }
    }
    return ret;
}

/* Moves the blocks that lie before end (the new end of the BAT) past the last one. */
static int coroutine_fn make_bat_room(BlockDriverState *bs, uint64_t end)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t *buf = NULL;
    uint64_t lim;
    int ret = 0;

    while (ret == 0 && (lim = bat_limit(s)) < end) {
        if (!buf && !(buf = malloc((size_t)s->bitmap_size + s->block_size))) {
            return -ENOMEM;
        }
        ret = move_block(bs, lim, buf);
    }
    free(buf);
    return ret;
}

/* Gives the BAT need entries (unused), in place, or -ENOTSUP. */
static int coroutine_fn grow_bat(BlockDriverState *bs, uint32_t need, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint64_t end = s->bat_offset + (uint64_t)need * 4;
    uint64_t dh_off = ld_be64(s->footer + FT_DATA_OFFSET);
    uint32_t old = s->bat_entries;
    uint32_t *bat;
    uint8_t sec[VHD_SECTOR];
    int ret;

    if (need > VHD_BAT_MAX) {
        error_setg(errp, "vpc: cannot grow '%s': %u BAT entries exceed the limit %llu",
                   bs->filename, need, (unsigned long long)VHD_BAT_MAX);
        return -EINVAL;
    }
    if (dh_off >= s->bat_offset && dh_off < round_up_u64(end, VHD_SECTOR)) {
        error_setg(errp, "vpc: cannot grow '%s': its dynamic header (at %llu) follows the BAT "
                   "where the larger BAT would go", bs->filename, (unsigned long long)dh_off);
        return -ENOTSUP;
    }
    ret = make_bat_room(bs, round_up_u64(end, VHD_SECTOR));
    if (ret < 0) {
        error_setg_errno(errp, ret, "vpc: could not move the data blocks of '%s' that lie "
                         "where its larger BAT goes", bs->filename);
        return ret;
    }
    bat = realloc(s->bat, (size_t)need * 4 + 1);
    if (!bat) {
        return -ENOMEM;
    }
    s->bat = bat;
    for (uint32_t i = old; i < need; i++) {
        s->bat[i] = VHD_BAT_UNUSED;
    }
    s->bat_entries = need;
    ret = write_bat_range(bs, old, need);
    if (ret == 0 && round_up_u64(end, VHD_SECTOR) > (uint64_t)s->free_off) {
        s->free_off = (int64_t)round_up_u64(end, VHD_SECTOR); /* no block after the BAT */
    }
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        /* Entry count and checksum lie in the header's first sector: one atomic write. */
        st_be32(s->dynhdr + DH_MAX_ENTRIES, need);
        vpc_seal_dynhdr(s->dynhdr);
        memcpy(sec, s->dynhdr, VHD_SECTOR);
        ret = fmt_co_pwrite(bs->file, (int64_t)dh_off, VHD_SECTOR, sec, 0);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "vpc: could not grow the BAT of '%s'", bs->filename);
    }
    return ret;
}

/* Dynamic disk: BAT (growth or released blocks) first, then the footers. */
static int coroutine_fn resize_dynamic(BlockDriverState *bs, uint64_t size, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t need = (uint32_t)div_round_up_u64(size, s->block_size);
    uint32_t used = (uint32_t)div_round_up_u64((uint64_t)s->size, s->block_size);
    int ret = 0;

    if (size > (uint64_t)s->size) {
        ret = zero_block_tail(bs, (uint64_t)s->size);
        if (ret == 0 && need > s->bat_entries) {
            return grow_bat(bs, need, errp);
        }
    } else {
        for (uint32_t b = need; b < used && b < s->bat_entries; b++) {
            s->bat[b] = VHD_BAT_UNUSED;
        }
        if (need < used) {
            ret = write_bat_range(bs, need, used < s->bat_entries ? used : s->bat_entries);
            ret = ret ? ret : bdrv_co_flush(bs->file->bs);
        }
        ret = ret ? ret : zero_block_tail(bs, size);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "vpc: could not resize '%s'", bs->filename);
    }
    return ret;
}

static const uint8_t grow_magic[8] = { 'c', 'o', 'b', 'l', 'k', 'g', 'r', 'w' };

/* Marks the footer "grow in progress, old footer at old", or clears the mark (old 0). */
static void set_grow_mark(BDRVVpcState *s, uint64_t old)
{
    if (old) {
        memcpy(s->footer + FT_GROW_MARK, grow_magic, 8);
        st_be64(s->footer + FT_GROW_MARK + 8, old);
    } else {
        memset(s->footer + FT_GROW_MARK, 0, 16);
    }
}

/* Zeroes the old footer's sector (flushed), then drops the mark (flushed). */
static int coroutine_fn finish_grow(BlockDriverState *bs, uint64_t old)
{
    BDRVVpcState *s = bs->opaque;
    int ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)old, VHD_FOOTER_SIZE, 0);

    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        s->stale_footer = false;
        set_grow_mark(s, 0);
        ret = vpc_write_footers(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

int coroutine_fn vpc_fixed_recover(BlockDriverState *bs, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t sec[VHD_FOOTER_SIZE];
    uint64_t old;
    int ret;

    if (memcmp(s->footer + FT_GROW_MARK, grow_magic, 8) != 0) {
        return 0;
    }
    /* The mark is only a hint: an offset that is no sector of the disk is ignored. */
    old = ld_be64(s->footer + FT_GROW_MARK + 8);
    if (old == 0 || old % VHD_SECTOR || old >= (uint64_t)s->size) {
        return 0;
    }
    ret = fmt_co_pread(bs->file, (int64_t)old, VHD_FOOTER_SIZE, sec);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the old footer of '%s'", bs->filename);
        return ret;
    }
    s->stale_footer = !memcmp(sec, "conectix", 8) &&
                      !memcmp(sec + FT_UUID, s->footer + FT_UUID, 16);
    s->stale_off = (int64_t)old;
    if (bs->read_only) {
        return 0; /* reads of that sector give zeroes (vpc_fixed_mask_stale) */
    }
    ret = s->stale_footer ? finish_grow(bs, old) : 0;
    if (ret == 0 && memcmp(s->footer + FT_GROW_MARK, grow_magic, 8) == 0) {
        set_grow_mark(s, 0);
        ret = vpc_write_footers(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not finish the interrupted resize of '%s'",
                         bs->filename);
    }
    return ret;
}

void vpc_fixed_mask_stale(BDRVVpcState *s, int64_t offset, int64_t bytes, IOVector *qiov,
                          size_t qiov_offset)
{
    int64_t lo = s->stale_off, hi = s->stale_off + VHD_FOOTER_SIZE;

    if (!s->stale_footer || offset >= hi || offset + bytes <= lo) {
        return;
    }
    lo = lo > offset ? lo : offset;
    hi = hi < offset + bytes ? hi : offset + bytes;
    iovector_memset(qiov, qiov_offset + (size_t)(lo - offset), 0, (size_t)(hi - lo));
}

/* Fixed disk: the footer moves to the new end. */
static int coroutine_fn resize_fixed(BlockDriverState *bs, uint64_t old, uint64_t size,
                                     Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    int ret;

    s->size = (int64_t)size;
    set_grow_mark(s, size > old ? old : 0);
    ret = vpc_write_footers(bs);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0 && size > old) {
        ret = finish_grow(bs, old);
    } else if (ret == 0) {
        ret = bdrv_co_truncate(bs->file, (int64_t)size + VHD_FOOTER_SIZE, true,
                               PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "vpc: could not resize the fixed disk '%s'", bs->filename);
    }
    return ret;
}

/* The representable size for size bytes, and the geometry to store with it. */
static uint64_t new_geometry(BDRVVpcState *s, uint64_t size, uint32_t *c, uint32_t *h,
                             uint32_t *spt)
{
    uint64_t sectors = size / VHD_SECTOR;
    uint64_t cur = (uint64_t)ld_be16(s->footer + FT_CYLS) * s->footer[FT_HEADS] *
                   s->footer[FT_SECS];

    if (cur != VHD_MAX_CHS_SECTORS && vpc_round_chs(&sectors)) {
        vpc_chs(sectors, c, h, spt);
    } else {
        *c = 65535, *h = 16, *spt = 255;
    }
    return sectors * VHD_SECTOR;
}

static void set_footer_size(BDRVVpcState *s, uint64_t size, uint32_t c, uint32_t h,
                            uint32_t spt)
{
    st_be64(s->footer + FT_CUR_SIZE, size);
    st_be16(s->footer + FT_CYLS, (uint16_t)c);
    s->footer[FT_HEADS] = (uint8_t)h;
    s->footer[FT_SECS] = (uint8_t)spt;
}

int coroutine_fn vpc_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint64_t want = (uint64_t)offset, size, old = (uint64_t)s->size;
    uint8_t saved[VHD_FOOTER_SIZE];
    uint32_t c, h, spt;
    int ret, r;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "vpc: resize with preallocation is not supported");
        return -ENOTSUP;
    }
    if (s->type == VHD_DIFF) {
        error_setg(errp, "vpc: '%s' is a differencing disk: it keeps its parent's size",
                   bs->filename);
        return -ENOTSUP;
    }
    if (want % VHD_SECTOR || want == 0 || want > VHD_MAX_SIZE) {
        error_setg(errp, "vpc: new size %llu of '%s' is not a multiple of %u in 1..%llu",
                   (unsigned long long)want, bs->filename, VHD_SECTOR,
                   (unsigned long long)VHD_MAX_SIZE);
        return -EINVAL;
    }
    size = new_geometry(s, want, &c, &h, &spt);
    if (size != want) {
        coblk_warn("vpc: '%s': the size is rounded up to %llu bytes, the nearest whole CHS "
                   "geometry %u/%u/%u (as Virtual PC and QEMU size VHD disks)", bs->filename,
                   (unsigned long long)size, c, h, spt);
    }
    if (size == old) {
        return 0;
    }
    co_rwlock_wrlock(&s->move_lock); /* no request sees a block while it moves */
    co_mutex_lock(&s->alloc_lock);
    vpc_free_slots_clear(s); /* discarded blocks may lie where the BAT grows: no reuse */
    memcpy(saved, s->footer, VHD_FOOTER_SIZE);
    ret = vpc_commit(bs); /* blocks move and the BAT is rewritten from memory */
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vpc: could not write the BAT of '%s'", bs->filename);
    } else if (s->type == VHD_FIXED) {
        set_footer_size(s, size, c, h, spt);
        ret = resize_fixed(bs, old, size, errp);
    } else {
        /* Moved blocks rewrite the footer: it gets the new size only at the end. */
        ret = resize_dynamic(bs, size, errp);
        if (ret == 0) {
            set_footer_size(s, size, c, h, spt);
            s->size = (int64_t)size;
            ret = vpc_write_footers(bs);
            ret = ret ? ret : bdrv_co_flush(bs->file->bs);
            if (ret < 0) {
                error_setg_errno(errp, ret, "vpc: could not write the footer of '%s'",
                                 bs->filename);
            }
        }
    }
    if (ret < 0) {
        memcpy(s->footer, saved, VHD_FOOTER_SIZE);
        s->size = (int64_t)old;
    }
    /* Blocks moved past the end (or failed to): what reads zero is read again. */
    r = s->type == VHD_FIXED ? 0 : fmt_co_grow_reset(bs->file, &s->grow);
    if (r < 0 && ret == 0) {
        ret = r;
        error_setg_errno(errp, r, "Could not get the size of '%s'", bs->filename);
    }
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->move_lock);
    return ret;
}
