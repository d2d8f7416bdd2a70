/*
 * coblk-img resize: sets the virtual size ("size", "+size" or "-size");
 * shrinking needs --shrink. The size is the last argument and is taken out
 * before option parsing so that "-1G" is not read as an option.
 */
#include <getopt.h>
#include <string.h>

#include "img.h"

static const char *const prealloc_names[] = { "off", "metadata", "falloc", "full" };

static const struct option resize_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "preallocation", required_argument, NULL, OPT_PREALLOC },
    { "shrink", no_argument, NULL, OPT_SHRINK },
    { NULL, 0, NULL, 0 },
};

static int do_resize(BlockBackend *blk, const char *size_str, PreallocMode prealloc,
                     bool shrink, bool quiet)
{
    int64_t cur = blk_getlength(blk), n, size;
    Error *err = NULL;
    int rel = 0;

    if (cur < 0) {
        img_error("Failed to inquire current image length: %s", strerror((int)-cur));
        return 1;
    }
    if (size_str[0] == '+' || size_str[0] == '-') {
        rel = size_str[0] == '+' ? 1 : -1;
        size_str++;
    }
    n = img_parse_size(size_str);
    if (n < 0) {
        img_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes "
                  "for\ncoblk-img: kilobytes, megabytes, gigabytes, terabytes, petabytes "
                  "and exabytes.");
        return 1;
    }
    if (rel > 0 && n > INT64_MAX - cur) {
        img_error("New image size is too large");
        return 1;
    }
    size = rel > 0 ? cur + n : rel < 0 ? cur - n : n;
    if (size <= 0) {
        img_error("New image size must be positive");
        return 1;
    }
    if (size < cur) {
        if (!shrink) {
            img_error("Use the --shrink option to perform a shrink operation.");
            return 1;
        }
        img_error("warning: Shrinking an image will delete all data beyond the shrunken "
                  "image's end. Before performing such an operation, make sure there is no "
                  "important data there.");
        if (prealloc != PREALLOC_MODE_OFF) {
            img_error("Preallocation can only be used for growing images");
            return 1;
        }
    }
    if (blk_truncate(blk, size, true, prealloc, 0, &err) < 0) {
        img_error_err(err, NULL);
        return 1;
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    return 0;
}

int img_resize(int argc, char **argv)
{
    ImgOpen o = { .writable = true, .no_backing = false };
    PreallocMode prealloc = PREALLOC_MODE_OFF;
    bool shrink = false, quiet = false;
    const char *size_str;
    BlockBackend *blk;
    int c, ret;

    if (argc < 3) {
        return img_usage_error("resize", "Expecting image file name and size");
    }
    size_str = argv[--argc];
    while ((c = getopt_long(argc, argv, ":f:hq", resize_longopts, NULL)) != -1) {
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'h': return img_cmd_help("resize");
        case 'q': quiet = true; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_SHRINK: shrink = true; break;
        case OPT_PREALLOC: {
            size_t i;
            for (i = 0; i < 4 && strcmp(optarg, prealloc_names[i]) != 0; i++) {
            }
            if (i == 4) {
                img_error("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            prealloc = (PreallocMode)i;
            break;
        }
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("resize", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("resize", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("resize", "Expecting image file name and size");
    }
    o.quiet = quiet;
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    ret = do_resize(blk, size_str, prealloc, shrink, quiet);
    blk_unref(blk);
    return ret;
}
