/*
 * vpc: setting the parent file name of a differencing disk.
 *
 * A differencing disk names its parent in the dynamic header (the parent's
 * name as UTF-16BE, and eight locator entries pointing at path data
 * elsewhere in the file). The header is 1024 bytes with one checksum over
 * both sectors, so it cannot be rewritten in place without a window where a
 * torn write leaves a header that fails its checksum. The footer (one
 * sector) names the header's place, so the new name is written copy-on-write:
 *
 *   1. at the end of the data (over the footer), the new locators' data
 *      (W2ru: the name relative to the image, MacX: a file:// URL) and a
 *      new dynamic header (same BAT, parent UUID and time; new name and
 *      locators); flush;
 *   2. the footer copy at offset 0, then the footer after the new header,
 *      both pointing at the new header; flush.
 *
 * A crash in step 1 leaves the copy at 0, the old header and the old
 * locators untouched (the last sector holds no footer, so every reader
 * takes the copy at 0). A crash in step 2 leaves one or both footers
 * pointing at the new header, which is durable: each reader sees a
 * consistent disk. The old header and locator data stay in
 * the file, unused. On open, vpc_note_meta_end() keeps new blocks after the
 * header and the locators' data wherever they are.
 *
 * Removing the parent (which would turn the disk into a dynamic one whose
 * unwritten sectors no longer read the parent's data) and parents of another
 * format than vpc are refused.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/vpc-int.h"

void vpc_note_meta_end(BDRVVpcState *s)
{
    uint64_t end = (uint64_t)s->free_off;
    uint64_t dh = ld_be64(s->footer + FT_DATA_OFFSET);

    if (s->type == VHD_FIXED) {
        return;
    }
    /* The header lies inside the file (checked on open): no overflow. */
    end = dh + VHD_DYNHDR_SIZE > end ? dh + VHD_DYNHDR_SIZE : end;
    for (int i = 0; i < VHD_LOCATORS && s->type == VHD_DIFF; i++) {
        const uint8_t *e = s->dynhdr + DH_LOCATORS + i * DH_LOCATOR_SIZE;
        uint32_t len = ld_be32(e + 8);
        uint64_t off = ld_be64(e + 16);

        /* vpc_read_parent checked that [off, off + len) lies in the file. */
        if (ld_be32(e) != 0 && len != 0 && off + round_up_u64(len, VHD_SECTOR) > end) {
            end = off + round_up_u64(len, VHD_SECTOR);
        }
    }
    s->free_off = (int64_t)end;
}

/* The parent name resolved against the image's folder (absolute names stay). */
static void vpc_parent_path_for(BlockDriverState *bs, const char *name, char *out, size_t cap)
{
    char dir[VHD_PATH_MAX];

    if (name[0] == '/') {
        snprintf(out, cap, "%s", name);
        return;
    }
    snprintf(dir, sizeof(dir), "%s", bs->filename);
    snprintf(out, cap, "%s/%s", dirname(dir), name);
}

static int vpc_parent_refuse(BlockDriverState *bs, const char *backing_file,
                             const char *backing_fmt, Error **errp)
{
    BDRVVpcState *s = bs->opaque;

    if (s->type != VHD_DIFF) {
        error_setg(errp, "vpc: '%s' is not a differencing disk: setting a parent file name is "
                   "not supported (create a differencing disk with backing_file)",
                   bs->filename);
        return -ENOTSUP;
    }
    if (!backing_file || !backing_file[0]) {
        error_setg(errp, "vpc: removing the parent of the differencing disk '%s' is not "
                   "supported (its unwritten sectors are the parent's)", bs->filename);
        return -ENOTSUP;
    }
    if (backing_fmt && strcmp(backing_fmt, "vpc") != 0) {
        error_setg(errp, "vpc: the parent of a differencing disk must be vpc, not '%s'",
                   backing_fmt);
        return -ENOTSUP;
    }
    if (strlen(backing_file) >= VHD_PATH_MAX) {
        error_setg(errp, "vpc: parent file name of %zu bytes is too long (limit %d)",
                   strlen(backing_file), VHD_PATH_MAX - 1);
        return -ENAMETOOLONG;
    }
    return 0;
}

/*
 * Builds, in buf (zeroed, VPC_LOCATOR_AREA + 1024 bytes to be written at
 * s->free_off), the locators' data and the new header; footer gets the new
 * footer (sealed when written).
 */
static int vpc_build_new_meta(BlockDriverState *bs, const char *backing_file, uint8_t *buf,
                              uint8_t *footer, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint64_t at = (uint64_t)s->free_off, dh_at = at + VPC_LOCATOR_AREA;
    uint8_t *dh = buf + VPC_LOCATOR_AREA;
    char path[VHD_PATH_MAX * 2];
    int ret;

    vpc_parent_path_for(bs, backing_file, path, sizeof(path));
    memcpy(dh, s->dynhdr, VHD_DYNHDR_SIZE);
    memset(dh + DH_PARENT_NAME, 0, 512);
    memset(dh + DH_LOCATORS, 0, VHD_LOCATORS * DH_LOCATOR_SIZE);
    ret = vpc_build_locators(dh, buf, VPC_LOCATOR_AREA, at, backing_file, path, errp);
    if (ret < 0) {
        return ret;
    }
    vpc_seal_dynhdr(dh);
    memcpy(footer, s->footer, VHD_FOOTER_SIZE);
    st_be64(footer + FT_DATA_OFFSET, dh_at);
    return 0;
}

int coroutine_fn vpc_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                            const char *backing_fmt, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    size_t len = VPC_LOCATOR_AREA + VHD_DYNHDR_SIZE;
    uint8_t footer[VHD_FOOTER_SIZE], old_footer[VHD_FOOTER_SIZE];
    int64_t old_free = s->free_off;
    uint8_t *buf;
    int r, ret = vpc_parent_refuse(bs, backing_file, backing_fmt, errp);

    if (ret < 0) {
        return ret;
    }
    buf = calloc(1, len);
    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    co_rwlock_wrlock(&s->move_lock);
    co_mutex_lock(&s->alloc_lock);
    ret = vpc_build_new_meta(bs, backing_file, buf, footer, errp);
    if (ret == 0) {
        /* 1. Locators and header, durable before any footer names them. */
        ret = fmt_co_pwrite(bs->file, s->free_off, (int64_t)len, buf, 0);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
        if (ret == 0) {
            /* 2. The footers (the copy at 0, then the one at the new end). */
            memcpy(old_footer, s->footer, VHD_FOOTER_SIZE);
            memcpy(s->footer, footer, VHD_FOOTER_SIZE);
            s->free_off += (int64_t)len;
            ret = vpc_write_footers(bs);
            ret = ret ? ret : bdrv_co_flush(bs->file->bs);
            if (ret < 0) {
                memcpy(s->footer, old_footer, VHD_FOOTER_SIZE);
                s->free_off = old_free;
            }
        }
        if (ret < 0) {
            error_setg_errno(errp, ret, "vpc: could not write the new parent locators of '%s'",
                             bs->filename);
        }
    }
    /* Locators and header were written at the end (or failed to): read its length again. */
    r = fmt_co_grow_reset(bs->file, &s->grow);
    if (r < 0 && ret == 0) {
        ret = r;
        error_setg_errno(errp, r, "Could not get the size of '%s'", bs->filename);
    }
    if (ret == 0) {
        memcpy(s->dynhdr, buf + VPC_LOCATOR_AREA, VHD_DYNHDR_SIZE);
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", backing_file);
        snprintf(bs->backing_format, sizeof(bs->backing_format), "vpc");
    }
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->move_lock);
    free(buf);
    return ret;
}
