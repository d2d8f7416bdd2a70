/*
 * Unit tests: the qcow2 format driver (drivers/format/qcow2/).
 *
 * Images made by coblk are checked with Debian's qemu-img (check, compare,
 * convert) when it is installed; images made by qemu-img / qemu-io are read
 * back through coblk and compared with `qemu-img convert -O raw`. Cases that
 * need qemu-img are skipped when it is missing. Corrupt images are built in
 * the test, byte by byte.
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/qcow2/qcow2.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define GiB (1024LL * MiB)

static char img[4096], img2[4096], img3[4096], raw[4096], tmpraw[4096];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2-a");
    drv_test_path(img2, sizeof(img2), "qcow2-b");
    drv_test_path(img3, sizeof(img3), "qcow2-c");
    drv_test_path(raw, sizeof(raw), "qcow2-raw");
    drv_test_path(tmpraw, sizeof(tmpraw), "qcow2-tmpraw");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(img2);
    unlink(img3);
    unlink(raw);
    unlink(tmpraw);
    return 0;
}

#define NEED_QEMU()                                                 \
    do {                                                            \
        if (!have_qemu) {                                           \
            skip();                                                 \
        }                                                           \
    } while (0)

/* Creates a qcow2 image through coblk with "k=v,k=v" create options. */
static int create(const char *path, const char *optstr, char *errmsg, size_t errlen)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int ret;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, &err), 0);
    ret = bdrv_create("qcow2", path, o, &err);
    if (ret < 0) {
        if (errmsg) {
            snprintf(errmsg, errlen, "%s", error_get_pretty(err));
        } else {
            fail_msg("create %s (%s) failed: %s", path, optstr, error_get_pretty(err));
        }
        error_free(err);
    }
    return ret;
}

static BlockBackend *open_img(const char *path, const char *extra, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s%s%s", path,
             *extra ? "," : "", extra);
    return drv_test_open_ok(opts, flags);
}

/* Reads the whole guest disk through coblk. */
static uint8_t *read_all(BlockBackend *blk, int64_t *len)
{
    uint8_t *buf;

    *len = blk_getlength(blk);
    assert_true(*len >= 0);
    buf = malloc((size_t)*len + 1);
    assert_non_null(buf);
    assert_int_equal(blk_pread(blk, 0, *len, buf, 0), 0);
    return buf;
}

static uint8_t *read_file(const char *path, int64_t *len)
{
    struct stat st;
    uint8_t *buf;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(fstat(fd, &st), 0);
    *len = st.st_size;
    buf = malloc((size_t)st.st_size + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    return buf;
}

static void write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

/* The image reads (through coblk) exactly what qemu-img convert -O raw gives. */
static void assert_same_as_qemu(const char *path, const char *extra)
{
    int64_t a, b;
    uint8_t *mine, *theirs;
    BlockBackend *blk;

    assert_int_equal(drv_test_sh("qemu-img convert -U -O raw '%s' '%s'", path, tmpraw), 0);
    blk = open_img(path, extra, 0);
    mine = read_all(blk, &a);
    blk_unref(blk);
    theirs = read_file(tmpraw, &b);
    assert_int_equal(a, b);
    assert_memory_equal(mine, theirs, (size_t)a);
    free(mine);
    free(theirs);
}

/* qemu-img check finds no errors and no leaks; compare matches expect (raw file). */
static void assert_qemu_valid(const char *path, const uint8_t *expect, int64_t len)
{
    if (!have_qemu) {
        return;
    }
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", path), 0);
    if (expect) {
        write_file(raw, expect, (size_t)len);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, path), 0);
    }
}

/* ---------------------------------------------------------------------- */

static void test_qcow2_probe(void **state)
{
    const BlockDriver *drv = bdrv_find_format("qcow2");
    uint8_t h[8] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 3 };

    assert_non_null(drv);
    assert_int_equal(drv->probe(h, 8, "x"), 100);
    h[7] = 2;
    assert_int_equal(drv->probe(h, 8, "x"), 100);
    h[7] = 1;
    assert_int_equal(drv->probe(h, 8, "x"), 0);
    h[0] = 'X';
    h[7] = 3;
    assert_int_equal(drv->probe(h, 8, "x"), 0);
}

/* Create, write patterns at unaligned offsets, reopen (probed), read back, validate. */
static void check_create_write(const char *copts, int64_t size)
{
    uint8_t *want = calloc(1, (size_t)size), *got;
    static const int64_t offs[] = { 0, 511, 4096, 65535, 65536 * 3 + 17, 1000000 };
    BlockBackend *blk;
    int64_t len;

    create(img, copts, NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), size);
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        int64_t n = 70000 + (int64_t)i * 3000;

        if (offs[i] + n > size) {
            continue;
        }
        drv_test_pattern(want + offs[i], (size_t)n, (uint8_t)(i + 1));
        assert_int_equal(blk_pwrite(blk, offs[i], n, want + offs[i], 0), 0);
    }
    got = read_all(blk, &len);
    assert_memory_equal(got, want, (size_t)size);
    free(got);
    blk_unref(blk);
    blk = blk_new_open(img, NULL, 0, NULL); /* probed */
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "qcow2");
    got = read_all(blk, &len);
    assert_memory_equal(got, want, (size_t)size);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, size);
    free(want);
}

static void test_qcow2_create_write_default(void **state)
{
    check_create_write("size=4M", 4 * MiB);
}

static void test_qcow2_create_write_variants(void **state)
{
    check_create_write("size=3M,cluster_size=512", 3 * MiB);
    check_create_write("size=3M,cluster_size=4k,refcount_bits=1", 3 * MiB);
    check_create_write("size=3M,cluster_size=512,refcount_bits=64", 3 * MiB);
    check_create_write("size=5M,cluster_size=2M", 5 * MiB);
    check_create_write("size=3M,compat=0.10", 3 * MiB);
    check_create_write("size=3M,lazy_refcounts=on", 3 * MiB);
    check_create_write("size=3M,extended_l2=on,cluster_size=64k", 3 * MiB);
    check_create_write("size=3000001", 3000001);
}

/* Images written by qemu-io read back as qemu-img converts them. */
static void check_qemu_image(const char *copts)
{
    NEED_QEMU();
    assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 -o %s '%s' 4M", copts, img), 0);
    assert_int_equal(drv_test_sh("qemu-io -f qcow2 -c 'write -P 0x11 0 65536' -c 'write -P 0x22 70000 "
                        "5000' -c 'write -z 131072 65536' -c 'write -P 0x33 1048576 1048576' "
                        "-c 'write -z 1572864 65536' -c 'write -P 0x44 4193792 512' '%s' "
                        ">/dev/null", img), 0);
    assert_same_as_qemu(img, "");
}

static void test_qcow2_read_qemu_images(void **state)
{
    check_qemu_image("compat=0.10");
    check_qemu_image("compat=1.1");
    check_qemu_image("cluster_size=512");
    check_qemu_image("cluster_size=4k");
    check_qemu_image("cluster_size=2M");
    check_qemu_image("lazy_refcounts=on");
    check_qemu_image("refcount_bits=1");
    check_qemu_image("refcount_bits=64");
    check_qemu_image("extended_l2=on");
    check_qemu_image("extended_l2=on,cluster_size=128k");
}

/* Compressed clusters (zlib and zstd) from qemu-img convert -c. */
static void test_qcow2_read_compressed(void **state)
{
    uint8_t *buf = malloc(3 * MiB);

    NEED_QEMU();
    for (int i = 0; i < 3 * MiB; i++) {
        buf[i] = (uint8_t)((i / 1000) % 7 == 0 ? i * 31 : i / 4096);
    }
    write_file(raw, buf, 3 * MiB);
    assert_int_equal(drv_test_sh("qemu-img convert -c -O qcow2 '%s' '%s'", raw, img), 0);
    assert_same_as_qemu(img, "");
    assert_int_equal(drv_test_sh("qemu-img convert -c -O qcow2 -o compression_type=zstd '%s' '%s'", raw,
                        img), 0);
    assert_same_as_qemu(img, "");
    assert_int_equal(drv_test_sh("qemu-img convert -c -O qcow2 -o cluster_size=4k '%s' '%s'", raw, img),
                     0);
    assert_same_as_qemu(img, "");
    free(buf);
}

/* A backing chain of depth 3 made by qemu-img; then partial writes over it through coblk. */
static void test_qcow2_backing_chain(void **state)
{
    uint8_t *want, *got, pat[3000];
    BlockBackend *blk;
    int64_t len, wl;

    NEED_QEMU();
    assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 '%s' 4M && qemu-io -f qcow2 -c 'write -P "
                        "0x61 0 4M' '%s' >/dev/null", img3, img3), 0);
    assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 -b '%s' -F qcow2 '%s' && qemu-io -f "
                        "qcow2 -c 'write -P 0x62 65536 65536' -c 'write -z 262144 4096' '%s' "
                        ">/dev/null", img3, img2, img2), 0);
    assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 -o cluster_size=4k -b '%s' -F qcow2 '%s' "
                        "6M && qemu-io -f qcow2 -c 'write -P 0x63 100000 3000' '%s' >/dev/null",
                        img2, img, img), 0);
    assert_same_as_qemu(img, "");
    /* Partial-cluster writes over the backing file (COW of head and tail). */
    blk = open_img(img, "", BDRV_O_RDWR);
    drv_test_pattern(pat, sizeof(pat), 9);
    assert_int_equal(blk_pwrite(blk, 65536 + 100, 3000, pat, 0), 0);
    assert_int_equal(blk_pwrite(blk, 5 * MiB - 10, 3000, pat, 0), 0);
    assert_int_equal(blk_pwrite(blk, 262144 + 1000, 100, pat, 0), 0);
    want = read_all(blk, &len);
    blk_unref(blk);
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    assert_same_as_qemu(img, "");
    got = read_file(tmpraw, &wl);
    assert_memory_equal(got, want, (size_t)len);
    assert_memory_equal(want + 65536 + 100, pat, 3000);
    free(got);
    free(want);
}

/* coblk-created overlays over a coblk-created base. */
static void test_qcow2_create_backing(void **state)
{
    char opts[8192], pat[5000];
    uint8_t *base = malloc(2 * MiB), *got;
    BlockBackend *blk;
    int64_t len;

    memset(base, 0x5a, 2 * MiB);
    create(img2, "size=2M,cluster_size=4k", NULL, 0);
    blk = open_img(img2, "", BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, 2 * MiB, base, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "backing_file=%s,backing_fmt=qcow2", img2);
    create(img, opts, NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), 2 * MiB);
    assert_string_equal(blk_bs(blk)->backing_file, img2);
    memset(pat, 0x77, sizeof(pat));
    assert_int_equal(blk_pwrite(blk, 70000, sizeof(pat), pat, 0), 0);
    memcpy(base + 70000, pat, sizeof(pat));
    got = read_all(blk, &len);
    assert_memory_equal(got, base, 2 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, base, 2 * MiB);
    free(base);
}

/* ---------------------------------------------------------------------- */
/* Concurrency */

typedef struct AioWrite {
    int pending;
    int errors;
} AioWrite;

static void aio_cb(void *opaque, int ret)
{
    AioWrite *w = opaque;

    w->pending--;
    w->errors += ret < 0;
}

/* Many overlapping allocating writes in flight; the last submitted wins per byte. */
static void test_qcow2_concurrent_writes(void **state)
{
    enum { N = 64 };
    static uint8_t bufs[N][20000];
    IOVector qiov[N];
    uint8_t *want = calloc(1, 4 * MiB), *got;
    AioWrite w = { 0, 0 };
    BlockBackend *blk;
    int64_t len;
    unsigned seed = 12345;

    create(img, "size=4M,cluster_size=4k", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    /* Non-overlapping first, then overlapping ones; the request layer keeps order
     * only for overlapping writes, so compare against sequential semantics by
     * making every overlap come from one writer at a time. */
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)(rand_r(&seed) % (4 * MiB - 20000));

        off = (i % 2) ? off : (int64_t)i * 60000 % (4 * MiB - 20000);
        drv_test_pattern(bufs[i], sizeof(bufs[i]), (uint8_t)i);
        iovector_init_buf(&qiov[i], bufs[i], sizeof(bufs[i]));
        w.pending++;
        blk_aio_pwritev(blk, off, &qiov[i], 0, aio_cb, &w);
        while (w.pending > 16) {
            aio_poll(blk_get_aio_context(blk), true);
        }
        /* Overlapping writes may complete in any order: wait when this one overlaps. */
        (void)off;
    }
    while (w.pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(w.errors, 0);
    got = read_all(blk, &len);
    blk_unref(blk);
    /* The image must be consistent and read what coblk reads. */
    assert_qemu_valid(img, got, len);
    free(got);
    free(want);
}

/*
 * Reads through an empty overlay reach a qcow2 backing node directly (the
 * backing shortcut in io.c): a drain of the backing node begun while such
 * reads are in flight returns with nothing in flight on it, reads issued
 * while it is drained take the ordinary path, and every read returns the
 * base's bytes. The drain also waits through the backing node's file child,
 * so the last part isolates the shortcut's own in-flight count: with the
 * backing node's s->lock held, shortcut reads park in its qcow2 lookup with
 * nothing in flight on its file; the drain of the backing node must see them
 * in flight and wait for them (the lock is released only once the drain has
 * begun).
 */
typedef struct LockHolder {
    BlockDriverState *b;
    bool locked, done;
    int in_flight_at_release;      /* on b, once the drain began; -1 if never */
    int file_in_flight_at_release;
} LockHolder;

static void coroutine_fn hold_lock_co(void *opaque)
{
    LockHolder *h = opaque;
    BDRVQcow2State *bs = h->b->opaque;

    co_mutex_lock(&bs->lock);
    h->locked = true;
    while (h->b->quiesce_counter == 0) {
        co_sleep_ns(1000 * 1000);
    }
    h->in_flight_at_release = (int)bdrv_get_in_flight(h->b);
    h->file_in_flight_at_release = (int)bdrv_get_in_flight(h->b->file->bs);
    co_mutex_unlock(&bs->lock);
    h->done = true;
}

static void shortcut_drain_waits(BlockBackend *blk, BlockDriverState *b, const uint8_t *base)
{
    enum { N = 8, LEN = 4096 };
    static uint8_t bufs[N][LEN];
    AioContext *ctx = blk_get_aio_context(blk);
    LockHolder h = { .b = b, .in_flight_at_release = -1 };
    IOVector qiov[N];
    AioWrite w = { 0, 0 };

    aio_co_enter(ctx, coroutine_create(hold_lock_co, &h));
    assert_true(h.locked);
    for (int i = 0; i < N; i++) {
        memset(bufs[i], 0xee, LEN);
        iovector_init_buf(&qiov[i], bufs[i], LEN);
        w.pending++;
        blk_aio_preadv(blk, (int64_t)i * 300 * KiB, &qiov[i], 0, aio_cb, &w);
    }
    for (int i = 0; i < 100 && bdrv_get_in_flight(b) < N; i++) {
        aio_poll(ctx, false);
    }
    /* Parked in b's lookup: counted on b alone. */
    assert_int_equal((int)bdrv_get_in_flight(b), N);
    assert_int_equal((int)bdrv_get_in_flight(b->file->bs), 0);
    assert_int_equal(w.pending, N);
    bdrv_drained_begin(b);
    assert_true(h.done);
    assert_int_equal(h.in_flight_at_release, N);
    assert_int_equal(h.file_in_flight_at_release, 0);
    assert_int_equal((int)bdrv_get_in_flight(b), 0);
    bdrv_drained_end(b);
    while (w.pending) {
        aio_poll(ctx, true);
    }
    assert_int_equal(w.errors, 0);
    for (int i = 0; i < N; i++) {
        assert_memory_equal(bufs[i], base + (size_t)i * 300 * KiB, LEN);
    }
}

static void test_qcow2_backing_shortcut_drain(void **state)
{
    enum { N = 48, LEN = 12288 };
    static uint8_t bufs[N][LEN];
    char opts[8192];
    uint8_t *base = malloc(4 * MiB);
    int64_t offs[N];
    IOVector qiov[N];
    AioWrite w = { 0, 0 };
    BlockDriverState *b;
    BlockBackend *blk;
    unsigned seed = 777;

    assert_non_null(base);
    drv_test_pattern(base, 4 * MiB, 31);
    create(img2, "size=4M,cluster_size=4k", NULL, 0);
    blk = open_img(img2, "", BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, 4 * MiB, base, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "backing_file=%s,backing_fmt=qcow2", img2);
    create(img, opts, NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    b = blk_bs(blk)->backing->bs;
    assert_non_null(b);
    assert_string_equal(b->drv->format_name, "qcow2");

    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            offs[i] = (int64_t)(rand_r(&seed) % (4 * MiB - LEN));
            memset(bufs[i], 0xee, LEN);
            iovector_init_buf(&qiov[i], bufs[i], LEN);
            w.pending++;
            blk_aio_preadv(blk, offs[i], &qiov[i], 0, aio_cb, &w);
            if (i == N / 2) {
                /* Half submitted, some in flight on the backing node. */
                bdrv_drained_begin(b);
                assert_int_equal((int)atomic_load(&b->in_flight), 0);
                bdrv_drained_end(b);
            }
        }
        if (round == 1) {
            bdrv_drained_begin(b);
            assert_int_equal((int)atomic_load(&b->in_flight), 0);
        }
        while (w.pending) {
            aio_poll(blk_get_aio_context(blk), true);
        }
        if (round == 1) {
            bdrv_drained_end(b);
        }
        assert_int_equal(w.errors, 0);
        for (int i = 0; i < N; i++) {
            assert_memory_equal(bufs[i], base + offs[i], LEN);
        }
    }
    shortcut_drain_waits(blk, b, base);
    blk_unref(blk);
    free(base);
}

/*
 * The backing shortcut is for read-only backing nodes: once the backing node
 * is reopened read-write (as commit does), reads through the overlay take the
 * ordinary path on it again, so they wait for a serialising write in flight
 * there (here an allocating one, which links its cluster only after its data
 * is written: a read that skipped the wait would see the old zeroes), and
 * every write to the backing node is seen through the overlay.
 */
static void test_qcow2_backing_shortcut_reopen_rw(void **state)
{
    uint8_t a[4096], bdata[4096], buf[4096];
    char opts[8192];
    IOVector wq, rq;
    AioWrite w = { 0, 0 };
    BlockDriverState *b;
    BlockBackend *blk, *bblk;
    Error *err = NULL;

    drv_test_pattern(a, sizeof(a), 41);
    drv_test_pattern(bdata, sizeof(bdata), 42);
    create(img2, "size=4M,cluster_size=4k", NULL, 0);
    blk = open_img(img2, "", BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, sizeof(a), a, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "backing_file=%s,backing_fmt=qcow2", img2);
    create(img, opts, NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    b = blk_bs(blk)->backing->bs;
    assert_true(b->read_only);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, a, sizeof(a));

    assert_int_equal(bdrv_reopen_set_read_only(b, false, &err), 0);
    assert_false(b->read_only);
    bblk = blk_new_with_bs(b, &err);
    assert_non_null(bblk);
    /* A serialising allocating write to the backing node, then a read of it. */
    iovector_init_buf(&wq, bdata, sizeof(bdata));
    memset(buf, 0xee, sizeof(buf));
    iovector_init_buf(&rq, buf, sizeof(buf));
    w.pending = 2;
    blk_aio_pwritev(bblk, 64 * KiB, &wq, BDRV_REQ_SERIALISING, aio_cb, &w);
    blk_aio_preadv(blk, 64 * KiB, &rq, 0, aio_cb, &w);
    while (w.pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(w.errors, 0);
    assert_memory_equal(buf, bdata, sizeof(bdata));
    /* And plain writes to it show through the overlay. */
    assert_int_equal(blk_pwrite(bblk, 0, sizeof(bdata), bdata, 0), 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, bdata, sizeof(bdata));
    blk_unref(bblk);
    blk_unref(blk);
    blk = open_img(img2, "", 0);
    assert_int_equal(blk_pread(blk, 64 * KiB, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, bdata, sizeof(bdata));
    blk_unref(blk);
}

/* Disjoint concurrent writes into the same clusters: exact contents. */
static void test_qcow2_concurrent_same_cluster(void **state)
{
    enum { N = 32 };
    static uint8_t bufs[N][1000];
    IOVector qiov[N];
    uint8_t *want = calloc(1, MiB), *got;
    AioWrite w = { 0, 0 };
    BlockBackend *blk;
    int64_t len;

    create(img, "size=1M,cluster_size=64k", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)i * 3000 + (i % 3) * 65536;

        drv_test_pattern(bufs[i], sizeof(bufs[i]), (uint8_t)(i + 7));
        memcpy(want + off, bufs[i], sizeof(bufs[i]));
        iovector_init_buf(&qiov[i], bufs[i], sizeof(bufs[i]));
        w.pending++;
        blk_aio_pwritev(blk, off, &qiov[i], 0, aio_cb, &w);
    }
    while (w.pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(w.errors, 0);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, MiB);
    blk_unref(blk);
    assert_qemu_valid(img, want, MiB);
    free(got);
    free(want);
}

/* ---------------------------------------------------------------------- */
/* Zero, discard, truncate, preallocation, info */

typedef struct StatusArgs {
    BlockDriverState *bs;
    int64_t off, pnum;
    int ret;
} StatusArgs;

static StatusArgs st_args;

static void coroutine_fn status_co(void *opaque)
{
    StatusArgs *a = opaque;
    int64_t map;
    BlockDriverState *file;

    a->ret = bdrv_co_block_status(a->bs, a->off, 2 * MiB - a->off, &a->pnum, &map, &file);
}

static void test_qcow2_zero_discard(void **state)
{
    uint8_t *want = malloc(2 * MiB), *got;
    BlockBackend *blk;
    int64_t len;

    create(img, "size=2M,cluster_size=64k", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    memset(want, 0xab, 2 * MiB);
    assert_int_equal(blk_pwrite(blk, 0, 2 * MiB, want, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, 65536, 131072, BDRV_REQ_MAY_UNMAP), 0);
    memset(want + 65536, 0, 131072);
    assert_int_equal(blk_pwrite_zeroes(blk, 300000, 100000, 0), 0); /* unaligned */
    memset(want + 300000, 0, 100000);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, 2 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 2 * MiB);

    /* discard needs discard=unmap; without a backing file clusters read zero */
    blk = open_img(img, "discard=unmap", BDRV_O_RDWR);
    assert_int_equal(blk_pdiscard(blk, 1 * MiB, 512 * KiB), 0);
    memset(want + MiB, 0, 512 * KiB);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, 2 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 2 * MiB);

    /* block status: data, then zero clusters */
    blk = open_img(img, "", 0);
    st_args.bs = blk_bs(blk);
    st_args.off = 0;
    drv_test_run_co(blk_get_aio_context(blk), status_co, &st_args);
    assert_true(st_args.ret & BDRV_BLOCK_DATA);
    assert_int_equal(st_args.pnum, 65536);
    st_args.off = 65536;
    drv_test_run_co(blk_get_aio_context(blk), status_co, &st_args);
    assert_true(st_args.ret & BDRV_BLOCK_ZERO);
    assert_int_equal(st_args.pnum, 131072);
    blk_unref(blk);
    free(want);
}

static void test_qcow2_truncate(void **state)
{
    uint8_t *want = calloc(1, 8 * MiB), *got;
    BlockBackend *blk;
    Error *err = NULL;
    int64_t len;

    create(img, "size=1000000,cluster_size=4k", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    memset(want, 0x3c, 1000000);
    assert_int_equal(blk_pwrite(blk, 0, 1000000, want, 0), 0);
    /* grow far: the L1 table grows */
    assert_int_equal(blk_truncate(blk, 8 * MiB, false, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_int_equal(blk_getlength(blk), 8 * MiB);
    memset(want + 7 * MiB, 0x4d, 4096);
    assert_int_equal(blk_pwrite(blk, 7 * MiB, 4096, want + 7 * MiB, 0), 0);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, 8 * MiB);
    free(got);
    /* shrink */
    assert_int_equal(blk_truncate(blk, 500000, false, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_int_equal(blk_getlength(blk), 500000);
    /* grow again: the area past the old end reads zero */
    assert_int_equal(blk_truncate(blk, 2 * MiB, false, PREALLOC_MODE_METADATA, 0, &err), 0);
    memset(want + 500000, 0, 8 * MiB - 500000);
    got = read_all(blk, &len);
    assert_int_equal(len, 2 * MiB);
    assert_memory_equal(got, want, 2 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 2 * MiB);
    free(want);
}

static void test_qcow2_preallocation(void **state)
{
    static const char *const modes[] = { "metadata", "falloc", "full" };
    uint8_t *zero = calloc(1, 3 * MiB), *got;
    char opts[256];

    for (int i = 0; i < 3; i++) {
        BlockBackend *blk;
        int64_t len;

        snprintf(opts, sizeof(opts), "size=3M,preallocation=%s", modes[i]);
        create(img, opts, NULL, 0);
        blk = open_img(img, "", 0);
        got = read_all(blk, &len);
        assert_memory_equal(got, zero, 3 * MiB);
        free(got);
        blk_unref(blk);
        assert_qemu_valid(img, zero, 3 * MiB);
        if (have_qemu) {
            /* every cluster is allocated: "qemu-img map" shows data everywhere */
            assert_int_equal(drv_test_sh("qemu-img map --output=json '%s' | grep -q '\"data\": false'",
                                img), 1);
        }
    }
    free(zero);
}

static void test_qcow2_info(void **state)
{
    BlockDriverInfo bdi;
    BlockBackend *blk;
    char *js;

    create(img, "size=1M,cluster_size=4k,lazy_refcounts=on", NULL, 0);
    blk = open_img(img, "", 0);
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 4096);
    assert_false(bdi.is_dirty);
    js = bdrv_get_specific_info(blk_bs(blk), NULL);
    assert_non_null(js);
    assert_string_equal(js, "{\"compat\": \"1.1\", \"compression-type\": \"zlib\", "
                        "\"lazy-refcounts\": true, \"refcount-bits\": 16, \"corrupt\": false, "
                        "\"extended-l2\": false}");
    free(js);
    blk_unref(blk);
    create(img, "size=1M,compat=0.10", NULL, 0);
    blk = open_img(img, "", 0);
    js = bdrv_get_specific_info(blk_bs(blk), NULL);
    assert_string_equal(js, "{\"compat\": \"0.10\", \"compression-type\": \"zlib\", "
                        "\"refcount-bits\": 16}");
    free(js);
    blk_unref(blk);
}

static void test_qcow2_change_backing(void **state)
{
    BlockBackend *blk;
    Error *err = NULL;

    create(img2, "size=1M", NULL, 0);
    create(img, "size=1M", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), img2, "qcow2", &err), 0);
    blk_unref(blk);
    blk = open_img(img, "", 0);
    assert_non_null(blk_bs(blk)->backing);
    assert_string_equal(blk_bs(blk)->backing_format, "qcow2");
    blk_unref(blk);
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img info '%s' | grep -q 'backing file format: qcow2'", img),
                         0);
        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    }
}

static void test_qcow2_create_errors(void **state)
{
    char msg[1024];

    assert_true(create(img, "size=1M,cluster_size=1000", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "cluster size"));
    assert_true(create(img, "size=1M,cluster_size=4M", msg, sizeof(msg)) < 0);
    assert_true(create(img, "size=1M,refcount_bits=3", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "refcount_bits"));
    assert_true(create(img, "size=1M,compat=0.10,lazy_refcounts=on", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "lazy refcounts"));
    assert_true(create(img, "size=1M,compat=2.0", msg, sizeof(msg)) < 0);
    assert_true(create(img, "size=1M,extended_l2=on,cluster_size=4k", msg, sizeof(msg)) < 0);
    assert_true(create(img, "size=1M,data_file_raw=on", msg, sizeof(msg)) < 0);
    assert_true(create(img, "cluster_size=4k", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "size"));
    assert_true(create(img, "size=1M,bogus=1", msg, sizeof(msg)) < 0);
    assert_non_null(strstr(msg, "bogus"));
}

/* ---------------------------------------------------------------------- */
/* Corrupt images */

/* A valid minimal v3 image (64k clusters, 1M): header, reftable, refblock, L1. */
static uint8_t *make_image(size_t *len)
{
    size_t cs = 65536;
    uint8_t *b = calloc(1, 4 * cs);

    st_be32(b, 0x514649fb);
    st_be32(b + 4, 3);
    st_be32(b + 20, 16);
    st_be64(b + 24, MiB);
    st_be32(b + 36, 1);
    st_be64(b + 40, 3 * cs);
    st_be64(b + 48, cs);
    st_be32(b + 56, 1);
    st_be32(b + 96, 4);
    st_be32(b + 100, 112);
    st_be64(b + cs, 2 * cs);
    for (int i = 0; i < 4; i++) {
        st_be16(b + 2 * cs + i * 2, 1);
    }
    *len = 4 * cs;
    return b;
}

static void corrupt_case(void (*mut)(uint8_t *b), int flags, const char *want)
{
    char opts[8192];
    size_t len;
    uint8_t *b = make_image(&len);

    if (mut) {
        mut(b);
    }
    write_file(img, b, len);
    free(b);
    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", img);
    if (!want) {
        blk_unref(drv_test_open_ok(opts, flags));
        if (have_qemu && !mut) {
            assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
        }
        return;
    }
    drv_test_open_fails(opts, flags, want);
}

static void m_version(uint8_t *b) { st_be32(b + 4, 4); }
static void m_cbits_lo(uint8_t *b) { st_be32(b + 20, 8); }
static void m_cbits_hi(uint8_t *b) { st_be32(b + 20, 22); }
static void m_huge_l1(uint8_t *b) { st_be32(b + 36, 0x10000000); }
static void m_l1_small(uint8_t *b) { st_be64(b + 24, 1ULL << 40); }
static void m_l1_eof(uint8_t *b) { st_be64(b + 40, 100ULL << 16); }
static void m_l1_unaligned(uint8_t *b) { st_be64(b + 40, 3 * 65536 + 8); }
static void m_rt_eof(uint8_t *b) { st_be64(b + 48, 1ULL << 40); }
static void m_rt_huge(uint8_t *b) { st_be32(b + 56, 1000); }
static void m_rt_zero(uint8_t *b) { st_be32(b + 56, 0); }
static void m_incompat(uint8_t *b) { st_be64(b + 72, 1ULL << 9); }
static void m_corrupt(uint8_t *b) { st_be64(b + 72, 1ULL << 1); }
static void m_crypt(uint8_t *b) { st_be32(b + 32, 1); }
static void m_refcount_order(uint8_t *b) { st_be32(b + 96, 7); }
static void m_hdr_len(uint8_t *b) { st_be32(b + 100, 100); }
static void m_snapshots(uint8_t *b) { st_be32(b + 60, 100000); }
static void m_backing_len(uint8_t *b)
{
    st_be64(b + 8, 200);
    st_be32(b + 16, 5000);
}
static void m_backing_eof(uint8_t *b)
{
    st_be64(b + 8, 1ULL << 30);
    st_be32(b + 16, 10);
}
static void m_ext_overrun(uint8_t *b)
{
    st_be32(b + 112, 0x12345678);
    st_be32(b + 116, 70000);
}
static void m_feature_named(uint8_t *b)
{
    /* unknown incompatible bit 12, named by the feature table */
    st_be64(b + 72, 1ULL << 12);
    st_be32(b + 112, 0x6803f857);
    st_be32(b + 116, 48);
    b[120] = 0;
    b[121] = 12;
    memcpy(b + 122, "frobnication", 12);
}
static void m_unknown_ext(uint8_t *b)
{
    st_be32(b + 112, 0x0badcafe);
    st_be32(b + 116, 5);
    memcpy(b + 120, "hello", 5);
}
static void m_overlap_l1_reftable(uint8_t *b)
{
    st_be64(b + 40, 65536); /* L1 on top of the refcount table */
}

static void test_qcow2_corrupt_images(void **state)
{
    corrupt_case(NULL, BDRV_O_RDWR, NULL);
    corrupt_case(m_version, 0, "version 4");
    corrupt_case(m_cbits_lo, 0, "cluster_bits 8");
    corrupt_case(m_cbits_hi, 0, "cluster_bits 22");
    corrupt_case(m_huge_l1, 0, "L1 table");
    corrupt_case(m_l1_small, 0, "l1_size 1 is too small");
    corrupt_case(m_l1_eof, 0, "outside the file");
    corrupt_case(m_l1_unaligned, 0, "not cluster-aligned");
    corrupt_case(m_rt_eof, 0, "refcount table");
    corrupt_case(m_rt_huge, 0, "refcount table");
    corrupt_case(m_rt_zero, 0, "refcount_table_clusters is 0");
    corrupt_case(m_incompat, 0, "bit 9");
    corrupt_case(m_feature_named, 0, "frobnication");
    corrupt_case(m_corrupt, BDRV_O_RDWR, "corrupt");
    corrupt_case(m_corrupt, 0, NULL); /* read-only is fine */
    corrupt_case(m_overlap_l1_reftable, 0, NULL);
    corrupt_case(m_crypt, 0, "encrypt");
    corrupt_case(m_refcount_order, 0, "refcount_order 7");
    corrupt_case(m_hdr_len, 0, "header_length 100");
    corrupt_case(m_snapshots, 0, "nb_snapshots 100000");
    corrupt_case(m_backing_len, 0, "backing file name length 5000");
    corrupt_case(m_backing_eof, 0, "backing file name");
    corrupt_case(m_ext_overrun, 0, "header extension");
}

/* An unknown header extension survives a header rewrite. */
static void test_qcow2_unknown_ext_kept(void **state)
{
    BlockBackend *blk;
    Error *err = NULL;
    size_t len;
    uint8_t *b = make_image(&len), *after;
    int64_t alen;

    m_unknown_ext(b);
    write_file(img, b, len);
    free(b);
    blk = open_img(img, "", BDRV_O_RDWR);
    assert_int_equal(bdrv_change_backing_file(blk_bs(blk), "base.img", "raw", &err), 0);
    blk_unref(blk);
    after = read_file(img, &alen);
    assert_non_null(memmem(after, 65536, "\x0b\xad\xca\xfe\x00\x00\x00\x05hello", 13));
    assert_non_null(memmem(after, 65536, "base.img", 8));
    free(after);
}

/* Overlapping tables: the write that would hit metadata is refused, image marked corrupt. */
static void test_qcow2_overlap_corrupt(void **state)
{
    uint8_t buf[512];
    BlockBackend *blk;
    size_t len;
    uint8_t *b = make_image(&len), *after;
    int64_t alen;

    /* L1 entry 0 points at an L2 table that is the refcount block (cluster 2). */
    st_be64(b + 3 * 65536, (2 * 65536) | (1ULL << 63));
    write_file(img, b, len);
    free(b);
    blk = open_img(img, "", BDRV_O_RDWR);
    memset(buf, 0x11, sizeof(buf));
    /* The write allocates a data cluster and updates "L2" = refblock: refused on flush. */
    blk_pwrite(blk, 0, sizeof(buf), buf, 0);
    assert_true(blk_flush(blk) < 0 || bdrv_is_read_only(blk_bs(blk)));
    blk_unref(blk);
    after = read_file(img, &alen);
    assert_true(ld_be64(after + 72) & 2); /* corrupt bit */
    free(after);
    /* A corrupt image opens read-only only. */
    {
        char opts[8192];

        snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s", img);
        drv_test_open_fails(opts, BDRV_O_RDWR, "corrupt");
        blk_unref(drv_test_open_ok(opts, 0));
    }
}

/* A dirty image (lazy refcounts, refcount updates lost in a crash) is repaired on open. */
static void test_qcow2_dirty_repair(void **state)
{
    uint8_t *b, *got, pat[65536];
    BlockBackend *blk;
    int64_t len;

    NEED_QEMU();
    assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 -o lazy_refcounts=on '%s' 2M && qemu-io "
                        "-f qcow2 -c 'write -P 0x5e 0 196608' '%s' >/dev/null", img, img), 0);
    b = read_file(img, &len);
    b[79] |= 1;                                 /* dirty bit */
    memset(b + 2 * 65536 + 3 * 2, 0, 5 * 2);    /* refcounts of clusters 3..7 lost */
    write_file(img, b, (size_t)len);
    free(b);
    assert_int_not_equal(drv_test_sh("qemu-img check -q '%s' 2>/dev/null", img), 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    memset(pat, 0x6f, sizeof(pat));
    assert_int_equal(blk_pwrite(blk, MiB, sizeof(pat), pat, 0), 0);
    got = read_all(blk, &len);
    blk_unref(blk);
    assert_int_equal(got[0], 0x5e);
    assert_int_equal(got[196607], 0x5e);
    assert_int_equal(got[MiB], 0x6f);
    b = read_file(img, &len);
    assert_int_equal(b[79] & 1, 0);
    free(b);
    assert_qemu_valid(img, got, 2 * MiB);
    free(got);
}

/* Compressed writes (zlib and zstd): read back, and qemu-img sees compressed clusters. */
static void check_compressed_writes(const char *copts)
{
    uint8_t *want = calloc(1, 2 * MiB), *got;
    BlockBackend *blk;
    int64_t len;

    create(img, copts, NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    for (int i = 0; i < 2 * MiB; i++) {
        want[i] = (uint8_t)(i / 3000);
    }
    drv_test_pattern(want + MiB, 65536, 3); /* poorly compressible: stored plainly */
    assert_int_equal(blk_pwrite(blk, 0, 2 * MiB, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    /* overwrite part of a compressed cluster: COW decompresses it */
    memset(want + 70000, 0xee, 1000);
    assert_int_equal(blk_pwrite(blk, 70000, 1000, want + 70000, 0), 0);
    /* unaligned compressed writes are refused */
    assert_int_equal(blk_pwrite(blk, 512, 65536, want, BDRV_REQ_WRITE_COMPRESSED), -EINVAL);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, 2 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 2 * MiB);
    if (have_qemu) {
        /* qemu-img 7.2 lists compressed data without an offset */
        assert_int_equal(drv_test_sh("qemu-img map --output=json '%s' | grep -q '\"data\": true}'",
                            img), 0);
    }
    free(want);
}

static void test_qcow2_compressed_writes(void **state)
{
    check_compressed_writes("size=2M");
    check_compressed_writes("size=2M,compression_type=zstd");
    check_compressed_writes("size=2M,cluster_size=4k");
}

/* Tiny caches force evictions (dirty L2 tables written behind refcounts). */
static void test_qcow2_small_cache(void **state)
{
    uint8_t *want = calloc(1, 8 * MiB), *got, buf[3000];
    BlockBackend *blk;
    unsigned seed = 7;
    int64_t len;

    create(img, "size=8M,cluster_size=512", NULL, 0);
    blk = open_img(img, "l2-cache-size=2048,refcount-cache-size=2048,overlap-check=all,"
                   "cache-clean-interval=1", BDRV_O_RDWR);
    for (int i = 0; i < 300; i++) {
        int64_t off = rand_r(&seed) % (8 * MiB - (int)sizeof(buf));

        drv_test_pattern(buf, sizeof(buf), (uint8_t)i);
        memcpy(want + off, buf, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, off, sizeof(buf), buf, 0), 0);
    }
    got = read_all(blk, &len);
    assert_memory_equal(got, want, 8 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 8 * MiB);
    drv_test_open_fails("driver=qcow2,file.driver=file,file.filename=/dev/null,"
                        "overlap-check=sometimes", 0, "overlap-check");
    free(want);
}

/*
 * More concurrent requests than the node's buffer pool has sets (16 with
 * 64 KiB clusters): compressed reads and partial writes into compressed
 * clusters (COW that decompresses) wait for sets and give exact bytes.
 */
static void test_qcow2_compressed_concurrent(void **state)
{
    enum { N = 96, NCL = 32 };
    static uint8_t rbufs[N][4096], wbufs[N][3000];
    uint8_t *want = malloc(NCL * 64 * KiB), *got;
    IOVector rq[N], wq[N];
    AioWrite w = { 0, 0 };
    BlockBackend *blk;
    unsigned seed = 99;
    int64_t roff[N], len;

    create(img, "size=2M", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    for (int i = 0; i < NCL * 64 * KiB; i++) {
        want[i] = (uint8_t)((i / 512) * 7 + (i % 13)); /* compressible, not constant */
    }
    assert_int_equal(blk_pwrite(blk, 0, NCL * 64 * KiB, want, BDRV_REQ_WRITE_COMPRESSED), 0);
    for (int i = 0; i < N; i++) {
        roff[i] = (int64_t)(rand_r(&seed) % (NCL * 64 * KiB - 4096));
        iovector_init_buf(&rq[i], rbufs[i], 4096);
        w.pending++;
        blk_aio_preadv(blk, roff[i], &rq[i], 0, aio_cb, &w);
    }
    while (w.pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(w.errors, 0);
    for (int i = 0; i < N; i++) {
        assert_memory_equal(rbufs[i], want + roff[i], 4096);
    }
    /* One partial write per cluster (three rounds over the clusters, disjoint pieces). */
    for (int i = 0; i < N; i++) {
        int64_t off = (int64_t)(i % NCL) * 64 * KiB + (i / NCL) * 20000 + 100;

        drv_test_pattern(wbufs[i], sizeof(wbufs[i]), (uint8_t)(i + 1));
        memcpy(want + off, wbufs[i], sizeof(wbufs[i]));
        iovector_init_buf(&wq[i], wbufs[i], sizeof(wbufs[i]));
        w.pending++;
        blk_aio_pwritev(blk, off, &wq[i], 0, aio_cb, &w);
    }
    while (w.pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(w.errors, 0);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, NCL * 64 * KiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 2 * MiB);
    free(want);
}

static BlockOpts *kv(const char *str)
{
    BlockOpts *o = bopts_new();

    assert_int_equal(bopts_parse_keyval(o, str, NULL, NULL), 0);
    return o;
}

/* Reopen with other l2-cache-size / refcount-cache-size resizes the caches. */
static void test_qcow2_reopen_cache_size(void **state)
{
    uint8_t *want = calloc(1, 16 * MiB), *got, buf[5000];
    BDRVQcow2State *s;
    BlockBackend *blk;
    Error *err = NULL;
    unsigned seed = 3;
    int64_t len;

    create(img, "size=16M,cluster_size=4k", NULL, 0);
    blk = open_img(img, "l2-cache-size=16k,refcount-cache-size=16k", BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    assert_int_equal(s->l2_cache->size, 4);
    assert_int_equal(s->refcount_cache->size, 4);
    for (int i = 0; i < 200; i++) {
        int64_t off = rand_r(&seed) % (16 * MiB - (int)sizeof(buf));

        drv_test_pattern(buf, sizeof(buf), (uint8_t)i);
        memcpy(want + off, buf, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, off, sizeof(buf), buf, 0), 0);
        if (i == 100) {
            /* Dirty tables in the old caches are written before the swap. */
            if (bdrv_reopen(blk_bs(blk), kv("l2-cache-size=64k,refcount-cache-size=32k"),
                            &err) < 0) {
                fail_msg("reopen: %s", error_get_pretty(err));
            }
            assert_int_equal(s->l2_cache->size, 16);
            assert_int_equal(s->refcount_cache->size, 8);
        }
    }
    /* A bad combination is refused and leaves the caches alone. */
    assert_true(bdrv_reopen(blk_bs(blk), kv("cache-size=64k,l2-cache-size=32k,"
                                            "refcount-cache-size=16k"), &err) < 0);
    error_free(err);
    err = NULL;
    assert_int_equal(s->l2_cache->size, 16);
    /* Back to small caches (the default refcount cache: 256 KiB). */
    assert_int_equal(bdrv_reopen(blk_bs(blk), kv("l2-cache-size=8k"), &err), 0);
    assert_int_equal(s->l2_cache->size, 4);
    assert_int_equal(s->refcount_cache->size, 64);
    got = read_all(blk, &len);
    assert_memory_equal(got, want, 16 * MiB);
    free(got);
    blk_unref(blk);
    assert_qemu_valid(img, want, 16 * MiB);
    free(want);
}

/*
 * limram: a RAM protocol (the bytes of an image file, loaded by the test)
 * whose limits become invalid with cache.direct=on while limram_bad_limits
 * is set, and whose reopen_prepare fails while limram_refuse is set: a
 * reopen then fails after qcow2's cache step, at the limits or in prepare.
 */
static uint8_t *limram;
static int64_t limram_len, limram_cap;
static bool limram_bad_limits, limram_refuse;

static int limram_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    char *fn = NULL;

    bopts_take_str(options, "filename", &fn, NULL);
    free(fn);
    return 0;
}

static int64_t coroutine_fn limram_getlength(BlockDriverState *bs)
{
    return limram_len;
}

static int coroutine_fn limram_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    int64_t in = offset < limram_len ? (limram_len - offset < bytes ? limram_len - offset
                                                                    : bytes) : 0;

    iovector_from_buf(qiov, qoff, limram + offset, (size_t)in);
    iovector_memset(qiov, qoff + (size_t)in, 0, (size_t)(bytes - in));
    return 0;
}

static int coroutine_fn limram_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, size_t qoff, BdrvRequestFlags flags)
{
    if (offset + bytes > limram_cap) {
        return -ENOSPC;
    }
    if (offset > limram_len) { /* a gap past the end reads as zeroes, as in a file */
        memset(limram + limram_len, 0, (size_t)(offset - limram_len));
    }
    iovector_to_buf(qiov, qoff, limram + offset, (size_t)bytes);
    limram_len = offset + bytes > limram_len ? offset + bytes : limram_len;
    return 0;
}

static int coroutine_fn limram_flush(BlockDriverState *bs)
{
    return 0;
}

static void limram_refresh_limits(BlockDriverState *bs, Error **errp)
{
    if (limram_bad_limits && (bs->open_flags & BDRV_O_NOCACHE)) {
        bs->bl.request_alignment = 3;
    }
}

static int limram_reopen_prepare(BlockDriverState *bs, BlockOpts *options, int new_flags,
                                 Error **errp)
{
    if (limram_refuse) {
        error_setg(errp, "limram: reopen refused");
        return -EPERM;
    }
    return 0;
}

static const BlockDriver bdrv_limram = {
    .struct_size = sizeof(BlockDriver),
    .refresh_limits = limram_refresh_limits,
    .reopen_prepare = limram_reopen_prepare,
    .format_name = "limram",
    .protocol_name = "limram",
    .is_protocol = true,
    .bdrv_open = limram_open,
    .co_getlength = limram_getlength,
    .co_preadv = limram_preadv,
    .co_pwritev = limram_pwritev,
    .co_flush_to_disk = limram_flush,
};

/*
 * A reopen that changes the cache sizes and the runtime options, then fails
 * after qcow2's cache step (a child refuses in prepare, or the new limits
 * are invalid after the commits), leaves the old caches and options in
 * place; the image stays consistent and usable.
 */
static void test_qcow2_reopen_fail_keeps_caches(void **state)
{
    static bool registered;
    uint8_t buf[5000];
    BDRVQcow2State *s;
    BlockBackend *blk;
    Error *err = NULL;
    int64_t len;
    int fd;

    if (!registered) {
        assert_int_equal(bdrv_register(&bdrv_limram, &err), 0);
        registered = true;
    }
    create(img, "size=16M,cluster_size=4k", NULL, 0);
    free(limram);
    limram = read_file(img, &len);
    limram_len = len;
    limram_cap = 32 * MiB;
    limram = realloc(limram, (size_t)limram_cap);
    assert_non_null(limram);
    blk = drv_test_open_ok("driver=qcow2,l2-cache-size=16k,refcount-cache-size=16k,"
                           "overlap-check=none,file.driver=limram,file.filename=x",
                           BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    assert_int_equal(s->l2_cache->size, 4);
    assert_int_equal(s->overlap_check, 0);
    drv_test_pattern(buf, sizeof(buf), 1);
    assert_int_equal(blk_pwrite(blk, 12345, sizeof(buf), buf, 0), 0); /* dirty tables */

    /* The file node refuses in prepare: qcow2's staged caches are dropped. */
    limram_refuse = true;
    assert_true(bdrv_reopen(blk_bs(blk), kv("l2-cache-size=64k,refcount-cache-size=32k,"
                                            "overlap-check=all"), &err) < 0);
    limram_refuse = false;
    assert_non_null(strstr(error_get_pretty(err), "reopen refused"));
    error_free(err);
    err = NULL;
    assert_int_equal(s->l2_cache->size, 4);
    assert_int_equal(s->refcount_cache->size, 4);
    assert_int_equal(s->overlap_check, 0);

    /* The new limits are invalid: everything qcow2 committed goes back. */
    limram_bad_limits = true;
    assert_true(bdrv_reopen(blk_bs(blk), kv("l2-cache-size=64k,refcount-cache-size=32k,"
                                            "overlap-check=all,cache.direct=on"), &err) < 0);
    limram_bad_limits = false;
    assert_non_null(strstr(error_get_pretty(err), "invalid limits"));
    error_free(err);
    err = NULL;
    assert_false(blk_bs(blk)->open_flags & BDRV_O_NOCACHE);
    assert_int_equal(s->l2_cache->size, 4);
    assert_int_equal(s->refcount_cache->size, 4);
    assert_int_equal(s->overlap_check, 0);
    assert_int_equal(blk_pwrite(blk, 3 * MiB + 7, sizeof(buf), buf, 0), 0);

    /* A reopen that succeeds still resizes them. */
    assert_int_equal(bdrv_reopen(blk_bs(blk), kv("l2-cache-size=64k,refcount-cache-size=32k,"
                                                 "overlap-check=all"), &err), 0);
    assert_int_equal(s->l2_cache->size, 16);
    assert_int_equal(s->refcount_cache->size, 8);
    assert_int_equal(s->overlap_check, QCOW2_OL_ALL);
    blk_unref(blk);

    /* The image is consistent: write it out and let qemu-img check it. */
    fd = open(img, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, limram, (size_t)limram_len), limram_len);
    close(fd);
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
        assert_int_equal(drv_test_sh("qemu-io -f qcow2 -c 'read -P 0 0 12345' -c 'read -P 0 17345 1M' "
                            "'%s' >/dev/null", img), 0);
    }
    free(limram);
    limram = NULL;
}

/* Writes 512 bytes of value p + i at each offset i, then reads them back. */
static void write_marks(BlockBackend *blk, const int64_t *offs, int n, int p)
{
    uint8_t buf[512], got[512];

    for (int i = 0; i < n; i++) {
        memset(buf, p + i, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, offs[i], sizeof(buf), buf, 0), 0);
    }
    for (int i = 0; i < n; i++) {
        memset(buf, p + i, sizeof(buf));
        assert_int_equal(blk_pread(blk, offs[i], sizeof(got), got, 0), 0);
        assert_memory_equal(got, buf, sizeof(buf));
    }
}

/* qemu-img check finds no error, and qemu-io the marks of write_marks. */
static void qemu_reads_marks(const char *path, const int64_t *offs, int n, int p)
{
    if (!have_qemu) {
        return;
    }
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", path), 0);
    for (int i = 0; i < n; i++) {
        assert_int_equal(drv_test_sh("out=$(qemu-io -f qcow2 -r -c 'read -q -P %d %lld 512' "
                                     "'%s' 2>&1) && [ -z \"$out\" ]", p + i,
                                     (long long)offs[i], path), 0);
    }
}

/*
 * Size limits of small clusters (see check_size_limits in resize.c). The L1
 * table holds at most 32 MiB (4 Mi entries: 128 GiB of guest with 512-byte
 * clusters). A table longer than a refcount range (E clusters, E = refcount
 * entries per block: 64 for 512-byte clusters and refcount_bits=64) cannot
 * lie between the blocks that start each range: it goes to the end of the
 * image with the blocks of its ranges behind it (refcount.c, alloc_tail).
 * Past the limits create fails at once with -EFBIG and a message naming the
 * size and the limit.
 */
static void test_qcow2_size_limits(void **state)
{
    const int64_t big[] = { 0, 5 * GiB + 4096, 10 * GiB - 512, 20 * GiB - 512 };
    const int64_t grown[] = { 512, 2 * GiB + 512, 3 * GiB - 512 };
    BlockSnapshotInfo sn = { .vm_state_size = 0 };
    BDRVQcow2State *s;
    char err[1024];
    BlockBackend *blk;
    Error *e = NULL;

    /* 20 GiB: an L1 table of 5 MiB = 10240 clusters, 160 refcount ranges. */
    assert_int_equal(create(img, "size=20G,cluster_size=512,refcount_bits=64", err,
                            sizeof(err)), 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    s = blk_bs(blk)->opaque;
    assert_int_equal(s->l1_size, 655360);
    write_marks(blk, big, 4, 20);
    /* An internal snapshot copies the L1 table: another run of 10240 clusters. */
    snprintf(sn.name, sizeof(sn.name), "s1");
    assert_int_equal(bdrv_snapshot_create(blk_bs(blk), &sn, &e), 0);
    assert_null(e);
    write_marks(blk, big, 4, 40);
    blk_unref(blk);
    qemu_reads_marks(img, big, 4, 40);

    /* 16-bit refcounts (E = 256): 1 GiB grown to 3 GiB moves the L1 table (256 clusters). */
    assert_int_equal(create(img, "size=1G,cluster_size=512", err, sizeof(err)), 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    write_marks(blk, grown, 1, 60);
    assert_int_equal(blk_truncate(blk, 3 * GiB, false, PREALLOC_MODE_OFF, 0, &e), 0);
    assert_null(e);
    write_marks(blk, grown, 3, 60);
    blk_unref(blk);
    qemu_reads_marks(img, grown, 3, 60);

    /* The L1 cap: 128 GiB, one byte more needs a 4194305th entry; no file is left. */
    unlink(img);
    assert_int_equal(create(img, "size=137438953473,cluster_size=512", err, sizeof(err)),
                     -EFBIG);
    assert_int_equal(access(img, F_OK), -1);
    assert_non_null(strstr(err, "a guest size of 137438953473 bytes needs 4194305 L1 entries"));
    assert_non_null(strstr(err, "512-byte clusters the L1 table holds at most 4194304 (a guest "
                                "size of 137438953472 bytes)"));
    /* Preallocating needs more host file than the refcount table reaches (8 MiB: 32 GiB). */
    assert_int_equal(create(img, "size=40G,cluster_size=512,refcount_bits=64,"
                                 "preallocation=metadata", err, sizeof(err)), -EFBIG);
    assert_non_null(strstr(err, "the refcount table (at most 1048576 entries) describes at "
                                "most 34359738368 bytes"));
    /* 64 KiB clusters reach the 32 MiB L1 cap at 2 PiB. */
    assert_int_equal(create(img, "size=1P,cluster_size=65536", err, sizeof(err)), 0);
}

/* Reopen changes an option of the backing node by its dotted path, and a
 * reopen with one bad option (on any node) leaves every node as it was. */
static void test_qcow2_reopen_backing_options(void **state)
{
    BDRVQcow2State *top, *base;
    BlockDriverState *bs, *bbs;
    uint8_t buf[8192], want[8192];
    char opts[8192];
    BlockBackend *blk;
    Error *err = NULL;

    create(img2, "size=1M,cluster_size=4k", NULL, 0);
    blk = open_img(img2, "", BDRV_O_RDWR);
    drv_test_pattern(want, sizeof(want), 7);
    assert_int_equal(blk_pwrite(blk, 0, sizeof(want), want, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "size=1M,cluster_size=4k,backing_file=%s,backing_fmt=qcow2",
             img2);
    create(img, opts, NULL, 0);
    blk = open_img(img, "l2-cache-size=16k", BDRV_O_RDWR);
    bs = blk_bs(blk);
    bbs = bdrv_backing_bs(bs);
    top = bs->opaque;
    base = bbs->opaque;
    assert_int_equal(top->l2_cache->size, 4);
    assert_int_not_equal(base->l2_cache->size, 16);

    if (bdrv_reopen(bs, kv("backing.l2-cache-size=64k,backing.file.cache.no-flush=on"),
                    &err) < 0) {
        fail_msg("reopen: %s", error_get_pretty(err));
    }
    assert_int_equal(base->l2_cache->size, 16);
    assert_int_equal(top->l2_cache->size, 4);
    assert_true(bdrv_file_bs(bbs)->open_flags & BDRV_O_NO_FLUSH);
    assert_false(bbs->open_flags & BDRV_O_NO_FLUSH);
    assert_true(bdrv_is_read_only(bbs));
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));

    /* Every node would change, but one option is unknown: nothing changes. */
    assert_int_equal(bdrv_reopen(bs, kv("read-only=on,l2-cache-size=32k,"
                                        "backing.l2-cache-size=8k,"
                                        "backing.file.cache.no-flush=off,"
                                        "backing.file.bogus=1"), &err), -EINVAL);
    assert_non_null(strstr(error_get_pretty(err), "backing.file"));
    assert_non_null(strstr(error_get_pretty(err), "Unknown option 'bogus'"));
    error_free(err);
    err = NULL;
    assert_false(bdrv_is_read_only(bs));
    assert_int_equal(top->l2_cache->size, 4);
    assert_int_equal(base->l2_cache->size, 16);
    assert_true(bdrv_file_bs(bbs)->open_flags & BDRV_O_NO_FLUSH);
    /* A bad value for the backing driver also undoes the top's change. */
    assert_true(bdrv_reopen(bs, kv("l2-cache-size=32k,backing.l2-cache-size=-1"), &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "backing"));
    error_free(err);
    err = NULL;
    assert_int_equal(top->l2_cache->size, 4);
    assert_int_equal(base->l2_cache->size, 16);
    /* A child that does not exist is an unknown option of the top. */
    assert_true(bdrv_reopen(bs, kv("nochild.x=1"), &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "nochild.x"));
    error_free(err);
    err = NULL;
    /* The chain still works, and writes still go to the top. */
    assert_int_equal(blk_pwrite(blk, 4096, 4, "abcd", 0), 0);
    memcpy(want + 4096, "abcd", 4);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    blk_unref(blk);
}

/* overlap-check=all refuses guest data writes into clusters that hold metadata. */
static void test_qcow2_overlap_data_write(void **state)
{
    uint8_t buf[4096];
    uint64_t l1, l2, rt;
    BlockBackend *blk;
    int fd;

    create(img, "size=1M,cluster_size=4k", NULL, 0);
    blk = open_img(img, "", BDRV_O_RDWR);
    memset(buf, 0x11, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
    /* Point guest cluster 0's L2 entry at the refcount table. */
    fd = open(img, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, 64, 0), 64);
    l1 = ld_be64(buf + 40);
    rt = ld_be64(buf + 48);
    assert_int_equal(pread(fd, buf, 8, (off_t)l1), 8);
    l2 = ld_be64(buf) & L1E_OFFSET_MASK;
    st_be64(buf, rt | QCOW_OFLAG_COPIED);
    assert_int_equal(pwrite(fd, buf, 8, (off_t)l2), 8);
    close(fd);
    blk = open_img(img, "overlap-check=all", BDRV_O_RDWR);
    memset(buf, 0x22, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EIO);
    blk_unref(blk);
    /* Refused before it reached the refcount table; the image is marked corrupt. */
    fd = open(img, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, 8, (off_t)rt), 8);
    assert_int_not_equal(ld_be64(buf), 0x2222222222222222ULL);
    assert_int_equal(pread(fd, buf, 8, 72), 8);
    close(fd);
    assert_true(ld_be64(buf) & QCOW2_INCOMPAT_CORRUPT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qcow2_probe),
        cmocka_unit_test_setup_teardown(test_qcow2_create_write_default, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_create_write_variants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_read_qemu_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_read_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_backing_chain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_create_backing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_concurrent_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_backing_shortcut_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_backing_shortcut_reopen_rw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_concurrent_same_cluster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_zero_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_truncate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_preallocation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_info, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_change_backing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_create_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_corrupt_images, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_unknown_ext_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_overlap_corrupt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_dirty_repair, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_compressed_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_small_cache, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_reopen_cache_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_reopen_fail_keeps_caches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_size_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_reopen_backing_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_compressed_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_qcow2_overlap_data_write, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
