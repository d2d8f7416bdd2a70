/*
 * The "null-co" and "null-aio" protocol drivers: a device of a given size
 * that discards writes and reads as the buffer's old contents (or zeroes
 * with read-zeroes=on). They are the floor of the request path in
 * benchmarks: no allocation and no system call per request.
 *
 * null-co completes inside the request coroutine (after latency-ns, if
 * set); null-aio completes from the event loop, as an AIO completion
 * would: one loop iteration later, or from a timer when latency-ns is set.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "drivers/drivers.h"

#define NULL_DEFAULT_SIZE (1ULL << 30)

typedef struct BDRVNullState {
    int64_t length;
    int64_t latency_ns;
    bool read_zeroes;
    bool aio;          /* null-aio: complete from the loop */
} BDRVNullState;

static const char *const null_option_names[] = {
    "filename", "size", "read-zeroes", "latency-ns", NULL,
};

/* Takes size=, read-zeroes=, latency-ns= (and ignores filename=, the "null-co://" URL). */
static int null_take_opts(BDRVNullState *s, BlockOpts *options, const char *who, Error **errp)
{
    uint64_t size, latency;

    bopts_del(options, "filename");
    if (bopts_take_size(options, "size", NULL_DEFAULT_SIZE, &size, errp) < 0 ||
        bopts_take_bool(options, "read-zeroes", false, &s->read_zeroes, errp) < 0 ||
        bopts_take_uint64(options, "latency-ns", 0, &latency, errp) < 0) {
        return -EINVAL;
    }
    if (size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "%s: size %llu exceeds the maximum %lld", who,
                   (unsigned long long)size, (long long)BDRV_MAX_LENGTH);
        return -EINVAL;
    }
    if (latency > (uint64_t)INT64_MAX) {
        error_setg(errp, "%s: latency-ns %llu is too large", who, (unsigned long long)latency);
        return -EINVAL;
    }
    s->length = (int64_t)size;
    s->latency_ns = (int64_t)latency;
    return 0;
}

static int null_open_common(BlockDriverState *bs, BlockOpts *options, bool aio, Error **errp)
{
    BDRVNullState *s = bs->opaque;
    const char *who = aio ? "null-aio" : "null-co";
    int ret;

    s->aio = aio;
    ret = null_take_opts(s, options, who, errp);
    if (ret < 0) {
        return ret;
    }
    if (!bs->filename[0]) {
        snprintf(bs->filename, sizeof(bs->filename), "%s://", who);
    }
    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    return 0;
}

static int null_co_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    return null_open_common(bs, options, false, errp);
}

static int null_aio_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    return null_open_common(bs, options, true, errp);
}

/* Waits as the driver's mode says: latency-ns, then (null-aio) a trip through the loop. */
static void coroutine_fn null_complete(BDRVNullState *s)
{
    if (s->latency_ns) {
        co_sleep_ns(s->latency_ns);
    } else if (s->aio) {
        Coroutine *self = coroutine_self();
        AioContext *ctx = coroutine_get_aio_context(self);

        aio_co_schedule(ctx ? ctx : aio_context_current(), self);
        coroutine_yield();
    }
}

static int coroutine_fn null_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BDRVNullState *s = bs->opaque;

    if (s->read_zeroes) {
        iovector_memset(qiov, qiov_offset, 0, (size_t)bytes);
    }
    null_complete(s);
    return 0;
}

static int coroutine_fn null_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    null_complete(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, BdrvRequestFlags flags)
{
    null_complete(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    null_complete(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_flush(BlockDriverState *bs)
{
    null_complete(bs->opaque);
    return 0;
}

static int coroutine_fn null_co_block_status(BlockDriverState *bs, bool want_zero,
                                             int64_t offset, int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockDriverState **file)
{
    BDRVNullState *s = bs->opaque;

    *pnum = bytes;
    *map = offset;
    *file = bs;
    return BDRV_BLOCK_OFFSET_VALID | (s->read_zeroes ? BDRV_BLOCK_ZERO : 0);
}

static int64_t coroutine_fn null_co_getlength(BlockDriverState *bs)
{
    BDRVNullState *s = bs->opaque;

    return s->length;
}

static int64_t coroutine_fn null_co_get_allocated_file_size(BlockDriverState *bs)
{
    return 0;
}

const BlockDriver bdrv_null_co = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "null-co",
    .protocol_name = "null-co",
    .instance_size = sizeof(BDRVNullState),
    .is_protocol = true,
    .option_names = null_option_names,
    .bdrv_open = null_co_open,
    .co_preadv = null_co_preadv,
    .co_pwritev = null_co_pwritev,
    .co_pwrite_zeroes = null_co_pwrite_zeroes,
    .co_pdiscard = null_co_pdiscard,
    .co_flush_to_disk = null_co_flush,
    .co_block_status = null_co_block_status,
    .co_getlength = null_co_getlength,
    .co_get_allocated_file_size = null_co_get_allocated_file_size,
};

const BlockDriver bdrv_null_aio = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "null-aio",
    .protocol_name = "null-aio",
    .instance_size = sizeof(BDRVNullState),
    .is_protocol = true,
    .option_names = null_option_names,
    .bdrv_open = null_aio_open,
    .co_preadv = null_co_preadv,
    .co_pwritev = null_co_pwritev,
    .co_pwrite_zeroes = null_co_pwrite_zeroes,
    .co_pdiscard = null_co_pdiscard,
    .co_flush_to_disk = null_co_flush,
    .co_block_status = null_co_block_status,
    .co_getlength = null_co_getlength,
    .co_get_allocated_file_size = null_co_get_allocated_file_size,
};
