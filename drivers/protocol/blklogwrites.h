/* blklogwrites internals shared with tests and tools. Not installed. */
#ifndef COBLK_DRIVERS_BLKLOGWRITES_H
#define COBLK_DRIVERS_BLKLOGWRITES_H

#include <coblk/block-driver.h>

/*
 * Appends a MARK entry named name (1..4096 bytes) to the log of the first
 * blklogwrites node at or below bs. Plain code only. Returns 0, -EINVAL
 * (also for a name starting with the reserved "coblk:", logwrites-format.h),
 * -ENOTSUP (no blklogwrites node) or the log write's error.
 */
int blklogwrites_mark(BlockDriverState *bs, const char *name);

#endif
