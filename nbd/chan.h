/*
 * A non-blocking stream socket driven by an AioContext: coroutines read and
 * write whole buffers and yield on EAGAIN until the fd handler says the
 * socket is ready (no thread per connection). Outside coroutine context the
 * same calls wait with poll() and a timeout (the client's handshake at open).
 *
 * One reader and one writer at a time: callers serialise writers (a CoMutex)
 * and keep to one reading coroutine.
 *
 * After nbd_tls_start() (nbd/tls.h) the same calls go through the TLS
 * session: the record layer reads and writes the non-blocking fd and the
 * coroutine yields on the direction GnuTLS asks for.
 */
#ifndef COBLK_NBD_CHAN_H
#define COBLK_NBD_CHAN_H

#include <sys/uio.h>

#include <coblk/aio.h>

typedef struct NbdChan {
    int fd;
    AioContext *ctx;
    Coroutine *rd_co;      /* coroutine waiting for POLLIN */
    Coroutine *wr_co;      /* coroutine waiting for POLLOUT */
    bool h_read;           /* handlers currently installed */
    bool h_write;
    int poll_timeout_ms;   /* waits outside coroutines (-1: none) */
    void *tls;             /* gnutls_session_t once TLS is up, else NULL */
    uint8_t *tls_buf;      /* writev gathers small pieces into one record */
} NbdChan;

/** Makes fd non-blocking and ties it to ctx. */
int nbd_chan_init(NbdChan *ch, int fd, AioContext *ctx);
/** Reads exactly len bytes: 0, -EPIPE at end of stream, -ETIMEDOUT, or -errno. */
int coroutine_fn nbd_chan_read(NbdChan *ch, void *buf, size_t len);
/** Reads exactly the bytes of iov (consumed: the array is modified). */
int coroutine_fn nbd_chan_readv(NbdChan *ch, struct iovec *iov, int niov);
/** Writes every byte of iov (the array is modified). */
int coroutine_fn nbd_chan_writev(NbdChan *ch, struct iovec *iov, int niov);
int coroutine_fn nbd_chan_write(NbdChan *ch, const void *buf, size_t len);
/** Reads and drops len bytes. */
int coroutine_fn nbd_chan_skip(NbdChan *ch, uint64_t len);
/** Waits until the socket is writable (write) or readable: 0, -ETIMEDOUT or -errno. */
int coroutine_fn nbd_chan_wait(NbdChan *ch, bool write);
/** Shuts the socket down both ways: waiting readers and writers wake with an error. */
void nbd_chan_shutdown(NbdChan *ch);
/** Removes the fd handlers, ends TLS and closes the fd (no coroutine may be waiting). */
void nbd_chan_close(NbdChan *ch);

#endif /* COBLK_NBD_CHAN_H */
