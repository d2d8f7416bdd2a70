/*
 * The "qed" format driver: QEMU Enhanced Disk images, after the QED
 * specification (docs/interop/qed_spec.txt in QEMU).
 *
 * Layout (all fields little-endian): the header in cluster 0 (magic "QED\0",
 * cluster size, table size in clusters, header size in clusters, features,
 * compat and autoclear features, L1 table offset, image size, backing file
 * name offset and size); an L1 table of u64 L2 table offsets; L2 tables of
 * u64 data cluster offsets (0 = unallocated: read the backing file, 1 = zero
 * cluster). Tables are table_size clusters long.
 *
 * Crash safety: a new data cluster (whole: the rest of a partial write is
 * copied from the backing file, or zeroes) or a new L2 table (zeroes) is
 * written at the end of the file, and the entry that points at it is set in
 * the cached table only. The dirty table units (fmt-defer.h, FmtDefer) are
 * written, adjacent ones merged, at the next guest flush, close, reopen
 * read-only, resize or check, when the pending set is full, or before a
 * cache slot holding pending
 * entries would be evicted: one flush (every cluster and table they point at
 * is stable), the units, and for a guest flush one more. The pending set
 * counts 4 KiB units of tables (QED_UNIT), written whole. So an entry on
 * disk never points at data or a table that is not stable, and a guest flush
 * costs two flushes however many clusters it allocated. A dirty table stays
 * in the cache until written.
 * Concurrency: table_lock covers the tables, the cache and file_end, not
 * guest data. An allocating write takes its cluster (file_end) under the
 * lock, writes the cluster's data without it, then sets the entry under it
 * again; meanwhile the cluster is in s->allocs (fmt-util.h), so that another
 * writer of the same guest cluster waits instead of taking a second one,
 * and check and resize wait for every allocation in flight.
 * QED_F_NEED_CHECK is set (and flushed) before the first allocation after
 * open and cleared at a clean close; an image opened read-write with the mark
 * set is checked and repaired first (leaked clusters at the end are
 * truncated, bad table entries are dropped). QEMU's driver relies on that
 * check to skip the flush between data and table without a backing file; we
 * do not: a table entry that reached the disk before its data would point
 * past the end of the file or at zeroes, and the deferred commit already
 * makes that flush once per guest flush rather than once per allocation.
 *
 * Limits (untrusted images): cluster size a power of two in [4 KiB, 64 MiB],
 * table size a power of two in [1, 16] with tables of at most 32 MiB, header
 * size at least one cluster and at most 64 MiB, image size a multiple of 512
 * that the L1 table can map, tables and clusters aligned and inside the file,
 * backing file name inside the header and shorter than 4096 bytes, no
 * unknown feature bits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/drivers.h"
#include "block/bytes.h"
#include "drivers/format/fmt-defer.h"
#include "drivers/format/fmt-util.h"

#define QED_MAGIC 0x00444551u       /* "QED\0" little-endian */
#define QED_F_BACKING_FILE 0x01ULL
#define QED_F_NEED_CHECK 0x02ULL
#define QED_F_BACKING_FORMAT_NO_PROBE 0x04ULL
#define QED_F_MASK (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE)
#define QED_HEADER_LEN 64
#define QED_CLUSTER_MIN 4096u
#define QED_CLUSTER_MAX (64u << 20)
#define QED_CLUSTER_DEFAULT (64u << 10)
#define QED_TABLE_DEFAULT 4u
#define QED_TABLE_MAX_BYTES (32u << 20)
#define QED_HEADER_MAX_BYTES (64ULL << 20)
#define QED_BACKING_NAME_MAX 4095u
#define QED_ZERO_CLUSTER 1ULL
#define QED_CACHE_BYTES (32u << 20)  /* L2 cache budget */
#define QED_CACHE_MAX 16
/*
 * The pending set's unit: 4 KiB of a table (512 entries). Tables are
 * cluster-aligned and clusters at least 4 KiB, so a unit never straddles two
 * tables. A sequential stream dirties one unit per 512 new clusters (32 MiB
 * with 64 KiB clusters), so the set (FMT_DEFER_MAX units) holds about 2 GiB
 * of them before it must be committed; with 512-byte units it filled every
 * 248 MiB, and that commit's flush (all the data written so far, under
 * table_lock) stalled the stream.
 */
#define QED_UNIT 4096u

enum {
    QH_MAGIC = 0, QH_CLUSTER = 4, QH_TABLE = 8, QH_HEADER = 12, QH_FEATURES = 16,
    QH_COMPAT = 24, QH_AUTOCLEAR = 32, QH_L1 = 40, QH_SIZE = 48, QH_BACKING_OFF = 56,
    QH_BACKING_LEN = 60,
};

typedef struct QedL2Cache {
    uint64_t offset;            /* 0 = empty */
    uint64_t *table;
    uint64_t last_use;
} QedL2Cache;

typedef struct BDRVQedState {
    uint8_t hdr[QED_HEADER_LEN];
    uint32_t cluster_size;
    uint32_t cluster_bits;
    uint32_t table_size;
    uint64_t table_bytes;
    uint32_t table_entries;     /* entries per table */
    uint64_t header_bytes;
    uint64_t features;
    uint64_t l1_offset;
    uint64_t image_size;
    uint64_t *l1;
    int64_t file_end;           /* where the next cluster goes */
    QedL2Cache cache[QED_CACHE_MAX];
    int n_cache;
    uint64_t clock;
    bool marked_dirty;          /* we set NEED_CHECK since open */
    FmtDefer dirty;             /* table units (file offset / QED_UNIT) not yet written */
    CoMutex table_lock;         /* cache loads and every metadata update */
    /*
     * Allocating writes in flight, by guest cluster (table_lock): a new
     * cluster is taken (file_end moved past it) but its data not written
     * yet, so its L2 entry still says unallocated. Readers do not wait:
     * until the entry is set they read what the cluster held before, which
     * is what the new cluster holds outside the bytes being written.
     */
    FmtInflightList allocs;
} BDRVQedState;

/* ---------------------------------------------------------------------- */
/* Header */

static int qed_probe(const uint8_t *buf, int buf_size, const char *filename)
{
    return buf_size >= 4 && ld_le32(buf) == QED_MAGIC ? 100 : 0;
}

static int coroutine_fn qed_write_header(BlockDriverState *bs)
{
    BDRVQedState *s = bs->opaque;

    st_le64(s->hdr + QH_FEATURES, s->features);
    return fmt_co_pwrite(bs->file, 0, QED_HEADER_LEN, s->hdr, 0);
}

static int qed_check_geometry(BlockDriverState *bs, BDRVQedState *s, Error **errp)
{
    const char *fn = bs->filename;
    uint32_t header_size = ld_le32(s->hdr + QH_HEADER);
    uint64_t max_size;

    s->cluster_size = ld_le32(s->hdr + QH_CLUSTER);
    s->table_size = ld_le32(s->hdr + QH_TABLE);
    if (!is_power_of_2_u64(s->cluster_size) || s->cluster_size < QED_CLUSTER_MIN ||
        s->cluster_size > QED_CLUSTER_MAX) {
        error_setg(errp, "'%s': cluster size %u is not a power of two in [%u, %u]", fn,
                   s->cluster_size, QED_CLUSTER_MIN, QED_CLUSTER_MAX);
        return -EINVAL;
    }
    s->cluster_bits = (uint32_t)__builtin_ctz(s->cluster_size);
    if (!is_power_of_2_u64(s->table_size) || s->table_size > 16) {
        error_setg(errp, "'%s': table size %u is not a power of two in [1, 16]", fn,
                   s->table_size);
        return -EINVAL;
    }
    s->table_bytes = (uint64_t)s->table_size * s->cluster_size;
    if (s->table_bytes > QED_TABLE_MAX_BYTES) {
        error_setg(errp, "'%s': tables of %llu bytes exceed the limit %u", fn,
                   (unsigned long long)s->table_bytes, QED_TABLE_MAX_BYTES);
        return -EINVAL;
    }
    s->table_entries = (uint32_t)(s->table_bytes / 8);
    s->header_bytes = (uint64_t)header_size * s->cluster_size;
    if (header_size == 0 || s->header_bytes > QED_HEADER_MAX_BYTES) {
        error_setg(errp, "'%s': header size %u clusters out of range", fn, header_size);
        return -EINVAL;
    }
    max_size = (uint64_t)s->table_entries * s->table_entries;
    max_size = max_size > (UINT64_MAX >> s->cluster_bits) ? UINT64_MAX
                                                           : max_size << s->cluster_bits;
    if (s->image_size % 512 || s->image_size > max_size ||
        s->image_size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "'%s': image size %llu is not a multiple of 512 or exceeds what the "
                   "tables map (%llu)", fn, (unsigned long long)s->image_size,
                   (unsigned long long)max_size);
        return -EINVAL;
    }
    return 0;
}

/* Validates the header against the file length. */
static int qed_check_header(BlockDriverState *bs, BDRVQedState *s, int64_t file_len,
                            Error **errp)
{
    const char *fn = bs->filename;
    int ret;

    if (ld_le32(s->hdr + QH_MAGIC) != QED_MAGIC) {
        error_setg(errp, "'%s' is not a QED image (magic 0x%08x)", fn,
                   ld_le32(s->hdr + QH_MAGIC));
        return -EINVAL;
    }
    s->features = ld_le64(s->hdr + QH_FEATURES);
    s->l1_offset = ld_le64(s->hdr + QH_L1);
    s->image_size = ld_le64(s->hdr + QH_SIZE);
    if (s->features & ~QED_F_MASK) {
        error_setg(errp, "'%s': unsupported QED features 0x%llx", fn,
                   (unsigned long long)(s->features & ~QED_F_MASK));
        return -ENOTSUP;
    }
    ret = qed_check_geometry(bs, s, errp);
    if (ret < 0) {
        return ret;
    }
    if (s->l1_offset % s->cluster_size || s->l1_offset < s->header_bytes ||
        !range_within(s->l1_offset, s->table_bytes, (uint64_t)file_len)) {
        error_setg(errp, "'%s': L1 table offset %llu is unaligned, inside the header or past "
                   "the end of the file (%lld bytes)", fn, (unsigned long long)s->l1_offset,
                   (long long)file_len);
        return -EINVAL;
    }
    return 0;
}

/* Sets bs->backing_file from the header. */
static int coroutine_fn qed_read_backing_name(BlockDriverState *bs, Error **errp)
{
    BDRVQedState *s = bs->opaque;
    uint32_t off = ld_le32(s->hdr + QH_BACKING_OFF), len = ld_le32(s->hdr + QH_BACKING_LEN);
    int ret;

    bs->backing_file[0] = '\0';
    bs->backing_format[0] = '\0';
    if (!(s->features & QED_F_BACKING_FILE)) {
        return 0;
    }
    if (len == 0 || len > QED_BACKING_NAME_MAX || !range_within(off, len, s->header_bytes)) {
        error_setg(errp, "'%s': backing file name (%u bytes at %u) is empty, longer than %u or "
                   "outside the header", bs->filename, len, off, QED_BACKING_NAME_MAX);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, off, len, bs->backing_file);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the backing file name of '%s'",
                         bs->filename);
        return ret;
    }
    bs->backing_file[len] = '\0';
    if (strlen(bs->backing_file) != len) {
        error_setg(errp, "'%s': backing file name contains a NUL byte", bs->filename);
        return -EINVAL;
    }
    if (s->features & QED_F_BACKING_FORMAT_NO_PROBE) {
        snprintf(bs->backing_format, sizeof(bs->backing_format), "raw");
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Tables */

static int coroutine_fn qed_read_table(BlockDriverState *bs, uint64_t offset, uint64_t *t)
{
    BDRVQedState *s = bs->opaque;
    int ret = fmt_co_pread(bs->file, (int64_t)offset, (int64_t)s->table_bytes, t);

    if (ret == 0) {
        for (uint32_t i = 0; i < s->table_entries; i++) {
            t[i] = ld_le64(&t[i]);
        }
    }
    return ret;
}

/* Writes entries [first, first + n) of table t (at offset) to the file. */
static int coroutine_fn qed_write_entries(BlockDriverState *bs, uint64_t offset,
                                          const uint64_t *t, uint32_t first, uint32_t n)
{
    uint8_t *buf = malloc((size_t)n * 8);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        st_le64(buf + (size_t)i * 8, t[first + i]);
    }
    ret = fmt_co_pwrite(bs->file, (int64_t)(offset + (uint64_t)first * 8), (int64_t)n * 8, buf,
                        0);
    free(buf);
    return ret;
}

/* A valid data cluster or table offset: aligned, inside the file. */
static bool qed_offset_ok(const BDRVQedState *s, uint64_t off, uint64_t len, int64_t file_end)
{
    return off % s->cluster_size == 0 && off >= s->header_bytes &&
           range_within(off, len, (uint64_t)file_end);
}

/* ---------------------------------------------------------------------- */
/* Deferred table updates (see the crash-safety note at the top) */

/* Whether the table at offset (L1 or a cached L2) has units not yet written. */
static bool qed_table_dirty(const BDRVQedState *s, uint64_t offset)
{
    for (unsigned i = 0; i < s->dirty.n; i++) {
        if (s->dirty.unit[i] * QED_UNIT - offset < s->table_bytes) {
            return true;
        }
    }
    return false;
}

/*
 * Records entry i of the table at offset as changed in memory only. The
 * caller made room (qed_prepare_update: two units, one of the L1 and one of an L2 table).
 */
static void qed_table_touch(BDRVQedState *s, uint64_t offset, uint32_t i)
{
    fmt_defer_add(&s->dirty, (offset + (uint64_t)i * 8) / QED_UNIT, 1);
}

/* The in-memory table (L1 or a cached L2) that holds the file's byte at off, and its offset. */
static const uint64_t *qed_table_at(const BDRVQedState *s, uint64_t off, uint64_t *base)
{
    if (off - s->l1_offset < s->table_bytes) {
        *base = s->l1_offset;
        return s->l1;
    }
    for (int i = 0; i < s->n_cache; i++) {
        if (s->cache[i].offset && off - s->cache[i].offset < s->table_bytes) {
            *base = s->cache[i].offset;
            return s->cache[i].table;
        }
    }
    return NULL;
}

/*
 * FmtDeferWriteFn: table units [first, first + count) (QED_UNIT bytes each),
 * in one write per table they lie in (adjacent units may belong to two tables).
 */
static int coroutine_fn qed_write_run(void *opaque, uint64_t first, uint32_t count)
{
    BlockDriverState *bs = opaque;
    BDRVQedState *s = bs->opaque;
    int ret = 0;

    while (count && ret == 0) {
        uint64_t base = 0, off = first * QED_UNIT, left;
        const uint64_t *t = qed_table_at(s, off, &base);
        uint32_t n;

        if (!t) {
            return -EIO; /* unreachable: a dirty table is never evicted */
        }
        left = (base + s->table_bytes - off) / QED_UNIT;
        n = left < count ? (uint32_t)left : count;
        ret = qed_write_entries(bs, base, t, (uint32_t)((off - base) / 8), n * (QED_UNIT / 8));
        first += n;
        count -= n;
    }
    return ret;
}

/* Writes the pending table units (then flushes if sync). Holds table_lock. */
static int coroutine_fn qed_commit(BlockDriverState *bs, bool sync)
{
    BDRVQedState *s = bs->opaque;
    int ret;

    if (!fmt_defer_pending(&s->dirty)) {
        return 0;
    }
    ret = fmt_defer_commit(&s->dirty, bs->file, qed_write_run, bs);
    if (ret == 0 && sync) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

/*
 * The least recently used cache slot without pending entries; when every
 * slot has some, they are written first. Holds table_lock.
 */
static int coroutine_fn qed_cache_victim(BlockDriverState *bs, QedL2Cache **victim)
{
    BDRVQedState *s = bs->opaque;
    QedL2Cache *v = NULL;
    int ret;

    for (int pass = 0; pass < 2 && !v; pass++) {
        for (int i = 0; i < s->n_cache; i++) {
            QedL2Cache *c = &s->cache[i];

            if ((!v || c->last_use < v->last_use) &&
                (pass || !c->offset || !qed_table_dirty(s, c->offset))) {
                v = c;
            }
        }
        if (!v && (ret = qed_commit(bs, false)) < 0) {
            return ret;
        }
    }
    *victim = v;
    return 0;
}

/* The cached L2 table at offset, loading it if needed. Caller holds table_lock. */
static int coroutine_fn qed_l2_get_locked(BlockDriverState *bs, uint64_t offset, uint64_t **t)
{
    BDRVQedState *s = bs->opaque;
    QedL2Cache *victim;
    int ret;

    for (int i = 0; i < s->n_cache; i++) {
        if (s->cache[i].offset == offset) {
            s->cache[i].last_use = ++s->clock;
            *t = s->cache[i].table;
            return 0;
        }
    }
    if (!qed_offset_ok(s, offset, s->table_bytes, s->file_end)) {
        return -EIO; /* check -r repairs bad L1 entries */
    }
    ret = qed_cache_victim(bs, &victim);
    if (ret < 0) {
        return ret;
    }
    victim->offset = 0;
    ret = qed_read_table(bs, offset, victim->table);
    if (ret < 0) {
        return ret;
    }
    victim->offset = offset;
    victim->last_use = ++s->clock;
    *t = victim->table;
    return 0;
}

/*
 * The L2 entry for a guest cluster (0 if its L2 table is unallocated). A
 * cache hit takes no lock; with locked, the caller holds table_lock.
 */
static int coroutine_fn qed_lookup_l(BlockDriverState *bs, uint64_t guest, uint64_t *entry,
                                     bool locked)
{
    BDRVQedState *s = bs->opaque;
    uint64_t cl = guest >> s->cluster_bits;
    uint64_t l2_off = s->l1[cl / s->table_entries];
    uint64_t *t;
    int ret;

    *entry = 0;
    if (!l2_off) {
        return 0;
    }
    for (int i = 0; i < s->n_cache; i++) {
        if (s->cache[i].offset == l2_off) {
            s->cache[i].last_use = ++s->clock;
            *entry = s->cache[i].table[cl % s->table_entries];
            return 0;
        }
    }
    if (!locked) {
        co_mutex_lock(&s->table_lock);
    }
    ret = qed_l2_get_locked(bs, l2_off, &t);
    if (ret == 0) {
        *entry = t[cl % s->table_entries];
    }
    if (!locked) {
        co_mutex_unlock(&s->table_lock);
    }
    return ret;
}

static int coroutine_fn qed_lookup(BlockDriverState *bs, uint64_t guest, uint64_t *entry)
{
    return qed_lookup_l(bs, guest, entry, false);
}

/* ---------------------------------------------------------------------- */
/* Reads */

static int64_t qed_chunk(const BDRVQedState *s, int64_t offset, int64_t bytes)
{
    int64_t n = s->cluster_size - (offset & (s->cluster_size - 1));

    return n < bytes ? n : bytes;
}

static int coroutine_fn qed_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qiov_offset,
                                      BdrvRequestFlags flags)
{
    BDRVQedState *s = bs->opaque;
    int ret = 0;

    while (bytes > 0 && ret == 0) {
        int64_t n = qed_chunk(s, offset, bytes);
        uint64_t e;

        ret = qed_lookup(bs, (uint64_t)offset, &e);
        if (ret < 0) {
            break;
        }
        if (e == 0) {
            ret = bdrv_co_read_backing(bs, offset, n, qiov, qiov_offset);
        } else if (e == QED_ZERO_CLUSTER) {
            iovector_memset(qiov, qiov_offset, 0, (size_t)n);
        } else if (!qed_offset_ok(s, e, s->cluster_size, s->file_end)) {
            ret = -EIO;
        } else {
            ret = bdrv_co_preadv_part(bs->file, (int64_t)e + (offset & (s->cluster_size - 1)),
                                      n, qiov, qiov_offset, 0);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Writes */

/*
 * Sets NEED_CHECK, durably, before the first metadata change (issued after
 * this returns). One FUA write: no earlier write needs to be durable before
 * the flag, and a flush would also write back every other dirty page of the
 * image file. Holds table_lock.
 */
static int coroutine_fn qed_mark_dirty(BlockDriverState *bs)
{
    BDRVQedState *s = bs->opaque;
    int ret;

    if (s->marked_dirty) {
        return 0;
    }
    s->features |= QED_F_NEED_CHECK;
    st_le64(s->hdr + QH_FEATURES, s->features);
    ret = fmt_co_pwrite(bs->file, 0, QED_HEADER_LEN, s->hdr, BDRV_REQ_FUA);
    if (ret < 0) {
        s->features &= ~QED_F_NEED_CHECK;
        return ret;
    }
    s->marked_dirty = true;
    return 0;
}

/*
 * Writes the new content of one cluster at host: the chunk, with the rest
 * from the backing file (or zeroes for a zero cluster or without one).
 */
static int coroutine_fn qed_fill_cluster(BlockDriverState *bs, int64_t host, int64_t cl_start,
                                         uint32_t in_cl, int64_t n, IOVector *qiov,
                                         size_t qiov_offset, bool zero_rest)
{
    BDRVQedState *s = bs->opaque;
    IOVector bounce;
    uint8_t *buf;
    int ret;

    if (n == s->cluster_size) {
        BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
        return bdrv_co_pwritev_part(bs->file, host, n, qiov, qiov_offset, 0);
    }
    buf = malloc(s->cluster_size);
    if (!buf) {
        return -ENOMEM;
    }
    iovector_init_buf(&bounce, buf, s->cluster_size);
    if (zero_rest) {
        memset(buf, 0, s->cluster_size);
        ret = 0;
    } else {
        ret = bdrv_co_read_backing(bs, cl_start, s->cluster_size, &bounce, 0);
    }
    if (ret == 0) {
        iovector_to_buf(qiov, qiov_offset, buf + in_cl, (size_t)n);
        BLKDBG_EVENT(bs->file, BLKDBG_COW_WRITE);
        ret = fmt_co_pwrite(bs->file, host, s->cluster_size, buf, 0);
    }
    free(buf);
    return ret;
}

/*
 * Gives the L2 table of a guest cluster a place, writing a new (zeroed) one
 * at the end of the file if needed; its L1 entry is then pending.
 */
static int coroutine_fn qed_ensure_l2(BlockDriverState *bs, uint32_t l1_index, uint64_t **t)
{
    BDRVQedState *s = bs->opaque;
    uint64_t off = s->l1[l1_index];
    QedL2Cache *victim;
    int ret;

    if (off) {
        return qed_l2_get_locked(bs, off, t);
    }
    ret = qed_cache_victim(bs, &victim);
    if (ret < 0) {
        return ret;
    }
    off = (uint64_t)s->file_end;
    victim->offset = 0;
    memset(victim->table, 0, s->table_bytes);
    ret = bdrv_co_pwrite_zeroes(bs->file, (int64_t)off, (int64_t)s->table_bytes, 0);
    if (ret < 0) {
        return ret;
    }
    s->file_end += (int64_t)s->table_bytes;
    victim->offset = off;
    victim->last_use = ++s->clock;
    s->l1[l1_index] = off;
    qed_table_touch(s, s->l1_offset, l1_index);
    *t = victim->table;
    return 0;
}

/*
 * Prepares an update of the L2 entry of guest cluster cl: NEED_CHECK set,
 * room in the pending set, the L2 table in the cache. Holds table_lock.
 */
static int coroutine_fn qed_prepare_update(BlockDriverState *bs, uint64_t cl, uint64_t **t)
{
    BDRVQedState *s = bs->opaque;
    int ret = qed_mark_dirty(bs);

    if (ret == 0 && !fmt_defer_room_for(&s->dirty, 2)) {
        ret = qed_commit(bs, false);
    }
    return ret ? ret : qed_ensure_l2(bs, (uint32_t)(cl / s->table_entries), t);
}

/*
 * The L2 entry of the cluster of guest offset guest once no allocating write
 * of that cluster is in flight (waits for it). Holds table_lock.
 */
static int coroutine_fn qed_lookup_settled(BlockDriverState *bs, uint64_t guest,
                                           uint64_t *entry)
{
    BDRVQedState *s = bs->opaque;

    while (fmt_inflight_busy(&s->allocs, guest >> s->cluster_bits)) {
        fmt_inflight_wait(&s->allocs, &s->table_lock);
    }
    return qed_lookup_l(bs, guest, entry, true);
}

/*
 * Points the L2 entry of guest cluster cl at host, whose data is written
 * (pending: see the crash-safety note). Holds table_lock.
 */
static int coroutine_fn qed_link_cluster(BlockDriverState *bs, uint64_t cl, uint64_t host)
{
    BDRVQedState *s = bs->opaque;
    uint32_t l2i = (uint32_t)(cl % s->table_entries);
    uint64_t *t;
    int ret = qed_prepare_update(bs, cl, &t);

    if (ret == 0) {
        t[l2i] = host;
        qed_table_touch(s, s->l1[cl / s->table_entries], l2i);
    }
    return ret;
}

/*
 * Writes [offset, offset + n) (inside one cluster) at its allocated place e.
 * No lock: the entry of an allocated cluster never changes while it is in use.
 */
static int coroutine_fn qed_write_in_place(BlockDriverState *bs, uint64_t e, int64_t offset,
                                           int64_t n, IOVector *qiov, size_t qiov_offset)
{
    BDRVQedState *s = bs->opaque;

    if (!qed_offset_ok(s, e, s->cluster_size, s->file_end)) {
        return -EIO;
    }
    BLKDBG_EVENT(bs->file, BLKDBG_WRITE_AIO);
    return bdrv_co_pwritev_part(bs->file, (int64_t)e + (offset & (s->cluster_size - 1)), n,
                                qiov, qiov_offset, 0);
}

/*
 * Writes [offset, offset + n) (inside one cluster, unallocated or a zero
 * cluster when looked up without the lock). Under table_lock: a new cluster
 * is taken at the end of the file (or the write goes in place if another
 * writer allocated the cluster meanwhile). Without it: the cluster is written
 * whole (the rest from the backing file, or zeroes), so other allocating
 * writes and flushes proceed meanwhile. Under it again: the L2 entry is set.
 */
static int coroutine_fn qed_write_alloc(BlockDriverState *bs, int64_t offset, int64_t n,
                                        IOVector *qiov, size_t qiov_offset)
{
    BDRVQedState *s = bs->opaque;
    uint64_t cl = (uint64_t)offset >> s->cluster_bits, e, *t;
    uint32_t in_cl = (uint32_t)(offset & (s->cluster_size - 1));
    FmtInflight a;
    int64_t host;
    int ret;

    co_mutex_lock(&s->table_lock);
    ret = qed_lookup_settled(bs, (uint64_t)offset, &e);
    if (ret == 0 && e > QED_ZERO_CLUSTER) {
        co_mutex_unlock(&s->table_lock);
        return qed_write_in_place(bs, e, offset, n, qiov, qiov_offset);
    }
    /* The L2 table first, so that the clusters of a sequential stream follow each other. */
    ret = ret ? ret : qed_prepare_update(bs, cl, &t);
    if (ret < 0) {
        co_mutex_unlock(&s->table_lock);
        return ret;
    }
    host = s->file_end;
    s->file_end += s->cluster_size;
    fmt_inflight_begin(&s->allocs, &a, cl, 1);
    co_mutex_unlock(&s->table_lock);

    ret = qed_fill_cluster(bs, host, offset - in_cl, in_cl, n, qiov, qiov_offset,
                           e == QED_ZERO_CLUSTER);

    co_mutex_lock(&s->table_lock);
    ret = ret ? ret : qed_link_cluster(bs, cl, (uint64_t)host);
    if (ret < 0 && host + s->cluster_size == s->file_end) {
        s->file_end = host; /* nothing points at it: the next allocation takes it again */
    }
    fmt_inflight_end(&s->allocs, &a);
    co_mutex_unlock(&s->table_lock);
    return ret;
}

static int coroutine_fn qed_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qiov_offset,
                                       BdrvRequestFlags flags)
{
    BDRVQedState *s = bs->opaque;
    int ret = 0;

    if ((uint64_t)(offset + bytes) > s->image_size) {
        return -ENOSPC;
    }
    while (bytes > 0 && ret == 0) {
        int64_t n = qed_chunk(s, offset, bytes);
        uint64_t e;

        ret = qed_lookup(bs, (uint64_t)offset, &e);
        if (ret == 0 && e <= QED_ZERO_CLUSTER) {
            ret = qed_write_alloc(bs, offset, n, qiov, qiov_offset);
        } else if (ret == 0) {
            ret = qed_write_in_place(bs, e, offset, n, qiov, qiov_offset);
        }
        offset += n;
        bytes -= n;
        qiov_offset += (size_t)n;
    }
    return ret;
}

/*
 * Zero writes of whole clusters: an allocated cluster gets zeroes in place
 * (no leak); an unallocated one becomes a zero cluster when a backing file
 * could show through, else stays unallocated. Partial clusters fall back.
 */
static int coroutine_fn qed_zero_cluster(BlockDriverState *bs, int64_t offset)
{
    BDRVQedState *s = bs->opaque;
    uint64_t cl = (uint64_t)offset >> s->cluster_bits, e, *t;
    uint32_t l2_index = (uint32_t)(cl % s->table_entries);
    int ret = qed_lookup(bs, (uint64_t)offset, &e);

    if (ret == 0 && e == 0 && bs->backing) {
        co_mutex_lock(&s->table_lock);
        ret = qed_lookup_settled(bs, (uint64_t)offset, &e); /* after a write in flight */
        if (ret < 0 || e != 0) {
            co_mutex_unlock(&s->table_lock);
        }
    }
    if (ret < 0 || e == QED_ZERO_CLUSTER || (e == 0 && !bs->backing)) {
        return ret;
    }
    if (e != 0) {
        if (!qed_offset_ok(s, e, s->cluster_size, s->file_end)) {
            return -EIO;
        }
        return bdrv_co_pwrite_zeroes(bs->file, (int64_t)e, s->cluster_size, 0);
    }
    ret = qed_prepare_update(bs, cl, &t); /* e == 0 with a backing file: table_lock held */
    if (ret == 0 && t[l2_index] == 0) {
        t[l2_index] = QED_ZERO_CLUSTER; /* pending like an allocation; no data behind it */
        qed_table_touch(s, s->l1[cl / s->table_entries], l2_index);
    }
    co_mutex_unlock(&s->table_lock);
    return ret;
}

static int coroutine_fn qed_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes, BdrvRequestFlags flags)
{
    BDRVQedState *s = bs->opaque;
    int ret = 0;

    if ((offset | bytes) & (s->cluster_size - 1)) {
        return -ENOTSUP;
    }
    for (; bytes > 0 && ret == 0; offset += s->cluster_size, bytes -= s->cluster_size) {
        ret = qed_zero_cluster(bs, offset);
    }
    return ret;
}

/* Guest flush: the pending table units go to the file (the block layer flushes it after). */
static int coroutine_fn qed_co_flush_to_os(BlockDriverState *bs)
{
    BDRVQedState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->table_lock);
    ret = qed_commit(bs, false);
    co_mutex_unlock(&s->table_lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Block status and info */

static int coroutine_fn qed_co_block_status(BlockDriverState *bs, bool want_zero,
                                            int64_t offset, int64_t bytes, int64_t *pnum,
                                            int64_t *map, BlockDriverState **file)
{
    BDRVQedState *s = bs->opaque;
    int64_t n = qed_chunk(s, offset, bytes);
    uint64_t e, e2;
    int ret = qed_lookup(bs, (uint64_t)offset, &e);

    if (ret < 0) {
        return ret;
    }
    /* Extend over following clusters of the same kind (contiguous for data). */
    while (n < bytes) {
        int64_t m = qed_chunk(s, offset + n, bytes - n);

        if (qed_lookup(bs, (uint64_t)(offset + n), &e2) < 0) {
            break;
        }
        uint64_t k = (uint64_t)(((offset + n) >> s->cluster_bits) - (offset >> s->cluster_bits));

        if (e <= QED_ZERO_CLUSTER ? e2 != e : e2 != e + k * s->cluster_size) {
            break;
        }
        n += m;
    }
    *pnum = n;
    if (e == 0) {
        return 0;
    }
    if (e == QED_ZERO_CLUSTER) {
        return BDRV_BLOCK_ZERO;
    }
    if (!qed_offset_ok(s, e, s->cluster_size, s->file_end)) {
        return -EIO;
    }
    *map = (int64_t)e + (offset & (s->cluster_size - 1));
    *file = bs->file->bs;
    return BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
}

static int qed_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    BDRVQedState *s = bs->opaque;

    bdi->cluster_size = s->cluster_size;
    bdi->is_dirty = (s->features & QED_F_NEED_CHECK) != 0;
    return 0;
}

static int64_t coroutine_fn qed_co_getlength(BlockDriverState *bs)
{
    return (int64_t)((BDRVQedState *)bs->opaque)->image_size;
}

/* ---------------------------------------------------------------------- */
/* Check and repair */

typedef struct QedCheck {
    BdrvCheckResult *res;
    BdrvCheckMode fix;
    uint8_t *used;              /* one bit per cluster of the file */
    uint64_t clusters;
    int64_t file_len;
    int64_t end;                /* end of the last referenced cluster */
} QedCheck;

/* Marks [off, off + len) used; false if any cluster already was. */
static bool qed_mark_used(BDRVQedState *s, QedCheck *c, uint64_t off, uint64_t len)
{
    bool fresh = true;

    for (uint64_t i = off >> s->cluster_bits; i < (off + len) >> s->cluster_bits; i++) {
        if (c->used[i / 8] & (1u << (i % 8))) {
            fresh = false;
        }
        c->used[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    if ((int64_t)(off + len) > c->end) {
        c->end = (int64_t)(off + len);
    }
    return fresh;
}

/* Checks one entry; returns true if it must be dropped. */
static bool qed_check_entry(BlockDriverState *bs, QedCheck *c, const char *what, uint32_t i,
                            uint64_t off, uint64_t len)
{
    BDRVQedState *s = bs->opaque;

    if (!qed_offset_ok(s, off, len, c->file_len)) {
        bdrv_check_report(c->res, "qed: %s entry %u (offset %llu) is unaligned or past the "
                          "end of the file", what, i, (unsigned long long)off);
    } else if (!qed_mark_used(s, c, off, len)) {
        bdrv_check_report(c->res, "qed: %s entry %u (offset %llu) is referenced twice", what,
                          i, (unsigned long long)off);
    } else {
        return false;
    }
    c->res->corruptions++;
    return true;
}

static int coroutine_fn qed_check_l2(BlockDriverState *bs, QedCheck *c, uint32_t l1_index,
                                     uint64_t *t)
{
    BDRVQedState *s = bs->opaque;
    bool dirty = false;
    int ret = qed_read_table(bs, s->l1[l1_index], t);

    if (ret < 0) {
        c->res->check_errors++;
        return ret;
    }
    for (uint32_t j = 0; j < s->table_entries; j++) {
        if (t[j] <= QED_ZERO_CLUSTER) {
            continue;
        }
        c->res->allocated_clusters++;
        if (qed_check_entry(bs, c, "L2", j, t[j], s->cluster_size) &&
            (c->fix & BDRV_FIX_ERRORS)) {
            t[j] = 0;
            dirty = true;
            c->res->corruptions_fixed++;
        }
    }
    if (dirty) {
        ret = qed_write_entries(bs, s->l1[l1_index], t, 0, s->table_entries);
    }
    return ret;
}

static int coroutine_fn qed_check_tables(BlockDriverState *bs, QedCheck *c)
{
    BDRVQedState *s = bs->opaque;
    uint64_t *t = malloc(s->table_bytes);
    bool l1_dirty = false;
    int ret = 0;

    if (!t) {
        return -ENOMEM;
    }
    qed_mark_used(s, c, 0, s->header_bytes);
    qed_mark_used(s, c, s->l1_offset, s->table_bytes);
    for (uint32_t i = 0; i < s->table_entries && ret == 0; i++) {
        if (!s->l1[i]) {
            continue;
        }
        if (qed_check_entry(bs, c, "L1", i, s->l1[i], s->table_bytes)) {
            if (c->fix & BDRV_FIX_ERRORS) {
                s->l1[i] = 0;
                l1_dirty = true;
                c->res->corruptions_fixed++;
            }
            continue;
        }
        ret = qed_check_l2(bs, c, i, t);
    }
    free(t);
    if (ret == 0 && l1_dirty) {
        ret = qed_write_entries(bs, s->l1_offset, s->l1, 0, s->table_entries);
    }
    return ret;
}

/* Counts unreferenced clusters; with fix, truncates the ones at the end. */
static int coroutine_fn qed_check_leaks(BlockDriverState *bs, QedCheck *c)
{
    BDRVQedState *s = bs->opaque;
    uint64_t end_cl = div_round_up_u64((uint64_t)c->end, s->cluster_size);
    int leaks = 0, tail = 0;

    for (uint64_t i = 0; i < c->clusters; i++) {
        if (!(c->used[i / 8] & (1u << (i % 8)))) {
            leaks++;
            tail += i >= end_cl;
        }
    }
    if (leaks) {
        bdrv_check_report(c->res, "qed: %d clusters are not referenced", leaks);
        c->res->leaks += leaks;
    }
    if (tail && (c->fix & BDRV_FIX_LEAKS)) {
        int ret = bdrv_co_flush(bs->file->bs);

        ret = ret ? ret : bdrv_co_truncate(bs->file, c->end, true, PREALLOC_MODE_OFF, 0, NULL);
        if (ret < 0) {
            return ret;
        }
        c->res->leaks_fixed += tail;
        s->file_end = c->end;
    }
    return 0;
}

static int coroutine_fn qed_do_check(BlockDriverState *bs, BdrvCheckResult *res,
                                     BdrvCheckMode fix)
{
    BDRVQedState *s = bs->opaque;
    QedCheck c = { .res = res, .fix = fix };
    int ret;

    c.file_len = bdrv_co_getlength(bs->file->bs);
    if (c.file_len < 0) {
        res->check_errors++;
        return (int)c.file_len;
    }
    c.clusters = div_round_up_u64((uint64_t)c.file_len, s->cluster_size);
    c.used = calloc(1, (size_t)(c.clusters / 8 + 1));
    if (!c.used) {
        res->check_errors++;
        return -ENOMEM;
    }
    for (int i = 0; i < s->n_cache; i++) {
        s->cache[i].offset = 0; /* repairs rewrite tables behind the cache */
    }
    ret = qed_check_tables(bs, &c);
    if (ret == 0) {
        ret = qed_check_leaks(bs, &c);
    }
    free(c.used);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    res->image_end_offset = c.end;
    res->total_clusters = (int64_t)div_round_up_u64(s->image_size, s->cluster_size);
    if (fix && res->corruptions == res->corruptions_fixed && s->marked_dirty == false &&
        (s->features & QED_F_NEED_CHECK)) {
        ret = bdrv_co_flush(bs->file->bs);
        s->features &= ~QED_F_NEED_CHECK;
        ret = ret ? ret : qed_write_header(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

static int coroutine_fn qed_co_check(BlockDriverState *bs, BdrvCheckResult *res,
                                     BdrvCheckMode fix)
{
    BDRVQedState *s = bs->opaque;
    int ret;

    co_mutex_lock(&s->table_lock);
    /* A cluster taken but not yet linked would look leaked. */
    fmt_inflight_wait_all(&s->allocs, &s->table_lock);
    ret = qed_commit(bs, false); /* the check reads the tables from the file */
    if (ret < 0) {
        res->check_errors++;
    } else {
        ret = qed_do_check(bs, res, fix);
    }
    co_mutex_unlock(&s->table_lock);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Open and close */

static int coroutine_fn qed_open_tables(BlockDriverState *bs, Error **errp)
{
    BDRVQedState *s = bs->opaque;
    int n = (int)(QED_CACHE_BYTES / s->table_bytes);
    int ret;

    s->n_cache = n < 1 ? 1 : n > QED_CACHE_MAX ? QED_CACHE_MAX : n;
    for (int i = 0; i < s->n_cache; i++) {
        s->cache[i].table = malloc(s->table_bytes);
        if (!s->cache[i].table) {
            error_setg(errp, "Could not allocate the L2 cache of '%s'", bs->filename);
            return -ENOMEM;
        }
    }
    s->l1 = malloc(s->table_bytes);
    if (!s->l1) {
        error_setg(errp, "Could not allocate the L1 table of '%s'", bs->filename);
        return -ENOMEM;
    }
    ret = qed_read_table(bs, s->l1_offset, s->l1);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the L1 table of '%s'", bs->filename);
    }
    return ret;
}

/* A dirty image: checked; repaired (and the mark cleared) when writable. */
static int coroutine_fn qed_open_check(BlockDriverState *bs, Error **errp)
{
    BdrvCheckResult res = { 0 };
    int ret = qed_do_check(bs, &res, bs->read_only ? BDRV_FIX_NONE
                                                   : BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);

    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not check the dirty image '%s'", bs->filename);
        return ret;
    }
    if (res.corruptions > res.corruptions_fixed) {
        coblk_warn("qed: '%s' was not closed cleanly and has %d corruptions%s", bs->filename,
                   res.corruptions - res.corruptions_fixed,
                   bs->read_only ? "; open it read-write to repair them" : "");
    }
    return 0;
}

static int coroutine_fn qed_co_open(BlockDriverState *bs, Error **errp)
{
    BDRVQedState *s = bs->opaque;
    int64_t file_len = bdrv_co_getlength(bs->file->bs);
    int ret;

    if (file_len < 0) {
        error_setg_errno(errp, (int)file_len, "Could not get the size of '%s'", bs->filename);
        return (int)file_len;
    }
    if (file_len < QED_HEADER_LEN) {
        error_setg(errp, "'%s' is too short for a QED header (%lld bytes)", bs->filename,
                   (long long)file_len);
        return -EINVAL;
    }
    ret = fmt_co_pread(bs->file, 0, QED_HEADER_LEN, s->hdr);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not read the header of '%s'", bs->filename);
        return ret;
    }
    ret = qed_check_header(bs, s, file_len, errp);
    if (ret == 0) {
        ret = qed_read_backing_name(bs, errp);
    }
    if (ret == 0) {
        ret = qed_open_tables(bs, errp);
    }
    if (ret < 0) {
        return ret;
    }
    s->file_end = (int64_t)round_up_u64((uint64_t)file_len, s->cluster_size);
    if (ld_le64(s->hdr + QH_AUTOCLEAR) && !bs->read_only) {
        st_le64(s->hdr + QH_AUTOCLEAR, 0); /* unknown autoclear bits are dropped */
        ret = qed_write_header(bs);
    }
    if (ret == 0 && (s->features & QED_F_NEED_CHECK)) {
        ret = qed_open_check(bs, errp);
    }
    return ret;
}

typedef struct QedOpenCo {
    BlockDriverState *bs;
    Error **errp;
} QedOpenCo;

static int64_t coroutine_fn qed_open_co(void *opaque)
{
    QedOpenCo *o = opaque;

    return qed_co_open(o->bs, o->errp);
}

static void qed_free(BDRVQedState *s)
{
    for (int i = 0; i < QED_CACHE_MAX; i++) {
        free(s->cache[i].table);
        s->cache[i].table = NULL;
    }
    free(s->l1);
    s->l1 = NULL;
}

static int qed_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVQedState *s = bs->opaque;
    QedOpenCo o = { bs, errp };
    int ret;

    co_mutex_init(&s->table_lock);
    fmt_inflight_init(&s->allocs);
    fmt_defer_init(&s->dirty);
    bs->file = bdrv_open_child(NULL, options, "file", bs, BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY,
                               false, errp);
    if (!bs->file) {
        return -EINVAL;
    }
    ret = (int)bdrv_run_co(bs->aio_context, qed_open_co, &o);
    if (ret < 0) {
        qed_free(s);
    }
    return ret;
}

/* A clean close: everything durable, then the NEED_CHECK mark cleared. */
static int64_t coroutine_fn qed_close_co(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQedState *s = bs->opaque;
    int ret;

    if (!s->marked_dirty) {
        return 0;
    }
    co_mutex_lock(&s->table_lock);
    ret = qed_commit(bs, false);
    co_mutex_unlock(&s->table_lock);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        s->features &= ~QED_F_NEED_CHECK;
        ret = qed_write_header(bs);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

/* Going read-only is a clean point: the need-check mark is cleared first. */
static int qed_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                              Error **errp)
{
    BDRVQedState *s = bs->opaque;
    int ret;

    if (new_flags & BDRV_O_RDWR) {
        return 0;
    }
    ret = (int)bdrv_run_co(bs->aio_context, qed_close_co, bs);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not mark '%s' clean", bs->filename);
        return ret;
    }
    s->marked_dirty = false;
    return 0;
}

static void qed_reopen_noop(BlockDriverState *bs)
{
}

static void qed_close(BlockDriverState *bs)
{
    BDRVQedState *s = bs->opaque;

    if (bdrv_run_co(bs->aio_context, qed_close_co, bs) < 0) {
        coblk_warn("qed: '%s' stays marked for a check: closing it failed", bs->filename);
    }
    qed_free(s);
}

/* ---------------------------------------------------------------------- */
/* Resize */

/*
 * Shrinking: every cluster past the new end must be unallocated (or a zero
 * cluster); the kept part of a partial last cluster is zeroed past the new
 * end so that a later grow reads zeroes there. Caller holds table_lock.
 */
static int coroutine_fn qed_shrink_check(BlockDriverState *bs, uint64_t size, Error **errp)
{
    BDRVQedState *s = bs->opaque;
    uint64_t first = div_round_up_u64(size, s->cluster_size), e;
    uint64_t end = div_round_up_u64(s->image_size, s->cluster_size);
    int ret;

    for (uint64_t cl = first; cl < end; cl++) {
        if (!s->l1[cl / s->table_entries]) {
            cl = (cl / s->table_entries + 1) * s->table_entries - 1;
            continue;
        }
        ret = qed_lookup_l(bs, cl << s->cluster_bits, &e, true);
        if (ret < 0) {
            error_setg_errno(errp, ret, "qed: could not read the L2 table of '%s'",
                             bs->filename);
            return ret;
        }
        if (e > QED_ZERO_CLUSTER) {
            error_setg(errp, "qed: cannot shrink '%s' to %llu bytes: the cluster at guest "
                       "offset %llu past the new end is allocated (only an unallocated tail "
                       "can be dropped)", bs->filename, (unsigned long long)size,
                       (unsigned long long)(cl << s->cluster_bits));
            return -ENOTSUP;
        }
    }
    if (size % s->cluster_size == 0) {
        return 0;
    }
    ret = qed_lookup_l(bs, size, &e, true);
    if (ret == 0 && e > QED_ZERO_CLUSTER) {
        uint64_t in = size % s->cluster_size, n = s->cluster_size - in;

        ret = qed_offset_ok(s, e, s->cluster_size, s->file_end)
              ? bdrv_co_pwrite_zeroes(bs->file, (int64_t)(e + in), (int64_t)n, 0) : -EIO;
    }
    if (ret < 0) {
        error_setg_errno(errp, ret, "qed: could not zero the tail of the last cluster of '%s'",
                         bs->filename);
    }
    return ret;
}

/*
 * Grow within what the L1 table maps, or shrink an unallocated tail (as
 * qemu-img, which cannot shrink qed at all, the image size must stay a
 * multiple of 512). Ordering: everything before is flushed, then the header
 * (one sector) gets the new size and is flushed. The new area reads as
 * zeroes without a backing file; with one, unallocated clusters past the old
 * end show the backing file's data there, as in QEMU's qed.
 */
static int coroutine_fn qed_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, BdrvRequestFlags flags,
                                        Error **errp)
{
    BDRVQedState *s = bs->opaque;
    uint64_t size = (uint64_t)offset;
    uint64_t max = (uint64_t)s->table_entries * s->table_entries;
    int ret;

    max = max > (UINT64_MAX >> s->cluster_bits) ? UINT64_MAX : max << s->cluster_bits;

    if (prealloc != PREALLOC_MODE_OFF) {
        error_setg(errp, "qed: resize with preallocation is not supported");
        return -ENOTSUP;
    }
    if (size % 512 || size == 0) {
        error_setg(errp, "qed: new size %llu of '%s' is not a non-zero multiple of 512",
                   (unsigned long long)size, bs->filename);
        return -EINVAL;
    }
    if (size > max) {
        error_setg(errp, "qed: cannot grow '%s' to %llu bytes: its L1 table maps at most %llu "
                   "bytes (cluster size %u, table size %u clusters)", bs->filename,
                   (unsigned long long)size, (unsigned long long)max, s->cluster_size,
                   s->table_size);
        return -ENOTSUP;
    }
    if (size == s->image_size) {
        return 0;
    }
    co_mutex_lock(&s->table_lock);
    /* A shrink must see every cluster the writes in flight link. */
    fmt_inflight_wait_all(&s->allocs, &s->table_lock);
    ret = qed_mark_dirty(bs);
    ret = ret ? ret : qed_commit(bs, false); /* the entries before the new size */
    if (ret == 0 && size < s->image_size) {
        ret = qed_shrink_check(bs, size, errp);
        if (ret < 0) {
            co_mutex_unlock(&s->table_lock);
            return ret;
        }
    }
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret == 0) {
        st_le64(s->hdr + QH_SIZE, size);
        ret = qed_write_header(bs);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
        if (ret < 0) {
            st_le64(s->hdr + QH_SIZE, s->image_size);
        } else {
            s->image_size = size;
        }
    }
    co_mutex_unlock(&s->table_lock);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qed: could not resize '%s'", bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Backing file and create */

/* Writes the backing file name into the header area and updates the features. */
static int coroutine_fn qed_co_change_backing_file(BlockDriverState *bs,
                                                   const char *backing_file,
                                                   const char *backing_fmt, Error **errp)
{
    BDRVQedState *s = bs->opaque;
    size_t len = backing_file ? strlen(backing_file) : 0;
    uint64_t old_features = s->features;
    int ret = 0;

    if (len > QED_BACKING_NAME_MAX || QED_HEADER_LEN + len > s->header_bytes) {
        error_setg(errp, "Backing file name of %zu bytes does not fit in the header of '%s'",
                   len, bs->filename);
        return -EINVAL;
    }
    s->features &= ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
    st_le32(s->hdr + QH_BACKING_OFF, len ? QED_HEADER_LEN : 0);
    st_le32(s->hdr + QH_BACKING_LEN, (uint32_t)len);
    if (len) {
        s->features |= QED_F_BACKING_FILE;
        if (backing_fmt && !strcmp(backing_fmt, "raw")) {
            s->features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
        ret = fmt_co_pwrite(bs->file, QED_HEADER_LEN, (int64_t)len, backing_file, 0);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    ret = ret ? ret : qed_write_header(bs);
    if (ret < 0) {
        s->features = old_features;
        error_setg_errno(errp, ret, "Could not write the header of '%s'", bs->filename);
        return ret;
    }
    snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", len ? backing_file : "");
    snprintf(bs->backing_format, sizeof(bs->backing_format), "%s",
             len && backing_fmt ? backing_fmt : "");
    return 0;
}

static const BlockCreateOptDesc qed_create_opts[] = {
    { "backing_file", BLOCK_OPT_STRING, "File name of a base image", NULL },
    { "backing_fmt", BLOCK_OPT_STRING, "Image format of the base image", NULL },
    { "cluster_size", BLOCK_OPT_SIZE, "Cluster size (in bytes)", "65536" },
    { "size", BLOCK_OPT_SIZE, "Virtual disk size", NULL },
    { "table_size", BLOCK_OPT_SIZE, "L1/L2 table size (in clusters)", "4" },
    { NULL, 0, NULL, NULL },
};

typedef struct QedCreate {
    uint64_t size, cluster_size, table_size;
    char *backing, *backing_fmt;
} QedCreate;

static int qed_create_check(QedCreate *c, Error **errp)
{
    uint64_t entries = c->cluster_size * c->table_size / 8;

    if (!is_power_of_2_u64(c->cluster_size) || c->cluster_size < QED_CLUSTER_MIN ||
        c->cluster_size > QED_CLUSTER_MAX) {
        error_setg(errp, "qed: cluster size %llu is not a power of two in [%u, %u]",
                   (unsigned long long)c->cluster_size, QED_CLUSTER_MIN, QED_CLUSTER_MAX);
        return -EINVAL;
    }
    if (!is_power_of_2_u64(c->table_size) || c->table_size > 16 ||
        c->table_size * c->cluster_size > QED_TABLE_MAX_BYTES) {
        error_setg(errp, "qed: table size %llu is not a power of two in [1, 16] (with tables "
                   "of at most %u bytes)", (unsigned long long)c->table_size,
                   QED_TABLE_MAX_BYTES);
        return -EINVAL;
    }
    c->size = round_up_u64(c->size, 512);
    if (c->size / c->cluster_size / entries >= entries || c->size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "qed: size %llu exceeds what the tables map", (unsigned long long)c->size);
        return -EINVAL;
    }
    if (c->backing && (strlen(c->backing) > QED_BACKING_NAME_MAX ||
                       QED_HEADER_LEN + strlen(c->backing) > c->cluster_size)) {
        error_setg(errp, "qed: backing file name is too long");
        return -EINVAL;
    }
    return 0;
}

static int coroutine_fn qed_write_new(BlockBackend *blk, const QedCreate *c)
{
    uint64_t features = 0;
    size_t blen = c->backing ? strlen(c->backing) : 0;
    uint8_t *hdr = calloc(1, QED_HEADER_LEN + blen);
    int ret;

    if (!hdr) {
        return -ENOMEM;
    }
    if (c->backing) {
        features |= QED_F_BACKING_FILE;
        if (c->backing_fmt && !strcmp(c->backing_fmt, "raw")) {
            features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
        memcpy(hdr + QED_HEADER_LEN, c->backing, blen);
        st_le32(hdr + QH_BACKING_OFF, QED_HEADER_LEN);
        st_le32(hdr + QH_BACKING_LEN, (uint32_t)blen);
    }
    st_le32(hdr + QH_MAGIC, QED_MAGIC);
    st_le32(hdr + QH_CLUSTER, (uint32_t)c->cluster_size);
    st_le32(hdr + QH_TABLE, (uint32_t)c->table_size);
    st_le32(hdr + QH_HEADER, 1);
    st_le64(hdr + QH_FEATURES, features);
    st_le64(hdr + QH_L1, c->cluster_size);
    st_le64(hdr + QH_SIZE, c->size);
    ret = blk_co_truncate(blk, (int64_t)(c->cluster_size * (1 + c->table_size)), true,
                          PREALLOC_MODE_OFF, 0, NULL);
    ret = ret ? ret : fmt_blk_co_pwrite(blk, 0, (int64_t)(QED_HEADER_LEN + blen), hdr);
    ret = ret ? ret : blk_co_flush(blk);
    free(hdr);
    return ret;
}

static int coroutine_fn qed_co_create_opts(const BlockDriver *drv, const char *filename,
                                           BlockOpts *options, Error **errp)
{
    QedCreate c = { 0 };
    BlockBackend *blk;
    int ret = -EINVAL;

    if (bopts_take_size(options, "size", 0, &c.size, errp) < 0 ||
        bopts_take_size(options, "cluster_size", QED_CLUSTER_DEFAULT, &c.cluster_size,
                        errp) < 0 ||
        bopts_take_size(options, "table_size", QED_TABLE_DEFAULT, &c.table_size, errp) < 0 ||
        bopts_take_str(options, "backing_file", &c.backing, errp) < 0 ||
        bopts_take_str(options, "backing_fmt", &c.backing_fmt, errp) < 0 ||
        bopts_check_empty(options, "qed", errp) < 0 || qed_create_check(&c, errp) < 0) {
        goto out;
    }
    blk = fmt_co_create_file(filename, errp);
    if (!blk) {
        ret = -EIO;
        goto out;
    }
    ret = qed_write_new(blk, &c);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Could not write the new QED image '%s'", filename);
    }
    blk_unref(blk);
out:
    free(c.backing);
    free(c.backing_fmt);
    return ret;
}

static const char *const qed_extensions[] = { "qed", NULL };

const BlockDriver bdrv_qed = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "qed",
    .instance_size = sizeof(BDRVQedState),
    .is_format = true,
    .probe = qed_probe,
    .bdrv_open = qed_open,
    .bdrv_close = qed_close,
    .reopen_prepare = qed_reopen_prepare,
    .reopen_commit = qed_reopen_noop,
    .reopen_abort = qed_reopen_noop,
    .co_preadv = qed_co_preadv,
    .co_pwritev = qed_co_pwritev,
    .co_pwrite_zeroes = qed_co_pwrite_zeroes,
    .co_flush_to_os = qed_co_flush_to_os,
    .co_block_status = qed_co_block_status,
    .co_getlength = qed_co_getlength,
    .co_truncate = qed_co_truncate,
    .co_create_opts = qed_co_create_opts,
    .create_opts = qed_create_opts,
    .get_info = qed_get_info,
    .co_check = qed_co_check,
    .co_change_backing_file = qed_co_change_backing_file,
    .supports_backing = true,
    .file_extensions = qed_extensions,
};
