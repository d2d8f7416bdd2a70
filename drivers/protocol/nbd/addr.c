/*
 * Where the NBD server is: nbd://host[:port]/export, nbd+tcp://...,
 * nbd+unix:///export?socket=path, the legacy nbd:unix:path[:exportname=x]
 * and nbd:host:port[:exportname=x] strings, or the dotted options
 * server.type (inet/unix), server.host, server.port, server.path, export.
 * The nbds, nbds+tcp and nbds+unix schemes ask for TLS and take libnbd's
 * query parameters tls-certificates, tls-psk-file, tls-username and
 * tls-hostname; the options of the same names (which also turn TLS on)
 * override them.
 */
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "drivers/protocol/nbd/nbd-int.h"

void nbd_addr_free(NbdAddr *a)
{
    free(a->host);
    free(a->port);
    free(a->path);
    free(a->export_name);
    free(a->tls_dir);
    free(a->tls_psk);
    free(a->tls_user);
    free(a->tls_hostname);
    memset(a, 0, sizeof(*a));
}

static int hexval(int c)
{
    return isdigit(c) ? c - '0' : tolower(c) - 'a' + 10;
}

/* Copies s[0..len) decoding %XX escapes; NULL on a malformed escape. */
static char *pct_decode(const char *s, size_t len)
{
    char *out = malloc(len + 1), *o = out;

    for (size_t i = 0; out && i < len; i++) {
        if (s[i] != '%') {
            *o++ = s[i];
        } else if (i + 2 < len) {
            if (!isxdigit((unsigned char)s[i + 1]) || !isxdigit((unsigned char)s[i + 2])) {
                free(out);
                return NULL;
            }
            *o++ = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            if (o[-1] == '\0') {
                free(out);
                return NULL;
            }
            i += 2;
        } else {
            free(out);
            return NULL;
        }
    }
    if (out) {
        *o = '\0';
    }
    return out;
}

/* host[:port], [v6addr][:port] */
static int parse_authority(NbdAddr *a, const char *s, size_t len, Error **errp)
{
    const char *colon = NULL, *hs = s, *he;

    if (len && s[0] == '[') {
        const char *rb = memchr(s, ']', len);

        if (!rb) {
            error_setg(errp, "unterminated '[' in the server address");
            return -EINVAL;
        }
        hs = s + 1;
        he = rb;
        if (rb + 1 < s + len) {
            if (rb[1] != ':') {
                error_setg(errp, "junk after ']' in the server address");
                return -EINVAL;
            }
            colon = rb + 1;
        }
    } else {
        colon = memchr(s, ':', len);
        he = colon ? colon : s + len;
    }
    a->host = he > hs ? strndup(hs, (size_t)(he - hs)) : strdup("localhost");
    if (colon) {
        a->port = strndup(colon + 1, (size_t)(s + len - colon - 1));
        if (!a->port[0] || strspn(a->port, "0123456789") != strlen(a->port)) {
            error_setg(errp, "invalid port '%s'", a->port);
            return -EINVAL;
        }
    }
    return 0;
}

/* One query parameter: socket (nbd+unix), or the TLS ones (nbds schemes). */
static int query_param(NbdAddr *a, const char *k, size_t klen, const char *v, size_t vlen,
                       Error **errp)
{
    static const char *const tls_keys[] = { "tls-certificates", "tls-psk-file",
                                            "tls-username", "tls-hostname" };
    char **slots[] = { &a->tls_dir, &a->tls_psk, &a->tls_user, &a->tls_hostname };
    char **dst = NULL;

    if (klen == 6 && !memcmp(k, "socket", 6) && a->is_unix) {
        dst = &a->path;
    }
    for (int i = 0; i < 4 && !dst && a->tls; i++) {
        if (strlen(tls_keys[i]) == klen && !memcmp(k, tls_keys[i], klen)) {
            dst = slots[i];
        }
    }
    if (!dst || *dst) {
        error_setg(errp, "unexpected or repeated query parameter '%.*s' (nbd+unix:// takes "
                   "socket=PATH; nbds:// and nbds+unix:// also tls-certificates, "
                   "tls-psk-file, tls-username, tls-hostname)", (int)klen, k);
        return -EINVAL;
    }
    *dst = pct_decode(v, vlen);
    if (!*dst || !**dst) {
        error_setg(errp, "invalid value for '%.*s'", (int)klen, k);
        return -EINVAL;
    }
    return 0;
}

static int parse_query(NbdAddr *a, const char *q, Error **errp)
{
    while (*q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);

        if (!eq) {
            error_setg(errp, "query parameter '%.*s' has no value", (int)len, q);
            return -EINVAL;
        }
        if (query_param(a, q, (size_t)(eq - q), eq + 1, len - (size_t)(eq + 1 - q),
                        errp) < 0) {
            return -EINVAL;
        }
        q += len;
        q += *q == '&';
    }
    if (a->is_unix && !a->path) {
        error_setg(errp, "nbd+unix:// URLs need ?socket=PATH");
        return -EINVAL;
    }
    return 0;
}

static int parse_url(NbdAddr *a, const char *url, Error **errp)
{
    const char *rest, *auth_end, *path_end;

    a->tls = !strncmp(url, "nbds", 4);
    if (!strncmp(url, "nbd://", 6) || !strncmp(url, "nbd+tcp://", 10) ||
        !strncmp(url, "nbds://", 7) || !strncmp(url, "nbds+tcp://", 11)) {
        rest = strstr(url, "://") + 3;
    } else if (!strncmp(url, "nbd+unix://", 11) || !strncmp(url, "nbds+unix://", 12)) {
        a->is_unix = true;
        rest = strstr(url, "://") + 3;
    } else {
        error_setg(errp, "unsupported URL scheme in '%s' (nbd, nbd+tcp, nbd+unix, nbds, "
                   "nbds+tcp, nbds+unix)", url);
        return -EINVAL;
    }
    auth_end = rest + strcspn(rest, "/?");
    path_end = auth_end + strcspn(auth_end, "?");
    if (a->is_unix && auth_end != rest) {
        error_setg(errp, "nbd+unix:// URLs take no host ('%s')", url);
        return -EINVAL;
    }
    if (!a->is_unix && parse_authority(a, rest, (size_t)(auth_end - rest), errp) < 0) {
        return -EINVAL;
    }
    /* The export is the path without its leading '/'. */
    if (*auth_end == '/') {
        auth_end++;
    }
    a->export_name = pct_decode(auth_end, (size_t)(path_end - auth_end));
    if (!a->export_name) {
        error_setg(errp, "invalid export name in '%s'", url);
        return -EINVAL;
    }
    return parse_query(a, *path_end == '?' ? path_end + 1 : "", errp);
}

/* nbd:unix:PATH[:exportname=NAME] or nbd:HOST:PORT[:exportname=NAME] */
static int parse_legacy(NbdAddr *a, const char *str, Error **errp)
{
    char *s = strdup(str + 4);
    char *exp = s ? strstr(s, ":exportname=") : NULL;
    char *colon;
    int ret = 0;

    if (!s) {
        return -ENOMEM;
    }
    if (exp) {
        a->export_name = strdup(exp + 12);
        *exp = '\0';
    }
    if (!strncmp(s, "unix:", 5)) {
        a->is_unix = true;
        a->path = strdup(s + 5);
    } else if ((colon = strrchr(s, ':'))) {
        a->host = strndup(s, (size_t)(colon - s));
        a->port = strdup(colon + 1);
    } else {
        error_setg(errp, "cannot parse '%s' (nbd:unix:PATH or nbd:HOST:PORT)", str);
        ret = -EINVAL;
    }
    free(s);
    return ret;
}

static int addr_from_server_opts(NbdAddr *a, BlockOpts *o, Error **errp)
{
    char *type = NULL;
    int ret = bopts_take_str(o, "server.type", &type, errp);

    if (ret < 0 || bopts_take_str(o, "server.host", &a->host, errp) < 0 ||
        bopts_take_str(o, "server.port", &a->port, errp) < 0 ||
        bopts_take_str(o, "server.path", &a->path, errp) < 0) {
        free(type);
        return -EINVAL;
    }
    if (type && !strcmp(type, "unix")) {
        a->is_unix = true;
    } else if (type && strcmp(type, "inet")) {
        error_setg(errp, "server.type '%s' is not 'inet' or 'unix'", type);
        free(type);
        return -EINVAL;
    } else if (!type && a->path && !a->host) {
        a->is_unix = true;
    }
    free(type);
    if ((a->is_unix && (!a->path || a->host || a->port)) || (!a->is_unix && (!a->host ||
                                                                             a->path))) {
        error_setg(errp, "give server.path for unix, or server.host (and server.port) "
                   "for inet");
        return -EINVAL;
    }
    return 0;
}

int nbd_addr_from_opts(NbdAddr *a, BlockOpts *o, Error **errp)
{
    char *filename = NULL, *exp = NULL;
    int ret;

    memset(a, 0, sizeof(*a));
    if (bopts_take_str(o, "filename", &filename, errp) < 0 ||
        bopts_take_str(o, "export", &exp, errp) < 0) {
        return -EINVAL;
    }
    if (filename) {
        if (bopts_has(o, "server.type") || bopts_has(o, "server.host") ||
            bopts_has(o, "server.path") || bopts_has(o, "server.port")) {
            error_setg(errp, "a URL and server.* options are mutually exclusive");
            ret = -EINVAL;
        } else if (!strncmp(filename, "nbd:", 4) && strncmp(filename, "nbd://", 6)) {
            ret = parse_legacy(a, filename, errp);
        } else {
            ret = parse_url(a, filename, errp);
        }
    } else {
        ret = addr_from_server_opts(a, o, errp);
    }
    free(filename);
    if (ret == 0 && exp) {
        free(a->export_name);
        a->export_name = exp;
        exp = NULL;
    }
    free(exp);
    if (ret == 0 && !a->export_name) {
        a->export_name = strdup("");
    }
    if (ret == 0 && strlen(a->export_name) > NBD_MAX_STRING) {
        error_setg(errp, "export name longer than %u bytes", NBD_MAX_STRING);
        ret = -EINVAL;
    }
    if (ret < 0) {
        nbd_addr_free(a);
    }
    return ret;
}

static int connect_unix(const char *path, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "socket path '%s' is too long", path);
        return -ENAMETOOLONG;
    }
    strcpy(sun.sun_path, path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = -errno;

        if (fd >= 0) {
            close(fd);
        }
        error_setg_errno(errp, e, "cannot connect to '%s'", path);
        return e;
    }
    return fd;
}

static int connect_inet(const char *host, const char *port, Error **errp)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM };
    struct addrinfo *res;
    int fd = -ECONNREFUSED, one = 1;
    int gai = getaddrinfo(host, port, &hints, &res);

    if (gai) {
        error_setg(errp, "cannot resolve '%s': %s", host, gai_strerror(gai));
        return -EINVAL;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        int e = errno;

        if (fd >= 0) {
            close(fd);
        }
        fd = e ? -e : -ECONNREFUSED;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, fd, "cannot connect to '%s' port %s", host, port);
        return fd;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

int nbd_addr_connect(const NbdAddr *a, Error **errp)
{
    char port[16];

    if (a->is_unix) {
        return connect_unix(a->path, errp);
    }
    snprintf(port, sizeof(port), "%d", NBD_DEFAULT_PORT);
    return connect_inet(a->host, a->port ? a->port : port, errp);
}
