/*
 * The "nbd" protocol driver: a node backed by an export of an NBD server.
 * nbd://host[:port]/export, nbd+unix:///export?socket=path (and nbd+tcp://)
 * or driver=nbd with server.type/host/port/path and export options.
 *
 * Reads, writes (FUA), flush, trim, write-zeroes (NO_HOLE, FAST_ZERO) and
 * block status (base:allocation, so a convert from NBD stays sparse) map to
 * the NBD commands the server advertises. Many requests are in flight at
 * once on one connection. Not implemented: TLS, reconnecting after the
 * server drops (requests then fail with EIO), multiple connections.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivers/drivers.h"
#include "drivers/protocol/nbd/nbd-int.h"

static const char *const nbd_option_names[] = {
    "filename", "server.type", "server.host", "server.port", "server.path", "export", NULL,
};

static void set_filename(BlockDriverState *bs, const NbdAddr *a)
{
    if (a->is_unix) {
        snprintf(bs->filename, sizeof(bs->filename), "nbd+unix:///%s?socket=%s",
                 a->export_name, a->path);
    } else {
        snprintf(bs->filename, sizeof(bs->filename), "nbd://%s:%s/%s", a->host,
                 a->port ? a->port : "10809", a->export_name);
    }
}

/* Handshake time limit at open. */
#define NBD_CONNECT_TIMEOUT_NS (30LL * 1000 * 1000 * 1000)

typedef struct NegotiateCo {
    BDRVNbdState *s;
    Error *err;
    int ret;
    bool done;
} NegotiateCo;

static void coroutine_fn negotiate_entry(void *opaque)
{
    NegotiateCo *n = opaque;

    n->ret = nbd_negotiate(n->s, &n->err);
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
static int negotiate(BDRVNbdState *s, AioContext *ctx, Error **errp)
{
    NegotiateCo n = { .s = s };
    AioTimer t;

    aio_timer_init(&t, ctx, negotiate_timeout, &s->chan);
    aio_timer_mod(&t, aio_clock_ns() + NBD_CONNECT_TIMEOUT_NS);
    aio_co_enter(ctx, coroutine_create(negotiate_entry, &n));
    while (!n.done) {
        aio_poll(ctx, true);
    }
    aio_timer_del(&t);
    error_propagate(errp, n.err);
    return n.ret;
}

static int nbd_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVNbdState *s = bs->opaque;
    int fd, ret;

    ret = nbd_addr_from_opts(&s->addr, options, errp);
    if (ret < 0) {
        return ret;
    }
    set_filename(bs, &s->addr);
    fd = nbd_addr_connect(&s->addr, errp);
    if (fd < 0) {
        ret = fd;
        goto out_addr;
    }
    ret = nbd_chan_init(&s->chan, fd, bdrv_get_aio_context(bs));
    if (ret == 0) {
        ret = negotiate(s, bdrv_get_aio_context(bs), errp);
    }
    if (ret < 0) {
        goto out_close;
    }
    if ((flags & BDRV_O_RDWR) && (s->info.tflags & NBD_FLAG_READ_ONLY)) {
        error_setg(errp, "export '%s' is read-only", s->addr.export_name);
        ret = -EACCES;
        goto out_close;
    }
    co_mutex_init(&s->send_lock);
    co_queue_init(&s->free_slots);
    bs->supported_write_flags = (s->info.tflags & NBD_FLAG_SEND_FUA) ? BDRV_REQ_FUA : 0;
    bs->supported_zero_flags = bs->supported_write_flags | BDRV_REQ_MAY_UNMAP |
                               ((s->info.tflags & NBD_FLAG_SEND_FAST_ZERO) ?
                                BDRV_REQ_NO_FALLBACK : 0);
    nbd_client_start_reader(bs);
    return 0;

out_close:
    nbd_chan_close(&s->chan);
out_addr:
    nbd_addr_free(&s->addr);
    return ret;
}

static void nbd_close(BlockDriverState *bs)
{
    BDRVNbdState *s = bs->opaque;

    nbd_client_stop(bs);
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
