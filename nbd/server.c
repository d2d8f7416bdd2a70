/*
 * The NBD server object: listeners, accepting connections, the connection
 * cap, the handshake timer, and the lifetime of each client (one main
 * coroutine that negotiates and then reads requests; the client is freed
 * when that coroutine and every request coroutine are done).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbd/server-int.h"
#include "nbd/tls.h"

#define NBD_DEFAULT_MAX_CONNECTIONS 100
#define NBD_DEFAULT_HANDSHAKE_NS (10LL * 1000 * 1000 * 1000)
#define NBD_DEFAULT_MAX_REQUESTS 64

/* TLS options: ON/REQUIRE need server credentials; authz needs an authenticated peer. */
static int server_check_tls(NbdServer *srv, Error **errp)
{
    NbdServerOpts *o = &srv->opts;

    if (o->tls_mode != NBD_TLS_OFF && o->tls_mode != NBD_TLS_ON &&
        o->tls_mode != NBD_TLS_REQUIRE) {
        error_setg(errp, "nbd: unknown TLS mode %d", (int)o->tls_mode);
        return -EINVAL;
    }
    if (o->tls_mode != NBD_TLS_OFF && !o->tls_creds) {
        error_setg(errp, "nbd: TLS enabled without credentials");
        return -EINVAL;
    }
    if (o->tls_creds && !nbd_tls_creds_is_server(o->tls_creds)) {
        error_setg(errp, "nbd: the TLS credentials are for a client, not a server");
        return -EINVAL;
    }
    if (o->tls_authz) {
        if (o->tls_mode == NBD_TLS_OFF || !nbd_tls_creds_verify_peer(o->tls_creds)) {
            error_setg(errp, "nbd: tls-authz needs TLS with PSK or with client certificate "
                       "verification (verify-peer)");
            return -EINVAL;
        }
        srv->tls_authz = strdup(o->tls_authz);
        if (!srv->tls_authz) {
            error_setg(errp, "nbd: out of memory");
            return -ENOMEM;
        }
    }
    o->tls_authz = NULL; /* the copy in srv->tls_authz is the one used */
    return 0;
}

NbdServer *nbd_server_new(AioContext *ctx, const NbdServerOpts *opts, Error **errp)
{
    NbdServer *srv = calloc(1, sizeof(*srv));

    if (!srv) {
        error_setg(errp, "nbd: out of memory");
        return NULL;
    }
    srv->ctx = ctx;
    if (opts) {
        srv->opts = *opts;
    }
    if (!srv->opts.max_connections) {
        srv->opts.max_connections = NBD_DEFAULT_MAX_CONNECTIONS;
    }
    if (srv->opts.handshake_timeout_ns <= 0) {
        srv->opts.handshake_timeout_ns = NBD_DEFAULT_HANDSHAKE_NS;
    }
    if (!srv->opts.max_requests) {
        srv->opts.max_requests = NBD_DEFAULT_MAX_REQUESTS;
    }
    if (server_check_tls(srv, errp) < 0) {
        free(srv->tls_authz);
        free(srv);
        return NULL;
    }
    return srv;
}

static void listener_close(NbdListener *l)
{
    aio_set_fd_handler(l->srv->ctx, l->fd, NULL, NULL, NULL, NULL, NULL);
    close(l->fd);
    if (l->unix_path) {
        unlink(l->unix_path);
        free(l->unix_path);
    }
    free(l);
}

void nbd_server_free(NbdServer *srv)
{
    if (!srv) {
        return;
    }
    srv->closing = true;
    while (srv->listeners) {
        NbdListener *l = srv->listeners;

        srv->listeners = l->next;
        listener_close(l);
    }
    for (NbdClient *c = srv->clients; c; c = c->next) {
        c->closing = true;
        nbd_chan_shutdown(&c->chan);
    }
    while (srv->nr_clients) {
        aio_poll(srv->ctx, true);
    }
    nbd_export_free_all(srv);
    free(srv->tls_authz);
    free(srv);
}

unsigned nbd_server_client_count(const NbdServer *srv)
{
    return srv->nr_clients;
}

unsigned long nbd_server_clients_served(const NbdServer *srv)
{
    return srv->served;
}

void nbd_server_set_client_event(NbdServer *srv, NbdClientEventFn *fn, void *opaque)
{
    srv->event_fn = fn;
    srv->event_opaque = opaque;
}

/* ---------------------------------------------------------------------- */
/* Clients */

static void client_free(NbdClient *c)
{
    NbdServer *srv = c->srv;

    for (NbdClient **pp = &srv->clients; *pp; pp = &(*pp)->next) {
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    }
    aio_timer_del(&c->handshake_timer);
    nbd_chan_close(&c->chan);
    nbd_client_free_reqs(c);
    free(c->meta_export);
    free(c);
    srv->nr_clients--;
    if (srv->event_fn) {
        srv->event_fn(srv->event_opaque, srv, false);
    }
}

void nbd_client_unref(NbdClient *c)
{
    if (--c->refcnt == 0) {
        client_free(c);
    }
}

/* The handshake took too long: shutting the socket down wakes the reader with an error. */
static void handshake_timeout(void *opaque)
{
    NbdClient *c = opaque;

    c->closing = true;
    nbd_chan_shutdown(&c->chan);
}

void nbd_client_enter_transmission(NbdClient *c, NbdExport *exp)
{
    NbdServer *srv = c->srv;

    aio_timer_del(&c->handshake_timer);
    c->exp = exp;
    c->in_transmission = true;
    c->session.size = (uint64_t)blk_getlength(exp->blk);
    c->session.tflags = nbd_export_tflags(exp, c->structured);
    c->session.structured = c->structured;
    c->session.has_meta = c->meta_base || c->meta_depth || c->meta_bitmap;
    srv->served++;
    if (srv->event_fn) {
        srv->event_fn(srv->event_opaque, srv, true);
    }
}

static void coroutine_fn client_main(void *opaque)
{
    NbdClient *c = opaque;

    if (nbd_handshake(c) == 0) {
        nbd_transmission(c);
    }
    c->closing = true;
    /* Requests still running hold references; wait for them before closing the socket. */
    while (c->in_flight) {
        c->drain_waiter = coroutine_self();
        coroutine_yield();
    }
    nbd_client_unref(c);
}

int nbd_server_add_client(NbdServer *srv, int fd, Error **errp)
{
    NbdClient *c;
    int ret;

    if (srv->closing || srv->nr_clients >= srv->opts.max_connections) {
        close(fd);
        error_setg(errp, "nbd: connection refused: %u clients connected (limit %u)",
                   srv->nr_clients, srv->opts.max_connections);
        return -EBUSY;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        close(fd);
        error_setg(errp, "nbd: out of memory");
        return -ENOMEM;
    }
    ret = nbd_chan_init(&c->chan, fd, srv->ctx);
    if (ret < 0) {
        close(fd);
        free(c);
        error_setg_errno(errp, ret, "nbd: cannot make the client socket non-blocking");
        return ret;
    }
    c->srv = srv;
    c->refcnt = 1;
    co_mutex_init(&c->send_lock);
    co_queue_init(&c->slots);
    c->next = srv->clients;
    srv->clients = c;
    srv->nr_clients++;
    aio_timer_init(&c->handshake_timer, srv->ctx, handshake_timeout, c);
    aio_timer_mod(&c->handshake_timer, aio_clock_ns() + srv->opts.handshake_timeout_ns);
    aio_co_enter(srv->ctx, coroutine_create(client_main, c));
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Listeners */

static void listener_accept(void *opaque)
{
    NbdListener *l = opaque;

    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        int one = 1;
        Error *err = NULL;

        if (fd < 0) {
            /* EAGAIN: drained; other errors (EMFILE...): retry on the next event. */
            return;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (nbd_server_add_client(l->srv, fd, &err) < 0) {
            coblk_warn("%s", error_get_pretty(err));
            error_free(err);
        }
    }
}

static int listener_add(NbdServer *srv, int fd, const char *unix_path, Error **errp)
{
    NbdListener *l = calloc(1, sizeof(*l));
    int fl = fcntl(fd, F_GETFL);
    int ret;

    if (!l || fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        free(l);
        close(fd);
        error_setg(errp, "nbd: cannot set up listening socket %d", fd);
        return -EINVAL;
    }
    l->srv = srv;
    l->fd = fd;
    l->unix_path = unix_path ? strdup(unix_path) : NULL;
    ret = aio_set_fd_handler(srv->ctx, fd, listener_accept, NULL, NULL, NULL, l);
    if (ret < 0) {
        free(l->unix_path);
        free(l);
        close(fd);
        error_setg_errno(errp, ret, "nbd: cannot watch listening socket");
        return ret;
    }
    l->next = srv->listeners;
    srv->listeners = l;
    return 0;
}

int nbd_server_listen_fd(NbdServer *srv, int fd, Error **errp)
{
    int acc = 0;
    socklen_t len = sizeof(acc);

    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc) {
        error_setg(errp, "nbd: fd %d is not a listening socket", fd);
        return -EINVAL;
    }
    return listener_add(srv, fd, NULL, errp);
}

int nbd_server_listen_unix(NbdServer *srv, const char *path, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "nbd: socket path '%s' is too long", path);
        return -ENAMETOOLONG;
    }
    strcpy(sun.sun_path, path);
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 128) < 0) {
        int e = -errno;

        if (fd >= 0) {
            close(fd);
        }
        error_setg_errno(errp, e, "nbd: cannot listen on '%s'", path);
        return e;
    }
    return listener_add(srv, fd, path, errp);
}

static int tcp_listen_one(const struct addrinfo *ai)
{
    int one = 1;
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);

    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
        int e = -errno;

        close(fd);
        return e;
    }
    return fd;
}

int nbd_server_listen_tcp(NbdServer *srv, const char *host, const char *port, Error **errp)
{
    struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM };
    struct addrinfo *res;
    int bound = 0, last = -EADDRNOTAVAIL;
    int gai = getaddrinfo(host, port, &hints, &res);

    if (gai) {
        error_setg(errp, "nbd: cannot resolve '%s' port '%s': %s", host ? host : "*", port,
                   gai_strerror(gai));
        return -EINVAL;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = tcp_listen_one(ai);

        if (fd < 0) {
            last = fd;
            continue;
        }
        if (listener_add(srv, fd, NULL, errp) < 0) {
            freeaddrinfo(res);
            return -EINVAL;
        }
        bound++;
    }
    freeaddrinfo(res);
    if (!bound) {
        error_setg_errno(errp, last, "nbd: cannot listen on '%s' port '%s'", host ? host : "*",
                         port);
        return last;
    }
    return 0;
}
