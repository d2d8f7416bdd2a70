/*
 * coblk-img measure: the file size a new image of -O format needs, for
 * --size N or for the data of an existing image (bdrv_measure).
 */
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "img.h"

static const struct option measure_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "size", required_argument, NULL, OPT_SIZE },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

static void print_measure(const BlockMeasureInfo *m, bool json)
{
    if (json) {
        JOut o = { stdout, 0, true };

        jo_begin_obj(&o, NULL);
        jo_int(&o, "required", (int64_t)m->required);
        jo_int(&o, "fully-allocated", (int64_t)m->fully_allocated);
        if (m->has_bitmaps) {
            jo_int(&o, "bitmaps", (int64_t)m->bitmaps);
        }
        jo_end_obj(&o);
        jo_finish(&o);
        return;
    }
    printf("required size: %" PRIu64 "\nfully allocated size: %" PRIu64 "\n", m->required,
           m->fully_allocated);
    if (m->has_bitmaps) {
        printf("bitmaps size: %" PRIu64 "\n", m->bitmaps);
    }
}

int img_measure(int argc, char **argv)
{
    ImgOpen o = { .quiet = true };
    const char *out_fmt = "raw", *snapshot = NULL;
    BlockOpts *opts = NULL;
    BlockMeasureInfo m;
    BlockBackend *blk = NULL;
    Error *err = NULL;
    int64_t size = -1;
    int json = 0, c, ret = 1;
    char buf[32];

    while ((c = getopt_long(argc, argv, ":hf:O:o:l:U", measure_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': bopts_free(opts); return img_cmd_help("measure");
        case 'f': o.fmt = optarg; break;
        case 'O': out_fmt = optarg; break;
        case 'U': o.force_share = true; break;
        case 'o':
            if (strcmp(optarg, "help") == 0 || strcmp(optarg, "?") == 0) {
                bopts_free(opts);
                return img_print_create_opts(out_fmt);
            }
            if (!img_add_options(&opts, optarg)) {
                goto out;
            }
            break;
        case 'l': snapshot = optarg; break;
        case OPT_SIZE:
            if ((size = img_parse_size(optarg)) < 0) {
                img_error("Invalid size specified. Must be between 0 and %lld.",
                          (long long)BDRV_MAX_LENGTH);
                goto out;
            }
            break;
        case OPT_OUTPUT:
            if ((json = img_parse_output(optarg)) < 0) {
                goto out;
            }
            break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                goto out;
            }
            break;
        default:
            img_usage_error("measure", "invalid option -- '%s'", argv[optind - 1]);
            goto out;
        }
    }
    if ((size >= 0) == (optind < argc) || argc - optind > 1) {
        img_error("Either --size N or one filename must be specified.");
        goto out;
    }
    if (!opts) {
        opts = bopts_new();
    }
    if (size >= 0) {
        snprintf(buf, sizeof(buf), "%" PRId64, size);
        bopts_set(opts, "size", buf);
    } else {
        blk = img_open(argv[optind], &o);
        if (!blk) {
            goto out;
        }
        if (snapshot && bdrv_snapshot_load_tmp_param(blk_bs(blk), snapshot, &err) < 0) {
            img_error_err(err, "Failed to load snapshot");
            goto out;
        }
        snprintf(buf, sizeof(buf), "%" PRId64, blk_getlength(blk));
        bopts_set(opts, "size", buf);
    }
    if (bdrv_measure(out_fmt, opts, blk ? blk_bs(blk) : NULL, &m, &err) < 0) {
        img_error_err(err, NULL);
        goto out;
    }
    print_measure(&m, json);
    ret = 0;
out:
    bopts_free(opts);
    if (blk) {
        blk_unref(blk);
    }
    return ret;
}
