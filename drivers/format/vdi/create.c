/*
 * vdi: image creation (dynamic or static).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/fmt-util.h"
#include "drivers/format/vdi/vdi-int.h"

const BlockCreateOptDesc vdi_create_opts[] = {
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

/*
 * The data area starts at the next multiple of VDI_DATA_ALIGN after the map
 * (the header allows padding between them; the gap is a hole), so that every
 * block, and every aligned guest request in it, is aligned in the file too.
 * With data right after the map (at 1536 for a 256 MiB image, as qemu-img
 * creates it) each 64 KiB write straddles two page-cache folios: raw written
 * at that offset costs about 20% more system time (bench/README.md, vdi).
 * The padding also lets a resize grow the map in place.
 */
#define VDI_DATA_ALIGN (1u << 20)

static int coroutine_fn vdi_write_new(BlockBackend *blk, uint64_t size, bool is_static,
                                      Error **errp)
{
    uint32_t blocks = (uint32_t)div_round_up_u64(size, VDI_BLOCK_SIZE);
    uint32_t map_bytes = (uint32_t)round_up_u64((uint64_t)blocks * 4, VDI_SECTOR);
    uint32_t meta = VDI_HDR_BUF + map_bytes;
    uint32_t off_data = (uint32_t)round_up_u64(meta, VDI_DATA_ALIGN);
    uint8_t *buf = calloc(1, (size_t)meta);
    int ret;

    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    vdi_build_header(buf, size, blocks, is_static, off_data);
    for (uint32_t b = 0; b < blocks; b++) {
        st_le32(buf + VDI_HDR_BUF + (size_t)b * 4, is_static ? b : VDI_FREE);
    }
    ret = fmt_blk_co_pwrite(blk, 0, meta, buf);
    free(buf);
    if (ret == 0) {
        ret = blk_co_truncate(blk, off_data + (is_static ? (int64_t)blocks * VDI_BLOCK_SIZE : 0),
                              true, PREALLOC_MODE_OFF, 0, errp);
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

int coroutine_fn vdi_co_create_opts(const BlockDriver *drv, const char *filename,
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
