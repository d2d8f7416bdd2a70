/*
 * vmdk: telling a leftover of an interrupted grow (see grow.c) from a file
 * a user owns, before a grow takes the name of a new extent file.
 *
 * A grow creates and syncs its new extent files before it writes the
 * descriptor naming them; a crash in between leaves those files behind,
 * named as the next grow would name its own. Such a file is replaced only
 * if all of this holds, else the grow is refused naming the file:
 *  - it is a regular file (lstat: a symlink is refused, never followed);
 *  - the image does not use it: no descriptor extent line names it, and it
 *    is not (as a hard link) the descriptor or one of the extent files;
 *  - it is no longer than the extent file the grow creates, and each of its
 *    bytes is the byte that file has at that offset or zero. So it holds
 *    nothing but (a torn copy of) what the grow itself writes: a header,
 *    grain directories and empty grain tables for a sparse extent, zeroes
 *    for a flat one.
 * To compare, the extent file is first created under a unique temporary
 * sibling name (mkstemp, never an existing name); if the leftover passes,
 * the temporary file is renamed over it (atomic: the name holds the
 * leftover or the complete new extent, never something in between), else
 * it is removed. The comparison reads only the leftover's data regions
 * (SEEK_DATA / SEEK_HOLE), at most VMDK_STRAY_MAX_DATA bytes (a leftover
 * holds a few hundred KiB of metadata; a file with more data is refused):
 * bounded time and memory whatever the file holds.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "drivers/format/vmdk/vmdk-int.h"

#define VMDK_STRAY_MAX_DATA (64ULL << 20)
#define STRAY_CHUNK (1U << 20)

/* Whether st is the file at path (same device and inode). */
static bool same_file(const struct stat *st, const char *path)
{
    struct stat o;

    return path && stat(path, &o) == 0 && o.st_dev == st->st_dev && o.st_ino == st->st_ino;
}

/* Names the reason the image uses the file st named name, or NULL if it does not. */
static const char *used_by_image(BlockDriverState *bs, const char *name, const struct stat *st)
{
    BDRVVmdkState *s = bs->opaque;

    for (int i = 0; i < s->desc.n_ext; i++) {
        if (s->desc.ext[i].filename && strcmp(s->desc.ext[i].filename, name) == 0) {
            return "the descriptor names it";
        }
    }
    if (same_file(st, bs->file->bs->filename)) {
        return "it is the image's descriptor";
    }
    for (int i = 0; i < s->n_extents; i++) {
        if (s->extents[i]->child && same_file(st, s->extents[i]->child->bs->filename)) {
            return "it is one of the image's extent files";
        }
    }
    return NULL;
}

/* Reads len bytes at off of fd into buf, zero-filling past the end of the file. */
static int read_at(int fd, uint8_t *buf, size_t len, off_t off)
{
    size_t got = 0;

    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, off + (off_t)got);

        if (n < 0) {
            return -errno;
        }
        if (n == 0) {
            memset(buf + got, 0, len - got);
            break;
        }
        got += (size_t)n;
    }
    return 0;
}

/*
 * 0 if every byte of the file open as fd (size bytes) is the byte of ref at
 * its offset or zero; 1 if one is not; 2 if it holds more than
 * VMDK_STRAY_MAX_DATA bytes of data; -errno on a read error.
 */
static int only_ref_or_zero(int fd, int ref, off_t size)
{
    uint8_t *a = malloc(STRAY_CHUNK), *b = malloc(STRAY_CHUNK);
    uint64_t read_total = 0;
    off_t off = 0;
    int ret = 0;

    if (!a || !b) {
        ret = -ENOMEM;
        goto out;
    }
    while (off < size && ret == 0) {
        off_t data = lseek(fd, off, SEEK_DATA), hole;

        if (data < 0) {
            ret = errno == ENXIO ? 0 : -errno; /* ENXIO: no data past off */
            break;
        }
        hole = lseek(fd, data, SEEK_HOLE);
        hole = hole < 0 || hole > size ? size : hole;
        for (off = data; off < hole && ret == 0;) {
            size_t n = hole - off < (off_t)STRAY_CHUNK ? (size_t)(hole - off) : STRAY_CHUNK;

            read_total += n;
            if (read_total > VMDK_STRAY_MAX_DATA) {
                ret = 2;
                break;
            }
            ret = read_at(fd, a, n, off);
            ret = ret ? ret : read_at(ref, b, n, off);
            for (size_t i = 0; ret == 0 && i < n; i++) {
                ret = a[i] && a[i] != b[i];
            }
            off += (off_t)n;
        }
    }
out:
    free(a);
    free(b);
    return ret;
}

/* Compares the leftover at path (st) with the fresh extent file tmp; errp names why not. */
static int matches_fresh(const char *path, const struct stat *st, const char *tmp,
                         Error **errp)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC), ref, ret;
    struct stat rst;

    if (fd < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "vmdk: cannot grow: could not open the existing '%s'",
                         path);
        return ret;
    }
    ref = open(tmp, O_RDONLY | O_CLOEXEC);
    if (ref < 0 || fstat(ref, &rst) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "vmdk: cannot grow: could not read '%s'", tmp);
        goto out;
    }
    if (st->st_size > rst.st_size) {
        error_setg(errp, "vmdk: cannot grow: '%s' exists already and is larger (%lld bytes) "
                   "than the new extent file (%lld bytes): not a leftover of an interrupted "
                   "resize; move it away", path, (long long)st->st_size,
                   (long long)rst.st_size);
        ret = -EEXIST;
        goto out;
    }
    ret = only_ref_or_zero(fd, ref, st->st_size);
    if (ret < 0) {
        error_setg_errno(errp, -ret, "vmdk: cannot grow: could not read '%s'", path);
    } else if (ret > 0) {
        error_setg(errp, "vmdk: cannot grow: '%s' exists already and %s: not a leftover of "
                   "an interrupted resize; move it away", path, ret == 1 ?
                   "holds data the new extent file would not" :
                   "holds more data than a leftover could");
        ret = -EEXIST;
    }
out:
    if (ref >= 0) {
        close(ref);
    }
    close(fd);
    return ret;
}

int coroutine_fn vmdk_take_stray_extent(BlockDriverState *bs, const char *path,
                                        const char *name, uint64_t sectors, bool sparse,
                                        bool zeroed, Error **errp)
{
    struct stat st;
    const char *why;
    char *tmp;
    int fd, ret;

    if (lstat(path, &st) < 0) {
        if (errno == ENOENT) {
            return 0;
        }
        ret = -errno;
        error_setg_errno(errp, -ret, "vmdk: cannot grow '%s': could not look up '%s'",
                         bs->filename, path);
        return ret;
    }
    why = !S_ISREG(st.st_mode) ? "it is not a regular file" : used_by_image(bs, name, &st);
    if (why) {
        error_setg(errp, "vmdk: cannot grow '%s': its new extent file '%s' exists already and "
                   "%s", bs->filename, path, why);
        return -EEXIST;
    }
    if (asprintf(&tmp, "%s.coblk-XXXXXX", path) < 0) {
        return -ENOMEM;
    }
    fd = mkstemp(tmp);
    if (fd < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "vmdk: cannot grow '%s': could not create a temporary "
                         "file beside '%s'", bs->filename, path);
        free(tmp);
        return ret;
    }
    close(fd);
    ret = vmdk_create_extent_file(tmp, sectors, sparse, zeroed, errp);
    ret = ret ? ret : matches_fresh(path, &st, tmp, errp);
    if (ret == 0 && rename(tmp, path) < 0) {
        ret = -errno;
        error_setg_errno(errp, -ret, "vmdk: cannot grow '%s': could not replace '%s'",
                         bs->filename, path);
    }
    if (ret < 0) {
        unlink(tmp);
    }
    free(tmp);
    return ret < 0 ? ret : 1;
}
