/*
 * vdi driver internals shared by the files of drivers/format/vdi/: vdi.c (the
 * driver table, probe, open, close, reopen, guest flush), header.c (header
 * checks, reading the metadata, writing the header and the block map, the
 * deferred map commit), io.c (reads, writes, slot allocation, block status),
 * discard.c (releasing slots: discard, zero writes, compact, hole filling),
 * resize.c, check.c, meta.c (info, UUIDs, geometry, comment) and create.c.
 * The on-disk layout and the crash-safety rules are described in vdi.c.
 */
#ifndef COBLK_DRIVERS_FORMAT_VDI_INT_H
#define COBLK_DRIVERS_FORMAT_VDI_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/fmt-defer.h"
#include "drivers/format/fmt-grow.h"
#include "drivers/format/fmt-util.h"

#define VDI_SIGNATURE 0xbeda107fu
#define VDI_VERSION_1_1 0x00010001u
#define VDI_TYPE_DYNAMIC 1u
#define VDI_TYPE_STATIC 2u
#define VDI_HEADER_SIZE 384u        /* v1.1 header without the LCHS geometry */
#define VDI_HEADER_SIZE_PLUS 400u   /* with it */
#define VDI_SECTOR 512u
#define VDI_BLOCK_SIZE (1u << 20)
#define VDI_FREE 0xffffffffu
#define VDI_ZERO 0xfffffffeu
/* As VirtualBox and QEMU: the map must stay below 2 GiB. */
#define VDI_BLOCKS_MAX ((UINT32_C(0x80000000) - 512u) / 4u)

/* Absolute offsets of header fields (pre-header is 72 bytes). */
enum {
    VDI_OFF_TEXT = 0,
    VDI_OFF_SIG = 64,
    VDI_OFF_VERSION = 68,
    VDI_OFF_HDR_SIZE = 72,
    VDI_OFF_TYPE = 76,
    VDI_OFF_FLAGS = 80,
    VDI_OFF_COMMENT = 84,
    VDI_OFF_BMAP = 340,
    VDI_OFF_DATA = 344,
    VDI_OFF_CYLS = 348,
    VDI_OFF_HEADS = 352,
    VDI_OFF_SECS = 356,
    VDI_OFF_SECSIZE = 360,
    VDI_OFF_DISK = 368,
    VDI_OFF_BLKSIZE = 376,
    VDI_OFF_BLKEXTRA = 380,
    VDI_OFF_BLOCKS = 384,
    VDI_OFF_ALLOCATED = 388,
    VDI_OFF_UUID = 392,         /* 4 UUIDs of 16 bytes, in BlockUuidKind order */
    VDI_OFF_LCHS = 456,
    VDI_HDR_BUF = 512,          /* the header is read and written as one sector */
};

#define VDI_COMMENT_MAX 256
/* The file is grown this far past a new block (fmt-grow.h): 16 blocks per grow. */
#define VDI_GROW_STEP (16u * VDI_BLOCK_SIZE)

/*
 * A new block whose data write is in flight: its slot is reserved (counted,
 * owned, reading zero), its map entry not set yet. Other writes of the block
 * join it: they write their data into the slot at once, and complete with it
 * (the entry is published once all their data is written). Lives on the
 * writer's stack, listed in BDRVVdiState.allocs; fields under alloc_lock.
 */
typedef struct VdiAlloc {
    uint32_t block;
    uint32_t slot;
    FmtJoin j;                  /* in BDRVVdiState.allocs; other writes of the block join it */
} VdiAlloc;

typedef struct BDRVVdiState {
    uint8_t hdr[VDI_HDR_BUF];   /* first sector of the file, as on disk */
    uint8_t *map;               /* block map as on disk (LE u32s) */
    uint32_t *owner;            /* slot -> block that uses it, VDI_FREE if none */
    uint32_t blocks;            /* blocks in image */
    uint32_t allocated;         /* slots in use (header field) */
    uint32_t leaked;            /* slots below allocated no block owns (alloc_lock) */
    uint32_t block_size;
    uint32_t type;
    uint64_t disk_size;
    uint64_t off_bmap;
    uint64_t off_data;
    bool corrupt;               /* map entries out of range or shared: no allocation */
    bool modified;              /* the modification UUID was renewed since open */
    /*
     * Map sectors changed in memory, not yet in the file. Only the set's size
     * (FMT_DEFER_MAX sectors of 128 entries) bounds the allocations that wait
     * for a flush: a commit flushes every data write before it, which stalled
     * sequential allocating writes when it came every 128 allocations; an
     * entry lost in a crash loses only writes no guest flush covered.
     */
    FmtDefer dirty;
    FmtGrow grow;               /* the file grown ahead of new slots (alloc_lock) */
    CoRwlock lock;              /* I/O shared; slot release / moves exclusive */
    CoMutex alloc_lock;         /* one allocation at a time */
    FmtInflightList allocs;     /* blocks whose data write is in flight (alloc_lock) */
} BDRVVdiState;

static inline uint32_t vdi_entry(const BDRVVdiState *s, uint32_t block)
{
    return ld_le32(s->map + (size_t)block * 4);
}

static inline void vdi_set_entry(BDRVVdiState *s, uint32_t block, uint32_t v)
{
    st_le32(s->map + (size_t)block * 4, v);
}

static inline bool vdi_is_slot(const BDRVVdiState *s, uint32_t e)
{
    return e < s->allocated;
}

static inline int64_t vdi_slot_offset(const BDRVVdiState *s, uint32_t slot)
{
    return (int64_t)(s->off_data + (uint64_t)slot * s->block_size);
}

/* ---------------------------------------------------------------------- */
/* Shared between the files (each documented at its definition) */

/* header.c */
void vdi_uuid_swap(uint8_t out[16], const uint8_t in[16]);
int coroutine_fn vdi_write_header(BlockDriverState *bs);
int coroutine_fn vdi_write_map(BlockDriverState *bs);
int coroutine_fn vdi_commit(BlockDriverState *bs, bool sync);
int coroutine_fn vdi_trim(BlockDriverState *bs);
void vdi_build_owner(BDRVVdiState *s);
void vdi_count_leaked(BDRVVdiState *s);
int coroutine_fn vdi_co_read_meta(BlockDriverState *bs, BDRVVdiState *s, Error **errp);

/* io.c */
void vdi_chunk(const BDRVVdiState *s, int64_t offset, int64_t bytes, uint32_t *block,
               uint32_t *in_block, int64_t *n);
int coroutine_fn vdi_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                               IOVector *qiov, size_t qiov_offset,
                               BdrvRequestFlags flags);
int coroutine_fn vdi_mark_modified(BlockDriverState *bs);
int coroutine_fn vdi_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                IOVector *qiov, size_t qiov_offset,
                                BdrvRequestFlags flags);
int coroutine_fn vdi_co_block_status(BlockDriverState *bs, bool want_zero,
                                     int64_t offset, int64_t bytes, int64_t *pnum,
                                     int64_t *map, BlockDriverState **file);

/* discard.c */
int coroutine_fn vdi_copy_slot(BlockDriverState *bs, uint32_t from, uint32_t to,
                               uint8_t *buf);
int coroutine_fn vdi_fill_holes(BlockDriverState *bs, BlockProgressFn *progress,
                                void *opaque);
int coroutine_fn vdi_release_blocks(BlockDriverState *bs, uint32_t first, uint32_t last);
int coroutine_fn vdi_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int coroutine_fn vdi_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, BdrvRequestFlags flags);
int coroutine_fn vdi_co_compact(BlockDriverState *bs, BlockProgressFn *progress,
                                void *opaque, Error **errp);

/* resize.c */
int coroutine_fn vdi_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags,
                                 Error **errp);

/* check.c */
int coroutine_fn vdi_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                              BdrvCheckMode fix);

/* meta.c */
int vdi_get_info(BlockDriverState *bs, BlockDriverInfo *bdi);
int vdi_get_uuid(BlockDriverState *bs, BlockUuidKind kind, uint8_t uuid[16]);
int coroutine_fn vdi_co_set_uuid(BlockDriverState *bs, BlockUuidKind kind,
                                 const uint8_t uuid[16], Error **errp);
int vdi_get_geometry(BlockDriverState *bs, BlockGeometry *geo);
int coroutine_fn vdi_co_set_geometry(BlockDriverState *bs, const BlockGeometry *geo,
                                     Error **errp);
int vdi_get_comment(BlockDriverState *bs, char **out);
int coroutine_fn vdi_co_set_comment(BlockDriverState *bs, const char *comment,
                                    Error **errp);

/* create.c */
extern const BlockCreateOptDesc vdi_create_opts[];
int coroutine_fn vdi_co_create_opts(const BlockDriver *drv, const char *filename,
                                    BlockOpts *options, Error **errp);

#endif /* COBLK_DRIVERS_FORMAT_VDI_INT_H */
