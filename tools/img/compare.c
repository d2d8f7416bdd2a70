/*
 * coblk-img compare: compares the guest-visible content of two images,
 * skipping ranges that block status reports as zero in both. Exit codes as
 * qemu-img: 0 identical, 1 different (or -s mismatch), 2 error.
 * A mismatch is reported at the 512-byte sector that holds the first
 * differing byte, as qemu-img does.
 *
 * The loop thread reads segment k+1 while a worker thread compares segment
 * k (two sets of buffers); results are taken in order, so the first
 * mismatch reported is the lowest one, as with a sequential scan.
 */
#include <getopt.h>
#include <inttypes.h>
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

typedef struct Cmp {
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

static int read_at(Cmp *c, int i, int64_t off, int64_t n)
{
    int ret = blk_pread(c->blk[i], off, n, c->buf[i], 0);

    if (ret < 0) {
        img_error("Error while reading offset %" PRId64 " of %s: %s", off, c->name[i],
                  strerror(-ret));
        return -1;
    }
    return 0;
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
        int64_t p = 0;
        int ret = img_block_status(blk_bs(c->blk[i]), NULL, off, end - off, &p, NULL, NULL,
                                   NULL);
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
            if (read_at(c, 0, off, n) < 0 || read_at(c, 1, off, n) < 0) {
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
        cmp.buf[i] = img_alloc(CMP_CHUNK);
        cmp.alt[i] = img_alloc(CMP_CHUNK);
    }
    cmp.job.ctx = blk_get_aio_context(cmp.blk[0]);
    ret = run_compare(&cmp);
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
