/*
 * qcow2: the header, its extensions and feature bits; reading the L1,
 * refcount and snapshot tables it names.
 *
 * Limits enforced on untrusted images (every one has an error naming the
 * file, the field and its value):
 *   version 2 or 3; cluster_bits 9..21; v3 header_length 104..cluster_size,
 *   a multiple of 8; refcount_order 0..6 (v2: 4); crypt_method 0 (legacy AES
 *   refused, LUKS not supported); unknown incompatible feature bits refused
 *   by name; guest size <= BDRV_MAX_LENGTH; l1_size covers the guest size and
 *   l1_size * 8 <= 32 MiB; refcount table 1 .. 8 MiB; every table offset
 *   cluster-aligned, < 2^56 and inside the file; nb_snapshots <= 65536 and
 *   the snapshot table <= 64 MiB with extra data <= 1 KiB per entry;
 *   backing file name <= 1023 bytes and inside the file; header extensions
 *   inside the first cluster, each padded to 8 bytes; backing format name
 *   < 32 bytes; data file name <= 4095 bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow2.h"

static const struct {
    int type;
    int bit;
    const char *name;
} builtin_features[] = {
    { 0, 0, "dirty bit" },
    { 0, 1, "corrupt bit" },
    { 0, 2, "external data file" },
    { 0, 3, "compression type" },
    { 0, 4, "extended L2 entries" },
    { 1, 0, "lazy refcounts" },
    { 2, 0, "bitmaps" },
    { 2, 1, "raw external data" },
};

#define N_BUILTIN_FEATURES (sizeof(builtin_features) / sizeof(builtin_features[0]))

const char *qcow2_feature_name(const BDRVQcow2State *s, int type, int bit)
{
    for (int i = 0; i < s->nb_feature_names; i++) {
        if (s->feature_names[i].type == type && s->feature_names[i].bit == bit) {
            return s->feature_names[i].name;
        }
    }
    for (size_t i = 0; i < N_BUILTIN_FEATURES; i++) {
        if (builtin_features[i].type == type && builtin_features[i].bit == bit) {
            return builtin_features[i].name;
        }
    }
    return NULL;
}

/* Refuses unknown incompatible bits, naming each one. */
static int check_incompat(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    uint64_t unknown = s->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
    char list[512] = "";
    size_t n = 0;

    if (!unknown) {
        return 0;
    }
    for (int bit = 0; bit < 64; bit++) {
        const char *name;

        if (!(unknown & (1ULL << bit))) {
            continue;
        }
        name = qcow2_feature_name(s, 0, bit);
        if (name) {
            n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s (bit %d)", n ? ", " : "",
                                  name, bit);
        } else {
            n += (size_t)snprintf(list + n, sizeof(list) - n,
                                  "%sUnknown incompatible feature: bit %d", n ? ", " : "", bit);
        }
        if (n >= sizeof(list) - 1) {
            break; /* full (the names come from the image): the message ends here */
        }
    }
    error_setg(errp, "qcow2: '%s' uses unsupported incompatible features: %s", bs->filename,
               list);
    return -ENOTSUP;
}

int qcow2_validate_table(BlockDriverState *bs, uint64_t off, uint64_t entries,
                         uint64_t entry_len, uint64_t max_bytes, const char *what, Error **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t bytes;
    int64_t flen;

    if (check_mul_overflow(entries, entry_len, &bytes) || bytes > max_bytes) {
        error_setg(errp, "qcow2: '%s': %s of %llu entries exceeds the limit of %llu bytes",
                   bs->filename, what, (unsigned long long)entries,
                   (unsigned long long)max_bytes);
        return -EFBIG;
    }
    if (off & (s->cluster_size - 1)) {
        error_setg(errp, "qcow2: '%s': %s offset 0x%llx is not cluster-aligned", bs->filename,
                   what, (unsigned long long)off);
        return -EINVAL;
    }
    if (bytes == 0) {
        return 0;
    }
    flen = bdrv_co_getlength(bs->file->bs);
    if (flen < 0) {
        error_setg_errno(errp, (int)flen, "qcow2: could not get the size of '%s'", bs->filename);
        return (int)flen;
    }
    if (off == 0 || off >= QCOW2_MAX_OFFSET || !range_within(off, bytes, (uint64_t)flen)) {
        error_setg(errp, "qcow2: '%s': %s at offset 0x%llx (%llu bytes) lies outside the file "
                   "(%lld bytes)", bs->filename, what, (unsigned long long)off,
                   (unsigned long long)bytes, (long long)flen);
        return -EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Extensions */

static int add_unknown_ext(BDRVQcow2State *s, uint32_t type, const uint8_t *data, uint32_t len)
{
    Qcow2UnknownExt *e = calloc(1, sizeof(*e)), **pp;

    if (!e || !(e->data = malloc(len ? len : 1))) {
        free(e);
        return -ENOMEM;
    }
    e->type = type;
    e->len = len;
    memcpy(e->data, data, len);
    for (pp = &s->unknown_exts; *pp; pp = &(*pp)->next) {
    }
    *pp = e;
    return 0;
}

static int parse_feature_table(BDRVQcow2State *s, const uint8_t *d, uint32_t len)
{
    int n = (int)(len / 48);

    free(s->feature_names);
    s->feature_names = calloc((size_t)(n ? n : 1), sizeof(*s->feature_names));
    if (!s->feature_names) {
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        Qcow2FeatureName *f = &s->feature_names[i];

        f->type = d[i * 48];
        f->bit = d[i * 48 + 1];
        memcpy(f->name, d + i * 48 + 2, 46);
        f->name[46] = '\0';
    }
    s->nb_feature_names = n;
    return 0;
}

static int parse_one_ext(BlockDriverState *bs, BDRVQcow2State *s, uint32_t type,
                         const uint8_t *d, uint32_t len, Error **errp)
{
    switch (type) {
    case QCOW2_EXT_BACKING_FORMAT:
        if (len >= sizeof(bs->backing_format)) {
            error_setg(errp, "qcow2: '%s': backing format extension of %u bytes is too long "
                       "(limit %zu)", bs->filename, len, sizeof(bs->backing_format) - 1);
            return -EINVAL;
        }
        memcpy(bs->backing_format, d, len);
        bs->backing_format[len] = '\0';
        return 0;
    case QCOW2_EXT_FEATURE_TABLE:
        return parse_feature_table(s, d, len);
    case QCOW2_EXT_DATA_FILE:
        if (len > QCOW2_MAX_DATA_FILE_NAME) {
            error_setg(errp, "qcow2: '%s': data file name of %u bytes exceeds %d", bs->filename,
                       len, QCOW2_MAX_DATA_FILE_NAME);
            return -EINVAL;
        }
        free(s->image_data_file);
        s->image_data_file = strndup((const char *)d, len);
        return s->image_data_file ? 0 : -ENOMEM;
    case QCOW2_EXT_BITMAPS:
        if (len >= 24) {
            s->bitmap_ext_size = ld_be64(d + 8);
            s->bitmap_ext_offset = ld_be64(d + 16);
        }
        return add_unknown_ext(s, type, d, len); /* kept verbatim */
    case QCOW2_EXT_CRYPTO:
        error_setg(errp, "qcow2: '%s': encrypted images are not supported", bs->filename);
        return -ENOTSUP;
    default:
        return add_unknown_ext(s, type, d, len);
    }
}

/* Walks the extensions in buf[start, end). */
static int parse_extensions(BlockDriverState *bs, BDRVQcow2State *s, const uint8_t *buf,
                            size_t start, size_t end, Error **errp)
{
    ByteCursor c = bcur_init(buf, end);

    bcur_seek(&c, start);
    while (c.pos + 8 <= end) {
        uint32_t type, len;
        const uint8_t *d;
        int ret;

        rd_be32(&c, &type);
        rd_be32(&c, &len);
        if (type == QCOW2_EXT_END) {
            return 0;
        }
        d = bcur_take(&c, len);
        if (!d || !bcur_skip(&c, (8 - (len & 7)) & 7)) {
            if (d) {
                return 0; /* last extension without padding room: accept */
            }
            error_setg(errp, "qcow2: '%s': header extension 0x%08x of %u bytes at offset %zu "
                       "runs past the header cluster", bs->filename, type, len, c.pos);
            return -EINVAL;
        }
        ret = parse_one_ext(bs, s, type, d, len, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Header */

static int read_backing_name(BlockDriverState *bs, BDRVQcow2State *s, int64_t flen,
                             Error **errp)
{
    int ret;

    bs->backing_file[0] = '\0';
    if (!s->backing_file_offset) {
        return 0;
    }
    if (s->backing_file_size > QCOW2_MAX_BACKING_NAME) {
        error_setg(errp, "qcow2: '%s': backing file name length %u exceeds %d", bs->filename,
                   s->backing_file_size, QCOW2_MAX_BACKING_NAME);
        return -EINVAL;
    }
    if (!range_within(s->backing_file_offset, s->backing_file_size, (uint64_t)flen)) {
        error_setg(errp, "qcow2: '%s': backing file name at offset 0x%llx lies outside the file",
                   bs->filename, (unsigned long long)s->backing_file_offset);
        return -EINVAL;
    }
    ret = qcow2_pread(bs->file, (int64_t)s->backing_file_offset, s->backing_file_size,
                           bs->backing_file);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not read the backing file name of '%s'",
                         bs->filename);
        return ret;
    }
    bs->backing_file[s->backing_file_size] = '\0';
    if (strlen(bs->backing_file) != s->backing_file_size) {
        error_setg(errp, "qcow2: '%s': backing file name contains a NUL byte", bs->filename);
        return -EINVAL;
    }
    return 0;
}

/* Fields of the first 104 bytes (v2: 72). */
static int parse_fixed(BlockDriverState *bs, BDRVQcow2State *s, const uint8_t *buf, size_t len,
                       Error **errp)
{
    ByteCursor c = bcur_init(buf, len);
    uint32_t magic, cluster_bits, refcount_table_clusters, l1_size, nb_snapshots;
    uint32_t refcount_order = 4, header_length = QCOW2_V2_HEADER_LEN;

    rd_be32(&c, &magic);
    rd_be32(&c, &s->version);
    rd_be64(&c, &s->backing_file_offset);
    rd_be32(&c, &s->backing_file_size);
    rd_be32(&c, &cluster_bits);
    rd_be64(&c, &s->size);
    rd_be32(&c, &s->crypt_method);
    rd_be32(&c, &l1_size);
    rd_be64(&c, &s->l1_table_offset);
    rd_be64(&c, &s->refcount_table_offset);
    rd_be32(&c, &refcount_table_clusters);
    rd_be32(&c, &nb_snapshots);
    rd_be64(&c, &s->snapshots_offset);
    if (!bcur_ok(&c) || magic != QCOW2_MAGIC) {
        error_setg(errp, "qcow2: '%s' is not a qcow2 image (bad magic or short header)",
                   bs->filename);
        return -EINVAL;
    }
    if (s->version != 2 && s->version != 3) {
        error_setg(errp, "qcow2: '%s': unsupported qcow2 version %u", bs->filename, s->version);
        return -ENOTSUP;
    }
    if (cluster_bits < QCOW2_MIN_CLUSTER_BITS || cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        error_setg(errp, "qcow2: '%s': cluster_bits %u is out of range (%d..%d)", bs->filename,
                   cluster_bits, QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
        return -EINVAL;
    }
    if (s->version == 3) {
        rd_be64(&c, &s->incompatible_features);
        rd_be64(&c, &s->compatible_features);
        rd_be64(&c, &s->autoclear_features);
        rd_be32(&c, &refcount_order);
        rd_be32(&c, &header_length);
        if (!bcur_ok(&c)) {
            error_setg(errp, "qcow2: '%s': truncated version 3 header", bs->filename);
            return -EINVAL;
        }
        if (header_length < QCOW2_V3_HEADER_LEN || header_length > (1U << cluster_bits) ||
            (header_length & 7)) {
            error_setg(errp, "qcow2: '%s': header_length %u is invalid (%d..%u, multiple of 8)",
                       bs->filename, header_length, QCOW2_V3_HEADER_LEN, 1U << cluster_bits);
            return -EINVAL;
        }
    }
    if (refcount_order > 6) {
        error_setg(errp, "qcow2: '%s': refcount_order %u exceeds 6", bs->filename,
                   refcount_order);
        return -EINVAL;
    }
    s->cluster_bits = (int)cluster_bits;
    s->cluster_size = 1ULL << cluster_bits;
    s->l1_size = l1_size;
    s->refcount_table_clusters = refcount_table_clusters;
    s->nb_snapshots = nb_snapshots;
    s->refcount_order = (int)refcount_order;
    s->header_length = header_length;
    return 0;
}

/* Geometry that follows from the fixed fields. */
static void derive_geometry(BDRVQcow2State *s)
{
    s->l2_entry_size = qcow2_extl2(s) ? 16 : 8;
    s->l2_bits = s->cluster_bits - (qcow2_extl2(s) ? 4 : 3);
    s->l2_size = 1 << s->l2_bits;
    s->subcluster_size = qcow2_extl2(s) ? s->cluster_size / QCOW2_SUBCLUSTERS : s->cluster_size;
    s->subcluster_bits = qcow2_extl2(s) ? s->cluster_bits - 5 : s->cluster_bits;
    s->refcount_bits = 1 << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ULL << s->refcount_bits) - 1;
    s->refcount_block_bits = s->cluster_bits + 3 - s->refcount_order;
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ULL << (s->cluster_bits - 8)) - 1;
    s->cluster_offset_mask = (1ULL << s->csize_shift) - 1;
    s->refcount_table_size = (s->refcount_table_clusters * s->cluster_size) / 8;
}

static int check_features(BlockDriverState *bs, BDRVQcow2State *s, int flags, Error **errp)
{
    int ret = check_incompat(bs, s, errp);

    if (ret < 0) {
        return ret;
    }
    if (s->crypt_method) {
        error_setg(errp, "qcow2: '%s' is encrypted (crypt_method %u); %s", bs->filename,
                   s->crypt_method, s->crypt_method == 1 ?
                   "legacy AES encryption is not supported" : "LUKS encryption is not supported");
        return -ENOTSUP;
    }
    if ((s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) && (flags & BDRV_O_RDWR)) {
        error_setg(errp, "qcow2: '%s' is marked corrupt and can only be opened read-only "
                   "(repair it with 'qemu-img check -r all')", bs->filename);
        return -EACCES;
    }
    return 0;
}

/* Validates the tables the header names (offsets, sizes, caps). */
static int check_tables(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    uint64_t need;
    int ret;

    if (s->size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "qcow2: '%s': image size %llu is too large", bs->filename,
                   (unsigned long long)s->size);
        return -EFBIG;
    }
    need = qcow2_l1_entries_for(s->size, s->cluster_bits, s->l2_bits);
    if (s->l1_size < need) {
        error_setg(errp, "qcow2: '%s': l1_size %u is too small for the image size %llu "
                   "(needs %llu)", bs->filename, s->l1_size, (unsigned long long)s->size,
                   (unsigned long long)need);
        return -EINVAL;
    }
    ret = qcow2_validate_table(bs, s->l1_table_offset, s->l1_size, 8, QCOW2_MAX_L1_BYTES,
                               "L1 table", errp);
    if (ret < 0) {
        return ret;
    }
    if (s->refcount_table_clusters == 0) {
        error_setg(errp, "qcow2: '%s': refcount_table_clusters is 0", bs->filename);
        return -EINVAL;
    }
    ret = qcow2_validate_table(bs, s->refcount_table_offset, s->refcount_table_clusters,
                               s->cluster_size, QCOW2_MAX_REFTABLE_BYTES, "refcount table", errp);
    if (ret < 0) {
        return ret;
    }
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        error_setg(errp, "qcow2: '%s': nb_snapshots %u exceeds %d", bs->filename,
                   s->nb_snapshots, QCOW2_MAX_SNAPSHOTS);
        return -EFBIG;
    }
    if (s->nb_snapshots) {
        return qcow2_validate_table(bs, s->snapshots_offset, s->nb_snapshots, 40,
                                    QCOW2_MAX_SNAPSHOT_TABLE, "snapshot table", errp);
    }
    return 0;
}

int qcow2_read_header(BlockDriverState *bs, BDRVQcow2State *s, int flags, Error **errp)
{
    uint8_t fixed[QCOW2_V3_HEADER_LEN];
    uint8_t *buf;
    int64_t flen = bdrv_co_getlength(bs->file->bs);
    size_t len;
    int ret;

    if (flen < 0) {
        error_setg_errno(errp, (int)flen, "qcow2: could not get the size of '%s'", bs->filename);
        return (int)flen;
    }
    memset(fixed, 0, sizeof(fixed));
    len = flen < (int64_t)sizeof(fixed) ? (size_t)flen : sizeof(fixed);
    ret = qcow2_pread(bs->file, 0, (int64_t)len, fixed);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not read the header of '%s'", bs->filename);
        return ret;
    }
    ret = parse_fixed(bs, s, fixed, len, errp);
    if (ret < 0) {
        return ret;
    }
    derive_geometry(s);
    /* The whole header cluster (extensions live there), as far as the file goes. */
    len = flen < (int64_t)s->cluster_size ? (size_t)flen : s->cluster_size;
    buf = calloc(1, s->cluster_size);
    if (!buf) {
        return -ENOMEM;
    }
    ret = qcow2_pread(bs->file, 0, (int64_t)len, buf);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not read the header of '%s'", bs->filename);
        goto out;
    }
    if (s->header_length > QCOW2_V3_HEADER_LEN) {
        s->compression_type = buf[QCOW2_V3_HEADER_LEN];
    }
    ret = parse_extensions(bs, s, buf, s->header_length, len, errp);
    if (ret < 0) {
        goto out;
    }
    ret = check_features(bs, s, flags, errp);
    if (ret < 0) {
        goto out;
    }
    if (s->header_length > QCOW2_V3_HEADER_LEN) {
        s->compression_type = buf[QCOW2_V3_HEADER_LEN];
    }
    ret = -EINVAL;
    if (!(s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) && s->compression_type != 0) {
        error_setg(errp, "qcow2: '%s': compression_type %u without the compression type "
                   "feature bit", bs->filename, s->compression_type);
        goto out;
    }
    if (s->compression_type > QCOW2_COMPRESSION_ZSTD) {
        error_setg(errp, "qcow2: '%s': unknown compression_type %u", bs->filename,
                   s->compression_type);
        goto out;
    }
    ret = check_tables(bs, s, errp);
    if (ret < 0) {
        goto out;
    }
    ret = read_backing_name(bs, s, flen, errp);
out:
    free(buf);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Tables */

int qcow2_read_tables(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    size_t l1_bytes = (size_t)s->l1_size * 8;
    size_t rt_bytes = (size_t)(s->refcount_table_clusters * s->cluster_size);
    int ret;

    s->l1_table = calloc(1, l1_bytes ? l1_bytes : 8);
    s->refcount_table = calloc(1, rt_bytes);
    if (!s->l1_table || !s->refcount_table) {
        error_setg(errp, "qcow2: out of memory for the tables of '%s'", bs->filename);
        return -ENOMEM;
    }
    if (l1_bytes) {
        ret = qcow2_pread(bs->file, (int64_t)s->l1_table_offset, (int64_t)l1_bytes,
                               s->l1_table);
        if (ret < 0) {
            error_setg_errno(errp, ret, "qcow2: could not read the L1 table of '%s'",
                             bs->filename);
            return ret;
        }
        for (uint32_t i = 0; i < s->l1_size; i++) {
            s->l1_table[i] = ld_be64(&s->l1_table[i]);
        }
    }
    ret = qcow2_pread(bs->file, (int64_t)s->refcount_table_offset, (int64_t)rt_bytes,
                           s->refcount_table);
    if (ret < 0) {
        error_setg_errno(errp, ret, "qcow2: could not read the refcount table of '%s'",
                         bs->filename);
        return ret;
    }
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        s->refcount_table[i] = ld_be64(&s->refcount_table[i]);
        if (s->refcount_table[i] & ~REFT_OFFSET_MASK & (s->cluster_size - 1)) {
            error_setg(errp, "qcow2: '%s': refcount table entry %llu (0x%llx) is not "
                       "cluster-aligned", bs->filename, (unsigned long long)i,
                       (unsigned long long)s->refcount_table[i]);
            return -EINVAL;
        }
    }
    qcow2_reftable_count_used(s);
    s->l1_dirty_lo = s->l1_size;
    s->l1_dirty_hi = 0;
    return 0;
}

/* Parses one snapshot entry at cursor c. */
static int parse_snapshot(BlockDriverState *bs, ByteCursor *c, Qcow2Snapshot *sn, Error **errp)
{
    uint16_t id_len, name_len;
    uint32_t vmss32;
    const uint8_t *p;
    size_t start = c->pos;

    rd_be64(c, &sn->l1_table_offset);
    rd_be32(c, &sn->l1_size);
    rd_be16(c, &id_len);
    rd_be16(c, &name_len);
    rd_be32(c, &sn->date_sec);
    rd_be32(c, &sn->date_nsec);
    rd_be64(c, &sn->vm_clock_nsec);
    rd_be32(c, &vmss32);
    rd_be32(c, &sn->extra_data_size);
    sn->vm_state_size = vmss32;
    sn->icount = UINT64_MAX;
    if (!bcur_ok(c) || sn->extra_data_size > QCOW2_MAX_SNAPSHOT_EXTRA) {
        error_setg(errp, "qcow2: '%s': bad snapshot table entry (extra data %u bytes, "
                   "limit %d)", bs->filename, sn->extra_data_size, QCOW2_MAX_SNAPSHOT_EXTRA);
        return -EINVAL;
    }
    p = bcur_take(c, sn->extra_data_size);
    if (p && sn->extra_data_size >= 8) {
        sn->vm_state_size = ld_be64(p);
    }
    if (p && sn->extra_data_size >= 16) {
        sn->disk_size = ld_be64(p + 8);
    }
    if (p && sn->extra_data_size >= 24) {
        sn->icount = ld_be64(p + 16);
    }
    if (p && sn->extra_data_size > 24) {
        sn->unknown_extra_size = sn->extra_data_size - 24;
        sn->unknown_extra = malloc(sn->unknown_extra_size);
        if (sn->unknown_extra) {
            memcpy(sn->unknown_extra, p + 24, sn->unknown_extra_size);
        }
    }
    p = bcur_take(c, id_len);
    sn->id_str = p ? strndup((const char *)p, id_len) : NULL;
    p = bcur_take(c, name_len);
    sn->name = p ? strndup((const char *)p, name_len) : NULL;
    /* The last entry's padding may lie past the end of the file (qemu-img). */
    if (bcur_ok(c)) {
        size_t pad = (8 - ((c->pos - start) & 7)) & 7;

        bcur_skip(c, pad < c->len - c->pos ? pad : c->len - c->pos);
    }
    if (!bcur_ok(c) || !sn->id_str || !sn->name) {
        error_setg(errp, "qcow2: '%s': snapshot table entry runs past the table", bs->filename);
        return -EINVAL;
    }
    return 0;
}

int qcow2_read_snapshot_table(BlockDriverState *bs, BDRVQcow2State *s, Error **errp)
{
    int64_t flen = bdrv_co_getlength(bs->file->bs);
    uint64_t avail;
    uint8_t *buf;
    ByteCursor c;
    int ret = 0;

    if (!s->nb_snapshots) {
        return 0;
    }
    /* The table's byte size is not stored: read what the file and the cap allow. */
    avail = (uint64_t)flen - s->snapshots_offset;
    if (avail > QCOW2_MAX_SNAPSHOT_TABLE) {
        avail = QCOW2_MAX_SNAPSHOT_TABLE;
    }
    buf = malloc(avail);
    s->snapshots = calloc(s->nb_snapshots, sizeof(*s->snapshots));
    if (!buf || !s->snapshots) {
        free(buf);
        return -ENOMEM;
    }
    ret = qcow2_pread(bs->file, (int64_t)s->snapshots_offset, (int64_t)avail, buf);
    c = bcur_init(buf, avail);
    for (uint32_t i = 0; ret >= 0 && i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];

        ret = parse_snapshot(bs, &c, sn, errp);
        if (ret == 0) {
            ret = qcow2_validate_table(bs, sn->l1_table_offset, sn->l1_size, 8,
                                       QCOW2_MAX_L1_BYTES, "snapshot L1 table", errp);
        }
    }
    s->snapshots_size = c.pos;
    free(buf);
    return ret < 0 ? ret : 0;
}

void qcow2_free_header_state(BDRVQcow2State *s)
{
    while (s->unknown_exts) {
        Qcow2UnknownExt *e = s->unknown_exts;

        s->unknown_exts = e->next;
        free(e->data);
        free(e);
    }
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        free(s->snapshots[i].id_str);
        free(s->snapshots[i].name);
        free(s->snapshots[i].unknown_extra);
    }
    free(s->snapshots);
    s->snapshots = NULL;
    free(s->feature_names);
    s->feature_names = NULL;
    free(s->image_data_file);
    s->image_data_file = NULL;
    free(s->l1_table);
    s->l1_table = NULL;
    free(s->refcount_table);
    s->refcount_table = NULL;
}

/* ---------------------------------------------------------------------- */
/* Writing */

/* Appends one extension to buf at *pos (padded); false if it does not fit. */
static bool put_ext(uint8_t *buf, size_t size, size_t *pos, uint32_t type, const void *data,
                    uint32_t len)
{
    size_t padded = round_up_u64(len, 8);

    if (*pos + 8 + padded > size) {
        return false;
    }
    st_be32(buf + *pos, type);
    st_be32(buf + *pos + 4, len);
    memset(buf + *pos + 8, 0, padded);
    if (len) {
        memcpy(buf + *pos + 8, data, len);
    }
    *pos += 8 + padded;
    return true;
}

static bool put_feature_table(uint8_t *buf, size_t size, size_t *pos)
{
    uint8_t t[N_BUILTIN_FEATURES * 48];

    memset(t, 0, sizeof(t));
    for (size_t i = 0; i < N_BUILTIN_FEATURES; i++) {
        t[i * 48] = (uint8_t)builtin_features[i].type;
        t[i * 48 + 1] = (uint8_t)builtin_features[i].bit;
        memcpy(t + i * 48 + 2, builtin_features[i].name, strlen(builtin_features[i].name));
    }
    return put_ext(buf, size, pos, QCOW2_EXT_FEATURE_TABLE, t, sizeof(t));
}

/* Builds the header cluster into buf (cluster_size bytes); returns bytes used or -errno. */
static int build_header(BlockDriverState *bs, BDRVQcow2State *s, uint8_t *buf)
{
    size_t size = s->cluster_size, pos;
    size_t blen = strlen(bs->backing_file);
    bool ok = true;

    memset(buf, 0, size);
    st_be32(buf, QCOW2_MAGIC);
    st_be32(buf + 4, s->version);
    st_be32(buf + 20, (uint32_t)s->cluster_bits);
    st_be64(buf + 24, s->size);
    st_be32(buf + 32, s->crypt_method);
    st_be32(buf + 36, s->l1_size);
    st_be64(buf + 40, s->l1_table_offset);
    st_be64(buf + 48, s->refcount_table_offset);
    st_be32(buf + 56, s->refcount_table_clusters);
    st_be32(buf + 60, s->nb_snapshots);
    st_be64(buf + 64, s->snapshots_offset);
    if (s->version >= 3) {
        s->header_length = 112;
        st_be64(buf + 72, s->incompatible_features);
        st_be64(buf + 80, s->compatible_features);
        st_be64(buf + 88, s->autoclear_features);
        st_be32(buf + 96, (uint32_t)s->refcount_order);
        st_be32(buf + 100, s->header_length);
        buf[104] = s->compression_type;
    } else {
        s->header_length = QCOW2_V2_HEADER_LEN;
    }
    pos = s->header_length;
    if (blen && bs->backing_format[0]) {
        ok &= put_ext(buf, size, &pos, QCOW2_EXT_BACKING_FORMAT, bs->backing_format,
                      (uint32_t)strlen(bs->backing_format));
    }
    if (s->image_data_file) {
        ok &= put_ext(buf, size, &pos, QCOW2_EXT_DATA_FILE, s->image_data_file,
                      (uint32_t)strlen(s->image_data_file));
    }
    if (s->version >= 3) {
        ok &= put_feature_table(buf, size, &pos);
    }
    for (Qcow2UnknownExt *e = s->unknown_exts; e; e = e->next) {
        ok &= put_ext(buf, size, &pos, e->type, e->data, e->len);
    }
    ok &= put_ext(buf, size, &pos, QCOW2_EXT_END, NULL, 0);
    if (!ok || pos + blen > size) {
        return -ENOSPC;
    }
    if (blen) {
        memcpy(buf + pos, bs->backing_file, blen);
        st_be64(buf + 8, pos);
        st_be32(buf + 16, (uint32_t)blen);
        pos += blen;
    }
    s->backing_file_offset = blen ? pos - blen : 0;
    s->backing_file_size = (uint32_t)blen;
    return (int)pos;
}

int coroutine_fn qcow2_update_header(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *buf = malloc(s->cluster_size);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    ret = build_header(bs, s, buf);
    if (ret >= 0) {
        size_t len = round_up_u64((uint64_t)ret, 512);
        IOVector qiov;

        if (len > s->cluster_size) {
            len = s->cluster_size;
        }
        iovector_init_buf(&qiov, buf, len);
        BLKDBG_EVENT(bs->file, BLKDBG_HEADER_UPDATE);
        ret = bdrv_co_pwritev(bs->file, 0, (int64_t)len, &qiov, 0);
        if (ret >= 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    free(buf);
    return ret < 0 ? ret : 0;
}

int coroutine_fn qcow2_write_incompat(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t word[8];
    IOVector qiov;
    int ret;

    if (s->version < 3) {
        return 0;
    }
    st_be64(word, s->incompatible_features);
    iovector_init_buf(&qiov, word, sizeof(word));
    ret = bdrv_co_pwritev(bs->file, 72, 8, &qiov, 0);
    if (ret >= 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret < 0 ? ret : 0;
}

int coroutine_fn qcow2_mark_dirty(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->dirty_set || !s->use_lazy_refcounts) {
        return 0;
    }
    /* Data written before this point must not be judged by a dirty-free header. */
    ret = bdrv_co_flush(bs->file->bs);
    if (ret < 0) {
        return ret;
    }
    s->incompatible_features |= QCOW2_INCOMPAT_DIRTY;
    ret = qcow2_write_incompat(bs);
    if (ret < 0) {
        s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
        return ret;
    }
    s->dirty_set = true;
    return 0;
}

int coroutine_fn qcow2_mark_clean(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;

    if (!s->dirty_set) {
        return 0;
    }
    /* Refcounts are durable (the caller flushed the caches): clear the bit. */
    s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    s->dirty_set = false;
    return qcow2_write_incompat(bs);
}
