/*
 * Test helpers: qcow2 images made through coblk, and raw edits of their
 * metadata (header fields, refcounts, L1 / L2 entries) to corrupt them.
 * Assumes refcount_bits=16 (the default) for refcount edits.
 */
#ifndef COBLK_QCOW2_TEST_EDIT_H
#define COBLK_QCOW2_TEST_EDIT_H

#include "drv-test-util.h"
#include "block/bytes.h"

static inline uint64_t qe_rd64(const char *path, uint64_t off)
{
    uint8_t b[8];
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, 8, (off_t)off), 8);
    close(fd);
    return ld_be64(b);
}

static inline void qe_wr(const char *path, uint64_t off, const void *b, size_t n)
{
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static inline void qe_wr64(const char *path, uint64_t off, uint64_t v)
{
    uint8_t b[8];

    st_be64(b, v);
    qe_wr(path, off, b, 8);
}

static inline void qe_wr32(const char *path, uint64_t off, uint32_t v)
{
    uint8_t b[4];

    st_be32(b, v);
    qe_wr(path, off, b, 4);
}

static inline int qe_cluster_bits(const char *path)
{
    return (int)(qe_rd64(path, 16) & 0xffffffff);
}

/* Offset of the 16-bit refcount entry of cluster c. */
static inline uint64_t qe_refslot(const char *path, uint64_t c)
{
    int cb = qe_cluster_bits(path);
    uint64_t per = (1ULL << cb) / 2, rt = qe_rd64(path, 48);
    uint64_t blk = qe_rd64(path, rt + (c / per) * 8) & ~0x1ffULL;

    assert_true(blk != 0);
    return blk + (c % per) * 2;
}

static inline void qe_setref(const char *path, uint64_t c, uint16_t v)
{
    uint8_t b[2];

    st_be16(b, v);
    qe_wr(path, qe_refslot(path, c), b, 2);
}

/* Offset of the L2 entry that maps guest offset g (its L2 table must exist). */
static inline uint64_t qe_l2slot(const char *path, uint64_t g)
{
    int cb = qe_cluster_bits(path), l2b = cb - 3;
    uint64_t l1 = qe_rd64(path, 40);
    uint64_t l2 = qe_rd64(path, l1 + (g >> (cb + l2b)) * 8) & 0x00fffffffffffe00ULL;

    assert_true(l2 != 0);
    return l2 + ((g >> cb) & ((1ULL << l2b) - 1)) * 8;
}

/* Creates a qcow2 image through coblk ("k=v,..." create options; consumed). */
static inline void qe_create(const char *path, const char *optstr)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, &err), 0);
    if (bdrv_create("qcow2", path, o, &err) < 0) {
        fail_msg("create %s: %s", path, error_get_pretty(err));
    }
}

static inline BlockBackend *qe_open(const char *path, int flags)
{
    char opts[4200];

    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", path);
    return drv_test_open_ok(opts, flags);
}

/* Writes len bytes of value v at off. */
static inline void qe_fill(BlockBackend *blk, int64_t off, size_t len, uint8_t v)
{
    uint8_t *b = malloc(len);

    memset(b, v, len);
    assert_int_equal(blk_pwrite(blk, off, (int64_t)len, b, 0), 0);
    free(b);
}

/* Reads len bytes at off; all must equal v. */
static inline void qe_expect(BlockBackend *blk, int64_t off, size_t len, uint8_t v)
{
    uint8_t *b = malloc(len);

    assert_int_equal(blk_pread(blk, off, (int64_t)len, b, 0), 0);
    for (size_t i = 0; i < len; i++) {
        if (b[i] != v) {
            fail_msg("byte %lld: 0x%02x, expected 0x%02x", (long long)(off + (int64_t)i), b[i],
                     v);
        }
    }
    free(b);
}

/*
 * Host offset and byte count of the compressed data of guest cluster i
 * (its L2 table must exist); asserts that the cluster is compressed.
 */
static inline void qe_compressed_extent(const char *path, uint64_t i, uint64_t *off,
                                        uint64_t *len)
{
    int cb = qe_cluster_bits(path), x = 62 - (cb - 8);
    uint64_t e = qe_rd64(path, qe_l2slot(path, i << cb));

    assert_true(e & (1ULL << 62));
    *off = e & ((1ULL << x) - 1);
    *len = (((e >> x) & ((1ULL << (cb - 8)) - 1)) + 1) * 512 - (*off & 511);
}

/* Whole file prefix of len bytes (malloc'd). */
static inline uint8_t *qe_read_file(const char *path, size_t len)
{
    uint8_t *b = malloc(len);
    int fd = open(path, O_RDONLY);

    assert_non_null(b);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, b, len, 0), (ssize_t)len);
    close(fd);
    return b;
}

/* Asynchronous requests in flight and how many failed (blk_aio_* callbacks). */
typedef struct QeAio {
    int pending;
    int errors;
} QeAio;

static inline void qe_aio_cb(void *opaque, int ret)
{
    QeAio *a = opaque;

    a->pending--;
    a->errors += ret < 0;
}

/* Polls blk's context until at most n requests are in flight. */
static inline void qe_aio_wait_below(BlockBackend *blk, QeAio *a, int n)
{
    while (a->pending > n) {
        aio_poll(blk_get_aio_context(blk), true);
    }
}

#endif
