/*
 * Internal definitions of the event loop, shared by the files of aio/.
 * Not installed.
 */
#ifndef COBLK_AIO_INT_H
#define COBLK_AIO_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include <coblk/aio-io.h>
#include <coblk/aio.h>

#include "coroutine/coroutine-int.h"

#if defined(__x86_64__) || defined(__i386__)
#define aio_cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define aio_cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define aio_cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

/* ---------------------------------------------------------------------- */
/* fd handlers and fd monitors */

typedef struct AioHandler AioHandler;
struct AioHandler {
    int fd;
    AioIOHandler *io_read;
    AioIOHandler *io_write;
    AioPollFn *io_poll;
    AioIOHandler *io_poll_ready;
    void *opaque;
    unsigned events;     /* POLLIN / POLLOUT wanted */
    unsigned revents;    /* set by the fd monitor's wait() */
    bool deleted;        /* removed while handlers were being walked */
    bool on_ready_list;
    AioHandler *next;        /* ctx->handlers */
    AioHandler *ready_next;  /* ctx->ready_list */
    uint64_t fdmon_data;     /* private to the fd monitor */
};

typedef struct FdMonOps {
    const char *name;
    /* Sets up ctx->fdmon_* state. */
    int (*init)(AioContext *ctx, Error **errp);
    void (*cleanup)(AioContext *ctx);
    /* old_h is being replaced by new_h (either may be NULL). */
    int (*update)(AioContext *ctx, AioHandler *old_h, AioHandler *new_h);
    /*
     * Waits up to timeout_ns (-1 forever, 0 don't block) and adds ready
     * handlers to ctx->ready_list with their revents. Returns the number of
     * handlers made ready, or -errno.
     */
    int (*wait)(AioContext *ctx, int64_t timeout_ns);
    /* The fd an embedder polls for POLLIN. */
    int (*get_fd)(AioContext *ctx);
} FdMonOps;

extern const FdMonOps fdmon_epoll_ops;
extern const FdMonOps fdmon_io_uring_ops;

/* ---------------------------------------------------------------------- */
/* Bottom halves */

enum {
    BH_PENDING = 1u << 0,   /* on ctx->bh_list */
    BH_SCHEDULED = 1u << 1, /* callback wanted */
    BH_DELETED = 1u << 2,   /* free when dispatched */
    BH_ONESHOT = 1u << 3,   /* free after running */
};

struct AioBH {
    AioContext *ctx;
    AioBHFunc *cb;
    void *opaque;
    _Atomic unsigned flags;
    AioBH *next;
};

/* ---------------------------------------------------------------------- */
/* Block I/O engines */

typedef struct AioIoReq AioIoReq;
struct AioIoReq {
    AioIoOp op;
    int fd;
    int mode;
    int iovcnt;
    int64_t offset;
    int64_t len;
    const struct iovec *iov;
    int64_t ret;          /* result: bytes or -errno */
    bool done;
    Coroutine *co;        /* woken on completion */
    AioIoReq *next;       /* engine's submission queue */
    /* Engine-private storage (a struct iocb for native AIO). */
    _Alignas(16) unsigned char priv[80];
};

typedef struct AioEngineOps {
    AioEngineType type;
    /* Creates the engine state in e->priv_state; errp says why it can't. */
    int (*init)(AioEngine *e, Error **errp);
    void (*cleanup)(AioEngine *e);
    /*
     * Queues req. Returns 0 (the completion will run exactly once, later) or
     * -errno (it never runs). Must not block.
     */
    int (*submit)(AioEngine *e, AioIoReq *req);
    /* Pushes queued requests to the kernel (called when unplugged). */
    void (*flush)(AioEngine *e);
} AioEngineOps;

struct AioEngine {
    const AioEngineOps *ops;
    AioContext *ctx;
    void *priv_state;
};

/* Completes a request: stores ret and wakes its coroutine. */
void aio_io_req_complete(AioIoReq *req, int64_t ret);

/* Called by aio_poll()/aio_prepare() before waiting: flushes every engine. */
void aio_engines_flush(AioContext *ctx);
/* Called by aio_context_unref(): tears the engines down. */
void aio_engines_cleanup(AioContext *ctx);

typedef struct ThreadPool ThreadPool;
void thread_pool_free(ThreadPool *pool);

/* ---------------------------------------------------------------------- */
/* The context */

#define AIO_ENGINE_MAX 4

struct AioContext {
    atomic_bool iothread_owned;  /* an IOThread polls it: other threads must not */

    /* fd handlers */
    AioHandler *handlers;
    AioHandler *ready_list;
    unsigned walking_handlers;
    bool handlers_deleted;
    unsigned poll_handlers;      /* handlers with an io_poll callback */

    /* fd monitor */
    const FdMonOps *fdmon;
    int fdmon_fd;                /* epoll fd or ring fd */
    void *fdmon_state;

    /* notification from other threads */
    EventNotifier notifier;
    atomic_bool notified;

    /* bottom halves: lock-free LIFO, reversed at dispatch */
    _Atomic(AioBH *) bh_list;

    /* aio_co_schedule(): lock-free LIFO of coroutines + the BH that runs them */
    _Atomic(Coroutine *) scheduled_coroutines;
    AioBH *co_schedule_bh;

    /* timers: binary min-heap on expire_ns */
    AioTimer **timers;
    size_t timers_len;
    size_t timers_cap;

    /* adaptive polling */
    int64_t poll_ns;
    int64_t poll_max_ns;
    int64_t poll_grow;
    int64_t poll_shrink;
    unsigned poll_streak;        /* consecutive iterations won by busy polling */

    /* block I/O engines, indexed by AioEngineType */
    AioEngine *engines[AIO_ENGINE_MAX];
    unsigned plug_depth;
    ThreadPool *thread_pool;
    int thread_pool_max;
};

/* Runs expired timers; returns true if any ran. */
bool aio_timers_run(AioContext *ctx);
/* ns until the earliest timer expires (-1 if none, 0 if expired). */
int64_t aio_timers_deadline_ns(AioContext *ctx);
void aio_timers_cleanup(AioContext *ctx);

/* Runs scheduled BHs; returns true if any ran. */
bool aio_bh_poll(AioContext *ctx);
bool aio_bh_pending(AioContext *ctx);

#endif /* COBLK_AIO_INT_H */
