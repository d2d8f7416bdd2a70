/*
 * qcow2: internal snapshots (create, goto, delete, list) and the vmstate
 * area.
 *
 * A snapshot is a copy of the active L1 table plus an entry in the snapshot
 * table. Everything an L1 table maps (its L2 tables, data and compressed
 * clusters) holds one reference per L1 table, so taking a snapshot adds one
 * reference to each and clears OFLAG_COPIED in the active tables (the next
 * write copies the cluster); deleting one drops them and sets OFLAG_COPIED
 * again where the refcount fell to 1.
 *
 * Crash safety (each step durable before the next):
 *   create: L1 copy written, OFLAG_COPIED cleared, refcounts +1, then the
 *           new snapshot table, then the header names it, then the old table
 *           is freed;
 *   goto:   refcounts +1 for the snapshot's tables, new active L1 written to
 *           new clusters, header switched, then the old active L1's
 *           references dropped;
 *   delete: new snapshot table and header first, then the references of
 *           the deleted L1 dropped, then OFLAG_COPIED set where refcount 1.
 * A crash between steps leaves leaked clusters at worst.
 *
 * Limits on the snapshot table read from the image are in header.c
 * (count <= 65536, table <= 64 MiB, extra data <= 1 KiB, L1 tables within
 * the file and <= 32 MiB). New snapshots: id <= 127 bytes, name <= 255
 * bytes (BlockSnapshotInfo), count < 65536.
 *
 * The vmstate of the current state lives in the guest address space past
 * the disk, from the first L1 entry not needed for the disk size.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk/image.h"
#include "qcow2.h"

#define SN_EXTRA_SIZE 24 /* vm_state_size (64 bit), disk_size, icount */

/* ---------------------------------------------------------------------- */
/* Reference updates along an L1 table */

/* Adds delta to the refcount of each host cluster an L2 table maps; clears
 * OFLAG_COPIED in the table when clear_copied. */
static int coroutine_fn update_l2(BlockDriverState *bs, uint64_t l2off, int64_t delta,
                                  bool clear_copied)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *t;
    bool dirty = false;
    int ret = qcow2_cache_get(bs, s->l2_cache, l2off, &t);

    if (ret < 0) {
        return ret;
    }
    for (int j = 0; ret >= 0 && j < s->l2_size; j++) {
        uint64_t e = qcow2_l2_get(s, t, j), off = e & L2E_OFFSET_MASK, len = s->cluster_size;

        if (e & QCOW_OFLAG_COMPRESSED) {
            qcow2_decode_compressed(s, e, &off, &len);
        } else if (!off || qcow2_has_data_file(s)) {
            continue;
        } else if (clear_copied && (e & QCOW_OFLAG_COPIED)) {
            qcow2_l2_set(s, t, j, e & ~QCOW_OFLAG_COPIED);
            dirty = true;
        }
        ret = delta ? qcow2_update_cluster_refcount(bs, off, len, delta) : 0;
    }
    if (dirty) {
        qcow2_cache_mark_dirty(s->l2_cache, t);
    }
    qcow2_cache_put(s->l2_cache, &t);
    return ret;
}

/* Adds delta to everything an L1 table (host order) maps, its L2 tables too. */
static int coroutine_fn update_l1(BlockDriverState *bs, const uint64_t *l1, uint32_t n,
                                  int64_t delta, bool clear_copied)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2off = l1[i] & L1E_OFFSET_MASK;
        int ret;

        if (!l2off) {
            continue;
        }
        if (l2off & (s->cluster_size - 1)) {
            return qcow2_signal_corruption(bs, "L2 table offset 0x%llx unaligned",
                                           (unsigned long long)l2off);
        }
        ret = update_l2(bs, l2off, delta, clear_copied);
        if (ret >= 0 && delta) {
            ret = qcow2_update_cluster_refcount(bs, l2off, s->cluster_size, delta);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Sets OFLAG_COPIED in the active tables exactly where the refcount is 1. */
static int coroutine_fn fix_copied(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t e = s->l1_table[i], l2off = e & L1E_OFFSET_MASK, rc, want;
        uint8_t *t;
        bool dirty = false;
        int ret;

        if (!l2off) {
            continue;
        }
        ret = qcow2_get_refcount(bs, l2off >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        want = rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
        if (want != e) {
            s->l1_table[i] = want;
            s->l1_dirty_lo = s->l1_dirty_lo < i ? s->l1_dirty_lo : i;
            s->l1_dirty_hi = s->l1_dirty_hi > i + 1 ? s->l1_dirty_hi : i + 1;
        }
        if (rc != 1 || qcow2_has_data_file(s)) {
            continue; /* a shared table is never changed in place */
        }
        ret = qcow2_cache_get(bs, s->l2_cache, l2off, &t);
        for (int j = 0; ret >= 0 && j < s->l2_size; j++) {
            uint64_t l2e = qcow2_l2_get(s, t, j), off = l2e & L2E_OFFSET_MASK;

            if ((l2e & QCOW_OFLAG_COMPRESSED) || !off) {
                continue;
            }
            ret = qcow2_get_refcount(bs, off >> s->cluster_bits, &rc);
            want = rc == 1 ? l2e | QCOW_OFLAG_COPIED : l2e & ~QCOW_OFLAG_COPIED;
            if (ret >= 0 && want != l2e) {
                qcow2_l2_set(s, t, j, want);
                dirty = true;
            }
        }
        if (t) {
            if (dirty) {
                qcow2_cache_mark_dirty(s->l2_cache, t);
            }
            qcow2_cache_put(s->l2_cache, &t);
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Writes an L1 table (host order, flags masked by keep) to new clusters. */
static int64_t coroutine_fn write_l1_copy(BlockDriverState *bs, const uint64_t *l1, uint32_t n,
                                          uint32_t size, uint64_t keep)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes = (uint64_t)size * 8, *buf;
    int64_t off;
    int ret;

    if (!size) {
        return 0;
    }
    buf = calloc(size, 8);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n && i < size; i++) {
        st_be64(&buf[i], l1[i] & keep);
    }
    off = qcow2_alloc_clusters(bs, div_round_up_u64(bytes, s->cluster_size));
    ret = off < 0 ? (int)off : qcow2_check_overlap(bs, 0, (uint64_t)off, bytes);
    if (ret >= 0) {
        ret = qcow2_pwrite(bs->file, off, (int64_t)bytes, buf);
    }
    free(buf);
    return ret < 0 ? ret : off;
}

/* ---------------------------------------------------------------------- */
/* The snapshot table */

static size_t entry_size(const Qcow2Snapshot *sn)
{
    return round_up_u64(40ULL + sn->extra_data_size + strlen(sn->id_str) + strlen(sn->name),
                        8);
}

static void put_entry(uint8_t *p, const Qcow2Snapshot *sn)
{
    size_t id = strlen(sn->id_str), name = strlen(sn->name);

    memset(p, 0, entry_size(sn));
    st_be64(p, sn->l1_table_offset);
    st_be32(p + 8, sn->l1_size);
    st_be16(p + 12, (uint16_t)id);
    st_be16(p + 14, (uint16_t)name);
    st_be32(p + 16, sn->date_sec);
    st_be32(p + 20, sn->date_nsec);
    st_be64(p + 24, sn->vm_clock_nsec);
    st_be32(p + 32, (uint32_t)sn->vm_state_size);
    st_be32(p + 36, sn->extra_data_size);
    p += 40;
    if (sn->extra_data_size >= 8) {
        st_be64(p, sn->vm_state_size);
    }
    if (sn->extra_data_size >= 16) {
        st_be64(p + 8, sn->disk_size);
    }
    if (sn->extra_data_size >= 24) {
        st_be64(p + 16, sn->icount);
    }
    if (sn->unknown_extra_size) {
        memcpy(p + 24, sn->unknown_extra, sn->unknown_extra_size);
    }
    p += sn->extra_data_size;
    memcpy(p, sn->id_str, id);
    memcpy(p + id, sn->name, name);
}

/* Writes table (n entries) to new clusters, points the header at it, frees the old one. */
static int coroutine_fn write_table(BlockDriverState *bs, Qcow2Snapshot *table, uint32_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t size = 0, pos = 0, old_off = s->snapshots_offset, old_size = s->snapshots_size;
    uint32_t old_n = s->nb_snapshots;
    int64_t off = 0;
    uint8_t *buf;
    int ret = 0;

    for (uint32_t i = 0; i < n; i++) {
        size += entry_size(&table[i]);
    }
    if (size > QCOW2_MAX_SNAPSHOT_TABLE) {
        return -EFBIG;
    }
    buf = malloc(size + 1);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        put_entry(buf + pos, &table[i]);
        pos += entry_size(&table[i]);
    }
    if (n) {
        off = qcow2_alloc_clusters(bs, div_round_up_u64(size, s->cluster_size));
        ret = off < 0 ? (int)off : qcow2_check_overlap(bs, 0, (uint64_t)off, size);
        if (ret >= 0) {
            ret = qcow2_pwrite(bs->file, off, (int64_t)size, buf);
        }
    }
    free(buf);
    if (ret >= 0) {
        ret = qcow2_cache_flush_all(bs);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        return ret;
    }
    s->snapshots_offset = (uint64_t)off;
    s->snapshots_size = size;
    s->nb_snapshots = n;
    ret = qcow2_update_header(bs);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        s->snapshots_offset = old_off;
        s->snapshots_size = old_size;
        s->nb_snapshots = old_n;
        return ret;
    }
    if (old_n && old_size) {
        ret = qcow2_free_clusters(bs, old_off, old_size, QCOW2_DISCARD_SNAPSHOT);
    }
    return ret;
}

static void free_entry(Qcow2Snapshot *sn)
{
    free(sn->id_str);
    free(sn->name);
    free(sn->unknown_extra);
}

/* Index of the snapshot with this id (id != NULL) and / or name, or -1. */
static int find_snapshot(BDRVQcow2State *s, const char *id, const char *name)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if ((!id || !strcmp(s->snapshots[i].id_str, id)) &&
            (!name || !strcmp(s->snapshots[i].name, name))) {
            return (int)i;
        }
    }
    return -1;
}

static void next_id(BDRVQcow2State *s, char *buf, size_t len)
{
    unsigned long max = 0;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        unsigned long v = strtoul(s->snapshots[i].id_str, NULL, 10);

        max = v > max ? v : max;
    }
    snprintf(buf, len, "%lu", max + 1);
}

/* ---------------------------------------------------------------------- */
/* Create */

static int coroutine_fn create_locked(BlockDriverState *bs, Qcow2Snapshot *sn)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Snapshot *t;
    int64_t l1off;
    int ret = qcow2_cache_flush_all(bs);

    if (ret < 0) {
        return ret;
    }
    l1off = write_l1_copy(bs, s->l1_table, s->l1_size, s->l1_size, ~QCOW_OFLAG_COPIED);
    if (l1off < 0) {
        return (int)l1off;
    }
    sn->l1_table_offset = (uint64_t)l1off;
    sn->l1_size = s->l1_size;
    /*
     * OFLAG_COPIED is cleared (durably) before the refcounts rise: a crash in
     * between leaves the flag missing on refcount-1 clusters (harmless),
     * never set on refcount-2 ones.
     */
    ret = update_l1(bs, s->l1_table, s->l1_size, 0, true);
    if (ret < 0) {
        return ret;
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        s->l1_table[i] &= ~QCOW_OFLAG_COPIED;
    }
    s->l1_dirty_lo = 0;
    s->l1_dirty_hi = s->l1_size;
    ret = qcow2_cache_flush_all(bs);    /* L2, then L1 */
    if (ret >= 0) {
        ret = update_l1(bs, s->l1_table, s->l1_size, 1, false);
    }
    if (ret >= 0) {
        ret = qcow2_cache_flush_all(bs);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    t = calloc(s->nb_snapshots + 1, sizeof(*t));
    if (ret < 0 || !t) {
        free(t);
        return ret < 0 ? ret : -ENOMEM;
    }
    if (s->nb_snapshots) {
        memcpy(t, s->snapshots, s->nb_snapshots * sizeof(*t));
    }
    t[s->nb_snapshots] = *sn;
    ret = write_table(bs, t, s->nb_snapshots + 1);
    if (ret < 0) {
        free(t);
        return ret;
    }
    free(s->snapshots);
    s->snapshots = t;
    return 0;
}

int coroutine_fn qcow2_co_snapshot_create(BlockDriverState *bs, BlockSnapshotInfo *info,
                                          Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Snapshot sn = { 0 };
    char id[sizeof(info->id_str)];
    int ret;

    if (bdrv_is_read_only(bs)) {
        error_setg(errp, "qcow2: '%s' is read-only", bs->filename);
        return -EACCES;
    }
    if (!memchr(info->id_str, 0, sizeof(info->id_str)) ||
        !memchr(info->name, 0, sizeof(info->name))) {
        error_setg(errp, "qcow2: snapshot id or name too long");
        return -EINVAL;
    }
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "qcow2: '%s' already has %u snapshots (the limit)", bs->filename,
                   s->nb_snapshots);
        return -EFBIG;
    }
    if (info->id_str[0]) {
        snprintf(id, sizeof(id), "%s", info->id_str);
    } else {
        next_id(s, id, sizeof(id));
    }
    if (find_snapshot(s, id, NULL) >= 0) {
        error_setg(errp, "qcow2: '%s': a snapshot with id '%s' already exists", bs->filename,
                   id);
        return -EEXIST;
    }
    sn.id_str = strdup(id);
    sn.name = strdup(info->name);
    sn.date_sec = info->date_sec;
    sn.date_nsec = info->date_nsec;
    sn.vm_clock_nsec = info->vm_clock_nsec;
    sn.vm_state_size = info->vm_state_size;
    sn.icount = info->icount;
    sn.disk_size = s->size;
    sn.extra_data_size = SN_EXTRA_SIZE;
    if (!sn.id_str || !sn.name) {
        free_entry(&sn);
        return -ENOMEM;
    }
    co_mutex_lock(&s->lock);
    ret = create_locked(bs, &sn);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        free_entry(&sn);
        error_setg_errno(errp, -ret, "qcow2: '%s': could not create snapshot '%s'",
                         bs->filename, info->name);
        return ret;
    }
    snprintf(info->id_str, sizeof(info->id_str), "%s", id);
    info->disk_size = (int64_t)s->size;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Goto */

/* Drops the references of the old active L1 (after the header switch). */
static int coroutine_fn drop_old_l1(BlockDriverState *bs, uint64_t *l1, uint32_t n,
                                    uint64_t off)
{
    int ret = update_l1(bs, l1, n, -1, false);

    if (ret >= 0 && n) {
        ret = qcow2_free_clusters(bs, off, (uint64_t)n * 8, QCOW2_DISCARD_SNAPSHOT);
    }
    if (ret >= 0) {
        ret = qcow2_cache_flush_all(bs);
    }
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0) {
        ret = fix_copied(bs);
    }
    if (ret >= 0) {
        ret = qcow2_cache_flush_all(bs);
    }
    return ret;
}

static int coroutine_fn goto_locked(BlockDriverState *bs, const Qcow2Snapshot *sn)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t need = qcow2_l1_entries_for(s->size, s->cluster_bits, s->l2_bits);
    uint32_t size = sn->l1_size > need ? sn->l1_size : (uint32_t)need;
    uint64_t *l1 = NULL, *old = s->l1_table, old_off = s->l1_table_offset;
    uint32_t old_size = s->l1_size;
    int64_t off;
    int ret = qcow2_cache_flush_all(bs);

    if (ret >= 0) {
        ret = qcow2_read_l1(bs, sn->l1_table_offset, sn->l1_size, &l1);
    }
    if (ret >= 0) {
        ret = update_l1(bs, l1, sn->l1_size, 1, false);
    }
    if (ret < 0) {
        free(l1);
        return ret;
    }
    off = write_l1_copy(bs, l1, sn->l1_size, size, ~QCOW_OFLAG_COPIED);
    ret = off < 0 ? (int)off : qcow2_cache_flush_all(bs);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret >= 0 && size > sn->l1_size) {
        uint64_t *p = realloc(l1, (size_t)size * 8);

        if (p) {
            l1 = p;
        } else {
            ret = -ENOMEM; /* l1 keeps the old block, freed below */
        }
    }
    if (ret < 0) {
        free(l1);
        return ret;
    }
    for (uint32_t i = 0; i < size; i++) {
        l1[i] = i < sn->l1_size ? l1[i] & ~QCOW_OFLAG_COPIED : 0;
    }
    s->l1_table = l1;
    s->l1_table_offset = (uint64_t)off;
    s->l1_size = size;
    s->l1_dirty_lo = size;
    s->l1_dirty_hi = 0;
    ret = qcow2_update_header(bs);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        s->l1_table = old;
        s->l1_table_offset = old_off;
        s->l1_size = old_size;
        free(l1);
        return ret;
    }
    qcow2_dcache_clear(s);
    ret = drop_old_l1(bs, old, old_size, old_off);
    free(old);
    return ret;
}

int coroutine_fn qcow2_co_snapshot_goto(BlockDriverState *bs, const char *name_or_id,
                                        Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int i = find_snapshot(s, name_or_id, NULL), ret;

    if (i < 0) {
        i = find_snapshot(s, NULL, name_or_id);
    }
    if (i < 0) {
        error_setg(errp, "qcow2: '%s': no snapshot '%s'", bs->filename, name_or_id);
        return -ENOENT;
    }
    if (bdrv_is_read_only(bs)) {
        error_setg(errp, "qcow2: '%s' is read-only", bs->filename);
        return -EACCES;
    }
    if (s->snapshots[i].disk_size && s->snapshots[i].disk_size != s->size) {
        error_setg(errp, "qcow2: '%s': snapshot '%s' has a disk size of %llu bytes, the image "
                   "%llu: applying a snapshot of another size is not supported", bs->filename,
                   name_or_id, (unsigned long long)s->snapshots[i].disk_size,
                   (unsigned long long)s->size);
        return -ENOTSUP;
    }
    /* Switching snapshots changes the whole disk: enabled bitmaps see it all. */
    ret = qcow2_bitmaps_note_write(bs, 0, s->size);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not load the bitmaps", bs->filename);
        return ret;
    }
    co_mutex_lock(&s->lock);
    ret = goto_locked(bs, &s->snapshots[i]);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not apply snapshot '%s'",
                         bs->filename, name_or_id);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Delete */

static int coroutine_fn delete_locked(BlockDriverState *bs, int idx)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Snapshot sn = s->snapshots[idx], *t;
    uint64_t *l1 = NULL;
    int ret = qcow2_cache_flush_all(bs);

    if (ret >= 0) {
        ret = qcow2_read_l1(bs, sn.l1_table_offset, sn.l1_size, &l1);
    }
    t = calloc(s->nb_snapshots, sizeof(*t));
    if (ret < 0 || !t) {
        free(l1);
        free(t);
        return ret < 0 ? ret : -ENOMEM;
    }
    memcpy(t, s->snapshots, (size_t)idx * sizeof(*t));
    memcpy(t + idx, s->snapshots + idx + 1, (s->nb_snapshots - idx - 1) * sizeof(*t));
    ret = write_table(bs, t, s->nb_snapshots - 1);
    if (ret < 0) {
        free(t);
        free(l1);
        return ret;
    }
    free(s->snapshots);
    s->snapshots = t;
    free_entry(&sn);
    ret = drop_old_l1(bs, l1, sn.l1_size, sn.l1_table_offset);
    free(l1);
    return ret;
}

int coroutine_fn qcow2_co_snapshot_delete(BlockDriverState *bs, const char *id,
                                          const char *name, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int i = find_snapshot(s, id, name), ret;

    if (i < 0) {
        error_setg(errp, "qcow2: '%s': no snapshot with%s%s%s%s", bs->filename,
                   id ? " id " : "", id ? id : "", name ? " name " : "", name ? name : "");
        return -ENOENT;
    }
    if (bdrv_is_read_only(bs)) {
        error_setg(errp, "qcow2: '%s' is read-only", bs->filename);
        return -EACCES;
    }
    co_mutex_lock(&s->lock);
    ret = delete_locked(bs, i);
    co_mutex_unlock(&s->lock);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "qcow2: '%s': could not delete the snapshot",
                         bs->filename);
    }
    return ret;
}

/* ---------------------------------------------------------------------- */
/* List and vmstate */

int coroutine_fn qcow2_co_snapshot_list(BlockDriverState *bs, BlockSnapshotInfo **psn)
{
    BDRVQcow2State *s = bs->opaque;
    BlockSnapshotInfo *out = calloc(s->nb_snapshots + 1, sizeof(*out));

    if (!out) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];

        snprintf(out[i].id_str, sizeof(out[i].id_str), "%s", sn->id_str);
        snprintf(out[i].name, sizeof(out[i].name), "%s", sn->name);
        out[i].vm_state_size = sn->vm_state_size;
        out[i].date_sec = sn->date_sec;
        out[i].date_nsec = sn->date_nsec;
        out[i].vm_clock_nsec = sn->vm_clock_nsec;
        out[i].icount = sn->icount;
        out[i].disk_size = sn->extra_data_size >= 16 ? (int64_t)sn->disk_size
                                                      : (int64_t)s->size;
    }
    *psn = out;
    return (int)s->nb_snapshots;
}

static uint64_t vm_state_offset(const BDRVQcow2State *s)
{
    return qcow2_l1_entries_for(s->size, s->cluster_bits, s->l2_bits)
           << (s->cluster_bits + s->l2_bits);
}

int coroutine_fn qcow2_co_save_vmstate(BlockDriverState *bs, IOVector *qiov, int64_t pos)
{
    BDRVQcow2State *s = bs->opaque;

    if (pos < 0 || vm_state_offset(s) + (uint64_t)pos + qiov->size >= QCOW2_MAX_OFFSET) {
        return -EINVAL;
    }
    return qcow2_co_pwritev(bs, (int64_t)(vm_state_offset(s) + (uint64_t)pos),
                            (int64_t)qiov->size, qiov, 0, 0);
}

int coroutine_fn qcow2_co_load_vmstate(BlockDriverState *bs, IOVector *qiov, int64_t pos)
{
    BDRVQcow2State *s = bs->opaque;

    if (pos < 0 || vm_state_offset(s) + (uint64_t)pos + qiov->size >= QCOW2_MAX_OFFSET) {
        return -EINVAL;
    }
    return qcow2_co_preadv(bs, (int64_t)(vm_state_offset(s) + (uint64_t)pos),
                           (int64_t)qiov->size, qiov, 0, 0);
}

/* ---------------------------------------------------------------------- */
/* Temporary load (read-only: convert -l, measure -l) */

int coroutine_fn qcow2_co_snapshot_load_tmp(BlockDriverState *bs, const char *id,
                                            const char *name, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int i = find_snapshot(s, id, name);
    const Qcow2Snapshot *sn;
    uint64_t need, *l1 = NULL, *p;
    int ret;

    if (i < 0) {
        error_setg(errp, "qcow2: '%s': no snapshot with id '%s' and name '%s'", bs->filename,
                   id ? id : "(any)", name ? name : "(any)");
        return -ENOENT;
    }
    if (!bdrv_is_read_only(bs)) {
        error_setg(errp, "qcow2: '%s': a snapshot can only be loaded into a read-only image",
                   bs->filename);
        return -EACCES;
    }
    /* The disk keeps its current size (as qemu-img): past the snapshot's end reads zero. */
    sn = &s->snapshots[i];
    need = qcow2_l1_entries_for(s->size, s->cluster_bits, s->l2_bits);
    co_mutex_lock(&s->lock);
    ret = qcow2_read_l1(bs, sn->l1_table_offset, sn->l1_size, &l1);
    if (ret == 0 && need > sn->l1_size) {
        p = realloc(l1, (size_t)need * 8);
        ret = p ? 0 : -ENOMEM;
        l1 = p ? p : l1;
    }
    if (ret < 0) {
        co_mutex_unlock(&s->lock);
        free(l1);
        error_setg_errno(errp, -ret, "qcow2: '%s': could not read the L1 table of snapshot "
                         "'%s'", bs->filename, sn->name);
        return ret;
    }
    for (uint64_t j = sn->l1_size; j < need; j++) {
        l1[j] = 0;
    }
    free(s->l1_table);
    s->l1_table = l1;
    s->l1_table_offset = sn->l1_table_offset;
    s->l1_size = need > sn->l1_size ? (uint32_t)need : sn->l1_size;
    s->l1_dirty_lo = s->l1_size;
    s->l1_dirty_hi = 0;
    qcow2_dcache_clear(s);
    co_mutex_unlock(&s->lock);
    return 0;
}
