/*
 * The fixed newstyle handshake: greeting, client flags, then the option
 * loop until an option starts transmission (GO or EXPORT_NAME), the client
 * aborts, breaks a limit, or the handshake timer shuts the socket down.
 *
 * Limits (UNTRUSTED-INPUT.md): unknown client flags and a wrong option
 * magic disconnect; an option's data above NBD_MAX_OPTION_LEN (16 KiB)
 * disconnects before anything is allocated for it; the 33rd option
 * disconnects; the whole handshake must finish within the server's
 * handshake timeout.
 */
#include <errno.h>
#include <stdlib.h>

#include "block/bytes.h"
#include "nbd/server-int.h"

static int coroutine_fn send_greeting(NbdClient *c)
{
    uint8_t g[18];

    st_be64(g, NBD_INIT_MAGIC);
    st_be64(g + 8, NBD_OPTS_MAGIC);
    st_be16(g + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    return nbd_chan_write(&c->chan, g, sizeof(g));
}

static int coroutine_fn read_client_flags(NbdClient *c)
{
    uint8_t b[4];
    uint32_t flags;
    int ret = nbd_chan_read(&c->chan, b, sizeof(b));

    if (ret < 0) {
        return ret;
    }
    flags = ld_be32(b);
    if (flags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        return -EINVAL;
    }
    c->no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
    return 0;
}

/* Reads one option and runs it: 1 when transmission starts, 0 to go on, -errno to drop. */
static int coroutine_fn handle_one_option(NbdClient *c)
{
    uint8_t h[16];
    uint32_t opt, len;
    uint8_t *data;
    int ret = nbd_chan_read(&c->chan, h, sizeof(h));

    if (ret < 0) {
        return ret;
    }
    if (ld_be64(h) != NBD_OPTS_MAGIC) {
        return -EINVAL;
    }
    opt = ld_be32(h + 8);
    len = ld_be32(h + 12);
    if (++c->nr_options > NBD_MAX_OPTIONS || len > NBD_MAX_OPTION_LEN) {
        return -E2BIG;
    }
    data = malloc(len ? len : 1);
    if (!data) {
        return -ENOMEM;
    }
    ret = nbd_chan_read(&c->chan, data, len);
    if (ret == 0) {
        ret = nbd_handle_option(c, opt, data, len);
    }
    free(data);
    return ret;
}

int coroutine_fn nbd_handshake(NbdClient *c)
{
    int ret = send_greeting(c);

    if (ret == 0) {
        ret = read_client_flags(c);
    }
    while (ret == 0) {
        if (c->closing) {
            return -ESHUTDOWN;
        }
        ret = handle_one_option(c);
    }
    return ret < 0 ? ret : 0;
}
