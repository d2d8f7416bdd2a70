/*
 * coblk - the request layer: reads and writes.
 *
 * Every request is validated once here, tracked on its node for drain and
 * serialisation, padded to the node's request_alignment (read-modify-write of
 * the head and tail blocks only, through a pooled bounce buffer), split at
 * max_transfer / max_iov, and handed to the driver with only the flags it
 * supports; the others are emulated (FUA by a flush, write-zeroes by writing
 * zero buffers). Write-zeroes, discard and copy-on-read live in io-zero.c;
 * flush, truncate and length in io-misc.c; drain and limits in io-drain.c.
 */
#include <errno.h>
#include <string.h>

#include "coblk-config.h"
#include "block/io-int.h"

#define PAD_LOCAL_IOV 16

/* ---------------------------------------------------------------------- */
/* Validation */

int bdrv_check_request(int64_t offset, int64_t bytes, const IOVector *qiov, size_t qiov_offset)
{
    if (offset < 0 || bytes < 0 || offset > BDRV_MAX_LENGTH || bytes > BDRV_MAX_LENGTH - offset) {
        return -EINVAL;
    }
    if (qiov && (qiov_offset > qiov->size || (uint64_t)bytes > qiov->size - qiov_offset)) {
        return -EINVAL;
    }
    return 0;
}

/* Node checks shared by every request: medium present, writable for writes. */
static int bdrv_check_node(BdrvChild *child, bool write)
{
    if (!child || !child->bs || !child->bs->drv) {
        return -ENOMEDIUM;
    }
    if (write && child->bs->read_only) {
        return -EPERM;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Tracked requests and serialisation */

/*
 * Plain requests (reads and in-place writes) only conflict with serialising
 * ones. While none is in flight on the node, a plain request is not linked
 * into bs->tracked_requests at all: it only counts in bs->unlisted_in_flight
 * (linking and unlinking cost a cache miss on the neighbour, which lives on
 * another coroutine's stack). A serialising request that begins cannot see
 * the ranges of those unlisted requests, so it first waits until all of
 * them have ended; from then on serialising_in_flight is non-zero, so every
 * new plain request is listed and the usual overlap rules apply. The wait is
 * wider than needed (non-overlapping plain requests too) but bounded: no new
 * request becomes unlisted while a serialising one is in flight. Drain does
 * not use the list (it counts bs->in_flight).
 */

static bool tracked_overlaps(const BdrvTrackedRequest *a, const BdrvTrackedRequest *b)
{
    return a->overlap_offset < b->overlap_offset + b->overlap_bytes &&
           b->overlap_offset < a->overlap_offset + a->overlap_bytes;
}

/*
 * First request self must wait for. A request that is itself waiting is
 * skipped: it checks again when it wakes and will then wait for self, so
 * skipping it cannot let two conflicting requests run together, and it keeps
 * the waits-for graph free of cycles.
 */
static BdrvTrackedRequest *tracked_find_conflict(BdrvTrackedRequest *self)
{
    for (BdrvTrackedRequest *r = self->bs->tracked_requests; r; r = r->next) {
        if (r == self || (!r->serialising && !self->serialising)) {
            continue;
        }
        if (tracked_overlaps(r, self) && !r->waiting) {
            return r;
        }
    }
    return NULL;
}

void coroutine_fn bdrv_tracked_begin_listed(BdrvTrackedRequest *req, BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            BdrvTrackedType type, uint32_t serialise_align)
{
    BdrvTrackedRequest *r;

    *req = (BdrvTrackedRequest){
        .bs = bs, .offset = offset, .bytes = bytes, .type = type, .listed = true,
        .overlap_offset = offset, .overlap_bytes = bytes,
    };
    co_queue_init(&req->wait_queue);
    if (serialise_align) {
        int64_t end = ALIGN_UP64(offset + bytes, serialise_align);

        req->serialising = true;
        req->overlap_offset = ALIGN_DOWN64(offset, serialise_align);
        req->overlap_bytes = end - req->overlap_offset;
    }
    /*
     * No lock: a graph runs in one AioContext (one thread) at a time, and
     * nothing below yields except the waits.
     */
    req->next = bs->tracked_requests;
    req->pprev = &bs->tracked_requests;
    if (req->next) {
        req->next->pprev = &req->next;
    }
    bs->tracked_requests = req;
    if (req->serialising) {
        bs->serialising_in_flight++;
        /* Plain requests that began before it are not listed: wait for them all. */
        req->waiting = true;
        while (bs->unlisted_in_flight) {
            co_queue_wait(&bs->unlisted_waiters, NULL);
        }
        req->waiting = false;
    } else if (!bs->serialising_in_flight) {
        /* Plain requests only conflict with serialising ones: none in flight. */
        return;
    }
    while ((r = tracked_find_conflict(req)) != NULL) {
        req->waiting = true;
        co_queue_wait(&r->wait_queue, NULL);
        req->waiting = false;
    }
}

void coroutine_fn bdrv_tracked_end_listed(BdrvTrackedRequest *req)
{
    BlockDriverState *bs = req->bs;

    if (req->serialising) {
        bs->serialising_in_flight--;
    }
    *req->pprev = req->next;
    if (req->next) {
        req->next->pprev = req->pprev;
    }
    co_queue_restart_all(&req->wait_queue);
}

void bdrv_unlisted_drained(BlockDriverState *bs)
{
    co_queue_restart_all(&bs->unlisted_waiters);
}

/* ---------------------------------------------------------------------- */
/* Aligned requests: splitting and memory-alignment bouncing */

/* True if every piece of qiov in the range is aligned to the node's min_mem_alignment. */
static bool bdrv_qiov_mem_aligned(BlockDriverState *bs, const IOVector *qiov, size_t offset,
                                  int64_t bytes)
{
    uintptr_t mask = bs->bl.min_mem_alignment > 1 ? bs->bl.min_mem_alignment - 1 : 0;
    size_t skip = offset;

    if (!mask) {
        return true;
    }
    for (int i = 0; i < qiov->niov && bytes > 0; i++) {
        size_t len = qiov->iov[i].iov_len;
        uintptr_t base = (uintptr_t)qiov->iov[i].iov_base;

        if (skip >= len) {
            skip -= len;
            continue;
        }
        base += skip;
        len -= skip;
        skip = 0;
        if ((int64_t)len > bytes) {
            len = (size_t)bytes;
        }
        if ((base & mask) || (len & mask)) {
            return false;
        }
        bytes -= (int64_t)len;
    }
    return true;
}

/* Bytes of the range that fit in max_iov iovec entries (not yet aligned). */
static int64_t bdrv_limit_iov(BlockDriverState *bs, const IOVector *qiov, size_t offset,
                              int64_t bytes)
{
    int max_iov = bs->bl.max_iov;
    int64_t covered = 0;
    size_t skip = offset;
    int used = 0;

    if (max_iov <= 0 || qiov->niov <= max_iov) {
        return bytes;
    }
    for (int i = 0; i < qiov->niov && covered < bytes && used < max_iov; i++) {
        size_t len = qiov->iov[i].iov_len;

        if (skip >= len) {
            skip -= len;
            continue;
        }
        covered += (int64_t)(len - skip);
        skip = 0;
        used++;
    }
    return covered < bytes ? covered : bytes;
}

/* Largest chunk for a bounced transfer: aligned, within max_transfer and the pool limit. */
static int64_t bdrv_bounce_chunk(BlockDriverState *bs, int64_t bytes)
{
    int64_t align = bs->bl.request_alignment;
    int64_t n = bytes < BDRV_BOUNCE_MAX ? bytes : BDRV_BOUNCE_MAX;

    if (bs->bl.max_transfer && n > bs->bl.max_transfer) {
        n = bs->bl.max_transfer;
    }
    n = ALIGN_DOWN64(n, align);
    return n ? n : align;
}

/* Length of the next chunk to pass straight through, or 0 if it must bounce. */
static int64_t bdrv_direct_chunk(BlockDriverState *bs, const IOVector *qiov, size_t qiov_offset,
                                 int64_t bytes)
{
    int64_t n = bytes;

    if (bs->bl.max_transfer && n > bs->bl.max_transfer) {
        n = bs->bl.max_transfer;
    }
    n = bdrv_limit_iov(bs, qiov, qiov_offset, n);
    if (n < bytes) {
        n = ALIGN_DOWN64(n, bs->bl.request_alignment);
    }
    if (n == 0 || !bdrv_qiov_mem_aligned(bs, qiov, qiov_offset, n)) {
        return 0;
    }
    return n;
}

static int coroutine_fn bdrv_bounced_io(BlockDriverState *bs, bool write, int64_t offset,
                                        int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    size_t align = bdrv_bounce_align(bs);
    void *buf = bdrv_bounce_get((size_t)bytes, align);
    IOVector bv;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    iovector_init_buf(&bv, buf, (size_t)bytes);
    if (write) {
        iovector_to_buf(qiov, qiov_offset, buf, (size_t)bytes);
        ret = bs->drv->co_pwritev(bs, offset, bytes, &bv, 0, flags);
    } else {
        ret = bs->drv->co_preadv(bs, offset, bytes, &bv, 0, flags);
        if (ret >= 0) {
            iovector_from_buf(qiov, qiov_offset, buf, (size_t)bytes);
        }
    }
    bdrv_bounce_put(buf, (size_t)bytes, align);
    return ret;
}

/*
 * Transfers an aligned range [offset, offset + bytes) between the driver and
 * qiov at qiov_offset, split at max_transfer and max_iov, bouncing chunks
 * whose memory is not aligned enough for the node.
 */
static int coroutine_fn bdrv_aligned_io(BlockDriverState *bs, bool write, int64_t offset,
                                        int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    int ret = 0;

    if (write && !bs->drv->co_pwritev) {
        return -ENOTSUP;
    }
    if (!write && !bs->drv->co_preadv) {
        return -ENOTSUP;
    }
    while (bytes > 0 && ret >= 0) {
        int64_t n = bdrv_direct_chunk(bs, qiov, qiov_offset, bytes);

        if (n == 0) {
            n = bdrv_bounce_chunk(bs, bytes);
            ret = bdrv_bounced_io(bs, write, offset, n, qiov, qiov_offset, flags);
        } else if (write) {
            ret = bs->drv->co_pwritev(bs, offset, n, qiov, qiov_offset, flags);
        } else {
            ret = bs->drv->co_preadv(bs, offset, n, qiov, qiov_offset, flags);
        }
        offset += n;
        qiov_offset += (size_t)n;
        bytes -= n;
    }
    return ret < 0 ? ret : 0;
}

int coroutine_fn bdrv_aligned_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     IOVector *qiov, size_t qiov_offset)
{
    return bdrv_aligned_io(bs, false, offset, bytes, qiov, qiov_offset, 0);
}

int coroutine_fn bdrv_aligned_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    flags &= bs->supported_write_flags & ~BDRV_REQ_INTERNAL;
    return bdrv_aligned_io(bs, true, offset, bytes, qiov, qiov_offset, flags);
}

/* ---------------------------------------------------------------------- */
/* Padding to request_alignment */

/*
 * An unaligned request is widened to whole blocks. The first and last blocks
 * (when the request does not cover them fully) go through a bounce buffer as
 * whole blocks; the caller's bytes between them are passed by reference. So
 * every piece the driver sees is block-sized or the caller's own, and an
 * O_DIRECT node only bounces more when the caller's buffers are misaligned.
 */
typedef struct BdrvPadding {
    uint8_t *buf;       /* the first block, then the last block */
    size_t buf_len;
    size_t buf_align;
    int64_t align;
    int64_t head;       /* bytes of the first block before the request */
    int64_t tail;       /* bytes of the last block after the request */
    int64_t aoffset;    /* the aligned range */
    int64_t abytes;
    int64_t lead;       /* caller bytes that live in the first bounce block */
    int64_t trail;      /* caller bytes that live in the last bounce block */
    IOVector vec;       /* first block + caller's middle + last block */
    struct iovec local[PAD_LOCAL_IOV];
} BdrvPadding;

/* Computes the aligned range; returns true if the request needs padding. */
static bool bdrv_pad_compute(BlockDriverState *bs, int64_t offset, int64_t bytes,
                             BdrvPadding *pad)
{
    int64_t align = bs->bl.request_alignment ? bs->bl.request_alignment : 1;
    int64_t end = offset + bytes;
    bool one;

    pad->align = align;
    pad->head = offset & (align - 1);
    pad->tail = (end & (align - 1)) ? align - (end & (align - 1)) : 0;
    pad->aoffset = offset - pad->head;
    pad->abytes = bytes + pad->head + pad->tail;
    pad->buf = NULL;
    pad->buf_len = 0;
    pad->lead = 0;
    pad->trail = 0;
    if (!pad->head && !pad->tail) {
        return false;
    }
    one = pad->abytes == align;
    if (pad->head || one) {
        pad->lead = bytes < align - pad->head ? bytes : align - pad->head;
    }
    if (pad->tail && !one) {
        pad->trail = align - pad->tail;
    }
    return true;
}

static uint8_t *bdrv_pad_last(BdrvPadding *pad)
{
    return pad->lead ? pad->buf + pad->align : pad->buf;
}

/* Appends the iovec pieces of qiov's range to arr; returns the count or -1 if more than max. */
static int iov_slice(const IOVector *qiov, size_t offset, size_t bytes, struct iovec *arr,
                     int max)
{
    int n = 0;

    for (int i = 0; i < qiov->niov && bytes > 0; i++) {
        size_t len = qiov->iov[i].iov_len;

        if (offset >= len) {
            offset -= len;
            continue;
        }
        len -= offset;
        if (len > bytes) {
            len = bytes;
        }
        if (n == max) {
            return -1;
        }
        arr[n].iov_base = (char *)qiov->iov[i].iov_base + offset;
        arr[n].iov_len = len;
        n++;
        bytes -= len;
        offset = 0;
    }
    return n;
}

static void bdrv_pad_build_vec(BdrvPadding *pad, IOVector *qiov, size_t qiov_offset,
                               int64_t bytes)
{
    size_t mid_off = qiov_offset + (size_t)pad->lead;
    size_t mid_len = (size_t)(bytes - pad->lead - pad->trail);
    size_t align = (size_t)pad->align;
    int n = 0;
    int mid;

    if (pad->lead) {
        pad->local[n++] = (struct iovec){ .iov_base = pad->buf, .iov_len = align };
    }
    mid = iov_slice(qiov, mid_off, mid_len, pad->local + n, PAD_LOCAL_IOV - 1 - n);
    if (mid >= 0) {
        n += mid;
        if (pad->trail) {
            pad->local[n++] = (struct iovec){ .iov_base = bdrv_pad_last(pad), .iov_len = align };
        }
        iovector_init_external(&pad->vec, pad->local, n);
        return;
    }
    iovector_init(&pad->vec, qiov->niov + 2);
    if (pad->lead) {
        iovector_add(&pad->vec, pad->buf, align);
    }
    iovector_concat(&pad->vec, qiov, mid_off, mid_len);
    if (pad->trail) {
        iovector_add(&pad->vec, bdrv_pad_last(pad), align);
    }
}

/* Takes the bounce buffer for the first and last blocks and builds the padded vector. */
static int bdrv_pad_alloc(BlockDriverState *bs, BdrvPadding *pad, IOVector *qiov,
                          size_t qiov_offset, int64_t bytes)
{
    pad->buf_align = bdrv_bounce_align(bs);
    pad->buf_len = (size_t)pad->align * ((pad->lead ? 1 : 0) + (pad->trail ? 1 : 0));
    pad->buf = bdrv_bounce_get(pad->buf_len, pad->buf_align);
    if (!pad->buf) {
        return -ENOMEM;
    }
    if (qiov) {
        bdrv_pad_build_vec(pad, qiov, qiov_offset, bytes);
    } else {
        iovector_init_buf(&pad->vec, NULL, 0);
    }
    return 0;
}

static void bdrv_pad_free(BdrvPadding *pad)
{
    if (pad->buf) {
        iovector_destroy(&pad->vec);
        bdrv_bounce_put(pad->buf, pad->buf_len, pad->buf_align);
        pad->buf = NULL;
    }
}

/* Moves the caller's bytes between its vector and the bounce blocks. */
static void bdrv_pad_copy(BdrvPadding *pad, bool to_bounce, IOVector *qiov, size_t qiov_offset,
                          int64_t bytes)
{
    size_t tail_off = qiov_offset + (size_t)(bytes - pad->trail);

    if (!qiov) {
        return;
    }
    if (to_bounce) {
        iovector_to_buf(qiov, qiov_offset, pad->buf + pad->head, (size_t)pad->lead);
        iovector_to_buf(qiov, tail_off, bdrv_pad_last(pad), (size_t)pad->trail);
    } else {
        iovector_from_buf(qiov, qiov_offset, pad->buf + pad->head, (size_t)pad->lead);
        iovector_from_buf(qiov, tail_off, bdrv_pad_last(pad), (size_t)pad->trail);
    }
}

/* Reads the first and last blocks of a padded write (read half of read-modify-write). */
static int coroutine_fn bdrv_pad_read_ends(BlockDriverState *bs, BdrvPadding *pad)
{
    IOVector bv;
    int ret = 0;

    if (pad->lead) {
        iovector_init_buf(&bv, pad->buf, (size_t)pad->align);
        ret = bdrv_aligned_preadv(bs, pad->aoffset, pad->align, &bv, 0);
    }
    if (ret == 0 && pad->trail) {
        iovector_init_buf(&bv, bdrv_pad_last(pad), (size_t)pad->align);
        ret = bdrv_aligned_preadv(bs, pad->aoffset + pad->abytes - pad->align, pad->align, &bv,
                                  0);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Pass-through of plain, aligned requests */

/*
 * True if a request can go to the driver as it is, in one call: aligned to
 * request_alignment, within max_transfer, one iovec piece whose memory is
 * aligned for the node, and no serialising request in flight (so it needs
 * no list entry). This is every request of a typical guest or benchmark
 * with O_DIRECT; the others take the general path (padding, splitting,
 * bouncing, serialisation), which gives the same result.
 */
static inline bool bdrv_can_pass_through(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         const IOVector *qiov, size_t qiov_offset)
{
    uint64_t align = bs->bl.request_alignment;
    uintptr_t mem = bs->bl.min_mem_alignment;

    if (bs->serialising_in_flight || qiov->niov != 1 || ((uint64_t)(offset | bytes) & (align - 1))) {
        return false;
    }
    if (bs->bl.max_transfer && bytes > bs->bl.max_transfer) {
        return false;
    }
    return !((((uintptr_t)qiov->iov[0].iov_base + qiov_offset) | (uintptr_t)bytes) & (mem - 1));
}

/* ---------------------------------------------------------------------- */
/* Reads */

static int coroutine_fn bdrv_do_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BdrvTrackedRequest req;
    BdrvPadding pad;
    bool padded = bdrv_pad_compute(bs, offset, bytes, &pad);
    bool cor = flags & BDRV_REQ_COPY_ON_READ;
    uint32_t ser = (cor || (flags & BDRV_REQ_SERIALISING)) ? (uint32_t)pad.align : 0;
    IOVector *vec;
    size_t voff;
    int ret = 0;

    bdrv_tracked_begin(&req, bs, offset, bytes, BDRV_TRACKED_READ, ser);
    if (padded) {
        ret = bdrv_pad_alloc(bs, &pad, qiov, qiov_offset, bytes);
    }
    vec = padded && qiov ? &pad.vec : qiov;
    voff = padded ? 0 : qiov_offset;
    if (ret == 0 && cor) {
        ret = bdrv_co_do_copy_on_read(bs, pad.aoffset, pad.abytes, vec, voff);
    } else if (ret == 0) {
        ret = bdrv_aligned_preadv(bs, pad.aoffset, pad.abytes, vec, voff);
    }
    if (ret == 0 && padded) {
        bdrv_pad_copy(&pad, false, qiov, qiov_offset, bytes);
    }
    bdrv_pad_free(&pad);
    bdrv_tracked_end(&req);
    return ret;
}

/*
 * A validated request without flags on bs: straight to the driver when it
 * can pass through (see bdrv_can_pass_through), else the general path.
 */
static inline int coroutine_fn bdrv_plain_preadv(BlockDriverState *bs, int64_t offset,
                                                 int64_t bytes, IOVector *qiov,
                                                 size_t qiov_offset)
{
    int ret;

    bdrv_inc_in_flight(bs);
    if (bdrv_can_pass_through(bs, offset, bytes, qiov, qiov_offset) && bs->drv->co_preadv) {
        bs->unlisted_in_flight++; /* bdrv_plain_begin(): none serialising */
        ret = bs->drv->co_preadv(bs, offset, bytes, qiov, qiov_offset, 0);
        bdrv_plain_end(bs);
        ret = ret < 0 ? ret : 0;
    } else {
        ret = bdrv_do_preadv(bs, offset, bytes, qiov, qiov_offset, 0);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

/* Copy-on-read (node's or caller's) only applies to writable nodes. */
static bool bdrv_read_wants_cor(const BlockDriverState *bs, BdrvRequestFlags flags)
{
    return !bs->read_only &&
           ((flags & BDRV_REQ_COPY_ON_READ) || (bs->open_flags & BDRV_O_COPY_ON_READ));
}

int coroutine_fn bdrv_co_preadv_checked(BdrvChild *child, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset)
{
    BlockDriverState *bs = child->bs;

    if (bdrv_read_wants_cor(bs, 0)) {
        return bdrv_co_preadv_part(child, offset, bytes, qiov, qiov_offset, 0);
    }
    return bdrv_plain_preadv(bs, offset, bytes, qiov, qiov_offset);
}

int coroutine_fn bdrv_co_preadv_part(BdrvChild *child, int64_t offset, int64_t bytes,
                                     IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    BlockDriverState *bs;
    int ret = bdrv_check_node(child, false);

    if (ret == 0) {
        ret = bdrv_check_request(offset, bytes, qiov, qiov_offset);
    }
    if (ret < 0) {
        return ret;
    }
    bs = child->bs;
    if (flags == 0 && qiov && bytes > 0 && !bdrv_read_wants_cor(bs, 0)) {
        return bdrv_plain_preadv(bs, offset, bytes, qiov, qiov_offset); /* the common read */
    }
    if (bdrv_read_wants_cor(bs, flags)) {
        flags |= BDRV_REQ_COPY_ON_READ;
    } else {
        flags &= ~BDRV_REQ_COPY_ON_READ;
        if (flags & BDRV_REQ_PREFETCH) {
            return 0;
        }
    }
    if (!qiov && !(flags & BDRV_REQ_PREFETCH)) {
        return -EINVAL;
    }
    if (flags & BDRV_REQ_PREFETCH) {
        qiov = NULL;
    }
    if (bytes == 0) {
        return 0;
    }
    if (!(flags & (BDRV_REQ_COPY_ON_READ | BDRV_REQ_SERIALISING))) {
        return bdrv_plain_preadv(bs, offset, bytes, qiov, qiov_offset); /* other flags: none */
    }
    bdrv_inc_in_flight(bs);
    ret = bdrv_do_preadv(bs, offset, bytes, qiov, qiov_offset, flags);
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset, int64_t bytes,
                                IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_preadv_part(child, offset, bytes, qiov, 0, flags);
}

/* ---------------------------------------------------------------------- */
/* Writes */

/* Bookkeeping after a write-type request: generation for flush, highest offset. */
void bdrv_write_done(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    bs->write_gen++;
    if (offset + bytes > bs->wr_highest_offset) {
        bs->wr_highest_offset = offset + bytes;
    }
}

static int coroutine_fn bdrv_do_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    BdrvTrackedRequest req;
    BdrvPadding pad;
    bool padded = bdrv_pad_compute(bs, offset, bytes, &pad);
    /* A compressed write replaces (and frees) whole host clusters: serialising too. */
    uint32_t ser = (padded || (flags & (BDRV_REQ_SERIALISING | BDRV_REQ_WRITE_COMPRESSED)))
                       ? (uint32_t)pad.align : 0;
    /* Decided before the write: a driver may stop honouring FUA during it (and then syncs). */
    bool emulate_fua = (flags & BDRV_REQ_FUA) && !(bs->supported_write_flags & BDRV_REQ_FUA);
    int ret = 0;

    bdrv_tracked_begin(&req, bs, offset, bytes, BDRV_TRACKED_WRITE, ser);
    if (padded) {
        ret = bdrv_pad_alloc(bs, &pad, qiov, qiov_offset, bytes);
        if (ret == 0) {
            bdrv_debug_event(bs, BLKDBG_PWRITEV_RMW_HEAD);
            ret = bdrv_pad_read_ends(bs, &pad);
            bdrv_debug_event(bs, BLKDBG_PWRITEV_RMW_AFTER_TAIL);
        }
        if (ret == 0) {
            bdrv_pad_copy(&pad, true, qiov, qiov_offset, bytes);
        }
        qiov = &pad.vec;
        qiov_offset = 0;
    }
    if (ret == 0) {
        bdrv_debug_event(bs, BLKDBG_PWRITEV);
        ret = bdrv_aligned_pwritev(bs, pad.aoffset, pad.abytes, qiov, qiov_offset, flags);
        bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE);
    }
    bdrv_pad_free(&pad);
    bdrv_write_done(bs, offset, bytes);
    if (ret == 0 && emulate_fua) {
        ret = bdrv_co_flush(bs);
    }
    bdrv_tracked_end(&req);
    return ret;
}

/* bdrv_do_pwritev() for a request bdrv_can_pass_through() accepted: the same steps, unlisted. */
static int coroutine_fn bdrv_pass_through_pwritev(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, IOVector *qiov,
                                                  size_t qiov_offset, BdrvRequestFlags flags)
{
    bool emulate_fua = (flags & BDRV_REQ_FUA) && !(bs->supported_write_flags & BDRV_REQ_FUA);
    int ret;

    bs->unlisted_in_flight++; /* bdrv_plain_begin(): none serialising */
    bdrv_debug_event(bs, BLKDBG_PWRITEV);
    ret = bs->drv->co_pwritev(bs, offset, bytes, qiov, qiov_offset,
                              flags & bs->supported_write_flags & ~BDRV_REQ_INTERNAL);
    bdrv_debug_event(bs, BLKDBG_PWRITEV_DONE);
    bdrv_write_done(bs, offset, bytes);
    ret = ret < 0 ? ret : 0;
    if (ret == 0 && emulate_fua) {
        ret = bdrv_co_flush(bs);
    }
    bdrv_plain_end(bs);
    return ret;
}

/* Turns an all-zero write into a write-zeroes when detect-zeroes asks for it. */
static BdrvRequestFlags bdrv_detect_zeroes(BlockDriverState *bs, const IOVector *qiov,
                                           size_t qiov_offset, int64_t bytes,
                                           BdrvRequestFlags flags)
{
    if (bs->detect_zeroes == BDRV_DETECT_ZEROES_OFF || (flags & BDRV_REQ_ZERO_WRITE) ||
        !iovector_is_zero(qiov, qiov_offset, (size_t)bytes)) {
        return flags;
    }
    flags |= BDRV_REQ_ZERO_WRITE;
    if (bs->detect_zeroes == BDRV_DETECT_ZEROES_UNMAP && (bs->open_flags & BDRV_O_UNMAP)) {
        flags |= BDRV_REQ_MAY_UNMAP;
    }
    return flags;
}

int coroutine_fn bdrv_co_pwritev_part(BdrvChild *child, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    BlockDriverState *bs;
    bool zero = flags & BDRV_REQ_ZERO_WRITE;
    int ret = bdrv_check_node(child, true);

    if (ret == 0) {
        ret = bdrv_check_request(offset, bytes, zero ? NULL : qiov, qiov_offset);
    }
    if (ret == 0 && !zero && !qiov) {
        ret = -EINVAL;
    }
    if (ret == 0 && (flags & BDRV_REQ_WRITE_COMPRESSED) &&
        !(child->bs->supported_write_flags & BDRV_REQ_WRITE_COMPRESSED)) {
        ret = -ENOTSUP;
    }
    if (ret < 0 || bytes == 0) {
        return ret;
    }
    bs = child->bs;
    bdrv_inc_in_flight(bs);
    if (!zero) {
        flags = bdrv_detect_zeroes(bs, qiov, qiov_offset, bytes, flags);
    }
    if (!(bs->open_flags & BDRV_O_UNMAP)) {
        flags &= ~BDRV_REQ_MAY_UNMAP; /* discard=ignore: never deallocate */
    }
    if (flags & BDRV_REQ_ZERO_WRITE) {
        ret = bdrv_co_do_pwrite_zeroes(bs, offset, bytes, flags);
    } else if (!(flags & (BDRV_REQ_SERIALISING | BDRV_REQ_WRITE_COMPRESSED)) &&
               bs->drv->co_pwritev && bdrv_can_pass_through(bs, offset, bytes, qiov, qiov_offset)) {
        ret = bdrv_pass_through_pwritev(bs, offset, bytes, qiov, qiov_offset, flags);
    } else {
        ret = bdrv_do_pwritev(bs, offset, bytes, qiov, qiov_offset, flags);
    }
    bdrv_dec_in_flight(bs);
    return ret;
}

int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset, int64_t bytes,
                                 IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_pwritev_part(child, offset, bytes, qiov, 0, flags);
}

int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset, int64_t bytes,
                                       BdrvRequestFlags flags)
{
    return bdrv_co_pwritev_part(child, offset, bytes, NULL, 0, flags | BDRV_REQ_ZERO_WRITE);
}

/* ---------------------------------------------------------------------- */
/* Read-modify-write of one block with zeroes (write-zeroes head and tail) */

int coroutine_fn bdrv_rmw_zero_block(BlockDriverState *bs, int64_t block, int64_t from,
                                     int64_t to, BdrvRequestFlags flags)
{
    size_t align = (size_t)bs->bl.request_alignment;
    size_t balign = bdrv_bounce_align(bs);
    uint8_t *buf = bdrv_bounce_get(align, balign);
    IOVector bv;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    iovector_init_buf(&bv, buf, align);
    ret = bdrv_aligned_preadv(bs, block, (int64_t)align, &bv, 0);
    if (ret == 0) {
        memset(buf + (from - block), 0, (size_t)(to - from));
        ret = bdrv_aligned_pwritev(bs, block, (int64_t)align, &bv, 0, flags);
    }
    bdrv_bounce_put(buf, align, balign);
    return ret;
}
