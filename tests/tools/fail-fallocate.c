/*
 * LD_PRELOAD shim for test-img-convert-prealloc.sh: a fallocate(2) call with
 * mode FALLOC_FL_KEEP_SIZE alone (preallocation; hole punching and zeroing
 * pass through) creates the file $COBLK_TEST_FALLOCATE_MARK (so the test
 * knows the preallocation path ran) and, if $COBLK_TEST_FALLOCATE_ERRNO is
 * set, fails with that errno instead of running.
 */
/* Both fallocate and fallocate64 are defined here, so neither may be renamed. */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

static int shim_fallocate(int fd, int mode, off_t offset, off_t len)
{
    const char *e = getenv("COBLK_TEST_FALLOCATE_ERRNO");
    const char *mark = getenv("COBLK_TEST_FALLOCATE_MARK");

    if (mode == FALLOC_FL_KEEP_SIZE && mark) {
        int m = open(mark, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

        if (m >= 0) {
            close(m);
        }
    }
    if (mode == FALLOC_FL_KEEP_SIZE && e) {
        errno = atoi(e);
        return -1;
    }
    return (int)syscall(SYS_fallocate, fd, mode, offset, len);
}

int fallocate(int fd, int mode, off_t offset, off_t len)
{
    return shim_fallocate(fd, mode, offset, len);
}

int fallocate64(int fd, int mode, off64_t offset, off64_t len)
{
    return shim_fallocate(fd, mode, offset, len);
}
