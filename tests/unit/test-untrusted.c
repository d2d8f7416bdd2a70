/*
 * Unit tests: untrusted-image mode against hostile images
 * (/work/shared/UNTRUSTED-INPUT.md, "images pointing at host files" and
 * "resource exhaustion on inspection").
 *  - Images whose headers name /etc/passwd (a vmdk flat extent, a vmdk
 *    parent hint, a qed backing file) fail to open untrusted, and the
 *    process never opened /etc/passwd: this test interposes open(),
 *    open64(), openat() and openat64() and counts the calls naming it (process-local,
 *    unlike inotify, so other programs reading /etc/passwd do not matter).
 *    The same vmdk opened trusted does open it: the positive control that
 *    shows the interposition sees the library's opens. The same for the
 *    parents of vpc and vhdx differencing disks named by an absolute path
 *    in another folder (that parent is the watched file then).
 *  - Open, info, check and a block-status walk of vdi and vmdk images with
 *    the largest tables the drivers accept, on sparse files, finish in a child process
 *    limited to 1 GiB of address space and 10 s of CPU (an error is fine,
 *    a crash, a kill or a hang is not). Not under ASan, whose shadow memory
 *    does not fit an address-space limit.
 */
#include <dlfcn.h>
#include <sys/resource.h>
#include <sys/wait.h>

#include <coblk/image.h>

#include "block/block-int.h"
#include "coblk-config.h"
#include "drv-test-util.h"

static char dir[4096], img[4200], data[4200];

static int setup(void **state)
{
    snprintf(dir, sizeof(dir), "%s/untrusted-%d", drv_test_dir(), (int)getpid());
    mkdir(dir, 0755);
    snprintf(img, sizeof(img), "%s/img", dir);
    snprintf(data, sizeof(data), "%s/data.bin", dir);
    return 0;
}

static int teardown(void **state)
{
    unlink(img);
    unlink(data);
    rmdir(dir);
    return 0;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static char *opts_for(const char *fmt, const char *path)
{
    static char o[9000];

    snprintf(o, sizeof(o), "driver=%s,file.driver=file,file.filename=%s", fmt, path);
    return o;
}

/* Opens of the watched file (/etc/passwd unless a test sets another) since the last call. */
static int passwd_opened;
static const char *watched = "/etc/passwd";

static void note_open(const char *path)
{
    if (path && !strcmp(path, watched)) {
        passwd_opened++;
    }
}

static mode_t open_mode(int flags, va_list ap)
{
    return flags & (O_CREAT | O_TMPFILE) ? (mode_t)va_arg(ap, int) : 0;
}

/*
 * The interposers carry the libc symbol names explicitly: with
 * _FILE_OFFSET_BITS=64 the headers rename open() to open64() and openat()
 * to openat64(), so the library calls either name.
 */
#define INTERPOSE_OPEN(cname, sym)                                              \
    int cname(const char *path, int flags, ...) __asm__(sym);                  \
    int cname(const char *path, int flags, ...)                                \
    {                                                                           \
        static int (*real)(const char *, int, ...);                             \
        va_list ap;                                                             \
        mode_t mode;                                                            \
                                                                                \
        va_start(ap, flags);                                                    \
        mode = open_mode(flags, ap);                                            \
        va_end(ap);                                                             \
        note_open(path);                                                        \
        if (!real) {                                                            \
            real = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, sym);      \
        }                                                                       \
        return real(path, flags, mode);                                         \
    }

#define INTERPOSE_OPENAT(cname, sym)                                            \
    int cname(int dirfd, const char *path, int flags, ...) __asm__(sym);       \
    int cname(int dirfd, const char *path, int flags, ...)                     \
    {                                                                           \
        static int (*real)(int, const char *, int, ...);                        \
        va_list ap;                                                             \
        mode_t mode;                                                            \
                                                                                \
        va_start(ap, flags);                                                    \
        mode = open_mode(flags, ap);                                            \
        va_end(ap);                                                             \
        note_open(path);                                                        \
        if (!real) {                                                            \
            real = (int (*)(int, const char *, int, ...))dlsym(RTLD_NEXT, sym); \
        }                                                                       \
        return real(dirfd, path, flags, mode);                                  \
    }

INTERPOSE_OPEN(test_open, "open")
INTERPOSE_OPEN(test_open64, "open64")
INTERPOSE_OPENAT(test_openat, "openat")
INTERPOSE_OPENAT(test_openat64, "openat64")

static int passwd_events(void)
{
    int n = passwd_opened;

    passwd_opened = 0;
    return n;
}

static void test_untrusted_passwd_never_opened(void **state)
{
    char cmd[9000];

    /* A flat extent at /etc/passwd. */
    write_text(img, "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
                    "RW 1 FLAT \"/etc/passwd\" 0\n");
    passwd_events();
    drv_test_open_fails(opts_for("vmdk", img), BDRV_O_UNTRUSTED, "not a sibling");
    assert_int_equal(passwd_events(), 0);
    /* Positive control: trusted, the extent is opened, and the watch sees it. */
    blk_unref(drv_test_open_ok(opts_for("vmdk", img), 0));
    assert_true(passwd_events() > 0);

    /* A parent hint at /etc/passwd (the extent itself is a sibling). */
    drv_test_make_file(data, 4096, 0x42);
    write_text(img, "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=87654321\n"
                    "createType=\"monolithicFlat\"\nparentFileNameHint=\"/etc/passwd\"\n"
                    "RW 8 FLAT \"data.bin\" 0\n");
    drv_test_open_fails(opts_for("vmdk", img), BDRV_O_UNTRUSTED, "not a sibling");
    assert_int_equal(passwd_events(), 0);

    /* A qed backing file at /etc/passwd (qemu-img writes it without opening it). */
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qed -u -b /etc/passwd -F raw '%s' 1M "
             ">/dev/null 2>&1", img);
    if (bdrv_find_format("qed") && system(cmd) == 0) {
        passwd_events();
        drv_test_open_fails(opts_for("qed", img), BDRV_O_UNTRUSTED, "not a sibling");
        assert_int_equal(passwd_events(), 0);
    }
}

/* ---------------------------------------------------------------------- */
/* Bounded memory and CPU */

static void poke(const char *path, off_t off, const void *bytes, size_t len)
{
    int fd = open(path, O_WRONLY);

    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, bytes, len, off), (ssize_t)len);
    close(fd);
}

static void poke_le32(const char *path, off_t off, uint32_t v)
{
    uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };

    poke(path, off, b, 4);
}

static void poke_le64(const char *path, off_t off, uint64_t v)
{
    poke_le32(path, off, (uint32_t)v);
    poke_le32(path, off + 4, (uint32_t)(v >> 32));
}

static void create(const char *fmt, const char *path, const char *opts)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, opts, NULL, NULL), 0);
    if (bdrv_create(fmt, path, o, &err) < 0) {
        fail_msg("create %s: %s", fmt, error_get_pretty(err));
    }
}

/*
 * The parents of vpc and vhdx differencing disks (their parent locators name
 * an absolute path in another folder): an untrusted open refuses them and
 * never opens the parent; a trusted open does (the positive control).
 */
static void parent_elsewhere(const char *fmt, const char *ext)
{
    char sub[4300], parent[4400], child[4400], opt[4600];

    snprintf(sub, sizeof(sub), "%s/elsewhere", dir);
    snprintf(parent, sizeof(parent), "%s/parent.%s", sub, ext);
    snprintf(child, sizeof(child), "%s/child.%s", dir, ext);
    mkdir(sub, 0755);
    create(fmt, parent, "size=4M");
    snprintf(opt, sizeof(opt), "backing_file=%s,backing_fmt=%s", parent, fmt);
    create(fmt, child, opt);
    watched = parent;
    passwd_events();
    drv_test_open_fails(opts_for(fmt, child), BDRV_O_UNTRUSTED, "not a sibling");
    assert_int_equal(passwd_events(), 0);
    blk_unref(drv_test_open_ok(opts_for(fmt, child), 0));
    assert_true(passwd_events() > 0);
    watched = "/etc/passwd";
    unlink(child);
    unlink(parent);
    rmdir(sub);
}

static void test_untrusted_diff_parent_elsewhere(void **state)
{
    parent_elsewhere("vpc", "vhd");
    parent_elsewhere("vhdx", "vhdx");
}

static void quiet(void *opaque, const char *msg)
{
}

typedef struct MapArg {
    BlockDriverState *bs;
    int64_t len;
} MapArg;

/* A block-status walk of at most 10000 extents (coblk-img map). */
static int64_t coroutine_fn map_co(void *opaque)
{
    MapArg *m = opaque;
    int64_t off = 0;

    for (int i = 0; i < 10000 && off < m->len; i++) {
        int64_t pnum = 0, map = 0;
        BlockDriverState *file = NULL;

        if (bdrv_co_block_status_above(m->bs, NULL, off, m->len - off, &pnum, &map, &file,
                                       NULL) < 0 || pnum <= 0) {
            return -EIO;
        }
        off += pnum;
    }
    return 0;
}

/* In the child: everything an inspection tool does; errors are fine. */
static void inspect(const char *fmt, const char *path)
{
    char msg[1024];
    BlockBackend *blk = drv_test_open(opts_for(fmt, path), BDRV_O_UNTRUSTED, msg, sizeof(msg));
    BdrvCheckResult res = { .report = quiet };
    BlockDriverInfo bdi;
    MapArg m;
    char *s;

    if (!blk) {
        return;
    }
    bdrv_get_info(blk_bs(blk), &bdi);
    s = bdrv_get_specific_info(blk_bs(blk), NULL);
    free(s);
    bdrv_check(blk_bs(blk), &res, BDRV_FIX_NONE);
    m = (MapArg){ blk_bs(blk), blk_getlength(blk) };
    bdrv_run_co(blk_get_aio_context(blk), map_co, &m);
    blk_unref(blk);
}

/* Runs inspect() in a child under the limits; the child must exit normally. */
static void bounded(const char *fmt, const char *path)
{
    struct rusage ru;
    pid_t pid = fork();
    int st;

    assert_true(pid >= 0);
    if (pid == 0) {
        struct rlimit as = { 1ULL << 30, 1ULL << 30 }, cpu = { 10, 10 };

        if (setrlimit(RLIMIT_AS, &as) < 0 || setrlimit(RLIMIT_CPU, &cpu) < 0) {
            _exit(3);
        }
        inspect(fmt, path);
        _exit(0);
    }
    assert_int_equal(wait4(pid, &st, 0, &ru), pid);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fail_msg("%s: inspecting a hostile image ended with %s %d", fmt,
                 WIFSIGNALED(st) ? "signal" : "exit status",
                 WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    }
    print_message("%s: %.2f s of CPU\n", fmt,
                  (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                  (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
}

static void test_untrusted_bounded_inspection(void **state)
{
    uint32_t blocks = (UINT32_C(0x80000000) - 512u) / 4u; /* vdi's limit */

    if (COBLK_SANITIZERS) {
        skip();
    }
    /* vdi: the largest block map, on a sparse file (2 GiB of zero entries). */
    create("vdi", img, "size=4M");
    poke_le32(img, 0x158, 0x200u + blocks * 4u);           /* data offset */
    poke_le64(img, 0x170, (uint64_t)blocks << 20);         /* disk size */
    poke_le32(img, 0x180, blocks);                         /* blocks in image */
    assert_int_equal(truncate(img, 0x200 + (off_t)blocks * 4), 0);
    bounded("vdi", img);

    /* vmdk: the largest capacity whose grain directory is under its cap. */
    create("vmdk", img, "size=1M");
    poke_le64(img, 12, 1ULL << 39);                        /* capacity in sectors */
    assert_int_equal(truncate(img, 1LL << 30), 0);
    bounded("vmdk", img);

    unlink(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_untrusted_passwd_never_opened),
        cmocka_unit_test(test_untrusted_diff_parent_elsewhere),
        cmocka_unit_test(test_untrusted_bounded_inspection),
    };

    return cmocka_run_group_tests(tests, setup, teardown);
}
