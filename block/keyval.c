/*
 * QEMU's key=value,key2=value2 option syntax (-blockdev, --image-opts).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "opts-int.h"

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

/* Reads a value up to a single ',' or the end; ",," is a comma. Returns the
 * position after the value and its separator. */
static const char *read_value(const char *p, StrBuf *val)
{
    const char *start = p;

    sb_truncate(val, 0);
    sb_put(val, "", 0);
    for (;;) {
        if (*p == ',' && p[1] == ',') {
            sb_put(val, start, (size_t)(p - start) + 1);
            p += 2;
            start = p;
        } else if (*p == ',' || *p == '\0') {
            sb_put(val, start, (size_t)(p - start));
            return *p ? p + 1 : p;
        } else {
            p++;
        }
    }
}

/* Reads a "key=" head into key; returns the position after '=' or NULL. */
static const char *read_key(const char *elem, StrBuf *key, Error **errp)
{
    const char *q = elem;

    while (*q && *q != '=' && *q != ',') {
        q++;
    }
    if (q == elem) {
        error_setg(errp, "Empty parameter name in '%.*s%s'", bopts_qlen(elem), elem,
                   bopts_qell(elem));
        return NULL;
    }
    if (*q != '=') {
        size_t n = (size_t)(q - elem);
        int shown = n > BOPTS_QUOTE_MAX ? BOPTS_QUOTE_MAX : (int)n;

        error_setg(errp, "Expected '=' after parameter '%.*s%s'", shown, elem,
                   n > BOPTS_QUOTE_MAX ? "..." : "");
        return NULL;
    }
    sb_truncate(key, 0);
    sb_put(key, elem, (size_t)(q - elem));
    return q + 1;
}

static int check_key_chars(const char *key, Error **errp)
{
    for (const char *c = key; *c; c++) {
        if (!key_char(*c)) {
            error_setg(errp, "Invalid parameter name '%.*s%s'", bopts_qlen(key), key,
                       bopts_qell(key));
            return -EINVAL;
        }
    }
    return 0;
}

/* Parses one element at *pp into o and advances *pp. */
static int parse_element(BlockOpts *o, const char **pp, const char *implied_key, StrBuf *key,
                         StrBuf *val, Error **errp)
{
    const char *p = *pp;
    const char *k;
    int ret;

    if (implied_key && !memchr(p, '=', strcspn(p, ","))) {
        *pp = read_value(p, val);
        k = implied_key;
    } else {
        p = read_key(p, key, errp);
        if (!p) {
            return -EINVAL;
        }
        *pp = read_value(p, val);
        k = sb_str(key);
    }
    if (!k || !sb_str(val)) {
        error_setg(errp, "Out of memory parsing options");
        return -ENOMEM;
    }
    ret = check_key_chars(k, errp);
    if (ret < 0) {
        return ret;
    }
    return bopts_add(o, k, sb_str(val), errp);
}

static int parse_all(BlockOpts *work, const char *str, const char *implied_key, Error **errp)
{
    StrBuf key;
    StrBuf val;
    const char *p = str;
    int ret = 0;

    sb_init(&key);
    sb_init(&val);
    while (*p && ret == 0) {
        ret = parse_element(work, &p, p == str ? implied_key : NULL, &key, &val, errp);
    }
    sb_free(&key);
    sb_free(&val);
    if (ret == 0) {
        ret = bopts_check_conflicts(work, errp);
    }
    return ret;
}

int bopts_parse_keyval(BlockOpts *o, const char *str, const char *implied_key, Error **errp)
{
    size_t len = strnlen(str, BOPTS_MAX_INPUT + 1);
    BlockOpts *work;
    int ret;

    if (len > BOPTS_MAX_INPUT) {
        error_setg(errp, "Option string exceeds the limit of %d bytes", BOPTS_MAX_INPUT);
        return -E2BIG;
    }
    work = bopts_clone(o);
    if (!work) {
        error_setg(errp, "Out of memory parsing options");
        return -ENOMEM;
    }
    ret = parse_all(work, str, implied_key, errp);
    if (ret == 0) {
        bopts_swap(o, work);
    }
    bopts_free(work);
    return ret;
}
