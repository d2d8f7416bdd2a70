/*
 * The "host_device" protocol driver: a host block device, with its size,
 * sector sizes and transfer limit from the kernel, discard and
 * write-zeroes through fallocate(2) on the device or the BLKDISCARD /
 * BLKZEROOUT ioctls. Reads and writes are the file driver's (file-int.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "drivers/drivers.h"
#include "file-int.h"

/* One BLKZEROOUT or BLKDISCARD call, run on the thread pool. */
typedef struct HdevIoctl {
    int fd;
    unsigned long request;
    uint64_t range[2];
} HdevIoctl;

static int64_t hdev_ioctl_work(void *opaque)
{
    HdevIoctl *r = opaque;

    return ioctl(r->fd, r->request, r->range) < 0 ? -errno : 0;
}

static int coroutine_fn hdev_co_ioctl(BlockDriverState *bs, unsigned long request,
                                      int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;
    HdevIoctl r = {
        .fd = s->fd,
        .request = request,
        .range = { (uint64_t)offset, (uint64_t)bytes },
    };
    int ret = (int)thread_pool_co_run(aio_context_current(), hdev_ioctl_work, &r);

    return ret == -EOPNOTSUPP || ret == -ENOTTY ? -ENOTSUP : ret;
}

int coroutine_fn hdev_co_zeroout(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return hdev_co_ioctl(bs, BLKZEROOUT, offset, bytes);
}

int coroutine_fn hdev_co_discard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return hdev_co_ioctl(bs, BLKDISCARD, offset, bytes);
}

/* max_sectors_kb of the device's queue, in bytes; 0 if unknown. */
static int64_t hdev_max_transfer(int fd)
{
    struct stat st;
    char path[128];
    long long kb = 0;
    FILE *f;

    if (fstat(fd, &st) < 0) {
        return 0;
    }
    snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/queue/max_sectors_kb",
             major(st.st_rdev), minor(st.st_rdev));
    f = fopen(path, "re");
    if (!f) {
        return 0;
    }
    if (fscanf(f, "%lld", &kb) != 1 || kb <= 0 || kb > INT32_MAX) {
        kb = 0;
    }
    fclose(f);
    return kb * 1024;
}

void hdev_probe_limits(BDRVFileState *s)
{
    int logical = 0;
    unsigned int physical = 0;

    if (ioctl(s->fd, BLKSSZGET, &logical) == 0 && logical >= 512 &&
        (logical & (logical - 1)) == 0) {
        s->dev_sector = (uint32_t)logical;
    }
    if (ioctl(s->fd, BLKPBSZGET, &physical) == 0) {
        s->phys_block = physical;
    }
    s->max_transfer = hdev_max_transfer(s->fd);
    if (s->max_transfer & (s->max_transfer - 1)) {
        s->max_transfer = 0;
    }
}

static int hdev_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    return file_open_common(bs, options, flags, true, errp);
}

/* A device cannot change size: only a no-op "truncate" succeeds. */
static int coroutine_fn hdev_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                         PreallocMode prealloc, BdrvRequestFlags flags,
                                         Error **errp)
{
    BDRVFileState *s = bs->opaque;
    int64_t len = file_fd_getlength(s->fd);

    if (len < 0) {
        error_setg_errno(errp, (int)len, "Could not get the size of '%s'", bs->filename);
        return (int)len;
    }
    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "host_device: preallocation is not supported for '%s'",
                   bs->filename);
        return -ENOTSUP;
    }
    if (offset > len) {
        error_setg(errp, "Cannot grow device '%s' from %lld to %lld bytes", bs->filename,
                   (long long)len, (long long)offset);
        return -EINVAL;
    }
    if (exact && offset != len) {
        error_setg(errp, "Cannot resize device '%s' to %lld bytes", bs->filename,
                   (long long)offset);
        return -ENOTSUP;
    }
    return 0;
}

const BlockDriver bdrv_host_device = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "host_device",
    .protocol_name = "host_device",
    .instance_size = sizeof(BDRVFileState),
    .is_protocol = true,
    .option_names = file_option_names,
    .bdrv_open = hdev_open,
    .bdrv_close = file_close,
    .refresh_limits = file_refresh_limits,
    .co_preadv = file_co_preadv,
    .co_pwritev = file_co_pwritev,
    .co_pwrite_zeroes = file_co_pwrite_zeroes,
    .co_pdiscard = file_co_pdiscard,
    .co_flush_to_disk = file_co_flush_to_disk,
    .co_block_status = file_co_block_status,
    .co_truncate = hdev_co_truncate,
    .co_getlength = file_co_getlength,
    .co_get_allocated_file_size = file_co_get_allocated_file_size,
    .attach_aio_context = file_attach_aio_context,
    .detach_aio_context = file_detach_aio_context,
    .reopen_prepare = file_reopen_prepare,
    .reopen_commit = file_reopen_commit,
    .reopen_abort = file_reopen_abort,
};
