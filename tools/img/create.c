/*
 * coblk-img create: -f fmt, -o options (or -o help), -b/-F backing file,
 * -u (do not open the backing file), a size with suffixes.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>

#include "img.h"

static const struct option create_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { NULL, 0, NULL, 0 },
};

static bool is_help_opt(const char *s)
{
    return strcmp(s, "help") == 0 || strcmp(s, "?") == 0;
}

/* The backing image's size, for a create without an explicit size. */
static int64_t backing_size(const char *file, const char *backing, const char *bfmt)
{
    ImgOpen o = { .fmt = bfmt, .force_share = true, .quiet = true };
    char *path = img_resolve_backing(file, backing);
    BlockBackend *blk = path ? img_open(path, &o) : NULL;
    int64_t len;

    free(path);
    if (!blk) {
        img_error("%s: Could not open backing image.", file);
        return -1;
    }
    len = blk_getlength(blk);
    blk_unref(blk);
    if (len < 0) {
        img_error("%s: Could not get the size of backing image '%s'", file, backing);
    }
    return len;
}

/* "Formatting 'f', fmt=raw size=N k=v ..." with each create option and its default. */
static void print_formatting(const char *file, const char *fmt, const BlockOpts *opts)
{
    const BlockCreateOptDesc *d = bdrv_create_opts(fmt);

    printf("Formatting '%s', fmt=%s", file, fmt);
    for (size_t i = 0; i < bopts_count(opts); i++) {
        printf(" %s=%s", bopts_key_at(opts, i), bopts_value_at(opts, i));
    }
    for (; d && d->name; d++) {
        if (!bopts_has(opts, d->name) && d->def_value) {
            printf(" %s=%s", d->name, d->def_value);
        }
    }
    printf("\n");
    fflush(stdout);
}

typedef struct CreateArgs {
    const char *fmt;
    const char *backing;
    const char *bfmt;
    bool unsafe;
    bool quiet;
    BlockOpts *opts;
} CreateArgs;

static int do_create(const char *file, const char *size_str, CreateArgs *a)
{
    Error *err = NULL;
    int64_t size = -1;
    char buf[32];

    if (size_str) {
        if (bopts_has(a->opts, "size")) {
            img_error("%s: The image size must be specified only once", file);
            return 1;
        }
        size = img_parse_size(size_str);
        if (size < 0) {
            img_error("Invalid image size specified. You may use k, M, G, T, P or E suffixes "
                      "for\ncoblk-img: kilobytes, megabytes, gigabytes, terabytes, petabytes "
                      "and exabytes.");
            return 1;
        }
    } else if (bopts_has(a->opts, "size")) {
        size = img_parse_size(bopts_get(a->opts, "size"));
        if (size < 0) {
            img_error("%s: Parameter 'size' expects a size", file);
            return 1;
        }
    }
    if (a->backing) {
        if (!a->bfmt) {
            img_error("%s: Backing file specified without backing format (use -F)", file);
            return 1;
        }
        if (size < 0 && !a->unsafe) {
            size = backing_size(file, a->backing, a->bfmt);
            if (size < 0) {
                return 1;
            }
        }
        bopts_set(a->opts, "backing_file", a->backing);
        bopts_set(a->opts, "backing_fmt", a->bfmt);
    }
    if (size < 0) {
        img_error("%s: Image creation needs a size parameter", file);
        return 1;
    }
    snprintf(buf, sizeof(buf), "%lld", (long long)size);
    bopts_del(a->opts, "size");
    BlockOpts *shown = bopts_new();
    bopts_set(shown, "size", buf);
    for (size_t i = 0; i < bopts_count(a->opts); i++) {
        bopts_set(shown, bopts_key_at(a->opts, i), bopts_value_at(a->opts, i));
    }
    if (!a->quiet) {
        print_formatting(file, a->fmt, shown);
    }
    bopts_free(shown);
    /* Sizes are whole sectors, as qemu-img rounds them. */
    snprintf(buf, sizeof(buf), "%lld", (long long)((size + 511) & ~511LL));
    bopts_set(a->opts, "size", buf);
    if (bdrv_create(a->fmt, file, a->opts, &err) < 0) {
        a->opts = NULL;
        img_error_err(err, "%s", file);
        return 1;
    }
    a->opts = NULL;
    return 0;
}

int img_create(int argc, char **argv)
{
    CreateArgs a = { .fmt = "raw" };
    bool help = false;
    int c, ret;

    while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", create_longopts, NULL)) != -1) {
        switch (c) {
        case 'F': a.bfmt = optarg; break;
        case 'b': a.backing = optarg; break;
        case 'f': a.fmt = optarg; break;
        case 'h': return img_cmd_help("create");
        case 'q': a.quiet = true; break;
        case 'u': a.unsafe = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                goto fail;
            }
            break;
        case 'o':
            if (is_help_opt(optarg)) {
                help = true;
            } else if (!img_add_options(&a.opts, optarg)) {
                goto fail;
            }
            break;
        case ':':
            img_usage_error("create", "option requires an argument -- '%c'", optopt);
            goto fail;
        default:
            img_usage_error("create", "invalid option -- '%s'", argv[optind - 1]);
            goto fail;
        }
    }
    if (help) {
        bopts_free(a.opts);
        return img_print_create_opts(a.fmt);
    }
    if (!a.opts) {
        a.opts = bopts_new();
    }
    if (!bdrv_find_format(a.fmt)) {
        img_error("%s: Unknown file format '%s'", optind < argc ? argv[optind] : "", a.fmt);
        goto fail;
    }
    if (optind >= argc) {
        img_usage_error("create", "Expecting image file name");
        goto fail;
    }
    if (argc - optind > 2) {
        img_usage_error("create", "Unexpected argument: %s", argv[optind + 2]);
        goto fail;
    }
    ret = do_create(argv[optind], optind + 1 < argc ? argv[optind + 1] : NULL, &a);
    bopts_free(a.opts);
    return ret;
fail:
    bopts_free(a.opts);
    return 1;
}
