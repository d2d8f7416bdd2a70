/*
 * The "file" protocol driver: an image in a host file, read and written
 * through the AioContext's I/O engine (io_uring, native AIO or threads).
 *
 * Also the open/I/O helpers the "host_device" driver (host-device.c)
 * shares; see file-int.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/uio.h>
#include <unistd.h>

#include "block/image-meta.h"
#include "drivers/drivers.h"
#include "file-int.h"

/* Largest O_DIRECT alignment probed; also the fallback when probing says nothing. */
#define FILE_MAX_ALIGN 4096
/* Requests with at most this many iovecs slice onto the coroutine stack. */
#define FILE_LOCAL_IOV 64
/* Chunk of zeroes written by preallocation=full. */
#define FILE_ZERO_CHUNK (1024 * 1024)

const char *const file_option_names[] = {
    "filename", "aio", "locking", "aio-max-batch", NULL,
};

/* aio= values, indexed by AioEngineType ("auto" is not an option value). */
static const char *const file_aio_names[] = {
    [AIO_ENGINE_AUTO] = NULL,
    [AIO_ENGINE_IO_URING] = "io_uring",
    [AIO_ENGINE_NATIVE] = "native",
    [AIO_ENGINE_THREADS] = "threads",
};

enum { FILE_LOCKING_AUTO, FILE_LOCKING_ON, FILE_LOCKING_OFF };
static const char *const file_locking_names[] = { "auto", "on", "off" };

static const char *const file_prealloc_names[] = {
    [PREALLOC_MODE_OFF] = "off",
    [PREALLOC_MODE_METADATA] = "metadata",
    [PREALLOC_MODE_FALLOC] = "falloc",
    [PREALLOC_MODE_FULL] = "full",
};

/* ---------------------------------------------------------------------- */
/* Helpers */

int64_t file_fd_getlength(int fd)
{
    struct stat st;

    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t size;

        if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
            return -errno;
        }
        return (int64_t)size;
    }
    if (S_ISREG(st.st_mode)) {
        return st.st_size;
    }
    off_t end = lseek(fd, 0, SEEK_END);

    return end < 0 ? -errno : end;
}

/* O_* flags for an open with BDRV_O_* flags. */
static int file_oflags(int bdrv_flags)
{
    int oflags = O_CLOEXEC;

    oflags |= (bdrv_flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY;
    if (bdrv_flags & BDRV_O_NOCACHE) {
        oflags |= O_DIRECT;
    }
    return oflags;
}

/* The context whose engine bs uses. */
static AioContext *file_ctx(BlockDriverState *bs)
{
    return bs->aio_context ? bs->aio_context : aio_context_current();
}

/* True if a read of len bytes into buf at offset 0 passes O_DIRECT's checks. */
static bool file_dio_ok(int fd, void *buf, size_t len)
{
    ssize_t ret;

    do {
        ret = pread(fd, buf, len, 0);
    } while (ret < 0 && errno == EINTR);
    return ret >= 0;
}

/* Largest alignment taken from statx; beyond it the probe decides. */
#define FILE_STATX_MAX_ALIGN (1024 * 1024)

/*
 * The O_DIRECT alignments the kernel reports (statx STATX_DIOALIGN, Linux
 * 6.1, for ext4, xfs, f2fs and block devices): true if it reported usable
 * ones. Probing by reads alone is unreliable where a read of a hole skips
 * the checks (xfs), hence the first block a new file gets (file_resize_work).
 */
static bool file_statx_alignment(BDRVFileState *s)
{
#ifdef STATX_DIOALIGN
    struct statx st;
    uint32_t req, mem;

    if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) < 0 ||
        !(st.stx_mask & STATX_DIOALIGN)) {
        return false;
    }
    req = st.stx_dio_offset_align;
    mem = st.stx_dio_mem_align;
    if (req == 0 || mem == 0 || req > FILE_STATX_MAX_ALIGN || mem > FILE_STATX_MAX_ALIGN ||
        (req & (req - 1)) || (mem & (mem - 1))) {
        return false; /* no O_DIRECT here, or values we do not trust: probe */
    }
    s->req_align = req > s->dev_sector ? req : s->dev_sector;
    s->mem_align = mem;
    return true;
#else
    (void)s;
    return false;
#endif
}

/*
 * Finds the request and buffer alignment an O_DIRECT fd needs: from statx
 * where the kernel tells it, else by trying reads of 512..4096 bytes (a
 * device says it with BLKSSZGET). A file shorter than the largest probe may
 * answer every read with EOF, so it gets the safe maximum.
 */
static void file_probe_alignment(BDRVFileState *s)
{
    uint8_t *buf;
    int64_t len;

    s->req_align = 1;
    s->mem_align = 1;
    if (!(s->open_flags & O_DIRECT) || file_statx_alignment(s)) {
        return;
    }
    s->req_align = FILE_MAX_ALIGN;
    s->mem_align = FILE_MAX_ALIGN;
    len = file_fd_getlength(s->fd);
    if (len < FILE_MAX_ALIGN || posix_memalign((void **)&buf, FILE_MAX_ALIGN,
                                               2 * FILE_MAX_ALIGN) != 0) {
        return;
    }
    for (uint32_t a = 512; a <= FILE_MAX_ALIGN && !s->dev_sector; a *= 2) {
        if (file_dio_ok(s->fd, buf, a)) {
            s->req_align = a;
            break;
        }
    }
    if (s->dev_sector) {
        s->req_align = s->dev_sector;
    }
    for (uint32_t a = 512; a <= FILE_MAX_ALIGN && s->req_align <= FILE_MAX_ALIGN; a *= 2) {
        if (file_dio_ok(s->fd, buf + a, s->req_align)) {
            s->mem_align = a;
            break;
        }
    }
    free(buf);
}

/* True if every iovec's address and length suit an O_DIRECT fd. */
static bool file_iov_aligned(const BDRVFileState *s, const struct iovec *iov, int niov)
{
    uintptr_t mask = s->mem_align - 1;

    if (s->mem_align <= 1) {
        return true;
    }
    for (int i = 0; i < niov; i++) {
        if (((uintptr_t)iov[i].iov_base | iov[i].iov_len) & mask) {
            return false;
        }
    }
    return true;
}

/* Copies iov minus its first skip bytes into out (room for niov entries); returns count. */
static int file_iov_skip(const struct iovec *iov, int niov, size_t skip, struct iovec *out)
{
    int n = 0;

    for (int i = 0; i < niov; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        out[n].iov_base = (uint8_t *)iov[i].iov_base + skip;
        out[n].iov_len = iov[i].iov_len - skip;
        skip = 0;
        n++;
    }
    return n;
}

/* Zeroes the bytes of iov from skip on. */
static void file_iov_zero_from(const struct iovec *iov, int niov, size_t skip)
{
    for (int i = 0; i < niov; i++) {
        if (skip >= iov[i].iov_len) {
            skip -= iov[i].iov_len;
            continue;
        }
        memset((uint8_t *)iov[i].iov_base + skip, 0, iov[i].iov_len - skip);
        skip = 0;
    }
}

/* ---------------------------------------------------------------------- */
/* Reads and writes */

/* Decides whether buffered reads may be tried inline (see file_read_nowait). */
static void file_set_inline_reads(BDRVFileState *s)
{
    struct statfs sfs;
    struct stat st;

    s->try_nowait = fstat(s->fd, &st) == 0 && S_ISREG(st.st_mode) &&
                    !(s->open_flags & O_DIRECT);
    s->memfs = s->try_nowait && fstatfs(s->fd, &sfs) == 0 &&
               (sfs.f_type == TMPFS_MAGIC || sfs.f_type == RAMFS_MAGIC);
}

/*
 * Reads what the page cache already holds, without blocking and without
 * going through the engine. Returns the bytes read (0 when the data is not
 * cached); turns itself off where the kernel or filesystem lacks RWF_NOWAIT.
 */
static int64_t file_read_nowait(BDRVFileState *s, const struct iovec *iov, int niov,
                                int64_t offset)
{
    /*
     * tmpfs refuses RWF_NOWAIT, yet its pages are memory: a plain read does
     * not wait for a device, while handing it to io_uring would punt it to a
     * kernel worker thread (5-50x slower).
     */
    ssize_t ret = s->memfs ? preadv(s->fd, iov, niov, offset)
                           : preadv2(s->fd, iov, niov, offset, RWF_NOWAIT);

    if (ret >= 0) {
        return ret;
    }
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
        s->try_nowait = false;
    }
    return 0;
}

/*
 * Transfers all bytes of iov at offset through the engine, retrying short
 * transfers. A read that hits EOF zero-fills the rest (for O_DIRECT a short
 * read ending off the alignment is EOF too); a write that makes no progress
 * is -ENOSPC.
 */
static int coroutine_fn file_co_rw_full(BDRVFileState *s, bool write, int64_t offset,
                                        struct iovec *iov, int niov, int64_t bytes, int rwf)
{
    struct iovec *rest = NULL;
    int64_t done = 0;
    int ret = 0;

    if (!write && s->try_nowait) {
        done = file_read_nowait(s, iov, niov, offset);
    }
    while (done < bytes) {
        struct iovec *cur = iov;
        int cur_n = niov;
        int64_t r;

        if (done > 0) {
            if (!rest) {
                rest = malloc(sizeof(*rest) * (size_t)niov);
                if (!rest) {
                    ret = -ENOMEM;
                    break;
                }
            }
            cur_n = file_iov_skip(iov, niov, (size_t)done, rest);
            cur = rest;
        }
        r = write ? aio_co_pwritev2(s->engine, s->fd, offset + done, cur, cur_n, rwf)
                  : aio_co_preadv(s->engine, s->fd, offset + done, cur, cur_n);
        if (r < 0) {
            ret = (int)r;
            break;
        }
        if (r == 0 && write) {
            ret = -ENOSPC;
            break;
        }
        done += r;
        if (!write && (r == 0 || ((offset + done) & (s->req_align - 1)))) {
            file_iov_zero_from(iov, niov, (size_t)done);
            break;
        }
    }
    free(rest);
    return ret;
}

/* As file_co_rw_full() through an aligned bounce buffer (O_DIRECT, unaligned memory). */
static int coroutine_fn file_co_rw_bounce(BDRVFileState *s, bool write, int64_t offset,
                                          IOVector *qiov, size_t qiov_offset, int64_t bytes,
                                          int rwf)
{
    struct iovec one;
    void *buf;
    int ret;

    if (posix_memalign(&buf, s->mem_align > 512 ? s->mem_align : 512, (size_t)bytes) != 0) {
        return -ENOMEM;
    }
    one.iov_base = buf;
    one.iov_len = (size_t)bytes;
    if (write) {
        iovector_to_buf(qiov, qiov_offset, buf, (size_t)bytes);
    }
    ret = file_co_rw_full(s, write, offset, &one, 1, bytes, rwf);
    if (!write && ret == 0) {
        iovector_from_buf(qiov, qiov_offset, buf, (size_t)bytes);
    }
    free(buf);
    return ret;
}

/* Slices [qiov_offset, +bytes) of qiov into local (or a heap array); returns count or -errno. */
static int file_iov_slice(IOVector *qiov, size_t qiov_offset, int64_t bytes,
                          struct iovec *local, struct iovec **out)
{
    struct iovec *arr = local;
    size_t skip = qiov_offset;
    size_t left = (size_t)bytes;
    int n = 0;

    if (qiov_offset == 0 && (size_t)bytes == qiov->size) {
        *out = qiov->iov;
        return qiov->niov;
    }
    if (qiov->niov > FILE_LOCAL_IOV) {
        arr = malloc(sizeof(*arr) * (size_t)qiov->niov);
        if (!arr) {
            return -ENOMEM;
        }
    }
    for (int i = 0; i < qiov->niov && left > 0; i++) {
        size_t len = qiov->iov[i].iov_len;

        if (skip >= len) {
            skip -= len;
            continue;
        }
        len -= skip;
        if (len > left) {
            len = left;
        }
        arr[n].iov_base = (uint8_t *)qiov->iov[i].iov_base + skip;
        arr[n].iov_len = len;
        left -= len;
        skip = 0;
        n++;
    }
    *out = arr;
    return n;
}

/* Reads or writes (with pwritev2 flags rwf) [offset, +bytes) from qiov at qiov_offset. */
static int coroutine_fn file_co_rw(BlockDriverState *bs, bool write, int64_t offset,
                                   int64_t bytes, IOVector *qiov, size_t qiov_offset, int rwf)
{
    BDRVFileState *s = bs->opaque;
    struct iovec local[FILE_LOCAL_IOV];
    struct iovec *iov;
    int niov, ret;

    niov = file_iov_slice(qiov, qiov_offset, bytes, local, &iov);
    if (niov < 0) {
        return niov;
    }
    if (!file_iov_aligned(s, iov, niov)) {
        ret = file_co_rw_bounce(s, write, offset, qiov, qiov_offset, bytes, rwf);
    } else {
        ret = file_co_rw_full(s, write, offset, iov, niov, bytes, rwf);
    }
    if (iov != local && iov != qiov->iov) {
        free(iov);
    }
    return ret;
}

int coroutine_fn file_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    return file_co_rw(bs, false, offset, bytes, qiov, qiov_offset, 0);
}

/*
 * A FUA write: one pwritev2(RWF_DSYNC), which makes the written range (and
 * the metadata needed to read it back) durable before it completes, and
 * nothing else: the other dirty pages of the file stay in the page cache, where
 * an emulated FUA (write + fdatasync) would write them all back.
 * A kernel or file system that refuses the flag answers -EOPNOTSUPP (or
 * -EINVAL) without writing; the write is then done plainly and followed by
 * fdatasync, and the node stops advertising BDRV_REQ_FUA so that the block
 * layer emulates it from then on. An -EINVAL that the plain write repeats
 * is the write's own error, returned as it is.
 */
static int coroutine_fn file_co_pwritev_fua(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, IOVector *qiov, size_t qiov_offset)
{
    BDRVFileState *s = bs->opaque;
    int ret = file_co_rw(bs, true, offset, bytes, qiov, qiov_offset, RWF_DSYNC);

    if (ret != -EOPNOTSUPP && ret != -EINVAL) {
        return ret;
    }
    ret = file_co_rw(bs, true, offset, bytes, qiov, qiov_offset, 0);
    if (ret < 0) {
        return ret;
    }
    bs->supported_write_flags &= ~(unsigned)BDRV_REQ_FUA;
    return aio_co_fdatasync(s->engine, s->fd);
}

int coroutine_fn file_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    int ret;

    /* cache.no-flush: the node never syncs, so FUA is dropped as a flush would be. */
    if (!(flags & BDRV_REQ_FUA) || (bs->open_flags & BDRV_O_NO_FLUSH)) {
        return file_co_rw(bs, true, offset, bytes, qiov, qiov_offset, 0);
    }
    if (bs->supported_write_flags & BDRV_REQ_FUA) {
        return file_co_pwritev_fua(bs, offset, bytes, qiov, qiov_offset);
    }
    /*
     * FUA was refused while this request was under way (a later piece of a
     * split request, or one issued before): honour it here, as the block layer
     * decided not to emulate it.
     */
    ret = file_co_rw(bs, true, offset, bytes, qiov, qiov_offset, 0);
    return ret < 0 ? ret : aio_co_fdatasync(s->engine, s->fd);
}

/* ---------------------------------------------------------------------- */
/* Zeroes, discard, flush */

static bool file_refused(int ret)
{
    return ret == -EOPNOTSUPP || ret == -ENOTSUP || ret == -ENOSYS;
}

/* Punches a hole (reads as zeroes afterwards). -ENOTSUP if the storage refuses. */
static int coroutine_fn file_co_punch(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;
    int ret;

    if (!s->has_discard) {
        return -ENOTSUP;
    }
    ret = aio_co_fallocate(s->engine, s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                           offset, bytes);
    if (file_refused(ret)) {
        s->has_discard = false;
        return -ENOTSUP;
    }
    return ret;
}

/* MAY_UNMAP zeroes as a hole, for a regular file only inside its current size. */
static bool file_may_punch(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;

    if (!s->has_discard) {
        return false;
    }
    if (s->is_device) {
        return true;
    }
    int64_t len = file_fd_getlength(s->fd);

    return len >= 0 && offset + bytes <= len;
}

int coroutine_fn file_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       BdrvRequestFlags flags)
{
    BDRVFileState *s = bs->opaque;
    int mode = FALLOC_FL_ZERO_RANGE;
    int ret;

    if ((flags & BDRV_REQ_MAY_UNMAP) && file_may_punch(bs, offset, bytes)) {
        if (file_co_punch(bs, offset, bytes) == 0) {
            return 0;
        }
    }
    if (s->has_write_zeroes) {
        if (s->is_device) {
            mode |= FALLOC_FL_KEEP_SIZE;
        }
        ret = aio_co_fallocate(s->engine, s->fd, mode, offset, bytes);
        if (!file_refused(ret) && !(s->is_device && ret == -EINVAL)) {
            return ret;
        }
        s->has_write_zeroes = false;
    }
    return s->is_device ? hdev_co_zeroout(bs, offset, bytes) : -ENOTSUP;
}

int coroutine_fn file_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVFileState *s = bs->opaque;
    int ret = file_co_punch(bs, offset, bytes);

    if (ret == -ENOTSUP && s->is_device) {
        return hdev_co_discard(bs, offset, bytes);
    }
    return ret;
}

int coroutine_fn file_co_flush_to_disk(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    return aio_co_fdatasync(s->engine, s->fd);
}

/* ---------------------------------------------------------------------- */
/* Block status and sizes */

/* Rounds a data/hole boundary at offset + *pnum to the request alignment. */
static void file_align_pnum(BDRVFileState *s, int64_t offset, int64_t bytes, int64_t *pnum,
                            int *ret)
{
    int64_t a = s->req_align;
    int64_t end = offset + *pnum;

    if (a <= 1 || *pnum >= bytes || (end % a) == 0) {
        return;
    }
    if (*ret & BDRV_BLOCK_DATA || end - end % a <= offset) {
        /* Data wins a partially filled block. */
        *pnum = end - end % a + a - offset;
        if (*pnum > bytes) {
            *pnum = bytes;
        }
        *ret = (*ret & ~BDRV_BLOCK_ZERO) | BDRV_BLOCK_DATA;
    } else {
        *pnum = end - end % a - offset;
    }
}

int coroutine_fn file_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                      int64_t bytes, int64_t *pnum, int64_t *map,
                                      BlockDriverState **file)
{
    BDRVFileState *s = bs->opaque;
    int ret = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    off_t data, hole;

    *map = offset;
    *file = bs;
    *pnum = bytes;
    if (!want_zero || s->is_device) {
        return ret;
    }
    data = lseek(s->fd, offset, SEEK_DATA);
    if (data < 0) {
        /* ENXIO: a hole up to EOF, or offset at/after EOF. Else: no SEEK_DATA here. */
        return errno == ENXIO ? (BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID) : ret;
    }
    if (data > offset) {
        *pnum = data - offset < bytes ? data - offset : bytes;
        ret = BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
    } else {
        hole = lseek(s->fd, offset, SEEK_HOLE);
        if (hole > offset && hole - offset < bytes) {
            *pnum = hole - offset;
        }
    }
    file_align_pnum(s, offset, bytes, pnum, &ret);
    return ret;
}

int64_t coroutine_fn file_co_getlength(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    return file_fd_getlength(s->fd);
}

int64_t coroutine_fn file_co_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return (int64_t)st.st_blocks * 512;
}

/* ---------------------------------------------------------------------- */
/* Truncate and create */

/* A resize, run on the thread pool because it may write gigabytes. */
typedef struct FileResize {
    int fd;
    int64_t old_len;
    int64_t new_len;
    PreallocMode prealloc;
} FileResize;

/* Writes zeroes to [from, to) with plain pwrite on a buffered descriptor of r->fd. */
static int file_fill_zeroes(const FileResize *r)
{
    char path[64];
    void *buf;
    int fd, ret = 0;

    snprintf(path, sizeof(path), "/proc/self/fd/%d", r->fd);
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    buf = calloc(1, FILE_ZERO_CHUNK);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    for (int64_t pos = r->old_len; pos < r->new_len && ret == 0;) {
        int64_t n = r->new_len - pos < FILE_ZERO_CHUNK ? r->new_len - pos : FILE_ZERO_CHUNK;
        ssize_t w = pwrite(fd, buf, (size_t)n, pos);

        if (w < 0 && errno != EINTR) {
            ret = -errno;
        } else if (w > 0) {
            pos += w;
        }
    }
    free(buf);
    close(fd);
    return ret;
}

/*
 * A file grown from empty without preallocation gets its first block
 * written (zeroes, up to 4 KiB), as qemu-img does: the O_DIRECT alignment
 * probe then reads allocated data on every file system, and `map` of a new
 * image matches qemu-img's. Best effort: a failure changes nothing else.
 */
static void file_allocate_first_block(int fd, int64_t len)
{
    static const uint8_t zeroes[4096] __attribute__((aligned(4096)));
    size_t n = len < (int64_t)sizeof(zeroes) ? (size_t)len : sizeof(zeroes);
    ssize_t w;

    do {
        w = pwrite(fd, zeroes, n, 0);
    } while (w < 0 && errno == EINTR);
}

static int64_t file_resize_work(void *opaque)
{
    const FileResize *r = opaque;
    int ret = 0;

    switch (r->prealloc) {
    case PREALLOC_MODE_FALLOC:
        ret = posix_fallocate(r->fd, r->old_len, r->new_len - r->old_len);
        return -ret;
    case PREALLOC_MODE_FULL:
        if (ftruncate(r->fd, r->new_len) < 0) {
            return -errno;
        }
        ret = file_fill_zeroes(r);
        if (ret < 0 && ftruncate(r->fd, r->old_len) < 0) {
            /* The original error is the one to report. */
        }
        return ret;
    default:
        if (ftruncate(r->fd, r->new_len) < 0) {
            return -errno;
        }
        if (r->old_len == 0) {
            file_allocate_first_block(r->fd, r->new_len);
        }
        return 0;
    }
}

/* Resizes fd from old_len to new_len with prealloc; errp names filename. */
static int coroutine_fn file_co_resize(int fd, int64_t old_len, int64_t new_len,
                                       PreallocMode prealloc, const char *filename,
                                       Error **errp)
{
    FileResize r = { .fd = fd, .old_len = old_len, .new_len = new_len, .prealloc = prealloc };
    int ret;

    if (prealloc == PREALLOC_MODE_METADATA) {
        error_setg(errp, "Unsupported preallocation mode 'metadata' for '%s'", filename);
        return -ENOTSUP;
    }
    if (new_len < old_len && prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "Cannot use preallocation mode '%s' to shrink '%s'",
                   file_prealloc_names[prealloc], filename);
        return -ENOTSUP;
    }
    if (new_len == old_len) {
        return 0;
    }
    if (new_len < old_len) {
        r.prealloc = PREALLOC_MODE_OFF;
    }
    ret = (int)thread_pool_co_run(aio_context_current(), file_resize_work, &r);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not resize '%s' to %lld bytes", filename,
                         (long long)new_len);
    }
    return ret;
}

static int coroutine_fn file_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                         PreallocMode prealloc, BdrvRequestFlags flags,
                                         Error **errp)
{
    BDRVFileState *s = bs->opaque;
    int64_t len = file_fd_getlength(s->fd);

    if (len < 0) {
        error_setg_errno(errp, (int)len, "Could not get the size of '%s'", bs->filename);
        return (int)len;
    }
    if (!exact && offset <= len) {
        return 0;
    }
    return file_co_resize(s->fd, len, offset, prealloc, bs->filename, errp);
}

/* Asks for no copy-on-write (btrfs); best effort, as QEMU's nocow. */
static void file_set_nocow(int fd)
{
    int attr;

    if (ioctl(fd, FS_IOC_GETFLAGS, &attr) == 0) {
        attr |= FS_NOCOW_FL;
        (void)ioctl(fd, FS_IOC_SETFLAGS, &attr);
    }
}

/* Takes the create options: size, preallocation, nocow. */
static int file_create_take_opts(BlockOpts *options, int64_t *size, PreallocMode *prealloc,
                                 bool *nocow, Error **errp)
{
    uint64_t usize;
    int mode;

    if (bopts_take_size(options, "size", 0, &usize, errp) < 0 ||
        bopts_take_enum(options, "preallocation", file_prealloc_names, 4, PREALLOC_MODE_OFF,
                        &mode, errp) < 0 ||
        bopts_take_bool(options, "nocow", false, nocow, errp) < 0) {
        return -EINVAL;
    }
    if (usize > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "file: size %llu exceeds the maximum %lld",
                   (unsigned long long)usize, (long long)BDRV_MAX_LENGTH);
        return -EINVAL;
    }
    *size = (int64_t)usize;
    *prealloc = (PreallocMode)mode;
    return bopts_check_empty(options, "file", errp);
}

/*
 * Makes a new file durable before create returns: its size and preallocated
 * blocks (fsync), and its name (fsync of the directory). Without this, an image
 * that is created and then only read, or whose first writes are not flushed,
 * can vanish in a crash, and a flush of a node that wrote nothing is skipped.
 */
static int file_create_sync(int fd, const char *filename, Error **errp)
{
    struct stat st;
    int ret;

    if (fsync(fd) < 0 && errno != EINVAL && errno != EROFS) {
        ret = -errno;
        error_setg_errno(errp, ret, "Could not sync the new file '%s'", filename);
        return ret;
    }
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        return 0;
    }
    ret = coblk_sync_dir_of(filename);
    if (ret < 0 && ret != -EINVAL && ret != -EROFS) {
        error_setg_errno(errp, ret, "Could not sync the directory of '%s'", filename);
        return ret;
    }
    return 0;
}

static int coroutine_fn file_co_create_opts(const BlockDriver *drv, const char *filename,
                                            BlockOpts *options, Error **errp)
{
    uint64_t perm, shared;
    PreallocMode prealloc;
    bool nocow, locked = false;
    int64_t size;
    int fd, ret;

    ret = file_create_take_opts(options, &size, &prealloc, &nocow, errp);
    if (ret < 0) {
        return ret;
    }
    fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        ret = -errno;
        error_setg_errno(errp, ret, "Could not create '%s'", filename);
        return ret;
    }
    if (nocow) {
        file_set_nocow(fd);
    }
    file_lock_perms(true, false, &perm, &shared);
    locked = file_lock_supported(fd);
    if (locked) {
        ret = file_lock_apply(fd, perm, shared, filename, errp);
        if (ret < 0) {
            goto out_close;
        }
    }
    if (ftruncate(fd, 0) < 0) {
        ret = -errno;
        error_setg_errno(errp, ret, "Could not clear '%s'", filename);
        goto out_close;
    }
    ret = file_co_resize(fd, 0, size, prealloc, filename, errp);
    if (ret == 0) {
        ret = file_create_sync(fd, filename, errp);
    }
out_close:
    if (locked) {
        file_lock_release(fd);
    }
    close(fd);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Open, close, contexts */

/* The engine the open flags ask for (inherited from the parent, or qemu-img's -i). */
static AioEngineType file_flags_engine(int flags)
{
    switch (flags & BDRV_O_AIO_MASK) {
    case BDRV_O_NATIVE_AIO:
        return AIO_ENGINE_NATIVE;
    case BDRV_O_IO_URING:
        return AIO_ENGINE_IO_URING;
    case BDRV_O_AIO_THREADS:
        return AIO_ENGINE_THREADS;
    default:
        return AIO_ENGINE_AUTO;
    }
}

/* Takes aio= (default: the engine in flags), locking= and aio-max-batch=. */
static int file_take_opts(BlockOpts *options, BDRVFileState *s, int flags, int *locking,
                          Error **errp)
{
    int aio, ret;
    int64_t batch;

    ret = bopts_take_enum(options, "aio", file_aio_names, 4, file_flags_engine(flags), &aio,
                          errp);
    if (ret < 0) {
        return ret;
    }
    s->aio_type = (AioEngineType)aio;
    ret = bopts_take_enum(options, "locking", file_locking_names, 3, FILE_LOCKING_AUTO,
                          locking, errp);
    if (ret < 0) {
        return ret;
    }
    ret = bopts_take_int64(options, "aio-max-batch", 0, &batch, errp);
    if (ret < 0) {
        return ret;
    }
    if (batch < 0) {
        error_setg(errp, "aio-max-batch %lld must not be negative", (long long)batch);
        return -EINVAL;
    }
    return 0;
}

/* Checks that fd is the kind of file the driver serves. */
static int file_check_type(BDRVFileState *s, const char *filename, Error **errp)
{
    struct stat st;

    if (fstat(s->fd, &st) < 0) {
        int ret = -errno;

        error_setg_errno(errp, ret, "Could not stat '%s'", filename);
        return ret;
    }
    if (S_ISDIR(st.st_mode)) {
        error_setg(errp, "'%s' is a directory", filename);
        return -EISDIR;
    }
    if (s->is_device && !S_ISBLK(st.st_mode)) {
        error_setg(errp, "host_device: '%s' is not a block device", filename);
        return -ENOTBLK;
    }
    s->is_device = S_ISBLK(st.st_mode);
    file_set_inline_reads(s);
    return 0;
}

/* Takes the image locks according to locking= and the open mode. */
static int file_setup_locks(BlockDriverState *bs, int locking, int flags, const char *filename,
                            Error **errp)
{
    BDRVFileState *s = bs->opaque;
    bool supported;

    if (locking == FILE_LOCKING_OFF) {
        return 0;
    }
    supported = file_lock_supported(s->fd);
    if (!supported) {
        if (locking == FILE_LOCKING_ON) {
            error_setg(errp, "locking=on: '%s' does not support OFD locks", filename);
            return -ENOTSUP;
        }
        return 0;
    }
    s->use_lock = true;
    file_lock_perms(flags & BDRV_O_RDWR, flags & BDRV_O_FORCE_SHARE, &s->perm, &s->shared);
    return file_lock_apply(s->lock_fd, s->perm, s->shared, filename, errp);
}

/* Opens the descriptor and checks its type. */
static int file_open_fd(BDRVFileState *s, const char *filename, int flags, Error **errp)
{
    int ret;

    s->open_flags = file_oflags(flags);
    s->fd = open(filename, s->open_flags);
    if (s->fd < 0) {
        ret = -errno;
        error_setg_errno(errp, ret, "Could not open '%s'", filename);
        return ret;
    }
    s->lock_fd = s->fd;
    return file_check_type(s, filename, errp);
}

int file_open_common(BlockDriverState *bs, BlockOpts *options, int flags, bool is_device,
                     Error **errp)
{
    BDRVFileState *s = bs->opaque;
    const char *who = is_device ? "host_device" : "file";
    char *filename = NULL;
    int locking, ret;

    s->fd = -1;
    s->lock_fd = -1;
    s->reopen_fd = -1;
    s->is_device = is_device;
    s->has_write_zeroes = true;
    s->has_discard = true;
    if (bs->read_only) {
        flags &= ~BDRV_O_RDWR;
    }
    ret = bopts_take_str(options, "filename", &filename, errp);
    if (ret == 0) {
        error_setg(errp, "%s: 'filename' is required", who);
        ret = -EINVAL;
    }
    if (ret < 0) {
        return ret;
    }
    ret = file_take_opts(options, s, flags, &locking, errp);
    if (ret < 0) {
        goto out;
    }
    if (s->aio_type == AIO_ENGINE_NATIVE && !(flags & BDRV_O_NOCACHE)) {
        error_setg(errp, "%s: aio=native requires cache.direct=on ('%s')", who, filename);
        ret = -EINVAL;
        goto out;
    }
    ret = file_open_fd(s, filename, flags, errp);
    if (ret < 0) {
        goto out;
    }
    ret = file_setup_locks(bs, locking, flags, filename, errp);
    if (ret < 0) {
        goto out;
    }
    s->engine = aio_get_engine(file_ctx(bs), s->aio_type, false, errp);
    if (!s->engine) {
        ret = -EIO;
        goto out;
    }
    if (s->is_device) {
        hdev_probe_limits(s);
    }
    file_probe_alignment(s);
    if (!bs->filename[0]) {
        snprintf(bs->filename, sizeof(bs->filename), "%s", filename);
    }
    /*
     * Writes honour FUA natively (file_co_pwritev_fua); write-zeroes are
     * fallocate or BLKZEROOUT, not writes, so the block layer follows them
     * with a flush when FUA is asked.
     */
    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_NO_FALLBACK;
    bs->supported_truncate_flags = s->is_device ? 0 : BDRV_REQ_ZERO_WRITE;
out:
    if (ret < 0) {
        file_close(bs);
    }
    free(filename);
    return ret;
}

void file_close(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->reopen_fd >= 0) {
        close(s->reopen_fd);
        s->reopen_fd = -1;
    }
    if (s->use_lock && s->lock_fd >= 0) {
        file_lock_release(s->lock_fd);
    }
    if (s->lock_fd >= 0 && s->lock_fd != s->fd) {
        close(s->lock_fd);
    }
    if (s->fd >= 0) {
        close(s->fd);
    }
    s->fd = -1;
    s->lock_fd = -1;
    s->engine = NULL;
}

void file_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVFileState *s = bs->opaque;

    bs->bl.request_alignment = s->req_align;
    bs->bl.min_mem_alignment = s->mem_align;
    bs->bl.opt_mem_alignment = s->mem_align > 4096 ? s->mem_align : 4096;
    bs->bl.max_iov = IOV_MAX;
    if (s->max_transfer > 0) {
        bs->bl.max_transfer = s->max_transfer;
    }
}

void file_attach_aio_context(BlockDriverState *bs, AioContext *ctx)
{
    BDRVFileState *s = bs->opaque;

    s->engine = aio_get_engine(ctx, s->aio_type, false, NULL);
}

void file_detach_aio_context(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    s->engine = NULL;
}

/* ---------------------------------------------------------------------- */
/* Reopen */

/* Takes the options a reopen may repeat; only the filename must not change. */
static int file_reopen_take_opts(BlockDriverState *bs, BlockOpts *options, Error **errp)
{
    char *filename = NULL;
    int ret = bopts_take_str(options, "filename", &filename, errp);

    if (ret > 0 && strcmp(filename, bs->filename) != 0) {
        error_setg(errp, "Cannot change the option 'filename' of '%s'", bs->filename);
        ret = -EINVAL;
    }
    free(filename);
    if (ret < 0) {
        return ret;
    }
    bopts_del(options, "aio");
    bopts_del(options, "locking");
    bopts_del(options, "aio-max-batch");
    return 0;
}

int file_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags, Error **errp)
{
    BDRVFileState *s = bs->opaque;
    char path[64];
    int ret;

    ret = file_reopen_take_opts(bs, options, errp);
    if (ret < 0) {
        return ret;
    }
    s->reopen_flags = file_oflags(new_flags);
    if (s->use_lock) {
        file_lock_perms(new_flags & BDRV_O_RDWR, new_flags & BDRV_O_FORCE_SHARE,
                        &s->reopen_perm, &s->reopen_shared);
        ret = file_lock_apply(s->lock_fd, s->reopen_perm, s->reopen_shared, bs->filename,
                              errp);
        if (ret < 0) {
            file_lock_apply(s->lock_fd, s->perm, s->shared, bs->filename, NULL);
            return ret;
        }
    }
    if (s->reopen_flags == s->open_flags) {
        return 0;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", s->fd);
    s->reopen_fd = open(path, s->reopen_flags);
    if (s->reopen_fd < 0) {
        ret = -errno;
        error_setg_errno(errp, ret, "Could not reopen '%s'", bs->filename);
        file_reopen_abort(bs);
        return ret;
    }
    return 0;
}

void file_reopen_commit(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->use_lock) {
        s->perm = s->reopen_perm;
        s->shared = s->reopen_shared;
    }
    if (s->reopen_fd < 0) {
        return;
    }
    if (s->fd != s->lock_fd) {
        close(s->fd);
    }
    s->fd = s->reopen_fd;
    s->reopen_fd = -1;
    s->open_flags = s->reopen_flags;
    file_set_inline_reads(s);
    file_probe_alignment(s);
}

void file_reopen_abort(BlockDriverState *bs)
{
    BDRVFileState *s = bs->opaque;

    if (s->reopen_fd >= 0) {
        close(s->reopen_fd);
        s->reopen_fd = -1;
    }
    if (s->use_lock) {
        file_lock_apply(s->lock_fd, s->perm, s->shared, bs->filename, NULL);
    }
}

/* ---------------------------------------------------------------------- */

static int file_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    return file_open_common(bs, options, flags, false, errp);
}

const BlockDriver bdrv_file = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "file",
    .protocol_name = "file",
    .instance_size = sizeof(BDRVFileState),
    .is_protocol = true,
    .option_names = file_option_names,
    .bdrv_open = file_open,
    .bdrv_close = file_close,
    .refresh_limits = file_refresh_limits,
    .co_preadv = file_co_preadv,
    .co_pwritev = file_co_pwritev,
    .co_pwrite_zeroes = file_co_pwrite_zeroes,
    .co_pdiscard = file_co_pdiscard,
    .co_flush_to_disk = file_co_flush_to_disk,
    .co_block_status = file_co_block_status,
    .co_truncate = file_co_truncate,
    .co_getlength = file_co_getlength,
    .co_get_allocated_file_size = file_co_get_allocated_file_size,
    .attach_aio_context = file_attach_aio_context,
    .detach_aio_context = file_detach_aio_context,
    .reopen_prepare = file_reopen_prepare,
    .reopen_commit = file_reopen_commit,
    .reopen_abort = file_reopen_abort,
    .co_create_opts = file_co_create_opts,
    .replace_file = file_replace_file,
};
