/*
 * The "parallels" format driver: header parsing, open and close, info and
 * the driver table. See parallels.h for the layout.
 *
 * The in_use field: set to "open" (and flushed) before the first change
 * after the image is opened read-write (an open that changes nothing leaves
 * the file untouched), set to "closed" (0x312e3276, the value the
 * specification gives) on a clean close. An image found "open" was not closed cleanly:
 * a read-write open checks and repairs it first (as check -r all would)
 * and says so; a read-only open works with a warning, and check reports
 * the flag as a corruption that -r all clears.
 *
 * Crash safety: a new cluster's data is written and flushed before the BAT
 * entry that points at it (io.c: the entries are written at the next guest
 * flush, in batches); the BAT entry is the only metadata that
 * an allocation changes, so a cut leaves at worst space past the last used
 * cluster, which check reports as a leak and -r leaks truncates.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/drivers.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/parallels.h"

/* ---------------------------------------------------------------------- */
/* Metadata writes */

/* Writes sectors [first, first + count) of the header + BAT as they are in memory. */
static int coroutine_fn prl_write_sectors(void *opaque, uint64_t first, uint32_t count)
{
    BlockDriverState *bs = opaque;
    BDRVParallelsState *s = bs->opaque;
    uint64_t start = (uint64_t)first * PRL_SECTOR;

    BLKDBG_EVENT(bs->file, first == 0 ? BLKDBG_HEADER_UPDATE : BLKDBG_MAP_UPDATE);
    return fmt_co_pwrite(bs->file, (int64_t)start, (int64_t)count * PRL_SECTOR,
                         s->meta + start, 0);
}

/*
 * Writes the BAT sectors that new clusters made dirty (io.c), after a flush
 * of their data. Called with alloc_lock (or while nothing else runs).
 */
int coroutine_fn prl_commit_bat(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;

    return fmt_defer_commit(&s->bat_dirty, bs->file, prl_write_sectors, bs);
}

/*
 * Writes the first sector (the header and the first BAT entries). Dirty BAT
 * sectors are committed first: the sector may hold entries of new clusters.
 */
int coroutine_fn prl_write_header(BlockDriverState *bs)
{
    int ret = prl_commit_bat(bs);

    return ret < 0 ? ret : prl_write_sectors(bs, 0, 1);
}

/*
 * Writes the first sector and makes it durable before anything issued after
 * it returns. With no BAT sector waiting for its commit, that is one FUA
 * write: the file driver makes it a single pwritev2(RWF_DSYNC), where a
 * flush would write back every other dirty page of the image file too.
 * FUA says nothing of the writes issued before it: a caller whose header
 * depends on earlier writes flushes them first. With BAT sectors waiting,
 * they are committed (their data flushed, then written) and flushed along
 * with the header, as sector 0 may hold some of those entries.
 */
int coroutine_fn prl_write_header_durable(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    if (s->bat_dirty.n == 0) {
        BLKDBG_EVENT(bs->file, BLKDBG_HEADER_UPDATE);
        return fmt_co_pwrite(bs->file, 0, PRL_SECTOR, s->meta, BDRV_REQ_FUA);
    }
    ret = prl_write_header(bs);
    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

/* Writes the sectors that hold BAT entries [first, first + count), dirty ones committed first. */
int coroutine_fn prl_write_bat_range(BlockDriverState *bs, uint32_t first, uint32_t count)
{
    uint64_t start = (PRL_HEADER_SIZE + (uint64_t)first * 4) / PRL_SECTOR;
    uint64_t end = div_round_up_u64(PRL_HEADER_SIZE + ((uint64_t)first + count) * 4, PRL_SECTOR);
    int ret;

    if (count == 0) {
        return 0;
    }
    ret = prl_commit_bat(bs);
    return ret < 0 ? ret : prl_write_sectors(bs, (uint32_t)start, (uint32_t)(end - start));
}

/* ---------------------------------------------------------------------- */
/* Probe and header */

static int prl_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    if (buf_size < (int)PRL_HEADER_SIZE) {
        return 0;
    }
    if ((memcmp(buf, PRL_MAGIC, 16) == 0 || memcmp(buf, PRL_MAGIC_EXT, 16) == 0) &&
        ld_le32(buf + PRL_OFF_VERSION) == PRL_VERSION) {
        return 100;
    }
    return 0;
}

/*
 * Cluster geometry and table size. Limits: version 2; tracks (cluster size
 * in sectors) 1 .. PRL_MAX_TRACKS (no zero divisor); bat_entries at most
 * PRL_MAX_BAT_ENTRIES; nb_sectors (low 32 bits only for "WithoutFreeSpace",
 * as the specification says) at most bat_entries * tracks; in_use 0,
 * "open" or "closed".
 */
static int prl_check_geometry(BlockDriverState *bs, BDRVParallelsState *s, const uint8_t *h,
                              Error **errp)
{
    const char *fn = bs->filename;
    uint32_t version = ld_le32(h + PRL_OFF_VERSION);
    uint32_t inuse = ld_le32(h + PRL_OFF_INUSE);
    uint64_t nb_sectors = ld_le64(h + PRL_OFF_NB_SECTORS), max_sectors;

    if (memcmp(h, PRL_MAGIC_EXT, 16) == 0) {
        s->ext_format = true;
    } else if (memcmp(h, PRL_MAGIC, 16) != 0) {
        error_setg(errp, "'%s' is not a parallels image (bad magic)", fn);
        return -EINVAL;
    }
    if (version != PRL_VERSION) {
        error_setg(errp, "'%s': parallels version %u is not supported (only 2)", fn, version);
        return -ENOTSUP;
    }
    s->tracks = ld_le32(h + PRL_OFF_TRACKS);
    if (s->tracks == 0 || s->tracks > PRL_MAX_TRACKS) {
        error_setg(errp, "'%s': tracks (cluster size in sectors) %u out of range [1, %u]", fn,
                   s->tracks, PRL_MAX_TRACKS);
        return -EINVAL;
    }
    s->cluster_size = (uint64_t)s->tracks * PRL_SECTOR;
    s->unit = s->ext_format ? s->cluster_size : PRL_SECTOR;
    s->bat_entries = ld_le32(h + PRL_OFF_BAT_ENTRIES);
    if (s->bat_entries > PRL_MAX_BAT_ENTRIES) {
        error_setg(errp, "'%s': nb_bat_entries %u exceeds the limit %u", fn, s->bat_entries,
                   PRL_MAX_BAT_ENTRIES);
        return -EFBIG;
    }
    if (!s->ext_format) {
        nb_sectors &= 0xffffffffu; /* only the low 4 bytes are used */
    }
    if (check_mul_overflow((uint64_t)s->bat_entries, (uint64_t)s->tracks, &max_sectors) ||
        nb_sectors > max_sectors) {
        error_setg(errp, "'%s': nb_sectors %llu exceeds nb_bat_entries %u * tracks %u", fn,
                   (unsigned long long)nb_sectors, s->bat_entries, s->tracks);
        return -EINVAL;
    }
    s->disk_size = nb_sectors * PRL_SECTOR;
    if (inuse != 0 && inuse != PRL_INUSE_OPEN && inuse != PRL_INUSE_CLOSED) {
        error_setg(errp, "'%s': in_use 0x%08x is neither 0, 0x%08x nor 0x%08x", fn, inuse,
                   PRL_INUSE_OPEN, PRL_INUSE_CLOSED);
        return -EINVAL;
    }
    s->unclean = inuse == PRL_INUSE_OPEN;
    return 0;
}

/*
 * The data offset. Limits: "WithoutFreeSpace" with data_off 0 starts the
 * data right after the BAT (sector-aligned); otherwise data_off sectors,
 * which must not overlap the BAT, must lie inside the file, and for
 * "WithouFreSpacExt" must be non-zero and a multiple of the cluster size.
 */
static int prl_check_data_off(BlockDriverState *bs, BDRVParallelsState *s, const uint8_t *h,
                              uint64_t file_len, Error **errp)
{
    const char *fn = bs->filename;
    uint32_t data_off = ld_le32(h + PRL_OFF_DATA_OFF);
    uint64_t bat_end = PRL_HEADER_SIZE + (uint64_t)s->bat_entries * 4;

    s->meta_len = (size_t)round_up_u64(bat_end, PRL_SECTOR);
    if (data_off == 0 && !s->ext_format) {
        s->data_off = s->meta_len;
    } else {
        s->data_off = (uint64_t)data_off * PRL_SECTOR;
    }
    if (s->data_off < bat_end) {
        error_setg(errp, "'%s': data_off %u (sectors) overlaps the BAT of %u entries", fn,
                   data_off, s->bat_entries);
        return -EINVAL;
    }
    if (s->ext_format && s->data_off % s->cluster_size) {
        error_setg(errp, "'%s': data_off %u is not a multiple of the cluster size (%u sectors)",
                   fn, data_off, s->tracks);
        return -EINVAL;
    }
    if (s->data_off > file_len) {
        error_setg(errp, "'%s': data_off %u (sectors) lies past the end of the file (%llu "
                   "bytes)", fn, data_off, (unsigned long long)file_len);
        return -EINVAL;
    }
    return 0;
}

/*
 * Derives data_end from the BAT and marks the image corrupt if an entry
 * points outside the data area or the file, is not aligned to a cluster
 * from the data offset, or is shared (check -r all repairs those).
 * Entries that start inside the file count for data_end even if their
 * cluster runs past its end (the tail reads as zeroes).
 */
void prl_scan_bat(BDRVParallelsState *s)
{
    s->data_end = s->data_off;
    s->corrupt = false;
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        uint32_t e = prl_entry(s, i);
        uint64_t host = prl_host(s, e);

        if (e == 0) {
            continue;
        }
        if (host < s->data_off || host >= s->grow.file_len ||
            (host - s->data_off) % s->cluster_size) {
            s->corrupt = true;
            continue;
        }
        if (host + s->cluster_size > s->data_end) {
            s->data_end = host + s->cluster_size;
        }
    }
    for (uint32_t i = 0; i < s->n_ext_clusters; i++) {
        if (s->ext_clusters[i] + s->cluster_size > s->data_end) {
            s->data_end = s->ext_clusters[i] + s->cluster_size;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Open */

static int coroutine_fn prl_read_meta(BlockDriverState *bs, BDRVParallelsState *s,
                                      Error **errp)
{
    int64_t len = bdrv_co_getlength(bs->file->bs);
    uint8_t h[PRL_HEADER_SIZE];
    int ret;

    if (len < 0) {
        error_setg_errno(errp, (int)len, "Could not get the size of '%s'", bs->filename);
        return (int)len;
    }
    s->grow.file_len = (uint64_t)len;
    if (s->grow.file_len < PRL_HEADER_SIZE) {
        error_setg(errp, "'%s' is too short for a parallels header (%lld bytes)", bs->filename,
                   (long long)len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, 0, PRL_HEADER_SIZE, h);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
        return ret;
    }
    ret = prl_check_geometry(bs, s, h, errp);
    if (ret == 0) {
        ret = prl_check_data_off(bs, s, h, s->grow.file_len, errp);
    }
    if (ret == 0) {
        ret = fmt_co_grow_init(bs->file, &s->grow, s->prealloc_size, s->cluster_size,
                               s->prealloc_mode);
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not get the size of '%s'", bs->filename);
        }
    }
    if (ret < 0) {
        return ret;
    }
    /* meta_len <= data_off <= file length (checked) and <= 64 MiB + 512. */
    s->meta = calloc(1, s->meta_len);
    if (!s->meta) {
        error_setg(errp, "Could not allocate the BAT of '%s' (%u entries)", bs->filename,
                   s->bat_entries);
        return -ENOMEM;
    }
    ret = fmt_co_pread(bs->file, 0, (int64_t)s->meta_len, s->meta);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the BAT of '%s'", bs->filename);
    }
    return ret;
}

/* The empty-image flag: the BAT is cleared (on disk too when writable), then the flag. */
static int coroutine_fn prl_apply_empty_flag(BlockDriverState *bs, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    uint32_t flags = ld_le32(s->meta + PRL_OFF_FLAGS);
    int ret;

    if (!(flags & PRL_FLAG_EMPTY)) {
        return 0;
    }
    memset(s->meta + PRL_HEADER_SIZE, 0, s->meta_len - PRL_HEADER_SIZE);
    if (bs->read_only) {
        return 0;
    }
    ret = prl_write_bat_range(bs, 0, s->bat_entries);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        st_le32(s->meta + PRL_OFF_FLAGS, flags & ~PRL_FLAG_EMPTY);
        ret = prl_write_header(bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not clear the BAT of the empty image '%s'",
                         bs->filename);
    }
    return ret;
}

/* An image left in use: repaired when writable, else a warning. */
static int coroutine_fn prl_open_unclean(BlockDriverState *bs, Error **errp)
{
    BdrvCheckResult res = { 0 };
    int ret;

    if (bs->read_only) {
        coblk_warn("parallels: '%s' was not closed cleanly (in_use is set); it is opened "
                   "read-only as it is: run 'check -r all' to repair it", bs->filename);
        return 0;
    }
    ret = prl_do_check(bs, &res, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    /* in_use still says "open" on disk: the next clean close clears it. */
    ((BDRVParallelsState *)bs->opaque)->rw = true;
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not check '%s', which was not closed cleanly",
                         bs->filename);
        return ret;
    }
    coblk_warn("parallels: '%s' was not closed cleanly: checked and repaired (%d corruptions "
               "fixed, %d leaks fixed%s)", bs->filename, res.corruptions_fixed,
               res.leaks_fixed, res.corruptions > res.corruptions_fixed ? ", some remain" : "");
    return 0;
}

/*
 * Sets in_use to "open", durably before the first change of the session
 * (which is issued after this returns; nothing before it needs ordering).
 * Called with alloc_lock.
 */
int coroutine_fn prl_mark_in_use(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    st_le32(s->meta + PRL_OFF_INUSE, PRL_INUSE_OPEN);
    ret = prl_write_header_durable(bs);
    s->rw = ret == 0;
    return ret;
}

static int coroutine_fn prl_co_open(BlockDriverState *bs, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t ext_off;
    int ret = prl_read_meta(bs, s, errp);

    if (ret < 0) {
        return ret;
    }
    ext_off = ld_le64(s->meta + PRL_OFF_EXT_OFF);
    if (ext_off) {
        ret = prl_ext_load(bs, ext_off, errp);
        if (ret < 0) {
            return ret;
        }
        if (s->ext_keep_only && !bs->read_only) {
            error_setg(errp, "'%s': its Format Extension holds an extension this driver does "
                       "not know that must be kept unchanged: it can only be opened "
                       "read-only", bs->filename);
            return -ENOTSUP;
        }
    }
    ret = prl_apply_empty_flag(bs, errp);
    if (ret < 0) {
        return ret;
    }
    prl_scan_bat(s);
    if (prl_rebuild_free(s) < 0) { /* also finds shared clusters */
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    if (s->unclean) {
        ret = prl_open_unclean(bs, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->corrupt) {
        coblk_warn("parallels: '%s': the BAT has entries outside the data area or the file, "
                   "misaligned or shared; %s", bs->filename,
                   bs->read_only ? "such clusters fail to read"
                                 : "writes fail until 'check -r all' repairs it");
    }
    return 0;
}

typedef struct PrlOpenCo {
    BlockDriverState *bs;
    Error **errp;
} PrlOpenCo;

static int64_t coroutine_fn prl_open_co(void *opaque)
{
    PrlOpenCo *o = opaque;

    return prl_co_open(o->bs, o->errp);
}

static void prl_free(BDRVParallelsState *s)
{
    free(s->meta);
    s->meta = NULL;
    free(s->free_cl);
    s->free_cl = NULL;
    prl_ext_free(s);
}

/*
 * The open options QEMU's parallels driver takes, same names and defaults:
 * prealloc-mode (falloc: grow with fallocate; truncate: sparse) and
 * prealloc-size (how far the file is grown past a new cluster; 0: not).
 */
static int prl_take_opts(BDRVParallelsState *s, BlockOpts *options, Error **errp)
{
    static const char *const modes[] = { "falloc", "truncate" };
    int mode;

    if (bopts_take_enum(options, "prealloc-mode", modes, 2, 0, &mode, errp) < 0 ||
        bopts_take_size(options, "prealloc-size", PRL_PREALLOC_SIZE, &s->prealloc_size,
                        errp) < 0) {
        return -EINVAL;
    }
    s->prealloc_mode = mode == 0 ? PREALLOC_MODE_FALLOC : PREALLOC_MODE_OFF;
    return 0;
}

static int prl_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    PrlOpenCo o = { bs, errp };
    int ret = prl_take_opts(s, options, errp);

    if (ret < 0) {
        return ret;
    }
    co_rwlock_init(&s->lock);
    co_mutex_init(&s->alloc_lock);
    fmt_inflight_init(&s->allocs);
    fmt_defer_init(&s->bat_dirty);
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = (int)bdrv_run_co(bs->aio_context, prl_open_co, &o);
    if (ret < 0) {
        prl_free(s);
    }
    return ret;
}

/* A clean close point: everything durable, then in_use says "closed". */
static int64_t coroutine_fn prl_mark_closed_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVParallelsState *s = bs->opaque;
    int ret;

    if (!s->rw) {
        return 0;
    }
    co_mutex_lock(&s->alloc_lock);
    /* The tail is cut to data_end: their clusters must be linked. */
    fmt_inflight_wait_all(&s->allocs, &s->alloc_lock);
    ret = prl_commit_bat(bs); /* data, then the BAT entries of new clusters */
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    /* The tail grown ahead of new clusters goes before the header says "closed". */
    ret = ret ? ret : fmt_co_grow_trim(bs->file, &s->grow, s->data_end);
    if (ret == 0 && !s->unclean) {
        /*
         * Not a FUA write: the flush after the header also makes the trim
         * above durable, which the header's "closed" covers.
         */
        st_le32(s->meta + PRL_OFF_INUSE, PRL_INUSE_CLOSED);
        ret = prl_write_header(bs);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret < 0) {
            st_le32(s->meta + PRL_OFF_INUSE, PRL_INUSE_OPEN);
        }
    }
    if (ret == 0) {
        s->rw = false;
    }
    co_mutex_unlock(&s->alloc_lock);
    return ret;
}

static void prl_close(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;

    if (bdrv_run_co(bs->aio_context, prl_mark_closed_co, bs) < 0) {
        coblk_warn("parallels: '%s' stays marked in use: closing it failed", bs->filename);
    }
    prl_free(s);
}

/*
 * Going read-only is a clean close point; after going read-write the image
 * is marked in use before its first change (prl_prepare_change).
 */
static int prl_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                              Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    if (!(new_flags & BDRV_O_RDWR)) {
        ret = (int)bdrv_run_co(bs->aio_context, prl_mark_closed_co, bs);
        if (ret < 0) {
            error_setg_errno(errp, ret, "Could not mark '%s' closed", bs->filename);
        }
        return ret;
    }
    if (!s->rw && (s->unclean || s->ext_keep_only)) {
        error_setg(errp, "'%s' cannot be reopened read-write: %s", bs->filename,
                   s->unclean ? "it was not closed cleanly; run 'check -r all' first"
                              : "its Format Extension must be kept unchanged");
        return -EACCES;
    }
    /* The file is still read-only here: in_use is set before the first change (io.c). */
    return 0;
}

static void prl_reopen_noop(BlockDriverState *bs)
{
}

static int64_t coroutine_fn prl_co_getlength(BlockDriverState *bs)
{
    BDRVParallelsState *s = bs->opaque;

    return (int64_t)s->disk_size;
}

static int prl_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVParallelsState *s = bs->opaque;

    bdi->cluster_size = (int64_t)s->cluster_size;
    bdi->is_dirty = s->unclean;
    return 0;
}

/* {"subformat": "ext", "cluster-size": ..., "bitmaps": n} for coblk-img info. */
static char *prl_get_specific_info(BlockDriverState *bs, Error **errp)
{
    BDRVParallelsState *s = bs->opaque;
    char *out = NULL;

    if (asprintf(&out, "{\"subformat\": \"%s\", \"data-offset\": %llu, \"bat-entries\": %u, "
                 "\"format-extension\": %s, \"dirty-bitmaps\": %u}",
                 s->ext_format ? "WithouFreSpacExt" : "WithoutFreeSpace",
                 (unsigned long long)s->data_off, s->bat_entries,
                 s->ext_host ? "true" : "false", s->n_bitmaps) < 0) {
        error_setg(errp, "out of memory");
        return NULL;
    }
    return out;
}

static int prl_get_geometry(BlockDriverState *bs, BlockGeometry *geo)
{
    BDRVParallelsState *s = bs->opaque;

    geo->cylinders = ld_le32(s->meta + PRL_OFF_CYLINDERS);
    geo->heads = ld_le32(s->meta + PRL_OFF_HEADS);
    geo->sectors = s->tracks;
    return 0;
}

static const char *const prl_extensions[] = { "hdd", "hds", NULL };

const BlockDriver bdrv_parallels = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "parallels",
    .instance_size = sizeof(BDRVParallelsState),
    .is_format = true,
    .probe = prl_probe,
    .bdrv_open = prl_open,
    .bdrv_close = prl_close,
    .reopen_prepare = prl_reopen_prepare,
    .reopen_commit = prl_reopen_noop,
    .reopen_abort = prl_reopen_noop,
    .co_preadv = prl_co_preadv,
    .co_pwritev = prl_co_pwritev,
    .co_pwrite_zeroes = prl_co_pwrite_zeroes,
    .co_pdiscard = prl_co_pdiscard,
    .co_flush_to_os = prl_co_flush_to_os,
    .co_block_status = prl_co_block_status,
    .co_truncate = prl_co_truncate,
    .co_getlength = prl_co_getlength,
    .co_create_opts = prl_co_create_opts,
    .create_opts = prl_create_opts,
    .get_info = prl_get_info,
    .get_specific_info = prl_get_specific_info,
    .co_check = prl_co_check,
    .get_geometry = prl_get_geometry,
    .file_extensions = prl_extensions,
    .supports_backing = true,
};
