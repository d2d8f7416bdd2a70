/*
 * qcow2: guest requests. Metadata lookups take s->lock briefly; guest data
 * moves between the caller's vector and the data file (or backing file)
 * without the lock and without copies, except for compressed clusters.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "drivers/drivers.h"

/*
 * True if a read of the backing node may skip the generic request path and
 * go straight to its qcow2 read: a read-only qcow2 node (so no write, hence
 * no serialising request, can be in flight there for a tracked read to wait
 * for or hold up), byte-aligned, not copy-on-read, not drained, in our
 * AioContext. Its in-flight count is still raised, so a drain waits for us.
 * This keeps a chain of mostly empty overlays from paying the whole request
 * path once per layer.
 */
static bool backing_shortcut(BlockDriverState *bs, BlockDriverState *b)
{
    return b->drv == &bdrv_qcow2 && b->read_only && !(b->open_flags & BDRV_O_COPY_ON_READ) &&
           b->quiesce_counter == 0 && b->bl.request_alignment == 1 &&
           b->aio_context == bs->aio_context;
}

/*
 * True if offset lies under an L1 entry without an L2 table (and no one is
 * updating metadata): unallocated as far as that entry reaches, *n shortened
 * to it. The cheap answer for the empty overlays of a backing chain.
 */
static bool l1_hole(BDRVQcow2State *s, uint64_t offset, uint64_t *n)
{
    uint64_t l1i = qcow2_l1_index(s, offset), span = s->cluster_size << s->l2_bits, left;

    if ((l1i < s->l1_size && (s->l1_table[l1i] & L1E_OFFSET_MASK)) ||
        co_mutex_is_locked(&s->lock)) {
        return false;
    }
    left = span - (offset & (span - 1));
    if (*n > left) {
        *n = left;
    }
    return true;
}

/* Reads an unallocated range: from the backing file as far as it goes, else zeroes. */
static int coroutine_fn read_unallocated(BlockDriverState *bs, uint64_t offset, uint64_t n,
                                         IOVector *qiov, size_t qoff)
{
    uint64_t in = 0;

    if (bs->backing && bs->backing->bs) {
        BlockDriverState *b = bs->backing->bs;
        bool direct = backing_shortcut(bs, b);
        int64_t blen = direct ? (int64_t)((BDRVQcow2State *)b->opaque)->size
                              : bdrv_co_getlength(b);
        int ret = 0;

        if (blen < 0) {
            return (int)blen;
        }
        if ((int64_t)offset < blen) {
            in = (uint64_t)blen - offset < n ? (uint64_t)blen - offset : n;
        }
        if (in && direct) {
            bdrv_inc_in_flight(b);
            ret = qcow2_read_guest(b, offset, in, qiov, qoff); /* b's own buffers */
            bdrv_dec_in_flight(b);
        } else if (in) {
            ret = bdrv_co_preadv_part(bs->backing, (int64_t)offset, (int64_t)in, qiov, qoff, 0);
        }
        if (ret < 0) {
            return ret;
        }
    }
    if (n > in) {
        iovector_memset(qiov, qoff + in, 0, n - in);
    }
    return 0;
}

/*
 * Reads [offset, offset + n) of the compressed cluster described by l2e,
 * through the decompressed-cluster cache; a miss inflates on a worker
 * thread, with a compression slot, or for a COW with b (the caller's pooled
 * buffer set). COW never takes a compression slot: compressed writers hold
 * slots while they wait for the allocations COW belongs to, so a COW
 * waiting for a slot could wait for itself.
 */
static int coroutine_fn read_compressed(BlockDriverState *bs, uint64_t l2e, uint64_t offset,
                                        uint64_t n, IOVector *qiov, size_t qoff, Qcow2Buf *b)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t coff, clen;
    int ret;

    qcow2_decode_compressed(s, l2e, &coff, &clen);
    if (coff < s->cluster_size || coff + clen >= QCOW2_MAX_OFFSET) {
        co_mutex_lock(&s->lock);
        ret = qcow2_signal_corruption(bs, "compressed cluster at host offset 0x%llx is invalid",
                                      (unsigned long long)coff);
        co_mutex_unlock(&s->lock);
        return ret;
    }
    return qcow2_read_compressed_cached(bs, coff, clen, offset, n, qiov, qoff, b);
}

int coroutine_fn qcow2_read_guest_buf(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                      IOVector *qiov, size_t qoff, Qcow2Buf *b)
{
    BDRVQcow2State *s = bs->opaque;

    while (bytes) {
        uint64_t n = bytes, host;
        Qcow2MapType type;
        int ret;

        if (qcow2_map_plain_hit(s, offset, n, &host)) {
            /* The whole (rest of the) request in one cached plain cluster: checked. */
            return bdrv_co_preadv_checked(s->data_file, (int64_t)host, (int64_t)n, qiov, qoff);
        }
        if (l1_hole(s, offset, &n)) {
            type = QCOW2_MAP_UNALLOCATED;
            ret = 0;
        } else {
            ret = qcow2_map_locked(bs, offset, &n, &host, &type);
        }
        if (ret < 0) {
            return ret;
        }
        switch (type) {
        case QCOW2_MAP_UNALLOCATED:
            ret = read_unallocated(bs, offset, n, qiov, qoff);
            break;
        case QCOW2_MAP_ZERO_PLAIN:
        case QCOW2_MAP_ZERO_ALLOC:
            iovector_memset(qiov, qoff, 0, n);
            break;
        case QCOW2_MAP_NORMAL:
            ret = bdrv_co_preadv_part(s->data_file, (int64_t)host, (int64_t)n, qiov, qoff, 0);
            break;
        case QCOW2_MAP_COMPRESSED:
            if (!b && n < bytes && qcow2_cread_parallel(s, bytes)) {
                /* More clusters follow: inflate them in parallel. */
                return qcow2_read_compressed_parallel(bs, offset, bytes, qiov, qoff);
            }
            ret = read_compressed(bs, host, offset, n, qiov, qoff, b);
            break;
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        qoff += n;
    }
    return 0;
}

int coroutine_fn qcow2_read_guest(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                  IOVector *qiov, size_t qoff)
{
    return qcow2_read_guest_buf(bs, offset, bytes, qiov, qoff, NULL);
}

int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    return qcow2_read_guest(bs, (uint64_t)offset, (uint64_t)bytes, qiov, qiov_offset);
}

/* ---------------------------------------------------------------------- */
/* Compressed writes */

/*
 * Host bytes for clen bytes of compressed data (s->lock held). Compressed
 * clusters are packed: the next one goes right after the previous one when
 * it fits in that host cluster, whose refcount then counts one more user;
 * otherwise a new cluster is allocated (refcount 1), and when it directly
 * follows that host cluster the data straddles the two, as qemu-img packs.
 */
static int64_t coroutine_fn alloc_compressed(BlockDriverState *bs, uint64_t clen)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t fbo = s->free_byte_offset, cs = s->cluster_size;
    int64_t host;
    int ret;

    if (fbo && clen <= cs - (fbo & (cs - 1))) {
        ret = qcow2_update_cluster_refcount(bs, qcow2_start_of_cluster(s, fbo), cs, 1);
        if (ret < 0) {
            return ret;
        }
        host = (int64_t)fbo;
    } else {
        host = qcow2_alloc_clusters(bs, div_round_up_u64(clen, cs));
        if (host < 0) {
            return host;
        }
        /*
         * The new cluster follows the partly used one: the data starts in the
         * free tail of that one and runs on into the new one (the descriptor
         * may span host clusters; each cluster it touches holds a reference),
         * so no tail is left empty.
         */
        if (fbo && (uint64_t)host == qcow2_start_of_cluster(s, fbo) + cs) {
            ret = qcow2_update_cluster_refcount(bs, qcow2_start_of_cluster(s, fbo), cs, 1);
            if (ret < 0) {
                return ret; /* the new cluster leaks: referenced by nothing */
            }
            host = (int64_t)fbo;
        }
    }
    s->free_byte_offset = ((uint64_t)host + clen) & (cs - 1) ? (uint64_t)host + clen : 0;
    return host;
}

/* The guest data of [qoff, qoff + len) if it is one piece of the vector, else NULL. */
static const uint8_t *contiguous(const IOVector *qiov, size_t qoff, size_t len)
{
    for (int i = 0; i < qiov->niov; i++) {
        if (qoff < qiov->iov[i].iov_len) {
            return qiov->iov[i].iov_len - qoff >= len ? (uint8_t *)qiov->iov[i].iov_base + qoff
                                                      : NULL;
        }
        qoff -= qiov->iov[i].iov_len;
    }
    return NULL;
}

/*
 * Allocates host bytes for the clen compressed bytes of slot->cbuf, writes
 * them and points the L2 entry of the guest cluster at offset to them.
 */
static int coroutine_fn store_compressed(BlockDriverState *bs, uint64_t offset,
                                         const uint8_t *data, uint64_t clen)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, nsec, l2e, old;
    Qcow2Alloc a = { 0 };
    Qcow2Alloc *other;
    uint8_t *l2;
    int64_t host;
    int ret, idx;

    co_mutex_lock(&s->lock);
    while ((other = qcow2_find_alloc_overlap(s, offset, offset + cs))) {
        co_queue_wait(&other->waiters, &s->lock);
    }
    ret = qcow2_mark_dirty(bs);
    host = ret < 0 ? ret : alloc_compressed(bs, clen);
    if (host < 0) {
        co_mutex_unlock(&s->lock);
        return (int)host;
    }
    nsec = div_round_up_u64(((uint64_t)host & 511) + clen, 512);
    a.guest_start = offset;
    a.guest_end = offset + cs;
    a.host = (uint64_t)host;
    a.nb_clusters = 1;
    co_queue_init(&a.waiters);
    a.next = s->allocs;
    s->allocs = &a;
    ret = qcow2_check_overlap(bs, 0, (uint64_t)host, clen);
    co_mutex_unlock(&s->lock);
    if (ret == 0) {
        /* Exactly clen bytes: the next packed cluster may follow at once. */
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_COMPRESSED);
        ret = qcow2_pwrite(bs->file, host, (int64_t)clen, data);
    }
    co_mutex_lock(&s->lock);
    if (ret == 0) {
        ret = qcow2_get_l2_table(bs, offset, true, &l2, &idx);
    }
    if (ret == 0) {
        old = qcow2_l2_get(s, l2, idx);
        l2e = (uint64_t)host | QCOW_OFLAG_COMPRESSED | ((nsec - 1) << s->csize_shift);
        qcow2_l2_set(s, l2, idx, l2e);
        qcow2_l2_set_bitmap(s, l2, idx, 0);
        qcow2_cache_mark_dirty(s->l2_cache, l2);
        qcow2_cache_put(s->l2_cache, &l2);
        ret = qcow2_free_old_entry(bs, old, QCOW2_DISCARD_OTHER);
    } else {
        qcow2_free_clusters(bs, qcow2_start_of_cluster(s, (uint64_t)host),
                            (uint64_t)host + clen - qcow2_start_of_cluster(s, (uint64_t)host),
                            QCOW2_DISCARD_NEVER);
    }
    qcow2_alloc_remove(s, &a);
    co_mutex_unlock(&s->lock);
    return ret;
}

/* A compressed write of several clusters, spread over a few coroutines. */
typedef struct CompressJob {
    BlockDriverState *bs;
    uint64_t offset, end;       /* next cluster to claim, end of the request */
    IOVector *qiov;
    size_t qoff;                /* vector offset of the next cluster */
    uint64_t store_next;        /* the cluster whose turn it is to be stored */
    int ret;
    CoQueue order;              /* workers waiting for their turn to store */
    Qcow2Workers w;
} CompressJob;

/*
 * Writes one cluster compressed (or plainly if it does not shrink). The
 * compression runs on a worker thread; the cluster's bytes are read from the
 * caller's vector in place when they are contiguous. With a job, clusters
 * compress in parallel but are stored in guest order, so that the host file
 * keeps them in order too (sequential reads stay sequential).
 */
static int coroutine_fn write_compressed_cluster(BlockDriverState *bs, Qcow2CSlot *slot,
                                                 uint64_t offset, uint64_t bytes,
                                                 IOVector *qiov, size_t qoff, CompressJob *j)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    const uint8_t *src;
    ssize_t clen;
    int ret;

    src = bytes == cs ? contiguous(qiov, qoff, cs) : NULL;
    if (!src) {
        iovector_to_buf(qiov, qoff, slot->dbuf, bytes);
        memset(slot->dbuf + bytes, 0, cs - bytes); /* the partial last cluster */
        src = slot->dbuf;
    }
    clen = qcow2_co_compress(bs, slot, src);
    while (j && j->store_next != offset && j->ret == 0) {
        co_queue_wait(&j->order, NULL);
    }
    if (j && j->ret) {
        ret = j->ret;
    } else if (clen >= 0) {
        ret = store_compressed(bs, offset, slot->cbuf, (uint64_t)clen);
    } else if (clen == -ENOSPC) {
        ret = qcow2_co_pwritev_alloc(bs, offset, bytes, qiov, qoff, 0);
    } else {
        ret = (int)clen;
    }
    if (j) {
        if (ret < 0 && j->ret == 0) {
            j->ret = ret;
        }
        j->store_next = offset + bytes;
        co_queue_restart_all(&j->order);
    }
    return ret;
}

static void coroutine_fn compress_job_worker(void *opaque)
{
    CompressJob *j = opaque;
    BDRVQcow2State *s = j->bs->opaque;

    while (j->ret == 0 && j->offset < j->end) {
        /* Slot first, then the cluster: the oldest claimed cluster always has a slot. */
        Qcow2CSlot *slot = qcow2_cslot_get(j->bs);
        uint64_t off = j->offset, n;
        size_t qoff = j->qoff;

        if (!slot) {
            j->ret = j->ret ? j->ret : -ENOMEM;
            co_queue_restart_all(&j->order);
            break;
        }
        if (j->ret || off >= j->end) {
            qcow2_cslot_put(j->bs, slot);
            break;
        }
        n = j->end - off < s->cluster_size ? j->end - off : s->cluster_size;
        j->offset += n;
        j->qoff += n;
        write_compressed_cluster(j->bs, slot, off, n, j->qiov, qoff, j);
        qcow2_cslot_put(j->bs, slot);
    }
    qcow2_worker_done(&j->w);
}

static int coroutine_fn write_compressed(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                         IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    CompressJob j = { .bs = bs, .offset = offset, .end = offset + bytes, .qiov = qiov,
                      .qoff = qoff, .store_next = offset };
    uint64_t nclusters = div_round_up_u64(bytes, s->cluster_size);
    int workers = qcow2_compress_workers(s);

    if (qcow2_has_data_file(s)) {
        return -ENOTSUP; /* compressed clusters cannot live in an external data file */
    }
    if (qcow2_offset_into_cluster(s, offset) ||
        (qcow2_offset_into_cluster(s, bytes) && offset + bytes != s->size)) {
        return -EINVAL; /* compressed writes cover whole clusters */
    }
    if (nclusters <= 1 && bytes) {
        Qcow2CSlot *slot = qcow2_cslot_get(bs);
        int ret;

        if (!slot) {
            return -ENOMEM;
        }
        ret = write_compressed_cluster(bs, slot, offset, bytes, qiov, qoff, NULL);
        qcow2_cslot_put(bs, slot);
        return ret;
    }
    co_queue_init(&j.order);
    qcow2_workers_run(&j.w, workers, nclusters, compress_job_worker, &j);
    return j.ret;
}

int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    int ret = qcow2_bitmaps_note_write(bs, (uint64_t)offset, (uint64_t)bytes);

    if (ret < 0) {
        return ret;
    }
    if (flags & BDRV_REQ_WRITE_COMPRESSED) {
        return write_compressed(bs, (uint64_t)offset, (uint64_t)bytes, qiov, qiov_offset);
    }
    return qcow2_co_pwritev_alloc(bs, (uint64_t)offset, (uint64_t)bytes, qiov, qiov_offset, 0);
}

/* ---------------------------------------------------------------------- */
/* Write-zeroes, discard, flush, status */

/* Zero bytes written by copy-on-write of zeroes into a compressed cluster. */
static const uint8_t zero_chunk[64 * 1024];

/*
 * Extended L2 entries: write-zeroes on [offset, offset + bytes), some of the
 * subclusters of one cluster. A compressed cluster cannot change in part,
 * so if it is one the range is written as zero data: an allocating write
 * that copies the rest of the cluster (COW) into a normal cluster. Returns
 * 1 if done so, 0 if the cluster is not compressed (the caller zeroes the
 * subclusters), or -errno. If the cluster changes meanwhile, either way is
 * still correct: zero data is what write-zeroes means, and the subcluster
 * path refuses a compressed cluster (the block layer then writes zeroes).
 */
static int coroutine_fn zero_part_of_compressed(BlockDriverState *bs, uint64_t offset,
                                                uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = bytes, host;
    Qcow2MapType type;
    IOVector v;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_get_host_offset(bs, offset, &n, &host, &type);
    co_mutex_unlock(&s->lock);
    if (ret < 0 || type != QCOW2_MAP_COMPRESSED) {
        return ret;
    }
    iovector_init(&v, (int)div_round_up_u64(bytes, sizeof(zero_chunk)));
    for (uint64_t done = 0; done < bytes; done += sizeof(zero_chunk)) {
        uint64_t len = bytes - done < sizeof(zero_chunk) ? bytes - done : sizeof(zero_chunk);

        iovector_add(&v, (void *)zero_chunk, (size_t)len);
    }
    ret = qcow2_co_pwritev_alloc(bs, offset, bytes, &v, 0, 0);
    iovector_destroy(&v);
    return ret < 0 ? ret : 1;
}

/* True if [from, to) covers less than the whole cluster (the guest end counts as its end). */
static bool partial_cluster(BDRVQcow2State *s, uint64_t from, uint64_t to)
{
    return qcow2_offset_into_cluster(s, from) ||
           (qcow2_offset_into_cluster(s, to) && to < s->size);
}

int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        BdrvRequestFlags flags)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = (uint64_t)(offset + bytes);
    int ret;

    if (s->version < 3) {
        return -ENOTSUP; /* no zero clusters in v2: the block layer writes zeroes */
    }
    /* The last cluster may be partial when the guest size is unaligned. */
    if (((uint64_t)offset & (s->subcluster_size - 1)) ||
        ((end & (s->subcluster_size - 1)) && end != s->size)) {
        return -ENOTSUP;
    }
    ret = qcow2_bitmaps_note_write(bs, (uint64_t)offset, (uint64_t)bytes);
    if (ret < 0) {
        return ret;
    }
    if (qcow2_extl2(s)) {
        /* Partial first and last clusters: copy-on-write if compressed. */
        uint64_t from = (uint64_t)offset, cend = qcow2_start_of_cluster(s, from) + s->cluster_size;
        uint64_t to = end < cend ? end : cend;

        if (partial_cluster(s, from, to)) {
            ret = zero_part_of_compressed(bs, from, to - from);
            if (ret < 0) {
                return ret;
            }
            offset = (int64_t)(ret ? to : from);
        }
        from = qcow2_start_of_cluster(s, end);
        if (from >= cend && partial_cluster(s, from, end)) { /* not the first cluster */
            ret = zero_part_of_compressed(bs, from, end - from);
            if (ret < 0) {
                return ret;
            }
            end = ret ? from : end;
        }
        if ((uint64_t)offset >= end) {
            return 0;
        }
    }
    return qcow2_zero_or_discard(bs, (uint64_t)offset, end - (uint64_t)offset, true,
                                 flags & BDRV_REQ_MAY_UNMAP, false);
}

int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = (uint64_t)(offset + bytes);
    int ret;

    if (((uint64_t)offset & (s->subcluster_size - 1)) ||
        ((end & (s->subcluster_size - 1)) && end != s->size)) {
        return -ENOTSUP;
    }
    ret = qcow2_bitmaps_note_write(bs, (uint64_t)offset, (uint64_t)bytes);
    if (ret < 0) {
        return ret;
    }
    return qcow2_zero_or_discard(bs, (uint64_t)offset, (uint64_t)bytes, false, true, false);
}

int coroutine_fn qcow2_co_flush_to_os(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_cache_flush_all(bs);
    co_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Counts the clusters of the image file with a non-zero refcount, stopping
 * once the count passes limit. s->lock held.
 */
static int coroutine_fn count_used_clusters(BlockDriverState *bs, uint64_t nb_clusters,
                                            uint64_t limit, uint64_t *used)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t per_block = 1ULL << s->refcount_block_bits;

    *used = 0;
    for (uint64_t i = 0; i < s->refcount_table_size && i * per_block < nb_clusters; i++) {
        uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;
        uint64_t n = nb_clusters - i * per_block < per_block ? nb_clusters - i * per_block
                                                               : per_block;
        uint8_t *blk;
        int ret;

        if (!off) {
            continue;
        }
        ret = qcow2_cache_get(bs, s->refcount_cache, off, &blk);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t j = 0; j < n; j++) {
            *used += qcow2_refblock_get(s, blk, j) != 0;
        }
        qcow2_cache_put(s->refcount_cache, &blk);
        if (*used > limit) {
            break;
        }
    }
    return 0;
}

/*
 * Whether block status should ask the image file about data clusters
 * (BDRV_BLOCK_RECURSE), so that a hole under an allocated cluster reads as
 * zero, as qemu-img map and qemu-nbd report it. Asking costs an lseek per
 * extent, so, as QEMU does, only images whose file lacks clusters its
 * refcounts call used get it (preallocation=metadata, clusters punched out
 * of the file): more used clusters than the file really occupies (rounded
 * up), by over 1/9; and raw external data files always. Decided once per
 * open (s->status_recurse); errors leave it off. s->lock held.
 */
static bool coroutine_fn status_recurse(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t len, real;
    uint64_t used, real_clusters, limit;

    if (s->status_recurse >= 0) {
        return s->status_recurse;
    }
    s->status_recurse = qcow2_data_file_raw(s);
    if (s->status_recurse) {
        return true;
    }
    len = bdrv_co_getlength(bs->file->bs);
    real = bdrv_get_allocated_file_size(bs->file->bs);
    if (len <= 0 || real < 0) {
        return false;
    }
    real_clusters = ((uint64_t)real + s->cluster_size - 1) >> s->cluster_bits;
    limit = real_clusters + real_clusters / 9;
    if (count_used_clusters(bs, ((uint64_t)len + s->cluster_size - 1) >> s->cluster_bits,
                            limit, &used) == 0) {
        s->status_recurse = used > limit;
    }
    return s->status_recurse;
}

int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                       int64_t bytes, int64_t *pnum, int64_t *map,
                                       BlockDriverState **file)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = (uint64_t)bytes, host;
    Qcow2MapType type;
    bool recurse;
    int ret;

    ret = qcow2_map_locked(bs, (uint64_t)offset, &n, &host, &type);
    recurse = false;
    if (ret >= 0 && want_zero && type == QCOW2_MAP_NORMAL) {
        if (s->status_recurse < 0) {
            co_mutex_lock(&s->lock);
            status_recurse(bs);
            co_mutex_unlock(&s->lock);
        }
        recurse = s->status_recurse > 0;
    }
    if (ret < 0) {
        return ret;
    }
    *pnum = (int64_t)n;
    *map = 0;
    *file = NULL;
    switch (type) {
    case QCOW2_MAP_UNALLOCATED:
        return 0;
    case QCOW2_MAP_ZERO_PLAIN:
        return BDRV_BLOCK_ZERO;
    case QCOW2_MAP_ZERO_ALLOC:
        *map = (int64_t)host;
        *file = s->data_file->bs;
        return BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
    case QCOW2_MAP_COMPRESSED:
        return BDRV_BLOCK_DATA;
    case QCOW2_MAP_NORMAL:
    default:
        *map = (int64_t)host;
        *file = s->data_file->bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | (recurse ? BDRV_BLOCK_RECURSE : 0);
    }
}
