/*
 * coblk-io commands for tests of request ordering and live changes:
 * blkdebug breakpoints (break, wait_break, resume, remove_break) and reopen.
 */
#include <errno.h>
#include <getopt.h>
#include <string.h>

#include <coblk/block-driver.h>

#include "io.h"

static int debug_ret(const char *what, int ret)
{
    if (ret < 0) {
        printf("%s failed: %s\n", what,
               ret == -ENOTSUP ? "no blkdebug node in the graph" : strerror(-ret));
    }
    return ret;
}

int io_break_f(BlockBackend *blk, int argc, char **argv)
{
    return debug_ret("break", bdrv_debug_breakpoint(blk_bs(blk), argv[1], argv[2]));
}

int io_remove_break_f(BlockBackend *blk, int argc, char **argv)
{
    return debug_ret("remove_break", bdrv_debug_remove_breakpoint(blk_bs(blk), argv[1]));
}

int io_resume_f(BlockBackend *blk, int argc, char **argv)
{
    return debug_ret("resume", bdrv_debug_resume(blk_bs(blk), argv[1]));
}

/* Runs the loop until a request stops at the breakpoint tagged argv[1]. */
int io_wait_break_f(BlockBackend *blk, int argc, char **argv)
{
    while (!bdrv_debug_is_suspended(blk_bs(blk), argv[1])) {
        if (io_state.aio_in_flight == 0) {
            printf("wait_break: no request in flight can reach '%s'\n", argv[1]);
            return -EINVAL;
        }
        aio_poll(blk_get_aio_context(blk), true);
    }
    return 0;
}

/* reopen [-r|-w] [-c cache] [-o options]: bdrv_reopen with the changed options. */
int io_reopen_f(BlockBackend *blk, int argc, char **argv)
{
    BlockOpts *opts = bopts_new();
    Error *err = NULL;
    int c;

    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'r': bopts_set(opts, "read-only", "on"); break;
        case 'w': bopts_set(opts, "read-only", "off"); break;
        case 'c':
            if (strcmp(optarg, "none") == 0 || strcmp(optarg, "directsync") == 0) {
                bopts_set(opts, "cache.direct", "on");
                bopts_set(opts, "cache.no-flush", "off");
            } else if (strcmp(optarg, "unsafe") == 0) {
                bopts_set(opts, "cache.direct", "off");
                bopts_set(opts, "cache.no-flush", "on");
            } else if (strcmp(optarg, "writeback") == 0 || strcmp(optarg, "writethrough") == 0) {
                bopts_set(opts, "cache.direct", "off");
                bopts_set(opts, "cache.no-flush", "off");
            } else {
                printf("Invalid cache option: %s\n", optarg);
                bopts_free(opts);
                return -EINVAL;
            }
            blk_set_enable_write_cache(blk, strcmp(optarg, "writethrough") != 0 &&
                                                strcmp(optarg, "directsync") != 0);
            break;
        case 'o':
            if (bopts_parse_keyval(opts, optarg, NULL, &err) < 0) {
                printf("%s\n", error_get_pretty(err));
                error_free(err);
                bopts_free(opts);
                return -EINVAL;
            }
            break;
        default:
            printf("reopen: invalid option -- '%c'\n", optopt);
            bopts_free(opts);
            return -EINVAL;
        }
    }
    if (optind != argc) {
        printf("reopen: takes no file name\n");
        bopts_free(opts);
        return -EINVAL;
    }
    if (bdrv_reopen(blk_bs(blk), opts, &err) < 0) {
        fprintf(stderr, "coblk-io: %s\n", error_get_pretty(err));
        error_free(err);
        return -EINVAL;
    }
    return 0;
}
