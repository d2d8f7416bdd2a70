/*
 * The "vhdx" format driver: Hyper-V virtual hard disks ([MS-VHDX]), dynamic
 * and fixed, 512 and 4096-byte logical sectors, every payload block state,
 * log replay on open and metadata updates through the log.
 *
 * Differencing images (HasParent): the parent locator names the parent,
 * opened as the backing file after its DataWriteGuid is checked against
 * parent_linkage (parent.c). NOT_PRESENT blocks read from the parent;
 * PARTIALLY_PRESENT blocks per sector by the sector bitmap; ZERO, UNMAPPED
 * and UNDEFINED blocks read as zeroes. A write that covers a NOT_PRESENT
 * block wholly makes it FULLY_PRESENT; a partial one allocates the block
 * (and the chunk's sector bitmap block) and makes it PARTIALLY_PRESENT
 * (partial.c). A partial write after which every sector of a
 * PARTIALLY_PRESENT block is present makes it FULLY_PRESENT (with its bits,
 * in the same commit): from then on its sector bitmap is not consulted.
 *
 * Allocating writes (whole or zero-filled blocks, and partial blocks of
 * differencing images) and differencing partial writes write their data
 * outside s->lock, many at once; their BAT entries and sector bitmap bits
 * are set in memory and written at the next flush, one flush and one log
 * entry for all of them (alloc.c, partial.c).
 *
 * Crash safety: a new block is written and flushed before its BAT entry is
 * written (through the log by default, as the VHDX specification asks; in
 * place with metadata-log=off, see log.c), so a crash leaves the old entry,
 * the new one pointing at durable data, or a log that the next writable
 * open replays.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/drivers.h"
#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

typedef struct SyncRead {
    BdrvChild *c;
    uint64_t off;
    void *buf;
    size_t len;
} SyncRead;

int coroutine_fn vhdx_co_pread(BdrvChild *c, uint64_t off, void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, buf, len);
    return bdrv_co_preadv(c, (int64_t)off, (int64_t)len, &qiov, 0);
}

int coroutine_fn vhdx_co_pwrite(BdrvChild *c, uint64_t off, const void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, len);
    return bdrv_co_pwritev(c, (int64_t)off, (int64_t)len, &qiov, 0);
}

int coroutine_fn vhdx_co_pwrite_fua(BdrvChild *c, uint64_t off, const void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, len);
    return bdrv_co_pwritev(c, (int64_t)off, (int64_t)len, &qiov, BDRV_REQ_FUA);
}

static int64_t coroutine_fn sync_read_co(void *opaque)
{
    SyncRead *r = opaque;

    return vhdx_co_pread(r->c, r->off, r->buf, r->len);
}

int vhdx_pread_sync(BdrvChild *c, uint64_t off, void *buf, size_t len)
{
    SyncRead r = { c, off, buf, len };

    return (int)bdrv_run_co(c->bs->aio_context, sync_read_co, &r);
}

static int vhdx_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return buf_size >= 8 && !memcmp(buf, "vhdxfile", 8) ? 100 : 0;
}

/* ---------------------------------------------------------------------- */
/* Open and close */

static void vhdx_close(BlockDriverState *bs);

static const char *const vhdx_option_names[] = { "metadata-log", NULL };

static int vhdx_do_open(BlockDriverState *bs, BlockOpts *options, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    if (bopts_take_bool(options, "metadata-log", true, &s->metadata_log, errp) < 0) {
        return -EINVAL;
    }
    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY, false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = vhdx_read_headers(bs, errp);
    if (ret == 0) {
        ret = vhdx_log_open(bs, errp);
    }
    if (ret == 0) {
        ret = vhdx_read_region_table(bs, errp);
    }
    if (ret == 0) {
        ret = vhdx_read_metadata(bs, errp);
    }
    if (ret == 0) {
        ret = vhdx_load_bat(bs, errp);
    }
    if (ret == 0 && s->has_parent && !(bs->open_flags & BDRV_O_NO_BACKING)) {
        ret = vhdx_check_parent(bs, bs->open_flags, errp);
    }
    return ret;
}

static int vhdx_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    co_mutex_init(&s->lock);
    fmt_inflight_init(&s->allocs);
    ret = vhdx_do_open(bs, options, errp);
    if (ret < 0) {
        vhdx_close(bs);
    }
    return ret;
}

static int64_t coroutine_fn clear_log_guid_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVVhdxState *s = bs->opaque;

    memset(&s->hdr.log_guid, 0, sizeof(s->hdr.log_guid));
    return vhdx_update_headers(bs, NULL);
}

static void vhdx_close(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;

    if (s->log_guid_set && !bs->read_only && bs->file) {
        /* Every entry is in place: a clean image needs no replay. */
        (void)bdrv_run_co(bs->aio_context, clear_log_guid_co, bs);
        s->log_guid_set = false;
    }
    free(s->bat);
    s->bat = NULL;
    vhdx_sb_free(s);
}

static void vhdx_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;

    if (bs->bl.request_alignment < s->logical_sector) {
        bs->bl.request_alignment = s->logical_sector;
    }
}

static int64_t coroutine_fn commit_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVVhdxState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = vhdx_commit(bs);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0 && s->log_guid_set) {
        /* Every entry is in place: clean, as at close; the next write session starts anew. */
        VhdxGuid guid = s->hdr.log_guid;

        memset(&s->hdr.log_guid, 0, sizeof(s->hdr.log_guid));
        ret = vhdx_update_headers(bs, NULL);
        if (ret < 0) {
            s->hdr.log_guid = guid;
        } else {
            s->log_guid_set = false;
            s->guids_updated = false;
        }
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Going read-only: the BAT entries of new blocks are written (alloc.c) and
 * LogGuid cleared first, so that read-only opens accept the image.
 */
static int vhdx_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                               Error **errp)
{
    int ret;

    if ((new_flags & BDRV_O_RDWR) || bs->read_only) {
        return 0;
    }
    ret = (int)bdrv_run_co(bs->aio_context, commit_co, bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vhdx: could not write the BAT of '%s'", bs->filename);
    }
    return ret;
}

static void vhdx_reopen_noop(BlockDriverState *bs)
{
}

/* ---------------------------------------------------------------------- */
/* Requests */

static uint64_t bat_entry(const BDRVVhdxState *s, uint64_t block)
{
    return s->bat[vhdx_bat_index(s, block)];
}

/* Reads from the parent (zeroes past its end, or without one). */
static int coroutine_fn read_parent(BlockDriverState *bs, uint64_t off, uint64_t n,
                                    IOVector *qiov, size_t qoff)
{
    int64_t blen;
    uint64_t in;

    if (!bs->backing) {
        iovector_memset(qiov, qoff, 0, n);
        return 0;
    }
    blen = bdrv_co_getlength(bs->backing->bs);
    if (blen < 0) {
        return (int)blen;
    }
    in = off >= (uint64_t)blen ? 0 : ((uint64_t)blen - off < n ? (uint64_t)blen - off : n);
    if (in < n) {
        iovector_memset(qiov, qoff + in, 0, n - in);
    }
    return in ? bdrv_co_preadv_part(bs->backing, (int64_t)off, (int64_t)in, qiov, qoff, 0) : 0;
}

/* A PARTIALLY_PRESENT block: present sectors from the file, the others from the parent. */
static int coroutine_fn read_partial(BlockDriverState *bs, uint64_t host, uint64_t off,
                                     uint64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    int ret = 0;

    host -= off - off % s->block_size; /* host + off: the file offset of guest offset off */
    while (n && ret >= 0) {
        uint64_t run;

        ret = vhdx_sb_run(bs, off, n, &run);
        if (ret > 0) {
            ret = bdrv_co_preadv_part(bs->file, (int64_t)(host + off), (int64_t)run, qiov,
                                      qoff, 0);
        } else if (ret == 0) {
            ret = read_parent(bs, off, run, qiov, qoff);
        }
        off += run;
        qoff += run;
        n -= run;
    }
    return ret < 0 ? ret : 0;
}

static int coroutine_fn read_block(BlockDriverState *bs, uint64_t e, uint64_t off, uint64_t in,
                                   uint64_t n, IOVector *qiov, size_t qoff)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t host = e & VHDX_BAT_OFFSET_MASK;

    switch (e & VHDX_BAT_STATE_MASK) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        return bdrv_co_preadv_part(bs->file, (int64_t)(host + in), (int64_t)n, qiov, qoff, 0);
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        return read_partial(bs, host, off, n, qiov, qoff);
    case VHDX_PAYLOAD_NOT_PRESENT:
        if (s->has_parent) {
            return read_parent(bs, off, n, qiov, qoff);
        }
        /* fall through */
    default:
        iovector_memset(qiov, qoff, 0, n);
        return 0;
    }
}

static int coroutine_fn vhdx_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t off = (uint64_t)offset, left = (uint64_t)bytes;

    while (left) {
        uint64_t block = off / s->block_size, in = off % s->block_size;
        uint64_t n = left < s->block_size - in ? left : s->block_size - in;
        int ret = read_block(bs, bat_entry(s, block), off, in, n, qiov, qoff);

        if (ret < 0) {
            return ret;
        }
        off += n;
        qoff += n;
        left -= n;
    }
    return 0;
}

uint64_t vhdx_block_used(const BDRVVhdxState *s, uint64_t block)
{
    uint64_t left = s->disk_size - block * s->block_size;

    return left < s->block_size ? left : s->block_size;
}

static int coroutine_fn vhdx_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t off = (uint64_t)offset, left = (uint64_t)bytes;
    int ret;

    if (off + left > s->disk_size) {
        return -ENOSPC;
    }
    co_mutex_lock(&s->lock);
    ret = vhdx_log_start(bs);
    co_mutex_unlock(&s->lock);
    while (ret == 0 && left) {
        uint64_t block = off / s->block_size, in = off % s->block_size;
        uint64_t n = left < s->block_size - in ? left : s->block_size - in;

        ret = vhdx_write_block(bs, block, in, n, qiov, qoff);
        off += n;
        qoff += n;
        left -= n;
    }
    return ret;
}

/* Status of the block entry e at in; *len may be cut (a sector bitmap run). */
static int coroutine_fn block_state(BlockDriverState *bs, uint64_t e, uint64_t off,
                                    uint64_t in, uint64_t *len, uint64_t *host)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    switch (e & VHDX_BAT_STATE_MASK) {
    case VHDX_PAYLOAD_FULLY_PRESENT:
        *host = (e & VHDX_BAT_OFFSET_MASK) + in;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    case VHDX_PAYLOAD_PARTIALLY_PRESENT:
        ret = vhdx_sb_run(bs, off, *len, len);
        if (ret <= 0) {
            return ret;
        }
        *host = (e & VHDX_BAT_OFFSET_MASK) + in;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    case VHDX_PAYLOAD_ZERO:
        return BDRV_BLOCK_ZERO;
    case VHDX_PAYLOAD_NOT_PRESENT:
        return 0;
    default: /* UNDEFINED, UNMAPPED: read as zeroes, not from a parent */
        return s->has_parent ? BDRV_BLOCK_ZERO : 0;
    }
}

static int coroutine_fn vhdx_co_block_status(BlockDriverState *bs, bool want_zero,
                                             int64_t offset, int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockDriverState **file)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t off = (uint64_t)offset, done = 0, first_host = 0;
    int status = -1;

    while (done < (uint64_t)bytes) {
        uint64_t block = (off + done) / s->block_size, in = (off + done) % s->block_size;
        uint64_t n = s->block_size - in, host = 0, e = bat_entry(s, block);
        int st;

        if (n > (uint64_t)bytes - done) {
            n = (uint64_t)bytes - done;
        }
        st = block_state(bs, e, off + done, in, &n, &host);
        if (st < 0) {
            return st;
        }
        if (status < 0) {
            status = st;
            first_host = host;
        } else if (st != status || ((st & BDRV_BLOCK_OFFSET_VALID) &&
                                    host != first_host + done)) {
            break;
        }
        done += n;
        if ((e & VHDX_BAT_STATE_MASK) == VHDX_PAYLOAD_PARTIALLY_PRESENT) {
            break; /* one bitmap run at a time */
        }
    }
    *pnum = (int64_t)done;
    if (status & BDRV_BLOCK_OFFSET_VALID) {
        *map = (int64_t)first_host;
        *file = bs->file->bs;
    }
    return status;
}

/* Writes the BAT entries of the blocks allocated since the last flush (alloc.c). */
static int coroutine_fn vhdx_co_flush_to_os(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = vhdx_commit(bs);
    co_mutex_unlock(&s->lock);
    return ret;
}

static int64_t coroutine_fn vhdx_co_getlength(BlockDriverState *bs)
{
    BDRVVhdxState *s = bs->opaque;

    return (int64_t)s->disk_size;
}

static int vhdx_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVVhdxState *s = bs->opaque;

    bdi->cluster_size = s->block_size;
    return 0;
}

/* DataWriteGuid is the modification UUID; parent_linkage the parent's. */
static int vhdx_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16])
{
    BDRVVhdxState *s = bs->opaque;

    if (kind == BLOCK_UUID_MODIFICATION) {
        memcpy(uuid, s->hdr.data_write_guid.b, 16);
        return 0;
    }
    if (kind == BLOCK_UUID_PARENT_MODIFICATION && s->has_parent) {
        memcpy(uuid, s->parent_linkage.b, 16);
        return 0;
    }
    return -ENOTSUP;
}

static const char *const vhdx_extensions[] = { "vhdx", NULL };

const BlockDriver bdrv_vhdx = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "vhdx",
    .instance_size = sizeof(BDRVVhdxState),
    .is_format = true,
    .option_names = vhdx_option_names,
    .probe = vhdx_probe,
    .bdrv_open = vhdx_open,
    .bdrv_close = vhdx_close,
    .refresh_limits = vhdx_refresh_limits,
    .co_preadv = vhdx_co_preadv,
    .co_pwritev = vhdx_co_pwritev,
    .co_pdiscard = vhdx_co_pdiscard,
    .co_flush_to_os = vhdx_co_flush_to_os,
    .co_block_status = vhdx_co_block_status,
    .co_getlength = vhdx_co_getlength,
    .co_truncate = vhdx_co_truncate,
    .co_change_backing_file = vhdx_co_change_backing_file,
    .reopen_prepare = vhdx_reopen_prepare,
    .reopen_commit = vhdx_reopen_noop,
    .reopen_abort = vhdx_reopen_noop,
    .co_create_opts = vhdx_co_create_opts,
    .create_opts = vhdx_create_opts,
    .get_info = vhdx_get_info,
    .co_check = vhdx_co_check,
    .file_extensions = vhdx_extensions,
    .get_uuid = vhdx_get_uuid,
};
