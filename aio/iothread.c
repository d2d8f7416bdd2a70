/*
 * IOThread: a thread that runs one AioContext until it is joined.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "coblk-config.h"
#include "aio/aio-int.h"

struct IOThread {
    pthread_t thread;
    AioContext *ctx;
    atomic_bool stopping;
    char name[16];
};

static void *iothread_run(void *opaque)
{
    IOThread *t = opaque;

    coroutine_set_thread_ctx(t->ctx);
    while (!atomic_load(&t->stopping)) {
        aio_poll(t->ctx, true);
    }
    /* Finish whatever was scheduled before the stop request. */
    while (aio_poll(t->ctx, false)) {
    }
    coroutine_set_thread_ctx(NULL);
    return NULL;
}

IOThread *iothread_new(const char *name, Error **errp)
{
    IOThread *t = calloc(1, sizeof(*t));
    int ret;

    if (!t) {
        error_setg(errp, "iothread: out of memory");
        return NULL;
    }
    snprintf(t->name, sizeof(t->name), "%s", name ? name : "iothread");
    t->ctx = aio_context_new(errp);
    if (!t->ctx) {
        goto out_free;
    }
    atomic_store(&t->ctx->iothread_owned, true);
    ret = pthread_create(&t->thread, NULL, iothread_run, t);
    if (ret) {
        error_setg_errno(errp, -ret, "iothread %s: cannot create thread", t->name);
        goto out_ctx;
    }
    pthread_setname_np(t->thread, t->name);
    return t;

out_ctx:
    aio_context_unref(t->ctx);
out_free:
    free(t);
    return NULL;
}

AioContext *iothread_get_aio_context(IOThread *t)
{
    return t->ctx;
}

static void iothread_stop_bh(void *opaque)
{
    IOThread *t = opaque;

    atomic_store(&t->stopping, true);
}

void iothread_join(IOThread *t)
{
    if (!t) {
        return;
    }
    aio_bh_schedule_oneshot(t->ctx, iothread_stop_bh, t);
    pthread_join(t->thread, NULL);
    aio_context_unref(t->ctx);
    free(t);
}
