/* Cold start: a fresh process allocates and fills 1 GiB in 128 MiB buffers,
 * frees them and exits. The driver runs it again and again, each time a new
 * process.
 *
 *   coldstart [TOTAL_MIB] [BUF_MIB]
 *
 * Prints one result: the time from the first malloc to the last byte written
 * (ms; a daemon connection made by the first malloc counts), and as floor the
 * same writes a second time into the same buffers, now resident. */
#include "bench_common.h"

#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    bench_check_preload();
    size_t total = (size_t)bench_arg(argc, argv, 1, 1024) * MIB;
    size_t buf = (size_t)bench_arg(argc, argv, 2, 128) * MIB;
    if (buf == 0 || total < buf || total / buf > 1024) {
        fprintf(stderr, "usage: coldstart [TOTAL_MIB] [BUF_MIB]\n");
        return 2;
    }
    size_t n = total / buf;
    unsigned char *p[1024];
    bench_wait_gate();
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < n; i++) {
        p[i] = malloc(buf);
        if (!p[i])
            return 1;
        memset(p[i], (int)i | 1, buf);
        bench_escape(p[i]);
    }
    uint64_t t1 = bench_now_ns();
    struct bench_mem mem;
    bench_read_mem(&mem);
    for (size_t i = 0; i < n; i++) {
        memset(p[i], (int)i | 2, buf);
        bench_escape(p[i]);
    }
    uint64_t t2 = bench_now_ns();
    for (size_t i = 0; i < n; i++)
        free(p[i]);
    uint64_t t3 = bench_now_ns();
    struct bench_series s, f;
    bench_series_init(&s, 1);
    bench_series_init(&f, 1);
    bench_series_add(&s, (double)(t1 - t0) / 1e6);
    bench_series_add(&f, (double)(t2 - t1) / 1e6);
    char extra[320];
    snprintf(extra, sizeof extra,
             "\"free_ms\":%.3f,\"live_rss_kb\":%ld,\"live_anon_huge_kb\":%ld,"
             "\"live_shmem_pmd_kb\":%ld,\"live_file_pmd_kb\":%ld",
             (double)(t3 - t2) / 1e6, mem.rss_kb, mem.anon_huge_kb, mem.shmem_pmd_kb,
             mem.file_pmd_kb);
    bench_emit("coldstart", "cold start 1 GiB", "ms", &s, &f, extra);
    return 0;
}
