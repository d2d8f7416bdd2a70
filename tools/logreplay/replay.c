/*
 * Log reading and replay (replay.h). The log is untrusted input: every
 * entry is bounds-checked against the log's size and the format limits.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>

#include "block/bytes.h"
#include "drivers/protocol/logwrites-format.h"
#include "tools/logreplay/replay.h"

static int rd_exact(int fd, void *buf, size_t len, uint64_t off)
{
    ssize_t n = pread(fd, buf, len, (off_t)off);

    return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

static uint64_t entry_data_len(uint64_t flags, uint64_t nr_sectors, uint64_t mark_len,
                               uint32_t ss)
{
    if (flags & LOGW_MARK) {
        return round_up_u64(mark_len, ss);
    }
    return (flags & (LOGW_FLUSH | LOGW_DISCARD)) ? 0 : nr_sectors * ss;
}

/*
 * A mark with the reserved prefix is one of coblk's own entries: only
 * "coblk:truncate=<decimal length>" exists, its length at most
 * LOGW_MAX_FILE_LEN; any other reserved name is an error (a newer log).
 */
static int parse_reserved(WlogEntry *e, uint64_t i, char *err, size_t errlen)
{
    size_t plen = strlen(LOGW_TRUNCATE_MARK);
    const char *d = e->mark + plen;
    uint64_t len = 0;

    if (strncmp(e->mark, LOGW_RESERVED_PREFIX, strlen(LOGW_RESERVED_PREFIX))) {
        return 0;
    }
    if (strncmp(e->mark, LOGW_TRUNCATE_MARK, plen) || !*d) {
        snprintf(err, errlen, "entry %llu: unknown coblk entry '%.64s'", (unsigned long long)i,
                 e->mark);
        return -EINVAL;
    }
    for (; *d; d++) {
        if (*d < '0' || *d > '9' || len > (LOGW_MAX_FILE_LEN - (uint64_t)(*d - '0')) / 10) {
            snprintf(err, errlen, "entry %llu: bad truncate length in '%.64s' (limit %llu)",
                     (unsigned long long)i, e->mark, (unsigned long long)LOGW_MAX_FILE_LEN);
            return -EINVAL;
        }
        len = len * 10 + (uint64_t)(*d - '0');
    }
    e->truncate = true;
    e->length = len;
    return 0;
}

static int index_entries(Wlog *log, uint64_t size, char *err, size_t errlen)
{
    uint64_t off = log->sectorsize;
    uint8_t hdr[LOGW_ENTRY_SIZE];

    log->e = calloc(log->nr_entries ? log->nr_entries : 1, sizeof(*log->e));
    if (!log->e) {
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < log->nr_entries; i++) {
        WlogEntry *e = &log->e[i];
        uint64_t mlen, dlen;

        if (!range_within(off, log->sectorsize, size) ||
            rd_exact(log->fd, hdr, sizeof(hdr), off) < 0) {
            snprintf(err, errlen, "entry %llu lies past the end of the log",
                     (unsigned long long)i);
            return -EINVAL;
        }
        e->sector = ld_le64(hdr);
        e->nr_sectors = ld_le64(hdr + 8);
        e->flags = ld_le64(hdr + 16);
        mlen = ld_le64(hdr + 24);
        if (e->nr_sectors > LOGW_MAX_WRITE_SECTORS || mlen > LOGW_MAX_MARK ||
            e->sector > UINT64_MAX / log->sectorsize - e->nr_sectors) {
            snprintf(err, errlen, "entry %llu has out-of-range fields", (unsigned long long)i);
            return -EINVAL;
        }
        dlen = entry_data_len(e->flags, e->nr_sectors, mlen, log->sectorsize);
        e->data_off = off + log->sectorsize;
        if (!range_within(e->data_off, dlen, size)) {
            snprintf(err, errlen, "the data of entry %llu lies past the end of the log",
                     (unsigned long long)i);
            return -EINVAL;
        }
        if (e->flags & LOGW_MARK) {
            e->mark = calloc(1, mlen + 1);
            if (!e->mark || rd_exact(log->fd, e->mark, mlen, e->data_off) < 0) {
                return -EIO;
            }
            if (parse_reserved(e, i, err, errlen) < 0) {
                return -EINVAL;
            }
        }
        off = e->data_off + dlen;
    }
    return 0;
}

int wlog_open(Wlog *log, const char *path, char *err, size_t errlen)
{
    uint8_t sup[LOGW_SUPER_SIZE];
    struct stat st;
    int ret;

    memset(log, 0, sizeof(*log));
    log->fd = open(path, O_RDONLY);
    if (log->fd < 0 || fstat(log->fd, &st) < 0) {
        ret = -errno;
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno));
        return ret;
    }
    if (rd_exact(log->fd, sup, sizeof(sup), 0) < 0 || ld_le64(sup) != LOGW_MAGIC ||
        ld_le64(sup + 8) != LOGW_VERSION) {
        snprintf(err, errlen, "'%s' is not a version 1 write log", path);
        wlog_close(log);
        return -EINVAL;
    }
    log->nr_entries = ld_le64(sup + 16);
    log->sectorsize = ld_le32(sup + 24);
    if (!is_power_of_2_u64(log->sectorsize) || log->sectorsize < LOGW_MIN_SECTOR ||
        log->sectorsize > LOGW_MAX_SECTOR || log->nr_entries > LOGW_MAX_ENTRIES) {
        snprintf(err, errlen, "'%s': sector size %u or entry count %llu out of range", path,
                 log->sectorsize, (unsigned long long)log->nr_entries);
        wlog_close(log);
        return -EINVAL;
    }
    ret = index_entries(log, (uint64_t)st.st_size, err, errlen);
    if (ret < 0) {
        wlog_close(log);
    }
    return ret;
}

void wlog_close(Wlog *log)
{
    if (log->e) {
        for (uint64_t i = 0; i < log->nr_entries; i++) {
            free(log->e[i].mark);
        }
    }
    free(log->e);
    if (log->fd >= 0) {
        close(log->fd);
    }
    memset(log, 0, sizeof(*log));
    log->fd = -1;
}

int64_t wlog_find_mark(const Wlog *log, const char *name)
{
    for (uint64_t i = 0; i < log->nr_entries; i++) {
        if (log->e[i].mark && strcmp(log->e[i].mark, name) == 0) {
            return (int64_t)i;
        }
    }
    return -1;
}

int64_t wlog_find_flush(const Wlog *log, uint64_t k)
{
    for (uint64_t i = 0; i < log->nr_entries; i++) {
        if ((log->e[i].flags & LOGW_FLUSH) && k-- == 0) {
            return (int64_t)i;
        }
    }
    return -1;
}

uint64_t wlog_count_flushes(const Wlog *log)
{
    uint64_t n = 0;

    for (uint64_t i = 0; i < log->nr_entries; i++) {
        n += (log->e[i].flags & LOGW_FLUSH) != 0;
    }
    return n;
}

/* Applies sectors [first, first + count) of entry e (a write or a discard). */
static int apply_sectors(const Wlog *log, const WlogEntry *e, int fd, uint64_t first,
                         uint64_t count, uint8_t *buf)
{
    uint64_t ss = log->sectorsize;

    for (uint64_t i = first; i < first + count; i++) {
        if (e->flags & LOGW_DISCARD) {
            memset(buf, 0, ss);
        } else if (rd_exact(log->fd, buf, ss, e->data_off + i * ss) < 0) {
            return -EIO;
        }
        if (pwrite(fd, buf, ss, (off_t)((e->sector + i) * ss)) != (ssize_t)ss) {
            return -errno ? -errno : -EIO;
        }
    }
    return 0;
}

/* Whether e changes the file: a write, a discard or a truncate. */
static bool is_data(const WlogEntry *e)
{
    return e->truncate || (!(e->flags & (LOGW_FLUSH | LOGW_MARK)) && e->nr_sectors);
}

/* Applies a data entry whole. */
static int apply_entry(const Wlog *log, const WlogEntry *e, int fd, uint8_t *buf)
{
    if (e->truncate) {
        return ftruncate(fd, (off_t)e->length) < 0 ? -errno : 0;
    }
    return apply_sectors(log, e, fd, 0, e->nr_sectors, buf);
}

int wlog_replay_range(const Wlog *log, int target_fd, uint64_t from, uint64_t to)
{
    uint8_t *buf = malloc(log->sectorsize);
    int ret = buf ? 0 : -ENOMEM;

    for (uint64_t i = from; i < to && i < log->nr_entries && ret == 0; i++) {
        if (is_data(&log->e[i])) {
            ret = apply_entry(log, &log->e[i], target_fd, buf);
        }
    }
    free(buf);
    return ret;
}

/* xorshift64*: reproducible from the seed. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

int wlog_replay_crash(const Wlog *log, int target_fd, uint64_t upto, uint64_t seed, bool torn)
{
    uint64_t st = seed * 0x9e3779b97f4a7c15ULL + 1, end = upto;

    while (end < log->nr_entries && !(log->e[end].flags & LOGW_FLUSH)) {
        end++;
    }
    return wlog_replay_crash_at(log, target_fd, upto, upto + rnd(&st) % (end - upto + 1), seed,
                                torn);
}

int wlog_replay_crash_at(const Wlog *log, int target_fd, uint64_t upto, uint64_t crash,
                         uint64_t seed, bool torn)
{
    uint64_t st = seed * 0x9e3779b97f4a7c15ULL + 1;
    uint8_t *buf;
    int ret;

    rnd(&st); /* the draw wlog_replay_crash() spent on the crash point */
    if (crash < upto || crash > log->nr_entries) {
        return -EINVAL;
    }
    for (uint64_t i = upto; i < crash; i++) {
        if (log->e[i].flags & LOGW_FLUSH) {
            return -EINVAL; /* the cut must come before the next FLUSH */
        }
    }
    ret = wlog_replay_range(log, target_fd, 0, upto);
    if (ret < 0) {
        return ret;
    }
    buf = malloc(log->sectorsize);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint64_t i = upto; i < crash && ret == 0; i++) {
        const WlogEntry *e = &log->e[i];

        if (!is_data(e)) {
            continue;
        }
        if (e->flags & LOGW_FUA) {
            ret = apply_entry(log, e, target_fd, buf);
        } else if (!torn || e->truncate) {
            if (rnd(&st) & 1) {
                ret = apply_entry(log, e, target_fd, buf);
            }
        } else {
            for (uint64_t k = 0; k < e->nr_sectors && ret == 0; k++) {
                if (rnd(&st) & 1) {
                    ret = apply_sectors(log, e, target_fd, k, 1, buf);
                }
            }
        }
    }
    free(buf);
    return ret;
}

uint64_t wlog_window_writes(const Wlog *log, uint64_t upto)
{
    uint64_t n = 0;

    for (uint64_t i = upto; i < log->nr_entries && !(log->e[i].flags & LOGW_FLUSH); i++) {
        n += is_data(&log->e[i]);
    }
    return n;
}

bool wlog_subset_possible(const Wlog *log, uint64_t upto, uint64_t mask)
{
    bool fua_lost = false;
    uint64_t j = 0;

    for (uint64_t i = upto; i < log->nr_entries && !(log->e[i].flags & LOGW_FLUSH); i++) {
        if (!is_data(&log->e[i])) {
            continue;
        }
        if (j < 64 && (mask >> j & 1) && fua_lost) {
            return false;
        }
        fua_lost |= (log->e[i].flags & LOGW_FUA) && (j >= 64 || !(mask >> j & 1));
        j++;
    }
    return true;
}

int wlog_replay_subset(const Wlog *log, int target_fd, uint64_t upto, uint64_t mask)
{
    uint8_t *buf;
    uint64_t j = 0;
    int ret = wlog_replay_range(log, target_fd, 0, upto);

    if (ret < 0) {
        return ret;
    }
    buf = malloc(log->sectorsize);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint64_t i = upto; i < log->nr_entries && !(log->e[i].flags & LOGW_FLUSH) && ret == 0;
         i++) {
        const WlogEntry *e = &log->e[i];

        if (!is_data(e)) {
            continue;
        }
        if (j < 64 && (mask >> j & 1)) {
            ret = apply_entry(log, e, target_fd, buf);
        }
        j++;
    }
    free(buf);
    return ret;
}
