/*
 * vmdk: resize (truncate) by changing the last extent.
 *
 * Supported:
 * - a FLAT last extent (monolithicFlat, twoGbMaxExtentFlat within 2 GiB per
 *   extent, vmfs): grow extends the extent's file (flushed), then the
 *   descriptor's extent line and ddb.geometry.cylinders are rewritten
 *   (flushed); shrink rewrites the descriptor first, then truncates the file
 *   when the extent ends it. The descriptor is rewritten in place; it is a
 *   single atomic write when it fits in one sector (as those qemu-img and
 *   coblk write do), else a torn write could damage it.
 * - a hosted SPARSE last extent (monolithicSparse, twoGbMaxExtentSparse):
 *   grow only; the new directory entries get new zeroed grain tables (qemu
 *   cannot write through an empty entry). Order: tables, flush, directory
 *   entries, flush; then the header's capacity and the descriptor, the one
 *   that decides the size last (the header for a monolithic file, whose
 *   embedded descriptor comes first; the descriptor for a descriptor file).
 *   The directories grow in the padding of their last sector; past it they
 *   are copied to the end of the file (with the new entries), flushed, and
 *   the header's gdOffset/rgdOffset switch to the copies in one sector write
 *   (flushed) before the capacity changes (sparse.c, move_gd).
 * Refused with -ENOTSUP and a message: shrinking a sparse extent, a
 * directory past VMDK_MAX_GD_BYTES, streamOptimized (compressed) extents, ZERO or
 * read-only last extents, images with a parent, and shrinking below the
 * start of the last extent. Growing a twoGbMaxExtent* image past 2 GiB in
 * its last extent adds extent files (grow.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/vmdk/vmdk-int.h"

#define TWO_GB (2ULL << 30)

char *vmdk_resized_desc(BDRVVmdkState *s, uint64_t size, int n, uint64_t sectors)
{
    uint64_t per_cyl = (uint64_t)s->desc.heads * s->desc.sectors_per_track * 512, cyl = 0;

    if (per_cyl) {
        cyl = size / per_cyl;
        cyl = cyl > 16383 ? 16383 : cyl ? cyl : 1;
    }
    return vmdk_desc_resize(s->desc_text, n, sectors, (uint32_t)cyl);
}

static int coroutine_fn resize_flat(BlockDriverState *bs, VmdkExtent *e, uint64_t len,
                                    const char *text)
{
    int64_t flen = bdrv_co_getlength(e->child->bs);
    uint64_t end = e->flat_offset + len;
    int ret;

    if (flen < 0) {
        return (int)flen;
    }
    if (len > e->length) {
        ret = (int64_t)end > flen ? bdrv_co_truncate(e->child, (int64_t)end, true,
                                                     PREALLOC_MODE_OFF, 0, NULL) : 0;
        ret = ret ? ret : bdrv_co_flush(e->child->bs);
        return ret ? ret : vmdk_write_desc(bs, text);
    }
    ret = vmdk_write_desc(bs, text);
    if (ret == 0 && (uint64_t)flen == e->flat_offset + e->length && e->child != bs->file) {
        ret = bdrv_co_truncate(e->child, (int64_t)end, true, PREALLOC_MODE_OFF, 0, NULL);
    }
    return ret;
}

int coroutine_fn vmdk_grow_sparse_extent(VmdkExtent *e, uint64_t len, Error **errp)
{
    uint64_t grains = div_round_up_u64(len, e->grain_size);
    uint64_t need = div_round_up_u64(grains, e->gtes_per_gt);
    int ret = vmdk_sparse_grow_gd(e, need);

    if (ret == -ENOTSUP) {
        error_setg(errp, "vmdk: cannot grow '%s': a grain directory of %" PRIu64 " entries "
                   "exceeds the limit of %llu bytes", e->child->bs->filename, need,
                   VMDK_MAX_GD_BYTES);
        return ret;
    }
    return ret ? ret : vmdk_sparse_set_capacity(e, len / VMDK_SECTOR);
}

static int coroutine_fn grow_sparse(BlockDriverState *bs, VmdkExtent *e, uint64_t len,
                                    const char *text, Error **errp)
{
    uint64_t grains = div_round_up_u64(len, e->grain_size);
    uint64_t need = div_round_up_u64(grains, e->gtes_per_gt);
    int ret;

    if (!((BDRVVmdkState *)bs->opaque)->desc_embedded) {
        /* The descriptor file decides the size: it changes last. */
        ret = vmdk_grow_sparse_extent(e, len, errp);
        return ret ? ret : vmdk_write_desc(bs, text);
    }
    /* The embedded descriptor comes first, the header's capacity last. */
    ret = vmdk_sparse_grow_gd(e, need);
    if (ret == -ENOTSUP) {
        return vmdk_grow_sparse_extent(e, len, errp);
    }
    ret = ret ? ret : vmdk_write_desc(bs, text);
    return ret ? ret : vmdk_sparse_set_capacity(e, len / VMDK_SECTOR);
}

/* Why the last extent cannot take len bytes, or NULL. */
static const char *refusal(BlockDriverState *bs, const VmdkExtent *e, uint64_t len)
{
    BDRVVmdkState *s = bs->opaque;

    if (bs->backing_file[0]) {
        return "images with a parent (parentFileNameHint) keep their parent's size";
    }
    if (!s->desc_text) {
        return "the image has no descriptor to record the new size in";
    }
    if (e->read_only || e->type == VMDK_EXT_ZERO) {
        return "its last extent is read-only or a ZERO extent";
    }
    if (e->type == VMDK_EXT_SPARSE && (e->compressed || e->markers)) {
        return "streamOptimized (compressed) extents cannot be resized";
    }
    if (e->type == VMDK_EXT_SPARSE && len < e->length) {
        return "shrinking a sparse extent is not supported (qemu-img cannot either)";
    }
    return NULL;
}

int coroutine_fn vmdk_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                  PreallocMode prealloc, BdrvRequestFlags flags, Error **errp)
{
    BDRVVmdkState *s = bs->opaque;
    uint64_t size = (uint64_t)offset, len;
    VmdkExtent *e = s->extents[s->n_extents - 1];
    const char *why;
    char *text;
    int ret;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "vmdk: resize with preallocation is not supported");
        return -ENOTSUP;
    }
    if (size % VMDK_SECTOR || size <= e->start) {
        error_setg(errp, "vmdk: new size %" PRIu64 " of '%s' is not a multiple of 512 past the "
                   "start of the last extent (%" PRIu64 ")", size, bs->filename, e->start);
        return size % VMDK_SECTOR ? -EINVAL : -ENOTSUP;
    }
    if (size == s->size) {
        return 0;
    }
    len = size - e->start;
    why = refusal(bs, e, len);
    if (why) {
        error_setg(errp, "vmdk: cannot resize '%s': %s", bs->filename, why);
        return -ENOTSUP;
    }
    if (!strncmp(s->desc.create_type, "twoGbMaxExtent", 14) && len > TWO_GB) {
        co_mutex_lock(&s->lock);
        vmdk_wait_allocs(s);
        ret = vmdk_commit_all(s);
        ret = ret ? ret : vmdk_grow_extents(bs, size, errp);
        co_mutex_unlock(&s->lock);
        return ret;
    }
    text = vmdk_resized_desc(s, size, s->n_extents - 1, len / VMDK_SECTOR);
    if (!text) {
        error_setg(errp, "vmdk: '%s': could not rewrite the descriptor", bs->filename);
        return -ENOMEM;
    }
    co_mutex_lock(&s->lock);
    vmdk_wait_allocs(s); /* they may take file space and grain tables the grow moves */
    ret = vmdk_commit_all(s); /* the tables on disk before the directories move */
    ret = ret ? ret : e->type == VMDK_EXT_FLAT ? resize_flat(bs, e, len, text)
                                               : grow_sparse(bs, e, len, text, errp);
    if (ret == 0) {
        free(s->desc_text);
        s->desc_text = text;
        text = NULL;
        s->desc.ext[s->n_extents - 1].sectors = len / VMDK_SECTOR;
        e->length = len;
        s->size = size;
    }
    co_mutex_unlock(&s->lock);
    free(text);
    if (ret < 0 && ret != -ENOTSUP) {
        error_setg_errno(errp, ret, "vmdk: could not resize '%s'", bs->filename);
    }
    return ret;
}
