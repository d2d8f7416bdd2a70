/*
 * qcow2: amend (change create options in place), make_empty (commit) and
 * measure (qemu-img measure -O qcow2).
 *
 * amend supports compat 0.10 <-> 1.1, lazy_refcounts, refcount_bits (a new
 * refcount structure written by rebuild.c), backing_file / backing_fmt.
 * Order: upgrade, refcount width, lazy refcounts, backing file, downgrade.
 * A downgrade to 0.10 refuses images using v3-only features: zero clusters
 * (converting them is not implemented), extended L2, external data file,
 * zstd compression, persistent bitmaps, refcount_bits other than 16.
 * Other options (cluster_size, size, preallocation, ...) may be given with
 * their current value only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk/image.h"
#include "qcow2.h"

typedef struct AmendOpts {
    int version;            /* 0 = unchanged */
    int lazy;               /* -1 unchanged, 0 off, 1 on */
    int refcount_order;     /* -1 unchanged */
    char *backing_file, *backing_fmt;
    bool has_backing_file, has_backing_fmt;
} AmendOpts;

static int log2_u64(uint64_t v)
{
    int n = 0;

    while (v > 1) {
        v >>= 1;
        n++;
    }
    return n;
}

/* An option we cannot change: accepted only with the current value. */
static int same_or_refuse(BlockOpts *o, const char *key, const char *cur, Error **errp)
{
    const char *v = bopts_get(o, key);

    if (v && strcmp(v, cur) != 0) {
        error_setg(errp, "qcow2: changing '%s' (to '%s') is not supported by amend", key, v);
        return -ENOTSUP;
    }
    bopts_del(o, key);
    return 0;
}

static int parse_amend(BlockDriverState *bs, BlockOpts *o, AmendOpts *a, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    char *compat = NULL, cs[32], *tmp = NULL;
    uint64_t rb = 0;
    bool lazy;
    int r;

    a->lazy = -1;
    a->refcount_order = -1;
    snprintf(cs, sizeof(cs), "%llu", (unsigned long long)s->cluster_size);
    if (same_or_refuse(o, "cluster_size", cs, errp) < 0 ||
        same_or_refuse(o, "encryption", "off", errp) < 0 ||
        same_or_refuse(o, "preallocation", "off", errp) < 0 ||
        same_or_refuse(o, "extended_l2", qcow2_extl2(s) ? "on" : "off", errp) < 0 ||
        same_or_refuse(o, "compression_type", s->compression_type ? "zstd" : "zlib",
                       errp) < 0 ||
        same_or_refuse(o, "data_file", s->image_data_file ? s->image_data_file : "",
                       errp) < 0) {
        return -ENOTSUP;
    }
    snprintf(cs, sizeof(cs), "%llu", (unsigned long long)s->size);
    if (bopts_has(o, "size") && same_or_refuse(o, "size", cs, errp) < 0) {
        error_prepend(errp, "use 'resize': ");
        return -ENOTSUP;
    }
    if (bopts_take_str(o, "compat", &compat, errp) < 0) {
        return -EINVAL;
    }
    if (compat) {
        a->version = !strcmp(compat, "1.1") || !strcmp(compat, "v3") ? 3
                   : !strcmp(compat, "0.10") || !strcmp(compat, "v2") ? 2 : -1;
        if (a->version < 0) {
            error_setg(errp, "qcow2: invalid compatibility level '%s' (use 0.10 or 1.1)",
                       compat);
        }
        free(compat);
        if (a->version < 0) {
            return -EINVAL;
        }
    }
    r = bopts_take_bool(o, "lazy_refcounts", false, &lazy, errp);
    if (r < 0) {
        return -EINVAL;
    }
    a->lazy = r > 0 ? lazy : -1;
    r = bopts_take_uint64(o, "refcount_bits", 16, &rb, errp);
    if (r < 0) {
        return -EINVAL;
    }
    if (r > 0) {
        if (!rb || rb > 64 || (rb & (rb - 1))) {
            error_setg(errp, "qcow2: refcount_bits must be a power of two up to 64 (got %llu)",
                       (unsigned long long)rb);
            return -EINVAL;
        }
        a->refcount_order = log2_u64(rb);
    }
    a->has_backing_file = bopts_has(o, "backing_file");
    a->has_backing_fmt = bopts_has(o, "backing_fmt");
    if (bopts_take_str(o, "backing_file", &a->backing_file, errp) < 0 ||
        bopts_take_str(o, "backing_fmt", &tmp, errp) < 0) {
        return -EINVAL;
    }
    a->backing_fmt = tmp;
    return bopts_check_empty(o, "qcow2 amend", errp);
}

/* Whether any L2 entry of the active or snapshot tables is a zero cluster. */
static int coroutine_fn has_zero_clusters(BlockDriverState *bs, bool *found)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *t;
    int ret = 0;

    *found = false;
    for (int64_t k = -1; k < (int64_t)s->nb_snapshots && !*found && ret >= 0; k++) {
        uint64_t *l1 = s->l1_table;
        uint32_t n = s->l1_size;

        if (k >= 0) {
            n = s->snapshots[k].l1_size;
            ret = qcow2_read_l1(bs, s->snapshots[k].l1_table_offset, n, &l1);
        }
        for (uint32_t i = 0; ret >= 0 && i < n && !*found; i++) {
            uint64_t l2off = l1[i] & L1E_OFFSET_MASK;

            if (!l2off) {
                continue;
            }
            ret = qcow2_cache_get(bs, s->l2_cache, l2off, &t);
            for (int j = 0; ret >= 0 && j < s->l2_size; j++) {
                uint64_t e = qcow2_l2_get(s, t, j);

                if (!(e & QCOW_OFLAG_COMPRESSED) && (e & QCOW_OFLAG_ZERO)) {
                    *found = true;
                    break;
                }
            }
            if (ret >= 0) {
                qcow2_cache_put(s->l2_cache, &t);
            }
        }
        if (k >= 0) {
            free(l1);
        }
    }
    return ret;
}

static int coroutine_fn downgrade(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const char *why = qcow2_extl2(s) ? "extended L2 entries (extended_l2=on)"
                    : qcow2_has_data_file(s) ? "an external data file"
                    : s->compression_type ? "compression_type=zstd"
                    : s->refcount_order != 4 ? "refcount_bits other than 16"
                    : s->bitmap_ext_offset ? "persistent bitmaps"
                    : (s->incompatible_features & ~QCOW2_INCOMPAT_DIRTY) ?
                      "incompatible feature bits" : NULL;
    bool zero;
    int ret;

    if (!why) {
        ret = has_zero_clusters(bs, &zero);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "qcow2: '%s': cannot read the L2 tables", bs->filename);
            return ret;
        }
        why = zero ? "zero clusters (converting them to compat=0.10 is not supported; "
                     "rewrite them as data first)" : NULL;
    }
    if (why) {
        error_setg(errp, "qcow2: '%s': cannot downgrade to compat=0.10: the image uses %s",
                   bs->filename, why);
        return -ENOTSUP;
    }
    ret = qcow2_cache_flush_all(bs);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': flush failed", bs->filename);
        return ret;
    }
    s->version = 2;
    s->incompatible_features = 0;
    s->compatible_features = 0;
    s->autoclear_features = 0;
    s->use_lazy_refcounts = false;
    s->dirty_set = false;
    return 0;
}

static int coroutine_fn set_lazy(BlockDriverState *bs, bool on, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (on && s->version < 3) {
        error_setg(errp, "qcow2: lazy refcounts only supported with compatibility level 1.1 "
                   "and above (use compat=1.1)");
        return -EINVAL;
    }
    if (on) {
        s->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
        return 0;
    }
    ret = qcow2_cache_flush_all(bs);
    if (ret >= 0 && (s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_mark_clean(bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': cannot mark the image clean", bs->filename);
        return ret;
    }
    s->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
    s->use_lazy_refcounts = false;
    return 0;
}

static int coroutine_fn set_refcount_order(BlockDriverState *bs, int order, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Refs r;
    int ret;

    if (order == s->refcount_order) {
        return 0;
    }
    if (s->version < 3) {
        error_setg(errp, "qcow2: different refcount widths than 16 bits require compatibility "
                   "level 1.1 or above (use compat=1.1)");
        return -EINVAL;
    }
    ret = qcow2_count_image_refs(bs, &r);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': cannot count the references (run 'check "
                         "-r all' first)", bs->filename);
        return ret;
    }
    qcow2_refs_drop_reftable(s, &r, NULL);
    ret = qcow2_rebuild_refcounts(bs, &r, order, errp);
    free(r.r);
    return ret;
}

static int coroutine_fn amend_locked(BlockDriverState *bs, AmendOpts *a, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (a->version == 3 && s->version < 3) {
        s->version = 3;
        s->refcount_order = 4;
        ret = qcow2_update_header(bs);
    }
    if (ret >= 0 && a->refcount_order >= 0) {
        ret = set_refcount_order(bs, a->refcount_order, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (ret >= 0 && a->lazy >= 0) {
        ret = set_lazy(bs, a->lazy, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (ret >= 0 && a->version == 2 && s->version >= 3) {
        if (a->lazy == 1) {
            error_setg(errp, "qcow2: lazy refcounts only supported with compatibility level "
                       "1.1 and above (use compat=1.1)");
            return -EINVAL;
        }
        ret = downgrade(bs, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (ret >= 0) {
        ret = qcow2_update_header(bs);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': cannot write the header", bs->filename);
    }
    return ret;
}

int coroutine_fn qcow2_co_amend(BlockDriverState *bs, BlockOpts *options, bool force,
                                Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    AmendOpts a = { 0 };
    int ret;

    (void)force;
    ret = parse_amend(bs, options, &a, errp);
    if (ret < 0) {
        goto out;
    }
    if (bdrv_is_read_only(bs)) {
        error_setg(errp, "qcow2: '%s' is read-only", bs->filename);
        ret = -EACCES;
        goto out;
    }
    co_mutex_lock(&s->lock);
    ret = amend_locked(bs, &a, errp);
    co_mutex_unlock(&s->lock);
    if (ret >= 0 && (a.has_backing_file || a.has_backing_fmt)) {
        const char *file = a.has_backing_file ? a.backing_file : bs->backing_file;
        const char *fmt = a.has_backing_fmt ? a.backing_fmt
                        : a.has_backing_file ? NULL : bs->backing_format;

        if (file && !file[0]) {
            file = NULL;
        }
        if (!file && fmt && fmt[0]) {
            error_setg(errp, "qcow2: backing_fmt needs a backing file");
            ret = -EINVAL;
        } else {
            ret = bdrv_change_backing_file(bs, file, fmt && fmt[0] ? fmt : NULL, errp);
        }
    }
out:
    free(a.backing_file);
    free(a.backing_fmt);
    return ret;
}

/* ---------------------------------------------------------------------- */

int coroutine_fn qcow2_co_make_empty(BlockDriverState *bs, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->nb_snapshots) {
        error_setg(errp, "qcow2: '%s' has internal snapshots: emptying it is not supported",
                   bs->filename);
        return -ENOTSUP;
    }
    ret = qcow2_bitmaps_note_write(bs, 0, s->size);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not load the bitmaps", bs->filename);
        return ret;
    }
    ret = qcow2_zero_or_discard(bs, 0, round_up_u64(s->size, s->cluster_size), false, true,
                                true);
    if (ret >= 0) {
        co_mutex_lock(&s->lock);
        ret = qcow2_cache_flush_all(bs);
        co_mutex_unlock(&s->lock);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': cannot empty the image", bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* measure */

/*
 * Metadata of an image of virtual size vsize (cluster aligned) with every
 * cluster allocated: header, L2 tables, L1 table, and the refcount blocks
 * and table covering all of it (the same figure as qemu-img measure).
 */
static uint64_t full_metadata(uint64_t vsize, uint64_t cs, int refcount_order, int l2e)
{
    uint64_t meta = cs, nl2e = div_round_up_u64(vsize, cs), clusters, blocks = 0, table = 0;
    uint64_t E = cs * 8 / (1ULL << refcount_order);

    nl2e = round_up_u64(nl2e, cs / (uint64_t)l2e);
    meta += nl2e * (uint64_t)l2e;
    meta += round_up_u64(nl2e * (uint64_t)l2e / cs * 8, cs);
    clusters = (vsize + meta) / cs;
    for (int it = 0; it < 100; it++) {
        uint64_t b = div_round_up_u64(clusters + blocks + table, E);
        uint64_t t = div_round_up_u64(b * 8, cs);

        if (b == blocks && t == table) {
            break;
        }
        blocks = b;
        table = t;
    }
    return meta + (blocks + table) * cs;
}

typedef struct MeasureCo {
    BlockDriverState *bs;
    uint64_t size, cs, data;
} MeasureCo;

/* Adds the clusters of [off, off + len) (output geometry), rounded out. */
static void count_range(MeasureCo *m, uint64_t off, uint64_t len, uint64_t *counted_end)
{
    uint64_t start = off & ~(m->cs - 1), end = round_up_u64(off + len, m->cs);

    if (start < *counted_end) {
        start = *counted_end;
    }
    if (end > start) {
        m->data += end - start;
        *counted_end = end;
    }
}

/*
 * Counts the data parts of a mapped range: holes of the file below (as
 * SEEK_HOLE reports them) hold zeroes and need no cluster.
 */
static int coroutine_fn count_mapped(MeasureCo *m, BlockDriverState *file, uint64_t off,
                                     uint64_t map, uint64_t len, uint64_t *counted_end)
{
    for (uint64_t done = 0; done < len;) {
        int64_t pnum = 0;
        int ret = bdrv_co_block_status(file, (int64_t)(map + done), (int64_t)(len - done),
                                       &pnum, NULL, NULL);

        if (ret < 0 || pnum <= 0) {
            count_range(m, off + done, len - done, counted_end);
            return 0;
        }
        if (!(ret & BDRV_BLOCK_ZERO)) {
            count_range(m, off + done, (uint64_t)pnum, counted_end);
        }
        done += (uint64_t)pnum;
    }
    return 0;
}

/* Bytes of whole clusters holding allocated, non-zero data of the input. */
static int64_t coroutine_fn measure_data_co(void *opaque)
{
    MeasureCo *m = opaque;
    uint64_t counted_end = 0;

    for (uint64_t off = 0; off < m->size;) {
        int64_t pnum = 0, map = 0;
        BlockDriverState *file = NULL;
        int ret = bdrv_co_block_status_above(m->bs, NULL, (int64_t)off,
                                             (int64_t)(m->size - off), &pnum, &map, &file,
                                             NULL);

        if (ret < 0) {
            return ret;
        }
        if (pnum <= 0) {
            break;
        }
        if (!(ret & BDRV_BLOCK_ZERO) && (ret & BDRV_BLOCK_DATA)) {
            if ((ret & BDRV_BLOCK_OFFSET_VALID) && file && file != m->bs) {
                count_mapped(m, file, off, (uint64_t)map, (uint64_t)pnum, &counted_end);
            } else {
                count_range(m, off, (uint64_t)pnum, &counted_end);
            }
        }
        off += (uint64_t)pnum;
    }
    return 0;
}

int qcow2_measure(BlockOpts *o, BlockDriverState *in_bs, BlockMeasureInfo *out, Error **errp)
{
    static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full" };
    uint64_t size = 0, cs = 65536, rb = 16, vsize;
    bool extl2 = false;
    int prealloc = 0, l2e;
    MeasureCo m = { 0 };

    if (bopts_take_size(o, "size", 0, &size, errp) < 0 ||
        bopts_take_size(o, "cluster_size", 65536, &cs, errp) < 0 ||
        bopts_take_uint64(o, "refcount_bits", 16, &rb, errp) < 0 ||
        bopts_take_bool(o, "extended_l2", false, &extl2, errp) < 0 ||
        bopts_take_enum(o, "preallocation", prealloc_names, 4, 0, &prealloc, errp) < 0) {
        return -EINVAL;
    }
    if (cs < 512 || cs > (2ULL << 20) || (cs & (cs - 1))) {
        error_setg(errp, "qcow2: cluster size must be a power of two between 512 and 2048k");
        return -EINVAL;
    }
    if (!rb || rb > 64 || (rb & (rb - 1))) {
        error_setg(errp, "qcow2: refcount_bits must be a power of two up to 64");
        return -EINVAL;
    }
    if (extl2 && cs < 16384) {
        error_setg(errp, "qcow2: extended L2 tables require a cluster size of at least 16k");
        return -EINVAL;
    }
    l2e = extl2 ? 16 : 8;
    vsize = round_up_u64(size, cs);
    if (vsize / cs * (uint64_t)l2e / cs * 8 > QCOW2_MAX_L1_BYTES) {
        error_setg(errp, "qcow2: the image size %llu is too large for cluster size %llu (try using a larger cluster size)",
                   (unsigned long long)size, (unsigned long long)cs);
        return -EFBIG;
    }
    out->fully_allocated = full_metadata(vsize, cs, log2_u64(rb), l2e) + vsize;
    if (prealloc == PREALLOC_MODE_FULL || prealloc == PREALLOC_MODE_FALLOC) {
        m.data = vsize;
    } else if (in_bs) {
        int64_t ret;

        m.bs = in_bs;
        m.size = size;
        m.cs = cs;
        ret = bdrv_run_co(bdrv_get_aio_context(in_bs), measure_data_co, &m);
        if (ret < 0) {
            error_setg_errno(errp, (int)-ret, "qcow2: cannot get the allocation status of '%s'",
                             in_bs->filename);
            return (int)ret;
        }
    }
    out->required = out->fully_allocated - vsize + m.data;
    out->bitmaps = 0;
    /* qemu-img prints a bitmaps size for qcow2 sources (0 without bitmaps). */
    out->has_bitmaps = in_bs && in_bs->drv && !strcmp(in_bs->drv->format_name, "qcow2");
    if (out->has_bitmaps) {
        out->bitmaps = qcow2_bitmaps_measure(in_bs->opaque, cs, size);
    }
    return 0;
}
