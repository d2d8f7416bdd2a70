/*
 * coblk-deflate-bench: CPU time and compressed size of qcow2 deflate
 * compression (compression_type 0), cluster by cluster, with each engine
 * the build has: ISA-L and zlib (drivers/format/qcow2/compress-deflate.c),
 * on one thread. Not a test.
 *
 *   coblk-deflate-bench [-c CLUSTER_BYTES] [-n MAX_MIB] FILE...
 *   coblk-deflate-bench [-c CLUSTER_BYTES]        (built-in: random, text, zeros)
 *
 * Prints, per input and engine, CPU seconds per GiB of input (user + sys of
 * this thread, clock CLOCK_THREAD_CPUTIME_ID) and the stored size relative
 * to the input (a cluster that does not shrink counts as a whole cluster, as
 * qcow2 stores it uncompressed).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "coblk-config.h"
#include "drivers/format/qcow2/qcow2.h"

static double cpu_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Compresses buf cluster by cluster with engine ("isal" or "zlib"); prints one line. */
static int run(const char *name, const char *engine, const uint8_t *buf, size_t len, size_t cs)
{
    uint8_t *dst = malloc(cs);
    uint64_t stored = 0, plain = 0;
    Qcow2Codec c;
    double t0, t;

    if (!dst) {
        return -ENOMEM;
    }
    setenv("COBLK_QCOW2_DEFLATE", engine, 1);
    memset(&c, 0, sizeof(c));
    t0 = cpu_now();
    for (size_t off = 0; off + cs <= len; off += cs) {
        ssize_t n = qcow2_codec_compress(&c, QCOW2_COMPRESSION_ZLIB, dst, cs - 1, buf + off, cs);

        if (n == -ENOSPC) {
            stored += cs;
            plain++;
        } else if (n < 0) {
            fprintf(stderr, "%s: compression failed: %s\n", name, strerror((int)-n));
            free(dst);
            return (int)n;
        } else {
            stored += (uint64_t)n;
        }
    }
    t = cpu_now() - t0;
    len -= len % cs;
    printf("%-28s %-5s %8.2f s/GiB %7.1f MiB/s  size %6.3f  plain clusters %llu/%zu\n", name,
           qcow2_deflate_engine_name(&c), t * (double)(1ULL << 30) / (double)len,
           (double)len / (1 << 20) / t, (double)stored / (double)len, (unsigned long long)plain,
           len / cs);
    qcow2_codec_free(&c);
    free(dst);
    return 0;
}

static int run_engines(const char *name, const uint8_t *buf, size_t len, size_t cs)
{
    int ret = 0;

    if (COBLK_HAVE_ISAL) {
        ret = run(name, "isal", buf, len, cs);
    }
    return ret ? ret : run(name, "zlib", buf, len, cs);
}

static uint8_t *load(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = malloc(max);

    if (!f || !buf) {
        perror(path);
        exit(1);
    }
    *len = fread(buf, 1, max, f);
    fclose(f);
    return buf;
}

static void builtin(size_t cs)
{
    static const char *const words[] = { "block ", "cluster ", "qcow2 ", "refcount\n", "the ",
                                         "image ", "write ", "offset " };
    size_t len = 64ULL << 20;
    uint8_t *buf = malloc(len);
    unsigned seed = 1;

    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(rand_r(&seed) >> 7);
    }
    run_engines("random (64 MiB)", buf, len, cs);
    for (size_t i = 0; i < len;) {
        for (const char *w = words[rand_r(&seed) % 8]; *w && i < len; w++) {
            buf[i++] = (uint8_t)*w;
        }
    }
    run_engines("text (64 MiB)", buf, len, cs);
    memset(buf, 0, len);
    run_engines("zeros (64 MiB)", buf, len, cs);
    free(buf);
}

int main(int argc, char **argv)
{
    size_t cs = 65536, max = 1ULL << 30;
    int opt;

    while ((opt = getopt(argc, argv, "c:n:")) != -1) {
        if (opt == 'c') {
            cs = strtoull(optarg, NULL, 0);
        } else if (opt == 'n') {
            max = strtoull(optarg, NULL, 0) << 20;
        } else {
            fprintf(stderr, "usage: %s [-c CLUSTER_BYTES] [-n MAX_MIB] [FILE...]\n", argv[0]);
            return 2;
        }
    }
    if (cs < 512 || cs > (2U << 20) || (cs & (cs - 1))) {
        fprintf(stderr, "cluster size must be a power of two, 512..2M\n");
        return 2;
    }
    printf("cluster %zu bytes; ISA-L %s\n", cs, COBLK_HAVE_ISAL ? "built in" : "not built");
    if (optind == argc) {
        builtin(cs);
    }
    for (int i = optind; i < argc; i++) {
        size_t len;
        uint8_t *buf = load(argv[i], max, &len);

        run_engines(argv[i], buf, len, cs);
        free(buf);
    }
    return 0;
}
