/*
 * fd handlers and the loop itself: aio_poll(), adaptive busy polling, and
 * the prepare/dispatch pair for foreign main loops.
 *
 * One iteration: flush queued I/O submissions; busy-poll the handlers that
 * have an io_poll callback (for up to the adaptive window when blocking);
 * otherwise wait in the fd monitor until an fd, a BH or the earliest timer is
 * due; then dispatch ready fds, BHs and expired timers, in that order.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>

#include "coblk-config.h"
#include "aio/aio-int.h"

/* Even while busy polling keeps succeeding, look at the other fds this often. */
#define POLL_STREAK_FD_CHECK 16

static AioHandler *find_handler(AioContext *ctx, int fd)
{
    for (AioHandler *h = ctx->handlers; h; h = h->next) {
        if (h->fd == fd && !h->deleted) {
            return h;
        }
    }
    return NULL;
}

static void handler_unlink(AioContext *ctx, AioHandler *h)
{
    AioHandler **pp = &ctx->handlers;

    while (*pp != h) {
        pp = &(*pp)->next;
    }
    *pp = h->next;
}

/* Drops h: freed now, or after the walk that may still hold it. */
static void handler_drop(AioContext *ctx, AioHandler *h)
{
    if (h->io_poll) {
        ctx->poll_handlers--;
    }
    if (ctx->walking_handlers || h->on_ready_list) {
        h->deleted = true;
        ctx->handlers_deleted = true;
        return;
    }
    handler_unlink(ctx, h);
    free(h);
}

static void handlers_reap_deleted(AioContext *ctx)
{
    AioHandler **pp = &ctx->handlers;

    if (!ctx->handlers_deleted || ctx->walking_handlers) {
        return;
    }
    while (*pp) {
        AioHandler *h = *pp;

        if (h->deleted && !h->on_ready_list) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
    ctx->handlers_deleted = false;
}

int aio_set_fd_handler(AioContext *ctx, int fd, AioIOHandler *io_read, AioIOHandler *io_write,
                       AioPollFn *io_poll, AioIOHandler *io_poll_ready, void *opaque)
{
    AioHandler *old_h = find_handler(ctx, fd);
    AioHandler *new_h = NULL;
    int ret;

    if (fd < 0) {
        return -EBADF;
    }
    if (io_read || io_write) {
        new_h = calloc(1, sizeof(*new_h));
        if (!new_h) {
            return -ENOMEM;
        }
        new_h->fd = fd;
        new_h->io_read = io_read;
        new_h->io_write = io_write;
        new_h->io_poll = io_poll;
        new_h->io_poll_ready = io_poll_ready;
        new_h->opaque = opaque;
        new_h->events = (io_read ? POLLIN : 0) | (io_write ? POLLOUT : 0);
    } else if (!old_h) {
        return 0;
    }
    ret = ctx->fdmon->update(ctx, old_h, new_h);
    if (ret < 0) {
        free(new_h);
        return ret;
    }
    if (old_h) {
        handler_drop(ctx, old_h);
    }
    if (new_h) {
        new_h->next = ctx->handlers;
        ctx->handlers = new_h;
        if (io_poll) {
            ctx->poll_handlers++;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Dispatch */

static bool dispatch_ready(AioContext *ctx)
{
    bool progress = false;

    ctx->walking_handlers++;
    while (ctx->ready_list) {
        AioHandler *h = ctx->ready_list;
        unsigned rev = h->revents;

        ctx->ready_list = h->ready_next;
        h->on_ready_list = false;
        h->revents = 0;
        if (h->deleted) {
            continue;
        }
        if (h->io_read && (rev & (POLLIN | POLLHUP | POLLERR))) {
            h->io_read(h->opaque);
            progress = true;
        }
        if (h->io_write && !h->deleted && (rev & (POLLOUT | POLLHUP | POLLERR))) {
            h->io_write(h->opaque);
            progress = true;
        }
    }
    ctx->walking_handlers--;
    handlers_reap_deleted(ctx);
    return progress;
}

/* One pass over the io_poll callbacks; runs the ready ones. */
static bool run_poll_handlers_once(AioContext *ctx)
{
    bool progress = false;

    ctx->walking_handlers++;
    for (AioHandler *h = ctx->handlers; h; h = h->next) {
        if (h->io_poll && !h->deleted && h->io_poll(h->opaque)) {
            AioIOHandler *ready = h->io_poll_ready ? h->io_poll_ready : h->io_read;

            if (ready) {
                ready(h->opaque);
                progress = true;
            }
        }
    }
    ctx->walking_handlers--;
    handlers_reap_deleted(ctx);
    return progress;
}

static bool run_poll_handlers(AioContext *ctx, int64_t max_ns)
{
    int64_t end;

    if (run_poll_handlers_once(ctx)) {
        return true;
    }
    if (max_ns <= 0) {
        return false;
    }
    end = aio_clock_ns() + max_ns;
    do {
        if (run_poll_handlers_once(ctx)) {
            return true;
        }
        if (aio_bh_pending(ctx)) {
            return false;
        }
    } while (aio_clock_ns() < end);
    return false;
}

static void adjust_poll_window(AioContext *ctx, int64_t block_ns)
{
    if (ctx->poll_max_ns <= 0) {
        ctx->poll_ns = 0;
        return;
    }
    if (block_ns <= ctx->poll_ns) {
        return; /* the window caught it: keep it */
    }
    if (block_ns > ctx->poll_max_ns) {
        /* Long sleeps: polling would have been wasted. */
        ctx->poll_ns = ctx->poll_shrink > 1 ? ctx->poll_ns / ctx->poll_shrink : 0;
        if (ctx->poll_ns < 1000) {
            ctx->poll_ns = 0;
        }
        return;
    }
    /* The event came a little after the window: widen it. */
    if (ctx->poll_ns < ctx->poll_max_ns) {
        int64_t grown = ctx->poll_ns ? ctx->poll_ns * ctx->poll_grow : 4000;

        ctx->poll_ns = grown < ctx->poll_max_ns ? grown : ctx->poll_max_ns;
    }
}

static bool dispatch_all(AioContext *ctx)
{
    bool progress = dispatch_ready(ctx);

    progress |= aio_bh_poll(ctx);
    progress |= aio_timers_run(ctx);
    return progress;
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    bool progress = false;
    int64_t timeout;
    int64_t start = 0;

    coroutine_set_thread_ctx(ctx);
    aio_engines_flush(ctx);

    bool ready = aio_bh_pending(ctx);

    if (ctx->poll_handlers && !ready) {
        int64_t window = blocking ? ctx->poll_ns : 0;
        int64_t deadline = aio_timers_deadline_ns(ctx);

        if (deadline >= 0 && deadline < window) {
            window = deadline;
        }
        if (blocking) {
            start = aio_clock_ns();
        }
        progress = run_poll_handlers(ctx, window);
    }

    if ((progress || ready) && ++ctx->poll_streak % POLL_STREAK_FD_CHECK) {
        /* Work is at hand (busy polling found some, or BHs are due): skip the
         * fd monitor's system call, but not so often that fds starve. */
        progress |= aio_bh_poll(ctx);
        progress |= aio_timers_run(ctx);
        return progress;
    }
    if (!blocking || progress || aio_bh_pending(ctx)) {
        timeout = 0;
    } else {
        timeout = aio_timers_deadline_ns(ctx);
        if (!start) {
            start = aio_clock_ns();
        }
    }
    ctx->fdmon->wait(ctx, timeout);
    if (blocking && timeout != 0) {
        adjust_poll_window(ctx, aio_clock_ns() - start);
    }
    progress |= dispatch_all(ctx);
    return progress;
}

/* ---------------------------------------------------------------------- */
/* Foreign main loops */

int aio_get_fd(AioContext *ctx)
{
    return ctx->fdmon->get_fd(ctx);
}

int64_t aio_prepare(AioContext *ctx)
{
    coroutine_set_thread_ctx(ctx);
    aio_engines_flush(ctx);
    /* Collects what is already ready (and, for io_uring, submits re-arms). */
    ctx->fdmon->wait(ctx, 0);
    if (ctx->ready_list || aio_bh_pending(ctx)) {
        return 0;
    }
    return aio_timers_deadline_ns(ctx);
}

bool aio_dispatch(AioContext *ctx)
{
    bool progress;

    coroutine_set_thread_ctx(ctx);
    ctx->fdmon->wait(ctx, 0);
    progress = dispatch_all(ctx);
    aio_engines_flush(ctx);
    return progress;
}

void aio_context_set_poll_params(AioContext *ctx, int64_t max_ns, int64_t grow, int64_t shrink)
{
    ctx->poll_max_ns = max_ns > 0 ? max_ns : 0;
    ctx->poll_grow = grow > 1 ? grow : 2;
    ctx->poll_shrink = shrink > 1 ? shrink : 2;
    if (ctx->poll_ns > ctx->poll_max_ns) {
        ctx->poll_ns = ctx->poll_max_ns;
    }
}

int64_t aio_context_get_poll_ns(AioContext *ctx)
{
    return ctx->poll_ns;
}
