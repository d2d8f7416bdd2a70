/*
 * fd monitor on epoll. Handlers are registered level-triggered with
 * data.ptr = the handler; a replaced handler is updated with EPOLL_CTL_MOD.
 */
#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "coblk-config.h"
#include "aio/aio-int.h"

#define EPOLL_BATCH 128

/* Set once epoll_pwait2() answered ENOSYS, so that it is not tried again. */
static atomic_bool no_epoll_pwait2;

static int fdmon_epoll_init(AioContext *ctx, Error **errp)
{
    ctx->fdmon_fd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->fdmon_fd < 0) {
        error_setg_errno(errp, -errno, "aio: epoll_create1 failed");
        return -errno;
    }
    return 0;
}

static void fdmon_epoll_cleanup(AioContext *ctx)
{
    if (ctx->fdmon_fd >= 0) {
        close(ctx->fdmon_fd);
        ctx->fdmon_fd = -1;
    }
}

static uint32_t to_epoll(unsigned events)
{
    return (events & POLLIN ? EPOLLIN : 0) | (events & POLLOUT ? EPOLLOUT : 0);
}

static unsigned from_epoll(uint32_t ev)
{
    return (ev & EPOLLIN ? POLLIN : 0) | (ev & EPOLLOUT ? POLLOUT : 0) |
           (ev & EPOLLHUP ? POLLHUP : 0) | (ev & EPOLLERR ? POLLERR : 0);
}

static int fdmon_epoll_update(AioContext *ctx, AioHandler *old_h, AioHandler *new_h)
{
    struct epoll_event ev = { 0 };
    int op;

    if (!new_h) {
        op = EPOLL_CTL_DEL;
    } else {
        ev.events = to_epoll(new_h->events);
        ev.data.ptr = new_h;
        op = old_h ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    }
    if (epoll_ctl(ctx->fdmon_fd, op, new_h ? new_h->fd : old_h->fd, &ev) < 0) {
        /* A closed fd has already left the epoll set: removal succeeded. */
        if (op == EPOLL_CTL_DEL && (errno == EBADF || errno == ENOENT)) {
            return 0;
        }
        return -errno;
    }
    return 0;
}

static int fdmon_epoll_wait(AioContext *ctx, int64_t timeout_ns)
{
    struct epoll_event events[EPOLL_BATCH];
    struct timespec ts;
    int n;

    if (timeout_ns >= 0) {
        ts.tv_sec = timeout_ns / 1000000000LL;
        ts.tv_nsec = timeout_ns % 1000000000LL;
    }
    n = -1;
    errno = ENOSYS;
    if (!atomic_load_explicit(&no_epoll_pwait2, memory_order_relaxed)) {
        n = epoll_pwait2(ctx->fdmon_fd, events, EPOLL_BATCH, timeout_ns >= 0 ? &ts : NULL,
                         NULL);
    }
    if (n < 0 && errno == ENOSYS) {
        /* Kernels before 5.11 (and valgrind): millisecond timeouts, rounded up. */
        int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);

        atomic_store_explicit(&no_epoll_pwait2, true, memory_order_relaxed);
        n = epoll_wait(ctx->fdmon_fd, events, EPOLL_BATCH, ms);
    }
    if (n < 0) {
        return errno == EINTR ? 0 : -errno;
    }
    for (int i = 0; i < n; i++) {
        AioHandler *h = events[i].data.ptr;

        if (h->deleted || h->on_ready_list) {
            continue;
        }
        h->revents = from_epoll(events[i].events);
        h->on_ready_list = true;
        h->ready_next = ctx->ready_list;
        ctx->ready_list = h;
    }
    return n;
}

static int fdmon_epoll_get_fd(AioContext *ctx)
{
    return ctx->fdmon_fd;
}

const FdMonOps fdmon_epoll_ops = {
    .name = "epoll",
    .init = fdmon_epoll_init,
    .cleanup = fdmon_epoll_cleanup,
    .update = fdmon_epoll_update,
    .wait = fdmon_epoll_wait,
    .get_fd = fdmon_epoll_get_fd,
};
