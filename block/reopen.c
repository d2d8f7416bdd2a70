/*
 * Reopen (read-only <-> read-write, cache mode, discard, detect-zeroes) and
 * moving a drained graph to another AioContext.
 *
 * Reopen is a transaction over the node and its file-side children: every
 * driver's reopen_prepare runs first (any may refuse), then all commit, or
 * all abort and the nodes keep their state. Options other than the mode
 * options go to the top node's driver (e.g. qcow2 cache sizes); any it
 * does not take fail the reopen.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"

typedef struct ReopenEntry {
    BlockDriverState *bs;
    int old_flags;
    bool old_read_only;
    BlockdevDetectZeroes old_dz;
    bool prepared;
} ReopenEntry;

#define REOPEN_MAX 64

/* The node and its file-side children, parents first. */
static int collect(BlockDriverState *bs, ReopenEntry *list, int n, Error **errp)
{
    if (n == REOPEN_MAX) {
        error_setg(errp, "reopen: graph too large");
        return -E2BIG;
    }
    list[n++] = (ReopenEntry){ .bs = bs };
    for (BdrvChild *c = bs->children; c; c = c->next) {
        if (c->role & BDRV_CHILD_COW) {
            continue; /* backing files stay read-only */
        }
        n = collect(c->bs, list, n, errp);
        if (n < 0) {
            return n;
        }
    }
    return n;
}

static int prepare_one(ReopenEntry *e, int flags, BlockdevDetectZeroes dz, BlockOpts *o,
                       Error **errp)
{
    BlockDriverState *bs = e->bs;
    int ret = 0;

    e->old_flags = bs->open_flags;
    e->old_read_only = bs->read_only;
    e->old_dz = bs->detect_zeroes;
    if (bs->drv->reopen_prepare) {
        ret = bs->drv->reopen_prepare(bs, o, flags, errp);
    } else if ((flags ^ bs->open_flags) & (BDRV_O_RDWR | BDRV_O_NOCACHE)) {
        error_setg(errp, "Block format '%s' used by node '%s' does not support reopening "
                         "files", bs->drv->format_name, bs->node_name);
        ret = -ENOTSUP;
    }
    if (ret == 0) {
        e->prepared = true;
        bs->open_flags = flags;
        bs->read_only = !(flags & BDRV_O_RDWR);
        bs->detect_zeroes = dz;
    }
    return ret;
}

/*
 * One transaction: prepare every entry with its target flags and
 * detect-zeroes; if all succeed, commit all, else abort the prepared ones
 * and restore their state.
 */
static int reopen_run(ReopenEntry *list, int n, const int *flags,
                      const BlockdevDetectZeroes *dz, BlockOpts *top, BlockOpts *empty,
                      Error **errp)
{
    int ret = 0;

    for (int i = 0; i < n; i++) {
        list[i].prepared = false;
    }
    for (int i = 0; i < n && ret == 0; i++) {
        ret = prepare_one(&list[i], flags[i], dz[i], i == 0 && top ? top : empty, errp);
    }
    if (ret == 0 && top) {
        ret = bopts_check_empty(top, list[0].bs->node_name, errp);
    }
    for (int i = 0; i < n; i++) {
        BlockDriverState *b = list[i].bs;

        if (!list[i].prepared) {
            continue;
        }
        if (ret == 0) {
            if (b->drv->reopen_commit) {
                b->drv->reopen_commit(b);
            }
        } else {
            if (b->drv->reopen_abort) {
                b->drv->reopen_abort(b);
            }
            b->open_flags = list[i].old_flags;
            b->read_only = list[i].old_read_only;
            b->detect_zeroes = list[i].old_dz;
        }
    }
    return ret;
}

/* Children first: a parent's limits derive from its children's (an O_DIRECT
 * file node now wants aligned requests). */
static int reopen_refresh(ReopenEntry *list, int n, Error **errp)
{
    int ret = 0;

    for (int i = n - 1; i >= 0 && ret == 0; i--) {
        ret = bdrv_refresh_limits(list[i].bs, errp);
    }
    return ret;
}

/* Tells the drivers of the committed nodes that the reopen is over (see reopen_finish). */
static void reopen_finish(ReopenEntry *list, int n, bool undo)
{
    for (int i = 0; i < n; i++) {
        const BlockDriver *drv = list[i].bs->drv;

        if (drv->struct_size >= offsetof(BlockDriver, reopen_finish) +
                                sizeof(drv->reopen_finish) && drv->reopen_finish) {
            drv->reopen_finish(list[i].bs, undo);
        }
    }
}

int bdrv_reopen(BlockDriverState *bs, BlockOpts *options, Error **errp)
{
    ReopenEntry list[REOPEN_MAX];
    int flags = bs->open_flags;
    int new_flags[REOPEN_MAX], old_flags[REOPEN_MAX];
    BlockdevDetectZeroes dz = bs->detect_zeroes;
    BlockdevDetectZeroes new_dz[REOPEN_MAX], old_dz[REOPEN_MAX];
    BlockOpts *empty = bopts_new();
    int n;
    int ret;

    if (!options) {
        options = bopts_new();
    }
    ret = bdrv_take_mode_opts(options, &flags, &dz, false, errp);
    n = ret < 0 ? ret : collect(bs, list, 0, errp);
    if (n < 0) {
        bopts_free(options);
        bopts_free(empty);
        return n;
    }
    for (int i = 0; i < n; i++) {
        BlockDriverState *b = list[i].bs;

        /* The top node gets the new detect-zeroes; children keep theirs. */
        new_flags[i] = i == 0 ? flags
                              : (flags & ~BDRV_O_PROTOCOL) | (b->open_flags & BDRV_O_PROTOCOL);
        new_dz[i] = i == 0 ? dz : b->detect_zeroes;
        old_flags[i] = b->open_flags;
        old_dz[i] = b->detect_zeroes;
    }
    bdrv_drained_begin(bs);
    ret = reopen_run(list, n, new_flags, new_dz, options, empty, errp);
    if (ret == 0) {
        ret = reopen_refresh(list, n, errp);
        if (ret < 0) {
            /* The new state cannot work: go back to the old one, whose
             * limits were valid, so the error leaves the nodes as they were. */
            if (reopen_run(list, n, old_flags, old_dz, NULL, empty, NULL) < 0 ||
                reopen_refresh(list, n, NULL) < 0) {
                coblk_warn("reopen of '%s' failed and could not restore the old mode",
                           bs->node_name);
            }
        }
        reopen_finish(list, n, ret < 0);
    }
    bdrv_drained_end(bs);
    bopts_free(options);
    bopts_free(empty);
    return ret;
}

int bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, Error **errp)
{
    BlockOpts *o = bopts_new();

    bopts_set(o, "read-only", read_only ? "on" : "off");
    return bdrv_reopen(bs, o, errp);
}

/* ---------------------------------------------------------------------- */
/* AioContext moves */

static void detach_tree(BlockDriverState *bs)
{
    for (BdrvChild *c = bs->children; c; c = c->next) {
        detach_tree(c->bs);
    }
    if (bs->drv->detach_aio_context) {
        bs->drv->detach_aio_context(bs);
    }
}

static void attach_tree(BlockDriverState *bs, AioContext *ctx)
{
    bs->aio_context = ctx;
    for (BdrvChild *c = bs->children; c; c = c->next) {
        attach_tree(c->bs, ctx);
    }
    if (bs->drv->attach_aio_context) {
        bs->drv->attach_aio_context(bs, ctx);
    }
    for (BdrvChild *p = bs->parents; p; p = p->next_parent) {
        if (!p->parent) {
            blk_root_set_aio_context(p, ctx);
        }
    }
}

/* Every parent of a node in the subtree must be inside it (or a BlockBackend). */
static bool parents_inside(BlockDriverState *bs, BlockDriverState *top)
{
    for (BdrvChild *p = bs->parents; p; p = p->next_parent) {
        if (p->parent && bs != top && p->parent->aio_context != bs->aio_context) {
            return false;
        }
    }
    for (BdrvChild *c = bs->children; c; c = c->next) {
        if (!parents_inside(c->bs, top)) {
            return false;
        }
    }
    return true;
}

int bdrv_try_change_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp)
{
    if (bs->aio_context == ctx) {
        return 0;
    }
    for (BdrvChild *p = bs->parents; p; p = p->next_parent) {
        if (p->parent) {
            error_setg(errp, "node '%s' has a parent node ('%s'); move that instead",
                       bs->node_name, p->parent->node_name);
            return -EPERM;
        }
    }
    if (!parents_inside(bs, bs)) {
        error_setg(errp, "node '%s': a child is shared with a node in another context",
                   bs->node_name);
        return -EPERM;
    }
    bdrv_drained_begin(bs);
    detach_tree(bs);
    attach_tree(bs, ctx);
    bdrv_drained_end(bs);
    return 0;
}
