/*
 * A small command-line driver for the interop scripts (the tests/interop scripts):
 * create, write, read and inspect images through libcoblk.
 *
 *   img-io create FMT FILE OPTS        OPTS: "size=1M,subformat=..." (keyval)
 *   img-io write FMT FILE OFF LEN BYTE  writes LEN bytes of BYTE at OFF
 *   img-io zero FMT FILE OFF LEN        write-zeroes
 *   img-io dump FMT FILE OUT            reads the whole image into the raw file OUT
 *   img-io info FMT FILE                prints the format-specific JSON
 *   img-io open FMT FILE [ro|rw]        opens and closes (exit 1 with the error)
 * FMT "probe" lets the library guess the format. Exit 0 on success, 1 on error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>

static BlockBackend *open_img(const char *fmt, const char *file, int flags)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;

    if (strcmp(fmt, "probe") != 0) {
        bopts_set(o, "driver", fmt);
    }
    bopts_set(o, "file.driver", "file");
    bopts_set(o, "file.filename", file);
    blk = blk_new_open(NULL, o, flags, &err);
    if (!blk) {
        fprintf(stderr, "img-io: %s\n", error_get_pretty(err));
        error_free(err);
    }
    return blk;
}

static int do_create(char **argv)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    if (bopts_parse_keyval(o, argv[4], NULL, &err) < 0 ||
        bdrv_create(argv[2], argv[3], o, &err) < 0) {
        fprintf(stderr, "img-io: %s\n", error_get_pretty(err));
        error_free(err);
        return 1;
    }
    return 0;
}

static int do_write(char **argv, bool zero)
{
    BlockBackend *blk = open_img(argv[2], argv[3], BDRV_O_RDWR);
    long long off = atoll(argv[4]), len = atoll(argv[5]);
    uint8_t *buf;
    int ret;

    if (!blk) {
        return 1;
    }
    buf = malloc((size_t)len);
    memset(buf, zero ? 0 : (int)strtol(argv[6], NULL, 0), (size_t)len);
    ret = zero ? blk_pwrite_zeroes(blk, off, len, 0) : blk_pwrite(blk, off, len, buf, 0);
    if (ret == 0) {
        ret = blk_flush(blk);
    }
    free(buf);
    blk_unref(blk);
    if (ret < 0) {
        fprintf(stderr, "img-io: write failed: %s\n", strerror(-ret));
        return 1;
    }
    return 0;
}

static int do_dump(char **argv)
{
    BlockBackend *blk = open_img(argv[2], argv[3], 0);
    const int64_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    FILE *out;
    int64_t len;

    if (!blk) {
        return 1;
    }
    out = fopen(argv[4], "wb");
    len = blk_getlength(blk);
    for (int64_t off = 0; out && off < len; off += chunk) {
        int64_t n = len - off < chunk ? len - off : chunk;
        int ret = blk_pread(blk, off, n, buf, 0);

        if (ret < 0) {
            fprintf(stderr, "img-io: read at %lld failed: %s\n", (long long)off, strerror(-ret));
            len = -1;
            break;
        }
        fwrite(buf, 1, (size_t)n, out);
    }
    if (out) {
        fclose(out);
    }
    free(buf);
    blk_unref(blk);
    return len < 0 || !out;
}

static int do_info(char **argv)
{
    BlockBackend *blk = open_img(argv[2], argv[3], 0);
    Error *err = NULL;
    char *json;

    if (!blk) {
        return 1;
    }
    json = bdrv_get_specific_info(blk_bs(blk), &err);
    printf("%s\n", json ? json : "null");
    free(json);
    blk_unref(blk);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 5 && !strcmp(argv[1], "create")) {
        return do_create(argv);
    }
    if (argc >= 7 && !strcmp(argv[1], "write")) {
        return do_write(argv, false);
    }
    if (argc >= 6 && !strcmp(argv[1], "zero")) {
        return do_write(argv, true);
    }
    if (argc >= 5 && !strcmp(argv[1], "dump")) {
        return do_dump(argv);
    }
    if (argc >= 4 && !strcmp(argv[1], "info")) {
        return do_info(argv);
    }
    if (argc >= 4 && !strcmp(argv[1], "open")) {
        BlockBackend *blk = open_img(argv[2], argv[3],
                                     argc > 4 && !strcmp(argv[4], "rw") ? BDRV_O_RDWR : 0);
        if (blk) {
            blk_unref(blk);
        }
        return blk ? 0 : 1;
    }
    fprintf(stderr, "usage: img-io create|write|zero|dump|info|open FMT FILE ...\n");
    return 2;
}
