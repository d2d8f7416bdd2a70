/*
 * Renaming a vmdk image (bdrv_rename): the descriptor and the extent files
 * named after it ("disk-s001.vmdk", "disk-flat.vmdk" for "disk.vmdk") get
 * the new name, and the descriptor's extent lines are rewritten.
 *
 * Crash safety: the extents are first hard-linked under their new names,
 * then the descriptor is renamed, then rewritten (through its open file) to
 * name the new links, and only then are the old extent names removed. A
 * crash at any point leaves an image whose descriptor names files that
 * exist (at worst with stale extra links to remove by hand). The image must
 * be open read-write (the descriptor changes).
 *
 * Only extents that are siblings of the descriptor (no '/' in their name)
 * are handled; others make the rename fail with -ENOTSUP.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "block/image-meta.h"
#include "drivers/format/vmdk/vmdk-int.h"

#define PATH_LEN 4096

typedef struct RenamePlan {
    int n;
    char **new_names;   /* [n]: the extent's new name in the descriptor, NULL: unchanged */
    char **old_paths;   /* [n]: its file now, NULL if unchanged */
    char **new_paths;   /* [n]: its file after the rename */
    int linked;         /* new_paths[0..linked) were created */
} RenamePlan;

/* "dir/disk.vmdk" -> "disk"; the stem extents named after the image start with. */
static void stem_of(const char *path, char *out, size_t size)
{
    const char *base = strrchr(path, '/');
    size_t n;

    base = base ? base + 1 : path;
    n = strlen(base);
    if (n > 5 && !strcmp(base + n - 5, ".vmdk")) {
        n -= 5;
    }
    snprintf(out, size, "%.*s", (int)n, base);
}

static void dir_of(const char *path, char *out, size_t size)
{
    char tmp[PATH_LEN];

    snprintf(tmp, sizeof(tmp), "%s", path);
    snprintf(out, size, "%s", dirname(tmp));
}

static void plan_free(RenamePlan *p)
{
    for (int i = 0; i < p->n; i++) {
        free(p->new_names[i]);
        free(p->old_paths[i]);
        free(p->new_paths[i]);
    }
    free(p->new_names);
    free(p->old_paths);
    free(p->new_paths);
}

/* Works out each extent's new name and path. */
static int plan_extents(BlockDriverState *bs, const char *new_name, RenamePlan *p,
                        Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    char old_stem[PATH_LEN], new_stem[PATH_LEN], new_dir[PATH_LEN], buf[PATH_LEN];
    char old_real[PATH_MAX], new_real[PATH_MAX];
    bool same_dir;
    size_t sl;

    stem_of(bs->file->bs->filename, old_stem, sizeof(old_stem));
    stem_of(new_name, new_stem, sizeof(new_stem));
    dir_of(new_name, new_dir, sizeof(new_dir));
    sl = strlen(old_stem);
    dir_of(bs->file->bs->filename, buf, sizeof(buf));
    same_dir = realpath(buf, old_real) && realpath(new_dir, new_real) &&
               strcmp(old_real, new_real) == 0;
    if (!same_dir && !realpath(new_dir, new_real)) {
        int ret = -errno;

        error_setg_errno(errp, ret, "vmdk: cannot rename to '%s'", new_name);
        return ret;
    }
    p->n = s->n_extents;
    p->new_names = calloc((size_t)p->n, sizeof(char *));
    p->old_paths = calloc((size_t)p->n, sizeof(char *));
    p->new_paths = calloc((size_t)p->n, sizeof(char *));
    if (!p->new_names || !p->old_paths || !p->new_paths) {
        return -ENOMEM;
    }
    for (int i = 0; i < p->n; i++) {
        const VmdkExtent *e = s->extents[i];
        const char *name = s->desc.ext[i].filename;

        if (!e->child || !name || e->child == bs->file) {
            continue;   /* ZERO, or the descriptor file itself */
        }
        if (strchr(name, '/') || strchr(new_stem, '"') || strchr(new_stem, '\n')) {
            error_setg(errp, "vmdk: %s: cannot rename: extent '%s' is not a sibling file "
                       "of the descriptor", bs->filename, name);
            return -ENOTSUP;
        }
        if (!strncmp(name, old_stem, sl)) {
            snprintf(buf, sizeof(buf), "%s%s", new_stem, name + sl);
        } else if (same_dir) {
            continue;   /* not named after the image and staying where it is */
        } else {
            snprintf(buf, sizeof(buf), "%s", name);
        }
        p->new_names[i] = strdup(buf);
        p->old_paths[i] = strdup(e->child->bs->filename);
        if (asprintf(&p->new_paths[i], "%s/%s", new_dir, buf) < 0) {
            p->new_paths[i] = NULL;
        }
        if (!p->new_names[i] || !p->old_paths[i] || !p->new_paths[i]) {
            return -ENOMEM;
        }
    }
    return 0;
}

static void unlink_links(RenamePlan *p)
{
    for (int i = 0; i < p->linked; i++) {
        if (p->new_paths[i] && strcmp(p->new_paths[i], p->old_paths[i]) != 0) {
            unlink(p->new_paths[i]);
        }
    }
}

/* Step 1: the extents under their new names too. */
static int link_extents(BlockDriverState *bs, RenamePlan *p, Error **errp)
{
    for (; p->linked < p->n; p->linked++) {
        int i = p->linked;

        if (!p->new_paths[i] || !strcmp(p->new_paths[i], p->old_paths[i])) {
            continue;
        }
        if (link(p->old_paths[i], p->new_paths[i]) < 0) {
            int ret = -errno;

            error_setg_errno(errp, ret, "vmdk: could not link extent '%s' as '%s'",
                             p->old_paths[i], p->new_paths[i]);
            unlink_links(p);
            return ret;
        }
    }
    return 0;
}

/* Takes the new names into the node's state once the files moved. */
static void commit_names(BlockDriverState *bs, RenamePlan *p, char *text)
{
    BDRVVmdkState *s = bs->opaque;

    for (int i = 0; i < p->n; i++) {
        if (p->new_paths[i]) {
            if (strcmp(p->new_paths[i], p->old_paths[i]) != 0) {
                unlink(p->old_paths[i]);
            }
            coblk_set_node_filename(s->extents[i]->child->bs, p->old_paths[i],
                                    p->new_paths[i]);
        }
        if (!p->new_names[i]) {
            continue;
        }
        free(s->desc.ext[i].filename);
        s->desc.ext[i].filename = p->new_names[i];
        free(s->extents[i]->filename);
        s->extents[i]->filename = strdup(p->new_names[i]);
        p->new_names[i] = NULL;
    }
    free(s->desc_text);
    s->desc_text = text;
}

int coroutine_fn vmdk_co_rename(BlockDriverState *bs, const char *new_name, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    RenamePlan p = { 0 };
    char old_desc[PATH_LEN];
    char *text = NULL;
    int ret;

    if (bs->read_only) {
        error_setg(errp, "vmdk: %s: renaming rewrites the descriptor: open it read-write",
                   bs->filename);
        return -EACCES;
    }
    if (strcmp(bs->file->bs->drv->format_name, "file") != 0) {
        error_setg(errp, "vmdk: %s: cannot rename an image that is not a local file",
                   bs->filename);
        return -ENOTSUP;
    }
    snprintf(old_desc, sizeof(old_desc), "%s", bs->file->bs->filename);
    ret = plan_extents(bs, new_name, &p, errp);
    if (ret < 0) {
        goto out;
    }
    /* The embedded descriptor of a monolithic sparse file names the file itself. */
    if (s->desc_embedded && s->desc.n_ext == 1 && s->desc.ext[0].filename) {
        char stem[PATH_LEN];

        stem_of(new_name, stem, sizeof(stem));
        p.new_names[0] = strchr(stem, '"') ? NULL : strdup(strrchr(new_name, '/') ?
                                                            strrchr(new_name, '/') + 1 :
                                                            new_name);
    }
    if (s->desc_text) {
        text = vmdk_desc_rename_extents(s->desc_text, p.new_names, p.n);
        if (!text) {
            ret = -ENOMEM;
            goto out;
        }
    }
    ret = link_extents(bs, &p, errp);
    if (ret < 0) {
        goto out;
    }
    ret = coblk_rename_noreplace(old_desc, new_name);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not rename '%s' to '%s'", old_desc, new_name);
        unlink_links(&p);
        goto out;
    }
    /* The descriptor (now under its new name) names the new extent files. */
    co_mutex_lock(&s->lock);
    vmdk_wait_allocs(s);
    ret = text ? vmdk_put_desc(bs, s->desc_embedded ? NULL : new_name, text) : 0;
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "vmdk: could not rewrite the descriptor of '%s'",
                         new_name);
        if (vmdk_put_desc(bs, s->desc_embedded ? NULL : new_name, s->desc_text) < 0 ||
            coblk_rename_noreplace(new_name, old_desc) < 0) {
            coblk_warn("vmdk: '%s' may name extents under both old and new names; "
                       "check it by hand", new_name);
            goto out;
        }
        unlink_links(&p);
        goto out;
    }
    coblk_set_node_filename(bs->file->bs, old_desc, new_name);
    coblk_set_node_filename(bs, old_desc, new_name);
    if (text) {
        commit_names(bs, &p, text);
        text = NULL;
    }
    coblk_sync_dir_of(new_name);
    coblk_sync_dir_of(old_desc);
    ret = 0;
out:
    free(text);
    plan_free(&p);
    return ret;
}
