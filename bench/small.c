/* Small allocations (all under 64 KiB): malloc/free throughput.
 *
 *   small [OPS] [REPS] [WARMUP]
 *
 * A ring of 4096 live blocks; each operation frees a random slot and
 * allocates a new block there, writing its first and last byte. Sizes: 70%
 * 8-256 B, 25% 256 B-4 KiB, 5% 4-60 KiB, drawn before timing. Reported in
 * millions of operations per second; there is no floor (the reference is
 * glibc itself, compared by the driver). */
#include "bench_common.h"

#include <stdlib.h>
#include <string.h>

#define SLOTS 4096

int main(int argc, char **argv)
{
    bench_check_preload();
    long ops = bench_arg(argc, argv, 1, 2000000);
    long reps = bench_arg(argc, argv, 2, 5);
    long warm = bench_arg(argc, argv, 3, 1);
    if (ops < 1) {
        fprintf(stderr, "usage: small [OPS] [REPS] [WARMUP]\n");
        return 2;
    }
    uint32_t *size = bench_map((size_t)ops * sizeof *size, 0, 1);
    uint16_t *slot = bench_map((size_t)ops * sizeof *slot, 0, 1);
    uint64_t seed = 42;
    for (long i = 0; i < ops; i++) {
        uint64_t r = bench_rand(&seed);
        unsigned pct = (unsigned)(r % 100);
        uint64_t x = r >> 16;
        if (pct < 70)
            size[i] = 8 + (uint32_t)(x % 249);
        else if (pct < 95)
            size[i] = 256 + (uint32_t)(x % (4096 - 256 + 1));
        else
            size[i] = 4096 + (uint32_t)(x % (60 * 1024 - 4096 + 1));
        slot[i] = (uint16_t)((r >> 40) % SLOTS);
    }
    unsigned char **ring = bench_map(SLOTS * sizeof *ring, 0, 1);
    struct bench_series s;
    bench_series_init(&s, (size_t)reps);
    for (long r = -warm; r < reps; r++) {
        uint64_t t0 = bench_now_ns();
        for (long i = 0; i < ops; i++) {
            unsigned char **p = &ring[slot[i]];
            free(*p);
            *p = malloc(size[i]);
            if (!*p)
                return 1;
            (*p)[0] = (unsigned char)i;
            (*p)[size[i] - 1] = (unsigned char)i;
            bench_escape(*p);
        }
        uint64_t t1 = bench_now_ns();
        if (r >= 0)
            bench_series_add(&s, (double)ops / ((double)(t1 - t0) / 1e9) / 1e6);
    }
    for (int i = 0; i < SLOTS; i++)
        free(ring[i]);
    bench_emit("small", "small allocs <64 KiB", "Mops/s", &s, NULL, "\"higher_is_better\":true");
    return 0;
}
