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
 * (de)compressed inline: the thread hop would cost more than the work; so
 * are inflations of short prefixes (QCOW2_INFLATE_INLINE_MAX).
 *
 * Reads of compressed clusters and their cache are in cread.c.
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

#define QCOW2_OFFLOAD_MIN 8192
/*
 * Inflations of at most this many bytes (a prefix for a read in the first
 * half of a cluster) also run inline: some 15-80 us of work, and the hop to a
 * worker thread and back costs a good part of that in wake-ups (crand, our
 * decoder: 92-101 us of CPU per read against 93-104 with 16 KiB). The main
 * thread then takes about a third of the CPU of a crand run (perf), so the
 * workers still get the larger half. Whole clusters stay on the pool, so
 * that multi-cluster reads inflate in parallel.
 */
#define QCOW2_INFLATE_INLINE_MAX 32768

typedef struct Qcow2CState {
    Qcow2CSlot slots[QCOW2_CSLOTS_MAX];
    int nslots, max_slots;
    Qcow2CSlot *free;
    CoQueue slot_q;
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
    if (s->compress_workers > 0) {
        cs->max_slots = s->compress_workers; /* the option, 1..QCOW2_CSLOTS_MAX */
    }
    co_queue_init(&cs->slot_q);
    s->cstate = cs;
    return cs;
}

bool qcow2_compress_offloaded(const BDRVQcow2State *s)
{
    return s->cluster_size >= QCOW2_OFFLOAD_MIN;
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
    return qcow2_codec_inflate(job->codec, job->type, job->dst, job->dst_len, job->need,
                               job->src, job->src_len);
}

static int64_t coroutine_fn cjob_run(BlockDriverState *bs, Qcow2CJob *job)
{
    BDRVQcow2State *s = bs->opaque;

    job->type = s->compression_type;
    if (s->cluster_size < QCOW2_OFFLOAD_MIN ||
        (!job->compress && job->need < job->dst_len &&
         job->need <= QCOW2_INFLATE_INLINE_MAX)) {
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

ssize_t coroutine_fn qcow2_co_inflate(BlockDriverState *bs, Qcow2Codec *codec,
                                      const uint8_t *cbuf, size_t clen, uint8_t *dst,
                                      size_t need)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CJob job = { .codec = codec, .compress = false, .src = cbuf, .src_len = clen,
                      .dst = dst, .dst_len = s->cluster_size, .need = need };

    return (ssize_t)cjob_run(bs, &job);
}

bool qcow2_cstate_idle(const BDRVQcow2State *s)
{
    const Qcow2CState *cs = s->cstate;
    int nfree = 0;

    for (const Qcow2CSlot *p = cs ? cs->free : NULL; p; p = p->next_free) {
        nfree++;
    }
    return !cs || nfree == cs->nslots;
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
    free(cs);
    s->cstate = NULL;
}

void coroutine_fn qcow2_workers_run(Qcow2Workers *w, int n, uint64_t max, CoroutineEntry *fn,
                                    void *job)
{
    n = (uint64_t)n > max ? (int)max : n;
    co_queue_init(&w->done);
    w->running = n;
    for (int i = 0; i < n; i++) {
        coroutine_enter(coroutine_create(fn, job));
    }
    while (w->running > 0) {
        co_queue_wait(&w->done, NULL);
    }
}

void qcow2_worker_done(Qcow2Workers *w)
{
    if (--w->running == 0) {
        co_queue_restart_all(&w->done);
    }
}
