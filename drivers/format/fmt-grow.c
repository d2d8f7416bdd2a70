/*
 * Growing an image file ahead of allocations (see fmt-grow.h).
 */
#include <errno.h>

#include "block/bytes.h"
#include "drivers/format/fmt-grow.h"

int coroutine_fn fmt_co_grow_init(BdrvChild *file, FmtGrow *g, uint64_t step, uint64_t align,
                                  PreallocMode mode)
{
    *g = (FmtGrow){ .step = step, .align = align ? align : 1, .mode = mode };
    return fmt_co_grow_reset(file, g);
}

int coroutine_fn fmt_co_grow_reset(BdrvChild *file, FmtGrow *g)
{
    int64_t len = bdrv_co_getlength(file->bs);

    if (len < 0) {
        g->file_len = UINT64_MAX; /* unknown: no part of the file reads zero for sure */
        g->zero_from = UINT64_MAX;
        return (int)len;
    }
    g->file_len = (uint64_t)len;
    g->zero_from = (uint64_t)len;
    return 0;
}

/* Sets the file's length to len with mode; [old length, len) then reads zero. */
static int coroutine_fn fmt_grow_set(BdrvChild *file, FmtGrow *g, uint64_t len,
                                     PreallocMode mode)
{
    int ret = bdrv_co_truncate(file, (int64_t)len, true, mode, 0, NULL);

    if (ret < 0) {
        return ret;
    }
    g->file_len = len;
    g->grows++;
    return 0;
}

int coroutine_fn fmt_co_grow_to(BdrvChild *file, FmtGrow *g, uint64_t end, uint64_t max)
{
    uint64_t target = end;

    if (end <= g->file_len) {
        return 0;
    }
    if (g->step && end <= UINT64_MAX - g->step - g->align) {
        target = round_up_u64(end + g->step, g->align);
        target = target > max ? max : target;
        target = target < end ? end : target;
    }
    if (target > end && fmt_grow_set(file, g, target, g->mode) == 0) {
        g->grown = true;
        return 0;
    }
    /* No step, or it could not be had: just what is needed, sparse. */
    return fmt_grow_set(file, g, end, PREALLOC_MODE_OFF);
}

uint64_t fmt_grow_unzeroed(const FmtGrow *g, uint64_t from, uint64_t to)
{
    if (from >= to || from >= g->zero_from) {
        return 0;
    }
    return (to < g->zero_from ? to : g->zero_from) - from;
}

void fmt_grow_written(FmtGrow *g, uint64_t to)
{
    if (to > g->zero_from) {
        g->zero_from = to < g->file_len ? to : g->file_len;
    }
}

void fmt_grow_appended(FmtGrow *g, uint64_t to)
{
    if (to > g->file_len) {
        g->file_len = to;
    }
    fmt_grow_written(g, to);
}

void fmt_grow_truncated(FmtGrow *g, uint64_t len)
{
    g->file_len = len;
    g->zero_from = g->zero_from < len ? g->zero_from : len;
}

int coroutine_fn fmt_co_grow_trim(BdrvChild *file, FmtGrow *g, uint64_t keep)
{
    int ret;

    if (!g->grown) {
        return 0;
    }
    if (g->file_len > keep) {
        ret = bdrv_co_truncate(file, (int64_t)keep, true, PREALLOC_MODE_OFF, 0, NULL);
        if (ret < 0) {
            return ret;
        }
        g->file_len = keep;
        g->zero_from = g->zero_from < keep ? g->zero_from : keep;
    }
    g->grown = false;
    return 0;
}
