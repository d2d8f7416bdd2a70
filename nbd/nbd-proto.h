/*
 * The NBD wire protocol, shared by the server (nbd/) and the client driver
 * (drivers/protocol/nbd.c): constants from the NBD protocol document
 * (NetworkBlockDevice/nbd doc/proto.md), the limits coblk enforces on peers,
 * and pure parsers of untrusted messages (nbd/proto.c), which the unit tests
 * feed malformed input. Not installed.
 *
 * Every multi-byte field on the wire is big-endian; messages are read
 * through the bounds-checked cursor of block/bytes.h.
 */
#ifndef COBLK_NBD_PROTO_H
#define COBLK_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- handshake ---- */
#define NBD_INIT_MAGIC 0x4e42444d41474943ULL  /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC 0x49484156454f5054ULL  /* "IHAVEOPT" */
#define NBD_REP_MAGIC 0x3e889045565a9ULL      /* option reply */
#define NBD_OLDSTYLE_MAGIC 0x420281861253ULL

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* options */
enum {
    NBD_OPT_EXPORT_NAME = 1,
    NBD_OPT_ABORT = 2,
    NBD_OPT_LIST = 3,
    NBD_OPT_STARTTLS = 5,
    NBD_OPT_INFO = 6,
    NBD_OPT_GO = 7,
    NBD_OPT_STRUCTURED_REPLY = 8,
    NBD_OPT_LIST_META_CONTEXT = 9,
    NBD_OPT_SET_META_CONTEXT = 10,
};

/* option reply types; errors have bit 31 set */
#define NBD_REP_ERR(v) ((1u << 31) | (v))
enum {
    NBD_REP_ACK = 1,
    NBD_REP_SERVER = 2,
    NBD_REP_INFO = 3,
    NBD_REP_META_CONTEXT = 4,
};
#define NBD_REP_ERR_UNSUP NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG NBD_REP_ERR(9)
#define NBD_REP_IS_ERR(t) (((t) >> 31) != 0)

/* NBD_REP_INFO types */
enum {
    NBD_INFO_EXPORT = 0,
    NBD_INFO_NAME = 1,
    NBD_INFO_DESCRIPTION = 2,
    NBD_INFO_BLOCK_SIZE = 3,
};

/* transmission flags */
enum {
    NBD_FLAG_HAS_FLAGS = 1u << 0,
    NBD_FLAG_READ_ONLY = 1u << 1,
    NBD_FLAG_SEND_FLUSH = 1u << 2,
    NBD_FLAG_SEND_FUA = 1u << 3,
    NBD_FLAG_ROTATIONAL = 1u << 4,
    NBD_FLAG_SEND_TRIM = 1u << 5,
    NBD_FLAG_SEND_WRITE_ZEROES = 1u << 6,
    NBD_FLAG_SEND_DF = 1u << 7,
    NBD_FLAG_CAN_MULTI_CONN = 1u << 8,
    NBD_FLAG_SEND_RESIZE = 1u << 9,
    NBD_FLAG_SEND_CACHE = 1u << 10,
    NBD_FLAG_SEND_FAST_ZERO = 1u << 11,
};

/* ---- transmission ---- */
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu

#define NBD_REQUEST_SIZE 28
#define NBD_SIMPLE_REPLY_SIZE 16
#define NBD_CHUNK_HEADER_SIZE 20

enum {
    NBD_CMD_READ = 0,
    NBD_CMD_WRITE = 1,
    NBD_CMD_DISC = 2,
    NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4,
    NBD_CMD_CACHE = 5,
    NBD_CMD_WRITE_ZEROES = 6,
    NBD_CMD_BLOCK_STATUS = 7,
};

enum {
    NBD_CMD_FLAG_FUA = 1u << 0,
    NBD_CMD_FLAG_NO_HOLE = 1u << 1,
    NBD_CMD_FLAG_DF = 1u << 2,
    NBD_CMD_FLAG_REQ_ONE = 1u << 3,
    NBD_CMD_FLAG_FAST_ZERO = 1u << 4,
};

#define NBD_REPLY_FLAG_DONE (1u << 0)
enum {
    NBD_REPLY_TYPE_NONE = 0,
    NBD_REPLY_TYPE_OFFSET_DATA = 1,
    NBD_REPLY_TYPE_OFFSET_HOLE = 2,
    NBD_REPLY_TYPE_BLOCK_STATUS = 5,
    NBD_REPLY_TYPE_ERROR = (1u << 15) + 1,
    NBD_REPLY_TYPE_ERROR_OFFSET = (1u << 15) + 2,
};
#define NBD_REPLY_TYPE_IS_ERR(t) (((t) >> 15) != 0)

/* base:allocation status bits */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* error values on the wire (not the host's errno numbering) */
enum {
    NBD_EPERM = 1,
    NBD_EIO = 5,
    NBD_ENOMEM = 12,
    NBD_EINVAL = 22,
    NBD_ENOSPC = 28,
    NBD_EOVERFLOW = 75,
    NBD_ENOTSUP = 95,
    NBD_ESHUTDOWN = 108,
};

#define NBD_DEFAULT_PORT 10809
#define NBD_META_BASE_ALLOCATION "base:allocation"
#define NBD_META_QEMU_DEPTH "qemu:allocation-depth"

/*
 * Limits coblk enforces on its peers (UNTRUSTED-INPUT.md):
 *  - strings (export names, descriptions, context names, messages) <= 4096
 *    bytes (the protocol's MUST);
 *  - one option's data <= NBD_MAX_OPTION_LEN, else the client is dropped;
 *  - at most NBD_MAX_OPTIONS options per connection;
 *  - requests with a payload or a data reply (READ, WRITE, CACHE) carry at
 *    most NBD_MAX_PAYLOAD bytes; the server advertises it as the maximum
 *    block size.
 */
#define NBD_MAX_STRING 4096u
#define NBD_MAX_OPTION_LEN (16u * 1024)
#define NBD_MAX_OPTIONS 32u
#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)
#define NBD_MAX_META_QUERIES 64u

/* ---- pure parsers (nbd/proto.c) ---- */

/** A transmission request as read from the wire. */
typedef struct NbdRequest {
    uint32_t magic;
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t len;
} NbdRequest;

void nbd_encode_request(uint8_t buf[NBD_REQUEST_SIZE], const NbdRequest *req);
void nbd_decode_request(const uint8_t buf[NBD_REQUEST_SIZE], NbdRequest *req);

/** What the server decided about a request before doing it. */
typedef enum NbdCheck {
    NBD_CHECK_OK = 0,
    NBD_CHECK_ERROR,      /**< reply with *nbd_err, keep the connection */
    NBD_CHECK_DISCONNECT, /**< protocol violation: drop the client */
} NbdCheck;

/** What the connection negotiated, for request checks. */
typedef struct NbdSession {
    uint64_t size;          /**< export size */
    uint16_t tflags;        /**< transmission flags sent to the client */
    bool structured;        /**< NBD_OPT_STRUCTURED_REPLY negotiated */
    bool has_meta;          /**< at least one metadata context selected */
} NbdSession;

/**
 * Checks a decoded request against the session: magic (else disconnect),
 * command and flags known and negotiated, lengths against NBD_MAX_PAYLOAD
 * (a WRITE above it is a disconnect: its payload cannot be trusted to be
 * skipped), offset + length within the export (checked without overflow).
 * On NBD_CHECK_ERROR, *nbd_err is the NBD error to reply with and *why a
 * static message.
 */
NbdCheck nbd_check_request(const NbdRequest *req, const NbdSession *s, uint32_t *nbd_err,
                           const char **why);

/** NBD_OPT_INFO / NBD_OPT_GO data. name points into the parsed buffer. */
typedef struct NbdGoQuery {
    const char *name;
    uint32_t name_len;
    uint16_t n_info;
    bool want_name;
    bool want_description;
    bool want_block_size;
} NbdGoQuery;

/** Parses INFO/GO data; returns 0 or the NBD_REP_ERR_* to send. */
uint32_t nbd_parse_go(const uint8_t *data, uint32_t len, NbdGoQuery *q, const char **why);

/** NBD_OPT_LIST/SET_META_CONTEXT data. Pointers point into the parsed buffer. */
typedef struct NbdMetaQuery {
    const char *export_name;
    uint32_t export_len;
    uint32_t n_queries;
    const char *query[NBD_MAX_META_QUERIES];
    uint32_t query_len[NBD_MAX_META_QUERIES];
} NbdMetaQuery;

/** Parses *_META_CONTEXT data; returns 0 or the NBD_REP_ERR_* to send. */
uint32_t nbd_parse_meta(const uint8_t *data, uint32_t len, NbdMetaQuery *q, const char **why);

/** True if s[0..len) is a valid protocol string: <= 4096 bytes, no NUL. */
bool nbd_string_ok(const char *s, uint32_t len);

/** Host -errno to an NBD error value (unknown errors become EINVAL, as the spec asks). */
uint32_t nbd_errno_to_wire(int neg_errno);
/** NBD error value to a host -errno (unknown values become -EINVAL). */
int nbd_wire_to_errno(uint32_t err);

/* ---- client-side parsers of server messages ---- */

/** An option reply header. */
typedef struct NbdOptReply {
    uint64_t magic;
    uint32_t option;
    uint32_t type;
    uint32_t len;
} NbdOptReply;
#define NBD_OPT_REPLY_SIZE 20
void nbd_decode_opt_reply(const uint8_t buf[NBD_OPT_REPLY_SIZE], NbdOptReply *r);

/** Export information gathered from NBD_REP_INFO replies. */
typedef struct NbdExportInfo {
    uint64_t size;
    uint16_t tflags;
    bool have_export;
    uint32_t min_block;
    uint32_t pref_block;
    uint32_t max_block;
    bool have_block_size;
} NbdExportInfo;

/**
 * Parses one NBD_REP_INFO payload into info. Unknown info types are
 * ignored (the spec asks clients to), wrong lengths and inconsistent block
 * sizes are errors (-EINVAL with *why).
 */
int nbd_parse_info(const uint8_t *data, uint32_t len, NbdExportInfo *info, const char **why);

/** A structured reply chunk header or a simple reply (len 0, type 0). */
typedef struct NbdReplyHeader {
    uint32_t magic;
    uint16_t flags;        /* structured only */
    uint16_t type;         /* structured only */
    uint32_t error;        /* simple only */
    uint64_t cookie;
    uint32_t len;          /* structured only: payload bytes */
} NbdReplyHeader;

/**
 * Decodes a reply header from its first 16 bytes (a simple reply is
 * complete then; *more is set to 4 for a structured one, whose last 4
 * bytes are passed again to nbd_decode_chunk_tail). Returns -EINVAL on an
 * unknown magic.
 */
int nbd_decode_reply_head(const uint8_t buf[NBD_SIMPLE_REPLY_SIZE], NbdReplyHeader *h,
                          size_t *more);
void nbd_decode_chunk_tail(const uint8_t buf[4], NbdReplyHeader *h);

/**
 * Checks a structured chunk's type and length for the request it answers
 * (is_read: NBD_CMD_READ, is_status: NBD_CMD_BLOCK_STATUS) before its
 * payload is read: the payload must fit the type and, for data, the
 * request. Returns 0 or -EINVAL with *why.
 */
int nbd_check_chunk(const NbdReplyHeader *h, bool is_read, bool is_status, uint32_t req_len,
                    const char **why);

#endif /* COBLK_NBD_PROTO_H */
