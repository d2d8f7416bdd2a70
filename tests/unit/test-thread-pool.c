/*
 * Unit tests: the per-context thread pool (aio/thread-pool.c): results go
 * back to the coroutine that asked, the thread bound holds under load, the
 * pool really runs work in parallel, and idle workers go away.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#include "aio-test-util.h"

#include <coblk/aio-io.h>

#include "aio/engine-int.h"

/* Shared by the work items of one test. */
typedef struct Load {
    AioContext *ctx;
    atomic_int running;       /* work items executing now */
    atomic_int max_running;   /* the most seen at once */
    atomic_int violations;    /* times a worker saw more threads than the bound */
    int bound;
    /* Items wait here until `rendezvous` of them run at once (or a timeout). */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int rendezvous;
    bool released;
    atomic_bool timed_out;
} Load;

typedef struct Item {
    Load *load;
    int index;
    int64_t result;
    bool finished;
    int *remaining;
} Item;

static void load_init(Load *l, AioContext *ctx, int bound, int rendezvous)
{
    memset(l, 0, sizeof(*l));
    l->ctx = ctx;
    l->bound = bound;
    l->rendezvous = rendezvous;
    pthread_mutex_init(&l->lock, NULL);
    pthread_cond_init(&l->cond, NULL);
}

static void load_destroy(Load *l)
{
    pthread_cond_destroy(&l->cond);
    pthread_mutex_destroy(&l->lock);
}

static void note_running(Load *l, int now)
{
    int seen = atomic_load(&l->max_running);
    ThreadPoolStats st;

    while (now > seen && !atomic_compare_exchange_weak(&l->max_running, &seen, now)) {
    }
    thread_pool_get_stats(l->ctx, &st);
    if (now > l->bound || st.threads > l->bound) {
        atomic_fetch_add(&l->violations, 1);
    }
}

/* Blocks until `rendezvous` items run together, then lets everyone through. */
static void wait_rendezvous(Load *l, int now)
{
    struct timespec deadline;

    pthread_mutex_lock(&l->lock);
    if (now >= l->rendezvous) {
        l->released = true;
        pthread_cond_broadcast(&l->cond);
    }
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    while (!l->released) {
        if (pthread_cond_timedwait(&l->cond, &l->lock, &deadline) == ETIMEDOUT) {
            atomic_store(&l->timed_out, true);
            l->released = true;
        }
    }
    pthread_mutex_unlock(&l->lock);
}

static int64_t blocking_work(void *opaque)
{
    Item *it = opaque;
    Load *l = it->load;
    int now = atomic_fetch_add(&l->running, 1) + 1;

    note_running(l, now);
    wait_rendezvous(l, now);
    atomic_fetch_sub(&l->running, 1);
    return (int64_t)it->index * 1000 + 7;
}

static void coroutine_fn item_entry(void *opaque)
{
    Item *it = opaque;

    it->result = thread_pool_co_run(it->load->ctx, blocking_work, it);
    it->finished = true;
    (*it->remaining)--;
}

/* Runs n items from n coroutines and checks each got its own result. */
static void run_items(Load *l, int n)
{
    Item *items = calloc(n, sizeof(*items));
    int remaining = n;

    for (int i = 0; i < n; i++) {
        items[i] = (Item){ .load = l, .index = i, .remaining = &remaining };
        aio_co_enter(l->ctx, coroutine_create(item_entry, &items[i]));
    }
    while (remaining > 0) {
        aio_poll(l->ctx, true);
    }
    for (int i = 0; i < n; i++) {
        assert_true(items[i].finished);
        assert_int_equal(items[i].result, (int64_t)i * 1000 + 7);
    }
    free(items);
}

static void test_thread_pool_results_to_right_coroutine(void **state)
{
    AioContext *ctx = test_ctx_new();
    Load l;

    load_init(&l, ctx, 64, 1);
    run_items(&l, 500);
    assert_int_equal(atomic_load(&l.violations), 0);
    load_destroy(&l);
    test_ctx_free(ctx);
}

static void test_thread_pool_bound_respected(void **state)
{
    AioContext *ctx = test_ctx_new();
    ThreadPoolStats st;
    Load l;

    aio_thread_pool_set_max(ctx, 4);
    /* Items block until four run at once: the pool must reach the bound... */
    load_init(&l, ctx, 4, 4);
    run_items(&l, 200);
    assert_false(atomic_load(&l.timed_out));
    /* ...and never pass it. */
    assert_int_equal(atomic_load(&l.max_running), 4);
    assert_int_equal(atomic_load(&l.violations), 0);
    thread_pool_get_stats(ctx, &st);
    assert_int_equal(st.max_threads, 4);
    assert_true(st.threads <= 4);
    load_destroy(&l);
    test_ctx_free(ctx);
}

static void test_thread_pool_many_blocking_calls_in_parallel(void **state)
{
    AioContext *ctx = test_ctx_new();
    Load l;

    /* 32 calls that each wait for all 32: only a pool of >= 32 threads finishes. */
    load_init(&l, ctx, 64, 32);
    run_items(&l, 32);
    assert_false(atomic_load(&l.timed_out));
    assert_int_equal(atomic_load(&l.max_running), 32);
    load_destroy(&l);
    test_ctx_free(ctx);
}

static void test_thread_pool_default_bound_is_64(void **state)
{
    AioContext *ctx = test_ctx_new();
    ThreadPoolStats st;

    thread_pool_get_stats(ctx, &st);
    assert_int_equal(st.max_threads, 64);
    assert_int_equal(st.threads, 0);
    aio_thread_pool_set_max(ctx, 0);
    thread_pool_get_stats(ctx, &st);
    assert_int_equal(st.max_threads, 1);
    test_ctx_free(ctx);
}

static void test_thread_pool_single_thread_serializes(void **state)
{
    AioContext *ctx = test_ctx_new();
    Load l;

    aio_thread_pool_set_max(ctx, 1);
    load_init(&l, ctx, 1, 1);
    run_items(&l, 50);
    assert_int_equal(atomic_load(&l.max_running), 1);
    assert_int_equal(atomic_load(&l.violations), 0);
    load_destroy(&l);
    test_ctx_free(ctx);
}

static void test_thread_pool_idle_workers_exit(void **state)
{
    AioContext *ctx = test_ctx_new();
    ThreadPoolStats st;
    Load l;
    int64_t deadline;

    load_init(&l, ctx, 8, 8);
    aio_thread_pool_set_max(ctx, 8);
    run_items(&l, 8);
    thread_pool_get_stats(ctx, &st);
    assert_int_equal(st.threads, 8);
    /* Idle workers leave after a few seconds (bounded wait, not a sync sleep). */
    deadline = aio_clock_ns() + 20 * 1000000000LL;
    do {
        usleep(100 * 1000);
        thread_pool_get_stats(ctx, &st);
    } while (st.threads > 0 && aio_clock_ns() < deadline);
    assert_int_equal(st.threads, 0);
    /* The pool starts workers again on demand. */
    run_items(&l, 8);
    load_destroy(&l);
    test_ctx_free(ctx);
}

#define IOTHREAD_ITEMS 64

typedef struct IoThreadRun {
    AioContext *main_ctx;
    Load load;
    Item items[IOTHREAD_ITEMS];
    int remaining;
    Coroutine *parent;
    int done; /* set in the main context */
} IoThreadRun;

static void iothread_run_done(void *opaque)
{
    ((IoThreadRun *)opaque)->done = 1;
}

static void coroutine_fn iothread_item_entry(void *opaque)
{
    Item *it = opaque;
    IoThreadRun *r = (IoThreadRun *)((char *)it->load - offsetof(IoThreadRun, load));

    item_entry(it);
    if (r->remaining == 0) {
        aio_co_wake(r->parent);
    }
}

/* Runs in the IOThread: starts the items there and waits for them. */
static void coroutine_fn iothread_run_entry(void *opaque)
{
    IoThreadRun *r = opaque;

    r->parent = coroutine_self();
    r->remaining = IOTHREAD_ITEMS;
    for (int i = 0; i < IOTHREAD_ITEMS; i++) {
        r->items[i] = (Item){ .load = &r->load, .index = i, .remaining = &r->remaining };
        aio_co_enter(r->load.ctx, coroutine_create(iothread_item_entry, &r->items[i]));
    }
    while (r->remaining > 0) {
        coroutine_yield();
    }
    aio_bh_schedule_oneshot(r->main_ctx, iothread_run_done, r);
}

static void test_thread_pool_in_iothread(void **state)
{
    AioContext *ctx = test_ctx_new();
    IOThread *t = iothread_new("pool-test", NULL);
    IoThreadRun *r = calloc(1, sizeof(*r));

    assert_non_null(t);
    r->main_ctx = ctx;
    load_init(&r->load, iothread_get_aio_context(t), 64, 8);
    aio_co_schedule(r->load.ctx, coroutine_create(iothread_run_entry, r));
    while (!r->done) {
        aio_poll(ctx, true);
    }
    iothread_join(t);
    assert_false(atomic_load(&r->load.timed_out));
    assert_int_equal(atomic_load(&r->load.violations), 0);
    for (int i = 0; i < IOTHREAD_ITEMS; i++) {
        assert_true(r->items[i].finished);
        assert_int_equal(r->items[i].result, (int64_t)i * 1000 + 7);
    }
    load_destroy(&r->load);
    free(r);
    test_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_thread_pool_results_to_right_coroutine),
        cmocka_unit_test(test_thread_pool_bound_respected),
        cmocka_unit_test(test_thread_pool_many_blocking_calls_in_parallel),
        cmocka_unit_test(test_thread_pool_default_bound_is_64),
        cmocka_unit_test(test_thread_pool_single_thread_serializes),
        cmocka_unit_test(test_thread_pool_in_iothread),
        cmocka_unit_test(test_thread_pool_idle_workers_exit),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
