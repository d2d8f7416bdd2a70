/*
 * Handshake options, one handler each. Malformed option data gets
 * NBD_REP_ERR_INVALID and the handshake goes on; an unknown export gets
 * NBD_REP_ERR_UNKNOWN (or, for NBD_OPT_EXPORT_NAME, which has no error
 * reply, a disconnect).
 *
 * TLS (the protocol document's TLS section): with tls_mode OFF,
 * NBD_OPT_STARTTLS gets NBD_REP_ERR_POLICY. ON accepts it at any point
 * before TLS (SELECTIVETLS with no TLS-only export); REQUIRE (FORCEDTLS)
 * answers every other option before TLS with NBD_REP_ERR_TLS_REQD except
 * NBD_OPT_ABORT, and drops a client that sends NBD_OPT_EXPORT_NAME. A
 * second STARTTLS gets NBD_REP_ERR_INVALID. At STARTTLS everything
 * negotiated in plaintext is forgotten (CVE-2021-3716: structured replies,
 * metadata contexts, their export), so the TLS session starts fresh.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "nbd/server-int.h"
#include "nbd/tls.h"

/* Block sizes advertised: byte-granular (the block layer pads), 4 KiB preferred. */
#define NBD_PREF_BLOCK 4096u

int coroutine_fn nbd_opt_reply(NbdClient *c, uint32_t opt, uint32_t type, const void *data,
                               uint32_t len)
{
    uint8_t h[NBD_OPT_REPLY_SIZE];
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)data, .iov_len = len },
    };

    st_be64(h, NBD_REP_MAGIC);
    st_be32(h + 8, opt);
    st_be32(h + 12, type);
    st_be32(h + 16, len);
    return nbd_chan_writev(&c->chan, iov, 2);
}

int coroutine_fn nbd_opt_error(NbdClient *c, uint32_t opt, uint32_t type, const char *msg)
{
    return nbd_opt_reply(c, opt, type, msg, msg ? (uint32_t)strlen(msg) : 0);
}

/* NBD_REP_SERVER for one export: name length, name, then the description. */
static int coroutine_fn send_server_entry(NbdClient *c, const NbdExport *e)
{
    size_t nlen = strlen(e->name), dlen = e->description ? strlen(e->description) : 0;
    uint8_t *buf = malloc(4 + nlen + dlen);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    st_be32(buf, (uint32_t)nlen);
    memcpy(buf + 4, e->name, nlen);
    if (dlen) {
        memcpy(buf + 4 + nlen, e->description, dlen);
    }
    ret = nbd_opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, (uint32_t)(4 + nlen + dlen));
    free(buf);
    return ret;
}

static int coroutine_fn opt_list(NbdClient *c, uint32_t len)
{
    if (len) {
        return nbd_opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "NBD_OPT_LIST has no data");
    }
    for (NbdExport *e = c->srv->exports; e; e = e->next) {
        int ret = send_server_entry(c, e);

        if (ret < 0) {
            return ret;
        }
    }
    return nbd_opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

/* One NBD_REP_INFO with a 16-bit type followed by bytes. */
static int coroutine_fn send_info_string(NbdClient *c, uint32_t opt, uint16_t type,
                                         const char *s)
{
    size_t len = strlen(s);
    uint8_t *buf = malloc(2 + len);
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    st_be16(buf, type);
    memcpy(buf + 2, s, len);
    ret = nbd_opt_reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + len));
    free(buf);
    return ret;
}

static int coroutine_fn send_infos(NbdClient *c, uint32_t opt, const NbdExport *e,
                                   const NbdGoQuery *q)
{
    uint8_t ex[12], bs[14];
    int ret;

    st_be16(ex, NBD_INFO_EXPORT);
    st_be64(ex + 2, (uint64_t)blk_getlength(e->blk));
    st_be16(ex + 10, nbd_export_tflags(e, c->structured));
    ret = nbd_opt_reply(c, opt, NBD_REP_INFO, ex, sizeof(ex));
    if (ret == 0 && q->want_name) {
        ret = send_info_string(c, opt, NBD_INFO_NAME, e->name);
    }
    if (ret == 0 && q->want_description && e->description) {
        ret = send_info_string(c, opt, NBD_INFO_DESCRIPTION, e->description);
    }
    if (ret == 0 && q->want_block_size) {
        st_be16(bs, NBD_INFO_BLOCK_SIZE);
        st_be32(bs + 2, 1);
        st_be32(bs + 6, NBD_PREF_BLOCK);
        st_be32(bs + 10, NBD_MAX_PAYLOAD);
        ret = nbd_opt_reply(c, opt, NBD_REP_INFO, bs, sizeof(bs));
    }
    return ret;
}

/* Contexts set for another export do not carry over to this one. */
static void check_meta_export(NbdClient *c, const NbdExport *e)
{
    if (c->meta_export && strcmp(c->meta_export, e->name)) {
        c->meta_base = false;
        c->meta_depth = false;
        c->meta_bitmap = false;
    }
}

static int coroutine_fn opt_info_go(NbdClient *c, uint32_t opt, const uint8_t *data,
                                    uint32_t len)
{
    NbdGoQuery q;
    const char *why;
    uint32_t err = nbd_parse_go(data, len, &q, &why);
    NbdExport *e;
    int ret;

    if (err) {
        return nbd_opt_error(c, opt, err, why);
    }
    e = nbd_export_find(c->srv, q.name, q.name_len);
    if (!e) {
        return nbd_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "export not found");
    }
    ret = send_infos(c, opt, e, &q);
    if (ret == 0) {
        ret = nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
    }
    if (ret < 0 || opt == NBD_OPT_INFO) {
        return ret;
    }
    check_meta_export(c, e);
    nbd_client_enter_transmission(c, e);
    return 1;
}

/* NBD_OPT_EXPORT_NAME: no error reply exists, so an unknown name disconnects. */
static int coroutine_fn opt_export_name(NbdClient *c, const uint8_t *data, uint32_t len)
{
    uint8_t reply[10 + 124] = { 0 };
    NbdExport *e;
    int ret;

    if (!nbd_string_ok((const char *)data, len)) {
        return -EINVAL;
    }
    e = nbd_export_find(c->srv, (const char *)data, len);
    if (!e) {
        return -ENOENT;
    }
    st_be64(reply, (uint64_t)blk_getlength(e->blk));
    st_be16(reply + 8, nbd_export_tflags(e, c->structured));
    ret = nbd_chan_write(&c->chan, reply, c->no_zeroes ? 10 : sizeof(reply));
    if (ret < 0) {
        return ret;
    }
    check_meta_export(c, e);
    nbd_client_enter_transmission(c, e);
    return 1;
}

static int coroutine_fn opt_structured(NbdClient *c, uint32_t len)
{
    if (len) {
        return nbd_opt_error(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
                             "NBD_OPT_STRUCTURED_REPLY has no data");
    }
    if (c->structured) {
        return nbd_opt_error(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID,
                             "structured replies already negotiated");
    }
    c->structured = true;
    return nbd_opt_reply(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK, NULL, 0);
}

/* Forgets what the client negotiated in plaintext (CVE-2021-3716). */
static void reset_negotiated(NbdClient *c)
{
    c->exp = NULL;
    c->structured = false;
    c->meta_base = false;
    c->meta_depth = false;
    c->meta_bitmap = false;
    free(c->meta_export);
    c->meta_export = NULL;
}

/* Only the peer tls_authz names may go on (the certificate DN or the PSK username). */
static int check_authz(NbdClient *c)
{
    char *peer;
    int ret = 0;

    if (!c->srv->tls_authz) {
        return 0;
    }
    peer = nbd_tls_peer_name(&c->chan);
    if (!peer || strcmp(peer, c->srv->tls_authz)) {
        coblk_warn("nbd: TLS peer '%s' is not authorized (tls-authz '%s')",
                   peer ? peer : "(unknown)", c->srv->tls_authz);
        ret = -EACCES;
    }
    free(peer);
    return ret;
}

static int coroutine_fn opt_starttls(NbdClient *c, uint32_t len)
{
    Error *err = NULL;
    int ret;

    if (c->srv->opts.tls_mode == NBD_TLS_OFF) {
        return nbd_opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_POLICY,
                             "TLS is not enabled on this server");
    }
    if (len) {
        return nbd_opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
                             "NBD_OPT_STARTTLS has no data");
    }
    if (c->chan.tls) {
        return nbd_opt_error(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID,
                             "TLS is already negotiated");
    }
    ret = nbd_opt_reply(c, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0);
    if (ret < 0) {
        return ret;
    }
    reset_negotiated(c);
    /* The handshake timer still runs: it bounds the TLS handshake too. */
    ret = nbd_tls_start(&c->chan, c->srv->opts.tls_creds, NULL, &err);
    if (ret < 0) {
        if (!c->closing) {
            coblk_warn("nbd: %s", error_get_pretty(err));
        }
        error_free(err);
        return ret;
    }
    return check_authz(c);
}

int coroutine_fn nbd_handle_option(NbdClient *c, uint32_t opt, const uint8_t *data,
                                   uint32_t len)
{
    if (c->srv->opts.tls_mode == NBD_TLS_REQUIRE && !c->chan.tls &&
        opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
        if (opt == NBD_OPT_EXPORT_NAME) {
            return -EACCES; /* no error reply exists: the spec says to disconnect */
        }
        return nbd_opt_error(c, opt, NBD_REP_ERR_TLS_REQD,
                             "TLS is required: send NBD_OPT_STARTTLS first");
    }
    switch (opt) {
    case NBD_OPT_EXPORT_NAME:
        return opt_export_name(c, data, len);
    case NBD_OPT_ABORT:
        nbd_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
        return -ECONNABORTED;
    case NBD_OPT_LIST:
        return opt_list(c, len);
    case NBD_OPT_STARTTLS:
        return opt_starttls(c, len);
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        return opt_info_go(c, opt, data, len);
    case NBD_OPT_STRUCTURED_REPLY:
        return opt_structured(c, len);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        return nbd_opt_meta_context(c, opt, data, len);
    default:
        return nbd_opt_error(c, opt, NBD_REP_ERR_UNSUP, "unsupported option");
    }
}
