/*
 * The virtual disk model's setup, scenario (live reopen and drain under
 * load), read-back check and report. See vdisk.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-int.h"

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--seconds S] [--queues N] [--depth D] [--bs BYTES] [--size BYTES]\n"
            "       [--read-pct P] [--flush-every N] [--image PATH|none] [--dir DIR]\n"
            "       [--opts KEY=VAL,...] [--direct] [--no-reopen] [--no-drain] [--no-verify]\n"
            "       [--json] [--inject-mismatch]\n"
            "Models an emulator's virtual disk: N queues of D concurrent guest requests,\n"
            "every write tagged (offset, generation), every read verified, a live reopen\n"
            "(cache.direct toggled) and a drain in the middle of the load.\n", prog);
}

static int parse_size(const char *s, int64_t *out)
{
    uint64_t v;

    if (bopts_parse_size(s, &v) < 0 || v > INT64_MAX / 2) {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int vdisk_parse_args(int argc, char **argv, VDiskConfig *cfg)
{
    static const struct option longopts[] = {
        { "seconds", required_argument, NULL, 's' }, { "queues", required_argument, NULL, 'q' },
        { "depth", required_argument, NULL, 'd' },   { "bs", required_argument, NULL, 'b' },
        { "size", required_argument, NULL, 'S' },    { "read-pct", required_argument, NULL, 'r' },
        { "flush-every", required_argument, NULL, 'F' },
        { "image", required_argument, NULL, 'i' },   { "dir", required_argument, NULL, 'D' },
        { "opts", required_argument, NULL, 'o' },    { "direct", no_argument, NULL, 'x' },
        { "no-reopen", no_argument, NULL, 'R' },     { "no-drain", no_argument, NULL, 'N' },
        { "no-verify", no_argument, NULL, 'V' },     { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { "inject-mismatch", no_argument, NULL, 'I' }, { NULL, 0, NULL, 0 },
    };
    int64_t v;
    int c;

    *cfg = (VDiskConfig){ .seconds = 3, .queues = 4, .depth = 16, .block_size = 4096,
                          .size = 64 << 20, .read_pct = 50, .flush_every = 0, .reopen = true,
                          .drain = true, .verify = true };
    cfg->dir = getenv("COBLK_TEST_DIR") ? getenv("COBLK_TEST_DIR") : ".";
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case 's': cfg->seconds = atof(optarg); break;
        case 'q': cfg->queues = atoi(optarg); break;
        case 'd': cfg->depth = atoi(optarg); break;
        case 'b':
            if (parse_size(optarg, &v) < 0 || v < 512 || v > (16 << 20) || v % 512) {
                goto bad;
            }
            cfg->block_size = (int)v;
            break;
        case 'S': if (parse_size(optarg, &cfg->size) < 0) { goto bad; } break;
        case 'r': cfg->read_pct = atoi(optarg); break;
        case 'F': cfg->flush_every = atoi(optarg); break;
        case 'i': cfg->image = optarg; break;
        case 'D': cfg->dir = optarg; break;
        case 'o': cfg->image_opts = optarg; break;
        case 'x': cfg->direct = true; break;
        case 'R': cfg->reopen = false; break;
        case 'N': cfg->drain = false; break;
        case 'V': cfg->verify = false; break;
        case 'j': cfg->json = true; break;
        case 'I': cfg->inject_mismatch = true; break;
        default: goto bad;
        }
    }
    if (optind != argc || cfg->seconds <= 0 || cfg->queues < 1 || cfg->queues > 1024 ||
        cfg->depth < 1 || cfg->depth > 4096 || cfg->read_pct < 0 || cfg->read_pct > 100 ||
        cfg->flush_every < 0) {
        goto bad;
    }
    return 0;
bad:
    usage(argv[0]);
    return -1;
}

static char *make_temp_image(const VDiskConfig *cfg)
{
    size_t len = strlen(cfg->dir) + 32;
    char *path = malloc(len);
    int fd;

    snprintf(path, len, "%s/coblk-emu-XXXXXX", cfg->dir);
    fd = mkstemp(path);
    if (fd < 0 || ftruncate(fd, cfg->size) < 0) {
        fprintf(stderr, "vdisk: cannot create %s: %s\n", path, strerror(errno));
        if (fd >= 0) {
            close(fd);
            unlink(path);
        }
        free(path);
        return NULL;
    }
    close(fd);
    return path;
}

static BlockBackend *open_image(VDisk *d)
{
    const VDiskConfig *cfg = &d->cfg;
    BlockOpts *opts = bopts_new();
    const char *filename = cfg->image;
    Error *err = NULL;
    BlockBackend *blk;

    if (cfg->image_opts && bopts_parse_keyval(opts, cfg->image_opts, NULL, &err) < 0) {
        goto fail;
    }
    if (filename && !strcmp(filename, "none")) {
        filename = NULL; /* everything is in --opts, e.g. driver=null-co,size=1G */
    } else if (!filename) {
        d->tmp_path = make_temp_image(cfg);
        if (!d->tmp_path) {
            bopts_free(opts);
            return NULL;
        }
        filename = d->tmp_path;
        if (!bopts_has(opts, "driver")) {
            bopts_set(opts, "driver", "raw");
        }
    }
    if (cfg->direct) {
        bopts_set(opts, "cache.direct", "on");
    }
    blk = blk_new_open(filename, opts, BDRV_O_RDWR, &err);
    if (blk) {
        return blk;
    }
    opts = NULL;
fail:
    fprintf(stderr, "vdisk: %s\n", error_get_pretty(err));
    error_free(err);
    bopts_free(opts);
    return NULL;
}

static int setup_queues(VDisk *d)
{
    const VDiskConfig *cfg = &d->cfg;
    int64_t per_queue = d->nblocks / cfg->queues;

    if (per_queue < 2 * cfg->depth) {
        fprintf(stderr, "vdisk: the image holds %lld blocks of %d bytes: too small for %d "
                "queues of depth %d\n", (long long)d->nblocks, cfg->block_size, cfg->queues,
                cfg->depth);
        return -1;
    }
    d->committed = calloc((size_t)d->nblocks, sizeof(*d->committed));
    d->busy = calloc((size_t)d->nblocks, 1);
    d->q = calloc((size_t)cfg->queues, sizeof(*d->q));
    for (int i = 0; i < cfg->queues; i++) {
        VQueue *q = &d->q[i];

        *q = (VQueue){ .d = d, .first_block = i * per_queue, .nblocks = per_queue,
                       .rng = 0x853c49e6748fea9bULL * (uint64_t)(i + 1) };
        q->reqs = calloc((size_t)cfg->depth, sizeof(*q->reqs));
        q->free_slots = calloc((size_t)cfg->depth, sizeof(int));
        q->avail = calloc((size_t)cfg->depth, sizeof(int));
        q->used = calloc((size_t)cfg->depth, sizeof(int));
        for (int s = 0; s < cfg->depth; s++) {
            q->reqs[s].q = q;
            if (posix_memalign((void **)&q->reqs[s].buf, 4096, (size_t)cfg->block_size)) {
                return -1;
            }
            q->free_slots[q->q_free++] = cfg->depth - 1 - s;
        }
    }
    return 0;
}

VDisk *vdisk_open(const VDiskConfig *cfg, VDiskIrqFn *irq, void *irq_opaque)
{
    VDisk *d = calloc(1, sizeof(*d));
    int64_t len;

    d->cfg = *cfg;
    d->irq = irq;
    d->irq_opaque = irq_opaque;
    d->blk = open_image(d);
    if (!d->blk) {
        free(d->tmp_path);
        free(d);
        return NULL;
    }
    len = blk_getlength(d->blk);
    d->nblocks = len > 0 ? len / cfg->block_size : 0;
    if (setup_queues(d) < 0) {
        vdisk_finish(d, NULL);
        return NULL;
    }
    getrusage(RUSAGE_SELF, &d->ru_start);
    return d;
}

/* Live reopen with cache.direct toggled; requests keep flowing around it. */
static void scenario_reopen(VDisk *d, bool direct)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    bopts_set(o, "cache.direct", direct ? "on" : "off");
    if (bdrv_reopen(blk_bs(d->blk), o, &err) < 0) {
        fprintf(stderr, "vdisk: reopen with cache.direct=%s failed: %s\n",
                direct ? "on" : "off", error_get_pretty(err));
        error_free(err);
        d->scenario_failures++;
        return;
    }
    d->reopens_ok++;
}

static void scenario_drain_begin(VDisk *d, int64_t now)
{
    bdrv_drained_begin(blk_bs(d->blk));
    d->drained = true;
    if (bdrv_get_in_flight(blk_bs(d->blk)) != 0) {
        fprintf(stderr, "vdisk: requests still in flight after bdrv_drained_begin\n");
        d->scenario_failures++;
    }
    /* Stay drained a little: the device keeps submitting, the requests must wait. */
    d->drain_until = now + (int64_t)(d->cfg.seconds * 1e9 / 50);
}

void vdisk_tick(VDisk *d)
{
    int64_t now = aio_clock_ns();
    double frac = (double)(now - d->t_start) / (d->cfg.seconds * 1e9);

    if (d->drained && now >= d->drain_until) {
        bdrv_drained_end(blk_bs(d->blk));
        d->drained = false;
    }
    if (d->step == 0 && frac >= 0.25) {
        d->step++;
        if (d->cfg.reopen) {
            scenario_reopen(d, !d->cfg.direct);
        }
    } else if (d->step == 1 && frac >= 0.5) {
        d->step++;
        if (d->cfg.reopen) {
            scenario_reopen(d, d->cfg.direct);
        }
    } else if (d->step == 2 && frac >= 0.7) {
        d->step++;
        if (d->cfg.drain) {
            scenario_drain_begin(d, now);
        }
    }
    if (d->running && frac >= 1.0 && !d->drained) {
        d->running = false;
        d->t_stop = now;
    }
}

/* Reads the whole image back in 1 MiB chunks and checks every block. */
static void readback(VDisk *d)
{
    int bs = d->cfg.block_size;
    int64_t per_chunk = (1 << 20) / bs > 0 ? (1 << 20) / bs : 1;
    uint8_t *buf;

    if (!d->cfg.verify || posix_memalign((void **)&buf, 4096, (size_t)(per_chunk * bs))) {
        return;
    }
    for (int64_t b = 0; b < d->nblocks; b += per_chunk) {
        int64_t n = d->nblocks - b < per_chunk ? d->nblocks - b : per_chunk;
        int ret = blk_pread(d->blk, b * bs, n * bs, buf, 0);

        if (ret < 0) {
            fprintf(stderr, "vdisk: read-back at %lld: %s\n", (long long)(b * bs),
                    strerror(-ret));
            d->errors++;
            break;
        }
        for (int64_t i = 0; i < n; i++) {
            vdisk_check(d, buf + i * bs, (b + i) * bs, bs, d->committed[b + i]);
        }
        d->readback_blocks += (uint64_t)n;
    }
    free(buf);
}

static double tv_s(struct timeval tv)
{
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void report(VDisk *d, const char *loop_name, int rc)
{
    struct rusage ru;
    LatHist all = { 0 };
    double secs = (double)(d->t_stop - d->t_start) / 1e9;
    double cpu, iops;

    getrusage(RUSAGE_SELF, &ru);
    cpu = tv_s(ru.ru_utime) - tv_s(d->ru_start.ru_utime) + tv_s(ru.ru_stime) -
          tv_s(d->ru_start.ru_stime);
    lat_merge(&all, &d->lat_read);
    lat_merge(&all, &d->lat_write);
    iops = secs > 0 ? (double)d->completed / secs : 0;
    printf("%s: %d queues x depth %d, %d-byte requests, %.2f s\n", loop_name, d->cfg.queues,
           d->cfg.depth, d->cfg.block_size, secs);
    printf("  requests %llu submitted, %llu completed (%llu reads, %llu writes, %llu flushes), "
           "%llu errors\n", (unsigned long long)d->submitted, (unsigned long long)d->completed,
           (unsigned long long)d->reads, (unsigned long long)d->writes,
           (unsigned long long)d->flushes, (unsigned long long)d->errors);
    printf("  verify: %llu mismatches (every read checked: %s; %llu blocks read back)\n",
           (unsigned long long)d->mismatches, d->cfg.verify ? "yes" : "no",
           (unsigned long long)d->readback_blocks);
    printf("  scenario: %d live reopens (cache.direct toggled), %d drains, %llu completions "
           "while drained, %d failures\n", d->reopens_ok, d->cfg.drain && d->step >= 3,
           (unsigned long long)d->completed_while_drained, d->scenario_failures);
    printf("  guest interrupts %llu (%.1f completions each), device batches %llu\n",
           (unsigned long long)d->irqs_handled,
           d->irqs_handled ? (double)d->completed / (double)d->irqs_handled : 0.0,
           (unsigned long long)d->batches);
    printf("  IOPS %.0f, latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n", iops,
           lat_percentile(&all, 50) / 1e3, lat_percentile(&all, 90) / 1e3,
           lat_percentile(&all, 99) / 1e3, lat_percentile(&all, 99.9) / 1e3,
           all.max_ns / 1e3);
    printf("  CPU %.0f ns per request (user+sys over the whole process)\n",
           d->completed ? cpu * 1e9 / (double)d->completed : 0.0);
    printf("  result: %s\n", rc ? "FAILED" : "ok");
    if (d->cfg.json) {
        printf("{\"loop\":\"%s\",\"queues\":%d,\"depth\":%d,\"bs\":%d,\"seconds\":%.3f,"
               "\"completed\":%llu,\"errors\":%llu,\"mismatches\":%llu,\"iops\":%.0f,"
               "\"lat_p50_ns\":%llu,\"lat_p90_ns\":%llu,\"lat_p99_ns\":%llu,"
               "\"lat_p999_ns\":%llu,\"cpu_ns_per_req\":%.0f,\"ok\":%s}\n",
               loop_name, d->cfg.queues, d->cfg.depth, d->cfg.block_size, secs,
               (unsigned long long)d->completed, (unsigned long long)d->errors,
               (unsigned long long)d->mismatches, iops,
               (unsigned long long)lat_percentile(&all, 50),
               (unsigned long long)lat_percentile(&all, 90),
               (unsigned long long)lat_percentile(&all, 99),
               (unsigned long long)lat_percentile(&all, 99.9),
               d->completed ? cpu * 1e9 / (double)d->completed : 0.0, rc ? "false" : "true");
    }
}

int vdisk_finish(VDisk *d, const char *loop_name)
{
    int rc = 0;

    if (loop_name) {
        if (d->drained) {
            bdrv_drained_end(blk_bs(d->blk));
        }
        readback(d);
        rc = d->errors || d->mismatches || d->scenario_failures || d->completed == 0 ||
             d->submitted != d->completed || d->outstanding ||
             (d->cfg.reopen && d->reopens_ok != 2) || (d->cfg.drain && d->step < 3);
        report(d, loop_name, rc);
    }
    blk_unref(d->blk);
    if (d->tmp_path) {
        unlink(d->tmp_path);
        free(d->tmp_path);
    }
    for (int i = 0; d->q && i < d->cfg.queues; i++) {
        for (int s = 0; s < d->cfg.depth; s++) {
            free(d->q[i].reqs[s].buf);
        }
        free(d->q[i].reqs);
        free(d->q[i].free_slots);
        free(d->q[i].avail);
        free(d->q[i].used);
    }
    free(d->q);
    free(d->committed);
    free(d->busy);
    free(d);
    return rc;
}
