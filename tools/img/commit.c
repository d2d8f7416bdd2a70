/*
 * coblk-img commit: copies every range allocated above the base (the
 * backing file, or -b base deeper in the chain) into the base, growing the
 * base if the image is larger, then empties the image (bdrv_make_empty)
 * unless -d is given or -b names a deeper base (emptying the top would
 * lose the data of the layers in between, so -b implies -d as qemu-img).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

#define COMMIT_BUF (2 * 1024 * 1024)

static BlockDriverState *find_base(BlockDriverState *top, const char *name)
{
    for (BlockDriverState *bs = bdrv_backing_bs(top); bs; bs = bdrv_backing_bs(bs)) {
        const char *f = bdrv_get_filename(bs);
        const char *slash = strrchr(f, '/');

        if (strcmp(f, name) == 0 || (slash && strcmp(slash + 1, name) == 0) ||
            strcmp(bdrv_get_node_name(bs), name) == 0) {
            return bs;
        }
    }
    return NULL;
}

static int copy_down(BlockBackend *top, BlockDriverState *base_bs, BlockBackend *base,
                     int64_t len, ImgProgress *p, int64_t rate)
{
    uint8_t *buf = img_alloc(COMMIT_BUF);
    int64_t start = aio_clock_ns(), done = 0;
    int ret = 0;

    for (int64_t off = 0; off < len;) {
        int64_t n = len - off < COMMIT_BUF ? len - off : COMMIT_BUF, pnum;
        /* Allocated between top (included) and base (excluded)? */
        ret = img_block_status(blk_bs(top), base_bs, off, n, &pnum, NULL, NULL, NULL);
        if (ret < 0 || pnum <= 0) {
            img_error("error while reading block status at offset %" PRId64 ": %s", off,
                      strerror(ret < 0 ? -ret : EIO));
            ret = -1;
            break;
        }
        if (ret & BDRV_BLOCK_ALLOCATED) {
            if (ret & BDRV_BLOCK_ZERO) {
                ret = blk_pwrite_zeroes(base, off, pnum, BDRV_REQ_MAY_UNMAP);
            } else if ((ret = blk_pread(top, off, pnum, buf, 0)) >= 0) {
                ret = blk_pwrite(base, off, pnum, buf, 0);
            }
            if (ret < 0) {
                img_error("error while committing at offset %" PRId64 ": %s", off,
                          strerror(-ret));
                ret = -1;
                break;
            }
            done += pnum;
        }
        ret = 0;
        off += pnum;
        progress_update(p, (uint64_t)off, (uint64_t)len);
        while (rate && (aio_clock_ns() - start) < (int64_t)((long double)done * 1e9L / rate)) {
            aio_poll(blk_get_aio_context(top), false);
        }
    }
    free(buf);
    return ret;
}

static const struct option commit_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { NULL, 0, NULL, 0 },
};

static int do_commit(BlockBackend *blk, const char *base_name, bool drop, ImgProgress *p,
                     int64_t rate)
{
    BlockDriverState *top = blk_bs(blk), *base_bs;
    BlockBackend *base;
    Error *err = NULL;
    int64_t len = blk_getlength(blk), blen;
    int ret = 1;

    base_bs = base_name ? find_base(top, base_name) : bdrv_backing_bs(top);
    if (!base_bs) {
        img_error(base_name ? "Did not find '%s' in the backing chain of '%s'"
                            : "Image does not have a backing file%s%s", base_name ? base_name : "",
                  base_name ? bdrv_get_filename(top) : "");
        return 1;
    }
    if (bdrv_reopen_set_read_only(base_bs, false, &err) < 0) {
        img_error_err(err, "Could not reopen '%s' read-write", bdrv_get_filename(base_bs));
        return 1;
    }
    base = blk_new_with_bs(base_bs, &err);
    if (!base) {
        img_error_err(err, NULL);
        return 1;
    }
    blen = blk_getlength(base);
    if (len < 0 || blen < 0) {
        img_error("Could not get the image sizes");
        goto out;
    }
    if (blen < len && blk_truncate(base, len, false, PREALLOC_MODE_OFF, 0, &err) < 0) {
        img_error_err(err, "Could not grow the base image '%s'", bdrv_get_filename(base_bs));
        goto out;
    }
    if (copy_down(blk, base_bs, base, len, p, rate) < 0 || blk_flush(base) < 0) {
        goto out;
    }
    /* As qemu-img: a format that cannot empty itself keeps its (now redundant) data. */
    if (!drop) {
        int r = bdrv_make_empty(top, &err);
        if (r == -ENOTSUP) {
            error_free(err);
            err = NULL;
        } else if (r < 0) {
            img_error_err(err, "Could not empty %s", bdrv_get_filename(top));
            goto out;
        }
    }
    ret = 0;
out:
    blk_unref(base);
    return ret;
}

int img_commit(int argc, char **argv)
{
    ImgOpen o = { .writable = true };
    const char *base = NULL;
    bool drop = false, quiet = false, progress = false;
    int64_t rate = 0;
    ImgProgress p;
    BlockBackend *blk;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", commit_longopts, NULL)) != -1) {
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'h': return img_cmd_help("commit");
        case 't': o.cache = optarg; break;
        case 'b': base = optarg; drop = true; break;
        case 'd': drop = true; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case 'r':
            if ((rate = img_parse_size(optarg)) <= 0) {
                img_error("Invalid rate limit specified: %s", optarg);
                return 1;
            }
            break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("commit", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("commit", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("commit", "Expecting one image file name");
    }
    o.quiet = quiet;
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    progress_init(&p, progress && !quiet);
    ret = do_commit(blk, base, drop, &p, rate);
    progress_end(&p);
    if (ret == 0 && !quiet) {
        printf("Image committed.\n");
    }
    blk_unref(blk);
    return ret;
}
