/*
 * coblk-emu-glib: an emulator-like program on a GLib main loop.
 *
 * The loop holds four sources, as an emulator's main loop would:
 *  - coblk's GSource (aio_get_g_source): runs the block layer's completions,
 *    bottom halves and timers;
 *  - a "device register poll" source: its prepare/check look at the virtual
 *    disk queues' doorbell registers, its dispatch submits the new requests;
 *  - the "guest interrupt": an eventfd that I/O completions signal; its
 *    handler is the guest driver (verify reads, refill the queues);
 *  - a 10 ms GLib timer: the scenario clock (live reopen, drain, stop).
 *
 *   coblk-emu-glib [--seconds S] [--queues N] [--depth D] ... (see --help)
 *
 * Exits 0 only if every request completed, every read matched the pattern of
 * the last write to its block, and the reopens and the drain succeeded.
 */
#include <glib-unix.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <coblk/aio-glib.h>

#include "vdisk.h"

typedef struct Emu {
    VDisk *disk;
    GMainLoop *loop;
    int irq_fd;
} Emu;

/* The completion-to-guest-interrupt path: completions signal an eventfd. */
static void raise_irq(void *opaque)
{
    Emu *e = opaque;
    uint64_t one = 1;

    if (write(e->irq_fd, &one, sizeof(one)) != sizeof(one)) {
        perror("eventfd write");
    }
}

static gboolean guest_irq_handler(gint fd, GIOCondition cond, gpointer opaque)
{
    Emu *e = opaque;
    uint64_t n;

    if (read(fd, &n, sizeof(n)) == sizeof(n)) {
        vdisk_guest_interrupt(e->disk);
    }
    if (vdisk_finished(e->disk)) {
        g_main_loop_quit(e->loop);
    }
    return G_SOURCE_CONTINUE;
}

/* A GSource that polls the device's doorbell registers. */
typedef struct DevicePoll {
    GSource source;
    Emu *emu;
} DevicePoll;

static gboolean device_prepare(GSource *source, gint *timeout_ms)
{
    *timeout_ms = -1;
    return vdisk_device_pending(((DevicePoll *)source)->emu->disk);
}

static gboolean device_check(GSource *source)
{
    return vdisk_device_pending(((DevicePoll *)source)->emu->disk);
}

static gboolean device_dispatch(GSource *source, GSourceFunc cb, gpointer data)
{
    vdisk_device_process(((DevicePoll *)source)->emu->disk);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs device_funcs = {
    .prepare = device_prepare,
    .check = device_check,
    .dispatch = device_dispatch,
};

static gboolean scenario_timer(gpointer opaque)
{
    Emu *e = opaque;

    vdisk_tick(e->disk);
    if (vdisk_finished(e->disk)) {
        g_main_loop_quit(e->loop);
    }
    return G_SOURCE_CONTINUE;
}

int main(int argc, char **argv)
{
    VDiskConfig cfg;
    Emu e = { 0 };
    Error *err = NULL;
    AioContext *ctx;
    GSource *aio_src, *dev_src;
    guint irq_id, timer_id;
    int rc;

    if (vdisk_parse_args(argc, argv, &cfg) < 0) {
        return 2;
    }
    ctx = aio_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "coblk-emu-glib: %s\n", error_get_pretty(err));
        return 1;
    }
    aio_context_set_current(ctx); /* the disk's nodes live in this context */
    e.irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    e.disk = vdisk_open(&cfg, raise_irq, &e);
    if (!e.disk || e.irq_fd < 0) {
        return 1;
    }
    e.loop = g_main_loop_new(NULL, FALSE);
    aio_src = aio_get_g_source(ctx);
    g_source_attach(aio_src, NULL);
    dev_src = g_source_new(&device_funcs, sizeof(DevicePoll));
    ((DevicePoll *)dev_src)->emu = &e;
    g_source_attach(dev_src, NULL);
    irq_id = g_unix_fd_add(e.irq_fd, G_IO_IN, guest_irq_handler, &e);
    timer_id = g_timeout_add(10, scenario_timer, &e);

    vdisk_start(e.disk);
    g_main_loop_run(e.loop);

    g_source_remove(timer_id);
    g_source_remove(irq_id);
    g_source_destroy(dev_src);
    g_source_unref(dev_src);
    rc = vdisk_finish(e.disk, "glib"); /* read-back polls ctx itself */
    g_source_destroy(aio_src);
    g_source_unref(aio_src);
    g_main_loop_unref(e.loop);
    close(e.irq_fd);
    aio_context_set_current(NULL);
    aio_context_unref(ctx);
    return rc;
}
