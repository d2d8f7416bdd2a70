/*
 * coblk-img convert: copies one or more source images (concatenated) into
 * a new image, or an existing one with -n.
 *
 * Several coroutines (-m, default 8) each claim the next chunk of the
 * source, classify it through block status (data, zero, or left to the
 * target's backing file with -B), read it, and write it. Writes are issued
 * in claim order (a chunk's writes queue behind the previous chunk's without
 * waiting for them to complete: see pass_turn()) unless -W allows any order.
 * Data chunks are scanned for zeroes in -S sized pieces (default 4 KiB; -S 0
 * writes everything); zero ranges are skipped when the target is known to
 * read zeroes (a new image without backing file, or --target-is-zero), else
 * written as write-zeroes. "-" as output streams a raw image to stdout.
 *
 * -C (copy offloading, copy-offload.c): data whose bytes lie as they are in
 * a file (block status OFFSET_VALID) is copied by copy_file_range into a raw
 * target on a file or into the clusters a qcow2 target allocates for it,
 * without reading it here (so without zero detection: -S is refused with -C,
 * as qemu-img does). Other data (and partial qcow2 clusters that need
 * copy-on-write), and everything once the kernel refuses a copy, goes
 * through read and write.
 *
 * With COBLK_CONVERT_MAP=1, data that lies as it is in a source file (block
 * status OFFSET_VALID) and is in the page cache is not read into the buffer:
 * the write takes it from a read-only mapping of the file (convert-map.c).
 *
 * A new raw target on an ext4 or XFS file gets the ranges it will be written
 * preallocated ahead of the copy by one more coroutine (prealloc_walk(),
 * convert-prealloc.c says why).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/coroutine.h>

#include "img.h"

#define CONV_BUF_SIZE (2 * 1024 * 1024)
#define CONV_MAX_COROUTINES 16

enum { CHUNK_DATA, CHUNK_ZERO, CHUNK_BACKING };

typedef struct ConvSrc {
    BlockBackend *blk;
    const char *name;
    int64_t size;
    int64_t base;           /* where it starts in the concatenated source */
} ConvSrc;

typedef struct Conv {
    ConvSrc *src;
    int nsrc;
    int64_t total;
    BlockBackend *dst;
    int out_fd;             /* >= 0: streaming raw bytes to this fd */
    bool target_zero;
    bool has_backing;
    bool compressed;
    bool in_order;
    bool salvage;
    bool copy_range;        /* -C */
    ImgCopyOffload *offload;
    ImgPrealloc *prealloc;  /* raw target on ext4/XFS: its data ranges ahead of the copy */
    ImgSrcMap *srcmap;      /* cached source data is written from a mapping, not read */
    int64_t sparse;
    int64_t buf_size;
    int64_t cluster;        /* -c: the target's cluster size (0: unknown) */
    int64_t rate;           /* bytes per second, 0 = unlimited */
    int ncoroutines;

    CoMutex lock;
    CoQueue order_q;        /* chunks waiting for their turn to write */
    /* The last block status (taken under lock): [st_start, st_end) of st_src is st. */
    ConvSrc *st_src;
    int64_t st_start, st_end;
    int st;
    int64_t st_map;         /* with OFFSET_VALID: where st_start lies in st_file */
    BlockDriverState *st_file;
    int64_t next;
    uint64_t seq_next;      /* the sequence number of the next chunk claimed */
    uint64_t seq_turn;      /* in order: the chunk whose writes may be issued now */
    int running;
    int ret;
    int64_t done_bytes;
    int64_t start_ns;
    ImgProgress progress;
} Conv;

/* One chunk in the hands of a worker coroutine. */
typedef struct ConvJob {
    uint64_t seq;           /* claim order */
    bool passed;            /* the turn went on to the next chunk */
} ConvJob;

/*
 * In-order writes (no -W): the chunks' writes are issued in claim order. A
 * chunk hands the turn on when it issues its last write, not when that
 * write completes: the next chunk's write then queues behind it in the
 * target instead of waiting for a round trip through this loop (a read of a
 * cached source runs inline and would leave the target idle meanwhile).
 * Requests to one file keep their order of issue through the block layer,
 * qcow2's allocation lock (a FIFO) and the engines' FIFO submission queues;
 * io_uring runs buffered writes to one file one after the other on one
 * kernel worker. Passing the turn twice is harmless.
 */
static void pass_turn(Conv *s, ConvJob *job)
{
    if (job->passed) {
        return;
    }
    job->passed = true;
    if (s->in_order) {
        s->seq_turn++;
        co_queue_restart_all(&s->order_q);
    }
}

static ConvSrc *find_src(Conv *s, int64_t off)
{
    for (int i = 0; i < s->nsrc; i++) {
        if (off < s->src[i].base + s->src[i].size) {
            return &s->src[i];
        }
    }
    return &s->src[s->nsrc - 1];
}

static void fail(Conv *s, int ret)
{
    if (s->ret == 0) {
        s->ret = ret;
    }
    co_queue_restart_all(&s->order_q);
}

/*
 * Block status of src at soff, asked for the rest of the source and cached:
 * querying each chunk separately makes the file driver look for the same
 * hole again every time (SEEK_HOLE scans the whole data extent).
 */
static int coroutine_fn src_status(Conv *s, ConvSrc *src, int64_t soff, int64_t *pnum)
{
    BlockDriverState *bs = blk_bs(src->blk);
    BlockDriverState *base = s->has_backing ? bdrv_backing_bs(bs) : NULL;
    BlockDriverState *file = NULL;
    int64_t p = 0, map = -1;
    int ret;

    if (s->st_src == src && soff >= s->st_start && soff < s->st_end) {
        *pnum = s->st_end - soff;
        return s->st;
    }
    ret = bdrv_co_block_status_above(bs, base, soff, src->size - soff, &p, &map, &file, NULL);
    if (ret < 0 || p <= 0) {
        img_error("error while reading block status at offset %" PRId64 " of %s: %s", soff,
                  src->name, strerror(ret < 0 ? -ret : EIO));
        return ret < 0 ? ret : -EIO;
    }
    s->st_src = src;
    s->st_start = soff;
    s->st_end = soff + p;
    s->st = ret;
    s->st_map = (ret & BDRV_BLOCK_OFFSET_VALID) && file ? map : -1;
    s->st_file = s->st_map >= 0 ? file : NULL;
    *pnum = p;
    return ret;
}

/*
 * Kind of [soff, soff + *n) of src; *n may shrink. With -C, *file and *map
 * tell where data lies as it is in a file (*file NULL: nowhere known).
 */
static int coroutine_fn classify(Conv *s, ConvSrc *src, int64_t soff, int64_t *n,
                                 BlockDriverState **file, int64_t *map)
{
    int64_t pnum = 0;
    int ret;

    *file = NULL;
    if (s->sparse == 0 && !s->has_backing && !s->offload) {
        return CHUNK_DATA;
    }
    ret = src_status(s, src, soff, &pnum);
    if (ret < 0) {
        return ret;
    }
    if (s->compressed && pnum < *n) {
        return CHUNK_DATA;      /* whole clusters only */
    }
    *n = pnum < *n ? pnum : *n;
    if (s->has_backing && !(ret & BDRV_BLOCK_ALLOCATED)) {
        return CHUNK_BACKING;
    }
    if ((ret & BDRV_BLOCK_ZERO) && (s->sparse || s->offload)) {
        return CHUNK_ZERO;
    }
    if (s->st_file) {
        *file = s->st_file;
        *map = s->st_map + (soff - s->st_start);
    }
    return CHUNK_DATA;
}

/*
 * -C: copies a data chunk with copy_file_range. Returns 0 when done, 1 when
 * the caller must read and write it (the kernel refused: offloading stops).
 */
static int coroutine_fn offload_chunk(Conv *s, BlockDriverState *file, int64_t map,
                                      int64_t off, int64_t n)
{
    int ret;

    if (!s->offload || !file) {
        return 1;
    }
    ret = img_copy_offload(s->offload, file, map, off, n);
    if (ret == 0) {
        return 0;
    }
    if (ret != -ENOTSUP) {
        /* As qemu-img: a failed copy_range turns offloading off for the rest. */
        img_copy_offload_free(s->offload);
        s->offload = NULL;
    }
    return 1;
}

/* Reads a chunk; with --salvage, sectors that fail read as zeroes. */
static int coroutine_fn read_chunk(Conv *s, ConvSrc *src, int64_t soff, int64_t n,
                                   uint8_t *buf)
{
    IOVector q;
    int ret;

    iovector_init_buf(&q, buf, (size_t)n);
    ret = blk_co_preadv(src->blk, soff, n, &q, 0);
    if (ret >= 0 || !s->salvage) {
        if (ret < 0) {
            img_error("error while reading at byte %" PRId64 ": %s", src->base + soff,
                      strerror(-ret));
        }
        return ret;
    }
    for (int64_t o = 0; o < n; o += 512) {
        int64_t m = n - o < 512 ? n - o : 512;

        iovector_init_buf(&q, buf + o, (size_t)m);
        if (blk_co_preadv(src->blk, soff + o, m, &q, 0) < 0) {
            fprintf(stderr, "coblk-img: warning: error while reading offset %" PRId64
                    " of %s: salvaging as zeroes\n", soff + o, src->name);
            memset(buf + o, 0, (size_t)m);
        }
    }
    return 0;
}

static int coroutine_fn write_data(Conv *s, int64_t off, int64_t n, uint8_t *buf,
                                   BdrvRequestFlags flags)
{
    IOVector q;
    int ret;

    iovector_init_buf(&q, buf, (size_t)n);
    ret = blk_co_pwritev(s->dst, off, n, &q, flags);
    if (ret < 0) {
        img_error("error while writing at byte %" PRId64 ": %s", off, strerror(-ret));
    }
    return ret;
}

static int coroutine_fn write_zero(Conv *s, int64_t off, int64_t n)
{
    int ret;

    if (s->target_zero) {
        return 0;
    }
    ret = blk_co_pwrite_zeroes(s->dst, off, n, BDRV_REQ_MAY_UNMAP);
    if (ret < 0) {
        img_error("error while writing zeroes at byte %" PRId64 ": %s", off, strerror(-ret));
    }
    return ret;
}

/* Writes a data chunk, leaving out -S sized zero pieces. */
static int coroutine_fn write_sparse(Conv *s, ConvJob *job, int64_t off, int64_t n,
                                     uint8_t *buf)
{
    int64_t i = 0;

    while (i < n) {
        int64_t piece_end = (off + i) / s->sparse * s->sparse + s->sparse - off;
        int64_t j = i;
        bool zero = img_is_zero(buf + i, (size_t)((piece_end < n ? piece_end : n) - i));

        /* Extend the run over following pieces of the same kind. */
        while (j < n) {
            int64_t e = (off + j) / s->sparse * s->sparse + s->sparse - off;
            e = e < n ? e : n;
            if (img_is_zero(buf + j, (size_t)(e - j)) != zero) {
                break;
            }
            j = e;
        }
        if (j >= n) {
            pass_turn(s, job);
        }
        int ret = !zero ? write_data(s, off + i, j - i, buf + i, 0) :
                  s->prealloc ? img_prealloc_unmap(s->prealloc, off + i, j - i) :
                  write_zero(s, off + i, j - i);
        if (ret < 0) {
            if (zero && s->prealloc) {
                img_error("error while freeing the zeroes at byte %" PRId64 ": %s", off + i,
                          strerror(-ret));
            }
            return ret;
        }
        i = j;
    }
    return 0;
}

static int coroutine_fn stream_out(Conv *s, int64_t n, uint8_t *buf)
{
    for (int64_t done = 0; done < n;) {
        ssize_t w = write(s->out_fd, buf + done, (size_t)(n - done));

        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = w < 0 ? errno : EIO;
            img_error("error while writing to stdout: %s", strerror(e));
            return -e;
        }
        done += w;
    }
    return 0;
}

/*
 * Writes a chunk compressed, in runs of clusters; all-zero clusters are left
 * out when the target reads zeroes already.
 */
static inline int64_t min64(int64_t a, int64_t b)
{
    return a < b ? a : b;
}

static int coroutine_fn write_compressed(Conv *s, int64_t off, int64_t n, uint8_t *buf)
{
    int64_t cs = s->cluster > 0 ? s->cluster : n, i = 0;

    while (i < n) {
        int64_t j = i;

        while (j < n && !(s->target_zero && img_is_zero(buf + j, (size_t)min64(cs, n - j)))) {
            j += min64(cs, n - j);
        }
        if (j > i) {
            int ret = write_data(s, off + i, j - i, buf + i, BDRV_REQ_WRITE_COMPRESSED);

            if (ret < 0) {
                return ret;
            }
        }
        i = j < n ? j + min64(cs, n - j) : n; /* skip the zero cluster */
    }
    return 0;
}

/*
 * Writes a chunk. Compressed, streamed and zero chunks pass the turn when
 * done (the caller does), data chunks as they issue their last write.
 */
static int coroutine_fn write_chunk(Conv *s, ConvJob *job, int kind, int64_t off, int64_t n,
                                    uint8_t *buf)
{
    if (s->out_fd >= 0) {
        if (kind != CHUNK_DATA) {
            memset(buf, 0, (size_t)n);
        }
        return stream_out(s, n, buf);
    }
    if (kind == CHUNK_BACKING) {
        return 0;
    }
    if (kind == CHUNK_ZERO) {
        return write_zero(s, off, n);
    }
    if (s->compressed) {
        return write_compressed(s, off, n, buf);
    }
    if (s->sparse) {
        return write_sparse(s, job, off, n, buf);
    }
    pass_turn(s, job);
    return write_data(s, off, n, buf, 0);
}

static void coroutine_fn rate_limit(Conv *s)
{
    int64_t due, now;

    if (!s->rate) {
        return;
    }
    due = (int64_t)((long double)s->done_bytes * 1e9L / (long double)s->rate);
    now = aio_clock_ns() - s->start_ns;
    if (due > now) {
        co_sleep_ns(due - now);
    }
}

static void coroutine_fn conv_worker(void *opaque)
{
    Conv *s = opaque;
    uint8_t *buf = img_alloc((size_t)s->buf_size);

    while (s->ret == 0) {
        co_mutex_lock(&s->lock);
        if (s->ret || s->next >= s->total) {
            co_mutex_unlock(&s->lock);
            break;
        }
        int64_t off = s->next;
        ConvSrc *src = find_src(s, off);
        int64_t n = src->base + src->size - off, map = -1;
        BlockDriverState *file = NULL;
        n = n < s->buf_size ? n : s->buf_size;
        int kind = classify(s, src, off - src->base, &n, &file, &map);
        s->next = off + n;
        ConvJob job = { .seq = s->seq_next++ };
        co_mutex_unlock(&s->lock);
        bool offload = kind == CHUNK_DATA && s->offload && file;
        const uint8_t *mapped = kind == CHUNK_DATA && s->srcmap && file ?
                                img_srcmap_get(s->srcmap, blk_bs(src->blk), file, map, n) : NULL;

        if (kind < 0 || (kind == CHUNK_DATA && !offload && !mapped &&
                         read_chunk(s, src, off - src->base, n, buf) < 0)) {
            fail(s, kind < 0 ? kind : -EIO);
            break;
        }
        while (s->in_order && s->seq_turn != job.seq && s->ret == 0) {
            co_queue_wait(&s->order_q, NULL);
        }
        if (s->ret) {
            break;
        }
        int ret = offload ? offload_chunk(s, file, map, off, n) : 1;
        if (ret > 0 && offload) {
            /* Not offloaded after all: read it now. */
            ret = read_chunk(s, src, off - src->base, n, buf) < 0 ? -EIO : 1;
        }
        if (ret > 0) {
            /* The write paths only read the bytes they are given. */
            ret = write_chunk(s, &job, kind, off, n, mapped ? (uint8_t *)mapped : buf);
        }
        if (ret < 0) {
            fail(s, ret);
            break;
        }
        pass_turn(s, &job);
        s->done_bytes += n;
        progress_update(&s->progress, (uint64_t)s->done_bytes, (uint64_t)s->total);
        rate_limit(s);
    }
    free(buf);
    s->running--;
}

/*
 * Queues the ranges the workers will write (classify()'s data: everything
 * with -S 0, else what block status does not call zero) for preallocation,
 * source by source, until the end or a failure (the workers report errors).
 */
static void coroutine_fn prealloc_walk(void *opaque)
{
    Conv *s = opaque;

    for (int i = 0; i < s->nsrc && s->ret == 0; i++) {
        ConvSrc *src = &s->src[i];
        BlockDriverState *bs = blk_bs(src->blk);

        for (int64_t soff = 0, p; soff < src->size && s->ret == 0; soff += p) {
            int st = 0;

            p = src->size - soff;
            if (s->sparse) {
                st = bdrv_co_block_status_above(bs, NULL, soff, p, &p, NULL, NULL, NULL);
                if (st < 0 || p <= 0) {
                    break;
                }
            }
            if (!(st & BDRV_BLOCK_ZERO)) {
                img_prealloc_add(s->prealloc, src->base + soff, p);
            }
        }
    }
    img_prealloc_end(s->prealloc);
    s->running--;
}

static int run_convert(Conv *s)
{
    AioContext *ctx = blk_get_aio_context(s->src[0].blk);

    co_mutex_init(&s->lock);
    co_queue_init(&s->order_q);
    s->start_ns = aio_clock_ns();
    s->running = s->ncoroutines;
    if (s->prealloc) {
        s->running++;
        aio_co_enter(ctx, coroutine_create(prealloc_walk, s));
    }
    for (int i = 0; i < s->ncoroutines; i++) {
        aio_co_enter(ctx, coroutine_create(conv_worker, s));
    }
    while (s->running > 0) {
        aio_poll(ctx, true);
    }
    if (s->ret == 0 && s->dst) {
        int ret = blk_flush(s->dst);
        if (ret < 0) {
            img_error("error while flushing the target image: %s", strerror(-ret));
            s->ret = ret;
        }
    }
    progress_end(&s->progress);
    return s->ret < 0 ? 1 : 0;
}

/* --------------------------------------------------------------------- */
/* Options and setup */

typedef struct ConvOpts {
    ImgOpen src;
    const char *out_fmt;
    const char *cache;
    const char *backing;
    const char *backing_fmt;
    BlockOpts *opts;
    bool skip_create;
    bool target_image_opts;
    bool target_is_zero;
    bool progress;
    bool quiet;
    bool help_opts;
    bool bitmaps;           /* --bitmaps */
    const char *snapshot;   /* -l: convert an internal snapshot of the source */
    bool skip_broken;       /* --skip-broken-bitmaps */
    bool explicit_sparse;   /* -S given */
} ConvOpts;

static const struct option convert_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "target-image-opts", no_argument, NULL, OPT_TARGET_IMAGE_OPTS },
    { "target-is-zero", no_argument, NULL, OPT_TARGET_IS_ZERO },
    { "salvage", no_argument, NULL, OPT_SALVAGE },
    { "bitmaps", no_argument, NULL, OPT_BITMAPS },
    { "skip-broken-bitmaps", no_argument, NULL, OPT_SKIP_BROKEN },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

/* Returns 0 to go on, else exit status + 1. */
static int parse_convert(int argc, char **argv, Conv *s, ConvOpts *co)
{
    int c;
    int64_t v;

    while ((c = getopt_long(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", convert_longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'h': img_cmd_help("convert"); return 1;
        case 'f': co->src.fmt = optarg; break;
        case 'O': co->out_fmt = optarg; break;
        case 'B': co->backing = optarg; break;
        case 'F': co->backing_fmt = optarg; break;
        case 'c': s->compressed = true; break;
        case 'o':
            if (strcmp(optarg, "help") == 0 || strcmp(optarg, "?") == 0) {
                co->help_opts = true;
            } else if (!img_add_options(&co->opts, optarg)) {
                return 2;
            }
            break;
        case 'S':
            co->explicit_sparse = true;
            if ((v = img_parse_size(optarg)) < 0 || v > INT32_MAX / 2 || (v && v < 512 &&
                                                                          v % 512)) {
                img_error("Invalid buffer size for sparse output specified. Valid sizes are "
                          "multiples of 512 up to 1 GiB");
                return 2;
            }
            s->sparse = v;
            break;
        case 'p': co->progress = true; break;
        case 't': co->cache = optarg; break;
        case 'T': co->src.cache = optarg; break;
        case 'q': co->quiet = true; break;
        case 'n': co->skip_create = true; break;
        case 'm':
            if ((v = img_parse_size(optarg)) < 1 || v > CONV_MAX_COROUTINES) {
                img_error("Invalid number of coroutines. Allowed number of coroutines is "
                          "between 1 and %d", CONV_MAX_COROUTINES);
                return 2;
            }
            s->ncoroutines = (int)v;
            break;
        case 'W': s->in_order = false; break;
        case 'U': co->src.force_share = true; break;
        case 'r':
            if ((v = img_parse_size(optarg)) <= 0) {
                img_error("Invalid rate limit specified: %s", optarg);
                return 2;
            }
            s->rate = v;
            break;
        case 'C': s->copy_range = true; break;
        case 'l': co->snapshot = optarg; break;
        case OPT_BITMAPS: co->bitmaps = true; break;
        case OPT_SKIP_BROKEN: co->skip_broken = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 2;
            }
            break;
        case OPT_IMAGE_OPTS: co->src.image_opts = true; break;
        case OPT_TARGET_IMAGE_OPTS: co->target_image_opts = true; break;
        case OPT_TARGET_IS_ZERO: co->target_is_zero = true; break;
        case OPT_SALVAGE: s->salvage = true; break;
        case ':':
            img_usage_error("convert", "option requires an argument -- '%c'", optopt);
            return 2;
        default:
            img_usage_error("convert", "invalid option -- '%s'", argv[optind - 1]);
            return 2;
        }
    }
    return 0;
}

static int open_sources(Conv *s, ConvOpts *co, int argc, char **argv)
{
    s->nsrc = argc;
    s->src = calloc((size_t)argc, sizeof(*s->src));
    co->src.quiet = co->quiet;
    for (int i = 0; i < argc; i++) {
        ConvSrc *src = &s->src[i];

        src->name = argv[i];
        src->blk = img_open(argv[i], &co->src);
        if (!src->blk) {
            return -1;
        }
        if (co->snapshot) {
            Error *err = NULL;

            if (argc > 1) {
                img_error("No support for concatenating multiple snapshot");
                return -1;
            }
            if (bdrv_snapshot_load_tmp_param(blk_bs(src->blk), co->snapshot, &err) < 0) {
                img_error_err(err, "Failed to load snapshot");
                return -1;
            }
        }
        src->size = blk_getlength(src->blk);
        if (src->size < 0) {
            img_error("Could not get size of %s: %s", argv[i], strerror((int)-src->size));
            return -1;
        }
        src->base = s->total;
        s->total += src->size;
    }
    return 0;
}

static int create_target(Conv *s, ConvOpts *co, const char *out)
{
    Error *err = NULL;
    char buf[32];

    if (!co->opts) {
        co->opts = bopts_new();
    }
    snprintf(buf, sizeof(buf), "%" PRId64, (int64_t)((s->total + 511) & ~(int64_t)511));
    bopts_set(co->opts, "size", buf);
    if (co->backing) {
        bopts_set(co->opts, "backing_file", co->backing);
        if (co->backing_fmt) {
            bopts_set(co->opts, "backing_fmt", co->backing_fmt);
        }
    }
    if (bdrv_create(co->out_fmt, out, co->opts, &err) < 0) {
        co->opts = NULL;
        img_error_err(err, "%s", out);
        return -1;
    }
    co->opts = NULL;
    return 0;
}

/*
 * COBLK_CONVERT_MAP=1 takes cached source data from a mapping (convert-map.c):
 * less CPU, but a longer critical path when two CPUs are free, so not the
 * default (convert-map.c has the figures).
 */
static bool map_enabled(void)
{
    const char *e = getenv("COBLK_CONVERT_MAP");

    return e && strcmp(e, "1") == 0;
}

static int open_target(Conv *s, ConvOpts *co, const char *out)
{
    ImgOpen o = { .fmt = co->target_image_opts ? NULL : co->out_fmt,
                  .cache = co->cache ? co->cache : "unsafe",
                  .image_opts = co->target_image_opts, .writable = true,
                  .no_backing = true, .quiet = true };
    BlockDriverInfo bdi;
    int64_t len;

    s->dst = img_open(out, &o);
    if (!s->dst) {
        return -1;
    }
    len = blk_getlength(s->dst);
    if (len < 0 || len < s->total) {
        img_error("output file is smaller than input file (%s: %" PRId64 " < %" PRId64
                  " bytes)", out, len, s->total);
        return -1;
    }
    if (s->copy_range) {
        s->offload = img_copy_offload_new(s->dst);
    }
    if (s->target_zero && !s->has_backing && !s->offload && !s->compressed) {
        s->prealloc = img_prealloc_new(s->dst);
    }
    if (!s->offload && !s->compressed && !s->salvage && map_enabled()) {
        s->srcmap = img_srcmap_new();
    }
    if (s->compressed) {
        if (!(blk_bs(s->dst)->supported_write_flags & BDRV_REQ_WRITE_COMPRESSED)) {
            img_error("Compression not supported for this file format");
            return -1;
        }
        /*
         * Whole clusters per chunk, several of them: the format compresses
         * the clusters of one write in parallel, even with in-order writes.
         */
        if (bdrv_get_info(blk_bs(s->dst), &bdi) == 0 && bdi.cluster_size > 0 &&
            bdi.cluster_size <= CONV_BUF_SIZE * 8) {
            s->cluster = bdi.cluster_size;
            s->buf_size = bdi.cluster_size * (bdi.cluster_size < CONV_BUF_SIZE ?
                                              CONV_BUF_SIZE / bdi.cluster_size : 1);
        }
    }
    return 0;
}

static int check_convert_opts(Conv *s, ConvOpts *co, const char *out)
{
    if (co->target_is_zero && !co->skip_create) {
        img_error("--target-is-zero requires use of -n flag");
        return -1;
    }
    if (co->target_image_opts && !co->skip_create) {
        img_error("--target-image-opts requires use of -n flag");
        return -1;
    }
    if (co->skip_create && co->opts) {
        img_error("-o has no effect when skipping image creation");
        return -1;
    }
    if (co->backing_fmt && !co->backing) {
        img_error("-F requires -B (the backing file of the target)");
        return -1;
    }
    if (co->backing && co->skip_create) {
        img_error("-B has no effect when skipping image creation");
        return -1;
    }
    if (s->compressed && s->out_fd >= 0) {
        img_error("Compression is not possible when streaming to stdout");
        return -1;
    }
    if (strcmp(out, "-") == 0 && co->skip_create) {
        img_error("-n cannot be used when writing to stdout ('-')");
        return -1;
    }
    if (s->copy_range && s->compressed) {
        img_error("Cannot enable copy offloading when -c is used");
        return -1;
    }
    if (s->copy_range && co->explicit_sparse) {
        img_error("Cannot enable copy offloading when -S is used");
        return -1;
    }
    if (co->skip_broken && !co->bitmaps) {
        img_error("--skip-broken-bitmaps requires --bitmaps");
        return -1;
    }
    return 0;
}

/* convert --bitmaps: one source, whose bitmaps are all consistent (or skipped). */
static int bitmaps_precheck(Conv *s, ConvOpts *co)
{
    const BlockDriver *drv = bdrv_find_format(co->out_fmt);

    if (!co->bitmaps) {
        return 0;
    }
    if (s->nsrc > 1 || s->out_fd >= 0) {
        img_error("--bitmaps needs a single source image and an output file");
        return -1;
    }
    if (!drv || !drv->co_bitmap_modify) {
        img_error("Format driver '%s' does not support bitmaps", co->out_fmt);
        return -1;
    }
    return img_bitmaps_check(s->src[0].blk, co->skip_broken);
}

/* convert --bitmaps: the source's bitmaps are copied once the data is. */
static int convert_finish(Conv *s, ConvOpts *co, int ret)
{
    if (ret == 0 && co->bitmaps && s->dst) {
        ret = img_bitmaps_copy(s->src[0].blk, s->dst, co->skip_broken) < 0 ? 1 : 0;
    }
    return ret;
}

static void convert_cleanup(Conv *s, ConvOpts *co)
{
    img_copy_offload_free(s->offload);
    s->offload = NULL;
    img_prealloc_free(s->prealloc);
    s->prealloc = NULL;
    img_srcmap_free(s->srcmap);
    s->srcmap = NULL;
    if (s->dst) {
        blk_unref(s->dst);
    }
    for (int i = 0; i < s->nsrc; i++) {
        if (s->src[i].blk) {
            blk_unref(s->src[i].blk);
        }
    }
    free(s->src);
    bopts_free(co->opts);
}

/* Copies a finished image file to stdout. */
static int copy_to_stdout(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    uint8_t *buf = img_alloc(1 << 20);
    int ret = 0;

    if (fd < 0) {
        img_error("Could not open '%s': %s", path, strerror(errno));
        free(buf);
        return 1;
    }
    for (;;) {
        ssize_t n = read(fd, buf, 1 << 20), w = 0;

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            if (n < 0) {
                img_error("error while reading '%s': %s", path, strerror(errno));
                ret = 1;
            }
            break;
        }
        while (w < n) {
            ssize_t r = write(STDOUT_FILENO, buf + w, (size_t)(n - w));
            if (r < 0 && errno == EINTR) {
                continue;
            }
            if (r <= 0) {
                img_error("error while writing to stdout: %s", strerror(r < 0 ? errno : EIO));
                ret = 1;
                goto out;
            }
            w += r;
        }
    }
out:
    close(fd);
    free(buf);
    return ret;
}

static int run_to_file(Conv *s, ConvOpts *co, int nsrc, char **srcs, const char *out)
{
    s->has_backing = co->backing != NULL;
    s->target_zero = (!co->skip_create && !co->backing) || co->target_is_zero;
    if (open_sources(s, co, nsrc, srcs) < 0 || bitmaps_precheck(s, co) < 0 ||
        (!co->skip_create && create_target(s, co, out) < 0) || open_target(s, co, out) < 0) {
        return 1;
    }
    progress_init(&s->progress, co->progress && !co->quiet);
    return convert_finish(s, co, run_convert(s));
}

/*
 * "-O fmt -" for a format other than raw (a vmdk streamOptimized image,
 * say): the image is built in a temporary file under $TMPDIR (image
 * formats seek back to their metadata), copied to stdout, which may be a
 * pipe, and removed.
 */
static int convert_staged(int argc, char **argv, Conv *s, ConvOpts *co)
{
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char *tmp = NULL;
    int fd, ret = 1;

    if (check_convert_opts(s, co, "-") < 0) {
        goto out;
    }
    if (asprintf(&tmp, "%s/coblk-img-convert.XXXXXX", dir) < 0 || (fd = mkstemp(tmp)) < 0) {
        img_error("Could not create a temporary file in '%s': %s", dir, strerror(errno));
        goto out;
    }
    close(fd);
    ret = run_to_file(s, co, argc - 1 - optind, argv + optind, tmp);
    img_copy_offload_free(s->offload);
    s->offload = NULL;
    img_prealloc_free(s->prealloc);
    s->prealloc = NULL;
    img_srcmap_free(s->srcmap);
    s->srcmap = NULL;
    if (s->dst) {
        blk_unref(s->dst);
        s->dst = NULL;
    }
    if (ret == 0) {
        ret = copy_to_stdout(tmp);
    }
    unlink(tmp);
out:
    free(tmp);
    convert_cleanup(s, co);
    return ret;
}

int img_convert(int argc, char **argv)
{
    Conv s = { .out_fd = -1, .sparse = 4096, .buf_size = CONV_BUF_SIZE, .ncoroutines = 8,
               .in_order = true };
    ConvOpts co = { .out_fmt = "raw" };
    const char *out;
    int ret = 1;

    ret = parse_convert(argc, argv, &s, &co);
    if (ret) {
        bopts_free(co.opts);
        return ret - 1;
    }
    ret = 1;
    if (co.help_opts) {
        bopts_free(co.opts);
        return img_print_create_opts(co.out_fmt);
    }
    if (argc - optind < 2) {
        bopts_free(co.opts);
        return img_usage_error("convert", "Expecting image file name and output file name");
    }
    out = argv[argc - 1];
    if (strcmp(out, "-") == 0 && strcmp(co.out_fmt, "raw") != 0) {
        return convert_staged(argc, argv, &s, &co);
    }
    if (strcmp(out, "-") == 0) {
        s.out_fd = STDOUT_FILENO;
        s.ncoroutines = 1;
        s.in_order = true;
        co.progress = false;
    }
    if (check_convert_opts(&s, &co, out) < 0 ||
        open_sources(&s, &co, argc - 1 - optind, argv + optind) < 0 ||
        bitmaps_precheck(&s, &co) < 0) {
        goto out;
    }
    s.has_backing = co.backing != NULL;
    s.target_zero = (!co.skip_create && !co.backing) || co.target_is_zero;
    if (s.out_fd < 0) {
        if ((!co.skip_create && create_target(&s, &co, out) < 0) ||
            open_target(&s, &co, out) < 0) {
            goto out;
        }
    }
    progress_init(&s.progress, co.progress && !co.quiet);
    ret = convert_finish(&s, &co, run_convert(&s));
out:
    convert_cleanup(&s, &co);
    return ret;
}
