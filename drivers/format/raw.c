/*
 * The "raw" format driver: guest data lives 1:1 in the file child, possibly
 * through a window (offset=, size=) into it. Every request passes through.
 *
 * A raw node whose format was guessed (bs->probed) refuses writes that put
 * a known image format's magic into its first sector (-EPERM), so that a
 * guest cannot turn its disk into, say, a qcow2 image with a backing file of
 * the host's choosing on the next probe (CVE-2008-2004).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/drivers.h"

typedef struct BDRVRawState {
    int64_t offset;     /* start of the window in the file child */
    int64_t size;       /* window length when has_size */
    bool has_size;      /* size= given: a fixed window, else up to the child's end */
    /* Staged by reopen_prepare. */
    int64_t new_offset;
    int64_t new_size;
    bool new_has_size;
} BDRVRawState;

static const char *const raw_option_names[] = { "offset", "size", NULL };

/* ---------------------------------------------------------------------- */
/* Options */

/* Takes offset= and size= and checks them against the file child's length. */
static int raw_take_window(BlockDriverState *bs, BlockOpts *options, int64_t *offset,
                           int64_t *size, bool *has_size, Error **errp)
{
    uint64_t uoff, usize;
    int64_t len;
    int ret;

    if (bopts_take_size(options, "offset", 0, &uoff, errp) < 0) {
        return -EINVAL;
    }
    ret = bopts_take_size(options, "size", 0, &usize, errp);
    if (ret < 0) {
        return -EINVAL;
    }
    *has_size = ret > 0;
    len = bdrv_getlength(bs->file->bs);
    if (len < 0) {
        error_setg_errno(errp, (int)len, "raw: could not get the size of '%s'",
                         bdrv_get_filename(bs->file->bs));
        return (int)len;
    }
    if (uoff > (uint64_t)len) {
        error_setg(errp, "raw: offset %llu is beyond the end of '%s' (%lld bytes)",
                   (unsigned long long)uoff, bdrv_get_filename(bs->file->bs), (long long)len);
        return -EINVAL;
    }
    if (*has_size && usize > (uint64_t)len - uoff) {
        error_setg(errp, "raw: offset %llu + size %llu exceeds the size of '%s' (%lld bytes)",
                   (unsigned long long)uoff, (unsigned long long)usize,
                   bdrv_get_filename(bs->file->bs), (long long)len);
        return -EINVAL;
    }
    *offset = (int64_t)uoff;
    *size = (int64_t)usize;
    return 0;
}

static int raw_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVRawState *s = bs->opaque;
    BlockDriverState *file;

    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    file = bs->file->bs;
    bs->supported_write_flags = BDRV_REQ_FUA & file->supported_write_flags;
    bs->supported_zero_flags = (BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK) &
                               file->supported_zero_flags;
    bs->supported_truncate_flags = BDRV_REQ_ZERO_WRITE & file->supported_truncate_flags;
    if (!bs->filename[0]) {
        snprintf(bs->filename, sizeof(bs->filename), "%s", file->filename);
    }
    return raw_take_window(bs, options, &s->offset, &s->size, &s->has_size, errp);
}

static void raw_refresh_limits(BlockDriverState *bs, Error **errp)
{
    /* Whole-sector writes let the guessed-raw check see all of sector 0. */
    if (bs->probed && bs->bl.request_alignment < BDRV_SECTOR_SIZE) {
        bs->bl.request_alignment = BDRV_SECTOR_SIZE;
    }
}

static int raw_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    /* Anything is raw, as a last resort. */
    return 1;
}

/* ---------------------------------------------------------------------- */
/* Requests */

/*
 * Checks that a write of [offset, offset + bytes) fits the window and moves
 * offset into the file child. Returns 0 or -ENOSPC.
 */
static int raw_map_write(BDRVRawState *s, int64_t *offset, int64_t bytes)
{
    if (s->has_size && (*offset > s->size || bytes > s->size - *offset)) {
        return -ENOSPC;
    }
    *offset += s->offset;
    return 0;
}

/* True if a write to a guessed raw node would plant a format magic in sector 0. */
static bool raw_write_plants_magic(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, size_t qiov_offset)
{
    uint8_t sector[BDRV_SECTOR_SIZE];
    size_t len;

    if (!bs->probed || offset != 0 || bytes == 0) {
        return false;
    }
    len = bytes < (int64_t)sizeof(sector) ? (size_t)bytes : sizeof(sector);
    len = iovector_to_buf(qiov, qiov_offset, sector, len);
    return bdrv_buf_has_known_magic(sector, len);
}

static int coroutine_fn raw_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    if (s->has_size && offset + bytes > s->size) {
        /* Past the window: zeroes, as past the end of a file. */
        int64_t in = offset < s->size ? s->size - offset : 0;

        iovector_memset(qiov, qiov_offset + (size_t)in, 0, (size_t)(bytes - in));
        bytes = in;
        if (bytes == 0) {
            return 0;
        }
    }
    return bdrv_co_preadv_part(bs->file, s->offset + offset, bytes, qiov, qiov_offset, flags);
}

static int coroutine_fn raw_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;
    int ret;

    if (raw_write_plants_magic(bs, offset, bytes, qiov, qiov_offset)) {
        return -EPERM;
    }
    ret = raw_map_write(s, &offset, bytes);
    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset, flags);
}

static int coroutine_fn raw_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    int ret = raw_map_write(bs->opaque, &offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn raw_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    int ret = raw_map_write(bs->opaque, &offset, bytes);

    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pdiscard(bs->file, offset, bytes);
}

static int coroutine_fn raw_co_block_status(BlockDriverState *bs, bool want_zero,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file)
{
    BDRVRawState *s = bs->opaque;

    *pnum = bytes;
    *map = s->offset + offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
}

static int64_t coroutine_fn raw_co_getlength(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    int64_t len;

    if (s->has_size) {
        return s->size;
    }
    len = bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        return len;
    }
    return len > s->offset ? len - s->offset : 0;
}

static int coroutine_fn raw_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, BdrvRequestFlags flags,
                                        Error **errp)
{
    BDRVRawState *s = bs->opaque;

    if (s->has_size) {
        error_setg(errp, "raw: cannot resize '%s': size=%lld fixes its length", bs->filename,
                   (long long)s->size);
        return -ENOTSUP;
    }
    if (offset > INT64_MAX - s->offset) {
        error_setg(errp, "raw: size %lld with offset %lld is too large for '%s'",
                   (long long)offset, (long long)s->offset, bs->filename);
        return -EINVAL;
    }
    return bdrv_co_truncate(bs->file, s->offset + offset, exact, prealloc, flags, errp);
}

/* ---------------------------------------------------------------------- */
/* Reopen and create */

static int raw_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                              Error **errp)
{
    BDRVRawState *s = bs->opaque;

    if (!bopts_has(options, "offset") && !bopts_has(options, "size")) {
        s->new_offset = s->offset;
        s->new_size = s->size;
        s->new_has_size = s->has_size;
        return 0;
    }
    return raw_take_window(bs, options, &s->new_offset, &s->new_size, &s->new_has_size, errp);
}

static void raw_reopen_commit(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;

    s->offset = s->new_offset;
    s->size = s->new_size;
    s->has_size = s->new_has_size;
}

static void raw_reopen_abort(BlockDriverState *bs)
{
}

/* The protocol that creates filename: a "proto:" prefix naming one, else "file". */
static const BlockDriver *raw_create_protocol(const char **filename)
{
    const char *colon = strchr(*filename, ':');
    const char *slash = strchr(*filename, '/');
    char name[32];
    size_t n;

    if (colon && (!slash || colon < slash) && (n = (size_t)(colon - *filename)) < sizeof(name)) {
        const BlockDriver *drv;

        memcpy(name, *filename, n);
        name[n] = '\0';
        drv = bdrv_find_format(name);
        if (drv && drv->is_protocol) {
            if (strcmp(name, "file") == 0) {
                *filename = colon + 1;
            }
            return drv;
        }
    }
    return bdrv_find_format("file");
}

static int coroutine_fn raw_co_create_opts(const BlockDriver *drv, const char *filename,
                                           BlockOpts *options, Error **errp)
{
    const BlockDriver *proto = raw_create_protocol(&filename);

    if (!proto || !proto->co_create_opts) {
        error_setg(errp, "raw: the protocol of '%s' cannot create images", filename);
        return -ENOTSUP;
    }
    return proto->co_create_opts(proto, filename, options, errp);
}

/* Creation options (the file protocol takes them; listed for "-o help"). */
static const BlockCreateOptDesc raw_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "preallocation", BLOCK_OPT_STRING,
      "Preallocation mode (allowed values: off, falloc, full)", NULL },
    { "nocow", BLOCK_OPT_BOOL, "Turn off copy-on-write (valid only on btrfs)", NULL },
    { NULL, 0, NULL, NULL },
};

/* A raw image needs exactly its virtual size: "size" from options, else in_bs's length. */
static int raw_measure(BlockOpts *options, BlockDriverState *in_bs, BlockMeasureInfo *out,
                       Error **errp)
{
    uint64_t size = 0;
    int ret = bopts_take_size(options, "size", 0, &size, errp);

    if (ret < 0) {
        return -EINVAL;
    }
    if (ret == 0 && in_bs) {
        int64_t len = bdrv_getlength(in_bs);
        if (len < 0) {
            error_setg_errno(errp, (int)len, "raw: could not get the size of '%s'",
                             bdrv_get_filename(in_bs));
            return (int)len;
        }
        size = (uint64_t)len;
    }
    size = (size + BDRV_SECTOR_SIZE - 1) & ~(BDRV_SECTOR_SIZE - 1);
    out->required = size;
    out->fully_allocated = size;
    return 0;
}

const BlockDriver bdrv_raw = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "raw",
    .instance_size = sizeof(BDRVRawState),
    .is_format = true,
    .option_names = raw_option_names,
    .probe = raw_probe,
    .bdrv_open = raw_open,
    .refresh_limits = raw_refresh_limits,
    .co_preadv = raw_co_preadv,
    .co_pwritev = raw_co_pwritev,
    .co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .co_pdiscard = raw_co_pdiscard,
    .co_block_status = raw_co_block_status,
    .co_truncate = raw_co_truncate,
    .co_getlength = raw_co_getlength,
    .reopen_prepare = raw_reopen_prepare,
    .reopen_commit = raw_reopen_commit,
    .reopen_abort = raw_reopen_abort,
    .co_create_opts = raw_co_create_opts,
    .create_opts = raw_create_opts,
    .measure = raw_measure,
};
