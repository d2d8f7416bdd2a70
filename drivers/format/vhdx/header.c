/*
 * vhdx: the file type identifier, the two headers (CRC-32C, sequence
 * numbers, the update procedure) and the region table.
 *
 * Limits: a header is used only with signature "head", a good checksum,
 * version 1 and log version 0; of two valid headers the one with the higher
 * sequence number is current. The log it names is 1 MiB aligned, 1 MiB to
 * VHDX_MAX_LOG long and inside the file. The region table is taken from the
 * first copy with a good checksum; it has at most 2047 entries, its BAT and
 * metadata regions are 1 MiB aligned, non-empty, past the first 1 MiB and
 * inside the file, and an unknown region marked required is refused.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define G(a, b, c, d0, d1, d2, d3, d4, d5, d6, d7)                                              \
    { { (a) & 0xff, ((a) >> 8) & 0xff, ((a) >> 16) & 0xff, ((a) >> 24) & 0xff, (b) & 0xff,      \
        ((b) >> 8) & 0xff, (c) & 0xff, ((c) >> 8) & 0xff, d0, d1, d2, d3, d4, d5, d6, d7 } }

const VhdxGuid vhdx_guid_bat =
    G(0x2DC27766U, 0xF623, 0x4200, 0x9D, 0x64, 0x11, 0x5E, 0x9B, 0xFD, 0x4A, 0x08);
const VhdxGuid vhdx_guid_metadata =
    G(0x8B7CA206U, 0x4790, 0x4B9A, 0xB8, 0xFE, 0x57, 0x5F, 0x05, 0x0F, 0x88, 0x6E);
const VhdxGuid vhdx_guid_file_params =
    G(0xCAA16737U, 0xFA36, 0x4D43, 0xB3, 0xB6, 0x33, 0xF0, 0xAA, 0x44, 0xE7, 0x6B);
const VhdxGuid vhdx_guid_disk_size =
    G(0x2FA54224U, 0xCD1B, 0x4876, 0xB2, 0x11, 0x5D, 0xBE, 0xD8, 0x3B, 0xF4, 0xB8);
const VhdxGuid vhdx_guid_page83 =
    G(0xBECA12ABU, 0xB2E6, 0x4523, 0x93, 0xEF, 0xC3, 0x09, 0xE0, 0x00, 0xC7, 0x46);
const VhdxGuid vhdx_guid_logical_sector =
    G(0x8141BF1DU, 0xA96F, 0x4709, 0xBA, 0x47, 0xF2, 0x33, 0xA8, 0xFA, 0xAB, 0x5F);
const VhdxGuid vhdx_guid_physical_sector =
    G(0xCDA348C7U, 0x445D, 0x4471, 0x9C, 0xC9, 0xE9, 0x88, 0x52, 0x51, 0xC5, 0x56);
const VhdxGuid vhdx_guid_parent_locator =
    G(0xA8D35F2DU, 0xB30B, 0x454D, 0xAB, 0xF7, 0xD3, 0xD8, 0x48, 0x34, 0xAB, 0x0C);

/* ---------------------------------------------------------------------- */
/* CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) and GUIDs */

uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len)
{
    static uint32_t table[256];
    static volatile int ready;
    const uint8_t *p = buf;

    if (!ready) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;

            for (int k = 0; k < 8; k++) {
                c = (c & 1) ? (c >> 1) ^ 0x82F63B78U : c >> 1;
            }
            table[i] = c; /* idempotent: racing threads store the same values */
        }
        ready = 1;
    }
    crc = ~crc;
    while (len--) {
        crc = table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off)
{
    static const uint8_t zero[4];
    uint32_t crc = vhdx_crc32c(0, buf, csum_off);

    crc = vhdx_crc32c(crc, zero, 4);
    return vhdx_crc32c(crc, buf + csum_off + 4, len - csum_off - 4);
}

void vhdx_guid_generate(VhdxGuid *g)
{
    if (getrandom(g->b, sizeof(g->b), 0) != (ssize_t)sizeof(g->b)) {
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)g;

        memcpy(g->b, &t, 8);
        memcpy(g->b + 8, &t, 8);
    }
    g->b[7] = (uint8_t)((g->b[7] & 0x0f) | 0x40); /* version 4 (random) */
    g->b[8] = (uint8_t)((g->b[8] & 0x3f) | 0x80);
}

bool vhdx_guid_is_zero(const VhdxGuid *g)
{
    for (int i = 0; i < 16; i++) {
        if (g->b[i]) {
            return false;
        }
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Headers */

static bool header_decode(const uint8_t *buf, VhdxHeader *h)
{
    ByteCursor c = bcur_init(buf, VHDX_HEADER_SIZE);
    uint32_t sig, csum;

    rd_le32(&c, &sig);
    rd_le32(&c, &csum);
    rd_le64(&c, &h->seq);
    rd_bytes(&c, h->file_write_guid.b, 16);
    rd_bytes(&c, h->data_write_guid.b, 16);
    rd_bytes(&c, h->log_guid.b, 16);
    rd_le16(&c, &h->log_version);
    rd_le16(&c, &h->version);
    rd_le32(&c, &h->log_length);
    rd_le64(&c, &h->log_offset);
    return bcur_ok(&c) && !memcmp(buf, "head", 4) &&
           (!FMT_VERIFY_CHECKSUMS || csum == vhdx_checksum(buf, VHDX_HEADER_SIZE, 4)) &&
           h->version == 1 &&
           h->log_version == 0;
}

void vhdx_header_encode(uint8_t buf[4096], const VhdxHeader *h)
{
    memset(buf, 0, VHDX_HEADER_SIZE);
    memcpy(buf, "head", 4);
    st_le64(buf + 8, h->seq);
    memcpy(buf + 16, h->file_write_guid.b, 16);
    memcpy(buf + 32, h->data_write_guid.b, 16);
    memcpy(buf + 48, h->log_guid.b, 16);
    st_le16(buf + 64, h->log_version);
    st_le16(buf + 66, h->version);
    st_le32(buf + 68, h->log_length);
    st_le64(buf + 72, h->log_offset);
    st_le32(buf + 4, vhdx_checksum(buf, VHDX_HEADER_SIZE, 4));
}

static int check_log_location(BlockDriverState *bs, const VhdxHeader *h, uint64_t len,
                              Error **errp)
{
    if (h->log_offset < VHDX_MiB || h->log_offset % VHDX_MiB || h->log_length % VHDX_MiB ||
        h->log_length == 0 || h->log_length > VHDX_MAX_LOG ||
        !range_within(h->log_offset, h->log_length, len)) {
        error_setg(errp, "vhdx: %s: log at %" PRIu64 " of %u bytes is misaligned, too large "
                   "(limit %" PRIu64 ") or past the end of the file", bs->filename,
                   h->log_offset, h->log_length, VHDX_MAX_LOG);
        return -EINVAL;
    }
    return 0;
}

int vhdx_read_headers(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint8_t *buf = malloc(VHDX_HEADER_SIZE);
    int64_t len = bdrv_getlength(bs->file->bs);
    VhdxHeader h[2];
    bool ok[2] = { false, false };
    int ret = -EINVAL;

    if (!buf || len < 0) {
        free(buf);
        return buf ? (int)len : -ENOMEM;
    }
    if (len < (int64_t)(VHDX_REGION2_OFFSET + VHDX_REGION_SIZE) ||
        vhdx_pread_sync(bs->file, 0, buf, 8) < 0 || memcmp(buf, "vhdxfile", 8)) {
        error_setg(errp, "vhdx: %s: no 'vhdxfile' file type identifier", bs->filename);
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t off = i ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET;

        ok[i] = vhdx_pread_sync(bs->file, off, buf, VHDX_HEADER_SIZE) == 0 &&
                header_decode(buf, &h[i]);
    }
    if (!ok[0] && !ok[1]) {
        error_setg(errp, "vhdx: %s: neither header is valid (signature, checksum or version)",
                   bs->filename);
        goto out;
    }
    s->cur_hdr = ok[0] && (!ok[1] || h[0].seq >= h[1].seq) ? 0 : 1;
    s->hdr = h[s->cur_hdr];
    ret = check_log_location(bs, &s->hdr, (uint64_t)len, errp);
out:
    free(buf);
    return ret;
}

/*
 * Each header write is FUA: durable before the next write is issued (the
 * other copy, or the first data or log write after a GUID change), as the
 * spec asks. A FUA write says nothing about the writes issued before it:
 * callers whose header update depends on earlier writes (log replay, the
 * commit that clears LogGuid) flush those first. A flush here would also
 * write back every other dirty page of the image file (on a file node, a
 * whole-file fdatasync); the file driver's FUA is one pwritev2(RWF_DSYNC).
 */
int coroutine_fn vhdx_update_headers(BlockDriverState *bs, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint8_t *buf = malloc(VHDX_HEADER_SIZE);
    int ret = 0;

    if (!buf) {
        return -ENOMEM;
    }
    for (int i = 0; i < 2 && ret == 0; i++) {
        int slot = 1 - s->cur_hdr;

        s->hdr.seq++;
        vhdx_header_encode(buf, &s->hdr);
        ret = vhdx_co_pwrite_fua(bs->file, slot ? VHDX_HEADER2_OFFSET : VHDX_HEADER1_OFFSET,
                                 buf, VHDX_HEADER_SIZE);
        if (ret == 0) {
            s->cur_hdr = slot;
        }
    }
    free(buf);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vhdx: %s: could not update the headers", bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Region table */

static int region_entry(BlockDriverState *bs, const uint8_t *e, uint64_t len, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t off = ld_le64(e + 16);
    uint32_t rlen = ld_le32(e + 24), required = ld_le32(e + 28) & 1;
    bool bat = !memcmp(e, vhdx_guid_bat.b, 16), meta = !memcmp(e, vhdx_guid_metadata.b, 16);

    if (!bat && !meta) {
        if (required) {
            error_setg(errp, "vhdx: %s: unknown required region in the region table",
                       bs->filename);
            return -ENOTSUP;
        }
        s->unknown_regions = true; /* its space is never reused (space.c) */
        return 0;
    }
    if (off < VHDX_MiB || off % VHDX_MiB || rlen == 0 || rlen % VHDX_MiB ||
        !range_within(off, rlen, len)) {
        error_setg(errp, "vhdx: %s: %s region at %" PRIu64 " of %u bytes is misaligned or past "
                   "the end of the file", bs->filename, bat ? "BAT" : "metadata", off, rlen);
        return -EINVAL;
    }
    if (bat) {
        s->bat_offset = off;
        s->bat_length = rlen;
    } else {
        s->meta_offset = off;
        s->meta_length = rlen;
    }
    return 0;
}

static int parse_regions(BlockDriverState *bs, const uint8_t *buf, uint64_t len, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    uint32_t count = ld_le32(buf + 8);
    int ret;

    if (count > VHDX_MAX_ENTRIES) {
        error_setg(errp, "vhdx: %s: region table entry count %u exceeds %d", bs->filename,
                   count, VHDX_MAX_ENTRIES);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < count; i++) {
        ret = region_entry(bs, buf + 16 + (size_t)i * 32, len, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (!s->bat_offset || !s->meta_offset) {
        error_setg(errp, "vhdx: %s: the region table lacks the %s region", bs->filename,
                   s->bat_offset ? "metadata" : "BAT");
        return -EINVAL;
    }
    if (s->bat_offset < s->meta_offset + s->meta_length &&
        s->meta_offset < s->bat_offset + s->bat_length) {
        error_setg(errp, "vhdx: %s: the BAT and metadata regions overlap", bs->filename);
        return -EINVAL;
    }
    return 0;
}

int vhdx_read_region_table(BlockDriverState *bs, Error **errp)
{
    uint8_t *buf = malloc(VHDX_REGION_SIZE);
    int64_t len = bdrv_getlength(bs->file->bs);
    int ret = -EINVAL;

    if (!buf || len < 0) {
        free(buf);
        return buf ? (int)len : -ENOMEM;
    }
    for (int i = 0; i < 2; i++) {
        uint64_t off = i ? VHDX_REGION2_OFFSET : VHDX_REGION1_OFFSET;

        if (vhdx_pread_sync(bs->file, off, buf, VHDX_REGION_SIZE) == 0 &&
            !memcmp(buf, "regi", 4) &&
            (!FMT_VERIFY_CHECKSUMS ||
             ld_le32(buf + 4) == vhdx_checksum(buf, VHDX_REGION_SIZE, 4))) {
            ret = parse_regions(bs, buf, (uint64_t)len, errp);
            free(buf);
            return ret;
        }
    }
    error_setg(errp, "vhdx: %s: neither region table is valid (signature or checksum)",
               bs->filename);
    free(buf);
    return ret;
}
