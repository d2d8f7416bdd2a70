/*
 * parallels: check and repair (coblk-img check [-r leaks|all]).
 *
 * Found and repaired (-r all unless said otherwise):
 *  - a BAT entry outside the data area or starting past the end of the
 *    file: cleared (its data cannot be read anyway);
 *  - a BAT entry not aligned to a cluster from the data offset, or naming a
 *    cluster another entry (or the Format Extension) also uses: the data is
 *    copied to a new cluster at the end of the data area, flushed, and the
 *    entry pointed at the copy;
 *  - the in_use flag of an image that was not closed cleanly: cleared;
 *  - space past the last used cluster: a leak; -r leaks truncates the file.
 * Memory: one 16-byte record per allocated entry (bounded by the BAT cap).
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-int.h"
#include "drivers/format/fmt-util.h"
#include "drivers/format/parallels/parallels.h"

#define PRL_EXT_IDX UINT32_MAX  /* a cluster the Format Extension uses */

typedef struct PrlUse {
    uint64_t host;
    uint32_t idx;
} PrlUse;

typedef struct PrlCheck {
    PrlUse *uses;
    uint32_t n_uses;
    uint32_t *reloc;            /* entries whose data moves to a new cluster */
    uint32_t n_reloc;
    uint64_t reloc_end;         /* end of the misaligned clusters: copies go past it */
    bool bat_dirty;
} PrlCheck;

/* By host offset; the Format Extension's use first, then by entry. */
static int prl_use_cmp(const void *a, const void *b)
{
    const PrlUse *x = a, *y = b;
    uint64_t xi = x->idx == PRL_EXT_IDX ? 0 : (uint64_t)x->idx + 1;
    uint64_t yi = y->idx == PRL_EXT_IDX ? 0 : (uint64_t)y->idx + 1;

    if (x->host != y->host) {
        return x->host < y->host ? -1 : 1;
    }
    return xi < yi ? -1 : xi > yi;
}

/* Pass 1: entries outside the file or misaligned; the rest go to c->uses. */
static void prl_check_entries(BlockDriverState *bs, PrlCheck *c, BdrvCheckResult *res,
                              BdrvCheckMode fix)
{
    BDRVParallelsState *s = bs->opaque;

    for (uint32_t i = 0; i < s->bat_entries; i++) {
        uint32_t e = prl_entry(s, i);
        uint64_t host = prl_host(s, e);

        if (e == 0) {
            continue;
        }
        if (host < s->data_off || host >= s->grow.file_len) {
            bdrv_check_report(res, "parallels: %s cluster %u is outside the image (offset %llu, "
                              "data area %llu..%llu)", fix & BDRV_FIX_ERRORS ? "Repairing" :
                              "ERROR", i, (unsigned long long)host,
                              (unsigned long long)s->data_off,
                              (unsigned long long)s->grow.file_len);
            res->corruptions++;
            if (fix & BDRV_FIX_ERRORS) {
                prl_set_entry(s, i, 0);
                c->bat_dirty = true;
                res->corruptions_fixed++;
            }
        } else if ((host - s->data_off) % s->cluster_size) {
            bdrv_check_report(res, "parallels: %s cluster %u at offset %llu is not aligned to "
                              "a cluster from the data offset %llu", fix & BDRV_FIX_ERRORS ?
                              "Repairing" : "ERROR", i, (unsigned long long)host,
                              (unsigned long long)s->data_off);
            res->corruptions++;
            if (fix & BDRV_FIX_ERRORS) {
                c->reloc[c->n_reloc++] = i;
            }
            if (host + s->cluster_size > c->reloc_end) {
                c->reloc_end = host + s->cluster_size;
            }
        } else {
            c->uses[c->n_uses++] = (PrlUse){ host, i };
        }
    }
    for (uint32_t i = 0; i < s->n_ext_clusters; i++) {
        c->uses[c->n_uses++] = (PrlUse){ s->ext_clusters[i], PRL_EXT_IDX };
    }
}

/* Pass 2: clusters used twice; data_end from the rest. */
static void prl_check_shared(BlockDriverState *bs, PrlCheck *c, BdrvCheckResult *res,
                             BdrvCheckMode fix)
{
    BDRVParallelsState *s = bs->opaque;

    qsort(c->uses, c->n_uses, sizeof(PrlUse), prl_use_cmp);
    s->data_end = c->reloc_end > s->data_off ? c->reloc_end : s->data_off;
    for (uint32_t j = 0; j < c->n_uses; j++) {
        const PrlUse *u = &c->uses[j];

        if (u->host + s->cluster_size > s->data_end) {
            s->data_end = u->host + s->cluster_size;
        }
        if (j == 0 || u->host != c->uses[j - 1].host) {
            continue;
        }
        res->corruptions++;
        if (u->idx == PRL_EXT_IDX) {
            bdrv_check_report(res, "parallels: ERROR the Format Extension uses the cluster at "
                              "%llu twice", (unsigned long long)u->host);
            continue;
        }
        bdrv_check_report(res, "parallels: %s cluster %u shares the cluster at offset %llu "
                          "with %s", fix & BDRV_FIX_ERRORS ? "Repairing" : "ERROR", u->idx,
                          (unsigned long long)u->host,
                          c->uses[j - 1].idx == PRL_EXT_IDX ? "the Format Extension"
                                                            : "another BAT entry");
        if (fix & BDRV_FIX_ERRORS) {
            c->reloc[c->n_reloc++] = u->idx;
        }
    }
}

/* Copies the clusters of c->reloc to new ones, then points the entries at them. */
static int coroutine_fn prl_relocate(BlockDriverState *bs, PrlCheck *c, BdrvCheckResult *res)
{
    BDRVParallelsState *s = bs->opaque;
    uint32_t *newv;
    uint8_t *buf;
    int ret = 0;

    if (c->n_reloc == 0) {
        return 0;
    }
    buf = malloc(s->cluster_size);
    newv = malloc((size_t)c->n_reloc * 4);
    if (!buf || !newv) {
        free(buf);
        free(newv);
        return -ENOMEM;
    }
    for (uint32_t r = 0; r < c->n_reloc && ret == 0; r++) {
        uint64_t from = prl_host(s, prl_entry(s, c->reloc[r])), to = prl_next_cluster(s);

        if (to / s->unit > UINT32_MAX) {
            ret = -ENOSPC;
            break;
        }
        ret = fmt_co_pread(bs->file, (int64_t)from, (int64_t)s->cluster_size, buf);
        if (ret == 0) {
            ret = fmt_co_pwrite(bs->file, (int64_t)to, (int64_t)s->cluster_size, buf, 0);
        }
        newv[r] = (uint32_t)(to / s->unit);
        s->data_end = to + s->cluster_size;
        if (s->data_end > s->grow.file_len) {
            fmt_grow_truncated(&s->grow, s->data_end);
        }
        fmt_grow_written(&s->grow, s->data_end);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs); /* copies durable before the BAT points at them */
    }
    if (ret == 0) {
        for (uint32_t r = 0; r < c->n_reloc; r++) {
            prl_set_entry(s, c->reloc[r], newv[r]);
        }
        res->corruptions_fixed += (int)c->n_reloc;
        c->bat_dirty = true;
    }
    free(buf);
    free(newv);
    return ret;
}

/* Space past the last used cluster. */
static int coroutine_fn prl_check_leak(BlockDriverState *bs, BdrvCheckResult *res,
                                       BdrvCheckMode fix)
{
    BDRVParallelsState *s = bs->opaque;
    uint64_t extra, n;
    int ret;

    if (s->grow.file_len <= s->data_end) {
        return 0;
    }
    extra = s->grow.file_len - s->data_end;
    n = div_round_up_u64(extra, s->cluster_size);
    n = n > INT_MAX / 2 ? INT_MAX / 2 : n;
    bdrv_check_report(res, "parallels: %s space leaked at the end of the image: %llu bytes",
                      fix & BDRV_FIX_LEAKS ? "Repairing" : "ERROR", (unsigned long long)extra);
    res->leaks += (int)n;
    if (!(fix & BDRV_FIX_LEAKS) || res->corruptions > res->corruptions_fixed) {
        return 0;
    }
    ret = bdrv_co_truncate(bs->file, (int64_t)s->data_end, true, PREALLOC_MODE_OFF, 0, NULL);
    if (ret < 0) {
        return ret;
    }
    fmt_grow_truncated(&s->grow, s->data_end);
    res->leaks_fixed += (int)n;
    return 0;
}

static void prl_check_stats(BDRVParallelsState *s, BdrvCheckResult *res)
{
    uint64_t prev = 0;

    res->image_end_offset = (int64_t)s->data_end;
    res->total_clusters = s->bat_entries;
    for (uint32_t i = 0; i < s->bat_entries; i++) {
        uint64_t host = prl_host(s, prl_entry(s, i));

        if (prl_entry(s, i) == 0) {
            continue;
        }
        res->allocated_clusters++;
        if (prev && prev + s->cluster_size != host) {
            res->fragmented_clusters++;
        }
        prev = host;
    }
}

/* The check itself; the caller excludes I/O (or runs it at open). */
int coroutine_fn prl_do_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVParallelsState *s = bs->opaque;
    int64_t len = bdrv_co_getlength(bs->file->bs);
    PrlCheck c = { 0 };
    int ret = 0;

    if (len < 0) {
        res->check_errors++;
        return (int)len;
    }
    if (bs->read_only) {
        fix = BDRV_FIX_NONE;
    }
    fmt_grow_truncated(&s->grow, (uint64_t)len);
    c.uses = malloc(((size_t)s->bat_entries + s->n_ext_clusters + 1) * sizeof(PrlUse));
    c.reloc = malloc(((size_t)s->bat_entries + 1) * 4);
    if (!c.uses || !c.reloc) {
        ret = -ENOMEM;
        goto out;
    }
    prl_check_entries(bs, &c, res, fix);
    prl_check_shared(bs, &c, res, fix);
    ret = prl_relocate(bs, &c, res);
    if (ret == 0 && c.bat_dirty) {
        ret = prl_write_bat_range(bs, 0, s->bat_entries);
        ret = ret ? ret : bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0 && s->unclean) {
        bdrv_check_report(res, "parallels: %s the image was not closed correctly (in_use is "
                          "set)", fix & BDRV_FIX_ERRORS ? "Repairing" : "ERROR");
        res->corruptions++;
        if (fix & BDRV_FIX_ERRORS) {
            s->unclean = false; /* the header says "closed" again at the next clean close */
            res->corruptions_fixed++;
        }
    }
    if (ret == 0) {
        ret = prl_check_leak(bs, res, fix);
    }
    prl_scan_bat(s);
    if (prl_rebuild_free(s) < 0 && ret == 0) {
        ret = -ENOMEM;
    }
    s->corrupt = s->corrupt || res->corruptions > res->corruptions_fixed + (s->unclean ? 1 : 0);
    prl_check_stats(s, res);
out:
    if (ret < 0) {
        res->check_errors++;
    }
    free(c.uses);
    free(c.reloc);
    return ret;
}

int coroutine_fn prl_co_check(BlockDriverState *bs, BdrvCheckResult *res, BdrvCheckMode fix)
{
    BDRVParallelsState *s = bs->opaque;
    int ret;

    co_rwlock_wrlock(&s->lock);
    co_mutex_lock(&s->alloc_lock);
    /* The tail grown ahead of new clusters is not a leak: cut it first. */
    ret = fmt_co_grow_trim(bs->file, &s->grow, s->data_end);
    ret = ret ? ret : prl_do_check(bs, res, fix);
    co_mutex_unlock(&s->alloc_lock);
    co_rwlock_unlock(&s->lock);
    return ret;
}
