/*
 * The VMDK text descriptor: header keys (version, CID, parentCID,
 * createType, parentFileNameHint), extent lines and the disk database
 * (ddb.*). Parsed from untrusted text: the caller caps the text at
 * VMDK_MAX_DESC_BYTES; here lines are capped at 4 KiB, extents at
 * VMDK_MAX_EXTENTS, numbers are range-checked and names length-checked.
 */
#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/format/vmdk/vmdk-int.h"
#include "block/opts-int.h"

#define VMDK_MAX_LINE 4096

typedef struct DescParse {
    VmdkDesc *d;
    const char *what;
    int line_no;
    bool has_cid, has_version;
} DescParse;

static char *trim(char *s)
{
    char *e;

    while (*s && isspace((unsigned char)*s)) {
        s++;
    }
    e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) {
        *--e = '\0';
    }
    return s;
}

/* Strips one pair of double quotes around s, in place. */
static char *unquote(char *s)
{
    size_t n = strlen(s);

    if (n >= 2 && s[0] == '"' && s[n - 1] == '"') {
        s[n - 1] = '\0';
        return s + 1;
    }
    return s;
}

static int parse_u64(const char *s, int base, uint64_t max, uint64_t *out)
{
    char *end;
    unsigned long long v;

    if (!*s || *s == '-' || isspace((unsigned char)*s)) {
        return -EINVAL;
    }
    errno = 0;
    v = strtoull(s, &end, base);
    if (errno || *end || v > max) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}

static int ext_type(const char *name, VmdkExtentType *t)
{
    if (!strcmp(name, "FLAT") || !strcmp(name, "VMFS")) {
        *t = VMDK_EXT_FLAT;
    } else if (!strcmp(name, "SPARSE")) {
        *t = VMDK_EXT_SPARSE;
    } else if (!strcmp(name, "ZERO")) {
        *t = VMDK_EXT_ZERO;
    } else {
        return -ENOTSUP;
    }
    return 0;
}

/* ACCESS SECTORS TYPE ["FILENAME" [OFFSET]] */
static int parse_extent(DescParse *p, char *line, Error **errp)
{
    VmdkDescExtent x = { 0 };
    char *tok[3], *save = NULL, *rest, *q;
    VmdkDescExtent *n;

    tok[0] = strtok_r(line, " \t", &save);
    tok[1] = strtok_r(NULL, " \t", &save);
    tok[2] = strtok_r(NULL, " \t", &save);
    rest = save ? trim(save) : (char *)"";
    if (!tok[0] || !tok[1] || !tok[2]) {
        error_setg(errp, "vmdk: %s: line %d: extent line needs access, size and type",
                   p->what, p->line_no);
        return -EINVAL;
    }
    x.access = !strcmp(tok[0], "RW") ? VMDK_ACCESS_RW
             : !strcmp(tok[0], "RDONLY") ? VMDK_ACCESS_RDONLY : VMDK_ACCESS_NOACCESS;
    if (parse_u64(tok[1], 10, (uint64_t)BDRV_MAX_LENGTH / VMDK_SECTOR, &x.sectors) < 0) {
        error_setg(errp, "vmdk: %s: line %d: extent size '%.32s' is not a sector count in "
                   "0..%" PRIu64, p->what, p->line_no, tok[1],
                   (uint64_t)BDRV_MAX_LENGTH / VMDK_SECTOR);
        return -EINVAL;
    }
    snprintf(x.type_name, sizeof(x.type_name), "%s", tok[2]);
    if (ext_type(tok[2], &x.type) < 0) {
        error_setg(errp, "vmdk: %s: line %d: extent type '%.32s' is not supported (FLAT, "
                   "VMFS, SPARSE and ZERO are)", p->what, p->line_no, tok[2]);
        return -ENOTSUP;
    }
    if (x.type != VMDK_EXT_ZERO) {
        if (rest[0] != '"' || !(q = strchr(rest + 1, '"')) || q == rest + 1) {
            error_setg(errp, "vmdk: %s: line %d: extent needs a quoted file name", p->what,
                       p->line_no);
            return -EINVAL;
        }
        *q = '\0';
        x.filename = strdup(rest + 1);
        rest = trim(q + 1);
        if (*rest && (x.type != VMDK_EXT_FLAT ||
                      parse_u64(rest, 10, (uint64_t)BDRV_MAX_LENGTH / VMDK_SECTOR,
                                &x.offset) < 0)) {
            error_setg(errp, "vmdk: %s: line %d: bad extent offset '%.32s'", p->what,
                       p->line_no, rest);
            free(x.filename);
            return -EINVAL;
        }
    }
    if (p->d->n_ext >= VMDK_MAX_EXTENTS) {
        error_setg(errp, "vmdk: %s: more than %d extents", p->what, VMDK_MAX_EXTENTS);
        free(x.filename);
        return -EINVAL;
    }
    n = realloc(p->d->ext, sizeof(*n) * (size_t)(p->d->n_ext + 1));
    if (!n || (x.type != VMDK_EXT_ZERO && !x.filename)) {
        free(x.filename);
        if (n) {
            p->d->ext = n;
        }
        error_setg(errp, "vmdk: out of memory");
        return -ENOMEM;
    }
    p->d->ext = n;
    n[p->d->n_ext++] = x;
    return 0;
}

static int parse_geometry(DescParse *p, const char *key, const char *v, uint32_t *out,
                          Error **errp)
{
    uint64_t n;

    if (parse_u64(v, 10, UINT32_MAX, &n) < 0) {
        error_setg(errp, "vmdk: %s: line %d: %s '%.32s' is not a number", p->what, p->line_no,
                   key, v);
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}

static int parse_ddb(DescParse *p, const char *key, const char *v, Error **errp)
{
    VmdkDesc *d = p->d;

    if (!strcmp(key, "ddb.adapterType")) {
        snprintf(d->adapter_type, sizeof(d->adapter_type), "%s", v);
    } else if (!strcmp(key, "ddb.virtualHWVersion")) {
        snprintf(d->hw_version, sizeof(d->hw_version), "%s", v);
    } else if (!strcmp(key, "ddb.toolsVersion")) {
        snprintf(d->tools_version, sizeof(d->tools_version), "%s", v);
    } else if (!strcmp(key, "ddb.geometry.cylinders")) {
        return parse_geometry(p, key, v, &d->cylinders, errp);
    } else if (!strcmp(key, "ddb.geometry.heads")) {
        return parse_geometry(p, key, v, &d->heads, errp);
    } else if (!strcmp(key, "ddb.geometry.sectors")) {
        return parse_geometry(p, key, v, &d->sectors_per_track, errp);
    }
    return 0; /* other keys (ddb.uuid, ddb.longContentID, ...) are kept in the text only */
}

static int parse_cid(DescParse *p, const char *key, const char *v, uint32_t *out,
                     Error **errp)
{
    uint64_t n;

    if (parse_u64(v, 16, UINT32_MAX, &n) < 0) {
        error_setg(errp, "vmdk: %s: line %d: %s '%.32s' is not a 32-bit hex number", p->what,
                   p->line_no, key, v);
        return -EINVAL;
    }
    *out = (uint32_t)n;
    return 0;
}

static int parse_key(DescParse *p, char *line, char *eq, Error **errp)
{
    VmdkDesc *d = p->d;
    char *key, *v;
    uint64_t n;

    *eq = '\0';
    key = trim(line);
    v = unquote(trim(eq + 1));
    if (!strcmp(key, "version")) {
        if (parse_u64(v, 10, 3, &n) < 0 || n == 0) {
            error_setg(errp, "vmdk: %s: descriptor version '%.32s' is not supported (1..3)",
                       p->what, v);
            return -ENOTSUP;
        }
        d->version = (uint32_t)n;
        p->has_version = true;
    } else if (!strcmp(key, "CID")) {
        p->has_cid = true;
        return parse_cid(p, key, v, &d->cid, errp);
    } else if (!strcmp(key, "parentCID")) {
        return parse_cid(p, key, v, &d->parent_cid, errp);
    } else if (!strcmp(key, "createType")) {
        if (strlen(v) >= sizeof(d->create_type)) {
            error_setg(errp, "vmdk: %s: createType '%.32s...' is too long", p->what, v);
            return -EINVAL;
        }
        snprintf(d->create_type, sizeof(d->create_type), "%s", v);
    } else if (!strcmp(key, "parentFileNameHint")) {
        free(d->parent_hint);
        d->parent_hint = strdup(v);
        if (!d->parent_hint) {
            return -ENOMEM;
        }
    } else if (!strncmp(key, "ddb.", 4)) {
        return parse_ddb(p, key, v, errp);
    }
    return 0;
}

static int parse_line(DescParse *p, char *line, Error **errp)
{
    char *eq;

    line = trim(line);
    if (!*line || *line == '#') {
        return 0;
    }
    if (!strncmp(line, "RW ", 3) || !strncmp(line, "RDONLY ", 7) ||
        !strncmp(line, "NOACCESS ", 9) || !strncmp(line, "RW\t", 3)) {
        return parse_extent(p, line, errp);
    }
    eq = strchr(line, '=');
    if (!eq) {
        error_setg(errp, "vmdk: %s: line %d: '%.40s' is neither a key=value pair nor an extent",
                   p->what, p->line_no, line);
        return -EINVAL;
    }
    return parse_key(p, line, eq, errp);
}

int vmdk_desc_parse(const char *text, size_t len, VmdkDesc *d, const char *what,
                    Error **errp)
{
    DescParse p = { .d = d, .what = what };
    char line[VMDK_MAX_LINE + 1];
    size_t pos = 0;
    int ret;

    memset(d, 0, sizeof(*d));
    d->cid = 0xffffffffU;
    d->parent_cid = 0xffffffffU;
    while (pos < len && text[pos]) {
        size_t n = 0;

        p.line_no++;
        while (pos < len && text[pos] && text[pos] != '\n') {
            if (n >= VMDK_MAX_LINE) {
                error_setg(errp, "vmdk: %s: line %d is longer than %d bytes", what, p.line_no,
                           VMDK_MAX_LINE);
                return -EINVAL;
            }
            line[n++] = text[pos++] == '\r' ? ' ' : text[pos - 1];
        }
        line[n] = '\0';
        pos++;
        ret = parse_line(&p, line, errp);
        if (ret < 0) {
            return ret;
        }
    }
    if (!d->create_type[0]) {
        error_setg(errp, "vmdk: %s: the descriptor has no createType", what);
        return -EINVAL;
    }
    if (!p.has_version) {
        d->version = 1;
    }
    return 0;
}

void vmdk_desc_free(VmdkDesc *d)
{
    for (int i = 0; i < d->n_ext; i++) {
        free(d->ext[i].filename);
    }
    free(d->ext);
    free(d->parent_hint);
    memset(d, 0, sizeof(*d));
}

static void COBLK_PRINTF(2, 3) sb_printf(StrBuf *sb, const char *fmt, ...)
{
    char buf[VMDK_MAX_LINE + 64];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n > 0) {
        sb_put(sb, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
    }
}

static const char *access_name(VmdkAccess a)
{
    return a == VMDK_ACCESS_RW ? "RW" : a == VMDK_ACCESS_RDONLY ? "RDONLY" : "NOACCESS";
}

char *vmdk_desc_format(const VmdkDesc *d)
{
    StrBuf sb;

    sb_init(&sb);
    sb_printf(&sb, "# Disk DescriptorFile\nversion=%u\nCID=%08x\nparentCID=%08x\n"
              "createType=\"%s\"\n", d->version, d->cid, d->parent_cid, d->create_type);
    if (d->parent_hint) {
        sb_printf(&sb, "parentFileNameHint=\"%s\"\n", d->parent_hint);
    }
    sb_printf(&sb, "\n# Extent description\n");
    for (int i = 0; i < d->n_ext; i++) {
        const VmdkDescExtent *x = &d->ext[i];

        sb_printf(&sb, "%s %" PRIu64 " %s", access_name(x->access), x->sectors, x->type_name);
        if (x->filename) {
            sb_printf(&sb, " \"%s\"", x->filename);
        }
        if (x->type == VMDK_EXT_FLAT) {
            sb_printf(&sb, " %" PRIu64, x->offset);
        }
        sb_printf(&sb, "\n");
    }
    sb_printf(&sb, "\n# The Disk Data Base\n#DDB\n\n");
    sb_printf(&sb, "ddb.virtualHWVersion = \"%s\"\n", d->hw_version);
    sb_printf(&sb, "ddb.geometry.cylinders = \"%u\"\nddb.geometry.heads = \"%u\"\n"
              "ddb.geometry.sectors = \"%u\"\n", d->cylinders, d->heads, d->sectors_per_track);
    sb_printf(&sb, "ddb.adapterType = \"%s\"\n", d->adapter_type);
    if (d->tools_version[0]) {
        sb_printf(&sb, "ddb.toolsVersion = \"%s\"\n", d->tools_version);
    }
    {
        const char *t = sb_str(&sb);
        char *out = t ? strdup(t) : NULL;

        sb_free(&sb);
        return out;
    }
}

char *vmdk_desc_set_cid(const char *text, uint32_t cid)
{
    const char *p = text;
    char *out;
    size_t head;
    const char *eol;

    while (*p) {
        const char *s = p;

        while (*s == ' ' || *s == '\t') {
            s++;
        }
        if (!strncmp(s, "CID", 3) && (s[3] == '=' || s[3] == ' ')) {
            break;
        }
        p = strchr(p, '\n');
        if (!p) {
            return NULL;
        }
        p++;
    }
    if (!*p) {
        return NULL;
    }
    head = (size_t)(p - text);
    eol = strchr(p, '\n');
    if (!eol) {
        eol = p + strlen(p);
    }
    out = malloc(head + 16 + strlen(eol) + 1);
    if (!out) {
        return NULL;
    }
    memcpy(out, text, head);
    sprintf(out + head, "CID=%08x%s", cid, eol);
    return out;
}

/* True if the trimmed line starting at s is an extent line (as parse_line sees them). */
static bool is_extent_line(const char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    return !strncmp(s, "RW ", 3) || !strncmp(s, "RDONLY ", 7) || !strncmp(s, "NOACCESS ", 9) ||
           !strncmp(s, "RW\t", 3);
}

char *vmdk_desc_rename_extents(const char *text, char *const *names, int n)
{
    StrBuf sb;
    const char *p = text, *t;
    char *out;
    int k = 0;

    sb_init(&sb);
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol + 1 : p + strlen(p);
        const char *q1 = memchr(p, '"', (size_t)(end - p));
        const char *q2 = q1 ? memchr(q1 + 1, '"', (size_t)(end - q1 - 1)) : NULL;
        bool ext = is_extent_line(p);

        if (ext && k < n && names[k] && q2) {
            sb_put(&sb, p, (size_t)(q1 + 1 - p));
            sb_puts(&sb, names[k]);
            sb_put(&sb, q2, (size_t)(end - q2));
        } else {
            sb_put(&sb, p, (size_t)(end - p));
        }
        k += ext;
        p = end;
    }
    t = sb_str(&sb);
    out = t ? strdup(t) : NULL;
    sb_free(&sb);
    return out;
}

char *vmdk_desc_resize(const char *text, int n, uint64_t sectors, uint32_t cyls)
{
    size_t cap = strlen(text) * 2 + 128, o = 0; /* a replaced line at most doubles */
    char *out = malloc(cap);
    const char *p = text;
    bool done = false;
    int seen = 0;

    if (!out) {
        return NULL;
    }
    while (*p) {
        const char *eol = strchr(p, '\n'), *l = p;
        size_t len = eol ? (size_t)(eol - p) + 1 : strlen(p);

        while (*l == ' ' || *l == '\t') {
            l++;
        }
        if (is_extent_line(l) && seen++ == n) {
            const char *num = l + strcspn(l, " \t"), *after;

            num += strspn(num, " \t");
            after = num + strspn(num, "0123456789");
            o += (size_t)snprintf(out + o, cap - o, "%.*s%" PRIu64, (int)(num - p), p, sectors);
            memcpy(out + o, after, len - (size_t)(after - p));
            o += len - (size_t)(after - p);
            done = true;
        } else if (!strncmp(l, "ddb.geometry.cylinders", 22) && cyls) {
            o += (size_t)snprintf(out + o, cap - o, "ddb.geometry.cylinders = \"%u\"%s", cyls,
                                  eol ? "\n" : "");
        } else {
            memcpy(out + o, p, len);
            o += len;
        }
        p += len;
    }
    out[o] = '\0';
    if (!done) {
        free(out);
        return NULL;
    }
    return out;
}

char *vmdk_desc_insert_extents(const char *text, int n, const char *lines)
{
    StrBuf sb;
    const char *p = text, *t;
    char *out;
    bool done = false;
    int seen = 0;

    sb_init(&sb);
    while (*p) {
        const char *eol = strchr(p, '\n');
        const char *end = eol ? eol + 1 : p + strlen(p);
        bool here = is_extent_line(p) && seen++ == n;

        sb_put(&sb, p, (size_t)(end - p));
        if (here) {
            if (!eol) {
                sb_puts(&sb, "\n");
            }
            sb_puts(&sb, lines);
            done = true;
        }
        p = end;
    }
    t = sb_str(&sb);
    out = t && done ? strdup(t) : NULL;
    sb_free(&sb);
    return out;
}
