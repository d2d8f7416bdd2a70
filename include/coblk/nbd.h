/*
 * coblk - an NBD server that exports BlockBackends from an embedder's
 * AioContext (the NBD protocol document: fixed newstyle handshake,
 * structured replies, block status with base:allocation and
 * qemu:allocation-depth).
 *
 * Every client runs as coroutines on the server's AioContext: one reads
 * requests, one per request does the I/O and sends the reply. Sockets are
 * non-blocking and driven by fd handlers; there is no thread per client.
 * All functions are called from the context's thread.
 *
 * Misbehaving clients (oversized options or requests, bad magic, too many
 * options, a stalled handshake) get an error reply or are disconnected; the
 * other clients carry on.
 */
#ifndef COBLK_NBD_H
#define COBLK_NBD_H

#include <coblk/block.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct NbdServer NbdServer;

/**
 * TLS credentials for the NBD server or client (GnuTLS). One object serves
 * any number of connections; it must outlive the servers and sessions that
 * use it.
 */
typedef struct NbdTlsCreds NbdTlsCreds;

/** TLS policy of a server (the NBD protocol document's TLS modes). */
typedef enum NbdTlsMode {
    NBD_TLS_OFF = 0,  /**< NOTLS: NBD_OPT_STARTTLS is refused (NBD_REP_ERR_POLICY) */
    NBD_TLS_ON,       /**< clients may upgrade with NBD_OPT_STARTTLS or stay in plaintext */
    NBD_TLS_REQUIRE,  /**< FORCEDTLS: every option but STARTTLS and ABORT needs TLS first */
} NbdTlsMode;

/** Whether this build has TLS (GnuTLS); without it the constructors below fail. */
COBLK_API bool nbd_tls_available(void);
/**
 * X.509 credentials from a directory laid out as qemu's tls-creds-x509 and
 * nbdkit's --tls-certificates: ca-cert.pem, optional ca-crl.pem, and
 * server-cert.pem + server-key.pem (server) or client-cert.pem +
 * client-key.pem (client, optional). A server with verify_peer asks for and
 * checks a client certificate against ca-cert.pem; a client always checks
 * the server's (dir NULL: against the system's trusted CAs).
 */
COBLK_API NbdTlsCreds *nbd_tls_creds_new_x509(const char *dir, bool server, bool verify_peer,
                                              Error **errp);
/**
 * Pre-shared keys from a file in psktool's format (one "username:hexkey" a
 * line). A server accepts every user in the file; a client uses username's
 * key (NULL: the first line's user).
 */
COBLK_API NbdTlsCreds *nbd_tls_creds_new_psk(const char *file, bool server,
                                             const char *username, Error **errp);
COBLK_API void nbd_tls_creds_free(NbdTlsCreds *creds);

/** Server options; zero-initialise, then set fields. */
typedef struct NbdServerOpts {
    /** Most clients connected at once (0: 100). Extra connections are closed at once. */
    unsigned max_connections;
    /** Time a client has to finish the handshake in ns (0: 10 s). */
    int64_t handshake_timeout_ns;
    /** Most requests in flight per client (0: 64). */
    unsigned max_requests;
    /** TLS policy; ON and REQUIRE need tls_creds (a server endpoint). */
    NbdTlsMode tls_mode;
    const NbdTlsCreds *tls_creds;
    /**
     * Only this peer may connect after TLS (NULL: any peer the credentials
     * accept): the client certificate's distinguished name in RFC 4514 form
     * ("CN=client,O=Example", needs verify_peer) or the PSK username.
     */
    const char *tls_authz;
} NbdServerOpts;

/** Export options; zero-initialise, then set fields. */
typedef struct NbdExportOpts {
    const char *name;          /**< export name (NULL: "", the default export) */
    const char *description;   /**< NULL: none */
    bool read_only;            /**< refuse writes even if the BlockBackend allows them */
    bool allocation_depth;     /**< offer the qemu:allocation-depth metadata context */
    /**
     * Advertise NBD_FLAG_CAN_MULTI_CONN: -1 auto (always safe here: every
     * connection shares one BlockBackend, so a flush on one covers all),
     * 0 off, 1 on.
     */
    int multi_conn;
    /**
     * A persistent dirty bitmap of the image offered as the metadata context
     * "qemu:dirty-bitmap:NAME" (NBD_STATE_DIRTY = 1 per range), or NULL.
     */
    const char *bitmap;
} NbdExportOpts;

/** Called when a client finishes its handshake (connected) and when it is gone. */
typedef void NbdClientEventFn(void *opaque, NbdServer *srv, bool connected);

/** Creates a server running in ctx. Returns NULL with errp set on failure. */
COBLK_API NbdServer *nbd_server_new(AioContext *ctx, const NbdServerOpts *opts, Error **errp);
/**
 * Closes the listeners, disconnects every client (their in-flight requests
 * finish first) and frees the server. Polls the context until the clients
 * are gone. The exported BlockBackends are not freed.
 */
COBLK_API void nbd_server_free(NbdServer *srv);

/** Exports blk (which must outlive the server). Names are unique, <= 4096 bytes. */
COBLK_API int nbd_server_add_export(NbdServer *srv, BlockBackend *blk,
                                    const NbdExportOpts *opts, Error **errp);

/** Listens on a Unix socket path (an existing socket file is replaced). */
COBLK_API int nbd_server_listen_unix(NbdServer *srv, const char *path, Error **errp);
/** Listens on TCP host:port (host NULL: every address). */
COBLK_API int nbd_server_listen_tcp(NbdServer *srv, const char *host, const char *port,
                                    Error **errp);
/** Takes over an already listening socket (for example from systemd's LISTEN_FDS). */
COBLK_API int nbd_server_listen_fd(NbdServer *srv, int fd, Error **errp);
/** Serves one already connected socket (takes ownership of fd, even on failure). */
COBLK_API int nbd_server_add_client(NbdServer *srv, int fd, Error **errp);

/** Clients connected now (in handshake or transmission). */
COBLK_API unsigned nbd_server_client_count(const NbdServer *srv);
/** Clients that completed a handshake since the server started. */
COBLK_API unsigned long nbd_server_clients_served(const NbdServer *srv);
COBLK_API void nbd_server_set_client_event(NbdServer *srv, NbdClientEventFn *fn, void *opaque);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_NBD_H */
