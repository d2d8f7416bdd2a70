/*
 * qcow2: cluster compression codecs. compression_type 0 is raw deflate
 * (zlib, window bits 12, no zlib header: readers such as QEMU inflate with
 * a 4 KiB window, so the compressor must not use a larger one); 1 is a zstd
 * frame. A compressed cluster on disk may be followed by padding up to its
 * last 512-byte sector, so decompression stops once a whole cluster came out.
 *
 * A read of part of a cluster decompresses only the part of the cluster up
 * to the end of the read (a prefix: both codecs are sequential). Inflating
 * is in compress-inflate.c (libdeflate, ISA-L, zlib), deflating in
 * compress-deflate.c (ISA-L when available, zlib otherwise).
 *
 * A Qcow2Codec keeps its zlib / zstd contexts between calls (they are reset,
 * not reallocated). It is not thread-safe: one user at a time, but that user
 * may be any thread (the compression workers run it on the thread pool).
 */
#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

#include "coblk-config.h"
#include "qcow2.h"

#if COBLK_HAVE_ZSTD
#include <zstd.h>
#include <zstd_errors.h>
#endif

/* Compressed bytes fed to zstd per call when a prefix will do (blocks end within steps). */
#define QCOW2_ZSTD_STEP 4096

bool qcow2_compression_supported(int type)
{
    return type == QCOW2_COMPRESSION_ZLIB || (type == QCOW2_COMPRESSION_ZSTD && COBLK_HAVE_ZSTD);
}

#if COBLK_HAVE_ZSTD
/*
 * At least need bytes of the cluster: zstd decodes whole blocks (up to 128
 * KiB), so for a prefix it is fed QCOW2_ZSTD_STEP input bytes at a time and
 * stopped once the blocks out cover need bytes; the frame must not end
 * before the cluster is full.
 */
static ssize_t zstd_decompress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                               const uint8_t *src, size_t src_len)
{
    ZSTD_outBuffer out = { dst, dst_len, 0 };
    ZSTD_inBuffer in = { src, 0, 0 };
    size_t step = need < dst_len ? QCOW2_ZSTD_STEP : src_len;

    if (!c->zstd_d) {
        c->zstd_d = ZSTD_createDCtx();
        if (!c->zstd_d) {
            return -ENOMEM;
        }
    }
    ZSTD_DCtx_reset(c->zstd_d, ZSTD_reset_session_only);
    while (out.pos < need) {
        size_t r, was_in, was_out;

        if (in.pos == in.size) {
            if (in.size == src_len) {
                return -EIO; /* input exhausted */
            }
            in.size = src_len - in.size < step ? src_len : in.size + step;
        }
        was_in = in.pos;
        was_out = out.pos;
        r = ZSTD_decompressStream(c->zstd_d, &out, &in);
        if (ZSTD_isError(r) || (in.pos == was_in && out.pos == was_out)) {
            return -EIO;
        }
        if (r == 0) {
            return out.pos == out.size ? (ssize_t)out.pos : -EIO; /* frame done */
        }
    }
    return (ssize_t)out.pos;
}

static ssize_t zstd_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                             size_t src_len)
{
    size_t r;

    if (!c->zstd_c) {
        c->zstd_c = ZSTD_createCCtx();
        if (!c->zstd_c) {
            return -ENOMEM;
        }
    }
    r = ZSTD_compressCCtx(c->zstd_c, dst, dst_len, src, src_len, 3);
    if (ZSTD_isError(r)) {
        return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
    }
    return (ssize_t)r;
}
#endif

ssize_t qcow2_codec_inflate(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len, size_t need,
                            const uint8_t *src, size_t src_len)
{
    need = need > dst_len || need == 0 ? dst_len : need;
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return qcow2_inflate_prefix(c, dst, dst_len, need, src, src_len);
#if COBLK_HAVE_ZSTD
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_decompress(c, dst, dst_len, need, src, src_len);
#endif
    default:
        return -ENOTSUP;
    }
}

int qcow2_codec_decompress(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len,
                           const uint8_t *src, size_t src_len)
{
    ssize_t ret = qcow2_codec_inflate(c, type, dst, dst_len, dst_len, src, src_len);

    return ret < 0 ? (int)ret : 0;
}

ssize_t qcow2_codec_compress(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len,
                             const uint8_t *src, size_t src_len)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return qcow2_deflate_compress(c, dst, dst_len, src, src_len);
#if COBLK_HAVE_ZSTD
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_compress(c, dst, dst_len, src, src_len);
#endif
    default:
        return -ENOTSUP;
    }
}

void qcow2_codec_free(Qcow2Codec *c)
{
    qcow2_deflate_free(c);
    qcow2_inflate_free(c);
#if COBLK_HAVE_ZSTD
    ZSTD_freeCCtx(c->zstd_c);
    ZSTD_freeDCtx(c->zstd_d);
#endif
    memset(c, 0, sizeof(*c));
}
