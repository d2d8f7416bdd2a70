/*
 * coblk - block options: the dotted key/value maps that nodes open from.
 *
 * A BlockOpts is an ordered map from a dotted key ("file.filename",
 * "server.0.host") to a string value, filled from QEMU-style option strings
 * (driver=qcow2,file.filename=a.qcow2) and from JSON objects (json:{...}
 * filenames), which are flattened into the same dotted keys. Drivers consume
 * their options with the bopts_take_*() getters, which remove each key they
 * read, so that whatever is left at the end can be reported as unknown with
 * bopts_check_empty().
 *
 * Invariants of every map (bopts_set() and the parsers enforce them):
 *  - keys are non-empty, have no empty component ("a..b", ".a", "a." are
 *    invalid), are at most BOPTS_MAX_KEY_LEN bytes and have at most
 *    BOPTS_MAX_DEPTH components;
 *  - no key is a dotted prefix of another ("a" and "a.b" never coexist),
 *    so the map can always be turned back into one nested JSON object;
 *  - at most BOPTS_MAX_KEYS keys.
 *
 * Values are plain strings. JSON numbers keep their text, true/false become
 * "on"/"off"; the boolean getter accepts on/off, true/false and yes/no.
 * Input is untrusted: every parser is bounded (input size, nesting, string
 * length, key count) and reports violations through Error, naming the limit.
 */
#ifndef COBLK_OPTS_H
#define COBLK_OPTS_H

#include <coblk/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Maximum nesting of JSON containers, and of components in a dotted key. */
#define BOPTS_MAX_DEPTH 64
/** Maximum size in bytes of a keyval string or a JSON text. */
#define BOPTS_MAX_INPUT (1024 * 1024)
/** Maximum length in bytes of one JSON string (after unescaping). */
#define BOPTS_MAX_STRING (64 * 1024)
/** Maximum number of keys in one map. */
#define BOPTS_MAX_KEYS 4096
/** Maximum length in bytes of one dotted key. */
#define BOPTS_MAX_KEY_LEN 4096

/** An ordered map from dotted keys to string values. */
typedef struct BlockOpts BlockOpts;

/** Returns a new empty map, or NULL when out of memory. */
COBLK_API BlockOpts *bopts_new(void);
/** Frees a map and all its keys and values; NULL is allowed. */
COBLK_API void bopts_free(BlockOpts *o);
/** Returns a deep copy of o (same keys, values and order), or NULL when out of memory. */
COBLK_API BlockOpts *bopts_clone(const BlockOpts *o);

/**
 * Sets key to a copy of value (both non-NULL). An existing key keeps its position and gets
 * the new value; a new key goes to the end.
 * Returns 0; -EINVAL if key is invalid or conflicts with an existing key
 * (one is a dotted prefix of the other); -E2BIG if the map already holds
 * BOPTS_MAX_KEYS keys; -ENOMEM.
 */
COBLK_API int bopts_set(BlockOpts *o, const char *key, const char *value);
/** Returns the value of key (owned by the map), or NULL if absent. */
COBLK_API const char *bopts_get(const BlockOpts *o, const char *key);
/** Returns true if key is present. */
COBLK_API bool bopts_has(const BlockOpts *o, const char *key);
/** Removes key. Returns 1 if it was present, 0 if not. */
COBLK_API int bopts_del(BlockOpts *o, const char *key);
/** Returns the number of keys. */
COBLK_API size_t bopts_count(const BlockOpts *o);
/** Returns the i-th key in insertion order, or NULL if i >= bopts_count(o). */
COBLK_API const char *bopts_key_at(const BlockOpts *o, size_t i);
/** Returns the i-th value in insertion order, or NULL if i >= bopts_count(o). */
COBLK_API const char *bopts_value_at(const BlockOpts *o, size_t i);

/**
 * Parses QEMU's key=value,key2=value2 syntax into o. Inside a value ",,"
 * stands for one comma. Keys are made of letters, digits, '-', '_' and
 * '.'. When implied_key is non-NULL and the first element has no '=', that
 * whole element is the value of implied_key ("a.img,format=raw" with
 * implied_key "file" gives file=a.img). A trailing comma is allowed.
 * Errors (o is left unchanged): an empty or invalid key, a missing '=',
 * a key given twice or conflicting with another (also with keys already in
 * o), input above BOPTS_MAX_INPUT; the message quotes the offending text.
 * Returns 0 or -EINVAL (-E2BIG for too many keys, -ENOMEM).
 */
COBLK_API int bopts_parse_keyval(BlockOpts *o, const char *str, const char *implied_key,
                                 Error **errp);

/**
 * Parses a JSON object (RFC 8259, UTF-8) and adds it to o flattened:
 * nested object members join with '.', array elements use their index
 * ({"server": [{"host": "h"}]} gives server.0.host=h). Strings are
 * unescaped (\uXXXX and surrogate pairs become UTF-8), numbers keep their
 * text, true/false become "on"/"off". Member names may themselves be dotted;
 * they merge with nested objects ({"a.b": 1, "a": {"c": 2}} is fine).
 * Empty objects and arrays add no keys.
 * Errors (o is left unchanged): syntax errors with their byte offset, null
 * values, empty member names, duplicate or conflicting keys (named), and
 * the limits BOPTS_MAX_INPUT, BOPTS_MAX_DEPTH, BOPTS_MAX_STRING,
 * BOPTS_MAX_KEYS, BOPTS_MAX_KEY_LEN. A NUL character (\u0000) is refused.
 * Returns 0 or -EINVAL (-E2BIG for a limit, -ENOMEM).
 */
COBLK_API int bopts_parse_json(BlockOpts *o, const char *text, Error **errp);

/**
 * If filename starts with "json:", parses the rest with bopts_parse_json()
 * and returns 1 (or its negative error). Otherwise returns 0 and leaves o
 * and errp untouched.
 */
COBLK_API int bopts_parse_filename_json(BlockOpts *o, const char *filename, Error **errp);

/**
 * Moves every key that starts with prefix (normally ending in '.', such as
 * "file.") into a new map, with the prefix stripped, keeping their order.
 * A key equal to the prefix, or continuing with '.' after it, stays in o.
 * Returns the new map, empty if no key matched; NULL only when out of
 * memory (o is then unchanged).
 */
COBLK_API BlockOpts *bopts_extract_prefix(BlockOpts *o, const char *prefix);

/*
 * Typed getters. Each looks up key and removes it from o whether or not its
 * value is valid. Each returns 0 if key was absent (*out = def), 1 if it was
 * present and valid (*out = the value), or -EINVAL with errp set if the
 * value is malformed (*out = def).
 */

/**
 * Takes a string: *out is a malloc'ed copy of the value that the caller
 * frees, or NULL when absent. Returns 0, 1 or -ENOMEM.
 */
COBLK_API int bopts_take_str(BlockOpts *o, const char *key, char **out, Error **errp);
/**
 * Takes a boolean: on/off, true/false, yes/no. Error:
 * "Parameter 'read-only' expects 'on' or 'off'".
 */
COBLK_API int bopts_take_bool(BlockOpts *o, const char *key, bool def, bool *out, Error **errp);
/** Takes a size as parsed by bopts_parse_size(); -ERANGE becomes an error too (-EINVAL). */
COBLK_API int bopts_take_size(BlockOpts *o, const char *key, uint64_t def, uint64_t *out,
                              Error **errp);
/** Takes a signed 64-bit integer: optional '-' or '+', decimal or 0x hexadecimal. */
COBLK_API int bopts_take_int64(BlockOpts *o, const char *key, int64_t def, int64_t *out,
                               Error **errp);
/** Takes an unsigned 64-bit integer: decimal or 0x hexadecimal, no sign. */
COBLK_API int bopts_take_uint64(BlockOpts *o, const char *key, uint64_t def, uint64_t *out,
                                Error **errp);
/**
 * Takes one of names[0..n-1] (NULL entries are skipped); *out is its index.
 * Error: "Parameter 'aio' does not accept value 'foo' (expected one of:
 * threads, native, io_uring)".
 */
COBLK_API int bopts_take_enum(BlockOpts *o, const char *key, const char *const names[], int n,
                              int def, int *out, Error **errp);

/**
 * Reports leftover (unknown) options. Returns 0 if o is empty, else -EINVAL
 * with "<who>: Unknown option 'cache.foo'" (or "Unknown options 'a', 'b'"
 * listing up to 8 keys and then "and N more"). who may be NULL (no prefix).
 */
COBLK_API int bopts_check_empty(const BlockOpts *o, const char *who, Error **errp);

/**
 * Serialises o as one nested JSON object: dotted keys become nested
 * objects, and an object whose member names are exactly 0..n-1 becomes an
 * array. Values are JSON strings; key order follows first appearance.
 * bopts_parse_json() of the result gives back the same map as long as the
 * values are valid UTF-8. Returns a malloc'ed string, or NULL when out of
 * memory.
 */
COBLK_API char *bopts_to_json(const BlockOpts *o);

/**
 * Parses a size as qemu-img does: a decimal or 0x hexadecimal number of
 * bytes with an optional suffix B (bytes), k/K, M, G, T, P or E (binary
 * multiples of 1024, case-insensitive). A decimal fraction is allowed with
 * a suffix when the result is a whole number of bytes ("1.5G", "0.5k").
 * No sign, no whitespace, no trailing characters.
 * Returns 0, -EINVAL if malformed (or inexact), -ERANGE if above UINT64_MAX.
 */
COBLK_API int bopts_parse_size(const char *s, uint64_t *out);

#ifdef __cplusplus
}
#endif

#endif /* COBLK_OPTS_H */
