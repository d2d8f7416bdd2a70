/*
 * Serialising block options back into one nested JSON object.
 *
 * The keys are sorted so that every subtree is a contiguous run; the tree
 * is then built in one pass and written with members in order of first
 * appearance in the map (array elements by index). Nesting is bounded by
 * BOPTS_MAX_DEPTH components per key.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "opts-int.h"

typedef struct JNode JNode;
struct JNode {
    const char *name;
    size_t nlen;
    const char *value;
    size_t first;
    size_t nkids;
    JNode *kids;
    JNode *last;
    JNode *next;
};

static void free_tree(JNode *n)
{
    JNode *k = n->kids;

    while (k) {
        JNode *next = k->next;

        free_tree(k);
        free(k);
        k = next;
    }
}

static JNode *add_kid(JNode *parent, const char *name, size_t nlen, size_t first)
{
    JNode *k = calloc(1, sizeof(*k));

    if (!k) {
        return NULL;
    }
    k->name = name;
    k->nlen = nlen;
    k->first = first;
    if (parent->last) {
        parent->last->next = k;
    } else {
        parent->kids = k;
    }
    parent->last = k;
    parent->nkids++;
    return k;
}

static size_t comp_len(const char *p)
{
    const char *dot = strchr(p, '.');

    return dot ? (size_t)(dot - p) : strlen(p);
}

/* Adds one key below root, reusing the open path in stack[1..*depth]. */
static int add_key(JNode **stack, int *depth, const char *key, const char *value, size_t idx)
{
    const char *p = key;
    int level = 0;
    size_t n = comp_len(p);

    while (level < *depth && stack[level + 1]->nlen == n &&
           memcmp(stack[level + 1]->name, p, n) == 0 && p[n] == '.') {
        level++;
        stack[level]->first = idx < stack[level]->first ? idx : stack[level]->first;
        p += n + 1;
        n = comp_len(p);
    }
    for (;;) {
        if (level >= BOPTS_MAX_DEPTH) {
            return -EINVAL;
        }
        stack[level + 1] = add_kid(stack[level], p, n, idx);
        if (!stack[level + 1]) {
            return -ENOMEM;
        }
        level++;
        if (p[n] != '.') {
            break;
        }
        p += n + 1;
        n = comp_len(p);
    }
    stack[level]->value = value;
    *depth = level;
    return 0;
}

static int build_tree(const BlockOpts *o, JNode *root)
{
    JNode *stack[BOPTS_MAX_DEPTH + 1];
    KeyRef *refs = bopts_sorted_keys(o);
    int depth = 0;
    int ret = 0;

    if (!refs) {
        return -ENOMEM;
    }
    stack[0] = root;
    for (size_t i = 0; i < o->n && ret == 0; i++) {
        ret = add_key(stack, &depth, refs[i].key, o->vals[refs[i].idx], refs[i].idx);
    }
    free(refs);
    return ret;
}

static void put_json_string(StrBuf *sb, const char *s, size_t n)
{
    char esc[8];

    sb_putc(sb, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '"' || c == '\\') {
            sb_putc(sb, '\\');
            sb_putc(sb, (char)c);
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
            sb_puts(sb, esc);
        } else {
            sb_putc(sb, (char)c);
        }
    }
    sb_putc(sb, '"');
}

/* Index of a canonical decimal name ("0", "17") below limit, or -1. */
static long array_index(const JNode *k, size_t limit)
{
    size_t v = 0;

    if (k->nlen == 0 || k->nlen > 10 || (k->name[0] == '0' && k->nlen > 1)) {
        return -1;
    }
    for (size_t i = 0; i < k->nlen; i++) {
        if (k->name[i] < '0' || k->name[i] > '9') {
            return -1;
        }
        v = v * 10 + (size_t)(k->name[i] - '0');
    }
    return v < limit ? (long)v : -1;
}

/* Places the children in output order; returns true if they form an array. */
static bool order_kids(const JNode *n, const JNode **out)
{
    bool is_array = true;
    size_t i = 0;

    memset(out, 0, n->nkids * sizeof(*out));
    for (const JNode *k = n->kids; k && is_array; k = k->next) {
        long idx = array_index(k, n->nkids);

        if (idx < 0 || out[idx]) {
            is_array = false;
        } else {
            out[idx] = k;
        }
    }
    if (is_array) {
        return true;
    }
    for (const JNode *k = n->kids; k; k = k->next) {
        out[i++] = k;
    }
    return false;
}

static int first_cmp(const void *pa, const void *pb)
{
    const JNode *a = *(const JNode *const *)pa;
    const JNode *b = *(const JNode *const *)pb;

    return a->first < b->first ? -1 : a->first > b->first;
}

/* Writes n; the root (may_be_array false) is always an object. */
static int emit(StrBuf *sb, const JNode *n, bool may_be_array)
{
    const JNode **kids;
    bool is_array;

    if (!n->kids) {
        put_json_string(sb, n->value ? n->value : "", strlen(n->value ? n->value : ""));
        return 0;
    }
    kids = malloc(n->nkids * sizeof(*kids));
    if (!kids) {
        return -ENOMEM;
    }
    is_array = order_kids(n, kids) && may_be_array;
    if (!is_array) {
        qsort(kids, n->nkids, sizeof(*kids), first_cmp);
    }
    sb_putc(sb, is_array ? '[' : '{');
    for (size_t i = 0; i < n->nkids; i++) {
        sb_puts(sb, i ? ", " : "");
        if (!is_array) {
            put_json_string(sb, kids[i]->name, kids[i]->nlen);
            sb_puts(sb, ": ");
        }
        if (emit(sb, kids[i], true) < 0) {
            free(kids);
            return -ENOMEM;
        }
    }
    sb_putc(sb, is_array ? ']' : '}');
    free(kids);
    return 0;
}

char *bopts_to_json(const BlockOpts *o)
{
    JNode root = { .name = "" };
    StrBuf sb;
    int ret;

    sb_init(&sb);
    ret = build_tree(o, &root);
    if (ret == 0 && !root.kids) {
        sb_puts(&sb, "{}");
    } else if (ret == 0) {
        ret = emit(&sb, &root, false);
    }
    free_tree(&root);
    if (ret < 0 || !sb_str(&sb)) {
        sb_free(&sb);
        return NULL;
    }
    return sb.s;
}
