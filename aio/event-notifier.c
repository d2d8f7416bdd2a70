/*
 * EventNotifier: an eventfd that one thread sets and a loop clears.
 */
#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "coblk-config.h"
#include <coblk/aio.h>

int event_notifier_init(EventNotifier *e, bool active)
{
    e->fd = eventfd(active ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (e->fd < 0) {
        return -errno;
    }
    return 0;
}

void event_notifier_cleanup(EventNotifier *e)
{
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
}

int event_notifier_set(EventNotifier *e)
{
    uint64_t one = 1;
    ssize_t n;

    do {
        n = write(e->fd, &one, sizeof(one));
    } while (n < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: it is set, which is all we want. */
    if (n < 0 && errno != EAGAIN) {
        return -errno;
    }
    return 0;
}

bool event_notifier_test_and_clear(EventNotifier *e)
{
    uint64_t value;
    ssize_t n;

    do {
        n = read(e->fd, &value, sizeof(value));
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(value) && value != 0;
}
