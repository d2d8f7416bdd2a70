/*
 * Latency histogram of the embedding examples (see vdisk-stats.h).
 */
#include "vdisk-stats.h"

/* Values below LAT_SUB get a bucket each; above, 16 buckets per power of two. */
static unsigned lat_index(uint64_t ns)
{
    unsigned msb;

    if (ns < LAT_SUB) {
        return (unsigned)ns;
    }
    msb = 63u - (unsigned)__builtin_clzll(ns);
    return (msb - LAT_SUB_BITS + 1) * LAT_SUB +
           (unsigned)((ns >> (msb - LAT_SUB_BITS)) & (LAT_SUB - 1));
}

/* The largest value that falls in bucket idx. */
static uint64_t lat_upper(unsigned idx)
{
    unsigned msb, sub;

    if (idx < LAT_SUB) {
        return idx;
    }
    msb = idx / LAT_SUB + LAT_SUB_BITS - 1;
    sub = idx % LAT_SUB;
    return ((uint64_t)(LAT_SUB + sub + 1) << (msb - LAT_SUB_BITS)) - 1;
}

void lat_add(LatHist *h, uint64_t ns)
{
    h->bucket[lat_index(ns)]++;
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns) {
        h->max_ns = ns;
    }
}

void lat_merge(LatHist *dst, const LatHist *src)
{
    for (unsigned i = 0; i < LAT_BUCKETS; i++) {
        dst->bucket[i] += src->bucket[i];
    }
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->max_ns > dst->max_ns) {
        dst->max_ns = src->max_ns;
    }
}

uint64_t lat_percentile(const LatHist *h, double pct)
{
    uint64_t want, seen = 0;

    if (!h->count) {
        return 0;
    }
    want = (uint64_t)((double)h->count * pct / 100.0 + 0.5);
    if (want == 0) {
        want = 1;
    }
    for (unsigned i = 0; i < LAT_BUCKETS; i++) {
        seen += h->bucket[i];
        if (seen >= want) {
            uint64_t up = lat_upper(i);

            return up < h->max_ns ? up : h->max_ns;
        }
    }
    return h->max_ns;
}
