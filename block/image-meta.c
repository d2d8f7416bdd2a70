/*
 * VD-style image metadata beyond image.c: timestamps, the parent file
 * name, renaming an image with its files, and the capabilities and file
 * extensions of each driver (coblk/image.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include "block/image-meta.h"

/* The field exists in the driver's table (plugins built against an older one). */
#define HAS_CB(drv, field) \
    ((drv) && (drv)->struct_size >= offsetof(BlockDriver, field) + sizeof((drv)->field) && \
     (drv)->field)

typedef struct MetaArgs {
    BlockDriverState *bs;
    int kind;
    int64_t secs;
    const char *name;
    Error **errp;
} MetaArgs;

static int no_support(BlockDriverState *bs, const char *what, Error **errp)
{
    error_setg(errp, "Format '%s' (%s) does not support %s", bs->drv->format_name,
               bs->filename, what);
    return -ENOTSUP;
}

/* Runs fn drained, in a coroutine in bs's context. */
static int run_drained(MetaArgs *a, BdrvCoRunFn *fn, bool needs_write)
{
    int ret;

    if (needs_write && a->bs->read_only) {
        error_setg(a->errp, "Image '%s' is read-only", a->bs->filename);
        return -EACCES;
    }
    bdrv_drained_begin(a->bs);
    ret = (int)bdrv_run_co(a->bs->aio_context, fn, a);
    bdrv_drained_end(a->bs);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Timestamps */

int bdrv_get_timestamp(BlockDriverState *bs, BlockTimestampKind kind, int64_t *unix_seconds)
{
    *unix_seconds = 0;
    return HAS_CB(bs->drv, get_timestamp) ? bs->drv->get_timestamp(bs, kind, unix_seconds)
                                          : -ENOTSUP;
}

static int64_t coroutine_fn set_ts_co(void *opaque)
{
    MetaArgs *a = opaque;

    return a->bs->drv->co_set_timestamp(a->bs, (BlockTimestampKind)a->kind, a->secs, a->errp);
}

int bdrv_set_timestamp(BlockDriverState *bs, BlockTimestampKind kind, int64_t unix_seconds,
                       Error **errp)
{
    MetaArgs a = { .bs = bs, .kind = kind, .secs = unix_seconds, .errp = errp };

    if (!HAS_CB(bs->drv, co_set_timestamp)) {
        return no_support(bs, "stored timestamps", errp);
    }
    return run_drained(&a, set_ts_co, true);
}

/* ---------------------------------------------------------------------- */
/* Parent file name */

static bool can_have_parent(const BlockDriver *drv)
{
    bool backs = drv->struct_size >= offsetof(BlockDriver, supports_backing) +
                 sizeof(drv->supports_backing) && drv->supports_backing;

    return backs || HAS_CB(drv, co_change_backing_file);
}

int bdrv_get_parent_filename(BlockDriverState *bs, char **out)
{
    *out = NULL;
    if (bs->backing_file[0]) {
        *out = strdup(bs->backing_file);
        return *out ? 0 : -ENOMEM;
    }
    return can_have_parent(bs->drv) ? 0 : -ENOTSUP;
}

int bdrv_set_parent_filename(BlockDriverState *bs, const char *parent, Error **errp)
{
    const char *fmt = parent && bs->backing_format[0] ? bs->backing_format : NULL;

    if (!HAS_CB(bs->drv, co_change_backing_file)) {
        return no_support(bs, "changing the parent file name", errp);
    }
    return bdrv_change_backing_file(bs, parent, fmt, errp);
}

/* ---------------------------------------------------------------------- */
/* Rename */

int coblk_rename_noreplace(const char *from, const char *to)
{
    /* A hard link then unlink: fails with EEXIST rather than replace to. */
    if (link(from, to) < 0) {
        return -errno;
    }
    if (unlink(from) < 0) {
        int ret = -errno;

        unlink(to);
        return ret;
    }
    return 0;
}

int coblk_sync_dir_of(const char *path)
{
    char buf[4096];
    int fd, ret = 0;

    snprintf(buf, sizeof(buf), "%s", path);
    fd = open(dirname(buf), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    if (fsync(fd) < 0) {
        ret = -errno;
    }
    close(fd);
    return ret;
}

void coblk_set_node_filename(BlockDriverState *bs, const char *old, const char *new_name)
{
    if (strcmp(bs->filename, old) == 0) {
        snprintf(bs->filename, sizeof(bs->filename), "%s", new_name);
    }
}

int bdrv_replace_file(BlockDriverState *bs, const char *tmp, const char *path)
{
    return HAS_CB(bs->drv, replace_file) ? bs->drv->replace_file(bs, tmp, path) : -ENOTSUP;
}

/* One file of the "file" protocol holds the whole image (besides its backing chain). */
static BlockDriverState *single_file(BlockDriverState *bs)
{
    BlockDriverState *f = bs->drv->is_format ? (bs->file ? bs->file->bs : NULL) : bs;

    if (!f || strcmp(f->drv->format_name, "file") != 0) {
        return NULL;
    }
    for (BdrvChild *c = bs->children; c; c = c->next) {
        if (c != bs->file && !(c->role & BDRV_CHILD_COW)) {
            return NULL;    /* an external data file, extents, ... */
        }
    }
    return f;
}

static int64_t coroutine_fn rename_co(void *opaque)
{
    MetaArgs *a = opaque;
    BlockDriverState *f;
    char old[sizeof(a->bs->filename)];
    int ret;

    if (HAS_CB(a->bs->drv, co_rename)) {
        return a->bs->drv->co_rename(a->bs, a->name, a->errp);
    }
    f = single_file(a->bs);
    if (!f) {
        return no_support(a->bs, "renaming an image made of several files or not on a "
                          "local file", a->errp);
    }
    snprintf(old, sizeof(old), "%s", f->filename);
    ret = coblk_rename_noreplace(old, a->name);
    if (ret < 0) {
        error_setg_errno(a->errp, ret, "Could not rename '%s' to '%s'", old, a->name);
        return ret;
    }
    coblk_sync_dir_of(a->name);
    coblk_set_node_filename(f, old, a->name);
    coblk_set_node_filename(a->bs, old, a->name);
    return 0;
}

int bdrv_rename(BlockDriverState *bs, const char *new_name, Error **errp)
{
    MetaArgs a = { .bs = bs, .name = new_name, .errp = errp };

    if (!new_name || !new_name[0] || strlen(new_name) >= sizeof(bs->filename)) {
        error_setg(errp, "Invalid new name for '%s'", bs->filename);
        return -EINVAL;
    }
    return run_drained(&a, rename_co, false);
}

/* ---------------------------------------------------------------------- */
/* Capabilities and extensions */

unsigned bdrv_driver_capabilities(const char *name)
{
    const BlockDriver *d = bdrv_find_format(name);
    unsigned c = 0;

    if (!d) {
        return 0;
    }
    c |= d->is_format ? BDRV_CAP_FORMAT : 0;
    c |= d->is_protocol ? BDRV_CAP_PROTOCOL : 0;
    c |= d->is_filter ? BDRV_CAP_FILTER : 0;
    c |= d->co_create_opts ? BDRV_CAP_CREATE : 0;
    c |= d->co_pwritev ? BDRV_CAP_WRITE : 0;
    c |= can_have_parent(d) ? BDRV_CAP_BACKING : 0;
    c |= d->co_pdiscard ? BDRV_CAP_DISCARD : 0;
    c |= d->co_truncate ? BDRV_CAP_RESIZE : 0;
    c |= HAS_CB(d, co_check) ? BDRV_CAP_CHECK : 0;
    c |= HAS_CB(d, co_snapshot_create) ? BDRV_CAP_SNAPSHOTS : 0;
    c |= HAS_CB(d, get_uuid) ? BDRV_CAP_UUID : 0;
    c |= HAS_CB(d, get_geometry) ? BDRV_CAP_GEOMETRY : 0;
    c |= HAS_CB(d, get_comment) ? BDRV_CAP_COMMENT : 0;
    c |= HAS_CB(d, get_timestamp) ? BDRV_CAP_TIMESTAMP : 0;
    c |= HAS_CB(d, co_compact) ? BDRV_CAP_COMPACT : 0;
    c |= HAS_CB(d, co_amend) ? BDRV_CAP_AMEND : 0;
    c |= HAS_CB(d, co_rename) || d->is_format || !strcmp(d->format_name, "file") ?
         BDRV_CAP_RENAME : 0;
    return c;
}

const char *bdrv_capability_name(unsigned cap)
{
    static const char *const names[] = {
        "format", "protocol", "filter", "create", "write", "backing", "discard", "resize",
        "check", "snapshots", "uuid", "geometry", "comment", "timestamp", "compact", "amend",
        "rename",
    };

    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (cap == 1u << i) {
            return names[i];
        }
    }
    return NULL;
}

const char *const *bdrv_driver_extensions(const char *name)
{
    const BlockDriver *d = bdrv_find_format(name);

    return HAS_CB(d, file_extensions) ? d->file_extensions : NULL;
}
