/* Where this machine charges the first touch of fresh memory.
 *
 *   fault_cost [MIB] [ROUNDS] [PAUSE_MS]
 *
 * A child process maps MIB MiB of private anonymous memory, either with 4 KiB
 * pages (MADV_NOHUGEPAGE) or with transparent huge pages (MADV_HUGEPAGE),
 * writes one byte in every 4 KiB and reports the wall, user and sys time of
 * those writes alone. The two kinds alternate, ROUNDS of each, a new child
 * each time, with PAUSE_MS of sleep before every child: a VM that hands freed
 * memory back to its host (free page reporting) has then done so, and each
 * child's pages must be backed afresh, as a new prover process's are.
 *
 * Why it exists: bench/real compares allocators' sys time. An allocator that
 * takes huge pages and one that takes 4 KiB pages fault in the same bytes,
 * but a VM may charge the wait for its host to different columns (measured
 * here: a 4 KiB fault's share lands in user time, a huge page's in sys), so
 * sys alone is not a fair comparison there. This program shows which columns
 * the machine uses. It calls no malloc; nothing is preloaded.
 *
 * Prints one result per kind: wall ms per round as samples, and the user and
 * sys ms of the same rounds. */
#include "bench_common.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_ROUNDS 64
#define HUGE_PAGE ((size_t)2 << 20)

struct touch_cost {
    double wall_ms, user_ms, sys_ms;
};

static double tv_ms(const struct timeval *a, const struct timeval *b)
{
    return (double)(b->tv_sec - a->tv_sec) * 1e3 + (double)(b->tv_usec - a->tv_usec) / 1e3;
}

/* In the child: touch len fresh bytes, huge-page aligned so that THP can
 * back all of them. */
static int touch_fresh(size_t len, int huge, struct touch_cost *out)
{
    char *raw = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    char *p = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    if (madvise(p, len, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) != 0)
        return -1;
    struct rusage r0, r1;
    if (getrusage(RUSAGE_SELF, &r0) != 0)
        return -1;
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < len; i += 4096)
        p[i] = 1;
    bench_escape(p);
    uint64_t t1 = bench_now_ns();
    if (getrusage(RUSAGE_SELF, &r1) != 0)
        return -1;
    out->wall_ms = (double)(t1 - t0) / 1e6;
    out->user_ms = tv_ms(&r0.ru_utime, &r1.ru_utime);
    out->sys_ms = tv_ms(&r0.ru_stime, &r1.ru_stime);
    return 0;
}

/* One round in a new child; the result comes back through a pipe. */
static int measure_in_child(size_t len, int huge, struct touch_cost *out)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        struct touch_cost c;
        int ok = touch_fresh(len, huge, &c) == 0 && write(fds[1], &c, sizeof c) == sizeof c;
        _exit(ok ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = read(fds[0], out, sizeof *out);
    close(fds[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -1;
    return got == (ssize_t)sizeof *out ? 0 : -1;
}

static void append_list(char *buf, size_t cap, const char *key, const double *v, int n)
{
    size_t used = strlen(buf);
    used += (size_t)snprintf(buf + used, cap - used, "%s\"%s\":[", used ? "," : "", key);
    for (int i = 0; i < n && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%.2f", i ? "," : "", v[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

int main(int argc, char **argv)
{
    long mib = bench_arg(argc, argv, 1, 256);
    long rounds = bench_arg(argc, argv, 2, 3);
    long pause_ms = bench_arg(argc, argv, 3, 3000);
    if (mib < 2 || mib > 65536 || rounds < 1 || rounds > MAX_ROUNDS || pause_ms < 0) {
        fprintf(stderr, "usage: fault_cost [MIB 2..65536] [ROUNDS 1..%d] [PAUSE_MS]\n", MAX_ROUNDS);
        return 2;
    }
    size_t len = (size_t)mib * MIB & ~(HUGE_PAGE - 1);
    double user[2][MAX_ROUNDS], sys[2][MAX_ROUNDS];
    struct bench_series wall[2];
    bench_series_init(&wall[0], (size_t)rounds);
    bench_series_init(&wall[1], (size_t)rounds);
    for (long r = 0; r < rounds; r++) {
        for (int huge = 0; huge < 2; huge++) {
            struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000000};
            nanosleep(&pause, NULL);
            struct touch_cost c;
            if (measure_in_child(len, huge, &c) != 0) {
                fprintf(stderr, "fault_cost: the %s child failed\n", huge ? "THP" : "4 KiB");
                return 1;
            }
            bench_series_add(&wall[huge], c.wall_ms);
            user[huge][r] = c.user_ms;
            sys[huge][r] = c.sys_ms;
        }
    }
    for (int huge = 0; huge < 2; huge++) {
        char extra[2048] = "";
        snprintf(extra, sizeof extra, "\"mib\":%zu,\"pause_ms\":%ld", len / MIB, pause_ms);
        append_list(extra, sizeof extra, "user_ms", user[huge], (int)rounds);
        append_list(extra, sizeof extra, "sys_ms", sys[huge], (int)rounds);
        bench_emit("fault_cost", huge ? "thp" : "4k", "ms", &wall[huge], NULL, extra);
        bench_series_free(&wall[huge]);
    }
    return 0;
}
