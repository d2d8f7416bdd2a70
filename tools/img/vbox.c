/*
 * VirtualBox vbox-img style commands: setuuid, compact and geometry, for
 * formats that keep these (vdi, vhd, vmdk). Formats without them fail with
 * the library's "does not support" error.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "img.h"

enum { OPT_KIND = 512, OPT_CYL, OPT_HEADS, OPT_SECTORS };

static const struct option vbox_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "kind", required_argument, NULL, OPT_KIND },
    { "cylinders", required_argument, NULL, OPT_CYL },
    { "heads", required_argument, NULL, OPT_HEADS },
    { "sectors", required_argument, NULL, OPT_SECTORS },
    { NULL, 0, NULL, 0 },
};

static bool parse_uuid(const char *s, uint8_t out[16])
{
    int n = 0;

    for (const char *p = s; *p; p++) {
        if (*p == '-') {
            continue;
        }
        if (!isxdigit((unsigned char)p[0]) || !isxdigit((unsigned char)p[1]) || n == 16) {
            return false;
        }
        char hex[3] = { p[0], p[1], 0 };
        out[n++] = (uint8_t)strtoul(hex, NULL, 16);
        p++;
    }
    return n == 16 && strlen(s) == 36 && s[8] == '-' && s[13] == '-' && s[18] == '-' &&
           s[23] == '-';
}

static bool random_uuid(uint8_t out[16])
{
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    bool ok = fd >= 0 && read(fd, out, 16) == 16;

    if (fd >= 0) {
        close(fd);
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);   /* version 4 */
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);   /* RFC 4122 variant */
    return ok;
}

static void uuid_str(const uint8_t u[16], char out[37])
{
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
             u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
             u[13], u[14], u[15]);
}

typedef struct VboxArgs {
    ImgOpen o;
    BlockUuidKind kind;
    BlockGeometry geo;
    bool progress;
    bool quiet;
} VboxArgs;

/* Parses the common options; returns the index of the file name or -1. */
static int vbox_parse(const char *cmd, int argc, char **argv, VboxArgs *a)
{
    static const char *const kinds[] = { "image", "modification", "parent",
                                         "parent-modification" };
    int c;

    while ((c = getopt_long(argc, argv, ":hf:pq", vbox_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': img_cmd_help(cmd); return -2;
        case 'f': a->o.fmt = optarg; break;
        case 'p': a->progress = true; break;
        case 'q': a->quiet = true; break;
        case OPT_IMAGE_OPTS: a->o.image_opts = true; break;
        case OPT_KIND: {
            int i;
            for (i = 0; i < 4 && strcmp(optarg, kinds[i]) != 0; i++) {
            }
            if (i == 4) {
                img_error("Unknown UUID kind '%s' (image, modification, parent, "
                          "parent-modification)", optarg);
                return -1;
            }
            a->kind = (BlockUuidKind)i;
            break;
        }
        case OPT_CYL: a->geo.cylinders = (uint32_t)strtoul(optarg, NULL, 0); break;
        case OPT_HEADS: a->geo.heads = (uint32_t)strtoul(optarg, NULL, 0); break;
        case OPT_SECTORS: a->geo.sectors = (uint32_t)strtoul(optarg, NULL, 0); break;
        default:
            img_usage_error(cmd, "invalid option -- '%s'", argv[optind - 1]);
            return -1;
        }
    }
    if (optind >= argc) {
        img_usage_error(cmd, "Expecting an image file name");
        return -1;
    }
    a->o.quiet = a->quiet;
    return optind;
}

int img_setuuid(int argc, char **argv)
{
    VboxArgs a = { .o.writable = true };
    int i = vbox_parse("setuuid", argc, argv, &a), ret = 1;
    uint8_t u[16];
    char s[37];
    Error *err = NULL;
    BlockBackend *blk;

    if (i < 0) {
        return i == -2 ? 0 : 1;
    }
    if (argc - i > 2) {
        return img_usage_error("setuuid", "Unexpected argument: %s", argv[i + 2]);
    }
    if (i + 1 < argc ? !parse_uuid(argv[i + 1], u) : !random_uuid(u)) {
        img_error("Invalid UUID '%s'", i + 1 < argc ? argv[i + 1] : "(random)");
        return 1;
    }
    blk = img_open(argv[i], &a.o);
    if (!blk) {
        return 1;
    }
    if (bdrv_set_uuid(blk_bs(blk), a.kind, u, &err) < 0) {
        img_error_err(err, "%s", argv[i]);
    } else {
        uuid_str(u, s);
        if (!a.quiet) {
            printf("UUID changed to: %s\n", s);
        }
        ret = 0;
    }
    blk_unref(blk);
    return ret;
}

static void compact_progress(void *opaque, int64_t done, int64_t total)
{
    progress_update(opaque, (uint64_t)done, (uint64_t)total);
}

int img_compact(int argc, char **argv)
{
    VboxArgs a = { .o.writable = true };
    int i = vbox_parse("compact", argc, argv, &a), ret = 0;
    Error *err = NULL;
    BlockBackend *blk;
    ImgProgress p;

    if (i < 0) {
        return i == -2 ? 0 : 1;
    }
    blk = img_open(argv[i], &a.o);
    if (!blk) {
        return 1;
    }
    progress_init(&p, a.progress && !a.quiet);
    if (bdrv_compact(blk_bs(blk), compact_progress, &p, &err) < 0) {
        img_error_err(err, "%s", argv[i]);
        ret = 1;
    }
    progress_end(&p);
    blk_unref(blk);
    return ret;
}

int img_geometry(int argc, char **argv)
{
    VboxArgs a = { 0 };
    int i = vbox_parse("geometry", argc, argv, &a), ret = 0;
    bool set;
    Error *err = NULL;
    BlockBackend *blk;
    BlockGeometry g;

    if (i < 0) {
        return i == -2 ? 0 : 1;
    }
    set = a.geo.cylinders || a.geo.heads || a.geo.sectors;
    a.o.writable = set;
    blk = img_open(argv[i], &a.o);
    if (!blk) {
        return 1;
    }
    if (set) {
        if (bdrv_set_geometry(blk_bs(blk), &a.geo, &err) < 0) {
            img_error_err(err, "%s", argv[i]);
            ret = 1;
        }
    } else if ((ret = bdrv_get_geometry(blk_bs(blk), &g)) < 0) {
        img_error("%s: Format '%s' does not support a stored geometry%s%s", argv[i],
                  bdrv_get_format_name(blk_bs(blk)), ret == -ENOTSUP ? "" : ": ",
                  ret == -ENOTSUP ? "" : strerror(-ret));
        ret = 1;
    } else {
        printf("cylinders: %u\nheads: %u\nsectors: %u\n", g.cylinders, g.heads, g.sectors);
    }
    blk_unref(blk);
    return ret;
}
