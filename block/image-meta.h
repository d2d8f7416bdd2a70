/*
 * Helpers of block/image-meta.c that drivers' rename callbacks share.
 * Not installed.
 */
#ifndef COBLK_BLOCK_IMAGE_META_H
#define COBLK_BLOCK_IMAGE_META_H

#include "block/block-int.h"

/* Renames from to to, failing with -EEXIST if to exists (link + unlink). */
int coblk_rename_noreplace(const char *from, const char *to);
/* fsyncs the directory holding path; returns 0 or -errno. */
int coblk_sync_dir_of(const char *path);
/* Sets bs->filename to new_name if it was old. */
void coblk_set_node_filename(BlockDriverState *bs, const char *old, const char *new_name);
/*
 * Renames tmp over path, the file of the protocol node bs, which keeps its
 * image locks across (BlockDriver.replace_file). -ENOTSUP if bs's driver
 * cannot: the caller then renames tmp itself.
 */
int bdrv_replace_file(BlockDriverState *bs, const char *tmp, const char *path);

#endif /* COBLK_BLOCK_IMAGE_META_H */
