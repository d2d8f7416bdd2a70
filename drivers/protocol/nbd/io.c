/*
 * Transmission for the nbd driver. Request coroutines take a slot (at most
 * NBD_CLIENT_MAX_REQS in flight), send their header (and write payload)
 * under send_lock and yield; one reader coroutine reads every reply,
 * finds its slot by cookie, reads data straight into the request's
 * IOVector, and wakes the request when its reply is complete.
 *
 * Replies are untrusted: an unknown cookie or magic, a chunk whose type or
 * length does not fit its request (nbd_check_chunk), data outside the
 * requested range, or a read whose chunks do not cover the request kills
 * the connection; every request in flight then fails with -EIO.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/protocol/nbd/nbd-int.h"

static void complete_req(NbdClientReq *r)
{
    r->done = true;
    if (r->co) {
        Coroutine *co = r->co;

        r->co = NULL;
        aio_co_wake(co);
    }
}

static NbdClientReq *find_req(NbdConn *s, uint64_t cookie)
{
    uint64_t i = cookie & 0xffff;

    if (i >= NBD_CLIENT_MAX_REQS || !s->reqs[i].in_use || s->reqs[i].done ||
        s->reqs[i].cookie != cookie) {
        return NULL;
    }
    return &s->reqs[i];
}

/* Reads len bytes of data into r's vector at byte pos of the request. */
static int coroutine_fn read_into(NbdConn *s, NbdClientReq *r, uint64_t pos, uint32_t len)
{
    IOVector v;
    int ret;

    iovector_init(&v, 4);
    iovector_concat(&v, r->qiov, r->qiov_offset + pos, len);
    ret = nbd_chan_readv(&s->chan, v.iov, v.niov);
    iovector_destroy(&v);
    return ret;
}

static int coroutine_fn simple_reply(NbdConn *s, NbdClientReq *r, const NbdReplyHeader *h)
{
    int ret = 0;

    r->ret = h->error ? nbd_wire_to_errno(h->error) : 0;
    if (!h->error && r->type == NBD_CMD_READ) {
        ret = read_into(s, r, 0, r->len);
        r->covered = r->len;
    }
    if (!h->error && r->type == NBD_CMD_BLOCK_STATUS) {
        return -EPROTO; /* block status needs a structured reply */
    }
    complete_req(r);
    return ret;
}

static int coroutine_fn chunk_data(NbdConn *s, NbdClientReq *r, const NbdReplyHeader *h)
{
    uint8_t b[8];
    uint64_t off;
    uint32_t dlen = h->len - 8;
    int ret = nbd_chan_read(&s->chan, b, 8);

    if (ret < 0) {
        return ret;
    }
    off = ld_be64(b);
    if (off < r->offset || !range_within(off - r->offset, dlen, r->len)) {
        return -EPROTO;
    }
    r->covered += dlen;
    return read_into(s, r, off - r->offset, dlen);
}

static int coroutine_fn chunk_hole(NbdConn *s, NbdClientReq *r)
{
    uint8_t b[12];
    uint64_t off;
    uint32_t n;
    int ret = nbd_chan_read(&s->chan, b, 12);

    if (ret < 0) {
        return ret;
    }
    off = ld_be64(b);
    n = ld_be32(b + 8);
    if (!n || off < r->offset || !range_within(off - r->offset, n, r->len)) {
        return -EPROTO;
    }
    r->covered += n;
    iovector_memset(r->qiov, r->qiov_offset + (off - r->offset), 0, n);
    return 0;
}

/* Block status and error chunks: the payload is read whole (its length was capped). */
static int coroutine_fn chunk_payload(NbdConn *s, NbdClientReq *r, const NbdReplyHeader *h)
{
    uint8_t *p = malloc(h->len);
    int ret = p ? nbd_chan_read(&s->chan, p, h->len) : -ENOMEM;

    if (ret < 0) {
        free(p);
        return ret;
    }
    if (h->type == NBD_REPLY_TYPE_BLOCK_STATUS) {
        uint32_t len = ld_be32(p + 4);

        if (ld_be32(p) == s->base_id) {
            if (!len || len > r->len) {
                ret = -EPROTO;
            }
            r->status_have = true;
            r->status_len = len;
            r->status_flags = ld_be32(p + 8);
        }
    } else {
        uint32_t err = ld_be32(p);
        uint16_t mlen = ld_be16(p + 4);

        if (!err || mlen > h->len - 6) {
            ret = -EPROTO;
        }
        if (!r->ret) {
            r->ret = nbd_wire_to_errno(err);
        }
    }
    free(p);
    return ret;
}

static int coroutine_fn structured_chunk(NbdConn *s, NbdClientReq *r, NbdReplyHeader *h)
{
    uint8_t t[4];
    const char *why;
    int ret = nbd_chan_read(&s->chan, t, 4);

    if (ret < 0) {
        return ret;
    }
    nbd_decode_chunk_tail(t, h);
    if (nbd_check_chunk(h, r->type == NBD_CMD_READ, r->type == NBD_CMD_BLOCK_STATUS, r->len,
                        &why) < 0) {
        return -EPROTO;
    }
    switch (h->type) {
    case NBD_REPLY_TYPE_NONE:
        break;
    case NBD_REPLY_TYPE_OFFSET_DATA:
        ret = chunk_data(s, r, h);
        break;
    case NBD_REPLY_TYPE_OFFSET_HOLE:
        ret = chunk_hole(s, r);
        break;
    default:
        ret = chunk_payload(s, r, h);
        break;
    }
    if (ret < 0 || !(h->flags & NBD_REPLY_FLAG_DONE)) {
        return ret;
    }
    if (!r->ret && ((r->type == NBD_CMD_READ && r->covered != r->len) ||
                    (r->type == NBD_CMD_BLOCK_STATUS && !r->status_have))) {
        return -EPROTO;
    }
    complete_req(r);
    return 0;
}

/* Reads replies until the connection fails or is shut down. */
static void coroutine_fn read_replies(NbdConn *s)
{
    while (!s->dead) {
        uint8_t b[NBD_SIMPLE_REPLY_SIZE];
        NbdReplyHeader h;
        NbdClientReq *r;
        size_t more;
        int ret = nbd_chan_read(&s->chan, b, sizeof(b));

        if (ret < 0 || nbd_decode_reply_head(b, &h, &more) < 0 ||
            !(r = find_req(s, h.cookie)) || (more && !s->structured)) {
            break;
        }
        ret = more ? structured_chunk(s, r, &h) : simple_reply(s, r, &h);
        if (ret < 0) {
            break;
        }
    }
}

/* The connection is lost: every request in flight fails (and may be retried). */
static void fail_inflight(NbdConn *s)
{
    s->dead = true;
    nbd_chan_shutdown(&s->chan);
    for (int i = 0; i < NBD_CLIENT_MAX_REQS; i++) {
        NbdClientReq *r = &s->reqs[i];

        if (r->in_use && !r->done) {
            r->ret = -EIO;
            r->lost = true;
            complete_req(r);
        }
    }
    co_queue_restart_all(&s->free_slots);
}

static void reconnect_timeout(void *opaque)
{
    nbd_chan_shutdown(opaque);
}

/*
 * Connects and negotiates again on the same address. The export must look
 * the same (size, flags, block status) or the new connection is dropped.
 * Holds send_lock so that no sender touches the socket being replaced.
 */
static int coroutine_fn reconnect_once(NbdConn *s)
{
    NbdExportInfo old = s->info;
    bool old_base = s->have_base;
    Error *err = NULL;
    AioTimer t;
    int fd = nbd_addr_connect(s->addr, &err);
    int ret;

    if (fd < 0) {
        error_free(err);
        return fd;
    }
    co_mutex_lock(&s->send_lock);
    nbd_chan_close(&s->chan);
    ret = nbd_chan_init(&s->chan, fd, s->ctx);
    memset(&s->info, 0, sizeof(s->info));
    s->structured = s->have_base = false;
    aio_timer_init(&t, s->ctx, reconnect_timeout, &s->chan);
    aio_timer_mod(&t, aio_clock_ns() + NBD_RECONNECT_HANDSHAKE_NS);
    if (ret == 0) {
        ret = nbd_negotiate(s, &err);
    }
    aio_timer_del(&t);
    if (ret == 0 && (s->info.size != old.size || s->info.tflags != old.tflags ||
                     s->have_base != old_base)) {
        ret = -EPROTO;
    }
    if (ret < 0) {
        s->info = old;
        s->have_base = old_base;
        nbd_chan_shutdown(&s->chan);
    } else {
        s->dead = false;
    }
    co_mutex_unlock(&s->send_lock);
    error_free(err);
    return ret;
}

static void coroutine_fn reader_entry(void *opaque)
{
    NbdConn *s = opaque;

    for (;;) {
        read_replies(s);
        fail_inflight(s);
        if (s->stopping || !s->reconnect_delay_ns) {
            break;
        }
        while (!s->stopping && s->dead) {
            co_sleep_ns(NBD_RECONNECT_STEP_NS);
            if (!s->stopping) {
                reconnect_once(s);
            }
        }
        if (s->stopping) {
            break;
        }
    }
    s->reader_running = false;
}

void nbd_conn_start_reader(NbdConn *s)
{
    co_mutex_init(&s->send_lock);
    co_queue_init(&s->free_slots);
    s->reader_running = true;
    aio_co_enter(s->ctx, coroutine_create(reader_entry, s));
}

void nbd_conn_stop(NbdConn *s)
{
    s->stopping = true;
    if (!s->dead) {
        uint8_t h[NBD_REQUEST_SIZE];
        NbdRequest q = { .magic = NBD_REQUEST_MAGIC, .type = NBD_CMD_DISC };

        nbd_encode_request(h, &q);
        s->chan.poll_timeout_ms = 1000;
        nbd_chan_write(&s->chan, h, sizeof(h));
        nbd_tls_bye(&s->chan); /* close_notify while the socket is still up */
    }
    s->dead = true;
    nbd_chan_shutdown(&s->chan);
    while (s->reader_running) {
        aio_poll(s->ctx, true);
    }
    nbd_chan_close(&s->chan);
}

static NbdClientReq *coroutine_fn take_slot(NbdConn *s)
{
    while (!s->dead && s->in_flight >= NBD_CLIENT_MAX_REQS) {
        co_queue_wait(&s->free_slots, NULL);
    }
    if (s->dead) {
        return NULL;
    }
    for (int i = 0; i < NBD_CLIENT_MAX_REQS; i++) {
        NbdClientReq *r = &s->reqs[i];

        if (!r->in_use) {
            memset(r, 0, sizeof(*r));
            r->in_use = true;
            r->cookie = (uint64_t)i | ((uint64_t)++s->gen << 16);
            s->in_flight++;
            return r;
        }
    }
    abort(); /* in_flight counts the slots in use */
}

static void release_slot(NbdConn *s, NbdClientReq *r)
{
    r->in_use = false;
    s->in_flight--;
    co_queue_next(&s->free_slots);
}

static int coroutine_fn send_request(NbdConn *s, NbdClientReq *r, uint16_t flags,
                                     IOVector *qiov, size_t qiov_offset)
{
    uint8_t h[NBD_REQUEST_SIZE];
    NbdRequest q = {
        .magic = NBD_REQUEST_MAGIC, .flags = flags, .type = r->type,
        .cookie = r->cookie, .offset = r->offset, .len = r->len,
    };
    IOVector v;
    int ret;

    nbd_encode_request(h, &q);
    iovector_init(&v, 4);
    iovector_add(&v, h, sizeof(h));
    if (r->type == NBD_CMD_WRITE) {
        iovector_concat(&v, qiov, qiov_offset, r->len);
    }
    co_mutex_lock(&s->send_lock);
    ret = s->dead ? -EIO : nbd_chan_writev(&s->chan, v.iov, v.niov);
    co_mutex_unlock(&s->send_lock);
    iovector_destroy(&v);
    return ret;
}

/* The live connection with the fewest requests in flight (NULL: all are lost). */
static NbdConn *pick_conn(BDRVNbdState *st)
{
    NbdConn *best = NULL;

    for (unsigned i = 0; i < st->nconns; i++) {
        NbdConn *c = st->conns[i];

        if (!c->dead && (!best || c->in_flight < best->in_flight)) {
            best = c;
        }
    }
    return best;
}

/* One attempt on connection s; *lost when the connection failed under it. */
static int coroutine_fn request_on(NbdConn *s, uint16_t type, uint16_t flags,
                                   uint64_t offset, uint32_t len, IOVector *qiov,
                                   size_t qiov_offset, NbdClientReq *result, bool *lost)
{
    NbdClientReq *r = take_slot(s);
    int ret;

    *lost = !r;
    if (!r) {
        return -EIO;
    }
    r->type = type;
    r->offset = offset;
    r->len = len;
    r->qiov = qiov;
    r->qiov_offset = qiov_offset;
    if (send_request(s, r, flags, qiov, qiov_offset) < 0) {
        /* A partly sent request desynchronises the stream: the connection is lost. */
        s->dead = true;
        nbd_chan_shutdown(&s->chan);
        release_slot(s, r);
        *lost = true;
        return -EIO;
    }
    while (!r->done) {
        r->co = coroutine_self();
        coroutine_yield();
    }
    ret = r->ret;
    *lost = r->lost;
    if (result) {
        *result = *r;
    }
    release_slot(s, r);
    return ret;
}

/*
 * Sends a request on the least busy live connection. When connections are
 * lost and reconnect-delay is set, the request waits for a reconnection and
 * is sent again (every NBD command is idempotent), for at most the delay.
 */
int coroutine_fn nbd_client_request(BlockDriverState *bs, uint16_t type, uint16_t flags,
                                    uint64_t offset, uint32_t len, IOVector *qiov,
                                    size_t qiov_offset, NbdClientReq *result)
{
    BDRVNbdState *st = bs->opaque;
    int64_t deadline = 0;

    for (;;) {
        NbdConn *s = pick_conn(st);
        bool lost = true;
        int64_t now;
        int ret = -EIO;

        if (s) {
            ret = request_on(s, type, flags, offset, len, qiov, qiov_offset, result, &lost);
        }
        if (!lost || !st->reconnect_delay_ns) {
            return ret;
        }
        now = aio_clock_ns();
        if (!deadline) {
            deadline = now + st->reconnect_delay_ns;
        }
        if (now >= deadline) {
            return -EIO;
        }
        co_sleep_ns(deadline - now < NBD_RETRY_STEP_NS ? deadline - now : NBD_RETRY_STEP_NS);
    }
}
