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
 * in the middle stays unused until the image is converted; allocations
 * append at the end of the data area as before.
 */
#include <errno.h>
#include <stdlib.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/parallels.h"

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
    }
    if (!at_end) {
        return 0;
    }
    prl_scan_bat(s); /* data_end: the end of the last cluster still used */
    if (s->file_len <= s->data_end) {
        return 0;
    }
    if (bdrv_co_truncate(bs->file, (int64_t)s->data_end, true, PREALLOC_MODE_OFF, 0,
                         NULL) == 0) {
        s->file_len = s->data_end;
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
    /* Large discards in steps, so the saved entries stay small. */
    for (uint64_t i = first; i < end && ret == 0; i += 65536) {
        uint64_t e = end - i > 65536 ? i + 65536 : end;

        ret = prl_unmap(bs, (uint32_t)i, (uint32_t)e);
    }
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->lock);
    return ret;
}
