/*
 * The "native" engine: Linux AIO (io_setup/io_submit) through libaio.
 *
 * Each request's iocb lives in its AioIoReq. Prepared iocbs wait on a queue
 * and go to the kernel in one io_submit() per flush (earlier when the device
 * is under-occupied, see LAIO_EAGER_RATIO); when the kernel says
 * -EAGAIN the rest stay queued until completions make room. Every iocb
 * signals one eventfd, watched as an fd handler. Completions are read from
 * the kernel's completion ring in user space when its layout is the known
 * one (struct aio_ring of fs/aio.c, stable ABI), else with io_getevents().
 * fallocate, and fsync on files whose driver lacks AIO fsync, run on the
 * thread pool.
 */
#include <assert.h>
#include <errno.h>
#include <libaio.h>
#include <stdlib.h>
#include <time.h>

#include "aio/engine-int.h"

#define LAIO_DEPTH 256

/*
 * Unplugged requests go out at once, instead of at the loop iteration's
 * flush, while the kernel holds fewer than this many times the queued ones:
 * this keeps the device fed instead of answering a burst of completions with
 * one burst of submissions (lockstep), and keeps batches large when busy.
 */
#define LAIO_EAGER_RATIO 4

static_assert(sizeof(struct iocb) <= sizeof(((AioIoReq *)0)->priv),
              "a struct iocb must fit in AioIoReq.priv");

/* Header of the completion ring the kernel maps at the io_context_t address. */
struct laio_ring {
    unsigned id;
    unsigned nr;   /* number of io_events */
    unsigned head; /* advanced by the consumer */
    unsigned tail; /* advanced by the kernel */
    unsigned magic;
    unsigned compat_features;
    unsigned incompat_features;
    unsigned header_length;
    struct io_event io_events[];
};

#define LAIO_RING_MAGIC 0xa10a10a1u

typedef struct LaioEngine {
    AioEngine *e;
    io_context_t io_ctx;
    struct laio_ring *ring; /* NULL: reap with io_getevents() */
    EventNotifier notifier;
    AioIoReq *pending_head; /* prepared iocbs not yet submitted */
    AioIoReq *pending_tail;
    unsigned pending;
    unsigned inflight;
    AioBH *retry_bh;
    struct iocb *batch[LAIO_DEPTH];
    struct io_event events[LAIO_DEPTH];
} LaioEngine;

static struct iocb *req_iocb(AioIoReq *req)
{
    return (struct iocb *)req->priv;
}

static void laio_prep(LaioEngine *s, AioIoReq *req)
{
    struct iocb *iocb = req_iocb(req);

    switch (req->op) {
    case AIO_OP_PREADV:
        if (req->iovcnt == 1) {
            io_prep_pread(iocb, req->fd, req->iov[0].iov_base, req->iov[0].iov_len, req->offset);
        } else {
            io_prep_preadv(iocb, req->fd, req->iov, req->iovcnt, req->offset);
        }
        break;
    case AIO_OP_PWRITEV:
        if (req->iovcnt == 1) {
            io_prep_pwrite(iocb, req->fd, req->iov[0].iov_base, req->iov[0].iov_len,
                           req->offset);
        } else {
            io_prep_pwritev(iocb, req->fd, req->iov, req->iovcnt, req->offset);
        }
        /* RWF_DSYNC (a FUA write); libaio >= 0.3.111 names the field (Debian 12: 0.3.113). */
        iocb->aio_rw_flags = req->mode;
        break;
    case AIO_OP_FSYNC:
        io_prep_fsync(iocb, req->fd);
        break;
    case AIO_OP_FDATASYNC:
        io_prep_fdsync(iocb, req->fd);
        break;
    default:
        abort();
    }
    io_set_eventfd(iocb, s->notifier.fd);
    iocb->data = req;
}

static AioIoReq *laio_pending_pop(LaioEngine *s)
{
    AioIoReq *req = s->pending_head;

    s->pending_head = req->next;
    if (!s->pending_head) {
        s->pending_tail = NULL;
    }
    s->pending--;
    return req;
}

/*
 * The first queued iocb was refused with err. An fsync the file's driver
 * cannot do asynchronously (-EINVAL) goes to the pool; others fail.
 */
static void laio_refused(LaioEngine *s, int err)
{
    AioIoReq *req = laio_pending_pop(s);
    bool sync_op = req->op == AIO_OP_FSYNC || req->op == AIO_OP_FDATASYNC;

    if (sync_op && err == -EINVAL) {
        aio_io_req_submit_to_pool(s->e->ctx, req);
    } else {
        aio_engine_complete_later(s->e, req, err);
    }
}

/* Submits up to LAIO_DEPTH - inflight queued iocbs; returns io_submit()'s result. */
static int laio_submit_some(LaioEngine *s)
{
    unsigned n = 0;
    int ret;

    for (AioIoReq *req = s->pending_head; req && s->inflight + n < LAIO_DEPTH; req = req->next) {
        s->batch[n++] = req_iocb(req);
    }
    do {
        ret = io_submit(s->io_ctx, n, s->batch);
    } while (ret == -EINTR);
    for (int i = 0; i < ret; i++) {
        laio_pending_pop(s);
    }
    if (ret > 0) {
        s->inflight += ret;
        aio_engine_account_batch(s->e, ret);
    }
    return ret;
}

static void laio_flush(AioEngine *e)
{
    LaioEngine *s = e->priv_state;

    while (s->pending_head && s->inflight < LAIO_DEPTH) {
        int ret = laio_submit_some(s);

        if (ret == -EAGAIN) {
            /* Completions make room; with none to come, retry from a BH. */
            if (s->inflight == 0) {
                aio_bh_schedule(s->retry_bh);
            }
            break;
        }
        if (ret < 0) {
            laio_refused(s, ret);
        } else if (ret == 0) {
            break;
        }
    }
}

static int laio_submit_req(AioEngine *e, AioIoReq *req)
{
    LaioEngine *s = e->priv_state;

    if (req->op == AIO_OP_FALLOCATE) {
        aio_io_req_submit_to_pool(e->ctx, req);
        return 0;
    }
    laio_prep(s, req);
    req->next = NULL;
    if (s->pending_tail) {
        s->pending_tail->next = req;
    } else {
        s->pending_head = req;
    }
    s->pending_tail = req;
    s->pending++;
    if (s->pending >= LAIO_DEPTH) {
        /* A full batch goes out even while plugged. */
        laio_flush(e);
    } else if (e->ctx->plug_depth == 0 && s->pending * LAIO_EAGER_RATIO > s->inflight) {
        laio_flush(e);
    }
    return 0;
}

static void laio_retry_bh(void *opaque)
{
    AioEngine *e = opaque;

    if (e->ctx->plug_depth == 0) {
        laio_flush(e);
    }
}

/* Copies up to max events from the user-space ring; returns how many. */
static unsigned laio_ring_reap(struct laio_ring *ring, struct io_event *ev, unsigned max)
{
    unsigned head = __atomic_load_n(&ring->head, __ATOMIC_RELAXED);
    unsigned tail = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
    unsigned n = 0;

    while (head != tail && n < max) {
        ev[n++] = ring->io_events[head];
        head = head + 1 == ring->nr ? 0 : head + 1;
    }
    __atomic_store_n(&ring->head, head, __ATOMIC_RELEASE);
    return n;
}

static int laio_get_events(LaioEngine *s)
{
    struct timespec zero = { 0, 0 };

    if (s->ring) {
        return laio_ring_reap(s->ring, s->events, LAIO_DEPTH);
    }
    return io_getevents(s->io_ctx, 0, LAIO_DEPTH, s->events, &zero);
}

/* Completes everything the kernel has finished. */
static void laio_reap(LaioEngine *s)
{
    int n;

    while ((n = laio_get_events(s)) > 0) {
        for (int i = 0; i < n; i++) {
            AioIoReq *req = s->events[i].data;

            s->inflight--;
            aio_io_req_complete(req, (long)s->events[i].res);
        }
        if (n < LAIO_DEPTH) {
            break;
        }
    }
}

static void laio_completion(void *opaque)
{
    LaioEngine *s = ((AioEngine *)opaque)->priv_state;

    event_notifier_test_and_clear(&s->notifier);
    laio_reap(s);
}

static bool laio_poll(void *opaque)
{
    LaioEngine *s = ((AioEngine *)opaque)->priv_state;

    if (!s->ring) {
        return false;
    }
    return __atomic_load_n(&s->ring->head, __ATOMIC_RELAXED) !=
           __atomic_load_n(&s->ring->tail, __ATOMIC_ACQUIRE);
}

/* The kernel's ring, if it has the layout this file knows. */
static struct laio_ring *laio_ring_of(io_context_t io_ctx)
{
    struct laio_ring *ring = (struct laio_ring *)io_ctx;

    if (ring->magic != LAIO_RING_MAGIC || ring->incompat_features != 0 ||
        ring->header_length != sizeof(struct laio_ring)) {
        return NULL;
    }
    return ring;
}

static int laio_init(AioEngine *e, Error **errp)
{
    LaioEngine *s = calloc(1, sizeof(*s));
    int ret;

    if (!s) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    s->e = e;
    ret = io_setup(LAIO_DEPTH, &s->io_ctx);
    if (ret < 0) {
        error_setg_errno(errp, ret, "io_setup");
        goto out_free_state;
    }
    s->ring = laio_ring_of(s->io_ctx);
    ret = event_notifier_init(&s->notifier, false);
    if (ret < 0) {
        error_setg_errno(errp, ret, "cannot create an eventfd");
        goto out_destroy_ctx;
    }
    e->priv_state = s;
    ret = aio_set_fd_handler(e->ctx, s->notifier.fd, laio_completion, NULL, laio_poll,
                             laio_completion, e);
    if (ret < 0) {
        error_setg_errno(errp, ret, "cannot watch the AIO eventfd");
        goto out_cleanup_notifier;
    }
    s->retry_bh = aio_bh_new(e->ctx, laio_retry_bh, e);
    return 0;

out_cleanup_notifier:
    event_notifier_cleanup(&s->notifier);
out_destroy_ctx:
    io_destroy(s->io_ctx);
out_free_state:
    free(s);
    e->priv_state = NULL;
    return ret;
}

static void laio_cleanup(AioEngine *e)
{
    LaioEngine *s = e->priv_state;

    assert(s->inflight == 0 && !s->pending_head);
    aio_set_fd_handler(e->ctx, s->notifier.fd, NULL, NULL, NULL, NULL, NULL);
    aio_bh_delete(s->retry_bh);
    event_notifier_cleanup(&s->notifier);
    io_destroy(s->io_ctx);
    free(s);
    e->priv_state = NULL;
}

const AioEngineOps aio_engine_linux_aio_ops = {
    .type = AIO_ENGINE_NATIVE,
    .init = laio_init,
    .cleanup = laio_cleanup,
    .submit = laio_submit_req,
    .flush = laio_flush,
};
