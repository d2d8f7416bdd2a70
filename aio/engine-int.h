/*
 * Internal interface between the engine registry (engine.c), the engines
 * (engine-*.c) and the thread pool (thread-pool.c). Not installed.
 */
#ifndef COBLK_AIO_ENGINE_INT_H
#define COBLK_AIO_ENGINE_INT_H

#include "coblk-config.h"

#include "aio/aio-int.h"

/* ---------------------------------------------------------------------- */
/* Engines */

#if COBLK_HAVE_IO_URING
extern const AioEngineOps aio_engine_io_uring_ops;

/*
 * Test hook: io_uring engines created after this call treat the
 * IORING_SETUP_* bits in flags as refused by the kernel (as an older kernel
 * would, with -EINVAL) and fall back to the next set of setup flags.
 * 0 restores the default.
 */
void aio_io_uring_refuse_setup_flags(unsigned flags);
/* The IORING_SETUP_* flags io_uring engine e's ring runs with. */
unsigned aio_io_uring_setup_flags(AioEngine *e);
#endif
#if COBLK_HAVE_LIBAIO
extern const AioEngineOps aio_engine_linux_aio_ops;
#endif
extern const AioEngineOps aio_engine_threads_ops;

/*
 * Test hook: writes carrying any of the RWF_* flags in rwf fail with
 * -EOPNOTSUPP before reaching the kernel, as on a kernel or file system
 * without them. 0 restores the default. $COBLK_AIO_REFUSE_RWF adds flags
 * the same way (for benchmarks).
 */
void aio_io_refuse_rwf(unsigned rwf);

/* Submission counters of one engine, for tests and benchmarks. */
typedef struct AioEngineStats {
    uint64_t submit_calls;   /* batches handed to the kernel or the pool */
    uint64_t reqs_submitted; /* requests in those batches */
    uint64_t max_batch;      /* largest batch so far */
    uint64_t syncs;          /* fsync and fdatasync requests */
    uint64_t dsync_writes;   /* writes with RWF_DSYNC */
} AioEngineStats;

/* Records that n requests went out in one submission call. */
void aio_engine_account_batch(AioEngine *e, uint64_t n);
/* Copies e's counters into *stats. */
void aio_engine_get_stats(AioEngine *e, AioEngineStats *stats);
/* Zeroes e's counters. */
void aio_engine_reset_stats(AioEngine *e);

/*
 * Completes req with ret from a bottom half of e's context rather than at
 * once: for errors found while flushing, where the caller is still walking
 * its queues and the waiting coroutine must not run yet.
 */
void aio_engine_complete_later(AioEngine *e, AioIoReq *req, int64_t ret);

/*
 * Runs req on ctx's thread pool now (no batching); it completes with
 * aio_io_req_complete() from a BH. Uses req->priv.
 */
void aio_io_req_submit_to_pool(AioContext *ctx, AioIoReq *req);

/* Runs req's operation with blocking system calls; returns bytes or -errno. */
int64_t aio_io_req_run_sync(const AioIoReq *req);

/* ---------------------------------------------------------------------- */
/* Thread pool */

typedef struct ThreadPoolWork ThreadPoolWork;
typedef void ThreadPoolDoneFunc(ThreadPoolWork *w);

/*
 * One unit of work. The submitter owns the storage (usually on a coroutine
 * stack or inside an AioIoReq) until done runs.
 */
struct ThreadPoolWork {
    ThreadPoolFunc *fn;       /* runs on a worker */
    void *opaque;
    ThreadPoolDoneFunc *done; /* runs in the submitting context with ret set */
    int64_t ret;
    ThreadPoolWork *next;
};

/*
 * Queues a chain of work items (linked by next, NULL-terminated) on ctx's
 * pool, creating the pool on first use. Each done callback runs exactly
 * once, later, from a bottom half in ctx. Returns the number queued.
 */
unsigned thread_pool_submit_chain(AioContext *ctx, ThreadPoolWork *head);

/* Pool counters, for tests. */
typedef struct ThreadPoolStats {
    int threads;      /* live worker threads */
    int idle_threads; /* of which waiting for work */
    int max_threads;  /* current bound */
} ThreadPoolStats;
void thread_pool_get_stats(AioContext *ctx, ThreadPoolStats *stats);

#endif /* COBLK_AIO_ENGINE_INT_H */
