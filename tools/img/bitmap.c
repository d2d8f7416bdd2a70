/*
 * coblk-img bitmap: adds, removes, clears, enables, disables and merges
 * the persistent dirty bitmaps of an image (qemu-img bitmap). Operations
 * run in command-line order; each is durable before the next starts.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "img.h"

enum {
    OPT_BM_ADD = 512,
    OPT_BM_REMOVE,
    OPT_BM_CLEAR,
    OPT_BM_ENABLE,
    OPT_BM_DISABLE,
    OPT_BM_MERGE,
};

static const struct option bitmap_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "add", no_argument, NULL, OPT_BM_ADD },
    { "remove", no_argument, NULL, OPT_BM_REMOVE },
    { "clear", no_argument, NULL, OPT_BM_CLEAR },
    { "enable", no_argument, NULL, OPT_BM_ENABLE },
    { "disable", no_argument, NULL, OPT_BM_DISABLE },
    { "merge", required_argument, NULL, OPT_BM_MERGE },
    { "granularity", required_argument, NULL, 'g' },
    { NULL, 0, NULL, 0 },
};

#define MAX_ACTIONS 64

typedef struct BitmapAction {
    BlockBitmapOp op;
    const char *src;        /* --merge SOURCE */
} BitmapAction;

typedef struct BitmapArgs {
    ImgOpen o;
    BitmapAction act[MAX_ACTIONS];
    int n_act;
    bool add;
    int64_t granularity;
    const char *src_file, *src_fmt;
} BitmapArgs;

static int push(BitmapArgs *a, BlockBitmapOp op, const char *src)
{
    if (a->n_act == MAX_ACTIONS) {
        return img_usage_error("bitmap", "too many operations (at most %d)", MAX_ACTIONS);
    }
    a->act[a->n_act].op = op;
    a->act[a->n_act].src = src;
    a->n_act++;
    return 0;
}

/* Returns 0 to go on, or exit code + 1. */
static int parse(int argc, char **argv, BitmapArgs *a)
{
    int c;

    while ((c = getopt_long(argc, argv, ":hb:F:f:g:", bitmap_longopts, NULL)) != -1) {
        int ret = 0;

        switch (c) {
        case 'h': return img_cmd_help("bitmap") + 1;
        case 'b': a->src_file = optarg; break;
        case 'F': a->src_fmt = optarg; break;
        case 'f': a->o.fmt = optarg; break;
        case 'g':
            a->granularity = img_parse_size(optarg);
            if (a->granularity <= 0) {
                img_error("Invalid granularity specified");
                return 2;
            }
            break;
        case OPT_BM_ADD: ret = push(a, BLOCK_BITMAP_ADD, NULL); a->add = true; break;
        case OPT_BM_REMOVE: ret = push(a, BLOCK_BITMAP_REMOVE, NULL); break;
        case OPT_BM_CLEAR: ret = push(a, BLOCK_BITMAP_CLEAR, NULL); break;
        case OPT_BM_ENABLE: ret = push(a, BLOCK_BITMAP_ENABLE, NULL); break;
        case OPT_BM_DISABLE: ret = push(a, BLOCK_BITMAP_DISABLE, NULL); break;
        case OPT_BM_MERGE: ret = push(a, BLOCK_BITMAP_MERGE, optarg); break;
        case OPT_IMAGE_OPTS: a->o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 2;
            }
            break;
        case ':':
            return img_usage_error("bitmap", "option requires an argument -- '%c'", optopt) + 1;
        default:
            return img_usage_error("bitmap", "invalid option -- '%s'", argv[optind - 1]) + 1;
        }
        if (ret) {
            return ret + 1;
        }
    }
    if (a->n_act == 0) {
        return img_usage_error("bitmap", "Need at least one of --add, --remove, --clear, "
                               "--enable, --disable, or --merge") + 1;
    }
    if (a->granularity && !a->add) {
        return img_usage_error("bitmap", "granularity only supported with --add") + 1;
    }
    if (a->src_fmt && !a->src_file) {
        return img_usage_error("bitmap", "-F only supported with -b") + 1;
    }
    if (a->src_file) {
        bool merge = false;

        for (int i = 0; i < a->n_act; i++) {
            merge |= a->act[i].op == BLOCK_BITMAP_MERGE;
        }
        if (!merge) {
            return img_usage_error("bitmap", "Merge bitmap source file only supported with "
                                   "--merge") + 1;
        }
    }
    if (optind != argc - 2) {
        return img_usage_error("bitmap", "Expecting filename and bitmap name") + 1;
    }
    return 0;
}

static const char *op_name(BlockBitmapOp op)
{
    static const char *const names[] = { "add", "remove", "clear", "enable", "disable",
                                         "merge" };

    return names[op];
}

int img_bitmap(int argc, char **argv)
{
    BitmapArgs a = { .o = { .writable = true } };
    BlockBackend *blk, *src = NULL;
    const char *name;
    int ret = parse(argc, argv, &a);

    if (ret) {
        return ret - 1;
    }
    name = argv[optind + 1];
    blk = img_open(argv[optind], &a.o);
    if (!blk) {
        return 1;
    }
    if (a.src_file) {
        ImgOpen so = { .fmt = a.src_fmt, .force_share = true };

        src = img_open(a.src_file, &so);
        if (!src) {
            blk_unref(blk);
            return 1;
        }
    }
    for (int i = 0; i < a.n_act && ret == 0; i++) {
        BlockBitmapRequest req = {
            .op = a.act[i].op, .name = name, .granularity = (uint64_t)a.granularity,
            .src_bs = src ? blk_bs(src) : NULL, .src_name = a.act[i].src,
        };
        Error *err = NULL;

        if (bdrv_bitmap_modify(blk_bs(blk), &req, &err) < 0) {
            img_error_err(err, "Operation %s on bitmap %s failed", op_name(req.op), name);
            ret = 1;
        }
    }
    if (src) {
        blk_unref(src);
    }
    blk_unref(blk);
    return ret;
}

/* --------------------------------------------------------------------- */
/* convert --bitmaps */

int img_bitmaps_check(BlockBackend *src, bool skip_broken)
{
    BlockBitmapInfo *l;
    int n = bdrv_bitmap_list(blk_bs(src), &l), ret = 0;

    for (int i = 0; i < n && !skip_broken; i++) {
        if (!l[i].usable) {
            img_error("Cannot copy inconsistent bitmap '%s'; try --skip-broken-bitmaps, or "
                      "use 'bitmap --remove' on the source", l[i].name);
            ret = -1;
        }
    }
    bdrv_bitmap_list_free(l, n);
    return n < 0 ? n : ret;
}

int img_bitmaps_copy(BlockBackend *src, BlockBackend *dst, bool skip_broken)
{
    BlockBitmapInfo *l;
    int n = bdrv_bitmap_list(blk_bs(src), &l), ret = 0;

    if (n < 0) {
        img_error("Could not list the bitmaps of the source: %s", strerror(-n));
        return n;
    }
    for (int i = 0; i < n && ret == 0; i++) {
        BlockBitmapRequest add = { .op = BLOCK_BITMAP_ADD, .name = l[i].name,
                                   .granularity = l[i].granularity, .disabled = true };
        BlockBitmapRequest merge = { .op = BLOCK_BITMAP_MERGE, .name = l[i].name,
                                     .src_bs = blk_bs(src), .src_name = l[i].name };
        BlockBitmapRequest enable = { .op = BLOCK_BITMAP_ENABLE, .name = l[i].name };
        Error *err = NULL;

        if (!l[i].usable && skip_broken) {
            continue;
        }
        if (bdrv_bitmap_modify(blk_bs(dst), &add, &err) < 0 ||
            bdrv_bitmap_modify(blk_bs(dst), &merge, &err) < 0 ||
            (l[i].enabled && bdrv_bitmap_modify(blk_bs(dst), &enable, &err) < 0)) {
            img_error_err(err, "Failed to copy bitmap '%s'", l[i].name);
            ret = -1;
        }
    }
    bdrv_bitmap_list_free(l, n);
    return ret;
}
