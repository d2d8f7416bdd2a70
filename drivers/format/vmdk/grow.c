/*
 * vmdk: growing a twoGbMaxExtentSparse / twoGbMaxExtentFlat image past what
 * its last extent holds (2 GiB) by adding extent files.
 *
 * The new files are named as qemu-img and VMware name them: the descriptor's
 * name without ".vmdk", then "-s" (sparse) or "-f" (flat) and the extent's
 * number counted from 1 in at least three digits: "disk-s002.vmdk". They are
 * siblings of the descriptor, of the type of the last extent (sparse ones
 * with 64 KiB grains and the last extent's zeroed-grain flag), and at most
 * 2 GiB each.
 *
 * Order (crash safety; the descriptor decides what the image is):
 * 1. the last extent grows to 2 GiB: a sparse one gets its new grain tables
 *    and directory entries and then its header's capacity, a flat one its
 *    file's size, all flushed; the descriptor still gives its old size,
 *    which a larger extent serves unchanged;
 * 2. each new extent file is created, written and flushed, then their
 *    directory is synced;
 * 3. the descriptor naming them (and the last extent's new size and
 *    ddb.geometry.cylinders) is written and flushed (atomically: see
 *    vmdk_write_desc).
 * A crash before 3 leaves the old image and files it does not name. The
 * next grow replaces such a leftover only if it holds nothing but what the
 * grow itself would write, and refuses any other file of a new extent's name
 * (never overwritten): see stray.c.
 * Refused with -ENOTSUP: more than VMDK_MAX_EXTENTS extents in all.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "block/bytes.h"
#include "block/opts-int.h"
#include "block/image-meta.h"
#include "drivers/format/vmdk/vmdk-int.h"

#define TWO_GB_SECTORS 4194304ULL
#define PATH_LEN 4096

typedef struct GrowPlan {
    int first;          /* index of the first new extent */
    int n;              /* new extents */
    bool sparse;
    char **names;       /* [n] as the descriptor names them */
    char **paths;       /* [n] */
    uint64_t *sectors;  /* [n] */
    bool *taken;        /* [n] leftovers of an interrupted grow, replaced already */
    int created;        /* paths[0..created) exist */
} GrowPlan;

static void plan_free(GrowPlan *p, bool remove_files)
{
    for (int i = 0; i < p->n; i++) {
        if (remove_files && (i < p->created || (p->taken && p->taken[i]))) {
            unlink(p->paths[i]);
        }
        free(p->names ? p->names[i] : NULL);
        free(p->paths ? p->paths[i] : NULL);
    }
    free(p->names);
    free(p->paths);
    free(p->sectors);
    free(p->taken);
}

/*
 * The new extents' names, paths and sizes for size bytes in all. A file of a
 * new name that is a leftover of an interrupted grow is replaced by the new
 * extent file (p->taken), any other is refused (see stray.c).
 */
static int coroutine_fn plan(BlockDriverState *bs, uint64_t size, bool zeroed, GrowPlan *p,
                             Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    const char *desc = bs->file->bs->filename, *slash = strrchr(desc, '/');
    const char *base = slash ? slash + 1 : desc;
    uint64_t left = size / VMDK_SECTOR - (s->extents[s->n_extents - 1]->start / VMDK_SECTOR +
                                          TWO_GB_SECTORS);
    size_t stem = strlen(base);
    int ret;

    if (stem > 5 && !strcmp(base + stem - 5, ".vmdk")) {
        stem -= 5;
    }
    p->first = s->n_extents;
    p->n = (int)div_round_up_u64(left, TWO_GB_SECTORS);
    p->sparse = s->extents[s->n_extents - 1]->type == VMDK_EXT_SPARSE;
    if ((uint64_t)s->n_extents + (uint64_t)p->n > VMDK_MAX_EXTENTS) {
        error_setg(errp, "vmdk: cannot grow '%s' to %" PRIu64 " bytes: it would need %" PRIu64
                   " extents, more than %d", bs->filename, size,
                   (uint64_t)s->n_extents + (uint64_t)p->n, VMDK_MAX_EXTENTS);
        return -ENOTSUP;
    }
    p->names = calloc((size_t)p->n, sizeof(char *));
    p->paths = calloc((size_t)p->n, sizeof(char *));
    p->sectors = calloc((size_t)p->n, sizeof(uint64_t));
    p->taken = calloc((size_t)p->n, sizeof(bool));
    if (!p->names || !p->paths || !p->sectors || !p->taken) {
        return -ENOMEM;
    }
    for (int i = 0; i < p->n; i++, left -= p->sectors[i - 1]) {
        p->sectors[i] = left < TWO_GB_SECTORS ? left : TWO_GB_SECTORS;
        if (asprintf(&p->names[i], "%.*s-%c%03d.vmdk", (int)stem, base, p->sparse ? 's' : 'f',
                     p->first + i + 1) < 0) {
            p->names[i] = NULL;
            return -ENOMEM;
        }
        if (asprintf(&p->paths[i], "%.*s%s", slash ? (int)(base - desc) : 0, desc,
                     p->names[i]) < 0) {
            p->paths[i] = NULL;
            return -ENOMEM;
        }
        if (strlen(p->paths[i]) >= PATH_LEN || strchr(p->names[i], '"')) {
            error_setg(errp, "vmdk: cannot grow '%s': unusable extent file name '%s'",
                       bs->filename, p->names[i]);
            return -ENOTSUP;
        }
        ret = vmdk_take_stray_extent(bs, p->paths[i], p->names[i], p->sectors[i], p->sparse,
                                     zeroed, errp);
        if (ret < 0) {
            return ret;
        }
        p->taken[i] = ret == 1;
    }
    return 0;
}

/* Step 1: the last extent takes 2 GiB (its descriptor line changes in step 3). */
static int coroutine_fn fill_last(VmdkExtent *e, Error **errp)
{
    uint64_t len = TWO_GB_SECTORS * VMDK_SECTOR, end = e->flat_offset + len;
    int64_t flen;
    int ret;

    if (e->type == VMDK_EXT_SPARSE) {
        return vmdk_grow_sparse_extent(e, len, errp);
    }
    flen = bdrv_co_getlength(e->child->bs);
    if (flen < 0) {
        return (int)flen;
    }
    ret = (uint64_t)flen < end ? bdrv_co_truncate(e->child, (int64_t)end, true,
                                                  PREALLOC_MODE_OFF, 0, NULL) : 0;
    return ret ? ret : bdrv_co_flush(e->child->bs);
}

/* Step 2: the new files, flushed, and their directory synced. */
static int coroutine_fn create_files(GrowPlan *p, bool zeroed, Error **errp)
{
    int ret;

    for (; p->created < p->n; p->created++) {
        int i = p->created;

        if (p->taken[i]) {
            continue;
        }
        ret = vmdk_create_extent_file(p->paths[i], p->sectors[i], p->sparse, zeroed, errp);
        if (ret < 0) {
            p->created++; /* it may exist in part: removed on failure */
            return ret;
        }
    }
    ret = coblk_sync_dir_of(p->paths[0]);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vmdk: could not sync the directory of '%s'",
                         p->paths[0]);
    }
    return ret;
}

/* The descriptor after the resize: the last extent at 2 GiB, then the new ones. */
static char *grown_desc(BDRVVmdkState *s, uint64_t size, const GrowPlan *p)
{
    char *text = vmdk_resized_desc(s, size, s->n_extents - 1, TWO_GB_SECTORS), *out;
    StrBuf sb;
    const char *lines;

    if (!text) {
        return NULL;
    }
    sb_init(&sb);
    for (int i = 0; i < p->n; i++) {
        char line[PATH_LEN + 64];

        snprintf(line, sizeof(line), "RW %" PRIu64 " %s \"%s\"%s\n", p->sectors[i],
                 p->sparse ? "SPARSE" : "FLAT", p->names[i], p->sparse ? "" : " 0");
        sb_puts(&sb, line);
    }
    lines = sb_str(&sb);
    out = lines ? vmdk_desc_insert_extents(text, s->n_extents - 1, lines) : NULL;
    sb_free(&sb);
    free(text);
    return out;
}

/* Opens new extent i of the plan (after the descriptor names it). */
static VmdkExtent *open_new(BlockDriverState *bs, const GrowPlan *p, int i, uint64_t start,
                            Error **errp)
{
    BlockOpts *o = bopts_new();
    VmdkExtent *e = calloc(1, sizeof(*e));
    char key[64], name[32];
    int ret;

    if (!e || !o) {
        free(e);
        bopts_free(o);
        return NULL;
    }
    snprintf(name, sizeof(name), "extents.%d", p->first + i);
    snprintf(key, sizeof(key), "%s.driver", name);
    bopts_set(o, key, "file");
    snprintf(key, sizeof(key), "%s.filename", name);
    bopts_set(o, key, p->paths[i]);
    e->type = p->sparse ? VMDK_EXT_SPARSE : VMDK_EXT_FLAT;
    snprintf(e->type_name, sizeof(e->type_name), "%s", p->sparse ? "SPARSE" : "FLAT");
    e->start = start;
    e->length = p->sectors[i] * VMDK_SECTOR;
    e->filename = strdup(p->names[i]);
    e->child = bdrv_open_child(NULL, o, name, bs, BDRV_CHILD_DATA |
                               (p->sparse ? BDRV_CHILD_METADATA : 0), false, errp);
    bopts_free(o);
    ret = !e->filename || !e->child ? -EIO : p->sparse ? vmdk_sparse_open(bs, e, errp)
                                                       : vmdk_flat_check(bs, e, errp);
    if (ret < 0) {
        if (e->child) {
            bdrv_unref_child(bs, e->child);
        }
        free(e->gd);
        free(e->rgd);
        free(e->filename);
        free(e);
        return NULL;
    }
    return e;
}

/* Records the new descriptor extents in s->desc (for rename and later resizes). */
static int add_desc_extents(BDRVVmdkState *s, const GrowPlan *p)
{
    VmdkDescExtent *x = realloc(s->desc.ext, sizeof(*x) * (size_t)(s->desc.n_ext + p->n));

    if (!x) {
        return -ENOMEM;
    }
    s->desc.ext = x;
    s->desc.ext[s->desc.n_ext - 1].sectors = TWO_GB_SECTORS;
    for (int i = 0; i < p->n; i++) {
        x = &s->desc.ext[s->desc.n_ext++];
        memset(x, 0, sizeof(*x));
        x->access = VMDK_ACCESS_RW;
        x->sectors = p->sectors[i];
        x->type = p->sparse ? VMDK_EXT_SPARSE : VMDK_EXT_FLAT;
        snprintf(x->type_name, sizeof(x->type_name), "%s", p->sparse ? "SPARSE" : "FLAT");
        x->filename = strdup(p->names[i]);
        if (!x->filename) {
            return -ENOMEM;
        }
    }
    return 0;
}

/* Step 4 (in memory): the last extent's new length, then the new extents. */
static int coroutine_fn take_new(BlockDriverState *bs, const GrowPlan *p, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *last = s->extents[s->n_extents - 1];
    int ret = add_desc_extents(s, p);

    if (ret < 0) {
        return ret;
    }
    last->length = TWO_GB_SECTORS * VMDK_SECTOR;
    s->size = last->start + last->length;
    for (int i = 0; i < p->n; i++) {
        VmdkExtent *e = open_new(bs, p, i, s->size, errp);

        if (!e || !vmdk_extent_append(s, e)) {
            return -EIO;
        }
        s->size += e->length;
    }
    return 0;
}

int coroutine_fn vmdk_grow_extents(BlockDriverState *bs, uint64_t size, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *last = s->extents[s->n_extents - 1];
    GrowPlan p = { 0 };
    Error *err = NULL;
    char *text = NULL;
    bool zeroed = (last->flags & VMDK4_FLAG_ZERO_GRAIN) != 0, files_done;
    int ret = plan(bs, size, zeroed, &p, &err);

    if (ret == 0) {
        text = grown_desc(s, size, &p);
        ret = text ? 0 : -ENOMEM;
    }
    ret = ret ? ret : fill_last(last, &err);
    ret = ret ? ret : create_files(&p, zeroed, &err);
    files_done = ret == 0;
    ret = ret ? ret : vmdk_write_desc(bs, text);
    if (ret < 0) {
        /*
         * Once the descriptor write began, it may have replaced the old one
         * (a failed folder sync after the rename): the new files stay, as
         * leftovers the next grow takes over (stray.c) if it did not.
         */
        plan_free(&p, !files_done);
        free(text);
        if (!err) {
            error_setg_errno(&err, ret, "vmdk: could not grow '%s'", bs->filename);
        }
        error_propagate(errp, err);
        return ret;
    }
    free(s->desc_text);
    s->desc_text = text;
    ret = take_new(bs, &p, &err);
    if (ret < 0) {
        error_prepend(&err, "vmdk: '%s' grew on disk but its new extents could not be "
                      "opened (reopen the image): ", bs->filename);
        if (!err) {
            error_setg_errno(&err, ret, "vmdk: '%s' grew on disk but its new extents could "
                             "not be opened (reopen the image)", bs->filename);
        }
        error_propagate(errp, err);
    }
    plan_free(&p, false);
    return ret;
}
