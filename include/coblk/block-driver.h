/*
 * coblk - the driver API: what a format or protocol driver implements and
 * the node state it may read and write.
 *
 * Contract of every request callback (the request layer guarantees it, so
 * drivers do not re-check): offset and bytes are multiples of the node's
 * bl.request_alignment (except at the end of an unaligned-size node), the
 * range lies within [0, BDRV_MAX_LENGTH), bytes <= bl.max_transfer when that
 * is non-zero, flags only hold bits the driver listed as supported, and the
 * node is not read-only for writes. Callbacks run in a coroutine in the
 * node's AioContext and return 0 or -errno.
 *
 * The table only grows at its end; struct_size tells the library which
 * fields a driver (possibly an older plugin) knows about.
 */
#ifndef COBLK_BLOCK_DRIVER_H
#define COBLK_BLOCK_DRIVER_H

#include <coblk/aio-io.h>
#include <coblk/block.h>
#include <coblk/coroutine.h>
#include <coblk/image.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Limits a driver reports in refresh_limits (0 = no limit / default). */
typedef struct BlockLimits {
    uint32_t request_alignment;     /**< power of two; 1 = byte-granular */
    uint32_t min_mem_alignment;     /**< buffer alignment the node requires (O_DIRECT) */
    uint32_t opt_mem_alignment;     /**< buffer alignment that is fastest */
    int64_t max_transfer;           /**< largest single request; multiple of alignment */
    int64_t opt_transfer;
    int64_t max_pwrite_zeroes;
    uint32_t pwrite_zeroes_alignment;
    int64_t max_pdiscard;
    uint32_t pdiscard_alignment;
    int max_iov;                    /**< most iovec entries per request (IOV_MAX) */
} BlockLimits;

/** What a child is to its parent. */
enum {
    BDRV_CHILD_DATA = 0x01,      /**< guest data lives here */
    BDRV_CHILD_METADATA = 0x02,  /**< format metadata lives here */
    BDRV_CHILD_FILTERED = 0x04,  /**< the parent passes requests through */
    BDRV_CHILD_COW = 0x08,       /**< a backing file: read for unallocated ranges */
    BDRV_CHILD_PRIMARY = 0x10,   /**< the parent's "file" child */
    BDRV_CHILD_IMAGE = BDRV_CHILD_DATA | BDRV_CHILD_METADATA,
};

struct BdrvChild {
    BlockDriverState *bs;        /**< the child node */
    BlockDriverState *parent;    /**< NULL when the parent is a BlockBackend */
    char *name;                  /**< "file", "backing", "data-file", "root", ... */
    unsigned role;               /**< BDRV_CHILD_* */
    BdrvChild *next;             /**< sibling in parent->children */
    BdrvChild *next_parent;      /**< sibling in bs->parents */
    void *opaque;                /**< the BlockBackend for root children */
};

typedef struct BdrvTrackedRequest BdrvTrackedRequest;

/**
 * Points in a driver's work where a blkdebug filter below it can inject an
 * error or suspend the request (fault-injection tests). Drivers fire them
 * with BLKDBG_EVENT(child, event) on the child the next I/O goes to. The
 * names (bdrv_debug_event_name) are the ones QEMU's blkdebug config uses.
 */
typedef enum BlkdebugEvent {
    BLKDBG_L1_UPDATE,
    BLKDBG_L1_GROW_ALLOC_TABLE,
    BLKDBG_L1_GROW_WRITE_TABLE,
    BLKDBG_L1_GROW_ACTIVATE_TABLE,
    BLKDBG_L2_LOAD,
    BLKDBG_L2_UPDATE,
    BLKDBG_L2_UPDATE_COMPRESSED,
    BLKDBG_L2_ALLOC_COW_READ,
    BLKDBG_L2_ALLOC_WRITE,
    BLKDBG_READ_AIO,
    BLKDBG_READ_BACKING_AIO,
    BLKDBG_READ_COMPRESSED,
    BLKDBG_WRITE_AIO,
    BLKDBG_WRITE_COMPRESSED,
    BLKDBG_VMSTATE_LOAD,
    BLKDBG_VMSTATE_SAVE,
    BLKDBG_COW_READ,
    BLKDBG_COW_WRITE,
    BLKDBG_REFTABLE_LOAD,
    BLKDBG_REFTABLE_GROW,
    BLKDBG_REFTABLE_UPDATE,
    BLKDBG_REFBLOCK_LOAD,
    BLKDBG_REFBLOCK_UPDATE,
    BLKDBG_REFBLOCK_UPDATE_PART,
    BLKDBG_REFBLOCK_ALLOC,
    BLKDBG_REFBLOCK_ALLOC_HOOKUP,
    BLKDBG_REFBLOCK_ALLOC_WRITE,
    BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS,
    BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE,
    BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE,
    BLKDBG_CLUSTER_ALLOC,
    BLKDBG_CLUSTER_ALLOC_BYTES,
    BLKDBG_CLUSTER_FREE,
    BLKDBG_FLUSH_TO_OS,
    BLKDBG_FLUSH_TO_DISK,
    BLKDBG_PWRITEV_RMW_HEAD,
    BLKDBG_PWRITEV_RMW_AFTER_HEAD,
    BLKDBG_PWRITEV_RMW_TAIL,
    BLKDBG_PWRITEV_RMW_AFTER_TAIL,
    BLKDBG_PWRITEV,
    BLKDBG_PWRITEV_ZERO,
    BLKDBG_PWRITEV_DONE,
    BLKDBG_EMPTY_IMAGE_PREPARE,
    BLKDBG_L1_SHRINK_WRITE_TABLE,
    BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS,
    BLKDBG_COR_WRITE,
    BLKDBG_CLUSTER_ALLOC_SPACE,
    BLKDBG_NONE,
    BLKDBG_HEADER_UPDATE,       /**< a format rewrites its header */
    BLKDBG_MAP_UPDATE,          /**< a block map / BAT / grain table entry is written */
    BLKDBG__MAX,
} BlkdebugEvent;

/* The request layer's atomic counters; C++ sees plain fields of the same
 * layout and must leave them to the library. */
#ifdef __cplusplus
#define COBLK_ATOMIC_FIELD(type) type
#else
#define COBLK_ATOMIC_FIELD(type) _Atomic type
#endif

/** A node. Fields marked (driver) may be set by drivers in open. */
struct BlockDriverState {
    const BlockDriver *drv;
    void *opaque;                   /**< driver state, drv->instance_size bytes */
    AioContext *aio_context;
    int refcnt;
    int open_flags;                 /**< BDRV_O_* in effect */
    bool read_only;
    bool probed;                    /**< the format was guessed, not given */
    bool sg;                        /**< reserved */
    BlockdevDetectZeroes detect_zeroes;
    char node_name[32];
    char filename[4096];            /**< (driver) what users see */
    char backing_file[4096];        /**< (driver) backing file name from the image */
    char backing_format[32];        /**< (driver) backing format from the image */
    char auto_backing_file[4096];   /**< backing file name resolved against filename */

    BlockLimits bl;                 /**< (driver, refresh_limits) */
    unsigned supported_write_flags; /**< (driver) BDRV_REQ_FUA, ... */
    unsigned supported_zero_flags;  /**< (driver) BDRV_REQ_MAY_UNMAP, NO_FALLBACK, FUA */
    unsigned supported_truncate_flags;

    BdrvChild *children;            /**< list of children */
    BdrvChild *parents;             /**< list of parents' links to us */
    BdrvChild *file;                /**< (driver) the primary child, if any */
    BdrvChild *backing;             /**< the backing child, if any */

    /* request layer state (block/io.c) */
    COBLK_ATOMIC_FIELD(unsigned) in_flight;
    int quiesce_counter;
    CoMutex reqs_lock;
    BdrvTrackedRequest *tracked_requests;
    unsigned serialising_in_flight; /**< serialising requests in tracked_requests */
    unsigned unlisted_in_flight;    /**< plain requests in flight not in tracked_requests */
    CoQueue unlisted_waiters;       /**< serialising requests waiting for those to end */
    CoQueue flush_queue;
    bool active_flush_req;
    unsigned write_gen;             /**< bumped by every write */
    unsigned flushed_gen;           /**< write_gen at the last successful flush */
    int64_t wr_highest_offset;

    BlockDriverState *all_next;     /**< list of every open node */
    BlockBackend *classic_blk;      /**< serves bdrv_aio_readv/writev; holds no reference */
};

/**
 * Places the guest bytes [offset, offset + bytes) at offset host of the
 * protocol node file (see co_copy_range_to). Returns 0 or -errno.
 */
typedef int coroutine_fn BdrvCopyFillFn(void *opaque, BlockDriverState *file, int64_t host,
                                        int64_t offset, int64_t bytes);

struct BlockDriver {
    uint32_t struct_size;           /**< sizeof(BlockDriver) the driver was built with */
    const char *format_name;        /**< "raw", "qcow2", "file", "null-co" */
    const char *protocol_name;      /**< URL prefix before ':' (protocol drivers) */
    size_t instance_size;
    bool is_format;
    bool is_protocol;
    bool is_filter;
    /** NULL-terminated option names the driver's open consumes (for help). */
    const char *const *option_names;

    /**
     * Scores how well the first bytes of a file match the format
     * (0 = not this format, 100 = magic matched; raw returns 1).
     */
    int (*probe)(const uint8_t *buf, int buf_size, const char *filename);

    /**
     * Opens bs. options holds the node's own options (children's are taken
     * with bdrv_open_child()); the driver takes what it knows and the
     * caller reports what remains as unknown. Protocol drivers get the
     * filename as option "filename".
     */
    int (*bdrv_open)(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp);
    void (*bdrv_close)(BlockDriverState *bs);
    /** Fills bs->bl; children's limits are already known. */
    void (*refresh_limits)(BlockDriverState *bs, Error **errp);

    int coroutine_fn (*co_preadv)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
    int coroutine_fn (*co_pwritev)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
    int coroutine_fn (*co_pwrite_zeroes)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         BdrvRequestFlags flags);
    int coroutine_fn (*co_pdiscard)(BlockDriverState *bs, int64_t offset, int64_t bytes);
    /** Writes the driver's caches to the OS (no fsync). */
    int coroutine_fn (*co_flush_to_os)(BlockDriverState *bs);
    /** Makes everything written durable (fsync); protocol drivers only. */
    int coroutine_fn (*co_flush_to_disk)(BlockDriverState *bs);
    int coroutine_fn (*co_block_status)(BlockDriverState *bs, bool want_zero, int64_t offset,
                                        int64_t bytes, int64_t *pnum, int64_t *map,
                                        BlockDriverState **file);
    int coroutine_fn (*co_truncate)(BlockDriverState *bs, int64_t offset, bool exact,
                                    PreallocMode prealloc, BdrvRequestFlags flags,
                                    Error **errp);
    int64_t coroutine_fn (*co_getlength)(BlockDriverState *bs);
    /** Bytes the image occupies on its storage (st_blocks), or -errno. */
    int64_t coroutine_fn (*co_get_allocated_file_size)(BlockDriverState *bs);

    /** Called after bs moved to a new context / before it leaves the old one. */
    void (*attach_aio_context)(BlockDriverState *bs, AioContext *ctx);
    void (*detach_aio_context)(BlockDriverState *bs);

    /**
     * Reopen in three steps: prepare checks and stages the new options
     * (may fail), then commit or abort. options are this node's own, as at
     * bdrv_open (a child's "file."/"backing." options go to the child's
     * driver, path stripped); prepare takes those it knows, and any left
     * fail the reopen. bdrv_reopen prepares every node of the set before it
     * commits any, so abort must undo everything prepare staged, even after
     * prepare succeeded.
     */
    int (*reopen_prepare)(BlockDriverState *bs, BlockOpts *options, int new_flags,
                          Error **errp);
    void (*reopen_commit)(BlockDriverState *bs);
    void (*reopen_abort)(BlockDriverState *bs);

    /** Creates an image; options are qemu-img -o style (size, ...). */
    int coroutine_fn (*co_create_opts)(const BlockDriver *drv, const char *filename,
                                       BlockOpts *options, Error **errp);

    /** Batching hints passed down the graph (blk_io_plug). */
    void (*io_plug)(BlockDriverState *bs);
    void (*io_unplug)(BlockDriverState *bs);

    /* ---- image-level operations (coblk/image.h); all optional ---- */
    /** Create options, ending with name == NULL (for -o help and checks). */
    const BlockCreateOptDesc *create_opts;
    int (*get_info)(BlockDriverState *bs, BlockDriverInfo *bdi);
    /** Malloc'd JSON object text; see bdrv_get_specific_info(). */
    char *(*get_specific_info)(BlockDriverState *bs, Error **errp);
    int coroutine_fn (*co_check)(BlockDriverState *bs, BdrvCheckResult *res,
                                 BdrvCheckMode fix);
    /* Snapshots run with the node drained. */
    int coroutine_fn (*co_snapshot_create)(BlockDriverState *bs, BlockSnapshotInfo *sn,
                                           Error **errp);
    int coroutine_fn (*co_snapshot_goto)(BlockDriverState *bs, const char *name_or_id,
                                         Error **errp);
    int coroutine_fn (*co_snapshot_delete)(BlockDriverState *bs, const char *id,
                                           const char *name, Error **errp);
    int coroutine_fn (*co_snapshot_list)(BlockDriverState *bs, BlockSnapshotInfo **psn);
    int coroutine_fn (*co_save_vmstate)(BlockDriverState *bs, IOVector *qiov, int64_t pos);
    int coroutine_fn (*co_load_vmstate)(BlockDriverState *bs, IOVector *qiov, int64_t pos);
    /** Also updates bs->backing_file / backing_format on success. */
    int coroutine_fn (*co_change_backing_file)(BlockDriverState *bs, const char *backing_file,
                                               const char *backing_fmt, Error **errp);
    int coroutine_fn (*co_amend)(BlockDriverState *bs, BlockOpts *options, bool force,
                                 Error **errp);
    int coroutine_fn (*co_make_empty)(BlockDriverState *bs, Error **errp);
    /** in_bs may be NULL; options are create options (consumed as by create). */
    int (*measure)(BlockOpts *options, BlockDriverState *in_bs, BlockMeasureInfo *out,
                   Error **errp);
    /* VD-style metadata */
    int (*get_uuid)(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16]);
    int coroutine_fn (*co_set_uuid)(BlockDriverState *bs, BlockUuidKind kind,
                                    const uint8_t uuid[16], Error **errp);
    int (*get_geometry)(BlockDriverState *bs, BlockGeometry *geo);
    int coroutine_fn (*co_set_geometry)(BlockDriverState *bs, const BlockGeometry *geo,
                                        Error **errp);
    int (*get_comment)(BlockDriverState *bs, char **out);
    int coroutine_fn (*co_set_comment)(BlockDriverState *bs, const char *comment,
                                       Error **errp);
    int coroutine_fn (*co_compact)(BlockDriverState *bs, BlockProgressFn *progress,
                                   void *opaque, Error **errp);
    /** File name extensions without the dot ("qcow2"), NULL-terminated. */
    const char *const *file_extensions;

    /** Fault injection (blkdebug): an event fired on this node. May yield. */
    void coroutine_fn (*debug_event)(BlockDriverState *bs, BlkdebugEvent event);
    int (*debug_breakpoint)(BlockDriverState *bs, const char *event, const char *tag);
    int (*debug_remove_breakpoint)(BlockDriverState *bs, const char *tag);
    int (*debug_resume)(BlockDriverState *bs, const char *tag);
    bool (*debug_is_suspended)(BlockDriverState *bs, const char *tag);

    /**
     * The format can have a backing file (qcow2, qed, vmdk, qcow, parallels).
     * Its unallocated ranges are then "not present" in block status, as
     * qemu-img map says; a format without backing files (vdi, vpc) reports
     * them as allocated zeroes.
     */
    bool supports_backing;

    /** Persistent dirty bitmaps: list (returns the count) and change one. */
    int (*bitmap_list)(BlockDriverState *bs, BlockBitmapInfo **out);
    int coroutine_fn (*co_bitmap_modify)(BlockDriverState *bs, const BlockBitmapRequest *req,
                                         Error **errp);
    int coroutine_fn (*co_bitmap_query)(BlockDriverState *bs, const char *name,
                                        int64_t offset, int64_t bytes, int64_t *pnum);
    /** Shows snapshot id and/or name (NULL: any) as the content, read-only, until close. */
    int coroutine_fn (*co_snapshot_load_tmp)(BlockDriverState *bs, const char *id,
                                             const char *name, Error **errp);
    /** Stored timestamps (seconds since 1970); see bdrv_get_timestamp(). */
    int (*get_timestamp)(BlockDriverState *bs, BlockTimestampKind kind, int64_t *secs);
    int coroutine_fn (*co_set_timestamp)(BlockDriverState *bs, BlockTimestampKind kind,
                                         int64_t secs, Error **errp);
    /**
     * Renames the image and its files to new_name (drained); updates the
     * filenames of bs and its children. Formats of one file need not set it.
     */
    int coroutine_fn (*co_rename)(BlockDriverState *bs, const char *new_name, Error **errp);
    /**
     * Ends a reopen whose reopen_commit ran, before bdrv_reopen returns
     * (drained). undo is true when a later step (the new limits) failed and
     * the old mode was put back by a second prepare/commit with no options:
     * the driver restores what its first commit changed that such a reopen
     * does not (qcow2: cache sizes, runtime options). Optional.
     */
    void (*reopen_finish)(BlockDriverState *bs, bool undo);

    /**
     * Copy offloading into this node (qemu-img convert -C): [offset, offset +
     * bytes) of the guest gets the data that fill() places, outside the block
     * layer (copy_file_range), at host offsets of a protocol node below; the
     * driver maps or allocates the host ranges and references them only after
     * fill() returned 0, with the same ordering as a write. -ENOTSUP where it
     * cannot do it (partial clusters needing copy-on-write, encryption, ...):
     * the caller then writes the data itself. Part of the range may have been
     * copied before an error. Optional; see bdrv_co_copy_range_to().
     */
    int coroutine_fn (*co_copy_range_to)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         BdrvCopyFillFn *fill, void *opaque);

    /**
     * Local-file protocols: makes the file at tmp this node's file, renamed
     * over path (the node's own file, which a format replaces whole, as
     * vmdk its descriptor). tmp is opened with the node's open flags and
     * given the node's image locks first, so that once it has the name no
     * other process can open it unlocked; then it is renamed; then the node
     * reads, writes and locks it, and its old file is closed. The caller
     * made tmp durable and syncs the directory. Returns 0, or -errno with
     * the node unchanged and tmp left in place. Optional; see
     * bdrv_replace_file().
     */
    int (*replace_file)(BlockDriverState *bs, const char *tmp, const char *path);

    /* New fields go here, at the end. */
};

/**
 * Opens a child of parent from the options under "<name>." (or the
 * reference / filename given there) and attaches it. Returns NULL if the
 * child is absent and allow_none, else NULL with errp set.
 */
COBLK_API BdrvChild *bdrv_open_child(const char *filename, BlockOpts *options,
                                     const char *name, BlockDriverState *parent,
                                     unsigned role, bool allow_none, Error **errp);
/** Attaches an existing node as a child (takes a reference). */
COBLK_API BdrvChild *bdrv_attach_child(BlockDriverState *parent, BlockDriverState *child_bs,
                                       const char *name, unsigned role);
/** Detaches and drops a child. */
COBLK_API void bdrv_unref_child(BlockDriverState *parent, BdrvChild *child);

/**
 * Fires event at the first node from bs down its primary (file) children
 * whose driver listens (blkdebug); does nothing if none does. From a
 * coroutine: a blkdebug breakpoint suspends the caller here.
 */
COBLK_API void coroutine_fn bdrv_debug_event(BlockDriverState *bs, BlkdebugEvent event);

/** Reads guest bytes a format image does not hold: from its backing file,
 *  zeroes past the backing file's end or when there is none. */
/**
 * Copy offloading into bs (a format node): see BlockDriver.co_copy_range_to.
 * -ENOTSUP when its driver has no such callback, -EPERM when bs is
 * read-only. Write generations of bs and of every node fill() wrote to are
 * bumped, so that later flushes do not skip them.
 */
COBLK_API int coroutine_fn bdrv_co_copy_range_to(BlockDriverState *bs, int64_t offset,
                                                 int64_t bytes, BdrvCopyFillFn *fill,
                                                 void *opaque);
COBLK_API int coroutine_fn bdrv_co_read_backing(BlockDriverState *bs, int64_t offset, int64_t n,
                                                IOVector *qiov, size_t qiov_offset);
#define BLKDBG_EVENT(child, event) \
    bdrv_debug_event((child) ? (child)->bs : (BlockDriverState *)0, (event))
/** The blkdebug name of an event ("l2_update"), or NULL. */
COBLK_API const char *bdrv_debug_event_name(BlkdebugEvent event);
/** The event with a blkdebug name, or -1. */
COBLK_API int bdrv_debug_event_from_name(const char *name);

/**
 * Breakpoints of the first blkdebug node at or below bs (its primary
 * children): a request that fires event suspends until resumed by tag.
 * Return 0, -ENOENT (no such tag) or -ENOTSUP (no blkdebug node).
 */
COBLK_API int bdrv_debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag);
COBLK_API int bdrv_debug_remove_breakpoint(BlockDriverState *bs, const char *tag);
COBLK_API int bdrv_debug_resume(BlockDriverState *bs, const char *tag);
COBLK_API bool bdrv_debug_is_suspended(BlockDriverState *bs, const char *tag);

/** The in-tree drivers register statically; plugins pass their table here. */
COBLK_API int bdrv_register(const BlockDriver *drv, Error **errp);
COBLK_API const BlockDriver *bdrv_find_format(const char *name);

/** Raw-ish pass-through status for a node whose data lives 1:1 in its file. */
COBLK_API int coroutine_fn bdrv_co_block_status_from_file(BlockDriverState *bs,
                                                          bool want_zero, int64_t offset,
                                                          int64_t bytes, int64_t *pnum,
                                                          int64_t *map,
                                                          BlockDriverState **file);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_BLOCK_DRIVER_H */
