/*
 * coblk-img rebase: changes the backing file of an image. Safe mode (the
 * default) first copies into the image every range it does not allocate
 * whose content differs between the old and the new backing chain, so the
 * guest-visible content stays the same; -u only rewrites the link.
 * A relative new backing name is resolved against the image's directory,
 * as the image itself will resolve it.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>

#include "img.h"

#define REBASE_BUF (1024 * 1024)

/* Copies into top every unallocated range where old and new backing content differ. */
static int rebase_copy(BlockBackend *top, BlockBackend *nb, ImgProgress *p)
{
    int64_t len = blk_getlength(top), nlen = nb ? blk_getlength(nb) : 0;
    uint8_t *a = img_alloc(REBASE_BUF), *b = img_alloc(REBASE_BUF);
    int ret = 0;

    if (len < 0 || nlen < 0) {
        img_error("Could not get the image sizes");
        ret = -1;
        goto out;
    }
    for (int64_t off = 0; off < len;) {
        int64_t n = len - off < REBASE_BUF ? len - off : REBASE_BUF, pnum;
        BlockDriverState *top_bs = blk_bs(top);
        int st = img_block_status(top_bs, bdrv_backing_bs(top_bs), off, n, &pnum, NULL,
                                  NULL, NULL);

        if (st < 0 || pnum <= 0) {
            img_error("error while reading block status at offset %" PRId64, off);
            ret = -1;
            break;
        }
        n = pnum;
        if (!(st & BDRV_BLOCK_ALLOCATED)) {
            int64_t in_new = off >= nlen ? 0 : (nlen - off < n ? nlen - off : n);
            int r = blk_pread(top, off, n, a, 0);

            memset(b, 0, (size_t)n);
            if (r >= 0 && in_new > 0) {
                r = blk_pread(nb, off, in_new, b, 0);
            }
            if (r >= 0 && memcmp(a, b, (size_t)n) != 0) {
                r = blk_pwrite(top, off, n, a, 0);
            }
            if (r < 0) {
                img_error("error while rebasing at offset %" PRId64 ": %s", off, strerror(-r));
                ret = -1;
                break;
            }
        }
        off += n;
        progress_update(p, (uint64_t)off, (uint64_t)len);
    }
out:
    free(a);
    free(b);
    return ret;
}

static const struct option rebase_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

int img_rebase(int argc, char **argv)
{
    ImgOpen o = { .writable = true }, no = { 0 };
    const char *backing = NULL, *bfmt = NULL;
    bool unsafe = false, quiet = false, progress = false;
    BlockBackend *blk, *nb = NULL;
    Error *err = NULL;
    ImgProgress p;
    int c, ret = 1;

    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qU", rebase_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': return img_cmd_help("rebase");
        case 'f': o.fmt = optarg; break;
        case 'F': bfmt = optarg; break;
        case 'b': backing = optarg; break;
        case 'u': unsafe = true; break;
        case 'p': progress = true; break;
        case 't': o.cache = optarg; break;
        case 'T': no.cache = optarg; break;
        case 'q': quiet = true; break;
        case 'U': no.force_share = true; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("rebase", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("rebase", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("rebase", "Expecting one image file name");
    }
    if (!backing) {
        return img_usage_error("rebase", "Must specify backing file (-b)");
    }
    if (backing[0] == '\0') {
        backing = NULL;
        bfmt = NULL;
    }
    o.no_backing = unsafe;
    o.quiet = no.quiet = quiet;
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    if (!unsafe && backing) {
        char *path = img_resolve_backing(argv[optind], backing);

        no.fmt = bfmt;
        nb = path ? img_open(path, &no) : NULL;
        free(path);
        if (!nb) {
            img_error("Could not open new backing file '%s'", backing);
            goto out;
        }
        if (!bfmt) {
            bfmt = bdrv_get_format_name(blk_bs(nb));
        }
    }
    if (backing && !bfmt) {
        img_error("Could not change the backing file to '%s': backing format must be "
                  "specified (-F)", backing);
        goto out;
    }
    /* Refuse before copying anything if the format cannot store a new link. */
    BlockDriverState *bs = blk_bs(blk);
    if (bdrv_change_backing_file(bs, bs->backing_file[0] ? bs->backing_file : NULL,
                                 bs->backing_file[0] && bs->backing_format[0]
                                     ? bs->backing_format : NULL, &err) < 0) {
        img_error_err(err, "Could not change the backing file to '%s'",
                      backing ? backing : "");
        goto out;
    }
    progress_init(&p, progress && !quiet);
    if (!unsafe && rebase_copy(blk, nb, &p) < 0) {
        goto out;
    }
    progress_end(&p);
    if (bdrv_change_backing_file(blk_bs(blk), backing, bfmt, &err) < 0) {
        img_error_err(err, "Could not change the backing file to '%s'",
                      backing ? backing : "");
        goto out;
    }
    ret = 0;
out:
    if (nb) {
        blk_unref(nb);
    }
    blk_unref(blk);
    return ret;
}
