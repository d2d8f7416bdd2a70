/*
 * JSON objects (RFC 8259) flattened into dotted block options, for
 * json:{...} filenames and -blockdev's JSON form. Recursive descent with
 * the nesting capped at BOPTS_MAX_DEPTH; every failure sets an error with
 * the byte offset where parsing stopped.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-int.h"
#include "opts-int.h"

typedef struct JsonParser {
    const char *s;
    size_t pos;
    size_t len;
    int depth;
    StrBuf path;
    StrBuf str;
    BlockOpts *o;
    Error **errp;
} JsonParser;

static int parse_value(JsonParser *p);

static int COBLK_PRINTF(3, 4) json_err(JsonParser *p, int ret, const char *fmt, ...)
{
    char detail[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    error_setg(p->errp, "Invalid JSON at offset %zu: %s", p->pos, detail);
    return ret;
}

static int oom(JsonParser *p)
{
    error_setg(p->errp, "Out of memory parsing JSON");
    return -ENOMEM;
}

/* Reports the character at the cursor as unexpected. */
static int unexpected(JsonParser *p, const char *wanted)
{
    unsigned char c = (unsigned char)p->s[p->pos];

    if (p->pos >= p->len) {
        return json_err(p, -EINVAL, "unexpected end of input, expected %s", wanted);
    }
    if (c > 0x20 && c < 0x7f) {
        return json_err(p, -EINVAL, "unexpected character '%c', expected %s", c, wanted);
    }
    return json_err(p, -EINVAL, "unexpected byte 0x%02x, expected %s", c, wanted);
}

static void skip_ws(JsonParser *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];

        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
            return;
        }
        p->pos++;
    }
}

static bool consume(JsonParser *p, char c)
{
    skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == c) {
        p->pos++;
        return true;
    }
    return false;
}

static int parse_string_at(JsonParser *p, StrBuf *out)
{
    size_t start = p->pos;
    char msg[128];
    int ret = json_decode_string(p->s, &p->pos, p->len, out, msg, sizeof(msg));

    if (ret == 0) {
        return sb_str(out) ? 0 : oom(p);
    }
    if (ret == -E2BIG) {
        p->pos = start;
        return json_err(p, -E2BIG, "string exceeds the limit of %d bytes", BOPTS_MAX_STRING);
    }
    return json_err(p, -EINVAL, "%s", msg);
}

/* Stores the current path with a leaf value. */
static int add_leaf(JsonParser *p, const char *value)
{
    const char *key = sb_str(&p->path);

    if (!key) {
        return oom(p);
    }
    return bopts_add(p->o, key, value, p->errp);
}

static int parse_literal(JsonParser *p)
{
    static const struct {
        const char *word;
        const char *value;
    } lits[] = { { "true", "on" }, { "false", "off" }, { "null", NULL } };

    for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
        size_t n = strlen(lits[i].word);

        if (p->len - p->pos >= n && memcmp(p->s + p->pos, lits[i].word, n) == 0) {
            if (!lits[i].value) {
                const char *k = sb_str(&p->path);

                error_setg(p->errp, "Parameter '%.*s%s' must not be null", k ? bopts_qlen(k) : 0,
                           k ? k : "", k ? bopts_qell(k) : "");
                return -EINVAL;
            }
            p->pos += n;
            return add_leaf(p, lits[i].value);
        }
    }
    return unexpected(p, "a value");
}

static int parse_number(JsonParser *p)
{
    size_t start = p->pos;
    size_t end;
    int ret;

    if (!json_scan_number(p->s, p->len, start, &end)) {
        p->pos = end;
        return json_err(p, -EINVAL, "invalid number");
    }
    sb_truncate(&p->str, 0);
    sb_put(&p->str, p->s + start, end - start);
    if (!sb_str(&p->str)) {
        return oom(p);
    }
    p->pos = end;
    ret = add_leaf(p, sb_str(&p->str));
    return ret;
}

static int enter(JsonParser *p)
{
    if (p->depth >= BOPTS_MAX_DEPTH) {
        error_setg(p->errp, "JSON nesting depth exceeds the limit of %d (at offset %zu)",
                   BOPTS_MAX_DEPTH, p->pos);
        return -E2BIG;
    }
    p->depth++;
    p->pos++;
    return 0;
}

/* Appends ".name" (or "name" at the root) to the path; returns the old length. */
static size_t push_path(JsonParser *p, const char *name, size_t n)
{
    size_t old = p->path.len;

    if (old) {
        sb_putc(&p->path, '.');
    }
    sb_put(&p->path, name, n);
    return old;
}

static int parse_member(JsonParser *p)
{
    size_t name_pos;
    size_t old;
    int ret;

    skip_ws(p);
    name_pos = p->pos;
    if (p->pos >= p->len || p->s[p->pos] != '"') {
        return unexpected(p, "a member name");
    }
    ret = parse_string_at(p, &p->str);
    if (ret < 0) {
        return ret;
    }
    if (p->str.len == 0) {
        p->pos = name_pos;
        return json_err(p, -EINVAL, "empty member name");
    }
    old = push_path(p, p->str.s, p->str.len);
    if (!consume(p, ':')) {
        return unexpected(p, "':'");
    }
    ret = parse_value(p);
    sb_truncate(&p->path, old);
    return ret;
}

static int parse_object(JsonParser *p)
{
    int ret = enter(p);

    if (ret < 0) {
        return ret;
    }
    if (consume(p, '}')) {
        p->depth--;
        return 0;
    }
    do {
        ret = parse_member(p);
        if (ret < 0) {
            return ret;
        }
    } while (consume(p, ','));
    if (!consume(p, '}')) {
        return unexpected(p, "',' or '}'");
    }
    p->depth--;
    return 0;
}

static int parse_array(JsonParser *p)
{
    char idx[24];
    size_t i = 0;
    size_t old;
    int ret = enter(p);

    if (ret < 0) {
        return ret;
    }
    if (consume(p, ']')) {
        p->depth--;
        return 0;
    }
    do {
        int n = snprintf(idx, sizeof(idx), "%zu", i++);

        old = push_path(p, idx, (size_t)n);
        ret = parse_value(p);
        sb_truncate(&p->path, old);
        if (ret < 0) {
            return ret;
        }
    } while (consume(p, ','));
    if (!consume(p, ']')) {
        return unexpected(p, "',' or ']'");
    }
    p->depth--;
    return 0;
}

static int parse_value(JsonParser *p)
{
    char c;
    int ret;

    skip_ws(p);
    if (p->pos >= p->len) {
        return unexpected(p, "a value");
    }
    c = p->s[p->pos];
    if (c == '{') {
        return parse_object(p);
    }
    if (c == '[') {
        return parse_array(p);
    }
    if (c == '"') {
        ret = parse_string_at(p, &p->str);
        return ret < 0 ? ret : add_leaf(p, p->str.s ? p->str.s : "");
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        return parse_number(p);
    }
    return parse_literal(p);
}

static int parse_document(JsonParser *p)
{
    int ret;

    skip_ws(p);
    if (p->pos >= p->len || p->s[p->pos] != '{') {
        return unexpected(p, "'{'");
    }
    ret = parse_object(p);
    if (ret < 0) {
        return ret;
    }
    skip_ws(p);
    if (p->pos < p->len) {
        return json_err(p, -EINVAL, "trailing characters after the object");
    }
    return bopts_check_conflicts(p->o, p->errp);
}

int bopts_parse_json(BlockOpts *o, const char *text, Error **errp)
{
    JsonParser p = { .s = text, .errp = errp };
    int ret;

    p.len = strnlen(text, BOPTS_MAX_INPUT + 1);
    if (p.len > BOPTS_MAX_INPUT) {
        error_setg(errp, "JSON text exceeds the limit of %d bytes", BOPTS_MAX_INPUT);
        return -E2BIG;
    }
    p.o = bopts_clone(o);
    if (!p.o) {
        return oom(&p);
    }
    sb_init(&p.path);
    sb_init(&p.str);
    ret = parse_document(&p);
    if (ret == 0) {
        bopts_swap(o, p.o);
    }
    sb_free(&p.path);
    sb_free(&p.str);
    bopts_free(p.o);
    return ret;
}

int bopts_parse_filename_json(BlockOpts *o, const char *filename, Error **errp)
{
    int ret;

    if (strncmp(filename, "json:", 5) != 0) {
        return 0;
    }
    ret = bopts_parse_json(o, filename + 5, errp);
    return ret < 0 ? ret : 1;
}
