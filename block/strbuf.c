/*
 * A small growable string for the options unit.
 */
#include <stdlib.h>
#include <string.h>

#include "opts-int.h"

void sb_init(StrBuf *sb)
{
    sb->s = NULL;
    sb->len = 0;
    sb->cap = 0;
    sb->oom = false;
}

void sb_free(StrBuf *sb)
{
    free(sb->s);
    sb_init(sb);
}

static bool sb_reserve(StrBuf *sb, size_t extra)
{
    size_t need;
    size_t cap;
    char *s;

    if (sb->oom) {
        return false;
    }
    if (__builtin_add_overflow(sb->len, extra + 1, &need)) {
        sb->oom = true;
        return false;
    }
    if (need <= sb->cap) {
        return true;
    }
    cap = sb->cap ? sb->cap : 64;
    while (cap < need) {
        if (__builtin_mul_overflow(cap, 2, &cap)) {
            cap = need;
            break;
        }
    }
    s = realloc(sb->s, cap);
    if (!s) {
        sb->oom = true;
        return false;
    }
    sb->s = s;
    sb->cap = cap;
    return true;
}

void sb_put(StrBuf *sb, const char *p, size_t n)
{
    if (!sb_reserve(sb, n)) {
        return;
    }
    memcpy(sb->s + sb->len, p, n);
    sb->len += n;
    sb->s[sb->len] = '\0';
}

void sb_putc(StrBuf *sb, char c)
{
    sb_put(sb, &c, 1);
}

void sb_puts(StrBuf *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

void sb_truncate(StrBuf *sb, size_t len)
{
    if (len < sb->len) {
        sb->len = len;
        sb->s[len] = '\0';
    }
}

const char *sb_str(StrBuf *sb)
{
    if (sb->oom) {
        return NULL;
    }
    return sb->s ? sb->s : "";
}
