/* zk allocation patterns, one per process run:
 *
 *   zk_patterns fft SIZE_MIB [REPS] [WARMUP]   allocate SIZE MiB, fill every byte, free
 *   zk_patterns burst [REPS] [WARMUP]          8 x 16 MiB allocated, each filled, all freed
 *   zk_patterns burst-nowrite [REPS] [WARMUP]  8 x 16 MiB allocated and freed, never touched
 *   zk_patterns burst-small [REPS] [WARMUP]    64 x 512 KiB allocated, each filled, all freed
 *   zk_patterns msm [REPS] [WARMUP]            16 x 6 MiB calloc, 1% of cache lines
 *                                              read-modify-written at random, all freed
 *   zk_patterns msm-loop [REPS] [WARMUP]       the same rounds back to back (the floor
 *                                              and zeroing measured after them)
 *   zk_patterns grow [REPS] [WARMUP]           a buffer grown by realloc from 1 MiB to
 *                                              64 MiB, doubling, each new half written,
 *                                              freed (a trace or proof buffer)
 *
 * Each timed repetition is followed by the physical floor: the same writes into
 * memory the harness faulted in once and keeps (mmap + MADV_HUGEPAGE, populated);
 * msm also by the time a memset of those buffers takes (zeroing_us).
 * Times are in microseconds per repetition. */
#include "bench_common.h"

#include <stdlib.h>
#include <string.h>

#define BURST_N 8
#define BURST_MIB 16
/* Blocks under a huge page: how they are mapped (carved from huge pages, or
 * 4 KiB pages) shows here, not in the 16 MiB burst. */
#define SMALL_BURST_N 64
#define SMALL_BURST_KIB 512
#define MSM_N 16
#define MSM_MIB 6
#define LINE 64
#define GROW_FROM_MIB 1
#define GROW_TO_MIB 64

static void fill(void *p, size_t n, int v)
{
    memset(p, v | 1, n); /* never zero: keeps malloc+memset from becoming calloc */
    bench_escape(p);
}

/* 1% of the cache lines of a bucket array, chosen at random, read-modify-written. */
static uint64_t msm_touch(unsigned char *p, size_t len, uint64_t *seed)
{
    size_t lines = len / LINE, k = lines / 100;
    uint64_t acc = 0;
    for (size_t i = 0; i < k; i++) {
        uint64_t *w = (uint64_t *)(p + (bench_rand(seed) % lines) * LINE);
        *w += i + 1;
        acc += *w;
    }
    bench_escape(p);
    return acc;
}

/* calloc must return zeroes: the words msm_touch writes (word 0 of every
 * line) are checked in an untimed round after the timed ones. */
static int all_lines_zero(const unsigned char *p, size_t len)
{
    for (size_t off = 0; off < len; off += LINE)
        if (*(const uint64_t *)(p + off))
            return 0;
    return 1;
}

/* Memory facts while the last repetition's buffers were live, less the
 * harness's own floor buffers (base). */
static void extra_mem(char *buf, size_t cap, const struct bench_mem *m, const struct bench_mem *base)
{
    snprintf(buf, cap,
             "\"live_rss_kb\":%ld,\"live_anon_huge_kb\":%ld,\"live_shmem_pmd_kb\":%ld,"
             "\"live_file_pmd_kb\":%ld,\"maxrss_kb\":%ld",
             m->rss_kb - base->rss_kb, m->anon_huge_kb - base->anon_huge_kb,
             m->shmem_pmd_kb - base->shmem_pmd_kb, m->file_pmd_kb - base->file_pmd_kb,
             bench_maxrss_kb());
}

int main(int argc, char **argv)
{
    bench_check_preload();
    if (argc < 2) {
        fprintf(stderr, "usage: zk_patterns fft SIZE_MIB [REPS] [WARMUP] | "
                        "burst|burst-nowrite|burst-small|msm|msm-loop|grow [REPS] [WARMUP]\n");
        return 2;
    }
    const char *pat = argv[1];
    int ai = 2;
    size_t mib = 0;
    if (strcmp(pat, "fft") == 0)
        mib = (size_t)bench_arg(argc, argv, ai++, 32);
    long reps = bench_arg(argc, argv, ai++, 11);
    long warm = bench_arg(argc, argv, ai++, 2);
    struct bench_series s, f;
    bench_series_init(&s, (size_t)reps);
    bench_series_init(&f, (size_t)reps);
    struct bench_mem mem = {0}, base = {0};
    char casename[64], extra[1024];
    uint64_t seed = 0x9e3779b97f4a7c15ull;

    if (strcmp(pat, "fft") == 0) {
        size_t n = mib * MIB;
        unsigned char *fl = bench_map(n, 1, 1);
        bench_read_mem(&base);
        for (long r = -warm; r < reps; r++) {
            uint64_t t0 = bench_now_ns();
            unsigned char *p = malloc(n);
            if (!p)
                return 1;
            fill(p, n, (int)r);
            if (r == reps - 1)
                bench_read_mem(&mem);
            free(p);
            uint64_t t1 = bench_now_ns();
            fill(fl, n, (int)r);
            uint64_t t2 = bench_now_ns();
            if (r >= 0) {
                bench_series_add(&s, (double)(t1 - t0) / 1e3);
                bench_series_add(&f, (double)(t2 - t1) / 1e3);
            }
        }
        snprintf(casename, sizeof casename, "fft %zu MiB", mib);
        extra_mem(extra, sizeof extra, &mem, &base);
        bench_emit("fft", casename, "us", &s, &f, extra);
    } else if (strcmp(pat, "burst") == 0 || strcmp(pat, "burst-nowrite") == 0 ||
               strcmp(pat, "burst-small") == 0) {
        int write = strcmp(pat, "burst-nowrite") != 0;
        int small = strcmp(pat, "burst-small") == 0;
        int count = small ? SMALL_BURST_N : BURST_N;
        size_t n = small ? (size_t)SMALL_BURST_KIB << 10 : (size_t)BURST_MIB * MIB;
        unsigned char *fl = write ? bench_map(n * (size_t)count, 1, 1) : NULL;
        bench_read_mem(&base);
        for (long r = -warm; r < reps; r++) {
            void *p[SMALL_BURST_N > BURST_N ? SMALL_BURST_N : BURST_N];
            uint64_t t0 = bench_now_ns();
            for (int i = 0; i < count; i++) {
                p[i] = malloc(n);
                if (!p[i])
                    return 1;
                bench_escape(p[i]);
                if (write)
                    fill(p[i], n, (int)r + i);
            }
            if (r == reps - 1)
                bench_read_mem(&mem);
            for (int i = 0; i < count; i++)
                free(p[i]);
            uint64_t t1 = bench_now_ns();
            if (write)
                for (int i = 0; i < count; i++)
                    fill(fl + (size_t)i * n, n, (int)r + i);
            uint64_t t2 = bench_now_ns();
            if (r >= 0) {
                bench_series_add(&s, (double)(t1 - t0) / 1e3);
                bench_series_add(&f, (double)(t2 - t1) / 1e3);
            }
        }
        if (small)
            snprintf(casename, sizeof casename, "burst %dx%d KiB", SMALL_BURST_N, SMALL_BURST_KIB);
        else
            snprintf(casename, sizeof casename, "%s 8x16 MiB", write ? "burst" : "burst-nowrite");
        extra_mem(extra, sizeof extra, &mem, &base);
        bench_emit(pat, casename, "us", &s, write ? &f : NULL, extra);
    } else if (strcmp(pat, "grow") == 0) {
        size_t top = (size_t)GROW_TO_MIB * MIB;
        unsigned char *fl = bench_map(top, 1, 1);
        bench_read_mem(&base);
        for (long r = -warm; r < reps; r++) {
            uint64_t t0 = bench_now_ns();
            size_t n = (size_t)GROW_FROM_MIB * MIB;
            unsigned char *p = malloc(n);
            if (!p)
                return 1;
            fill(p, n, (int)r);
            for (; n < top; n *= 2) {
                unsigned char *q = realloc(p, 2 * n);
                if (!q)
                    return 1;
                p = q;
                if (p[n - 1] != (unsigned char)((int)r | 1)) /* contents kept */
                    return 1;
                fill(p + n, n, (int)r);
            }
            if (r == reps - 1)
                bench_read_mem(&mem);
            free(p);
            uint64_t t1 = bench_now_ns();
            fill(fl, top, (int)r); /* the same bytes written, in place */
            uint64_t t2 = bench_now_ns();
            if (r >= 0) {
                bench_series_add(&s, (double)(t1 - t0) / 1e3);
                bench_series_add(&f, (double)(t2 - t1) / 1e3);
            }
        }
        snprintf(casename, sizeof casename, "grow 1->%d MiB", GROW_TO_MIB);
        extra_mem(extra, sizeof extra, &mem, &base);
        bench_emit("grow", casename, "us", &s, &f, extra);
    } else if (strcmp(pat, "msm") == 0 || strcmp(pat, "msm-loop") == 0) {
        /* msm: each timed round is followed by its floor and zeroing, which
         * leave a background zeroer time between rounds (as a prover's other
         * work would). msm-loop: the timed rounds run back to back, with
         * nothing between them; the floor and zeroing are measured after. */
        int loop = strcmp(pat, "msm-loop") == 0;
        size_t n = (size_t)MSM_MIB * MIB;
        unsigned char *fl = bench_map(n * MSM_N, 1, 1);
        struct bench_series z;
        bench_series_init(&z, (size_t)reps);
        bench_read_mem(&base);
        uint64_t sink = 0;
        for (int pass = loop ? 0 : 1; pass < 2; pass++) {
            int timed = !loop || pass == 0, floors = !loop || pass == 1;
            for (long r = -warm; r < reps; r++) {
                void *p[MSM_N];
                uint64_t s1 = seed + (uint64_t)r * 7919, s2 = s1;
                uint64_t t0 = bench_now_ns();
                for (int i = 0; timed && i < MSM_N; i++) {
                    p[i] = calloc(n / 8, 8);
                    if (!p[i])
                        return 1;
                    sink += msm_touch(p[i], n, &s1);
                }
                if (timed && r == reps - 1)
                    bench_read_mem(&mem);
                for (int i = 0; timed && i < MSM_N; i++)
                    free(p[i]);
                uint64_t t1 = bench_now_ns();
                for (int i = 0; floors && i < MSM_N; i++)
                    sink += msm_touch(fl + (size_t)i * n, n, &s2);
                uint64_t t2 = bench_now_ns();
                /* What one core needs to zero a round's bytes in place (memset,
                 * buffer by buffer as calloc would), whoever does it. */
                for (int i = 0; floors && i < MSM_N; i++) {
                    memset(fl + (size_t)i * n, 0, n);
                    bench_escape(fl + (size_t)i * n);
                }
                uint64_t t3 = bench_now_ns();
                if (r >= 0 && timed)
                    bench_series_add(&s, (double)(t1 - t0) / 1e3);
                if (r >= 0 && floors) {
                    bench_series_add(&f, (double)(t2 - t1) / 1e3);
                    bench_series_add(&z, (double)(t3 - t2) / 1e3);
                }
            }
        }
        void *p[MSM_N];
        for (int i = 0; i < MSM_N; i++) {
            p[i] = calloc(n / 8, 8);
            if (!p[i] || !all_lines_zero(p[i], n)) {
                fprintf(stderr, "zk_patterns: calloc returned non-zero memory\n");
                return 4;
            }
        }
        for (int i = 0; i < MSM_N; i++)
            free(p[i]);
        extra_mem(extra, sizeof extra, &mem, &base);
        if (bench_extra_series(extra, sizeof extra, "zeroing_us", &z) != 0) {
            fprintf(stderr, "zk_patterns: result line too long\n");
            return 1;
        }
        bench_escape(&sink);
        bench_emit("msm", loop ? "msm 16x6 MiB calloc back to back" : "msm 16x6 MiB calloc", "us", &s,
                   &f, extra);
    } else {
        fprintf(stderr, "zk_patterns: unknown pattern %s\n", pat);
        return 2;
    }
    return 0;
}
