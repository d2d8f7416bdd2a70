/*
 * Unit tests: driving an AioContext from a foreign poll() loop through the
 * one-fd interface (aio_get_fd / aio_prepare / aio_dispatch).
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>

#include "aio-test-util.h"

/* One iteration of a plain poll() main loop that embeds ctx. */
static void foreign_iteration(AioContext *ctx)
{
    struct pollfd pfd = { .fd = aio_get_fd(ctx), .events = POLLIN };
    int64_t ns = aio_prepare(ctx);
    int ms = ns < 0 ? -1 : (int)((ns + 999999) / 1000000);

    poll(&pfd, 1, ms);
    aio_dispatch(ctx);
}

static void count_bh(void *opaque)
{
    atomic_fetch_add((atomic_int *)opaque, 1);
}

static void *bh_thread(void *opaque)
{
    void **args = opaque;

    for (int i = 0; i < 1000; i++) {
        aio_bh_schedule_oneshot(args[0], count_bh, args[1]);
    }
    return NULL;
}

static void test_aio_embed_bh_from_thread(void **state)
{
    AioContext *ctx = test_ctx_new();
    atomic_int n = 0;
    void *args[2] = { ctx, &n };
    pthread_t th;

    pthread_create(&th, NULL, bh_thread, args);
    while (atomic_load(&n) < 1000) {
        foreign_iteration(ctx);
    }
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&n), 1000);
    test_ctx_free(ctx);
}

static void set_flag(void *opaque)
{
    *(int *)opaque = 1;
}

static void test_aio_embed_timer_deadline(void **state)
{
    AioContext *ctx = test_ctx_new();
    AioTimer t;
    int fired = 0;
    int64_t start = aio_clock_ns();
    int64_t ns;

    aio_timer_init(&t, ctx, set_flag, &fired);
    aio_timer_mod(&t, start + 3000000);
    ns = aio_prepare(ctx);
    assert_true(ns > 0 && ns <= 3000000);
    while (!fired) {
        foreign_iteration(ctx);
    }
    assert_true(aio_clock_ns() - start >= 3000000);
    /* Nothing armed any more: the loop may sleep forever. */
    assert_int_equal(aio_prepare(ctx), -1);
    test_ctx_free(ctx);
}

typedef struct Reader {
    int fd;
    int got;
} Reader;

static void reader_cb(void *opaque)
{
    Reader *r = opaque;
    char buf[16];

    if (read(r->fd, buf, sizeof(buf)) > 0) {
        r->got++;
    }
}

static void test_aio_embed_fd_handler(void **state)
{
    AioContext *ctx = test_ctx_new();
    int fds[2];
    Reader r;

    assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
    r.fd = fds[0];
    r.got = 0;
    aio_set_fd_handler(ctx, fds[0], reader_cb, NULL, NULL, NULL, &r);
    assert_int_equal(write(fds[1], "q", 1), 1);
    while (!r.got) {
        foreign_iteration(ctx);
    }
    aio_set_fd_handler(ctx, fds[0], NULL, NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
    test_ctx_free(ctx);
}

static void coroutine_fn napper(void *opaque)
{
    co_sleep_ns(1000000);
    *(int *)opaque = 1;
}

static void test_aio_embed_coroutine_sleep(void **state)
{
    AioContext *ctx = test_ctx_new();
    int done = 0;

    aio_co_enter(ctx, coroutine_create(napper, &done));
    while (!done) {
        foreign_iteration(ctx);
    }
    test_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aio_embed_bh_from_thread),
        cmocka_unit_test(test_aio_embed_timer_deadline),
        cmocka_unit_test(test_aio_embed_fd_handler),
        cmocka_unit_test(test_aio_embed_coroutine_sleep),
    };

    return RUN_PER_FDMON(tests);
}
