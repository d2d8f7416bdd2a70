/*
 * Differential test of a writable format against a raw reference:
 *
 *   difftest FORMAT DIR OPS SEED [chain] [create-options]
 *
 * Random operations run through blkverify (test image vs raw reference;
 * every read is compared): writes of random sizes at random offsets (many
 * unaligned to the sector), write-zeroes with and without MAY_UNMAP,
 * discards (sent to the test image alone; the range then reads back from
 * the test image into the reference, since discarded data is undefined),
 * flushes, reads, read-only/read-write reopens and full close/open cycles,
 * with a full comparison after each cycle and at the end. With "chain" the
 * image is the top of a backing chain of depth 3 of the same format (base
 * and middle layers get a quarter of the operations each before the next
 * layer is created on top). At the end coblk's check and `qemu-img check`
 * (when it knows the format) must find nothing (no corruption, no leak).
 * Exit 0 = no mismatch, 1 = a mismatch or failure, 77 = format not built in
 * (or it cannot have a backing file).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

#include "drivers/protocol/blkverify.h"

#define GUEST_SIZE (16 << 20)
#define MAX_IO (1 << 20)

static const char *fmt, *copts;
static char ref[1024], layer[3][1024];
static int nlayers;
static uint8_t *buf, *buf2;
static uint64_t seed;
static int64_t size;
static struct {
    long write, zero, zero_unmap, discard, flush, read, reopen_ro, reopen_unsupported, cycle;
    long long bytes_written;
} st;

static void die(const char *fmtstr, const char *arg)
{
    fprintf(stderr, "difftest %s: FAIL: ", fmt);
    fprintf(stderr, fmtstr, arg);
    fputc('\n', stderr);
    exit(1);
}

static uint64_t rnd(void)
{
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    return seed;
}

static BlockBackend *open_str(const char *opts, int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    bopts_parse_keyval(o, opts, NULL, NULL);
    blk = blk_new_open(NULL, o, flags, &err);
    if (!blk) {
        die("open: %s", error_get_pretty(err));
    }
    return blk;
}

/* The top layer over blkverify with the reference. */
static BlockBackend *open_verify(void)
{
    char opts[16384];

    snprintf(opts, sizeof(opts),
             "driver=blkverify,discard=unmap,test.driver=%s,test.file.driver=file,"
             "test.file.filename=%s,test.file.cache.no-flush=on,raw.driver=raw,"
             "raw.file.driver=file,raw.file.filename=%s,raw.file.cache.no-flush=on",
             fmt, layer[nlayers - 1], ref);
    return open_str(opts, BDRV_O_RDWR | BDRV_O_UNMAP);
}

static BlockBackend *child_blk(BlockBackend *blk, const char *name)
{
    for (BdrvChild *c = blk_bs(blk)->children; c; c = c->next) {
        if (!strcmp(c->name, name)) {
            return blk_new_with_bs(c->bs, NULL);
        }
    }
    die("blkverify has no %s child", name);
    return NULL;
}

/* Whole-disk comparison through blkverify (it fails reads that differ). */
static void compare_all(BlockBackend *blk, const char *when)
{
    for (int64_t o = 0; o < size; o += MAX_IO) {
        int64_t n = size - o < MAX_IO ? size - o : MAX_IO;

        if (blk_pread(blk, o, n, buf, 0) < 0) {
            die("the image differs from the reference %s", when);
        }
    }
}

/* A random range: sector-aligned half of the time, else any byte. */
static void pick(int64_t *off, int64_t *len)
{
    uint64_t r = rnd();
    int64_t n = r % 8 == 0 ? (int64_t)(rnd() % MAX_IO) + 1 : (int64_t)(rnd() % 16384) + 1;
    int64_t o = (int64_t)(rnd() % (uint64_t)size);

    if (r & 16) {
        o &= ~511LL;
        n = (n + 511) & ~511LL;
    }
    if (o + n > size) {
        n = size - o;
    }
    *off = o;
    *len = n;
}

/* The test image really is the top of a chain of nlayers images. */
static void check_depth(BlockBackend *blk)
{
    BlockDriverState *bs = bdrv_file_bs(blk_bs(blk));
    int depth = 0;

    for (; bs; bs = bdrv_backing_bs(bs)) {
        depth++;
    }
    if (depth != nlayers) {
        die("the test image's backing chain is not %s layers deep", nlayers == 2 ? "2" : "3");
    }
}

static void discard_one(BlockBackend *blk, int64_t off, int64_t len)
{
    BlockBackend *test = child_blk(blk, "test"), *raw = child_blk(blk, "raw");

    if (blk_pdiscard(test, off, len) < 0 || blk_pread(test, off, len, buf, 0) < 0 ||
        blk_pwrite(raw, off, len, buf, 0) < 0) {
        die("discard through the test image failed%s", "");
    }
    blk_unref(test);
    blk_unref(raw);
}

static BlockBackend *run_ops(BlockBackend *blk, long n)
{
    for (long i = 0; i < n; i++) {
        unsigned k = (unsigned)(rnd() % 100);
        int64_t off, len;
        int ret = 0;

        pick(&off, &len);
        if (k < 40) {
            for (int64_t b = 0; b < len; b++) {
                buf[b] = (uint8_t)(rnd() >> 56);
            }
            ret = blk_pwrite(blk, off, len, buf, 0);
            st.write++;
            st.bytes_written += len;
        } else if (k < 45) {
            ret = blk_pwrite_zeroes(blk, off, len, 0);
            st.zero++;
        } else if (k < 50) {
            ret = blk_pwrite_zeroes(blk, off, len, BDRV_REQ_MAY_UNMAP);
            st.zero_unmap++;
        } else if (k < 54) {
            discard_one(blk, off, len);
            st.discard++;
        } else if (k < 60) {
            ret = blk_flush(blk);
            st.flush++;
        } else if (k < 99) {
            ret = blk_pread(blk, off, len, buf2, 0);
            st.read++;
        } else if (rnd() % 4) {
            Error *err = NULL;

            if (bdrv_reopen_set_read_only(blk_bs(blk), true, &err) < 0) {
                /* A driver without reopen support says so; the node stays read-write. */
                if (!strstr(error_get_pretty(err), "does not support reopening")) {
                    die("read-only reopen failed: %s", error_get_pretty(err));
                }
                error_free(err);
                st.reopen_unsupported++;
            } else if (blk_pwrite(blk, 0, 512, buf, 0) >= 0 ||
                       bdrv_reopen_set_read_only(blk_bs(blk), false, &err) < 0) {
                die("read-only reopen and back failed: %s", err ? error_get_pretty(err) : "");
            } else {
                st.reopen_ro++;
            }
        } else {
            blk_unref(blk);
            blk = open_verify();
            compare_all(blk, "after a close and open");
            st.cycle++;
        }
        if (ret < 0) {
            fprintf(stderr, "op %ld (kind %u) at %lld+%lld: %s\n", i, k, (long long)off,
                    (long long)len, strerror(-ret));
            die("a request failed (a read that fails is a mismatch)%s", "");
        }
    }
    return blk;
}

static void create_layer(int i)
{
    char opts[16384], err_s[256];
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    snprintf(opts, sizeof(opts), "size=%lld%s%s", (long long)(size ? size : GUEST_SIZE),
             *copts ? "," : "", copts);
    bopts_parse_keyval(o, opts, NULL, NULL);
    if (i > 0) {
        bopts_set(o, "backing_file", layer[i - 1]);
        bopts_set(o, "backing_fmt", fmt);
    }
    if (bdrv_create(fmt, layer[i], o, &err) < 0) {
        snprintf(err_s, sizeof(err_s), "%s", error_get_pretty(err));
        fprintf(stderr, "difftest %s: cannot create layer %d: %s; skipping\n", fmt, i, err_s);
        exit(77);
    }
    nlayers = i + 1;
}

static void quiet(void *opaque, const char *msg)
{
    fprintf(stderr, "  coblk check: %s\n", msg);
}

static void final_checks(void)
{
    char cmd[9000];
    BdrvCheckResult res = { .report = quiet };
    BlockBackend *blk;
    int ret;

    for (int i = 0; i < nlayers; i++) {
        snprintf(cmd, sizeof(cmd), "driver=%s,file.driver=file,file.filename=%s", fmt,
                 layer[i]);
        blk = open_str(cmd, 0);
        ret = bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE);
        blk_unref(blk);
        if (ret != -ENOTSUP && (ret < 0 || res.corruptions || res.leaks || res.check_errors)) {
            die("coblk check of %s finds problems", layer[i]);
        }
        snprintf(cmd, sizeof(cmd), "qemu-img check -q -f %s '%s' >/dev/null 2>&1", fmt,
                 layer[i]);
        ret = system(cmd);
        if (ret != -1 && WIFEXITED(ret) && WEXITSTATUS(ret) != 0 &&
            WEXITSTATUS(ret) != 63 && WEXITSTATUS(ret) != 127) {
            snprintf(cmd, sizeof(cmd), "qemu-img check -f %s '%s' >&2", fmt, layer[i]);
            if (system(cmd)) {
                /* the output says why */
            }
            die("qemu-img check of %s fails", layer[i]);
        }
    }
}

int main(int argc, char **argv)
{
    const char *dir;
    long ops;
    bool chain;
    BlockBackend *blk;
    struct timespec t0, t1;
    int fd;

    if (argc < 5) {
        fprintf(stderr, "usage: difftest FORMAT DIR OPS SEED [chain] [create-options]\n");
        return 2;
    }
    fmt = argv[1];
    dir = argv[2];
    ops = atol(argv[3]);
    seed = strtoull(argv[4], NULL, 0) | 1;
    chain = argc > 5 && !strcmp(argv[5], "chain");
    copts = argc > 6 ? argv[6] : argc > 5 && !chain ? argv[5] : "";
    if (!bdrv_find_format(fmt)) {
        fprintf(stderr, "difftest: format '%s' is not built in; skipping\n", fmt);
        return 77;
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 3; i++) {
        snprintf(layer[i], sizeof(layer[i]), "%s/diff-%s-%d-%d.img", dir, fmt, (int)getpid(),
                 i);
    }
    snprintf(ref, sizeof(ref), "%s/diff-%s-%d.raw", dir, fmt, (int)getpid());
    buf = malloc(MAX_IO);
    buf2 = malloc(MAX_IO);
    create_layer(0);
    {
        char opts[8192];

        snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt,
                 layer[0]);
        blk = open_str(opts, 0);
        size = blk_getlength(blk);
        blk_unref(blk);
    }
    fd = open(ref, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, size) < 0) {
        die("cannot create the reference %s", ref);
    }
    close(fd);
    blk = open_verify();
    if (chain) {
        for (int i = 1; i < 3; i++) {
            blk = run_ops(blk, ops / 4);
            compare_all(blk, "before a new layer");
            blk_unref(blk);
            create_layer(i);
            blk = open_verify();
            check_depth(blk);
            compare_all(blk, "with a new empty layer on top");
        }
        blk = run_ops(blk, ops - 2 * (ops / 4));
    } else {
        blk = run_ops(blk, ops);
    }
    compare_all(blk, "at the end");
    if (blkverify_mismatches(blk_bs(blk)) != 0) {
        die("blkverify counted mismatches%s", "");
    }
    blk_unref(blk);
    final_checks();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("difftest %s%s: %ld ops (%ld writes of %lld bytes, %ld write-zeroes, %ld with unmap, "
           "%ld discards, %ld flushes, %ld reads, %ld ro reopens (%ld refused: no reopen "
           "support), %ld close/open), "
           "0 mismatches, %.1f s\n", fmt, chain ? " (chain of 3)" : "", ops, st.write,
           st.bytes_written, st.zero, st.zero_unmap, st.discard, st.flush, st.read,
           st.reopen_ro, st.reopen_unsupported, st.cycle,
           (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
    for (int i = 0; i < nlayers; i++) {
        unlink(layer[i]);
    }
    unlink(ref);
    free(buf);
    free(buf2);
    return 0;
}
