/*
 * coblk-img amend: changes create options of an existing image in place
 * (bdrv_amend_options); -o help lists the format's options.
 */
#include <getopt.h>
#include <string.h>

#include "img.h"

static const struct option amend_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force", no_argument, NULL, OPT_FORCE },
    { NULL, 0, NULL, 0 },
};

int img_amend(int argc, char **argv)
{
    ImgOpen o = { .writable = true };
    BlockOpts *opts = NULL;
    bool help = false, force = false, quiet = false, progress = false;
    BlockBackend *blk;
    Error *err = NULL;
    ImgProgress p;
    int c, ret = 0;

    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", amend_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': bopts_free(opts); return img_cmd_help("amend");
        case 'o':
            if (strcmp(optarg, "help") == 0 || strcmp(optarg, "?") == 0) {
                help = true;
            } else if (!img_add_options(&opts, optarg)) {
                bopts_free(opts);
                return 1;
            }
            break;
        case 'f': o.fmt = optarg; break;
        case 't': o.cache = optarg; break;
        case 'p': progress = true; break;
        case 'q': quiet = true; break;
        case OPT_FORCE: force = true; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                bopts_free(opts);
                return 1;
            }
            break;
        default:
            bopts_free(opts);
            return img_usage_error("amend", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (help) {
        bopts_free(opts);
        if (!o.fmt) {
            img_error("Please specify a format with -f to list its options");
            return 1;
        }
        return img_print_create_opts(o.fmt);
    }
    if (!opts) {
        return img_usage_error("amend", "Must specify options (-o)");
    }
    if (optind != argc - 1) {
        bopts_free(opts);
        return img_usage_error("amend", "Expecting one image file name");
    }
    o.quiet = quiet;
    blk = img_open(argv[optind], &o);
    if (!blk) {
        bopts_free(opts);
        return 1;
    }
    progress_init(&p, progress && !quiet);
    if (bdrv_amend_options(blk_bs(blk), opts, force, &err) < 0) {
        img_error_err(err, "Error while amending options");
        ret = 1;
    }
    progress_end(&p);
    bopts_free(opts);
    blk_unref(blk);
    return ret;
}
