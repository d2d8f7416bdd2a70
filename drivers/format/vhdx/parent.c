/*
 * vhdx: differencing images ([MS-VHDX] "Parent Locator" and "Sector
 * Bitmap"): the parent locator metadata item, the parent as the backing
 * file, the parent_linkage check and the per-sector bitmap.
 *
 * Parent locator (the VHDX locator type): LocatorType GUID, Reserved u16,
 * KeyValueCount u16, then KeyValueCount entries of KeyOffset u32,
 * ValueOffset u32, KeyLength u16, ValueLength u16; offsets are from the
 * start of the item, keys and values are UTF-16LE without a terminator.
 * Keys used: parent_linkage (required; "{GUID}" text of the parent's
 * DataWriteGuid), parent_linkage2 (an alternative GUID the parent may
 * carry), relative_path, absolute_win32_path, volume_path.
 *
 * Limits (untrusted images): the item is 20 bytes to VHDX_MAX_LOCATOR; at
 * most VHDX_MAX_LOCATOR_KEYS entries, the table inside the item; every key
 * and value non-empty, of even length, past the entry table and inside the
 * item; UTF-16 well formed (paired surrogates, no NUL) and at most
 * VHDX_PATH_MAX bytes as UTF-8 (a key of more than LOC_MAX_KEY = 64 bytes,
 * longer than any known one, and the values of unknown keys are skipped);
 * no key twice; parent_linkage present and a "{8-4-4-4-12}" GUID. The parent path is relative_path when that file
 * exists; else absolute_win32_path when it is a host path (not a drive or
 * UNC path) that exists and the open is not untrusted=on (the caller
 * trusts the image: its opt-in to paths outside the image's folder); else
 * the file name that absolute_win32_path, volume_path (\\?\Volume{GUID}\...,
 * never followed as such) or relative_path ends with, as a sibling of the
 * image, when that exists. The path goes to the block layer as the backing
 * file name: with untrusted=on it must be a sibling of the image.
 */
#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "block/bytes.h"
#include "drivers/format/vhdx/vhdx-int.h"

#define VHDX_MAX_LOCATOR (256 * VHDX_KiB)
#define VHDX_MAX_LOCATOR_KEYS 256
#define LOC_HDR 20
#define LOC_ENTRY 12
#define LOC_MAX_KEY 64 /* bytes of UTF-16: longer keys are not known ones, skipped */

/* {B04AEFB7-D19E-4A81-B789-25B8E9445913}, on-disk (mixed-endian) layout. */
static const VhdxGuid locator_type = { { 0xB7, 0xEF, 0x4A, 0xB0, 0x9E, 0xD1, 0x81, 0x4A, 0xB7,
                                         0x89, 0x25, 0xB8, 0xE9, 0x44, 0x59, 0x13 } };

/* ---------------------------------------------------------------------- */
/* GUID text and UTF-16 */

void vhdx_guid_to_str(const VhdxGuid *g, char out[39])
{
    const uint8_t *b = g->b;

    snprintf(out, 39, "{%08" PRIX32 "-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X}",
             ld_le32(b), ld_le16(b + 4), ld_le16(b + 6), b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                          : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Parses "{xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx}" into the on-disk layout. */
bool vhdx_guid_from_str(const char *s, VhdxGuid *g)
{
    static const int dash[] = { 9, 14, 19, 24 };
    uint8_t be[16];
    int n = 0;

    if (strlen(s) != 38 || s[0] != '{' || s[37] != '}') {
        return false;
    }
    for (int i = 0; i < 4; i++) {
        if (s[dash[i]] != '-') {
            return false;
        }
    }
    for (int i = 1; i < 37; i++) {
        int hi, lo;

        if (s[i] == '-') {
            continue;
        }
        hi = hexval(s[i]);
        lo = hexval(s[i + 1]);
        if (hi < 0 || lo < 0 || s[i + 1] == '-') {
            return false;
        }
        be[n++] = (uint8_t)(hi << 4 | lo);
        i++;
    }
    if (n != 16) {
        return false;
    }
    /* Data1, Data2, Data3 little-endian on disk; Data4 as written. */
    g->b[0] = be[3], g->b[1] = be[2], g->b[2] = be[1], g->b[3] = be[0];
    g->b[4] = be[5], g->b[5] = be[4], g->b[6] = be[7], g->b[7] = be[6];
    memcpy(g->b + 8, be + 8, 8);
    return true;
}

/* UTF-16LE (len bytes) to NUL-terminated UTF-8; false if malformed or too long. */
static bool utf16le_to_utf8(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t o = 0;

    if (len % 2) {
        return false;
    }
    for (size_t i = 0; i < len; i += 2) {
        uint32_t c = ld_le16(in + i);

        if (c >= 0xD800 && c < 0xDC00) {
            uint32_t lo = i + 3 < len ? ld_le16(in + i + 2) : 0;

            if (lo < 0xDC00 || lo >= 0xE000) {
                return false;
            }
            c = 0x10000 + ((c - 0xD800) << 10) + (lo - 0xDC00);
            i += 2;
        } else if ((c >= 0xDC00 && c < 0xE000) || c == 0) {
            return false;
        }
        if (o + 5 > cap) {
            return false;
        }
        if (c < 0x80) {
            out[o++] = (char)c;
        } else if (c < 0x800) {
            out[o++] = (char)(0xC0 | c >> 6);
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else if (c < 0x10000) {
            out[o++] = (char)(0xE0 | c >> 12);
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        } else {
            out[o++] = (char)(0xF0 | c >> 18);
            out[o++] = (char)(0x80 | ((c >> 12) & 0x3F));
            out[o++] = (char)(0x80 | ((c >> 6) & 0x3F));
            out[o++] = (char)(0x80 | (c & 0x3F));
        }
    }
    out[o] = '\0';
    return true;
}

/* UTF-8 to UTF-16LE; returns the byte length or -1 (malformed, too long). */
static long utf8_to_utf16le(const char *s, uint8_t *out, size_t cap)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t o = 0;

    while (*p) {
        uint32_t c;
        int more;

        if (*p < 0x80) {
            c = *p, more = 0;
        } else if ((*p & 0xE0) == 0xC0) {
            c = *p & 0x1F, more = 1;
        } else if ((*p & 0xF0) == 0xE0) {
            c = *p & 0x0F, more = 2;
        } else if ((*p & 0xF8) == 0xF0) {
            c = *p & 0x07, more = 3;
        } else {
            return -1;
        }
        p++;
        for (int k = 0; k < more; k++, p++) {
            if ((*p & 0xC0) != 0x80) {
                return -1;
            }
            c = c << 6 | (*p & 0x3F);
        }
        if (c > 0x10FFFF || (c >= 0xD800 && c < 0xE000)) {
            return -1;
        }
        if (o + 4 > cap) {
            return -1;
        }
        if (c >= 0x10000) {
            c -= 0x10000;
            st_le16(out + o, (uint16_t)(0xD800 + (c >> 10)));
            st_le16(out + o + 2, (uint16_t)(0xDC00 + (c & 0x3FF)));
            o += 4;
        } else {
            st_le16(out + o, (uint16_t)c);
            o += 2;
        }
    }
    return (long)o;
}

/* ---------------------------------------------------------------------- */
/* Reading the locator */

enum { KEY_LINKAGE, KEY_LINKAGE2, KEY_RELATIVE, KEY_VOLUME, KEY_ABSOLUTE, N_KEYS };
static const char *const key_names[N_KEYS] = {
    "parent_linkage", "parent_linkage2", "relative_path", "volume_path", "absolute_win32_path",
};

typedef struct Locator {
    char val[N_KEYS][VHDX_PATH_MAX];
    bool found[N_KEYS];
} Locator;

static int parse_entry(BlockDriverState *bs, const uint8_t *item, uint32_t len, uint32_t i,
                       uint32_t table_end, Locator *loc, Error **errp)
{
    const uint8_t *e = item + LOC_HDR + (size_t)i * LOC_ENTRY;
    uint32_t koff = ld_le32(e), voff = ld_le32(e + 4);
    uint16_t klen = ld_le16(e + 8), vlen = ld_le16(e + 10);
    char key[3 * LOC_MAX_KEY / 2 + 1], *val; /* UTF-8 of at most LOC_MAX_KEY / 2 units */

    if (!klen || !vlen || klen % 2 || vlen % 2 || koff < table_end || voff < table_end ||
        !range_within(koff, klen, len) || !range_within(voff, vlen, len)) {
        error_setg(errp, "vhdx: %s: parent locator entry %u (key %u+%u, value %u+%u bytes) "
                   "is empty, odd-sized or outside the %u-byte locator", bs->filename, i,
                   koff, klen, voff, vlen, len);
        return -EINVAL;
    }
    if (klen > LOC_MAX_KEY) {
        return 0; /* longer than any known key: skipped */
    }
    if (!utf16le_to_utf8(item + koff, klen, key, sizeof(key))) {
        error_setg(errp, "vhdx: %s: parent locator entry %u: the key is not valid UTF-16",
                   bs->filename, i);
        return -EINVAL;
    }
    for (int k = 0; k < N_KEYS; k++) {
        if (strcmp(key, key_names[k])) {
            continue;
        }
        if (loc->found[k]) {
            error_setg(errp, "vhdx: %s: parent locator key '%s' appears twice", bs->filename,
                       key);
            return -EINVAL;
        }
        val = loc->val[k];
        if (!utf16le_to_utf8(item + voff, vlen, val, VHDX_PATH_MAX)) {
            error_setg(errp, "vhdx: %s: parent locator value of '%s' is not valid UTF-16 or "
                       "longer than %d bytes", bs->filename, key, VHDX_PATH_MAX - 1);
            return -EINVAL;
        }
        loc->found[k] = true;
    }
    return 0; /* unknown keys are skipped */
}

static int parse_locator(BlockDriverState *bs, const uint8_t *item, uint32_t len, Locator *loc,
                         Error **errp)
{
    uint16_t count;
    uint32_t table_end;

    if (len < LOC_HDR || memcmp(item, locator_type.b, 16)) {
        error_setg(errp, "vhdx: %s: the parent locator (%u bytes) is not of the VHDX locator "
                   "type", bs->filename, len);
        return -EINVAL;
    }
    count = ld_le16(item + 18);
    table_end = LOC_HDR + (uint32_t)count * LOC_ENTRY;
    if (count > VHDX_MAX_LOCATOR_KEYS || table_end > len) {
        error_setg(errp, "vhdx: %s: parent locator entry count %u exceeds %d or the %u-byte "
                   "item", bs->filename, count, VHDX_MAX_LOCATOR_KEYS, len);
        return -EINVAL;
    }
    for (uint32_t i = 0; i < count; i++) {
        int ret = parse_entry(bs, item, len, i, table_end, loc, errp);

        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Locator paths use '\': made '/', leading "./" dropped. */
static void normalize(char *p)
{
    for (char *c = p; *c; c++) {
        if (*c == '\\') {
            *c = '/';
        }
    }
    while (!strncmp(p, "./", 2)) {
        memmove(p, p + 2, strlen(p + 2) + 1);
    }
}

/* A normalized path that can be followed here: not a drive (C:/), UNC or volume path. */
static bool usable_path(const char *p)
{
    return p[0] && p[1] != ':' && strncmp(p, "//", 2) != 0;
}

/* The file name a normalized locator path ends with ("" if none): C:/vm/p.vhdx -> p.vhdx. */
static const char *file_name(const char *p)
{
    const char *s = strrchr(p, '/');

    s = s ? s + 1 : p;
    if (s[0] && s[1] == ':') {
        s += 2; /* "C:p.vhdx": drive-relative */
    }
    return strcmp(s, "..") && strcmp(s, ".") ? s : "";
}

/* Whether name (relative to the image's folder unless absolute) is an existing file. */
static bool resolves(BlockDriverState *bs, const char *name)
{
    char dir[4096], path[8200];
    struct stat st;

    snprintf(dir, sizeof(dir), "%s", bs->filename);
    if (name[0] == '/') {
        snprintf(path, sizeof(path), "%s", name);
    } else {
        snprintf(path, sizeof(path), "%s/%s", dirname(dir), name);
    }
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/*
 * The parent path (see the top of the file): relative_path if it resolves;
 * else a non-drive absolute_win32_path that resolves, unless the open is
 * untrusted=on; else the file name of absolute_win32_path, volume_path or
 * relative_path as a sibling of the image, the first that exists. If none
 * resolves, the first usable path (the open then says it cannot open it).
 */
static const char *pick_path(BlockDriverState *bs, Locator *loc)
{
    static const int names[] = { KEY_ABSOLUTE, KEY_VOLUME, KEY_RELATIVE };
    bool untrusted = (bs->open_flags & BDRV_O_UNTRUSTED) != 0;
    const char *first = NULL;

    for (int k = KEY_RELATIVE; k < N_KEYS; k++) {
        if (loc->found[k]) {
            normalize(loc->val[k]);
        }
    }
    if (loc->found[KEY_RELATIVE] && usable_path(loc->val[KEY_RELATIVE])) {
        first = loc->val[KEY_RELATIVE];
        if (resolves(bs, first)) {
            return first;
        }
    }
    if (loc->found[KEY_ABSOLUTE] && usable_path(loc->val[KEY_ABSOLUTE])) {
        first = first ? first : loc->val[KEY_ABSOLUTE];
        if (!untrusted && resolves(bs, loc->val[KEY_ABSOLUTE])) {
            return loc->val[KEY_ABSOLUTE];
        }
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *n = loc->found[names[i]] ? file_name(loc->val[names[i]]) : "";

        if (n[0] && resolves(bs, n)) {
            return n;
        }
    }
    return first;
}

static int choose_path(BlockDriverState *bs, Locator *loc, Error **errp)
{
    const char *path = pick_path(bs, loc);
    int n;

    if (path) {
        n = snprintf(bs->backing_file, sizeof(bs->backing_file), "%s", path);
        if (n >= 0 && (size_t)n < sizeof(bs->backing_file)) {
            snprintf(bs->backing_format, sizeof(bs->backing_format), "vhdx");
            return 0;
        }
    }
    error_setg(errp, "vhdx: %s: the parent locator has no usable parent path (relative_path "
               "or a non-drive absolute_win32_path; volume_path and drive paths only by "
               "their file name, as a sibling of the image)", bs->filename);
    return -ENOTSUP;
}

int vhdx_read_parent_locator(BlockDriverState *bs, uint32_t off, uint32_t len, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    Locator *loc;
    uint8_t *item;
    int ret;

    if (len > VHDX_MAX_LOCATOR) {
        error_setg(errp, "vhdx: %s: the parent locator is %u bytes, more than %" PRIu64,
                   bs->filename, len, VHDX_MAX_LOCATOR);
        return -EINVAL;
    }
    item = malloc(len ? len : 1);
    loc = calloc(1, sizeof(*loc));
    if (!item || !loc) {
        free(item);
        free(loc);
        return -ENOMEM;
    }
    ret = vhdx_pread_sync(bs->file, s->meta_offset + off, item, len);
    if (ret < 0) {
        error_setg(errp, "vhdx: %s: could not read the parent locator", bs->filename);
    } else {
        ret = parse_locator(bs, item, len, loc, errp);
    }
    if (ret == 0 && (!loc->found[KEY_LINKAGE] ||
                     !vhdx_guid_from_str(loc->val[KEY_LINKAGE], &s->parent_linkage))) {
        error_setg(errp, "vhdx: %s: the parent locator lacks a valid parent_linkage GUID",
                   bs->filename);
        ret = -EINVAL;
    }
    if (ret == 0 && loc->found[KEY_LINKAGE2]) {
        if (!vhdx_guid_from_str(loc->val[KEY_LINKAGE2], &s->parent_linkage2)) {
            error_setg(errp, "vhdx: %s: parent_linkage2 '%.40s' is not a GUID", bs->filename,
                       loc->val[KEY_LINKAGE2]);
            ret = -EINVAL;
        }
        s->has_linkage2 = true;
    }
    if (ret == 0) {
        ret = choose_path(bs, loc, errp);
    }
    free(item);
    free(loc);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* The parent */

/*
 * Opens the parent named by the locator (as the block layer will open it,
 * without its own parents) and checks that its DataWriteGuid is the
 * parent_linkage (or parent_linkage2) of this image.
 */
int vhdx_check_parent(BlockDriverState *bs, int flags, Error **errp)
{
    BDRVVhdxState *s = bs->opaque;
    char path[4096], dir[4096], want[39], have[39];
    const char *name = bs->backing_file;
    BlockOpts *o;
    BlockBackend *blk;
    uint8_t guid[16];
    int n, ret;

    if ((flags & BDRV_O_UNTRUSTED) && (strchr(name, '/') || !strcmp(name, ".."))) {
        error_setg(errp, "vhdx: %s: untrusted image: parent '%s' is not a sibling of the image",
                   bs->filename, name);
        return -EPERM;
    }
    snprintf(dir, sizeof(dir), "%s", bs->filename);
    n = name[0] == '/' ? snprintf(path, sizeof(path), "%s", name)
                       : snprintf(path, sizeof(path), "%s/%s", dirname(dir), name);
    if (n < 0 || (size_t)n >= sizeof(path)) {
        error_setg(errp, "vhdx: %s: the parent path is too long", bs->filename);
        return -ENAMETOOLONG;
    }
    o = bopts_new();
    bopts_set(o, "driver", "vhdx");
    bopts_set(o, "file.driver", "file"); /* a plain file: no protocol prefix is parsed */
    bopts_set(o, "file.filename", path);
    blk = blk_new_open(NULL, o, BDRV_O_NO_BACKING | (flags & BDRV_O_UNTRUSTED), errp);
    if (!blk) {
        error_prepend(errp, "vhdx: %s: could not open the parent '%s': ", bs->filename, path);
        return -ENOENT;
    }
    ret = bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_MODIFICATION, guid);
    blk_unref(blk);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vhdx: %s: could not read the DataWriteGuid of the parent "
                         "'%s'", bs->filename, path);
        return ret;
    }
    if (!memcmp(guid, s->parent_linkage.b, 16) ||
        (s->has_linkage2 && !memcmp(guid, s->parent_linkage2.b, 16))) {
        return 0;
    }
    vhdx_guid_to_str(&s->parent_linkage, want);
    vhdx_guid_to_str((const VhdxGuid *)guid, have);
    error_setg(errp, "vhdx: %s: the parent '%s' was modified since the differencing image was "
               "made: its DataWriteGuid %s is not the parent_linkage %s", bs->filename, path,
               have, want);
    return -EINVAL;
}

/* Builds the parent locator item for create; returns its length or -errno. */
long vhdx_build_parent_locator(uint8_t *out, size_t cap, const VhdxGuid *linkage,
                               const char *parent, Error **errp)
{
    char guid[39], path[VHDX_PATH_MAX];
    const char *keys[2], *vals[2];
    uint32_t pos = LOC_HDR + 2 * LOC_ENTRY;
    int n = snprintf(path, sizeof(path), "%s%s", parent[0] == '/' ? "" : ".\\", parent);

    if (n < 0 || (size_t)n >= sizeof(path)) {
        error_setg(errp, "vhdx: parent name '%s' is too long", parent);
        return -ENAMETOOLONG;
    }
    for (char *c = path; *c; c++) {
        if (*c == '/') {
            *c = '\\';
        }
    }
    vhdx_guid_to_str(linkage, guid);
    keys[0] = "parent_linkage", vals[0] = guid;
    keys[1] = parent[0] == '/' ? "absolute_win32_path" : "relative_path", vals[1] = path;
    memset(out, 0, cap);
    memcpy(out, locator_type.b, 16);
    st_le16(out + 18, 2);
    for (int i = 0; i < 2; i++) {
        uint8_t *e = out + LOC_HDR + i * LOC_ENTRY;
        long kl = utf8_to_utf16le(keys[i], out + pos, cap - pos);
        long vl = kl < 0 ? -1 : utf8_to_utf16le(vals[i], out + pos + kl, cap - pos - kl);

        if (vl <= 0 || kl > UINT16_MAX || vl > UINT16_MAX) {
            error_setg(errp, "vhdx: parent name '%s' is not valid UTF-8 or too long", parent);
            return -EINVAL;
        }
        st_le32(e, pos);
        st_le32(e + 4, pos + (uint32_t)kl);
        st_le16(e + 8, (uint16_t)kl);
        st_le16(e + 10, (uint16_t)vl);
        pos += (uint32_t)(kl + vl);
    }
    return pos;
}

/* ---------------------------------------------------------------------- */
/* Sector bitmap */

/* BAT index of the sector bitmap block of the chunk holding block. */
uint64_t vhdx_sb_index(const BDRVVhdxState *s, uint64_t block)
{
    uint64_t chunk = block / s->chunk_ratio;

    return chunk * (s->chunk_ratio + 1) + s->chunk_ratio;
}

uint64_t vhdx_sb_byte(const BDRVVhdxState *s, uint64_t sec, unsigned *bit)
{
    uint64_t block = sec * s->logical_sector / s->block_size;
    uint64_t e = s->bat[vhdx_sb_index(s, block)];
    uint64_t in_chunk = sec % (s->chunk_ratio * (s->block_size / s->logical_sector));

    *bit = (unsigned)(in_chunk % 8);
    return (e & VHDX_BAT_OFFSET_MASK) + in_chunk / 8;
}

/*
 * Reads the present bits of the sectors [off, off + len) of one
 * PARTIALLY_PRESENT block: *run gets the length in bytes of the run that
 * starts at off, the return value whether it is present (1), or -errno.
 */
int coroutine_fn vhdx_sb_run(BlockDriverState *bs, uint64_t off, uint64_t len, uint64_t *run)
{
    BDRVVhdxState *s = bs->opaque;
    uint64_t sec = off / s->logical_sector, nsec = len / s->logical_sector, done = 0;
    uint8_t buf[512];
    int first = -1;

    while (done < nsec) {
        unsigned bit;
        uint64_t byte = vhdx_sb_byte(s, sec + done, &bit);
        uint64_t want = div_round_up_u64(bit + (nsec - done), 8);
        int ret;

        if (want > sizeof(buf)) {
            want = sizeof(buf);
        }
        if (want > VHDX_LOG_SECTOR - byte % VHDX_LOG_SECTOR) {
            want = VHDX_LOG_SECTOR - byte % VHDX_LOG_SECTOR; /* one page (partial.c) */
        }
        ret = vhdx_sb_read(bs, byte, buf, want);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t i = 0; i < want * 8 - bit && done < nsec; i++, done++) {
            int b = (buf[(bit + i) / 8] >> ((bit + i) % 8)) & 1;

            if (first < 0) {
                first = b;
            } else if (b != first) {
                *run = done * s->logical_sector;
                return first;
            }
        }
    }
    *run = done * s->logical_sector;
    return first > 0;
}
