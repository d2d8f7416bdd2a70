/*
 * The dmg driver's parts (not installed): the block map sources (XML plist
 * or resource fork, plist.c) hand each "mish" block they hold to the
 * chunk table builder (dmg.c).
 */
#ifndef COBLK_DRIVERS_FORMAT_DMG_H
#define COBLK_DRIVERS_FORMAT_DMG_H

#include <stddef.h>
#include <stdint.h>

#include <coblk/common.h>

/* Limits for untrusted images. */
#define DMG_PLIST_MAX (16u << 20)       /* XML plist or resource fork bytes */
#define DMG_MISH_MAX 65536u             /* mish blocks in one image */

/** Called with each mish block (the decoded bytes); returns 0 or -errno with errp set. */
typedef int (*DmgMishFn)(void *opaque, const uint8_t *mish, size_t len, Error **errp);

/**
 * Finds the "blkx" array of the XML plist text (len bytes, NUL-terminated
 * at len) and passes the base64-decoded contents of each <data> element in
 * it to fn. file names the image in errors. Returns 0, or -errno with errp
 * set (no blkx array, bad base64, too many blocks, or fn's error).
 */
int dmg_plist_foreach_mish(const char *file, const char *xml, size_t len, DmgMishFn fn,
                           void *opaque, Error **errp);

/**
 * Passes each resource of the resource fork (len bytes) whose data starts
 * with the "mish" magic to fn. Returns 0, or -errno with errp set.
 */
int dmg_rsrc_foreach_mish(const char *file, const uint8_t *rsrc, size_t len, DmgMishFn fn,
                          void *opaque, Error **errp);

#endif /* COBLK_DRIVERS_FORMAT_DMG_H */
