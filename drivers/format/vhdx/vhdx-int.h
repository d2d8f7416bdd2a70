/*
 * vhdx driver internals shared by drivers/format/vhdx/: header.c (file
 * identifier, the two headers, the region table, CRC-32C, GUIDs), log.c
 * (replay and write of the metadata log), metadata.c (the metadata region),
 * bat.c (the block allocation table), create.c and vhdx.c (the driver).
 *
 * Written from Microsoft's [MS-VHDX] specification.
 */
#ifndef COBLK_DRIVERS_FORMAT_VHDX_INT_H
#define COBLK_DRIVERS_FORMAT_VHDX_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"

#define VHDX_KiB ((uint64_t)1024)
#define VHDX_MiB (VHDX_KiB * 1024)
#define VHDX_HEADER1_OFFSET (64 * VHDX_KiB)
#define VHDX_HEADER2_OFFSET (128 * VHDX_KiB)
#define VHDX_REGION1_OFFSET (192 * VHDX_KiB)
#define VHDX_REGION2_OFFSET (256 * VHDX_KiB)
#define VHDX_HEADER_SIZE (4 * VHDX_KiB)
#define VHDX_REGION_SIZE (64 * VHDX_KiB)
#define VHDX_LOG_SECTOR 4096

/*
 * Limits on untrusted images (checked in header.c, metadata.c, bat.c, log.c):
 * - region table: at most 2047 entries, regions 1 MiB aligned, inside the
 *   file, not overlapping the first 1 MiB; unknown required regions refused;
 * - metadata table: at most 2047 entries, items inside the region and past
 *   its 64 KiB table; unknown required items refused;
 * - block size a power of two of 1..256 MiB; logical and physical sector
 *   size 512 or 4096; virtual size a multiple of the logical sector size, at
 *   most 64 TiB;
 * - BAT: entry count computed with checked arithmetic, at most
 *   VHDX_MAX_BAT_BYTES (256 MiB) and inside the BAT region; present blocks
 *   1 MiB or more into the file and inside it;
 * - log: length a multiple of 1 MiB, at most VHDX_MAX_LOG (256 MiB), inside
 *   the file; entries a multiple of 4 KiB, inside the log, with a valid
 *   CRC-32C, the header's log GUID and consistent descriptors; replayed
 *   writes stay below VHDX_MAX_FILE.
 */
#define VHDX_MAX_ENTRIES 2047
#define VHDX_MIN_BLOCK (1 * VHDX_MiB)
#define VHDX_MAX_BLOCK (256 * VHDX_MiB)
#define VHDX_MAX_DISK (64ULL * VHDX_MiB * VHDX_MiB)
#define VHDX_MAX_BAT_BYTES (256 * VHDX_MiB)
#define VHDX_MAX_LOG (256 * VHDX_MiB)
#define VHDX_MAX_FILE (VHDX_MAX_DISK * 2)
#define VHDX_PATH_MAX 4096

/* BAT entry states. */
#define VHDX_PAYLOAD_NOT_PRESENT 0
#define VHDX_PAYLOAD_UNDEFINED 1
#define VHDX_PAYLOAD_ZERO 2
#define VHDX_PAYLOAD_UNMAPPED 3
#define VHDX_PAYLOAD_FULLY_PRESENT 6
#define VHDX_PAYLOAD_PARTIALLY_PRESENT 7
#define VHDX_SB_NOT_PRESENT 0
#define VHDX_SB_PRESENT 6
#define VHDX_BAT_STATE_MASK 7ULL
#define VHDX_BAT_OFFSET_MASK (~((1ULL << 20) - 1))

typedef struct VhdxGuid {
    uint8_t b[16];
} VhdxGuid;

typedef struct VhdxHeader {
    uint64_t seq;
    VhdxGuid file_write_guid;
    VhdxGuid data_write_guid;
    VhdxGuid log_guid;
    uint16_t log_version;
    uint16_t version;
    uint32_t log_length;
    uint64_t log_offset;
} VhdxHeader;

/* space.c: reusable space (see there). */
#define VHDX_MAX_GAPS 64
#define VHDX_GAP_SCAN_MAX (1ULL << 20)

typedef struct VhdxGap {
    uint64_t off, len;      /* 1 MiB aligned */
} VhdxGap;

/* alloc.c: BAT sectors whose new entries wait for the next commit, at most. */
#define VHDX_DIRTY_MAX 64
/* partial.c: sector bitmap pages (4 KiB) changed in memory, at most. */
#define VHDX_SB_DIRTY_MAX 32

typedef struct BDRVVhdxState {
    CoMutex lock;           /* BAT, allocation, log and header updates */
    VhdxHeader hdr;         /* the current header */
    int cur_hdr;            /* 0: header 1, 1: header 2 */
    uint64_t bat_offset;
    uint64_t bat_length;
    uint64_t meta_offset;
    uint64_t meta_length;

    /* metadata */
    uint32_t block_size;
    uint32_t logical_sector;
    uint32_t physical_sector;
    uint64_t disk_size;
    uint32_t size_item_off; /* the Virtual Disk Size item, within the region */
    bool leave_allocated;
    bool has_parent;
    VhdxGuid page83;
    uint32_t parent_item_off; /* the parent locator item, within the region */
    uint32_t parent_item_len;
    VhdxGuid parent_linkage;  /* the parent's DataWriteGuid (differencing images) */
    VhdxGuid parent_linkage2;
    bool has_linkage2;

    /* BAT */
    uint64_t chunk_ratio;   /* payload blocks per sector bitmap block */
    uint64_t payload_blocks;
    uint64_t bat_entries;
    uint64_t *bat;          /* host order */
    uint64_t file_end;      /* where the next block goes (1 MiB aligned) */
    uint64_t zero_from;     /* space from here on lies past the file's end at open and
                               was not handed out since: it reads zero (space.c) */
    bool unknown_regions;   /* the region table has regions this driver does not know */
    bool gaps_known;        /* gaps[] is up to date (space.c) */
    int n_gaps;
    VhdxGap gaps[VHDX_MAX_GAPS];

    /* log and header state while writable */
    bool metadata_log;      /* open option metadata-log: BAT updates through the log */
    bool guids_updated;     /* FileWriteGuid / DataWriteGuid (/ LogGuid) set this session */
    bool log_guid_set;      /* LogGuid is set in the headers (cleared at close) */
    uint64_t log_seq;
    uint64_t log_head;      /* offset of the next entry within the log */

    /* allocating writes (alloc.c) */
    FmtInflightList allocs; /* payload blocks being allocated; waiters on allocs.wait */
    uint64_t dirty[VHDX_DIRTY_MAX]; /* file offsets of BAT sectors not written yet */
    uint32_t n_dirty;
    /* differencing partial writes (partial.c): sector bitmap pages set in memory */
    uint64_t sb_dirty[VHDX_SB_DIRTY_MAX]; /* their file offsets (4 KiB aligned) */
    uint8_t *sb_pages;      /* VHDX_SB_DIRTY_MAX pages, from the first partial write on */
    uint32_t n_sb_dirty;
} BDRVVhdxState;

/*
 * A payload block being allocated (alloc.c, partial.c): its in-flight
 * record, joinable (fmt-util.h), and its new home. A partial allocation
 * (differencing image) also gathers its joiners' ranges: their bits are set
 * with its own.
 */
typedef struct VhdxRange {
    uint64_t in, n;
    struct VhdxRange *next;
} VhdxRange;

typedef struct VhdxAlloc {
    FmtJoin j;                /* first: fmt_join_find's record is the VhdxAlloc */
    uint64_t host;
    VhdxRange *joined;        /* joiners' ranges whose data is written */
} VhdxAlloc;

/* header.c */
uint32_t vhdx_crc32c(uint32_t crc, const void *buf, size_t len);
/* CRC-32C of buf with the 4-byte checksum field at csum_off taken as zero. */
uint32_t vhdx_checksum(const uint8_t *buf, size_t len, size_t csum_off);
void vhdx_guid_generate(VhdxGuid *g);
bool vhdx_guid_is_zero(const VhdxGuid *g);
int vhdx_read_headers(BlockDriverState *bs, Error **errp);
void vhdx_header_encode(uint8_t buf[4096], const VhdxHeader *h);
/* Writes h (seq + 1) over the older header, twice, so both copies are current. */
int coroutine_fn vhdx_update_headers(BlockDriverState *bs, Error **errp);
int vhdx_read_region_table(BlockDriverState *bs, Error **errp);
/* Well-known GUIDs. */
extern const VhdxGuid vhdx_guid_bat, vhdx_guid_metadata, vhdx_guid_file_params,
    vhdx_guid_disk_size, vhdx_guid_page83, vhdx_guid_logical_sector,
    vhdx_guid_physical_sector, vhdx_guid_parent_locator;

/* metadata.c */
int vhdx_read_metadata(BlockDriverState *bs, Error **errp);

/* bat.c */
int vhdx_load_bat(BlockDriverState *bs, Error **errp);
uint64_t vhdx_bat_index(const BDRVVhdxState *s, uint64_t block);
/* BAT entries for payload blocks (differencing images: whole chunks). */
uint64_t vhdx_bat_entries(const BDRVVhdxState *s, uint64_t payload);
/* Sets the BAT entry of block (in place or through the log) once its data is durable. */
int coroutine_fn vhdx_bat_set(BlockDriverState *bs, uint64_t block, uint64_t entry);
/* Writes BAT entries [first, last) as whole 4 KiB sectors, in place or through the log. */
int coroutine_fn vhdx_write_bat(BlockDriverState *bs, uint64_t first, uint64_t last, bool log);
/* The same by BAT index (sector bitmap entries). */
int coroutine_fn vhdx_bat_set_idx(BlockDriverState *bs, uint64_t idx, uint64_t entry);

/* Finds overlapping blocks (repairs nothing). */
int coroutine_fn vhdx_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);

/* alloc.c */
/*
 * Where block (BAT entry e) goes: the space its entry kept when that overlaps
 * nothing else, else new space; 0 if there is none. Holds s->lock.
 */
uint64_t vhdx_block_home(BDRVVhdxState *s, uint64_t block, uint64_t e, bool *fresh);
/*
 * Zeroes the parts of the block at host that [in, in + n) leaves, unless the
 * block is fresh (vhdx_alloc_space): then it reads zero already, and the file
 * is only grown over it. Holds s->lock (a grow must not race a write past it).
 */
int coroutine_fn vhdx_fill_block(BlockDriverState *bs, uint64_t host, uint64_t in, uint64_t n,
                                 bool fresh);
/*
 * Writes guest bytes [in, in + n) of payload block: in place when present,
 * by vhdx_write_partial for a differencing image's partial write, else
 * allocating the block (or joining its allocation in flight).
 */
int coroutine_fn vhdx_write_block(BlockDriverState *bs, uint64_t block, uint64_t in, uint64_t n,
                                  IOVector *qiov, size_t qoff);
/*
 * Writes the BAT sectors holding entries set since the last commit: a flush
 * (their blocks' data), then the sectors through one log entry or in place.
 * Holds s->lock. Runs before every other BAT write.
 */
int coroutine_fn vhdx_commit(BlockDriverState *bs);
/* Waits until no allocation is in flight, then commits; holds s->lock. */
int coroutine_fn vhdx_alloc_drain(BlockDriverState *bs);
/*
 * Sets BAT entry idx in memory and marks its BAT sector dirty (committing
 * first when VHDX_DIRTY_MAX are). The data it points at is written. Holds
 * s->lock.
 */
int coroutine_fn vhdx_bat_defer(BlockDriverState *bs, uint64_t idx, uint64_t entry);
/* FmtJoinLanded of vhdx joiners: opaque is the joiner's VhdxRange. */
void vhdx_joined(FmtJoin *j, void *opaque);
/*
 * Allocates block for [in, in + n): a full block, or (partial) a
 * differencing image's partial one. Called with s->lock held; releases it.
 */
int coroutine_fn vhdx_alloc_block(BlockDriverState *bs, uint64_t block, uint64_t e,
                                  uint64_t in, uint64_t n, IOVector *qiov, size_t qoff,
                                  bool partial);

/* partial.c */
/*
 * A differencing image's write into part of a NOT_PRESENT or
 * PARTIALLY_PRESENT block (BAT entry e). Called with s->lock held; releases it.
 */
int coroutine_fn vhdx_write_partial(BlockDriverState *bs, uint64_t block, uint64_t e,
                                    uint64_t in, uint64_t n, IOVector *qiov, size_t qoff);
/*
 * A new partial block needs no zeroes (only its written sectors' bits are
 * ever set), but its used part must lie inside the file (bat.c checks that
 * at open): when it ends past the file's end, [in + n, used) is zeroed.
 */
int coroutine_fn vhdx_partial_extend(BlockDriverState *bs, uint64_t block, uint64_t host,
                                     uint64_t in, uint64_t n);
/* Sets the bits of a new partial block a (and its joiners'), then its entry. Holds s->lock. */
int coroutine_fn vhdx_partial_link(BlockDriverState *bs, VhdxAlloc *a, uint64_t in,
                                   uint64_t n);
/* Reads len bytes of the sector bitmap at byte (one 4 KiB page): memory first. */
int coroutine_fn vhdx_sb_read(BlockDriverState *bs, uint64_t byte, uint8_t *buf, uint64_t len);
/* The sector bitmap pages set in memory, for the next commit: their count. */
uint32_t vhdx_sb_dirty_count(const BDRVVhdxState *s);
/* Frees the sector bitmap page cache (close). */
void vhdx_sb_free(BDRVVhdxState *s);

/* log.c */
/* Replays a dirty log (writable) or refuses to open (read-only). */
int vhdx_log_open(BlockDriverState *bs, Error **errp);
/* Sets new write GUIDs and a LogGuid in the headers, once per writable session. */
int coroutine_fn vhdx_log_start(BlockDriverState *bs);
/* Writes buf (4 KiB aligned, len a multiple of 4 KiB) to file offset off through the log. */
int coroutine_fn vhdx_log_write(BlockDriverState *bs, uint64_t off, const uint8_t *buf,
                                size_t len);
/* Writes n 4 KiB sectors of buf to file offsets offs[i] through one log entry. */
int coroutine_fn vhdx_log_write_sectors(BlockDriverState *bs, const uint64_t *offs,
                                        const uint8_t *buf, uint32_t n);

/* parent.c */
void vhdx_guid_to_str(const VhdxGuid *g, char out[39]);
bool vhdx_guid_from_str(const char *s, VhdxGuid *g);
/* Parses the parent locator item; sets parent_linkage(2) and bs->backing_file. */
int vhdx_read_parent_locator(BlockDriverState *bs, uint32_t off, uint32_t len, Error **errp);
/* Opens the parent and checks its DataWriteGuid against parent_linkage(2). */
int vhdx_check_parent(BlockDriverState *bs, int flags, Error **errp);
/* Builds the parent locator item of a new differencing image; its length or -errno. */
long vhdx_build_parent_locator(uint8_t *out, size_t cap, const VhdxGuid *linkage,
                               const char *parent, Error **errp);
uint64_t vhdx_sb_index(const BDRVVhdxState *s, uint64_t block);
/* Whether the run of sectors at off (within one partial block) is present; its length. */
int coroutine_fn vhdx_sb_run(BlockDriverState *bs, uint64_t off, uint64_t len, uint64_t *run);
/* File offset of the bitmap byte of guest sector sec, and its bit. */
uint64_t vhdx_sb_byte(const BDRVVhdxState *s, uint64_t sec, unsigned *bit);

/* space.c */
/*
 * Where a new block of len bytes (a multiple of 1 MiB) goes: the first
 * unreferenced gap it fits, else the end of the file (s->file_end grows);
 * 0 if that would pass VHDX_MAX_FILE. *fresh (if fresh is not NULL) tells
 * whether the space reads zero (past s->zero_from). Called with s->lock held.
 */
uint64_t vhdx_alloc_space(BDRVVhdxState *s, uint64_t len, bool *fresh);
/* Forgets the gaps: the next allocation scans again (after a resize). */
void vhdx_space_invalidate(BDRVVhdxState *s);
/*
 * Whether the offset a non-present BAT entry idx kept (UNMAPPED, ZERO, ...)
 * may hold its block's data again: [off, off + block_size) is inside the file
 * and overlaps nothing else the image references. The entry is untrusted: a
 * bad one could point at the headers, the log, the BAT, the metadata or
 * another block. Linear in the BAT; runs only when such a block is written.
 */
bool vhdx_space_kept_ok(const BDRVVhdxState *s, uint64_t idx, uint64_t off);

/* rebase.c: sets the parent of a differencing image (rebase -u). */
int coroutine_fn vhdx_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                             const char *backing_fmt, Error **errp);

/* discard.c */
int coroutine_fn vhdx_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);

/* resize.c */
int coroutine_fn vhdx_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                  PreallocMode prealloc, BdrvRequestFlags flags, Error **errp);

/* create.c */
extern const BlockCreateOptDesc vhdx_create_opts[];
int coroutine_fn vhdx_co_create_opts(const BlockDriver *drv, const char *filename,
                                     BlockOpts *options, Error **errp);

/* vhdx.c */
/* Guest bytes of block (the last one may end with the disk). */
uint64_t vhdx_block_used(const BDRVVhdxState *s, uint64_t block);
int vhdx_pread_sync(BdrvChild *c, uint64_t off, void *buf, size_t len);
int coroutine_fn vhdx_co_pwrite(BdrvChild *c, uint64_t off, const void *buf, size_t len);
/* vhdx_co_pwrite() with BDRV_REQ_FUA: durable when it returns 0. */
int coroutine_fn vhdx_co_pwrite_fua(BdrvChild *c, uint64_t off, const void *buf, size_t len);
int coroutine_fn vhdx_co_pread(BdrvChild *c, uint64_t off, void *buf, size_t len);

#endif /* COBLK_DRIVERS_FORMAT_VHDX_INT_H */
