/*
 * libFuzzer target for the block options parsers: the input is parsed as a
 * JSON object and as a keyval string. Every failure must set an error and
 * leave the map as it was; every accepted JSON must survive
 * bopts_to_json() and parse back to the same map; the typed getters must
 * cope with any value.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <coblk/opts.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(bool ok)
{
    if (!ok) {
        abort();
    }
}

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

static void fuzz_json(const char *s)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int ret = bopts_parse_json(o, s, &err);

    check((ret == 0) == (err == NULL));
    if (ret == 0) {
        char *j = bopts_to_json(o);
        BlockOpts *b = bopts_new();

        check(j && bopts_parse_json(b, j, NULL) == 0 && same_map(o, b));
        free(j);
        bopts_free(b);
    } else {
        check(bopts_count(o) == 0);
    }
    error_free(err);
    bopts_free(o);
}

/* Takes every key with each typed getter in turn. */
static void take_all(BlockOpts *o)
{
    static const char *const names[] = { "threads", "native", "io_uring" };
    int kind = 0;

    while (bopts_count(o)) {
        char *key = strdup(bopts_key_at(o, 0));
        Error *err = NULL;
        uint64_t u;
        int64_t i;
        bool b;
        int e;
        int ret;

        switch (kind++ % 5) {
        case 0:
            ret = bopts_take_size(o, key, 0, &u, &err);
            break;
        case 1:
            ret = bopts_take_int64(o, key, 0, &i, &err);
            break;
        case 2:
            ret = bopts_take_uint64(o, key, 0, &u, &err);
            break;
        case 3:
            ret = bopts_take_bool(o, key, false, &b, &err);
            break;
        default:
            ret = bopts_take_enum(o, key, names, 3, 0, &e, &err);
            break;
        }
        check(ret == 1 || (ret == -EINVAL && err));
        check(!bopts_has(o, key));
        error_free(err);
        free(key);
    }
}

static void fuzz_keyval(const char *s, const char *implied)
{
    BlockOpts *o = bopts_new();
    Error *err = NULL;
    int ret = bopts_parse_keyval(o, s, implied, &err);

    check((ret == 0) == (err == NULL));
    if (ret == 0) {
        BlockOpts *child = bopts_extract_prefix(o, "file.");
        char *j = bopts_to_json(o);

        check(j != NULL);
        free(j);
        take_all(child);
        take_all(o);
        check(bopts_check_empty(o, "fuzz", NULL) == 0);
        bopts_free(child);
    } else {
        check(bopts_count(o) == 0);
    }
    error_free(err);
    bopts_free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    fuzz_json(s);
    fuzz_keyval(s, size && (data[0] & 1) ? "file" : NULL);
    free(s);
    return 0;
}
