/*
 * qcow2: reads of compressed clusters.
 *
 * Decompressed-cluster cache: decompressed clusters keyed by the compressed
 * data's host offset and length, so that sub-cluster reads of one
 * compressed cluster inflate it once. Its size is the runtime option
 * compressed-cache-size (bytes, 0 = no cache; default 4 MiB, but at least 4
 * and at most 64 clusters; a size given explicitly holds size / cluster_size
 * clusters, at least 1 and at most QCOW2_DCACHE_MAX_ENTRIES). Lookups are
 * O(1): a hash on the host cluster of the compressed data (so that an
 * invalidation of one host cluster only looks at the chains of the clusters
 * whose data can reach into it) and an LRU list of the valid entries.
 * Entry buffers are allocated on first use and kept until close: no
 * allocation in the steady state.
 *
 * Partial inflation: a miss inflates the cluster only up to the end of the
 * read (compress-inflate.c: on average half a cluster for a random 4 KiB
 * read), and the entry holds that prefix (valid bytes). A later read within
 * the prefix hits; one beyond it inflates the whole cluster into the entry
 * (a cluster read twice is likely read again: at most two inflations).
 *
 * Scan resistance: a read of a whole cluster uses a cached copy if there is
 * one, but never inserts one (it would be read once and only push out the
 * hot set); it inflates straight into the caller's buffer when that is one
 * piece, so a sequential reader of whole clusters costs no copy either.
 * Partial reads insert at the most recently used end.
 *
 * Concurrent readers of a cluster being inflated wait for it. The host bytes
 * of a compressed cluster never change while any L2 entry references them,
 * so an entry only goes stale when its host cluster is freed: the refcount
 * code calls qcow2_dcache_invalidate() whenever a refcount drops to zero (an
 * entry still being filled is then dropped when it completes), and every
 * wholesale metadata change (refcount rebuild, snapshot revert) clears the
 * cache.
 *
 * A read request over several compressed clusters inflates them in
 * parallel: up to compress-workers coroutines take one cluster each, and
 * each inflation runs on the thread pool with its own compression slot
 * (compress-pool.c).
 *
 * Everything here runs in the node's AioContext (no lock needed).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

#define QCOW2_DCACHE_DEFAULT (4ULL << 20)
#define QCOW2_DCACHE_DEFAULT_MIN 4
#define QCOW2_DCACHE_DEFAULT_MAX 64

enum { DC_EMPTY, DC_FILLING, DC_VALID };

typedef struct DCEntry {
    uint64_t coff, clen;            /* compressed data: host offset, bytes */
    uint8_t *data;                  /* one decompressed cluster (allocated on first use) */
    uint64_t valid;                 /* bytes of data inflated: a prefix of the cluster */
    struct DCEntry *hnext;          /* hash chain: FILLING and VALID entries */
    struct DCEntry *prev, *next;    /* LRU list of VALID entries; free list (next) */
    int state;
    bool stale;                     /* invalidated while filling: dropped when done */
    CoQueue waiters;                /* readers waiting for a filling entry */
} DCEntry;

typedef struct Qcow2DCache {
    uint32_t n;                     /* entries */
    uint32_t mask;                  /* hash buckets - 1 */
    uint32_t live;                  /* entries not EMPTY */
    DCEntry **hash;
    DCEntry *free;                  /* EMPTY entries */
    DCEntry lru;                    /* sentinel: .next most, .prev least recently used */
    DCEntry e[];
} Qcow2DCache;

uint64_t qcow2_dcache_entries(const BDRVQcow2State *s)
{
    uint64_t n;

    if (s->dcache_set) {
        n = s->dcache_bytes / s->cluster_size;
        return s->dcache_bytes && n == 0 ? 1 : n;
    }
    n = QCOW2_DCACHE_DEFAULT / s->cluster_size;
    n = n < QCOW2_DCACHE_DEFAULT_MIN ? QCOW2_DCACHE_DEFAULT_MIN : n;
    return n > QCOW2_DCACHE_DEFAULT_MAX ? QCOW2_DCACHE_DEFAULT_MAX : n;
}

/* The cache, created on first use; NULL if it has no entries (or no memory). */
static Qcow2DCache *dc_get(BDRVQcow2State *s)
{
    uint64_t n = qcow2_dcache_entries(s);
    Qcow2DCache *dc = s->dcache;
    uint32_t buckets = 1;

    if (dc || n == 0 || n > QCOW2_DCACHE_MAX_ENTRIES) {
        return dc;
    }
    while (buckets < n) {
        buckets <<= 1;
    }
    dc = calloc(1, sizeof(*dc) + n * sizeof(DCEntry));
    if (!dc) {
        return NULL;
    }
    dc->hash = calloc(buckets, sizeof(*dc->hash));
    if (!dc->hash) {
        free(dc);
        return NULL;
    }
    dc->n = (uint32_t)n;
    dc->mask = buckets - 1;
    dc->lru.next = dc->lru.prev = &dc->lru;
    for (uint32_t i = 0; i < dc->n; i++) {
        co_queue_init(&dc->e[i].waiters);
        dc->e[i].next = dc->free;
        dc->free = &dc->e[i];
    }
    s->dcache = dc;
    return dc;
}

/* The chain of compressed data starting in host cluster hc. */
static DCEntry **dc_bucket(Qcow2DCache *dc, uint64_t hc)
{
    return &dc->hash[(uint32_t)((hc * 0x9E3779B97F4A7C15ULL) >> 32) & dc->mask];
}

static DCEntry *dc_lookup(BDRVQcow2State *s, Qcow2DCache *dc, uint64_t coff, uint64_t clen)
{
    for (DCEntry *e = *dc_bucket(dc, coff >> s->cluster_bits); e; e = e->hnext) {
        if (e->coff == coff && e->clen == clen) {
            return e;
        }
    }
    return NULL;
}

static void lru_unlink(DCEntry *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push(Qcow2DCache *dc, DCEntry *e)
{
    e->next = dc->lru.next;
    e->prev = &dc->lru;
    dc->lru.next->prev = e;
    dc->lru.next = e;
}

static void dc_unhash(BDRVQcow2State *s, Qcow2DCache *dc, DCEntry *e)
{
    DCEntry **p = dc_bucket(dc, e->coff >> s->cluster_bits);

    while (*p != e) {
        p = &(*p)->hnext;
    }
    *p = e->hnext;
}

/* Forgets a FILLING or VALID entry. */
static void dc_drop(BDRVQcow2State *s, Qcow2DCache *dc, DCEntry *e)
{
    dc_unhash(s, dc, e);
    if (e->state == DC_VALID) {
        lru_unlink(e);
    }
    e->state = DC_EMPTY;
    e->next = dc->free;
    dc->free = e;
    dc->live--;
}

/*
 * Claims an entry for (coff, clen), FILLING and hashed: a free one or the
 * least recently used valid one, with its buffer; NULL if every entry is
 * being filled or there is no memory for the buffer.
 */
static DCEntry *dc_claim(BDRVQcow2State *s, Qcow2DCache *dc, uint64_t coff, uint64_t clen)
{
    DCEntry *e = dc->free, **b;

    if (!e && dc->lru.prev != &dc->lru) {
        dc_drop(s, dc, dc->lru.prev);
        e = dc->free;
    }
    if (!e) {
        return NULL;
    }
    if (!e->data) {
        e->data = malloc(s->cluster_size);
        if (!e->data) {
            return NULL;
        }
    }
    dc->free = e->next;
    dc->live++;
    e->state = DC_FILLING;
    e->stale = false;
    e->coff = coff;
    e->clen = clen;
    b = dc_bucket(dc, coff >> s->cluster_bits);
    e->hnext = *b;
    *b = e;
    return e;
}

/* The caller's bytes [qoff, qoff + len) if they are one piece of the vector, else NULL. */
static uint8_t *one_piece(const IOVector *qiov, size_t qoff, size_t len)
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

/* Says once per node that compressed data does not inflate (reads then get -EIO). */
static void report_bad_stream(BlockDriverState *bs, uint64_t coff, uint64_t clen, uint64_t need)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->cread_warned) {
        return;
    }
    s->cread_warned = true;
    coblk_warn("qcow2: image '%s': the compressed cluster at host offset 0x%llx (%llu bytes) "
               "does not decompress to the %llu bytes a read needs of it (corrupt compressed "
               "data); further such errors are not reported", bs->filename,
               (unsigned long long)coff, (unsigned long long)clen, (unsigned long long)need);
}

/*
 * Reads the compressed cluster and inflates it, at least up to byte need,
 * into dst (NULL: straight into the caller's vector if the cluster is wanted
 * whole and that is one piece, else the decompression buffer) with the
 * buffers and codec of b, or of slot when b is NULL, then gives [in, in + n)
 * of it to the caller. Returns how many bytes of dst are valid, or -errno.
 */
static int64_t coroutine_fn inflate_cluster(BlockDriverState *bs, Qcow2Buf *b, Qcow2CSlot *slot,
                                            uint64_t coff, uint64_t clen, uint8_t *dst,
                                            uint64_t need, uint64_t in, uint64_t n,
                                            IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *cbuf = b ? b->cbuf : slot->cbuf;
    Qcow2Codec *codec = b ? b->codec : &slot->codec;
    uint8_t *direct = NULL;
    ssize_t ret;

    if (!dst && n == s->cluster_size) {
        direct = one_piece(qiov, qoff, n);
    }
    dst = dst ? dst : direct ? direct : b ? b->dbuf : slot->dbuf;
    ret = qcow2_pread(bs->file, (int64_t)coff, (int64_t)clen, cbuf);
    if (ret >= 0) {
        ret = qcow2_co_inflate(bs, codec, cbuf, clen, dst, need);
        if (ret == -EIO) {
            report_bad_stream(bs, coff, clen, need);
        }
    }
    if (ret < 0) {
        return ret;
    }
    if ((uint64_t)ret < in + n) {
        return -EIO; /* cannot happen: the codec gives at least need bytes */
    }
    if (!direct) {
        iovector_from_buf(qiov, qoff, dst + in, n);
    }
    return ret;
}

/*
 * Inflates (coff, clen) up to byte need into e (newly claimed, or a valid
 * entry holding a shorter prefix, now FILLING), then gives the caller its part.
 */
static int coroutine_fn fill_entry(BlockDriverState *bs, Qcow2DCache *dc, DCEntry *e,
                                   Qcow2Buf *b, Qcow2CSlot *slot, uint64_t need, uint64_t in,
                                   uint64_t n, IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    int64_t ret = inflate_cluster(bs, b, slot, e->coff, e->clen, e->data, need, in, n, qiov,
                                  qoff);

    if (ret >= 0 && !e->stale) {
        e->valid = (uint64_t)ret;
        e->state = DC_VALID;
        lru_push(dc, e);
    } else {
        dc_drop(s, dc, e);
    }
    co_queue_restart_all(&e->waiters);
    return ret < 0 ? (int)ret : 0;
}

/*
 * Deadlock rule: whoever fills an entry (state DC_FILLING) waits for nothing
 * but its own I/O and the thread pool. A reader therefore takes its
 * compression slot before it claims an entry: a copy-on-write may be
 * waiting for the entry while compressed writers hold every slot and wait
 * for that copy-on-write's allocation. A copy-on-write (b given) takes no
 * slot at all.
 */
int coroutine_fn qcow2_read_compressed_cached(BlockDriverState *bs, uint64_t coff,
                                              uint64_t clen, uint64_t offset, uint64_t n,
                                              IOVector *qiov, size_t qoff, Qcow2Buf *b)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2DCache *dc = dc_get(s);
    uint64_t in = qcow2_offset_into_cluster(s, offset);
    bool whole = in == 0 && n == s->cluster_size;
    Qcow2CSlot *slot = NULL;
    DCEntry *e = NULL;
    int ret;

    if (clen > 2 * s->cluster_size) {
        return -EIO; /* cannot happen: the descriptor's sector count is capped */
    }
    for (;;) {
        while (dc && (e = dc_lookup(s, dc, coff, clen)) && e->state == DC_FILLING) {
            co_queue_wait(&e->waiters, NULL);
        }
        if (dc && e && in + n <= e->valid) {
            lru_unlink(e);
            lru_push(dc, e);
            iovector_from_buf(qiov, qoff, e->data + in, n);
            ret = 0;
            goto out;
        }
        if (b || slot) {
            break;
        }
        slot = qcow2_cslot_get(bs); /* may wait: look the cluster up again after */
        if (!slot) {
            return -ENOMEM;
        }
    }
    if (dc && e && !whole) {
        /* Cached, but a shorter prefix: inflate the whole cluster into the entry. */
        lru_unlink(e);
        e->state = DC_FILLING;
        e->stale = false;
        ret = fill_entry(bs, dc, e, b, slot, s->cluster_size, in, n, qiov, qoff);
        goto out;
    }
    e = dc && !whole && !e ? dc_claim(s, dc, coff, clen) : NULL;
    if (e) {
        ret = fill_entry(bs, dc, e, b, slot, in + n, in, n, qiov, qoff);
    } else {
        /* No cache, a whole cluster, or every entry being filled: uncached. */
        int64_t r = inflate_cluster(bs, b, slot, coff, clen, NULL, whole ? n : in + n, in, n,
                                    qiov, qoff);

        ret = r < 0 ? (int)r : 0;
    }
out:
    if (slot) {
        qcow2_cslot_put(bs, slot);
    }
    return ret;
}

void qcow2_dcache_invalidate(BDRVQcow2State *s, uint64_t host_cluster)
{
    Qcow2DCache *dc = s->dcache;
    uint64_t hc = host_cluster >> s->cluster_bits;

    if (!dc || dc->live == 0) {
        return;
    }
    /* Compressed data is at most two clusters long: it starts in hc - 2 .. hc. */
    for (uint64_t c = hc >= 2 ? hc - 2 : 0; c <= hc; c++) {
        DCEntry *e = *dc_bucket(dc, c), *next;

        for (; e; e = next) {
            next = e->hnext;
            if (e->coff >= host_cluster + s->cluster_size || e->coff + e->clen <= host_cluster) {
                continue;
            }
            if (e->state == DC_FILLING) {
                e->stale = true;
            } else {
                dc_drop(s, dc, e);
            }
        }
    }
}

void qcow2_dcache_clear(BDRVQcow2State *s)
{
    Qcow2DCache *dc = s->dcache;

    for (uint32_t i = 0; dc && i < dc->n; i++) {
        if (dc->e[i].state == DC_FILLING) {
            dc->e[i].stale = true;
        } else if (dc->e[i].state == DC_VALID) {
            dc_drop(s, dc, &dc->e[i]);
        }
    }
}

bool qcow2_dcache_idle(const BDRVQcow2State *s)
{
    const Qcow2DCache *dc = s->dcache;

    for (uint32_t i = 0; dc && i < dc->n; i++) {
        if (dc->e[i].state == DC_FILLING) {
            return false;
        }
    }
    return true;
}

void qcow2_dcache_free(BDRVQcow2State *s)
{
    Qcow2DCache *dc = s->dcache;

    if (!dc) {
        return;
    }
    for (uint32_t i = 0; i < dc->n; i++) {
        free(dc->e[i].data);
    }
    free(dc->hash);
    free(dc);
    s->dcache = NULL;
}

/* ---------------------------------------------------------------------- */
/* Requests over several compressed clusters */

typedef struct CReadJob {
    BlockDriverState *bs;
    uint64_t offset, end;       /* next byte to claim, end of the request */
    IOVector *qiov;
    size_t qoff;                /* vector offset of the next byte to claim */
    int ret;
    Qcow2Workers w;
} CReadJob;

/* Reads one cluster (or the part of it in the request) at a time until none is left. */
static void coroutine_fn cread_worker(void *opaque)
{
    CReadJob *j = opaque;
    BDRVQcow2State *s = j->bs->opaque;

    while (j->ret == 0 && j->offset < j->end) {
        uint64_t off = j->offset, n = s->cluster_size - qcow2_offset_into_cluster(s, off);
        size_t qoff = j->qoff;
        int ret;

        n = n > j->end - off ? j->end - off : n;
        j->offset += n;
        j->qoff += n;
        ret = qcow2_read_guest_buf(j->bs, off, n, j->qiov, qoff, NULL);
        if (ret < 0 && j->ret == 0) {
            j->ret = ret;
        }
    }
    qcow2_worker_done(&j->w);
}

bool qcow2_cread_parallel(BDRVQcow2State *s, uint64_t bytes)
{
    return bytes > s->cluster_size && qcow2_compress_offloaded(s) &&
           qcow2_compress_workers(s) > 1;
}

int coroutine_fn qcow2_read_compressed_parallel(BlockDriverState *bs, uint64_t offset,
                                                uint64_t bytes, IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    CReadJob j = { .bs = bs, .offset = offset, .end = offset + bytes, .qiov = qiov,
                   .qoff = qoff };
    uint64_t first = qcow2_start_of_cluster(s, offset);
    uint64_t nclusters = div_round_up_u64(offset + bytes - first, s->cluster_size);

    qcow2_workers_run(&j.w, qcow2_compress_workers(s), nclusters, cread_worker, &j);
    return j.ret;
}
