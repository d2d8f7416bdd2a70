/*
 * Unit tests: coroutine lifecycle, switching, wake-up queue, stacks and pools
 * (coroutine/coroutine.c, coroutine/pool.c, coroutine/switch-*).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "coblk-config.h"
#include "coroutine/coroutine-int.h"

#if defined(__x86_64__)
#include <xmmintrin.h>
#endif
#if COBLK_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#define UNDER_VALGRIND() RUNNING_ON_VALGRIND
#else
#define UNDER_VALGRIND() 0
#endif

/* ------------------------------------------------------------------------ */
/* helpers */

#define TRACE_MAX 64

typedef struct Trace {
    char buf[TRACE_MAX];
    size_t len;
} Trace;

static void trace(Trace *t, char c)
{
    assert_true(t->len + 1 < TRACE_MAX);
    t->buf[t->len++] = c;
    t->buf[t->len] = '\0';
}

typedef void ChildFn(void *arg);

/*
 * Runs fn(arg) in a child process and returns its wait status; the child's
 * stderr is captured in msg (NUL-terminated).
 */
static int run_child(ChildFn *fn, void *arg, char *msg, size_t msg_size)
{
    int fds[2];
    pid_t pid;
    int status;
    size_t len = 0;
    ssize_t n;

    assert_int_equal(pipe(fds), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        fn(arg);
        _exit(0);
    }
    close(fds[1]);
    while (len + 1 < msg_size && (n = read(fds[0], msg + len, msg_size - 1 - len)) > 0) {
        len += (size_t)n;
    }
    msg[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

static void assert_killed_by(int status, int sig)
{
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), sig);
}

static size_t read_statm_field(int field)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long v[2] = { 0, 0 };

    assert_non_null(f);
    assert_int_equal(fscanf(f, "%lu %lu", &v[0], &v[1]), 2);
    fclose(f);
    return (size_t)v[field] * (size_t)sysconf(_SC_PAGESIZE);
}

/* ------------------------------------------------------------------------ */
/* lifecycle and nesting */

typedef struct LifeState {
    Trace t;
    Coroutine *self_seen;
    bool in_co_seen;
} LifeState;

static void coroutine_fn life_entry(void *opaque)
{
    LifeState *s = opaque;

    s->self_seen = coroutine_self();
    s->in_co_seen = coroutine_in_coroutine();
    trace(&s->t, 'a');
    coroutine_yield();
    trace(&s->t, 'b');
    coroutine_yield();
    trace(&s->t, 'c');
}

static void test_coroutine_lifecycle(void **state)
{
    LifeState s = { 0 };
    Coroutine *co = coroutine_create(life_entry, &s);

    assert_false(coroutine_is_yielded(co));
    coroutine_enter(co);
    assert_string_equal(s.t.buf, "a");
    assert_true(coroutine_is_yielded(co));
    trace(&s.t, '1');
    coroutine_enter(co);
    trace(&s.t, '2');
    coroutine_enter(co);
    assert_string_equal(s.t.buf, "a1b2c");
    assert_ptr_equal(s.self_seen, co);
    assert_true(s.in_co_seen);
}

static void test_coroutine_self_outside(void **state)
{
    assert_null(coroutine_self());
    assert_false(coroutine_in_coroutine());
}

typedef struct NestState {
    Trace t;
    Coroutine *inner;
    Coroutine *inner_caller_seen;
} NestState;

static void coroutine_fn nest_inner(void *opaque)
{
    NestState *s = opaque;

    trace(&s->t, 'i');
    coroutine_yield();          /* back to outer */
    trace(&s->t, 'j');
}

static void coroutine_fn nest_outer(void *opaque)
{
    NestState *s = opaque;
    Coroutine *me = coroutine_self();

    trace(&s->t, 'o');
    s->inner = coroutine_create(nest_inner, s);
    coroutine_enter(s->inner);
    s->inner_caller_seen = coroutine_self();
    assert_ptr_equal(coroutine_self(), me);
    trace(&s->t, 'p');
    coroutine_yield();          /* back to the test */
    trace(&s->t, 'q');
    coroutine_enter(s->inner);  /* inner finishes */
    trace(&s->t, 'r');
}

static void test_coroutine_nesting(void **state)
{
    NestState s = { 0 };
    Coroutine *outer = coroutine_create(nest_outer, &s);

    coroutine_enter(outer);
    assert_string_equal(s.t.buf, "oip");
    assert_ptr_equal(s.inner_caller_seen, outer);
    assert_true(coroutine_is_yielded(s.inner));
    assert_null(coroutine_self());
    coroutine_enter(outer);
    assert_string_equal(s.t.buf, "oipqjr");
    assert_null(coroutine_self());
}

/* Three coroutines yielding in turn: each resumes exactly where it left off. */
typedef struct OrderArg {
    Trace *t;
    char name;
} OrderArg;

static void coroutine_fn order_entry(void *opaque)
{
    OrderArg *a = opaque;

    for (int i = 0; i < 3; i++) {
        trace(a->t, (char)(a->name + i));
        coroutine_yield();
    }
}

static void test_coroutine_yield_enter_order(void **state)
{
    Trace t = { 0 };
    OrderArg args[3] = { { &t, 'a' }, { &t, 'k' }, { &t, 'x' } };
    Coroutine *co[3];

    for (int i = 0; i < 3; i++) {
        co[i] = coroutine_create(order_entry, &args[i]);
    }
    for (int round = 0; round < 4; round++) {
        for (int i = 2; i >= 0; i--) {
            coroutine_enter(co[i]);
        }
    }
    assert_string_equal(t.buf, "xkaylbzmc");
}

static void coroutine_fn yield_once(void *opaque)
{
    int *count = opaque;

    (*count)++;
    coroutine_yield();
    (*count)++;
}

static void test_coroutine_enter_if_inactive(void **state)
{
    int count = 0;
    Coroutine *co = coroutine_create(yield_once, &count);

    coroutine_enter_if_inactive(co);  /* created: entered */
    assert_int_equal(count, 1);
    coroutine_enter_if_inactive(co);  /* yielded: entered, terminates */
    assert_int_equal(count, 2);
}

static void coroutine_fn self_enter_if_inactive(void *opaque)
{
    int *count = opaque;

    coroutine_enter_if_inactive(coroutine_self());  /* running: no-op */
    (*count)++;
}

static void test_coroutine_enter_if_inactive_running(void **state)
{
    int count = 0;

    coroutine_enter(coroutine_create(self_enter_if_inactive, &count));
    assert_int_equal(count, 1);
}

/* ------------------------------------------------------------------------ */
/* home context and wake-up queue */

static int fake_ctx_a;
static int fake_ctx_b;
#define CTX_A ((struct AioContext *)&fake_ctx_a)
#define CTX_B ((struct AioContext *)&fake_ctx_b)

static void test_coroutine_home_ctx(void **state)
{
    int count = 0;
    Coroutine *co = coroutine_create(yield_once, &count);

    assert_null(coroutine_get_aio_context(co));
    coroutine_set_thread_ctx(CTX_A);
    assert_ptr_equal(coroutine_thread_ctx(), CTX_A);
    coroutine_enter(co);
    assert_ptr_equal(coroutine_get_aio_context(co), CTX_A);
    coroutine_set_thread_ctx(NULL);
    /* Entered outside any context: the old home is kept. */
    coroutine_enter(co);
    assert_int_equal(count, 2);
}

typedef struct WakeState {
    Trace t;
    Coroutine *sleepers[3];
} WakeState;

typedef struct SleeperArg {
    WakeState *s;
    char name;
} SleeperArg;

static void coroutine_fn sleeper_entry(void *opaque)
{
    SleeperArg *a = opaque;

    coroutine_yield();
    trace(&a->s->t, a->name);
}

static void coroutine_fn waker_entry(void *opaque)
{
    WakeState *s = opaque;

    coroutine_wake_internal(s->sleepers[1]);
    coroutine_wake_internal(s->sleepers[0]);
    coroutine_wake_internal(s->sleepers[2]);
    trace(&s->t, 'W');          /* nobody woken runs before we yield */
    coroutine_yield();
    trace(&s->t, 'Z');
}

static void test_coroutine_wakeup_queue_order(void **state)
{
    WakeState s = { 0 };
    SleeperArg args[3] = { { &s, '0' }, { &s, '1' }, { &s, '2' } };
    Coroutine *waker;

    for (int i = 0; i < 3; i++) {
        s.sleepers[i] = coroutine_create(sleeper_entry, &args[i]);
        coroutine_enter(s.sleepers[i]);
    }
    waker = coroutine_create(waker_entry, &s);
    coroutine_enter(waker);
    assert_string_equal(s.t.buf, "W102");
    coroutine_enter(waker);
    assert_string_equal(s.t.buf, "W102Z");
}

static void test_coroutine_wake_outside_enters_at_once(void **state)
{
    int count = 0;
    Coroutine *co = coroutine_create(yield_once, &count);

    coroutine_enter(co);
    coroutine_wake_internal(co);
    assert_int_equal(count, 2);
}

static Coroutine *remote_woken;

static void record_remote_wake(Coroutine *co)
{
    remote_woken = co;
}

static void test_coroutine_wake_other_ctx_uses_hook(void **state)
{
    int count = 0;
    Coroutine *co = coroutine_create(yield_once, &count);

    coroutine_set_thread_ctx(CTX_A);
    coroutine_enter(co);
    coroutine_set_thread_ctx(CTX_B);
    coroutine_set_remote_wake(record_remote_wake);
    coroutine_wake_internal(co);
    assert_ptr_equal(remote_woken, co);
    assert_int_equal(count, 1);
    coroutine_set_remote_wake(NULL);
    coroutine_set_thread_ctx(CTX_A);
    coroutine_wake_internal(co);   /* home thread again: entered at once */
    assert_int_equal(count, 2);
    coroutine_set_thread_ctx(NULL);
}

/* ------------------------------------------------------------------------ */
/* caught errors (in a child process) */

static void coroutine_fn enter_self(void *opaque)
{
    coroutine_enter(coroutine_self());
}

static void child_enter_running(void *arg)
{
    coroutine_enter(coroutine_create(enter_self, NULL));
}

static void test_coroutine_enter_running_aborts(void **state)
{
    char msg[512];
    int status = run_child(child_enter_running, NULL, msg, sizeof(msg));

    assert_killed_by(status, SIGABRT);
    assert_non_null(strstr(msg, "already running"));
}

static void coroutine_fn nop_entry(void *opaque)
{
}

static void child_enter_terminated(void *arg)
{
    Coroutine *co = coroutine_create(nop_entry, NULL);

    coroutine_enter(co);
    coroutine_enter(co);
}

static void test_coroutine_enter_terminated_aborts(void **state)
{
    char msg[512];
    int status;

    if (!coroutine_pools_enabled()) {
        skip(); /* without pools the stack is unmapped: ASan reports the use after free */
    }
    status = run_child(child_enter_terminated, NULL, msg, sizeof(msg));
    assert_killed_by(status, SIGABRT);
    assert_non_null(strstr(msg, "has terminated"));
}

static void child_yield_outside(void *arg)
{
    coroutine_yield();
}

static void test_coroutine_yield_outside_aborts(void **state)
{
    char msg[512];
    int status = run_child(child_yield_outside, NULL, msg, sizeof(msg));

    assert_killed_by(status, SIGABRT);
    assert_non_null(strstr(msg, "outside coroutine context"));
}

static void child_wake_without_hook(void *arg)
{
    int count = 0;
    Coroutine *co = coroutine_create(yield_once, &count);

    coroutine_set_thread_ctx(CTX_A);
    coroutine_enter(co);
    coroutine_set_thread_ctx(CTX_B);
    coroutine_wake_internal(co);
}

static void test_coroutine_wake_without_hook_aborts(void **state)
{
    char msg[512];
    int status = run_child(child_wake_without_hook, NULL, msg, sizeof(msg));

    assert_killed_by(status, SIGABRT);
    assert_non_null(strstr(msg, "remote-wake hook"));
}

static Coroutine *double_woken;

static void coroutine_fn wake_twice(void *opaque)
{
    coroutine_wake_internal(double_woken);
    coroutine_wake_internal(double_woken);
}

static void child_wake_twice(void *arg)
{
    int count = 0;

    double_woken = coroutine_create(yield_once, &count);
    coroutine_enter(double_woken);
    coroutine_enter(coroutine_create(wake_twice, NULL));
}

static void test_coroutine_double_wake_aborts(void **state)
{
    char msg[512];
    int status = run_child(child_wake_twice, NULL, msg, sizeof(msg));

    assert_killed_by(status, SIGABRT);
    assert_non_null(strstr(msg, "already woken"));
}

static unsigned recurse(unsigned depth)
{
    volatile char frame[512];

    frame[0] = (char)depth;
    if (depth == 0) {
        return frame[0];
    }
    return recurse(depth - 1) + frame[0];
}

static void coroutine_fn overflow_entry(void *opaque)
{
    /* 64 KiB stack, ~600 bytes a frame: 1000 frames go through the guard page. */
    *(volatile unsigned *)opaque = recurse(1000);
}

static void child_overflow(void *arg)
{
    unsigned result = 0;

    signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn it into an exit */
    assert_int_equal(coroutine_set_stack_size(64 * 1024), 0);
    coroutine_enter(coroutine_create(overflow_entry, &result));
}

static void test_coroutine_guard_page_segv(void **state)
{
    char msg[4096];
    int status = run_child(child_overflow, NULL, msg, sizeof(msg));

    assert_killed_by(status, SIGSEGV);
}

static void coroutine_fn touch_below_stack(void *opaque)
{
    Coroutine *co = coroutine_self();

    ((volatile char *)co->stack)[-1] = 1;
}

static void child_touch_guard(void *arg)
{
    signal(SIGSEGV, SIG_DFL);
    coroutine_enter(coroutine_create(touch_below_stack, NULL));
}

static void test_coroutine_guard_page_below_stack(void **state)
{
    char msg[4096];
    int status = run_child(child_touch_guard, NULL, msg, sizeof(msg));

    assert_killed_by(status, SIGSEGV);
}

/* ------------------------------------------------------------------------ */
/* floating-point control modes are per coroutine */

#if defined(__x86_64__)
#define FP_MODES 2
static unsigned fp_get(int which)
{
    uint16_t cw;

    if (which == 0) {
        return _mm_getcsr() & 0x6000u;       /* MXCSR rounding control */
    }
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    return cw & 0x0c00u;                     /* x87 rounding control */
}

static void fp_set(int which, unsigned mode)
{
    uint16_t cw;

    if (which == 0) {
        _mm_setcsr((_mm_getcsr() & ~0x6000u) | (mode & 0x6000u));
        return;
    }
    __asm__ __volatile__("fnstcw %0" : "=m"(cw));
    cw = (uint16_t)((cw & ~0x0c00u) | (mode & 0x0c00u));
    __asm__ __volatile__("fldcw %0" : : "m"(cw));
}

static const unsigned fp_modes[FP_MODES][3] = {
    { 0x0000u, 0x2000u, 0x6000u },  /* nearest, down, toward zero */
    { 0x0000u, 0x0400u, 0x0c00u },
};
#elif defined(__aarch64__)
#define FP_MODES 1
static unsigned fp_get(int which)
{
    return (unsigned)__builtin_aarch64_get_fpcr() & (3u << 22); /* FPCR.RMode */
}

static void fp_set(int which, unsigned mode)
{
    __builtin_aarch64_set_fpcr((__builtin_aarch64_get_fpcr() & ~(3u << 22)) | mode);
}

static const unsigned fp_modes[FP_MODES][3] = {
    { 0u, 2u << 22, 3u << 22 },
};
#else
#define FP_MODES 0
#endif

#if FP_MODES > 0
typedef struct FpState {
    int which;
    unsigned seen[2];
} FpState;

static void coroutine_fn fp_entry(void *opaque)
{
    FpState *s = opaque;

    fp_set(s->which, fp_modes[s->which][2]);
    coroutine_yield();
    s->seen[0] = fp_get(s->which);
    coroutine_yield();
    s->seen[1] = fp_get(s->which);
    fp_set(s->which, fp_modes[s->which][0]);
}
#endif

static void test_coroutine_fp_control_preserved(void **state)
{
#if FP_MODES > 0
    for (int which = 0; which < FP_MODES; which++) {
        FpState s = { .which = which };
        unsigned saved = fp_get(which);
        Coroutine *co = coroutine_create(fp_entry, &s);

        fp_set(which, fp_modes[which][1]);
        coroutine_enter(co);
        assert_int_equal(fp_get(which), fp_modes[which][1]);
        fp_set(which, fp_modes[which][0]);
        coroutine_enter(co);
        assert_int_equal(fp_get(which), fp_modes[which][0]);
        coroutine_enter(co);
        assert_int_equal(fp_get(which), fp_modes[which][0]);
        assert_int_equal(s.seen[0], fp_modes[which][2]);
        assert_int_equal(s.seen[1], fp_modes[which][2]);
        fp_set(which, saved);
    }
#else
    skip();
#endif
}

/* ------------------------------------------------------------------------ */
/* stacks and pools */

#define MANY 100000

static void coroutine_fn many_entry(void *opaque)
{
    volatile char buf[256];
    unsigned *alive = opaque;

    buf[0] = 1;
    (*alive)++;
    coroutine_yield();
    (*alive) -= buf[0];
}

static void test_coroutine_100k_alive(void **state)
{
    const size_t stack = 64 * 1024;
    Coroutine **cos = calloc(MANY, sizeof(*cos));
    unsigned alive = 0;
    size_t vm0;
    size_t rss0;
    size_t vm1;
    size_t rss1;

    assert_non_null(cos);
    assert_int_equal(coroutine_set_stack_size(stack), 0);
    vm0 = read_statm_field(0);
    rss0 = read_statm_field(1);
    for (size_t i = 0; i < MANY; i++) {
        cos[i] = coroutine_create(many_entry, &alive);
        coroutine_enter(cos[i]);
    }
    vm1 = read_statm_field(0);
    rss1 = read_statm_field(1);
    assert_int_equal(alive, MANY);
    /* The stacks are reserved address space... */
    assert_true(vm1 - vm0 >= (size_t)MANY * stack);
    /* ...of which only the few pages touched are resident (valgrind adds its own). */
    if (!UNDER_VALGRIND()) {
        assert_true(rss1 - rss0 < (size_t)MANY * stack / 4);
    }
    for (size_t i = 0; i < MANY; i++) {
        coroutine_enter(cos[i]);
    }
    assert_int_equal(alive, 0);
    assert_int_equal(coroutine_set_stack_size(1024 * 1024), 0);
    coroutine_pool_drain();
    free(cos);
}

static void test_coroutine_pool_reuse(void **state)
{
    CoroutinePoolStats a;
    CoroutinePoolStats b;

    coroutine_pool_drain();
    coroutine_enter(coroutine_create(nop_entry, NULL));
    coroutine_pool_stats(&a);
    if (coroutine_pools_enabled()) {
        assert_int_equal(a.local_free, 1);
    }
    for (int i = 0; i < 10000; i++) {
        coroutine_enter(coroutine_create(nop_entry, NULL));
    }
    coroutine_pool_stats(&b);
    if (coroutine_pools_enabled()) {
        assert_int_equal(b.created, a.created);      /* no new stack */
        assert_int_equal(b.destroyed, a.destroyed);
        assert_int_equal(b.local_free, 1);
    } else {
        assert_int_equal(b.created - a.created, 10000);
        assert_int_equal(b.destroyed - a.destroyed, 10000);
        assert_int_equal(b.local_free, 0);
    }
}

static void test_coroutine_pool_overflow_and_drain(void **state)
{
    enum { N = 600 };
    Coroutine *cos[N];
    int counts[N];
    CoroutinePoolStats st;

    if (!coroutine_pools_enabled()) {
        skip();
    }
    coroutine_pool_drain();
    for (int i = 0; i < N; i++) {
        counts[i] = 0;
        cos[i] = coroutine_create(yield_once, &counts[i]);
        coroutine_enter(cos[i]);
    }
    for (int i = 0; i < N; i++) {
        coroutine_enter(cos[i]);
    }
    coroutine_pool_stats(&st);
    /* The local pool is capped; the surplus went to the shared pool in batches. */
    assert_true(st.local_free <= 256);
    assert_true(st.shared_free > 0);
    assert_int_equal(st.local_free + st.shared_free, N);
    coroutine_pool_drain();
    coroutine_pool_stats(&st);
    assert_int_equal(st.local_free, 0);
    assert_int_equal(st.shared_free, 0);
}

static void *thread_make_pool(void *arg)
{
    int count = 0;
    Coroutine *co[4];

    for (int i = 0; i < 4; i++) {
        co[i] = coroutine_create(yield_once, &count);
        coroutine_enter(co[i]);
    }
    for (int i = 0; i < 4; i++) {
        coroutine_enter(co[i]);
    }
    return (void *)(intptr_t)count;
}

static void test_coroutine_thread_exit_moves_pool(void **state)
{
    pthread_t th;
    void *ret;
    CoroutinePoolStats st;

    if (!coroutine_pools_enabled()) {
        skip();
    }
    coroutine_pool_drain();
    assert_int_equal(pthread_create(&th, NULL, thread_make_pool, NULL), 0);
    assert_int_equal(pthread_join(th, &ret), 0);
    assert_int_equal((intptr_t)ret, 8);
    coroutine_pool_stats(&st);
    assert_int_equal(st.shared_free, 4);
    assert_int_equal(st.local_free, 0);
    /* And this thread refills from the shared pool without mapping. */
    {
        CoroutinePoolStats after;

        coroutine_enter(coroutine_create(nop_entry, NULL));
        coroutine_pool_stats(&after);
        assert_int_equal(after.created, st.created);
        assert_int_equal(after.shared_free, 0);
        assert_int_equal(after.local_free, 4);
    }
    coroutine_pool_drain();
}

typedef struct MigrateState {
    pid_t threads[2];           /* gettid(): pthread_self() is const, so it may be cached */
    int step;
} MigrateState;

static void coroutine_fn migrate_entry(void *opaque)
{
    MigrateState *s = opaque;

    s->threads[0] = gettid();
    coroutine_yield();
    s->threads[1] = gettid();
    s->step = 2;
}

static pid_t thread_enter_tid;

static void *thread_enter(void *arg)
{
    thread_enter_tid = gettid();
    coroutine_enter(arg);
    return NULL;
}

static void test_coroutine_resume_on_other_thread(void **state)
{
    MigrateState s = { 0 };
    Coroutine *co = coroutine_create(migrate_entry, &s);
    pthread_t th;

    coroutine_enter(co);
    assert_int_equal(pthread_create(&th, NULL, thread_enter, co), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    assert_int_equal(s.step, 2);
    assert_int_equal(s.threads[0], gettid());
    assert_int_equal(s.threads[1], thread_enter_tid);
    assert_null(coroutine_self());
}

static void test_coroutine_stack_size(void **state)
{
    Coroutine *co;

    assert_int_equal(coroutine_set_stack_size(SIZE_MAX), -EINVAL);
    assert_int_equal(coroutine_set_stack_size(1000), 0); /* raised to the minimum */
    co = coroutine_create(nop_entry, NULL);
    assert_true(co->stack_size >= 8 * 1024);
    assert_true(co->stack_size <= 16 * 1024);
    coroutine_enter(co);
    assert_int_equal(coroutine_set_stack_size(256 * 1024 + 1), 0);
    co = coroutine_create(nop_entry, NULL);
    assert_true(co->stack_size > 256 * 1024 - 4096);
    assert_true(co->stack_size <= 256 * 1024 + 4096);
    coroutine_enter(co);
    assert_int_equal(coroutine_set_stack_size(1024 * 1024), 0);
    co = coroutine_create(nop_entry, NULL);
    assert_true(co->stack_size > 1024 * 1024 - 4096);
    coroutine_enter(co);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coroutine_lifecycle),
        cmocka_unit_test(test_coroutine_self_outside),
        cmocka_unit_test(test_coroutine_nesting),
        cmocka_unit_test(test_coroutine_yield_enter_order),
        cmocka_unit_test(test_coroutine_enter_if_inactive),
        cmocka_unit_test(test_coroutine_enter_if_inactive_running),
        cmocka_unit_test(test_coroutine_home_ctx),
        cmocka_unit_test(test_coroutine_wakeup_queue_order),
        cmocka_unit_test(test_coroutine_wake_outside_enters_at_once),
        cmocka_unit_test(test_coroutine_wake_other_ctx_uses_hook),
        cmocka_unit_test(test_coroutine_enter_running_aborts),
        cmocka_unit_test(test_coroutine_enter_terminated_aborts),
        cmocka_unit_test(test_coroutine_yield_outside_aborts),
        cmocka_unit_test(test_coroutine_wake_without_hook_aborts),
        cmocka_unit_test(test_coroutine_double_wake_aborts),
        cmocka_unit_test(test_coroutine_guard_page_segv),
        cmocka_unit_test(test_coroutine_guard_page_below_stack),
        cmocka_unit_test(test_coroutine_fp_control_preserved),
        cmocka_unit_test(test_coroutine_100k_alive),
        cmocka_unit_test(test_coroutine_pool_reuse),
        cmocka_unit_test(test_coroutine_pool_overflow_and_drain),
        cmocka_unit_test(test_coroutine_thread_exit_moves_pool),
        cmocka_unit_test(test_coroutine_resume_on_other_thread),
        cmocka_unit_test(test_coroutine_stack_size),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
