/* Unit tests: fd handlers, busy polling and adaptive polling (aio/aio-poll.c). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "aio-test-util.h"

typedef struct Pipe {
    int rfd;
    int wfd;
    int reads;
    int writes;
    int bytes;
    AioContext *ctx;
    bool remove_self;
} Pipe;

static void pipe_open(Pipe *p, AioContext *ctx)
{
    int fds[2];

    assert_int_equal(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    memset(p, 0, sizeof(*p));
    p->rfd = fds[0];
    p->wfd = fds[1];
    p->ctx = ctx;
}

static void pipe_close(Pipe *p)
{
    if (p->rfd >= 0) {
        close(p->rfd);
    }
    if (p->wfd >= 0) {
        close(p->wfd);
    }
}

static void on_readable(void *opaque)
{
    Pipe *p = opaque;
    char buf[64];
    ssize_t n;

    p->reads++;
    while ((n = read(p->rfd, buf, sizeof(buf))) > 0) {
        p->bytes += (int)n;
    }
    if (n == 0 || p->remove_self) {
        aio_set_fd_handler(p->ctx, p->rfd, NULL, NULL, NULL, NULL, NULL);
    }
}

static void on_writable(void *opaque)
{
    Pipe *p = opaque;

    p->writes++;
    aio_set_fd_handler(p->ctx, p->wfd, NULL, NULL, NULL, NULL, NULL);
}

static void test_aio_fd_read_handler_fires_on_data(void **state)
{
    AioContext *ctx = test_ctx_new();
    Pipe p;

    pipe_open(&p, ctx);
    assert_int_equal(aio_set_fd_handler(ctx, p.rfd, on_readable, NULL, NULL, NULL, &p), 0);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(p.reads, 0);
    assert_int_equal(write(p.wfd, "hello", 5), 5);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(p.reads, 1);
    assert_int_equal(p.bytes, 5);
    /* Drained: nothing more to do. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(write(p.wfd, "x", 1), 1);
    aio_poll(ctx, true);
    assert_int_equal(p.bytes, 6);
    aio_set_fd_handler(ctx, p.rfd, NULL, NULL, NULL, NULL, NULL);
    assert_int_equal(write(p.wfd, "y", 1), 1);
    assert_false(aio_poll(ctx, false));
    assert_int_equal(p.bytes, 6);
    pipe_close(&p);
    test_ctx_free(ctx);
}

static void test_aio_fd_write_handler_and_self_removal(void **state)
{
    AioContext *ctx = test_ctx_new();
    Pipe p;

    pipe_open(&p, ctx);
    assert_int_equal(aio_set_fd_handler(ctx, p.wfd, NULL, on_writable, NULL, NULL, &p), 0);
    assert_true(aio_poll(ctx, true));
    assert_int_equal(p.writes, 1);
    /* It removed itself inside its callback: it does not run again. */
    assert_false(aio_poll(ctx, false));
    assert_int_equal(p.writes, 1);
    pipe_close(&p);
    test_ctx_free(ctx);
}

static void test_aio_fd_hangup_reaches_read_handler(void **state)
{
    AioContext *ctx = test_ctx_new();
    Pipe p;

    pipe_open(&p, ctx);
    aio_set_fd_handler(ctx, p.rfd, on_readable, NULL, NULL, NULL, &p);
    close(p.wfd);
    p.wfd = -1;
    assert_true(aio_poll(ctx, true));
    assert_int_equal(p.reads, 1); /* saw EOF and removed itself */
    assert_false(aio_poll(ctx, false));
    pipe_close(&p);
    test_ctx_free(ctx);
}

static void other_read(void *opaque)
{
    int *n = opaque;
    char c;

    (*n)++;
    (void)!read(*(n + 1), &c, 1);
}

static void test_aio_fd_replace_handler(void **state)
{
    AioContext *ctx = test_ctx_new();
    Pipe p;
    int other[2] = { 0, 0 };

    pipe_open(&p, ctx);
    other[1] = p.rfd;
    aio_set_fd_handler(ctx, p.rfd, on_readable, NULL, NULL, NULL, &p);
    aio_set_fd_handler(ctx, p.rfd, other_read, NULL, NULL, NULL, other);
    assert_int_equal(write(p.wfd, "a", 1), 1);
    aio_poll(ctx, true);
    assert_int_equal(p.reads, 0);
    assert_int_equal(other[0], 1);
    aio_set_fd_handler(ctx, p.rfd, NULL, NULL, NULL, NULL, NULL);
    pipe_close(&p);
    test_ctx_free(ctx);
}

static void test_aio_fd_many_handlers_removed_by_one(void **state)
{
    enum { N = 32 };
    AioContext *ctx = test_ctx_new();
    Pipe p[N];

    for (int i = 0; i < N; i++) {
        pipe_open(&p[i], ctx);
        p[i].remove_self = true;
        aio_set_fd_handler(ctx, p[i].rfd, on_readable, NULL, NULL, NULL, &p[i]);
        assert_int_equal(write(p[i].wfd, "z", 1), 1);
    }
    while (aio_poll(ctx, false)) {
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(p[i].reads, 1);
        assert_int_equal(p[i].bytes, 1);
        pipe_close(&p[i]);
    }
    test_ctx_free(ctx);
}

static void test_aio_fd_regular_file_under_epoll(void **state)
{
    AioContext *ctx = test_ctx_new();
    char path[] = "/tmp/coblk-aio-fd-XXXXXX";
    int fd = mkstemp(path);
    Pipe dummy = { 0 };
    int ret;

    unlink(path);
    ret = aio_set_fd_handler(ctx, fd, on_readable, NULL, NULL, NULL, &dummy);
    if (test_fdmon == AIO_FDMON_EPOLL) {
        assert_int_equal(ret, -EPERM); /* epoll refuses regular files */
    } else {
        /* io_uring polls a regular file as always ready. */
        assert_int_equal(ret, 0);
        aio_set_fd_handler(ctx, fd, NULL, NULL, NULL, NULL, NULL);
    }
    close(fd);
    test_ctx_free(ctx);
}

typedef struct PollSrc {
    atomic_int ready;
    int polled_ready;
    int read_ready;
} PollSrc;

static bool src_poll(void *opaque)
{
    PollSrc *s = opaque;

    return atomic_load(&s->ready) != 0;
}

static void src_poll_ready(void *opaque)
{
    PollSrc *s = opaque;

    atomic_store(&s->ready, 0);
    s->polled_ready++;
}

static void src_read(void *opaque)
{
    PollSrc *s = opaque;

    s->read_ready++;
}

static void test_aio_fd_busy_poll_without_fd_event(void **state)
{
    AioContext *ctx = test_ctx_new();
    PollSrc s = { 0 };
    Pipe p;

    pipe_open(&p, ctx);
    /* The fd never becomes readable: only io_poll can report work. */
    aio_set_fd_handler(ctx, p.rfd, src_read, NULL, src_poll, src_poll_ready, &s);
    atomic_store(&s.ready, 1);
    assert_true(aio_poll(ctx, false));
    assert_int_equal(s.polled_ready, 1);
    assert_int_equal(s.read_ready, 0);
    assert_false(aio_poll(ctx, false));
    aio_set_fd_handler(ctx, p.rfd, NULL, NULL, NULL, NULL, NULL);
    pipe_close(&p);
    test_ctx_free(ctx);
}

typedef struct Kicker {
    EventNotifier *e;
    atomic_int go;
    atomic_int stop;
    int64_t delay_ns;
} Kicker;

static void *kicker_thread(void *opaque)
{
    Kicker *k = opaque;

    while (!atomic_load(&k->stop)) {
        if (atomic_exchange(&k->go, 0)) {
            int64_t until = aio_clock_ns() + k->delay_ns;

            while (aio_clock_ns() < until) {
            }
            event_notifier_set(k->e);
        }
    }
    return NULL;
}

static void notifier_read(void *opaque)
{
    EventNotifier *e = opaque;

    event_notifier_test_and_clear(e);
}

static void timer_noop(void *opaque)
{
    *(int *)opaque = 1;
}

static void test_aio_fd_adaptive_polling_grows_and_shrinks(void **state)
{
    AioContext *ctx = test_ctx_new();
    EventNotifier e;
    Kicker k = { .e = &e, .delay_ns = 20000 };
    pthread_t th;

    aio_context_set_poll_params(ctx, 1000000, 2, 2);
    assert_int_equal(event_notifier_init(&e, false), 0);
    aio_set_fd_handler(ctx, e.fd, notifier_read, NULL, NULL, NULL, &e);
    /* A poll callback must exist for busy polling to be worth doing. */
    PollSrc s = { 0 };
    Pipe p;
    pipe_open(&p, ctx);
    aio_set_fd_handler(ctx, p.rfd, src_read, NULL, src_poll, src_poll_ready, &s);

    pthread_create(&th, NULL, kicker_thread, &k);
    /* Events arrive ~20 us after we start waiting: the window grows. */
    for (int i = 0; i < 20; i++) {
        atomic_store(&k.go, 1);
        aio_poll(ctx, true);
    }
    assert_true(aio_context_get_poll_ns(ctx) > 0);
    atomic_store(&k.stop, 1);
    pthread_join(th, NULL);

    /* Long sleeps (5 ms > max 1 ms): the window shrinks to nothing. */
    for (int i = 0; i < 20; i++) {
        AioTimer t;
        int fired = 0;

        aio_timer_init(&t, ctx, timer_noop, &fired);
        aio_timer_mod(&t, aio_clock_ns() + 5000000);
        while (!fired) {
            aio_poll(ctx, true);
        }
    }
    assert_int_equal(aio_context_get_poll_ns(ctx), 0);
    aio_set_fd_handler(ctx, e.fd, NULL, NULL, NULL, NULL, NULL);
    aio_set_fd_handler(ctx, p.rfd, NULL, NULL, NULL, NULL, NULL);
    event_notifier_cleanup(&e);
    pipe_close(&p);
    test_ctx_free(ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aio_fd_read_handler_fires_on_data),
        cmocka_unit_test(test_aio_fd_write_handler_and_self_removal),
        cmocka_unit_test(test_aio_fd_hangup_reaches_read_handler),
        cmocka_unit_test(test_aio_fd_replace_handler),
        cmocka_unit_test(test_aio_fd_many_handlers_removed_by_one),
        cmocka_unit_test(test_aio_fd_regular_file_under_epoll),
        cmocka_unit_test(test_aio_fd_busy_poll_without_fd_event),
        cmocka_unit_test(test_aio_fd_adaptive_polling_grows_and_shrinks),
    };

    return RUN_PER_FDMON(tests);
}
