/*
 * coblk-img convert -C: copy offloading with copy_file_range(2).
 *
 * A data range whose bytes sit as they are in a file (block status
 * OFFSET_VALID with a node of the "file" protocol: raw images, plain qcow2
 * clusters, ...) is copied by the kernel from that file into the target,
 * which must be a raw image directly on a file (no offset/size window), so
 * the filesystem may share or copy the blocks without the data passing
 * through user space. The copies run on the thread pool (copy_file_range
 * blocks). Anything else (-ENOTSUP from img_copy_offload) is left to the
 * caller's read/write path, as qemu-img falls back when copy_range fails.
 *
 * The files are opened again here (the block layer does not hand out its
 * descriptors); the open file descriptions it holds keep their OFD locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/aio-io.h>
#include <coblk/block-driver.h>

#include "img.h"

#define OFFLOAD_MAX_FILES 16

struct ImgCopyOffload {
    AioContext *ctx;
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

ImgCopyOffload *img_copy_offload_new(BlockBackend *dst)
{
    BlockDriverState *bs = blk_bs(dst);
    BlockDriverState *file = bs && bs->file ? bs->file->bs : NULL;
    ImgCopyOffload *c;
    int64_t len, flen;

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
    close(c->dst_fd);
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

int coroutine_fn img_copy_offload(ImgCopyOffload *c, BlockDriverState *file, int64_t map,
                                  int64_t off, int64_t n)
{
    OffloadJob j = { .out_fd = c->dst_fd, .in_off = map, .out_off = off, .len = n };

    if (!is_file_node(file) || map < 0 || (j.in_fd = source_fd(c, file)) < 0) {
        return -ENOTSUP;
    }
    return (int)thread_pool_co_run(c->ctx, offload_work, &j);
}
