/*
 * qcow2: consistency check and repair (coblk-img check, qemu-img check).
 *
 * The check counts, in memory, every reference to every cluster of the
 * image file: the header, the active L1 table and each snapshot's L1 table
 * with their L2 tables and the data / compressed clusters those map (each L1
 * table counts its tables and clusters once, so a cluster shared by the
 * active image and one snapshot has two references), the refcount table and
 * blocks, the snapshot table and the bitmap directory with its bitmap
 * tables and data. The counts are compared with the stored refcounts:
 *   stored > counted  -> leak (BDRV_FIX_LEAKS lowers the refcount)
 *   stored < counted  -> corruption (BDRV_FIX_ERRORS raises it)
 *   stored == 0 while used, or a broken refcount table entry
 *                     -> corruption; BDRV_FIX_ERRORS rebuilds the whole
 *                        refcount structure (rebuild.c) from the counts
 * then OFLAG_COPIED of the active L1 / L2 entries is compared with
 * "refcount == 1" (BDRV_FIX_ERRORS corrects it). Other corruptions
 * reported: L1 / L2 entries that are unaligned, compressed entries with
 * OFLAG_COPIED, references beyond the end of the file (their refcount is
 * 0, so they are counted as refcount corruptions as qemu-img does).
 *
 * Repairs are crash safe: refcounts only rise before the tables that need
 * them change, a leak fix lowers a refcount to the exact count of durable
 * references, OFLAG_COPIED is set only once the refcount 1 is durable, and a
 * rebuilt refcount structure is written to new clusters and flushed before
 * the header points at it.
 *
 * Limits: the count array covers at most 2^28 clusters (1 GiB of memory);
 * a reference past that is reported as a corruption and not counted.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "coblk/image.h"
#include "qcow2.h"

#define CHECK_MAX_CLUSTERS (1ULL << 28)

typedef struct CheckCtx {
    BlockDriverState *bs;
    BDRVQcow2State *s;
    BdrvCheckResult *res;
    BdrvCheckMode fix;
    Qcow2Refs refs;
    uint64_t file_clusters;
    uint8_t *l2;                /* one L2 table */
    uint8_t *bad_reft;          /* per refcount table entry: unusable block */
    bool rebuild;               /* stored refcounts unusable: rebuild (an error) */
    bool rebuild_quiet;         /* a block past EOF: -r all rebuilds */
    bool fix_copied;            /* OFLAG_COPIED repairs allowed */
    uint64_t next_contig;       /* fragmentation: expected next host offset */
} CheckCtx;

/* ---------------------------------------------------------------------- */
/* Reference counting */

int qcow2_refs_add(Qcow2Refs *r, int cluster_bits, uint64_t off, uint64_t len)
{
    uint64_t first = off >> cluster_bits;
    uint64_t end = (off + len + (1ULL << cluster_bits) - 1) >> cluster_bits;

    if (!len) {
        return 0;
    }
    if (off >= QCOW2_MAX_OFFSET || end > CHECK_MAX_CLUSTERS) {
        return -EFBIG;
    }
    if (end > r->n) {
        uint64_t nn = r->n * 2 > end ? r->n * 2 : end + 1024;
        uint32_t *p;

        if (nn > CHECK_MAX_CLUSTERS) {
            nn = CHECK_MAX_CLUSTERS;
        }
        p = realloc(r->r, nn * sizeof(uint32_t));
        if (!p) {
            return -ENOMEM;
        }
        memset(p + r->n, 0, (nn - r->n) * sizeof(uint32_t));
        r->r = p;
        r->n = nn;
    }
    for (uint64_t c = first; c < end; c++) {
        if (r->r[c] < UINT32_MAX) {
            r->r[c]++;
        }
    }
    if (end > r->used) {
        r->used = end;
    }
    return 0;
}

/*
 * Counts a reference. A region starting one cluster or more past the end of
 * the file, or one the array cannot hold, is a corruption and not counted.
 */
static int add_ref(CheckCtx *cx, uint64_t off, uint64_t len, const char *what)
{
    int ret = -EFBIG;

    if (len && ((off + len - 1) >> cx->s->cluster_bits) >= cx->file_clusters) {
        bdrv_check_report(cx->res, "ERROR: counting reference for region exceeding the end of "
                          "the file by one cluster or more: offset 0x%" PRIx64 " size 0x%"
                          PRIx64 " (%s)", off, len, what);
        cx->res->corruptions++;
        return 0;
    }
    ret = qcow2_refs_add(&cx->refs, cx->s->cluster_bits, off, len);
    if (ret == -EFBIG) {
        bdrv_check_report(cx->res, "ERROR %s at offset 0x%" PRIx64 " is out of range", what,
                          off);
        cx->res->corruptions++;
        return 0;
    }
    return ret;
}

/* Rewrites one 8-byte entry of an on-disk table (L1 / L2), dropping cached copies. */
static int coroutine_fn write_entry(CheckCtx *cx, int ign, uint64_t table, uint64_t idx,
                                    uint64_t v)
{
    uint64_t off = table + idx, be;
    int ret = qcow2_check_overlap(cx->bs, ign, off, 8);

    if (ret < 0) {
        return ret;
    }
    st_be64(&be, v);
    qcow2_cache_discard(cx->s->l2_cache, table);
    return qcow2_pwrite(cx->bs->file, (int64_t)off, 8, &be);
}

/* ---------------------------------------------------------------------- */
/* L1 / L2 walk */

static int coroutine_fn check_l2_entry(CheckCtx *cx, uint64_t l2off, int j, bool active)
{
    BDRVQcow2State *s = cx->s;
    BdrvCheckResult *res = cx->res;
    uint64_t e = qcow2_l2_get(s, cx->l2, j);
    uint64_t off = e & L2E_OFFSET_MASK;

    if (e & QCOW_OFLAG_COMPRESSED) {
        uint64_t coff, clen;

        if (e & QCOW_OFLAG_COPIED) {
            bdrv_check_report(res, "ERROR: compressed cluster %" PRIx64 " has OFLAG_COPIED "
                              "set", e);
            res->corruptions++;
            if (active && (cx->fix & BDRV_FIX_ERRORS)) {
                e &= ~QCOW_OFLAG_COPIED;
                qcow2_l2_set(s, cx->l2, j, e);
                if (write_entry(cx, QCOW2_OL_ACTIVE_L2, l2off,
                                (uint64_t)j * s->l2_entry_size, e) == 0) {
                    res->corruptions_fixed++;
                }
            }
        }
        qcow2_decode_compressed(s, e, &coff, &clen);
        if (active) {
            res->allocated_clusters++;
            res->compressed_clusters++;
            res->fragmented_clusters++;
        }
        return add_ref(cx, coff, clen, "compressed cluster");
    }
    /* In an external data file, host offset 0 is valid (OFLAG_COPIED set). */
    if (!off && !(qcow2_has_data_file(s) && (e & QCOW_OFLAG_COPIED))) {
        return 0;
    }
    if (off & (s->cluster_size - 1)) {
        bdrv_check_report(res, "ERROR offset=%" PRIx64 ": data cluster is not properly "
                          "aligned; L2 entry corrupted", off);
        res->corruptions++;
        return 0;
    }
    if (active) {
        res->allocated_clusters++;
        if (cx->next_contig && off != cx->next_contig) {
            res->fragmented_clusters++;
        }
        cx->next_contig = off + s->cluster_size;
    }
    if (qcow2_has_data_file(s)) {
        return 0;
    }
    return add_ref(cx, off, s->cluster_size, "data cluster");
}

/* Counts an L1 table (host order entries) and everything it maps. */
static int coroutine_fn check_l1(CheckCtx *cx, uint64_t l1off, const uint64_t *l1, uint32_t n,
                                 bool active)
{
    BDRVQcow2State *s = cx->s;
    int ret = add_ref(cx, l1off, (uint64_t)n * 8, "L1 table");

    for (uint32_t i = 0; ret == 0 && i < n; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;

        if (!l2off) {
            continue;
        }
        if (l2off & (s->cluster_size - 1)) {
            bdrv_check_report(cx->res, "ERROR l2_offset=%" PRIx64 ": table is not cluster "
                              "aligned; L1 entry corrupted", l2off);
            cx->res->corruptions++;
            continue;
        }
        ret = add_ref(cx, l2off, s->cluster_size, "L2 table");
        if (ret < 0 || (l2off >> s->cluster_bits) >= cx->file_clusters) {
            continue; /* past the end: reported by add_ref */
        }
        cx->next_contig = 0; /* fragmentation is counted within one L2 table */
        ret = qcow2_pread(cx->bs->file, (int64_t)l2off, (int64_t)s->cluster_size, cx->l2);
        if (ret < 0) {
            bdrv_check_report(cx->res, "ERROR: I/O error reading L2 table at 0x%" PRIx64,
                              l2off);
            cx->res->check_errors++;
            ret = 0;
            continue;
        }
        for (int j = 0; ret == 0 && j < s->l2_size; j++) {
            ret = check_l2_entry(cx, l2off, j, active);
        }
    }
    return ret;
}

static int coroutine_fn check_snapshots(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    int ret = 0;

    if (s->nb_snapshots) {
        ret = add_ref(cx, s->snapshots_offset, s->snapshots_size, "snapshot table");
    }
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint64_t *l1;

        ret = qcow2_read_l1(cx->bs, sn->l1_table_offset, sn->l1_size, &l1);
        if (ret < 0) {
            bdrv_check_report(cx->res, "ERROR: cannot read the L1 table of snapshot %s",
                              sn->id_str);
            cx->res->check_errors++;
            ret = 0;
            continue;
        }
        ret = check_l1(cx, sn->l1_table_offset, l1, sn->l1_size, false);
        free(l1);
    }
    return ret;
}

/* Bitmap directory and the bitmap tables and data clusters it names. */
static int coroutine_fn check_bitmaps(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    uint64_t dsize = s->bitmap_ext_size;
    uint8_t *dir;
    int ret;

    if (!s->bitmap_ext_offset || !dsize || dsize > QCOW2_MAX_SNAPSHOT_TABLE) {
        return 0;
    }
    ret = add_ref(cx, s->bitmap_ext_offset, dsize, "bitmap directory");
    dir = malloc(dsize);
    if (ret < 0 || !dir) {
        free(dir);
        return ret < 0 ? ret : -ENOMEM;
    }
    ret = qcow2_pread(cx->bs->file, (int64_t)s->bitmap_ext_offset, (int64_t)dsize, dir);
    for (uint64_t pos = 0; ret >= 0 && pos + 24 <= dsize;) {
        uint64_t toff = ld_be64(dir + pos);
        uint32_t tsize = ld_be32(dir + pos + 8);
        uint16_t name = ld_be16(dir + pos + 18);
        uint32_t extra = ld_be32(dir + pos + 20);
        uint64_t *t = NULL;

        pos += round_up_u64(24ULL + extra + name, 8);
        if (!toff || (uint64_t)tsize * 8 > QCOW2_MAX_L1_BYTES) {
            continue;
        }
        ret = add_ref(cx, toff, (uint64_t)tsize * 8, "bitmap table");
        if (ret == 0) {
            ret = qcow2_read_l1(cx->bs, toff, tsize, &t);
        }
        for (uint32_t i = 0; ret == 0 && i < tsize; i++) {
            uint64_t d = t[i] & L1E_OFFSET_MASK;

            if (d) {
                ret = add_ref(cx, d, s->cluster_size, "bitmap data cluster");
            }
        }
        free(t);
        if (ret < 0) {
            bdrv_check_report(cx->res, "ERROR: cannot read bitmap table at 0x%" PRIx64, toff);
            cx->res->check_errors++;
            ret = 0;
        }
    }
    free(dir);
    return ret < 0 ? ret : 0;
}

/* Refcount table and blocks; broken entries ask for a rebuild. */
static int check_reftable(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    int ret = add_ref(cx, s->refcount_table_offset,
                      (uint64_t)s->refcount_table_clusters * s->cluster_size,
                      "refcount table");

    for (uint64_t i = 0; ret == 0 && i < s->refcount_table_size; i++) {
        uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;

        if (!off) {
            continue;
        }
        if (off & (s->cluster_size - 1)) {
            bdrv_check_report(cx->res, "ERROR refcount block %" PRIu64 " is not cluster "
                              "aligned; refcount table entry corrupted", i);
        } else if ((off >> s->cluster_bits) >= cx->file_clusters) {
            bdrv_check_report(cx->res, "ERROR refcount block %" PRIu64 " is outside image", i);
        } else {
            ret = add_ref(cx, off, s->cluster_size, "refcount block");
            continue;
        }
        cx->res->corruptions++;
        cx->bad_reft[i] = 1;
        if (off & (s->cluster_size - 1)) {
            cx->rebuild = true;
        } else {
            cx->rebuild_quiet = true;
        }
    }
    return ret;
}

/* A refcount block referenced more than once overlaps other metadata. */
static void check_refblock_overlap(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;

    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK, c = off >> s->cluster_bits;

        if (off && !cx->bad_reft[i] && c < cx->refs.n && cx->refs.r[c] > 1) {
            bdrv_check_report(cx->res, "ERROR refcount block %" PRIu64 " refcount=%" PRIu32,
                              i, cx->refs.r[c]);
            cx->res->corruptions++;
            cx->bad_reft[i] = 1;
            cx->rebuild = true;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Comparison with the stored refcounts */

/* Stored refcount of cluster c (0 where the block is missing or unusable). */
static int coroutine_fn stored_refcount(CheckCtx *cx, uint64_t c, uint64_t *rc)
{
    BDRVQcow2State *s = cx->s;
    uint64_t idx = c >> s->refcount_block_bits;

    *rc = 0;
    if (idx >= s->refcount_table_size || cx->bad_reft[idx] ||
        !(s->refcount_table[idx] & REFT_OFFSET_MASK)) {
        return 0;
    }
    return qcow2_get_refcount(cx->bs, c, rc);
}

static int coroutine_fn compare_refcounts(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    BdrvCheckResult *res = cx->res;
    uint64_t n = cx->refs.used > cx->file_clusters ? cx->refs.used : cx->file_clusters;
    uint64_t highest = 0;

    for (uint64_t c = 0; c < n; c++) {
        uint64_t have, want = c < cx->refs.n ? cx->refs.r[c] : 0;
        bool leak, fixit;
        int ret = stored_refcount(cx, c, &have);

        if (ret < 0) {
            bdrv_check_report(res, "ERROR: can't get refcount for cluster %" PRIu64 ": %s",
                              c, strerror(-ret));
            res->check_errors++;
            continue;
        }
        if (have || want) {
            highest = c + 1;
        }
        if (have == want) {
            continue;
        }
        leak = have > want;
        if (have == 0) {
            cx->rebuild = true;
            fixit = false;
        } else {
            fixit = (leak && (cx->fix & BDRV_FIX_LEAKS)) ||
                    (!leak && (cx->fix & BDRV_FIX_ERRORS) && want <= s->refcount_max);
        }
        bdrv_check_report(res, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                          fixit ? "Repairing" : leak ? "Leaked" : "ERROR", c, have, want);
        if (fixit) {
            ret = qcow2_update_cluster_refcount(cx->bs, c << s->cluster_bits, s->cluster_size,
                                                (int64_t)(want - have));
            if (ret < 0) {
                bdrv_check_report(res, "ERROR: could not fix the refcount of cluster %" PRIu64
                                  ": %s", c, strerror(-ret));
                res->check_errors++;
                fixit = false;
            }
        }
        if (leak) {
            res->leaks++;
            res->leaks_fixed += fixit;
        } else {
            res->corruptions++;
            res->corruptions_fixed += fixit;
        }
    }
    res->image_end_offset = (int64_t)(highest << s->cluster_bits);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* OFLAG_COPIED of the active tables */

static int coroutine_fn check_copied_l2(CheckCtx *cx, uint64_t l2off, bool table_shared)
{
    BDRVQcow2State *s = cx->s;
    int ret = qcow2_pread(cx->bs->file, (int64_t)l2off, (int64_t)s->cluster_size, cx->l2);

    for (int j = 0; ret >= 0 && j < s->l2_size; j++) {
        uint64_t e = qcow2_l2_get(s, cx->l2, j), off = e & L2E_OFFSET_MASK, rc;
        bool copied = e & QCOW_OFLAG_COPIED;

        if ((e & QCOW_OFLAG_COMPRESSED) || !off || (off & (s->cluster_size - 1))) {
            continue;
        }
        ret = stored_refcount(cx, off >> s->cluster_bits, &rc);
        if (ret < 0 || (rc == 1) == copied) {
            continue;
        }
        bdrv_check_report(cx->res, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64
                          " refcount=%" PRIu64,
                          cx->fix_copied && !table_shared ? "Repairing" : "ERROR", e, rc);
        cx->res->corruptions++;
        if (cx->fix_copied && !table_shared) {
            e = rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
            ret = write_entry(cx, QCOW2_OL_ACTIVE_L2, l2off, (uint64_t)j * s->l2_entry_size, e);
            cx->res->corruptions_fixed += ret >= 0;
        }
    }
    return ret < 0 ? ret : 0;
}

static int coroutine_fn check_copied(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    BdrvCheckResult *res = cx->res;
    int ret = 0;

    /*
     * -r all repairs OFLAG_COPIED; -r leaks only when nothing else was wrong
     * (the flag follows the refcounts, which must be right), as qemu-img.
     */
    cx->fix_copied = (cx->fix & BDRV_FIX_ERRORS) ||
                     ((cx->fix & BDRV_FIX_LEAKS) && !res->check_errors && !res->corruptions &&
                      !res->leaks);

    for (uint32_t i = 0; ret == 0 && i < s->l1_size; i++) {
        uint64_t e = s->l1_table[i], l2off = e & L1E_OFFSET_MASK, rc;
        bool copied = e & QCOW_OFLAG_COPIED;

        if (!l2off || (l2off & (s->cluster_size - 1)) ||
            (l2off >> s->cluster_bits) >= cx->file_clusters) {
            continue;
        }
        ret = stored_refcount(cx, l2off >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if ((rc == 1) != copied) {
            bdrv_check_report(cx->res, "%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%"
                              PRIx64 " refcount=%" PRIu64,
                              cx->fix_copied ? "Repairing" : "ERROR", i, e, rc);
            cx->res->corruptions++;
            if (cx->fix_copied) {
                e = rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
                ret = write_entry(cx, QCOW2_OL_ACTIVE_L1, s->l1_table_offset, i * 8ULL, e);
                if (ret < 0) {
                    return ret;
                }
                s->l1_table[i] = e;
                cx->res->corruptions_fixed++;
            }
        }
        if (!qcow2_has_data_file(s)) { /* data file clusters have no refcounts */
            ret = check_copied_l2(cx, l2off, rc != 1);
        }
    }
    return ret;
}

/* ---------------------------------------------------------------------- */

/* Counts every reference of the image; the caller frees cx->refs.r. */
static int coroutine_fn count_all(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    int ret = add_ref(cx, 0, s->cluster_size, "header");

    cx->next_contig = 0;
    if (ret == 0) {
        ret = check_l1(cx, s->l1_table_offset, s->l1_table, s->l1_size, true);
    }
    if (ret == 0) {
        ret = check_snapshots(cx);
    }
    if (ret == 0) {
        ret = check_bitmaps(cx);
    }
    if (ret == 0) {
        ret = check_reftable(cx);
    }
    if (ret == 0) {
        check_refblock_overlap(cx);
    }
    return ret;
}

/* Rebuilds the refcount structure from the counts (without the old one). */
static int coroutine_fn check_rebuild(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    BdrvCheckResult *res = cx->res;
    Error *err = NULL;
    int ret;

    bdrv_check_report(res, "Rebuilding refcount structure");
    qcow2_refs_drop_reftable(s, &cx->refs, cx->bad_reft);
    ret = qcow2_rebuild_refcounts(cx->bs, &cx->refs, s->refcount_order, &err);
    if (ret < 0) {
        bdrv_check_report(res, "ERROR: %s", error_get_pretty(err));
        error_free(err);
        res->check_errors++;
        return ret;
    }
    res->corruptions_fixed += res->corruptions - res->corruptions_fixed;
    res->leaks_fixed += res->leaks - res->leaks_fixed;
    return 0;
}

static int coroutine_fn check_locked(CheckCtx *cx)
{
    BDRVQcow2State *s = cx->s;
    int64_t flen;
    int ret = qcow2_cache_flush_all(cx->bs); /* tables on disk: the walk reads them */

    if (ret < 0) {
        return ret;
    }
    flen = bdrv_co_getlength(cx->bs->file->bs);
    if (flen < 0) {
        return (int)flen;
    }
    cx->file_clusters = div_round_up_u64((uint64_t)flen, s->cluster_size);
    cx->res->total_clusters = (int64_t)div_round_up_u64(s->size, s->cluster_size);
    ret = count_all(cx);
    if (ret == 0) {
        ret = compare_refcounts(cx);
    }
    if (ret == 0 && cx->rebuild && !(cx->fix & BDRV_FIX_ERRORS)) {
        bdrv_check_report(cx->res, "ERROR need to rebuild refcount structures");
        cx->res->corruptions++;
        if (cx->fix) {
            return -EIO; /* as qemu-img: -r leaks cannot continue */
        }
    }
    cx->rebuild |= cx->rebuild_quiet;
    if (ret == 0 && cx->rebuild && (cx->fix & BDRV_FIX_ERRORS)) {
        ret = check_rebuild(cx);
        if (ret == 0) {
            /* The new table is sound and may be longer. */
            free(cx->bad_reft);
            cx->bad_reft = calloc(s->refcount_table_size + 1, 1);
            cx->rebuild = false;
            ret = cx->bad_reft ? 0 : -ENOMEM;
        }
    }
    if (ret == 0) {
        ret = qcow2_cache_flush_all(cx->bs);
    }
    if (ret == 0 && !cx->rebuild) {
        ret = check_copied(cx);
    }
    if (ret == 0 && cx->fix) {
        ret = qcow2_cache_flush_all(cx->bs);
    }
    if (ret == 0 && (cx->fix & BDRV_FIX_ERRORS) && cx->res->corruptions &&
        cx->res->corruptions == cx->res->corruptions_fixed &&
        (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT)) {
        s->incompatible_features &= ~QCOW2_INCOMPAT_CORRUPT;
        ret = qcow2_write_incompat(cx->bs);
    }
    return ret;
}

int coroutine_fn qcow2_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    CheckCtx cx = { .bs = bs, .s = s, .res = res, .fix = fix };
    int ret;

    if (fix && bdrv_is_read_only(bs)) {
        return -EACCES;
    }
    cx.l2 = malloc(s->cluster_size);
    cx.bad_reft = calloc(s->refcount_table_size + 1, 1);
    if (!cx.l2 || !cx.bad_reft) {
        free(cx.l2);
        free(cx.bad_reft);
        return -ENOMEM;
    }
    co_mutex_lock(&s->lock);
    ret = check_locked(&cx);
    co_mutex_unlock(&s->lock);
    free(cx.refs.r);
    free(cx.l2);
    free(cx.bad_reft);
    return ret;
}

static void report_nothing(void *opaque, const char *msg)
{
    (void)opaque;
    (void)msg;
}

int coroutine_fn qcow2_count_image_refs(BlockDriverState *bs, Qcow2Refs *r)
{
    BDRVQcow2State *s = bs->opaque;
    BdrvCheckResult res = { .report = report_nothing };
    CheckCtx cx = { .bs = bs, .s = s, .res = &res };
    int64_t flen = -ENOMEM;
    int ret;

    memset(r, 0, sizeof(*r));
    cx.l2 = malloc(s->cluster_size);
    cx.bad_reft = calloc(s->refcount_table_size + 1, 1);
    ret = cx.l2 && cx.bad_reft ? qcow2_cache_flush_all(bs) : -ENOMEM;
    if (ret == 0) {
        flen = bdrv_co_getlength(bs->file->bs);
        ret = flen < 0 ? (int)flen : 0;
    }
    if (ret == 0) {
        cx.file_clusters = div_round_up_u64((uint64_t)flen, s->cluster_size);
        ret = count_all(&cx);
    }
    if (ret == 0 && (res.corruptions || res.check_errors || cx.rebuild || cx.rebuild_quiet)) {
        ret = -EIO;
    }
    free(cx.l2);
    free(cx.bad_reft);
    if (ret < 0) {
        free(cx.refs.r);
        return ret;
    }
    *r = cx.refs;
    return 0;
}
