/*
 * libFuzzer target for the raw deflate decoder of qcow2 compressed reads
 * (drivers/format/qcow2/inflate-fast.c), checked against zlib's inflate().
 *
 * Input: two bytes giving the output size (1 to 256 KiB, in steps of 4
 * bytes), then the stream. The input and output sit at the end of exact
 * allocations, so an access past either shows to ASan. Checks:
 * - decoding the whole stream succeeds exactly when zlib's inflate() with a
 *   32 KiB window reaches the end of the stream within the output size, and
 *   then gives the same bytes;
 * - decoding stopped at some point gives at least that many bytes (or the
 *   whole stream), fewer than 258 more, and the same bytes as zlib up to
 *   where zlib got.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "drivers/format/qcow2/inflate-fast.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

/* zlib's output of in into out[0, out_len); returns whether the stream ended. */
static bool zlib_inflate(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
                         size_t *got)
{
    z_stream z = { 0 };
    int ret;

    check(inflateInit2(&z, -15) == Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)in_len;
    z.next_out = out;
    z.avail_out = (uInt)out_len;
    ret = inflate(&z, Z_FINISH);
    *got = z.total_out;
    inflateEnd(&z);
    return ret == Z_STREAM_END;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static Qcow2InflateTables tabs;
    size_t out_len, in_len, zgot, stop;
    uint8_t *in, *out, *zout;
    bool ended, zended;
    ssize_t n, m;

    if (size < 2) {
        return 0;
    }
    out_len = ((size_t)data[0] << 8 | data[1]) * 4 + 1;
    in_len = size - 2;
    in = malloc(in_len ? in_len : 1);
    out = malloc(out_len);
    zout = malloc(out_len);
    check(in && out && zout);
    memcpy(in, data + 2, in_len);

    zended = zlib_inflate(in, in_len, zout, out_len, &zgot);
    n = qcow2_raw_inflate(&tabs, in, in_len, out, out_len, SIZE_MAX, &ended);
    check((n >= 0) == zended);
    if (n >= 0) {
        check(ended && (size_t)n == zgot && memcmp(out, zout, zgot) == 0);
    }

    stop = (in_len * 2654435761u + data[1]) % (out_len + 1);
    m = qcow2_raw_inflate(&tabs, in, in_len, out, out_len, stop, &ended);
    if (n >= 0) {
        check(m >= 0);
    }
    if (m >= 0) {
        check((size_t)m <= out_len);
        check(ended ? (size_t)m < stop + 258 || (size_t)m == (size_t)n
                    : (size_t)m >= stop && (stop == 0 ? m == 0 : (size_t)m < stop + 258));
        check(memcmp(out, zout, (size_t)m < zgot ? (size_t)m : zgot) == 0);
    }
    free(in);
    free(out);
    free(zout);
    return 0;
}
