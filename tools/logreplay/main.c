/*
 * coblk-logreplay: lists a write log made by the blklogwrites filter and
 * materializes an image as of any point in it.
 *
 *   coblk-logreplay --list LOG
 *   coblk-logreplay --count-flushes LOG
 *   coblk-logreplay [--to-entry N | --to-mark NAME | --to-flush K]
 *                   [--crash SEED [--torn]] LOG TARGET
 *
 * TARGET must be a copy of the image as it was when logging started; the
 * log's writes and truncates are applied to it in place. Without a --to-* option the
 * whole log is applied. --to-flush K stops just after the K-th flush entry
 * (0-based): the state a successful flush guaranteed. --crash adds a power
 * cut after that point (see wlog_replay_crash). Exit status 0 on success,
 * 1 on a usage error, 2 if the log or the target cannot be used.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: coblk-logreplay --list LOG\n"
               "       coblk-logreplay --count-flushes LOG\n"
               "       coblk-logreplay [--to-entry N | --to-mark NAME | --to-flush K]\n"
               "                       [--crash SEED [--torn]] LOG TARGET\n");
}

static void list(const Wlog *log)
{
    printf("%llu entries, %u-byte sectors\n", (unsigned long long)log->nr_entries,
           log->sectorsize);
    for (uint64_t i = 0; i < log->nr_entries; i++) {
        const WlogEntry *e = &log->e[i];

        printf("%llu %s%s sector %llu count %llu%s%s\n", (unsigned long long)i,
               (e->flags & LOGW_FLUSH) ? "flush" : e->truncate ? "truncate"
               : (e->flags & LOGW_MARK) ? "mark"
               : (e->flags & LOGW_DISCARD) ? "discard" : "write",
               (e->flags & LOGW_FUA) ? "+fua" : "", (unsigned long long)e->sector,
               (unsigned long long)e->nr_sectors, e->mark ? " " : "", e->mark ? e->mark : "");
    }
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;

    errno = 0;
    *out = strtoull(s, &end, 0);
    return (errno || end == s || *end || *s == '-') ? -1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "list", no_argument, NULL, 'l' },      { "count-flushes", no_argument, NULL, 'c' },
        { "to-entry", required_argument, NULL, 'e' },
        { "to-mark", required_argument, NULL, 'm' },
        { "to-flush", required_argument, NULL, 'f' },
        { "crash", required_argument, NULL, 's' }, { "torn", no_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },       { NULL, 0, NULL, 0 },
    };
    const char *mark = NULL;
    uint64_t entry = UINT64_MAX, flush = UINT64_MAX, seed = 0;
    bool do_list = false, do_count = false, crash = false, torn = false;
    char err[256];
    int c, fd, ret;
    int64_t upto;
    Wlog log;

    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': do_list = true; break;
        case 'c': do_count = true; break;
        case 'm': mark = optarg; break;
        case 't': torn = true; break;
        case 'e':
        case 'f':
        case 's':
            if (parse_u64(optarg, c == 'e' ? &entry : c == 'f' ? &flush : &seed) < 0) {
                fprintf(stderr, "coblk-logreplay: invalid number '%s'\n", optarg);
                return 1;
            }
            crash |= c == 's';
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 1;
        }
    }
    if (argc - optind != ((do_list || do_count) ? 1 : 2) ||
        (entry != UINT64_MAX) + (mark != NULL) + (flush != UINT64_MAX) > 1 || (torn && !crash)) {
        usage(stderr);
        return 1;
    }
    if (wlog_open(&log, argv[optind], err, sizeof(err)) < 0) {
        fprintf(stderr, "coblk-logreplay: %s\n", err);
        return 2;
    }
    if (do_list || do_count) {
        if (do_list) {
            list(&log);
        } else {
            printf("%llu\n", (unsigned long long)wlog_count_flushes(&log));
        }
        wlog_close(&log);
        return 0;
    }
    upto = (int64_t)log.nr_entries;
    if (entry != UINT64_MAX) {
        upto = entry <= log.nr_entries ? (int64_t)entry : -1;
    } else if (mark) {
        upto = wlog_find_mark(&log, mark);
    } else if (flush != UINT64_MAX) {
        upto = wlog_find_flush(&log, flush);
        upto = upto < 0 ? -1 : upto + 1;
    }
    if (upto < 0) {
        fprintf(stderr, "coblk-logreplay: '%s' has no such %s\n", argv[optind],
                mark ? "mark" : flush != UINT64_MAX ? "flush" : "entry");
        wlog_close(&log);
        return 2;
    }
    fd = open(argv[optind + 1], O_WRONLY);
    if (fd < 0) {
        fprintf(stderr, "coblk-logreplay: cannot open '%s': %s\n", argv[optind + 1],
                strerror(errno));
        wlog_close(&log);
        return 2;
    }
    ret = crash ? wlog_replay_crash(&log, fd, (uint64_t)upto, seed, torn)
                : wlog_replay_range(&log, fd, 0, (uint64_t)upto);
    if (ret == 0 && fsync(fd) < 0) {
        ret = -errno;
    }
    close(fd);
    wlog_close(&log);
    if (ret < 0) {
        fprintf(stderr, "coblk-logreplay: replay onto '%s' failed: %s\n", argv[optind + 1],
                strerror(-ret));
        return 2;
    }
    return 0;
}
