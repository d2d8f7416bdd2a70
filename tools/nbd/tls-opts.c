/*
 * coblk-nbd's TLS options (see tls-opts.h). As qemu-nbd, TLS credentials
 * make TLS mandatory (--tls=require, FORCEDTLS) unless --tls=on lets
 * plaintext clients in too; an --object tls-creds-x509 verifies client
 * certificates unless verify-peer=off (qemu's default), while the short
 * --tls-creds=DIR does so only with --tls-verify-peer (nbdkit's default).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tls-opts.h"

static const char *const object_types[] = { "tls-creds-x509", "tls-creds-psk", "authz-simple",
                                            NULL };

int tool_tls_add_object(ToolTls *t, const char *spec, Error **errp)
{
    BlockOpts *o = bopts_new();
    const char *type;
    bool known = false;

    if (t->nobjects == TOOL_TLS_MAX_OBJECTS) {
        bopts_free(o);
        error_setg(errp, "too many --object options (at most %d)", TOOL_TLS_MAX_OBJECTS);
        return -EINVAL;
    }
    if (bopts_parse_keyval(o, spec, "qom-type", errp) < 0) {
        bopts_free(o);
        return -EINVAL;
    }
    type = bopts_get(o, "qom-type");
    for (int i = 0; type && object_types[i]; i++) {
        known |= !strcmp(type, object_types[i]);
    }
    if (!known || !bopts_get(o, "id")) {
        error_setg(errp, "--object %s: only tls-creds-x509, tls-creds-psk and authz-simple "
                   "objects with an id are supported", spec);
        bopts_free(o);
        return -EINVAL;
    }
    t->objects[t->nobjects++] = o;
    return 0;
}

static BlockOpts *find_object(ToolTls *t, const char *id)
{
    for (int i = 0; i < t->nobjects; i++) {
        if (!strcmp(bopts_get(t->objects[i], "id"), id)) {
            return t->objects[i];
        }
    }
    return NULL;
}

/* Credentials from an --object: endpoint must be server; x509 verify-peer defaults to on. */
static NbdTlsCreds *creds_from_object(BlockOpts *o, Error **errp)
{
    const char *type = bopts_get(o, "qom-type"), *id = bopts_get(o, "id");
    const char *dir = bopts_get(o, "dir"), *ep = bopts_get(o, "endpoint");
    const char *verify = bopts_get(o, "verify-peer");
    char path[4096];

    if (!strcmp(type, "authz-simple")) {
        error_setg(errp, "--tls-creds=%s names an authz-simple object", id);
        return NULL;
    }
    if (!dir || (ep && strcmp(ep, "server"))) {
        error_setg(errp, "--object %s,id=%s needs dir= and endpoint=server", type, id);
        return NULL;
    }
    if (!strcmp(type, "tls-creds-psk")) {
        if ((size_t)snprintf(path, sizeof(path), "%s/keys.psk", dir) >= sizeof(path)) {
            error_setg(errp, "--object %s: dir is too long", id);
            return NULL;
        }
        return nbd_tls_creds_new_psk(path, true, NULL, errp);
    }
    if (verify && strcmp(verify, "on") && strcmp(verify, "off") && strcmp(verify, "yes") &&
        strcmp(verify, "no")) {
        error_setg(errp, "--object %s: verify-peer must be on or off", id);
        return NULL;
    }
    return nbd_tls_creds_new_x509(dir, true,
                                  !verify || !strcmp(verify, "on") || !strcmp(verify, "yes"),
                                  errp);
}

static int load_creds(ToolTls *t, Error **errp)
{
    struct stat st;
    BlockOpts *o;

    if (t->creds && t->psk) {
        error_setg(errp, "--tls-creds and --tls-psk are mutually exclusive");
        return -EINVAL;
    }
    if (t->psk) {
        t->made = nbd_tls_creds_new_psk(t->psk, true, NULL, errp);
    } else if ((o = find_object(t, t->creds))) {
        t->made = creds_from_object(o, errp);
    } else if (stat(t->creds, &st) == 0 && S_ISDIR(st.st_mode)) {
        t->made = nbd_tls_creds_new_x509(t->creds, true, t->verify_peer, errp);
    } else {
        error_setg(errp, "--tls-creds=%s: no --object with that id, and not a directory",
                   t->creds);
        return -ENOENT;
    }
    return t->made ? 0 : -EINVAL;
}

int tool_tls_setup(ToolTls *t, NbdServerOpts *so, Error **errp)
{
    bool have = t->creds || t->psk;
    int ret;

    if (!have) {
        if ((t->mode && strcmp(t->mode, "off")) || t->authz || t->verify_peer) {
            error_setg(errp, "--tls, --tls-authz and --tls-verify-peer need --tls-creds or "
                       "--tls-psk");
            return -EINVAL;
        }
        return 0;
    }
    if (t->mode && strcmp(t->mode, "on") && strcmp(t->mode, "require")) {
        error_setg(errp, "--tls=%s: with credentials, use on or require", t->mode);
        return -EINVAL;
    }
    ret = load_creds(t, errp);
    if (ret < 0) {
        return ret;
    }
    so->tls_creds = t->made;
    so->tls_mode = t->mode && !strcmp(t->mode, "on") ? NBD_TLS_ON : NBD_TLS_REQUIRE;
    if (t->authz) {
        BlockOpts *a = find_object(t, t->authz);

        if (a && strcmp(bopts_get(a, "qom-type"), "authz-simple")) {
            error_setg(errp, "--tls-authz=%s does not name an authz-simple object", t->authz);
            return -EINVAL;
        }
        if (a && !bopts_get(a, "identity")) {
            error_setg(errp, "--object authz-simple,id=%s needs identity=", t->authz);
            return -EINVAL;
        }
        so->tls_authz = a ? bopts_get(a, "identity") : t->authz;
    }
    return 0;
}

void tool_tls_free(ToolTls *t)
{
    for (int i = 0; i < t->nobjects; i++) {
        bopts_free(t->objects[i]);
    }
    t->nobjects = 0;
    nbd_tls_creds_free(t->made);
    t->made = NULL;
}
