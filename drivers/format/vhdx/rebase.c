/*
 * vhdx: setting the parent of a differencing image (rebase -u): the parent
 * locator item is rewritten with the new parent's name (relative_path, or
 * absolute_win32_path for an absolute name) and parent_linkage, the new
 * parent's DataWriteGuid, read by opening it (its name resolved against the
 * image's folder; it must be a vhdx that opens).
 *
 * The new item takes the old one's place and may grow into the free space
 * after it, up to the next metadata item or the region's end. The metadata
 * table (whose entry gives the item's length) and the item are rewritten in
 * one log entry covering the region from its table to the item's end, so a
 * crash leaves the old locator or the new one (the log replays whole
 * entries only). The parent's contents are not compared: as with qemu-img
 * rebase -u, the caller vouches that the new parent holds the same data.
 *
 * Refused with -ENOTSUP and a message saying why (MS-VHDX 2.5.1.2, 2.6):
 *  - giving a parent to an image that is not differencing: its file
 *    parameters say HasParent = 0 and it has no parent locator item. Both
 *    could be written through the log, but the BAT would change meaning
 *    under the guest: a block that is not present (or unmapped, or
 *    undefined) reads zeroes without a parent and the parent's data with
 *    one, and the BAT of a differencing image ends with one more sector
 *    bitmap entry than the image has room for when its payload blocks fill
 *    the last chunk. coblk does not convert; 'coblk-img create -b' makes a
 *    new differencing image over it instead;
 *  - removing the parent: without HasParent and the locator, partially
 *    present blocks (whose sector bitmaps send the other sectors to the
 *    parent) are invalid and blocks not present would read zeroes: the
 *    guest's data would change or the image would be corrupt.
 *    'coblk-img convert' makes a standalone copy instead;
 *  - parents of another format than vhdx (the locator's parent_linkage is
 *    the parent's vhdx DataWriteGuid).
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define META_TABLE_SIZE (64 * VHDX_KiB)
#define MAX_LOCATOR (256 * VHDX_KiB) /* as parent.c reads */

static int refuse(BlockDriverState *bs, const char *name, const char *fmt, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;

    if (!s->has_parent) {
        error_setg(errp, "vhdx: '%s' is not a differencing image (HasParent is 0 in its file "
                   "parameters and it has no parent locator): giving it a parent is not "
                   "supported, as its blocks not present would then read the parent instead "
                   "of zeroes; create a differencing image over it instead", bs->filename);
        return -ENOTSUP;
    }
    if (!name || !name[0]) {
        error_setg(errp, "vhdx: removing the parent of the differencing image '%s' is not "
                   "supported: VHDX has no standalone form of it (its blocks not present or "
                   "partially present read the parent); convert it to a new image instead",
                   bs->filename);
        return -ENOTSUP;
    }
    if (fmt && strcmp(fmt, "vhdx") != 0) {
        error_setg(errp, "vhdx: the parent of '%s' must be vhdx, not '%s'", bs->filename, fmt);
        return -ENOTSUP;
    }
    if (strlen(name) >= sizeof(bs->backing_file)) {
        error_setg(errp, "vhdx: parent name '%.64s...' is too long", name);
        return -ENAMETOOLONG;
    }
    return 0;
}

/* The DataWriteGuid of the vhdx named name (relative to the image's folder). */
static int parent_guid(BlockDriverState *bs, const char *name, VhdxGuid *g, Error **errp)
{
    char dir[4096], path[8200];
    BlockOpts *o = bopts_new();
    BlockBackend *blk;
    int ret;

    snprintf(dir, sizeof(dir), "%s", bs->filename);
    if (name[0] == '/') {
        snprintf(path, sizeof(path), "%s", name);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dirname(dir), name);
    }
    bopts_set(o, "driver", "vhdx");
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", path);
    blk = blk_new_open(NULL, o, BDRV_O_NO_BACKING, errp);
    if (!blk) {
        error_prepend(errp, "vhdx: cannot read the DataWriteGuid of the new parent '%s': ",
                      path);
        return -ENOENT;
    }
    ret = bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_MODIFICATION, g->b);
    blk_unref(blk);
    if (ret < 0) {
        error_setg_errno(errp, ret, "vhdx: cannot read the DataWriteGuid of '%s'", path);
    }
    return ret;
}

/*
 * Where the locator item may end: the first other item's offset past it,
 * else the region's end. table is the region's first META_TABLE_SIZE bytes;
 * *entry gets the locator's table entry.
 */
static uint64_t item_limit(const BDRVVhdxState *s, uint8_t *table, uint8_t **entry)
{
    uint16_t count = ld_le16(table + 10);
    uint64_t limit = s->meta_length;

    *entry = NULL;
    for (uint16_t i = 0; i < count && i < VHDX_MAX_ENTRIES; i++) {
        uint8_t *e = table + 32 + (size_t)i * 32;
        uint32_t off = ld_le32(e + 16);

        if (!memcmp(e, vhdx_guid_parent_locator.b, 16) && off == s->parent_item_off) {
            *entry = e;
        } else if (off > s->parent_item_off && off < limit) {
            limit = off;
        }
    }
    return limit;
}

/* Writes item (len bytes) as the locator, with its table entry, in one log entry. */
static int coroutine_fn write_locator(BlockDriverState *bs, const uint8_t *item, uint32_t len,
                                      Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint32_t old = s->parent_item_len, end = s->parent_item_off + (len > old ? len : old);
    size_t span = round_up_u64(end, VHDX_LOG_SECTOR);
    uint8_t *buf = malloc(span), *entry;
    int ret = buf ? vhdx_co_pread(bs->file, s->meta_offset, buf, span) : -ENOMEM;

    if (ret == 0 && s->parent_item_off + (uint64_t)len > item_limit(s, buf, &entry)) {
        error_setg(errp, "vhdx: the new parent locator of '%s' (%u bytes) does not fit before "
                   "the next metadata item", bs->filename, len);
        ret = -ENOSPC;
    } else if (ret == 0 && !entry) {
        error_setg(errp, "vhdx: '%s': the parent locator's metadata entry is gone",
                   bs->filename);
        ret = -EIO;
    } else if (ret == 0) {
        st_le32(entry + 20, len);
        memset(buf + s->parent_item_off, 0, end - s->parent_item_off);
        memcpy(buf + s->parent_item_off, item, len);
        ret = vhdx_log_start(bs);
        ret = ret ? ret : vhdx_log_write(bs, s->meta_offset, buf, span); /* flushes */
        if (ret < 0) {
            error_setg_errno(errp, ret, "vhdx: could not write the parent locator of '%s'",
                             bs->filename);
        }
    } else if (ret != -ENOSPC) {
        error_setg_errno(errp, ret, "vhdx: could not read the metadata of '%s'", bs->filename);
    }
    free(buf);
    return ret;
}

int coroutine_fn vhdx_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                             const char *backing_fmt, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint8_t *item = NULL;
    VhdxGuid g;
    long len;
    int ret = refuse(bs, backing_file, backing_fmt, errp);

    ret = ret ? ret : parent_guid(bs, backing_file, &g, errp);
    if (ret < 0) {
        return ret;
    }
    item = malloc(MAX_LOCATOR);
    len = item ? vhdx_build_parent_locator(item, MAX_LOCATOR, &g, backing_file, errp)
               : -ENOMEM;
    if (len < 0) {
        free(item);
        return (int)len;
    }
    co_mutex_lock(&s->lock);
    ret = write_locator(bs, item, (uint32_t)len, errp);
    if (ret == 0) {
        s->parent_item_len = (uint32_t)len;
        s->parent_linkage = g;
        s->has_linkage2 = false;
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", backing_file);
        snprintf(bs->backing_format, sizeof(bs->backing_format), "vhdx");
    }
    co_mutex_unlock(&s->lock);
    free(item);
    return ret;
}
