/* Helper for tests/systemd-live/run.sh: a client that holds large blocks
 * while zknallocd restarts under it, and a client that scans what it is lent.
 * It calls plain malloc/free: run it with LD_PRELOAD=libzknalloc.so.0 and
 * ZK_NALLOC_SOCKET set.
 *
 *   zkn-live-holder hold NBLOCKS MIB STOPFILE MAXSECONDS
 *     Allocates NBLOCKS blocks of MIB MiB, fills each with its pattern, prints
 *     "ready ...", then every 50 ms checks every block byte for byte against
 *     the pattern last written and writes the next generation, until STOPFILE
 *     exists (or MAXSECONDS pass). Prints "done rounds R mismatches M ..."
 *     and exits 0 when no block ever changed under it.
 *
 *   zkn-live-holder scan NBLOCKS MIB
 *     Allocates NBLOCKS blocks of MIB MiB and counts the 8-byte words carrying
 *     a holder's marker, then overwrites them with its own bytes (so a block
 *     shared by mistake also shows up as a mismatch in the holder). Prints
 *     "scan blocks N daemon_blocks D marked_words W" and exits 0 when W is 0.
 *
 * Every word of a holder block is MARK << 32 | block << 24 | generation, so
 * a marked word anywhere else means the holder's memory leaked. A block
 * counts as daemon memory when /proc/self/maps shows it inside a mapping of a
 * zknalloc memfd; the test needs those, not the private fallback. */
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MARK 0x5a4b4e48u /* "ZKNH" */

static uint64_t word_for(unsigned block, unsigned gen)
{
    return (uint64_t)MARK << 32 | (uint64_t)(block & 0xff) << 24 | (gen & 0xffffffu);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* 1 when [p, p+len) lies inside one mapping of a zknalloc memfd. */
static int is_daemon_memory(const void *p, size_t len)
{
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    uintptr_t a = (uintptr_t)p;
    if (!f)
        return 0;
    while (!found && fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
            continue;
        if (a >= lo && a + len <= hi && strstr(line, "zknalloc-class"))
            found = 1;
    }
    fclose(f);
    return found;
}

static void fill(uint64_t *w, size_t n, uint64_t v)
{
    for (size_t i = 0; i < n; i++)
        w[i] = v;
}

/* Number of words differing from v; the first bad index into *first. */
static size_t verify(const uint64_t *w, size_t n, uint64_t v, size_t *first, uint64_t *seen)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        if (w[i] != v) {
            if (!bad) {
                *first = i;
                *seen = w[i];
            }
            bad++;
        }
    return bad;
}

/* A block the daemon lent, asking again for up to ms: a daemon with nothing
 * of the class ready answers not_warm, the library uses private memory and
 * the daemon prepares some. The library's zkn_release_cache (found at run
 * time: the program is linked with plain libc) drops the private block, or
 * the cache would serve it again. Any block after that. */
static void *daemon_malloc(size_t bytes, int ms)
{
    void (*release)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "zkn_release_cache");
    for (int waited = 0;; waited += 20) {
        void *p = malloc(bytes);
        if (!p || is_daemon_memory(p, bytes) || waited >= ms || !release)
            return p;
        free(p);
        release();
        usleep(20000);
    }
}

static int hold(unsigned nblocks, size_t bytes, const char *stopfile, double maxs)
{
    uint64_t **b = calloc(nblocks, sizeof *b);
    size_t n = bytes / 8;
    unsigned gen = 0, daemon_blocks = 0;
    if (!b)
        return 2;
    for (unsigned i = 0; i < nblocks; i++) {
        b[i] = daemon_malloc(bytes, 3000);
        if (!b[i]) {
            printf("error malloc %zu: %s\n", bytes, strerror(errno));
            return 2;
        }
        fill(b[i], n, word_for(i, gen));
        daemon_blocks += is_daemon_memory(b[i], bytes);
    }
    printf("ready pid %d blocks %u daemon_blocks %u\n", (int)getpid(), nblocks, daemon_blocks);
    fflush(stdout);

    unsigned long rounds = 0, bad_rounds = 0;
    size_t bad_words = 0;
    double t0 = now();
    for (;;) {
        usleep(50000);
        int stop = access(stopfile, F_OK) == 0 || now() - t0 > maxs;
        int round_bad = 0;
        for (unsigned i = 0; i < nblocks; i++) {
            size_t first = 0;
            uint64_t seen = 0;
            size_t k = verify(b[i], n, word_for(i, gen), &first, &seen);
            if (k) {
                /* One line per damaged block and round, capped. */
                if (bad_rounds < 20)
                    printf("mismatch t=%.2fs round %lu block %u gen %u: %zu of %zu words "
                           "differ, first at byte %zu holds 0x%016llx (expected 0x%016llx)\n",
                           now() - t0, rounds, i, gen, k, n, first * 8,
                           (unsigned long long)seen, (unsigned long long)word_for(i, gen));
                bad_words += k;
                round_bad = 1;
            }
        }
        bad_rounds += round_bad;
        rounds++;
        if (stop)
            break;
        gen++;
        for (unsigned i = 0; i < nblocks; i++)
            fill(b[i], n, word_for(i, gen));
        fflush(stdout);
    }
    unsigned still = 0;
    for (unsigned i = 0; i < nblocks; i++)
        still += is_daemon_memory(b[i], bytes);
    printf("done rounds %lu mismatches %lu bad_words %zu daemon_blocks_at_end %u\n", rounds,
           bad_rounds, bad_words, still);
    fflush(stdout);
    for (unsigned i = 0; i < nblocks; i++)
        free(b[i]);
    free(b);
    return bad_rounds ? 1 : 0;
}

static int scan(unsigned nblocks, size_t bytes)
{
    uint64_t **b = calloc(nblocks, sizeof *b);
    size_t n = bytes / 8, marked = 0;
    unsigned daemon_blocks = 0;
    if (!b)
        return 2;
    for (unsigned i = 0; i < nblocks; i++) {
        b[i] = daemon_malloc(bytes, 1000);
        if (!b[i]) {
            printf("error malloc %zu: %s\n", bytes, strerror(errno));
            return 2;
        }
        daemon_blocks += is_daemon_memory(b[i], bytes);
        size_t here = 0;
        for (size_t j = 0; j < n; j++)
            here += (b[i][j] >> 32) == MARK;
        if (here)
            printf("block %u: %zu words carry a holder's marker (first 0x%016llx)\n", i, here,
                   (unsigned long long)b[i][0]);
        marked += here;
        fill(b[i], n, 0x5343414e5343414eull); /* "SCANSCAN" */
    }
    usleep(200000); /* the holder checks its blocks meanwhile */
    printf("scan blocks %u daemon_blocks %u marked_words %zu\n", nblocks, daemon_blocks, marked);
    fflush(stdout);
    for (unsigned i = 0; i < nblocks; i++)
        free(b[i]);
    free(b);
    return marked ? 1 : 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 6 && strcmp(argv[1], "hold") == 0)
        return hold((unsigned)atoi(argv[2]), (size_t)atoi(argv[3]) << 20, argv[4],
                    atof(argv[5]));
    if (argc == 4 && strcmp(argv[1], "scan") == 0)
        return scan((unsigned)atoi(argv[2]), (size_t)atoi(argv[3]) << 20);
    fprintf(stderr, "usage: %s hold NBLOCKS MIB STOPFILE MAXSECONDS | scan NBLOCKS MIB\n",
            argv[0]);
    return 64;
}
