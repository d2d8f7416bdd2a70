/*
 * coblk - the block layer: nodes (BlockDriverState), the request API, and
 * BlockBackend, the handle that users hold.
 *
 * Request functions come in three flavours:
 *  - blk_co_* / bdrv_co_*: from a coroutine; they yield until done.
 *  - blk_aio_*: from callback code; the callback runs exactly once, later, in
 *    a bottom half of the BlockBackend's AioContext.
 *  - blk_pread() and friends: from plain code; they run a coroutine and poll
 *    the BlockBackend's AioContext until it finishes.
 * All return 0 or a non-negative count on success and -errno on failure.
 */
#ifndef COBLK_BLOCK_H
#define COBLK_BLOCK_H

#include <coblk/aio.h>
#include <coblk/iov.h>
#include <coblk/opts.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct BlockDriverState BlockDriverState;
typedef struct BdrvChild BdrvChild;
typedef struct BlockDriver BlockDriver;
typedef struct BlockBackend BlockBackend;
typedef struct BlockAIOCB BlockAIOCB;

#define BDRV_SECTOR_BITS 9
#define BDRV_SECTOR_SIZE (1ULL << BDRV_SECTOR_BITS)
/** Largest byte count of one request (as QEMU: INT64_MAX rounded down to 512 MiB). */
#define BDRV_MAX_LENGTH (INT64_MAX & ~((int64_t)(512 * 1024 * 1024) - 1))
/** Chain depth limit for backing files. */
#define BDRV_MAX_BACKING_DEPTH 256

/** Open flags (bdrv_open / blk_new_open). Options override them. */
enum {
    BDRV_O_RDWR = 0x0002,          /**< open read-write */
    BDRV_O_SNAPSHOT = 0x0008,      /**< snapshot=on: writes go to a temporary overlay */
    BDRV_O_NOCACHE = 0x0020,       /**< cache.direct=on: O_DIRECT on files */
    BDRV_O_NO_FLUSH = 0x0200,      /**< cache.no-flush=on: flushes are no-ops */
    BDRV_O_COPY_ON_READ = 0x0400,  /**< copy backing data into the top image on read */
    BDRV_O_NO_BACKING = 0x0100,    /**< do not open backing files */
    BDRV_O_PROTOCOL = 0x8000,      /**< the filename names a protocol node directly */
    BDRV_O_UNMAP = 0x4000,         /**< discard=unmap */
    BDRV_O_FORCE_SHARE = 0x10000,  /**< -U: skip image locking (read-only opens only) */
    BDRV_O_UNTRUSTED = 0x20000,    /**< option untrusted=on: follow only sibling files */
    BDRV_O_NO_IO = 0x40000,        /**< open for metadata only (info) */
    /* The I/O engine of file protocol nodes, as qemu-img's -i: at most one
     * bit; none means aio=auto. Like every flag, children (file, backing)
     * inherit it; a node's explicit aio= option overrides it. */
    BDRV_O_NATIVE_AIO = 0x0080,    /**< aio=native (libaio; needs cache.direct=on) */
    BDRV_O_IO_URING = 0x80000,     /**< aio=io_uring */
    BDRV_O_AIO_THREADS = 0x100000, /**< aio=threads */
    BDRV_O_AIO_MASK = BDRV_O_NATIVE_AIO | BDRV_O_IO_URING | BDRV_O_AIO_THREADS,
};

/**
 * Sets the BDRV_O_AIO_MASK bits of *flags from an aio mode name as qemu-img's
 * -i takes it: "threads", "native" or "io_uring" (no bit: "auto" is not a
 * name). Returns 0, or -EINVAL for another name (*flags unchanged).
 */
COBLK_API int bdrv_parse_aio(const char *mode, int *flags);

/** Request flags. */
typedef enum BdrvRequestFlags {
    BDRV_REQ_FUA = 0x1,             /**< write is durable when it completes */
    BDRV_REQ_MAY_UNMAP = 0x2,       /**< write-zeroes may deallocate */
    BDRV_REQ_NO_FALLBACK = 0x4,     /**< write-zeroes: fail (-ENOTSUP) rather than write zeroes */
    BDRV_REQ_ZERO_WRITE = 0x8,      /**< internal: this write is a write-zeroes */
    BDRV_REQ_SERIALISING = 0x10,    /**< wait for overlapping requests first */
    BDRV_REQ_COPY_ON_READ = 0x20,   /**< copy the data read into this node */
    BDRV_REQ_PREFETCH = 0x40,       /**< with COPY_ON_READ: only populate, no qiov */
    BDRV_REQ_WRITE_COMPRESSED = 0x80,
    BDRV_REQ_MASK = 0xff,
} BdrvRequestFlags;

/** Block status bits (bdrv_co_block_status). */
enum {
    BDRV_BLOCK_DATA = 0x01,         /**< reads come from this node's file (or data) */
    BDRV_BLOCK_ZERO = 0x02,         /**< reads return zeroes */
    BDRV_BLOCK_OFFSET_VALID = 0x04, /**< *map is the offset in *file */
    BDRV_BLOCK_RAW = 0x08,          /**< ask the file node (used by filters and raw) */
    BDRV_BLOCK_ALLOCATED = 0x10,    /**< this layer provides the content */
    BDRV_BLOCK_EOF = 0x20,          /**< the range reaches the end of the node */
    BDRV_BLOCK_RECURSE = 0x40,      /**< also ask the file node whether it is zero */
};

typedef enum BlockdevDetectZeroes {
    BDRV_DETECT_ZEROES_OFF = 0,
    BDRV_DETECT_ZEROES_ON,
    BDRV_DETECT_ZEROES_UNMAP,
} BlockdevDetectZeroes;

typedef enum PreallocMode {
    PREALLOC_MODE_OFF = 0,
    PREALLOC_MODE_METADATA,
    PREALLOC_MODE_FALLOC,
    PREALLOC_MODE_FULL,
} PreallocMode;

/* --------------------------------------------------------------------- */
/* Nodes */

/**
 * Opens a node (and its children) from a filename and/or options.
 * filename may be NULL when options say everything, a plain path (probed), a
 * protocol URL ("null-co://", "file:x.img") or "json:{...}". options are
 * QEMU's dotted -blockdev options and are consumed (freed) whatever the
 * result; NULL means none. Returns a node with one reference, or NULL with
 * errp naming the file and the option or field that is wrong.
 */
COBLK_API BlockDriverState *bdrv_open(const char *filename, BlockOpts *options, int flags,
                                      Error **errp);
/**
 * Creates an image of the given format (qemu-img create): options are the
 * format's creation options ("size", "preallocation", ...) and are consumed.
 */
COBLK_API int bdrv_create(const char *format, const char *filename, BlockOpts *options,
                          Error **errp);
COBLK_API void bdrv_ref(BlockDriverState *bs);
/** Drops a reference; the last one drains and closes the node and its children. */
COBLK_API void bdrv_unref(BlockDriverState *bs);

COBLK_API const char *bdrv_get_node_name(const BlockDriverState *bs);
COBLK_API const char *bdrv_get_format_name(const BlockDriverState *bs);
COBLK_API const char *bdrv_get_filename(const BlockDriverState *bs);
COBLK_API bool bdrv_is_read_only(const BlockDriverState *bs);
/** Finds an open node by node-name (NULL if none). */
COBLK_API BlockDriverState *bdrv_find_node(const char *node_name);
/** The file / backing child's node (NULL if none). */
COBLK_API BlockDriverState *bdrv_file_bs(const BlockDriverState *bs);
COBLK_API BlockDriverState *bdrv_backing_bs(const BlockDriverState *bs);
COBLK_API AioContext *bdrv_get_aio_context(const BlockDriverState *bs);

/** Size in bytes, or -errno. Plain-code version polls if needed. */
COBLK_API int64_t bdrv_getlength(BlockDriverState *bs);
COBLK_API int64_t coroutine_fn bdrv_co_getlength(BlockDriverState *bs);

/**
 * Fills names[] with the registered driver names (formats and protocols, each
 * once), at most size - 1 of them, then a NULL (nothing when size is 0). The
 * strings live as long as the process. Returns the number of names there are,
 * so a return >= size means the list was cut short. Thread-safe.
 */
COBLK_API size_t bdrv_driver_names(const char **names, size_t size);

/* Request layer (see block-driver.h for the driver side). Coroutine context. */
COBLK_API int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset, int64_t bytes,
                                          IOVector *qiov, BdrvRequestFlags flags);
COBLK_API int coroutine_fn bdrv_co_preadv_part(BdrvChild *child, int64_t offset, int64_t bytes,
                                               IOVector *qiov, size_t qiov_offset,
                                               BdrvRequestFlags flags);
COBLK_API int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset, int64_t bytes,
                                           IOVector *qiov, BdrvRequestFlags flags);
COBLK_API int coroutine_fn bdrv_co_pwritev_part(BdrvChild *child, int64_t offset,
                                                int64_t bytes, IOVector *qiov,
                                                size_t qiov_offset, BdrvRequestFlags flags);
COBLK_API int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset,
                                                 int64_t bytes, BdrvRequestFlags flags);
COBLK_API int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset, int64_t bytes);
/** Flushes bs and its children to stable storage (per the cache mode). */
COBLK_API int coroutine_fn bdrv_co_flush(BlockDriverState *bs);
COBLK_API int coroutine_fn bdrv_co_truncate(BdrvChild *child, int64_t offset, bool exact,
                                            PreallocMode prealloc, BdrvRequestFlags flags,
                                            Error **errp);
/**
 * Status of [offset, offset + bytes) in bs alone: returns BDRV_BLOCK_* bits
 * for the first *pnum bytes (*pnum > 0 unless at the end), with the host
 * offset in *map and its node in *file when OFFSET_VALID.
 */
COBLK_API int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset,
                                                int64_t bytes, int64_t *pnum, int64_t *map,
                                                BlockDriverState **file);
/**
 * As bdrv_co_block_status() but across the backing chain from bs down to
 * (not including) base (NULL: the whole chain): unallocated ranges of a layer
 * are resolved in the layers below. *depth (if non-NULL) gets the number of
 * layers walked down (1 = bs itself) or 0 if unallocated everywhere.
 */
COBLK_API int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs,
                                                      BlockDriverState *base, int64_t offset,
                                                      int64_t bytes, int64_t *pnum,
                                                      int64_t *map, BlockDriverState **file,
                                                      int *depth);

/**
 * Drain: stops new requests from BlockBackends on the subtree of bs and
 * waits for every in-flight request to finish. Nestable. Plain code only.
 */
COBLK_API void bdrv_drained_begin(BlockDriverState *bs);
COBLK_API void bdrv_drained_end(BlockDriverState *bs);
COBLK_API void bdrv_drain(BlockDriverState *bs);
/** Requests of bs (not its children) in flight now. */
COBLK_API unsigned bdrv_get_in_flight(const BlockDriverState *bs);

/**
 * Moves bs, its subtree and the BlockBackends attached to it to ctx
 * (drains first). Returns 0 or -errno with errp set.
 */
COBLK_API int bdrv_try_change_aio_context(BlockDriverState *bs, AioContext *ctx, Error **errp);

/**
 * Reopens bs with changed options: "read-only", "cache.direct",
 * "cache.no-flush", "discard", "detect-zeroes", and the driver's own options
 * (e.g. qcow2's "l2-cache-size"). The file-side children follow the new mode.
 * Options for a child take its dotted path, as at open: "file.locking=off",
 * "backing.l2-cache-size=1M", "backing.file.cache.no-flush=on" (a backing
 * node changes only as its options say). Transactional over all the nodes:
 * on failure (a refused or unknown option on any node) every node keeps its
 * old state. options are consumed.
 */
COBLK_API int bdrv_reopen(BlockDriverState *bs, BlockOpts *options, Error **errp);
COBLK_API int bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, Error **errp);

/* --------------------------------------------------------------------- */
/* BlockBackend */

/** Creates a BlockBackend over a new node opened as bdrv_open() does. */
COBLK_API BlockBackend *blk_new_open(const char *filename, BlockOpts *options, int flags,
                                     Error **errp);
/** Creates a BlockBackend over an existing node (takes a new reference). */
COBLK_API BlockBackend *blk_new_with_bs(BlockDriverState *bs, Error **errp);
/**
 * Drains and frees blk; drops its reference to the root node. A node closed
 * by the last reference is flushed first (what was written is durable,
 * unless cache.no-flush); a failed flush there is only warned about, so
 * call blk_flush() first when the result matters.
 */
COBLK_API void blk_unref(BlockBackend *blk);
COBLK_API BlockDriverState *blk_bs(BlockBackend *blk);
COBLK_API AioContext *blk_get_aio_context(BlockBackend *blk);
COBLK_API int64_t blk_getlength(BlockBackend *blk);
COBLK_API bool blk_is_read_only(BlockBackend *blk);
/**
 * The guest-visible write cache. Enabled (writeback) by default; disabled
 * means writethrough: every write is made durable before it completes, as
 * QEMU's cache=writethrough / directsync.
 */
COBLK_API void blk_set_enable_write_cache(BlockBackend *blk, bool enable);
COBLK_API bool blk_enable_write_cache(BlockBackend *blk);

COBLK_API int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset, int64_t bytes,
                                         IOVector *qiov, BdrvRequestFlags flags);
COBLK_API int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset, int64_t bytes,
                                          IOVector *qiov, BdrvRequestFlags flags);
COBLK_API int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset,
                                                int64_t bytes, BdrvRequestFlags flags);
COBLK_API int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
COBLK_API int coroutine_fn blk_co_flush(BlockBackend *blk);
COBLK_API int coroutine_fn blk_co_truncate(BlockBackend *blk, int64_t offset, bool exact,
                                           PreallocMode prealloc, BdrvRequestFlags flags,
                                           Error **errp);

/** Plain-code wrappers: run the request in a coroutine and poll until done. */
COBLK_API int blk_pread(BlockBackend *blk, int64_t offset, int64_t bytes, void *buf,
                        BdrvRequestFlags flags);
COBLK_API int blk_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf,
                         BdrvRequestFlags flags);
COBLK_API int blk_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                BdrvRequestFlags flags);
COBLK_API int blk_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes);
COBLK_API int blk_flush(BlockBackend *blk);
COBLK_API int blk_truncate(BlockBackend *blk, int64_t offset, bool exact, PreallocMode prealloc,
                           BdrvRequestFlags flags, Error **errp);

/** Completion callback of blk_aio_*: ret is 0 or -errno. */
typedef void BlockCompletionFunc(void *opaque, int ret);

/**
 * Callback-style requests. The returned BlockAIOCB is valid until cb runs;
 * cb runs exactly once, in a bottom half of blk's AioContext (never inside
 * the submitting call).
 */
COBLK_API BlockAIOCB *blk_aio_preadv(BlockBackend *blk, int64_t offset, IOVector *qiov,
                                     BdrvRequestFlags flags, BlockCompletionFunc *cb,
                                     void *opaque);
COBLK_API BlockAIOCB *blk_aio_pwritev(BlockBackend *blk, int64_t offset, IOVector *qiov,
                                      BdrvRequestFlags flags, BlockCompletionFunc *cb,
                                      void *opaque);
COBLK_API BlockAIOCB *blk_aio_pwrite_zeroes(BlockBackend *blk, int64_t offset, int64_t bytes,
                                            BdrvRequestFlags flags, BlockCompletionFunc *cb,
                                            void *opaque);
COBLK_API BlockAIOCB *blk_aio_pdiscard(BlockBackend *blk, int64_t offset, int64_t bytes,
                                       BlockCompletionFunc *cb, void *opaque);
COBLK_API BlockAIOCB *blk_aio_flush(BlockBackend *blk, BlockCompletionFunc *cb, void *opaque);
/**
 * Cancels acb and waits until its callback has run (with -ECANCELED if the
 * request had not started, or its real result if it had). Plain code only,
 * in the thread that runs blk's AioContext (as for every blk_aio_* call):
 * from another thread it aborts with a message, since waiting there would
 * mean running another thread's loop. Other threads use
 * blk_aio_cancel_async() through a bottom half of that context.
 */
COBLK_API void blk_aio_cancel(BlockAIOCB *acb);
/** Asks for cancellation without waiting; the callback still runs exactly once. */
COBLK_API void blk_aio_cancel_async(BlockAIOCB *acb);

/** Classic sector-based callback API (512-byte sectors) on a node's BlockBackend. */
COBLK_API BlockAIOCB *blk_aio_readv_sectors(BlockBackend *blk, int64_t sector_num,
                                            IOVector *qiov, int nb_sectors,
                                            BlockCompletionFunc *cb, void *opaque);
COBLK_API BlockAIOCB *blk_aio_writev_sectors(BlockBackend *blk, int64_t sector_num,
                                             IOVector *qiov, int nb_sectors,
                                             BlockCompletionFunc *cb, void *opaque);

/* --------------------------------------------------------------------- */
/* Statistics */

typedef enum BlockAcctType {
    BLOCK_ACCT_READ = 0,
    BLOCK_ACCT_WRITE,
    BLOCK_ACCT_ZEROES,
    BLOCK_ACCT_DISCARD,
    BLOCK_ACCT_FLUSH,
    BLOCK_ACCT_MAX,
} BlockAcctType;

/** Latency histogram bucket i counts requests that took [2^i, 2^(i+1)) microseconds. */
#define BLOCK_ACCT_LATENCY_BUCKETS 24

typedef struct BlockAcctStats {
    uint64_t nr_bytes[BLOCK_ACCT_MAX];      /**< bytes of successful requests */
    uint64_t nr_ops[BLOCK_ACCT_MAX];        /**< successful requests */
    uint64_t failed_ops[BLOCK_ACCT_MAX];    /**< requests that returned an error */
    uint64_t merged_ops[BLOCK_ACCT_MAX];    /**< requests merged into a neighbour */
    uint64_t total_time_ns[BLOCK_ACCT_MAX]; /**< sum of latencies of all requests */
    uint64_t latency_hist[BLOCK_ACCT_MAX][BLOCK_ACCT_LATENCY_BUCKETS];
    int64_t wr_highest_offset;              /**< end of the highest write */
} BlockAcctStats;

/** Copies blk's statistics. */
COBLK_API void blk_get_stats(BlockBackend *blk, BlockAcctStats *stats);
/** blk's statistics as a JSON object (malloc'ed; the caller frees it). */
COBLK_API char *blk_stats_to_json(BlockBackend *blk);

/* --------------------------------------------------------------------- */
/* Error policy (rerror / werror) */

typedef enum BlockErrorAction {
    BLOCK_ERROR_ACTION_REPORT = 0, /**< the request fails with the error */
    BLOCK_ERROR_ACTION_IGNORE,     /**< the request reports success */
    BLOCK_ERROR_ACTION_STOP,       /**< the request waits until blk_resume() retries it */
    BLOCK_ERROR_ACTION_ENOSPC,     /**< STOP for -ENOSPC, REPORT for other errors */
} BlockErrorAction;

typedef enum BlockIOStatus {
    BLOCK_IOSTATUS_OK = 0,
    BLOCK_IOSTATUS_FAILED,
    BLOCK_IOSTATUS_NOSPACE,
} BlockIOStatus;

/**
 * Called for every failed request, with the action taken (REPORT, IGNORE or
 * STOP). On STOP an emulator pauses its guest and later calls blk_resume().
 */
typedef void BlockErrorEventFn(void *opaque, BlockBackend *blk, bool is_read, int error,
                               BlockErrorAction action);

/** Parses "report" / "ignore" / "stop" / "enospc" (enospc only for writes). */
COBLK_API int blk_parse_error_action(const char *name, bool is_read, BlockErrorAction *out,
                                     Error **errp);
COBLK_API void blk_set_on_error(BlockBackend *blk, BlockErrorAction rerror,
                                BlockErrorAction werror);
COBLK_API void blk_set_error_event(BlockBackend *blk, BlockErrorEventFn *fn, void *opaque);
COBLK_API BlockIOStatus blk_iostatus(BlockBackend *blk);
COBLK_API void blk_iostatus_reset(BlockBackend *blk);
/** Retries every request held by a STOP action (resets the iostatus). */
COBLK_API void blk_resume(BlockBackend *blk);
/** Requests held by a STOP action now. */
COBLK_API unsigned blk_stopped_requests(BlockBackend *blk);

/**
 * The classic sector-based callback API on a node, for callers written for
 * it: nb_sectors 512-byte sectors from sector_num, callback as blk_aio_*.
 * The node serves these through an internal BlockBackend of its own.
 */
COBLK_API BlockAIOCB *bdrv_aio_readv(BlockDriverState *bs, int64_t sector_num, IOVector *qiov,
                                     int nb_sectors, BlockCompletionFunc *cb, void *opaque);
COBLK_API BlockAIOCB *bdrv_aio_writev(BlockDriverState *bs, int64_t sector_num, IOVector *qiov,
                                      int nb_sectors, BlockCompletionFunc *cb, void *opaque);

/**
 * Requests issued between plug and unplug reach the I/O engine as one
 * submission; callback-style writes to adjacent ranges are merged into one
 * request (up to the node's max_transfer, or 1 MiB) and counted in merged_ops.
 */
COBLK_API void blk_io_plug(BlockBackend *blk);
COBLK_API void blk_io_unplug(BlockBackend *blk);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_BLOCK_H */
