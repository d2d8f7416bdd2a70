/*
 * coblk - image-level operations: what coblk-img info / check / snapshot /
 * rebase / amend / measure and VirtualBox-style metadata tools need from a
 * format, beyond reading and writing guest data.
 *
 * Each operation has a driver callback (at the end of BlockDriver, see
 * block-driver.h) and a public wrapper here. Wrappers callable from plain
 * code run the callback in a coroutine in the node's AioContext; from a
 * coroutine they call it directly. A format that lacks a callback makes the
 * wrapper return -ENOTSUP (with errp naming the format, where there is one).
 */
#ifndef COBLK_IMAGE_H
#define COBLK_IMAGE_H

#include <coblk/block.h>

#ifdef __cplusplus
extern "C" {
#endif

/* --------------------------------------------------------------------- */
/* Create / amend options, for "-o help" and for validation. */

typedef enum BlockOptType {
    BLOCK_OPT_STRING,
    BLOCK_OPT_BOOL,
    BLOCK_OPT_NUMBER,
    BLOCK_OPT_SIZE,
} BlockOptType;

/** One create option; a driver's list ends with name == NULL. */
typedef struct BlockCreateOptDesc {
    const char *name;       /**< qemu-img's name: "size", "compat", "cluster_size" */
    BlockOptType type;
    const char *help;       /**< one line, as qemu-img -o help prints it */
    const char *def_value;  /**< printed default, or NULL */
} BlockCreateOptDesc;

/** The create options of a format (or protocol), or NULL if unknown. */
COBLK_API const BlockCreateOptDesc *bdrv_create_opts(const char *format);

/* --------------------------------------------------------------------- */
/* Information */

typedef struct BlockDriverInfo {
    int64_t cluster_size;       /**< 0 if the format has no clusters */
    int64_t vm_state_offset;    /**< where vmstate lives in the guest address space */
    bool is_dirty;              /**< needs a check / log replay (dirty bit set) */
    bool needs_compressed_writes; /**< only compressed writes allowed (vmdk streamOptimized) */
} BlockDriverInfo;

/** Fills bdi (zeroed first). Returns 0 or -ENOTSUP / -errno. */
COBLK_API int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);

/**
 * The format-specific part of "coblk-img info": a malloc'd JSON object
 * text, the "data" member of qemu-img's "format-specific" (for qcow2:
 * {"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": false,
 * "refcount-bits": 16, "corrupt": false, "extended-l2": false}), with keys
 * in the order qemu-img prints them. NULL if the format has none.
 */
COBLK_API char *bdrv_get_specific_info(BlockDriverState *bs, Error **errp);

/** Bytes the node's image occupies on its storage (st_blocks), or -errno. */
COBLK_API int64_t bdrv_get_allocated_file_size(BlockDriverState *bs);

/* --------------------------------------------------------------------- */
/* Check and repair (coblk-img check) */

typedef enum BdrvCheckMode {
    BDRV_FIX_NONE = 0,
    BDRV_FIX_LEAKS = 1,     /**< -r leaks */
    BDRV_FIX_ERRORS = 2,    /**< -r all (with BDRV_FIX_LEAKS) */
} BdrvCheckMode;

typedef struct BdrvCheckResult {
    int corruptions;
    int leaks;
    int check_errors;        /**< the check itself failed (I/O error) */
    int corruptions_fixed;
    int leaks_fixed;
    int64_t image_end_offset;
    /* fragmentation info (qemu-img's "allocated/total clusters" line) */
    int64_t allocated_clusters;
    int64_t total_clusters;
    int64_t fragmented_clusters;
    int64_t compressed_clusters;
    /** Where the driver reports each problem found; NULL = coblk_warn. */
    void (*report)(void *opaque, const char *msg);
    void *report_opaque;
} BdrvCheckResult;

/**
 * Checks (and with fix, repairs) the image. Fills res (counts start at 0;
 * report/report_opaque are kept). Returns 0 when the check ran (its
 * findings are in res) or -errno when it could not run (-ENOTSUP if the
 * format cannot be checked).
 */
COBLK_API int bdrv_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);

/** For drivers: reports one problem found by a check (printf-style). */
COBLK_API void bdrv_check_report(BdrvCheckResult *res, const char *fmt, ...) COBLK_PRINTF(2, 3);

/* --------------------------------------------------------------------- */
/* Internal snapshots (coblk-img snapshot, emulator savevm/loadvm) */

typedef struct BlockSnapshotInfo {
    char id_str[128];
    char name[256];
    uint64_t vm_state_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount;            /**< (uint64_t)-1 if unknown */
    int64_t disk_size;          /**< guest size when taken */
} BlockSnapshotInfo;

/** Creates a snapshot; an empty id_str gets the next free id. */
COBLK_API int bdrv_snapshot_create(BlockDriverState *bs, BlockSnapshotInfo *sn, Error **errp);
/** Reverts the image to the snapshot whose id or name is name_or_id. */
COBLK_API int bdrv_snapshot_goto(BlockDriverState *bs, const char *name_or_id, Error **errp);
/** Deletes the snapshot matching id and/or name (either may be NULL). */
COBLK_API int bdrv_snapshot_delete(BlockDriverState *bs, const char *id, const char *name,
                                   Error **errp);
/** Lists snapshots: *psn is malloc'd (free() it). Returns the count or -errno. */
COBLK_API int bdrv_snapshot_list(BlockDriverState *bs, BlockSnapshotInfo **psn);
/**
 * Makes an internal snapshot the content of a read-only image until it is
 * closed (qemu-img convert -l / measure -l). id and name may be NULL (any);
 * param is "snapshot.id=ID,snapshot.name=NAME" or an id or name.
 */
COBLK_API int bdrv_snapshot_load_tmp(BlockDriverState *bs, const char *id, const char *name,
                                     Error **errp);
COBLK_API int bdrv_snapshot_load_tmp_param(BlockDriverState *bs, const char *param,
                                           Error **errp);

/** vmstate area of the current state (emulator savevm); returns bytes or -errno. */
COBLK_API int bdrv_save_vmstate(BlockDriverState *bs, const void *buf, int64_t pos, int64_t size);
COBLK_API int bdrv_load_vmstate(BlockDriverState *bs, void *buf, int64_t pos, int64_t size);

/* --------------------------------------------------------------------- */
/* Backing files, amend, commit, measure */

/**
 * Rewrites the backing file name and format stored in the image (rebase,
 * commit). backing_file NULL removes the link. Does not reopen the chain.
 */
COBLK_API int bdrv_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                       const char *backing_fmt, Error **errp);

/** Changes create options of an existing image in place (coblk-img amend). */
COBLK_API int bdrv_amend_options(BlockDriverState *bs, BlockOpts *options, bool force,
                                 Error **errp);

/** Makes every cluster unallocated again (commit without -d). */
COBLK_API int bdrv_make_empty(BlockDriverState *bs, Error **errp);

typedef struct BlockMeasureInfo {
    uint64_t required;          /**< bytes a new image needs for in_bs's data */
    uint64_t fully_allocated;   /**< bytes with every cluster allocated */
    uint64_t bitmaps;           /**< bytes persistent bitmaps need */
    bool has_bitmaps;
} BlockMeasureInfo;

/**
 * Measures an image of format with create options (size, cluster_size, ...),
 * holding the data of in_bs (may be NULL: size from options).
 */
COBLK_API int bdrv_measure(const char *format, BlockOpts *options, BlockDriverState *in_bs,
                           BlockMeasureInfo *out, Error **errp);

/* --------------------------------------------------------------------- */
/* VirtualBox VD-style metadata (vbox-img setuuid / geometry / compact) */

typedef enum BlockUuidKind {
    BLOCK_UUID_IMAGE = 0,
    BLOCK_UUID_MODIFICATION,
    BLOCK_UUID_PARENT,
    BLOCK_UUID_PARENT_MODIFICATION,
} BlockUuidKind;

COBLK_API int bdrv_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16]);
COBLK_API int bdrv_set_uuid(BlockDriverState *bs, BlockUuidKind kind, const uint8_t uuid[16],
                            Error **errp);

typedef struct BlockGeometry {
    uint32_t cylinders;
    uint32_t heads;
    uint32_t sectors;
} BlockGeometry;

/** Physical (BIOS) geometry stored in the image. */
COBLK_API int bdrv_get_geometry(BlockDriverState *bs, BlockGeometry *geo);
COBLK_API int bdrv_set_geometry(BlockDriverState *bs, const BlockGeometry *geo, Error **errp);

/** Image comment (vdi, vmdk ddb.comment); *out malloc'd. */
COBLK_API int bdrv_get_comment(BlockDriverState *bs, char **out);
COBLK_API int bdrv_set_comment(BlockDriverState *bs, const char *comment, Error **errp);

typedef void BlockProgressFn(void *opaque, int64_t done, int64_t total);

/** Releases blocks that are zero or discarded and shrinks the file, in place. */
COBLK_API int bdrv_compact(BlockDriverState *bs, BlockProgressFn *progress, void *opaque,
                           Error **errp);

/* --------------------------------------------------------------------- */
/* Persistent dirty bitmaps (qcow2; qemu-img bitmap, convert --bitmaps) */

typedef struct BlockBitmapInfo {
    char *name;
    uint64_t granularity;       /**< bytes of the disk per bit */
    bool enabled;               /**< 'auto': tracks every write to the image */
    bool in_use;                /**< not saved properly: inconsistent, unusable */
    bool usable;                /**< false if in use or with unknown extra data */
} BlockBitmapInfo;

typedef enum BlockBitmapOp {
    BLOCK_BITMAP_ADD = 0,       /**< new empty bitmap (granularity, disabled) */
    BLOCK_BITMAP_REMOVE,
    BLOCK_BITMAP_CLEAR,         /**< every bit to 0 */
    BLOCK_BITMAP_ENABLE,
    BLOCK_BITMAP_DISABLE,
    BLOCK_BITMAP_MERGE,         /**< name |= src_name of src_bs (NULL: same image) */
} BlockBitmapOp;

typedef struct BlockBitmapRequest {
    BlockBitmapOp op;
    const char *name;
    uint64_t granularity;       /**< add: 0 picks the default (cluster size, 4K..64K) */
    bool disabled;              /**< add: start disabled */
    BlockDriverState *src_bs;   /**< merge: the source image, NULL for the same one */
    const char *src_name;       /**< merge: the source bitmap */
} BlockBitmapRequest;

/** Lists the bitmaps stored in the image; returns their count, *out malloc'd. */
COBLK_API int bdrv_bitmap_list(BlockDriverState *bs, BlockBitmapInfo **out);
COBLK_API void bdrv_bitmap_list_free(BlockBitmapInfo *list, int n);

/**
 * Whether [offset, offset + *pnum) is dirty (1) or clean (0) in a bitmap,
 * for the longest run starting at offset within bytes; -errno if the bitmap
 * is missing or unusable. Coroutine or plain context (NBD exports it).
 */
COBLK_API int bdrv_bitmap_query(BlockDriverState *bs, const char *name, int64_t offset,
                                int64_t bytes, int64_t *pnum);

/** Applies one operation and makes it durable in the image. */
COBLK_API int bdrv_bitmap_modify(BlockDriverState *bs, const BlockBitmapRequest *req,
                                 Error **errp);

/** Timestamps a format stores (vpc: the footer's creation time, the parent's mtime). */
typedef enum BlockTimestampKind {
    BLOCK_TIMESTAMP_CREATION = 0,           /**< when the image was created */
    BLOCK_TIMESTAMP_PARENT_MODIFICATION,    /**< the parent's time when linked */
} BlockTimestampKind;

/**
 * A timestamp stored in the image, as seconds since 1970-01-01 UTC.
 * -ENOTSUP if the format (or this image) has no such field.
 */
COBLK_API int bdrv_get_timestamp(BlockDriverState *bs, BlockTimestampKind kind,
                                 int64_t *unix_seconds);
COBLK_API int bdrv_set_timestamp(BlockDriverState *bs, BlockTimestampKind kind,
                                 int64_t unix_seconds, Error **errp);

/**
 * The parent (backing) file name stored in the image: *out is malloc'd, or
 * NULL when the image has none. -ENOTSUP if the format cannot have one.
 */
COBLK_API int bdrv_get_parent_filename(BlockDriverState *bs, char **out);
/**
 * Stores a new parent file name (NULL: none), keeping the stored parent
 * format: bdrv_change_backing_file() for every format that supports it.
 */
COBLK_API int bdrv_set_parent_filename(BlockDriverState *bs, const char *parent, Error **errp);

/**
 * Renames the open image to new_name, with the files it consists of (vmdk
 * extents are renamed after the image and the descriptor is rewritten).
 * new_name must not exist. Images made of one file of the "file" protocol
 * are renamed by the library; others need the driver's support (-ENOTSUP).
 * Images that use this one as their parent are not updated.
 */
COBLK_API int bdrv_rename(BlockDriverState *bs, const char *new_name, Error **errp);

/** What a driver offers, derived from its table (bdrv_driver_capabilities). */
enum {
    BDRV_CAP_FORMAT = 1u << 0,      /**< an image format */
    BDRV_CAP_PROTOCOL = 1u << 1,    /**< a protocol (file, nbd, ...) */
    BDRV_CAP_FILTER = 1u << 2,      /**< a filter (blkdebug, ...) */
    BDRV_CAP_CREATE = 1u << 3,      /**< creates images */
    BDRV_CAP_WRITE = 1u << 4,       /**< writes (else read-only) */
    BDRV_CAP_BACKING = 1u << 5,     /**< backing / parent images */
    BDRV_CAP_DISCARD = 1u << 6,
    BDRV_CAP_RESIZE = 1u << 7,
    BDRV_CAP_CHECK = 1u << 8,
    BDRV_CAP_SNAPSHOTS = 1u << 9,
    BDRV_CAP_UUID = 1u << 10,
    BDRV_CAP_GEOMETRY = 1u << 11,
    BDRV_CAP_COMMENT = 1u << 12,
    BDRV_CAP_TIMESTAMP = 1u << 13,
    BDRV_CAP_COMPACT = 1u << 14,
    BDRV_CAP_AMEND = 1u << 15,
    BDRV_CAP_RENAME = 1u << 16,     /**< own rename, or a single-file format */
};

/** BDRV_CAP_* bits of the named driver (0 if unknown). */
COBLK_API unsigned bdrv_driver_capabilities(const char *name);
/** The name of one BDRV_CAP_* bit ("snapshots"), or NULL. */
COBLK_API const char *bdrv_capability_name(unsigned cap);
/** File extensions of the named driver (no dot), NULL-terminated; NULL if none. */
COBLK_API const char *const *bdrv_driver_extensions(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_IMAGE_H */
