/*
 * vpc driver internals shared by vpc.c (the driver) and vpc-resize.c
 * (truncate). Not installed. Written from the Virtual Hard Disk Image
 * Format Specification.
 */
#ifndef COBLK_DRIVERS_FORMAT_VPC_INT_H
#define COBLK_DRIVERS_FORMAT_VPC_INT_H

#include "block/block-int.h"

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
    CoMutex alloc_lock;         /* allocation and bitmap updates */
    CoRwlock move_lock;         /* dynamic I/O shared; resize (moves blocks) exclusive */
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
/* Resize (vpc-resize.c). */
int coroutine_fn vpc_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, Error **errp);

#endif /* COBLK_DRIVERS_FORMAT_VPC_INT_H */
