/*
 * Running coroutine code from plain code: create a coroutine, enter it in
 * the node's context and poll that context until the coroutine finishes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "coblk-config.h"
#include "block/block-int.h"

typedef struct CoRun {
    BdrvCoRunFn *fn;
    void *opaque;
    int64_t ret;
    bool done;
} CoRun;

static void coroutine_fn co_run_entry(void *opaque)
{
    CoRun *r = opaque;

    r->ret = r->fn(r->opaque);
    r->done = true;
}

int64_t bdrv_run_co(AioContext *ctx, BdrvCoRunFn *fn, void *opaque)
{
    CoRun r = { .fn = fn, .opaque = opaque };
    AioContext *old = aio_context_current();

    if (coroutine_in_coroutine()) {
        return fn(opaque);
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
