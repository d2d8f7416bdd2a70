/*
 * The "file" driver's replace_file: a format that rewrites a whole small
 * file by writing a temporary sibling and renaming it over (vmdk's
 * descriptor file, drivers/format/vmdk/desc-write.c) keeps the node's image
 * locks on the file that has the name.
 *
 * The image locks are OFD locks held by the node's open file description.
 * After a plain rename the node would still hold them on the old inode (now
 * unlinked), and another process could open the new file under the image's
 * name while the image is in use. So the temporary file is opened with the
 * node's flags and locked first (nobody else knows it yet, so this cannot
 * conflict), then renamed, and then it replaces the node's file under the
 * same fd numbers with dup2(): a request in flight on the old file ends
 * there (the kernel holds its reference), later ones use the new file, and
 * the old description closes, dropping its locks on the old inode.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include "file-int.h"

int file_replace_file(BlockDriverState *bs, const char *tmp, const char *path)
{
    BDRVFileState *s = bs->opaque;
    int fd, ret;

    if (s->is_device) {
        return -ENOTSUP;
    }
    if (s->reopen_fd >= 0) {
        return -EBUSY; /* a reopen is staged on the old file */
    }
    fd = open(tmp, s->open_flags & ~(O_CREAT | O_EXCL | O_TRUNC));
    if (fd < 0) {
        return -errno;
    }
    if (s->use_lock) {
        ret = file_lock_apply(fd, s->perm, s->shared, path, NULL);
        if (ret < 0) {
            goto out_close;
        }
    }
    if (rename(tmp, path) < 0) {
        ret = -errno;
        goto out_close;
    }
    /*
     * dup2 does not fail on valid descriptors but for EINTR/EBUSY races
     * with a concurrent open; then the node keeps the old file, as a plain
     * rename would leave it, and the error says so.
     */
    ret = 0;
    if (s->lock_fd != s->fd && dup2(fd, s->lock_fd) < 0) {
        ret = -errno;
    }
    if (ret == 0 && dup2(fd, s->fd) < 0) {
        ret = -errno;
    }
out_close:
    close(fd);
    return ret;
}
