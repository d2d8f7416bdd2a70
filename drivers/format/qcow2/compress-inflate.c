/*
 * qcow2: inflating deflate clusters (compression_type 0), whole or a prefix.
 *
 * Deflate is sequential, so a read of [off, off + len) of a compressed
 * cluster needs only the first off + len bytes of it ("need"): decoding
 * stops there. A read of 4 KiB at a random place then inflates half a
 * cluster on average instead of all of it.
 *
 * Engines (CPU per cluster measured on the crand image's clusters by
 * coblk-inflate-bench, bench/README.md "Our own inflater"):
 * - ours (inflate-fast.c): decodes straight into the cluster buffer and
 *   stops once need bytes are out, at ~1.1x libdeflate's CPU per byte. The
 *   default for every prefix (and whole clusters without libdeflate).
 * - libdeflate: the fastest per byte, but whole buffers only (it cannot stop
 *   early, and what it leaves in a too-short output buffer is unspecified).
 *   The default for whole clusters.
 * - ISA-L isal_inflate(): as fast as ours per byte but it stops only when its
 *   input runs out, so it is fed the compressed bytes QCOW2_INFLATE_STEP at a
 *   time into a whole-cluster output buffer and stopped once need bytes came
 *   out (it decodes at most one step too far). Given an output buffer of only
 *   need bytes instead, it would decode into its own 64 KiB buffer first.
 * - zlib inflate(), windowBits -12 (as QEMU reads): ~2x libdeflate's CPU
 *   per byte; streams with an exact output limit. The fallback of libdeflate
 *   for streams that do not end within their input.
 * COBLK_QCOW2_INFLATE=own|zlib|isal|libdeflate in the environment (read when
 * a codec first inflates) forces one engine for every read (libdeflate: whole
 * clusters only; each still falls back to zlib where the default does), so
 * that the tests cover each and a benchmark can compare them.
 *
 * What is accepted, for every engine: the cluster's bytes must come out of
 * the stream; trailing input is sector padding; a stream that would go on
 * past the cluster is cut there (as zlib-based readers such as QEMU do). A
 * stream that ends before the cluster is full, or bad data, is -EIO as soon
 * as the decoder meets it: a prefix read only decodes its prefix, so damage
 * further into the stream shows only to the reads that reach it.
 *
 * Our decoder's tables (~56 KiB), the ISA-L state (~85 KiB) and the zlib
 * stream are allocated on first use and kept with the codec: nothing is
 * allocated per cluster.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

#include "coblk-config.h"
#include "inflate-fast.h"
#include "qcow2.h"

#if COBLK_HAVE_LIBDEFLATE
#include <libdeflate.h>
#endif
#if COBLK_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define QCOW2_ZLIB_WINDOW_BITS (-12)
/* Compressed bytes fed to ISA-L per call: 512 to 2048 cost the same; 4096 overshoots. */
#define QCOW2_INFLATE_STEP 1024

enum { INFLATE_UNSET, INFLATE_AUTO, INFLATE_ZLIB, INFLATE_ISAL, INFLATE_LIBDEFLATE, INFLATE_OWN };

static int inflate_engine(Qcow2Codec *c)
{
    if (c->inflate_engine == INFLATE_UNSET) {
        const char *env = getenv("COBLK_QCOW2_INFLATE");

        c->inflate_engine = !env                         ? INFLATE_AUTO
                          : strcmp(env, "zlib") == 0       ? INFLATE_ZLIB
                          : strcmp(env, "isal") == 0       ? INFLATE_ISAL
                          : strcmp(env, "libdeflate") == 0 ? INFLATE_LIBDEFLATE
                          : strcmp(env, "own") == 0        ? INFLATE_OWN
                                                           : INFLATE_AUTO;
    }
    return c->inflate_engine;
}

#if COBLK_HAVE_LIBDEFLATE
/*
 * The whole cluster, which must end within the input. Anything else (a
 * stream that goes on past the cluster, or is cut short after filling it,
 * which zlib's reader accepts) is left to zlib, so both accept the same
 * images.
 */
static ssize_t libdeflate_whole(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                                size_t src_len)
{
    if (!c->libdeflate) {
        c->libdeflate = libdeflate_alloc_decompressor();
        if (!c->libdeflate) {
            return -ENOMEM;
        }
    }
    return libdeflate_deflate_decompress(c->libdeflate, src, src_len, dst, dst_len, NULL) ==
           LIBDEFLATE_SUCCESS ? (ssize_t)dst_len : -EIO;
}
#define HAVE_LIBDEFLATE true
#else
static ssize_t libdeflate_whole(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                                size_t src_len)
{
    (void)c, (void)dst, (void)dst_len, (void)src, (void)src_len;
    return -ENOTSUP;
}
#define HAVE_LIBDEFLATE false
#endif

#if COBLK_HAVE_ISAL
/* At least need bytes of the cluster, fed QCOW2_INFLATE_STEP input bytes at a time. */
static ssize_t isal_prefix(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                           const uint8_t *src, size_t src_len)
{
    struct inflate_state *st = c->isal_inflate;
    size_t left = src_len;

    if (!st) {
        st = c->isal_inflate = malloc(sizeof(*st));
        if (!st) {
            return -ENOMEM;
        }
    }
    isal_inflate_init(st);
    st->crc_flag = ISAL_DEFLATE;
    st->next_in = (uint8_t *)src;
    st->avail_in = 0;
    st->next_out = dst;
    st->avail_out = (uint32_t)dst_len;
    while (st->total_out < need && st->block_state != ISAL_BLOCK_FINISH) {
        size_t step = left < QCOW2_INFLATE_STEP ? left : QCOW2_INFLATE_STEP;

        if (step == 0) {
            return -EIO; /* the stream is cut short */
        }
        st->avail_in += (uint32_t)step;
        left -= step;
        if (isal_inflate(st) < 0) {
            return -EIO;
        }
    }
    if (st->total_out < need ||
        (st->block_state == ISAL_BLOCK_FINISH && st->total_out != dst_len)) {
        return -EIO; /* the stream ended before the end of the cluster */
    }
    return st->total_out;
}
#define HAVE_ISAL true
#else
static ssize_t isal_prefix(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                           const uint8_t *src, size_t src_len)
{
    (void)c, (void)dst, (void)dst_len, (void)need, (void)src, (void)src_len;
    return -ENOTSUP;
}
#define HAVE_ISAL false
#endif

/* Exactly need bytes of the cluster (all of it: need == dst_len). */
static ssize_t zlib_prefix(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                           const uint8_t *src, size_t src_len)
{
    z_stream *z = &c->inflate;
    int ret;

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
    z->avail_out = (uInt)need;
    ret = inflate(z, Z_SYNC_FLUSH);
    if (ret == Z_STREAM_END) {
        /* The stream ended: it must have filled the cluster exactly. */
        return need == dst_len && z->avail_out == 0 ? (ssize_t)need : -EIO;
    }
    /* Z_OK / Z_BUF_ERROR with a full output: need bytes came out (input may remain). */
    if ((ret != Z_OK && ret != Z_BUF_ERROR) || z->avail_out != 0) {
        return -EIO;
    }
    return (ssize_t)need;
}

/*
 * Our decoder (inflate-fast.c): at least need bytes, stopped there. The same
 * acceptance as the others: the stream may go on past the cluster (cut), but
 * must not end before it is full.
 */
static ssize_t own_prefix(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                          const uint8_t *src, size_t src_len)
{
    bool ended;
    ssize_t n;

    if (!c->own_inflate) {
        c->own_inflate = malloc(sizeof(*c->own_inflate));
        if (!c->own_inflate) {
            return -ENOMEM;
        }
    }
    n = qcow2_raw_inflate(c->own_inflate, src, src_len, dst, dst_len, need, &ended);
    if (n < 0 || (size_t)n < need || (ended && (size_t)n != dst_len)) {
        return -EIO;
    }
    return n;
}

ssize_t qcow2_inflate_prefix(Qcow2Codec *c, uint8_t *dst, size_t dst_len, size_t need,
                             const uint8_t *src, size_t src_len)
{
    int engine = inflate_engine(c);
    ssize_t ret;

    need = need > dst_len || need == 0 ? dst_len : need;
    switch (engine) {
    case INFLATE_ZLIB:
        return zlib_prefix(c, dst, dst_len, need, src, src_len);
    case INFLATE_OWN:
        return own_prefix(c, dst, dst_len, need, src, src_len);
    case INFLATE_ISAL:
        if (HAVE_ISAL) {
            return isal_prefix(c, dst, dst_len, need, src, src_len);
        }
        return zlib_prefix(c, dst, dst_len, need, src, src_len);
    case INFLATE_AUTO:
        if (need < dst_len || !HAVE_LIBDEFLATE) {
            return own_prefix(c, dst, dst_len, need, src, src_len);
        }
        break;
    default: /* INFLATE_LIBDEFLATE: whole clusters */
        if (!HAVE_LIBDEFLATE) {
            return zlib_prefix(c, dst, dst_len, need, src, src_len);
        }
        break;
    }
    ret = libdeflate_whole(c, dst, dst_len, src, src_len);
    return ret == -EIO ? zlib_prefix(c, dst, dst_len, dst_len, src, src_len) : ret;
}

void qcow2_inflate_free(Qcow2Codec *c)
{
    if (c->inflate_ready) {
        inflateEnd(&c->inflate);
        c->inflate_ready = false;
    }
#if COBLK_HAVE_LIBDEFLATE
    libdeflate_free_decompressor(c->libdeflate);
    c->libdeflate = NULL;
#endif
    free(c->isal_inflate);
    c->isal_inflate = NULL;
    free(c->own_inflate);
    c->own_inflate = NULL;
    c->inflate_engine = INFLATE_UNSET;
}
