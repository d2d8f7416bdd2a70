/*
 * MD5 (RFC 1321), for the checksum of the parallels Format Extension
 * cluster. Not for security: the format defines its checksum as MD5.
 */
#ifndef COBLK_DRIVERS_FORMAT_PARALLELS_MD5_H
#define COBLK_DRIVERS_FORMAT_PARALLELS_MD5_H

#include <stddef.h>
#include <stdint.h>

/** The MD5 digest of len bytes at buf. */
void prl_md5(const void *buf, size_t len, uint8_t digest[16]);

#endif /* COBLK_DRIVERS_FORMAT_PARALLELS_MD5_H */
