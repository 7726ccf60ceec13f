/* fork() with a live heap (issue 10): what fork costs a process holding L
 * live bytes, and what the parent pays afterwards to rewrite them.
 *
 *   fork LIVE_MIB [REPS] [REWRITE_REPS] [BLOCK_MIB] [EXEC_PATH] [KIND]
 *
 * The live bytes are LIVE_MIB / BLOCK_MIB blocks (default 64 MiB) from plain
 * malloc, each written fully once so that it is resident. Every measurement
 * gets a fresh set of blocks (allocated and filled, untimed; freed after), so
 * each fork is the first fork of the memory it holds. REPS sets for each fork
 * kind, REWRITE_REPS (default REPS) of them also timed for the rewrites
 * (a rewrite after fork can cost seconds per GiB on a VM with 4 KiB faults):
 *
 *   fork+exec   fork(); the child execs EXEC_PATH (default /bin/true). Samples:
 *               fork() until the exec'd child has exited and been reaped (ms);
 *               "fork_ms": fork() until it returned in the parent.
 *   fork+_exit  the same with a child that calls _exit(0) at once.
 *   rewrite after fork, child alive
 *               fork() a child that waits on a pipe (so copy-on-write applies
 *               to every allocator), then memset every live byte once (ms).
 *   rewrite after fork, child exited
 *               the fork+_exit set again after its child was reaped: memset
 *               every live byte once (ms).
 *   Floor for both rewrites: the same memset into the same blocks just before
 *   that fork, in the same repetition (resident, never forked).
 *
 * KIND: exec, exit (fork+_exit and the rewrite after it), alive, or all (the
 * default). The sets are measured kind by kind (all fork+exec repetitions
 * first), and
 * between sets the library's cache is handed back when the allocator has one
 * to hand back (libzknalloc's zkn_release_cache, found with dlsym), so that
 * every set comes from the allocator's source again (the daemon's pool, for
 * zk-nalloc with a daemon). "daemon_bytes": per set, how many of its live
 * bytes libzknalloc held from zknallocd just before the fork (zkn_stats:
 * bytes_leased less bytes_cached, since the cache, emptied before the set,
 * holds only regions a LEND brought along; at most the live bytes); absent
 * for other allocators. */
#include "bench_common.h"
#include "../client/include/zknalloc.h"

#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_BLOCKS 1024

static unsigned char *blk[MAX_BLOCKS];
static size_t nblk, blk_bytes;
static int (*zk_stats)(struct zkn_stats *);
static void (*zk_release)(void);

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void set_alloc(int fill)
{
    for (size_t i = 0; i < nblk; i++) {
        blk[i] = malloc(blk_bytes);
        if (!blk[i])
            die("fork: malloc");
        memset(blk[i], fill, blk_bytes);
        bench_escape(blk[i]);
    }
}

static void set_free(void)
{
    for (size_t i = 0; i < nblk; i++)
        free(blk[i]);
    if (zk_release)
        zk_release();
}

/* memset every live byte once; ms */
static double set_rewrite(int v)
{
    uint64_t t0 = bench_now_ns();
    for (size_t i = 0; i < nblk; i++) {
        memset(blk[i], v, blk_bytes);
        bench_escape(blk[i]);
    }
    return (double)(bench_now_ns() - t0) / 1e6;
}

static double daemon_bytes(void)
{
    struct zkn_stats s;
    if (!zk_stats || zk_stats(&s) != 0)
        return -1;
    uint64_t live = s.bytes_leased > s.bytes_cached ? s.bytes_leased - s.bytes_cached : 0;
    return (double)(live < nblk * blk_bytes ? live : nblk * blk_bytes);
}

static void reap(pid_t pid, int want_status)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        die("fork: waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != want_status) {
        fprintf(stderr, "fork: child exited with status 0x%x\n", st);
        exit(1);
    }
}

/* A JSON array fragment: "name":[..] */
static void json_array(char *buf, size_t cap, const char *name, const struct bench_series *s)
{
    size_t n = strlen(buf);
    n += (size_t)snprintf(buf + n, cap - n, "%s\"%s\":[", n ? "," : "", name);
    for (size_t i = 0; i < s->n && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%.6g", i ? "," : "", s->v[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

static void emit(const char *kind, size_t live_mib, size_t block_mib,
                 const struct bench_series *s, const struct bench_series *floor,
                 const struct bench_series *fork_ms, const struct bench_series *dbytes)
{
    char name[96], extra[4096];
    snprintf(name, sizeof name, "%s, %zu MiB live", kind, live_mib);
    snprintf(extra, sizeof extra, "\"live_mib\":%zu,\"block_mib\":%zu", live_mib, block_mib);
    if (fork_ms)
        json_array(extra, sizeof extra, "fork_ms", fork_ms);
    if (dbytes && zk_stats)
        json_array(extra, sizeof extra, "daemon_bytes", dbytes);
    bench_emit("fork", name, "ms", s, floor, extra);
}

int main(int argc, char **argv)
{
    bench_check_preload();
    size_t live_mib = (size_t)bench_arg(argc, argv, 1, 512);
    long reps = bench_arg(argc, argv, 2, 5);
    long rw_reps = bench_arg(argc, argv, 3, reps);
    size_t block_mib = (size_t)bench_arg(argc, argv, 4, 64);
    const char *exe = argc > 5 ? argv[5] : "/bin/true";
    const char *kind = argc > 6 ? argv[6] : "all";
    int all = strcmp(kind, "all") == 0;
    int do_exec = all || strcmp(kind, "exec") == 0, do_exit = all || strcmp(kind, "exit") == 0,
        do_alive = all || strcmp(kind, "alive") == 0;
    if (rw_reps > reps)
        rw_reps = reps;
    if (!(do_exec || do_exit || do_alive) || reps < 1 || block_mib == 0 || live_mib % block_mib || live_mib / block_mib > MAX_BLOCKS) {
        fprintf(stderr, "usage: fork LIVE_MIB [REPS] [REWRITE_REPS] [BLOCK_MIB] [EXEC_PATH] "
                        "[exec|exit|alive|all] "
                        "(LIVE_MIB a multiple of BLOCK_MIB, at most %d blocks)\n", MAX_BLOCKS);
        return 2;
    }
    nblk = live_mib / block_mib;
    blk_bytes = block_mib * MIB;
    /* Only libzknalloc defines these; another allocator leaves them NULL. */
    zk_stats = (int (*)(struct zkn_stats *))dlsym(RTLD_DEFAULT, "zkn_stats");
    zk_release = (void (*)(void))dlsym(RTLD_DEFAULT, "zkn_release_cache");

    struct bench_series tot, fk, db, fl;
    int v = 1;

    /* fork+exec */
    bench_series_init(&tot, (size_t)reps);
    bench_series_init(&fk, (size_t)reps);
    bench_series_init(&db, (size_t)reps);
    for (long r = 0; do_exec && r < reps; r++) {
        set_alloc(v++);
        bench_series_add(&db, daemon_bytes());
        uint64_t t0 = bench_now_ns();
        pid_t pid = fork();
        if (pid < 0)
            die("fork: fork");
        if (pid == 0) {
            execl(exe, exe, (char *)NULL);
            _exit(127);
        }
        uint64_t t1 = bench_now_ns();
        reap(pid, 0);
        uint64_t t2 = bench_now_ns();
        bench_series_add(&fk, (double)(t1 - t0) / 1e6);
        bench_series_add(&tot, (double)(t2 - t0) / 1e6);
        set_free();
    }
    if (do_exec)
        emit("fork+exec", live_mib, block_mib, &tot, NULL, &fk, &db);
    bench_series_free(&tot);
    bench_series_free(&fk);
    bench_series_free(&db);

    /* fork+_exit, then the rewrite after the child has exited */
    struct bench_series rw;
    bench_series_init(&tot, (size_t)reps);
    bench_series_init(&fk, (size_t)reps);
    bench_series_init(&db, (size_t)reps);
    bench_series_init(&rw, (size_t)reps);
    bench_series_init(&fl, (size_t)reps);
    for (long r = 0; do_exit && r < reps; r++) {
        int timed = nblk && r < rw_reps;
        set_alloc(v++);
        double floor_ms = timed ? set_rewrite(v++) : 0;
        bench_series_add(&db, daemon_bytes());
        uint64_t t0 = bench_now_ns();
        pid_t pid = fork();
        if (pid < 0)
            die("fork: fork");
        if (pid == 0)
            _exit(0);
        uint64_t t1 = bench_now_ns();
        reap(pid, 0);
        uint64_t t2 = bench_now_ns();
        bench_series_add(&fk, (double)(t1 - t0) / 1e6);
        bench_series_add(&tot, (double)(t2 - t0) / 1e6);
        if (timed) {
            bench_series_add(&rw, set_rewrite(v++));
            bench_series_add(&fl, floor_ms);
        }
        set_free();
    }
    if (do_exit)
        emit("fork+_exit", live_mib, block_mib, &tot, NULL, &fk, &db);
    if (rw.n) /* the first sets of fork+_exit's: daemon_bytes are there */
        emit("rewrite after fork, child exited", live_mib, block_mib, &rw, &fl, NULL, NULL);
    bench_series_free(&tot);
    bench_series_free(&fk);
    bench_series_free(&rw);
    bench_series_free(&fl);
    bench_series_free(&db);
    if (!do_alive || !nblk || rw_reps < 1)
        return 0;

    /* the rewrite while the child lives (blocked on a pipe) */
    bench_series_init(&rw, (size_t)rw_reps);
    bench_series_init(&fl, (size_t)rw_reps);
    bench_series_init(&fk, (size_t)rw_reps);
    bench_series_init(&db, (size_t)rw_reps);
    for (long r = 0; r < rw_reps; r++) {
        set_alloc(v++);
        double floor_ms = set_rewrite(v++);
        bench_series_add(&db, daemon_bytes());
        int pfd[2];
        if (pipe(pfd) != 0)
            die("fork: pipe");
        uint64_t t0 = bench_now_ns();
        pid_t pid = fork();
        if (pid < 0)
            die("fork: fork");
        if (pid == 0) {
            char c;
            close(pfd[1]);
            while (read(pfd[0], &c, 1) < 0)
                ;
            _exit(0);
        }
        uint64_t t1 = bench_now_ns();
        close(pfd[0]);
        bench_series_add(&rw, set_rewrite(v++));
        bench_series_add(&fl, floor_ms);
        bench_series_add(&fk, (double)(t1 - t0) / 1e6);
        close(pfd[1]); /* EOF: the child exits */
        reap(pid, 0);
        set_free();
    }
    emit("rewrite after fork, child alive", live_mib, block_mib, &rw, &fl, &fk, &db);
    bench_series_free(&rw);
    bench_series_free(&fl);
    bench_series_free(&fk);
    bench_series_free(&db);
    return 0;
}
