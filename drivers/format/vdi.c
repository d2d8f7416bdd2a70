/*
 * The "vdi" format driver: VirtualBox Virtual Disk Images, version 1.1,
 * dynamic ("normal") and static ("fixed") images.
 *
 * Layout (all fields little-endian):
 *   0    pre-header: 64 bytes of text, signature 0xbeda107f, version 0x00010001
 *   72   header: size (384, or 400 with the LCHS geometry), type (1 dynamic,
 *        2 static), flags, comment[256], block map offset, data offset,
 *        legacy geometry (cylinders, heads, sectors, sector size), unused,
 *        disk size (u64), block size, block extra, blocks in image, blocks
 *        allocated, UUIDs: image, modification, parent (link), parent
 *        modification; then (header size 400) the LCHS geometry.
 *   block map: one u32 per block: the index of its data block ("slot"), or
 *        0xffffffff (free: reads zero) or 0xfffffffe (zero: discarded).
 *   data: slot n at data offset + n * block size.
 *
 * Invariant kept by every path here, and expected by VirtualBox and qemu-img
 * check: the slots 0 .. blocks_allocated - 1 are each referenced by exactly
 * one map entry, and the file ends at the last slot. A discarded block is
 * released at once: the last slot moves into its place and the file shrinks,
 * as VirtualBox does.
 *
 * Crash safety: a new slot's data is written and the map entry that points
 * at it is set in memory only; the dirty map sectors (fmt-defer.h, FmtDefer)
 * are written at the next guest flush, close, reopen read-only, resize,
 * discard, check, or when the pending set is full: the header's new
 * count is written, then one flush (data and count stable), then the map
 * sectors, then (a guest flush) one more. So a guest flush costs two flushes
 * however many blocks it allocated, and no entry on disk points at a slot
 * whose data or count is not stable. A released slot is unreferenced (and
 * flushed) before anything overwrites it; a moved slot is copied and flushed
 * before the map points at its new place. A crash leaves at worst a leaked
 * slot, which check -r reclaims.
 *
 * UUIDs: VirtualBox stores them with the first three fields little-endian;
 * the API takes and returns RFC 4122 (big-endian) byte order.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/drivers.h"
#include "block/bytes.h"
#include "drivers/format/fmt-defer.h"
#include "drivers/format/fmt-grow.h"
#include "drivers/format/fmt-util.h"

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC 2u
#define VDI_HEADER_SIZE 384u        /* v1.1 header without the LCHS geometry */
#define VDI_HEADER_SIZE_PLUS 400u   /* with it */
#define VDI_SECTOR 512u
#define VDI_BLOCK_SIZE (1u << 20)
#define VDI_FREE 0xffffffffu
#define VDI_ZERO 0xfffffffeu
/* As VirtualBox and QEMU: the map must stay below 2 GiB. */
#define VDI_BLOCKS_MAX ((UINT32_C(0x80000000) - 512u) / 4u)

/* Absolute offsets of header fields (pre-header is 72 bytes). */
enum {
    VDI_OFF_TEXT = 0,
    VDI_OFF_SIG = 64,
    VDI_OFF_VERSION = 68,
    VDI_OFF_HDR_SIZE = 72,
    VDI_OFF_TYPE = 76,
    VDI_OFF_FLAGS = 80,
    VDI_OFF_COMMENT = 84,
    VDI_OFF_BMAP = 340,
    VDI_OFF_DATA = 344,
    VDI_OFF_CYLS = 348,
    VDI_OFF_HEADS = 352,
    VDI_OFF_SECS = 356,
    VDI_OFF_SECSIZE = 360,
    VDI_OFF_DISK = 368,
    VDI_OFF_BLKSIZE = 376,
    VDI_OFF_BLKEXTRA = 380,
    VDI_OFF_BLOCKS = 384,
    VDI_OFF_ALLOCATED = 388,
    VDI_OFF_UUID = 392,         /* 4 UUIDs of 16 bytes, in BlockUuidKind order */
    VDI_OFF_LCHS = 456,
    VDI_HDR_BUF = 512,          /* the header is read and written as one sector */
};

#define VDI_COMMENT_MAX 256
/* The file is grown this far past a new block (fmt-grow.h): 16 blocks per grow. */
#define VDI_GROW_STEP (16u * VDI_BLOCK_SIZE)

typedef struct BDRVVdiState {
    uint8_t hdr[VDI_HDR_BUF];   /* first sector of the file, as on disk */
    uint8_t *map;               /* block map as on disk (LE u32s) */
    uint32_t *owner;            /* slot -> block that uses it, VDI_FREE if none */
    uint32_t blocks;            /* blocks in image */
    uint32_t allocated;         /* slots in use (header field) */
    uint32_t block_size;
    uint32_t type;
    uint64_t disk_size;
    uint64_t off_bmap;
    uint64_t off_data;
    bool corrupt;               /* map entries out of range or shared: no allocation */
    bool modified;              /* the modification UUID was renewed since open */
    /*
     * Map sectors changed in memory, not yet in the file. Only the set's size
     * (FMT_DEFER_MAX sectors of 128 entries) bounds the allocations that wait
     * for a flush: a commit flushes every data write before it, which stalled
     * sequential allocating writes when it came every 128 allocations; an
     * entry lost in a crash loses only writes no guest flush covered.
     */
    FmtDefer dirty;
    FmtGrow grow;               /* the file grown ahead of new slots (alloc_lock) */
    CoRwlock lock;              /* I/O shared; slot release / moves exclusive */
    CoMutex alloc_lock;         /* one allocation at a time */
} BDRVVdiState;

/* ---------------------------------------------------------------------- */
/* Small helpers */

static uint32_t vdi_entry(const BDRVVdiState *s, uint32_t block)
{
    return ld_le32(s->map + (size_t)block * 4);
}

static void vdi_set_entry(BDRVVdiState *s, uint32_t block, uint32_t v)
{
    st_le32(s->map + (size_t)block * 4, v);
}

static bool vdi_is_slot(const BDRVVdiState *s, uint32_t e)
{
    return e < s->allocated;
}

static int64_t vdi_slot_offset(const BDRVVdiState *s, uint32_t slot)
{
    return (int64_t)(s->off_data + (uint64_t)slot * s->block_size);
}

/* VirtualBox's UUID layout <-> RFC 4122 order: swap the first three fields. */
static void vdi_uuid_swap(uint8_t out[16], const uint8_t in[16])
{
    static const uint8_t perm[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };

    for (int i = 0; i < 16; i++) {
        out[i] = in[perm[i]];
    }
}

static int coroutine_fn vdi_write_header(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return fmt_co_pwrite(bs->file, 0, VDI_HDR_BUF, s->hdr, 0);
}

static int coroutine_fn vdi_write_map(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return fmt_co_pwrite(bs->file, (int64_t)s->off_bmap, (int64_t)s->blocks * 4, s->map, 0);
}

/* FmtDeferWriteFn: map sectors [first, first + count) (the last one may be partial). */
static int coroutine_fn vdi_write_map_run(void *opaque, uint64_t first, uint32_t count)
{
    BlockDriverState *bs = opaque;
    BDRVVdiState *s = bs->opaque;
    uint64_t map_len = (uint64_t)s->blocks * 4, start = first * VDI_SECTOR;
    uint64_t end = (first + count) * VDI_SECTOR;

    end = end < map_len ? end : map_len;
    if (start >= end) {
        return 0; /* unreachable: units come from entries inside the map */
    }
    return fmt_co_pwrite(bs->file, (int64_t)(s->off_bmap + start), (int64_t)(end - start),
                         s->map + start, 0);
}

/*
 * Writes the deferred map entries (see the crash-safety note at the top):
 * the count first, then a flush, then the map sectors, then a flush if
 * sync. Callers hold alloc_lock or the lock exclusively. Returns 0 or -errno
 * (the entries stay pending in memory).
 */
static int coroutine_fn vdi_commit(BlockDriverState *bs, bool sync)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    if (!fmt_defer_pending(&s->dirty)) {
        return 0;
    }
    ret = vdi_write_header(bs);
    ret = ret ? ret : fmt_defer_commit(&s->dirty, bs->file, vdi_write_map_run, bs);
    if (ret == 0 && sync) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

/*
 * Cuts the file grown ahead of new slots back to the end of the last one,
 * where the paths that move slots, resize or repair expect it. The cut
 * part holds no counted slot. Callers hold alloc_lock or the lock
 * exclusively.
 */
static int coroutine_fn vdi_trim(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return fmt_co_grow_trim(bs->file, &s->grow, (uint64_t)vdi_slot_offset(s, s->allocated));
}

/* ---------------------------------------------------------------------- */
/* Open */

static int vdi_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    if (buf_size < VDI_OFF_VERSION + 4 || ld_le32(buf + VDI_OFF_SIG) != VDI_SIGNATURE) {
        return 0;
    }
    return 100;
}

/*
 * Checks the header against the file length. Limits enforced (as VirtualBox
 * and QEMU): version 1.1; header size 384..(block map offset - 72); type
 * dynamic or static; sector size 512; block size exactly 1 MiB with no extra
 * bytes; blocks in image <= VDI_BLOCKS_MAX and enough for the disk size;
 * blocks allocated <= blocks in image; block map and data offsets multiples
 * of 512, the map between the header and the data, and inside the file.
 */
static int vdi_check_header(BlockDriverState *bs, BDRVVdiState *s, int64_t file_len,
                            Error **errp)
{
    const char *fn = bs->filename;
    uint32_t version = ld_le32(s->hdr + VDI_OFF_VERSION);
    uint32_t hdr_size = ld_le32(s->hdr + VDI_OFF_HDR_SIZE);
    uint32_t sec_size = ld_le32(s->hdr + VDI_OFF_SECSIZE);
    uint32_t extra = ld_le32(s->hdr + VDI_OFF_BLKEXTRA);
    uint64_t map_end, blocks_bytes;

    if (ld_le32(s->hdr + VDI_OFF_SIG) != VDI_SIGNATURE) {
        error_setg(errp, "'%s' is not a VDI image (signature 0x%08x)", fn,
                   ld_le32(s->hdr + VDI_OFF_SIG));
        return -EINVAL;
    }
    if (version != VDI_VERSION_1_1) {
        error_setg(errp, "'%s': unsupported VDI version 0x%08x (only 1.1 is supported)", fn,
                   version);
        return -ENOTSUP;
    }
    if (s->type != VDI_TYPE_DYNAMIC && s->type != VDI_TYPE_STATIC) {
        error_setg(errp, "'%s': unsupported VDI image type %u (%s)", fn, s->type,
                   s->type == 4 ? "differencing images are not supported"
                   : s->type == 3 ? "undo images are not supported" : "unknown type");
        return -ENOTSUP;
    }
    if (hdr_size < VDI_HEADER_SIZE || hdr_size > 4096) {
        error_setg(errp, "'%s': header size %u out of range [%u, 4096]", fn, hdr_size,
                   VDI_HEADER_SIZE);
        return -EINVAL;
    }
    if (sec_size != VDI_SECTOR) {
        error_setg(errp, "'%s': sector size %u is not %u", fn, sec_size, VDI_SECTOR);
        return -ENOTSUP;
    }
    if (s->block_size != VDI_BLOCK_SIZE || extra != 0) {
        error_setg(errp, "'%s': block size %u (extra %u) is not supported (only 1 MiB, no "
                   "extra data)", fn, s->block_size, extra);
        return -ENOTSUP;
    }
    if (s->blocks > VDI_BLOCKS_MAX) {
        error_setg(errp, "'%s': blocks in image %u exceeds the limit %u", fn, s->blocks,
                   VDI_BLOCKS_MAX);
        return -EINVAL;
    }
    blocks_bytes = (uint64_t)s->blocks * s->block_size;
    if (s->disk_size > blocks_bytes) {
        error_setg(errp, "'%s': disk size %llu exceeds blocks in image %u * block size %u", fn,
                   (unsigned long long)s->disk_size, s->blocks, s->block_size);
        return -EINVAL;
    }
    if (s->allocated > s->blocks) {
        error_setg(errp, "'%s': blocks allocated %u exceeds blocks in image %u", fn,
                   s->allocated, s->blocks);
        return -EINVAL;
    }
    if (s->off_bmap % VDI_SECTOR || s->off_data % VDI_SECTOR) {
        error_setg(errp, "'%s': block map offset %llu or data offset %llu is not a multiple "
                   "of %u", fn, (unsigned long long)s->off_bmap,
                   (unsigned long long)s->off_data, VDI_SECTOR);
        return -EINVAL;
    }
    map_end = s->off_bmap + (uint64_t)s->blocks * 4;
    if (s->off_bmap < VDI_OFF_HDR_SIZE + (uint64_t)hdr_size || map_end > s->off_data ||
        map_end > (uint64_t)file_len) {
        error_setg(errp, "'%s': block map at %llu (%u entries) does not lie between the "
                   "header and the data offset %llu inside the file (%lld bytes)", fn,
                   (unsigned long long)s->off_bmap, s->blocks,
                   (unsigned long long)s->off_data, (long long)file_len);
        return -EINVAL;
    }
    return 0;
}

/* Builds the slot -> block table; a shared or out-of-range entry marks corrupt. */
static void vdi_build_owner(BDRVVdiState *s)
{
    for (uint32_t i = 0; i < s->blocks; i++) {
        s->owner[i] = VDI_FREE;
    }
    s->corrupt = false;
    for (uint32_t b = 0; b < s->blocks; b++) {
        uint32_t e = vdi_entry(s, b);

        if (e == VDI_FREE || e == VDI_ZERO) {
            continue;
        }
        if (!vdi_is_slot(s, e) || s->owner[e] != VDI_FREE) {
            s->corrupt = true;
            continue;
        }
        s->owner[e] = b;
    }
}

static int vdi_load_header(BlockDriverState *bs, BDRVVdiState *s, int64_t file_len,
                           Error **errp)
{
    s->type = ld_le32(s->hdr + VDI_OFF_TYPE);
    s->off_bmap = ld_le32(s->hdr + VDI_OFF_BMAP);
    s->off_data = ld_le32(s->hdr + VDI_OFF_DATA);
    s->disk_size = ld_le64(s->hdr + VDI_OFF_DISK);
    s->block_size = ld_le32(s->hdr + VDI_OFF_BLKSIZE);
    s->blocks = ld_le32(s->hdr + VDI_OFF_BLOCKS);
    s->allocated = ld_le32(s->hdr + VDI_OFF_ALLOCATED);
    return vdi_check_header(bs, s, file_len, errp);
}

static int coroutine_fn vdi_co_read_meta(BlockDriverState *bs, BDRVVdiState *s,
                                         Error **errp)
{
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    if (file_len < VDI_HDR_BUF) {
        error_setg(errp, "'%s' is too short for a VDI header (%lld bytes)", bs->filename,
                   (long long)file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, 0, VDI_HDR_BUF, s->hdr);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
        return ret;
    }
    ret = vdi_load_header(bs, s, file_len, errp);
    if (ret < 0) {
        return ret;
    }
    /* Bounded by the file length (checked above) and VDI_BLOCKS_MAX. */
    s->map = malloc((size_t)s->blocks * 4 + 1);
    s->owner = malloc((size_t)s->blocks * 4 + 1);
    if (!s->map || !s->owner) {
        error_setg(errp, "Could not allocate the block map of '%s' (%u entries)", bs->filename,
                   s->blocks);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, (int64_t)s->off_bmap, (int64_t)s->blocks * 4, s->map);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the block map of '%s'", bs->filename);
        return ret;
    }
    vdi_build_owner(s);
    ret = fmt_co_grow_init(bs->file, &s->grow, VDI_GROW_STEP, s->block_size, PREALLOC_MODE_OFF);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not get the size of '%s'", bs->filename);
    }
    return ret;
}

typedef struct VdiOpenCo {
    BlockDriverState *bs;
    Error **errp;
} VdiOpenCo;

static int64_t coroutine_fn vdi_open_co(void *opaque)
{
    VdiOpenCo *o = opaque;

    return vdi_co_read_meta(o->bs, o->bs->opaque, o->errp);
}

/* Guest flush: the pending map entries go to the file (the block layer flushes it after). */
static int coroutine_fn vdi_co_flush_to_os(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    co_rwlock_rdlock(&s->lock);
    co_mutex_lock(&s->alloc_lock);
    ret = vdi_commit(bs, false);
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->lock);
    return ret;
}

static int64_t coroutine_fn vdi_commit_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVVdiState *s = bs->opaque;
    int ret;

    co_rwlock_wrlock(&s->lock);
    ret = vdi_commit(bs, true);
    ret = ret ? ret : vdi_trim(bs);
    co_rwlock_unlock(&s->lock);
    return ret;
}

static void vdi_close(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    if (s->map && (s->dirty.n || s->grow.grown) &&
        bdrv_run_co(bs->aio_context, vdi_commit_co, bs) < 0) {
        coblk_warn("vdi: '%s': writing the block map or trimming the file failed at close: "
                   "the blocks allocated since the last flush may be lost (leaked)",
                   bs->filename);
    }
    free(s->map);
    free(s->owner);
    s->map = NULL;
    s->owner = NULL;
}

static int vdi_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    VdiOpenCo o = { bs, errp };
    int ret;

    co_rwlock_init(&s->lock);
    co_mutex_init(&s->alloc_lock);
    fmt_defer_init(&s->dirty);
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    ret = (int)bdrv_run_co(bs->aio_context, vdi_open_co, &o);
    if (ret < 0) {
        vdi_close(bs);
        return ret;
    }
    /* A tail past the last slot (a crash while grown ahead) is cut at close. */
    s->grow.grown = !bs->read_only && s->type == VDI_TYPE_DYNAMIC &&
                    s->grow.file_len > (uint64_t)vdi_slot_offset(s, s->allocated);
    if (s->corrupt && !bs->read_only) {
        coblk_warn("vdi: '%s': the block map has shared or out-of-range entries; writes that "
                   "allocate fail until 'check -r all' repairs it", bs->filename);
    }
    return 0;
}

/* Nothing is staged; going read-only writes the pending map entries first. */
static int vdi_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                              Error **errp)
{
    int ret;

    if (new_flags & BDRV_O_RDWR) {
        return 0;
    }
    ret = (int)bdrv_run_co(bs->aio_context, vdi_commit_co, bs);
    if (ret < 0) {
        error_setg_errno(errp, ret, "vdi: could not write the block map of '%s'",
                         bs->filename);
    }
    return ret;
}

static void vdi_reopen_noop(BlockDriverState *bs)
{
}

static int64_t coroutine_fn vdi_co_getlength(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    return (int64_t)s->disk_size;
}

/* ---------------------------------------------------------------------- */
/* Reads and writes */

/* Splits [offset, offset + bytes) at the block boundary: block, offset in it, length. */
static void vdi_chunk(const BDRVVdiState *s, int64_t offset, int64_t bytes, uint32_t *block,
                      uint32_t *in_block, int64_t *n)
{
    *block = (uint32_t)(offset / s->block_size);
    *in_block = (uint32_t)(offset % s->block_size);
    *n = s->block_size - *in_block;
    if (*n > bytes) {
        *n = bytes;
    }
}

static int coroutine_fn vdi_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    BDRVVdiState *s = bs->opaque;
    int ret = 0;

    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block, e;
        int64_t n;

        vdi_chunk(s, offset, bytes, &block, &in_block, &n);
        e = vdi_entry(s, block);
        if (e == VDI_FREE || e == VDI_ZERO) {
            iovector_memset(qiov, qiov_offset, 0, (size_t)n);
        } else if (!vdi_is_slot(s, e)) {
            ret = -EIO; /* out-of-range map entry: check -r repairs it */
        } else {
            ret = bdrv_co_preadv_part(bs->file, vdi_slot_offset(s, e) + in_block, n, qiov,
                                      qiov_offset, 0);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* Renews the modification UUID once per open, before the first change (as VirtualBox). */
static int coroutine_fn vdi_mark_modified(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;
    uint8_t u[16];
    int ret = 0;

    if (s->modified) {
        return 0;
    }
    co_mutex_lock(&s->alloc_lock);
    if (!s->modified) {
        fmt_uuid_generate(u);
        vdi_uuid_swap(s->hdr + VDI_OFF_UUID + 16, u);
        ret = vdi_write_header(bs);
        s->modified = ret == 0;
    }
    co_mutex_unlock(&s->alloc_lock);
    return ret;
}

/*
 * Gives block a new slot at the end of the data, reading as zeroes, and
 * returns it in *slot: the file is grown VDI_GROW_STEP ahead (fmt-grow.h),
 * so a slot in the part grown since open already reads as zeroes; any other
 * is zeroed first. The entry is set in memory at once (its sector is written
 * at the next commit): the caller writes its data into the slot after
 * dropping alloc_lock, in parallel with the other writes. Until then the
 * slot reads as zeroes, as the unallocated block did, so a reader or a
 * commit that sees the entry early sees the block's old content. Called
 * with alloc_lock held.
 */
static int coroutine_fn vdi_alloc_slot(BlockDriverState *bs, uint32_t block, uint32_t *slot)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t e = s->allocated;
    int64_t at = vdi_slot_offset(s, e);
    uint64_t end = (uint64_t)at + s->block_size, unzeroed;
    int ret;

    if (s->corrupt) {
        return -EIO;
    }
    if (e >= s->blocks) {
        return -EIO; /* unreachable while the invariant holds */
    }
    if (!fmt_defer_has_room(&s->dirty, (uint64_t)block * 4 / VDI_SECTOR, 1)) {
        ret = vdi_commit(bs, false);
        if (ret < 0) {
            return ret;
        }
    }
    ret = fmt_co_grow_to(bs->file, &s->grow, end, (uint64_t)vdi_slot_offset(s, s->blocks));
    if (ret < 0) {
        return ret;
    }
    unzeroed = fmt_grow_unzeroed(&s->grow, (uint64_t)at, end);
    if (unzeroed) {
        ret = bdrv_co_pwrite_zeroes(bs->file, at, (int64_t)unzeroed, 0);
        if (ret < 0) {
            return ret;
        }
    }
    fmt_grow_written(&s->grow, end);
    /* In memory now; the count and the entry reach the file at the next commit. */
    st_le32(s->hdr + VDI_OFF_ALLOCATED, e + 1);
    s->allocated = e + 1;
    s->owner[e] = block;
    vdi_set_entry(s, block, e);
    fmt_defer_add(&s->dirty, (uint64_t)block * 4 / VDI_SECTOR, 1); /* room made above */
    *slot = e;
    return 0;
}

static int coroutine_fn vdi_write_chunk(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                        int64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t e = vdi_entry(s, block);
    int ret = 0;

    if (e == VDI_FREE || e == VDI_ZERO) {
        co_mutex_lock(&s->alloc_lock);
        e = vdi_entry(s, block);
        if (e == VDI_FREE || e == VDI_ZERO) {
            ret = vdi_alloc_slot(bs, block, &e);
        }
        co_mutex_unlock(&s->alloc_lock);
        if (ret < 0) {
            return ret;
        }
    }
    if (!vdi_is_slot(s, e)) {
        return -EIO;
    }
    return bdrv_co_pwritev_part(bs->file, vdi_slot_offset(s, e) + in_block, n, qiov,
                                qiov_offset, 0);
}

static int coroutine_fn vdi_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    if (offset + bytes > (int64_t)s->disk_size) {
        return -ENOSPC;
    }
    ret = vdi_mark_modified(bs);
    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block;
        int64_t n;

        vdi_chunk(s, offset, bytes, &block, &in_block, &n);
        ret = vdi_write_chunk(bs, block, in_block, n, qiov, qiov_offset);
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Releasing slots: discard, zero writes, compact and check -r */

/* Copies slot from to slot to (1 MiB through buf). */
static int coroutine_fn vdi_copy_slot(BlockDriverState *bs, uint32_t from, uint32_t to,
                                      uint8_t *buf)
{
    BDRVVdiState *s = bs->opaque;
    int ret = fmt_co_pread(bs->file, vdi_slot_offset(s, from), s->block_size, buf);

    if (ret < 0) {
        return ret;
    }
    return fmt_co_pwrite(bs->file, vdi_slot_offset(s, to), s->block_size, buf, 0);
}

/*
 * Fills the unreferenced slots below allocated with the highest used ones,
 * then lowers the count and shrinks the file (its grown tail first). The
 * caller flushed the map that unreferenced the holes. Called with the lock
 * held exclusively.
 */
static int coroutine_fn vdi_fill_holes(BlockDriverState *bs, BlockProgressFn *progress,
                                       void *opaque)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t lo = 0, hi = s->allocated, moved = 0;
    uint8_t *buf = NULL;
    int ret = vdi_trim(bs);

    if (ret < 0) {
        return ret;
    }

    for (;;) {
        while (lo < hi && s->owner[lo] != VDI_FREE) {
            lo++;
        }
        while (hi > lo && s->owner[hi - 1] == VDI_FREE) {
            hi--;
        }
        if (lo >= hi) {
            break;
        }
        if (!buf && !(buf = malloc(s->block_size))) {
            return -ENOMEM;
        }
        ret = vdi_copy_slot(bs, hi - 1, lo, buf);
        if (ret < 0) {
            goto out;
        }
        s->owner[lo] = s->owner[hi - 1];
        s->owner[hi - 1] = VDI_FREE;
        vdi_set_entry(s, s->owner[lo], lo);
        moved++;
        if (progress) {
            progress(opaque, lo, hi);
        }
    }
    /* Copies durable before the map points at them; the map before the count. */
    if (moved && ((ret = bdrv_co_flush(bs->file->bs)) < 0 || (ret = vdi_write_map(bs)) < 0)) {
        goto out;
    }
    if (hi != s->allocated) {
        if ((ret = bdrv_co_flush(bs->file->bs)) < 0) {
            goto out;
        }
        st_le32(s->hdr + VDI_OFF_ALLOCATED, hi);
        if ((ret = vdi_write_header(bs)) < 0 || (ret = bdrv_co_flush(bs->file->bs)) < 0) {
            goto out;
        }
        s->allocated = hi;
        ret = bdrv_co_truncate(bs->file, vdi_slot_offset(s, hi), true, PREALLOC_MODE_OFF, 0,
                               NULL);
    }
out:
    free(buf);
    if (moved || hi != s->allocated || ret < 0) {
        int r = fmt_co_grow_reset(bs->file, &s->grow);

        ret = ret ? ret : r;
    }
    return ret;
}

/* Marks the whole blocks [first, last] as zero, releasing their slots. Exclusive lock. */
static int coroutine_fn vdi_release_blocks(BlockDriverState *bs, uint32_t first, uint32_t last)
{
    BDRVVdiState *s = bs->opaque;
    bool any = false;
    int ret;

    if (s->type != VDI_TYPE_DYNAMIC) {
        return -ENOTSUP; /* static images keep every block */
    }
    if (s->corrupt) {
        return -EIO;
    }
    /* The whole map is written below: the pending entries must be safe to write first. */
    ret = vdi_commit(bs, false);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t b = first; b <= last; b++) {
        uint32_t e = vdi_entry(s, b);

        if (vdi_is_slot(s, e)) {
            s->owner[e] = VDI_FREE;
            vdi_set_entry(s, b, VDI_ZERO);
            any = true;
        }
    }
    if (!any) {
        return 0;
    }
    /* Unreferenced on disk before anything moves into the freed slots. */
    ret = vdi_write_map(bs);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        vdi_build_owner(s);
        return ret;
    }
    return vdi_fill_holes(bs, NULL, NULL);
}

/* The whole blocks inside [offset, offset + bytes): false if none. */
static bool vdi_whole_blocks(const BDRVVdiState *s, int64_t offset, int64_t bytes,
                             uint32_t *first, uint32_t *last)
{
    int64_t end = offset + bytes;
    uint64_t f = div_round_up_u64((uint64_t)offset, s->block_size);
    uint64_t l;

    if (end == (int64_t)s->disk_size) {
        end = (int64_t)round_up_u64(s->disk_size, s->block_size);
    }
    l = (uint64_t)end / s->block_size;
    if (l <= f) {
        return false;
    }
    *first = (uint32_t)f;
    *last = (uint32_t)(l - 1);
    return true;
}

static int coroutine_fn vdi_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t first, last;
    int ret;

    if (s->type != VDI_TYPE_DYNAMIC || !vdi_whole_blocks(s, offset, bytes, &first, &last)) {
        return 0; /* advisory: partial blocks and static images keep their data */
    }
    ret = vdi_mark_modified(bs);
    if (ret < 0) {
        return ret;
    }
    co_rwlock_wrlock(&s->lock);
    ret = vdi_release_blocks(bs, first, last);
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* Zeroes [offset, offset + n) of one block without allocating. */
static int coroutine_fn vdi_zero_chunk(BlockDriverState *bs, int64_t offset, int64_t n)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t block = (uint32_t)(offset / s->block_size);
    uint32_t e = vdi_entry(s, block);

    if (e == VDI_FREE || e == VDI_ZERO) {
        return 0;
    }
    if (!vdi_is_slot(s, e)) {
        return -EIO;
    }
    return bdrv_co_pwrite_zeroes(bs->file, vdi_slot_offset(s, e) + offset % s->block_size, n,
                                 0);
}

static int coroutine_fn vdi_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t first, last;
    int ret = vdi_mark_modified(bs);

    if (ret < 0) {
        return ret;
    }
    if ((flags & BDRV_REQ_MAY_UNMAP) && s->type == VDI_TYPE_DYNAMIC &&
        vdi_whole_blocks(s, offset, bytes, &first, &last)) {
        co_rwlock_wrlock(&s->lock);
        ret = vdi_release_blocks(bs, first, last);
        co_rwlock_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    co_rwlock_rdlock(&s->lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block;
        int64_t n;

        vdi_chunk(s, offset, bytes, &block, &in_block, &n);
        ret = vdi_zero_chunk(bs, offset, n);
        offset += n;
        bytes -= n;
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* Releases every block whose data is all zero, then shrinks the file. Runs drained. */
static int coroutine_fn vdi_co_compact(BlockDriverState *bs, BlockProgressFn *progress,
                                       void *opaque, Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    uint8_t *buf;
    IOVector qiov;
    bool any = false;
    int ret = 0;

    if (s->type != VDI_TYPE_DYNAMIC) {
        error_setg(errp, "'%s' is a static VDI image: compacting needs a dynamic one",
                   bs->filename);
        return -ENOTSUP;
    }
    if (s->corrupt) {
        error_setg(errp, "'%s': the block map is corrupt; run 'check -r all' first",
                   bs->filename);
        return -EIO;
    }
    buf = malloc(s->block_size);
    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    co_rwlock_wrlock(&s->lock);
    ret = vdi_commit(bs, false); /* the map is rewritten whole below */
    iovector_init_buf(&qiov, buf, s->block_size);
    for (uint32_t b = 0; b < s->blocks && ret == 0; b++) {
        uint32_t e = vdi_entry(s, b);

        if (!vdi_is_slot(s, e)) {
            continue;
        }
        ret = fmt_co_pread(bs->file, vdi_slot_offset(s, e), s->block_size, buf);
        if (ret == 0 && iovector_is_zero(&qiov, 0, s->block_size)) {
            s->owner[e] = VDI_FREE;
            vdi_set_entry(s, b, VDI_ZERO);
            any = true;
        }
        if (progress) {
            progress(opaque, b, (int64_t)s->blocks * 2);
        }
    }
    free(buf);
    if (ret == 0 && any) {
        ret = vdi_write_map(bs);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    if (ret == 0) {
        ret = vdi_fill_holes(bs, NULL, NULL);
    }
    if (ret < 0) {
        vdi_build_owner(s);
        error_setg_errno(errp, ret, "Could not compact '%s'", bs->filename);
    } else if (progress) {
        progress(opaque, (int64_t)s->blocks * 2, (int64_t)s->blocks * 2);
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Resize */

/* Drops the in-memory metadata and reads it again from the file (after a failed resize). */
static void coroutine_fn vdi_reload(BlockDriverState *bs)
{
    BDRVVdiState *s = bs->opaque;

    free(s->map);
    free(s->owner);
    s->map = NULL;
    s->owner = NULL;
    fmt_defer_init(&s->dirty); /* committed before the resize began: the file is authoritative */
    if (vdi_co_read_meta(bs, s, NULL) < 0) {
        s->corrupt = true; /* no allocation until the image is reopened */
        s->blocks = 0;
        s->disk_size = 0;
    }
}

/* Zeroes guest bytes [from, end of from's block) if that block has a slot. */
static int coroutine_fn vdi_zero_block_tail(BlockDriverState *bs, uint64_t from)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t block = (uint32_t)(from / s->block_size), in = (uint32_t)(from % s->block_size);
    uint32_t e;

    if (in == 0 || block >= s->blocks) {
        return 0;
    }
    e = vdi_entry(s, block);
    if (!vdi_is_slot(s, e)) {
        return 0;
    }
    return bdrv_co_pwrite_zeroes(bs->file, vdi_slot_offset(s, e) + in,
                                 (int64_t)(s->block_size - in), 0);
}

/* Makes map and owner hold n entries (the new ones unset). */
static int vdi_grow_tables(BDRVVdiState *s, uint32_t n)
{
    uint8_t *map = realloc(s->map, (size_t)n * 4 + 1);
    uint32_t *owner;

    if (!map) {
        return -ENOMEM;
    }
    s->map = map;
    owner = realloc(s->owner, (size_t)n * 4 + 1);
    if (!owner) {
        return -ENOMEM;
    }
    s->owner = owner;
    return 0;
}

/* Writes the header with the new geometry fields and flushes. */
static int coroutine_fn vdi_commit_size(BlockDriverState *bs, uint64_t size, uint32_t blocks,
                                        uint32_t allocated, uint64_t off_bmap, uint64_t off_data)
{
    BDRVVdiState *s = bs->opaque;
    int ret = bdrv_co_flush(bs->file->bs);

    if (ret < 0) {
        return ret;
    }
    st_le64(s->hdr + VDI_OFF_DISK, size);
    st_le32(s->hdr + VDI_OFF_BLOCKS, blocks);
    st_le32(s->hdr + VDI_OFF_ALLOCATED, allocated);
    st_le32(s->hdr + VDI_OFF_BMAP, (uint32_t)off_bmap);
    st_le32(s->hdr + VDI_OFF_DATA, (uint32_t)off_data);
    ret = vdi_write_header(bs);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        s->disk_size = size;
        s->blocks = blocks;
        s->allocated = allocated;
        s->off_bmap = off_bmap;
        s->off_data = off_data;
    }
    return ret;
}

/*
 * The new map does not fit before the data: the first k slots (k = the new
 * map's size in blocks) are copied past the last slot and their map entries
 * repointed (flushed between), so that no entry uses them. While the copies
 * are counted, the header's block count grows with free entries (in the old
 * map area) to stay at least the allocated count, as VirtualBox requires;
 * if the old map area has no room for that (a full map of allocated blocks)
 * the grow is refused rather than done unsafely. Then the new map,
 * renumbered for a data offset k blocks later, is written where those slots
 * were; a single header write switches to the new layout (the old map area
 * stays as a gap). A crash before it leaves the old layout with leaked
 * slots; after it, the new one. Static images get their new slots at the end.
 */
static int coroutine_fn vdi_grow_relocate(BlockDriverState *bs, uint64_t size, uint32_t nb)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t old = s->blocks, alloc = s->allocated;
    uint64_t map_bytes = round_up_u64((uint64_t)nb * 4, VDI_SECTOR);
    uint32_t k = (uint32_t)div_round_up_u64(map_bytes, s->block_size);
    uint32_t m = k < alloc ? k : alloc, dest = alloc > k ? alloc : k;
    uint32_t add = s->type == VDI_TYPE_STATIC ? nb - old : 0;
    uint64_t off_bmap = s->off_data, off_data = s->off_data + (uint64_t)k * s->block_size;
    uint32_t tmp_blocks = dest + m > old ? dest + m : old; /* while the copies are counted */
    uint8_t *buf = NULL, *map;
    int ret = 0;

    if (off_data > UINT32_MAX) {
        return -EFBIG; /* the header's offsets are 32-bit */
    }
    if (m && s->off_bmap + (uint64_t)tmp_blocks * 4 > s->off_data) {
        return -ENOTSUP;
    }
    if (m && !(buf = malloc(s->block_size))) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < m && ret == 0; i++) {
        ret = vdi_copy_slot(bs, i, dest + i, buf);
    }
    free(buf);
    if (m && ret == 0 && tmp_blocks > old) {
        for (uint32_t b = old; b < tmp_blocks; b++) {
            vdi_set_entry(s, b, VDI_FREE);
        }
        ret = fmt_co_pwrite(bs->file, (int64_t)(s->off_bmap + (uint64_t)old * 4),
                            (int64_t)(tmp_blocks - old) * 4, s->map + (size_t)old * 4, 0);
    }
    if (m && ret == 0) {
        ret = vdi_commit_size(bs, s->disk_size, tmp_blocks, dest + m, s->off_bmap, s->off_data);
    }
    if (m && ret == 0) {
        for (uint32_t b = 0; b < old; b++) {
            uint32_t e = vdi_entry(s, b);

            if (vdi_is_slot(s, e) && e < m) {
                vdi_set_entry(s, b, dest + e);
            }
        }
        ret = vdi_write_map(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        return ret;
    }
    /* The new map, renumbered: every used slot is now k or more. */
    map = calloc(1, map_bytes);
    if (!map) {
        return -ENOMEM;
    }
    for (uint32_t b = 0; b < nb; b++) {
        uint32_t e = b < old ? vdi_entry(s, b) : VDI_FREE;

        if (b >= old && add) {
            e = alloc + (b - old);
        } else if (b < old && vdi_is_slot(s, e)) {
            e -= k;
        }
        st_le32(map + (size_t)b * 4, e);
    }
    ret = fmt_co_pwrite(bs->file, (int64_t)off_bmap, (int64_t)map_bytes, map, 0);
    if (ret == 0 && add) {
        ret = bdrv_co_truncate(bs->file, (int64_t)(off_data + (uint64_t)(alloc + add) *
                               s->block_size), true, PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret == 0) {
        ret = vdi_commit_size(bs, size, nb, alloc + add, off_bmap, off_data);
    }
    if (ret == 0) {
        memcpy(s->map, map, (size_t)nb * 4);
        vdi_build_owner(s);
    }
    free(map);
    return ret;
}

/* Grows to size (nb blocks): new map entries past the old ones, then the header. */
static int coroutine_fn vdi_grow(BlockDriverState *bs, uint64_t size, uint32_t nb)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t old = s->blocks, add;
    int ret = vdi_zero_block_tail(bs, s->disk_size);

    if (ret < 0 || nb <= old) {
        return ret ? ret : vdi_commit_size(bs, size, old, s->allocated, s->off_bmap,
                                           s->off_data);
    }
    ret = vdi_grow_tables(s, nb + (uint32_t)div_round_up_u64((uint64_t)nb * 4, s->block_size));
    if (ret < 0) {
        return ret;
    }
    if (s->off_bmap + (uint64_t)nb * 4 > s->off_data) {
        return vdi_grow_relocate(bs, size, nb);
    }
    add = s->type == VDI_TYPE_STATIC ? nb - old : 0;
    for (uint32_t b = old; b < nb; b++) {
        vdi_set_entry(s, b, add ? s->allocated + (b - old) : VDI_FREE);
    }
    /* Entries past the old count are not read until the header says so. */
    ret = fmt_co_pwrite(bs->file, (int64_t)(s->off_bmap + (uint64_t)old * 4),
                        (int64_t)(nb - old) * 4, s->map + (size_t)old * 4, 0);
    if (ret == 0 && add) {
        ret = bdrv_co_truncate(bs->file, vdi_slot_offset(s, s->allocated + add), true,
                               PREALLOC_MODE_OFF, 0, NULL);
    }
    if (ret == 0) {
        ret = vdi_commit_size(bs, size, nb, s->allocated + add, s->off_bmap, s->off_data);
    }
    if (ret == 0) {
        vdi_build_owner(s);
    }
    return ret;
}

/* Shrinks a dynamic image: the blocks past the end are released first, then the header. */
static int coroutine_fn vdi_shrink(BlockDriverState *bs, uint64_t size, uint32_t nb,
                                   Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    int ret;

    if (s->type != VDI_TYPE_DYNAMIC) {
        error_setg(errp, "vdi: cannot shrink '%s': it is a static image (every block is "
                   "preallocated); convert it to a dynamic one first", bs->filename);
        return -ENOTSUP;
    }
    ret = nb < s->blocks ? vdi_release_blocks(bs, nb, s->blocks - 1) : 0;
    ret = ret ? ret : vdi_zero_block_tail(bs, size);
    ret = ret ? ret : vdi_commit_size(bs, size, nb, s->allocated, s->off_bmap, s->off_data);
    if (ret == 0) {
        vdi_build_owner(s);
    } else {
        error_setg_errno(errp, ret, "vdi: could not shrink '%s'", bs->filename);
    }
    return ret;
}

/*
 * Resize. Grow: dynamic images get free map entries, static ones new zeroed
 * blocks; when the map does not fit before the data, blocks are moved to
 * make room (vdi_grow_relocate). Shrink (dynamic only, as VirtualBox, which
 * cannot shrink at all, keeps every block of a static image): the blocks
 * past the new end are released. The size must be a multiple of 512.
 */
static int coroutine_fn vdi_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, BdrvRequestFlags flags,
                                        Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    uint64_t size = (uint64_t)offset;
    uint32_t nb;
    int ret;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "vdi: resize with preallocation=%s is not supported (static images "
                   "preallocate their new blocks)", prealloc == PREALLOC_MODE_FULL ? "full"
                   : prealloc == PREALLOC_MODE_FALLOC ? "falloc" : "metadata");
        return -ENOTSUP;
    }
    if (size % VDI_SECTOR || size > (uint64_t)VDI_BLOCKS_MAX * s->block_size) {
        error_setg(errp, "vdi: new size %llu of '%s' is not a multiple of %u or exceeds the "
                   "maximum %llu", (unsigned long long)size, bs->filename, VDI_SECTOR,
                   (unsigned long long)VDI_BLOCKS_MAX * s->block_size);
        return -EINVAL;
    }
    if (s->corrupt) {
        error_setg(errp, "vdi: '%s': the block map is corrupt; run 'check -r all' first",
                   bs->filename);
        return -EIO;
    }
    if (size == s->disk_size) {
        return 0;
    }
    nb = (uint32_t)div_round_up_u64(size, s->block_size);
    ret = vdi_mark_modified(bs);
    if (ret < 0) {
        error_setg_errno(errp, ret, "vdi: could not write the header of '%s'", bs->filename);
        return ret;
    }
    co_rwlock_wrlock(&s->lock);
    /* The resize rewrites and moves the map: nothing may be pending. */
    ret = vdi_commit(bs, false);
    ret = ret ? ret : vdi_trim(bs); /* the resize paths expect the file to end at the last slot */
    if (ret < 0) {
        co_rwlock_unlock(&s->lock);
        error_setg_errno(errp, ret, "vdi: could not write the block map of '%s'", bs->filename);
        return ret;
    }
    if (size < s->disk_size) {
        ret = vdi_shrink(bs, size, nb, errp);
    } else {
        ret = vdi_grow(bs, size, nb);
        if (ret == -ENOTSUP) {
            error_setg(errp, "vdi: cannot grow '%s' to %llu bytes crash-safely: its block map "
                       "is full and its blocks are allocated, so no block can be moved to "
                       "make room for a larger map; convert the image instead", bs->filename,
                       (unsigned long long)size);
        } else if (ret < 0) {
            error_setg_errno(errp, ret, "vdi: could not grow '%s' to %llu bytes", bs->filename,
                             (unsigned long long)size);
        }
    }
    if (ret < 0) {
        vdi_reload(bs);
    } else {
        ret = fmt_co_grow_reset(bs->file, &s->grow);
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not get the size of '%s'", bs->filename);
        }
    }
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Block status, info, check */

static int coroutine_fn vdi_co_block_status(BlockDriverState *bs, bool want_zero,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file)
{
    BDRVVdiState *s = bs->opaque;
    uint32_t block, in_block, e;
    int64_t n;
    int ret;

    co_rwlock_rdlock(&s->lock);
    vdi_chunk(s, offset, bytes, &block, &in_block, &n);
    e = vdi_entry(s, block);
    if (vdi_is_slot(s, e)) {
        *map = vdi_slot_offset(s, e) + in_block;
        *file = bs->file->bs;
        ret = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
        /* Extend over blocks whose slots follow contiguously. */
        while (n < bytes && vdi_entry(s, block + 1) == e + 1 && vdi_is_slot(s, e + 1)) {
            block++;
            e++;
            n += bytes - n < s->block_size ? bytes - n : s->block_size;
        }
    } else if (e == VDI_FREE || e == VDI_ZERO) {
        ret = e == VDI_ZERO ? BDRV_BLOCK_ZERO : 0;
        while (n < bytes && vdi_entry(s, block + 1) == e) {
            block++;
            n += bytes - n < s->block_size ? bytes - n : s->block_size;
        }
    } else {
        ret = -EIO;
    }
    co_rwlock_unlock(&s->lock);
    *pnum = n;
    return ret;
}

static int vdi_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVVdiState *s = bs->opaque;

    bdi->cluster_size = s->block_size;
    return 0;
}

/* Checks every map entry; fixes out-of-range and shared entries by freeing them. */
static void vdi_check_entries(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix,
                              int64_t file_len, uint32_t *referenced, bool *dirty)
{
    BDRVVdiState *s = bs->opaque;

    for (uint32_t i = 0; i < s->blocks; i++) {
        s->owner[i] = VDI_FREE;
    }
    *referenced = 0;
    for (uint32_t b = 0; b < s->blocks; b++) {
        uint32_t e = vdi_entry(s, b);
        const char *what = NULL;

        if (e == VDI_FREE || e == VDI_ZERO) {
            continue;
        }
        if (!vdi_is_slot(s, e)) {
            what = "is past the end of the allocated blocks";
            bdrv_check_report(res, "vdi: block %u: data block %u %s (%u allocated)", b, e,
                              what, s->allocated);
        } else if (s->owner[e] != VDI_FREE) {
            what = "is shared";
            bdrv_check_report(res, "vdi: blocks %u and %u both point to data block %u",
                              s->owner[e], b, e);
        } else if (vdi_slot_offset(s, e) + (int64_t)s->block_size > file_len) {
            what = "lies past the end of the file";
            bdrv_check_report(res, "vdi: block %u: data block %u %s (%lld bytes)", b, e, what,
                              (long long)file_len);
        }
        if (!what) {
            s->owner[e] = b;
            (*referenced)++;
            continue;
        }
        res->corruptions++;
        if (fix & BDRV_FIX_ERRORS) {
            vdi_set_entry(s, b, VDI_FREE);
            res->corruptions_fixed++;
            *dirty = true;
        }
    }
}

static int coroutine_fn vdi_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                                     BdrvCheckMode fix)
{
    BDRVVdiState *s = bs->opaque;
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    uint32_t referenced;
    bool dirty = false;
    int ret = 0;

    if (file_len < 0) {
        res->check_errors++;
        return (int)file_len;
    }
    co_rwlock_wrlock(&s->lock);
    ret = vdi_commit(bs, false); /* repairs rewrite the map whole */
    ret = ret ? ret : vdi_trim(bs);
    if (ret < 0) {
        res->check_errors++;
        co_rwlock_unlock(&s->lock);
        return ret;
    }
    vdi_check_entries(bs, res, fix, file_len, &referenced, &dirty);
    if (dirty) {
        ret = vdi_write_map(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0 && referenced != s->allocated) {
        uint32_t leaked = s->allocated - referenced;

        bdrv_check_report(res, "vdi: %u data blocks are allocated but not used (header says "
                          "%u allocated, the map uses %u)", leaked, s->allocated, referenced);
        res->leaks += (int)leaked;
        /* Moving slots is only safe once no entry is shared or out of range. */
        if ((fix & BDRV_FIX_LEAKS) && s->type == VDI_TYPE_DYNAMIC &&
            res->corruptions == res->corruptions_fixed) {
            ret = vdi_fill_holes(bs, NULL, NULL);
            if (ret == 0) {
                res->leaks_fixed += (int)leaked;
            }
        }
    }
    if (ret < 0) {
        res->check_errors++;
    }
    vdi_build_owner(s);
    res->image_end_offset = vdi_slot_offset(s, s->allocated);
    res->allocated_clusters = referenced < s->allocated ? referenced : s->allocated;
    res->total_clusters = s->blocks;
    co_rwlock_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* VD-style metadata: UUIDs, geometry, comment */

static int vdi_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16])
{
    BDRVVdiState *s = bs->opaque;

    if ((unsigned)kind > BLOCK_UUID_PARENT_MODIFICATION) {
        return -EINVAL;
    }
    vdi_uuid_swap(uuid, s->hdr + VDI_OFF_UUID + 16 * kind);
    return 0;
}

static int coroutine_fn vdi_co_set_uuid(BlockDriverState *bs, BlockUuidKind kind,
                                        const uint8_t uuid[16], Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    uint8_t old[16];
    int ret;

    if ((unsigned)kind > BLOCK_UUID_PARENT_MODIFICATION) {
        error_setg(errp, "Unknown UUID kind %d", (int)kind);
        return -EINVAL;
    }
    memcpy(old, s->hdr + VDI_OFF_UUID + 16 * kind, 16);
    vdi_uuid_swap(s->hdr + VDI_OFF_UUID + 16 * kind, uuid);
    ret = vdi_write_header(bs);
    if (ret < 0) {
        memcpy(s->hdr + VDI_OFF_UUID + 16 * kind, old, 16);
        error_setg_errno(errp, ret, "Could not write the header of '%s'", bs->filename);
        return ret;
    }
    if (kind == BLOCK_UUID_MODIFICATION) {
        s->modified = true; /* the caller chose it: do not renew it on the next write */
    }
    return 0;
}

static int vdi_get_geometry(BlockDriverState *bs, BlockGeometry *geo)
{
    BDRVVdiState *s = bs->opaque;

    geo->cylinders = ld_le32(s->hdr + VDI_OFF_CYLS);
    geo->heads = ld_le32(s->hdr + VDI_OFF_HEADS);
    geo->sectors = ld_le32(s->hdr + VDI_OFF_SECS);
    return 0;
}

static int coroutine_fn vdi_co_set_geometry(BlockDriverState *bs, const BlockGeometry *geo,
                                            Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    uint8_t old[12];
    int ret;

    if (geo->heads > 255 || geo->sectors > 255 || geo->cylinders > 16383 * 16 * 63) {
        error_setg(errp, "Geometry %u/%u/%u out of range (heads and sectors <= 255)",
                   geo->cylinders, geo->heads, geo->sectors);
        return -EINVAL;
    }
    memcpy(old, s->hdr + VDI_OFF_CYLS, sizeof(old));
    st_le32(s->hdr + VDI_OFF_CYLS, geo->cylinders);
    st_le32(s->hdr + VDI_OFF_HEADS, geo->heads);
    st_le32(s->hdr + VDI_OFF_SECS, geo->sectors);
    ret = vdi_write_header(bs);
    if (ret < 0) {
        memcpy(s->hdr + VDI_OFF_CYLS, old, sizeof(old));
        error_setg_errno(errp, ret, "Could not write the header of '%s'", bs->filename);
    }
    return ret;
}

static int vdi_get_comment(BlockDriverState *bs, char **out)
{
    BDRVVdiState *s = bs->opaque;

    *out = strndup((const char *)s->hdr + VDI_OFF_COMMENT, VDI_COMMENT_MAX - 1);
    return *out ? 0 : -ENOMEM;
}

static int coroutine_fn vdi_co_set_comment(BlockDriverState *bs, const char *comment,
                                           Error **errp)
{
    BDRVVdiState *s = bs->opaque;
    size_t len = comment ? strlen(comment) : 0;
    uint8_t old[VDI_COMMENT_MAX];
    int ret;

    if (len >= VDI_COMMENT_MAX) {
        error_setg(errp, "Comment of %zu bytes is too long (a VDI comment holds at most %d)",
                   len, VDI_COMMENT_MAX - 1);
        return -EINVAL;
    }
    memcpy(old, s->hdr + VDI_OFF_COMMENT, sizeof(old));
    memset(s->hdr + VDI_OFF_COMMENT, 0, VDI_COMMENT_MAX);
    if (len) {
        memcpy(s->hdr + VDI_OFF_COMMENT, comment, len);
    }
    ret = vdi_write_header(bs);
    if (ret < 0) {
        memcpy(s->hdr + VDI_OFF_COMMENT, old, sizeof(old));
        error_setg_errno(errp, ret, "Could not write the header of '%s'", bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Create */

static const BlockCreateOptDesc vdi_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "static", BLOCK_OPT_BOOL, "VDI static (pre-allocated) image", "off" },
    { NULL, 0, NULL, NULL },
};

/* Builds the header sector of a new image. */
static void vdi_build_header(uint8_t *hdr, uint64_t size, uint32_t blocks, bool is_static,
                             uint32_t off_data)
{
    static const char text[] = "<<< coblk VDI Disk Image >>>\n";
    uint8_t u[16];

    memset(hdr, 0, VDI_HDR_BUF);
    memcpy(hdr + VDI_OFF_TEXT, text, sizeof(text) - 1);
    st_le32(hdr + VDI_OFF_SIG, VDI_SIGNATURE);
    st_le32(hdr + VDI_OFF_VERSION, VDI_VERSION_1_1);
    st_le32(hdr + VDI_OFF_HDR_SIZE, VDI_HEADER_SIZE_PLUS);
    st_le32(hdr + VDI_OFF_TYPE, is_static ? VDI_TYPE_STATIC : VDI_TYPE_DYNAMIC);
    st_le32(hdr + VDI_OFF_BMAP, VDI_HDR_BUF);
    st_le32(hdr + VDI_OFF_DATA, off_data);
    st_le32(hdr + VDI_OFF_SECSIZE, VDI_SECTOR);
    st_le64(hdr + VDI_OFF_DISK, size);
    st_le32(hdr + VDI_OFF_BLKSIZE, VDI_BLOCK_SIZE);
    st_le32(hdr + VDI_OFF_BLOCKS, blocks);
    st_le32(hdr + VDI_OFF_ALLOCATED, is_static ? blocks : 0);
    fmt_uuid_generate(u);
    vdi_uuid_swap(hdr + VDI_OFF_UUID, u);
    fmt_uuid_generate(u);
    vdi_uuid_swap(hdr + VDI_OFF_UUID + 16, u);
}

static int coroutine_fn vdi_write_new(BlockBackend *blk, uint64_t size, bool is_static,
                                      Error **errp)
{
    uint32_t blocks = (uint32_t)div_round_up_u64(size, VDI_BLOCK_SIZE);
    uint32_t map_bytes = (uint32_t)round_up_u64((uint64_t)blocks * 4, VDI_SECTOR);
    uint32_t off_data = VDI_HDR_BUF + map_bytes;
    uint8_t *buf = calloc(1, (size_t)off_data);
    int ret;

    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    vdi_build_header(buf, size, blocks, is_static, off_data);
    for (uint32_t b = 0; b < blocks; b++) {
        st_le32(buf + VDI_HDR_BUF + (size_t)b * 4, is_static ? b : VDI_FREE);
    }
    ret = fmt_blk_co_pwrite(blk, 0, off_data, buf);
    free(buf);
    if (ret == 0 && is_static) {
        ret = blk_co_truncate(blk, off_data + (int64_t)blocks * VDI_BLOCK_SIZE, true,
                              PREALLOC_MODE_OFF, 0, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (ret == 0) {
        ret = blk_co_flush(blk);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not write the new VDI image");
    }
    return ret;
}

static int coroutine_fn vdi_co_create_opts(const BlockDriver *drv, const char *filename,
                                           BlockOpts *options, Error **errp)
{
    uint64_t size;
    bool is_static;
    BlockBackend *blk;
    int ret;

    if (bopts_take_size(options, "size", 0, &size, errp) < 0 ||
        bopts_take_bool(options, "static", false, &is_static, errp) < 0 ||
        bopts_check_empty(options, "vdi", errp) < 0) {
        return -EINVAL;
    }
    size = round_up_u64(size, VDI_SECTOR);
    if (size > (uint64_t)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE) {
        error_setg(errp, "vdi: size %llu exceeds the maximum %llu",
                   (unsigned long long)size,
                   (unsigned long long)VDI_BLOCKS_MAX * VDI_BLOCK_SIZE);
        return -EINVAL;
    }
    blk = fmt_co_create_file(filename, errp);
    if (!blk) {
        return -EIO;
    }
    ret = vdi_write_new(blk, size, is_static, errp);
    blk_unref(blk);
    return ret;
}

static const char *const vdi_extensions[] = { "vdi", NULL };

const BlockDriver bdrv_vdi = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "vdi",
    .instance_size = sizeof(BDRVVdiState),
    .is_format = true,
    .probe = vdi_probe,
    .bdrv_open = vdi_open,
    .bdrv_close = vdi_close,
    .reopen_prepare = vdi_reopen_prepare,
    .reopen_commit = vdi_reopen_noop,
    .reopen_abort = vdi_reopen_noop,
    .co_preadv = vdi_co_preadv,
    .co_pwritev = vdi_co_pwritev,
    .co_pwrite_zeroes = vdi_co_pwrite_zeroes,
    .co_pdiscard = vdi_co_pdiscard,
    .co_flush_to_os = vdi_co_flush_to_os,
    .co_block_status = vdi_co_block_status,
    .co_getlength = vdi_co_getlength,
    .co_truncate = vdi_co_truncate,
    .co_create_opts = vdi_co_create_opts,
    .create_opts = vdi_create_opts,
    .get_info = vdi_get_info,
    .co_check = vdi_co_check,
    .get_uuid = vdi_get_uuid,
    .co_set_uuid = vdi_co_set_uuid,
    .get_geometry = vdi_get_geometry,
    .co_set_geometry = vdi_co_set_geometry,
    .get_comment = vdi_get_comment,
    .co_set_comment = vdi_co_set_comment,
    .co_compact = vdi_co_compact,
    .file_extensions = vdi_extensions,
};
