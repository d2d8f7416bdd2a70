/*
 * VD-style metadata commands beyond vbox.c: rename (the image and the
 * files it consists of), comment (show / set) and timestamp (show / set).
 * Formats without the field fail with the library's "does not support".
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img.h"

enum { OPT_KIND = 600 };

typedef struct MetaArgs {
    ImgOpen o;
    const char *kind;
} MetaArgs;

/* Parses -f, --image-opts, -q, --kind; returns the index of the file name or -1 / -2 (help). */
static int meta_parse(const char *cmd, int argc, char **argv, MetaArgs *a)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "kind", required_argument, NULL, OPT_KIND },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, ":hf:q", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': img_cmd_help(cmd); return -2;
        case 'f': a->o.fmt = optarg; break;
        case 'q': a->o.quiet = true; break;
        case OPT_IMAGE_OPTS: a->o.image_opts = true; break;
        case OPT_KIND: a->kind = optarg; break;
        default:
            img_usage_error(cmd, "invalid option -- '%s'", argv[optind - 1]);
            return -1;
        }
    }
    if (optind >= argc) {
        img_usage_error(cmd, "Expecting an image file name");
        return -1;
    }
    return optind;
}

int img_rename(int argc, char **argv)
{
    MetaArgs a = { .o.writable = true };
    int i = meta_parse("rename", argc, argv, &a), ret = 0;
    Error *err = NULL;
    BlockBackend *blk;

    if (i < 0) {
        return i == -2 ? 0 : 1;
    }
    if (argc - i != 2) {
        return img_usage_error("rename", "Expecting an image file name and a new name");
    }
    blk = img_open(argv[i], &a.o);
    if (!blk) {
        return 1;
    }
    if (bdrv_rename(blk_bs(blk), argv[i + 1], &err) < 0) {
        img_error_err(err, "%s", argv[i]);
        ret = 1;
    }
    blk_unref(blk);
    return ret;
}

int img_comment(int argc, char **argv)
{
    MetaArgs a = { 0 };
    int i = meta_parse("comment", argc, argv, &a), ret = 0;
    Error *err = NULL;
    BlockBackend *blk;
    char *text = NULL;

    if (i < 0) {
        return i == -2 ? 0 : 1;
    }
    if (argc - i > 2) {
        return img_usage_error("comment", "Unexpected argument: %s", argv[i + 2]);
    }
    a.o.writable = argc - i == 2;
    blk = img_open(argv[i], &a.o);
    if (!blk) {
        return 1;
    }
    if (a.o.writable) {
        if (bdrv_set_comment(blk_bs(blk), argv[i + 1], &err) < 0) {
            img_error_err(err, "%s", argv[i]);
            ret = 1;
        }
    } else if ((ret = bdrv_get_comment(blk_bs(blk), &text)) < 0) {
        img_error("%s: Format '%s' does not support a comment%s%s", argv[i],
                  bdrv_get_format_name(blk_bs(blk)), ret == -ENOTSUP ? "" : ": ",
                  ret == -ENOTSUP ? "" : strerror(-ret));
        ret = 1;
    } else {
        printf("%s\n", text ? text : "");
        free(text);
    }
    blk_unref(blk);
    return ret;
}

static void print_time(int64_t secs)
{
    time_t t = (time_t)secs;
    struct tm tm;
    char buf[64];

    gmtime_r(&t, &tm);
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%" PRId64 " (%s)\n", secs, buf);
}

int img_timestamp(int argc, char **argv)
{
    MetaArgs a = { .kind = "creation" };
    int i = meta_parse("timestamp", argc, argv, &a), ret = 0;
    BlockTimestampKind kind;
    Error *err = NULL;
    BlockBackend *blk;
    int64_t secs = 0;
    char *end;

    if (i < 0) {
        return i == -2 ? 0 : 1;
    }
    if (strcmp(a.kind, "creation") == 0) {
        kind = BLOCK_TIMESTAMP_CREATION;
    } else if (strcmp(a.kind, "parent-modification") == 0) {
        kind = BLOCK_TIMESTAMP_PARENT_MODIFICATION;
    } else {
        img_error("Unknown timestamp kind '%s' (creation, parent-modification)", a.kind);
        return 1;
    }
    if (argc - i > 2) {
        return img_usage_error("timestamp", "Unexpected argument: %s", argv[i + 2]);
    }
    a.o.writable = argc - i == 2;
    if (a.o.writable) {
        errno = 0;
        secs = strcmp(argv[i + 1], "now") == 0 ? (int64_t)time(NULL)
                                              : strtoll(argv[i + 1], &end, 10);
        if (strcmp(argv[i + 1], "now") != 0 && (errno || *end || end == argv[i + 1])) {
            img_error("Invalid time '%s' (seconds since 1970-01-01 UTC, or now)", argv[i + 1]);
            return 1;
        }
    }
    blk = img_open(argv[i], &a.o);
    if (!blk) {
        return 1;
    }
    if (a.o.writable) {
        if (bdrv_set_timestamp(blk_bs(blk), kind, secs, &err) < 0) {
            img_error_err(err, "%s", argv[i]);
            ret = 1;
        }
    } else if ((ret = bdrv_get_timestamp(blk_bs(blk), kind, &secs)) < 0) {
        img_error("%s: Format '%s' does not store a %s timestamp%s%s", argv[i],
                  bdrv_get_format_name(blk_bs(blk)), a.kind, ret == -ENOTSUP ? "" : ": ",
                  ret == -ENOTSUP ? "" : strerror(-ret));
        ret = 1;
    } else {
        print_time(secs);
    }
    blk_unref(blk);
    return ret;
}
