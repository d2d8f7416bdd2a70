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

/* How a write reaches a cluster (see plan_write). */
enum {
    WRITE_ALLOC = 0,    /* new host cluster */
    WRITE_IN_PLACE = 1, /* the cluster's data is written as it is */
    WRITE_FILL = 2,     /* extended L2: unallocated / zero subclusters of its host cluster */
};

/* True if the entry has a host cluster of its own (not compressed). */
static bool entry_has_host(BDRVQcow2State *s, uint64_t l2e)
{
    return !(l2e & QCOW_OFLAG_COMPRESSED) &&
           ((l2e & L2E_OFFSET_MASK) || (qcow2_has_data_file(s) && (l2e & QCOW_OFLAG_COPIED)));
}

/* Bitmap of the subclusters of the cluster at cstart that [from, to) touches. */
static uint64_t subcluster_mask(BDRVQcow2State *s, uint64_t cstart, uint64_t from, uint64_t to)
{
    uint64_t lo = from > cstart ? from : cstart;
    uint64_t hi = to < cstart + s->cluster_size ? to : cstart + s->cluster_size;
    int first, last;

    if (lo >= hi) {
        return 0;
    }
    first = (int)((lo - cstart) >> s->subcluster_bits);
    last = (int)((hi - 1 - cstart) >> s->subcluster_bits);
    return ((2ULL << last) - 1) & ~((1ULL << first) - 1);
}

/* How writing [from, to) (offsets in the cluster) of a cluster goes. */
static int write_kind(BDRVQcow2State *s, uint64_t l2e, uint64_t bitmap, uint64_t from,
                      uint64_t to)
{
    if (!(l2e & QCOW_OFLAG_COPIED) || !entry_has_host(s, l2e)) {
        return WRITE_ALLOC;
    }
    if (qcow2_extl2(s)) {
        uint64_t want = subcluster_mask(s, 0, from, to);

        return (bitmap & want) == want ? WRITE_IN_PLACE : WRITE_FILL;
    }
    return (l2e & QCOW_OFLAG_ZERO) ? WRITE_ALLOC : WRITE_IN_PLACE;
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

/* True if the (standard L2) entry of a cluster being replaced reads as all zeroes. */
static bool entry_reads_zero(BlockDriverState *bs, uint64_t l2e)
{
    if (l2e & QCOW_OFLAG_COMPRESSED) {
        return false;
    }
    return (l2e & QCOW_OFLAG_ZERO) || (!(l2e & L2E_OFFSET_MASK) && !bs->backing);
}

/*
 * A fresh cluster (past data_hwm: past the end of the file, or in the tail
 * grown ahead with fallocate, never handed out since) reads as zero, so COW
 * parts that read as zero need not be written: the write covers only the
 * guest data (past the end of the file the file then ends inside the last
 * new cluster at worst, never before it starts; reads past the end see
 * zeroes, as in qemu). Not with extended L2 (the write range is already
 * trimmed to subclusters) nor with an external data file (whose unallocated
 * areas may hold anything).
 */
static void plan_skip_zero_cow(BlockDriverState *bs, Qcow2Alloc *a, uint64_t offset,
                               uint64_t end, uint64_t first_l2e, uint64_t last_l2e)
{
    BDRVQcow2State *s = bs->opaque;

    a->skip_head = a->skip_tail = false;
    if (offset == a->write_start && end >= a->write_end) {
        return; /* whole clusters: no COW to skip, and no need to ask the file length */
    }
    if (a->fill || qcow2_extl2(s) || qcow2_has_data_file(s) || !a->fresh) {
        return;
    }
    a->skip_head = entry_reads_zero(bs, first_l2e);
    a->skip_tail = entry_reads_zero(bs, last_l2e);
}

/*
 * With extended L2 entries, the guest range the allocation writes: a
 * first / last cluster without data to keep (no host cluster, or filling
 * unallocated subclusters of its host cluster) is written only from / to the
 * subcluster boundary around the guest data; an allocated subcluster being
 * filled around is not rewritten at all (its data may be changing under an
 * in-place write). Without extended L2, whole clusters.
 */
static void plan_write_range(BDRVQcow2State *s, Qcow2Alloc *a, uint64_t offset, uint64_t end,
                             uint64_t first_l2e, uint64_t first_bm, uint64_t last_l2e,
                             uint64_t last_bm)
{
    uint64_t scs = s->subcluster_size;
    uint64_t last_cstart = qcow2_start_of_cluster(s, end - 1);

    a->write_start = a->guest_start;
    a->write_end = a->guest_end;
    if (!qcow2_extl2(s)) {
        return;
    }
    if (a->fill) {
        uint64_t m0 = subcluster_mask(s, a->guest_start, offset, offset + 1);
        uint64_t m1 = subcluster_mask(s, a->guest_start, end - 1, end);

        a->write_start = (first_bm & m0) ? offset : offset & ~(scs - 1);
        a->write_end = (first_bm & m1) ? end : round_up_u64(end, scs);
    } else {
        if (!entry_has_host(s, first_l2e) && !(first_l2e & QCOW_OFLAG_COMPRESSED)) {
            a->write_start = offset & ~(scs - 1);
        }
        if (last_cstart + s->cluster_size == a->guest_end &&
            !entry_has_host(s, last_l2e) && !(last_l2e & QCOW_OFLAG_COMPRESSED)) {
            a->write_end = round_up_u64(end, scs);
        }
    }
    if (a->write_end > a->guest_end) {
        a->write_end = a->guest_end;
    }
}

/*
 * Under the lock: plans the write at offset. Returns 1 with *n bytes
 * writable in place at *host, 0 after registering an allocation a for the
 * first *n bytes (new clusters at a->host, or with a->fill the subclusters
 * of the existing cluster at a->host), or -errno. May wait (and re-plan).
 */
static int coroutine_fn plan_write(BlockDriverState *bs, uint64_t offset, uint64_t *n,
                                   uint64_t *host, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, end = offset + *n, cstart, cend, first_host = 0;
    uint64_t first_l2e = 0, first_bm = 0, last_l2e = 0, last_bm = 0;
    uint8_t *l2;
    int idx, ret, nb = 0, kind = -1;
    Qcow2Alloc *other;

    for (;;) {
        uint64_t pos = offset;

        ret = qcow2_get_l2_table(bs, offset, false, &l2, &idx);
        if (ret < 0) {
            return ret;
        }
        nb = 0;
        kind = -1;
        /* Clusters of the same kind (in place and contiguous, or to allocate). */
        while (pos < end && idx + nb < s->l2_size) {
            uint64_t cpos = qcow2_start_of_cluster(s, pos);
            uint64_t to = end - cpos < cs ? end - cpos : cs;
            uint64_t l2e = l2 ? qcow2_l2_get(s, l2, idx + nb) : 0;
            uint64_t bm = l2 ? qcow2_l2_get_bitmap(s, l2, idx + nb) : 0;
            int k = write_kind(s, l2e, bm, pos - cpos, to);

            if (kind < 0) {
                kind = k;
                first_host = (l2e & L2E_OFFSET_MASK) + (pos - cpos);
                first_l2e = l2e;
                first_bm = bm;
            } else if (k != kind || kind == WRITE_FILL ||
                       (k == WRITE_IN_PLACE && (l2e & L2E_OFFSET_MASK) !=
                        first_host - (offset & (cs - 1)) + (uint64_t)nb * cs)) {
                break;
            }
            last_l2e = l2e;
            last_bm = bm;
            nb++;
            pos = cpos + cs;
        }
        if (l2) {
            qcow2_cache_put(s->l2_cache, &l2);
        }
        *n = (pos < end ? pos : end) - offset;
        if (kind == WRITE_IN_PLACE) {
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
    a->fill = kind == WRITE_FILL;
    a->fresh = false;
    if (a->fill) {
        a->host = first_l2e & L2E_OFFSET_MASK;
    } else if (qcow2_has_data_file(s)) {
        a->host = cstart; /* data clusters sit at their guest offset, no refcounts */
    } else {
        uint64_t got;
        int64_t h = qcow2_alloc_clusters_upto(bs, (uint64_t)nb, &got, &a->fresh);

        if (h < 0) {
            return (int)h;
        }
        a->host = (uint64_t)h;
        qcow2_grow_ahead(bs, a->host + got * cs);
        if (got < (uint64_t)nb) {
            /* A shorter free run: this round writes only its clusters (all whole). */
            nb = (int)got;
            cend = cstart + got * cs;
            *n = (cend < end ? cend : end) - offset;
        }
    }
    a->guest_start = cstart;
    a->guest_end = cend;
    a->nb_clusters = nb;
    plan_write_range(s, a, offset, offset + *n, first_l2e, first_bm, last_l2e, last_bm);
    plan_skip_zero_cow(bs, a, offset, offset + *n, first_l2e, last_l2e);
    co_queue_init(&a->waiters);
    a->next = s->allocs;
    s->allocs = a;
    return 0;
}

/* The bytes of the allocation a before and after [offset, offset + n) that COW copies. */
static void cow_sizes(BDRVQcow2State *s, const Qcow2Alloc *a, uint64_t offset, uint64_t n,
                      uint64_t *phead, uint64_t *ptail)
{
    uint64_t head = offset - a->write_start, tail = a->write_end - (offset + n);

    if (a->write_end > s->size && tail) {
        /* Past the guest end: nothing to copy, the tail reads as zero. */
        uint64_t real = s->size > offset + n ? s->size - (offset + n) : 0;

        tail = real < tail ? real : tail;
    }
    *phead = a->skip_head ? 0 : head;
    *ptail = a->skip_tail ? 0 : tail;
}

/* Entries of the on-stack vector of one allocating write (COW head, guest pieces, COW tail). */
#define ALLOC_IOV 16

/*
 * Copies the entries of [off, off + bytes) of src into dst[0..cap) (by
 * reference); returns how many, or -1 if they do not fit.
 */
static int slice_iov(struct iovec *dst, int cap, const IOVector *src, size_t off, size_t bytes)
{
    int k = 0;

    for (int i = 0; i < src->niov && bytes > 0; i++) {
        size_t len = src->iov[i].iov_len;

        if (off >= len) {
            off -= len;
            continue;
        }
        len -= off;
        len = len < bytes ? len : bytes;
        if (k == cap) {
            return -1;
        }
        dst[k].iov_base = (char *)src->iov[i].iov_base + off;
        dst[k++].iov_len = len;
        bytes -= len;
        off = 0;
    }
    return k;
}

/*
 * The vector of an allocating write: head bytes of cow, [qoff, qoff + n) of
 * qiov, tail bytes of cow + head. It lives in iov[ALLOC_IOV] (no allocation)
 * unless the guest vector has more pieces than that holds; then v is a heap
 * vector that iovector_destroy() frees.
 */
static void alloc_vector(IOVector *v, struct iovec *iov, uint8_t *cow, uint64_t head,
                         uint64_t tail, IOVector *qiov, size_t qoff, uint64_t n)
{
    int k = 0, g;

    if (head) {
        iov[k].iov_base = cow;
        iov[k++].iov_len = head;
    }
    g = slice_iov(iov + k, ALLOC_IOV - 1 - k, qiov, qoff, n);
    if (g >= 0) {
        k += g;
        if (tail) {
            iov[k].iov_base = cow + head;
            iov[k++].iov_len = tail;
        }
        iovector_init_external(v, iov, k);
        return;
    }
    iovector_init(v, qiov->niov + 2);
    if (head) {
        iovector_add(v, cow, head);
    }
    iovector_concat(v, qiov, qoff, n);
    if (tail) {
        iovector_add(v, cow + head, tail);
    }
}

/* Without the lock: COW head/tail + guest data into the new clusters. */
static int coroutine_fn alloc_write_data(BlockDriverState *bs, Qcow2Alloc *a, uint64_t offset,
                                         uint64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVQcow2State *s = bs->opaque;
    struct iovec iov[ALLOC_IOV];
    uint64_t head, tail;
    Qcow2Buf *b = NULL;
    IOVector v;
    int ret = 0;

    cow_sizes(s, a, offset, n, &head, &tail);
    if (head + tail) {
        /* head, tail < one cluster each: they fit in the set's COW area. */
        b = qcow2_buf_get(s);
        if (!b) {
            return -ENOMEM;
        }
    }
    if (head) {
        IOVector h;

        iovector_init_buf(&h, b->cow, head);
        ret = qcow2_read_guest_buf(bs, a->write_start, head, &h, 0, b);
    }
    if (ret >= 0 && tail) {
        IOVector t;

        iovector_init_buf(&t, b->cow + head, tail);
        ret = qcow2_read_guest_buf(bs, offset + n, tail, &t, 0, b);
    }
    if (ret < 0) {
        qcow2_buf_put(s, b);
        return ret;
    }
    alloc_vector(&v, iov, b ? b->cow : NULL, head, tail, qiov, qiov_offset, n);
    BLKDBG_EVENT(s->data_file, (head || tail) ? BLKDBG_COW_WRITE : BLKDBG_WRITE_AIO);
    ret = qcow2_write_new_data(bs, a->host + (offset - head - a->guest_start), &v);
    iovector_destroy(&v);
    qcow2_buf_put(s, b);
    return ret;
}

/*
 * New extended L2 bitmap of a cluster whose subclusters in mask were
 * written: they become allocated; the others keep their state (a compressed
 * old entry has no bitmap: the whole cluster was written).
 */
static uint64_t written_bitmap(uint64_t old, uint64_t old_bm, uint64_t mask)
{
    uint64_t alloc, zero;

    if (old & QCOW_OFLAG_COMPRESSED) {
        return EXTL2_ALL_ALLOC;
    }
    alloc = (old_bm & EXTL2_ALL_ALLOC) | mask;
    zero = (old_bm >> 32) & ~alloc;
    return alloc | (zero << 32);
}

/* Under the lock: points the L2 entries at the new clusters (or sets the filled bits). */
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
        uint64_t old = qcow2_l2_get(s, l2, idx + i), obm = qcow2_l2_get_bitmap(s, l2, idx + i);
        uint64_t host = a->host + (uint64_t)i * s->cluster_size;
        uint64_t cstart = a->guest_start + (uint64_t)i * s->cluster_size;
        uint64_t mask = subcluster_mask(s, cstart, a->write_start, a->write_end);

        if (!a->fill) {
            if ((old & L2E_OFFSET_MASK) != host || (old & QCOW_OFLAG_COMPRESSED)) {
                ret = qcow2_free_old_entry(bs, old, QCOW2_DISCARD_OTHER);
                if (ret < 0) {
                    break;
                }
            }
            qcow2_l2_set(s, l2, idx + i, host | QCOW_OFLAG_COPIED);
        }
        qcow2_l2_set_bitmap(s, l2, idx + i, written_bitmap(old, obm, mask));
    }
    qcow2_cache_mark_dirty(s->l2_cache, l2);
    qcow2_cache_put(s->l2_cache, &l2);
    /* The data must be durable before an L2 table referencing it is written
     * (a fill or a data-file cluster changes no refcount that would say so). */
    s->l2_needs_barrier = true;
    return ret;
}

/*
 * In-place data writes go to clusters the L2 table already references; in
 * overlap-check=all they are checked too, against the metadata known in
 * memory (header, L1 tables, refcount table and blocks, active L2 tables,
 * snapshot table, bitmap directory): a few range tests plus one pass over
 * the L1 and refcount tables per request, no I/O. The inactive L2 tables
 * (which need the snapshots' L1 tables read from disk) are left to the
 * metadata writes' checks. Other modes do not check guest data writes.
 */
static int coroutine_fn check_data_overlap(BlockDriverState *bs, uint64_t host, uint64_t len)
{
    BDRVQcow2State *s = bs->opaque;

    if (qcow2_has_data_file(s) || (s->overlap_check & QCOW2_OL_ALL) != QCOW2_OL_ALL) {
        return 0;
    }
    return qcow2_check_overlap(bs, QCOW2_OL_INACTIVE_L2, host, len);
}

/* New clusters in the image file must not hit metadata (a data file has none). Holds s->lock. */
static int alloc_check_overlap(BlockDriverState *bs, const Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;

    if (a->fill) {
        return check_data_overlap(bs, a->host, s->cluster_size);
    }
    if (!qcow2_has_data_file(s)) {
        return qcow2_check_overlap(bs, 0, a->host, (uint64_t)a->nb_clusters * s->cluster_size);
    }
    return 0;
}

/*
 * After the data of allocation a was placed (ret 0) or failed: links the
 * clusters, or frees the new ones, and ends a. Takes and drops s->lock.
 */
static int coroutine_fn alloc_finish(BlockDriverState *bs, Qcow2Alloc *a, int ret)
{
    BDRVQcow2State *s = bs->opaque;

    co_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = alloc_link(bs, a);
    } else if (!qcow2_has_data_file(s) && !a->fill) {
        qcow2_free_clusters(bs, a->host, (uint64_t)a->nb_clusters * s->cluster_size,
                            QCOW2_DISCARD_NEVER);
    }
    qcow2_alloc_remove(s, a);
    co_mutex_unlock(&s->lock);
    return ret;
}

int coroutine_fn qcow2_co_pwritev_alloc(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        IOVector *qiov, size_t qiov_offset, unsigned flags)
{
    BDRVQcow2State *s = bs->opaque;
    /* The metadata overlap check of in-place writes (check_data_overlap) needs the lock. */
    bool may_hit = qcow2_has_data_file(s) || (s->overlap_check & QCOW2_OL_ALL) != QCOW2_OL_ALL;

    while (bytes) {
        uint64_t n = bytes, host = 0;
        Qcow2Alloc a;
        int ret;

        /*
         * The rest of the request in place in one cached, COPIED cluster: no
         * lock, as the read hit. plan_write under the lock took 400 more
         * instructions per 4 KiB write than raw (callgrind; bench/README.md).
         */
        if (may_hit && qcow2_map_plain_hit_need(s, offset, bytes, &host, QCOW_OFLAG_COPIED)) {
            return bdrv_co_pwritev_part(s->data_file, (int64_t)host, (int64_t)bytes, qiov,
                                        qiov_offset, 0);
        }
        co_mutex_lock(&s->lock);
        ret = plan_write(bs, offset, &n, &host, &a);
        if (ret == 1) {
            ret = check_data_overlap(bs, host, n);
            co_mutex_unlock(&s->lock);
            if (ret == 0) {
                ret = bdrv_co_pwritev_part(s->data_file, (int64_t)host, (int64_t)n, qiov,
                                           qiov_offset, 0);
            }
        } else if (ret == 0) {
            ret = alloc_check_overlap(bs, &a);
            co_mutex_unlock(&s->lock);
            if (ret == 0) {
                ret = alloc_write_data(bs, &a, offset, n, qiov, qiov_offset);
            }
            ret = alloc_finish(bs, &a, ret);
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

/*
 * One step of copy offloading (see qcow2_co_copy_range_to): [offset, offset
 * + *n) is placed by fill() in place or into new clusters linked after it.
 */
static int coroutine_fn copy_range_step(BlockDriverState *bs, uint64_t offset, uint64_t *n,
                                        BdrvCopyFillFn *fill, void *opaque)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t host = 0, head, tail;
    Qcow2Alloc a;
    int ret;

    co_mutex_lock(&s->lock);
    ret = plan_write(bs, offset, n, &host, &a);
    if (ret == 1) {
        ret = check_data_overlap(bs, host, *n);
        co_mutex_unlock(&s->lock);
        return ret < 0 ? ret : fill(opaque, s->data_file->bs, (int64_t)host, (int64_t)offset,
                                    (int64_t)*n);
    }
    if (ret < 0) {
        co_mutex_unlock(&s->lock);
        return ret;
    }
    cow_sizes(s, &a, offset, *n, &head, &tail);
    if (head + tail) {
        ret = -ENOTSUP; /* copy-on-write of the rest of a cluster: not offloaded */
    } else {
        ret = alloc_check_overlap(bs, &a);
    }
    co_mutex_unlock(&s->lock);
    if (ret == 0) {
        ret = fill(opaque, s->data_file->bs, (int64_t)(a.host + (offset - a.guest_start)),
                   (int64_t)offset, (int64_t)*n);
    }
    return alloc_finish(bs, &a, ret);
}

/*
 * Copy offloading into the image (BlockDriver.co_copy_range_to): as a write
 * of [offset, offset + bytes), with fill() in place of the data transfer.
 * Ranges that would need copy-on-write of part of a cluster, and encrypted
 * images, are -ENOTSUP (the caller writes them).
 */
int coroutine_fn qcow2_co_copy_range_to(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        BdrvCopyFillFn *fill, void *opaque)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->crypt_method) {
        return -ENOTSUP;
    }
    ret = qcow2_bitmaps_note_write(bs, (uint64_t)offset, (uint64_t)bytes);
    while (ret == 0 && bytes > 0) {
        uint64_t n = (uint64_t)bytes;

        ret = copy_range_step(bs, (uint64_t)offset, &n, fill, opaque);
        offset += (int64_t)n;
        bytes -= (int64_t)n;
    }
    return ret;
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

/*
 * Extended L2: zeroes (zero bit) or discards (unallocated, or zero when a
 * backing file could show through) the subclusters in mask of L2 entry idx.
 * The host cluster stays unless no allocated subcluster remains and unmap
 * allows dropping it. A compressed cluster cannot be changed in part:
 * write-zeroes returns -ENOTSUP (the block layer then writes zeroes),
 * discard leaves it (discard is advisory).
 */
static int coroutine_fn zero_subclusters(BlockDriverState *bs, uint8_t *l2, int idx,
                                         uint64_t mask, bool zero, bool unmap)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = qcow2_l2_get(s, l2, idx), obm = qcow2_l2_get_bitmap(s, l2, idx);
    uint64_t alloc, zbits;

    if (old & QCOW_OFLAG_COMPRESSED) {
        return zero ? -ENOTSUP : 0;
    }
    alloc = obm & EXTL2_ALL_ALLOC & ~mask;
    zbits = obm >> 32;
    if (zero || bs->backing) {
        zbits |= mask;
    } else {
        zbits &= ~mask;
    }
    if (!alloc && unmap && (old & L2E_OFFSET_MASK) && !qcow2_has_data_file(s)) {
        int ret = qcow2_free_old_entry(bs, old, zero ? QCOW2_DISCARD_OTHER
                                                     : QCOW2_DISCARD_REQUEST);

        if (ret < 0) {
            return ret;
        }
        qcow2_l2_set(s, l2, idx, 0);
    }
    qcow2_l2_set_bitmap(s, l2, idx, alloc | (zbits << 32));
    return 0;
}

/* Zeroes / discards the part [offset, to) of one cluster (whole or, extended L2, in part). */
static int coroutine_fn zero_one_cluster(BlockDriverState *bs, uint8_t *l2, int idx,
                                         uint64_t offset, uint64_t to, bool zero, bool unmap,
                                         bool full)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cpos = qcow2_start_of_cluster(s, offset);
    uint64_t old = qcow2_l2_get(s, l2, idx), nbm, ne;
    bool free_host;
    int ret = 0;

    if (offset != cpos || (to != cpos + s->cluster_size && to < s->size)) {
        return zero_subclusters(bs, l2, idx, subcluster_mask(s, cpos, offset, to), zero, unmap);
    }
    zero_entry(bs, old, zero, unmap, full, &ne, &nbm, &free_host);
    if (free_host) {
        ret = qcow2_free_old_entry(bs, old, zero ? QCOW2_DISCARD_OTHER : QCOW2_DISCARD_REQUEST);
    }
    qcow2_l2_set(s, l2, idx, ne);
    qcow2_l2_set_bitmap(s, l2, idx, nbm);
    return ret;
}

/* True if the L2 table for offset is shared with a snapshot (must be copied first). */
static bool l2_shared(BDRVQcow2State *s, uint64_t offset)
{
    uint64_t l1i = qcow2_l1_index(s, offset);

    return l1i < s->l1_size && (s->l1_table[l1i] & L1E_OFFSET_MASK) &&
           !(s->l1_table[l1i] & QCOW_OFLAG_COPIED);
}

/*
 * offset and bytes are multiples of the cluster size (with extended L2
 * entries, of the subcluster size), or the range ends at the guest end.
 */
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
        ret = qcow2_get_l2_table(bs, offset, zero || (!full && bs->backing && s->version >= 3) ||
                                 l2_shared(s, offset), &l2, &idx);
        if (ret < 0 || !l2) {
            offset = stop;
            continue;
        }
        ret = qcow2_mark_dirty(bs);
        while (ret == 0 && offset < stop) {
            uint64_t cnext = qcow2_start_of_cluster(s, offset) + s->cluster_size;
            uint64_t to = cnext < stop ? cnext : stop;

            ret = zero_one_cluster(bs, l2, idx, offset, to, zero, unmap, full);
            offset = to;
            idx++;
        }
        qcow2_cache_mark_dirty(s->l2_cache, l2);
        qcow2_cache_put(s->l2_cache, &l2);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}
