/*
 * Unit tests: block I/O engines (aio/engine*.c): real reads and writes on a
 * file, buffered and O_DIRECT, for every engine; concurrency, EOF, sync and
 * fallocate ops, errors, plugging, and engine fallback under seccomp.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/falloc.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "aio-test-util.h"

#include <coblk/aio-io.h>

#include "aio/engine-int.h"

#define BLK 4096
#define FILE_SIZE (4 * 1024 * 1024)

/* One configuration: an engine and whether the file is opened with O_DIRECT. */
typedef struct EngineCase {
    AioEngineType type;
    bool direct;
} EngineCase;

typedef struct Fixture {
    EngineCase cfg;
    AioContext *ctx;
    AioEngine *e;
    int fd;
} Fixture;

/* ---------------------------------------------------------------------- */
/* Helpers */

/* Opens an unlinked scratch file in dir; -errno on failure. */
static int scratch_open_in(const char *dir, bool direct)
{
    char path[4096];
    int fd, dfd;

    snprintf(path, sizeof(path), "%s/coblk-engine-XXXXXX", dir);
    fd = mkstemp(path);
    if (fd < 0) {
        return -errno;
    }
    unlink(path);
    if (!direct) {
        return fd;
    }
    /* Reopen through /proc to add O_DIRECT (fcntl cannot report EINVAL early). */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    dfd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
    close(fd);
    return dfd < 0 ? -errno : dfd;
}

/* A scratch file, preferring $COBLK_TEST_DIR; tmpfs refuses O_DIRECT with EINVAL. */
static int scratch_open(bool direct)
{
    const char *dirs[] = { getenv("COBLK_TEST_DIR"), ".", "/var/tmp", "/tmp" };

    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        int fd;

        if (!dirs[i]) {
            continue;
        }
        fd = scratch_open_in(dirs[i], direct);
        if (fd >= 0) {
            return fd;
        }
    }
    return -EINVAL;
}

static void *buf_alloc(size_t len)
{
    void *p = NULL;

    assert_int_equal(posix_memalign(&p, BLK, len), 0);
    return p;
}

static void fill_pattern(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 8));
    }
}

static bool check_pattern(const uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != (uint8_t)(seed * 131 + i * 7 + (i >> 8))) {
            return false;
        }
    }
    return true;
}

typedef void CoFn(Fixture *f, void *arg);

typedef struct CoJob {
    Fixture *f;
    CoFn *fn;
    void *arg;
    int *remaining;
} CoJob;

static void coroutine_fn job_entry(void *opaque)
{
    CoJob *job = opaque;

    job->fn(job->f, job->arg);
    (*job->remaining)--;
}

/* Starts n coroutines running fn(f, args + i * arg_size) and polls until all finish. */
static void run_jobs(Fixture *f, CoFn *fn, void *args, size_t arg_size, int n)
{
    CoJob *jobs = calloc(n, sizeof(*jobs));
    int remaining = n;

    for (int i = 0; i < n; i++) {
        jobs[i] = (CoJob){ f, fn, (char *)args + i * arg_size, &remaining };
        aio_co_enter(f->ctx, coroutine_create(job_entry, &jobs[i]));
    }
    while (remaining > 0) {
        aio_poll(f->ctx, true);
    }
    free(jobs);
}

static void run_one(Fixture *f, CoFn *fn, void *arg)
{
    run_jobs(f, fn, arg, 0, 1);
}

/* ---------------------------------------------------------------------- */
/* Fixture */

static int fixture_setup(void **state)
{
    EngineCase *cfg = *state;
    Fixture *f = calloc(1, sizeof(*f));
    Error *err = NULL;

    f->cfg = *cfg;
    f->fd = scratch_open(cfg->direct);
    if (f->fd < 0) {
        free(f);
        return -1;
    }
    assert_int_equal(ftruncate(f->fd, FILE_SIZE), 0);
    f->ctx = test_ctx_new();
    f->e = aio_get_engine(f->ctx, cfg->type, true, &err);
    if (!f->e) {
        print_message("%s\n", error_get_pretty(err));
        error_free(err);
        test_ctx_free(f->ctx);
        close(f->fd);
        free(f);
        return -1;
    }
    assert_int_equal(aio_engine_type(f->e), cfg->type);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;

    test_ctx_free(f->ctx);
    close(f->fd);
    free(f);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Reads and writes */

typedef struct RwArg {
    unsigned index;  /* block index and pattern seed */
    size_t len;
    int64_t ret;
    bool ok;
} RwArg;

/* Writes a block as two iovecs, reads it back as three, compares. */
static void coroutine_fn rw_block(Fixture *f, void *opaque)
{
    RwArg *a = opaque;
    uint8_t *wbuf = buf_alloc(a->len), *rbuf = buf_alloc(a->len);
    int64_t off = (int64_t)a->index * a->len;
    struct iovec wiov[2] = { { wbuf, 1024 }, { wbuf + 1024, a->len - 1024 } };
    struct iovec riov[3] = { { rbuf, 512 }, { rbuf + 512, 2560 }, { rbuf + 3072, a->len - 3072 } };

    fill_pattern(wbuf, a->len, a->index);
    memset(rbuf, 0xee, a->len);
    a->ret = aio_co_pwritev(f->e, f->fd, off, wiov, 2);
    if (a->ret == (int64_t)a->len) {
        a->ret = aio_co_preadv(f->e, f->fd, off, riov, 3);
    }
    a->ok = a->ret == (int64_t)a->len && check_pattern(rbuf, a->len, a->index);
    free(wbuf);
    free(rbuf);
}

static void test_aio_engine_read_write_verify(void **state)
{
    Fixture *f = *state;

    for (unsigned i = 0; i < 16; i++) {
        RwArg a = { .index = i * 3, .len = BLK };

        run_one(f, rw_block, &a);
        assert_int_equal(a.ret, BLK);
        assert_true(a.ok);
    }
}

/* qd coroutines write distinct blocks, then qd coroutines read and verify them. */
static void run_concurrent(Fixture *f, int qd)
{
    RwArg *args = calloc(qd, sizeof(*args));
    AioEngineStats st;

    aio_engine_reset_stats(f->e);
    for (int i = 0; i < qd; i++) {
        args[i] = (RwArg){ .index = (unsigned)(qd - 1 - i) * 2, .len = BLK };
    }
    run_jobs(f, rw_block, args, sizeof(*args), qd);
    for (int i = 0; i < qd; i++) {
        assert_int_equal(args[i].ret, BLK);
        assert_true(args[i].ok);
    }
    aio_engine_get_stats(f->e, &st);
    /* Every coroutine submitted before the loop flushed: they left together. */
    assert_true(st.max_batch > 1);
    assert_int_equal(st.reqs_submitted, 2 * (uint64_t)qd);
    free(args);
}

static void test_aio_engine_concurrent_qd32(void **state)
{
    run_concurrent(*state, 32);
}

static void test_aio_engine_concurrent_qd128(void **state)
{
    run_concurrent(*state, 128);
}

/* More requests than the ring/context holds: the rest wait and still complete. */
static void test_aio_engine_concurrent_beyond_depth(void **state)
{
    run_concurrent(*state, 512);
}

typedef struct EofArg {
    int64_t off;
    size_t len;
    int64_t ret;
} EofArg;

static void coroutine_fn read_at(Fixture *f, void *opaque)
{
    EofArg *a = opaque;
    uint8_t *buf = buf_alloc(a->len);
    struct iovec iov = { buf, a->len };

    a->ret = aio_co_preadv(f->e, f->fd, a->off, &iov, 1);
    free(buf);
}

static void test_aio_engine_short_read_at_eof(void **state)
{
    Fixture *f = *state;
    EofArg a = { .off = FILE_SIZE - BLK, .len = 4 * BLK };
    EofArg past = { .off = FILE_SIZE + BLK, .len = BLK };

    run_one(f, read_at, &a);
    assert_int_equal(a.ret, BLK);
    run_one(f, read_at, &past);
    assert_int_equal(past.ret, 0);
}

/* ---------------------------------------------------------------------- */
/* fsync, fdatasync, fallocate */

typedef struct SyncArg {
    int ret_write, ret_fdatasync, ret_fsync, ret_punch, ret_read, ret_extend;
    bool zeroes, intact;
} SyncArg;

#define SYNC_LEN (16 * BLK)

static void coroutine_fn sync_ops(Fixture *f, void *opaque)
{
    SyncArg *a = opaque;
    uint8_t *buf = buf_alloc(SYNC_LEN), *expect = buf_alloc(SYNC_LEN);
    struct iovec iov = { buf, SYNC_LEN };

    fill_pattern(expect, SYNC_LEN, 77);
    memcpy(buf, expect, SYNC_LEN);
    a->ret_write = (int)aio_co_pwritev(f->e, f->fd, 0, &iov, 1);
    a->ret_fdatasync = aio_co_fdatasync(f->e, f->fd);
    a->ret_fsync = aio_co_fsync(f->e, f->fd);
    a->ret_punch = aio_co_fallocate(f->e, f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                    4 * BLK, 4 * BLK);
    memset(buf, 0xee, SYNC_LEN);
    a->ret_read = (int)aio_co_preadv(f->e, f->fd, 0, &iov, 1);
    a->zeroes = true;
    for (size_t i = 4 * BLK; i < 8 * BLK; i++) {
        a->zeroes &= buf[i] == 0;
    }
    /* Outside the hole the data must be untouched. */
    memcpy(buf + 4 * BLK, expect + 4 * BLK, 4 * BLK);
    a->intact = memcmp(buf, expect, SYNC_LEN) == 0;
    a->ret_extend = aio_co_fallocate(f->e, f->fd, 0, FILE_SIZE, 2 * BLK);
    free(expect);
    free(buf);
}

static void test_aio_engine_fsync_fdatasync_fallocate(void **state)
{
    Fixture *f = *state;
    SyncArg a = { 0 };
    struct stat st;

    run_one(f, sync_ops, &a);
    assert_int_equal(a.ret_write, SYNC_LEN);
    assert_int_equal(a.ret_fdatasync, 0);
    assert_int_equal(a.ret_fsync, 0);
    assert_int_equal(a.ret_punch, 0);
    assert_int_equal(a.ret_read, SYNC_LEN);
    assert_true(a.zeroes);
    assert_true(a.intact);
    assert_int_equal(a.ret_extend, 0);
    assert_int_equal(fstat(f->fd, &st), 0);
    assert_int_equal(st.st_size, FILE_SIZE + 2 * BLK);
}

/* ---------------------------------------------------------------------- */
/* Errors */

typedef struct ErrArg {
    int fd;
    size_t misalign;
    int64_t ret;
} ErrArg;

static void coroutine_fn read_err(Fixture *f, void *opaque)
{
    ErrArg *a = opaque;
    uint8_t *buf = buf_alloc(2 * BLK);
    struct iovec iov = { buf + a->misalign, BLK };

    a->ret = aio_co_preadv(f->e, a->fd, 0, &iov, 1);
    free(buf);
}

static void test_aio_engine_bad_fd_is_ebadf(void **state)
{
    Fixture *f = *state;
    ErrArg a = { .fd = dup(f->fd) };

    close(a.fd);
    run_one(f, read_err, &a);
    assert_int_equal(a.ret, -EBADF);
}

static void test_aio_engine_direct_misaligned_is_einval(void **state)
{
    Fixture *f = *state;
    ErrArg a = { .fd = f->fd, .misalign = 1 };

    RwArg data = { .index = 0, .len = BLK };

    if (!f->cfg.direct) {
        skip();
    }
    /* Holes read as zeroes without alignment checks: give the block data first. */
    run_one(f, rw_block, &data);
    assert_true(data.ok);
    run_one(f, read_err, &a);
    assert_int_equal(a.ret, -EINVAL);
}

/* ---------------------------------------------------------------------- */
/* An engine of an IOThread's context */

typedef struct IoThreadJob {
    Fixture sub;        /* ctx and engine of the IOThread, fd of the test */
    AioContext *main_ctx;
    RwArg args[16];
    bool engine_ok;
    int done;           /* set in the main context */
} IoThreadJob;

static void set_done(void *opaque)
{
    ((IoThreadJob *)opaque)->done = 1;
}

static void coroutine_fn iothread_job(void *opaque)
{
    IoThreadJob *job = opaque;

    /* Created from the context's own thread, as a driver opening there would. */
    job->sub.e = aio_get_engine(job->sub.ctx, job->sub.cfg.type, true, NULL);
    job->engine_ok = job->sub.e && aio_engine_type(job->sub.e) == job->sub.cfg.type;
    for (int i = 0; job->engine_ok && i < 16; i++) {
        job->args[i] = (RwArg){ .index = 100 + i, .len = BLK };
        rw_block(&job->sub, &job->args[i]);
    }
    aio_bh_schedule_oneshot(job->main_ctx, set_done, job);
}

static void test_aio_engine_in_iothread(void **state)
{
    Fixture *f = *state;
    IOThread *t = iothread_new("engine-test", NULL);
    IoThreadJob job = { .sub = { .cfg = f->cfg, .fd = f->fd }, .main_ctx = f->ctx };

    assert_non_null(t);
    job.sub.ctx = iothread_get_aio_context(t);
    aio_co_schedule(job.sub.ctx, coroutine_create(iothread_job, &job));
    while (!job.done) {
        aio_poll(f->ctx, true);
    }
    iothread_join(t);
    assert_true(job.engine_ok);
    for (int i = 0; i < 16; i++) {
        assert_int_equal(job.args[i].ret, BLK);
        assert_true(job.args[i].ok);
    }
}

/* ---------------------------------------------------------------------- */
/* Plugging */

#define PLUG_REQS 64

static void test_aio_engine_plug_batches(void **state)
{
    Fixture *f = *state;
    EofArg args[PLUG_REQS];
    CoJob jobs[PLUG_REQS];
    AioEngineStats st;
    int remaining = PLUG_REQS;

    aio_engine_reset_stats(f->e);
    aio_io_plug(f->ctx);
    aio_io_plug(f->ctx); /* nested */
    for (int i = 0; i < PLUG_REQS; i++) {
        args[i] = (EofArg){ .off = (int64_t)i * BLK, .len = BLK };
        jobs[i] = (CoJob){ f, read_at, &args[i], &remaining };
        aio_co_enter(f->ctx, coroutine_create(job_entry, &jobs[i]));
    }
    /* A loop iteration while plugged must not submit anything. */
    aio_poll(f->ctx, false);
    aio_io_unplug(f->ctx);
    aio_poll(f->ctx, false);
    aio_engine_get_stats(f->e, &st);
    assert_int_equal(st.submit_calls, 0);
    aio_io_unplug(f->ctx);
    aio_engine_get_stats(f->e, &st);
    assert_int_equal(st.submit_calls, 1);
    assert_int_equal(st.reqs_submitted, PLUG_REQS);
    while (remaining > 0) {
        aio_poll(f->ctx, true);
    }
    for (int i = 0; i < PLUG_REQS; i++) {
        assert_int_equal(args[i].ret, BLK);
    }
}

/* ---------------------------------------------------------------------- */
/* Selection and fallback */

static void test_aio_engine_names_parse(void **state)
{
    AioEngineType t;

    assert_int_equal(aio_engine_type_parse("io_uring", &t), 0);
    assert_int_equal(t, AIO_ENGINE_IO_URING);
    assert_int_equal(aio_engine_type_parse("native", &t), 0);
    assert_int_equal(t, AIO_ENGINE_NATIVE);
    assert_int_equal(aio_engine_type_parse("threads", &t), 0);
    assert_int_equal(t, AIO_ENGINE_THREADS);
    assert_int_equal(aio_engine_type_parse("auto", &t), 0);
    assert_int_equal(t, AIO_ENGINE_AUTO);
    assert_int_equal(aio_engine_type_parse("posix", &t), -EINVAL);
    assert_string_equal(aio_engine_type_name(AIO_ENGINE_NATIVE), "native");
}

static void test_aio_engine_same_engine_per_context(void **state)
{
    AioContext *ctx = test_ctx_new();
    AioEngine *a = aio_get_engine(ctx, AIO_ENGINE_THREADS, true, NULL);
    AioEngine *b = aio_get_engine(ctx, AIO_ENGINE_THREADS, true, NULL);
    AioEngine *autoe = aio_get_engine(ctx, AIO_ENGINE_AUTO, false, NULL);

    assert_non_null(a);
    assert_ptr_equal(a, b);
    assert_non_null(autoe);
    assert_ptr_equal(autoe, aio_get_engine(ctx, AIO_ENGINE_AUTO, false, NULL));
    test_ctx_free(ctx);
}

#if defined(__x86_64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define TEST_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#define CHILD_SKIP 77

/* Makes io_uring_setup fail with ENOSYS and, if asked, io_setup with EPERM. */
static int install_seccomp(bool block_io_setup)
{
#ifdef TEST_AUDIT_ARCH
    uint32_t io_setup_nr = block_io_setup ? __NR_io_setup : 0xffffffffu;
    struct sock_filter insns[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TEST_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, io_setup_nr, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = { .len = sizeof(insns) / sizeof(insns[0]), .filter = insns };

    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        return -errno;
    }
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) < 0) {
        return -errno;
    }
    return 0;
#else
    return -ENOTSUP;
#endif
}

typedef struct Warnings {
    char text[2048];
    int count;
} Warnings;

static void capture_warning(void *opaque, const char *msg)
{
    Warnings *w = opaque;
    size_t used = strlen(w->text);

    snprintf(w->text + used, sizeof(w->text) - used, "%s\n", msg);
    w->count++;
}

static void coroutine_fn fallback_rw(Fixture *f, void *opaque)
{
    rw_block(f, opaque);
}

/*
 * Child side of the fallback tests: returns 0 when every check passed, else
 * the number of the first failed check.
 */
static int fallback_child(bool block_io_setup)
{
    AioContextOpts opts = { .fdmon = AIO_FDMON_EPOLL };
    AioEngineType want = block_io_setup ? AIO_ENGINE_THREADS : AIO_ENGINE_NATIVE;
    Warnings w = { .count = 0 };
    Fixture f = { .fd = scratch_open(false) };
    Error *err = NULL;
    RwArg a = { .index = 5, .len = BLK };

    if (install_seccomp(block_io_setup) < 0) {
        return CHILD_SKIP;
    }
    if (!COBLK_HAVE_LIBAIO) {
        want = AIO_ENGINE_THREADS;
    }
    coblk_set_warn_handler(capture_warning, &w);
    f.ctx = aio_context_new_opts(&opts, NULL);
    if (!f.ctx || f.fd < 0 || ftruncate(f.fd, FILE_SIZE) < 0) {
        return 1;
    }
    aio_context_set_current(f.ctx);
    if (aio_get_engine(f.ctx, AIO_ENGINE_IO_URING, true, &err) != NULL) {
        return 2;
    }
    if (!err || !strstr(error_get_pretty(err), "io_uring unavailable")) {
        return 3;
    }
    error_free(err);
    if (w.count != 0) {
        return 4;
    }
    f.e = aio_get_engine(f.ctx, AIO_ENGINE_IO_URING, false, NULL);
    if (!f.e || aio_engine_type(f.e) != want) {
        return 5;
    }
    if (!strstr(w.text, COBLK_HAVE_IO_URING
                            ? "io_uring unavailable (io_uring_queue_init: Function not implemented)"
                            : "io_uring unavailable (not built in)") ||
        !strstr(w.text, "falling back to native")) {
        return 6;
    }
    if (block_io_setup && COBLK_HAVE_LIBAIO &&
        (w.count != 2 ||
         !strstr(w.text, "native unavailable (io_setup: Operation not permitted)") ||
         !strstr(w.text, "falling back to threads"))) {
        return 7;
    }
    run_one(&f, fallback_rw, &a);
    if (!a.ok) {
        return 8;
    }
    aio_context_unref(f.ctx);
    return 0;
}

static void run_fallback_case(bool block_io_setup)
{
    pid_t pid = fork();
    int status = 0;

    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(fallback_child(block_io_setup));
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == CHILD_SKIP) {
        skip();
    }
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_aio_engine_fallback_io_uring_to_native(void **state)
{
    run_fallback_case(false);
}

static void test_aio_engine_fallback_to_threads(void **state)
{
    run_fallback_case(true);
}

/* ---------------------------------------------------------------------- */

#define ENGINE_TESTS(cfg)                                                                     \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_read_write_verify, fixture_setup, \
                                             fixture_teardown, cfg),                           \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_concurrent_qd32, fixture_setup,   \
                                             fixture_teardown, cfg),                           \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_concurrent_qd128, fixture_setup,  \
                                             fixture_teardown, cfg),                           \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_concurrent_beyond_depth,          \
                                             fixture_setup, fixture_teardown, cfg),            \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_short_read_at_eof, fixture_setup, \
                                             fixture_teardown, cfg),                           \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_fsync_fdatasync_fallocate,        \
                                             fixture_setup, fixture_teardown, cfg),            \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_bad_fd_is_ebadf, fixture_setup,   \
                                             fixture_teardown, cfg),                           \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_direct_misaligned_is_einval,      \
                                             fixture_setup, fixture_teardown, cfg),            \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_plug_batches, fixture_setup,      \
                                             fixture_teardown, cfg),                           \
    cmocka_unit_test_prestate_setup_teardown(test_aio_engine_in_iothread, fixture_setup,       \
                                             fixture_teardown, cfg)

static EngineCase cases[] = {
    { AIO_ENGINE_IO_URING, false }, { AIO_ENGINE_IO_URING, true },
    { AIO_ENGINE_NATIVE, false },   { AIO_ENGINE_NATIVE, true },
    { AIO_ENGINE_THREADS, false },  { AIO_ENGINE_THREADS, true },
};

static const char *const case_names[] = {
    "io_uring buffered", "io_uring O_DIRECT", "native buffered",
    "native O_DIRECT",   "threads buffered",  "threads O_DIRECT",
};

static int run_engine_group(int i)
{
    const struct CMUnitTest tests[] = { ENGINE_TESTS(&cases[i]) };
    AioContext *probe = aio_context_new(NULL);
    bool have = aio_get_engine(probe, cases[i].type, true, NULL) != NULL;
    int fd = scratch_open(cases[i].direct);

    aio_context_unref(probe);
    aio_context_set_current(NULL);
    if (fd >= 0) {
        close(fd);
    }
    if (!have || fd < 0) {
        print_message("[  SKIPPED ] %s: %s\n", case_names[i],
                      have ? "no directory supports O_DIRECT" : "engine unavailable");
        return 0;
    }
    return cmocka_run_group_tests_name(case_names[i], tests, NULL, NULL);
}

int main(void)
{
    /* Fork-based tests first, while the process has a single thread. */
    const struct CMUnitTest general[] = {
        cmocka_unit_test(test_aio_engine_fallback_io_uring_to_native),
        cmocka_unit_test(test_aio_engine_fallback_to_threads),
        cmocka_unit_test(test_aio_engine_names_parse),
        cmocka_unit_test(test_aio_engine_same_engine_per_context),
    };
    int failed = cmocka_run_group_tests_name("selection", general, NULL, NULL);

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        failed |= run_engine_group((int)i);
    }
    return failed;
}
