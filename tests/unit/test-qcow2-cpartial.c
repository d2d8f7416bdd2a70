/*
 * Unit tests: partial inflation of compressed qcow2 clusters
 * (drivers/format/qcow2/compress-inflate.c, compress.c, cread.c).
 *
 * A read of part of a compressed cluster decompresses the cluster only up
 * to the end of the read. Reads at every kind of position in a cluster
 * (start, middle, end, crossing into the next cluster, the whole cluster),
 * in ascending order (each read needs a longer prefix than the cached one)
 * and descending order (cache hits), with and without the cache, must
 * return the bytes of `qemu-img convert -O raw`: 512 B, 4 KiB, 64 KiB and
 * 2 MiB clusters, zlib and zstd, and each inflate engine
 * (COBLK_QCOW2_INFLATE: the default policy, zlib, ISA-L, libdeflate, ours).
 *
 * Corrupt compressed data, crafted in place (with the L2 entry's sector
 * count rewritten where the stream length changes): garbage, a truncated
 * stream, a stream that ends before the cluster is full, one that goes on
 * past it. A read the decoder cannot serve is -EIO with one warning naming
 * the host offset; a read returns right bytes or an error, never others.
 * Skipped (77) without qemu-img.
 */
#include <zlib.h>

#include "drv-test-util.h"
#include "qcow2-test-edit.h"
#include "block/bytes.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096], src[4096], ref[4096];
static const char *const engines[] = { NULL, "zlib", "isal", "libdeflate", "own" };

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "cpartial-img");
    drv_test_path(src, sizeof(src), "cpartial-src");
    drv_test_path(ref, sizeof(ref), "cpartial-ref");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(src);
    unlink(ref);
    unsetenv("COBLK_QCOW2_INFLATE");
    return 0;
}

static void set_engine(const char *engine)
{
    if (engine) {
        setenv("COBLK_QCOW2_INFLATE", engine, 1);
    } else {
        unsetenv("COBLK_QCOW2_INFLATE");
    }
}

static BlockBackend *open_opts(const char *opts)
{
    char s[8192];

    snprintf(s, sizeof(s), "driver=qcow2%s%s,file.driver=file,file.filename=%s",
             *opts ? "," : "", opts, img);
    return drv_test_open_ok(s, 0);
}

/*
 * size bytes, per 4 KiB block text-like, random or zero (so a cluster's
 * compressed stream mixes compressed and stored blocks); img = qemu-img
 * convert -c of it with copts; returns qemu-img convert -O raw of img.
 */
static uint8_t *make_image(int64_t size, const char *copts)
{
    uint8_t *b = malloc((size_t)size);
    unsigned seed = 5;
    int fd;

    assert_non_null(b);
    for (int64_t o = 0; o < size; o += 4 * KiB) {
        int kind = (int)((o / (4 * KiB)) % 7);

        for (int64_t i = o; i < o + 4 * KiB; i++) {
            b[i] = kind < 4 ? (uint8_t)("partial inflation of a cluster "[(i / 5) % 31] + (o >> 12))
                 : kind < 6 ? (uint8_t)rand_r(&seed) : 0;
        }
    }
    fd = open(src, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, b, (size_t)size), size);
    close(fd);
    free(b);
    assert_int_equal(drv_test_sh("qemu-img convert -c -f raw -O qcow2 -o %s '%s' '%s'", copts,
                                 src, img), 0);
    assert_int_equal(drv_test_sh("qemu-img convert -f qcow2 -O raw '%s' '%s'", img, ref), 0);
    return qe_read_file(ref, (size_t)size);
}

/* Reads [off, off + len) (clipped to size) and compares it with want. */
static void check_read(BlockBackend *blk, const uint8_t *want, int64_t size, int64_t off,
                       int64_t len)
{
    uint8_t *got;

    if (off >= size) {
        return;
    }
    len = off + len > size ? size - off : len;
    got = malloc((size_t)len);
    assert_non_null(got);
    memset(got, 0xcc, (size_t)len);
    assert_int_equal(blk_pread(blk, off, len, got, 0), 0);
    if (memcmp(got, want + off, (size_t)len)) {
        fail_msg("read of %lld bytes at %lld differs from qemu-img's", (long long)len,
                 (long long)off);
    }
    free(got);
}

/*
 * Reads at the start, the middle and the end of clusters, crossing into the
 * next one, and whole, in ascending then descending order within each cluster.
 */
static void check_positions(const uint8_t *want, int64_t size, int64_t cs, const char *opts)
{
    int64_t nc = size / cs;
    int64_t clusters[] = { 0, 1, nc / 2 + 1, nc - 1 };
    int64_t pos[] = { 0, 1, 511, 512, cs / 2 - 1, cs / 2, cs - 4 * KiB, cs - 512, cs - 1 };
    int64_t lens[] = { 1, 512, 4 * KiB, cs };
    int npos = (int)(sizeof(pos) / sizeof(pos[0])), nlens = (int)(sizeof(lens) / sizeof(lens[0]));
    int ncl = cs >= 2 * MiB ? 2 : 4;
    BlockBackend *blk = open_opts(opts);

    for (int c = 0; c < ncl; c++) {
        int64_t base = clusters[c] * cs;

        for (int p = 0; p < npos; p++) {
            for (int l = 0; l < nlens && pos[p] >= 0; l++) {
                check_read(blk, want, size, base + pos[p], lens[l]);
            }
        }
        for (int p = npos - 1; p >= 0; p--) {
            for (int l = 0; l < nlens && pos[p] >= 0; l++) {
                check_read(blk, want, size, base + pos[p], lens[l]);
            }
        }
    }
    blk_unref(blk);
}

static void check_type(const char *type, bool every_engine)
{
    static const struct { int64_t cs, size; } shapes[] = {
        { 512, 256 * KiB }, { 4 * KiB, 1 * MiB }, { 64 * KiB, 4 * MiB }, { 2 * MiB, 8 * MiB },
    };
    char copts[256];

    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        uint8_t *want;

        snprintf(copts, sizeof(copts), "cluster_size=%lld,compression_type=%s",
                 (long long)shapes[i].cs, type);
        want = make_image(shapes[i].size, copts);
        for (int e = 0; e < (every_engine ? (int)(sizeof(engines) / sizeof(engines[0])) : 1); e++) {
            set_engine(engines[e]);
            check_positions(want, shapes[i].size, shapes[i].cs, "compressed-cache-size=0");
            check_positions(want, shapes[i].size, shapes[i].cs, "");
        }
        set_engine(NULL);
        free(want);
    }
}

static void test_qcow2_cpartial_zlib_positions(void **state)
{
    check_type("zlib", true);
}

static void test_qcow2_cpartial_zstd_positions(void **state)
{
    check_type("zstd", false);
}

/* ---------------------------------------------------------------------- */
/* Corrupt compressed data */

/* File offset of the L2 entry of guest cluster i. */
static uint64_t l2_entry_at(int i)
{
    return qe_l2slot(img, (uint64_t)i * 64 * KiB);
}

/* The compressed data of guest cluster i: host offset and length. */
static void extent(int i, uint64_t *off, uint64_t *len)
{
    qe_compressed_extent(img, (uint64_t)i, off, len);
}

/* Points the L2 entry of cluster i at len bytes from its data's start (64 KiB clusters). */
static void set_extent_len(int i, uint64_t len)
{
    uint64_t off, old, at = l2_entry_at(i), sectors, e;
    uint8_t be[8];

    extent(i, &off, &old);
    sectors = (off + len + 511) / 512 - off / 512;
    assert_true(sectors >= 1 && sectors <= 256);
    e = (1ULL << 62) | ((sectors - 1) << 54) | off;
    st_be64(be, e);
    qe_wr(img, at, be, 8);
}

/* Raw deflate (window 4 KiB, as qcow2 writes it) of len bytes; returns its size. */
static size_t deflate_raw(const uint8_t *in, size_t len, uint8_t *out, size_t cap)
{
    z_stream z;

    memset(&z, 0, sizeof(z));
    assert_int_equal(deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9,
                                  Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    deflateEnd(&z);
    return cap - z.avail_out;
}

typedef struct Warnings {
    int count;
    char last[1024];
} Warnings;

static void on_warning(void *opaque, const char *msg)
{
    Warnings *w = opaque;

    w->count++;
    snprintf(w->last, sizeof(w->last), "%s", msg);
}

/* A read of [off, off + len) in guest cluster i: 0 with the right bytes, or the error. */
static int try_read(BlockBackend *blk, const uint8_t *want, int i, int64_t off, int64_t len)
{
    uint8_t *got = malloc((size_t)len);
    int64_t at = (int64_t)i * 64 * KiB + off;
    int ret;

    assert_non_null(got);
    ret = blk_pread(blk, at, len, got, 0);
    if (ret == 0 && memcmp(got, want + at, (size_t)len)) {
        fail_msg("read of %lld bytes at %lld returned wrong bytes", (long long)len,
                 (long long)at);
    }
    free(got);
    return ret;
}

/* Every read that reaches the damage fails (whole cluster, last 4 KiB); one warning. */
static void expect_eio(const uint8_t *want, int i, const char *opts)
{
    Warnings w = { 0 };
    BlockBackend *blk;
    uint64_t off, len;
    char hex[64];

    extent(i, &off, &len);
    snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)off);
    coblk_set_warn_handler(on_warning, &w);
    blk = open_opts(opts);
    assert_int_equal(try_read(blk, want, i, 60 * KiB, 4 * KiB), -EIO);
    assert_int_equal(try_read(blk, want, i, 0, 64 * KiB), -EIO);
    assert_int_equal(try_read(blk, want, i, 60 * KiB, 4 * KiB), -EIO);
    try_read(blk, want, i, 0, 4 * KiB); /* right bytes if it succeeds */
    /* The cluster before is intact (the one after may share the damaged last sector). */
    assert_int_equal(try_read(blk, want, i - 1, 0, 4 * KiB), 0);
    blk_unref(blk);
    coblk_set_warn_handler(NULL, NULL);
    assert_int_equal(w.count, 1);
    if (!strstr(w.last, hex) || !strstr(w.last, "corrupt compressed data")) {
        fail_msg("warning does not name host offset %s: %s", hex, w.last);
    }
}

static void each_engine_eio(const uint8_t *want, int i)
{
    for (int e = 0; e < (int)(sizeof(engines) / sizeof(engines[0])); e++) {
        set_engine(engines[e]);
        expect_eio(want, i, "");
        expect_eio(want, i, "compressed-cache-size=0");
    }
    set_engine(NULL);
}

/*
 * Garbage (an invalid block type at once), a truncated stream, a stream
 * that ends half-way through the cluster: -EIO wherever the decoder gets to
 * the damage; a stream that goes on past the cluster reads fine (as QEMU).
 */
static void test_qcow2_cpartial_corrupt_zlib(void **state)
{
    uint8_t *want = make_image(2 * MiB, "cluster_size=64k");
    static uint8_t junk[128 * KiB], stream[192 * KiB], data[128 * KiB];
    uint64_t off, len;
    size_t n;

    /* Garbage: 0xff starts a block of the reserved type 3. */
    extent(3, &off, &len);
    memset(junk, 0xff, len);
    qe_wr(img, off, junk, len);
    each_engine_eio(want, 3);

    /* Truncated: the L2 entry gives the stream one sector (of some 25 KiB). */
    extent(7, &off, &len);
    assert_true(len > 4 * KiB);
    set_extent_len(7, 512 - (off & 511));
    each_engine_eio(want, 7);

    /* Too short: a whole stream that makes only the first half of the cluster. */
    extent(10, &off, &len);
    n = deflate_raw(want + 10 * 64 * KiB, 32 * KiB, stream, sizeof(stream));
    qe_wr(img, off, stream, n);
    set_extent_len(10, n);
    each_engine_eio(want, 10);

    /* Too long: the cluster and 64 KiB more; the cluster's bytes read back. */
    extent(14, &off, &len);
    memcpy(data, want + 14 * 64 * KiB, 64 * KiB);
    memset(data + 64 * KiB, 'x', 64 * KiB);
    n = deflate_raw(data, sizeof(data), stream, sizeof(stream));
    qe_wr(img, off, stream, n);
    set_extent_len(14, n);
    for (int e = 0; e < (int)(sizeof(engines) / sizeof(engines[0])); e++) {
        BlockBackend *blk;

        set_engine(engines[e]);
        blk = open_opts("");
        for (int64_t o = 0; o < 64 * KiB; o += 12 * KiB) {
            assert_int_equal(try_read(blk, want, 14, o, 4 * KiB), 0);
        }
        assert_int_equal(try_read(blk, want, 14, 0, 64 * KiB), 0);
        blk_unref(blk);
    }
    set_engine(NULL);
    free(want);
}

/* zstd: garbage (no frame magic) and a truncated frame. */
static void test_qcow2_cpartial_corrupt_zstd(void **state)
{
    static uint8_t junk[128 * KiB];
    uint8_t *want;
    uint64_t off, len;

    want = make_image(2 * MiB, "cluster_size=64k,compression_type=zstd");
    extent(3, &off, &len);
    memset(junk, 0xff, len);
    qe_wr(img, off, junk, len);
    expect_eio(want, 3, "");
    expect_eio(want, 3, "compressed-cache-size=0");
    extent(7, &off, &len);
    assert_true(len > 4 * KiB);
    set_extent_len(7, 512 - (off & 511));
    expect_eio(want, 7, "");
    expect_eio(want, 7, "compressed-cache-size=0");
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow2_cpartial_zlib_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cpartial_zstd_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cpartial_corrupt_zlib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cpartial_corrupt_zstd, setup, teardown),
    };

    if (drv_test_sh("command -v qemu-img >/dev/null") != 0) {
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
