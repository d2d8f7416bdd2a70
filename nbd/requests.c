/*
 * Transmission: the client's main coroutine reads request headers (and
 * write payloads) one after another and starts one coroutine per request,
 * up to max_requests in flight; request coroutines do the I/O on the
 * export's BlockBackend and send their reply.
 *
 * Every request is checked by nbd_check_request() before anything is
 * allocated for it: a bad magic or a write above 32 MiB disconnects the
 * client; unknown commands or flags, lengths above 32 MiB and ranges beyond
 * the export get an error reply (a refused write's payload is read and
 * dropped) and the connection goes on.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "coblk/image.h"
#include "nbd/server-int.h"

/* Most extents per metadata context in one BLOCK_STATUS reply. */
#define NBD_MAX_EXTENTS 256
/*
 * Most payload bytes (write data and read buffers) held for one client's
 * requests in flight: without it 64 requests of 32 MiB would pin 2 GiB per
 * client. The reader stops reading requests until enough of them complete.
 */
#define NBD_MAX_INFLIGHT_BYTES (128u * 1024 * 1024)

/* Request records (and their buffers) kept for reuse per client, up to this many bytes. */
#define NBD_BUF_CACHE_BYTES (64u * 1024 * 1024)

struct NbdReq {
    NbdReq *next_free;
    NbdClient *c;
    NbdRequest req;
    uint8_t *buf;
    size_t cap;
    uint32_t bytes;     /* counted in inflight_bytes */
};

static size_t buf_size_for(uint32_t len)
{
    size_t cap = 4096;

    while (cap < len) {
        cap <<= 1;
    }
    return cap;
}

/*
 * A request record with a buffer of at least len bytes (4 KiB aligned),
 * from the client's cache when one fits: the steady state allocates nothing.
 */
static NbdReq *req_get(NbdClient *c, uint32_t len)
{
    NbdReq *r = c->free_reqs;

    if (r) {
        c->free_reqs = r->next_free;
        c->cached_bytes -= r->cap;
    } else if (!(r = calloc(1, sizeof(*r)))) {
        return NULL;
    }
    if (len && r->cap < len) {
        free(r->buf);
        r->cap = 0;
        if (posix_memalign((void **)&r->buf, 4096, buf_size_for(len))) {
            r->buf = NULL;
            free(r);
            return NULL;
        }
        r->cap = buf_size_for(len);
    }
    r->c = c;
    return r;
}

static void req_put(NbdClient *c, NbdReq *r)
{
    if (c->cached_bytes + r->cap > NBD_BUF_CACHE_BYTES) {
        free(r->buf);
        free(r);
        return;
    }
    c->cached_bytes += r->cap;
    r->next_free = c->free_reqs;
    c->free_reqs = r;
}

void nbd_client_free_reqs(NbdClient *c)
{
    while (c->free_reqs) {
        NbdReq *r = c->free_reqs;

        c->free_reqs = r->next_free;
        free(r->buf);
        free(r);
    }
    c->cached_bytes = 0;
}

static void coroutine_fn req_done(NbdReq *r)
{
    NbdClient *c = r->c;

    c->inflight_bytes -= r->bytes;
    req_put(c, r);
    c->in_flight--;
    co_queue_next(&c->slots);
    if (c->in_flight == 0 && c->drain_waiter) {
        Coroutine *co = c->drain_waiter;

        c->drain_waiter = NULL;
        aio_co_wake(co);
    }
}

static int coroutine_fn preadv_buf(NbdClient *c, uint64_t offset, uint32_t len, void *buf)
{
    IOVector qiov;

    iovector_init_buf(&qiov, buf, len);
    return blk_co_preadv(c->exp->blk, (int64_t)offset, len, &qiov, 0);
}

static int coroutine_fn send_data_chunk(NbdClient *c, uint64_t cookie, uint16_t flags,
                                        uint64_t offset, const void *buf, uint32_t len)
{
    uint8_t p[8];

    st_be64(p, offset);
    return nbd_send_chunk(c, cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, p, 8, buf, len);
}

static int coroutine_fn send_hole_chunk(NbdClient *c, uint64_t cookie, uint16_t flags,
                                        uint64_t offset, uint32_t len)
{
    uint8_t p[12];

    st_be64(p, offset);
    st_be32(p + 8, len);
    return nbd_send_chunk(c, cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, p, 12, NULL, 0);
}

/* Whole request in one piece: a simple reply, or one data chunk (DF). */
static int coroutine_fn read_flat(NbdReq *r)
{
    NbdClient *c = r->c;
    const NbdRequest *q = &r->req;
    int ret = preadv_buf(c, q->offset, q->len, r->buf);

    if (!c->structured) {
        return nbd_send_simple(c, q->cookie, ret < 0 ? nbd_errno_to_wire(ret) : 0, r->buf,
                               q->len);
    }
    if (ret < 0) {
        return nbd_send_error(c, q->cookie, nbd_errno_to_wire(ret), "read failed");
    }
    return send_data_chunk(c, q->cookie, NBD_REPLY_FLAG_DONE, q->offset, r->buf, q->len);
}

/*
 * Structured reads: zero runs become hole chunks. Holes are found in the data
 * read (64 KiB blocks that are all zero), not with block status: asking the
 * file for SEEK_HOLE on every read costs milliseconds on tmpfs and is
 * redundant with NBD_CMD_BLOCK_STATUS, which clients use for sparseness.
 */
#define NBD_HOLE_GRANULE (64u * 1024)

static bool granule_is_zero(const uint8_t *p, uint32_t len)
{
    return len && p[0] == 0 && !memcmp(p, p + 1, len - 1);
}

/* Length of the run from pos of granules that are all zero (*zero) or not. */
static uint32_t next_run(const uint8_t *buf, uint32_t pos, uint32_t len, bool *zero)
{
    uint32_t end = pos;

    *zero = false;
    while (end < len) {
        uint32_t g = len - end < NBD_HOLE_GRANULE ? len - end : NBD_HOLE_GRANULE;
        bool z = g == NBD_HOLE_GRANULE && granule_is_zero(buf + end, g);

        if (end == pos) {
            *zero = z;
        } else if (z != *zero) {
            break;
        }
        end += g;
    }
    return end - pos;
}

static int coroutine_fn read_sparse(NbdReq *r)
{
    NbdClient *c = r->c;
    const NbdRequest *q = &r->req;
    uint32_t pos = 0;
    int ret = preadv_buf(c, q->offset, q->len, r->buf);

    if (ret < 0) {
        return nbd_send_error(c, q->cookie, nbd_errno_to_wire(ret), "read failed");
    }
    while (pos < q->len) {
        bool zero;
        uint32_t run = next_run(r->buf, pos, q->len, &zero);
        uint16_t done = pos + run == q->len ? NBD_REPLY_FLAG_DONE : 0;

        if (zero) {
            ret = send_hole_chunk(c, q->cookie, done, q->offset + pos, run);
        } else {
            ret = send_data_chunk(c, q->cookie, done, q->offset + pos, r->buf + pos, run);
        }
        if (ret < 0) {
            return ret;
        }
        pos += run;
    }
    return 0;
}

static int coroutine_fn do_read(NbdReq *r)
{
    if (!r->c->structured || (r->req.flags & NBD_CMD_FLAG_DF) ||
        r->req.len < NBD_HOLE_GRANULE) {
        return read_flat(r);
    }
    return read_sparse(r);
}

/* CACHE: read the range (into a bounded scratch buffer) so later reads are fast. */
static int coroutine_fn do_cache(NbdReq *r)
{
    const NbdRequest *q = &r->req;
    uint32_t chunk = q->len < (1u << 20) ? q->len : (1u << 20);
    uint8_t *buf = malloc(chunk);
    int ret = buf ? 0 : -ENOMEM;

    for (uint32_t pos = 0; ret == 0 && pos < q->len; pos += chunk) {
        uint32_t n = q->len - pos < chunk ? q->len - pos : chunk;

        ret = preadv_buf(r->c, q->offset + pos, n, buf);
    }
    free(buf);
    return nbd_send_result(r->c, q->cookie, ret, NULL);
}

/* The status flags of one context for a block status result. */
static uint32_t status_flags(uint32_t id, int ret, int depth)
{
    if (id == NBD_META_ID_DEPTH) {
        return (uint32_t)depth;
    }
    if (id == NBD_META_ID_BITMAP) {
        return (uint32_t)ret; /* 1: dirty */
    }
    return ((ret & BDRV_BLOCK_DATA) ? 0 : NBD_STATE_HOLE) |
           ((ret & BDRV_BLOCK_ZERO) ? NBD_STATE_ZERO : 0);
}

/* Builds the descriptors of one context into p (id then length/flags pairs). */
static int coroutine_fn build_extents(NbdReq *r, uint32_t id, uint8_t *p, uint32_t *plen)
{
    const NbdRequest *q = &r->req;
    BlockDriverState *bs = blk_bs(r->c->exp->blk);
    unsigned max = (q->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : NBD_MAX_EXTENTS;
    unsigned n = 0;
    uint32_t pos = 0, last_flags = 0;

    st_be32(p, id);
    while (pos < q->len) {
        int64_t pnum = 0, map;
        BlockDriverState *file;
        int depth = 0;
        int ret = id == NBD_META_ID_BITMAP
                      ? bdrv_bitmap_query(bs, r->c->exp->bitmap, (int64_t)(q->offset + pos),
                                          q->len - pos, &pnum)
                      : bdrv_co_block_status_above(bs, NULL, (int64_t)(q->offset + pos),
                                                   q->len - pos, &pnum, &map, &file, &depth);
        uint32_t flags;

        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0 || pnum > q->len - pos) {
            break;
        }
        flags = status_flags(id, ret, depth);
        if (n && flags == last_flags) {
            uint8_t *d = p + 4 + 8 * (n - 1);

            st_be32(d, ld_be32(d) + (uint32_t)pnum);
        } else if (n == max) {
            break;
        } else {
            st_be32(p + 4 + 8 * n, (uint32_t)pnum);
            st_be32(p + 8 + 8 * n, flags);
            last_flags = flags;
            n++;
        }
        pos += (uint32_t)pnum;
    }
    *plen = 4 + 8 * n;
    return n ? 0 : -EIO;
}

static int coroutine_fn do_block_status(NbdReq *r)
{
    NbdClient *c = r->c;
    uint32_t ids[3], n = 0;
    uint8_t *p = malloc(4 + 8 * NBD_MAX_EXTENTS);
    int ret = 0;

    if (!p) {
        return nbd_send_error(c, r->req.cookie, NBD_ENOMEM, "out of memory");
    }
    if (c->meta_base) {
        ids[n++] = NBD_META_ID_BASE;
    }
    if (c->meta_depth) {
        ids[n++] = NBD_META_ID_DEPTH;
    }
    if (c->meta_bitmap) {
        ids[n++] = NBD_META_ID_BITMAP;
    }
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        uint32_t plen;

        ret = build_extents(r, ids[i], p, &plen);
        if (ret < 0) {
            ret = nbd_send_error(c, r->req.cookie, nbd_errno_to_wire(ret),
                                 "block status failed");
            break;
        }
        ret = nbd_send_chunk(c, r->req.cookie, i + 1 == n ? NBD_REPLY_FLAG_DONE : 0,
                             NBD_REPLY_TYPE_BLOCK_STATUS, p, plen, NULL, 0);
    }
    free(p);
    return ret;
}

static int coroutine_fn do_write_zeroes(NbdReq *r)
{
    const NbdRequest *q = &r->req;
    BdrvRequestFlags f = 0;
    int ret;

    if (!(q->flags & NBD_CMD_FLAG_NO_HOLE)) {
        f |= BDRV_REQ_MAY_UNMAP;
    }
    if (q->flags & NBD_CMD_FLAG_FAST_ZERO) {
        f |= BDRV_REQ_NO_FALLBACK;
    }
    if (q->flags & NBD_CMD_FLAG_FUA) {
        f |= BDRV_REQ_FUA;
    }
    ret = blk_co_pwrite_zeroes(r->c->exp->blk, (int64_t)q->offset, q->len, f);
    if (ret < 0 && (q->flags & NBD_CMD_FLAG_FAST_ZERO)) {
        ret = -ENOTSUP; /* the spec wants ENOTSUP when a fast zero is not possible */
    }
    return nbd_send_result(r->c, q->cookie, ret, NULL);
}

static int coroutine_fn run_request(NbdReq *r)
{
    NbdClient *c = r->c;
    BlockBackend *blk = c->exp->blk;
    const NbdRequest *q = &r->req;
    bool fua = q->flags & NBD_CMD_FLAG_FUA;
    IOVector qiov;
    int ret;

    switch (q->type) {
    case NBD_CMD_READ:
        return do_read(r);
    case NBD_CMD_WRITE:
        iovector_init_buf(&qiov, r->buf, q->len);
        ret = blk_co_pwritev(blk, (int64_t)q->offset, q->len, &qiov, fua ? BDRV_REQ_FUA : 0);
        return nbd_send_result(c, q->cookie, ret, NULL);
    case NBD_CMD_FLUSH:
        return nbd_send_result(c, q->cookie, blk_co_flush(blk), NULL);
    case NBD_CMD_TRIM:
        ret = blk_co_pdiscard(blk, (int64_t)q->offset, q->len);
        if (ret == 0 && fua) {
            ret = blk_co_flush(blk);
        }
        return nbd_send_result(c, q->cookie, ret, NULL);
    case NBD_CMD_WRITE_ZEROES:
        return do_write_zeroes(r);
    case NBD_CMD_CACHE:
        return do_cache(r);
    case NBD_CMD_BLOCK_STATUS:
        return do_block_status(r);
    default:
        return nbd_send_result(c, q->cookie, -EINVAL, NULL);
    }
}

static void coroutine_fn request_entry(void *opaque)
{
    NbdReq *r = opaque;
    NbdClient *c = r->c;

    if (run_request(r) < 0) {
        /* The reply could not be sent: the connection is unusable. */
        c->closing = true;
        nbd_chan_shutdown(&c->chan);
    }
    req_done(r);
}

/* A request refused by the checks: drop a write's payload, then reply with the error. */
static int coroutine_fn refuse_request(NbdClient *c, const NbdRequest *q, uint32_t err,
                                       const char *why)
{
    int ret = 0;

    if (q->type == NBD_CMD_WRITE) {
        ret = nbd_chan_skip(&c->chan, q->len);
    }
    if (ret == 0) {
        if (c->structured && (q->type == NBD_CMD_READ || q->type == NBD_CMD_BLOCK_STATUS)) {
            ret = nbd_send_error(c, q->cookie, err, why);
        } else {
            ret = nbd_send_simple(c, q->cookie, err, NULL, 0);
        }
    }
    return ret;
}

/* Allocates the request and its buffer, reading a write's payload. */
static int coroutine_fn prepare_request(NbdClient *c, const NbdRequest *q, NbdReq **out)
{
    bool data = q->type == NBD_CMD_READ || q->type == NBD_CMD_WRITE;
    NbdReq *r = req_get(c, data ? q->len : 0);
    int ret;

    if (!r) {
        /* Out of memory: refuse, keeping the stream in sync. */
        ret = refuse_request(c, q, NBD_ENOMEM, "out of memory");
        return ret < 0 ? ret : 1;
    }
    r->req = *q;
    if (q->type == NBD_CMD_WRITE) {
        ret = nbd_chan_read(&c->chan, r->buf, q->len);
        if (ret < 0) {
            req_put(c, r);
            return ret;
        }
    }
    *out = r;
    return 0;
}

/* Reads and starts one request: 0 to go on, 1 after DISC, -errno to drop the client. */
static int coroutine_fn read_one_request(NbdClient *c)
{
    uint8_t h[NBD_REQUEST_SIZE];
    NbdRequest q;
    NbdReq *r = NULL;
    uint32_t err;
    const char *why;
    int ret = nbd_chan_read(&c->chan, h, sizeof(h));

    if (ret < 0) {
        return ret;
    }
    nbd_decode_request(h, &q);
    switch (nbd_check_request(&q, &c->session, &err, &why)) {
    case NBD_CHECK_DISCONNECT:
        return -EPROTO;
    case NBD_CHECK_ERROR:
        return refuse_request(c, &q, err, why);
    case NBD_CHECK_OK:
        break;
    }
    if (q.type == NBD_CMD_DISC) {
        return 1;
    }
    ret = prepare_request(c, &q, &r);
    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    r->bytes = (q.type == NBD_CMD_READ || q.type == NBD_CMD_WRITE) ? q.len : 0;
    c->inflight_bytes += r->bytes;
    c->in_flight++;
    aio_co_enter(c->srv->ctx, coroutine_create(request_entry, r));
    return 0;
}

void coroutine_fn nbd_transmission(NbdClient *c)
{
    while (!c->closing) {
        while ((c->in_flight >= c->srv->opts.max_requests ||
                c->inflight_bytes >= NBD_MAX_INFLIGHT_BYTES) && !c->closing) {
            co_queue_wait(&c->slots, NULL);
        }
        if (c->closing || read_one_request(c) != 0) {
            break;
        }
    }
    c->closing = true;
}
