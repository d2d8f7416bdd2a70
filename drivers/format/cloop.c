/*
 * The "cloop" format driver (read-only): compressed loop images of the Linux
 * cloop module, versions 2, 3 and 4, from the layouts the cloop sources
 * describe (cloop.h of cloop 2.x/4.x and of the cloop 3 rewrite).
 *
 * Version 2 (all fields big-endian), as create_compressed_fs writes it:
 *   0    a 128-byte shell preamble ("#!/bin/sh\n#V2.0 Format\n..." padded)
 *   128  block size (u32), number of blocks n (u32)
 *   136  n + 1 offsets (u64): block i is the zlib stream at offsets[i] ..
 *        offsets[i + 1] in the file and inflates to exactly block size bytes.
 * Version 4: the same 136-byte header ("#V4.0" at offset 11) either first
 *   (the index follows it) or as the last 136 bytes of the file (the n + 1
 *   entries just before it). Each entry's top 4 bits are the compressor of
 *   the block that starts there (0 zlib, 1 none, 2 xz, 3 lz4, 4 lzo), the
 *   low 60 bits the offset. A version 2 header may also sit last.
 * Version 3 (a footer): the file ends with "\nCLOOP3\n", before it the
 *   version (u32, 3) and the offset of the index (u64); the index holds n
 *   (u32), block size (u32), the uncompressed size (u64), n + 1 offsets
 *   (u64) and n flags (u32: 0 stored, 2 zlib, 4 lzo, 8 xz, 16 lz4). The disk
 *   is the uncompressed size (rounded up to 512 bytes; the rest reads zero);
 *   the last block may hold fewer bytes than the block size.
 * The disk is n * block size bytes for versions 2 and 4.
 *
 * Read: zlib, stored blocks, and xz blocks when built with liblzma
 * (COBLK_HAVE_LZMA). Images with lz4 or lzo blocks (no decoder here) or
 * blocks of an unknown compressor are refused at open naming the block and
 * the compressor. Only a version 2 or 4 header first is probed; footer
 * images open with an explicit format. Reads decode a whole block into a
 * one-block cache, so that sequential reads decode each block once; stored
 * blocks are read straight from the file. The driver never writes:
 * read-write opens are refused (fmt_refuse_write_open).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/drivers.h"
#include "drivers/format/decomp.h"
#include "drivers/format/fmt-util.h"

#define CLOOP_PREAMBLE 128u
#define CLOOP_HDR 136u                  /* preamble, block size, block count */
#define CLOOP_SIG_OFF 11u               /* "V2.0" / "V4.0" */
#define CLOOP_V3_SIG "\nCLOOP3\n"
#define CLOOP_V3_TAIL 20u               /* index offset, version, signature */
#define CLOOP_V3_INDEX_HDR 16u
#define CLOOP_SHEBANG "#!/bin/sh\n"
#define CLOOP_OFFSET_MASK 0x0fffffffffffffffULL

/* Limits for untrusted images (see cloop_check_geometry / cloop_check_offsets). */
#define CLOOP_BLOCK_MAX (64u << 20)
#define CLOOP_BLOCKS_MAX (32u << 20)    /* a 256 MiB offsets table */

/* How a block is stored. */
enum { CLOOP_ZLIB, CLOOP_NONE, CLOOP_XZ, CLOOP_LZ4, CLOOP_LZO, CLOOP_UNKNOWN };

typedef struct BDRVCloopState {
    uint32_t block_size;
    uint32_t n_blocks;
    uint32_t version;           /* 2, 3 or 4 */
    uint64_t *offsets;          /* n_blocks + 1, host order, flags stripped */
    uint8_t *types;             /* n_blocks: CLOOP_ZLIB ... */
    uint64_t disk_size;         /* bytes of data (v3: the uncompressed size) */
    uint64_t max_compressed;    /* largest stored block */
    uint8_t *zbuf;              /* max_compressed bytes */
    uint8_t *cache;             /* block_size + 1 bytes: block cached_block decoded */
    int64_t cached_block;       /* -1: none */
    DecompCtx dc;
    CoMutex lock;               /* cache, zbuf, dc */
} BDRVCloopState;

/* Where the index lies and where block data may lie, as found at open. */
typedef struct CloopLayout {
    uint64_t index;             /* file offset of the n + 1 offsets */
    uint64_t data_lo, data_hi;  /* block data lies in [data_lo, data_hi) */
    bool v3;
} CloopLayout;

static int cloop_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    size_t n = strlen(CLOOP_SHEBANG);

    if (buf_size < (int)CLOOP_SIG_OFF + 4 || memcmp(buf, CLOOP_SHEBANG, n) != 0) {
        return 0;
    }
    return !memcmp(buf + CLOOP_SIG_OFF, "V2.0", 4) || !memcmp(buf + CLOOP_SIG_OFF, "V4.0", 4)
               ? 2 : 0;
}

static const char *cloop_type_name(uint8_t t)
{
    static const char *const names[] = { "zlib", "no compression", "xz", "lz4", "lzo" };

    return t < CLOOP_UNKNOWN ? names[t] : "an unknown compressor";
}

/* Largest stored size accepted for a block: zlib's / xz's worst case and some slack. */
static uint64_t cloop_compressed_cap(uint32_t block_size)
{
    return (uint64_t)block_size + block_size / 16 + 1024;
}

/* Bytes block i decodes to: the block size, or less for the last block of a v3 image. */
static uint64_t cloop_block_bytes(const BDRVCloopState *s, uint32_t i)
{
    uint64_t start = (uint64_t)i * s->block_size;
    uint64_t left = s->disk_size - start;

    return left < s->block_size ? left : s->block_size;
}

/*
 * The version 2 / 4 header at pos (0 or the last 136 bytes): "#V" + digit at
 * offset 10. Returns 1 if h is one (version set), 0 if not, -ENOTSUP for a
 * version this driver does not know.
 */
static int cloop_parse_header(BlockDriverState *bs, BDRVCloopState *s, const uint8_t *h,
                              Error **errp)
{
    size_t n = strlen(CLOOP_SHEBANG);

    if (memcmp(h, CLOOP_SHEBANG, n) != 0 || h[n] != '#' || h[n + 1] != 'V') {
        return 0;
    }
    if (!memcmp(h + CLOOP_SIG_OFF, "V2.0", 4) || !memcmp(h + CLOOP_SIG_OFF, "V4.0", 4)) {
        s->version = h[CLOOP_SIG_OFF + 1] - '0';
        s->block_size = ld_be32(h + CLOOP_PREAMBLE);
        s->n_blocks = ld_be32(h + CLOOP_PREAMBLE + 4);
        return 1;
    }
    error_setg(errp, "'%s': cloop version '%.4s' is not supported (V2.0, V4.0 and cloop 3 "
               "footers are)", bs->filename, (const char *)h + n + 1);
    return -ENOTSUP;
}

/*
 * Limits enforced on the geometry (untrusted images): block size a non-zero
 * multiple of 512 up to 64 MiB (no divide by zero, bounded cache); 1 .. 32 Mi
 * blocks (disk < 2^51, no overflow); v3: the uncompressed size within the
 * last block.
 */
static int cloop_check_geometry(BlockDriverState *bs, BDRVCloopState *s, Error **errp)
{
    const char *fn = bs->filename;
    uint64_t full;

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
    full = (uint64_t)s->n_blocks * s->block_size;
    if (s->version != 3) {
        s->disk_size = full;
    } else if (s->disk_size <= full - s->block_size || s->disk_size > full) {
        error_setg(errp, "'%s': uncompressed size %llu does not end in the last of %u blocks "
                   "of %u bytes", fn, (unsigned long long)s->disk_size, s->n_blocks,
                   s->block_size);
        return -EINVAL;
    }
    return 0;
}

/* Version 3: the footer names the index; reads its 16-byte head. */
static int coroutine_fn cloop_load_v3(BlockDriverState *bs, BDRVCloopState *s, int64_t len,
                                      CloopLayout *l, Error **errp)
{
    uint8_t t[CLOOP_V3_TAIL], h[CLOOP_V3_INDEX_HDR];
    uint64_t tail = (uint64_t)len - CLOOP_V3_TAIL;
    int ret = fmt_co_pread(bs->file, (int64_t)tail, CLOOP_V3_TAIL, t);

    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the cloop 3 footer of '%s'", bs->filename);
        return ret;
    }
    if (ld_be32(t + 8) != 3) {
        error_setg(errp, "'%s': cloop footer version %u is not supported (only 3)",
                   bs->filename, ld_be32(t + 8));
        return -ENOTSUP;
    }
    l->index = ld_be64(t);
    if (!range_within(l->index, CLOOP_V3_INDEX_HDR, tail)) {
        error_setg(errp, "'%s': cloop 3 index offset %llu does not lie before the footer",
                   bs->filename, (unsigned long long)l->index);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, (int64_t)l->index, CLOOP_V3_INDEX_HDR, h);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the cloop 3 index of '%s'", bs->filename);
        return ret;
    }
    s->version = 3;
    s->n_blocks = ld_be32(h);
    s->block_size = ld_be32(h + 4);
    s->disk_size = ld_be64(h + 8);
    l->data_lo = 0;
    l->data_hi = l->index;
    l->index += CLOOP_V3_INDEX_HDR;
    l->v3 = true;
    return 0;
}

/* Finds the header (first or last) or the v3 footer; fills the layout. */
static int coroutine_fn cloop_find_layout(BlockDriverState *bs, BDRVCloopState *s,
                                          int64_t len, CloopLayout *l, Error **errp)
{
    uint8_t h[CLOOP_HDR];
    int ret;

    if (len < CLOOP_HDR) {
        error_setg(errp, "'%s' is too short for a cloop header (%lld bytes)", bs->filename,
                   (long long)len);
        return -EINVAL;
    }
    for (int last = 0; last < 2; last++) {
        ret = fmt_co_pread(bs->file, last ? len - CLOOP_HDR : 0, CLOOP_HDR, h);
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
            return ret;
        }
        ret = cloop_parse_header(bs, s, h, errp);
        if (ret < 0) {
            return ret;
        }
        if (ret == 1) {
            uint64_t table = ((uint64_t)s->n_blocks + 1) * 8;

            /* Header first: index after it, data after the index; last: the reverse. */
            l->index = last ? (uint64_t)len - CLOOP_HDR - table : CLOOP_HDR;
            l->data_lo = last ? 0 : CLOOP_HDR + table;
            l->data_hi = last ? l->index : (uint64_t)len;
            if (last && table > (uint64_t)len - CLOOP_HDR) {
                l->index = UINT64_MAX;  /* cloop_load_index refuses it after the geometry */
            }
            return 0;
        }
        if (!last) {
            ret = fmt_co_pread(bs->file, len - 8, 8, h);
            if (ret < 0) {
                error_setg_errno(errp, ret, "Could not read the end of '%s'", bs->filename);
                return ret;
            }
            if (len >= CLOOP_V3_TAIL + CLOOP_V3_INDEX_HDR && !memcmp(h, CLOOP_V3_SIG, 8)) {
                return cloop_load_v3(bs, s, len, l, errp);
            }
        }
    }
    error_setg(errp, "'%s' is not a cloop image (no V2.0 or V4.0 header first or last, no "
               "cloop 3 footer)", bs->filename);
    return -EINVAL;
}

/* The compressor of block i from its v4 entry or v3 flags. */
static uint8_t cloop_type_v4(uint64_t entry)
{
    uint64_t f = entry >> 60;

    return f <= CLOOP_LZO ? (uint8_t)f : CLOOP_UNKNOWN;
}

static uint8_t cloop_type_v3(uint32_t flags)
{
    switch (flags) {
    case 0: return CLOOP_NONE;
    case 2: return CLOOP_ZLIB;
    case 4: return CLOOP_LZO;
    case 8: return CLOOP_XZ;
    case 16: return CLOOP_LZ4;
    default: return CLOOP_UNKNOWN;
    }
}

static bool cloop_type_readable(uint8_t t)
{
    return t == CLOOP_ZLIB || t == CLOOP_NONE || (t == CLOOP_XZ && decomp_available(DECOMP_XZ));
}

/*
 * Every block's data lies inside [data_lo, data_hi), the offsets do not
 * decrease, each block's stored size is at most cloop_compressed_cap(block
 * size) (a stored block: exactly its bytes), and its compressor is one this
 * build reads.
 */
static int cloop_check_offsets(BlockDriverState *bs, BDRVCloopState *s, const CloopLayout *l,
                               Error **errp)
{
    uint64_t cap = cloop_compressed_cap(s->block_size);
    uint32_t n = s->n_blocks;

    if (s->offsets[0] < l->data_lo || s->offsets[n] > l->data_hi) {
        error_setg(errp, "'%s': block data from %llu to %llu does not lie between the offsets "
                   "table and the end of the file (from %llu to %llu)", bs->filename,
                   (unsigned long long)s->offsets[0], (unsigned long long)s->offsets[n],
                   (unsigned long long)l->data_lo, (unsigned long long)l->data_hi);
        return -EINVAL;
    }
    s->max_compressed = 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t a = s->offsets[i], b = s->offsets[i + 1];
        bool stored = s->types[i] == CLOOP_NONE;

        if (b < a || b - a > cap ||
            (stored && b - a != cloop_block_bytes(s, i) && b - a != s->block_size)) {
            error_setg(errp, "'%s': block %u has offsets %llu .. %llu (stored size must be "
                       "%s %llu)", bs->filename, i, (unsigned long long)a,
                       (unsigned long long)b, stored ? "exactly" : "0 ..",
                       (unsigned long long)(stored ? cloop_block_bytes(s, i) : cap));
            return -EINVAL;
        }
        if (!cloop_type_readable(s->types[i])) {
            error_setg(errp, "'%s': block %u is stored with %s, which coblk does not "
                       "support%s", bs->filename, i, cloop_type_name(s->types[i]),
                       s->types[i] == CLOOP_XZ ? " (built without liblzma)" : "");
            return -ENOTSUP;
        }
        if (b - a > s->max_compressed) {
            s->max_compressed = b - a;
        }
    }
    return 0;
}

/* Reads the n + 1 offsets (and v3 flags) and splits them into offsets and types. */
static int coroutine_fn cloop_load_index(BlockDriverState *bs, BDRVCloopState *s,
                                         const CloopLayout *l, int64_t len, Error **errp)
{
    uint32_t n = s->n_blocks;
    uint64_t table = ((uint64_t)n + 1) * 8, flags = l->v3 ? (uint64_t)n * 4 : 0;
    uint8_t *raw;
    int ret;

    if (!range_within(l->index, table + flags, l->v3 ? (uint64_t)len - CLOOP_V3_TAIL
                                                      : (uint64_t)len)) {
        error_setg(errp, "'%s': offsets table of %u blocks at %llu ends past the end of the "
                   "file (%lld bytes)", bs->filename, n, (unsigned long long)l->index,
                   (long long)len);
        return -EINVAL;
    }
    /* Bounded: 32 Mi blocks, and inside the file (checked above). */
    s->offsets = malloc((size_t)table);
    s->types = malloc(n);
    raw = malloc((size_t)(table + flags));
    if (!s->offsets || !s->types || !raw) {
        free(raw);
        error_setg(errp, "Could not allocate the offsets table of '%s' (%u blocks)",
                   bs->filename, n);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, (int64_t)l->index, (int64_t)(table + flags), raw);
    if (ret < 0) {
        free(raw);
        error_setg_errno(errp, ret, "Could not read the offsets table of '%s'", bs->filename);
        return ret;
    }
    for (uint32_t i = 0; i <= n; i++) {
        uint64_t e = ld_be64(raw + (size_t)i * 8);

        s->offsets[i] = s->version == 4 ? e & CLOOP_OFFSET_MASK : e;
        if (i < n) {
            s->types[i] = s->version == 2   ? CLOOP_ZLIB
                          : s->version == 4 ? cloop_type_v4(e)
                                            : cloop_type_v3(ld_be32(raw + table + (size_t)i * 4));
        }
    }
    free(raw);
    return 0;
}

static int cloop_alloc(BlockDriverState *bs, BDRVCloopState *s, Error **errp)
{
    s->zbuf = malloc((size_t)s->max_compressed);
    s->cache = malloc((size_t)s->block_size + 1);   /* + 1: decomp.h */
    if (!s->zbuf || !s->cache) {
        error_setg(errp, "Could not allocate the buffers of '%s' (block size %u)",
                   bs->filename, s->block_size);
        return -ENOMEM;
    }
    return 0;
}

static int coroutine_fn cloop_co_load(BlockDriverState *bs, Error **errp)
{
    BDRVCloopState *s = bs->opaque;
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    CloopLayout l = { 0 };
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    ret = cloop_find_layout(bs, s, file_len, &l, errp);
    ret = ret < 0 ? ret : cloop_check_geometry(bs, s, errp);
    ret = ret < 0 ? ret : cloop_load_index(bs, s, &l, file_len, errp);
    ret = ret < 0 ? ret : cloop_check_offsets(bs, s, &l, errp);
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

    decomp_ctx_free(&s->dc);
    free(s->offsets);
    free(s->types);
    free(s->zbuf);
    free(s->cache);
    s->offsets = NULL;
    s->types = NULL;
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

    return (int64_t)round_up_u64(s->disk_size, 512);
}

/*
 * Decodes block i into the cache (lock held); bytes past its data read zero.
 * A bad stream is -EIO. The last block of a v3 image may hold its share of
 * the disk or a whole block.
 */
static int coroutine_fn cloop_load_block(BlockDriverState *bs, uint32_t i)
{
    BDRVCloopState *s = bs->opaque;
    uint64_t len = s->offsets[i + 1] - s->offsets[i];
    size_t want = (size_t)cloop_block_bytes(s, i);
    DecompType t = s->types[i] == CLOOP_XZ ? DECOMP_XZ : DECOMP_ZLIB;
    const char *why;
    int ret;

    if (s->cached_block == i) {
        return 0;
    }
    s->cached_block = -1;
    BLKDBG_EVENT(bs->file, BLKDBG_READ_COMPRESSED);
    ret = fmt_co_pread(bs->file, (int64_t)s->offsets[i], (int64_t)len, s->zbuf);
    if (ret < 0) {
        return ret;
    }
    ret = decomp_run(&s->dc, t, s->zbuf, (size_t)len, s->cache, want, &why);
    if (ret == -EIO && want < s->block_size) {
        ret = decomp_run(&s->dc, t, s->zbuf, (size_t)len, s->cache, s->block_size, &why);
    }
    if (ret == -EIO) {
        coblk_warn("cloop: '%s': block %u (%s) does not decode to %zu bytes: %s",
                   bs->filename, i, cloop_type_name(s->types[i]), want, why);
    }
    if (ret < 0) {
        return ret;
    }
    memset(s->cache + want, 0, s->block_size - want);
    s->cached_block = i;
    return 0;
}

/* Reads n bytes at in_block of block i: stored blocks from the file, others decoded. */
static int coroutine_fn cloop_read_block(BlockDriverState *bs, uint32_t i, uint32_t in_block,
                                         int64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVCloopState *s = bs->opaque;
    uint64_t have = cloop_block_bytes(s, i);
    int ret;

    if (s->types[i] == CLOOP_NONE) {
        int64_t from_file = in_block >= have ? 0 : (int64_t)(have - in_block);

        from_file = from_file < n ? from_file : n;
        if (from_file < n) {
            iovector_memset(qiov, qiov_offset + (size_t)from_file, 0, (size_t)(n - from_file));
        }
        return from_file ? bdrv_co_preadv_part(bs->file, (int64_t)s->offsets[i] + in_block,
                                               from_file, qiov, qiov_offset, 0)
                         : 0;
    }
    co_mutex_lock(&s->lock);
    ret = cloop_load_block(bs, i);
    if (ret == 0) {
        iovector_from_buf(qiov, qiov_offset, s->cache + in_block, (size_t)n);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

static int coroutine_fn cloop_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    BDRVCloopState *s = bs->opaque;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        uint32_t block = (uint32_t)(offset / s->block_size);
        uint32_t in_block = (uint32_t)(offset % s->block_size);
        int64_t n = s->block_size - in_block;

        if (n > bytes) {
            n = bytes;
        }
        ret = cloop_read_block(bs, block, in_block, n, qiov, qiov_offset);
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    return ret;
}

/* Stored blocks map into the file; compressed ones are data with no offset. */
static int coroutine_fn cloop_co_block_status(BlockDriverState *bs, bool want_zero,
                                              int64_t offset, int64_t bytes, int64_t *pnum,
                                              int64_t *map, BlockDriverState **file)
{
    BDRVCloopState *s = bs->opaque;
    uint32_t i = (uint32_t)(offset / s->block_size), in_block = offset % s->block_size;
    uint64_t have = cloop_block_bytes(s, i);

    *pnum = (int64_t)s->block_size - in_block;
    *pnum = *pnum < bytes ? *pnum : bytes;
    if (s->types[i] != CLOOP_NONE) {
        return BDRV_BLOCK_DATA;
    }
    if (in_block >= have) {
        return BDRV_BLOCK_ZERO;
    }
    *pnum = *pnum < (int64_t)(have - in_block) ? *pnum : (int64_t)(have - in_block);
    *map = (int64_t)(s->offsets[i] + in_block);
    *file = bs->file->bs;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
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
