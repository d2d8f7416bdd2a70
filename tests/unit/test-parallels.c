/*
 * Unit tests: the parallels format driver (drivers/format/parallels/):
 * create options, read/write/reopen, the in_use flag (set before the first
 * change, "closed" on a clean close, an unclean image read-only with a
 * warning or repaired by a read-write open), crash ordering (a failed flush
 * before the deferred BAT write leaves no BAT entry, a retried flush writes
 * it), concurrent allocating writes,
 * grow, a backing file given in the options, the old "WithoutFreeSpace"
 * layout, the empty-image flag, the Format Extension (kept while nothing
 * changes, dropped before the first change, unknown necessary features
 * read-only), check and repair (entries
 * outside the file, shared and misaligned clusters, leaks), and every
 * header / extension error path with a tiny image built here.
 * qemu-img interop is in tests/interop/parallels-qemu.sh.
 */
#include "drv-test-util.h"

#include <coblk/image.h>

#include "block/block-int.h"
#include "block/bytes.h"
#include "drivers/format/parallels/md5.h"

#define KiB 1024
#define MiB (1024 * 1024)
#define INUSE_OPEN 0x746f6e59u
#define INUSE_CLOSED 0x312e3276u

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "parallels");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

static int create(const char *optstr, char *errmsg, size_t errlen)
{
    return drv_test_create("parallels", img, optstr, errmsg, errlen);
}

static const char *opts_for(const char *extra)
{
    static char opts[8192];

    snprintf(opts, sizeof(opts), "driver=parallels,file.driver=file,file.filename=%s%s", img,
             extra);
    return opts;
}

static BlockBackend *open_prl(int flags)
{
    return drv_test_open_ok(opts_for(""), flags);
}

static int64_t file_size(void)
{
    struct stat st;

    assert_int_equal(stat(img, &st), 0);
    return st.st_size;
}

static void file_read(int64_t off, void *buf, size_t len)
{
    int fd = open(img, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static void file_write(int64_t off, const void *buf, size_t len)
{
    int fd = open(img, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static void file_read_path(const char *path, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, 0), (ssize_t)len);
    close(fd);
}

static uint32_t file_le32(int64_t off)
{
    uint8_t b[4];

    file_read(off, b, 4);
    return ld_le32(b);
}

static void file_put_le32(int64_t off, uint32_t v)
{
    uint8_t b[4];

    st_le32(b, v);
    file_write(off, b, 4);
}

static void quiet(void *opaque, const char *msg)
{
}

static BdrvCheckResult check(BlockBackend *blk, BdrvCheckMode fix)
{
    BdrvCheckResult res = { .report = quiet };

    assert_int_equal(bdrv_check(blk_bs(blk), &res, fix), 0);
    return res;
}

/*
 * A tiny image: "WithouFreSpacExt" (or the old magic), 512-byte clusters
 * (tracks 1), bat entries, nb_sectors = bat, data at sector data_off, the
 * BAT entries given (cluster units), data_clusters clusters of data.
 */
typedef struct Tiny {
    bool old;
    uint32_t version, tracks, bat, inuse, data_off, flags;
    uint64_t nb_sectors, ext_off;
    uint32_t entries[16];
    uint32_t data_clusters;
} Tiny;

static Tiny tiny_default(void)
{
    Tiny t = { .version = 2, .tracks = 1, .bat = 8, .inuse = INUSE_CLOSED, .data_off = 1,
               .nb_sectors = 8, .entries = { 1, 0, 3 }, .data_clusters = 3 };
    return t;
}

static void tiny_write(const Tiny *t)
{
    size_t len = (size_t)(t->data_off + t->data_clusters * t->tracks) * 512;
    uint8_t *buf;

    len = len < 512 ? 512 : len;
    buf = calloc(1, len);

    assert_non_null(buf);
    /* Data cluster k (from the data offset) is filled with 0xa0 + k; then the header. */
    for (uint32_t k = 0; k < t->data_clusters; k++) {
        memset(buf + (size_t)(t->data_off + k * t->tracks) * 512, 0xa0 + (int)k,
               (size_t)t->tracks * 512);
    }
    memcpy(buf, t->old ? "WithoutFreeSpace" : "WithouFreSpacExt", 16);
    st_le32(buf + 16, t->version);
    st_le32(buf + 20, 16);
    st_le32(buf + 24, 1);
    st_le32(buf + 28, t->tracks);
    st_le32(buf + 32, t->bat);
    st_le64(buf + 36, t->nb_sectors);
    st_le32(buf + 44, t->inuse);
    st_le32(buf + 48, t->data_off);
    st_le32(buf + 52, t->flags);
    st_le64(buf + 56, t->ext_off);
    for (uint32_t i = 0; i < t->bat && i < 16 && 64 + 4 * i + 4 <= 512; i++) {
        st_le32(buf + 64 + 4 * i, t->entries[i]);
    }
    drv_test_make_file(img, 0, 0);
    file_write(0, buf, len);
    free(buf);
}

/* ---------------------------------------------------------------------- */

static void test_parallels_create_and_rw(void **state)
{
    uint8_t *want = malloc(MiB), *buf = malloc(MiB), h[64];
    BlockDriverInfo bdi;
    BlockBackend *blk;

    assert_int_equal(create("size=5M,cluster_size=64k", NULL, 0), 0);
    assert_int_equal(file_size(), 64 * KiB); /* header + BAT, padded to a cluster */
    file_read(0, h, sizeof(h));
    assert_memory_equal(h, "WithouFreSpacExt", 16);
    assert_int_equal(ld_le32(h + 16), 2);
    assert_int_equal(ld_le32(h + 28), 128);              /* tracks */
    assert_int_equal(ld_le32(h + 32), 80);               /* BAT entries */
    assert_int_equal(ld_le64(h + 36), 5 * MiB / 512);    /* nb_sectors */
    assert_int_equal(ld_le32(h + 44), INUSE_CLOSED);
    assert_int_equal(ld_le32(h + 48), 128);              /* data_off, sectors */

    blk = open_prl(BDRV_O_RDWR);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "parallels");
    assert_int_equal(blk_getlength(blk), 5 * MiB);
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 64 * KiB);
    assert_false(bdi.is_dirty);
    assert_int_equal(file_le32(44), INUSE_CLOSED); /* no change yet: untouched */

    memset(want, 0, MiB);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    /* Across three clusters, unaligned; then into the middle of an allocated one. */
    drv_test_pattern(want + 60 * KiB, 70 * KiB, 3);
    assert_int_equal(blk_pwrite(blk, 60 * KiB, 70 * KiB, want + 60 * KiB, 0), 0);
    assert_int_equal(file_le32(44), INUSE_OPEN);
    drv_test_pattern(want + 100 * KiB, 512, 4);
    assert_int_equal(blk_pwrite(blk, 100 * KiB, 512, want + 100 * KiB, 0), 0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    /* Past the end: the BlockBackend refuses it first (-EIO, as QEMU's). */
    assert_int_equal(blk_pwrite(blk, 5 * MiB - 512, 1024, want, 0), -EIO);
    blk_unref(blk);

    assert_int_equal(file_le32(44), INUSE_CLOSED);
    assert_int_equal(file_size(), 64 * KiB + 3 * 64 * KiB);
    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    assert_int_equal(res.allocated_clusters, 3);
    assert_int_equal(res.total_clusters, 80);
    assert_int_equal(res.image_end_offset, 4 * 64 * KiB);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_parallels_create_options(void **state)
{
    char msg[1024];
    BlockBackend *blk;
    uint8_t buf[4096], zero[4096] = { 0 };

    assert_int_equal(create("size=1M,cluster_size=0", msg, sizeof(msg)), -EINVAL);
    assert_non_null(strstr(msg, "cluster_size 0"));
    assert_int_equal(create("size=1M,cluster_size=128M", msg, sizeof(msg)), -EINVAL);
    assert_non_null(strstr(msg, "cluster_size"));
    assert_int_equal(create("size=1M,bogus=1", msg, sizeof(msg)), -EINVAL);
    assert_non_null(strstr(msg, "bogus"));
    assert_int_equal(create("size=100T,cluster_size=512", msg, sizeof(msg)), -EINVAL);
    assert_non_null(strstr(msg, "clusters"));
    assert_int_equal(create("size=1M,preallocation=maybe", msg, sizeof(msg)), -EINVAL);

    /* preallocation=metadata: every cluster allocated in order, reading zero. */
    assert_int_equal(create("size=1000k,cluster_size=256k,preallocation=metadata", NULL, 0), 0);
    assert_int_equal(file_size(), 256 * KiB + 4 * 256 * KiB);
    for (uint32_t i = 0; i < 4; i++) {
        assert_int_equal(file_le32(64 + 4 * i), 1 + i);
    }
    blk = open_prl(0);
    assert_int_equal(blk_getlength(blk), 1000 * KiB);
    assert_int_equal(blk_pread(blk, 996 * KiB, 4096, buf, 0), 0);
    assert_memory_equal(buf, zero, sizeof(buf));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    assert_int_equal(res.allocated_clusters, 4);
    blk_unref(blk);
}

/* The in_use flag: an unclean image opens read-only with the flag reported, and a
 * read-write open repairs it. */
static void test_parallels_inuse(void **state)
{
    uint8_t buf[4096], want[4096];
    BlockDriverInfo bdi;
    BlockBackend *blk;

    assert_int_equal(create("size=1M,cluster_size=4k", NULL, 0), 0);
    blk = open_prl(BDRV_O_RDWR);
    drv_test_pattern(want, sizeof(want), 7);
    assert_int_equal(blk_pwrite(blk, 8192, 4096, want, 0), 0);
    blk_unref(blk);
    /* As after a crash: in_use "open" and a leaked cluster past the last used one. */
    file_put_le32(44, INUSE_OPEN);
    assert_int_equal(truncate(img, file_size() + 4096), 0);

    blk = open_prl(0);
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_true(bdi.is_dirty);
    assert_int_equal(blk_pread(blk, 8192, 4096, buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(res.leaks, 1);
    blk_unref(blk);
    assert_int_equal(file_le32(44), INUSE_OPEN); /* read-only: unchanged */

    blk = open_prl(BDRV_O_RDWR); /* repaired at open */
    assert_int_equal(bdrv_get_info(blk_bs(blk), &bdi), 0);
    assert_false(bdi.is_dirty);
    res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
    assert_int_equal(file_le32(44), INUSE_CLOSED);
    assert_int_equal(file_size(), 4096 + 4096); /* header/BAT cluster + one data cluster */

    /* Reopen read-only marks it closed; back to read-write marks it in use on a write. */
    blk = open_prl(BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 0, 4096, want, 0), 0);
    assert_int_equal(file_le32(44), INUSE_OPEN);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), true, NULL), 0);
    assert_int_equal(file_le32(44), INUSE_CLOSED);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(blk), false, NULL), 0);
    assert_int_equal(file_le32(44), INUSE_CLOSED);
    assert_int_equal(blk_pwrite(blk, 4096, 4096, want, 0), 0);
    assert_int_equal(file_le32(44), INUSE_OPEN);
    blk_unref(blk);
    assert_int_equal(file_le32(44), INUSE_CLOSED);
}

/* A flush that fails between the data and the BAT: the BAT never points at the data. */
/*
 * Every flush fails (as if the disk died; marking the image in use is a FUA
 * write, not a flush): the write succeeds (its BAT entry waits for a guest flush),
 * the guest flush fails at the data flush before the BAT write, and so
 * does the close: the BAT on disk never names the cluster, which is a leak.
 */
static void test_parallels_crash_ordering(void **state)
{
    static const char inj[] =
        "driver=parallels,file.driver=blkdebug,file.image.driver=file,"
        "file.image.filename=%s,file.inject-error.0.event=none,file.inject-error.0.iotype=flush,"
        "file.inject-error.0.errno=5";
    char opts[8192];
    uint8_t buf[4096], zero[4096] = { 0 }, data[4096];
    BlockBackend *blk;

    assert_int_equal(create("size=1M,cluster_size=4k", NULL, 0), 0);
    snprintf(opts, sizeof(opts), inj, img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    memset(data, 0x5a, sizeof(data));
    /* A FUA write marks the image in use; the BAT entry is written at the next guest flush. */
    assert_int_equal(blk_pwrite(blk, 0, 4096, data, 0), 0);
    assert_int_equal(file_le32(64), 0);
    assert_int_equal(blk_flush(blk), -EIO); /* data before BAT: the data flush fails */
    assert_int_equal(file_le32(64), 0);     /* BAT entry 0 was not written */
    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
    assert_memory_equal(buf, data, sizeof(buf)); /* the node still maps it */
    blk_unref(blk); /* the close fails the same way: in_use stays set */
    assert_int_equal(file_le32(64), 0);
    assert_int_equal(file_le32(44), INUSE_OPEN);

    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
    assert_memory_equal(buf, zero, sizeof(buf));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions, 1); /* in_use */
    /*
     * The written cluster, unreferenced, and the rest of the file grown ahead
     * of it (prealloc-size, up to the last cluster the BAT can map), which the
     * failed close did not trim: 256 clusters past the data offset.
     */
    assert_int_equal(file_size(), 4096 + 256 * 4096);
    assert_int_equal(res.leaks, 256);
    blk_unref(blk);

    blk = open_prl(BDRV_O_RDWR); /* repaired at open */
    res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    assert_int_equal(blk_pwrite(blk, 0, 4096, data, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), 0);
    assert_memory_equal(buf, data, sizeof(buf));
    blk_unref(blk);
    assert_int_equal(file_size(), 2 * 4096);
}

/* The same flush fails once: the BAT sector stays dirty and the next flush writes it. */
static void test_parallels_flush_retry(void **state)
{
    static const char inj[] =
        "driver=parallels,file.driver=blkdebug,file.image.driver=file,"
        "file.image.filename=%s,file.inject-error.0.event=none,file.inject-error.0.iotype=flush,"
        "file.inject-error.0.errno=5,file.inject-error.0.once=on";
    char opts[8192];
    uint8_t buf[4096], data[4096];
    BlockBackend *blk;

    assert_int_equal(create("size=1M,cluster_size=4k", NULL, 0), 0);
    snprintf(opts, sizeof(opts), inj, img);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    memset(data, 0x6b, sizeof(data));
    assert_int_equal(blk_pwrite(blk, 8192, 4096, data, 0), 0);
    assert_int_equal(blk_flush(blk), -EIO);
    assert_int_equal(file_le32(64 + 2 * 4), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(file_le32(64 + 2 * 4), 1); /* cluster 0 of the data area (unit 1) */
    assert_int_equal(blk_pread(blk, 8192, 4096, buf, 0), 0);
    assert_memory_equal(buf, data, sizeof(buf));
    blk_unref(blk);
    assert_int_equal(file_le32(44), INUSE_CLOSED);

    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 8192, 4096, buf, 0), 0);
    assert_memory_equal(buf, data, sizeof(buf));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
}

typedef struct ConcReq {
    IOVector qiov;
    int ret;
    int *pending;
} ConcReq;

static void conc_done(void *opaque, int ret)
{
    ConcReq *r = opaque;

    r->ret = ret;
    (*r->pending)--;
}

static void test_parallels_concurrent_alloc(void **state)
{
    enum { N = 32, LEN = 6 * KiB };
    uint8_t *want = malloc(N * LEN), *buf = malloc(N * LEN);
    ConcReq reqs[N];
    BlockBackend *blk;
    int pending = N;

    assert_int_equal(create("size=4M,cluster_size=4k", NULL, 0), 0);
    blk = open_prl(BDRV_O_RDWR);
    drv_test_pattern(want, N * LEN, 8);
    for (int i = 0; i < N; i++) {
        /* Neighbours share clusters: both may try to allocate one. */
        reqs[i].pending = &pending;
        iovector_init_buf(&reqs[i].qiov, want + (size_t)i * LEN, LEN);
        blk_aio_pwritev(blk, (int64_t)i * LEN, &reqs[i].qiov, 0, conc_done, &reqs[i]);
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(reqs[i].ret, 0);
    }
    assert_int_equal(blk_pread(blk, 0, N * LEN, buf, 0), 0);
    assert_memory_equal(buf, want, N * LEN);
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    assert_int_equal(res.allocated_clusters, N * LEN / 4096);
    blk_unref(blk);
    free(want);
    free(buf);
}

static void test_parallels_grow(void **state)
{
    uint8_t buf[4096], want[4096], zero[4096] = { 0 };
    Error *err = NULL;
    BlockBackend *blk;

    assert_int_equal(create("size=1M,cluster_size=64k", NULL, 0), 0);
    blk = open_prl(BDRV_O_RDWR);
    drv_test_pattern(want, sizeof(want), 2);
    assert_int_equal(blk_pwrite(blk, MiB - 4096, 4096, want, 0), 0);
    assert_int_equal(blk_truncate(blk, 3 * MiB, false, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), 3 * MiB);
    assert_int_equal(blk_pread(blk, 2 * MiB, 4096, buf, 0), 0);
    assert_memory_equal(buf, zero, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 3 * MiB - 4096, 4096, want, 0), 0);
    /* The BAT may grow into the first cluster only: (64k - 64) / 4 entries. */
    assert_true(blk_truncate(blk, 2 * 1024LL * MiB, false, PREALLOC_MODE_OFF, 0, &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "without moving data"));
    error_free(err);
    err = NULL;
    assert_int_equal(blk_truncate(blk, MiB, false, PREALLOC_MODE_OFF, 0, &err), -ENOTSUP);
    assert_non_null(strstr(error_get_pretty(err), "shrinking"));
    error_free(err);
    blk_unref(blk);

    assert_int_equal(file_le32(32), 48);
    blk = open_prl(0);
    assert_int_equal(blk_getlength(blk), 3 * MiB);
    assert_int_equal(blk_pread(blk, MiB - 4096, 4096, buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    assert_int_equal(blk_pread(blk, 3 * MiB - 4096, 4096, buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
}

/* The old layout: sector-unit entries, data_off 0 (right after the BAT), 31.5 KiB clusters. */
static void test_parallels_old_format(void **state)
{
    Tiny t = tiny_default();
    uint8_t buf[63 * 512], want[63 * 512], zero[63 * 512] = { 0 };
    BlockBackend *blk;

    t.old = true;
    t.tracks = 63;
    t.bat = 4;
    t.nb_sectors = 4 * 63 | (7ULL << 32); /* the high half is ignored */
    t.data_off = 0;
    t.entries[0] = 1 + 63;      /* data starts at sector 1: cluster 1 of the data area */
    t.entries[1] = 0;
    t.entries[2] = 1;           /* cluster 0 */
    t.data_clusters = 0;
    tiny_write(&t);
    memset(want, 0xa1, sizeof(want));
    file_write(512 + 63 * 512, want, sizeof(want));
    memset(want, 0xa0, sizeof(want));
    file_write(512, want, sizeof(want));

    blk = open_prl(0);
    assert_int_equal(blk_getlength(blk), 4 * 63 * 512);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    memset(want, 0xa1, sizeof(want));
    assert_memory_equal(buf, want, sizeof(buf));
    assert_int_equal(blk_pread(blk, 63 * 512, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, zero, sizeof(buf));
    assert_int_equal(blk_pread(blk, 2 * 63 * 512, sizeof(buf), buf, 0), 0);
    memset(want, 0xa0, sizeof(want));
    assert_memory_equal(buf, want, sizeof(buf));
    blk_unref(blk);

    /* Writes allocate sector-unit entries after the last cluster. */
    blk = open_prl(BDRV_O_RDWR);
    drv_test_pattern(want, sizeof(want), 9);
    assert_int_equal(blk_pwrite(blk, 63 * 512, sizeof(want), want, 0), 0);
    blk_unref(blk);
    assert_int_equal(file_le32(64 + 4), 1 + 2 * 63);
    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 63 * 512, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
}

static void test_parallels_empty_flag(void **state)
{
    Tiny t = tiny_default();
    uint8_t buf[512], zero[512] = { 0 };
    BlockBackend *blk;

    t.flags = 1;
    tiny_write(&t);
    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    assert_memory_equal(buf, zero, 512);
    blk_unref(blk);
    assert_int_equal(file_le32(64), 1); /* read-only: the file is unchanged */
    blk = open_prl(BDRV_O_RDWR);
    blk_unref(blk);
    assert_int_equal(file_le32(64), 0);
    assert_int_equal(file_le32(52), 0);
}

/* A backing file given in the options: unallocated clusters read it, partial writes
 * fill the rest of a new cluster from it, zero writes allocate. */
static void test_parallels_backing(void **state)
{
    char base[4096], opts[16384];
    uint8_t *want = malloc(256 * KiB), *buf = malloc(256 * KiB);
    BlockBackend *blk;

    drv_test_path(base, sizeof(base), "parallels-base");
    drv_test_make_file(base, 256 * KiB, 5);
    file_read_path(base, want, 256 * KiB);
    assert_int_equal(create("size=256k,cluster_size=64k", NULL, 0), 0);
    snprintf(opts, sizeof(opts), "%s,backing.driver=raw,backing.file.driver=file,"
             "backing.file.filename=%s", opts_for(""), base);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    assert_int_equal(blk_pread(blk, 0, 256 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 256 * KiB);
    drv_test_pattern(want + 70 * KiB, 3 * KiB, 6);
    assert_int_equal(blk_pwrite(blk, 70 * KiB, 3 * KiB, want + 70 * KiB, 0), 0);
    memset(want + 130 * KiB, 0, 4 * KiB);
    assert_int_equal(blk_pwrite_zeroes(blk, 130 * KiB, 4 * KiB, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 256 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 256 * KiB);
    blk_unref(blk);

    /* Without the backing file, only the two written clusters hold data. */
    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 64 * KiB, 64 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want + 64 * KiB, 64 * KiB);
    assert_int_equal(blk_pread(blk, 128 * KiB, 64 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want + 128 * KiB, 64 * KiB);
    memset(want, 0, 64 * KiB);
    assert_int_equal(blk_pread(blk, 0, 64 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 64 * KiB);
    blk_unref(blk);
    unlink(base);
    free(want);
    free(buf);
}

/* Whole clusters unmap (entry 0, read zero); the last ones are cut off the file. */
static void test_parallels_discard(void **state)
{
    uint8_t *want = malloc(512 * KiB), *buf = malloc(512 * KiB);
    BdrvCheckResult res = { 0 };
    int64_t len0;
    BlockBackend *blk;

    assert_int_equal(create("size=500k,cluster_size=64k", NULL, 0), 0);
    blk = open_prl(BDRV_O_RDWR | BDRV_O_UNMAP);
    drv_test_pattern(want, 500 * KiB, 9);
    assert_int_equal(blk_pwrite(blk, 0, 500 * KiB, want, 0), 0);
    len0 = file_size();
    /* Partial clusters keep their data. */
    assert_int_equal(blk_pdiscard(blk, 10 * KiB, 100 * KiB), 0);
    /* Clusters 2 and 3 (bytes 100k..270k cover [128k, 256k)). */
    assert_int_equal(blk_pdiscard(blk, 100 * KiB, 170 * KiB), 0);
    memset(want + 128 * KiB, 0, 128 * KiB);
    assert_int_equal(file_size(), len0);
    /* The last cluster (cut short by the size): the file ends one cluster earlier. */
    assert_int_equal(blk_pdiscard(blk, 448 * KiB, 52 * KiB), 0);
    memset(want + 448 * KiB, 0, 52 * KiB);
    assert_int_equal(file_size(), len0 - 64 * KiB);
    assert_int_equal(blk_pread(blk, 0, 500 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 500 * KiB);
    blk_unref(blk);

    blk = open_prl(BDRV_O_RDWR);
    assert_int_equal(bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE), 0);
    assert_int_equal(res.corruptions + res.leaks + res.check_errors, 0);
    assert_int_equal(blk_pread(blk, 0, 500 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 500 * KiB);
    /* A new write into a discarded cluster reads back. */
    memset(want + 130 * KiB, 0x3e, 4 * KiB);
    assert_int_equal(blk_pwrite(blk, 130 * KiB, 4 * KiB, want + 130 * KiB, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 500 * KiB, buf, 0), 0);
    assert_memory_equal(buf, want, 500 * KiB);
    blk_unref(blk);
    free(want);
    free(buf);
}

/* ---------------------------------------------------------------------- */
/* Check and repair */

static void test_parallels_check_outside(void **state)
{
    Tiny t = tiny_default();
    uint8_t buf[512], want[512];
    BlockBackend *blk;

    t.entries[1] = 40; /* past the end of the file */
    tiny_write(&t);
    blk = open_prl(0);
    assert_int_equal(blk_pread(blk, 512, 512, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    memset(want, 0xa0, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions, 1);
    blk_unref(blk);

    blk = open_prl(BDRV_O_RDWR);
    assert_int_equal(blk_pwrite(blk, 1536, 512, want, 0), -EIO); /* corrupt: no writes */
    res = check(blk, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(res.corruptions_fixed, 1);
    assert_int_equal(blk_pwrite(blk, 1536, 512, want, 0), 0);
    blk_unref(blk);
    assert_int_equal(file_le32(64 + 4), 0);
    blk = open_prl(0);
    res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
}

static void test_parallels_check_shared_and_leak(void **state)
{
    Tiny t = tiny_default();
    uint8_t buf[512], want[512];
    BlockBackend *blk;

    t.entries[1] = 1;           /* shares cluster 1 with entry 0 */
    t.data_clusters = 5;        /* clusters past entry 2's are leaked */
    tiny_write(&t);
    blk = open_prl(0);
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(res.leaks, 2);
    blk_unref(blk);

    blk = open_prl(BDRV_O_RDWR);
    res = check(blk, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_int_equal(res.corruptions_fixed, 1);
    assert_int_equal(res.leaks_fixed, 1); /* the copy took the first leaked cluster */
    /* Both guest clusters keep the data; a write to one leaves the other. */
    memset(want, 0xa0, sizeof(want));
    assert_int_equal(blk_pread(blk, 512, 512, buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(want));
    memset(want, 0x11, sizeof(want));
    assert_int_equal(blk_pwrite(blk, 512, 512, want, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    memset(want, 0xa0, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));
    blk_unref(blk);
    blk = open_prl(0);
    res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0);
    blk_unref(blk);
}

static void test_parallels_check_misaligned(void **state)
{
    Tiny t = tiny_default();
    uint8_t buf[1024], want[1024];
    BlockBackend *blk;

    /* Old layout (sector units), 1 KiB clusters at sector 2: entry 0 at sector 3 is off by one. */
    t.old = true;
    t.tracks = 2;
    t.data_off = 2;
    t.bat = 4;
    t.nb_sectors = 8;
    t.entries[0] = 3;
    t.entries[1] = 0;
    t.entries[2] = 0;
    t.data_clusters = 2;
    tiny_write(&t);
    blk = open_prl(BDRV_O_RDWR);
    file_read(3 * 512, want, sizeof(want));
    BdrvCheckResult res = check(blk, BDRV_FIX_LEAKS | BDRV_FIX_ERRORS);
    assert_int_equal(res.corruptions, 1);
    assert_int_equal(res.corruptions_fixed, 1);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(want));
    blk_unref(blk);
    assert_int_equal((file_le32(64) - 2) % 2, 0);
    blk = open_prl(0);
    res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions, 0);
    blk_unref(blk);
}

/* ---------------------------------------------------------------------- */
/* Corrupt headers */

static void expect_fail(const Tiny *t, const char *want)
{
    tiny_write(t);
    drv_test_open_fails(opts_for(""), 0, want);
}

static void test_parallels_bad_headers(void **state)
{
    Tiny t;

    t = tiny_default();
    t.version = 3;
    expect_fail(&t, "version 3");
    t = tiny_default();
    t.tracks = 0;
    expect_fail(&t, "tracks (cluster size in sectors) 0");
    t = tiny_default();
    t.tracks = 1u << 20;
    expect_fail(&t, "tracks (cluster size in sectors) 1048576");
    t = tiny_default();
    t.bat = 0xffffffffu;
    expect_fail(&t, "nb_bat_entries 4294967295");
    t = tiny_default();
    t.bat = 1u << 22; /* under the cap, but the BAT runs past data_off and the file */
    expect_fail(&t, "overlaps the BAT");
    t = tiny_default();
    t.nb_sectors = 9;
    expect_fail(&t, "nb_sectors 9");
    t = tiny_default();
    t.inuse = 0x12345678;
    expect_fail(&t, "in_use 0x12345678");
    t = tiny_default();
    t.data_off = 0; /* must be non-zero for "WithouFreSpacExt" */
    expect_fail(&t, "data_off 0");
    t = tiny_default();
    t.tracks = 2;
    t.nb_sectors = 16;
    t.data_off = 3;
    expect_fail(&t, "not a multiple of the cluster size");
    t = tiny_default();
    t.data_off = 100;
    t.data_clusters = 0;
    tiny_write(&t);
    assert_int_equal(truncate(img, 4096), 0);
    drv_test_open_fails(opts_for(""), 0, "data_off 100 (sectors) lies past the end of the file");

    /* Too short for a header; not this format. */
    drv_test_make_file(img, 40, 1);
    drv_test_open_fails(opts_for(""), 0, "too short");
    drv_test_make_file(img, 4096, 1);
    drv_test_open_fails(opts_for(""), 0, "not a parallels image");
}

/* ---------------------------------------------------------------------- */
/* Format Extension */

/* Builds an extension cluster (512 bytes) at sector 4 with the given features. */
static void ext_write(const uint8_t *features, size_t len, bool good_sum)
{
    uint8_t c[512] = { 0 };

    st_le64(c, 0xab234cef23dcea87ULL);
    memcpy(c + 24, features, len);
    prl_md5(c + 24, sizeof(c) - 24, c + 8);
    if (!good_sum) {
        c[8] ^= 1;
    }
    file_write(4 * 512, c, sizeof(c));
}

/* A dirty bitmap feature: 8 sectors, granularity gran, l1 entries given. */
static size_t bitmap_feature(uint8_t *f, uint64_t flags, uint64_t sectors, uint32_t gran,
                             uint32_t l1_size, const uint64_t *l1, uint32_t data_size)
{
    memset(f, 0, 128);
    st_le64(f, 0x20385fae252cb34aULL);
    st_le64(f + 8, flags);
    st_le32(f + 16, data_size);
    st_le64(f + 24, sectors);
    memset(f + 32, 0x77, 16);
    st_le32(f + 48, gran);
    st_le32(f + 52, l1_size);
    for (uint32_t i = 0; i < l1_size && i < 4; i++) {
        st_le64(f + 56 + 8 * i, l1[i]);
    }
    return 24 + round_up_u64(data_size, 8) + 24; /* and the end marker (zeroes) */
}

/* Tiny image with the extension at data cluster 3 (sector 4), bitmap data at sector 5. */
static Tiny ext_tiny(void)
{
    Tiny t = tiny_default();

    t.ext_off = 4;
    t.data_clusters = 5;
    return t;
}

static void test_parallels_ext_kept_then_dropped(void **state)
{
    Tiny t = ext_tiny();
    uint8_t f[128], buf[512], want[512];
    uint64_t l1[1] = { 5 };
    char *info;
    BlockBackend *blk;
    size_t n;

    tiny_write(&t);
    n = bitmap_feature(f, 0, 8, 1, 1, l1, 32 + 8);
    ext_write(f, n, true);

    blk = open_prl(0);
    info = bdrv_get_specific_info(blk_bs(blk), NULL);
    assert_non_null(strstr(info, "\"dirty-bitmaps\": 1"));
    free(info);
    BdrvCheckResult res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions + res.leaks, 0); /* its clusters are in use */
    blk_unref(blk);

    /* Read-write without changes: the extension stays. */
    blk = open_prl(BDRV_O_RDWR);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    blk_unref(blk);
    assert_int_equal(file_le32(56), 4);

    /* The first write drops it before changing data; new clusters never overwrite it
     * while it is referenced. */
    blk = open_prl(BDRV_O_RDWR);
    memset(want, 0x42, sizeof(want));
    assert_int_equal(blk_pwrite(blk, 512 * 5, 512, want, 0), 0);
    assert_int_equal(file_le32(56), 0);
    assert_int_equal(blk_pread(blk, 512 * 5, 512, buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(want));
    blk_unref(blk);
    blk = open_prl(0);
    info = bdrv_get_specific_info(blk_bs(blk), NULL);
    assert_non_null(strstr(info, "\"format-extension\": false"));
    free(info);
    res = check(blk, BDRV_FIX_NONE);
    assert_int_equal(res.corruptions, 0);
    blk_unref(blk);
}

static void test_parallels_ext_unknown_necessary(void **state)
{
    Tiny t = ext_tiny();
    uint8_t f[64] = { 0 };
    BlockBackend *blk;

    tiny_write(&t);
    st_le64(f, 0x1122334455667788ULL);
    st_le64(f + 8, 1); /* NECESSARY */
    st_le32(f + 16, 8);
    ext_write(f, 24 + 8 + 24, true);
    blk = open_prl(0);
    blk_unref(blk);
    drv_test_open_fails(opts_for(""), BDRV_O_RDWR, "only be opened read-only");
    assert_int_equal(file_le32(56), 4);

    /* Unknown and neither NECESSARY nor TRANSIT: ignored (dropped on the first write). */
    st_le64(f + 8, 0);
    ext_write(f, 24 + 8 + 24, true);
    blk = open_prl(BDRV_O_RDWR);
    blk_unref(blk);
}

static void test_parallels_ext_errors(void **state)
{
    Tiny t = ext_tiny();
    uint8_t f[128], c[512] = { 0 };
    uint64_t l1[4] = { 5, 0, 0, 0 };
    size_t n;

    t.ext_off = 40;
    expect_fail(&t, "Format Extension (ext_off) at offset 20480");
    t = ext_tiny();
    tiny_write(&t);
    file_write(4 * 512, c, sizeof(c));
    drv_test_open_fails(opts_for(""), 0, "Format Extension magic");

    n = bitmap_feature(f, 0, 8, 1, 1, l1, 40);
    ext_write(f, n, false);
    drv_test_open_fails(opts_for(""), 0, "checksum");

    /* No end marker: a feature list that fills the cluster. */
    memset(c, 0, sizeof(c));
    st_le64(c, 0xab234cef23dcea87ULL);
    for (size_t off = 24; off + 24 <= sizeof(c); off += 24) {
        st_le64(c + off, 0x99);
    }
    prl_md5(c + 24, sizeof(c) - 24, c + 8);
    file_write(4 * 512, c, sizeof(c));
    drv_test_open_fails(opts_for(""), 0, "end-of-features");

    n = bitmap_feature(f, 0, 8, 1, 1, l1, 4000);
    ext_write(f, 64, true);
    drv_test_open_fails(opts_for(""), 0, "data_size 4000 runs past the cluster");

    n = bitmap_feature(f, 0, 8, 3, 1, l1, 40);
    ext_write(f, n, true);
    drv_test_open_fails(opts_for(""), 0, "granularity 3");

    n = bitmap_feature(f, 0, 16, 1, 1, l1, 40);
    ext_write(f, n, true);
    drv_test_open_fails(opts_for(""), 0, "bitmap size 16 sectors");

    n = bitmap_feature(f, 0, 8, 1, 0, l1, 40);
    ext_write(f, n, true);
    drv_test_open_fails(opts_for(""), 0, "l1_size 0 (needs 1)");

    n = bitmap_feature(f, 0, 8, 1, 2, l1, 40);
    ext_write(f, n, true);
    drv_test_open_fails(opts_for(""), 0, "l1_size 2");

    n = bitmap_feature(f, 0, 8, 1, 16, l1, 24);
    ext_write(f, n, true);
    drv_test_open_fails(opts_for(""), 0, "shorter than its header");

    l1[0] = 400;
    n = bitmap_feature(f, 0, 8, 1, 1, l1, 40);
    ext_write(f, n, true);
    drv_test_open_fails(opts_for(""), 0, "dirty bitmap cluster at offset 204800");
}

static void test_parallels_md5(void **state)
{
    static const struct {
        const char *in;
        const char *hex;
    } v[] = {
        { "", "d41d8cd98f00b204e9800998ecf8427e" },
        { "abc", "900150983cd24fb0d6963f7d28e17f72" },
        { "12345678901234567890123456789012345678901234567890123456789012345678901234567890",
          "57edf4a22be3c955ac49da2e2107b67a" },
    };
    char hex[33];
    uint8_t d[16];

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        prl_md5(v[i].in, strlen(v[i].in), d);
        for (int j = 0; j < 16; j++) {
            snprintf(hex + 2 * j, 3, "%02x", d[j]);
        }
        assert_string_equal(hex, v[i].hex);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_parallels_create_and_rw, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_create_options, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_inuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_crash_ordering, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_flush_retry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_concurrent_alloc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_grow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_old_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_empty_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_backing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_check_outside, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_check_shared_and_leak, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_check_misaligned, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_bad_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_ext_kept_then_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_ext_unknown_necessary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parallels_ext_errors, setup, teardown),
        cmocka_unit_test(test_parallels_md5),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
