/*
 * qcow2: write-back caches of L2 tables and refcount blocks, and the
 * ordered flush that makes metadata durable.
 *
 * Each cache holds a fixed number of cluster-sized tables (l2-cache-size,
 * refcount-cache-size), allocated once at open. Entries in use (ref > 0)
 * are never evicted. Evicting a dirty L2 table first makes refcounts and
 * guest data durable (s->l2_needs_barrier), so an L2 entry never reaches the
 * disk before the refcount of, and the data in, the cluster it points to.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

Qcow2Cache *qcow2_cache_create(int entries, size_t table_size, bool is_l2)
{
    Qcow2Cache *c = calloc(1, sizeof(*c));
    uint32_t slots = 16;

    if (!c) {
        return NULL;
    }
    c->size = entries;
    c->table_size = table_size;
    c->is_l2 = is_l2;
    c->e = calloc((size_t)entries, sizeof(*c->e));
    if (posix_memalign((void **)&c->mem, 4096, (size_t)entries * table_size) != 0) {
        c->mem = NULL;
    }
    while (slots < 2 * (uint32_t)entries) { /* entries <= INT32_MAX / 2 (cache_sizes) */
        slots *= 2;
    }
    c->hash = malloc(slots * sizeof(*c->hash));
    c->hash_mask = slots - 1;
    if (!c->e || !c->mem || !c->hash) {
        qcow2_cache_destroy(c);
        return NULL;
    }
    memset(c->hash, 0xff, slots * sizeof(*c->hash));
    return c;
}

void qcow2_cache_destroy(Qcow2Cache *c)
{
    if (c) {
        free(c->e);
        free(c->mem);
        free(c->hash);
        free(c);
    }
}

/* ---------------------------------------------------------------------- */
/*
 * The index: table offset -> entry, open addressing with linear probing
 * (at most half full), so a lookup costs O(1) whatever the cache size (a
 * 32 MiB L2 cache of 512-byte clusters has 65536 entries).
 */

static uint32_t hash_slot(const Qcow2Cache *c, uint64_t offset)
{
    uint64_t h = (offset >> 9) * 0x9e3779b97f4a7c15ULL;

    return (uint32_t)(h >> 32) & c->hash_mask;
}

/* The slot holding offset, or -1. Requests tend to hit the same table: try the last first. */
static int find_entry(Qcow2Cache *c, uint64_t offset)
{
    if (c->e[c->hint].offset == offset) {
        return c->hint;
    }
    for (uint32_t k = hash_slot(c, offset);; k = (k + 1) & c->hash_mask) {
        int32_t i = c->hash[k];

        if (i < 0) {
            return -1;
        }
        if (c->e[i].offset == offset) {
            c->hint = i;
            return i;
        }
    }
}

/* Removes entry i (mapping offset) from the index: backward-shift deletion. */
static void hash_remove(Qcow2Cache *c, uint64_t offset, int i)
{
    uint32_t k = hash_slot(c, offset);

    while (c->hash[k] != i) {
        k = (k + 1) & c->hash_mask;
    }
    for (uint32_t j = (k + 1) & c->hash_mask; c->hash[j] >= 0; j = (j + 1) & c->hash_mask) {
        uint32_t home = hash_slot(c, c->e[c->hash[j]].offset);

        /* Move j's entry into the hole at k unless its home lies in (k, j]. */
        if (((j - home) & c->hash_mask) >= ((j - k) & c->hash_mask)) {
            c->hash[k] = c->hash[j];
            k = j;
        }
    }
    c->hash[k] = -1;
}

/* Gives entry i the table offset (0: empty), keeping the index in step. */
static void set_offset(Qcow2Cache *c, int i, uint64_t offset)
{
    uint32_t k;

    if (c->e[i].offset) {
        hash_remove(c, c->e[i].offset, i);
    }
    c->e[i].offset = offset;
    if (!offset) {
        return;
    }
    for (k = hash_slot(c, offset); c->hash[k] >= 0; k = (k + 1) & c->hash_mask) {
    }
    c->hash[k] = i;
}

static uint8_t *table_of(Qcow2Cache *c, int i)
{
    return c->mem + (size_t)i * c->table_size;
}

static int index_of(Qcow2Cache *c, const uint8_t *table)
{
    return (int)((size_t)(table - c->mem) / c->table_size);
}

/* Makes the L2 ordering barrier: refcounts written, then the file flushed. */
static int coroutine_fn l2_barrier(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (!s->l2_needs_barrier) {
        return 0;
    }
    ret = qcow2_cache_write(bs, s->refcount_cache);
    if (ret >= 0 && s->data_file != bs->file) {
        ret = bdrv_co_flush(s->data_file->bs);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        s->l2_needs_barrier = false;
    }
    return ret;
}

static int coroutine_fn write_entry(BlockDriverState *bs, Qcow2Cache *c, int i)
{
    Qcow2CacheEntry *e = &c->e[i];
    int ret;

    if (!e->dirty) {
        return 0;
    }
    if (c->is_l2) {
        ret = l2_barrier(bs);
        if (ret < 0) {
            return ret;
        }
    }
    ret = qcow2_check_overlap(bs, c->is_l2 ? QCOW2_OL_ACTIVE_L2 : QCOW2_OL_REFBLOCK, e->offset,
                              c->table_size);
    if (ret < 0) {
        return ret;
    }
    /* Clear first: a write into the table while we yield makes it dirty again. */
    e->dirty = false;
    BLKDBG_EVENT(bs->file, c->is_l2 ? BLKDBG_L2_UPDATE : BLKDBG_REFBLOCK_UPDATE);
    ret = qcow2_pwrite(bs->file, (int64_t)e->offset, (int64_t)c->table_size, table_of(c, i));
    if (ret < 0) {
        e->dirty = true;
    }
    return ret;
}

int coroutine_fn qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c)
{
    int ret = 0;

    for (int i = 0; i < c->size; i++) {
        int r = write_entry(bs, c, i);

        if (r < 0 && ret == 0) {
            ret = r;
        }
    }
    return ret;
}

/* Finds a slot for offset: a free one, else the least recently used unused one. */
static int coroutine_fn find_victim(BlockDriverState *bs, Qcow2Cache *c, int *out)
{
    for (;;) {
        int best = -1;
        int ret;

        for (int i = 0; i < c->size; i++) {
            if (c->e[i].ref) {
                continue;
            }
            if (c->e[i].offset == 0) {
                *out = i;
                return 0;
            }
            if (best < 0 || c->e[i].lru < c->e[best].lru) {
                best = i;
            }
        }
        if (best < 0) {
            return -ENOSPC; /* every table in use: the cache is too small */
        }
        if (!c->e[best].dirty) {
            *out = best;
            return 0;
        }
        c->e[best].ref++;
        ret = write_entry(bs, c, best);
        c->e[best].ref--;
        if (ret < 0) {
            return ret;
        }
        /* We yielded: someone may have taken or redirtied it; look again. */
    }
}


uint8_t *qcow2_cache_peek(Qcow2Cache *c, uint64_t offset)
{
    int i = offset ? find_entry(c, offset) : -1;

    if (i < 0) {
        return NULL;
    }
    c->e[i].lru = ++c->clock;
    return table_of(c, i);
}

static int coroutine_fn cache_do_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                     uint8_t **table, bool read)
{
    int i, ret;

    for (;;) {
        i = find_entry(c, offset);
        if (i >= 0) {
            break;
        }
        ret = find_victim(bs, c, &i);
        if (ret < 0) {
            return ret;
        }
        /* Another coroutine may have loaded offset while we wrote the victim. */
        if (find_entry(c, offset) >= 0) {
            continue;
        }
        if (read) {
            /* A table read from an offset on top of fixed metadata is corruption. */
            ret = qcow2_check_overlap(bs, QCOW2_OL_ACTIVE_L2 | QCOW2_OL_INACTIVE_L2 |
                                      QCOW2_OL_REFBLOCK, offset, c->table_size);
            if (ret < 0) {
                return ret;
            }
        }
        set_offset(c, i, offset);
        c->e[i].dirty = false;
        if (read) {
            c->e[i].ref++;
            BLKDBG_EVENT(bs->file, c->is_l2 ? BLKDBG_L2_LOAD : BLKDBG_REFBLOCK_LOAD);
            ret = qcow2_pread(bs->file, (int64_t)offset, (int64_t)c->table_size, table_of(c, i));
            c->e[i].ref--;
            if (ret < 0) {
                set_offset(c, i, 0);
                return ret;
            }
        } else {
            memset(table_of(c, i), 0, c->table_size);
        }
        break;
    }
    c->e[i].ref++;
    c->e[i].lru = ++c->clock;
    *table = table_of(c, i);
    return 0;
}

int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                 uint8_t **table)
{
    return cache_do_get(bs, c, offset, table, true);
}

int coroutine_fn qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                       uint8_t **table)
{
    int ret = cache_do_get(bs, c, offset, table, false);

    if (ret == 0) {
        memset(*table, 0, c->table_size);
    }
    return ret;
}

void qcow2_cache_put(Qcow2Cache *c, uint8_t **table)
{
    int i = index_of(c, *table);

    c->e[i].ref--;
    *table = NULL;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, uint8_t *table)
{
    c->e[index_of(c, table)].dirty = true;
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    int i = find_entry(c, offset);

    if (i >= 0 && c->e[i].ref == 0) {
        set_offset(c, i, 0);
        c->e[i].dirty = false;
    } else if (i >= 0) {
        c->e[i].dirty = false; /* in use: only forget that it must be written */
    }
}

void qcow2_cache_clean(Qcow2Cache *c)
{
    for (int i = 0; i < c->size; i++) {
        if (!c->e[i].ref && !c->e[i].dirty && c->e[i].offset) {
            set_offset(c, i, 0);
        }
    }
}

bool qcow2_cache_idle(const Qcow2Cache *c)
{
    for (int i = 0; i < c->size; i++) {
        if (c->e[i].dirty || c->e[i].ref) {
            return false;
        }
    }
    return true;
}

bool qcow2_cache_contains(Qcow2Cache *c, uint64_t offset)
{
    return find_entry(c, offset) >= 0;
}

/*
 * The ordered flush: refcount blocks, barrier, L2 tables, flush, L1
 * entries, flush; then the deferred frees (their refcount drops are
 * written by the next flush).
 */
int coroutine_fn qcow2_cache_flush_all(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    bool l1 = s->l1_dirty_lo < s->l1_dirty_hi;
    bool l2 = false;
    int ret;

    for (int i = 0; i < s->l2_cache->size; i++) {
        l2 |= s->l2_cache->e[i].dirty;
    }
    ret = qcow2_cache_write(bs, s->refcount_cache);
    if (ret < 0) {
        return ret;
    }
    s->l2_needs_barrier = s->l2_needs_barrier || l2 || l1;
    ret = qcow2_cache_write(bs, s->l2_cache); /* makes the barrier first */
    if (ret < 0) {
        return ret;
    }
    if (l2 && l1) {
        ret = bdrv_co_flush(bs->file->bs);
        if (ret < 0) {
            return ret;
        }
    }
    if (l1) {
        ret = qcow2_write_l1_entries(bs);
        if (ret < 0) {
            return ret;
        }
    }
    if (s->nb_pending_free) {
        ret = bdrv_co_flush(bs->file->bs);
        if (ret >= 0) {
            ret = qcow2_apply_pending_frees(bs);
        }
        if (ret >= 0) {
            ret = qcow2_cache_write(bs, s->refcount_cache);
        }
    }
    return ret;
}
