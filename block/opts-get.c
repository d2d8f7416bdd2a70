/*
 * Typed getters that consume options, and the qemu-img size syntax.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "opts-int.h"

/* Quoting helpers for "'%.*s%s'" of a key and of a value. */
#define Q(s) bopts_qlen(s), (s), bopts_qell(s)

static int digit_value(char c, int base)
{
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
    return d < base ? d : -1;
}

/*
 * Reads the digits of an unsigned number in base 10 or 16 at *pp and
 * advances it. Returns 0, -EINVAL without digits, -ERANGE on overflow
 * (after consuming all the digits).
 */
static int read_digits(const char **pp, int base, uint64_t *out)
{
    const char *p = *pp;
    uint64_t v = 0;
    bool overflow = false;
    int d;

    while ((d = digit_value(*p, base)) >= 0) {
        if (__builtin_mul_overflow(v, (uint64_t)base, &v) ||
            __builtin_add_overflow(v, (uint64_t)d, &v)) {
            overflow = true;
        }
        p++;
    }
    if (p == *pp) {
        return -EINVAL;
    }
    *pp = p;
    *out = v;
    return overflow ? -ERANGE : 0;
}

/* Reads a whole unsigned decimal or 0x-hexadecimal number: no trailing bytes. */
static int parse_unsigned(const char *s, uint64_t *out)
{
    int base = 10;
    int ret;

    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    ret = read_digits(&s, base, out);
    if (ret == -EINVAL || *s != '\0') {
        return -EINVAL;
    }
    return ret;
}

static int parse_int64(const char *s, int64_t *out)
{
    bool neg = s[0] == '-';
    uint64_t v;
    int ret;

    if (s[0] == '-' || s[0] == '+') {
        s++;
    }
    ret = parse_unsigned(s, &v);
    if (ret < 0) {
        return ret;
    }
    if (v > (uint64_t)INT64_MAX + neg) {
        return -ERANGE;
    }
    *out = neg ? (int64_t)(0 - v) : (int64_t)v;
    return 0;
}

static int suffix_shift(char c)
{
    static const char units[] = "bkmgtpe";
    const char *u = strchr(units, c | 0x20);

    return c && u ? (int)(u - units) * 10 : -1;
}

/* value = (whole + 0.frac) << shift, exactly. frac/fdigits without trailing zeros. */
static int scale(uint64_t whole, uint64_t frac, int fdigits, int shift, uint64_t *out)
{
    unsigned __int128 pow10 = 1;
    unsigned __int128 part;
    uint64_t base;

    if (shift && whole > (UINT64_MAX >> shift)) {
        return -ERANGE;
    }
    base = whole << shift;
    for (int i = 0; i < fdigits; i++) {
        pow10 *= 10;
    }
    part = (unsigned __int128)frac << shift;
    if (part % pow10) {
        return -EINVAL;
    }
    if (__builtin_add_overflow(base, (uint64_t)(part / pow10), out)) {
        return -ERANGE;
    }
    return 0;
}

/* Reads ".digits" into frac/fdigits, dropping trailing zeros. */
static int read_fraction(const char **pp, uint64_t *frac, int *fdigits)
{
    const char *p = *pp + 1;
    const char *last = p;

    while (*p >= '0' && *p <= '9') {
        if (*p != '0') {
            last = p + 1;
        }
        p++;
    }
    if (p == *pp + 1 || last - (*pp + 1) > 19) {
        return -EINVAL;
    }
    *fdigits = (int)(last - (*pp + 1));
    *frac = 0;
    for (const char *q = *pp + 1; q < last; q++) {
        *frac = *frac * 10 + (uint64_t)(*q - '0');
    }
    *pp = p;
    return 0;
}

int bopts_parse_size(const char *s, uint64_t *out)
{
    bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    uint64_t whole;
    uint64_t frac = 0;
    int fdigits = 0;
    int shift = 0;
    int range;
    int ret;

    s += hex ? 2 : 0;
    range = read_digits(&s, hex ? 16 : 10, &whole);
    if (range == -EINVAL) {
        return -EINVAL;
    }
    if (*s == '.' && !hex) {
        ret = read_fraction(&s, &frac, &fdigits);
        if (ret < 0) {
            return ret;
        }
    }
    if (*s) {
        shift = suffix_shift(*s++);
    }
    if (shift < 0 || *s || (fdigits && shift == 0)) {
        return -EINVAL;
    }
    if (range < 0) {
        return range;
    }
    return scale(whole, frac, fdigits, shift, out);
}

int bopts_take_str(BlockOpts *o, const char *key, char **out, Error **errp)
{
    *out = bopts_steal(o, key);
    return *out ? 1 : 0;
}

static int take_bad(char *v, Error **errp, const char *fmt, const char *key)
{
    error_setg(errp, fmt, Q(key), Q(v));
    free(v);
    return -EINVAL;
}

int bopts_take_bool(BlockOpts *o, const char *key, bool def, bool *out, Error **errp)
{
    static const char *const yes[] = { "on", "true", "yes" };
    static const char *const no[] = { "off", "false", "no" };
    char *v = bopts_steal(o, key);

    *out = def;
    if (!v) {
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
            *out = strcmp(v, yes[i]) == 0;
            free(v);
            return 1;
        }
    }
    free(v);
    error_setg(errp, "Parameter '%.*s%s' expects 'on' or 'off'", Q(key));
    return -EINVAL;
}

int bopts_take_size(BlockOpts *o, const char *key, uint64_t def, uint64_t *out, Error **errp)
{
    char *v = bopts_steal(o, key);
    int ret;

    *out = def;
    if (!v) {
        return 0;
    }
    ret = bopts_parse_size(v, out);
    if (ret == -ERANGE) {
        *out = def;
        return take_bad(v, errp, "Parameter '%.*s%s' value '%.*s%s' is out of range", key);
    }
    if (ret < 0) {
        *out = def;
        return take_bad(v, errp,
                        "Parameter '%.*s%s' expects a size (bytes with an optional suffix "
                        "k, M, G, T, P or E), got '%.*s%s'",
                        key);
    }
    free(v);
    return 1;
}

int bopts_take_int64(BlockOpts *o, const char *key, int64_t def, int64_t *out, Error **errp)
{
    char *v = bopts_steal(o, key);
    int ret;

    *out = def;
    if (!v) {
        return 0;
    }
    ret = parse_int64(v, out);
    if (ret < 0) {
        *out = def;
        return take_bad(v, errp,
                        ret == -ERANGE ? "Parameter '%.*s%s' value '%.*s%s' is out of range"
                                       : "Parameter '%.*s%s' expects an integer, got '%.*s%s'",
                        key);
    }
    free(v);
    return 1;
}

int bopts_take_uint64(BlockOpts *o, const char *key, uint64_t def, uint64_t *out, Error **errp)
{
    char *v = bopts_steal(o, key);
    int ret;

    *out = def;
    if (!v) {
        return 0;
    }
    ret = parse_unsigned(v, out);
    if (ret < 0) {
        *out = def;
        return take_bad(v, errp,
                        ret == -ERANGE
                            ? "Parameter '%.*s%s' value '%.*s%s' is out of range"
                            : "Parameter '%.*s%s' expects a non-negative integer, got '%.*s%s'",
                        key);
    }
    free(v);
    return 1;
}

static void enum_error(const char *key, const char *v, const char *const names[], int n,
                       Error **errp)
{
    StrBuf list;

    sb_init(&list);
    for (int i = 0; i < n; i++) {
        if (names[i]) {
            sb_puts(&list, list.len ? ", " : "");
            sb_puts(&list, names[i]);
        }
    }
    error_setg(errp, "Parameter '%.*s%s' does not accept value '%.*s%s' (expected one of: %s)",
               Q(key), Q(v), sb_str(&list) ? sb_str(&list) : "?");
    sb_free(&list);
}

int bopts_take_enum(BlockOpts *o, const char *key, const char *const names[], int n, int def,
                    int *out, Error **errp)
{
    char *v = bopts_steal(o, key);

    *out = def;
    if (!v) {
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (names[i] && strcmp(names[i], v) == 0) {
            *out = i;
            free(v);
            return 1;
        }
    }
    enum_error(key, v, names, n, errp);
    free(v);
    return -EINVAL;
}
