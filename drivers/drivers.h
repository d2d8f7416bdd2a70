/*
 * The in-tree driver tables, listed by block/registry.c. Not installed.
 * Each driver file defines one (or more) of these; nothing else about a
 * driver is visible outside its folder.
 */
#ifndef COBLK_DRIVERS_H
#define COBLK_DRIVERS_H

#include <coblk/block-driver.h>

/* drivers/protocol/ */
extern const BlockDriver bdrv_file;
extern const BlockDriver bdrv_host_device;
extern const BlockDriver bdrv_null_co;
extern const BlockDriver bdrv_null_aio;
extern const BlockDriver bdrv_blkdebug;
extern const BlockDriver bdrv_blkverify;
extern const BlockDriver bdrv_blklogwrites;
extern const BlockDriver bdrv_nbd;
extern const BlockDriver bdrv_nbd_tcp;
extern const BlockDriver bdrv_nbd_unix;
extern const BlockDriver bdrv_nbds;
extern const BlockDriver bdrv_nbds_tcp;
extern const BlockDriver bdrv_nbds_unix;

/* drivers/format/ */
extern const BlockDriver bdrv_raw;
extern const BlockDriver bdrv_vdi;
extern const BlockDriver bdrv_vmdk;
extern const BlockDriver bdrv_qcow;
extern const BlockDriver bdrv_qed;
extern const BlockDriver bdrv_vpc;
extern const BlockDriver bdrv_vhdx;
extern const BlockDriver bdrv_qcow2;
extern const BlockDriver bdrv_bochs;
extern const BlockDriver bdrv_cloop;
extern const BlockDriver bdrv_dmg;
extern const BlockDriver bdrv_parallels;

#endif /* COBLK_DRIVERS_H */
