/*
 * Internals of the request layer (block/io*.c, block/bounce.c). Not installed.
 */
#ifndef COBLK_BLOCK_IO_INT_H
#define COBLK_BLOCK_IO_INT_H

#include "block/block-int.h"

/* Kinds of tracked request. */
typedef enum BdrvTrackedType {
    BDRV_TRACKED_READ,
    BDRV_TRACKED_WRITE,
    BDRV_TRACKED_DISCARD,
    BDRV_TRACKED_TRUNCATE,
} BdrvTrackedType;

/*
 * A request in flight on a node. Lives on the stack of the coroutine that
 * runs the request. Requests whose overlap ranges intersect are ordered when
 * either of them is serialising: the later one waits on the earlier one's
 * wait_queue. A plain request that begins while no serialising request is in
 * flight is not linked into bs->tracked_requests (only bs and listed are set)
 * and counts in bs->unlisted_in_flight instead (see block/io.c).
 */
struct BdrvTrackedRequest {
    BlockDriverState *bs;
    int64_t offset;
    int64_t bytes;
    BdrvTrackedType type;
    bool listed;                     /* in bs->tracked_requests (else only counted) */
    bool serialising;
    int64_t overlap_offset;          /* the range it conflicts on (aligned when serialising) */
    int64_t overlap_bytes;
    CoQueue wait_queue;              /* requests waiting for this one to end */
    bool waiting;                    /* waiting for others (it re-checks on wake) */
    BdrvTrackedRequest *next;
    BdrvTrackedRequest **pprev;
};

/* Largest bounce buffer kept in a pool; bigger requests bounce in chunks of this. */
#define BDRV_BOUNCE_MAX (1024 * 1024)

/*
 * Returns a buffer of at least len bytes aligned to align (a power of two),
 * from the calling thread's pool when one fits, else from posix_memalign().
 * Returns NULL on allocation failure. Contents are undefined.
 */
void *bdrv_bounce_get(size_t len, size_t align);
/* Gives a buffer from bdrv_bounce_get() back (len and align as requested). */
void bdrv_bounce_put(void *buf, size_t len, size_t align);

/*
 * A read-only buffer of zeroes of BDRV_BOUNCE_MAX bytes aligned to align, or
 * NULL if align is larger than the static buffer's alignment. Never written.
 */
void *bdrv_zero_buf(size_t align);

/* The larger of a node's min and opt memory alignment (>= 1). */
size_t bdrv_bounce_align(const BlockDriverState *bs);

/* Request flags the request layer handles itself; never passed to drivers. */
#define BDRV_REQ_INTERNAL (BDRV_REQ_ZERO_WRITE | BDRV_REQ_SERIALISING | BDRV_REQ_COPY_ON_READ | \
                           BDRV_REQ_PREFETCH)

/* Rounding for power-of-two alignments; callers keep x + a within int64_t. */
#define ALIGN_DOWN64(x, a) ((int64_t)(x) & ~((int64_t)(a) - 1))
#define ALIGN_UP64(x, a) ALIGN_DOWN64((int64_t)(x) + (int64_t)(a) - 1, (a))

/* -EINVAL unless offset/bytes are in range and qiov (if any) holds bytes at qiov_offset. */
int bdrv_check_request(int64_t offset, int64_t bytes, const IOVector *qiov, size_t qiov_offset);

/* The out-of-line halves of bdrv_tracked_begin() / bdrv_tracked_end(). */
void coroutine_fn bdrv_tracked_begin_listed(BdrvTrackedRequest *req, BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            BdrvTrackedType type, uint32_t serialise_align);
void coroutine_fn bdrv_tracked_end_listed(BdrvTrackedRequest *req);
/* Wakes the serialising requests waiting for bs's unlisted requests to end. */
void bdrv_unlisted_drained(BlockDriverState *bs);

/* A plain request that needs no list entry: true (and counted) if it may run unlisted. */
static inline bool bdrv_plain_begin(BlockDriverState *bs)
{
    if (bs->serialising_in_flight) {
        return false;
    }
    bs->unlisted_in_flight++;
    return true;
}

/* Ends a request that bdrv_plain_begin() counted. */
static inline void bdrv_plain_end(BlockDriverState *bs)
{
    if (--bs->unlisted_in_flight == 0 && bs->unlisted_waiters.head) {
        bdrv_unlisted_drained(bs);
    }
}

/*
 * Tracks req on bs and waits for conflicting requests. A non-zero
 * serialise_align makes it serialising over its range aligned to that.
 */
static inline void coroutine_fn bdrv_tracked_begin(BdrvTrackedRequest *req,
                                                   BlockDriverState *bs, int64_t offset,
                                                   int64_t bytes, BdrvTrackedType type,
                                                   uint32_t serialise_align)
{
    if (!serialise_align && bdrv_plain_begin(bs)) {
        req->bs = bs;
        req->listed = false;
        return;
    }
    bdrv_tracked_begin_listed(req, bs, offset, bytes, type, serialise_align);
}

/* Untracks req and wakes the requests waiting for it. */
static inline void coroutine_fn bdrv_tracked_end(BdrvTrackedRequest *req)
{
    if (!req->listed) {
        bdrv_plain_end(req->bs);
        return;
    }
    bdrv_tracked_end_listed(req);
}

/*
 * Driver transfers of an aligned range (offset and bytes multiples of
 * request_alignment): split at max_transfer / max_iov, memory bounced when
 * the buffers are not aligned for the node. No tracking.
 */
int coroutine_fn bdrv_aligned_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                     IOVector *qiov, size_t qiov_offset);
int coroutine_fn bdrv_aligned_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);

/* Bumps write_gen and wr_highest_offset after a write-type request. */
void bdrv_write_done(BlockDriverState *bs, int64_t offset, int64_t bytes);

/* Zeroes [from, to) inside the aligned block at block by read-modify-write. */
int coroutine_fn bdrv_rmw_zero_block(BlockDriverState *bs, int64_t block, int64_t from,
                                     int64_t to, BdrvRequestFlags flags);

/* Write-zeroes of a validated range (io-zero.c); tracks and pads itself. */
int coroutine_fn bdrv_co_do_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          BdrvRequestFlags flags);

/*
 * Copy-on-read of an aligned range (io-cor.c), already tracked as
 * serialising: ranges not allocated in bs are read and written into bs.
 * qiov covers the range from qiov_offset, or is NULL for a prefetch.
 */
int coroutine_fn bdrv_co_do_copy_on_read(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov, size_t qiov_offset);

#endif /* COBLK_BLOCK_IO_INT_H */
