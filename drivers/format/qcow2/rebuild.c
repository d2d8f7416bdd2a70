/*
 * qcow2: writing a whole new refcount structure (check -r all when the
 * refcount table is broken, amend refcount_bits=N), and reading L1-style
 * tables for check.c / snapshot.c.
 *
 * The new refcount table and blocks go to fresh clusters past both the end
 * of the file and every counted cluster; they are written and flushed before
 * the header points at them (one header write), so a crash leaves either the
 * old structure or the new one in use. The old structure's clusters are not
 * counted in the new refcounts: they become free.
 *
 * Limits: the new table must fit QCOW2_MAX_REFTABLE_BYTES; every count must
 * fit the new refcount width (else -ERANGE with a message).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

int coroutine_fn qcow2_read_l1(BlockDriverState *bs, uint64_t off, uint32_t n, uint64_t **pl1)
{
    uint64_t *l1 = malloc((size_t)n * 8 + 8);
    int ret;

    *pl1 = NULL;
    if (!l1) {
        return -ENOMEM;
    }
    ret = n ? qcow2_pread(bs->file, (int64_t)off, (int64_t)n * 8, l1) : 0;
    if (ret < 0) {
        free(l1);
        return ret;
    }
    for (uint32_t i = 0; i < n; i++) {
        l1[i] = ld_be64(&l1[i]);
    }
    *pl1 = l1;
    return 0;
}

static void refs_sub(BDRVQcow2State *s, Qcow2Refs *r, uint64_t off, uint64_t len)
{
    uint64_t first = off >> s->cluster_bits;
    uint64_t end = (off + len + s->cluster_size - 1) >> s->cluster_bits;

    for (uint64_t c = first; c < end && c < r->n; c++) {
        if (r->r[c]) {
            r->r[c]--;
        }
    }
}

void qcow2_refs_drop_reftable(BDRVQcow2State *s, Qcow2Refs *r, const uint8_t *bad)
{
    refs_sub(s, r, s->refcount_table_offset,
             (uint64_t)s->refcount_table_clusters * s->cluster_size);
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;

        if (off && !(bad && bad[i])) {
            refs_sub(s, r, off, s->cluster_size);
        }
    }
}

/* Sizes the new structure: nt table clusters and nb blocks from cluster start. */
static void layout(uint64_t start, uint64_t cs, uint64_t E, uint64_t *nt, uint64_t *nb)
{
    uint64_t t = 1, b = 0;

    for (int it = 0; it < 100; it++) {
        uint64_t nbb = div_round_up_u64(start + t + b, E);
        uint64_t ntt = div_round_up_u64(nbb * 8, cs);

        if (nbb == b && ntt == t) {
            break;
        }
        b = nbb;
        t = ntt;
    }
    *nt = t;
    *nb = b;
}

/* Writes the blocks and the table; returns the table (host order) in *ptable. */
static int coroutine_fn write_structure(BlockDriverState *bs, BDRVQcow2State *tmp,
                                        const Qcow2Refs *r, uint64_t start, uint64_t nt,
                                        uint64_t nb, uint64_t **ptable)
{
    uint64_t cs = tmp->cluster_size, E = 1ULL << tmp->refcount_block_bits;
    uint64_t *table = calloc(nt * cs / 8, 8);
    uint8_t *blk = malloc(cs);
    int ret = 0;

    if (!table || !blk) {
        free(table);
        free(blk);
        return -ENOMEM;
    }
    for (uint64_t b = 0; b < nb && ret >= 0; b++) {
        memset(blk, 0, cs);
        for (uint64_t i = 0; i < E; i++) {
            uint64_t c = b * E + i, v = c < r->n ? r->r[c] : 0;

            if (c >= start && c < start + nt + nb) {
                v = 1;
            }
            qcow2_refblock_set(tmp, blk, i, v);
        }
        table[b] = (start + nt + b) * cs;
        ret = qcow2_pwrite(bs->file, (int64_t)table[b], (int64_t)cs, blk);
    }
    if (ret >= 0) {
        ret = qcow2_write_reftable(bs, start * cs, table, nt * cs / 8);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    free(blk);
    if (ret < 0) {
        free(table);
        return ret;
    }
    *ptable = table;
    return 0;
}

/* Drops every refcount block from the cache (after a flush: none is dirty). */
static void drop_refcount_cache(BDRVQcow2State *s)
{
    Qcow2Cache *c = s->refcount_cache;

    for (int i = 0; i < c->size; i++) {
        if (c->e[i].offset) {
            qcow2_cache_discard(c, c->e[i].offset);
        }
    }
}

int coroutine_fn qcow2_rebuild_refcounts(BlockDriverState *bs, const Qcow2Refs *r, int order,
                                         Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    BDRVQcow2State tmp = *s;
    int64_t flen = bdrv_co_getlength(bs->file->bs);
    uint64_t cs = s->cluster_size, start, nt, nb, *table = NULL;
    uint64_t max = order == 6 ? UINT64_MAX : (1ULL << (1 << order)) - 1;
    int ret;

    if (flen < 0) {
        error_setg_errno(errp, (int)-flen, "qcow2: '%s': cannot get the file size", bs->filename);
        return (int)flen;
    }
    for (uint64_t c = 0; c < r->used; c++) {
        if (r->r[c] > max) {
            error_setg(errp, "qcow2: '%s': cluster %llu has %u references, more than "
                       "refcount_bits=%d can hold", bs->filename, (unsigned long long)c,
                       r->r[c], 1 << order);
            return -ERANGE;
        }
    }
    tmp.refcount_order = order;
    tmp.refcount_bits = 1 << order;
    tmp.refcount_block_bits = s->cluster_bits + 3 - order;
    start = div_round_up_u64((uint64_t)flen, cs);
    if (r->used > start) {
        start = r->used;
    }
    layout(start, cs, 1ULL << tmp.refcount_block_bits, &nt, &nb);
    if (nt * cs > QCOW2_MAX_REFTABLE_BYTES || (start + nt + nb) * cs >= QCOW2_MAX_OFFSET) {
        error_setg(errp, "qcow2: '%s': the new refcount table would be too large",
                   bs->filename);
        return -EFBIG;
    }
    ret = qcow2_cache_flush_all(bs);
    if (ret >= 0) {
        qcow2_note_written(s, (start + nt + nb) * cs);
        ret = write_structure(bs, &tmp, r, start, nt, nb, &table);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': cannot write the new refcount structure",
                         bs->filename);
        return ret;
    }
    drop_refcount_cache(s);
    free(s->refcount_table);
    s->refcount_table = table;
    qcow2_dcache_clear(s); /* refcounts rebuilt: forget what was cached */
    s->refcount_table_offset = start * cs;
    s->refcount_table_clusters = (uint32_t)nt;
    s->refcount_table_size = nt * cs / 8;
    qcow2_reftable_count_used(s);
    s->refcount_order = order;
    s->refcount_bits = 1 << order;
    s->refcount_max = max;
    s->refcount_block_bits = tmp.refcount_block_bits;
    s->free_cluster_index = 0;
    ret = qcow2_update_header(bs);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': cannot write the header", bs->filename);
    }
    return ret;
}
