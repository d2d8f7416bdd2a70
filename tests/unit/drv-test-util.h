/*
 * Helpers shared by the driver tests (test-file.c, test-raw.c, the format tests):
 * scratch files in the build directory, opening from an option string,
 * running a coroutine to completion, and data patterns.
 */
#ifndef COBLK_DRV_TEST_UTIL_H
#define COBLK_DRV_TEST_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <coblk/block-driver.h>

/* Runs a shell command (printf-style); returns its exit status, -1 if it died. */
static inline int drv_test_sh(const char *fmt, ...) COBLK_PRINTF(1, 2);
static inline int drv_test_sh(const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;
    int n, st;

    va_start(ap, fmt);
    n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(cmd)) {
        fail_msg("drv_test_sh: command too long (%d bytes)", n);
    }
    st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Reads len bytes at off of the file at path; the test fails if it cannot. */
static inline void drv_test_pread(const char *path, int64_t off, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY);

    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, (off_t)off), (ssize_t)len);
    close(fd);
}

/* The directory for scratch images: $COBLK_TEST_DIR, else the current one. */
static inline const char *drv_test_dir(void)
{
    const char *d = getenv("COBLK_TEST_DIR");

    return d && *d ? d : ".";
}

/* Builds "<dir>/coblk-<tag>-<pid>.img" into path. */
static inline void drv_test_path(char *path, size_t size, const char *tag)
{
    snprintf(path, size, "%s/coblk-%s-%d.img", drv_test_dir(), tag, (int)getpid());
}

/* Creates (or truncates) path with len bytes of pattern seed (0: sparse zeroes). */
static inline void drv_test_make_file(const char *path, int64_t len, uint8_t seed)
{
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, len), 0);
    if (seed) {
        uint8_t *buf = malloc((size_t)len);

        assert_non_null(buf);
        for (int64_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)(seed + i * 7 + i / 4096);
        }
        assert_int_equal(pwrite(fd, buf, (size_t)len, 0), len);
        free(buf);
    }
    close(fd);
}

/* Fills buf with a pattern that differs per byte and per seed. */
static inline void drv_test_pattern(uint8_t *buf, size_t len, uint8_t seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed ^ (i * 13) ^ (i >> 9));
    }
}

/* True if O_DIRECT works on a file in dir (tmpfs refuses it). */
static inline bool drv_test_direct_ok(const char *dir)
{
    char path[4096];
    int fd;

    snprintf(path, sizeof(path), "%s/coblk-direct-probe-%d", dir, (int)getpid());
    fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0644);
    if (fd >= 0) {
        close(fd);
    }
    unlink(path);
    return fd >= 0;
}

/*
 * Opens a BlockBackend from a keyval option string. On failure returns NULL
 * and, when errmsg is non-NULL, copies the error message there.
 */
static inline BlockBackend *drv_test_open(const char *optstr, int flags, char *errmsg,
                                          size_t errlen)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    assert_non_null(o);
    if (bopts_parse_keyval(o, optstr, NULL, &err) < 0) {
        fail_msg("bad option string '%s': %s", optstr, error_get_pretty(err));
    }
    blk = blk_new_open(NULL, o, flags, &err);
    if (!blk) {
        if (errmsg) {
            snprintf(errmsg, errlen, "%s", error_get_pretty(err));
        }
        error_free(err);
    }
    return blk;
}

/* As drv_test_open() but the open must succeed. */
static inline BlockBackend *drv_test_open_ok(const char *optstr, int flags)
{
    char msg[1024];
    BlockBackend *blk = drv_test_open(optstr, flags, msg, sizeof(msg));

    if (!blk) {
        fail_msg("open '%s' failed: %s", optstr, msg);
    }
    return blk;
}

/* Opening must fail with a message containing want. */
static inline void drv_test_open_fails(const char *optstr, int flags, const char *want)
{
    char msg[1024] = "";
    BlockBackend *blk = drv_test_open(optstr, flags, msg, sizeof(msg));

    if (blk) {
        blk_unref(blk);
        fail_msg("open '%s' succeeded; expected an error with '%s'", optstr, want);
    }
    if (!strstr(msg, want)) {
        fail_msg("open '%s' failed with '%s'; expected '%s'", optstr, msg, want);
    }
}

/*
 * Creates an image of format fmt at path from "k=v,..." create options.
 * Returns 0 or -errno; on failure copies the message to errmsg when it is
 * non-NULL.
 */
static inline int drv_test_create(const char *fmt, const char *path, const char *optstr,
                                  char *errmsg, size_t errlen)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int ret;

    assert_int_equal(bopts_parse_keyval(o, optstr, NULL, NULL), 0);
    ret = bdrv_create(fmt, path, o, &err);
    if (ret < 0 && errmsg) {
        snprintf(errmsg, errlen, "%s", error_get_pretty(err));
    }
    error_free(err);
    return ret;
}

/* Opens the fmt image at path over the file protocol; the open must succeed. */
static inline BlockBackend *drv_test_open_image(const char *fmt, const char *path, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, path);
    return drv_test_open_ok(opts, flags);
}

/* Runs fn(opaque) in a coroutine in ctx and polls until it returns. */
typedef struct DrvTestCo {
    void (*fn)(void *opaque);
    void *opaque;
    volatile bool done;
} DrvTestCo;

static void coroutine_fn drv_test_co_entry(void *opaque)
{
    DrvTestCo *c = opaque;

    c->fn(c->opaque);
    c->done = true;
}

static inline void drv_test_run_co(AioContext *ctx, void (*fn)(void *), void *opaque)
{
    DrvTestCo c = { .fn = fn, .opaque = opaque, .done = false };
    Coroutine *co = coroutine_create(drv_test_co_entry, &c);

    aio_co_enter(ctx, co);
    while (!c.done) {
        aio_poll(ctx, true);
    }
}

/*
 * An AIO request whose completion stores its result and counts *pending
 * down: start several with drv_test_req_done as their callback, then
 * drv_test_wait() for all of them.
 */
typedef struct DrvTestReq {
    int *pending;
    int ret;
    IOVector qiov;
} DrvTestReq;

static inline void drv_test_req_done(void *opaque, int ret)
{
    DrvTestReq *r = (DrvTestReq *)opaque;

    r->ret = ret;
    (*r->pending)--;
}

/* Polls blk's context until *pending is 0. */
static inline void drv_test_wait(BlockBackend *blk, const int *pending)
{
    while (*pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
}

/* Polls a while without blocking (enough for any runnable request to end). */
static inline void drv_test_poll_some(BlockBackend *blk)
{
    for (int i = 0; i < 50; i++) {
        aio_poll(blk_get_aio_context(blk), false);
    }
}

#endif /* COBLK_DRV_TEST_UTIL_H */
