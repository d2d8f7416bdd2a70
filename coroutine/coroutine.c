/*
 * coblk - coroutine lifecycle: create, enter, yield, terminate, and the
 * wake-up queue used by the locks.
 *
 * Each coroutine runs an endless loop on its own stack: call the entry
 * function, mark itself terminated, switch back to whoever entered it. The
 * enterer puts it back in the pool; the next coroutine_create() that takes
 * it from there only sets a new entry function, and the next enter resumes
 * the loop. So a pooled create/enter/terminate is two switches and a few
 * stores, with no system call, no allocation and no atomic operation.
 */
#include "coblk-config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "coroutine/co-sanitizer.h"
#include "coroutine/co-thread.h"

__thread CoThread co_thread_tls __attribute__((tls_model("initial-exec")));

static _Atomic(CoroutineRemoteWakeFn *) co_remote_wake;

void co_die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    fputs("coblk: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

CoThread *co_thread_fresh(void)
{
    return co_thread();
}

/* Switches from `from` to `to`; returns when something switches back to `from`. */
static inline void co_switch_to(Coroutine *from, Coroutine *to, bool dying)
{
    co_san_leave(from, to, dying);
    co_switch(&from->sw, &to->sw);
    co_san_arrive(from);
}

/*
 * Ends one run of the entry loop and goes back to the enterer, which returns
 * co to the pool. Returns when co is reused. Kept out of line so that the
 * thread-local address is computed afresh for each run: a coroutine may
 * have moved to another thread while its entry function ran.
 */
static __attribute__((noinline)) void co_terminate(Coroutine *co)
{
    CoThread *t = co_thread();
    Coroutine *to = co->caller;

    co->state = CO_STATE_TERMINATED;
    t->current = to;
    co_switch_to(co, to != NULL ? to : &t->leader, true);
}

static noreturn void co_entry_loop(void *arg)
{
    Coroutine *co = arg;

    co_san_arrive(co);
    for (;;) {
        co->entry(co->entry_arg);
        co_terminate(co);
    }
}

void co_context_init(Coroutine *co)
{
    co_switch_init(&co->sw, co->stack, co->stack_size, co_entry_loop, co);
}

Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque)
{
    CoThread *t = co_thread();
    Coroutine *co = t->pool_head;

    if (co_likely(COBLK_POOLS && co != NULL &&
                  co->map_size == atomic_load_explicit(&co_map_size, memory_order_relaxed))) {
        t->pool_head = co->pool_next;
        t->pool_count--;
    } else {
        co = co_pool_get_slow(t);
    }
    co->pool_next = NULL;
    co->sched_next = NULL;
    atomic_store_explicit(&co->scheduled, NULL, memory_order_relaxed);
    co->entry = entry;
    co->entry_arg = opaque;
    co->caller = NULL;
    co->ctx = NULL;
    co->state = CO_STATE_CREATED;
    return co;
}

/* Gives a terminated coroutine back to the calling thread's pool. */
static inline void co_release(CoThread *t, Coroutine *co)
{
    co->state = CO_STATE_FREE;
    co->entry = NULL;
    if (co_likely(COBLK_POOLS && t->pool_count < CO_POOL_LOCAL_MAX &&
                  co->map_size == atomic_load_explicit(&co_map_size, memory_order_relaxed))) {
        co->pool_next = t->pool_head;
        t->pool_head = co;
        t->pool_count++;
    } else {
        co_pool_put_slow(t, co);
    }
}

static __attribute__((noinline, cold)) noreturn void co_bad_enter(const Coroutine *co)
{
    switch (co->state) {
    case CO_STATE_RUNNING:
        co_die("coroutine_enter(%p): the coroutine is already running (it is on the "
               "current call chain)", (const void *)co);
    case CO_STATE_TERMINATED:
    case CO_STATE_FREE:
        co_die("coroutine_enter(%p): the coroutine has terminated", (const void *)co);
    default:
        co_die("coroutine_enter(%p): the coroutine is in an invalid state %d",
               (const void *)co, (int)co->state);
    }
}

/* Enters, in order, the coroutines that `list` queued while it ran. */
static __attribute__((noinline)) void co_run_wakeups(Coroutine *w)
{
    while (w != NULL) {
        Coroutine *next = w->wakeup_next;

        w->wakeup_next = NULL;
        w->wakeup_queued = false;
        coroutine_enter(w);
        w = next;
    }
}

void coroutine_enter(Coroutine *co)
{
    /*
     * The enterer stays on this thread until co comes back (it is on the
     * call chain below co), so t remains valid across the switch.
     */
    CoThread *t = co_thread();
    Coroutine *self = t->current;
    Coroutine *woken;

    if (co_unlikely(co->state != CO_STATE_CREATED && co->state != CO_STATE_YIELDED)) {
        co_bad_enter(co);
    }
    co->caller = self;
    if (t->ctx != NULL) {
        co->ctx = t->ctx;
    }
    co->state = CO_STATE_RUNNING;
    t->current = co;
    atomic_store_explicit(&co->on_cpu, 1, memory_order_relaxed);
    co_switch_to(self != NULL ? self : &t->leader, co, false);
    atomic_store_explicit(&co->on_cpu, 0, memory_order_release);

    /* co yielded or terminated; it has set t->current back to self. */
    woken = co->wakeup_head;
    if (co_unlikely(woken != NULL)) {
        co->wakeup_head = NULL;
        co->wakeup_tail = NULL;
    }
    if (co->state == CO_STATE_TERMINATED) {
        co_release(t, co);
    }
    if (co_unlikely(woken != NULL)) {
        co_run_wakeups(woken);
    }
}

void coroutine_enter_if_inactive(Coroutine *co)
{
    if (co->state == CO_STATE_CREATED || co->state == CO_STATE_YIELDED) {
        coroutine_enter(co);
    }
}

void coroutine_yield(void)
{
    CoThread *t = co_thread();
    Coroutine *self = t->current;
    Coroutine *to;

    if (co_unlikely(self == NULL)) {
        co_die("coroutine_yield() called outside coroutine context");
    }
    to = self->caller;
    self->caller = NULL;
    self->state = CO_STATE_YIELDED;
    t->current = to;
    /* Nothing below may use t: we may resume on another thread. */
    co_switch_to(self, to != NULL ? to : &t->leader, false);
}

Coroutine *coroutine_self(void)
{
    return co_thread()->current;
}

bool coroutine_in_coroutine(void)
{
    return co_thread()->current != NULL;
}

bool coroutine_is_yielded(const Coroutine *co)
{
    return co->state == CO_STATE_YIELDED;
}

struct AioContext *coroutine_get_aio_context(const Coroutine *co)
{
    return co->ctx;
}

struct AioContext *coroutine_thread_ctx(void)
{
    return co_thread()->ctx;
}

void coroutine_set_thread_ctx(struct AioContext *ctx)
{
    co_thread()->ctx = ctx;
}

void coroutine_set_remote_wake(CoroutineRemoteWakeFn *fn)
{
    atomic_store_explicit(&co_remote_wake, fn, memory_order_release);
}

void coroutine_wake_internal(Coroutine *co)
{
    CoThread *t = co_thread();
    CoroutineRemoteWakeFn *remote;

    if (co_likely(co->ctx == NULL || co->ctx == t->ctx)) {
        Coroutine *self = t->current;

        if (self == NULL) {
            coroutine_enter(co);
            return;
        }
        if (co_unlikely(co->wakeup_queued)) {
            co_die("coroutine_wake_internal(%p): the coroutine was already woken", (void *)co);
        }
        co->wakeup_queued = true;
        co->wakeup_next = NULL;
        if (self->wakeup_tail != NULL) {
            self->wakeup_tail->wakeup_next = co;
        } else {
            self->wakeup_head = co;
        }
        self->wakeup_tail = co;
        return;
    }
    remote = atomic_load_explicit(&co_remote_wake, memory_order_acquire);
    if (remote == NULL) {
        co_die("coroutine_wake_internal(%p): its home context is another thread's and no "
               "remote-wake hook is installed (coroutine_set_remote_wake)", (void *)co);
    }
    remote(co);
}

bool coroutine_pools_enabled(void)
{
    return COBLK_POOLS;
}
