/* Unit tests: block options (block/opts*.c, block/keyval.c, block/json*.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <coblk/opts.h>

static void test_opts_smoke(void **state)
{
    BlockOpts *o = bopts_new();

    assert_int_equal(bopts_parse_keyval(o, "a=b", NULL, NULL), 0);
    bopts_free(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opts_smoke),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
