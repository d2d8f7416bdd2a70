/*
 * GLib adapter (libcoblk-glib): a GSource that drives an AioContext from a
 * GMainLoop through the one-fd interface (aio_get_fd/aio_prepare/aio_dispatch).
 */
#include <glib.h>

#include "coblk-config.h"
#include <coblk/aio-glib.h>

typedef struct AioSource {
    GSource source;
    AioContext *ctx;
    gpointer tag;
} AioSource;

static gboolean aio_source_prepare(GSource *source, gint *timeout_ms)
{
    AioSource *s = (AioSource *)source;
    int64_t ns = aio_prepare(s->ctx);

    if (ns < 0) {
        *timeout_ms = -1;
    } else {
        int64_t ms = (ns + 999999) / 1000000; /* round up: never wake early */

        *timeout_ms = ms > G_MAXINT ? G_MAXINT : (gint)ms;
    }
    return ns == 0;
}

static gboolean aio_source_check(GSource *source)
{
    AioSource *s = (AioSource *)source;

    if (g_source_query_unix_fd(source, s->tag) & G_IO_IN) {
        return TRUE;
    }
    return aio_prepare(s->ctx) == 0;
}

static gboolean aio_source_dispatch(GSource *source, GSourceFunc cb, gpointer data)
{
    AioSource *s = (AioSource *)source;

    aio_dispatch(s->ctx);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs aio_source_funcs = {
    .prepare = aio_source_prepare,
    .check = aio_source_check,
    .dispatch = aio_source_dispatch,
};

GSource *aio_get_g_source(AioContext *ctx)
{
    GSource *source = g_source_new(&aio_source_funcs, sizeof(AioSource));
    AioSource *s = (AioSource *)source;

    s->ctx = ctx;
    s->tag = g_source_add_unix_fd(source, aio_get_fd(ctx), G_IO_IN);
    g_source_set_name(source, "coblk-aio");
    return source;
}
