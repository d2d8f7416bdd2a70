/*
 * Image locking for the file and host_device drivers, with open file
 * description (OFD) byte-range locks.
 *
 * Each permission has two lock bytes: holding permission P takes a shared
 * lock on byte FILE_LOCK_PERM_BASE + P, and refusing to share P with others
 * takes a shared lock on byte FILE_LOCK_SHARED_BASE + P. Taking P conflicts
 * with anyone who refuses to share it, and refusing P conflicts with anyone
 * who holds it; both are tested with F_OFD_GETLK for an exclusive lock,
 * which only other open file descriptions can block. These are the bytes
 * QEMU uses, so coblk and QEMU processes see each other's locks.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "file-int.h"

#define FILE_LOCK_PERM_BASE 100
#define FILE_LOCK_SHARED_BASE 200

static const char *const perm_names[FILE_PERM_COUNT] = {
    "consistent read", "write", "write unchanged", "resize",
};

/* Sets (F_RDLCK) or clears (F_UNLCK) the lock on one byte. Returns 0 or -errno. */
static int lock_byte(int fd, off_t byte, short type)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = type,
    };

    return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* Returns 0 if nobody else holds a lock on byte, -EAGAIN if someone does, or -errno. */
static int test_byte(int fd, off_t byte)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = byte,
        .l_len = 1,
        .l_type = F_WRLCK,
    };

    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

bool file_lock_supported(int fd)
{
    return test_byte(fd, FILE_LOCK_PERM_BASE) != -EINVAL;
}

/* Makes fd's lock bytes match perm and shared (no conflict test). */
static int lock_set_bytes(int fd, uint64_t perm, uint64_t shared)
{
    for (int i = 0; i < FILE_PERM_COUNT; i++) {
        uint64_t bit = 1ULL << i;
        int ret;

        ret = lock_byte(fd, FILE_LOCK_PERM_BASE + i, (perm & bit) ? F_RDLCK : F_UNLCK);
        if (ret < 0) {
            return ret;
        }
        ret = lock_byte(fd, FILE_LOCK_SHARED_BASE + i, (shared & bit) ? F_UNLCK : F_RDLCK);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Tests perm and ~shared against other holders; sets errp on a conflict. */
static int lock_check(int fd, uint64_t perm, uint64_t shared, const char *filename,
                      Error **errp)
{
    for (int i = 0; i < FILE_PERM_COUNT; i++) {
        uint64_t bit = 1ULL << i;
        int ret;

        if (perm & bit) {
            ret = test_byte(fd, FILE_LOCK_SHARED_BASE + i);
            if (ret < 0) {
                error_setg(errp, "Failed to get \"%s\" lock\n"
                           "Is another process using the image [%s]?", perm_names[i], filename);
                return ret;
            }
        }
        if (!(shared & bit)) {
            ret = test_byte(fd, FILE_LOCK_PERM_BASE + i);
            if (ret < 0) {
                error_setg(errp, "Failed to get shared \"%s\" lock\n"
                           "Is another process using the image [%s]?", perm_names[i], filename);
                return ret;
            }
        }
    }
    return 0;
}

int file_lock_apply(int fd, uint64_t perm, uint64_t shared, const char *filename, Error **errp)
{
    int ret;

    ret = lock_set_bytes(fd, perm, shared);
    if (ret < 0) {
        error_setg_errno(errp, ret, "Failed to lock byte range of '%s'", filename);
        return ret;
    }
    return lock_check(fd, perm, shared, filename, errp);
}

/*
 * Drops every lock the descriptor's open file description holds, before it is
 * closed. close() alone releases them only when the last reference to the
 * description goes, and an io_uring request that already posted its
 * completion, or a child forked meanwhile, can still hold one: an open right
 * after the close would then find the image locked by this very process.
 */
void file_lock_release(int fd)
{
    struct flock fl = {
        .l_whence = SEEK_SET,
        .l_start = 0,
        .l_len = 0, /* to the end of the file and beyond */
        .l_type = F_UNLCK,
    };

    (void)fcntl(fd, F_OFD_SETLK, &fl);
}

void file_lock_perms(bool writable, bool force_share, uint64_t *perm, uint64_t *shared)
{
    if (writable) {
        *perm = FILE_PERM_ALL;
        *shared = FILE_PERM_CONSISTENT_READ | FILE_PERM_WRITE_UNCHANGED;
    } else if (force_share) {
        *perm = FILE_PERM_CONSISTENT_READ;
        *shared = FILE_PERM_ALL;
    } else {
        *perm = FILE_PERM_CONSISTENT_READ;
        *shared = FILE_PERM_ALL & ~(uint64_t)FILE_PERM_WRITE;
    }
}
