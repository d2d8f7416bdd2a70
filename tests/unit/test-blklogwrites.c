/*
 * Unit tests: the blklogwrites filter (drivers/protocol/blklogwrites.c) and
 * its replay library (tools/logreplay/replay.c), plus blkverify: a random
 * write/zero/discard/flush workload is logged; replaying to each flush
 * rebuilds exactly the data as of that flush, and simulated power cuts
 * leave every sector holding its flushed data or data written after it.
 * Truncates (growing and shrinking) are logged and replayed in order; a cut
 * before the flush that follows one leaves the old length or the new one.
 */
#include <sys/stat.h>

#include "drv-test-util.h"

#include "block/bytes.h"
#include "drivers/protocol/blklogwrites.h"
#include "drivers/protocol/blkverify.h"
#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

#define IMG_SIZE (256 * 1024)
#define ROUNDS 12
#define SS 512

static char img[4096], logf[4096], base[4096], target[4096], ref[4096];
static uint8_t model[ROUNDS][IMG_SIZE]; /* the guest's data as of flush k */

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "lw-img");
    drv_test_path(logf, sizeof(logf), "lw-log");
    drv_test_path(base, sizeof(base), "lw-base");
    drv_test_path(target, sizeof(target), "lw-target");
    drv_test_path(ref, sizeof(ref), "lw-ref");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(logf);
    unlink(base);
    unlink(target);
    unlink(ref);
    return 0;
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static void copy_file(const char *from, const char *to)
{
    uint8_t *buf = malloc(IMG_SIZE);
    int a = open(from, O_RDONLY), b = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);

    assert_true(a >= 0 && b >= 0);
    assert_int_equal(pread(a, buf, IMG_SIZE, 0), IMG_SIZE);
    assert_int_equal(pwrite(b, buf, IMG_SIZE, 0), IMG_SIZE);
    close(a);
    close(b);
    free(buf);
}

static void read_file(const char *path, uint8_t *buf)
{
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, IMG_SIZE, 0), IMG_SIZE);
    close(fd);
}

/* Random writes (some unaligned, some FUA), zeroes and discards, a flush per round. */
static void run_workload(BlockBackend *blk, uint8_t *cur)
{
    uint64_t seed = 42;
    uint8_t buf[16384];

    for (int r = 0; r < ROUNDS; r++) {
        int ops = 3 + (int)(rnd(&seed) % 6);

        for (int i = 0; i < ops; i++) {
            int64_t len = 1 + (int64_t)(rnd(&seed) % sizeof(buf));
            int64_t off = (int64_t)(rnd(&seed) % (IMG_SIZE - len));
            unsigned kind = (unsigned)(rnd(&seed) % 8);

            if (kind == 0) {
                off &= ~(int64_t)(SS - 1);
                len = (len + SS - 1) & ~(int64_t)(SS - 1);
                assert_int_equal(blk_pwrite_zeroes(blk, off, len, 0), 0);
                memset(cur + off, 0, (size_t)len);
            } else if (kind == 1) {
                off &= ~(int64_t)(SS - 1);
                len = (len + SS - 1) & ~(int64_t)(SS - 1);
                assert_int_equal(blk_pdiscard(blk, off, len), 0);
                memset(cur + off, 0, (size_t)len); /* file discard punches a hole */
            } else {
                drv_test_pattern(buf, (size_t)len, (uint8_t)(r * 16 + i + 1));
                assert_int_equal(blk_pwrite(blk, off, len, buf,
                                            kind == 2 ? BDRV_REQ_FUA : 0), 0);
                memcpy(cur + off, buf, (size_t)len);
            }
        }
        assert_int_equal(blk_flush(blk), 0);
        memcpy(model[r], cur, IMG_SIZE);
    }
}

static void make_log(void)
{
    char opts[16384];
    uint8_t *cur = calloc(1, IMG_SIZE);
    BlockBackend *blk;

    drv_test_make_file(img, IMG_SIZE, 0);
    copy_file(img, base);
    snprintf(opts, sizeof(opts),
             "driver=blklogwrites,file.driver=file,file.filename=%s,log.driver=file,"
             "log.filename=%s,log-super-update-interval=7", img, logf);
    drv_test_make_file(logf, 0, 0);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
    run_workload(blk, cur);
    assert_int_equal(blklogwrites_mark(blk_bs(blk), "end"), 0);
    blk_unref(blk);
    free(cur);
}

static void test_blklogwrites_replay_each_flush(void **state)
{
    uint8_t *got = malloc(IMG_SIZE);
    char err[256];
    Wlog log;

    make_log();
    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), 0);
    assert_int_equal(wlog_count_flushes(&log), ROUNDS);
    assert_true(wlog_find_mark(&log, "end") > wlog_find_flush(&log, ROUNDS - 1));
    for (int k = 0; k < ROUNDS; k++) {
        int fd;

        copy_file(base, target);
        fd = open(target, O_WRONLY);
        assert_int_equal(wlog_replay_range(&log, fd, 0, (uint64_t)wlog_find_flush(&log, k) + 1),
                         0);
        close(fd);
        read_file(target, got);
        assert_memory_equal(got, model[k], IMG_SIZE);
    }
    /* The whole log gives the final image. */
    copy_file(base, target);
    {
        int fd = open(target, O_WRONLY);
        uint8_t *final = malloc(IMG_SIZE);

        assert_int_equal(wlog_replay_range(&log, fd, 0, log.nr_entries), 0);
        close(fd);
        read_file(target, got);
        read_file(img, final);
        assert_memory_equal(got, final, IMG_SIZE);
        free(final);
    }
    wlog_close(&log);
    free(got);
}

/* True if sector s of got holds data some entry in [from, to) wrote there. */
static bool written_after(const Wlog *log, uint64_t from, uint64_t to, uint64_t s,
                          const uint8_t *got)
{
    uint8_t buf[SS];

    for (uint64_t i = from; i < to; i++) {
        const WlogEntry *e = &log->e[i];

        if ((e->flags & (LOGW_FLUSH | LOGW_MARK)) || s < e->sector ||
            s >= e->sector + e->nr_sectors) {
            continue;
        }
        if (e->flags & LOGW_DISCARD) {
            memset(buf, 0, SS);
        } else {
            assert_int_equal(pread(log->fd, buf, SS, (off_t)(e->data_off + (s - e->sector) * SS)),
                             SS);
        }
        if (memcmp(buf, got + s * SS, SS) == 0) {
            return true;
        }
    }
    return false;
}

static void test_blklogwrites_power_cuts(void **state)
{
    uint8_t *got = malloc(IMG_SIZE);
    char err[256];
    int differs = 0;
    Wlog log;

    make_log();
    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), 0);
    for (int k = 0; k < ROUNDS - 1; k++) {
        uint64_t upto = (uint64_t)wlog_find_flush(&log, k) + 1;
        uint64_t next = (uint64_t)wlog_find_flush(&log, k + 1);

        for (uint64_t seed = 0; seed < 6; seed++) {
            int fd;

            copy_file(base, target);
            fd = open(target, O_WRONLY);
            assert_int_equal(wlog_replay_crash(&log, fd, upto, seed, seed & 1), 0);
            close(fd);
            read_file(target, got);
            for (uint64_t s = 0; s < IMG_SIZE / SS; s++) {
                if (memcmp(got + s * SS, model[k] + s * SS, SS) != 0) {
                    /* Not the flushed data: must be what a later write put there. */
                    assert_true(written_after(&log, upto, next, s, got));
                    differs++;
                }
            }
        }
    }
    assert_true(differs > 0); /* the crashes did keep some unflushed writes */
    wlog_close(&log);
    free(got);
}

static void test_blklogwrites_bad_logs(void **state)
{
    char err[256], opts[16384];
    uint8_t sup[512] = { 0 };
    Wlog log;
    int fd;

    drv_test_make_file(logf, 4096, 0);
    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "is not a version 1 write log"));
    /* A super claiming entries the file does not hold. */
    st_le64(sup, LOGW_MAGIC);
    st_le64(sup + 8, 1);
    st_le64(sup + 16, 5);
    st_le32(sup + 24, 512);
    fd = open(logf, O_WRONLY);
    assert_int_equal(pwrite(fd, sup, 512, 0), 512);
    assert_int_equal(ftruncate(fd, 512), 0);
    close(fd);
    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "entry 0 lies past the end"));
    /* log-append=on refuses the same log; a bad sector size is named. */
    drv_test_make_file(img, IMG_SIZE, 0);
    snprintf(opts, sizeof(opts),
             "driver=blklogwrites,file.driver=file,file.filename=%s,log.driver=file,"
             "log.filename=%s,log-append=on", img, logf);
    drv_test_open_fails(opts, BDRV_O_RDWR, "entry 0 lies past the end of the log");
    snprintf(opts, sizeof(opts),
             "driver=blklogwrites,file.driver=file,file.filename=%s,log.driver=file,"
             "log.filename=%s,log-sector-size=1000", img, logf);
    drv_test_open_fails(opts, BDRV_O_RDWR, "log-sector-size 1000 must be a power of two");
}

/* log-append=on continues an existing log. */
static void test_blklogwrites_append(void **state)
{
    char opts[16384], err[256];
    uint8_t buf[SS];
    BlockBackend *blk;
    Wlog log;

    drv_test_make_file(img, IMG_SIZE, 0);
    drv_test_make_file(logf, 0, 0);
    for (int pass = 0; pass < 2; pass++) {
        snprintf(opts, sizeof(opts),
                 "driver=blklogwrites,file.driver=file,file.filename=%s,log.driver=file,"
                 "log.filename=%s,log-append=%s", img, logf, pass ? "on" : "off");
        blk = drv_test_open_ok(opts, BDRV_O_RDWR);
        memset(buf, pass + 1, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, pass * SS, SS, buf, 0), 0);
        assert_int_equal(blk_flush(blk), 0);
        blk_unref(blk);
    }
    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), 0);
    assert_int_equal(log.nr_entries, 4);
    assert_int_equal(log.e[2].sector, 1);
    wlog_close(&log);
}

/* The length of path and its bytes (len bytes into buf, at most cap). */
static int64_t file_bytes(const char *path, uint8_t *buf, int64_t cap)
{
    struct stat st;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0 && fstat(fd, &st) == 0);
    assert_true(st.st_size <= cap);
    assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
    close(fd);
    return st.st_size;
}

#define TR_CAP (2 * IMG_SIZE)

/* What the truncate workload left after each of its three flushes. */
typedef struct TruncModel {
    int64_t len[3];
    uint8_t data[3][TR_CAP];
} TruncModel;

static TruncModel tm;

/*
 * Writes, grows to twice the size and writes in the new part, flushes;
 * shrinks to half, flushes; grows back (the cut part now reads zero),
 * writes there, flushes; then grows again and writes with no flush after.
 */
static void truncate_workload(BlockBackend *blk)
{
    static const int64_t lens[3] = { TR_CAP, IMG_SIZE / 2, IMG_SIZE };
    uint8_t *cur = calloc(1, TR_CAP), buf[4096];
    Error *e = NULL;

    for (int r = 0; r < 3; r++) {
        if (r == 0) {
            drv_test_pattern(buf, sizeof(buf), 1);
            assert_int_equal(blk_pwrite(blk, 8192, sizeof(buf), buf, 0), 0);
            memcpy(cur + 8192, buf, sizeof(buf));
        }
        assert_int_equal(blk_truncate(blk, lens[r], true, PREALLOC_MODE_OFF, 0, &e), 0);
        if (lens[r] < TR_CAP) {
            memset(cur + lens[r], 0, (size_t)(TR_CAP - lens[r])); /* cut: regrows as zeroes */
        }
        if (r != 1) {
            drv_test_pattern(buf, sizeof(buf), (uint8_t)(2 + r));
            assert_int_equal(blk_pwrite(blk, lens[r] - 3 * 4096, sizeof(buf), buf, 0), 0);
            memcpy(cur + lens[r] - 3 * 4096, buf, sizeof(buf));
        }
        assert_int_equal(blk_flush(blk), 0);
        tm.len[r] = lens[r];
        memcpy(tm.data[r], cur, TR_CAP);
    }
    assert_int_equal(blk_truncate(blk, TR_CAP, true, PREALLOC_MODE_OFF, 0, &e), 0);
    drv_test_pattern(buf, sizeof(buf), 9);
    assert_int_equal(blk_pwrite(blk, TR_CAP - 4096, sizeof(buf), buf, 0), 0);
    free(cur);
}

/* Replays log onto a copy of base: [0, upto) exactly, or with a subset mask after it. */
static int64_t replay_into(const Wlog *log, uint64_t upto, int64_t mask, uint8_t *got)
{
    int fd;

    copy_file(base, target);
    fd = open(target, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(mask < 0 ? wlog_replay_range(log, fd, 0, upto)
                              : wlog_replay_subset(log, fd, upto, (uint64_t)mask), 0);
    close(fd);
    return file_bytes(target, got, TR_CAP);
}

static void test_blklogwrites_truncates(void **state)
{
    uint8_t *got = malloc(TR_CAP);
    char opts[16384], err[256];
    uint64_t lens_seen = 0;
    BlockBackend *blk;
    Wlog log;

    drv_test_make_file(img, IMG_SIZE, 0);
    copy_file(img, base);
    drv_test_make_file(logf, 0, 0);
    snprintf(opts, sizeof(opts), "driver=blklogwrites,file.driver=file,file.filename=%s,"
             "log.driver=file,log.filename=%s", img, logf);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    truncate_workload(blk);
    assert_int_equal(blklogwrites_mark(blk_bs(blk), "coblk:truncate=5"), -EINVAL);
    assert_int_equal(blklogwrites_mark(blk_bs(blk), "coblk:"), -EINVAL);
    blk_unref(blk);

    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), 0);
    assert_int_equal(wlog_count_flushes(&log), 4); /* the last one at close */
    /* Each flush gives the length and bytes as of that flush. */
    for (int k = 0; k < 3; k++) {
        int64_t len = replay_into(&log, (uint64_t)wlog_find_flush(&log, k) + 1, -1, got);

        assert_int_equal(len, tm.len[k]);
        assert_memory_equal(got, tm.data[k], (size_t)len);
    }
    /* The whole log gives the final file. */
    {
        uint8_t *final = malloc(TR_CAP);
        int64_t len = replay_into(&log, log.nr_entries, -1, got);

        assert_int_equal(len, file_bytes(img, final, TR_CAP));
        assert_memory_equal(got, final, (size_t)len);
        free(final);
    }
    /*
     * A cut between the shrink and its flush: the shrink is one of the two
     * entries of the window (with nothing else); every subset is possible,
     * and both lengths show up.
     */
    {
        uint64_t upto = (uint64_t)wlog_find_flush(&log, 0) + 1;

        assert_int_equal(wlog_window_writes(&log, upto), 1);
        for (int64_t mask = 0; mask < 2; mask++) {
            int64_t len = replay_into(&log, upto, mask, got);

            assert_true(wlog_subset_possible(&log, upto, (uint64_t)mask));
            assert_int_equal(len, mask ? tm.len[1] : tm.len[0]);
            assert_memory_equal(got, tm.data[mask ? 1 : 0], (size_t)len);
            lens_seen |= 1u << mask;
        }
    }
    assert_int_equal(lens_seen, 3);
    /*
     * The last window (a grow and a write past the old end, then only the
     * flush at close): the file keeps its old length, or is grown; the write
     * extends it anyway.
     */
    {
        uint64_t upto = (uint64_t)wlog_find_flush(&log, 2) + 1;

        assert_int_equal(wlog_window_writes(&log, upto), 2);
        assert_int_equal(replay_into(&log, upto, 0, got), tm.len[2]);
        assert_int_equal(replay_into(&log, upto, 1, got), TR_CAP);
        assert_memory_equal(got, tm.data[2], TR_CAP); /* grown: zeroes past the old end */
        assert_int_equal(replay_into(&log, upto, 2, got), TR_CAP);
        assert_memory_equal(got, tm.data[2], TR_CAP - 4096);
    }
    wlog_close(&log);
    free(got);
}

/* coblk's reserved marks with a bad or unknown body make the log unusable, named. */
static void test_blklogwrites_bad_truncate_marks(void **state)
{
    static const char *const bodies[][2] = {
        { "xoblk:truncate=12x", "bad truncate length" },
        { "xoblk:truncate=", "unknown coblk entry" },
        { "xoblk:resize=12", "unknown coblk entry" },
        { "xoblk:truncate=99999999999999999999", "bad truncate length" },
    };

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        char opts[16384], err[256];
        uint8_t *logbuf = malloc(65536), *at;
        BlockBackend *blk;
        Wlog log;
        int fd;
        ssize_t n;

        drv_test_make_file(img, IMG_SIZE, 0);
        drv_test_make_file(logf, 0, 0);
        snprintf(opts, sizeof(opts), "driver=blklogwrites,file.driver=file,file.filename=%s,"
                 "log.driver=file,log.filename=%s", img, logf);
        blk = drv_test_open_ok(opts, BDRV_O_RDWR);
        assert_int_equal(blklogwrites_mark(blk_bs(blk), bodies[i][0]), 0);
        blk_unref(blk);
        /* Turn the user mark into a reserved one. */
        fd = open(logf, O_RDWR);
        n = pread(fd, logbuf, 65536, 0);
        assert_true(n > 0);
        at = memmem(logbuf, (size_t)n, "xoblk:", 6);
        assert_non_null(at);
        assert_int_equal(pwrite(fd, "c", 1, at - logbuf), 1);
        close(fd);
        assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), -EINVAL);
        if (!strstr(err, bodies[i][1])) {
            fail_msg("'%s': error '%s' lacks '%s'", bodies[i][0], err, bodies[i][1]);
        }
        free(logbuf);
    }
}

/* blkverify passes matching data and catches a reference that drifted. */
static void test_blkverify(void **state)
{
    char opts[16384];
    uint8_t buf[4096], back[4096];
    BlockBackend *blk;
    int fd;

    drv_test_make_file(img, IMG_SIZE, 0);
    drv_test_make_file(ref, IMG_SIZE, 0);
    snprintf(opts, sizeof(opts), "driver=blkverify,test.driver=raw,test.file.filename=%s,"
             "raw.driver=raw,raw.file.filename=%s", img, ref);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    drv_test_pattern(buf, sizeof(buf), 9);
    assert_int_equal(blk_pwrite(blk, 1000, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, 8192, 4096, 0), 0);
    assert_int_equal(blk_pread(blk, 1000, sizeof(buf), back, 0), 0);
    assert_memory_equal(back, buf, sizeof(buf));
    assert_int_equal(blkverify_mismatches(blk_bs(blk)), 0);
    /* Change the image behind blkverify's back: the next read fails. */
    fd = open(img, O_WRONLY);
    assert_int_equal(pwrite(fd, "X", 1, 1500), 1);
    close(fd);
    assert_int_equal(blk_pread(blk, 1000, sizeof(buf), back, 0), -EIO);
    assert_int_equal(blkverify_mismatches(blk_bs(blk)), 1);
    blk_unref(blk);
    drv_test_make_file(ref, IMG_SIZE / 2, 0);
    drv_test_open_fails(opts, BDRV_O_RDWR, "differ in length");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blklogwrites_replay_each_flush),
        cmocka_unit_test(test_blklogwrites_power_cuts),
        cmocka_unit_test(test_blklogwrites_bad_logs),
        cmocka_unit_test(test_blklogwrites_append),
        cmocka_unit_test(test_blklogwrites_truncates),
        cmocka_unit_test(test_blklogwrites_bad_truncate_marks),
        cmocka_unit_test(test_blkverify),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
