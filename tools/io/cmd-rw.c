/*
 * coblk-io synchronous data commands: read, write, readv, writev.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io.h"

typedef struct RwOpts {
    bool terse, quiet, verbose, vmstate, zero, compressed, fua, no_fallback, unmap;
    int pattern;            /* -1: none */
    int64_t pat_off, pat_len;
    const char *source;
} RwOpts;

/* Offset and length arguments; -1 after printing the error. */
static int parse_off_len(const char *so, const char *sl, int64_t *off, int64_t *len)
{
    *off = io_cvtnum(so);
    if (*off < 0) {
        io_print_cvtnum_err(*off, so);
        return -1;
    }
    *len = io_cvtnum(sl);
    if (*len < 0) {
        io_print_cvtnum_err(*len, sl);
        return -1;
    }
    if (*len > BDRV_MAX_LENGTH || *len > INT32_MAX) {
        printf("length cannot exceed %" PRId64 ", given %s\n", (int64_t)INT32_MAX, sl);
        return -1;
    }
    return 0;
}

static int do_read(BlockBackend *blk, void *buf, int64_t off, int64_t len, bool vmstate)
{
    int ret;

    if (vmstate) {
        ret = bdrv_load_vmstate(blk_bs(blk), buf, off, len);
        return ret < 0 ? ret : 0;
    }
    return blk_pread(blk, off, len, buf, 0);
}

int io_read_f(BlockBackend *blk, int argc, char **argv)
{
    RwOpts o = { .pattern = -1, .pat_len = -1 };
    int64_t off, len;
    struct timespec t1, t2;
    uint8_t *buf;
    int c, ret;

    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b': o.vmstate = true; break;
        case 'C': o.terse = true; break;
        case 'p': break;    /* obsolete in qemu-io too */
        case 'q': o.quiet = true; break;
        case 'v': o.verbose = true; break;
        case 'P':
            if ((o.pattern = io_parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        case 'l':
            if ((o.pat_len = io_cvtnum(optarg)) < 0) {
                io_print_cvtnum_err(o.pat_len, optarg);
                return -EINVAL;
            }
            break;
        case 's':
            if ((o.pat_off = io_cvtnum(optarg)) < 0) {
                io_print_cvtnum_err(o.pat_off, optarg);
                return -EINVAL;
            }
            break;
        default:
            printf("read: invalid option -- '%c'\n", optopt);
            return -EINVAL;
        }
    }
    if (optind != argc - 2) {
        printf("read: expected offset and length\n");
        return -EINVAL;
    }
    if (parse_off_len(argv[optind], argv[optind + 1], &off, &len) < 0) {
        return -EINVAL;
    }
    if ((o.pat_len >= 0 || o.pat_off) && o.pattern < 0) {
        printf("-s and -l need a pattern (-P)\n");
        return -EINVAL;
    }
    if (o.pat_len < 0) {
        o.pat_len = len - o.pat_off;
    }
    if (o.pat_off > len || o.pat_len > len - o.pat_off) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    buf = io_alloc_buf((size_t)len, 0xab);
    t1 = io_now();
    ret = do_read(blk, buf, off, len, o.vmstate);
    t2 = io_now();
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    ret = 0;
    if (o.pattern >= 0) {
        ret = io_check_pattern(buf + o.pat_off, off + o.pat_off, o.pat_len, o.pattern);
    }
    if (o.verbose) {
        io_dump_buffer(buf, off, len);
    }
    if (!o.quiet) {
        struct timespec t = io_tsub(t2, t1);
        io_print_report("read", &t, off, len, len, 1, o.terse);
    }
out:
    io_free_buf(buf);
    return ret;
}

/* Fills buf from a file (write -s). */
static int read_source(const char *path, void *buf, int64_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int64_t done = 0;

    if (fd < 0) {
        printf("Failed to open '%s': %s\n", path, strerror(errno));
        return -errno;
    }
    while (done < len) {
        ssize_t n = read(fd, (uint8_t *)buf + done, (size_t)(len - done));
        if (n <= 0) {
            printf("Failed to read '%s': %s\n", path, n ? strerror(errno) : "file too short");
            close(fd);
            return -EIO;
        }
        done += n;
    }
    close(fd);
    return 0;
}

static int parse_write_opts(int argc, char **argv, RwOpts *o)
{
    int c, n = 0;

    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b': o->vmstate = true; break;
        case 'c': o->compressed = true; break;
        case 'C': o->terse = true; break;
        case 'f': o->fua = true; break;
        case 'n': o->no_fallback = true; break;
        case 'p': break;
        case 'q': o->quiet = true; break;
        case 'u': o->unmap = true; break;
        case 'z': o->zero = true; n++; break;
        case 's': o->source = optarg; n++; break;
        case 'P':
            if ((o->pattern = io_parse_pattern(optarg)) < 0) {
                return -1;
            }
            n++;
            break;
        default:
            printf("write: invalid option -- '%c'\n", optopt);
            return -1;
        }
    }
    if (n > 1) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -1;
    }
    if (o->vmstate && (o->fua || o->compressed || o->zero)) {
        printf("-b cannot be combined with -f, -c or -z\n");
        return -1;
    }
    if ((o->unmap || o->no_fallback) && !o->zero) {
        printf("-u and -n require -z to be specified\n");
        return -1;
    }
    if (o->compressed && o->zero) {
        printf("Cannot use -c with -z\n");
        return -1;
    }
    if (optind != argc - 2) {
        printf("write: expected offset and length\n");
        return -1;
    }
    return 0;
}

int io_write_f(BlockBackend *blk, int argc, char **argv)
{
    RwOpts o = { .pattern = 0xcd };
    BdrvRequestFlags flags = 0;
    struct timespec t1, t2, t;
    uint8_t *buf = NULL;
    int64_t off, len;
    int ret;

    if (parse_write_opts(argc, argv, &o) < 0 ||
        parse_off_len(argv[optind], argv[optind + 1], &off, &len) < 0) {
        return -EINVAL;
    }
    flags |= o.fua ? BDRV_REQ_FUA : 0;
    flags |= o.compressed ? BDRV_REQ_WRITE_COMPRESSED : 0;
    flags |= o.unmap ? BDRV_REQ_MAY_UNMAP : 0;
    flags |= o.no_fallback ? BDRV_REQ_NO_FALLBACK : 0;
    if (!o.zero) {
        buf = io_alloc_buf((size_t)len, o.pattern);
        if (o.source && read_source(o.source, buf, len) < 0) {
            io_free_buf(buf);
            return -EIO;
        }
    }
    t1 = io_now();
    if (o.zero) {
        ret = blk_pwrite_zeroes(blk, off, len, flags);
    } else if (o.vmstate) {
        ret = bdrv_save_vmstate(blk_bs(blk), buf, off, len);
    } else {
        ret = blk_pwrite(blk, off, len, buf, flags);
    }
    t2 = io_now();
    io_free_buf(buf);
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!o.quiet) {
        t = io_tsub(t2, t1);
        io_print_report("wrote", &t, off, len, len, 1, o.terse);
    }
    return 0;
}

typedef struct VecArgs {
    BlockBackend *blk;
    int64_t off;
    IOVector *qiov;
    BdrvRequestFlags flags;
    bool write;
    int ret;
    bool done;
} VecArgs;

static void vec_cb(void *opaque, int ret)
{
    VecArgs *a = opaque;

    a->ret = ret;
    a->done = true;
}

/* A vectored request through the AIO API, waited for here. */
static int run_vec(VecArgs *a)
{
    if (a->write) {
        blk_aio_pwritev(a->blk, a->off, a->qiov, a->flags, vec_cb, a);
    } else {
        blk_aio_preadv(a->blk, a->off, a->qiov, a->flags, vec_cb, a);
    }
    while (!a->done) {
        aio_poll(blk_get_aio_context(a->blk), true);
    }
    return a->ret;
}

int io_readv_f(BlockBackend *blk, int argc, char **argv)
{
    RwOpts o = { .pattern = -1 };
    struct timespec t1, t2, t;
    IOVector qiov;
    int64_t off;
    uint8_t *buf;
    int c, ret;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C': o.terse = true; break;
        case 'q': o.quiet = true; break;
        case 'v': o.verbose = true; break;
        case 'P':
            if ((o.pattern = io_parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        default:
            printf("readv: invalid option -- '%c'\n", optopt);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        printf("readv: expected offset and at least one length\n");
        return -EINVAL;
    }
    off = io_cvtnum(argv[optind]);
    if (off < 0) {
        io_print_cvtnum_err(off, argv[optind]);
        return -EINVAL;
    }
    buf = io_create_iovec(blk, &qiov, argv + optind + 1, argc - optind - 1, 0xab);
    if (!buf) {
        return -EINVAL;
    }
    VecArgs a = { .blk = blk, .off = off, .qiov = &qiov };
    t1 = io_now();
    ret = run_vec(&a);
    t2 = io_now();
    if (ret < 0) {
        printf("readv failed: %s\n", strerror(-ret));
    } else {
        ret = 0;
        if (o.pattern >= 0) {
            ret = io_check_pattern(buf, off, (int64_t)qiov.size, o.pattern);
        }
        if (o.verbose) {
            io_dump_buffer(buf, off, (int64_t)qiov.size);
        }
        if (!o.quiet) {
            t = io_tsub(t2, t1);
            io_print_report("read", &t, off, (int64_t)qiov.size, (int64_t)qiov.size, 1,
                            o.terse);
        }
    }
    iovector_destroy(&qiov);
    io_free_buf(buf);
    return ret;
}

int io_writev_f(BlockBackend *blk, int argc, char **argv)
{
    RwOpts o = { .pattern = 0xcd };
    struct timespec t1, t2, t;
    IOVector qiov;
    VecArgs a = { .blk = blk, .write = true, .qiov = &qiov };
    uint8_t *buf;
    int c, ret;

    while ((c = getopt(argc, argv, "CfP:q")) != -1) {
        switch (c) {
        case 'C': o.terse = true; break;
        case 'f': a.flags |= BDRV_REQ_FUA; break;
        case 'q': o.quiet = true; break;
        case 'P':
            if ((o.pattern = io_parse_pattern(optarg)) < 0) {
                return -EINVAL;
            }
            break;
        default:
            printf("writev: invalid option -- '%c'\n", optopt);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        printf("writev: expected offset and at least one length\n");
        return -EINVAL;
    }
    a.off = io_cvtnum(argv[optind]);
    if (a.off < 0) {
        io_print_cvtnum_err(a.off, argv[optind]);
        return -EINVAL;
    }
    buf = io_create_iovec(blk, &qiov, argv + optind + 1, argc - optind - 1, o.pattern);
    if (!buf) {
        return -EINVAL;
    }
    t1 = io_now();
    ret = run_vec(&a);
    t2 = io_now();
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
    } else if (!o.quiet) {
        t = io_tsub(t2, t1);
        io_print_report("wrote", &t, a.off, (int64_t)qiov.size, (int64_t)qiov.size, 1,
                        o.terse);
    }
    iovector_destroy(&qiov);
    io_free_buf(buf);
    return ret < 0 ? ret : 0;
}
