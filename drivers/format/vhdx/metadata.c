/*
 * vhdx: the metadata region: its table and the system items (file
 * parameters, virtual disk size, page 83 data, logical and physical sector
 * size).
 *
 * Limits: signature "metadata", at most 2047 entries; every known item lies
 * past the 64 KiB table and inside the region and has its specified size;
 * an unknown item marked required is refused; block size a power of two in
 * 1..256 MiB; sector sizes 512 or 4096; virtual size a non-zero multiple
 * of the logical sector size, at most 64 TiB. A differencing image
 * (HasParent) has a parent locator item, parsed in parent.c; a locator in
 * an image without HasParent is ignored.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define META_TABLE_SIZE (64 * VHDX_KiB)
#define META_REQUIRED (1U << 2)

enum { ITEM_PARAMS, ITEM_SIZE, ITEM_PAGE83, ITEM_LOGICAL, ITEM_PHYSICAL, ITEM_PARENT, N_ITEMS };

static const struct {
    const VhdxGuid *guid;
    uint32_t size;       /* 0: any */
    const char *name;
    bool required;
} items[N_ITEMS] = {
    [ITEM_PARAMS] = { &vhdx_guid_file_params, 8, "file parameters", true },
    [ITEM_SIZE] = { &vhdx_guid_disk_size, 8, "virtual disk size", true },
    [ITEM_PAGE83] = { &vhdx_guid_page83, 16, "page 83 data", false },
    [ITEM_LOGICAL] = { &vhdx_guid_logical_sector, 4, "logical sector size", true },
    [ITEM_PHYSICAL] = { &vhdx_guid_physical_sector, 4, "physical sector size", true },
    [ITEM_PARENT] = { &vhdx_guid_parent_locator, 0, "parent locator", false },
};

typedef struct MetaItems {
    uint8_t data[N_ITEMS][16];
    bool found[N_ITEMS];
} MetaItems;

static int read_item(BlockDriverState *bs, const uint8_t *e, MetaItems *m, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint32_t off = ld_le32(e + 16), len = ld_le32(e + 20), flags = ld_le32(e + 24);

    for (int i = 0; i < N_ITEMS; i++) {
        if (memcmp(e, items[i].guid->b, 16)) {
            continue;
        }
        if (off < META_TABLE_SIZE || !range_within(off, len, s->meta_length) ||
            (items[i].size && len != items[i].size)) {
            error_setg(errp, "vhdx: %s: metadata item '%s' at %u of %u bytes is misplaced or "
                       "has the wrong size", bs->filename, items[i].name, off, len);
            return -EINVAL;
        }
        m->found[i] = true;
        if (i == ITEM_SIZE) {
            s->size_item_off = off;
        } else if (i == ITEM_PARENT) {
            s->parent_item_off = off;
            s->parent_item_len = len;
        }
        if (items[i].size &&
            vhdx_pread_sync(bs->file, s->meta_offset + off, m->data[i], items[i].size) < 0) {
            error_setg(errp, "vhdx: %s: could not read metadata item '%s'", bs->filename,
                       items[i].name);
            return -EIO;
        }
        return 0;
    }
    if (flags & META_REQUIRED) {
        error_setg(errp, "vhdx: %s: unknown required metadata item", bs->filename);
        return -ENOTSUP;
    }
    return 0;
}

static int check_items(BlockDriverState *bs, MetaItems *m, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint32_t pflags;

    for (int i = 0; i < N_ITEMS; i++) {
        if (items[i].required && !m->found[i]) {
            error_setg(errp, "vhdx: %s: the metadata lacks the %s item", bs->filename,
                       items[i].name);
            return -EINVAL;
        }
    }
    s->block_size = ld_le32(m->data[ITEM_PARAMS]);
    pflags = ld_le32(m->data[ITEM_PARAMS] + 4);
    s->leave_allocated = pflags & 1;
    s->has_parent = (pflags & 2) != 0;
    s->disk_size = ld_le64(m->data[ITEM_SIZE]);
    s->logical_sector = ld_le32(m->data[ITEM_LOGICAL]);
    s->physical_sector = ld_le32(m->data[ITEM_PHYSICAL]);
    memcpy(s->page83.b, m->data[ITEM_PAGE83], 16);
    if (s->has_parent && !m->found[ITEM_PARENT]) {
        error_setg(errp, "vhdx: %s: a differencing image (HasParent) without a parent locator",
                   bs->filename);
        return -EINVAL;
    }
    if (!is_power_of_2_u64(s->block_size) || s->block_size < VHDX_MIN_BLOCK ||
        s->block_size > VHDX_MAX_BLOCK) {
        error_setg(errp, "vhdx: %s: block size %u is not a power of two in 1 MiB..256 MiB",
                   bs->filename, s->block_size);
        return -EINVAL;
    }
    if ((s->logical_sector != 512 && s->logical_sector != 4096) ||
        (s->physical_sector != 512 && s->physical_sector != 4096)) {
        error_setg(errp, "vhdx: %s: sector sizes %u/%u are not 512 or 4096", bs->filename,
                   s->logical_sector, s->physical_sector);
        return -EINVAL;
    }
    if (s->disk_size == 0 || s->disk_size > VHDX_MAX_DISK || s->disk_size % s->logical_sector) {
        error_setg(errp, "vhdx: %s: virtual disk size %" PRIu64 " is not a multiple of %u in "
                   "1..64 TiB", bs->filename, s->disk_size, s->logical_sector);
        return -EINVAL;
    }
    return 0;
}

int vhdx_read_metadata(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint8_t *buf = malloc(META_TABLE_SIZE);
    MetaItems m;
    uint16_t count;
    int ret = -EINVAL;

    memset(&m, 0, sizeof(m));
    if (!buf) {
        return -ENOMEM;
    }
    if (s->meta_length < META_TABLE_SIZE ||
        vhdx_pread_sync(bs->file, s->meta_offset, buf, META_TABLE_SIZE) < 0 ||
        memcmp(buf, "metadata", 8)) {
        error_setg(errp, "vhdx: %s: bad metadata table signature", bs->filename);
        goto out;
    }
    count = ld_le16(buf + 10);
    if (count > VHDX_MAX_ENTRIES) {
        error_setg(errp, "vhdx: %s: metadata entry count %u exceeds %d", bs->filename, count,
                   VHDX_MAX_ENTRIES);
        goto out;
    }
    for (uint16_t i = 0; i < count; i++) {
        ret = read_item(bs, buf + 32 + (size_t)i * 32, &m, errp);
        if (ret < 0) {
            goto out;
        }
    }
    ret = check_items(bs, &m, errp);
    if (ret == 0 && s->has_parent) {
        ret = vhdx_read_parent_locator(bs, s->parent_item_off, s->parent_item_len, errp);
    }
out:
    free(buf);
    return ret;
}
