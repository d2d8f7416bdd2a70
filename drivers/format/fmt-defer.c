/*
 * Deferred table updates shared by the format drivers (see fmt-defer.h).
 */
#include <errno.h>
#include <stdlib.h>

#include "drivers/format/fmt-defer.h"

void fmt_defer_init(FmtDefer *d)
{
    fmt_defer_init_cap(d, FMT_DEFER_MAX);
}

void fmt_defer_init_cap(FmtDefer *d, uint32_t cap)
{
    d->n = 0;
    d->cap = cap == 0 ? 1 : cap > FMT_DEFER_CAP_MAX ? FMT_DEFER_CAP_MAX : cap;
}

bool fmt_defer_has(const FmtDefer *d, uint64_t u)
{
    for (uint32_t i = 0; i < d->n; i++) {
        if (d->unit[i] == u) {
            return true;
        }
    }
    return false;
}

bool fmt_defer_has_room(const FmtDefer *d, uint64_t first, uint32_t count)
{
    uint32_t need = 0;

    for (uint32_t k = 0; k < count; k++) {
        need += !fmt_defer_has(d, first + k);
    }
    return d->n + need <= fmt_defer_cap(d);
}

int fmt_defer_add(FmtDefer *d, uint64_t first, uint32_t count)
{
    if (!fmt_defer_has_room(d, first, count)) {
        return -ENOSPC;
    }
    for (uint32_t k = 0; k < count; k++) {
        if (!fmt_defer_has(d, first + k)) {
            d->unit[d->n++] = first + k;
        }
    }
    return 0;
}

static int fmt_defer_cmp(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

int coroutine_fn fmt_defer_commit(FmtDefer *d, BdrvChild *data, FmtDeferWriteFn write_fn,
                                  void *opaque)
{
    uint32_t i = 0;
    int ret;

    if (d->n == 0) {
        return 0;
    }
    ret = bdrv_co_flush(data->bs); /* the data the units map is durable first */
    if (ret < 0) {
        return ret;
    }
    qsort(d->unit, d->n, sizeof(d->unit[0]), fmt_defer_cmp);
    while (i < d->n) {
        uint32_t j = i + 1;

        while (j < d->n && d->unit[j] == d->unit[j - 1] + 1) {
            j++;
        }
        ret = write_fn(opaque, d->unit[i], j - i);
        if (ret < 0) {
            return ret; /* all stay dirty: the next commit writes them again */
        }
        i = j;
    }
    d->n = 0;
    d->commits++;
    return 0;
}
