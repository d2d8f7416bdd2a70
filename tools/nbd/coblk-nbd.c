/*
 * coblk-nbd: serves an image over NBD with qemu-nbd's command line, so that
 * scripts that start qemu-nbd work with only the program name changed.
 *
 * The server runs on the image's AioContext (include/coblk/nbd.h): every
 * client and request is a coroutine; there is no thread per client.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <coblk/coblk.h>
#include <coblk/plugin.h>

#include "tls-opts.h"

typedef struct NbdToolOpts {
    const char *port;
    const char *bind;
    const char *sock;
    const char *export_name;
    const char *description;
    const char *format;
    const char *cache;
    const char *aio;
    const char *discard;
    const char *detect_zeroes;
    const char *pid_file;
    const char *offset;
    unsigned shared;
    bool persistent;
    bool read_only;
    bool image_opts;
    bool fork;
    bool verbose;
    bool allocation_depth;
    bool snapshot;
    const char *load_snapshot;  /* -l: an internal snapshot, exported read-only */
    const char *bitmap;         /* -B: exported as qemu:dirty-bitmap:NAME */
    ToolTls tls;
} NbdToolOpts;

typedef struct NbdTool {
    NbdToolOpts o;
    NbdServer *srv;
    bool stop;
    int sig_fd;
} NbdTool;

enum {
    OPT_CACHE = 256,
    OPT_AIO,
    OPT_DISCARD,
    OPT_DETECT_ZEROES,
    OPT_IMAGE_OPTS,
    OPT_FORK,
    OPT_PID_FILE,
    OPT_OBJECT,
    OPT_TLSCREDS,
    OPT_TLSAUTHZ,
    OPT_TLSHOSTNAME,
    OPT_TLSPSK,
    OPT_TLS,
    OPT_TLSVERIFY,
    OPT_PLUGIN,
};

static void usage(const char *prog)
{
    printf("Usage: %s [OPTIONS] FILE\n"
           "Serve FILE over NBD (qemu-nbd compatible command line).\n\n"
           "  -h, --help                display this help and exit\n"
           "  -V, --version             output version information and exit\n\n"
           "Connection properties:\n"
           "  -p, --port=PORT           port to listen on (default 10809)\n"
           "  -b, --bind=IFACE          interface to bind to (default 0.0.0.0)\n"
           "  -k, --socket=PATH         path to the unix socket\n"
           "  -e, --shared=NUM          device can be shared by NUM clients (default 1,\n"
           "                            0 for unlimited)\n"
           "  -t, --persistent          don't exit on the last connection\n"
           "  -v, --verbose             display extra debugging information\n"
           "  -x, --export-name=NAME    expose export by name (default \"\")\n"
           "  -D, --description=TEXT    export a human-readable description\n"
           "  -A, --allocation-depth    expose the allocation depth\n"
           "      --fork                fork off the server process and exit the parent\n"
           "                            once the server is running\n"
           "      --pid-file=PATH       store the server's process ID in PATH\n\n"
           "Block device options:\n"
           "  -f, --format=FORMAT       set image format (raw, qcow2, ...)\n"
           "  -r, --read-only           export read-only\n"
           "  -o, --offset=OFFSET       offset into the image (raw images)\n"
           "  -s, --snapshot            use FILE as an external snapshot, create a temporary\n"
           "                            file with backing_file=FILE, redirect the write to\n"
           "                            the temporary one\n"
           "  -l, --load-snapshot=SNAPSHOT_PARAM\n"
           "                            load an internal snapshot inside FILE and export it\n"
           "                            read-only (snapshot.id=ID,snapshot.name=NAME or an\n"
           "                            id or name)\n"
           "  -B, --bitmap=NAME         export the dirty bitmap NAME as the metadata context\n"
           "                            qemu:dirty-bitmap:NAME\n"
           "  -n, --nocache             disable host cache (same as --cache=none)\n"
           "      --cache=MODE          cache mode (none, writeback, writethrough,\n"
           "                            directsync, unsafe); default writeback\n"
           "      --aio=MODE            AIO mode (threads, native, io_uring)\n"
           "      --discard=MODE        discard mode (ignore, unmap)\n"
           "      --detect-zeroes=MODE  detect zeroes (off, on, unmap)\n"
           "      --image-opts          treat FILE as a full set of image options\n"
           "      --plugin=PATH         load a coblk driver plugin (shared object) before\n"
           "                            opening FILE (may be repeated)\n\n"
           "TLS (GnuTLS; a client that does not upgrade is refused unless --tls=on):\n"
           "      --object tls-creds-x509,id=ID,dir=DIR[,endpoint=server][,verify-peer=on|off]\n"
           "      --object tls-creds-psk,id=ID,dir=DIR[,endpoint=server]   (DIR/keys.psk)\n"
           "      --object authz-simple,id=ID,identity=NAME\n"
           "      --tls-creds=ID|DIR    credentials: an --object id, or a directory with\n"
           "                            ca-cert.pem, server-cert.pem, server-key.pem\n"
           "      --tls-psk=FILE        pre-shared keys in psktool's format (user:hexkey)\n"
           "      --tls=on|require      require (default): TLS before any option;\n"
           "                            on: plaintext clients are served too\n"
           "      --tls-verify-peer     with --tls-creds=DIR: require a client certificate\n"
           "                            signed by ca-cert.pem\n"
           "      --tls-authz=ID|NAME   only this client: certificate DN (RFC 4514,\n"
           "                            \"CN=client,O=Example\") or PSK username\n\n"
           "Socket activation: with LISTEN_FDS=1 and LISTEN_PID set by systemd, the\n"
           "inherited socket (fd 3) is used and -k/-p/-b must not be given.\n",
           prog);
}

static void die(const char *fmt, ...) COBLK_PRINTF(1, 2);
static void die(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "coblk-nbd: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(EXIT_FAILURE);
}

static void refuse(const char *what)
{
    die("%s is not supported", what);
}

static unsigned parse_shared(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);

    if (!*s || *end || v > 1000000) {
        die("invalid value for -e/--shared: '%s'", s);
    }
    return (unsigned)v;
}

static void add_object(NbdToolOpts *o, const char *spec)
{
    Error *err = NULL;

    if (tool_tls_add_object(&o->tls, spec, &err) < 0) {
        die("%s", error_get_pretty(err));
    }
}

/* Loads a driver plugin now, so the image's format can come from it. */
static void load_plugin(const char *path)
{
    Error *err = NULL;

    if (coblk_plugin_load(path, &err) < 0) {
        die("%s", error_get_pretty(err));
    }
}

static void parse_args(int argc, char **argv, NbdToolOpts *o)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "port", required_argument, NULL, 'p' },
        { "bind", required_argument, NULL, 'b' },
        { "socket", required_argument, NULL, 'k' },
        { "shared", required_argument, NULL, 'e' },
        { "persistent", no_argument, NULL, 't' },
        { "verbose", no_argument, NULL, 'v' },
        { "export-name", required_argument, NULL, 'x' },
        { "description", required_argument, NULL, 'D' },
        { "allocation-depth", no_argument, NULL, 'A' },
        { "format", required_argument, NULL, 'f' },
        { "read-only", no_argument, NULL, 'r' },
        { "offset", required_argument, NULL, 'o' },
        { "snapshot", no_argument, NULL, 's' },
        { "load-snapshot", required_argument, NULL, 'l' },
        { "nocache", no_argument, NULL, 'n' },
        { "cache", required_argument, NULL, OPT_CACHE },
        { "aio", required_argument, NULL, OPT_AIO },
        { "discard", required_argument, NULL, OPT_DISCARD },
        { "detect-zeroes", required_argument, NULL, OPT_DETECT_ZEROES },
        { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
        { "fork", no_argument, NULL, OPT_FORK },
        { "pid-file", required_argument, NULL, OPT_PID_FILE },
        { "object", required_argument, NULL, OPT_OBJECT },
        { "tls-creds", required_argument, NULL, OPT_TLSCREDS },
        { "tls-authz", required_argument, NULL, OPT_TLSAUTHZ },
        { "tls-hostname", required_argument, NULL, OPT_TLSHOSTNAME },
        { "tls-psk", required_argument, NULL, OPT_TLSPSK },
        { "tls", required_argument, NULL, OPT_TLS },
        { "tls-verify-peer", no_argument, NULL, OPT_TLSVERIFY },
        { "connect", required_argument, NULL, 'c' },
        { "disconnect", no_argument, NULL, 'd' },
        { "list", no_argument, NULL, 'L' },
        { "bitmap", required_argument, NULL, 'B' },
        { "trace", required_argument, NULL, 'T' },
        { "plugin", required_argument, NULL, OPT_PLUGIN },
        { NULL, 0, NULL, 0 },
    };
    int c;

    o->shared = 1;
    while ((c = getopt_long(argc, argv, "hVp:b:k:e:tvx:D:Af:ro:sl:nc:dLB:T:", longopts,
                            NULL)) != -1) {
        switch (c) {
        case 'h':
            usage(argv[0]);
            exit(EXIT_SUCCESS);
        case 'V':
            printf("coblk-nbd 0.1.0\n");
            exit(EXIT_SUCCESS);
        case 'p': o->port = optarg; break;
        case 'b': o->bind = optarg; break;
        case 'k': o->sock = optarg; break;
        case 'e': o->shared = parse_shared(optarg); break;
        case 't': o->persistent = true; break;
        case 'v': o->verbose = true; break;
        case 'x': o->export_name = optarg; break;
        case 'D': o->description = optarg; break;
        case 'A': o->allocation_depth = true; break;
        case 'f': o->format = optarg; break;
        case 'r': o->read_only = true; break;
        case 'o': o->offset = optarg; break;
        case 's': o->snapshot = true; break;
        case 'l': o->load_snapshot = optarg; o->read_only = true; break;
        case 'n': o->cache = "none"; break;
        case OPT_CACHE: o->cache = optarg; break;
        case OPT_AIO: o->aio = optarg; break;
        case OPT_DISCARD: o->discard = optarg; break;
        case OPT_DETECT_ZEROES: o->detect_zeroes = optarg; break;
        case OPT_IMAGE_OPTS: o->image_opts = true; break;
        case OPT_FORK: o->fork = true; break;
        case OPT_PID_FILE: o->pid_file = optarg; break;
        case OPT_OBJECT: add_object(o, optarg); break;
        case OPT_PLUGIN: load_plugin(optarg); break;
        case OPT_TLSCREDS: o->tls.creds = optarg; break;
        case OPT_TLSAUTHZ: o->tls.authz = optarg; break;
        case OPT_TLSPSK: o->tls.psk = optarg; break;
        case OPT_TLS: o->tls.mode = optarg; break;
        case OPT_TLSVERIFY: o->tls.verify_peer = true; break;
        case OPT_TLSHOSTNAME: refuse("--tls-hostname (a client option)"); break;
        case 'c':
        case 'd': refuse("the kernel NBD device mode (-c/-d); use nbd-client"); break;
        case 'L': refuse("-L/--list (use nbdinfo --list)"); break;
        case 'B':
            if (o->bitmap) {
                refuse("more than one -B/--bitmap");
            }
            o->bitmap = optarg;
            break;
        case 'T': break; /* tracing: accepted and ignored */
        default:
            fprintf(stderr, "Try '%s --help' for more information.\n", argv[0]);
            exit(EXIT_FAILURE);
        }
    }
    if (optind != argc - 1) {
        die("expected exactly one image argument (try --help)");
    }
}

/* Cache modes as qemu-nbd: none/directsync bypass the host cache, writethrough and
 * directsync make every write durable, unsafe ignores flushes. */
static void set_cache_opts(BlockOpts *opts, const char *mode, bool *writethrough)
{
    *writethrough = false;
    if (!mode || !strcmp(mode, "writeback")) {
        return;
    }
    if (!strcmp(mode, "none") || !strcmp(mode, "off")) {
        bopts_set(opts, "cache.direct", "on");
    } else if (!strcmp(mode, "writethrough")) {
        *writethrough = true;
    } else if (!strcmp(mode, "directsync")) {
        bopts_set(opts, "cache.direct", "on");
        *writethrough = true;
    } else if (!strcmp(mode, "unsafe")) {
        bopts_set(opts, "cache.no-flush", "on");
    } else {
        die("invalid cache mode '%s' (none, writeback, writethrough, directsync, unsafe)",
            mode);
    }
}

static BlockBackend *open_image(const NbdToolOpts *o, const char *image)
{
    BlockOpts *opts = bopts_new();
    const char *filename = image;
    bool writethrough;
    Error *err = NULL;
    BlockBackend *blk;
    int flags = o->read_only ? 0 : BDRV_O_RDWR;

    if (o->image_opts) {
        if (o->format) {
            die("--image-opts and -f are mutually exclusive");
        }
        if (bopts_parse_keyval(opts, image, "file", &err) < 0) {
            die("%s", error_get_pretty(err));
        }
        filename = NULL;
    } else if (o->format) {
        bopts_set(opts, "driver", o->format);
    }
    if (o->offset) {
        if (o->image_opts || !o->format || strcmp(o->format, "raw")) {
            die("-o/--offset needs -f raw");
        }
        bopts_set(opts, "offset", o->offset);
    }
    set_cache_opts(opts, o->cache, &writethrough);
    /* A flag, not file.aio: backing files inherit it, as with qemu-nbd's --aio. */
    if (o->aio && bdrv_parse_aio(o->aio, &flags) < 0) {
        die("invalid aio mode '%s' (threads, native, io_uring)", o->aio);
    }
    if (o->discard) {
        bopts_set(opts, "discard", o->discard);
    }
    if (o->detect_zeroes) {
        bopts_set(opts, "detect-zeroes", o->detect_zeroes);
    }
    blk = blk_new_open(filename, opts, flags, &err);
    if (!blk) {
        die("Failed to blk_new_open '%s': %s", image, error_get_pretty(err));
    }
    blk_set_enable_write_cache(blk, !writethrough);
    return blk;
}

/*
 * -s: a temporary qcow2 overlay over the image (in $TMPDIR), opened read-write
 * and unlinked at once, so writes never reach the image and vanish at exit.
 */
static BlockBackend *open_snapshot(NbdToolOpts *o, const char *image)
{
    char tmp[4096], size[32], *base;
    const char *dir = getenv("TMPDIR");
    BlockBackend *blk;
    BlockOpts *c;
    Error *err = NULL;
    bool user_ro = o->read_only;
    int fd;

    if (o->image_opts || o->offset) {
        die("-s/--snapshot cannot be combined with --image-opts or -o");
    }
    o->read_only = true;
    blk = open_image(o, image);
    snprintf(size, sizeof(size), "%lld", (long long)blk_getlength(blk));
    c = bopts_new();
    bopts_set(c, "size", size);
    bopts_set(c, "backing_fmt", bdrv_get_format_name(blk_bs(blk)));
    blk_unref(blk);
    base = realpath(image, NULL);
    snprintf(tmp, sizeof(tmp), "%s/coblk-nbd-snapshot.XXXXXX", dir && *dir ? dir : "/var/tmp");
    if (!base || (fd = mkstemp(tmp)) < 0) {
        die("-s/--snapshot: cannot create a temporary file: %s", strerror(errno));
    }
    close(fd);
    bopts_set(c, "backing_file", base);
    free(base);
    if (bdrv_create("qcow2", tmp, c, &err) < 0) {
        unlink(tmp);
        die("-s/--snapshot: %s", error_get_pretty(err));
    }
    c = bopts_new();
    bopts_set(c, "driver", "qcow2");
    blk = blk_new_open(tmp, c, BDRV_O_RDWR, &err);
    unlink(tmp);
    if (!blk) {
        die("-s/--snapshot: %s", error_get_pretty(err));
    }
    o->read_only = user_ro; /* -r -s: a read-only export of the overlay */
    return blk;
}

/* systemd socket activation: LISTEN_PID is us and LISTEN_FDS says how many (fd 3 on). */
static int socket_activation_fd(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");

    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid()) {
        return -1;
    }
    if (strcmp(fds, "1")) {
        die("LISTEN_FDS=%s: exactly one socket is supported", fds);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    return 3;
}

static void listen_all(NbdTool *t)
{
    const NbdToolOpts *o = &t->o;
    int act = socket_activation_fd();
    Error *err = NULL;
    int ret;

    if (act >= 0) {
        if (o->sock || o->port || o->bind) {
            die("-k, -p and -b cannot be used with socket activation");
        }
        ret = nbd_server_listen_fd(t->srv, act, &err);
    } else if (o->sock) {
        if (o->port || o->bind) {
            die("-k cannot be used with -p or -b");
        }
        ret = nbd_server_listen_unix(t->srv, o->sock, &err);
    } else {
        ret = nbd_server_listen_tcp(t->srv, o->bind ? o->bind : "0.0.0.0",
                                    o->port ? o->port : "10809", &err);
    }
    if (ret < 0) {
        die("%s", error_get_pretty(err));
    }
}

static void client_event(void *opaque, NbdServer *srv, bool connected)
{
    NbdTool *t = opaque;

    if (t->o.verbose) {
        fprintf(stderr, "coblk-nbd: client %s (%u connected)\n",
                connected ? "negotiated" : "disconnected", nbd_server_client_count(srv));
    }
    if (!connected && !t->o.persistent && nbd_server_client_count(srv) == 0) {
        t->stop = true;
    }
}

static void signal_ready(void *opaque)
{
    NbdTool *t = opaque;
    struct signalfd_siginfo si;

    while (read(t->sig_fd, &si, sizeof(si)) == sizeof(si)) {
        t->stop = true;
    }
}

static void write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");

    if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
        die("cannot write pid file '%s': %s", path, strerror(errno));
    }
}

/* --fork: the parent waits until the child listens (one byte on the pipe), then exits. */
static int fork_server(void)
{
    int p[2];
    pid_t pid;
    char b;

    if (pipe(p) < 0 || (pid = fork()) < 0) {
        die("cannot fork: %s", strerror(errno));
    }
    if (pid == 0) {
        close(p[0]);
        setsid();
        return p[1];
    }
    close(p[1]);
    exit(read(p[0], &b, 1) == 1 ? EXIT_SUCCESS : EXIT_FAILURE);
}

static void detach_stdio(void)
{
    int fd = open("/dev/null", O_RDWR);

    if (fd >= 0) {
        dup2(fd, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        if (fd > STDERR_FILENO) {
            close(fd);
        }
    }
}

static void setup_signals(NbdTool *t, AioContext *ctx)
{
    sigset_t set;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    t->sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (t->sig_fd < 0) {
        die("signalfd: %s", strerror(errno));
    }
    aio_set_fd_handler(ctx, t->sig_fd, signal_ready, NULL, NULL, NULL, t);
}

int main(int argc, char **argv)
{
    NbdTool t = { .sig_fd = -1 };
    NbdServerOpts sopts = { 0 };
    NbdExportOpts eopts = { .multi_conn = -1 };
    Error *err = NULL;
    BlockBackend *blk;
    AioContext *ctx;
    int ready_fd = -1;
    int ret;

    parse_args(argc, argv, &t.o);
    if (t.o.fork) {
        ready_fd = fork_server();
    }
    blk = t.o.snapshot ? open_snapshot(&t.o, argv[optind]) : open_image(&t.o, argv[optind]);
    if (t.o.load_snapshot &&
        bdrv_snapshot_load_tmp_param(blk_bs(blk), t.o.load_snapshot, &err) < 0) {
        die("Failed to load snapshot: %s", error_get_pretty(err));
    }
    ctx = blk_get_aio_context(blk);
    setup_signals(&t, ctx);
    sopts.max_connections = t.o.shared ? t.o.shared : 1000000;
    if (tool_tls_setup(&t.o.tls, &sopts, &err) < 0) {
        die("%s", error_get_pretty(err));
    }
    t.srv = nbd_server_new(ctx, &sopts, &err);
    if (!t.srv) {
        die("%s", error_get_pretty(err));
    }
    eopts.name = t.o.export_name ? t.o.export_name : "";
    eopts.description = t.o.description;
    eopts.read_only = t.o.read_only;
    eopts.allocation_depth = t.o.allocation_depth;
    eopts.bitmap = t.o.bitmap;
    /* One connection allowed (-e 1, the default): clients must not open more. */
    eopts.multi_conn = t.o.shared == 1 ? 0 : -1;
    if (nbd_server_add_export(t.srv, blk, &eopts, &err) < 0) {
        die("%s", error_get_pretty(err));
    }
    nbd_server_set_client_event(t.srv, client_event, &t);
    listen_all(&t);
    if (t.o.pid_file) {
        write_pid_file(t.o.pid_file);
    }
    if (ready_fd >= 0) {
        char b = 1;

        detach_stdio();
        if (write(ready_fd, &b, 1) != 1) {
            return EXIT_FAILURE;
        }
        close(ready_fd);
    }
    while (!t.stop) {
        aio_poll(ctx, true);
    }
    nbd_server_free(t.srv);
    tool_tls_free(&t.o.tls);
    aio_set_fd_handler(ctx, t.sig_fd, NULL, NULL, NULL, NULL, NULL);
    close(t.sig_fd);
    ret = blk_flush(blk);
    blk_unref(blk);
    if (t.o.pid_file) {
        unlink(t.o.pid_file);
    }
    return ret < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
