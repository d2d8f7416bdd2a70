/*
 * vpc: discard of whole blocks of dynamic VHD disks.
 *
 * A discard that covers whole blocks of a dynamic disk unmaps them: their
 * BAT entries go back to 0xFFFFFFFF, and the blocks read as zeroes (an
 * unallocated block of a dynamic disk does). Partial blocks, fixed disks and
 * differencing disks (where an unmapped block would read the parent's data)
 * keep their data: discard is advisory there and does nothing.
 *
 * Order: the BAT sectors that name the blocks are written and flushed
 * first; only then is the blocks' space released, so a crash never leaves
 * an entry pointing at released space (a crash before the flush keeps the
 * old data mapped, which a discard allows). Released space:
 * - a block that ends where the next one would be allocated (the footer's
 *   place) is cut off: the footer moves back over it (the copy at 0 and the
 *   footer at the new end, flushed) and the file is truncated; a crash
 *   before the truncation leaves the old footer at the old end, which
 *   describes the same disk;
 * - any other block's range is punched out of the file (it reads zeroes and
 *   takes no host space) and kept on an in-memory list of free slots, which
 *   the next allocations reuse (vpc_alloc_write) before growing the file.
 *   VHD has no free-space map: the list is rebuilt at open from the BAT
 *   (vpc_rebuild_free_slots), so the space is reused after a reopen too,
 *   and for differencing disks (whose discard does nothing) the same rebuild
 *   reclaims the places a completed parent change or a cut allocation left.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/vpc-int.h"

/* The whole blocks inside [offset, offset + bytes) (the last one may be cut by the size). */
static bool vpc_whole_blocks(const BDRVVpcState *s, int64_t offset, int64_t bytes,
                             uint32_t *first, uint32_t *end)
{
    int64_t stop = offset + bytes;
    uint64_t f = div_round_up_u64((uint64_t)offset, s->block_size);
    uint64_t l;

    if (stop >= s->size) {
        stop = (int64_t)round_up_u64((uint64_t)s->size, s->block_size);
    }
    l = (uint64_t)stop / s->block_size;
    if (l > s->bat_entries) {
        l = s->bat_entries;
    }
    if (l <= f) {
        return false;
    }
    *first = (uint32_t)f;
    *end = (uint32_t)l;
    return true;
}

/* Adds the block at sector to the free slots (on failure its space stays unused). */
static void vpc_free_slot_push(BDRVVpcState *s, uint32_t sector)
{
    if (s->n_free == s->cap_free) {
        /* At most one slot per BAT entry: a block is on the list once. */
        uint32_t cap = s->cap_free ? s->cap_free * 2 : 64;
        uint32_t *p;

        cap = cap > s->bat_entries ? s->bat_entries : cap;
        p = cap > s->n_free ? realloc(s->free_slots, (size_t)cap * 4) : NULL;
        if (!p) {
            return;
        }
        s->free_slots = p;
        s->cap_free = cap;
    }
    s->free_slots[s->n_free++] = sector;
}

bool vpc_free_slot_pop(BDRVVpcState *s, int64_t *at)
{
    if (s->n_free == 0) {
        return false;
    }
    *at = (int64_t)s->free_slots[--s->n_free] * VHD_SECTOR;
    return true;
}

void vpc_free_slots_clear(BDRVVpcState *s)
{
    free(s->free_slots);
    s->free_slots = NULL;
    s->n_free = s->cap_free = 0;
}

/* A byte range of the file that metadata or a block uses. */
typedef struct VpcRange {
    uint64_t start, end;
} VpcRange;

static int vpc_range_cmp(const void *a, const void *b)
{
    const VpcRange *x = a, *y = b;

    return x->start < y->start ? -1 : x->start > y->start;
}

/* Adds the block-sized, sector-aligned places inside [from, to) to the free slots. */
static void vpc_carve_slots(BDRVVpcState *s, uint64_t from, uint64_t to)
{
    uint64_t len = (uint64_t)s->bitmap_size + s->block_size;

    for (from = round_up_u64(from, VHD_SECTOR); from + len <= to; from += len) {
        vpc_free_slot_push(s, (uint32_t)(from / VHD_SECTOR));
    }
}

/*
 * Adds to r the data ranges of the parent locators of dynamic header dh that
 * lie inside the file (file_len bytes; locators past it hold nothing of the
 * file, and open refuses them in the header in use). Returns the new count.
 */
static size_t vpc_locator_ranges(const uint8_t *dh, uint64_t file_len, VpcRange *r, size_t n)
{
    for (int i = 0; i < VHD_LOCATORS; i++) {
        const uint8_t *e = dh + DH_LOCATORS + i * DH_LOCATOR_SIZE;
        uint64_t off = ld_be64(e + 16), space = (uint64_t)ld_be32(e + 4) * VHD_SECTOR;
        uint64_t len = ld_be32(e + 8), end;

        /* The data space (sectors, or bytes as some writers store it) and the length. */
        len = space > len ? space : len;
        if (ld_be32(e) == 0 || len == 0 || off >= file_len ||
            check_add_overflow(off, round_up_u64(len, VHD_SECTOR), &end)) {
            continue;
        }
        r[n++] = (VpcRange){ off, end < file_len ? end : file_len };
    }
    return n;
}

/*
 * Rebuilds the free slots of a dynamic or differencing disk at open: the
 * places for a block (bitmap + data, sector-aligned) before the trailing
 * footer (free_off) that neither a BAT entry, the footer copy, the dynamic
 * header, the BAT nor (differencing) the parent locators' data uses. For a
 * differencing disk the dynamic header named by the footer copy at offset 0
 * (other_dh at other_off, when it differs from the header in use: a parent
 * change whose two footer writes a crash separated, see vpc-parent.c) and
 * its locators' data stay used as well, so no reader of either footer finds
 * a block over its header. The slots are blocks discarded by an earlier
 * open of a dynamic disk (their BAT entries were written and flushed before
 * their space was released), the old header and locators a completed
 * parent change left, or blocks an allocation wrote but a crash cut before
 * their BAT entry: nothing maps them, and an allocation rewrites the whole
 * bitmap and block (a differencing disk's bitmap then marks only the new
 * sectors; the others read the parent as before). A differencing disk's
 * discard stays a no-op (vpc_co_pdiscard), so its slots come only from
 * those two sources. Memory: 16 bytes per allocated block (the BAT is
 * capped at open), freed on return; at most one slot per BAT entry is kept
 * (vpc_free_slot_push). Returns 0 or -ENOMEM (then no slot is known: new
 * blocks go at the end).
 */
static int vpc_rebuild_free_slots(BDRVVpcState *s, const uint8_t *other_dh,
                                  uint64_t other_off, uint64_t file_len)
{
    uint64_t len = (uint64_t)s->bitmap_size + s->block_size, cur = 0;
    uint64_t dh = ld_be64(s->footer + FT_DATA_OFFSET);
    VpcRange *r = malloc(((size_t)s->bat_entries + 4 + 2 * VHD_LOCATORS) * sizeof(*r));
    size_t n = 0;

    s->n_free = 0;
    if (!r) {
        return -ENOMEM;
    }
    r[n++] = (VpcRange){ 0, VHD_FOOTER_SIZE };
    r[n++] = (VpcRange){ dh, dh + VHD_DYNHDR_SIZE };   /* inside the file (open checked) */
    r[n++] = (VpcRange){ s->bat_offset,
                         round_up_u64(s->bat_offset + (uint64_t)s->bat_entries * 4, VHD_SECTOR) };
    if (s->type == VHD_DIFF) {
        n = vpc_locator_ranges(s->dynhdr, file_len, r, n);
        if (other_dh && other_off < file_len) {
            uint64_t end = other_off + VHD_DYNHDR_SIZE;   /* other_off < file_len: no overflow */

            r[n++] = (VpcRange){ other_off, end < file_len ? end : file_len };
            n = vpc_locator_ranges(other_dh, file_len, r, n);
        }
    }
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        if (s->bat[i] != VHD_BAT_UNUSED) {
            r[n].start = (uint64_t)s->bat[i] * VHD_SECTOR;
            r[n].end = r[n].start + len;                  /* inside the file (open checked) */
            n++;
        }
    }
    qsort(r, n, sizeof(*r), vpc_range_cmp);
    for (size_t i = 0; i < n; i++) {
        if (r[i].start > cur) {
            vpc_carve_slots(s, cur, r[i].start < (uint64_t)s->free_off ? r[i].start
                                                                       : (uint64_t)s->free_off);
        }
        cur = r[i].end > cur ? r[i].end : cur;
    }
    vpc_carve_slots(s, cur, (uint64_t)s->free_off);
    free(r);
    return 0;
}

/*
 * The free slots at open (vpc_rebuild_free_slots). A differencing disk's
 * footer copy at 0 may name another dynamic header than the one in use (see
 * vpc-parent.c): that one and its locators' data are read (unchecked: they
 * only keep more space used) so that no slot lies over them.
 */
int coroutine_fn vpc_open_free_slots(BlockDriverState *bs, uint64_t file_len,
                                            Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t copy[VHD_FOOTER_SIZE], other[VHD_DYNHDR_SIZE] = { 0 };
    uint64_t dh = ld_be64(s->footer + FT_DATA_OFFSET), other_off = 0;
    bool have_other = false;

    if (s->type == VHD_DIFF && fmt_co_pread(bs->file, 0, VHD_FOOTER_SIZE, copy) == 0 &&
        !memcmp(copy, "conectix", 8)) {
        other_off = ld_be64(copy + FT_DATA_OFFSET);
        have_other = other_off != dh && range_within(other_off, VHD_DYNHDR_SIZE, file_len) &&
                     fmt_co_pread(bs->file, (int64_t)other_off, VHD_DYNHDR_SIZE, other) == 0;
    }
    if (vpc_rebuild_free_slots(s, have_other ? other : NULL, other_off, file_len) < 0) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

/* Whether [lo, hi) of the file holds no metadata: the dynamic header, the BAT. */
static bool vpc_gap_empty(const BDRVVpcState *s, uint64_t lo, uint64_t hi)
{
    uint64_t dh = ld_be64(s->footer + FT_DATA_OFFSET);
    uint64_t bat_end = s->bat_offset + (uint64_t)s->bat_entries * 4;

    return (hi <= dh || lo >= dh + VHD_DYNHDR_SIZE) && (hi <= s->bat_offset || lo >= bat_end);
}

/*
 * Removes the free slot whose block ends at free_off, if any; true if one
 * was. In a dynamic disk (whose discards make the slots), also one that
 * ends just before free_off, where the gap before a block placed there
 * (vpc_end_place) ends, when that gap holds no metadata: nothing else
 * fits in it (a block is longer), and nothing but a differencing disk's
 * parent locators is ever written at free_off.
 */
static bool vpc_free_slot_take_tail(BDRVVpcState *s, int64_t *at)
{
    int64_t len = (int64_t)s->bitmap_size + s->block_size;

    for (uint32_t i = 0; i < s->n_free; i++) {
        int64_t end = (int64_t)s->free_slots[i] * VHD_SECTOR + len;

        if (end == s->free_off ||
            (s->type == VHD_DYNAMIC && end < s->free_off &&
             vpc_end_place(s, end) == s->free_off &&
             vpc_gap_empty(s, (uint64_t)end, (uint64_t)s->free_off))) {
            *at = (int64_t)s->free_slots[i] * VHD_SECTOR;
            s->free_slots[i] = s->free_slots[--s->n_free];
            return true;
        }
    }
    return false;
}

/* Cuts free blocks at the end of the data off the file: footer moved back, flush, truncate. */
static int coroutine_fn vpc_trim_tail(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;
    int64_t old = s->free_off, at;
    int ret;

    while (vpc_free_slot_take_tail(s, &at)) {
        s->free_off = at;
    }
    if (s->free_off == old) {
        return 0;
    }
    ret = vpc_write_footers(bs);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        s->free_off = old; /* the footer at old is still whole: allocate past it */
        return ret;
    }
    ret = bdrv_co_truncate(bs->file, s->free_off + VHD_FOOTER_SIZE, true, PREALLOC_MODE_OFF,
                           0, NULL);
    if (ret == 0) {
        fmt_grow_truncated(&s->grow, (uint64_t)s->free_off + VHD_FOOTER_SIZE);
    }
    return ret;
}

/* Unmaps blocks [first, end): BAT sectors, flush, then their space is released. */
static int coroutine_fn vpc_unmap_blocks(BlockDriverState *bs, uint32_t first, uint32_t end)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t *old = malloc((size_t)(end - first) * 4);
    uint32_t last_sector = UINT32_MAX;
    int ret = 0;

    if (!old) {
        return -ENOMEM;
    }
    for (uint32_t b = first; b < end; b++) {
        old[b - first] = s->bat[b];
        s->bat[b] = VHD_BAT_UNUSED;
    }
    for (uint32_t b = first; b < end && ret == 0; b++) {
        /* One write per BAT sector that changed (128 entries each). */
        if (old[b - first] != VHD_BAT_UNUSED && b / 128 != last_sector) {
            last_sector = b / 128;
            ret = vpc_write_bat_entry(bs, b);
        }
    }
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        /* Memory follows what may be on disk: the old mappings (rewritten by the next write). */
        for (uint32_t b = first; b < end; b++) {
            s->bat[b] = old[b - first];
        }
        free(old);
        return ret;
    }
    for (uint32_t b = first; b < end; b++) {
        if (old[b - first] != VHD_BAT_UNUSED) {
            /* Advisory for the file: the space reads back as whatever, nothing maps it. */
            bdrv_co_pdiscard(bs->file, (int64_t)old[b - first] * VHD_SECTOR,
                             (int64_t)s->bitmap_size + s->block_size);
            vpc_free_slot_push(s, old[b - first]);
        }
    }
    free(old);
    return vpc_trim_tail(bs);
}

int coroutine_fn vpc_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t first, end;
    bool any = false;
    int ret;

    if (s->type != VHD_DYNAMIC || !vpc_whole_blocks(s, offset, bytes, &first, &end)) {
        return 0; /* advisory: partial blocks, fixed and differencing disks keep their data */
    }
    co_rwlock_rdlock(&s->move_lock);
    co_mutex_lock(&s->alloc_lock);
    ret = vpc_alloc_drain(bs); /* no block of the range is being allocated */
    for (uint32_t b = first; ret == 0 && b < end && !any; b++) {
        any = s->bat[b] != VHD_BAT_UNUSED;
    }
    ret = ret == 0 && any ? vpc_unmap_blocks(bs, first, end) : ret;
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->move_lock);
    return ret;
}
