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

/* Runs on a worker thread (or inline): only the slot is touched. */
static int64_t cslot_work(void *opaque)
{
    Qcow2CSlot *slot = opaque;

    if (slot->compress) {
        return qcow2_codec_compress(&slot->codec, slot->type, slot->dst, slot->dst_len,
                                    slot->src, slot->src_len);
    }
    return qcow2_codec_decompress(&slot->codec, slot->type, slot->dst, slot->dst_len, slot->src,
                                  slot->src_len);
}

static int64_t coroutine_fn cslot_run(BlockDriverState *bs, Qcow2CSlot *slot)
{
    BDRVQcow2State *s = bs->opaque;

    slot->type = s->compression_type;
    if (s->cluster_size < QCOW2_OFFLOAD_MIN) {
        return cslot_work(slot);
    }
    return thread_pool_co_run(bdrv_get_aio_context(bs), cslot_work, slot);
}

ssize_t coroutine_fn qcow2_co_compress(BlockDriverState *bs, Qcow2CSlot *slot,
                                       const uint8_t *src)
{
    BDRVQcow2State *s = bs->opaque;

    slot->compress = true;
    slot->src = src;
    slot->src_len = s->cluster_size;
    slot->dst = slot->cbuf;
    slot->dst_len = s->cluster_size - 1;
    return (ssize_t)cslot_run(bs, slot);
}

int coroutine_fn qcow2_co_decompress(BlockDriverState *bs, Qcow2CSlot *slot, size_t clen,
                                     uint8_t *dst)
{
    BDRVQcow2State *s = bs->opaque;

    slot->compress = false;
    slot->src = slot->cbuf;
    slot->src_len = clen;
    slot->dst = dst;
    slot->dst_len = s->cluster_size;
    return (int)cslot_run(bs, slot);
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
 * Reads and inflates the compressed cluster into dst (NULL: a slot's
 * buffer), then copies [in, in + n) of it to the caller's vector.
 */
static int coroutine_fn inflate_cluster(BlockDriverState *bs, uint64_t coff, uint64_t clen,
                                        uint8_t *dst, uint64_t in, uint64_t n, IOVector *qiov,
                                        size_t qoff)
{
    Qcow2CSlot *slot = qcow2_cslot_get(bs);
    int ret;

    if (!slot) {
        return -ENOMEM;
    }
    dst = dst ? dst : slot->dbuf;
    ret = qcow2_pread(bs->file, (int64_t)coff, (int64_t)clen, slot->cbuf);
    if (ret >= 0) {
        ret = qcow2_co_decompress(bs, slot, clen, dst);
    }
    if (ret >= 0) {
        iovector_from_buf(qiov, qoff, dst + in, n);
        ret = 0;
    }
    qcow2_cslot_put(bs, slot);
    return ret;
}

int coroutine_fn qcow2_read_compressed_cached(BlockDriverState *bs, uint64_t coff,
                                              uint64_t clen, uint64_t offset, uint64_t n,
                                              IOVector *qiov, size_t qoff)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CState *cs = cstate(s);
    uint64_t in = qcow2_offset_into_cluster(s, offset);
    Qcow2DCEntry *e;
    int ret;

    if (!cs) {
        return -ENOMEM;
    }
    if (clen > 2 * s->cluster_size) {
        return -EIO; /* cannot happen: the descriptor's sector count is capped */
    }
    while ((e = dc_find(cs, coff, clen)) && e->state == DC_FILLING) {
        co_queue_wait(&e->waiters, NULL);
    }
    if (e) {
        e->lru = ++cs->clock;
        iovector_from_buf(qiov, qoff, e->data + in, n);
        return 0;
    }
    e = dc_victim(s, cs);
    if (!e) {
        /* Every entry is being filled: inflate into a slot, uncached. */
        return inflate_cluster(bs, coff, clen, NULL, in, n, qiov, qoff);
    }
    e->state = DC_FILLING;
    e->stale = false;
    e->coff = coff;
    e->clen = clen;
    ret = inflate_cluster(bs, coff, clen, e->data, in, n, qiov, qoff);
    if (ret == 0 && !e->stale) {
        e->state = DC_VALID;
        e->lru = ++cs->clock;
    } else {
        dc_drop(cs, e);
    }
    co_queue_restart_all(&e->waiters);
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
