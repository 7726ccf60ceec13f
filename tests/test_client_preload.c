/* libzknalloc as the allocator of real programs: LD_PRELOAD into python3,
 * sqlite3, git and sort, whose output must match a run without it, and whose
 * exit report must show the library actually served large blocks.
 *
 * The sanitizer build has no drop-in (ASan owns malloc, ZKN_NO_DROPIN); there
 * these tests say so and check only that mode. A program that is not
 * installed is skipped with a note. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "sizeclass.h"
#include "zknalloc.h"

#define OUT_CAP (1 << 20)

static char libpath[PATH_MAX];
static char tmpdir[64];

/* Whether this process's malloc is the library's (the drop-in build). */
static int dropin_active(void)
{
    void *p = calloc(1, 100000); /* calloc: gcc objects to uninitialised malloc memory here */
    int ours = p && zkn_usable_size(p) == zkn_class_size(zkn_size_class(100000));
    free(p);
    return ours;
}

/* Returns a new string (kept for the test's lifetime; tests are processes). */
static const char *find_program(const char *name)
{
    char path[PATH_MAX];
    static const char *dirs[] = {"/usr/bin", "/bin", "/usr/local/bin"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dirs[i], name);
        if (access(path, X_OK) == 0)
            return strdup(path);
    }
    return NULL;
}

struct run {
    int status;
    char out[OUT_CAP];
    size_t out_len;
    char err[64 * 1024];
};

/* Runs argv with (preload) or without the library; env is NULL-terminated
 * "NAME=VALUE" strings added to the environment. Stdout and stderr are kept. */
static void run(struct run *r, const char *const *argv, int preload, const char *const *env)
{
    char errfile[128];
    snprintf(errfile, sizeof errfile, "%s/stderr", tmpdir);
    int pfd[2];
    ck_assert_int_eq(pipe(pfd), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int efd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        dup2(pfd[1], 1);
        dup2(efd, 2);
        close(pfd[0]);
        if (preload)
            setenv("LD_PRELOAD", libpath, 1);
        else
            unsetenv("LD_PRELOAD");
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    r->out_len = 0;
    ssize_t n;
    while (r->out_len < OUT_CAP - 1 &&
           (n = read(pfd[0], r->out + r->out_len, OUT_CAP - 1 - r->out_len)) > 0)
        r->out_len += (size_t)n;
    r->out[r->out_len] = '\0';
    close(pfd[0]);
    ck_assert_int_eq(waitpid(pid, &r->status, 0), pid);
    int efd = open(errfile, O_RDONLY);
    n = efd >= 0 ? read(efd, r->err, sizeof r->err - 1) : 0;
    r->err[n > 0 ? n : 0] = '\0';
    if (efd >= 0)
        close(efd);
}

/* A counter from the ZK_NALLOC_SHOW_STATS reports (the largest, when a
 * pipeline's processes each print one), or -1. */
static long long stat_of(const char *err, const char *name)
{
    long long best = -1;
    for (const char *p = strstr(err, name); p; p = strstr(p, name)) {
        p += strlen(name);
        while (*p == ' ')
            p++;
        long long v = strtoll(p, NULL, 10);
        best = v > best ? v : best;
    }
    return best;
}

/* Runs argv plain and preloaded; the outputs must match and the library must
 * have served large blocks. Returns the preloaded run's report. */
static void same_output_ex(const char *const *argv, const char *const *env, struct run *pre,
                           int expect_report)
{
    static struct run plain;
    static const char *const stats_env[] = {"ZK_NALLOC_SHOW_STATS=1", NULL};
    const char *merged[16];
    int m = 0;
    for (int i = 0; env && env[i] && m < 14; i++)
        merged[m++] = env[i];
    merged[m++] = stats_env[0];
    merged[m] = NULL;
    run(&plain, argv, 0, env);
    ck_assert_msg(WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 0,
                  "%s failed without the library: %s", argv[0], plain.err);
    run(pre, argv, 1, merged);
    ck_assert_msg(WIFEXITED(pre->status) && WEXITSTATUS(pre->status) == 0,
                  "%s failed with the library (status %d): %s", argv[0], pre->status, pre->err);
    ck_assert_uint_eq(pre->out_len, plain.out_len);
    ck_assert_msg(memcmp(pre->out, plain.out, plain.out_len) == 0, "%s: output differs", argv[0]);
    ck_assert_msg(plain.out_len > 0, "%s printed nothing", argv[0]);
    if (!expect_report)
        return;
    ck_assert_msg(strstr(pre->err, "zknalloc: stats"), "no stats report: %s", pre->err);
    ck_assert_msg(stat_of(pre->err, "misses") > 0, "the library served no large block: %s",
                  pre->err);
}

static void same_output(const char *const *argv, const char *const *env, struct run *pre)
{
    same_output_ex(argv, env, pre, 1);
}

/* Unchecked: runs once in the runner, so a failing test (which exits its
 * own process) still leaves no directory behind. */
static void setup(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/zkn-preload-XXXXXX");
    if (!mkdtemp(tmpdir) || !realpath(zkn_test_build_path("libzknalloc.so"), libpath)) {
        perror("preload suite setup");
        exit(1);
    }
    setenv("ZK_NALLOC_SOCKET", "/nonexistent-zknalloc-test/zkn.sock", 1);
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        fprintf(stderr, "preload suite: cannot remove %s\n", tmpdir);
}

#define SKIP_UNLESS_DROPIN()                                                                 \
    do {                                                                                     \
        if (!dropin_active()) {                                                              \
            printf("%s: skipped: this build has no drop-in malloc (ZKN_NO_DROPIN)\n",       \
                   __func__);                                                                \
            ck_assert_int_eq(dropin_active(), 0);                                            \
            return;                                                                          \
        }                                                                                    \
    } while (0)

/* Declares py, the python3 to run, or returns from the test with a note. */
#define PYTHON3_OR_SKIP(py)                                                                  \
    const char *py = find_program("python3");                                                \
    do {                                                                                     \
        if (!py) {                                                                           \
            printf("%s: skipped: python3 not installed\n", __func__);                       \
            return;                                                                          \
        }                                                                                    \
    } while (0)

START_TEST(dropin_serves_this_process)
{
    SKIP_UNLESS_DROPIN();
    /* malloc & co. are the library's here: large blocks land in its classes. */
    char *p = malloc(3 << 20);
    ck_assert_uint_eq(malloc_usable_size(p), zkn_class_size(zkn_size_class(3 << 20)));
    memset(p, 1, 3 << 20);
    p = realloc(p, 9 << 20);
    ck_assert_int_eq(p[(3 << 20) - 1], 1);
    free(p);
    void *q = calloc(1, 200000);
    ck_assert_uint_eq(malloc_usable_size(q), zkn_class_size(zkn_size_class(200000)));
    free(q);
    char *s = malloc(10); /* small: glibc's, and glibc's usable size */
    ck_assert_uint_ge(malloc_usable_size(s), 10);
    ck_assert_uint_lt(malloc_usable_size(s), 64);
    free(s);
    struct zkn_stats st;
    zkn_stats(&st);
    ck_assert_uint_ge(st.hits + st.misses, 3);
}
END_TEST

static const char py_script[] =
    "import hashlib, json, os\n"
    "a = [bytearray(i % 251 for i in range(1 << 16)) * 16 for _ in range(40)]\n"
    "h = hashlib.sha256()\n"
    "for b in a: h.update(b)\n"
    "big = b'zk' * (40 << 20)\n"
    "h.update(big)\n"
    "xs = sorted((i * 7919) % 1000003 for i in range(1 << 19))\n"
    "d = json.dumps({str(i): [i] * 20 for i in range(30000)})\n"
    "back = json.loads(d)\n"
    "s = bytearray(1000)\n"
    "for k in range(12): s = s + s\n"
    "print(h.hexdigest(), xs[12345], len(d), len(back), len(s))\n";

START_TEST(python3_preloaded)
{
    SKIP_UNLESS_DROPIN();
    PYTHON3_OR_SKIP(py);
    const char *argv[] = {py, "-c", py_script, NULL};
    static struct run pre;
    same_output(argv, NULL, &pre);
    /* Debian's python3 is built without PIE and takes malloc's address: its
     * own PLT entry is then malloc's address, and must not be reported as
     * another allocator while the library serves it. */
    ck_assert_msg(!strstr(pre.err, "process_malloc"), "the library's malloc reported as "
                  "another's: %s", pre.err);
}
END_TEST

/* The allocator behind the library: the one preloaded after it (here a fake
 * whose blocks glibc's functions cannot handle, then the real allocators
 * installed), or glibc's. zkn-next-user checks contents across the two and
 * that each block goes back to its maker; the report names the allocator. */
static void next_user_under(const char *next, struct run *r)
{
    static char preload[2 * PATH_MAX + 16];
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s %s", libpath, next);
    const char *env[] = {preload, "ZK_NALLOC_SHOW_STATS=1", NULL};
    const char *argv[] = {zkn_test_build_path("tests/zkn-next-user"), NULL};
    run(r, argv, 1, env);
    ck_assert_msg(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0,
                  "behind %s: status %d: %s", next, r->status, r->err);
    ck_assert_str_eq(r->out, "next allocator ok\n");
    char named[PATH_MAX + 32];
    snprintf(named, sizeof named, "small_allocator   %s\n", next);
    ck_assert_msg(strstr(r->err, named), "the report does not name %s: %s", next, r->err);
}

/* Runs a next-alloc program from the build tree with nothing preloaded after
 * the library (preloaded, or linked in when preload is 0): it must succeed,
 * and its report must name glibc behind the library and no other malloc. */
static void glibc_behind(const char *program, int preload, struct run *r)
{
    const char *argv[] = {zkn_test_build_path(program), NULL};
    const char *env[] = {"ZK_NALLOC_SHOW_STATS=1", NULL};
    run(r, argv, preload, env);
    ck_assert_msg(WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0, "%s: status %d: %s",
                  program, r->status, r->err);
    ck_assert_msg(strstr(r->err, "small_allocator   ") && strstr(r->err, "libc.so.6\n"),
                  "%s: the report does not name glibc: %s", program, r->err);
    ck_assert_msg(!strstr(r->err, "process_malloc"), "%s: its own malloc reported as another's: %s",
                  program, r->err);
}

START_TEST(next_allocator_after_the_library)
{
    SKIP_UNLESS_DROPIN();
    static struct run r;
    char fake[PATH_MAX];
    ck_assert_ptr_nonnull(realpath(zkn_test_build_path("tests/libzkn-fake-next.so"), fake));
    next_user_under(fake, &r);

    /* Alone, the library's small requests are glibc's. */
    glibc_behind("tests/zkn-next-user", 1, &r);
}
END_TEST

/* glibc serves the small requests behind the library, and trims its heap as
 * it would alone: it stops trimming at its default once the program freed a
 * block glibc would have mmapped (a free the library takes from it), and not
 * when the program or its user fixed the threshold. */
START_TEST(glibc_trims_as_without_the_library)
{
    SKIP_UNLESS_DROPIN();
    static struct run plain, pre;
    const char *prog = zkn_test_build_path("tests/zkn-trim-user");
    const char *const fixed[] = {"GLIBC_TUNABLES=glibc.malloc.trim_threshold=131072", NULL};
    const char *const unset[] = {"GLIBC_TUNABLES=", NULL};
    const struct {
        const char *arg;
        const char *const *env;
        const char *want;
    } cases[] = {
        {NULL, unset, "before a big free: trimmed\nafter a big free: kept\n"},
        {"mallopt", unset, "before a big free: trimmed\nafter a big free: trimmed\n"},
        {NULL, fixed, "before a big free: trimmed\nafter a big free: trimmed\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[] = {prog, cases[i].arg, NULL};
        run(&plain, argv, 0, cases[i].env);
        run(&pre, argv, 1, cases[i].env);
        ck_assert_msg(WIFEXITED(plain.status) && WEXITSTATUS(plain.status) == 0 &&
                          WIFEXITED(pre.status) && WEXITSTATUS(pre.status) == 0,
                      "case %zu: status %d / %d: %s", i, plain.status, pre.status, pre.err);
        ck_assert_str_eq(plain.out, cases[i].want); /* glibc as this test knows it */
        ck_assert_str_eq(pre.out, cases[i].want);
    }
}
END_TEST

/* The static library linked into a program instead of preloaded: the same
 * checks, and the exit report, which lives in a part of the library the
 * program never calls (left out of the link when the archive held one
 * object per source file). */
START_TEST(library_linked_from_archive)
{
    SKIP_UNLESS_DROPIN();
    static struct run r;
    glibc_behind("tests/zkn-archive-user", 0, &r);
    ck_assert_str_eq(r.out, "next allocator ok\n");
    ck_assert_msg(stat_of(r.err, "hits") > 0,
                  "the linked-in library served no large block from its cache: %s", r.err);
}
END_TEST

/* The other order: the allocator first, the library second. The process's
 * malloc is then the other's and the library serves only zkn_* calls; the
 * report says so rather than showing an idle cache without a reason. */
START_TEST(allocator_before_the_library_named)
{
    SKIP_UNLESS_DROPIN();
    static struct run r;
    char fake[PATH_MAX];
    static char preload[2 * PATH_MAX + 16];
    ck_assert_ptr_nonnull(realpath(zkn_test_build_path("tests/libzkn-fake-next.so"), fake));
    snprintf(preload, sizeof preload, "LD_PRELOAD=%s %s", fake, libpath);
    const char *env[] = {preload, "ZK_NALLOC_SHOW_STATS=1", NULL};
    const char *tru = find_program("true");
    ck_assert_ptr_nonnull(tru);
    const char *argv[] = {tru, NULL};
    run(&r, argv, 1, env);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "true failed: %s", r.err);
    char named[PATH_MAX + 64];
    snprintf(named, sizeof named, "process_malloc    %s: malloc is not this library's", fake);
    ck_assert_msg(strstr(r.err, named), "the report does not name %s: %s", fake, r.err);
}
END_TEST

/* tcmalloc and mimalloc also define glibc's __libc_malloc names: before the
 * library took all six functions from one allocator, growing their blocks
 * lost bytes (mimalloc) or crashed (tcmalloc). */
START_TEST(real_allocators_after_the_library)
{
    SKIP_UNLESS_DROPIN();
    static const char *const names[] = {"libtcmalloc_minimal.so.4", "libmimalloc.so.2",
                                        "libjemalloc.so.2"};
    static const char *const dirs[] = {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                                       "/usr/lib64", "/usr/lib"};
    static struct run r;
    int tried = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[PATH_MAX], real[PATH_MAX];
        for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
            snprintf(path, sizeof path, "%s/%s", dirs[d], names[i]);
            if (realpath(path, real)) {
                /* The report names the file as the loader opened it. */
                next_user_under(path, &r);
                tried++;
                break;
            }
        }
    }
    if (!tried)
        printf("%s: skipped: none of tcmalloc, mimalloc, jemalloc is installed\n", __func__);
}
END_TEST

static const char py_fork[] =
    "import os\n"
    "a = bytearray(b'A') * (16 << 20)\n"
    "r, w = os.pipe(); r2, w2 = os.pipe()\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.read(r, 1)\n"
    "    ok = a.count(b'A') == len(a)\n"
    "    a[:] = b'C' * len(a)\n"
    "    os.write(w2, b'y' if ok else b'n')\n"
    "    os._exit(0)\n"
    "a[:] = b'P' * len(a)\n"
    "os.write(w, b'x')\n"
    "res = os.read(r2, 1)\n"
    "os.waitpid(pid, 0)\n"
    "print(res.decode(), a.count(b'P') == len(a))\n";

START_TEST(python3_preloaded_with_daemon_and_fork)
{
    SKIP_UNLESS_DROPIN();
    PYTHON3_OR_SKIP(py);
    static struct zkn_test_daemon d;
    zkn_test_daemon_up(&d, NULL, NULL); /* sets ZK_NALLOC_SOCKET */
    static struct run pre;
    const char *argv[] = {py, "-c", py_fork, NULL};
    same_output(argv, NULL, &pre);
    ck_assert_str_eq(pre.out, "y True\n");
    ck_assert_msg(stat_of(pre.err, "daemon_lends") > 0, "no region lent: %s", pre.err);
    const char *argv2[] = {py, "-c", py_script, NULL};
    same_output(argv2, NULL, &pre);
    ck_assert_int_gt(stat_of(pre.err, "daemon_lends"), 0);
    zkn_test_daemon_down(&d);
}
END_TEST

START_TEST(stats_on_signal)
{
    SKIP_UNLESS_DROPIN();
    PYTHON3_OR_SKIP(py);
    /* Two blocks of a class, a report, the same again: the report comes
     * between and the process goes on. */
    static const char script[] =
        "import os, signal\n"
        "a = [bytearray(8 << 20) for _ in range(2)]\n"
        "os.kill(os.getpid(), signal.SIGUSR2)\n"
        "del a\n"
        "b = [bytearray(8 << 20) for _ in range(2)]\n"
        "print('alive', len(b))\n";
    const char *argv[] = {py, "-c", script, NULL};
    static struct run r;
    const char *env[] = {"ZK_NALLOC_STATS_SIGNAL=USR2", NULL};
    run(&r, argv, 1, env);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "status %d: %s", r.status,
                  r.err);
    ck_assert_str_eq(r.out, "alive 2\n");
    const char *rep = strstr(r.err, "zknalloc: stats (signal)\n");
    ck_assert_msg(rep != NULL, "no report on the signal: %s", r.err);
    ck_assert_int_ge(stat_of(rep, "misses"), 2);
    ck_assert_int_eq(stat_of(rep, "bytes_live") >= 16ll << 20, 1);
    /* A signal that already means something is refused, with a word. */
    const char *bad[] = {"ZK_NALLOC_STATS_SIGNAL=HUP", NULL};
    run(&r, argv, 1, bad);
    ck_assert_msg(WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGUSR2,
                  "status %d: no handler, so SIGUSR2 ends python", r.status);
    ck_assert_msg(strstr(r.err, "zknalloc: ZK_NALLOC_STATS_SIGNAL=HUP: expected USR1, USR2"),
                  "no warning: %s", r.err);
}
END_TEST

static int count_of(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = strstr(text, what); p; p = strstr(p + 1, what))
        n++;
    return n;
}

START_TEST(bad_settings_named_once)
{
    SKIP_UNLESS_DROPIN();
    PYTHON3_OR_SKIP(py);
    /* Each unusable value is named once, however often it is read (the wait
     * at every connection attempt), and the program runs on the defaults. */
    static struct zkn_test_daemon d;
    zkn_test_daemon_up(&d, NULL, NULL); /* sets ZK_NALLOC_SOCKET */
    const char *argv[] = {py, "-c", py_script, NULL};
    const char *env[] = {"ZK_NALLOC_CACHE_BYTES=lots", "ZK_NALLOC_CALLOC_TRADE=yes",
                         "ZK_NALLOC_DAEMON_WAIT_MS=5000", NULL};
    static struct run pre;
    same_output(argv, env, &pre);
    ck_assert_int_eq(count_of(pre.err, "zknalloc: ZK_NALLOC_CACHE_BYTES=lots: expected a size"), 1);
    ck_assert_int_eq(count_of(pre.err, "zknalloc: ZK_NALLOC_CALLOC_TRADE=yes: expected 0 or 1; "
                                       "ignored\n"), 1);
    ck_assert_int_eq(count_of(pre.err, "zknalloc: ZK_NALLOC_DAEMON_WAIT_MS=5000: expected a whole "
                                       "number from 1 to 1000; ignored\n"), 1);
    ck_assert_int_eq(count_of(pre.err, "; ignored\n"), 3);
    /* The defaults: a cache of min(RAM/8, 1 GiB), and the daemon still served. */
    ck_assert_int_gt(stat_of(pre.err, "cache_cap"), 0);
    ck_assert_int_le(stat_of(pre.err, "cache_cap"), 1ll << 30);
    ck_assert_int_gt(stat_of(pre.err, "daemon_lends"), 0);
    zkn_test_daemon_down(&d);
}
END_TEST

START_TEST(sqlite3_preloaded)
{
    SKIP_UNLESS_DROPIN();
    const char *sq = find_program("sqlite3");
    if (!sq) {
        printf("sqlite3_preloaded: skipped: sqlite3 not installed\n");
        return;
    }
    const char *sql =
        "PRAGMA cache_size=-200000;"
        "CREATE TABLE t(k INTEGER PRIMARY KEY, v TEXT, b BLOB);"
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<200000)"
        " INSERT INTO t SELECT x, printf('%08d', (x*7919)%200003), zeroblob(x%500) FROM c;"
        "CREATE INDEX tv ON t(v);"
        "SELECT count(*), sum(k), sum(length(b)) FROM t;"
        "SELECT v FROM t ORDER BY v LIMIT 3 OFFSET 100000;"
        "SELECT length(group_concat(v)) FROM t;"
        "SELECT length(zeroblob(60000000)), hex(substr(zeroblob(5000000), 1, 4));";
    const char *argv[] = {sq, ":memory:", sql, NULL};
    static struct run pre;
    same_output(argv, NULL, &pre);
}
END_TEST

static void write_big_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n / 16; i++)
        fprintf(f, "%015zu\n", (i * 2654435761u) % 1000000007u);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(git_preloaded)
{
    SKIP_UNLESS_DROPIN();
    const char *git = find_program("git");
    if (!git) {
        printf("git_preloaded: skipped: git not installed\n");
        return;
    }
    char big[128], repo[96], home[128];
    snprintf(repo, sizeof repo, "%s/repo", tmpdir);
    snprintf(big, sizeof big, "%s/repo/big.txt", tmpdir);
    snprintf(home, sizeof home, "HOME=%s", tmpdir);
    ck_assert_int_eq(mkdir(repo, 0700), 0);
    write_big_file(big, 24 << 20);
    const char *env[] = {home, NULL};
    static struct run pre, r;
    /* Through a pipe git reads the file into one growing buffer (a file it
     * would mmap). */
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd, "cat '%s' | '%s' hash-object --stdin", big, git);
    const char *sh = find_program("sh");
    ck_assert_ptr_nonnull(sh);
    const char *hash[] = {sh, "-c", cmd, NULL};
    same_output(hash, env, &pre);
    /* A real commit under the library, read back with it. */
    const char *init[] = {git, "-C", repo, "init", "-q", NULL};
    run(&r, init, 1, env);
    ck_assert_int_eq(r.status, 0);
    const char *add[] = {git, "-C", repo, "add", "big.txt", NULL};
    run(&r, add, 1, env);
    ck_assert_int_eq(r.status, 0);
    const char *commit[] = {git, "-C", repo, "-c", "user.name=t", "-c", "user.email=t@t",
                            "commit", "-q", "-m", "big", NULL};
    run(&r, commit, 1, env);
    ck_assert_msg(r.status == 0, "git commit: %s", r.err);
    const char *show[] = {git, "-C", repo, "rev-parse", "HEAD:big.txt", NULL};
    run(&r, show, 1, env);
    ck_assert_msg(r.status == 0, "git rev-parse: %s", r.err);
    ck_assert_msg(r.out_len == pre.out_len, "rev-parse printed '%s', hash-object '%s'", r.out,
                  pre.out);
    ck_assert_msg(memcmp(r.out, pre.out, pre.out_len) == 0, "committed blob differs");
    const char *fsck[] = {git, "-C", repo, "fsck", "--strict", NULL};
    run(&r, fsck, 1, env);
    ck_assert_msg(r.status == 0, "git fsck: %s", r.err);
}
END_TEST

START_TEST(sort_preloaded)
{
    SKIP_UNLESS_DROPIN();
    const char *sortp = find_program("sort");
    if (!sortp) {
        printf("sort_preloaded: skipped: sort not installed\n");
        return;
    }
    char big[128];
    snprintf(big, sizeof big, "%s/lines.txt", tmpdir);
    write_big_file(big, 8 << 20);
    /* sort prints 16 MiB: compare a digest (sha256sum of its output) instead. */
    char cmd[512];
    snprintf(cmd, sizeof cmd, "sort -S 64M --parallel=2 '%s' | sha256sum", big);
    const char *sh = find_program("sh");
    ck_assert_ptr_nonnull(sh);
    const char *argv[] = {sh, "-c", cmd, NULL};
    static struct run pre;
    /* coreutils close stderr at exit, before the library could report. */
    same_output_ex(argv, NULL, &pre, 0);
    ck_assert_uint_eq(pre.out_len, 64 + 4); /* "<sha256>  -\n" */
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("client_preload");
    TCase *t = zkn_test_tcase(s, "preload", 60);
    tcase_add_unchecked_fixture(t, setup, teardown);
    tcase_add_test(t, dropin_serves_this_process);
    tcase_add_test(t, python3_preloaded);
    tcase_add_test(t, next_allocator_after_the_library);
    tcase_add_test(t, real_allocators_after_the_library);
    tcase_add_test(t, allocator_before_the_library_named);
    tcase_add_test(t, library_linked_from_archive);
    tcase_add_test(t, glibc_trims_as_without_the_library);
    tcase_add_test(t, stats_on_signal);
    tcase_add_test(t, bad_settings_named_once);
    tcase_add_test(t, python3_preloaded_with_daemon_and_fork);
    tcase_add_test(t, sqlite3_preloaded);
    tcase_add_test(t, git_preloaded);
    tcase_add_test(t, sort_preloaded);
    return s;
}

ZKN_TEST_CLIENT_MAIN(suite)
