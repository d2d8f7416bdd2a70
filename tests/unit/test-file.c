/*
 * Unit tests: the file and host_device protocol drivers
 * (drivers/protocol/file.c, host-device.c, file-lock.c) on real files in
 * $COBLK_TEST_DIR: every engine buffered and O_DIRECT, unaligned O_DIRECT
 * I/O, EOF, write-zeroes, discard, block status, truncate, create, image
 * locking, option errors, and a loop device when the machine allows one
 * (where FUA writes are native, as on files: see test-file-fua.c).
 */
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "drv-test-util.h"

#include "aio/engine-int.h"
#include "block/block-int.h"
#include "drivers/protocol/file-int.h"

#define MiB (1024 * 1024)

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "file");
    return 0;
}

/* The loop device of the host_device test, detached in teardown even if it failed. */
static char loopdev[256];

static int teardown(void **state)
{
    char cmd[512];

    if (loopdev[0]) {
        snprintf(cmd, sizeof(cmd), "losetup -d '%s'", loopdev);
        if (system(cmd) != 0) {
            fprintf(stderr, "could not detach %s\n", loopdev);
        }
        loopdev[0] = '\0';
    }
    unlink(img);
    return 0;
}

/* "driver=file,filename=<img>" plus extra options. */
static const char *file_opts(const char *extra)
{
    static char buf[8192];

    snprintf(buf, sizeof(buf), "driver=file,filename=%s%s%s", img, *extra ? "," : "", extra);
    return buf;
}

/* Writes patterns at several offsets and sizes and reads them back byte for byte. */
static void check_rw(BlockBackend *blk, uint8_t seed)
{
    static const int64_t offs[] = { 0, 4096, 65536, 3 * MiB - 8192 };
    static const int64_t lens[] = { 4096, 8192, 131072, 8192 };
    uint8_t *w = malloc(131072), *r = malloc(131072);

    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        drv_test_pattern(w, (size_t)lens[i], (uint8_t)(seed + i));
        assert_int_equal(blk_pwrite(blk, offs[i], lens[i], w, 0), 0);
    }
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        drv_test_pattern(w, (size_t)lens[i], (uint8_t)(seed + i));
        memset(r, 0xcc, (size_t)lens[i]);
        assert_int_equal(blk_pread(blk, offs[i], lens[i], r, 0), 0);
        assert_memory_equal(r, w, (size_t)lens[i]);
    }
    assert_int_equal(blk_flush(blk), 0);
    free(w);
    free(r);
}

/*
 * An O_DIRECT node takes the alignments statx reports for its file (where
 * the kernel and file system report them; else they are probed).
 */
static void assert_statx_alignment(BlockBackend *blk)
{
#ifdef STATX_DIOALIGN
    struct statx st;
    int fd = open(img, O_RDONLY | O_DIRECT | O_CLOEXEC);

    assert_true(fd >= 0);
    if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &st) == 0 &&
        (st.stx_mask & STATX_DIOALIGN) && st.stx_dio_offset_align) {
        assert_int_equal(blk_bs(blk)->bl.request_alignment, st.stx_dio_offset_align);
        assert_int_equal(blk_bs(blk)->bl.min_mem_alignment, st.stx_dio_mem_align);
    }
    close(fd);
#else
    (void)blk;
#endif
}

static void rw_with(const char *engine, bool direct)
{
    char extra[128];
    BlockBackend *blk;

    if (direct && !drv_test_direct_ok(drv_test_dir())) {
        print_message("skipping O_DIRECT case: %s refuses O_DIRECT\n", drv_test_dir());
        return;
    }
    drv_test_make_file(img, 4 * MiB, 0);
    snprintf(extra, sizeof(extra), "aio=%s%s", engine, direct ? ",cache.direct=on" : "");
    blk = drv_test_open_ok(file_opts(extra), BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), 4 * MiB);
    if (direct) {
        assert_true(blk_bs(blk)->bl.request_alignment >= 512);
        assert_statx_alignment(blk);
    } else {
        assert_int_equal(blk_bs(blk)->bl.request_alignment, 1);
    }
    check_rw(blk, (uint8_t)(engine[0] + direct));
    blk_unref(blk);
}

static void test_file_rw_threads(void **state)
{
    rw_with("threads", false);
    rw_with("threads", true);
}

static void test_file_rw_native(void **state)
{
    rw_with("native", true);
}

static void test_file_rw_io_uring(void **state)
{
    rw_with("io_uring", false);
    rw_with("io_uring", true);
}

static void test_file_rw_default_engine(void **state)
{
    BlockBackend *blk;

    drv_test_make_file(img, 4 * MiB, 0);
    blk = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    check_rw(blk, 9);
    blk_unref(blk);
}

/* Unaligned requests on an O_DIRECT file go through read-modify-write. */
static void test_file_unaligned_direct(void **state)
{
    static const struct { int64_t off, len; } reqs[] = {
        { 1, 1 }, { 100, 1000 }, { 511, 2 }, { 4095, 4098 }, { 70000, 300 },
    };
    uint8_t *model = malloc(MiB), *buf = malloc(MiB);
    BlockBackend *blk;
    int fd;

    if (!drv_test_direct_ok(drv_test_dir())) {
        skip();
    }
    drv_test_make_file(img, MiB, 0x31);
    fd = open(img, O_RDONLY);
    assert_int_equal(pread(fd, model, MiB, 0), MiB);
    close(fd);
    blk = drv_test_open_ok(file_opts("cache.direct=on"), BDRV_O_RDWR);
    assert_true(blk_bs(blk)->bl.request_alignment >= 512);
    for (size_t i = 0; i < sizeof(reqs) / sizeof(reqs[0]); i++) {
        drv_test_pattern(model + reqs[i].off, (size_t)reqs[i].len, (uint8_t)(i + 1));
        assert_int_equal(blk_pwrite(blk, reqs[i].off, reqs[i].len, model + reqs[i].off, 0), 0);
    }
    assert_int_equal(blk_pread(blk, 3, 100000, buf, 0), 0);
    assert_memory_equal(buf, model + 3, 100000);
    blk_unref(blk);
    fd = open(img, O_RDONLY);
    assert_int_equal(pread(fd, buf, MiB, 0), MiB);
    close(fd);
    assert_memory_equal(buf, model, MiB);
    free(model);
    free(buf);
}

typedef struct DirectRead {
    BlockDriverState *bs;
    int64_t offset, bytes;
    uint8_t *buf;
    int ret;
} DirectRead;

static void coroutine_fn driver_read_co(void *opaque)
{
    DirectRead *d = opaque;
    IOVector qiov;

    iovector_init_buf(&qiov, d->buf, (size_t)d->bytes);
    d->ret = d->bs->drv->co_preadv(d->bs, d->offset, d->bytes, &qiov, 0, 0);
}

/* The driver zero-fills what lies past EOF, buffered and O_DIRECT. */
static void test_file_read_past_eof(void **state)
{
    uint8_t *buf = malloc(8192), *want = malloc(8192);
    const char *modes[] = { "", "cache.direct=on" };

    drv_test_make_file(img, 1000, 0x55);
    for (int m = 0; m < 2; m++) {
        BlockBackend *blk;
        DirectRead d;
        int fd;

        if (m == 1 && !drv_test_direct_ok(drv_test_dir())) {
            continue;
        }
        blk = drv_test_open_ok(file_opts(modes[m]), 0);
        assert_int_equal(blk_getlength(blk), 1000);
        memset(want, 0, 8192);
        fd = open(img, O_RDONLY);
        assert_int_equal(pread(fd, want, 1000, 0), 1000);
        close(fd);
        memset(buf, 0xaa, 8192);
        d = (DirectRead){ .bs = blk_bs(blk), .offset = 0, .bytes = 8192, .buf = buf };
        drv_test_run_co(blk_get_aio_context(blk), driver_read_co, &d);
        assert_int_equal(d.ret, 0);
        assert_memory_equal(buf, want, 8192);
        /* Through the request layer: the unaligned tail of the node. */
        memset(buf, 0xaa, 1000);
        assert_int_equal(blk_pread(blk, 0, 1000, buf, 0), 0);
        assert_memory_equal(buf, want, 1000);
        blk_unref(blk);
    }
    free(buf);
    free(want);
}

typedef struct StatusQuery {
    BlockDriverState *bs;
    int64_t offset, bytes, pnum, map;
    BlockDriverState *file;
    int ret;
} StatusQuery;

static void coroutine_fn status_co(void *opaque)
{
    StatusQuery *q = opaque;

    q->ret = bdrv_co_block_status(q->bs, q->offset, q->bytes, &q->pnum, &q->map, &q->file);
}

static int status_of(BlockBackend *blk, int64_t offset, int64_t bytes, int64_t *pnum)
{
    StatusQuery q = { .bs = blk_bs(blk), .offset = offset, .bytes = bytes };

    drv_test_run_co(blk_get_aio_context(blk), status_co, &q);
    *pnum = q.pnum;
    if (q.ret >= 0 && (q.ret & BDRV_BLOCK_OFFSET_VALID)) {
        assert_int_equal(q.map, offset);
        assert_ptr_equal(q.file, blk_bs(blk));
    }
    return q.ret;
}

static void assert_zero(BlockBackend *blk, int64_t offset, int64_t len)
{
    uint8_t *buf = malloc((size_t)len), *zero = calloc(1, (size_t)len);

    assert_int_equal(blk_pread(blk, offset, len, buf, 0), 0);
    assert_memory_equal(buf, zero, (size_t)len);
    free(buf);
    free(zero);
}

static void test_file_write_zeroes_and_discard(void **state)
{
    uint8_t *buf = malloc(MiB), *want = malloc(MiB);
    BlockBackend *blk;
    int64_t pnum;
    int ret;

    drv_test_make_file(img, MiB, 0x11);
    blk = drv_test_open_ok(file_opts("discard=unmap"), BDRV_O_RDWR | BDRV_O_UNMAP);
    assert_int_equal(blk_pread(blk, 0, MiB, want, 0), 0);

    assert_int_equal(blk_pwrite_zeroes(blk, 65536, 65536, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, 262144, 131072, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(blk_pdiscard(blk, 524288, 65536), 0);
    memset(want + 65536, 0, 65536);
    memset(want + 262144, 0, 131072);
    assert_int_equal(blk_pread(blk, 0, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, 524288);
    assert_memory_equal(buf + 589824, want + 589824, MiB - 589824);

    /* The punched range is a hole: ZERO; the data before it is DATA. */
    ret = status_of(blk, 262144, 131072, &pnum);
    assert_true(ret >= 0);
    assert_true(ret & BDRV_BLOCK_ZERO);
    assert_int_equal(pnum, 131072);
    ret = status_of(blk, 0, 65536, &pnum);
    assert_true(ret & BDRV_BLOCK_DATA);
    assert_int_equal(pnum, 65536);
    ret = status_of(blk, 524288, 65536, &pnum);
    if (ret & BDRV_BLOCK_ZERO) {
        assert_zero(blk, 524288, 65536);
    }
    blk_unref(blk);
    free(buf);
    free(want);
}

static int64_t allocated(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_blocks * 512;
}

static void test_file_truncate(void **state)
{
    Error *err = NULL;
    BlockBackend *blk;

    drv_test_make_file(img, 4096, 0x22);
    blk = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    assert_int_equal(blk_truncate(blk, MiB, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), MiB);
    assert_zero(blk, 4096, MiB - 4096);
    assert_int_equal(blk_truncate(blk, 3 * MiB, true, PREALLOC_MODE_FALLOC, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), 3 * MiB);
    assert_true(allocated(img) >= 2 * MiB);
    assert_int_equal(blk_truncate(blk, 5 * MiB, true, PREALLOC_MODE_FULL, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), 5 * MiB);
    assert_true(allocated(img) >= 4 * MiB);
    assert_zero(blk, 3 * MiB, 2 * MiB);
    /* Not exact: already big enough. */
    assert_int_equal(blk_truncate(blk, MiB, false, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), 5 * MiB);
    /* Preallocated shrinking is refused, plain shrinking works. */
    assert_true(blk_truncate(blk, MiB, true, PREALLOC_MODE_FULL, 0, &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "shrink"));
    error_free(err);
    assert_int_equal(blk_truncate(blk, 8192, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(blk_getlength(blk), 8192);
    blk_unref(blk);
}

typedef struct CreateArgs {
    const char *opts;
    int ret;
    char msg[512];
} CreateArgs;

static void coroutine_fn create_co(void *opaque)
{
    CreateArgs *a = opaque;
    const BlockDriver *drv = bdrv_find_format("file");
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, a->opts, NULL, NULL), 0);
    a->ret = drv->co_create_opts(drv, img, o, &err);
    if (err) {
        snprintf(a->msg, sizeof(a->msg), "%s", error_get_pretty(err));
        error_free(err);
    }
    bopts_free(o);
}

/*
 * The files this process fsync()ed, by inode: the test executable's fsync()
 * replaces libc's for the statically linked library.
 */
static struct stat synced[16];
static int n_synced;

int fsync(int fd)
{
    struct stat st;

    if (fstat(fd, &st) == 0 && n_synced < (int)(sizeof(synced) / sizeof(synced[0]))) {
        synced[n_synced++] = st;
    }
    return (int)syscall(SYS_fsync, fd);
}

static bool was_synced(const char *path)
{
    struct stat st;

    assert_int_equal(stat(path, &st), 0);
    for (int i = 0; i < n_synced; i++) {
        if (synced[i].st_dev == st.st_dev && synced[i].st_ino == st.st_ino) {
            return true;
        }
    }
    return false;
}

static void test_file_create(void **state)
{
    CreateArgs a = { .opts = "size=2M,preallocation=full,nocow=on" };
    char dir[PATH_MAX];
    struct stat st;

    unlink(img);
    n_synced = 0;
    drv_test_run_co(bdrv_default_aio_context(), create_co, &a);
    assert_int_equal(a.ret, 0);
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_size, 2 * MiB);
    assert_true(allocated(img) >= 2 * MiB);
    /* Durable when create returns: the file (size, blocks) and its name. */
    snprintf(dir, sizeof(dir), "%s", img);
    assert_true(was_synced(img));
    assert_true(was_synced(dirname(dir)));

    a = (CreateArgs){ .opts = "size=1M,preallocation=metadata" };
    drv_test_run_co(bdrv_default_aio_context(), create_co, &a);
    assert_true(a.ret < 0);
    assert_non_null(strstr(a.msg, "metadata"));

    a = (CreateArgs){ .opts = "size=1M,preallocation=falloc" };
    drv_test_run_co(bdrv_default_aio_context(), create_co, &a);
    assert_int_equal(a.ret, 0);
    assert_int_equal(stat(img, &st), 0);
    assert_int_equal(st.st_size, MiB);
}

static void test_file_lock_conflict(void **state)
{
    BlockBackend *a, *b;

    drv_test_make_file(img, MiB, 0);
    a = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    drv_test_open_fails(file_opts(""), BDRV_O_RDWR, "Failed to get \"write\" lock");
    drv_test_open_fails(file_opts(""), BDRV_O_RDWR, "Is another process using the image [");
    drv_test_open_fails(file_opts(""), 0, "Failed to get shared \"write\" lock");
    b = drv_test_open_ok(file_opts(""), BDRV_O_FORCE_SHARE);
    blk_unref(b);
    b = drv_test_open_ok(file_opts("locking=off"), BDRV_O_RDWR);
    blk_unref(b);
    blk_unref(a);

    /* Locks go away on close; readers share with readers. */
    a = drv_test_open_ok(file_opts(""), 0);
    b = drv_test_open_ok(file_opts(""), 0);
    drv_test_open_fails(file_opts(""), BDRV_O_RDWR, "Failed to get \"write\" lock");
    blk_unref(b);
    blk_unref(a);
    a = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    blk_unref(a);
}

/*
 * Closing drops the locks even while another reference to the open file
 * description lives on: here a forked child's, in the field an io_uring
 * request that posted its completion but has not put its file yet. Before,
 * the reopen right after the close failed with "Failed to get "write" lock".
 */
static void test_file_lock_released_at_close(void **state)
{
    BlockBackend *a;
    int gate[2], status;
    pid_t child;
    char c = 0;

    drv_test_make_file(img, MiB, 0);
    assert_int_equal(pipe(gate), 0);
    a = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(gate[1]);
        (void)!read(gate[0], &c, 1); /* holds the inherited descriptors until told */
        _exit(0);
    }
    close(gate[0]);
    blk_unref(a);
    a = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    blk_unref(a);
    a = drv_test_open_ok(file_opts(""), 0);
    blk_unref(a);
    assert_int_equal(write(gate[1], &c, 1), 1);
    close(gate[1]);
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Reopen moves the image locks with the mode, and a conflicting reopen fails cleanly. */
static void test_file_reopen(void **state)
{
    uint8_t buf[4096], want[4096];
    BlockBackend *a, *b, *c;
    BlockOpts *o;
    Error *err = NULL;

    drv_test_make_file(img, MiB, 0);
    a = drv_test_open_ok(file_opts(""), 0);
    b = drv_test_open_ok(file_opts(""), BDRV_O_FORCE_SHARE);
    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(a), false, &err), 0);
    drv_test_pattern(want, sizeof(want), 77);
    assert_int_equal(blk_pwrite(a, 4096, sizeof(want), want, 0), 0);
    drv_test_open_fails(file_opts(""), BDRV_O_RDWR, "Failed to get \"write\" lock");
    drv_test_open_fails(file_opts(""), 0, "Failed to get shared \"write\" lock");

    /* To O_DIRECT and back: same data. */
    if (drv_test_direct_ok(drv_test_dir())) {
        o = bopts_new();
        assert_int_equal(bopts_set(o, "cache.direct", "on"), 0);
        assert_int_equal(bdrv_reopen(blk_bs(a), o, &err), 0);
        assert_int_equal(blk_pread(a, 4096, sizeof(buf), buf, 0), 0);
        assert_memory_equal(buf, want, sizeof(want));
        assert_int_equal(blk_pwrite(a, 100, 50, want, 0), 0);
    }

    assert_int_equal(bdrv_reopen_set_read_only(blk_bs(a), true, &err), 0);
    c = drv_test_open_ok(file_opts(""), 0);
    assert_true(bdrv_reopen_set_read_only(blk_bs(a), false, &err) < 0);
    assert_non_null(strstr(error_get_pretty(err), "Failed to get \"write\" lock"));
    error_free(err);
    /* The failed reopen left a's read-only locks in place: readers still share. */
    blk_unref(c);
    c = drv_test_open_ok(file_opts(""), 0);
    blk_unref(c);
    blk_unref(b);
    blk_unref(a);
    a = drv_test_open_ok(file_opts(""), BDRV_O_RDWR);
    blk_unref(a);
}

static void test_file_open_errors(void **state)
{
    char want[8192], opts[8192];

    snprintf(opts, sizeof(opts), "driver=file,filename=%s/does-not-exist.img",
             drv_test_dir());
    snprintf(want, sizeof(want), "Could not open '%s/does-not-exist.img': "
             "No such file or directory", drv_test_dir());
    drv_test_open_fails(opts, 0, want);

    drv_test_make_file(img, MiB, 0);
    drv_test_open_fails(file_opts("aio=foo"), 0,
                        "Parameter 'aio' does not accept value 'foo'");
    drv_test_open_fails(file_opts("locking=maybe"), 0,
                        "Parameter 'locking' does not accept value 'maybe'");
    drv_test_open_fails(file_opts("aio=native"), 0, "aio=native requires cache.direct=on");
    drv_test_open_fails(file_opts("x-check-cache-dropped=on"), 0, "x-check-cache-dropped");
    drv_test_open_fails("driver=file", 0, "'filename' is required");
    snprintf(opts, sizeof(opts), "driver=file,filename=%s", drv_test_dir());
    drv_test_open_fails(opts, BDRV_O_RDWR, drv_test_dir());
}

/* ---------------------------------------------------------------------- */
/* host_device on a loop device */

static bool run_cmd(const char *cmd, char *out, size_t outlen)
{
    FILE *p = popen(cmd, "r");
    size_t n = 0;

    if (!p) {
        return false;
    }
    if (out) {
        n = fread(out, 1, outlen - 1, p);
        out[n] = '\0';
        out[strcspn(out, "\n")] = '\0';
    }
    return pclose(p) == 0 && (!out || n > 0);
}

/* A FUA write at off is native: one RWF_DSYNC write, no sync; its data reads back. */
static void assert_fua_native(BlockBackend *blk, int64_t off, const uint8_t *data)
{
    BDRVFileState *s = blk_bs(blk)->opaque;
    uint8_t *got = malloc(65536);
    AioEngineStats st;

    assert_true(blk_bs(blk)->supported_write_flags & BDRV_REQ_FUA);
    aio_engine_reset_stats(s->engine);
    assert_int_equal(blk_pwrite(blk, off, 65536, data, BDRV_REQ_FUA), 0);
    aio_engine_get_stats(s->engine, &st);
    assert_int_equal(st.dsync_writes, 1);
    assert_int_equal(st.syncs, 0);
    assert_int_equal(blk_pread(blk, off, 65536, got, 0), 0);
    assert_memory_equal(got, data, 65536);
    free(got);
}

static void host_device_case(int sector_size)
{
    char cmd[8192], opts[8192];
    char *dev = loopdev;
    uint8_t *buf = malloc(MiB), *want = malloc(MiB);
    BlockBackend *blk;

    drv_test_make_file(img, 8 * MiB, 0x44);
    snprintf(cmd, sizeof(cmd), "losetup -f --show --sector-size %d '%s' 2>/dev/null",
             sector_size, img);
    if (!run_cmd(cmd, dev, sizeof(loopdev))) {
        dev[0] = '\0';
        print_message("skipping: no loop device (losetup failed)\n");
        free(buf);
        free(want);
        skip();
    }
    snprintf(opts, sizeof(opts), "driver=host_device,filename=%s,cache.direct=on,aio=native",
             dev);
    blk = drv_test_open_ok(opts, BDRV_O_RDWR);
    assert_int_equal(blk_getlength(blk), 8 * MiB);
    /* The protocol node takes the device's logical sector size. */
    assert_int_equal(blk_bs(blk)->bl.request_alignment, sector_size);
    drv_test_pattern(want, MiB, 3);
    assert_int_equal(blk_pwrite(blk, MiB, MiB, want, 0), 0);
    assert_int_equal(blk_pread(blk, MiB, MiB, buf, 0), 0);
    assert_memory_equal(buf, want, MiB);
    assert_fua_native(blk, 3 * MiB, want);
    assert_int_equal(blk_pwrite_zeroes(blk, MiB, 65536, 0), 0);
    assert_zero(blk, MiB, 65536);
    assert_int_equal(blk_pwrite(blk, 100, 1000, want, 0), 0);
    assert_int_equal(blk_pread(blk, 100, 1000, buf, 0), 0);
    assert_memory_equal(buf, want, 1000);
    /* Unaligned I/O straddling sectors: read-modify-write keeps the neighbours. */
    assert_int_equal(blk_pread(blk, 0, 3 * sector_size, buf, 0), 0);
    memcpy(buf + sector_size - 7, want + 5000, sector_size + 13);
    assert_int_equal(blk_pwrite(blk, sector_size - 7, sector_size + 13, want + 5000, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 3 * sector_size, buf + MiB / 2, 0), 0);
    assert_memory_equal(buf + MiB / 2, buf, 3 * sector_size);
    assert_true(blk_truncate(blk, 16 * MiB, true, PREALLOC_MODE_OFF, 0, NULL) < 0);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);
    /* A plain device path is probed (raw) over host_device, not file. */
    blk = blk_new_open(dev, NULL, 0, NULL);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "raw");
    assert_string_equal(bdrv_get_format_name(bdrv_file_bs(blk_bs(blk))), "host_device");
    assert_int_equal(blk_pread(blk, MiB, 4096, buf, 0), 0);
    blk_unref(blk);
    snprintf(opts, sizeof(opts), "driver=host_device,filename=%s", img);
    drv_test_open_fails(opts, 0, "is not a block device");
    free(buf);
    free(want);
}

static void test_file_host_device(void **state)
{
    host_device_case(512);
}

static void test_file_host_device_4k_sectors(void **state)
{
    host_device_case(4096);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_rw_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rw_native, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rw_io_uring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_rw_default_engine, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_unaligned_direct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_read_past_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_write_zeroes_and_discard, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_truncate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_create, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_lock_conflict, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_lock_released_at_close, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_host_device, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_host_device_4k_sectors, setup, teardown),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
