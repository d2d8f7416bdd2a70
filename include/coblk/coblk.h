/* coblk - umbrella header: everything an embedder needs. */
#ifndef COBLK_COBLK_H
#define COBLK_COBLK_H

#include <coblk/common.h>
#include <coblk/coroutine.h>
#include <coblk/aio.h>
#include <coblk/aio-io.h>
#include <coblk/iov.h>
#include <coblk/opts.h>
#include <coblk/block.h>
#include <coblk/image.h>
#include <coblk/nbd.h>

#endif /* COBLK_COBLK_H */
