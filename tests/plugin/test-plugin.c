/*
 * Plugin loader tests (block/plugin.c): the sample xor plugin loaded from
 * the plugin directory and by path, bytes read back and written through it;
 * each rejection (API version, small tables, missing entry, missing
 * callback, name clash, declined) with its message; an old table accepted
 * with its tail ignored. Links the shared library, as an embedder would.
 * $PLUGIN_DIR holds the modules built by tests/plugin/meson.build.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <coblk/plugin.h>

static char mods[PATH_MAX];     /* where the modules are */
static char auto_dir[4096]; /* a scratch plugin directory */
static char img[4096];
static char warned[8192];

static void warn_cb(void *opaque, const char *msg)
{
    strncat(warned, msg, sizeof(warned) - strlen(warned) - 1);
    strncat(warned, "\n", sizeof(warned) - strlen(warned) - 1);
}

static const char *mod(const char *name)
{
    static char path[8][PATH_MAX + 64];
    static int next;
    char *p = path[next++ % 8];

    snprintf(p, PATH_MAX + 64, "%s/%s", mods, name);
    return p;
}

/* An xor image: header, size bytes of pattern XORed with key 0x5a. */
static void make_xor_image(const char *path, uint64_t size)
{
    uint8_t hdr[512] = "COBLKXOR";
    uint8_t *data = malloc(size);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);

    assert_true(fd >= 0);
    for (int i = 0; i < 8; i++) {
        hdr[8 + i] = (uint8_t)(size >> (8 * i));
    }
    hdr[16] = 0x5a;
    for (uint64_t i = 0; i < size; i++) {
        data[i] = (uint8_t)(i * 13 + i / 512) ^ 0x5a;
    }
    assert_int_equal(pwrite(fd, hdr, sizeof(hdr), 0), sizeof(hdr));
    assert_int_equal(pwrite(fd, data, size, 512), (ssize_t)size);
    close(fd);
    free(data);
}

/* Loads path; asserts it fails with ret and a message holding both parts. */
static void expect_reject(const char *name, int ret, const char *reason)
{
    Error *err = NULL;

    assert_int_equal(coblk_plugin_load(mod(name), &err), ret);
    assert_non_null(err);
    if (!strstr(error_get_pretty(err), name) || !strstr(error_get_pretty(err), reason)) {
        fail_msg("message '%s' lacks '%s' or '%s'", error_get_pretty(err), name, reason);
    }
    error_free(err);
}

/* The directory set before the first lookup is loaded once; bad files are warned about. */
static void test_plugin_autoload_dir(void **state)
{
    char link_path[4200];

    snprintf(link_path, sizeof(link_path), "%s/libcoblk-xor.so", auto_dir);
    assert_int_equal(symlink(mod("libcoblk-xor.so"), link_path), 0);
    snprintf(link_path, sizeof(link_path), "%s/plugin-bad-version.so", auto_dir);
    assert_int_equal(symlink(mod("plugin-bad-version.so"), link_path), 0);
    assert_int_equal(coblk_plugin_set_dir(auto_dir), 0);

    assert_non_null(bdrv_find_format("xor"));      /* first lookup: loads the directory */
    assert_non_null(strstr(warned, "plugin-bad-version.so"));
    assert_non_null(strstr(warned, "built for plugin API 2.0"));
    assert_non_null(strstr(coblk_plugin_path_of(bdrv_find_format("xor")), "libcoblk-xor.so"));
    assert_null(coblk_plugin_path_of(bdrv_find_format("raw")));
    assert_int_equal(coblk_plugin_set_dir("/nonexistent"), -EBUSY);
    /* The same file by another path is not loaded twice. */
    assert_int_equal(coblk_plugin_load(mod("libcoblk-xor.so"), NULL), 0);
}

/* Guest bytes come back decoded; writes land encoded in the file. */
static void test_plugin_xor_read_write(void **state)
{
    Error *err = NULL;
    BlockOpts *o = bopts_new();
    uint8_t buf[4096], raw[4096];
    BlockBackend *blk;
    int fd;

    make_xor_image(img, 65536);
    bopts_set(o, "driver", "xor");
    blk = blk_new_open(img, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("%s", error_get_pretty(err));
    }
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "xor");
    assert_int_equal(blk_getlength(blk), 65536);
    assert_int_equal(blk_pread(blk, 8192, sizeof(buf), buf, 0), 0);
    for (size_t i = 0; i < sizeof(buf); i++) {
        uint64_t g = 8192 + i;

        assert_int_equal(buf[i], (uint8_t)(g * 13 + g / 512));
    }
    memset(buf, 0xc3, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 4096, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    blk_unref(blk);

    fd = open(img, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, raw, sizeof(raw), 512 + 4096), sizeof(raw));
    close(fd);
    for (size_t i = 0; i < sizeof(raw); i++) {
        assert_int_equal(raw[i], 0xc3 ^ 0x5a);
    }
    /* Probing finds the plugin's format too. */
    blk = blk_new_open(img, NULL, 0, &err);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "xor");
    assert_int_equal(blk_pread(blk, 4096, sizeof(buf), buf, 0), 0);
    assert_int_equal(buf[0], 0xc3);
    assert_int_equal(buf[sizeof(buf) - 1], 0xc3);
    blk_unref(blk);
}

static void test_plugin_rejects(void **state)
{
    expect_reject("plugin-bad-version.so", -EPROTO, "built for plugin API 2.0, this coblk "
                  "supports 1.x");
    expect_reject("plugin-small-table.so", -EINVAL, "plugin table too small (struct_size 8");
    expect_reject("plugin-small-driver.so", -EINVAL, "driver table too small (struct_size 16");
    expect_reject("plugin-no-entry.so", -ENOEXEC, "no entry symbol coblk_plugin_init");
    expect_reject("plugin-no-preadv.so", -EINVAL, "driver 'badfmt' lacks the mandatory "
                  "callback co_preadv");
    expect_reject("plugin-dup-name.so", -EEXIST, "driver 'raw' is already registered "
                  "(a built-in driver)");
    expect_reject("plugin-decline.so", -EINVAL, "returned NULL");
    expect_reject("no-such-plugin.so", -ENOENT, "No such file");
    assert_null(bdrv_find_format("badfmt"));
}

/* An older, smaller table: accepted; fields past its struct_size count as absent. */
static void test_plugin_old_table(void **state)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    BlockBackend *blk;
    uint8_t u[16], buf[512];

    assert_int_equal(coblk_plugin_load(mod("plugin-old-driver.so"), &err), 0);
    assert_non_null(bdrv_find_format("oldfmt"));
    assert_null(bdrv_driver_extensions("oldfmt"));
    assert_int_equal(bdrv_driver_capabilities("oldfmt") & BDRV_CAP_UUID, 0);
    assert_true(bdrv_driver_capabilities("xor") & BDRV_CAP_WRITE);
    assert_string_equal(bdrv_driver_extensions("xor")[0], "xor");

    make_xor_image(img, 4096);
    bopts_set(o, "driver", "oldfmt");
    blk = blk_new_open(img, o, 0, &err);
    assert_non_null(blk);
    assert_int_equal(bdrv_get_uuid(blk_bs(blk), BLOCK_UUID_IMAGE, u), -ENOTSUP);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, "COBLKXOR", 8);    /* passed through: the header itself */
    blk_unref(blk);
    /* A second plugin may not take a name a plugin already has. */
    expect_reject("plugin-old-driver2.so", -EEXIST, "plugin-old-driver.so");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plugin_autoload_dir),
        cmocka_unit_test(test_plugin_xor_read_write),
        cmocka_unit_test(test_plugin_rejects),
        cmocka_unit_test(test_plugin_old_table),
    };
    const char *dir = getenv("COBLK_TEST_DIR");
    int ret;

    if (!realpath(getenv("PLUGIN_DIR") ? getenv("PLUGIN_DIR") : ".", mods)) {
        return 1;
    }
    snprintf(auto_dir, sizeof(auto_dir), "%s/plugins-%d", dir ? dir : ".", (int)getpid());
    snprintf(img, sizeof(img), "%s/coblk-plugin-%d.xor", dir ? dir : ".", (int)getpid());
    assert_int_equal(mkdir(auto_dir, 0755), 0);
    coblk_set_warn_handler(warn_cb, NULL);
    ret = cmocka_run_group_tests(tests, NULL, NULL);
    unlink(img);
    char p[4200];
    snprintf(p, sizeof(p), "%s/libcoblk-xor.so", auto_dir);
    unlink(p);
    snprintf(p, sizeof(p), "%s/plugin-bad-version.so", auto_dir);
    unlink(p);
    rmdir(auto_dir);
    return ret;
}
