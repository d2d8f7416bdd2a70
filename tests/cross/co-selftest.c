/*
 * Self-checking test of the coroutine runtime for cross builds (run under
 * qemu-user by run-aarch64.sh), where cmocka is not available for the
 * target. It covers the behaviours of tests/unit/test-coroutine.c and
 * test-co-lock.c with plain checks and prints "N passed, M failed".
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "coroutine/coroutine-int.h"

static int passed;
static int failed;
static int case_failed;

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,  \
                    #cond);                                                   \
            case_failed = 1;                                                  \
        }                                                                     \
    } while (0)

static void run_case(const char *name, void (*fn)(void))
{
    case_failed = 0;
    fn();
    printf("%s %s\n", case_failed ? "FAIL" : "ok  ", name);
    if (case_failed) {
        failed++;
    } else {
        passed++;
    }
}

static char trace_buf[128];
static size_t trace_len;

static void trace(char c)
{
    if (trace_len + 1 < sizeof(trace_buf)) {
        trace_buf[trace_len++] = c;
        trace_buf[trace_len] = '\0';
    }
}

static void trace_reset(void)
{
    trace_len = 0;
    trace_buf[0] = '\0';
}

/* ------------------------------------------------------------------------ */

static void coroutine_fn yield_twice(void *opaque)
{
    trace('a');
    coroutine_yield();
    trace('b');
    coroutine_yield();
    trace('c');
}

static void case_lifecycle(void)
{
    Coroutine *co = coroutine_create(yield_twice, NULL);

    trace_reset();
    CHECK(coroutine_self() == NULL && !coroutine_in_coroutine());
    coroutine_enter(co);
    CHECK(coroutine_is_yielded(co));
    trace('1');
    coroutine_enter(co);
    trace('2');
    coroutine_enter(co);
    CHECK(strcmp(trace_buf, "a1b2c") == 0);
}

static Coroutine *nest_inner_co;

static void coroutine_fn nest_inner(void *opaque)
{
    trace('i');
    coroutine_yield();
    trace('j');
}

static void coroutine_fn nest_outer(void *opaque)
{
    Coroutine *me = coroutine_self();

    trace('o');
    nest_inner_co = coroutine_create(nest_inner, NULL);
    coroutine_enter(nest_inner_co);
    CHECK(coroutine_self() == me);
    trace('p');
    coroutine_yield();
    coroutine_enter(nest_inner_co);
    trace('r');
}

static void case_nesting(void)
{
    Coroutine *outer = coroutine_create(nest_outer, NULL);

    trace_reset();
    coroutine_enter(outer);
    CHECK(strcmp(trace_buf, "oip") == 0);
    coroutine_enter(outer);
    CHECK(strcmp(trace_buf, "oipjr") == 0);
    CHECK(coroutine_self() == NULL);
}

static Coroutine *sleepers[3];

static void coroutine_fn sleeper(void *opaque)
{
    coroutine_yield();
    trace(*(const char *)opaque);
}

static void coroutine_fn waker(void *opaque)
{
    coroutine_wake_internal(sleepers[2]);
    coroutine_wake_internal(sleepers[0]);
    coroutine_wake_internal(sleepers[1]);
    trace('W');
}

static void case_wakeup_order(void)
{
    static const char names[3] = { '0', '1', '2' };

    trace_reset();
    for (int i = 0; i < 3; i++) {
        sleepers[i] = coroutine_create(sleeper, (void *)&names[i]);
        coroutine_enter(sleepers[i]);
    }
    coroutine_enter(coroutine_create(waker, NULL));
    CHECK(strcmp(trace_buf, "W201") == 0);
}

/* Runs fn in a child; returns the signal that killed it, or 0. */
static int child_signal(void (*fn)(void))
{
    pid_t pid = fork();
    int status;

    if (pid == 0) {
        freopen("/dev/null", "w", stderr);
        fn();
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid) {
        return -1;
    }
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void coroutine_fn enter_self(void *opaque)
{
    coroutine_enter(coroutine_self());
}

static void child_enter_running(void)
{
    coroutine_enter(coroutine_create(enter_self, NULL));
}

static void coroutine_fn nop(void *opaque)
{
}

static void child_enter_terminated(void)
{
    Coroutine *co = coroutine_create(nop, NULL);

    coroutine_enter(co);
    coroutine_enter(co);
}

static void case_bad_enter_aborts(void)
{
    CHECK(child_signal(child_enter_running) == SIGABRT);
    CHECK(child_signal(child_enter_terminated) == SIGABRT);
}

static unsigned recurse(unsigned depth)
{
    volatile char frame[512];

    frame[0] = (char)depth;
    return depth == 0 ? frame[0] : recurse(depth - 1) + frame[0];
}

static void coroutine_fn overflow(void *opaque)
{
    *(volatile unsigned *)opaque = recurse(1000);
}

static void child_overflow(void)
{
    unsigned r;

    coroutine_set_stack_size(64 * 1024);
    coroutine_enter(coroutine_create(overflow, &r));
}

static void case_guard_page(void)
{
    CHECK(child_signal(child_overflow) == SIGSEGV);
}

#if defined(__aarch64__)
static uint64_t fp_mode(void)
{
    return __builtin_aarch64_get_fpcr() & (3u << 22);
}

static void fp_set(uint64_t mode)
{
    __builtin_aarch64_set_fpcr((__builtin_aarch64_get_fpcr() & ~(3u << 22)) | mode);
}
#else
static uint64_t fp_cur;
static uint64_t fp_mode(void)
{
    return fp_cur;
}

static void fp_set(uint64_t mode)
{
    fp_cur = mode;
}
#endif

static uint64_t fp_seen;

static void coroutine_fn fp_entry(void *opaque)
{
    fp_set(3u << 22);
    coroutine_yield();
    fp_seen = fp_mode();
    fp_set(0);
}

static void case_fp_modes(void)
{
    Coroutine *co = coroutine_create(fp_entry, NULL);

    fp_set(2u << 22);
    coroutine_enter(co);
    CHECK(fp_mode() == (2u << 22));
    fp_set(1u << 22);
    coroutine_enter(co);
    CHECK(fp_mode() == (1u << 22));
    CHECK(fp_seen == (3u << 22));
    fp_set(0);
}

static void coroutine_fn park(void *opaque)
{
    (*(unsigned *)opaque)++;
    coroutine_yield();
    (*(unsigned *)opaque)--;
}

static void case_many_alive_and_pool(void)
{
    enum { N = 20000 };
    Coroutine **cos = calloc(N, sizeof(*cos));
    unsigned alive = 0;
    CoroutinePoolStats a;
    CoroutinePoolStats b;

    coroutine_set_stack_size(64 * 1024);
    for (int i = 0; i < N; i++) {
        cos[i] = coroutine_create(park, &alive);
        coroutine_enter(cos[i]);
    }
    CHECK(alive == N);
    for (int i = 0; i < N; i++) {
        coroutine_enter(cos[i]);
    }
    CHECK(alive == 0);
    coroutine_pool_stats(&a);
    for (int i = 0; i < 1000; i++) {
        coroutine_enter(coroutine_create(nop, NULL));
    }
    coroutine_pool_stats(&b);
    CHECK(b.created == a.created || !coroutine_pools_enabled());
    coroutine_set_stack_size(1024 * 1024);
    coroutine_pool_drain();
    free(cos);
}

/* ------------------------------------------------------------------------ */
/* locks */

static Coroutine *runq[256];
static unsigned runq_head;
static unsigned runq_tail;

static void coroutine_fn sched_yield_co(void)
{
    runq[runq_tail++ % 256] = coroutine_self();
    coroutine_yield();
}

static void sched_run(void)
{
    while (runq_head != runq_tail) {
        coroutine_enter(runq[runq_head++ % 256]);
    }
}

static CoMutex mtx;
static long counter;
static int calls[1000];
static int acquired[1000];
static int ncalls;
static int nacquired;

static void coroutine_fn mutex_worker(void *opaque)
{
    int id = (int)(intptr_t)opaque;

    for (int r = 0; r < 10; r++) {
        long v;

        calls[ncalls++] = id;
        co_mutex_lock(&mtx);
        acquired[nacquired++] = id;
        v = counter;
        sched_yield_co();
        counter = v + 1;
        co_mutex_unlock(&mtx);
    }
}

static void case_mutex_fifo(void)
{
    co_mutex_init(&mtx);
    for (int i = 0; i < 20; i++) {
        coroutine_enter(coroutine_create(mutex_worker, (void *)(intptr_t)i));
    }
    sched_run();
    CHECK(counter == 200);
    CHECK(ncalls == nacquired && memcmp(calls, acquired, sizeof(int) * (size_t)ncalls) == 0);
    CHECK(!co_mutex_is_locked(&mtx));
}

static CoRwlock rw;

static void coroutine_fn rw_step(void *opaque)
{
    char op = *(const char *)opaque;

    if (op == 'w') {
        co_rwlock_wrlock(&rw);
    } else {
        co_rwlock_rdlock(&rw);
    }
    trace(op);
    coroutine_yield();
    co_rwlock_unlock(&rw);
}

static void case_rwlock_fifo(void)
{
    static const char ops[4] = { 'r', 'w', 'R', 'S' };
    Coroutine *co[4];

    trace_reset();
    co_rwlock_init(&rw);
    for (int i = 0; i < 4; i++) {
        co[i] = coroutine_create(rw_step, (void *)&ops[i]);
        coroutine_enter(co[i]);
    }
    CHECK(strcmp(trace_buf, "r") == 0);
    coroutine_enter(co[0]);
    CHECK(strcmp(trace_buf, "rw") == 0);
    coroutine_enter(co[1]);
    CHECK(strcmp(trace_buf, "rwRS") == 0 && rw.readers == 2);
    coroutine_enter(co[2]);
    coroutine_enter(co[3]);
    CHECK(rw.readers == 0);
}

typedef struct Loop {
    int fds[2];
    int done;
} Loop;

static CoMutex xt_mtx = CO_MUTEX_INITIALIZER;
static long xt_counter;

static void loop_push(Loop *l, Coroutine *co)
{
    if (write(l->fds[1], &co, sizeof(co)) != sizeof(co)) {
        abort();
    }
}

static void remote_wake(Coroutine *co)
{
    loop_push((Loop *)coroutine_get_aio_context(co), co);
}

static void coroutine_fn xt_worker(void *opaque)
{
    Loop *l = opaque;

    for (int r = 0; r < 200; r++) {
        long v;

        co_mutex_lock(&xt_mtx);
        v = xt_counter;
        loop_push(l, coroutine_self());
        coroutine_yield();
        xt_counter = v + 1;
        co_mutex_unlock(&xt_mtx);
    }
    l->done++;
}

static void *xt_thread(void *arg)
{
    Loop *l = arg;

    coroutine_set_thread_ctx((struct AioContext *)l);
    for (int i = 0; i < 4; i++) {
        coroutine_enter(coroutine_create(xt_worker, l));
    }
    while (l->done < 4) {
        Coroutine *co;

        if (read(l->fds[0], &co, sizeof(co)) != sizeof(co)) {
            abort();
        }
        coroutine_enter(co);
    }
    return NULL;
}

static void case_cross_thread_mutex(void)
{
    Loop loops[2] = { 0 };
    pthread_t th[2];

    coroutine_set_remote_wake(remote_wake);
    for (int i = 0; i < 2; i++) {
        CHECK(pipe(loops[i].fds) == 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, xt_thread, &loops[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
    }
    coroutine_set_remote_wake(NULL);
    CHECK(xt_counter == 2 * 4 * 200);
}

int main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("backend: %s\n", COBLK_COROUTINE_BACKEND);
    run_case("lifecycle", case_lifecycle);
    run_case("nesting", case_nesting);
    run_case("wakeup_order", case_wakeup_order);
    run_case("bad_enter_aborts", case_bad_enter_aborts);
    run_case("guard_page", case_guard_page);
    run_case("fp_modes", case_fp_modes);
    run_case("many_alive_and_pool", case_many_alive_and_pool);
    run_case("mutex_fifo", case_mutex_fifo);
    run_case("rwlock_fifo", case_rwlock_fifo);
    run_case("cross_thread_mutex", case_cross_thread_mutex);
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
