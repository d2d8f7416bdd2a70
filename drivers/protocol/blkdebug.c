/*
 * blkdebug: a fault-injection filter over any node (its "image" child).
 *
 * Rules, from a config file (config=) or dotted options:
 *   inject-error.N.event=l2_update   event that arms the rule ("none": armed from the start)
 *   inject-error.N.state=2           only in this state (0 = any; the state starts at 1)
 *   inject-error.N.iotype=write      read | write | write-zeroes | discard | flush |
 *                                    block-status | any (default: all but block-status)
 *   inject-error.N.errno=28          error returned (default EIO)
 *   inject-error.N.sector=S          only requests touching 512-byte sector S (default any)
 *   inject-error.N.once=on           disarm after the first failure
 *   inject-error.N.after=K           let the first K matching requests pass (they
 *                                    are counted only while the rule is armed),
 *                                    then fail as the rule says (default 0); with
 *                                    event=none and once=on this fails exactly the
 *                                    (K+1)-th request of the iotype: the error sweeps
 *                                    of tests/errinj use it
 *   set-state.N.event / .state / .new_state
 * An armed inject-error rule fails every matching request on this node until
 * it is disarmed (once=on). set-state rules that match an event all see the
 * state from before the event. Breakpoints (bdrv_debug_breakpoint) suspend
 * the coroutine that fires an event until bdrv_debug_resume(tag).
 *
 * Also: align= (request alignment to force on the image), max-transfer=.
 * Filename syntax: "blkdebug:[config-file]:image-filename".
 *
 * The config file is an INI subset: [inject-error] / [set-state] sections of
 * key = "value" lines, '#' comments. Limits: 64 KiB of config, 256 rules,
 * 64 breakpoints, tags of 63 bytes.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coblk-config.h"
#include "block/block-int.h"
#include "drivers/drivers.h"

#define BLKDBG_MAX_RULES 256
#define BLKDBG_MAX_BREAKPOINTS 64
#define BLKDBG_CONFIG_MAX (64 * 1024)

enum {
    IOT_READ = 1 << 0,
    IOT_WRITE = 1 << 1,
    IOT_WRITE_ZEROES = 1 << 2,
    IOT_DISCARD = 1 << 3,
    IOT_FLUSH = 1 << 4,
    IOT_BLOCK_STATUS = 1 << 5,
    IOT_DEFAULT = IOT_READ | IOT_WRITE | IOT_WRITE_ZEROES | IOT_DISCARD | IOT_FLUSH,
    IOT_ANY = IOT_DEFAULT | IOT_BLOCK_STATUS,
};

typedef struct BlkdebugRule {
    bool inject;       /* inject-error, else set-state */
    int event;
    int state;         /* 0 = any */
    int new_state;     /* set-state */
    unsigned iotypes;  /* inject-error */
    int error;         /* positive errno */
    int64_t sector;    /* -1 = any */
    int64_t after;     /* matching requests still to let pass */
    bool once;
    bool armed;
    bool dead;         /* fired with once=on */
} BlkdebugRule;

typedef struct BlkdebugBreakpoint {
    char tag[64];
    int event;
    Coroutine *co;     /* suspended coroutine, once hit */
    bool used;
} BlkdebugBreakpoint;

typedef struct BDRVBlkdebugState {
    BlkdebugRule rules[BLKDBG_MAX_RULES];
    int nrules;
    int state;
    uint32_t align;
    int64_t max_transfer;
    BlkdebugBreakpoint bps[BLKDBG_MAX_BREAKPOINTS];
} BDRVBlkdebugState;

static const char *const blkdebug_option_names[] = {
    "config", "align", "max-transfer", "inject-error.*", "set-state.*", NULL,
};

/* ---------------------------------------------------------------------- */
/* Rules from key/value pairs (one rule's options, config or dotted) */

static int parse_iotype(const char *v, unsigned *out)
{
    static const struct {
        const char *name;
        unsigned bits;
    } t[] = {
        { "read", IOT_READ }, { "write", IOT_WRITE }, { "write-zeroes", IOT_WRITE_ZEROES },
        { "discard", IOT_DISCARD }, { "flush", IOT_FLUSH },
        { "block-status", IOT_BLOCK_STATUS }, { "any", IOT_ANY },
    };

    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        if (strcmp(v, t[i].name) == 0) {
            *out = t[i].bits;
            return 0;
        }
    }
    return -EINVAL;
}

/* Builds one rule from its options (consumed); errors name the rule. */
static int rule_from_opts(BDRVBlkdebugState *s, bool inject, BlockOpts *o, const char *who,
                          Error **errp)
{
    BlkdebugRule r = { .inject = inject, .sector = -1, .error = EIO, .iotypes = IOT_DEFAULT };
    char *event = NULL, *iotype = NULL;
    int64_t state = 0, new_state = 0, err = EIO, sector = -1, after = 0;
    int ret = -EINVAL;

    if (s->nrules == BLKDBG_MAX_RULES) {
        error_setg(errp, "blkdebug: more than %d rules", BLKDBG_MAX_RULES);
        return -E2BIG;
    }
    if (bopts_take_str(o, "event", &event, errp) < 0 ||
        bopts_take_int64(o, "state", 0, &state, errp) < 0) {
        goto out;
    }
    if (!event || (r.event = bdrv_debug_event_from_name(event)) < 0) {
        error_setg(errp, "blkdebug: %s: %s event '%s'", who, event ? "unknown" : "missing",
                   event ? event : "");
        goto out;
    }
    if (inject) {
        if (bopts_take_int64(o, "errno", EIO, &err, errp) < 0 ||
            bopts_take_int64(o, "sector", -1, &sector, errp) < 0 ||
            bopts_take_bool(o, "once", false, &r.once, errp) < 0 ||
            bopts_take_int64(o, "after", 0, &after, errp) < 0 ||
            bopts_take_str(o, "iotype", &iotype, errp) < 0) {
            goto out;
        }
        if (err <= 0 || err > 4095) {
            error_setg(errp, "blkdebug: %s: errno %lld out of range", who, (long long)err);
            goto out;
        }
        if (iotype && parse_iotype(iotype, &r.iotypes) < 0) {
            error_setg(errp, "blkdebug: %s: unknown iotype '%s'", who, iotype);
            goto out;
        }
        if (sector < -1 || sector > INT64_MAX / 512) {
            error_setg(errp, "blkdebug: %s: sector %lld out of range", who, (long long)sector);
            goto out;
        }
        if (after < 0) {
            error_setg(errp, "blkdebug: %s: after %lld is negative", who, (long long)after);
            goto out;
        }
        r.error = (int)err;
        r.sector = sector;
        r.after = after;
        r.armed = r.event == BLKDBG_NONE;
    } else if (bopts_take_int64(o, "new_state", 0, &new_state, errp) < 0) {
        goto out;
    } else if (new_state <= 0 || new_state > INT32_MAX) {
        error_setg(errp, "blkdebug: %s: new_state must be a positive number", who);
        goto out;
    }
    if (state < 0 || state > INT32_MAX) {
        error_setg(errp, "blkdebug: %s: state %lld out of range", who, (long long)state);
        goto out;
    }
    r.state = (int)state;
    r.new_state = (int)new_state;
    ret = bopts_check_empty(o, who, errp);
    if (ret == 0) {
        s->rules[s->nrules++] = r;
    }
out:
    free(event);
    free(iotype);
    return ret;
}

/* inject-error.N.* and set-state.N.* from the node's options, N = 0, 1, ... */
static int rules_from_options(BDRVBlkdebugState *s, BlockOpts *options, Error **errp)
{
    static const char *const kinds[] = { "inject-error", "set-state" };

    for (int k = 0; k < 2; k++) {
        for (int n = 0;; n++) {
            char prefix[48];
            BlockOpts *o;
            int ret;

            snprintf(prefix, sizeof(prefix), "%s.%d.", kinds[k], n);
            o = bopts_extract_prefix(options, prefix);
            if (!o || bopts_count(o) == 0) {
                bopts_free(o);
                break;
            }
            prefix[strlen(prefix) - 1] = '\0';
            ret = rule_from_opts(s, k == 0, o, prefix, errp);
            bopts_free(o);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Config file */

static char *trim(char *p)
{
    char *e;

    while (*p == ' ' || *p == '\t') {
        p++;
    }
    e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) {
        *--e = '\0';
    }
    if (e - p >= 2 && *p == '"' && e[-1] == '"') {
        e[-1] = '\0';
        p++;
    }
    return p;
}

/* Ends the section being collected in o: turns it into a rule. */
static int config_flush(BDRVBlkdebugState *s, int kind, BlockOpts **o, const char *file,
                        int line, Error **errp)
{
    char who[64];
    int ret = 0;

    if (*o && kind) {
        snprintf(who, sizeof(who), "section ending at line %d", line);
        ret = rule_from_opts(s, kind == 1, *o, who, errp);
        if (ret < 0) {
            error_prepend(errp, "%s: ", file);
        }
    }
    bopts_free(*o);
    *o = NULL;
    return ret;
}

static int config_parse(BDRVBlkdebugState *s, const char *file, char *text, Error **errp)
{
    BlockOpts *o = NULL;
    int kind = 0; /* 1 inject-error, 2 set-state */
    int line = 0;
    char *save = NULL;

    for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *p = trim(l), *eq;

        line++;
        if (*p == '\0' || *p == '#') {
            continue;
        }
        if (*p == '[') {
            if (config_flush(s, kind, &o, file, line, errp) < 0) {
                return -EINVAL;
            }
            kind = !strcmp(p, "[inject-error]") ? 1 : !strcmp(p, "[set-state]") ? 2 : -1;
            if (kind < 0) {
                error_setg(errp, "%s:%d: unknown section %s", file, line, p);
                return -EINVAL;
            }
            o = bopts_new();
            continue;
        }
        eq = strchr(p, '=');
        if (!o || !eq) {
            error_setg(errp, "%s:%d: expected 'key = \"value\"' inside a section", file, line);
            bopts_free(o);
            return -EINVAL;
        }
        *eq = '\0';
        bopts_set(o, trim(p), trim(eq + 1));
    }
    return config_flush(s, kind, &o, file, line, errp);
}

static int config_load(BDRVBlkdebugState *s, const char *file, Error **errp)
{
    FILE *f = fopen(file, "r");
    char *text;
    size_t n;
    int ret;

    if (!f) {
        error_setg_errno(errp, -errno, "blkdebug: cannot open config '%s'", file);
        return -errno;
    }
    text = malloc(BLKDBG_CONFIG_MAX + 1);
    n = fread(text, 1, BLKDBG_CONFIG_MAX + 1, f);
    fclose(f);
    if (n > BLKDBG_CONFIG_MAX) {
        error_setg(errp, "blkdebug: config '%s' is larger than %d bytes", file,
                   BLKDBG_CONFIG_MAX);
        free(text);
        return -EFBIG;
    }
    text[n] = '\0';
    ret = config_parse(s, file, text, errp);
    free(text);
    return ret;
}

/* ---------------------------------------------------------------------- */
/* Open */

/* "blkdebug:CONFIG:IMAGE" -> config (may be empty) and image. */
static int split_filename(const char *fn, char **config, char **image, Error **errp)
{
    const char *rest = fn + strlen("blkdebug:");
    const char *colon = strchr(rest, ':');

    if (strncmp(fn, "blkdebug:", 9) != 0 || !colon) {
        error_setg(errp, "blkdebug: filename '%s' is not blkdebug:[config]:image", fn);
        return -EINVAL;
    }
    *config = colon > rest ? strndup(rest, (size_t)(colon - rest)) : NULL;
    *image = strdup(colon + 1);
    return 0;
}

static int blkdebug_open(BlockDriverState *bs, BlockOpts *options, int flags, Error **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    char *fn = NULL, *config = NULL, *image = NULL;
    uint64_t align, max_transfer;
    int ret;

    s->state = 1;
    if (bopts_take_str(options, "filename", &fn, errp) < 0 ||
        bopts_take_str(options, "config", &config, errp) < 0) {
        ret = -EINVAL;
        goto out;
    }
    if (fn && (ret = split_filename(fn, config ? &fn : &config, &image, errp)) < 0) {
        goto out;
    }
    if (config && (ret = config_load(s, config, errp)) < 0) {
        goto out;
    }
    ret = rules_from_options(s, options, errp);
    if (ret < 0) {
        goto out;
    }
    if (bopts_take_size(options, "align", 0, &align, errp) < 0 ||
        bopts_take_size(options, "max-transfer", 0, &max_transfer, errp) < 0) {
        ret = -EINVAL;
        goto out;
    }
    if (align && (align & (align - 1) || align > (1u << 30))) {
        error_setg(errp, "blkdebug: align %llu must be a power of two up to 1 GiB",
                   (unsigned long long)align);
        ret = -EINVAL;
        goto out;
    }
    if (max_transfer && (max_transfer > INT32_MAX || (align && max_transfer % align))) {
        error_setg(errp, "blkdebug: max-transfer %llu must be a multiple of align up to 2 GiB",
                   (unsigned long long)max_transfer);
        ret = -EINVAL;
        goto out;
    }
    s->align = (uint32_t)align;
    s->max_transfer = (int64_t)max_transfer;
    bs->file = bdrv_open_child(image, options, "image", bs,
                               BDRV_CHILD_IMAGE | BDRV_CHILD_PRIMARY | BDRV_CHILD_FILTERED,
                               false, errp);
    if (!bs->file) {
        ret = -EINVAL;
        goto out;
    }
    bs->supported_write_flags = bs->file->bs->supported_write_flags;
    bs->supported_zero_flags = bs->file->bs->supported_zero_flags;
    snprintf(bs->filename, sizeof(bs->filename), "%s", bs->file->bs->filename);
out:
    free(fn);
    free(config);
    free(image);
    return ret;
}

static void blkdebug_refresh_limits(BlockDriverState *bs, Error **errp)
{
    BDRVBlkdebugState *s = bs->opaque;

    if (s->align > bs->bl.request_alignment) {
        bs->bl.request_alignment = s->align;
    }
    if (s->max_transfer &&
        (!bs->bl.max_transfer || s->max_transfer < bs->bl.max_transfer)) {
        bs->bl.max_transfer = s->max_transfer;
    }
}

/* ---------------------------------------------------------------------- */
/* Events and injection */

static void coroutine_fn blkdebug_debug_event(BlockDriverState *bs, BlkdebugEvent event)
{
    BDRVBlkdebugState *s = bs->opaque;
    int old = s->state, next = s->state;

    for (int i = 0; i < s->nrules; i++) {
        BlkdebugRule *r = &s->rules[i];

        if (r->dead || r->event != (int)event || (r->state && r->state != old)) {
            continue;
        }
        if (r->inject) {
            r->armed = true;
        } else {
            next = r->new_state;
        }
    }
    s->state = next;
    for (int i = 0; i < BLKDBG_MAX_BREAKPOINTS; i++) {
        BlkdebugBreakpoint *b = &s->bps[i];

        if (b->used && !b->co && b->event == (int)event && coroutine_in_coroutine()) {
            b->co = coroutine_self();
            coroutine_yield(); /* until blkdebug_debug_resume */
            b->used = false;
            b->co = NULL;
            break;
        }
    }
}

/* -errno of the first armed rule matching the request, or 0. */
static int blkdebug_check(BlockDriverState *bs, unsigned iotype, int64_t offset, int64_t bytes)
{
    BDRVBlkdebugState *s = bs->opaque;

    for (int i = 0; i < s->nrules; i++) {
        BlkdebugRule *r = &s->rules[i];

        if (!r->inject || r->dead || !r->armed || !(r->iotypes & iotype) ||
            (r->state && r->state != s->state)) {
            continue;
        }
        if (r->sector >= 0 &&
            (iotype == IOT_FLUSH || r->sector * 512 >= offset + bytes ||
             r->sector * 512 + 512 <= offset)) {
            continue;
        }
        if (r->after > 0) {
            r->after--;
            continue;
        }
        if (r->once) {
            r->dead = true;
        }
        return -r->error;
    }
    return 0;
}

static int coroutine_fn blkdebug_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           IOVector *qiov, size_t qiov_offset,
                                           BdrvRequestFlags flags)
{
    int ret = blkdebug_check(bs, IOT_READ, offset, bytes);

    return ret ? ret : bdrv_co_preadv_part(bs->file, offset, bytes, qiov, qiov_offset, flags);
}

static int coroutine_fn blkdebug_co_pwritev(BlockDriverState *bs, int64_t offset,
                                            int64_t bytes, IOVector *qiov, size_t qiov_offset,
                                            BdrvRequestFlags flags)
{
    int ret = blkdebug_check(bs, IOT_WRITE, offset, bytes);

    return ret ? ret : bdrv_co_pwritev_part(bs->file, offset, bytes, qiov, qiov_offset, flags);
}

static int coroutine_fn blkdebug_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, BdrvRequestFlags flags)
{
    int ret = blkdebug_check(bs, IOT_WRITE_ZEROES, offset, bytes);

    return ret ? ret : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn blkdebug_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                             int64_t bytes)
{
    int ret = blkdebug_check(bs, IOT_DISCARD, offset, bytes);

    return ret ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

/* The request layer flushes the image child after this. */
static int coroutine_fn blkdebug_co_flush(BlockDriverState *bs)
{
    return blkdebug_check(bs, IOT_FLUSH, 0, 0);
}

static int coroutine_fn blkdebug_co_block_status(BlockDriverState *bs, bool want_zero,
                                                 int64_t offset, int64_t bytes, int64_t *pnum,
                                                 int64_t *map, BlockDriverState **file)
{
    int ret = blkdebug_check(bs, IOT_BLOCK_STATUS, offset, bytes);

    if (ret) {
        return ret;
    }
    return bdrv_co_block_status_from_file(bs, want_zero, offset, bytes, pnum, map, file);
}

static int64_t coroutine_fn blkdebug_co_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

static int coroutine_fn blkdebug_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                             PreallocMode prealloc, BdrvRequestFlags flags,
                                             Error **errp)
{
    return bdrv_co_truncate(bs->file, offset, exact, prealloc, flags, errp);
}

/* ---------------------------------------------------------------------- */
/* Breakpoints */

static BlkdebugBreakpoint *bp_find(BDRVBlkdebugState *s, const char *tag)
{
    for (int i = 0; i < BLKDBG_MAX_BREAKPOINTS; i++) {
        if (s->bps[i].used && strcmp(s->bps[i].tag, tag) == 0) {
            return &s->bps[i];
        }
    }
    return NULL;
}

static int blkdebug_debug_breakpoint(BlockDriverState *bs, const char *event, const char *tag)
{
    BDRVBlkdebugState *s = bs->opaque;
    int ev = bdrv_debug_event_from_name(event);

    if (ev < 0 || strlen(tag) >= sizeof(s->bps[0].tag) || bp_find(s, tag)) {
        return -EINVAL;
    }
    for (int i = 0; i < BLKDBG_MAX_BREAKPOINTS; i++) {
        BlkdebugBreakpoint *b = &s->bps[i];

        if (!b->used) {
            *b = (BlkdebugBreakpoint){ .event = ev, .used = true };
            snprintf(b->tag, sizeof(b->tag), "%s", tag);
            return 0;
        }
    }
    return -ENOSPC;
}

static int blkdebug_debug_remove_breakpoint(BlockDriverState *bs, const char *tag)
{
    BlkdebugBreakpoint *b = bp_find(bs->opaque, tag);

    if (!b) {
        return -ENOENT;
    }
    if (b->co) {
        aio_co_schedule(bs->aio_context, b->co); /* it clears the slot when it runs */
        b->event = -1;
        return 0;
    }
    b->used = false;
    return 0;
}

static int blkdebug_debug_resume(BlockDriverState *bs, const char *tag)
{
    BlkdebugBreakpoint *b = bp_find(bs->opaque, tag);

    if (!b || !b->co) {
        return -ENOENT;
    }
    b->event = -1; /* not hit again while it waits to run */
    aio_co_schedule(bs->aio_context, b->co);
    return 0;
}

static bool blkdebug_debug_is_suspended(BlockDriverState *bs, const char *tag)
{
    BlkdebugBreakpoint *b = bp_find(bs->opaque, tag);

    return b && b->co && b->event >= 0;
}

const BlockDriver bdrv_blkdebug = {
    .struct_size = sizeof(BlockDriver),
    .format_name = "blkdebug",
    .protocol_name = "blkdebug",
    .instance_size = sizeof(BDRVBlkdebugState),
    .is_protocol = true, /* for the "blkdebug:" prefix */
    .is_filter = true,
    .option_names = blkdebug_option_names,
    .bdrv_open = blkdebug_open,
    .refresh_limits = blkdebug_refresh_limits,
    .co_preadv = blkdebug_co_preadv,
    .co_pwritev = blkdebug_co_pwritev,
    .co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
    .co_pdiscard = blkdebug_co_pdiscard,
    .co_flush_to_os = blkdebug_co_flush,
    .co_block_status = blkdebug_co_block_status,
    .co_getlength = blkdebug_co_getlength,
    .co_truncate = blkdebug_co_truncate,
    .debug_event = blkdebug_debug_event,
    .debug_breakpoint = blkdebug_debug_breakpoint,
    .debug_remove_breakpoint = blkdebug_debug_remove_breakpoint,
    .debug_resume = blkdebug_debug_resume,
    .debug_is_suspended = blkdebug_debug_is_suspended,
};
