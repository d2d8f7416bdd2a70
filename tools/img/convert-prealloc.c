/*
 * coblk-img convert into a new raw image on an ext4 or XFS file: the ranges
 * the copy will write are preallocated (fallocate(2) mode 0 with
 * FALLOC_FL_KEEP_SIZE: unwritten extents) ahead of the writes.
 *
 * Why: buffered writes to one file run one after the other (the inode lock;
 * io_uring hands them all to one kernel worker), and that writer is what a
 * convert into a file waits for. Into a hole, ext4 spends about a third of
 * the writer's time on delayed allocation, block by block; into unwritten
 * extents it only maps them. fallocate allocates whole extents at once, on
 * another thread, before the writer gets there. (Measured with a plain
 * pwrite loop of the benchmark's 1,900 extents, 1 GiB: the writer's system
 * time went from ~0.39 s to ~0.29 s, and all the fallocate calls together
 * took ~10 ms.) tmpfs zero-fills the pages it preallocates (~130 ms per GiB),
 * so it and other filesystems are left alone.
 *
 * Mode 0 fallocate never changes what the file reads (only holes get
 * extents, and unwritten extents read as zeroes), so it may run in any order
 * with the writes: ahead of them it saves work, behind them it costs a
 * little. Only data ranges are preallocated, so the target stays sparse
 * where the source is; zero pieces inside data that the copy leaves out
 * (-S) are punched again (img_prealloc_unmap). A target that has space
 * allocated already (-o preallocation=falloc) is left as it is. Any failure (EOPNOTSUPP,
 * ENOSPC, ...) just stops preallocating: the writes report real errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include <coblk/aio-io.h>
#include <coblk/block-driver.h>
#include <coblk/coroutine.h>

#include "img.h"

#define PREALLOC_EXT4_MAGIC 0xEF53
#define PREALLOC_XFS_MAGIC 0x58465342
/*
 * Big batches: the walker runs on the loop thread between reads, so each job's
 * hand-off back takes a while; with 64 ranges / 16 MiB per job the calls were
 * spread over the whole copy and fallocate spun on the inode lock against the
 * writer (perf: 4% of the samples in rwsem_spin_on_owner, CPU 0.63 s against
 * 0.55 s with these sizes, 1 GiB of data).
 */
#define PREALLOC_BATCH 1024                 /* ranges per thread-pool job */
#define PREALLOC_BATCH_BYTES (256LL << 20)  /* or this much data, whichever first */

struct ImgPrealloc {
    AioContext *ctx;
    int fd;
    bool stopped;           /* a fallocate failed, or the walk ended */
    int64_t done;           /* every range below this was preallocated (or never will be) */
    CoQueue waiters;        /* img_prealloc_unmap() waiting for done to pass its range */
    int n;
    int64_t bytes;
    int64_t off[PREALLOC_BATCH], len[PREALLOC_BATCH];
};

/* A thread-pool job: the batch's ranges in order; 0 or the first -errno. */
typedef struct PreallocJob {
    int fd;
    int mode;
    int n;
    const int64_t *off, *len;
} PreallocJob;

/*
 * ext4 or XFS, and nothing allocated yet but the first block a new file gets
 * (file_allocate_first_block, as qemu-img): the holes img_prealloc_unmap()
 * punches must not take space that -o preallocation=falloc/full asked for.
 */
static bool prealloc_file_ok(int fd)
{
    struct statfs sfs;
    struct stat st;

    return fstatfs(fd, &sfs) == 0 &&
           (sfs.f_type == PREALLOC_EXT4_MAGIC || sfs.f_type == PREALLOC_XFS_MAGIC) &&
           fstat(fd, &st) == 0 && st.st_blocks * 512 <= 4096;
}

ImgPrealloc *img_prealloc_new(BlockBackend *dst)
{
    BlockDriverState *bs = blk_bs(dst);
    BlockDriverState *file = bs && bs->file ? bs->file->bs : NULL;
    ImgPrealloc *p;
    int64_t len, flen;

    /* A raw node whose length is the file's: no window, guest offset = file offset. */
    if (!bs || strcmp(bdrv_get_format_name(bs), "raw") != 0 || !file || !file->drv ||
        strcmp(file->drv->format_name, "file") != 0 || !file->filename[0]) {
        return NULL;
    }
    len = blk_getlength(dst);
    flen = bdrv_getlength(file);
    if (len < 0 || len != flen) {
        return NULL;
    }
    p = calloc(1, sizeof(*p));
    if (!p) {
        return NULL;
    }
    p->fd = open(file->filename, O_WRONLY | O_CLOEXEC);
    if (p->fd < 0 || !prealloc_file_ok(p->fd)) {
        img_prealloc_free(p);
        return NULL;
    }
    p->ctx = blk_get_aio_context(dst);
    co_queue_init(&p->waiters);
    return p;
}

void img_prealloc_free(ImgPrealloc *p)
{
    if (!p) {
        return;
    }
    if (p->fd >= 0) {
        close(p->fd);
    }
    free(p);
}

static int64_t prealloc_work(void *opaque)
{
    PreallocJob *j = opaque;

    for (int i = 0; i < j->n; i++) {
        int r;

        do {
            r = fallocate(j->fd, j->mode, j->off[i], j->len[i]);
        } while (r < 0 && errno == EINTR);
        if (r < 0) {
            return -errno;
        }
    }
    return 0;
}

/* Preallocates the pending ranges; everything below upto is then done. */
static void coroutine_fn prealloc_run(ImgPrealloc *p, int64_t upto)
{
    PreallocJob j = { .fd = p->fd, .mode = FALLOC_FL_KEEP_SIZE, .n = p->n, .off = p->off,
                      .len = p->len };

    if (p->n > 0 && !p->stopped && thread_pool_co_run(p->ctx, prealloc_work, &j) < 0) {
        p->stopped = true;      /* the writes go on without it */
    }
    p->n = 0;
    p->bytes = 0;
    p->done = upto > p->done ? upto : p->done;
    co_queue_restart_all(&p->waiters);
}

void coroutine_fn img_prealloc_add(ImgPrealloc *p, int64_t off, int64_t n)
{
    if (p->stopped) {
        return;
    }
    if (p->n > 0 && p->off[p->n - 1] + p->len[p->n - 1] == off) {
        p->len[p->n - 1] += n;
    } else {
        p->off[p->n] = off;
        p->len[p->n++] = n;
    }
    p->bytes += n;
    if (p->n == PREALLOC_BATCH || p->bytes >= PREALLOC_BATCH_BYTES) {
        prealloc_run(p, off + n);
    }
}

void coroutine_fn img_prealloc_end(ImgPrealloc *p)
{
    prealloc_run(p, INT64_MAX);
    p->stopped = true;
}

/*
 * The hole is punched here, not through the block layer: a target opened
 * without discard=unmap ignores discards, and these bytes were never
 * written (punching a part of a block writes zeroes over zeroes).
 */
int coroutine_fn img_prealloc_unmap(ImgPrealloc *p, int64_t off, int64_t n)
{
    PreallocJob j = { .fd = p->fd, .mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, .n = 1,
                      .off = &off, .len = &n };
    int ret;

    /* A hole punched before the range is preallocated would be filled again. */
    while (p->done < off + n) {
        co_queue_wait(&p->waiters, NULL);
    }
    ret = (int)thread_pool_co_run(p->ctx, prealloc_work, &j);
    /* The range reads as zeroes either way; only its space stays allocated. */
    return ret == -EOPNOTSUPP || ret == -ENOTSUP ? 0 : ret;
}
