/*
 * Whole-chunk decompression for the read-only formats (decomp.h).
 *
 * ADC (Apple Data Compression), from its public descriptions: a sequence of
 * codes, each starting with one byte b:
 *   b & 0x80          a literal run: (b & 0x7f) + 1 bytes follow, copied out;
 *   b & 0x40          a long match: ((b & 0x3f) + 4) bytes copied from
 *                     distance (next two bytes, big-endian) + 1 back;
 *   otherwise         a short match: (((b >> 2) & 0x0f) + 3) bytes copied from
 *                     distance (((b & 3) << 8) | next byte) + 1 back.
 * A match may overlap the bytes it produces (distance 1 repeats a byte).
 * The decoder checks every length against the input left and the output
 * left, and every distance against the bytes already produced.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "coblk-config.h"
#include "drivers/format/decomp.h"

#if COBLK_HAVE_BZIP2
#include <bzlib.h>
#endif
#if COBLK_HAVE_LZMA
#include <lzma.h>
#endif

bool decomp_available(DecompType t)
{
    switch (t) {
    case DECOMP_ZLIB:
    case DECOMP_ADC:
        return true;
    case DECOMP_BZIP2:
        return COBLK_HAVE_BZIP2;
    case DECOMP_XZ:
    case DECOMP_LZMA:
        return COBLK_HAVE_LZMA;
    }
    return false;
}

static int decomp_adc(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
                      const char **why)
{
    size_t ip = 0, op = 0;

    while (ip < in_len) {
        uint8_t b = in[ip++];
        size_t n, dist;

        if (b & 0x80) {
            n = (size_t)(b & 0x7f) + 1;
            if (n > in_len - ip) {
                *why = "a literal run goes past the end of the compressed data";
                return -EIO;
            }
            if (n > out_len - op) {
                *why = "the data decodes to more bytes than the chunk holds";
                return -EIO;
            }
            memcpy(out + op, in + ip, n);
            ip += n;
            op += n;
            continue;
        }
        if (b & 0x40) {
            if (in_len - ip < 2) {
                *why = "a match code is cut short";
                return -EIO;
            }
            n = (size_t)(b & 0x3f) + 4;
            dist = ((size_t)in[ip] << 8 | in[ip + 1]) + 1;
            ip += 2;
        } else {
            if (in_len - ip < 1) {
                *why = "a match code is cut short";
                return -EIO;
            }
            n = (size_t)((b >> 2) & 0x0f) + 3;
            dist = ((size_t)(b & 3) << 8 | in[ip]) + 1;
            ip++;
        }
        if (dist > op) {
            *why = "a match refers to bytes before the start of the chunk";
            return -EIO;
        }
        if (n > out_len - op) {
            *why = "the data decodes to more bytes than the chunk holds";
            return -EIO;
        }
        for (size_t i = 0; i < n; i++, op++) {
            out[op] = out[op - dist];   /* byte by byte: matches may overlap */
        }
    }
    if (op != out_len) {
        *why = "the data decodes to fewer bytes than the chunk holds";
        return -EIO;
    }
    return 0;
}

static int decomp_zlib(DecompCtx *ctx, const uint8_t *in, size_t in_len, uint8_t *out,
                       size_t out_len, const char **why)
{
    z_stream *zs = ctx->zs;
    int zret;

    if (!zs) {
        zs = calloc(1, sizeof(*zs));
        if (!zs) {
            return -ENOMEM;
        }
        if (inflateInit(zs) != Z_OK) {
            free(zs);
            return -ENOMEM;
        }
        ctx->zs = zs;
    } else if (inflateReset(zs) != Z_OK) {
        *why = "zlib reset failed";
        return -EIO;
    }
    /* Chunk sizes are capped far below 4 GiB by the callers. */
    zs->next_in = (Bytef *)in;
    zs->avail_in = (uInt)in_len;
    zs->next_out = out;
    zs->avail_out = (uInt)(out_len + 1);
    zret = inflate(zs, Z_FINISH);
    if (zret != Z_STREAM_END) {
        *why = zret == Z_BUF_ERROR && zs->avail_out == 0
                   ? "the zlib stream decodes to more bytes than the chunk holds"
                   : "the zlib stream is damaged or cut short";
        return -EIO;
    }
    if (zs->avail_out != 1) {
        *why = "the zlib stream decodes to fewer bytes than the chunk holds";
        return -EIO;
    }
    return 0;
}

static int decomp_bzip2(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len,
                        const char **why)
{
#if COBLK_HAVE_BZIP2
    unsigned int got = (unsigned int)(out_len + 1);
    int ret = BZ2_bzBuffToBuffDecompress((char *)out, &got, (char *)in, (unsigned int)in_len,
                                         0, 0);

    if (ret == BZ_MEM_ERROR) {
        return -ENOMEM;
    }
    if (ret != BZ_OK || got != out_len) {
        *why = ret == BZ_OUTBUFF_FULL || (ret == BZ_OK && got > out_len)
                   ? "the bzip2 stream decodes to more bytes than the chunk holds"
                   : ret == BZ_OK ? "the bzip2 stream decodes to fewer bytes than the chunk holds"
                                  : "the bzip2 stream is damaged or cut short";
        return -EIO;
    }
    return 0;
#else
    return -ENOTSUP;
#endif
}

#if COBLK_HAVE_LZMA
static int decomp_lzma(DecompCtx *ctx, bool xz_only, const uint8_t *in, size_t in_len,
                       uint8_t *out, size_t out_len, const char **why)
{
    lzma_stream *s = ctx->lz;
    lzma_ret ret;

    if (!s) {
        s = malloc(sizeof(*s));
        if (!s) {
            return -ENOMEM;
        }
        *s = (lzma_stream)LZMA_STREAM_INIT;
        ctx->lz = s;
    }
    /* Re-initialising reuses the stream's memory where it can. */
    ret = xz_only ? lzma_stream_decoder(s, DECOMP_LZMA_MEMLIMIT, 0)
                  : lzma_auto_decoder(s, DECOMP_LZMA_MEMLIMIT, 0);
    if (ret != LZMA_OK) {
        return ret == LZMA_MEM_ERROR ? -ENOMEM : -EIO;
    }
    s->next_in = in;
    s->avail_in = in_len;
    s->next_out = out;
    s->avail_out = out_len + 1;
    do {
        /* liblzma returns LZMA_BUF_ERROR on a second call without progress. */
        ret = lzma_code(s, LZMA_FINISH);
    } while (ret == LZMA_OK);
    if (ret == LZMA_MEM_ERROR) {
        return -ENOMEM;
    }
    if (ret != LZMA_STREAM_END) {
        *why = ret == LZMA_MEMLIMIT_ERROR ? "the LZMA stream needs more than 128 MiB to decode"
               : ret == LZMA_BUF_ERROR && s->avail_out == 0
                   ? "the LZMA stream decodes to more bytes than the chunk holds"
               : ret == LZMA_FORMAT_ERROR ? "the data is not an xz or LZMA stream"
                                          : "the LZMA stream is damaged or cut short";
        return -EIO;
    }
    if (s->avail_out != 1) {
        *why = "the LZMA stream decodes to fewer bytes than the chunk holds";
        return -EIO;
    }
    return 0;
}
#endif

int decomp_run(DecompCtx *ctx, DecompType t, const uint8_t *in, size_t in_len, uint8_t *out,
               size_t out_len, const char **why)
{
    *why = "";
    switch (t) {
    case DECOMP_ZLIB:
        return decomp_zlib(ctx, in, in_len, out, out_len, why);
    case DECOMP_BZIP2:
        return decomp_bzip2(in, in_len, out, out_len, why);
    case DECOMP_ADC:
        return decomp_adc(in, in_len, out, out_len, why);
    case DECOMP_XZ:
    case DECOMP_LZMA:
#if COBLK_HAVE_LZMA
        return decomp_lzma(ctx, t == DECOMP_XZ, in, in_len, out, out_len, why);
#else
        return -ENOTSUP;
#endif
    }
    return -ENOTSUP;
}

void decomp_ctx_free(DecompCtx *ctx)
{
    if (ctx->zs) {
        inflateEnd(ctx->zs);
        free(ctx->zs);
        ctx->zs = NULL;
    }
#if COBLK_HAVE_LZMA
    if (ctx->lz) {
        lzma_end(ctx->lz);
        free(ctx->lz);
        ctx->lz = NULL;
    }
#endif
}
