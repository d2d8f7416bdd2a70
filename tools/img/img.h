/*
 * coblk-img: shared declarations of the sub-commands (one file per group)
 * and the helpers in main.c, json.c and progress.c.
 *
 * Every sub-command is `int img_<name>(int argc, char **argv)` and returns
 * the process exit status. Errors go to stderr as "coblk-img: <message>".
 */
#ifndef COBLK_TOOLS_IMG_H
#define COBLK_TOOLS_IMG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <coblk/block.h>
#include <coblk/image.h>

/* Room for every driver name bdrv_driver_names() can list: the built-in ones and the
 * registry's at most 64 run-time (plugin) drivers. */
#define IMG_MAX_DRIVERS 256

/* Long options shared by sub-commands (values above any short option). */
enum {
    OPT_OBJECT = 256,
    OPT_IMAGE_OPTS,
    OPT_TARGET_IMAGE_OPTS,
    OPT_OUTPUT,
    OPT_BACKING_CHAIN,
    OPT_SHRINK,
    OPT_PREALLOC,
    OPT_FORCE,
    OPT_SIZE,
    OPT_START_OFFSET,
    OPT_MAX_LENGTH,
    OPT_TARGET_IS_ZERO,
    OPT_FLUSH_INTERVAL,
    OPT_NO_DRAIN,
    OPT_PATTERN,
    OPT_SALVAGE,
    OPT_BITMAPS,
    OPT_HELP,
    OPT_SKIP_BROKEN,
};

/* --------------------------------------------------------------------- */
/* main.c: messages, option values, opening images */

void img_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void img_error_err(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Prints "coblk-img: <msg>" and "Try 'coblk-img <cmd> --help'"; returns 1. */
int img_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Prints the help text of a sub-command; returns 0. */
int img_cmd_help(const char *cmd);

/** Parses "--output=": 0 human, 1 json, -1 invalid (message printed). */
int img_parse_output(const char *s);
/** Parses a size with suffixes as qemu-img; -1 (message printed) if invalid. */
int64_t img_parse_size(const char *s);
/** Formats bytes as qemu-img's human sizes ("1 MiB", "1.5 KiB", "324 KiB"). */
void img_size_str(char *buf, size_t len, uint64_t bytes);

typedef struct ImgOpen {
    const char *fmt;        /**< -f (NULL: probe) */
    const char *cache;      /**< -t / -T (NULL: default) */
    const char *aio;        /**< file.aio= (NULL: default engine) */
    bool image_opts;        /**< the filename is an option string */
    bool force_share;       /**< -U */
    bool writable;
    bool no_backing;
    bool quiet;
} ImgOpen;

/** Applies a cache mode to open flags; false (message printed) if unknown. */
bool img_cache_flags(const char *mode, int *flags, bool *writethrough);
/** A backing file name as the image will resolve it: relative to the image's directory. */
char *img_resolve_backing(const char *image, const char *backing);
/** A node's file name as qemu-img shows it ("./base.img" shown as "base.img"). */
const char *img_display_name(const char *filename);
/** Prints the snapshot table of "info" and "snapshot -l". */
void img_print_snapshot_table(const BlockSnapshotInfo *sn, int n);
/** Opens an image as qemu-img does; prints the error and returns NULL on failure. */
BlockBackend *img_open(const char *filename, const ImgOpen *o);
/** Parses "-o" options (k=v,...) appended into *opts; false on error. */
bool img_add_options(BlockOpts **opts, const char *str);
/** Prints "-o help" for a format; returns the exit code. */
int img_print_create_opts(const char *fmt);

/** Runs fn(opaque) in a coroutine in blk's context and polls until it returns. */
typedef int64_t ImgCoFn(void *opaque);
int64_t img_run_co(AioContext *ctx, ImgCoFn *fn, void *opaque);

/** Block status across the chain from a plain context (see bdrv_co_block_status_above). */
int img_block_status(BlockDriverState *bs, BlockDriverState *base, int64_t offset,
                     int64_t bytes, int64_t *pnum, int64_t *map, BlockDriverState **file,
                     int *depth);

/** A page-aligned buffer (exits on allocation failure). */
void *img_alloc(size_t size);
/** Whether buf[0..len) is all zero bytes. */
bool img_is_zero(const void *buf, size_t len);

/* objects.c: --object secret / tls-creds-x509 / tls-creds-psk */
/** Adds an --object; prints the error and returns -1 if it is refused. */
int img_object_add(const char *spec);
/** Replaces tls-creds=ID options (any prefix) with the NBD client's TLS options; -1 on error. */
int img_objects_apply(BlockOpts *opts);
/**
 * A json:{...} *filename is parsed into opts here, as the block layer would at
 * open (*filename becomes NULL), so that img_objects_apply() sees the
 * tls-creds=ID options inside it. 0, or -1 with errp set (malformed JSON).
 */
int img_objects_apply_name(BlockOpts *opts, const char **filename, Error **errp);

/* copy-offload.c: convert -C (copy_file_range into a raw target on a file, or qcow2) */
typedef struct ImgCopyOffload ImgCopyOffload;
/** NULL when dst is not a raw image directly on a file (no offloading then). */
ImgCopyOffload *img_copy_offload_new(BlockBackend *dst);
void img_copy_offload_free(ImgCopyOffload *c);
/**
 * Copies n bytes at offset map of the file node file to offset off of the
 * target. -ENOTSUP when file is not a file node; other -errno from the kernel.
 */
int coroutine_fn img_copy_offload(ImgCopyOffload *c, BlockDriverState *file, int64_t map,
                                  int64_t off, int64_t n);

/* convert-map.c: convert takes cached source data from a read-only mapping of its file */
typedef struct ImgSrcMap ImgSrcMap;
ImgSrcMap *img_srcmap_new(void);
void img_srcmap_free(ImgSrcMap *m);
/**
 * The n bytes at offset map of the file node file (block status of the
 * source node src), read in place from the page cache (valid until
 * img_srcmap_free), or NULL when they must be read normally: not a file node
 * right under src or its backing chain, O_DIRECT, past the mapped length,
 * not all cached. A file node is judged once, with the first src given.
 */
const uint8_t *img_srcmap_get(ImgSrcMap *m, BlockDriverState *src, BlockDriverState *file,
                              int64_t map, int64_t n);

/* convert-prealloc.c: convert into a raw file on ext4/XFS preallocates its data ranges */
typedef struct ImgPrealloc ImgPrealloc;
/** NULL when dst is not a raw image directly on an ext4 or XFS file. */
ImgPrealloc *img_prealloc_new(BlockBackend *dst);
void img_prealloc_free(ImgPrealloc *p);
/** Queues [off, off + n) (ascending, not overlapping) for preallocation ahead of the writes. */
void coroutine_fn img_prealloc_add(ImgPrealloc *p, int64_t off, int64_t n);
/** No more ranges: preallocates what is queued and stops. Must be called once. */
void coroutine_fn img_prealloc_end(ImgPrealloc *p);
/**
 * Frees the space of a range the copy leaves out (zeroes inside data) once it
 * has been preallocated. 0 (also when the storage cannot punch holes) or -errno.
 */
int coroutine_fn img_prealloc_unmap(ImgPrealloc *p, int64_t off, int64_t n);

/* --------------------------------------------------------------------- */
/* json.c: a small JSON tree (to pretty-print driver JSON) and an emitter */

typedef enum JType { J_NULL, J_BOOL, J_NUM, J_STR, J_OBJ, J_ARR } JType;

typedef struct JNode {
    JType type;
    char *key;              /**< member name inside an object */
    char *text;             /**< number text, string value */
    bool b;
    struct JNode *child;    /**< first member / element */
    struct JNode *next;
} JNode;

/** Parses JSON text into a tree; NULL if malformed. */
JNode *json_parse(const char *text);
void json_free(JNode *n);

typedef struct JOut {
    FILE *f;
    int depth;
    bool first;             /**< nothing yet at this level */
} JOut;

void jo_begin_obj(JOut *o, const char *key);
void jo_end_obj(JOut *o);
void jo_begin_arr(JOut *o, const char *key);
void jo_end_arr(JOut *o);
void jo_str(JOut *o, const char *key, const char *v);
void jo_int(JOut *o, const char *key, int64_t v);
void jo_bool(JOut *o, const char *key, bool v);
/** Emits a parsed tree as a member (key) or element (key NULL). */
void jo_node(JOut *o, const char *key, const JNode *n);
/** Ends the document (newline). */
void jo_finish(JOut *o);
/** Prints a tree in qemu-img's human "Format specific information" form. */
void json_print_human(FILE *f, const JNode *n, int indent);

/* --------------------------------------------------------------------- */
/* progress.c: "    (12.34/100%)" on stderr */

typedef struct ImgProgress {
    bool enabled;
    int last_hundredths;
} ImgProgress;

void progress_init(ImgProgress *p, bool enabled);
void progress_update(ImgProgress *p, uint64_t done, uint64_t total);
void progress_end(ImgProgress *p);

/* --------------------------------------------------------------------- */
/* Sub-commands */

int img_create(int argc, char **argv);
int img_info(int argc, char **argv);
int img_check(int argc, char **argv);
int img_convert(int argc, char **argv);
int img_compare(int argc, char **argv);
int img_map(int argc, char **argv);
int img_commit(int argc, char **argv);
int img_rebase(int argc, char **argv);
int img_resize(int argc, char **argv);
int img_snapshot(int argc, char **argv);
int img_amend(int argc, char **argv);
int img_bitmap(int argc, char **argv);
/** convert --bitmaps: refuses inconsistent source bitmaps unless skip_broken (message printed). */
int img_bitmaps_check(BlockBackend *src, bool skip_broken);
/** convert --bitmaps: copies the source's bitmaps (name, granularity, state, bits). */
int img_bitmaps_copy(BlockBackend *src, BlockBackend *dst, bool skip_broken);
int img_measure(int argc, char **argv);
int img_bench(int argc, char **argv);
int img_dd(int argc, char **argv);
int img_setuuid(int argc, char **argv);
int img_compact(int argc, char **argv);
int img_geometry(int argc, char **argv);
int img_formats(int argc, char **argv);
int img_rename(int argc, char **argv);
int img_comment(int argc, char **argv);
int img_timestamp(int argc, char **argv);

#endif /* COBLK_TOOLS_IMG_H */
