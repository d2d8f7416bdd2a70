/* Unit tests: IOThread (aio/iothread.c). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>

#include "aio-test-util.h"

typedef struct Probe {
    atomic_int runs;
    pthread_t tid;
} Probe;

static void probe_bh(void *opaque)
{
    Probe *p = opaque;

    p->tid = pthread_self();
    atomic_fetch_add(&p->runs, 1);
}

static void test_iothread_runs_bhs_on_its_thread(void **state)
{
    Error *err = NULL;
    IOThread *t = iothread_new("probe", &err);
    Probe p = { 0 };

    assert_non_null(t);
    aio_bh_schedule_oneshot(iothread_get_aio_context(t), probe_bh, &p);
    while (atomic_load(&p.runs) == 0) {
        sched_yield();
    }
    assert_false(pthread_equal(p.tid, pthread_self()));
    iothread_join(t);
}

static void test_iothread_join_runs_pending_work(void **state)
{
    Error *err = NULL;
    IOThread *t = iothread_new("pending", &err);
    Probe p = { 0 };

    for (int i = 0; i < 1000; i++) {
        aio_bh_schedule_oneshot(iothread_get_aio_context(t), probe_bh, &p);
    }
    iothread_join(t);
    assert_int_equal(atomic_load(&p.runs), 1000);
}

static void test_iothread_many_start_and_stop(void **state)
{
    IOThread *t[8];
    Probe p = { 0 };

    for (int i = 0; i < 8; i++) {
        t[i] = iothread_new("many", NULL);
        assert_non_null(t[i]);
        aio_bh_schedule_oneshot(iothread_get_aio_context(t[i]), probe_bh, &p);
    }
    for (int i = 0; i < 8; i++) {
        iothread_join(t[i]);
    }
    assert_int_equal(atomic_load(&p.runs), 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iothread_runs_bhs_on_its_thread),
        cmocka_unit_test(test_iothread_join_runs_pending_work),
        cmocka_unit_test(test_iothread_many_start_and_stop),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
