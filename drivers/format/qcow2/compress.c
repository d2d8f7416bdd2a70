/*
 * qcow2: cluster compression. compression_type 0 is raw deflate (zlib,
 * window bits 12, no zlib header); 1 is a zstd frame. A compressed cluster
 * on disk may be followed by padding up to its last 512-byte sector, so
 * decompression stops once a whole cluster came out.
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

bool qcow2_compression_supported(int type)
{
    return type == QCOW2_COMPRESSION_ZLIB || (type == QCOW2_COMPRESSION_ZSTD && COBLK_HAVE_ZSTD);
}

static int zlib_decompress(uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
    z_stream z;
    int ret;

    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK) {
        return -ENOMEM;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    z.next_out = dst;
    z.avail_out = (uInt)dst_len;
    ret = inflate(&z, Z_FINISH);
    /* Trailing sector padding leaves Z_BUF_ERROR with a full output: fine. */
    if ((ret != Z_STREAM_END && ret != Z_BUF_ERROR) || z.avail_out != 0) {
        ret = -EIO;
    } else {
        ret = 0;
    }
    inflateEnd(&z);
    return ret;
}

static ssize_t zlib_compress(uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
    z_stream z;
    ssize_t ret;

    memset(&z, 0, sizeof(z));
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        return -ENOMEM;
    }
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    z.next_out = dst;
    z.avail_out = (uInt)dst_len;
    ret = deflate(&z, Z_FINISH);
    ret = ret == Z_STREAM_END ? (ssize_t)(dst_len - z.avail_out) : -ENOSPC;
    deflateEnd(&z);
    return ret;
}

#if COBLK_HAVE_ZSTD
static int zstd_decompress(uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
    ZSTD_DCtx *d = ZSTD_createDCtx();
    ZSTD_outBuffer out = { dst, dst_len, 0 };
    ZSTD_inBuffer in = { src, src_len, 0 };
    int ret = -EIO;

    if (!d) {
        return -ENOMEM;
    }
    while (out.pos < out.size) {
        size_t r = ZSTD_decompressStream(d, &out, &in);

        if (ZSTD_isError(r)) {
            break;
        }
        if (r == 0 || in.pos == in.size) {
            break; /* frame done, or input exhausted */
        }
    }
    if (out.pos == out.size) {
        ret = 0;
    }
    ZSTD_freeDCtx(d);
    return ret;
}

static ssize_t zstd_compress(uint8_t *dst, size_t dst_len, const uint8_t *src, size_t src_len)
{
    size_t r = ZSTD_compress(dst, dst_len, src, src_len, 3);

    if (ZSTD_isError(r)) {
        return ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall ? -ENOSPC : -EIO;
    }
    return (ssize_t)r;
}
#endif

int qcow2_decompress(const BDRVQcow2State *s, uint8_t *dst, size_t dst_len, const uint8_t *src,
                     size_t src_len)
{
    switch (s->compression_type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_decompress(dst, dst_len, src, src_len);
#if COBLK_HAVE_ZSTD
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_decompress(dst, dst_len, src, src_len);
#endif
    default:
        return -ENOTSUP;
    }
}

ssize_t qcow2_compress(const BDRVQcow2State *s, uint8_t *dst, size_t dst_len,
                       const uint8_t *src, size_t src_len)
{
    switch (s->compression_type) {
    case QCOW2_COMPRESSION_ZLIB:
        return zlib_compress(dst, dst_len, src, src_len);
#if COBLK_HAVE_ZSTD
    case QCOW2_COMPRESSION_ZSTD:
        return zstd_compress(dst, dst_len, src, src_len);
#endif
    default:
        return -ENOTSUP;
    }
}
