/*
 * Reopen (read-only <-> read-write, cache mode, discard, detect-zeroes,
 * driver options such as qcow2's cache sizes) and moving a drained graph to
 * another AioContext.
 *
 * Reopen is one transaction over a set of nodes: the node, its file-side
 * children (which follow its mode), and every node that options name by
 * dotted child path ("file.locking=...", "backing.l2-cache-size=...",
 * "backing.file.cache.no-flush=on"). Each node's driver gets only its own
 * options, with the path stripped. Every reopen_prepare runs first (any
 * may refuse, and an option no driver takes fails the reopen), then all
 * commit, or all prepared nodes abort and every node keeps its state.
 * Backing files not named by an option are left alone (they stay
 * read-only and keep their mode).
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"

#define REOPEN_MAX 64
#define REOPEN_PATH 256

typedef struct ReopenEntry {
    BlockDriverState *bs;
    char path[REOPEN_PATH];    /* "" for the top, else "backing.file" ... */
    BlockOpts *opts;           /* this node's own options, path stripped */
    int new_flags;
    BlockdevDetectZeroes new_dz;
    int old_flags;
    bool old_read_only;
    BlockdevDetectZeroes old_dz;
    bool prepared;
} ReopenEntry;

typedef struct ReopenSet {
    ReopenEntry e[REOPEN_MAX];
    int n;
} ReopenSet;

static bool set_has(const ReopenSet *set, const BlockDriverState *bs)
{
    for (int i = 0; i < set->n; i++) {
        if (set->e[i].bs == bs) {
            return true;
        }
    }
    return false;
}

static int collect(ReopenSet *set, BlockDriverState *bs, BlockOpts *opts, const char *path,
                   int base_flags, Error **errp);

/*
 * Adds the children of set->e[idx]: each child's options leave the parent's
 * map under "<child name>.". File-side children follow the parent's new
 * mode; a backing child joins only when options name it or its subtree.
 */
static int collect_children(ReopenSet *set, int idx, Error **errp)
{
    ReopenEntry *e = &set->e[idx];

    for (BdrvChild *c = e->bs->children; c; c = c->next) {
        char prefix[REOPEN_PATH + 1], path[REOPEN_PATH];
        bool cow = c->role & BDRV_CHILD_COW;
        BlockOpts *copts;
        int flags, ret;

        snprintf(prefix, sizeof(prefix), "%s.", c->name);
        copts = bopts_extract_prefix(set->e[idx].opts, prefix);
        if (!copts) {
            error_setg(errp, "out of memory");
            return -ENOMEM;
        }
        if ((cow && !bopts_count(copts)) || set_has(set, c->bs)) {
            if (bopts_count(copts)) {
                error_setg(errp, "reopen: node '%s' is reached twice ('%s%s')",
                           c->bs->node_name, prefix, bopts_key_at(copts, 0));
                bopts_free(copts);
                return -EINVAL;
            }
            bopts_free(copts);
            continue;
        }
        e = &set->e[idx];
        snprintf(path, sizeof(path), "%s%s%s", e->path, e->path[0] ? "." : "", c->name);
        flags = cow ? c->bs->open_flags
                    : (e->new_flags & ~BDRV_O_PROTOCOL) | (c->bs->open_flags & BDRV_O_PROTOCOL);
        ret = collect(set, c->bs, copts, path, flags, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/*
 * Adds bs with its options (consumed) and the children they or its mode
 * reach. base_flags is the mode bs gets unless its own options change it.
 */
static int collect(ReopenSet *set, BlockDriverState *bs, BlockOpts *opts, const char *path,
                   int base_flags, Error **errp)
{
    ReopenEntry *e;
    int idx = set->n;

    if (set->n == REOPEN_MAX) {
        error_setg(errp, "reopen: graph too large");
        bopts_free(opts);
        return -E2BIG;
    }
    e = &set->e[set->n++];
    *e = (ReopenEntry){ .bs = bs, .opts = opts, .new_flags = base_flags,
                        .new_dz = bs->detect_zeroes };
    snprintf(e->path, sizeof(e->path), "%s", path);
    if (bdrv_take_mode_opts(opts, &e->new_flags, &e->new_dz, false, errp) < 0) {
        if (path[0]) {
            error_prepend(errp, "%s: ", path);
        }
        return -EINVAL;
    }
    return collect_children(set, idx, errp);
}

static void set_free_opts(ReopenSet *set)
{
    for (int i = 0; i < set->n; i++) {
        bopts_free(set->e[i].opts);
        set->e[i].opts = NULL;
    }
}

/* Stages e's new mode and options in its driver; leftover options fail it. */
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
        if (o) {
            ret = bopts_check_empty(o, e->path[0] ? e->path : bs->node_name, errp);
        }
    } else if (e->path[0]) {
        error_prepend(errp, "%s: ", e->path);
    }
    return ret;
}

/*
 * One transaction: prepare every entry, with its options when use_opts
 * (else none) and its new or old mode; if all succeed, commit all, else
 * abort the prepared ones and restore their state.
 */
static int reopen_run(ReopenSet *set, bool to_new, bool use_opts, Error **errp)
{
    BlockOpts *empty = bopts_new();
    int ret = empty ? 0 : -ENOMEM;

    for (int i = 0; i < set->n; i++) {
        set->e[i].prepared = false;
    }
    for (int i = 0; i < set->n && ret == 0; i++) {
        ReopenEntry *e = &set->e[i];

        ret = prepare_one(e, to_new ? e->new_flags : e->old_flags,
                          to_new ? e->new_dz : e->old_dz, use_opts ? e->opts : empty, errp);
    }
    for (int i = 0; i < set->n; i++) {
        ReopenEntry *e = &set->e[i];
        BlockDriverState *b = e->bs;

        if (!e->prepared) {
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
            b->open_flags = e->old_flags;
            b->read_only = e->old_read_only;
            b->detect_zeroes = e->old_dz;
        }
    }
    bopts_free(empty);
    return ret;
}

/* Children first: a parent's limits derive from its children's (an O_DIRECT
 * file node now wants aligned requests). */
static int reopen_refresh(ReopenSet *set, Error **errp)
{
    int ret = 0;

    for (int i = set->n - 1; i >= 0 && ret == 0; i--) {
        ret = bdrv_refresh_limits(set->e[i].bs, errp);
    }
    return ret;
}

/* Tells the drivers of the committed nodes that the reopen is over (see reopen_finish). */
static void reopen_finish(ReopenSet *set, bool undo)
{
    for (int i = 0; i < set->n; i++) {
        const BlockDriver *drv = set->e[i].bs->drv;

        if (drv->struct_size >= offsetof(BlockDriver, reopen_finish) +
                                sizeof(drv->reopen_finish) && drv->reopen_finish) {
            drv->reopen_finish(set->e[i].bs, undo);
        }
    }
}

int bdrv_reopen(BlockDriverState *bs, BlockOpts *options, Error **errp)
{
    ReopenSet *set = calloc(1, sizeof(*set));
    int ret;

    if (!options) {
        options = bopts_new();
    }
    if (!set || !options) {
        error_setg(errp, "out of memory");
        free(set);
        bopts_free(options);
        return -ENOMEM;
    }
    ret = collect(set, bs, options, "", bs->open_flags, errp);
    if (ret < 0) {
        set_free_opts(set);
        free(set);
        return ret;
    }
    for (int i = 0; i < set->n; i++) {
        set->e[i].old_flags = set->e[i].bs->open_flags;
        set->e[i].old_dz = set->e[i].bs->detect_zeroes;
    }
    bdrv_drained_begin(bs);
    ret = reopen_run(set, true, true, errp);
    if (ret == 0) {
        ret = reopen_refresh(set, errp);
        if (ret < 0) {
            /* The new state cannot work: go back to the old one, whose
             * limits were valid, so the error leaves the nodes as they were. */
            if (reopen_run(set, false, false, NULL) < 0 || reopen_refresh(set, NULL) < 0) {
                coblk_warn("reopen of '%s' failed and could not restore the old mode",
                           bs->node_name);
            }
        }
        reopen_finish(set, ret < 0);
    }
    bdrv_drained_end(bs);
    set_free_opts(set);
    free(set);
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
