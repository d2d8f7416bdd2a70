/*
 * Timers: a binary min-heap of deadlines per AioContext, so arming,
 * cancelling and firing are O(log n) even with thousands of sleeping
 * coroutines. Timers belong to their context's thread.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "coblk-config.h"
#include "aio/aio-int.h"

#define NOT_PENDING SIZE_MAX

int64_t aio_clock_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void aio_timer_init(AioTimer *t, AioContext *ctx, AioTimerFunc *cb, void *opaque)
{
    t->ctx = ctx;
    t->cb = cb;
    t->opaque = opaque;
    t->expire_ns = 0;
    t->heap_index = NOT_PENDING;
}

AioTimer *aio_timer_new(AioContext *ctx, AioTimerFunc *cb, void *opaque)
{
    AioTimer *t = malloc(sizeof(*t));

    if (!t) {
        abort();
    }
    aio_timer_init(t, ctx, cb, opaque);
    return t;
}

bool aio_timer_pending(const AioTimer *t)
{
    return t->heap_index != NOT_PENDING;
}

static void heap_set(AioContext *ctx, size_t i, AioTimer *t)
{
    ctx->timers[i] = t;
    t->heap_index = i;
}

static void heap_sift_up(AioContext *ctx, size_t i)
{
    AioTimer *t = ctx->timers[i];

    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (ctx->timers[parent]->expire_ns <= t->expire_ns) {
            break;
        }
        heap_set(ctx, i, ctx->timers[parent]);
        i = parent;
    }
    heap_set(ctx, i, t);
}

static void heap_sift_down(AioContext *ctx, size_t i)
{
    AioTimer *t = ctx->timers[i];
    size_t n = ctx->timers_len;

    for (;;) {
        size_t child = 2 * i + 1;

        if (child >= n) {
            break;
        }
        if (child + 1 < n && ctx->timers[child + 1]->expire_ns < ctx->timers[child]->expire_ns) {
            child++;
        }
        if (t->expire_ns <= ctx->timers[child]->expire_ns) {
            break;
        }
        heap_set(ctx, i, ctx->timers[child]);
        i = child;
    }
    heap_set(ctx, i, t);
}

void aio_timer_del(AioTimer *t)
{
    AioContext *ctx = t->ctx;
    size_t i = t->heap_index;
    AioTimer *last;

    if (i == NOT_PENDING) {
        return;
    }
    t->heap_index = NOT_PENDING;
    last = ctx->timers[--ctx->timers_len];
    if (last == t) {
        return;
    }
    heap_set(ctx, i, last);
    if (i > 0 && ctx->timers[(i - 1) / 2]->expire_ns > last->expire_ns) {
        heap_sift_up(ctx, i);
    } else {
        heap_sift_down(ctx, i);
    }
}

void aio_timer_mod(AioTimer *t, int64_t expire_ns)
{
    AioContext *ctx = t->ctx;

    aio_timer_del(t);
    t->expire_ns = expire_ns;
    if (ctx->timers_len == ctx->timers_cap) {
        size_t cap = ctx->timers_cap ? ctx->timers_cap * 2 : 16;
        AioTimer **arr = realloc(ctx->timers, cap * sizeof(*arr));

        if (!arr) {
            abort();
        }
        ctx->timers = arr;
        ctx->timers_cap = cap;
    }
    ctx->timers[ctx->timers_len] = t;
    t->heap_index = ctx->timers_len++;
    heap_sift_up(ctx, t->heap_index);
}

void aio_timer_free(AioTimer *t)
{
    if (t) {
        aio_timer_del(t);
        free(t);
    }
}

int64_t aio_timers_deadline_ns(AioContext *ctx)
{
    int64_t delta;

    if (ctx->timers_len == 0) {
        return -1;
    }
    delta = ctx->timers[0]->expire_ns - aio_clock_ns();
    return delta > 0 ? delta : 0;
}

bool aio_timers_run(AioContext *ctx)
{
    bool progress = false;
    int64_t now;

    if (ctx->timers_len == 0) {
        return false;
    }
    now = aio_clock_ns();
    /* Timers armed by callbacks for "now" run in the next iteration, which
     * keeps a timer that re-arms itself with a zero delay from starving I/O. */
    while (ctx->timers_len && ctx->timers[0]->expire_ns <= now) {
        AioTimer *t = ctx->timers[0];

        aio_timer_del(t);
        t->cb(t->opaque);
        progress = true;
    }
    return progress;
}

void aio_timers_cleanup(AioContext *ctx)
{
    while (ctx->timers_len) {
        aio_timer_del(ctx->timers[0]);
    }
    free(ctx->timers);
    ctx->timers = NULL;
    ctx->timers_cap = 0;
}

static void co_sleep_cb(void *opaque)
{
    aio_co_wake(opaque);
}

void coroutine_fn co_sleep_ns(int64_t ns)
{
    Coroutine *self = coroutine_self();
    AioContext *ctx = coroutine_get_aio_context(self);
    AioTimer t;

    if (!ctx) {
        ctx = aio_context_current();
    }
    if (!ctx) {
        fprintf(stderr, "coblk: co_sleep_ns called outside any AioContext\n");
        abort();
    }
    aio_timer_init(&t, ctx, co_sleep_cb, self);
    aio_timer_mod(&t, aio_clock_ns() + (ns > 0 ? ns : 0));
    coroutine_yield();
    aio_timer_del(&t);
}
