/*
 * coblk-io helpers: qemu-io's number syntax, its report lines (the
 * "wrote 4096/4096 bytes at offset 0" line and the timing line), pattern
 * buffers and checks, and the -v hex dump.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

int64_t io_cvtnum(const char *s)
{
    uint64_t v;
    int ret = bopts_parse_size(s, &v);

    if (ret < 0) {
        return ret;
    }
    if (v > (uint64_t)INT64_MAX) {
        return -ERANGE;
    }
    return (int64_t)v;
}

void io_print_cvtnum_err(int64_t rc, const char *arg)
{
    if (rc == -ERANGE) {
        printf("Parsing error: argument too large -- %s\n", arg);
    } else {
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- "
               "%s\n", arg);
    }
}

void io_cvtstr(double value, char *out, size_t len)
{
    static const char *const units[] = { " EiB", " PiB", " TiB", " GiB", " MiB", " KiB" };
    const char *suffix = " bytes";
    char *trim;

    for (int i = 0; i < 6; i++) {
        double unit = (double)(1ULL << (10 * (6 - i)));

        if (value >= unit) {
            value /= unit;
            suffix = units[i];
            break;
        }
    }
    snprintf(out, len, "%.3f", value);
    trim = strstr(out, ".000");
    if (trim) {
        *trim = '\0';
    }
    strncat(out, suffix, len - strlen(out) - 1);
}

struct timespec io_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_MONOTONIC, &t);
    return t;
}

struct timespec io_tsub(struct timespec a, struct timespec b)
{
    struct timespec r = { a.tv_sec - b.tv_sec, a.tv_nsec - b.tv_nsec };

    if (r.tv_nsec < 0) {
        r.tv_sec--;
        r.tv_nsec += 1000000000L;
    }
    return r;
}

/* "00.01 sec" under a second, else "h:mm:ss.cc"; terse always the long form. */
static void timestr(const struct timespec *t, char *out, size_t len, bool terse)
{
    double frac = (double)t->tv_nsec / 1e9;
    unsigned long s = (unsigned long)t->tv_sec;

    if (terse || s) {
        snprintf(out, len, "%lu:%02lu:%05.2f", s / 3600, s / 60 % 60, (double)(s % 60) + frac);
    } else {
        snprintf(out, len, "%05.2f sec", frac);
    }
}

void io_print_report(const char *op, const struct timespec *t, int64_t offset, int64_t count,
                     int64_t total, int cnt, bool terse)
{
    double secs = (double)t->tv_sec + (double)t->tv_nsec / 1e9;
    char s1[64], s2[64], ts[64];

    if (secs <= 0) {
        secs = 1e-9;
    }
    timestr(t, ts, sizeof(ts), terse);
    if (terse) {
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, cnt, ts, (double)count / secs,
               (double)cnt / secs);
        return;
    }
    printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, total, count,
           offset);
    io_cvtstr((double)count, s1, sizeof(s1));
    io_cvtstr((double)count / secs, s2, sizeof(s2));
    printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, cnt, ts, s2, (double)cnt / secs);
}

void *io_alloc_buf(size_t len, int pattern)
{
    void *p = NULL;
    size_t off = io_state.misalign ? 1 : 0;

    if (posix_memalign(&p, 4096, len + off + 4096)) {
        fprintf(stderr, "coblk-io: out of memory (%zu bytes)\n", len);
        exit(1);
    }
    memset(p, pattern, len + off);
    /* The real start is stored before the returned pointer's page. */
    return (uint8_t *)p + off;
}

void io_free_buf(void *buf)
{
    if (buf) {
        free((void *)((uintptr_t)buf & ~(uintptr_t)4095));
    }
}

int io_check_pattern(const void *buf, int64_t offset, int64_t len, int pattern)
{
    const uint8_t *p = buf;

    for (int64_t i = 0; i < len; i++) {
        if (p[i] != (uint8_t)pattern) {
            printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
                   offset, len);
            return -EINVAL;
        }
    }
    return 0;
}

void io_dump_buffer(const void *buf, int64_t offset, int64_t len)
{
    const uint8_t *p = buf;

    for (int64_t i = 0; i < len; i += 16) {
        int64_t n = len - i < 16 ? len - i : 16;

        printf("%08" PRIx64 ":  ", (uint64_t)(offset + i));
        for (int64_t j = 0; j < n; j++) {
            printf("%02x ", p[i + j]);
        }
        printf(" ");
        for (int64_t j = 0; j < n; j++) {
            putchar(isalnum(p[i + j]) ? p[i + j] : '.');
        }
        printf("\n");
    }
}

int io_parse_pattern(const char *s)
{
    char *end;
    long v = strtol(s, &end, 0);

    if (!*s || *end || v < 0 || v > 255) {
        printf("%s is not a valid pattern byte\n", s);
        return -1;
    }
    return (int)v;
}

void *io_create_iovec(BlockBackend *blk, IOVector *qiov, char **argv, int nr, int pattern)
{
    int64_t total = 0, lens[256];
    uint8_t *buf, *p;

    if (nr > 256) {
        printf("too many length arguments (at most 256)\n");
        return NULL;
    }
    for (int i = 0; i < nr; i++) {
        int64_t len = io_cvtnum(argv[i]);

        if (len < 0) {
            io_print_cvtnum_err(len, argv[i]);
            return NULL;
        }
        if (len > BDRV_MAX_LENGTH - total || len > INT32_MAX) {
            printf("Argument '%s' exceeds maximum size %lld\n", argv[i], (long long)INT32_MAX);
            return NULL;
        }
        lens[i] = len;
        total += len;
    }
    buf = p = io_alloc_buf((size_t)total, pattern);
    iovector_init(qiov, nr);
    for (int i = 0; i < nr; i++) {
        iovector_add(qiov, p, (size_t)lens[i]);
        p += lens[i];
    }
    return buf;
}

void io_reset_getopt(void)
{
    optind = 0;
    opterr = 0;
}
