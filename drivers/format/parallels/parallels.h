/*
 * The "parallels" format driver: Parallels / Virtuozzo expandable images
 * ("WithoutFreeSpace" and "WithouFreSpacExt"), written from QEMU's
 * docs/interop/parallels.txt. Internal to drivers/format/parallels/.
 *
 * Layout (all numbers little-endian):
 *   0   header, 64 bytes: magic[16], version (2), heads, cylinders, tracks
 *       (cluster size in sectors), nb_bat_entries, nb_sectors (u64), in_use,
 *       data_off (sectors), flags (bit 0: empty image), ext_off (u64, sectors)
 *   64  BAT: nb_bat_entries u32s; entry i maps guest cluster i to a file
 *       offset in sectors ("WithoutFreeSpace") or clusters ("...Ext"); 0 means
 *       unallocated (reads zero, or the backing file)
 *   data area from the data offset to the end of the file: clusters; the
 *       Format Extension cluster at ext_off and the dirty bitmap clusters it
 *       names live there too.
 *
 * The files: parallels.c (header, open, close, info, the driver table),
 * io.c (reads, writes, allocation, block status), discard.c, check.c (check and
 * repair), create.c (create, grow), ext.c (Format Extension), md5.c.
 */
#ifndef COBLK_DRIVERS_FORMAT_PARALLELS_H
#define COBLK_DRIVERS_FORMAT_PARALLELS_H

#include <coblk/block-driver.h>

#include "block/bytes.h"
#include "drivers/format/fmt-defer.h"
#include "drivers/format/fmt-grow.h"
#include "drivers/format/fmt-util.h"

#define PRL_MAGIC "WithoutFreeSpace"
#define PRL_MAGIC_EXT "WithouFreSpacExt"
#define PRL_VERSION 2u
#define PRL_HEADER_SIZE 64u
#define PRL_SECTOR 512u
#define PRL_INUSE_OPEN 0x746f6e59u      /* "Ynot": opened read-write */
#define PRL_INUSE_CLOSED 0x312e3276u    /* "v2.1": closed cleanly */
#define PRL_FLAG_EMPTY 1u               /* the image reads as all zeroes */
#define PRL_DEFAULT_CLUSTER (1u << 20)

/*
 * Limits for untrusted images (checked in parallels.c before anything is
 * sized from a field): cluster size (tracks) 1 .. PRL_MAX_TRACKS sectors
 * (64 MiB; QEMU and Parallels use 1 MiB, historically 31.5, 252 and 256 KiB);
 * at most PRL_MAX_BAT_ENTRIES entries (a 64 MiB table, 16 TiB at 1 MiB
 * clusters), and the table inside the file.
 */
#define PRL_MAX_TRACKS (1u << 17)
#define PRL_MAX_BAT_ENTRIES (1u << 24)
/* Default of the open option prealloc-size (QEMU's): the file grows 128 MiB at a time. */
#define PRL_PREALLOC_SIZE (128ULL << 20)
/* At most this many free clusters are remembered for reuse (discard.c); more stay unused. */
#define PRL_MAX_FREE (1u << 16)

/* Header field offsets. */
enum {
    PRL_OFF_MAGIC = 0,
    PRL_OFF_VERSION = 16,
    PRL_OFF_HEADS = 20,
    PRL_OFF_CYLINDERS = 24,
    PRL_OFF_TRACKS = 28,
    PRL_OFF_BAT_ENTRIES = 32,
    PRL_OFF_NB_SECTORS = 36,
    PRL_OFF_INUSE = 44,
    PRL_OFF_DATA_OFF = 48,
    PRL_OFF_FLAGS = 52,
    PRL_OFF_EXT_OFF = 56,
};

typedef struct BDRVParallelsState {
    uint8_t *meta;              /* header + BAT as on disk (meta_len bytes) */
    size_t meta_len;            /* round_up(64 + 4 * bat_entries, 512) */
    uint32_t bat_entries;
    uint32_t tracks;            /* cluster size in sectors */
    uint64_t cluster_size;      /* bytes */
    uint64_t unit;              /* bytes per BAT entry unit: 512 or cluster_size */
    uint64_t data_off;          /* start of the data area, bytes */
    uint64_t data_end;          /* end of the last used cluster (>= data_off) */
    uint64_t disk_size;         /* guest size, bytes */
    bool ext_format;            /* "WithouFreSpacExt" */
    bool unclean;               /* in_use said "open" and no check has repaired it */
    bool corrupt;               /* bad BAT entries: writes refused until check -r all */
    bool rw;                    /* in_use says "open" since we set it */
    /* Format Extension (ext.c) */
    uint64_t ext_host;          /* bytes; 0 = none */
    uint64_t *ext_clusters;     /* clusters it uses (its own and bitmap data), bytes */
    uint32_t n_ext_clusters;
    uint32_t n_bitmaps;
    bool ext_keep_only;         /* unknown NECESSARY / TRANSIT extension: no writes */
    /* Free clusters inside the data area (discard.c): indexes from the data offset. */
    uint32_t *free_cl;
    uint32_t n_free;
    FmtDefer bat_dirty;         /* BAT sectors ahead of the file (new clusters), io.c */
    /*
     * The file, grown ahead of new clusters (fmt-grow.h; grow.file_len is its
     * length as known to the driver) by prealloc_size bytes with
     * prealloc_mode (the open options prealloc-size and prealloc-mode, as
     * QEMU's), and trimmed to data_end at close and before a check.
     */
    FmtGrow grow;
    uint64_t prealloc_size;
    PreallocMode prealloc_mode;
    CoRwlock lock;              /* I/O shared; check, grow exclusive */
    CoMutex alloc_lock;         /* allocations and metadata writes, one at a time */
    /*
     * Allocating writes in flight, by guest cluster (alloc_lock, io.c): new
     * clusters are taken (data_end moved past them, or free ones) but their
     * data is not written yet, so the BAT still says unallocated. Readers do
     * not wait: until the entries are set they read what the clusters held
     * before, which is what the new clusters hold outside the bytes written.
     */
    FmtInflightList allocs;
} BDRVParallelsState;

/* BAT entry i (decoded). */
static inline uint32_t prl_entry(const BDRVParallelsState *s, uint32_t i)
{
    return ld_le32(s->meta + PRL_HEADER_SIZE + (size_t)i * 4);
}

static inline void prl_set_entry(BDRVParallelsState *s, uint32_t i, uint32_t v)
{
    st_le32(s->meta + PRL_HEADER_SIZE + (size_t)i * 4, v);
}

/* The file offset an entry names (no overflow: unit <= 64 MiB). */
static inline uint64_t prl_host(const BDRVParallelsState *s, uint32_t e)
{
    return (uint64_t)e * s->unit;
}

/* A host cluster the I/O paths may use: inside the data area, starting inside the file. */
static inline bool prl_host_ok(const BDRVParallelsState *s, uint64_t host)
{
    return host >= s->data_off && host < s->data_end && s->data_end - host >= s->cluster_size;
}

/* parallels.c */
int coroutine_fn prl_write_header(BlockDriverState *bs);
int coroutine_fn prl_mark_in_use(BlockDriverState *bs);
int coroutine_fn prl_write_header_durable(BlockDriverState *bs);
int coroutine_fn prl_write_bat_range(BlockDriverState *bs, uint32_t first, uint32_t count);
int coroutine_fn prl_commit_bat(BlockDriverState *bs);
void prl_scan_bat(BDRVParallelsState *s);

/* io.c */
int coroutine_fn prl_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                               IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn prl_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn prl_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      BdrvRequestFlags flags);
int coroutine_fn prl_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                     int64_t bytes, int64_t *pnum, int64_t *map,
                                     BlockDriverState **file);
int coroutine_fn prl_prepare_change(BlockDriverState *bs);
uint64_t prl_next_cluster(const BDRVParallelsState *s);
int coroutine_fn prl_co_flush_to_os(BlockDriverState *bs);

/* discard.c */
int coroutine_fn prl_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int prl_rebuild_free(BDRVParallelsState *s);
bool prl_take_free(BDRVParallelsState *s, uint64_t *host);
void prl_put_free(BDRVParallelsState *s, uint64_t host);

/* check.c */
int coroutine_fn prl_do_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);
int coroutine_fn prl_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);

/* create.c */
extern const BlockCreateOptDesc prl_create_opts[];
int coroutine_fn prl_co_create_opts(const BlockDriver *drv, const char *filename,
                                    BlockOpts *options, Error **errp);
int coroutine_fn prl_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                 PreallocMode prealloc, BdrvRequestFlags flags, Error **errp);

/* ext.c */
int coroutine_fn prl_ext_load(BlockDriverState *bs, uint64_t ext_off, Error **errp);
int coroutine_fn prl_ext_drop(BlockDriverState *bs);
void prl_ext_free(BDRVParallelsState *s);

#endif /* COBLK_DRIVERS_FORMAT_PARALLELS_H */
