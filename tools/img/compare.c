/*
 * coblk-img compare: compares the guest-visible content of two images,
 * skipping ranges that block status reports as zero in both. Exit codes as
 * qemu-img: 0 identical, 1 different (or -s mismatch), 2 error.
 * A mismatch is reported at the 512-byte sector that holds the first
 * differing byte, as qemu-img does.
 *
 * The second image lives in an IOThread: where both images hold data, its
 * read of a segment runs there while this thread reads the first image, so
 * the two copies out of the page cache (the bulk of the CPU time) use both
 * cores. A worker thread compares segment k while segment k+1 is read (two
 * sets of buffers); results are taken in order, so the first mismatch
 * reported is the lowest one, as with a sequential scan. Ranges that block
 * status reports as zero in both images are not read.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/aio-io.h>
#include <coblk/coroutine.h>

#include "img.h"

#define CMP_CHUNK (2 * 1024 * 1024)
/* Segments smaller than this are compared on the loop thread (no hand-off). */
#define CMP_OFFLOAD_MIN (128 * 1024)
#define STATUS_MASK (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED | \
                     BDRV_BLOCK_OFFSET_VALID)

/* The last block status of an image: [start, end) has status st. */
typedef struct StatusCache {
    int64_t start, end;
    int st;
} StatusCache;

/* One segment compared on a worker thread while the next one is read. */
typedef struct CmpJob {
    AioContext *ctx;
    const uint8_t *a, *b;   /* b NULL: a must read as zeroes */
    size_t n;               /* 0: no job */
    int64_t off;
    int64_t diff;           /* offset of the first difference in the segment, or -1 */
    bool busy;
} CmpJob;

/*
 * A call into the second image's IOThread: fn runs in a coroutine there and
 * this thread waits on cond (never polling a context another thread runs).
 */
typedef struct Remote {
    AioContext *ctx;        /* NULL: no IOThread, the image is in this thread */
    ImgCoFn *fn;
    void *opaque;
    int64_t ret;
    bool done;
    pthread_mutex_t lock;
    pthread_cond_t cond;
} Remote;

typedef struct ReadArgs {
    BlockBackend *blk;
    int64_t off, n;
    uint8_t *buf;
} ReadArgs;

typedef struct Cmp {
    IOThread *iothread;
    Remote remote;
    ReadArgs rd;            /* the second image's read in flight */
    StatusCache sc[2];
    BlockBackend *blk[2];
    const char *name[2];
    uint8_t *buf[2];
    uint8_t *alt[2];        /* the second set of buffers, swapped with buf */
    CmpJob job;
    bool strict;
    bool quiet;
    ImgProgress progress;
} Cmp;

/* Offset of the first differing byte of a and b, or -1. */
static int64_t first_diff(const uint8_t *a, const uint8_t *b, size_t n)
{
    size_t i = 0;

    if (memcmp(a, b, n) == 0) {
        return -1;
    }
    while (i + 64 <= n && memcmp(a + i, b + i, 64) == 0) {
        i += 64;
    }
    for (; i < n; i++) {
        if (a[i] != b[i]) {
            return (int64_t)i;
        }
    }
    return -1;
}

static int64_t first_nonzero(const uint8_t *a, size_t n)
{
    static const uint8_t zero[64];
    size_t i = 0;

    if (img_is_zero(a, n)) {
        return -1;
    }
    while (i + 64 <= n && memcmp(a + i, zero, 64) == 0) {
        i += 64;
    }
    for (; i < n; i++) {
        if (a[i]) {
            return (int64_t)i;
        }
    }
    return -1;
}

static void mismatch(const Cmp *c, int64_t off)
{
    if (!c->quiet) {
        printf("Content mismatch at offset %" PRId64 "!\n", (int64_t)(off & ~(int64_t)511));
    }
}

static int64_t cmp_job_run(void *opaque)
{
    CmpJob *j = opaque;

    return j->b ? first_diff(j->a, j->b, j->n) : first_nonzero(j->a, j->n);
}

static void coroutine_fn cmp_job_co(void *opaque)
{
    CmpJob *j = opaque;

    j->diff = thread_pool_co_run(j->ctx, cmp_job_run, j);
    j->busy = false;
}

/* Waits for the segment in flight; 1 (reported) if it differs, else 0. */
static int cmp_job_wait(Cmp *c)
{
    CmpJob *j = &c->job;

    while (j->busy) {
        aio_poll(j->ctx, true);
    }
    if (j->n && j->diff >= 0) {
        mismatch(c, j->off + j->diff);
        return 1;
    }
    j->n = 0;
    return 0;
}

/*
 * Compares buf[0] with buf[1] (or buf[zi] with zeroes, zi >= 0) for the
 * segment at off: on a worker thread, after which the buffer sets are
 * swapped so the next segment is read into the other set; small segments
 * inline. Returns 1 (reported) on a difference found so far, else 0.
 */
static int cmp_segment(Cmp *c, int zi, int64_t off, int64_t n)
{
    CmpJob *j = &c->job;
    const uint8_t *a = c->buf[zi >= 0 ? zi : 0], *b = zi >= 0 ? NULL : c->buf[1];

    if (cmp_job_wait(c)) {
        return 1;
    }
    if (n < CMP_OFFLOAD_MIN) {
        j->a = a;
        j->b = b;
        j->n = (size_t)n;
        j->off = off;
        j->diff = cmp_job_run(j);
        return cmp_job_wait(c);
    }
    *j = (CmpJob){ .ctx = j->ctx, .a = a, .b = b, .n = (size_t)n, .off = off, .busy = true };
    aio_co_enter(j->ctx, coroutine_create(cmp_job_co, j));
    for (int i = 0; i < 2; i++) {
        uint8_t *t = c->buf[i];

        c->buf[i] = c->alt[i];
        c->alt[i] = t;
    }
    return 0;
}

static void coroutine_fn remote_entry(void *opaque)
{
    Remote *r = opaque;
    int64_t ret = r->fn(r->opaque);

    pthread_mutex_lock(&r->lock);
    r->ret = ret;
    r->done = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

/* Starts fn(opaque) in the IOThread; remote_wait() collects its result. */
static void remote_start(Remote *r, ImgCoFn *fn, void *opaque)
{
    r->fn = fn;
    r->opaque = opaque;
    r->done = false;
    aio_co_schedule(r->ctx, coroutine_create(remote_entry, r));
}

static int64_t remote_wait(Remote *r)
{
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        pthread_cond_wait(&r->cond, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    return r->ret;
}

/* Runs fn(opaque) in a coroutine in image i's context and waits for it. */
static int64_t side_call(Cmp *c, int i, ImgCoFn *fn, void *opaque)
{
    if (i == 1 && c->remote.ctx) {
        remote_start(&c->remote, fn, opaque);
        return remote_wait(&c->remote);
    }
    return img_run_co(blk_get_aio_context(c->blk[i]), fn, opaque);
}

static int64_t read_co(void *opaque)
{
    ReadArgs *a = opaque;
    IOVector qiov;

    iovector_init_buf(&qiov, a->buf, (size_t)a->n);
    return blk_co_preadv(a->blk, a->off, a->n, &qiov, 0);
}

static int read_done(Cmp *c, int i, int64_t off, int ret)
{
    if (ret < 0) {
        img_error("Error while reading offset %" PRId64 " of %s: %s", off, c->name[i],
                  strerror(-ret));
        return -1;
    }
    return 0;
}

static int read_at(Cmp *c, int i, int64_t off, int64_t n)
{
    ReadArgs a = { c->blk[i], off, n, c->buf[i] };

    return read_done(c, i, off, (int)side_call(c, i, read_co, &a));
}

/* Reads the segment of both images, the second one in its IOThread meanwhile. */
static int read_both(Cmp *c, int64_t off, int64_t n)
{
    int r0, r1;

    if (!c->remote.ctx) {
        return read_at(c, 0, off, n) < 0 || read_at(c, 1, off, n) < 0 ? -1 : 0;
    }
    c->rd = (ReadArgs){ c->blk[1], off, n, c->buf[1] };
    remote_start(&c->remote, read_co, &c->rd);
    r0 = read_done(c, 0, off, blk_pread(c->blk[0], off, n, c->buf[0], 0));
    r1 = read_done(c, 1, off, (int)remote_wait(&c->remote));
    return r0 < 0 || r1 < 0 ? -1 : 0;
}

typedef struct StatusArgs {
    BlockDriverState *bs;
    int64_t off, bytes, pnum;
} StatusArgs;

static int64_t status_co(void *opaque)
{
    StatusArgs *a = opaque;

    return bdrv_co_block_status_above(a->bs, NULL, a->off, a->bytes, &a->pnum, NULL, NULL,
                                      NULL);
}

/*
 * Status of [off, off + n) of image i. The query covers the rest of the image
 * (up to end) and is cached: asking again for each chunk would make the file
 * driver seek for the same hole over and over.
 */
static int status(Cmp *c, int i, int64_t off, int64_t n, int64_t end, int64_t *pnum)
{
    StatusCache *sc = &c->sc[i];

    if (off < sc->start || off >= sc->end) {
        StatusArgs a = { blk_bs(c->blk[i]), off, end - off, 0 };
        int ret = (int)side_call(c, i, status_co, &a);
        int64_t p = a.pnum;

        if (ret < 0 || p <= 0) {
            img_error("Sector allocation test failed for %s", c->name[i]);
            return -1;
        }
        sc->start = off;
        sc->end = off + p;
        sc->st = ret;
    }
    *pnum = sc->end - off < n ? sc->end - off : n;
    return sc->st;
}

/* Compares [0, len) of both images: 0 same, 1 different, 2 error. */
static int compare_common(Cmp *c, int64_t len, int64_t total)
{
    for (int64_t off = 0; off < len;) {
        int64_t n = len - off < CMP_CHUNK ? len - off : CMP_CHUNK, p0, p1;
        int s0 = status(c, 0, off, n, len, &p0), s1;

        if (s0 < 0 || (s1 = status(c, 1, off, n, len, &p1)) < 0) {
            return cmp_job_wait(c) ? 1 : 2;
        }
        n = p0 < p1 ? p0 : p1;
        if (c->strict && (s0 & STATUS_MASK) != (s1 & STATUS_MASK)) {
            if (cmp_job_wait(c)) {
                return 1;
            }
            if (!c->quiet) {
                printf("Strict mode: Offset %" PRId64 " block status mismatch!\n", off);
            }
            return 1;
        }
        if ((s0 & BDRV_BLOCK_ZERO) && (s1 & BDRV_BLOCK_ZERO)) {
            /* both read as zeroes */
        } else if (s0 & BDRV_BLOCK_ZERO || s1 & BDRV_BLOCK_ZERO) {
            int i = (s0 & BDRV_BLOCK_ZERO) ? 1 : 0;
            if (read_at(c, i, off, n) < 0) {
                return cmp_job_wait(c) ? 1 : 2;
            }
            if (cmp_segment(c, i, off, n)) {
                return 1;
            }
        } else {
            if (read_both(c, off, n) < 0) {
                return cmp_job_wait(c) ? 1 : 2;
            }
            if (cmp_segment(c, -1, off, n)) {
                return 1;
            }
        }
        off += n;
        progress_update(&c->progress, (uint64_t)off, (uint64_t)total);
    }
    return cmp_job_wait(c);
}

/* The tail of the longer image must read as zeroes. */
static int compare_tail(Cmp *c, int i, int64_t from, int64_t to)
{
    for (int64_t off = from; off < to;) {
        int64_t n = to - off < CMP_CHUNK ? to - off : CMP_CHUNK, p, d;
        int s = status(c, i, off, n, to, &p);

        if (s < 0) {
            return 2;
        }
        n = p;
        if (!(s & BDRV_BLOCK_ZERO)) {
            if (read_at(c, i, off, n) < 0) {
                return 2;
            }
            if ((d = first_nonzero(c->buf[i], (size_t)n)) >= 0) {
                mismatch(c, off + d);
                return 1;
            }
        }
        off += n;
        progress_update(&c->progress, (uint64_t)off, (uint64_t)to);
    }
    return 0;
}

static int run_compare(Cmp *c)
{
    int64_t l0 = blk_getlength(c->blk[0]), l1 = blk_getlength(c->blk[1]);
    int ret;

    if (l0 < 0 || l1 < 0) {
        img_error("Can't get size of %s: %s", c->name[l0 < 0 ? 0 : 1],
                  strerror((int)-(l0 < 0 ? l0 : l1)));
        return 2;
    }
    if (l0 != l1) {
        if (c->strict) {
            if (!c->quiet) {
                printf("Strict mode: Image size mismatch!\n");
            }
            return 1;
        }
        if (!c->quiet) {
            printf("Warning: Image size mismatch!\n");
        }
    }
    ret = compare_common(c, l0 < l1 ? l0 : l1, l0 > l1 ? l0 : l1);
    if (ret == 0 && l0 != l1) {
        ret = compare_tail(c, l0 > l1 ? 0 : 1, l0 < l1 ? l0 : l1, l0 > l1 ? l0 : l1);
    }
    progress_end(&c->progress);
    if (ret == 0 && !c->quiet) {
        printf("Images are identical.\n");
    }
    return ret;
}

/*
 * Whether bs and its file/backing chain may move to another context: the
 * leaves must be local files (an NBD connection stays bound to the context
 * it was opened in; a plugin may be too).
 */
static bool movable(BlockDriverState *bs)
{
    static const char *const ok[] = { "file", "host_device", "null-co", "null-aio" };
    BlockDriverState *file = bdrv_file_bs(bs), *backing = bdrv_backing_bs(bs);
    const char *name = bdrv_get_format_name(bs);

    if (file || backing) {
        return (!file || movable(file)) && (!backing || movable(backing));
    }
    for (size_t i = 0; name && i < sizeof(ok) / sizeof(ok[0]); i++) {
        if (strcmp(name, ok[i]) == 0) {
            return true;
        }
    }
    return false;
}

/* Moves the second image to an IOThread when it can (else it stays here). */
static void remote_setup(Cmp *c)
{
    BlockDriverState *bs = blk_bs(c->blk[1]);
    AioContext *ctx;

    if (!movable(bs) || !(c->iothread = iothread_new("compare", NULL))) {
        return;
    }
    ctx = iothread_get_aio_context(c->iothread);
    if (bdrv_try_change_aio_context(bs, ctx, NULL) < 0) {
        iothread_join(c->iothread);
        c->iothread = NULL;
        return;
    }
    pthread_mutex_init(&c->remote.lock, NULL);
    pthread_cond_init(&c->remote.cond, NULL);
    c->remote.ctx = ctx;
}

/* Brings the second image back here (the IOThread is idle) and stops the thread. */
static void remote_teardown(Cmp *c)
{
    if (!c->iothread) {
        return;
    }
    bdrv_try_change_aio_context(blk_bs(c->blk[1]), c->job.ctx, NULL);
    iothread_join(c->iothread);
    pthread_cond_destroy(&c->remote.cond);
    pthread_mutex_destroy(&c->remote.lock);
}

/*
 * A CMP_CHUNK buffer on one huge page where the kernel allows it: the copies
 * out of the page cache into it then miss the TLB 512 times less often.
 */
static uint8_t *cmp_alloc(void)
{
    void *p = NULL;

    if (posix_memalign(&p, CMP_CHUNK, CMP_CHUNK)) {
        img_error("out of memory (%d bytes)", CMP_CHUNK);
        exit(1);
    }
#ifdef MADV_HUGEPAGE
    madvise(p, CMP_CHUNK, MADV_HUGEPAGE);
#endif
    return p;
}

static const struct option compare_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { NULL, 0, NULL, 0 },
};

int img_compare(int argc, char **argv)
{
    ImgOpen o[2] = { { .quiet = false }, { .quiet = false } };
    Cmp cmp = { 0 };
    bool progress = false;
    int c, ret = 2;

    while ((c = getopt_long(argc, argv, ":hf:F:T:pqsU", compare_longopts, NULL)) != -1) {
        switch (c) {
        case 'h': return img_cmd_help("compare");
        case 'f': o[0].fmt = optarg; break;
        case 'F': o[1].fmt = optarg; break;
        case 'T': o[0].cache = o[1].cache = optarg; break;
        case 'p': progress = true; break;
        case 'q': cmp.quiet = true; break;
        case 's': cmp.strict = true; break;
        case 'U': o[0].force_share = o[1].force_share = true; break;
        case OPT_IMAGE_OPTS: o[0].image_opts = o[1].image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 2;
            }
            break;
        case ':':
            img_usage_error("compare", "option requires an argument -- '%c'", optopt);
            return 2;
        default:
            img_usage_error("compare", "invalid option -- '%s'", argv[optind - 1]);
            return 2;
        }
    }
    if (cmp.quiet) {
        progress = false;
    }
    if (optind != argc - 2) {
        img_usage_error("compare", "Expecting two image file names");
        return 2;
    }
    progress_init(&cmp.progress, progress);
    for (int i = 0; i < 2; i++) {
        o[i].quiet = cmp.quiet;
        cmp.name[i] = argv[optind + i];
        cmp.blk[i] = img_open(cmp.name[i], &o[i]);
        if (!cmp.blk[i]) {
            goto out;
        }
        cmp.buf[i] = cmp_alloc();
        cmp.alt[i] = cmp_alloc();
    }
    cmp.job.ctx = blk_get_aio_context(cmp.blk[0]);
    remote_setup(&cmp);
    ret = run_compare(&cmp);
    remote_teardown(&cmp);
out:
    for (int i = 0; i < 2; i++) {
        if (cmp.blk[i]) {
            blk_unref(cmp.blk[i]);
        }
        free(cmp.buf[i]);
        free(cmp.alt[i]);
    }
    return ret;
}
