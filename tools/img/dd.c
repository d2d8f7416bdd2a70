/*
 * coblk-img dd: copies bs-sized blocks (skip=, count=) from if= into a new
 * image of= of format -O. Blocks that read as zeroes are left sparse in the
 * new (zero-initialised) image.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

typedef struct DdArgs {
    int64_t bs;
    int64_t count;      /* -1: to the end */
    int64_t skip;
    const char *in;
    const char *out;
} DdArgs;

static int parse_operand(DdArgs *d, const char *arg)
{
    const char *eq = strchr(arg, '=');
    int64_t v;

    if (!eq) {
        img_error("unrecognized operand %s", arg);
        return -1;
    }
    if (strncmp(arg, "if=", 3) == 0) {
        d->in = eq + 1;
        return 0;
    }
    if (strncmp(arg, "of=", 3) == 0) {
        d->out = eq + 1;
        return 0;
    }
    v = img_parse_size(eq + 1);
    if (strncmp(arg, "bs=", 3) == 0) {
        if (v < 1 || v > INT32_MAX) {
            img_error("Invalid bs specified. Must be between 1 and %d.", INT32_MAX);
            return -1;
        }
        d->bs = v;
    } else if (strncmp(arg, "count=", 6) == 0) {
        if (v < 0) {
            img_error("invalid number: '%s'", eq + 1);
            return -1;
        }
        d->count = v;
    } else if (strncmp(arg, "skip=", 5) == 0) {
        if (v < 0) {
            img_error("invalid number: '%s'", eq + 1);
            return -1;
        }
        d->skip = v;
    } else {
        img_error("unrecognized operand %s", arg);
        return -1;
    }
    return 0;
}

static int dd_copy(BlockBackend *in, BlockBackend *out, const DdArgs *d, int64_t start,
                   int64_t size)
{
    uint8_t *buf = img_alloc((size_t)d->bs);
    int ret = 0;

    for (int64_t done = 0; done < size;) {
        int64_t n = size - done < d->bs ? size - done : d->bs;
        int r = blk_pread(in, start + done, n, buf, 0);

        if (r < 0) {
            img_error("error while reading from input image file: %s", strerror(-r));
            ret = 1;
            break;
        }
        if (!img_is_zero(buf, (size_t)n) && (r = blk_pwrite(out, done, n, buf, 0)) < 0) {
            img_error("error while writing to output image file: %s", strerror(-r));
            ret = 1;
            break;
        }
        done += n;
    }
    free(buf);
    if (ret == 0 && blk_flush(out) < 0) {
        img_error("error while flushing the output image file");
        ret = 1;
    }
    return ret;
}

static const struct option dd_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

int img_dd(int argc, char **argv)
{
    DdArgs d = { .bs = 512, .count = -1 };
    ImgOpen io = { 0 }, oo = { .writable = true, .cache = "unsafe" };
    const char *out_fmt = "raw";
    BlockBackend *in = NULL, *out = NULL;
    int64_t in_size, start, size;
    Error *err = NULL;
    BlockOpts *opts;
    char buf[32];
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, ":hf:O:U", dd_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': return img_cmd_help("dd");
        case 'f': io.fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'U': io.force_share = true; break;
        case OPT_IMAGE_OPTS: io.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("dd", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("dd", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    for (int i = optind; i < argc; i++) {
        if (parse_operand(&d, argv[i]) < 0) {
            return 1;
        }
    }
    if (!d.in || !d.out) {
        img_error("Must specify both input and output files");
        return 1;
    }
    in = img_open(d.in, &io);
    if (!in) {
        return 1;
    }
    in_size = blk_getlength(in);
    if (in_size < 0) {
        img_error("Failed to get size for '%s'", d.in);
        goto out;
    }
    if (d.skip > INT64_MAX / d.bs) {
        img_error("Input offset too large");
        goto out;
    }
    /* As qemu-img dd: count= counts from the start of the input, skipped blocks included. */
    start = d.skip * d.bs;
    size = in_size;
    if (d.count >= 0 && d.count <= INT64_MAX / d.bs && d.count * d.bs < size) {
        size = d.count * d.bs;
    }
    if (start > size) {
        img_error("%s: cannot skip to specified offset", d.in);
        goto out;
    }
    size -= start;
    opts = bopts_new();
    snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)((size + 511) & ~(int64_t)511));
    bopts_set(opts, "size", buf);
    if (bdrv_create(out_fmt, d.out, opts, &err) < 0) {
        img_error_err(err, "%s", d.out);
        goto out;
    }
    oo.fmt = out_fmt;
    out = img_open(d.out, &oo);
    if (out) {
        ret = dd_copy(in, out, &d, start, size);
    }
out:
    if (out) {
        blk_unref(out);
    }
    blk_unref(in);
    return ret;
}
