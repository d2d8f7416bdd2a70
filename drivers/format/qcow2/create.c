/*
 * qcow2: image creation with qemu-img's option names.
 *
 * The file gets a header, a one-cluster refcount table and one refcount
 * block (clusters 0..2) describing an empty image (size 0, no L1 table);
 * the image is then opened with this driver, which writes the backing file
 * name and extensions, grows it to the requested size (allocating the L1
 * table) and preallocates, all through the normal metadata code.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

const BlockCreateOptDesc qcow2_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "compat", BLOCK_OPT_STRING, "Compatibility level (v2 [0.10], v3 [1.1])", "1.1" },
    { "backing_file", BLOCK_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", BLOCK_OPT_STRING, "Image format of the base image", NULL },
    { "data_file", BLOCK_OPT_STRING, "File name of an external data file", NULL },
    { "data_file_raw", BLOCK_OPT_BOOL, "The external data file must stay valid as a raw image",
      "off" },
    { "encryption", BLOCK_OPT_BOOL, "Encrypt the image with format 'aes' (not supported)",
      "off" },
    { "cluster_size", BLOCK_OPT_SIZE, "qcow2 cluster size", "65536" },
    { "extended_l2", BLOCK_OPT_BOOL, "Extended L2 tables", "off" },
    { "preallocation", BLOCK_OPT_STRING,
      "Preallocation mode (allowed values: off, metadata, falloc, full)", "off" },
    { "lazy_refcounts", BLOCK_OPT_BOOL, "Postpone refcount updates", "off" },
    { "refcount_bits", BLOCK_OPT_NUMBER, "Width of a reference count entry in bits", "16" },
    { "compression_type", BLOCK_OPT_STRING,
      "Compression method used for image cluster compression (zlib, zstd)", "zlib" },
    { NULL, 0, NULL, NULL },
};

typedef struct CreateOpts {
    uint64_t size, cluster_size, refcount_bits;
    bool has_size, lazy, extl2, data_file_raw, encryption;
    int version, prealloc, compression;
    char *backing_file, *backing_fmt, *data_file, *compat;
} CreateOpts;

static void free_create_opts(CreateOpts *c)
{
    free(c->backing_file);
    free(c->backing_fmt);
    free(c->data_file);
    free(c->compat);
}

static int take_create_opts(BlockOpts *o, CreateOpts *c, Error **errp)
{
    static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full" };
    static const char *const comp_names[] = { "zlib", "zstd" };
    int r;

    r = bopts_take_size(o, "size", 0, &c->size, errp);
    if (r < 0) {
        return -EINVAL;
    }
    c->has_size = r > 0;
    if (bopts_take_str(o, "compat", &c->compat, errp) < 0 ||
        bopts_take_str(o, "backing_file", &c->backing_file, errp) < 0 ||
        bopts_take_str(o, "backing_fmt", &c->backing_fmt, errp) < 0 ||
        bopts_take_str(o, "data_file", &c->data_file, errp) < 0 ||
        bopts_take_bool(o, "data_file_raw", false, &c->data_file_raw, errp) < 0 ||
        bopts_take_bool(o, "encryption", false, &c->encryption, errp) < 0 ||
        bopts_take_size(o, "cluster_size", 65536, &c->cluster_size, errp) < 0 ||
        bopts_take_bool(o, "extended_l2", false, &c->extl2, errp) < 0 ||
        bopts_take_enum(o, "preallocation", prealloc_names, 4, 0, &c->prealloc, errp) < 0 ||
        bopts_take_bool(o, "lazy_refcounts", false, &c->lazy, errp) < 0 ||
        bopts_take_uint64(o, "refcount_bits", 16, &c->refcount_bits, errp) < 0 ||
        bopts_take_enum(o, "compression_type", comp_names, 2, 0, &c->compression, errp) < 0) {
        return -EINVAL;
    }
    if (bopts_has(o, "encrypt.format") || bopts_has(o, "encrypt.key-secret")) {
        error_setg(errp, "qcow2: encrypted images are not supported");
        return -ENOTSUP;
    }
    return bopts_check_empty(o, "qcow2", errp);
}

/* Checks option combinations, as qemu-img does. */
static int check_create_opts(CreateOpts *c, Error **errp)
{
    if (!c->compat || !strcmp(c->compat, "1.1") || !strcmp(c->compat, "v3")) {
        c->version = 3;
    } else if (!strcmp(c->compat, "0.10") || !strcmp(c->compat, "v2")) {
        c->version = 2;
    } else {
        error_setg(errp, "qcow2: invalid compatibility level '%s' (use 0.10 or 1.1)", c->compat);
        return -EINVAL;
    }
    if (c->encryption) {
        error_setg(errp, "qcow2: encrypted images are not supported");
        return -ENOTSUP;
    }
    if (!is_power_of_2_u64(c->cluster_size) || c->cluster_size < 512 ||
        c->cluster_size > (2ULL << 20)) {
        error_setg(errp, "qcow2: cluster size must be a power of two between 512 and 2048k "
                   "(got %llu)", (unsigned long long)c->cluster_size);
        return -EINVAL;
    }
    if (!is_power_of_2_u64(c->refcount_bits) || c->refcount_bits > 64) {
        error_setg(errp, "qcow2: refcount_bits must be a power of two up to 64 (got %llu)",
                   (unsigned long long)c->refcount_bits);
        return -EINVAL;
    }
    if (c->version == 2 && (c->lazy || c->extl2 || c->data_file || c->compression ||
                            c->refcount_bits != 16)) {
        error_setg(errp, "qcow2: compat=0.10 does not support %s",
                   c->lazy ? "lazy refcounts" : c->extl2 ? "extended L2 entries"
                   : c->data_file ? "external data files"
                   : c->compression ? "compression_type=zstd" : "refcount_bits other than 16");
        return -EINVAL;
    }
    if (c->extl2 && c->cluster_size < 16384) {
        error_setg(errp, "qcow2: extended L2 tables require a cluster size of at least 16k");
        return -EINVAL;
    }
    if (c->data_file_raw && !c->data_file) {
        error_setg(errp, "qcow2: data_file_raw requires data_file");
        return -EINVAL;
    }
    if (c->data_file_raw && c->backing_file) {
        error_setg(errp, "qcow2: backing_file and data_file_raw cannot be used together");
        return -EINVAL;
    }
    if (c->backing_file && c->prealloc != PREALLOC_MODE_OFF && !c->extl2) {
        error_setg(errp, "qcow2: backing file and preallocation can only be used at the same "
                   "time if extended_l2 is on");
        return -EINVAL;
    }
    if (c->backing_file && strlen(c->backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "qcow2: backing file name is longer than %d bytes",
                   QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (c->compression == QCOW2_COMPRESSION_ZSTD && !qcow2_compression_supported(1)) {
        error_setg(errp, "qcow2: compression_type=zstd is not supported by this build");
        return -ENOTSUP;
    }
    if (c->data_file_raw && c->prealloc == PREALLOC_MODE_OFF) {
        c->prealloc = PREALLOC_MODE_METADATA; /* the data file stays a valid raw image */
    }
    return 0;
}

/* Creates an empty file through the file protocol. */
static int coroutine_fn create_file(const char *path, Error **errp)
{
    const BlockDriver *file = bdrv_find_format("file");
    BlockOpts *o = bopts_new();
    int ret;

    bopts_set(o, "size", "0");
    ret = file->co_create_opts(file, path, o, errp);
    bopts_free(o);
    return ret;
}

/* The first three clusters: header, refcount table, refcount block. */
static int coroutine_fn write_empty_image(const char *path, CreateOpts *c, Error **errp)
{
    uint64_t cs = c->cluster_size;
    int bits = __builtin_ctzll(cs), order = __builtin_ctzll(c->refcount_bits);
    BDRVQcow2State fake = { .refcount_order = order };
    uint8_t *buf = calloc(3, cs);
    BlockOpts *o = bopts_new();
    BlockBackend *blk;
    size_t pos = 112;
    int ret;

    if (!buf) {
        bopts_free(o);
        return -ENOMEM;
    }
    st_be32(buf, QCOW2_MAGIC);
    st_be32(buf + 4, (uint32_t)c->version);
    st_be32(buf + 20, (uint32_t)bits);
    st_be64(buf + 40, 3 * cs);           /* l1_table_offset (l1_size 0) */
    st_be64(buf + 48, cs);               /* refcount_table_offset */
    st_be32(buf + 56, 1);                /* refcount_table_clusters */
    if (c->version == 3) {
        st_be64(buf + 72, (c->data_file ? QCOW2_INCOMPAT_DATA_FILE : 0) |
                          (c->extl2 ? QCOW2_INCOMPAT_EXTL2 : 0) |
                          (c->compression ? QCOW2_INCOMPAT_COMPRESSION : 0));
        st_be64(buf + 80, c->lazy ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        st_be64(buf + 88, c->data_file_raw ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);
        st_be32(buf + 96, (uint32_t)order);
        st_be32(buf + 100, 112);
        buf[104] = (uint8_t)c->compression;
        if (c->data_file) {
            uint32_t n = (uint32_t)strlen(c->data_file);

            if (n > QCOW2_MAX_DATA_FILE_NAME || pos + 16 + n > cs) {
                error_setg(errp, "qcow2: data file name is too long");
                free(buf);
                bopts_free(o);
                return -EINVAL;
            }
            st_be32(buf + pos, QCOW2_EXT_DATA_FILE);
            st_be32(buf + pos + 4, n);
            memcpy(buf + pos + 8, c->data_file, n);
        }
    }
    st_be64(buf + cs, 2 * cs);           /* refcount table entry 0 -> block at cluster 2 */
    for (int i = 0; i < 3; i++) {
        qcow2_refblock_set(&fake, buf + 2 * cs, (uint64_t)i, 1);
    }
    bopts_set(o, "driver", "file");
    bopts_set(o, "filename", path);
    blk = blk_new_open(NULL, o, BDRV_O_RDWR, errp);
    if (!blk) {
        free(buf);
        return -EIO;
    }
    {
        IOVector v;

        iovector_init_buf(&v, buf, 3 * cs);
        ret = blk_co_pwritev(blk, 0, (int64_t)(3 * cs), &v, 0);
    }
    if (ret >= 0) {
        ret = blk_co_flush(blk);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not write the header of '%s'", path);
    }
    blk_unref(blk);
    free(buf);
    return ret;
}

/* Size of the backing file when no size is given; records a probed format. */
static int coroutine_fn backing_size(const char *image, CreateOpts *c, Error **errp)
{
    char dir[4096], path[8192];
    BlockOpts *o = bopts_new();
    BlockBackend *blk;

    snprintf(dir, sizeof(dir), "%s", image);
    if (c->backing_file[0] == '/' || strchr(c->backing_file, ':')) {
        snprintf(path, sizeof(path), "%s", c->backing_file);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dirname(dir), c->backing_file);
    }
    if (c->backing_fmt) {
        bopts_set(o, "driver", c->backing_fmt);
    }
    blk = blk_new_open(path, o, BDRV_O_NO_BACKING, errp);
    if (!blk) {
        error_prepend(errp, "qcow2: could not open backing file to get its size: ");
        return -EINVAL;
    }
    if (!c->backing_fmt) {
        c->backing_fmt = strdup(bdrv_get_format_name(blk_bs(blk)));
    }
    c->size = (uint64_t)blk_getlength(blk);
    c->has_size = true;
    blk_unref(blk);
    return 0;
}

static int coroutine_fn finish_image(const char *path, CreateOpts *c, Error **errp)
{
    BlockOpts *o = bopts_new();
    BlockBackend *blk;
    int ret;

    bopts_set(o, "driver", "qcow2");
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", path);
    if (c->data_file) {
        bopts_set(o, "data-file.driver", "file");
        bopts_set(o, "data-file.filename", c->data_file);
    }
    blk = blk_new_open(NULL, o, BDRV_O_RDWR | BDRV_O_NO_BACKING, errp);
    if (!blk) {
        return -EIO;
    }
    ret = bdrv_find_format("qcow2")->co_change_backing_file(blk_bs(blk), c->backing_file,
                                                           c->backing_fmt, errp);
    if (ret == 0) {
        ret = blk_co_truncate(blk, (int64_t)c->size, false, (PreallocMode)c->prealloc, 0, errp);
    }
    if (ret == 0) {
        ret = blk_co_flush(blk);
        if (ret < 0) {
            error_setg_errno(errp, ret, "qcow2: could not flush '%s'", path);
        }
    }
    blk_unref(blk);
    return ret;
}

int coroutine_fn qcow2_co_create_opts(const BlockDriver *drv, const char *filename,
                                      BlockOpts *options, Error **errp)
{
    CreateOpts c;
    int ret;

    memset(&c, 0, sizeof(c));
    ret = take_create_opts(options, &c, errp);
    if (ret == 0) {
        ret = check_create_opts(&c, errp);
    }
    if (ret == 0 && !c.has_size && c.backing_file) {
        ret = backing_size(filename, &c, errp);
    }
    if (ret == 0 && !c.has_size) {
        error_setg(errp, "qcow2: image size ('size') is required");
        ret = -EINVAL;
    }
    if (ret == 0 && c.size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "qcow2: image size %llu is too large", (unsigned long long)c.size);
        ret = -EFBIG;
    }
    if (ret == 0) {
        /* Before the file exists: a size past the limits leaves nothing behind. */
        int cb = __builtin_ctzll(c.cluster_size);

        ret = qcow2_check_guest_size(filename, c.size, cb, cb - (c.extl2 ? 4 : 3), errp);
    }
    if (ret == 0) {
        ret = create_file(filename, errp);
    }
    if (ret == 0 && c.data_file) {
        ret = create_file(c.data_file, errp);
    }
    if (ret == 0) {
        ret = write_empty_image(filename, &c, errp);
    }
    if (ret == 0) {
        ret = finish_image(filename, &c, errp);
    }
    free_create_opts(&c);
    return ret;
}
