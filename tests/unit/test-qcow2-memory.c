/*
 * Unit test: a 16 TiB qcow2 image serves scattered reads within the memory
 * its l2-cache-size allows (issue 4: "a 16 TiB sparse image opens and serves
 * random reads within the configured cache size").
 *
 * The image gets one 4 KiB write in each of NPOS L2 tables spread over the
 * whole 16 TiB, so reading them back needs NPOS * 64 KiB of L2 tables. Each
 * phase runs in a child process (so memory freed by an earlier phase cannot
 * hide growth) and reports how much its resident set grew while it read
 * every position several times in a scattered order, checking the bytes and
 * the zeroes between. With a 1 MiB L2 cache the growth must stay below the
 * cache plus a fixed allowance for the process's own buffers; the same reads
 * with a cache big enough for every table are the control: they must grow
 * by most of the tables, which shows the measurement can see them.
 */
#include <malloc.h>
#include <sys/wait.h>

#include "drv-test-util.h"

#define KiB 1024LL
#define MiB (1024 * KiB)
#define TiB (1024 * 1024 * MiB)
#define DISK (16 * TiB)
#define NPOS 384                    /* L2 tables touched: 24 MiB of tables */
#define STRIDE (DISK / NPOS)        /* 42.7 GiB: every position its own L2 table */
#define SMALL_CACHE (1 * MiB)
#define BIG_CACHE (64 * MiB)
#define SLACK (8 * MiB)             /* read buffer, stacks, allocator rounding */

static char img[4096];

static int setup(void **state)
{
    drv_test_path(img, sizeof(img), "qcow2mem");
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    return 0;
}

/* Guest offset of position i: its own L2 table, not cluster-aligned in it. */
static int64_t pos_offset(int i)
{
    return (int64_t)i * STRIDE + (int64_t)(i % 61) * 64 * KiB + (i % 3) * 4 * KiB;
}

static int64_t rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f) {
        return -1;
    }
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2) {
        rss = -1;
    }
    fclose(f);
    return rss < 0 ? -1 : rss * sysconf(_SC_PAGESIZE);
}

static BlockBackend *open_img(int64_t l2_cache, int flags)
{
    char opts[8192];

    snprintf(opts, sizeof(opts),
             "driver=qcow2,file.driver=file,file.filename=%s,l2-cache-size=%lld", img,
             (long long)l2_cache);
    return drv_test_open_ok(opts, flags);
}

/*
 * Reads every position 3 times in a scattered order (and the 4 KiB after
 * each, unallocated or zero). Returns the RSS growth over the reads, or -1
 * when a read failed or returned the wrong bytes.
 */
static int64_t read_phase(int64_t l2_cache)
{
    BlockBackend *blk = open_img(l2_cache, 0);
    static uint8_t buf[4096], want[4096], zero[4096];
    int64_t before, after;

    /* Warm up the process's own paths (one read of each kind) first. */
    if (blk_pread(blk, pos_offset(0), 4096, buf, 0) < 0) {
        return -1;
    }
    before = rss_bytes();
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < NPOS; k++) {
            int i = (int)(((int64_t)k * 157 + round * 31) % NPOS); /* 157 is prime to NPOS */

            drv_test_pattern(want, sizeof(want), (uint8_t)(i + 1));
            if (blk_pread(blk, pos_offset(i), 4096, buf, 0) < 0 ||
                memcmp(buf, want, sizeof(buf)) != 0) {
                return -1;
            }
            if (blk_pread(blk, pos_offset(i) + 4096, 4096, buf, 0) < 0 ||
                memcmp(buf, zero, sizeof(buf)) != 0) {
                return -1;
            }
        }
    }
    after = rss_bytes();
    blk_unref(blk);
    return before < 0 || after < 0 ? -1 : after - before;
}

/* Creates the image and writes every position; 0 or -1. */
static int64_t write_phase(int64_t l2_cache)
{
    char msg[1024];
    uint8_t buf[4096];
    BlockBackend *blk;

    unlink(img);
    if (drv_test_create("qcow2", img, "size=17592186044416", msg, sizeof(msg)) < 0) {
        fprintf(stderr, "create: %s\n", msg);
        return -1;
    }
    blk = open_img(l2_cache, BDRV_O_RDWR);
    if (blk_getlength(blk) != DISK) {
        return -1;
    }
    for (int i = 0; i < NPOS; i++) {
        drv_test_pattern(buf, sizeof(buf), (uint8_t)(i + 1));
        if (blk_pwrite(blk, pos_offset(i), sizeof(buf), buf, 0) < 0) {
            return -1;
        }
    }
    blk_unref(blk);
    return 0;
}

/*
 * Runs phase(l2_cache) in a child (the parent never starts a loop or an
 * engine, so nothing is shared across the fork); returns its result.
 */
static int64_t child_phase(int64_t (*phase)(int64_t), int64_t l2_cache)
{
    int fds[2];
    int64_t growth = -1;
    pid_t pid;
    int status;

    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        /* meson's MALLOC_PERTURB_ writes every new block, which would make
         * the whole cache resident at open and hide what the reads touch. */
        mallopt(M_PERTURB, 0);
        growth = phase(l2_cache);
        _exit(write(fds[1], &growth, sizeof(growth)) == sizeof(growth) ? 0 : 1);
    }
    close(fds[1]);
    assert_int_equal(read(fds[0], &growth, sizeof(growth)), (ssize_t)sizeof(growth));
    close(fds[0]);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return growth;
}

static void test_qcow2_16t_reads_within_cache_size(void **state)
{
    int64_t small, big;

    assert_int_equal(child_phase(write_phase, SMALL_CACHE), 0);
    small = child_phase(read_phase, SMALL_CACHE);
    big = child_phase(read_phase, BIG_CACHE);
    print_message("RSS growth over %d scattered reads of a 16 TiB image: %lld KiB with "
                  "l2-cache-size=1M, %lld KiB with 64M (tables touched: %lld KiB)\n",
                  6 * NPOS, (long long)(small / KiB), (long long)(big / KiB),
                  (long long)(NPOS * 64));
    assert_true(small >= 0);
    assert_true(big >= 0);
    assert_true(small < SMALL_CACHE + SLACK);
    /* The control: with room for every table, most of them stay resident. */
    assert_true(big > (int64_t)NPOS * 64 * KiB / 2 + SMALL_CACHE + SLACK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_qcow2_16t_reads_within_cache_size),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
