/*
 * Block I/O engine registry: engine selection with fallback, the request
 * path every engine shares (aio_co_io), plugging and teardown.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "aio/engine-int.h"

/* An engine plus the bookkeeping every engine shares. */
typedef struct AioEngineImpl {
    AioEngine pub;
    AioEngineStats stats;
    /* Requests completed from a BH (see aio_engine_complete_later()). */
    AioIoReq *later_head;
    AioIoReq *later_tail;
    AioBH *later_bh;
} AioEngineImpl;

static const char *const engine_names[AIO_ENGINE_MAX] = {
    [AIO_ENGINE_AUTO] = "auto",
    [AIO_ENGINE_IO_URING] = "io_uring",
    [AIO_ENGINE_NATIVE] = "native",
    [AIO_ENGINE_THREADS] = "threads",
};

/* Which engines are compiled in; NULL for the ones that are not. */
static const AioEngineOps *const engine_registry[AIO_ENGINE_MAX] = {
#if COBLK_HAVE_IO_URING
    [AIO_ENGINE_IO_URING] = &aio_engine_io_uring_ops,
#endif
#if COBLK_HAVE_LIBAIO
    [AIO_ENGINE_NATIVE] = &aio_engine_linux_aio_ops,
#endif
    [AIO_ENGINE_THREADS] = &aio_engine_threads_ops,
};

static AioEngineImpl *impl_of(AioEngine *e)
{
    return (AioEngineImpl *)((char *)e - offsetof(AioEngineImpl, pub));
}

int aio_engine_type_parse(const char *name, AioEngineType *type)
{
    if (!name) {
        return -EINVAL;
    }
    for (int i = 0; i < AIO_ENGINE_MAX; i++) {
        if (engine_names[i] && strcmp(name, engine_names[i]) == 0) {
            *type = (AioEngineType)i;
            return 0;
        }
    }
    return -EINVAL;
}

const char *aio_engine_type_name(AioEngineType type)
{
    if ((unsigned)type >= AIO_ENGINE_MAX || !engine_names[type]) {
        return "unknown";
    }
    return engine_names[type];
}

AioEngineType aio_engine_type(const AioEngine *e)
{
    return e->ops->type;
}

/* The engine tried after type fails, or AUTO when there is none. */
static AioEngineType engine_fallback(AioEngineType type)
{
    switch (type) {
    case AIO_ENGINE_IO_URING:
        return AIO_ENGINE_NATIVE;
    case AIO_ENGINE_NATIVE:
        return AIO_ENGINE_THREADS;
    default:
        return AIO_ENGINE_AUTO;
    }
}

/*
 * Returns ctx's engine of type, creating it. On failure returns NULL and
 * sets *reason to why (without the engine's name).
 */
static AioEngine *engine_create(AioContext *ctx, AioEngineType type, Error **reason)
{
    const AioEngineOps *ops = engine_registry[type];
    AioEngineImpl *impl;

    if (ctx->engines[type]) {
        return ctx->engines[type];
    }
    if (!ops) {
        error_setg(reason, "not built in");
        return NULL;
    }
    impl = calloc(1, sizeof(*impl));
    if (!impl) {
        error_setg(reason, "out of memory");
        return NULL;
    }
    impl->pub.ops = ops;
    impl->pub.ctx = ctx;
    if (ops->init(&impl->pub, reason) < 0) {
        free(impl);
        return NULL;
    }
    ctx->engines[type] = &impl->pub;
    return &impl->pub;
}

/* AUTO: the first engine of the chain that works, silently. */
static AioEngine *engine_get_auto(AioContext *ctx, Error **errp)
{
    AioEngineType type = AIO_ENGINE_IO_URING;
    AioEngine *e = ctx->engines[AIO_ENGINE_AUTO];

    while (!e && type != AIO_ENGINE_AUTO) {
        Error *reason = NULL;

        e = engine_create(ctx, type, &reason);
        if (!e && engine_fallback(type) == AIO_ENGINE_AUTO) {
            error_setg(errp, "no I/O engine available (%s: %s)", aio_engine_type_name(type),
                       error_get_pretty(reason));
        }
        error_free(reason);
        type = engine_fallback(type);
    }
    /* engines[AUTO] only aliases one of the others; cleanup skips it. */
    ctx->engines[AIO_ENGINE_AUTO] = e;
    return e;
}

AioEngine *aio_get_engine(AioContext *ctx, AioEngineType type, bool strict, Error **errp)
{
    if ((unsigned)type >= AIO_ENGINE_MAX) {
        error_setg(errp, "invalid I/O engine type %d", (int)type);
        return NULL;
    }
    if (type == AIO_ENGINE_AUTO) {
        return engine_get_auto(ctx, errp);
    }
    for (;;) {
        Error *reason = NULL;
        AioEngine *e = engine_create(ctx, type, &reason);
        AioEngineType next = engine_fallback(type);

        if (e) {
            return e;
        }
        if (strict || next == AIO_ENGINE_AUTO) {
            error_setg(errp, "%s unavailable (%s)", aio_engine_type_name(type),
                       error_get_pretty(reason));
            error_free(reason);
            return NULL;
        }
        coblk_warn("%s unavailable (%s): falling back to %s", aio_engine_type_name(type),
                   error_get_pretty(reason), aio_engine_type_name(next));
        error_free(reason);
        type = next;
    }
}

/* ---------------------------------------------------------------------- */
/* Requests */

/* RWF_* flags that writes treat as refused by the kernel (test hook, see engine-int.h). */
static _Atomic unsigned engine_refused_rwf;

void aio_io_refuse_rwf(unsigned rwf)
{
    engine_refused_rwf = rwf;
}

/*
 * The RWF_* flags to refuse: the test hook's, plus those of
 * $COBLK_AIO_REFUSE_RWF (a number, e.g. 2 for RWF_DSYNC), so that a benchmark
 * can compare native FUA with its write + fdatasync fallback without a
 * rebuild. Only writes that carry flags look.
 */
static unsigned engine_refused(void)
{
    const char *env = getenv("COBLK_AIO_REFUSE_RWF");

    return engine_refused_rwf | (env ? (unsigned)strtoul(env, NULL, 0) : 0);
}

int64_t coroutine_fn aio_co_io(AioEngine *e, AioIoOp op, int fd, int64_t offset,
                               const struct iovec *iov, int iovcnt, int mode, int64_t len)
{
    AioIoReq req = {
        .op = op,
        .fd = fd,
        .mode = mode,
        .iovcnt = iovcnt,
        .offset = offset,
        .len = len,
        .iov = iov,
        .co = coroutine_self(),
    };
    AioEngineStats *stats = &impl_of(e)->stats;
    int ret;

    assert(req.co);
    if (op > AIO_OP_FALLOCATE || offset < 0 || len < 0) {
        return -EINVAL;
    }
    if ((op == AIO_OP_PREADV || op == AIO_OP_PWRITEV) && (iovcnt < 0 || iovcnt > IOV_MAX)) {
        return -EINVAL;
    }
    if ((op == AIO_OP_PREADV && mode != 0) || (op == AIO_OP_PWRITEV && (mode & ~RWF_DSYNC))) {
        return -EINVAL;
    }
    if (op == AIO_OP_PWRITEV && mode && (mode & engine_refused())) {
        return -EOPNOTSUPP; /* as pwritev2(2) answers for a flag it does not know */
    }
    if (op == AIO_OP_FSYNC || op == AIO_OP_FDATASYNC) {
        stats->syncs++;
    } else if (op == AIO_OP_PWRITEV && mode) {
        stats->dsync_writes++;
    }
    ret = e->ops->submit(e, &req);
    if (ret < 0) {
        return ret;
    }
    while (!req.done) {
        coroutine_yield();
    }
    return req.ret;
}

int64_t coroutine_fn aio_co_preadv(AioEngine *e, int fd, int64_t offset,
                                   const struct iovec *iov, int iovcnt)
{
    return aio_co_io(e, AIO_OP_PREADV, fd, offset, iov, iovcnt, 0, 0);
}

int64_t coroutine_fn aio_co_pwritev(AioEngine *e, int fd, int64_t offset,
                                    const struct iovec *iov, int iovcnt)
{
    return aio_co_io(e, AIO_OP_PWRITEV, fd, offset, iov, iovcnt, 0, 0);
}

int64_t coroutine_fn aio_co_pwritev2(AioEngine *e, int fd, int64_t offset,
                                     const struct iovec *iov, int iovcnt, int rwf)
{
    return aio_co_io(e, AIO_OP_PWRITEV, fd, offset, iov, iovcnt, rwf, 0);
}

int coroutine_fn aio_co_fdatasync(AioEngine *e, int fd)
{
    return (int)aio_co_io(e, AIO_OP_FDATASYNC, fd, 0, NULL, 0, 0, 0);
}

int coroutine_fn aio_co_fsync(AioEngine *e, int fd)
{
    return (int)aio_co_io(e, AIO_OP_FSYNC, fd, 0, NULL, 0, 0, 0);
}

int coroutine_fn aio_co_fallocate(AioEngine *e, int fd, int mode, int64_t offset, int64_t len)
{
    return (int)aio_co_io(e, AIO_OP_FALLOCATE, fd, offset, NULL, 0, mode, len);
}

void aio_io_req_complete(AioIoReq *req, int64_t ret)
{
    req->ret = ret;
    req->done = true;
    aio_co_wake(req->co);
}

static void engine_later_bh(void *opaque)
{
    AioEngineImpl *impl = opaque;
    AioIoReq *req = impl->later_head;

    impl->later_head = NULL;
    impl->later_tail = NULL;
    while (req) {
        AioIoReq *next = req->next;

        aio_io_req_complete(req, req->ret);
        req = next;
    }
}

void aio_engine_complete_later(AioEngine *e, AioIoReq *req, int64_t ret)
{
    AioEngineImpl *impl = impl_of(e);

    if (!impl->later_bh) {
        impl->later_bh = aio_bh_new(e->ctx, engine_later_bh, impl);
    }
    req->ret = ret;
    req->next = NULL;
    if (impl->later_tail) {
        impl->later_tail->next = req;
    } else {
        impl->later_head = req;
    }
    impl->later_tail = req;
    aio_bh_schedule(impl->later_bh);
}

/* ---------------------------------------------------------------------- */
/* Plugging, flushing, teardown */

void aio_io_plug(AioContext *ctx)
{
    ctx->plug_depth++;
}

void aio_io_unplug(AioContext *ctx)
{
    assert(ctx->plug_depth > 0);
    if (--ctx->plug_depth == 0) {
        aio_engines_flush(ctx);
    }
}

void aio_engines_flush(AioContext *ctx)
{
    if (ctx->plug_depth > 0) {
        return;
    }
    for (int i = AIO_ENGINE_AUTO + 1; i < AIO_ENGINE_MAX; i++) {
        AioEngine *e = ctx->engines[i];

        if (e && e->ops->flush) {
            e->ops->flush(e);
        }
    }
}

void aio_engines_cleanup(AioContext *ctx)
{
    ctx->engines[AIO_ENGINE_AUTO] = NULL;
    for (int i = AIO_ENGINE_AUTO + 1; i < AIO_ENGINE_MAX; i++) {
        AioEngine *e = ctx->engines[i];
        AioEngineImpl *impl;

        if (!e) {
            continue;
        }
        impl = impl_of(e);
        e->ops->cleanup(e);
        if (impl->later_bh) {
            aio_bh_delete(impl->later_bh);
        }
        free(impl);
        ctx->engines[i] = NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* Statistics */

void aio_engine_account_batch(AioEngine *e, uint64_t n)
{
    AioEngineStats *s = &impl_of(e)->stats;

    s->submit_calls++;
    s->reqs_submitted += n;
    if (n > s->max_batch) {
        s->max_batch = n;
    }
}

void aio_engine_get_stats(AioEngine *e, AioEngineStats *stats)
{
    *stats = impl_of(e)->stats;
}

void aio_engine_reset_stats(AioEngine *e)
{
    memset(&impl_of(e)->stats, 0, sizeof(impl_of(e)->stats));
}
