/*
 * Unit tests: qcow2 compressed clusters on worker threads and the cache of
 * decompressed clusters (drivers/format/qcow2/compress-pool.c, io.c).
 *
 * Many compressed writes in flight (zlib and zstd, several clusters each,
 * compressed in parallel) must give an image that Debian's qemu-img check
 * accepts and qemu-img compare finds identical to the expected bytes. The
 * cache must serve sub-cluster reads of a compressed cluster without reading
 * it again (shown by damaging the compressed bytes on disk behind the
 * driver's back), and must forget a cluster once it is overwritten,
 * discarded or zeroed, even when a new compressed cluster lands at the same
 * host offset with the same length.
 */
#include "drv-test-util.h"
#include "qcow2-test-edit.h"

#include "block/bytes.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096], raw[4096];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2c-a");
    drv_test_path(raw, sizeof(raw), "qcow2c-raw");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(raw);
    return 0;
}

static void create(const char *path, const char *optstr)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, &err), 0);
    if (bdrv_create("qcow2", path, o, &err) < 0) {
        fail_msg("create %s (%s) failed: %s", path, optstr, error_get_pretty(err));
    }
}

static BlockBackend *open_img(const char *path)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=qcow2,discard=unmap,file.driver=file,file.filename=%s",
             path);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/* qemu-img check finds no errors and no leaks; compare matches expect. */
static void assert_qemu_valid(const char *path, const uint8_t *expect, int64_t len)
{
    int fd;

    if (!have_qemu) {
        return;
    }
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", path), 0);
    fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, expect, (size_t)len), len);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, path), 0);
}

/* Reads n bytes of the image file at off. */
static void file_read(const char *path, uint64_t off, void *buf, size_t n)
{
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, n, (off_t)off), (ssize_t)n);
    close(fd);
}

/* Fills a cluster with data that compresses well; seed varies the bytes, not the size. */
static void compressible(uint8_t *buf, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)((i / 1500) ^ seed);
    }
}

/* ---------------------------------------------------------------------- */
/* Parallel compressed writes */

/*
 * size bytes of mixed content, one kind per cluster: compressible,
 * random (stored plainly: it does not shrink), zero; size may end with a
 * partial cluster.
 */
static uint8_t *mixed_content(int64_t size, int64_t cs, unsigned seed)
{
    uint8_t *want = malloc((size_t)size);

    assert_non_null(want);
    for (int64_t c = 0; c < size; c += cs) {
        size_t n = (size_t)(size - c < cs ? size - c : cs);

        switch ((c / cs) % 5) {
        case 0:
        case 3:
            compressible(want + c, n, (uint8_t)(c / cs));
            break;
        case 1:
            for (size_t i = 0; i < n; i++) {
                want[c + (int64_t)i] = (uint8_t)rand_r(&seed);
            }
            break;
        case 2:
            memset(want + c, 0, n);
            break;
        default:
            drv_test_pattern(want + c, n, (uint8_t)c);
            break;
        }
    }
    return want;
}

/*
 * Compressed writes of 1..9 clusters each, in a shuffled order, with up to
 * 16 in flight; then the image reads back as written and qemu-img agrees.
 */
static void check_parallel_writes(const char *copts, int64_t size, int64_t cs)
{
    enum { MAXREQ = 512 };
    static IOVector qiov[MAXREQ];
    int64_t offs[MAXREQ], lens[MAXREQ];
    uint8_t *want = mixed_content(size, cs, 7), *got = malloc((size_t)size);
    QeAio a = { 0, 0 };
    BlockBackend *blk;
    unsigned seed = 99;
    int n = 0;

    create(img, copts);
    blk = open_img(img);
    for (int64_t off = 0; off < size; n++) {
        int64_t len = cs * (1 + rand_r(&seed) % 9);

        assert_true(n < MAXREQ);
        len = off + len > size ? size - off : len;
        offs[n] = off;
        lens[n] = len;
        off += len;
    }
    for (int i = n - 1; i > 0; i--) {
        int j = rand_r(&seed) % (i + 1);
        int64_t t = offs[i];

        offs[i] = offs[j];
        offs[j] = t;
        t = lens[i];
        lens[i] = lens[j];
        lens[j] = t;
    }
    for (int i = 0; i < n; i++) {
        iovector_init_buf(&qiov[i], want + offs[i], (size_t)lens[i]);
        a.pending++;
        blk_aio_pwritev(blk, offs[i], &qiov[i], BDRV_REQ_WRITE_COMPRESSED, qe_aio_cb, &a);
        qe_aio_wait_below(blk, &a, 16);
    }
    qe_aio_wait_below(blk, &a, 0);
    assert_int_equal(a.errors, 0);
    assert_int_equal(blk_pread(blk, 0, size, got, 0), 0);
    assert_memory_equal(got, want, (size_t)size);
    blk_unref(blk);
    assert_qemu_valid(img, want, size);
    if (have_qemu) {
        /* Most clusters went in compressed. */
        assert_int_equal(drv_test_sh("qemu-img check '%s' | grep -Eq ' [1-9][0-9.]*%% compressed'",
                            img), 0);
    }
    free(want);
    free(got);
}

static void test_qcow2_compress_parallel_zlib(void **state)
{
    check_parallel_writes("size=8390144", 8390144, 64 * KiB); /* 8 MiB + 1.5 KiB */
}

static void test_qcow2_compress_parallel_zstd(void **state)
{
    check_parallel_writes("size=8390144,compression_type=zstd", 8390144, 64 * KiB);
}

/* Small clusters are compressed inline (no thread hop): same result. */
static void test_qcow2_compress_parallel_small(void **state)
{
    check_parallel_writes("size=1M,cluster_size=4k", MiB, 4 * KiB);
    check_parallel_writes("size=2M,cluster_size=16k,compression_type=zstd", 2 * MiB,
                          16 * KiB);
}

/* ---------------------------------------------------------------------- */
/* Decompressed-cluster cache */

/* A sub-cluster read after the first one comes from the cache, not from the file. */
static void test_qcow2_dcache_hit(void **state)
{
    uint8_t *x = malloc(64 * KiB), *saved, *junk, got[4 * KiB];
    uint64_t coff, clen;
    BlockBackend *blk;

    create(img, "size=1M");
    blk = open_img(img);
    compressible(x, 64 * KiB, 0x5a);
    assert_int_equal(blk_pwrite(blk, 0, 64 * KiB, x, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_flush(blk), 0);
    /* The last 4 KiB: the whole cluster is inflated (a read inflates up to its end). */
    assert_int_equal(blk_pread(blk, 60 * KiB, 4 * KiB, got, 0), 0);
    assert_memory_equal(got, x + 60 * KiB, 4 * KiB);

    /* Damage the compressed bytes on disk: only a cached copy can still read right. */
    qe_compressed_extent(img, 0, &coff, &clen);
    saved = malloc(clen);
    junk = malloc(clen);
    file_read(img, coff, saved, clen);
    memset(junk, 0xa5, clen);
    qe_wr(img, coff, junk, clen);
    for (int i = 0; i < 15; i++) {
        assert_int_equal(blk_pread(blk, i * 4 * KiB, 4 * KiB, got, 0), 0);
        assert_memory_equal(got, x + i * 4 * KiB, 4 * KiB);
    }
    qe_wr(img, coff, saved, clen);
    blk_unref(blk);
    assert_qemu_valid(img, x, 64 * KiB);
    free(x);
    free(saved);
    free(junk);
}

/*
 * Overwrite, discard and write-zeroes of a cached compressed cluster: reads
 * see the new data. After a discard the next compressed cluster reuses the
 * same host bytes with the same length: the cache must not hand out the old
 * contents for it.
 */
static void check_dcache_invalidation(const char *copts)
{
    uint8_t *want = calloc(1, MiB), *y = malloc(64 * KiB), *got = malloc(MiB);
    uint64_t off1, len1, off2, len2;
    BlockBackend *blk;

    create(img, copts);
    blk = open_img(img);
    compressible(want, 64 * KiB, 1);
    assert_int_equal(blk_pwrite(blk, 0, 64 * KiB, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_flush(blk), 0);
    qe_compressed_extent(img, 0, &off1, &len1);
    assert_int_equal(blk_pread(blk, 4 * KiB, 4 * KiB, got, 0), 0); /* cached now */
    assert_memory_equal(got, want + 4 * KiB, 4 * KiB);

    /* discard; the flush applies the deferred free (refcount 0) */
    assert_int_equal(blk_pdiscard(blk, 0, 64 * KiB), 0);
    assert_int_equal(blk_flush(blk), 0);
    compressible(y, 64 * KiB, 2);
    assert_int_equal(blk_pwrite(blk, 0, 64 * KiB, y, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_flush(blk), 0);
    qe_compressed_extent(img, 0, &off2, &len2);
    assert_int_equal(off2, off1); /* the case that matters: same key, new contents */
    assert_int_equal(len2, len1);
    memcpy(want, y, 64 * KiB);
    assert_int_equal(blk_pread(blk, 4 * KiB, 4 * KiB, got, 0), 0);
    assert_memory_equal(got, want + 4 * KiB, 4 * KiB);

    /* a plain partial overwrite (copy-on-write of the compressed cluster) */
    memset(want + 100, 0xee, 1000);
    assert_int_equal(blk_pwrite(blk, 100, 1000, want + 100, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 64 * KiB, got, 0), 0);
    assert_memory_equal(got, want, 64 * KiB);

    /* a compressed overwrite, read in pieces, then zeroes over it */
    compressible(want, 64 * KiB, 3);
    assert_int_equal(blk_pwrite(blk, 0, 64 * KiB, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(blk_pread(blk, i * 4 * KiB, 4 * KiB, got, 0), 0);
        assert_memory_equal(got, want + i * 4 * KiB, 4 * KiB);
    }
    assert_int_equal(blk_pwrite_zeroes(blk, 0, 64 * KiB, 0), 0);
    memset(want, 0, 64 * KiB);
    assert_int_equal(blk_pread(blk, 8 * KiB, 4 * KiB, got, 0), 0);
    assert_memory_equal(got, want + 8 * KiB, 4 * KiB);

    assert_int_equal(blk_pread(blk, 0, MiB, got, 0), 0);
    assert_memory_equal(got, want, MiB);
    blk_unref(blk);
    assert_qemu_valid(img, want, MiB);
    free(want);
    free(y);
    free(got);
}

static void test_qcow2_dcache_invalidation(void **state)
{
    check_dcache_invalidation("size=1M");
    check_dcache_invalidation("size=1M,compression_type=zstd");
}

/*
 * Hundreds of 4 KiB reads in flight over more compressed clusters than the
 * cache holds: readers of a cluster being inflated wait for it, entries are
 * evicted and refilled, every byte reads right.
 */
static void test_qcow2_dcache_concurrent_reads(void **state)
{
    enum { SIZE = 2 * MiB, CS = 16 * KiB, N = SIZE / (4 * KiB) };
    static IOVector qiov[N];
    uint8_t *want = malloc(SIZE), *got = malloc(SIZE);
    QeAio a = { 0, 0 };
    unsigned seed = 5;
    BlockBackend *blk;
    int order[N];

    create(img, "size=2M,cluster_size=16k");
    blk = open_img(img);
    for (int c = 0; c < SIZE; c += CS) {
        compressible(want + c, CS, (uint8_t)(c / CS));
    }
    assert_int_equal(blk_pwrite(blk, 0, SIZE, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    blk_unref(blk);
    blk = open_img(img); /* an empty cache */
    memset(got, 0xcc, SIZE);
    for (int i = 0; i < N; i++) {
        order[i] = i;
    }
    for (int i = N - 1; i > 0; i--) {
        int j = rand_r(&seed) % (i + 1), t = order[i];

        order[i] = order[j];
        order[j] = t;
    }
    for (int r = 0; r < 2; r++) {
        for (int i = 0; i < N; i++) {
            int64_t off = (int64_t)order[i] * 4 * KiB;

            iovector_init_buf(&qiov[i], got + off, 4 * KiB);
            a.pending++;
            blk_aio_preadv(blk, off, &qiov[i], 0, qe_aio_cb, &a);
        }
        qe_aio_wait_below(blk, &a, 0);
        assert_int_equal(a.errors, 0);
        assert_memory_equal(got, want, SIZE);
    }
    blk_unref(blk);
    assert_qemu_valid(img, want, SIZE);
    free(want);
    free(got);
}

/* ---------------------------------------------------------------------- */
/* Copy-on-write from compressed clusters */

/*
 * A partial write into a compressed cluster copies the rest of it through
 * the decompressed-cluster cache: once a read has cached the cluster, the
 * compressed bytes on disk are damaged behind the driver's back and the
 * partial write (head and tail from the cache) must still keep the old data.
 */
static void test_qcow2_cow_from_dcache(void **state)
{
    uint8_t *want = malloc(64 * KiB), *saved, *junk, *got = malloc(64 * KiB);
    uint64_t coff, clen;
    BlockBackend *blk;

    create(img, "size=1M");
    blk = open_img(img);
    compressible(want, 64 * KiB, 0x33);
    assert_int_equal(blk_pwrite(blk, 0, 64 * KiB, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_flush(blk), 0);
    /* Cached now, whole: a read inflates the cluster up to the read's end. */
    assert_int_equal(blk_pread(blk, 64 * KiB - 512, 512, got, 0), 0);
    qe_compressed_extent(img, 0, &coff, &clen);
    saved = malloc(clen);
    junk = malloc(clen);
    file_read(img, coff, saved, clen);
    memset(junk, 0x5a, clen);
    qe_wr(img, coff, junk, clen);
    memset(want + 20 * KiB, 0xd7, 3 * KiB);
    assert_int_equal(blk_pwrite(blk, 20 * KiB, 3 * KiB, want + 20 * KiB, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    qe_wr(img, coff, saved, clen); /* the cluster is no longer referenced */
    assert_int_equal(blk_pread(blk, 0, 64 * KiB, got, 0), 0);
    assert_memory_equal(got, want, 64 * KiB);
    blk_unref(blk);
    assert_qemu_valid(img, want, 64 * KiB);
    free(want);
    free(got);
    free(saved);
    free(junk);
}

/*
 * Partial writes into compressed clusters, up to 32 in flight, mixed with
 * reads and compressed overwrites of other clusters: head and tail spanning
 * one or two clusters, several writes into the same cluster (serialised by
 * the allocation they share). Reads back as written; qemu-img agrees.
 */
static void check_concurrent_cow(const char *copts, int64_t size, int64_t cs)
{
    enum { NREQ = 600 };
    static IOVector qiov[NREQ];
    static uint8_t *bufs[NREQ];
    uint8_t *want = malloc((size_t)size), *got = malloc((size_t)size);
    QeAio a = { 0, 0 };
    unsigned seed = 1234;
    BlockBackend *blk;
    int64_t nclusters = size / cs;

    create(img, copts);
    blk = open_img(img);
    for (int64_t c = 0; c < size; c += cs) {
        compressible(want + c, (size_t)cs, (uint8_t)(c / cs));
    }
    assert_int_equal(blk_pwrite(blk, 0, size, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    blk_unref(blk);
    blk = open_img(img); /* an empty cache */
    for (int i = 0; i < NREQ; i++) {
        /* Disjoint clusters per pass of nclusters / 2 requests: no two in flight overlap. */
        int64_t c = (int64_t)((i * 2 + (i / (nclusters / 2)) % 2) % nclusters);
        int kind = rand_r(&seed) % 8;
        int64_t off, len;

        if (kind == 0) {
            /* A compressed overwrite of the whole cluster. */
            off = c * cs;
            len = cs;
            bufs[i] = malloc((size_t)len);
            compressible(bufs[i], (size_t)len, (uint8_t)(0x80 + i));
        } else if (kind == 1) {
            off = c * cs + rand_r(&seed) % cs;
            len = 1 + rand_r(&seed) % cs;
            len = off + len > size ? size - off : len;
            bufs[i] = malloc((size_t)len);
            a.pending++;
            iovector_init_buf(&qiov[i], bufs[i], (size_t)len);
            blk_aio_preadv(blk, off, &qiov[i], 0, qe_aio_cb, &a);
        } else {
            /* Within the cluster, or spanning into the next one (two COWs). */
            off = c * cs + 512 * (rand_r(&seed) % (cs / 512));
            len = 512 * (1 + rand_r(&seed) % (cs / 512));
            if (kind == 2 && c + 1 < nclusters) {
                len += cs / 2;
            }
            len = off + len > size ? size - off : len;
            /* Never into cluster c + 2 (another request of this pass). */
            len = off + len > (c + 2) * cs ? (c + 2) * cs - off : len;
            bufs[i] = malloc((size_t)len);
            drv_test_pattern(bufs[i], (size_t)len, (uint8_t)i);
        }
        if (kind != 1) {
            memcpy(want + off, bufs[i], (size_t)len);
            iovector_init_buf(&qiov[i], bufs[i], (size_t)len);
            a.pending++;
            blk_aio_pwritev(blk, off, &qiov[i], kind == 0 ? BDRV_REQ_WRITE_COMPRESSED : 0,
                            qe_aio_cb, &a);
        }
        if ((i + 1) % (nclusters / 2) == 0) {
            qe_aio_wait_below(blk, &a, 0); /* the next pass may touch these clusters */
        } else {
            qe_aio_wait_below(blk, &a, 32);
        }
    }
    qe_aio_wait_below(blk, &a, 0);
    assert_int_equal(a.errors, 0);
    assert_int_equal(blk_pread(blk, 0, size, got, 0), 0);
    assert_memory_equal(got, want, (size_t)size);
    blk_unref(blk);
    assert_qemu_valid(img, want, size);
    for (int i = 0; i < NREQ; i++) {
        free(bufs[i]);
        bufs[i] = NULL;
    }
    free(want);
    free(got);
}

static void test_qcow2_cow_concurrent(void **state)
{
    check_concurrent_cow("size=4M", 4 * MiB, 64 * KiB);
    check_concurrent_cow("size=1M,cluster_size=16k,compression_type=zstd", MiB, 16 * KiB);
    check_concurrent_cow("size=256k,cluster_size=4k", 256 * KiB, 4 * KiB); /* inline */
}

/* ---------------------------------------------------------------------- */
/* Write-zeroes and discard on compressed clusters */

#define L2_COMPRESSED (1ULL << 62)
#define L2_COPIED (1ULL << 63)

/*
 * The L2 entry mapping guest offset g, read from the file (the image must be
 * flushed; its first L2 table); *bm its extended L2 bitmap when esize is 16.
 */
static uint64_t raw_l2e(const char *path, uint64_t g, int esize, uint64_t *bm)
{
    int cb = qe_cluster_bits(path);
    uint64_t l1 = qe_rd64(path, 40), l2 = qe_rd64(path, l1) & 0x00fffffffffffe00ULL;
    uint64_t slot = l2 + (g >> cb) * (uint64_t)esize;

    assert_true(l2 != 0);
    if (bm) {
        *bm = esize == 16 ? qe_rd64(path, slot + 8) : 0;
    }
    return qe_rd64(path, slot);
}

/* Host cluster holding the start of the compressed data of entry e (cluster bits cb). */
static uint64_t compressed_host_cluster(uint64_t e, int cb)
{
    uint64_t x = 62 - (uint64_t)(cb - 8);

    return (e & ((1ULL << x) - 1)) & ~((1ULL << cb) - 1);
}

/* The 16-bit refcount of the host cluster at host offset h. */
static uint64_t raw_refcount(const char *path, uint64_t h)
{
    uint8_t b[2];

    file_read(path, qe_refslot(path, h >> qe_cluster_bits(path)), b, 2);
    return ld_be16(b);
}

/*
 * Four compressed clusters packed into one host cluster (refcount 4). A
 * whole-cluster write-zeroes makes a zero cluster (with and without
 * MAY_UNMAP: the compressed bytes are never kept), a whole-cluster discard an
 * unallocated one; each drops one reference of the shared host cluster. A
 * partial discard changes nothing; a partial write-zeroes copies the rest
 * of the cluster into a normal cluster. qemu-img check finds no leak and no
 * error (the shared refcount is right), compare finds the expected bytes.
 */
static void test_qcow2_zero_discard_compressed(void **state)
{
    enum { CS = 64 * KiB };
    uint8_t *want = calloc(1, MiB), *got = malloc(MiB);
    uint64_t e, host;
    BlockBackend *blk;

    create(img, "size=1M");
    blk = open_img(img);
    for (int c = 0; c < 6; c++) {
        compressible(want + c * CS, CS, (uint8_t)(0x10 + c));
    }
    assert_int_equal(blk_pwrite(blk, 0, 6 * CS, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_flush(blk), 0);
    e = raw_l2e(img, 0, 8, NULL);
    assert_true(e & L2_COMPRESSED);
    host = compressed_host_cluster(e, 16);
    for (int c = 1; c < 6; c++) {
        assert_int_equal(compressed_host_cluster(raw_l2e(img, c * CS, 8, NULL), 16), host);
    }
    assert_int_equal(raw_refcount(img, host), 6); /* one reference per compressed cluster */

    assert_int_equal(blk_pwrite_zeroes(blk, 0, CS, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, CS, CS, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(blk_pdiscard(blk, 2 * CS, CS), 0);
    assert_int_equal(blk_pdiscard(blk, 3 * CS + 4 * KiB, 8 * KiB), 0); /* partial: no-op */
    assert_int_equal(blk_pwrite_zeroes(blk, 4 * CS + 1000, 3000, 0), 0); /* partial: COW */
    memset(want, 0, 3 * CS);
    memset(want + 4 * CS + 1000, 0, 3000);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(raw_l2e(img, 0, 8, NULL), 1);      /* zero cluster, no host */
    assert_int_equal(raw_l2e(img, CS, 8, NULL), 1);
    assert_int_equal(raw_l2e(img, 2 * CS, 8, NULL), 0); /* unallocated */
    assert_true(raw_l2e(img, 3 * CS, 8, NULL) & L2_COMPRESSED);
    e = raw_l2e(img, 4 * CS, 8, NULL);
    assert_true((e & L2_COPIED) && !(e & L2_COMPRESSED) && (e & 0x00fffffffffffe00ULL));
    assert_int_equal(raw_refcount(img, host), 2); /* clusters 3 and 5 */
    assert_int_equal(blk_pread(blk, 0, MiB, got, 0), 0);
    assert_memory_equal(got, want, MiB);
    blk_unref(blk);
    assert_qemu_valid(img, want, MiB);

    /* The last references go: the shared host cluster is free. */
    blk = open_img(img);
    assert_int_equal(blk_pwrite_zeroes(blk, 3 * CS, CS, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 5 * CS, CS), 0);
    memset(want + 3 * CS, 0, CS);
    memset(want + 5 * CS, 0, CS);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(raw_refcount(img, host), 0);
    assert_int_equal(blk_pread(blk, 0, MiB, got, 0), 0);
    assert_memory_equal(got, want, MiB);
    blk_unref(blk);
    assert_qemu_valid(img, want, MiB);
    free(want);
    free(got);
}

/*
 * Extended L2 entries: a write-zeroes over whole subclusters of compressed
 * clusters (partial first and last clusters, whole ones between) copies the
 * partial clusters into normal clusters holding their other data and makes
 * the whole ones zero clusters; nothing else changes.
 */
static void test_qcow2_zero_compressed_extl2(void **state)
{
    enum { CS = 64 * KiB, SC = CS / 32 };
    uint8_t *want = calloc(1, MiB), *got = malloc(MiB);
    uint64_t e, bm, host;
    BlockBackend *blk;

    create(img, "size=1M,extended_l2=on");
    blk = open_img(img);
    for (int c = 0; c < 5; c++) {
        compressible(want + c * CS, CS, (uint8_t)(0x20 + c));
    }
    assert_int_equal(blk_pwrite(blk, 0, 5 * CS, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    assert_int_equal(blk_flush(blk), 0);
    host = compressed_host_cluster(raw_l2e(img, 0, 16, NULL), 16);
    for (int c = 1; c < 5; c++) {
        assert_int_equal(compressed_host_cluster(raw_l2e(img, c * CS, 16, NULL), 16), host);
    }
    assert_int_equal(raw_refcount(img, host), 5);

    /* [cluster 0 + 3 subclusters, cluster 3 + 5 subclusters) */
    assert_int_equal(blk_pwrite_zeroes(blk, 3 * SC, 3 * CS + 2 * SC, 0), 0);
    memset(want + 3 * SC, 0, 3 * CS + 2 * SC);
    /* within one cluster */
    assert_int_equal(blk_pwrite_zeroes(blk, 4 * CS + 7 * SC, 4 * SC, 0), 0);
    memset(want + 4 * CS + 7 * SC, 0, 4 * SC);
    assert_int_equal(blk_flush(blk), 0);
    for (int c = 0; c < 5; c++) {
        e = raw_l2e(img, (uint64_t)c * CS, 16, &bm);
        if (c == 1 || c == 2) {
            assert_int_equal(e, 0); /* zero cluster: no host, all subclusters zero */
            assert_int_equal(bm, 0xffffffffULL << 32);
        } else {
            assert_true((e & L2_COPIED) && !(e & L2_COMPRESSED));
            assert_int_equal(bm, 0xffffffffULL); /* all allocated: written with data */
        }
    }
    assert_int_equal(raw_refcount(img, host), 0);
    assert_int_equal(blk_pread(blk, 0, MiB, got, 0), 0);
    assert_memory_equal(got, want, MiB);
    blk_unref(blk);
    assert_qemu_valid(img, want, MiB);
    free(want);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow2_compress_parallel_zlib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_compress_parallel_zstd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_compress_parallel_small, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_dcache_hit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_dcache_invalidation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_dcache_concurrent_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cow_from_dcache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cow_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_zero_discard_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_zero_compressed_extl2, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
