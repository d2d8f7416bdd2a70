/*
 * Unit tests: deferred table updates of the qed, vdi and qcow drivers
 * (drivers/format/fmt-defer.c, FmtDefer; parallels has its own in
 * test-parallels-alloc.c). Each case runs through
 * blklogwrites, which logs every write and flush a driver does to its file:
 *  - N allocating writes without a guest flush issue O(1) flushes (one to
 *    set qed's need-check mark, one per full pending set), and the guest
 *    flush after them at most two;
 *  - the log replayed to just after the guest flush is an image that holds
 *    every entry (as is the file after a reopen read-only, without a log):
 *    it reads back the data, coblk's check and `qemu-img check` find
 *    nothing, `qemu-img compare` finds it identical to the closed image;
 *  - the worst power cut after every driver flush (every later table-sized
 *    write lands, no data write does) leaves no entry pointing at unwritten
 *    data: the checks pass and every guest sector reads its old content
 *    (backing data or zeroes) or the new data, never zeroes for backing data;
 *  - a failed table write fails the guest flush, the data stays readable and
 *    the next flush writes the entries; a discard or zero write of a block
 *    whose entry is pending leaves a consistent image that reads zeroes.
 */
#include "drv-test-util.h"

#include <sys/wait.h>

#include <coblk/image.h>

#include "block/bytes.h"
#include "drivers/protocol/blklogwrites.h"
#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

#define WLEN 2048       /* each guest write */
#define WOFF 512        /* its offset in its cluster / block: partial, so COW */
#define SS 512

static char img[4096], base[4096], logf[4096], work[4096], back[4096], cmd[20000];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "fp-img");
    drv_test_path(base, sizeof(base), "fp-base");
    drv_test_path(logf, sizeof(logf), "fp-log");
    drv_test_path(work, sizeof(work), "fp-work");
    drv_test_path(back, sizeof(back), "fp-back");
    have_qemu = system("qemu-img --version >/dev/null 2>&1") == 0;
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(base);
    unlink(logf);
    unlink(work);
    unlink(back);
    return 0;
}

typedef struct Case {
    const char *fmt;
    const char *copts;      /* create options besides size and backing */
    bool backing;           /* a raw backing file with a pattern */
    int64_t stride;         /* distance between writes: one per cluster / block */
    int n;                  /* allocating writes */
    int max_write_flushes;  /* flushes the writes may issue before the guest flush */
} Case;

static void copy(const char *from, const char *to)
{
    snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

static uint8_t back_byte(int64_t o)
{
    return (uint8_t)(0x5a ^ (o * 29) ^ (o >> 12));
}

static uint8_t data_byte(int i, int64_t b)
{
    return (uint8_t)(0x80 | (i * 37 + b * 11 + (b >> 9)));
}

static void make_backing(int64_t size)
{
    int fd = open(back, O_RDWR | O_CREAT | O_TRUNC, 0644);
    uint8_t *buf = malloc((size_t)size);

    assert_true(fd >= 0 && buf);
    for (int64_t o = 0; o < size; o++) {
        buf[o] = back_byte(o);
    }
    assert_int_equal(pwrite(fd, buf, (size_t)size, 0), size);
    close(fd);
    free(buf);
}

static BlockBackend *open_logged(const Case *c)
{
    char opts[16384];

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=blklogwrites,file.file.driver=file,"
             "file.file.filename=%s,file.log.driver=file,file.log.filename=%s", c->fmt, img,
             logf);
    return drv_test_open_ok(opts, BDRV_O_RDWR);
}

/* The guest op i writes WLEN bytes at i * stride + WOFF. */
static void write_all(const Case *c, BlockBackend *blk)
{
    uint8_t buf[WLEN];

    for (int i = 0; i < c->n; i++) {
        for (int b = 0; b < WLEN; b++) {
            buf[b] = data_byte(i, b);
        }
        assert_int_equal(blk_pwrite(blk, i * c->stride + WOFF, WLEN, buf, 0), 0);
    }
}

/* Flushes strictly between log entries a and b. */
static int flushes_between(const Wlog *log, int64_t a, int64_t b)
{
    int n = 0;

    for (int64_t i = a + 1; i < b; i++) {
        n += (log->e[i].flags & LOGW_FLUSH) != 0;
    }
    return n;
}

/*
 * Reads the guest view of path and checks each cluster written by op i:
 * with exact, [WOFF, WOFF + WLEN) holds op i's data; otherwise each sector
 * holds it or the old content. The rest of the cluster holds the old content
 * (the backing file's, or zeroes).
 */
static void check_guest_blk(const Case *c, BlockBackend *blk, const char *path, bool exact)
{
    uint8_t *buf = malloc((size_t)c->stride);

    assert_non_null(buf);
    for (int i = 0; i < c->n; i++) {
        int64_t at = i * c->stride;

        assert_int_equal(blk_pread(blk, at, c->stride, buf, 0), 0);
        for (int64_t s = 0; s < c->stride / SS; s++) {
            bool in = s * SS >= WOFF && s * SS < WOFF + WLEN, is_new = in, is_old = !exact || !in;

            for (int b = 0; b < SS; b++) {
                int64_t o = s * SS + b;
                uint8_t old = c->backing ? back_byte(at + o) : 0;

                is_new = is_new && buf[o] == data_byte(i, o - WOFF);
                is_old = is_old && buf[o] == old;
            }
            if (!is_new && !is_old) {
                fail_msg("%s %s: op %d, sector %lld of its cluster holds neither its data nor "
                         "the old content", c->fmt, path, i, (long long)s);
            }
        }
    }
    free(buf);
}

static void check_guest(const Case *c, const char *path, bool exact)
{
    BlockBackend *blk = drv_test_open_image(c->fmt, path, 0);

    check_guest_blk(c, blk, path, exact);
    blk_unref(blk);
}

static void quiet(void *opaque, const char *msg)
{
}

/* coblk's check finds no corruption (and with no_leaks, no leak); qemu-img's agrees. */
static void check_image(const Case *c, const char *path, bool no_leaks)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    BdrvCheckResult res = { .report = quiet };
    BlockDriverState *bs;
    int st;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", c->fmt, path);
    assert_int_equal(bopts_parse_keyval(o, opts, NULL, NULL), 0);
    bs = bdrv_open(NULL, o, 0, NULL);
    assert_non_null(bs);
    assert_int_equal(bdrv_check(bs, &res, BDRV_FIX_NONE), 0);
    bdrv_unref(bs);
    if (res.corruptions || res.check_errors || (no_leaks && res.leaks)) {
        fail_msg("%s: coblk check: %d corruptions, %d errors, %d leaks", path,
                 res.corruptions, res.check_errors, res.leaks);
    }
    if (!have_qemu) {
        return;
    }
    /* vdi words a leak (count ahead of the map) as an error: see powercut.c. */
    snprintf(cmd, sizeof(cmd), "qemu-img check -f %s '%s' >/dev/null 2>&1", c->fmt, path);
    st = system(cmd);
    assert_true(WIFEXITED(st));
    st = WEXITSTATUS(st);
    if (st == 63 && !strcmp(c->fmt, "qcow")) {
        return; /* qemu-img cannot check qcow */
    }
    if (no_leaks ? st != 0 : !(st == 0 || st == 3 || (st == 2 && !strcmp(c->fmt, "vdi")))) {
        fail_msg("%s: qemu-img check exits %d", path, st);
    }
}

/* Replays entries [0, upto) of log onto a copy of the image before the run. */
static void replay(const Wlog *log, uint64_t upto)
{
    int fd;

    copy(base, work);
    fd = open(work, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(wlog_replay_range(log, fd, 0, upto), 0);
    close(fd);
}

/* Whether the entries from from to the next FLUSH hold a truncate. */
static bool window_truncates(const Wlog *log, uint64_t from)
{
    for (uint64_t j = from; j < log->nr_entries && !(log->e[j].flags & LOGW_FLUSH); j++) {
        if (log->e[j].truncate) {
            return true;
        }
    }
    return false;
}

/*
 * qed's metadata as file ranges, read from the closed image: the header,
 * the L1 table and every L2 table. Its table writes are 4 KiB units, as
 * large as a data cluster of a 4 KiB-cluster image, so they are told apart
 * by where they go, not by their size.
 */
#define MAX_REGIONS 1024
static uint64_t reg_off[MAX_REGIONS], reg_len[MAX_REGIONS];
static int n_regions;

static void load_qed_regions(const char *path)
{
    uint8_t h[64];
    uint64_t *l1;
    uint32_t cluster, tables;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, h, sizeof(h), 0), sizeof(h));
    cluster = ld_le32(h + 4);
    tables = ld_le32(h + 8) * cluster;
    assert_true(tables >= 4096 && tables <= (32u << 20));
    l1 = malloc(tables);
    assert_non_null(l1);
    assert_int_equal(pread(fd, l1, tables, (off_t)ld_le64(h + 40)), tables);
    n_regions = 0;
    reg_off[n_regions] = 0;
    reg_len[n_regions++] = (uint64_t)ld_le32(h + 12) * cluster;
    reg_off[n_regions] = ld_le64(h + 40);
    reg_len[n_regions++] = tables;
    for (uint32_t i = 0; i < tables / 8; i++) {
        uint64_t off = ld_le64(&l1[i]);

        if (off) {
            assert_true(n_regions < MAX_REGIONS);
            reg_off[n_regions] = off;
            reg_len[n_regions++] = tables;
        }
    }
    free(l1);
    close(fd);
}

/*
 * qcow's metadata as file ranges, read from the closed image: the header
 * with the backing file name and the L1 table, and every L2 table. Its
 * table writes are 4 KiB units too (QCOW_UNIT).
 */
static void load_qcow_regions(const char *path)
{
    uint8_t h[48];
    uint64_t l1_off, l1_n, l2_bytes;
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, h, sizeof(h), 0), sizeof(h));
    l1_off = ld_be64(h + 40);
    l2_bytes = 8ULL << h[33];
    l1_n = (ld_be64(h + 24) + (1ULL << (h[32] + h[33])) - 1) >> (h[32] + h[33]);
    assert_true(l1_n * 8 <= (32u << 20));
    n_regions = 0;
    reg_off[n_regions] = 0;
    reg_len[n_regions++] = l1_off + l1_n * 8;
    for (uint64_t i = 0; i < l1_n; i++) {
        uint8_t e[8];
        uint64_t off;

        assert_int_equal(pread(fd, e, 8, (off_t)(l1_off + i * 8)), 8);
        off = ld_be64(e);
        if (off) {
            assert_true(n_regions < MAX_REGIONS);
            reg_off[n_regions] = off;
            reg_len[n_regions++] = l2_bytes;
        }
    }
    close(fd);
}

/* Whether log entry e is a metadata write of format c (see check_metadata_only_cuts). */
static bool is_table_write(const Case *c, const Wlog *log, const WlogEntry *e)
{
    uint64_t off = e->sector * log->sectorsize, len = e->nr_sectors * log->sectorsize;

    if (e->flags & (LOGW_MARK | LOGW_DISCARD)) {
        return false;
    }
    if (strcmp(c->fmt, "qed") && strcmp(c->fmt, "qcow")) {
        return len <= SS;
    }
    for (int i = 0; i < n_regions; i++) {
        if (off >= reg_off[i] && off + len <= reg_off[i] + reg_len[i]) {
            return true;
        }
    }
    return false;
}

/*
 * The worst power cut before the first driver flush and after each: of the
 * writes up to the next flush, only the metadata writes land (headers, map
 * and table sectors, one sector at most; qed's: any write into its header or
 * tables). No entry may point at data
 * that is not there. The file's truncates in that window (a grow ahead, a
 * trim) may land or not: both are checked.
 */
static void check_metadata_only_cuts(const Case *c, const Wlog *log)
{
    uint64_t nfl = wlog_count_flushes(log);

    for (uint64_t f = 0; f <= nfl; f++) {
        uint64_t from = f ? (uint64_t)wlog_find_flush(log, f - 1) + 1 : 0;
        bool truncs = window_truncates(log, from);

        for (int with_trunc = 0; with_trunc <= (int)truncs; with_trunc++) {
            int fd;

            replay(log, from);
            fd = open(work, O_WRONLY);
            assert_true(fd >= 0);
            for (uint64_t j = from; j < log->nr_entries && !(log->e[j].flags & LOGW_FLUSH);
                 j++) {
                const WlogEntry *e = &log->e[j];
                if (is_table_write(c, log, e) || (with_trunc && e->truncate)) {
                    assert_int_equal(wlog_replay_range(log, fd, j, j + 1), 0);
                }
            }
            close(fd);
            check_image(c, work, false);
            check_guest(c, work, false);
        }
    }
}

static void create(const Case *c)
{
    int64_t size = c->n * c->stride;
    char opts[8192], err[256];

    if (c->backing) {
        make_backing(size);
    }
    snprintf(opts, sizeof(opts), "size=%lld%s%s%s%s", (long long)size, *c->copts ? "," : "",
             c->copts, c->backing ? ",backing_fmt=raw,backing_file=" : "",
             c->backing ? back : "");
    if (drv_test_create(c->fmt, img, opts, err, sizeof(err)) < 0) {
        fail_msg("create %s: %s", c->fmt, err);
    }
}

static void run_case(const Case *c)
{
    char err[256];
    BlockBackend *blk;
    int64_t m_written, m_flushed;
    Wlog log;
    int st;

    create(c);
    copy(img, base);
    close(open(logf, O_CREAT | O_TRUNC | O_WRONLY, 0644));
    blk = open_logged(c);
    write_all(c, blk);
    assert_int_equal(blklogwrites_mark(blk_bs(blk), "written"), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(blklogwrites_mark(blk_bs(blk), "flushed"), 0);
    blk_unref(blk);

    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), 0);
    m_written = wlog_find_mark(&log, "written");
    m_flushed = wlog_find_mark(&log, "flushed");
    assert_true(m_written >= 0 && m_flushed > m_written);
    if (flushes_between(&log, -1, m_written) > c->max_write_flushes) {
        fail_msg("%s: %d allocating writes issued %d flushes (at most %d expected)", c->fmt,
                 c->n, flushes_between(&log, -1, m_written), c->max_write_flushes);
    }
    if (flushes_between(&log, m_written, m_flushed) > 2) {
        fail_msg("%s: the guest flush issued %d flushes (at most 2 expected)", c->fmt,
                 flushes_between(&log, m_written, m_flushed));
    }
    /* Every entry is on disk at the guest flush. */
    replay(&log, (uint64_t)m_flushed + 1);
    check_image(c, work, true);
    check_guest(c, work, true);
    if (have_qemu) {
        snprintf(cmd, sizeof(cmd), "qemu-img compare -q -f %s -F %s '%s' '%s'", c->fmt, c->fmt,
                 work, img);
        st = system(cmd);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (!strcmp(c->fmt, "qcow")) {
        load_qcow_regions(img);
    }
    if (!strcmp(c->fmt, "qed")) {
        load_qed_regions(img);
    }
    check_metadata_only_cuts(c, &log);
    wlog_close(&log);
}

/*
 * Pending entries are written by a reopen read-only: the file (copied while
 * the image stays open) holds them.
 */
static void reopen_ro_case(const Case *c)
{
    BlockBackend *blk;
    Error *e = NULL;

    create(c);
    blk = drv_test_open_image(c->fmt, img, BDRV_O_RDWR);
    write_all(c, blk);
    if (bdrv_reopen_set_read_only(blk_bs(blk), true, &e) < 0) {
        fail_msg("reopen read-only: %s", error_get_pretty(e));
    }
    copy(img, work);
    check_image(c, work, true);
    check_guest(c, work, true);
    blk_unref(blk);
}

/*
 * The table sector at sector `sector` of the file fails to write once: the
 * guest flush fails with the error, the data stays readable, the next flush
 * succeeds, and the closed image holds everything.
 */
static void commit_error_case(const Case *c, int sector)
{
    char opts[8192];
    BlockBackend *blk;

    create(c);
    snprintf(opts, sizeof(opts), "driver=%s,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s,file.inject-error.0.event=none,"
             "file.inject-error.0.iotype=write,file.inject-error.0.sector=%d,"
             "file.inject-error.0.once=on,file.inject-error.0.errno=28", c->fmt, img, sector);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    write_all(c, blk);
    assert_int_equal(blk_flush(blk), -ENOSPC);
    blk_unref(blk);         /* close writes them: the image is complete */
    check_image(c, img, true);
    check_guest(c, img, true);

    /* Again, with a second flush instead of the close. */
    create(c);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    write_all(c, blk);
    assert_int_equal(blk_flush(blk), -ENOSPC);
    check_guest_blk(c, blk, "the open image", true);
    assert_int_equal(blk_flush(blk), 0);
    copy(img, work);
    check_image(c, work, false); /* still open: qed keeps its need-check mark */
    check_guest(c, work, true);
    blk_unref(blk);
}

static void test_fmt_pending_qed_commit_error(void **state)
{
    Case c = { "qed", "", false, 65536, 6, 1 };

    commit_error_case(&c, 65536 / SS); /* the L1 table's first sector */
}

static void test_fmt_pending_vdi_commit_error(void **state)
{
    Case c = { "vdi", "", false, 1 << 20, 3, 0 };

    commit_error_case(&c, 1); /* the block map's first sector */
}

/* A whole-block discard (vdi) or zero write (qed) of a block whose entry is pending. */
static void drop_pending_case(const Case *c, int victim)
{
    uint8_t *buf = malloc((size_t)c->stride);
    char opts[8192];
    BlockBackend *blk;

    create(c);
    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s,discard=unmap",
             c->fmt, img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
    write_all(c, blk);
    if (!strcmp(c->fmt, "vdi")) {
        assert_int_equal(blk_pdiscard(blk, victim * c->stride, c->stride), 0);
    } else {
        assert_int_equal(blk_pwrite_zeroes(blk, victim * c->stride, c->stride, 0), 0);
    }
    assert_int_equal(blk_flush(blk), 0);
    copy(img, work);
    blk_unref(blk);
    blk = drv_test_open_image(c->fmt, work, 0);
    assert_int_equal(blk_pread(blk, victim * c->stride, c->stride, buf, 0), 0);
    for (int64_t i = 0; i < c->stride; i++) {
        if (buf[i]) {
            fail_msg("%s: byte %lld of the dropped block is %u", c->fmt, (long long)i, buf[i]);
        }
    }
    blk_unref(blk);
    check_image(c, work, false);
    check_image(c, img, true);
    free(buf);
}

static void test_fmt_pending_vdi_discard(void **state)
{
    Case c = { "vdi", "", false, 1 << 20, 4, 0 };

    drop_pending_case(&c, 1);
}

static void test_fmt_pending_qed_zeroes(void **state)
{
    Case c = { "qed", "", false, 65536, 4, 0 };

    drop_pending_case(&c, 2);
}

static void test_fmt_pending_qed_flushes(void **state)
{
    /*
     * 4 KiB clusters, one allocation every 512 (2 MiB): each dirties its own
     * 4 KiB unit of an L2 table (QED_UNIT), so 70 fill the pending set
     * (FMT_DEFER_MAX, 64) once.
     */
    Case c = { "qed", "cluster_size=4096", false, 512 * 4096, 70, 2 };

    run_case(&c);
}

static void test_fmt_pending_qed_stream(void **state)
{
    /*
     * A sequential stream of 4000 new 4 KiB clusters dirties 8 units of L2
     * tables (512 entries each): no commit before the guest flush, so the
     * writes issue one flush only (the need-check mark). 512-byte units
     * filled the set after 62 sectors (3968 clusters) and flushed
     * mid-stream. (Not many more: from about 4100 clusters in the file
     * qemu-img 7.2's check reports one leaked cluster on any such image,
     * qemu-io's own too.)
     */
    Case c = { "qed", "cluster_size=4096", false, 4096, 4000, 1 };

    run_case(&c);
}

static void test_fmt_pending_qed_backing(void **state)
{
    Case c = { "qed", "", true, 65536, 40, 1 };

    run_case(&c);
}

static void test_fmt_pending_qed_reopen_ro(void **state)
{
    Case c = { "qed", "", true, 65536, 8, 1 };

    reopen_ro_case(&c);
}

static void test_fmt_pending_vdi_flushes(void **state)
{
    Case c = { "vdi", "", false, 1 << 20, 24, 0 };

    run_case(&c);
}

static void test_fmt_pending_vdi_reopen_ro(void **state)
{
    Case c = { "vdi", "", false, 1 << 20, 4, 0 };

    reopen_ro_case(&c);
}

static void test_fmt_pending_qcow_flushes(void **state)
{
    /*
     * Over a backing file: 512-byte clusters, 32 KiB L2 tables (8 units of
     * 4 KiB, 256 KiB of guest data each). One allocation every 256 KiB
     * dirties a unit of its own, 9 tables in all, so 70 fill the pending set
     * (FMT_DEFER_MAX, 64) once.
     */
    Case c = { "qcow", "", true, 256 * 1024, 70, 1 };

    run_case(&c);
}

static void test_fmt_pending_qcow_tables(void **state)
{
    /*
     * 4 KiB clusters, one allocation every 2 MiB: each makes a new L2 table.
     * A table with pending entries stays in the cache, which holds as many
     * tables (64) as the pending set holds units: 40 cost no commit.
     */
    Case c = { "qcow", "", false, 512 * 4096, 40, 0 };

    run_case(&c);
}

static void test_fmt_pending_qcow_stream(void **state)
{
    /* 4000 sequential allocating writes, 8 L2 tables: no flush before the guest's. */
    Case c = { "qcow", "", false, 4096, 4000, 0 };

    run_case(&c);
}

static void test_fmt_pending_qcow_backing(void **state)
{
    Case c = { "qcow", "", true, 65536, 40, 1 };

    run_case(&c);
}

static void test_fmt_pending_qcow_reopen_ro(void **state)
{
    Case c = { "qcow", "", true, 65536, 8, 0 };

    reopen_ro_case(&c);
}

static void test_fmt_pending_qcow_commit_error(void **state)
{
    Case c = { "qcow", "", false, 65536, 6, 1 };

    commit_error_case(&c, 0); /* the L1 table starts in the header's sector */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fmt_pending_qed_flushes),
        cmocka_unit_test(test_fmt_pending_qed_stream),
        cmocka_unit_test(test_fmt_pending_qed_backing),
        cmocka_unit_test(test_fmt_pending_qed_reopen_ro),
        cmocka_unit_test(test_fmt_pending_vdi_flushes),
        cmocka_unit_test(test_fmt_pending_vdi_reopen_ro),
        cmocka_unit_test(test_fmt_pending_qed_commit_error),
        cmocka_unit_test(test_fmt_pending_vdi_commit_error),
        cmocka_unit_test(test_fmt_pending_vdi_discard),
        cmocka_unit_test(test_fmt_pending_qed_zeroes),
        cmocka_unit_test(test_fmt_pending_qcow_flushes),
        cmocka_unit_test(test_fmt_pending_qcow_tables),
        cmocka_unit_test(test_fmt_pending_qcow_stream),
        cmocka_unit_test(test_fmt_pending_qcow_backing),
        cmocka_unit_test(test_fmt_pending_qcow_reopen_ro),
        cmocka_unit_test(test_fmt_pending_qcow_commit_error),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
