/*
 * qcow2: the node's pool of bounce buffers for copy-on-write, so that the
 * allocating-write path does not call malloc.
 *
 * A buffer set holds a COW area (head + tail of an allocating write, at most
 * two clusters) and, for a COW from a compressed cluster, a compressed-data
 * area (a compressed cluster takes at most two clusters on disk, see
 * qcow2_decode_compressed) and a one-cluster area for the decompressed data.
 * Sets are allocated on first need and kept until close; at most max sets
 * exist (bounded by QCOW2_BUFPOOL_BYTES of memory, at least 2). A request
 * that finds none free waits for one to be returned.
 *
 * Deadlock rules: a coroutine holds at most one set of a node at a time, and
 * never waits for an in-flight allocation or a compression slot
 * (compress-pool.c) while holding one. The COW path decompresses in its own
 * set (on a worker thread, through the decompressed-cluster cache, see
 * qcow2_read_compressed_cached) rather than taking a compression slot, since
 * compressed writers hold slots while they wait for allocations.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

/* Memory the pool may hold per node. */
#define QCOW2_BUFPOOL_BYTES (64ULL << 20)
#define QCOW2_BUFPOOL_MAX_SETS 16
#define QCOW2_BUFPOOL_ALIGN 4096

void qcow2_bufpool_init(BDRVQcow2State *s)
{
    uint64_t per = 5 * s->cluster_size;
    uint64_t max = QCOW2_BUFPOOL_BYTES / per;

    s->bufpool.free = NULL;
    s->bufpool.count = 0;
    s->bufpool.in_use = 0;
    s->bufpool.max = max < 2 ? 2 : max > QCOW2_BUFPOOL_MAX_SETS ? QCOW2_BUFPOOL_MAX_SETS
                                                                 : (int)max;
    co_queue_init(&s->bufpool.waiters);
}

static Qcow2Buf *bufpool_new_set(BDRVQcow2State *s)
{
    Qcow2Buf *b = calloc(1, sizeof(*b));
    void *mem = NULL;

    if (b) {
        b->codec = calloc(1, sizeof(*b->codec));
    }
    if (!b || !b->codec || posix_memalign(&mem, QCOW2_BUFPOOL_ALIGN, 5 * s->cluster_size)) {
        free(b ? b->codec : NULL);
        free(b);
        return NULL;
    }
    b->cow = mem;
    b->cbuf = b->cow + 2 * s->cluster_size;
    b->dbuf = b->cbuf + 2 * s->cluster_size;
    return b;
}

Qcow2Buf *coroutine_fn qcow2_buf_get(BDRVQcow2State *s)
{
    Qcow2BufPool *p = &s->bufpool;

    for (;;) {
        Qcow2Buf *b = p->free;

        if (b) {
            p->free = b->next;
            p->in_use++;
            return b;
        }
        if (p->count < p->max) {
            b = bufpool_new_set(s);
            if (b) {
                p->count++;
                p->in_use++;
                return b;
            }
            if (p->in_use == 0) {
                return NULL; /* out of memory and nothing to wait for */
            }
        }
        co_queue_wait(&p->waiters, NULL);
    }
}

void qcow2_buf_put(BDRVQcow2State *s, Qcow2Buf *b)
{
    Qcow2BufPool *p = &s->bufpool;

    if (!b) {
        return;
    }
    b->next = p->free;
    p->free = b;
    p->in_use--;
    co_queue_next(&p->waiters);
}

void qcow2_bufpool_destroy(BDRVQcow2State *s)
{
    Qcow2BufPool *p = &s->bufpool;

    while (p->free) {
        Qcow2Buf *b = p->free;

        p->free = b->next;
        qcow2_codec_free(b->codec);
        free(b->codec);
        free(b->cow);
        free(b);
        p->count--;
    }
}
