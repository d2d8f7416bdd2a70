/*
 * qcow2: refcounts (refcount_bits 1..64), cluster allocation and freeing,
 * refcount table growth.
 *
 * Layout rule for new refcount blocks: the block describing refcount range
 * b (clusters [b*E, (b+1)*E), E entries per block) is placed at cluster b*E,
 * the first cluster of the range it describes, and counts itself. A range
 * without a block has every refcount 0, so that cluster is free. A run of E
 * clusters or more (a large table) cannot lie between those blocks: it goes
 * past data_hwm, and the blocks of the ranges it covers right after it
 * (alloc_tail). When the
 * refcount table must grow, the new table and the blocks for the clusters it
 * occupies go to the first cluster past both the old coverage and data_hwm
 * (past everything written or handed out: see grow.c); they are written and
 * flushed before the header points at them, and the old table is freed
 * afterwards.
 *
 * Every function here runs with s->lock held.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

uint64_t qcow2_refblock_get(const BDRVQcow2State *s, const uint8_t *blk, uint64_t i)
{
    switch (s->refcount_order) {
    case 3:
        return blk[i];
    case 4:
        return ld_be16(blk + i * 2);
    case 5:
        return ld_be32(blk + i * 4);
    case 6:
        return ld_be64(blk + i * 8);
    default: {
        unsigned bits = 1U << s->refcount_order;
        uint64_t bit = i * bits;

        /* Sub-byte entries: the first entry in the least significant bits. */
        return (blk[bit / 8] >> (bit % 8)) & ((1U << bits) - 1);
    }
    }
}

void qcow2_refblock_set(const BDRVQcow2State *s, uint8_t *blk, uint64_t i, uint64_t v)
{
    switch (s->refcount_order) {
    case 3:
        blk[i] = (uint8_t)v;
        break;
    case 4:
        st_be16(blk + i * 2, (uint16_t)v);
        break;
    case 5:
        st_be32(blk + i * 4, (uint32_t)v);
        break;
    case 6:
        st_be64(blk + i * 8, v);
        break;
    default: {
        unsigned bits = 1U << s->refcount_order;
        uint64_t bit = i * bits;
        unsigned mask = ((1U << bits) - 1) << (bit % 8);

        blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~mask) | ((v << (bit % 8)) & mask));
        break;
    }
    }
}

void qcow2_reftable_count_used(BDRVQcow2State *s)
{
    uint64_t n = s->refcount_table_size;

    while (n && !s->refcount_table[n - 1]) {
        n--;
    }
    s->refcount_table_used = n;
}

/* Host offset of the refcount block for range idx, 0 if none; -EIO if invalid. */
static int coroutine_fn refblock_offset(BlockDriverState *bs, uint64_t idx, uint64_t *off)
{
    BDRVQcow2State *s = bs->opaque;

    *off = 0;
    if (idx >= s->refcount_table_size) {
        return 0;
    }
    *off = s->refcount_table[idx] & REFT_OFFSET_MASK;
    if (*off & (s->cluster_size - 1) || *off >= QCOW2_MAX_OFFSET) {
        return qcow2_signal_corruption(bs, "refcount block %llu at 0x%llx is unaligned or out "
                                       "of range", (unsigned long long)idx,
                                       (unsigned long long)*off);
    }
    if (*off == 0 && s->refcount_table[idx]) {
        return qcow2_signal_corruption(bs, "refcount block %llu has offset 0",
                                       (unsigned long long)idx);
    }
    return 0;
}

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index,
                                    uint64_t *refcount)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t idx = cluster_index >> s->refcount_block_bits, off;
    uint8_t *blk;
    int ret = refblock_offset(bs, idx, &off);

    *refcount = 0;
    if (ret < 0 || off == 0) {
        return ret;
    }
    ret = qcow2_cache_get(bs, s->refcount_cache, off, &blk);
    if (ret < 0) {
        return ret;
    }
    *refcount = qcow2_refblock_get(s, blk,
                                   cluster_index & ((1ULL << s->refcount_block_bits) - 1));
    qcow2_cache_put(s->refcount_cache, &blk);
    return 0;
}

int coroutine_fn qcow2_write_reftable(BlockDriverState *bs, uint64_t offset,
                                      const uint64_t *table, uint64_t entries)
{
    size_t bytes = (size_t)(entries * 8);
    uint8_t *buf = malloc(bytes ? bytes : 8);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < entries; i++) {
        st_be64(buf + i * 8, table[i]);
    }
    ret = qcow2_pwrite(bs->file, (int64_t)offset, (int64_t)bytes, buf);
    free(buf);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Refcount table growth */

/* Writes count new refcount blocks and a new table, then switches the header. */
static int coroutine_fn grow_write(BlockDriverState *bs, uint64_t start, uint64_t k, uint64_t r,
                                   uint64_t new_n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = 1ULL << s->refcount_block_bits, cs = s->cluster_size;
    uint64_t *table = calloc(new_n, 8), old_off = s->refcount_table_offset;
    uint64_t old_clusters = s->refcount_table_clusters;
    uint8_t *blk = malloc(cs), hdr[12];
    int ret = -ENOMEM;

    if (!table || !blk) {
        goto out;
    }
    memcpy(table, s->refcount_table, s->refcount_table_size * 8);
    qcow2_note_written(s, (start + k + r) * cs);
    for (uint64_t j = 0; j < r; j++) {
        uint64_t b = start / E + j, first = b * E;

        memset(blk, 0, cs);
        for (uint64_t c = start; c < start + k + r; c++) {
            if (c >= first && c < first + E) {
                qcow2_refblock_set(s, blk, c - first, 1);
            }
        }
        table[b] = (start + k + j) * cs;
        ret = qcow2_pwrite(bs->file, (int64_t)table[b], (int64_t)cs, blk);
        if (ret < 0) {
            goto out;
        }
    }
    ret = qcow2_write_reftable(bs, start * cs, table, new_n);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        goto out;
    }
    st_be64(hdr, start * cs);
    st_be32(hdr + 8, (uint32_t)(k));
    ret = qcow2_pwrite(bs->file, 48, 12, hdr);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        goto out;
    }
    free(s->refcount_table);
    s->refcount_table = table;
    table = NULL;
    s->refcount_table_offset = start * cs;
    s->refcount_table_clusters = (uint32_t)k;
    s->refcount_table_size = k * cs / 8;
    qcow2_reftable_count_used(s);
    ret = qcow2_free_clusters(bs, old_off, old_clusters * cs, QCOW2_DISCARD_OTHER);
out:
    free(table);
    free(blk);
    return ret;
}

/* Grows the refcount table so that range idx has an entry. */
static int coroutine_fn grow_reftable(BlockDriverState *bs, uint64_t idx)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = 1ULL << s->refcount_block_bits, cs = s->cluster_size;
    uint64_t old_n = s->refcount_table_size, start, new_n, k, r = 1;
    /*
     * Past data_hwm nothing was written or handed out (grow.c): free clusters
     * that read as zeroes, whether past the file's end or in its grown tail.
     * The file's end would leave that tail as a gap below the new table,
     * where reused clusters must then be zeroed first.
     */
    uint64_t hwm = div_round_up_u64(s->data_hwm, cs);

    start = old_n * E > hwm ? old_n * E : hwm;
    new_n = idx + 1 > old_n + old_n / 2 ? idx + 1 : old_n + old_n / 2;
    for (;;) {
        uint64_t last;

        k = div_round_up_u64(new_n * 8, cs);
        for (int it = 0; it < 64; it++) {
            uint64_t nr = (start + k + r - 1) / E - start / E + 1;

            if (nr == r) {
                break;
            }
            r = nr;
        }
        last = (start + k + r - 1) / E;
        if (last < new_n) {
            break;
        }
        new_n = last + 1;
    }
    new_n = k * cs / 8; /* use the whole clusters */
    if (k * cs > QCOW2_MAX_REFTABLE_BYTES || (start + k + r) * cs >= QCOW2_MAX_OFFSET) {
        return -EFBIG;
    }
    return grow_write(bs, start, k, r, new_n);
}

/* Makes sure range idx has a refcount block (placed at its first cluster). */
static int coroutine_fn ensure_refblock(BlockDriverState *bs, uint64_t idx)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off, entry;
    uint8_t *blk;
    int ret;

    if (idx >= s->refcount_table_size) {
        ret = grow_reftable(bs, idx);
        if (ret < 0) {
            return ret;
        }
    }
    ret = refblock_offset(bs, idx, &off);
    if (ret < 0 || off) {
        return ret;
    }
    if (idx == 0) {
        return qcow2_signal_corruption(bs, "refcount block 0 (describing the header) is missing");
    }
    off = (idx << s->refcount_block_bits) * s->cluster_size;
    if (off >= QCOW2_MAX_OFFSET) {
        return -EFBIG;
    }
    ret = qcow2_check_overlap(bs, 0, off, s->cluster_size);
    if (ret < 0) {
        return ret;
    }
    qcow2_note_written(s, off + s->cluster_size);
    ret = qcow2_cache_get_empty(bs, s->refcount_cache, off, &blk);
    if (ret < 0) {
        return ret;
    }
    qcow2_refblock_set(s, blk, 0, 1);
    BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC_WRITE);
    ret = qcow2_pwrite(bs->file, (int64_t)off, (int64_t)s->cluster_size, blk);
    qcow2_cache_put(s->refcount_cache, &blk);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        qcow2_cache_discard(s->refcount_cache, off);
        return ret;
    }
    s->refcount_table[idx] = off;
    if (idx >= s->refcount_table_used) {
        s->refcount_table_used = idx + 1;
    }
    st_be64(&entry, off);
    BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC_HOOKUP);
    ret = qcow2_pwrite(bs->file, (int64_t)(s->refcount_table_offset + idx * 8), 8, &entry);
    s->l2_needs_barrier = true;
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Updates */

int coroutine_fn qcow2_update_cluster_refcount(BlockDriverState *bs, uint64_t offset,
                                               uint64_t len, int64_t delta)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first = offset >> s->cluster_bits;
    uint64_t end = (offset + len + s->cluster_size - 1) >> s->cluster_bits;
    uint64_t mask = (1ULL << s->refcount_block_bits) - 1;

    for (uint64_t c = first; c < end;) {
        uint64_t idx = c >> s->refcount_block_bits, off, v;
        uint8_t *blk;
        int ret;

        if (delta > 0) {
            ret = ensure_refblock(bs, idx);
            if (ret < 0) {
                return ret;
            }
        }
        ret = refblock_offset(bs, idx, &off);
        if (ret < 0) {
            return ret;
        }
        if (!off) {
            return qcow2_signal_corruption(bs, "freeing cluster 0x%llx without a refcount "
                                           "block", (unsigned long long)(c << s->cluster_bits));
        }
        ret = qcow2_cache_get(bs, s->refcount_cache, off, &blk);
        if (ret < 0) {
            return ret;
        }
        for (; c < end && (c >> s->refcount_block_bits) == idx; c++) {
            v = qcow2_refblock_get(s, blk, c & mask);
            if ((delta < 0 && v < (uint64_t)-delta) ||
                (delta > 0 && s->refcount_max - v < (uint64_t)delta)) {
                qcow2_cache_put(s->refcount_cache, &blk);
                if (delta > 0) {
                    return -ERANGE;
                }
                return qcow2_signal_corruption(bs, "refcount of cluster 0x%llx would drop below "
                                               "0", (unsigned long long)(c << s->cluster_bits));
            }
            v += (uint64_t)delta;
            qcow2_refblock_set(s, blk, c & mask, v);
            if (v == 0) {
                if (s->free_byte_offset && c == s->free_byte_offset >> s->cluster_bits) {
                    s->free_byte_offset = 0; /* no packing into a freed cluster */
                }
                if (c < s->free_cluster_index) {
                    s->free_cluster_index = c;
                }
                qcow2_cache_discard(s->l2_cache, c << s->cluster_bits);
                qcow2_cache_discard(s->refcount_cache, c << s->cluster_bits);
                qcow2_dcache_invalidate(s, c << s->cluster_bits);
            }
        }
        qcow2_cache_mark_dirty(s->refcount_cache, blk);
        qcow2_cache_put(s->refcount_cache, &blk);
    }
    if (delta > 0) {
        s->l2_needs_barrier = true;
    }
    return 0;
}

/*
 * Finds a run of free clusters from the allocation hint: exactly n when
 * exact, else the first run of 1..n. Returns its first cluster index and
 * length in *got, after making sure every refcount range it touches has a
 * block (creating one may take a cluster of the run: then look again).
 */
static int coroutine_fn find_free_run(BlockDriverState *bs, uint64_t n, bool exact,
                                      uint64_t *first, uint64_t *got)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = 1ULL << s->refcount_block_bits;
    uint64_t start = s->free_cluster_index;

    for (;;) {
        uint64_t c = start, run = 0, rc;
        bool retry = false, seen_free = false;
        int ret;

        while (run < n) {
            if ((c + 1) << s->cluster_bits >= QCOW2_MAX_OFFSET) {
                return -EFBIG;
            }
            ret = qcow2_get_refcount(bs, c, &rc);
            if (ret < 0) {
                return ret;
            }
            if (!rc && !seen_free) {
                /*
                 * Every cluster from the hint up to here is in use: the next
                 * scan starts here (else each allocation walks the whole
                 * image from its start again when cluster 0 is the header).
                 */
                seen_free = true;
                if (start == s->free_cluster_index) {
                    s->free_cluster_index = c;
                }
            }
            if (rc && run && !exact) {
                break;
            }
            run = rc ? 0 : run + 1;
            c++;
        }
        start = c - run;
        for (uint64_t idx = start / E; idx <= (c - 1) / E; idx++) {
            uint64_t off = 0;

            ret = refblock_offset(bs, idx, &off);
            if (ret < 0) {
                return ret;
            }
            if (!off) {
                ret = ensure_refblock(bs, idx);
                if (ret < 0) {
                    return ret;
                }
                retry = true;
            }
        }
        if (!retry) {
            *first = start;
            *got = run;
            return 0;
        }
    }
}

/* Ranges in [first, end) (cluster indexes) without a refcount block. */
static int coroutine_fn count_missing(BlockDriverState *bs, uint64_t first, uint64_t end,
                                      uint64_t *m)
{
    BDRVQcow2State *s = bs->opaque;

    *m = 0;
    for (uint64_t idx = first >> s->refcount_block_bits;
         idx <= (end - 1) >> s->refcount_block_bits; idx++) {
        uint64_t off;
        int ret = refblock_offset(bs, idx, &off);

        if (ret < 0) {
            return ret;
        }
        *m += !off;
    }
    return 0;
}

/*
 * Writes the k refcount blocks for the ranges of [first, end) that lack one
 * at clusters [at, at + k) (all free, past data_hwm), flushes, then hooks
 * them into the refcount table. A block counts itself when it lies in a
 * range it or another new block describes; a block in a range that already
 * had one is counted there afterwards.
 */
static int coroutine_fn place_refblocks(BlockDriverState *bs, uint64_t first, uint64_t end,
                                        uint64_t at, uint64_t k)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, bits = s->refcount_block_bits;
    uint64_t E = 1ULL << bits, *idx = calloc(k, sizeof(*idx));
    uint8_t *blks = calloc(k, cs), entry[8];
    uint64_t j = 0;
    int ret = -ENOMEM;

    if (!idx || !blks) {
        goto out;
    }
    for (uint64_t r = first >> bits; r <= (end - 1) >> bits && j < k; r++) {
        uint64_t off;

        ret = refblock_offset(bs, r, &off);
        if (ret < 0) {
            goto out;
        }
        if (!off) {
            idx[j++] = r;
        }
    }
    for (j = 0; j < k; j++) {
        for (uint64_t b = 0; b < k; b++) {
            if (idx[b] == (at + j) >> bits) {
                qcow2_refblock_set(s, blks + b * cs, (at + j) & (E - 1), 1);
            }
        }
    }
    ret = qcow2_check_overlap(bs, 0, at * cs, k * cs);
    if (ret < 0) {
        goto out;
    }
    qcow2_note_written(s, (at + k) * cs);
    BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC_WRITE);
    ret = qcow2_pwrite(bs->file, (int64_t)(at * cs), (int64_t)(k * cs), blks);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    for (j = 0; j < k && ret >= 0; j++) {
        s->refcount_table[idx[j]] = (at + j) * cs;
        if (idx[j] >= s->refcount_table_used) {
            s->refcount_table_used = idx[j] + 1;
        }
        st_be64(entry, (at + j) * cs);
        BLKDBG_EVENT(bs->file, BLKDBG_REFBLOCK_ALLOC_HOOKUP);
        ret = qcow2_pwrite(bs->file, (int64_t)(s->refcount_table_offset + idx[j] * 8), 8,
                           entry);
    }
    /* Blocks lying in a range that had a block before: count them there. */
    for (j = 0; j < k && ret >= 0; j++) {
        bool self = false;

        for (uint64_t b = 0; b < k; b++) {
            self |= idx[b] == (at + j) >> bits;
        }
        if (!self) {
            ret = qcow2_update_cluster_refcount(bs, (at + j) * cs, cs, 1);
        }
    }
    s->l2_needs_barrier = true;
out:
    free(idx);
    free(blks);
    return ret < 0 ? ret : 0;
}

/*
 * The refcount table index covering a run of n clusters (with its blocks)
 * that follows a new table placed where grow_reftable puts one.
 */
static uint64_t tail_reftable_idx(BDRVQcow2State *s, uint64_t n)
{
    uint64_t cs = s->cluster_size, bits = s->refcount_block_bits;
    uint64_t old = s->refcount_table_size << bits, hwm = div_round_up_u64(s->data_hwm, cs);
    uint64_t base = old > hwm ? old : hwm, idx = (base + n) >> bits;

    for (int it = 0; it < 64; it++) {
        uint64_t t = div_round_up_u64((idx + 1) * 8, cs), r = ((t + 1) >> bits) + 1;
        uint64_t next = (base + t + r + n) >> bits;

        if (next <= idx) {
            break;
        }
        idx = next;
    }
    return idx + 1;
}

/*
 * A run of n >= E clusters (a large L1 or snapshot table) never fits between
 * the blocks at the start of each range: it goes past data_hwm, where every
 * cluster is free, and the blocks for the ranges it covers go right after it
 * instead of at the starts of their ranges.
 */
static int64_t coroutine_fn alloc_tail(BlockDriverState *bs, uint64_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, start, k = 0, m;
    int ret;

    for (int tries = 0;; tries++) {
        start = div_round_up_u64(s->data_hwm, cs);
        k = 0;
        for (int it = 0; it < 64; it++) {
            ret = count_missing(bs, start, start + n + k, &m);
            if (ret < 0) {
                return ret;
            }
            if (m == k) {
                break;
            }
            k = m;
        }
        if ((start + n + k) * cs >= QCOW2_MAX_OFFSET || tries == 8) {
            return -EFBIG;
        }
        if (((start + n + k - 1) >> s->refcount_block_bits) < s->refcount_table_size) {
            break;
        }
        /*
         * The table grows past data_hwm and past its old coverage (where
         * grow_reftable puts it), and the run then goes behind it: size it
         * for that run, so that it grows once.
         */
        ret = grow_reftable(bs, tail_reftable_idx(s, n + k));
        if (ret < 0) {
            return ret;
        }
    }
    if (k) {
        ret = place_refblocks(bs, start, start + n + k, start + n, k);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_update_cluster_refcount(bs, start * cs, n * cs, 1);
    if (ret < 0) {
        return ret;
    }
    qcow2_note_written(s, (start + n) * cs);
    return (int64_t)(start * cs);
}

static int64_t coroutine_fn alloc_run(BlockDriverState *bs, uint64_t n, bool exact,
                                      uint64_t *got, bool *fresh)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = 1ULL << s->refcount_block_bits, first, end;
    /* Taken first: a refcount block or table placed meanwhile lies outside the run. */
    uint64_t hwm = s->data_hwm;
    int ret;

    if (exact && n >= E) {
        /* Each refcount range starts with its own block: no longer free runs. */
        *got = n;
        return alloc_tail(bs, n);
    }
    ret = find_free_run(bs, n, exact, &first, got);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_update_cluster_refcount(bs, first << s->cluster_bits, *got << s->cluster_bits,
                                        1);
    if (ret < 0) {
        return ret;
    }
    if (first == s->free_cluster_index) {
        s->free_cluster_index = first + *got;
    }
    end = (first + *got) << s->cluster_bits;
    if (fresh) {
        *fresh = (first << s->cluster_bits) >= hwm;
    }
    qcow2_note_written(s, end);
    return (int64_t)(first << s->cluster_bits);
}

int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, uint64_t n)
{
    uint64_t got;

    return alloc_run(bs, n, true, &got, NULL);
}

int64_t coroutine_fn qcow2_alloc_clusters_upto(BlockDriverState *bs, uint64_t n, uint64_t *got,
                                               bool *fresh)
{
    return alloc_run(bs, n, false, got, fresh);
}

int coroutine_fn qcow2_refcount_end(BlockDriverState *bs, uint64_t *end)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t E = 1ULL << s->refcount_block_bits;
    int shift = s->refcount_block_bits + s->cluster_bits;

    *end = 0;
    for (uint64_t idx = s->refcount_table_used; idx-- > 0;) {
        uint64_t off;
        uint8_t *blk;
        int ret = refblock_offset(bs, idx, &off);

        if (ret < 0) {
            return ret;
        }
        if (!off || (shift < 64 && idx > (QCOW2_MAX_OFFSET >> shift))) {
            continue; /* no block, or a range no valid cluster lies in */
        }
        ret = qcow2_cache_get(bs, s->refcount_cache, off, &blk);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = E; i-- > 0;) {
            if (qcow2_refblock_get(s, blk, i)) {
                *end = (idx * E + i + 1) << s->cluster_bits;
                break;
            }
        }
        qcow2_cache_put(s->refcount_cache, &blk);
        if (*end) {
            return 0;
        }
    }
    return 0;
}

int coroutine_fn qcow2_free_clusters(BlockDriverState *bs, uint64_t offset, uint64_t len,
                                     int type)
{
    BDRVQcow2State *s = bs->opaque;
    bool pass;
    int ret = qcow2_update_cluster_refcount(bs, offset, len, -1);

    if (ret < 0) {
        return ret;
    }
    pass = (type == QCOW2_DISCARD_OTHER && s->discard_other) ||
           (type == QCOW2_DISCARD_REQUEST && s->discard_request) ||
           (type == QCOW2_DISCARD_SNAPSHOT && s->discard_snapshot);
    if (!pass) {
        return 0;
    }
    for (uint64_t c = offset; c < offset + len; c += s->cluster_size) {
        uint64_t rc;

        if (qcow2_get_refcount(bs, c >> s->cluster_bits, &rc) == 0 && rc == 0) {
            bdrv_co_pdiscard(bs->file, (int64_t)c, (int64_t)s->cluster_size);
        }
    }
    return 0;
}

int qcow2_free_clusters_deferred(BlockDriverState *bs, uint64_t offset, uint64_t len, int type)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->nb_pending_free == s->pending_free_cap) {
        int cap = s->pending_free_cap ? s->pending_free_cap * 2 : 16;
        Qcow2PendingFree *p = realloc(s->pending_free, (size_t)cap * sizeof(*p));

        if (!p) {
            return -ENOMEM;
        }
        s->pending_free = p;
        s->pending_free_cap = cap;
    }
    s->pending_free[s->nb_pending_free++] = (Qcow2PendingFree){ offset, len, type };
    return 0;
}

int coroutine_fn qcow2_apply_pending_frees(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    while (s->nb_pending_free) {
        Qcow2PendingFree p = s->pending_free[--s->nb_pending_free];
        int r = qcow2_free_clusters(bs, p.offset, p.bytes, p.type);

        if (r < 0 && ret == 0) {
            ret = r;
        }
    }
    return ret;
}
