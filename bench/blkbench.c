/*
 * coblk-blkbench: the request loop of `qemu-img bench`, through coblk's
 * BlockBackend callback API, with the same flags and output line so that
 * bench/run-blkbench.sh can run both on the same image in one run.
 *
 *   coblk-blkbench [-c count] [-d depth] [-f fmt] [-i aio] [-n] [-o offset]
 *                  [-s buffer_size] [-S step] [-t cache] [-w] [--pattern=N]
 *                  [--flush-interval=N] [--image-opts] filename
 *   coblk-blkbench --drivers      (lists the drivers this build knows)
 *
 * Not a test: it prints "Run completed in X seconds." like qemu-img bench.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block.h>

typedef struct Bench {
    BlockBackend *blk;
    uint64_t image_size;
    int64_t bufsize;
    int64_t step;
    int64_t offset;
    uint64_t count;     /* requests to send */
    uint64_t sent;
    uint64_t done;
    int depth;
    int in_flight;
    bool write;
    BdrvRequestFlags wflags;
    int flush_interval;
    uint64_t since_flush;
    bool flushing;
    uint8_t *buf;
    IOVector *qiov;
    int failed;
} Bench;

static void bench_cb(void *opaque, int ret);

static void submit_more(Bench *b)
{
    while (b->in_flight < b->depth && b->sent < b->count && !b->flushing) {
        IOVector *q = &b->qiov[b->sent % (uint64_t)b->depth];

        iovector_init_buf(q, b->buf + (b->sent % (uint64_t)b->depth) * (uint64_t)b->bufsize,
                          (size_t)b->bufsize);
        b->in_flight++;
        b->sent++;
        if (b->write) {
            blk_aio_pwritev(b->blk, b->offset, q, b->wflags, bench_cb, b);
        } else {
            blk_aio_preadv(b->blk, b->offset, q, 0, bench_cb, b);
        }
        /* As qemu-img bench: the offset wraps modulo the image size, so a
         * large step visits many places; a request that would cross the end
         * (qemu-img fails it) starts again at 0. */
        b->offset = (int64_t)(((uint64_t)b->offset + (uint64_t)b->step) % b->image_size);
        if ((uint64_t)(b->offset + b->bufsize) > b->image_size) {
            b->offset = 0;
        }
    }
}

static void flush_cb(void *opaque, int ret)
{
    Bench *b = opaque;

    if (ret < 0) {
        fprintf(stderr, "Failed flush request: %s\n", strerror(-ret));
        b->failed = 1;
    }
    b->flushing = false;
    b->in_flight--;
    submit_more(b);
}

static void bench_cb(void *opaque, int ret)
{
    Bench *b = opaque;

    if (ret < 0) {
        fprintf(stderr, "Failed request: %s\n", strerror(-ret));
        b->failed = 1;
    }
    b->in_flight--;
    b->done++;
    if (b->write && b->flush_interval && ++b->since_flush == (uint64_t)b->flush_interval) {
        b->since_flush = 0;
        b->flushing = true; /* stop submitting; flush once the queue is empty */
    }
    if (b->flushing) {
        if (b->in_flight == 0) {
            b->in_flight++;
            blk_aio_flush(b->blk, flush_cb, b);
        }
        return;
    }
    blk_io_plug(b->blk);
    submit_more(b);
    blk_io_unplug(b->blk);
}

static int parse_num(const char *s, int64_t *out)
{
    uint64_t v;

    if (bopts_parse_size(s, &v) < 0 || v > INT64_MAX) {
        return -EINVAL;
    }
    *out = (int64_t)v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        { "image-opts", no_argument, NULL, 'I' },
        { "pattern", required_argument, NULL, 'P' },
        { "flush-interval", required_argument, NULL, 'F' },
        { "no-drain", no_argument, NULL, 'D' },
        { "drivers", no_argument, NULL, 'L' },
        { NULL, 0, NULL, 0 },
    };
    Bench b = { .count = 75000, .depth = 64, .bufsize = 4096, .step = 0 };
    const char *fmt = NULL;
    const char *aio = NULL;
    const char *cache = "writeback";
    bool image_opts = false;
    bool native = false;
    int pattern = 0;
    BlockOpts *opts = bopts_new();
    Error *err = NULL;
    int64_t v;
    int c;

    while ((c = getopt_long(argc, argv, "c:d:f:i:no:qs:S:t:wU", longopts, NULL)) != -1) {
        switch (c) {
        case 'c': if (parse_num(optarg, &v) < 0 || v <= 0) { goto bad; } b.count = (uint64_t)v; break;
        case 'd': if (parse_num(optarg, &v) < 0 || v <= 0 || v > 4096) { goto bad; } b.depth = (int)v; break;
        case 'f': fmt = optarg; break;
        case 'i': aio = optarg; break;
        case 'n': native = true; break;
        case 'o': if (parse_num(optarg, &b.offset) < 0) { goto bad; } break;
        case 'q': break;
        case 's': if (parse_num(optarg, &b.bufsize) < 0 || b.bufsize <= 0) { goto bad; } break;
        case 'S': if (parse_num(optarg, &b.step) < 0) { goto bad; } break;
        case 't': cache = optarg; break;
        case 'w': b.write = true; break;
        case 'U': break;
        case 'I': image_opts = true; break;
        case 'P': pattern = atoi(optarg); break;
        case 'F': b.flush_interval = atoi(optarg); break;
        case 'D': break;
        case 'L': /* the formats and protocols this build knows (bench/run asks) */
            {
                const char *names[256];

                bdrv_driver_names(names, 256);
                for (const char **n = names; *n; n++) {
                    printf("%s\n", *n);
                }
            }
            bopts_free(opts);
            return 0;
        default: goto bad;
        }
    }
    if (optind != argc - 1) {
        goto bad;
    }
    if (!b.step) {
        b.step = b.bufsize;
    }
    if (image_opts) {
        if (bopts_parse_keyval(opts, argv[optind], NULL, &err) < 0) {
            goto fail;
        }
    } else if (fmt) {
        bopts_set(opts, "driver", fmt);
    }
    if (!strcmp(cache, "none") || !strcmp(cache, "directsync")) {
        bopts_set(opts, image_opts ? "cache.direct" : "file.cache.direct", "on");
    }
    if (!strcmp(cache, "unsafe")) {
        bopts_set(opts, "cache.no-flush", "on");
    } else if (!strcmp(cache, "writethrough") || !strcmp(cache, "directsync")) {
        b.wflags = BDRV_REQ_FUA;
    } else if (strcmp(cache, "writeback") && strcmp(cache, "none")) {
        fprintf(stderr, "coblk-blkbench: invalid cache mode '%s'\n", cache);
        return 2;
    }
    if (native && !aio) {
        aio = "native"; /* -n: native AIO, as qemu-img bench (needs -t none) */
    }
    if (aio) {
        bopts_set(opts, image_opts ? "aio" : "file.aio", aio);
    }
    b.blk = blk_new_open(image_opts ? NULL : argv[optind], opts,
                         b.write ? BDRV_O_RDWR : 0, &err);
    if (!b.blk) {
        goto fail;
    }
    b.image_size = (uint64_t)blk_getlength(b.blk);
    if ((int64_t)b.image_size < b.offset + b.bufsize) {
        /* qemu-img bench divides by the size here (SIGFPE on an empty image). */
        fprintf(stderr, "coblk-blkbench: %s: the image (%lld bytes) is smaller than offset + "
                "buffer size\n", argv[optind], (long long)b.image_size);
        blk_unref(b.blk);
        return 1;
    }
    if (posix_memalign((void **)&b.buf, 4096, (size_t)b.bufsize * (size_t)b.depth)) {
        return 1;
    }
    memset(b.buf, pattern, (size_t)b.bufsize * (size_t)b.depth);
    b.qiov = calloc((size_t)b.depth, sizeof(*b.qiov));
    printf("Sending %llu %s requests, %lld bytes each, %d in parallel (starting at offset "
           "%lld, step size %lld)\n", (unsigned long long)b.count, b.write ? "write" : "read",
           (long long)b.bufsize, b.depth, (long long)b.offset, (long long)b.step);
    int64_t start = aio_clock_ns();
    submit_more(&b);
    while (b.done < b.count || b.in_flight) {
        aio_poll(blk_get_aio_context(b.blk), true);
    }
    printf("Run completed in %.3f seconds.\n", (double)(aio_clock_ns() - start) / 1e9);
    blk_unref(b.blk);
    return b.failed;

bad:
    fprintf(stderr, "usage: %s [-c count] [-d depth] [-f fmt] [-i aio] [-n] [-o offset] "
                    "[-s buffer_size] [-S step] [-t cache] [-w] [--pattern=N] "
                    "[--flush-interval=N] [--image-opts] filename\n", argv[0]);
    return 2;
fail:
    fprintf(stderr, "coblk-blkbench: %s\n", error_get_pretty(err));
    return 1;
}
