/*
 * Writes to hosted sparse extents: in place into allocated grains, into new
 * grains appended to the extent file, and zeroed-grain entries.
 *
 * Plain (uncompressed) extents hold s->lock only around metadata, never
 * around guest data I/O. A write is cut into chunks of at most
 * VMDK_CHUNK_GRAINS grains; for each chunk:
 *  1. under s->lock: wait while any of its grains has an allocating write in
 *     flight (s->allocs), look its entries up, take the new grains at the end
 *     of the file (e->next_alloc moves past them, so the next allocation,
 *     grain or grain table, goes after them) and list the chunk in s->allocs;
 *  2. without it: write the data (a run of whole new grains as one write,
 *     a partial new grain filled from what lies below it, allocated grains
 *     in place);
 *  3. under s->lock: set the chunk's entries in the grain table cache and
 *     mark their tables dirty (e->dirty, FmtDefer); unlist the chunk. The
 *     dirty tables are written at the next guest flush (co_flush_to_os),
 *     close, reopen read-only, resize, when the set (64 tables) is full or
 *     when a table must leave the cache (a dirty one never does): a flush of
 *     the extent file first, then each dirty table whole, and its redundant
 *     copy. N allocating writes between two guest flushes cost two flushes,
 *     not N.
 *
 * Crash safety: a grain table reaches the file only after the data of
 * every grain it maps is durable (the commit flushes first; an entry is set
 * only once its grain's data is written). A new grain table is zeroed and
 * flushed before the directory entry naming it (ensure_gt in sparse.c). A
 * new grain lies past every grain and table the metadata names, so writing
 * it (which grows the file when it is the last one) never touches referenced
 * data; a crash before its entry is written leaves it as unreferenced space.
 * A write acknowledged before a guest flush is durable once the flush is.
 *
 * A failed data write sets no entry. Its grains are given back when they are
 * the last thing taken from the file; otherwise (a later allocation took
 * space after them) they stay leaked: grain_size bytes of file space each,
 * which no metadata names. VMDK has no free-space map, so nothing reclaims
 * them short of rewriting the image (qemu-img convert); `check` does not
 * count them, as qemu-img's vmdk check does not.
 *
 * streamOptimized (compressed) extents stay serialized under s->lock: their
 * grains are appended in order, each behind a marker, at a place and with a
 * size known only once the grain is compressed, and such images are written
 * once front to back by a converter, where nothing runs concurrently.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/vmdk/vmdk-int.h"

#define VMDK_CHUNK_GRAINS 64

typedef enum GrainKind {
    GRAIN_NOTHING,      /* a zero write over a grain that reads as zeroes already */
    GRAIN_IN_PLACE,     /* allocated: written where it is */
    GRAIN_NEW,          /* a new grain at host */
    GRAIN_ZERO_ENTRY,   /* a whole grain zeroed: its entry becomes VMDK_GTE_ZEROED */
} GrainKind;

typedef struct GrainOp {
    GrainKind kind;
    uint32_t gte;       /* the entry when looked up */
    uint64_t host;      /* IN_PLACE, NEW: the grain's byte offset in the file */
} GrainOp;

/* Up to VMDK_CHUNK_GRAINS grains of one request. */
typedef struct AllocChunk {
    int idx;            /* the extent */
    VmdkExtent *e;
    uint64_t off;       /* extent byte offset of the chunk's first byte */
    uint64_t bytes;
    size_t qoff;
    uint64_t g0;        /* extent byte offset of its first grain */
    int n;              /* grains */
    int n_new;
    uint64_t new_first; /* file offset of the first new grain */
    bool listed;        /* in s->allocs (some entry changes) */
    FmtInflight rec;
    GrainOp g[VMDK_CHUNK_GRAINS];
} AllocChunk;

/* What a chunk's grain i turns into (s->lock held). */
static GrainKind grain_kind(BlockDriverState *bs, const VmdkExtent *e, uint32_t gte,
                            uint64_t n, bool zero)
{
    if (!zero) {
        return gte > 1 ? GRAIN_IN_PLACE : GRAIN_NEW;
    }
    if (vmdk_gte_is_zero(e, gte) || (gte == 0 && !bs->backing)) {
        return GRAIN_NOTHING;
    }
    if (n == e->grain_size && (e->flags & VMDK4_FLAG_ZERO_GRAIN)) {
        return GRAIN_ZERO_ENTRY;
    }
    return gte > 1 ? GRAIN_IN_PLACE : GRAIN_NEW;
}

/* Bytes of the chunk's grain i that the request covers, and where they start in it. */
static uint64_t grain_part(const VmdkExtent *e, const AllocChunk *c, int i, uint64_t *in)
{
    uint64_t goff = c->g0 + (uint64_t)i * e->grain_size;
    uint64_t from = goff > c->off ? goff : c->off;
    uint64_t to = goff + e->grain_size < c->off + c->bytes ? goff + e->grain_size
                                                           : c->off + c->bytes;

    *in = from - goff;
    return to - from;
}

/* Step 1: waits for the chunk's grains, looks them up, takes new ones (s->lock held). */
static int coroutine_fn plan_chunk(BlockDriverState *bs, int idx, AllocChunk *c, bool zero)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    bool changes = false;

    for (int i = 0; i < c->n; i++) {
        if (fmt_inflight_busy(&s->allocs, vmdk_grain_unit(e, c->g0 + i * e->grain_size))) {
            fmt_inflight_wait(&s->allocs, &s->lock);
            i = -1; /* everything may have changed: look again from the start */
        }
    }
    /* From here on nothing yields with the entries of the chunk unsettled. */
    for (int i = 0; i < c->n; i++) {
        GrainOp *g = &c->g[i];
        VmdkGtSlot *slot;
        uint64_t in, n = grain_part(e, c, i, &in);
        int ret = vmdk_gte_lookup(s, idx, c->g0 + i * e->grain_size, &g->gte, &slot);

        if (ret < 0) {
            return ret;
        }
        g->kind = grain_kind(bs, e, g->gte, n, zero);
        if (g->kind == GRAIN_IN_PLACE && (ret = vmdk_grain_host(e, g->gte, &g->host)) < 0) {
            return ret;
        }
    }
    /* Only now take file space: the lookups above may have yielded. */
    c->n_new = 0;
    c->new_first = e->next_alloc;
    for (int i = 0; i < c->n; i++) {
        GrainOp *g = &c->g[i];

        if (g->kind == GRAIN_NEW) {
            if ((e->next_alloc + e->grain_size) / VMDK_SECTOR > UINT32_MAX) {
                e->next_alloc = c->new_first;
                return -ENOSPC;
            }
            g->host = e->next_alloc;
            e->next_alloc += e->grain_size;
            c->n_new++;
        }
        changes |= g->kind == GRAIN_NEW || g->kind == GRAIN_ZERO_ENTRY;
    }
    c->listed = changes;
    if (changes) {
        fmt_inflight_begin(&s->allocs, &c->rec, vmdk_grain_unit(e, c->g0),
                           (uint64_t)c->n * (e->grain_size / VMDK_SECTOR));
    }
    return 0;
}

/*
 * A partial new grain whole in buf: what lies below it (zeroes for a
 * zeroed-grain entry, the parent's data, or zeroes), then the new bytes
 * (zeroes when qiov is NULL).
 */
static int coroutine_fn fill_grain(BlockDriverState *bs, const VmdkExtent *e, uint64_t goff,
                                   uint32_t gte, uint64_t in, uint64_t n, IOVector *qiov,
                                   size_t qoff, uint8_t *buf)
{
    int ret = 0;

    if (vmdk_gte_is_zero(e, gte)) {
        memset(buf, 0, e->grain_size);
    } else {
        ret = vmdk_read_below(bs, e->start + goff, e->grain_size, buf);
    }
    if (ret < 0) {
        return ret;
    }
    if (qiov) {
        iovector_to_buf(qiov, qoff, buf + in, n);
    } else {
        memset(buf + in, 0, n);
    }
    return 0;
}

/* Writes the chunk's grains from i on that go out as one request; returns how many, or -errno. */
static int coroutine_fn write_grains(BlockDriverState *bs, VmdkExtent *e, AllocChunk *c, int i,
                                     IOVector *qiov, uint8_t **buf)
{
    GrainOp *g = &c->g[i];
    uint64_t in, n = grain_part(e, c, i, &in);
    size_t qoff = c->qoff + (size_t)(c->g0 + i * e->grain_size + in - c->off);
    int k = 1, ret;

    if (g->kind == GRAIN_NOTHING || g->kind == GRAIN_ZERO_ENTRY) {
        return 1;
    }
    if (g->kind == GRAIN_IN_PLACE || (g->kind == GRAIN_NEW && n == e->grain_size)) {
        /* In place, or whole new grains: a run of them in one write. */
        uint64_t next_in;

        while (g->kind == GRAIN_NEW && qiov && i + k < c->n && c->g[i + k].kind == GRAIN_NEW &&
               grain_part(e, c, i + k, &next_in) == e->grain_size) {
            k++;
        }
        BLKDBG_EVENT(e->child, BLKDBG_WRITE_AIO);
        ret = qiov ? bdrv_co_pwritev_part(e->child, (int64_t)(g->host + in),
                                          (int64_t)(n * (uint64_t)k), qiov, qoff, 0)
                   : bdrv_co_pwrite_zeroes(e->child, (int64_t)(g->host + in), (int64_t)n, 0);
        return ret < 0 ? ret : k;
    }
    if (!*buf && !(*buf = malloc(e->grain_size))) {
        return -ENOMEM;
    }
    ret = fill_grain(bs, e, c->g0 + i * e->grain_size, g->gte, in, n, qiov, qoff, *buf);
    if (ret < 0) {
        return ret;
    }
    BLKDBG_EVENT(e->child, BLKDBG_COW_WRITE);
    ret = vmdk_co_pwrite(e->child, g->host, *buf, e->grain_size);
    return ret < 0 ? ret : 1;
}

/* Step 2, without s->lock: the chunk's data. */
static int coroutine_fn write_chunk(BlockDriverState *bs, VmdkExtent *e, AllocChunk *c,
                                    IOVector *qiov, uint8_t **buf)
{
    for (int i = 0; i < c->n;) {
        int k = write_grains(bs, e, c, i, qiov, buf);

        if (k < 0) {
            return k;
        }
        i += k;
    }
    return 0;
}

/* Neighbouring entries of one grain table (of one chunk), set at once. */
typedef struct GteRun {
    int idx;
    uint64_t gt;
    uint32_t pos, n;
    uint32_t vals[VMDK_CHUNK_GRAINS];
} GteRun;

static int coroutine_fn run_write(BDRVVmdkState *s, GteRun *r)
{
    int ret = r->n ? vmdk_gte_defer(s, r->idx, r->gt, r->pos, r->n, r->vals) : 0;

    r->n = 0;
    return ret;
}

/* Adds the chunk's new entries to r, setting r first where they do not continue it. */
static int coroutine_fn run_add(BDRVVmdkState *s, GteRun *r, const AllocChunk *c)
{
    const VmdkExtent *e = c->e;
    int ret = 0;

    for (int i = 0; i < c->n && ret == 0; i++) {
        const GrainOp *g = &c->g[i];
        uint64_t grain = c->g0 / e->grain_size + (uint64_t)i;
        uint64_t gt = grain / e->gtes_per_gt;
        uint32_t pos = (uint32_t)(grain % e->gtes_per_gt);

        if (g->kind != GRAIN_NEW && g->kind != GRAIN_ZERO_ENTRY) {
            continue;
        }
        if (r->n && (r->idx != c->idx || r->gt != gt || r->pos + r->n != pos)) {
            ret = run_write(s, r);
        }
        if (r->n == 0) {
            r->idx = c->idx;
            r->gt = gt;
            r->pos = pos;
        }
        r->vals[r->n++] = g->kind == GRAIN_NEW ? (uint32_t)(g->host / VMDK_SECTOR)
                                               : VMDK_GTE_ZEROED;
    }
    return ret;
}

/*
 * Step 3 (s->lock held): the chunk's entries, in the cache at once and on
 * disk at the next commit (after a flush of the data): neighbouring entries
 * of a table go out as one write.
 */
static int coroutine_fn commit_chunk(BDRVVmdkState *s, AllocChunk *c)
{
    GteRun r;
    int ret;

    r.n = 0;
    ret = run_add(s, &r, c);
    return ret ? ret : run_write(s, &r);
}

/* A failed chunk's new grains go back if they are the last thing taken from the file. */
static void give_back(const AllocChunk *c)
{
    VmdkExtent *e = c->e;

    if (c->n_new && c->new_first + (uint64_t)c->n_new * e->grain_size == e->next_alloc) {
        e->next_alloc = c->new_first;
    }
    /* Otherwise they stay leaked: see the file comment. */
}

static int coroutine_fn plain_pwritev(BlockDriverState *bs, int idx, uint64_t off,
                                      uint64_t bytes, IOVector *qiov, size_t qoff, bool zero)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    uint8_t *buf = NULL;
    AllocChunk c;
    int ret = 0;

    while (bytes && ret == 0) {
        uint64_t in = off % e->grain_size, host;
        uint64_t max = (uint64_t)VMDK_CHUNK_GRAINS * e->grain_size - in;

        /*
         * In place in one allocated grain: no lock, as for reads (allocated
         * grains do not move while open). The planned way took 490 more
         * instructions per 4 KiB write than raw (callgrind), and 0.87-0.92
         * of raw's random in-place writes (bench/README.md, vmdk).
         */
        if (!zero && in + bytes <= e->grain_size && vmdk_gte_plain_hit(s, idx, off, &host)) {
            BLKDBG_EVENT(e->child, BLKDBG_WRITE_AIO);
            ret = bdrv_co_pwritev_part(e->child, (int64_t)host, (int64_t)bytes, qiov, qoff, 0);
            break;
        }

        c.off = off;
        c.bytes = bytes < max ? bytes : max;
        c.qoff = qoff;
        c.g0 = off - in;
        c.n = (int)div_round_up_u64(in + c.bytes, e->grain_size);
        c.idx = idx;
        c.e = e;
        co_mutex_lock(&s->lock);
        ret = plan_chunk(bs, idx, &c, zero);
        co_mutex_unlock(&s->lock);
        if (ret < 0) {
            break;
        }
        ret = write_chunk(bs, e, &c, zero ? NULL : qiov, &buf);
        if (c.listed || ret < 0) {
            co_mutex_lock(&s->lock);
            if (ret < 0) {
                give_back(&c);
            } else {
                ret = commit_chunk(s, &c);
            }
            if (c.listed) {
                fmt_inflight_end(&s->allocs, &c.rec);
            }
            co_mutex_unlock(&s->lock);
        }
        off += c.bytes;
        qoff += c.bytes;
        bytes -= c.bytes;
    }
    free(buf);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* streamOptimized: serialized (see the file comment) */

/* A grain whose new table entry waits for the data flush. */
typedef struct PendingGte {
    uint64_t off;
    uint32_t sector;
} PendingGte;

static int coroutine_fn commit_pending(BDRVVmdkState *s, int idx, PendingGte *p, int *n)
{
    VmdkExtent *e = s->extents[idx];
    int ret = 0;

    if (*n == 0) {
        return 0;
    }
    ret = bdrv_co_flush(e->child->bs); /* the grains are on disk before their entries */
    for (int i = 0; ret == 0 && i < *n; i++) {
        ret = vmdk_gte_update(s, idx, p[i].off, p[i].sector);
    }
    *n = 0;
    return ret;
}

/* Rewrites the compressed grain of off with new bytes (zeroes if qiov is NULL). */
static int coroutine_fn stream_grain(BlockDriverState *bs, int idx, uint64_t off, uint64_t n,
                                     uint32_t gte, IOVector *qiov, size_t qoff, uint8_t **buf,
                                     PendingGte *pend, int *npend)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    uint64_t in = off % e->grain_size, goff = off - in;
    uint32_t sector;
    int ret = 0;

    if (qiov == NULL && (vmdk_gte_is_zero(e, gte) || (gte == 0 && !bs->backing))) {
        return 0; /* already reads as zeroes */
    }
    if (qiov == NULL && n == e->grain_size && (e->flags & VMDK4_FLAG_ZERO_GRAIN)) {
        pend[(*npend)++] = (PendingGte){ goff, VMDK_GTE_ZEROED };
        return 0;
    }
    if (!*buf && !(*buf = malloc(e->grain_size))) {
        return -ENOMEM;
    }
    if (n < e->grain_size) {
        if (gte > 1) {
            ret = vmdk_stream_read_grain(e, goff / e->grain_size, gte, *buf);
        } else if (vmdk_gte_is_zero(e, gte)) {
            memset(*buf, 0, e->grain_size);
        } else {
            ret = vmdk_read_below(bs, e->start + goff, e->grain_size, *buf);
        }
    }
    if (ret < 0) {
        return ret;
    }
    if (qiov) {
        iovector_to_buf(qiov, qoff, *buf + in, n);
    } else {
        memset(*buf + in, 0, n);
    }
    ret = vmdk_stream_write_grain(e, goff / e->grain_size, *buf, &sector);
    if (ret == 0) {
        pend[(*npend)++] = (PendingGte){ goff, sector };
    }
    return ret;
}

static int coroutine_fn stream_pwritev(BlockDriverState *bs, int idx, uint64_t off,
                                       uint64_t bytes, IOVector *qiov, size_t qoff)
{
    BDRVVmdkState *s = bs->opaque;
    VmdkExtent *e = s->extents[idx];
    PendingGte pend[VMDK_CHUNK_GRAINS];
    uint8_t *buf = NULL;
    int npend = 0, ret = 0;

    co_mutex_lock(&s->lock);
    while (bytes) {
        uint64_t in = off % e->grain_size;
        uint64_t n = bytes < e->grain_size - in ? bytes : e->grain_size - in;
        VmdkGtSlot *slot;
        uint32_t gte;

        ret = vmdk_gte_lookup(s, idx, off, &gte, &slot);
        ret = ret ? ret : stream_grain(bs, idx, off, n, gte, qiov, qoff, &buf, pend, &npend);
        if (ret == 0 && npend == VMDK_CHUNK_GRAINS) {
            ret = commit_pending(s, idx, pend, &npend);
        }
        if (ret < 0) {
            break;
        }
        off += n;
        qoff += n;
        bytes -= n;
    }
    if (ret == 0) {
        ret = commit_pending(s, idx, pend, &npend);
    }
    co_mutex_unlock(&s->lock);
    free(buf);
    return ret;
}

int coroutine_fn vmdk_sparse_pwritev(BlockDriverState *bs, int idx, uint64_t off,
                                     uint64_t bytes, IOVector *qiov, size_t qoff, bool zero)
{
    BDRVVmdkState *s = bs->opaque;

    if (s->extents[idx]->compressed) {
        return stream_pwritev(bs, idx, off, bytes, zero ? NULL : qiov, qoff);
    }
    return plain_pwritev(bs, idx, off, bytes, qiov, qoff, zero);
}
