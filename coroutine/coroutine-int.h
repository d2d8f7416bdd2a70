/*
 * Internal coroutine definitions shared by coroutine/ and aio/.
 * Not installed.
 */
#ifndef COBLK_COROUTINE_INT_H
#define COBLK_COROUTINE_INT_H

#include <stdatomic.h>

#include <coblk/coroutine.h>

#include "coroutine/switch.h"

typedef enum CoroutineState {
    CO_STATE_FREE = 0,   /* in a pool, not yet handed out */
    CO_STATE_CREATED,    /* created, never entered */
    CO_STATE_RUNNING,    /* on the current call chain */
    CO_STATE_YIELDED,    /* waiting to be entered again */
    CO_STATE_TERMINATED, /* entry returned; about to go back to the pool */
} CoroutineState;

struct Coroutine {
    CoSwitchCtx sw;            /* saved machine context (backend-specific) */
    CoroutineEntry *entry;
    void *entry_arg;
    Coroutine *caller;         /* who entered us (NULL: the thread's own stack) */
    struct AioContext *ctx;    /* home context */
    CoroutineState state;

    /* Coroutines woken by this one while it runs; entered after it yields. */
    Coroutine *wakeup_head;
    Coroutine *wakeup_tail;
    Coroutine *wakeup_next;
    bool wakeup_queued;        /* on some coroutine's wake-up list */

    /* aio_co_schedule(): link in the target context's lock-free list, and the
     * name of the function that scheduled it (non-NULL while scheduled). */
    Coroutine *sched_next;
    _Atomic(const char *) scheduled;

    Coroutine *pool_next;      /* link in a free pool */

    /*
     * 1 from the moment a thread switches into the coroutine until that
     * thread is back on its own stack. A coroutine that schedules itself into
     * another thread's context and then yields may be picked up there before
     * the yield's switch has finished; the other thread waits for 0 first.
     */
    _Atomic int on_cpu;

    void *stack;               /* lowest usable address (above the guard page) */
    size_t stack_size;         /* usable bytes */
    void *map_base;            /* mmap base including the guard page */
    size_t map_size;
    void *asan_fake_stack;     /* ASan fiber bookkeeping */
    unsigned valgrind_stack_id;
};

/*
 * Resumes a yielded coroutine: if its home context is the calling thread's
 * current one (or it has none), it is entered at once, or queued to run when
 * the running coroutine yields; otherwise the remote-wake hook schedules it
 * in its home context. Used by the coroutine locks.
 */
void coroutine_wake_internal(Coroutine *co);

/*
 * aio/ installs the function that resumes a coroutine in another thread's
 * context (aio_co_schedule). This keeps coroutine/ free of a dependency on
 * aio/ while letting the locks wake coroutines of other threads.
 */
typedef void CoroutineRemoteWakeFn(Coroutine *co);
void coroutine_set_remote_wake(CoroutineRemoteWakeFn *fn);

/*
 * The calling thread's current AioContext lives here (below aio/) so that
 * coroutine_enter() can give a coroutine its home context. aio/ sets it.
 */
struct AioContext *coroutine_thread_ctx(void);
void coroutine_set_thread_ctx(struct AioContext *ctx);

/*
 * A coroutine waiting on a CoQueue, CoMutex or CoRwlock. It lives on the
 * waiter's stack for as long as the waiter is queued; whoever dequeues it
 * reads co (and next) before waking co, and never touches it afterwards.
 */
struct CoWaitRecord {
    Coroutine *co;
    CoWaitRecord *next;
    int kind;                  /* CoRwlock: CO_WAIT_READ, CO_WAIT_WRITE */
};

/* True when the pools are compiled in (meson option pools=true). */
bool coroutine_pools_enabled(void);

#endif /* COBLK_COROUTINE_INT_H */
