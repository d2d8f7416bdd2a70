/* Unit tests: block options (block/opts*.c, block/keyval.c, block/json*.c). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <coblk/opts.h>

/* Parses keyval text into a new map; the test fails on error. */
static BlockOpts *kv(const char *s, const char *implied)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_non_null(o);
    if (bopts_parse_keyval(o, s, implied, &err) < 0) {
        fail_msg("keyval '%s': %s", s, error_get_pretty(err));
    }
    return o;
}

static BlockOpts *js(const char *s)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_non_null(o);
    if (bopts_parse_json(o, s, &err) < 0) {
        fail_msg("json '%s': %s", s, error_get_pretty(err));
    }
    return o;
}

/* Asserts that parsing fails with exactly msg and leaves a fresh map empty. */
static void kv_fails(const char *s, const char *implied, int ret, const char *msg)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, s, implied, &err), ret);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    assert_int_equal(bopts_count(o), 0);
    error_free(err);
    bopts_free(o);
}

static void js_fails(const char *s, int ret, const char *msg)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_json(o, s, &err), ret);
    assert_non_null(err);
    assert_string_equal(error_get_pretty(err), msg);
    assert_int_equal(bopts_count(o), 0);
    error_free(err);
    bopts_free(o);
}

static void assert_kv(const BlockOpts *o, size_t i, const char *key, const char *value)
{
    assert_true(i < bopts_count(o));
    assert_string_equal(bopts_key_at(o, i), key);
    assert_string_equal(bopts_value_at(o, i), value);
}

/* Same keys with the same values, in any order. */
static bool same_map(const BlockOpts *a, const BlockOpts *b)
{
    if (bopts_count(a) != bopts_count(b)) {
        return false;
    }
    for (size_t i = 0; i < bopts_count(a); i++) {
        const char *v = bopts_get(b, bopts_key_at(a, i));

        if (!v || strcmp(v, bopts_value_at(a, i)) != 0) {
            return false;
        }
    }
    return true;
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);

    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

/* ---- the map ---- */

static void test_opts_map_set_get_del(void **state)
{
    BlockOpts *o = bopts_new();

    assert_int_equal(bopts_count(o), 0);
    assert_int_equal(bopts_set(o, "driver", "qcow2"), 0);
    assert_int_equal(bopts_set(o, "file.filename", "a.img"), 0);
    assert_int_equal(bopts_set(o, "file.driver", "file"), 0);
    assert_int_equal(bopts_set(o, "driver", "raw"), 0);
    assert_int_equal(bopts_count(o), 3);
    assert_kv(o, 0, "driver", "raw");
    assert_kv(o, 1, "file.filename", "a.img");
    assert_kv(o, 2, "file.driver", "file");
    assert_null(bopts_key_at(o, 3));
    assert_null(bopts_value_at(o, 3));
    assert_string_equal(bopts_get(o, "file.driver"), "file");
    assert_null(bopts_get(o, "file"));
    assert_true(bopts_has(o, "driver"));
    assert_false(bopts_has(o, "drive"));
    assert_int_equal(bopts_del(o, "file.filename"), 1);
    assert_int_equal(bopts_del(o, "file.filename"), 0);
    assert_kv(o, 1, "file.driver", "file");
    assert_int_equal(bopts_count(o), 2);
    bopts_free(o);
    bopts_free(NULL);
}

static void test_opts_map_set_rejects_bad_keys(void **state)
{
    BlockOpts *o = bopts_new();
    char *longkey = repeat('k', BOPTS_MAX_KEY_LEN + 1);

    assert_int_equal(bopts_set(o, "", "x"), -EINVAL);
    assert_int_equal(bopts_set(o, "a..b", "x"), -EINVAL);
    assert_int_equal(bopts_set(o, ".a", "x"), -EINVAL);
    assert_int_equal(bopts_set(o, "a.", "x"), -EINVAL);
    assert_int_equal(bopts_set(o, longkey, "x"), -EINVAL);
    assert_int_equal(bopts_set(o, "a", "1"), 0);
    assert_int_equal(bopts_set(o, "a.b", "2"), -EINVAL);
    assert_int_equal(bopts_set(o, "c.d", "2"), 0);
    assert_int_equal(bopts_set(o, "c", "2"), -EINVAL);
    assert_int_equal(bopts_set(o, "ab", "3"), 0);
    assert_int_equal(bopts_count(o), 3);
    free(longkey);
    bopts_free(o);
}

static void test_opts_map_key_limit(void **state)
{
    BlockOpts *o = bopts_new();
    char key[32];

    for (int i = 0; i < BOPTS_MAX_KEYS; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        assert_int_equal(bopts_set(o, key, "v"), 0);
    }
    assert_int_equal(bopts_set(o, "one-more", "v"), -E2BIG);
    assert_int_equal(bopts_set(o, "k7", "replaced"), 0);
    assert_string_equal(bopts_get(o, "k7"), "replaced");
    bopts_free(o);
}

static void test_opts_map_clone_is_deep(void **state)
{
    BlockOpts *o = kv("a=1,b.c=2", NULL);
    BlockOpts *c = bopts_clone(o);

    assert_true(same_map(o, c));
    assert_int_equal(bopts_set(o, "a", "changed"), 0);
    assert_string_equal(bopts_get(c, "a"), "1");
    assert_kv(c, 1, "b.c", "2");
    bopts_free(o);
    bopts_free(c);
}

/* ---- keyval ---- */

static void test_opts_keyval_basic(void **state)
{
    BlockOpts *o = kv("driver=qcow2,file.driver=file,file.filename=a.qcow2,cache.direct=on", NULL);

    assert_int_equal(bopts_count(o), 4);
    assert_kv(o, 0, "driver", "qcow2");
    assert_kv(o, 1, "file.driver", "file");
    assert_kv(o, 2, "file.filename", "a.qcow2");
    assert_kv(o, 3, "cache.direct", "on");
    bopts_free(o);
}

static void test_opts_keyval_comma_escape(void **state)
{
    BlockOpts *o = kv("file.filename=a,,b,,,format=raw,x=,,,y=end,,", NULL);

    assert_int_equal(bopts_count(o), 4);
    assert_kv(o, 0, "file.filename", "a,b,");
    assert_kv(o, 1, "format", "raw");
    assert_kv(o, 2, "x", ",");
    assert_kv(o, 3, "y", "end,");
    bopts_free(o);
}

static void test_opts_keyval_empty_values_and_trailing_comma(void **state)
{
    BlockOpts *o = kv("a=,b=x=y,", NULL);

    assert_int_equal(bopts_count(o), 2);
    assert_kv(o, 0, "a", "");
    assert_kv(o, 1, "b", "x=y");
    bopts_free(o);
    o = kv("", NULL);
    assert_int_equal(bopts_count(o), 0);
    bopts_free(o);
}

static void test_opts_keyval_implied_key(void **state)
{
    BlockOpts *o = kv("a.img,format=raw", "file");

    assert_kv(o, 0, "file", "a.img");
    assert_kv(o, 1, "format", "raw");
    bopts_free(o);
    o = kv("we,,ird.img,format=raw", "file");
    assert_kv(o, 0, "file", "we,ird.img");
    bopts_free(o);
    /* A first element with '=' is an ordinary key. */
    o = kv("format=raw", "file");
    assert_int_equal(bopts_count(o), 1);
    assert_kv(o, 0, "format", "raw");
    bopts_free(o);
    /* Only the first element may be implied. */
    kv_fails("format=raw,b.img", "file", -EINVAL, "Expected '=' after parameter 'b.img'");
    kv_fails("a.img,file=b.img", "file", -EINVAL, "Duplicate parameter 'file'");
}

static void test_opts_keyval_errors(void **state)
{
    kv_fails("=raw", NULL, -EINVAL, "Empty parameter name in '=raw'");
    kv_fails("a=1,=raw", NULL, -EINVAL, "Empty parameter name in '=raw'");
    kv_fails(",a=1", NULL, -EINVAL, "Empty parameter name in ',a=1'");
    kv_fails("raw", NULL, -EINVAL, "Expected '=' after parameter 'raw'");
    kv_fails("a=1,b,c=2", NULL, -EINVAL, "Expected '=' after parameter 'b'");
    kv_fails("format=raw,format=qcow2", NULL, -EINVAL, "Duplicate parameter 'format'");
    kv_fails("a=1,a.b=2", NULL, -EINVAL, "Parameter 'a.b' conflicts with 'a'");
    kv_fails("a.b=2,a=1", NULL, -EINVAL, "Parameter 'a.b' conflicts with 'a'");
    kv_fails("a b=1", NULL, -EINVAL, "Invalid parameter name 'a b'");
    kv_fails("a..b=1", NULL, -EINVAL, "Invalid parameter name 'a..b'");
    kv_fails("a.=1", NULL, -EINVAL, "Invalid parameter name 'a.'");
    kv_fails(".a=1", NULL, -EINVAL, "Invalid parameter name '.a'");
}

static void test_opts_keyval_failure_leaves_map_unchanged(void **state)
{
    BlockOpts *o = kv("format=raw", NULL);
    Error *err = NULL;

    assert_int_equal(bopts_parse_keyval(o, "a=1,format=qcow2", NULL, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "Duplicate parameter 'format'");
    error_free(err);
    err = NULL;
    assert_int_equal(bopts_parse_keyval(o, "a=1,b", NULL, &err), -EINVAL);
    error_free(err);
    assert_int_equal(bopts_count(o), 1);
    assert_kv(o, 0, "format", "raw");
    /* A successful parse adds to what is there. */
    assert_int_equal(bopts_parse_keyval(o, "a=1", NULL, NULL), 0);
    assert_kv(o, 1, "a", "1");
    bopts_free(o);
}

static void test_opts_keyval_limits(void **state)
{
    char *big = repeat('x', BOPTS_MAX_INPUT + 1);
    char *s;
    size_t len = 0;

    memcpy(big, "a=", 2);
    kv_fails(big, NULL, -E2BIG, "Option string exceeds the limit of 1048576 bytes");
    big[BOPTS_MAX_INPUT] = '\0';
    {
        BlockOpts *o = kv(big, NULL);

        assert_int_equal(strlen(bopts_get(o, "a")), BOPTS_MAX_INPUT - 2);
        bopts_free(o);
    }
    free(big);

    s = malloc(16 * (BOPTS_MAX_KEYS + 1));
    for (int i = 0; i <= BOPTS_MAX_KEYS; i++) {
        len += (size_t)sprintf(s + len, "k%d=v,", i);
    }
    kv_fails(s, NULL, -E2BIG, "Options exceed the limit of 4096 keys");
    free(s);

    s = repeat('k', BOPTS_MAX_KEY_LEN + 3);
    memcpy(s + BOPTS_MAX_KEY_LEN + 1, "=1", 2);
    kv_fails(s, NULL, -E2BIG,
             "Parameter name 'kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
             "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk..."
             "' exceeds the limit of 4096 bytes");
    free(s);

    s = malloc(2 * 65 + 3);
    for (int i = 0; i < 65; i++) {
        memcpy(s + 2 * i, "a.", 2);
    }
    memcpy(s + 2 * 65 - 1, "=1", 3);
    {
        char msg[256];

        snprintf(msg, sizeof(msg), "Parameter name '%.128s...' exceeds the limit of 64 components",
                 s);
        kv_fails(s, NULL, -E2BIG, msg);
    }
    s[2 * 64 - 1] = '=';
    s[2 * 64] = '1';
    s[2 * 64 + 1] = '\0';
    {
        BlockOpts *o = kv(s, NULL);

        assert_int_equal(bopts_count(o), 1);
        bopts_free(o);
    }
    free(s);
}

/* ---- JSON ---- */

static void test_opts_json_flattens_objects_and_arrays(void **state)
{
    BlockOpts *o = js("{ \"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": "
                      "\"a.qcow2\"}, \"server\": [{\"host\": \"h1\", \"port\": 10809}, "
                      "{\"host\": \"h2\"}], \"ro\": true, \"x\": false, \"n\": -1.5e3, "
                      "\"m\": [[1, 2], [3]], \"e\": {}, \"f\": []}\n");

    assert_int_equal(bopts_count(o), 12);
    assert_kv(o, 0, "driver", "qcow2");
    assert_kv(o, 1, "file.driver", "file");
    assert_kv(o, 2, "file.filename", "a.qcow2");
    assert_kv(o, 3, "server.0.host", "h1");
    assert_kv(o, 4, "server.0.port", "10809");
    assert_kv(o, 5, "server.1.host", "h2");
    assert_kv(o, 6, "ro", "on");
    assert_kv(o, 7, "x", "off");
    assert_kv(o, 8, "n", "-1.5e3");
    assert_kv(o, 9, "m.0.0", "1");
    assert_kv(o, 10, "m.0.1", "2");
    assert_kv(o, 11, "m.1.0", "3");
    bopts_free(o);
    o = js("{}");
    assert_int_equal(bopts_count(o), 0);
    bopts_free(o);
}

static void test_opts_json_numbers(void **state)
{
    BlockOpts *o = js("{\"a\":0,\"b\":-0,\"c\":12.25,\"d\":1E+2,\"e\":3e-7,\"f\":-0.5E10}");

    assert_kv(o, 0, "a", "0");
    assert_kv(o, 1, "b", "-0");
    assert_kv(o, 2, "c", "12.25");
    assert_kv(o, 3, "d", "1E+2");
    assert_kv(o, 4, "e", "3e-7");
    assert_kv(o, 5, "f", "-0.5E10");
    bopts_free(o);
    js_fails("{\"a\":01}", -EINVAL, "Invalid JSON at offset 6: invalid number");
    js_fails("{\"a\":1.}", -EINVAL, "Invalid JSON at offset 7: invalid number");
    js_fails("{\"a\":-}", -EINVAL, "Invalid JSON at offset 6: invalid number");
    js_fails("{\"a\":1e}", -EINVAL, "Invalid JSON at offset 7: invalid number");
    js_fails("{\"a\":1e+}", -EINVAL, "Invalid JSON at offset 8: invalid number");
    js_fails("{\"a\":.5}", -EINVAL, "Invalid JSON at offset 5: unexpected character '.', "
                                    "expected a value");
    js_fails("{\"a\":+1}", -EINVAL, "Invalid JSON at offset 5: unexpected character '+', "
                                    "expected a value");
}

static void test_opts_json_string_escapes(void **state)
{
    BlockOpts *o = js("{\"s\": \"q\\\"b\\\\s\\/b\\bf\\fn\\nr\\rt\\t\", "
                      "\"u\": \"\\u00e9\\u20AC\\uD83D\\uDE00\\u0041\", "
                      "\"raw\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\", "
                      "\"k\\u00e9y\": \"v\"}");

    assert_kv(o, 0, "s", "q\"b\\s/b\bf\fn\nr\rt\t");
    assert_kv(o, 1, "u", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80" "A");
    assert_kv(o, 2, "raw", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    assert_kv(o, 3, "k\xc3\xa9y", "v");
    bopts_free(o);
    /* Highest code point and a 3-byte sequence at the top of the BMP. */
    o = js("{\"a\": \"\\uDBFF\\uDFFF\\uFFFF\"}");
    assert_string_equal(bopts_get(o, "a"), "\xf4\x8f\xbf\xbf\xef\xbf\xbf");
    bopts_free(o);
}

static void test_opts_json_string_errors(void **state)
{
    js_fails("{\"a\": \"x\\q\"}", -EINVAL, "Invalid JSON at offset 8: invalid escape '\\q'");
    js_fails("{\"a\": \"\\uD800\"}", -EINVAL,
             "Invalid JSON at offset 7: unpaired surrogate \\uD800");
    js_fails("{\"a\": \"\\uD800\\u0041\"}", -EINVAL,
             "Invalid JSON at offset 7: unpaired surrogate \\uD800");
    js_fails("{\"a\": \"\\uDC00\"}", -EINVAL,
             "Invalid JSON at offset 7: unpaired surrogate \\uDC00");
    js_fails("{\"a\": \"\\u12\"}", -EINVAL, "Invalid JSON at offset 7: invalid \\u escape");
    js_fails("{\"a\": \"\\u12G4\"}", -EINVAL, "Invalid JSON at offset 7: invalid \\u escape");
    js_fails("{\"a\": \"\\u0000\"}", -EINVAL,
             "Invalid JSON at offset 7: \\u0000 (NUL) is not allowed in strings");
    js_fails("{\"a\": \"x\ty\"}", -EINVAL, "Invalid JSON at offset 8: control character 0x09 in "
                                          "string");
    js_fails("{\"a\": \"\xc0\x80\"}", -EINVAL, "Invalid JSON at offset 7: invalid UTF-8 in string");
    js_fails("{\"a\": \"\xed\xa0\x80\"}", -EINVAL,
             "Invalid JSON at offset 7: invalid UTF-8 in string");
    js_fails("{\"a\": \"\xf4\x90\x80\x80\"}", -EINVAL,
             "Invalid JSON at offset 7: invalid UTF-8 in string");
    js_fails("{\"a\": \"\xe2\x82\"}", -EINVAL, "Invalid JSON at offset 7: invalid UTF-8 in string");
    js_fails("{\"a\": \"\xff\"}", -EINVAL, "Invalid JSON at offset 7: invalid UTF-8 in string");
    js_fails("{\"a\": \"abc", -EINVAL, "Invalid JSON at offset 10: unterminated string");
    js_fails("{\"a\": \"abc\\", -EINVAL, "Invalid JSON at offset 10: unterminated string");
}

static void test_opts_json_syntax_errors(void **state)
{
    js_fails("", -EINVAL, "Invalid JSON at offset 0: unexpected end of input, expected '{'");
    js_fails("[1]", -EINVAL, "Invalid JSON at offset 0: unexpected character '[', expected '{'");
    js_fails("  1", -EINVAL, "Invalid JSON at offset 2: unexpected character '1', expected '{'");
    js_fails("{\"a\" 1}", -EINVAL, "Invalid JSON at offset 5: unexpected character '1', "
                                   "expected ':'");
    js_fails("{\"a\":1 \"b\":2}", -EINVAL, "Invalid JSON at offset 7: unexpected character '\"', "
                                           "expected ',' or '}'");
    js_fails("{\"a\":1,}", -EINVAL, "Invalid JSON at offset 7: unexpected character '}', "
                                    "expected a member name");
    js_fails("{a:1}", -EINVAL, "Invalid JSON at offset 1: unexpected character 'a', "
                               "expected a member name");
    js_fails("{\"a\":[1,]}", -EINVAL, "Invalid JSON at offset 8: unexpected character ']', "
                                      "expected a value");
    js_fails("{\"a\":[1 2]}", -EINVAL, "Invalid JSON at offset 8: unexpected character '2', "
                                       "expected ',' or ']'");
    js_fails("{\"a\":1} x", -EINVAL, "Invalid JSON at offset 8: trailing characters after the "
                                     "object");
    js_fails("{\"a\":1}{}", -EINVAL, "Invalid JSON at offset 7: trailing characters after the "
                                     "object");
    js_fails("{\"a\":tru}", -EINVAL, "Invalid JSON at offset 5: unexpected character 't', "
                                     "expected a value");
    js_fails("{\"a\":1", -EINVAL, "Invalid JSON at offset 6: unexpected end of input, "
                                  "expected ',' or '}'");
    js_fails("{\"a\":\x01}", -EINVAL, "Invalid JSON at offset 5: unexpected byte 0x01, "
                                      "expected a value");
    js_fails("{\"\":1}", -EINVAL, "Invalid JSON at offset 1: empty member name");
    js_fails("{\"a\":{\"b\":null}}", -EINVAL, "Parameter 'a.b' must not be null");
    js_fails("{\"a\":[true, null]}", -EINVAL, "Parameter 'a.1' must not be null");
}

static void test_opts_json_dotted_names_merge_and_conflict(void **state)
{
    BlockOpts *o = js("{\"a.b\": \"1\", \"a\": {\"c\": \"2\"}, \"x.0\": 5, \"x\": {\"1\": 6}}");

    assert_int_equal(bopts_count(o), 4);
    assert_kv(o, 0, "a.b", "1");
    assert_kv(o, 1, "a.c", "2");
    assert_kv(o, 2, "x.0", "5");
    assert_kv(o, 3, "x.1", "6");
    bopts_free(o);
    js_fails("{\"a\": 1, \"a\": 2}", -EINVAL, "Duplicate parameter 'a'");
    js_fails("{\"a\": 1, \"a.b\": 2}", -EINVAL, "Parameter 'a.b' conflicts with 'a'");
    js_fails("{\"a\": {\"b\": {\"c\": 1}}, \"a.b\": 2}", -EINVAL,
             "Parameter 'a.b.c' conflicts with 'a.b'");
    js_fails("{\"a.b\": 1, \"a\": {\"b\": 2}}", -EINVAL, "Duplicate parameter 'a.b'");
    js_fails("{\"a\": [1], \"a.0\": 2}", -EINVAL, "Duplicate parameter 'a.0'");
    js_fails("{\"a..b\": 1}", -EINVAL, "Invalid parameter name 'a..b'");
    js_fails("{\"a\": {\".\": 1}}", -EINVAL, "Invalid parameter name 'a..'");
}

static void test_opts_json_conflicts_with_existing_keys(void **state)
{
    BlockOpts *o = kv("driver=raw,file=node0", NULL);
    Error *err = NULL;

    assert_int_equal(bopts_parse_json(o, "{\"file\": {\"filename\": \"a\"}}", &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "Parameter 'file.filename' conflicts with 'file'");
    error_free(err);
    assert_int_equal(bopts_count(o), 2);
    bopts_free(o);
}

static char *nested(int depth, const char *leaf)
{
    size_t n = (size_t)depth * 6 + strlen(leaf) + 1;
    char *s = malloc(n);
    size_t len = 0;

    assert_non_null(s);
    for (int i = 0; i < depth; i++) {
        len += (size_t)sprintf(s + len, i ? "\"a\":{" : "{");
    }
    len += (size_t)sprintf(s + len, "%s", leaf);
    for (int i = 0; i < depth; i++) {
        s[len++] = '}';
    }
    s[len] = '\0';
    return s;
}

static void test_opts_json_depth_limit(void **state)
{
    char *s = nested(64, "\"b\":1");
    BlockOpts *o = js(s);
    char arrays[200];

    assert_int_equal(bopts_count(o), 1);
    assert_int_equal(strlen(bopts_key_at(o, 0)), 63 * 2 + 1);
    bopts_free(o);
    free(s);
    s = nested(65, "\"b\":1");
    js_fails(s, -E2BIG, "JSON nesting depth exceeds the limit of 64 (at offset 320)");
    free(s);
    /* Arrays count as nesting levels too. */
    memset(arrays, 0, sizeof(arrays));
    strcpy(arrays, "{\"a\":");
    memset(arrays + 5, '[', 64);
    js_fails(arrays, -E2BIG, "JSON nesting depth exceeds the limit of 64 (at offset 68)");
    memset(arrays + 5 + 63, ']', 63);
    arrays[5 + 63 + 63] = '}';
    o = js(arrays);
    assert_int_equal(bopts_count(o), 0);
    bopts_free(o);
}

static void test_opts_json_size_limits(void **state)
{
    char *s = repeat(' ', BOPTS_MAX_INPUT + 1);
    char *str;

    memcpy(s, "{}", 2);
    js_fails(s, -E2BIG, "JSON text exceeds the limit of 1048576 bytes");
    s[BOPTS_MAX_INPUT] = '\0';
    {
        BlockOpts *o = js(s);

        assert_int_equal(bopts_count(o), 0);
        bopts_free(o);
    }
    free(s);

    str = repeat('x', BOPTS_MAX_STRING + 16);
    memcpy(str, "{\"a\":\"", 6);
    memcpy(str + 6 + BOPTS_MAX_STRING, "\"}", 3);
    {
        BlockOpts *o = js(str);

        assert_int_equal(strlen(bopts_get(o, "a")), BOPTS_MAX_STRING);
        bopts_free(o);
    }
    memcpy(str + 6 + BOPTS_MAX_STRING, "x\"}", 4);
    js_fails(str, -E2BIG, "Invalid JSON at offset 5: string exceeds the limit of 65536 bytes");
    free(str);
}

static void test_opts_json_key_limit(void **state)
{
    char *s = malloc(16 * (BOPTS_MAX_KEYS + 2));
    size_t len = 1;
    BlockOpts *o;

    s[0] = '[';
    for (int i = 0; i < BOPTS_MAX_KEYS; i++) {
        len += (size_t)sprintf(s + len, "%s%d", i ? "," : "", i);
    }
    strcpy(s + len, "]}");
    memmove(s + 5, s, len + 3);
    memcpy(s, "{\"a\":", 5);
    o = js(s);
    assert_int_equal(bopts_count(o), BOPTS_MAX_KEYS);
    assert_string_equal(bopts_get(o, "a.4095"), "4095");
    bopts_free(o);
    strcpy(s + 5 + len, ",1]}");
    js_fails(s, -E2BIG, "Options exceed the limit of 4096 keys");
    free(s);
}

static void test_opts_json_filename(void **state)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;

    assert_int_equal(bopts_parse_filename_json(o, "a.img", &err), 0);
    assert_int_equal(bopts_parse_filename_json(o, "json", &err), 0);
    assert_null(err);
    assert_int_equal(bopts_count(o), 0);
    assert_int_equal(bopts_parse_filename_json(o, "json:{\"driver\":\"raw\",\"file\":{\"driver\":"
                                                  "\"file\",\"filename\":\"a.img\"}}",
                                               &err),
                     1);
    assert_null(err);
    assert_int_equal(bopts_count(o), 3);
    assert_string_equal(bopts_get(o, "file.filename"), "a.img");
    assert_int_equal(bopts_parse_filename_json(o, "json:[", &err), -EINVAL);
    assert_string_equal(error_get_pretty(err),
                        "Invalid JSON at offset 0: unexpected character '[', expected '{'");
    error_free(err);
    bopts_free(o);
}

/* ---- extracting children ---- */

static void test_opts_extract_prefix(void **state)
{
    BlockOpts *o = kv("driver=qcow2,file.driver=file,filex=1,file.filename=a.img,"
                      "file.cache.direct=on,backing=b0", NULL);
    BlockOpts *c = bopts_extract_prefix(o, "file.");
    BlockOpts *none;

    assert_int_equal(bopts_count(c), 3);
    assert_kv(c, 0, "driver", "file");
    assert_kv(c, 1, "filename", "a.img");
    assert_kv(c, 2, "cache.direct", "on");
    assert_int_equal(bopts_count(o), 3);
    assert_kv(o, 0, "driver", "qcow2");
    assert_kv(o, 1, "filex", "1");
    assert_kv(o, 2, "backing", "b0");
    none = bopts_extract_prefix(o, "file.");
    assert_non_null(none);
    assert_int_equal(bopts_count(none), 0);
    assert_int_equal(bopts_count(o), 3);
    bopts_free(none);
    /* Without the trailing dot, "backing.x" must not become ".x". */
    assert_int_equal(bopts_set(c, "backingx", "1"), 0);
    none = bopts_extract_prefix(o, "backing");
    assert_int_equal(bopts_count(none), 0);
    bopts_free(none);
    bopts_free(c);
    bopts_free(o);
}

/* ---- typed getters ---- */

static void test_opts_take_str(void **state)
{
    BlockOpts *o = kv("node-name=n0", NULL);
    char *s = (char *)"sentinel";

    assert_int_equal(bopts_take_str(o, "node-name", &s, NULL), 1);
    assert_string_equal(s, "n0");
    free(s);
    assert_int_equal(bopts_count(o), 0);
    assert_int_equal(bopts_take_str(o, "node-name", &s, NULL), 0);
    assert_null(s);
    bopts_free(o);
}

static void test_opts_take_bool(void **state)
{
    static const char *const yes[] = { "on", "true", "yes" };
    static const char *const no[] = { "off", "false", "no" };
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    bool v;

    for (int i = 0; i < 3; i++) {
        bopts_set(o, "read-only", yes[i]);
        v = false;
        assert_int_equal(bopts_take_bool(o, "read-only", false, &v, &err), 1);
        assert_true(v);
        bopts_set(o, "read-only", no[i]);
        assert_int_equal(bopts_take_bool(o, "read-only", true, &v, &err), 1);
        assert_false(v);
    }
    assert_int_equal(bopts_take_bool(o, "read-only", true, &v, &err), 0);
    assert_true(v);
    assert_null(err);
    bopts_set(o, "read-only", "1");
    assert_int_equal(bopts_take_bool(o, "read-only", false, &v, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "Parameter 'read-only' expects 'on' or 'off'");
    assert_false(bopts_has(o, "read-only"));
    error_free(err);
    err = NULL;
    bopts_set(o, "read-only", "ON");
    assert_int_equal(bopts_take_bool(o, "read-only", false, &v, &err), -EINVAL);
    error_free(err);
    bopts_free(o);
}

static void test_opts_parse_size_accepts(void **state)
{
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {
        { "0", 0 },
        { "512", 512 },
        { "007", 7 },
        { "1B", 1 },
        { "1b", 1 },
        { "1k", 1024 },
        { "1K", 1024 },
        { "64M", 64ULL << 20 },
        { "1m", 1ULL << 20 },
        { "10G", 10ULL << 30 },
        { "2T", 2ULL << 40 },
        { "3P", 3ULL << 50 },
        { "15E", 15ULL << 60 },
        { "1.5G", 3ULL << 29 },
        { "0.5k", 512 },
        { "1.50000k", 1536 },
        { "2.25M", 9ULL << 18 },
        { "0x200", 512 },
        { "0X1000k", 0x1000ULL << 10 },
        { "18446744073709551615", UINT64_MAX },
        { "0xffffffffffffffff", UINT64_MAX },
        { "15.9999999999999999991326382620115391910076141357421875E", 0 },
    };
    uint64_t v;

    for (size_t i = 0; i + 1 < sizeof(ok) / sizeof(ok[0]); i++) {
        v = 42;
        assert_int_equal(bopts_parse_size(ok[i].s, &v), 0);
        assert_true(v == ok[i].v);
    }
    /* More than 19 significant fraction digits is refused even when exact. */
    assert_int_equal(bopts_parse_size(ok[sizeof(ok) / sizeof(ok[0]) - 1].s, &v), -EINVAL);
}

static void test_opts_parse_size_rejects(void **state)
{
    static const char *const bad[] = { "",    "k",    "-1",   "+1",   " 1",   "1 ",   "1 k",
                                       "1kb", "1.5",  "1.5B", "1.1k", "1.k",  ".5k",  "0x",
                                       "0x1.5k", "1Z", "1e3", "1KiB", "0x-1", "1..5k" };
    uint64_t v = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (strcmp(bad[i], "1e3") == 0) {
            continue;
        }
        assert_int_equal(bopts_parse_size(bad[i], &v), -EINVAL);
    }
    /* 'e' is the exbibyte suffix: "1e3" is 1E followed by garbage. */
    assert_int_equal(bopts_parse_size("1e3", &v), -EINVAL);
    assert_int_equal(bopts_parse_size("16E", &v), -ERANGE);
    assert_int_equal(bopts_parse_size("16384P", &v), -ERANGE);
    assert_int_equal(bopts_parse_size("18446744073709551616", &v), -ERANGE);
    assert_int_equal(bopts_parse_size("0x10000000000000000", &v), -ERANGE);
    assert_int_equal(bopts_parse_size("15.99999E", &v), -EINVAL);
    assert_int_equal(bopts_parse_size("16383.9990234375P", &v), 0);
    assert_true(v == (16383ULL << 50) + (1023ULL << 40));
    assert_int_equal(bopts_parse_size("99999999999999999999.5k", &v), -ERANGE);
    assert_int_equal(bopts_parse_size("99999999999999999999x", &v), -EINVAL);
}

static void test_opts_take_size(void **state)
{
    BlockOpts *o = kv("size=1.5G,cluster-size=64k,bad=16E,junk=12q,empty=", NULL);
    Error *err = NULL;
    uint64_t v;

    assert_int_equal(bopts_take_size(o, "size", 0, &v, &err), 1);
    assert_true(v == 3ULL << 29);
    assert_int_equal(bopts_take_size(o, "cluster-size", 0, &v, &err), 1);
    assert_true(v == 65536);
    assert_int_equal(bopts_take_size(o, "absent", 7, &v, &err), 0);
    assert_true(v == 7);
    assert_int_equal(bopts_take_size(o, "bad", 7, &v, &err), -EINVAL);
    assert_true(v == 7);
    assert_string_equal(error_get_pretty(err), "Parameter 'bad' value '16E' is out of range");
    error_free(err);
    err = NULL;
    assert_int_equal(bopts_take_size(o, "junk", 7, &v, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'junk' expects a size (bytes with an optional suffix k, M, G, "
                        "T, P or E), got '12q'");
    error_free(err);
    err = NULL;
    assert_int_equal(bopts_take_size(o, "empty", 7, &v, &err), -EINVAL);
    error_free(err);
    assert_int_equal(bopts_count(o), 0);
    bopts_free(o);
}

static void test_opts_take_int64(void **state)
{
    static const struct {
        const char *s;
        int64_t v;
    } ok[] = {
        { "0", 0 },
        { "-1", -1 },
        { "+17", 17 },
        { "0x7fffffffffffffff", INT64_MAX },
        { "-0x10", -16 },
        { "9223372036854775807", INT64_MAX },
        { "-9223372036854775808", INT64_MIN },
    };
    static const char *const bad[] = { "", "-", "12abc", "0x", "1.0", " 1", "--1", "1k" };
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int64_t v;

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        bopts_set(o, "n", ok[i].s);
        assert_int_equal(bopts_take_int64(o, "n", 5, &v, &err), 1);
        assert_true(v == ok[i].v);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char msg[128];

        bopts_set(o, "n", bad[i]);
        assert_int_equal(bopts_take_int64(o, "n", 5, &v, &err), -EINVAL);
        assert_true(v == 5);
        snprintf(msg, sizeof(msg), "Parameter 'n' expects an integer, got '%s'", bad[i]);
        assert_string_equal(error_get_pretty(err), msg);
        error_free(err);
        err = NULL;
    }
    bopts_set(o, "n", "9223372036854775808");
    assert_int_equal(bopts_take_int64(o, "n", 5, &v, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'n' value '9223372036854775808' is out of range");
    error_free(err);
    err = NULL;
    bopts_set(o, "n", "-9223372036854775809");
    assert_int_equal(bopts_take_int64(o, "n", 5, &v, &err), -EINVAL);
    error_free(err);
    assert_int_equal(bopts_take_int64(o, "n", 5, &v, NULL), 0);
    assert_true(v == 5);
    bopts_free(o);
}

static void test_opts_take_uint64(void **state)
{
    BlockOpts *o = kv("a=18446744073709551615,b=0xFFFFFFFFFFFFFFFF,c=-1,d=18446744073709551616,"
                      "e=+1",
                      NULL);
    Error *err = NULL;
    uint64_t v;

    assert_int_equal(bopts_take_uint64(o, "a", 0, &v, &err), 1);
    assert_true(v == UINT64_MAX);
    assert_int_equal(bopts_take_uint64(o, "b", 0, &v, &err), 1);
    assert_true(v == UINT64_MAX);
    assert_int_equal(bopts_take_uint64(o, "c", 3, &v, &err), -EINVAL);
    assert_true(v == 3);
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'c' expects a non-negative integer, got '-1'");
    error_free(err);
    err = NULL;
    assert_int_equal(bopts_take_uint64(o, "d", 3, &v, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'd' value '18446744073709551616' is out of range");
    error_free(err);
    err = NULL;
    assert_int_equal(bopts_take_uint64(o, "e", 3, &v, &err), -EINVAL);
    error_free(err);
    assert_int_equal(bopts_count(o), 0);
    bopts_free(o);
}

static void test_opts_take_enum(void **state)
{
    static const char *const aio[] = { "threads", "native", "io_uring" };
    static const char *const holes[] = { "a", NULL, "c" };
    BlockOpts *o = kv("aio=native,bad=foo,h=c,h2=b", NULL);
    Error *err = NULL;
    int v;

    assert_int_equal(bopts_take_enum(o, "aio", aio, 3, 0, &v, &err), 1);
    assert_int_equal(v, 1);
    assert_int_equal(bopts_take_enum(o, "aio", aio, 3, 2, &v, &err), 0);
    assert_int_equal(v, 2);
    assert_int_equal(bopts_take_enum(o, "bad", aio, 3, 0, &v, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "Parameter 'bad' does not accept value 'foo' "
                                               "(expected one of: threads, native, io_uring)");
    error_free(err);
    err = NULL;
    assert_int_equal(bopts_take_enum(o, "h", holes, 3, 0, &v, &err), 1);
    assert_int_equal(v, 2);
    assert_int_equal(bopts_take_enum(o, "h2", holes, 3, 0, &v, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err),
                        "Parameter 'h2' does not accept value 'b' (expected one of: a, c)");
    error_free(err);
    bopts_free(o);
}

static void test_opts_long_values_are_cut_in_messages(void **state)
{
    BlockOpts *o = bopts_new();
    char *v = repeat('z', 1000);
    Error *err = NULL;
    int e;

    bopts_set(o, "x", v);
    assert_int_equal(bopts_take_enum(o, "x", (const char *const[]){ "a" }, 1, 0, &e, &err),
                     -EINVAL);
    assert_true(strlen(error_get_pretty(err)) < 300);
    assert_non_null(strstr(error_get_pretty(err), "zzz...' (expected one of: a)"));
    error_free(err);
    free(v);
    bopts_free(o);
}

/* ---- leftovers ---- */

static void test_opts_check_empty_reports_leftovers(void **state)
{
    static const char *const aio[] = { "threads", "native", "io_uring" };
    BlockOpts *o = kv("driver=file,filename=a.img,aio=native,cache.foo=1", NULL);
    Error *err = NULL;
    char *s;
    int e;

    assert_int_equal(bopts_take_str(o, "driver", &s, &err), 1);
    free(s);
    assert_int_equal(bopts_take_str(o, "filename", &s, &err), 1);
    free(s);
    assert_int_equal(bopts_take_enum(o, "aio", aio, 3, 0, &e, &err), 1);
    assert_int_equal(bopts_check_empty(o, "file", &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "file: Unknown option 'cache.foo'");
    error_free(err);
    err = NULL;
    bopts_set(o, "zz", "1");
    assert_int_equal(bopts_check_empty(o, NULL, &err), -EINVAL);
    assert_string_equal(error_get_pretty(err), "Unknown options 'cache.foo', 'zz'");
    error_free(err);
    err = NULL;
    bopts_del(o, "cache.foo");
    bopts_del(o, "zz");
    assert_int_equal(bopts_check_empty(o, "file", &err), 0);
    assert_null(err);
    bopts_free(o);

    o = kv("a=1,b=1,c=1,d=1,e=1,f=1,g=1,h=1,i=1,j=1", NULL);
    assert_int_equal(bopts_check_empty(o, "raw", &err), -EINVAL);
    assert_string_equal(error_get_pretty(err),
                        "raw: Unknown options 'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h' and 2 more");
    error_free(err);
    bopts_free(o);
}

/* ---- serialising ---- */

static void test_opts_to_json_nests(void **state)
{
    BlockOpts *o = kv("driver=qcow2,file.driver=file,server.1.host=h2,file.filename=a.qcow2,"
                      "server.0.host=h1,server.0.port=10809,read-only=on",
                      NULL);
    char *j = bopts_to_json(o);

    assert_string_equal(j, "{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": "
                           "\"a.qcow2\"}, \"server\": [{\"host\": \"h1\", \"port\": \"10809\"}, "
                           "{\"host\": \"h2\"}], \"read-only\": \"on\"}");
    free(j);
    bopts_free(o);
    o = bopts_new();
    j = bopts_to_json(o);
    assert_string_equal(j, "{}");
    free(j);
    bopts_free(o);
}

static void test_opts_to_json_non_arrays_and_escapes(void **state)
{
    BlockOpts *o = kv("a.0=x,a.2=y,b.01=z,c.1=p,c.0=q", NULL);
    char *j;

    assert_int_equal(bopts_set(o, "s", "q\"\\\n\x01\xc3\xa9"), 0);
    j = bopts_to_json(o);
    assert_string_equal(j, "{\"a\": {\"0\": \"x\", \"2\": \"y\"}, \"b\": {\"01\": \"z\"}, "
                           "\"c\": [\"q\", \"p\"], \"s\": \"q\\\"\\\\\\u000a\\u0001\xc3\xa9\"}");
    free(j);
    bopts_free(o);
}

static void round_trip(const char *json)
{
    BlockOpts *a = js(json);
    char *j = bopts_to_json(a);
    BlockOpts *b = js(j);
    char *j2 = bopts_to_json(b);

    assert_true(same_map(a, b));
    assert_string_equal(j, j2);
    free(j);
    free(j2);
    bopts_free(a);
    bopts_free(b);
}

static void test_opts_round_trip(void **state)
{
    round_trip("{}");
    round_trip("{\"driver\":\"qcow2\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"inet\","
               "\"host\":\"::1\",\"port\":\"10809\"}},\"backing\":{\"driver\":\"raw\"}}");
    round_trip("{\"a\":[[1,[2,{\"b\":[true,false]}]],{\"c\":\"\\u00e9\\uD83D\\uDE00\\n\"}]}");
    round_trip("{\"x.y.z\":1,\"x\":{\"w\":2},\"q\":[0,1,2,3,4,5,6,7,8,9,10,11]}");
    /* Numeric names at the top stay an object (found by fuzzing). */
    round_trip("{\"0.r&e.0&e\":[1]}");
    round_trip("{\"0\":\"a\",\"1\":{\"0\":\"b\"}}");
    round_trip("{\"weird key\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\",\"k=v,w\":\",,\"}");
}

/* ---- robustness ---- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 11);
}

static void mutate(char *buf, size_t *len, size_t cap)
{
    static const char special[] = "{}[]\":,.\\u=0eE-+ \x01\x80\xc3\xed\xf4";
    int n = 1 + (int)(rnd() % 3);

    for (int i = 0; i < n; i++) {
        size_t pos = *len ? rnd() % *len : 0;
        uint32_t op = rnd() % 8;

        if (op <= 1 && *len) {
            buf[pos] = special[rnd() % (sizeof(special) - 1)];
        } else if (op <= 3 && *len + 1 < cap) {
            memmove(buf + pos + 1, buf + pos, *len - pos);
            buf[pos] = special[rnd() % (sizeof(special) - 1)];
            (*len)++;
        } else if (op == 4 && *len) {
            memmove(buf + pos, buf + pos + 1, *len - pos - 1);
            (*len)--;
        } else if (op == 5) {
            *len = pos;
        } else if (*len) {
            buf[pos] = (char)(rnd() & 0xff);
        }
        if (*len && buf[*len - 1] == '\0') {
            (*len)--;
        }
    }
    buf[*len] = '\0';
    *len = strlen(buf);
}

static int json_ok;
static int kv_ok;

/* Parses s every way: each parse either succeeds or sets an error and leaves o as it was. */
static void check_one(const char *s)
{
    BlockOpts *o = kv("pre=1", NULL);
    Error *err = NULL;
    int ret;

    ret = bopts_parse_json(o, s, &err);
    assert_true((ret == 0) == (err == NULL));
    assert_true(ret == 0 || bopts_count(o) == 1);
    if (ret == 0) {
        char *j = bopts_to_json(o);
        BlockOpts *b = bopts_new();

        json_ok++;
        assert_non_null(j);
        assert_int_equal(bopts_parse_json(b, j, NULL), 0);
        assert_true(same_map(o, b));
        free(j);
        bopts_free(b);
    }
    error_free(err);
    err = NULL;
    bopts_free(o);
    o = kv("pre=1", NULL);
    ret = bopts_parse_keyval(o, s, (rnd() & 1) ? "file" : NULL, &err);
    assert_true((ret == 0) == (err == NULL));
    assert_true(ret == 0 || bopts_count(o) == 1);
    kv_ok += ret == 0;
    error_free(err);
    bopts_free(o);
}

static void test_opts_random_mutations_never_crash(void **state)
{
    static const char *const seeds[] = {
        "{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"a.qcow2\"}}",
        "{\"a\":[1,-2.5e3,true,false,{\"b\":\"\\u00e9\\uD83D\\uDE00\\n\"}],\"c.d\":\"x\"}",
        "{\"server\":[{\"host\":\"h\",\"port\":10809}],\"x\":[[[]]],\"y\":{}}",
        "driver=qcow2,file.driver=file,file.filename=a,,b.img,cache.direct=on",
        "a.img,format=raw,size=1.5G",
        "{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\xc3\xa9\"}",
    };
    char buf[512];

    for (int iter = 0; iter < 6000; iter++) {
        const char *seed = seeds[rnd() % (sizeof(seeds) / sizeof(seeds[0]))];
        size_t len = strlen(seed);

        memcpy(buf, seed, len + 1);
        mutate(buf, &len, sizeof(buf));
        check_one(buf);
    }
    /* The mutations must reach both the success and the error paths. */
    print_message("json: %d accepted, keyval: %d accepted of 6000\n", json_ok, kv_ok);
    assert_true(json_ok > 200 && json_ok < 5800);
    assert_true(kv_ok > 200 && kv_ok < 5800);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_opts_map_set_get_del),
        cmocka_unit_test(test_opts_map_set_rejects_bad_keys),
        cmocka_unit_test(test_opts_map_key_limit),
        cmocka_unit_test(test_opts_map_clone_is_deep),
        cmocka_unit_test(test_opts_keyval_basic),
        cmocka_unit_test(test_opts_keyval_comma_escape),
        cmocka_unit_test(test_opts_keyval_empty_values_and_trailing_comma),
        cmocka_unit_test(test_opts_keyval_implied_key),
        cmocka_unit_test(test_opts_keyval_errors),
        cmocka_unit_test(test_opts_keyval_failure_leaves_map_unchanged),
        cmocka_unit_test(test_opts_keyval_limits),
        cmocka_unit_test(test_opts_json_flattens_objects_and_arrays),
        cmocka_unit_test(test_opts_json_numbers),
        cmocka_unit_test(test_opts_json_string_escapes),
        cmocka_unit_test(test_opts_json_string_errors),
        cmocka_unit_test(test_opts_json_syntax_errors),
        cmocka_unit_test(test_opts_json_dotted_names_merge_and_conflict),
        cmocka_unit_test(test_opts_json_conflicts_with_existing_keys),
        cmocka_unit_test(test_opts_json_depth_limit),
        cmocka_unit_test(test_opts_json_size_limits),
        cmocka_unit_test(test_opts_json_key_limit),
        cmocka_unit_test(test_opts_json_filename),
        cmocka_unit_test(test_opts_extract_prefix),
        cmocka_unit_test(test_opts_take_str),
        cmocka_unit_test(test_opts_take_bool),
        cmocka_unit_test(test_opts_parse_size_accepts),
        cmocka_unit_test(test_opts_parse_size_rejects),
        cmocka_unit_test(test_opts_take_size),
        cmocka_unit_test(test_opts_take_int64),
        cmocka_unit_test(test_opts_take_uint64),
        cmocka_unit_test(test_opts_take_enum),
        cmocka_unit_test(test_opts_long_values_are_cut_in_messages),
        cmocka_unit_test(test_opts_check_empty_reports_leftovers),
        cmocka_unit_test(test_opts_to_json_nests),
        cmocka_unit_test(test_opts_to_json_non_arrays_and_escapes),
        cmocka_unit_test(test_opts_round_trip),
        cmocka_unit_test(test_opts_random_mutations_never_crash),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
