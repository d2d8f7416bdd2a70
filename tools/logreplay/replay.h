/*
 * Reading a dm-log-writes style log (drivers/protocol/logwrites-format.h)
 * and replaying it onto a copy of the image it was taken from: exactly up
 * to an entry, or as a power cut could leave it (everything up to a flush,
 * then any subset of the later writes up to a crash point, FUA writes that
 * completed before the crash always kept, optionally torn at sector
 * granularity). Used by coblk-logreplay and the crash tests.
 *
 * "Data entries" below are the entries that change the file: writes,
 * discards and truncates (coblk's "coblk:truncate=" marks, which set the
 * file's length). A truncate, like a write, is durable only once the next
 * FLUSH is: a cut before it keeps or drops it as it keeps or drops a write.
 */
#ifndef COBLK_LOGREPLAY_H
#define COBLK_LOGREPLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct WlogEntry {
    uint64_t sector;      /* in sectorsize units */
    uint64_t nr_sectors;
    uint64_t flags;       /* LOGW_* */
    uint64_t data_off;    /* byte offset of the entry's data in the log */
    char *mark;           /* MARK entries: the name */
    bool truncate;        /* a "coblk:truncate=" mark: the file's length became length */
    uint64_t length;
} WlogEntry;

typedef struct Wlog {
    int fd;
    uint32_t sectorsize;
    uint64_t nr_entries;
    WlogEntry *e;
} Wlog;

/* Opens and indexes a log; on failure returns -errno with err filled. */
int wlog_open(Wlog *log, const char *path, char *err, size_t errlen);
void wlog_close(Wlog *log);

/* Index of the entry that is MARK name (first match), or -1. */
int64_t wlog_find_mark(const Wlog *log, const char *name);
/* Index of the k-th (0-based) FLUSH entry, or -1. */
int64_t wlog_find_flush(const Wlog *log, uint64_t k);
uint64_t wlog_count_flushes(const Wlog *log);

/* Applies entries [from, to) in order to target_fd. Returns 0 or -errno. */
int wlog_replay_range(const Wlog *log, int target_fd, uint64_t from, uint64_t to);

/*
 * A power cut after entry `upto` (exclusive): applies [0, upto), then picks
 * a crash point in [upto, next FLUSH after upto] and applies, in log order,
 * every FUA entry before it and each other data entry before it with
 * probability 1/2; with torn, each sector of a write or discard independently
 * (a truncate lands whole or not at all).
 * seed makes it reproducible. Returns 0 or -errno.
 */
int wlog_replay_crash(const Wlog *log, int target_fd, uint64_t upto, uint64_t seed, bool torn);

/*
 * The same with the crash point chosen by the caller: entries [upto, crash)
 * are those the cut may keep (FUA ones always); no FLUSH may lie among them
 * (-EINVAL). wlog_replay_crash() is this with a random crash point.
 */
int wlog_replay_crash_at(const Wlog *log, int target_fd, uint64_t upto, uint64_t crash,
                         uint64_t seed, bool torn);

/* The data entries (writes, discards, truncates) from entry upto to the next FLUSH. */
uint64_t wlog_window_writes(const Wlog *log, uint64_t upto);

/*
 * Whether a power cut after entry upto can leave exactly the data entries
 * of mask (bit j: the j-th data entry from upto, before the next FLUSH):
 * not if a FUA entry is missing while a later one is there (a FUA entry is
 * durable before anything issued after it completes).
 */
bool wlog_subset_possible(const Wlog *log, uint64_t upto, uint64_t mask);

/*
 * A power cut after entry upto that kept exactly the data entries of mask
 * (as above), each whole: applies [0, upto), then those entries in log
 * order. Enumerating every mask covers every state the disk can be left in
 * by a cut before the next FLUSH, short of torn writes. Returns 0 or -errno.
 */
int wlog_replay_subset(const Wlog *log, int target_fd, uint64_t upto, uint64_t mask);

#endif
