/*
 * Helpers shared by the AioContext tests: every test runs once per fd
 * monitor (epoll, io_uring) through cmocka group state.
 */
#ifndef COBLK_AIO_TEST_UTIL_H
#define COBLK_AIO_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <coblk/aio.h>

static AioFdMonitor test_fdmon;

static inline AioContext *test_ctx_new(void)
{
    AioContextOpts opts = { .fdmon = test_fdmon };
    Error *err = NULL;
    AioContext *ctx = aio_context_new_opts(&opts, &err);

    if (!ctx) {
        fail_msg("aio_context_new: %s", error_get_pretty(err));
    }
    aio_context_set_current(ctx);
    return ctx;
}

static inline void test_ctx_free(AioContext *ctx)
{
    aio_context_unref(ctx);
    aio_context_set_current(NULL);
}

/* Polls (blocking) until *flag becomes non-zero. */
static inline void test_poll_until(AioContext *ctx, volatile int *flag)
{
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        aio_poll(ctx, true);
    }
}

static inline int group_epoll(void **state)
{
    test_fdmon = AIO_FDMON_EPOLL;
    return 0;
}

static inline int group_io_uring(void **state)
{
    test_fdmon = AIO_FDMON_IO_URING;
    return 0;
}

/* Runs the same table once per fd monitor. */
#define RUN_PER_FDMON(tests)                                                                  \
    (cmocka_run_group_tests_name("epoll", tests, group_epoll, NULL) |                         \
     cmocka_run_group_tests_name("io_uring", tests, group_io_uring, NULL))

/* Runs fn in a child and returns its wait status (for abort-on-misuse tests). */
static inline int test_fork_status(void (*fn)(void))
{
    pid_t pid = fork();
    int status = 0;

    if (pid == 0) {
        /* Keep the expected abort message out of the test log's noise. */
        freopen("/dev/null", "w", stderr);
        fn();
        _exit(0);
    }
    waitpid(pid, &status, 0);
    return status;
}

#endif /* COBLK_AIO_TEST_UTIL_H */
