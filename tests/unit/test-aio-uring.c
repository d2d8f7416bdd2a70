/*
 * The io_uring engine's ring setup: the setup flags it asks for, the
 * fallback when the kernel refuses them, and completion task_work (which
 * COOP_TASKRUN no longer delivers by IPI) reaching a loop that sleeps, busy
 * polls, or runs in an IOThread. Skips (77) where io_uring is unavailable.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <string.h>

#include "aio-test-util.h"

#include <coblk/aio-io.h>

#include "aio/engine-int.h"

#define COOP (IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG)
#define MSG "task_work reached the loop"

/* ---------------------------------------------------------------------- */
/* A read on an empty pipe: it completes only once another thread writes,
 * through poll and completion task_work on the submitting thread. */

typedef struct PipeRead {
    AioEngine *e;
    int fd;
    char buf[64];
    int64_t ret;
    int done;
} PipeRead;

static void coroutine_fn pipe_read_co(void *opaque)
{
    PipeRead *r = opaque;
    struct iovec iov = { r->buf, sizeof(r->buf) };

    r->ret = aio_co_preadv(r->e, r->fd, 0, &iov, 1);
    __atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
}

static void *writer_thread(void *opaque)
{
    int fd = *(int *)opaque;

    /* Not synchronisation: it only makes it likely that the loop is already
     * waiting (asleep or busy polling) when the completion arrives. */
    usleep(20000);
    if (write(fd, MSG, sizeof(MSG)) != (ssize_t)sizeof(MSG)) {
        abort();
    }
    return NULL;
}

typedef enum WaitMode { WAIT_BLOCKING, WAIT_BUSY } WaitMode;

/* Reads MSG from a pipe written by another thread while ctx waits in mode. */
static void pipe_read_in(AioContext *ctx, AioEngine *e, WaitMode mode)
{
    int p[2];
    pthread_t t;
    PipeRead r = { .e = e };

    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    r.fd = p[0];
    aio_co_enter(ctx, coroutine_create(pipe_read_co, &r));
    assert_int_equal(pthread_create(&t, NULL, writer_thread, &p[1]), 0);
    while (!__atomic_load_n(&r.done, __ATOMIC_ACQUIRE)) {
        aio_poll(ctx, mode == WAIT_BLOCKING);
    }
    pthread_join(t, NULL);
    assert_int_equal(r.ret, sizeof(MSG));
    assert_string_equal(r.buf, MSG);
    close(p[0]);
    close(p[1]);
}

/* A context of test_fdmon with an io_uring engine whose ring refuses refuse. */
static AioEngine *uring_engine_refusing(AioContext **ctx, unsigned refuse)
{
    AioEngine *e;
    Error *err = NULL;

    aio_io_uring_refuse_setup_flags(refuse);
    *ctx = test_ctx_new();
    e = aio_get_engine(*ctx, AIO_ENGINE_IO_URING, true, &err);
    aio_io_uring_refuse_setup_flags(0);
    if (!e) {
        fail_msg("io_uring engine: %s", error_get_pretty(err));
    }
    return e;
}

/* ---------------------------------------------------------------------- */

static void test_aio_uring_default_flags(void **state)
{
    AioContext *ctx;
    AioEngine *e = uring_engine_refusing(&ctx, 0);
    unsigned flags = aio_io_uring_setup_flags(e);

    /* Kernels since 5.19 take them all; older ones fall back (tested below). */
    if (flags & IORING_SETUP_COOP_TASKRUN) {
        assert_int_equal(flags & (COOP | IORING_SETUP_SUBMIT_ALL),
                         COOP | IORING_SETUP_SUBMIT_ALL);
    }
    pipe_read_in(ctx, e, WAIT_BLOCKING);
    test_ctx_free(ctx);
}

static void test_aio_uring_refused_coop_falls_back(void **state)
{
    AioContext *ctx;
    AioEngine *e = uring_engine_refusing(&ctx, IORING_SETUP_COOP_TASKRUN);

    assert_int_equal(aio_io_uring_setup_flags(e) & COOP, 0);
    pipe_read_in(ctx, e, WAIT_BLOCKING);
    pipe_read_in(ctx, e, WAIT_BUSY);
    test_ctx_free(ctx);
}

static void test_aio_uring_refused_all_flags_falls_back(void **state)
{
    AioContext *ctx;
    AioEngine *e = uring_engine_refusing(&ctx, COOP | IORING_SETUP_SUBMIT_ALL);

    assert_int_equal(aio_io_uring_setup_flags(e) & (COOP | IORING_SETUP_SUBMIT_ALL), 0);
    pipe_read_in(ctx, e, WAIT_BLOCKING);
    test_ctx_free(ctx);
}

/* The loop sleeps in the fd monitor when the completion's task_work is queued. */
static void test_aio_uring_task_work_wakes_blocked_loop(void **state)
{
    AioContext *ctx;
    AioEngine *e = uring_engine_refusing(&ctx, 0);

    aio_context_set_poll_params(ctx, 0, 0, 0); /* no busy polling: it must sleep */
    for (int i = 0; i < 3; i++) {
        pipe_read_in(ctx, e, WAIT_BLOCKING);
    }
    test_ctx_free(ctx);
}

/* The loop spins in non-blocking aio_poll(): the TASKRUN flag gets it run. */
static void test_aio_uring_task_work_reaches_busy_loop(void **state)
{
    AioContext *ctx;
    AioEngine *e = uring_engine_refusing(&ctx, 0);

    for (int i = 0; i < 3; i++) {
        pipe_read_in(ctx, e, WAIT_BUSY);
    }
    test_ctx_free(ctx);
}

/* ---------------------------------------------------------------------- */
/* An IOThread's ring: created and driven by the IOThread. */

typedef struct IoThreadCase {
    AioContext *ctx;
    AioContext *main_ctx;
    unsigned flags;
    PipeRead r;
    int wfd;
    int done;
} IoThreadCase;

static void set_done(void *opaque)
{
    ((IoThreadCase *)opaque)->done = 1;
}

/* Runs in the IOThread: its engine, hence its ring, is created there. */
static void coroutine_fn iothread_co(void *opaque)
{
    IoThreadCase *c = opaque;
    pthread_t t;

    c->r.e = aio_get_engine(c->ctx, AIO_ENGINE_IO_URING, true, NULL);
    if (c->r.e) {
        c->flags = aio_io_uring_setup_flags(c->r.e);
        if (pthread_create(&t, NULL, writer_thread, &c->wfd) == 0) {
            pipe_read_co(&c->r);
            pthread_join(t, NULL);
        }
    }
    aio_bh_schedule_oneshot(c->main_ctx, set_done, c);
}

static void test_aio_uring_iothread_ring(void **state)
{
    AioContext *main_ctx = test_ctx_new();
    IOThread *it = iothread_new("uring-test", NULL);
    IoThreadCase c = { .main_ctx = main_ctx };
    int p[2];

    assert_non_null(it);
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    c.r.fd = p[0];
    c.wfd = p[1];
    c.ctx = iothread_get_aio_context(it);
    aio_co_schedule(c.ctx, coroutine_create(iothread_co, &c));
    test_poll_until(main_ctx, &c.done);
    iothread_join(it);
    assert_non_null(c.r.e);
    if (c.flags & IORING_SETUP_COOP_TASKRUN) {
        assert_int_equal(c.flags & COOP, COOP);
    }
    assert_int_equal(c.r.ret, sizeof(MSG));
    assert_string_equal(c.r.buf, MSG);
    close(p[0]);
    close(p[1]);
    test_ctx_free(main_ctx);
}

/* ---------------------------------------------------------------------- */

#define URING_TESTS                                                    \
    cmocka_unit_test(test_aio_uring_default_flags),                    \
    cmocka_unit_test(test_aio_uring_refused_coop_falls_back),          \
    cmocka_unit_test(test_aio_uring_refused_all_flags_falls_back),     \
    cmocka_unit_test(test_aio_uring_task_work_wakes_blocked_loop),     \
    cmocka_unit_test(test_aio_uring_task_work_reaches_busy_loop),      \
    cmocka_unit_test(test_aio_uring_iothread_ring)

int main(void)
{
    const struct CMUnitTest tests[] = { URING_TESTS };
    AioContext *probe = aio_context_new(NULL);
    bool have = probe && aio_get_engine(probe, AIO_ENGINE_IO_URING, true, NULL);
    int failed;

    if (probe) {
        aio_context_unref(probe);
    }
    aio_context_set_current(NULL);
    if (!have) {
        print_message("[  SKIPPED ] io_uring engine unavailable\n");
        return 77;
    }
    failed = cmocka_run_group_tests_name("aio-uring epoll", tests, group_epoll, NULL);
    failed |= cmocka_run_group_tests_name("aio-uring io_uring", tests, group_io_uring, NULL);
    return failed;
}
