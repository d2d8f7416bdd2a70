/*
 * qcow2: truncate (grow and shrink) and preallocation (metadata, falloc,
 * full) of guest ranges.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Writes the guest size field of the header (and flushes). */
static int coroutine_fn write_size(BlockDriverState *bs, uint64_t size)
{
    uint8_t b[8];
    int ret;

    st_be64(b, size);
    ret = qcow2_pwrite(bs->file, 24, 8, b);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret < 0 ? ret : 0;
}

/*
 * Allocates host clusters for the unallocated clusters of one L2 table's
 * range. A cluster below data_hwm when it is handed out may hold old bytes
 * (e.g. a refcount table this preallocation replaced and freed): it is
 * zeroed; past data_hwm the file reads as zeroes already (grow.c).
 */
static int coroutine_fn prealloc_l2(BlockDriverState *bs, uint64_t *pos, uint64_t to,
                                    uint64_t *host_end)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint8_t *l2;
    int idx, ret;

    ret = qcow2_get_l2_table(bs, *pos, true, &l2, &idx);
    if (ret < 0) {
        return ret;
    }
    while (*pos < to && idx < s->l2_size && ret == 0) {
        int nb = 0;
        int64_t host;

        while (*pos + (uint64_t)nb * cs < to && idx + nb < s->l2_size &&
               !(qcow2_l2_get(s, l2, idx + nb) & (L2E_OFFSET_MASK | QCOW_OFLAG_COMPRESSED))) {
            nb++;
        }
        if (!nb) {
            idx++;
            *pos += cs;
            continue;
        }
        if (qcow2_has_data_file(s)) {
            host = (int64_t)*pos;
        } else {
            uint64_t got, hwm = s->data_hwm;

            host = qcow2_alloc_clusters_upto(bs, (uint64_t)nb, &got, NULL);
            nb = host < 0 ? nb : (int)got;
            if (host >= 0 && (uint64_t)host < hwm) {
                uint64_t n = (uint64_t)nb * cs;

                n = hwm - (uint64_t)host < n ? hwm - (uint64_t)host : n;
                ret = bdrv_co_pwrite_zeroes(s->data_file, host, (int64_t)n, 0);
            }
        }
        if (host < 0) {
            ret = (int)host;
            break;
        }
        for (int i = 0; i < nb; i++) {
            qcow2_l2_set(s, l2, idx + i, ((uint64_t)host + (uint64_t)i * cs) | QCOW_OFLAG_COPIED);
            qcow2_l2_set_bitmap(s, l2, idx + i, 0xffffffffULL);
        }
        idx += nb;
        *pos += (uint64_t)nb * cs;
        if ((uint64_t)host + (uint64_t)nb * cs > *host_end) {
            *host_end = (uint64_t)host + (uint64_t)nb * cs;
        }
    }
    qcow2_cache_mark_dirty(s->l2_cache, l2);
    qcow2_cache_put(s->l2_cache, &l2);
    return ret;
}

int coroutine_fn qcow2_preallocate(BlockDriverState *bs, uint64_t from, uint64_t to,
                                   PreallocMode mode, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t pos = qcow2_start_of_cluster(s, from), host_end = 0;
    int64_t flen;
    int ret = 0;

    if (mode == PREALLOC_MODE_OFF || from >= to) {
        return 0;
    }
    flen = bdrv_co_getlength(s->data_file->bs);
    if (flen < 0) {
        return (int)flen;
    }
    co_mutex_lock(&s->lock);
    while (pos < to && ret == 0) {
        ret = prealloc_l2(bs, &pos, to, &host_end);
    }
    if (ret == 0) {
        ret = qcow2_cache_flush_all(bs);
    }
    co_mutex_unlock(&s->lock);
    if (ret == 0 && (int64_t)host_end > flen) {
        ret = bdrv_co_truncate(s->data_file, (int64_t)host_end, false,
                               mode == PREALLOC_MODE_METADATA ? PREALLOC_MODE_OFF : mode, 0,
                               errp);
        return ret;
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: preallocation of '%s' failed", bs->filename);
    }
    return ret;
}

/*
 * Size limits, from the qcow2 layout and our caps (checked before anything
 * is written, so that a request past them fails at once with -EFBIG):
 *   - the L1 table holds at most 32 MiB and the refcount table 8 MiB (a
 *     table longer than a refcount range goes past the end of the image,
 *     with the blocks of its ranges behind it: refcount.c, alloc_tail);
 *   - guest size <= L1 entries * cluster_size * (cluster_size / L2 entry size);
 *   - host file size <= refcount table entries * E * cluster_size
 *     (E = refcount entries per block, cluster_size * 8 / refcount_bits).
 * E.g. 512-byte clusters: at most 4 Mi L1 entries and 128 GiB of guest; with
 * refcount_bits=64 (E = 64) a host file of 32 GiB. 64 KiB clusters with
 * refcount_bits=16: 2 PiB of guest, 2^56 of host.
 */
/*
 * Host bytes that preallocating guest [from, to) adds, at most: data
 * clusters (metadata preallocation allocates them too, unwritten), L2
 * tables, refcount blocks.
 */
static uint64_t prealloc_host_bytes(BDRVQcow2State *s, uint64_t from, uint64_t to)
{
    uint64_t cs = s->cluster_size, clusters = div_round_up_u64(to - from, cs) + 1;
    uint64_t l2 = div_round_up_u64(clusters, (uint64_t)s->l2_size) + 1;
    uint64_t n = l2 + clusters;

    return (n + div_round_up_u64(n, 1ULL << s->refcount_block_bits) + 1) * cs;
}

int qcow2_check_guest_size(const char *filename, uint64_t size, int cluster_bits, int l2_bits,
                           Error **errp)
{
    uint64_t l1_max = QCOW2_MAX_L1_BYTES / 8, need;
    uint64_t guest_max = l1_max << (l2_bits + cluster_bits); /* < 2^62 */

    need = qcow2_l1_entries_for(size, cluster_bits, l2_bits);
    if (need <= l1_max) {
        return 0;
    }
    error_setg(errp, "qcow2: '%s': a guest size of %llu bytes needs %llu L1 entries; with "
               "%llu-byte clusters the L1 table holds at most %llu (a guest size of %llu bytes)",
               filename, (unsigned long long)size, (unsigned long long)need,
               1ULL << cluster_bits, (unsigned long long)l1_max, (unsigned long long)guest_max);
    return -EFBIG;
}

static int check_size_limits(BlockDriverState *bs, uint64_t size, PreallocMode prealloc,
                             Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t rt_max = QCOW2_MAX_REFTABLE_BYTES / 8;
    int shift = s->refcount_block_bits + s->cluster_bits;
    uint64_t host_max = shift >= 36 ? QCOW2_MAX_OFFSET : rt_max << shift; /* rt_max <= 2^20 */
    uint64_t host;
    int64_t flen;

    if (qcow2_check_guest_size(bs->filename, size, s->cluster_bits, s->l2_bits, errp) < 0) {
        return -EFBIG;
    }
    if (prealloc == PREALLOC_MODE_OFF || qcow2_has_data_file(s)) {
        return 0;
    }
    host_max = host_max < QCOW2_MAX_OFFSET ? host_max : QCOW2_MAX_OFFSET;
    flen = bdrv_co_getlength(bs->file->bs);
    if (flen < 0) {
        error_setg_errno(errp, (int)-flen, "qcow2: could not get the size of '%s'", bs->filename);
        return (int)flen;
    }
    host = (uint64_t)flen + prealloc_host_bytes(s, s->size, size);
    if (host > host_max) {
        error_setg(errp, "qcow2: '%s': preallocating a guest size of %llu bytes needs an image "
                   "file of about %llu bytes; with %llu-byte clusters and refcount_bits=%d the "
                   "refcount table (at most %llu entries) describes at most %llu bytes",
                   bs->filename, (unsigned long long)size, (unsigned long long)host,
                   (unsigned long long)s->cluster_size, s->refcount_bits,
                   (unsigned long long)rt_max, (unsigned long long)host_max);
        return -EFBIG;
    }
    return 0;
}

/* Writes zero buffers over [off, end) (v2 images, partial clusters). */
static int coroutine_fn write_zero_buffers(BlockDriverState *bs, uint64_t off, uint64_t end)
{
    uint64_t chunk = 1ULL << 20;
    uint8_t *zero = calloc(1, chunk);
    int ret = 0;

    if (!zero) {
        return -ENOMEM;
    }
    while (off < end && ret == 0) {
        uint64_t n = end - off < chunk ? end - off : chunk;
        IOVector v;

        iovector_init_buf(&v, zero, n);
        ret = qcow2_co_pwritev_alloc(bs, off, n, &v, 0, 0);
        off += n;
    }
    free(zero);
    return ret;
}

/*
 * After growing from old to new_size: the rest of the old partial last
 * cluster, and backing data past the old end, must read as zeroes.
 */
static int coroutine_fn zero_new_area(BlockDriverState *bs, uint64_t old, uint64_t new_size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, aligned = round_up_u64(old, cs), end = aligned;
    int ret;

    if (bs->backing) {
        int64_t blen = bdrv_co_getlength(bs->backing->bs);

        if (blen > (int64_t)end) {
            end = round_up_u64((uint64_t)blen, cs);
        }
    }
    end = end < new_size ? end : new_size;
    if (end <= old) {
        return 0;
    }
    if (s->version < 3) {
        return write_zero_buffers(bs, old, end);
    }
    ret = write_zero_buffers(bs, old, aligned < end ? aligned : end);
    if (ret == 0 && aligned < end) {
        ret = qcow2_zero_or_discard(bs, aligned, end - aligned, true, false, false);
    }
    return ret;
}

static int coroutine_fn shrink(BlockDriverState *bs, uint64_t new_size, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t start = round_up_u64(new_size, s->cluster_size);
    uint64_t keep = qcow2_l1_entries_for(new_size, s->cluster_bits, s->l2_bits);
    int ret = 0;

    if (start < s->size) {
        ret = qcow2_zero_or_discard(bs, start, s->size - start, false, true, true);
    }
    co_mutex_lock(&s->lock);
    for (uint64_t i = keep; ret == 0 && i < s->l1_size; i++) {
        uint64_t l2off = s->l1_table[i] & L1E_OFFSET_MASK;

        if (!l2off) {
            continue;
        }
        qcow2_cache_discard(s->l2_cache, l2off);
        ret = qcow2_free_clusters_deferred(bs, l2off, s->cluster_size, QCOW2_DISCARD_OTHER);
        s->l1_table[i] = 0;
        if (i < s->l1_dirty_lo) {
            s->l1_dirty_lo = (uint32_t)i;
        }
        if (i + 1 > s->l1_dirty_hi) {
            s->l1_dirty_hi = (uint32_t)i + 1;
        }
    }
    if (ret == 0) {
        ret = qcow2_cache_flush_all(bs);
    }
    if (ret == 0) {
        ret = write_size(bs, new_size);
    }
    if (ret == 0) {
        s->size = new_size;
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not shrink '%s'", bs->filename);
    }
    return ret;
}

int coroutine_fn qcow2_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                   PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t old = s->size, need;
    int ret;

    if (offset < 0) {
        error_setg(errp, "qcow2: invalid size %lld", (long long)offset);
        return -EINVAL;
    }
    if (s->nb_snapshots && (s->version < 3 || (uint64_t)offset < old)) {
        error_setg(errp, "qcow2: cannot %s '%s': it has internal snapshots",
                   (uint64_t)offset < old ? "shrink" : "resize a version 2 image", bs->filename);
        return -ENOTSUP;
    }
    if ((uint64_t)offset == old) {
        return 0;
    }
    if (s->nb_bitmaps) {
        error_setg(errp, "qcow2: cannot resize '%s': it holds persistent bitmaps (remove them "
                   "with 'bitmap --remove' first)", bs->filename);
        return -ENOTSUP;
    }
    if ((uint64_t)offset < old) {
        if (prealloc != PREALLOC_MODE_OFF) {
            error_setg(errp, "qcow2: preallocation is not possible when shrinking");
            return -ENOTSUP;
        }
        return shrink(bs, (uint64_t)offset, errp);
    }
    need = qcow2_l1_entries_for((uint64_t)offset, s->cluster_bits, s->l2_bits);
    ret = check_size_limits(bs, (uint64_t)offset, prealloc, errp);
    if (ret < 0) {
        return ret;
    }
    co_mutex_lock(&s->lock);
    ret = need > s->l1_size ? qcow2_grow_l1_table(bs, need) : 0;
    if (ret == 0) {
        ret = write_size(bs, (uint64_t)offset);
    }
    if (ret == 0) {
        s->size = (uint64_t)offset;
    }
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not grow '%s' to %lld bytes", bs->filename,
                         (long long)offset);
        return ret;
    }
    if (old) {
        ret = zero_new_area(bs, old, (uint64_t)offset);
        if (ret < 0) {
            error_setg_errno(errp, ret, "qcow2: could not zero the new area of '%s'",
                             bs->filename);
            return ret;
        }
    }
    if (qcow2_data_file_raw(s)) {
        ret = bdrv_co_truncate(s->data_file, offset, false,
                               prealloc == PREALLOC_MODE_METADATA ? PREALLOC_MODE_OFF : prealloc,
                               0, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return qcow2_preallocate(bs, old, (uint64_t)offset, prealloc, errp);
}
