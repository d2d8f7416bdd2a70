/*
 * The "vdi" format driver: VirtualBox Virtual Disk Images, version 1.1,
 * dynamic ("normal") and static ("fixed") images. This file: the driver
 * table, probe, open, close, reopen and the guest flush; the other files of
 * this folder are listed in vdi-int.h.
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
 * as VirtualBox does. Two exceptions, both unreferenced slots: a slot whose
 * data write is in flight (its entry is set once the data is written), and
 * one whose data write failed after a later slot was handed out (a leak that
 * check -r, discard and compact reclaim).
 *
 * Crash safety: a new slot's data is written first, then the map entry that
 * points at it is set, in memory only (a failed data write leaves the block
 * unallocated and gives the slot back, see io.c); the dirty map sectors (fmt-defer.h, FmtDefer)
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
#include <stdlib.h>
#include <string.h>

#include "drivers/drivers.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

static int vdi_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    if (buf_size < VDI_OFF_VERSION + 4 || ld_le32(buf + VDI_OFF_SIG) != VDI_SIGNATURE) {
        return 0;
    }
    return 100;
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
    fmt_inflight_init(&s->allocs);
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
