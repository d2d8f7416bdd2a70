/*
 * qcow2 format driver: internal header shared by the files of this folder.
 *
 * Written from the qcow2 specification (QEMU docs/interop/qcow2.txt).
 *
 * Files:
 *   qcow2.c     driver table, open/close, options, info, change_backing_file
 *   header.c    header parse/validate/write, extensions, feature bits
 *   cache.c     L2 and refcount block caches (write-back, LRU)
 *   refcount.c  refcount get/set (1..64 bits), cluster allocation and freeing,
 *               refcount table growth
 *   cluster.c   guest offset -> host mapping, L2 entry decoding, L1/L2 updates
 *   alloc.c     allocating writes: in-flight allocations, COW of partial clusters
 *   io.c        read, write, write-zeroes, discard, flush, block status
 *   compress.c  zlib / zstd cluster compression codecs
 *   compress-deflate.c  deflate compression: ISA-L, zlib fallback, incompressible data
 *   compress-pool.c  compression on worker threads (slots)
 *   cread.c     compressed reads: decompressed-cluster cache, parallel inflation
 *   create.c    image creation and the create option list
 *   resize.c    truncate (grow and shrink), preallocation
 *   overlap.c   metadata overlap checks and the corrupt bit
 *   bufpool.c   pooled bounce buffers for COW
 *
 * Locking: s->lock (a CoMutex) protects every metadata structure below (L1,
 * caches, refcount table, allocation list, header fields). It is held while
 * metadata is read or written, never during guest data I/O.
 *
 * For snapshot.c / check.c (to be added): the snapshot table is parsed into
 * s->snapshots at open (qcow2_read_snapshot_table); use
 *   qcow2_update_cluster_refcount() / qcow2_alloc_clusters() / qcow2_free_clusters()
 *   qcow2_get_refcount(), qcow2_cache_flush_all(), qcow2_write_l1_entries(),
 *   qcow2_update_header() (rewrites header + extensions, keeps unknown ones),
 *   qcow2_check_overlap() before writing any metadata,
 *   qcow2_signal_corruption() for inconsistencies,
 * all with s->lock held (or the node drained).
 */
#ifndef COBLK_QCOW2_H
#define COBLK_QCOW2_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <zlib.h>

#include "block/block-int.h"
#include "block/bytes.h"

#define QCOW2_MAGIC 0x514649fbU /* "QFI\xfb" */

/* ---------------------------------------------------------------------- */
/* Limits enforced on untrusted images (checked at open, see header.c) */

#define QCOW2_MIN_CLUSTER_BITS 9             /* 512 B */
#define QCOW2_MAX_CLUSTER_BITS 21            /* 2 MiB */
#define QCOW2_MAX_L1_BYTES (32ULL << 20)     /* L1 table <= 32 MiB */
#define QCOW2_MAX_REFTABLE_BYTES (8ULL << 20) /* refcount table <= 8 MiB */
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_SNAPSHOT_TABLE (64ULL << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024
#define QCOW2_MAX_BACKING_NAME 1023
#define QCOW2_MAX_OFFSET (1ULL << 56)        /* host offsets < 2^56 */
#define QCOW2_V2_HEADER_LEN 72
#define QCOW2_V3_HEADER_LEN 104
#define QCOW2_MAX_DATA_FILE_NAME 4095

/* Incompatible, compatible and autoclear feature bits. */
#define QCOW2_INCOMPAT_DIRTY (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1fULL
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ULL << 1)

/* Header extension types. */
#define QCOW2_EXT_END 0x00000000U
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acaU
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857U
#define QCOW2_EXT_BITMAPS 0x23852875U
#define QCOW2_EXT_CRYPTO 0x0537be77U
#define QCOW2_EXT_DATA_FILE 0x44415441U

/* L1/L2 entry bits. */
#define QCOW_OFLAG_COPIED (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW_OFLAG_ZERO (1ULL << 0)
#define L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define REFT_OFFSET_MASK 0xfffffffffffffe00ULL
#define L1E_RESERVED_MASK 0x7f000000000001ffULL
#define L2E_STD_RESERVED_MASK 0x3f000000000001feULL

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* Subclusters (extended L2). */
#define QCOW2_SUBCLUSTERS 32

/* Overlap-check categories (bit mask of metadata kinds checked). */
enum {
    QCOW2_OL_HEADER = 1 << 0,
    QCOW2_OL_ACTIVE_L1 = 1 << 1,
    QCOW2_OL_ACTIVE_L2 = 1 << 2,
    QCOW2_OL_REFTABLE = 1 << 3,
    QCOW2_OL_REFBLOCK = 1 << 4,
    QCOW2_OL_SNAPSHOT_TABLE = 1 << 5,
    QCOW2_OL_INACTIVE_L1 = 1 << 6,
    QCOW2_OL_INACTIVE_L2 = 1 << 7,
    QCOW2_OL_BITMAP_DIR = 1 << 8,
    QCOW2_OL_CONSTANT = QCOW2_OL_HEADER | QCOW2_OL_ACTIVE_L1 | QCOW2_OL_REFTABLE |
                        QCOW2_OL_SNAPSHOT_TABLE | QCOW2_OL_INACTIVE_L1 | QCOW2_OL_BITMAP_DIR,
    QCOW2_OL_CACHED = QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFBLOCK,
    QCOW2_OL_ALL = QCOW2_OL_CACHED | QCOW2_OL_INACTIVE_L2,
};

/* ---------------------------------------------------------------------- */
/* Caches (cache.c) */

typedef struct Qcow2CacheEntry {
    uint64_t offset;    /* host offset of the table; 0 = empty slot */
    uint64_t lru;       /* last use (cache clock) */
    int ref;            /* users holding the table (not evictable) */
    bool dirty;
} Qcow2CacheEntry;

typedef struct Qcow2Cache {
    int size;               /* number of entries */
    size_t table_size;      /* bytes of one table (the cluster size) */
    uint8_t *mem;           /* size * table_size bytes */
    Qcow2CacheEntry *e;
    uint64_t clock;
    int hint;               /* slot of the last lookup: tried first */
    bool is_l2;             /* L2 cache (written after refcounts) or refcount cache */
    int32_t *hash;          /* open addressing, offset -> entry index, -1 = empty */
    uint32_t hash_mask;     /* hash slots - 1 (a power of two >= 2 * size) */
} Qcow2Cache;

/* ---------------------------------------------------------------------- */
/* Snapshots (parsed at open; managed by snapshot.c, to be added) */

typedef struct Qcow2Snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id_str;
    char *name;
    uint64_t disk_size;
    uint64_t vm_state_size;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount;
    uint32_t extra_data_size;
    uint8_t *unknown_extra;     /* extra data beyond what we parse, kept verbatim */
    uint32_t unknown_extra_size;
} Qcow2Snapshot;

/* An unknown header extension, kept verbatim when the header is rewritten. */
typedef struct Qcow2UnknownExt {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
    struct Qcow2UnknownExt *next;
} Qcow2UnknownExt;

/* A named feature bit from the feature name table extension. */
typedef struct Qcow2FeatureName {
    uint8_t type;   /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[47];
} Qcow2FeatureName;

/* A persistent dirty bitmap from the bitmap directory (bitmap.c). */
typedef struct Qcow2Bitmap {
    char *name;
    uint32_t flags;             /* QCOW2_BME_* as on disk */
    uint8_t gran_bits;
    uint64_t table_offset;      /* host offset of the bitmap table, 0 if none */
    uint32_t table_size;        /* entries */
    uint8_t *extra;             /* type-specific extra data, kept verbatim */
    uint32_t extra_size;
    uint8_t *data;              /* the bits while loaded (read-write use), else NULL */
    uint64_t data_bytes;        /* ceil(ceil(size / granularity) / 8) */
} Qcow2Bitmap;

#define QCOW2_BME_IN_USE (1U << 0)
#define QCOW2_BME_AUTO (1U << 1)
#define QCOW2_BME_EXTRA_COMPAT (1U << 2)

/* ---------------------------------------------------------------------- */
/* In-flight allocations (alloc.c) */

typedef struct Qcow2Alloc {
    uint64_t guest_start;       /* first byte of the first cluster */
    uint64_t guest_end;         /* end of the last cluster */
    uint64_t host;              /* host offset of the first new cluster */
    int nb_clusters;
    /*
     * Guest range written to the host clusters (guest data plus COW). The
     * whole clusters, or with extended L2 entries only the subclusters the
     * write touches when the old entry has no data to keep.
     */
    uint64_t write_start, write_end;
    bool fill;                  /* extended L2: fills subclusters of an existing cluster */
    bool skip_head, skip_tail;  /* COW head / tail reads as zero and so does the new
                                 * cluster (fresh): not written */
    bool fresh;                 /* new clusters past data_hwm: they read as zeroes */
    CoQueue waiters;            /* writes to an overlapping range wait here */
    struct Qcow2Alloc *next;
} Qcow2Alloc;

/* Clusters whose refcount drops once the L2/L1 tables no longer referencing
 * them are durable (see qcow2_free_clusters_deferred). */
typedef struct Qcow2PendingFree {
    uint64_t offset;
    uint64_t bytes;
    int type;           /* QCOW2_DISCARD_*: which pass-discard-* option applies */
} Qcow2PendingFree;

/* Why clusters are freed (selects the pass-discard-* option). */
enum {
    QCOW2_DISCARD_OTHER = 0,
    QCOW2_DISCARD_REQUEST,
    QCOW2_DISCARD_SNAPSHOT,
    QCOW2_DISCARD_NEVER,
};

/* A set of bounce buffers (bufpool.c). */
typedef struct Qcow2Buf {
    uint8_t *cow;               /* 2 clusters: head and tail of an allocating write */
    uint8_t *cbuf;              /* 2 clusters: compressed data (COW from a compressed cluster) */
    uint8_t *dbuf;              /* 1 cluster: its decompressed data */
    struct Qcow2Codec *codec;   /* decompressor contexts, kept with the set */
    struct Qcow2Buf *next;
} Qcow2Buf;

typedef struct Qcow2BufPool {
    Qcow2Buf *free;
    int count, in_use, max;
    CoQueue waiters;
} Qcow2BufPool;

/* Runtime options (qcow2.c). */
typedef struct Qcow2Opts {
    uint64_t l2_cache, refcount_cache, cache_size, clean_interval;
    bool has_l2, has_rc, has_cache, lazy, has_lazy;
    bool discard_request, discard_snapshot, discard_other;
    int overlap;
    uint64_t dcache_bytes, workers;     /* compressed-cache-size, compress-workers */
    bool has_dcache, has_workers;
} Qcow2Opts;

/*
 * Runtime state as it was before a reopen's commit, kept until the reopen
 * ends so that a later failure (the new limits) can restore it (qcow2.c).
 */
typedef struct Qcow2ReopenUndo {
    bool valid;
    int l2_n, rc_n;             /* cache sizes in tables */
    int overlap;
    bool discard_request, discard_snapshot, discard_other, lazy;
    uint64_t clean_interval;
    bool dcache_set;            /* compressed-cache-size given, and its value */
    uint64_t dcache_bytes;
    int workers;                /* compress-workers */
} Qcow2ReopenUndo;

/* ---------------------------------------------------------------------- */
/* Driver state */

typedef struct Qcow2WriteBatch Qcow2WriteBatch;

typedef struct BDRVQcow2State {
    /* Header */
    uint32_t version;
    int cluster_bits;
    uint64_t cluster_size;
    uint64_t cluster_offset_mask;   /* compressed: host offset bits */
    int csize_shift;                /* compressed: sector count position */
    uint64_t csize_mask;
    int l2_bits;                    /* log2(L2 entries per table) */
    int l2_size;                    /* entries per L2 table */
    int l2_entry_size;              /* 8, or 16 with extended L2 */
    uint64_t subcluster_size;
    int subcluster_bits;
    uint64_t size;                  /* guest size */
    uint32_t crypt_method;
    uint64_t backing_file_offset;
    uint32_t backing_file_size;
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    int refcount_order;
    int refcount_bits;
    uint64_t refcount_max;
    int refcount_block_bits;        /* log2(refcount entries per block) */
    uint32_t header_length;
    uint8_t compression_type;

    /* L1 table (in memory, big-endian on disk; host order here) */
    uint64_t l1_table_offset;
    uint32_t l1_size;
    uint64_t *l1_table;
    uint32_t l1_dirty_lo, l1_dirty_hi;  /* dirty index range [lo, hi) */

    /* Refcount table (host order) */
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint64_t refcount_table_size;       /* entries */
    uint64_t *refcount_table;
    uint64_t refcount_table_used;       /* entries past this one are all 0 */
    uint64_t free_cluster_index;        /* allocation scan starts here */
    /*
     * The image file reads as zeroes from data_hwm on: it is at least the
     * file's length at open (or after a refcount rebuild) and the end of every
     * cluster handed out or written at a chosen place since (grow.c).
     */
    uint64_t data_hwm;
    /* Grow-ahead (grow.c) */
    uint64_t file_len_known;            /* a lower bound of bs->file's length */
    uint64_t grow_floor;                /* file length before the first grow-ahead */
    bool grown;                         /* the file was grown ahead: trim at close */
    bool grow_off;                      /* growing failed (or no data in bs->file): never */

    /* Snapshots (see snapshot.c, to be added) */
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size;            /* bytes of the table on disk */
    Qcow2Snapshot *snapshots;

    /* Extensions */
    Qcow2FeatureName *feature_names;
    int nb_feature_names;
    Qcow2UnknownExt *unknown_exts;
    char *image_data_file;              /* data file name from the header */
    uint64_t bitmap_ext_offset;         /* bitmap directory (overlap checks) */
    uint64_t bitmap_ext_size;
    Qcow2Bitmap *bitmaps;               /* parsed directory (autoclear bit set) */
    uint32_t nb_bitmaps;
    bool bitmaps_loaded;                /* enabled ones in memory, marked in_use */

    /* Children */
    BdrvChild *data_file;               /* == bs->file without an external data file */

    /* Caches */
    Qcow2Cache *l2_cache;
    Qcow2Cache *refcount_cache;
    uint64_t cache_clean_interval;      /* seconds, 0 = never */
    AioTimer *cache_clean_timer;

    /* Runtime */
    CoMutex lock;
    Qcow2Alloc *allocs;                 /* in-flight allocating writes */
    Qcow2WriteBatch *wbatch;            /* open batch of new-cluster data writes (wbatch.c) */
    uint64_t wbatch_writes;             /* batches written with more than one member */
    uint64_t wbatch_joined;             /* data writes that joined another's batch */
    Qcow2PendingFree *pending_free;
    int nb_pending_free, pending_free_cap;
    bool l2_needs_barrier;              /* refcounts/data must be flushed before L2 writes */
    bool use_lazy_refcounts;
    bool dirty_set;                     /* we set the dirty bit in the file */
    bool discard_request;               /* pass-discard-request */
    bool discard_snapshot;              /* pass-discard-snapshot */
    bool discard_other;                 /* pass-discard-other */
    int overlap_check;                  /* QCOW2_OL_* mask */
    bool corrupt_signalled;
    bool cread_warned;                  /* a compressed cluster did not inflate (cread.c) */
    struct Qcow2CState *cstate;         /* compression slots (compress-pool.c) */
    struct Qcow2DCache *dcache;         /* decompressed clusters (cread.c) */
    uint64_t dcache_bytes;              /* compressed-cache-size, if dcache_set */
    bool dcache_set;
    int compress_workers;               /* compress-workers, 0 = default */
    Qcow2Opts reopen_opts;              /* staged by reopen_prepare */
    bool reopen_to_rw;                  /* staged by reopen_prepare */
    bool bitmaps_pending;               /* read-write again: load bitmaps at the next write */
    int8_t status_recurse;              /* block status asks the file: -1 not decided yet */
    Qcow2Cache *reopen_l2_cache;        /* resized caches staged by reopen_prepare */
    Qcow2Cache *reopen_refcount_cache;
    Qcow2ReopenUndo reopen_undo;        /* kept by reopen_commit until reopen_finish */
    uint64_t free_byte_offset;          /* where the next compressed cluster may go, or 0 */
    Qcow2BufPool bufpool;               /* COW / compressed bounce buffers */
} BDRVQcow2State;

/* Types of a guest cluster (or subcluster) mapping. */
typedef enum Qcow2MapType {
    QCOW2_MAP_UNALLOCATED,      /* read from backing (or zero) */
    QCOW2_MAP_ZERO_PLAIN,       /* zero, no host cluster */
    QCOW2_MAP_ZERO_ALLOC,       /* zero, host cluster preallocated */
    QCOW2_MAP_NORMAL,           /* data at host offset */
    QCOW2_MAP_COMPRESSED,       /* compressed cluster */
} Qcow2MapType;

static inline uint64_t qcow2_offset_into_cluster(const BDRVQcow2State *s, uint64_t off)
{
    return off & (s->cluster_size - 1);
}

static inline uint64_t qcow2_start_of_cluster(const BDRVQcow2State *s, uint64_t off)
{
    return off & ~(s->cluster_size - 1);
}

static inline uint64_t qcow2_l1_index(const BDRVQcow2State *s, uint64_t off)
{
    return off >> (s->cluster_bits + s->l2_bits);
}

static inline int qcow2_l2_index(const BDRVQcow2State *s, uint64_t off)
{
    return (int)((off >> s->cluster_bits) & (uint64_t)(s->l2_size - 1));
}

static inline bool qcow2_has_data_file(const BDRVQcow2State *s)
{
    return s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE;
}

static inline bool qcow2_data_file_raw(const BDRVQcow2State *s)
{
    return s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW;
}

static inline bool qcow2_extl2(const BDRVQcow2State *s)
{
    return s->incompatible_features & QCOW2_INCOMPAT_EXTL2;
}

/* L1 entries needed to map size bytes with the given geometry. */
static inline uint64_t qcow2_l1_entries_for(uint64_t size, int cluster_bits, int l2_bits)
{
    return div_round_up_u64(size, 1ULL << (cluster_bits + l2_bits));
}

/*
 * Fails with -EFBIG and a message naming filename when a guest of size bytes
 * needs more L1 entries than the 32 MiB table holds (resize.c).
 */
int qcow2_check_guest_size(const char *filename, uint64_t size, int cluster_bits, int l2_bits,
                           Error **errp);

/* Reads / writes L2 entry i of a cached table (bitmap: extended L2 word). */
static inline uint64_t qcow2_l2_get(const BDRVQcow2State *s, const uint8_t *t, int i)
{
    return ld_be64(t + (size_t)i * s->l2_entry_size);
}
static inline uint64_t qcow2_l2_get_bitmap(const BDRVQcow2State *s, const uint8_t *t, int i)
{
    return s->l2_entry_size == 16 ? ld_be64(t + (size_t)i * 16 + 8) : 0;
}
static inline void qcow2_l2_set(const BDRVQcow2State *s, uint8_t *t, int i, uint64_t v)
{
    st_be64(t + (size_t)i * s->l2_entry_size, v);
}
static inline void qcow2_l2_set_bitmap(const BDRVQcow2State *s, uint8_t *t, int i, uint64_t v)
{
    if (s->l2_entry_size == 16) {
        st_be64(t + (size_t)i * 16 + 8, v);
    }
}

/* Reads / writes len bytes of a child at off (coroutine context). */
static inline int coroutine_fn qcow2_pread(BdrvChild *c, int64_t off, int64_t len, void *buf)
{
    IOVector q;

    iovector_init_buf(&q, buf, (size_t)len);
    return bdrv_co_preadv(c, off, len, &q, 0);
}

static inline int coroutine_fn qcow2_pwrite(BdrvChild *c, int64_t off, int64_t len,
                                            const void *buf)
{
    IOVector q;

    iovector_init_buf(&q, (void *)buf, (size_t)len);
    return bdrv_co_pwritev(c, off, len, &q, 0);
}

/* ---------------------------------------------------------------------- */
/* header.c */

/* Parses and validates the header and its extensions (bs->file). */
int coroutine_fn qcow2_read_header(BlockDriverState *bs, BDRVQcow2State *s, int flags,
                                   Error **errp);
/* Rewrites the header cluster (fields + extensions + backing name). */
int coroutine_fn qcow2_update_header(BlockDriverState *bs);
/* Writes only the incompatible feature word (dirty / corrupt bits). */
int coroutine_fn qcow2_write_incompat(BlockDriverState *bs);
/* Sets / clears the dirty bit on disk (lazy refcounts). */
int coroutine_fn qcow2_mark_dirty(BlockDriverState *bs);
int coroutine_fn qcow2_mark_clean(BlockDriverState *bs);
/* Name of an incompatible feature bit (feature table, else built-in, else NULL). */
const char *qcow2_feature_name(const BDRVQcow2State *s, int type, int bit);
/* Reads the L1 and refcount tables named by the header. */
int coroutine_fn qcow2_read_tables(BlockDriverState *bs, BDRVQcow2State *s, Error **errp);
/* Reads the snapshot table (validated; see snapshot.c for the rest). */
int coroutine_fn qcow2_read_snapshot_table(BlockDriverState *bs, BDRVQcow2State *s, Error **errp);
void qcow2_free_header_state(BDRVQcow2State *s);
/* Checks that [off, off+len) is a valid cluster-aligned table within limits. */
int coroutine_fn qcow2_validate_table(BlockDriverState *bs, uint64_t off, uint64_t entries,
                         uint64_t entry_len, uint64_t max_bytes, const char *what,
                         Error **errp);

/* ---------------------------------------------------------------------- */
/* cache.c */

Qcow2Cache *qcow2_cache_create(int entries, size_t table_size, bool is_l2);
void qcow2_cache_destroy(Qcow2Cache *c);
int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                 uint8_t **table);
/*
 * The cached table at offset, or NULL; never yields. Takes no reference: the
 * table may go as soon as the caller yields, so it must be done with it by then.
 */
uint8_t *qcow2_cache_peek(Qcow2Cache *c, uint64_t offset);
/* As get, but the table is new: zero-filled, not read from disk. */
int coroutine_fn qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                       uint8_t **table);
void qcow2_cache_put(Qcow2Cache *c, uint8_t **table);
void qcow2_cache_mark_dirty(Qcow2Cache *c, uint8_t *table);
int coroutine_fn qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c);
/* Drops the entry for a freed table (its contents are not written). */
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);
/* Drops clean, unused entries (cache-clean-interval). */
void qcow2_cache_clean(Qcow2Cache *c);
bool qcow2_cache_contains(Qcow2Cache *c, uint64_t offset);
/* True if no table is dirty or in use (the cache may be replaced). */
bool qcow2_cache_idle(const Qcow2Cache *c);
/*
 * Writes everything in order: refcount blocks, flush, L2 tables, flush,
 * L1, flush, then applies deferred frees. The crash-safe barrier.
 */
int coroutine_fn qcow2_cache_flush_all(BlockDriverState *bs);

/* ---------------------------------------------------------------------- */
/* refcount.c */

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index,
                                    uint64_t *refcount);
/* Adds delta (+1 / -1, ...) to the refcount of every cluster in [offset, offset+len). */
int coroutine_fn qcow2_update_cluster_refcount(BlockDriverState *bs, uint64_t offset,
                                               uint64_t len, int64_t delta);
/* Allocates n contiguous clusters (refcount 1); returns the host offset or -errno. */
int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, uint64_t n);
/*
 * Allocates the first run of 1..n contiguous free clusters; *got = its
 * length; *fresh (if not NULL) says whether the run lies past data_hwm (it
 * reads as zeroes until written).
 */
int64_t coroutine_fn qcow2_alloc_clusters_upto(BlockDriverState *bs, uint64_t n, uint64_t *got,
                                               bool *fresh);
/* End of the last cluster whose refcount is not 0 (0 if none) in *end. */
int coroutine_fn qcow2_refcount_end(BlockDriverState *bs, uint64_t *end);
/* Drops a reference now (only for clusters no durable metadata references). */
int coroutine_fn qcow2_free_clusters(BlockDriverState *bs, uint64_t offset, uint64_t len,
                                     int type);
/* Drops a reference once the tables that stopped referencing it are durable. */
int qcow2_free_clusters_deferred(BlockDriverState *bs, uint64_t offset, uint64_t len, int type);
int coroutine_fn qcow2_apply_pending_frees(BlockDriverState *bs);
/* Recomputes refcount_table_used after the table was loaded or replaced. */
void qcow2_reftable_count_used(BDRVQcow2State *s);
/* Refcount entry access in a refcount block (bits = refcount_bits). */
uint64_t qcow2_refblock_get(const BDRVQcow2State *s, const uint8_t *blk, uint64_t i);
void qcow2_refblock_set(const BDRVQcow2State *s, uint8_t *blk, uint64_t i, uint64_t v);
int coroutine_fn qcow2_write_reftable(BlockDriverState *bs, uint64_t offset,
                                      const uint64_t *table, uint64_t entries);

/* ---------------------------------------------------------------------- */
/* grow.c: growing the image file ahead of allocations, trimming at close */

/* Sets data_hwm and file_len_known from the file's length (open, rebuild). */
int coroutine_fn qcow2_grow_init(BlockDriverState *bs);
/* [.., end) of the file was handed out or written: data_hwm moves past it. */
void qcow2_note_written(BDRVQcow2State *s, uint64_t end);
/* Guest data clusters up to end were handed out: grow the file ahead of them if needed. */
void coroutine_fn qcow2_grow_ahead(BlockDriverState *bs, uint64_t end);

/*
 * Without s->lock: writes v at host (new clusters of an in-flight allocation),
 * joined with the adjacent data writes of concurrent allocations (wbatch.c).
 */
int coroutine_fn qcow2_write_new_data(BlockDriverState *bs, uint64_t host, IOVector *v);
/* Under s->lock, metadata flushed: cuts the grown file's unused tail. */
int coroutine_fn qcow2_trim_grown(BlockDriverState *bs);

/* ---------------------------------------------------------------------- */
/* cluster.c */

/*
 * Maps [offset, offset + *bytes) (shortened to one run of one type, within
 * one L2 table); *host is the host offset for NORMAL / ZERO_ALLOC, the raw L2
 * entry for COMPRESSED. Call with s->lock held.
 */
int coroutine_fn qcow2_get_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                       uint64_t *host, Qcow2MapType *type);
/* qcow2_get_host_offset taking s->lock itself, or without it on a cache hit while it is free. */
int coroutine_fn qcow2_map_locked(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                  uint64_t *host, Qcow2MapType *type);

/* co_mutex_is_locked(&s->lock), inline for the read hit path. */
static inline bool qcow2_lock_busy(const BDRVQcow2State *s)
{
    return atomic_load_explicit((const _Atomic unsigned *)&s->lock.locked,
                                memory_order_relaxed) != 0;
}

/* qcow2_cache_peek() with the last table looked up tried inline first. */
static inline uint8_t *qcow2_cache_peek_hint(Qcow2Cache *c, uint64_t offset)
{
    Qcow2CacheEntry *e = &c->e[c->hint];

    if (e->offset == offset) {
        e->lru = ++c->clock;
        return c->mem + (size_t)c->hint * c->table_size;
    }
    return qcow2_cache_peek(c, offset);
}

/*
 * The common read hit, without the lock: true, with the host offset of
 * offset in *host, if [offset, offset + bytes) lies inside one cluster whose
 * standard L2 entry is a plain allocated cluster (no flag but COPIED,
 * aligned, in range) in a cached table, and no coroutine holds s->lock.
 * A graph runs in one thread, so while no coroutine is in the middle of a
 * metadata update (they all hold s->lock) and nothing yields between the
 * lookup and the use of its answer, the tables are consistent. False for
 * anything else, which qcow2_map_locked() then handles (and reports
 * corruption for). The host range it answers is within QCOW2_MAX_OFFSET.
 * The entry must also have the flags in need (QCOW_OFLAG_COPIED for a write
 * in place: a cluster a snapshot shares is copied first).
 */
static inline bool qcow2_map_plain_hit_need(BDRVQcow2State *s, uint64_t offset,
                                            uint64_t bytes, uint64_t *host, uint64_t need)
{
    uint64_t cmask = s->cluster_size - 1, l1i = qcow2_l1_index(s, offset), l2off, l2e, h;
    uint8_t *l2;

    if (qcow2_lock_busy(s) || qcow2_extl2(s) || (offset & cmask) + bytes > s->cluster_size ||
        l1i >= s->l1_size) {
        return false;
    }
    l2off = s->l1_table[l1i] & L1E_OFFSET_MASK;
    if (!l2off || (l2off & cmask) || !(l2 = qcow2_cache_peek_hint(s->l2_cache, l2off))) {
        return false;
    }
    l2e = qcow2_l2_get(s, l2, qcow2_l2_index(s, offset));
    h = (l2e & L2E_OFFSET_MASK) + (offset & cmask);
    if ((l2e & ~(L2E_OFFSET_MASK | QCOW_OFLAG_COPIED)) || (l2e & cmask) ||
        !(l2e & L2E_OFFSET_MASK) || h + s->cluster_size > QCOW2_MAX_OFFSET ||
        (l2e & need) != need) {
        return false;
    }
    *host = h;
    return true;
}

static inline bool qcow2_map_plain_hit(BDRVQcow2State *s, uint64_t offset, uint64_t bytes,
                                       uint64_t *host)
{
    return qcow2_map_plain_hit_need(s, offset, bytes, host, 0);
}

/* Gets the L2 table for offset, allocating (or COWing) it if create. */
int coroutine_fn qcow2_get_l2_table(BlockDriverState *bs, uint64_t offset, bool create,
                                    uint8_t **l2, int *l2_index);
int coroutine_fn qcow2_write_l1_entries(BlockDriverState *bs);
/* Decodes a compressed descriptor into its host offset and byte count. */
void qcow2_decode_compressed(const BDRVQcow2State *s, uint64_t l2e, uint64_t *off,
                             uint64_t *len);
/* Grows the L1 table to at least min_size entries. */
int coroutine_fn qcow2_grow_l1_table(BlockDriverState *bs, uint64_t min_size);
/* Classifies one L2 entry (with its subcluster bitmap); -EIO if invalid. */
int qcow2_classify_entry(BlockDriverState *bs, uint64_t l2e, uint64_t bitmap, int sc,
                         Qcow2MapType *type);

/* ---------------------------------------------------------------------- */
/* alloc.c */

int coroutine_fn qcow2_co_pwritev_alloc(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        IOVector *qiov, size_t qiov_offset, unsigned flags);
int coroutine_fn qcow2_co_copy_range_to(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        BdrvCopyFillFn *fill, void *opaque);
/* The first in-flight allocation overlapping guest [start, end), or NULL. */
Qcow2Alloc *qcow2_find_alloc_overlap(BDRVQcow2State *s, uint64_t start, uint64_t end);
/* Unregisters an allocation and wakes the writes waiting for it. */
void qcow2_alloc_remove(BDRVQcow2State *s, Qcow2Alloc *a);
/* Schedules the refcount drop of the host clusters an old L2 entry referenced. */
int qcow2_free_old_entry(BlockDriverState *bs, uint64_t l2e, int type);
/*
 * Changes whole clusters to zero (zero) or unallocated entries (discard;
 * with a backing file a v3 discard leaves zero clusters unless full).
 */
int coroutine_fn qcow2_zero_or_discard(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                       bool zero, bool unmap, bool full);

/* Makes a snapshot the image's content until close (read-only images only). */
int coroutine_fn qcow2_co_snapshot_load_tmp(BlockDriverState *bs, const char *id,
                                            const char *name, Error **errp);

/* ---------------------------------------------------------------------- */
/* bitmap.c */

/* Parses the bitmap directory (if the extension is valid); read-write opens load enabled bitmaps. */
int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, bool rw, Error **errp);
/* Writes loaded bitmaps back (in_use cleared) and drops them from memory. */
int coroutine_fn qcow2_bitmaps_close(BlockDriverState *bs);
void qcow2_bitmaps_free(BDRVQcow2State *s);
/*
 * Marks [offset, offset + bytes) dirty in every enabled, loaded bitmap
 * before a write; after a reopen to read-write it loads them first (an
 * error then fails the write: it would go untracked).
 */
int coroutine_fn qcow2_bitmaps_note_write(BlockDriverState *bs, uint64_t offset, uint64_t bytes);
int qcow2_bitmap_list(BlockDriverState *bs, BlockBitmapInfo **out);
int coroutine_fn qcow2_co_bitmap_query(BlockDriverState *bs, const char *name, int64_t offset,
                                       int64_t bytes, int64_t *pnum);
int coroutine_fn qcow2_co_bitmap_modify(BlockDriverState *bs, const BlockBitmapRequest *req,
                                        Error **errp);
/* Appends a JSON string literal (escaped) to buf at *n, never past size (qcow2.c). */
void qcow2_json_str(char *buf, size_t size, size_t *n, const char *str);
/* Appends the qemu-img info "bitmaps" array (JSON) for the directory. */
size_t qcow2_bitmaps_json(const BDRVQcow2State *s, char *buf, size_t size);
/* Bytes a copy of the image's bitmaps needs (measure): directory, tables, data. */
uint64_t qcow2_bitmaps_measure(const BDRVQcow2State *s, uint64_t cluster_size, uint64_t size);

/* ---------------------------------------------------------------------- */
/* io.c */

int coroutine_fn qcow2_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                 IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn qcow2_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, size_t qiov_offset, BdrvRequestFlags flags);
int coroutine_fn qcow2_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        BdrvRequestFlags flags);
int coroutine_fn qcow2_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes);
int coroutine_fn qcow2_co_flush_to_os(BlockDriverState *bs);
int coroutine_fn qcow2_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                       int64_t bytes, int64_t *pnum, int64_t *map,
                                       BlockDriverState **file);
/* Reads guest data (used by COW); takes s->lock for metadata itself. */
int coroutine_fn qcow2_read_guest(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                  IOVector *qiov, size_t qiov_offset);
/* As qcow2_read_guest, using the caller's buffer set b (or one from the pool if NULL). */
int coroutine_fn qcow2_read_guest_buf(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                      IOVector *qiov, size_t qiov_offset, Qcow2Buf *b);

/* ---------------------------------------------------------------------- */
/* bufpool.c */

void qcow2_bufpool_init(BDRVQcow2State *s);
void qcow2_bufpool_destroy(BDRVQcow2State *s);
/* A buffer set (may wait for one); NULL only when out of memory. */
Qcow2Buf *coroutine_fn qcow2_buf_get(BDRVQcow2State *s);
void qcow2_buf_put(BDRVQcow2State *s, Qcow2Buf *b);

/* ---------------------------------------------------------------------- */
/* compress.c */

/* Compressor / decompressor contexts, kept between calls; one user at a time. */
typedef struct Qcow2Codec {
    z_stream deflate;
    z_stream inflate;
    bool deflate_ready, inflate_ready;
    struct ZSTD_CCtx_s *zstd_c;
    struct ZSTD_DCtx_s *zstd_d;
    struct libdeflate_decompressor *libdeflate;
    struct Qcow2IsalDeflate *isal;  /* ISA-L deflate stream + level buffer (compress-deflate.c) */
    int deflate_engine;             /* chosen on first compression: ISA-L or zlib */
    struct inflate_state *isal_inflate; /* ISA-L inflate state (compress-inflate.c) */
    int inflate_engine;             /* chosen on first inflation (compress-inflate.c) */
    struct Qcow2InflateTables *own_inflate; /* our decoder's tables (inflate-fast.c) */
} Qcow2Codec;

/*
 * Decompresses src (compressed cluster, trailing bytes are padding) into dst
 * (dst_len = one cluster) at least up to byte need (0 or dst_len: all of
 * it). Returns how many leading bytes of dst are valid (need .. dst_len), or
 * -EIO if the data up to there does not decompress (or ends too early).
 */
ssize_t qcow2_codec_inflate(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len, size_t need,
                            const uint8_t *src, size_t src_len);
/* Decompresses src into exactly dst_len bytes: 0, or -EIO if it cannot. */
int qcow2_codec_decompress(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len,
                           const uint8_t *src, size_t src_len);
/* Returns the compressed size, -ENOSPC if it does not fit in dst_len, or -errno. */
ssize_t qcow2_codec_compress(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len,
                             const uint8_t *src, size_t src_len);
void qcow2_codec_free(Qcow2Codec *c);
bool qcow2_compression_supported(int type);

/* ---------------------------------------------------------------------- */
/* compress-deflate.c: deflate compression (ISA-L, zlib fallback) */

/*
 * Compresses src into a raw deflate stream with a 4 KiB window (what qcow2
 * readers inflate). Returns its size, -ENOSPC if it does not fit in dst_len
 * (or the cluster was found incompressible without a full run), or -errno.
 */
ssize_t qcow2_deflate_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                               size_t src_len);
/* Whether qcow2_deflate_compress() stores src uncompressed without a full run (tests). */
bool qcow2_deflate_skips(Qcow2Codec *c, uint8_t *scratch, size_t scratch_len,
                         const uint8_t *src, size_t src_len);
/* compress-inflate.c: qcow2_codec_inflate() for deflate; frees the inflate state of c. */
ssize_t qcow2_inflate_prefix(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                             const uint8_t *src, size_t src_len);
void qcow2_inflate_free(Qcow2Codec *c);
/* "isal" or "zlib" once c has compressed, "unset" before. */
const char *qcow2_deflate_engine_name(Qcow2Codec *c);
/* Frees the deflate state of c (called by qcow2_codec_free()). */
void qcow2_deflate_free(Qcow2Codec *c);

/* ---------------------------------------------------------------------- */
/* compress-pool.c: compression off the request thread, decompressed-cluster cache */

/*
 * One compression or decompression, as a worker thread runs it: it touches
 * only these fields, the codec and the buffers they point at.
 */
typedef struct Qcow2CJob {
    Qcow2Codec *codec;
    int type;                   /* compression_type */
    const uint8_t *src;
    size_t src_len;
    uint8_t *dst;
    size_t dst_len;
    size_t need;                /* decompression: bytes of dst wanted (a prefix) */
    bool compress;
} Qcow2CJob;

/*
 * A compression slot: buffers and codec contexts for one cluster being
 * compressed or decompressed. cbuf holds compressed bytes (up to two
 * clusters, the most an L2 descriptor can describe), dbuf one cluster.
 */
typedef struct Qcow2CSlot {
    uint8_t *cbuf;
    uint8_t *dbuf;
    Qcow2Codec codec;
    struct Qcow2CSlot *next_free;
    Qcow2CJob job;
} Qcow2CSlot;

/* Limits of the runtime options compress-workers and compressed-cache-size. */
#define QCOW2_CSLOTS_MAX 16
#define QCOW2_DCACHE_MAX_BYTES (1ULL << 30)
#define QCOW2_DCACHE_MAX_ENTRIES 65536

/* Takes a free slot, waiting while all are in use; NULL if none can be allocated. */
Qcow2CSlot *coroutine_fn qcow2_cslot_get(BlockDriverState *bs);
void qcow2_cslot_put(BlockDriverState *bs, Qcow2CSlot *slot);

/* A request's parallel workers (compressed reads and writes): a count and the waiter. */
typedef struct Qcow2Workers {
    int running;
    CoQueue done;
} Qcow2Workers;
/* Starts min(n, max) coroutines fn(job) and waits until each has called qcow2_worker_done(). */
void coroutine_fn qcow2_workers_run(Qcow2Workers *w, int n, uint64_t max, CoroutineEntry *fn,
                                    void *job);
void qcow2_worker_done(Qcow2Workers *w);
/*
 * Compresses src (one cluster) into slot->cbuf, at most cluster_size - 1
 * bytes, on a worker thread (the coroutine yields meanwhile). Returns the
 * size, -ENOSPC if it does not shrink, or -errno.
 */
ssize_t coroutine_fn qcow2_co_compress(BlockDriverState *bs, Qcow2CSlot *slot,
                                       const uint8_t *src);
/*
 * Inflates clen bytes of cbuf into dst (a cluster) with codec, on a worker
 * thread, at least up to byte need (cluster_size: all of it). Returns how
 * many leading bytes of dst are valid (>= need), or -errno.
 */
ssize_t coroutine_fn qcow2_co_inflate(BlockDriverState *bs, Qcow2Codec *codec,
                                      const uint8_t *cbuf, size_t clen, uint8_t *dst,
                                      size_t need);
/* True if (de)compression goes to worker threads (clusters of 8 KiB and more). */
bool qcow2_compress_offloaded(const BDRVQcow2State *s);
/* True if no slot is in use (a reopen may then drop them). */
bool qcow2_cstate_idle(const BDRVQcow2State *s);
/*
 * Reads [offset, offset + n) (within one cluster) of the compressed cluster
 * whose data is clen bytes at host offset coff, through the cache of
 * decompressed clusters; a miss inflates on a worker thread. b: the
 * caller's pooled buffer set (copy-on-write), whose buffers and codec are
 * used instead of a compression slot, or NULL (a slot is taken).
 */
int coroutine_fn qcow2_read_compressed_cached(BlockDriverState *bs, uint64_t coff,
                                              uint64_t clen, uint64_t offset, uint64_t n,
                                              IOVector *qiov, size_t qoff, Qcow2Buf *b);
/* Forgets cached clusters whose compressed data lies in the host cluster at off. */
void qcow2_dcache_invalidate(BDRVQcow2State *s, uint64_t host_cluster);
void qcow2_dcache_clear(BDRVQcow2State *s);
/* cread.c: clusters the cache holds with the current options; true if none is filling. */
uint64_t qcow2_dcache_entries(const BDRVQcow2State *s);
bool qcow2_dcache_idle(const BDRVQcow2State *s);
void qcow2_dcache_free(BDRVQcow2State *s);
/* True if a compressed read of bytes is worth spreading over several coroutines. */
bool qcow2_cread_parallel(BDRVQcow2State *s, uint64_t bytes);
/*
 * Reads [offset, offset + bytes) one cluster per coroutine, up to
 * compress-workers at once, so that compressed clusters inflate in parallel.
 */
int coroutine_fn qcow2_read_compressed_parallel(BlockDriverState *bs, uint64_t offset,
                                                uint64_t bytes, IOVector *qiov, size_t qoff);
/* Parallel clusters per compressed write request. */
int qcow2_compress_workers(BDRVQcow2State *s);
void qcow2_cstate_free(BDRVQcow2State *s);

/* ---------------------------------------------------------------------- */
/* overlap.c */

/* Returns 0, or -EIO after marking the image corrupt if [off, off+len) overlaps
 * metadata of the kinds in the check mask minus ign. */
int coroutine_fn qcow2_check_overlap(BlockDriverState *bs, int ign, uint64_t off, uint64_t len);
/* Marks the image corrupt (corrupt bit, read-only) and logs why. Returns -EIO. */
int coroutine_fn qcow2_signal_corruption(BlockDriverState *bs, const char *fmt, ...)
    COBLK_PRINTF(2, 3);
int qcow2_parse_overlap_check(const char *mode, int *mask);

/* ---------------------------------------------------------------------- */
/* repair.c */

/*
 * Counts the references to every cluster of the image file (header, tables,
 * refcount blocks, L2 tables and data of the active and snapshot L1 tables):
 * *prefs is a malloc'd array of *pn saturating counters. -EIO if something
 * points past the end of the file. For check.c too.
 */
int coroutine_fn qcow2_count_refs(BlockDriverState *bs, uint16_t **prefs, uint64_t *pn);
/* Rebuilds the refcounts of a dirty image and clears the dirty bit. */
int coroutine_fn qcow2_repair_dirty(BlockDriverState *bs, Error **errp);

/* ---------------------------------------------------------------------- */
/* create.c / resize.c */

extern const BlockCreateOptDesc qcow2_create_opts[];
int coroutine_fn qcow2_co_create_opts(const BlockDriver *drv, const char *filename,
                                      BlockOpts *options, Error **errp);
int coroutine_fn qcow2_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                   PreallocMode prealloc, BdrvRequestFlags flags, Error **errp);
/* Allocates (metadata / falloc / full) the guest range [from, to). */
int coroutine_fn qcow2_preallocate(BlockDriverState *bs, uint64_t from, uint64_t to,
                                   PreallocMode mode, Error **errp);

/* ---------------------------------------------------------------------- */
/* check.c / rebuild.c / snapshot.c / amend.c */

/* Reference counts of the clusters of the image file, built by a walk. */
typedef struct Qcow2Refs {
    uint32_t *r;        /* saturating counter per cluster */
    uint64_t n;         /* entries allocated */
    uint64_t used;      /* 1 + highest cluster counted */
} Qcow2Refs;

int qcow2_refs_add(Qcow2Refs *r, int cluster_bits, uint64_t off, uint64_t len);
int coroutine_fn qcow2_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix);
/* Counts every reference (s->lock held); -EIO if the image has corruptions. */
int coroutine_fn qcow2_count_image_refs(BlockDriverState *bs, Qcow2Refs *r);
/* Reads an L1-style table of n big-endian entries into a malloc'd host-order array. */
int coroutine_fn qcow2_read_l1(BlockDriverState *bs, uint64_t off, uint32_t n, uint64_t **pl1);
/* Removes the references of the current refcount table and blocks (bad: skip entries). */
void qcow2_refs_drop_reftable(BDRVQcow2State *s, Qcow2Refs *r, const uint8_t *bad);
/* Writes a new refcount structure (refcount_order order) holding r; s->lock held. */
int coroutine_fn qcow2_rebuild_refcounts(BlockDriverState *bs, const Qcow2Refs *r, int order,
                                         Error **errp);
int coroutine_fn qcow2_co_snapshot_create(BlockDriverState *bs, BlockSnapshotInfo *sn,
                                          Error **errp);
int coroutine_fn qcow2_co_snapshot_goto(BlockDriverState *bs, const char *name_or_id,
                                        Error **errp);
int coroutine_fn qcow2_co_snapshot_delete(BlockDriverState *bs, const char *id,
                                          const char *name, Error **errp);
int coroutine_fn qcow2_co_snapshot_list(BlockDriverState *bs, BlockSnapshotInfo **psn);
int coroutine_fn qcow2_co_save_vmstate(BlockDriverState *bs, IOVector *qiov, int64_t pos);
int coroutine_fn qcow2_co_load_vmstate(BlockDriverState *bs, IOVector *qiov, int64_t pos);
int coroutine_fn qcow2_co_amend(BlockDriverState *bs, BlockOpts *options, bool force,
                                Error **errp);
int coroutine_fn qcow2_co_make_empty(BlockDriverState *bs, Error **errp);
int qcow2_measure(BlockOpts *options, BlockDriverState *in_bs, BlockMeasureInfo *out,
                  Error **errp);

#endif /* COBLK_QCOW2_H */
