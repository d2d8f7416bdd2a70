/*
 * TLS for NBD (see tls.h): GnuTLS sessions over the channel's non-blocking
 * socket. GnuTLS reads and writes the fd itself; GNUTLS_E_AGAIN makes the
 * coroutine wait on the direction gnutls_record_get_direction() names, so a
 * handshake or a record never blocks the AioContext. Bytes GnuTLS has
 * already decrypted are returned before any wait, so a wait only happens
 * when the kernel has nothing either.
 *
 * Credentials come from local files the operator names (not from the
 * peer), but are still bounded: a PSK file is read up to 64 KiB, usernames
 * up to 255 bytes and keys up to 256 bytes (512 hex digits), and every line
 * must be "username:hexkey". Certificates and keys are parsed by GnuTLS.
 *
 * Plaintext a client sends after NBD_OPT_STARTTLS in the same packet is
 * not buffered by the channel (it reads exact lengths from the socket), so
 * it reaches GnuTLS as a malformed record and fails the handshake.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coblk-config.h"
#include "nbd/tls.h"

#if COBLK_HAVE_GNUTLS

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>

#define PSK_FILE_MAX (64 * 1024)
#define PSK_USER_MAX 255
#define PSK_KEY_HEX_MAX 512
/* One TLS record's worth of gathered small writes. */
#define TLS_GATHER 16384

struct NbdTlsCreds {
    bool server;
    bool verify_peer;        /* server: a client certificate is required and checked */
    bool psk;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
};

bool nbd_tls_available(void)
{
    return true;
}

bool nbd_tls_creds_is_server(const NbdTlsCreds *creds)
{
    return creds->server;
}

bool nbd_tls_creds_verify_peer(const NbdTlsCreds *creds)
{
    return creds && creds->verify_peer;
}

void nbd_tls_creds_free(NbdTlsCreds *c)
{
    if (!c) {
        return;
    }
    if (c->x509) {
        gnutls_certificate_free_credentials(c->x509);
    }
    if (c->psk_server) {
        gnutls_psk_free_server_credentials(c->psk_server);
    }
    if (c->psk_client) {
        gnutls_psk_free_client_credentials(c->psk_client);
    }
    free(c);
}

static bool file_exists(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0;
}

/* dir/name into buf; false (errp set) when too long. */
static bool join(char *buf, size_t size, const char *dir, const char *name, Error **errp)
{
    if ((size_t)snprintf(buf, size, "%s/%s", dir, name) >= size) {
        error_setg(errp, "tls: path '%s/%s' is too long", dir, name);
        return false;
    }
    return true;
}

/* Loads dir/ca-cert.pem (and ca-crl.pem when present) as the trusted CAs. */
static int load_ca(NbdTlsCreds *c, const char *dir, Error **errp)
{
    char path[4096];
    int r;

    if (!join(path, sizeof(path), dir, "ca-cert.pem", errp)) {
        return -ENAMETOOLONG;
    }
    if (!file_exists(path)) {
        error_setg(errp, "tls: CA certificate '%s' not found", path);
        return -ENOENT;
    }
    r = gnutls_certificate_set_x509_trust_file(c->x509, path, GNUTLS_X509_FMT_PEM);
    if (r <= 0) {
        error_setg(errp, "tls: cannot load CA certificate '%s': %s", path,
                   r == 0 ? "no certificate in the file" : gnutls_strerror(r));
        return -EINVAL;
    }
    if (!join(path, sizeof(path), dir, "ca-crl.pem", errp)) {
        return -ENAMETOOLONG;
    }
    if (file_exists(path)) {
        r = gnutls_certificate_set_x509_crl_file(c->x509, path, GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            error_setg(errp, "tls: cannot load CRL '%s': %s", path, gnutls_strerror(r));
            return -EINVAL;
        }
    }
    return 0;
}

/* Loads dir/<who>-cert.pem and dir/<who>-key.pem; optional ones may be absent (returns 0). */
static int load_cert(NbdTlsCreds *c, const char *dir, const char *who, bool optional,
                     Error **errp)
{
    char cert[4096], key[4096], name[32];
    int r;

    snprintf(name, sizeof(name), "%s-cert.pem", who);
    if (!join(cert, sizeof(cert), dir, name, errp)) {
        return -ENAMETOOLONG;
    }
    snprintf(name, sizeof(name), "%s-key.pem", who);
    if (!join(key, sizeof(key), dir, name, errp)) {
        return -ENAMETOOLONG;
    }
    if (optional && !file_exists(cert) && !file_exists(key)) {
        return 0;
    }
    if (!file_exists(cert) || !file_exists(key)) {
        error_setg(errp, "tls: '%s' and '%s' are both needed", cert, key);
        return -ENOENT;
    }
    r = gnutls_certificate_set_x509_key_file(c->x509, cert, key, GNUTLS_X509_FMT_PEM);
    if (r < 0) {
        error_setg(errp, "tls: cannot load '%s' with key '%s': %s", cert, key,
                   gnutls_strerror(r));
        return -EINVAL;
    }
    return 0;
}

NbdTlsCreds *nbd_tls_creds_new_x509(const char *dir, bool server, bool verify_peer,
                                    Error **errp)
{
    NbdTlsCreds *c = calloc(1, sizeof(*c));
    int r;

    if (!c || gnutls_certificate_allocate_credentials(&c->x509) < 0) {
        free(c);
        error_setg(errp, "tls: out of memory");
        return NULL;
    }
    c->server = server;
    c->verify_peer = server ? verify_peer : true;
    if (server && !dir) {
        error_setg(errp, "tls: a server needs a certificate directory");
        goto fail;
    }
    if (dir) {
        r = load_ca(c, dir, errp);
    } else {
        r = gnutls_certificate_set_x509_system_trust(c->x509);
        if (r <= 0) {
            error_setg(errp, "tls: no system CA certificates (%s); give a directory",
                       r == 0 ? "none found" : gnutls_strerror(r));
            r = -ENOENT;
        }
    }
    if (r >= 0 && dir) {
        r = load_cert(c, dir, server ? "server" : "client", !server, errp);
    }
    if (r < 0) {
        goto fail;
    }
    if (server) {
        gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_MEDIUM);
    }
    return c;

fail:
    nbd_tls_creds_free(c);
    return NULL;
}

/* Reads a whole PSK file (at most PSK_FILE_MAX bytes) as a NUL-terminated string. */
static char *read_psk_file(const char *file, Error **errp)
{
    FILE *f = fopen(file, "r");
    char *buf = malloc(PSK_FILE_MAX + 2);
    size_t n;

    if (!f || !buf) {
        error_setg_errno(errp, f ? -ENOMEM : -errno, "tls: cannot read PSK file '%s'",
                         file);
        if (f) {
            fclose(f);
        }
        free(buf);
        return NULL;
    }
    n = fread(buf, 1, PSK_FILE_MAX + 1, f);
    fclose(f);
    if (n > PSK_FILE_MAX) {
        error_setg(errp, "tls: PSK file '%s' is larger than %d bytes", file, PSK_FILE_MAX);
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/*
 * Checks every line of a psktool file and finds username's line (NULL: the
 * first). *user and *key point into buf. Returns the number of entries.
 */
static int parse_psk(char *buf, const char *file, const char *username, char **user,
                     char **key, Error **errp)
{
    int n = 0, lineno = 0;

    *user = *key = NULL;
    for (char *line = buf, *next; line && *line; line = next) {
        char *colon;
        size_t ulen, klen;

        next = strchr(line, '\n');
        if (next) {
            *next++ = '\0';
        }
        lineno++;
        if (!*line) {
            continue;
        }
        colon = strchr(line, ':');
        ulen = colon ? (size_t)(colon - line) : 0;
        klen = colon ? strlen(colon + 1) : 0;
        if (!colon || !ulen || ulen > PSK_USER_MAX || !klen || klen > PSK_KEY_HEX_MAX ||
            klen % 2 || strspn(colon + 1, "0123456789abcdefABCDEF") != klen) {
            error_setg(errp, "tls: PSK file '%s' line %d is not 'username:hexkey' "
                       "(username 1-%d bytes, key up to %d hex digits)", file, lineno,
                       PSK_USER_MAX, PSK_KEY_HEX_MAX);
            return -EINVAL;
        }
        *colon = '\0';
        if (!*user && (!username || !strcmp(username, line))) {
            *user = line;
            *key = colon + 1;
        }
        n++;
    }
    if (!n) {
        error_setg(errp, "tls: PSK file '%s' has no keys", file);
        return -EINVAL;
    }
    return n;
}

NbdTlsCreds *nbd_tls_creds_new_psk(const char *file, bool server, const char *username,
                                   Error **errp)
{
    NbdTlsCreds *c = calloc(1, sizeof(*c));
    char *buf = read_psk_file(file, errp);
    char *user, *key;
    int r = -ENOMEM;

    if (!c || !buf) {
        if (buf) {
            error_setg(errp, "tls: out of memory");
        }
        goto fail;
    }
    c->server = server;
    c->verify_peer = true;
    c->psk = true;
    r = parse_psk(buf, file, server ? NULL : username, &user, &key, errp);
    if (r >= 0 && !server && !user) {
        error_setg(errp, "tls: no key for user '%s' in PSK file '%s'", username, file);
        r = -ENOENT;
    }
    if (r < 0) {
        goto fail;
    }
    if (server) {
        r = gnutls_psk_allocate_server_credentials(&c->psk_server);
        if (r == 0) {
            r = gnutls_psk_set_server_credentials_file(c->psk_server, file);
        }
        if (r == 0) {
            gnutls_psk_set_server_known_dh_params(c->psk_server, GNUTLS_SEC_PARAM_MEDIUM);
        }
    } else {
        gnutls_datum_t k = { .data = (unsigned char *)key, .size = (unsigned)strlen(key) };

        r = gnutls_psk_allocate_client_credentials(&c->psk_client);
        if (r == 0) {
            r = gnutls_psk_set_client_credentials(c->psk_client, user, &k, GNUTLS_PSK_KEY_HEX);
        }
    }
    if (r < 0) {
        error_setg(errp, "tls: PSK credentials from '%s': %s", file, gnutls_strerror(r));
        goto fail;
    }
    free(buf);
    return c;

fail:
    free(buf);
    nbd_tls_creds_free(c);
    return NULL;
}

/* ---------------------------------------------------------------------- */
/* Sessions */

/* Waits for the direction GnuTLS last needed after GNUTLS_E_AGAIN. */
static int coroutine_fn tls_wait(NbdChan *ch)
{
    return nbd_chan_wait(ch, gnutls_record_get_direction(ch->tls) == 1);
}

static int tls_errno(ssize_t r)
{
    switch (r) {
    case GNUTLS_E_PREMATURE_TERMINATION:
    case GNUTLS_E_PULL_ERROR:
        return -EPIPE;
    case GNUTLS_E_PUSH_ERROR:
        return -ECONNRESET;
    case GNUTLS_E_MEMORY_ERROR:
        return -ENOMEM;
    default:
        return -EIO;
    }
}

static int session_new(NbdChan *ch, const NbdTlsCreds *c, const char *hostname, Error **errp)
{
    gnutls_session_t s;
    struct in6_addr a6;
    const char *pos;
    int r = gnutls_init(&s, (c->server ? GNUTLS_SERVER : GNUTLS_CLIENT) | GNUTLS_NONBLOCK |
                        GNUTLS_NO_SIGNAL);

    if (r < 0) {
        error_setg(errp, "tls: cannot create a session: %s", gnutls_strerror(r));
        return -ENOMEM;
    }
    ch->tls = s;
    if (c->psk) {
        r = gnutls_set_default_priority_append(s, "+ECDHE-PSK:+DHE-PSK:+PSK", &pos, 0);
        if (r == 0) {
            r = gnutls_credentials_set(s, GNUTLS_CRD_PSK, c->server ? (void *)c->psk_server :
                                       (void *)c->psk_client);
        }
    } else {
        r = gnutls_set_default_priority(s);
        if (r == 0) {
            r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->x509);
        }
        if (r == 0 && c->server && c->verify_peer) {
            gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
            gnutls_session_set_verify_cert(s, NULL, 0);
        } else if (r == 0 && !c->server) {
            /* SNI carries names only, never address literals. */
            if (hostname && inet_pton(AF_INET, hostname, &a6) != 1 &&
                inet_pton(AF_INET6, hostname, &a6) != 1) {
                r = gnutls_server_name_set(s, GNUTLS_NAME_DNS, hostname, strlen(hostname));
            }
            gnutls_session_set_verify_cert(s, hostname, 0);
        }
    }
    if (r < 0) {
        error_setg(errp, "tls: cannot set up the session: %s", gnutls_strerror(r));
        return -EINVAL;
    }
    ch->tls_buf = malloc(TLS_GATHER);
    if (!ch->tls_buf) {
        error_setg(errp, "tls: out of memory");
        return -ENOMEM;
    }
    gnutls_transport_set_int(s, ch->fd);
    return 0;
}

/* A failed handshake: name the certificate problem when there is one. */
static void handshake_error(NbdChan *ch, int r, Error **errp)
{
    gnutls_datum_t msg = { 0 };

    if (r == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
        gnutls_certificate_verification_status_print(
            gnutls_session_get_verify_cert_status(ch->tls), GNUTLS_CRT_X509, &msg, 0) == 0) {
        error_setg(errp, "tls: handshake failed: the peer's certificate is not trusted: %s",
                   (const char *)msg.data);
        gnutls_free(msg.data);
        return;
    }
    error_setg(errp, "tls: handshake failed: %s", gnutls_strerror(r));
}

int coroutine_fn nbd_tls_start(NbdChan *ch, const NbdTlsCreds *creds, const char *hostname,
                               Error **errp)
{
    int ret = session_new(ch, creds, hostname, errp);

    while (ret == 0) {
        int r = gnutls_handshake(ch->tls);

        if (r == 0) {
            return 0;
        }
        if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
            ret = tls_wait(ch);
            if (ret < 0) {
                error_setg_errno(errp, ret, "tls: handshake failed");
            }
        } else if (gnutls_error_is_fatal(r)) {
            handshake_error(ch, r, errp);
            ret = -EPROTO;
        }
        /* else a warning alert: go on */
    }
    nbd_tls_end(ch);
    return ret;
}

char *nbd_tls_peer_name(NbdChan *ch)
{
    gnutls_session_t s = ch->tls;
    const gnutls_datum_t *peers;
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = { 0 };
    unsigned n = 0;
    char *name = NULL;

    if (!s) {
        return NULL;
    }
    if (gnutls_auth_get_type(s) == GNUTLS_CRD_PSK) {
        const char *u = gnutls_psk_server_get_username(s);

        return u ? strdup(u) : NULL;
    }
    peers = gnutls_certificate_get_peers(s, &n);
    if (!peers || !n || gnutls_x509_crt_init(&crt) < 0) {
        return NULL;
    }
    if (gnutls_x509_crt_import(crt, &peers[0], GNUTLS_X509_FMT_DER) == 0 &&
        gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
        name = strndup((const char *)dn.data, dn.size);
        gnutls_free(dn.data);
    }
    gnutls_x509_crt_deinit(crt);
    return name;
}

/* Sends len bytes, retrying a partly sent record with the same arguments after a wait. */
static int coroutine_fn tls_send(NbdChan *ch, const uint8_t *p, size_t len)
{
    while (len) {
        ssize_t n = gnutls_record_send(ch->tls, p, len);

        if (n > 0) {
            p += n;
            len -= (size_t)n;
        } else if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
            int ret = tls_wait(ch);

            if (ret < 0) {
                return ret;
            }
        } else {
            return tls_errno(n);
        }
    }
    return 0;
}

int coroutine_fn nbd_tls_writev(NbdChan *ch, struct iovec *iov, int niov)
{
    size_t fill = 0;
    int ret = 0;

    /* Small pieces (headers) are gathered so that a reply is one record, not several. */
    for (int i = 0; i < niov && ret == 0; i++) {
        const uint8_t *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;

        if (!len) {
            continue;
        }
        if (len <= TLS_GATHER - fill) {
            memcpy(ch->tls_buf + fill, p, len);
            fill += len;
            continue;
        }
        if (fill) {
            ret = tls_send(ch, ch->tls_buf, fill);
            fill = 0;
        }
        if (ret == 0) {
            ret = tls_send(ch, p, len);
        }
    }
    if (ret == 0 && fill) {
        ret = tls_send(ch, ch->tls_buf, fill);
    }
    return ret;
}

int coroutine_fn nbd_tls_readv(NbdChan *ch, struct iovec *iov, int niov)
{
    for (int i = 0; i < niov; i++) {
        uint8_t *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;

        while (len) {
            ssize_t n = gnutls_record_recv(ch->tls, p, len);

            if (n > 0) {
                p += n;
                len -= (size_t)n;
            } else if (n == 0) {
                return -EPIPE;
            } else if (n == GNUTLS_E_AGAIN || n == GNUTLS_E_INTERRUPTED) {
                int ret = tls_wait(ch);

                if (ret < 0) {
                    return ret;
                }
            } else {
                return tls_errno(n);
            }
        }
    }
    return 0;
}

void nbd_tls_bye(NbdChan *ch)
{
    if (ch->tls) {
        gnutls_bye(ch->tls, GNUTLS_SHUT_WR); /* non-blocking: one try, errors ignored */
    }
}

void nbd_tls_end(NbdChan *ch)
{
    if (ch->tls) {
        gnutls_deinit(ch->tls);
        ch->tls = NULL;
    }
    free(ch->tls_buf);
    ch->tls_buf = NULL;
}

#else /* !COBLK_HAVE_GNUTLS: TLS requests fail with a clear error */

#define NO_TLS "TLS is not available: coblk was built without GnuTLS"

bool nbd_tls_available(void)
{
    return false;
}

bool nbd_tls_creds_is_server(const NbdTlsCreds *creds)
{
    return false;
}

bool nbd_tls_creds_verify_peer(const NbdTlsCreds *creds)
{
    return false;
}

NbdTlsCreds *nbd_tls_creds_new_x509(const char *dir, bool server, bool verify_peer,
                                    Error **errp)
{
    error_setg(errp, NO_TLS);
    return NULL;
}

NbdTlsCreds *nbd_tls_creds_new_psk(const char *file, bool server, const char *username,
                                   Error **errp)
{
    error_setg(errp, NO_TLS);
    return NULL;
}

void nbd_tls_creds_free(NbdTlsCreds *creds)
{
}

int coroutine_fn nbd_tls_start(NbdChan *ch, const NbdTlsCreds *creds, const char *hostname,
                               Error **errp)
{
    error_setg(errp, NO_TLS);
    return -ENOTSUP;
}

char *nbd_tls_peer_name(NbdChan *ch)
{
    return NULL;
}

int coroutine_fn nbd_tls_readv(NbdChan *ch, struct iovec *iov, int niov)
{
    return -ENOTSUP;
}

int coroutine_fn nbd_tls_writev(NbdChan *ch, struct iovec *iov, int niov)
{
    return -ENOTSUP;
}

void nbd_tls_end(NbdChan *ch)
{
}

void nbd_tls_bye(NbdChan *ch)
{
}

#endif /* COBLK_HAVE_GNUTLS */
