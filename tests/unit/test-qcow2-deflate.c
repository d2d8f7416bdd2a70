/*
 * Unit tests: deflate compression of qcow2 clusters
 * (drivers/format/qcow2/compress-deflate.c), with ISA-L when the build has
 * it and with the zlib fallback (forced with COBLK_QCOW2_DEFLATE=zlib).
 *
 * Every stream must inflate with plain zlib at windowBits -12 fed one output
 * byte at a time: zlib then resolves back-references from its 4 KiB window
 * alone, so a distance beyond 4 KiB fails (a one-shot inflate into the whole
 * cluster would accept it, reading back into its own output). The checker is
 * shown to catch a 32 KiB-window stream. Images written with each engine pass
 * qemu-img check, qemu-img compare and qemu-io reads.
 */
#include <inttypes.h>
#include <zlib.h>

#include "coblk-config.h"
#include "drivers/format/qcow2/qcow2.h"
#include "drv-test-util.h"

#define KiB 1024
#define MiB (1024 * 1024)

enum { K_ZERO, K_TEXT, K_RANDOM, K_MIXED, K_COUNT, K_FAR, K_NKINDS };
static const char *const kind_name[K_NKINDS] = { "zero", "text", "random", "mixed", "count",
                                                 "far-repeat" };
static char img[4096], raw[4096];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2d-a");
    drv_test_path(raw, sizeof(raw), "qcow2d-raw");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(raw);
    unsetenv("COBLK_QCOW2_DEFLATE");
    return 0;
}

static void fill_random(uint8_t *buf, size_t len, unsigned *seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(rand_r(seed) >> 7);
    }
}

/* Words from a small vocabulary: compresses well, with matches at every distance. */
static void fill_text(uint8_t *buf, size_t len, unsigned *seed)
{
    static const char *const words[] = { "block ", "cluster ", "qcow2 ", "refcount ",
                                         "table\n", "the ", "of ", "image ", "write ",
                                         "compressed ", "L2 ", "entry ", "offset " };
    size_t i = 0;

    while (i < len) {
        const char *w = words[rand_r(seed) % (sizeof(words) / sizeof(words[0]))];

        for (; *w && i < len; w++) {
            buf[i++] = (uint8_t)*w;
        }
    }
}

/* One kind of cluster content. */
static void fill(uint8_t *buf, size_t len, int kind, unsigned seed)
{
    switch (kind) {
    case K_ZERO:
        memset(buf, 0, len);
        break;
    case K_TEXT:
        fill_text(buf, len, &seed);
        break;
    case K_RANDOM:
        fill_random(buf, len, &seed);
        break;
    case K_MIXED: /* random, zeros, text, random in quarters */
        fill_random(buf, len / 4, &seed);
        memset(buf + len / 4, 0, len / 4);
        fill_text(buf + len / 2, len / 4, &seed);
        fill_random(buf + 3 * (len / 4), len - 3 * (len / 4), &seed);
        break;
    case K_COUNT: /* uniform byte frequencies, yet periodic */
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)i;
        }
        break;
    default: /* a random 6000-byte block repeated: matches only beyond 4 KiB */
        fill_random(buf, len < 6000 ? len : 6000, &seed);
        for (size_t i = 6000; i < len; i++) {
            buf[i] = buf[i - 6000];
        }
        break;
    }
}

/*
 * Inflates src with zlib at windowBits -12, one output byte per call, into
 * dst; 0 if it gives exactly dst_len bytes (the stream may end there or
 * later: qcow2 pads the last sector).
 */
static int strict_inflate(const uint8_t *src, size_t src_len, uint8_t *dst, size_t dst_len)
{
    z_stream z;
    size_t done = 0;
    int ret = Z_OK;

    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, -12), Z_OK);
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)src_len;
    while (done < dst_len && ret == Z_OK) {
        z.next_out = dst + done;
        z.avail_out = 1;
        ret = inflate(&z, Z_NO_FLUSH);
        done += 1 - z.avail_out;
    }
    inflateEnd(&z);
    return done == dst_len && (ret == Z_OK || ret == Z_STREAM_END) ? 0 : -1;
}

/* The checker rejects a stream with 32 KiB back-references (zlib's default window). */
static void test_qcow2_deflate_checker_catches_far_match(void **state)
{
    size_t len = 64 * KiB;
    uint8_t *src = malloc(len), *dst = malloc(2 * len), *back = malloc(len);
    z_stream z;

    fill(src, len, K_FAR, 1);
    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, -15, 9, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = src;
    z.avail_in = (uInt)len;
    z.next_out = dst;
    z.avail_out = (uInt)(2 * len);
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    assert_true(z.total_out < len / 4);
    assert_int_not_equal(strict_inflate(dst, z.total_out, back, len), 0);
    deflateEnd(&z);
    free(src);
    free(dst);
    free(back);
}

/* Whether a cluster of this kind and size must come out compressed. */
static bool must_shrink(int kind)
{
    return kind == K_ZERO || kind == K_TEXT || kind == K_MIXED || kind == K_COUNT;
}

/*
 * Compresses clusters of every kind and size 512 B..2 MiB with the engine in
 * use; each stream inflates with the 4 KiB window to the original bytes, also
 * through the driver's own decompressor. Returns the compressed total.
 */
static uint64_t check_engine(const char *expect_engine)
{
    static const size_t sizes[] = { 512, 1 * KiB, 4 * KiB, 8 * KiB, 64 * KiB, 256 * KiB,
                                    2 * MiB };
    uint8_t *src = malloc(2 * MiB), *dst = malloc(2 * MiB), *back = malloc(2 * MiB);
    Qcow2Codec c;
    uint64_t total = 0;

    memset(&c, 0, sizeof(c));
    for (size_t si = 0; si < sizeof(sizes) / sizeof(sizes[0]); si++) {
        size_t cs = sizes[si];

        for (int kind = 0; kind < K_NKINDS; kind++) {
            ssize_t n;

            fill(src, cs, kind, (unsigned)(si * 7 + kind));
            n = qcow2_codec_compress(&c, QCOW2_COMPRESSION_ZLIB, dst, cs - 1, src, cs);
            if (n == -ENOSPC) {
                if (must_shrink(kind)) {
                    fail_msg("%s cluster of %zu bytes did not shrink", kind_name[kind], cs);
                }
                total += cs;
                continue;
            }
            assert_true(n > 0 && (size_t)n < cs);
            total += (uint64_t)n;
            memset(back, 0xa5, cs);
            if (strict_inflate(dst, (size_t)n, back, cs) != 0 || memcmp(back, src, cs) != 0) {
                fail_msg("%s cluster of %zu bytes: not a 4 KiB-window deflate stream of it",
                         kind_name[kind], cs);
            }
            memset(back, 0x5a, cs);
            assert_int_equal(qcow2_codec_decompress(&c, QCOW2_COMPRESSION_ZLIB, back, cs, dst,
                                                    (size_t)n), 0);
            assert_memory_equal(back, src, cs);
        }
    }
    assert_string_equal(qcow2_deflate_engine_name(&c), expect_engine);
    qcow2_codec_free(&c);
    free(src);
    free(dst);
    free(back);
    return total;
}

static void test_qcow2_deflate_window_default(void **state)
{
    unsetenv("COBLK_QCOW2_DEFLATE");
    check_engine(COBLK_HAVE_ISAL ? "isal" : "zlib");
}

static void test_qcow2_deflate_window_zlib(void **state)
{
    setenv("COBLK_QCOW2_DEFLATE", "zlib", 1);
    check_engine("zlib");
}

/* Which clusters are stored uncompressed without a full deflate run. */
static void check_skips(void)
{
    uint8_t *src = malloc(64 * KiB), *dst = malloc(64 * KiB);
    Qcow2Codec c;
    unsigned seed = 5;

    memset(&c, 0, sizeof(c));
    /* Random data, and repeats a 4 KiB window cannot reach, are skipped. */
    for (int kind = 0; kind < K_NKINDS; kind++) {
        fill(src, 64 * KiB, kind, 3);
        assert_int_equal(qcow2_deflate_skips(&c, dst, 64 * KiB - 1, src, 64 * KiB),
                         kind == K_RANDOM || kind == K_FAR);
    }
    /* Random bytes with a sixteenth of zeros at the end: compressed in full, and it shrinks. */
    fill_random(src, 60 * KiB, &seed);
    memset(src + 60 * KiB, 0, 4 * KiB);
    assert_false(qcow2_deflate_skips(&c, dst, 64 * KiB - 1, src, 64 * KiB));
    assert_true(qcow2_codec_compress(&c, QCOW2_COMPRESSION_ZLIB, dst, 64 * KiB - 1, src,
                                     64 * KiB) > 0);
    /* Under 8 KiB the check is not made: a full run finds that random data does not shrink. */
    fill_random(src, 4 * KiB, &seed);
    assert_false(qcow2_deflate_skips(&c, dst, 4 * KiB - 1, src, 4 * KiB));
    assert_int_equal(qcow2_codec_compress(&c, QCOW2_COMPRESSION_ZLIB, dst, 4 * KiB - 1, src,
                                          4 * KiB), -ENOSPC);
    qcow2_codec_free(&c);
    free(src);
    free(dst);
}

static void test_qcow2_deflate_skip_default(void **state)
{
    unsetenv("COBLK_QCOW2_DEFLATE");
    check_skips();
}

static void test_qcow2_deflate_skip_zlib(void **state)
{
    setenv("COBLK_QCOW2_DEFLATE", "zlib", 1);
    check_skips();
}

/* ---------------------------------------------------------------------- */
/* Images */

static BlockBackend *open_img(const char *path)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", path);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/*
 * An image of nclusters clusters of size cs, each of the next kind in turn
 * (odd clusters filled with byte 0x5c for qemu-io's read -P), written with
 * compressed writes; it reads back, and qemu-img check, qemu-img compare
 * and qemu-io agree.
 */
static void check_image(int64_t cs, int nclusters)
{
    int64_t size = cs * nclusters;
    uint8_t *want = malloc((size_t)size), *got = malloc((size_t)size);
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;
    char optstr[128];
    int fd;

    for (int i = 0; i < nclusters; i++) {
        if (i % 2) {
            memset(want + i * cs, 0x5c, (size_t)cs);
        } else {
            fill(want + i * cs, (size_t)cs, (i / 2) % K_NKINDS, (unsigned)i);
        }
    }
    snprintf(optstr, sizeof(optstr), "size=%" PRId64 ",cluster_size=%" PRId64, size, cs);
    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, &err), 0);
    assert_int_equal(bdrv_create("qcow2", img, o, &err), 0);
    blk = open_img(img);
    assert_int_equal(blk_pwrite(blk, 0, size, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_pread(blk, 0, size, got, 0), 0);
    assert_memory_equal(got, want, (size_t)size);
    blk_unref(blk);
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
        assert_int_equal(drv_test_sh("qemu-img check '%s' | grep -Eq ' [1-9][0-9.]*%% compressed'",
                                     img), 0);
        fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, want, (size_t)size), size);
        close(fd);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, img),
                         0);
        for (int i = 1; i < nclusters; i += 2) {
            assert_int_equal(drv_test_sh("out=$(qemu-io -f qcow2 -r -c 'read -P 0x5c %" PRId64
                                         " %" PRId64 "' '%s') && echo \"$out\" | grep -q "
                                         "'^read ' && ! echo \"$out\" | grep -q failed",
                                         i * cs, cs, img),
                             0);
        }
    }
    free(want);
    free(got);
}

static void check_images(void)
{
    check_image(64 * KiB, 2 * K_NKINDS);
    check_image(4 * KiB, 2 * K_NKINDS);
    check_image(2 * MiB, 2 * K_NKINDS);
}

static void test_qcow2_deflate_image_default(void **state)
{
    unsetenv("COBLK_QCOW2_DEFLATE");
    check_images();
}

static void test_qcow2_deflate_image_zlib(void **state)
{
    setenv("COBLK_QCOW2_DEFLATE", "zlib", 1);
    check_images();
}

/*
 * Compressed clusters of about 0.6 of a cluster each fill the host file
 * without gaps: one that does not fit in the rest of a host cluster starts
 * there and runs on into the next (as qemu-img packs them), so the file is
 * the compressed bytes plus metadata, not a host cluster per guest cluster.
 */
static void test_qcow2_deflate_packed_straddle(void **state)
{
    enum { N = 32 };
    int64_t cs = 64 * KiB, size = N * cs;
    uint8_t *want = malloc((size_t)size), *got = malloc((size_t)size), *tmp = malloc(cs);
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;
    uint64_t packed = 0;
    unsigned seed = 11;
    struct stat st;
    Qcow2Codec c;

    memset(&c, 0, sizeof(c));
    for (int i = 0; i < N; i++) {
        ssize_t n;

        fill_random(want + i * cs, 36 * KiB, &seed);
        fill_text(want + i * cs + 36 * KiB, (size_t)cs - 36 * KiB, &seed);
        n = qcow2_codec_compress(&c, QCOW2_COMPRESSION_ZLIB, tmp, (size_t)cs - 1, want + i * cs,
                                 (size_t)cs);
        assert_true(n > cs / 2 && n < cs);
        packed += (uint64_t)n;
    }
    qcow2_codec_free(&c);
    assert_int_equal(bopts_parse_keyval(o, "size=2M", NULL, &err), 0);
    assert_int_equal(bdrv_create("qcow2", img, o, &err), 0);
    blk = open_img(img);
    assert_int_equal(blk_pwrite(blk, 0, size, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_pread(blk, 0, size, got, 0), 0);
    assert_memory_equal(got, want, (size_t)size);
    blk_unref(blk);
    assert_int_equal(stat(img, &st), 0);
    /* header, L1, refcount table and block, L2: 5 clusters; one more for the last tail */
    if ((uint64_t)st.st_size > packed + 6 * (uint64_t)cs) {
        fail_msg("file of %lld bytes for %llu compressed bytes: gaps between clusters",
                 (long long)st.st_size, (unsigned long long)packed);
    }
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
        int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);

        assert_true(fd >= 0);
        assert_int_equal(write(fd, want, (size_t)size), size);
        close(fd);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, img),
                         0);
    }
    free(want);
    free(got);
    free(tmp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qcow2_deflate_checker_catches_far_match),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_window_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_window_zlib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_skip_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_skip_zlib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_image_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_image_zlib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_deflate_packed_straddle, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null && command -v qemu-io "
                            ">/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
