/*
 * Unit tests: reads of compressed qcow2 clusters (drivers/format/qcow2/cread.c):
 * the decompressed-cluster cache, its runtime options, the parallel
 * inflation of multi-cluster reads.
 *
 * Images come from Debian's `qemu-img convert -c` (zlib and zstd; 4 KiB,
 * 64 KiB and 2 MiB clusters) and every read path (cache miss and hit, a
 * whole-cluster read that bypasses the cache, multi-cluster reads inflated
 * in parallel, no cache, a one-cluster cache, one worker) must return the
 * bytes of `qemu-img convert -O raw` of the same image. What the cache holds
 * is shown by damaging compressed bytes on disk behind the driver's back:
 * only a cached copy can still read right. Readers and writers over the
 * same clusters must never see stale data once a write completed. Skipped
 * (77) without qemu-img.
 */
#include "drv-test-util.h"
#include "qcow2-test-edit.h"
#include "block/bytes.h"
#include "drivers/format/qcow2/qcow2.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096], src[4096], ref[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "cread-img");
    drv_test_path(src, sizeof(src), "cread-src");
    drv_test_path(ref, sizeof(ref), "cread-ref");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(src);
    unlink(ref);
    return 0;
}

static BlockBackend *open_opts(const char *opts, int flags)
{
    char s[8192];

    snprintf(s, sizeof(s), "driver=qcow2%s%s,file.driver=file,file.filename=%s",
             *opts ? "," : "", opts, img);
    return drv_test_open_ok(s, flags);
}

/*
 * size bytes of mixed content, per 4 KiB block: text-like (compresses
 * well), random, zero; then img = qemu-img convert -c of it with copts,
 * and the returned buffer = qemu-img convert -O raw of img.
 */
static uint8_t *make_image(int64_t size, const char *copts)
{
    uint8_t *b = malloc((size_t)size);
    unsigned seed = 11;
    int fd;

    assert_non_null(b);
    for (int64_t o = 0; o < size; o += 4 * KiB) {
        int kind = (int)((o / (4 * KiB)) % 11);

        for (int64_t i = o; i < o + 4 * KiB; i++) {
            b[i] = kind < 7 ? (uint8_t)("qcow2 compressed cluster "[(i / 3) % 25] + (o >> 12))
                 : kind < 9 ? (uint8_t)rand_r(&seed) : 0;
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

/* Reads [off, off + len) and compares it with want. */
static void check_read(BlockBackend *blk, const uint8_t *want, int64_t off, int64_t len)
{
    uint8_t *got = malloc((size_t)len);

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
 * Every read shape on img with the options opts: the whole image in big
 * requests (several clusters each: parallel inflation), each cluster whole
 * (bypasses the cache), 4 KiB reads twice (miss, then hit), odd reads that
 * straddle clusters, and many 4 KiB reads in flight at once.
 */
static void check_all_paths(const uint8_t *want, int64_t size, int64_t cs, const char *opts)
{
    enum { N = 64 };
    static IOVector qiov[N];
    static uint8_t bufs[N][4 * KiB];
    BlockBackend *blk = open_opts(opts, 0);
    int64_t big = cs * 3 < 4 * MiB ? 4 * MiB : cs * 3, offs[N];
    QeAio a = { 0, 0 };
    unsigned seed = 3;

    for (int64_t o = 0; o < size; o += big) {
        check_read(blk, want, o, o + big > size ? size - o : big);
    }
    for (int64_t o = 0; o < size; o += cs) {
        check_read(blk, want, o, cs);
    }
    for (int r = 0; r < 2; r++) {
        for (int64_t o = 0; o < size; o += size / 16) {
            check_read(blk, want, o + 4 * KiB, 4 * KiB);
        }
    }
    for (int i = 0; i < 40; i++) {
        int64_t len = 1 + rand_r(&seed) % (int)(2 * cs + 5000);
        int64_t off = rand_r(&seed) % (int)(size - len);

        check_read(blk, want, off, len);
    }
    for (int i = 0; i < N; i++) {
        offs[i] = (int64_t)(rand_r(&seed) % (int)(size / (4 * KiB))) * 4 * KiB;
        iovector_init_buf(&qiov[i], bufs[i], 4 * KiB);
        a.pending++;
        blk_aio_preadv(blk, offs[i], &qiov[i], 0, qe_aio_cb, &a);
    }
    qe_aio_wait_below(blk, &a, 0);
    assert_int_equal(a.errors, 0);
    for (int i = 0; i < N; i++) {
        assert_memory_equal(bufs[i], want + offs[i], 4 * KiB);
    }
    blk_unref(blk);
}

static void check_image(int64_t size, int64_t cs, const char *type)
{
    char copts[256];
    uint8_t *want;

    snprintf(copts, sizeof(copts), "cluster_size=%lld,compression_type=%s", (long long)cs,
             type);
    want = make_image(size, copts);
    check_all_paths(want, size, cs, "");
    check_all_paths(want, size, cs, "compressed-cache-size=0");
    check_all_paths(want, size, cs, "compressed-cache-size=1");
    check_all_paths(want, size, cs, "compressed-cache-size=64M,compress-workers=1");
    check_all_paths(want, size, cs, "compress-workers=16");
    free(want);
}

static void test_qcow2_cread_zlib(void **state)
{
    check_image(2 * MiB, 4 * KiB, "zlib");
    check_image(6 * MiB, 64 * KiB, "zlib");
    check_image(8 * MiB, 2 * MiB, "zlib");
}

static void test_qcow2_cread_zstd(void **state)
{
    check_image(2 * MiB, 4 * KiB, "zstd");
    check_image(6 * MiB, 64 * KiB, "zstd");
    check_image(8 * MiB, 2 * MiB, "zstd");
}

/* ---------------------------------------------------------------------- */
/* What the cache holds */

/* Host offset and byte count of the compressed data of guest cluster i. */
static void extent(int i, uint64_t *off, uint64_t *len)
{
    qe_compressed_extent(img, (uint64_t)i, off, len);
}

typedef struct Damage {
    uint64_t off, len;
    uint8_t saved[128 * KiB];
} Damage;

/* Overwrites the compressed data of guest cluster i with junk (d keeps the old bytes). */
static void damage(Damage *d, int i)
{
    uint8_t junk[128 * KiB];
    int fd = open(img, O_RDWR);

    extent(i, &d->off, &d->len);
    assert_true(fd >= 0 && d->len <= sizeof(junk));
    assert_int_equal(pread(fd, d->saved, d->len, (off_t)d->off), (ssize_t)d->len);
    memset(junk, 0xa5, d->len);
    assert_int_equal(pwrite(fd, junk, d->len, (off_t)d->off), (ssize_t)d->len);
    close(fd);
}

static void repair(const Damage *d)
{
    int fd = open(img, O_RDWR);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, d->saved, d->len, (off_t)d->off), (ssize_t)d->len);
    close(fd);
}

/* A 4 KiB read inside guest cluster i (64 KiB clusters): 0 and right, or < 0. */
static int read4k(BlockBackend *blk, const uint8_t *want, int i)
{
    uint8_t got[4 * KiB];
    int64_t off = (int64_t)i * 64 * KiB + 8 * KiB;
    int ret = blk_pread(blk, off, sizeof(got), got, 0);

    if (ret == 0) {
        assert_memory_equal(got, want + off, sizeof(got));
    }
    return ret;
}

/*
 * A partially read cluster stays cached through a sequential scan of whole
 * clusters (which insert nothing); least recently used goes first; with no
 * cache, or a one-cluster cache, only what fits stays.
 */
static void test_qcow2_cread_cache_policy(void **state)
{
    static Damage d0, d1, d2;
    uint8_t *want = make_image(8 * MiB, "cluster_size=64k");
    BlockBackend *blk = open_opts("", 0);

    assert_int_equal(read4k(blk, want, 0), 0);
    for (int i = 1; i < 128; i++) { /* twice the default cache's 64 clusters */
        check_read(blk, want, (int64_t)i * 64 * KiB, 64 * KiB);
    }
    damage(&d0, 0);
    damage(&d1, 5);
    assert_int_equal(read4k(blk, want, 0), 0);  /* the hot cluster survived the scan */
    assert_true(read4k(blk, want, 5) < 0);      /* the scan was not cached */
    repair(&d1);
    repair(&d0);
    blk_unref(blk);

    blk = open_opts("compressed-cache-size=128k", 0); /* two clusters */
    assert_int_equal(read4k(blk, want, 0), 0);
    assert_int_equal(read4k(blk, want, 1), 0);
    assert_int_equal(read4k(blk, want, 0), 0);
    assert_int_equal(read4k(blk, want, 2), 0);  /* evicts 1, the least recently used */
    damage(&d0, 0);
    damage(&d1, 1);
    damage(&d2, 2);
    assert_int_equal(read4k(blk, want, 0), 0);
    assert_int_equal(read4k(blk, want, 2), 0);
    assert_true(read4k(blk, want, 1) < 0);
    repair(&d2); /* the reverse order: packed clusters share a sector */
    repair(&d1);
    repair(&d0);
    blk_unref(blk);

    blk = open_opts("compressed-cache-size=0", 0);
    assert_int_equal(read4k(blk, want, 0), 0);
    damage(&d0, 0);
    assert_true(read4k(blk, want, 0) < 0);
    repair(&d0);
    blk_unref(blk);

    blk = open_opts("compressed-cache-size=1", 0); /* rounds up to one cluster */
    assert_int_equal(read4k(blk, want, 0), 0);
    assert_int_equal(read4k(blk, want, 1), 0);
    damage(&d0, 0);
    damage(&d1, 1);
    assert_int_equal(read4k(blk, want, 1), 0);
    assert_true(read4k(blk, want, 0) < 0);
    repair(&d1);
    repair(&d0);
    blk_unref(blk);
    free(want);
}

/* ---------------------------------------------------------------------- */
/* Options */

static BlockOpts *kv(const char *str)
{
    BlockOpts *o = bopts_new();

    assert_int_equal(bopts_parse_keyval(o, str, NULL, NULL), 0);
    return o;
}

static void open_fails(const char *opts, const char *want)
{
    char s[8192];

    snprintf(s, sizeof(s), "driver=qcow2,%s,file.driver=file,file.filename=%s", opts, img);
    drv_test_open_fails(s, 0, want);
}

/* Out-of-range values are refused with a message; reopen changes both options. */
static void test_qcow2_cread_options(void **state)
{
    static Damage d0;
    uint8_t *want = make_image(MiB, "cluster_size=64k");
    BDRVQcow2State *s;
    BlockBackend *blk;
    Error *err = NULL;

    open_fails("compressed-cache-size=2G", "compressed-cache-size 2147483648 exceeds the limit");
    open_fails("compressed-cache-size=lots", "compressed-cache-size");
    open_fails("compress-workers=0", "compress-workers 0 is out of range 1..16");
    open_fails("compress-workers=17", "compress-workers 17 is out of range 1..16");

    blk = open_opts("compressed-cache-size=0,compress-workers=3", 0);
    s = blk_bs(blk)->opaque;
    assert_int_equal(s->compress_workers, 3);
    assert_int_equal(read4k(blk, want, 0), 0);
    damage(&d0, 0);
    assert_true(read4k(blk, want, 0) < 0);
    repair(&d0);
    if (bdrv_reopen(blk_bs(blk), kv("compressed-cache-size=1M,compress-workers=2"), &err) < 0) {
        fail_msg("reopen: %s", error_get_pretty(err));
    }
    assert_int_equal(s->dcache_bytes, MiB);
    assert_int_equal(s->compress_workers, 2);
    assert_int_equal(read4k(blk, want, 0), 0);
    damage(&d0, 0);
    assert_int_equal(read4k(blk, want, 0), 0); /* cached now */
    repair(&d0);
    /* A bad value is refused and changes nothing; leaving the options out keeps them. */
    assert_true(bdrv_reopen(blk_bs(blk), kv("compress-workers=99"), &err) < 0);
    error_free(err);
    err = NULL;
    assert_int_equal(bdrv_reopen(blk_bs(blk), kv("lazy-refcounts=off"), &err), 0);
    assert_int_equal(s->dcache_bytes, MiB);
    assert_int_equal(s->compress_workers, 2);
    check_read(blk, want, 0, MiB);
    blk_unref(blk);

    /* 512-byte clusters: 64 MiB would be 131072 clusters. */
    free(want);
    want = make_image(MiB, "cluster_size=512");
    open_fails("compressed-cache-size=64M", "more than the limit 65536");
    blk = open_opts("compressed-cache-size=32M", 0);
    check_read(blk, want, 0, MiB);
    blk_unref(blk);
    free(want);
}

/* ---------------------------------------------------------------------- */
/* Readers and writers over the same clusters */

enum { RW_CLUSTERS = 24, RW_CS = 64 * KiB, RW_SIZE = RW_CLUSTERS * RW_CS };

typedef struct RwOp {
    struct RwState *st;
    IOVector qiov;
    int64_t off, len;
    int cluster;                /* a write's cluster, or -1 */
    bool check;                 /* a read issued with no write in flight over its range */
    unsigned gen;               /* a read: writes issued to its range before it */
    uint8_t buf[2 * RW_CS];
    struct RwOp *next_free;
} RwOp;

typedef struct RwState {
    uint8_t model[RW_SIZE];     /* contents as of the completed writes */
    bool writing[RW_CLUSTERS];
    unsigned wgen[RW_CLUSTERS]; /* writes issued per cluster */
    int pending, errors, checked;
    RwOp *free;
} RwState;

static unsigned rw_gen(const RwState *st, const RwOp *op)
{
    int c = (int)(op->off / RW_CS), last = (int)((op->off + op->len - 1) / RW_CS);

    return st->wgen[c] + (last != c ? st->wgen[last] : 0);
}

static void rw_done(void *opaque, int ret)
{
    RwOp *op = opaque;
    RwState *st = op->st;

    st->errors += ret < 0;
    if (ret == 0 && op->cluster >= 0) {
        memcpy(st->model + op->off, op->buf, (size_t)op->len);
        st->writing[op->cluster] = false;
    } else if (ret == 0 && op->check && op->gen == rw_gen(st, op)) {
        /* No write was issued over the range since: it must read as the model. */
        if (memcmp(op->buf, st->model + op->off, (size_t)op->len)) {
            fail_msg("stale read of %lld bytes at %lld", (long long)op->len, (long long)op->off);
        }
        st->checked++;
    }
    st->pending--;
    op->next_free = st->free;
    st->free = op;
}

/* One write or read on a random cluster (reads may span two); writes one per cluster. */
static void rw_issue(BlockBackend *blk, RwState *st, RwOp *op, unsigned *seed, int n)
{
    int c = rand_r(seed) % RW_CLUSTERS, kind = rand_r(seed) % 8;
    int flags = 0;

    op->st = st;
    op->cluster = -1;
    op->check = false;
    if (kind < 3 && !st->writing[c]) {
        op->cluster = c;
        op->off = (int64_t)c * RW_CS;
        op->len = RW_CS;
        for (int i = 0; i < RW_CS; i++) {
            op->buf[i] = (uint8_t)("rewrite "[(i / 7) % 8] ^ n);
        }
        if (kind == 0) {
            flags = BDRV_REQ_WRITE_COMPRESSED;
        } else if (kind == 1) {
            op->off += (rand_r(seed) % 16) * 4 * KiB; /* a partial plain write: COW */
            op->len = 4 * KiB;
        } else {
            memset(op->buf, 0, RW_CS); /* zeroes: the compressed cluster is freed */
        }
        st->writing[c] = true;
        st->wgen[c]++;
        iovector_init_buf(&op->qiov, op->buf, (size_t)op->len);
        st->pending++;
        if (kind == 2) {
            blk_aio_pwrite_zeroes(blk, op->off, op->len, 0, rw_done, op);
        } else {
            blk_aio_pwritev(blk, op->off, &op->qiov, flags, rw_done, op);
        }
        return;
    }
    op->off = (int64_t)c * RW_CS;
    op->len = kind == 3 || c == RW_CLUSTERS - 1 ? RW_CS : kind == 4 ? 2 * RW_CS : 4 * KiB;
    if (op->len == 4 * KiB) {
        op->off += (rand_r(seed) % 16) * 4 * KiB;
    }
    op->check = !st->writing[c] && !(op->len > RW_CS && st->writing[c + 1]);
    op->gen = rw_gen(st, op);
    iovector_init_buf(&op->qiov, op->buf, (size_t)op->len);
    st->pending++;
    blk_aio_preadv(blk, op->off, &op->qiov, 0, rw_done, op);
}

/*
 * Up to 16 reads and writes in flight over 24 compressed clusters with a
 * four-cluster cache: compressed rewrites (the freed host bytes are reused
 * at the next flush), partial plain writes (copy-on-write through the
 * cache), write-zeroes; every read issued after the last write to its range
 * completed returns that write's bytes.
 */
static void test_qcow2_cread_readers_writers(void **state)
{
    static RwOp ops[16];
    RwState *st = calloc(1, sizeof(*st));
    BlockBackend *blk;
    unsigned seed = 21;
    char copts[64];

    snprintf(copts, sizeof(copts), "size=%d", RW_SIZE);
    assert_int_equal(drv_test_create("qcow2", img, copts, NULL, 0), 0);
    blk = open_opts("compressed-cache-size=256k", BDRV_O_RDWR);
    for (int i = 0; i < RW_SIZE; i++) {
        st->model[i] = (uint8_t)("compressed "[(i / 5) % 11] + i / RW_CS);
    }
    assert_int_equal(blk_pwrite(blk, 0, RW_SIZE, st->model, BDRV_REQ_WRITE_COMPRESSED), 0);
    for (int i = 0; i < 16; i++) {
        ops[i].next_free = st->free;
        st->free = &ops[i];
    }
    for (int n = 0; n < 1500; n++) {
        RwOp *op;

        while (!st->free) {
            aio_poll(blk_get_aio_context(blk), true);
        }
        op = st->free;
        st->free = op->next_free;
        rw_issue(blk, st, op, &seed, n);
        if (n % 200 == 199) {
            while (st->pending) {
                aio_poll(blk_get_aio_context(blk), true);
            }
            assert_int_equal(blk_flush(blk), 0); /* applies deferred frees */
        }
    }
    while (st->pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(st->errors, 0);
    assert_true(st->checked > 300);
    check_read(blk, st->model, 0, RW_SIZE);
    blk_unref(blk);
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    assert_int_equal(drv_test_sh("qemu-img convert -f qcow2 -O raw '%s' '%s'", img, ref), 0);
    {
        uint8_t *q = qe_read_file(ref, RW_SIZE);

        assert_memory_equal(q, st->model, RW_SIZE);
        free(q);
    }
    free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_qcow2_cread_zlib, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cread_zstd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cread_cache_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cread_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_cread_readers_writers, setup, teardown),
    };

    if (drv_test_sh("command -v qemu-img >/dev/null") != 0) {
        return 77;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
