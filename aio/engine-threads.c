/*
 * The "threads" engine: every request runs its blocking system call on a
 * worker of the context's thread pool. Requests queued between two flushes
 * reach the pool together (one lock round trip per batch).
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "aio/engine-int.h"

static_assert(sizeof(ThreadPoolWork) <= sizeof(((AioIoReq *)0)->priv),
              "a thread pool work item must fit in AioIoReq.priv");

typedef struct ThreadsEngine {
    ThreadPoolWork *head; /* queued since the last flush */
    ThreadPoolWork *tail;
} ThreadsEngine;

static int64_t run_preadv(const AioIoReq *req)
{
    ssize_t r;

    do {
        r = preadv(req->fd, req->iov, req->iovcnt, req->offset);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int64_t run_pwritev(const AioIoReq *req)
{
    ssize_t r;

    do {
        r = req->mode ? pwritev2(req->fd, req->iov, req->iovcnt, req->offset, req->mode)
                      : pwritev(req->fd, req->iov, req->iovcnt, req->offset);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

/* Retries a call that returns 0 or -1/errno while it is interrupted. */
static int64_t run_retry(int (*fn)(int), int fd)
{
    int r;

    do {
        r = fn(fd);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static int64_t run_fallocate(const AioIoReq *req)
{
    int r;

    do {
        r = fallocate(req->fd, req->mode, req->offset, req->len);
    } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

int64_t aio_io_req_run_sync(const AioIoReq *req)
{
    switch (req->op) {
    case AIO_OP_PREADV:
        return run_preadv(req);
    case AIO_OP_PWRITEV:
        return run_pwritev(req);
    case AIO_OP_FSYNC:
        return run_retry(fsync, req->fd);
    case AIO_OP_FDATASYNC:
        return run_retry(fdatasync, req->fd);
    case AIO_OP_FALLOCATE:
        return run_fallocate(req);
    }
    return -EINVAL;
}

static int64_t threads_work_fn(void *opaque)
{
    return aio_io_req_run_sync(opaque);
}

static void threads_work_done(ThreadPoolWork *w)
{
    aio_io_req_complete(w->opaque, w->ret);
}

/* Fills the work item in req->priv that runs req on the pool. */
static ThreadPoolWork *threads_work_init(AioIoReq *req)
{
    ThreadPoolWork *w = (ThreadPoolWork *)req->priv;

    *w = (ThreadPoolWork){
        .fn = threads_work_fn,
        .opaque = req,
        .done = threads_work_done,
    };
    return w;
}

void aio_io_req_submit_to_pool(AioContext *ctx, AioIoReq *req)
{
    thread_pool_submit_chain(ctx, threads_work_init(req));
}

static int threads_init(AioEngine *e, Error **errp)
{
    e->priv_state = calloc(1, sizeof(ThreadsEngine));
    if (!e->priv_state) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    return 0;
}

static void threads_cleanup(AioEngine *e)
{
    ThreadsEngine *s = e->priv_state;

    assert(!s->head);
    free(s);
    e->priv_state = NULL;
}

static int threads_submit(AioEngine *e, AioIoReq *req)
{
    ThreadsEngine *s = e->priv_state;
    ThreadPoolWork *w = threads_work_init(req);

    if (s->tail) {
        s->tail->next = w;
    } else {
        s->head = w;
    }
    s->tail = w;
    return 0;
}

static void threads_flush(AioEngine *e)
{
    ThreadsEngine *s = e->priv_state;
    ThreadPoolWork *head = s->head;

    if (!head) {
        return;
    }
    s->head = NULL;
    s->tail = NULL;
    aio_engine_account_batch(e, thread_pool_submit_chain(e->ctx, head));
}

const AioEngineOps aio_engine_threads_ops = {
    .type = AIO_ENGINE_THREADS,
    .init = threads_init,
    .cleanup = threads_cleanup,
    .submit = threads_submit,
    .flush = threads_flush,
};
