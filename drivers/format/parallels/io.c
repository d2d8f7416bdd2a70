/*
 * parallels: reads, writes, zero writes and block status.
 *
 * Allocation: a run of unallocated guest clusters that one write touches
 * gets as many new clusters at the end of the data area (data_end), or,
 * while the free list (discard.c) holds clusters that discards freed, its
 * first cluster gets one of those (zeroes written around the data). They
 * are taken and the file extended to cover them under alloc_lock; the guest
 * data and the rest of each cluster (zeroes, or the backing file's data)
 * are written without it (a record in s->allocs makes other writers of
 * those guest clusters wait meanwhile); then, under it again, the in-memory
 * BAT entries are set (reads and writes use them at once) and their sectors
 * marked dirty (fmt-defer.h). The dirty sectors reach the file
 * at the next guest flush (co_flush_to_os), close, reopen read-only, any
 * other metadata write, or when FMT_DEFER_MAX are pending: always after a
 * flush of the data. So N allocating writes between two guest flushes cost
 * O(1) flushes, not one each. A cut before the BAT write leaves
 * unreferenced space past the last used cluster (a leak); the BAT on disk
 * never points at unwritten data.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/parallels.h"

/* Guest cluster of offset, offset inside it, and the bytes of [offset, +bytes) in it. */
static void prl_chunk(const BDRVParallelsState *s, int64_t offset, int64_t bytes, uint32_t *idx,
                      uint64_t *in, int64_t *n)
{
    *idx = (uint32_t)((uint64_t)offset / s->cluster_size);
    *in = (uint64_t)offset % s->cluster_size;
    *n = (int64_t)(s->cluster_size - *in);
    if (*n > bytes) {
        *n = bytes;
    }
}

/* The next free cluster: data_end rounded up to a cluster from the data offset. */
uint64_t prl_next_cluster(const BDRVParallelsState *s)
{
    return s->data_off + round_up_u64(s->data_end - s->data_off, s->cluster_size);
}

int coroutine_fn prl_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                               IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    BDRVParallelsState *s = bs->opaque;
    int ret = 0;

    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t idx, e;
        uint64_t in;
        int64_t n;

        prl_chunk(s, offset, bytes, &idx, &in, &n);
        e = idx < s->bat_entries ? prl_entry(s, idx) : 0;
        if (e == 0) {
            ret = bdrv_co_read_backing(bs, offset, n, qiov, qiov_offset);
        } else if (!prl_host_ok(s, prl_host(s, e))) {
            ret = -EIO; /* outside the data area or the file: check -r all repairs it */
        } else {
            BLKDBG_EVENT(bs->file, BLKDBG_READ_AIO);
            ret = bdrv_co_preadv_part(bs->file, (int64_t)(prl_host(s, e) + in), n, qiov,
                                      qiov_offset, 0);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Writes */

/*
 * Before the first change of guest data: the image is marked in use
 * (in_use "open", flushed) and the Format Extension,
 * whose dirty bitmaps would no longer describe the data, is dropped (ext.c).
 * Also refuses changes to a corrupt image.
 */
int coroutine_fn prl_prepare_change(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;
    int ret = 0;

    if (s->corrupt) {
        return -EIO;
    }
    if (s->ext_host || !s->rw) {
        co_mutex_lock(&s->alloc_lock);
        if (!s->rw) {
            ret = prl_mark_in_use(bs);
        }
        if (ret == 0 && s->ext_host) {
            ret = prl_ext_drop(bs);
        }
        co_mutex_unlock(&s->alloc_lock);
    }
    return ret;
}

/*
 * Writes len bytes at host that guest offset guest would read if the
 * cluster were unallocated: the backing file's data, or zeroes (only the
 * first zlen bytes, which the file does not read as zeroes yet: fmt-grow.h).
 */
static int coroutine_fn prl_fill(BlockDriverState *bs, uint64_t host, int64_t guest,
                                 uint64_t len, uint64_t zlen)
{
    IOVector v;
    uint8_t *buf;
    int ret;

    if (len == 0) {
        return 0;
    }
    if (!bs->backing) {
        return zlen ? bdrv_co_pwrite_zeroes(bs->file, (int64_t)host, (int64_t)zlen, 0) : 0;
    }
    buf = malloc(len);
    if (!buf) {
        return -ENOMEM;
    }
    iovector_init_buf(&v, buf, len);
    ret = bdrv_co_read_backing(bs, guest, (int64_t)len, &v, 0);
    if (ret == 0) {
        ret = fmt_co_pwrite(bs->file, (int64_t)host, (int64_t)len, buf, 0);
    }
    free(buf);
    return ret;
}

/* Unallocated clusters from idx on inside the request (at least the first), none in flight. */
static uint32_t prl_unallocated_run(const BDRVParallelsState *s, uint32_t idx, uint64_t in,
                                    int64_t bytes)
{
    uint64_t span = in + (uint64_t)bytes;
    uint32_t k = 1;

    while ((uint64_t)k * s->cluster_size < span && idx + k < s->bat_entries &&
           prl_entry(s, idx + k) == 0 && !fmt_inflight_busy(&s->allocs, idx + k) && k < 4096) {
        k++;
    }
    return k;
}

/* The sector of the header + BAT that holds entry i. */
static uint32_t prl_bat_sector(uint32_t i)
{
    return (uint32_t)((PRL_HEADER_SIZE + (uint64_t)i * 4) / PRL_SECTOR);
}

/*
 * Makes room in the dirty set for the sectors of entries [idx, idx + k)
 * (k <= 4096: at most 33 sectors) by committing the pending ones if needed.
 */
static int coroutine_fn prl_alloc_room(BlockDriverState *bs, uint32_t idx, uint32_t k)
{
    BDRVParallelsState *s = bs->opaque;
    uint32_t first = prl_bat_sector(idx), n = prl_bat_sector(idx + k - 1) + 1 - first;

    if (fmt_defer_has_room(&s->bat_dirty, first, n)) {
        return 0;
    }
    return prl_commit_bat(bs);
}

/*
 * A guest flush: the BAT sectors of new clusters are written after a flush
 * of their data; the block layer then flushes the file, which makes them
 * durable.
 */
int coroutine_fn prl_co_flush_to_os(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->alloc_lock);
    ret = prl_commit_bat(bs);
    co_mutex_unlock(&s->alloc_lock);
    return ret;
}

/*
 * New clusters [host, host + span) for guest clusters [idx, idx + k) of an
 * allocating write: len request bytes go at in, the rest of the span is
 * filled as an unallocated cluster reads, of which the first zhead bytes
 * before and ztail bytes after the request's need zeroes written (without a
 * backing file; the rest of the file there reads zeroes already).
 */
typedef struct PrlSlot {
    uint64_t host, span, in, len, zhead, ztail;
    uint32_t idx, k;
    bool reused;            /* a free cluster (discard.c), not the end of the data area */
    bool zeroed;            /* the span reads zeroes already and no backing file shows */
} PrlSlot;

/*
 * Takes new clusters for guest clusters [idx, idx + k): a free one
 * (discard.c) for the first only, else k at the end of the data area. When
 * they reach past the end of the file it is grown prealloc_size past them
 * (fmt-grow.h), so the next allocations neither extend it nor write
 * zeroes. Called with alloc_lock. Returns 0 or -errno (nothing taken).
 */
static int coroutine_fn prl_alloc_take(BlockDriverState *bs, uint32_t idx, uint32_t k,
                                       uint64_t in, int64_t bytes, PrlSlot *p)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t max = s->data_off + (uint64_t)s->bat_entries * s->cluster_size, end;
    int ret;

    *p = (PrlSlot){ .host = prl_next_cluster(s), .in = in, .idx = idx };
    p->reused = prl_take_free(s, &p->host);
    p->k = p->reused ? 1 : k; /* a free cluster in the middle serves one guest cluster */
    p->span = (uint64_t)p->k * s->cluster_size;
    p->len = p->span - in < (uint64_t)bytes ? p->span - in : (uint64_t)bytes;
    if ((p->host + p->span - s->cluster_size) / s->unit > UINT32_MAX) {
        return -ENOSPC; /* the BAT cannot address it (never for a reused cluster) */
    }
    end = p->host + p->span;
    BLKDBG_EVENT(bs->file, BLKDBG_CLUSTER_ALLOC);
    ret = fmt_co_grow_to(bs->file, &s->grow, end, max > end ? max : end);
    if (ret < 0) {
        if (p->reused) {
            prl_put_free(s, p->host);
        }
        return ret;
    }
    p->zeroed = !bs->backing && !p->reused && fmt_grow_unzeroed(&s->grow, p->host, end) == 0;
    p->zhead = fmt_grow_unzeroed(&s->grow, p->host, p->host + in);
    p->ztail = fmt_grow_unzeroed(&s->grow, p->host + in + p->len, end);
    fmt_grow_written(&s->grow, end); /* handed out: it may hold data from now on */
    s->data_end = end > s->data_end ? end : s->data_end;
    return 0;
}

/* Writes the clusters of p: the request's bytes and the fill around them. No lock held. */
static int coroutine_fn prl_alloc_data(BlockDriverState *bs, const PrlSlot *p, IOVector *qiov,
                                       size_t qiov_offset)
{
    BDRVParallelsState *s = bs->opaque;
    int64_t guest = (int64_t)((uint64_t)p->idx * s->cluster_size);
    uint64_t after = p->in + p->len;
    int ret = prl_fill(bs, p->host, guest, p->in, p->zhead);

    if (ret == 0) {
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
        ret = bdrv_co_pwritev_part(bs->file, (int64_t)(p->host + p->in), (int64_t)p->len, qiov,
                                   qiov_offset, 0);
    }
    if (ret == 0) {
        ret = prl_fill(bs, p->host + after, guest + (int64_t)after, p->span - after, p->ztail);
    }
    return ret;
}

/*
 * After the data of p was written (ret 0): sets the BAT entries in memory,
 * their sectors dirty (fmt-defer.h). After a failure (ret < 0) the clusters
 * go back: the tail of the data area, or the free list. Called with
 * alloc_lock. Returns 0 or -errno.
 */
static int coroutine_fn prl_alloc_link(BlockDriverState *bs, const PrlSlot *p, int ret)
{
    BDRVParallelsState *s = bs->opaque;
    uint32_t first = prl_bat_sector(p->idx);

    ret = ret ? ret : prl_alloc_room(bs, p->idx, p->k);
    if (ret < 0) {
        if (!p->reused && p->host + p->span == s->data_end) {
            s->data_end = p->host;
        } else {
            for (uint32_t j = 0; j < p->k; j++) {
                prl_put_free(s, p->host + (uint64_t)j * s->cluster_size);
            }
        }
        return ret;
    }
    for (uint32_t j = 0; j < p->k; j++) {
        prl_set_entry(s, p->idx + j,
                      (uint32_t)((p->host + (uint64_t)j * s->cluster_size) / s->unit));
    }
    /* Room was made above (prl_alloc_room): this cannot fail. */
    fmt_defer_add(&s->bat_dirty, first, prl_bat_sector(p->idx + p->k - 1) + 1 - first);
    return 0;
}

/*
 * Writes the part of a request that starts at an unallocated cluster: new
 * clusters taken under alloc_lock, their data written without it (other
 * allocating writes and flushes go on meanwhile), the BAT entries set under
 * it again. A writer of a cluster being allocated waits for that allocation.
 * Clusters that read zeroes already (no backing file, not reused) are linked
 * before their data is written instead: nobody waits for them.
 * Returns the guest bytes written, 0 if the cluster was allocated meanwhile
 * (the caller writes in place), or -errno.
 */
static int64_t coroutine_fn prl_write_unallocated(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, IOVector *qiov,
                                                  size_t qiov_offset)
{
    BDRVParallelsState *s = bs->opaque;
    FmtInflight a;
    PrlSlot p;
    uint32_t idx;
    uint64_t in;
    int64_t n;
    int ret;

    prl_chunk(s, offset, bytes, &idx, &in, &n);
    co_mutex_lock(&s->alloc_lock);
    while (prl_entry(s, idx) == 0 && fmt_inflight_busy(&s->allocs, idx)) {
        fmt_inflight_wait(&s->allocs, &s->alloc_lock);
    }
    if (prl_entry(s, idx) != 0 || s->corrupt) {
        co_mutex_unlock(&s->alloc_lock);
        return s->corrupt ? -EIO : 0; /* allocated meanwhile: the caller writes in place */
    }
    ret = prl_alloc_take(bs, idx, prl_unallocated_run(s, idx, in, bytes), in, bytes, &p);
    if (ret < 0 || p.zeroed) {
        /*
         * New clusters that read zeroes, as the unallocated ones did: linked at
         * once, so that other writers of them write in place meanwhile. A commit
         * may then write an entry before its data lands; after a crash there the
         * cluster reads zeroes outside what landed, the old content.
         */
        ret = ret ? ret : prl_alloc_link(bs, &p, 0);
        co_mutex_unlock(&s->alloc_lock);
        ret = ret ? ret : prl_alloc_data(bs, &p, qiov, qiov_offset);
        return ret < 0 ? ret : (int64_t)p.len;
    }
    fmt_inflight_begin(&s->allocs, &a, idx, p.k);
    co_mutex_unlock(&s->alloc_lock);

    ret = prl_alloc_data(bs, &p, qiov, qiov_offset);

    co_mutex_lock(&s->alloc_lock);
    ret = prl_alloc_link(bs, &p, ret);
    fmt_inflight_end(&s->allocs, &a);
    co_mutex_unlock(&s->alloc_lock);
    return ret < 0 ? ret : (int64_t)p.len;
}

int coroutine_fn prl_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    BDRVParallelsState *s = bs->opaque;
    int64_t ret;

    if ((uint64_t)offset + (uint64_t)bytes > s->disk_size) {
        return -ENOSPC;
    }
    ret = prl_prepare_change(bs);
    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret >= 0) {
        uint32_t idx, e;
        uint64_t in;
        int64_t n;

        prl_chunk(s, offset, bytes, &idx, &in, &n);
        e = prl_entry(s, idx);
        if (e == 0) {
            ret = prl_write_unallocated(bs, offset, bytes, qiov, qiov_offset);
            if (ret != 0) {
                n = ret;
            } else {
                continue;
            }
        } else if (!prl_host_ok(s, prl_host(s, e))) {
            ret = -EIO;
        } else {
            BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
            ret = bdrv_co_pwritev_part(bs->file, (int64_t)(prl_host(s, e) + in), n, qiov,
                                       qiov_offset, 0);
        }
        if (ret < 0) {
            break;
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->lock);
    return ret < 0 ? (int)ret : 0;
}

/*
 * Zeroes: an allocated cluster is zeroed in place; an unallocated one
 * already reads zero without a backing file. With a backing file the
 * generic path writes zero buffers (allocating), as QEMU does.
 */
int coroutine_fn prl_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    if (bs->backing) {
        return -ENOTSUP;
    }
    if ((uint64_t)offset + (uint64_t)bytes > s->disk_size) {
        return -ENOSPC;
    }
    ret = prl_prepare_change(bs);
    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t idx, e;
        uint64_t in;
        int64_t n;

        prl_chunk(s, offset, bytes, &idx, &in, &n);
        e = prl_entry(s, idx);
        if (e != 0 && !prl_host_ok(s, prl_host(s, e))) {
            ret = -EIO;
        } else if (e != 0) {
            ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)(prl_host(s, e) + in), n, 0);
        }
        offset += n;
        bytes -= n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Block status */

int coroutine_fn prl_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                     int64_t bytes, int64_t *pnum, int64_t *map,
                                     BlockDriverState **file)
{
    BDRVParallelsState *s = bs->opaque;
    uint32_t idx, e;
    uint64_t in;
    int64_t n;
    int ret = 0;

    co_rwlock_rdlock(&s->lock);
    prl_chunk(s, offset, bytes, &idx, &in, &n);
    e = idx < s->bat_entries ? prl_entry(s, idx) : 0;
    if (e != 0 && !prl_host_ok(s, prl_host(s, e))) {
        ret = -EIO;
    } else if (e != 0) {
        *map = (int64_t)(prl_host(s, e) + in);
        *file = bs->file->bs;
        ret = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
        /* Extend over guest clusters whose host clusters follow contiguously. */
        while (n < bytes && idx + 1 < s->bat_entries && prl_entry(s, idx + 1) != 0 &&
               prl_host(s, prl_entry(s, idx + 1)) == prl_host(s, prl_entry(s, idx)) +
               s->cluster_size && prl_host_ok(s, prl_host(s, prl_entry(s, idx + 1)))) {
            idx++;
            n += bytes - n < (int64_t)s->cluster_size ? bytes - n : (int64_t)s->cluster_size;
        }
    } else {
        while (n < bytes && idx + 1 < s->bat_entries && prl_entry(s, idx + 1) == 0) {
            idx++;
            n += bytes - n < (int64_t)s->cluster_size ? bytes - n : (int64_t)s->cluster_size;
        }
    }
    co_rwlock_unlock(&s->lock);
    *pnum = n;
    return ret;
}
