/*
 * Running coroutine code from plain code: create a coroutine, enter it in
 * the node's context and poll that context until the coroutine finishes.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "coblk-config.h"
#include "block/block-int.h"

typedef struct CoRun {
    BdrvCoRunFn *fn;
    void *opaque;
    int64_t ret;
    bool done;
    /* For a context that another thread runs: the caller sleeps on these. */
    bool remote;
    pthread_mutex_t lock;
    pthread_cond_t cond;
} CoRun;

static void coroutine_fn co_run_entry(void *opaque)
{
    CoRun *r = opaque;

    r->ret = r->fn(r->opaque);
    if (!r->remote) {
        r->done = true;
        return;
    }
    pthread_mutex_lock(&r->lock);
    r->done = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* Runs the coroutine in an IOThread's context and waits for it here. */
static int64_t run_co_remote(AioContext *ctx, CoRun *r)
{
    r->remote = true;
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    aio_co_schedule(ctx, coroutine_create(co_run_entry, r));
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        pthread_cond_wait(&r->cond, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    return r->ret;
}

int64_t bdrv_run_co(AioContext *ctx, BdrvCoRunFn *fn, void *opaque)
{
    CoRun r = { .fn = fn, .opaque = opaque };
    AioContext *old = aio_context_current();

    if (coroutine_in_coroutine()) {
        return fn(opaque);
    }
    if (ctx != old && atomic_load(&ctx->iothread_owned)) {
        /* Another thread polls ctx: never poll it from here. */
        return run_co_remote(ctx, &r);
    }
    aio_context_set_current(ctx);
    aio_co_enter(ctx, coroutine_create(co_run_entry, &r));
    while (!r.done) {
        aio_poll(ctx, true);
    }
    aio_context_set_current(old ? old : ctx);
    return r.ret;
}

static AioContext *main_ctx;

AioContext *bdrv_default_aio_context(void)
{
    AioContext *ctx = aio_context_current();
    Error *err = NULL;

    if (ctx) {
        return ctx;
    }
    if (!main_ctx) {
        main_ctx = aio_context_new(&err);
        if (!main_ctx) {
            fprintf(stderr, "coblk: cannot create the main AioContext: %s\n",
                    error_get_pretty(err));
            abort();
        }
    }
    aio_context_set_current(main_ctx);
    return main_ctx;
}
