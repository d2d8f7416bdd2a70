/*
 * Where a dmg image keeps its block map: the "blkx" resources, either in the
 * XML property list (modern images) or in the binary resource fork (older
 * images). Both hand each resource that holds a "mish" block to a callback.
 *
 * The XML is not parsed as a whole: only the text from "<key>blkx</key>" to
 * the end of the <array> after it is read, and each <data>...</data> in it
 * is base64-decoded. Limits (untrusted images): the caller bounds the text
 * to DMG_PLIST_MAX bytes; at most DMG_MISH_MAX blocks; base64 holds only
 * the standard alphabet, whitespace and trailing '=' padding.
 *
 * Resource fork (big-endian): a 16-byte header (data offset, map offset,
 * data length, map length, relative to the fork), then in the data area
 * one entry per resource: its length (u32) and its bytes. The entries are
 * walked in order (the map, which names their types, is not needed: mish
 * blocks carry their own magic); each must lie inside the data area.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/format/dmg/dmg.h"

#define MISH_MAGIC "mish"

/* Value of a base64 character, or -1 (whitespace -2). */
static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z') {
        return c - 'A';
    }
    if (c >= 'a' && c <= 'z') {
        return c - 'a' + 26;
    }
    if (c >= '0' && c <= '9') {
        return c - '0' + 52;
    }
    if (c == '+') {
        return 62;
    }
    if (c == '/') {
        return 63;
    }
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' ? -2 : -1;
}

/*
 * Decodes the base64 text in [p, end) into out (at least (end - p) / 4 * 3
 * bytes). Returns the decoded length, or -1 on a bad character, padding
 * that is not at the end, or a partial quantum.
 */
static long b64_decode(const char *p, const char *end, uint8_t *out)
{
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    long n = 0;

    for (; p < end; p++) {
        int v = b64_value(*p);

        if (v == -2) {
            continue;
        }
        if (*p == '=') {
            pad++;
            continue;
        }
        if (v < 0 || pad) {
            return -1;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    /*
     * Leftover bits: 0 after whole quanta (no padding), 4 after two
     * characters (1 byte; "==" or none), 2 after three (2 bytes; "=" or none).
     */
    if (pad > 2 || bits == 6 || (bits == 0 && pad) || (bits == 4 && pad == 1) ||
        (bits == 2 && pad == 2)) {
        return -1;
    }
    return n;
}

/* First occurrence of needle in [p, end), or NULL. */
static const char *find(const char *p, const char *end, const char *needle)
{
    size_t n = strlen(needle);

    while (p && (size_t)(end - p) >= n) {
        const char *q = memchr(p, needle[0], (size_t)(end - p) - n + 1);

        if (!q) {
            return NULL;
        }
        if (memcmp(q, needle, n) == 0) {
            return q;
        }
        p = q + 1;
    }
    return NULL;
}

int dmg_plist_foreach_mish(const char *file, const char *xml, size_t len, DmgMishFn fn,
                           void *opaque, Error **errp)
{
    const char *end = xml + len, *p, *arr_end;
    unsigned count = 0;

    p = find(xml, end, "<key>blkx</key>");
    p = p ? find(p, end, "<array>") : NULL;
    arr_end = p ? find(p, end, "</array>") : NULL;
    if (!arr_end) {
        error_setg(errp, "'%s': the XML plist has no blkx array", file);
        return -EINVAL;
    }
    while ((p = find(p, arr_end, "<data>")) != NULL) {
        const char *d = p + strlen("<data>");
        const char *e = find(d, arr_end, "</data>");
        uint8_t *buf;
        long n;
        int ret;

        if (!e) {
            error_setg(errp, "'%s': unterminated <data> at plist offset %zu", file,
                       (size_t)(p - xml));
            return -EINVAL;
        }
        if (++count > DMG_MISH_MAX) {
            error_setg(errp, "'%s': more than %u blkx resources", file, DMG_MISH_MAX);
            return -EINVAL;
        }
        buf = malloc((size_t)(e - d) / 4 * 3 + 3);
        if (!buf) {
            error_setg(errp, "'%s': out of memory decoding the plist", file);
            return -ENOMEM;
        }
        n = b64_decode(d, e, buf);
        if (n < 0) {
            free(buf);
            error_setg(errp, "'%s': bad base64 in the blkx <data> at plist offset %zu", file,
                       (size_t)(d - xml));
            return -EINVAL;
        }
        ret = n >= 4 && memcmp(buf, MISH_MAGIC, 4) == 0 ? fn(opaque, buf, (size_t)n, errp) : 0;
        free(buf);
        if (ret < 0) {
            return ret;
        }
        p = e;
    }
    return 0;
}

int dmg_rsrc_foreach_mish(const char *file, const uint8_t *rsrc, size_t len, DmgMishFn fn,
                          void *opaque, Error **errp)
{
    ByteCursor c = bcur_init(rsrc, len);
    uint32_t data_off, map_off, data_len, map_len, pos = 0;
    unsigned count = 0;

    rd_be32(&c, &data_off);
    rd_be32(&c, &map_off);
    rd_be32(&c, &data_len);
    rd_be32(&c, &map_len);
    if (!bcur_ok(&c) || !range_within(data_off, data_len, len)) {
        error_setg(errp, "'%s': resource fork data area (offset %u, length %u) does not lie "
                   "inside the fork (%zu bytes)", file, data_off, data_len, len);
        return -EINVAL;
    }
    while (data_len - pos >= 4) {
        uint32_t n = ld_be32(rsrc + data_off + pos);
        const uint8_t *r = rsrc + data_off + pos + 4;
        int ret;

        if (n > data_len - pos - 4) {
            error_setg(errp, "'%s': resource at fork offset %u has length %u past the data area",
                       file, data_off + pos, n);
            return -EINVAL;
        }
        if (n >= 4 && memcmp(r, MISH_MAGIC, 4) == 0) {
            if (++count > DMG_MISH_MAX) {
                error_setg(errp, "'%s': more than %u blkx resources", file, DMG_MISH_MAX);
                return -EINVAL;
            }
            ret = fn(opaque, r, n, errp);
            if (ret < 0) {
                return ret;
            }
        }
        pos += 4 + n;
    }
    return 0;
}
