/*
 * coblk - common definitions shared by every public header.
 *
 * Export macro, the coroutine_fn annotation, and the Error type used on
 * open/create/probe paths.
 */
#ifndef COBLK_COMMON_H
#define COBLK_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Marks a symbol that libcoblk exports (everything else is hidden). */
#if defined(COBLK_BUILDING_LIBRARY)
#define COBLK_API __attribute__((visibility("default")))
#else
#define COBLK_API
#endif

/**
 * Annotates a function that may only be called from coroutine context
 * (it may yield). Purely documentary; static checkers can key on it.
 */
#define coroutine_fn

#if defined(__GNUC__)
#define COBLK_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define COBLK_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define COBLK_PRINTF(fmt, args)
#define COBLK_WARN_UNUSED
#endif

/**
 * A human-readable error. Open, create, probe and tool paths take an
 * `Error **errp` as their last argument; on failure they set *errp (if errp
 * is non-NULL and *errp is NULL) to a message naming what is wrong.
 */
typedef struct Error Error;

/** Sets *errp to a new error with a printf-style message. errp may be NULL. */
COBLK_API void error_setg(Error **errp, const char *fmt, ...) COBLK_PRINTF(2, 3);
/** As error_setg(), appending ": " and strerror(-neg_errno). */
COBLK_API void error_setg_errno(Error **errp, int neg_errno, const char *fmt, ...)
    COBLK_PRINTF(3, 4);
/** Prepends a printf-style prefix to an existing error's message. */
COBLK_API void error_prepend(Error **errp, const char *fmt, ...) COBLK_PRINTF(2, 3);
/** Moves local_err into *dst (or frees it when dst is NULL or already set). */
COBLK_API void error_propagate(Error **dst, Error *local_err);
/** The message of an error. */
COBLK_API const char *error_get_pretty(const Error *err);
/** Frees an error; NULL is allowed. */
COBLK_API void error_free(Error *err);

/**
 * Warnings (for example an I/O engine fallback) go to a handler the embedder
 * may install; the default prints "coblk: warning: <msg>" to stderr.
 * Passing fn == NULL restores the default.
 */
typedef void CoblkWarnFn(void *opaque, const char *msg);
COBLK_API void coblk_set_warn_handler(CoblkWarnFn *fn, void *opaque);
/** Emits a warning through the installed handler. */
COBLK_API void coblk_warn(const char *fmt, ...) COBLK_PRINTF(1, 2);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_COMMON_H */
