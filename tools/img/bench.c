/*
 * coblk-img bench: qemu-img bench's request loop over the BlockBackend
 * callback API, with its flags and output lines: -c count, -d depth,
 * -f fmt, -i aio, -n (native AIO), -o offset, -s buffer size, -S step,
 * -t cache, -w (writes), --pattern, --flush-interval, --no-drain, -q, -U.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

typedef struct Bench {
    BlockBackend *blk;
    int64_t image_size;
    int64_t bufsize;
    int64_t step;
    int64_t offset;
    uint64_t count;
    uint64_t sent;
    uint64_t done;
    int depth;
    int in_flight;
    bool write;
    bool drain;             /* stop submitting while a flush runs */
    int64_t flush_interval;
    uint64_t since_flush;
    bool flushing;
    uint8_t *buf;
    IOVector *qiov;
    int failed;
} Bench;

static void bench_cb(void *opaque, int ret);

static void submit_more(Bench *b)
{
    while (b->in_flight < b->depth && b->sent < b->count && !(b->flushing && b->drain)) {
        uint64_t slot = b->sent % (uint64_t)b->depth;
        IOVector *q = &b->qiov[slot];

        iovector_init_buf(q, b->buf + slot * (uint64_t)b->bufsize, (size_t)b->bufsize);
        b->in_flight++;
        b->sent++;
        if (b->write) {
            blk_aio_pwritev(b->blk, b->offset, q, 0, bench_cb, b);
        } else {
            blk_aio_preadv(b->blk, b->offset, q, 0, bench_cb, b);
        }
        /* As qemu-img bench: the offset wraps modulo the image size, so a
         * large step visits many places; a request that would cross the end
         * starts again at 0. */
        b->offset = (int64_t)(((uint64_t)b->offset + (uint64_t)b->step) %
                              (uint64_t)b->image_size);
        if (b->offset + b->bufsize > b->image_size) {
            b->offset = 0;
        }
    }
}

static void flush_cb(void *opaque, int ret)
{
    Bench *b = opaque;

    if (ret < 0) {
        img_error("Failed flush request: %s", strerror(-ret));
        b->failed = 1;
    }
    b->flushing = false;
    b->in_flight--;
    submit_more(b);
}

static void start_flush(Bench *b)
{
    b->in_flight++;
    blk_aio_flush(b->blk, flush_cb, b);
}

static void bench_cb(void *opaque, int ret)
{
    Bench *b = opaque;

    if (ret < 0) {
        img_error("Failed request: %s", strerror(-ret));
        b->failed = 1;
    }
    b->in_flight--;
    b->done++;
    if (b->write && b->flush_interval && ++b->since_flush == (uint64_t)b->flush_interval) {
        b->since_flush = 0;
        b->flushing = true;
        if (!b->drain) {
            start_flush(b);
        }
    }
    if (b->flushing && b->drain) {
        if (b->in_flight == 0) {
            start_flush(b);
        }
        return;
    }
    blk_io_plug(b->blk);
    submit_more(b);
    blk_io_unplug(b->blk);
}

static bool parse_num(const char *opt, const char *s, int64_t min, int64_t max, int64_t *out)
{
    int64_t v = img_parse_size(s);

    if (v < min || v > max) {
        img_error("Invalid %s specified: %s", opt, s);
        return false;
    }
    *out = v;
    return true;
}

static const struct option bench_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "pattern", required_argument, NULL, OPT_PATTERN },
    { "no-drain", no_argument, NULL, OPT_NO_DRAIN },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

static int run_bench(Bench *b, int pattern, bool quiet)
{
    int64_t start;

    b->buf = img_alloc((size_t)b->bufsize * (size_t)b->depth);
    memset(b->buf, pattern, (size_t)b->bufsize * (size_t)b->depth);
    b->qiov = calloc((size_t)b->depth, sizeof(*b->qiov));
    if (!quiet) {
        printf("Sending %" PRIu64 " %s requests, %" PRId64 " bytes each, %d in parallel "
               "(starting at offset %" PRId64 ", step size %" PRId64 ")\n", b->count,
               b->write ? "write" : "read", b->bufsize, b->depth, b->offset, b->step);
        if (b->flush_interval) {
            printf("Sending flush every %" PRId64 " requests\n", b->flush_interval);
        }
        fflush(stdout);
    }
    start = aio_clock_ns();
    submit_more(b);
    while (b->done < b->count || b->in_flight) {
        aio_poll(blk_get_aio_context(b->blk), true);
    }
    if (!quiet) {
        printf("Run completed in %.3f seconds.\n", (double)(aio_clock_ns() - start) / 1e9);
    }
    free(b->qiov);
    free(b->buf);
    return b->failed;
}

int img_bench(int argc, char **argv)
{
    Bench b = { .count = 75000, .depth = 64, .bufsize = 4096, .drain = true };
    ImgOpen o = { 0 };
    const char *aio = NULL;
    bool native = false, quiet = false;
    int64_t v, pattern = 0;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", bench_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': return img_cmd_help("bench");
        case 'c':
            if (!parse_num("request count", optarg, 1, INT32_MAX, &v)) {
                return 1;
            }
            b.count = (uint64_t)v;
            break;
        case 'd':
            if (!parse_num("queue depth", optarg, 1, 4096, &v)) {
                return 1;
            }
            b.depth = (int)v;
            break;
        case 'f': o.fmt = optarg; break;
        case 'n': native = true; break;
        case 'i': aio = optarg; break;
        case 'o':
            if (!parse_num("offset", optarg, 0, INT64_MAX, &b.offset)) {
                return 1;
            }
            break;
        case 'q': quiet = true; break;
        case 's':
            if (!parse_num("buffer size", optarg, 1, INT32_MAX, &b.bufsize)) {
                return 1;
            }
            break;
        case 'S':
            if (!parse_num("step size", optarg, 0, INT32_MAX, &b.step)) {
                return 1;
            }
            break;
        case 't': o.cache = optarg; break;
        case 'w': b.write = true; break;
        case 'U': o.force_share = true; break;
        case OPT_FLUSH_INTERVAL:
            if (!parse_num("flush interval", optarg, 0, INT32_MAX, &b.flush_interval)) {
                return 1;
            }
            break;
        case OPT_PATTERN:
            if (!parse_num("pattern byte", optarg, 0, 255, &pattern)) {
                return 1;
            }
            break;
        case OPT_NO_DRAIN: b.drain = false; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case ':': return img_usage_error("bench", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("bench", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("bench", "Expecting one image file name");
    }
    if (b.flush_interval && !b.write) {
        img_error("--flush-interval is only available in write tests");
        return 1;
    }
    if (b.flush_interval && b.flush_interval < b.depth) {
        img_error("Flush interval can't be smaller than depth");
        return 1;
    }
    if (native && aio && strcmp(aio, "native") != 0) {
        img_error("-n conflicts with -i %s", aio);
        return 1;
    }
    if (!b.step) {
        b.step = b.bufsize;
    }
    o.writable = b.write;
    o.quiet = quiet;
    if (aio || native) {
        o.aio = aio ? aio : "native";
    }
    b.blk = img_open(argv[optind], &o);
    if (!b.blk) {
        return 1;
    }
    b.image_size = blk_getlength(b.blk);
    if (b.image_size < 0) {
        img_error("%s: Could not get the image size", argv[optind]);
        blk_unref(b.blk);
        return 1;
    }
    if (b.bufsize > b.image_size || b.offset > b.image_size - b.bufsize) {
        img_error("%s: the image (%" PRId64 " bytes) is smaller than offset + buffer size",
                  argv[optind], b.image_size);
        blk_unref(b.blk);
        return 1;
    }
    ret = run_bench(&b, (int)pattern, quiet);
    blk_unref(b.blk);
    return ret;
}
