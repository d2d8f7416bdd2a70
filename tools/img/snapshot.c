/*
 * coblk-img snapshot: -l lists, -c creates, -a applies, -d deletes the
 * internal snapshots of an image.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "img.h"

enum { SN_LIST = 1, SN_CREATE, SN_APPLY, SN_DELETE };

static const struct option snapshot_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

static int sn_list(BlockDriverState *bs, bool quiet)
{
    BlockSnapshotInfo *sn;
    int n = bdrv_snapshot_list(bs, &sn);

    if (n < 0) {
        if (n != -ENOTSUP) {
            img_error("Could not list snapshots: %s", strerror(-n));
            return 1;
        }
        return 0;   /* qemu-img prints nothing for formats without snapshots */
    }
    if (n > 0 && !quiet) {
        printf("Snapshot list:\n");
        img_print_snapshot_table(sn, n);
    }
    free(sn);
    return 0;
}

static int sn_create(BlockDriverState *bs, const char *name)
{
    BlockSnapshotInfo sn = { 0 };
    struct timeval tv;
    Error *err = NULL;

    if (strlen(name) >= sizeof(sn.name)) {
        img_error("Snapshot name '%s' is too long", name);
        return 1;
    }
    strcpy(sn.name, name);
    gettimeofday(&tv, NULL);
    sn.date_sec = (uint32_t)tv.tv_sec;
    sn.date_nsec = (uint32_t)tv.tv_usec * 1000;
    sn.icount = 0; /* as qemu-img snapshot -c writes it (the list shows 0) */
    if (bdrv_snapshot_create(bs, &sn, &err) < 0) {
        img_error_err(err, "Could not create snapshot '%s'", name);
        return 1;
    }
    return 0;
}

int img_snapshot(int argc, char **argv)
{
    ImgOpen o = { 0 };
    const char *name = NULL;
    bool quiet = false;
    int action = 0, c, ret = 0;
    BlockBackend *blk;
    Error *err = NULL;

    while ((c = getopt_long(argc, argv, ":la:c:d:f:hqU", snapshot_longopts, NULL)) != -1) {
        int a = c == 'l' ? SN_LIST : c == 'c' ? SN_CREATE : c == 'a' ? SN_APPLY
              : c == 'd' ? SN_DELETE : 0;
        if (a) {
            if (action) {
                return img_usage_error("snapshot", "Cannot mix '-l', '-a', '-c', '-d'");
            }
            action = a;
            name = optarg;
            continue;
        }
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'h': return img_cmd_help("snapshot");
        case 'q': quiet = true; break;
        case 'U': o.force_share = true; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':':
            return img_usage_error("snapshot", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("snapshot", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("snapshot", "Expecting one image file name");
    }
    if (!action) {
        action = SN_LIST;
    }
    o.writable = action != SN_LIST;
    o.quiet = quiet;
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    switch (action) {
    case SN_LIST:
        ret = sn_list(blk_bs(blk), quiet);
        break;
    case SN_CREATE:
        ret = sn_create(blk_bs(blk), name);
        break;
    case SN_APPLY:
        if (bdrv_snapshot_goto(blk_bs(blk), name, &err) < 0) {
            img_error_err(err, "Could not apply snapshot '%s'", name);
            ret = 1;
        }
        break;
    default:
        if (bdrv_snapshot_delete(blk_bs(blk), NULL, name, &err) < 0 &&
            (error_free(err), err = NULL, bdrv_snapshot_delete(blk_bs(blk), name, NULL,
                                                                &err) < 0)) {
            img_error_err(err, "Could not delete snapshot '%s'", name);
            ret = 1;
        }
        break;
    }
    blk_unref(blk);
    return ret;
}
