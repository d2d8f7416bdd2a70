/*
 * coblk - block I/O engines: io_uring, Linux native AIO and a thread pool.
 *
 * A protocol driver asks its AioContext for an engine once (at open) and
 * then issues requests from coroutines; the calling coroutine yields until
 * the request completes and gets the result: a byte count (possibly short,
 * as with preadv(2)) or -errno. While plugged (aio_io_plug) requests are held
 * and go to the kernel together at aio_io_unplug(); otherwise a request is
 * submitted at once while the device is under-occupied, and batched per loop
 * iteration when many are in flight. No allocation happens per request.
 */
#ifndef COBLK_AIO_IO_H
#define COBLK_AIO_IO_H

#include <sys/uio.h>

#include <coblk/aio.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Engine names follow QEMU's aio= option. */
typedef enum AioEngineType {
    AIO_ENGINE_AUTO = 0,  /**< the best that works here: io_uring, native, threads */
    AIO_ENGINE_IO_URING,  /**< "io_uring" */
    AIO_ENGINE_NATIVE,    /**< "native" (libaio; meant for O_DIRECT fds) */
    AIO_ENGINE_THREADS,   /**< "threads" */
} AioEngineType;

typedef struct AioEngine AioEngine;

/** Parses "io_uring" / "native" / "threads" / "auto"; returns -EINVAL if unknown. */
COBLK_API int aio_engine_type_parse(const char *name, AioEngineType *type);
COBLK_API const char *aio_engine_type_name(AioEngineType type);

/**
 * Returns ctx's engine of the given type, creating it on first use. When the
 * requested engine is unavailable (not built in, or refused by the kernel or
 * a seccomp filter), falls back along io_uring -> native -> threads and emits
 * a warning naming the reason, unless strict is true, in which case it
 * returns NULL and sets errp. AUTO never warns. The engine lives as long as ctx.
 * Call it from ctx's own thread (it registers an fd handler in ctx).
 */
COBLK_API AioEngine *aio_get_engine(AioContext *ctx, AioEngineType type, bool strict,
                                    Error **errp);
COBLK_API AioEngineType aio_engine_type(const AioEngine *e);

/** Request kinds. */
typedef enum AioIoOp {
    AIO_OP_PREADV,
    AIO_OP_PWRITEV,
    AIO_OP_FSYNC,
    AIO_OP_FDATASYNC,
    AIO_OP_FALLOCATE, /* mode, offset, len: fallocate(2) */
} AioIoOp;

/**
 * Runs one request on fd and returns its result. offset/iov/iovcnt are for
 * reads and writes, mode/offset/len for fallocate. For AIO_OP_PWRITEV, mode
 * holds pwritev2(2) RWF_* flags: 0 or RWF_DSYNC (the write is durable when
 * it completes, as if followed by fdatasync of its range); other flags give
 * -EINVAL. A kernel or file system that refuses RWF_DSYNC fails the write
 * with -EOPNOTSUPP (or -EINVAL) without writing. iov must stay valid until
 * the call returns (it lives on the caller's stack). Coroutine context only.
 */
COBLK_API int64_t coroutine_fn aio_co_io(AioEngine *e, AioIoOp op, int fd, int64_t offset,
                                         const struct iovec *iov, int iovcnt, int mode,
                                         int64_t len);

COBLK_API int64_t coroutine_fn aio_co_preadv(AioEngine *e, int fd, int64_t offset,
                                             const struct iovec *iov, int iovcnt);
COBLK_API int64_t coroutine_fn aio_co_pwritev(AioEngine *e, int fd, int64_t offset,
                                              const struct iovec *iov, int iovcnt);
/** aio_co_pwritev() with pwritev2(2) flags rwf (0 or RWF_DSYNC, see aio_co_io()). */
COBLK_API int64_t coroutine_fn aio_co_pwritev2(AioEngine *e, int fd, int64_t offset,
                                               const struct iovec *iov, int iovcnt, int rwf);
COBLK_API int coroutine_fn aio_co_fdatasync(AioEngine *e, int fd);
COBLK_API int coroutine_fn aio_co_fsync(AioEngine *e, int fd);
COBLK_API int coroutine_fn aio_co_fallocate(AioEngine *e, int fd, int mode, int64_t offset,
                                            int64_t len);

/**
 * Plugging: between plug and the matching unplug, submissions of every engine
 * of ctx are held and go to the kernel together at unplug. Nestable.
 */
COBLK_API void aio_io_plug(AioContext *ctx);
COBLK_API void aio_io_unplug(AioContext *ctx);

/* --------------------------------------------------------------------- */
/* Thread pool: runs any blocking call off the loop thread.               */

typedef int64_t ThreadPoolFunc(void *opaque);

/**
 * Runs fn(opaque) on one of ctx's worker threads and returns its result to
 * the calling coroutine (which yields meanwhile). The pool has at most
 * aio_thread_pool_set_max() threads (default 64); extra work waits in a queue.
 */
COBLK_API int64_t coroutine_fn thread_pool_co_run(AioContext *ctx, ThreadPoolFunc *fn,
                                                  void *opaque);
/** Sets the maximum number of worker threads of ctx's pool (>= 1). */
COBLK_API void aio_thread_pool_set_max(AioContext *ctx, int max_threads);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_AIO_IO_H */
