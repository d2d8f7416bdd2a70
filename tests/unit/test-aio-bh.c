/* Unit tests: bottom halves (aio/async.c). */
#include <pthread.h>
#include <stdatomic.h>

#include "aio-test-util.h"

typedef struct Rec {
    int order[16];
    int n;
} Rec;

typedef struct Item {
    Rec *rec;
    int id;
    AioBH *self;
    int reschedule;
} Item;

static void record_cb(void *opaque)
{
    Item *it = opaque;

    it->rec->order[it->rec->n++] = it->id;
    if (it->reschedule-- > 0) {
        aio_bh_schedule(it->self);
    }
}

static void test_aio_bh_runs_once_per_schedule(void **state)
{
    AioContext *ctx = test_ctx_new();
    Rec rec = { .n = 0 };
    Item it = { .rec = &rec, .id = 1 };
    AioBH *bh = aio_bh_new(ctx, record_cb, &it);

    aio_bh_schedule(bh);
    aio_bh_schedule(bh); /* a second schedule before it ran is the same run */
    assert_true(aio_poll(ctx, false));
    assert_int_equal(rec.n, 1);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(rec.n, 1);
    aio_bh_delete(bh);
    test_ctx_free(ctx);
}

static void test_aio_bh_fifo_order(void **state)
{
    AioContext *ctx = test_ctx_new();
    Rec rec = { .n = 0 };
    Item items[5];
    AioBH *bhs[5];

    for (int i = 0; i < 5; i++) {
        items[i] = (Item){ .rec = &rec, .id = i };
        bhs[i] = aio_bh_new(ctx, record_cb, &items[i]);
    }
    for (int i = 0; i < 5; i++) {
        aio_bh_schedule(bhs[(i * 3) % 5]);
    }
    aio_poll(ctx, false);
    assert_int_equal(rec.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rec.order[i], (i * 3) % 5);
    }
    for (int i = 0; i < 5; i++) {
        aio_bh_delete(bhs[i]);
    }
    test_ctx_free(ctx);
}

static void test_aio_bh_reschedule_runs_next_iteration(void **state)
{
    AioContext *ctx = test_ctx_new();
    Rec rec = { .n = 0 };
    Item it = { .rec = &rec, .id = 7, .reschedule = 2 };

    it.self = aio_bh_new(ctx, record_cb, &it);
    aio_bh_schedule(it.self);
    aio_poll(ctx, false);
    assert_int_equal(rec.n, 1);
    aio_poll(ctx, false);
    assert_int_equal(rec.n, 2);
    aio_poll(ctx, false);
    assert_int_equal(rec.n, 3);
    assert_false(aio_poll(ctx, false));
    aio_bh_delete(it.self);
    test_ctx_free(ctx);
}

static void test_aio_bh_cancel_and_delete(void **state)
{
    AioContext *ctx = test_ctx_new();
    Rec rec = { .n = 0 };
    Item a = { .rec = &rec, .id = 1 };
    Item b = { .rec = &rec, .id = 2 };
    AioBH *bha = aio_bh_new(ctx, record_cb, &a);
    AioBH *bhb = aio_bh_new(ctx, record_cb, &b);

    aio_bh_schedule(bha);
    aio_bh_schedule(bhb);
    aio_bh_cancel(bha);
    aio_bh_delete(bhb); /* pending: freed by the dispatch, never run */
    aio_poll(ctx, false);
    assert_int_equal(rec.n, 0);
    /* A cancelled BH can be scheduled again. */
    aio_bh_schedule(bha);
    aio_poll(ctx, false);
    assert_int_equal(rec.n, 1);
    aio_bh_delete(bha);
    test_ctx_free(ctx);
}

static void count_cb(void *opaque)
{
    atomic_fetch_add((atomic_int *)opaque, 1);
}

static void test_aio_bh_oneshot(void **state)
{
    AioContext *ctx = test_ctx_new();
    atomic_int n = 0;

    for (int i = 0; i < 100; i++) {
        aio_bh_schedule_oneshot(ctx, count_cb, &n);
    }
    aio_poll(ctx, false);
    assert_int_equal(atomic_load(&n), 100);
    test_ctx_free(ctx);
}

typedef struct CrossArgs {
    AioContext *ctx;
    atomic_int *counter;
    atomic_int *armed;
    int rounds;
} CrossArgs;

static void *wake_thread(void *opaque)
{
    CrossArgs *a = opaque;

    for (int i = 0; i < a->rounds; i++) {
        /* Wait until the main thread is about to block for round i. */
        while (atomic_load(a->armed) != i + 1) {
        }
        aio_bh_schedule_oneshot(a->ctx, count_cb, a->counter);
    }
    return NULL;
}

static void test_aio_bh_from_other_thread_wakes_blocking_poll(void **state)
{
    AioContext *ctx = test_ctx_new();
    atomic_int counter = 0;
    atomic_int armed = 0;
    CrossArgs a = { ctx, &counter, &armed, 500 };
    pthread_t th;

    aio_context_set_poll_params(ctx, 0, 0, 0); /* really sleep in the kernel */
    pthread_create(&th, NULL, wake_thread, &a);
    for (int i = 0; i < a.rounds; i++) {
        atomic_store(&armed, i + 1);
        /* Without the wake-up this would block forever (no timers, no fds). */
        while (atomic_load(&counter) != i + 1) {
            aio_poll(ctx, true);
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&counter), a.rounds);
    test_ctx_free(ctx);
}

static void *spam_thread(void *opaque)
{
    CrossArgs *a = opaque;

    for (int i = 0; i < a->rounds; i++) {
        aio_bh_schedule_oneshot(a->ctx, count_cb, a->counter);
    }
    return NULL;
}

static void test_aio_bh_many_threads_none_lost(void **state)
{
    AioContext *ctx = test_ctx_new();
    atomic_int counter = 0;
    CrossArgs a = { ctx, &counter, NULL, 20000 };
    pthread_t th[4];

    for (int i = 0; i < 4; i++) {
        pthread_create(&th[i], NULL, spam_thread, &a);
    }
    while (atomic_load(&counter) != 4 * a.rounds) {
        aio_poll(ctx, true);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    assert_int_equal(atomic_load(&counter), 4 * a.rounds);
    test_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aio_bh_runs_once_per_schedule),
        cmocka_unit_test(test_aio_bh_fifo_order),
        cmocka_unit_test(test_aio_bh_reschedule_runs_next_iteration),
        cmocka_unit_test(test_aio_bh_cancel_and_delete),
        cmocka_unit_test(test_aio_bh_oneshot),
        cmocka_unit_test(test_aio_bh_from_other_thread_wakes_blocking_poll),
        cmocka_unit_test(test_aio_bh_many_threads_none_lost),
    };

    return RUN_PER_FDMON(tests);
}
