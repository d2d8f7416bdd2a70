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
