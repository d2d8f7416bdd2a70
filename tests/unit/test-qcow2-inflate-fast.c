/*
 * Unit tests: the raw deflate decoder of qcow2 compressed reads
 * (drivers/format/qcow2/inflate-fast.c).
 *
 * Streams made by zlib's deflate() (levels 0-9; strategies default,
 * Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED; 32 KiB and 4 KiB windows;
 * random, text-like, run-length, zero and mixed data; 0 bytes to 2 MiB) must
 * decode to what zlib's inflate() gives, whole and stopped at every stop
 * point for streams up to 2 KiB (at some 32-100 points plus the last bytes for
 * longer ones): at least stop_at bytes, a prefix of the data, at most one symbol
 * (258 bytes) past it. Hand-made bad streams give -EIO for each error class,
 * an output that is too short -ENOSPC, and nothing is read or written out of
 * bounds (the inputs and outputs sit at the end of their allocations, so
 * ASan sees one byte too far).
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>
#include <zlib.h>

#include "drivers/format/qcow2/inflate-fast.h"

#define KiB 1024
#define MiB (1024 * 1024)

enum { K_RANDOM, K_TEXT, K_RUNS, K_ZERO, K_MIXED, K_NKINDS };

static Qcow2InflateTables *tabs;

static int setup(void **state)
{
    (void)state;
    tabs = malloc(sizeof(*tabs));
    return tabs ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    free(tabs);
    return 0;
}

static void fill(uint8_t *buf, size_t len, int kind, unsigned seed)
{
    static const char *const words[] = { "block ", "cluster ", "qcow2 ", "refcount ", "table\n",
                                         "the ", "of ", "image ", "compressed ", "L2 " };
    size_t i = 0;

    while (i < len) {
        int k = kind == K_MIXED ? (int)(rand_r(&seed) % 4) : kind;
        size_t n = kind == K_MIXED ? 1 + (size_t)rand_r(&seed) % 3000 : len - i;

        n = n > len - i ? len - i : n;
        for (size_t j = 0; j < n;) {
            if (k == K_RANDOM) {
                buf[i + j++] = (uint8_t)(rand_r(&seed) >> 7);
            } else if (k == K_ZERO) {
                buf[i + j++] = 0;
            } else if (k == K_RUNS) {
                uint8_t c = (uint8_t)(rand_r(&seed) % 4);
                size_t r = 1 + rand_r(&seed) % 40;

                for (; r > 0 && j < n; r--) {
                    buf[i + j++] = c;
                }
            } else {
                const char *w = words[rand_r(&seed) % 10];

                for (; *w && j < n; w++) {
                    buf[i + j++] = (uint8_t)*w;
                }
            }
        }
        i += n;
    }
}

/* A raw deflate stream of src: *clen bytes in a malloc'd buffer that ends where the stream does. */
static uint8_t *zdeflate(const uint8_t *src, size_t len, int level, int wbits, int strategy,
                         size_t *clen)
{
    z_stream z = { 0 };
    size_t cap = len + len / 8 + 4096; /* stored blocks cost 5 bytes per 64 KiB */
    uint8_t *tmp = malloc(cap), *out;

    assert_non_null(tmp);
    assert_int_equal(deflateInit2(&z, level, Z_DEFLATED, wbits, 9, strategy), Z_OK);
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)len;
    z.next_out = tmp;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *clen = z.total_out;
    deflateEnd(&z);
    out = malloc(*clen ? *clen : 1);
    assert_non_null(out);
    memcpy(out, tmp, *clen);
    free(tmp);
    return out;
}

/* zlib's inflate() of the stream must give src back (checks the reference itself). */
static void zcheck(const uint8_t *c, size_t clen, const uint8_t *src, size_t len)
{
    z_stream z = { 0 };
    uint8_t *out = malloc(len + 1);

    assert_non_null(out);
    assert_int_equal(inflateInit2(&z, -15), Z_OK);
    z.next_in = (Bytef *)c;
    z.avail_in = (uInt)clen;
    z.next_out = out;
    z.avail_out = (uInt)len + 1;
    assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
    assert_int_equal(z.total_out, len);
    assert_memory_equal(out, src, len);
    inflateEnd(&z);
    free(out);
}

static void check_stop(const uint8_t *c, size_t clen, const uint8_t *src, size_t len,
                       uint8_t *out, size_t stop)
{
    bool ended;
    ssize_t n = qcow2_raw_inflate(tabs, c, clen, out, len, stop, &ended);

    assert_true(n >= 0);
    assert_true((size_t)n >= stop);
    assert_true((size_t)n <= len);
    assert_true(stop == 0 ? n == 0 : (size_t)n < stop + 258);
    assert_true(!ended || (size_t)n == len);
    assert_memory_equal(out, src, (size_t)n);
}

/* Whole, cut one byte short, too short for the exact mode, and at the stop points. */
static void check_stream(const uint8_t *c, size_t clen, const uint8_t *src, size_t len)
{
    uint8_t *out = malloc(len ? len : 1);
    size_t stride = len <= 2 * KiB ? 1 : len <= 256 * KiB ? len / 97 + 1 : len / 31 + 1;
    size_t tail = len <= 64 * KiB ? 40 : 4;
    bool ended;
    ssize_t n;

    assert_non_null(out);
    zcheck(c, clen, src, len);
    n = qcow2_raw_inflate(tabs, c, clen, out, len, SIZE_MAX, &ended);
    assert_int_equal(n, (ssize_t)len);
    assert_true(ended);
    assert_memory_equal(out, src, len);
    if (len > 0) {
        assert_int_equal(qcow2_raw_inflate(tabs, c, clen, out, len - 1, SIZE_MAX, &ended),
                         -ENOSPC);
        n = qcow2_raw_inflate(tabs, c, clen, out, len - 1, len - 1, &ended);
        assert_int_equal(n, (ssize_t)len - 1);
        assert_false(ended);
        assert_memory_equal(out, src, len - 1);
    }
    for (size_t s = 0; s <= len; s += stride) {
        check_stop(c, clen, src, len, out, s);
    }
    for (size_t s = len > tail ? len - tail : 0; s <= len; s++) {
        check_stop(c, clen, src, len, out, s);
    }
    free(out);
}

static void run_one(int kind, size_t len, int level, int wbits, int strategy, unsigned seed)
{
    uint8_t *src = malloc(len ? len : 1), *c;
    size_t clen;

    assert_non_null(src);
    fill(src, len, kind, seed);
    c = zdeflate(src, len, level, wbits, strategy, &clen);
    check_stream(c, clen, src, len);
    free(c);
    free(src);
}

static void test_qcow2_inflate_fast_levels(void **state)
{
    static const size_t sizes[] = { 0, 1, 3, 259, 2047, 4095, 65536 };
    (void)state;

    for (int level = 0; level <= 9; level++) {
        for (int kind = 0; kind < K_NKINDS; kind++) {
            for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                run_one(kind, sizes[i], level, -15, Z_DEFAULT_STRATEGY, (unsigned)(level + i));
            }
        }
    }
}

static void test_qcow2_inflate_fast_strategies(void **state)
{
    static const int strategies[] = { Z_FILTERED, Z_HUFFMAN_ONLY, Z_RLE, Z_FIXED };
    static const size_t sizes[] = { 1, 1000, 5000, 65536, 200000 };
    (void)state;

    for (size_t st = 0; st < 4; st++) {
        for (int kind = 0; kind < K_NKINDS; kind++) {
            for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
                run_one(kind, sizes[i], (int)(1 + st * 2), -15, strategies[st], (unsigned)i);
                run_one(kind, sizes[i], 6, -12, strategies[st], (unsigned)i + 7);
            }
        }
    }
}

static void test_qcow2_inflate_fast_large(void **state)
{
    (void)state;
    run_one(K_MIXED, 2 * MiB, 6, -15, Z_DEFAULT_STRATEGY, 1);
    run_one(K_TEXT, 2 * MiB, 9, -15, Z_DEFAULT_STRATEGY, 2);
    run_one(K_RUNS, 2 * MiB, 0, -15, Z_DEFAULT_STRATEGY, 4); /* stored blocks */
}

/* ---------------------------------------------------------------------- */
/* Hand-made bad streams */

typedef struct BitW {
    uint8_t buf[256];
    size_t bits;
} BitW;

/* Plain values: least significant bit first. */
static void put(BitW *w, unsigned v, unsigned n)
{
    for (unsigned i = 0; i < n; i++, w->bits++) {
        if (v >> i & 1) {
            w->buf[w->bits / 8] |= (uint8_t)(1u << (w->bits % 8));
        }
    }
}

/* Huffman codewords: most significant bit first. */
static void put_code(BitW *w, unsigned code, unsigned len)
{
    for (unsigned i = len; i-- > 0;) {
        put(w, code >> i & 1, 1);
    }
}

/* Fixed-code literal/length symbol (RFC 1951 3.2.6). */
static void put_fixed(BitW *w, unsigned sym)
{
    if (sym < 144) {
        put_code(w, 0x30 + sym, 8);
    } else if (sym < 256) {
        put_code(w, 0x190 + sym - 144, 9);
    } else if (sym < 280) {
        put_code(w, sym - 256, 7);
    } else {
        put_code(w, 0xc0 + sym - 280, 8);
    }
}

/* Decodes w (as a malloc'd copy of exactly its bytes) into 1 KiB; returns the result. */
static ssize_t decode(const BitW *w, size_t out_len, size_t stop)
{
    size_t len = (w->bits + 7) / 8;
    uint8_t *in = malloc(len), *out = malloc(out_len ? out_len : 1);
    bool ended;
    ssize_t n;

    assert_non_null(in);
    assert_non_null(out);
    memcpy(in, w->buf, len);
    n = qcow2_raw_inflate(tabs, in, len, out, out_len, stop, &ended);
    free(in);
    free(out);
    return n;
}

/* Dynamic header: HLIT, HDIST, and the code-length code lengths in RFC order. */
static void put_dyn_header(BitW *w, unsigned hlit, unsigned hdist, const uint8_t *cl,
                           unsigned hclen)
{
    put(w, 1, 1);
    put(w, 2, 2);
    put(w, hlit - 257, 5);
    put(w, hdist - 1, 5);
    put(w, hclen - 4, 4);
    for (unsigned i = 0; i < hclen; i++) {
        put(w, cl[i], 3);
    }
}

static void test_qcow2_inflate_fast_bad_blocks(void **state)
{
    BitW w = { 0 };
    (void)state;

    put(&w, 1, 1); /* block type 3 */
    put(&w, 3, 2);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* stored, NLEN is not ~LEN */
    put(&w, 1, 1);
    put(&w, 0, 2);
    w.bits = 8;
    put(&w, 5, 16);
    put(&w, 0, 16);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* stored, 5 bytes announced, 2 present */
    put(&w, 1, 1);
    put(&w, 0, 2);
    w.bits = 8;
    put(&w, 5, 16);
    put(&w, 0xfffa, 16);
    put(&w, 0x4141, 16);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
    assert_int_equal(decode(&w, 1024, 2), 2); /* what is there serves a shorter stop */
    assert_int_equal(decode(&w, 4, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* stored block header cut short */
    put(&w, 1, 1);
    put(&w, 0, 2);
    w.bits = 8;
    put(&w, 5, 16);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* empty input */
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
}

static void test_qcow2_inflate_fast_bad_symbols(void **state)
{
    BitW w = { 0 };
    (void)state;

    put(&w, 1, 1); /* fixed: literal/length symbol 286 */
    put(&w, 1, 2);
    put_fixed(&w, 'a');
    put_fixed(&w, 286);
    put_fixed(&w, 256);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* 287 */
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_fixed(&w, 287);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    for (unsigned d = 30; d < 32; d++) { /* distance codes 30 and 31 */
        memset(&w, 0, sizeof(w));
        put(&w, 1, 1);
        put(&w, 1, 2);
        put_fixed(&w, 'a');
        put_fixed(&w, 257);
        put_code(&w, d, 5);
        put_fixed(&w, 256);
        assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
    }

    memset(&w, 0, sizeof(w)); /* distance 2 after one byte: before the output start */
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_fixed(&w, 'a');
    put_fixed(&w, 257);
    put_code(&w, 1, 5);
    put_fixed(&w, 256);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* the same with distance 1 is fine: "aaaa" */
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_fixed(&w, 'a');
    put_fixed(&w, 257);
    put_code(&w, 0, 5);
    put_fixed(&w, 256);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), 4);
    assert_int_equal(decode(&w, 4, SIZE_MAX), 4);
    assert_int_equal(decode(&w, 3, SIZE_MAX), -ENOSPC); /* output overflow */
    assert_int_equal(decode(&w, 3, 3), 3);              /* cut */

    memset(&w, 0, sizeof(w)); /* no end-of-block: the input runs out (truncated) */
    put(&w, 1, 1);
    put(&w, 1, 2);
    put_fixed(&w, 'a');
    put_fixed(&w, 'b');
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
    assert_int_equal(decode(&w, 1024, 2), 2);

    memset(&w, 0, sizeof(w)); /* not final, and nothing follows */
    put(&w, 0, 1);
    put(&w, 1, 2);
    put_fixed(&w, 'a');
    put_fixed(&w, 256);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
}

static void test_qcow2_inflate_fast_bad_codes(void **state)
{
    uint8_t cl[19] = { 0 };
    BitW w = { 0 };
    (void)state;

    memset(cl, 1, sizeof(cl)); /* code-length code over-subscribed */
    put_dyn_header(&w, 257, 1, cl, 19);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* code-length code incomplete: one code (for 0) */
    memset(cl, 0, sizeof(cl));
    cl[3] = 1;
    put_dyn_header(&w, 257, 1, cl, 4);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    memset(&w, 0, sizeof(w)); /* HLIT 287, HDIST 31: too many symbols */
    memset(cl, 0, sizeof(cl));
    cl[2] = cl[3] = 1;
    put_dyn_header(&w, 287, 1, cl, 4);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
    memset(&w, 0, sizeof(w));
    put_dyn_header(&w, 257, 31, cl, 4);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    /* Symbols 18 ('1') and 0 ('0'): 138 zeros, then 138 more than the 120 left. */
    memset(&w, 0, sizeof(w));
    put_dyn_header(&w, 257, 1, cl, 4);
    put_code(&w, 1, 1);
    put(&w, 127, 7);
    put_code(&w, 1, 1);
    put(&w, 127, 7);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    /* 138 + 120 zeros: every length 0, no end-of-block code. */
    memset(&w, 0, sizeof(w));
    put_dyn_header(&w, 257, 1, cl, 4);
    put_code(&w, 1, 1);
    put(&w, 127, 7);
    put_code(&w, 1, 1);
    put(&w, 120 - 11, 7);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    /* Symbols 16 ('1') and 0 ('0'): a repeat with nothing before it. */
    memset(&w, 0, sizeof(w));
    memset(cl, 0, sizeof(cl));
    cl[0] = cl[3] = 1;
    put_dyn_header(&w, 257, 1, cl, 4);
    put_code(&w, 1, 1);
    put(&w, 0, 2);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    /*
     * Literal/length code incomplete: 'A' and 256 of length 2 only. Code
     * lengths: 0 -> '0', 2 -> '10', 18 -> '11' (RFC order index 15 for 2).
     */
    memset(&w, 0, sizeof(w));
    memset(cl, 0, sizeof(cl));
    cl[2] = 2;
    cl[3] = 1;
    cl[15] = 2;
    put_dyn_header(&w, 257, 1, cl, 16);
    put_code(&w, 3, 2); /* 65 zeros */
    put(&w, 65 - 11, 7);
    put_code(&w, 2, 2); /* 'A': 2 */
    put_code(&w, 3, 2); /* 190 zeros */
    put(&w, 127, 7);
    put_code(&w, 3, 2);
    put(&w, 52 - 11, 7);
    put_code(&w, 2, 2); /* 256: 2 */
    put_code(&w, 0, 1); /* the distance length: 0 */
    put_code(&w, 0, 2); /* 'A', then end of block, if it were accepted */
    put_code(&w, 1, 2);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);

    /* The same with 'A' of length 1 and 256 of length 1: complete, "A" decodes. */
    memset(&w, 0, sizeof(w));
    memset(cl, 0, sizeof(cl));
    cl[2] = 2;
    cl[3] = 2;
    cl[17] = 1; /* 1 -> '0', 0 -> '10', 18 -> '11' */
    put_dyn_header(&w, 257, 1, cl, 18);
    put_code(&w, 3, 2);
    put(&w, 65 - 11, 7);
    put_code(&w, 0, 1);
    put_code(&w, 3, 2);
    put(&w, 127, 7);
    put_code(&w, 3, 2);
    put(&w, 52 - 11, 7);
    put_code(&w, 0, 1);
    put_code(&w, 2, 2); /* no distance code */
    put_code(&w, 0, 1);
    put_code(&w, 1, 1);
    assert_int_equal(decode(&w, 1024, SIZE_MAX), 1);
    w.buf[(w.bits - 1) / 8] = 0; /* the last byte (end of block) cut off */
    w.bits = (w.bits - 1) / 8 * 8;
    assert_int_equal(decode(&w, 1024, SIZE_MAX), -EIO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qcow2_inflate_fast_levels),
        cmocka_unit_test(test_qcow2_inflate_fast_strategies),
        cmocka_unit_test(test_qcow2_inflate_fast_large),
        cmocka_unit_test(test_qcow2_inflate_fast_bad_blocks),
        cmocka_unit_test(test_qcow2_inflate_fast_bad_symbols),
        cmocka_unit_test(test_qcow2_inflate_fast_bad_codes),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
