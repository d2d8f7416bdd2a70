/*
 * qcow2 format driver: the driver table, open and close, runtime options,
 * info and backing-file changes. See qcow2.h for the map of this folder.
 *
 * Runtime options (as QEMU's): l2-cache-size, refcount-cache-size,
 * cache-size, cache-clean-interval (seconds, default 600, 0 = off),
 * overlap-check (none|constant|cached|all, default cached), lazy-refcounts,
 * pass-discard-request, pass-discard-snapshot, pass-discard-other, and the
 * data-file child (data-file.* or a node reference). coblk's own:
 * compressed-cache-size (bytes of decompressed clusters kept for reads of
 * compressed clusters, 0 = none, at most 1 GiB and 65536 clusters; default
 * 4 MiB, 4..64 clusters) and compress-workers (clusters compressed or
 * inflated at once per node, 1..16; default 2 per CPU).
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"
#include "drivers/drivers.h"

#define DEFAULT_L2_CACHE_MAX (32ULL << 20)
#define DEFAULT_CACHE_CLEAN_INTERVAL 600
#define MIN_CACHE_TABLES 4

static const char *const qcow2_option_names[] = {
    "l2-cache-size", "refcount-cache-size", "cache-size", "cache-clean-interval",
    "overlap-check", "lazy-refcounts", "pass-discard-request", "pass-discard-snapshot",
    "pass-discard-other", "data-file", "compressed-cache-size", "compress-workers", NULL,
};

static int qcow2_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    if (buf_size >= 8 && ld_be32(buf) == QCOW2_MAGIC &&
        (ld_be32(buf + 4) == 2 || ld_be32(buf + 4) == 3)) {
        return 100;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Options */

/* compressed-cache-size and compress-workers; ranges checked here, the entry count at open. */
static int take_compress_opts(BlockOpts *o, Qcow2Opts *q, Error **errp)
{
    int r1 = bopts_take_size(o, "compressed-cache-size", 0, &q->dcache_bytes, errp);
    int r2 = r1 < 0 ? -1 : bopts_take_uint64(o, "compress-workers", 0, &q->workers, errp);

    if (r1 < 0 || r2 < 0) {
        return -EINVAL;
    }
    q->has_dcache = r1 > 0;
    q->has_workers = r2 > 0;
    if (q->dcache_bytes > QCOW2_DCACHE_MAX_BYTES) {
        error_setg(errp, "qcow2: compressed-cache-size %llu exceeds the limit %llu",
                   (unsigned long long)q->dcache_bytes, QCOW2_DCACHE_MAX_BYTES);
        return -EINVAL;
    }
    if (q->has_workers && (q->workers < 1 || q->workers > QCOW2_CSLOTS_MAX)) {
        error_setg(errp, "qcow2: compress-workers %llu is out of range 1..%d",
                   (unsigned long long)q->workers, QCOW2_CSLOTS_MAX);
        return -EINVAL;
    }
    return 0;
}

/* The number of cached clusters the options give for this image's cluster size. */
static int check_dcache_entries(BlockDriverState *bs, const Qcow2Opts *q, Error **errp)
{
    uint64_t cs = ((BDRVQcow2State *)bs->opaque)->cluster_size;

    if (q->has_dcache && q->dcache_bytes / cs > QCOW2_DCACHE_MAX_ENTRIES) {
        error_setg(errp, "qcow2: '%s': compressed-cache-size %llu holds %llu clusters of %llu "
                   "bytes, more than the limit %d", bs->filename,
                   (unsigned long long)q->dcache_bytes, (unsigned long long)(q->dcache_bytes / cs),
                   (unsigned long long)cs, QCOW2_DCACHE_MAX_ENTRIES);
        return -EINVAL;
    }
    return 0;
}


static int take_opts(BlockDriverState *bs, BlockOpts *o, int flags, Qcow2Opts *q, Error **errp)
{
    char *ol = NULL;
    int r1, r2, r3, r4;

    r1 = bopts_take_size(o, "l2-cache-size", 0, &q->l2_cache, errp);
    r2 = r1 < 0 ? -1 : bopts_take_size(o, "refcount-cache-size", 0, &q->refcount_cache, errp);
    r3 = r2 < 0 ? -1 : bopts_take_size(o, "cache-size", 0, &q->cache_size, errp);
    r4 = r3 < 0 ? -1 : bopts_take_uint64(o, "cache-clean-interval",
                                         DEFAULT_CACHE_CLEAN_INTERVAL, &q->clean_interval, errp);
    if (r1 < 0 || r2 < 0 || r3 < 0 || r4 < 0) {
        return -EINVAL;
    }
    q->has_l2 = r1 > 0;
    q->has_rc = r2 > 0;
    q->has_cache = r3 > 0;
    if (q->clean_interval > UINT32_MAX) {
        error_setg(errp, "qcow2: cache-clean-interval %llu is too large",
                   (unsigned long long)q->clean_interval);
        return -EINVAL;
    }
    r1 = bopts_take_bool(o, "lazy-refcounts", false, &q->lazy, errp);
    if (r1 < 0 || take_compress_opts(o, q, errp) < 0 ||
        bopts_take_bool(o, "pass-discard-request", !!(flags & BDRV_O_UNMAP),
                        &q->discard_request, errp) < 0 ||
        bopts_take_bool(o, "pass-discard-snapshot", true, &q->discard_snapshot, errp) < 0 ||
        bopts_take_bool(o, "pass-discard-other", false, &q->discard_other, errp) < 0 ||
        bopts_take_str(o, "overlap-check", &ol, errp) < 0) {
        return -EINVAL;
    }
    q->has_lazy = r1 > 0;
    if (qcow2_parse_overlap_check(ol, &q->overlap) < 0) {
        error_setg(errp, "qcow2: overlap-check '%s' is not one of none, constant, cached, all",
                   ol);
        free(ol);
        return -EINVAL;
    }
    free(ol);
    return 0;
}

/* Cache sizes in tables (*l2_n, *rc_n), from the options or the defaults. */
static int cache_sizes(BDRVQcow2State *s, const Qcow2Opts *q, int *l2_n, int *rc_n,
                       Error **errp)
{
    uint64_t cs = s->cluster_size, l2_bytes, rc_bytes;
    uint64_t need = div_round_up_u64(s->size, cs) * (uint64_t)s->l2_entry_size;

    if (q->has_cache && q->has_l2 && q->has_rc) {
        error_setg(errp, "qcow2: cache-size, l2-cache-size and refcount-cache-size may not be "
                   "set at the same time");
        return -EINVAL;
    }
    l2_bytes = need < DEFAULT_L2_CACHE_MAX ? round_up_u64(need, cs) : DEFAULT_L2_CACHE_MAX;
    rc_bytes = 4 * cs > (256ULL << 10) ? 4 * cs : (256ULL << 10);
    if (q->has_cache) {
        l2_bytes = q->has_l2 ? q->l2_cache : q->cache_size - (q->has_rc ? q->refcount_cache
                                                                         : q->cache_size / 4);
        rc_bytes = q->has_rc ? q->refcount_cache : q->cache_size - l2_bytes;
        if (l2_bytes > q->cache_size) {
            error_setg(errp, "qcow2: l2-cache-size may not exceed cache-size");
            return -EINVAL;
        }
    } else {
        l2_bytes = q->has_l2 ? q->l2_cache : l2_bytes;
        rc_bytes = q->has_rc ? q->refcount_cache : rc_bytes;
    }
    if (l2_bytes / cs > INT32_MAX / 2 || rc_bytes / cs > INT32_MAX / 2) {
        error_setg(errp, "qcow2: cache size is too large");
        return -EINVAL;
    }
    *l2_n = l2_bytes / cs > MIN_CACHE_TABLES ? (int)(l2_bytes / cs) : MIN_CACHE_TABLES;
    *rc_n = rc_bytes / cs > MIN_CACHE_TABLES ? (int)(rc_bytes / cs) : MIN_CACHE_TABLES;
    return 0;
}

static int setup_caches(BlockDriverState *bs, BDRVQcow2State *s, Qcow2Opts *q, Error **errp)
{
    int l2_n, rc_n, ret = cache_sizes(s, q, &l2_n, &rc_n, errp);

    if (ret < 0) {
        return ret;
    }
    s->l2_cache = qcow2_cache_create(l2_n, s->cluster_size, true);
    s->refcount_cache = qcow2_cache_create(rc_n, s->cluster_size, false);
    if (!s->l2_cache || !s->refcount_cache) {
        error_setg(errp, "qcow2: out of memory for the metadata caches of '%s'", bs->filename);
        return -ENOMEM;
    }
    return 0;
}

/* Drops the resized caches a reopen staged (abort, close). */
static void reopen_drop_staged(BDRVQcow2State *s)
{
    qcow2_cache_destroy(s->reopen_l2_cache);
    qcow2_cache_destroy(s->reopen_refcount_cache);
    s->reopen_l2_cache = s->reopen_refcount_cache = NULL;
}

static void cache_clean_cb(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    qcow2_cache_clean(s->l2_cache);
    qcow2_cache_clean(s->refcount_cache);
    aio_timer_mod(s->cache_clean_timer,
                  aio_clock_ns() + (int64_t)s->cache_clean_interval * 1000000000LL);
}

static void start_clean_timer(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->cache_clean_interval && !s->cache_clean_timer) {
        s->cache_clean_timer = aio_timer_new(bdrv_get_aio_context(bs), cache_clean_cb, bs);
        if (s->cache_clean_timer) {
            aio_timer_mod(s->cache_clean_timer,
                          aio_clock_ns() + (int64_t)s->cache_clean_interval * 1000000000LL);
        }
    }
}

static void stop_clean_timer(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (s->cache_clean_timer) {
        aio_timer_del(s->cache_clean_timer);
        aio_timer_free(s->cache_clean_timer);
        s->cache_clean_timer = NULL;
    }
}

/* ---------------------------------------------------------------------- */
/* Open */

typedef struct OpenArgs {
    BlockDriverState *bs;
    int flags;
    int step;
    Error **errp;
} OpenArgs;

/* Header (step 0), then tables and the rest (step 1). */
static int64_t coroutine_fn open_co(void *opaque)
{
    OpenArgs *a = opaque;
    BlockDriverState *bs = a->bs;
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (a->step == 0) {
        return qcow2_read_header(bs, s, a->flags, a->errp);
    }
    ret = qcow2_read_tables(bs, s, a->errp);
    if (ret == 0) {
        ret = qcow2_read_snapshot_table(bs, s, a->errp);
    }
    if (ret == 0) {
        ret = qcow2_grow_init(bs);
        if (ret < 0) {
            error_setg_errno(a->errp, ret, "qcow2: could not get the size of '%s'",
                             bs->filename);
        }
    }
    if (ret == 0 && (a->flags & BDRV_O_RDWR) && !(a->flags & BDRV_O_NO_IO) &&
        (s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        /* Lazy refcounts after a crash: rebuild the refcounts first. */
        ret = qcow2_repair_dirty(bs, a->errp);
    }
    if (ret == 0) {
        ret = qcow2_bitmaps_open(bs, (a->flags & BDRV_O_RDWR) && !(a->flags & BDRV_O_NO_IO),
                                 a->errp);
    }
    if (ret == 0 && (a->flags & BDRV_O_RDWR) && !(a->flags & BDRV_O_NO_IO)) {
        /* Autoclear bits we do not maintain (unknown ones) are cleared. */
        uint64_t keep = s->autoclear_features &
                        (QCOW2_AUTOCLEAR_DATA_FILE_RAW | (s->bitmaps ? QCOW2_AUTOCLEAR_BITMAPS : 0));

        if (keep != s->autoclear_features) {
            s->autoclear_features = keep;
            ret = qcow2_update_header(bs);
            if (ret < 0) {
                error_setg_errno(a->errp, ret, "qcow2: could not update the header of '%s'",
                                 bs->filename);
            }
        }
    }
    return ret;
}

/* A data file name from an image header, checked and resolved next to the image. */
static int resolve_data_file(BlockDriverState *bs, const char *name, int flags, char *out,
                             size_t size, Error **errp)
{
    const char *slash = strchr(name, '/'), *colon = strchr(name, ':');
    char dir[4096];

    if (!*name || !strncmp(name, "json:", 5) || (colon && (!slash || colon < slash))) {
        error_setg(errp, "qcow2: '%s': data file name '%.64s' from the image header is not "
                   "allowed (give it with the data-file option)", bs->filename, name);
        return -EINVAL;
    }
    if ((flags & BDRV_O_UNTRUSTED) && (slash || !strcmp(name, ".") || !strcmp(name, ".."))) {
        error_setg(errp, "qcow2: untrusted image '%s': data file '%s' is not a sibling of the "
                   "image", bs->filename, name);
        return -EPERM;
    }
    if (name[0] == '/') {
        snprintf(out, size, "%s", name);
        return 0;
    }
    snprintf(dir, sizeof(dir), "%s", bs->file->bs->filename);
    if ((size_t)snprintf(out, size, "%s/%s", dirname(dir), name) >= size) {
        error_setg(errp, "qcow2: '%s': data file path is too long", bs->filename);
        return -ENAMETOOLONG;
    }
    return 0;
}

static int open_data_file(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool given = bopts_has(options, "data-file");
    char path[4096];
    BlockOpts *sub;
    int ret;

    for (size_t i = 0; !given && i < bopts_count(options); i++) {
        given = !strncmp(bopts_key_at(options, i), "data-file.", 10);
    }
    if (!qcow2_has_data_file(s)) {
        if (given) {
            error_setg(errp, "qcow2: '%s' has no external data file; 'data-file' is only "
                       "allowed for images with one", bs->filename);
            return -EINVAL;
        }
        s->data_file = bs->file;
        return 0;
    }
    if (flags & BDRV_O_NO_IO) {
        s->data_file = bs->file; /* metadata only: never open data files for info */
        return 0;
    }
    if (!given) {
        if (!s->image_data_file) {
            error_setg(errp, "qcow2: '%s' needs an external data file but names none; give "
                       "one with the data-file option", bs->filename);
            return -EINVAL;
        }
        ret = resolve_data_file(bs, s->image_data_file, flags, path, sizeof(path), errp);
        if (ret < 0) {
            return ret;
        }
        sub = bopts_new();
        bopts_set(sub, "data-file.driver", "file");
        bopts_set(sub, "data-file.filename", path);
        s->data_file = bdrv_open_child(NULL, sub, "data-file", bs, BDRV_CHILD_DATA, false,
                                       errp);
        bopts_free(sub);
    } else {
        s->data_file = bdrv_open_child(NULL, options, "data-file", bs, BDRV_CHILD_DATA, false,
                                       errp);
    }
    return s->data_file ? 0 : -EINVAL;
}

static void qcow2_close_state(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    stop_clean_timer(bs);
    qcow2_bitmaps_free(s);
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refcount_cache);
    s->l2_cache = s->refcount_cache = NULL;
    reopen_drop_staged(s);
    free(s->pending_free);
    s->pending_free = NULL;
    qcow2_cstate_free(s);
    qcow2_dcache_free(s);
    qcow2_bufpool_destroy(s);
    qcow2_free_header_state(s);
}

static int qcow2_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    OpenArgs a = { bs, flags, 0, errp };
    Qcow2Opts q;
    int ret;

    memset(s, 0, sizeof(*s));
    co_mutex_init(&s->lock);
    s->status_recurse = -1;
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = take_opts(bs, options, flags, &q, errp);
    if (ret < 0) {
        return ret;
    }
    ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), open_co, &a);
    if (ret < 0) {
        goto fail;
    }
    ret = setup_caches(bs, s, &q, errp);
    if (ret == 0) {
        ret = check_dcache_entries(bs, &q, errp);
    }
    if (ret < 0) {
        goto fail;
    }
    s->dcache_set = q.has_dcache;
    s->dcache_bytes = q.dcache_bytes;
    s->compress_workers = (int)q.workers;
    qcow2_bufpool_init(s);
    ret = open_data_file(bs, options, flags, errp);
    if (ret < 0) {
        goto fail;
    }
    a.step = 1;
    ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), open_co, &a);
    if (ret < 0) {
        goto fail;
    }
    s->overlap_check = q.overlap;
    s->discard_request = q.discard_request;
    s->discard_snapshot = q.discard_snapshot;
    s->discard_other = q.discard_other;
    s->use_lazy_refcounts = q.has_lazy ? q.lazy
                                       : !!(s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
    if (s->use_lazy_refcounts && s->version < 3) {
        error_setg(errp, "qcow2: lazy refcounts require a version 3 image (compat=1.1)");
        ret = -EINVAL;
        goto fail;
    }
    s->cache_clean_interval = q.clean_interval;
    bs->supported_write_flags = qcow2_has_data_file(s) ? 0 : BDRV_REQ_WRITE_COMPRESSED;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    start_clean_timer(bs);
    return 0;

fail:
    qcow2_close_state(bs);
    return ret;
}

static int64_t coroutine_fn close_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_bitmaps_close(bs);
    if (ret < 0) {
        coblk_warn("qcow2: could not store the bitmaps of '%s': %s (they stay marked in use)",
                   bs->filename, strerror(-ret));
    }
    ret = qcow2_cache_flush_all(bs);
    if (ret == 0 && s->dirty_set) {
        ret = bdrv_co_flush(bs->file->bs);
        if (ret == 0) {
            ret = qcow2_mark_clean(bs);
        }
    }
    if (ret == 0) {
        ret = qcow2_trim_grown(bs);
    }
    co_mutex_unlock(&s->lock);
    return ret;
}

static void qcow2_close(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (!bs->read_only && (bs->open_flags & BDRV_O_RDWR) && s->l2_cache) {
        int ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), close_co, bs);

        if (ret < 0) {
            coblk_warn("qcow2: flushing metadata of '%s' on close failed: %s", bs->filename,
                       strerror(-ret));
        }
    }
    qcow2_close_state(bs);
}

static void qcow2_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;

    bs->bl.request_alignment = 1;
    /* Extended L2 entries zero and discard single subclusters. */
    bs->bl.pwrite_zeroes_alignment = (uint32_t)s->subcluster_size;
    bs->bl.pdiscard_alignment = (uint32_t)s->subcluster_size;
}

static int64_t coroutine_fn qcow2_co_getlength(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    return (int64_t)s->size;
}

static void qcow2_attach_aio_context(BlockDriverState *bs, AioContext *ctx)
{
    start_clean_timer(bs);
}

static void qcow2_detach_aio_context(BlockDriverState *bs)
{
    stop_clean_timer(bs);
}

/* ---------------------------------------------------------------------- */
/* Info */

static int qcow2_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1_vm = qcow2_l1_entries_for(s->size, s->cluster_bits, s->l2_bits);

    bdi->cluster_size = (int64_t)s->cluster_size;
    bdi->vm_state_offset = (int64_t)(l1_vm << (s->cluster_bits + s->l2_bits));
    bdi->is_dirty = !!(s->incompatible_features & QCOW2_INCOMPAT_DIRTY);
    return 0;
}

void qcow2_json_str(char *buf, size_t size, size_t *n, const char *str)
{
    *n += (size_t)snprintf(buf + *n, *n < size ? size - *n : 0, "\"");
    for (const char *p = str; *p; p++) {
        unsigned char c = (unsigned char)*p;

        if (c == '"' || c == '\\') {
            *n += (size_t)snprintf(buf + *n, *n < size ? size - *n : 0, "\\%c", c);
        } else if (c < 0x20) {
            *n += (size_t)snprintf(buf + *n, *n < size ? size - *n : 0, "\\u%04x", c);
        } else {
            *n += (size_t)snprintf(buf + *n, *n < size ? size - *n : 0, "%c", c);
        }
    }
    *n += (size_t)snprintf(buf + *n, *n < size ? size - *n : 0, "\"");
}

#define JCAT(...) (n += (size_t)snprintf(buf + n, n < size ? size - n : 0, __VA_ARGS__))

static char *qcow2_get_specific_info(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    size_t size = 8192 + (size_t)s->nb_bitmaps * (6 * 1024 + 96), n = 0;
    char *buf = malloc(size);

    if (!buf) {
        return NULL;
    }
    if (s->version == 2) {
        JCAT("{\"compat\": \"0.10\", \"compression-type\": \"zlib\", \"refcount-bits\": %d}",
             s->refcount_bits);
        return buf;
    }
    JCAT("{\"compat\": \"1.1\", \"compression-type\": \"%s\", \"lazy-refcounts\": %s, ",
         s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib",
         (s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) ? "true" : "false");
    n += qcow2_bitmaps_json(s, buf + n, n < size ? size - n : 0);
    if (qcow2_has_data_file(s) && s->image_data_file) {
        JCAT("\"data-file\": ");
        qcow2_json_str(buf, size, &n, s->image_data_file);
        JCAT(", ");
    }
    if (qcow2_has_data_file(s)) {
        JCAT("\"data-file-raw\": %s, ", qcow2_data_file_raw(s) ? "true" : "false");
    }
    JCAT("\"refcount-bits\": %d, \"corrupt\": %s, \"extended-l2\": %s}", s->refcount_bits,
         (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) ? "true" : "false",
         qcow2_extl2(s) ? "true" : "false");
    if (n >= size) {
        free(buf);
        error_setg(errp, "qcow2: format-specific info too long");
        return NULL;
    }
    return buf;
}

/* ---------------------------------------------------------------------- */
/* Backing file */

static int coroutine_fn qcow2_co_change_backing_file(BlockDriverState *bs,
                                                     const char *backing_file,
                                                     const char *backing_fmt, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    char old_file[sizeof(bs->backing_file)], old_fmt[sizeof(bs->backing_format)];
    int ret;

    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "qcow2: backing file name '%.64s...' is longer than %d bytes",
                   backing_file, QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (backing_fmt && strlen(backing_fmt) >= sizeof(bs->backing_format)) {
        error_setg(errp, "qcow2: backing format name '%s' is too long", backing_fmt);
        return -EINVAL;
    }
    if (backing_file && *backing_file && qcow2_data_file_raw(s)) {
        error_setg(errp, "qcow2: images with a raw external data file cannot have a backing "
                   "file");
        return -EINVAL;
    }
    memcpy(old_file, bs->backing_file, sizeof(old_file));
    memcpy(old_fmt, bs->backing_format, sizeof(old_fmt));
    snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", backing_file ? backing_file : "");
    snprintf(bs->backing_format, sizeof(bs->backing_format), "%s",
             backing_file && backing_fmt ? backing_fmt : "");
    co_mutex_lock(&s->lock);
    ret = qcow2_update_header(bs);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        memcpy(bs->backing_file, old_file, sizeof(old_file));
        memcpy(bs->backing_format, old_fmt, sizeof(old_fmt));
        error_setg_errno(errp, ret, "qcow2: could not update the header of '%s'%s",
                         bs->filename, ret == -ENOSPC ? " (no room for the backing file name)"
                                                      : "");
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Reopen */

static int64_t coroutine_fn reopen_ro_co(void *opaque)
{
    return close_co(opaque);
}

static int64_t coroutine_fn reopen_flush_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = qcow2_cache_flush_all(bs);
    co_mutex_unlock(&s->lock);
    return ret;
}

/*
 * New cache sizes when the reopen options set any: the new (empty) caches
 * are allocated here, and the old ones written out so that commit can swap
 * them without I/O (the node is drained during a reopen). A size left out
 * takes its default, as at open.
 */
static int reopen_stage_caches(BlockDriverState *bs, const Qcow2Opts *q, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int l2_n, rc_n, ret;

    if (!q->has_l2 && !q->has_rc && !q->has_cache) {
        return 0; /* e.g. a read-only switch: the caches keep their size */
    }
    ret = cache_sizes(s, q, &l2_n, &rc_n, errp);
    if (ret < 0) {
        return ret;
    }
    if (l2_n == s->l2_cache->size && rc_n == s->refcount_cache->size) {
        return 0;
    }
    s->reopen_l2_cache = qcow2_cache_create(l2_n, s->cluster_size, true);
    s->reopen_refcount_cache = qcow2_cache_create(rc_n, s->cluster_size, false);
    if (!s->reopen_l2_cache || !s->reopen_refcount_cache) {
        reopen_drop_staged(s);
        error_setg(errp, "qcow2: out of memory for the resized caches of '%s'", bs->filename);
        return -ENOMEM;
    }
    if ((bs->open_flags & BDRV_O_RDWR) && !bs->read_only) {
        ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), reopen_flush_co, bs);
        if (ret < 0) {
            reopen_drop_staged(s);
            error_setg_errno(errp, ret, "qcow2: could not write the metadata of '%s'",
                             bs->filename);
            return ret;
        }
    }
    return 0;
}

/*
 * Runtime options may change (overlap-check, pass-discard-*, lazy-refcounts,
 * cache-clean-interval, and the cache sizes l2-cache-size,
 * refcount-cache-size, cache-size, compressed-cache-size, compress-workers;
 * options left out take their defaults, as at open, except that the caches
 * and compress-workers keep their size unless one is given). Going read-only
 * writes all metadata first; going read-write
 * is refused for corrupt or dirty images, as at open.
 */
static int qcow2_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                                Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Opts q;
    int ret;

    ret = take_opts(bs, options, new_flags, &q, errp);
    if (ret < 0) {
        return ret;
    }
    if (bopts_has(options, "data-file")) {
        error_setg(errp, "qcow2: the data-file child cannot be changed by reopen");
        return -EINVAL;
    }
    if ((new_flags & BDRV_O_RDWR) && !(bs->open_flags & BDRV_O_RDWR)) {
        if (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
            error_setg(errp, "qcow2: '%s' is marked corrupt and can only be opened read-only",
                       bs->filename);
            return -EACCES;
        }
        if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) {
            error_setg(errp, "qcow2: '%s' has the dirty bit set; repair it with 'qemu-img "
                       "check -r all' first", bs->filename);
            return -ENOTSUP;
        }
    }
    if (!(new_flags & BDRV_O_RDWR) && (bs->open_flags & BDRV_O_RDWR) && !bs->read_only) {
        ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), reopen_ro_co, bs);
        if (ret < 0) {
            error_setg_errno(errp, ret, "qcow2: could not write the metadata of '%s'",
                             bs->filename);
            return ret;
        }
    }
    ret = check_dcache_entries(bs, &q, errp);
    if (ret == 0) {
        ret = reopen_stage_caches(bs, &q, errp);
    }
    if (ret < 0) {
        return ret;
    }
    s->reopen_opts = q;
    s->reopen_to_rw = (new_flags & BDRV_O_RDWR) && !(bs->open_flags & BDRV_O_RDWR);
    return 0;
}

/*
 * Swaps in the resized caches (the old ones were written by prepare, or by
 * reopen_finish).
 */
static void reopen_swap_caches(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (!s->reopen_l2_cache) {
        return;
    }
    if (!qcow2_cache_idle(s->l2_cache) || !qcow2_cache_idle(s->refcount_cache)) {
        coblk_warn("qcow2: '%s': metadata caches busy, keeping their old size", bs->filename);
        reopen_drop_staged(s);
        return;
    }
    qcow2_cache_destroy(s->l2_cache);
    qcow2_cache_destroy(s->refcount_cache);
    s->l2_cache = s->reopen_l2_cache;
    s->refcount_cache = s->reopen_refcount_cache;
    s->reopen_l2_cache = s->reopen_refcount_cache = NULL;
}

/*
 * Sets compressed-cache-size and compress-workers (the cache and the slots
 * are dropped and come back at their new size on first use). Nothing may be
 * in use: the node is drained, but if it is not, the old sizes stay.
 */
static void set_compress_opts(BlockDriverState *bs, bool dc_set, uint64_t dc_bytes,
                              int workers)
{
    BDRVQcow2State *s = bs->opaque;

    if (dc_set == s->dcache_set && dc_bytes == s->dcache_bytes &&
        workers == s->compress_workers) {
        return;
    }
    if (!qcow2_dcache_idle(s) || !qcow2_cstate_idle(s)) {
        coblk_warn("qcow2: '%s': compressed clusters in use, keeping the old "
                   "compressed-cache-size and compress-workers", bs->filename);
        return;
    }
    qcow2_dcache_free(s);
    qcow2_cstate_free(s);
    s->dcache_set = dc_set;
    s->dcache_bytes = dc_bytes;
    s->compress_workers = workers;
}

/*
 * Keeps the runtime state the first commit of a reopen changes: if a later
 * step fails, the block layer puts the old mode back with a second
 * prepare/commit without options (which would leave the new cache sizes and
 * reset the other options to their defaults), then reopen_finish(undo)
 * restores this.
 */
static void reopen_save_undo(BDRVQcow2State *s)
{
    if (s->reopen_undo.valid) {
        return; /* the rollback's commit: keep what the first one saved */
    }
    s->reopen_undo = (Qcow2ReopenUndo){
        .valid = true,
        .l2_n = s->l2_cache->size,
        .rc_n = s->refcount_cache->size,
        .overlap = s->overlap_check,
        .discard_request = s->discard_request,
        .discard_snapshot = s->discard_snapshot,
        .discard_other = s->discard_other,
        .lazy = s->use_lazy_refcounts,
        .clean_interval = s->cache_clean_interval,
        .dcache_set = s->dcache_set,
        .dcache_bytes = s->dcache_bytes,
        .workers = s->compress_workers,
    };
}

static void qcow2_reopen_commit(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Opts *q = &s->reopen_opts;

    reopen_save_undo(s);

    if (s->reopen_to_rw) {
        /* The file child may not be writable yet: the first write loads the bitmaps. */
        s->reopen_to_rw = false;
        s->bitmaps_pending = true;
    }
    reopen_swap_caches(bs);
    set_compress_opts(bs, q->has_dcache || s->dcache_set,
                      q->has_dcache ? q->dcache_bytes : s->dcache_bytes,
                      q->has_workers ? (int)q->workers : s->compress_workers);
    s->overlap_check = q->overlap;
    s->discard_request = q->discard_request;
    s->discard_snapshot = q->discard_snapshot;
    s->discard_other = q->discard_other;
    if (q->has_lazy && s->version >= 3) {
        s->use_lazy_refcounts = q->lazy;
    }
    if (s->cache_clean_interval != q->clean_interval) {
        stop_clean_timer(bs);
        s->cache_clean_interval = q->clean_interval;
        start_clean_timer(bs);
    }
}

/* Empty caches of the old sizes (the current ones are written first; drained). */
static void reopen_restore_caches(BlockDriverState *bs, int l2_n, int rc_n)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (l2_n == s->l2_cache->size && rc_n == s->refcount_cache->size) {
        return;
    }
    if ((bs->open_flags & BDRV_O_RDWR) && !bs->read_only) {
        ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), reopen_flush_co, bs);
    }
    s->reopen_l2_cache = qcow2_cache_create(l2_n, s->cluster_size, true);
    s->reopen_refcount_cache = qcow2_cache_create(rc_n, s->cluster_size, false);
    if (ret < 0 || !s->reopen_l2_cache || !s->reopen_refcount_cache) {
        coblk_warn("qcow2: '%s': could not restore the old cache sizes (%s)", bs->filename,
                   ret < 0 ? strerror(-ret) : "out of memory");
        reopen_drop_staged(s);
        return;
    }
    reopen_swap_caches(bs);
}

/* The reopen is over; undo: a later step failed, the state before commit comes back. */
static void qcow2_reopen_finish(BlockDriverState *bs, bool undo)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2ReopenUndo u = s->reopen_undo;

    s->reopen_undo.valid = false;
    if (!undo || !u.valid) {
        return;
    }
    s->overlap_check = u.overlap;
    s->discard_request = u.discard_request;
    s->discard_snapshot = u.discard_snapshot;
    s->discard_other = u.discard_other;
    s->use_lazy_refcounts = u.lazy;
    if (s->cache_clean_interval != u.clean_interval) {
        stop_clean_timer(bs);
        s->cache_clean_interval = u.clean_interval;
        start_clean_timer(bs);
    }
    reopen_restore_caches(bs, u.l2_n, u.rc_n);
    set_compress_opts(bs, u.dcache_set, u.dcache_bytes, u.workers);
}

static void qcow2_reopen_abort(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    s->reopen_to_rw = false;
    reopen_drop_staged(s);
}

static const char *const qcow2_extensions[] = { "qcow2", NULL };

const BlockDriver bdrv_qcow2 = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "qcow2",
    .instance_size = sizeof(BDRVQcow2State),
    .is_format = true,
    .supports_backing = true,
    .option_names = qcow2_option_names,
    .probe = qcow2_probe,
    .bdrv_open = qcow2_open,
    .bdrv_close = qcow2_close,
    .refresh_limits = qcow2_refresh_limits,
    .co_preadv = qcow2_co_preadv,
    .co_pwritev = qcow2_co_pwritev,
    .co_pwrite_zeroes = qcow2_co_pwrite_zeroes,
    .co_pdiscard = qcow2_co_pdiscard,
    .co_flush_to_os = qcow2_co_flush_to_os,
    .co_block_status = qcow2_co_block_status,
    .co_truncate = qcow2_co_truncate,
    .co_getlength = qcow2_co_getlength,
    .attach_aio_context = qcow2_attach_aio_context,
    .detach_aio_context = qcow2_detach_aio_context,
    .reopen_prepare = qcow2_reopen_prepare,
    .reopen_commit = qcow2_reopen_commit,
    .reopen_abort = qcow2_reopen_abort,
    .reopen_finish = qcow2_reopen_finish,
    .co_copy_range_to = qcow2_co_copy_range_to,
    .co_create_opts = qcow2_co_create_opts,
    .create_opts = qcow2_create_opts,
    .get_info = qcow2_get_info,
    .get_specific_info = qcow2_get_specific_info,
    .co_change_backing_file = qcow2_co_change_backing_file,
    .co_check = qcow2_co_check,
    .co_snapshot_create = qcow2_co_snapshot_create,
    .co_snapshot_goto = qcow2_co_snapshot_goto,
    .co_snapshot_delete = qcow2_co_snapshot_delete,
    .co_snapshot_list = qcow2_co_snapshot_list,
    .co_snapshot_load_tmp = qcow2_co_snapshot_load_tmp,
    .co_save_vmstate = qcow2_co_save_vmstate,
    .co_load_vmstate = qcow2_co_load_vmstate,
    .co_amend = qcow2_co_amend,
    .co_make_empty = qcow2_co_make_empty,
    .measure = qcow2_measure,
    .file_extensions = qcow2_extensions,
    .bitmap_list = qcow2_bitmap_list,
    .co_bitmap_modify = qcow2_co_bitmap_modify,
    .co_bitmap_query = qcow2_co_bitmap_query,
};
