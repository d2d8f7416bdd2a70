/*
 * Internals of the block options unit (block/opts*.c, block/json*.c, block/keyval.c).
 */
#ifndef COBLK_BLOCK_OPTS_INT_H
#define COBLK_BLOCK_OPTS_INT_H

#include <coblk/opts.h>

struct BlockOpts {
    char **keys;
    char **vals;
    size_t n;
    size_t cap;
};

/* Text quoted in error messages is cut at this many bytes and "..." added. */
#define BOPTS_QUOTE_MAX 128

/* Length and ellipsis for printing s as "'%.*s%s'" with its cut applied. */
int bopts_qlen(const char *s);
const char *bopts_qell(const char *s);

/*
 * Adds a new key (which must not exist) with a copy of value, checking the
 * key's validity, duplicates, conflicts and the key limit.
 * Returns 0, -EINVAL, -E2BIG or -ENOMEM, always with errp set.
 */
int bopts_add(BlockOpts *o, const char *key, const char *value, Error **errp);

/*
 * Checks the whole map for duplicate keys and keys that are dotted prefixes
 * of others (sorting, so parsers can add many keys cheaply and check once).
 * Returns 0 or -EINVAL/-ENOMEM with errp naming the key.
 */
int bopts_check_conflicts(const BlockOpts *o, Error **errp);

/* A key of a map, for sorting. */
typedef struct KeyRef {
    const char *key;
    size_t len;
    size_t idx;
} KeyRef;

/*
 * Returns the keys of o sorted with '.' before every other byte, so that a
 * key is directly followed by its duplicates and by the keys it is a dotted
 * prefix of, and every subtree is a contiguous run. NULL when out of memory;
 * the caller frees the array.
 */
KeyRef *bopts_sorted_keys(const BlockOpts *o);

/* Removes key and returns its value (the caller frees it), or NULL if absent. */
char *bopts_steal(BlockOpts *o, const char *key);

/* Index of key, or -1. */
ptrdiff_t bopts_find(const BlockOpts *o, const char *key);

/* Exchanges the contents of two maps (used to commit a parse atomically). */
void bopts_swap(BlockOpts *a, BlockOpts *b);

/* A growable string; on allocation failure it sets oom and stops growing. */
typedef struct StrBuf {
    char *s;
    size_t len;
    size_t cap;
    bool oom;
} StrBuf;

void sb_init(StrBuf *sb);
void sb_free(StrBuf *sb);
void sb_putc(StrBuf *sb, char c);
void sb_put(StrBuf *sb, const char *p, size_t n);
void sb_puts(StrBuf *sb, const char *s);
void sb_truncate(StrBuf *sb, size_t len);
/* NUL-terminated contents; "" for an empty buffer, NULL after oom. */
const char *sb_str(StrBuf *sb);

#endif /* COBLK_BLOCK_OPTS_INT_H */
