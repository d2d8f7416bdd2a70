/*
 * Unit tests: the GLib adapter. A real GMainLoop drives the AioContext
 * through aio_get_g_source(): BHs from other threads, timers, fd handlers and
 * sleeping coroutines all run from GLib's loop.
 */
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <unistd.h>

#include <cmocka.h>

#include <coblk/aio-glib.h>

typedef struct Fixture {
    AioContext *ctx;
    GMainContext *gctx;
    GMainLoop *loop;
    GSource *src;
} Fixture;

static int setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);

    f->ctx = aio_context_new(NULL);
    f->gctx = g_main_context_new();
    f->loop = g_main_loop_new(f->gctx, FALSE);
    f->src = aio_get_g_source(f->ctx);
    g_source_attach(f->src, f->gctx);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    Fixture *f = *state;

    g_source_destroy(f->src);
    g_source_unref(f->src);
    g_main_loop_unref(f->loop);
    g_main_context_unref(f->gctx);
    aio_context_unref(f->ctx);
    aio_context_set_current(NULL);
    g_free(f);
    return 0;
}

typedef struct Counter {
    atomic_int n;
    int target;
    GMainLoop *loop;
} Counter;

static void count_and_quit(void *opaque)
{
    Counter *c = opaque;

    if (atomic_fetch_add(&c->n, 1) + 1 == c->target) {
        g_main_loop_quit(c->loop);
    }
}

static void *bh_thread(void *opaque)
{
    void **args = opaque;

    for (int i = 0; i < 500; i++) {
        aio_bh_schedule_oneshot(args[0], count_and_quit, args[1]);
    }
    return NULL;
}

static gboolean watchdog(gpointer data)
{
    fail_msg("GMainLoop did not finish in time");
    return G_SOURCE_REMOVE;
}

static void run_loop(Fixture *f)
{
    GSource *wd = g_timeout_source_new_seconds(20);

    g_source_set_callback(wd, watchdog, NULL, NULL);
    g_source_attach(wd, f->gctx);
    g_main_loop_run(f->loop);
    g_source_destroy(wd);
    g_source_unref(wd);
}

static void test_aio_glib_bh_from_thread(void **state)
{
    Fixture *f = *state;
    Counter c = { .target = 500, .loop = f->loop };
    void *args[2] = { f->ctx, &c };
    pthread_t th;

    pthread_create(&th, NULL, bh_thread, args);
    run_loop(f);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&c.n), 500);
}

static void test_aio_glib_timer(void **state)
{
    Fixture *f = *state;
    Counter c = { .target = 1, .loop = f->loop };
    AioTimer t;
    int64_t start = aio_clock_ns();

    aio_timer_init(&t, f->ctx, count_and_quit, &c);
    aio_timer_mod(&t, start + 5000000);
    run_loop(f);
    assert_true(aio_clock_ns() - start >= 5000000);
    assert_int_equal(atomic_load(&c.n), 1);
}

typedef struct PipeReader {
    int fd;
    Counter *c;
} PipeReader;

static void pipe_read(void *opaque)
{
    PipeReader *r = opaque;
    char buf[8];

    while (read(r->fd, buf, sizeof(buf)) > 0) {
        count_and_quit(r->c);
    }
}

static void test_aio_glib_fd_handler(void **state)
{
    Fixture *f = *state;
    Counter c = { .target = 1, .loop = f->loop };
    int fds[2];
    PipeReader r;

    assert_int_equal(pipe2(fds, O_NONBLOCK), 0);
    r.fd = fds[0];
    r.c = &c;
    aio_set_fd_handler(f->ctx, fds[0], pipe_read, NULL, NULL, NULL, &r);
    assert_int_equal(write(fds[1], "g", 1), 1);
    run_loop(f);
    assert_int_equal(atomic_load(&c.n), 1);
    aio_set_fd_handler(f->ctx, fds[0], NULL, NULL, NULL, NULL, NULL);
    close(fds[0]);
    close(fds[1]);
}

static void coroutine_fn sleepy(void *opaque)
{
    co_sleep_ns(2000000);
    count_and_quit(opaque);
}

static void test_aio_glib_coroutines_sleep(void **state)
{
    Fixture *f = *state;
    Counter c = { .target = 10, .loop = f->loop };

    for (int i = 0; i < 10; i++) {
        aio_co_enter(f->ctx, coroutine_create(sleepy, &c));
    }
    run_loop(f);
    assert_int_equal(atomic_load(&c.n), 10);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_aio_glib_bh_from_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aio_glib_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aio_glib_fd_handler, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aio_glib_coroutines_sleep, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
