/*
 * qcow2: allocating writes, and cluster-level write-zeroes / discard.
 *
 * An allocating write runs in three steps:
 *   1. under s->lock: find the run of clusters that cannot be written in
 *      place, wait for in-flight allocations overlapping it, allocate host
 *      clusters (refcount 1) and register the allocation;
 *   2. without the lock: read the head and tail of the first and last
 *      cluster (copy-on-write from the old mapping: backing file, zero,
 *      compressed or shared cluster) and write them with the guest data in
 *      one request;
 *   3. under s->lock: point the L2 entries at the new clusters (dirty in the
 *      cache), schedule the old clusters' refcount drop (deferred until the
 *      L2 tables are durable), and wake waiters.
 * Many allocations run at once; only those overlapping the same guest
 * clusters wait for each other. The L2 cache writes a table only after
 * refcounts and data are flushed (see cache.c), so on-disk L2 entries never
 * point at unwritten or unreferenced clusters.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Full subcluster "allocated" bitmap for extended L2 entries. */
#define EXTL2_ALL_ALLOC 0xffffffffULL

/* True if the cluster entry allows writing [from, to) of it in place. */
static bool writable_in_place(BDRVQcow2State *s, uint64_t l2e, uint64_t bitmap, uint64_t from,
                              uint64_t to)
{
    if (!(l2e & QCOW_OFLAG_COPIED) || (l2e & QCOW_OFLAG_COMPRESSED)) {
        return false;
    }
    if (!(l2e & L2E_OFFSET_MASK) && !qcow2_has_data_file(s)) {
        return false;
    }
    if (qcow2_extl2(s)) {
        int first = (int)(from / s->subcluster_size);
        int last = (int)((to - 1) / s->subcluster_size);
        uint64_t want = ((2ULL << last) - 1) & ~((1ULL << first) - 1);

        return (bitmap & want) == want;
    }
    return !(l2e & QCOW_OFLAG_ZERO);
}

/* The first in-flight allocation overlapping [start, end), or NULL. */
Qcow2Alloc *qcow2_find_alloc_overlap(BDRVQcow2State *s, uint64_t start, uint64_t end)
{
    for (Qcow2Alloc *a = s->allocs; a; a = a->next) {
        if (a->guest_start < end && start < a->guest_end) {
            return a;
        }
    }
    return NULL;
}

void qcow2_alloc_remove(BDRVQcow2State *s, Qcow2Alloc *a)
{
    for (Qcow2Alloc **pp = &s->allocs; *pp; pp = &(*pp)->next) {
        if (*pp == a) {
            *pp = a->next;
            break;
        }
    }
    co_queue_restart_all(&a->waiters);
}

/* Schedules the refcount drop of the host clusters an old L2 entry referenced. */
int qcow2_free_old_entry(BlockDriverState *bs, uint64_t l2e, int type)
{
    BDRVQcow2State *s = bs->opaque;

    if (l2e & QCOW_OFLAG_COMPRESSED) {
        uint64_t off, len, start;

        qcow2_decode_compressed(s, l2e, &off, &len);
        start = qcow2_start_of_cluster(s, off);
        return qcow2_free_clusters_deferred(bs, start, off + len - start, type);
    }
    if ((l2e & L2E_OFFSET_MASK) && !qcow2_has_data_file(s)) {
        return qcow2_free_clusters_deferred(bs, l2e & L2E_OFFSET_MASK, s->cluster_size, type);
    }
    return 0;
}

/*
 * Under the lock: plans the write at offset. Returns 1 with *n bytes
 * writable in place at *host, 0 after registering an allocation a for the
 * first *n bytes (clusters at a->host), or -errno. May wait (and re-plan).
 */
static int coroutine_fn plan_write(BlockDriverState *bs, uint64_t offset, uint64_t *n,
                                   uint64_t *host, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, end = offset + *n, cstart, cend, first_host = 0;
    uint8_t *l2;
    int idx, ret, nb = 0, inplace = -1;
    Qcow2Alloc *other;

    for (;;) {
        uint64_t pos = offset;

        ret = qcow2_get_l2_table(bs, offset, false, &l2, &idx);
        if (ret < 0) {
            return ret;
        }
        nb = 0;
        inplace = -1;
        /* Clusters of the same kind (in place and contiguous, or to allocate). */
        while (pos < end && idx + nb < s->l2_size) {
            uint64_t cpos = qcow2_start_of_cluster(s, pos);
            uint64_t to = end - cpos < cs ? end - cpos : cs;
            uint64_t l2e = l2 ? qcow2_l2_get(s, l2, idx + nb) : 0;
            uint64_t bm = l2 ? qcow2_l2_get_bitmap(s, l2, idx + nb) : 0;
            int ip = writable_in_place(s, l2e, bm, pos - cpos, to);

            if (inplace < 0) {
                inplace = ip;
                first_host = (l2e & L2E_OFFSET_MASK) + (pos - cpos);
            } else if (ip != inplace ||
                       (ip && (l2e & L2E_OFFSET_MASK) != first_host - (offset & (cs - 1)) +
                        (uint64_t)nb * cs)) {
                break;
            }
            nb++;
            pos = cpos + cs;
        }
        if (l2) {
            qcow2_cache_put(s->l2_cache, &l2);
        }
        *n = (pos < end ? pos : end) - offset;
        if (inplace) {
            *host = first_host;
            return 1;
        }
        cstart = qcow2_start_of_cluster(s, offset);
        cend = cstart + (uint64_t)nb * cs;
        other = qcow2_find_alloc_overlap(s, cstart, cend);
        if (!other) {
            break;
        }
        co_queue_wait(&other->waiters, &s->lock);
    }
    ret = qcow2_mark_dirty(bs);
    if (ret < 0) {
        return ret;
    }
    if (qcow2_has_data_file(s)) {
        a->host = cstart; /* data clusters sit at their guest offset, no refcounts */
    } else {
        uint64_t got;
        int64_t h = qcow2_alloc_clusters_upto(bs, (uint64_t)nb, &got);

        if (h < 0) {
            return (int)h;
        }
        a->host = (uint64_t)h;
        if (got < (uint64_t)nb) {
            /* A shorter free run: this round writes only its clusters. */
            nb = (int)got;
            cend = cstart + got * cs;
            *n = (cend < end ? cend : end) - offset;
        }
    }
    a->guest_start = cstart;
    a->guest_end = cend;
    a->nb_clusters = nb;
    co_queue_init(&a->waiters);
    a->next = s->allocs;
    s->allocs = a;
    return 0;
}

/* Without the lock: COW head/tail + guest data into the new clusters. */
static int coroutine_fn alloc_write_data(BlockDriverState *bs, Qcow2Alloc *a, uint64_t offset,
                                         uint64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t head = offset - a->guest_start, tail = a->guest_end - (offset + n);
    uint8_t *buf = NULL;
    IOVector v;
    int ret = 0;

    if (a->guest_end > s->size && tail) {
        /* Past the guest end: nothing to copy, the tail reads as zero. */
        uint64_t real = s->size > offset + n ? s->size - (offset + n) : 0;

        tail = real < tail ? real : tail;
    }
    if (head + tail) {
        buf = malloc(head + tail);
        if (!buf) {
            return -ENOMEM;
        }
    }
    if (head) {
        IOVector h;

        iovector_init_buf(&h, buf, head);
        ret = qcow2_read_guest(bs, a->guest_start, head, &h, 0);
    }
    if (ret >= 0 && tail) {
        IOVector t;

        iovector_init_buf(&t, buf + head, tail);
        ret = qcow2_read_guest(bs, offset + n, tail, &t, 0);
    }
    if (ret < 0) {
        free(buf);
        return ret;
    }
    iovector_init(&v, 3);
    if (head) {
        iovector_add(&v, buf, head);
    }
    iovector_concat(&v, qiov, qiov_offset, n);
    if (tail) {
        iovector_add(&v, buf + head, tail);
    }
    BLKDBG_EVENT(s->data_file, (head || tail) ? BLKDBG_COW_WRITE : BLKDBG_WRITE_AIO);
    ret = bdrv_co_pwritev(s->data_file, (int64_t)a->host, (int64_t)(head + n + tail), &v, 0);
    iovector_destroy(&v);
    free(buf);
    return ret;
}

/* Under the lock: points the L2 entries at the new clusters. */
static int coroutine_fn alloc_link(BlockDriverState *bs, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *l2;
    int idx, ret;

    ret = qcow2_get_l2_table(bs, a->guest_start, true, &l2, &idx);
    if (ret < 0) {
        return ret;
    }
    for (int i = 0; i < a->nb_clusters; i++) {
        uint64_t old = qcow2_l2_get(s, l2, idx + i);
        uint64_t host = a->host + (uint64_t)i * s->cluster_size;

        if ((old & L2E_OFFSET_MASK) != host || (old & QCOW_OFLAG_COMPRESSED)) {
            ret = qcow2_free_old_entry(bs, old, QCOW2_DISCARD_OTHER);
            if (ret < 0) {
                break;
            }
        }
        qcow2_l2_set(s, l2, idx + i, host | QCOW_OFLAG_COPIED);
        qcow2_l2_set_bitmap(s, l2, idx + i, EXTL2_ALL_ALLOC);
    }
    qcow2_cache_mark_dirty(s->l2_cache, l2);
    qcow2_cache_put(s->l2_cache, &l2);
    return ret;
}

int coroutine_fn qcow2_co_pwritev_alloc(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        IOVector *qiov, size_t qiov_offset, unsigned flags)
{
    BDRVQcow2State *s = bs->opaque;

    while (bytes) {
        uint64_t n = bytes, host = 0;
        Qcow2Alloc a;
        int ret;

        co_mutex_lock(&s->lock);
        ret = plan_write(bs, offset, &n, &host, &a);
        if (ret == 1) {
            /* Clusters already referenced by the L2 table: no overlap check here. */
            co_mutex_unlock(&s->lock);
            ret = 0;
            {
                ret = bdrv_co_pwritev_part(s->data_file, (int64_t)host, (int64_t)n, qiov,
                                           qiov_offset, 0);
            }
        } else if (ret == 0) {
            /* New clusters in the image file must not hit metadata (a data file has none). */
            ret = qcow2_has_data_file(s) ? 0 :
                  qcow2_check_overlap(bs, 0, a.host, (uint64_t)a.nb_clusters * s->cluster_size);
            co_mutex_unlock(&s->lock);
            if (ret == 0) {
                ret = alloc_write_data(bs, &a, offset, n, qiov, qiov_offset);
            }
            co_mutex_lock(&s->lock);
            if (ret == 0) {
                ret = alloc_link(bs, &a);
            } else if (!qcow2_has_data_file(s)) {
                qcow2_free_clusters(bs, a.host, (uint64_t)a.nb_clusters * s->cluster_size,
                                    QCOW2_DISCARD_NEVER);
            }
            qcow2_alloc_remove(s, &a);
            co_mutex_unlock(&s->lock);
        } else {
            co_mutex_unlock(&s->lock);
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        qiov_offset += n;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Write-zeroes and discard of whole clusters */

/* New entry for a zeroed / discarded cluster; *free_host if the old host goes. */
static void zero_entry(BlockDriverState *bs, uint64_t old, bool zero, bool unmap, bool full,
                       uint64_t *l2e, uint64_t *bm, bool *free_host)
{
    BDRVQcow2State *s = bs->opaque;
    bool keep = zero && !unmap && (old & QCOW_OFLAG_COPIED) &&
                !(old & QCOW_OFLAG_COMPRESSED) && (old & L2E_OFFSET_MASK);

    *free_host = !keep && ((old & L2E_OFFSET_MASK) || (old & QCOW_OFLAG_COMPRESSED));
    if (keep) {
        *l2e = qcow2_extl2(s) ? old : old | QCOW_OFLAG_ZERO;
        *bm = EXTL2_ALL_ALLOC << 32; /* all subclusters read as zero */
        return;
    }
    /* Discard with a backing file must still read zeroes (v3), as must zero. */
    if (zero || (!full && bs->backing && s->version >= 3)) {
        *l2e = qcow2_extl2(s) ? 0 : QCOW_OFLAG_ZERO;
        *bm = EXTL2_ALL_ALLOC << 32;
    } else {
        *l2e = 0;
        *bm = 0;
    }
}

int coroutine_fn qcow2_zero_or_discard(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                       bool zero, bool unmap, bool full)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = offset + bytes;
    int ret = 0;

    co_mutex_lock(&s->lock);
    while (offset < end && ret == 0) {
        uint64_t l2_end = (offset | ((s->cluster_size << s->l2_bits) - 1)) + 1;
        uint64_t stop = l2_end < end ? l2_end : end;
        Qcow2Alloc *other = qcow2_find_alloc_overlap(s, offset, stop);
        uint8_t *l2;
        int idx;

        if (other) {
            co_queue_wait(&other->waiters, &s->lock);
            continue;
        }
        ret = qcow2_get_l2_table(bs, offset, zero || (!full && bs->backing && s->version >= 3),
                                 &l2, &idx);
        if (ret < 0 || !l2) {
            offset = stop;
            continue;
        }
        ret = qcow2_mark_dirty(bs);
        for (; ret == 0 && offset < stop; offset += s->cluster_size, idx++) {
            uint64_t old = qcow2_l2_get(s, l2, idx), nbm, ne;
            bool free_host;

            zero_entry(bs, old, zero, unmap, full, &ne, &nbm, &free_host);
            if (free_host) {
                ret = qcow2_free_old_entry(bs, old, zero ? QCOW2_DISCARD_OTHER
                                                   : QCOW2_DISCARD_REQUEST);
            }
            qcow2_l2_set(s, l2, idx, ne);
            qcow2_l2_set_bitmap(s, l2, idx, nbm);
        }
        qcow2_cache_mark_dirty(s->l2_cache, l2);
        qcow2_cache_put(s->l2_cache, &l2);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}
