/*
 * Latency histogram of the embedding examples: log-linear buckets (16 per
 * power of two, so a percentile is exact to within 1/16 of its value), no
 * allocation, O(1) insert.
 */
#ifndef COBLK_EXAMPLES_VDISK_STATS_H
#define COBLK_EXAMPLES_VDISK_STATS_H

#include <stdint.h>

#define LAT_SUB_BITS 4
#define LAT_SUB (1u << LAT_SUB_BITS)
#define LAT_BUCKETS (64u * LAT_SUB)

typedef struct LatHist {
    uint64_t bucket[LAT_BUCKETS];
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;
} LatHist;

/** Records one latency in nanoseconds. */
void lat_add(LatHist *h, uint64_t ns);
/** Adds every sample of src to dst. */
void lat_merge(LatHist *dst, const LatHist *src);
/** The latency at or below which pct percent of the samples fall (upper bucket bound). */
uint64_t lat_percentile(const LatHist *h, double pct);

#endif /* COBLK_EXAMPLES_VDISK_STATS_H */
