/* Unit tests: Error objects and warnings (aio/error.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <coblk/common.h>

static void test_error_setg_formats_message(void **state)
{
    Error *err = NULL;

    error_setg(&err, "qcow2: l1_size %d exceeds limit %d", 268435457, 33554432);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), "qcow2: l1_size 268435457 exceeds limit 33554432");
    error_free(err);
}

static void test_error_first_error_wins(void **state)
{
    Error *err = NULL;

    error_setg(&err, "first");
    error_setg(&err, "second");
    assert_string_equal(error_get_pretty(err), "first");
    error_free(err);
}

static void test_error_null_errp_ignored(void **state)
{
    error_setg(NULL, "nobody listens");
    error_setg_errno(NULL, -EIO, "nobody listens");
}

static void test_error_errno_appends_strerror(void **state)
{
    Error *err = NULL;

    error_setg_errno(&err, -ENOENT, "cannot open '%s'", "x.img");
    assert_string_equal(error_get_pretty(err), "cannot open 'x.img': No such file or directory");
    error_free(err);
}

static void test_error_prepend_and_propagate(void **state)
{
    Error *local = NULL;
    Error *err = NULL;
    Error *other = NULL;

    error_setg(&local, "bad magic");
    error_prepend(&local, "%s: ", "a.qcow2");
    error_propagate(&err, local);
    assert_string_equal(error_get_pretty(err), "a.qcow2: bad magic");
    /* A second error propagated into a set errp is dropped, not leaked. */
    error_setg(&other, "later");
    error_propagate(&err, other);
    assert_string_equal(error_get_pretty(err), "a.qcow2: bad magic");
    error_free(err);
}

static char last_warning[256];

static void capture_warning(void *opaque, const char *msg)
{
    int *count = opaque;

    (*count)++;
    snprintf(last_warning, sizeof(last_warning), "%s", msg);
}

static void test_error_warn_handler_receives_message(void **state)
{
    int count = 0;

    coblk_set_warn_handler(capture_warning, &count);
    coblk_warn("engine %s unavailable", "io_uring");
    coblk_set_warn_handler(NULL, NULL);
    assert_int_equal(count, 1);
    assert_string_equal(last_warning, "engine io_uring unavailable");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_setg_formats_message),
        cmocka_unit_test(test_error_first_error_wins),
        cmocka_unit_test(test_error_null_errp_ignored),
        cmocka_unit_test(test_error_errno_appends_strerror),
        cmocka_unit_test(test_error_prepend_and_propagate),
        cmocka_unit_test(test_error_warn_handler_receives_message),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
