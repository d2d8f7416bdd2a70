/* Unit tests: timers and co_sleep_ns (aio/timer.c). */
#include "aio-test-util.h"

typedef struct Fired {
    int64_t order[64];
    int n;
} Fired;

typedef struct T {
    AioTimer timer;
    Fired *fired;
    int64_t id;
} T;

static void fire_cb(void *opaque)
{
    T *t = opaque;

    t->fired->order[t->fired->n++] = t->id;
}

static void test_aio_timer_fires_in_deadline_order(void **state)
{
    AioContext *ctx = test_ctx_new();
    Fired fired = { .n = 0 };
    T ts[5];
    int64_t now = aio_clock_ns();
    int64_t offsets[5] = { 3000000, 1000000, 5000000, 2000000, 4000000 };

    for (int i = 0; i < 5; i++) {
        ts[i].fired = &fired;
        ts[i].id = offsets[i];
        aio_timer_init(&ts[i].timer, ctx, fire_cb, &ts[i]);
        aio_timer_mod(&ts[i].timer, now + offsets[i]);
    }
    while (fired.n < 5) {
        aio_poll(ctx, true);
    }
    /* Blocking polls slept until the last deadline, no earlier. */
    assert_true(aio_clock_ns() - now >= 5000000);
    for (int i = 1; i < 5; i++) {
        assert_true(fired.order[i - 1] < fired.order[i]);
    }
    test_ctx_free(ctx);
}

static void test_aio_timer_del_and_mod(void **state)
{
    AioContext *ctx = test_ctx_new();
    Fired fired = { .n = 0 };
    T a = { .fired = &fired, .id = 1 };
    T b = { .fired = &fired, .id = 2 };
    int64_t now = aio_clock_ns();

    aio_timer_init(&a.timer, ctx, fire_cb, &a);
    aio_timer_init(&b.timer, ctx, fire_cb, &b);
    aio_timer_mod(&a.timer, now + 1000000);
    aio_timer_mod(&b.timer, now + 2000000);
    assert_true(aio_timer_pending(&a.timer));
    aio_timer_del(&a.timer);
    assert_false(aio_timer_pending(&a.timer));
    aio_timer_mod(&b.timer, now); /* moved earlier: due now */
    aio_poll(ctx, false);
    assert_int_equal(fired.n, 1);
    assert_int_equal(fired.order[0], 2);
    assert_false(aio_timer_pending(&b.timer));
    /* Nothing else is armed: a non-blocking poll does nothing. */
    assert_false(aio_poll(ctx, false));
    test_ctx_free(ctx);
}

static int64_t last_fired;
static int fired_count;
static int order_ok;

static void stress_cb(void *opaque)
{
    AioTimer *t = opaque;

    if (t->expire_ns < last_fired) {
        order_ok = 0;
    }
    last_fired = t->expire_ns;
    fired_count++;
}

static void test_aio_timer_heap_stress(void **state)
{
    enum { N = 5000 };
    AioContext *ctx = test_ctx_new();
    AioTimer **timers = calloc(N, sizeof(*timers));
    int64_t now = aio_clock_ns();
    int cancelled = 0;

    last_fired = 0;
    fired_count = 0;
    order_ok = 1;
    srand(42);
    for (int i = 0; i < N; i++) {
        timers[i] = aio_timer_new(ctx, stress_cb, NULL);
        timers[i]->opaque = timers[i];
        /* All in the past, at distinct pseudo-random points. */
        aio_timer_mod(timers[i], now - 1 - (rand() % 1000000));
    }
    for (int i = 1; i < N; i += 7) {
        aio_timer_mod(timers[i], now - 1 - (rand() % 1000000)); /* re-arm moves it */
    }
    for (int i = 0; i < N; i += 3) {
        aio_timer_del(timers[i]);
        cancelled++;
    }
    aio_poll(ctx, false);
    assert_int_equal(fired_count + cancelled, N);
    assert_true(order_ok);
    for (int i = 0; i < N; i++) {
        aio_timer_free(timers[i]);
    }
    free(timers);
    test_ctx_free(ctx);
}

typedef struct Sleeper {
    int64_t ns;
    int *order;
    int *n;
    int done;
} Sleeper;

static void coroutine_fn sleeper_co(void *opaque)
{
    Sleeper *s = opaque;
    int64_t start = aio_clock_ns();

    co_sleep_ns(s->ns);
    assert_true(aio_clock_ns() - start >= s->ns);
    s->order[(*s->n)++] = (int)(s->ns / 1000000);
    s->done = 1;
}

static void test_aio_timer_co_sleep_wakes_in_order(void **state)
{
    AioContext *ctx = test_ctx_new();
    int order[4];
    int n = 0;
    Sleeper s[4] = {
        { 4000000, order, &n, 0 }, { 1000000, order, &n, 0 },
        { 3000000, order, &n, 0 }, { 2000000, order, &n, 0 },
    };

    for (int i = 0; i < 4; i++) {
        aio_co_enter(ctx, coroutine_create(sleeper_co, &s[i]));
    }
    while (n < 4) {
        aio_poll(ctx, true);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(order[i], i + 1);
    }
    test_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aio_timer_fires_in_deadline_order),
        cmocka_unit_test(test_aio_timer_del_and_mod),
        cmocka_unit_test(test_aio_timer_heap_stress),
        cmocka_unit_test(test_aio_timer_co_sleep_wakes_in_order),
    };

    return RUN_PER_FDMON(tests);
}
