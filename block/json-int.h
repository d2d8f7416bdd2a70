/*
 * JSON lexical helpers shared by the parser and its tests.
 */
#ifndef COBLK_BLOCK_JSON_INT_H
#define COBLK_BLOCK_JSON_INT_H

#include "opts-int.h"

/*
 * Decodes the JSON string whose opening quote is at s[*pos] (end is the
 * text length) into out, which is reset first: escapes are resolved,
 * \uXXXX and surrogate pairs become UTF-8, raw bytes must be valid UTF-8.
 * On success *pos is past the closing quote and 0 is returned. Otherwise
 * *pos is at the offending byte and -EINVAL (msg describes the problem) or
 * -E2BIG (longer than BOPTS_MAX_STRING) is returned. Out of memory shows as
 * sb_str(out) == NULL after a 0 return.
 */
int json_decode_string(const char *s, size_t *pos, size_t end, StrBuf *out, char *msg,
                       size_t msglen);

/*
 * Checks the RFC 8259 number grammar starting at s[start]; *end is set to
 * the first byte after the longest valid prefix (or where it failed).
 * Returns true if a complete number was found.
 */
bool json_scan_number(const char *s, size_t len, size_t start, size_t *end);

#endif /* COBLK_BLOCK_JSON_INT_H */
