/*
 * qcow2: metadata overlap checks before writes, and the corrupt bit.
 *
 * Modes (option overlap-check): none; constant (header, active L1, refcount
 * table, snapshot table, inactive L1 tables, bitmap directory); cached (also
 * active L2 tables and refcount blocks, from the in-memory L1 and refcount
 * tables; the default); all (also inactive L2 tables, read from the
 * snapshots' L1 tables).
 *
 * A detected inconsistency sets the corrupt bit (v3), makes the node
 * read-only and fails the request with -EIO; a corrupt image opens
 * read-only only (header.c).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

int qcow2_parse_overlap_check(const char *mode, int *mask)
{
    if (!mode || !strcmp(mode, "cached")) {
        *mask = QCOW2_OL_CACHED;
    } else if (!strcmp(mode, "none")) {
        *mask = 0;
    } else if (!strcmp(mode, "constant")) {
        *mask = QCOW2_OL_CONSTANT;
    } else if (!strcmp(mode, "all")) {
        *mask = QCOW2_OL_ALL;
    } else {
        return -EINVAL;
    }
    return 0;
}

static bool overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return alen && blen && a < b + blen && b < a + alen;
}

int coroutine_fn qcow2_signal_corruption(BlockDriverState *bs, const char *fmt, ...)
{
    BDRVQcow2State *s = bs->opaque;
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (s->corrupt_signalled) {
        return -EIO;
    }
    s->corrupt_signalled = true;
    if (!(bs->open_flags & BDRV_O_RDWR) || bs->read_only) {
        coblk_warn("qcow2: image '%s' is corrupt: %s", bs->filename, msg);
        return -EIO;
    }
    coblk_warn("qcow2: marking image '%s' as corrupt: %s; further corruption events will be "
               "suppressed", bs->filename, msg);
    s->incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    qcow2_write_incompat(bs);
    bs->read_only = true;
    return -EIO;
}

/* Inactive L2 tables: read each snapshot's L1 table. */
static int coroutine_fn check_inactive_l2(BlockDriverState *bs, uint64_t off, uint64_t len,
                                          const char **what)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint32_t n = s->snapshots[i].l1_size;
        uint64_t *l1 = malloc((size_t)n * 8 + 8);
        bool hit = false;

        if (!l1) {
            return -ENOMEM;
        }
        if (qcow2_pread(bs->file, (int64_t)s->snapshots[i].l1_table_offset, (int64_t)n * 8,
                        l1) >= 0) {
            for (uint32_t j = 0; j < n && !hit; j++) {
                hit = overlaps(off, len, ld_be64(&l1[j]) & L1E_OFFSET_MASK, s->cluster_size);
            }
        }
        free(l1);
        if (hit) {
            *what = "inactive L2 table";
            return 1;
        }
    }
    return 0;
}

/* Returns 1 with *what set if [off, off+len) overlaps metadata in mask. */
static int coroutine_fn find_overlap(BlockDriverState *bs, int mask, uint64_t off, uint64_t len,
                                     const char **what)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;

    if ((mask & QCOW2_OL_HEADER) && overlaps(off, len, 0, cs)) {
        *what = "qcow2 header";
        return 1;
    }
    if ((mask & QCOW2_OL_ACTIVE_L1) &&
        overlaps(off, len, s->l1_table_offset, (uint64_t)s->l1_size * 8)) {
        *what = "active L1 table";
        return 1;
    }
    if ((mask & QCOW2_OL_REFTABLE) &&
        overlaps(off, len, s->refcount_table_offset, s->refcount_table_clusters * cs)) {
        *what = "refcount table";
        return 1;
    }
    if ((mask & QCOW2_OL_SNAPSHOT_TABLE) &&
        overlaps(off, len, s->snapshots_offset, s->snapshots_size)) {
        *what = "snapshot table";
        return 1;
    }
    for (uint32_t i = 0; (mask & QCOW2_OL_INACTIVE_L1) && i < s->nb_snapshots; i++) {
        if (overlaps(off, len, s->snapshots[i].l1_table_offset,
                     (uint64_t)s->snapshots[i].l1_size * 8)) {
            *what = "inactive L1 table";
            return 1;
        }
    }
    if ((mask & QCOW2_OL_BITMAP_DIR) &&
        overlaps(off, len, s->bitmap_ext_offset, s->bitmap_ext_size)) {
        *what = "bitmap directory";
        return 1;
    }
    for (uint32_t i = 0; (mask & QCOW2_OL_ACTIVE_L2) && i < s->l1_size; i++) {
        if (overlaps(off, len, s->l1_table[i] & L1E_OFFSET_MASK, cs)) {
            *what = "active L2 table";
            return 1;
        }
    }
    for (uint64_t i = 0; (mask & QCOW2_OL_REFBLOCK) && i < s->refcount_table_used; i++) {
        if (overlaps(off, len, s->refcount_table[i] & REFT_OFFSET_MASK, cs)) {
            *what = "refcount block";
            return 1;
        }
    }
    if (mask & QCOW2_OL_INACTIVE_L2) {
        return check_inactive_l2(bs, off, len, what);
    }
    return 0;
}

int coroutine_fn qcow2_check_overlap(BlockDriverState *bs, int ign, uint64_t off, uint64_t len)
{
    BDRVQcow2State *s = bs->opaque;
    const char *what = NULL;
    int mask = s->overlap_check & ~ign;
    int ret;

    if (!mask || !len) {
        return 0;
    }
    ret = find_overlap(bs, mask, off, len, &what);
    if (ret <= 0) {
        return ret;
    }
    return qcow2_signal_corruption(bs, "preventing invalid write on metadata (write at 0x%llx, "
                                   "%llu bytes, overlaps with %s)", (unsigned long long)off,
                                   (unsigned long long)len, what);
}
