/*
 * The "vpc" format driver: Microsoft Virtual Hard Disk (VHD) images, after
 * the Virtual Hard Disk Image Format Specification: fixed, dynamic and
 * differencing disks.
 *
 * Layout (all fields big-endian):
 *   footer (512 bytes): "conectix", features, version 1.0, data offset (the
 *        dynamic header, or ~0 for fixed disks), timestamp (seconds since
 *        2000-01-01 UTC), creator application / version / host OS, original
 *        and current size, CHS geometry (u16 cylinders, u8 heads, u8 sectors),
 *        disk type (2 fixed, 3 dynamic, 4 differencing), checksum (ones'
 *        complement of the byte sum without the checksum), unique id, saved
 *        state. A fixed disk is its data followed by the footer; a dynamic or
 *        differencing disk has a copy of the footer at offset 0 and the
 *        footer at its end.
 *   dynamic header (1024 bytes): "cxsparse", data offset, BAT offset, version,
 *        BAT entries, block size, checksum, parent unique id, parent
 *        timestamp, parent name (UTF-16BE, 512 bytes), 8 parent locators of
 *        24 bytes (platform code, data space, data length, data offset).
 *   BAT: one u32 per block, the sector of the block or ~0 (not allocated).
 *   block: a sector bitmap (one bit per sector, MSB first, padded to 512
 *        bytes; a set bit means the sector is in this file) then the data.
 *
 * Dynamic disks read allocated blocks whole (their blocks are zero-filled
 * when allocated and get an all-ones bitmap, as Virtual PC and QEMU do);
 * differencing disks read each sector from this file or from the parent
 * (the backing file) by its bitmap bit.
 *
 * The guest size: Virtual PC and QEMU ("vpc ", "qemu") size disks by their
 * CHS geometry, other creators (Hyper-V, Disk2vhd, coblk) by the current size
 * field; a disk with the largest geometry (65535/16/255) always by the field.
 *
 * Crash safety: a new block (bitmap and data) and the footer after it are
 * written and flushed before the BAT entry that points at the block; a
 * differencing sector's data is flushed before its bitmap bit is set.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "block/block-int.h"
#include "drivers/drivers.h"
#include "block/bytes.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/vpc-int.h"


/* ---------------------------------------------------------------------- */
/* Checksums, geometry, text */

static uint32_t vpc_checksum(const uint8_t *buf, size_t len, size_t skip)
{
    uint32_t sum = 0;

    for (size_t i = 0; i < len; i++) {
        if (i < skip || i >= skip + 4) {
            sum += buf[i];
        }
    }
    return ~sum;
}

/* CHS geometry for a sector count, as the VHD specification's appendix computes it. */
void vpc_chs(uint64_t sectors, uint32_t *cyls, uint32_t *heads, uint32_t *spt)
{
    uint64_t cth;

    if (sectors > VHD_MAX_CHS_SECTORS) {
        sectors = VHD_MAX_CHS_SECTORS;
    }
    if (sectors >= 65535ULL * 16 * 63) {
        *spt = 255;
        *heads = 16;
        cth = sectors / *spt;
    } else {
        *spt = 17;
        cth = sectors / *spt;
        *heads = (uint32_t)((cth + 1023) / 1024);
        if (*heads < 4) {
            *heads = 4;
        }
        if (cth >= *heads * 1024ULL || *heads > 16) {
            *spt = 31;
            *heads = 16;
            cth = sectors / *spt;
        }
        if (cth >= *heads * 1024ULL) {
            *spt = 63;
            *heads = 16;
            cth = sectors / *spt;
        }
    }
    *cyls = (uint32_t)(cth / *heads);
}

/* Whether the creator sizes the disk by geometry (Virtual PC, old QEMU). */
static bool vpc_sized_by_chs(const uint8_t *footer)
{
    return !memcmp(footer + FT_CREATOR, "vpc ", 4) || !memcmp(footer + FT_CREATOR, "qemu", 4);
}

static uint64_t vpc_chs_sectors(const uint8_t *footer)
{
    return (uint64_t)ld_be16(footer + FT_CYLS) * footer[FT_HEADS] * footer[FT_SECS];
}

/* Appends the code point c as UTF-8; false when out grows past cap. */
static bool utf8_put(char *out, size_t *n, size_t cap, uint32_t c)
{
    uint8_t b[4];
    size_t k;

    if (c < 0x80) {
        b[0] = (uint8_t)c, k = 1;
    } else if (c < 0x800) {
        b[0] = (uint8_t)(0xc0 | c >> 6), b[1] = (uint8_t)(0x80 | (c & 0x3f)), k = 2;
    } else if (c < 0x10000) {
        b[0] = (uint8_t)(0xe0 | c >> 12), b[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3f));
        b[2] = (uint8_t)(0x80 | (c & 0x3f)), k = 3;
    } else {
        b[0] = (uint8_t)(0xf0 | c >> 18), b[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3f));
        b[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3f)), b[3] = (uint8_t)(0x80 | (c & 0x3f)), k = 4;
    }
    if (*n + k >= cap) {
        return false;
    }
    memcpy(out + *n, b, k);
    *n += k;
    return true;
}

/* UTF-16 (big- or little-endian) to UTF-8, stopping at NUL; false if invalid or too long. */
static bool utf16_to_utf8(const uint8_t *in, size_t len, bool be, char *out, size_t cap)
{
    size_t n = 0;

    for (size_t i = 0; i + 1 < len; i += 2) {
        uint32_t c = be ? ld_be16(in + i) : ld_le16(in + i);

        if (c == 0) {
            break;
        }
        if (c >= 0xd800 && c < 0xdc00 && i + 3 < len) {
            uint32_t lo = be ? ld_be16(in + i + 2) : ld_le16(in + i + 2);

            if (lo < 0xdc00 || lo >= 0xe000) {
                return false;
            }
            c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
            i += 2;
        } else if (c >= 0xd800 && c < 0xe000) {
            return false;
        }
        if (!utf8_put(out, &n, cap, c)) {
            return false;
        }
    }
    out[n] = '\0';
    return true;
}

long utf8_to_utf16(const char *in, bool be, uint8_t *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)in;
    size_t n = 0;

    while (*p) {
        uint32_t c;
        int more;

        if (*p < 0x80) {
            c = *p, more = 0;
        } else if ((*p & 0xe0) == 0xc0) {
            c = *p & 0x1f, more = 1;
        } else if ((*p & 0xf0) == 0xe0) {
            c = *p & 0x0f, more = 2;
        } else if ((*p & 0xf8) == 0xf0) {
            c = *p & 0x07, more = 3;
        } else {
            return -1;
        }
        p++;
        for (int k = 0; k < more; k++, p++) {
            if ((*p & 0xc0) != 0x80) {
                return -1;
            }
            c = c << 6 | (*p & 0x3f);
        }
        if (c >= 0x10000) {
            uint32_t hi = 0xd800 + ((c - 0x10000) >> 10), lo = 0xdc00 + ((c - 0x10000) & 0x3ff);

            if (n + 4 > cap) {
                return -1;
            }
            be ? st_be16(out + n, (uint16_t)hi) : st_le16(out + n, (uint16_t)hi);
            be ? st_be16(out + n + 2, (uint16_t)lo) : st_le16(out + n + 2, (uint16_t)lo);
            n += 4;
            continue;
        }
        if (n + 2 > cap) {
            return -1;
        }
        be ? st_be16(out + n, (uint16_t)c) : st_le16(out + n, (uint16_t)c);
        n += 2;
    }
    return (long)n;
}

/* ---------------------------------------------------------------------- */
/* Metadata I/O */

void vpc_seal_footer(uint8_t *footer)
{
    st_be32(footer + FT_CHECKSUM, vpc_checksum(footer, VHD_FOOTER_SIZE, FT_CHECKSUM));
}

void vpc_seal_dynhdr(uint8_t *h)
{
    st_be32(h + DH_CHECKSUM, vpc_checksum(h, VHD_DYNHDR_SIZE, DH_CHECKSUM));
}

/* Writes the footer at the end (and its copy at 0 for sparse disks). */
int coroutine_fn vpc_write_footers(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;
    int64_t end = s->type == VHD_FIXED ? s->size : s->free_off;
    int ret;

    vpc_seal_footer(s->footer);
    if (s->type != VHD_FIXED) {
        ret = fmt_co_pwrite(bs->file, 0, VHD_FOOTER_SIZE, s->footer, 0);
        if (ret < 0) {
            return ret;
        }
    }
    return fmt_co_pwrite(bs->file, end, VHD_FOOTER_SIZE, s->footer, 0);
}

static int coroutine_fn vpc_write_dynhdr(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;

    vpc_seal_dynhdr(s->dynhdr);
    return fmt_co_pwrite(bs->file, (int64_t)ld_be64(s->footer + FT_DATA_OFFSET),
                         VHD_DYNHDR_SIZE, s->dynhdr, 0);
}

/* ---------------------------------------------------------------------- */
/* Open */

static int vpc_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return buf_size >= 8 && !memcmp(buf, "conectix", 8) ? 100 : 0;
}

/* Reads the footer: the last sector, else (sparse disks) the copy at 0. */
static int coroutine_fn vpc_read_footer(BlockDriverState *bs, int64_t file_len, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t sum;
    int ret;

    if (file_len < VHD_FOOTER_SIZE) {
        error_setg(errp, "'%s' is too short for a VHD footer (%lld bytes)", bs->filename,
                   (long long)file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, file_len - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE, s->footer);
    if (ret == 0 && memcmp(s->footer, "conectix", 8) != 0) {
        ret = fmt_co_pread(bs->file, 0, VHD_FOOTER_SIZE, s->footer);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the footer of '%s'", bs->filename);
        return ret;
    }
    if (memcmp(s->footer, "conectix", 8) != 0) {
        error_setg(errp, "'%s' has no VHD footer (cookie \"conectix\" not found)",
                   bs->filename);
        return -EINVAL;
    }
    sum = vpc_checksum(s->footer, VHD_FOOTER_SIZE, FT_CHECKSUM);
    if (FMT_VERIFY_CHECKSUMS && sum != ld_be32(s->footer + FT_CHECKSUM)) {
        error_setg(errp, "'%s': footer checksum 0x%08x does not match the computed 0x%08x",
                   bs->filename, ld_be32(s->footer + FT_CHECKSUM), sum);
        return -EINVAL;
    }
    return 0;
}

/*
 * The guest size from the footer. Limits: at most 2040 GiB (the format's
 * maximum); a fixed disk's data (size bytes) must be in the file.
 */
static int vpc_take_size(BlockDriverState *bs, int64_t file_len, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint64_t chs = vpc_chs_sectors(s->footer);
    uint64_t size = ld_be64(s->footer + FT_CUR_SIZE);

    if (vpc_sized_by_chs(s->footer) && chs != VHD_MAX_CHS_SECTORS) {
        size = chs * VHD_SECTOR;
    }
    if (size > VHD_MAX_SIZE) {
        error_setg(errp, "'%s': disk size %llu exceeds the maximum %llu", bs->filename,
                   (unsigned long long)size, (unsigned long long)VHD_MAX_SIZE);
        return -EINVAL;
    }
    if (s->type == VHD_FIXED && size > (uint64_t)file_len - VHD_FOOTER_SIZE) {
        error_setg(errp, "'%s': fixed disk of %llu bytes is larger than its file (%lld bytes)",
                   bs->filename, (unsigned long long)size, (long long)file_len);
        return -EINVAL;
    }
    s->size = (int64_t)size;
    return 0;
}

/*
 * Checks the dynamic header. Limits: block size a power of two in
 * [4 KiB, 256 MiB]; BAT entries enough for the size and at most
 * VHD_BAT_MAX; the header and the BAT inside the file.
 */
static int vpc_check_dynhdr(BlockDriverState *bs, int64_t file_len, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t *h = s->dynhdr;
    uint32_t sum = vpc_checksum(h, VHD_DYNHDR_SIZE, DH_CHECKSUM);
    uint64_t need;

    if (memcmp(h, "cxsparse", 8) != 0) {
        error_setg(errp, "'%s': dynamic header has no \"cxsparse\" cookie", bs->filename);
        return -EINVAL;
    }
    if (FMT_VERIFY_CHECKSUMS && sum != ld_be32(h + DH_CHECKSUM)) {
        error_setg(errp, "'%s': dynamic header checksum 0x%08x does not match the computed "
                   "0x%08x", bs->filename, ld_be32(h + DH_CHECKSUM), sum);
        return -EINVAL;
    }
    s->block_size = ld_be32(h + DH_BLOCK_SIZE);
    s->bat_entries = ld_be32(h + DH_MAX_ENTRIES);
    s->bat_offset = ld_be64(h + DH_TABLE_OFFSET);
    if (!is_power_of_2_u64(s->block_size) || s->block_size < VHD_BLOCK_MIN ||
        s->block_size > VHD_BLOCK_MAX) {
        error_setg(errp, "'%s': block size %u is not a power of two in [%u, %u]", bs->filename,
                   s->block_size, VHD_BLOCK_MIN, VHD_BLOCK_MAX);
        return -EINVAL;
    }
    need = div_round_up_u64((uint64_t)s->size, s->block_size);
    if (s->bat_entries < need || s->bat_entries > VHD_BAT_MAX) {
        error_setg(errp, "'%s': BAT entries %u out of range [%llu, %llu] for the disk size",
                   bs->filename, s->bat_entries, (unsigned long long)need,
                   (unsigned long long)VHD_BAT_MAX);
        return -EINVAL;
    }
    if (!range_within(s->bat_offset, (uint64_t)s->bat_entries * 4, (uint64_t)file_len)) {
        error_setg(errp, "'%s': BAT at %llu (%u entries) lies past the end of the file (%lld "
                   "bytes)", bs->filename, (unsigned long long)s->bat_offset, s->bat_entries,
                   (long long)file_len);
        return -EINVAL;
    }
    s->bitmap_size = (uint32_t)round_up_u64(s->block_size / VHD_SECTOR / 8, VHD_SECTOR);
    return 0;
}

/* Reads the BAT and checks that every block lies inside the file, after the BAT. */
static int coroutine_fn vpc_read_bat(BlockDriverState *bs, int64_t file_len, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint64_t bat_end = s->bat_offset + (uint64_t)s->bat_entries * 4;
    uint64_t end = round_up_u64(bat_end, VHD_SECTOR);
    uint8_t *raw = malloc((size_t)s->bat_entries * 4 + 1);
    int ret;

    s->bat = malloc((size_t)s->bat_entries * 4 + 1);
    if (!raw || !s->bat) {
        free(raw);
        error_setg(errp, "Could not allocate the BAT of '%s'", bs->filename);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, (int64_t)s->bat_offset, (int64_t)s->bat_entries * 4, raw);
    if (ret < 0) {
        free(raw);
        error_setg_errno(errp, ret, "Could not read the BAT of '%s'", bs->filename);
        return ret;
    }
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        uint64_t off, blk_end;

        s->bat[i] = ld_be32(raw + (size_t)i * 4);
        if (s->bat[i] == VHD_BAT_UNUSED) {
            continue;
        }
        off = (uint64_t)s->bat[i] * VHD_SECTOR;
        blk_end = off + s->bitmap_size + s->block_size;
        if (blk_end > (uint64_t)file_len || (off < bat_end && blk_end > s->bat_offset)) {
            free(raw);
            error_setg(errp, "'%s': BAT entry %u (block at %llu) lies %s", bs->filename, i,
                       (unsigned long long)off,
                       blk_end > (uint64_t)file_len ? "past the end of the file"
                                                    : "over the BAT");
            return -EINVAL;
        }
        if (blk_end > end) {
            end = blk_end;
        }
    }
    free(raw);
    s->free_off = (int64_t)end;
    return 0;
}

/* The parent's path from the locators (W2ru, MacX, W2ku), else the parent name. */
static int vpc_parent_path(BlockDriverState *bs, const uint8_t *loc_data[VHD_LOCATORS],
                           const uint32_t loc_len[VHD_LOCATORS], char *out, size_t cap)
{
    BDRVVpcState *s = bs->opaque;
    static const uint32_t order[] = { PLAT_W2RU, PLAT_MACX, PLAT_W2KU };

    for (size_t k = 0; k < sizeof(order) / sizeof(order[0]); k++) {
        for (int i = 0; i < VHD_LOCATORS; i++) {
            uint32_t code = ld_be32(s->dynhdr + DH_LOCATORS + i * DH_LOCATOR_SIZE);
            char *p = out;

            if (code != order[k] || !loc_data[i]) {
                continue;
            }
            if (code == PLAT_MACX) {
                if (loc_len[i] >= cap) {
                    continue;
                }
                memcpy(out, loc_data[i], loc_len[i]);
                out[loc_len[i]] = '\0';
                if (!strncmp(out, "file://", 7)) {
                    memmove(out, out + 7, strlen(out + 7) + 1);
                }
            } else if (!utf16_to_utf8(loc_data[i], loc_len[i], false, out, cap)) {
                continue;
            }
            for (; *p; p++) {
                if (*p == '\\') {
                    *p = '/';
                }
            }
            /* A Windows drive path cannot be followed here. */
            if (out[0] && !(out[1] == ':' && (out[2] == '/' || !out[2]))) {
                while (!strncmp(out, "./", 2)) {
                    memmove(out, out + 2, strlen(out + 2) + 1);
                }
                return 0;
            }
        }
    }
    if (utf16_to_utf8(s->dynhdr + DH_PARENT_NAME, 512, true, out, cap) && out[0]) {
        for (char *p = out; *p; p++) {
            if (*p == '\\') {
                *p = '/';
            }
        }
        return 0;
    }
    return -ENOENT;
}

/*
 * Reads the parent locators of a differencing disk and sets the backing
 * file. Limits: each locator's data lies inside the file and is at most
 * VHD_PATH_MAX bytes.
 */
static int coroutine_fn vpc_read_parent(BlockDriverState *bs, int64_t file_len, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    const uint8_t *loc_data[VHD_LOCATORS] = { NULL };
    uint32_t loc_len[VHD_LOCATORS] = { 0 };
    uint8_t *bufs[VHD_LOCATORS] = { NULL };
    char path[VHD_PATH_MAX];
    int ret = 0;

    for (int i = 0; i < VHD_LOCATORS && ret == 0; i++) {
        const uint8_t *e = s->dynhdr + DH_LOCATORS + i * DH_LOCATOR_SIZE;
        uint32_t code = ld_be32(e), len = ld_be32(e + 8);
        uint64_t off = ld_be64(e + 16);

        if (code == 0 || len == 0) {
            continue;
        }
        if (len > VHD_PATH_MAX || !range_within(off, len, (uint64_t)file_len)) {
            error_setg(errp, "'%s': parent locator %d (%u bytes at %llu) is too long or lies "
                       "past the end of the file", bs->filename, i, len,
                       (unsigned long long)off);
            ret = -EINVAL;
            break;
        }
        bufs[i] = malloc(len);
        if (!bufs[i]) {
            ret = -ENOMEM;
            break;
        }
        ret = fmt_co_pread(bs->file, (int64_t)off, len, bufs[i]);
        loc_data[i] = bufs[i];
        loc_len[i] = len;
    }
    if (ret == 0 && vpc_parent_path(bs, loc_data, loc_len, path, sizeof(path)) < 0) {
        error_setg(errp, "'%s': differencing disk without a usable parent locator",
                   bs->filename);
        ret = -EINVAL;
    } else if (ret == 0) {
        snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", path);
        snprintf(bs->backing_format, sizeof(bs->backing_format), "vpc");
    } else if (ret != -EINVAL) {
        error_setg_errno(errp, ret, "Could not read the parent locators of '%s'",
                         bs->filename);
    }
    for (int i = 0; i < VHD_LOCATORS; i++) {
        free(bufs[i]);
    }
    return ret;
}

static int coroutine_fn vpc_co_open_meta(BlockDriverState *bs, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    uint64_t dh_off;
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    ret = vpc_read_footer(bs, file_len, errp);
    if (ret < 0) {
        return ret;
    }
    s->type = ld_be32(s->footer + FT_TYPE);
    if (s->type != VHD_FIXED && s->type != VHD_DYNAMIC && s->type != VHD_DIFF) {
        error_setg(errp, "'%s': unknown VHD disk type %u", bs->filename, s->type);
        return -ENOTSUP;
    }
    ret = vpc_take_size(bs, file_len, errp);
    if (ret < 0 || s->type == VHD_FIXED) {
        return ret < 0 ? ret : vpc_fixed_recover(bs, errp);
    }
    dh_off = ld_be64(s->footer + FT_DATA_OFFSET);
    if (!range_within(dh_off, VHD_DYNHDR_SIZE, (uint64_t)file_len)) {
        error_setg(errp, "'%s': dynamic header offset %llu lies past the end of the file",
                   bs->filename, (unsigned long long)dh_off);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, (int64_t)dh_off, VHD_DYNHDR_SIZE, s->dynhdr);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the dynamic header of '%s'", bs->filename);
        return ret;
    }
    ret = vpc_check_dynhdr(bs, file_len, errp);
    if (ret == 0) {
        ret = vpc_read_bat(bs, file_len, errp);
    }
    if (ret == 0 && s->type == VHD_DIFF) {
        ret = vpc_read_parent(bs, file_len, errp);
    }
    if (ret == 0) {
        vpc_note_meta_end(s); /* new blocks go after a header moved to the end */
    }
    if (ret == 0) {
        ret = vpc_open_free_slots(bs, (uint64_t)file_len, errp);
    }
    /*
     * New blocks go at free_off and extend the file by their writes: what
     * lies past the file's end now reads zero and is not zeroed for them;
     * space before it (a lost allocation's data past the footer) is.
     */
    if (ret == 0) {
        ret = fmt_co_grow_init(bs->file, &s->grow, 0, VHD_SECTOR, PREALLOC_MODE_OFF);
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not get the size of '%s'", bs->filename);
        }
    }
    return ret;
}

typedef struct VpcOpenCo {
    BlockDriverState *bs;
    Error **errp;
} VpcOpenCo;

static int64_t coroutine_fn vpc_open_co(void *opaque)
{
    VpcOpenCo *o = opaque;

    return vpc_co_open_meta(o->bs, o->errp);
}

static void vpc_close(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;

    free(s->bat);
    s->bat = NULL;
    vpc_free_slots_clear(s);
}

static int vpc_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    VpcOpenCo o = { bs, errp };
    int ret;

    co_mutex_init(&s->alloc_lock);
    fmt_inflight_init(&s->allocs);
    co_rwlock_init(&s->move_lock);
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = (int)bdrv_run_co(bs->aio_context, vpc_open_co, &o);
    if (ret < 0) {
        vpc_close(bs);
    }
    return ret;
}

/* Nothing is staged: the metadata is written as it changes. */
static int64_t coroutine_fn vpc_commit_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVVpcState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->alloc_lock);
    ret = vpc_commit(bs);
    co_mutex_unlock(&s->alloc_lock);
    return ret ? ret : bdrv_co_flush(bs->file->bs);
}

/* Going read-only: the BAT entries of new blocks are written first (vpc-alloc.c). */
static int vpc_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                              Error **errp)
{
    int ret;

    if ((new_flags & BDRV_O_RDWR) || bs->read_only) {
        return 0;
    }
    ret = (int)bdrv_run_co(bs->aio_context, vpc_commit_co, bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vpc: could not write the BAT of '%s'", bs->filename);
    }
    return ret;
}

static void vpc_reopen_noop(BlockDriverState *bs)
{
}

static void vpc_refresh_limits(BlockDriverState *bs, Error **errp)
{
    if (bs->bl.request_alignment < VHD_SECTOR) {
        bs->bl.request_alignment = VHD_SECTOR; /* bitmaps track whole sectors */
    }
}

static int64_t coroutine_fn vpc_co_getlength(BlockDriverState *bs)
{
    return ((BDRVVpcState *)bs->opaque)->size;
}

/* ---------------------------------------------------------------------- */
/* Reads */

static void vpc_chunk(const BDRVVpcState *s, int64_t offset, int64_t bytes, uint32_t *block,
                      uint32_t *in_block, int64_t *n)
{
    *block = (uint32_t)(offset / s->block_size);
    *in_block = (uint32_t)(offset % s->block_size);
    *n = s->block_size - *in_block;
    if (*n > bytes) {
        *n = bytes;
    }
}

static int64_t vpc_block_offset(const BDRVVpcState *s, uint32_t block)
{
    return (int64_t)s->bat[block] * VHD_SECTOR;
}

static bool bit_is_set(const uint8_t *bm, uint32_t i)
{
    return bm[i / 8] & (0x80 >> (i % 8));
}

/* Length of the run of sectors from first with the same bit, up to count. */
static uint32_t bit_run(const uint8_t *bm, uint32_t first, uint32_t count, bool *set)
{
    uint32_t i = 1;

    *set = bit_is_set(bm, first);
    while (i < count && bit_is_set(bm, first + i) == *set) {
        i++;
    }
    return i;
}

static int coroutine_fn vpc_read_bitmap(BlockDriverState *bs, uint32_t block, uint8_t **bm)
{
    BDRVVpcState *s = bs->opaque;
    int ret;

    *bm = malloc(s->bitmap_size);
    if (!*bm) {
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, vpc_block_offset(s, block), s->bitmap_size, *bm);
    if (ret < 0) {
        free(*bm);
        *bm = NULL;
    }
    return ret;
}

/* A differencing block: each sector from this file or the parent, by its bit. */
static int coroutine_fn vpc_read_diff_chunk(BlockDriverState *bs, uint32_t block,
                                            uint32_t in_block, int64_t n, IOVector *qiov,
                                            size_t qiov_offset)
{
    BDRVVpcState *s = bs->opaque;
    int64_t base = (int64_t)block * s->block_size;
    uint8_t *bm;
    int ret = vpc_read_bitmap(bs, block, &bm);

    while (ret == 0 && n > 0) {
        bool set;
        uint32_t run = bit_run(bm, in_block / VHD_SECTOR, (uint32_t)(n / VHD_SECTOR), &set);
        int64_t len = (int64_t)run * VHD_SECTOR;

        if (set) {
            ret = bdrv_co_preadv_part(bs->file, vpc_block_offset(s, block) + s->bitmap_size +
                                      in_block, len, qiov, qiov_offset, 0);
        } else {
            ret = bdrv_co_read_backing(bs, base + in_block, len, qiov, qiov_offset);
        }
        in_block += (uint32_t)len;
        qiov_offset += (size_t)len;
        n -= len;
    }
    free(bm);
    return ret;
}

static int coroutine_fn vpc_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    BDRVVpcState *s = bs->opaque;
    int ret = 0;

    if (s->type == VHD_FIXED) {
        ret = bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset, 0);
        if (ret == 0) {
            vpc_fixed_mask_stale(s, offset, bytes, qiov, qiov_offset);
        }
        return ret;
    }
    co_rwlock_rdlock(&s->move_lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block;
        int64_t n;

        vpc_chunk(s, offset, bytes, &block, &in_block, &n);
        if (s->bat[block] == VHD_BAT_UNUSED) {
            ret = bdrv_co_read_backing(bs, offset, n, qiov, qiov_offset);
        } else if (s->type == VHD_DIFF) {
            ret = vpc_read_diff_chunk(bs, block, in_block, n, qiov, qiov_offset);
        } else {
            ret = bdrv_co_preadv_part(bs->file, vpc_block_offset(s, block) + s->bitmap_size +
                                      in_block, n, qiov, qiov_offset, 0);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->move_lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Writes */

int coroutine_fn vpc_write_bat_entry(BlockDriverState *bs, uint32_t block)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t first = block / 128 * 128;
    uint32_t count = s->bat_entries - first < 128 ? s->bat_entries - first : 128;
    uint8_t buf[VHD_SECTOR];

    for (uint32_t i = 0; i < count; i++) {
        st_be32(buf + i * 4, s->bat[first + i]);
    }
    return fmt_co_pwrite(bs->file, (int64_t)(s->bat_offset + (uint64_t)first * 4), count * 4,
                         buf, 0);
}

static int coroutine_fn vpc_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BDRVVpcState *s = bs->opaque;
    int ret = 0;

    if (offset + bytes > s->size) {
        return -ENOSPC;
    }
    if (s->type == VHD_FIXED) {
        return bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset, 0);
    }
    co_rwlock_rdlock(&s->move_lock);
    while (bytes > 0 && ret == 0) {
        uint32_t block, in_block;
        int64_t n;

        vpc_chunk(s, offset, bytes, &block, &in_block, &n);
        ret = vpc_write_chunk(bs, block, in_block, n, qiov, qiov_offset);
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    co_rwlock_unlock(&s->move_lock);
    return ret;
}

/* Writes the BAT entries of the blocks allocated since the last flush (vpc-alloc.c). */
static int coroutine_fn vpc_co_flush_to_os(BlockDriverState *bs)
{
    BDRVVpcState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->alloc_lock);
    ret = vpc_commit(bs);
    co_mutex_unlock(&s->alloc_lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Block status, info, check */

static int coroutine_fn vpc_co_block_status(BlockDriverState *bs, bool want_zero,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t block, in_block;
    uint8_t *bm;
    bool set = true;
    int64_t n;
    int ret;

    *file = bs->file->bs;
    if (s->type == VHD_FIXED) {
        *pnum = bytes;
        *map = offset;
        return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_RECURSE;
    }
    vpc_chunk(s, offset, bytes, &block, &in_block, &n);
    if (s->bat[block] == VHD_BAT_UNUSED) {
        while (n < bytes && block + 1 < s->bat_entries && s->bat[block + 1] == VHD_BAT_UNUSED) {
            block++;
            n += bytes - n < s->block_size ? bytes - n : s->block_size;
        }
        *pnum = n;
        return 0;
    }
    if (s->type == VHD_DIFF) {
        ret = vpc_read_bitmap(bs, block, &bm);
        if (ret < 0) {
            return ret;
        }
        n = (int64_t)bit_run(bm, in_block / VHD_SECTOR, (uint32_t)(n / VHD_SECTOR), &set) *
            VHD_SECTOR;
        free(bm);
    }
    *pnum = n;
    *map = vpc_block_offset(s, block) + s->bitmap_size + in_block;
    return set ? BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID : 0;
}

static int vpc_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVVpcState *s = bs->opaque;

    bdi->cluster_size = s->type == VHD_FIXED ? 0 : s->block_size;
    return 0;
}

static int vpc_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Checks that no two BAT entries share a block (open checked the bounds). */
static int coroutine_fn vpc_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                                     BdrvCheckMode fix)
{
    BDRVVpcState *s = bs->opaque;
    uint32_t *sorted;
    uint32_t n = 0;

    if (s->type == VHD_FIXED) {
        res->image_end_offset = s->size + VHD_FOOTER_SIZE;
        return 0;
    }
    sorted = malloc((size_t)s->bat_entries * 4 + 1);
    if (!sorted) {
        res->check_errors++;
        return -ENOMEM;
    }
    co_mutex_lock(&s->alloc_lock);
    (void)vpc_alloc_drain(bs); /* entries of allocations in flight are not set yet */
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        if (s->bat[i] != VHD_BAT_UNUSED) {
            sorted[n++] = s->bat[i];
        }
    }
    co_mutex_unlock(&s->alloc_lock);
    qsort(sorted, n, 4, vpc_cmp_u32);
    for (uint32_t i = 1; i < n; i++) {
        if ((uint64_t)sorted[i] * VHD_SECTOR <
            (uint64_t)sorted[i - 1] * VHD_SECTOR + s->bitmap_size + s->block_size) {
            bdrv_check_report(res, "vpc: blocks at sectors %u and %u overlap", sorted[i - 1],
                              sorted[i]);
            res->corruptions++;
        }
    }
    free(sorted);
    res->image_end_offset = s->free_off + VHD_FOOTER_SIZE;
    res->allocated_clusters = n;
    res->total_clusters = s->bat_entries;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* VD-style metadata: UUIDs and geometry */

static int vpc_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16])
{
    BDRVVpcState *s = bs->opaque;

    if (kind == BLOCK_UUID_IMAGE) {
        memcpy(uuid, s->footer + FT_UUID, 16);
        return 0;
    }
    if (kind == BLOCK_UUID_PARENT && s->type == VHD_DIFF) {
        memcpy(uuid, s->dynhdr + DH_PARENT_UUID, 16);
        return 0;
    }
    return -ENOTSUP;
}

static int coroutine_fn vpc_co_set_uuid(BlockDriverState *bs, BlockUuidKind kind,
                                        const uint8_t uuid[16], Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t old[16];
    int ret;

    if (kind == BLOCK_UUID_IMAGE) {
        memcpy(old, s->footer + FT_UUID, 16);
        memcpy(s->footer + FT_UUID, uuid, 16);
        ret = vpc_write_footers(bs);
        if (ret < 0) {
            memcpy(s->footer + FT_UUID, old, 16);
        }
    } else if (kind == BLOCK_UUID_PARENT && s->type == VHD_DIFF) {
        memcpy(old, s->dynhdr + DH_PARENT_UUID, 16);
        memcpy(s->dynhdr + DH_PARENT_UUID, uuid, 16);
        ret = vpc_write_dynhdr(bs);
        if (ret < 0) {
            memcpy(s->dynhdr + DH_PARENT_UUID, old, 16);
        }
    } else {
        error_setg(errp, "vpc: '%s' has no %s UUID", bs->filename,
                   kind == BLOCK_UUID_PARENT ? "parent (not a differencing disk)"
                                             : "modification");
        return -ENOTSUP;
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not write the metadata of '%s'", bs->filename);
    }
    return ret;
}

/*
 * Timestamps: the footer's creation time and, in a differencing disk's
 * dynamic header, the parent's modification time; both seconds since
 * 2000-01-01 UTC in 32 bits.
 */
static uint8_t *vpc_time_field(BDRVVpcState *s, BlockTimestampKind kind)
{
    if (kind == BLOCK_TIMESTAMP_CREATION) {
        return s->footer + FT_TIMESTAMP;
    }
    if (kind == BLOCK_TIMESTAMP_PARENT_MODIFICATION && s->type == VHD_DIFF) {
        return s->dynhdr + DH_PARENT_TIME;
    }
    return NULL;
}

static int vpc_get_timestamp(BlockDriverState *bs, BlockTimestampKind kind, int64_t *secs)
{
    uint8_t *f = vpc_time_field(bs->opaque, kind);

    if (!f) {
        return -ENOTSUP;
    }
    *secs = (int64_t)VHD_EPOCH + ld_be32(f);
    return 0;
}

static int coroutine_fn vpc_co_set_timestamp(BlockDriverState *bs, BlockTimestampKind kind,
                                             int64_t secs, Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t *f = vpc_time_field(s, kind);
    uint32_t old;
    int ret;

    if (!f) {
        error_setg(errp, "vpc: '%s' has no parent time stamp (not a differencing disk)",
                   bs->filename);
        return -ENOTSUP;
    }
    if (secs < VHD_EPOCH || secs - VHD_EPOCH > (int64_t)UINT32_MAX) {
        error_setg(errp, "vpc: time %lld is outside the VHD range (2000-01-01 + 2^32 s)",
                   (long long)secs);
        return -ERANGE;
    }
    old = ld_be32(f);
    st_be32(f, (uint32_t)(secs - VHD_EPOCH));
    ret = f == s->footer + FT_TIMESTAMP ? vpc_write_footers(bs) : vpc_write_dynhdr(bs);
    if (ret < 0) {
        st_be32(f, old);
        error_setg_errno(errp, ret, "Could not write the metadata of '%s'", bs->filename);
    }
    return ret;
}

static int vpc_get_geometry(BlockDriverState *bs, BlockGeometry *geo)
{
    BDRVVpcState *s = bs->opaque;

    geo->cylinders = ld_be16(s->footer + FT_CYLS);
    geo->heads = s->footer[FT_HEADS];
    geo->sectors = s->footer[FT_SECS];
    return 0;
}

static int coroutine_fn vpc_co_set_geometry(BlockDriverState *bs, const BlockGeometry *geo,
                                            Error **errp)
{
    BDRVVpcState *s = bs->opaque;
    uint8_t old[4];
    int ret;

    if (geo->cylinders > 65535 || geo->heads > 255 || geo->sectors > 255) {
        error_setg(errp, "Geometry %u/%u/%u out of range for VHD (65535/255/255)",
                   geo->cylinders, geo->heads, geo->sectors);
        return -EINVAL;
    }
    if (vpc_sized_by_chs(s->footer) &&
        (uint64_t)geo->cylinders * geo->heads * geo->sectors * VHD_SECTOR != (uint64_t)s->size) {
        error_setg(errp, "'%s' is sized by its geometry: %u/%u/%u would change its size",
                   bs->filename, geo->cylinders, geo->heads, geo->sectors);
        return -EINVAL;
    }
    memcpy(old, s->footer + FT_CYLS, 4);
    st_be16(s->footer + FT_CYLS, (uint16_t)geo->cylinders);
    s->footer[FT_HEADS] = (uint8_t)geo->heads;
    s->footer[FT_SECS] = (uint8_t)geo->sectors;
    ret = vpc_write_footers(bs);
    if (ret < 0) {
        memcpy(s->footer + FT_CYLS, old, 4);
        error_setg_errno(errp, ret, "Could not write the footer of '%s'", bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Create */

static const BlockCreateOptDesc vpc_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "subformat", BLOCK_OPT_STRING,
      "Type of virtual hard disk format. Supported formats are {dynamic (default) | fixed}",
      "dynamic" },
    { "force_size", BLOCK_OPT_BOOL,
      "Force disk size calculation to use the actual size specified, rather than using the "
      "nearest CHS-based calculation", "off" },
    { "backing_file", BLOCK_OPT_STRING,
      "File name of the parent disk (makes a differencing disk)", NULL },
    { "backing_fmt", BLOCK_OPT_STRING, "Format of the parent disk (vpc only)", NULL },
    { NULL, 0, NULL, NULL },
};

typedef struct VpcCreate {
    uint64_t size;
    uint32_t type;
    bool force_size;
    char *backing;
    char backing_path[VHD_PATH_MAX];    /* resolved against the new image's folder */
    uint8_t parent_uuid[16];
    uint32_t parent_time;
} VpcCreate;

static void vpc_build_footer(uint8_t *f, const VpcCreate *c, uint64_t data_offset)
{
    uint32_t cyls, heads, spt;

    memset(f, 0, VHD_FOOTER_SIZE);
    memcpy(f + FT_COOKIE, "conectix", 8);
    st_be32(f + FT_FEATURES, 2);
    st_be32(f + FT_VERSION, 0x00010000);
    st_be64(f + FT_DATA_OFFSET, data_offset);
    st_be32(f + FT_TIMESTAMP, (uint32_t)(time(NULL) - VHD_EPOCH));
    memcpy(f + FT_CREATOR, "cblk", 4);
    st_be32(f + FT_CREATOR_VER, 0x00010000);
    memcpy(f + FT_CREATOR_OS, "Wi2k", 4);
    st_be64(f + FT_ORIG_SIZE, c->size);
    st_be64(f + FT_CUR_SIZE, c->size);
    if (c->force_size) {
        cyls = 65535, heads = 16, spt = 255;
    } else {
        vpc_chs(c->size / VHD_SECTOR, &cyls, &heads, &spt);
    }
    st_be16(f + FT_CYLS, (uint16_t)cyls);
    f[FT_HEADS] = (uint8_t)heads;
    f[FT_SECS] = (uint8_t)spt;
    st_be32(f + FT_TYPE, c->type);
    fmt_uuid_generate(f + FT_UUID);
    vpc_seal_footer(f);
}

bool vpc_round_chs(uint64_t *sectors)
{
    if (*sectors > VHD_MAX_CHS_SECTORS) {
        return false;
    }
    for (uint64_t i = 0;; i++) {
        uint32_t cyls, heads, spt;

        vpc_chs(*sectors + i, &cyls, &heads, &spt);
        if ((uint64_t)cyls * heads * spt >= *sectors) {
            *sectors = (uint64_t)cyls * heads * spt;
            return true;
        }
    }
}

/*
 * Rounds the size up to a whole CHS geometry (as Virtual PC and QEMU), unless
 * force_size or the geometry is the largest one, where the size stays.
 */
static int vpc_create_size(VpcCreate *c, Error **errp)
{
    uint64_t sectors = div_round_up_u64(c->size, VHD_SECTOR);

    if (sectors * VHD_SECTOR > VHD_MAX_SIZE) {
        error_setg(errp, "vpc: size %llu exceeds the maximum %llu (2040 GiB)",
                   (unsigned long long)c->size, (unsigned long long)VHD_MAX_SIZE);
        return -EINVAL;
    }
    if (!c->force_size && !vpc_round_chs(&sectors)) {
        c->force_size = true; /* beyond the largest geometry: the size field rules */
    }
    c->size = sectors * VHD_SECTOR;
    return 0;
}

int vpc_build_locators(uint8_t *dh, uint8_t *area, size_t area_len, uint64_t area_off,
                       const char *backing, const char *backing_path, Error **errp)
{
    char rel[VHD_PATH_MAX], url[VHD_PATH_MAX + 8];
    char abs_path[PATH_MAX];
    long len;
    size_t used = 0;

    snprintf(rel, sizeof(rel), "%s%s", backing[0] == '/' ? "" : ".\\", backing);
    for (char *p = rel; *p; p++) {
        *p = *p == '/' ? '\\' : *p;
    }
    if (!realpath(backing_path, abs_path)) {
        snprintf(abs_path, sizeof(abs_path), "%s", backing_path);
    }
    snprintf(url, sizeof(url), "file://%s", abs_path);
    len = utf8_to_utf16(backing, true, dh + DH_PARENT_NAME, 512);
    if (len < 0) {
        error_setg(errp, "vpc: backing file name '%s' is not valid UTF-8 or too long (512 "
                   "bytes as UTF-16)", backing);
        return -EINVAL;
    }
    len = utf8_to_utf16(rel, false, area, area_len / 2);
    if (len < 0) {
        error_setg(errp, "vpc: backing file name '%s' is too long", backing);
        return -EINVAL;
    }
    st_be32(dh + DH_LOCATORS, PLAT_W2RU);
    st_be32(dh + DH_LOCATORS + 4, (uint32_t)round_up_u64((uint64_t)len, VHD_SECTOR));
    st_be32(dh + DH_LOCATORS + 8, (uint32_t)len);
    st_be64(dh + DH_LOCATORS + 16, area_off);
    used = round_up_u64((uint64_t)len, VHD_SECTOR);
    if (strlen(url) <= area_len - used) {
        uint8_t *e = dh + DH_LOCATORS + DH_LOCATOR_SIZE;

        memcpy(area + used, url, strlen(url));
        st_be32(e, PLAT_MACX);
        st_be32(e + 4, (uint32_t)round_up_u64(strlen(url), VHD_SECTOR));
        st_be32(e + 8, (uint32_t)strlen(url));
        st_be64(e + 16, area_off + used);
    }
    return 0;
}

static int coroutine_fn vpc_write_sparse(BlockBackend *blk, VpcCreate *c, Error **errp)
{
    uint32_t entries = (uint32_t)div_round_up_u64(c->size, VHD_DEFAULT_BLOCK);
    uint64_t loc_off = VHD_FOOTER_SIZE + VHD_DYNHDR_SIZE;
    uint64_t loc_len = c->type == VHD_DIFF ? VPC_LOCATOR_AREA : 0;
    uint64_t bat_off = loc_off + loc_len;
    uint64_t bat_len = round_up_u64((uint64_t)entries * 4, VHD_SECTOR);
    size_t total = (size_t)(bat_off + bat_len + VHD_FOOTER_SIZE);
    uint8_t *buf = calloc(1, total);
    uint8_t *dh;
    int ret;

    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    vpc_build_footer(buf, c, VHD_FOOTER_SIZE);
    dh = buf + VHD_FOOTER_SIZE;
    memcpy(dh, "cxsparse", 8);
    st_be64(dh + DH_DATA_OFFSET, VHD_NO_OFFSET);
    st_be64(dh + DH_TABLE_OFFSET, bat_off);
    st_be32(dh + DH_VERSION, 0x00010000);
    st_be32(dh + DH_MAX_ENTRIES, entries);
    st_be32(dh + DH_BLOCK_SIZE, VHD_DEFAULT_BLOCK);
    if (c->type == VHD_DIFF) {
        memcpy(dh + DH_PARENT_UUID, c->parent_uuid, 16);
        st_be32(dh + DH_PARENT_TIME, c->parent_time);
        ret = vpc_build_locators(dh, buf + loc_off, (size_t)loc_len, loc_off, c->backing,
                                 c->backing_path, errp);
        if (ret < 0) {
            free(buf);
            return ret;
        }
    }
    vpc_seal_dynhdr(dh);
    memset(buf + bat_off, 0xff, (size_t)entries * 4);
    memcpy(buf + bat_off + bat_len, buf, VHD_FOOTER_SIZE);
    ret = fmt_blk_co_pwrite(blk, 0, (int64_t)total, buf);
    free(buf);
    return ret;
}

static int coroutine_fn vpc_write_fixed(BlockBackend *blk, VpcCreate *c, Error **errp)
{
    uint8_t footer[VHD_FOOTER_SIZE];
    int ret;

    vpc_build_footer(footer, c, VHD_NO_OFFSET);
    ret = blk_co_truncate(blk, (int64_t)c->size, true, PREALLOC_MODE_OFF, 0, errp);
    if (ret < 0) {
        return ret;
    }
    return fmt_blk_co_pwrite(blk, (int64_t)c->size, VHD_FOOTER_SIZE, footer);
}

/* Opens the parent (relative to the new image) for its size, UUID and time. */
static int coroutine_fn vpc_create_parent(const char *filename, VpcCreate *c, bool has_size,
                                          Error **errp)
{
    char dir[VHD_PATH_MAX];
    BlockOpts *o = bopts_new();
    BlockBackend *pblk;
    struct stat st;

    snprintf(dir, sizeof(dir), "%s", filename);
    if (c->backing[0] == '/') {
        snprintf(c->backing_path, sizeof(c->backing_path), "%s", c->backing);
    } else {
        snprintf(c->backing_path, sizeof(c->backing_path), "%s/%s", dirname(dir), c->backing);
    }
    bopts_set(o, "driver", "vpc");
    pblk = blk_new_open(c->backing_path, o, 0, errp);
    if (!pblk) {
        error_prepend(errp, "vpc: could not open the parent '%s': ", c->backing_path);
        return -EINVAL;
    }
    if (bdrv_get_uuid(blk_bs(pblk), BLOCK_UUID_IMAGE, c->parent_uuid) < 0) {
        memset(c->parent_uuid, 0, 16);
    }
    if (!has_size) {
        c->size = (uint64_t)blk_getlength(pblk);
    }
    blk_unref(pblk);
    c->parent_time = stat(c->backing_path, &st) == 0 && st.st_mtime > VHD_EPOCH
                     ? (uint32_t)(st.st_mtime - VHD_EPOCH) : 0;
    return 0;
}

static int vpc_create_take_opts(BlockOpts *options, VpcCreate *c, bool *has_size,
                                Error **errp)
{
    static const char *const subformats[] = { "dynamic", "fixed" };
    char *fmt = NULL;
    int sub, ret;

    ret = bopts_take_size(options, "size", 0, &c->size, errp);
    *has_size = ret > 0;
    if (ret < 0 ||
        bopts_take_enum(options, "subformat", subformats, 2, 0, &sub, errp) < 0 ||
        bopts_take_bool(options, "force_size", false, &c->force_size, errp) < 0 ||
        bopts_take_str(options, "backing_file", &c->backing, errp) < 0 ||
        bopts_take_str(options, "backing_fmt", &fmt, errp) < 0 ||
        bopts_check_empty(options, "vpc", errp) < 0) {
        free(fmt);
        return -EINVAL;
    }
    if (fmt && strcmp(fmt, "vpc") != 0) {
        error_setg(errp, "vpc: the parent of a differencing disk must be vpc, not '%s'", fmt);
        free(fmt);
        return -EINVAL;
    }
    free(fmt);
    c->type = c->backing ? VHD_DIFF : sub == 1 ? VHD_FIXED : VHD_DYNAMIC;
    if (c->backing && sub == 1) {
        error_setg(errp, "vpc: a differencing disk cannot be fixed");
        return -EINVAL;
    }
    if (!c->backing && !*has_size) {
        error_setg(errp, "vpc: parameter 'size' is required");
        return -EINVAL;
    }
    return 0;
}

static int coroutine_fn vpc_co_create_opts(const BlockDriver *drv, const char *filename,
                                           BlockOpts *options, Error **errp)
{
    VpcCreate c = { 0 };
    BlockBackend *blk;
    bool has_size;
    int ret;

    ret = vpc_create_take_opts(options, &c, &has_size, errp);
    if (ret == 0 && c.backing) {
        ret = vpc_create_parent(filename, &c, has_size, errp);
        c.force_size = true; /* the parent's size exactly */
    }
    if (ret == 0) {
        ret = vpc_create_size(&c, errp);
    }
    if (ret < 0) {
        free(c.backing);
        return ret;
    }
    blk = fmt_co_create_file(filename, errp);
    if (!blk) {
        free(c.backing);
        return -EIO;
    }
    ret = c.type == VHD_FIXED ? vpc_write_fixed(blk, &c, errp) : vpc_write_sparse(blk, &c, errp);
    if (ret == 0) {
        ret = blk_co_flush(blk);
    }
    if (ret < 0 && !(errp && *errp)) {
        error_setg_errno(errp, ret, "Could not write the new VHD image '%s'", filename);
    }
    blk_unref(blk);
    free(c.backing);
    return ret;
}

static const char *const vpc_extensions[] = { "vhd", "vpc", NULL };

const BlockDriver bdrv_vpc = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "vpc",
    .instance_size = sizeof(BDRVVpcState),
    .is_format = true,
    .probe = vpc_probe,
    .bdrv_open = vpc_open,
    .bdrv_close = vpc_close,
    .reopen_prepare = vpc_reopen_prepare,
    .reopen_commit = vpc_reopen_noop,
    .reopen_abort = vpc_reopen_noop,
    .refresh_limits = vpc_refresh_limits,
    .co_preadv = vpc_co_preadv,
    .co_pwritev = vpc_co_pwritev,
    .co_flush_to_os = vpc_co_flush_to_os,
    .co_block_status = vpc_co_block_status,
    .co_getlength = vpc_co_getlength,
    .co_truncate = vpc_co_truncate,
    .co_create_opts = vpc_co_create_opts,
    .create_opts = vpc_create_opts,
    .get_info = vpc_get_info,
    .co_check = vpc_co_check,
    .get_uuid = vpc_get_uuid,
    .co_set_uuid = vpc_co_set_uuid,
    .get_geometry = vpc_get_geometry,
    .co_set_geometry = vpc_co_set_geometry,
    .file_extensions = vpc_extensions,
    .get_timestamp = vpc_get_timestamp,
    .co_set_timestamp = vpc_co_set_timestamp,
    .co_pdiscard = vpc_co_pdiscard,
    .co_change_backing_file = vpc_co_change_backing_file,
};
