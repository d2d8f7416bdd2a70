/*
 * qcow2: guest offset -> host mapping through the L1 and L2 tables; L2
 * entry decoding (standard, zero, compressed, extended L2 subclusters);
 * L2 table allocation and copy-on-write; L1 writes and growth.
 *
 * Every function here runs with s->lock held.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

void qcow2_decode_compressed(const BDRVQcow2State *s, uint64_t l2e, uint64_t *off,
                             uint64_t *len)
{
    uint64_t nb_sectors = ((l2e >> s->csize_shift) & s->csize_mask) + 1;

    *off = l2e & s->cluster_offset_mask;
    *len = nb_sectors * 512 - (*off & 511);
}

int qcow2_classify_entry(BlockDriverState *bs, uint64_t l2e, uint64_t bitmap, int sc,
                         Qcow2MapType *type)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = l2e & L2E_OFFSET_MASK;
    bool has_host = off || (qcow2_has_data_file(s) && (l2e & QCOW_OFLAG_COPIED));

    if (l2e & QCOW_OFLAG_COMPRESSED) {
        if (qcow2_has_data_file(s)) {
            return -EIO; /* compressed clusters cannot live in a data file */
        }
        *type = QCOW2_MAP_COMPRESSED;
        return 0;
    }
    if (l2e & ~L2E_OFFSET_MASK & (s->cluster_size - 1) & ~QCOW_OFLAG_ZERO) {
        return -EIO; /* host offset not cluster-aligned */
    }
    if (qcow2_extl2(s)) {
        bool alloc = bitmap & (1ULL << sc), zero = bitmap & (1ULL << (32 + sc));

        if ((alloc && zero) || (alloc && !has_host)) {
            return -EIO;
        }
        /* A zero subcluster of a cluster with a host cluster is preallocated zero. */
        *type = zero ? (has_host ? QCOW2_MAP_ZERO_ALLOC : QCOW2_MAP_ZERO_PLAIN)
                     : alloc ? QCOW2_MAP_NORMAL : QCOW2_MAP_UNALLOCATED;
        return 0;
    }
    if (l2e & QCOW_OFLAG_ZERO) {
        *type = has_host ? QCOW2_MAP_ZERO_ALLOC : QCOW2_MAP_ZERO_PLAIN;
    } else {
        *type = has_host ? QCOW2_MAP_NORMAL : QCOW2_MAP_UNALLOCATED;
    }
    return 0;
}

/* Checks an L1 entry's L2 offset; -EIO (image marked corrupt) if invalid. */
static int coroutine_fn check_l2_offset(BlockDriverState *bs, uint64_t l1i, uint64_t l2off)
{
    BDRVQcow2State *s = bs->opaque;

    if ((l2off & (s->cluster_size - 1)) || l2off < s->cluster_size) {
        return qcow2_signal_corruption(bs, "L2 table offset 0x%llx of L1 entry %llu is invalid "
                                       "(unaligned or in the header)",
                                       (unsigned long long)l2off, (unsigned long long)l1i);
    }
    return 0;
}

/*
 * The mapping of [offset, offset + *bytes) (see qcow2.h). With nowait
 * (s->lock not held, and not taken), never yields: returns -EAGAIN when the
 * L2 table is not cached or anything looks wrong, for the caller to retry
 * under the lock (which reports corruption).
 */
static int coroutine_fn get_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                        uint64_t *host, Qcow2MapType *type, bool nowait)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i = qcow2_l1_index(s, offset), l2off, scs = s->subcluster_size;
    uint64_t in_l2 = offset & ((s->cluster_size << s->l2_bits) - 1);
    uint64_t max = (s->cluster_size << s->l2_bits) - in_l2, got = 0, l2e, bitmap, first_host = 0;
    int idx = qcow2_l2_index(s, offset), sc, ret;
    uint8_t *l2;

    if (max > *bytes) {
        max = *bytes;
    }
    *host = 0;
    l2off = l1i < s->l1_size ? s->l1_table[l1i] & L1E_OFFSET_MASK : 0;
    if (!l2off) {
        *type = QCOW2_MAP_UNALLOCATED;
        *bytes = max;
        return 0;
    }
    if (nowait) {
        /* No reference taken: nothing below yields. */
        l2 = (l2off & (s->cluster_size - 1)) || l2off < s->cluster_size ? NULL :
             qcow2_cache_peek(s->l2_cache, l2off);
        if (!l2) {
            return -EAGAIN;
        }
    } else {
        ret = check_l2_offset(bs, l1i, l2off);
        if (ret < 0) {
            return ret;
        }
        ret = qcow2_cache_get(bs, s->l2_cache, l2off, &l2);
        if (ret < 0) {
            return ret;
        }
    }
    sc = (int)((offset & (s->cluster_size - 1)) / scs);
    /* Walk (sub)clusters while type (and host contiguity) stay the same. */
    while (got < max) {
        uint64_t pos = offset + got, chunk, h;
        Qcow2MapType t;

        l2e = qcow2_l2_get(s, l2, idx);
        bitmap = qcow2_l2_get_bitmap(s, l2, idx);
        if (qcow2_classify_entry(bs, l2e, bitmap, sc, &t) < 0) {
            if (nowait) {
                return -EAGAIN;
            }
            qcow2_cache_put(s->l2_cache, &l2);
            return qcow2_signal_corruption(bs, "invalid L2 entry 0x%016llx (bitmap 0x%016llx) "
                                           "for guest offset 0x%llx", (unsigned long long)l2e,
                                           (unsigned long long)bitmap,
                                           (unsigned long long)pos);
        }
        h = (l2e & L2E_OFFSET_MASK) + (pos & (s->cluster_size - 1));
        if (got == 0) {
            *type = t;
            first_host = h;
            *host = t == QCOW2_MAP_COMPRESSED ? l2e : h;
        } else if (t != *type || t == QCOW2_MAP_COMPRESSED ||
                   ((t == QCOW2_MAP_NORMAL || t == QCOW2_MAP_ZERO_ALLOC) &&
                    h != first_host + got)) {
            break;
        }
        if (*type != QCOW2_MAP_COMPRESSED && *type != QCOW2_MAP_UNALLOCATED &&
            h + s->cluster_size > QCOW2_MAX_OFFSET) {
            if (nowait) {
                return -EAGAIN;
            }
            qcow2_cache_put(s->l2_cache, &l2);
            return qcow2_signal_corruption(bs, "host offset 0x%llx is out of range",
                                           (unsigned long long)h);
        }
        chunk = scs - (pos & (scs - 1));
        got += chunk;
        if (++sc == (int)(s->cluster_size / scs)) {
            sc = 0;
            idx++;
        }
        if (*type == QCOW2_MAP_COMPRESSED && sc == 0) {
            break;
        }
    }
    if (!nowait) {
        qcow2_cache_put(s->l2_cache, &l2);
    }
    *bytes = got < max ? got : max;
    return 0;
}

int coroutine_fn qcow2_get_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                       uint64_t *host, Qcow2MapType *type)
{
    return get_host_offset(bs, offset, bytes, host, type, false);
}

int coroutine_fn qcow2_map_locked(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                  uint64_t *host, Qcow2MapType *type)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = *bytes;
    int ret;

    /*
     * A graph runs in one thread, so while no coroutine holds s->lock (none
     * is in the middle of a metadata update) a lookup that does not yield
     * sees consistent tables without taking it: a read hit costs no lock.
     */
    if (!qcow2_lock_busy(s)) {
        if (qcow2_map_plain_hit(s, offset, n, host)) {
            *type = QCOW2_MAP_NORMAL;
            return 0;
        }
        ret = get_host_offset(bs, offset, &n, host, type, true);
        if (ret != -EAGAIN) {
            *bytes = n;
            return ret;
        }
    }
    co_mutex_lock(&s->lock);
    ret = get_host_offset(bs, offset, bytes, host, type, false);
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn qcow2_write_l1_entries(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t lo = s->l1_dirty_lo & ~63U, hi = (s->l1_dirty_hi + 63) & ~63U;
    uint8_t *buf;
    int ret;

    if (s->l1_dirty_lo >= s->l1_dirty_hi) {
        return 0;
    }
    if (hi > s->l1_size) {
        hi = s->l1_size;
    }
    buf = malloc((size_t)(hi - lo) * 8);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t i = lo; i < hi; i++) {
        st_be64(buf + (size_t)(i - lo) * 8, s->l1_table[i]);
    }
    ret = qcow2_check_overlap(bs, QCOW2_OL_ACTIVE_L1, s->l1_table_offset + (uint64_t)lo * 8,
                              (uint64_t)(hi - lo) * 8);
    if (ret == 0) {
        BLKDBG_EVENT(bs->file, BLKDBG_L1_UPDATE);
        ret = qcow2_pwrite(bs->file, (int64_t)(s->l1_table_offset + (uint64_t)lo * 8),
                           (int64_t)(hi - lo) * 8, buf);
    }
    free(buf);
    if (ret == 0) {
        s->l1_dirty_lo = s->l1_size;
        s->l1_dirty_hi = 0;
    }
    return ret;
}

static void l1_set(BDRVQcow2State *s, uint64_t i, uint64_t v)
{
    s->l1_table[i] = v;
    if (i < s->l1_dirty_lo) {
        s->l1_dirty_lo = (uint32_t)i;
    }
    if (i + 1 > s->l1_dirty_hi) {
        s->l1_dirty_hi = (uint32_t)i + 1;
    }
}

int coroutine_fn qcow2_grow_l1_table(BlockDriverState *bs, uint64_t min_size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t new_size = s->l1_size + s->l1_size / 2, bytes, old_off = s->l1_table_offset;
    uint64_t old_bytes = (uint64_t)s->l1_size * 8;
    uint64_t *t;
    uint8_t hdr[12];
    int64_t off;
    int ret;

    if (min_size <= s->l1_size) {
        return 0;
    }
    if (new_size < min_size) {
        new_size = min_size;
    }
    if (new_size * 8 > QCOW2_MAX_L1_BYTES) {
        new_size = QCOW2_MAX_L1_BYTES / 8;
        if (new_size < min_size) {
            return -EFBIG;
        }
    }
    bytes = round_up_u64(new_size * 8, s->cluster_size);
    new_size = bytes / 8 < QCOW2_MAX_L1_BYTES / 8 ? bytes / 8 : QCOW2_MAX_L1_BYTES / 8;
    /* The L2 tables the new L1 points at must be durable first. */
    ret = qcow2_cache_flush_all(bs);
    if (ret < 0) {
        return ret;
    }
    t = calloc(1, bytes);
    if (!t) {
        return -ENOMEM;
    }
    off = qcow2_alloc_clusters(bs, bytes >> s->cluster_bits);
    if (off < 0) {
        free(t);
        return (int)off;
    }
    ret = qcow2_cache_write(bs, s->refcount_cache);
    for (uint64_t i = 0; i < s->l1_size; i++) {
        st_be64(&t[i], s->l1_table[i]);
    }
    if (ret >= 0) {
        ret = qcow2_check_overlap(bs, 0, (uint64_t)off, bytes);
    }
    if (ret >= 0) {
        ret = qcow2_pwrite(bs->file, off, (int64_t)bytes, t);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        st_be32(hdr, (uint32_t)new_size);
        st_be64(hdr + 4, (uint64_t)off);
        ret = qcow2_pwrite(bs->file, 36, 12, hdr);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        free(t);
        qcow2_free_clusters(bs, (uint64_t)off, bytes, QCOW2_DISCARD_NEVER);
        return ret;
    }
    for (uint64_t i = 0; i < new_size; i++) {
        t[i] = i < s->l1_size ? s->l1_table[i] : 0;
    }
    free(s->l1_table);
    s->l1_table = t;
    s->l1_table_offset = (uint64_t)off;
    s->l1_size = (uint32_t)new_size;
    s->l1_dirty_lo = s->l1_size;
    s->l1_dirty_hi = 0;
    return qcow2_free_clusters(bs, old_off, round_up_u64(old_bytes, s->cluster_size),
                               QCOW2_DISCARD_OTHER);
}

/* Allocates a new L2 table for L1 entry l1i (copying a shared one). */
static int coroutine_fn alloc_l2_table(BlockDriverState *bs, uint64_t l1i, uint8_t **l2)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->l1_table[l1i] & L1E_OFFSET_MASK;
    uint8_t *old_t = NULL;
    int64_t off;
    int ret;

    off = qcow2_alloc_clusters(bs, 1);
    if (off < 0) {
        return (int)off;
    }
    if (old) {
        ret = qcow2_cache_get(bs, s->l2_cache, old, &old_t);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_cache_get_empty(bs, s->l2_cache, (uint64_t)off, l2);
    if (ret < 0) {
        if (old_t) {
            qcow2_cache_put(s->l2_cache, &old_t);
        }
        return ret;
    }
    if (old_t) {
        memcpy(*l2, old_t, s->cluster_size);
        qcow2_cache_put(s->l2_cache, &old_t);
        ret = qcow2_free_clusters_deferred(bs, old, s->cluster_size, QCOW2_DISCARD_OTHER);
        if (ret < 0) {
            qcow2_cache_put(s->l2_cache, l2);
            return ret;
        }
    }
    qcow2_cache_mark_dirty(s->l2_cache, *l2);
    l1_set(s, l1i, (uint64_t)off | QCOW_OFLAG_COPIED);
    return 0;
}

int coroutine_fn qcow2_get_l2_table(BlockDriverState *bs, uint64_t offset, bool create,
                                    uint8_t **l2, int *l2_index)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1i = qcow2_l1_index(s, offset), l1e, l2off;
    int ret;

    *l2 = NULL;
    *l2_index = qcow2_l2_index(s, offset);
    if (l1i >= s->l1_size) {
        if (!create) {
            return 0;
        }
        ret = qcow2_grow_l1_table(bs, l1i + 1);
        if (ret < 0) {
            return ret;
        }
    }
    l1e = s->l1_table[l1i];
    l2off = l1e & L1E_OFFSET_MASK;
    if (l2off) {
        ret = check_l2_offset(bs, l1i, l2off);
        if (ret < 0) {
            return ret;
        }
    }
    if (l2off && ((l1e & QCOW_OFLAG_COPIED) || !create)) {
        return qcow2_cache_get(bs, s->l2_cache, l2off, l2);
    }
    if (!create) {
        return 0;
    }
    return alloc_l2_table(bs, l1i, l2);
}
