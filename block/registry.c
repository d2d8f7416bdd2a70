/*
 * The registry of in-tree drivers, and the table of image format magics
 * that a guessed raw node refuses to write into its first sector.
 */
#include <string.h>

#include "block/block-int.h"
#include "drivers/drivers.h"

const BlockDriver *const bdrv_builtin_drivers[] = {
    &bdrv_file,
    &bdrv_host_device,
    &bdrv_null_co,
    &bdrv_null_aio,
    &bdrv_blkdebug,
    &bdrv_blkverify,
    &bdrv_blklogwrites,
    &bdrv_nbd,
    &bdrv_nbd_tcp,
    &bdrv_nbd_unix,
    &bdrv_nbds,
    &bdrv_nbds_tcp,
    &bdrv_nbds_unix,
    &bdrv_raw,
    &bdrv_vdi,
    &bdrv_vmdk,
    &bdrv_vpc,
    &bdrv_vhdx,
    &bdrv_qed,
    &bdrv_qcow2,
    &bdrv_qcow,
    &bdrv_bochs,
    &bdrv_cloop,
    &bdrv_dmg,
    &bdrv_parallels,
    NULL,
};

/* A byte string that identifies a format when found at offset in sector 0. */
typedef struct FormatMagic {
    const char *format;
    size_t offset;
    size_t len;
    const char *bytes;
} FormatMagic;

#define MAGIC(fmt, off, str) { fmt, off, sizeof(str) - 1, str }

/*
 * Magics from each format's specification. dmg keeps its signature at the
 * end of the file, so it cannot be planted in sector 0 and is not listed.
 */
static const FormatMagic format_magics[] = {
    MAGIC("qcow/qcow2", 0, "QFI\xfb"),
    MAGIC("qed", 0, "QED\0"),
    MAGIC("vmdk", 0, "KDMV"),
    MAGIC("vmdk", 0, "COWD"),
    MAGIC("vmdk", 0, "# Disk DescriptorFile"),
    MAGIC("vpc", 0, "conectix"),
    MAGIC("vhdx", 0, "vhdxfile"),
    MAGIC("parallels", 0, "WithoutFreeSpace"),
    MAGIC("parallels", 0, "WithouFreSpacExt"),
    MAGIC("bochs", 0, "Bochs Virtual HD Image"),
    MAGIC("cloop", 0, "#!/bin/sh\n#V2.0 Format\n"),
    MAGIC("luks", 0, "LUKS\xba\xbe"),
};

/* vdi: a text line starting "<<< " and the signature 0xbeda107f (LE) at byte 64. */
static bool vdi_magic(const uint8_t *buf, size_t len)
{
    static const uint8_t sig[4] = { 0x7f, 0x10, 0xda, 0xbe };

    return len >= 68 && memcmp(buf, "<<< ", 4) == 0 && memcmp(buf + 64, sig, 4) == 0;
}

bool bdrv_buf_has_known_magic(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < sizeof(format_magics) / sizeof(format_magics[0]); i++) {
        const FormatMagic *m = &format_magics[i];

        if (len >= m->offset + m->len && memcmp(buf + m->offset, m->bytes, m->len) == 0) {
            return true;
        }
    }
    return vdi_magic(buf, len);
}
