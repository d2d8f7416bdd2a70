/*
 * parallels: the Format Extension cluster (header field ext_off).
 *
 * Layout (little-endian): magic 0xAB234CEF23DCEA87 (u64), MD5 of the rest of
 * the cluster (bytes 24..end) in bytes 8..23, then features until one
 * whose magic is 0: magic (u64), flags (u64: bit 0 NECESSARY, bit 1
 * TRANSIT), data_size (u32), unused (u32), data, padding to 8 bytes. The
 * dirty bitmap feature (0x20385FAE252CB34A): size in sectors (u64), id[16],
 * granularity in sectors (u32, a power of two), l1_size (u32), then l1_size
 * u64 entries: 0 (all bits clear), 1 (all set) or the sector offset of a
 * cluster of bitmap data.
 *
 * What the driver does with it: the cluster and the bitmaps are validated
 * at open (limits: ext_off and every bitmap cluster obey the rules of BAT
 * clusters, the checksum matches, every feature lies inside the cluster,
 * the list ends with the end marker, granularity a non-zero power of two,
 * bitmap size equal to the disk size, l1_size large enough and inside its
 * feature), and the clusters they use count as used (allocation never
 * overwrites them, check counts them). The bitmaps are not exposed.
 * Nothing here is rewritten: the extension is kept intact as long as no
 * guest data changes. Before the first change of guest data in an open
 * (write, zero write, resize), the dirty bitmaps would stop describing the
 * data, so ext_off is cleared in the header and flushed first: the
 * extension is dropped, as the specification asks of software that cannot
 * keep an extension up to date, and its clusters become free space. An
 * unknown NECESSARY or TRANSIT feature cannot be dropped or kept current:
 * such images open read-only only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/md5.h"
#include "drivers/format/parallels/parallels.h"

#define PRL_EXT_MAGIC 0xab234cef23dcea87ULL
#define PRL_EXT_DIRTY_BITMAP 0x20385fae252cb34aULL
#define PRL_EXT_NECESSARY 1u
#define PRL_EXT_TRANSIT 2u
#define PRL_EXT_PREFIX 24u          /* magic + checksum */
#define PRL_EXT_FEATURE_HDR 24u
#define PRL_BITMAP_HDR 32u

/* A cluster offset that obeys the rules of BAT clusters. */
static bool prl_ext_cluster_ok(const BDRVParallelsState *s, uint64_t host)
{
    return host >= s->data_off && host < s->grow.file_len &&
           (host - s->data_off) % s->cluster_size == 0;
}

static int prl_ext_add(BlockDriverState *bs, uint64_t host, const char *what, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;

    if (!prl_ext_cluster_ok(s, host)) {
        error_setg(errp, "'%s': %s at offset %llu is not a cluster of the data area (data "
                   "offset %llu, cluster size %llu, file size %llu)", bs->filename, what,
                   (unsigned long long)host, (unsigned long long)s->data_off,
                   (unsigned long long)s->cluster_size, (unsigned long long)s->grow.file_len);
        return -EINVAL;
    }
    /* Bounded: the L1 tables all lie inside the one extension cluster. */
    if (s->n_ext_clusters >= 1 + s->cluster_size / 8) {
        error_setg(errp, "'%s': the Format Extension names too many clusters", bs->filename);
        return -EINVAL;
    }
    s->ext_clusters[s->n_ext_clusters++] = host;
    return 0;
}

static int prl_ext_bitmap(BlockDriverState *bs, const uint8_t *d, uint32_t size, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t sectors, bits, need;
    uint32_t gran, l1_size;
    int ret;

    if (size < PRL_BITMAP_HDR) {
        error_setg(errp, "'%s': dirty bitmap data_size %u is shorter than its header (%u)",
                   bs->filename, size, PRL_BITMAP_HDR);
        return -EINVAL;
    }
    sectors = ld_le64(d);
    gran = ld_le32(d + 24);
    l1_size = ld_le32(d + 28);
    if (!is_power_of_2_u64(gran)) {
        error_setg(errp, "'%s': dirty bitmap granularity %u is not a power of two",
                   bs->filename, gran);
        return -EINVAL;
    }
    if (sectors != s->disk_size / PRL_SECTOR) {
        error_setg(errp, "'%s': dirty bitmap size %llu sectors differs from the disk size "
                   "(%llu sectors)", bs->filename, (unsigned long long)sectors,
                   (unsigned long long)(s->disk_size / PRL_SECTOR));
        return -EINVAL;
    }
    bits = div_round_up_u64(sectors, gran);
    need = div_round_up_u64(div_round_up_u64(bits, 8), s->cluster_size);
    if ((uint64_t)l1_size * 8 > size - PRL_BITMAP_HDR || l1_size < need) {
        error_setg(errp, "'%s': dirty bitmap l1_size %u (needs %llu) does not fit its "
                   "data_size %u", bs->filename, l1_size, (unsigned long long)need, size);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t v = ld_le64(d + PRL_BITMAP_HDR + (size_t)i * 8), host;

        if (v <= 1) {
            continue;
        }
        if (check_mul_overflow(v, (uint64_t)PRL_SECTOR, &host)) {
            host = UINT64_MAX;
        }
        ret = prl_ext_add(bs, host, "a dirty bitmap cluster", errp);
        if (ret < 0) {
            return ret;
        }
    }
    s->n_bitmaps++;
    return 0;
}

/* Walks the features after the checksum. */
static int prl_ext_features(BlockDriverState *bs, const uint8_t *buf, size_t len, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    ByteCursor c = bcur_init(buf, len);

    bcur_seek(&c, PRL_EXT_PREFIX);
    for (;;) {
        uint64_t magic, flags;
        uint32_t size, unused;
        const uint8_t *data;
        int ret;

        if (!rd_le64(&c, &magic) || !rd_le64(&c, &flags) || !rd_le32(&c, &size) ||
            !rd_le32(&c, &unused)) {
            error_setg(errp, "'%s': the Format Extension has no end-of-features marker",
                       bs->filename);
            return -EINVAL;
        }
        if (magic == 0) {
            return 0;
        }
        data = bcur_take(&c, size);
        if (!data) {
            error_setg(errp, "'%s': Format Extension feature 0x%016llx: data_size %u runs "
                       "past the cluster", bs->filename, (unsigned long long)magic, size);
            return -EINVAL;
        }
        if (magic == PRL_EXT_DIRTY_BITMAP) {
            ret = prl_ext_bitmap(bs, data, size, errp);
            if (ret < 0) {
                return ret;
            }
        } else if (flags & (PRL_EXT_NECESSARY | PRL_EXT_TRANSIT)) {
            s->ext_keep_only = true;
        }
        bcur_seek(&c, c.pos % 8 ? (c.pos + 7) / 8 * 8 : c.pos);
    }
}

int coroutine_fn prl_ext_load(BlockDriverState *bs, uint64_t ext_off, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t host, avail;
    uint8_t sum[16];
    uint8_t *buf;
    int ret;

    if (check_mul_overflow(ext_off, (uint64_t)PRL_SECTOR, &host)) {
        host = UINT64_MAX;
    }
    s->ext_clusters = malloc((size_t)(1 + s->cluster_size / 8) * sizeof(uint64_t));
    if (!s->ext_clusters) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    ret = prl_ext_add(bs, host, "the Format Extension (ext_off)", errp);
    if (ret < 0) {
        return ret;
    }
    /* cluster_size <= 64 MiB (PRL_MAX_TRACKS); past the end of the file reads zero. */
    buf = calloc(1, s->cluster_size);
    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    avail = s->grow.file_len - host < s->cluster_size ? s->grow.file_len - host : s->cluster_size;
    ret = fmt_co_pread(bs->file, (int64_t)host, (int64_t)avail, buf);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the Format Extension of '%s'",
                         bs->filename);
    } else if (ld_le64(buf) != PRL_EXT_MAGIC) {
        error_setg(errp, "'%s': Format Extension magic 0x%016llx is wrong", bs->filename,
                   (unsigned long long)ld_le64(buf));
        ret = -EINVAL;
    } else {
        prl_md5(buf + PRL_EXT_PREFIX, s->cluster_size - PRL_EXT_PREFIX, sum);
        if (FMT_VERIFY_CHECKSUMS && memcmp(sum, buf + 8, 16) != 0) {
            error_setg(errp, "'%s': the Format Extension checksum does not match",
                       bs->filename);
            ret = -EINVAL;
        } else {
            ret = prl_ext_features(bs, buf, s->cluster_size, errp);
        }
    }
    free(buf);
    if (ret == 0) {
        s->ext_host = host;
    }
    return ret;
}

/* Clears ext_off (flushed) before guest data changes. Called with alloc_lock. */
int coroutine_fn prl_ext_drop(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    /* Durable before the extension's clusters are reused; no earlier write matters. */
    st_le64(s->meta + PRL_OFF_EXT_OFF, 0);
    ret = prl_write_header_durable(bs);
    if (ret < 0) {
        st_le64(s->meta + PRL_OFF_EXT_OFF, s->ext_host / PRL_SECTOR);
        return ret;
    }
    s->ext_host = 0;
    s->n_ext_clusters = 0;
    s->n_bitmaps = 0;
    prl_scan_bat(s);
    prl_rebuild_free(s); /* its clusters are free now; out of memory: no reuse */
    return 0;
}

void prl_ext_free(BDRVParallelsState *s)
{
    free(s->ext_clusters);
    s->ext_clusters = NULL;
    s->n_ext_clusters = 0;
}
