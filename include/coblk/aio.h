/*
 * coblk - the event loop (AioContext).
 *
 * An AioContext runs fd handlers, bottom halves (BHs), timers and the
 * completions of block I/O engines. Each thread runs at most one context at a
 * time by calling aio_poll(); a context belongs to the thread that polls it.
 * Functions marked "any thread" may be called from other threads; everything
 * else must be called from the context's own thread.
 */
#ifndef COBLK_AIO_H
#define COBLK_AIO_H

#include <coblk/common.h>
#include <coblk/coroutine.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct AioContext AioContext;
typedef struct AioBH AioBH;
typedef struct AioTimer AioTimer;

/** How an AioContext waits for file descriptors. */
typedef enum AioFdMonitor {
    AIO_FDMON_AUTO = 0, /**< io_uring when the kernel allows it, else epoll */
    AIO_FDMON_EPOLL,
    AIO_FDMON_IO_URING,
} AioFdMonitor;

/** Options for aio_context_new_opts(); zero-initialise, then set fields. */
typedef struct AioContextOpts {
    AioFdMonitor fdmon;
    /** Upper bound of adaptive busy polling in ns (0 disables). Default 32768. */
    int64_t poll_max_ns;
    /** Set when poll_max_ns above is meant literally (so 0 can mean "off"). */
    bool poll_max_ns_set;
} AioContextOpts;

/** Creates a context with default options. On failure returns NULL and sets errp. */
COBLK_API AioContext *aio_context_new(Error **errp);
COBLK_API AioContext *aio_context_new_opts(const AioContextOpts *opts, Error **errp);
/**
 * Frees a context. It must be idle: no fd handlers, no pending BHs, no
 * coroutines waiting in it. Pending one-shot BHs are run first.
 */
COBLK_API void aio_context_unref(AioContext *ctx);

/** The fd monitor in use ("epoll" or "io_uring"). */
COBLK_API const char *aio_context_fdmon_name(AioContext *ctx);

/**
 * The context the calling thread is running (the one it last polled or the
 * one set with aio_context_set_current()), or NULL.
 */
COBLK_API AioContext *aio_context_current(void);
/** Makes ctx the calling thread's current context (ctx may be NULL). */
COBLK_API void aio_context_set_current(AioContext *ctx);

/**
 * Runs one iteration of the loop: ready fd handlers, BHs, expired timers and
 * I/O completions. If blocking is true and nothing is ready, waits (first
 * busy-polling for up to the adaptive poll time) until something is.
 * Returns true if any callback ran (progress was made).
 */
COBLK_API bool aio_poll(AioContext *ctx, bool blocking);

/** Wakes ctx if it is waiting in aio_poll(). Any thread. */
COBLK_API void aio_notify(AioContext *ctx);

/**
 * Sets adaptive polling: up to max_ns of busy polling before sleeping; the
 * poll window grows by grow (0 = 2) when an event arrived just after it
 * expired and shrinks by shrink (0 = 2) when sleeps were long.
 */
COBLK_API void aio_context_set_poll_params(AioContext *ctx, int64_t max_ns, int64_t grow,
                                           int64_t shrink);
/** The current adaptive poll window in ns (for tests and statistics). */
COBLK_API int64_t aio_context_get_poll_ns(AioContext *ctx);

/* --------------------------------------------------------------------- */
/* Bottom halves */

typedef void AioBHFunc(void *opaque);

/** A reusable BH. Allocates; delete with aio_bh_delete(). */
COBLK_API AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque);
/** Schedules bh to run once in its context's next iteration. Any thread. */
COBLK_API void aio_bh_schedule(AioBH *bh);
/** Cancels a scheduled run (no-op if not scheduled). Context thread only. */
COBLK_API void aio_bh_cancel(AioBH *bh);
/** Cancels and frees bh (freed after the current dispatch if pending). */
COBLK_API void aio_bh_delete(AioBH *bh);
/** Runs cb(opaque) once in ctx's next iteration, then frees the BH. Any thread. */
COBLK_API void aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque);

/* --------------------------------------------------------------------- */
/* Timers: CLOCK_MONOTONIC, nanosecond deadlines. Context thread only. */

typedef void AioTimerFunc(void *opaque);

/** Nanoseconds of CLOCK_MONOTONIC. */
COBLK_API int64_t aio_clock_ns(void);

/** Storage of a timer; public so it can be embedded. Fields are private. */
struct AioTimer {
    AioContext *ctx;
    AioTimerFunc *cb;
    void *opaque;
    int64_t expire_ns;
    size_t heap_index; /* SIZE_MAX when not pending */
};

/** Initialises caller-provided timer storage. */
COBLK_API void aio_timer_init(AioTimer *t, AioContext *ctx, AioTimerFunc *cb, void *opaque);
/** Allocates and initialises a timer; free with aio_timer_free(). */
COBLK_API AioTimer *aio_timer_new(AioContext *ctx, AioTimerFunc *cb, void *opaque);
/** Arms (or re-arms) t to fire at the absolute CLOCK_MONOTONIC time expire_ns. */
COBLK_API void aio_timer_mod(AioTimer *t, int64_t expire_ns);
/** Disarms t (no-op if not armed). */
COBLK_API void aio_timer_del(AioTimer *t);
COBLK_API bool aio_timer_pending(const AioTimer *t);
/** Disarms and frees a timer from aio_timer_new(). */
COBLK_API void aio_timer_free(AioTimer *t);

/** Sleeps the calling coroutine for ns nanoseconds in its home context. */
COBLK_API void coroutine_fn co_sleep_ns(int64_t ns);

/* --------------------------------------------------------------------- */
/* File descriptor handlers */

typedef void AioIOHandler(void *opaque);
/** Busy-poll callback: returns true if the fd's event is ready (no syscall). */
typedef bool AioPollFn(void *opaque);

/**
 * Installs, replaces or (when io_read and io_write are both NULL) removes
 * the handlers of fd. io_poll, if given, is called while busy-polling; when
 * it returns true, io_poll_ready (or io_read when NULL) runs.
 * Returns 0 or -errno (for example -EPERM for a regular file under epoll).
 */
COBLK_API int aio_set_fd_handler(AioContext *ctx, int fd, AioIOHandler *io_read,
                                 AioIOHandler *io_write, AioPollFn *io_poll,
                                 AioIOHandler *io_poll_ready, void *opaque);

/* --------------------------------------------------------------------- */
/* Event notifier: an eventfd for waking a loop from another thread. */

typedef struct EventNotifier {
    int fd;
} EventNotifier;

COBLK_API int event_notifier_init(EventNotifier *e, bool active);
COBLK_API void event_notifier_cleanup(EventNotifier *e);
/** Signals e. Any thread. */
COBLK_API int event_notifier_set(EventNotifier *e);
/** Clears e; returns true if it was set. */
COBLK_API bool event_notifier_test_and_clear(EventNotifier *e);

/* --------------------------------------------------------------------- */
/* Coroutines and contexts */

/**
 * Schedules co to be entered in ctx (which becomes its home). Any thread.
 * Scheduling a coroutine that is already scheduled is an error (abort).
 */
COBLK_API void aio_co_schedule(AioContext *ctx, Coroutine *co);
/**
 * Resumes a yielded co in its home context: entered at once when that is the
 * calling thread's context (after the current coroutine yields, when called
 * from a coroutine), scheduled there otherwise. Any thread.
 */
COBLK_API void aio_co_wake(Coroutine *co);
/** Enters co in ctx: at once if ctx is the current context, else scheduled. */
COBLK_API void aio_co_enter(AioContext *ctx, Coroutine *co);

/* --------------------------------------------------------------------- */
/* Embedding in a foreign main loop (libuv-style). See also aio-glib.h.  */

/** One fd that becomes readable when ctx has work; poll it for POLLIN. */
COBLK_API int aio_get_fd(AioContext *ctx);
/**
 * Call before the foreign loop sleeps: flushes queued I/O submissions and
 * returns the longest time in ns the loop may sleep (-1: no deadline,
 * 0: work is ready, do not sleep).
 */
COBLK_API int64_t aio_prepare(AioContext *ctx);
/** Call after the foreign loop wakes (or on every iteration): runs ready work. */
COBLK_API bool aio_dispatch(AioContext *ctx);

/* --------------------------------------------------------------------- */
/* IOThread: a thread that runs one AioContext until stopped. */

typedef struct IOThread IOThread;

/** Starts a thread running a new context. */
COBLK_API IOThread *iothread_new(const char *name, Error **errp);
COBLK_API AioContext *iothread_get_aio_context(IOThread *t);
/** Asks the thread to stop after its current iteration and joins it; frees t. */
COBLK_API void iothread_join(IOThread *t);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_AIO_H */
