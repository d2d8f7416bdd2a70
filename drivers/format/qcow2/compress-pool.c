/*
 * qcow2: compressed clusters off the request thread.
 *
 * Compression slots: a small set (2 per online CPU, 2..16) of buffer pairs
 * with their codec contexts, created on first use and kept until close, so
 * compressed I/O allocates nothing in the steady state. A request takes a
 * slot (waiting while all are busy: this bounds the CPU work and memory in
 * flight), and its coroutine hands the compression or decompression to the
 * AioContext's thread pool, yielding until a worker thread is done; the
 * coroutine then resumes in its own AioContext. Clusters under 8 KiB are
 * (de)compressed inline: the thread hop would cost more than the work.
 *
 * Decompressed-cluster cache: a few decompressed clusters (about 4 MiB,
 * 4..64 entries), keyed by the compressed data's host offset and length, so
 * sub-cluster reads of one compressed cluster inflate it once. Concurrent
 * readers of a cluster being inflated wait for it. The host bytes of a
 * compressed cluster never change while any L2 entry references them, so an
 * entry only goes stale when its host cluster is freed: the refcount code
 * calls qcow2_dcache_invalidate() whenever a refcount drops to zero (an entry
 * still being filled is then dropped when it completes), and every wholesale
 * metadata change (refcount rebuild, snapshot revert) clears the cache.
 *
 * Everything here runs in the node's AioContext (no lock needed); the
 * worker threads only touch the slot's job fields and buffers.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/aio-io.h>

#include "qcow2.h"

#define QCOW2_CSLOTS_MAX 16
#define QCOW2_OFFLOAD_MIN 8192
#define QCOW2_DCACHE_BYTES (4ULL << 20)
#define QCOW2_DCACHE_MIN 4
#define QCOW2_DCACHE_MAX 64

enum { DC_EMPTY, DC_FILLING, DC_VALID };

typedef struct Qcow2DCEntry {
    uint64_t coff, clen;    /* compressed data: host offset, bytes */
    uint8_t *data;          /* one decompressed cluster (allocated on first use) */
    uint64_t lru;
    int state;
    bool stale;             /* invalidated while filling: dropped when done */
    CoQueue waiters;        /* readers waiting for a filling entry */
} Qcow2DCEntry;

typedef struct Qcow2CState {
    Qcow2CSlot slots[QCOW2_CSLOTS_MAX];
    int nslots, max_slots;
    Qcow2CSlot *free;
    CoQueue slot_q;
    Qcow2DCEntry dc[QCOW2_DCACHE_MAX];
    int dc_size;
    int dc_live;            /* entries not EMPTY */
    uint64_t clock;
} Qcow2CState;

static Qcow2CState *cstate(BDRVQcow2State *s)
{
    Qcow2CState *cs = s->cstate;
    long ncpu;

    if (cs) {
        return cs;
    }
    cs = calloc(1, sizeof(*cs));
    if (!cs) {
        return NULL;
    }
    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    ncpu = ncpu < 1 ? 1 : ncpu;
    cs->max_slots = ncpu * 2 > QCOW2_CSLOTS_MAX ? QCOW2_CSLOTS_MAX : (int)ncpu * 2;
    co_queue_init(&cs->slot_q);
    cs->dc_size = (int)(QCOW2_DCACHE_BYTES / s->cluster_size);
    cs->dc_size = cs->dc_size < QCOW2_DCACHE_MIN ? QCOW2_DCACHE_MIN : cs->dc_size;
    cs->dc_size = cs->dc_size > QCOW2_DCACHE_MAX ? QCOW2_DCACHE_MAX : cs->dc_size;
    for (int i = 0; i < cs->dc_size; i++) {
        co_queue_init(&cs->dc[i].waiters);
    }
    s->cstate = cs;
    return cs;
}

int qcow2_compress_workers(BDRVQcow2State *s)
{
    Qcow2CState *cs = cstate(s);

    return cs ? cs->max_slots : 1;
}

/* ---------------------------------------------------------------------- */
/* Slots and the worker threads */

Qcow2CSlot *coroutine_fn qcow2_cslot_get(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CState *cs = cstate(s);
    Qcow2CSlot *slot;

    while (cs) {
        if (cs->free) {
            slot = cs->free;
            cs->free = slot->next_free;
            return slot;
        }
        if (cs->nslots < cs->max_slots) {
            slot = &cs->slots[cs->nslots];
            slot->cbuf = malloc(2 * s->cluster_size);
            slot->dbuf = malloc(s->cluster_size);
            if (slot->cbuf && slot->dbuf) {
                cs->nslots++;
                return slot;
            }
            free(slot->cbuf);
            free(slot->dbuf);
            slot->cbuf = slot->dbuf = NULL;
            if (cs->nslots == 0) {
                return NULL;
            }
            cs->max_slots = cs->nslots; /* out of memory: make do with what we have */
        }
        co_queue_wait(&cs->slot_q, NULL);
    }
    return NULL;
}

void qcow2_cslot_put(BlockDriverState *bs, Qcow2CSlot *slot)
{
    Qcow2CState *cs = ((BDRVQcow2State *)bs->opaque)->cstate;

    slot->next_free = cs->free;
    cs->free = slot;
    co_queue_next(&cs->slot_q);
}

/* Runs on a worker thread (or inline): only the job and its buffers are touched. */
static int64_t cjob_work(void *opaque)
{
    Qcow2CJob *job = opaque;

    if (job->compress) {
        return qcow2_codec_compress(job->codec, job->type, job->dst, job->dst_len, job->src,
                                    job->src_len);
    }
    return qcow2_codec_decompress(job->codec, job->type, job->dst, job->dst_len, job->src,
                                  job->src_len);
}

static int64_t coroutine_fn cjob_run(BlockDriverState *bs, Qcow2CJob *job)
{
    BDRVQcow2State *s = bs->opaque;

    job->type = s->compression_type;
    if (s->cluster_size < QCOW2_OFFLOAD_MIN) {
        return cjob_work(job);
    }
    return thread_pool_co_run(bdrv_get_aio_context(bs), cjob_work, job);
}

ssize_t coroutine_fn qcow2_co_compress(BlockDriverState *bs, Qcow2CSlot *slot,
                                       const uint8_t *src)
{
    BDRVQcow2State *s = bs->opaque;

    slot->job = (Qcow2CJob){ .codec = &slot->codec, .compress = true, .src = src,
                             .src_len = s->cluster_size, .dst = slot->cbuf,
                             .dst_len = s->cluster_size - 1 };
    return (ssize_t)cjob_run(bs, &slot->job);
}

/* Decompresses clen bytes of cbuf into dst (a cluster) with codec, on a worker thread. */
static int coroutine_fn co_decompress(BlockDriverState *bs, Qcow2Codec *codec,
                                      const uint8_t *cbuf, size_t clen, uint8_t *dst)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CJob job = { .codec = codec, .compress = false, .src = cbuf, .src_len = clen,
                      .dst = dst, .dst_len = s->cluster_size };

    return (int)cjob_run(bs, &job);
}

int coroutine_fn qcow2_co_decompress(BlockDriverState *bs, Qcow2CSlot *slot, size_t clen,
                                     uint8_t *dst)
{
    return co_decompress(bs, &slot->codec, slot->cbuf, clen, dst);
}

/* ---------------------------------------------------------------------- */
/* Decompressed-cluster cache */

static Qcow2DCEntry *dc_find(Qcow2CState *cs, uint64_t coff, uint64_t clen)
{
    for (int i = 0; i < cs->dc_size; i++) {
        Qcow2DCEntry *e = &cs->dc[i];

        if (e->state != DC_EMPTY && e->coff == coff && e->clen == clen) {
            return e;
        }
    }
    return NULL;
}

/* An empty or the least recently used valid entry, with its buffer; NULL if none. */
static Qcow2DCEntry *dc_victim(BDRVQcow2State *s, Qcow2CState *cs)
{
    Qcow2DCEntry *v = NULL;

    for (int i = 0; i < cs->dc_size; i++) {
        Qcow2DCEntry *e = &cs->dc[i];

        if (e->state == DC_EMPTY) {
            v = e;
            break;
        }
        if (e->state == DC_VALID && (!v || e->lru < v->lru)) {
            v = e;
        }
    }
    if (v && !v->data) {
        v->data = malloc(s->cluster_size);
        if (!v->data) {
            return NULL;
        }
    }
    if (v && v->state == DC_EMPTY) {
        cs->dc_live++;
    }
    return v;
}

static void dc_drop(Qcow2CState *cs, Qcow2DCEntry *e)
{
    e->state = DC_EMPTY;
    cs->dc_live--;
}

/*
 * Reads and inflates the compressed cluster into dst (NULL: the
 * decompression buffer of b or slot) with the buffers and codec of b, or of
 * slot when b is NULL, then copies [in, in + n) of it to the caller's vector.
 */
static int coroutine_fn inflate_cluster(BlockDriverState *bs, Qcow2Buf *b, Qcow2CSlot *slot,
                                        uint64_t coff, uint64_t clen, uint8_t *dst,
                                        uint64_t in, uint64_t n, IOVector *qiov, size_t qoff)
{
    uint8_t *cbuf = b ? b->cbuf : slot->cbuf;
    Qcow2Codec *codec = b ? b->codec : &slot->codec;
    int ret;

    dst = dst ? dst : b ? b->dbuf : slot->dbuf;
    ret = qcow2_pread(bs->file, (int64_t)coff, (int64_t)clen, cbuf);
    if (ret >= 0) {
        ret = co_decompress(bs, codec, cbuf, clen, dst);
    }
    if (ret >= 0) {
        iovector_from_buf(qiov, qoff, dst + in, n);
        ret = 0;
    }
    return ret;
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
    Qcow2CState *cs = cstate(s);
    uint64_t in = qcow2_offset_into_cluster(s, offset);
    Qcow2CSlot *slot = NULL;
    Qcow2DCEntry *e;
    int ret;

    if (!cs) {
        return -ENOMEM;
    }
    if (clen > 2 * s->cluster_size) {
        return -EIO; /* cannot happen: the descriptor's sector count is capped */
    }
    for (;;) {
        while ((e = dc_find(cs, coff, clen)) && e->state == DC_FILLING) {
            co_queue_wait(&e->waiters, NULL);
        }
        if (e) {
            e->lru = ++cs->clock;
            iovector_from_buf(qiov, qoff, e->data + in, n);
            if (slot) {
                qcow2_cslot_put(bs, slot);
            }
            return 0;
        }
        if (b || slot) {
            break;
        }
        slot = qcow2_cslot_get(bs); /* may wait: look the cluster up again after */
        if (!slot) {
            return -ENOMEM;
        }
    }
    e = dc_victim(s, cs);
    if (!e) {
        /* Every entry is being filled: inflate into a private buffer, uncached. */
        ret = inflate_cluster(bs, b, slot, coff, clen, NULL, in, n, qiov, qoff);
    } else {
        e->state = DC_FILLING;
        e->stale = false;
        e->coff = coff;
        e->clen = clen;
        ret = inflate_cluster(bs, b, slot, coff, clen, e->data, in, n, qiov, qoff);
        if (ret == 0 && !e->stale) {
            e->state = DC_VALID;
            e->lru = ++cs->clock;
        } else {
            dc_drop(cs, e);
        }
        co_queue_restart_all(&e->waiters);
    }
    if (slot) {
        qcow2_cslot_put(bs, slot);
    }
    return ret;
}

void qcow2_dcache_invalidate(BDRVQcow2State *s, uint64_t host_cluster)
{
    Qcow2CState *cs = s->cstate;

    if (!cs || cs->dc_live == 0) {
        return;
    }
    for (int i = 0; i < cs->dc_size; i++) {
        Qcow2DCEntry *e = &cs->dc[i];

        if (e->state == DC_EMPTY || e->coff >= host_cluster + s->cluster_size ||
            e->coff + e->clen <= host_cluster) {
            continue;
        }
        if (e->state == DC_FILLING) {
            e->stale = true;
        } else {
            dc_drop(cs, e);
        }
    }
}

void qcow2_dcache_clear(BDRVQcow2State *s)
{
    Qcow2CState *cs = s->cstate;

    for (int i = 0; cs && i < cs->dc_size; i++) {
        if (cs->dc[i].state == DC_FILLING) {
            cs->dc[i].stale = true;
        } else if (cs->dc[i].state == DC_VALID) {
            dc_drop(cs, &cs->dc[i]);
        }
    }
}

void qcow2_cstate_free(BDRVQcow2State *s)
{
    Qcow2CState *cs = s->cstate;

    if (!cs) {
        return;
    }
    for (int i = 0; i < cs->nslots; i++) {
        free(cs->slots[i].cbuf);
        free(cs->slots[i].dbuf);
        qcow2_codec_free(&cs->slots[i].codec);
    }
    for (int i = 0; i < cs->dc_size; i++) {
        free(cs->dc[i].data);
    }
    free(cs);
    s->cstate = NULL;
}
