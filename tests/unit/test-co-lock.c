/*
 * Unit tests: CoQueue, CoMutex and CoRwlock (coroutine/lock.c, rwlock.c),
 * in one thread under a tiny round-robin scheduler, and across two threads
 * through a remote-wake hook that hands coroutines over a pipe.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coroutine/coroutine-int.h"

/* ------------------------------------------------------------------------ */
/* a run queue: coroutines that yielded to let others run */

#define RUNQ_MAX 1024
#define LOG_MAX 4096

static Coroutine *runq[RUNQ_MAX];
static size_t runq_head;
static size_t runq_tail;

/* Yields, to be entered again after everything already runnable. */
static void coroutine_fn sched_yield_co(void)
{
    assert_true(runq_tail - runq_head < RUNQ_MAX);
    runq[runq_tail++ % RUNQ_MAX] = coroutine_self();
    coroutine_yield();
}

/* Enters coroutines from the run queue until it is empty. */
static void sched_run(void)
{
    while (runq_head != runq_tail) {
        coroutine_enter(runq[runq_head++ % RUNQ_MAX]);
    }
}

typedef struct Log {
    int v[LOG_MAX];
    size_t n;
} Log;

static void log_add(Log *l, int v)
{
    assert_true(l->n < LOG_MAX);
    l->v[l->n++] = v;
}

static void start_all(CoroutineEntry *fn, void **args, int n)
{
    for (int i = 0; i < n; i++) {
        coroutine_enter(coroutine_create(fn, args[i]));
    }
    sched_run();
}

/* ------------------------------------------------------------------------ */
/* CoMutex */

static void coroutine_fn trylock_entry(void *opaque)
{
    CoMutex *m = opaque;

    assert_false(co_mutex_is_locked(m));
    assert_true(co_mutex_trylock(m));
    assert_true(co_mutex_is_locked(m));
    assert_false(co_mutex_trylock(m));
    co_mutex_unlock(m);
    assert_false(co_mutex_is_locked(m));
    co_mutex_lock(m);
    assert_true(co_mutex_is_locked(m));
    co_mutex_unlock(m);
}

static void test_co_lock_mutex_trylock(void **state)
{
    CoMutex m = CO_MUTEX_INITIALIZER;

    coroutine_enter(coroutine_create(trylock_entry, &m));
    assert_false(co_mutex_is_locked(&m));
}

#define WORKERS 50
#define ROUNDS 20

typedef struct MutexTest {
    CoMutex m;
    long counter;
    int inside;
    int overlap;
    Log calls;      /* ids in the order they called co_mutex_lock() */
    Log acquired;   /* ids in the order they got the lock */
} MutexTest;

typedef struct Worker {
    void *test;
    int id;
} Worker;

static void coroutine_fn mutex_worker(void *opaque)
{
    Worker *w = opaque;
    MutexTest *t = w->test;

    for (int r = 0; r < ROUNDS; r++) {
        long v;

        log_add(&t->calls, w->id);
        co_mutex_lock(&t->m);
        log_add(&t->acquired, w->id);
        if (t->inside++ != 0) {
            t->overlap++;
        }
        v = t->counter;
        sched_yield_co();              /* everybody else runs and queues up */
        t->counter = v + 1;
        t->inside--;
        co_mutex_unlock(&t->m);
        if (r % 3 == w->id % 3) {
            sched_yield_co();
        }
    }
}

static void test_co_lock_mutex_contention_fifo(void **state)
{
    MutexTest *t = calloc(1, sizeof(*t));
    Worker w[WORKERS];
    void *args[WORKERS];

    co_mutex_init(&t->m);
    for (int i = 0; i < WORKERS; i++) {
        w[i] = (Worker){ t, i };
        args[i] = &w[i];
    }
    start_all(mutex_worker, args, WORKERS);
    assert_int_equal(t->counter, WORKERS * ROUNDS);
    assert_int_equal(t->overlap, 0);
    assert_false(co_mutex_is_locked(&t->m));
    /* Strict FIFO handoff: the lock goes out in the order it was asked for. */
    assert_int_equal(t->calls.n, t->acquired.n);
    assert_memory_equal(t->calls.v, t->acquired.v, t->calls.n * sizeof(int));
    free(t);
}

/* ------------------------------------------------------------------------ */
/* CoQueue */

typedef struct QueueTest {
    CoMutex m;
    CoQueue q;
    int items;
    Log order;      /* consumer ids in the order they took an item */
    int finished;
} QueueTest;

static void coroutine_fn consumer(void *opaque)
{
    Worker *w = opaque;
    QueueTest *t = w->test;

    co_mutex_lock(&t->m);
    while (t->items == 0) {
        co_queue_wait(&t->q, &t->m);
        assert_true(co_mutex_is_locked(&t->m));
    }
    t->items--;
    log_add(&t->order, w->id);
    co_mutex_unlock(&t->m);
}

static void coroutine_fn producer(void *opaque)
{
    QueueTest *t = opaque;

    for (int i = 0; i < 4; i++) {
        co_mutex_lock(&t->m);
        t->items++;
        assert_true(co_queue_next(&t->q));
        co_mutex_unlock(&t->m);
        sched_yield_co();
    }
    t->finished = 1;
}

static void test_co_lock_queue_wait_next(void **state)
{
    QueueTest t = { .m = CO_MUTEX_INITIALIZER, .q = CO_QUEUE_INITIALIZER };
    Worker w[4];

    for (int i = 0; i < 4; i++) {
        w[i] = (Worker){ &t, i };
        coroutine_enter(coroutine_create(consumer, &w[i]));
    }
    assert_false(co_queue_empty(&t.q));
    coroutine_enter(coroutine_create(producer, &t));
    sched_run();
    assert_int_equal(t.finished, 1);
    assert_true(co_queue_empty(&t.q));
    assert_int_equal(t.order.n, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(t.order.v[i], i);
    }
}

typedef struct RestartTest {
    CoQueue q;
    Log order;
} RestartTest;

static void coroutine_fn queue_waiter(void *opaque)
{
    Worker *w = opaque;
    RestartTest *t = w->test;

    co_queue_wait(&t->q, NULL);
    log_add(&t->order, w->id);
}

static void test_co_lock_queue_restart_all(void **state)
{
    RestartTest t;
    Worker w[5];

    co_queue_init(&t.q);
    t.order.n = 0;
    assert_false(co_queue_next(&t.q));
    for (int i = 0; i < 5; i++) {
        w[i] = (Worker){ &t, i };
        coroutine_enter(coroutine_create(queue_waiter, &w[i]));
    }
    assert_int_equal(t.order.n, 0);
    co_queue_restart_all(&t.q);
    assert_true(co_queue_empty(&t.q));
    assert_int_equal(t.order.n, 5);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(t.order.v[i], i);
    }
}

/* ------------------------------------------------------------------------ */
/* CoRwlock */

typedef struct RwTest {
    CoRwlock l;
    int readers;
    int writers;
    int max_readers;
    int violations;
    long value;
    Log order;
} RwTest;

static void rw_enter_read(RwTest *t)
{
    if (t->writers != 0) {
        t->violations++;
    }
    if (++t->readers > t->max_readers) {
        t->max_readers = t->readers;
    }
}

static void rw_enter_write(RwTest *t)
{
    if (t->writers != 0 || t->readers != 0) {
        t->violations++;
    }
    t->writers++;
}

static void coroutine_fn rw_reader(void *opaque)
{
    Worker *w = opaque;
    RwTest *t = w->test;

    for (int r = 0; r < ROUNDS; r++) {
        co_rwlock_rdlock(&t->l);
        rw_enter_read(t);
        sched_yield_co();
        t->readers--;
        co_rwlock_unlock(&t->l);
        sched_yield_co();
    }
}

static void coroutine_fn rw_writer(void *opaque)
{
    Worker *w = opaque;
    RwTest *t = w->test;

    for (int r = 0; r < ROUNDS; r++) {
        long v;

        co_rwlock_wrlock(&t->l);
        rw_enter_write(t);
        v = t->value;
        sched_yield_co();
        t->value = v + 1;
        t->writers--;
        co_rwlock_unlock(&t->l);
        sched_yield_co();
    }
}

static void test_co_lock_rwlock_readers_concurrent(void **state)
{
    RwTest t = { .l = CO_RWLOCK_INITIALIZER };
    Worker w[6];
    void *args[6];

    for (int i = 0; i < 6; i++) {
        w[i] = (Worker){ &t, i };
        args[i] = &w[i];
    }
    start_all(rw_reader, args, 6);
    assert_int_equal(t.max_readers, 6);
    assert_int_equal(t.violations, 0);
}

static void test_co_lock_rwlock_writers_exclusive(void **state)
{
    RwTest t = { .l = CO_RWLOCK_INITIALIZER };
    Worker w[8];

    co_rwlock_init(&t.l);
    for (int i = 0; i < 8; i++) {
        w[i] = (Worker){ &t, i };
        coroutine_enter(coroutine_create(i < 4 ? rw_reader : rw_writer, &w[i]));
    }
    sched_run();
    assert_int_equal(t.violations, 0);
    assert_int_equal(t.value, 4 * ROUNDS);
    assert_true(t.max_readers > 1);
    assert_int_equal(t.l.readers, 0);
}

/* Scripted steps: each coroutine logs its id when it gets the lock. */
typedef struct RwStep {
    RwTest *t;
    int id;
    char op;        /* 'r' read, 'w' write */
} RwStep;

static void coroutine_fn rw_scripted(void *opaque)
{
    RwStep *s = opaque;

    if (s->op == 'r') {
        co_rwlock_rdlock(&s->t->l);
    } else {
        co_rwlock_wrlock(&s->t->l);
    }
    log_add(&s->t->order, s->id);
    coroutine_yield();              /* hold until the test releases us */
    co_rwlock_unlock(&s->t->l);
}

static void test_co_lock_rwlock_no_writer_starvation(void **state)
{
    RwTest t = { .l = CO_RWLOCK_INITIALIZER };
    RwStep steps[4] = { { &t, 1, 'r' }, { &t, 2, 'w' }, { &t, 3, 'r' }, { &t, 4, 'r' } };
    Coroutine *co[4];

    for (int i = 0; i < 4; i++) {
        co[i] = coroutine_create(rw_scripted, &steps[i]);
        coroutine_enter(co[i]);
    }
    /* Reader 1 holds; writer 2 queued; readers 3 and 4 queue behind it. */
    assert_int_equal(t.order.n, 1);
    coroutine_enter(co[0]);         /* reader 1 leaves: the writer goes first */
    assert_int_equal(t.order.n, 2);
    assert_int_equal(t.order.v[1], 2);
    coroutine_enter(co[1]);         /* writer leaves: both readers get in */
    assert_int_equal(t.order.n, 4);
    assert_int_equal(t.order.v[2], 3);
    assert_int_equal(t.order.v[3], 4);
    assert_int_equal(t.l.readers, 2);
    coroutine_enter(co[2]);
    coroutine_enter(co[3]);
    assert_int_equal(t.l.readers, 0);
}

typedef struct UpgradeTest {
    RwTest *t;
    int phase;
} UpgradeTest;

static void coroutine_fn upgrader(void *opaque)
{
    UpgradeTest *u = opaque;

    co_rwlock_rdlock(&u->t->l);
    coroutine_yield();
    co_rwlock_upgrade(&u->t->l);    /* waits for the other reader */
    log_add(&u->t->order, 10);
    u->phase = 1;
    coroutine_yield();
    co_rwlock_downgrade(&u->t->l);
    u->phase = 2;
    coroutine_yield();
    co_rwlock_unlock(&u->t->l);
}

static void test_co_lock_rwlock_upgrade_downgrade(void **state)
{
    RwTest t = { .l = CO_RWLOCK_INITIALIZER };
    UpgradeTest u = { &t, 0 };
    RwStep other = { &t, 1, 'r' };
    RwStep writer = { &t, 2, 'w' };
    RwStep late = { &t, 3, 'r' };
    Coroutine *up = coroutine_create(upgrader, &u);
    Coroutine *co_other = coroutine_create(rw_scripted, &other);
    Coroutine *co_writer = coroutine_create(rw_scripted, &writer);
    Coroutine *co_late;

    coroutine_enter(up);            /* read hold */
    coroutine_enter(co_other);      /* second read hold */
    coroutine_enter(co_writer);     /* queued writer */
    coroutine_enter(up);            /* upgrade waits, ahead of the writer */
    assert_int_equal(u.phase, 0);
    coroutine_enter(co_other);      /* other reader leaves: upgrade completes */
    assert_int_equal(u.phase, 1);
    assert_int_equal(t.l.readers, -1);
    coroutine_enter(up);            /* downgrade: the queued writer still waits */
    assert_int_equal(u.phase, 2);
    assert_int_equal(t.l.readers, 1);
    co_late = coroutine_create(rw_scripted, &late);
    coroutine_enter(co_late);       /* FIFO: queues behind the writer */
    assert_int_equal(t.order.n, 2);
    coroutine_enter(up);            /* last read hold gone: writer, then the late reader */
    assert_int_equal(t.order.n, 3);
    assert_int_equal(t.order.v[0], 1);
    assert_int_equal(t.order.v[1], 10);
    assert_int_equal(t.order.v[2], 2);
    coroutine_enter(co_writer);
    assert_int_equal(t.order.n, 4);
    assert_int_equal(t.order.v[3], 3);
    coroutine_enter(co_late);
    assert_int_equal(t.l.readers, 0);
}

static void coroutine_fn sole_upgrade(void *opaque)
{
    CoRwlock *l = opaque;

    co_rwlock_rdlock(l);
    co_rwlock_upgrade(l);           /* sole reader: at once */
    assert_int_equal(l->readers, -1);
    co_rwlock_downgrade(l);
    assert_int_equal(l->readers, 1);
    co_rwlock_unlock(l);
}

static void test_co_lock_rwlock_sole_reader_upgrade(void **state)
{
    CoRwlock l;

    co_rwlock_init(&l);
    coroutine_enter(coroutine_create(sole_upgrade, &l));
    assert_int_equal(l.readers, 0);
}

/* ------------------------------------------------------------------------ */
/* two threads sharing a CoMutex and a CoRwlock */

#define XT_WORKERS 8
#define XT_ROUNDS 500

typedef struct Loop {
    int rfd;
    int wfd;
    int done;
} Loop;

typedef struct CrossTest {
    CoMutex m;
    CoRwlock rw;
    long counter;
    long rw_value;
    _Atomic int violations;
    int rw_writers;
} CrossTest;

typedef struct CrossWorker {
    CrossTest *t;
    Loop *loop;
    int id;
} CrossWorker;

static void loop_push(Loop *l, Coroutine *co)
{
    ssize_t n = write(l->wfd, &co, sizeof(co));

    if (n != sizeof(co)) {
        abort();
    }
}

/* The remote-wake hook: hand co to the thread whose loop is its home context. */
static void cross_remote_wake(Coroutine *co)
{
    loop_push((Loop *)coroutine_get_aio_context(co), co);
}

/* Yields and gets entered again by this thread's loop. */
static void coroutine_fn loop_yield(Loop *l)
{
    loop_push(l, coroutine_self());
    coroutine_yield();
}

static void coroutine_fn cross_worker(void *opaque)
{
    CrossWorker *w = opaque;
    CrossTest *t = w->t;

    for (int r = 0; r < XT_ROUNDS; r++) {
        long v;

        co_mutex_lock(&t->m);
        v = t->counter;
        loop_yield(w->loop);
        t->counter = v + 1;
        co_mutex_unlock(&t->m);

        if ((r + w->id) % 4 == 0) {
            co_rwlock_wrlock(&t->rw);
            if (t->rw_writers++ != 0) {
                t->violations++;
            }
            v = t->rw_value;
            loop_yield(w->loop);
            t->rw_value = v + 1;
            t->rw_writers--;
        } else {
            co_rwlock_rdlock(&t->rw);
            if (t->rw_writers != 0) {
                t->violations++;
            }
            loop_yield(w->loop);
        }
        co_rwlock_unlock(&t->rw);
    }
    w->loop->done++;
}

static void *cross_thread(void *arg)
{
    CrossWorker *w = arg;           /* XT_WORKERS of them, same loop */
    Loop *l = w[0].loop;

    coroutine_set_thread_ctx((struct AioContext *)l);
    for (int i = 0; i < XT_WORKERS; i++) {
        coroutine_enter(coroutine_create(cross_worker, &w[i]));
    }
    while (l->done < XT_WORKERS) {
        Coroutine *co;

        if (read(l->rfd, &co, sizeof(co)) != sizeof(co)) {
            abort();
        }
        coroutine_enter(co);
    }
    coroutine_set_thread_ctx(NULL);
    return NULL;
}

static void test_co_lock_cross_thread(void **state)
{
    CrossTest t = { .m = CO_MUTEX_INITIALIZER, .rw = CO_RWLOCK_INITIALIZER };
    Loop loops[2];
    CrossWorker w[2][XT_WORKERS];
    pthread_t th[2];

    coroutine_set_remote_wake(cross_remote_wake);
    for (int i = 0; i < 2; i++) {
        int fds[2];

        assert_int_equal(pipe(fds), 0);
        loops[i] = (Loop){ fds[0], fds[1], 0 };
        for (int j = 0; j < XT_WORKERS; j++) {
            w[i][j] = (CrossWorker){ &t, &loops[i], j };
        }
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_create(&th[i], NULL, cross_thread, w[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        close(loops[i].rfd);
        close(loops[i].wfd);
    }
    coroutine_set_remote_wake(NULL);
    assert_int_equal(t.counter, 2 * XT_WORKERS * XT_ROUNDS);
    assert_int_equal(t.rw_value, 2 * XT_WORKERS * XT_ROUNDS / 4);
    assert_int_equal(t.violations, 0);
    assert_false(co_mutex_is_locked(&t.m));
    assert_int_equal(t.rw.readers, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_co_lock_mutex_trylock),
        cmocka_unit_test(test_co_lock_mutex_contention_fifo),
        cmocka_unit_test(test_co_lock_queue_wait_next),
        cmocka_unit_test(test_co_lock_queue_restart_all),
        cmocka_unit_test(test_co_lock_rwlock_readers_concurrent),
        cmocka_unit_test(test_co_lock_rwlock_writers_exclusive),
        cmocka_unit_test(test_co_lock_rwlock_no_writer_starvation),
        cmocka_unit_test(test_co_lock_rwlock_upgrade_downgrade),
        cmocka_unit_test(test_co_lock_rwlock_sole_reader_upgrade),
        cmocka_unit_test(test_co_lock_cross_thread),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
