/*
 * coblk - stackful coroutines and coroutine locks.
 *
 * A coroutine runs on its own mmap'd stack (guard page below it). It is
 * started with coroutine_enter(), gives control back to whoever entered it
 * with coroutine_yield(), and is resumed by entering it again. When its entry
 * function returns the coroutine terminates and goes back to a pool, so a
 * steady-state create/enter/terminate cycle makes no system call and no
 * allocation.
 *
 * Coroutines are not migrated implicitly: a coroutine that yields is resumed
 * in its home AioContext (see aio_co_wake() in aio.h).
 */
#ifndef COBLK_COROUTINE_H
#define COBLK_COROUTINE_H

#include <coblk/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct Coroutine Coroutine;
struct AioContext;

/** Entry point of a coroutine. */
typedef void coroutine_fn CoroutineEntry(void *opaque);

/**
 * Creates a coroutine that will run entry(opaque) when first entered.
 * Takes a coroutine from the calling thread's pool when one is free.
 * Never returns NULL: an out-of-memory condition aborts (as malloc failure
 * does in the rest of the library's non-I/O paths).
 */
COBLK_API Coroutine *coroutine_create(CoroutineEntry *entry, void *opaque);

/**
 * Transfers control into co until it yields or terminates.
 * co must be freshly created or yielded. Entering a running coroutine (one
 * that is on the current call chain) or a terminated one is a programming
 * error: the library prints which and aborts.
 * co's home AioContext becomes the calling thread's current one (if any).
 */
COBLK_API void coroutine_enter(Coroutine *co);

/**
 * As coroutine_enter(), but does nothing if co is running (on the current call
 * chain) or terminated: only a freshly created or a yielded coroutine is entered.
 */
COBLK_API void coroutine_enter_if_inactive(Coroutine *co);

/** Gives control back to the coroutine's caller. Only valid in coroutine context. */
COBLK_API void coroutine_fn coroutine_yield(void);

/** The running coroutine, or NULL outside coroutine context. */
COBLK_API Coroutine *coroutine_self(void);

/** True when called from coroutine context. */
COBLK_API bool coroutine_in_coroutine(void);

/** True if co has yielded and is waiting to be entered again. */
COBLK_API bool coroutine_is_yielded(const Coroutine *co);

/** The home AioContext of co (NULL if it was entered outside any context). */
COBLK_API struct AioContext *coroutine_get_aio_context(const Coroutine *co);

/**
 * Sets the virtual stack size used for coroutines created from now on
 * (rounded up to a page; minimum 16 KiB). Default 1 MiB. Pooled coroutines
 * of another size are dropped from the pools (other threads' local pools drop
 * theirs when they next reach them). Returns 0, or -EINVAL above 64 GiB.
 */
COBLK_API int coroutine_set_stack_size(size_t bytes);

/** Statistics of the calling thread's coroutine pool, for tests and benchmarks. */
typedef struct CoroutinePoolStats {
    uint64_t created;   /**< coroutines whose stack was mmap'd (process-wide) */
    uint64_t destroyed; /**< coroutines whose stack was unmapped (process-wide) */
    size_t local_free;  /**< coroutines in this thread's free pool */
    size_t shared_free; /**< coroutines in the shared overflow pool */
} CoroutinePoolStats;
COBLK_API void coroutine_pool_stats(CoroutinePoolStats *stats);

/** Frees every pooled coroutine (this thread's and the shared pool). */
COBLK_API void coroutine_pool_drain(void);

/* --------------------------------------------------------------------- */
/* Coroutine locks. All of them may be used by coroutines of different   */
/* threads; waiters are woken in their home AioContext. None busy-waits. */
/* Structures are public so they can be embedded; treat fields as private. */

typedef struct CoWaitRecord CoWaitRecord;

/** A FIFO queue of waiting coroutines (a condition variable for coroutines). */
typedef struct CoQueue {
    CoWaitRecord *head;
    CoWaitRecord *tail;
} CoQueue;

/**
 * A mutex for coroutines. Unlock hands the lock directly to the longest
 * waiting coroutine (strict FIFO; no barging).
 */
typedef struct CoMutex {
    int spin;              /* protects the fields below; held for a few instructions */
    unsigned locked;       /* 0 or 1 */
    Coroutine *holder;
    CoWaitRecord *head;
    CoWaitRecord *tail;
} CoMutex;

/** A readers-writer lock for coroutines, FIFO between readers and writers. */
typedef struct CoRwlock {
    int spin;
    int readers;           /* >0 readers hold it, -1 a writer holds it */
    CoWaitRecord *head;
    CoWaitRecord *tail;
} CoRwlock;

#define CO_QUEUE_INITIALIZER { 0, 0 }
#define CO_MUTEX_INITIALIZER { 0, 0, 0, 0, 0 }
#define CO_RWLOCK_INITIALIZER { 0, 0, 0, 0 }

COBLK_API void co_queue_init(CoQueue *q);
/**
 * Waits on q. If m is non-NULL it is released before waiting and taken again
 * before returning (as pthread_cond_wait).
 */
COBLK_API void coroutine_fn co_queue_wait(CoQueue *q, CoMutex *m);
/** Wakes the first waiter; returns false if the queue was empty. */
COBLK_API bool co_queue_next(CoQueue *q);
/** Wakes every waiter. */
COBLK_API void co_queue_restart_all(CoQueue *q);
COBLK_API bool co_queue_empty(const CoQueue *q);

COBLK_API void co_mutex_init(CoMutex *m);
COBLK_API void coroutine_fn co_mutex_lock(CoMutex *m);
/** Takes m if it is free; returns true on success. Does not yield. */
COBLK_API bool co_mutex_trylock(CoMutex *m);
/** Releases m; only its holder may call this. */
COBLK_API void coroutine_fn co_mutex_unlock(CoMutex *m);
/** True if m is held (by anyone). */
COBLK_API bool co_mutex_is_locked(const CoMutex *m);

COBLK_API void co_rwlock_init(CoRwlock *l);
COBLK_API void coroutine_fn co_rwlock_rdlock(CoRwlock *l);
COBLK_API void coroutine_fn co_rwlock_wrlock(CoRwlock *l);
/** Releases a read or write hold. */
COBLK_API void coroutine_fn co_rwlock_unlock(CoRwlock *l);
/** Turns a write hold into a read hold, waking readers queued behind it. */
COBLK_API void coroutine_fn co_rwlock_downgrade(CoRwlock *l);
/** Turns a read hold into a write hold (waits until other readers leave). */
COBLK_API void coroutine_fn co_rwlock_upgrade(CoRwlock *l);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_COROUTINE_H */
