/*
 * qcow2: refcount repair of a dirty image (lazy refcounts after a crash),
 * run when such an image is opened read-write.
 *
 * Every reference reachable from the header is counted in memory (header,
 * L1 / refcount / snapshot tables, refcount blocks, L2 tables of the active
 * and snapshot L1 tables, data and compressed clusters), then each
 * cluster's refcount is set to that count. The walk (qcow2_count_refs) is
 * also what check.c should use.
 *
 * Limits: at most 2^28 clusters in the file (a uint16 counter each: 512 MiB
 * of memory at most); references past the end of the file, or a missing
 * refcount block whose range starts with a used cluster, make the repair
 * fail with an error (then use 'qemu-img check -r all').
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define MAX_REPAIR_CLUSTERS (1ULL << 28)

typedef struct RefCounts {
    uint16_t *refs;
    uint64_t nclusters;
    uint64_t beyond;    /* references past the end of the file */
} RefCounts;

static void add_refs(BDRVQcow2State *s, RefCounts *rc, uint64_t off, uint64_t len)
{
    uint64_t first = off >> s->cluster_bits;
    uint64_t end = (off + len + s->cluster_size - 1) >> s->cluster_bits;

    for (uint64_t c = first; c < end; c++) {
        if (c >= rc->nclusters) {
            rc->beyond++;
        } else if (rc->refs[c] < UINT16_MAX) {
            rc->refs[c]++;
        }
    }
}

/* Counts the L2 tables of an L1 table (host order entries) and their clusters. */
static int coroutine_fn count_l1(BlockDriverState *bs, RefCounts *rc, const uint64_t *l1,
                                 uint32_t n, uint8_t *l2)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;
        int ret;

        if (!l2off) {
            continue;
        }
        if (l2off & (s->cluster_size - 1)) {
            return -EIO;
        }
        add_refs(s, rc, l2off, s->cluster_size);
        ret = qcow2_pread(bs->file, (int64_t)l2off, (int64_t)s->cluster_size, l2);
        if (ret < 0) {
            return ret;
        }
        for (int j = 0; j < s->l2_size; j++) {
            uint64_t e = qcow2_l2_get(s, l2, j);

            if (e & QCOW_OFLAG_COMPRESSED) {
                uint64_t coff, clen;

                qcow2_decode_compressed(s, e, &coff, &clen);
                add_refs(s, rc, coff, clen);
            } else if ((e & L2E_OFFSET_MASK) && !qcow2_has_data_file(s)) {
                add_refs(s, rc, e & L2E_OFFSET_MASK, s->cluster_size);
            }
        }
    }
    return 0;
}

static int coroutine_fn count_snapshots(BlockDriverState *bs, RefCounts *rc, uint8_t *l2)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    for (uint32_t i = 0; i < s->nb_snapshots && ret == 0; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint64_t *l1 = malloc((size_t)sn->l1_size * 8 + 8);

        if (!l1) {
            return -ENOMEM;
        }
        add_refs(s, rc, sn->l1_table_offset, (uint64_t)sn->l1_size * 8);
        ret = qcow2_pread(bs->file, (int64_t)sn->l1_table_offset, (int64_t)sn->l1_size * 8, l1);
        for (uint32_t j = 0; ret >= 0 && j < sn->l1_size; j++) {
            l1[j] = ld_be64(&l1[j]);
        }
        if (ret >= 0) {
            ret = count_l1(bs, rc, l1, sn->l1_size, l2);
        }
        free(l1);
    }
    return ret < 0 ? ret : 0;
}

int coroutine_fn qcow2_count_refs(BlockDriverState *bs, uint16_t **prefs, uint64_t *pn)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t flen = bdrv_co_getlength(bs->file->bs);
    RefCounts rc = { 0 };
    uint8_t *l2;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    rc.nclusters = div_round_up_u64((uint64_t)flen, s->cluster_size);
    if (rc.nclusters > MAX_REPAIR_CLUSTERS) {
        return -EFBIG;
    }
    rc.refs = calloc(rc.nclusters + 1, sizeof(uint16_t));
    l2 = malloc(s->cluster_size);
    if (!rc.refs || !l2) {
        free(rc.refs);
        free(l2);
        return -ENOMEM;
    }
    add_refs(s, &rc, 0, s->cluster_size);
    add_refs(s, &rc, s->l1_table_offset, (uint64_t)s->l1_size * 8);
    add_refs(s, &rc, s->refcount_table_offset, s->refcount_table_clusters * s->cluster_size);
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        if (s->refcount_table[i] & REFT_OFFSET_MASK) {
            add_refs(s, &rc, s->refcount_table[i] & REFT_OFFSET_MASK, s->cluster_size);
        }
    }
    add_refs(s, &rc, s->snapshots_offset, s->snapshots_size);
    ret = count_l1(bs, &rc, s->l1_table, s->l1_size, l2);
    if (ret == 0) {
        ret = count_snapshots(bs, &rc, l2);
    }
    free(l2);
    if (ret == 0 && rc.beyond) {
        ret = -EIO;
    }
    if (ret < 0) {
        free(rc.refs);
        return ret;
    }
    *prefs = rc.refs;
    *pn = rc.nclusters;
    return 0;
}

/* Sets every refcount to the counted value. */
static int coroutine_fn apply_counts(BlockDriverState *bs, uint16_t *refs, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = 1ULL << s->refcount_block_bits;

    for (uint64_t c = 0; c < n; c++) {
        uint64_t have, idx = c >> s->refcount_block_bits;
        int ret = qcow2_get_refcount(bs, c, &have);

        if (ret < 0) {
            return ret;
        }
        if (have == refs[c]) {
            continue;
        }
        if (have < refs[c] && (idx >= s->refcount_table_size || !s->refcount_table[idx])) {
            if (refs[idx * E]) {
                return -EIO; /* the new block's place is taken */
            }
            refs[idx * E] = 1; /* the block created for this range counts itself */
        }
        ret = qcow2_update_cluster_refcount(bs, c << s->cluster_bits, s->cluster_size,
                                            (int64_t)refs[c] - (int64_t)have);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int coroutine_fn qcow2_repair_dirty(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint16_t *refs;
    uint64_t n;
    int ret;

    ret = qcow2_count_refs(bs, &refs, &n);
    if (ret == 0) {
        co_mutex_lock(&s->lock);
        ret = apply_counts(bs, refs, n);
        if (ret == 0) {
            ret = qcow2_cache_flush_all(bs);
        }
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret == 0) {
            s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
            ret = qcow2_write_incompat(bs);
        }
        co_mutex_unlock(&s->lock);
        free(refs);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not repair the refcounts of dirty image '%s' "
                         "(try 'qemu-img check -r all')", bs->filename);
    }
    return ret;
}
