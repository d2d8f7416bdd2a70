/*
 * Unit tests: concurrent allocating writes into adjacent new clusters share
 * one data write (drivers/format/qcow2/wbatch.c).
 *
 * Each test starts a burst of writes at once (as a guest at a queue depth
 * does), checks that batches formed, reads every byte back, and with qemu-img
 * installed checks the image (`qemu-img check` clean) and compares it with a
 * raw file holding the expected guest data (`qemu-img compare` identical).
 * The power-cut side (a cut at every point after a flush) is
 * tests/crash/powercut-qcow2-concurrent.
 */
#include "drv-test-util.h"

#include "block/block-int.h"
#include "drivers/format/qcow2/qcow2.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define CS (64 * KiB)
#define GUEST (8 * MiB)
#define BURST 32

static char img[4096], ref[4096], back[4096];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2wb-img");
    drv_test_path(ref, sizeof(ref), "qcow2wb-ref");
    drv_test_path(back, sizeof(back), "qcow2wb-back");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(ref);
    unlink(back);
    return 0;
}

/* One write of a burst: its buffer and result. */
typedef struct BurstReq {
    uint8_t *buf;
    IOVector qiov;
    int64_t off, len;
    int ret;
    bool done;
} BurstReq;

static void burst_cb(void *opaque, int ret)
{
    BurstReq *r = opaque;

    r->ret = ret;
    r->done = true;
}

/*
 * Starts n writes at once, write i at first + i * CS + skip, len bytes of a
 * pattern (seed + i), and polls until all have completed.
 */
static void burst(BlockBackend *blk, BurstReq *reqs, int n, int64_t first, int64_t skip,
                  int64_t len, uint8_t seed)
{
    for (int i = 0; i < n; i++) {
        BurstReq *r = &reqs[i];

        *r = (BurstReq){ .off = first + (int64_t)i * CS + skip, .len = len };
        r->buf = malloc((size_t)len);
        assert_non_null(r->buf);
        drv_test_pattern(r->buf, (size_t)len, (uint8_t)(seed + i));
        iovector_init_buf(&r->qiov, r->buf, (size_t)len);
        assert_non_null(blk_aio_pwritev(blk, r->off, &r->qiov, 0, burst_cb, r));
    }
    for (int i = 0; i < n; i++) {
        while (!reqs[i].done) {
            aio_poll(blk_get_aio_context(blk), true);
        }
    }
}

static void burst_free(BurstReq *reqs, int n)
{
    for (int i = 0; i < n; i++) {
        free(reqs[i].buf);
    }
}

/* Puts the successful writes of reqs into the expected guest data. */
static void apply(uint8_t *want, const BurstReq *reqs, int n)
{
    for (int i = 0; i < n; i++) {
        if (reqs[i].ret == 0) {
            memcpy(want + reqs[i].off, reqs[i].buf, (size_t)reqs[i].len);
        }
    }
}

static void assert_guest(BlockBackend *blk, const uint8_t *want)
{
    uint8_t *got = malloc(GUEST);

    assert_non_null(got);
    assert_int_equal(blk_pread(blk, 0, GUEST, got, 0), 0);
    assert_memory_equal(got, want, GUEST);
    free(got);
}

/* qemu-img check is clean and the image holds exactly want (through a raw copy). */
static void assert_image(const uint8_t *want)
{
    int fd;

    if (!have_qemu) {
        return;
    }
    fd = open(ref, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, want, GUEST, 0), GUEST);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f qcow2 -F raw '%s' '%s'", img, ref), 0);
}

static BDRVQcow2State *qcow2_state(BlockBackend *blk)
{
    return blk_bs(blk)->opaque;
}

/*
 * Whole-cluster writes into an empty image, BURST at a time, the second
 * burst in reverse guest order: batches form (data written in fewer
 * requests), every byte reads back, and the image is clean and identical
 * to the data. Writes into clusters allocated before go in place, unbatched.
 */
static void test_wbatch_whole_clusters(void **state)
{
    uint8_t *want = calloc(1, GUEST);
    BurstReq reqs[BURST];
    BlockBackend *blk;
    BDRVQcow2State *s;

    assert_non_null(want);
    assert_int_equal(drv_test_create("qcow2", img, "size=8M", NULL, 0), 0);
    blk = drv_test_open_image("qcow2", img, BDRV_O_RDWR);
    s = qcow2_state(blk);
    burst(blk, reqs, BURST, 0, 0, CS, 1);
    for (int i = 0; i < BURST; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    apply(want, reqs, BURST);
    burst_free(reqs, BURST);
    /* A full batch (two clusters) closes and the next write leads another: many batches. */
    assert_true(s->wbatch_writes >= BURST / 4);
    assert_true(s->wbatch_joined >= BURST / 4);
    assert_int_equal(s->wbatch, NULL);
    assert_guest(blk, want);

    /* The same clusters again: in place, no new batch. */
    {
        uint64_t w = s->wbatch_writes, j = s->wbatch_joined;

        burst(blk, reqs, BURST, 0, 0, CS, 100);
        apply(want, reqs, BURST);
        burst_free(reqs, BURST);
        assert_int_equal(s->wbatch_writes, w);
        assert_int_equal(s->wbatch_joined, j);
    }
    /* The next 2 MiB, flushed in between. */
    assert_int_equal(blk_flush(blk), 0);
    burst(blk, reqs, BURST, BURST * CS, 0, CS, 50);
    apply(want, reqs, BURST);
    burst_free(reqs, BURST);
    assert_guest(blk, want);
    blk_unref(blk);

    blk = drv_test_open_image("qcow2", img, 0);
    assert_guest(blk, want);
    blk_unref(blk);
    assert_image(want);
    free(want);
}

/*
 * Partial-cluster writes over a backing file: each allocation copies its head
 * and tail from the backing file, so each data write covers whole clusters
 * (COW buffers + guest data) and adjacent ones batch; the COW bytes read back.
 */
static void test_wbatch_cow_from_backing(void **state)
{
    uint8_t *want = malloc(GUEST);
    BurstReq reqs[BURST];
    BlockBackend *blk;
    char opts[8192];
    int fd;

    assert_non_null(want);
    drv_test_make_file(back, GUEST, 7);
    fd = open(back, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, want, GUEST, 0), GUEST);
    close(fd);
    snprintf(opts, sizeof(opts), "size=8M,backing_file=%s,backing_fmt=raw", back);
    assert_int_equal(drv_test_create("qcow2", img, opts, NULL, 0), 0);
    blk = drv_test_open_image("qcow2", img, BDRV_O_RDWR);
    burst(blk, reqs, BURST, CS, 4 * KiB, CS - 12 * KiB, 3);
    for (int i = 0; i < BURST; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    apply(want, reqs, BURST);
    burst_free(reqs, BURST);
    assert_true(qcow2_state(blk)->wbatch_joined > 0);
    assert_guest(blk, want);
    blk_unref(blk);
    assert_image(want);
    free(want);
}

/*
 * A batch whose write fails: every member gets the error and frees its new
 * clusters (the image has no leak), the writes of the other batches stand,
 * and the failed ranges read as before (zeroes).
 */
static void test_wbatch_write_error(void **state)
{
    uint8_t *want = calloc(1, GUEST);
    BurstReq reqs[BURST];
    BlockBackend *blk;
    char opts[8192];
    int failed = 0;

    assert_non_null(want);
    assert_int_equal(drv_test_create("qcow2", img, "size=8M", NULL, 0), 0);
    /* 16 clusters first (sequential: host 1 MiB and more is data), then a burst whose
     * data write over host sector 6144 (3 MiB) fails. */
    blk = drv_test_open_image("qcow2", img, BDRV_O_RDWR);
    burst(blk, reqs, 1, 0, 0, CS, 9);
    apply(want, reqs, 1);
    burst_free(reqs, 1);
    blk_unref(blk);
    snprintf(opts, sizeof(opts),
             "driver=qcow2,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s,file.inject-error.0.event=none,"
             "file.inject-error.0.iotype=write,file.inject-error.0.sector=6144,"
             "file.inject-error.0.errno=5", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    burst(blk, reqs, 15, CS, 0, CS, 20);
    burst_free(reqs, 15);
    burst(blk, reqs, BURST, 16 * CS, 0, CS, 40);
    for (int i = 0; i < BURST; i++) {
        assert_true(reqs[i].ret == 0 || reqs[i].ret == -EIO);
        failed += reqs[i].ret < 0;
    }
    assert_true(failed > 1); /* a batch's members all fail together */
    assert_true(failed < BURST);
    assert_true(qcow2_state(blk)->wbatch_joined > 0);
    apply(want, reqs, BURST);
    burst_free(reqs, BURST);
    blk_unref(blk);

    blk = drv_test_open_image("qcow2", img, 0);
    {
        uint8_t *got = malloc(GUEST);

        assert_non_null(got);
        assert_int_equal(blk_pread(blk, 16 * CS, BURST * CS, got, 0), 0);
        assert_memory_equal(got, want + 16 * CS, BURST * CS);
        free(got);
    }
    blk_unref(blk);
    if (have_qemu) {
        assert_int_equal(drv_test_sh("qemu-img check -q '%s'", img), 0);
    }
    free(want);
}

/*
 * Writes whose guest vectors have more pieces than a batch or the on-stack
 * vector of an allocating write holds (80 pieces of 819 bytes, then 4
 * pieces): the long ones go out alone through a heap vector, the short ones
 * still batch, and every byte reads back.
 */
static void test_wbatch_many_pieces(void **state)
{
    enum { PIECES = 80, N = 16 };
    uint8_t *want = calloc(1, GUEST);
    IOVector qiov[N];
    BurstReq reqs[N];
    BlockBackend *blk;

    assert_non_null(want);
    assert_int_equal(drv_test_create("qcow2", img, "size=8M", NULL, 0), 0);
    blk = drv_test_open_image("qcow2", img, BDRV_O_RDWR);
    for (int i = 0; i < N; i++) {
        int pieces = i < N / 2 ? PIECES : 4;
        size_t piece = CS / (size_t)pieces, done = 0;

        reqs[i] = (BurstReq){ .off = (int64_t)i * CS, .len = CS };
        reqs[i].buf = malloc(CS);
        assert_non_null(reqs[i].buf);
        drv_test_pattern(reqs[i].buf, CS, (uint8_t)(60 + i));
        iovector_init(&qiov[i], pieces);
        for (int k = 0; k < pieces; k++) {
            size_t len = k == pieces - 1 ? CS - done : piece;

            iovector_add(&qiov[i], reqs[i].buf + done, len);
            done += len;
        }
        assert_non_null(blk_aio_pwritev(blk, reqs[i].off, &qiov[i], 0, burst_cb, &reqs[i]));
    }
    for (int i = 0; i < N; i++) {
        while (!reqs[i].done) {
            aio_poll(blk_get_aio_context(blk), true);
        }
        assert_int_equal(reqs[i].ret, 0);
        iovector_destroy(&qiov[i]);
    }
    assert_true(qcow2_state(blk)->wbatch_joined > 0);
    apply(want, reqs, N);
    burst_free(reqs, N);
    assert_guest(blk, want);
    blk_unref(blk);
    assert_image(want);
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_wbatch_whole_clusters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wbatch_cow_from_backing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wbatch_write_error, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wbatch_many_pieces, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
