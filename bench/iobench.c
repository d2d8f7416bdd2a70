/*
 * coblk-iobench: random reads through one coblk I/O engine, for comparison
 * with fio's matching engine (see run-iobench.sh). Not a test.
 *
 *   coblk-iobench -f FILE [-e io_uring|native|threads] [-q QD] [-b BS]
 *                 [-t SECONDS | -n OPS] [-B]
 *
 * QD coroutines each loop: pick a random BS-aligned offset, read BS bytes,
 * until the time or the operation budget runs out. O_DIRECT unless -B.
 * Prints one line: engine, qd, bs, ops, seconds, IOPS, MiB/s, CPU use.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <coblk/coblk.h>

typedef struct Bench {
    AioContext *ctx;
    AioEngine *e;
    int fd;
    size_t bs;
    uint64_t nblocks;
    int64_t end_ns;     /* stop time (time mode) */
    uint64_t ops_limit; /* 0: time mode */
    uint64_t ops;       /* completed reads */
    int running;        /* live worker coroutines */
    int64_t error;      /* first failure, 0 if none */
} Bench;

typedef struct Worker {
    Bench *b;
    uint64_t rng;
    void *buf;
} Worker;

static uint64_t xorshift64(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *s = x;
    return x;
}

static bool bench_done(Bench *b)
{
    if (b->error) {
        return true;
    }
    if (b->ops_limit) {
        return b->ops >= b->ops_limit;
    }
    return aio_clock_ns() >= b->end_ns;
}

static void coroutine_fn worker_entry(void *opaque)
{
    Worker *w = opaque;
    Bench *b = w->b;
    struct iovec iov = { w->buf, b->bs };

    while (!bench_done(b)) {
        int64_t off = (int64_t)(xorshift64(&w->rng) % b->nblocks) * (int64_t)b->bs;
        int64_t ret = aio_co_preadv(b->e, b->fd, off, &iov, 1);

        if (ret != (int64_t)b->bs) {
            b->error = ret < 0 ? ret : -EIO;
            break;
        }
        b->ops++;
    }
    b->running--;
}

static double cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s -f FILE [-e io_uring|native|threads] [-q QD] [-b BS]\n"
            "       [-t SECONDS | -n OPS] [-B (buffered)]\n",
            argv0);
    exit(2);
}

typedef struct Opts {
    const char *file;
    AioEngineType type;
    int qd;
    size_t bs;
    double seconds;
    uint64_t ops;
    bool buffered;
} Opts;

static void parse_opts(int argc, char **argv, Opts *o)
{
    int c;

    *o = (Opts){ .type = AIO_ENGINE_IO_URING, .qd = 1, .bs = 4096, .seconds = 5 };
    while ((c = getopt(argc, argv, "f:e:q:b:t:n:B")) != -1) {
        switch (c) {
        case 'f':
            o->file = optarg;
            break;
        case 'e':
            if (aio_engine_type_parse(optarg, &o->type) < 0) {
                usage(argv[0]);
            }
            break;
        case 'q':
            o->qd = atoi(optarg);
            break;
        case 'b':
            o->bs = strtoul(optarg, NULL, 0);
            break;
        case 't':
            o->seconds = atof(optarg);
            break;
        case 'n':
            o->ops = strtoull(optarg, NULL, 0);
            break;
        case 'B':
            o->buffered = true;
            break;
        default:
            usage(argv[0]);
        }
    }
    if (!o->file || o->qd < 1 || o->bs < 512 || o->bs % 512 != 0) {
        usage(argv[0]);
    }
}

static int bench_open(Bench *b, const Opts *o)
{
    struct stat st;

    b->fd = open(o->file, O_RDONLY | O_CLOEXEC | (o->buffered ? 0 : O_DIRECT));
    if (b->fd < 0) {
        fprintf(stderr, "%s: %s\n", o->file, strerror(errno));
        return -1;
    }
    if (fstat(b->fd, &st) < 0 || (uint64_t)st.st_size < o->bs) {
        fprintf(stderr, "%s: too small\n", o->file);
        close(b->fd);
        return -1;
    }
    b->bs = o->bs;
    b->nblocks = (uint64_t)st.st_size / o->bs;
    return 0;
}

/* Runs the workers to completion; returns elapsed ns. */
static int64_t bench_run(Bench *b, const Opts *o, Worker *workers)
{
    int64_t start = aio_clock_ns();

    b->end_ns = start + (int64_t)(o->seconds * 1e9);
    b->ops_limit = o->ops;
    b->running = o->qd;
    for (int i = 0; i < o->qd; i++) {
        aio_co_enter(b->ctx, coroutine_create(worker_entry, &workers[i]));
    }
    while (b->running > 0) {
        aio_poll(b->ctx, true);
    }
    return aio_clock_ns() - start;
}

int main(int argc, char **argv)
{
    Opts o;
    Bench b = { 0 };
    Worker *workers;
    Error *err = NULL;
    double cpu0, secs;
    int64_t ns;

    parse_opts(argc, argv, &o);
    if (bench_open(&b, &o) < 0) {
        return 1;
    }
    b.ctx = aio_context_new(&err);
    if (!b.ctx) {
        fprintf(stderr, "%s\n", error_get_pretty(err));
        return 1;
    }
    aio_context_set_current(b.ctx);
    b.e = aio_get_engine(b.ctx, o.type, true, &err);
    if (!b.e) {
        fprintf(stderr, "%s\n", error_get_pretty(err));
        return 1;
    }
    workers = calloc(o.qd, sizeof(*workers));
    for (int i = 0; i < o.qd; i++) {
        workers[i].b = &b;
        workers[i].rng = 0x9e3779b97f4a7c15ULL * (uint64_t)(i + 1) ^ (uint64_t)getpid();
        if (posix_memalign(&workers[i].buf, 4096, o.bs) != 0) {
            return 1;
        }
    }
    cpu0 = cpu_seconds();
    ns = bench_run(&b, &o, workers);
    secs = ns / 1e9;
    if (b.error) {
        fprintf(stderr, "read failed: %s\n", strerror((int)-b.error));
        return 1;
    }
    printf("engine=%s qd=%d bs=%zu direct=%d ops=%llu secs=%.3f iops=%.0f mibps=%.1f cpu=%.0f%%\n",
           aio_engine_type_name(o.type), o.qd, o.bs, !o.buffered, (unsigned long long)b.ops,
           secs, b.ops / secs, b.ops * (double)o.bs / secs / (1 << 20),
           100.0 * (cpu_seconds() - cpu0) / secs);
    for (int i = 0; i < o.qd; i++) {
        free(workers[i].buf);
    }
    free(workers);
    aio_context_unref(b.ctx);
    close(b.fd);
    return 0;
}
