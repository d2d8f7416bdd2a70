/*
 * The "bochs" format driver (read-only): Bochs "growing" disk images, the
 * redolog format of the Bochs emulator used without a base file.
 *
 * Layout (all fields little-endian), from the Bochs developer documentation
 * ("Harddisk Images based on redologs"):
 *   0    magic[32] "Bochs Virtual HD Image", type[16] "Redolog",
 *        subtype[16] "Growing" (NUL-padded strings)
 *   64   version: 0x00020000 (v2) or 0x00010000 (v1); header size (512)
 *   72   catalog entries, bitmap size (bytes), extent size (bytes),
 *        v2: a timestamp; then the disk size (u64, at 88 in v2, 84 in v1)
 *   header size: the catalog, one u32 per extent of the disk: the index of
 *        the extent's block in the file, or 0xffffffff (never written: zero)
 *   then the blocks: block n at (header size + 4 * catalog entries) +
 *        n * (bitmap sectors + extent sectors) * 512, a bitmap of one bit per
 *        sector of the extent (bit s % 8 of byte s / 8; clear: the sector was
 *        never written and reads zero), then the extent's sectors.
 *
 * Subtypes: "Growing" stands alone (unwritten sectors read zero). "Undoable"
 * and "Volatile" redologs hold the sectors written over a flat base image,
 * which Bochs does not name in the redolog: unwritten sectors read from the
 * base, opened as this node's raw backing file. The base is the driver
 * option base=FILE (relative to the redolog's directory), else the redolog's
 * name without its ".redolog" suffix (Bochs's default journal name); a
 * redolog with neither is refused naming its subtype. The base's timestamp
 * (undoable header field) is not compared with the base file. The driver
 * never writes: read-write opens are refused (fmt_refuse_write_open).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/drivers.h"
#include "drivers/format/fmt-util.h"

#define BOCHS_MAGIC "Bochs Virtual HD Image"
#define BOCHS_TYPE "Redolog"
#define BOCHS_SUBTYPE "Growing"
#define BOCHS_UNDOABLE "Undoable"
#define BOCHS_VOLATILE "Volatile"
#define BOCHS_REDOLOG_SUFFIX ".redolog"
#define BOCHS_V1 0x00010000u
#define BOCHS_V2 0x00020000u
#define BOCHS_HDR 512u
#define BOCHS_SECTOR 512u
#define BOCHS_FREE 0xffffffffu

/* Limits for untrusted images (see bochs_check_header). */
#define BOCHS_HDR_MAX (64u << 10)
#define BOCHS_CATALOG_MAX (16u << 20)       /* entries: a 64 MiB catalog */
#define BOCHS_EXTENT_MAX (64u << 20)
#define BOCHS_BITMAP_MAX (1u << 20)

/* Bitmap bytes read at once (stack): 4096 sectors. */
#define BOCHS_BITMAP_CHUNK 512u

enum {
    BH_MAGIC = 0, BH_TYPE = 32, BH_SUBTYPE = 48, BH_VERSION = 64, BH_HDRSIZE = 68,
    BH_CATALOG = 72, BH_BITMAP = 76, BH_EXTENT = 80, BH_DISK_V2 = 88, BH_DISK_V1 = 84,
};

typedef struct BDRVBochsState {
    uint32_t *catalog;          /* host order */
    uint32_t catalog_size;
    uint32_t bitmap_size;       /* bytes used of the bitmap */
    uint32_t extent_size;       /* bytes */
    uint64_t bitmap_bytes;      /* bitmap size rounded up to sectors */
    uint64_t block_bytes;       /* bitmap_bytes + extent_size */
    uint64_t data_offset;
    uint64_t disk_size;
    bool over_base;             /* undoable / volatile: unwritten sectors are the base's */
    char subtype[16];           /* for messages */
} BDRVBochsState;

/* A NUL-terminated string field equals s. */
static bool bochs_field_is(const uint8_t *field, size_t len, const char *s)
{
    size_t n = strlen(s);

    return n < len && memcmp(field, s, n) == 0 && field[n] == 0;
}

/* 1: growing, 2: a redolog over a base image (undoable or volatile), 0: other. */
static int bochs_subtype(const uint8_t *h)
{
    const uint8_t *f = h + BH_SUBTYPE;

    return bochs_field_is(f, 16, BOCHS_SUBTYPE) ? 1
           : bochs_field_is(f, 16, BOCHS_UNDOABLE) || bochs_field_is(f, 16, BOCHS_VOLATILE) ? 2
                                                                                            : 0;
}

static int bochs_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    uint32_t v;

    if (buf_size < BH_HDRSIZE || !bochs_field_is(buf + BH_MAGIC, 32, BOCHS_MAGIC) ||
        !bochs_field_is(buf + BH_TYPE, 16, BOCHS_TYPE) || !bochs_subtype(buf)) {
        return 0;
    }
    v = ld_le32(buf + BH_VERSION);
    return v == BOCHS_V1 || v == BOCHS_V2 ? 100 : 0;
}

/*
 * Limits enforced on the header (untrusted images): magic and type as above,
 * subtype "Growing", "Undoable" or "Volatile", version 1 or 2; header size in [512, 64 KiB];
 * catalog entries in [1, 16 Mi] with the catalog inside the file; extent size
 * a power of two in [512, 64 MiB] (no divide by zero; Bochs makes them so); bitmap size in
 * [1, 1 MiB] and at least one bit per extent sector; catalog entries *
 * extent size (no overflow: < 2^50) covering the disk size. The disk size is
 * used in whole sectors, as Bochs counts it.
 */
static int bochs_check_header(BlockDriverState *bs, BDRVBochsState *s, const uint8_t *h,
                              uint32_t hdr_size, int64_t file_len, Error **errp)
{
    const char *fn = bs->filename;
    uint32_t version = ld_le32(h + BH_VERSION);

    if (!bochs_field_is(h + BH_MAGIC, 32, BOCHS_MAGIC) ||
        !bochs_field_is(h + BH_TYPE, 16, BOCHS_TYPE)) {
        error_setg(errp, "'%s' is not a Bochs redolog image (magic or type field)", fn);
        return -EINVAL;
    }
    if (!bochs_subtype(h)) {
        error_setg(errp, "'%s': Bochs subtype '%.15s' is not supported (growing, undoable and "
                   "volatile are)", fn, (const char *)h + BH_SUBTYPE);
        return -ENOTSUP;
    }
    s->over_base = bochs_subtype(h) == 2;
    snprintf(s->subtype, sizeof(s->subtype), "%.15s", (const char *)h + BH_SUBTYPE);
    if (version != BOCHS_V1 && version != BOCHS_V2) {
        error_setg(errp, "'%s': unsupported Bochs version 0x%08x", fn, version);
        return -ENOTSUP;
    }
    if (hdr_size < BOCHS_HDR || hdr_size > BOCHS_HDR_MAX) {
        error_setg(errp, "'%s': header size %u out of range [%u, %u]", fn, hdr_size, BOCHS_HDR,
                   BOCHS_HDR_MAX);
        return -EINVAL;
    }
    if (s->catalog_size == 0 || s->catalog_size > BOCHS_CATALOG_MAX) {
        error_setg(errp, "'%s': catalog size %u out of range [1, %u]", fn, s->catalog_size,
                   BOCHS_CATALOG_MAX);
        return -EINVAL;
    }
    s->data_offset = hdr_size + (uint64_t)s->catalog_size * 4;
    if (s->data_offset > (uint64_t)file_len) {
        error_setg(errp, "'%s': catalog of %u entries at %u ends past the end of the file "
                   "(%lld bytes)", fn, s->catalog_size, hdr_size, (long long)file_len);
        return -EINVAL;
    }
    if (!is_power_of_2_u64(s->extent_size) || s->extent_size < BOCHS_SECTOR ||
        s->extent_size > BOCHS_EXTENT_MAX) {
        error_setg(errp, "'%s': extent size %u is not a power of two in [%u, %u]", fn,
                   s->extent_size, BOCHS_SECTOR, BOCHS_EXTENT_MAX);
        return -EINVAL;
    }
    if (s->bitmap_size == 0 || s->bitmap_size > BOCHS_BITMAP_MAX ||
        (uint64_t)s->bitmap_size * 8 < s->extent_size / BOCHS_SECTOR) {
        error_setg(errp, "'%s': bitmap size %u out of range (1 .. %u bytes, one bit per "
                   "sector of the %u-byte extent)", fn, s->bitmap_size, BOCHS_BITMAP_MAX,
                   s->extent_size);
        return -EINVAL;
    }
    s->disk_size &= ~(uint64_t)(BOCHS_SECTOR - 1);
    if (s->disk_size > (uint64_t)s->catalog_size * s->extent_size) {
        error_setg(errp, "'%s': disk size %llu exceeds catalog size %u * extent size %u", fn,
                   (unsigned long long)s->disk_size, s->catalog_size, s->extent_size);
        return -EINVAL;
    }
    s->bitmap_bytes = round_up_u64(s->bitmap_size, BOCHS_SECTOR);
    s->block_bytes = s->bitmap_bytes + s->extent_size;
    return 0;
}

/*
 * Each used entry must name a block whose bitmap lies inside the file (the
 * extent's sectors may stop short of the end: reads past it are zero).
 * Entries < 2^32, block_bytes < 2^27: no overflow.
 */
static int bochs_check_catalog(BlockDriverState *bs, BDRVBochsState *s, int64_t file_len,
                               Error **errp)
{
    for (uint32_t i = 0; i < s->catalog_size; i++) {
        uint32_t e = s->catalog[i] = ld_le32(&s->catalog[i]);
        uint64_t start = s->data_offset + (uint64_t)e * s->block_bytes;

        if (e != BOCHS_FREE && !range_within(start, s->bitmap_bytes, (uint64_t)file_len)) {
            error_setg(errp, "'%s': catalog entry %u (block %u at %llu) lies past the end of "
                       "the file (%lld bytes)", bs->filename, i, e, (unsigned long long)start,
                       (long long)file_len);
            return -EINVAL;
        }
    }
    return 0;
}

static int coroutine_fn bochs_co_load(BlockDriverState *bs, Error **errp)
{
    BDRVBochsState *s = bs->opaque;
    uint8_t h[BOCHS_HDR];
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    uint32_t hdr_size;
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    if (file_len < BOCHS_HDR) {
        error_setg(errp, "'%s' is too short for a Bochs header (%lld bytes)", bs->filename,
                   (long long)file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, 0, BOCHS_HDR, h);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
        return ret;
    }
    hdr_size = ld_le32(h + BH_HDRSIZE);
    s->catalog_size = ld_le32(h + BH_CATALOG);
    s->bitmap_size = ld_le32(h + BH_BITMAP);
    s->extent_size = ld_le32(h + BH_EXTENT);
    s->disk_size = ld_le64(h + (ld_le32(h + BH_VERSION) == BOCHS_V1 ? BH_DISK_V1 : BH_DISK_V2));
    ret = bochs_check_header(bs, s, h, hdr_size, file_len, errp);
    if (ret < 0) {
        return ret;
    }
    s->catalog = malloc((size_t)s->catalog_size * 4);
    if (!s->catalog) {
        error_setg(errp, "Could not allocate the catalog of '%s' (%u entries)", bs->filename,
                   s->catalog_size);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, hdr_size, (int64_t)s->catalog_size * 4, s->catalog);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the catalog of '%s'", bs->filename);
        return ret;
    }
    return bochs_check_catalog(bs, s, file_len, errp);
}

typedef struct BochsOpenCo {
    BlockDriverState *bs;
    Error **errp;
} BochsOpenCo;

static int64_t coroutine_fn bochs_open_co(void *opaque)
{
    BochsOpenCo *o = opaque;

    return bochs_co_load(o->bs, o->errp);
}

static void bochs_close(BlockDriverState *bs)
{
    BDRVBochsState *s = bs->opaque;

    free(s->catalog);
    s->catalog = NULL;
}

/*
 * Names the base image of an undoable / volatile redolog as the raw backing
 * file: base (the base=FILE option) or the file name without ".redolog".
 */
static int bochs_set_base(BlockDriverState *bs, const char *base, Error **errp)
{
    BDRVBochsState *s = bs->opaque;
    const char *slash = strrchr(bs->filename, '/');
    const char *name = slash ? slash + 1 : bs->filename;
    size_t n = strlen(name), sl = strlen(BOCHS_REDOLOG_SUFFIX);

    if (!s->over_base) {
        if (base) {
            error_setg(errp, "'%s': base=%s: a growing Bochs image has no base image",
                       bs->filename, base);
            return -EINVAL;
        }
        return 0;
    }
    if (!base && (n <= sl || strcmp(name + n - sl, BOCHS_REDOLOG_SUFFIX) != 0)) {
        error_setg(errp, "'%s': a Bochs '%s' redolog reads unwritten sectors from its base "
                   "image, which the redolog does not name: give it as base=FILE or name the "
                   "redolog FILE.redolog", bs->filename, s->subtype);
        return -EINVAL;
    }
    if (base) {
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", base);
    } else {
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%.*s", (int)(n - sl), name);
    }
    snprintf(bs->backing_format, sizeof(bs->backing_format), "raw");
    return 0;
}

static int bochs_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BochsOpenCo o = { bs, errp };
    char *base = NULL;
    int ret = fmt_refuse_write_open(bs, flags, errp);

    if (ret < 0 || bopts_take_str(options, "base", &base, errp) < 0) {
        return ret < 0 ? ret : -EINVAL;
    }
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        free(base);
        return -EINVAL;
    }
    ret = (int)bdrv_run_co(bs->aio_context, bochs_open_co, &o);
    ret = ret < 0 ? ret : bochs_set_base(bs, base, errp);
    free(base);
    if (ret < 0) {
        bochs_close(bs);
    }
    return ret;
}

static int bochs_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                                Error **errp)
{
    return fmt_refuse_write_open(bs, new_flags, errp);
}

static void bochs_reopen_noop(BlockDriverState *bs)
{
}

static void bochs_refresh_limits(BlockDriverState *bs, Error **errp)
{
    bs->bl.request_alignment = BOCHS_SECTOR;
}

static int64_t coroutine_fn bochs_co_getlength(BlockDriverState *bs)
{
    BDRVBochsState *s = bs->opaque;

    return (int64_t)s->disk_size;
}

/*
 * The piece of [offset, offset + bytes) that one bitmap read covers: the
 * extent (catalog index), the first sector in it, the sector count (at most
 * BOCHS_BITMAP_CHUNK * 8, not past the extent), and the bitmap bits of those
 * sectors loaded into bits[] (bit i = sector first + i); or, when the extent
 * was never written (free), the sectors up to the next written extent.
 */
typedef struct BochsPiece {
    uint32_t extent;
    uint32_t first;
    uint64_t sectors;
    bool free;
    uint64_t block;             /* file offset of the extent's block */
    uint8_t bits[BOCHS_BITMAP_CHUNK + 2];   /* + the byte the shift reads past */
} BochsPiece;

static int coroutine_fn bochs_load_piece(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         BochsPiece *p)
{
    BDRVBochsState *s = bs->opaque;
    uint64_t sector = (uint64_t)offset / BOCHS_SECTOR;
    uint32_t per_extent = s->extent_size / BOCHS_SECTOR;
    uint64_t left = (uint64_t)bytes / BOCHS_SECTOR;
    uint32_t e, shift, byte0, nbytes;
    int ret;

    p->extent = (uint32_t)(sector / per_extent);
    p->first = (uint32_t)(sector % per_extent);
    p->sectors = per_extent - p->first;
    if (p->sectors > BOCHS_BITMAP_CHUNK * 8) {
        p->sectors = BOCHS_BITMAP_CHUNK * 8;
    }
    if (p->sectors > left) {
        p->sectors = left;
    }
    e = s->catalog[p->extent];
    p->free = e == BOCHS_FREE;
    if (p->free) {
        /* Runs of never-written extents cost no I/O: take them whole. */
        uint64_t n = per_extent - p->first;

        for (uint32_t x = p->extent + 1; n < left && s->catalog[x] == BOCHS_FREE; x++) {
            n += per_extent;
        }
        p->sectors = n < left ? n : left;
        return 0;
    }
    p->block = s->data_offset + (uint64_t)e * s->block_bytes;
    byte0 = p->first / 8;
    shift = p->first % 8;
    nbytes = (uint32_t)((shift + p->sectors + 7) / 8);
    memset(p->bits, 0, sizeof(p->bits));
    ret = fmt_co_pread(bs->file, (int64_t)(p->block + byte0), nbytes, p->bits);
    if (ret < 0) {
        return ret;
    }
    if (shift) {
        for (uint32_t i = 0; i < nbytes; i++) {
            p->bits[i] = (uint8_t)((p->bits[i] >> shift) | (p->bits[i + 1] << (8 - shift)));
        }
    }
    return 0;
}

static bool bochs_bit(const BochsPiece *p, uint32_t i)
{
    return p->bits[i / 8] & (1u << (i % 8));
}

/* Sectors from i on with the same bit as sector i. */
static uint32_t bochs_run(const BochsPiece *p, uint32_t i)
{
    bool set = bochs_bit(p, i);
    uint32_t j = i + 1;

    while ((uint64_t)j < p->sectors && bochs_bit(p, j) == set) {
        j++;
    }
    return j - i;
}

static uint64_t bochs_sector_offset(const BDRVBochsState *s, const BochsPiece *p, uint32_t i)
{
    return p->block + s->bitmap_bytes + (uint64_t)(p->first + i) * BOCHS_SECTOR;
}

/*
 * Unwritten sectors: zero in a growing image; the base's bytes under an
 * undoable / volatile redolog (zero past the base's end, or with no base
 * opened: BDRV_O_NO_BACKING, backing=null).
 */
static int coroutine_fn bochs_read_unwritten(BlockDriverState *bs, int64_t offset, int64_t len,
                                             IOVector *qiov, size_t at)
{
    BDRVBochsState *s = bs->opaque;
    int64_t blen = 0, in;

    if (s->over_base && bs->backing) {
        blen = bdrv_co_getlength(bs->backing->bs);
        if (blen < 0) {
            return (int)blen;
        }
    }
    in = offset < blen ? (blen - offset < len ? blen - offset : len) : 0;
    if (in < len) {
        iovector_memset(qiov, at + (size_t)in, 0, (size_t)(len - in));
    }
    return in ? bdrv_co_preadv_part(bs->backing, offset, in, qiov, at, 0) : 0;
}

static int coroutine_fn bochs_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    BDRVBochsState *s = bs->opaque;
    BochsPiece p;

    while (bytes > 0) {
        int ret = bochs_load_piece(bs, offset, bytes, &p);
        int64_t n = (int64_t)p.sectors * BOCHS_SECTOR;

        if (ret < 0) {
            return ret;
        }
        for (uint32_t i = 0; i < p.sectors && !p.free;) {
            uint32_t run = bochs_run(&p, i);
            int64_t len = (int64_t)run * BOCHS_SECTOR;
            size_t at = qiov_offset + (size_t)i * BOCHS_SECTOR;

            if (bochs_bit(&p, i)) {
                ret = bdrv_co_preadv_part(bs->file, (int64_t)bochs_sector_offset(s, &p, i), len,
                                          qiov, at, 0);
                if (ret < 0) {
                    return ret;
                }
            } else {
                ret = bochs_read_unwritten(bs, offset + (int64_t)i * BOCHS_SECTOR, len, qiov,
                                           at);
                if (ret < 0) {
                    return ret;
                }
            }
            i += run;
        }
        if (p.free) {
            ret = bochs_read_unwritten(bs, offset, n, qiov, qiov_offset);
            if (ret < 0) {
                return ret;
            }
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    return 0;
}

/*
 * Written sectors are data at their place in the file; the rest reads zero
 * (growing) or is unallocated, the backing base's (undoable / volatile).
 */
static int coroutine_fn bochs_co_block_status(BlockDriverState *bs, bool want_zero,
                                              int64_t offset, int64_t bytes, int64_t *pnum,
                                              int64_t *map, BlockDriverState **file)
{
    BDRVBochsState *s = bs->opaque;
    BochsPiece p;
    int ret = bochs_load_piece(bs, offset, bytes, &p);

    if (ret < 0) {
        return ret;
    }
    if (p.free) {
        *pnum = (int64_t)p.sectors * BOCHS_SECTOR;
        return s->over_base ? 0 : BDRV_BLOCK_ZERO;
    }
    *pnum = (int64_t)bochs_run(&p, 0) * BOCHS_SECTOR;
    if (!bochs_bit(&p, 0)) {
        return s->over_base ? 0 : BDRV_BLOCK_ZERO;
    }
    *map = (int64_t)bochs_sector_offset(s, &p, 0);
    *file = bs->file->bs;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
}

const BlockDriver bdrv_bochs = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "bochs",
    .instance_size = sizeof(BDRVBochsState),
    .is_format = true,
    .probe = bochs_probe,
    .bdrv_open = bochs_open,
    .bdrv_close = bochs_close,
    .reopen_prepare = bochs_reopen_prepare,
    .reopen_commit = bochs_reopen_noop,
    .reopen_abort = bochs_reopen_noop,
    .refresh_limits = bochs_refresh_limits,
    .co_preadv = bochs_co_preadv,
    .co_block_status = bochs_co_block_status,
    .co_getlength = bochs_co_getlength,
};
