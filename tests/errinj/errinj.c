/*
 * Error-injection sweep for a writable format (in the spirit of QEMU's
 * iotest 026):
 *
 *   errinj FORMAT DIR [create-options] [recover]
 *
 * A small allocating workload (writes, some unaligned or across blocks,
 * write-zeroes, a discard, overwrites, guest flushes) runs on a fresh image
 * opened over blkdebug. A dry run through blklogwrites counts the writes W
 * and flushes F the format driver issues to its file; then for iotype in
 * {write, flush}, errno in {EIO, ENOSPC}, mode in {transient (once=on),
 * persistent (every later request of the iotype fails too)} and every k in
 * [0, W] (or [0, F]), blkdebug's inject-error.0.after=k fails the (k+1)-th
 * request. The workload stops at the first guest request that fails; it
 * must fail with the injected errno. Then, after a guest flush and close:
 *  - `qemu-img check` (when it knows the format) and coblk's check find no
 *    corruption (leaks are allowed);
 *  - the image opens read-write again;
 *  - transient: every guest request acknowledged before the failure reads
 *    back, and each sector of the failed request holds its old or new data;
 *    persistent: each sector holds its data as of the last successful guest
 *    flush, or the data of a later acknowledged request or the failed one.
 * With "recover", the image is first opened read-write and closed through
 * coblk, for formats whose recovery is designed to happen at the next open
 * (a vhdx log replay, qcow2 lazy refcounts), as in tests/crash/powercut.c.
 * With "resize", the image starts at half the guest size and the workload
 * grows it to 300 MiB (vdi and vpc move data blocks to make room for their
 * tables) between writes below and past the old end; an image whose resize
 * failed keeps the old size (its new area reads as zeroes) or the new one.
 * Exit 0 = pass, 1 = a violation (printed), 77 = format not built in.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

#define GUEST_SIZE (4 << 20)
#define SECTOR 512

enum { OP_WRITE, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_RESIZE };

typedef struct GuestOp {
    int kind;
    int64_t off, len;
} GuestOp;

/* The workload: allocating, unaligned, block-crossing, zeroing, rewriting. */
static const GuestOp workload[] = {
    { OP_WRITE, 0, 4096 },
    { OP_WRITE, (1 << 20) + 512, 512 },
    { OP_WRITE, (2 << 20) - 4096, 8192 },          /* crosses a 1-2 MiB boundary */
    { OP_FLUSH, 0, 0 },
    { OP_WRITE, (3 << 20) + 1000, 100 },           /* unaligned: read-modify-write */
    { OP_ZERO, 1 << 20, 65536 },
    { OP_WRITE, 512 << 10, 65536 },
    { OP_DISCARD, (2 << 20), 1 << 20 },
    { OP_FLUSH, 0, 0 },
    { OP_WRITE, 0, 4096 },                         /* overwrite allocated data */
    { OP_WRITE, (3 << 20) + (512 << 10), 128 << 10 },
    { OP_ZERO, (3 << 20), 4096 },
    { OP_WRITE, GUEST_SIZE - 512, 512 },
    { OP_FLUSH, 0, 0 },
};

/* The resize workload: the image is created at 2 MiB; off of OP_RESIZE is the new size. */
#define GROWN (300LL << 20)
static const GuestOp workload_resize[] = {
    { OP_WRITE, 0, 4096 },
    { OP_WRITE, (1 << 20) + 512, 512 },
    { OP_WRITE, (2 << 20) - 4096, 4096 },          /* the old last sectors */
    { OP_FLUSH, 0, 0 },
    { OP_RESIZE, GROWN, 0 },
    { OP_WRITE, (2 << 20) + 1000, 100 },           /* past the old end, unaligned */
    { OP_WRITE, (3 << 20) - 4096, 8192 },
    { OP_FLUSH, 0, 0 },
    { OP_WRITE, 0, 4096 },
    { OP_WRITE, GUEST_SIZE - 512, 512 },
    { OP_FLUSH, 0, 0 },
};
#define RESIZE_OP 4

static const GuestOp *wl = workload;
static int n_ops = (int)(sizeof(workload) / sizeof(workload[0]));
static bool resize;

static const char *fmt;
static char img[4000], base[4096], logf[4096];
static uint8_t *cur, *snap, *got, *failed_new;
static uint8_t *buf;
static int failures;
static bool recover;

static void fail(const char *fmtstr, ...) COBLK_PRINTF(1, 2);

static void fail(const char *fmtstr, ...)
{
    va_list ap;

    va_start(ap, fmtstr);
    fprintf(stderr, "errinj %s: FAIL: ", fmt);
    vfprintf(stderr, fmtstr, ap);
    fputc('\n', stderr);
    va_end(ap);
    failures++;
}

static void die(const char *what)
{
    fprintf(stderr, "errinj %s: %s\n", fmt, what);
    exit(1);
}

static uint8_t op_byte(int op, int64_t o)
{
    uint64_t x = (uint64_t)o * 0x9e3779b1u + (uint64_t)(op + 1) * 0x85ebca6bu;

    return (uint8_t)(x >> 24 ^ x);
}

static void copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static uint8_t b[1 << 16];
    ssize_t n;

    if (in < 0 || out < 0) {
        die("cannot copy the base image");
    }
    while ((n = read(in, b, sizeof(b))) > 0) {
        if (write(out, b, (size_t)n) != n) {
            die("cannot copy the base image");
        }
    }
    close(in);
    close(out);
}

static BlockBackend *open_opts(const char *opts, int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    if (bopts_parse_keyval(o, opts, NULL, &err) < 0) {
        die(error_get_pretty(err));
    }
    blk = blk_new_open(NULL, o, flags, &err);
    if (!blk) {
        fail("open (%s): %s", opts, error_get_pretty(err));
        error_free(err);
    }
    return blk;
}

/*
 * Runs the workload; returns the index of the first failed op (n_ops if
 * none) with its result in *fret. snap gets the data as of the last
 * successful guest flush, cur the data of every acknowledged op.
 */
static int run_workload(BlockBackend *blk, int *fret)
{
    memset(cur, 0, GUEST_SIZE);
    memset(snap, 0, GUEST_SIZE);
    for (int i = 0; i < n_ops; i++) {
        const GuestOp *op = &wl[i];
        int ret;

        switch (op->kind) {
        case OP_WRITE:
            for (int64_t b = 0; b < op->len; b++) {
                buf[b] = op_byte(i, op->off + b);
            }
            ret = blk_pwrite(blk, op->off, op->len, buf, 0);
            break;
        case OP_ZERO:
            memset(buf, 0, (size_t)op->len);
            ret = blk_pwrite_zeroes(blk, op->off, op->len, BDRV_REQ_MAY_UNMAP);
            break;
        case OP_DISCARD:
            ret = blk_pdiscard(blk, op->off, op->len);
            if (ret == 0) {
                /* Discarded data is undefined: learn what the format has now. */
                ret = blk_pread(blk, op->off, op->len, buf, 0);
            }
            break;
        case OP_RESIZE:
            ret = blk_truncate(blk, op->off, true, PREALLOC_MODE_OFF, 0, NULL);
            break;
        default:
            ret = blk_flush(blk);
            break;
        }
        if (ret < 0) {
            *fret = ret;
            if (op->kind != OP_FLUSH && op->kind != OP_RESIZE) {
                memcpy(failed_new, cur, GUEST_SIZE);
                memcpy(failed_new + op->off, buf, (size_t)op->len);
            }
            return i;
        }
        if (op->kind == OP_FLUSH) {
            memcpy(snap, cur, GUEST_SIZE);
        } else if (op->kind != OP_RESIZE) {
            memcpy(cur + op->off, buf, (size_t)op->len);
        }
    }
    return n_ops;
}

/* ---------------------------------------------------------------------- */
/* Checks */

/* As tests/crash/powercut.c: vdi's header block count ahead of its map is a leak. */
static bool only_vdi_leak(const char *out)
{
    const char *p = out;
    bool any = false;

    if (strcmp(fmt, "vdi") != 0) {
        return false;
    }
    while ((p = strstr(p, "ERROR")) != NULL) {
        unsigned mapped, counted;

        if (sscanf(p, "ERROR: allocated blocks mismatch, is %u, should be %u", &mapped,
                   &counted) != 2 || mapped >= counted) {
            return false;
        }
        any = true;
        p++;
    }
    return any;
}

/* 0 = clean or leaks only, 1 = corruption, 63 = qemu-img cannot check the format. */
static int qemu_check(void)
{
    char cmd[9000], out[8192];
    size_t n;
    FILE *f;
    int st;

    snprintf(cmd, sizeof(cmd), "qemu-img check -f %s '%s' 2>&1", fmt, img);
    f = popen(cmd, "r");
    if (!f) {
        return 63;
    }
    n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    st = pclose(f);
    if (st == -1 || !WIFEXITED(st)) {
        return 63;
    }
    st = WEXITSTATUS(st);
    if (st == 2 && only_vdi_leak(out)) {
        return 0;
    }
    if (st != 0 && st != 3 && st != 63) {
        fputs(out, stderr);
    }
    return st == 0 || st == 3 ? 0 : st == 63 ? 63 : 1;
}

static void quiet(void *opaque, const char *msg)
{
}

static void report(void *opaque, const char *msg)
{
    fprintf(stderr, "  coblk check: %s\n", msg);
}

static bool coblk_check(void)
{
    char opts[8192];
    BdrvCheckResult res = { .report = quiet };
    BlockBackend *blk;
    int ret;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, img);
    blk = open_opts(opts, 0);
    if (!blk) {
        return false;
    }
    ret = bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE);
    if (ret == 0 && (res.corruptions || res.check_errors)) {
        res = (BdrvCheckResult){ .report = report };
        bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE);
    }
    blk_unref(blk);
    if (ret < 0 && ret != -ENOTSUP) {
        fail("coblk check could not run: %s", strerror(-ret));
        return false;
    }
    if (ret == 0 && (res.corruptions || res.check_errors)) {
        fail("coblk check: %d corruptions, %d check errors", res.corruptions,
             res.check_errors);
        return false;
    }
    return true;
}

/* Sector s of the image read back is allowed (see the file comment). */
static bool sector_ok(int64_t s, bool transient, int failed)
{
    const uint8_t *g = got + s * SECTOR;
    bool in_failed = failed < n_ops && wl[failed].kind != OP_FLUSH &&
                     wl[failed].kind != OP_RESIZE &&
                     s * SECTOR < wl[failed].off + wl[failed].len &&
                     (s + 1) * SECTOR > wl[failed].off;

    if (!memcmp(g, cur + s * SECTOR, SECTOR)) {
        return true;
    }
    if (in_failed && wl[failed].kind == OP_DISCARD) {
        return true; /* a discard leaves any content */
    }
    if (in_failed && !memcmp(g, failed_new + s * SECTOR, SECTOR)) {
        return true;
    }
    return !transient && !memcmp(g, snap + s * SECTOR, SECTOR);
}

static void verify(const char *what, bool transient, int failed, bool *can_qemu_check)
{
    char opts[8192];
    BlockBackend *blk;
    int64_t len;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, img);
    if (recover) {
        blk = open_opts(opts, BDRV_O_RDWR);
        if (!blk) {
            fprintf(stderr, "  (recovery open after %s)\n", what);
            return;
        }
        blk_unref(blk);
    }
    if (*can_qemu_check) {
        int c = qemu_check();

        if (c == 63) {
            *can_qemu_check = false;
        } else if (c) {
            fail("%s: qemu-img check finds corruption", what);
            return;
        }
    }
    if (!coblk_check()) {
        fprintf(stderr, "  (after %s)\n", what);
        return;
    }
    blk = open_opts(opts, BDRV_O_RDWR);
    if (!blk) {
        fprintf(stderr, "  (after %s)\n", what);
        return;
    }
    len = blk_getlength(blk);
    /* The resize acknowledged: the new size; else the old (half) one or the new one. */
    if (len < (resize && failed > RESIZE_OP ? GROWN : resize ? GUEST_SIZE / 2 : GUEST_SIZE)) {
        fail("%s: the image has %lld bytes", what, (long long)len);
        len = len < 0 ? 0 : len;
    }
    len = len < GUEST_SIZE ? len : GUEST_SIZE;
    memset(got + len, 0, (size_t)(GUEST_SIZE - len));
    if (blk_pread(blk, 0, len, got, 0) < 0) {
        fail("%s: the image cannot be read back", what);
    } else {
        for (int64_t s = 0; s < GUEST_SIZE / SECTOR; s++) {
            if (!sector_ok(s, transient, failed)) {
                fail("%s: guest sector %lld holds data that was not acknowledged%s", what,
                     (long long)s, transient ? "" : " or flushed");
                break;
            }
        }
    }
    blk_unref(blk);
}

/* One injected run; returns true if a guest request saw the error. */
static bool run_one(const char *iotype, int err, bool transient, int k, bool *can_qemu_check)
{
    char opts[16384], what[256];
    BlockBackend *blk;
    int failed, fret = 0;

    snprintf(what, sizeof(what), "%s %d of the driver fails with %s (%s)", iotype, k + 1,
             strerrorname_np(err), transient ? "once" : "and every later one");
    copy_file(base, img);
    snprintf(opts, sizeof(opts),
             "driver=%s,discard=unmap,file.driver=blkdebug,file.image.driver=file,"
             "file.image.filename=%s,file.image.cache.no-flush=on,file.inject-error.0.event=none,"
             "file.inject-error.0.iotype=%s,file.inject-error.0.errno=%d,"
             "file.inject-error.0.after=%d,file.inject-error.0.once=%s",
             fmt, img, iotype, err, k, transient ? "on" : "off");
    blk = open_opts(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
    if (!blk) {
        return false;
    }
    failed = run_workload(blk, &fret);
    if (failed < n_ops) {
        if (fret != -err) {
            fail("%s: guest op %d failed with %s, not the injected error", what, failed,
                 strerror(-fret));
        }
        blk_flush(blk);
    }
    blk_unref(blk);
    verify(what, transient, failed, can_qemu_check);
    return failed < n_ops;
}

/* Dry run through blklogwrites: writes and flushes the driver issues. */
static void count_requests(int *nw, int *nf)
{
    char opts[16384], err[256];
    BlockBackend *blk;
    Wlog log;
    int fret;

    copy_file(base, img);
    close(open(logf, O_CREAT | O_TRUNC | O_WRONLY, 0644));
    snprintf(opts, sizeof(opts),
             "driver=%s,discard=unmap,file.driver=blklogwrites,file.file.driver=file,"
             "file.file.filename=%s,file.log.driver=file,file.log.filename=%s", fmt, img, logf);
    blk = open_opts(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
    if (!blk || run_workload(blk, &fret) != n_ops) {
        die("the workload fails without injected errors");
    }
    blk_unref(blk);
    if (wlog_open(&log, logf, err, sizeof(err)) < 0) {
        die(err);
    }
    *nw = 0;
    for (uint64_t i = 0; i < log.nr_entries; i++) {
        /* Writes, write-zeroes and discards: an upper bound of the writes. */
        *nw += !(log.e[i].flags & (LOGW_FLUSH | LOGW_MARK));
    }
    *nf = (int)wlog_count_flushes(&log);
    wlog_close(&log);
}

int main(int argc, char **argv)
{
    static const char *const iotypes[] = { "write", "flush" };
    static const int errs[] = { EIO, ENOSPC };
    const char *dir, *copts;
    bool can_qemu_check = system("qemu-img --version >/dev/null 2>&1") == 0;
    char opts[8192];
    BlockOpts *o;
    Error *e = NULL;
    int nw, nf, runs = 0, seen = 0;

    if (argc < 3) {
        fprintf(stderr, "usage: errinj FORMAT DIR [create-options] [recover] [resize]\n");
        return 2;
    }
    fmt = argv[1];
    dir = argv[2];
    copts = argc > 3 ? argv[3] : "";
    for (int i = 4; i < argc; i++) {
        recover |= strcmp(argv[i], "recover") == 0;
        resize |= strcmp(argv[i], "resize") == 0;
    }
    if (resize) {
        wl = workload_resize;
        n_ops = (int)(sizeof(workload_resize) / sizeof(workload_resize[0]));
    }
    if (!bdrv_find_format(fmt)) {
        fprintf(stderr, "errinj: format '%s' is not built in; skipping\n", fmt);
        return 77;
    }
    snprintf(img, sizeof(img), "%s/errinj-%s-%d.img", dir, fmt, (int)getpid());
    snprintf(base, sizeof(base), "%s.base", img);
    snprintf(logf, sizeof(logf), "%s.log", img);
    snprintf(opts, sizeof(opts), "size=%d%s%s", resize ? GUEST_SIZE / 2 : GUEST_SIZE,
             *copts ? "," : "", copts);
    o = bopts_new();
    bopts_parse_keyval(o, opts, NULL, NULL);
    if (bdrv_create(fmt, base, o, &e) < 0) {
        fprintf(stderr, "errinj: cannot create a %s image: %s; skipping\n", fmt,
                error_get_pretty(e));
        return 77;
    }
    cur = malloc(GUEST_SIZE);
    snap = malloc(GUEST_SIZE);
    got = malloc(GUEST_SIZE);
    failed_new = malloc(GUEST_SIZE);
    buf = malloc(1 << 20);
    count_requests(&nw, &nf);
    for (int t = 0; t < 2; t++) {
        for (int x = 0; x < 2; x++) {
            for (int mode = 0; mode < 2; mode++) {
                for (int k = 0; k <= (t ? nf : nw); k++) {
                    seen += run_one(iotypes[t], errs[x], mode == 0, k, &can_qemu_check);
                    runs++;
                }
            }
        }
    }
    printf("errinj %s%s: %d driver writes, %d driver flushes in the workload; %d injected runs, "
           "%d with a guest-visible error, %d violations%s\n", fmt, resize ? " (resize)" : "",
           nw, nf, runs, seen,
           failures, can_qemu_check ? "" : " (qemu-img check unavailable)");
    unlink(img);
    unlink(base);
    unlink(logf);
    free(cur);
    free(snap);
    free(got);
    free(failed_new);
    free(buf);
    return failures ? 1 : 0;
}
