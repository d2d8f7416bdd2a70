/*
 * coblk-inflate-bench: CPU time of inflating qcow2 deflate clusters
 * (drivers/format/qcow2/compress-inflate.c) by bytes needed, per engine, on
 * one thread. Not a test.
 *
 *   coblk-inflate-bench [-c CLUSTER_BYTES] [-r ROUNDS] [-e ENGINE] RAW_FILE
 *
 * RAW_FILE is cut into clusters, each compressed as `qemu-img convert -c`
 * does (zlib, default level, 4 KiB window; clusters that do not shrink are
 * left out, qcow2 stores those plain). Then, for each engine
 * (COBLK_QCOW2_INFLATE: own, isal, libdeflate, zlib) and each need (4, 16,
 * 32, 48, 60 KiB and the whole cluster of 64 KiB clusters, scaled for other
 * sizes), every cluster is inflated up to need; the best of ROUNDS (default
 * 5) runs is printed as CPU microseconds per cluster (user + sys of this
 * thread). Every output is compared with the cluster's data. -e: that
 * engine only.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "coblk-config.h"
#include "drivers/format/qcow2/qcow2.h"

typedef struct Clusters {
    uint8_t *raw;        /* n clusters of data */
    uint8_t **c;         /* their deflate streams */
    size_t *clen;
    size_t n, cs;
} Clusters;

static double cpu_now(void)
{
    struct timespec t;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Compresses each cluster of buf[0, len) the way qemu-img convert -c does. */
static int load(Clusters *cl, const uint8_t *buf, size_t len, size_t cs)
{
    z_stream z = { 0 };
    uint8_t *tmp = malloc(cs);

    cl->raw = malloc(len);
    cl->c = calloc(len / cs + 1, sizeof(*cl->c));
    cl->clen = calloc(len / cs + 1, sizeof(*cl->clen));
    cl->cs = cs;
    if (!tmp || !cl->raw || !cl->c || !cl->clen ||
        deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
        return -ENOMEM;
    }
    for (size_t off = 0; off + cs <= len; off += cs) {
        deflateReset(&z);
        z.next_in = (Bytef *)buf + off;
        z.avail_in = (uInt)cs;
        z.next_out = tmp;
        z.avail_out = (uInt)cs - 1;
        if (deflate(&z, Z_FINISH) != Z_STREAM_END) {
            continue; /* does not shrink: stored plain */
        }
        memcpy(cl->raw + cl->n * cs, buf + off, cs);
        cl->clen[cl->n] = z.total_out;
        cl->c[cl->n] = malloc(z.total_out);
        if (!cl->c[cl->n]) {
            return -ENOMEM;
        }
        memcpy(cl->c[cl->n], tmp, z.total_out);
        cl->n++;
    }
    deflateEnd(&z);
    free(tmp);
    return 0;
}

/* Best CPU microseconds per cluster of rounds runs of engine at need; -1 on a bad output. */
static double run(const Clusters *cl, const char *engine, size_t need, int rounds)
{
    uint8_t *dst = malloc(cl->cs);
    double best = 1e30;
    Qcow2Codec c;

    memset(&c, 0, sizeof(c));
    setenv("COBLK_QCOW2_INFLATE", engine, 1);
    for (int r = 0; r < rounds && dst; r++) {
        double t0 = cpu_now(), t;

        for (size_t i = 0; i < cl->n; i++) {
            ssize_t got = qcow2_codec_inflate(&c, QCOW2_COMPRESSION_ZLIB, dst, cl->cs, need,
                                              cl->c[i], cl->clen[i]);

            if (got < (ssize_t)need || memcmp(dst, cl->raw + i * cl->cs, need) != 0) {
                fprintf(stderr, "%s: cluster %zu need %zu: bad output (%zd)\n", engine, i, need,
                        got);
                best = -1;
                goto out;
            }
        }
        t = cpu_now() - t0;
        best = t < best ? t : best;
    }
    best = best * 1e6 / (double)(cl->n ? cl->n : 1);
out:
    qcow2_codec_free(&c);
    free(dst);
    return best;
}

int main(int argc, char **argv)
{
    static const char *const engines[] = { "own", "isal", "libdeflate", "zlib" };
    static const unsigned need_64k[] = { 4, 16, 32, 48, 60, 64 };
    size_t cs = 65536;
    const char *only = NULL;
    int rounds = 5, opt;
    Clusters cl = { 0 };
    uint8_t *buf;
    FILE *f;
    long len;

    while ((opt = getopt(argc, argv, "c:r:e:")) != -1) {
        if (opt == 'c') {
            cs = strtoul(optarg, NULL, 0);
        } else if (opt == 'e') {
            only = optarg;
        } else if (opt == 'r') {
            rounds = atoi(optarg);
        } else {
            return 2;
        }
    }
    if (optind != argc - 1 || cs < 4096 || rounds < 1 || !(f = fopen(argv[optind], "rb"))) {
        fprintf(stderr, "usage: coblk-inflate-bench [-c BYTES] [-r ROUNDS] [-e ENGINE] RAW\n");
        return 2;
    }
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    buf = malloc(len > 0 ? (size_t)len : 1);
    if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len || load(&cl, buf, len, cs) < 0) {
        fprintf(stderr, "coblk-inflate-bench: cannot load %s\n", argv[optind]);
        return 1;
    }
    fclose(f);
    free(buf);
    printf("%zu compressed clusters of %zu bytes; CPU us per cluster, best of %d\n", cl.n, cs,
           rounds);
    printf("%-11s", "need KiB");
    for (size_t k = 0; k < 6; k++) {
        printf(" %8zu", need_64k[k] * cs / 65536);
    }
    printf("\n");
    for (size_t e = 0; e < sizeof(engines) / sizeof(engines[0]); e++) {
        if (only && strcmp(only, engines[e]) != 0) {
            continue;
        }
        printf("%-11s", engines[e]);
        for (size_t k = 0; k < 6; k++) {
            double us = run(&cl, engines[e], need_64k[k] * 1024 * (cs / 65536), rounds);

            printf(" %8.1f", us);
            fflush(stdout);
        }
        printf("\n");
    }
    return 0;
}
