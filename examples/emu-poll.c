/*
 * coblk-emu-poll: the same virtual disk as coblk-emu-glib, embedded in a
 * plain poll() main loop through coblk's one-fd interface:
 *
 *   fds = { aio_get_fd(ctx), guest interrupt eventfd, 10 ms timerfd }
 *   loop: device register poll -> aio_prepare() gives the sleep bound ->
 *         poll() -> aio_dispatch() -> guest interrupt -> scenario clock
 *
 *   coblk-emu-poll [--seconds S] [--queues N] [--depth D] ... (see --help)
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "vdisk.h"

static void raise_irq(void *opaque)
{
    uint64_t one = 1;

    if (write(*(int *)opaque, &one, sizeof(one)) != sizeof(one)) {
        perror("eventfd write");
    }
}

static bool drain_fd(int fd)
{
    uint64_t n;

    return read(fd, &n, sizeof(n)) == sizeof(n);
}

/* Milliseconds poll() may sleep: aio_prepare()'s bound, 0 if the device has work. */
static int sleep_ms(AioContext *ctx, VDisk *d)
{
    int64_t ns = aio_prepare(ctx);

    if (vdisk_device_pending(d)) {
        return 0;
    }
    if (ns < 0) {
        return -1;
    }
    return ns > INT32_MAX * 1000000LL ? INT32_MAX : (int)((ns + 999999) / 1000000);
}

static void run(AioContext *ctx, VDisk *d, int irq_fd, int timer_fd)
{
    struct pollfd fds[3] = {
        { .fd = aio_get_fd(ctx), .events = POLLIN },
        { .fd = irq_fd, .events = POLLIN },
        { .fd = timer_fd, .events = POLLIN },
    };

    vdisk_start(d);
    while (!vdisk_finished(d)) {
        if (vdisk_device_pending(d)) { /* the device polls its doorbell registers */
            vdisk_device_process(d);
        }
        if (poll(fds, 3, sleep_ms(ctx, d)) < 0 && errno != EINTR) {
            perror("poll");
            break;
        }
        aio_dispatch(ctx); /* completions: used rings, guest interrupt eventfd */
        if (drain_fd(irq_fd)) {
            vdisk_guest_interrupt(d);
        }
        if (drain_fd(timer_fd)) {
            vdisk_tick(d);
        }
    }
}

int main(int argc, char **argv)
{
    struct itimerspec every_10ms = { .it_interval = { 0, 10000000 }, .it_value = { 0, 10000000 } };
    VDiskConfig cfg;
    Error *err = NULL;
    AioContext *ctx;
    VDisk *d;
    int irq_fd, timer_fd, rc;

    if (vdisk_parse_args(argc, argv, &cfg) < 0) {
        return 2;
    }
    ctx = aio_context_new(&err);
    if (!ctx) {
        fprintf(stderr, "coblk-emu-poll: %s\n", error_get_pretty(err));
        return 1;
    }
    aio_context_set_current(ctx);
    irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (irq_fd < 0 || timer_fd < 0 || timerfd_settime(timer_fd, 0, &every_10ms, NULL) < 0) {
        fprintf(stderr, "coblk-emu-poll: %s\n", strerror(errno));
        return 1;
    }
    d = vdisk_open(&cfg, raise_irq, &irq_fd);
    if (!d) {
        return 1;
    }
    run(ctx, d, irq_fd, timer_fd);
    rc = vdisk_finish(d, "poll");
    close(irq_fd);
    close(timer_fd);
    aio_context_set_current(NULL);
    aio_context_unref(ctx);
    return rc;
}
