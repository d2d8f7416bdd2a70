/*
 * Progress for -p: "    (12.34/100%)" rewritten in place on stderr, as
 * qemu-img prints it, updated when the shown value changes.
 */
#include "img.h"

void progress_init(ImgProgress *p, bool enabled)
{
    p->enabled = enabled;
    p->last_hundredths = -1;
    progress_update(p, 0, 1);
}

void progress_update(ImgProgress *p, uint64_t done, uint64_t total)
{
    int h;

    if (!p->enabled) {
        return;
    }
    h = total ? (int)((long double)done * 10000.0L / (long double)total) : 10000;
    if (h > 10000) {
        h = 10000;
    }
    if (h == p->last_hundredths) {
        return;
    }
    p->last_hundredths = h;
    fprintf(stderr, "    (%d.%02d/100%%)\r", h / 100, h % 100);
    fflush(stderr);
}

void progress_end(ImgProgress *p)
{
    if (!p->enabled) {
        return;
    }
    progress_update(p, 1, 1);
    fputc('\n', stderr);
    fflush(stderr);
}
