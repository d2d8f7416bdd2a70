/*
 * coblk-img: a qemu-img compatible image tool. main() dispatches to one
 * sub-command; this file also holds the helpers every sub-command shares
 * (messages, sizes, cache modes, opening images, running coroutines).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block-driver.h>
#include <coblk/coroutine.h>
#include <coblk/plugin.h>

#include "img.h"

typedef struct ImgCmd {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
    const char *help;
} ImgCmd;

static const ImgCmd img_cmds[] = {
    { "amend", img_amend,
      "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] "
      "-o options filename",
      "Changes format-specific options of an existing image in place." },
    { "bench", img_bench,
      "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] "
      "[--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] "
      "[-t cache] [-w] [-U] filename",
      "Runs a simple sequential I/O benchmark (reads, or writes with -w)." },
    { "bitmap", img_bitmap,
      "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... "
      "[-b source_file [-F source_fmt]] [-g granularity] [--object objectdef] "
      "[--image-opts | -f fmt] filename bitmap",
      "Changes the persistent dirty bitmaps of the image (qcow2); the operations run in\n"
      "the order given. --merge SOURCE merges bitmap SOURCE (of -b source_file, or of\n"
      "the same image) into bitmap." },
    { "check", img_check,
      "check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] "
      "[-r [leaks | all]] [-T src_cache] [-U] filename",
      "Checks the image for consistency; -r repairs leaks or all errors.\n"
      "Exit codes: 0 no errors, 1 check not completed, 2 corruptions, 3 leaks only,\n"
      "63 the format does not support checks." },
    { "commit", img_commit,
      "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] "
      "[-r rate_limit] [-d] [-p] filename",
      "Writes the data of the image into its backing file (or into base with -b);\n"
      "-d keeps the image's content instead of emptying it." },
    { "compare", img_compare,
      "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] "
      "[-s] [-U] filename1 filename2",
      "Compares the guest-visible content of two images.\n"
      "Exit codes: 0 identical, 1 different, 2 error." },
    { "comment", img_comment,
      "comment [--image-opts] [-f fmt] filename [text]",
      "Shows or sets the comment stored in the image (vdi, vmdk ddb.comment)." },
    { "compact", img_compact,
      "compact [--image-opts] [-f fmt] [-p] [-q] filename",
      "Releases zero and discarded blocks of the image in place (as vbox-img compact)." },
    { "convert", img_convert,
      "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] "
      "[--bitmaps [--skip-broken-bitmaps]] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] "
      "[-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] "
      "[-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] "
      "[--salvage] filename [filename2 [...]] output_filename",
      "Copies (and joins) images into a new image of another format.\n"
      "An output_filename of '-' streams the image to stdout (raw directly; other formats,\n"
      "such as -O vmdk -o subformat=streamOptimized, through a temporary file in $TMPDIR)." },
    { "create", img_create,
      "create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] "
      "[-o options] filename [size]",
      "Creates an image; -o help lists the format's options." },
    { "dd", img_dd,
      "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] "
      "[skip=blocks] if=input of=output",
      "Copies bs-sized blocks from if= to a new image of=." },
    { "formats", img_formats,
      "formats [--output=ofmt]",
      "Lists the drivers: kind, file extensions, capabilities and the plugin that\n"
      "provided each one." },
    { "geometry", img_geometry,
      "geometry [--image-opts] [-f fmt] [--cylinders C --heads H --sectors S] filename",
      "Shows or sets the BIOS geometry stored in the image (as vbox-img geometry)." },
    { "info", img_info,
      "info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] "
      "[-U] filename",
      "Shows information about the image." },
    { "map", img_map,
      "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] "
      "[--max-length=len] [--output=ofmt] [-U] filename",
      "Dumps the allocation map of the image." },
    { "measure", img_measure,
      "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] "
      "[--image-opts] [-f fmt] [-l snapshot_param] filename]",
      "Calculates the file size a new image needs." },
    { "rebase", img_rebase,
      "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] "
      "[-T src_cache] [-p] [-u] -b backing_file [-F backing_fmt] filename",
      "Changes the backing file of the image; without -u the content stays the same." },
    { "rename", img_rename,
      "rename [--image-opts] [-f fmt] filename new_name",
      "Renames the image with the files it consists of (vmdk extents named after it are\n"
      "renamed and the descriptor rewritten). new_name must not exist. Images that use\n"
      "this one as their backing file are not updated." },
    { "resize", img_resize,
      "resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] "
      "[--shrink] filename [+ | -]size",
      "Changes the virtual size of the image." },
    { "setuuid", img_setuuid,
      "setuuid [--image-opts] [-f fmt] [--kind image|modification|parent|parent-modification] "
      "filename [uuid]",
      "Sets a UUID of the image (a new random one without uuid), as vbox-img setuuid." },
    { "snapshot", img_snapshot,
      "snapshot [--object objectdef] [--image-opts] [-U] [-q] "
      "[-l | -a snapshot | -c snapshot | -d snapshot] filename",
      "Lists, creates, applies or deletes internal snapshots." },
    { "timestamp", img_timestamp,
      "timestamp [--image-opts] [-f fmt] [--kind creation|parent-modification] filename "
      "[seconds|now]",
      "Shows or sets a timestamp stored in the image (vpc: creation time, and the\n"
      "parent's modification time in a differencing disk), in seconds since 1970 UTC." },
};

#define N_CMDS (sizeof(img_cmds) / sizeof(img_cmds[0]))

static const ImgCmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < N_CMDS; i++) {
        if (strcmp(img_cmds[i].name, name) == 0) {
            return &img_cmds[i];
        }
    }
    return NULL;
}

/* --------------------------------------------------------------------- */
/* Messages */

void img_error(const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("coblk-img: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void img_error_err(Error *err, const char *fmt, ...)
{
    va_list ap;

    fflush(stdout);
    fputs("coblk-img: ", stderr);
    if (fmt) {
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs(": ", stderr);
    }
    fprintf(stderr, "%s\n", err ? error_get_pretty(err) : "unknown error");
    error_free(err);
}

int img_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;

    fputs("coblk-img: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'coblk-img %s --help' for more information\n", cmd);
    return 1;
}

int img_cmd_help(const char *name)
{
    const ImgCmd *c = find_cmd(name);

    if (c) {
        printf("usage: coblk-img %s\n\n%s\n", c->usage, c->help);
    }
    return 0;
}

static void print_help(void)
{
    const char *names[IMG_MAX_DRIVERS];

    bdrv_driver_names(names, IMG_MAX_DRIVERS);
    printf("usage: coblk-img [standard options] command [command options]\n"
           "coblk disk image utility (qemu-img compatible)\n\n"
           "    '-h', '--help'       display this help and exit\n"
           "    '-V', '--version'    output version information and exit\n"
           "    '--plugin PATH'      load a driver plugin first (may be repeated)\n\n"
           "Command syntax:\n");
    for (size_t i = 0; i < N_CMDS; i++) {
        printf("  %s\n", img_cmds[i].usage);
    }
    printf("\n'coblk-img <command> --help' describes one command; see coblk-img(1).\n"
           "Sizes take the suffixes k, M, G, T, P, E (powers of 1024).\n"
           "\nSupported formats:");
    for (size_t i = 0; names[i]; i++) {
        printf(" %s", names[i]);
    }
    printf("\n");
}

/* --------------------------------------------------------------------- */
/* Values */

int img_parse_output(const char *s)
{
    if (strcmp(s, "human") == 0) {
        return 0;
    }
    if (strcmp(s, "json") == 0) {
        return 1;
    }
    img_error("--output must be used with human or json as argument.");
    return -1;
}

int64_t img_parse_size(const char *s)
{
    uint64_t v;

    if (bopts_parse_size(s, &v) < 0 || v > (uint64_t)INT64_MAX) {
        return -1;
    }
    return (int64_t)v;
}

void img_size_str(char *buf, size_t len, uint64_t bytes)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
    long double v = (long double)bytes / 0.9765625L;    /* 1000/1024, exact in binary */
    int i = 0;

    /* The largest unit in which the value is at least 1000/1024 of one. */
    while (i < 6 && v >= ldexpl(1.0L, 10 * (i + 1))) {
        i++;
    }
    snprintf(buf, len, "%0.3g %s", (double)((long double)bytes / ldexpl(1.0L, 10 * i)),
             units[i]);
}

char *img_resolve_backing(const char *image, const char *backing)
{
    const char *slash = strrchr(image, '/');
    char *out;

    if (backing[0] == '/' || !slash || strstr(backing, "://") ||
        strncmp(backing, "json:", 5) == 0) {
        return strdup(backing);
    }
    if (asprintf(&out, "%.*s/%s", (int)(slash - image), image, backing) < 0) {
        return NULL;
    }
    return out;
}

const char *img_display_name(const char *filename)
{
    while (filename[0] == '.' && filename[1] == '/' && filename[2]) {
        filename += 2;
    }
    return filename;
}

void *img_alloc(size_t size)
{
    void *p = NULL;

    if (posix_memalign(&p, 4096, size ? size : 1)) {
        img_error("out of memory (%zu bytes)", size);
        exit(1);
    }
    return p;
}

bool img_is_zero(const void *buf, size_t len)
{
    const unsigned char *p = buf;

    if (len == 0) {
        return true;
    }
    if (p[0] != 0) {
        return false;
    }
    return memcmp(p, p + 1, len - 1) == 0;
}

/* --------------------------------------------------------------------- */
/* Opening images */

bool img_cache_flags(const char *mode, int *flags, bool *writethrough)
{
    *writethrough = false;
    if (!mode || strcmp(mode, "writeback") == 0) {
        return true;
    }
    if (strcmp(mode, "none") == 0 || strcmp(mode, "off") == 0) {
        *flags |= BDRV_O_NOCACHE;
    } else if (strcmp(mode, "writethrough") == 0) {
        *writethrough = true;
    } else if (strcmp(mode, "directsync") == 0) {
        *flags |= BDRV_O_NOCACHE;
        *writethrough = true;
    } else if (strcmp(mode, "unsafe") == 0) {
        *flags |= BDRV_O_NO_FLUSH;
    } else {
        img_error("Invalid cache option: %s", mode);
        return false;
    }
    return true;
}

BlockBackend *img_open(const char *filename, const ImgOpen *o)
{
    const char *shown = o->image_opts ? "(image-opts)" : filename;
    BlockOpts *opts = bopts_new();
    BlockBackend *blk;
    Error *err = NULL;
    bool writethrough;
    int flags = 0;

    if (!img_cache_flags(o->cache, &flags, &writethrough)) {
        bopts_free(opts);
        return NULL;
    }
    if (o->force_share) {
        if (o->writable) {
            img_error("--force-share/-U is only allowed with read-only images");
            bopts_free(opts);
            return NULL;
        }
        flags |= BDRV_O_FORCE_SHARE;
    }
    flags |= o->writable ? BDRV_O_RDWR : 0;
    flags |= o->no_backing ? BDRV_O_NO_BACKING : 0;
    if (o->image_opts) {
        if (o->fmt) {
            img_error("--image-opts and --format are mutually exclusive");
            bopts_free(opts);
            return NULL;
        }
        if (bopts_parse_keyval(opts, filename, NULL, &err) < 0) {
            bopts_free(opts);
            img_error_err(err, NULL);
            return NULL;
        }
        filename = NULL;
    } else if (o->fmt) {
        bopts_set(opts, "driver", o->fmt);
    }
    if (img_objects_apply_name(opts, &filename, &err) < 0) {
        img_error_err(err, "Could not open '%s'", shown);
        bopts_free(opts);
        return NULL;
    }
    if (img_objects_apply(opts) < 0) {
        bopts_free(opts);
        return NULL;
    }
    /* A flag, not file.aio: backing files inherit it, as with qemu-img's -i. */
    if (o->aio && bdrv_parse_aio(o->aio, &flags) < 0) {
        img_error("Invalid aio option: %s", o->aio);
        bopts_free(opts);
        return NULL;
    }
    blk = blk_new_open(filename, opts, flags, &err);
    if (!blk) {
        img_error_err(err, "Could not open '%s'", shown);
        return NULL;
    }
    if (writethrough) {
        blk_set_enable_write_cache(blk, false);
    }
    /* As qemu-img: only a writable image gets the warning. */
    if (blk_bs(blk)->probed && strcmp(bdrv_get_format_name(blk_bs(blk)), "raw") == 0 &&
        o->writable && !o->quiet) {
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                "         Automatically detecting the format is dangerous for raw images, "
                "write operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                filename);
    }
    return blk;
}

bool img_add_options(BlockOpts **opts, const char *str)
{
    Error *err = NULL;

    if (!*opts) {
        *opts = bopts_new();
    }
    if (bopts_parse_keyval(*opts, str, NULL, &err) < 0) {
        img_error_err(err, "Invalid option list '%s'", str);
        return false;
    }
    return true;
}

static const char *opt_type_str(BlockOptType t)
{
    switch (t) {
    case BLOCK_OPT_BOOL:
        return "bool (on/off)";
    case BLOCK_OPT_NUMBER:
        return "num";
    case BLOCK_OPT_SIZE:
        return "size";
    default:
        return "str";
    }
}

static int cmp_opt_desc(const void *a, const void *b)
{
    const BlockCreateOptDesc *const *x = a, *const *y = b;

    return strcmp((*x)->name, (*y)->name);
}

int img_print_create_opts(const char *fmt)
{
    const BlockDriver *drv = bdrv_find_format(fmt);
    const BlockCreateOptDesc *d;

    if (!drv) {
        img_error("Unknown file format '%s'", fmt);
        return 1;
    }
    if (!drv->co_create_opts) {
        img_error("Format driver '%s' does not support image creation", fmt);
        return 1;
    }
    d = bdrv_create_opts(fmt);
    printf("Supported %s options:\n", fmt);
    if (!d) {
        printf("  size=<size>            - Virtual disk size\n");
    }
    /* Sorted by name, as qemu-img lists them. */
    size_t n = 0;
    while (d && d[n].name) {
        n++;
    }
    const BlockCreateOptDesc **sorted = calloc(n ? n : 1, sizeof(*sorted));
    for (size_t i = 0; i < n; i++) {
        sorted[i] = &d[i];
    }
    qsort(sorted, n, sizeof(*sorted), cmp_opt_desc);
    for (size_t i = 0; i < n; i++) {
        d = sorted[i];
        char left[64];

        snprintf(left, sizeof(left), "%s=<%s>", d->name, opt_type_str(d->type));
        printf("  %-22s - %s", left, d->help ? d->help : "");
        if (d->def_value) {
            printf(" (default: %s)", d->def_value);
        }
        printf("\n");
    }
    free(sorted);
    if (drv->is_format) {
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    }
    return 0;
}

/* --------------------------------------------------------------------- */
/* Coroutines */

typedef struct ImgCoRun {
    ImgCoFn *fn;
    void *opaque;
    int64_t ret;
    bool done;
} ImgCoRun;

static void coroutine_fn img_co_entry(void *opaque)
{
    ImgCoRun *r = opaque;

    r->ret = r->fn(r->opaque);
    r->done = true;
}

int64_t img_run_co(AioContext *ctx, ImgCoFn *fn, void *opaque)
{
    ImgCoRun r = { fn, opaque, 0, false };

    aio_co_enter(ctx, coroutine_create(img_co_entry, &r));
    while (!r.done) {
        aio_poll(ctx, true);
    }
    return r.ret;
}

typedef struct StatusArgs {
    BlockDriverState *bs, *base;
    int64_t offset, bytes;
    int64_t *pnum, *map;
    BlockDriverState **file;
    int *depth;
} StatusArgs;

static int64_t status_co(void *opaque)
{
    StatusArgs *a = opaque;

    return bdrv_co_block_status_above(a->bs, a->base, a->offset, a->bytes, a->pnum, a->map,
                                      a->file, a->depth);
}

int img_block_status(BlockDriverState *bs, BlockDriverState *base, int64_t offset,
                     int64_t bytes, int64_t *pnum, int64_t *map, BlockDriverState **file,
                     int *depth)
{
    StatusArgs a = { bs, base, offset, bytes, pnum, map, file, depth };

    return (int)img_run_co(bdrv_get_aio_context(bs), status_co, &a);
}

/* --------------------------------------------------------------------- */

static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            return false;
        }
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            return true;
        }
    }
    return false;
}

/* Loads the plugins of leading "--plugin PATH" / "--plugin=PATH" options. */
static int load_plugins(int *argc, char ***argv)
{
    while (*argc > 1 && strncmp((*argv)[1], "--plugin", 8) == 0 &&
           ((*argv)[1][8] == '=' || (*argv)[1][8] == 0)) {
        const char *path = (*argv)[1][8] == '=' ? (*argv)[1] + 9 : (*argc > 2 ? (*argv)[2] : 0);
        int used = (*argv)[1][8] == '=' ? 1 : 2;
        Error *err = NULL;

        if (!path) {
            img_error("--plugin needs a path");
            return -1;
        }
        if (coblk_plugin_load(path, &err) < 0) {
            img_error_err(err, NULL);
            return -1;
        }
        (*argv)[used] = (*argv)[0];
        *argv += used;
        *argc -= used;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const ImgCmd *c;

    if (load_plugins(&argc, &argv) < 0) {
        return 1;
    }
    if (argc < 2) {
        img_error("Not enough arguments\nTry 'coblk-img --help' for more information");
        return 1;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        print_help();
        return 0;
    }
    if (strcmp(argv[1], "-V") == 0 || strcmp(argv[1], "--version") == 0) {
        printf("coblk-img version 0.1.0 (qemu-img 7.2 compatible)\n");
        return 0;
    }
    c = find_cmd(argv[1]);
    if (!c && strcmp(argv[1], "bitmap") == 0) {
        img_error("bitmap: persistent dirty bitmaps are not supported by coblk");
        return 1;
    }
    if (!c) {
        img_error("Command not found: %s", argv[1]);
        return 1;
    }
    if (wants_help(argc - 1, argv + 1)) {
        return img_cmd_help(c->name);
    }
    setvbuf(stdout, NULL, _IOFBF, 1 << 16);
    return c->fn(argc - 1, argv + 1);
}
