/*
 * Pure parsers and encoders of NBD messages (see nbd-proto.h). Nothing here
 * touches a socket, so the unit tests can feed every function malformed
 * bytes. All input is untrusted: lengths are checked before any field is
 * read, and every count is bounded by the data that carries it.
 */
#include <errno.h>
#include <string.h>

#include "block/bytes.h"
#include "nbd/nbd-proto.h"

void nbd_encode_request(uint8_t buf[NBD_REQUEST_SIZE], const NbdRequest *req)
{
    st_be32(buf, req->magic);
    st_be16(buf + 4, req->flags);
    st_be16(buf + 6, req->type);
    st_be64(buf + 8, req->cookie);
    st_be64(buf + 16, req->offset);
    st_be32(buf + 24, req->len);
}

void nbd_decode_request(const uint8_t buf[NBD_REQUEST_SIZE], NbdRequest *req)
{
    req->magic = ld_be32(buf);
    req->flags = ld_be16(buf + 4);
    req->type = ld_be16(buf + 6);
    req->cookie = ld_be64(buf + 8);
    req->offset = ld_be64(buf + 16);
    req->len = ld_be32(buf + 24);
}

bool nbd_string_ok(const char *s, uint32_t len)
{
    return len <= NBD_MAX_STRING && (len == 0 || !memchr(s, '\0', len));
}

/* Command flags a request of type may carry in this session (0xffff: unknown type). */
static uint16_t allowed_flags(uint16_t type, const NbdSession *s)
{
    uint16_t fua = (s->tflags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;

    switch (type) {
    case NBD_CMD_READ:
        return fua | ((s->tflags & NBD_FLAG_SEND_DF) ? NBD_CMD_FLAG_DF : 0);
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_FLUSH:
    case NBD_CMD_CACHE:
    case NBD_CMD_DISC:
        return fua;
    case NBD_CMD_WRITE_ZEROES:
        return fua | NBD_CMD_FLAG_NO_HOLE |
               ((s->tflags & NBD_FLAG_SEND_FAST_ZERO) ? NBD_CMD_FLAG_FAST_ZERO : 0);
    case NBD_CMD_BLOCK_STATUS:
        return fua | NBD_CMD_FLAG_REQ_ONE;
    default:
        return 0xffff;
    }
}

static NbdCheck check_fail(uint32_t err, const char *msg, uint32_t *nbd_err, const char **why)
{
    *nbd_err = err;
    *why = msg;
    return NBD_CHECK_ERROR;
}

/* Whether the command is advertised (and allowed) in this session. */
static NbdCheck check_negotiated(const NbdRequest *req, const NbdSession *s, uint32_t *nbd_err,
                                 const char **why)
{
    bool ro = s->tflags & NBD_FLAG_READ_ONLY;

    switch (req->type) {
    case NBD_CMD_WRITE:
    case NBD_CMD_TRIM:
    case NBD_CMD_WRITE_ZEROES:
        if (ro) {
            return check_fail(NBD_EPERM, "export is read-only", nbd_err, why);
        }
        if ((req->type == NBD_CMD_TRIM && !(s->tflags & NBD_FLAG_SEND_TRIM)) ||
            (req->type == NBD_CMD_WRITE_ZEROES && !(s->tflags & NBD_FLAG_SEND_WRITE_ZEROES))) {
            return check_fail(NBD_EINVAL, "command not negotiated", nbd_err, why);
        }
        return NBD_CHECK_OK;
    case NBD_CMD_CACHE:
        if (!(s->tflags & NBD_FLAG_SEND_CACHE)) {
            return check_fail(NBD_EINVAL, "command not negotiated", nbd_err, why);
        }
        return NBD_CHECK_OK;
    case NBD_CMD_BLOCK_STATUS:
        if (!s->structured || !s->has_meta) {
            return check_fail(NBD_EINVAL, "no metadata context negotiated", nbd_err, why);
        }
        return NBD_CHECK_OK;
    default:
        return NBD_CHECK_OK;
    }
}

NbdCheck nbd_check_request(const NbdRequest *req, const NbdSession *s, uint32_t *nbd_err,
                           const char **why)
{
    uint16_t allowed;
    NbdCheck c;

    *nbd_err = 0;
    *why = NULL;
    if (req->magic != NBD_REQUEST_MAGIC) {
        *why = "bad request magic";
        return NBD_CHECK_DISCONNECT;
    }
    /* A write's payload follows its header: above the cap we cannot skip it safely. */
    if (req->type == NBD_CMD_WRITE && req->len > NBD_MAX_PAYLOAD) {
        *why = "write payload above 32 MiB";
        return NBD_CHECK_DISCONNECT;
    }
    allowed = allowed_flags(req->type, s);
    if (allowed == 0xffff) {
        return check_fail(NBD_EINVAL, "unknown command", nbd_err, why);
    }
    if (req->flags & ~allowed) {
        return check_fail(NBD_EINVAL, "unknown or unnegotiated command flag", nbd_err, why);
    }
    if (req->type == NBD_CMD_DISC) {
        return NBD_CHECK_OK;
    }
    if (req->type == NBD_CMD_FLUSH) {
        if (req->offset || req->len) {
            return check_fail(NBD_EINVAL, "flush with an offset or length", nbd_err, why);
        }
        return check_negotiated(req, s, nbd_err, why);
    }
    if (req->len == 0) {
        return check_fail(NBD_EINVAL, "zero length", nbd_err, why);
    }
    if ((req->type == NBD_CMD_READ || req->type == NBD_CMD_CACHE) &&
        req->len > NBD_MAX_PAYLOAD) {
        return check_fail(NBD_EOVERFLOW, "request above 32 MiB", nbd_err, why);
    }
    c = check_negotiated(req, s, nbd_err, why);
    if (c != NBD_CHECK_OK) {
        return c;
    }
    if (!range_within(req->offset, req->len, s->size)) {
        bool wr = req->type == NBD_CMD_WRITE || req->type == NBD_CMD_WRITE_ZEROES;

        return check_fail(wr ? NBD_ENOSPC : NBD_EINVAL, "request beyond the end of the export",
                          nbd_err, why);
    }
    return NBD_CHECK_OK;
}

static uint32_t parse_fail(uint32_t rep, const char *msg, const char **why)
{
    *why = msg;
    return rep;
}

uint32_t nbd_parse_go(const uint8_t *data, uint32_t len, NbdGoQuery *q, const char **why)
{
    ByteCursor c = bcur_init(data, len);
    const uint8_t *name;

    memset(q, 0, sizeof(*q));
    *why = NULL;
    if (!rd_be32(&c, &q->name_len)) {
        return parse_fail(NBD_REP_ERR_INVALID, "option too short for the name length", why);
    }
    if (q->name_len > NBD_MAX_STRING) {
        return parse_fail(NBD_REP_ERR_INVALID, "export name longer than 4096 bytes", why);
    }
    name = bcur_take(&c, q->name_len);
    if (!name || !rd_be16(&c, &q->n_info)) {
        return parse_fail(NBD_REP_ERR_INVALID, "export name runs past the option", why);
    }
    if (len - c.pos != 2ULL * q->n_info) {
        return parse_fail(NBD_REP_ERR_INVALID, "information request count does not match "
                          "the option length", why);
    }
    q->name = (const char *)name;
    if (!nbd_string_ok(q->name, q->name_len)) {
        return parse_fail(NBD_REP_ERR_INVALID, "export name contains NUL", why);
    }
    for (uint16_t i = 0; i < q->n_info; i++) {
        uint16_t t;

        rd_be16(&c, &t);
        q->want_name |= t == NBD_INFO_NAME;
        q->want_description |= t == NBD_INFO_DESCRIPTION;
        q->want_block_size |= t == NBD_INFO_BLOCK_SIZE;
    }
    return 0;
}

uint32_t nbd_parse_meta(const uint8_t *data, uint32_t len, NbdMetaQuery *q, const char **why)
{
    ByteCursor c = bcur_init(data, len);
    const uint8_t *p;

    memset(q, 0, sizeof(*q));
    *why = NULL;
    if (!rd_be32(&c, &q->export_len)) {
        return parse_fail(NBD_REP_ERR_INVALID, "option too short for the name length", why);
    }
    if (q->export_len > NBD_MAX_STRING) {
        return parse_fail(NBD_REP_ERR_INVALID, "export name longer than 4096 bytes", why);
    }
    p = bcur_take(&c, q->export_len);
    if (!p || !rd_be32(&c, &q->n_queries)) {
        return parse_fail(NBD_REP_ERR_INVALID, "export name runs past the option", why);
    }
    q->export_name = (const char *)p;
    if (!nbd_string_ok(q->export_name, q->export_len)) {
        return parse_fail(NBD_REP_ERR_INVALID, "export name contains NUL", why);
    }
    /* Each query takes at least its 4-byte length: bound the count by the data. */
    if (q->n_queries > (len - c.pos) / 4) {
        return parse_fail(NBD_REP_ERR_INVALID, "query count exceeds the option length", why);
    }
    if (q->n_queries > NBD_MAX_META_QUERIES) {
        return parse_fail(NBD_REP_ERR_TOO_BIG, "more than 64 metadata queries", why);
    }
    for (uint32_t i = 0; i < q->n_queries; i++) {
        uint32_t ql;

        if (!rd_be32(&c, &ql) || ql > NBD_MAX_STRING || !(p = bcur_take(&c, ql))) {
            return parse_fail(NBD_REP_ERR_INVALID, "metadata query runs past the option "
                              "or exceeds 4096 bytes", why);
        }
        if (!nbd_string_ok((const char *)p, ql)) {
            return parse_fail(NBD_REP_ERR_INVALID, "metadata query contains NUL", why);
        }
        q->query[i] = (const char *)p;
        q->query_len[i] = ql;
    }
    if (c.pos != len) {
        return parse_fail(NBD_REP_ERR_INVALID, "trailing bytes after the queries", why);
    }
    return 0;
}

uint32_t nbd_errno_to_wire(int neg_errno)
{
    switch (-neg_errno) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case EIO:
        return NBD_EIO;
    case ENOMEM:
        return NBD_ENOMEM;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EINVAL;
    }
}

int nbd_wire_to_errno(uint32_t err)
{
    switch (err) {
    case NBD_EPERM:
        return -EPERM;
    case NBD_EIO:
        return -EIO;
    case NBD_ENOMEM:
        return -ENOMEM;
    case NBD_ENOSPC:
        return -ENOSPC;
    case NBD_EOVERFLOW:
        return -EOVERFLOW;
    case NBD_ENOTSUP:
        return -ENOTSUP;
    case NBD_ESHUTDOWN:
        return -ESHUTDOWN;
    default:
        return -EINVAL;
    }
}

void nbd_decode_opt_reply(const uint8_t buf[NBD_OPT_REPLY_SIZE], NbdOptReply *r)
{
    r->magic = ld_be64(buf);
    r->option = ld_be32(buf + 8);
    r->type = ld_be32(buf + 12);
    r->len = ld_be32(buf + 16);
}

/* NBD_INFO_BLOCK_SIZE: min a power of two <= 64 KiB, preferred a power of two >= min,
 * maximum a multiple of min (or 0xffffffff). */
static int parse_block_size(ByteCursor *c, NbdExportInfo *info, const char **why)
{
    uint32_t mn, pref, mx;

    if (!rd_be32(c, &mn) || !rd_be32(c, &pref) || !rd_be32(c, &mx)) {
        *why = "NBD_INFO_BLOCK_SIZE too short";
        return -EINVAL;
    }
    if (!is_power_of_2_u64(mn) || mn > 65536 || !is_power_of_2_u64(pref) || pref < mn ||
        mx < mn || (mx != UINT32_MAX && mx % mn)) {
        *why = "inconsistent NBD_INFO_BLOCK_SIZE";
        return -EINVAL;
    }
    info->min_block = mn;
    info->pref_block = pref;
    info->max_block = mx;
    info->have_block_size = true;
    return 0;
}

int nbd_parse_info(const uint8_t *data, uint32_t len, NbdExportInfo *info, const char **why)
{
    ByteCursor c = bcur_init(data, len);
    uint16_t type;

    if (!rd_be16(&c, &type)) {
        *why = "NBD_REP_INFO without a type";
        return -EINVAL;
    }
    switch (type) {
    case NBD_INFO_EXPORT:
        if (len != 12) {
            *why = "NBD_INFO_EXPORT of the wrong length";
            return -EINVAL;
        }
        rd_be64(&c, &info->size);
        rd_be16(&c, &info->tflags);
        info->have_export = true;
        return 0;
    case NBD_INFO_BLOCK_SIZE:
        if (len != 14) {
            *why = "NBD_INFO_BLOCK_SIZE of the wrong length";
            return -EINVAL;
        }
        return parse_block_size(&c, info, why);
    default:
        return 0; /* name, description and unknown types: ignored */
    }
}

int nbd_decode_reply_head(const uint8_t buf[NBD_SIMPLE_REPLY_SIZE], NbdReplyHeader *h,
                          size_t *more)
{
    memset(h, 0, sizeof(*h));
    h->magic = ld_be32(buf);
    if (h->magic == NBD_SIMPLE_REPLY_MAGIC) {
        h->error = ld_be32(buf + 4);
        h->cookie = ld_be64(buf + 8);
        *more = 0;
        return 0;
    }
    if (h->magic == NBD_STRUCTURED_REPLY_MAGIC) {
        h->flags = ld_be16(buf + 4);
        h->type = ld_be16(buf + 6);
        h->cookie = ld_be64(buf + 8);
        *more = 4;
        return 0;
    }
    return -EINVAL;
}

void nbd_decode_chunk_tail(const uint8_t buf[4], NbdReplyHeader *h)
{
    h->len = ld_be32(buf);
}

int nbd_check_chunk(const NbdReplyHeader *h, bool is_read, bool is_status, uint32_t req_len,
                    const char **why)
{
    switch (h->type) {
    case NBD_REPLY_TYPE_NONE:
        if (h->len || !(h->flags & NBD_REPLY_FLAG_DONE)) {
            *why = "NBD_REPLY_TYPE_NONE with a payload or without DONE";
            return -EINVAL;
        }
        return 0;
    case NBD_REPLY_TYPE_OFFSET_DATA:
        if (!is_read || h->len < 9 || h->len - 8 > req_len) {
            *why = "unexpected or oversized NBD_REPLY_TYPE_OFFSET_DATA";
            return -EINVAL;
        }
        return 0;
    case NBD_REPLY_TYPE_OFFSET_HOLE:
        if (!is_read || h->len != 12) {
            *why = "unexpected NBD_REPLY_TYPE_OFFSET_HOLE";
            return -EINVAL;
        }
        return 0;
    case NBD_REPLY_TYPE_BLOCK_STATUS:
        if (!is_status || h->len < 12 || (h->len - 4) % 8 || h->len > NBD_MAX_OPTION_LEN * 16) {
            *why = "unexpected or malformed NBD_REPLY_TYPE_BLOCK_STATUS";
            return -EINVAL;
        }
        return 0;
    default:
        if (NBD_REPLY_TYPE_IS_ERR(h->type)) {
            if (h->len < 6 || h->len > 6 + NBD_MAX_STRING + 8) {
                *why = "error chunk of a bad length";
                return -EINVAL;
            }
            return 0;
        }
        *why = "unknown structured reply type";
        return -EINVAL;
    }
}
