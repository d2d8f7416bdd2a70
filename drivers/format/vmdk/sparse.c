/*
 * Hosted sparse extents ("KDMV"): the header, the grain directory (GD) and
 * its redundant copy, grain tables (GT) through a small shared cache, and
 * grain allocation.
 *
 * Limits checked at open (see vmdk-int.h): version 1..3; numGTEsPerGT
 * 1..512; grainSize a power of two of 1..32768 sectors; capacity at most
 * BDRV_MAX_LENGTH; GD at most 32 MiB and, like every grain table it names,
 * inside the file; compressAlgorithm 0 or 1 (deflate); a stream footer (GD at
 * the end) must carry a footer marker and a valid copy of the header.
 * Grain table entries are checked when used: a grain past the end of the
 * allocated file area fails the request with -EIO.
 *
 * Crash safety: a new grain (and a new grain table) is written and flushed
 * before the table entry (directory entry) that points at it is written,
 * so a crash leaves at worst a leaked grain, never an entry pointing at
 * unwritten data.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vmdk/vmdk-int.h"

typedef struct SparseHeader {
    uint32_t magic, version, flags, gtes;
    uint64_t capacity, grain, desc_off, desc_size, rgd_off, gd_off, overhead;
    uint16_t compress;
} SparseHeader;

static bool parse_header(const uint8_t *buf, SparseHeader *h)
{
    ByteCursor c = bcur_init(buf, 512);
    uint8_t unclean;

    rd_le32(&c, &h->magic);
    rd_le32(&c, &h->version);
    rd_le32(&c, &h->flags);
    rd_le64(&c, &h->capacity);
    rd_le64(&c, &h->grain);
    rd_le64(&c, &h->desc_off);
    rd_le64(&c, &h->desc_size);
    rd_le32(&c, &h->gtes);
    rd_le64(&c, &h->rgd_off);
    rd_le64(&c, &h->gd_off);
    rd_le64(&c, &h->overhead);
    rd_u8(&c, &unclean);
    bcur_skip(&c, 4);
    rd_le16(&c, &h->compress);
    return bcur_ok(&c);
}

void vmdk_sparse_header(uint8_t hdr[512], const VmdkExtent *e, uint64_t capacity,
                        uint64_t desc_sector, uint64_t desc_sectors, uint64_t overhead)
{
    memset(hdr, 0, 512);
    st_le32(hdr + 0, VMDK4_MAGIC);
    st_le32(hdr + 4, e->version);
    st_le32(hdr + 8, e->flags);
    st_le64(hdr + 12, capacity);
    st_le64(hdr + 20, e->grain_size / VMDK_SECTOR);
    st_le64(hdr + 28, desc_sector);
    st_le64(hdr + 36, desc_sectors);
    st_le32(hdr + 44, e->gtes_per_gt);
    st_le64(hdr + 48, e->rgd_offset / VMDK_SECTOR);
    st_le64(hdr + 56, e->gd_offset / VMDK_SECTOR);
    st_le64(hdr + 64, overhead);
    hdr[73] = '\n';
    hdr[74] = ' ';
    hdr[75] = '\r';
    hdr[76] = '\n';
    st_le16(hdr + 77, e->compressed ? VMDK_COMPRESS_DEFLATE : VMDK_COMPRESS_NONE);
}

/* streamOptimized with the GD at the end: the footer is a copy of the header. */
static int read_footer(VmdkExtent *e, const char *name, uint64_t len, SparseHeader *h,
                       Error **errp)
{
    uint8_t buf[1024];
    uint32_t type;

    if (!(h->flags & VMDK4_FLAG_MARKER) || len < 3 * VMDK_SECTOR) {
        error_setg(errp, "vmdk: %s: gdOffset is GD_AT_END but the extent has no footer", name);
        return -EINVAL;
    }
    if (vmdk_pread_sync(e->child, len - 3 * VMDK_SECTOR, buf, sizeof(buf)) < 0) {
        error_setg(errp, "vmdk: %s: could not read the footer", name);
        return -EIO;
    }
    type = ld_le32(buf + 12);
    if (ld_le32(buf + 8) != 0 || type != VMDK_MARKER_FOOTER) {
        error_setg(errp, "vmdk: %s: no footer marker before the end of the stream "
                   "(type %u)", name, type);
        return -EINVAL;
    }
    if (!parse_header(buf + 512, h) || h->magic != VMDK4_MAGIC || h->gd_off == VMDK_GD_AT_END) {
        error_setg(errp, "vmdk: %s: the stream footer is not a valid header", name);
        return -EINVAL;
    }
    return 0;
}

static int check_header(const SparseHeader *h, const char *name, Error **errp)
{
    if (h->magic != VMDK4_MAGIC) {
        error_setg(errp, "vmdk: %s: bad magic 0x%08x in the sparse extent header%s", name,
                   h->magic, h->magic == VMDK3_MAGIC ? " (COWD/vmfsSparse is not supported)"
                                                     : "");
        return h->magic == VMDK3_MAGIC ? -ENOTSUP : -EINVAL;
    }
    if (h->version < 1 || h->version > 3) {
        error_setg(errp, "vmdk: %s: unsupported sparse extent version %u (1..3 are)", name,
                   h->version);
        return -ENOTSUP;
    }
    if (!is_power_of_2_u64(h->grain) || h->grain > VMDK_MAX_GRAIN_SECTORS) {
        error_setg(errp, "vmdk: %s: grainSize %" PRIu64 " is not a power of two in 1..%llu "
                   "sectors", name, h->grain, VMDK_MAX_GRAIN_SECTORS);
        return -EINVAL;
    }
    if (h->gtes == 0 || h->gtes > VMDK_MAX_GTES) {
        error_setg(errp, "vmdk: %s: numGTEsPerGT %u is not in 1..%d", name, h->gtes,
                   VMDK_MAX_GTES);
        return -EINVAL;
    }
    if (h->capacity > (uint64_t)BDRV_MAX_LENGTH / VMDK_SECTOR) {
        error_setg(errp, "vmdk: %s: capacity %" PRIu64 " sectors is too large", name,
                   h->capacity);
        return -EINVAL;
    }
    if (h->compress > VMDK_COMPRESS_DEFLATE ||
        ((h->flags & VMDK4_FLAG_COMPRESS) && h->compress != VMDK_COMPRESS_DEFLATE)) {
        error_setg(errp, "vmdk: %s: unsupported compressAlgorithm %u", name, h->compress);
        return -ENOTSUP;
    }
    return 0;
}

/* Loads a directory of e->gd_entries at off; every table it names lies in the file. */
static int load_gd(VmdkExtent *e, const char *name, const char *which, uint64_t off,
                   uint64_t len, uint32_t **out, Error **errp)
{
    uint64_t bytes = e->gd_entries * 4, gt_bytes = (uint64_t)e->gtes_per_gt * 4;
    uint32_t *gd;

    if (!range_within(off, bytes, len)) {
        error_setg(errp, "vmdk: %s: %s at byte %" PRIu64 " (%" PRIu64 " bytes) lies past the "
                   "end of the file (%" PRIu64 " bytes)", name, which, off, bytes, len);
        return -EINVAL;
    }
    if (bytes == 0) {
        *out = NULL;
        return 0;
    }
    gd = malloc(bytes);
    if (!gd) {
        error_setg(errp, "vmdk: %s: out of memory for the %s", name, which);
        return -ENOMEM;
    }
    if (vmdk_pread_sync(e->child, off, gd, bytes) < 0) {
        free(gd);
        error_setg(errp, "vmdk: %s: could not read the %s", name, which);
        return -EIO;
    }
    for (uint64_t i = 0; i < e->gd_entries; i++) {
        gd[i] = ld_le32(&gd[i]);
        if (gd[i] && !range_within((uint64_t)gd[i] * VMDK_SECTOR, gt_bytes, len)) {
            error_setg(errp, "vmdk: %s: %s entry %" PRIu64 " points at sector %u, past the "
                       "end of the file", name, which, i, gd[i]);
            free(gd);
            return -EINVAL;
        }
    }
    *out = gd;
    return 0;
}

static int setup_tables(VmdkExtent *e, const SparseHeader *h, const char *name, uint64_t len,
                        Error **errp)
{
    uint64_t grains = div_round_up_u64(h->capacity, h->grain);
    int ret;

    e->gd_entries = div_round_up_u64(grains, h->gtes);
    if (e->gd_entries * 4 > VMDK_MAX_GD_BYTES) {
        error_setg(errp, "vmdk: %s: grain directory of %" PRIu64 " entries exceeds the limit "
                   "of %llu bytes", name, e->gd_entries, VMDK_MAX_GD_BYTES);
        return -EINVAL;
    }
    if (h->gd_off > UINT64_MAX / VMDK_SECTOR || h->rgd_off > UINT64_MAX / VMDK_SECTOR) {
        error_setg(errp, "vmdk: %s: gdOffset %" PRIu64 " is out of range", name, h->gd_off);
        return -EINVAL;
    }
    e->gd_offset = h->gd_off * VMDK_SECTOR;
    ret = load_gd(e, name, "grain directory", e->gd_offset, len, &e->gd, errp);
    if (ret < 0) {
        return ret;
    }
    if ((h->flags & VMDK4_FLAG_RGD) && h->rgd_off) {
        e->rgd_offset = h->rgd_off * VMDK_SECTOR;
        return load_gd(e, name, "redundant grain directory", e->rgd_offset, len, &e->rgd,
                       errp);
    }
    return 0;
}

int vmdk_sparse_open(BlockDriverState *bs, VmdkExtent *e, Error **errp)
{
    const char *name = e->child->bs->filename;
    int64_t len = bdrv_getlength(e->child->bs);
    uint8_t buf[512];
    SparseHeader h;
    int ret;

    if (len < 0) {
        error_setg(errp, "vmdk: %s: could not get the file size", name);
        return (int)len;
    }
    if (len < 512 || vmdk_pread_sync(e->child, 0, buf, 512) < 0 || !parse_header(buf, &h)) {
        error_setg(errp, "vmdk: %s: could not read the sparse extent header", name);
        return -EINVAL;
    }
    ret = check_header(&h, name, errp);
    if (ret < 0) {
        return ret;
    }
    if (h.gd_off == VMDK_GD_AT_END) {
        ret = read_footer(e, name, (uint64_t)len, &h, errp);
        if (ret < 0 || (ret = check_header(&h, name, errp)) < 0) {
            return ret;
        }
    }
    e->version = h.version;
    e->flags = h.flags;
    e->grain_size = h.grain * VMDK_SECTOR;
    e->gtes_per_gt = h.gtes;
    e->compressed = (h.flags & VMDK4_FLAG_COMPRESS) != 0;
    e->markers = (h.flags & VMDK4_FLAG_MARKER) != 0;
    if (e->length == 0) {
        e->length = h.capacity * VMDK_SECTOR;
    } else if (e->length > h.capacity * VMDK_SECTOR) {
        error_setg(errp, "vmdk: %s: the descriptor gives the extent %" PRIu64 " sectors but its "
                   "header only %" PRIu64, name, e->length / VMDK_SECTOR, h.capacity);
        return -EINVAL;
    }
    e->next_alloc = round_up_u64((uint64_t)len, VMDK_SECTOR);
    /*
     * A stream ends with an end-of-stream marker (a zero sector). New grains
     * go after it, never over it: a zero last sector could also end a grain.
     */
    return setup_tables(e, &h, name, (uint64_t)len, errp);
}

/* ---------------------------------------------------------------------- */
/* Grain tables */

static VmdkGtSlot *gt_find(BDRVVmdkState *s, int idx, uint64_t gt_index)
{
    for (int i = 0; i < VMDK_GT_CACHE_SLOTS; i++) {
        VmdkGtSlot *t = &s->gt_cache[i];

        if (t->extent == idx && t->gt_index == gt_index) {
            return t;
        }
    }
    return NULL;
}

/*
 * True if the cached table t is ahead of the file. The units of e->dirty are
 * whole grain tables (gt_index): 64 of them hold 64 tables' worth of a
 * sequential stream (2 GiB with 64 KiB grains) before a full set forces a
 * commit mid-stream.
 */
static bool slot_dirty(const BDRVVmdkState *s, const VmdkGtSlot *t)
{
    const VmdkExtent *e = t->extent >= 0 ? s->extents[t->extent] : NULL;

    return e && fmt_defer_pending(&e->dirty) && fmt_defer_has(&e->dirty, t->gt_index);
}

/* The least recently used slot whose table is not dirty, or NULL. */
static VmdkGtSlot *gt_victim(BDRVVmdkState *s)
{
    VmdkGtSlot *t = NULL;

    for (int i = 0; i < VMDK_GT_CACHE_SLOTS; i++) {
        if ((!t || s->gt_cache[i].lru < t->lru) && !slot_dirty(s, &s->gt_cache[i])) {
            t = &s->gt_cache[i];
        }
    }
    return t;
}

static int coroutine_fn gt_load(BDRVVmdkState *s, int idx, uint64_t gt_index, VmdkGtSlot **out)
{
    VmdkExtent *e = s->extents[idx];
    VmdkGtSlot *t = gt_find(s, idx, gt_index);
    int ret;

    if (!t) {
        t = gt_victim(s);
        if (!t) {
            /* Every cached table is dirty: write them (a dirty table never leaves). */
            ret = vmdk_commit_all(s);
            if (ret < 0) {
                return ret;
            }
            t = gt_victim(s);
        }
        t->extent = -1;
        ret = vmdk_co_pread(e->child, (uint64_t)e->gd[gt_index] * VMDK_SECTOR, t->gte,
                            (size_t)e->gtes_per_gt * 4);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t i = 0; i < e->gtes_per_gt; i++) {
            t->gte[i] = ld_le32(&t->gte[i]);
        }
        t->extent = idx;
        t->gt_index = gt_index;
    }
    t->lru = ++s->lru_clock;
    *out = t;
    return 0;
}

int coroutine_fn vmdk_gte_lookup(BDRVVmdkState *s, int idx, uint64_t off, uint32_t *gte,
                                 VmdkGtSlot **slot)
{
    VmdkExtent *e = s->extents[idx];
    uint64_t grain = off / e->grain_size;
    uint64_t gt_index = grain / e->gtes_per_gt;
    int ret;

    *gte = 0;
    *slot = NULL;
    if (gt_index >= e->gd_entries) {
        return -EIO;
    }
    if (!e->gd[gt_index]) {
        return 0;
    }
    ret = gt_load(s, idx, gt_index, slot);
    if (ret < 0) {
        return ret;
    }
    *gte = (*slot)->gte[grain % e->gtes_per_gt];
    return 0;
}

/* Appends a zeroed table of gtes_per_gt entries; returns its sector or -errno. */
static int64_t coroutine_fn alloc_gt(VmdkExtent *e)
{
    uint64_t bytes = round_up_u64((uint64_t)e->gtes_per_gt * 4, VMDK_SECTOR);
    uint64_t off = e->next_alloc;
    int ret;

    if ((off + bytes) / VMDK_SECTOR > UINT32_MAX) {
        return -ENOSPC;
    }
    ret = bdrv_co_pwrite_zeroes(e->child, (int64_t)off, (int64_t)bytes, 0);
    if (ret < 0) {
        return ret;
    }
    e->next_alloc += bytes;
    return (int64_t)(off / VMDK_SECTOR);
}

/* Gives the grain table gt_index a table (and a redundant one), flushed before the GD. */
static int coroutine_fn ensure_gt(VmdkExtent *e, uint64_t gt_index)
{
    int64_t gt, rgt = 0;
    uint8_t le[4];
    int ret;

    if (e->gd[gt_index]) {
        return 0;
    }
    gt = alloc_gt(e);
    if (gt < 0) {
        return (int)gt;
    }
    if (e->rgd && (rgt = alloc_gt(e)) < 0) {
        return (int)rgt;
    }
    ret = bdrv_co_flush(e->child->bs);
    if (ret < 0) {
        return ret;
    }
    st_le32(le, (uint32_t)gt);
    ret = vmdk_co_pwrite(e->child, e->gd_offset + gt_index * 4, le, 4);
    if (ret < 0) {
        return ret;
    }
    e->gd[gt_index] = (uint32_t)gt;
    if (e->rgd) {
        st_le32(le, (uint32_t)rgt);
        ret = vmdk_co_pwrite(e->child, e->rgd_offset + gt_index * 4, le, 4);
        if (ret < 0) {
            return ret;
        }
        e->rgd[gt_index] = (uint32_t)rgt;
    }
    return 0;
}

/* Room for n entries in the directory at off that now has old entries (its last sector). */
static bool gd_room(uint64_t off, uint64_t old, uint64_t n)
{
    return off + n * 4 <= round_up_u64(off + old * 4, VMDK_SECTOR);
}

/* Writes directory entries [first, last) of dir (host order) at off. */
static int coroutine_fn write_gd_range(VmdkExtent *e, uint64_t off, const uint32_t *dir,
                                       uint64_t first, uint64_t last)
{
    uint8_t *buf = malloc((size_t)(last - first) * 4 + 1);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    for (uint64_t i = first; i < last; i++) {
        st_le32(buf + (i - first) * 4, dir[i]);
    }
    ret = vmdk_co_pwrite(e->child, off + first * 4, buf, (size_t)(last - first) * 4);
    free(buf);
    return ret;
}

/* Appends dir (n entries, zero-padded to a sector); *at gets its byte offset. */
static int coroutine_fn append_gd(VmdkExtent *e, const uint32_t *dir, uint64_t n, uint64_t *at)
{
    uint64_t bytes = round_up_u64(n * 4, VMDK_SECTOR);
    uint8_t *buf = calloc(1, (size_t)bytes);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    if ((e->next_alloc + bytes) / VMDK_SECTOR > UINT32_MAX) {
        free(buf);
        return -ENOSPC;
    }
    for (uint64_t i = 0; i < n; i++) {
        st_le32(buf + i * 4, dir[i]);
    }
    *at = e->next_alloc;
    ret = vmdk_co_pwrite(e->child, *at, buf, (size_t)bytes);
    free(buf);
    if (ret == 0) {
        e->next_alloc += bytes;
    }
    return ret;
}

/*
 * Moves the directories (n entries, their new tables already flushed) to the
 * end of the file: both written and flushed, then the header's gdOffset and
 * rgdOffset (one sector, atomic) and a flush. Before the header write the
 * copies are unused space past the old end; after it the old directories
 * are (a leak: VMDK has no free-space map).
 */
static int coroutine_fn move_gd(VmdkExtent *e, uint64_t n)
{
    uint64_t gd_at, rgd_at = 0;
    uint8_t hdr[512];
    int ret = append_gd(e, e->gd, n, &gd_at);

    if (ret == 0 && e->rgd) {
        ret = append_gd(e, e->rgd, n, &rgd_at);
    }
    ret = ret ? ret : bdrv_co_flush(e->child->bs);
    ret = ret ? ret : vmdk_co_pread(e->child, 0, hdr, sizeof(hdr));
    if (ret < 0) {
        return ret;
    }
    st_le64(hdr + 56, gd_at / VMDK_SECTOR);
    if (e->rgd) {
        st_le64(hdr + 48, rgd_at / VMDK_SECTOR);
    }
    ret = vmdk_co_pwrite(e->child, 0, hdr, sizeof(hdr));
    ret = ret ? ret : bdrv_co_flush(e->child->bs);
    if (ret == 0) {
        e->gd_offset = gd_at;
        e->rgd_offset = e->rgd ? rgd_at : e->rgd_offset;
    }
    return ret;
}

int coroutine_fn vmdk_sparse_grow_gd(VmdkExtent *e, uint64_t n)
{
    uint64_t old = e->gd_entries;
    uint32_t *gd, *rgd;
    bool move;
    int ret = 0;

    if (n <= old) {
        return 0;
    }
    if (e->compressed || e->markers || n * 4 > VMDK_MAX_GD_BYTES) {
        return -ENOTSUP;
    }
    move = !gd_room(e->gd_offset, old, n) || (e->rgd && !gd_room(e->rgd_offset, old, n));
    gd = realloc(e->gd, (size_t)n * 4);
    if (!gd) {
        return -ENOMEM;
    }
    e->gd = gd;
    if (e->rgd) {
        rgd = realloc(e->rgd, (size_t)n * 4);
        if (!rgd) {
            return -ENOMEM;
        }
        e->rgd = rgd;
    }
    /* New tables (zeroed, flushed) before the directory entries that name them. */
    for (uint64_t i = old; i < n && ret == 0; i++) {
        int64_t gt = alloc_gt(e), rgt = e->rgd && gt >= 0 ? alloc_gt(e) : 0;

        ret = gt < 0 ? (int)gt : rgt < 0 ? (int)rgt : 0;
        e->gd[i] = gt < 0 ? 0 : (uint32_t)gt;
        if (e->rgd) {
            e->rgd[i] = rgt < 0 ? 0 : (uint32_t)rgt;
        }
    }
    ret = ret ? ret : bdrv_co_flush(e->child->bs);
    if (move) {
        ret = ret ? ret : move_gd(e, n);
    } else {
        ret = ret ? ret : write_gd_range(e, e->gd_offset, e->gd, old, n);
        if (ret == 0 && e->rgd) {
            ret = write_gd_range(e, e->rgd_offset, e->rgd, old, n);
        }
        ret = ret ? ret : bdrv_co_flush(e->child->bs);
    }
    if (ret == 0) {
        e->gd_entries = n;
    }
    return ret;
}

int coroutine_fn vmdk_sparse_set_capacity(VmdkExtent *e, uint64_t sectors)
{
    uint8_t hdr[512];
    int ret = vmdk_co_pread(e->child, 0, hdr, sizeof(hdr));

    if (ret == 0) {
        st_le64(hdr + 12, sectors);
        ret = vmdk_co_pwrite(e->child, 0, hdr, sizeof(hdr));
    }
    return ret ? ret : bdrv_co_flush(e->child->bs);
}

/*
 * One write for the entries of a grain table and one for those of its
 * redundant copy, however many neighbouring entries change (an allocating
 * write of many grains sets them all at once). The cache gets the values
 * once the primary table has them.
 */
int coroutine_fn vmdk_gte_update_range(BDRVVmdkState *s, int idx, uint64_t gt_index,
                                       uint32_t pos, uint32_t n, const uint32_t *vals)
{
    VmdkExtent *e = s->extents[idx];
    uint8_t le[VMDK_MAX_GTES * 4];
    VmdkGtSlot *t;
    int ret;

    if (gt_index >= e->gd_entries || n == 0 || pos > e->gtes_per_gt ||
        n > e->gtes_per_gt - pos) {
        return -EIO;
    }
    ret = ensure_gt(e, gt_index);
    ret = ret ? ret : gt_load(s, idx, gt_index, &t);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t i = 0; i < n; i++) {
        st_le32(le + i * 4, vals[i]);
    }
    ret = vmdk_co_pwrite(e->child, (uint64_t)e->gd[gt_index] * VMDK_SECTOR + pos * 4, le,
                         (size_t)n * 4);
    if (ret < 0) {
        return ret;
    }
    memcpy(&t->gte[pos], vals, (size_t)n * 4);
    if (e->rgd && e->rgd[gt_index]) {
        ret = vmdk_co_pwrite(e->child, (uint64_t)e->rgd[gt_index] * VMDK_SECTOR + pos * 4, le,
                             (size_t)n * 4);
    }
    return ret;
}

int coroutine_fn vmdk_gte_defer(BDRVVmdkState *s, int idx, uint64_t gt_index, uint32_t pos,
                                uint32_t n, const uint32_t *vals)
{
    VmdkExtent *e = s->extents[idx];
    VmdkGtSlot *t;
    int ret;

    if (gt_index >= e->gd_entries || n == 0 || pos > e->gtes_per_gt ||
        n > e->gtes_per_gt - pos) {
        return -EIO;
    }
    ret = ensure_gt(e, gt_index);
    if (ret == 0 && !fmt_defer_has_room(&e->dirty, gt_index, 1)) {
        ret = vmdk_commit_extent(s, idx);
    }
    ret = ret ? ret : gt_load(s, idx, gt_index, &t);
    if (ret < 0) {
        return ret;
    }
    memcpy(&t->gte[pos], vals, (size_t)n * 4);
    return fmt_defer_add(&e->dirty, gt_index, 1);
}

typedef struct GtCommit {
    BDRVVmdkState *s;
    int idx;
} GtCommit;

/* FmtDeferWriteFn: grain tables [first, first + count), whole, from the cache. */
static int coroutine_fn write_gt_units(void *opaque, uint64_t first, uint32_t count)
{
    GtCommit *c = opaque;
    VmdkExtent *e = c->s->extents[c->idx];
    size_t bytes = (size_t)e->gtes_per_gt * 4;
    uint8_t le[VMDK_MAX_GTES * 4];
    int ret = 0;

    for (uint64_t gt = first; gt < first + count && ret == 0; gt++) {
        VmdkGtSlot *t = gt_find(c->s, c->idx, gt);

        if (!t || gt >= e->gd_entries || !e->gd[gt]) {
            return -EIO; /* cannot happen: a dirty table stays cached */
        }
        for (uint32_t i = 0; i < e->gtes_per_gt; i++) {
            st_le32(le + i * 4, t->gte[i]);
        }
        ret = vmdk_co_pwrite(e->child, (uint64_t)e->gd[gt] * VMDK_SECTOR, le, bytes);
        if (ret == 0 && e->rgd && e->rgd[gt]) {
            ret = vmdk_co_pwrite(e->child, (uint64_t)e->rgd[gt] * VMDK_SECTOR, le, bytes);
        }
    }
    return ret;
}

int coroutine_fn vmdk_commit_extent(BDRVVmdkState *s, int idx)
{
    VmdkExtent *e = s->extents[idx];
    GtCommit c = { s, idx };

    if (e->type != VMDK_EXT_SPARSE || !fmt_defer_pending(&e->dirty)) {
        return 0;
    }
    return fmt_defer_commit(&e->dirty, e->child, write_gt_units, &c);
}

int coroutine_fn vmdk_commit_all(BDRVVmdkState *s)
{
    int ret = 0;

    for (int i = 0; i < s->n_extents; i++) {
        int r = vmdk_commit_extent(s, i);

        ret = ret ? ret : r;
    }
    return ret;
}

int coroutine_fn vmdk_gte_update(BDRVVmdkState *s, int idx, uint64_t off, uint32_t value)
{
    VmdkExtent *e = s->extents[idx];
    uint64_t grain = off / e->grain_size;

    return vmdk_gte_update_range(s, idx, grain / e->gtes_per_gt,
                                 (uint32_t)(grain % e->gtes_per_gt), 1, &value);
}

/* ---------------------------------------------------------------------- */
/* Data */

int coroutine_fn vmdk_read_below(BlockDriverState *bs, uint64_t guest_off, uint64_t bytes,
                                 uint8_t *buf)
{
    IOVector qiov;
    int64_t blen;
    uint64_t n = 0;

    memset(buf, 0, bytes);
    if (!bs->backing) {
        return 0;
    }
    blen = bdrv_co_getlength(bs->backing->bs);
    if (blen < 0) {
        return (int)blen;
    }
    if (guest_off < (uint64_t)blen) {
        n = bytes < (uint64_t)blen - guest_off ? bytes : (uint64_t)blen - guest_off;
    }
    if (!n) {
        return 0;
    }
    iovector_init_buf(&qiov, buf, n);
    return bdrv_co_preadv(bs->backing, (int64_t)guest_off, (int64_t)n, &qiov, 0);
}

/* Reads an unallocated range: from the backing file (zeroes past its end) or zeroes. */
static int coroutine_fn read_below_qiov(BlockDriverState *bs, uint64_t guest_off,
                                        uint64_t bytes, IOVector *qiov, size_t qoff)
{
    int64_t blen;
    uint64_t n = 0;

    if (bs->backing) {
        blen = bdrv_co_getlength(bs->backing->bs);
        if (blen < 0) {
            return (int)blen;
        }
        if (guest_off < (uint64_t)blen) {
            n = bytes < (uint64_t)blen - guest_off ? bytes : (uint64_t)blen - guest_off;
        }
    }
    if (n) {
        int ret = bdrv_co_preadv_part(bs->backing, (int64_t)guest_off, (int64_t)n, qiov, qoff,
                                      0);
        if (ret < 0) {
            return ret;
        }
    }
    iovector_memset(qiov, qoff + n, 0, bytes - n);
    return 0;
}

static int coroutine_fn read_grain_part(BlockDriverState *bs, int idx, uint64_t off, uint64_t n,
                                        uint32_t gte, IOVector *qiov, size_t qoff)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    uint64_t in = off % e->grain_size, host;
    uint8_t *buf;
    int ret;

    if (gte == 0) {
        return read_below_qiov(bs, e->start + off, n, qiov, qoff);
    }
    if (vmdk_gte_is_zero(e, gte)) {
        iovector_memset(qiov, qoff, 0, n);
        return 0;
    }
    if (e->compressed) {
        buf = malloc(e->grain_size);
        if (!buf) {
            return -ENOMEM;
        }
        ret = vmdk_stream_read_grain(e, off / e->grain_size, gte, buf);
        if (ret == 0) {
            iovector_from_buf(qiov, qoff, buf + in, n);
        }
        free(buf);
        return ret;
    }
    ret = vmdk_grain_host(e, gte, &host);
    if (ret < 0) {
        return ret;
    }
    return bdrv_co_preadv_part(e->child, (int64_t)(host + in), (int64_t)n, qiov, qoff, 0);
}

/*
 * The common read hit, without the lock (as qcow2's): true, with the host
 * offset of extent byte off in *host, if its grain is a plain allocated one
 * in a cached grain table, no allocation of the grain is in flight and no
 * coroutine holds s->lock. A graph runs in one thread, so while no coroutine
 * is in the middle of a metadata update (they hold s->lock) and nothing
 * yields between the lookup and the read's submission, the table is
 * consistent. Anything else (absent, zeroed, compressed or bad entries) goes
 * the locked way, which reports corruption. The host range is checked
 * against the allocated area (vmdk_grain_host).
 */
bool vmdk_gte_plain_hit(BDRVVmdkState *s, int idx, uint64_t off, uint64_t *host)
{
    VmdkExtent *e = s->extents[idx];
    uint64_t grain = off / e->grain_size, gt_index = grain / e->gtes_per_gt;
    VmdkGtSlot *t;
    uint32_t gte;

    if (co_mutex_is_locked(&s->lock) || e->compressed || gt_index >= e->gd_entries ||
        !e->gd[gt_index] || fmt_inflight_busy(&s->allocs, vmdk_grain_unit(e, off)) ||
        !(t = gt_find(s, idx, gt_index))) {
        return false;
    }
    gte = t->gte[grain % e->gtes_per_gt];
    if (vmdk_gte_is_zero(e, gte) || vmdk_grain_host(e, gte, host) < 0) {
        return false;
    }
    t->lru = ++s->lru_clock;
    *host += off % e->grain_size;
    return true;
}

int coroutine_fn vmdk_sparse_preadv(BlockDriverState *bs, int idx, uint64_t off, uint64_t bytes,
                                    IOVector *qiov, size_t qoff)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];

    while (bytes) {
        uint64_t in = off % e->grain_size, host;
        uint64_t n = bytes < e->grain_size - in ? bytes : e->grain_size - in;
        VmdkGtSlot *slot;
        uint32_t gte;
        int ret;

        if (vmdk_gte_plain_hit(s, idx, off, &host)) {
            ret = bdrv_co_preadv_checked(e->child, (int64_t)host, (int64_t)n, qiov, qoff);
        } else {
            co_mutex_lock(&s->lock);
            vmdk_wait_grain(s, e, off);
            ret = vmdk_gte_lookup(s, idx, off, &gte, &slot);
            co_mutex_unlock(&s->lock);
            if (ret == 0) {
                ret = read_grain_part(bs, idx, off, n, gte, qiov, qoff);
            }
        }
        if (ret < 0) {
            return ret;
        }
        off += n;
        qoff += n;
        bytes -= n;
    }
    return 0;
}

/* Status of one grain and of the following grains in the same state. */
int coroutine_fn vmdk_sparse_block_status(BlockDriverState *bs, int idx, uint64_t off,
                                          uint64_t bytes, int64_t *pnum, int64_t *map,
                                          BlockDriverState **file)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    uint64_t in = off % e->grain_size, done = 0, first_host = 0;
    int status = -1, ret = 0;

    co_mutex_lock(&s->lock);
    while (done < bytes) {
        uint64_t n = e->grain_size - in < bytes - done ? e->grain_size - in : bytes - done;
        uint64_t host = 0;
        VmdkGtSlot *slot;
        uint32_t gte;
        int st;

        ret = vmdk_gte_lookup(s, idx, off + done, &gte, &slot);
        if (ret < 0) {
            break;
        }
        if (gte == 0) {
            st = 0;
            if (!slot) {
                /*
                 * No grain table: the rest of its span is unallocated too.
                 * Step over it at once, or a huge empty image costs a
                 * lookup per grain (minutes of CPU for 256 TiB).
                 */
                uint64_t span = (uint64_t)e->grain_size * e->gtes_per_gt;
                uint64_t left = span - (off + done) % span;

                n = left < bytes - done ? left : bytes - done;
            }
        } else if (vmdk_gte_is_zero(e, gte)) {
            st = BDRV_BLOCK_ZERO;
        } else if (e->compressed) {
            st = BDRV_BLOCK_DATA;
        } else if (vmdk_grain_host(e, gte, &host) < 0) {
            ret = -EIO;
            break;
        } else {
            st = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
            host += in;
        }
        if (status < 0) {
            status = st;
            first_host = host;
        } else if (st != status || ((st & BDRV_BLOCK_OFFSET_VALID) &&
                                    host != first_host + done)) {
            break;
        }
        done += n;
        in = 0;
    }
    co_mutex_unlock(&s->lock);
    if (done == 0) {
        return ret < 0 ? ret : -EIO;
    }
    *pnum = (int64_t)done;
    if (status & BDRV_BLOCK_OFFSET_VALID) {
        *map = (int64_t)first_host;
        *file = e->child->bs;
    }
    return status;
}

/* ---------------------------------------------------------------------- */
/* Check */

/*
 * Checks every grain table entry of extent idx (s->lock held). Like
 * qemu-img's vmdk check it reports no cluster counts or end offset.
 */
static int coroutine_fn check_extent(BlockDriverState *bs, int idx, BdrvCheckResult *res)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    uint64_t grains = div_round_up_u64(e->length, e->grain_size);

    for (uint64_t t = 0; t < e->gd_entries; t++) {
        VmdkGtSlot *slot;
        int ret;

        if (!e->gd[t]) {
            continue;
        }
        ret = gt_load(s, idx, t, &slot);
        if (ret < 0) {
            res->check_errors++;
            return ret;
        }
        for (uint32_t p = 0; p < e->gtes_per_gt && t * e->gtes_per_gt + p < grains; p++) {
            uint32_t gte = slot->gte[p];
            uint64_t host;
            bool bad;

            if (gte == 0 || vmdk_gte_is_zero(e, gte)) {
                continue;
            }
            bad = e->compressed ? gte <= 1 || (uint64_t)gte * VMDK_SECTOR >= e->next_alloc
                                : vmdk_grain_host(e, gte, &host) < 0;
            if (bad) {
                res->corruptions++;
                bdrv_check_report(res, "vmdk: %s: grain table %" PRIu64 " entry %u points at "
                                  "sector %u, outside the allocated file", bs->filename, t, p,
                                  gte);
            }
        }
    }
    return 0;
}

int coroutine_fn vmdk_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVVmdkState *s = bs->opaque;
    int ret = 0;

    co_mutex_lock(&s->lock);
    vmdk_wait_allocs(s); /* a grain taken but not yet linked is past no entry yet */
    for (int i = 0; i < s->n_extents && ret == 0; i++) {
        if (s->extents[i]->type == VMDK_EXT_SPARSE) {
            ret = check_extent(bs, i, res);
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}
