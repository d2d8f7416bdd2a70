/*
 * qcow2: deflate compression of clusters (compression_type 0).
 *
 * On-disk format: a raw deflate stream (no zlib header or trailer) whose
 * back-references reach at most 4 KiB, because readers such as QEMU inflate
 * with zlib windowBits -12; a cluster stored compressed takes less than one
 * cluster (the caller passes dst_len = cluster_size - 1 and stores the
 * cluster uncompressed on -ENOSPC, as qemu-img does with data that does not
 * shrink).
 *
 * Engines:
 * - ISA-L igzip (optional dependency libisal), stateless deflate at level 1
 *   with hist_bits 12 (4 KiB window). On a mix of shared libraries it takes
 *   about a tenth of zlib's CPU for streams some 10% larger (bench/README.md).
 *   Level 1: level 2 gains well under 1% for 10-20% more CPU, level 3 about
 *   2% for twice the CPU.
 * - zlib (always built), default level, windowBits -12: the fallback when
 *   ISA-L is absent, or forced with COBLK_QCOW2_DEFLATE=zlib in the
 *   environment (read when a codec first compresses; used by the tests so
 *   the fallback stays tested in builds that have ISA-L).
 *
 * Incompressible clusters (random, encrypted or already compressed data) are
 * recognised before the full deflate run: see deflate_skip(). The per-codec
 * engine state (the ISA-L stream and level buffer, or the zlib stream) is
 * allocated on first use and kept with the codec: nothing is allocated per
 * cluster.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

#include "coblk-config.h"
#include "qcow2.h"

#if COBLK_HAVE_ISAL
#include <isa-l/igzip_lib.h>
#endif

#define QCOW2_DEFLATE_WINDOW_BITS 12
#define QCOW2_DEFLATE_ISAL_LEVEL 1

/* Clusters below this size are always compressed (the pre-check costs more than it saves). */
#define QCOW2_SKIP_MIN (8 * 1024)
/* Bytes of the cluster's middle compressed as a sample by deflate_skip(). */
#define QCOW2_SKIP_SAMPLE 4096
/* Largest cluster qcow2 allows: bytes_uniform()'s arithmetic relies on it. */
#define QCOW2_SKIP_MAX (2 * 1024 * 1024)

enum { DEFLATE_UNSET, DEFLATE_ZLIB, DEFLATE_ISAL };

#if COBLK_HAVE_ISAL
typedef struct Qcow2IsalDeflate {
    struct isal_zstream st;
    uint8_t level_buf[ISAL_DEF_LVL1_DEFAULT];
} Qcow2IsalDeflate;

static ssize_t isal_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                             size_t src_len)
{
    struct isal_zstream *st;
    int ret;

    if (!c->isal) {
        c->isal = malloc(sizeof(Qcow2IsalDeflate));
        if (!c->isal) {
            return -ENOMEM;
        }
    }
    st = &c->isal->st;
    isal_deflate_stateless_init(st);
    st->level = QCOW2_DEFLATE_ISAL_LEVEL;
    st->level_buf = c->isal->level_buf;
    st->level_buf_size = sizeof(c->isal->level_buf);
    st->hist_bits = QCOW2_DEFLATE_WINDOW_BITS;
    st->gzip_flag = IGZIP_DEFLATE;
    st->flush = NO_FLUSH;
    st->end_of_stream = 1;
    st->next_in = (uint8_t *)src;
    st->avail_in = (uint32_t)src_len;
    st->next_out = dst;
    st->avail_out = (uint32_t)dst_len;
    ret = isal_deflate_stateless(st);
    if (ret == STATELESS_OVERFLOW) {
        return -ENOSPC;
    }
    if (ret != COMP_OK || st->avail_in != 0) {
        return -EIO;
    }
    return (ssize_t)st->total_out;
}

static int default_engine(void)
{
    return DEFLATE_ISAL;
}
#else
typedef struct Qcow2IsalDeflate Qcow2IsalDeflate;

static ssize_t isal_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                             size_t src_len)
{
    (void)c, (void)dst, (void)dst_len, (void)src, (void)src_len;
    return -ENOTSUP;
}

static int default_engine(void)
{
    return DEFLATE_ZLIB;
}
#endif

static ssize_t zlib_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                             size_t src_len)
{
    z_stream *z = &c->deflate;
    int ret;

    if (!c->deflate_ready) {
        memset(z, 0, sizeof(*z));
        if (deflateInit2(z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -QCOW2_DEFLATE_WINDOW_BITS, 9,
                         Z_DEFAULT_STRATEGY) != Z_OK) {
            return -ENOMEM;
        }
        c->deflate_ready = true;
    } else if (deflateReset(z) != Z_OK) {
        return -EIO;
    }
    z->next_in = (Bytef *)src;
    z->avail_in = (uInt)src_len;
    z->next_out = dst;
    z->avail_out = (uInt)dst_len;
    ret = deflate(z, Z_FINISH);
    return ret == Z_STREAM_END ? (ssize_t)(dst_len - z->avail_out) : -ENOSPC;
}

static ssize_t engine_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                               size_t src_len)
{
    if (c->deflate_engine == DEFLATE_UNSET) {
        const char *env = getenv("COBLK_QCOW2_DEFLATE");

        c->deflate_engine = env && strcmp(env, "zlib") == 0 ? DEFLATE_ZLIB : default_engine();
    }
    if (c->deflate_engine == DEFLATE_ISAL) {
        return isal_compress(c, dst, dst_len, src, src_len);
    }
    return zlib_compress(c, dst, dst_len, src, src_len);
}

/*
 * Whether the byte frequencies of buf look uniform. They are counted over
 * the first 256 bytes of every KiB (a quarter of the cluster, spread over
 * all of it), n bytes in all; uniform means Pearson's chi-square statistic
 * sum((count - E)^2 / E), E = n / 256, is at most 0.0693 * n, which for
 * small deviations is an order-0 entropy of at least 7.95 bits a byte
 * (entropy deficit ~ chi2 / (2 n ln 2)): Huffman coding alone could save at
 * most ~0.6%. Random data scores about 255 whatever n (the bound is 568 for
 * an 8 KiB cluster, 4542 for 64 KiB). Integer arithmetic: with a cluster of
 * at most 2 MiB every term fits in 64 bits.
 */
static bool bytes_uniform(const uint8_t *buf, size_t len)
{
    uint32_t h[4][256] = { { 0 } };
    uint64_t sum = 0, n = 0;

    for (size_t off = 0; off + 256 <= len; off += 1024, n += 256) {
        const uint8_t *p = buf + off;

        for (int i = 0; i < 256; i += 4) {
            h[0][p[i]]++;
            h[1][p[i + 1]]++;
            h[2][p[i + 2]]++;
            h[3][p[i + 3]]++;
        }
    }
    for (int b = 0; b < 256; b++) {
        int64_t d = 256 * (int64_t)(h[0][b] + h[1][b] + h[2][b] + h[3][b]) - (int64_t)n;

        sum += (uint64_t)(d * d);
    }
    /* sum / (256 n) <= 0.0693 n  <=>  4 sum <= 71 n^2 */
    return 4 * sum <= 71 * n * n;
}

/*
 * Whether src (one cluster) can be stored uncompressed without a full
 * deflate run. Deflate shrinks data through repeats (LZ77) and skewed byte
 * frequencies (Huffman). A cluster qualifies when both are absent:
 * - its bytes are near-uniformly distributed, counted over a quarter of
 *   the cluster spread over all of it (bytes_uniform(): a run of zeros or
 *   of text over more than about a sixteenth of a random cluster fails
 *   this, and the cluster is compressed), and
 * - a 4 KiB sample from its middle, compressed with the same engine, does
 *   not shrink by 1/32 (catches uniform but periodic data, such as a
 *   counting byte pattern).
 * A cluster that passes both yet would have shrunk (a little text among
 * random bytes, or uniform bytes that repeat only outside the sample) is
 * stored uncompressed: a valid image, slightly larger than a full deflate
 * run would make it.
 * Clusters under 8 KiB are always compressed.
 */
static bool deflate_skip(Qcow2Codec *c, uint8_t *scratch, size_t scratch_len,
                         const uint8_t *src, size_t src_len)
{
    size_t limit = QCOW2_SKIP_SAMPLE - QCOW2_SKIP_SAMPLE / 32;
    const uint8_t *sample;

    if (src_len < QCOW2_SKIP_MIN || src_len > QCOW2_SKIP_MAX || scratch_len < limit) {
        return false;
    }
    if (!bytes_uniform(src, src_len)) {
        return false;
    }
    sample = src + (src_len - QCOW2_SKIP_SAMPLE) / 2;
    return engine_compress(c, scratch, limit, sample, QCOW2_SKIP_SAMPLE) == -ENOSPC;
}

bool qcow2_deflate_skips(Qcow2Codec *c, uint8_t *scratch, size_t scratch_len,
                         const uint8_t *src, size_t src_len)
{
    return deflate_skip(c, scratch, scratch_len, src, src_len);
}

ssize_t qcow2_deflate_compress(Qcow2Codec *c, uint8_t *dst, size_t dst_len, const uint8_t *src,
                               size_t src_len)
{
    if (deflate_skip(c, dst, dst_len, src, src_len)) {
        return -ENOSPC;
    }
    return engine_compress(c, dst, dst_len, src, src_len);
}

const char *qcow2_deflate_engine_name(Qcow2Codec *c)
{
    switch (c->deflate_engine) {
    case DEFLATE_ISAL:
        return "isal";
    case DEFLATE_ZLIB:
        return "zlib";
    default:
        return "unset";
    }
}

void qcow2_deflate_free(Qcow2Codec *c)
{
    if (c->deflate_ready) {
        deflateEnd(&c->deflate);
        c->deflate_ready = false;
    }
    free(c->isal);
    c->isal = NULL;
    c->deflate_engine = DEFLATE_UNSET;
}
