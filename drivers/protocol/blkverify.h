/* blkverify internals shared with tests. Not installed. */
#ifndef COBLK_DRIVERS_BLKVERIFY_H
#define COBLK_DRIVERS_BLKVERIFY_H

#include <coblk/block-driver.h>

/* Reads that differed from the reference, at the first blkverify node at or below bs. */
uint64_t blkverify_mismatches(BlockDriverState *bs);

#endif
