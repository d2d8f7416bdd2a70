/*
 * Image-level operations (coblk/image.h): thin wrappers that find the
 * driver callback, run it in a coroutine in the node's context, and drain
 * the node around the operations that rewrite metadata wholesale.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"

/* The field exists in the driver's table (plugins built against an older one). */
#define HAS_CB(drv, field) \
    ((drv) && (drv)->struct_size >= offsetof(BlockDriver, field) + sizeof((drv)->field) && \
     (drv)->field)

static int no_support(BlockDriverState *bs, const char *what, Error **errp)
{
    error_setg(errp, "Format '%s' (%s) does not support %s", bs->drv->format_name,
               bs->filename, what);
    return -ENOTSUP;
}

const BlockCreateOptDesc *bdrv_create_opts(const char *format)
{
    const BlockDriver *drv = bdrv_find_format(format);

    return HAS_CB(drv, create_opts) ? drv->create_opts : NULL;
}

int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    memset(bdi, 0, sizeof(*bdi));
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (!HAS_CB(bs->drv, get_info)) {
        return bs->drv->is_filter && bs->file ? bdrv_get_info(bs->file->bs, bdi) : -ENOTSUP;
    }
    return bs->drv->get_info(bs, bdi);
}

char *bdrv_get_specific_info(BlockDriverState *bs, Error **errp)
{
    return HAS_CB(bs->drv, get_specific_info) ? bs->drv->get_specific_info(bs, errp) : NULL;
}

static int64_t coroutine_fn alloc_size_co(void *opaque)
{
    BlockDriverState *bs = opaque;

    if (bs->drv->co_get_allocated_file_size) {
        return bs->drv->co_get_allocated_file_size(bs);
    }
    /* Formats: the sum over their children that hold image data. */
    int64_t total = 0;
    bool any = false;
    for (BdrvChild *c = bs->children; c; c = c->next) {
        if (c->role & BDRV_CHILD_COW) {
            continue;
        }
        int64_t r = alloc_size_co(c->bs);
        if (r < 0 && r != -ENOTSUP) {
            return r;
        }
        if (r >= 0) {
            total += r;
            any = true;
        }
    }
    return any ? total : -ENOTSUP;
}

int64_t bdrv_get_allocated_file_size(BlockDriverState *bs)
{
    return bdrv_run_co(bs->aio_context, alloc_size_co, bs);
}

/* ---------------------------------------------------------------------- */
/* Check */

void bdrv_check_report(BdrvCheckResult *res, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (res->report) {
        res->report(res->report_opaque, msg);
    } else {
        coblk_warn("%s", msg);
    }
}

typedef struct CheckArgs {
    BlockDriverState *bs;
    BdrvCheckResult *res;
    BdrvCheckMode fix;
} CheckArgs;

static int64_t coroutine_fn check_co(void *opaque)
{
    CheckArgs *a = opaque;

    return a->bs->drv->co_check(a->bs, a->res, a->fix);
}

int bdrv_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    CheckArgs a = { bs, res, fix };
    void (*report)(void *, const char *) = res->report;
    void *report_opaque = res->report_opaque;
    int ret;

    memset(res, 0, sizeof(*res));
    res->report = report;
    res->report_opaque = report_opaque;
    if (!HAS_CB(bs->drv, co_check)) {
        return -ENOTSUP;
    }
    if (fix && bs->read_only) {
        return -EACCES;
    }
    bdrv_drained_begin(bs);
    ret = (int)bdrv_run_co(bs->aio_context, check_co, &a);
    bdrv_drained_end(bs);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Operations that run drained, with an Error: one generic runner. */

typedef struct OpArgs {
    BlockDriverState *bs;
    int (*fn)(struct OpArgs *a);
    const void *p1;
    const void *p2;
    void *out;
    int64_t n1;
    int64_t n2;
    bool flag;
    Error **errp;
} OpArgs;

static int64_t coroutine_fn op_co(void *opaque)
{
    OpArgs *a = opaque;

    return a->fn(a);
}

static int run_drained(OpArgs *a, bool needs_write)
{
    int ret;

    if (needs_write && a->bs->read_only) {
        error_setg(a->errp, "Image '%s' is read-only", a->bs->filename);
        return -EACCES;
    }
    bdrv_drained_begin(a->bs);
    ret = (int)bdrv_run_co(a->bs->aio_context, op_co, a);
    bdrv_drained_end(a->bs);
    return ret;
}

static int coroutine_fn sn_create_fn(OpArgs *a)
{
    return a->bs->drv->co_snapshot_create(a->bs, a->out, a->errp);
}

int bdrv_snapshot_create(BlockDriverState *bs, BlockSnapshotInfo *sn, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = sn_create_fn, .out = sn, .errp = errp };

    if (!HAS_CB(bs->drv, co_snapshot_create)) {
        return no_support(bs, "internal snapshots", errp);
    }
    return run_drained(&a, true);
}

static int coroutine_fn sn_goto_fn(OpArgs *a)
{
    return a->bs->drv->co_snapshot_goto(a->bs, a->p1, a->errp);
}

int bdrv_snapshot_goto(BlockDriverState *bs, const char *name_or_id, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = sn_goto_fn, .p1 = name_or_id, .errp = errp };

    if (!HAS_CB(bs->drv, co_snapshot_goto)) {
        return no_support(bs, "internal snapshots", errp);
    }
    return run_drained(&a, true);
}

static int coroutine_fn sn_delete_fn(OpArgs *a)
{
    return a->bs->drv->co_snapshot_delete(a->bs, a->p1, a->p2, a->errp);
}

int bdrv_snapshot_delete(BlockDriverState *bs, const char *id, const char *name, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = sn_delete_fn, .p1 = id, .p2 = name, .errp = errp };

    if (!HAS_CB(bs->drv, co_snapshot_delete)) {
        return no_support(bs, "internal snapshots", errp);
    }
    if (!id && !name) {
        error_setg(errp, "A snapshot id or name is required");
        return -EINVAL;
    }
    return run_drained(&a, true);
}

static int coroutine_fn sn_list_fn(OpArgs *a)
{
    return a->bs->drv->co_snapshot_list(a->bs, a->out);
}

int bdrv_snapshot_list(BlockDriverState *bs, BlockSnapshotInfo **psn)
{
    OpArgs a = { .bs = bs, .fn = sn_list_fn, .out = psn };

    *psn = NULL;
    if (!HAS_CB(bs->drv, co_snapshot_list)) {
        return -ENOTSUP;
    }
    return (int)bdrv_run_co(bs->aio_context, op_co, &a);
}

static int coroutine_fn vmstate_fn(OpArgs *a)
{
    IOVector qiov;
    int ret;

    iovector_init_buf(&qiov, a->out, (size_t)a->n2);
    ret = a->flag ? a->bs->drv->co_save_vmstate(a->bs, &qiov, a->n1)
                  : a->bs->drv->co_load_vmstate(a->bs, &qiov, a->n1);
    return ret < 0 ? ret : (int)a->n2;
}

int bdrv_save_vmstate(BlockDriverState *bs, const void *buf, int64_t pos, int64_t size)
{
    OpArgs a = { .bs = bs, .fn = vmstate_fn, .out = (void *)buf, .n1 = pos, .n2 = size,
                 .flag = true };

    if (!HAS_CB(bs->drv, co_save_vmstate)) {
        return -ENOTSUP;
    }
    if (pos < 0 || size < 0 || size > INT32_MAX) {
        return -EINVAL;
    }
    if (bs->read_only) {
        return -EACCES;
    }
    return (int)bdrv_run_co(bs->aio_context, op_co, &a);
}

int bdrv_load_vmstate(BlockDriverState *bs, void *buf, int64_t pos, int64_t size)
{
    OpArgs a = { .bs = bs, .fn = vmstate_fn, .out = buf, .n1 = pos, .n2 = size };

    if (!HAS_CB(bs->drv, co_load_vmstate)) {
        return -ENOTSUP;
    }
    if (pos < 0 || size < 0 || size > INT32_MAX) {
        return -EINVAL;
    }
    return (int)bdrv_run_co(bs->aio_context, op_co, &a);
}

/* ---------------------------------------------------------------------- */
/* Backing files, amend, make_empty, measure */

static int coroutine_fn backing_fn(OpArgs *a)
{
    return a->bs->drv->co_change_backing_file(a->bs, a->p1, a->p2, a->errp);
}

int bdrv_change_backing_file(BlockDriverState *bs, const char *backing_file,
                             const char *backing_fmt, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = backing_fn, .p1 = backing_file, .p2 = backing_fmt,
                 .errp = errp };

    if (!HAS_CB(bs->drv, co_change_backing_file)) {
        return no_support(bs, "changing the backing file", errp);
    }
    if (backing_fmt && !backing_file) {
        error_setg(errp, "A backing format needs a backing file");
        return -EINVAL;
    }
    return run_drained(&a, true);
}

static int coroutine_fn amend_fn(OpArgs *a)
{
    return a->bs->drv->co_amend(a->bs, a->out, a->flag, a->errp);
}

int bdrv_amend_options(BlockDriverState *bs, BlockOpts *options, bool force, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = amend_fn, .out = options, .flag = force, .errp = errp };

    if (!HAS_CB(bs->drv, co_amend)) {
        return no_support(bs, "amending options", errp);
    }
    return run_drained(&a, true);
}

static int coroutine_fn make_empty_fn(OpArgs *a)
{
    return a->bs->drv->co_make_empty(a->bs, a->errp);
}

int bdrv_make_empty(BlockDriverState *bs, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = make_empty_fn, .errp = errp };

    if (!HAS_CB(bs->drv, co_make_empty)) {
        return no_support(bs, "emptying the image", errp);
    }
    return run_drained(&a, true);
}

int bdrv_measure(const char *format, BlockOpts *options, BlockDriverState *in_bs,
                 BlockMeasureInfo *out, Error **errp)
{
    const BlockDriver *drv = bdrv_find_format(format);

    memset(out, 0, sizeof(*out));
    if (!drv) {
        error_setg(errp, "Unknown file format '%s'", format);
        return -EINVAL;
    }
    if (!HAS_CB(drv, measure)) {
        error_setg(errp, "Format driver '%s' does not support size measurement", format);
        return -ENOTSUP;
    }
    return drv->measure(options, in_bs, out, errp);
}

/* ---------------------------------------------------------------------- */
/* VD-style metadata */

int bdrv_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16])
{
    return HAS_CB(bs->drv, get_uuid) ? bs->drv->get_uuid(bs, kind, uuid) : -ENOTSUP;
}

static int coroutine_fn set_uuid_fn(OpArgs *a)
{
    return a->bs->drv->co_set_uuid(a->bs, (BlockUuidKind)a->n1, a->p1, a->errp);
}

int bdrv_set_uuid(BlockDriverState *bs, BlockUuidKind kind, const uint8_t uuid[16],
                  Error **errp)
{
    OpArgs a = { .bs = bs, .fn = set_uuid_fn, .p1 = uuid, .n1 = kind, .errp = errp };

    if (!HAS_CB(bs->drv, co_set_uuid)) {
        return no_support(bs, "UUIDs", errp);
    }
    return run_drained(&a, true);
}

int bdrv_get_geometry(BlockDriverState *bs, BlockGeometry *geo)
{
    memset(geo, 0, sizeof(*geo));
    return HAS_CB(bs->drv, get_geometry) ? bs->drv->get_geometry(bs, geo) : -ENOTSUP;
}

static int coroutine_fn set_geo_fn(OpArgs *a)
{
    return a->bs->drv->co_set_geometry(a->bs, a->p1, a->errp);
}

int bdrv_set_geometry(BlockDriverState *bs, const BlockGeometry *geo, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = set_geo_fn, .p1 = geo, .errp = errp };

    if (!HAS_CB(bs->drv, co_set_geometry)) {
        return no_support(bs, "a stored geometry", errp);
    }
    if (!geo->cylinders || !geo->heads || !geo->sectors) {
        error_setg(errp, "Geometry %u/%u/%u has a zero field", geo->cylinders, geo->heads,
                   geo->sectors);
        return -EINVAL;
    }
    return run_drained(&a, true);
}

int bdrv_get_comment(BlockDriverState *bs, char **out)
{
    *out = NULL;
    return HAS_CB(bs->drv, get_comment) ? bs->drv->get_comment(bs, out) : -ENOTSUP;
}

static int coroutine_fn set_comment_fn(OpArgs *a)
{
    return a->bs->drv->co_set_comment(a->bs, a->p1, a->errp);
}

int bdrv_set_comment(BlockDriverState *bs, const char *comment, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = set_comment_fn, .p1 = comment, .errp = errp };

    if (!HAS_CB(bs->drv, co_set_comment)) {
        return no_support(bs, "a comment", errp);
    }
    return run_drained(&a, true);
}

typedef struct CompactArgs {
    BlockProgressFn *progress;
    void *opaque;
} CompactArgs;

static int coroutine_fn compact_fn(OpArgs *a)
{
    const CompactArgs *c = a->p1;

    return a->bs->drv->co_compact(a->bs, c->progress, c->opaque, a->errp);
}

int bdrv_compact(BlockDriverState *bs, BlockProgressFn *progress, void *opaque, Error **errp)
{
    CompactArgs c = { progress, opaque };
    OpArgs a = { .bs = bs, .fn = compact_fn, .p1 = &c, .errp = errp };

    if (!HAS_CB(bs->drv, co_compact)) {
        return no_support(bs, "compacting", errp);
    }
    return run_drained(&a, true);
}

/* ---------------------------------------------------------------------- */
/* Persistent dirty bitmaps */

int bdrv_bitmap_list(BlockDriverState *bs, BlockBitmapInfo **out)
{
    *out = NULL;
    if (!HAS_CB(bs->drv, bitmap_list)) {
        return 0; /* a format without persistent bitmaps stores none */
    }
    return bs->drv->bitmap_list(bs, out);
}

void bdrv_bitmap_list_free(BlockBitmapInfo *list, int n)
{
    for (int i = 0; list && i < n; i++) {
        free(list[i].name);
    }
    free(list);
}

static int coroutine_fn bitmap_modify_fn(OpArgs *a)
{
    return a->bs->drv->co_bitmap_modify(a->bs, a->p1, a->errp);
}

int bdrv_bitmap_modify(BlockDriverState *bs, const BlockBitmapRequest *req, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = bitmap_modify_fn, .p1 = req, .errp = errp };

    if (!HAS_CB(bs->drv, co_bitmap_modify)) {
        return no_support(bs, "persistent dirty bitmaps", errp);
    }
    if (!req->name || !*req->name) {
        error_setg(errp, "A bitmap name is required");
        return -EINVAL;
    }
    return run_drained(&a, true);
}

/* ---------------------------------------------------------------------- */
/* Temporary snapshot load */

static int coroutine_fn load_tmp_fn(OpArgs *a)
{
    return a->bs->drv->co_snapshot_load_tmp(a->bs, a->p1, a->p2, a->errp);
}

int bdrv_snapshot_load_tmp(BlockDriverState *bs, const char *id, const char *name, Error **errp)
{
    OpArgs a = { .bs = bs, .fn = load_tmp_fn, .p1 = id, .p2 = name, .errp = errp };

    if (!HAS_CB(bs->drv, co_snapshot_load_tmp)) {
        return no_support(bs, "loading internal snapshots", errp);
    }
    return run_drained(&a, false);
}

int bdrv_snapshot_load_tmp_param(BlockDriverState *bs, const char *param, Error **errp)
{
    char id[128] = "", name[256] = "";
    const char *p = param;
    Error *local = NULL;
    int ret;

    if (strncmp(param, "snapshot.", 9)) {
        /* An id or a name: the id wins, as qemu-img does. */
        ret = bdrv_snapshot_load_tmp(bs, param, NULL, &local);
        if (ret == -ENOENT) {
            error_free(local);
            local = NULL;
            ret = bdrv_snapshot_load_tmp(bs, NULL, param, &local);
        }
        if (local) {
            error_propagate(errp, local);
        }
        return ret;
    }
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char *dst = !strncmp(p, "snapshot.id=", 12) ? id : !strncmp(p, "snapshot.name=", 14)
                                                                ? name : NULL;
        size_t klen = dst == id ? 12 : 14, cap = dst == id ? sizeof(id) : sizeof(name);

        if (!dst || len - klen >= cap) {
            error_setg(errp, "Invalid snapshot parameter '%.*s' (expected snapshot.id=ID "
                       "and/or snapshot.name=NAME)", (int)len, p);
            return -EINVAL;
        }
        memcpy(dst, p + klen, len - klen);
        dst[len - klen] = '\0';
        p += len + (comma ? 1 : 0);
    }
    return bdrv_snapshot_load_tmp(bs, *id ? id : NULL, *name ? name : NULL, errp);
}

static int coroutine_fn bitmap_query_fn(OpArgs *a)
{
    return a->bs->drv->co_bitmap_query(a->bs, a->p1, a->n1, a->n2, a->out);
}

int bdrv_bitmap_query(BlockDriverState *bs, const char *name, int64_t offset, int64_t bytes,
                      int64_t *pnum)
{
    OpArgs a = { .bs = bs, .fn = bitmap_query_fn, .p1 = name, .n1 = offset, .n2 = bytes,
                 .out = pnum };

    *pnum = 0;
    if (!HAS_CB(bs->drv, co_bitmap_query)) {
        return -ENOENT;
    }
    if (offset < 0 || bytes <= 0) {
        return -EINVAL;
    }
    return (int)bdrv_run_co(bs->aio_context, op_co, &a);
}
