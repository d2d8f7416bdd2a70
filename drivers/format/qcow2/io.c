/*
 * qcow2: guest requests. Metadata lookups take s->lock briefly; guest data
 * moves between the caller's vector and the data file (or backing file)
 * without the lock and without copies, except for compressed clusters.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Reads an unallocated range: from the backing file as far as it goes, else zeroes. */
static int coroutine_fn read_unallocated(BlockDriverState *bs, uint64_t offset, uint64_t n,
                                         IOVector *qiov, size_t qoff)
{
    uint64_t in = 0;

    if (bs->backing) {
        int64_t blen = bdrv_co_getlength(bs->backing->bs);

        if (blen < 0) {
            return (int)blen;
        }
        if ((int64_t)offset < blen) {
            in = (uint64_t)blen - offset < n ? (uint64_t)blen - offset : n;
        }
        if (in) {
            int ret = bdrv_co_preadv_part(bs->backing, (int64_t)offset, (int64_t)in, qiov, qoff,
                                          0);
            if (ret < 0) {
                return ret;
            }
        }
    }
    if (n > in) {
        iovector_memset(qiov, qoff + in, 0, n - in);
    }
    return 0;
}

/* Reads [offset, offset + n) of the compressed cluster described by l2e. */
static int coroutine_fn read_compressed(BlockDriverState *bs, uint64_t l2e, uint64_t offset,
                                        uint64_t n, IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t coff, clen;
    uint8_t *cbuf, *dbuf;
    int ret;

    qcow2_decode_compressed(s, l2e, &coff, &clen);
    if (coff < s->cluster_size || coff + clen >= QCOW2_MAX_OFFSET) {
        co_mutex_lock(&s->lock);
        ret = qcow2_signal_corruption(bs, "compressed cluster at host offset 0x%llx is invalid",
                                      (unsigned long long)coff);
        co_mutex_unlock(&s->lock);
        return ret;
    }
    cbuf = malloc(clen);
    dbuf = malloc(s->cluster_size);
    if (!cbuf || !dbuf) {
        free(cbuf);
        free(dbuf);
        return -ENOMEM;
    }
    ret = qcow2_pread(bs->file, (int64_t)coff, (int64_t)clen, cbuf);
    if (ret >= 0) {
        ret = qcow2_decompress(s, dbuf, s->cluster_size, cbuf, clen);
    }
    if (ret >= 0) {
        iovector_from_buf(qiov, qoff, dbuf + qcow2_offset_into_cluster(s, offset), n);
        ret = 0;
    }
    free(cbuf);
    free(dbuf);
    return ret;
}

int coroutine_fn qcow2_read_guest(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                  IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;

    while (bytes) {
        uint64_t n = bytes, host;
        Qcow2MapType type;
        int ret;

        co_mutex_lock(&s->lock);
        ret = qcow2_get_host_offset(bs, offset, &n, &host, &type);
        co_mutex_unlock(&s->lock);
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
            ret = read_compressed(bs, host, offset, n, qiov, qoff);
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
 * otherwise new clusters are allocated (each touched cluster refcount 1).
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
    }
    s->free_byte_offset = ((uint64_t)host + clen) & (cs - 1) ? (uint64_t)host + clen : 0;
    return host;
}

/* Writes one whole cluster compressed (or plainly if it does not shrink). */
static int coroutine_fn write_compressed_cluster(BlockDriverState *bs, uint64_t offset,
                                                 uint64_t bytes, IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, nsec, l2e, old;
    uint8_t *src = calloc(1, cs), *dst = malloc(cs), *l2;
    Qcow2Alloc a = { 0 };
    Qcow2Alloc *other;
    ssize_t clen;
    int64_t host;
    int ret, idx;

    if (!src || !dst) {
        ret = -ENOMEM;
        goto out;
    }
    iovector_to_buf(qiov, qoff, src, bytes);
    clen = qcow2_compress(s, dst, cs - 1, src, cs);
    if (clen == -ENOSPC) {
        ret = qcow2_co_pwritev_alloc(bs, offset, bytes, qiov, qoff, 0);
        goto out;
    }
    if (clen < 0) {
        ret = (int)clen;
        goto out;
    }
    co_mutex_lock(&s->lock);
    while ((other = qcow2_find_alloc_overlap(s, offset, offset + cs))) {
        co_queue_wait(&other->waiters, &s->lock);
    }
    ret = qcow2_mark_dirty(bs);
    host = ret < 0 ? ret : alloc_compressed(bs, (uint64_t)clen);
    if (host < 0) {
        co_mutex_unlock(&s->lock);
        ret = (int)host;
        goto out;
    }
    nsec = div_round_up_u64(((uint64_t)host & 511) + (uint64_t)clen, 512);
    a.guest_start = offset;
    a.guest_end = offset + cs;
    a.host = (uint64_t)host;
    a.nb_clusters = 1;
    co_queue_init(&a.waiters);
    a.next = s->allocs;
    s->allocs = &a;
    ret = qcow2_check_overlap(bs, 0, (uint64_t)host, (uint64_t)clen);
    co_mutex_unlock(&s->lock);
    if (ret == 0) {
        /* Exactly clen bytes: the next packed cluster may follow at once. */
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_COMPRESSED);
        ret = qcow2_pwrite(bs->file, host, (int64_t)clen, dst);
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
                            (uint64_t)host + (uint64_t)clen - qcow2_start_of_cluster(s,
                            (uint64_t)host), QCOW2_DISCARD_NEVER);
    }
    qcow2_alloc_remove(s, &a);
    co_mutex_unlock(&s->lock);
out:
    free(src);
    free(dst);
    return ret;
}

static int coroutine_fn write_compressed(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                         IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;

    if (qcow2_has_data_file(s)) {
        return -ENOTSUP; /* compressed clusters cannot live in an external data file */
    }
    if (qcow2_offset_into_cluster(s, offset) ||
        (qcow2_offset_into_cluster(s, bytes) && offset + bytes != s->size)) {
        return -EINVAL; /* compressed writes cover whole clusters */
    }
    while (bytes) {
        uint64_t n = bytes < s->cluster_size ? bytes : s->cluster_size;
        int ret = write_compressed_cluster(bs, offset, n, qiov, qoff);

        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        qoff += n;
    }
    return 0;
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
    if (qcow2_offset_into_cluster(s, (uint64_t)offset) ||
        (qcow2_offset_into_cluster(s, end) && end != s->size)) {
        return -ENOTSUP;
    }
    ret = qcow2_bitmaps_note_write(bs, (uint64_t)offset, (uint64_t)bytes);
    if (ret < 0) {
        return ret;
    }
    return qcow2_zero_or_discard(bs, (uint64_t)offset, (uint64_t)bytes, true,
                                 flags & BDRV_REQ_MAY_UNMAP, false);
}

int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = (uint64_t)(offset + bytes);
    int ret;

    if (qcow2_offset_into_cluster(s, (uint64_t)offset) ||
        (qcow2_offset_into_cluster(s, end) && end != s->size)) {
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

int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                       int64_t bytes, int64_t *pnum, int64_t *map,
                                       BlockDriverState **file)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = (uint64_t)bytes, host;
    Qcow2MapType type;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_get_host_offset(bs, (uint64_t)offset, &n, &host, &type);
    co_mutex_unlock(&s->lock);
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
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID |
               (qcow2_data_file_raw(s) ? BDRV_BLOCK_RECURSE : 0);
    }
}
