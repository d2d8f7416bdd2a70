/*
 * coblk-img info: human and JSON output in qemu-img's shapes, for one image
 * or its whole backing chain (--backing-chain). Also the snapshot table that
 * "snapshot -l" prints.
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <coblk/block-driver.h>

#include "img.h"

typedef struct ImageInfo {
    const char *filename;
    const char *format;
    int64_t virtual_size;
    int64_t actual_size;        /* -1: unknown */
    BlockDriverInfo bdi;
    bool has_bdi;
    bool is_format;         /* qemu-img shows dirty-flag for formats only */
    const char *backing;        /* as stored in the image, or NULL */
    const char *full_backing;
    const char *backing_fmt;
    JNode *specific;            /* format-specific data, or NULL */
    BlockSnapshotInfo *sn;
    int nb_sn;
} ImageInfo;

static bool collect(BlockDriverState *bs, ImageInfo *ii)
{
    Error *err = NULL;
    char *spec;

    memset(ii, 0, sizeof(*ii));
    ii->filename = img_display_name(bdrv_get_filename(bs));
    ii->format = bdrv_get_format_name(bs);
    ii->virtual_size = bdrv_getlength(bs);
    if (ii->virtual_size < 0) {
        img_error("%s: Could not get the image size: %s", ii->filename,
                  strerror((int)-ii->virtual_size));
        return false;
    }
    ii->actual_size = bdrv_get_allocated_file_size(bs);
    ii->has_bdi = bdrv_get_info(bs, &ii->bdi) == 0;
    ii->is_format = bs->drv->is_format;
    if (bs->backing_file[0]) {
        ii->backing = bs->backing_file;
        ii->full_backing = img_display_name(
            bdrv_backing_bs(bs) ? bdrv_get_filename(bdrv_backing_bs(bs))
            : bs->auto_backing_file[0] ? bs->auto_backing_file : bs->backing_file);
        ii->backing_fmt = bs->backing_format[0] ? bs->backing_format : NULL;
    }
    spec = bdrv_get_specific_info(bs, &err);
    if (err) {
        img_error_err(err, "%s: format-specific information", ii->filename);
        err = NULL;
    }
    if (spec) {
        ii->specific = json_parse(spec);
        if (!ii->specific) {
            img_error("%s: the driver returned malformed format information", ii->filename);
        }
        free(spec);
    }
    ii->nb_sn = bdrv_snapshot_list(bs, &ii->sn);
    if (ii->nb_sn < 0) {
        ii->nb_sn = 0;
    }
    return true;
}

static void release(ImageInfo *ii)
{
    json_free(ii->specific);
    free(ii->sn);
}

/* --------------------------------------------------------------------- */
/* Snapshots */

void img_print_snapshot_table(const BlockSnapshotInfo *sn, int n)
{
    printf("%-9s %-17s %7s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK",
           "ICOUNT");
    for (int i = 0; i < n; i++) {
        char size[32], date[32], clock[32], icount[32];
        time_t t = (time_t)sn[i].date_sec;
        struct tm tm;
        uint64_t ms = sn[i].vm_clock_nsec / 1000000;

        img_size_str(size, sizeof(size), sn[i].vm_state_size);
        localtime_r(&t, &tm);
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        snprintf(clock, sizeof(clock), "%02llu:%02llu:%02llu.%03llu",
                 (unsigned long long)(ms / 3600000), (unsigned long long)(ms / 60000 % 60),
                 (unsigned long long)(ms / 1000 % 60), (unsigned long long)(ms % 1000));
        if (sn[i].icount == UINT64_MAX) {
            icount[0] = '\0';
        } else {
            snprintf(icount, sizeof(icount), "%llu", (unsigned long long)sn[i].icount);
        }
        printf("%-9s %-17s %7s%20s%13s%11s\n", sn[i].id_str, sn[i].name, size, date, clock,
               icount);
    }
}

static void json_snapshots(JOut *o, const BlockSnapshotInfo *sn, int n)
{
    jo_begin_arr(o, "snapshots");
    for (int i = 0; i < n; i++) {
        jo_begin_obj(o, NULL);
        if (sn[i].icount != UINT64_MAX) {
            jo_int(o, "icount", (int64_t)sn[i].icount);
        }
        jo_int(o, "vm-clock-nsec", (int64_t)(sn[i].vm_clock_nsec % 1000000000ULL));
        jo_str(o, "name", sn[i].name);
        jo_int(o, "date-sec", sn[i].date_sec);
        jo_int(o, "date-nsec", sn[i].date_nsec);
        jo_int(o, "vm-clock-sec", (int64_t)(sn[i].vm_clock_nsec / 1000000000ULL));
        jo_str(o, "id", sn[i].id_str);
        jo_int(o, "vm-state-size", (int64_t)sn[i].vm_state_size);
        jo_end_obj(o);
    }
    jo_end_arr(o);
}

/* --------------------------------------------------------------------- */
/* Output */

static void print_human(const ImageInfo *ii)
{
    char size[32];

    img_size_str(size, sizeof(size), (uint64_t)ii->virtual_size);
    printf("image: %s\nfile format: %s\nvirtual size: %s (%lld bytes)\n", ii->filename,
           ii->format, size, (long long)ii->virtual_size);
    if (ii->actual_size >= 0) {
        img_size_str(size, sizeof(size), (uint64_t)ii->actual_size);
        printf("disk size: %s\n", size);
    } else {
        printf("disk size: unavailable\n");
    }
    if (ii->has_bdi && ii->bdi.cluster_size) {
        printf("cluster_size: %lld\n", (long long)ii->bdi.cluster_size);
    }
    if (ii->has_bdi && ii->bdi.is_dirty) {
        printf("cleanly shut down: no\n");
    }
    if (ii->backing) {
        printf("backing file: %s", ii->backing);
        if (strcmp(ii->backing, ii->full_backing) != 0) {
            printf(" (actual path: %s)", ii->full_backing);
        }
        printf("\n");
        if (ii->backing_fmt) {
            printf("backing file format: %s\n", ii->backing_fmt);
        }
    }
    if (ii->nb_sn > 0) {
        printf("Snapshot list:\n");
        img_print_snapshot_table(ii->sn, ii->nb_sn);
    }
    if (ii->specific && ii->specific->child) {
        printf("Format specific information:\n");
        json_print_human(stdout, ii->specific, 4);
    }
}

/* Keys in the order qemu-img 7.2 prints them. */
static void print_json(JOut *o, const ImageInfo *ii)
{
    jo_begin_obj(o, NULL);
    if (ii->nb_sn > 0) {
        json_snapshots(o, ii->sn, ii->nb_sn);
    }
    if (ii->backing_fmt) {
        jo_str(o, "backing-filename-format", ii->backing_fmt);
    }
    jo_int(o, "virtual-size", ii->virtual_size);
    jo_str(o, "filename", ii->filename);
    if (ii->has_bdi && ii->bdi.cluster_size) {
        jo_int(o, "cluster-size", ii->bdi.cluster_size);
    }
    jo_str(o, "format", ii->format);
    if (ii->actual_size >= 0) {
        jo_int(o, "actual-size", ii->actual_size);
    }
    if (ii->specific) {
        jo_begin_obj(o, "format-specific");
        jo_str(o, "type", ii->format);
        jo_node(o, "data", ii->specific);
        jo_end_obj(o);
    }
    if (ii->backing) {
        jo_str(o, "full-backing-filename", ii->full_backing);
        jo_str(o, "backing-filename", ii->backing);
    }
    if (ii->has_bdi || ii->is_format) {
        jo_bool(o, "dirty-flag", ii->has_bdi && ii->bdi.is_dirty);
    }
    jo_end_obj(o);
}

static const struct option info_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "format", required_argument, NULL, 'f' },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "backing-chain", no_argument, NULL, OPT_BACKING_CHAIN },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

int img_info(int argc, char **argv)
{
    ImgOpen o = { 0 };
    bool chain = false;
    int json = 0, c, ret = 0;
    JOut jo = { stdout, 0, true };
    BlockBackend *blk;

    while ((c = getopt_long(argc, argv, ":f:hU", info_longopts, NULL)) != -1) {
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'h': return img_cmd_help("info");
        case 'U': o.force_share = true; break;
        case OPT_OUTPUT:
            if ((json = img_parse_output(optarg)) < 0) {
                return 1;
            }
            break;
        case OPT_BACKING_CHAIN: chain = true; break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("info", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("info", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("info", "Expecting one image file name");
    }
    /*
     * qemu-img info opens without I/O permissions, so it works on an image
     * another process is writing; coblk gets the same with a shared open.
     */
    o.force_share = true;
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    if (json && chain) {
        jo_begin_arr(&jo, NULL);
    }
    for (BlockDriverState *bs = blk_bs(blk); bs; bs = chain ? bdrv_backing_bs(bs) : NULL) {
        ImageInfo ii;

        if (!collect(bs, &ii)) {
            ret = 1;
            break;
        }
        if (json) {
            print_json(&jo, &ii);
        } else {
            if (bs != blk_bs(blk)) {
                printf("\n");
            }
            print_human(&ii);
        }
        release(&ii);
    }
    if (json && chain) {
        jo_end_arr(&jo);
    }
    if (json) {
        jo_finish(&jo);
    }
    blk_unref(blk);
    return ret;
}
