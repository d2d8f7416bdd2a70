/*
 * parallels: creating images and growing them.
 *
 * New images are "WithouFreSpacExt" (cluster-unit BAT entries), as
 * qemu-img makes them: 16 heads, 32 sectors per track of geometry, the
 * data area starting at the first cluster boundary after the BAT. The
 * file ends at the data offset. preallocation (a coblk extension; qemu-img
 * takes the option for its file layer only) = metadata / falloc / full
 * allocates every cluster in order, the file extended sparse / with
 * fallocate / written with zeroes.
 *
 * Growing keeps the data in place, so the BAT may only grow into the slack
 * between its end and the data offset; shrinking is not supported.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/parallels.h"

const BlockCreateOptDesc prl_create_opts[] = {
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "cluster_size", BLOCK_OPT_SIZE, "Parallels image cluster size", "1048576" },
    { "preallocation", BLOCK_OPT_STRING,
      "Preallocation mode (allowed values: off, metadata, falloc, full)", "off" },
    { NULL, 0, NULL, NULL },
};

typedef struct PrlCreate {
    uint64_t size;              /* bytes, a multiple of 512 */
    uint64_t cluster;
    uint32_t bat_entries;
    uint64_t data_off;          /* bytes */
    int prealloc;               /* PreallocMode */
} PrlCreate;

static int prl_create_check(PrlCreate *c, Error **errp)
{
    uint64_t bat_bytes;

    c->size = round_up_u64(c->size, PRL_SECTOR);
    c->cluster = round_up_u64(c->cluster, PRL_SECTOR);
    if (c->cluster == 0 || c->cluster > (uint64_t)PRL_MAX_TRACKS * PRL_SECTOR) {
        error_setg(errp, "parallels: cluster_size %llu out of range [512, %llu]",
                   (unsigned long long)c->cluster,
                   (unsigned long long)PRL_MAX_TRACKS * PRL_SECTOR);
        return -EINVAL;
    }
    if (div_round_up_u64(c->size, c->cluster) > PRL_MAX_BAT_ENTRIES) {
        error_setg(errp, "parallels: size %llu needs more than %u clusters of %llu bytes",
                   (unsigned long long)c->size, PRL_MAX_BAT_ENTRIES,
                   (unsigned long long)c->cluster);
        return -EINVAL;
    }
    c->bat_entries = (uint32_t)div_round_up_u64(c->size, c->cluster);
    bat_bytes = PRL_HEADER_SIZE + (uint64_t)c->bat_entries * 4;
    c->data_off = round_up_u64(bat_bytes, c->cluster);
    if ((c->data_off + (uint64_t)c->bat_entries * c->cluster) / c->cluster > UINT32_MAX) {
        error_setg(errp, "parallels: size %llu is too large", (unsigned long long)c->size);
        return -EINVAL;
    }
    return 0;
}

static void prl_build_header(uint8_t *h, const PrlCreate *c)
{
    memset(h, 0, PRL_HEADER_SIZE);
    memcpy(h + PRL_OFF_MAGIC, PRL_MAGIC_EXT, 16);
    st_le32(h + PRL_OFF_VERSION, PRL_VERSION);
    st_le32(h + PRL_OFF_HEADS, 16);
    st_le32(h + PRL_OFF_CYLINDERS, (uint32_t)(c->size / PRL_SECTOR / 16 / 32));
    st_le32(h + PRL_OFF_TRACKS, (uint32_t)(c->cluster / PRL_SECTOR));
    st_le32(h + PRL_OFF_BAT_ENTRIES, c->bat_entries);
    st_le64(h + PRL_OFF_NB_SECTORS, c->size / PRL_SECTOR);
    st_le32(h + PRL_OFF_INUSE, PRL_INUSE_CLOSED);
    st_le32(h + PRL_OFF_DATA_OFF, (uint32_t)(c->data_off / PRL_SECTOR));
}

static int coroutine_fn prl_write_new(BlockBackend *blk, const PrlCreate *c, Error **errp)
{
    size_t meta_len = (size_t)round_up_u64(PRL_HEADER_SIZE + (uint64_t)c->bat_entries * 4,
                                           PRL_SECTOR);
    uint8_t *meta = calloc(1, meta_len);
    uint64_t end = c->data_off;
    int ret;

    if (!meta) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    prl_build_header(meta, c);
    if (c->prealloc != PREALLOC_MODE_OFF) {
        for (uint32_t i = 0; i < c->bat_entries; i++) {
            st_le32(meta + PRL_HEADER_SIZE + (size_t)i * 4,
                    (uint32_t)(c->data_off / c->cluster + i));
        }
        end += (uint64_t)c->bat_entries * c->cluster;
    }
    /* Clusters first (zeroes), then the BAT that points at them. */
    ret = blk_co_truncate(blk, (int64_t)end, true,
                          c->prealloc == PREALLOC_MODE_METADATA ? PREALLOC_MODE_OFF
                                                                : (PreallocMode)c->prealloc,
                          0, errp);
    if (ret < 0) {
        free(meta);
        return ret;
    }
    ret = blk_co_flush(blk);
    if (ret == 0) {
        ret = fmt_blk_co_pwrite(blk, 0, (int64_t)meta_len, meta);
    }
    if (ret == 0) {
        ret = blk_co_flush(blk);
    }
    free(meta);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not write the new parallels image");
    }
    return ret;
}

int coroutine_fn prl_co_create_opts(const BlockDriver *drv, const char *filename,
                                    BlockOpts *options, Error **errp)
{
    static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full" };
    PrlCreate c = { 0 };
    BlockBackend *blk;
    int ret;

    if (bopts_take_size(options, "size", 0, &c.size, errp) < 0 ||
        bopts_take_size(options, "cluster_size", PRL_DEFAULT_CLUSTER, &c.cluster, errp) < 0 ||
        bopts_take_enum(options, "preallocation", prealloc_names, 4, 0, &c.prealloc,
                        errp) < 0 ||
        bopts_check_empty(options, "parallels", errp) < 0) {
        return -EINVAL;
    }
    ret = prl_create_check(&c, errp);
    if (ret < 0) {
        return ret;
    }
    blk = fmt_co_create_file(filename, errp);
    if (!blk) {
        return -EIO;
    }
    ret = prl_write_new(blk, &c, errp);
    blk_unref(blk);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Grow */

static int coroutine_fn prl_grow(BlockDriverState *bs, uint64_t size, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t entries = div_round_up_u64(size, s->cluster_size);
    uint64_t max_entries = (s->data_off - PRL_HEADER_SIZE) / 4;
    uint32_t old = s->bat_entries;
    size_t new_len;
    uint8_t *meta;
    int ret;

    if (!s->ext_format && size / PRL_SECTOR > UINT32_MAX) {
        error_setg(errp, "'%s': a WithoutFreeSpace image holds at most %llu bytes", bs->filename,
                   (unsigned long long)UINT32_MAX * PRL_SECTOR);
        return -EINVAL;
    }
    if (entries > max_entries || entries > PRL_MAX_BAT_ENTRIES) {
        error_setg(errp, "'%s': growing to %llu bytes needs %llu BAT entries, but the BAT can "
                   "only grow to %llu entries without moving data", bs->filename,
                   (unsigned long long)size, (unsigned long long)entries,
                   (unsigned long long)(max_entries < PRL_MAX_BAT_ENTRIES ? max_entries
                                                                            : PRL_MAX_BAT_ENTRIES));
        return -ENOTSUP;
    }
    if (entries > old) {
        new_len = (size_t)round_up_u64(PRL_HEADER_SIZE + entries * 4, PRL_SECTOR);
        meta = realloc(s->meta, new_len);
        if (!meta) {
            error_setg(errp, "out of memory");
            return -ENOMEM;
        }
        memset(meta + s->meta_len, 0, new_len - s->meta_len);
        memset(meta + PRL_HEADER_SIZE + (size_t)old * 4, 0, (size_t)(entries - old) * 4);
        s->meta = meta;
        s->meta_len = new_len;
        s->bat_entries = (uint32_t)entries;
        /* The new entries are zero on disk before the header counts them. */
        ret = prl_write_bat_range(bs, old, (uint32_t)(entries - old));
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
        s->bat_entries = old;
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not write the BAT of '%s'", bs->filename);
            return ret;
        }
        st_le32(s->meta + PRL_OFF_BAT_ENTRIES, (uint32_t)entries);
    }
    /* The new BAT entries were flushed above; the header alone remains. */
    st_le64(s->meta + PRL_OFF_NB_SECTORS, size / PRL_SECTOR);
    ret = prl_write_header_durable(bs);
    if (ret < 0) {
        st_le32(s->meta + PRL_OFF_BAT_ENTRIES, old);
        st_le64(s->meta + PRL_OFF_NB_SECTORS, s->disk_size / PRL_SECTOR);
        error_setg_errno(errp, ret, "Could not write the header of '%s'", bs->filename);
        return ret;
    }
    s->bat_entries = (uint32_t)(entries > old ? entries : old);
    s->disk_size = size;
    return 0;
}

int coroutine_fn prl_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "parallels: resizing with preallocation is not supported");
        return -ENOTSUP;
    }
    if (offset < 0 || (uint64_t)offset % PRL_SECTOR) {
        error_setg(errp, "parallels: the new size %lld is not a multiple of 512",
                   (long long)offset);
        return -EINVAL;
    }
    if ((uint64_t)offset < s->disk_size) {
        error_setg(errp, "parallels: shrinking images is not supported");
        return -ENOTSUP;
    }
    if ((uint64_t)offset == s->disk_size) {
        return 0;
    }
    ret = prl_prepare_change(bs);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not resize '%s'", bs->filename);
        return ret;
    }
    co_rwlock_wrlock(&s->lock);
    co_mutex_lock(&s->alloc_lock);
    ret = prl_grow(bs, (uint64_t)offset, errp);
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->lock);
    return ret;
}
