/*
 * coblk-io: a qemu-io compatible disk exerciser. Options as qemu-io
 * (-c, -f, --image-opts, -r, -n, -t, -i, -k, -d, -C, -m, -U); the -c
 * commands run in order (all of them, as qemu-io), or commands are read
 * from stdin when there are none. Exit status 1 if opening or any command
 * failed, else 0.
 */
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <coblk/block-driver.h>
#include <coblk/plugin.h>

#include "io.h"
#include "../img/img.h"

IoState io_state;
bool io_quit_requested;

static void help_rw(void)
{
    printf("\n Offsets and lengths take the suffixes k, M, G, T, P, E (powers of 1024).\n"
           " -P pattern  fill (write) or verify (read) with this byte\n"
           " -C          print a terse statistics line\n"
           " -q          no report line\n");
}

static void help_sigraise(void)
{
    printf("\n raises the given signal\n\n Example:\n 'sigraise 15' - raises SIGTERM\n\n"
           " Invokes raise(signal), where \"signal\" is the mandatory integer argument\n"
           " given to sigraise.\n\n");
}

static const IoCmd io_cmds[] = {
    { "abort", NULL, io_abort_f, 0, 0, false, "",
      "simulate a program crash using abort(3)", NULL },
    { "aio_flush", NULL, io_aio_flush_f, 0, 0, true, "",
      "completes all outstanding aio requests", NULL },
    { "aio_read", NULL, io_aio_read_f, 2, -1, true, "[-Ciqv] [-P pattern] off len [len..]",
      "asynchronously reads a number of bytes", help_rw },
    { "aio_write", NULL, io_aio_write_f, 2, -1, true,
      "[-Cfiquz] [-P pattern] off len [len..]", "asynchronously writes a number of bytes",
      help_rw },
    { "alloc", NULL, io_alloc_f, 1, 2, true, "offset [count]",
      "checks if offset is allocated in the file", NULL },
    { "break", NULL, io_break_f, 2, 2, true, "event tag",
      "sets a breakpoint on event and tags the stopped request as tag", NULL },
    { "close", "c", io_close_f, 0, 0, true, "", "close the current open file", NULL },
    { "discard", "d", io_discard_f, 2, -1, true, "[-Cq] off len",
      "discards a number of bytes at a specified offset", NULL },
    { "flush", "f", io_flush_f, 0, 0, true, "", "flush all in-core file state to disk", NULL },
    { "help", "?", io_help_f, 0, 1, false, "[command]", "help for one or all commands",
      NULL },
    { "info", "i", io_info_f, 0, 0, true, "", "prints information about the current file",
      NULL },
    { "length", "l", io_length_f, 0, 0, true, "", "gets the length of the current file",
      NULL },
    { "map", NULL, io_map_f, 0, 0, true, " ", "prints the allocated areas of a file",
      NULL },
    { "open", "o", io_open_f, 1, -1, false,
      "[-rsCnkU] [-t cache] [-d discard] [-i aio] [-o options] [path]",
      "open the file specified by path", NULL },
    { "remove_break", NULL, io_remove_break_f, 1, 1, true, "tag",
      "remove a breakpoint by tag", NULL },
    { "reopen", NULL, io_reopen_f, 0, -1, true, "[(-r|-w)] [-c cache] [-o options]",
      "reopens an image with new options", NULL },
    { "resume", NULL, io_resume_f, 1, 1, true, "tag", "resumes the request tagged as tag",
      NULL },
    { "quit", "q", io_quit_f, 0, 0, false, "", "exit the program", NULL },
    { "read", "r", io_read_f, 2, -1, true, "[-bCqv] [-P pattern [-s off] [-l len]] off len",
      "reads a number of bytes at a specified offset", help_rw },
    { "readv", NULL, io_readv_f, 2, -1, true, "[-Cqv] [-P pattern] off len [len..]",
      "reads a number of bytes at a specified offset", help_rw },
    { "sigraise", NULL, io_sigraise_f, 1, 1, false, "signal", "raises a signal",
      help_sigraise },
    { "sleep", NULL, io_sleep_f, 1, 1, false, "milliseconds",
      "waits for the given value in milliseconds", NULL },
    { "truncate", "t", io_truncate_f, 1, 3, true, "[-m prealloc_mode] off",
      "truncates the current file at the given offset", NULL },
    { "wait_break", NULL, io_wait_break_f, 1, 1, true, "tag",
      "waits for the suspension of a request", NULL },
    { "write", "w", io_write_f, 2, -1, true,
      "[-bcCfnquz] [-P pattern | -s source_file] off len",
      "writes a number of bytes at a specified offset", help_rw },
    { "writev", NULL, io_writev_f, 2, -1, true, "[-Cfq] [-P pattern] off len [len..]",
      "writes a number of bytes at a specified offset", help_rw },
};

#define N_CMDS (sizeof(io_cmds) / sizeof(io_cmds[0]))

/* Commands that need a writable image. */
static bool cmd_writes(const IoCmd *c)
{
    static const char *const w[] = { "aio_write", "discard", "truncate", "write", "writev" };

    for (size_t i = 0; i < sizeof(w) / sizeof(w[0]); i++) {
        if (strcmp(c->name, w[i]) == 0) {
            return true;
        }
    }
    return false;
}

const IoCmd *io_find_cmd(const char *name)
{
    for (size_t i = 0; i < N_CMDS; i++) {
        if (strcmp(io_cmds[i].name, name) == 0 ||
            (io_cmds[i].altname && strcmp(io_cmds[i].altname, name) == 0)) {
            return &io_cmds[i];
        }
    }
    return NULL;
}

void io_print_cmds(void)
{
    for (size_t i = 0; i < N_CMDS; i++) {
        printf("%s %s -- %s\n", io_cmds[i].name, io_cmds[i].args, io_cmds[i].oneline);
    }
}

/* --------------------------------------------------------------------- */

int io_open(const char *name, const char *fmt, bool image_opts, int flags, bool writethrough,
            const char *aio, const char *discard, BlockOpts *extra)
{
    BlockOpts *opts = extra ? extra : bopts_new();
    const char *shown = name;   /* for messages: name is NULL once parsed (json: too) */
    Error *err = NULL;

    if (image_opts) {
        if (bopts_parse_keyval(opts, name, NULL, &err) < 0) {
            goto fail;
        }
        name = shown = NULL;
    } else if (fmt) {
        bopts_set(opts, "driver", fmt);
    }
    if (img_objects_apply_name(opts, &name, &err) < 0) {
        goto fail;
    }
    if (img_objects_apply(opts) < 0) {
        bopts_free(opts);
        return -EINVAL;
    }
    /* A flag, not file.aio: backing files inherit it, as with qemu-io's -i. */
    if (aio && bdrv_parse_aio(aio, &flags) < 0) {
        error_setg(&err, "Invalid aio option: %s", aio);
        goto fail;
    }
    if (discard) {
        if (strcmp(discard, "unmap") == 0 || strcmp(discard, "on") == 0) {
            flags |= BDRV_O_UNMAP;
        } else if (strcmp(discard, "ignore") == 0 || strcmp(discard, "off") == 0) {
            flags &= ~BDRV_O_UNMAP;
        } else {
            error_setg(&err, "Invalid discard option: %s", discard);
            goto fail;
        }
    }
    io_state.blk = blk_new_open(name, opts, flags, &err);
    opts = NULL;
    if (!io_state.blk) {
        goto fail;
    }
    if (writethrough) {
        blk_set_enable_write_cache(io_state.blk, false);
    }
    /* As qemu-io: only a writable image gets the warning. */
    if (blk_bs(io_state.blk)->probed && (flags & BDRV_O_RDWR) &&
        strcmp(bdrv_get_format_name(blk_bs(io_state.blk)), "raw") == 0) {
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                "         Automatically detecting the format is dangerous for raw images, "
                "write operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                name);
    }
    return 0;
fail:
    bopts_free(opts);
    fprintf(stderr, "coblk-io: can't open%s%s: %s\n", shown ? " device " : "",
            shown ? shown : "", error_get_pretty(err));
    error_free(err);
    return -EINVAL;
}

void io_close(void)
{
    if (io_state.blk) {
        while (io_state.aio_in_flight > 0) {
            aio_poll(blk_get_aio_context(io_state.blk), true);
        }
        blk_unref(io_state.blk);
        io_state.blk = NULL;
    }
}

/* Splits a command line on blanks (no quoting, as qemu-io). */
static int split_args(char *line, char **argv, int max)
{
    int n = 0;

    for (char *tok = strtok(line, " \t\n"); tok && n < max; tok = strtok(NULL, " \t\n")) {
        argv[n++] = tok;
    }
    return n;
}

static int run_command(const char *cmdline)
{
    char *line = strdup(cmdline), *argv[512];
    int argc = split_args(line, argv, 511), ret = 0;
    const IoCmd *c;

    if (argc == 0) {
        free(line);
        return 0;
    }
    argv[argc] = NULL;
    c = io_find_cmd(argv[0]);
    if (!c) {
        fprintf(stderr, "command \"%s\" not found\n", argv[0]);
        ret = -EINVAL;
    } else if (c->needs_file && !io_state.blk) {
        fprintf(stderr, "no file open, try 'help open'\n");
        ret = -EINVAL;
    } else if (argc - 1 < c->argmin || (c->argmax >= 0 && argc - 1 > c->argmax)) {
        if (c->argmax < 0) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n",
                    argc - 1, c->name, c->argmin);
        } else if (c->argmin == c->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", argc - 1,
                    c->name, c->argmin);
        } else {
            fprintf(stderr, "bad argument count %d to %s, expected between %d and %d "
                    "arguments\n", argc - 1, c->name, c->argmin, c->argmax);
        }
        ret = -EINVAL;
    } else if (cmd_writes(c) && blk_is_read_only(io_state.blk)) {
        fflush(stdout);
        fprintf(stderr, "coblk-io: Block node is read-only\n");
        ret = -EACCES;
    } else {
        io_reset_getopt();
        ret = c->fn(io_state.blk, argc, argv);
    }
    fflush(stdout);
    free(line);
    return ret;
}

static void usage(void)
{
    printf("Usage: coblk-io [OPTIONS]... [-c STRING]... [file]\n"
           "coblk disk exerciser (qemu-io compatible)\n\n"
           "  --object OBJECTDEF   define an object (secret, tls-creds-x509, tls-creds-psk)\n"
           "  --image-opts         treat file as option string\n"
           "  -c, --cmd STRING     execute command with its arguments\n"
           "                       from the given string\n"
           "  -f, --format FMT     specifies the block driver to use\n"
           "  -r, --read-only      export read-only\n"
           "  -n, --nocache        disable host cache, short for -t none\n"
           "  -s, --snapshot       use snapshot file (a temporary overlay takes the writes)\n"
           "  -C, --copy-on-read   enable copy-on-read\n"
           "  -m, --misalign       misalign allocations for O_DIRECT\n"
           "  -k, --native-aio     use kernel AIO implementation\n"
           "  -i, --aio=MODE       use AIO mode (threads, native or io_uring)\n"
           "  -t, --cache=MODE     use the given cache mode for the image\n"
           "  -d, --discard=MODE   use the given discard mode for the image\n"
           "  -U, --force-share    force shared permissions\n"
           "  --plugin PATH        load a coblk driver plugin (shared object)\n"
           "  -h, --help           display this help and exit\n"
           "  -V, --version        output version information and exit\n\n"
           "See 'coblk-io -c help' for information on available commands,\n"
           "and coblk-io(1).\n");
}

typedef struct MainOpts {
    const char *fmt, *aio, *discard;
    bool image_opts, writethrough;
    int flags;
    char **cmds;
    int ncmds;
} MainOpts;

static int parse_main(int argc, char **argv, MainOpts *m)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "cmd", required_argument, NULL, 'c' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "snapshot", no_argument, NULL, 's' },
        { "nocache", no_argument, NULL, 'n' },
        { "copy-on-read", no_argument, NULL, 'C' },
        { "misalign", no_argument, NULL, 'm' },
        { "native-aio", no_argument, NULL, 'k' },
        { "aio", required_argument, NULL, 'i' },
        { "discard", required_argument, NULL, 'd' },
        { "cache", required_argument, NULL, 't' },
        { "force-share", no_argument, NULL, 'U' },
        { "image-opts", no_argument, NULL, 'I' },
        { "object", required_argument, NULL, 'O' },
        { "trace", required_argument, NULL, 'T' },
        { "plugin", required_argument, NULL, 'P' },
        { NULL, 0, NULL, 0 },
    };
    int c;

    while ((c = getopt_long(argc, argv, "hVc:f:rsnCmki:d:t:UT:", longopts, NULL)) != -1) {
        switch (c) {
        case 'h': usage(); exit(0);
        case 'V': printf("coblk-io version 0.1.0 (qemu-io 7.2 compatible)\n"); exit(0);
        case 'c': m->cmds[m->ncmds++] = optarg; break;
        case 'f': m->fmt = optarg; break;
        case 'r': m->flags &= ~BDRV_O_RDWR; break;
        case 'n': m->flags |= BDRV_O_NOCACHE; break;
        case 'C': m->flags |= BDRV_O_COPY_ON_READ; break;
        case 'm': io_state.misalign = true; break;
        case 'k': m->aio = "native"; break;
        case 'i': m->aio = optarg; break;
        case 'd': m->discard = optarg; break;
        case 'U': m->flags |= BDRV_O_FORCE_SHARE; break;
        case 'I': m->image_opts = io_state.image_opts = true; break;
        case 't':
            if (strcmp(optarg, "none") == 0) {
                m->flags |= BDRV_O_NOCACHE;
            } else if (strcmp(optarg, "writethrough") == 0) {
                m->writethrough = true;
            } else if (strcmp(optarg, "directsync") == 0) {
                m->flags |= BDRV_O_NOCACHE;
                m->writethrough = true;
            } else if (strcmp(optarg, "unsafe") == 0) {
                m->flags |= BDRV_O_NO_FLUSH;
            } else if (strcmp(optarg, "writeback") != 0) {
                fprintf(stderr, "coblk-io: Invalid cache option: %s\n", optarg);
                return -1;
            }
            break;
        case 's':
            m->flags |= BDRV_O_SNAPSHOT;
            break;
        case 'O':
            if (img_object_add(optarg) < 0) {
                return -1;
            }
            break;
        case 'T':
            fprintf(stderr, "coblk-io: --trace is not supported\n");
            return -1;
        case 'P': {
            Error *err = NULL;

            if (coblk_plugin_load(optarg, &err) < 0) {
                fprintf(stderr, "coblk-io: %s\n", error_get_pretty(err));
                error_free(err);
                return -1;
            }
            break;
        }
        default:
            fprintf(stderr, "Try 'coblk-io --help' for more information.\n");
            return -1;
        }
    }
    return 0;
}

static int command_loop(MainOpts *m)
{
    int failed = 0;

    for (int i = 0; i < m->ncmds && !io_quit_requested; i++) {
        if (run_command(m->cmds[i]) < 0) {
            failed = 1;
        }
    }
    if (m->ncmds == 0) {
        char line[4096];

        for (;;) {
            printf("coblk-io> ");    /* as qemu-io, also when stdin is not a terminal */
            fflush(stdout);
            if (!fgets(line, sizeof(line), stdin) || io_quit_requested) {
                break;
            }
            if (run_command(line) < 0) {
                failed = 1;
            }
            if (io_quit_requested) {
                break;
            }
        }
    }
    return failed;
}

int main(int argc, char **argv)
{
    MainOpts m = { .flags = BDRV_O_RDWR | BDRV_O_UNMAP };
    int ret;

    m.cmds = calloc((size_t)argc + 1, sizeof(char *));
    if (parse_main(argc, argv, &m) < 0) {
        free(m.cmds);
        return 1;
    }
    if (argc - optind > 1) {
        fprintf(stderr, "coblk-io: too many arguments\nTry 'coblk-io --help' for more "
                "information.\n");
        free(m.cmds);
        return 1;
    }
    if (m.image_opts && m.fmt) {
        fprintf(stderr, "coblk-io: --image-opts and --format are mutually exclusive\n");
        free(m.cmds);
        return 1;
    }
    if (optind < argc && io_open(argv[optind], m.fmt, m.image_opts, m.flags, m.writethrough,
                                 m.aio, m.discard, NULL) < 0) {
        free(m.cmds);
        return 1;
    }
    ret = command_loop(&m);
    io_close();
    free(m.cmds);
    return ret;
}
