/*
 * coblk-img convert -C: copy offloading with copy_file_range(2).
 *
 * A data range whose bytes sit as they are in a file (block status
 * OFFSET_VALID with a node of the "file" protocol: raw images, plain qcow2
 * clusters, ...) is copied by the kernel from that file into the target, so
 * the filesystem may share or copy the blocks without the data passing
 * through user space. The target is either a raw image directly on a file
 * (no offset/size window: guest offset = file offset), or a format whose
 * driver does copy offloading (bdrv_co_copy_range_to: qcow2), which maps or
 * allocates the host clusters, lets the copy fill them, then links them as
 * for a write. The copies run on the thread pool (copy_file_range blocks).
 * Anything else (-ENOTSUP from img_copy_offload: partial clusters, a node
 * that is not a file, ...) is left to the caller's read/write path, as
 * qemu-img falls back when copy_range fails.
 *
 * The files are opened again here (the block layer does not hand out its
 * descriptors); the open file descriptions it holds keep their OFD locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/aio-io.h>
#include <coblk/block-driver.h>

#include "img.h"

#define OFFLOAD_MAX_FILES 16

struct ImgCopyOffload {
    AioContext *ctx;
    BlockDriverState *dst_bs;   /* a format that does copy offloading, else NULL (raw) */
    BlockDriverState *dst_file; /* its protocol node written so far (dst_fd), or NULL */
    int dst_fd;
    int nfiles;
    BlockDriverState *file_bs[OFFLOAD_MAX_FILES];
    int file_fd[OFFLOAD_MAX_FILES];
};

typedef struct OffloadJob {
    int in_fd, out_fd;
    int64_t in_off, out_off, len;
} OffloadJob;

static bool is_file_node(const BlockDriverState *bs)
{
    return bs && bs->drv && bs->drv->format_name &&
           strcmp(bs->drv->format_name, "file") == 0;
}

/* Whether bs's driver (maybe an older plugin) has co_copy_range_to. */
static bool has_copy_range_to(const BlockDriverState *bs)
{
    const BlockDriver *drv = bs->drv;

    return drv && drv->struct_size >= offsetof(BlockDriver, co_copy_range_to) +
                                      sizeof(drv->co_copy_range_to) && drv->co_copy_range_to;
}

ImgCopyOffload *img_copy_offload_new(BlockBackend *dst)
{
    BlockDriverState *bs = blk_bs(dst);
    BlockDriverState *file = bs && bs->file ? bs->file->bs : NULL;
    ImgCopyOffload *c;
    int64_t len, flen;

    if (bs && has_copy_range_to(bs)) {
        c = calloc(1, sizeof(*c));
        if (c) {
            c->ctx = blk_get_aio_context(dst);
            c->dst_bs = bs;
            c->dst_fd = -1;
        }
        return c;
    }
    /* A raw node whose length is the file's: no window, guest offset = file offset. */
    if (!bs || strcmp(bdrv_get_format_name(bs), "raw") != 0 || !is_file_node(file) ||
        bs->probed) {
        return NULL;
    }
    len = blk_getlength(dst);
    flen = bdrv_getlength(file);
    if (len < 0 || len != flen) {
        return NULL;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    c->ctx = blk_get_aio_context(dst);
    c->dst_fd = open(file->filename, O_WRONLY | O_CLOEXEC);
    if (c->dst_fd < 0) {
        free(c);
        return NULL;
    }
    return c;
}

void img_copy_offload_free(ImgCopyOffload *c)
{
    if (!c) {
        return;
    }
    for (int i = 0; i < c->nfiles; i++) {
        if (c->file_fd[i] >= 0) {
            close(c->file_fd[i]);
        }
    }
    if (c->dst_fd >= 0) {
        close(c->dst_fd);
    }
    free(c);
}

/* A read-only descriptor for the file node, opened once; -1 if none. */
static int source_fd(ImgCopyOffload *c, BlockDriverState *file)
{
    for (int i = 0; i < c->nfiles; i++) {
        if (c->file_bs[i] == file) {
            return c->file_fd[i];
        }
    }
    if (c->nfiles == OFFLOAD_MAX_FILES) {
        return -1;
    }
    c->file_bs[c->nfiles] = file;
    c->file_fd[c->nfiles] = open(file->filename, O_RDONLY | O_CLOEXEC);
    return c->file_fd[c->nfiles++];
}

/* Thread pool: copies the whole range, or returns -errno (-ENODATA at EOF). */
static int64_t offload_work(void *opaque)
{
    OffloadJob *j = opaque;
    loff_t in = j->in_off, out = j->out_off;
    int64_t left = j->len;

    while (left > 0) {
        ssize_t n = copy_file_range(j->in_fd, &in, j->out_fd, &out, (size_t)left, 0);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            return n < 0 ? -errno : -ENODATA;
        }
        left -= n;
    }
    return 0;
}

/* The source of one bdrv_co_copy_range_to(): guest offset off is at map in in_fd. */
typedef struct FillSrc {
    ImgCopyOffload *c;
    int in_fd;
    int64_t map, off;
} FillSrc;

/* A writable descriptor for the target's protocol node, opened once; -1 if none. */
static int target_fd(ImgCopyOffload *c, BlockDriverState *file)
{
    if (c->dst_file != file) {
        if (c->dst_file) {
            return -1;  /* one file only (no external data files and the like) */
        }
        c->dst_fd = open(file->filename, O_WRONLY | O_CLOEXEC);
        c->dst_file = file;
    }
    return c->dst_fd;
}

/* BdrvCopyFillFn: the driver says where the guest bytes [offset, +bytes) go. */
static int coroutine_fn offload_fill(void *opaque, BlockDriverState *file, int64_t host,
                                     int64_t offset, int64_t bytes)
{
    FillSrc *f = opaque;
    OffloadJob j = { .in_fd = f->in_fd, .in_off = f->map + (offset - f->off),
                     .out_off = host, .len = bytes };

    if (!is_file_node(file) || (j.out_fd = target_fd(f->c, file)) < 0) {
        return -ENOTSUP;
    }
    return (int)thread_pool_co_run(f->c->ctx, offload_work, &j);
}

int coroutine_fn img_copy_offload(ImgCopyOffload *c, BlockDriverState *file, int64_t map,
                                  int64_t off, int64_t n)
{
    OffloadJob j = { .out_fd = c->dst_fd, .in_off = map, .out_off = off, .len = n };

    if (!is_file_node(file) || map < 0 || (j.in_fd = source_fd(c, file)) < 0) {
        return -ENOTSUP;
    }
    if (c->dst_bs) {
        FillSrc f = { c, j.in_fd, map, off };

        return bdrv_co_copy_range_to(c->dst_bs, off, n, offload_fill, &f);
    }
    return (int)thread_pool_co_run(c->ctx, offload_work, &j);
}
