/*
 * Power-cut test of vmdk twoGbMaxExtentSparse / twoGbMaxExtentFlat growth,
 * across all the image's files:
 *
 *   powercut-vmdk-grow DIR SUBFORMAT [concurrent]
 *
 * A grow creates extent files and replaces the descriptor file, so a log of
 * one file's writes (blklogwrites, as tests/crash/powercut.c uses) cannot
 * replay it. This test interposes the libc calls that change files in its
 * scratch folder (open with O_CREAT/O_TRUNC, mkstemp, write, pwrite,
 * pwritev, ftruncate, fallocate, fsync, fdatasync, rename, unlink; dup2
 * moves an fd's inode; the io_uring and libaio engines are made
 * unavailable so that every request takes the thread pool's
 * pwritev/fdatasync) and records them, per inode,
 * while a guest workload writes, grows the image from 10 MiB to 3 GiB and
 * writes across the old and new extents, with guest flushes.
 *
 * (fsync and fdatasync are recorded but not done: the cuts come from the
 * record). A power cut after event k is then rebuilt in a fresh folder:
 * each inode's writes up to its last fsync before k are kept, later ones
 * kept or lost (none, all, or random subsets); names (creations, renames,
 * unlinks) up to the folder's last fsync are kept, later ones as a prefix
 * (a journaling file system keeps them in order), lost or kept together
 * with the data or not (a rename can land before the renamed file's data).
 * Every cut after a sync and every cut inside the grow is checked, once
 * per distinct rebuilt folder (many cuts rebuild the same one):
 *  - the image opens, and qemu-img check finds no corruption;
 *  - its size is the old or the new one (the new one once a guest flush
 *    after the grow came before the cut);
 *  - every tracked guest sector holds the data of the last guest flush
 *    before the cut or of a later guest write;
 *  - an image left at the old size grows again to the new size (the
 *    leftover extent files of the cut grow are taken over, see
 *    drivers/format/vmdk/stray.c) and checks clean.
 * With "concurrent", half of the guest writes are bursts of BURST_N adjacent
 * writes of 1..160 sectors in flight at once (allocating writes whose data
 * goes out without the driver's lock, sharing grains, committed together:
 * drivers/format/vmdk/alloc.c).
 * Exit 0 = pass, 1 = a violation (printed), 77 = skipped (no vmdk).
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

#define MiB (1024LL * 1024)
#define GiB (1024 * MiB)
#define S0 (10 * MiB)
#define GROWN (3 * GiB)
#define RLEN (2 * MiB)              /* two tracked guest regions of RLEN bytes */
#define SECTOR 512
#define MAX_EV 100000
#define MAX_INO 64
#define MAX_FD 4096
#define MAX_OPS 512
#define MAX_FLUSH 80
#define BURST_N 8
#define BURST_MAX (160 * SECTOR)    /* longest write of a burst: 80 KiB */
#define NAME_LEN 256

static const int64_t region_start[2] = { 0, 2 * GiB - MiB };

typedef enum { EV_CREATE, EV_WRITE, EV_TRUNC, EV_ZERO, EV_SYNC, EV_SYNCDIR, EV_RENAME,
               EV_UNLINK, EV_MARK, EV_ZERO_GROW } EvKind;

typedef struct Ev {
    EvKind kind;
    int ino;                /* data events, CREATE, RENAME (the renamed inode) */
    char name[NAME_LEN];    /* CREATE, UNLINK, RENAME (from); MARK (its text) */
    char name2[NAME_LEN];   /* RENAME (to) */
    uint64_t off, len;      /* WRITE, TRUNC (len), ZERO */
    bool grows;             /* ZERO: without FALLOC_FL_KEEP_SIZE (may extend the file) */
    size_t data;            /* WRITE: offset in the data log */
} Ev;

static char scratch[4096], dir[4200], work[4200], desc_name[NAME_LEN];
static Ev *ev;
static int nev;
static uint8_t *dlog;
static size_t dlog_len, dlog_cap;
static bool tracing;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int fd_ino[MAX_FD];
static bool fd_dir[MAX_FD];
static uint64_t fd_pos[MAX_FD];
/* The folder as the traced program sees it: name -> inode (-1: none). */
static char names[MAX_INO][NAME_LEN];
static int name_ino[MAX_INO], nnames, ninos, base_inos;

static void die(const char *what)
{
    fprintf(stderr, "powercut-vmdk-grow: FAIL: %s\n", what);
    exit(1);
}

/* ---------------------------------------------------------------------- */
/* Recording */

static Ev *add_ev(EvKind kind, int ino)
{
    if (nev >= MAX_EV) {
        die("too many events");
    }
    memset(&ev[nev], 0, sizeof(ev[nev]));
    ev[nev].kind = kind;
    ev[nev].ino = ino;
    return &ev[nev++];
}

/* The base name of path if it lies directly in dir, else NULL. */
static const char *in_dir(const char *path)
{
    size_t n = strlen(dir);

    if (!path || strncmp(path, dir, n) || path[n] != '/' || strchr(path + n + 1, '/')) {
        return NULL;
    }
    return path + n + 1;
}

static int lookup(const char *name)
{
    for (int i = 0; i < nnames; i++) {
        if (name_ino[i] >= 0 && !strcmp(names[i], name)) {
            return i;
        }
    }
    return -1;
}

static void set_name(const char *name, int ino)
{
    int i = lookup(name);

    if (i < 0) {
        if (nnames >= MAX_INO) {
            die("too many names");
        }
        i = nnames++;
        snprintf(names[i], NAME_LEN, "%s", name);
    }
    name_ino[i] = ino;
}

static void note_open(const char *path, int flags, bool existed, int fd)
{
    const char *name = in_dir(path);
    int i;

    if (fd < 0 || fd >= MAX_FD || !tracing) {
        return;
    }
    fd_ino[fd] = -1;
    fd_dir[fd] = path && !strcmp(path, dir);
    fd_pos[fd] = 0;
    if (!name) {
        return;
    }
    pthread_mutex_lock(&lock);
    i = lookup(name);
    if (i < 0 || !existed) {
        if (ninos >= MAX_INO) {
            die("too many inodes");
        }
        set_name(name, ninos++);
        snprintf(add_ev(EV_CREATE, ninos - 1)->name, NAME_LEN, "%s", name);
        i = lookup(name);
    } else if (flags & O_TRUNC) {
        add_ev(EV_TRUNC, name_ino[i])->len = 0;
    }
    fd_ino[fd] = name_ino[i];
    pthread_mutex_unlock(&lock);
}

static bool traced(int fd)
{
    return tracing && fd >= 0 && fd < MAX_FD && (fd_ino[fd] >= 0 || fd_dir[fd]);
}

static void note_write(int fd, const struct iovec *iov, int cnt, uint64_t off, ssize_t n)
{
    Ev *e;

    if (n <= 0 || !traced(fd) || fd_dir[fd]) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (dlog_len + (size_t)n > dlog_cap) {
        dlog_cap = (dlog_len + (size_t)n) * 2;
        dlog = realloc(dlog, dlog_cap);
        if (!dlog) {
            die("out of memory");
        }
    }
    e = add_ev(EV_WRITE, fd_ino[fd]);
    e->off = off;
    e->len = (uint64_t)n;
    e->data = dlog_len;
    for (int i = 0; i < cnt && n > 0; i++) {
        size_t take = iov[i].iov_len < (size_t)n ? iov[i].iov_len : (size_t)n;

        memcpy(dlog + dlog_len, iov[i].iov_base, take);
        dlog_len += take;
        n -= (ssize_t)take;
    }
    pthread_mutex_unlock(&lock);
}

static void note_simple(int fd, EvKind kind, uint64_t off, uint64_t len)
{
    Ev *e;

    if (!traced(fd)) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (fd_dir[fd]) {
        if (kind == EV_SYNC) {
            add_ev(EV_SYNCDIR, -1);
        }
    } else {
        e = add_ev(kind == EV_ZERO_GROW ? EV_ZERO : kind, fd_ino[fd]);
        e->off = off;
        e->len = len;
        e->grows = kind == EV_ZERO_GROW;
    }
    pthread_mutex_unlock(&lock);
}

static void mark(const char *text)
{
    pthread_mutex_lock(&lock);
    snprintf(add_ev(EV_MARK, -1)->name, NAME_LEN, "%s", text);
    pthread_mutex_unlock(&lock);
}

/* ---------------------------------------------------------------------- */
/* Interposers (see test-untrusted.c for why the symbol names are explicit) */

#define REAL(sym, ret, params)                          \
    static ret (*real) params;                          \
    if (!real) {                                        \
        real = (ret (*) params)dlsym(RTLD_NEXT, sym);   \
    }

static mode_t open_mode(int flags, va_list ap)
{
    return flags & (O_CREAT | O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

#define INTERPOSE_OPEN(cname, sym)                                              \
    int cname(const char *path, int flags, ...) __asm__(sym);                  \
    int cname(const char *path, int flags, ...)                                \
    {                                                                           \
        va_list ap;                                                             \
        mode_t mode;                                                            \
        bool existed = tracing && in_dir(path) && access(path, F_OK) == 0;     \
        int fd;                                                                 \
        REAL(sym, int, (const char *, int, ...))                                \
                                                                                \
        va_start(ap, flags);                                                    \
        mode = open_mode(flags, ap);                                            \
        va_end(ap);                                                             \
        fd = real(path, flags, mode);                                           \
        note_open(path, flags, existed, fd);                                    \
        return fd;                                                              \
    }

INTERPOSE_OPEN(pc_open, "open")
INTERPOSE_OPEN(pc_open64, "open64")

/*
 * With _FILE_OFFSET_BITS=64 the headers send some calls to their *64 names:
 * each is interposed under both.
 */
#define INTERPOSE_MKSTEMP(cname, sym)                                          \
    int cname(char *tmpl) __asm__(sym);                                        \
    int cname(char *tmpl)                                                      \
    {                                                                          \
        int fd;                                                                \
        REAL(sym, int, (char *))                                               \
                                                                               \
        fd = real(tmpl);                                                       \
        note_open(tmpl, O_CREAT, false, fd);                                   \
        return fd;                                                             \
    }

#define INTERPOSE_PWRITEV(cname, sym)                                          \
    ssize_t cname(int fd, const struct iovec *iov, int cnt, off_t off) __asm__(sym); \
    ssize_t cname(int fd, const struct iovec *iov, int cnt, off_t off)         \
    {                                                                          \
        ssize_t n;                                                             \
        REAL(sym, ssize_t, (int, const struct iovec *, int, off_t))            \
                                                                               \
        n = real(fd, iov, cnt, off);                                           \
        note_write(fd, iov, cnt, (uint64_t)off, n);                            \
        return n;                                                              \
    }

#define INTERPOSE_PWRITE(cname, sym)                                           \
    ssize_t cname(int fd, const void *buf, size_t len, off_t off) __asm__(sym); \
    ssize_t cname(int fd, const void *buf, size_t len, off_t off)              \
    {                                                                          \
        struct iovec iov = { (void *)buf, len };                               \
        ssize_t n;                                                             \
        REAL(sym, ssize_t, (int, const void *, size_t, off_t))                 \
                                                                               \
        n = real(fd, buf, len, off);                                           \
        note_write(fd, &iov, 1, (uint64_t)off, n);                             \
        return n;                                                              \
    }

#define INTERPOSE_FTRUNCATE(cname, sym)                                        \
    int cname(int fd, off_t len) __asm__(sym);                                 \
    int cname(int fd, off_t len)                                               \
    {                                                                          \
        int r;                                                                 \
        REAL(sym, int, (int, off_t))                                           \
                                                                               \
        r = real(fd, len);                                                     \
        if (r == 0) {                                                          \
            note_simple(fd, EV_TRUNC, 0, (uint64_t)len);                       \
        }                                                                      \
        return r;                                                              \
    }

#define INTERPOSE_FALLOCATE(cname, sym)                                        \
    int cname(int fd, int mode, off_t off, off_t len) __asm__(sym);            \
    int cname(int fd, int mode, off_t off, off_t len)                          \
    {                                                                          \
        int r;                                                                 \
        REAL(sym, int, (int, int, off_t, off_t))                               \
                                                                               \
        r = real(fd, mode, off, len);                                          \
        if (r == 0 && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) { \
            note_simple(fd, (mode & FALLOC_FL_KEEP_SIZE) ? EV_ZERO : EV_ZERO_GROW, \
                        (uint64_t)off, (uint64_t)len);                         \
        } else if (r == 0 && traced(fd)) {                                     \
            die("an untracked fallocate mode");                                \
        }                                                                      \
        return r;                                                              \
    }

INTERPOSE_MKSTEMP(pc_mkstemp, "mkstemp")
INTERPOSE_MKSTEMP(pc_mkstemp64, "mkstemp64")
INTERPOSE_PWRITEV(pc_pwritev, "pwritev")
INTERPOSE_PWRITEV(pc_pwritev64, "pwritev64")
INTERPOSE_PWRITE(pc_pwrite, "pwrite")
INTERPOSE_PWRITE(pc_pwrite64, "pwrite64")
INTERPOSE_FTRUNCATE(pc_ftruncate, "ftruncate")
INTERPOSE_FTRUNCATE(pc_ftruncate64, "ftruncate64")
INTERPOSE_FALLOCATE(pc_fallocate, "fallocate")
INTERPOSE_FALLOCATE(pc_fallocate64, "fallocate64")

int close(int fd)
{
    REAL("close", int, (int))

    if (fd >= 0 && fd < MAX_FD) {
        fd_ino[fd] = -1;
        fd_dir[fd] = false;
    }
    return real(fd);
}

/* The file node takes a replaced file under its old fd number (drivers/protocol/file-replace.c). */
int dup2(int from, int to)
{
    int r;
    REAL("dup2", int, (int, int))

    r = real(from, to);
    if (r >= 0 && from >= 0 && from < MAX_FD && to >= 0 && to < MAX_FD && from != to) {
        fd_ino[to] = fd_ino[from];
        fd_dir[to] = fd_dir[from];
        fd_pos[to] = fd_pos[from];
    }
    return r;
}

ssize_t write(int fd, const void *buf, size_t len)
{
    struct iovec iov = { (void *)buf, len };
    ssize_t n;
    REAL("write", ssize_t, (int, const void *, size_t))

    n = real(fd, buf, len);
    if (n > 0 && traced(fd) && !fd_dir[fd]) {
        note_write(fd, &iov, 1, fd_pos[fd], n);
        fd_pos[fd] += (uint64_t)n;
    }
    return n;
}

/*
 * fsync and fdatasync are recorded, not done: the power cuts are rebuilt
 * from the record, so what the scratch folder's file system makes durable
 * does not matter, and a real sync costs a journal commit (tens of
 * milliseconds on a loaded disk, some 2,000 of them per run).
 */
static int fake_sync(int fd)
{
    if (fcntl(fd, F_GETFD) < 0) {
        return -1; /* EBADF, as the real call */
    }
    note_simple(fd, EV_SYNC, 0, 0);
    return 0;
}

int fsync(int fd)
{
    return fake_sync(fd);
}

int fdatasync(int fd)
{
    return fake_sync(fd);
}

int rename(const char *from, const char *to)
{
    const char *a = in_dir(from), *b = in_dir(to);
    int r;
    REAL("rename", int, (const char *, const char *))

    r = real(from, to);
    if (r == 0 && tracing && a && b) {
        pthread_mutex_lock(&lock);
        if (lookup(a) < 0) {
            die("rename of an unknown file");
        }
        {
            Ev *e = add_ev(EV_RENAME, name_ino[lookup(a)]);

            snprintf(e->name, NAME_LEN, "%s", a);
            snprintf(e->name2, NAME_LEN, "%s", b);
            set_name(b, name_ino[lookup(a)]);
            name_ino[lookup(a)] = -1;
        }
        pthread_mutex_unlock(&lock);
    }
    return r;
}

int unlink(const char *path)
{
    const char *a = in_dir(path);
    int r;
    REAL("unlink", int, (const char *))

    r = real(path);
    if (r == 0 && tracing && a && lookup(a) >= 0) {
        pthread_mutex_lock(&lock);
        snprintf(add_ev(EV_UNLINK, -1)->name, NAME_LEN, "%s", a);
        name_ino[lookup(a)] = -1;
        pthread_mutex_unlock(&lock);
    }
    return r;
}

/* No io_uring, no libaio: every request goes through the thread pool's libc calls. */
struct io_uring;
struct io_uring_params;
int io_uring_queue_init_params(unsigned entries, struct io_uring *ring,
                               struct io_uring_params *p);
int io_setup(int nr, void **ctx);
int io_uring_queue_init_params(unsigned entries, struct io_uring *ring,
                               struct io_uring_params *p)
{
    return -ENOSYS;
}

int io_setup(int nr, void **ctx)
{
    return -ENOSYS;
}

/* ---------------------------------------------------------------------- */
/* Guest workload */

typedef struct GuestOp {
    int region;
    int64_t off, len;       /* within the region */
    uint32_t seq;
} GuestOp;

static GuestOp ops[MAX_OPS];
static int nops, nflush, grow_flush = -1;
static bool concurrent;                 /* "concurrent": bursts of writes in flight together */
static int flush_after[MAX_FLUSH];        /* guest flush k came after ops[0..flush_after[k]) */
static uint8_t (*snap)[2][RLEN];        /* tracked guest data at each guest flush */
static uint8_t cur[2][RLEN];

static uint8_t op_byte(const GuestOp *op, int64_t o)
{
    uint64_t x = (uint64_t)o * 0x9e3779b1u + op->seq * 0x85ebca6bu;

    return (uint8_t)(x >> 24 ^ x);
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

static void guest_flush(BlockBackend *blk)
{
    char m[32];

    if (blk_flush(blk) < 0) {
        die("guest flush failed");
    }
    if (nflush == MAX_FLUSH) {
        die("too many guest flushes");
    }
    snprintf(m, sizeof(m), "flush %d", nflush);
    mark(m);
    memcpy(snap[nflush], cur, sizeof(cur));
    flush_after[nflush++] = nops;
}

static void burst_done(void *opaque, int ret)
{
    int *pending = opaque;

    if (ret < 0) {
        die("a concurrent guest write failed");
    }
    (*pending)--;
}

/*
 * "concurrent": BURST_N adjacent writes of 1..160 sectors from off, all in
 * flight at once: they share grains (and wait for each other's allocations),
 * span grains and, in region 1, the 2 GiB boundary of twoGbMaxExtent*
 * extents. They do not overlap, so the sector checks hold as for single
 * writes.
 */
static void burst(BlockBackend *blk, int region, int64_t off, uint64_t *seed)
{
    static uint8_t bufs[BURST_N][BURST_MAX];
    IOVector qiov[BURST_N];
    int pending = 0;

    for (int n = 0; n < BURST_N && off < RLEN && nops < MAX_OPS; n++) {
        GuestOp *op = &ops[nops];

        op->region = region;
        op->off = off;
        op->len = (int64_t)(1 + rnd(seed) % (BURST_MAX / SECTOR)) * SECTOR;
        if (op->off + op->len > RLEN) {
            op->len = RLEN - op->off;
        }
        op->seq = (uint32_t)nops + 1;
        for (int64_t b = 0; b < op->len; b++) {
            bufs[n][b] = op_byte(op, region_start[region] + op->off + b);
            cur[region][op->off + b] = bufs[n][b];
        }
        iovector_init_buf(&qiov[n], bufs[n], (size_t)op->len);
        pending++;
        if (!blk_aio_pwritev(blk, region_start[region] + op->off, &qiov[n], 0, burst_done,
                             &pending)) {
            die("blk_aio_pwritev failed");
        }
        off += op->len;
        nops++;
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
}

static void guest_writes(BlockBackend *blk, int n, bool grown, uint64_t *seed)
{
    uint8_t *buf = malloc(64 * 1024);

    for (int i = 0; i < n; i++) {
        GuestOp *op = &ops[nops];

        op->region = grown ? (int)(rnd(seed) % 2) : 0;
        op->len = (int64_t)(1 + rnd(seed) % 128) * SECTOR;
        op->off = (int64_t)(rnd(seed) % (RLEN / SECTOR)) * SECTOR;
        if (op->off + op->len > RLEN) {
            op->len = RLEN - op->off;
        }
        op->seq = (uint32_t)nops + 1;
        if (concurrent && rnd(seed) % 2 == 0) {
            burst(blk, op->region, op->off, seed);
            if (rnd(seed) % 4 == 0) {
                guest_flush(blk);
            }
            continue;
        }
        for (int64_t b = 0; b < op->len; b++) {
            buf[b] = op_byte(op, region_start[op->region] + op->off + b);
            cur[op->region][op->off + b] = buf[b];
        }
        if (blk_pwrite(blk, region_start[op->region] + op->off, op->len, buf, 0) < 0) {
            die("a guest write failed");
        }
        nops++;
        if (rnd(seed) % 4 == 0) {
            guest_flush(blk);
        }
    }
    guest_flush(blk);
    free(buf);
}

static void run_workload(const char *img)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;
    uint64_t seed = 4242;

    snprintf(opts, sizeof(opts), "driver=vmdk,file.driver=file,file.filename=%s", img);
    bopts_parse_keyval(o, opts, NULL, NULL);
    blk = blk_new_open(NULL, o, BDRV_O_RDWR | BDRV_O_AIO_THREADS, &err);
    if (!blk) {
        fprintf(stderr, "open: %s\n", error_get_pretty(err));
        die("cannot open the image");
    }
    guest_writes(blk, 12, false, &seed);
    mark("grow-start");
    if (blk_truncate(blk, GROWN, true, PREALLOC_MODE_OFF, 0, &err) < 0) {
        fprintf(stderr, "grow: %s\n", error_get_pretty(err));
        die("the grow failed");
    }
    mark("grow-end");
    guest_flush(blk);
    grow_flush = nflush - 1;
    guest_writes(blk, 16, true, &seed);
    blk_unref(blk);
}

/* ---------------------------------------------------------------------- */
/* Rebuilding a power cut */

static char base_copy[MAX_INO][4400];

static void sh(const char *fmt, ...)
{
    char cmd[16384];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    if (system(cmd) != 0) {
        fprintf(stderr, "command failed: %s\n", cmd);
        die("a helper command failed");
    }
}

/*
 * What a cut keeps of the events after their sync points, by mode: the
 * unsynced data writes and the unsynced names (creations, renames, unlinks,
 * a prefix of them) are both lost (CUT_NONE), both kept (CUT_ALL), kept at
 * random (CUT_RANDOM), or one kept and the other lost (CUT_NAMES,
 * CUT_DATA: a rename that lands before the data of the renamed file).
 */
enum { CUT_NONE, CUT_ALL, CUT_RANDOM, CUT_NAMES, CUT_DATA };

/* Keep-or-lose for data event i after its sync point. */
static bool keep(int mode, uint64_t seed, int i)
{
    uint64_t s = seed ^ ((uint64_t)i * 0x9e3779b97f4a7c15ULL);

    return mode == CUT_ALL || mode == CUT_DATA || (mode == CUT_RANDOM && rnd(&s) % 2);
}

/* The last sync of inode ino before event k, or -1. */
static int last_sync_of(int ino, int k)
{
    int last_sync = -1;

    for (int i = 0; i < k; i++) {
        if (ev[i].kind == EV_SYNC && ev[i].ino == ino) {
            last_sync = i;
        }
    }
    return last_sync;
}

/* Event i (before the cut) is a data event of ino that the cut keeps. */
static bool kept(int i, int ino, int last_sync, int mode, uint64_t seed)
{
    const Ev *e = &ev[i];

    return e->ino == ino && (e->kind == EV_WRITE || e->kind == EV_TRUNC || e->kind == EV_ZERO) &&
           (i < last_sync || keep(mode, seed, i));
}

/* Copies the file src to dst (created or truncated), holes as holes. */
static void copy_sparse(const char *src, const char *dst)
{
    int in = open(src, O_RDONLY), out = open(dst, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    static uint8_t buf[1 << 20];
    struct stat st;
    off_t at = 0;

    if (in < 0 || out < 0 || fstat(in, &st) < 0) {
        die("cannot copy a base file");
    }
    while (at < st.st_size && (at = lseek(in, at, SEEK_DATA)) >= 0) {
        off_t end = lseek(in, at, SEEK_HOLE);

        while (at < end) {
            ssize_t n = pread(in, buf, (size_t)(end - at < (off_t)sizeof(buf) ? end - at :
                                                (off_t)sizeof(buf)), at);

            if (n <= 0 || pwrite(out, buf, (size_t)n, at) != n) {
                die("cannot copy a base file");
            }
            at += n;
        }
    }
    if (ftruncate(out, st.st_size) < 0) {
        die("cannot copy a base file");
    }
    close(in);
    close(out);
}

/* Empties the folder path (it holds plain files only), creating it if needed. */
static void clear_dir(const char *path)
{
    DIR *d = opendir(path);
    struct dirent *de;

    if (!d) {
        if (mkdir(path, 0755) < 0) {
            die("cannot create the cut folder");
        }
        return;
    }
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
            unlinkat(dirfd(d), de->d_name, 0) < 0) {
            die("cannot empty the cut folder");
        }
    }
    closedir(d);
}

/* Writes inode ino's content at the cut into path. */
static void build_inode(int ino, int k, int mode, uint64_t seed, const char *path)
{
    int last_sync = last_sync_of(ino, k), fd;

    if (ino < base_inos) {
        copy_sparse(base_copy[ino], path);
    }
    fd = open(path, O_WRONLY | O_CREAT, 0644);
    if (fd < 0) {
        die("cannot build a file");
    }
    for (int i = 0; i < k; i++) {
        const Ev *e = &ev[i];

        if (!kept(i, ino, last_sync, mode, seed)) {
            continue;
        }
        if (e->kind == EV_WRITE && pwrite(fd, dlog + e->data, e->len, (off_t)e->off) !=
                                   (ssize_t)e->len) {
            die("replay write failed");
        }
        if (e->kind == EV_TRUNC && ftruncate(fd, (off_t)e->len) < 0) {
            die("replay truncate failed");
        }
        if (e->kind == EV_ZERO) {
            struct stat st;

            if (e->grows && fstat(fd, &st) == 0 && (uint64_t)st.st_size < e->off + e->len &&
                ftruncate(fd, (off_t)(e->off + e->len)) < 0) {
                die("replay truncate failed");
            }
            if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)e->off,
                          (off_t)e->len) < 0) {
                die("replay punch failed");
            }
        }
    }
    close(fd);
}

/*
 * The folders already checked, each as its text signature (see
 * cut_signature): many cuts rebuild the same folder (a sync of a file with
 * nothing unsynced, the writes lost in mode 0 between two syncs), and the
 * checks depend only on the folder and the last guest flush before the cut.
 */
static char **seen;
static int nseen;

/*
 * The signature of a cut: the last guest flush before it, then each name
 * with its inode and the indices of the events its content keeps.
 */
static char *cut_signature(int f, char nm[][NAME_LEN], const int *ino, int n, int k, int mode,
                           uint64_t seed)
{
    size_t cap = 4096, len = 0;
    char *sig = malloc(cap);

    len += (size_t)snprintf(sig, cap, "f%d", f);
    for (int j = 0; j < n; j++) {
        int last_sync = last_sync_of(ino[j], k);

        if (!nm[j][0]) {
            continue;
        }
        for (int i = -1; i < k; i++) {
            if (i >= 0 && !kept(i, ino[j], last_sync, mode, seed)) {
                continue;
            }
            if (cap - len < NAME_LEN + 32) {
                cap *= 2;
                sig = realloc(sig, cap);
            }
            len += (size_t)(i < 0 ? snprintf(sig + len, cap - len, "|%s:%d:", nm[j], ino[j])
                                  : snprintf(sig + len, cap - len, "%d,", i));
        }
    }
    return sig;
}

/* True (and remembered) if no cut checked so far left the same folder and flush. */
static bool first_seen(char *sig)
{
    for (int i = 0; i < nseen; i++) {
        if (!strcmp(seen[i], sig)) {
            free(sig);
            return false;
        }
    }
    seen = realloc(seen, sizeof(*seen) * (size_t)(nseen + 1));
    seen[nseen++] = sig;
    return true;
}

/*
 * Rebuilds the folder as a power cut after event k leaves it, into work.
 * Returns false (building nothing) if an earlier cut left the same folder
 * with the same last guest flush f.
 */
static bool build_cut(int k, int mode, uint64_t seed, int f)
{
    char nm[MAX_INO][NAME_LEN], path[4600];
    int ino[MAX_INO], n = 0, last_dir = -1, cutoff = k, later = 0;

    for (int i = 0; i < k; i++) {
        if (ev[i].kind == EV_SYNCDIR) {
            last_dir = i;
        }
    }
    /* Names after the last folder sync: a prefix survives. */
    for (int i = last_dir + 1; i < k; i++) {
        later += ev[i].kind == EV_CREATE || ev[i].kind == EV_RENAME || ev[i].kind == EV_UNLINK;
    }
    if (later) {
        uint64_t s = seed;
        int keep_n = mode == CUT_NONE || mode == CUT_DATA ? 0
                     : mode == CUT_ALL || mode == CUT_NAMES ? later
                     : (int)(rnd(&s) % (uint64_t)(later + 1));

        for (int i = last_dir + 1; i < k; i++) {
            bool ns = ev[i].kind == EV_CREATE || ev[i].kind == EV_RENAME ||
                      ev[i].kind == EV_UNLINK;

            if (ns && keep_n-- == 0) {
                cutoff = i;
                break;
            }
        }
    }
    for (int i = 0; i < base_inos; i++) {
        snprintf(nm[n], NAME_LEN, "%s", names[i]);
        ino[n++] = i;
    }
    for (int i = 0; i < cutoff; i++) {
        const Ev *e = &ev[i];

        for (int j = 0; j < n; j++) {
            bool gone = (e->kind == EV_UNLINK && !strcmp(nm[j], e->name)) ||
                        (e->kind == EV_RENAME && !strcmp(nm[j], e->name2));

            if (gone) {
                nm[j][0] = '\0';
            }
        }
        if (e->kind == EV_CREATE || e->kind == EV_RENAME) {
            snprintf(nm[n], NAME_LEN, "%s", e->kind == EV_CREATE ? e->name : e->name2);
            ino[n++] = e->ino;
            if (e->kind == EV_RENAME) {
                for (int j = 0; j < n - 1; j++) {
                    if (!strcmp(nm[j], e->name)) {
                        nm[j][0] = '\0';
                    }
                }
            }
        }
    }
    if (!first_seen(cut_signature(f, nm, ino, n, k, mode, seed))) {
        return false;
    }
    clear_dir(work);
    for (int j = 0; j < n; j++) {
        if (nm[j][0]) {
            snprintf(path, sizeof(path), "%s/%.255s", work, nm[j]);
            build_inode(ino[j], k, mode, seed, path);
        }
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Checks */

static BlockBackend *open_work(int flags, Error **err)
{
    char opts[8192];
    BlockOpts *o = bopts_new();

    snprintf(opts, sizeof(opts), "driver=vmdk,file.driver=file,file.filename=%s/%s", work,
             desc_name);
    bopts_parse_keyval(o, opts, NULL, NULL);
    return blk_new_open(NULL, o, flags, err);
}

static int last_flush_before(int k)
{
    int f = -1;

    for (int i = 0; i < k; i++) {
        if (ev[i].kind == EV_MARK && !strncmp(ev[i].name, "flush ", 6)) {
            f = atoi(ev[i].name + 6);
        }
    }
    return f;
}

static void check_data(BlockBackend *blk, int r, int f, const char *what)
{
    uint8_t *got = malloc(RLEN);

    if (blk_pread(blk, region_start[r], RLEN, got, 0) < 0) {
        fprintf(stderr, "%s: cannot read region %d\n", what, r);
        die("unreadable image");
    }
    for (int64_t s = 0; s < RLEN / SECTOR; s++) {
        const uint8_t *want = f >= 0 ? snap[f][r] + s * SECTOR : NULL;
        bool ok = want ? !memcmp(got + s * SECTOR, want, SECTOR) : true;
        static const uint8_t zero[SECTOR];

        ok = ok && (f >= 0 || !memcmp(got + s * SECTOR, zero, SECTOR));
        for (int o = f >= 0 ? flush_after[f] : 0; !ok && o < nops; o++) {
            const GuestOp *op = &ops[o];
            bool match = op->region == r && op->off <= s * SECTOR &&
                         s * SECTOR < op->off + op->len;

            for (int b = 0; match && b < SECTOR; b++) {
                match = got[s * SECTOR + b] == op_byte(op, region_start[r] + s * SECTOR + b);
            }
            ok = match;
        }
        if (!ok) {
            fprintf(stderr, "%s: region %d sector %lld is neither guest flush %d's data nor "
                    "a later write's\n", what, r, (long long)s, f);
            die("lost or corrupted data");
        }
    }
    free(got);
}

/* Checks the power cut after event k; returns false if an earlier cut left the same state. */
static bool verify_cut(int k, int mode, uint64_t seed, bool can_check)
{
    char what[128];
    int f = last_flush_before(k);
    Error *err = NULL;
    BlockBackend *blk;
    int64_t len;

    snprintf(what, sizeof(what), "cut after event %d (mode %d, seed %llu)", k, mode,
             (unsigned long long)seed);
    if (!build_cut(k, mode, seed, f)) {
        return false;
    }
    blk = open_work(0, &err);
    if (!blk) {
        fprintf(stderr, "%s: %s\n", what, error_get_pretty(err));
        die("the image does not open");
    }
    len = blk_getlength(blk);
    if (len != S0 && len != GROWN) {
        fprintf(stderr, "%s: size %lld\n", what, (long long)len);
        die("the image has neither the old nor the new size");
    }
    if (len != GROWN && f >= grow_flush && grow_flush >= 0) {
        fprintf(stderr, "%s: the old size after guest flush %d\n", what, f);
        die("the grow was lost after a guest flush");
    }
    check_data(blk, 0, f, what);
    if (len == GROWN) {
        check_data(blk, 1, f, what);
    }
    blk_unref(blk);
    if (can_check) {
        char cmd[9000];
        int rc;

        snprintf(cmd, sizeof(cmd), "qemu-img check -q -f vmdk '%s/%s' >/dev/null 2>&1", work,
                 desc_name);
        rc = system(cmd);
        rc = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
        if (rc != 0 && rc != 3) {
            fprintf(stderr, "%s: qemu-img check exit %d\n", what, rc);
            die("qemu-img check failed");
        }
    }
    if (len == S0) {
        /* The cut grow's leftovers are taken over by the next one. */
        blk = open_work(BDRV_O_RDWR, &err);
        if (!blk || blk_truncate(blk, GROWN, true, PREALLOC_MODE_OFF, 0, &err) < 0) {
            fprintf(stderr, "%s: grow again: %s\n", what, error_get_pretty(err));
            die("the image cannot grow again after the cut");
        }
        check_data(blk, 0, f, what);
        blk_unref(blk);
        if (can_check) {
            char cmd[9000];

            snprintf(cmd, sizeof(cmd), "qemu-img check -q -f vmdk '%s/%s' >/dev/null 2>&1",
                     work, desc_name);
            if (system(cmd) != 0) {
                fprintf(stderr, "%s: qemu-img check after growing again\n", what);
                die("qemu-img check failed after growing again");
            }
        }
    }
    return true;
}

int main(int argc, char **argv)
{
    char img[4500], opts[256];
    bool can_check = system("qemu-img --version >/dev/null 2>&1") == 0;
    BlockOpts *o;
    Error *err = NULL;
    int gs = -1, ge = -1, points = 0, distinct = 0;
    DIR *d;
    struct dirent *de;

    if (argc < 3) {
        fprintf(stderr, "usage: powercut-vmdk-grow DIR SUBFORMAT [concurrent]\n");
        return 2;
    }
    concurrent = argc > 3 && !strcmp(argv[3], "concurrent");
    if (!bdrv_find_format("vmdk")) {
        return 77;
    }
    for (int i = 0; i < MAX_FD; i++) {
        fd_ino[i] = -1;
    }
    snprintf(scratch, sizeof(scratch), "%.3900s/pcvg-%.40s-%d", argv[1], argv[2], (int)getpid());
    snprintf(dir, sizeof(dir), "%s/img", scratch);
    snprintf(work, sizeof(work), "%s/cut", scratch);
    sh("rm -rf '%s' && mkdir -p '%s'", scratch, dir);
    snprintf(desc_name, sizeof(desc_name), "disk.vmdk");
    snprintf(img, sizeof(img), "%s/%s", dir, desc_name);
    snprintf(opts, sizeof(opts), "size=%lld,subformat=%s", (long long)S0, argv[2]);
    o = bopts_new();
    bopts_parse_keyval(o, opts, NULL, NULL);
    if (bdrv_create("vmdk", img, o, &err) < 0) {
        fprintf(stderr, "create: %s\n", error_get_pretty(err));
        return 1;
    }
    /* The files before the workload are the base inodes. */
    d = opendir(dir);
    while (d && (de = readdir(d))) {
        if (de->d_name[0] == '.') {
            continue;
        }
        set_name(de->d_name, ninos);
        snprintf(base_copy[ninos], sizeof(base_copy[0]), "%s/base-%d", scratch, ninos);
        sh("cp --sparse=always '%s/%s' '%s'", dir, de->d_name, base_copy[ninos]);
        ninos++;
    }
    closedir(d);
    base_inos = ninos;
    ev = calloc(MAX_EV, sizeof(*ev));
    snap = calloc(MAX_FLUSH, sizeof(*snap));
    tracing = true;
    run_workload(img);
    tracing = false;

    for (int i = 0; i < nev; i++) {
        if (ev[i].kind == EV_MARK && !strcmp(ev[i].name, "grow-start")) {
            gs = i;
        } else if (ev[i].kind == EV_MARK && !strcmp(ev[i].name, "grow-end")) {
            ge = i;
        }
    }
    if (gs < 0 || ge < 0) {
        die("the grow marks are missing");
    }
    /*
     * Cuts: after every second sync outside the grow (keeping none, all and
     * a random subset of the later writes) and, inside the grow, after every
     * sync, creation, rename and unlink and every 16th write (none, all, and
     * the names without the data or the data without the names). A cut
     * that rebuilds a folder already checked (with the same last guest
     * flush) is counted but not checked again.
     */
    for (int k = 1, syncs = 0; k <= nev; k++) {
        EvKind kind = ev[k - 1].kind;
        bool in_grow = k > gs && k <= ge + 1;
        bool sync = kind == EV_SYNC || kind == EV_SYNCDIR || k == nev;

        if (in_grow ? (kind == EV_WRITE && k % 16) || kind == EV_MARK : !sync || syncs++ % 2) {
            continue;
        }
        distinct += verify_cut(k, CUT_NONE, 0, can_check);
        distinct += verify_cut(k, CUT_ALL, 0, can_check);
        points += 2;
        if (!in_grow) {
            distinct += verify_cut(k, CUT_RANDOM, (uint64_t)k * 7919, can_check);
            points++;
        } else {
            distinct += verify_cut(k, CUT_NAMES, 0, can_check);
            distinct += verify_cut(k, CUT_DATA, 0, can_check);
            points += 2;
        }
    }
    printf("powercut-vmdk-grow %s: %d events (%d in the grow), %d guest writes, %d guest "
           "flushes, %d power cuts, %d distinct states checked%s%s\n", argv[2], nev, ge - gs,
           nops, nflush, points, distinct, can_check ? "" : " (qemu-img check unavailable)",
           concurrent ? " (concurrent bursts)" : "");
    sh("rm -rf '%s'", scratch);
    free(ev);
    free(snap);
    free(dlog);
    return 0;
}
