/*
 * vdi: driver info and the VD-style metadata: UUIDs, geometry, comment.
 */
#include <errno.h>
#include <string.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

int vdi_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVVdiState *s = bs->opaque;

    bdi->cluster_size = s->block_size;
    return 0;
}

int vdi_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16])
{
    BDRVVdiState *s = bs->opaque;

    if ((unsigned)kind > BLOCK_UUID_PARENT_MODIFICATION) {
        return -EINVAL;
    }
    vdi_uuid_swap(uuid, s->hdr + VDI_OFF_UUID + 16 * kind);
    return 0;
}

int coroutine_fn vdi_co_set_uuid(BlockDriverState *bs, BlockUuidKind kind,
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

int vdi_get_geometry(BlockDriverState *bs, BlockGeometry *geo)
{
    BDRVVdiState *s = bs->opaque;

    geo->cylinders = ld_le32(s->hdr + VDI_OFF_CYLS);
    geo->heads = ld_le32(s->hdr + VDI_OFF_HEADS);
    geo->sectors = ld_le32(s->hdr + VDI_OFF_SECS);
    return 0;
}

int coroutine_fn vdi_co_set_geometry(BlockDriverState *bs, const BlockGeometry *geo,
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

int vdi_get_comment(BlockDriverState *bs, char **out)
{
    BDRVVdiState *s = bs->opaque;

    *out = strndup((const char *)s->hdr + VDI_OFF_COMMENT, VDI_COMMENT_MAX - 1);
    return *out ? 0 : -ENOMEM;
}

int coroutine_fn vdi_co_set_comment(BlockDriverState *bs, const char *comment,
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
