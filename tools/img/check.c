/*
 * coblk-img check: runs the format's consistency check (bdrv_check) and
 * prints qemu-img's human or JSON report. Exit codes as qemu-img:
 * 0 clean, 1 the check could not complete, 2 corruptions, 3 leaks only,
 * 63 the format cannot be checked.
 */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include "img.h"

static void report_to_stderr(void *opaque, const char *msg)
{
    fprintf(stderr, "%s\n", msg);
}

static void print_human(const BdrvCheckResult *r, bool quiet)
{
    if (quiet) {
        return;
    }
    if (!r->corruptions && !r->leaks && !r->check_errors) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            printf("\n%d errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   r->corruptions);
        }
        if (r->leaks) {
            printf("\n%d leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n", r->leaks);
        }
        if (r->check_errors) {
            printf("\n%d internal errors have occurred during the check.\n", r->check_errors);
        }
    }
    if (r->total_clusters && r->allocated_clusters) {
        printf("%lld/%lld = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed "
               "clusters\n", (long long)r->allocated_clusters, (long long)r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset) {
        printf("Image end offset: %lld\n", (long long)r->image_end_offset);
    }
}

static void print_json(const BdrvCheckResult *r, const char *file, const char *fmt)
{
    JOut o = { stdout, 0, true };

    jo_begin_obj(&o, NULL);
    if (r->image_end_offset) {
        jo_int(&o, "image-end-offset", r->image_end_offset);
    }
    if (r->total_clusters) {
        jo_int(&o, "total-clusters", r->total_clusters);
    }
    if (r->corruptions) {
        jo_int(&o, "corruptions", r->corruptions);
    }
    jo_int(&o, "check-errors", r->check_errors);
    if (r->leaks) {
        jo_int(&o, "leaks", r->leaks);
    }
    if (r->allocated_clusters) {
        jo_int(&o, "allocated-clusters", r->allocated_clusters);
    }
    if (r->leaks_fixed) {
        jo_int(&o, "leaks-fixed", r->leaks_fixed);
    }
    if (r->corruptions_fixed) {
        jo_int(&o, "corruptions-fixed", r->corruptions_fixed);
    }
    if (r->fragmented_clusters) {
        jo_int(&o, "fragmented-clusters", r->fragmented_clusters);
    }
    if (r->compressed_clusters) {
        jo_int(&o, "compressed-clusters", r->compressed_clusters);
    }
    jo_str(&o, "filename", file);
    jo_str(&o, "format", fmt);
    jo_end_obj(&o);
    jo_finish(&o);
}

static const struct option check_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "format", required_argument, NULL, 'f' },
    { "repair", required_argument, NULL, 'r' },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

/* Runs the check (with a repair pass first when asked); returns the exit code. */
static int run_check(BlockBackend *blk, BdrvCheckMode fix, bool json, bool quiet,
                     const char *file)
{
    BlockDriverState *bs = blk_bs(blk);
    BdrvCheckResult r = { .report = report_to_stderr };
    int ret = bdrv_check(bs, &r, fix);

    if (ret == -ENOTSUP) {
        img_error("This image format does not support checks");
        return 63;
    }
    if (ret < 0) {
        img_error("%s: Check failed: %s", file, strerror(-ret));
        return 1;
    }
    if (fix && (r.leaks_fixed || r.corruptions_fixed)) {
        int leaks_fixed = r.leaks_fixed, corr_fixed = r.corruptions_fixed;

        if (!json && !quiet) {
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %d leaked clusters\n    %d corruptions\n\n"
                   "Double checking the fixed image now...\n", leaks_fixed, corr_fixed);
        }
        ret = bdrv_check(bs, &r, BDRV_FIX_NONE);
        if (ret < 0) {
            img_error("%s: Check failed: %s", file, strerror(-ret));
            return 1;
        }
        r.leaks_fixed = leaks_fixed;
        r.corruptions_fixed = corr_fixed;
    }
    if (json) {
        print_json(&r, file, bdrv_get_format_name(bs));
    } else {
        print_human(&r, quiet);
    }
    if (r.check_errors) {
        return 1;
    }
    return r.corruptions ? 2 : r.leaks ? 3 : 0;
}

int img_check(int argc, char **argv)
{
    ImgOpen o = { 0 };
    BdrvCheckMode fix = BDRV_FIX_NONE;
    bool quiet = false;
    int json = 0, c, ret;
    BlockBackend *blk;

    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", check_longopts, NULL)) != -1) {
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'h': return img_cmd_help("check");
        case 'q': quiet = true; break;
        case 'T': o.cache = optarg; break;
        case 'U': o.force_share = true; break;
        case 'r':
            if (strcmp(optarg, "leaks") == 0) {
                fix = BDRV_FIX_LEAKS;
            } else if (strcmp(optarg, "all") == 0) {
                fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS;
            } else {
                return img_usage_error("check", "Unknown option value for -r "
                                       "(expecting 'leaks' or 'all'): %s", optarg);
            }
            break;
        case OPT_OUTPUT:
            if ((json = img_parse_output(optarg)) < 0) {
                return 1;
            }
            break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("check", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("check", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("check", "Expecting one image file name");
    }
    o.writable = fix != BDRV_FIX_NONE;
    o.quiet = quiet;
    if (o.writable && o.force_share) {
        img_error("--force-share/-U cannot be used with -r");
        return 1;
    }
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    ret = run_check(blk, fix, json, quiet, argv[optind]);
    blk_unref(blk);
    return ret;
}
