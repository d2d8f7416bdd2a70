/*
 * The node graph: the list of open nodes and their names, children and
 * parents, references and close order, driver registry lookups.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include <coblk/plugin.h>

static BlockDriverState *all_nodes;
static unsigned next_node_id;

/*
 * Drivers registered at run time (bdrv_register, plugins). Appends hold
 * registry_lock; lookups read the count with acquire ordering, so they see
 * only fully stored entries and never take the lock.
 */
#define MAX_PLUGIN_DRIVERS 64
static const BlockDriver *plugin_drivers[MAX_PLUGIN_DRIVERS];
static _Atomic int n_plugin_drivers;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---------------------------------------------------------------------- */
/* Driver registry */

static const BlockDriver *driver_at(int i)
{
    int n_builtin = 0;

    while (bdrv_builtin_drivers[n_builtin]) {
        n_builtin++;
    }
    if (i < n_builtin) {
        return bdrv_builtin_drivers[i];
    }
    i -= n_builtin;
    return i < atomic_load_explicit(&n_plugin_drivers, memory_order_acquire) ?
           plugin_drivers[i] : NULL;
}

/* Lookup without loading the plugin directory first (the loader uses it). */
static const BlockDriver *find_format_noload(const char *name)
{
    const BlockDriver *drv;

    for (int i = 0; (drv = driver_at(i)); i++) {
        if (!strcmp(drv->format_name, name)) {
            return drv;
        }
    }
    return NULL;
}

static const BlockDriver *find_protocol_noload(const char *name)
{
    const BlockDriver *drv;

    for (int i = 0; (drv = driver_at(i)); i++) {
        if (drv->is_protocol && drv->protocol_name && !strcmp(drv->protocol_name, name)) {
            return drv;
        }
    }
    return NULL;
}

const BlockDriver *bdrv_find_format(const char *name)
{
    const BlockDriver *drv;

    bdrv_plugins_autoload();
    for (int i = 0; (drv = driver_at(i)); i++) {
        if (!strcmp(drv->format_name, name)) {
            return drv;
        }
    }
    return NULL;
}

const BlockDriver *bdrv_find_protocol_prefix(const char *filename)
{
    const BlockDriver *drv;
    const char *colon = strchr(filename, ':');
    size_t len;

    if (!colon) {
        return NULL;
    }
    bdrv_plugins_autoload();
    len = (size_t)(colon - filename);
    /* "C:\..." style or path components are not protocols. */
    if (memchr(filename, '/', len)) {
        return NULL;
    }
    for (int i = 0; (drv = driver_at(i)); i++) {
        if (drv->is_protocol && drv->protocol_name && strlen(drv->protocol_name) == len &&
            !strncmp(drv->protocol_name, filename, len)) {
            return drv;
        }
    }
    return NULL;
}

const BlockDriver *bdrv_probe_format(const uint8_t *buf, int len, const char *filename)
{
    const BlockDriver *drv;
    const BlockDriver *best = NULL;
    int best_score = 0;

    bdrv_plugins_autoload();
    for (int i = 0; (drv = driver_at(i)); i++) {
        int score;

        if (!drv->probe) {
            continue;
        }
        score = drv->probe(buf, len, filename);
        if (score > best_score) {
            best_score = score;
            best = drv;
        }
    }
    return best;
}

/* The oldest driver table the library accepts: through io_unplug. */
#define BDRV_MIN_STRUCT_SIZE offsetof(BlockDriver, io_unplug)

/* Checks one table; who names its origin in messages ("plugin 'x.so'"). */
static int check_driver(const BlockDriver *drv, const char *who, Error **errp)
{
    if (!drv || drv->struct_size < BDRV_MIN_STRUCT_SIZE) {
        error_setg(errp, "%s: driver table too small (struct_size %u, at least %zu needed)",
                   who, drv ? drv->struct_size : 0, (size_t)BDRV_MIN_STRUCT_SIZE);
        return -EINVAL;
    }
    if (!drv->format_name || !drv->format_name[0]) {
        error_setg(errp, "%s: driver table has no format_name", who);
        return -EINVAL;
    }
    if (drv->struct_size > sizeof(BlockDriver)) {
        error_setg(errp, "%s: driver '%s' was built for a newer coblk (struct_size %u > %zu)",
                   who, drv->format_name, drv->struct_size, sizeof(BlockDriver));
        return -EINVAL;
    }
    if (!drv->bdrv_open || !drv->co_preadv) {
        error_setg(errp, "%s: driver '%s' lacks the mandatory callback %s", who,
                   drv->format_name, drv->bdrv_open ? "co_preadv" : "bdrv_open");
        return -EINVAL;
    }
    return 0;
}

/* Checks that drvs[i]'s names are free in the registry and among drvs[0..i). */
static int check_names_free(const BlockDriver *const *drvs, size_t i, const char *who,
                            Error **errp)
{
    const BlockDriver *d = drvs[i];
    const BlockDriver *old = find_format_noload(d->format_name);
    const char *proto = d->is_protocol && d->protocol_name && d->protocol_name[0] ?
                        d->protocol_name : NULL;
    const char *owner;

    for (size_t j = 0; j < i; j++) {
        if (strcmp(drvs[j]->format_name, d->format_name) == 0) {
            error_setg(errp, "%s: driver '%s' is listed twice", who, d->format_name);
            return -EEXIST;
        }
    }
    if (old) {
        owner = coblk_plugin_path_of(old);
        error_setg(errp, "%s: driver '%s' is already registered (%s%s)", who, d->format_name,
                   owner ? "by plugin " : "a built-in driver", owner ? owner : "");
        return -EEXIST;
    }
    if (proto && find_protocol_noload(proto)) {
        error_setg(errp, "%s: protocol '%s' of driver '%s' is already registered", who, proto,
                   d->format_name);
        return -EEXIST;
    }
    return 0;
}

int bdrv_register_drivers(const BlockDriver *const *drvs, size_t n, const char *who,
                          Error **errp)
{
    int ret = 0;
    int count;

    for (size_t i = 0; i < n; i++) {
        ret = check_driver(drvs[i], who, errp);
        if (ret < 0) {
            return ret;
        }
    }
    pthread_mutex_lock(&registry_lock);
    count = atomic_load_explicit(&n_plugin_drivers, memory_order_relaxed);
    for (size_t i = 0; i < n && ret == 0; i++) {
        ret = check_names_free(drvs, i, who, errp);
    }
    if (ret == 0 && n > (size_t)(MAX_PLUGIN_DRIVERS - count)) {
        error_setg(errp, "%s: too many drivers (at most %d registered at run time)", who,
                   MAX_PLUGIN_DRIVERS);
        ret = -ENOSPC;
    }
    for (size_t i = 0; i < n && ret == 0; i++) {
        plugin_drivers[count + (int)i] = drvs[i];
    }
    if (ret == 0) {
        atomic_store_explicit(&n_plugin_drivers, count + (int)n, memory_order_release);
    }
    pthread_mutex_unlock(&registry_lock);
    return ret;
}

int bdrv_register(const BlockDriver *drv, Error **errp)
{
    return bdrv_register_drivers(&drv, 1, "bdrv_register", errp);
}

size_t bdrv_driver_names(const char **names, size_t size)
{
    const BlockDriver *drv;
    size_t n = 0;

    bdrv_plugins_autoload();
    /* Once each: several tables may share a name (nbd, nbd+unix, nbd+tcp). */
    for (int i = 0; (drv = driver_at(i)); i++) {
        bool seen = false;

        for (int j = 0; j < i && !seen; j++) {
            seen = strcmp(driver_at(j)->format_name, drv->format_name) == 0;
        }
        if (seen) {
            continue;
        }
        if (n + 1 < size) {
            names[n] = drv->format_name;
        }
        n++;
    }
    if (size) {
        names[n < size ? n : size - 1] = NULL;
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* Nodes */

BlockDriverState *bdrv_new_node(const BlockDriver *drv, AioContext *ctx)
{
    BlockDriverState *bs = calloc(1, sizeof(*bs));

    if (!bs) {
        return NULL;
    }
    if (drv->instance_size) {
        bs->opaque = calloc(1, drv->instance_size);
        if (!bs->opaque) {
            free(bs);
            return NULL;
        }
    }
    bs->drv = drv;
    bs->refcnt = 1;
    bs->aio_context = ctx;
    bdrv_io_init(bs);
    snprintf(bs->node_name, sizeof(bs->node_name), "#block%03u", next_node_id++);
    bs->all_next = all_nodes;
    all_nodes = bs;
    return bs;
}

/* Frees a node that never opened (or whose driver closed it). */
void bdrv_free_node(BlockDriverState *bs)
{
    BlockDriverState **pp = &all_nodes;

    while (*pp && *pp != bs) {
        pp = &(*pp)->all_next;
    }
    if (*pp) {
        *pp = bs->all_next;
    }
    free(bs->opaque);
    free(bs);
}

/* Node names: letters, digits, '-', '.', '_'; start with a letter; < 32 bytes. */
int bdrv_set_node_name(BlockDriverState *bs, const char *name, Error **errp)
{
    size_t len = strlen(name);

    if (len == 0 || len >= sizeof(bs->node_name) ||
        !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z'))) {
        error_setg(errp, "Invalid node-name: '%s'", name);
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_')) {
            error_setg(errp, "Invalid node-name: '%s'", name);
            return -EINVAL;
        }
    }
    if (bdrv_find_node(name)) {
        error_setg(errp, "Duplicate nodes with node-name='%s'", name);
        return -EEXIST;
    }
    memcpy(bs->node_name, name, len + 1);
    return 0;
}

BlockDriverState *bdrv_find_node(const char *node_name)
{
    for (BlockDriverState *bs = all_nodes; bs; bs = bs->all_next) {
        if (!strcmp(bs->node_name, node_name)) {
            return bs;
        }
    }
    return NULL;
}

const char *bdrv_get_node_name(const BlockDriverState *bs)
{
    return bs->node_name;
}

const char *bdrv_get_format_name(const BlockDriverState *bs)
{
    return bs->drv ? bs->drv->format_name : NULL;
}

const char *bdrv_get_filename(const BlockDriverState *bs)
{
    return bs->filename;
}

bool bdrv_is_read_only(const BlockDriverState *bs)
{
    return bs->read_only;
}

BlockDriverState *bdrv_file_bs(const BlockDriverState *bs)
{
    return bs->file ? bs->file->bs : NULL;
}

BlockDriverState *bdrv_backing_bs(const BlockDriverState *bs)
{
    return bs->backing ? bs->backing->bs : NULL;
}

AioContext *bdrv_get_aio_context(const BlockDriverState *bs)
{
    return bs->aio_context;
}

/* ---------------------------------------------------------------------- */
/* Children */

static BdrvChild *child_new(BlockDriverState *child_bs, BlockDriverState *parent,
                            const char *name, unsigned role)
{
    BdrvChild *c = calloc(1, sizeof(*c));

    if (!c || !(c->name = strdup(name))) {
        abort();
    }
    c->bs = child_bs;
    c->parent = parent;
    c->role = role;
    c->next_parent = child_bs->parents;
    child_bs->parents = c;
    return c;
}

static void child_free(BdrvChild *c)
{
    BdrvChild **pp = &c->bs->parents;

    while (*pp != c) {
        pp = &(*pp)->next_parent;
    }
    *pp = c->next_parent;
    free(c->name);
    free(c);
}

bool bdrv_is_ancestor_or_self(const BlockDriverState *node, const BlockDriverState *bs)
{
    if (node == bs) {
        return true;
    }
    for (const BdrvChild *p = bs->parents; p; p = p->next_parent) {
        if (p->parent && bdrv_is_ancestor_or_self(node, p->parent)) {
            return true;
        }
    }
    return false;
}

BdrvChild *bdrv_attach_child(BlockDriverState *parent, BlockDriverState *child_bs,
                             const char *name, unsigned role)
{
    BdrvChild *c = child_new(child_bs, parent, name, role);
    BdrvChild **tail = &parent->children;

    bdrv_ref(child_bs);
    while (*tail) {
        tail = &(*tail)->next;
    }
    *tail = c;
    if (role & BDRV_CHILD_PRIMARY) {
        parent->file = c;
    }
    if (role & BDRV_CHILD_COW) {
        parent->backing = c;
    }
    return c;
}

void bdrv_unref_child(BlockDriverState *parent, BdrvChild *child)
{
    BdrvChild **pp = &parent->children;
    BlockDriverState *child_bs;

    if (!child) {
        return;
    }
    child_bs = child->bs;
    while (*pp && *pp != child) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = child->next;
    }
    if (parent->file == child) {
        parent->file = NULL;
    }
    if (parent->backing == child) {
        parent->backing = NULL;
    }
    child_free(child);
    bdrv_unref(child_bs);
}

BdrvChild *bdrv_root_attach_child(BlockDriverState *bs, const char *name, void *blk)
{
    BdrvChild *c = child_new(bs, NULL, name, BDRV_CHILD_IMAGE);

    c->opaque = blk;
    bdrv_ref(bs);
    return c;
}

void bdrv_root_detach_child(BdrvChild *child)
{
    child_free(child);
}

void bdrv_root_unref_child(BdrvChild *child)
{
    BlockDriverState *bs = child->bs;

    child_free(child);
    bdrv_unref(bs);
}

/* ---------------------------------------------------------------------- */
/* References and close */

void bdrv_ref(BlockDriverState *bs)
{
    bs->refcnt++;
}

static int64_t coroutine_fn close_flush_co(void *opaque)
{
    return bdrv_co_flush(opaque);
}

static void bdrv_close(BlockDriverState *bs)
{
    int ret;

    /* Nobody holds a reference, so no new request can come after this. */
    blk_free_classic(bs);
    bdrv_drain(bs);
    /*
     * What was written is durable once the image is closed (as in QEMU),
     * unless the cache mode says flushes are no-ops: the node's caches and
     * its children now; what the driver's close writes after this is
     * flushed when each child closes in turn. A node that wrote nothing
     * since its last flush skips it.
     */
    ret = (int)bdrv_run_co(bdrv_get_aio_context(bs), close_flush_co, bs);
    if (ret < 0) {
        coblk_warn("flushing '%s' on close failed: %s", bs->filename, strerror(-ret));
    }
    if (bs->drv->bdrv_close) {
        bs->drv->bdrv_close(bs);
    }
    /* Parents close before their children: drop the children last. */
    while (bs->children) {
        bdrv_unref_child(bs, bs->children);
    }
}

void bdrv_unref(BlockDriverState *bs)
{
    if (!bs) {
        return;
    }
    if (--bs->refcnt > 0) {
        return;
    }
    bdrv_close(bs);
    bdrv_free_node(bs);
}
