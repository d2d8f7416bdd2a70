/*
 * Unit tests: the NBD message parsers shared by the server and the client
 * (nbd/proto.c), fed malformed input: bad magics, oversized and
 * out-of-range requests, unknown commands and flags, option data whose
 * counts and lengths do not match, strings above 4096 bytes or with NUL,
 * inconsistent block sizes and chunks that do not fit their request.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "block/bytes.h"
#include "nbd/nbd-proto.h"

#define MiB (1024u * 1024)

static const NbdSession rw_session = {
    .size = 64 * MiB,
    .tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
              NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_DF |
              NBD_FLAG_SEND_CACHE | NBD_FLAG_SEND_FAST_ZERO,
    .structured = true,
    .has_meta = true,
};

static NbdCheck check(const NbdSession *s, uint16_t type, uint16_t flags, uint64_t off,
                      uint32_t len, uint32_t *err)
{
    NbdRequest q = { .magic = NBD_REQUEST_MAGIC, .type = type, .flags = flags,
                     .offset = off, .len = len };
    const char *why;

    return nbd_check_request(&q, s, err, &why);
}

static void test_nbd_proto_request_roundtrip(void **state)
{
    NbdRequest a = { NBD_REQUEST_MAGIC, 0x5, NBD_CMD_WRITE, 0x1122334455667788ULL,
                     0x0102030405060708ULL, 0xa0b0c0d0 }, b;
    uint8_t buf[NBD_REQUEST_SIZE];

    nbd_encode_request(buf, &a);
    assert_int_equal(buf[0], 0x25);
    assert_int_equal(buf[7], NBD_CMD_WRITE);
    nbd_decode_request(buf, &b);
    assert_int_equal(a.magic, b.magic);
    assert_int_equal(a.flags, b.flags);
    assert_int_equal(a.type, b.type);
    assert_true(a.cookie == b.cookie && a.offset == b.offset);
    assert_int_equal(a.len, b.len);
}

static void test_nbd_proto_request_bad_magic(void **state)
{
    NbdRequest q = { .magic = 0x25609514, .type = NBD_CMD_READ, .len = 512 };
    uint32_t err;
    const char *why;

    assert_int_equal(nbd_check_request(&q, &rw_session, &err, &why), NBD_CHECK_DISCONNECT);
    assert_non_null(why);
}

static void test_nbd_proto_request_sizes(void **state)
{
    uint32_t err;

    /* 32 MiB works, one byte more does not; an oversized write disconnects. */
    assert_int_equal(check(&rw_session, NBD_CMD_READ, 0, 0, 32 * MiB, &err), NBD_CHECK_OK);
    assert_int_equal(check(&rw_session, NBD_CMD_WRITE, 0, 0, 32 * MiB, &err), NBD_CHECK_OK);
    assert_int_equal(check(&rw_session, NBD_CMD_READ, 0, 0, 32 * MiB + 1, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(err, NBD_EOVERFLOW);
    assert_int_equal(check(&rw_session, NBD_CMD_WRITE, 0, 0, 32 * MiB + 1, &err),
                     NBD_CHECK_DISCONNECT);
    assert_int_equal(check(&rw_session, NBD_CMD_WRITE, 0, 0, UINT32_MAX, &err),
                     NBD_CHECK_DISCONNECT);
    assert_int_equal(check(&rw_session, NBD_CMD_READ, 0, 0, 0, &err), NBD_CHECK_ERROR);
    assert_int_equal(err, NBD_EINVAL);
    /* Zeroes, trim and block status carry no payload: larger ranges are fine. */
    assert_int_equal(check(&rw_session, NBD_CMD_WRITE_ZEROES, 0, 0, 64 * MiB, &err),
                     NBD_CHECK_OK);
    assert_int_equal(check(&rw_session, NBD_CMD_BLOCK_STATUS, 0, 0, 64 * MiB, &err),
                     NBD_CHECK_OK);
}

static void test_nbd_proto_request_range(void **state)
{
    uint32_t err;

    assert_int_equal(check(&rw_session, NBD_CMD_READ, 0, 64 * MiB - 512, 512, &err),
                     NBD_CHECK_OK);
    assert_int_equal(check(&rw_session, NBD_CMD_READ, 0, 64 * MiB - 511, 512, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(err, NBD_EINVAL);
    assert_int_equal(check(&rw_session, NBD_CMD_WRITE, 0, 64 * MiB, 1, &err), NBD_CHECK_ERROR);
    assert_int_equal(err, NBD_ENOSPC);
    /* offset + length wrapping around 2^64 */
    assert_int_equal(check(&rw_session, NBD_CMD_READ, 0, UINT64_MAX - 10, 512, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_TRIM, 0, UINT64_MAX, 1, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_BLOCK_STATUS, 0, 1, UINT32_MAX, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_FLUSH, 0, 4096, 0, &err), NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_FLUSH, 0, 0, 0, &err), NBD_CHECK_OK);
}

static void test_nbd_proto_request_commands_flags(void **state)
{
    NbdSession ro = rw_session, plain = rw_session;
    uint32_t err;

    assert_int_equal(check(&rw_session, 8, 0, 0, 512, &err), NBD_CHECK_ERROR);
    assert_int_equal(err, NBD_EINVAL);
    assert_int_equal(check(&rw_session, 0xffff, 0, 0, 512, &err), NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_READ, 1u << 9, 0, 512, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE, 0, 512, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(check(&rw_session, NBD_CMD_WRITE_ZEROES,
                           NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO | NBD_CMD_FLAG_FUA,
                           0, 512, &err), NBD_CHECK_OK);
    assert_int_equal(check(&rw_session, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, &err),
                     NBD_CHECK_OK);
    /* DF and block status need structured replies and a context. */
    plain.tflags &= ~NBD_FLAG_SEND_DF;
    plain.structured = false;
    plain.has_meta = false;
    assert_int_equal(check(&plain, NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 512, &err),
                     NBD_CHECK_ERROR);
    assert_int_equal(check(&plain, NBD_CMD_BLOCK_STATUS, 0, 0, 512, &err), NBD_CHECK_ERROR);
    /* Read-only exports refuse every write-type command with EPERM. */
    ro.tflags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH |
                NBD_FLAG_SEND_FUA;
    assert_int_equal(check(&ro, NBD_CMD_WRITE, 0, 0, 512, &err), NBD_CHECK_ERROR);
    assert_int_equal(err, NBD_EPERM);
    assert_int_equal(check(&ro, NBD_CMD_TRIM, 0, 0, 512, &err), NBD_CHECK_ERROR);
    assert_int_equal(check(&ro, NBD_CMD_WRITE_ZEROES, 0, 0, 512, &err), NBD_CHECK_ERROR);
    assert_int_equal(check(&ro, NBD_CMD_CACHE, 0, 0, 512, &err), NBD_CHECK_ERROR);
    assert_int_equal(check(&ro, NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 512, &err), NBD_CHECK_OK);
}

/* Builds GO data: name length, name, count, then the info types. */
static size_t go_data(uint8_t *buf, uint32_t name_len, const char *name, uint16_t n,
                      const uint16_t *types)
{
    size_t p = 0;

    st_be32(buf, name_len);
    p = 4;
    memcpy(buf + p, name, strlen(name));
    p += strlen(name);
    st_be16(buf + p, n);
    p += 2;
    for (uint16_t i = 0; types && i < n; i++, p += 2) {
        st_be16(buf + p, types[i]);
    }
    return p;
}

static void test_nbd_proto_go(void **state)
{
    static const uint16_t types[] = { NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE, 77 };
    uint8_t buf[8192];
    NbdGoQuery q;
    const char *why;
    size_t len = go_data(buf, 3, "exp", 3, types);
    char *longname;

    assert_int_equal(nbd_parse_go(buf, (uint32_t)len, &q, &why), 0);
    assert_int_equal(q.name_len, 3);
    assert_memory_equal(q.name, "exp", 3);
    assert_true(q.want_name && q.want_block_size && !q.want_description);
    /* truncated anywhere */
    for (size_t l = 0; l < len; l++) {
        assert_int_equal(nbd_parse_go(buf, (uint32_t)l, &q, &why), NBD_REP_ERR_INVALID);
    }
    /* trailing byte; count larger than the data; name length past the end */
    assert_int_equal(nbd_parse_go(buf, (uint32_t)len + 1, &q, &why), NBD_REP_ERR_INVALID);
    len = go_data(buf, 3, "exp", 1000, NULL);
    assert_int_equal(nbd_parse_go(buf, (uint32_t)len, &q, &why), NBD_REP_ERR_INVALID);
    len = go_data(buf, 0xffffffff, "exp", 0, NULL);
    assert_int_equal(nbd_parse_go(buf, (uint32_t)len, &q, &why), NBD_REP_ERR_INVALID);
    /* NUL inside the name; 4097-byte name */
    len = go_data(buf, 3, "e\0p", 0, NULL);
    memcpy(buf + 4, "e\0p", 3);
    len = 4 + 3 + 2;
    st_be16(buf + 7, 0);
    assert_int_equal(nbd_parse_go(buf, (uint32_t)len, &q, &why), NBD_REP_ERR_INVALID);
    longname = malloc(4098);
    memset(longname, 'a', 4097);
    longname[4097] = '\0';
    len = go_data(buf, 4097, longname, 0, NULL);
    assert_int_equal(nbd_parse_go(buf, (uint32_t)len, &q, &why), NBD_REP_ERR_INVALID);
    longname[4096] = '\0';
    len = go_data(buf, 4096, longname, 0, NULL);
    assert_int_equal(nbd_parse_go(buf, (uint32_t)len, &q, &why), 0);
    free(longname);
}

/* Builds meta context data: export name, count, then (length, query) pairs. */
static size_t meta_data(uint8_t *buf, const char *exp, uint32_t n, const char *const *qs)
{
    size_t p = 4 + strlen(exp);

    st_be32(buf, (uint32_t)strlen(exp));
    memcpy(buf + 4, exp, strlen(exp));
    st_be32(buf + p, n);
    p += 4;
    for (uint32_t i = 0; qs && qs[i]; i++) {
        st_be32(buf + p, (uint32_t)strlen(qs[i]));
        memcpy(buf + p + 4, qs[i], strlen(qs[i]));
        p += 4 + strlen(qs[i]);
    }
    return p;
}

static void test_nbd_proto_meta(void **state)
{
    static const char *const qs[] = { "base:allocation", "qemu:", NULL };
    uint8_t *buf = malloc(65536);
    NbdMetaQuery q;
    const char *why;
    size_t len = meta_data(buf, "e", 2, qs);

    assert_int_equal(nbd_parse_meta(buf, (uint32_t)len, &q, &why), 0);
    assert_int_equal(q.n_queries, 2);
    assert_int_equal(q.query_len[0], 15);
    assert_memory_equal(q.query[1], "qemu:", 5);
    for (size_t l = 0; l < len; l++) {
        assert_int_not_equal(nbd_parse_meta(buf, (uint32_t)l, &q, &why), 0);
    }
    assert_int_equal(nbd_parse_meta(buf, (uint32_t)len + 3, &q, &why), NBD_REP_ERR_INVALID);
    /* a count of 2^32-1 with little data must not be trusted */
    len = meta_data(buf, "e", 0xffffffff, qs);
    assert_int_equal(nbd_parse_meta(buf, (uint32_t)len, &q, &why), NBD_REP_ERR_INVALID);
    /* a query length pointing past the option */
    len = meta_data(buf, "e", 1, NULL);
    st_be32(buf + len, 0x7fffffff);
    assert_int_equal(nbd_parse_meta(buf, (uint32_t)len + 4, &q, &why), NBD_REP_ERR_INVALID);
    /* more than 64 queries */
    {
        const char *many[70];

        for (int i = 0; i < 69; i++) {
            many[i] = "base:";
        }
        many[69] = NULL;
        len = meta_data(buf, "", 69, many);
        assert_int_equal(nbd_parse_meta(buf, (uint32_t)len, &q, &why), NBD_REP_ERR_TOO_BIG);
    }
    free(buf);
}

static void test_nbd_proto_info(void **state)
{
    uint8_t b[16];
    NbdExportInfo info = { 0 };
    const char *why;

    st_be16(b, NBD_INFO_EXPORT);
    st_be64(b + 2, 1234);
    st_be16(b + 10, NBD_FLAG_HAS_FLAGS);
    assert_int_equal(nbd_parse_info(b, 12, &info, &why), 0);
    assert_true(info.have_export);
    assert_int_equal(info.size, 1234);
    assert_int_equal(nbd_parse_info(b, 11, &info, &why), -EINVAL);
    assert_int_equal(nbd_parse_info(b, 13, &info, &why), -EINVAL);
    assert_int_equal(nbd_parse_info(b, 1, &info, &why), -EINVAL);
    st_be16(b, NBD_INFO_BLOCK_SIZE);
    st_be32(b + 2, 512);
    st_be32(b + 6, 4096);
    st_be32(b + 10, 32 * MiB);
    assert_int_equal(nbd_parse_info(b, 14, &info, &why), 0);
    assert_int_equal(info.min_block, 512);
    st_be32(b + 2, 0);           /* minimum 0 */
    assert_int_equal(nbd_parse_info(b, 14, &info, &why), -EINVAL);
    st_be32(b + 2, 768);         /* not a power of two */
    assert_int_equal(nbd_parse_info(b, 14, &info, &why), -EINVAL);
    st_be32(b + 2, 131072);      /* minimum above 64 KiB */
    assert_int_equal(nbd_parse_info(b, 14, &info, &why), -EINVAL);
    st_be32(b + 2, 512);
    st_be32(b + 10, 1000);       /* maximum not a multiple of the minimum */
    assert_int_equal(nbd_parse_info(b, 14, &info, &why), -EINVAL);
    st_be16(b, 999);             /* unknown types are ignored */
    assert_int_equal(nbd_parse_info(b, 14, &info, &why), 0);
}

static void test_nbd_proto_chunks(void **state)
{
    uint8_t b[16];
    NbdReplyHeader h;
    size_t more;
    const char *why;

    st_be32(b, 0x12345678);
    assert_int_equal(nbd_decode_reply_head(b, &h, &more), -EINVAL);
    st_be32(b, NBD_STRUCTURED_REPLY_MAGIC);
    st_be16(b + 4, NBD_REPLY_FLAG_DONE);
    st_be16(b + 6, NBD_REPLY_TYPE_OFFSET_DATA);
    st_be64(b + 8, 7);
    assert_int_equal(nbd_decode_reply_head(b, &h, &more), 0);
    assert_int_equal(more, 4);
    h.len = 8 + 4096;
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), 0);
    h.len = 8 + 4097;            /* more data than requested */
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
    h.len = 8;                   /* no data at all */
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
    h.len = 8 + 512;             /* data for a write */
    assert_int_equal(nbd_check_chunk(&h, false, false, 4096, &why), -EINVAL);
    h.type = NBD_REPLY_TYPE_OFFSET_HOLE;
    h.len = 13;
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
    h.type = NBD_REPLY_TYPE_BLOCK_STATUS;
    h.len = 4 + 8 + 3;
    assert_int_equal(nbd_check_chunk(&h, false, true, 4096, &why), -EINVAL);
    h.len = 4 + 16;
    assert_int_equal(nbd_check_chunk(&h, false, true, 4096, &why), 0);
    h.type = NBD_REPLY_TYPE_NONE;
    h.len = 4;
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
    h.type = NBD_REPLY_TYPE_ERROR;
    h.len = 5;
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
    h.len = 0x7fffffff;
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
    h.type = 77;
    h.len = 0;
    assert_int_equal(nbd_check_chunk(&h, true, false, 4096, &why), -EINVAL);
}

static void test_nbd_proto_errno(void **state)
{
    assert_int_equal(nbd_errno_to_wire(-EROFS), NBD_EPERM);
    assert_int_equal(nbd_errno_to_wire(-EDQUOT), NBD_ENOSPC);
    assert_int_equal(nbd_errno_to_wire(-EBADF), NBD_EINVAL);
    assert_int_equal(nbd_wire_to_errno(NBD_ENOSPC), -ENOSPC);
    assert_int_equal(nbd_wire_to_errno(12345), -EINVAL);
    assert_true(nbd_string_ok("abc", 3));
    assert_false(nbd_string_ok("a\0c", 3));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nbd_proto_request_roundtrip),
        cmocka_unit_test(test_nbd_proto_request_bad_magic),
        cmocka_unit_test(test_nbd_proto_request_sizes),
        cmocka_unit_test(test_nbd_proto_request_range),
        cmocka_unit_test(test_nbd_proto_request_commands_flags),
        cmocka_unit_test(test_nbd_proto_go),
        cmocka_unit_test(test_nbd_proto_meta),
        cmocka_unit_test(test_nbd_proto_info),
        cmocka_unit_test(test_nbd_proto_chunks),
        cmocka_unit_test(test_nbd_proto_errno),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
