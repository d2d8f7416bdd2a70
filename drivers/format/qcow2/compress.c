/*
 * qcow2: cluster compression codecs. compression_type 0 is raw deflate
 * (zlib, window bits 12, no zlib header: readers such as QEMU inflate with
 * a 4 KiB window, so the compressor must not use a larger one); 1 is a zstd
 * frame. A compressed cluster on disk may be followed by padding up to its
 * last 512-byte sector, so decompression stops once a whole cluster came out.
 *
 * Inflating uses libdeflate when it is available (faster; zlib remains the
 * fallback for streams it does not take). Deflating is in compress-deflate.c
 * (ISA-L when available, zlib otherwise).
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
#if COBLK_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif

#define QCOW2_ZLIB_WINDOW_BITS (-12)

bool qcow2_compression_supported(int type)
{
    return type == QCOW2_COMPRESSION_ZLIB || (type == QCOW2_COMPRESSION_ZSTD && COBLK_HAVE_ZSTD);
}

#if COBLK_HAVE_LIBDEFLATE
/*
 * libdeflate inflates whole buffers about twice as fast as zlib. It wants the
 * output to be exactly one cluster and the stream to end within the input;
 * anything else (a stream that goes on past the cluster, or is cut short
 * after filling it, which zlib's reader accepts) is left to zlib, so both
 * accept the same images.
 */
static int fast_inflate(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                        size_t src_len)
{
    if (!c->libdeflate) {
        c->libdeflate = libdeflate_alloc_decompressor();
        if (!c->libdeflate) {
            return -ENOMEM;
        }
    }
    return libdeflate_deflate_decompress(c->libdeflate, src, src_len, dst, dst_len, NULL) ==
           LIBDEFLATE_SUCCESS ? 0 : -EIO;
}
#else
static int fast_inflate(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                        size_t src_len)
{
    (void)c, (void)dst, (void)dst_len, (void)src, (void)src_len;
    return -ENOTSUP;
}
#endif

static int zlib_decompress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                           size_t src_len)
{
    int ret = fast_inflate(c, dst, dst_len, src, src_len);
    z_stream *z = &c->inflate;

    if (ret == 0) {
        return 0;
    }
    if (!c->inflate_ready) {
        memset(z, 0, sizeof(*z));
        if (inflateInit2(z, QCOW2_ZLIB_WINDOW_BITS) != Z_OK) {
            return -ENOMEM;
        }
        c->inflate_ready = true;
    } else if (inflateReset(z) != Z_OK) {
        return -EIO;
    }
    z->next_in = (Bytef *)src;
    z->avail_in = (uInt)src_len;
    z->next_out = dst;
    z->avail_out = (uInt)dst_len;
    ret = inflate(z, Z_FINISH);
    /* Trailing sector padding leaves Z_BUF_ERROR with a full output: fine. */
    if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR) || z->avail_out != 0) {
        return -EIO;
    }
    return 0;
}

#if COBLK_HAVE_ZSTD
static int zstd_decompress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                           size_t src_len)
{
    ZSTD_outBuffer out = { dst, dst_len, 0 };
    ZSTD_inBuffer in = { src, src_len, 0 };

    if (!c->zstd_d) {
        c->zstd_d = ZSTD_createDCtx();
        if (!c->zstd_d) {
            return -ENOMEM;
        }
    }
    ZSTD_DCtx_reset(c->zstd_d, ZSTD_reset_session_only);
    while (out.pos < out.size) {
        size_t r = ZSTD_decompressStream(c->zstd_d, &out, &in);

        if (ZSTD_isError(r)) {
            break;
        }
        if (r == 0 || in.pos == in.size) {
            break; /* frame done, or input exhausted */
        }
    }
    return out.pos == out.size ? 0 : -EIO;
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

int qcow2_codec_decompress(Qcow2Codec *c, int type, uint8_t *dst, size_t dst_len,
                           const uint8_t *src, size_t src_len)
{
    switch (type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_decompress(c, dst, dst_len, src, src_len);
#if COBLK_HAVE_ZSTD
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_decompress(c, dst, dst_len, src, src_len);
#endif
    default:
        return -ENOTSUP;
    }
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
    if (c->inflate_ready) {
        inflateEnd(&c->inflate);
    }
#if COBLK_HAVE_LIBDEFLATE
    libdeflate_free_decompressor(c->libdeflate);
#endif
#if COBLK_HAVE_ZSTD
    ZSTD_freeCCtx(c->zstd_c);
    ZSTD_freeDCtx(c->zstd_d);
#endif
    memset(c, 0, sizeof(*c));
}
