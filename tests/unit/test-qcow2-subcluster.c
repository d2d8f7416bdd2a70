/*
 * Unit tests: qcow2 extended L2 entries (extended_l2=on, 32 subclusters per
 * cluster) over a backing file. Writes allocate and copy only the touched
 * subclusters, write-zeroes and discard work per subcluster; the raw L2
 * bitmaps are read from the image file and checked bit by bit, the guest
 * bytes against a reference buffer. With Debian's qemu-img / qemu-io: the
 * images pass `qemu-img check`, equal the reference (`qemu-img compare`),
 * `qemu-img map` agrees with `coblk-img map`, and images written by qemu-io
 * with subcluster-sized requests read identically through coblk.
 */
#include "qcow2-test-edit.h"

#include <libgen.h>

/* L1 / L2 entry bits (qcow2 specification). */
#define L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define QCOW_OFLAG_COPIED (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED (1ULL << 62)

#define KiB 1024
#define MiB (1024 * 1024)
#define CS (64 * KiB)
#define SCS (CS / 32)
#define SIZE (1 * MiB)

static char img[4096], back[4096], raw[4096], tmpraw[4096], dataf[4096], coblk_img[4096];
static bool have_qemu, have_coblk_img;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "sc-top");
    drv_test_path(back, sizeof(back), "sc-back");
    drv_test_path(raw, sizeof(raw), "sc-raw");
    drv_test_path(tmpraw, sizeof(tmpraw), "sc-tmpraw");
    drv_test_path(dataf, sizeof(dataf), "sc-data");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(back);
    unlink(raw);
    unlink(tmpraw);
    unlink(dataf);
    return 0;
}

/*
 * Backing raw file with a pattern; overlay qcow2 (extended_l2) on it, created
 * by coblk (extra: more create options).
 */
static void make_pair_opts(uint8_t *ref, const char *extra)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int fd;

    drv_test_make_file(back, SIZE, 0x40);
    fd = open(back, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, ref, SIZE, 0), SIZE);
    close(fd);
    snprintf(opts, sizeof(opts), "size=%d,extended_l2=on,cluster_size=%d,backing_file=%s,"
             "backing_fmt=raw%s", SIZE, CS, back, extra);
    assert_int_equal(bopts_parse_keyval(o, opts, NULL, &err), 0);
    if (bdrv_create("qcow2", img, o, &err) < 0) {
        fail_msg("create: %s", error_get_pretty(err));
    }
}

static void make_pair(uint8_t *ref)
{
    make_pair_opts(ref, "");
}

static BlockBackend *open_top(void)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=qcow2,file.driver=file,file.filename=%s,discard=unmap",
             img);
    return drv_test_open_ok(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
}

/* The raw 16-byte L2 entry of guest cluster c (first L2 table only). */
static void l2_entry(int c, uint64_t *e, uint64_t *bm)
{
    uint64_t l1 = qe_rd64(img, 40), l2 = qe_rd64(img, l1) & L1E_OFFSET_MASK;

    if (!l2) {
        *e = *bm = 0;
        return;
    }
    *e = qe_rd64(img, l2 + (uint64_t)c * 16);
    *bm = qe_rd64(img, l2 + (uint64_t)c * 16 + 8);
}

/* Bits [first, last] (subcluster indexes). */
static uint64_t bits(int first, int last)
{
    return ((2ULL << last) - 1) & ~((1ULL << first) - 1);
}

static void wr(BlockBackend *blk, uint8_t *ref, int64_t off, int64_t len, uint8_t seed)
{
    uint8_t *buf = malloc((size_t)len);

    drv_test_pattern(buf, (size_t)len, seed);
    assert_int_equal(blk_pwrite(blk, off, len, buf, 0), 0);
    memcpy(ref + off, buf, (size_t)len);
    free(buf);
}

static void assert_reads(BlockBackend *blk, const uint8_t *ref)
{
    uint8_t *got = malloc(SIZE);

    assert_int_equal(blk_pread(blk, 0, SIZE, got, 0), 0);
    assert_memory_equal(got, ref, SIZE);
    free(got);
}

/* qemu-img check clean, compare equal to ref, map equal to coblk-img map. */
static void assert_qemu_agrees(const uint8_t *ref)
{
    char a[4200], b[4200];
    int fd;

    if (!have_qemu) {
        return;
    }
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, ref, SIZE, 0), SIZE);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, img), 0);
    if (!have_coblk_img) {
        return;
    }
    snprintf(a, sizeof(a), "%s.qmap", tmpraw);
    snprintf(b, sizeof(b), "%s.cmap", tmpraw);
    assert_int_equal(drv_test_sh("qemu-img map --output=json '%s' > '%s'", img, a), 0);
    assert_int_equal(drv_test_sh("'%s' map --output=json '%s' > '%s'", coblk_img, img, b), 0);
    if (drv_test_sh("cmp -s '%s' '%s'", a, b) != 0) {
        drv_test_sh("diff '%s' '%s' >&2", a, b);
        fail_msg("qemu-img map and coblk-img map differ");
    }
    unlink(a);
    unlink(b);
}

/* ---------------------------------------------------------------------- */

/* A write into an unallocated cluster allocates it but writes only its subclusters. */
static void test_sc_alloc_partial(void **state)
{
    uint8_t *ref = malloc(SIZE), *sub = malloc(SCS);
    uint64_t e, bm, host;
    BlockBackend *blk;
    int fd;

    make_pair(ref);
    blk = open_top();
    wr(blk, ref, CS + SCS + 952, 1000, 1);     /* inside subcluster 1 of cluster 1 */
    assert_reads(blk, ref);
    blk_unref(blk);
    l2_entry(1, &e, &bm);
    host = e & L2E_OFFSET_MASK;
    assert_true(host != 0);
    assert_true(e & QCOW_OFLAG_COPIED);
    assert_int_equal(bm, bits(1, 1));
    /* The host subcluster holds backing data around the guest data (COW). */
    fd = open(img, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, sub, SCS, (off_t)(host + SCS)), SCS);
    close(fd);
    assert_memory_equal(sub, ref + CS + SCS, SCS);
    /* Neighbours still come from the backing file: a second overlay write keeps them. */
    l2_entry(0, &e, &bm);
    assert_int_equal(e, 0);
    assert_int_equal(bm, 0);
    assert_qemu_agrees(ref);
    free(ref);
    free(sub);
}

/* Writes into an allocated cluster fill only the unallocated subclusters in place. */
static void test_sc_fill(void **state)
{
    uint8_t *ref = malloc(SIZE);
    uint64_t e, bm, host;
    BlockBackend *blk;

    make_pair(ref);
    blk = open_top();
    wr(blk, ref, 2 * CS + 3 * SCS, SCS, 2);             /* subcluster 3, whole */
    assert_int_equal(blk_flush(blk), 0);
    l2_entry(2, &e, &bm);
    host = e & L2E_OFFSET_MASK;
    assert_int_equal(bm, bits(3, 3));
    wr(blk, ref, 2 * CS + 10 * SCS + 100, 50, 3);       /* subcluster 10: fill */
    wr(blk, ref, 2 * CS + 3 * SCS + 1000, 2 * SCS, 4);  /* 3 (allocated) .. 5 (partial) */
    wr(blk, ref, 2 * CS + 31 * SCS + 7, 10, 5);         /* the last subcluster */
    assert_reads(blk, ref);
    assert_int_equal(blk_flush(blk), 0);
    l2_entry(2, &e, &bm);
    assert_int_equal(e & L2E_OFFSET_MASK, host);        /* same host cluster */
    assert_int_equal(bm, bits(3, 5) | bits(10, 10) | bits(31, 31));
    blk_unref(blk);
    blk = open_top();
    assert_reads(blk, ref);
    blk_unref(blk);
    assert_qemu_agrees(ref);
    free(ref);
}

/* A write over several clusters: partial subclusters at both ends only. */
static void test_sc_multi_cluster(void **state)
{
    uint8_t *ref = malloc(SIZE);
    uint64_t e, bm;
    BlockBackend *blk;

    make_pair(ref);
    blk = open_top();
    wr(blk, ref, 4 * CS + 20 * SCS + 5, 2 * CS, 6);     /* cluster 4 sc 20 .. cluster 6 sc 20 */
    assert_reads(blk, ref);
    blk_unref(blk);
    l2_entry(4, &e, &bm);
    assert_int_equal(bm, bits(20, 31));
    l2_entry(5, &e, &bm);
    assert_int_equal(bm, bits(0, 31));
    l2_entry(6, &e, &bm);
    assert_int_equal(bm, bits(0, 20));
    assert_qemu_agrees(ref);
    free(ref);
}

/* Write-zeroes and discard of single subclusters set the zero bits. */
static void test_sc_zero_discard(void **state)
{
    uint8_t *ref = malloc(SIZE);
    uint64_t e, bm, host;
    BlockBackend *blk;

    make_pair(ref);
    blk = open_top();
    wr(blk, ref, 7 * CS, 8 * SCS, 7);                   /* sc 0..7 allocated */
    assert_int_equal(blk_pwrite_zeroes(blk, 7 * CS + 6 * SCS, 4 * SCS, 0), 0);
    memset(ref + 7 * CS + 6 * SCS, 0, 4 * SCS);         /* sc 6..9 zero */
    assert_int_equal(blk_pdiscard(blk, 7 * CS + 20 * SCS, 2 * SCS), 0);
    memset(ref + 7 * CS + 20 * SCS, 0, 2 * SCS);        /* with a backing file: zero */
    /* Unaligned write-zeroes: whole subclusters zeroed, the rest written as zeroes. */
    assert_int_equal(blk_pwrite_zeroes(blk, 7 * CS + 12 * SCS + 100, SCS, 0), 0);
    memset(ref + 7 * CS + 12 * SCS + 100, 0, SCS);
    assert_reads(blk, ref);
    assert_int_equal(blk_flush(blk), 0);
    l2_entry(7, &e, &bm);
    host = e & L2E_OFFSET_MASK;
    assert_true(host != 0);
    assert_int_equal(bm & 0xffffffffULL, bits(0, 5) | bits(12, 13));
    assert_int_equal(bm >> 32, bits(6, 9) | bits(20, 21));
    /* Zeroing every allocated subcluster with unmap drops the host cluster. */
    assert_int_equal(blk_pwrite_zeroes(blk, 7 * CS, 6 * SCS, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, 7 * CS + 12 * SCS, 2 * SCS, BDRV_REQ_MAY_UNMAP), 0);
    memset(ref + 7 * CS, 0, 6 * SCS);
    memset(ref + 7 * CS + 12 * SCS, 0, 2 * SCS);
    assert_reads(blk, ref);
    assert_int_equal(blk_flush(blk), 0);
    l2_entry(7, &e, &bm);
    assert_int_equal(e, 0);
    assert_int_equal(bm, (bits(0, 9) | bits(12, 13) | bits(20, 21)) << 32);
    blk_unref(blk);
    assert_qemu_agrees(ref);
    free(ref);
}

/* A write into a compressed cluster rewrites the whole cluster: all allocated. */
static void test_sc_compressed(void **state)
{
    uint8_t *ref = malloc(SIZE), *buf = malloc(CS);
    uint64_t e, bm;
    BlockBackend *blk;

    make_pair(ref);
    blk = open_top();
    memset(buf, 0x3c, CS);
    assert_int_equal(blk_pwrite(blk, 9 * CS, CS, buf, BDRV_REQ_WRITE_COMPRESSED), 0);
    memcpy(ref + 9 * CS, buf, CS);
    assert_int_equal(blk_flush(blk), 0);
    l2_entry(9, &e, &bm);
    assert_true(e & QCOW_OFLAG_COMPRESSED);
    wr(blk, ref, 9 * CS + 5 * SCS + 3, 10, 8);
    assert_reads(blk, ref);
    blk_unref(blk);
    l2_entry(9, &e, &bm);
    assert_false(e & QCOW_OFLAG_COMPRESSED);
    assert_int_equal(bm, bits(0, 31));
    /* Zeroing / discarding part of a compressed cluster: a compressed entry has no
     * subcluster bits, so write-zeroes writes zeroes (COW) and discard leaves it. */
    blk = open_top();
    assert_int_equal(blk_pwrite(blk, 10 * CS, CS, buf, BDRV_REQ_WRITE_COMPRESSED), 0);
    memcpy(ref + 10 * CS, buf, CS);
    assert_int_equal(blk_pdiscard(blk, 10 * CS + 4 * SCS, SCS), 0);
    assert_int_equal(blk_flush(blk), 0);
    l2_entry(10, &e, &bm);
    assert_true(e & QCOW_OFLAG_COMPRESSED);
    assert_int_equal(blk_pwrite_zeroes(blk, 10 * CS + 4 * SCS, SCS, 0), 0);
    memset(ref + 10 * CS + 4 * SCS, 0, SCS);
    assert_reads(blk, ref);
    blk_unref(blk);
    l2_entry(10, &e, &bm);
    assert_false(e & QCOW_OFLAG_COMPRESSED);
    assert_int_equal(bm, bits(0, 31));
    assert_qemu_agrees(ref);
    free(ref);
    free(buf);
}

/* An external data file: subclusters of clusters that sit at their guest offset. */
static void test_sc_data_file(void **state)
{
    uint8_t *ref = malloc(SIZE);
    char extra[4200];
    uint64_t e, bm;
    BlockBackend *blk;

    snprintf(extra, sizeof(extra), ",data_file=%s", dataf);
    make_pair_opts(ref, extra);
    blk = open_top();
    wr(blk, ref, 5 * CS + 2 * SCS + 10, 100, 11);       /* new cluster: sc 2 */
    wr(blk, ref, 5 * CS + 9 * SCS + 10, SCS, 12);       /* fill: sc 9..10 */
    assert_int_equal(blk_pwrite_zeroes(blk, 5 * CS + 20 * SCS, SCS, 0), 0);
    memset(ref + 5 * CS + 20 * SCS, 0, SCS);
    assert_reads(blk, ref);
    blk_unref(blk);
    l2_entry(5, &e, &bm);
    assert_int_equal(e & L2E_OFFSET_MASK, 5 * CS);
    assert_int_equal(bm, bits(2, 2) | bits(9, 10) | (bits(20, 20) << 32));
    blk = open_top();
    assert_reads(blk, ref);
    blk_unref(blk);
    if (have_qemu) {
        int fd = open(raw, O_RDWR | O_CREAT | O_TRUNC, 0644);

        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
        assert_int_equal(pwrite(fd, ref, SIZE, 0), SIZE);
        close(fd);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F qcow2 '%s' '%s'", raw, img), 0);
    }
    free(ref);
}

/* Images qemu-io wrote with subcluster requests read the same through coblk. */
static void test_sc_qemu_written(void **state)
{
    uint8_t *mine = malloc(SIZE), *theirs = malloc(SIZE), *ref = malloc(SIZE);
    BlockBackend *blk;
    int fd;

    if (!have_qemu) {
        skip();
    }
    drv_test_make_file(back, SIZE, 0x21);
    assert_int_equal(drv_test_sh("qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k,"
                        "backing_file='%s',backing_fmt=raw '%s'", back, img), 0);
    assert_int_equal(drv_test_sh("qemu-io -c 'write -P 0x11 3000 1000' -c 'write -z 10240 4096' "
                        "-c 'write -P 0x22 65000 70000' -c 'discard 200704 4096' "
                        "-c 'write -c -P 0x33 262144 65536' -c 'write -P 0x44 266240 512' "
                        "-c 'write -z -u 327680 2048' '%s' >/dev/null", img), 0);
    assert_int_equal(drv_test_sh("qemu-img convert -O raw '%s' '%s'", img, tmpraw), 0);
    fd = open(tmpraw, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, theirs, SIZE, 0), SIZE);
    close(fd);
    blk = open_top();
    assert_int_equal(blk_pread(blk, 0, SIZE, mine, 0), 0);
    assert_memory_equal(mine, theirs, SIZE);
    /* And coblk's writes on top keep qemu's bitmaps consistent. */
    memcpy(ref, theirs, SIZE);
    wr(blk, ref, 2048 + 700, 3000, 9);
    wr(blk, ref, 10240 + 1024, 100, 10);
    assert_int_equal(blk_pwrite_zeroes(blk, 65536 + 4096, 4096, 0), 0);
    memset(ref + 65536 + 4096, 0, 4096);
    assert_reads(blk, ref);
    blk_unref(blk);
    assert_qemu_agrees(ref);
    free(mine);
    free(theirs);
    free(ref);
}

/* Many concurrent small writes into the same clusters (fill and alloc races). */
static void aio_cb(void *opaque, int ret)
{
    int *pending = opaque;

    assert_int_equal(ret, 0);
    (*pending)--;
}

static void test_sc_concurrent(void **state)
{
    enum { N = 64, SLOTS = 80, LEN = 1500 };
    uint8_t *ref = malloc(SIZE), *bufs = malloc(N * LEN);
    int slot[SLOTS], pending = 0;
    unsigned seed = 11;
    IOVector *v = calloc(N, sizeof(*v));
    BlockBackend *blk;

    for (int i = 0; i < SLOTS; i++) {
        slot[i] = i;
    }
    for (int i = SLOTS - 1; i > 0; i--) {
        int j = (int)(rand_r(&seed) % (unsigned)(i + 1)), t = slot[i];

        slot[i] = slot[j];
        slot[j] = t;
    }
    make_pair(ref);
    blk = open_top();
    for (int i = 0; i < N; i++) {
        /* Disjoint 1500-byte slots over two clusters and a bit, in random order. */
        int64_t off = 3 * CS + (int64_t)slot[i] * 1600;
        uint8_t *b = bufs + i * LEN;

        drv_test_pattern(b, LEN, (uint8_t)(i + 1));
        memcpy(ref + off, b, LEN);
        iovector_init_buf(&v[i], b, LEN);
        pending++;
        blk_aio_pwritev(blk, off, &v[i], 0, aio_cb, &pending);
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_reads(blk, ref);
    blk_unref(blk);
    assert_qemu_agrees(ref);
    free(ref);
    free(bufs);
    free(v);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sc_alloc_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_fill, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_multi_cluster, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_zero_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_compressed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_data_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_qemu_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sc_concurrent, setup, teardown),
    };
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null && command -v qemu-io >/dev/null") == 0;
    if (n > 0) {
        exe[n] = '\0';
        snprintf(coblk_img, sizeof(coblk_img), "%s/../../tools/img/coblk-img", dirname(exe));
        have_coblk_img = access(coblk_img, X_OK) == 0;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
