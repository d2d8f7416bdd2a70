/*
 * Error objects and warnings.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include <coblk/common.h>

struct Error {
    char *msg;
};

static char *vformat(const char *fmt, va_list ap)
{
    char *s = NULL;

    if (vasprintf(&s, fmt, ap) < 0) {
        abort();
    }
    return s;
}

static void error_set_msg(Error **errp, char *msg)
{
    Error *err;

    if (!errp || *errp) {
        free(msg);
        return;
    }
    err = malloc(sizeof(*err));
    if (!err) {
        abort();
    }
    err->msg = msg;
    *errp = err;
}

void error_setg(Error **errp, const char *fmt, ...)
{
    va_list ap;

    if (!errp || *errp) {
        return;
    }
    va_start(ap, fmt);
    error_set_msg(errp, vformat(fmt, ap));
    va_end(ap);
}

void error_setg_errno(Error **errp, int neg_errno, const char *fmt, ...)
{
    va_list ap;
    char *head;
    char *msg;

    if (!errp || *errp) {
        return;
    }
    va_start(ap, fmt);
    head = vformat(fmt, ap);
    va_end(ap);
    if (asprintf(&msg, "%s: %s", head, strerror(neg_errno < 0 ? -neg_errno : neg_errno)) < 0) {
        abort();
    }
    free(head);
    error_set_msg(errp, msg);
}

void error_prepend(Error **errp, const char *fmt, ...)
{
    va_list ap;
    char *prefix;
    char *msg;

    if (!errp || !*errp) {
        return;
    }
    va_start(ap, fmt);
    prefix = vformat(fmt, ap);
    va_end(ap);
    if (asprintf(&msg, "%s%s", prefix, (*errp)->msg) < 0) {
        abort();
    }
    free(prefix);
    free((*errp)->msg);
    (*errp)->msg = msg;
}

void error_propagate(Error **dst, Error *local_err)
{
    if (!local_err) {
        return;
    }
    if (dst && !*dst) {
        *dst = local_err;
        return;
    }
    error_free(local_err);
}

const char *error_get_pretty(const Error *err)
{
    return err ? err->msg : "";
}

void error_free(Error *err)
{
    if (err) {
        free(err->msg);
        free(err);
    }
}

static CoblkWarnFn *warn_fn;
static void *warn_opaque;

void coblk_set_warn_handler(CoblkWarnFn *fn, void *opaque)
{
    warn_fn = fn;
    warn_opaque = opaque;
}

void coblk_warn(const char *fmt, ...)
{
    va_list ap;
    char *msg;

    va_start(ap, fmt);
    msg = vformat(fmt, ap);
    va_end(ap);
    if (warn_fn) {
        warn_fn(warn_opaque, msg);
    } else {
        fprintf(stderr, "coblk: warning: %s\n", msg);
    }
    free(msg);
}
