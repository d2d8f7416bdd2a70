/*
 * coblk-io asynchronous commands: aio_read and aio_write submit a request
 * and return at once; its report line is printed when it completes (during
 * a later command or aio_flush, which waits for every request in flight).
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

typedef struct AioReq {
    BlockBackend *blk;
    IOVector qiov;
    uint8_t *buf;
    int64_t offset;
    bool write;
    bool terse, quiet, verbose;
    int pattern;
    struct timespec t1;
} AioReq;

static void aio_done(void *opaque, int ret)
{
    AioReq *r = opaque;
    struct timespec t = io_tsub(io_now(), r->t1);
    int64_t len = (int64_t)r->qiov.size;

    io_state.aio_in_flight--;
    if (ret < 0) {
        /* qemu-io names a failed aio_read "readv" */
        printf("%s failed: %s\n", r->write ? "aio_write" : "readv", strerror(-ret));
    } else {
        if (!r->write && r->pattern >= 0) {
            io_check_pattern(r->buf, r->offset, len, r->pattern);
        }
        if (!r->write && r->verbose) {
            io_dump_buffer(r->buf, r->offset, len);
        }
        if (!r->quiet) {
            io_print_report(r->write ? "wrote" : "read", &t, r->offset, len, len, 1, r->terse);
        }
    }
    fflush(stdout);
    iovector_destroy(&r->qiov);
    io_free_buf(r->buf);
    free(r);
}

static int aio_rw(BlockBackend *blk, int argc, char **argv, bool write)
{
    AioReq *r = calloc(1, sizeof(*r));
    BdrvRequestFlags flags = 0;
    bool zero = false;
    int c;

    r->blk = blk;
    r->write = write;
    r->pattern = write ? 0xcd : -1;
    while ((c = getopt(argc, argv, write ? "CfiP:quz" : "CiP:qv")) != -1) {
        switch (c) {
        case 'C': r->terse = true; break;
        case 'f': flags |= BDRV_REQ_FUA; break;
        case 'i': break;    /* accounting-only in qemu-io */
        case 'q': r->quiet = true; break;
        case 'u': flags |= BDRV_REQ_MAY_UNMAP; break;
        case 'v': r->verbose = true; break;
        case 'z': zero = true; break;
        case 'P':
            if ((r->pattern = io_parse_pattern(optarg)) < 0) {
                free(r);
                return -EINVAL;
            }
            break;
        default:
            printf("%s: invalid option -- '%c'\n", argv[0], optopt);
            free(r);
            return -EINVAL;
        }
    }
    if (optind > argc - 2) {
        printf("%s: expected offset and at least one length\n", argv[0]);
        free(r);
        return -EINVAL;
    }
    r->offset = io_cvtnum(argv[optind]);
    if (r->offset < 0) {
        io_print_cvtnum_err(r->offset, argv[optind]);
        free(r);
        return -EINVAL;
    }
    if ((flags & BDRV_REQ_MAY_UNMAP) && !zero) {
        printf("-u requires -z to be specified\n");
        free(r);
        return -EINVAL;
    }
    r->buf = io_create_iovec(blk, &r->qiov, argv + optind + 1, argc - optind - 1,
                             r->pattern >= 0 ? r->pattern : 0xab);
    if (!r->buf) {
        free(r);
        return -EINVAL;
    }
    io_state.aio_in_flight++;
    r->t1 = io_now();
    if (zero) {
        blk_aio_pwrite_zeroes(blk, r->offset, (int64_t)r->qiov.size, flags, aio_done, r);
    } else if (write) {
        blk_aio_pwritev(blk, r->offset, &r->qiov, flags, aio_done, r);
    } else {
        blk_aio_preadv(blk, r->offset, &r->qiov, 0, aio_done, r);
    }
    return 0;
}

int io_aio_read_f(BlockBackend *blk, int argc, char **argv)
{
    return aio_rw(blk, argc, argv, false);
}

int io_aio_write_f(BlockBackend *blk, int argc, char **argv)
{
    return aio_rw(blk, argc, argv, true);
}

/*
 * Waits for every request in flight. As qemu-io's, it succeeds even when some
 * failed: a failed aio request is reported by its line only, never by the
 * exit status.
 */
int io_aio_flush_f(BlockBackend *blk, int argc, char **argv)
{
    while (io_state.aio_in_flight > 0) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    return 0;
}
