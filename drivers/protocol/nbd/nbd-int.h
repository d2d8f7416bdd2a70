/*
 * The nbd protocol driver (an NBD client), split by concern:
 *   addr.c       nbd:// URLs, legacy nbd: strings and dotted server.* options
 *   negotiate.c  the handshake at open (fixed newstyle, structured replies,
 *                base:allocation, NBD_OPT_GO with an EXPORT_NAME fallback)
 *   io.c         transmission: requests from many coroutines, one reader
 *                coroutine dispatching replies by cookie
 *   nbd.c        the driver tables and callbacks
 * The wire format and parsers are shared with the server (nbd/nbd-proto.h).
 */
#ifndef COBLK_DRIVERS_NBD_INT_H
#define COBLK_DRIVERS_NBD_INT_H

#include <coblk/block-driver.h>

#include "nbd/chan.h"
#include "nbd/tls.h"
#include "nbd/nbd-proto.h"

/* Requests in flight per connection. */
#define NBD_CLIENT_MAX_REQS 64

typedef struct NbdAddr {
    bool is_unix;
    char *host;     /* inet */
    char *port;     /* inet; NULL: 10809 */
    char *path;     /* unix */
    char *export_name;
    /* TLS (nbds schemes or tls-* options) */
    bool tls;
    char *tls_dir;          /* x509: CA (and client certificate) directory */
    char *tls_psk;          /* psktool keys file */
    char *tls_user;         /* PSK username (NULL: the file's first) */
    char *tls_hostname;     /* name the certificate must carry (NULL: inet host) */
} NbdAddr;

typedef struct NbdClientReq {
    Coroutine *co;
    bool in_use;
    bool done;
    uint64_t cookie;
    uint16_t type;
    uint64_t offset;
    uint32_t len;
    IOVector *qiov;         /* READ destination */
    size_t qiov_offset;
    int ret;
    uint64_t covered;       /* READ bytes received (data and holes) */
    bool lost;              /* failed because the connection was lost */
    bool status_have;       /* BLOCK_STATUS: first extent of base:allocation */
    uint32_t status_len;
    uint32_t status_flags;
} NbdClientReq;

/* One connection to the server: its socket, its requests and its reader. */
typedef struct NbdConn {
    const NbdAddr *addr;
    const NbdTlsCreds *tls;     /* NULL: plaintext */
    AioContext *ctx;
    NbdChan chan;
    NbdExportInfo info;
    bool structured;
    bool have_base;
    uint32_t base_id;

    CoMutex send_lock;
    CoQueue free_slots;
    unsigned in_flight;
    uint16_t gen;
    NbdClientReq reqs[NBD_CLIENT_MAX_REQS];
    bool reader_running;
    bool dead;
    bool stopping;              /* closing: no reconnection */
    int64_t reconnect_delay_ns; /* 0: a lost connection stays lost */
} NbdConn;

/* Reconnection: attempts every 200 ms, each handshake bounded; requests re-check every 50 ms. */
#define NBD_RECONNECT_STEP_NS (200LL * 1000 * 1000)
#define NBD_RECONNECT_HANDSHAKE_NS (10LL * 1000 * 1000 * 1000)
#define NBD_RETRY_STEP_NS (50LL * 1000 * 1000)

/* Most connections to one export (option "connections", when the server allows it). */
#define NBD_MAX_CONNS 16

typedef struct BDRVNbdState {
    NbdAddr addr;
    NbdTlsCreds *tls;           /* NULL: plaintext */
    NbdExportInfo info;         /* from the first connection */
    bool have_base;
    int64_t reconnect_delay_ns; /* option reconnect-delay (seconds) */
    unsigned nconns;
    NbdConn *conns[NBD_MAX_CONNS];
} BDRVNbdState;

/* addr.c */
int nbd_addr_from_opts(NbdAddr *a, BlockOpts *options, Error **errp);
void nbd_addr_free(NbdAddr *a);
/* Connects a blocking socket; returns the fd or -errno with errp set. */
int nbd_addr_connect(const NbdAddr *a, Error **errp);

/* negotiate.c: the handshake on c->chan, from a coroutine. */
int coroutine_fn nbd_negotiate(NbdConn *c, Error **errp);

/* io.c */
void nbd_conn_start_reader(NbdConn *c);
/* Sends NBD_CMD_DISC, shuts the socket down, waits for the reader, closes the fd. */
void nbd_conn_stop(NbdConn *c);
int coroutine_fn nbd_client_request(BlockDriverState *bs, uint16_t type, uint16_t flags,
                                    uint64_t offset, uint32_t len, IOVector *qiov,
                                    size_t qiov_offset, NbdClientReq *result);

#endif /* COBLK_DRIVERS_NBD_INT_H */
