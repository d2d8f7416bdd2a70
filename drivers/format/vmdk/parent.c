/*
 * vmdk: setting the parent (backing) file name: the descriptor's
 * parentFileNameHint line, and parentCID.
 *
 * parentCID must equal the parent's CID for VMware to accept the link, so a
 * new parent that opens as a vmdk (its name resolved against the image's
 * folder) gives its CID; a parent that cannot be opened (qemu-img rebase -u
 * allows naming one that does not exist yet) keeps the old parentCID, with a
 * warning. Removing the parent drops the hint line and sets parentCID to
 * ffffffff ("no parent"): unallocated grains then read zeroes.
 *
 * Every other descriptor line is kept as it is. The descriptor is rewritten
 * in place (embedded area or descriptor file) as the CID update on the
 * first write does: a descriptor that grows past the embedded area's
 * capacity is refused. Parents of another format than vmdk are refused.
 */
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/vmdk/vmdk-int.h"

#define VMDK_NO_PARENT 0xffffffffU

/* True if the line at p (up to its newline) sets key ("key=" or "key =" after blanks). */
static bool line_is_key(const char *p, const char *key)
{
    size_t n = strlen(key);

    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (strncmp(p, key, n) != 0) {
        return false;
    }
    p += n;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    return *p == '=';
}

/*
 * The descriptor text with parentCID=cid and parentFileNameHint=hint (the
 * line dropped when hint is NULL; added after parentCID, or after CID, when
 * missing). Returns malloc'd text or NULL (out of memory).
 */
static char *desc_set_parent(const char *text, const char *hint, uint32_t cid)
{
    /* A rewritten line is at most twice its old length, plus one added hint line. */
    size_t cap = 2 * strlen(text) + (hint ? strlen(hint) : 0) + 128;
    char *out = malloc(cap), *o = out;
    bool have_pcid = false, have_hint = false, hint_done = false;
    const char *p;

    if (!out) {
        return NULL;
    }
    p = text;
    while (p) {
        have_pcid |= line_is_key(p, "parentCID");
        have_hint |= line_is_key(p, "parentFileNameHint");
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    for (p = text; *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p + 1) : strlen(p);
        bool pcid = line_is_key(p, "parentCID"), cidl = line_is_key(p, "CID");

        if (pcid) {
            o += sprintf(o, "parentCID=%08x\n", cid);
        } else if (line_is_key(p, "parentFileNameHint")) {
            if (hint && !hint_done) {
                o += sprintf(o, "parentFileNameHint=\"%s\"\n", hint);
            }
            hint_done = true;
        } else {
            memcpy(o, p, len);
            o += len;
            if (cidl && !have_pcid) {
                o += sprintf(o, "%sparentCID=%08x\n", eol ? "" : "\n", cid);
            }
        }
        if ((pcid || (cidl && !have_pcid)) && hint && !have_hint && !hint_done) {
            o += sprintf(o, "parentFileNameHint=\"%s\"\n", hint);
            hint_done = true;
        }
        p += len;
    }
    *o = '\0';
    return out;
}

/* The new parent's CID, or the old parentCID (with a warning) if it does not open. */
static uint32_t parent_cid_of(BlockDriverState *bs, const char *hint)
{
    BDRVVmdkState *s = bs->opaque;
    BlockOpts *o = bopts_new();
    char path[8192], dir[4096];
    BlockDriverState *pbs;
    Error *err = NULL;
    uint32_t cid;

    snprintf(dir, sizeof(dir), "%s", bs->filename);
    if (hint[0] == '/') {
        snprintf(path, sizeof(path), "%s", hint);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dirname(dir), hint);
    }
    bopts_set(o, "driver", "vmdk");
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", path);
    pbs = bdrv_open(NULL, o, BDRV_O_NO_BACKING, &err);
    if (!pbs) {
        coblk_warn("vmdk: '%s': parentCID %08x kept: cannot open the new parent: %s",
                   bs->filename, s->desc.parent_cid, error_get_pretty(err));
        error_free(err);
        return s->desc.parent_cid;
    }
    cid = ((BDRVVmdkState *)pbs->opaque)->desc.cid;
    bdrv_unref(pbs);
    return cid;
}

static int vmdk_parent_refuse(BlockDriverState *bs, const char *hint, const char *fmt,
                              Error **errp)
{
    BDRVVmdkState *s = bs->opaque;

    if (!s->desc_text) {
        error_setg(errp, "vmdk: '%s' has no descriptor: setting a parent file name is not "
                   "supported", bs->filename);
        return -ENOTSUP;
    }
    if (hint && fmt && strcmp(fmt, "vmdk") != 0) {
        error_setg(errp, "vmdk: the parent of '%s' must be vmdk, not '%s'", bs->filename, fmt);
        return -ENOTSUP;
    }
    if (hint && (strpbrk(hint, "\"\n\r") || strlen(hint) >= sizeof(bs->backing_file))) {
        error_setg(errp, "vmdk: parent file name '%s' cannot be stored in a descriptor (a "
                   "quote, a line break or too long)", hint);
        return -EINVAL;
    }
    return 0;
}

int coroutine_fn vmdk_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                             const char *backing_fmt, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    const char *hint = backing_file && backing_file[0] ? backing_file : NULL;
    uint32_t cid;
    char *text, *dup = NULL;
    int ret = vmdk_parent_refuse(bs, hint, backing_fmt, errp);

    if (ret < 0) {
        return ret;
    }
    cid = hint ? parent_cid_of(bs, hint) : VMDK_NO_PARENT;
    text = desc_set_parent(s->desc_text, hint, cid);
    if (!text || (hint && !(dup = strdup(hint)))) {
        free(text);
        error_setg(errp, "vmdk: out of memory");
        return -ENOMEM;
    }
    co_mutex_lock(&s->lock);
    vmdk_wait_allocs(s);
    ret = vmdk_write_desc(bs, text);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        free(text);
        free(dup);
        error_setg_errno(errp, ret, ret == -ENOSPC
                         ? "vmdk: the new descriptor of '%s' does not fit in its area"
                         : "vmdk: could not write the descriptor of '%s'", bs->filename);
        return ret;
    }
    free(s->desc_text);
    s->desc_text = text;
    free(s->desc.parent_hint);
    s->desc.parent_hint = dup;
    s->desc.parent_cid = cid;
    snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", hint ? hint : "");
    snprintf(bs->backing_format, sizeof(bs->backing_format), "%s", hint ? "vmdk" : "");
    return 0;
}
