/*
 * Block options: the ordered map of dotted keys, its invariants and the
 * leftover check. Parsers live in keyval.c and json.c, typed getters in
 * opts-get.c, serialisation in json-out.c.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "opts-int.h"

int bopts_qlen(const char *s)
{
    return (int)strnlen(s, BOPTS_QUOTE_MAX);
}

const char *bopts_qell(const char *s)
{
    return strnlen(s, BOPTS_QUOTE_MAX + 1) > BOPTS_QUOTE_MAX ? "..." : "";
}

BlockOpts *bopts_new(void)
{
    return calloc(1, sizeof(BlockOpts));
}

static void free_entries(BlockOpts *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->keys[i]);
        free(o->vals[i]);
    }
    free(o->keys);
    free(o->vals);
    o->keys = NULL;
    o->vals = NULL;
    o->n = 0;
    o->cap = 0;
}

void bopts_free(BlockOpts *o)
{
    if (o) {
        free_entries(o);
        free(o);
    }
}

void bopts_swap(BlockOpts *a, BlockOpts *b)
{
    BlockOpts tmp = *a;

    *a = *b;
    *b = tmp;
}

static bool reserve(BlockOpts *o, size_t n)
{
    size_t cap;
    char **k;
    char **v;

    if (n <= o->cap) {
        return true;
    }
    cap = o->cap ? o->cap * 2 : 8;
    while (cap < n) {
        cap *= 2;
    }
    k = realloc(o->keys, cap * sizeof(*k));
    if (!k) {
        return false;
    }
    o->keys = k;
    v = realloc(o->vals, cap * sizeof(*v));
    if (!v) {
        return false;
    }
    o->vals = v;
    o->cap = cap;
    return true;
}

/* Appends copies of key and value without any check. */
static int append(BlockOpts *o, const char *key, const char *value)
{
    char *k;
    char *v;

    if (!reserve(o, o->n + 1)) {
        return -ENOMEM;
    }
    k = strdup(key);
    v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return -ENOMEM;
    }
    o->keys[o->n] = k;
    o->vals[o->n] = v;
    o->n++;
    return 0;
}

BlockOpts *bopts_clone(const BlockOpts *o)
{
    BlockOpts *c = bopts_new();

    if (!c) {
        return NULL;
    }
    if (!reserve(c, o->n)) {
        bopts_free(c);
        return NULL;
    }
    for (size_t i = 0; i < o->n; i++) {
        if (append(c, o->keys[i], o->vals[i]) < 0) {
            bopts_free(c);
            return NULL;
        }
    }
    return c;
}

ptrdiff_t bopts_find(const BlockOpts *o, const char *key)
{
    for (size_t i = 0; i < o->n; i++) {
        if (strcmp(o->keys[i], key) == 0) {
            return (ptrdiff_t)i;
        }
    }
    return -1;
}

/* Checks a key's own shape: length, empty components, component count. */
static int check_key_shape(const char *key, Error **errp)
{
    size_t len = strnlen(key, BOPTS_MAX_KEY_LEN + 1);
    int components = 1;
    char prev = '.';

    if (len > BOPTS_MAX_KEY_LEN) {
        error_setg(errp, "Parameter name '%.*s...' exceeds the limit of %d bytes", BOPTS_QUOTE_MAX,
                   key, BOPTS_MAX_KEY_LEN);
        return -E2BIG;
    }
    for (size_t i = 0; i < len; i++) {
        if (key[i] == '.') {
            if (prev == '.') {
                break;
            }
            components++;
        }
        prev = key[i];
    }
    if (prev == '.') {
        error_setg(errp, "Invalid parameter name '%.*s%s'", bopts_qlen(key), key, bopts_qell(key));
        return -EINVAL;
    }
    if (components > BOPTS_MAX_DEPTH) {
        error_setg(errp, "Parameter name '%.*s%s' exceeds the limit of %d components",
                   bopts_qlen(key), key, bopts_qell(key), BOPTS_MAX_DEPTH);
        return -E2BIG;
    }
    return 0;
}

/* 1 if p is a dotted prefix of k ("a" of "a.b"), else 0. */
static int dotted_prefix(const char *p, size_t plen, const char *k, size_t klen)
{
    return plen < klen && k[plen] == '.' && memcmp(p, k, plen) == 0;
}

static int report_pair(const char *a, const char *b, Error **errp)
{
    size_t alen = strlen(a);
    size_t blen = strlen(b);

    if (alen == blen && memcmp(a, b, alen) == 0) {
        error_setg(errp, "Duplicate parameter '%.*s%s'", bopts_qlen(a), a, bopts_qell(a));
        return -EINVAL;
    }
    if (dotted_prefix(b, blen, a, alen)) {
        const char *t = a;

        a = b;
        b = t;
    }
    if (dotted_prefix(a, strlen(a), b, strlen(b))) {
        error_setg(errp, "Parameter '%.*s%s' conflicts with '%.*s%s'", bopts_qlen(b), b,
                   bopts_qell(b), bopts_qlen(a), a, bopts_qell(a));
        return -EINVAL;
    }
    return 0;
}

int bopts_add(BlockOpts *o, const char *key, const char *value, Error **errp)
{
    int ret = check_key_shape(key, errp);

    if (ret < 0) {
        return ret;
    }
    if (o->n >= BOPTS_MAX_KEYS) {
        error_setg(errp, "Options exceed the limit of %d keys", BOPTS_MAX_KEYS);
        return -E2BIG;
    }
    ret = append(o, key, value);
    if (ret < 0) {
        error_setg(errp, "Out of memory storing parameter '%.*s%s'", bopts_qlen(key), key,
                   bopts_qell(key));
    }
    return ret;
}

/* Rank of byte i of a key: the end < '.' < every other byte. */
static int key_rank(const char *s, size_t len, size_t i)
{
    return i >= len ? 0 : s[i] == '.' ? 1 : (unsigned char)s[i] + 1;
}

/* Compares word by word first: keys may share long prefixes. */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    size_t i = 0;
    uint64_t wa;
    uint64_t wb;

    while (i + 8 <= n) {
        memcpy(&wa, a + i, 8);
        memcpy(&wb, b + i, 8);
        if (wa != wb) {
            break;
        }
        i += 8;
    }
    while (i < n && a[i] == b[i]) {
        i++;
    }
    return key_rank(a, alen, i) - key_rank(b, blen, i);
}

static int keyref_order(const void *pa, const void *pb)
{
    const KeyRef *a = pa;
    const KeyRef *b = pb;

    return key_cmp(a->key, a->len, b->key, b->len);
}

KeyRef *bopts_sorted_keys(const BlockOpts *o)
{
    KeyRef *refs = malloc((o->n ? o->n : 1) * sizeof(*refs));

    if (!refs) {
        return NULL;
    }
    for (size_t i = 0; i < o->n; i++) {
        refs[i].key = o->keys[i];
        refs[i].len = strlen(o->keys[i]);
        refs[i].idx = i;
    }
    qsort(refs, o->n, sizeof(*refs), keyref_order);
    return refs;
}

int bopts_check_conflicts(const BlockOpts *o, Error **errp)
{
    KeyRef *sorted;
    int ret = 0;

    if (o->n < 2) {
        return 0;
    }
    sorted = bopts_sorted_keys(o);
    if (!sorted) {
        error_setg(errp, "Out of memory checking %zu parameters", o->n);
        return -ENOMEM;
    }
    for (size_t i = 0; i + 1 < o->n && ret == 0; i++) {
        ret = report_pair(sorted[i].key, sorted[i + 1].key, errp);
    }
    free(sorted);
    return ret;
}

/* First key that is a dotted prefix of key, equal to it, or has it as a prefix. */
static ptrdiff_t find_conflict(const BlockOpts *o, const char *key)
{
    size_t klen = strlen(key);

    for (size_t i = 0; i < o->n; i++) {
        size_t ilen = strlen(o->keys[i]);

        if (dotted_prefix(o->keys[i], ilen, key, klen) ||
            dotted_prefix(key, klen, o->keys[i], ilen)) {
            return (ptrdiff_t)i;
        }
    }
    return -1;
}

int bopts_set(BlockOpts *o, const char *key, const char *value)
{
    ptrdiff_t i = bopts_find(o, key);
    char *v;
    int ret;

    if (i >= 0) {
        v = strdup(value);
        if (!v) {
            return -ENOMEM;
        }
        free(o->vals[i]);
        o->vals[i] = v;
        return 0;
    }
    ret = check_key_shape(key, NULL);
    if (ret < 0) {
        return -EINVAL;
    }
    if (find_conflict(o, key) >= 0) {
        return -EINVAL;
    }
    if (o->n >= BOPTS_MAX_KEYS) {
        return -E2BIG;
    }
    return append(o, key, value);
}

const char *bopts_get(const BlockOpts *o, const char *key)
{
    ptrdiff_t i = bopts_find(o, key);

    return i >= 0 ? o->vals[i] : NULL;
}

bool bopts_has(const BlockOpts *o, const char *key)
{
    return bopts_find(o, key) >= 0;
}

static void remove_at(BlockOpts *o, size_t i)
{
    free(o->keys[i]);
    free(o->vals[i]);
    memmove(o->keys + i, o->keys + i + 1, (o->n - i - 1) * sizeof(*o->keys));
    memmove(o->vals + i, o->vals + i + 1, (o->n - i - 1) * sizeof(*o->vals));
    o->n--;
}

int bopts_del(BlockOpts *o, const char *key)
{
    ptrdiff_t i = bopts_find(o, key);

    if (i < 0) {
        return 0;
    }
    remove_at(o, (size_t)i);
    return 1;
}

char *bopts_steal(BlockOpts *o, const char *key)
{
    ptrdiff_t i = bopts_find(o, key);
    char *v;

    if (i < 0) {
        return NULL;
    }
    v = o->vals[i];
    o->vals[i] = NULL;
    remove_at(o, (size_t)i);
    return v;
}

size_t bopts_count(const BlockOpts *o)
{
    return o->n;
}

const char *bopts_key_at(const BlockOpts *o, size_t i)
{
    return i < o->n ? o->keys[i] : NULL;
}

const char *bopts_value_at(const BlockOpts *o, size_t i)
{
    return i < o->n ? o->vals[i] : NULL;
}

BlockOpts *bopts_extract_prefix(BlockOpts *o, const char *prefix)
{
    size_t plen = strlen(prefix);
    BlockOpts *c = bopts_new();
    size_t kept = 0;

    if (!c || !reserve(c, o->n)) {
        bopts_free(c);
        return NULL;
    }
    for (size_t i = 0; i < o->n; i++) {
        char *k = o->keys[i];

        if (strncmp(k, prefix, plen) == 0 && k[plen] != '\0' && k[plen] != '.') {
            memmove(k, k + plen, strlen(k + plen) + 1);
            c->keys[c->n] = k;
            c->vals[c->n] = o->vals[i];
            c->n++;
        } else {
            o->keys[kept] = k;
            o->vals[kept] = o->vals[i];
            kept++;
        }
    }
    o->n = kept;
    return c;
}

#define CHECK_EMPTY_LIST 8

int bopts_check_empty(const BlockOpts *o, const char *who, Error **errp)
{
    StrBuf sb;
    size_t shown = o->n < CHECK_EMPTY_LIST ? o->n : CHECK_EMPTY_LIST;

    if (o->n == 0) {
        return 0;
    }
    sb_init(&sb);
    for (size_t i = 0; i < shown; i++) {
        const char *k = o->keys[i];

        sb_puts(&sb, i ? ", '" : "'");
        sb_put(&sb, k, (size_t)bopts_qlen(k));
        sb_puts(&sb, bopts_qell(k));
        sb_putc(&sb, '\'');
    }
    if (o->n > shown) {
        error_setg(errp, "%s%sUnknown options %s and %zu more", who ? who : "", who ? ": " : "",
                   sb_str(&sb) ? sb_str(&sb) : "?", o->n - shown);
    } else {
        error_setg(errp, "%s%sUnknown option%s %s", who ? who : "", who ? ": " : "",
                   o->n > 1 ? "s" : "", sb_str(&sb) ? sb_str(&sb) : "?");
    }
    sb_free(&sb);
    return -EINVAL;
}
