/*
 * The "dmg" format driver (read-only): Apple UDIF disk images.
 *
 * Layout (all fields big-endian), from the public descriptions of UDIF:
 *   koly trailer, the last 512 bytes of the file: magic "koly", version,
 *   header size (512), flags, running data fork offset, data fork offset
 *   (24) and length, resource fork offset (40) and length (48), segment
 *   fields, data checksum, XML plist offset (216) and length (224), master
 *   checksum, image variant, sector count (492).
 *   The block map: "blkx" resources in the XML plist (base64 <data>) or in
 *   the resource fork, each a "mish" block: magic, version, first sector (8),
 *   sector count (16), data offset, buffers, descriptors, checksum, chunk
 *   count (200), then 40-byte chunks from 204: type, comment, first sector
 *   (relative to the block's), sector count, data offset (relative to the data
 *   fork), data length.
 *   Chunk types: 0x00000000 zero fill, 0x00000001 raw, 0x00000002 ignore
 *   (reads zero), 0x80000004 ADC, 0x80000005 zlib, 0x80000006 bzip2,
 *   0x80000007 LZFSE, 0x80000008 LZMA, 0x7ffffffe comment, 0xffffffff last.
 *
 * Read: zero-fill, ignore, raw, zlib, ADC, bzip2 when built with libbz2
 * (COBLK_HAVE_BZIP2) and LZMA when built with liblzma (COBLK_HAVE_LZMA: an
 * xz stream, as Apple's Compression framework writes, or a legacy .lzma
 * stream). Images holding LZFSE chunks (no decoder in Debian), chunks of a
 * codec this build lacks, or unknown chunks are refused at open with an
 * error naming the chunk type. Sectors no chunk covers read as zero. A compressed chunk is inflated whole into a
 * one-chunk cache, so sequential reads inflate each chunk once. The driver
 * never writes: read-write opens are refused (fmt_refuse_write_open).
 *
 * Limits (untrusted images): the trailer's header size is 512; sector count
 * <= BDRV_MAX_LENGTH / 512; plist / resource fork 1 byte .. 16 MiB inside
 * the file; at most 65536 mish blocks and DMG_CHUNKS_MAX chunks; a mish
 * block's chunk array inside the block; data chunks at most 64 MiB
 * compressed and 64 MiB uncompressed; raw chunk length = sectors * 512;
 * chunk data inside the file; sector arithmetic checked for overflow;
 * chunks inside the disk and not overlapping. A compressed chunk must decode
 * to exactly its sectors (decomp.h): a stream cut short, running past the
 * chunk or damaged fails the read with EIO; the LZMA decoder may use at most
 * 128 MiB.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "coblk-config.h"
#include "drivers/drivers.h"
#include "drivers/format/decomp.h"
#include "drivers/format/dmg/dmg.h"
#include "drivers/format/fmt-util.h"

#define DMG_TRAILER 512u
#define DMG_SECTOR 512u
#define DMG_CHUNK_BYTES_MAX (64u << 20)
#define DMG_CHUNKS_MAX (1u << 20)
#define MISH_HDR 204u
#define MISH_CHUNK 40u

enum {
    KOLY_MAGIC = 0, KOLY_HDRSIZE = 8, KOLY_DATA_OFF = 24, KOLY_RSRC_OFF = 40,
    KOLY_RSRC_LEN = 48, KOLY_XML_OFF = 216, KOLY_XML_LEN = 224, KOLY_SECTORS = 492,
};

enum {
    DMG_ZERO = 0x00000000u, DMG_RAW = 0x00000001u, DMG_IGNORE = 0x00000002u,
    DMG_ADC = 0x80000004u, DMG_ZLIB = 0x80000005u, DMG_BZIP2 = 0x80000006u,
    DMG_LZFSE = 0x80000007u, DMG_LZMA = 0x80000008u, DMG_COMMENT = 0x7ffffffeu,
    DMG_LAST = 0xffffffffu,
};

typedef struct DmgChunk {
    uint64_t sector;            /* first disk sector */
    uint64_t sectors;
    uint64_t offset;            /* data in the file */
    uint64_t length;
    uint32_t type;
} DmgChunk;

typedef struct BDRVDmgState {
    DmgChunk *chunks;           /* sorted by sector, not overlapping */
    uint32_t n_chunks;
    uint32_t cap_chunks;
    uint64_t sectors;           /* disk size in sectors */
    uint64_t data_fork;
    int64_t file_len;
    const char *file;           /* for errors while loading */
    uint64_t max_compressed;    /* largest compressed chunk */
    uint64_t max_inflated;      /* largest compressed chunk's output */
    uint32_t n_mish;
    uint8_t *zbuf;              /* max_compressed bytes (first compressed read) */
    uint8_t *cache;             /* max_inflated bytes */
    int64_t cached;             /* chunk index in cache, -1: none */
    DecompCtx dc;
    CoMutex lock;               /* zbuf, cache, dc */
} BDRVDmgState;

static int dmg_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    size_t n = filename ? strlen(filename) : 0;

    /* The magic is at the end of the file: only the name can tell. */
    return n > 4 && strcmp(filename + n - 4, ".dmg") == 0 ? 2 : 0;
}

static const char *dmg_type_name(uint32_t type)
{
    switch (type) {
    case DMG_ADC: return "ADC compression";
    case DMG_ZLIB: return "zlib compression";
    case DMG_BZIP2: return "bzip2 compression";
    case DMG_LZFSE: return "LZFSE compression";
    case DMG_LZMA: return "LZMA compression";
    default: return "unknown type";
    }
}

static bool dmg_is_zero(uint32_t type)
{
    return type == DMG_ZERO || type == DMG_IGNORE;
}

/* The decoder of a compressed chunk type; false for the others. */
static bool dmg_codec(uint32_t type, DecompType *t)
{
    switch (type) {
    case DMG_ADC: *t = DECOMP_ADC; return true;
    case DMG_ZLIB: *t = DECOMP_ZLIB; return true;
    case DMG_BZIP2: *t = DECOMP_BZIP2; return true;
    case DMG_LZMA: *t = DECOMP_LZMA; return true;
    default: return false;
    }
}

/* NULL if coblk reads chunks of this type, else why not. */
static const char *dmg_type_refused(uint32_t type)
{
    DecompType t;

    if (dmg_is_zero(type) || type == DMG_RAW) {
        return NULL;
    }
    if (type == DMG_LZFSE) {
        return "coblk has no LZFSE decoder";
    }
    if (!dmg_codec(type, &t)) {
        return "coblk does not know this chunk type";
    }
    if (!decomp_available(t)) {
        return t == DECOMP_BZIP2 ? "this coblk was built without libbz2"
                                 : "this coblk was built without liblzma";
    }
    return NULL;
}

/* Checks one chunk's type, sizes and data range; fills c. */
static int dmg_check_chunk(BDRVDmgState *s, uint32_t blk, uint32_t i, uint64_t base,
                           const uint8_t *e, DmgChunk *c, Error **errp)
{
    uint64_t rel = ld_be64(e + 8), bytes;
    const char *refused;

    c->type = ld_be32(e);
    c->sectors = ld_be64(e + 16);
    c->length = ld_be64(e + 32);
    refused = dmg_type_refused(c->type);
    if (refused) {
        error_setg(errp, "'%s': chunk %u of blkx block %u has type 0x%08x (%s), which coblk "
                   "does not support: %s", s->file, i, blk, c->type, dmg_type_name(c->type),
                   refused);
        return -ENOTSUP;
    }
    if (check_add_overflow(base, rel, &c->sector) ||
        check_mul_overflow(c->sectors, (uint64_t)DMG_SECTOR, &bytes) ||
        c->sector > s->sectors || c->sectors > s->sectors - c->sector) {
        error_setg(errp, "'%s': chunk %u of blkx block %u (sector %llu + %llu, %llu sectors) "
                   "lies outside the disk (%llu sectors)", s->file, i, blk,
                   (unsigned long long)base, (unsigned long long)rel,
                   (unsigned long long)c->sectors, (unsigned long long)s->sectors);
        return -EINVAL;
    }
    if (dmg_is_zero(c->type)) {
        c->offset = c->length = 0;
        return 0;
    }
    if (bytes > DMG_CHUNK_BYTES_MAX || c->length > DMG_CHUNK_BYTES_MAX ||
        (c->type == DMG_RAW && c->length != bytes)) {
        error_setg(errp, "'%s': chunk %u of blkx block %u: %llu sectors in %llu bytes (data "
                   "chunks hold at most %u bytes; raw chunks exactly their sectors)", s->file,
                   i, blk, (unsigned long long)c->sectors, (unsigned long long)c->length,
                   DMG_CHUNK_BYTES_MAX);
        return -EINVAL;
    }
    if (check_add_overflow(s->data_fork, ld_be64(e + 24), &c->offset) ||
        !range_within(c->offset, c->length, (uint64_t)s->file_len)) {
        error_setg(errp, "'%s': chunk %u of blkx block %u: data at %llu + %llu (%llu bytes) "
                   "lies outside the file (%lld bytes)", s->file, i, blk,
                   (unsigned long long)s->data_fork, (unsigned long long)ld_be64(e + 24),
                   (unsigned long long)c->length, (long long)s->file_len);
        return -EINVAL;
    }
    if (c->type != DMG_RAW) {
        s->max_compressed = c->length > s->max_compressed ? c->length : s->max_compressed;
        s->max_inflated = bytes > s->max_inflated ? bytes : s->max_inflated;
    }
    return 0;
}

static int dmg_add_chunk(BDRVDmgState *s, const DmgChunk *c, Error **errp)
{
    if (s->n_chunks == s->cap_chunks) {
        uint32_t cap = s->cap_chunks ? s->cap_chunks * 2 : 64;
        DmgChunk *n;

        if (s->n_chunks >= DMG_CHUNKS_MAX) {
            error_setg(errp, "'%s': more than %u chunks", s->file, DMG_CHUNKS_MAX);
            return -EINVAL;
        }
        n = realloc(s->chunks, (size_t)cap * sizeof(*n));
        if (!n) {
            error_setg(errp, "'%s': out of memory for the chunk table", s->file);
            return -ENOMEM;
        }
        s->chunks = n;
        s->cap_chunks = cap;
    }
    s->chunks[s->n_chunks++] = *c;
    return 0;
}

/* Adds the chunks of one mish block (a DmgMishFn). */
static int dmg_add_mish(void *opaque, const uint8_t *m, size_t len, Error **errp)
{
    BDRVDmgState *s = opaque;
    uint32_t blk = s->n_mish++, n;
    uint64_t base;

    if (len < MISH_HDR) {
        error_setg(errp, "'%s': blkx block %u is %zu bytes, shorter than its %u-byte header",
                   s->file, blk, len, MISH_HDR);
        return -EINVAL;
    }
    base = ld_be64(m + 8);
    n = ld_be32(m + 200);
    if (n > (len - MISH_HDR) / MISH_CHUNK) {
        error_setg(errp, "'%s': blkx block %u claims %u chunks but holds %zu bytes", s->file,
                   blk, n, len);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = m + MISH_HDR + (size_t)i * MISH_CHUNK;
        DmgChunk c;
        int ret;

        if (ld_be32(e) == DMG_LAST) {
            break;
        }
        if (ld_be32(e) == DMG_COMMENT) {
            continue;
        }
        ret = dmg_check_chunk(s, blk, i, base, e, &c, errp);
        if (ret == 0 && c.sectors) {
            ret = dmg_add_chunk(s, &c, errp);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int dmg_chunk_cmp(const void *a, const void *b)
{
    const DmgChunk *x = a, *y = b;

    return x->sector < y->sector ? -1 : x->sector > y->sector;
}

/* Sorts the chunks and refuses overlaps. */
static int dmg_sort_chunks(BDRVDmgState *s, Error **errp)
{
    if (s->n_chunks == 0) {
        error_setg(errp, "'%s': the block map has no chunks", s->file);
        return -EINVAL;
    }
    qsort(s->chunks, s->n_chunks, sizeof(DmgChunk), dmg_chunk_cmp);
    for (uint32_t i = 1; i < s->n_chunks; i++) {
        const DmgChunk *a = &s->chunks[i - 1], *b = &s->chunks[i];

        if (a->sector + a->sectors > b->sector) {
            error_setg(errp, "'%s': chunks at sectors %llu (+%llu) and %llu overlap", s->file,
                       (unsigned long long)a->sector, (unsigned long long)a->sectors,
                       (unsigned long long)b->sector);
            return -EINVAL;
        }
    }
    return 0;
}

/* Reads the fork at off (len bytes) into a NUL-terminated buffer. */
static int coroutine_fn dmg_read_fork(BlockDriverState *bs, const char *what, uint64_t off,
                                      uint64_t len, char **out, Error **errp)
{
    BDRVDmgState *s = bs->opaque;
    int ret;

    if (len > DMG_PLIST_MAX || !range_within(off, len, (uint64_t)s->file_len - DMG_TRAILER)) {
        error_setg(errp, "'%s': %s at %llu (%llu bytes) is larger than %u bytes or does not "
                   "lie inside the file before the trailer", bs->filename, what,
                   (unsigned long long)off, (unsigned long long)len, DMG_PLIST_MAX);
        return -EINVAL;
    }
    *out = malloc((size_t)len + 1);
    if (!*out) {
        error_setg(errp, "'%s': out of memory for the %s", bs->filename, what);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, (int64_t)off, (int64_t)len, *out);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the %s of '%s'", what, bs->filename);
        return ret;
    }
    (*out)[len] = 0;
    return 0;
}

/* Builds the chunk table from the resource fork, or else from the XML plist. */
static int coroutine_fn dmg_load_map(BlockDriverState *bs, const uint8_t *k, Error **errp)
{
    BDRVDmgState *s = bs->opaque;
    uint64_t rsrc_len = ld_be64(k + KOLY_RSRC_LEN), xml_len = ld_be64(k + KOLY_XML_LEN);
    bool rsrc = rsrc_len != 0;
    char *buf = NULL;
    int ret;

    if (!rsrc && !xml_len) {
        error_setg(errp, "'%s': the trailer names neither a resource fork nor an XML plist",
                   bs->filename);
        return -EINVAL;
    }
    ret = rsrc ? dmg_read_fork(bs, "resource fork", ld_be64(k + KOLY_RSRC_OFF), rsrc_len, &buf,
                               errp)
               : dmg_read_fork(bs, "XML plist", ld_be64(k + KOLY_XML_OFF), xml_len, &buf, errp);
    if (ret == 0) {
        ret = rsrc ? dmg_rsrc_foreach_mish(bs->filename, (uint8_t *)buf, rsrc_len, dmg_add_mish,
                                           s, errp)
                   : dmg_plist_foreach_mish(bs->filename, buf, xml_len, dmg_add_mish, s, errp);
    }
    free(buf);
    return ret < 0 ? ret : dmg_sort_chunks(s, errp);
}

static int coroutine_fn dmg_co_load(BlockDriverState *bs, Error **errp)
{
    BDRVDmgState *s = bs->opaque;
    uint8_t k[DMG_TRAILER];
    int ret;

    s->file = bs->filename;
    s->file_len = bdrv_co_getlength(bs->file->bs);
    if (s->file_len < 0) {
        error_setg_errno(errp, (int)s->file_len, "Could not get the size of '%s'", s->file);
        return (int)s->file_len;
    }
    if (s->file_len < DMG_TRAILER) {
        error_setg(errp, "'%s' is too short for a dmg trailer (%lld bytes)", s->file,
                   (long long)s->file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, s->file_len - DMG_TRAILER, DMG_TRAILER, k);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the trailer of '%s'", s->file);
        return ret;
    }
    if (memcmp(k + KOLY_MAGIC, "koly", 4) != 0 || ld_be32(k + KOLY_HDRSIZE) != DMG_TRAILER) {
        error_setg(errp, "'%s' is not a dmg image (trailer magic 0x%08x, header size %u)",
                   s->file, ld_be32(k + KOLY_MAGIC), ld_be32(k + KOLY_HDRSIZE));
        return -EINVAL;
    }
    s->sectors = ld_be64(k + KOLY_SECTORS);
    s->data_fork = ld_be64(k + KOLY_DATA_OFF);
    if (s->sectors > (uint64_t)BDRV_MAX_LENGTH / DMG_SECTOR) {
        error_setg(errp, "'%s': sector count %llu is too large", s->file,
                   (unsigned long long)s->sectors);
        return -EINVAL;
    }
    return dmg_load_map(bs, k, errp);
}

typedef struct DmgOpenCo {
    BlockDriverState *bs;
    Error **errp;
} DmgOpenCo;

static int64_t coroutine_fn dmg_open_co(void *opaque)
{
    DmgOpenCo *o = opaque;

    return dmg_co_load(o->bs, o->errp);
}

static void dmg_close(BlockDriverState *bs)
{
    BDRVDmgState *s = bs->opaque;

    decomp_ctx_free(&s->dc);
    free(s->chunks);
    free(s->zbuf);
    free(s->cache);
    s->chunks = NULL;
    s->zbuf = NULL;
    s->cache = NULL;
}

static int dmg_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVDmgState *s = bs->opaque;
    DmgOpenCo o = { bs, errp };
    int ret = fmt_refuse_write_open(bs, flags, errp);

    if (ret < 0) {
        return ret;
    }
    s->cached = -1;
    co_mutex_init(&s->lock);
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = (int)bdrv_run_co(bs->aio_context, dmg_open_co, &o);
    s->file = NULL;
    if (ret < 0) {
        dmg_close(bs);
    }
    return ret;
}

static int dmg_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                              Error **errp)
{
    return fmt_refuse_write_open(bs, new_flags, errp);
}

static void dmg_reopen_noop(BlockDriverState *bs)
{
}

static void dmg_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = DMG_SECTOR;
}

static int64_t coroutine_fn dmg_co_getlength(BlockDriverState *bs)
{
    BDRVDmgState *s = bs->opaque;

    return (int64_t)(s->sectors * DMG_SECTOR);
}

/*
 * The chunk holding sector, or the gap before the next chunk: returns the
 * index of the first chunk that ends after sector (n_chunks if none).
 */
static uint32_t dmg_find(const BDRVDmgState *s, uint64_t sector)
{
    uint32_t lo = 0, hi = s->n_chunks;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const DmgChunk *c = &s->chunks[mid];

        if (c->sector + c->sectors <= sector) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    return lo;
}

/* Decompresses chunk i into the cache (lock held). A bad stream is -EIO. */
static int coroutine_fn dmg_inflate(BlockDriverState *bs, uint32_t i)
{
    BDRVDmgState *s = bs->opaque;
    const DmgChunk *c = &s->chunks[i];
    size_t out = (size_t)(c->sectors * DMG_SECTOR);
    const char *why;
    DecompType t;
    int ret;

    if (s->cached == i) {
        return 0;
    }
    if (!s->zbuf) {
        /* Once per open, sized at open: at most 64 MiB each (+1: decomp.h). */
        s->zbuf = malloc((size_t)s->max_compressed + 1);
        s->cache = malloc((size_t)s->max_inflated + 1);
        if (!s->zbuf || !s->cache) {
            free(s->zbuf);
            free(s->cache);
            s->zbuf = s->cache = NULL;
            return -ENOMEM;
        }
    }
    s->cached = -1;
    BLKDBG_EVENT(bs->file, BLKDBG_READ_COMPRESSED);
    ret = fmt_co_pread(bs->file, (int64_t)c->offset, (int64_t)c->length, s->zbuf);
    if (ret < 0) {
        return ret;
    }
    if (!dmg_codec(c->type, &t)) {
        return -EIO;    /* not reached: open accepts only the types above */
    }
    ret = decomp_run(&s->dc, t, s->zbuf, (size_t)c->length, s->cache, out, &why);
    if (ret == -EIO) {
        coblk_warn("dmg: '%s': %s chunk at sector %llu (%llu bytes) does not decode to %zu "
                   "bytes: %s", bs->filename, dmg_type_name(c->type),
                   (unsigned long long)c->sector, (unsigned long long)c->length, out, why);
    }
    if (ret < 0) {
        return ret;
    }
    s->cached = i;
    return 0;
}

/* Reads n bytes at byte in_chunk of chunk i. */
static int coroutine_fn dmg_read_chunk(BlockDriverState *bs, uint32_t i, uint64_t in_chunk,
                                       int64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVDmgState *s = bs->opaque;
    const DmgChunk *c = &s->chunks[i];
    int ret;

    if (dmg_is_zero(c->type)) {
        iovector_memset(qiov, qiov_offset, 0, (size_t)n);
        return 0;
    }
    if (c->type == DMG_RAW) {
        return bdrv_co_preadv_part(bs->file, (int64_t)(c->offset + in_chunk), n, qiov,
                                   qiov_offset, 0);
    }
    co_mutex_lock(&s->lock);
    ret = dmg_inflate(bs, i);
    if (ret == 0) {
        iovector_from_buf(qiov, qiov_offset, s->cache + in_chunk, (size_t)n);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

static int coroutine_fn dmg_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    BDRVDmgState *s = bs->opaque;

    while (bytes > 0) {
        uint64_t sector = (uint64_t)offset / DMG_SECTOR;
        uint32_t i = dmg_find(s, sector);
        const DmgChunk *c = i < s->n_chunks ? &s->chunks[i] : NULL;
        int64_t n;
        int ret = 0;

        if (!c || c->sector > sector) {
            /* A gap: zeroes up to the next chunk. */
            n = c ? (int64_t)((c->sector - sector) * DMG_SECTOR) : bytes;
            n = n < bytes ? n : bytes;
            iovector_memset(qiov, qiov_offset, 0, (size_t)n);
        } else {
            uint64_t in_chunk = (uint64_t)offset - c->sector * DMG_SECTOR;

            n = (int64_t)(c->sectors * DMG_SECTOR - in_chunk);
            n = n < bytes ? n : bytes;
            ret = dmg_read_chunk(bs, i, in_chunk, n, qiov, qiov_offset);
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    return 0;
}

/* Zero-fill, ignored and uncovered sectors read zero; raw chunks map into the file. */
static int coroutine_fn dmg_co_block_status(BlockDriverState *bs, bool want_zero,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file)
{
    BDRVDmgState *s = bs->opaque;
    uint64_t sector = (uint64_t)offset / DMG_SECTOR;
    uint32_t i = dmg_find(s, sector);
    const DmgChunk *c = i < s->n_chunks ? &s->chunks[i] : NULL;
    uint64_t in_chunk;

    if (!c || c->sector > sector) {
        *pnum = c ? (int64_t)((c->sector - sector) * DMG_SECTOR) : bytes;
        *pnum = *pnum < bytes ? *pnum : bytes;
        return BDRV_BLOCK_ZERO;
    }
    in_chunk = (uint64_t)offset - c->sector * DMG_SECTOR;
    *pnum = (int64_t)(c->sectors * DMG_SECTOR - in_chunk);
    *pnum = *pnum < bytes ? *pnum : bytes;
    if (dmg_is_zero(c->type)) {
        return BDRV_BLOCK_ZERO;
    }
    if (c->type == DMG_RAW) {
        *map = (int64_t)(c->offset + in_chunk);
        *file = bs->file->bs;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    }
    return BDRV_BLOCK_DATA;
}

static const char *const dmg_extensions[] = { "dmg", NULL };

const BlockDriver bdrv_dmg = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "dmg",
    .instance_size = sizeof(BDRVDmgState),
    .is_format = true,
    .probe = dmg_probe,
    .bdrv_open = dmg_open,
    .bdrv_close = dmg_close,
    .reopen_prepare = dmg_reopen_prepare,
    .reopen_commit = dmg_reopen_noop,
    .reopen_abort = dmg_reopen_noop,
    .refresh_limits = dmg_refresh_limits,
    .co_preadv = dmg_co_preadv,
    .co_block_status = dmg_co_block_status,
    .co_getlength = dmg_co_getlength,
    .file_extensions = dmg_extensions,
};
