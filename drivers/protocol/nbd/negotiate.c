/*
 * The client side of the fixed newstyle handshake, run at open: greeting,
 * NBD_OPT_STARTTLS first when TLS is asked for (no plaintext fallback: a
 * refusal or a failed TLS handshake fails the open), NBD_OPT_STRUCTURED_REPLY,
 * NBD_OPT_SET_META_CONTEXT base:allocation, then NBD_OPT_GO asking for block
 * sizes (NBD_OPT_EXPORT_NAME when the server does not know GO).
 *
 * The server is untrusted: every reply's magic and option are checked, its
 * length is capped (NBD_MAX_OPTION_LEN) before anything is read or
 * allocated, info payloads go through nbd_parse_info(), and the export
 * size must fit the block layer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/bytes.h"
#include "drivers/protocol/nbd/nbd-int.h"

/* A lost connection: after TLS, most likely the server refusing this client. */
static void conn_lost(NbdConn *s, int ret, const char *what, Error **errp)
{
    if ((ret == -EPIPE || ret == -ECONNRESET) && s->chan.tls) {
        error_setg(errp, "the server closed the connection after the TLS handshake (it may "
                   "want a client certificate, or refuse this client)");
    } else {
        error_setg_errno(errp, ret, "%s failed", what);
    }
}

static int send_option(NbdConn *s, uint32_t opt, const void *data, uint32_t len,
                       Error **errp)
{
    uint8_t h[16];
    struct iovec iov[2] = {
        { .iov_base = h, .iov_len = sizeof(h) },
        { .iov_base = (void *)data, .iov_len = len },
    };
    int ret;

    st_be64(h, NBD_OPTS_MAGIC);
    st_be32(h + 8, opt);
    st_be32(h + 12, len);
    ret = nbd_chan_writev(&s->chan, iov, 2);
    if (ret < 0) {
        conn_lost(s, ret, "sending an option", errp);
    }
    return ret;
}

/* Reads one option reply for opt; *payload (malloc'ed, NUL-terminated) holds its data. */
static int read_reply(NbdConn *s, uint32_t opt, NbdOptReply *r, char **payload,
                      Error **errp)
{
    uint8_t h[NBD_OPT_REPLY_SIZE];
    int ret = nbd_chan_read(&s->chan, h, sizeof(h));

    *payload = NULL;
    if (ret < 0) {
        conn_lost(s, ret, "reading an option reply", errp);
        return ret;
    }
    nbd_decode_opt_reply(h, r);
    if (r->magic != NBD_REP_MAGIC || r->option != opt || r->len > NBD_MAX_OPTION_LEN) {
        error_setg(errp, "malformed option reply (magic 0x%llx, option %u, length %u)",
                   (unsigned long long)r->magic, r->option, r->len);
        return -EPROTO;
    }
    *payload = malloc(r->len + 1);
    if (!*payload) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    ret = nbd_chan_read(&s->chan, *payload, r->len);
    if (ret < 0) {
        free(*payload);
        *payload = NULL;
        error_setg_errno(errp, ret, "reading an option reply failed");
        return ret;
    }
    (*payload)[r->len] = '\0';
    return 0;
}

static int greeting(NbdConn *s, Error **errp)
{
    uint8_t g[18], cf[4];
    uint16_t hflags;
    int ret = nbd_chan_read(&s->chan, g, sizeof(g));

    if (ret < 0) {
        error_setg_errno(errp, ret, "reading the server greeting failed");
        return ret;
    }
    if (ld_be64(g) != NBD_INIT_MAGIC) {
        error_setg(errp, "not an NBD server (bad magic)");
        return -EPROTO;
    }
    if (ld_be64(g + 8) != NBD_OPTS_MAGIC) {
        error_setg(errp, "the server speaks the oldstyle protocol, which is not supported");
        return -EPROTO;
    }
    hflags = ld_be16(g + 16);
    if (!(hflags & NBD_FLAG_FIXED_NEWSTYLE)) {
        error_setg(errp, "the server does not support fixed newstyle negotiation");
        return -EPROTO;
    }
    s->info.tflags = 0;
    st_be32(cf, NBD_FLAG_C_FIXED_NEWSTYLE | (hflags & NBD_FLAG_NO_ZEROES ?
                                             NBD_FLAG_C_NO_ZEROES : 0));
    s->chan.poll_timeout_ms = 30000;
    ret = nbd_chan_write(&s->chan, cf, sizeof(cf));
    if (ret < 0) {
        error_setg_errno(errp, ret, "sending client flags failed");
        return ret;
    }
    return (hflags & NBD_FLAG_NO_ZEROES) ? 1 : 0;
}

/*
 * NBD_OPT_STARTTLS, then the TLS handshake. Nothing negotiated before it
 * survives (CVE-2021-3716): the state is cleared, and every later option is
 * sent inside TLS.
 */
static int starttls(NbdConn *s, Error **errp)
{
    const char *host = s->addr->tls_hostname ? s->addr->tls_hostname :
                       s->addr->is_unix ? NULL : s->addr->host;
    NbdOptReply r;
    char *p;
    int ret = send_option(s, NBD_OPT_STARTTLS, NULL, 0, errp);

    if (ret == 0) {
        ret = read_reply(s, NBD_OPT_STARTTLS, &r, &p, errp);
    }
    if (ret < 0) {
        return ret;
    }
    if (r.type != NBD_REP_ACK) {
        error_setg(errp, "TLS was requested but the server refused NBD_OPT_STARTTLS "
                   "(reply 0x%x%s%s): not continuing in plaintext", r.type, *p ? ": " : "", p);
        free(p);
        return -EPROTO;
    }
    free(p);
    memset(&s->info, 0, sizeof(s->info));
    s->structured = false;
    s->have_base = false;
    s->base_id = 0;
    return nbd_tls_start(&s->chan, s->tls, host, errp);
}

static int negotiate_structured(NbdConn *s, Error **errp)
{
    NbdOptReply r;
    char *p;
    int ret = send_option(s, NBD_OPT_STRUCTURED_REPLY, NULL, 0, errp);

    if (ret == 0) {
        ret = read_reply(s, NBD_OPT_STRUCTURED_REPLY, &r, &p, errp);
    }
    if (ret < 0) {
        return ret;
    }
    free(p);
    s->structured = r.type == NBD_REP_ACK;
    return 0;
}

/* Sends an option whose data is: 32-bit name length, name, then tail. */
static int send_named_option(NbdConn *s, uint32_t opt, const void *tail, uint32_t tlen,
                             Error **errp)
{
    uint32_t nlen = (uint32_t)strlen(s->addr->export_name);
    uint8_t *buf = malloc(4 + nlen + tlen);
    int ret;

    if (!buf) {
        error_setg(errp, "out of memory");
        return -ENOMEM;
    }
    st_be32(buf, nlen);
    memcpy(buf + 4, s->addr->export_name, nlen);
    memcpy(buf + 4 + nlen, tail, tlen);
    ret = send_option(s, opt, buf, 4 + nlen + tlen, errp);
    free(buf);
    return ret;
}

static int negotiate_meta(NbdConn *s, Error **errp)
{
    const char *ctx = NBD_META_BASE_ALLOCATION;
    uint8_t q[8 + 32];
    uint32_t qlen = (uint32_t)strlen(ctx);
    NbdOptReply r;
    char *p;
    int ret;

    st_be32(q, 1);
    st_be32(q + 4, qlen);
    memcpy(q + 8, ctx, qlen);
    ret = send_named_option(s, NBD_OPT_SET_META_CONTEXT, q, 8 + qlen, errp);
    while (ret == 0) {
        ret = read_reply(s, NBD_OPT_SET_META_CONTEXT, &r, &p, errp);
        if (ret < 0) {
            break;
        }
        if (r.type == NBD_REP_META_CONTEXT && r.len >= 4 && r.len - 4 == qlen &&
            !memcmp(p + 4, ctx, qlen)) {
            s->have_base = true;
            s->base_id = ld_be32(p);
        }
        free(p);
        if (r.type != NBD_REP_META_CONTEXT) {
            break; /* ACK, or an error: no block status then */
        }
    }
    return ret;
}

/* NBD_OPT_EXPORT_NAME: the reply is size, flags and (without NO_ZEROES) 124 zero bytes. */
static int export_name(NbdConn *s, bool no_zeroes, Error **errp)
{
    uint8_t r[10 + 124];
    int ret = send_option(s, NBD_OPT_EXPORT_NAME, s->addr->export_name,
                          (uint32_t)strlen(s->addr->export_name), errp);

    if (ret < 0) {
        return ret;
    }
    ret = nbd_chan_read(&s->chan, r, no_zeroes ? 10 : sizeof(r));
    if (ret < 0) {
        error_setg_errno(errp, ret, "export '%s' refused by the server",
                         s->addr->export_name);
        return ret;
    }
    s->info.size = ld_be64(r);
    s->info.tflags = ld_be16(r + 8);
    s->info.have_export = true;
    return 0;
}

static int go_error(const NbdOptReply *r, const char *msg, const char *name, Error **errp)
{
    if (r->type == NBD_REP_ERR_TLS_REQD) {
        error_setg(errp, "the server requires TLS for export '%s' (use an nbds:// URL or "
                   "tls-certificates / tls-psk-file)%s%s", name, *msg ? ": " : "", msg);
        return -EACCES;
    }
    if (r->type == NBD_REP_ERR_UNKNOWN) {
        error_setg(errp, "export '%s' not found on the server%s%s", name,
                   *msg ? ": " : "", msg);
        return -ENOENT;
    }
    error_setg(errp, "the server refused export '%s' (reply 0x%x)%s%s", name, r->type,
               *msg ? ": " : "", msg);
    return -EPROTO;
}

/* NBD_OPT_GO; returns 1 if the server does not support it (use EXPORT_NAME). */
static int go(NbdConn *s, Error **errp)
{
    uint8_t req[4];
    NbdOptReply r;
    char *p;
    const char *why;
    int ret;

    st_be16(req, 1);
    st_be16(req + 2, NBD_INFO_BLOCK_SIZE);
    ret = send_named_option(s, NBD_OPT_GO, req, sizeof(req), errp);
    while (ret == 0) {
        ret = read_reply(s, NBD_OPT_GO, &r, &p, errp);
        if (ret < 0) {
            return ret;
        }
        if (r.type == NBD_REP_ACK) {
            free(p);
            return 0;
        }
        if (r.type == NBD_REP_ERR_UNSUP) {
            free(p);
            return 1;
        }
        if (NBD_REP_IS_ERR(r.type)) {
            ret = go_error(&r, p, s->addr->export_name, errp);
        } else if (r.type == NBD_REP_INFO &&
                   nbd_parse_info((uint8_t *)p, r.len, &s->info, &why) < 0) {
            error_setg(errp, "%s", why);
            ret = -EPROTO;
        }
        free(p);
    }
    return ret;
}

int coroutine_fn nbd_negotiate(NbdConn *s, Error **errp)
{
    int ret = greeting(s, errp);
    bool no_zeroes = ret == 1;

    if (ret >= 0 && s->tls) {
        ret = starttls(s, errp);
    }
    if (ret >= 0) {
        ret = negotiate_structured(s, errp);
    }
    if (ret == 0 && s->structured) {
        ret = negotiate_meta(s, errp);
    }
    if (ret == 0) {
        ret = go(s, errp);
        if (ret == 1) {
            ret = export_name(s, no_zeroes, errp);
        }
    }
    if (ret < 0) {
        return ret;
    }
    if (!s->info.have_export || s->info.size > (uint64_t)BDRV_MAX_LENGTH) {
        error_setg(errp, "the server sent no export size or one too large (%llu)",
                   (unsigned long long)s->info.size);
        return -EPROTO;
    }
    return 0;
}
