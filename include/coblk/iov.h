/*
 * coblk - I/O vectors.
 *
 * An IOVector is a scatter/gather list plus its total size. Requests carry
 * an IOVector and an offset into it, so splitting and padding a request never
 * copies data; sub-ranges are described by slicing.
 */
#ifndef COBLK_IOV_H
#define COBLK_IOV_H

#include <sys/uio.h>

#include <coblk/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct IOVector {
    struct iovec *iov;
    int niov;
    int nalloc;       /**< -1: iov is borrowed (external or local_iov), never freed */
    size_t size;
    struct iovec local_iov; /**< storage for a single-buffer vector */
} IOVector;

/** Initialises an empty vector that grows on iovector_add() (allocates). */
COBLK_API void iovector_init(IOVector *v, int alloc_hint);
/** Wraps one buffer, without allocating. */
COBLK_API void iovector_init_buf(IOVector *v, void *buf, size_t len);
/** Wraps an existing iovec array, without allocating or copying. */
COBLK_API void iovector_init_external(IOVector *v, struct iovec *iov, int niov);
/** Appends a buffer; only for vectors from iovector_init(). */
COBLK_API void iovector_add(IOVector *v, void *base, size_t len);
/** Appends the bytes [offset, offset + bytes) of src (by reference). */
COBLK_API void iovector_concat(IOVector *dst, const IOVector *src, size_t offset, size_t bytes);
/** Empties a vector for reuse (keeps its allocation). */
COBLK_API void iovector_reset(IOVector *v);
/** Frees the array of a vector from iovector_init(). */
COBLK_API void iovector_destroy(IOVector *v);

/** Copies bytes from buf into v at offset; returns bytes copied. */
COBLK_API size_t iovector_from_buf(const IOVector *v, size_t offset, const void *buf,
                                   size_t bytes);
/** Copies bytes from v at offset into buf; returns bytes copied. */
COBLK_API size_t iovector_to_buf(const IOVector *v, size_t offset, void *buf, size_t bytes);
/** Fills bytes of v at offset with c; returns bytes filled. */
COBLK_API size_t iovector_memset(const IOVector *v, size_t offset, int c, size_t bytes);
/** True if the bytes [offset, offset + bytes) of v are all zero. */
COBLK_API bool iovector_is_zero(const IOVector *v, size_t offset, size_t bytes);
/** Compares two vectors byte by byte; returns the first differing offset or -1. */
COBLK_API int64_t iovector_compare(const IOVector *a, const IOVector *b);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_IOV_H */
