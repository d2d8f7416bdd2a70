/*
 * AioContext life cycle, cross-thread notification, bottom halves and
 * coroutine scheduling.
 *
 * BHs and scheduled coroutines are pushed onto lock-free LIFO lists by any
 * thread; the context's own thread takes a whole list at once and reverses it,
 * so callbacks run in the order they were scheduled.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "aio/aio-int.h"

static void *xzalloc(size_t size)
{
    void *p = calloc(1, size);

    if (!p) {
        abort();
    }
    return p;
}

/* ---------------------------------------------------------------------- */
/* Notification */

static bool in_ctx_thread(AioContext *ctx)
{
    return coroutine_thread_ctx() == ctx;
}

void aio_notify(AioContext *ctx)
{
    if (!atomic_exchange(&ctx->notified, true)) {
        event_notifier_set(&ctx->notifier);
    }
}

static void aio_notify_read(void *opaque)
{
    AioContext *ctx = opaque;

    /*
     * Read the eventfd, then clear the flag. A notifier that finds the flag
     * still set skips its write; its work was queued before, and the BHs run
     * after this handler. The other order could consume a write and leave
     * the flag set with the eventfd empty, and every later aio_notify() would
     * then skip its write: a loop sleeping on the fd would never wake.
     */
    event_notifier_test_and_clear(&ctx->notifier);
    atomic_store(&ctx->notified, false);
}

static bool aio_notify_poll(void *opaque)
{
    AioContext *ctx = opaque;

    return atomic_load_explicit(&ctx->notified, memory_order_relaxed);
}

/* ---------------------------------------------------------------------- */
/* Bottom halves */

static AioBH *bh_alloc(AioContext *ctx, AioBHFunc *cb, void *opaque, unsigned flags)
{
    AioBH *bh = xzalloc(sizeof(*bh));

    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    atomic_init(&bh->flags, flags);
    return bh;
}

static void bh_enqueue(AioBH *bh, unsigned new_flags)
{
    AioContext *ctx = bh->ctx;
    unsigned old = atomic_fetch_or(&bh->flags, BH_PENDING | new_flags);

    if (old & BH_PENDING) {
        return; /* already on the list; the flags we set are enough */
    }
    bh->next = atomic_load_explicit(&ctx->bh_list, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&ctx->bh_list, &bh->next, bh,
                                                  memory_order_release,
                                                  memory_order_relaxed)) {
    }
    if (!in_ctx_thread(ctx)) {
        aio_notify(ctx);
    }
}

AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    return bh_alloc(ctx, cb, opaque, 0);
}

void aio_bh_schedule(AioBH *bh)
{
    bh_enqueue(bh, BH_SCHEDULED);
}

void aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    AioBH *bh = bh_alloc(ctx, cb, opaque, BH_ONESHOT);

    bh_enqueue(bh, BH_SCHEDULED);
}

void aio_bh_cancel(AioBH *bh)
{
    atomic_fetch_and(&bh->flags, ~(unsigned)BH_SCHEDULED);
}

void aio_bh_delete(AioBH *bh)
{
    if (!bh) {
        return;
    }
    /* If it is on the list, aio_bh_poll() frees it; else nobody will see it. */
    unsigned old = atomic_fetch_or(&bh->flags, BH_DELETED);

    atomic_fetch_and(&bh->flags, ~(unsigned)BH_SCHEDULED);
    if (!(old & BH_PENDING)) {
        free(bh);
    }
}

bool aio_bh_pending(AioContext *ctx)
{
    return atomic_load_explicit(&ctx->bh_list, memory_order_relaxed) != NULL;
}

static AioBH *bh_take_fifo(AioContext *ctx)
{
    AioBH *lifo = atomic_exchange_explicit(&ctx->bh_list, NULL, memory_order_acquire);
    AioBH *fifo = NULL;

    while (lifo) {
        AioBH *next = lifo->next;

        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    return fifo;
}

bool aio_bh_poll(AioContext *ctx)
{
    AioBH *bh = bh_take_fifo(ctx);
    bool progress = false;

    while (bh) {
        AioBH *next = bh->next;
        /* Clearing PENDING lets the callback (or another thread) re-queue it. */
        unsigned flags = atomic_fetch_and(&bh->flags, ~(unsigned)(BH_PENDING | BH_SCHEDULED));

        if ((flags & BH_SCHEDULED) && !(flags & BH_DELETED)) {
            progress = true;
            bh->cb(bh->opaque);
        }
        if (flags & (BH_DELETED | BH_ONESHOT)) {
            free(bh);
        }
        bh = next;
    }
    return progress;
}

/* ---------------------------------------------------------------------- */
/* Coroutine scheduling */

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    const char *expected = NULL;

    if (!atomic_compare_exchange_strong(&co->scheduled, &expected, __func__)) {
        fprintf(stderr, "coblk: %s: coroutine %p is already scheduled by %s\n", __func__,
                (void *)co, expected);
        abort();
    }
    co->sched_next = atomic_load_explicit(&ctx->scheduled_coroutines, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&ctx->scheduled_coroutines, &co->sched_next,
                                                  co, memory_order_release,
                                                  memory_order_relaxed)) {
    }
    aio_bh_schedule(ctx->co_schedule_bh);
}

static void co_schedule_bh_cb(void *opaque)
{
    AioContext *ctx = opaque;
    Coroutine *lifo = atomic_exchange_explicit(&ctx->scheduled_coroutines, NULL,
                                               memory_order_acquire);
    Coroutine *fifo = NULL;

    while (lifo) {
        Coroutine *next = lifo->sched_next;

        lifo->sched_next = fifo;
        fifo = lifo;
        lifo = next;
    }
    while (fifo) {
        Coroutine *next = fifo->sched_next;

        fifo->sched_next = NULL;
        /* It may still be leaving the thread that scheduled it (see on_cpu). */
        while (atomic_load_explicit(&fifo->on_cpu, memory_order_acquire)) {
            aio_cpu_relax();
        }
        atomic_store(&fifo->scheduled, NULL);
        fifo->ctx = ctx;
        coroutine_enter(fifo);
        fifo = next;
    }
}

void aio_co_enter(AioContext *ctx, Coroutine *co)
{
    if (ctx && ctx != coroutine_thread_ctx()) {
        aio_co_schedule(ctx, co);
        return;
    }
    if (ctx) {
        co->ctx = ctx;
    }
    coroutine_wake_internal(co);
}

void aio_co_wake(Coroutine *co)
{
    aio_co_enter(co->ctx, co);
}

static void aio_co_remote_wake(Coroutine *co)
{
    aio_co_schedule(co->ctx, co);
}

/* ---------------------------------------------------------------------- */
/* Context life cycle */

AioContext *aio_context_current(void)
{
    return coroutine_thread_ctx();
}

void aio_context_set_current(AioContext *ctx)
{
    coroutine_set_thread_ctx(ctx);
}

static const FdMonOps *fdmon_choose(AioFdMonitor want)
{
    const char *env = getenv("COBLK_FDMON");

    if (want == AIO_FDMON_AUTO && env) {
        if (!strcmp(env, "io_uring")) {
            want = AIO_FDMON_IO_URING;
        } else if (!strcmp(env, "epoll")) {
            want = AIO_FDMON_EPOLL;
        }
    }
#if COBLK_HAVE_IO_URING
    if (want == AIO_FDMON_IO_URING) {
        return &fdmon_io_uring_ops;
    }
#endif
    return want == AIO_FDMON_IO_URING ? NULL : &fdmon_epoll_ops;
}

AioContext *aio_context_new(Error **errp)
{
    AioContextOpts opts = { 0 };

    return aio_context_new_opts(&opts, errp);
}

AioContext *aio_context_new_opts(const AioContextOpts *opts, Error **errp)
{
    AioContext *ctx = xzalloc(sizeof(*ctx));
    Error *local_err = NULL;
    int ret;

    coroutine_set_remote_wake(aio_co_remote_wake);
    ctx->fdmon_fd = -1;
    ctx->notifier.fd = -1;
    ctx->poll_max_ns = opts->poll_max_ns_set ? opts->poll_max_ns : 32768;
    ctx->poll_grow = 2;
    ctx->poll_shrink = 2;
    ctx->thread_pool_max = 64;

    ctx->fdmon = fdmon_choose(opts->fdmon);
    if (!ctx->fdmon) {
        error_setg(errp, "aio: fd monitor io_uring is not built in (liburing missing)");
        goto out_free;
    }
    ret = ctx->fdmon->init(ctx, &local_err);
    if (ret < 0 && opts->fdmon == AIO_FDMON_AUTO && ctx->fdmon != &fdmon_epoll_ops) {
        coblk_warn("%s: using epoll", error_get_pretty(local_err));
        error_free(local_err);
        local_err = NULL;
        ctx->fdmon = &fdmon_epoll_ops;
        ret = ctx->fdmon->init(ctx, &local_err);
    }
    if (ret < 0) {
        error_propagate(errp, local_err);
        goto out_free;
    }
    ret = event_notifier_init(&ctx->notifier, false);
    if (ret < 0) {
        error_setg_errno(errp, ret, "aio: cannot create eventfd");
        goto out_fdmon;
    }
    ctx->co_schedule_bh = aio_bh_new(ctx, co_schedule_bh_cb, ctx);
    ret = aio_set_fd_handler(ctx, ctx->notifier.fd, aio_notify_read, NULL, aio_notify_poll,
                             aio_notify_read, ctx);
    if (ret < 0) {
        error_setg_errno(errp, ret, "aio: cannot watch eventfd");
        goto out_notifier;
    }
    return ctx;

out_notifier:
    aio_bh_delete(ctx->co_schedule_bh);
    event_notifier_cleanup(&ctx->notifier);
out_fdmon:
    ctx->fdmon->cleanup(ctx);
out_free:
    free(ctx);
    return NULL;
}

const char *aio_context_fdmon_name(AioContext *ctx)
{
    return ctx->fdmon->name;
}

void aio_context_unref(AioContext *ctx)
{
    AioContext *old = coroutine_thread_ctx();

    if (!ctx) {
        return;
    }
    coroutine_set_thread_ctx(ctx);
    while (aio_bh_pending(ctx)) {
        aio_bh_poll(ctx);
    }
    aio_engines_cleanup(ctx);
    thread_pool_free(ctx->thread_pool);
    while (aio_bh_pending(ctx)) {
        aio_bh_poll(ctx);
    }
    aio_set_fd_handler(ctx, ctx->notifier.fd, NULL, NULL, NULL, NULL, NULL);
    aio_bh_delete(ctx->co_schedule_bh);
    aio_bh_poll(ctx);
    event_notifier_cleanup(&ctx->notifier);
    while (ctx->handlers) {
        AioHandler *h = ctx->handlers;

        ctx->handlers = h->next;
        free(h);
    }
    ctx->fdmon->cleanup(ctx);
    aio_timers_cleanup(ctx);
    coroutine_set_thread_ctx(old == ctx ? NULL : old);
    free(ctx);
}
