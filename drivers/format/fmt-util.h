/*
 * Helpers shared by the format drivers: buffer-based I/O on
 * a child and creating the file of a new image. Not installed.
 */
#ifndef COBLK_DRIVERS_FORMAT_FMT_UTIL_H
#define COBLK_DRIVERS_FORMAT_FMT_UTIL_H

#include <coblk/block-driver.h>

/** Reads bytes at offset of child into buf. Returns 0 or -errno. */
static inline int coroutine_fn fmt_co_pread(BdrvChild *child, int64_t offset, int64_t bytes,
                                            void *buf)
{
    IOVector qiov;

    iovector_init_buf(&qiov, buf, (size_t)bytes);
    return bdrv_co_preadv(child, offset, bytes, &qiov, 0);
}

/** Writes bytes of buf at offset of child. Returns 0 or -errno. */
static inline int coroutine_fn fmt_co_pwrite(BdrvChild *child, int64_t offset, int64_t bytes,
                                             const void *buf, BdrvRequestFlags flags)
{
    IOVector qiov;

    iovector_init_buf(&qiov, (void *)buf, (size_t)bytes);
    return bdrv_co_pwritev(child, offset, bytes, &qiov, flags);
}

/**
 * Creates filename empty through the protocol its name selects ("file" by
 * default) and opens it read-write as a protocol node behind a new
 * BlockBackend. Coroutine context. Returns NULL with errp set on failure.
 */
BlockBackend *coroutine_fn fmt_co_create_file(const char *filename, Error **errp);

/** Writes bytes of buf at offset of blk. Returns 0 or -errno. */
int coroutine_fn fmt_blk_co_pwrite(BlockBackend *blk, int64_t offset, int64_t bytes,
                                   const void *buf);

/**
 * Fills a new random (version 4) UUID in RFC 4122 byte order (libuuid).
 */
void fmt_uuid_generate(uint8_t uuid[16]);

/**
 * For the read-only formats (bochs, cloop, dmg): refuses an open or reopen
 * whose flags ask for BDRV_O_RDWR with an error naming the file and the
 * format. Returns 0 or -EROFS.
 */
int fmt_refuse_write_open(BlockDriverState *bs, int flags, Error **errp);

/** True if all 16 bytes are zero. */
bool fmt_uuid_is_null(const uint8_t uuid[16]);

/*
 * Deferred table updates (vdi, qed, parallels): an allocation updates the
 * in-memory table at once (reads see the new data) and records the table
 * unit (a sector, a table range: the format decides) that the file does not
 * hold yet. The units are written at the next guest flush, close, reopen
 * read-only, metadata operation, or when the set is full:
 *     fdatasync (the data the new entries point at is stable first)
 *     -> write every dirty unit -> fdatasync only for a guest flush
 * so no entry on disk ever points at data that is not stable, and a guest
 * flush costs two fdatasync however many allocations it covers. The set is
 * fixed-size: no allocation per request.
 */
#define FMT_DIRTY_MAX 32

typedef struct FmtDirty {
    uint64_t unit[FMT_DIRTY_MAX];   /**< dirty units, unordered, each once */
    unsigned n;                     /**< units in unit[] */
    unsigned updates;               /**< fmt_dirty_add calls since the last commit */
    unsigned limit;                 /**< commit once updates reaches this (0: FMT_DIRTY_MAX) */
} FmtDirty;

/** Writes one dirty unit from the in-memory table to the file. Returns 0 or -errno. */
typedef int coroutine_fn FmtDirtyWriteFn(BlockDriverState *bs, uint64_t unit);

/**
 * True if recording more new units (or one more update) needs a commit
 * first: the caller commits (fmt_co_dirty_commit, sync false) and then adds.
 */
bool fmt_dirty_full(const FmtDirty *d, unsigned more);

/**
 * Records one table update in unit (each unit is kept once). There must be
 * room (see fmt_dirty_full).
 */
void fmt_dirty_add(FmtDirty *d, uint64_t unit);

/** True if unit is recorded dirty. */
bool fmt_dirty_has(const FmtDirty *d, uint64_t unit);

/**
 * Commits d on bs: if any unit is dirty, flushes bs->file (data first),
 * writes the units in ascending order with write, then flushes again if
 * sync. On success d is empty; on error d is kept whole (the in-memory table
 * stays authoritative, the next commit writes the units again) and the
 * first error is returned. The caller holds the lock that serializes table
 * updates.
 */
int coroutine_fn fmt_co_dirty_commit(BlockDriverState *bs, FmtDirty *d,
                                     FmtDirtyWriteFn *write, bool sync);

#endif /* COBLK_DRIVERS_FORMAT_FMT_UTIL_H */
