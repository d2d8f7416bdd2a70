/*
 * The "nbd" protocol driver: a node backed by an export of an NBD server.
 * nbd://host[:port]/export, nbd+unix:///export?socket=path (and nbd+tcp://)
 * or driver=nbd with server.type/host/port/path and export options.
 *
 * Reads, writes (FUA), flush, trim, write-zeroes (NO_HOLE, FAST_ZERO) and
 * block status (base:allocation, so a convert from NBD stays sparse) map to
 * the NBD commands the server advertises. Many requests are in flight at
 * once; with connections=N (up to 16) and a server that advertises
 * NBD_FLAG_CAN_MULTI_CONN, requests spread over N sockets, each with its own
 * reader (one flush covers every connection, as MULTI_CONN promises).
 *
 * TLS (tls.c in nbd/): nbds:// URLs, or the options tls-certificates=DIR
 * (ca-cert.pem, optional client-cert.pem + client-key.pem), tls-psk-file=
 * FILE with tls-username=NAME, and tls-hostname=NAME (default: the inet
 * host; over a Unix socket only the chain is checked unless it is given).
 * The client sends NBD_OPT_STARTTLS first and never falls back to
 * plaintext: a refusal fails the open.
 *
 * When the server drops, requests fail with EIO unless
 * reconnect-delay=SECONDS is set: then a lost connection
 * is re-established in the background (every 200 ms) and requests wait up
 * to that long for it and are sent again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivers/drivers.h"
#include "drivers/protocol/nbd/nbd-int.h"

static const char *const nbd_option_names[] = {
    "filename", "server.type", "server.host", "server.port", "server.path", "export",
    "connections", "reconnect-delay", "tls-certificates", "tls-psk-file", "tls-username",
    "tls-hostname", NULL,
};

static void set_filename(BlockDriverState *bs, const NbdAddr *a)
{
    const char *s = a->tls ? "s" : "";

    if (a->is_unix) {
        snprintf(bs->filename, sizeof(bs->filename), "nbd%s+unix:///%s?socket=%s", s,
                 a->export_name, a->path);
    } else {
        snprintf(bs->filename, sizeof(bs->filename), "nbd%s://%s:%s/%s", s, a->host,
                 a->port ? a->port : "10809", a->export_name);
    }
}

/* The tls-* options (they override the URL's query and turn TLS on). */
static int take_tls_opts(NbdAddr *a, BlockOpts *options, Error **errp)
{
    static const char *const keys[] = { "tls-certificates", "tls-psk-file", "tls-username",
                                        "tls-hostname" };
    char **slots[] = { &a->tls_dir, &a->tls_psk, &a->tls_user, &a->tls_hostname };

    for (int i = 0; i < 4; i++) {
        char *v = NULL;
        int ret = bopts_take_str(options, keys[i], &v, errp);

        if (ret < 0) {
            return ret;
        }
        if (v) {
            free(*slots[i]);
            *slots[i] = v;
            a->tls = true;
        }
    }
    if (a->tls_dir && a->tls_psk) {
        error_setg(errp, "tls-certificates and tls-psk-file are mutually exclusive");
        return -EINVAL;
    }
    if (a->tls_user && !a->tls_psk) {
        error_setg(errp, "tls-username needs tls-psk-file");
        return -EINVAL;
    }
    return 0;
}

/* TLS credentials for the connections (NULL without TLS). */
static int make_tls_creds(BDRVNbdState *s, Error **errp)
{
    const NbdAddr *a = &s->addr;

    if (!a->tls) {
        return 0;
    }
    s->tls = a->tls_psk ? nbd_tls_creds_new_psk(a->tls_psk, false, a->tls_user, errp) :
             nbd_tls_creds_new_x509(a->tls_dir, false, true, errp);
    return s->tls ? 0 : -EINVAL;
}

/* Handshake time limit at open. */
#define NBD_CONNECT_TIMEOUT_NS (30LL * 1000 * 1000 * 1000)

typedef struct NegotiateCo {
    NbdConn *c;
    Error *err;
    int ret;
    bool done;
} NegotiateCo;

static void coroutine_fn negotiate_entry(void *opaque)
{
    NegotiateCo *n = opaque;

    n->ret = nbd_negotiate(n->c, &n->err);
    n->done = true;
}

static void negotiate_timeout(void *opaque)
{
    nbd_chan_shutdown(opaque);
}

/*
 * Runs the handshake in a coroutine while polling the node's context, so a
 * server in the same context (an embedder serving itself) makes progress;
 * a timer shuts the socket down if the server stalls.
 */
static int negotiate(NbdConn *c, Error **errp)
{
    NegotiateCo n = { .c = c };
    AioTimer t;

    aio_timer_init(&t, c->ctx, negotiate_timeout, &c->chan);
    aio_timer_mod(&t, aio_clock_ns() + NBD_CONNECT_TIMEOUT_NS);
    aio_co_enter(c->ctx, coroutine_create(negotiate_entry, &n));
    while (!n.done) {
        aio_poll(c->ctx, true);
    }
    aio_timer_del(&t);
    error_propagate(errp, n.err);
    return n.ret;
}

/* Opens and negotiates one connection (its reader is not started yet). */
static NbdConn *conn_open(BDRVNbdState *s, AioContext *ctx, Error **errp)
{
    NbdConn *c = calloc(1, sizeof(*c));
    int fd, ret;

    if (!c) {
        error_setg(errp, "out of memory");
        return NULL;
    }
    c->addr = &s->addr;
    c->tls = s->tls;
    c->ctx = ctx;
    c->reconnect_delay_ns = s->reconnect_delay_ns;
    fd = nbd_addr_connect(&s->addr, errp);
    if (fd < 0) {
        free(c);
        return NULL;
    }
    ret = nbd_chan_init(&c->chan, fd, ctx);
    if (ret == 0) {
        ret = negotiate(c, errp);
    }
    if (ret < 0) {
        nbd_chan_close(&c->chan);
        free(c);
        return NULL;
    }
    return c;
}

static void conns_close_unstarted(BDRVNbdState *s)
{
    for (unsigned i = 0; i < s->nconns; i++) {
        nbd_chan_close(&s->conns[i]->chan);
        free(s->conns[i]);
    }
    s->nconns = 0;
}

/* Opens connections 2..want when the server allows several (NBD_FLAG_CAN_MULTI_CONN). */
static int open_more_conns(BDRVNbdState *s, AioContext *ctx, unsigned want, Error **errp)
{
    if (want > 1 && !(s->info.tflags & NBD_FLAG_CAN_MULTI_CONN)) {
        coblk_warn("nbd: %s does not allow several connections; using one",
                   s->addr.export_name[0] ? s->addr.export_name : "the export");
        want = 1;
    }
    while (s->nconns < want) {
        NbdConn *c = conn_open(s, ctx, errp);

        if (!c) {
            return -EIO;
        }
        s->conns[s->nconns++] = c;
        if (c->info.size != s->info.size || c->info.tflags != s->info.tflags ||
            c->have_base != s->have_base) {
            error_setg(errp, "connection %u to the export disagrees with the first one",
                       s->nconns);
            return -EPROTO;
        }
    }
    return 0;
}

static int nbd_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVNbdState *s = bs->opaque;
    AioContext *ctx = bdrv_get_aio_context(bs);
    uint64_t want, delay;
    NbdConn *c;
    int ret;

    if (bopts_take_uint64(options, "connections", 1, &want, errp) < 0 ||
        bopts_take_uint64(options, "reconnect-delay", 0, &delay, errp) < 0) {
        return -EINVAL;
    }
    if (delay > 3600) {
        error_setg(errp, "reconnect-delay=%llu is above 3600 seconds",
                   (unsigned long long)delay);
        return -EINVAL;
    }
    s->reconnect_delay_ns = (int64_t)delay * 1000 * 1000 * 1000;
    if (want < 1 || want > NBD_MAX_CONNS) {
        error_setg(errp, "connections=%llu is not between 1 and %d", (unsigned long long)want,
                   NBD_MAX_CONNS);
        return -EINVAL;
    }
    ret = nbd_addr_from_opts(&s->addr, options, errp);
    if (ret < 0) {
        return ret;
    }
    ret = take_tls_opts(&s->addr, options, errp);
    if (ret == 0) {
        ret = make_tls_creds(s, errp);
    }
    if (ret < 0) {
        goto out_addr;
    }
    set_filename(bs, &s->addr);
    c = conn_open(s, ctx, errp);
    if (!c) {
        ret = -EIO;
        goto out_addr;
    }
    s->conns[0] = c;
    s->nconns = 1;
    s->info = c->info;
    s->have_base = c->have_base;
    if ((flags & BDRV_O_RDWR) && (s->info.tflags & NBD_FLAG_READ_ONLY)) {
        error_setg(errp, "export '%s' is read-only", s->addr.export_name);
        ret = -EACCES;
        goto out_conns;
    }
    ret = open_more_conns(s, ctx, (unsigned)want, errp);
    if (ret < 0) {
        goto out_conns;
    }
    bs->supported_write_flags = (s->info.tflags & NBD_FLAG_SEND_FUA) ? BDRV_REQ_FUA : 0;
    bs->supported_zero_flags = bs->supported_write_flags | BDRV_REQ_MAY_UNMAP |
                               ((s->info.tflags & NBD_FLAG_SEND_FAST_ZERO) ?
                                BDRV_REQ_NO_FALLBACK : 0);
    for (unsigned i = 0; i < s->nconns; i++) {
        nbd_conn_start_reader(s->conns[i]);
    }
    return 0;

out_conns:
    conns_close_unstarted(s);
out_addr:
    nbd_tls_creds_free(s->tls);
    s->tls = NULL;
    nbd_addr_free(&s->addr);
    return ret;
}

static void nbd_close(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    for (unsigned i = 0; i < s->nconns; i++) {
        nbd_conn_stop(s->conns[i]);
        free(s->conns[i]);
    }
    s->nconns = 0;
    nbd_tls_creds_free(s->tls);
    s->tls = NULL;
    nbd_addr_free(&s->addr);
}

static void nbd_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVNbdState *s = bs->opaque;
    uint32_t align = s->info.have_block_size ? s->info.min_block : 1;
    uint32_t max = NBD_MAX_PAYLOAD;

    if (s->info.have_block_size && s->info.max_block < max) {
        max = s->info.max_block;
    }
    bs->bl.request_alignment = align;
    bs->bl.max_transfer = max / align * align;
    bs->bl.opt_transfer = s->info.have_block_size ? s->info.pref_block : 0;
    /* Zero and trim carry no payload: up to 2^31 bytes per command. */
    bs->bl.max_pwrite_zeroes = (1u << 31) / align * align;
    bs->bl.max_pdiscard = bs->bl.max_pwrite_zeroes;
    bs->bl.max_iov = 1024;
}

static int coroutine_fn nbd_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    return nbd_client_request(bs, NBD_CMD_READ, 0, (uint64_t)offset, (uint32_t)bytes, qiov,
                              qiov_offset, NULL);
}

static int coroutine_fn nbd_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    uint16_t f = (flags & BDRV_REQ_FUA) ? NBD_CMD_FLAG_FUA : 0;

    return nbd_client_request(bs, NBD_CMD_WRITE, f, (uint64_t)offset, (uint32_t)bytes, qiov,
                              qiov_offset, NULL);
}

static int coroutine_fn nbd_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    BDRVNbdState *s = bs->opaque;
    uint16_t f = 0;

    if (!(s->info.tflags & NBD_FLAG_SEND_WRITE_ZEROES)) {
        return -ENOTSUP;
    }
    if (flags & BDRV_REQ_FUA) {
        f |= NBD_CMD_FLAG_FUA;
    }
    if (!(flags & BDRV_REQ_MAY_UNMAP)) {
        f |= NBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & BDRV_REQ_NO_FALLBACK) {
        f |= NBD_CMD_FLAG_FAST_ZERO;
    }
    return nbd_client_request(bs, NBD_CMD_WRITE_ZEROES, f, (uint64_t)offset, (uint32_t)bytes,
                              NULL, 0, NULL);
}

static int coroutine_fn nbd_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVNbdState *s = bs->opaque;

    if (!(s->info.tflags & NBD_FLAG_SEND_TRIM)) {
        return 0; /* discard is advisory */
    }
    return nbd_client_request(bs, NBD_CMD_TRIM, 0, (uint64_t)offset, (uint32_t)bytes, NULL, 0,
                              NULL);
}

static int coroutine_fn nbd_co_flush(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    if (!(s->info.tflags & NBD_FLAG_SEND_FLUSH)) {
        return 0;
    }
    return nbd_client_request(bs, NBD_CMD_FLUSH, 0, 0, 0, NULL, 0, NULL);
}

static int coroutine_fn nbd_co_block_status(BlockDriverState *bs, bool want_zero,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file)
{
    BDRVNbdState *s = bs->opaque;
    NbdClientReq res;
    uint32_t align = bs->bl.request_alignment ? bs->bl.request_alignment : 1;
    uint32_t len = bytes > (1 << 30) ? (1u << 30) : (uint32_t)bytes;
    int ret;

    *map = offset;
    *file = bs;
    if (!s->have_base) {
        *pnum = bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    ret = nbd_client_request(bs, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, (uint64_t)offset,
                             len, NULL, 0, &res);
    if (ret < 0) {
        return ret;
    }
    *pnum = res.status_len;
    /* A server extent shorter than our alignment: report the aligned block as data. */
    if (*pnum < align && *pnum < bytes) {
        *pnum = align < bytes ? align : bytes;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    return BDRV_BLOCK_OFFSET_VALID |
           ((res.status_flags & NBD_STATE_HOLE) ? 0 : BDRV_BLOCK_DATA) |
           ((res.status_flags & NBD_STATE_ZERO) ? BDRV_BLOCK_ZERO : 0);
}

static int64_t coroutine_fn nbd_co_getlength(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    return (int64_t)s->info.size;
}

#define NBD_DRIVER(var, proto)                          \
    const BlockDriver var = {                           \
        .struct_size = sizeof(BlockDriver),             \
        .format_name = "nbd",                           \
        .protocol_name = proto,                         \
        .instance_size = sizeof(BDRVNbdState),          \
        .is_protocol = true,                            \
        .option_names = nbd_option_names,               \
        .bdrv_open = nbd_open,                          \
        .bdrv_close = nbd_close,                        \
        .refresh_limits = nbd_refresh_limits,           \
        .co_preadv = nbd_co_preadv,                     \
        .co_pwritev = nbd_co_pwritev,                   \
        .co_pwrite_zeroes = nbd_co_pwrite_zeroes,       \
        .co_pdiscard = nbd_co_pdiscard,                 \
        .co_flush_to_disk = nbd_co_flush,               \
        .co_block_status = nbd_co_block_status,         \
        .co_getlength = nbd_co_getlength,               \
    }

NBD_DRIVER(bdrv_nbd, "nbd");
NBD_DRIVER(bdrv_nbd_tcp, "nbd+tcp");
NBD_DRIVER(bdrv_nbd_unix, "nbd+unix");
/* nbds URLs: TLS is mandatory (format_name "nbd": the same driver). */
NBD_DRIVER(bdrv_nbds, "nbds");
NBD_DRIVER(bdrv_nbds_tcp, "nbds+tcp");
NBD_DRIVER(bdrv_nbds_unix, "nbds+unix");
