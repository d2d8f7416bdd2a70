/* Moved to block/bytes.h (nbd/ shares it and sits below drivers/). */
#include "block/bytes.h"
