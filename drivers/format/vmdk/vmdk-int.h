/*
 * vmdk driver internals shared by the files of drivers/format/vmdk/:
 * descriptor.c (the text descriptor), sparse.c (hosted sparse extents: header,
 * grain directory, grain tables), stream.c (compressed grains of
 * streamOptimized extents), flat.c (flat / vmfs extents), create.c (image
 * creation) and vmdk.c (the driver table, open, request routing, info).
 *
 * Written from VMware's "Virtual Disk Format 1.1" specification.
 */
#ifndef COBLK_DRIVERS_FORMAT_VMDK_INT_H
#define COBLK_DRIVERS_FORMAT_VMDK_INT_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/fmt-defer.h"
#include "drivers/format/fmt-util.h"

#define VMDK_SECTOR ((uint64_t)512)
#define VMDK4_MAGIC 0x564d444bU             /* "KDMV" read little-endian */
#define VMDK3_MAGIC 0x44574f43U             /* "COWD" (vmfsSparse, unsupported) */
#define VMDK_GD_AT_END 0xffffffffffffffffULL /* streamOptimized: GD in the footer */

/* Header flags (specification section "Hosted Sparse Extent Header"). */
#define VMDK4_FLAG_NL_DETECT (1U << 0)
#define VMDK4_FLAG_RGD (1U << 1)
#define VMDK4_FLAG_ZERO_GRAIN (1U << 2)
#define VMDK4_FLAG_COMPRESS (1U << 16)
#define VMDK4_FLAG_MARKER (1U << 17)

#define VMDK_COMPRESS_NONE 0
#define VMDK_COMPRESS_DEFLATE 1

/* Stream markers. */
#define VMDK_MARKER_EOS 0
#define VMDK_MARKER_GT 1
#define VMDK_MARKER_GD 2
#define VMDK_MARKER_FOOTER 3

/* A grain table entry of 1 reads as zeroes when VMDK4_FLAG_ZERO_GRAIN is set. */
#define VMDK_GTE_ZEROED 1U

/*
 * Limits enforced on untrusted images (checked in descriptor.c and sparse.c):
 * - descriptor text: at most VMDK_MAX_DESC_BYTES (1 MiB), at most
 *   VMDK_MAX_EXTENTS extents, each line at most 4 KiB;
 * - numGTEsPerGT: 1..512 (the specification fixes 512);
 * - grainSize: a power of two, 1..VMDK_MAX_GRAIN_SECTORS sectors (16 MiB);
 * - capacity: at most BDRV_MAX_LENGTH bytes; the grain directory at most
 *   VMDK_MAX_GD_BYTES (32 MiB) and inside the file;
 * - compressed grains: at most a grain plus VMDK_SECTOR of deflate data.
 */
#define VMDK_MAX_DESC_BYTES (1024 * 1024)
#define VMDK_MAX_EXTENTS 4096
#define VMDK_MAX_GTES 512
#define VMDK_MAX_GRAIN_SECTORS 32768ULL
#define VMDK_MAX_GD_BYTES (32ULL * 1024 * 1024)
#define VMDK_GT_CACHE_SLOTS 32

/* ---------------------------------------------------------------------- */
/* The descriptor */

typedef enum VmdkExtentType {
    VMDK_EXT_FLAT,   /* FLAT, VMFS: guest data 1:1 at an offset in a file */
    VMDK_EXT_SPARSE, /* SPARSE (hosted sparse, "KDMV" header) */
    VMDK_EXT_ZERO,   /* ZERO: reads as zeroes, no file */
} VmdkExtentType;

typedef enum VmdkAccess {
    VMDK_ACCESS_RW,
    VMDK_ACCESS_RDONLY,
    VMDK_ACCESS_NOACCESS,
} VmdkAccess;

typedef struct VmdkDescExtent {
    VmdkAccess access;
    uint64_t sectors;
    VmdkExtentType type;
    char type_name[16];     /* as written: "SPARSE", "FLAT", "VMFS", ... */
    char *filename;         /* NULL for ZERO */
    uint64_t offset;        /* sectors, FLAT/VMFS */
} VmdkDescExtent;

typedef struct VmdkDesc {
    uint32_t version;
    uint32_t cid;
    uint32_t parent_cid;
    char create_type[64];
    char *parent_hint;      /* parentFileNameHint, or NULL */
    VmdkDescExtent *ext;
    int n_ext;
    /* The disk database. */
    char adapter_type[32];
    char hw_version[16];
    char tools_version[32];
    uint32_t cylinders, heads, sectors_per_track;
} VmdkDesc;

/* Parses text (len bytes, need not be NUL-terminated). what names the file in errors. */
int vmdk_desc_parse(const char *text, size_t len, VmdkDesc *d, const char *what,
                    Error **errp);
void vmdk_desc_free(VmdkDesc *d);
/* Formats the descriptor; returns malloc'd text or NULL (out of memory). */
char *vmdk_desc_format(const VmdkDesc *d);
/* Replaces the CID line of text; returns malloc'd text or NULL if there is none. */
char *vmdk_desc_set_cid(const char *text, uint32_t cid);
/*
 * Replaces the quoted file name of the k-th extent line with names[k] where
 * that is not NULL (k < n); returns malloc'd text or NULL (out of memory).
 */
char *vmdk_desc_rename_extents(const char *text, char *const *names, int n);
/*
 * Sets the sector count of the n-th extent line (from 0) of text and, when
 * cyls is not 0, the ddb.geometry.cylinders value; every other line is kept.
 * Returns malloc'd text, or NULL (out of memory, or no such extent line).
 */
char *vmdk_desc_resize(const char *text, int n, uint64_t sectors, uint32_t cyls);
/*
 * Inserts lines (complete extent lines, each ending in a newline) after the
 * n-th extent line (from 0) of text. Returns malloc'd text, or NULL (out of
 * memory, or no such extent line).
 */
char *vmdk_desc_insert_extents(const char *text, int n, const char *lines);

/* ---------------------------------------------------------------------- */
/* Extents */

/* One cached grain table (shared by all extents of a node). */
typedef struct VmdkGtSlot {
    int extent;             /* -1: empty */
    uint64_t gt_index;
    uint64_t lru;
    uint32_t gte[VMDK_MAX_GTES];
} VmdkGtSlot;

typedef struct VmdkExtent {
    VmdkExtentType type;
    BdrvChild *child;       /* the extent's file (bs->file for monolithic images) */
    char *filename;         /* as named in the descriptor, for info */
    char type_name[16];     /* the descriptor's type ("SPARSE", "FLAT", ...); "" if none */
    uint64_t start;         /* guest byte offset of the extent */
    uint64_t length;        /* bytes */
    bool read_only;         /* RDONLY or NOACCESS in the descriptor: writes fail */
    bool no_access;         /* NOACCESS: reads fail too (-EACCES) */
    uint64_t flat_offset;   /* FLAT: byte offset in the file */

    /* SPARSE */
    uint32_t version;
    uint32_t flags;
    uint64_t grain_size;    /* bytes */
    uint32_t gtes_per_gt;
    uint64_t gd_entries;
    uint32_t *gd;           /* sector offsets of the grain tables */
    uint32_t *rgd;          /* redundant directory, or NULL */
    uint64_t gd_offset;     /* bytes */
    uint64_t rgd_offset;    /* bytes, 0 if none */
    bool compressed;
    bool markers;
    uint64_t next_alloc;    /* byte offset where the next grain or table goes */
    /*
     * Plain sparse extents: grain tables (unit gt_index) whose cached copy
     * is ahead of the file; written whole, after a flush of the extent's
     * data, at the next guest flush, close, reopen read-only, resize, a
     * full set, or when the cache needs a slot and all hold dirty tables
     * (alloc.c, sparse.c). A dirty table never leaves the cache.
     */
    FmtDefer dirty;
    bool stream_written;    /* markers: grains appended, the end-of-stream marker is due */
} VmdkExtent;

typedef struct BDRVVmdkState {
    CoMutex lock;           /* grain table cache and allocation */
    /*
     * Allocating writes of hosted sparse extents whose data is being written
     * without the lock (alloc.c); units are guest sectors, each record covers
     * whole grains. Readers and writers of those grains wait for them; check,
     * resize and descriptor rewrites wait for all of them.
     */
    FmtInflightList allocs;
    VmdkExtent **extents;   /* n_extents pointers: an extent never moves (resize appends) */
    int n_extents;
    uint64_t size;          /* guest bytes */
    VmdkDesc desc;
    char *desc_text;        /* the descriptor as read (NUL-terminated) */
    bool desc_embedded;     /* in the sparse header's descriptor area of bs->file */
    uint64_t desc_offset;   /* bytes, embedded */
    uint64_t desc_capacity; /* bytes, embedded */
    bool cid_updated;
    uint64_t lru_clock;
    VmdkGtSlot *gt_cache;   /* VMDK_GT_CACHE_SLOTS slots */
} BDRVVmdkState;

/* stream.c: appends the end-of-stream marker (a zero sector) after the last grain. */
int vmdk_stream_finish_sync(VmdkExtent *e);

/* sparse.c */
/* Host byte offset of a plain grain, checked against the allocated area. */
static inline int vmdk_grain_host(const VmdkExtent *e, uint32_t gte, uint64_t *host)
{
    uint64_t h = (uint64_t)gte * VMDK_SECTOR;

    if (gte <= 1 || !range_within(h, e->grain_size, e->next_alloc)) {
        return -EIO;
    }
    *host = h;
    return 0;
}

/* A grain table entry that reads as zeroes (zeroed-grain flag set). */
static inline bool vmdk_gte_is_zero(const VmdkExtent *e, uint32_t gte)
{
    return gte == VMDK_GTE_ZEROED && (e->flags & VMDK4_FLAG_ZERO_GRAIN);
}

/* The allocs unit (guest sector) of the grain of extent byte off. */
static inline uint64_t vmdk_grain_unit(const VmdkExtent *e, uint64_t off)
{
    return (e->start + off - off % e->grain_size) / VMDK_SECTOR;
}

/* Waits until no allocating write of the grain of off is in flight; s->lock held. */
static inline void coroutine_fn vmdk_wait_grain(BDRVVmdkState *s, const VmdkExtent *e,
                                                uint64_t off)
{
    while (fmt_inflight_busy(&s->allocs, vmdk_grain_unit(e, off))) {
        fmt_inflight_wait(&s->allocs, &s->lock);
    }
}

/* Waits until no allocating write is in flight; s->lock held. */
static inline void coroutine_fn vmdk_wait_allocs(BDRVVmdkState *s)
{
    fmt_inflight_wait_all(&s->allocs, &s->lock);
}

/* Validates a hosted sparse header (and the footer of a stream) and loads the GD. */
int vmdk_sparse_open(BlockDriverState *bs, VmdkExtent *e, Error **errp);
/* Builds a hosted sparse header (512 bytes) from e's fields. */
void vmdk_sparse_header(uint8_t hdr[512], const VmdkExtent *e, uint64_t capacity,
                        uint64_t desc_sector, uint64_t desc_sectors, uint64_t overhead);
/*
 * Finds the grain table entry of guest byte off (within extent idx). *gte gets
 * the entry (0 if the grain table is absent); *slot the cached table (NULL if
 * absent). Called with s->lock held.
 */
int coroutine_fn vmdk_gte_lookup(BDRVVmdkState *s, int idx, uint64_t off, uint32_t *gte,
                                 VmdkGtSlot **slot);
/* Points the grain of off at sector value (GT and redundant GT); s->lock held. */
int coroutine_fn vmdk_gte_update(BDRVVmdkState *s, int idx, uint64_t off, uint32_t value);
int coroutine_fn vmdk_sparse_preadv(BlockDriverState *bs, int idx, uint64_t off, uint64_t bytes,
                                    IOVector *qiov, size_t qoff);
int coroutine_fn vmdk_sparse_block_status(BlockDriverState *bs, int idx, uint64_t off,
                                          uint64_t bytes, int64_t *pnum, int64_t *map,
                                          BlockDriverState **file);
/* Checks every grain table entry against the file (repairs nothing). */
int coroutine_fn vmdk_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);
/* Reads guest bytes below this image (backing file or zeroes) into buf. */
int coroutine_fn vmdk_read_below(BlockDriverState *bs, uint64_t guest_off, uint64_t bytes,
                                 uint8_t *buf);

/*
 * Gives a hosted sparse extent gd_entries grain directory entries, each with a
 * new zeroed grain table (and redundant one): in the padding of the
 * directories' last sectors, else by moving the directories to the end of the
 * file (the header's offsets switch last); -ENOTSUP for compressed extents.
 */
int coroutine_fn vmdk_sparse_grow_gd(VmdkExtent *e, uint64_t gd_entries);
/* Sets the capacity field (sectors) of a hosted sparse extent's header. */
int coroutine_fn vmdk_sparse_set_capacity(VmdkExtent *e, uint64_t sectors);

/*
 * Writes a GT entry range of one grain table (and its redundant copy):
 * entries [pos, pos + n) of table gt_index get vals (host order); s->lock held.
 */
int coroutine_fn vmdk_gte_update_range(BDRVVmdkState *s, int idx, uint64_t gt_index,
                                       uint32_t pos, uint32_t n, const uint32_t *vals);

/*
 * Sets entries [pos, pos + n) of grain table gt_index of plain sparse extent
 * idx to vals in the cache and marks the table dirty (written by
 * vmdk_commit_extent, after the data they map is durable); s->lock held.
 */
int coroutine_fn vmdk_gte_defer(BDRVVmdkState *s, int idx, uint64_t gt_index, uint32_t pos,
                                uint32_t n, const uint32_t *vals);
/* Flushes extent idx's file, then writes its dirty grain tables; s->lock held. */
int coroutine_fn vmdk_commit_extent(BDRVVmdkState *s, int idx);
/* vmdk_commit_extent for every extent (the first error, but all are tried). */
int coroutine_fn vmdk_commit_all(BDRVVmdkState *s);

/* alloc.c: writes or (zero) zeroes bytes at extent byte off of sparse extent idx. */
/*
 * The host offset of guest byte off of sparse extent idx when its grain is
 * plain, allocated, in a cached table, with no allocation of it in flight
 * and s->lock free: reads and in-place writes of it then need no lock
 * (sparse.c). False for anything else.
 */
bool vmdk_gte_plain_hit(BDRVVmdkState *s, int idx, uint64_t off, uint64_t *host);
int coroutine_fn vmdk_sparse_pwritev(BlockDriverState *bs, int idx, uint64_t off,
                                     uint64_t bytes, IOVector *qiov, size_t qoff, bool zero);

/* resize.c */
/* The descriptor text for size bytes with the n-th extent at sectors; NULL if out of memory. */
char *vmdk_resized_desc(BDRVVmdkState *s, uint64_t size, int n, uint64_t sectors);
/* Grows a hosted sparse extent's tables and header to len bytes (flushed). */
int coroutine_fn vmdk_grow_sparse_extent(VmdkExtent *e, uint64_t len, Error **errp);

/* grow.c */
/*
 * Grows a twoGbMaxExtent* image to size bytes by filling its last extent to
 * 2 GiB and adding extent files of at most 2 GiB (see grow.c); s->lock held.
 */
int coroutine_fn vmdk_grow_extents(BlockDriverState *bs, uint64_t size, Error **errp);

int coroutine_fn vmdk_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                  PreallocMode prealloc, BdrvRequestFlags flags, Error **errp);

/* stream.c */
/* Reads the compressed grain at sector gte of extent e into grain (grain_size bytes). */
int coroutine_fn vmdk_stream_read_grain(VmdkExtent *e, uint64_t grain_index, uint32_t gte,
                                        uint8_t *grain);
/* Compresses grain and appends it (with its marker); *sector gets where. */
int coroutine_fn vmdk_stream_write_grain(VmdkExtent *e, uint64_t grain_index,
                                         const uint8_t *grain, uint32_t *sector);

/* rename.c */
/* Renames the image, its extent files and their names in the descriptor. */
int coroutine_fn vmdk_co_rename(BlockDriverState *bs, const char *new_name, Error **errp);

/* parent.c: sets parentFileNameHint and parentCID (NULL backing_file: no parent). */
int coroutine_fn vmdk_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                             const char *backing_fmt, Error **errp);

/* flat.c */
int coroutine_fn vmdk_flat_preadv(VmdkExtent *e, uint64_t off, uint64_t bytes, IOVector *qiov,
                                  size_t qoff);
int coroutine_fn vmdk_flat_pwritev(VmdkExtent *e, uint64_t off, uint64_t bytes, IOVector *qiov,
                                   size_t qoff, BdrvRequestFlags flags);
int vmdk_flat_check(BlockDriverState *bs, VmdkExtent *e, Error **errp);

/* create.c */
extern const BlockCreateOptDesc vmdk_create_opts[];
int coroutine_fn vmdk_co_create_opts(const BlockDriver *drv, const char *filename,
                                     BlockOpts *options, Error **errp);
/*
 * Creates one extent file of sectors sectors at path, written and flushed: a
 * hosted sparse extent without descriptor (as twoGbMaxExtentSparse has,
 * zeroed_grain sets the zeroed-grain flag) or a flat file.
 */
int coroutine_fn vmdk_create_extent_file(const char *path, uint64_t sectors, bool sparse,
                                        bool zeroed_grain, Error **errp);

/*
 * stray.c: before a grow creates the extent file path (named name in the
 * descriptor): 0 if no such file exists; 1 if one did and was a leftover of
 * an interrupted grow, now replaced by the new extent file (created, synced);
 * -EEXIST (errp names the file and why) if it is anything else, left as it is.
 */
int coroutine_fn vmdk_take_stray_extent(BlockDriverState *bs, const char *path,
                                        const char *name, uint64_t sectors, bool sparse,
                                        bool zeroed, Error **errp);

/* vmdk.c */
/* Reads len bytes at off of c from plain code or a coroutine. */
int vmdk_pread_sync(BdrvChild *c, uint64_t off, void *buf, size_t len);
int coroutine_fn vmdk_co_pread(BdrvChild *c, uint64_t off, void *buf, size_t len);
int coroutine_fn vmdk_co_pwrite(BdrvChild *c, uint64_t off, const void *buf, size_t len);
/*
 * Appends e (malloc'd, or NULL) as the last extent; returns e, or NULL (and
 * frees e) when out of memory. Extents never move once appended: requests
 * keep pointers to them across yields while a resize appends more.
 */
VmdkExtent *vmdk_extent_append(BDRVVmdkState *s, VmdkExtent *e);

/* desc-write.c (see its file comment for the crash-safe orders) */
/*
 * Writes text as the descriptor: the embedded area (-ENOSPC if it does not
 * fit), or the descriptor file (a local one, named path, or when path is
 * NULL the one bs->file opened, is replaced atomically; another is
 * rewritten in place). The embedded area is not flushed at the end.
 */
int coroutine_fn vmdk_put_desc(BlockDriverState *bs, const char *path, const char *text);
/* vmdk_put_desc(bs, NULL, text), then a flush. */
int coroutine_fn vmdk_write_desc(BlockDriverState *bs, const char *text);
/*
 * At open, on the embedded descriptor area (cap bytes, NUL-terminated past
 * them): if its checksum line does not match (an update torn by a crash),
 * replaces the text by its copy in the upper half, written back to the file
 * if bs is open read-write; -EINVAL (errp says why) if no valid copy.
 */
int vmdk_desc_recover(BlockDriverState *bs, char *area, size_t cap, Error **errp);
/* Rewrites the descriptor with a new CID (first write after open). */
int coroutine_fn vmdk_update_cid(BlockDriverState *bs);

#endif /* COBLK_DRIVERS_FORMAT_VMDK_INT_H */
