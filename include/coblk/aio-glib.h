/*
 * coblk - GLib main-loop adapter (libcoblk-glib).
 *
 * Attach the returned GSource to a GMainContext and the AioContext's fd
 * handlers, BHs, timers and I/O completions run from that GLib loop.
 */
#ifndef COBLK_AIO_GLIB_H
#define COBLK_AIO_GLIB_H

#include <glib.h>

#include <coblk/aio.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Returns a new reference to a GSource that drives ctx. Attach it with
 * g_source_attach(); unref it when done. The context must not also be
 * polled by aio_poll() from another thread.
 */
COBLK_API GSource *aio_get_g_source(AioContext *ctx);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_AIO_GLIB_H */
