/*
 * The "vmdk" format driver: VMware virtual disks (VMware "Virtual Disk
 * Format 1.1"). A node is either a hosted sparse file with an embedded
 * descriptor (monolithicSparse, streamOptimized) or a text descriptor that
 * names extent files (monolithicFlat, twoGbMaxExtentSparse/Flat, vmfs,
 * vmfsThin, vmfsPreallocated, custom). The parent link (parentFileNameHint)
 * becomes the backing file.
 *
 * Extent files are opened through the file protocol only (names from the
 * descriptor are never parsed as json: or protocol strings) and, for a node
 * opened with BDRV_O_UNTRUSTED, only when they are siblings of the
 * descriptor, as block/open.c does for backing files. Unsupported kinds
 * (COWD/vmfsSparse, seSparse, raw device maps) fail with a message naming
 * them.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "drivers/drivers.h"
#include "block/bytes.h"
#include "drivers/format/vmdk/vmdk-int.h"
#include "block/opts-int.h"

/* ---------------------------------------------------------------------- */
/* Small I/O helpers */

typedef struct SyncRead {
    BdrvChild *c;
    uint64_t off;
    void *buf;
    size_t len;
} SyncRead;

int coroutine_fn vmdk_co_pread(BdrvChild *c, uint64_t off, void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, buf, len);
    return bdrv_co_preadv(c, (int64_t)off, (int64_t)len, &qiov, 0);
}

int coroutine_fn vmdk_co_pwrite(BdrvChild *c, uint64_t off, const void *buf, size_t len)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, len);
    return bdrv_co_pwritev(c, (int64_t)off, (int64_t)len, &qiov, 0);
}

static int64_t coroutine_fn sync_read_co(void *opaque)
{
    SyncRead *r = opaque;

    return vmdk_co_pread(r->c, r->off, r->buf, r->len);
}

int vmdk_pread_sync(BdrvChild *c, uint64_t off, void *buf, size_t len)
{
    SyncRead r = { c, off, buf, len };

    return (int)bdrv_run_co(c->bs->aio_context, sync_read_co, &r);
}

/* ---------------------------------------------------------------------- */
/* Probe */

static int vmdk_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    static const char desc[] = "# Disk DescriptorFile";

    if (buf_size >= 4 && ld_le32(buf) == VMDK4_MAGIC) {
        return 100;
    }
    if (buf_size >= (int)sizeof(desc) - 1 && !memcmp(buf, desc, sizeof(desc) - 1)) {
        return 100;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Open */

static const char *const vmdk_create_types[] = {
    "monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat",
    "streamOptimized", "vmfs", "vmfsThin", "vmfsPreallocated", "vmfsEagerZeroedThick",
    "custom", NULL,
};

static int check_create_type(const char *t, const char *name, Error **errp)
{
    for (int i = 0; vmdk_create_types[i]; i++) {
        if (!strcmp(t, vmdk_create_types[i])) {
            return 0;
        }
    }
    error_setg(errp, "vmdk: %s: createType '%s' is not supported", name, t);
    return -ENOTSUP;
}

/* Reads the descriptor text at off (len bytes) of c; NUL-terminates it. */
static int read_desc(BdrvChild *c, uint64_t off, uint64_t len, char **out, Error **errp)
{
    char *text;

    if (len > VMDK_MAX_DESC_BYTES) {
        error_setg(errp, "vmdk: %s: descriptor of %" PRIu64 " bytes is too large (limit %d)",
                   c->bs->filename, len, VMDK_MAX_DESC_BYTES);
        return -EFBIG;
    }
    text = calloc(1, len + 1);
    if (!text) {
        error_setg(errp, "vmdk: out of memory");
        return -ENOMEM;
    }
    if (len && vmdk_pread_sync(c, off, text, len) < 0) {
        free(text);
        error_setg(errp, "vmdk: %s: could not read the descriptor", c->bs->filename);
        return -EIO;
    }
    *out = text;
    return 0;
}

/* The path of an extent file named in the descriptor (see the file comment). */
static int extent_path(BlockDriverState *bs, const char *name, char *out, size_t size,
                       Error **errp)
{
    char dir[4096];
    int n;

    if (!strncmp(name, "json:", 5)) {
        error_setg(errp, "vmdk: %s: extent file name '%.64s' is not allowed", bs->filename,
                   name);
        return -EINVAL;
    }
    if ((bs->open_flags & BDRV_O_UNTRUSTED) &&
        (strchr(name, '/') || !strcmp(name, "..") || !strcmp(name, "."))) {
        error_setg(errp, "vmdk: %s: untrusted image: extent file '%s' is not a sibling of the "
                   "descriptor", bs->filename, name);
        return -EPERM;
    }
    if (name[0] == '/' || !strchr(bs->file->bs->filename, '/')) {
        n = snprintf(out, size, "%s", name);
    } else {
        snprintf(dir, sizeof(dir), "%s", bs->file->bs->filename);
        n = snprintf(out, size, "%s/%s", dirname(dir), name);
    }
    if (n < 0 || (size_t)n >= size) {
        error_setg(errp, "vmdk: %s: extent file name is too long", bs->filename);
        return -ENAMETOOLONG;
    }
    return 0;
}

static BdrvChild *open_extent_file(BlockDriverState *bs, BlockOpts *options, int i,
                                   const VmdkDescExtent *x, Error **errp)
{
    char name[32], key[64], path[4096];
    unsigned role = BDRV_CHILD_DATA | (x->type == VMDK_EXT_SPARSE ? BDRV_CHILD_METADATA : 0);
    bool given;

    snprintf(name, sizeof(name), "extents.%d", i);
    snprintf(key, sizeof(key), "%s.", name);
    given = bopts_has(options, name);
    for (size_t k = 0; !given && k < bopts_count(options); k++) {
        given = !strncmp(bopts_key_at(options, k), key, strlen(key));
    }
    if (!given) {
        if (extent_path(bs, x->filename, path, sizeof(path), errp) < 0) {
            return NULL;
        }
        snprintf(key, sizeof(key), "%s.driver", name);
        bopts_set(options, key, "file");
        snprintf(key, sizeof(key), "%s.filename", name);
        bopts_set(options, key, path);
    }
    return bdrv_open_child(NULL, options, name, bs, role, false, errp);
}

static int open_extent(BlockDriverState *bs, BlockOpts *options, int i, VmdkExtent *e,
                       Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    const VmdkDescExtent *x = &s->desc.ext[i];

    e->type = x->type;
    e->length = x->sectors * VMDK_SECTOR;
    e->read_only = x->access != VMDK_ACCESS_RW;
    e->no_access = x->access == VMDK_ACCESS_NOACCESS;
    memcpy(e->type_name, x->type_name, sizeof(e->type_name));
    e->filename = x->filename ? strdup(x->filename) : NULL;
    if (x->type == VMDK_EXT_ZERO) {
        return 0;
    }
    e->child = open_extent_file(bs, options, i, x, errp);
    if (!e->child) {
        return -EINVAL;
    }
    if (x->type == VMDK_EXT_FLAT) {
        e->flat_offset = x->offset * VMDK_SECTOR;
        return vmdk_flat_check(bs, e, errp);
    }
    return vmdk_sparse_open(bs, e, errp);
}

VmdkExtent *vmdk_extent_append(BDRVVmdkState *s, VmdkExtent *e)
{
    VmdkExtent **n = e ? realloc(s->extents, sizeof(*n) * (size_t)(s->n_extents + 1)) : NULL;

    if (!n) {
        free(e);
        return NULL;
    }
    s->extents = n;
    s->extents[s->n_extents++] = e;
    return e;
}

static int open_descriptor_file(BlockDriverState *bs, BlockOpts *options, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    int64_t len = bdrv_getlength(bs->file->bs);
    uint64_t total = 0;
    int ret;

    if (len < 0) {
        error_setg(errp, "vmdk: %s: could not get the file size", bs->filename);
        return (int)len;
    }
    ret = read_desc(bs->file, 0, (uint64_t)len, &s->desc_text, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vmdk_desc_parse(s->desc_text, (size_t)len, &s->desc, bs->filename, errp);
    if (ret < 0 || (ret = check_create_type(s->desc.create_type, bs->filename, errp)) < 0) {
        return ret;
    }
    if (s->desc.n_ext == 0) {
        error_setg(errp, "vmdk: %s: the descriptor lists no extents", bs->filename);
        return -EINVAL;
    }
    for (int i = 0; i < s->desc.n_ext; i++) {
        VmdkExtent *e = vmdk_extent_append(s, calloc(1, sizeof(*e)));

        if (!e) {
            return -ENOMEM;
        }
        e->start = total;
        ret = open_extent(bs, options, i, e, errp);
        if (ret < 0) {
            return ret;
        }
        if (check_add_overflow(total, e->length, &total) || total > (uint64_t)BDRV_MAX_LENGTH) {
            error_setg(errp, "vmdk: %s: the extents add up to more than %lld bytes",
                       bs->filename, (long long)BDRV_MAX_LENGTH);
            return -EINVAL;
        }
    }
    s->size = total;
    return 0;
}

/* A hosted sparse file: one extent, the file itself; its embedded descriptor. */
static int open_sparse_file(BlockDriverState *bs, const uint8_t *hdr, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    uint64_t desc_off = ld_le64(hdr + 28), desc_size = ld_le64(hdr + 36);
    int64_t len = bdrv_getlength(bs->file->bs);
    VmdkExtent *e;
    int ret;

    if (len < 0) {
        return (int)len;
    }
    e = vmdk_extent_append(s, calloc(1, sizeof(*e)));
    if (!e) {
        return -ENOMEM;
    }
    e->type = VMDK_EXT_SPARSE;
    e->child = bs->file;
    ret = vmdk_sparse_open(bs, e, errp);
    if (ret < 0) {
        return ret;
    }
    s->size = e->length;
    if (desc_off && desc_size) {
        if (desc_off > (uint64_t)len / VMDK_SECTOR || desc_size > VMDK_MAX_DESC_BYTES ||
            !range_within(desc_off * VMDK_SECTOR, desc_size * VMDK_SECTOR, (uint64_t)len)) {
            error_setg(errp, "vmdk: %s: embedded descriptor (sector %" PRIu64 ", %" PRIu64
                       " sectors) is too large or past the end of the file", bs->filename,
                       desc_off, desc_size);
            return -EINVAL;
        }
        s->desc_embedded = true;
        s->desc_offset = desc_off * VMDK_SECTOR;
        s->desc_capacity = desc_size * VMDK_SECTOR;
        ret = read_desc(bs->file, s->desc_offset, s->desc_capacity, &s->desc_text, errp);
        ret = ret ? ret : vmdk_desc_recover(bs, s->desc_text, s->desc_capacity, errp);
        if (ret < 0) {
            return ret;
        }
        ret = vmdk_desc_parse(s->desc_text, s->desc_capacity, &s->desc, bs->filename, errp);
        if (ret < 0) {
            return ret;
        }
        return check_create_type(s->desc.create_type, bs->filename, errp);
    }
    s->desc.cid = s->desc.parent_cid = 0xffffffffU;
    snprintf(s->desc.create_type, sizeof(s->desc.create_type), "%s",
             e->compressed ? "streamOptimized" : "monolithicSparse");
    return 0;
}

static int set_backing(BlockDriverState *bs, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;

    if (!s->desc.parent_hint || !s->desc.parent_hint[0]) {
        return 0;
    }
    if (strlen(s->desc.parent_hint) >= sizeof(bs->backing_file)) {
        error_setg(errp, "vmdk: %s: parentFileNameHint is too long", bs->filename);
        return -ENAMETOOLONG;
    }
    snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", s->desc.parent_hint);
    snprintf(bs->backing_format, sizeof(bs->backing_format), "vmdk");
    return 0;
}

static void vmdk_close(BlockDriverState *bs);

static int vmdk_do_open(BlockDriverState *bs, BlockOpts *options, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    uint8_t hdr[512] = { 0 };
    int64_t len;
    int ret;

    co_mutex_init(&s->lock);
    fmt_inflight_init(&s->allocs);
    bs->file = bdrv_open_child(NULL, options, "file", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY, false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    s->gt_cache = calloc(VMDK_GT_CACHE_SLOTS, sizeof(*s->gt_cache));
    if (!s->gt_cache) {
        return -ENOMEM;
    }
    for (int i = 0; i < VMDK_GT_CACHE_SLOTS; i++) {
        s->gt_cache[i].extent = -1;
    }
    len = bdrv_getlength(bs->file->bs);
    if (len < 0) {
        error_setg(errp, "vmdk: %s: could not get the file size", bs->filename);
        return (int)len;
    }
    if (vmdk_pread_sync(bs->file, 0, hdr, len < 512 ? (size_t)len : 512) < 0) {
        error_setg(errp, "vmdk: %s: could not read the header", bs->filename);
        return -EIO;
    }
    if (ld_le32(hdr) == VMDK4_MAGIC) {
        ret = open_sparse_file(bs, hdr, errp);
    } else if (ld_le32(hdr) == VMDK3_MAGIC) {
        error_setg(errp, "vmdk: %s: VMDK3 (COWD, vmfsSparse) images are not supported",
                   bs->filename);
        ret = -ENOTSUP;
    } else {
        ret = open_descriptor_file(bs, options, errp);
    }
    if (ret < 0) {
        return ret;
    }
    return set_backing(bs, errp);
}

static int vmdk_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    int ret = vmdk_do_open(bs, options, errp);

    if (ret < 0) {
        vmdk_close(bs); /* the children are dropped by the caller */
    }
    return ret;
}

/* Writes every dirty grain table (after a flush of the data), then flushes. */
static int64_t coroutine_fn vmdk_commit_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVVmdkState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = vmdk_commit_all(s);
    co_mutex_unlock(&s->lock);
    for (int i = 0; ret == 0 && i < s->n_extents; i++) {
        ret = s->extents[i]->child ? bdrv_co_flush(s->extents[i]->child->bs) : 0;
    }
    return ret;
}

static bool vmdk_dirty(const BDRVVmdkState *s)
{
    for (int i = 0; i < s->n_extents; i++) {
        if (fmt_defer_pending(&s->extents[i]->dirty)) {
            return true;
        }
    }
    return false;
}

/* Guest flush: the dirty grain tables go to the files (the block layer flushes them). */
static int coroutine_fn vmdk_co_flush_to_os(BlockDriverState *bs)
{
    BDRVVmdkState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->lock);
    ret = vmdk_commit_all(s);
    co_mutex_unlock(&s->lock);
    return ret;
}

static void vmdk_close(BlockDriverState *bs)
{
    BDRVVmdkState *s = bs->opaque;

    /* The block layer drains the node first: no allocating write is left in flight. */
    assert(s->allocs.head == NULL);
    if (vmdk_dirty(s) && bdrv_run_co(bs->aio_context, vmdk_commit_co, bs) < 0) {
        coblk_warn("vmdk: '%s': writing the grain tables failed at close: the grains "
                   "allocated since the last flush may be lost (leaked)", bs->filename);
    }

    for (int i = 0; i < s->n_extents; i++) {
        if (s->extents[i]->stream_written && vmdk_stream_finish_sync(s->extents[i]) < 0) {
            coblk_warn("vmdk: %s: could not write the end-of-stream marker", bs->filename);
        }
    }
    for (int i = 0; i < s->n_extents; i++) {
        free(s->extents[i]->gd);
        free(s->extents[i]->rgd);
        free(s->extents[i]->filename);
        free(s->extents[i]);
    }
    free(s->extents);
    free(s->gt_cache);
    free(s->desc_text);
    vmdk_desc_free(&s->desc);
    s->extents = NULL;
    s->n_extents = 0;
    s->gt_cache = NULL;
    s->desc_text = NULL;
}

static void vmdk_refresh_limits(BlockDriverState *bs, Error **errp)
{
    if (bs->bl.request_alignment < BDRV_SECTOR_SIZE) {
        bs->bl.request_alignment = BDRV_SECTOR_SIZE;
    }
}

/* Nothing is staged; going read-only writes the dirty grain tables first. */
static int vmdk_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                               Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    int ret;

    if ((new_flags & BDRV_O_RDWR) || !vmdk_dirty(s)) {
        return 0;
    }
    ret = (int)bdrv_run_co(bs->aio_context, vmdk_commit_co, bs);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vmdk: could not write the grain tables of '%s'",
                         bs->filename);
    }
    return ret;
}

static void vmdk_reopen_noop(BlockDriverState *bs)
{
}

/* ---------------------------------------------------------------------- */
/* Requests */

/* The extent holding guest byte off (off < s->size). */
static int find_extent(const BDRVVmdkState *s, uint64_t off)
{
    int lo = 0, hi = s->n_extents - 1;

    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;

        if (s->extents[mid]->start <= off) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

int coroutine_fn vmdk_update_cid(BlockDriverState *bs)
{
    BDRVVmdkState *s = bs->opaque;
    uint32_t cid = s->desc.cid;
    char *text;
    int ret;

    if (!s->desc_text) {
        return 0;
    }
    while (cid == s->desc.cid || cid == 0xffffffffU || cid == 0xfffffffeU) {
        if (getrandom(&cid, sizeof(cid), 0) != sizeof(cid)) {
            cid = (uint32_t)time(NULL) ^ (uint32_t)(uintptr_t)s;
        }
    }
    text = vmdk_desc_set_cid(s->desc_text, cid);
    if (!text) {
        return 0; /* no CID line to update */
    }
    ret = vmdk_put_desc(bs, NULL, text);
    if (ret < 0) {
        free(text);
        return ret == -ENOSPC ? 0 : ret; /* does not fit: keep the old CID */
    }
    free(s->desc_text);
    s->desc_text = text;
    s->desc.cid = cid;
    return 0;
}

static int coroutine_fn vmdk_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BDRVVmdkState *s = bs->opaque;
    uint64_t off = (uint64_t)offset, left = (uint64_t)bytes;

    while (left) {
        int idx = find_extent(s, off);
        VmdkExtent *e = s->extents[idx];
        uint64_t in = off - e->start;
        uint64_t n = left < e->length - in ? left : e->length - in;
        int ret;

        if (off >= s->size) {
            iovector_memset(qiov, qiov_offset, 0, left);
            return 0;
        }
        if (e->no_access) {
            return -EACCES;
        }
        if (e->type == VMDK_EXT_ZERO) {
            iovector_memset(qiov, qiov_offset, 0, n);
            ret = 0;
        } else if (e->type == VMDK_EXT_FLAT) {
            ret = vmdk_flat_preadv(e, in, n, qiov, qiov_offset);
        } else {
            ret = vmdk_sparse_preadv(bs, idx, in, n, qiov, qiov_offset);
        }
        if (ret < 0) {
            return ret;
        }
        off += n;
        qiov_offset += n;
        left -= n;
    }
    return 0;
}

/* Writes or (qiov NULL) zeroes guest bytes, extent by extent. */
static int coroutine_fn vmdk_write(BlockDriverState *bs, uint64_t off, uint64_t left,
                                   IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    BDRVVmdkState *s = bs->opaque;
    int ret;

    if (off + left > s->size) {
        return -ENOSPC;
    }
    if (!s->cid_updated) {
        co_mutex_lock(&s->lock);
        vmdk_wait_allocs(s);
        ret = s->cid_updated ? 0 : vmdk_update_cid(bs);
        s->cid_updated = ret == 0;
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    while (left) {
        int idx = find_extent(s, off);
        VmdkExtent *e = s->extents[idx];
        uint64_t in = off - e->start;
        uint64_t n = left < e->length - in ? left : e->length - in;

        if (e->read_only || e->type == VMDK_EXT_ZERO) {
            return -EACCES;
        }
        if (e->type == VMDK_EXT_FLAT) {
            ret = vmdk_flat_pwritev(e, in, n, qiov, qoff, flags);
        } else {
            ret = vmdk_sparse_pwritev(bs, idx, in, n, qiov, qoff, qiov == NULL);
        }
        if (ret < 0) {
            return ret;
        }
        off += n;
        qoff += n;
        left -= n;
    }
    return 0;
}

static int coroutine_fn vmdk_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, size_t qiov_offset,
                                        BdrvRequestFlags flags)
{
    return vmdk_write(bs, (uint64_t)offset, (uint64_t)bytes, qiov, qiov_offset, flags);
}

static int coroutine_fn vmdk_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                              int64_t bytes, BdrvRequestFlags flags)
{
    return vmdk_write(bs, (uint64_t)offset, (uint64_t)bytes, NULL, 0, flags);
}

static int coroutine_fn vmdk_co_block_status(BlockDriverState *bs, bool want_zero,
                                             int64_t offset, int64_t bytes, int64_t *pnum,
                                             int64_t *map, BlockDriverState **file)
{
    BDRVVmdkState *s = bs->opaque;
    int idx = find_extent(s, (uint64_t)offset);
    VmdkExtent *e = s->extents[idx];
    uint64_t in = (uint64_t)offset - e->start;
    uint64_t n = (uint64_t)bytes < e->length - in ? (uint64_t)bytes : e->length - in;

    if (e->type == VMDK_EXT_ZERO) {
        *pnum = (int64_t)n;
        return BDRV_BLOCK_ZERO;
    }
    if (e->type == VMDK_EXT_FLAT) {
        *pnum = (int64_t)n;
        *map = (int64_t)(e->flat_offset + in);
        *file = e->child->bs;
        return BDRV_BLOCK_RAW | BDRV_BLOCK_OFFSET_VALID;
    }
    return vmdk_sparse_block_status(bs, idx, in, n, pnum, map, file);
}

static int64_t coroutine_fn vmdk_co_getlength(BlockDriverState *bs)
{
    BDRVVmdkState *s = bs->opaque;

    return (int64_t)s->size;
}

/* ---------------------------------------------------------------------- */
/* Information */

static int vmdk_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVVmdkState *s = bs->opaque;

    for (int i = 0; i < s->n_extents; i++) {
        if (s->extents[i]->type == VMDK_EXT_SPARSE) {
            bdi->cluster_size = (int64_t)s->extents[i]->grain_size;
            break;
        }
    }
    return 0;
}

static void json_str(StrBuf *sb, const char *str)
{
    sb_putc(sb, '"');
    for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
        char esc[8];

        if (*p == '"' || *p == '\\') {
            sb_putc(sb, '\\');
            sb_putc(sb, (char)*p);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            sb_puts(sb, esc);
        } else {
            sb_putc(sb, (char)*p);
        }
    }
    sb_putc(sb, '"');
}

static void json_extent(StrBuf *sb, BlockDriverState *bs, const VmdkExtent *e)
{
    char num[64];

    sb_puts(sb, "{");
    if (e->compressed) {
        sb_puts(sb, "\"compressed\": true, ");
    }
    snprintf(num, sizeof(num), "\"virtual-size\": %" PRIu64 ", \"filename\": ", e->length);
    sb_puts(sb, num);
    json_str(sb, e->child ? e->child->bs->filename : "");
    if (e->type == VMDK_EXT_SPARSE) {
        snprintf(num, sizeof(num), ", \"cluster-size\": %" PRIu64, e->grain_size);
        sb_puts(sb, num);
    }
    sb_puts(sb, ", \"format\": ");
    json_str(sb, e->type_name);
    sb_puts(sb, "}");
}

static char *vmdk_get_specific_info(BlockDriverState *bs, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    char num[96];
    StrBuf sb;
    char *out;

    sb_init(&sb);
    snprintf(num, sizeof(num), "{\"cid\": %u, \"parent-cid\": %u, \"create-type\": ",
             s->desc.cid, s->desc.parent_cid);
    sb_puts(&sb, num);
    json_str(&sb, s->desc.create_type);
    sb_puts(&sb, ", \"extents\": [");
    for (int i = 0; i < s->n_extents; i++) {
        if (i) {
            sb_puts(&sb, ", ");
        }
        json_extent(&sb, bs, s->extents[i]);
    }
    sb_puts(&sb, "]}");
    out = sb_str(&sb) ? strdup(sb_str(&sb)) : NULL;
    sb_free(&sb);
    if (!out) {
        error_setg(errp, "vmdk: out of memory");
    }
    return out;
}

static int vmdk_get_geometry(BlockDriverState *bs, BlockGeometry *geo)
{
    BDRVVmdkState *s = bs->opaque;

    if (!s->desc.cylinders || !s->desc.heads || !s->desc.sectors_per_track) {
        return -ENOTSUP;
    }
    geo->cylinders = s->desc.cylinders;
    geo->heads = s->desc.heads;
    geo->sectors = s->desc.sectors_per_track;
    return 0;
}

static const char *const vmdk_extensions[] = { "vmdk", NULL };

const BlockDriver bdrv_vmdk = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "vmdk",
    .instance_size = sizeof(BDRVVmdkState),
    .is_format = true,
    .supports_backing = true,
    .probe = vmdk_probe,
    .bdrv_open = vmdk_open,
    .bdrv_close = vmdk_close,
    .co_flush_to_os = vmdk_co_flush_to_os,
    .refresh_limits = vmdk_refresh_limits,
    .co_preadv = vmdk_co_preadv,
    .co_pwritev = vmdk_co_pwritev,
    .co_pwrite_zeroes = vmdk_co_pwrite_zeroes,
    .co_block_status = vmdk_co_block_status,
    .co_getlength = vmdk_co_getlength,
    .co_truncate = vmdk_co_truncate,
    .reopen_prepare = vmdk_reopen_prepare,
    .reopen_commit = vmdk_reopen_noop,
    .reopen_abort = vmdk_reopen_noop,
    .co_create_opts = vmdk_co_create_opts,
    .create_opts = vmdk_create_opts,
    .get_info = vmdk_get_info,
    .get_specific_info = vmdk_get_specific_info,
    .get_geometry = vmdk_get_geometry,
    .co_check = vmdk_co_check,
    .file_extensions = vmdk_extensions,
    .co_rename = vmdk_co_rename,
    .co_change_backing_file = vmdk_co_change_backing_file,
};
