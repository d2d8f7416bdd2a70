/*
 * TLS for NBD channels (GnuTLS): credentials (include/coblk/nbd.h), the
 * handshake after NBD_OPT_STARTTLS and the record I/O behind nbd_chan_*.
 * Shared by the server (nbd/options.c) and the client driver
 * (drivers/protocol/nbd/negotiate.c).
 */
#ifndef COBLK_NBD_TLS_H
#define COBLK_NBD_TLS_H

#include <coblk/nbd.h>

#include "nbd/chan.h"

/** Whether the credentials are for the server end. */
bool nbd_tls_creds_is_server(const NbdTlsCreds *creds);
/** Whether a handshake with these credentials authenticates the peer (PSK, verify-peer). */
bool nbd_tls_creds_verify_peer(const NbdTlsCreds *creds);

/**
 * Runs the TLS handshake on ch (the NBD_REP_ACK to NBD_OPT_STARTTLS has
 * been sent or received): the coroutine yields whenever the socket is not
 * ready, so the caller's handshake timer bounds it. On success every later
 * nbd_chan_* call is encrypted. hostname (client only): the name the
 * server certificate must carry (NULL: the chain is checked, not the name).
 */
int coroutine_fn nbd_tls_start(NbdChan *ch, const NbdTlsCreds *creds, const char *hostname,
                               Error **errp);
/** The authenticated peer (certificate DN in RFC 4514 form, or PSK username), or NULL. */
char *nbd_tls_peer_name(NbdChan *ch);

/* chan.c, when ch->tls is set */
int coroutine_fn nbd_tls_readv(NbdChan *ch, struct iovec *iov, int niov);
int coroutine_fn nbd_tls_writev(NbdChan *ch, struct iovec *iov, int niov);
/** Frees the session. */
void nbd_tls_end(NbdChan *ch);
/** Sends close_notify if the socket takes it now (never waits); the peer sees a clean end. */
void nbd_tls_bye(NbdChan *ch);

#endif /* COBLK_NBD_TLS_H */
