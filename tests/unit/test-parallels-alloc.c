/*
 * Unit tests: parallels allocation with deferred BAT updates
 * (drivers/format/parallels/io.c, drivers/format/fmt-defer.c).
 * The image's file is logged by blklogwrites, so the tests count the
 * flushes the driver issues: N allocating writes without a guest flush cost
 * O(1) flushes; a guest flush writes every new entry after a flush of the
 * data; the dirty set is bounded (random allocations over a large BAT
 * commit when it fills); discards, resizes and a reopen read-only commit
 * first; new clusters' data is written outside alloc_lock (a write held
 * there holds up at most writers of its cluster and discards). Every image
 * ends up read back through coblk and, when Debian's
 * qemu-img is installed, passes `qemu-img check` and matches the expected
 * bytes with `qemu-img compare`.
 */
#include "drv-test-util.h"

#include <sys/wait.h>

#include <coblk/image.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/parallels/parallels.h"
#include "drivers/protocol/blklogwrites.h"
#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

#define KiB 1024
#define MiB (1024 * 1024)

static char img[4096], logf[4096], raw[4096];
static bool have_qemu;

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "prl-alloc");
    drv_test_path(logf, sizeof(logf), "prl-alloc-log");
    drv_test_path(raw, sizeof(raw), "prl-alloc-raw");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(logf);
    unlink(raw);
    return 0;
}

/* Creates the image and opens it over blklogwrites (a fresh log). */
static BlockBackend *open_logged(const char *create_opts, int flags)
{
    char opts[16384];

    assert_int_equal(drv_test_create("parallels", img, create_opts, NULL, 0), 0);
    drv_test_make_file(logf, 0, 0);
    snprintf(opts, sizeof(opts),
             "driver=parallels,file.driver=blklogwrites,file.file.driver=file,"
             "file.file.filename=%s,file.log.driver=file,file.log.filename=%s,discard=unmap", img,
             logf);
    return drv_test_open_ok(opts, flags);
}

static BlockBackend *open_plain(int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=parallels,file.driver=file,file.filename=%s,"
             "discard=unmap", img);
    return drv_test_open_ok(opts, flags);
}

static void mark(BlockBackend *blk, const char *name)
{
    assert_int_equal(blklogwrites_mark(blk_bs(blk)->file->bs, name), 0);
}

/* Log entries with any of flags between two marks (NULL: the start / the end). */
static uint64_t entries_between(const char *from, const char *to, uint64_t flags)
{
    char err[256];
    int64_t a = 0, b;
    uint64_t n = 0;
    Wlog log;

    assert_int_equal(wlog_open(&log, logf, err, sizeof(err)), 0);
    b = (int64_t)log.nr_entries;
    if (from) {
        a = wlog_find_mark(&log, from);
        assert_true(a >= 0);
    }
    if (to) {
        b = wlog_find_mark(&log, to);
        assert_true(b >= a);
    }
    for (int64_t i = a; i < b; i++) {
        n += (log.e[i].flags & flags) != 0;
    }
    wlog_close(&log);
    return n;
}

/* Flushes in the log between two marks (NULL: the start / the end). */
static uint64_t flushes_between(const char *from, const char *to)
{
    return entries_between(from, to, LOGW_FLUSH);
}

static uint32_t file_le32(int64_t off)
{
    uint8_t b[4];

    drv_test_pread(img, off, b, sizeof(b));
    return ld_le32(b);
}

/* BAT entries of the file that differ from the node's in-memory BAT. */
static uint32_t bat_differences(BlockBackend *blk)
{
    BDRVParallelsState *s = blk_bs(blk)->opaque;
    uint32_t n = 0;

    for (uint32_t i = 0; i < s->bat_entries; i++) {
        n += file_le32(64 + 4 * (int64_t)i) != prl_entry(s, i);
    }
    return n;
}

/* Reopened read-only: coblk reads want, check is clean; so are qemu-img check and compare. */
static void assert_image(const uint8_t *want, int64_t len)
{
    uint8_t *buf = malloc((size_t)len);
    BdrvCheckResult res = { 0 };
    BlockBackend *blk = open_plain(0);
    int fd;

    assert_non_null(buf);
    assert_int_equal(blk_pread(blk, 0, len, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)len);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    blk_unref(blk);
    free(buf);
    if (!have_qemu) {
        return;
    }
    fd = open(raw, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, want, (size_t)len), len);
    close(fd);
    assert_int_equal(drv_test_sh("qemu-img check -q -f parallels '%s'", img), 0);
    assert_int_equal(drv_test_sh("qemu-img compare -q -f raw -F parallels '%s' '%s'", raw, img), 0);
}

/* ---------------------------------------------------------------------- */

/*
 * 64 sequential allocating writes: no flush before the guest flush (one FUA
 * write marks the image in use) instead of one per write; the guest flush adds
 * two (the data, then the BAT after its write); the BAT on disk is empty
 * until then and complete after it.
 */
static void test_parallels_alloc_o1_flushes(void **state)
{
    enum { N = 64, LEN = 64 * KiB };
    uint8_t *want = malloc((size_t)N * LEN);
    BlockBackend *blk = open_logged("size=4M,cluster_size=64k", BDRV_O_RDWR);

    drv_test_pattern(want, (size_t)N * LEN, 3);
    mark(blk, "start");
    for (int i = 0; i < N; i++) {
        assert_int_equal(blk_pwrite(blk, (int64_t)i * LEN, LEN, want + (size_t)i * LEN, 0), 0);
    }
    mark(blk, "written");
    assert_int_equal(bat_differences(blk), N); /* nothing on disk yet */
    assert_int_equal(file_le32(64), 0);
    assert_int_equal(blk_flush(blk), 0);
    mark(blk, "flushed");
    assert_int_equal(bat_differences(blk), 0);
    blk_unref(blk);

    assert_int_equal(flushes_between("start", "written"), 0);
    assert_int_equal(entries_between("start", "written", LOGW_FUA), 1);
    assert_int_equal(flushes_between("written", "flushed"), 2);
    assert_image(want, (int64_t)N * LEN);
    free(want);
}

/*
 * Random allocations over a BAT of 129 sectors: the dirty set fills
 * (FMT_DEFER_MAX sectors) and commits on its own, so the pending sectors stay
 * bounded, each commit after a data flush; still far fewer flushes than writes.
 */
static void test_parallels_alloc_bounded(void **state)
{
    enum { CL = 4 * KiB, NCL = 16384, N = 600 };
    const int64_t size = (int64_t)CL * NCL;
    uint8_t *want = calloc(1, (size_t)size), buf[CL];
    BlockBackend *blk = open_logged("size=64M,cluster_size=4k", BDRV_O_RDWR);
    BDRVParallelsState *s = blk_bs(blk)->opaque;
    uint64_t seed = 7, commits0 = s->bat_dirty.commits;

    assert_non_null(want);
    mark(blk, "start");
    for (int i = 0; i < N; i++) {
        int64_t c;

        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        c = (int64_t)((seed >> 33) % NCL);
        drv_test_pattern(buf, CL, (uint8_t)i);
        assert_int_equal(blk_pwrite(blk, c * CL, CL, buf, 0), 0);
        memcpy(want + c * CL, buf, CL);
        assert_true(s->bat_dirty.n <= FMT_DEFER_MAX);
    }
    mark(blk, "written");
    assert_true(s->bat_dirty.commits > commits0); /* the set filled and committed */
    assert_true(bat_differences(blk) > 0);        /* the rest waits for the flush */
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(bat_differences(blk), 0);
    blk_unref(blk);

    /*
     * Marking in use, then one flush per commit: a commit runs only when a
     * write needs a sector that does not fit, so FMT_DEFER_MAX allocations
     * at least separate two of them.
     */
    assert_true(flushes_between("start", "written") <= 2 + N / FMT_DEFER_MAX);
    assert_true(flushes_between("start", "written") >= 2);
    assert_image(want, size);
    free(want);
}

typedef struct Req {
    IOVector qiov;
    int ret;
    int *pending;
} Req;

static void req_done(void *opaque, int ret)
{
    Req *r = opaque;

    r->ret = ret;
    (*r->pending)--;
}

/*
 * Concurrent allocating writes (neighbours share clusters), then a discard
 * of some of the new clusters before any guest flush (it commits the dirty
 * sectors first, then unmaps), more writes, a resize, and a reopen
 * read-only, which commits what is left: the image is valid at each step.
 */
static void test_parallels_alloc_discard_resize_reopen(void **state)
{
    enum { N = 48, LEN = 6 * KiB };
    const int64_t size = 2 * MiB;
    uint8_t *want = calloc(1, (size_t)size);
    BlockBackend *blk;
    Req reqs[N];
    int pending = N;

    /* Over the file directly: blklogwrites does not reopen. */
    assert_int_equal(drv_test_create("parallels", img, "size=1M,cluster_size=4k", NULL, 0), 0);
    blk = open_plain(BDRV_O_RDWR | BDRV_O_UNMAP);

    drv_test_pattern(want, (size_t)N * LEN, 11);
    for (int i = 0; i < N; i++) {
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + (size_t)i * LEN, LEN);
        blk_aio_pwritev(blk, (int64_t)i * LEN, &reqs[i].qiov, 0, req_done, &reqs[i]);
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    assert_true(bat_differences(blk) > 0);
    /* Clusters 8..15 go; the others reach the file first. */
    assert_int_equal(blk_pdiscard(blk, 32 * KiB, 32 * KiB), 0);
    memset(want + 32 * KiB, 0, 32 * KiB);
    assert_int_equal(bat_differences(blk), 0);

    memset(want + 100 * KiB, 0x77, 8 * KiB);
    assert_int_equal(blk_pwrite(blk, 100 * KiB, 8 * KiB, want + 100 * KiB, 0), 0);
    assert_int_equal(blk_truncate(blk, size, false, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(bat_differences(blk), 0);
    memset(want + size - 12 * KiB, 0x78, 12 * KiB);
    assert_int_equal(blk_pwrite(blk, size - 12 * KiB, 12 * KiB, want + size - 12 * KiB, 0), 0);
    assert_true(bat_differences(blk) > 0);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    assert_int_equal(bat_differences(blk), 0);
    assert_int_equal(file_le32(44), PRL_INUSE_CLOSED);
    blk_unref(blk);
    assert_image(want, size);
    free(want);
}

/* Starts a write of len bytes of want at off; the caller polls for it. */
static void start_write(BlockBackend *blk, Req *r, int *pending, uint8_t *want, int64_t off,
                        int64_t len)
{
    *r = (Req){ .pending = pending };
    (*pending)++;
    iovector_init_buf(&r->qiov, want + off, (size_t)len);
    blk_aio_pwritev(blk, off, &r->qiov, 0, req_done, r);
}

/* Starts a write and polls until it is held at breakpoint tag (write_aio). */
static void start_held(BlockBackend *blk, Req *r, int *pending, uint8_t *want, int64_t off,
                       int64_t len, const char *tag)
{
    assert_int_equal(bdrv_debug_breakpoint(blk_bs(blk), "write_aio", tag), 0);
    start_write(blk, r, pending, want, off, len);
    while (*pending && !bdrv_debug_is_suspended(blk_bs(blk), tag)) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_true(bdrv_debug_is_suspended(blk_bs(blk), tag));
}

/*
 * The data of an allocating write goes out without alloc_lock. Held inside
 * its data write by a blkdebug breakpoint:
 *  - a partial write into a new cluster at the end of the data area (which
 *    reads zeroes already: linked before its data) holds up nothing: an
 *    allocation elsewhere, a write of other bytes of the same cluster, a
 *    read and a flush complete;
 *  - a partial write into a reused (discarded) cluster, whose zero fill is
 *    written first (linked after its data), holds up a write of other bytes
 *    of the same cluster (it would take a second cluster); an allocation
 *    elsewhere, a read of the cluster (zeroes) and a flush complete.
 * (Discards are not tried while a write is held: the block layer makes them
 * wait for every write in flight.)
 * Then everything reads back, check is clean, qemu-img check and compare agree.
 */
static void test_parallels_alloc_unlocked(void **state)
{
    enum { CL = 64 * KiB, A = CL + 4 * KiB, B = CL + 32 * KiB, R = 48 * KiB };
    const int64_t size = 4 * MiB;
    uint8_t *want = calloc(1, (size_t)size), *buf = malloc((size_t)size);
    int held = 0, other = 0, pending = 0;
    Req ra, rb, r2, rr, rf = { .pending = &pending };
    BdrvCheckResult res = { 0 };
    BlockBackend *blk;
    char opts[8192];

    assert_int_equal(drv_test_create("parallels", img, "size=4M,cluster_size=64k", NULL, 0), 0);
    snprintf(opts, sizeof(opts), "driver=parallels,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s,discard=unmap", img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, size, 5);
    memset(want + 8 * CL, 0, size - 8 * CL);
    assert_int_equal(blk_pwrite(blk, 6 * CL, 2 * CL, want + 6 * CL, 0), 0); /* hosts 0, 1 */
    memset(want, 0, 6 * CL);

    /* A new cluster at the end: nothing waits for it. */
    start_held(blk, &ra, &held, want, A, 4 * KiB, "a");
    start_write(blk, &r2, &pending, want, 3 * CL, CL);
    start_write(blk, &rb, &pending, want, B, 4 * KiB);
    rr = (Req){ .pending = &pending };
    pending += 2;
    iovector_init_buf(&rr.qiov, buf, 4 * KiB);
    blk_aio_preadv(blk, CL + R, &rr.qiov, 0, req_done, &rr);
    blk_aio_flush(blk, req_done, &rf);
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(r2.ret + rb.ret + rr.ret + rf.ret, 0);
    assert_memory_equal(buf, want + CL + R, 4 * KiB);
    assert_int_equal(held, 1);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "a"), 0);
    while (held) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(ra.ret, 0);
    assert_int_equal(blk_pdiscard(blk, 6 * CL, CL), 0); /* host 0 goes to the free list */
    memset(want + 6 * CL, 0, CL);

    /* Guest cluster 9 gets the discarded host 0 back: others of it wait. */
    start_held(blk, &ra, &held, want, 9 * CL + 4 * KiB, 4 * KiB, "b");
    start_write(blk, &r2, &pending, want, 12 * CL, 8 * KiB);
    rr = (Req){ .pending = &pending };
    pending += 2;
    iovector_init_buf(&rr.qiov, buf, 4 * KiB);
    blk_aio_preadv(blk, 9 * CL + R, &rr.qiov, 0, req_done, &rr);
    blk_aio_flush(blk, req_done, &rf);
    start_write(blk, &rb, &other, want, 9 * CL + 32 * KiB, 4 * KiB);
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(r2.ret + rr.ret + rf.ret, 0);
    assert_memory_equal(buf, want + 9 * CL + R, 4 * KiB);
    for (int i = 0; i < 50; i++) {
        aio_poll(blk_get_aio_context(blk), false);
    }
    assert_int_equal(held + other, 2);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "b"), 0);
    while (held || other) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    assert_int_equal(ra.ret + rb.ret, 0);

    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    assert_memory_equal(buf, want, (size_t)size);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    blk_unref(blk);
    assert_image(want, size);
    free(want);
    free(buf);
}

/* Closing without a guest flush commits too. */
static void test_parallels_alloc_close_commits(void **state)
{
    uint8_t want[3 * 64 * KiB];
    BlockBackend *blk = open_logged("size=1M,cluster_size=64k", BDRV_O_RDWR);

    memset(want, 0, sizeof(want));
    drv_test_pattern(want + 64 * KiB, 2 * 64 * KiB, 21);
    assert_int_equal(blk_pwrite(blk, 64 * KiB, 2 * 64 * KiB, want + 64 * KiB, 0), 0);
    mark(blk, "written");
    blk_unref(blk);
    /* The close: data flush, BAT, flush, header "closed", flush. */
    assert_int_equal(flushes_between("written", NULL), 3);
    assert_int_equal(file_le32(44), PRL_INUSE_CLOSED);
    assert_image(want, sizeof(want));
}

/* ---------------------------------------------------------------------- */
/* Reuse of discarded clusters (discard.c: the free list) */

static int64_t img_size(void)
{
    struct stat st;

    assert_int_equal(stat(img, &st), 0);
    return st.st_size;
}

/* Guest cluster i's host cluster index (from the data offset), 0-based; -1 if unallocated. */
static int64_t host_cl(BlockBackend *blk, uint32_t i)
{
    BDRVParallelsState *s = blk_bs(blk)->opaque;

    if (prl_entry(s, i) == 0) {
        return -1;
    }
    return (int64_t)((prl_host(s, prl_entry(s, i)) - s->data_off) / s->cluster_size);
}

/*
 * Clusters a discard frees in the middle are reused by the next allocations
 * (the file does not grow), in the same open and, rebuilt from the BAT,
 * after a reopen; freeing the last clusters cuts the file, and free
 * clusters past the new end are forgotten. Every step leaves an image that
 * coblk and qemu-img check accept and that reads back as the guest wrote it.
 */
static void test_parallels_reuse_discarded(void **state)
{
    enum { CL = 64 * KiB, NCL = 16 };
    uint8_t *want = malloc((size_t)NCL * CL);
    BlockBackend *blk;
    int64_t full, data_off;

    assert_int_equal(drv_test_create("parallels", img, "size=1M,cluster_size=64k", NULL, 0), 0);
    blk = open_plain(BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, (size_t)NCL * CL, 31);
    assert_int_equal(blk_pwrite(blk, 0, NCL * CL, want, 0), 0);
    data_off = (int64_t)((BDRVParallelsState *)blk_bs(blk)->opaque)->data_off;
    full = img_size();
    assert_int_equal(full, data_off + NCL * CL);

    /* Guest clusters 3..5 go (host clusters 3..5, in the middle); 3 and 4 come back. */
    assert_int_equal(blk_pdiscard(blk, 3 * CL, 3 * CL), 0);
    memset(want + 3 * CL, 0, 3 * CL);
    assert_int_equal(img_size(), full);
    drv_test_pattern(want + 3 * CL, 2 * CL, 32);
    assert_int_equal(blk_pwrite(blk, 3 * CL, 2 * CL, want + 3 * CL, 0), 0);
    assert_int_equal(img_size(), full); /* reused, not appended */
    assert_true(host_cl(blk, 3) >= 3 && host_cl(blk, 3) <= 5);
    assert_true(host_cl(blk, 4) >= 3 && host_cl(blk, 4) <= 5);
    blk_unref(blk);
    assert_image(want, NCL * CL);

    /* After a reopen: the cluster still free (rebuilt from the BAT) and one freed now. */
    blk = open_plain(BDRV_O_RDWR | BDRV_O_UNMAP);
    assert_int_equal(blk_pdiscard(blk, 8 * CL, CL), 0);
    drv_test_pattern(want + 5 * CL, CL, 33);
    drv_test_pattern(want + 8 * CL, CL, 34);
    assert_int_equal(blk_pwrite(blk, 5 * CL, CL, want + 5 * CL, 0), 0);
    assert_int_equal(blk_pwrite(blk, 8 * CL, CL, want + 8 * CL, 0), 0);
    assert_int_equal(img_size(), full);
    blk_unref(blk);
    assert_image(want, NCL * CL);

    /* The last clusters: 13 (middle, free), then 14 and 15 cut the file back to 13. */
    blk = open_plain(BDRV_O_RDWR | BDRV_O_UNMAP);
    assert_int_equal(host_cl(blk, 13), 13);
    assert_int_equal(blk_pdiscard(blk, 13 * CL, CL), 0);
    assert_int_equal(img_size(), full);
    assert_int_equal(blk_pdiscard(blk, 14 * CL, 2 * CL), 0);
    memset(want + 13 * CL, 0, 3 * CL);
    assert_int_equal(img_size(), full - 3 * CL);
    /* A new cluster appends (host 13): the forgotten free ones are gone with the tail. */
    drv_test_pattern(want + 15 * CL, CL, 35);
    assert_int_equal(blk_pwrite(blk, 15 * CL, CL, want + 15 * CL, 0), 0);
    assert_int_equal(host_cl(blk, 15), 13);
    assert_true(img_size() > full - 2 * CL); /* grown ahead (prealloc-size) while open */
    blk_unref(blk);
    assert_int_equal(img_size(), full - 2 * CL); /* trimmed at close */
    assert_image(want, NCL * CL);
    free(want);
}

/* ---------------------------------------------------------------------- */
/* Growing the file ahead of new clusters (prealloc-mode, prealloc-size) */

static BlockBackend *open_prealloc(const char *extra, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=parallels,file.driver=file,file.filename=%s%s", img,
             extra);
    return drv_test_open_ok(opts, flags);
}

/*
 * prealloc-size grows the file that far past a new cluster (in clusters, at
 * most to the last cluster the BAT maps), once per step: the next clusters
 * land inside it. prealloc-mode=truncate grows it sparse, falloc allocates
 * it; the close trims it to the last cluster. Bad values are refused.
 */
static void test_parallels_alloc_prealloc_opts(void **state)
{
    enum { CL = 64 * KiB, DOFF = CL }; /* 16 MiB image: BAT of 256 entries, data at 1 cluster */
    uint8_t *want = calloc(1, 16 * MiB);
    Error *err = NULL;
    BlockOpts *o = bopts_new();
    BlockBackend *blk;
    struct stat st;

    assert_int_equal(drv_test_create("parallels", img, "size=16M,cluster_size=64k", NULL, 0), 0);
    blk = open_prealloc(",prealloc-mode=truncate,prealloc-size=1M", BDRV_O_RDWR);
    drv_test_pattern(want, 3 * CL, 41);
    assert_int_equal(blk_pwrite(blk, 0, CL, want, 0), 0);
    assert_int_equal(img_size(), DOFF + CL + MiB);
    assert_int_equal(stat(img, &st), 0);
    assert_true(st.st_blocks * 512 < DOFF + CL + MiB / 2); /* sparse */
    assert_int_equal(blk_pwrite(blk, CL, 2 * CL, want + CL, 0), 0);
    assert_int_equal(img_size(), DOFF + CL + MiB); /* inside the step: no grow */
    drv_test_pattern(want + 15 * MiB, 64 * KiB, 42);
    assert_int_equal(blk_pwrite(blk, 15 * MiB, 64 * KiB, want + 15 * MiB, 0), 0);
    assert_int_equal(img_size(), DOFF + CL + MiB);
    for (int i = 0; i < 16; i++) { /* 16 more clusters: the 14th passes the end, one grow */
        assert_int_equal(blk_pwrite(blk, MiB + i * CL, CL, want + MiB + i * CL, 0), 0);
    }
    assert_int_equal(img_size(), DOFF + 18 * CL + MiB);
    blk_unref(blk);
    assert_int_equal(img_size(), DOFF + 20 * CL);
    assert_image(want, 16 * MiB);

    /* falloc (the default): the grown part is allocated; the default step is capped. */
    blk = open_prealloc(",prealloc-size=2M", BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 2 * MiB, CL, want + 2 * MiB, 0), 0);
    assert_int_equal(img_size(), DOFF + 21 * CL + 2 * MiB);
    assert_int_equal(stat(img, &st), 0);
    assert_true(st.st_blocks * 512 >= 21 * CL + 2 * MiB); /* the clusters and the grown part */
    blk_unref(blk);
    assert_int_equal(img_size(), DOFF + 21 * CL);
    blk = open_prealloc("", BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 4 * MiB, CL, want + 4 * MiB, 0), 0);
    assert_int_equal(img_size(), DOFF + 256 * CL); /* 128 MiB capped at the BAT's last */
    blk_unref(blk);
    assert_int_equal(img_size(), DOFF + 22 * CL);
    assert_image(want, 16 * MiB);

    assert_int_equal(bopts_parse_keyval(o, "driver=parallels,file.driver=file,"
                                        "prealloc-mode=full", NULL, NULL), 0);
    assert_int_equal(bopts_set(o, "file.filename", img), 0);
    assert_null(bdrv_open(NULL, o, BDRV_O_RDWR, &err));
    assert_non_null(strstr(error_get_pretty(err), "prealloc-mode"));
    error_free(err);
    free(want);
}

/*
 * A power cut while the file is grown ahead (before the trim at close):
 * the image is marked in use and ends past its last cluster. qemu-img check
 * reports exactly that (the in_use mark, and the tail as leaked space, no
 * other corruption) and `check -r all` repairs it; coblk's read-write open
 * repairs it too (the tail is cut), after which qemu-img check finds nothing
 * and the data reads back.
 */
static void test_parallels_alloc_crash_grown(void **state)
{
    enum { CL = 64 * KiB, DOFF = CL };
    uint8_t *want = calloc(1, 16 * MiB);
    char cut[4200], out[8192];
    BlockBackend *blk;
    FILE *f;
    size_t n;

    snprintf(cut, sizeof(cut), "%s.cut", img);
    assert_int_equal(drv_test_create("parallels", img, "size=16M,cluster_size=64k", NULL, 0), 0);
    blk = open_prealloc(",prealloc-size=4M", BDRV_O_RDWR);
    drv_test_pattern(want + 3 * CL + 512, 4096, 51);
    assert_int_equal(blk_pwrite(blk, 3 * CL + 512, 4096, want + 3 * CL + 512, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(drv_test_sh("cp --sparse=always '%s' '%s'", img, cut), 0);
    blk_unref(blk);
    assert_int_equal(img_size(), DOFF + CL);

    strcpy(img + strlen(img), ".cut"); /* the helpers below work on img */
    assert_int_equal(img_size(), DOFF + CL + 4 * MiB);
    if (have_qemu) {
        snprintf(out, sizeof(out), "qemu-img check -f parallels '%s' 2>&1", img);
        f = popen(out, "r");
        assert_non_null(f);
        n = fread(out, 1, sizeof(out) - 1, f);
        out[n] = '\0';
        assert_int_equal(WEXITSTATUS(pclose(f)), 2);
        assert_non_null(strstr(out, "not closed correctly"));
        assert_non_null(strstr(out, "leaked"));
        assert_non_null(strstr(out, "1 errors were found"));
        assert_int_equal(drv_test_sh("cp '%s' '%s.q'", img, img), 0);
        assert_int_equal(drv_test_sh("qemu-img check -q -r all -f parallels '%s.q' >/dev/null"
                                     " 2>&1", img), 0);
        assert_int_equal(drv_test_sh("qemu-img check -q -f parallels '%s.q'", img), 0);
        assert_int_equal(drv_test_sh("qemu-img compare -q -f parallels -F parallels '%s.q' '%s'",
                                     img, img), 0);
        assert_int_equal(drv_test_sh("rm -f '%s.q'", img), 0);
    }
    blk = open_prealloc("", BDRV_O_RDWR); /* repaired at open */
    assert_int_equal(img_size(), DOFF + CL);
    blk_unref(blk);
    assert_image(want, 16 * MiB);
    unlink(img);
    img[strlen(img) - 4] = '\0';
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parallels_alloc_o1_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_alloc_prealloc_opts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_alloc_crash_grown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_alloc_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_alloc_discard_resize_reopen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_parallels_alloc_close_commits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_alloc_unlocked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_reuse_discarded, setup, teardown),
    };

    have_qemu = drv_test_sh("command -v qemu-img >/dev/null") == 0;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
