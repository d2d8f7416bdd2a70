/*
 * Opening nodes: generic options, driver choice (explicit, protocol prefix
 * or probing), children, backing chains.
 *
 * Untrusted input here: option strings from users, and the backing file
 * name and format that come from image headers. Header-supplied names are
 * only ever opened as plain files through the file protocol ("json:" and
 * protocol prefixes are not interpreted), and in untrusted mode only as a
 * sibling of the image.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include <coblk/plugin.h>

#define PROBE_BYTES 2048

/* Files of the backing chain being opened, to refuse loops. */
typedef struct ChainLink {
    dev_t dev;
    ino_t ino;
    const struct ChainLink *up;
} ChainLink;

/* A plain path names a block device (host_device) or a regular file (file). */
const char *bdrv_default_protocol(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 && S_ISBLK(st.st_mode) ? "host_device" : "file";
}

int bdrv_parse_aio(const char *mode, int *flags)
{
    static const struct {
        const char *name;
        int flag;
    } modes[] = {
        { "threads", BDRV_O_AIO_THREADS },
        { "native", BDRV_O_NATIVE_AIO },
        { "io_uring", BDRV_O_IO_URING },
    };

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (mode && !strcmp(mode, modes[i].name)) {
            *flags = (*flags & ~BDRV_O_AIO_MASK) | modes[i].flag;
            return 0;
        }
    }
    return -EINVAL;
}

static BlockDriverState *open_node(const char *filename, BlockOpts *options, int flags,
                                   int depth, const ChainLink *chain, Error **errp);

static const char *const discard_names[] = { "ignore", "off", "unmap", "on" };
static const char *const dz_names[] = { "off", "on", "unmap" };

typedef struct GenericOpts {
    int flags;
    BlockdevDetectZeroes detect_zeroes;
    char *node_name;
} GenericOpts;

static int take_flag(BlockOpts *o, const char *key, int bit, int *flags, Error **errp)
{
    bool v;
    int ret = bopts_take_bool(o, key, (*flags & bit) != 0, &v, errp);

    if (ret < 0) {
        return ret;
    }
    *flags = v ? (*flags | bit) : (*flags & ~bit);
    return 0;
}

int bdrv_take_mode_opts(BlockOpts *o, int *flags, BlockdevDetectZeroes *dz, bool at_open,
                        Error **errp)
{
    bool ro;
    int discard;
    int v;

    if (bopts_take_bool(o, "read-only", !(*flags & BDRV_O_RDWR), &ro, errp) < 0) {
        return -EINVAL;
    }
    *flags = ro ? (*flags & ~BDRV_O_RDWR) : (*flags | BDRV_O_RDWR);
    if (take_flag(o, "cache.direct", BDRV_O_NOCACHE, flags, errp) < 0 ||
        take_flag(o, "cache.no-flush", BDRV_O_NO_FLUSH, flags, errp) < 0) {
        return -EINVAL;
    }
    if (at_open && (take_flag(o, "force-share", BDRV_O_FORCE_SHARE, flags, errp) < 0 ||
                    take_flag(o, "copy-on-read", BDRV_O_COPY_ON_READ, flags, errp) < 0)) {
        return -EINVAL;
    }
    if (at_open && bopts_has(o, "untrusted")) {
        /* untrusted=on: the image's references to other files are only
         * followed to its sibling files. It can be set, never cleared by a
         * child (whose options may come from an image's json: name). */
        int was = *flags & BDRV_O_UNTRUSTED;

        if (take_flag(o, "untrusted", BDRV_O_UNTRUSTED, flags, errp) < 0) {
            return -EINVAL;
        }
        if (was && !(*flags & BDRV_O_UNTRUSTED)) {
            error_setg(errp, "untrusted=off is not allowed under an untrusted node");
            return -EPERM;
        }
    }
    if (bopts_take_enum(o, "discard", discard_names, 4, (*flags & BDRV_O_UNMAP) ? 2 : 0,
                        &discard, errp) < 0) {
        return -EINVAL;
    }
    *flags = discard >= 2 ? (*flags | BDRV_O_UNMAP) : (*flags & ~BDRV_O_UNMAP);
    if (bopts_take_enum(o, "detect-zeroes", dz_names, 3, *dz, &v, errp) < 0) {
        return -EINVAL;
    }
    *dz = (BlockdevDetectZeroes)v;
    if (*dz == BDRV_DETECT_ZEROES_UNMAP && !(*flags & BDRV_O_UNMAP)) {
        error_setg(errp, "setting detect-zeroes to unmap is not allowed without setting "
                         "discard operation to unmap");
        return -EINVAL;
    }
    if ((*flags & BDRV_O_FORCE_SHARE) && (*flags & BDRV_O_RDWR)) {
        error_setg(errp, "force-share=on can only be used with read-only images");
        return -EINVAL;
    }
    return 0;
}

/* Takes the options every node understands. */
/*
 * "plugin=PATH" loads a driver plugin (coblk_plugin_load) before the driver
 * is chosen, so an image of a plugin's format opens from options alone.
 * Options come from the caller: json: names are never read from images, so
 * an image cannot make coblk load code.
 */
static int take_plugin_opt(BlockOpts *o, Error **errp)
{
    char *path = NULL;
    int ret;

    if (bopts_take_str(o, "plugin", &path, errp) < 0) {
        return -EINVAL;
    }
    ret = path ? coblk_plugin_load(path, errp) : 0;
    free(path);
    return ret;
}

static int take_generic_opts(BlockOpts *o, GenericOpts *g, Error **errp)
{
    if (take_plugin_opt(o, errp) < 0 ||
        bdrv_take_mode_opts(o, &g->flags, &g->detect_zeroes, true, errp) < 0) {
        return -EINVAL;
    }
    return bopts_take_str(o, "node-name", &g->node_name, errp) < 0 ? -EINVAL : 0;
}

/* ---------------------------------------------------------------------- */
/* Probing */

typedef struct ProbeRead {
    BdrvChild *child;
    uint8_t *buf;
    int64_t len;
} ProbeRead;

static int64_t coroutine_fn probe_read_co(void *opaque)
{
    ProbeRead *p = opaque;
    IOVector qiov;

    iovector_init_buf(&qiov, p->buf, (size_t)p->len);
    return bdrv_co_preadv(p->child, 0, p->len, &qiov, 0);
}

static const BlockDriver *probe(BlockDriverState *file_bs, const char *filename, Error **errp)
{
    uint8_t buf[PROBE_BYTES] = { 0 };
    ProbeRead p = { .buf = buf };
    int64_t len = bdrv_getlength(file_bs);
    const BlockDriver *drv;
    int64_t ret;

    if (len < 0) {
        error_setg_errno(errp, (int)len, "Could not determine the size of '%s'", filename);
        return NULL;
    }
    p.len = len < PROBE_BYTES ? len : PROBE_BYTES;
    if (p.len > 0) {
        p.child = bdrv_root_attach_child(file_bs, "probe", NULL);
        ret = bdrv_run_co(file_bs->aio_context, probe_read_co, &p);
        bdrv_root_unref_child(p.child);
        if (ret < 0) {
            error_setg_errno(errp, (int)ret, "Could not read image for determining its format");
            return NULL;
        }
    }
    drv = bdrv_probe_format(buf, (int)p.len, filename);
    if (!drv) {
        error_setg(errp, "Could not determine image format of '%s'", filename);
    }
    return drv;
}

/* ---------------------------------------------------------------------- */
/* Children */

static int child_flags(int parent_flags, unsigned role)
{
    int flags = parent_flags & ~(BDRV_O_PROTOCOL | BDRV_O_COPY_ON_READ | BDRV_O_NO_BACKING);

    if (role & BDRV_CHILD_COW) {
        flags &= ~BDRV_O_RDWR; /* backing files are read-only */
    }
    if (role & (BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED)) {
        flags |= BDRV_O_PROTOCOL; /* a filename here names the protocol node */
    }
    return flags;
}

BdrvChild *bdrv_open_child(const char *filename, BlockOpts *options, const char *name,
                           BlockDriverState *parent, unsigned role, bool allow_none,
                           Error **errp)
{
    char prefix[64];
    const char *ref = bopts_get(options, name);
    BlockOpts *child_opts;
    BlockDriverState *child_bs;
    BdrvChild *c;

    snprintf(prefix, sizeof(prefix), "%s.", name);
    child_opts = bopts_extract_prefix(options, prefix);
    if (!child_opts) {
        error_setg(errp, "out of memory");
        return NULL;
    }
    if (ref) {
        if (bopts_count(child_opts) || filename) {
            error_setg(errp, "Cannot reference an existing block device with additional "
                             "options or a new filename ('%s')", name);
            bopts_free(child_opts);
            return NULL;
        }
        child_bs = bdrv_find_node(ref);
        if (!child_bs) {
            error_setg(errp, "Cannot find node-name '%s' for '%s'", ref, name);
            bopts_free(child_opts);
            return NULL;
        }
        if (bdrv_is_ancestor_or_self(child_bs, parent)) {
            error_setg(errp, "Making '%s' a child of '%s' would create a cycle", ref,
                       parent->node_name);
            bopts_free(child_opts);
            return NULL;
        }
        bdrv_ref(child_bs);
        bopts_del(options, name);
        bopts_free(child_opts);
    } else if (!bopts_count(child_opts) && !filename) {
        bopts_free(child_opts);
        if (!allow_none) {
            error_setg(errp, "A block device must be specified for \"%s\"", name);
        }
        return NULL;
    } else {
        child_bs = open_node(filename, child_opts, child_flags(parent->open_flags, role), 0, NULL,
                             errp);
        if (!child_bs) {
            return NULL;
        }
    }
    c = bdrv_attach_child(parent, child_bs, name, role);
    bdrv_unref(child_bs);
    return c;
}

/* ---------------------------------------------------------------------- */
/* Backing files */

static int resolve_backing_name(BlockDriverState *bs, char *out, size_t size, Error **errp)
{
    const char *name = bs->backing_file;
    char dir[4096];
    int n;

    if (!strncmp(name, "json:", 5)) {
        error_setg(errp, "%s: backing file name '%.64s' from the image header is not allowed "
                         "(json: names are never read from images)", bs->filename, name);
        return -EINVAL;
    }
    if ((bs->open_flags & BDRV_O_UNTRUSTED) && (strchr(name, '/') || !strcmp(name, "..") ||
                                                 !strcmp(name, "."))) {
        error_setg(errp, "%s: untrusted image: backing file '%s' is not a sibling of the image",
                   bs->filename, name);
        return -EPERM;
    }
    if (name[0] == '/') {
        n = snprintf(out, size, "%s", name);
    } else {
        snprintf(dir, sizeof(dir), "%s", bs->filename);
        n = snprintf(out, size, "%s/%s", dirname(dir), name);
    }
    if (n < 0 || (size_t)n >= size) {
        error_setg(errp, "%s: backing file name is too long", bs->filename);
        return -ENAMETOOLONG;
    }
    return 0;
}

static bool chain_has(const ChainLink *chain, const struct stat *st)
{
    for (; chain; chain = chain->up) {
        if (chain->dev == st->st_dev && chain->ino == st->st_ino) {
            return true;
        }
    }
    return false;
}

static int open_backing_opts(BlockDriverState *bs, char *ref, BlockOpts **pbopts, int flags,
                             int depth, const ChainLink *chain, Error **errp);

/* True if the backing.* options name the backing image themselves, rather
 * than only tune the one the image header names. */
static bool backing_names_file(const BlockOpts *bopts)
{
    const char *name = bopts_get(bopts, "driver");
    const BlockDriver *drv = name ? bdrv_find_format(name) : NULL;

    return bopts_has(bopts, "file") ||
           bopts_has(bopts, "file.filename") || bopts_has(bopts, "filename") ||
           bopts_has(bopts, "file.driver") || (drv && drv->is_protocol);
}

/* Opens and attaches bs's backing file, if it has one. Consumes bopts. */
static int open_backing(BlockDriverState *bs, char *ref, BlockOpts *bopts, int flags, int depth,
                        const ChainLink *chain, Error **errp)
{
    int ret = open_backing_opts(bs, ref, &bopts, flags, depth, chain, errp);

    bopts_free(bopts);
    return ret;
}

static int open_backing_opts(BlockDriverState *bs, char *ref, BlockOpts **pbopts, int flags,
                             int depth, const ChainLink *chain, Error **errp)
{
    BlockOpts *bopts = *pbopts;
    size_t n_opts = bopts ? bopts_count(bopts) : 0;
    ChainLink link = { .up = chain };
    BlockDriverState *backing_bs;
    struct stat st;
    int ret;

    if (ref && (!ref[0] || !strcmp(ref, "null"))) {
        return 0; /* backing explicitly disabled */
    }
    if ((flags & BDRV_O_NO_BACKING) || (!ref && !n_opts && !bs->backing_file[0])) {
        return 0;
    }
    if (depth + 1 > BDRV_MAX_BACKING_DEPTH) {
        error_setg(errp, "%s: backing chain is deeper than %d images", bs->filename,
                   BDRV_MAX_BACKING_DEPTH);
        return -EMLINK;
    }
    if (ref) {
        backing_bs = bdrv_find_node(ref);
        if (!backing_bs) {
            error_setg(errp, "Cannot find node-name '%s' for 'backing'", ref);
            return -ENOENT;
        }
        if (bdrv_is_ancestor_or_self(backing_bs, bs)) {
            error_setg(errp, "Making '%s' the backing file of '%s' would create a cycle", ref,
                       bs->node_name);
            return -ELOOP;
        }
        bdrv_ref(backing_bs);
    } else {
        if (!bopts) {
            bopts = *pbopts = bopts_new();
        }
        if (!backing_names_file(bopts) && !bs->backing_file[0]) {
            error_setg(errp, "%s: options for 'backing' are given (%s), but the image has no "
                             "backing file and they do not name one", bs->filename,
                       bopts_key_at(bopts, 0));
            return -EINVAL;
        }
        if (!backing_names_file(bopts)) {
            /* The file the image names, with the options given for it
             * (backing.cache.direct=..., backing.file.aio=...). */
            ret = resolve_backing_name(bs, bs->auto_backing_file, sizeof(bs->auto_backing_file),
                                       errp);
            if (ret < 0) {
                return ret;
            }
            if (bs->backing_format[0] && !bopts_has(bopts, "driver")) {
                bopts_set(bopts, "driver", bs->backing_format);
            }
            if (!bopts_has(bopts, "file.driver")) {
                bopts_set(bopts, "file.driver", bdrv_default_protocol(bs->auto_backing_file));
            }
            bopts_set(bopts, "file.filename", bs->auto_backing_file);
            if (stat(bs->auto_backing_file, &st) == 0) {
                link.dev = st.st_dev;
                link.ino = st.st_ino;
                if (chain_has(chain, &st)) {
                    error_setg(errp, "%s: backing chain loop: '%s' is already in the chain",
                               bs->filename, bs->auto_backing_file);
                    return -ELOOP;
                }
            }
        }
        *pbopts = NULL; /* open_node consumes it */
        backing_bs = open_node(NULL, bopts, child_flags(flags, BDRV_CHILD_COW) & ~BDRV_O_PROTOCOL,
                               depth + 1, &link, errp);
        if (!backing_bs) {
            /* Once, at the top: inner messages already name their file. */
            if (depth == 0) {
                error_prepend(errp, "Could not open backing file: ");
            }
            return -EINVAL;
        }
    }
    bdrv_attach_child(bs, backing_bs, "backing", BDRV_CHILD_COW);
    bdrv_unref(backing_bs);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Nodes */

/*
 * Sets *pdrv to the driver named by the options or by the filename's
 * protocol, or to NULL when a format must be probed over the file child.
 */
static int choose_driver(const char *filename, BlockOpts *options, int flags,
                         const BlockDriver **pdrv, Error **errp)
{
    char *name = NULL;

    *pdrv = NULL;
    if (bopts_take_str(options, "driver", &name, errp) < 0) {
        return -EINVAL;
    }
    if (name) {
        *pdrv = bdrv_find_format(name);
        if (!*pdrv) {
            error_setg(errp, "Unknown driver '%s'", name);
        }
        free(name);
        return *pdrv ? 0 : -EINVAL;
    }
    if (filename) {
        *pdrv = bdrv_find_protocol_prefix(filename);
        if (!*pdrv && (flags & BDRV_O_PROTOCOL)) {
            *pdrv = bdrv_find_format(bdrv_default_protocol(filename));
            if (!*pdrv) {
                error_setg(errp, "No protocol driver for '%s'", filename);
                return -EINVAL;
            }
        }
        /* A protocol URL opened as an image: probe a format over it. */
        if (*pdrv && !(flags & BDRV_O_PROTOCOL)) {
            *pdrv = NULL;
        }
    } else if ((flags & BDRV_O_PROTOCOL) && bopts_get(options, "filename")) {
        /* file.filename=x without file.driver: the path's default protocol. */
        *pdrv = bdrv_find_format(bdrv_default_protocol(bopts_get(options, "filename")));
    }
    return 0;
}

/* The protocol node gets the filename as its "filename" option. */
static int set_protocol_filename(const BlockDriver *drv, const char *filename,
                                 BlockOpts *options, Error **errp)
{
    size_t plen = drv->protocol_name ? strlen(drv->protocol_name) : 0;

    if (!filename) {
        return 0;
    }
    if (bopts_has(options, "filename")) {
        error_setg(errp, "'filename' given both as a name and as an option ('%s')", filename);
        return -EINVAL;
    }
    /* "file:x.img" names the file "x.img"; "null-co://" is kept whole. */
    if (!strcmp(drv->format_name, "file") && !strncmp(filename, "file:", 5)) {
        filename += 5;
    } else if (plen && strncmp(filename, drv->protocol_name, plen)) {
        plen = 0;
    }
    return bopts_set(options, "filename", filename) < 0 ? -ENOMEM : 0;
}

static BlockDriverState *open_node(const char *filename, BlockOpts *options, int flags,
                                   int depth, const ChainLink *chain, Error **errp)
{
    GenericOpts g = { .flags = flags };
    const BlockDriver *drv;
    BlockDriverState *bs = NULL;
    BlockDriverState *file_bs = NULL;
    BlockOpts *backing_opts = NULL;
    char *backing_ref = NULL;
    bool probed = false;
    int ret;

    if (!options) {
        options = bopts_new();
    }
    ret = filename ? bopts_parse_filename_json(options, filename, errp) : 0;
    if (ret < 0) {
        goto fail;
    }
    if (ret == 1) {
        filename = NULL;
    }
    if (take_generic_opts(options, &g, errp) < 0) {
        goto fail;
    }
    if (choose_driver(filename, options, g.flags, &drv, errp) < 0) {
        goto fail;
    }
    if (drv && drv->is_protocol) {
        if (set_protocol_filename(drv, filename, options, errp) < 0) {
            goto fail;
        }
    } else if (!bopts_has(options, "file")) {
        /* Open the file child first: probing and the format need it. */
        BlockOpts *file_opts = bopts_extract_prefix(options, "file.");

        if (!filename && !bopts_count(file_opts)) {
            bopts_free(file_opts);
            error_setg(errp, "%s: a filename or 'file' options are required",
                       drv ? drv->format_name : "open");
            goto fail;
        }
        file_bs = open_node(filename, file_opts, child_flags(g.flags, BDRV_CHILD_PRIMARY), 0,
                            NULL, errp);
        if (!file_bs) {
            goto fail;
        }
        if (!drv) {
            drv = probe(file_bs, file_bs->filename, errp);
            probed = true;
            if (!drv) {
                goto fail;
            }
        }
        bopts_set(options, "file", file_bs->node_name);
    } else if (!drv) {
        error_setg(errp, "The 'driver' option is required with a 'file' reference");
        goto fail;
    }
    if (!drv->is_protocol) {
        backing_opts = bopts_extract_prefix(options, "backing.");
        if (bopts_take_str(options, "backing", &backing_ref, errp) < 0) {
            goto fail;
        }
    }

    bs = bdrv_new_node(drv, bdrv_default_aio_context());
    if (!bs) {
        error_setg(errp, "out of memory");
        goto fail;
    }
    if (g.node_name && bdrv_set_node_name(bs, g.node_name, errp) < 0) {
        goto fail_free_node;
    }
    bs->open_flags = g.flags;
    bs->read_only = !(g.flags & BDRV_O_RDWR);
    bs->detect_zeroes = g.detect_zeroes;
    bs->probed = probed;
    snprintf(bs->filename, sizeof(bs->filename), "%s",
             file_bs ? file_bs->filename : (filename ? filename : ""));

    ret = drv->bdrv_open(bs, options, g.flags, errp);
    if (ret < 0) {
        error_prepend(errp, "%s: ", drv->format_name);
        goto fail_close_children;
    }
    bdrv_unref(file_bs);
    file_bs = NULL;
    if (bopts_check_empty(options, bs->filename[0] ? bs->filename : drv->format_name, errp) <
            0 ||
        bdrv_refresh_limits(bs, errp) < 0) {
        goto fail_unref;
    }
    ret = open_backing(bs, backing_ref, backing_opts, g.flags, depth, chain, errp);
    backing_opts = NULL; /* consumed */
    if (ret < 0 || (bs->backing && bdrv_refresh_limits(bs, errp) < 0)) {
        goto fail_unref;
    }
    goto out;

fail_unref:
    bdrv_unref(bs);
    bs = NULL;
    goto out;
fail_close_children:
    while (bs->children) {
        bdrv_unref_child(bs, bs->children);
    }
fail_free_node:
    bdrv_free_node(bs);
    bs = NULL;
fail:
    bdrv_unref(file_bs);
    bs = NULL;
out:
    bopts_free(backing_opts);
    free(backing_ref);
    free(g.node_name);
    bopts_free(options);
    return bs;
}

/*
 * snapshot=on (BDRV_O_SNAPSHOT, qemu-io -s): the image opens read-only under
 * a temporary qcow2 overlay in $TMPDIR (else /var/tmp) that takes every
 * write. The overlay file is unlinked once open, so it disappears with the
 * node (or the process) and the image itself is never written.
 */
static BlockDriverState *open_temp_snapshot(const char *filename, BlockOpts *options,
                                            int flags, Error **errp)
{
    const char *dir = getenv("TMPDIR");
    BlockDriverState *base, *bs = NULL;
    BlockOpts *o = NULL;
    char tmp[4096], size[32];
    int64_t len;
    int fd;

    base = open_node(filename, options, flags & ~BDRV_O_RDWR, 0, NULL, errp);
    if (!base) {
        return NULL;
    }
    len = bdrv_getlength(base);
    if (len < 0) {
        error_setg_errno(errp, (int)-len, "%s: could not get the size for a temporary snapshot",
                         base->filename);
        goto out;
    }
    if (snprintf(tmp, sizeof(tmp), "%s/coblk-snapshot.XXXXXX",
                 dir && *dir ? dir : "/var/tmp") >= (int)sizeof(tmp)) {
        error_setg(errp, "TMPDIR is too long for a temporary snapshot");
        goto out;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Could not create a temporary snapshot file in '%s'",
                         dir && *dir ? dir : "/var/tmp");
        goto out;
    }
    close(fd);
    snprintf(size, sizeof(size), "%lld", (long long)len);
    o = bopts_new();
    if (!o || bopts_set(o, "size", size) < 0) {
        error_setg(errp, "out of memory");
        bopts_free(o);
        goto out_unlink;
    }
    if (bdrv_create("qcow2", tmp, o, errp) < 0) {
        goto out_unlink;
    }
    o = bopts_new();
    if (!o || bopts_set(o, "driver", "qcow2") < 0 || bopts_set(o, "file.driver", "file") < 0 ||
        bopts_set(o, "file.filename", tmp) < 0 || bopts_set(o, "backing", base->node_name) < 0) {
        error_setg(errp, "out of memory");
        bopts_free(o);
        goto out_unlink;
    }
    bs = open_node(NULL, o, flags & ~BDRV_O_UNTRUSTED, 0, NULL, errp);
out_unlink:
    unlink(tmp);
out:
    bdrv_unref(base); /* the overlay holds its own reference */
    return bs;
}

BlockDriverState *bdrv_open(const char *filename, BlockOpts *options, int flags, Error **errp)
{
    bool snapshot = false;

    if (options && bopts_take_bool(options, "snapshot", false, &snapshot, errp) < 0) {
        bopts_free(options);
        return NULL;
    }
    if (snapshot || (flags & BDRV_O_SNAPSHOT)) {
        return open_temp_snapshot(filename, options, flags & ~BDRV_O_SNAPSHOT, errp);
    }
    return open_node(filename, options, flags, 0, NULL, errp);
}
