/*
 * coblk-io commands other than data transfers: flush, discard, length,
 * info, map, alloc, truncate, sleep, open, close, quit, help, abort.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/coroutine.h>

#include "io.h"
#include "../img/img.h"

int io_flush_f(BlockBackend *blk, int argc, char **argv)
{
    int ret = blk_flush(blk);

    if (ret < 0) {
        printf("flush failed: %s\n", strerror(-ret));
    }
    return ret;
}

int io_discard_f(BlockBackend *blk, int argc, char **argv)
{
    bool terse = false, quiet = false;
    struct timespec t1, t2, t;
    int64_t off, len;
    int c, ret;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C': terse = true; break;
        case 'q': quiet = true; break;
        default:
            printf("discard: invalid option -- '%c'\n", optopt);
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        printf("discard: expected offset and length\n");
        return -EINVAL;
    }
    if ((off = io_cvtnum(argv[optind])) < 0) {
        io_print_cvtnum_err(off, argv[optind]);
        return -EINVAL;
    }
    if ((len = io_cvtnum(argv[optind + 1])) < 0) {
        io_print_cvtnum_err(len, argv[optind + 1]);
        return -EINVAL;
    }
    if (len > BDRV_MAX_LENGTH) {
        printf("length cannot exceed %" PRId64 ", given %s\n", (int64_t)BDRV_MAX_LENGTH,
               argv[optind + 1]);
        return -EINVAL;
    }
    t1 = io_now();
    ret = blk_pdiscard(blk, off, len);
    t2 = io_now();
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!quiet) {
        t = io_tsub(t2, t1);
        io_print_report("discard", &t, off, len, len, 1, terse);
    }
    return 0;
}

int io_length_f(BlockBackend *blk, int argc, char **argv)
{
    int64_t size = blk_getlength(blk);
    char s[64];

    if (size < 0) {
        printf("getlength: %s\n", strerror((int)-size));
        return (int)size;
    }
    io_cvtstr((double)size, s, sizeof(s));
    printf("%s\n", s);
    return 0;
}

/* The driver's JSON object in the human form (keys with '-' shown as spaces). */
static void print_specific(const char *json)
{
    JNode *n = json_parse(json);

    if (n && n->child) {
        printf("Format specific information:\n");
        json_print_human(stdout, n, 4);
    }
    json_free(n);
}

int io_info_f(BlockBackend *blk, int argc, char **argv)
{
    BlockDriverState *bs = blk_bs(blk);
    BlockDriverInfo bdi;
    Error *err = NULL;
    char s1[64], s2[64], *spec;

    printf("format name: %s\n", bdrv_get_format_name(bs));
    if (bdrv_get_info(bs, &bdi) < 0) {
        memset(&bdi, 0, sizeof(bdi));
    }
    io_cvtstr((double)bdi.cluster_size, s1, sizeof(s1));
    io_cvtstr((double)bdi.vm_state_offset, s2, sizeof(s2));
    printf("cluster size: %s\nvm state offset: %s\n", s1, s2);
    spec = bdrv_get_specific_info(bs, &err);
    if (err) {
        printf("%s\n", error_get_pretty(err));
        error_free(err);
    }
    if (spec) {
        print_specific(spec);
        free(spec);
    }
    return 0;
}

typedef struct StatusArgs {
    BlockDriverState *bs;
    int64_t off, bytes, pnum;
    bool done;
    int ret;
} StatusArgs;

static void coroutine_fn status_co(void *opaque)
{
    StatusArgs *a = opaque;

    a->ret = bdrv_co_block_status(a->bs, a->off, a->bytes, &a->pnum, NULL, NULL);
    a->done = true;
}

/* Allocation in the top layer: 1 allocated, 0 not, or -errno; *pnum bytes. */
static int is_allocated(BlockBackend *blk, int64_t off, int64_t bytes, int64_t *pnum)
{
    StatusArgs a = { blk_bs(blk), off, bytes, 0, false, 0 };
    AioContext *ctx = blk_get_aio_context(blk);

    aio_co_enter(ctx, coroutine_create(status_co, &a));
    while (!a.done) {
        aio_poll(ctx, true);
    }
    *pnum = a.pnum;
    if (a.ret < 0) {
        return a.ret;
    }
    return (a.ret & BDRV_BLOCK_ALLOCATED) ? 1 : 0;
}

int io_map_f(BlockBackend *blk, int argc, char **argv)
{
    int64_t len = blk_getlength(blk), off = 0;

    if (len < 0) {
        printf("could not get image length: %s\n", strerror((int)-len));
        return (int)len;
    }
    while (off < len) {
        int64_t pnum, n;
        int ret = is_allocated(blk, off, len - off, &pnum), r2;
        char s1[64], s2[64];

        if (ret < 0 || pnum <= 0) {
            printf("Failed to get allocation status: %s\n", strerror(ret < 0 ? -ret : EIO));
            return ret < 0 ? ret : -EIO;
        }
        /* Merge following ranges of the same state. */
        for (n = pnum; off + n < len; n += pnum) {
            r2 = is_allocated(blk, off + n, len - off - n, &pnum);
            if (r2 < 0 || pnum <= 0) {
                printf("Failed to get allocation status: %s\n", strerror(r2 < 0 ? -r2 : EIO));
                return r2 < 0 ? r2 : -EIO;
            }
            if (r2 != ret) {
                break;
            }
        }
        io_cvtstr((double)n, s1, sizeof(s1));
        io_cvtstr((double)off, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s allocated at offset %s (0x%" PRIx64 ")\n", s1,
               (uint64_t)n, ret ? "   " : "not", s2, (uint64_t)off);
        off += n;
    }
    return 0;
}

int io_alloc_f(BlockBackend *blk, int argc, char **argv)
{
    int64_t off, count = 512, sum = 0, rem, pos;
    char s[64];

    if ((off = io_cvtnum(argv[1])) < 0) {
        io_print_cvtnum_err(off, argv[1]);
        return -EINVAL;
    }
    if (argc == 3 && (count = io_cvtnum(argv[2])) < 0) {
        io_print_cvtnum_err(count, argv[2]);
        return -EINVAL;
    }
    for (pos = off, rem = count; rem > 0;) {
        int64_t pnum;
        int ret = is_allocated(blk, pos, rem, &pnum);

        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        if (pnum <= 0) {
            break;
        }
        pnum = pnum < rem ? pnum : rem;
        sum += ret ? pnum : 0;
        pos += pnum;
        rem -= pnum;
    }
    io_cvtstr((double)off, s, sizeof(s));
    printf("%" PRId64 "/%" PRId64 " bytes %sallocated at offset %s\n", sum, count,
           sum == 0 ? "not " : "", s);
    return 0;
}

int io_truncate_f(BlockBackend *blk, int argc, char **argv)
{
    static const char *const modes[] = { "off", "metadata", "falloc", "full" };
    PreallocMode prealloc = PREALLOC_MODE_OFF;
    Error *err = NULL;
    int64_t off;
    int c, ret;

    while ((c = getopt(argc, argv, "m:")) != -1) {
        int i;
        if (c != 'm') {
            printf("truncate: invalid option -- '%c'\n", optopt);
            return -EINVAL;
        }
        for (i = 0; i < 4 && strcmp(optarg, modes[i]) != 0; i++) {
        }
        if (i == 4) {
            printf("Invalid preallocation mode '%s'\n", optarg);
            return -EINVAL;
        }
        prealloc = (PreallocMode)i;
    }
    if (optind != argc - 1) {
        printf("truncate: expected one offset\n");
        return -EINVAL;
    }
    if ((off = io_cvtnum(argv[optind])) < 0) {
        io_print_cvtnum_err(off, argv[optind]);
        return -EINVAL;
    }
    ret = blk_truncate(blk, off, true, prealloc, 0, &err);
    if (ret < 0) {
        fprintf(stderr, "coblk-io: %s\n", err ? error_get_pretty(err) : strerror(-ret));
        error_free(err);
    }
    return ret;
}

int io_sleep_f(BlockBackend *blk, int argc, char **argv)
{
    char *end;
    long ms = strtol(argv[1], &end, 10);

    if (*end || ms < 0) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    usleep((useconds_t)ms * 1000);
    return 0;
}

int io_quit_f(BlockBackend *blk, int argc, char **argv)
{
    io_quit_requested = true;
    return 0;
}

int io_abort_f(BlockBackend *blk, int argc, char **argv)
{
    fflush(stdout);
    abort();
}

/* sigraise N: raise(N), as qemu-io (signal 0 and NSIG do nothing). */
int io_sigraise_f(BlockBackend *blk, int argc, char **argv)
{
    int64_t sig = io_cvtnum(argv[1]);

    if (sig < 0) {
        io_print_cvtnum_err(sig, argv[1]);
        return -EINVAL;
    }
    if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);
    return 0;
}

int io_help_f(BlockBackend *blk, int argc, char **argv)
{
    if (argc == 1) {
        io_print_cmds();
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const IoCmd *c = io_find_cmd(argv[1]);
    if (!c) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    /* "name args -- text"; args of " " (map) give qemu-io's two spaces. */
    printf("%s %s%s-- %s\n", c->name, c->args, c->args[0] && c->args[0] != ' ' ? " " : "",
           c->oneline);
    if (c->help) {
        c->help();
    }
    return 0;
}

int io_close_f(BlockBackend *blk, int argc, char **argv)
{
    io_close();
    return 0;
}

int io_open_f(BlockBackend *blk, int argc, char **argv)
{
    int flags = BDRV_O_RDWR | BDRV_O_UNMAP, c;
    bool writethrough = false;
    const char *aio = NULL, *discard = NULL;
    BlockOpts *extra = NULL;
    int ret;

    if (io_state.blk) {
        printf("file open already, try 'help close'\n");
        return -EBUSY;
    }
    while ((c = getopt(argc, argv, "snCrkt:d:o:Ui:")) != -1) {
        switch (c) {
        case 'r': flags &= ~BDRV_O_RDWR; break;
        case 'n': flags |= BDRV_O_NOCACHE; break;
        case 'C': flags |= BDRV_O_COPY_ON_READ; break;
        case 'k': aio = "native"; break;
        case 'i': aio = optarg; break;
        case 'U': flags |= BDRV_O_FORCE_SHARE; break;
        case 'd': discard = optarg; break;
        case 's': flags |= BDRV_O_SNAPSHOT; break;
        case 't':
            if (strcmp(optarg, "none") == 0) {
                flags |= BDRV_O_NOCACHE;
            } else if (strcmp(optarg, "writethrough") == 0) {
                writethrough = true;
            } else if (strcmp(optarg, "directsync") == 0) {
                flags |= BDRV_O_NOCACHE;
                writethrough = true;
            } else if (strcmp(optarg, "unsafe") == 0) {
                flags |= BDRV_O_NO_FLUSH;
            } else if (strcmp(optarg, "writeback") != 0) {
                printf("Invalid cache option: %s\n", optarg);
                return -EINVAL;
            }
            break;
        case 'o': {
            Error *err = NULL;
            if (io_state.image_opts) {
                printf("--image-opts and 'open -o' are mutually exclusive\n");
                bopts_free(extra);
                return -EINVAL;
            }
            if (!extra) {
                extra = bopts_new();
            }
            if (bopts_parse_keyval(extra, optarg, NULL, &err) < 0) {
                printf("%s\n", error_get_pretty(err));
                error_free(err);
                bopts_free(extra);
                return -EINVAL;
            }
            break;
        }
        default:
            printf("open: invalid option -- '%c'\n", optopt);
            bopts_free(extra);
            return -EINVAL;
        }
    }
    if (optind == argc - 1) {
        ret = io_open(argv[optind], NULL, false, flags, writethrough, aio, discard, extra);
    } else if (optind == argc && extra) {
        ret = io_open(NULL, NULL, false, flags, writethrough, aio, discard, extra);
    } else {
        printf("open: expected a file name\n");
        bopts_free(extra);
        ret = -EINVAL;
    }
    return ret;
}
