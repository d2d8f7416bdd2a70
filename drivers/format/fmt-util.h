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

/*
 * Allocating writes in flight: each took guest units [first, first + count)
 * (clusters, blocks) under the driver's lock and writes their data without
 * it; the units' table entries are set only after that. Other writers of
 * those units wait for it to end (they would allocate them a second time);
 * check, resize, discard and close wait for all of them. The records live
 * on the writers' stacks; every call is made with the driver's lock held.
 */
typedef struct FmtInflight {
    uint64_t first;
    uint64_t count;
    struct FmtInflight *next;
} FmtInflight;

typedef struct FmtInflightList {
    FmtInflight *head;
    CoQueue wait;               /* waiting for one of them to end */
} FmtInflightList;

static inline void fmt_inflight_init(FmtInflightList *l)
{
    l->head = NULL;
    co_queue_init(&l->wait);
}

static inline void fmt_inflight_begin(FmtInflightList *l, FmtInflight *a, uint64_t first,
                                      uint64_t count)
{
    *a = (FmtInflight){ .first = first, .count = count, .next = l->head };
    l->head = a;
}

/** Whether an allocating write of unit u is in flight. */
static inline bool fmt_inflight_busy(const FmtInflightList *l, uint64_t u)
{
    for (const FmtInflight *a = l->head; a; a = a->next) {
        if (u - a->first < a->count) {
            return true;
        }
    }
    return false;
}

/** The allocating write in flight of unit u, or NULL. */
static inline FmtInflight *fmt_inflight_find(const FmtInflightList *l, uint64_t u)
{
    for (FmtInflight *a = l->head; a; a = a->next) {
        if (u - a->first < a->count) {
            return a;
        }
    }
    return NULL;
}

/** Unlists a (done or failed) and wakes whoever waits. */
static inline void fmt_inflight_end(FmtInflightList *l, FmtInflight *a)
{
    FmtInflight **p = &l->head;

    while (*p != a) {
        p = &(*p)->next;
    }
    *p = a->next;
    co_queue_restart_all(&l->wait);
}

/** Waits for one allocating write to end; lock is the driver's lock, held. */
static inline void coroutine_fn fmt_inflight_wait(FmtInflightList *l, CoMutex *lock)
{
    co_queue_wait(&l->wait, lock);
}

/** Waits until no allocating write is in flight. */
static inline void coroutine_fn fmt_inflight_wait_all(FmtInflightList *l, CoMutex *lock)
{
    while (l->head) {
        co_queue_wait(&l->wait, lock);
    }
}

/*
 * An allocation in flight that other writes of its unit can "join": once its
 * unit's new place is prepared (zeroed, and for some formats its bitmap
 * written) and opened, a second write of the unit writes its data into that
 * place without the driver's lock instead of waiting, and completes when the
 * allocation does (with its result). The allocator:
 *
 *     fmt_inflight_begin(l, &j->in, unit, 1);    lock held, then unlocked:
 *     prepare the place; lock; fmt_join_open(l, j); unlock; write its data;
 *     lock; fmt_join_seal(l, j, lock);           no joiner writes any more
 *     set the unit's entry (if every write went well);
 *     ret = fmt_join_end(l, j, lock, ret);       joiners have their result
 *
 * A joiner finds the record with fmt_join_find and calls fmt_co_join when
 * fmt_join_can_join says so; otherwise it waits (fmt_inflight_wait) and looks
 * again. Every record in a list that uses fmt_join_find must be an FmtJoin.
 * Plain FmtInflight users (qed, vmdk, vdi, parallels, qcow) are not affected.
 */
typedef struct FmtJoin {
    FmtInflight in;
    bool open;                  /* place prepared, not sealed: joiners may write */
    bool done;                  /* entry set, or failed: ret is final */
    int ret;
    unsigned refs;              /* joiners that have yet to read ret */
    unsigned writing;           /* joiners' data writes in flight */
} FmtJoin;

/** The joinable allocation in flight of unit u, or NULL. */
static inline FmtJoin *fmt_join_find(const FmtInflightList *l, uint64_t u)
{
    return (FmtJoin *)fmt_inflight_find(l, u); /* in is the first member */
}

/** Whether a write of j's unit may join it now (else it waits for it to end). */
static inline bool fmt_join_can_join(const FmtJoin *j)
{
    return j->open && !j->done;
}

/** Allocator: the place is prepared; lets joiners in. Lock held. */
static inline void fmt_join_open(FmtInflightList *l, FmtJoin *j)
{
    j->open = true;
    co_queue_restart_all(&l->wait);
}

/**
 * Allocator: waits until every joiner's data is written, then closes j to
 * new joiners (they wait for it to end). After it, with the lock held or
 * not, the allocator may write what makes the joiners' data visible.
 */
void coroutine_fn fmt_join_seal(FmtInflightList *l, FmtJoin *j, CoMutex *lock);

/**
 * Allocator: closes j to new joiners without waiting for the joiners still
 * writing, for a format whose entry may point at the place while they do
 * (their data needs nothing more, e.g. no bitmap): the entry can go in at
 * once, and each joiner completes as soon as its own write has and
 * fmt_join_end has published the result (the allocator itself still waits
 * there for the last of them). A failed allocation must still
 * fmt_join_seal before giving the place back.
 */
static inline void fmt_join_close(FmtJoin *j)
{
    j->open = false;
}

/**
 * Allocator: publishes ret (the allocation's result, 0 once its entry is set)
 * to the joiners, waits until each has read it, and unlists j. Lock held
 * throughout. Returns ret.
 */
int coroutine_fn fmt_join_end(FmtInflightList *l, FmtJoin *j, CoMutex *lock, int ret);

/**
 * Called by a joiner with the lock held once its data write succeeded, before
 * the allocator can seal: records what the allocator must publish for it
 * (e.g. the write's bits in a sector bitmap). opaque is fmt_co_join's.
 */
typedef void FmtJoinLanded(FmtJoin *j, void *opaque);

/**
 * Joiner (fmt_join_can_join(j) true, lock held): writes bytes of qiov from
 * qoff at offset of file without the lock, calls landed (if not NULL) when
 * that succeeded, and waits until j ends. Releases the lock. Returns the
 * write's error, else the allocation's result.
 */
int coroutine_fn fmt_co_join(FmtInflightList *l, FmtJoin *j, CoMutex *lock, BdrvChild *file,
                             int64_t offset, int64_t bytes, IOVector *qiov, size_t qoff,
                             FmtJoinLanded *landed, void *opaque);

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

#endif /* COBLK_DRIVERS_FORMAT_FMT_UTIL_H */
