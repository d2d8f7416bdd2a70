/*
 * Deferred table updates for the format drivers (vdi, qed, parallels, qcow): a
 * fixed-size set of dirty metadata units (the 512-byte sectors of a block
 * map, a BAT, L1 and L2 tables: the driver numbers them, adjacent numbers
 * for adjacent sectors) whose in-memory copy is ahead of the file. Not
 * installed.
 *
 * The rule it keeps: a table unit that maps new data reaches the file only
 * after that data is durable. An allocating write updates the in-memory
 * table at once and marks the unit dirty (fmt_defer_add); the unit is
 * written by fmt_defer_commit, which first flushes the data child, then
 * writes every dirty unit, merged into runs of adjacent units. The commit
 * does not flush after those writes: the guest flush that called it (or
 * the caller, at close) makes them durable. So N allocations between two
 * guest flushes cost two flushes, not N, and no unit on disk ever points at
 * data that is not stable. The set is a fixed array: no allocation per
 * request, and its size bounds how many units wait.
 *
 * Drivers commit at a guest flush (co_flush_to_os), before any other write
 * of a sector that may hold a dirty unit (the header, discards, resizes,
 * repairs), at close and reopen read-only, and when the set is full.
 * A failed commit leaves every unit dirty: the next commit writes them all
 * again, so the file never holds a unit whose data was not flushed.
 * The caller serializes add and commit (they run under its allocation lock).
 */
#ifndef COBLK_DRIVERS_FORMAT_FMT_DEFER_H
#define COBLK_DRIVERS_FORMAT_FMT_DEFER_H

#include <stdbool.h>
#include <stdint.h>

#include <coblk/block-driver.h>

/** Most dirty units pending at once by default (fmt_defer_init). */
#define FMT_DEFER_MAX 64u
/** The largest capacity a driver may ask for (fmt_defer_init_cap); the array's size. */
#define FMT_DEFER_CAP_MAX 256u

typedef struct FmtDefer {
    uint64_t unit[FMT_DEFER_CAP_MAX]; /* dirty unit numbers, unsorted, no duplicates */
    uint32_t n;                    /* how many */
    uint32_t cap;                  /* at most this many; 0 (a zeroed set) is FMT_DEFER_MAX */
    uint64_t commits;              /* commits that wrote at least one unit (tests, stats) */
} FmtDefer;

/**
 * Writes count units from first on (they hold the in-memory copy) to the
 * file. Returns 0 or -errno.
 */
typedef int coroutine_fn (*FmtDeferWriteFn)(void *opaque, uint64_t first, uint32_t count);

/** Empties the set; it holds FMT_DEFER_MAX units. */
void fmt_defer_init(FmtDefer *d);

/**
 * Empties the set; it holds cap units (1 to FMT_DEFER_CAP_MAX), for a driver
 * whose units are each a whole table and whose cache pins as many.
 */
void fmt_defer_init_cap(FmtDefer *d, uint32_t cap);

/** True if any unit is dirty. */
static inline bool fmt_defer_pending(const FmtDefer *d)
{
    return d->n != 0;
}

/** True if unit u is dirty. */
bool fmt_defer_has(const FmtDefer *d, uint64_t u);

/**
 * True if units [first, first + count) can all be added without exceeding
 * the set's capacity (those already dirty take no room). count must be at
 * most the capacity: a caller that could need more commits and writes itself.
 */
bool fmt_defer_has_room(const FmtDefer *d, uint64_t first, uint32_t count);

/** How many units the set holds at most. */
static inline uint32_t fmt_defer_cap(const FmtDefer *d)
{
    return d->cap ? d->cap : FMT_DEFER_MAX;
}

/** True if k more units, wherever they are, fit (for updates that touch several tables). */
static inline bool fmt_defer_room_for(const FmtDefer *d, uint32_t k)
{
    return d->n + k <= fmt_defer_cap(d);
}

/**
 * Marks units [first, first + count) dirty. The caller checked
 * fmt_defer_has_room (committing first when there was none). Returns 0,
 * or -ENOSPC (nothing added) if there is no room.
 */
int fmt_defer_add(FmtDefer *d, uint64_t first, uint32_t count);

/**
 * Flushes data (the child the new data went to), then writes every dirty
 * unit through write_fn in ascending runs. Returns 0 (the set is empty) or
 * the first -errno (every unit stays dirty). Does nothing if none is dirty.
 */
int coroutine_fn fmt_defer_commit(FmtDefer *d, BdrvChild *data, FmtDeferWriteFn write_fn,
                                  void *opaque);

#endif /* COBLK_DRIVERS_FORMAT_FMT_DEFER_H */
