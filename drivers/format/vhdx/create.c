/*
 * Creating vhdx images with qemu-img's options: size, log_size,
 * block_size (0: 8 MiB, or 32 MiB above 1 TiB), block_state_zero,
 * subformat (dynamic | fixed), preallocation (fixed only), nocow; and
 * logical_sector_size (512 or 4096, a coblk extension). extent_size_hint
 * is accepted and ignored. backing_file (backing_fmt vhdx) makes a
 * differencing image: HasParent, a parent locator with parent_linkage (the
 * parent's DataWriteGuid) and relative_path (absolute_win32_path for an
 * absolute name), the parent's size unless size is given, the parent's
 * block size unless block_size is given, the parent's logical sector size,
 * every block NOT_PRESENT.
 *
 * Layout: file identifier, headers at 64/128 KiB, region tables at
 * 192/256 KiB, the log at 1 MiB, then 1 MiB of metadata, then the BAT
 * (rounded to 1 MiB), then the payload blocks of a fixed image.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

const BlockCreateOptDesc vhdx_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size; max of 64TB.", NULL },
    { "block_size", BLOCK_OPT_SIZE, "Block Size; min 1MB, max 256MB. 0 means auto-calculate "
      "based on image size.", "0" },
    { "block_state_zero", BLOCK_OPT_BOOL, "Force use of payload blocks of type 'ZERO'.", "on" },
    { "extent_size_hint", BLOCK_OPT_SIZE, "Extent size hint for the image file, 0 to disable",
      NULL },
    { "log_size", BLOCK_OPT_SIZE, "Log size; min 1MB.", "1M" },
    { "logical_sector_size", BLOCK_OPT_SIZE, "Logical sector size, 512 or 4096 (coblk)", "512" },
    { "nocow", BLOCK_OPT_BOOL, "Turn off copy-on-write (valid only on btrfs)", "off" },
    { "preallocation", BLOCK_OPT_STRING, "Preallocation mode (allowed values: off, falloc, "
      "full)", NULL },
    { "backing_file", BLOCK_OPT_STRING, "File name of the parent vhdx (makes a differencing "
      "image)", NULL },
    { "backing_fmt", BLOCK_OPT_STRING, "Format of the parent (vhdx only)", NULL },
    { "subformat", BLOCK_OPT_STRING, "VHDX format type, can be either 'dynamic' or 'fixed'. "
      "Default is 'dynamic'.", "dynamic" },
    { NULL, BLOCK_OPT_STRING, NULL, NULL },
};

static const char *const subformats[] = { "dynamic", "fixed" };
static const char *const preallocs[] = { "off", "falloc", "full" };

typedef struct VhdxCreate {
    uint64_t size, block_size, log_size, sector;
    bool zero_state, nocow;
    int fixed, prealloc;
    uint64_t meta_off, bat_off, bat_len, data_off, entries, payload, chunk_ratio;
    char *backing;          /* differencing: the parent's name as given */
    VhdxGuid linkage;       /* the parent's DataWriteGuid */
} VhdxCreate;

static int take_backing_opts(BlockOpts *o, VhdxCreate *c, Error **errp)
{
    char *fmt = NULL;

    if (bopts_take_str(o, "backing_file", &c->backing, errp) < 0 ||
        bopts_take_str(o, "backing_fmt", &fmt, errp) < 0) {
        free(fmt);
        return -EINVAL;
    }
    if (fmt && strcmp(fmt, "vhdx")) {
        error_setg(errp, "vhdx: the parent of a differencing image must be vhdx, not '%s'",
                   fmt);
        free(fmt);
        return -EINVAL;
    }
    free(fmt);
    if (c->backing && !c->backing[0]) {
        free(c->backing);
        c->backing = NULL;
    }
    return 0;
}

/* Opens the parent (relative to the new image) for its size, sector size and GUID. */
static int coroutine_fn open_parent(const char *filename, VhdxCreate *c, bool has_size,
                                    Error **errp)
{
    char dir[VHDX_PATH_MAX], path[VHDX_PATH_MAX];
    BlockOpts *o = bopts_new();
    BlockBackend *pblk;
    BDRVVhdxState *ps;
    int n;

    snprintf(dir, sizeof(dir), "%s", filename);
    n = c->backing[0] == '/' ? snprintf(path, sizeof(path), "%s", c->backing)
                             : snprintf(path, sizeof(path), "%s/%s", dirname(dir), c->backing);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        error_setg(errp, "vhdx: the parent name '%s' is too long", c->backing);
        return -ENAMETOOLONG;
    }
    bopts_set(o, "driver", "vhdx");
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", path);
    pblk = blk_new_open(NULL, o, BDRV_O_NO_BACKING, errp);
    if (!pblk) {
        error_prepend(errp, "vhdx: could not open the parent '%s': ", path);
        return -EINVAL;
    }
    ps = blk_bs(pblk)->opaque;
    c->linkage = ps->hdr.data_write_guid;
    c->sector = ps->logical_sector;
    if (!c->block_size) {
        c->block_size = ps->block_size;
    }
    if (!has_size) {
        c->size = ps->disk_size;
    }
    blk_unref(pblk);
    return 0;
}

static int take_opts(BlockOpts *o, VhdxCreate *c, bool *has_size, Error **errp)
{
    uint64_t hint;
    int ret = bopts_take_size(o, "size", 0, &c->size, errp);

    *has_size = ret > 0;
    if (ret < 0 || take_backing_opts(o, c, errp) < 0 ||
        bopts_take_size(o, "block_size", 0, &c->block_size, errp) < 0 ||
        bopts_take_size(o, "log_size", VHDX_MiB, &c->log_size, errp) < 0 ||
        bopts_take_size(o, "logical_sector_size", 512, &c->sector, errp) < 0 ||
        bopts_take_size(o, "extent_size_hint", 0, &hint, errp) < 0 ||
        bopts_take_bool(o, "block_state_zero", true, &c->zero_state, errp) < 0 ||
        bopts_take_bool(o, "nocow", false, &c->nocow, errp) < 0 ||
        bopts_take_enum(o, "subformat", subformats, 2, 0, &c->fixed, errp) < 0 ||
        bopts_take_enum(o, "preallocation", preallocs, 3, 0, &c->prealloc, errp) < 0) {
        return -EINVAL;
    }
    if (c->sector != 512 && c->sector != 4096) {
        error_setg(errp, "vhdx: logical_sector_size must be 512 or 4096");
        return -EINVAL;
    }
    if (c->backing && c->fixed) {
        error_setg(errp, "vhdx: a differencing image cannot be fixed");
        return -EINVAL;
    }
    if (!c->backing && !*has_size) {
        error_setg(errp, "vhdx: parameter 'size' is required");
        return -EINVAL;
    }
    return bopts_check_empty(o, "vhdx", errp);
}

/* The checks that need the size (from the options or the parent). */
static int check_size(VhdxCreate *c, Error **errp)
{
    if (!c->block_size) {
        c->block_size = c->size > VHDX_MiB * VHDX_MiB ? 32 * VHDX_MiB : 8 * VHDX_MiB;
    }
    if (c->size == 0 || c->size > VHDX_MAX_DISK || c->size % c->sector) {
        error_setg(errp, "vhdx: size %" PRIu64 " must be a multiple of %" PRIu64 " in 1..64 TiB",
                   c->size, c->sector);
        return -EINVAL;
    }
    if (!is_power_of_2_u64(c->block_size) || c->block_size < VHDX_MIN_BLOCK ||
        c->block_size > VHDX_MAX_BLOCK) {
        error_setg(errp, "vhdx: block_size %" PRIu64 " must be a power of two in 1M..256M",
                   c->block_size);
        return -EINVAL;
    }
    if (c->log_size < VHDX_MiB || c->log_size % VHDX_MiB || c->log_size > VHDX_MAX_LOG) {
        error_setg(errp, "vhdx: log_size %" PRIu64 " must be a multiple of 1M up to %" PRIu64,
                   c->log_size, VHDX_MAX_LOG);
        return -EINVAL;
    }
    if (c->prealloc && !c->fixed) {
        error_setg(errp, "vhdx: preallocation=%s needs subformat=fixed", preallocs[c->prealloc]);
        return -ENOTSUP;
    }
    return 0;
}

static void layout(VhdxCreate *c)
{
    c->chunk_ratio = ((1ULL << 23) * c->sector) / c->block_size;
    c->payload = div_round_up_u64(c->size, c->block_size);
    c->entries = c->backing ? div_round_up_u64(c->payload, c->chunk_ratio) * (c->chunk_ratio + 1)
                            : c->payload + (c->payload - 1) / c->chunk_ratio;
    c->meta_off = VHDX_MiB + c->log_size;
    c->bat_off = c->meta_off + VHDX_MiB;
    c->bat_len = round_up_u64(c->entries * 8, VHDX_MiB);
    c->data_off = c->bat_off + c->bat_len;
}

static void put_guid_entry(uint8_t *e, const VhdxGuid *g, uint64_t off, uint32_t len,
                           uint32_t flags)
{
    memcpy(e, g->b, 16);
    st_le64(e + 16, off);
    st_le32(e + 24, len);
    st_le32(e + 28, flags);
}

/* A metadata table entry: ItemId, Offset (u32), Length (u32), flags. */
static void put_meta_entry(uint8_t *e, const VhdxGuid *g, uint64_t off, uint32_t len,
                           uint32_t flags)
{
    memcpy(e, g->b, 16);
    st_le32(e + 16, (uint32_t)off);
    st_le32(e + 20, len);
    st_le32(e + 24, flags);
}

/* File identifier, headers and region tables: the first 1 MiB. */
static void build_head(const VhdxCreate *c, uint8_t *buf)
{
    static const char creator[] = "coblk";
    VhdxHeader h = { .seq = 1, .version = 1, .log_length = (uint32_t)c->log_size,
                     .log_offset = VHDX_MiB };
    uint8_t *r = buf + VHDX_REGION1_OFFSET;

    memcpy(buf, "vhdxfile", 8);
    for (size_t i = 0; i < sizeof(creator) - 1; i++) {
        st_le16(buf + 8 + i * 2, (uint16_t)creator[i]);
    }
    vhdx_guid_generate(&h.file_write_guid);
    vhdx_guid_generate(&h.data_write_guid);
    vhdx_header_encode(buf + VHDX_HEADER1_OFFSET, &h);
    h.seq = 2;
    vhdx_header_encode(buf + VHDX_HEADER2_OFFSET, &h);
    memcpy(r, "regi", 4);
    st_le32(r + 8, 2);
    put_guid_entry(r + 16, &vhdx_guid_bat, c->bat_off, (uint32_t)c->bat_len, 1);
    put_guid_entry(r + 48, &vhdx_guid_metadata, c->meta_off, (uint32_t)VHDX_MiB, 1);
    st_le32(r + 4, vhdx_checksum(r, VHDX_REGION_SIZE, 4));
    memcpy(buf + VHDX_REGION2_OFFSET, r, VHDX_REGION_SIZE);
}

/* The metadata region (1 MiB): table, the five system items and a parent locator. */
static int build_metadata(const VhdxCreate *c, uint8_t *m, Error **errp)
{
    static const uint32_t req = 4, vdisk = 2;
    const uint32_t base = 64 * 1024, loc = base + 64;
    VhdxGuid page83;

    memcpy(m, "metadata", 8);
    st_le16(m + 10, c->backing ? 6 : 5);
    if (c->backing) {
        long len = vhdx_build_parent_locator(m + loc, VHDX_MiB - loc, &c->linkage, c->backing,
                                             errp);

        if (len < 0) {
            return (int)len;
        }
        put_meta_entry(m + 192, &vhdx_guid_parent_locator, loc, (uint32_t)len, req | vdisk);
    }
    put_meta_entry(m + 32, &vhdx_guid_file_params, base, 8, req);
    put_meta_entry(m + 64, &vhdx_guid_disk_size, base + 8, 8, req | vdisk);
    put_meta_entry(m + 96, &vhdx_guid_page83, base + 16, 16, req | vdisk);
    put_meta_entry(m + 128, &vhdx_guid_logical_sector, base + 32, 4, req | vdisk);
    put_meta_entry(m + 160, &vhdx_guid_physical_sector, base + 36, 4, req | vdisk);
    st_le32(m + base, (uint32_t)c->block_size);
    /* LeaveBlocksAllocated (fixed, as qemu-img), HasParent */
    st_le32(m + base + 4, c->backing ? 2 : c->fixed ? 1 : 0);
    st_le64(m + base + 8, c->size);
    vhdx_guid_generate(&page83);
    memcpy(m + base + 16, page83.b, 16);
    st_le32(m + base + 32, (uint32_t)c->sector);
    st_le32(m + base + 36, (uint32_t)c->sector);
    return 0;
}

static uint64_t *build_bat(const VhdxCreate *c)
{
    uint64_t *bat = calloc(c->bat_len / 8, 8);

    if (!bat) {
        return NULL;
    }
    for (uint64_t b = 0; b < c->payload; b++) {
        /* A differencing image's blocks come from the parent. */
        uint64_t e = c->zero_state && !c->backing ? VHDX_PAYLOAD_ZERO
                                                  : VHDX_PAYLOAD_NOT_PRESENT;

        if (c->fixed && !c->zero_state) {
            e = (c->data_off + b * c->block_size) | VHDX_PAYLOAD_FULLY_PRESENT;
        }
        st_le64(&bat[b + b / c->chunk_ratio], e);
    }
    return bat;
}

static int coroutine_fn put(BlockBackend *blk, uint64_t off, const void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, len);
    return blk_co_pwritev(blk, (int64_t)off, (int64_t)len, &qiov, 0);
}

static int coroutine_fn write_image(const VhdxCreate *c, BlockBackend *blk, Error **errp)
{
    uint8_t *head = calloc(1, VHDX_MiB), *meta = calloc(1, VHDX_MiB);
    uint64_t *bat = build_bat(c);
    int ret = -ENOMEM;

    if (head && meta && bat) {
        build_head(c, head);
        ret = build_metadata(c, meta, errp);
        if (ret < 0) {
            goto out;
        }
        ret = put(blk, 0, head, VHDX_MiB);
        if (ret == 0) {
            ret = put(blk, c->meta_off, meta, VHDX_MiB);
        }
        if (ret == 0) {
            ret = put(blk, c->bat_off, bat, c->bat_len);
        }
        if (ret == 0) {
            ret = blk_co_flush(blk);
        }
    }
out:
    free(head);
    free(meta);
    free(bat);
    return ret;
}

int coroutine_fn vhdx_co_create_opts(const BlockDriver *drv, const char *filename,
                                     BlockOpts *options, Error **errp)
{
    VhdxCreate c = { 0 };
    BlockOpts *o;
    BlockDriverState *bs;
    BlockBackend *blk;
    char num[32];
    bool has_size;
    int ret = take_opts(options, &c, &has_size, errp);

    if (ret == 0 && c.backing) {
        ret = open_parent(filename, &c, has_size, errp);
    }
    ret = ret ? ret : check_size(&c, errp);
    if (ret < 0) {
        free(c.backing);
        return ret;
    }
    layout(&c);
    o = bopts_new();
    snprintf(num, sizeof(num), "%" PRIu64, c.fixed ? c.data_off + c.payload * c.block_size
                                                  : c.data_off);
    bopts_set(o, "size", num);
    bopts_set(o, "preallocation", preallocs[c.prealloc]);
    if (c.nocow) {
        bopts_set(o, "nocow", "on");
    }
    ret = bdrv_create("file", filename, o, errp);
    if (ret < 0) {
        free(c.backing);
        return ret;
    }
    o = bopts_new();
    bopts_set(o, "driver", "file");
    bopts_set(o, "filename", filename);
    bs = bdrv_open(NULL, o, BDRV_O_RDWR | BDRV_O_PROTOCOL, errp);
    blk = bs ? blk_new_with_bs(bs, errp) : NULL;
    if (bs) {
        bdrv_unref(bs);
    }
    if (!blk) {
        free(c.backing);
        return -EIO;
    }
    ret = write_image(&c, blk, errp);
    blk_unref(blk);
    free(c.backing);
    if (ret < 0 && !(errp && *errp)) {
        error_setg_errno(errp, -ret, "vhdx: could not write '%s'", filename);
    }
    return ret;
}
