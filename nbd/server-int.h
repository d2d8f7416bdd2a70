/*
 * Internals of the NBD server, split one file per concern:
 *   server.c     the server object, listeners, accepting and client lifetime
 *   export.c     exports: lookup and the flags each advertises
 *   handshake.c  greeting and the option loop (limits, timeout)
 *   options.c    one handler per option (GO/INFO/LIST/EXPORT_NAME/...)
 *   meta.c       metadata contexts (LIST/SET_META_CONTEXT)
 *   requests.c   transmission: reading, checking and running requests
 *   replies.c    simple and structured replies
 *   tls.c        TLS credentials and sessions (shared with the client driver)
 */
#ifndef COBLK_NBD_SERVER_INT_H
#define COBLK_NBD_SERVER_INT_H

#include <coblk/nbd.h>

#include "nbd/chan.h"
#include "nbd/nbd-proto.h"

typedef struct NbdExport NbdExport;
typedef struct NbdClient NbdClient;
typedef struct NbdListener NbdListener;
typedef struct NbdReq NbdReq;

struct NbdExport {
    NbdExport *next;
    char *name;
    char *description;          /* NULL: none */
    BlockBackend *blk;
    bool read_only;
    bool allocation_depth;
    bool multi_conn;
    char *bitmap;               /* exported dirty bitmap, or NULL */
    char *bitmap_ctx;           /* "qemu:dirty-bitmap:" + bitmap */
};

struct NbdListener {
    NbdListener *next;
    NbdServer *srv;
    int fd;
    char *unix_path;            /* unlinked at close */
};

/* Metadata context ids handed to clients. */
enum {
    NBD_META_ID_BASE = 1,
    NBD_META_ID_DEPTH = 2,
    NBD_META_ID_BITMAP = 3,
};

struct NbdClient {
    NbdClient *next;
    NbdServer *srv;
    NbdChan chan;
    int refcnt;                 /* the main coroutine and each request coroutine */
    bool closing;               /* stop reading requests; set on errors and DISC */
    bool in_transmission;

    /* negotiated */
    NbdExport *exp;
    bool no_zeroes;
    bool structured;
    bool meta_base;
    bool meta_depth;
    bool meta_bitmap;
    char *meta_export;          /* export the contexts were set for */
    unsigned nr_options;
    NbdSession session;

    AioTimer handshake_timer;
    CoMutex send_lock;
    unsigned in_flight;
    uint64_t inflight_bytes;    /* payload bytes of the requests in flight */
    CoQueue slots;              /* the reader waits here when max_requests are in flight */
    Coroutine *drain_waiter;    /* main coroutine waiting for in_flight == 0 */
    NbdReq *free_reqs;          /* request records kept for reuse (requests.c) */
    size_t cached_bytes;        /* buffer bytes held by free_reqs */
};

struct NbdServer {
    AioContext *ctx;
    NbdServerOpts opts;
    NbdExport *exports;
    NbdListener *listeners;
    NbdClient *clients;
    unsigned nr_clients;
    unsigned long served;
    bool closing;
    NbdClientEventFn *event_fn;
    void *event_opaque;
    char *tls_authz;            /* copy of opts.tls_authz (NULL: any peer) */
};

/* export.c */
NbdExport *nbd_export_find(NbdServer *srv, const char *name, uint32_t len);
uint16_t nbd_export_tflags(const NbdExport *exp, bool structured);
void nbd_export_free_all(NbdServer *srv);

/* server.c */
void nbd_client_unref(NbdClient *c);
/* Called once the handshake chose an export (leaves handshake mode). */
void nbd_client_enter_transmission(NbdClient *c, NbdExport *exp);

/* handshake.c: 0 when transmission starts, -errno to drop the client. */
int coroutine_fn nbd_handshake(NbdClient *c);

/* options.c */
int coroutine_fn nbd_opt_reply(NbdClient *c, uint32_t opt, uint32_t type, const void *data,
                               uint32_t len);
int coroutine_fn nbd_opt_error(NbdClient *c, uint32_t opt, uint32_t type, const char *msg);
/* Handles one option: 1 when transmission starts, 0 to go on, -errno to drop. */
int coroutine_fn nbd_handle_option(NbdClient *c, uint32_t opt, const uint8_t *data,
                                   uint32_t len);

/* meta.c */
int coroutine_fn nbd_opt_meta_context(NbdClient *c, uint32_t opt, const uint8_t *data,
                                      uint32_t len);

/* requests.c: runs until DISC, an error or shutdown. */
void coroutine_fn nbd_transmission(NbdClient *c);
void nbd_client_free_reqs(NbdClient *c);

/* replies.c; all take send_lock themselves. -errno means the connection is broken. */
int coroutine_fn nbd_send_simple(NbdClient *c, uint64_t cookie, uint32_t nbd_err,
                                 const void *data, size_t len);
int coroutine_fn nbd_send_chunk(NbdClient *c, uint64_t cookie, uint16_t flags, uint16_t type,
                                const void *payload, size_t plen, const void *data,
                                size_t dlen);
int coroutine_fn nbd_send_error(NbdClient *c, uint64_t cookie, uint32_t nbd_err,
                                const char *msg);
/* A reply to a request without data: simple or a structured NONE/ERROR chunk. */
int coroutine_fn nbd_send_result(NbdClient *c, uint64_t cookie, int ret, const char *msg);

#endif /* COBLK_NBD_SERVER_INT_H */
