/*
 * JSON strings and numbers (RFC 8259 sections 6, 7 and 8.1).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "json-int.h"

/* Length of the valid UTF-8 sequence at p (RFC 3629 table), or 0. */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned char c = p[0];
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
    size_t n;

    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    if (avail < n || p[1] < lo || p[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return n;
}

static void put_utf8(StrBuf *out, unsigned cp)
{
    char b[4];

    if (cp < 0x80) {
        b[0] = (char)cp;
        sb_put(out, b, 1);
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6));
        b[1] = (char)(0x80 | (cp & 0x3F));
        sb_put(out, b, 2);
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12));
        b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F));
        sb_put(out, b, 3);
    } else {
        b[0] = (char)(0xF0 | (cp >> 18));
        b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[3] = (char)(0x80 | (cp & 0x3F));
        sb_put(out, b, 4);
    }
}

/* Reads "\uXXXX" at s[i]; returns the code unit or -1. */
static long read_u4(const char *s, size_t i, size_t end)
{
    long v = 0;

    if (end - i < 6 || s[i] != '\\' || s[i + 1] != 'u') {
        return -1;
    }
    for (size_t k = i + 2; k < i + 6; k++) {
        char c = s[k];
        int d;

        if (c >= '0' && c <= '9') {
            d = c - '0';
        } else if (c >= 'a' && c <= 'f') {
            d = c - 'a' + 10;
        } else if (c >= 'A' && c <= 'F') {
            d = c - 'A' + 10;
        } else {
            return -1;
        }
        v = v * 16 + d;
    }
    return v;
}

/* Decodes \uXXXX (and a following low surrogate) at s[*i]. */
static int decode_u(const char *s, size_t *i, size_t end, StrBuf *out, char *msg, size_t msglen)
{
    long cp = read_u4(s, *i, end);
    long lo;

    if (cp < 0) {
        snprintf(msg, msglen, "invalid \\u escape");
        return -EINVAL;
    }
    if (cp >= 0xDC00 && cp <= 0xDFFF) {
        snprintf(msg, msglen, "unpaired surrogate \\u%04lX", cp);
        return -EINVAL;
    }
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        lo = read_u4(s, *i + 6, end);
        if (lo < 0xDC00 || lo > 0xDFFF) {
            snprintf(msg, msglen, "unpaired surrogate \\u%04lX", cp);
            return -EINVAL;
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        *i += 6;
    }
    if (cp == 0) {
        snprintf(msg, msglen, "\\u0000 (NUL) is not allowed in strings");
        return -EINVAL;
    }
    put_utf8(out, (unsigned)cp);
    *i += 6;
    return 0;
}

/* Decodes the escape sequence at s[*i] (a backslash). */
static int decode_escape(const char *s, size_t *i, size_t end, StrBuf *out, char *msg,
                         size_t msglen)
{
    static const char from[] = "\"\\/bfnrt";
    static const char to[] = "\"\\/\b\f\n\r\t";
    unsigned char c = *i + 1 < end ? (unsigned char)s[*i + 1] : 0;
    const char *f = c ? strchr(from, c) : NULL;

    if (c == 'u') {
        return decode_u(s, i, end, out, msg, msglen);
    }
    if (f) {
        sb_putc(out, to[f - from]);
        *i += 2;
        return 0;
    }
    if (!c) {
        snprintf(msg, msglen, "unterminated string");
    } else if (c > 0x20 && c < 0x7f) {
        snprintf(msg, msglen, "invalid escape '\\%c'", c);
    } else {
        snprintf(msg, msglen, "invalid escape: byte 0x%02x after '\\'", c);
    }
    return -EINVAL;
}

/* Copies raw bytes at s[*i]: plain ASCII or one valid UTF-8 sequence. */
static int copy_raw(const char *s, size_t *i, size_t end, StrBuf *out, char *msg, size_t msglen)
{
    const unsigned char *p = (const unsigned char *)s + *i;
    size_t n = 1;

    if (*p < 0x20) {
        snprintf(msg, msglen, "control character 0x%02x in string", *p);
        return -EINVAL;
    }
    if (*p >= 0x80) {
        n = utf8_seq(p, end - *i);
        if (!n) {
            snprintf(msg, msglen, "invalid UTF-8 in string");
            return -EINVAL;
        }
    }
    sb_put(out, (const char *)p, n);
    *i += n;
    return 0;
}

int json_decode_string(const char *s, size_t *pos, size_t end, StrBuf *out, char *msg,
                       size_t msglen)
{
    size_t i = *pos + 1;
    int ret;

    sb_truncate(out, 0);
    sb_put(out, "", 0);
    while (i < end && s[i] != '"') {
        if (s[i] == '\\') {
            ret = decode_escape(s, &i, end, out, msg, msglen);
        } else {
            ret = copy_raw(s, &i, end, out, msg, msglen);
        }
        if (ret == 0 && out->len > BOPTS_MAX_STRING) {
            ret = -E2BIG;
        }
        if (ret < 0) {
            *pos = i;
            return ret;
        }
    }
    *pos = i;
    if (i >= end) {
        snprintf(msg, msglen, "unterminated string");
        return -EINVAL;
    }
    *pos = i + 1;
    return 0;
}

static size_t skip_digits(const char *s, size_t len, size_t i)
{
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
    }
    return i;
}

static bool is_digit(const char *s, size_t len, size_t i)
{
    return i < len && s[i] >= '0' && s[i] <= '9';
}

bool json_scan_number(const char *s, size_t len, size_t start, size_t *end)
{
    size_t i = start;

    if (i < len && s[i] == '-') {
        i++;
    }
    *end = i;
    if (!is_digit(s, len, i)) {
        return false;
    }
    i = s[i] == '0' ? i + 1 : skip_digits(s, len, i);
    *end = i;
    if (is_digit(s, len, i)) {
        return false;
    }
    if (i < len && s[i] == '.') {
        *end = ++i;
        if (!is_digit(s, len, i)) {
            return false;
        }
        i = skip_digits(s, len, i);
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) {
            i++;
        }
        *end = i;
        if (!is_digit(s, len, i)) {
            return false;
        }
        i = skip_digits(s, len, i);
    }
    *end = i;
    return true;
}
