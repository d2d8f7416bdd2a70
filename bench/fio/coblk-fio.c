/*
 * libcoblk-fio.so: a fio external ioengine that does I/O through coblk's
 * block layer (BlockBackend), so fio can benchmark any image coblk opens.
 *
 *   fio --ioengine=external:/path/libcoblk-fio.so --filename=disk.qcow2 \
 *       --coblk_opts=driver=qcow2,file.aio=io_uring,cache.direct=on ...
 *
 * Engine options (after --ioengine on the command line):
 *   coblk_opts=KEY=VAL,...  dotted block options (as QEMU's --image-opts). fio's
 *                           --filename is the image unless the options name it
 *                           (a filename / file.filename key) or the driver needs
 *                           no file (null-co, null-aio).
 *   coblk_coroutines=N      0 (default): one coroutine per request (blk_aio_*);
 *                           N: N long-lived coroutines serve a request queue.
 *   coblk_poll=0|1          adaptive busy polling of the event loop (default 0: on a
 *                           shared CPU, polling spends the job's CPU share spinning;
 *                           see bench/README.md).
 * fio's --direct=1 opens the image with cache.direct=on (coblk_opts may override).
 * read, write, trim (discard) and sync/datasync (flush) are supported; the
 * requests fio queues before a commit reach the kernel as one batch
 * (blk_io_plug at the first queue, blk_io_unplug at commit).
 *
 * Built against the fio 3.33 ABI described in fio-abi.h; the engine checks it
 * at init and refuses to run on any other fio.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/block.h>

#include "fio-abi.h"

extern const char fio_version_string[] __attribute__((weak));

/*
 * td->eo: fio allocates it (option_struct_size) and fills in the defaults;
 * the first word is fio's. abi_magic has a default only fio writes, so that
 * init can check that td+FIO_ABI_TD_EO really is this block.
 */
#define COBLK_FIO_ABI_MAGIC 271828183u
typedef struct CoblkFioOptions {
    void *fio_private;
    unsigned int abi_magic;
    char *coblk_opts;
    unsigned int coroutines;
    unsigned int poll;
} CoblkFioOptions;

typedef struct Engine Engine;

typedef struct Req {
    struct Req *next;
    Engine *e;
    struct io_u *io_u;
    BlockBackend *blk;
    IOVector qiov;
} Req;

#define MAX_FILES 64

typedef struct OpenFile {
    struct fio_file *f;
    BlockBackend *blk;
} OpenFile;

/* The fields every request touches come first, in one or two cache lines. */
struct Engine {
    struct thread_data *td;
    CoblkFioOptions *o;
    AioContext *ctx;
    int nfiles;
    bool plugged;
    unsigned in_flight;
    unsigned ndone;
    Req *free_reqs;
    Req *done_head, *done_tail; /* completed, not yet returned by getevents */
    struct io_u **events;       /* returned by the last getevents, read by event() */
    unsigned events_cap;
    /* coblk_coroutines=N */
    Req *pend_head, *pend_tail;
    Coroutine **idle;
    unsigned nidle;
    unsigned nworkers;
    bool stopping;
    OpenFile files[MAX_FILES];
};

/*
 * fio calls every hook of a job from the job's own thread (or process).
 * initial-exec: the engine is dlopen()ed, and the default model would call
 * __tls_get_addr on every hook; 8 bytes fit in glibc's static TLS reserve.
 */
static __thread Engine *tls_engine __attribute__((tls_model("initial-exec")));

static Engine *engine_of(struct thread_data *td)
{
    return tls_engine && tls_engine->td == td ? tls_engine : NULL;
}

static CoblkFioOptions *options_of(struct thread_data *td)
{
    CoblkFioOptions *o = fio_abi_td_eo(td);

    return o && o->abi_magic == COBLK_FIO_ABI_MAGIC ? o : NULL;
}

/* ------------------------------------------------------------------ */
/* Opening images */

static bool names_its_image(BlockOpts *o)
{
    const char *drv = bopts_get(o, "driver");

    if (drv && (!strcmp(drv, "null-co") || !strcmp(drv, "null-aio"))) {
        return true;
    }
    for (size_t i = 0; i < bopts_count(o); i++) {
        const char *k = bopts_key_at(o, i);
        size_t n = strlen(k);

        if (!strcmp(k, "filename") || (n > 9 && !strcmp(k + n - 9, ".filename"))) {
            return true;
        }
    }
    return false;
}

/*
 * Opens the image of fio file f in the calling thread's current context.
 * fio's --direct=1 becomes cache.direct=on unless coblk_opts says otherwise.
 */
static BlockBackend *open_image(CoblkFioOptions *o, struct fio_file *f, int flags, bool direct)
{
    BlockOpts *opts = bopts_new();
    const char *name = fio_abi_file_name(f);
    Error *err = NULL;
    BlockBackend *blk;

    if (o && o->coblk_opts && bopts_parse_keyval(opts, o->coblk_opts, NULL, &err) < 0) {
        fprintf(stderr, "coblk-fio: coblk_opts: %s\n", error_get_pretty(err));
        error_free(err);
        bopts_free(opts);
        return NULL;
    }
    if (names_its_image(opts)) {
        name = NULL;
    }
    if (direct && !bopts_has(opts, "cache.direct")) {
        bopts_set(opts, "cache.direct", "on");
    }
    blk = blk_new_open(name, opts, flags, &err);
    if (!blk) {
        fprintf(stderr, "coblk-fio: %s\n", error_get_pretty(err));
        error_free(err);
    }
    return blk;
}

static void unplug_all(Engine *e)
{
    if (e->plugged) {
        for (int i = 0; i < e->nfiles; i++) {
            blk_io_unplug(e->files[i].blk);
        }
        e->plugged = false;
    }
}

/*
 * Images open read-only, so that jobs that only read share them (and their
 * locks); the first write or trim reopens the image read-write. The queued
 * batch goes out first: the reopen drains.
 */
static int make_writable(Engine *e, BlockBackend *blk)
{
    Error *err = NULL;

    if (!blk_is_read_only(blk)) {
        return 0;
    }
    unplug_all(e);
    if (bdrv_reopen_set_read_only(blk_bs(blk), false, &err) < 0) {
        fprintf(stderr, "coblk-fio: cannot write: %s\n", error_get_pretty(err));
        error_free(err);
        return EROFS;
    }
    return 0;
}

static BlockBackend *blk_of(Engine *e, struct fio_file *f)
{
    for (int i = 0; i < e->nfiles; i++) {
        if (e->files[i].f == f) {
            return e->files[i].blk;
        }
    }
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Completions */

static void req_finish(Req *r, int ret)
{
    Engine *e = r->e;

    if (ret < 0) {
        int ddir = fio_abi_iou_ddir(r->io_u);
        bool xfer = ddir == FIO_ABI_DDIR_READ || ddir == FIO_ABI_DDIR_WRITE;

        fio_abi_iou_set_error(r->io_u, -ret, xfer ? fio_abi_iou_xfer_buflen(r->io_u) : 0);
    }
    r->next = NULL;
    if (e->done_tail) {
        e->done_tail->next = r;
    } else {
        e->done_head = r;
    }
    e->done_tail = r;
    e->ndone++;
    e->in_flight--;
}

static void req_cb(void *opaque, int ret)
{
    req_finish(opaque, ret);
}

/* Starts one request with the callback API. */
static void req_submit_aio(Req *r)
{
    struct io_u *u = r->io_u;
    int64_t off = (int64_t)fio_abi_iou_offset(u);
    uint64_t len = fio_abi_iou_xfer_buflen(u);

    switch (fio_abi_iou_ddir(u)) {
    case FIO_ABI_DDIR_READ:
        iovector_init_buf(&r->qiov, fio_abi_iou_xfer_buf(u), len);
        blk_aio_preadv(r->blk, off, &r->qiov, 0, req_cb, r);
        break;
    case FIO_ABI_DDIR_WRITE:
        iovector_init_buf(&r->qiov, fio_abi_iou_xfer_buf(u), len);
        blk_aio_pwritev(r->blk, off, &r->qiov, 0, req_cb, r);
        break;
    case FIO_ABI_DDIR_TRIM:
        blk_aio_pdiscard(r->blk, off, (int64_t)len, req_cb, r);
        break;
    default: /* sync, datasync, sync_file_range: a flush */
        blk_aio_flush(r->blk, req_cb, r);
        break;
    }
}

/* The same request from a coroutine (coblk_coroutines=N). */
static int coroutine_fn req_run_co(Req *r)
{
    struct io_u *u = r->io_u;
    int64_t off = (int64_t)fio_abi_iou_offset(u);
    int64_t len = (int64_t)fio_abi_iou_xfer_buflen(u);

    switch (fio_abi_iou_ddir(u)) {
    case FIO_ABI_DDIR_READ:
        iovector_init_buf(&r->qiov, fio_abi_iou_xfer_buf(u), (size_t)len);
        return blk_co_preadv(r->blk, off, len, &r->qiov, 0);
    case FIO_ABI_DDIR_WRITE:
        iovector_init_buf(&r->qiov, fio_abi_iou_xfer_buf(u), (size_t)len);
        return blk_co_pwritev(r->blk, off, len, &r->qiov, 0);
    case FIO_ABI_DDIR_TRIM:
        return blk_co_pdiscard(r->blk, off, len);
    default:
        return blk_co_flush(r->blk);
    }
}

static void coroutine_fn worker_co(void *opaque)
{
    Engine *e = opaque;

    for (;;) {
        while (e->pend_head) {
            Req *r = e->pend_head;

            e->pend_head = r->next;
            if (!e->pend_head) {
                e->pend_tail = NULL;
            }
            req_finish(r, req_run_co(r));
        }
        if (e->stopping) {
            break;
        }
        e->idle[e->nidle++] = coroutine_self();
        coroutine_yield();
    }
    e->nworkers--;
}

/* ------------------------------------------------------------------ */
/* Engine hooks */

static int coblk_fio_init(struct thread_data *td)
{
    AioContextOpts copts = { 0 };
    CoblkFioOptions *o;
    Error *err = NULL;
    Engine *e;

    if (!fio_version_string || strcmp(fio_version_string, FIO_ABI_FIO_VERSION)) {
        fprintf(stderr, "coblk-fio: built for %s's engine ABI, this is %s: refusing to run\n",
                FIO_ABI_FIO_VERSION, fio_version_string ? fio_version_string : "unknown");
        return 1;
    }
    o = options_of(td);
    if (!o) {
        fprintf(stderr, "coblk-fio: fio's thread_data does not have the %s layout\n",
                FIO_ABI_FIO_VERSION);
        return 1;
    }
    e = calloc(1, sizeof(*e));
    e->td = td;
    e->o = o;
    copts.poll_max_ns = o->poll ? 32768 : 0;
    copts.poll_max_ns_set = true;
    e->ctx = aio_context_new_opts(&copts, &err);
    if (!e->ctx) {
        fprintf(stderr, "coblk-fio: %s\n", error_get_pretty(err));
        error_free(err);
        free(e);
        return 1;
    }
    aio_context_set_current(e->ctx);
    tls_engine = e;
    if (o->coroutines) {
        e->idle = calloc(o->coroutines, sizeof(*e->idle));
        for (unsigned i = 0; i < o->coroutines; i++) {
            e->nworkers++;
            coroutine_enter(coroutine_create(worker_co, e)); /* parks itself idle */
        }
    }
    return 0;
}

static int coblk_fio_open_file(struct thread_data *td, struct fio_file *f)
{
    Engine *e = engine_of(td);
    BlockBackend *blk;

    if (!e || e->nfiles == MAX_FILES) {
        return e ? EMFILE : EINVAL;
    }
    blk = open_image(e->o, f, 0, fio_abi_td_odirect(td));
    if (!blk) {
        return EIO;
    }
    e->files[e->nfiles++] = (OpenFile){ .f = f, .blk = blk };
    return 0;
}

static int coblk_fio_close_file(struct thread_data *td, struct fio_file *f)
{
    Engine *e = engine_of(td);

    for (int i = 0; e && i < e->nfiles; i++) {
        if (e->files[i].f == f) {
            blk_unref(e->files[i].blk);
            e->files[i] = e->files[--e->nfiles];
            return 0;
        }
    }
    return 0;
}

/*
 * The image's size. fio asks before the job starts, usually in its parent
 * process: open the image read-only in a throw-away context, so that no
 * coblk state (ring fds, threads) is inherited by the forked job.
 */
static int coblk_fio_get_file_size(struct thread_data *td, struct fio_file *f)
{
    AioContext *old = aio_context_current();
    Error *err = NULL;
    AioContext *ctx;
    BlockBackend *blk;
    int64_t len;

    ctx = aio_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "coblk-fio: %s\n", error_get_pretty(err));
        error_free(err);
        return 1;
    }
    aio_context_set_current(ctx);
    blk = open_image(options_of(td), f, BDRV_O_FORCE_SHARE, false);
    len = blk ? blk_getlength(blk) : -EIO;
    if (blk) {
        blk_unref(blk);
    }
    aio_context_set_current(old);
    aio_context_unref(ctx);
    if (len < 0) {
        return 1;
    }
    fio_abi_file_set_size(f, (uint64_t)len);
    return 0;
}

static int coblk_fio_queue(struct thread_data *td, struct io_u *u)
{
    Engine *e = engine_of(td);
    BlockBackend *blk = e ? blk_of(e, fio_abi_iou_file(u)) : NULL;
    int ddir = fio_abi_iou_ddir(u);
    Req *r;

    int err;

    if (!blk || ddir < FIO_ABI_DDIR_READ || ddir > FIO_ABI_DDIR_SYNC_FILE_RANGE) {
        fio_abi_iou_set_error(u, blk ? EINVAL : EBADF, 0);
        return FIO_ABI_Q_COMPLETED;
    }
    if (ddir == FIO_ABI_DDIR_WRITE || ddir == FIO_ABI_DDIR_TRIM) {
        err = make_writable(e, blk);
        if (err) {
            fio_abi_iou_set_error(u, err, fio_abi_iou_xfer_buflen(u));
            return FIO_ABI_Q_COMPLETED;
        }
    }
    r = e->free_reqs;
    if (r) {
        e->free_reqs = r->next;
    } else {
        r = calloc(1, sizeof(*r)); /* warm-up only: requests are recycled */
        r->e = e;
    }
    r->io_u = u;
    r->blk = blk;
    e->in_flight++;
    if (e->o->coroutines) {
        r->next = NULL;
        if (e->pend_tail) {
            e->pend_tail->next = r;
        } else {
            e->pend_head = r;
        }
        e->pend_tail = r;
        return FIO_ABI_Q_QUEUED;
    }
    if (!e->plugged) {
        for (int i = 0; i < e->nfiles; i++) {
            blk_io_plug(e->files[i].blk);
        }
        e->plugged = true;
    }
    req_submit_aio(r);
    return FIO_ABI_Q_QUEUED;
}

static int coblk_fio_commit(struct thread_data *td)
{
    Engine *e = engine_of(td);

    if (!e) {
        return 0;
    }
    if (e->o->coroutines && e->pend_head && e->nidle) {
        for (int i = 0; i < e->nfiles; i++) {
            blk_io_plug(e->files[i].blk);
        }
        while (e->pend_head && e->nidle) {
            coroutine_enter(e->idle[--e->nidle]);
        }
        e->plugged = true;
    }
    unplug_all(e);
    return 0;
}

static int coblk_fio_getevents(struct thread_data *td, unsigned int min, unsigned int max,
                               const struct timespec *t)
{
    Engine *e = engine_of(td);
    unsigned n = 0;

    if (!e) {
        return -EINVAL;
    }
    coblk_fio_commit(td); /* fio may reap without committing first */
    /*
     * Short of min: blocking iterations, each of which first looks at the
     * completion rings without a system call and reaps all they hold, and
     * sleeps only when they are empty. A non-blocking aio_poll() first would
     * cost an epoll_wait(0) per wait whenever nothing is ready yet (every
     * I/O at qd 1). With min 0, one non-blocking iteration collects what is
     * ready; with min already met, what is done is returned as it is.
     */
    if (e->ndone < min) {
        while (e->ndone < min && e->in_flight > 0) {
            aio_poll(e->ctx, true);
        }
    } else if (min == 0 && e->ndone < max && e->in_flight > 0) {
        aio_poll(e->ctx, false);
    }
    if (max > e->events_cap) {
        e->events = realloc(e->events, max * sizeof(*e->events));
        e->events_cap = max;
    }
    while (n < max && e->done_head) {
        Req *r = e->done_head;

        e->done_head = r->next;
        e->events[n++] = r->io_u;
        r->next = e->free_reqs;
        e->free_reqs = r;
    }
    if (!e->done_head) {
        e->done_tail = NULL;
    }
    e->ndone -= n;
    return (int)n;
}

static struct io_u *coblk_fio_event(struct thread_data *td, int i)
{
    return engine_of(td)->events[i];
}

static void coblk_fio_cleanup(struct thread_data *td)
{
    Engine *e = engine_of(td);

    if (!e) {
        return;
    }
    while (e->in_flight) {
        coblk_fio_commit(td); /* queued but never committed: start them */
        aio_poll(e->ctx, true);
    }
    e->stopping = true;
    while (e->nidle) {
        coroutine_enter(e->idle[--e->nidle]); /* each worker returns */
    }
    while (e->nfiles) {
        blk_unref(e->files[--e->nfiles].blk);
    }
    while (e->free_reqs) {
        Req *r = e->free_reqs;

        e->free_reqs = r->next;
        free(r);
    }
    while (e->done_head) {
        Req *r = e->done_head;

        e->done_head = r->next;
        free(r);
    }
    aio_context_set_current(NULL);
    aio_context_unref(e->ctx);
    free(e->events);
    free(e->idle);
    free(e);
    tls_engine = NULL;
}

/* fio invalidates the page cache of a file before a job; coblk images have none to drop. */
static int coblk_fio_invalidate(struct thread_data *td, struct fio_file *f)
{
    return 0;
}

static struct fio_abi_option coblk_fio_options[] = {
    {
        .name = "coblk_opts",
        .lname = "coblk block options",
        .type = FIO_ABI_OPT_STR_STORE,
        .off1 = offsetof(CoblkFioOptions, coblk_opts),
        .help = "dotted block options, e.g. driver=qcow2,file.aio=native,cache.direct=on",
        .category = FIO_ABI_OPT_C_ENGINE,
    },
    {
        .name = "coblk_coroutines",
        .lname = "coblk coroutines",
        .type = FIO_ABI_OPT_INT,
        .off1 = offsetof(CoblkFioOptions, coroutines),
        .help = "0: one coroutine per request (blk_aio_*); N: N coroutines serve a queue",
        .def = "0",
        .category = FIO_ABI_OPT_C_ENGINE,
    },
    {
        .name = "coblk_poll",
        .lname = "coblk busy polling",
        .type = FIO_ABI_OPT_BOOL,
        .off1 = offsetof(CoblkFioOptions, poll),
        .help = "adaptive busy polling of coblk's event loop before sleeping",
        .def = "0",
        .category = FIO_ABI_OPT_C_ENGINE,
    },
    {
        .name = "coblk_abi_check",
        .lname = "coblk ABI check",
        .type = FIO_ABI_OPT_INT,
        .off1 = offsetof(CoblkFioOptions, abi_magic),
        .help = "internal: lets the engine check that it found its options (do not set)",
        .def = "271828183",
        .category = FIO_ABI_OPT_C_ENGINE,
    },
    { .name = NULL },
};

static struct fio_abi_ioengine_ops coblk_fio_ops = {
    .name = "coblk",
    .version = FIO_ABI_IOOPS_VERSION,
    .flags = FIO_ABI_DISKLESSIO | FIO_ABI_NOEXTEND | FIO_ABI_NODISKUTIL | FIO_ABI_MEMALIGN,
    .init = coblk_fio_init,
    .queue = coblk_fio_queue,
    .commit = coblk_fio_commit,
    .getevents = coblk_fio_getevents,
    .event = coblk_fio_event,
    .cleanup = coblk_fio_cleanup,
    .open_file = coblk_fio_open_file,
    .close_file = coblk_fio_close_file,
    .invalidate = coblk_fio_invalidate,
    .get_file_size = coblk_fio_get_file_size,
    .option_struct_size = sizeof(CoblkFioOptions),
    .options = coblk_fio_options,
};

/* The entry point fio looks up after dlopen(). */
void get_ioengine(struct fio_abi_ioengine_ops **ops);

__attribute__((visibility("default"))) void get_ioengine(struct fio_abi_ioengine_ops **ops)
{
    *ops = &coblk_fio_ops;
}
