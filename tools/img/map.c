/*
 * coblk-img map: the allocation map of an image through its backing chain,
 * in qemu-img's human table or its JSON lines. Adjacent ranges with the
 * same depth, flags and contiguous host offsets in the same file merge.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <string.h>

#include "img.h"

typedef struct MapEntry {
    int64_t start;
    int64_t length;
    int flags;              /* BDRV_BLOCK_DATA | ZERO | OFFSET_VALID, plus present */
    bool present;
    int64_t offset;
    int depth;
    const char *file;
} MapEntry;

static int chain_length(BlockDriverState *bs)
{
    int n = 0;

    for (; bs; bs = bdrv_backing_bs(bs)) {
        n++;
    }
    return n;
}

/* One status query as a map entry; returns the status or -errno. */
static int get_entry(BlockDriverState *bs, int chain_len, int64_t offset, int64_t bytes,
                     MapEntry *e)
{
    BlockDriverState *file = NULL;
    int64_t pnum = 0, map = 0;
    int depth = 0;
    int ret = img_block_status(bs, NULL, offset, bytes, &pnum, &map, &file, &depth);

    if (ret < 0) {
        return ret;
    }
    if (pnum <= 0) {
        return -EIO;
    }
    e->start = offset;
    e->length = pnum;
    e->flags = ret & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID);
    e->present = depth > 0 || (ret & BDRV_BLOCK_ALLOCATED);
    e->depth = depth > 0 ? depth - 1 : chain_len - 1;
    e->offset = (ret & BDRV_BLOCK_OFFSET_VALID) ? map : 0;
    e->file = (ret & BDRV_BLOCK_OFFSET_VALID) && file ? img_display_name(bdrv_get_filename(file))
                                                     : NULL;
    return ret;
}

static bool can_merge(const MapEntry *a, const MapEntry *b)
{
    if (a->flags != b->flags || a->depth != b->depth || a->present != b->present) {
        return false;
    }
    if (!(a->flags & BDRV_BLOCK_OFFSET_VALID)) {
        return true;
    }
    return a->offset + a->length == b->offset &&
           (a->file == b->file || (a->file && b->file && strcmp(a->file, b->file) == 0));
}

static int dump_human(const MapEntry *e)
{
    if ((e->flags & (BDRV_BLOCK_DATA | BDRV_BLOCK_ZERO)) != BDRV_BLOCK_DATA) {
        return 0;
    }
    if (!(e->flags & BDRV_BLOCK_OFFSET_VALID)) {
        img_error("File contains external, encrypted or compressed clusters.");
        return -1;
    }
    printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", (uint64_t)e->start,
           (uint64_t)e->length, (uint64_t)e->offset, e->file ? e->file : "");
    return 0;
}

static void dump_json(const MapEntry *e, bool first)
{
    printf("%s{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %d, "
           "\"present\": %s, \"zero\": %s, \"data\": %s", first ? "[" : ",\n", e->start,
           e->length, e->depth, e->present ? "true" : "false",
           (e->flags & BDRV_BLOCK_ZERO) ? "true" : "false",
           (e->flags & BDRV_BLOCK_DATA) ? "true" : "false");
    if (e->flags & BDRV_BLOCK_OFFSET_VALID) {
        printf(", \"offset\": %" PRId64, e->offset);
    }
    printf("}");
}

static const struct option map_longopts[] = {
    { "help", no_argument, NULL, 'h' },
    { "format", required_argument, NULL, 'f' },
    { "output", required_argument, NULL, OPT_OUTPUT },
    { "object", required_argument, NULL, OPT_OBJECT },
    { "image-opts", no_argument, NULL, OPT_IMAGE_OPTS },
    { "force-share", no_argument, NULL, 'U' },
    { "start-offset", required_argument, NULL, OPT_START_OFFSET },
    { "max-length", required_argument, NULL, OPT_MAX_LENGTH },
    { NULL, 0, NULL, 0 },
};

static int map_image(BlockBackend *blk, int64_t start, int64_t max_len, bool json)
{
    BlockDriverState *bs = blk_bs(blk);
    int64_t len = blk_getlength(blk), end;
    int chain_len = chain_length(bs);
    MapEntry cur = { 0 }, next;
    bool have = false, first = true;

    if (len < 0) {
        img_error("%s: Could not get the image size: %s", bdrv_get_filename(bs),
                  strerror((int)-len));
        return 1;
    }
    end = max_len >= 0 && start + max_len < len ? start + max_len : len;
    if (!json) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    }
    for (int64_t off = start; off < end; off += next.length) {
        int64_t n = end - off < (1LL << 30) ? end - off : (1LL << 30);
        int ret = get_entry(bs, chain_len, off, n, &next);

        if (ret < 0) {
            img_error("Could not read file metadata at offset %" PRId64 ": %s", off,
                      strerror(-ret));
            return 1;
        }
        if (have && can_merge(&cur, &next)) {
            cur.length += next.length;
            continue;
        }
        if (have) {
            if (json) {
                dump_json(&cur, first);
                first = false;
            } else if (dump_human(&cur) < 0) {
                return 1;
            }
        }
        cur = next;
        have = true;
    }
    if (have) {
        if (json) {
            dump_json(&cur, first);
            first = false;
        } else if (dump_human(&cur) < 0) {
            return 1;
        }
    }
    if (json && first) {
        /* qemu-img prints one empty entry for an empty image */
        printf("[{ \"start\": 0, \"length\": 0, \"depth\": 0, \"present\": false, "
               "\"zero\": false, \"data\": false}]\n");
    } else if (json) {
        printf("]\n");
    }
    return 0;
}

int img_map(int argc, char **argv)
{
    ImgOpen o = { 0 };
    int64_t start = 0, max_len = -1;
    int json = 0, c, ret;
    BlockBackend *blk;

    while ((c = getopt_long(argc, argv, ":f:hU", map_longopts, NULL)) != -1) {
        switch (c) {
        case 'f': o.fmt = optarg; break;
        case 'h': return img_cmd_help("map");
        case 'U': o.force_share = true; break;
        case OPT_OUTPUT:
            if ((json = img_parse_output(optarg)) < 0) {
                return 1;
            }
            break;
        case OPT_START_OFFSET:
            if ((start = img_parse_size(optarg)) < 0) {
                img_error("Invalid start offset specified! You may use k, M, G, T, P or E "
                          "suffixes for ");
                return 1;
            }
            break;
        case OPT_MAX_LENGTH:
            if ((max_len = img_parse_size(optarg)) < 0) {
                img_error("Invalid max length specified! You may use k, M, G, T, P or E "
                          "suffixes for ");
                return 1;
            }
            break;
        case OPT_IMAGE_OPTS: o.image_opts = true; break;
        case OPT_OBJECT:
            if (img_object_add(optarg) < 0) {
                return 1;
            }
            break;
        case ':': return img_usage_error("map", "option requires an argument -- '%c'", optopt);
        default: return img_usage_error("map", "invalid option -- '%s'", argv[optind - 1]);
        }
    }
    if (optind != argc - 1) {
        return img_usage_error("map", "Expecting one image file name");
    }
    blk = img_open(argv[optind], &o);
    if (!blk) {
        return 1;
    }
    ret = map_image(blk, start, max_len, json);
    blk_unref(blk);
    return ret;
}
