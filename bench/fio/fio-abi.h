/*
 * The part of fio's external ioengine ABI that libcoblk-fio.so touches, for
 * the fio binary of Debian 12 (fio 3.33, x86-64, FIO_IOOPS_VERSION 31).
 *
 * Debian's fio package ships no engine headers, so these declarations are
 * written here. They are NOT fio's headers: each structure below names only
 * the fields the engine reads or writes, at the offsets that fio 3.33 uses,
 * with padding in between. How every offset was established (objdump -d of
 * Debian's /usr/bin/fio, whose engine-facing functions are exported):
 *  - ioops version 31: fio's own "bad ioops version %d (want %d)" message when
 *    loading an engine that declares version 0.
 *  - ioengine_ops: free_ioengine/close_ioengine (name 0x10, dlhandle 0x20,
 *    cleanup 0x78, option_struct_size 0xf8, options 0x100), td_io_prep (prep
 *    0x40), td_io_queue (queue 0x48), td_io_commit/td_io_getevents (commit
 *    0x50, getevents 0x58), io_u_queued_complete (event 0x60), setup_files
 *    (setup 0x28), td_io_open_file (open_file 0x80), put_file (close_file
 *    0x88), the cache invalidation path (invalidate 0x90), td_io_unlink_file
 *    (unlink_file 0x98), td_io_get_file_size (get_file_size 0xa0); the fields
 *    in between keep the order of fio's documented ops list.
 *  - thread_data: ioengine_load/free_ioengine keep the engine option block
 *    (td->eo) at td+0x1078. The engine gives one option a default value that
 *    only fio's fill_default_options writes, and checks it through that
 *    offset at init: a different layout is refused, not guessed.
 *  - io_u: td_io_prep's debug print (file 0x20, ddir 0x2c, buflen 0x40,
 *    offset 0x48), do_io_u_sync/do_io_u_trim (xfer_buf 0x68, xfer_buflen 0x70,
 *    error 0x90), td_io_queue (resid 0x88 and error cleared before ->queue).
 *  - fio_file: do_io_u_sync (fd 0x14), td_io_prep (file_name 0x28),
 *    setup_files (real_file_size 0x30, compared with -1 after get_file_size).
 *  - fio_option (0x5e8 bytes each): fill_default_options/options_free/
 *    find_option/options_init (name 0, lname 8, type 0x18, off1 0x1c, cb
 *    0x68, help 0x70, def 0x78, category 0x5b8, group 0x5c0); option types
 *    6 = string stored, 8 = int, 10 = bool (options_free, options_init).
 * The engine also refuses any fio whose fio_version_string is not "fio-3.33".
 */
#ifndef COBLK_FIO_ABI_H
#define COBLK_FIO_ABI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define FIO_ABI_IOOPS_VERSION 31
#define FIO_ABI_FIO_VERSION "fio-3.33"

/* io_u->ddir values */
enum {
    FIO_ABI_DDIR_READ = 0,
    FIO_ABI_DDIR_WRITE = 1,
    FIO_ABI_DDIR_TRIM = 2,
    FIO_ABI_DDIR_SYNC = 3,
    FIO_ABI_DDIR_DATASYNC = 4,
    FIO_ABI_DDIR_SYNC_FILE_RANGE = 5,
};

/* ->queue() results */
enum {
    FIO_ABI_Q_COMPLETED = 0,
    FIO_ABI_Q_QUEUED = 1,
    FIO_ABI_Q_BUSY = 2,
};

/* ioengine_ops.flags */
enum {
    FIO_ABI_DISKLESSIO = 1 << 2, /* fio does not open, size or lay out the files itself */
    FIO_ABI_NOEXTEND = 1 << 3,   /* writes past the end are not allowed */
    FIO_ABI_NODISKUTIL = 1 << 4, /* the file name is not a block device to watch */
    FIO_ABI_MEMALIGN = 1 << 9,   /* page-aligned I/O buffers */
};

/* fio_option.type values and the engine category */
enum {
    FIO_ABI_OPT_STR_STORE = 6,
    FIO_ABI_OPT_INT = 8,
    FIO_ABI_OPT_BOOL = 10,
};
#define FIO_ABI_OPT_C_ENGINE (1ULL << 6)

struct thread_data;
struct io_u;
struct fio_file;
struct timespec;

/** fio's struct ioengine_ops, version 31, field for field. */
struct fio_abi_ioengine_ops {
    void *list_next;
    void *list_prev;
    const char *name;
    int version;
    int flags;
    void *dlhandle;
    int (*setup)(struct thread_data *);
    int (*init)(struct thread_data *);
    int (*post_init)(struct thread_data *);
    int (*prep)(struct thread_data *, struct io_u *);
    int (*queue)(struct thread_data *, struct io_u *);
    int (*commit)(struct thread_data *);
    int (*getevents)(struct thread_data *, unsigned int, unsigned int, const struct timespec *);
    struct io_u *(*event)(struct thread_data *, int);
    char *(*errdetails)(struct io_u *);
    int (*cancel)(struct thread_data *, struct io_u *);
    void (*cleanup)(struct thread_data *);
    int (*open_file)(struct thread_data *, struct fio_file *);
    int (*close_file)(struct thread_data *, struct fio_file *);
    int (*invalidate)(struct thread_data *, struct fio_file *);
    int (*unlink_file)(struct thread_data *, struct fio_file *);
    int (*get_file_size)(struct thread_data *, struct fio_file *);
    int (*prepopulate_file)(struct thread_data *, struct fio_file *);
    void (*terminate)(struct thread_data *);
    int (*iomem_alloc)(struct thread_data *, size_t);
    void (*iomem_free)(struct thread_data *);
    int (*io_u_init)(struct thread_data *, struct io_u *);
    void (*io_u_free)(struct thread_data *, struct io_u *);
    void *get_zoned_model;
    void *report_zones;
    void *reset_wp;
    void *get_max_open_zones;
    int option_struct_size;
    void *options;
};

_Static_assert(offsetof(struct fio_abi_ioengine_ops, setup) == 0x28, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, prep) == 0x40, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, queue) == 0x48, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, getevents) == 0x58, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, event) == 0x60, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, cleanup) == 0x78, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, open_file) == 0x80, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, close_file) == 0x88, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, invalidate) == 0x90, "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, get_file_size) == 0xa0,
               "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, option_struct_size) == 0xf8,
               "fio 3.33 ops layout");
_Static_assert(offsetof(struct fio_abi_ioengine_ops, options) == 0x100, "fio 3.33 ops layout");

/** One fio_option: only the fields the engine sets; fio fills in the rest. */
struct fio_abi_option {
    const char *name;
    const char *lname;
    const char *alias;
    int type;
    unsigned int off1;
    char pad0[0x68 - 0x20];
    void *cb;
    const char *help;
    const char *def;
    char pad1[0x5b8 - 0x80];
    uint64_t category;
    uint64_t group;
    char pad2[0x5e8 - 0x5c8];
};

_Static_assert(sizeof(struct fio_abi_option) == 0x5e8, "fio 3.33 fio_option size");
_Static_assert(offsetof(struct fio_abi_option, def) == 0x78, "fio 3.33 fio_option layout");
_Static_assert(offsetof(struct fio_abi_option, category) == 0x5b8, "fio 3.33 fio_option layout");

/* Field offsets inside fio's thread_data, io_u and fio_file. */
#define FIO_ABI_TD_EO 0x1078
#define FIO_ABI_TD_ODIRECT 0x1fc
#define FIO_ABI_IOU_FILE 0x20
#define FIO_ABI_IOU_DDIR 0x2c
#define FIO_ABI_IOU_OFFSET 0x48
#define FIO_ABI_IOU_XFER_BUF 0x68
#define FIO_ABI_IOU_XFER_BUFLEN 0x70
#define FIO_ABI_IOU_RESID 0x88
#define FIO_ABI_IOU_ERROR 0x90
#define FIO_ABI_FILE_NAME 0x28
#define FIO_ABI_FILE_REAL_SIZE 0x30

/* Typed access without declaring fio's structures (memcpy: no aliasing assumptions). */
#define FIO_ABI_GET(type, base, off) \
    ({ type v_; memcpy(&v_, (const char *)(base) + (off), sizeof(v_)); v_; })
#define FIO_ABI_SET(type, base, off, val) \
    do { type v_ = (val); memcpy((char *)(base) + (off), &v_, sizeof(v_)); } while (0)

static inline void *fio_abi_td_eo(struct thread_data *td)
{
    return FIO_ABI_GET(void *, td, FIO_ABI_TD_EO);
}

/** The job's --direct setting (td->o.odirect). */
static inline bool fio_abi_td_odirect(struct thread_data *td)
{
    return FIO_ABI_GET(unsigned int, td, FIO_ABI_TD_ODIRECT) != 0;
}

static inline struct fio_file *fio_abi_iou_file(struct io_u *u)
{
    return FIO_ABI_GET(struct fio_file *, u, FIO_ABI_IOU_FILE);
}

static inline int fio_abi_iou_ddir(struct io_u *u)
{
    return FIO_ABI_GET(int, u, FIO_ABI_IOU_DDIR);
}

static inline uint64_t fio_abi_iou_offset(struct io_u *u)
{
    return FIO_ABI_GET(uint64_t, u, FIO_ABI_IOU_OFFSET);
}

static inline void *fio_abi_iou_xfer_buf(struct io_u *u)
{
    return FIO_ABI_GET(void *, u, FIO_ABI_IOU_XFER_BUF);
}

static inline uint64_t fio_abi_iou_xfer_buflen(struct io_u *u)
{
    return FIO_ABI_GET(uint64_t, u, FIO_ABI_IOU_XFER_BUFLEN);
}

/** Sets io_u->error (a positive errno) and, for a failed transfer, io_u->resid. */
static inline void fio_abi_iou_set_error(struct io_u *u, int err, uint64_t resid)
{
    FIO_ABI_SET(unsigned int, u, FIO_ABI_IOU_ERROR, (unsigned int)err);
    FIO_ABI_SET(uint64_t, u, FIO_ABI_IOU_RESID, resid);
}

static inline const char *fio_abi_file_name(struct fio_file *f)
{
    return FIO_ABI_GET(const char *, f, FIO_ABI_FILE_NAME);
}

static inline void fio_abi_file_set_size(struct fio_file *f, uint64_t size)
{
    FIO_ABI_SET(uint64_t, f, FIO_ABI_FILE_REAL_SIZE, size);
}

#endif /* COBLK_FIO_ABI_H */
