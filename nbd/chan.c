/*
 * Coroutine socket I/O for NBD (see chan.h). The fd handlers are installed
 * lazily: a wait installs the handler it needs and leaves it in place, and a
 * readiness callback that finds nobody waiting removes it, so a busy
 * connection does not pay an epoll_ctl() per message.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd/chan.h"
#include "nbd/tls.h"

static void chan_readable(void *opaque);
static void chan_writable(void *opaque);

static void chan_set_handlers(NbdChan *ch, bool r, bool w)
{
    if (r == ch->h_read && w == ch->h_write) {
        return;
    }
    aio_set_fd_handler(ch->ctx, ch->fd, r ? chan_readable : NULL, w ? chan_writable : NULL,
                       NULL, NULL, ch);
    ch->h_read = r;
    ch->h_write = w;
}

/* Wakes the waiting reader; ch may be freed by it, so nothing touches ch after. */
static void chan_readable(void *opaque)
{
    NbdChan *ch = opaque;
    Coroutine *co = ch->rd_co;

    if (!co) {
        chan_set_handlers(ch, false, ch->h_write);
        return;
    }
    ch->rd_co = NULL;
    aio_co_wake(co);
}

static void chan_writable(void *opaque)
{
    NbdChan *ch = opaque;
    Coroutine *co = ch->wr_co;

    if (!co) {
        chan_set_handlers(ch, ch->h_read, false);
        return;
    }
    ch->wr_co = NULL;
    aio_co_wake(co);
}

int nbd_chan_init(NbdChan *ch, int fd, AioContext *ctx)
{
    int fl = fcntl(fd, F_GETFL);

    memset(ch, 0, sizeof(*ch));
    ch->fd = fd;
    ch->ctx = ctx;
    ch->poll_timeout_ms = 30000;
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        return -errno;
    }
    return 0;
}

/* Waits until the socket is readable (or writable): yields in a coroutine, polls outside. */
int coroutine_fn nbd_chan_wait(NbdChan *ch, bool write)
{
    struct pollfd pfd = { .fd = ch->fd, .events = write ? POLLOUT : POLLIN };
    int n;

    if (coroutine_in_coroutine()) {
        if (write) {
            ch->wr_co = coroutine_self();
            chan_set_handlers(ch, ch->h_read, true);
        } else {
            ch->rd_co = coroutine_self();
            chan_set_handlers(ch, true, ch->h_write);
        }
        coroutine_yield();
        return 0;
    }
    do {
        n = poll(&pfd, 1, ch->poll_timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return -errno;
    }
    return n == 0 ? -ETIMEDOUT : 0;
}

/* Drops n bytes from the front of iov; returns the new start index. */
static int iov_advance(struct iovec *iov, int niov, int start, size_t n)
{
    while (start < niov && n >= iov[start].iov_len) {
        n -= iov[start].iov_len;
        start++;
    }
    if (start < niov) {
        iov[start].iov_base = (uint8_t *)iov[start].iov_base + n;
        iov[start].iov_len -= n;
    }
    return start;
}

static int iov_skip_empty(struct iovec *iov, int niov, int start)
{
    while (start < niov && iov[start].iov_len == 0) {
        start++;
    }
    return start;
}

int coroutine_fn nbd_chan_readv(NbdChan *ch, struct iovec *iov, int niov)
{
    int i = iov_skip_empty(iov, niov, 0);

    if (ch->tls) {
        return nbd_tls_readv(ch, iov, niov);
    }
    while (i < niov) {
        int cnt = niov - i > IOV_MAX ? IOV_MAX : niov - i;
        ssize_t n = readv(ch->fd, iov + i, cnt);

        if (n > 0) {
            i = iov_skip_empty(iov, niov, iov_advance(iov, niov, i, (size_t)n));
        } else if (n == 0) {
            return -EPIPE;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ret = nbd_chan_wait(ch, false);

            if (ret < 0) {
                return ret;
            }
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

int coroutine_fn nbd_chan_read(NbdChan *ch, void *buf, size_t len)
{
    struct iovec iov = { .iov_base = buf, .iov_len = len };

    return nbd_chan_readv(ch, &iov, 1);
}

int coroutine_fn nbd_chan_writev(NbdChan *ch, struct iovec *iov, int niov)
{
    int i = iov_skip_empty(iov, niov, 0);

    if (ch->tls) {
        return nbd_tls_writev(ch, iov, niov);
    }
    while (i < niov) {
        struct msghdr msg = {
            .msg_iov = iov + i,
            .msg_iovlen = (size_t)(niov - i > IOV_MAX ? IOV_MAX : niov - i),
        };
        ssize_t n = sendmsg(ch->fd, &msg, MSG_NOSIGNAL);

        if (n >= 0) {
            i = iov_skip_empty(iov, niov, iov_advance(iov, niov, i, (size_t)n));
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int ret = nbd_chan_wait(ch, true);

            if (ret < 0) {
                return ret;
            }
        } else if (errno != EINTR) {
            return -errno;
        }
    }
    return 0;
}

int coroutine_fn nbd_chan_write(NbdChan *ch, const void *buf, size_t len)
{
    struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };

    return nbd_chan_writev(ch, &iov, 1);
}

int coroutine_fn nbd_chan_skip(NbdChan *ch, uint64_t len)
{
    uint8_t scratch[16384];

    while (len) {
        size_t n = len > sizeof(scratch) ? sizeof(scratch) : (size_t)len;
        int ret = nbd_chan_read(ch, scratch, n);

        if (ret < 0) {
            return ret;
        }
        len -= n;
    }
    return 0;
}

void nbd_chan_shutdown(NbdChan *ch)
{
    if (ch->fd >= 0) {
        shutdown(ch->fd, SHUT_RDWR);
    }
}

void nbd_chan_close(NbdChan *ch)
{
    if (ch->fd < 0) {
        return;
    }
    chan_set_handlers(ch, false, false);
    nbd_tls_bye(ch);
    nbd_tls_end(ch);
    close(ch->fd);
    ch->fd = -1;
}
