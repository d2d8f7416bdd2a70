/*
 * fmt-io: a small driver of libcoblk for the format interop scripts
 * (tests/interop/<format>-*.sh), so that they can put coblk and Debian's
 * qemu-img / qemu-io side by side.
 *
 *   fmt-io create FMT FILE OPTS           bdrv_create (OPTS: "size=3M,static=on")
 *   fmt-io dump FMT FILE OUT              reads the whole disk into the raw file OUT
 *   fmt-io randwrite FMT FILE SEED N RAW  N random writes (partial blocks, up to 16
 *                                         in flight) to FILE and the same bytes to the
 *                                         raw file RAW (which must have the disk size)
 *   fmt-io write FMT FILE OFF LEN BYTE    writes LEN bytes of BYTE at OFF
 *   fmt-io discard FMT FILE OFF LEN       discards
 *   fmt-io check FMT FILE [leaks|all]     runs check (and repair); exit 0 if clean
 *   fmt-io compact FMT FILE               compacts
 *   fmt-io open FMT FILE                  opens; prints the error and exits 1 on failure
 *   fmt-io crashwrite FMT FILE OFF LEN BYTE  writes and flushes, then exits without
 *                                         closing the image (a simulated crash)
 *   fmt-io rebase FMT FILE BACKING [BFMT] changes the backing file name in the image
 * FMT "probe" guesses the format. Exit status 0 on success, 1 on failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

static BlockBackend *open_img(const char *fmt, const char *file, int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    if (strcmp(fmt, "probe") != 0) {
        bopts_set(o, "driver", fmt);
    }
    blk = blk_new_open(file, o, flags, &err);
    if (!blk) {
        fprintf(stderr, "fmt-io: %s\n", error_get_pretty(err));
        error_free(err);
    }
    return blk;
}

static int cmd_create(const char *fmt, const char *file, const char *optstr)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    if (*optstr && bopts_parse_keyval(o, optstr, NULL, &err) < 0) {
        fprintf(stderr, "fmt-io: %s\n", error_get_pretty(err));
        return 1;
    }
    if (bdrv_create(fmt, file, o, &err) < 0) {
        fprintf(stderr, "fmt-io: %s\n", error_get_pretty(err));
        error_free(err);
        return 1;
    }
    return 0;
}

static int cmd_dump(const char *fmt, const char *file, const char *out)
{
    BlockBackend *blk = open_img(fmt, file, 0);
    int64_t len, chunk = 4 << 20;
    uint8_t *buf;
    int fd, ret = 0;

    if (!blk) {
        return 1;
    }
    len = blk_getlength(blk);
    buf = malloc((size_t)chunk);
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (len < 0 || !buf || fd < 0 || ftruncate(fd, len) < 0) {
        fprintf(stderr, "fmt-io: dump setup failed\n");
        ret = 1;
    }
    for (int64_t off = 0; ret == 0 && off < len; off += chunk) {
        int64_t n = len - off < chunk ? len - off : chunk;
        int r = blk_pread(blk, off, n, buf, 0);

        if (r == 0 && buf[0] == 0 && !memcmp(buf, buf + 1, (size_t)n - 1)) {
            continue; /* keep the output sparse */
        }
        if (r < 0 || pwrite(fd, buf, (size_t)n, off) != n) {
            fprintf(stderr, "fmt-io: read at %lld failed: %s\n", (long long)off, strerror(-r));
            ret = 1;
        }
    }
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    blk_unref(blk);
    return ret;
}

typedef struct RandReq {
    int *pending;
    int *failed;
    IOVector qiov;
    uint8_t *buf;
} RandReq;

static void rand_done(void *opaque, int ret)
{
    RandReq *r = opaque;

    if (ret < 0) {
        fprintf(stderr, "fmt-io: write failed: %s\n", strerror(-ret));
        (*r->failed)++;
    }
    (*r->pending)--;
    free(r->buf);
    free(r);
}

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Writes never overlap while in flight: each batch writes disjoint slices. */
static int cmd_randwrite(const char *fmt, const char *file, uint64_t seed, int n,
                         const char *raw)
{
    BlockBackend *blk = open_img(fmt, file, BDRV_O_RDWR);
    int fd = open(raw, O_RDWR);
    int pending = 0, failed = 0;
    int64_t len;

    if (!blk || fd < 0) {
        return 1;
    }
    len = blk_getlength(blk);
    seed = seed * 2654435761u + 1;
    for (int i = 0; i < n; i += 16) {
        int batch = n - i < 16 ? n - i : 16;
        int64_t slice = len / batch / 512 * 512;

        for (int j = 0; j < batch; j++) {
            RandReq *r = calloc(1, sizeof(*r));
            int64_t max = slice < (3 << 20) ? slice : (3 << 20);
            int64_t blen = (int64_t)(next_rand(&seed) % (uint64_t)(max / 512)) * 512 + 512;
            int64_t off = j * slice + (int64_t)(next_rand(&seed) % (uint64_t)(slice - blen + 512))
                                      / 512 * 512;

            if (blen > slice) {
                blen = slice;
            }
            if (off + blen > (j + 1) * slice) {
                off = (j + 1) * slice - blen;
            }
            r->buf = malloc((size_t)blen);
            for (int64_t k = 0; k < blen; k++) {
                r->buf[k] = (uint8_t)(next_rand(&seed) >> 29);
            }
            if (pwrite(fd, r->buf, (size_t)blen, off) != blen) {
                return 1;
            }
            r->pending = &pending;
            r->failed = &failed;
            iovector_init_buf(&r->qiov, r->buf, (size_t)blen);
            pending++;
            blk_aio_pwritev(blk, off, &r->qiov, 0, rand_done, r);
        }
        while (pending > 0) {
            aio_poll(blk_get_aio_context(blk), true);
        }
    }
    if (blk_flush(blk) < 0) {
        failed++;
    }
    close(fd);
    blk_unref(blk);
    return failed ? 1 : 0;
}

static int cmd_write(const char *fmt, const char *file, int64_t off, int64_t len, int byte)
{
    BlockBackend *blk = open_img(fmt, file, BDRV_O_RDWR);
    uint8_t *buf = malloc((size_t)len);
    int ret;

    if (!blk || !buf) {
        return 1;
    }
    memset(buf, byte, (size_t)len);
    ret = blk_pwrite(blk, off, len, buf, 0);
    free(buf);
    blk_unref(blk);
    if (ret < 0) {
        fprintf(stderr, "fmt-io: write failed: %s\n", strerror(-ret));
    }
    return ret < 0;
}

static int cmd_discard(const char *fmt, const char *file, int64_t off, int64_t len)
{
    BlockBackend *blk = open_img(fmt, file, BDRV_O_RDWR | BDRV_O_UNMAP);
    int ret;

    if (!blk) {
        return 1;
    }
    ret = blk_pdiscard(blk, off, len);
    blk_unref(blk);
    if (ret < 0) {
        fprintf(stderr, "fmt-io: discard failed: %s\n", strerror(-ret));
    }
    return ret < 0;
}

static int cmd_crashwrite(const char *fmt, const char *file, int64_t off, int64_t len, int byte)
{
    BlockBackend *blk = open_img(fmt, file, BDRV_O_RDWR);
    uint8_t *buf = malloc((size_t)len);

    if (!blk || !buf) {
        return 1;
    }
    memset(buf, byte, (size_t)len);
    if (blk_pwrite(blk, off, len, buf, 0) < 0 || blk_flush(blk) < 0) {
        return 1;
    }
    _exit(0);
}

static int cmd_rebase(const char *fmt, const char *file, const char *backing, const char *bfmt)
{
    BlockOpts *o = bopts_new();
    BlockBackend *blk;
    Error *err = NULL;
    int ret;

    if (strcmp(fmt, "probe") != 0) {
        bopts_set(o, "driver", fmt);
    }
    blk = blk_new_open(file, o, BDRV_O_RDWR | BDRV_O_NO_BACKING, &err);
    if (!blk) {
        fprintf(stderr, "fmt-io: %s\n", error_get_pretty(err));
        return 1;
    }
    ret = bdrv_change_backing_file(blk_bs(blk), *backing ? backing : NULL, bfmt, &err);
    blk_unref(blk);
    if (ret < 0) {
        fprintf(stderr, "fmt-io: %s\n", error_get_pretty(err));
    }
    return ret < 0;
}

static void report(void *opaque, const char *msg)
{
    printf("%s\n", msg);
}

static int cmd_check(const char *fmt, const char *file, const char *mode)
{
    BdrvCheckMode fix = !mode ? BDRV_FIX_NONE
                        : !strcmp(mode, "all") ? BDRV_FIX_LEAKS | BDRV_FIX_ERRORS
                                               : BDRV_FIX_LEAKS;
    BlockBackend *blk = open_img(fmt, file, fix ? BDRV_O_RDWR : 0);
    BdrvCheckResult res = { .report = report };
    int ret;

    if (!blk) {
        return 1;
    }
    ret = bdrv_check(blk_bs(blk), &res, fix);
    blk_unref(blk);
    printf("corruptions %d leaks %d fixed %d/%d errors %d\n", res.corruptions, res.leaks,
           res.corruptions_fixed, res.leaks_fixed, res.check_errors);
    if (ret < 0) {
        fprintf(stderr, "fmt-io: check failed: %s\n", strerror(-ret));
        return 1;
    }
    return res.corruptions - res.corruptions_fixed + res.leaks - res.leaks_fixed +
           res.check_errors ? 2 : 0;
}

static int cmd_compact(const char *fmt, const char *file)
{
    BlockBackend *blk = open_img(fmt, file, BDRV_O_RDWR);
    Error *err = NULL;
    int ret;

    if (!blk) {
        return 1;
    }
    ret = bdrv_compact(blk_bs(blk), NULL, NULL, &err);
    blk_unref(blk);
    if (ret < 0) {
        fprintf(stderr, "fmt-io: %s\n", error_get_pretty(err));
        error_free(err);
    }
    return ret < 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: fmt-io CMD FMT FILE ...\n");
        return 1;
    }
    if (!strcmp(argv[1], "create") && argc == 5) {
        return cmd_create(argv[2], argv[3], argv[4]);
    }
    if (!strcmp(argv[1], "dump") && argc == 5) {
        return cmd_dump(argv[2], argv[3], argv[4]);
    }
    if (!strcmp(argv[1], "randwrite") && argc == 7) {
        return cmd_randwrite(argv[2], argv[3], strtoull(argv[4], NULL, 0), atoi(argv[5]),
                             argv[6]);
    }
    if (!strcmp(argv[1], "write") && argc == 7) {
        return cmd_write(argv[2], argv[3], strtoll(argv[4], NULL, 0),
                         strtoll(argv[5], NULL, 0), (int)strtol(argv[6], NULL, 0));
    }
    if (!strcmp(argv[1], "discard") && argc == 6) {
        return cmd_discard(argv[2], argv[3], strtoll(argv[4], NULL, 0),
                           strtoll(argv[5], NULL, 0));
    }
    if (!strcmp(argv[1], "check") && (argc == 4 || argc == 5)) {
        return cmd_check(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    }
    if (!strcmp(argv[1], "compact") && argc == 4) {
        return cmd_compact(argv[2], argv[3]);
    }
    if (!strcmp(argv[1], "crashwrite") && argc == 7) {
        return cmd_crashwrite(argv[2], argv[3], strtoll(argv[4], NULL, 0),
                              strtoll(argv[5], NULL, 0), (int)strtol(argv[6], NULL, 0));
    }
    if (!strcmp(argv[1], "rebase") && (argc == 5 || argc == 6)) {
        return cmd_rebase(argv[2], argv[3], argv[4], argc == 6 ? argv[5] : NULL);
    }
    if (!strcmp(argv[1], "open") && argc == 4) {
        BlockBackend *blk = open_img(argv[2], argv[3], 0);

        blk_unref(blk);
        return blk ? 0 : 1;
    }
    fprintf(stderr, "fmt-io: bad command line\n");
    return 1;
}
