/*
 * coblk-nbd's TLS options: qemu-nbd's --object tls-creds-x509 /
 * tls-creds-psk / authz-simple with --tls-creds=ID and --tls-authz=ID, and
 * the shorter --tls-creds=DIR, --tls-psk=FILE, --tls=on|require,
 * --tls-verify-peer, --tls-authz=NAME.
 */
#ifndef COBLK_TOOLS_NBD_TLS_OPTS_H
#define COBLK_TOOLS_NBD_TLS_OPTS_H

#include <coblk/coblk.h>

#define TOOL_TLS_MAX_OBJECTS 8

typedef struct ToolTls {
    BlockOpts *objects[TOOL_TLS_MAX_OBJECTS];   /* --object, parsed */
    int nobjects;
    const char *creds;      /* --tls-creds: an --object id or an x509 directory */
    const char *psk;        /* --tls-psk: a psktool keys file */
    const char *authz;      /* --tls-authz: an authz-simple id or the identity itself */
    const char *mode;       /* --tls: on, require (default require with credentials) */
    bool verify_peer;       /* --tls-verify-peer (for --tls-creds=DIR) */
    NbdTlsCreds *made;      /* freed by tool_tls_free() */
} ToolTls;

/** Records one --object (0, or -EINVAL with errp set). */
int tool_tls_add_object(ToolTls *t, const char *spec, Error **errp);
/** Loads the credentials and fills the TLS fields of so (0, or -errno with errp set). */
int tool_tls_setup(ToolTls *t, NbdServerOpts *so, Error **errp);
void tool_tls_free(ToolTls *t);

#endif /* COBLK_TOOLS_NBD_TLS_OPTS_H */
