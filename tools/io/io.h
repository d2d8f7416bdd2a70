/*
 * coblk-io: a qemu-io compatible disk exerciser. The command table lives in
 * main.c; commands are grouped by file (cmd-rw.c: read/write/readv/writev,
 * cmd-aio.c: aio_read/aio_write/aio_flush, cmd-misc.c: the rest), and
 * util.c holds the number parsing, pattern and report helpers they share.
 *
 * A command returns 0 on success or a negative errno; any failure makes
 * coblk-io exit with status 1 at the end, as qemu-io does.
 */
#ifndef COBLK_TOOLS_IO_H
#define COBLK_TOOLS_IO_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <coblk/block.h>
#include <coblk/image.h>

/** The open image and the options it was opened with. */
typedef struct IoState {
    BlockBackend *blk;
    bool misalign;          /* -m: buffers one byte off alignment */
    bool image_opts;        /* started with --image-opts */
    int aio_in_flight;
} IoState;

extern IoState io_state;

typedef int IoCmdFn(BlockBackend *blk, int argc, char **argv);

typedef struct IoCmd {
    const char *name;
    const char *altname;
    IoCmdFn *fn;
    int argmin;
    int argmax;             /* -1: no limit */
    bool needs_file;
    const char *args;
    const char *oneline;
    void (*help)(void);
} IoCmd;

/* main.c */
const IoCmd *io_find_cmd(const char *name);
void io_print_cmds(void);
/** Opens the image (for the command line and "open"); 0 or -errno. */
int io_open(const char *name, const char *fmt, bool image_opts, int flags, bool writethrough,
            const char *aio, const char *discard, BlockOpts *extra);
void io_close(void);

/* util.c */
/** qemu-io's number parser (suffixes k/M/G/T/P/E); -EINVAL or -ERANGE. */
int64_t io_cvtnum(const char *s);
void io_print_cvtnum_err(int64_t rc, const char *arg);
/** "4 KiB", "1.500 KiB", "32 bytes". */
void io_cvtstr(double value, char *out, size_t len);
/** Prints the two report lines (or the -C terse line). */
void io_print_report(const char *op, const struct timespec *t, int64_t offset, int64_t count,
                     int64_t total, int cnt, bool terse);
struct timespec io_tsub(struct timespec a, struct timespec b);
struct timespec io_now(void);
/** A buffer for len bytes filled with pattern (exits on OOM). */
void *io_alloc_buf(size_t len, int pattern);
void io_free_buf(void *buf);
/** Checks buf against pattern; prints qemu-io's message and returns -EINVAL if not. */
int io_check_pattern(const void *buf, int64_t offset, int64_t len, int pattern);
void io_dump_buffer(const void *buf, int64_t offset, int64_t len);
/** Parses -P's value (0..255 in any base); -1 with a message if invalid. */
int io_parse_pattern(const char *s);
/** Builds an IOVector of buffers from the length arguments (readv/writev/aio). */
void *io_create_iovec(BlockBackend *blk, IOVector *qiov, char **argv, int nr, int pattern);
/** Runs getopt-like parsing state reset before each command. */
void io_reset_getopt(void);

/* command functions */
int io_read_f(BlockBackend *blk, int argc, char **argv);
int io_write_f(BlockBackend *blk, int argc, char **argv);
int io_readv_f(BlockBackend *blk, int argc, char **argv);
int io_writev_f(BlockBackend *blk, int argc, char **argv);
int io_aio_read_f(BlockBackend *blk, int argc, char **argv);
int io_aio_write_f(BlockBackend *blk, int argc, char **argv);
int io_aio_flush_f(BlockBackend *blk, int argc, char **argv);
int io_flush_f(BlockBackend *blk, int argc, char **argv);
int io_discard_f(BlockBackend *blk, int argc, char **argv);
int io_length_f(BlockBackend *blk, int argc, char **argv);
int io_info_f(BlockBackend *blk, int argc, char **argv);
int io_map_f(BlockBackend *blk, int argc, char **argv);
int io_alloc_f(BlockBackend *blk, int argc, char **argv);
int io_truncate_f(BlockBackend *blk, int argc, char **argv);
int io_sleep_f(BlockBackend *blk, int argc, char **argv);
int io_help_f(BlockBackend *blk, int argc, char **argv);
int io_open_f(BlockBackend *blk, int argc, char **argv);
int io_close_f(BlockBackend *blk, int argc, char **argv);
int io_quit_f(BlockBackend *blk, int argc, char **argv);
int io_abort_f(BlockBackend *blk, int argc, char **argv);
int io_sigraise_f(BlockBackend *blk, int argc, char **argv);

int io_break_f(BlockBackend *blk, int argc, char **argv);
int io_remove_break_f(BlockBackend *blk, int argc, char **argv);
int io_resume_f(BlockBackend *blk, int argc, char **argv);
int io_wait_break_f(BlockBackend *blk, int argc, char **argv);
int io_reopen_f(BlockBackend *blk, int argc, char **argv);

extern bool io_quit_requested;

#endif /* COBLK_TOOLS_IO_H */
