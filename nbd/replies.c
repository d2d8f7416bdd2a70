/*
 * Replies: simple replies (header, then data for a read) and structured
 * reply chunks (header, type-specific payload, then data). Each reply goes
 * out in one writev under send_lock, so replies of concurrent requests never
 * interleave; data is sent from the request's buffer without a copy.
 */
#include <errno.h>
#include <string.h>

#include "block/bytes.h"
#include "nbd/server-int.h"

static int coroutine_fn send_locked(NbdClient *c, struct iovec *iov, int niov)
{
    int ret;

    co_mutex_lock(&c->send_lock);
    ret = nbd_chan_writev(&c->chan, iov, niov);
    co_mutex_unlock(&c->send_lock);
    return ret;
}

int coroutine_fn nbd_send_simple(NbdClient *c, uint64_t cookie, uint32_t nbd_err,
                                 const void *data, size_t len)
{
    uint8_t h[NBD_SIMPLE_REPLY_SIZE];
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)data, .iov_len = nbd_err ? 0 : len },
    };

    st_be32(h, NBD_SIMPLE_REPLY_MAGIC);
    st_be32(h + 4, nbd_err);
    st_be64(h + 8, cookie);
    return send_locked(c, iov, 2);
}

int coroutine_fn nbd_send_chunk(NbdClient *c, uint64_t cookie, uint16_t flags, uint16_t type,
                                const void *payload, size_t plen, const void *data,
                                size_t dlen)
{
    uint8_t h[NBD_CHUNK_HEADER_SIZE];
    struct iovec iov[3] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)payload, .iov_len = plen },
        { .iov_base = (void *)data, .iov_len = dlen },
    };

    st_be32(h, NBD_STRUCTURED_REPLY_MAGIC);
    st_be16(h + 4, flags);
    st_be16(h + 6, type);
    st_be64(h + 8, cookie);
    st_be32(h + 16, (uint32_t)(plen + dlen));
    return send_locked(c, iov, 3);
}

int coroutine_fn nbd_send_error(NbdClient *c, uint64_t cookie, uint32_t nbd_err,
                                const char *msg)
{
    uint8_t p[6];
    size_t mlen = msg ? strlen(msg) : 0;

    if (!c->structured) {
        return nbd_send_simple(c, cookie, nbd_err, NULL, 0);
    }
    if (mlen > NBD_MAX_STRING) {
        mlen = NBD_MAX_STRING;
    }
    st_be32(p, nbd_err);
    st_be16(p + 4, (uint16_t)mlen);
    return nbd_send_chunk(c, cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR, p, sizeof(p),
                          msg, mlen);
}

int coroutine_fn nbd_send_result(NbdClient *c, uint64_t cookie, int ret, const char *msg)
{
    /* Commands without data get simple replies even when structured ones were negotiated. */
    return nbd_send_simple(c, cookie, ret < 0 ? nbd_errno_to_wire(ret) : 0, NULL, 0);
}
