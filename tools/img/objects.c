/*
 * --object for coblk-img and coblk-io (qemu-img/qemu-io syntax:
 * --object TYPE,id=ID,key=value...). Supported types:
 *
 *  - secret,id=ID,data=STRING|file=PATH[,format=raw|base64]: checked (one of
 *    data/file, the file readable) and kept. No coblk
 *    driver takes a secret yet (no encryption, no password options): an
 *    image option naming one fails in the driver as an unknown option.
 *    Secrets encrypted with keyid=/iv= are refused.
 *  - tls-creds-x509,id=ID,dir=DIR[,endpoint=client][,verify-peer=on] and
 *    tls-creds-psk,id=ID,dir=DIR[,username=NAME][,endpoint=client]: an image
 *    option tls-creds=ID (at any level: file.tls-creds=ID) becomes the NBD
 *    client's tls-certificates=DIR, or tls-psk-file=DIR/keys.psk with
 *    tls-username (default "qemu", as qemu). Clients always verify the
 *    server: verify-peer=off is refused.
 *
 * Anything else fails with a message naming the type.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "img.h"

#define MAX_OBJECTS 32

/* "coblk-img: msg" or "coblk-io: msg" (shared by both tools). */
static void obj_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void obj_error(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fprintf(stderr, "%s: ", program_invocation_short_name);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static BlockOpts *objects[MAX_OBJECTS];
static int nobjects;

static void objects_free(void)
{
    for (int i = 0; i < nobjects; i++) {
        bopts_free(objects[i]);
    }
    nobjects = 0;
}

static const char *opt(const BlockOpts *o, const char *key)
{
    return bopts_get(o, key);
}

static int check_secret(const BlockOpts *o, const char *id)
{
    const char *data = opt(o, "data"), *file = opt(o, "file"), *fmt = opt(o, "format");

    if (opt(o, "keyid") || opt(o, "iv")) {
        obj_error("--object secret,id=%s: encrypted secrets (keyid=, iv=) are not supported",
                  id);
        return -1;
    }
    if (!data == !file) {
        obj_error("--object secret,id=%s: exactly one of data= and file= is needed", id);
        return -1;
    }
    if (fmt && strcmp(fmt, "raw") && strcmp(fmt, "base64")) {
        obj_error("--object secret,id=%s: format must be raw or base64, not '%s'", id, fmt);
        return -1;
    }
    if (file && access(file, R_OK) < 0) {
        obj_error("--object secret,id=%s: cannot read '%s': %s", id, file, strerror(errno));
        return -1;
    }
    return 0;
}

static int check_tls(const BlockOpts *o, const char *type, const char *id)
{
    const char *ep = opt(o, "endpoint"), *vp = opt(o, "verify-peer");

    if (!opt(o, "dir")) {
        obj_error("--object %s,id=%s: dir= is needed", type, id);
        return -1;
    }
    if (ep && strcmp(ep, "client")) {
        obj_error("--object %s,id=%s: endpoint must be client in coblk-img/coblk-io", type, id);
        return -1;
    }
    if (vp && (!strcmp(vp, "off") || !strcmp(vp, "no") || !strcmp(vp, "false"))) {
        obj_error("--object %s,id=%s: verify-peer=off is not supported (the NBD client always "
                  "verifies the server)", type, id);
        return -1;
    }
    return 0;
}

int img_object_add(const char *spec)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    const char *type, *id;
    int ret = -1;

    if (bopts_parse_keyval(o, spec, "qom-type", &err) < 0) {
        obj_error("--object %s: %s", spec, error_get_pretty(err));
        error_free(err);
        goto out;
    }
    type = opt(o, "qom-type");
    id = opt(o, "id");
    if (!type || !id || !*id) {
        obj_error("--object %s: a type and an id are needed", spec);
        goto out;
    }
    for (int i = 0; i < nobjects; i++) {
        if (!strcmp(opt(objects[i], "id"), id)) {
            obj_error("--object %s: duplicate id '%s'", spec, id);
            goto out;
        }
    }
    if (!strcmp(type, "secret")) {
        ret = check_secret(o, id);
    } else if (!strcmp(type, "tls-creds-x509") || !strcmp(type, "tls-creds-psk")) {
        ret = check_tls(o, type, id);
    } else {
        obj_error("--object %s: object type '%s' is not supported (only secret, "
                  "tls-creds-x509 and tls-creds-psk)", spec, type);
    }
    if (ret == 0 && nobjects == MAX_OBJECTS) {
        obj_error("too many --object options (at most %d)", MAX_OBJECTS);
        ret = -1;
    }
    if (ret == 0) {
        if (nobjects == 0) {
            atexit(objects_free);
        }
        objects[nobjects++] = o;
        return 0;
    }
out:
    bopts_free(o);
    return -1;
}

static const BlockOpts *find(const char *id)
{
    for (int i = 0; i < nobjects; i++) {
        if (!strcmp(opt(objects[i], "id"), id)) {
            return objects[i];
        }
    }
    return NULL;
}

/* Sets prefix + key = value. */
static void set_prefixed(BlockOpts *opts, const char *prefix, size_t plen, const char *key,
                         const char *value)
{
    char k[256];

    snprintf(k, sizeof(k), "%.*s%s", (int)plen, prefix, key);
    bopts_set(opts, k, value);
}

/* One tls-creds=ID option at key (prefix + "tls-creds"): replaced by the NBD options. */
static int apply_tls(BlockOpts *opts, const char *key)
{
    size_t plen = strlen(key) - strlen("tls-creds");
    char *id = strdup(bopts_get(opts, key)), path[4096];
    const BlockOpts *o = find(id);
    const char *type = o ? opt(o, "qom-type") : NULL;
    int ret = -1;

    if (!o || !strncmp(type, "secret", 6)) {
        obj_error("%s=%s: no tls-creds object with that id (give it with --object)", key, id);
        goto out;
    }
    if (!strcmp(type, "tls-creds-x509")) {
        set_prefixed(opts, key, plen, "tls-certificates", opt(o, "dir"));
    } else {
        if ((size_t)snprintf(path, sizeof(path), "%s/keys.psk", opt(o, "dir")) >= sizeof(path)) {
            obj_error("--object %s: dir is too long", id);
            goto out;
        }
        set_prefixed(opts, key, plen, "tls-psk-file", path);
        set_prefixed(opts, key, plen, "tls-username",
                     opt(o, "username") ? opt(o, "username") : "qemu");
    }
    bopts_del(opts, key);
    ret = 0;
out:
    free(id);
    return ret;
}

int img_objects_apply_name(BlockOpts *opts, const char **filename, Error **errp)
{
    int ret = *filename ? bopts_parse_filename_json(opts, *filename, errp) : 0;

    if (ret < 0) {
        return -1;
    }
    if (ret == 1) {
        *filename = NULL;
    }
    return 0;
}

int img_objects_apply(BlockOpts *opts)
{
    for (size_t i = 0; i < bopts_count(opts);) {
        const char *k = bopts_key_at(opts, i);
        size_t n = strlen(k), t = strlen("tls-creds");

        if (n >= t && !strcmp(k + n - t, "tls-creds") && (n == t || k[n - t - 1] == '.')) {
            if (apply_tls(opts, k) < 0) {
                return -1;
            }
            i = 0; /* the option list changed */
            continue;
        }
        i++;
    }
    return 0;
}
