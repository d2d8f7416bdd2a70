/*
 * The "cloop" format driver (read-only): compressed loop images of the Linux
 * cloop module, version 2 (as create_compressed_fs writes them).
 *
 * Layout (all fields big-endian):
 *   0    a 128-byte shell preamble ("#!/bin/sh\n#V2.0 Format\n..." padded)
 *   128  block size (u32), number of blocks n (u32)
 *   136  n + 1 offsets (u64): block i is the zlib stream at offsets[i] ..
 *        offsets[i + 1] in the file and inflates to exactly block size bytes.
 * The disk is n * block size bytes. Version 3 and 4 images (tables in other
 * places) are refused by their preamble.
 *
 * Reads inflate a whole block into a one-block cache, so that sequential
 * reads inflate each block once. The driver never writes: read-write opens
 * are refused (fmt_refuse_write_open).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/drivers.h"
#include "drivers/format/fmt-util.h"

#define CLOOP_PREAMBLE 128u
#define CLOOP_TABLE 136u                /* offset of the offsets table */
#define CLOOP_V2 "#!/bin/sh\n#V2.0 Format\n"
#define CLOOP_SHEBANG "#!/bin/sh\n"

/* Limits for untrusted images (see cloop_check_header / cloop_check_offsets). */
#define CLOOP_BLOCK_MAX (64u << 20)
#define CLOOP_BLOCKS_MAX (32u << 20)    /* a 256 MiB offsets table */

typedef struct BDRVCloopState {
    uint32_t block_size;
    uint32_t n_blocks;
    uint64_t *offsets;          /* n_blocks + 1, host order */
    uint64_t max_compressed;    /* largest compressed block */
    uint8_t *zbuf;              /* max_compressed bytes */
    uint8_t *cache;             /* block_size bytes: block cached_block inflated */
    int64_t cached_block;       /* -1: none */
    z_stream zs;
    bool zs_ready;
    CoMutex lock;               /* cache, zbuf, zs */
} BDRVCloopState;

static int cloop_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    size_t n = strlen(CLOOP_V2);

    return buf_size >= (int)n && memcmp(buf, CLOOP_V2, n) == 0 ? 2 : 0;
}

/* Largest compressed size accepted for a block: zlib's worst case and some slack. */
static uint64_t cloop_compressed_cap(uint32_t block_size)
{
    return (uint64_t)block_size + block_size / 16 + 1024;
}

/*
 * Limits enforced on the header (untrusted images): the preamble is not a
 * version 3/4 one; block size a non-zero multiple of 512 up to 64 MiB (no
 * divide by zero, bounded cache); 1 .. 32 Mi blocks, with the offsets table
 * inside the file; disk size (< 2^51) not overflowing.
 */
static int cloop_check_header(BlockDriverState *bs, BDRVCloopState *s, const uint8_t *h,
                              int64_t file_len, Error **errp)
{
    const char *fn = bs->filename;
    size_t shebang = strlen(CLOOP_SHEBANG);
    uint64_t table_end;

    if (memcmp(h, CLOOP_SHEBANG, shebang) == 0 && h[shebang] == '#' && h[shebang + 1] == 'V' &&
        memcmp(h, CLOOP_V2, strlen(CLOOP_V2)) != 0) {
        error_setg(errp, "'%s': cloop version '%.4s' is not supported (only V2.0)", fn,
                   (const char *)h + shebang + 1);
        return -ENOTSUP;
    }
    if (s->block_size == 0 || s->block_size % 512 || s->block_size > CLOOP_BLOCK_MAX) {
        error_setg(errp, "'%s': block size %u is not a non-zero multiple of 512 up to %u", fn,
                   s->block_size, CLOOP_BLOCK_MAX);
        return -EINVAL;
    }
    if (s->n_blocks == 0 || s->n_blocks > CLOOP_BLOCKS_MAX) {
        error_setg(errp, "'%s': number of blocks %u out of range [1, %u]", fn, s->n_blocks,
                   CLOOP_BLOCKS_MAX);
        return -EINVAL;
    }
    table_end = CLOOP_TABLE + ((uint64_t)s->n_blocks + 1) * 8;
    if (table_end > (uint64_t)file_len) {
        error_setg(errp, "'%s': offsets table of %u blocks ends at %llu, past the end of the "
                   "file (%lld bytes)", fn, s->n_blocks, (unsigned long long)table_end,
                   (long long)file_len);
        return -EINVAL;
    }
    return 0;
}

/*
 * Every block's data lies after the table and inside the file, the offsets
 * do not decrease, and each block's compressed size is at most
 * cloop_compressed_cap(block size).
 */
static int cloop_check_offsets(BlockDriverState *bs, BDRVCloopState *s, int64_t file_len,
                               Error **errp)
{
    uint64_t table_end = CLOOP_TABLE + ((uint64_t)s->n_blocks + 1) * 8;
    uint64_t cap = cloop_compressed_cap(s->block_size);

    for (uint32_t i = 0; i <= s->n_blocks; i++) {
        s->offsets[i] = ld_be64(&s->offsets[i]);
    }
    if (s->offsets[0] < table_end || s->offsets[s->n_blocks] > (uint64_t)file_len) {
        error_setg(errp, "'%s': block data from %llu to %llu does not lie between the offsets "
                   "table (ends at %llu) and the end of the file (%lld bytes)", bs->filename,
                   (unsigned long long)s->offsets[0],
                   (unsigned long long)s->offsets[s->n_blocks], (unsigned long long)table_end,
                   (long long)file_len);
        return -EINVAL;
    }
    s->max_compressed = 1;
    for (uint32_t i = 0; i < s->n_blocks; i++) {
        uint64_t a = s->offsets[i], b = s->offsets[i + 1];

        if (b < a || b - a > cap) {
            error_setg(errp, "'%s': block %u has offsets %llu .. %llu (compressed size must be "
                       "0 .. %llu)", bs->filename, i, (unsigned long long)a,
                       (unsigned long long)b, (unsigned long long)cap);
            return -EINVAL;
        }
        if (b - a > s->max_compressed) {
            s->max_compressed = b - a;
        }
    }
    return 0;
}

static int cloop_alloc(BlockDriverState *bs, BDRVCloopState *s, Error **errp)
{
    s->zbuf = malloc((size_t)s->max_compressed);
    s->cache = malloc(s->block_size);
    if (!s->zbuf || !s->cache || inflateInit(&s->zs) != Z_OK) {
        error_setg(errp, "Could not allocate the buffers of '%s' (block size %u)",
                   bs->filename, s->block_size);
        return -ENOMEM;
    }
    s->zs_ready = true;
    return 0;
}

static int coroutine_fn cloop_co_load(BlockDriverState *bs, Error **errp)
{
    BDRVCloopState *s = bs->opaque;
    uint8_t h[CLOOP_TABLE];
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    size_t table_len;
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    if (file_len < CLOOP_TABLE) {
        error_setg(errp, "'%s' is too short for a cloop header (%lld bytes)", bs->filename,
                   (long long)file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, 0, CLOOP_TABLE, h);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
        return ret;
    }
    s->block_size = ld_be32(h + CLOOP_PREAMBLE);
    s->n_blocks = ld_be32(h + CLOOP_PREAMBLE + 4);
    ret = cloop_check_header(bs, s, h, file_len, errp);
    if (ret < 0) {
        return ret;
    }
    table_len = ((size_t)s->n_blocks + 1) * 8;  /* bounded by the file (checked) */
    s->offsets = malloc(table_len);
    if (!s->offsets) {
        error_setg(errp, "Could not allocate the offsets table of '%s' (%u blocks)",
                   bs->filename, s->n_blocks);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, CLOOP_TABLE, (int64_t)table_len, s->offsets);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the offsets table of '%s'", bs->filename);
        return ret;
    }
    ret = cloop_check_offsets(bs, s, file_len, errp);
    return ret < 0 ? ret : cloop_alloc(bs, s, errp);
}

typedef struct CloopOpenCo {
    BlockDriverState *bs;
    Error **errp;
} CloopOpenCo;

static int64_t coroutine_fn cloop_open_co(void *opaque)
{
    CloopOpenCo *o = opaque;

    return cloop_co_load(o->bs, o->errp);
}

static void cloop_close(BlockDriverState *bs)
{
    BDRVCloopState *s = bs->opaque;

    if (s->zs_ready) {
        inflateEnd(&s->zs);
        s->zs_ready = false;
    }
    free(s->offsets);
    free(s->zbuf);
    free(s->cache);
    s->offsets = NULL;
    s->zbuf = NULL;
    s->cache = NULL;
}

static int cloop_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVCloopState *s = bs->opaque;
    CloopOpenCo o = { bs, errp };
    int ret = fmt_refuse_write_open(bs, flags, errp);

    if (ret < 0) {
        return ret;
    }
    s->cached_block = -1;
    co_mutex_init(&s->lock);
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = (int)bdrv_run_co(bs->aio_context, cloop_open_co, &o);
    if (ret < 0) {
        cloop_close(bs);
    }
    return ret;
}

static int cloop_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                                Error **errp)
{
    return fmt_refuse_write_open(bs, new_flags, errp);
}

static void cloop_reopen_noop(BlockDriverState *bs)
{
}

static void cloop_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = 512;
}

static int64_t coroutine_fn cloop_co_getlength(BlockDriverState *bs)
{
    BDRVCloopState *s = bs->opaque;

    return (int64_t)s->n_blocks * s->block_size;
}

/* Inflates block i into the cache (lock held). A bad stream is -EIO. */
static int coroutine_fn cloop_load_block(BlockDriverState *bs, uint32_t i)
{
    BDRVCloopState *s = bs->opaque;
    uint64_t len = s->offsets[i + 1] - s->offsets[i];
    int ret, zret;

    if (s->cached_block == i) {
        return 0;
    }
    s->cached_block = -1;
    BLKDBG_EVENT(bs->file, BLKDBG_READ_COMPRESSED);
    ret = fmt_co_pread(bs->file, (int64_t)s->offsets[i], (int64_t)len, s->zbuf);
    if (ret < 0) {
        return ret;
    }
    if (inflateReset(&s->zs) != Z_OK) {
        return -EIO;
    }
    s->zs.next_in = s->zbuf;
    s->zs.avail_in = (uInt)len;
    s->zs.next_out = s->cache;
    s->zs.avail_out = s->block_size;
    zret = inflate(&s->zs, Z_FINISH);
    if (zret != Z_STREAM_END || s->zs.avail_out != 0) {
        coblk_warn("cloop: '%s': block %u does not inflate to %u bytes (zlib %d)",
                   bs->filename, i, s->block_size, zret);
        return -EIO;
    }
    s->cached_block = i;
    return 0;
}

static int coroutine_fn cloop_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    BDRVCloopState *s = bs->opaque;
    int ret = 0;

    co_mutex_lock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block = (uint32_t)(offset / s->block_size);
        uint32_t in_block = (uint32_t)(offset % s->block_size);
        int64_t n = s->block_size - in_block;

        if (n > bytes) {
            n = bytes;
        }
        ret = cloop_load_block(bs, block);
        if (ret == 0) {
            iovector_from_buf(qiov, qiov_offset, s->cache + in_block, (size_t)n);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/* Every block is compressed data (no offset a reader could use in the file). */
static int coroutine_fn cloop_co_block_status(BlockDriverState *bs, bool want_zero,
                                              int64_t offset, int64_t bytes, int64_t *pnum,
                                              int64_t *map, BlockDriverState **file)
{
    *pnum = bytes;
    return BDRV_BLOCK_DATA;
}

const BlockDriver bdrv_cloop = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "cloop",
    .instance_size = sizeof(BDRVCloopState),
    .is_format = true,
    .probe = cloop_probe,
    .bdrv_open = cloop_open,
    .bdrv_close = cloop_close,
    .reopen_prepare = cloop_reopen_prepare,
    .reopen_commit = cloop_reopen_noop,
    .reopen_abort = cloop_reopen_noop,
    .refresh_limits = cloop_refresh_limits,
    .co_preadv = cloop_co_preadv,
    .co_block_status = cloop_co_block_status,
    .co_getlength = cloop_co_getlength,
};
