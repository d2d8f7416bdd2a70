/*
 * fd monitor on io_uring: each handler has one one-shot POLL_ADD in flight,
 * re-armed at the next wait after it fired (level-triggered behaviour, like
 * epoll's default). The loop sleeps in io_uring_submit_and_wait_timeout(), so
 * poll re-arms and removals cost no extra system call.
 *
 * A CQE names its handler by (fd << 32 | generation); a CQE for a handler
 * that has since been replaced or removed carries an old generation and is
 * dropped, so no CQE ever points at freed memory.
 */
#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "aio/aio-int.h"

#define RING_ENTRIES 256
#define ARMED (1ULL << 63)
#define UD_REMOVE 0ULL /* generations start at 1, so 0 never names a handler */

typedef struct FdMonUring {
    struct io_uring ring;
    AioHandler **by_fd;
    size_t by_fd_len;
    uint32_t gen;
    uint64_t *rearm;   /* user_data of handlers whose poll fired */
    size_t rearm_len;
    size_t rearm_cap;
} FdMonUring;

static FdMonUring *state_of(AioContext *ctx)
{
    return ctx->fdmon_state;
}

static int fdmon_uring_init(AioContext *ctx, Error **errp)
{
    FdMonUring *s = calloc(1, sizeof(*s));
    int ret;

    if (!s) {
        error_setg(errp, "aio: out of memory");
        return -ENOMEM;
    }
    ret = io_uring_queue_init(RING_ENTRIES, &s->ring, 0);
    if (ret < 0) {
        error_setg_errno(errp, ret, "aio: io_uring fd monitor unavailable (io_uring_queue_init)");
        free(s);
        return ret;
    }
    ctx->fdmon_state = s;
    ctx->fdmon_fd = s->ring.ring_fd;
    return 0;
}

static void fdmon_uring_cleanup(AioContext *ctx)
{
    FdMonUring *s = state_of(ctx);

    if (!s) {
        return;
    }
    io_uring_queue_exit(&s->ring);
    free(s->by_fd);
    free(s->rearm);
    free(s);
    ctx->fdmon_state = NULL;
    ctx->fdmon_fd = -1;
}

static struct io_uring_sqe *get_sqe(FdMonUring *s)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&s->ring);

    while (!sqe) {
        io_uring_submit(&s->ring);
        sqe = io_uring_get_sqe(&s->ring);
    }
    return sqe;
}

static uint64_t handler_ud(AioHandler *h)
{
    return ((uint64_t)(uint32_t)h->fd << 32) | (uint32_t)h->fdmon_data;
}

static void arm(FdMonUring *s, AioHandler *h)
{
    struct io_uring_sqe *sqe = get_sqe(s);

    io_uring_prep_poll_add(sqe, h->fd, h->events);
    io_uring_sqe_set_data64(sqe, handler_ud(h));
    h->fdmon_data |= ARMED;
}

static int ensure_slot(FdMonUring *s, int fd)
{
    size_t len;
    AioHandler **arr;

    if ((size_t)fd < s->by_fd_len) {
        return 0;
    }
    len = s->by_fd_len ? s->by_fd_len : 64;
    while (len <= (size_t)fd) {
        len *= 2;
    }
    arr = realloc(s->by_fd, len * sizeof(*arr));
    if (!arr) {
        return -ENOMEM;
    }
    memset(arr + s->by_fd_len, 0, (len - s->by_fd_len) * sizeof(*arr));
    s->by_fd = arr;
    s->by_fd_len = len;
    return 0;
}

static int fdmon_uring_update(AioContext *ctx, AioHandler *old_h, AioHandler *new_h)
{
    FdMonUring *s = state_of(ctx);
    /* The caller passes at least one handler. */
    /* cppcheck-suppress nullPointerRedundantCheck */
    int fd = new_h ? new_h->fd : old_h->fd;
    int ret = ensure_slot(s, fd);

    if (ret < 0) {
        return ret;
    }
    if (old_h && (old_h->fdmon_data & ARMED)) {
        struct io_uring_sqe *sqe = get_sqe(s);

        io_uring_prep_poll_remove(sqe, handler_ud(old_h));
        io_uring_sqe_set_data64(sqe, UD_REMOVE);
        old_h->fdmon_data &= ~ARMED;
    }
    s->by_fd[fd] = new_h;
    if (new_h) {
        if (++s->gen == 0) {
            s->gen = 1;
        }
        new_h->fdmon_data = s->gen;
        arm(s, new_h);
    }
    return 0;
}

static void rearm_fired(FdMonUring *s)
{
    for (size_t i = 0; i < s->rearm_len; i++) {
        uint64_t ud = s->rearm[i];
        size_t fd = ud >> 32;
        AioHandler *h = fd < s->by_fd_len ? s->by_fd[fd] : NULL;

        if (h && !h->deleted && (uint32_t)h->fdmon_data == (uint32_t)ud &&
            !(h->fdmon_data & ARMED)) {
            arm(s, h);
        }
    }
    s->rearm_len = 0;
}

static void note_fired(FdMonUring *s, uint64_t ud)
{
    if (s->rearm_len == s->rearm_cap) {
        size_t cap = s->rearm_cap ? s->rearm_cap * 2 : 32;
        uint64_t *arr = realloc(s->rearm, cap * sizeof(*arr));

        if (!arr) {
            abort();
        }
        s->rearm = arr;
        s->rearm_cap = cap;
    }
    s->rearm[s->rearm_len++] = ud;
}

static int reap(AioContext *ctx, FdMonUring *s)
{
    struct io_uring_cqe *cqe;
    unsigned head;
    unsigned seen = 0;
    int ready = 0;

    io_uring_for_each_cqe(&s->ring, head, cqe) {
        uint64_t ud = io_uring_cqe_get_data64(cqe);
        size_t fd = ud >> 32;
        AioHandler *h;

        seen++;
        if (ud == UD_REMOVE || ud == LIBURING_UDATA_TIMEOUT) {
            continue;
        }
        h = fd < s->by_fd_len ? s->by_fd[fd] : NULL;
        if (!h || (uint32_t)h->fdmon_data != (uint32_t)ud) {
            continue; /* stale: the handler was replaced or removed */
        }
        h->fdmon_data &= ~ARMED;
        note_fired(s, ud);
        if (cqe->res == -ECANCELED || h->on_ready_list) {
            continue;
        }
        h->revents = cqe->res < 0 ? POLLERR : (unsigned)cqe->res;
        h->on_ready_list = true;
        h->ready_next = ctx->ready_list;
        ctx->ready_list = h;
        ready++;
    }
    io_uring_cq_advance(&s->ring, seen);
    return ready;
}

static int fdmon_uring_wait(AioContext *ctx, int64_t timeout_ns)
{
    FdMonUring *s = state_of(ctx);
    struct io_uring_cqe *cqe;
    struct __kernel_timespec ts;
    int ret;

    rearm_fired(s);
    if (timeout_ns == 0) {
        if (io_uring_sq_ready(&s->ring)) {
            io_uring_submit(&s->ring);
        }
    } else {
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000LL;
            ts.tv_nsec = timeout_ns % 1000000000LL;
        }
        ret = io_uring_submit_and_wait_timeout(&s->ring, &cqe, 1, timeout_ns > 0 ? &ts : NULL,
                                               NULL);
        if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
            return ret;
        }
    }
    return reap(ctx, s);
}

static int fdmon_uring_get_fd(AioContext *ctx)
{
    return ctx->fdmon_fd;
}

const FdMonOps fdmon_io_uring_ops = {
    .name = "io_uring",
    .init = fdmon_uring_init,
    .cleanup = fdmon_uring_cleanup,
    .update = fdmon_uring_update,
    .wait = fdmon_uring_wait,
    .get_fd = fdmon_uring_get_fd,
};
