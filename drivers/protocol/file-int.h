/*
 * Internals shared by the "file" and "host_device" protocol drivers
 * (drivers/protocol/file.c, host-device.c). Not installed.
 */
#ifndef COBLK_DRIVERS_FILE_INT_H
#define COBLK_DRIVERS_FILE_INT_H

#include <coblk/block-driver.h>

/* State of one open file or block device. */
typedef struct BDRVFileState {
    int fd;                 /* the I/O descriptor */
    int lock_fd;            /* holds the OFD locks: fd, or a saved older fd after reopen */
    int open_flags;         /* O_* that fd was opened with */
    bool is_device;         /* fd is a block device (host_device) */
    bool use_lock;          /* image locking is on */
    bool try_nowait;        /* buffered reads try preadv2(RWF_NOWAIT) inline first */
    bool memfs;             /* tmpfs/ramfs: buffered reads never wait for a device */
    bool has_write_zeroes;  /* fallocate(ZERO_RANGE) not refused yet */
    bool has_discard;       /* hole punching not refused yet */
    AioEngineType aio_type; /* the aio= option */
    AioEngine *engine;      /* engine of the current AioContext */
    uint32_t req_align;     /* probed O_DIRECT request alignment (1 when buffered) */
    uint32_t mem_align;     /* probed O_DIRECT buffer alignment (1 when buffered) */
    uint32_t dev_sector;    /* logical block size (devices), 0 if unknown */
    uint32_t phys_block;    /* physical block size (devices), 0 if unknown */
    int64_t max_transfer;   /* from the device's queue limits, 0 if none */
    uint64_t perm;          /* FILE_PERM_* held (for locking) */
    uint64_t shared;        /* FILE_PERM_* others may hold too */
    /* Staged by reopen_prepare. */
    int reopen_fd;
    int reopen_flags;
    uint64_t reopen_perm;
    uint64_t reopen_shared;
} BDRVFileState;

/* Permissions that image locking arbitrates (one lock byte each). */
enum {
    FILE_PERM_CONSISTENT_READ = 1u << 0,
    FILE_PERM_WRITE = 1u << 1,
    FILE_PERM_WRITE_UNCHANGED = 1u << 2,
    FILE_PERM_RESIZE = 1u << 3,
    FILE_PERM_ALL = 0xf,
    FILE_PERM_COUNT = 4,
};

/*
 * Opens bs from its options ("filename", "aio", "locking", "aio-max-batch").
 * is_device asks for a block device (host_device) and refuses anything
 * else. who names the driver in messages.
 */
int file_open_common(BlockDriverState *bs, BlockOpts *options, int flags, bool is_device,
                     Error **errp);
void file_close(BlockDriverState *bs);
void file_refresh_limits(BlockDriverState *bs, Error **errp);

int coroutine_fn file_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn file_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn file_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       BdrvRequestFlags flags);
int coroutine_fn file_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int coroutine_fn file_co_flush_to_disk(BlockDriverState *bs);
int coroutine_fn file_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                      int64_t bytes, int64_t *pnum, int64_t *map,
                                      BlockDriverState **file);
int64_t coroutine_fn file_co_getlength(BlockDriverState *bs);
int64_t coroutine_fn file_co_get_allocated_file_size(BlockDriverState *bs);

void file_attach_aio_context(BlockDriverState *bs, AioContext *ctx);
void file_detach_aio_context(BlockDriverState *bs);

int file_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags, Error **errp);
void file_reopen_commit(BlockDriverState *bs);
void file_reopen_abort(BlockDriverState *bs);
/* BlockDriver.replace_file (file-replace.c). */
int file_replace_file(BlockDriverState *bs, const char *tmp, const char *path);

/* Length of an open fd: st_size, or BLKGETSIZE64 for a block device. -errno on failure. */
int64_t file_fd_getlength(int fd);

/* Image locking (file-lock.c). */
/* True if fd supports OFD locks. */
bool file_lock_supported(int fd);
/* The permissions a node holds and shares for its open mode. */
void file_lock_perms(bool writable, bool force_share, uint64_t *perm, uint64_t *shared);
/*
 * Makes fd's locks say "holds perm, shares shared" and tests them against
 * other holders. On a conflict returns -EAGAIN with errp naming the
 * permission and filename; fd's lock bytes are then left as requested.
 */
int file_lock_apply(int fd, uint64_t perm, uint64_t shared, const char *filename, Error **errp);
/* Drops every lock byte fd holds. */
void file_lock_release(int fd);

/* Device fallbacks (host-device.c): BLKZEROOUT / BLKDISCARD on the thread pool. */
int coroutine_fn hdev_co_zeroout(BlockDriverState *bs, int64_t offset, int64_t bytes);
int coroutine_fn hdev_co_discard(BlockDriverState *bs, int64_t offset, int64_t bytes);
/* Reads the device's sector sizes and transfer limit into s. */
void hdev_probe_limits(BDRVFileState *s);

/* NULL-terminated option names of both drivers. */
extern const char *const file_option_names[];

#endif /* COBLK_DRIVERS_FILE_INT_H */
