/*
 * qcow2: the data writes of concurrent allocating writes that land next to
 * each other in the image file go out as one request.
 *
 * Sequential guest writes at a queue depth get their new clusters one after
 * the other at the end of the file, and a burst of completions (one loop
 * iteration reaping several) starts as many new allocating writes in the
 * same iteration. Each would write its clusters with a request of its own;
 * on a disk file system every such request into the grown (unwritten) tail
 * costs the file system an extent split at submission and a conversion at
 * completion, both under the inode's extent lock. Here the first of them
 * leads a batch: it lets the loop finish dispatching (it re-enters from the
 * scheduled-coroutine bottom half of the same iteration), while later
 * writes whose bytes start where the batch ends append their vectors to it
 * and wait; the leader then writes the whole range in one request and hands
 * every member the result.
 *
 * Only the data write is shared: each member then links its own L2 entries
 * (alloc_finish), or frees its own clusters if the write failed, exactly as
 * alone, so the metadata ordering (data before L2, refcounts before L2)
 * does not change, and no data I/O happens under s->lock. A batch is led
 * only while another allocation is in flight (at queue depth 1 there is
 * nobody to wait for, and the write goes out at once), and only by a write
 * that leaves room for another like it; it is capped at QCOW2_WBATCH_MAX
 * bytes and QCOW2_WBATCH_IOV vector entries (within the file's max_iov /
 * max_transfer). A full batch closes at once: the next adjacent write leads
 * a new one, so a burst becomes several requests in flight, not one.
 *
 * Nothing here allocates: the batch, its vector array and each member's
 * record live on the stacks of the leader and the members (1 KiB for the
 * leader's array). A write whose own vector would not fit in the array goes
 * out alone, as without batching.
 */
#include <errno.h>
#include <string.h>

#include "qcow2.h"

/*
 * Batches are small on purpose: on ext4 over a virtio disk (row 3b of
 * bench/run-qcow2.sh, 64 KiB sequential writes at qd 32) two clusters per
 * request (half the extent conversions of lone writes, ~16 requests still
 * in flight) ran at 1.5x the IOPS of batches up to 2 MiB (1-3 requests in
 * flight) and 1.6x lone writes, medians of 7 rounds at load 8-12 (at load
 * 15: even with 2 MiB); 256 KiB was in between. See bench/README.md.
 */
#define QCOW2_WBATCH_MAX (128ULL << 10)
#define QCOW2_WBATCH_IOV 64

/* A write that joined a batch; lives on the member's stack while it waits. */
typedef struct Qcow2WbMember {
    Coroutine *co;
    int ret;
    bool done;
    struct Qcow2WbMember *next;
} Qcow2WbMember;

/* An open batch; lives on the leader's stack until its write has completed. */
struct Qcow2WriteBatch {
    uint64_t start, end;     /* host byte range written so far */
    int niov;                /* entries used in iov */
    Qcow2WbMember *members;  /* those waiting (not the leader) */
    struct iovec iov[QCOW2_WBATCH_IOV]; /* the members' vectors, in host order */
};

/* The most bytes and vector entries one batch may hold, for data_file. */
static void batch_limits(BDRVQcow2State *s, uint64_t *max_bytes, int *max_iov)
{
    const BlockDriverState *f = s->data_file->bs;

    *max_bytes = QCOW2_WBATCH_MAX;
    if (f->bl.max_transfer > 0 && (uint64_t)f->bl.max_transfer < *max_bytes) {
        *max_bytes = (uint64_t)f->bl.max_transfer;
    }
    *max_iov = QCOW2_WBATCH_IOV;
    if (f->bl.max_iov > 0 && f->bl.max_iov < *max_iov) {
        *max_iov = f->bl.max_iov;
    }
}

/* True if [host, host + v->size) may be appended to the open batch b. */
static bool batch_fits(BDRVQcow2State *s, const Qcow2WriteBatch *b, uint64_t host,
                       const IOVector *v)
{
    uint64_t max_bytes;
    int max_iov;

    batch_limits(s, &max_bytes, &max_iov);
    return b->end == host && b->end - b->start + v->size <= max_bytes &&
           b->niov + v->niov <= max_iov;
}

/* True if a batch led by v would have room for another write like v. */
static bool lead_fits(BDRVQcow2State *s, const IOVector *v)
{
    uint64_t max_bytes;
    int max_iov;

    batch_limits(s, &max_bytes, &max_iov);
    return 2 * v->size <= max_bytes && 2 * v->niov <= max_iov;
}

/* Appends the entries of v (which fit: batch_fits) to the array of b. */
static void batch_append(Qcow2WriteBatch *b, const IOVector *v)
{
    memcpy(&b->iov[b->niov], v->iov, (size_t)v->niov * sizeof(struct iovec));
    b->niov += v->niov;
    b->end += v->size;
}

/* Appends v to b and waits until the leader has written the batch. */
static int coroutine_fn batch_join(BDRVQcow2State *s, Qcow2WriteBatch *b, const IOVector *v)
{
    Qcow2WbMember m = { .co = coroutine_self(), .ret = 0, .done = false };

    batch_append(b, v);
    m.next = b->members;
    /* m lives on this coroutine's stack until the leader has set m.done and woken it. */
    /* cppcheck-suppress autoVariables */
    b->members = &m;
    s->wbatch_joined++;
    if (!batch_fits(s, b, b->end, v)) {
        s->wbatch = NULL; /* full: the next write leads a batch of its own */
    }
    while (!m.done) {
        coroutine_yield();
    }
    return m.ret;
}

/* Leads a batch starting with v at host: writes it once the loop iteration is dispatched. */
static int coroutine_fn batch_lead(BlockDriverState *bs, uint64_t host, const IOVector *v)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2WriteBatch b;
    Qcow2WbMember *m;
    IOVector w;
    int ret;

    b.start = b.end = host;
    b.niov = 0;
    b.members = NULL;
    batch_append(&b, v);
    s->wbatch = &b;
    aio_co_schedule(bdrv_get_aio_context(bs), coroutine_self());
    coroutine_yield();
    if (s->wbatch == &b) {
        s->wbatch = NULL;
    }
    if (b.members) {
        s->wbatch_writes++;
    }
    iovector_init_external(&w, b.iov, b.niov);
    ret = bdrv_co_pwritev(s->data_file, (int64_t)b.start, (int64_t)(b.end - b.start), &w, 0);
    for (m = b.members; m;) {
        Qcow2WbMember *next = m->next; /* m is gone once its coroutine runs */

        m->ret = ret;
        m->done = true;
        aio_co_wake(m->co);
        m = next;
    }
    return ret;
}

int coroutine_fn qcow2_write_new_data(BlockDriverState *bs, uint64_t host, IOVector *v)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2WriteBatch *b = s->wbatch;

    if (b && batch_fits(s, b, host, v)) {
        return batch_join(s, b, v);
    }
    if (!b && s->allocs && s->allocs->next && lead_fits(s, v)) {
        return batch_lead(bs, host, v);
    }
    return bdrv_co_pwritev(s->data_file, (int64_t)host, (int64_t)v->size, v, 0);
}
