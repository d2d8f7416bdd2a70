/*
 * Power-cut test for a writable format:
 *
 *   powercut FORMAT DIR [create-options] [ops] [crashes-per-point] [flags]
 *
 * Creates an image, opens it over blklogwrites (which logs every write and
 * flush the format driver does to its file), runs a random write /
 * write-zeroes / discard workload through the format with a guest flush
 * every few operations, and closes it. Then, from the log:
 *  - for every guest flush: the image replayed to just after it passes
 *    `qemu-img check` (no corruption; leaks allowed) and reads back exactly
 *    the guest's data as of that flush;
 *  - for every flush the driver issued (sampled above 1000), several power
 *    cuts after it (random subsets of the later writes, some torn at sector
 *    granularity): the image passes check, opens, and every guest sector
 *    holds the data of the last guest flush before the cut or data a later
 *    guest request put there.
 * flags is a comma-separated list of:
 *  - backing: the image gets a raw backing file holding a pattern (the
 *    initial guest data), so partial writes copy from it;
 *  - diffparent: the same, but the backing file is an image of FORMAT holding
 *    the pattern (vpc and vhdx differencing disks take only a parent of
 *    their own format);
 *  - compress: some writes are compressed cluster writes
 *    (BDRV_REQ_WRITE_COMPRESSED, one or two whole 64 KiB clusters),
 *    interleaved with the normal and overwriting ones;
 *  - bitmap: a persistent dirty bitmap (qcow2) is added before the workload;
 *    every replayed image must open with its bitmap directory intact, and
 *    the final image's bitmap is consistent and marks every range written;
 *  - concurrent: some operations are bursts of 8 adjacent whole 64 KiB cluster
 *    writes in flight at once (a qcow2 image batches their new clusters' data
 *    writes), each burst write an op of its own;
 *  - recover: see below;
 *  - fua: the driver must make some header durable with a FUA write (vhdx's
 *    header update, parallels' in_use mark), and power cuts land right after
 *    each FUA write too (fua_cuts());
 *  - longdesc (vmdk): the embedded descriptor is padded with comment lines
 *    past its first sector before the workload, so that its updates (the CID
 *    at the first write, the size at a resize) span sectors and take the
 *    ordered, checksummed path of drivers/format/vmdk/desc-write.c.
 * With "recover", each replayed image is first opened read-write and closed
 * through coblk, for formats whose recovery is designed to happen at the
 * next open (a vhdx log replay, qcow2 lazy refcounts); the checks then run.
 * With "readfirst" too, the guest data is first read and checked through a
 * read-only open, before the recovery could repair anything (parallels:
 * a BAT entry written before its cluster's data reaches past the replayed
 * file, which reads fail; the repair at open would drop it).
 * With "resize", the image is created at half the guest size, the first half
 * of the workload stays in that half, then the image is grown (truncate) to
 * the full size (with "resize-big": to 300 MiB, with "resize-huge": to
 * 200 GiB, of which the workload uses the first 4 MiB) and flushed, and the rest of the workload writes over the
 * whole guest size: a replayed image has the old size (its new area reads
 * as zeroes) or, from the guest flush after the resize on, the new one.
 * Exit 0 = pass, 1 = a violation (printed), 77 = skipped (no such format
 * driver, or it cannot be written).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/image.h>

#include "drivers/protocol/blklogwrites.h"
#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

#define GUEST_SIZE (4 << 20)
#define SECTOR 512
#define NSECT (GUEST_SIZE / SECTOR)
#define MAX_OPS 4096

typedef struct GuestOp {
    int64_t off;
    int64_t len;
    int kind;          /* 0 write, 1 zeroes, 2 discard, 3 compressed write */
    uint32_t seq;
} GuestOp;

#define CCLUSTER 65536  /* compressed writes cover whole clusters of this size */

static const char *fmt;
static bool recover, readfirst, with_backing, compress, with_bitmap, resize, longdesc;
static bool concurrent, diffparent, fua;
static int64_t grow_to = GUEST_SIZE; /* "resize-big": far past the guest data */
static int resize_flush = -1;   /* the guest flush right after the resize */
static int64_t small_len;       /* the created image's size (resize) */
static char img[4000], base[4096], logf[4096], work[4096], backf[4096], parentf[4096];
static uint8_t *initial;  /* guest data before the workload (the backing file's) */
static GuestOp ops[MAX_OPS];
static int nops;
static int flush_after[MAX_OPS]; /* guest flush k happened after ops[0..flush_after[k]) */
static int nflush;
static uint8_t (*snap)[GUEST_SIZE]; /* guest data at each guest flush */

static void die(const char *what)
{
    fprintf(stderr, "powercut %s: FAIL: %s\n", fmt, what);
    exit(1);
}

static uint64_t rnd(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* The byte a write op puts at guest offset o. */
static uint8_t op_byte(const GuestOp *op, int64_t o)
{
    uint64_t x = (uint64_t)o * 0x9e3779b1u + op->seq * 0x85ebca6bu;

    return (uint8_t)(x >> 24 ^ x);
}

static void op_sector(const GuestOp *op, int64_t s, uint8_t *out)
{
    for (int i = 0; i < SECTOR; i++) {
        out[i] = op->kind == 0 || op->kind == 3 ? op_byte(op, s * SECTOR + i) : 0;
    }
}

static void copy_file(const char *from, const char *to)
{
    char cmd[9000];

    snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
    if (system(cmd) != 0) {
        die("cp failed");
    }
}

/* The raw backing file: a pattern that differs from every op's data and from zero. */
static void make_backing(void)
{
    int fd = open(backf, O_RDWR | O_CREAT | O_TRUNC, 0644);

    for (int64_t i = 0; i < GUEST_SIZE; i++) {
        initial[i] = (uint8_t)(0xa5 ^ (i * 31) ^ (i >> 11));
    }
    if (fd < 0 || write(fd, initial, GUEST_SIZE) != GUEST_SIZE) {
        die("cannot write the backing file");
    }
    close(fd);
}

/* "diffparent": an image of fmt at parentf holding the backing file's pattern. */
static void make_parent(void)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    Error *e = NULL;
    BlockBackend *blk;

    snprintf(opts, sizeof(opts), "size=%d", GUEST_SIZE);
    bopts_parse_keyval(o, opts, NULL, NULL);
    if (bdrv_create(fmt, parentf, o, &e) < 0) {
        fprintf(stderr, "powercut: parent: %s\n", error_get_pretty(e));
        die("cannot create the parent image");
    }
    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, parentf);
    o = bopts_new();
    bopts_parse_keyval(o, opts, NULL, NULL);
    blk = blk_new_open(NULL, o, BDRV_O_RDWR, &e);
    if (!blk || blk_pwrite(blk, 0, GUEST_SIZE, initial, 0) < 0) {
        die("cannot write the parent image");
    }
    blk_unref(blk);
}

/* Pads the embedded descriptor of the vmdk image at path past its first sector. */
static void pad_vmdk_descriptor(const char *path)
{
    uint8_t hdr[512];
    char *area, *out, *nl;
    uint64_t off = 0, cap = 0;
    int fd = open(path, O_RDWR);
    size_t n = 0;

    if (fd < 0 || pread(fd, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr) ||
        memcmp(hdr, "KDMV", 4) != 0) {
        die("longdesc: not a hosted sparse vmdk");
    }
    for (int i = 7; i >= 0; i--) {
        off = off << 8 | hdr[28 + i];
        cap = cap << 8 | hdr[36 + i];
    }
    off *= SECTOR;
    cap *= SECTOR;
    area = calloc(1, cap + 1);
    out = calloc(1, cap + 1);
    if (cap < 4 * SECTOR || cap > 65536 || pread(fd, area, cap, (off_t)off) != (ssize_t)cap ||
        !(nl = strchr(area, '\n'))) {
        die("longdesc: no embedded descriptor");
    }
    /* Comment lines before the extent line, which then starts 24 bytes before the end of
     * sector 0: a torn update that mixes sectors cuts it (or the lines after it). */
    nl = strstr(area, "\nRW ");
    if (!nl || nl + 1 - area > 400) {
        die("longdesc: no extent line in the first 400 bytes");
    }
    n = (size_t)(nl + 1 - area);
    memcpy(out, area, n);
    while (n < 488) {
        size_t len = 488 - n > 60 ? 60 : 488 - n;

        if (len < 3) {
            len = 3;
        }
        memset(out + n, '#', len - 1);
        out[n + len - 1] = '\n';
        n += len;
    }
    strcpy(out + n, nl + 1);
    if (strlen(out) > cap / 2 || pwrite(fd, out, cap, (off_t)off) != (ssize_t)cap) {
        die("longdesc: cannot pad the descriptor");
    }
    free(area);
    free(out);
    close(fd);
}

/* ---------------------------------------------------------------------- */
/* Workload */

static void guest_flush(BlockBackend *blk, const uint8_t *cur)
{
    char mark[32];

    if (blk_flush(blk) < 0) {
        die("guest flush failed");
    }
    snprintf(mark, sizeof(mark), "guest-flush-%d", nflush);
    if (blklogwrites_mark(blk_bs(blk), mark) < 0) {
        die("cannot mark the log");
    }
    memcpy(snap[nflush], cur, GUEST_SIZE);
    flush_after[nflush++] = nops;
}

/* Grows the image from half the guest size to all of it, then a guest flush. */
static void grow(BlockBackend *blk, const uint8_t *cur)
{
    Error *err = NULL;

    if (blklogwrites_mark(blk_bs(blk), "resize-start") < 0) {
        die("cannot mark the log");
    }
    if (blk_truncate(blk, grow_to, true, PREALLOC_MODE_OFF, 0, &err) < 0) {
        fprintf(stderr, "resize: %s\n", error_get_pretty(err));
        die("the resize failed");
    }
    if (blk_getlength(blk) < grow_to) {
        die("the image is smaller than requested after the resize");
    }
    if (blklogwrites_mark(blk_bs(blk), "resize-end") < 0) {
        die("cannot mark the log");
    }
    guest_flush(blk, cur);
    resize_flush = nflush - 1;
}

/* Completion of one write of a concurrent burst. */
static void burst_done(void *opaque, int ret)
{
    int *pending = opaque;

    if (ret < 0) {
        fprintf(stderr, "burst write: %s\n", strerror(-ret));
        die("a guest request failed");
    }
    (*pending)--;
}

/*
 * "concurrent": BURST_N adjacent whole-cluster writes from cluster-aligned off, all in
 * flight at once (their allocations run concurrently: qcow2 batches their data writes).
 * Each is an op of its own; they do not overlap, so the sector checks hold as for
 * sequential ops. Returns the number of ops added.
 */
#define BURST_N 8
static int burst(BlockBackend *blk, int64_t off, uint32_t seq, uint8_t *cur)
{
    static uint8_t bufs[BURST_N][CCLUSTER];
    IOVector qiov[BURST_N];
    int pending = 0, n = 0;

    off = off / CCLUSTER * CCLUSTER;
    for (; n < BURST_N && off + CCLUSTER <= GUEST_SIZE && nops < MAX_OPS; n++) {
        GuestOp *op = &ops[nops++];

        *op = (GuestOp){ off, CCLUSTER, 0, seq + (uint32_t)n };
        for (int64_t b = 0; b < CCLUSTER; b++) {
            bufs[n][b] = op_byte(op, off + b);
        }
        memcpy(cur + off, bufs[n], CCLUSTER);
        iovector_init_buf(&qiov[n], bufs[n], CCLUSTER);
        pending++;
        if (!blk_aio_pwritev(blk, off, &qiov[n], 0, burst_done, &pending)) {
            die("blk_aio_pwritev failed");
        }
        off += CCLUSTER;
    }
    while (pending) {
        aio_poll(blk_get_aio_context(blk), true);
    }
    return n;
}

static void run_workload(BlockBackend *blk, int nops_want, uint8_t *cur)
{
    uint64_t seed = 12345;
    uint8_t *buf = malloc(2 * CCLUSTER);
    uint32_t burst_seq = 0;

    for (int i = 0; i < nops_want; i++) {
        GuestOp *op = &ops[nops];
        int64_t lim = resize && i < nops_want / 2 ? NSECT / 2 : NSECT;
        int64_t s = (int64_t)(rnd(&seed) % (uint64_t)lim);
        int64_t n = 1 + (int64_t)(rnd(&seed) % 128);
        unsigned k = (unsigned)(rnd(&seed) % 10);
        int ret;

        if (resize && i == nops_want / 2) {
            grow(blk, cur);
        }
        if (s + n > lim) {
            n = lim - s;
        }
        if (concurrent && k == 3) {
            /* seq numbers past every sequential op's (those are i + 1 <= nops_want). */
            burst_seq += BURST_N;
            burst(blk, s * SECTOR, (uint32_t)nops_want + burst_seq, cur);
            if (rnd(&seed) % 3 == 0) {
                guest_flush(blk, cur);
            }
            continue;
        }
        *op = (GuestOp){ s * SECTOR, n * SECTOR, k == 0 ? 1 : k == 1 ? 2 : 0, (uint32_t)i + 1 };
        if (compress && k == 2) {
            /* A compressed write of the one or two whole clusters from the chosen sector's
             * (two go through the driver's parallel compression). */
            int64_t coff = s * SECTOR / CCLUSTER * CCLUSTER;
            int64_t clen = n % 2 && coff + 2 * CCLUSTER <= GUEST_SIZE ? 2 * CCLUSTER : CCLUSTER;

            *op = (GuestOp){ coff, clen, 3, (uint32_t)i + 1 };
        }
        if (op->kind == 0 || op->kind == 3) {
            for (int64_t b = 0; b < op->len; b++) {
                buf[b] = op_byte(op, op->off + b);
            }
            ret = blk_pwrite(blk, op->off, op->len, buf,
                             op->kind == 3 ? BDRV_REQ_WRITE_COMPRESSED : 0);
        } else if (op->kind == 1) {
            ret = blk_pwrite_zeroes(blk, op->off, op->len, BDRV_REQ_MAY_UNMAP);
        } else {
            ret = blk_pdiscard(blk, op->off, op->len);
        }
        if (ret < 0) {
            fprintf(stderr, "op %d (kind %d at %lld+%lld): %s\n", i, op->kind,
                    (long long)op->off, (long long)op->len, strerror(-ret));
            die("a guest request failed");
        }
        if (op->kind == 2) {
            /* Discarded data is undefined: read back what the format now has. */
            if (blk_pread(blk, op->off, op->len, cur + op->off, 0) < 0) {
                die("read after discard failed");
            }
        } else {
            for (int64_t b = 0; b < op->len; b++) {
                cur[op->off + b] = op->kind == 1 ? 0 : buf[b];
            }
        }
        nops++;
        if (rnd(&seed) % 6 == 0 || i == nops_want - 1) {
            guest_flush(blk, cur);
        }
    }
    free(buf);
}

/* ---------------------------------------------------------------------- */
/* Checks on a replayed image */

/*
 * vdi keeps a count of allocated blocks in its header, in another sector
 * than the block map: no write order can keep the two equal across a power
 * cut. The driver writes the count first, so a cut leaves a slot counted
 * but not yet mapped: a leak (coblk's check says so, check -r reclaims it),
 * which qemu-img check words as "allocated blocks mismatch, is M, should be
 * H" with M mapped < H counted. That one message, in that direction, is
 * accepted for vdi; anything else is corruption.
 */
static bool only_vdi_leak(const char *out)
{
    const char *p = out;
    bool any = false;

    if (strcmp(fmt, "vdi") != 0) {
        return false;
    }
    while ((p = strstr(p, "ERROR")) != NULL) {
        unsigned mapped, counted;

        if (sscanf(p, "ERROR: allocated blocks mismatch, is %u, should be %u", &mapped,
                   &counted) != 2 || mapped >= counted) {
            return false;
        }
        any = true;
        p++;
    }
    return any;
}

/* 0 = clean or leaks only; 1 = corruption or error; 63/-1 = cannot check. */
static int qemu_check(const char *path)
{
    char cmd[9000], out[8192];
    size_t n;
    FILE *f;
    int st;

    snprintf(cmd, sizeof(cmd), "qemu-img check -f %s '%s' 2>&1", fmt, path);
    f = popen(cmd, "r");
    if (!f) {
        return -1;
    }
    n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    st = pclose(f);
    if (st == -1 || !WIFEXITED(st)) {
        return -1;
    }
    st = WEXITSTATUS(st);
    if (st == 2 && only_vdi_leak(out)) {
        return 0;
    }
    if (st != 0 && st != 3 && st != 63) {
        fputs(out, stderr);
    }
    return st == 0 || st == 3 ? 0 : st == 63 ? 63 : 1;
}

/* coblk's own check of path: -1 if it finds corruption, else 0 (or unsupported). */
static void quiet(void *opaque, const char *msg)
{
}

static int coblk_check(const char *path)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    BdrvCheckResult res = { .report = quiet };
    BlockDriverState *bs;
    int ret;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, path);
    bopts_parse_keyval(o, opts, NULL, NULL);
    bs = bdrv_open(NULL, o, 0, NULL);
    if (!bs) {
        return -1;
    }
    ret = bdrv_check(bs, &res, BDRV_FIX_NONE);
    bdrv_unref(bs);
    if (ret == -ENOTSUP) {
        return 0;
    }
    if (ret < 0 || res.corruptions || res.check_errors) {
        fprintf(stderr, "coblk check: %d corruptions, %d errors (ret %d)\n", res.corruptions,
                res.check_errors, ret);
        return -1;
    }
    return 0;
}

/*
 * Reads the guest view of path through coblk, or returns -errno. An image
 * still of the size before the resize reads as zeroes past its end; k is
 * the guest flush in force, from which the new size is required.
 */
static int read_guest(const char *path, uint8_t *out, int k)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;
    int64_t len;
    int ret;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, path);
    bopts_parse_keyval(o, opts, NULL, NULL);
    blk = blk_new_open(NULL, o, 0, &err);
    if (!blk) {
        fprintf(stderr, "open of replayed image: %s\n", error_get_pretty(err));
        error_free(err);
        return -EIO;
    }
    len = blk_getlength(blk);
    if (len < (resize && k >= resize_flush ? grow_to : resize ? small_len : GUEST_SIZE)) {
        fprintf(stderr, "replayed image size %lld (guest flush %d, resize at flush %d)\n",
                (long long)len, k, resize_flush);
        blk_unref(blk);
        return -EIO;
    }
    len = len < GUEST_SIZE ? len : GUEST_SIZE;
    memset(out + len, 0, (size_t)(GUEST_SIZE - len));
    ret = blk_pread(blk, 0, len, out, 0);
    blk_unref(blk);
    return ret;
}

/* Guest flush index in force at log entry i (-1: none yet). */
static int guest_flush_before(const Wlog *log, uint64_t i)
{
    int k = -1;

    for (int f = 0; f < nflush; f++) {
        char mark[32];

        snprintf(mark, sizeof(mark), "guest-flush-%d", f);
        if ((uint64_t)wlog_find_mark(log, mark) < i) {
            k = f;
        }
    }
    return k;
}

/* Every sector is the flushed data of guest flush k or a later op's data. */
static void check_sectors(const uint8_t *got, int k, const char *what)
{
    const uint8_t *want = k >= 0 ? snap[k] : initial;
    int first_op = k >= 0 ? flush_after[k] : 0;
    uint8_t sec[SECTOR];

    for (int64_t s = 0; s < NSECT; s++) {
        bool ok = memcmp(got + s * SECTOR, want + s * SECTOR, SECTOR) == 0;

        for (int i = first_op; i < nops && !ok; i++) {
            const GuestOp *op = &ops[i];

            if (s * SECTOR < op->off || s * SECTOR >= op->off + op->len) {
                continue;
            }
            if (op->kind == 2) {
                ok = true; /* discarded: any content is allowed */
                break;
            }
            op_sector(op, s, sec);
            ok = memcmp(got + s * SECTOR, sec, SECTOR) == 0;
        }
        if (!ok) {
            fprintf(stderr, "%s: guest sector %lld holds data that was neither flushed "
                            "(guest flush %d) nor written later\n", what, (long long)s, k);
            die("lost or corrupted data");
        }
    }
}

/*
 * How a point is replayed: exactly, as a random power cut, keeping a subset,
 * or as a power cut right after the FUA write that ends at entry cut_at.
 */
enum { REPLAY_EXACT, REPLAY_CRASH, REPLAY_SUBSET, REPLAY_CUT_AT };
static uint64_t cut_at;

/* seed: the random cut's seed, or the subset's mask of writes after upto. */
static void replay_to(const Wlog *log, uint64_t upto, int how, uint64_t seed)
{
    int fd, ret;

    copy_file(base, work);
    fd = open(work, O_WRONLY);
    if (fd < 0) {
        die("replay failed");
    }
    ret = how == REPLAY_CRASH ? wlog_replay_crash(log, fd, upto, seed, seed & 1)
        : how == REPLAY_CUT_AT ? wlog_replay_crash_at(log, fd, upto, cut_at, seed, seed & 1)
        : how == REPLAY_SUBSET ? wlog_replay_subset(log, fd, upto, seed)
        : wlog_replay_range(log, fd, 0, upto);
    if (ret < 0) {
        die("replay failed");
    }
    close(fd);
}

/* The guest data of the replayed image is what guest flush k (and later ops) allow. */
static void verify_data(uint8_t *got, int k, bool crash, const char *what)
{
    if (read_guest(work, got, k) < 0) {
        fprintf(stderr, "%s: the image cannot be read\n", what);
        die("unreadable image");
    }
    if (!crash && k >= 0) {
        if (memcmp(got, snap[k], GUEST_SIZE) != 0) {
            fprintf(stderr, "%s: data differs from guest flush %d\n", what, k);
            die("flushed data lost");
        }
    } else {
        check_sectors(got, k, what);
    }
}

/* The recovery open of a replayed image (read-write, then closed). */
static void recover_image(const char *what)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockDriverState *bs;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, work);
    bopts_parse_keyval(o, opts, NULL, NULL);
    bs = bdrv_open(NULL, o, BDRV_O_RDWR, &err);
    if (!bs) {
        fprintf(stderr, "%s: recovery open: %s\n", what, error_get_pretty(err));
        die("the image cannot be recovered");
    }
    bdrv_unref(bs);
}

static void verify_point(const Wlog *log, uint64_t upto, int how, uint64_t seed,
                         uint8_t *got, bool *can_check)
{
    static const char *const hows[] = { "replay", "power cut", "power cut keeping writes",
                                        "power cut right after a FUA write" };
    bool crash = how != REPLAY_EXACT;
    char what[128];
    int k = guest_flush_before(log, upto);
    int c;

    snprintf(what, sizeof(what), "%s at log entry %llu (%s %#llx)", hows[how],
             (unsigned long long)upto, how == REPLAY_SUBSET ? "mask" : "seed",
             (unsigned long long)seed);
    replay_to(log, upto, how, seed);
    if (readfirst) {
        verify_data(got, k, crash, what); /* before any repair */
    }
    if (recover) {
        recover_image(what);
    }
    if (*can_check) {
        c = qemu_check(work);
        if (c == 63 || c < 0) {
            *can_check = false;
        } else if (c != 0) {
            fprintf(stderr, "%s: qemu-img check -f %s reports corruption (image kept as %s.bad)\n",
                    what, fmt, work);
            copy_file(work, strcat(strcpy(what, work), ".bad"));
            die("qemu-img check failed");
        }
    }
    if (coblk_check(work) < 0) {
        fprintf(stderr, "%s: coblk's check of %s finds corruption\n", what, fmt);
        die("coblk check failed");
    }
    verify_data(got, k, crash, what);
}

#define SUBSET_MAX 6

/* Checks every possible subset of the writes from upto to the next flush (if few). */
static uint64_t subsets_after(const Wlog *log, uint64_t upto, uint8_t *got, bool *can_check)
{
    uint64_t n = wlog_window_writes(log, upto), points = 0;

    if (n == 0 || n > SUBSET_MAX) {
        return 0;
    }
    for (uint64_t mask = 0; mask < 1ULL << n; mask++) {
        if (wlog_subset_possible(log, upto, mask)) {
            verify_point(log, upto, REPLAY_SUBSET, mask, got, can_check);
            points++;
        }
    }
    return points;
}

/*
 * The resize's metadata updates are few writes between flushes, and a bug
 * in their order shows only in a few of the subsets a power cut can leave
 * (the random cuts above may miss them all). So after every flush from the
 * one before the resize to the last one it issued, every possible subset of
 * the writes up to the next flush is checked, for windows of at most
 * SUBSET_MAX writes (larger ones, such as a run of new zeroed tables, only
 * get the random cuts). Returns the number of points checked.
 */
static uint64_t resize_subsets(const Wlog *log, uint64_t nfl, uint8_t *got, bool *can_check)
{
    int64_t start = wlog_find_mark(log, "resize-start"), end = wlog_find_mark(log, "resize-end");
    uint64_t points = 0, from = 0;

    if (start < 0 || end < 0) {
        die("the resize marks are missing from the log");
    }
    for (uint64_t f = 0; f < nfl; f++) {
        int64_t at = wlog_find_flush(log, f);

        if (at < start) {
            from = (uint64_t)at + 1;   /* the last flush before the resize */
            continue;
        }
        if (at > end) {
            break;
        }
        points += subsets_after(log, from, got, can_check);
        from = (uint64_t)at + 1;
    }
    return points + subsets_after(log, from, got, can_check);
}

#define FUA_CUTS_MAX 200

/*
 * A format that makes a header durable with a FUA write instead of write +
 * flush (vhdx's header update, parallels' in_use mark) leaves no flush in
 * the log right after it, so the cuts above may miss the moment between
 * that header and the first write after it. This cuts right after each FUA
 * write (sampled above FUA_CUTS_MAX): once exactly there, and crashes times
 * keeping a random part of the writes since the last flush (the FUA ones
 * always). Fails if the driver issued no FUA write at all.
 */
static uint64_t fua_cuts(const Wlog *log, int crashes, uint8_t *got, bool *can_check)
{
    uint64_t from = 0, nfua = 0, points = 0, step, seen = 0;

    for (uint64_t i = 0; i < log->nr_entries; i++) {
        nfua += (log->e[i].flags & LOGW_FUA) != 0;
    }
    if (nfua == 0) {
        die("the driver issued no FUA write");
    }
    step = nfua > FUA_CUTS_MAX ? nfua / FUA_CUTS_MAX : 1;
    for (uint64_t i = 0; i < log->nr_entries; i++) {
        if (log->e[i].flags & LOGW_FLUSH) {
            from = i + 1;
        }
        if (!(log->e[i].flags & LOGW_FUA) || seen++ % step) {
            continue;
        }
        verify_point(log, i + 1, REPLAY_EXACT, 0, got, can_check);
        cut_at = i + 1;
        for (int c = 0; c < crashes; c++) {
            verify_point(log, from, REPLAY_CUT_AT, i * 131 + (uint64_t)c, got, can_check);
        }
        points += 1 + (uint64_t)crashes;
    }
    return points;
}

/* Whether [off, off + len) is all dirty in bitmap "pc". */
static bool all_dirty(BlockDriverState *bs, int64_t off, int64_t len)
{
    for (int64_t o = off; o < off + len;) {
        int64_t pnum = 0;

        if (bdrv_bitmap_query(bs, "pc", o, off + len - o, &pnum) != 1 || pnum <= 0) {
            return false;
        }
        o += pnum;
    }
    return true;
}

/*
 * The final image's bitmap is consistent and dirty wherever the guest wrote
 * (writes, zeroes, compressed writes) and wherever the data changed (a
 * discard the format ignored changes nothing and need not be marked).
 */
static void check_bitmap(const char *path, uint8_t *data)
{
    char opts[8192];
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBitmapInfo *l = NULL;
    BlockDriverState *bs;
    int n;

    snprintf(opts, sizeof(opts), "driver=%s,file.driver=file,file.filename=%s", fmt, path);
    bopts_parse_keyval(o, opts, NULL, NULL);
    bs = bdrv_open(NULL, o, 0, &err);
    if (!bs) {
        fprintf(stderr, "bitmap check: open: %s\n", error_get_pretty(err));
        die("the final image cannot be opened");
    }
    n = bdrv_bitmap_list(bs, &l);
    if (n != 1 || strcmp(l[0].name, "pc") || !l[0].usable || l[0].in_use || !l[0].enabled) {
        die("the final image does not hold the consistent, enabled bitmap 'pc'");
    }
    for (int i = 0; i < nops; i++) {
        if (ops[i].kind != 2 && !all_dirty(bs, ops[i].off, ops[i].len)) {
            fprintf(stderr, "bitmap check: guest op %d (kind %d) at %lld+%lld is not dirty\n",
                    i, ops[i].kind, (long long)ops[i].off, (long long)ops[i].len);
            die("a written range is clean in the bitmap");
        }
    }
    if (read_guest(path, data, nflush - 1) < 0) {
        die("the final image cannot be read");
    }
    for (int64_t s = 0; s < NSECT; s++) {
        if (memcmp(data + s * SECTOR, initial + s * SECTOR, SECTOR) &&
            !all_dirty(bs, s * SECTOR, SECTOR)) {
            fprintf(stderr, "bitmap check: sector %lld changed but is clean\n", (long long)s);
            die("changed data is clean in the bitmap");
        }
    }
    bdrv_bitmap_list_free(l, n);
    bdrv_unref(bs);
}

/* The final image holds compressed clusters (qemu-img check counts them). */
static void assert_compressed(const char *path)
{
    char cmd[9000], out[8192], *p;
    double pct = 0;
    size_t n;
    FILE *f;

    snprintf(cmd, sizeof(cmd), "qemu-img check -f %s '%s' 2>&1", fmt, path);
    f = popen(cmd, "r");
    if (!f) {
        die("cannot run qemu-img check");
    }
    n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    pclose(f);
    p = strstr(out, "% compressed clusters");
    while (p && p > out && (p[-1] == '.' || (p[-1] >= '0' && p[-1] <= '9'))) {
        p--;
    }
    if (!p || sscanf(p, "%lf", &pct) != 1 || pct <= 0) {
        fputs(out, stderr);
        die("the compressed workload left no compressed cluster");
    }
}

int main(int argc, char **argv)
{
    const char *dir, *copts;
    int want_ops, crashes;
    uint8_t *cur, *got;
    bool can_check = system("qemu-img --version >/dev/null 2>&1") == 0;
    uint64_t nfl, step, points = 0;
    char opts[16384], err[256];
    BlockOpts *o;
    Error *e = NULL;
    BlockBackend *blk;
    Wlog log;

    if (argc < 3) {
        fprintf(stderr, "usage: powercut FORMAT DIR [create-opts] [ops] [crashes] "
                "[recover] [resize]\n");
        return 2;
    }
    fmt = argv[1];
    dir = argv[2];
    copts = argc > 3 ? argv[3] : "";
    want_ops = argc > 4 ? atoi(argv[4]) : 300;
    crashes = argc > 5 ? atoi(argv[5]) : 3;
    recover = argc > 6 && strstr(argv[6], "recover") != NULL;
    readfirst = argc > 6 && strstr(argv[6], "readfirst") != NULL;
    with_backing = argc > 6 && strstr(argv[6], "backing") != NULL;
    compress = argc > 6 && strstr(argv[6], "compress") != NULL;
    with_bitmap = argc > 6 && strstr(argv[6], "bitmap") != NULL;
    longdesc = argc > 6 && strstr(argv[6], "longdesc") != NULL;
    concurrent = argc > 6 && strstr(argv[6], "concurrent") != NULL;
    diffparent = argc > 6 && strstr(argv[6], "diffparent") != NULL;
    fua = argc > 6 && strstr(argv[6], "fua") != NULL;
    with_backing |= diffparent;
    /* QEMU opens no vhdx differencing image: coblk's check alone runs for those. */
    can_check &= !(diffparent && strcmp(fmt, "vhdx") == 0);
    for (int i = 7; i < argc; i++) {
        resize |= strncmp(argv[i], "resize", 6) == 0;
        if (strcmp(argv[i], "resize-big") == 0) {
            grow_to = 300 << 20; /* vdi moves blocks for its map, vpc for its BAT */
        }
        if (strcmp(argv[i], "resize-huge") == 0) {
            grow_to = 200LL << 30; /* past what a 1 MiB vhdx BAT region maps in 1 MiB blocks */
        }
    }
    if (want_ops < 1 || want_ops > MAX_OPS || !bdrv_find_format(fmt)) {
        fprintf(stderr, "powercut: format '%s' is not available; skipping\n", fmt);
        return 77;
    }
    snprintf(img, sizeof(img), "%s/pc-%s-%d.img", dir, fmt, (int)getpid());
    snprintf(base, sizeof(base), "%s.base", img);
    snprintf(logf, sizeof(logf), "%s.log", img);
    snprintf(work, sizeof(work), "%s.work", img);
    snprintf(backf, sizeof(backf), "%s.back", img);
    snprintf(parentf, sizeof(parentf), "%s.parent", img);
    initial = calloc(1, GUEST_SIZE);
    if (with_backing) {
        make_backing();
    }
    if (diffparent) {
        make_parent();
    }
    o = bopts_new();
    snprintf(opts, sizeof(opts), "size=%d%s%s%s%s%s%s", resize ? GUEST_SIZE / 2 : GUEST_SIZE,
             *copts ? "," : "", copts, with_backing ? ",backing_fmt=" : "",
             with_backing ? (diffparent ? fmt : "raw") : "", with_backing ? ",backing_file=" : "",
             with_backing ? (diffparent ? parentf : backf) : "");
    bopts_parse_keyval(o, opts, NULL, NULL);
    if (bdrv_create(fmt, img, o, &e) < 0) {
        fprintf(stderr, "powercut: cannot create a %s image: %s; skipping\n", fmt,
                error_get_pretty(e));
        return 77;
    }
    if (longdesc) {
        pad_vmdk_descriptor(img);
    }
    copy_file(img, base);
    close(open(logf, O_CREAT | O_TRUNC | O_WRONLY, 0644));
    snprintf(opts, sizeof(opts),
             "driver=%s,file.driver=blklogwrites,file.file.driver=file,file.file.filename=%s,"
             "file.log.driver=file,file.log.filename=%s,discard=unmap", fmt, img, logf);
    o = bopts_new();
    bopts_parse_keyval(o, opts, NULL, NULL);
    blk = blk_new_open(NULL, o, BDRV_O_RDWR | BDRV_O_UNMAP, &e);
    if (!blk) {
        fprintf(stderr, "powercut: open: %s\n", error_get_pretty(e));
        return 1;
    }
    if (with_bitmap) {
        BlockBitmapRequest add = { .op = BLOCK_BITMAP_ADD, .name = "pc", .granularity = 65536 };

        if (bdrv_bitmap_modify(blk_bs(blk), &add, &e) < 0) {
            fprintf(stderr, "powercut: bitmap: %s\n", error_get_pretty(e));
            return 1;
        }
    }
    small_len = blk_getlength(blk);
    snap = calloc((size_t)want_ops + 2, GUEST_SIZE);
    cur = malloc(GUEST_SIZE);
    memcpy(cur, initial, GUEST_SIZE);
    got = malloc(GUEST_SIZE);
    run_workload(blk, want_ops, cur);
    blk_unref(blk);

    if (wlog_open(&log, logf, err, sizeof(err)) < 0) {
        fprintf(stderr, "powercut: %s\n", err);
        return 1;
    }
    /* Exactly after each guest flush. */
    for (int k = 0; k < nflush; k++) {
        char mark[32];

        snprintf(mark, sizeof(mark), "guest-flush-%d", k);
        verify_point(&log, (uint64_t)wlog_find_mark(&log, mark) + 1, REPLAY_EXACT, 0, got,
                     &can_check);
    }
    /* Power cuts after each flush the driver issued. */
    nfl = wlog_count_flushes(&log);
    step = nfl > 1000 ? nfl / 1000 : 1;
    for (uint64_t f = 0; f < nfl; f += step) {
        uint64_t upto = (uint64_t)wlog_find_flush(&log, f) + 1;

        for (int c = 0; c < crashes; c++) {
            verify_point(&log, upto, REPLAY_CRASH, f * 131 + (uint64_t)c, got, &can_check);
            points++;
        }
    }
    if (resize) {
        points += resize_subsets(&log, nfl, got, &can_check);
    }
    if (fua) {
        points += fua_cuts(&log, crashes, got, &can_check);
    }
    if (compress && can_check) {
        assert_compressed(img);
    }
    if (with_bitmap) {
        check_bitmap(img, got);
    }
    printf("powercut %s%s: %d guest ops, %d guest flushes, %llu driver flushes, %llu power "
           "cuts checked%s\n", fmt, resize ? " (with a resize)" : "", nops, nflush,
           (unsigned long long)nfl, (unsigned long long)points,
           can_check ? "" : " (qemu-img check unavailable)");
    wlog_close(&log);
    free(snap);
    free(cur);
    free(got);
    unlink(img);
    unlink(base);
    unlink(logf);
    unlink(work);
    unlink(backf);
    unlink(parentf);
    free(initial);
    return 0;
}
