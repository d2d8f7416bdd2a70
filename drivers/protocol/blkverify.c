/*
 * blkverify: runs every request on the image under test ("test" child) and
 * on a raw reference ("raw" child), and compares every read.
 *
 *   driver=blkverify,test.driver=qcow2,test.file.filename=t.qcow2,
 *   raw.driver=raw,raw.file.filename=ref.raw[,mismatch=eio|abort]
 *   filename "blkverify:REF.raw:TEST-IMAGE"
 *
 * Writes and write-zeroes go to both, test first; a failure on either fails
 * the request. Discard is a no-op on both (discarded ranges may read back
 * as old data or zeroes, and the reference must stay comparable). A read
 * that differs prints the first differing offset (coblk_warn) and fails with
 * -EIO, or aborts with mismatch=abort; blkverify_mismatches() counts them.
 * Both children must have the same length.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include "drivers/drivers.h"
#include "drivers/protocol/blkverify.h"

typedef struct BDRVBlkverifyState {
    BdrvChild *raw;
    bool abort_on_mismatch;
    uint64_t mismatches;
} BDRVBlkverifyState;

static const char *const blkverify_option_names[] = { "mismatch", NULL };
static const char *const mismatch_names[] = { "eio", "abort" };

/* "blkverify:REF:TEST" -> the two names. */
static int split_filename(const char *fn, char **raw, char **test, Error **errp)
{
    const char *rest = fn + strlen("blkverify:");
    const char *colon = strchr(rest, ':');

    if (strncmp(fn, "blkverify:", 10) != 0 || !colon || colon == rest || !colon[1]) {
        error_setg(errp, "blkverify: filename '%s' is not blkverify:reference:image", fn);
        return -EINVAL;
    }
    *raw = strndup(rest, (size_t)(colon - rest));
    *test = strdup(colon + 1);
    return 0;
}

static int blkverify_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVBlkverifyState *s = bs->opaque;
    char *fn = NULL, *raw = NULL, *test = NULL;
    int mode = 0, ret = -EINVAL;
    int64_t a, b;

    if (bopts_take_str(options, "filename", &fn, errp) < 0 ||
        bopts_take_enum(options, "mismatch", mismatch_names, 2, 0, &mode, errp) < 0) {
        goto out;
    }
    if (fn && split_filename(fn, &raw, &test, errp) < 0) {
        goto out;
    }
    s->abort_on_mismatch = mode == 1;
    /* Not marked primary/filtered: a test image named by filename is probed. */
    bs->file = bdrv_open_child(test, options, "test", bs, BDRV_CHILD_IMAGE, false, errp);
    if (!bs->file) {
        goto out;
    }
    if (raw && !bopts_has(options, "raw.driver")) {
        bopts_set(options, "raw.driver", "raw");
    }
    s->raw = bdrv_open_child(raw, options, "raw", bs, BDRV_CHILD_DATA, false, errp);
    if (!s->raw) {
        goto out;
    }
    a = bdrv_getlength(bs->file->bs);
    b = bdrv_getlength(s->raw->bs);
    if (a < 0 || b < 0 || a != b) {
        error_setg(errp, "blkverify: the image (%lld bytes) and the reference (%lld bytes) "
                         "differ in length", (long long)a, (long long)b);
        goto out;
    }
    snprintf(bs->filename, sizeof(bs->filename), "%s", bs->file->bs->filename);
    ret = 0;
out:
    free(fn);
    free(raw);
    free(test);
    return ret;
}

/* Offset of the first byte where a and b differ, or -1. */
static int64_t first_difference(const IOVector *a, size_t a_off, const uint8_t *b,
                                int64_t bytes)
{
    uint8_t chunk[4096];

    for (int64_t done = 0; done < bytes;) {
        size_t n = bytes - done < (int64_t)sizeof(chunk) ? (size_t)(bytes - done)
                                                          : sizeof(chunk);

        iovector_to_buf(a, a_off + (size_t)done, chunk, n);
        if (memcmp(chunk, b + done, n) != 0) {
            for (size_t i = 0; i < n; i++) {
                if (chunk[i] != b[done + (int64_t)i]) {
                    return done + (int64_t)i;
                }
            }
        }
        done += (int64_t)n;
    }
    return -1;
}

static int coroutine_fn blkverify_co_preadv(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                            BdrvRequestFlags flags)
{
    BDRVBlkverifyState *s = bs->opaque;
    uint8_t *ref = malloc((size_t)bytes);
    IOVector rv;
    int64_t diff;
    int ret;

    if (!ref) {
        return -ENOMEM;
    }
    iovector_init_buf(&rv, ref, (size_t)bytes);
    ret = bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset, flags);
    if (ret == 0) {
        ret = bdrv_co_preadv(s->raw, offset, bytes, &rv, 0);
    }
    if (ret == 0 && (diff = first_difference(qiov, qiov_offset, ref, bytes)) >= 0) {
        s->mismatches++;
        coblk_warn("blkverify: read of %lld bytes at %lld differs from the reference at "
                   "offset %lld", (long long)bytes, (long long)offset,
                   (long long)(offset + diff));
        if (s->abort_on_mismatch) {
            abort();
        }
        ret = -EIO;
    }
    free(ref);
    return ret;
}

static int coroutine_fn blkverify_co_pwritev(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                             BdrvRequestFlags flags)
{
    BDRVBlkverifyState *s = bs->opaque;
    int ret = bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset, flags);
    int r2 = bdrv_co_pwritev_part(s->raw, offset, bytes, qiov, qiov_offset, 0);

    return ret < 0 ? ret : r2;
}

static int coroutine_fn blkverify_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                   int64_t bytes, BdrvRequestFlags flags)
{
    BDRVBlkverifyState *s = bs->opaque;
    int ret = bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
    int r2 = bdrv_co_pwrite_zeroes(s->raw, offset, bytes, 0);

    return ret < 0 ? ret : r2;
}

static int coroutine_fn blkverify_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes)
{
    return 0;
}

static int64_t coroutine_fn blkverify_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

uint64_t blkverify_mismatches(BlockDriverState *bs)
{
    for (; bs; bs = bs->file ? bs->file->bs : NULL) {
        if (bs->drv == &bdrv_blkverify) {
            return ((BDRVBlkverifyState *)bs->opaque)->mismatches;
        }
    }
    return 0;
}

/* Nothing of its own to change: the reopen transaction covers both children. */
static int blkverify_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                                    Error **errp)
{
    return 0;
}

const BlockDriver bdrv_blkverify = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "blkverify",
    .protocol_name = "blkverify",
    .instance_size = sizeof(BDRVBlkverifyState),
    .is_protocol = true, /* for the "blkverify:" prefix */
    .is_filter = true,
    .option_names = blkverify_option_names,
    .bdrv_open = blkverify_open,
    .co_preadv = blkverify_co_preadv,
    .co_pwritev = blkverify_co_pwritev,
    .co_pwrite_zeroes = blkverify_co_pwrite_zeroes,
    .co_pdiscard = blkverify_co_pdiscard,
    .reopen_prepare = blkverify_reopen_prepare,
    .co_block_status = bdrv_co_block_status_from_file,
    .co_getlength = blkverify_co_getlength,
};
