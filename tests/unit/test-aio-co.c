/* Unit tests: coroutines in contexts: aio_co_schedule, aio_co_wake, cross-thread locks. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

#include "aio-test-util.h"

typedef struct Waiter {
    Coroutine *co;
    AioContext *home;
    pid_t resumed_on;
    atomic_int stage;
} Waiter;

static void coroutine_fn waiter_co(void *opaque)
{
    Waiter *w = opaque;

    w->co = coroutine_self();
    atomic_store(&w->stage, 1);
    coroutine_yield();
    w->resumed_on = gettid(); /* pthread_self() is "const": cached across yields */
    assert_ptr_equal(aio_context_current(), w->home);
    atomic_store(&w->stage, 2);
}

static void *wake_from_thread(void *opaque)
{
    Waiter *w = opaque;

    while (atomic_load(&w->stage) != 1) {
    }
    aio_co_wake(w->co);
    return NULL;
}

static void test_aio_co_wake_from_other_thread_resumes_at_home(void **state)
{
    AioContext *ctx = test_ctx_new();
    Waiter w = { .home = ctx };
    pthread_t th;

    aio_co_enter(ctx, coroutine_create(waiter_co, &w));
    assert_int_equal(atomic_load(&w.stage), 1);
    pthread_create(&th, NULL, wake_from_thread, &w);
    while (atomic_load(&w.stage) != 2) {
        aio_poll(ctx, true);
    }
    pthread_join(th, NULL);
    assert_int_equal(w.resumed_on, gettid());
    test_ctx_free(ctx);
}

typedef struct Order {
    int seq[8];
    int n;
    Coroutine *sleeper;
} Order;

static void coroutine_fn sleeper(void *opaque)
{
    Order *o = opaque;

    o->sleeper = coroutine_self();
    coroutine_yield();
    o->seq[o->n++] = 3;
}

static void coroutine_fn waker(void *opaque)
{
    Order *o = opaque;

    o->seq[o->n++] = 1;
    /* Same context, inside a coroutine: the sleeper runs after we yield. */
    aio_co_wake(o->sleeper);
    o->seq[o->n++] = 2;
}

static void test_aio_co_wake_in_coroutine_is_deferred(void **state)
{
    AioContext *ctx = test_ctx_new();
    Order o = { .n = 0 };

    aio_co_enter(ctx, coroutine_create(sleeper, &o));
    aio_co_enter(ctx, coroutine_create(waker, &o));
    assert_int_equal(o.n, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(o.seq[i], i + 1);
    }
    test_ctx_free(ctx);
}

static void coroutine_fn count_co(void *opaque)
{
    atomic_fetch_add((atomic_int *)opaque, 1);
}

static void test_aio_co_schedule_runs_in_fifo_order(void **state)
{
    AioContext *ctx = test_ctx_new();
    Order o = { .n = 0 };
    Coroutine *cos[4];

    for (int i = 0; i < 4; i++) {
        aio_co_enter(ctx, coroutine_create(sleeper, &o));
        cos[i] = o.sleeper;
    }
    for (int i = 0; i < 4; i++) {
        aio_co_schedule(ctx, cos[i]);
    }
    assert_int_equal(o.n, 0); /* scheduled, not run yet */
    aio_poll(ctx, false);
    assert_int_equal(o.n, 4);
    test_ctx_free(ctx);
}

static AioContext *dbl_ctx;

static void double_schedule(void)
{
    atomic_int n = 0;
    Coroutine *co = coroutine_create(count_co, &n);

    aio_co_schedule(dbl_ctx, co);
    aio_co_schedule(dbl_ctx, co);
}

static void test_aio_co_double_schedule_aborts(void **state)
{
    dbl_ctx = test_ctx_new();
    int status = test_fork_status(double_schedule);

    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    test_ctx_free(dbl_ctx);
}

/* A coroutine hops to an IOThread and back. */
typedef struct Hop {
    AioContext *main_ctx;
    AioContext *io_ctx;
    pid_t io_tid;
    pid_t back_tid;
    atomic_int done;
} Hop;

static void coroutine_fn hop_co(void *opaque)
{
    Hop *h = opaque;

    aio_co_schedule(h->io_ctx, coroutine_self());
    coroutine_yield();
    h->io_tid = gettid();
    assert_ptr_equal(aio_context_current(), h->io_ctx);
    co_sleep_ns(100000); /* timers of the IOThread's context */
    aio_co_schedule(h->main_ctx, coroutine_self());
    coroutine_yield();
    h->back_tid = gettid();
    atomic_store(&h->done, 1);
}

static void test_aio_co_hop_to_iothread_and_back(void **state)
{
    AioContext *ctx = test_ctx_new();
    Error *err = NULL;
    IOThread *t = iothread_new("hop", &err);
    Hop h = { .main_ctx = ctx };

    assert_non_null(t);
    h.io_ctx = iothread_get_aio_context(t);
    aio_co_enter(ctx, coroutine_create(hop_co, &h));
    while (!atomic_load(&h.done)) {
        aio_poll(ctx, true);
    }
    assert_int_not_equal(h.io_tid, gettid());
    assert_int_equal(h.back_tid, gettid());
    iothread_join(t);
    test_ctx_free(ctx);
}

/* CoMutex shared by coroutines of two threads. */
typedef struct Shared {
    CoMutex lock;
    int counter;        /* protected by lock */
    int inside;         /* coroutines inside the critical section */
    atomic_int finished;
    int violations;
    AioContext *main_ctx; /* woken when a locker finishes */
} Shared;

enum { LOCK_ROUNDS = 200, LOCKERS_PER_THREAD = 8 };

static void coroutine_fn locker_co(void *opaque)
{
    Shared *s = opaque;

    for (int i = 0; i < LOCK_ROUNDS; i++) {
        co_mutex_lock(&s->lock);
        if (s->inside++ != 0) {
            s->violations++;
        }
        int v = s->counter;
        co_sleep_ns(0); /* yield inside the critical section */
        s->counter = v + 1;
        s->inside--;
        co_mutex_unlock(&s->lock);
    }
    atomic_fetch_add(&s->finished, 1);
    aio_notify(s->main_ctx);
}

typedef struct Spawn {
    Shared *s;
} Spawn;

static void spawn_lockers_bh(void *opaque)
{
    Spawn *sp = opaque;

    for (int i = 0; i < LOCKERS_PER_THREAD; i++) {
        coroutine_enter(coroutine_create(locker_co, sp->s));
    }
}

static void test_aio_co_mutex_across_threads(void **state)
{
    AioContext *ctx = test_ctx_new();
    Error *err = NULL;
    IOThread *t = iothread_new("locker", &err);
    Shared s = { .counter = 0, .main_ctx = ctx };
    Spawn sp = { &s };

    co_mutex_init(&s.lock);
    aio_bh_schedule_oneshot(iothread_get_aio_context(t), spawn_lockers_bh, &sp);
    spawn_lockers_bh(&sp);
    while (atomic_load(&s.finished) != 2 * LOCKERS_PER_THREAD) {
        aio_poll(ctx, true);
    }
    iothread_join(t);
    assert_int_equal(s.violations, 0);
    assert_int_equal(s.counter, 2 * LOCKERS_PER_THREAD * LOCK_ROUNDS);
    test_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aio_co_wake_from_other_thread_resumes_at_home),
        cmocka_unit_test(test_aio_co_wake_in_coroutine_is_deferred),
        cmocka_unit_test(test_aio_co_schedule_runs_in_fifo_order),
        cmocka_unit_test(test_aio_co_double_schedule_aborts),
        cmocka_unit_test(test_aio_co_hop_to_iothread_and_back),
        cmocka_unit_test(test_aio_co_mutex_across_threads),
    };

    return RUN_PER_FDMON(tests);
}
