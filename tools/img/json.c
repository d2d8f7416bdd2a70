/*
 * JSON for coblk-img: a small tree parser for the JSON text drivers return
 * (bdrv_get_specific_info), an emitter in qemu-img's pretty layout (four
 * spaces a level, "key": value), and the human form of a tree.
 *
 * The parser reads text from the library, not from users; it still bounds
 * nesting (64 levels) and rejects malformed text instead of guessing.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

#define JSON_MAX_DEPTH 64

typedef struct JParser {
    const char *p;
    int depth;
} JParser;

static JNode *jp_value(JParser *jp);

static void jp_ws(JParser *jp)
{
    while (*jp->p && isspace((unsigned char)*jp->p)) {
        jp->p++;
    }
}

static JNode *jnode_new(JType t)
{
    JNode *n = calloc(1, sizeof(*n));

    if (n) {
        n->type = t;
    }
    return n;
}

void json_free(JNode *n)
{
    while (n) {
        JNode *next = n->next;

        json_free(n->child);
        free(n->key);
        free(n->text);
        free(n);
        n = next;
    }
}

/* A string (the opening quote is at jp->p); \u escapes above ASCII become '?'. */
static char *jp_string(JParser *jp)
{
    size_t cap = 16, len = 0;
    char *s = malloc(cap);

    jp->p++;
    while (s && *jp->p && *jp->p != '"') {
        char c = *jp->p++;

        if (c == '\\') {
            c = *jp->p++;
            switch (c) {
            case 'n': c = '\n'; break;
            case 't': c = '\t'; break;
            case 'r': c = '\r'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'u': {
                unsigned v = 0;
                for (int i = 0; i < 4; i++) {
                    if (!isxdigit((unsigned char)jp->p[i])) {
                        free(s);
                        return NULL;
                    }
                    v = v * 16 + (unsigned)(isdigit((unsigned char)jp->p[i])
                                            ? jp->p[i] - '0'
                                            : tolower((unsigned char)jp->p[i]) - 'a' + 10);
                }
                jp->p += 4;
                c = v < 0x80 && v ? (char)v : '?';
                break;
            }
            case '\0':
                free(s);
                return NULL;
            default:
                break;
            }
        }
        if (len + 2 > cap) {
            char *ns = realloc(s, cap *= 2);
            if (!ns) {
                free(s);
                return NULL;
            }
            s = ns;
        }
        /* s is non-NULL inside the loop (its condition). */
        /* cppcheck-suppress nullPointerRedundantCheck */
        s[len++] = c;
    }
    if (!s || *jp->p != '"') {
        free(s);
        return NULL;
    }
    jp->p++;
    s[len] = '\0';
    return s;
}

static JNode *jp_container(JParser *jp, bool obj)
{
    JNode *n = jnode_new(obj ? J_OBJ : J_ARR);
    JNode **tail = n ? &n->child : NULL;

    if (!n || ++jp->depth > JSON_MAX_DEPTH) {
        json_free(n);
        return NULL;
    }
    jp->p++;
    jp_ws(jp);
    if (*jp->p == (obj ? '}' : ']')) {
        jp->p++;
        jp->depth--;
        return n;
    }
    for (;;) {
        char *key = NULL;
        JNode *v;

        jp_ws(jp);
        if (obj) {
            if (*jp->p != '"' || !(key = jp_string(jp))) {
                goto fail;
            }
            jp_ws(jp);
            if (*jp->p++ != ':') {
                free(key);
                goto fail;
            }
        }
        v = jp_value(jp);
        if (!v) {
            free(key);
            goto fail;
        }
        v->key = key;
        *tail = v;
        tail = &v->next;
        jp_ws(jp);
        if (*jp->p == ',') {
            jp->p++;
            continue;
        }
        if (*jp->p == (obj ? '}' : ']')) {
            jp->p++;
            jp->depth--;
            return n;
        }
        goto fail;
    }
fail:
    json_free(n);
    return NULL;
}

static JNode *jp_value(JParser *jp)
{
    JNode *n;

    jp_ws(jp);
    switch (*jp->p) {
    case '{':
        return jp_container(jp, true);
    case '[':
        return jp_container(jp, false);
    case '"':
        n = jnode_new(J_STR);
        if (n && !(n->text = jp_string(jp))) {
            json_free(n);
            return NULL;
        }
        return n;
    case 't':
    case 'f':
        n = jnode_new(J_BOOL);
        if (n) {
            n->b = *jp->p == 't';
            if (strncmp(jp->p, n->b ? "true" : "false", n->b ? 4 : 5) != 0) {
                json_free(n);
                return NULL;
            }
            jp->p += n->b ? 4 : 5;
        }
        return n;
    case 'n':
        if (strncmp(jp->p, "null", 4) != 0) {
            return NULL;
        }
        jp->p += 4;
        return jnode_new(J_NULL);
    default: {
        const char *s = jp->p;

        while (*jp->p && (isdigit((unsigned char)*jp->p) || strchr("+-.eE", *jp->p))) {
            jp->p++;
        }
        if (jp->p == s) {
            return NULL;
        }
        n = jnode_new(J_NUM);
        if (n && !(n->text = strndup(s, (size_t)(jp->p - s)))) {
            json_free(n);
            return NULL;
        }
        return n;
    }
    }
}

JNode *json_parse(const char *text)
{
    JParser jp = { text, 0 };
    JNode *n = jp_value(&jp);

    jp_ws(&jp);
    if (n && *jp.p) {
        json_free(n);
        return NULL;
    }
    return n;
}

/* --------------------------------------------------------------------- */
/* Emitter */

static void jo_indent(JOut *o)
{
    for (int i = 0; i < o->depth; i++) {
        fputs("    ", o->f);
    }
}

static void jo_quoted(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if (c == '"' || c == '\\') {
            fprintf(f, "\\%c", c);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c < 0x20) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
    }
    fputc('"', f);
}

/* Starts a member or element: separator, newline, indent, key. */
static void jo_item(JOut *o, const char *key)
{
    if (o->depth > 0) {
        fputs(o->first ? "\n" : ",\n", o->f);
    }
    o->first = false;
    jo_indent(o);
    if (key) {
        jo_quoted(o->f, key);
        fputs(": ", o->f);
    }
}

static void jo_open(JOut *o, const char *key, char c)
{
    jo_item(o, key);
    fputc(c, o->f);
    o->depth++;
    o->first = true;
}

static void jo_close(JOut *o, char c)
{
    bool empty = o->first;

    o->depth--;
    o->first = false;
    if (!empty) {
        fputc('\n', o->f);
        jo_indent(o);
    }
    fputc(c, o->f);
}

void jo_begin_obj(JOut *o, const char *key)
{
    jo_open(o, key, '{');
}

void jo_end_obj(JOut *o)
{
    jo_close(o, '}');
}

void jo_begin_arr(JOut *o, const char *key)
{
    jo_open(o, key, '[');
}

void jo_end_arr(JOut *o)
{
    jo_close(o, ']');
}

void jo_str(JOut *o, const char *key, const char *v)
{
    jo_item(o, key);
    jo_quoted(o->f, v);
}

void jo_int(JOut *o, const char *key, int64_t v)
{
    jo_item(o, key);
    fprintf(o->f, "%lld", (long long)v);
}

void jo_bool(JOut *o, const char *key, bool v)
{
    jo_item(o, key);
    fputs(v ? "true" : "false", o->f);
}

void jo_node(JOut *o, const char *key, const JNode *n)
{
    switch (n->type) {
    case J_OBJ:
    case J_ARR:
        jo_open(o, key, n->type == J_OBJ ? '{' : '[');
        for (const JNode *c = n->child; c; c = c->next) {
            jo_node(o, n->type == J_OBJ ? c->key : NULL, c);
        }
        jo_close(o, n->type == J_OBJ ? '}' : ']');
        break;
    case J_STR:
        jo_str(o, key, n->text);
        break;
    case J_NUM:
        jo_item(o, key);
        fputs(n->text, o->f);
        break;
    case J_BOOL:
        jo_bool(o, key, n->b);
        break;
    default:
        jo_item(o, key);
        fputs("null", o->f);
        break;
    }
}

void jo_finish(JOut *o)
{
    fputc('\n', o->f);
}

/* --------------------------------------------------------------------- */
/* Human form: "key: value", keys with '-' shown as spaces, nested indented. */

static void human_key(FILE *f, const char *key, int indent)
{
    fprintf(f, "%*s", indent, "");
    for (const char *k = key; *k; k++) {
        fputc(*k == '-' ? ' ' : *k, f);
    }
    fputc(':', f);
}

void json_print_human(FILE *f, const JNode *n, int indent)
{
    int i = 0;

    for (const JNode *c = n->child; c; c = c->next, i++) {
        if (n->type == J_ARR) {
            fprintf(f, "%*s[%d]:", indent, "", i);
        } else {
            human_key(f, c->key, indent);
        }
        switch (c->type) {
        case J_OBJ:
        case J_ARR:
            fputc('\n', f);
            json_print_human(f, c, indent + 4);
            break;
        case J_BOOL:
            fprintf(f, " %s\n", c->b ? "true" : "false");
            break;
        case J_NULL:
            fprintf(f, " null\n");
            break;
        default:
            fprintf(f, " %s\n", c->text);
            break;
        }
    }
}
