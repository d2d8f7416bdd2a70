/*
 * vpc driver internals shared by vpc.c (the driver) and vpc-resize.c
 * (truncate). Not installed. Written from the Virtual Hard Disk Image
 * Format Specification.
 */
#ifndef COBLK_DRIVERS_FORMAT_VPC_INT_H
#define COBLK_DRIVERS_FORMAT_VPC_INT_H

#include "block/block-int.h"
#include "drivers/format/fmt-grow.h"
#include "drivers/format/fmt-util.h"

#define VHD_FOOTER_SIZE 512
#define VHD_DYNHDR_SIZE 1024
#define VHD_SECTOR 512u
#define VHD_FIXED 2u
#define VHD_DYNAMIC 3u
#define VHD_DIFF 4u
#define VHD_BAT_UNUSED 0xffffffffu
#define VHD_NO_OFFSET UINT64_MAX
#define VHD_EPOCH 946684800         /* 2000-01-01T00:00:00Z */
#define VHD_DEFAULT_BLOCK (2u << 20)
#define VHD_BLOCK_MIN 4096u         /* limits on the block size (a power of two) */
#define VHD_BLOCK_MAX (256u << 20)
#define VHD_MAX_SIZE (2040ULL << 30) /* 2040 GiB, as the specification's limit */
#define VHD_BAT_MAX (VHD_MAX_SIZE / VHD_BLOCK_MIN)
#define VHD_MAX_CHS_SECTORS (65535ULL * 16 * 255)
#define VHD_LOCATORS 8
#define VHD_PATH_MAX 4096

/* Footer offsets. */
enum {
    FT_COOKIE = 0, FT_FEATURES = 8, FT_VERSION = 12, FT_DATA_OFFSET = 16, FT_TIMESTAMP = 24,
    FT_CREATOR = 28, FT_CREATOR_VER = 32, FT_CREATOR_OS = 36, FT_ORIG_SIZE = 40,
    FT_CUR_SIZE = 48, FT_CYLS = 56, FT_HEADS = 58, FT_SECS = 59, FT_TYPE = 60,
    FT_CHECKSUM = 64, FT_UUID = 68, FT_SAVED = 84,
    FT_GROW_MARK = 85,  /* reserved bytes: coblk's fixed-disk grow mark (vpc-resize.c) */
};

/* Dynamic header offsets. */
enum {
    DH_COOKIE = 0, DH_DATA_OFFSET = 8, DH_TABLE_OFFSET = 16, DH_VERSION = 24,
    DH_MAX_ENTRIES = 28, DH_BLOCK_SIZE = 32, DH_CHECKSUM = 36, DH_PARENT_UUID = 40,
    DH_PARENT_TIME = 56, DH_PARENT_NAME = 64, DH_LOCATORS = 576, DH_LOCATOR_SIZE = 24,
};

#define PLAT_W2RU 0x57327275u   /* "W2ru": relative Windows path, UTF-16LE */
#define PLAT_W2KU 0x57326b75u   /* "W2ku": absolute Windows path, UTF-16LE */
#define PLAT_MACX 0x4d616358u   /* "MacX": file:// URL, UTF-8 */

/* vpc-alloc.c: BAT sectors whose new entries wait for the next commit, at most. */
#define VPC_DIRTY_MAX 64

typedef struct BDRVVpcState {
    uint8_t footer[VHD_FOOTER_SIZE];
    uint8_t dynhdr[VHD_DYNHDR_SIZE];
    uint32_t *bat;              /* host order */
    uint32_t bat_entries;
    uint64_t bat_offset;
    uint32_t block_size;
    uint32_t bitmap_size;       /* bytes before each block's data */
    uint32_t type;
    int64_t size;               /* guest size */
    int64_t free_off;           /* where the next block goes (the trailing footer) */
    FmtGrow grow;               /* which space at the end reads zero (alloc_lock; no step) */
    CoMutex alloc_lock;         /* allocation and bitmap updates */
    CoRwlock move_lock;         /* dynamic I/O shared; resize (moves blocks) exclusive */
    uint32_t *free_slots;       /* sectors of discarded blocks to reuse (vpc-discard.c) */
    uint32_t n_free, cap_free;
    FmtInflightList allocs;     /* blocks being allocated; waiters on allocs.wait (vpc-alloc.c) */
    uint32_t dirty[VPC_DIRTY_MAX]; /* BAT sectors with entries not written yet */
    uint32_t n_dirty;
    bool footer_dirty;          /* the file grew since the footers were written */
    struct VpcPub *publish_head; /* bits records waiting for the shared flush */
    bool publishing;            /* a writer flushes and publishes a batch */
    unsigned publish_waiting;   /* bits records queued or being published */
    bool stale_footer;          /* fixed: an interrupted grow left the old footer at stale_off */
    int64_t stale_off;
} BDRVVpcState;

/* CHS geometry for a sector count, as the VHD specification's appendix computes it. */
void vpc_chs(uint64_t sectors, uint32_t *cyls, uint32_t *heads, uint32_t *spt);
/* Sets the checksum of a footer / of a dynamic header. */
void vpc_seal_footer(uint8_t *footer);
void vpc_seal_dynhdr(uint8_t *h);
/* Writes the footer at the end (and its copy at 0 for sparse disks). */
int coroutine_fn vpc_write_footers(BlockDriverState *bs);
/*
 * Rounds sectors up to a whole CHS geometry (as Virtual PC and QEMU do); false
 * if it is past the largest geometry (the size field must rule then).
 */
bool vpc_round_chs(uint64_t *sectors);
/* Writes the BAT sector that holds entry block. */
int coroutine_fn vpc_write_bat_entry(BlockDriverState *bs, uint32_t block);
/* Writes (vpc-alloc.c). */
/*
 * Where a new block goes at the end of the file when free_off is from: at
 * from, or just past it so that its data starts aligned (a gap of under
 * 1/32 of a block, at most 64 KiB).
 */
int64_t vpc_end_place(const BDRVVpcState *s, int64_t from);
/* Writes [in_block, in_block + n) of a dynamic or differencing disk's block. */
int coroutine_fn vpc_write_chunk(BlockDriverState *bs, uint32_t block, uint32_t in_block,
                                 int64_t n, IOVector *qiov, size_t qoff);
/*
 * Writes the BAT sectors holding entries set since the last commit (and the
 * footers when the file grew) after a flush of their blocks' data. Holds
 * alloc_lock.
 */
int coroutine_fn vpc_commit(BlockDriverState *bs);
/* Waits until no allocation or bitmap update is in flight, then commits; holds alloc_lock. */
int coroutine_fn vpc_alloc_drain(BlockDriverState *bs);

/* Discard (vpc-discard.c). */
int coroutine_fn vpc_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
/* Takes a discarded block's place (*at, bytes) for an allocation; false if none. */
bool vpc_free_slot_pop(BDRVVpcState *s, int64_t *at);
void vpc_free_slots_clear(BDRVVpcState *s);
/*
 * Dynamic and differencing disks at open: the unused block places before the
 * footer (file_len bytes in all) become free slots (vpc-discard.c).
 */
int coroutine_fn vpc_open_free_slots(BlockDriverState *bs, uint64_t file_len, Error **errp);
/* UTF-8 to UTF-16 (be or le); returns bytes written or -1 if invalid or over cap. */
long utf8_to_utf16(const char *in, bool be, uint8_t *out, size_t cap);
/*
 * Writes the parent locators (W2ru relative, MacX absolute URL) into area
 * (area_len zeroed bytes that lie at area_off in the file) and their entries
 * and the parent name into the dynamic header dh. backing is the name as
 * given, backing_path the name resolved against the image's folder.
 */
int vpc_build_locators(uint8_t *dh, uint8_t *area, size_t area_len, uint64_t area_off,
                       const char *backing, const char *backing_path, Error **errp);
#define VPC_LOCATOR_AREA (2 * VHD_PATH_MAX + 2 * VHD_SECTOR)
/* Parent file name of differencing disks (vpc-parent.c). */
int coroutine_fn vpc_co_change_backing_file(BlockDriverState *bs, const char *backing_file,
                                            const char *backing_fmt, Error **errp);
/* Raises free_off past the dynamic header and the parent locators' data. */
void vpc_note_meta_end(BDRVVpcState *s);
/* Resize (vpc-resize.c). */
/* Fixed disks: finishes a grow a crash interrupted (see vpc-resize.c). */
int coroutine_fn vpc_fixed_recover(BlockDriverState *bs, Error **errp);
/* Fixed disks: zeroes what a read got of a stale old footer (read-only opens). */
void vpc_fixed_mask_stale(BDRVVpcState *s, int64_t offset, int64_t bytes, IOVector *qiov,
                          size_t qiov_offset);
int coroutine_fn vpc_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, Error **errp);

#endif /* COBLK_DRIVERS_FORMAT_VPC_INT_H */
