/*
 * qcow2: persistent dirty bitmaps (the bitmaps header extension, the bitmap
 * directory, bitmap tables and bitmap data clusters; qcow2 spec "Bitmaps").
 *
 * The directory is parsed at open when the extension exists and its
 * autoclear bit says it is consistent (otherwise the extension is kept
 * verbatim and never used). A read-write open loads every enabled ('auto')
 * usable bitmap into memory and sets its in_use flag on disk; writes,
 * write-zeroes, discards and snapshot switches then set bits in memory,
 * and close (or reopen read-only) writes the bits to new clusters, a new
 * table and a new directory, points the header at them, and only then
 * frees the old ones, so a crash leaves either the old directory (with
 * in_use set: the bitmap is known to be inconsistent) or the new one.
 * Disabled bitmaps never change and keep their clusters.
 *
 * Limits on untrusted images (each refused at open with a message):
 * extension data of 24 bytes with the reserved word zero; 1..65535
 * bitmaps; the directory cluster-aligned, inside the file, of at most
 * 64 MiB and exactly the sum of its entries; per entry: reserved flag bits
 * zero, type 1 (dirty tracking), granularity 2^9..2^31, a name of 1..1023
 * bytes unique in the directory, extra data of at most 1 MiB, zero
 * padding, a table of exactly the entries the disk size needs, at most
 * 2^23 entries, cluster-aligned and inside the file. Table entries are
 * checked when the bitmap is read: reserved bits zero, data clusters
 * aligned and inside the file. At most 1 GiB of bitmaps is held in memory.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define BM_EXT_LEN 24
#define BM_MAX_COUNT 65535U
#define BM_MAX_DIR (64ULL << 20)
#define BM_MAX_NAME 1023U
#define BM_MAX_EXTRA (1U << 20)
#define BM_MAX_TABLE (1U << 23)
#define BM_MAX_MEM (1ULL << 30)
#define BM_ENTRY_FIXED 24
#define BM_TYPE_DIRTY 1
#define BM_MIN_GRAN_BITS 9
#define BM_MAX_GRAN_BITS 31
#define BM_TE_ALL_ONES 1ULL
#define BM_TE_RESERVED 0xff000000000001feULL
#define BM_TE_OFFSET 0x00fffffffffffe00ULL

static uint64_t data_bytes_for(uint64_t size, int gran_bits)
{
    return div_round_up_u64(div_round_up_u64(size, 1ULL << gran_bits), 8);
}

static bool bm_usable(const Qcow2Bitmap *b)
{
    return !(b->flags & QCOW2_BME_IN_USE) &&
           (!b->extra_size || (b->flags & QCOW2_BME_EXTRA_COMPAT));
}

static void bm_free_one(Qcow2Bitmap *b)
{
    free(b->name);
    free(b->extra);
    free(b->data);
    memset(b, 0, sizeof(*b));
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        bm_free_one(&s->bitmaps[i]);
    }
    free(s->bitmaps);
    s->bitmaps = NULL;
    s->nb_bitmaps = 0;
    s->bitmaps_loaded = false;
}

static Qcow2Bitmap *bm_find(BDRVQcow2State *s, const char *name)
{
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        if (!strcmp(s->bitmaps[i].name, name)) {
            return &s->bitmaps[i];
        }
    }
    return NULL;
}

/* The bitmaps extension as kept in the header's extension list, or NULL. */
static Qcow2UnknownExt *bm_ext(BDRVQcow2State *s)
{
    for (Qcow2UnknownExt *e = s->unknown_exts; e; e = e->next) {
        if (e->type == QCOW2_EXT_BITMAPS) {
            return e;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Parsing */

static int parse_entry(BlockDriverState *bs, BDRVQcow2State *s, ByteCursor *c, uint64_t flen,
                       Qcow2Bitmap *b, Error **errp)
{
    uint32_t tsize, flags, extra;
    uint16_t nlen;
    uint8_t type, gbits;
    uint64_t toff, want, pad;
    const uint8_t *p;

    if (!rd_be64(c, &toff) || !rd_be32(c, &tsize) || !rd_be32(c, &flags) ||
        !rd_u8(c, &type) || !rd_u8(c, &gbits) || !rd_be16(c, &nlen) || !rd_be32(c, &extra)) {
        error_setg(errp, "qcow2: '%s': bitmap directory entry is truncated", bs->filename);
        return -EINVAL;
    }
    if (flags & ~(QCOW2_BME_IN_USE | QCOW2_BME_AUTO | QCOW2_BME_EXTRA_COMPAT)) {
        error_setg(errp, "qcow2: '%s': bitmap has reserved flags 0x%" PRIx32 " set",
                   bs->filename, flags);
        return -EINVAL;
    }
    if (type != BM_TYPE_DIRTY) {
        error_setg(errp, "qcow2: '%s': bitmap type %u is not supported (only 1, dirty "
                   "tracking)", bs->filename, type);
        return -ENOTSUP;
    }
    if (gbits < BM_MIN_GRAN_BITS || gbits > BM_MAX_GRAN_BITS) {
        error_setg(errp, "qcow2: '%s': bitmap granularity_bits %u is outside %d..%d",
                   bs->filename, gbits, BM_MIN_GRAN_BITS, BM_MAX_GRAN_BITS);
        return -ENOTSUP;
    }
    if (nlen == 0 || nlen > BM_MAX_NAME || extra > BM_MAX_EXTRA) {
        error_setg(errp, "qcow2: '%s': bitmap name size %u or extra data size %" PRIu32
                   " is out of range (1..%u, <= %u)", bs->filename, nlen, extra, BM_MAX_NAME,
                   BM_MAX_EXTRA);
        return -EINVAL;
    }
    want = div_round_up_u64(data_bytes_for(s->size, gbits), s->cluster_size);
    if (tsize != want || tsize > BM_MAX_TABLE) {
        error_setg(errp, "qcow2: '%s': bitmap table size %" PRIu32 " does not match the "
                   "disk size (%" PRIu64 " entries expected, limit %u)", bs->filename, tsize,
                   want, BM_MAX_TABLE);
        return -EINVAL;
    }
    if ((tsize && (!toff || qcow2_offset_into_cluster(s, toff) ||
                   !range_within(toff, (uint64_t)tsize * 8, flen))) || (!tsize && toff)) {
        error_setg(errp, "qcow2: '%s': bitmap table offset 0x%" PRIx64 " is unaligned or "
                   "outside the file", bs->filename, toff);
        return -EINVAL;
    }
    b->table_offset = toff;
    b->table_size = tsize;
    b->flags = flags;
    b->gran_bits = gbits;
    b->extra_size = extra;
    b->data_bytes = data_bytes_for(s->size, gbits);
    if (!(p = bcur_take(c, extra)) || !(b->extra = malloc(extra ? extra : 1))) {
        error_setg(errp, "qcow2: '%s': bitmap extra data is truncated", bs->filename);
        return -EINVAL;
    }
    memcpy(b->extra, p, extra);
    if (!(p = bcur_take(c, nlen)) || !(b->name = strndup((const char *)p, nlen)) ||
        strlen(b->name) != nlen) {
        error_setg(errp, "qcow2: '%s': bitmap name is truncated or holds a NUL byte",
                   bs->filename);
        return -EINVAL;
    }
    pad = round_up_u64(BM_ENTRY_FIXED + (uint64_t)extra + nlen, 8) -
          (BM_ENTRY_FIXED + (uint64_t)extra + nlen);
    if (!(p = bcur_take(c, pad))) {
        error_setg(errp, "qcow2: '%s': bitmap directory entry padding is truncated",
                   bs->filename);
        return -EINVAL;
    }
    for (uint64_t i = 0; i < pad; i++) {
        if (p[i]) {
            error_setg(errp, "qcow2: '%s': bitmap directory entry padding is not zero",
                       bs->filename);
            return -EINVAL;
        }
    }
    return 0;
}

static int parse_directory(BlockDriverState *bs, BDRVQcow2State *s, const uint8_t *dir,
                           uint64_t dsize, uint32_t nb, uint64_t flen, Error **errp)
{
    ByteCursor c = bcur_init(dir, (size_t)dsize);
    int ret;

    s->bitmaps = calloc(nb, sizeof(*s->bitmaps));
    if (!s->bitmaps) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < nb; i++) {
        ret = parse_entry(bs, s, &c, flen, &s->bitmaps[i], errp);
        s->nb_bitmaps = i + 1;
        if (ret < 0) {
            return ret;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (!strcmp(s->bitmaps[j].name, s->bitmaps[i].name)) {
                error_setg(errp, "qcow2: '%s': two bitmaps are named '%s'", bs->filename,
                           s->bitmaps[i].name);
                return -EINVAL;
            }
        }
    }
    if (c.pos != dsize) {
        error_setg(errp, "qcow2: '%s': bitmap directory size %" PRIu64 " does not match its "
                   "%" PRIu32 " entries (%zu bytes)", bs->filename, dsize, nb, c.pos);
        return -EINVAL;
    }
    return 0;
}

static int coroutine_fn read_directory(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    Qcow2UnknownExt *e = bm_ext(s);
    uint64_t dsize, doff;
    int64_t flen = bdrv_co_getlength(bs->file->bs);
    uint32_t nb;
    uint8_t *dir;
    int ret;

    if (e->len < BM_EXT_LEN || ld_be32(e->data + 4) != 0) {
        error_setg(errp, "qcow2: '%s': bitmaps extension of %" PRIu32 " bytes is malformed",
                   bs->filename, e->len);
        return -EINVAL;
    }
    nb = ld_be32(e->data);
    dsize = ld_be64(e->data + 8);
    doff = ld_be64(e->data + 16);
    if (flen < 0) {
        return (int)flen;
    }
    if (nb == 0 || nb > BM_MAX_COUNT || dsize < (uint64_t)nb * BM_ENTRY_FIXED ||
        dsize > BM_MAX_DIR) {
        error_setg(errp, "qcow2: '%s': %" PRIu32 " bitmaps in a directory of %" PRIu64
                   " bytes is out of range (1..%u bitmaps, <= %llu bytes)", bs->filename, nb,
                   dsize, BM_MAX_COUNT, (unsigned long long)BM_MAX_DIR);
        return -EINVAL;
    }
    if (!doff || qcow2_offset_into_cluster(s, doff) || !range_within(doff, dsize, (uint64_t)flen)) {
        error_setg(errp, "qcow2: '%s': bitmap directory offset 0x%" PRIx64 " is unaligned or "
                   "outside the file", bs->filename, doff);
        return -EINVAL;
    }
    dir = malloc(dsize);
    if (!dir) {
        return -ENOMEM;
    }
    ret = qcow2_pread(bs->file, (int64_t)doff, (int64_t)dsize, dir);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not read the bitmap directory",
                         bs->filename);
    } else {
        ret = parse_directory(bs, s, dir, dsize, nb, (uint64_t)flen, errp);
    }
    free(dir);
    return ret;
}

/* Reads a bitmap's bits from its table into *out (malloc'd, data_bytes long). */
static int coroutine_fn read_bits(BlockDriverState *bs, const Qcow2Bitmap *b, uint8_t **out)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t flen = bdrv_co_getlength(bs->file->bs);
    uint8_t *data = calloc(1, b->data_bytes ? b->data_bytes : 1), *table;
    int ret = 0;

    if (flen < 0 || !data) {
        free(data);
        return flen < 0 ? (int)flen : -ENOMEM;
    }
    table = malloc((size_t)b->table_size * 8 + 1);
    if (!table) {
        free(data);
        return -ENOMEM;
    }
    if (b->table_size) {
        ret = qcow2_pread(bs->file, (int64_t)b->table_offset, (int64_t)b->table_size * 8, table);
    }
    for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
        uint64_t te = ld_be64(table + (size_t)i * 8), off = te & BM_TE_OFFSET;
        uint64_t at = (uint64_t)i * s->cluster_size;
        uint64_t n = b->data_bytes - at < s->cluster_size ? b->data_bytes - at : s->cluster_size;

        if ((te & BM_TE_RESERVED) || (off && (te & BM_TE_ALL_ONES)) ||
            (off && !range_within(off, s->cluster_size, (uint64_t)flen))) {
            coblk_warn("qcow2: '%s': bitmap '%s': invalid table entry 0x%016" PRIx64,
                       bs->filename, b->name, te);
            ret = -EINVAL;
        } else if (off) {
            ret = qcow2_pread(bs->file, (int64_t)off, (int64_t)n, data + at);
        } else if (te & BM_TE_ALL_ONES) {
            memset(data + at, 0xff, n);
        }
    }
    free(table);
    if (ret < 0) {
        free(data);
        return ret;
    }
    *out = data;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Bits */

/* Sets bits [first, last] (inclusive) of a bitmap's data. */
static void set_bits(uint8_t *d, uint64_t first, uint64_t last)
{
    while (first <= last && (first & 7)) {
        d[first >> 3] |= (uint8_t)(1u << (first & 7));
        first++;
    }
    if (first + 8 <= last + 1) {
        uint64_t nbytes = (last + 1 - first) >> 3;

        memset(d + (first >> 3), 0xff, nbytes);
        first += nbytes << 3;
    }
    while (first <= last) {
        d[first >> 3] |= (uint8_t)(1u << (first & 7));
        first++;
    }
}

/* Marks the disk range [off, end) dirty in b (clamped to the disk size). */
static void mark_range(const BDRVQcow2State *s, Qcow2Bitmap *b, uint64_t off, uint64_t end)
{
    if (end > s->size) {
        end = s->size;
    }
    if (off < end) {
        set_bits(b->data, off >> b->gran_bits, (end - 1) >> b->gran_bits);
    }
}

static int coroutine_fn load_pending(BlockDriverState *bs);

int coroutine_fn qcow2_bitmaps_note_write(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->bitmaps_pending) {
        int ret = load_pending(bs);

        if (ret < 0) {
            return ret;
        }
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        Qcow2Bitmap *b = &s->bitmaps[i];

        if (b->data && (b->flags & QCOW2_BME_AUTO)) {
            mark_range(s, b, offset, offset + bytes);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Writing */

/* A loaded, enabled bitmap is in_use on disk while the image is open for writing. */
static uint32_t disk_flags(const Qcow2Bitmap *b, bool keep_in_use)
{
    if (!b->data) {
        return b->flags;
    }
    return (b->flags & ~QCOW2_BME_IN_USE) |
           (keep_in_use && (b->flags & QCOW2_BME_AUTO) ? QCOW2_BME_IN_USE : 0);
}

static uint64_t entry_size(const Qcow2Bitmap *b)
{
    return round_up_u64(BM_ENTRY_FIXED + (uint64_t)b->extra_size + strlen(b->name), 8);
}

static uint8_t *build_directory(const BDRVQcow2State *s, bool keep_in_use, uint64_t *size)
{
    uint64_t n = 0, pos = 0;
    uint8_t *dir;

    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        n += entry_size(&s->bitmaps[i]);
    }
    dir = calloc(1, n ? n : 1);
    if (!dir) {
        return NULL;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const Qcow2Bitmap *b = &s->bitmaps[i];
        size_t nlen = strlen(b->name);

        st_be64(dir + pos, b->table_offset);
        st_be32(dir + pos + 8, b->table_size);
        st_be32(dir + pos + 12, disk_flags(b, keep_in_use));
        dir[pos + 16] = BM_TYPE_DIRTY;
        dir[pos + 17] = b->gran_bits;
        st_be16(dir + pos + 18, (uint16_t)nlen);
        st_be32(dir + pos + 20, b->extra_size);
        memcpy(dir + pos + BM_ENTRY_FIXED, b->extra, b->extra_size);
        memcpy(dir + pos + BM_ENTRY_FIXED + b->extra_size, b->name, nlen);
        pos += entry_size(b);
    }
    *size = n;
    return dir;
}

static bool all_bytes(const uint8_t *p, uint64_t n, uint8_t v)
{
    for (uint64_t i = 0; i < n; i++) {
        if (p[i] != v) {
            return false;
        }
    }
    return true;
}

/* Writes b's bits to new data clusters and a new table; sets b->table_offset. */
static int coroutine_fn write_bits(BlockDriverState *bs, Qcow2Bitmap *b, uint8_t *cbuf)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t tbytes = round_up_u64((uint64_t)b->table_size * 8, s->cluster_size);
    uint8_t *table;
    int64_t off;
    int ret = 0;

    if (!b->table_size) {
        b->table_offset = 0;
        return 0;
    }
    table = calloc(1, tbytes);
    if (!table) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; ret == 0 && i < b->table_size; i++) {
        uint64_t at = (uint64_t)i * s->cluster_size;
        uint64_t n = b->data_bytes - at < s->cluster_size ? b->data_bytes - at : s->cluster_size;

        if (all_bytes(b->data + at, n, 0)) {
            continue;
        }
        if (n == s->cluster_size && all_bytes(b->data + at, n, 0xff)) {
            st_be64(table + (size_t)i * 8, BM_TE_ALL_ONES);
            continue;
        }
        off = qcow2_alloc_clusters(bs, 1);
        if (off < 0) {
            ret = (int)off;
            break;
        }
        memcpy(cbuf, b->data + at, n);
        memset(cbuf + n, 0, s->cluster_size - n);
        ret = qcow2_pwrite(bs->file, off, (int64_t)s->cluster_size, cbuf);
        st_be64(table + (size_t)i * 8, (uint64_t)off);
    }
    if (ret == 0) {
        off = qcow2_alloc_clusters(bs, tbytes / s->cluster_size);
        ret = off < 0 ? (int)off : qcow2_pwrite(bs->file, off, (int64_t)tbytes, table);
        if (ret == 0) {
            b->table_offset = (uint64_t)off;
        }
    }
    free(table);
    return ret;
}

/* Drops the references of a table that no longer is in the image and its data clusters. */
static int coroutine_fn free_table(BlockDriverState *bs, uint64_t toff, uint32_t tsize)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *table;
    int ret;

    if (!toff || !tsize) {
        return 0;
    }
    table = malloc((size_t)tsize * 8);
    if (!table) {
        return -ENOMEM;
    }
    ret = qcow2_pread(bs->file, (int64_t)toff, (int64_t)tsize * 8, table);
    for (uint32_t i = 0; ret == 0 && i < tsize; i++) {
        uint64_t off = ld_be64(table + (size_t)i * 8) & BM_TE_OFFSET;

        if (off) {
            ret = qcow2_free_clusters(bs, off, s->cluster_size, QCOW2_DISCARD_OTHER);
        }
    }
    free(table);
    if (ret == 0) {
        ret = qcow2_free_clusters(bs, toff, round_up_u64((uint64_t)tsize * 8, s->cluster_size),
                                  QCOW2_DISCARD_OTHER);
    }
    return ret;
}

/* Points the header's bitmaps extension at a directory (or drops it when empty). */
static int coroutine_fn set_extension(BlockDriverState *bs, uint64_t doff, uint64_t dsize)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2UnknownExt *e = bm_ext(s), **pp;
    uint8_t data[BM_EXT_LEN] = { 0 };

    if (s->nb_bitmaps == 0) {
        for (pp = &s->unknown_exts; *pp && *pp != e; pp = &(*pp)->next) {
        }
        if (e) {
            *pp = e->next;
            free(e->data);
            free(e);
        }
        s->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        st_be32(data, s->nb_bitmaps);
        st_be64(data + 8, dsize);
        st_be64(data + 16, doff);
        if (!e) {
            e = calloc(1, sizeof(*e));
            if (!e) {
                return -ENOMEM;
            }
            e->type = QCOW2_EXT_BITMAPS;
            for (pp = &s->unknown_exts; *pp; pp = &(*pp)->next) {
            }
            *pp = e;
        }
        if (e->len != BM_EXT_LEN) {
            uint8_t *d = malloc(BM_EXT_LEN);

            if (!d) {
                return -ENOMEM;
            }
            free(e->data);
            e->data = d;
            e->len = BM_EXT_LEN;
        }
        memcpy(e->data, data, BM_EXT_LEN);
        s->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    }
    s->bitmap_ext_offset = s->nb_bitmaps ? doff : 0;
    s->bitmap_ext_size = s->nb_bitmaps ? dsize : 0;
    return qcow2_update_header(bs);
}

/*
 * Writes every loaded bitmap and a new directory, switches the header to
 * them, then frees the old directory, the old tables of rewritten bitmaps
 * and the table of a removed bitmap (drop_toff/drop_tsize). s->lock held.
 */
static int coroutine_fn store(BlockDriverState *bs, bool keep_in_use, uint64_t drop_toff,
                              uint32_t drop_tsize)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old_doff = s->bitmap_ext_offset, old_dsize = s->bitmap_ext_size, dsize = 0;
    uint64_t *old_toff = calloc(s->nb_bitmaps + 1, sizeof(uint64_t));
    uint8_t *cbuf = malloc(s->cluster_size), *dir = NULL;
    int64_t doff = 0;
    int ret = 0;

    if (!old_toff || !cbuf) {
        ret = -ENOMEM;
        goto out;
    }
    for (uint32_t i = 0; ret == 0 && i < s->nb_bitmaps; i++) {
        old_toff[i] = s->bitmaps[i].table_offset;
        if (s->bitmaps[i].data) {
            ret = write_bits(bs, &s->bitmaps[i], cbuf);
        }
    }
    if (ret == 0 && s->nb_bitmaps) {
        dir = build_directory(s, keep_in_use, &dsize);
        doff = dir ? qcow2_alloc_clusters(bs, div_round_up_u64(dsize, s->cluster_size)) : -ENOMEM;
        ret = doff < 0 ? (int)doff : qcow2_pwrite(bs->file, doff, (int64_t)dsize, dir);
    }
    if (ret == 0) {
        ret = qcow2_cache_flush_all(bs); /* refcounts of the new clusters first */
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        ret = set_extension(bs, (uint64_t)doff, dsize);
    }
    if (ret < 0) {
        /* The header still names the old directory: keep the old tables in memory. */
        for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
            s->bitmaps[i].table_offset = old_toff[i];
        }
        goto out;
    }
    /* The old structures are unreferenced now; failing to free them only leaks. */
    if (old_doff) {
        qcow2_free_clusters(bs, old_doff, round_up_u64(old_dsize, s->cluster_size),
                            QCOW2_DISCARD_OTHER);
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        if (s->bitmaps[i].data && old_toff[i] != s->bitmaps[i].table_offset) {
            free_table(bs, old_toff[i], s->bitmaps[i].table_size);
        }
    }
    free_table(bs, drop_toff, drop_tsize);
    ret = qcow2_cache_flush_all(bs);
out:
    free(dir);
    free(cbuf);
    free(old_toff);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Open and close */

/* Rewrites the directory in place with in_use set on the loaded, enabled bitmaps. */
static int coroutine_fn mark_in_use(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t dsize;
    uint8_t *dir = build_directory(s, true, &dsize);
    int ret;

    if (!dir) {
        return -ENOMEM;
    }
    /* Only flag words change: each lies in one sector, so a torn write is harmless. */
    ret = dsize == s->bitmap_ext_size
              ? qcow2_pwrite(bs->file, (int64_t)s->bitmap_ext_offset, (int64_t)dsize, dir)
              : -EIO;
    free(dir);
    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

static uint64_t loaded_bytes(const BDRVQcow2State *s)
{
    uint64_t n = 0;

    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        n += s->bitmaps[i].data ? s->bitmaps[i].data_bytes : 0;
    }
    return n;
}

static int coroutine_fn ensure_loaded(BlockDriverState *bs, Qcow2Bitmap *b, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (b->data) {
        return 0;
    }
    if (!bm_usable(b)) {
        error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used (remove it with "
                   "'bitmap --remove')", b->name);
        return -EINVAL;
    }
    if (loaded_bytes(s) + b->data_bytes > BM_MAX_MEM) {
        error_setg(errp, "qcow2: '%s': bitmaps need more than %llu bytes of memory",
                   bs->filename, (unsigned long long)BM_MAX_MEM);
        return -ENOMEM;
    }
    ret = read_bits(bs, b, &b->data);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not read bitmap '%s'", bs->filename,
                         b->name);
    }
    return ret;
}

int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, bool rw, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool any = false;
    int ret;

    if (!bm_ext(s) || !(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        return 0; /* none, or marked inconsistent: kept verbatim, never used */
    }
    if (!s->bitmaps) {
        ret = read_directory(bs, s, errp);
        if (ret < 0) {
            qcow2_bitmaps_free(s);
            return ret;
        }
    }
    if (!rw) {
        return 0;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        Qcow2Bitmap *b = &s->bitmaps[i];

        if ((b->flags & QCOW2_BME_AUTO) && bm_usable(b)) {
            ret = ensure_loaded(bs, b, errp);
            if (ret < 0) {
                return ret;
            }
            any = true;
        }
    }
    if (any) {
        ret = mark_in_use(bs);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: '%s': could not mark the bitmaps in use",
                             bs->filename);
            return ret;
        }
    }
    s->bitmaps_loaded = true;
    return 0;
}

static int coroutine_fn load_pending(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    Error *err = NULL;
    int ret = 0;

    co_mutex_lock(&s->lock);
    if (s->bitmaps_pending) {
        ret = qcow2_bitmaps_open(bs, true, &err);
        if (ret < 0) {
            coblk_warn("%s", error_get_pretty(err));
            error_free(err);
        } else {
            s->bitmaps_pending = false;
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn qcow2_bitmaps_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (!s->bitmaps_loaded) {
        return 0;
    }
    if (loaded_bytes(s) || s->nb_bitmaps) {
        bool any = false;

        for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
            any |= s->bitmaps[i].data != NULL;
        }
        ret = any ? store(bs, false, 0, 0) : 0;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        free(s->bitmaps[i].data);
        s->bitmaps[i].data = NULL;
    }
    s->bitmaps_loaded = false;
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Operations (coblk-img bitmap) */

static int check_name(BDRVQcow2State *s, const BlockBitmapRequest *req, Error **errp)
{
    if (strlen(req->name) > BM_MAX_NAME) {
        error_setg(errp, "Bitmap name is longer than %u bytes", BM_MAX_NAME);
        return -EINVAL;
    }
    if (bm_find(s, req->name)) {
        error_setg(errp, "Bitmap already exists: %s", req->name);
        return -EEXIST;
    }
    if (s->nb_bitmaps >= BM_MAX_COUNT) {
        error_setg(errp, "The image holds the maximum of %u bitmaps", BM_MAX_COUNT);
        return -ENOSPC;
    }
    return 0;
}

static int coroutine_fn bm_add(BlockDriverState *bs, const BlockBitmapRequest *req,
                               Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t gran = req->granularity, min = 4096, max = 65536;
    Qcow2Bitmap b = { 0 }, *n;
    int ret = check_name(s, req, errp);

    if (ret < 0) {
        return ret;
    }
    if (!gran) {
        gran = s->cluster_size < min ? min : s->cluster_size > max ? max : s->cluster_size;
    }
    if (!is_power_of_2_u64(gran) || gran < (1ULL << BM_MIN_GRAN_BITS) ||
        gran > (1ULL << BM_MAX_GRAN_BITS)) {
        error_setg(errp, "Granularity must be a power of 2 between 512 and 2147483648, not "
                   "%" PRIu64, gran);
        return -EINVAL;
    }
    b.gran_bits = (uint8_t)__builtin_ctzll(gran);
    b.data_bytes = data_bytes_for(s->size, b.gran_bits);
    b.table_size = (uint32_t)div_round_up_u64(b.data_bytes, s->cluster_size);
    if (b.table_size > BM_MAX_TABLE || loaded_bytes(s) + b.data_bytes > BM_MAX_MEM) {
        error_setg(errp, "A bitmap of granularity %" PRIu64 " is too large for this disk", gran);
        return -EINVAL;
    }
    b.flags = req->disabled ? 0 : QCOW2_BME_AUTO;
    b.name = strdup(req->name);
    b.extra = malloc(1);
    b.data = calloc(1, b.data_bytes ? b.data_bytes : 1);
    n = realloc(s->bitmaps, sizeof(*n) * (s->nb_bitmaps + 1));
    if (!b.name || !b.extra || !b.data || !n) {
        bm_free_one(&b);
        if (n) {
            s->bitmaps = n;
        }
        return -ENOMEM;
    }
    s->bitmaps = n;
    s->bitmaps[s->nb_bitmaps++] = b;
    return 0;
}

/* dst |= src, with possibly different granularities and disk sizes. */
static void merge_bits(const BDRVQcow2State *ds, Qcow2Bitmap *dst, const uint8_t *src,
                       int src_gran_bits, uint64_t src_size)
{
    uint64_t nbits = div_round_up_u64(src_size, 1ULL << src_gran_bits);

    for (uint64_t i = 0; i < nbits; i++) {
        if (!(i & 63) && i + 64 <= nbits && all_bytes(src + (i >> 3), 8, 0)) {
            i += 63;
            continue;
        }
        if (src[i >> 3] & (1u << (i & 7))) {
            mark_range(ds, dst, i << src_gran_bits, (i + 1) << src_gran_bits);
        }
    }
}

static int coroutine_fn bm_merge(BlockDriverState *bs, Qcow2Bitmap *dst,
                                 const BlockBitmapRequest *req, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BlockDriverState *sbs = req->src_bs ? req->src_bs : bs;
    BDRVQcow2State *ss;
    Qcow2Bitmap *src;
    uint8_t *bits = NULL;
    int ret;

    if (!req->src_name) {
        error_setg(errp, "Merging needs a source bitmap name");
        return -EINVAL;
    }
    if (!sbs->drv || strcmp(sbs->drv->format_name, "qcow2")) {
        error_setg(errp, "Source image '%s' is not a qcow2 image and holds no bitmaps",
                   sbs->filename);
        return -ENOTSUP;
    }
    ss = sbs->opaque;
    src = bm_find(ss, req->src_name);
    if (!src) {
        error_setg(errp, "Dirty bitmap '%s' not found in '%s'", req->src_name, sbs->filename);
        return -ENOENT;
    }
    if (!src->data) {
        if (!bm_usable(src)) {
            error_setg(errp, "Bitmap '%s' is inconsistent and cannot be used", src->name);
            return -EINVAL;
        }
        ret = read_bits(sbs, src, &bits);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "Could not read bitmap '%s' of '%s'", src->name,
                             sbs->filename);
            return ret;
        }
    }
    merge_bits(s, dst, bits ? bits : src->data, src->gran_bits, ss->size);
    free(bits);
    return 0;
}

static int coroutine_fn apply(BlockDriverState *bs, const BlockBitmapRequest *req,
                              uint64_t *drop_toff, uint32_t *drop_tsize, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmap *b;
    int ret;

    if (req->op == BLOCK_BITMAP_ADD) {
        return bm_add(bs, req, errp);
    }
    b = bm_find(s, req->name);
    if (!b) {
        error_setg(errp, "Dirty bitmap '%s' not found", req->name);
        return -ENOENT;
    }
    if (req->op == BLOCK_BITMAP_REMOVE) {
        uint32_t i = (uint32_t)(b - s->bitmaps);

        *drop_toff = b->table_offset;
        *drop_tsize = b->table_size;
        bm_free_one(b);
        memmove(b, b + 1, sizeof(*b) * (s->nb_bitmaps - i - 1));
        s->nb_bitmaps--;
        return 0;
    }
    ret = ensure_loaded(bs, b, errp);
    if (ret < 0) {
        return ret;
    }
    switch (req->op) {
    case BLOCK_BITMAP_CLEAR:
        memset(b->data, 0, b->data_bytes);
        return 0;
    case BLOCK_BITMAP_ENABLE:
        b->flags |= QCOW2_BME_AUTO;
        return 0;
    case BLOCK_BITMAP_DISABLE:
        b->flags &= ~QCOW2_BME_AUTO;
        return 0;
    case BLOCK_BITMAP_MERGE:
        return bm_merge(bs, b, req, errp);
    default:
        error_setg(errp, "Unknown bitmap operation %d", (int)req->op);
        return -EINVAL;
    }
}

int coroutine_fn qcow2_co_bitmap_modify(BlockDriverState *bs, const BlockBitmapRequest *req,
                                        Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t drop_toff = 0;
    uint32_t drop_tsize = 0;
    int ret;

    if (s->version < 3) {
        error_setg(errp, "qcow2: '%s': persistent bitmaps need compat=1.1 (version 3)",
                   bs->filename);
        return -ENOTSUP;
    }
    if (bm_ext(s) && !s->bitmaps) {
        error_setg(errp, "qcow2: '%s': the bitmaps extension is marked inconsistent "
                   "(autoclear bit clear) and is not used", bs->filename);
        return -ENOTSUP;
    }
    co_mutex_lock(&s->lock);
    ret = apply(bs, req, &drop_toff, &drop_tsize, errp);
    if (ret == 0) {
        s->bitmaps_loaded = true;
        ret = store(bs, true, drop_toff, drop_tsize);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: '%s': could not write the bitmaps",
                             bs->filename);
        }
        /* Disabled bitmaps do not change: drop their bits once written. */
        for (uint32_t i = 0; ret == 0 && i < s->nb_bitmaps; i++) {
            if (!(s->bitmaps[i].flags & QCOW2_BME_AUTO)) {
                free(s->bitmaps[i].data);
                s->bitmaps[i].data = NULL;
            }
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Query (NBD qemu:dirty-bitmap:NAME) */

static bool bit_at(const uint8_t *d, uint64_t i)
{
    return d[i >> 3] & (1u << (i & 7));
}

int coroutine_fn qcow2_co_bitmap_query(BlockDriverState *bs, const char *name, int64_t offset,
                                       int64_t bytes, int64_t *pnum)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Bitmap *b = bm_find(s, name);
    uint64_t off = (uint64_t)offset, end = off + (uint64_t)bytes, i, last;
    bool dirty;
    int ret;

    *pnum = 0;
    if (!b) {
        return -ENOENT;
    }
    if (off >= s->size) {
        return -EINVAL;
    }
    if (!b->data) {
        /* Loaded once for reading; a read-write image then stores it back unchanged. */
        co_mutex_lock(&s->lock);
        ret = b->data ? 0 : ensure_loaded(bs, b, NULL);
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    end = end > s->size ? s->size : end;
    i = off >> b->gran_bits;
    last = (end - 1) >> b->gran_bits;
    dirty = bit_at(b->data, i);
    while (i < last && bit_at(b->data, i + 1) == dirty) {
        i++;
    }
    end = (i + 1) << b->gran_bits < end ? (i + 1) << b->gran_bits : end;
    *pnum = (int64_t)(end - off);
    return dirty;
}

/* ---------------------------------------------------------------------- */
/* Info and measure */

int qcow2_bitmap_list(BlockDriverState *bs, BlockBitmapInfo **out)
{
    BDRVQcow2State *s = bs->opaque;
    BlockBitmapInfo *l;

    *out = NULL;
    if (!s->nb_bitmaps) {
        return 0;
    }
    l = calloc(s->nb_bitmaps, sizeof(*l));
    if (!l) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const Qcow2Bitmap *b = &s->bitmaps[i];

        l[i].name = strdup(b->name);
        if (!l[i].name) {
            bdrv_bitmap_list_free(l, (int)i);
            return -ENOMEM;
        }
        l[i].granularity = 1ULL << b->gran_bits;
        l[i].enabled = b->flags & QCOW2_BME_AUTO;
        l[i].in_use = !b->data && (b->flags & QCOW2_BME_IN_USE);
        l[i].usable = b->data || bm_usable(b);
    }
    *out = l;
    return (int)s->nb_bitmaps;
}

#define BCAT(...) (n += (size_t)snprintf(buf + n, n < size ? size - n : 0, __VA_ARGS__))

size_t qcow2_bitmaps_json(const BDRVQcow2State *s, char *buf, size_t size)
{
    size_t n = 0;

    if (!s->nb_bitmaps) {
        return 0;
    }
    BCAT("\"bitmaps\": [");
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const Qcow2Bitmap *b = &s->bitmaps[i];
        bool in_use = !b->data && (b->flags & QCOW2_BME_IN_USE);
        bool aut = b->flags & QCOW2_BME_AUTO;

        BCAT("%s{\"flags\": [%s%s%s], \"name\": ", i ? ", " : "", in_use ? "\"in-use\"" : "",
             in_use && aut ? ", " : "", aut ? "\"auto\"" : "");
        qcow2_json_str(buf, size, &n, b->name);
        BCAT(", \"granularity\": %llu}", 1ULL << b->gran_bits);
    }
    BCAT("], ");
    return n;
}

uint64_t qcow2_bitmaps_measure(const BDRVQcow2State *s, uint64_t cluster_size, uint64_t size)
{
    uint64_t total = 0, dir = 0;

    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const Qcow2Bitmap *b = &s->bitmaps[i];
        uint64_t data = div_round_up_u64(data_bytes_for(size, b->gran_bits), cluster_size);

        total += data * cluster_size + round_up_u64(data * 8, cluster_size);
        dir += entry_size(b);
    }
    return total + round_up_u64(dir, cluster_size);
}
