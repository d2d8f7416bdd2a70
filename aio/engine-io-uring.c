/*
 * The "io_uring" engine: one ring per AioContext.
 *
 * Requests become SQEs at once and reach the kernel in one io_uring_submit()
 * per flush (per loop iteration, or at unplug); a full SQ is submitted early,
 * and so is an unplugged request when the device has little else to do.
 * Requests that find no room (SQ full and the kernel refusing more, or as
 * many in flight as the CQ holds) wait on a backlog. Completions are reaped
 * by an fd handler on the ring fd, whose poll callback looks at the CQ
 * without a system call so that busy polling sees them.
 *
 * The ring runs with COOP_TASKRUN: completion task_work (posting the CQE of
 * an interrupt-completed request, freeing a request an io-wq worker
 * finished) no longer interrupts the thread with an IPI; it runs at the
 * thread's next system call. TASKRUN_FLAG tells us when such work waits, so
 * busy polling enters the kernel for it instead of spinning past it; a
 * sleeping thread is still woken for it.
 */
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <stdlib.h>

#include "aio/engine-int.h"

#define URING_ENTRIES 128

/*
 * Unplugged requests normally wait for the loop iteration's flush, but go
 * out at once while the kernel holds fewer than this many times the
 * requests waiting in the SQ. Without it, a burst of completions is answered
 * by one burst of submissions, the device sees the queue in lockstep and
 * idles between rounds; with it the device is refilled while the rest of
 * the burst is still being processed, and batches stay large when it is busy.
 */
#define URING_EAGER_RATIO 4

typedef struct UringEngine {
    struct io_uring ring;
    AioEngine *e;
    AioIoReq *backlog_head; /* requests without an SQE yet, in order */
    AioIoReq *backlog_tail;
    unsigned inflight;      /* submitted and not reaped */
    unsigned cq_entries;
    AioBH *retry_bh;        /* resubmits after -EAGAIN with nothing in flight */
} UringEngine;

/*
 * Setup flags tried in order: the first set the kernel accepts wins.
 * SUBMIT_ALL (5.18) keeps a batch going past a request that fails at submit;
 * COOP_TASKRUN and TASKRUN_FLAG (5.19) are explained at the top.
 */
static const unsigned uring_setup_flags[] = {
    IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SUBMIT_ALL,
    0,
};

/* Setup flags treated as refused by the kernel (test hook, see engine-int.h). */
static _Atomic unsigned uring_refused_flags;

void aio_io_uring_refuse_setup_flags(unsigned flags)
{
    uring_refused_flags = flags;
}

/*
 * The flags to treat as refused: the test hook's, plus those of
 * $COBLK_IO_URING_REFUSE (a number, e.g. 0x300 for COOP_TASKRUN|TASKRUN_FLAG),
 * so that a benchmark can compare ring setups without a rebuild.
 */
static unsigned uring_refused(void)
{
    const char *env = getenv("COBLK_IO_URING_REFUSE");

    return uring_refused_flags | (env ? (unsigned)strtoul(env, NULL, 0) : 0);
}

unsigned aio_io_uring_setup_flags(AioEngine *e)
{
    UringEngine *s = e->priv_state;

    return s->ring.flags;
}

static void uring_prep(struct io_uring_sqe *sqe, AioIoReq *req)
{
    switch (req->op) {
    case AIO_OP_PREADV:
        if (req->iovcnt == 1) {
            /* The non-vectored op spares the kernel an iovec import. */
            io_uring_prep_read(sqe, req->fd, req->iov[0].iov_base, req->iov[0].iov_len,
                               req->offset);
        } else {
            io_uring_prep_readv(sqe, req->fd, req->iov, req->iovcnt, req->offset);
        }
        break;
    case AIO_OP_PWRITEV:
        if (req->iovcnt == 1) {
            io_uring_prep_write(sqe, req->fd, req->iov[0].iov_base, req->iov[0].iov_len,
                                req->offset);
        } else {
            io_uring_prep_writev(sqe, req->fd, req->iov, req->iovcnt, req->offset);
        }
        sqe->rw_flags = (__kernel_rwf_t)req->mode; /* RWF_DSYNC: a FUA write */
        break;
    case AIO_OP_FSYNC:
        io_uring_prep_fsync(sqe, req->fd, 0);
        break;
    case AIO_OP_FDATASYNC:
        io_uring_prep_fsync(sqe, req->fd, IORING_FSYNC_DATASYNC);
        break;
    case AIO_OP_FALLOCATE:
        io_uring_prep_fallocate(sqe, req->fd, req->mode, req->offset, req->len);
        break;
    }
    io_uring_sqe_set_data(sqe, req);
}

/*
 * Submits the SQEs prepared so far. Returns how many went to the kernel or
 * -errno; after a failure they stay in the SQ and go out with a later call.
 */
static int uring_submit(UringEngine *s)
{
    int ret;

    if (io_uring_sq_ready(&s->ring) == 0) {
        return 0;
    }
    do {
        ret = io_uring_submit(&s->ring);
    } while (ret == -EINTR);
    if (ret < 0) {
        /* -EAGAIN/-EBUSY: completions free resources; without any, retry from a BH. */
        if (s->inflight == 0) {
            aio_bh_schedule(s->retry_bh);
        }
        return ret;
    }
    s->inflight += ret;
    aio_engine_account_batch(s->e, ret);
    return ret;
}

/* Gives req an SQE, submitting a full SQ first. Returns false if there is no room. */
static bool uring_queue(UringEngine *s, AioIoReq *req)
{
    struct io_uring_sqe *sqe;

    if (s->inflight + io_uring_sq_ready(&s->ring) >= s->cq_entries) {
        return false;
    }
    sqe = io_uring_get_sqe(&s->ring);
    if (!sqe) {
        if (uring_submit(s) < 0) {
            return false;
        }
        sqe = io_uring_get_sqe(&s->ring);
        if (!sqe) {
            return false;
        }
    }
    uring_prep(sqe, req);
    return true;
}

static void uring_backlog_push(UringEngine *s, AioIoReq *req)
{
    req->next = NULL;
    if (s->backlog_tail) {
        s->backlog_tail->next = req;
    } else {
        s->backlog_head = req;
    }
    s->backlog_tail = req;
}

/* Moves backlog requests into the SQ while there is room. */
static void uring_drain_backlog(UringEngine *s)
{
    while (s->backlog_head && uring_queue(s, s->backlog_head)) {
        s->backlog_head = s->backlog_head->next;
        if (!s->backlog_head) {
            s->backlog_tail = NULL;
        }
    }
}

static void uring_flush(AioEngine *e)
{
    UringEngine *s = e->priv_state;

    uring_drain_backlog(s);
    uring_submit(s);
}

static int uring_submit_req(AioEngine *e, AioIoReq *req)
{
    UringEngine *s = e->priv_state;

    if (s->backlog_head || !uring_queue(s, req)) {
        uring_backlog_push(s, req);
        return 0;
    }
    if (e->ctx->plug_depth == 0 &&
        io_uring_sq_ready(&s->ring) * URING_EAGER_RATIO > s->inflight) {
        uring_submit(s);
    }
    return 0;
}

static void uring_retry_bh(void *opaque)
{
    AioEngine *e = opaque;

    if (e->ctx->plug_depth == 0) {
        uring_flush(e);
    }
}

/* fd handler of the ring fd: completes every request in the CQ. */
static void uring_reap(void *opaque)
{
    UringEngine *s = ((AioEngine *)opaque)->priv_state;
    struct io_uring_cqe *cqe;

    while (io_uring_peek_cqe(&s->ring, &cqe) == 0) {
        AioIoReq *req = io_uring_cqe_get_data(cqe);
        int res = cqe->res;

        io_uring_cqe_seen(&s->ring, cqe);
        s->inflight--;
        aio_io_req_complete(req, res);
    }
}

/*
 * Busy-poll callback: CQEs are ready, or completion task_work waits for a
 * system call (TASKRUN_FLAG); uring_reap's io_uring_peek_cqe() enters the
 * kernel to run it when the CQ is empty.
 */
static bool uring_poll(void *opaque)
{
    UringEngine *s = ((AioEngine *)opaque)->priv_state;

    return io_uring_cq_ready(&s->ring) > 0 ||
           (IO_URING_READ_ONCE(*s->ring.sq.kflags) & IORING_SQ_TASKRUN);
}

/* Fails unless the kernel knows every opcode the engine issues. */
static int uring_probe_ops(struct io_uring *ring, Error **errp)
{
    static const int needed[] = { IORING_OP_READV, IORING_OP_WRITEV, IORING_OP_FSYNC,
                                  IORING_OP_FALLOCATE, IORING_OP_READ, IORING_OP_WRITE };
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    int ret = 0;

    if (!probe) {
        /* Kernels without IORING_REGISTER_PROBE (< 5.6) lack fallocate too. */
        error_setg(errp, "kernel too old: no IORING_REGISTER_PROBE");
        return -ENOSYS;
    }
    for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
        if (!io_uring_opcode_supported(probe, needed[i])) {
            error_setg(errp, "kernel lacks io_uring opcode %d", needed[i]);
            ret = -ENOSYS;
            break;
        }
    }
    io_uring_free_probe(probe);
    return ret;
}

static int uring_ring_init(UringEngine *s, Error **errp)
{
    size_t n = sizeof(uring_setup_flags) / sizeof(uring_setup_flags[0]);
    unsigned refused = uring_refused();
    struct io_uring_params p;
    int ret = -EINVAL;

    for (size_t i = 0; i < n && ret == -EINVAL; i++) {
        p = (struct io_uring_params){ .flags = uring_setup_flags[i] };
        if (p.flags & refused) {
            continue; /* as the kernel would: -EINVAL for an unknown flag */
        }
        ret = io_uring_queue_init_params(URING_ENTRIES, &s->ring, &p);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "io_uring_queue_init");
        return ret;
    }
    s->cq_entries = p.cq_entries;
    return 0;
}

static int uring_init(AioEngine *e, Error **errp)
{
    UringEngine *s = calloc(1, sizeof(*s));
    int ret;

    if (!s) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    s->e = e;
    ret = uring_ring_init(s, errp);
    if (ret < 0) {
        goto out_free_state;
    }
    ret = uring_probe_ops(&s->ring, errp);
    if (ret < 0) {
        goto out_exit_ring;
    }
    e->priv_state = s;
    ret = aio_set_fd_handler(e->ctx, s->ring.ring_fd, uring_reap, NULL, uring_poll, uring_reap,
                             e);
    if (ret < 0) {
        error_setg_errno(errp, ret, "cannot watch the io_uring fd");
        goto out_exit_ring;
    }
    s->retry_bh = aio_bh_new(e->ctx, uring_retry_bh, e);
    return 0;

out_exit_ring:
    io_uring_queue_exit(&s->ring);
out_free_state:
    free(s);
    e->priv_state = NULL;
    return ret;
}

static void uring_cleanup(AioEngine *e)
{
    UringEngine *s = e->priv_state;

    assert(s->inflight == 0 && !s->backlog_head);
    aio_set_fd_handler(e->ctx, s->ring.ring_fd, NULL, NULL, NULL, NULL, NULL);
    aio_bh_delete(s->retry_bh);
    io_uring_queue_exit(&s->ring);
    free(s);
    e->priv_state = NULL;
}

const AioEngineOps aio_engine_io_uring_ops = {
    .type = AIO_ENGINE_IO_URING,
    .init = uring_init,
    .cleanup = uring_cleanup,
    .submit = uring_submit_req,
    .flush = uring_flush,
};
