/*
 * Creating vmdk images with qemu-img's options: size, adapter_type,
 * backing_file (+ backing_fmt, which must be vmdk), compat6, hwversion,
 * toolsversion, subformat (monolithicSparse, monolithicFlat,
 * twoGbMaxExtentSparse, twoGbMaxExtentFlat, streamOptimized), zeroed_grain,
 * preallocation (flat extents only) and nocow. extent_size_hint is accepted
 * and ignored.
 *
 * A sparse extent is laid out as: header, embedded descriptor (monolithic
 * files, 20 sectors), redundant grain directory and its grain tables, grain
 * directory and its grain tables, padded to a grain; grains are appended
 * after that. Every grain table is preallocated (zeroed, sparse on the host).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <time.h>

#include "block/bytes.h"
#include "drivers/format/vmdk/vmdk-int.h"

#define VMDK_CREATE_GRAIN_SECTORS 128ULL
#define VMDK_CREATE_DESC_SECTORS 20ULL
#define VMDK_TWOGB_EXTENT_SECTORS 4194304ULL /* 2 GiB */

const BlockCreateOptDesc vmdk_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "adapter_type", BLOCK_OPT_STRING, "Virtual adapter type, can be one of ide (default), "
      "lsilogic, buslogic or legacyESX", NULL },
    { "backing_file", BLOCK_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", BLOCK_OPT_STRING, "Must be 'vmdk' if present", NULL },
    { "compat6", BLOCK_OPT_BOOL, "VMDK version 6 image", "off" },
    { "extent_size_hint", BLOCK_OPT_SIZE, "Extent size hint for the image file, 0 to disable",
      NULL },
    { "hwversion", BLOCK_OPT_STRING, "VMDK hardware version", "undefined" },
    { "nocow", BLOCK_OPT_BOOL, "Turn off copy-on-write (valid only on btrfs)", "off" },
    { "preallocation", BLOCK_OPT_STRING, "Preallocation mode (allowed values: off, falloc, "
      "full)", NULL },
    { "subformat", BLOCK_OPT_STRING, "VMDK flat extent format, can be one of {monolithicSparse "
      "(default) | monolithicFlat | twoGbMaxExtentSparse | twoGbMaxExtentFlat | "
      "streamOptimized} ", NULL },
    { "toolsversion", BLOCK_OPT_STRING, "VMware guest tools version", NULL },
    { "zeroed_grain", BLOCK_OPT_BOOL, "Enable efficient zero writes using the zeroed-grain GTE "
      "feature", NULL },
    { NULL, BLOCK_OPT_STRING, NULL, NULL },
};

static const char *const subformats[] = {
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
    "streamOptimized",
};
static const char *const adapters[] = { "ide", "lsilogic", "buslogic", "legacyESX" };
static const char *const preallocs[] = { "off", "falloc", "full" };

enum { SF_MONO_SPARSE, SF_MONO_FLAT, SF_2G_SPARSE, SF_2G_FLAT, SF_STREAM };

typedef struct VmdkCreate {
    uint64_t size;
    int subformat;
    int adapter;
    int prealloc;
    bool compat6, zeroed, nocow;
    char *backing, *backing_fmt, *hwversion, *toolsversion;
    VmdkDesc desc;
    char dir[4096], base[4096];  /* the descriptor's directory; its name without .vmdk */
} VmdkCreate;

static int take_opts(BlockOpts *o, VmdkCreate *c, Error **errp)
{
    uint64_t hint;

    if (bopts_take_size(o, "size", 0, &c->size, errp) < 0 ||
        bopts_take_enum(o, "subformat", subformats, 5, SF_MONO_SPARSE, &c->subformat, errp) < 0 ||
        bopts_take_enum(o, "adapter_type", adapters, 4, 0, &c->adapter, errp) < 0 ||
        bopts_take_enum(o, "preallocation", preallocs, 3, 0, &c->prealloc, errp) < 0 ||
        bopts_take_bool(o, "compat6", false, &c->compat6, errp) < 0 ||
        bopts_take_bool(o, "zeroed_grain", false, &c->zeroed, errp) < 0 ||
        bopts_take_bool(o, "nocow", false, &c->nocow, errp) < 0 ||
        bopts_take_size(o, "extent_size_hint", 0, &hint, errp) < 0 ||
        bopts_take_str(o, "backing_file", &c->backing, errp) < 0 ||
        bopts_take_str(o, "backing_fmt", &c->backing_fmt, errp) < 0 ||
        bopts_take_str(o, "hwversion", &c->hwversion, errp) < 0 ||
        bopts_take_str(o, "toolsversion", &c->toolsversion, errp) < 0) {
        return -EINVAL;
    }
    if (c->backing_fmt && strcmp(c->backing_fmt, "vmdk")) {
        error_setg(errp, "vmdk: backing_fmt must be 'vmdk', not '%s'", c->backing_fmt);
        return -EINVAL;
    }
    if (c->compat6 && c->hwversion && strcmp(c->hwversion, "undefined")) {
        error_setg(errp, "vmdk: compat6 cannot be enabled with hwversion set");
        return -EINVAL;
    }
    if (c->prealloc && c->subformat != SF_MONO_FLAT && c->subformat != SF_2G_FLAT) {
        error_setg(errp, "vmdk: preallocation=%s is only supported for flat subformats",
                   preallocs[c->prealloc]);
        return -ENOTSUP;
    }
    if (c->size > (uint64_t)BDRV_MAX_LENGTH || c->size % VMDK_SECTOR) {
        error_setg(errp, "vmdk: size %" PRIu64 " must be a multiple of 512 up to %lld",
                   c->size, (long long)BDRV_MAX_LENGTH);
        return -EINVAL;
    }
    return bopts_check_empty(o, "vmdk", errp);
}

static uint32_t new_cid(void)
{
    uint32_t cid = 0;

    if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid)) {
        cid = (uint32_t)time(NULL);
    }
    return cid == 0xffffffffU || cid == 0xfffffffeU ? 0x12345678U : cid;
}

/* Opens the parent to take its CID and (when no size was given) its size. */
static int read_parent(VmdkCreate *c, const char *filename, Error **errp)
{
    BlockOpts *o = bopts_new();
    char path[8192];
    BlockDriverState *pbs;
    int64_t len;

    if (c->backing[0] == '/') {
        snprintf(path, sizeof(path), "%s", c->backing);
    } else {
        snprintf(path, sizeof(path), "%s/%s", c->dir, c->backing);
    }
    bopts_set(o, "driver", "vmdk");
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", path);
    pbs = bdrv_open(NULL, o, BDRV_O_NO_BACKING, errp);
    if (!pbs) {
        error_prepend(errp, "vmdk: cannot open the backing file of '%s': ", filename);
        return -EINVAL;
    }
    c->desc.parent_cid = ((BDRVVmdkState *)pbs->opaque)->desc.cid;
    len = bdrv_getlength(pbs);
    bdrv_unref(pbs);
    if (len < 0) {
        error_setg(errp, "vmdk: cannot get the size of the backing file '%s'", path);
        return (int)len;
    }
    if (!c->size) {
        c->size = (uint64_t)len;
    }
    c->desc.parent_hint = strdup(c->backing);
    return c->desc.parent_hint ? 0 : -ENOMEM;
}

static void fill_desc(VmdkCreate *c)
{
    VmdkDesc *d = &c->desc;
    uint64_t heads = c->adapter == 0 ? 16 : 255, cyl;

    d->version = 1;
    d->cid = new_cid();
    if (!c->backing) {
        d->parent_cid = 0xffffffffU;
    }
    snprintf(d->create_type, sizeof(d->create_type), "%s", subformats[c->subformat]);
    snprintf(d->adapter_type, sizeof(d->adapter_type), "%s", adapters[c->adapter]);
    snprintf(d->hw_version, sizeof(d->hw_version), "%s",
             c->hwversion && strcmp(c->hwversion, "undefined") ? c->hwversion
             : c->compat6 ? "6" : "4");
    snprintf(d->tools_version, sizeof(d->tools_version), "%s",
             c->toolsversion ? c->toolsversion : "2147483647");
    cyl = c->size / (heads * 63 * VMDK_SECTOR);
    d->cylinders = (uint32_t)(cyl > 16383 ? 16383 : cyl);
    d->heads = (uint32_t)heads;
    d->sectors_per_track = 63;
}

/* ---------------------------------------------------------------------- */
/* Files */

/* Creates path with size bytes and opens it; *pblk gets a BlockBackend on it. */
static int create_file(const char *path, uint64_t size, int prealloc, bool nocow,
                       BlockBackend **pblk, Error **errp)
{
    BlockOpts *o = bopts_new();
    char num[32];
    BlockDriverState *bs;
    int ret;

    snprintf(num, sizeof(num), "%" PRIu64, size);
    bopts_set(o, "size", num);
    bopts_set(o, "preallocation", preallocs[prealloc]);
    if (nocow) {
        bopts_set(o, "nocow", "on");
    }
    ret = bdrv_create("file", path, o, errp);
    if (ret < 0 || !pblk) {
        return ret;
    }
    o = bopts_new();
    bopts_set(o, "driver", "file");
    bopts_set(o, "filename", path);
    bs = bdrv_open(NULL, o, BDRV_O_RDWR | BDRV_O_PROTOCOL, errp);
    if (!bs) {
        return -EIO;
    }
    *pblk = blk_new_with_bs(bs, errp);
    bdrv_unref(bs);
    return *pblk ? 0 : -EIO;
}

static int coroutine_fn put(BlockBackend *blk, uint64_t off, const void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, len);
    return blk_co_pwritev(blk, (int64_t)off, (int64_t)len, &qiov, 0);
}

/* Writes a directory of n entries at sector dir whose tables start at sector gt. */
static int coroutine_fn put_gd(BlockBackend *blk, uint64_t dir, uint64_t gt, uint64_t n,
                               uint64_t gt_sectors)
{
    uint32_t *gd = calloc(n, 4);
    int ret;

    if (!gd) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < n; i++) {
        st_le32(&gd[i], (uint32_t)(gt + i * gt_sectors));
    }
    ret = put(blk, dir * VMDK_SECTOR, gd, n * 4);
    free(gd);
    return ret;
}

/* Creates one hosted sparse extent of capacity sectors (desc: embedded text or NULL). */
static int coroutine_fn create_sparse(VmdkCreate *c, const char *path, uint64_t capacity,
                                      const char *desc, Error **errp)
{
    VmdkExtent e = { .grain_size = VMDK_CREATE_GRAIN_SECTORS * VMDK_SECTOR, .gtes_per_gt = 512 };
    uint64_t grains = div_round_up_u64(capacity, VMDK_CREATE_GRAIN_SECTORS);
    uint64_t n_gt = div_round_up_u64(grains, 512), gt_sectors = 512 * 4 / VMDK_SECTOR;
    uint64_t gd_sectors = div_round_up_u64(n_gt * 4, VMDK_SECTOR);
    uint64_t desc_sectors = desc ? VMDK_CREATE_DESC_SECTORS : 0, overhead;
    uint8_t hdr[512];
    BlockBackend *blk = NULL;
    int ret;

    if (n_gt * 4 > VMDK_MAX_GD_BYTES || (desc && strlen(desc) > desc_sectors * VMDK_SECTOR)) {
        error_setg(errp, "vmdk: '%s': the image is too large for one sparse extent", path);
        return -EINVAL;
    }
    e.rgd_offset = (1 + desc_sectors) * VMDK_SECTOR;
    e.gd_offset = e.rgd_offset + (gd_sectors + n_gt * gt_sectors) * VMDK_SECTOR;
    overhead = e.gd_offset / VMDK_SECTOR + gd_sectors + n_gt * gt_sectors;
    overhead = round_up_u64(overhead, VMDK_CREATE_GRAIN_SECTORS);
    e.flags = VMDK4_FLAG_NL_DETECT | VMDK4_FLAG_RGD;
    e.version = 1;
    if (c->zeroed) {
        e.flags |= VMDK4_FLAG_ZERO_GRAIN;
        e.version = 2;
    }
    if (c->subformat == SF_STREAM) {
        e.flags |= VMDK4_FLAG_COMPRESS | VMDK4_FLAG_MARKER;
        e.compressed = true;
        e.version = 3;
    }
    ret = create_file(path, overhead * VMDK_SECTOR, 0, c->nocow, &blk, errp);
    if (ret < 0) {
        return ret;
    }
    vmdk_sparse_header(hdr, &e, capacity, desc ? 1 : 0, desc_sectors, overhead);
    ret = put(blk, 0, hdr, sizeof(hdr));
    if (ret == 0 && desc) {
        ret = put(blk, VMDK_SECTOR, desc, strlen(desc));
    }
    if (ret == 0) {
        uint64_t rgd = e.rgd_offset / VMDK_SECTOR, gd = e.gd_offset / VMDK_SECTOR;

        ret = put_gd(blk, rgd, rgd + gd_sectors, n_gt, gt_sectors);
        if (ret == 0) {
            ret = put_gd(blk, gd, gd + gd_sectors, n_gt, gt_sectors);
        }
    }
    if (ret == 0) {
        ret = blk_co_flush(blk);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vmdk: could not write '%s'", path);
    }
    blk_unref(blk);
    return ret;
}

/* Creates a text descriptor file holding c->desc. */
static int coroutine_fn write_descriptor(VmdkCreate *c, const char *filename, Error **errp)
{
    char *text = vmdk_desc_format(&c->desc);
    BlockBackend *blk = NULL;
    int ret;

    if (!text) {
        return -ENOMEM;
    }
    ret = create_file(filename, 0, 0, false, &blk, errp);
    if (ret == 0) {
        ret = put(blk, 0, text, strlen(text));
        if (ret == 0) {
            ret = blk_co_flush(blk);
        }
        if (ret < 0) {
            error_setg_errno(errp, -ret, "vmdk: could not write '%s'", filename);
        }
        blk_unref(blk);
    }
    free(text);
    return ret;
}

/*
 * fsyncs the file at path. A flat extent is only created and sized: a flush
 * through a node that wrote nothing is skipped by the block layer, so its
 * size would not be durable before the descriptor that names it.
 */
static int sync_file(const char *path, Error **errp)
{
    int fd = open(path, O_RDWR | O_CLOEXEC), ret = 0;

    if (fd < 0 || fsync(fd) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "vmdk: could not sync '%s'", path);
    }
    if (fd >= 0) {
        close(fd);
    }
    return ret;
}

int coroutine_fn vmdk_create_extent_file(const char *path, uint64_t sectors, bool sparse,
                                        bool zeroed_grain, Error **errp)
{
    VmdkCreate c = { .subformat = sparse ? SF_2G_SPARSE : SF_2G_FLAT, .zeroed = zeroed_grain };
    int ret;

    if (sparse) {
        return create_sparse(&c, path, sectors, NULL, errp);
    }
    ret = create_file(path, sectors * VMDK_SECTOR, 0, false, NULL, errp);
    return ret < 0 ? ret : sync_file(path, errp);
}

static int add_extent(VmdkDesc *d, uint64_t sectors, VmdkExtentType type, const char *name)
{
    VmdkDescExtent *n = realloc(d->ext, sizeof(*n) * (size_t)(d->n_ext + 1));

    if (!n) {
        return -ENOMEM;
    }
    d->ext = n;
    n = &d->ext[d->n_ext++];
    memset(n, 0, sizeof(*n));
    n->access = VMDK_ACCESS_RW;
    n->sectors = sectors;
    n->type = type;
    snprintf(n->type_name, sizeof(n->type_name), "%s", type == VMDK_EXT_FLAT ? "FLAT" : "SPARSE");
    n->filename = strdup(name);
    return n->filename ? 0 : -ENOMEM;
}

/* One extent per 2 GiB (or one for monolithic), named after the descriptor. */
static int coroutine_fn create_split(VmdkCreate *c, const char *filename, bool sparse,
                                     bool split, Error **errp)
{
    uint64_t sectors = c->size / VMDK_SECTOR, left = sectors;
    uint64_t max = split ? VMDK_TWOGB_EXTENT_SECTORS : sectors ? sectors : 1;
    char name[4200], path[8400];
    int ret, i = 1;

    do {
        uint64_t n = left < max ? left : max;

        if (split) {
            snprintf(name, sizeof(name), "%s-%c%03d.vmdk", c->base, sparse ? 's' : 'f', i++);
        } else {
            snprintf(name, sizeof(name), "%s-flat.vmdk", c->base);
        }
        snprintf(path, sizeof(path), "%s/%s", c->dir, name);
        ret = add_extent(&c->desc, n, sparse ? VMDK_EXT_SPARSE : VMDK_EXT_FLAT, name);
        if (ret == 0) {
            ret = sparse ? create_sparse(c, path, n, NULL, errp)
                         : create_file(path, n * VMDK_SECTOR, c->prealloc, c->nocow, NULL,
                                       errp);
            ret = ret || sparse ? ret : sync_file(path, errp);
        }
        if (ret < 0) {
            return ret;
        }
        left -= n;
    } while (left);
    return write_descriptor(c, filename, errp);
}

static int coroutine_fn create_monolithic(VmdkCreate *c, const char *filename, Error **errp)
{
    char copy[4096], *text;
    int ret;

    snprintf(copy, sizeof(copy), "%s", filename);
    ret = add_extent(&c->desc, c->size / VMDK_SECTOR, VMDK_EXT_SPARSE, basename(copy));
    if (ret < 0) {
        return ret;
    }
    text = vmdk_desc_format(&c->desc);
    if (!text) {
        return -ENOMEM;
    }
    ret = create_sparse(c, filename, c->size / VMDK_SECTOR, text, errp);
    free(text);
    return ret;
}

static int split_name(VmdkCreate *c, const char *filename, Error **errp)
{
    char copy[4096];
    size_t n;

    if (strlen(filename) >= sizeof(copy)) {
        error_setg(errp, "vmdk: file name '%.64s...' is too long", filename);
        return -ENAMETOOLONG;
    }
    snprintf(copy, sizeof(copy), "%s", filename);
    snprintf(c->dir, sizeof(c->dir), "%s", dirname(copy));
    snprintf(copy, sizeof(copy), "%s", filename);
    snprintf(c->base, sizeof(c->base), "%s", basename(copy));
    n = strlen(c->base);
    if (n > 5 && !strcmp(c->base + n - 5, ".vmdk")) {
        c->base[n - 5] = '\0';
    }
    return 0;
}

int coroutine_fn vmdk_co_create_opts(const BlockDriver *drv, const char *filename,
                                     BlockOpts *options, Error **errp)
{
    VmdkCreate c = { 0 };
    int ret;

    ret = take_opts(options, &c, errp);
    if (ret == 0) {
        ret = split_name(&c, filename, errp);
    }
    if (ret == 0 && c.backing) {
        ret = read_parent(&c, filename, errp);
    }
    if (ret < 0) {
        goto out;
    }
    fill_desc(&c);
    switch (c.subformat) {
    case SF_MONO_SPARSE:
    case SF_STREAM:
        ret = create_monolithic(&c, filename, errp);
        break;
    default:
        ret = create_split(&c, filename, c.subformat == SF_2G_SPARSE,
                           c.subformat != SF_MONO_FLAT, errp);
        break;
    }
out:
    vmdk_desc_free(&c.desc);
    free(c.backing);
    free(c.backing_fmt);
    free(c.hwversion);
    free(c.toolsversion);
    return ret;
}
