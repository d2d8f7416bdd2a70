/*
 * parallels: discard of whole clusters.
 *
 * A discard that covers whole guest clusters sets their BAT entries to 0
 * (unallocated: they read zeroes). Images with a backing file keep their
 * clusters (an unallocated one would read the backing file's data), and so
 * do partial clusters: discard is advisory there.
 *
 * Order: the BAT sectors are written and flushed before the clusters' space
 * is released, so a crash never leaves an entry pointing at released space.
 * Released clusters at the end of the data area are cut off the file (so
 * that no leak remains for check to report: the file ends at the last used
 * cluster); the others are punched out of the file (they read zeroes and
 * take no host space). The format has no free-space map: a punched cluster
 * in the middle goes to the free list and is reused by the next
 * allocation (io.c) before the data area grows.
 *
 * The free list: the clusters between the data offset and the end of the
 * last used cluster that no BAT entry (nor the Format Extension) uses. It is
 * rebuilt from the BAT at open, after a check and after the Format
 * Extension is dropped, and grows as discards free clusters. At most
 * PRL_MAX_FREE clusters are remembered (an array of that many indexes,
 * allocated once); beyond that, freed clusters stay unused (punched).
 * A reused cluster is safe: the discard that freed it wrote and flushed
 * the BAT without it before its space was released.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/parallels.h"

/* ---------------------------------------------------------------------- */
/* The free list */

static int prl_cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* Cluster index (from the data offset) of a host offset inside the data area. */
static uint32_t prl_cl(const BDRVParallelsState *s, uint64_t host)
{
    return (uint32_t)((host - s->data_off) / s->cluster_size);
}

/* The array of free clusters, allocated once (PRL_MAX_FREE entries at most). */
static int prl_free_array(BDRVParallelsState *s)
{
    if (!s->free_cl) {
        s->free_cl = malloc(PRL_MAX_FREE * sizeof(s->free_cl[0]));
    }
    return s->free_cl ? 0 : -ENOMEM;
}

/*
 * Rebuilds the free list from the BAT (after prl_scan_bat): the gaps
 * between the used clusters below data_end. Also marks the image corrupt
 * if two entries share a cluster. An image already found corrupt gets an
 * empty list (it refuses writes). Returns 0 or -ENOMEM.
 */
int prl_rebuild_free(BDRVParallelsState *s)
{
    uint32_t *v, n = 0, next = 0, top;

    s->n_free = 0;
    if (s->corrupt) {
        return 0;
    }
    v = malloc(((size_t)s->bat_entries + s->n_ext_clusters + 1) * sizeof(*v));
    if (!v || prl_free_array(s) < 0) {
        free(v);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        if (prl_entry(s, i)) {
            v[n++] = prl_cl(s, prl_host(s, prl_entry(s, i))); /* in range: prl_scan_bat */
        }
    }
    qsort(v, n, sizeof(*v), prl_cmp_u32);
    for (uint32_t i = 1; i < n && !s->corrupt; i++) {
        s->corrupt = v[i] == v[i - 1]; /* shared: check -r all repairs it */
    }
    if (s->n_ext_clusters) {
        for (uint32_t i = 0; i < s->n_ext_clusters; i++) {
            v[n++] = prl_cl(s, s->ext_clusters[i]);
        }
        qsort(v, n, sizeof(*v), prl_cmp_u32);
    }
    top = prl_cl(s, prl_next_cluster(s));
    for (uint32_t i = 0; i < n && !s->corrupt; i++) {
        for (; next < v[i] && s->n_free < PRL_MAX_FREE; next++) {
            s->free_cl[s->n_free++] = next;
        }
        next = v[i] + 1 > next ? v[i] + 1 : next;
    }
    for (; next < top && s->n_free < PRL_MAX_FREE; next++) {
        s->free_cl[s->n_free++] = next;
    }
    free(v);
    if (s->corrupt) {
        s->n_free = 0;
    }
    return 0;
}

/* Takes a free cluster (its host offset) for an allocation, if there is one. */
bool prl_take_free(BDRVParallelsState *s, uint64_t *host)
{
    if (s->n_free == 0) {
        return false;
    }
    *host = s->data_off + (uint64_t)s->free_cl[--s->n_free] * s->cluster_size;
    return true;
}

/* Gives a cluster back to the free list (dropped if the list is full or not allocated). */
void prl_put_free(BDRVParallelsState *s, uint64_t host)
{
    if (s->free_cl && s->n_free < PRL_MAX_FREE) {
        s->free_cl[s->n_free++] = prl_cl(s, host);
    }
}

/* Drops the free clusters at or past data_end (after the file's tail was cut). */
static void prl_trim_free(BDRVParallelsState *s)
{
    uint32_t top = prl_cl(s, prl_next_cluster(s)), n = 0;

    for (uint32_t i = 0; i < s->n_free; i++) {
        if (s->free_cl[i] < top) {
            s->free_cl[n++] = s->free_cl[i];
        }
    }
    s->n_free = n;
}

/* ---------------------------------------------------------------------- */
/* Discard */

/* Releases the space of the clusters whose entries were unmapped (old[k] for idx first + k). */
static int coroutine_fn prl_release(BlockDriverState *bs, const uint32_t *old, uint32_t n)
{
    BDRVParallelsState *s = bs->opaque;
    bool at_end = false;

    for (uint32_t k = 0; k < n; k++) {
        uint64_t host = prl_host(s, old[k]);

        if (old[k] == 0) {
            continue;
        }
        at_end |= host + s->cluster_size >= s->data_end;
        bdrv_co_pdiscard(bs->file, (int64_t)host, (int64_t)s->cluster_size);
        prl_put_free(s, host);
    }
    if (!at_end) {
        return 0;
    }
    prl_scan_bat(s); /* data_end: the end of the last cluster still used */
    prl_trim_free(s); /* free clusters past it go with the tail */
    if (s->grow.file_len <= s->data_end) {
        return 0;
    }
    if (bdrv_co_truncate(bs->file, (int64_t)s->data_end, true, PREALLOC_MODE_OFF, 0,
                         NULL) == 0) {
        fmt_grow_truncated(&s->grow, s->data_end);
    }
    return 0;
}

/* Unmaps guest clusters [first, end): BAT, flush, then their space. alloc_lock held. */
static int coroutine_fn prl_unmap(BlockDriverState *bs, uint32_t first, uint32_t end)
{
    BDRVParallelsState *s = bs->opaque;
    uint32_t n = end - first;
    uint32_t *old = malloc((size_t)n * 4);
    bool any = false;
    int ret;

    if (!old) {
        return -ENOMEM;
    }
    for (uint32_t k = 0; k < n; k++) {
        old[k] = prl_entry(s, first + k);
        if (old[k] != 0 && !prl_host_ok(s, prl_host(s, old[k]))) {
            free(old);
            return -EIO; /* a bad entry: check -r all repairs it first */
        }
        any |= old[k] != 0;
    }
    if (!any) {
        free(old);
        return 0;
    }
    for (uint32_t k = 0; k < n; k++) {
        prl_set_entry(s, first + k, 0);
    }
    ret = prl_write_bat_range(bs, first, n);
    ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        for (uint32_t k = 0; k < n; k++) {
            prl_set_entry(s, first + k, old[k]); /* the next BAT write restores them */
        }
    } else {
        ret = prl_release(bs, old, n);
    }
    free(old);
    return ret;
}

int coroutine_fn prl_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t first = div_round_up_u64((uint64_t)offset, s->cluster_size);
    uint64_t stop = (uint64_t)offset + (uint64_t)bytes, end;
    int ret;

    if (bs->backing || bs->backing_file[0]) {
        return 0; /* unallocated clusters would read the backing file */
    }
    if (stop >= s->disk_size) {
        stop = round_up_u64(s->disk_size, s->cluster_size); /* the last cluster, cut short */
    }
    end = stop / s->cluster_size;
    end = end > s->bat_entries ? s->bat_entries : end;
    if (end <= first) {
        return 0;
    }
    ret = prl_prepare_change(bs);
    if (ret < 0) {
        return ret;
    }
    co_rwlock_rdlock(&s->lock);
    co_mutex_lock(&s->alloc_lock);
    /* Clusters taken by writes in flight are in no entry yet: data_end must not drop below. */
    fmt_inflight_wait_all(&s->allocs, &s->alloc_lock);
    /* Large discards in steps, so the saved entries stay small. */
    for (uint64_t i = first; i < end && ret == 0; i += 65536) {
        uint64_t e = end - i > 65536 ? i + 65536 : end;

        ret = prl_unmap(bs, (uint32_t)i, (uint32_t)e);
    }
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->lock);
    return ret;
}
