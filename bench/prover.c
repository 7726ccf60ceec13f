/* A prover-shaped workload: NTTs over the Goldilocks field
 * (p = 2^64 - 2^32 + 1) with the allocations a real prover makes each round.
 *
 *   prover LOG2N [ROUNDS] [REPS] [WARMUP] [FLOOR]
 *
 * One round commits to one trace column of n = 2^LOG2N elements:
 *   column  = malloc(n)       random trace values
 *   itw     = malloc(n/2)     inverse twiddles for size n, computed this round
 *   coeffs  = malloc(n)       copy of the column, inverse NTT -> coefficients
 *   tw      = malloc(n)       twiddles for the size-2n LDE, computed this round
 *   lde     = calloc(2n)      coefficients zero-padded, forward NTT -> blowup-2 LDE
 *   quot    = malloc(2n)      a pointwise constraint (lde^2 + column), folded into a digest
 * then everything is freed. A repetition is ROUNDS rounds; its time is reported
 * in ms, with the peak RSS of the process (getrusage) before the floor ran.
 * The floor (unless FLOOR is 0; the driver measures it once per size since it
 * is pure compute) is the same computation with every buffer carved out of one
 * arena the harness faulted in once and keeps; its digest must match. */
#include "bench_common.h"

#include <stdlib.h>
#include <string.h>

typedef uint64_t fe;
#define P 0xFFFFFFFF00000001ull
#define EPS 0xFFFFFFFFull

static inline fe reduce128(unsigned __int128 x)
{
    uint64_t lo = (uint64_t)x, hi = (uint64_t)(x >> 64);
    uint64_t hi_hi = hi >> 32, hi_lo = hi & EPS;
    uint64_t t0 = lo - hi_hi;
    if (lo < hi_hi)
        t0 -= EPS;
    uint64_t t1 = hi_lo * EPS;
    uint64_t t2 = t0 + t1;
    if (t2 < t1)
        t2 += EPS;
    return t2 >= P ? t2 - P : t2;
}
static inline fe fmul(fe a, fe b) { return reduce128((unsigned __int128)a * b); }
static inline fe fadd(fe a, fe b)
{
    fe s = a + b;
    if (s < a || s >= P)
        s -= P;
    return s;
}
static inline fe fsub(fe a, fe b) { return a >= b ? a - b : a + (P - b); }
static fe fpow(fe b, uint64_t e)
{
    fe r = 1;
    while (e) {
        if (e & 1)
            r = fmul(r, b);
        b = fmul(b, b);
        e >>= 1;
    }
    return r;
}
static fe finv(fe a) { return fpow(a, P - 2); }

/* Primitive 2^k-th root of unity from the multiplicative generator 7. */
static fe root_of_unity(int k) { return fpow(7, (P - 1) >> k); }

static void twiddles(fe *tw, size_t half, fe w)
{
    fe x = 1;
    for (size_t i = 0; i < half; i++) {
        tw[i] = x;
        x = fmul(x, w);
    }
}

/* In-place radix-2 NTT of size n (power of two) with tw[i] = w^i, i < n/2. */
static void ntt(fe *a, size_t n, const fe *tw)
{
    for (size_t i = 1, j = 0; i < n; i++) {
        size_t bit = n >> 1;
        for (; j & bit; bit >>= 1)
            j ^= bit;
        j ^= bit;
        if (i < j) {
            fe t = a[i];
            a[i] = a[j];
            a[j] = t;
        }
    }
    for (size_t len = 2; len <= n; len <<= 1) {
        size_t half = len >> 1, step = n / len;
        for (size_t i = 0; i < n; i += len)
            for (size_t j = 0; j < half; j++) {
                fe u = a[i + j], v = fmul(a[i + j + half], tw[j * step]);
                a[i + j] = fadd(u, v);
                a[i + j + half] = fsub(u, v);
            }
    }
}

/* Allocation: the allocator under test, or a bump arena for the floor. */
static unsigned char *arena;
static size_t arena_off, arena_cap;
static int use_arena;

static fe *get(size_t n, int zero)
{
    if (!use_arena) {
        fe *p = zero ? calloc(n, sizeof(fe)) : malloc(n * sizeof(fe));
        if (!p)
            abort();
        return p;
    }
    size_t bytes = (n * sizeof(fe) + 4095) & ~(size_t)4095;
    if (arena_off + bytes > arena_cap)
        abort();
    fe *p = (fe *)(arena + arena_off);
    arena_off += bytes;
    return p;
}
static void put(fe *p)
{
    if (!use_arena)
        free(p);
}

static fe prove_round(int logn, uint64_t *seed)
{
    size_t n = (size_t)1 << logn;
    arena_off = 0;
    fe *column = get(n, 0);
    for (size_t i = 0; i < n; i++)
        column[i] = bench_rand(seed) % P;
    fe *itw = get(n / 2, 0);
    twiddles(itw, n / 2, finv(root_of_unity(logn)));
    fe *coeffs = get(n, 0);
    memcpy(coeffs, column, n * sizeof(fe));
    ntt(coeffs, n, itw);
    fe ninv = finv(n);
    fe *tw = get(n, 0);
    twiddles(tw, n, root_of_unity(logn + 1));
    fe *lde = get(2 * n, 1);
    for (size_t i = 0; i < n; i++)
        lde[i] = fmul(coeffs[i], ninv);
    if (use_arena) /* calloc zeroed it for the allocators; the floor must too */
        memset(lde + n, 0, n * sizeof(fe));
    ntt(lde, 2 * n, tw);
    fe *quot = get(2 * n, 0);
    fe digest = 0;
    for (size_t i = 0; i < 2 * n; i++) {
        quot[i] = fadd(fmul(lde[i], lde[i]), column[i & (n - 1)]);
        digest = fadd(fmul(digest, 0x9e3779b97f4a7c15ull % P), quot[i]);
    }
    /* Sanity: the LDE agrees with the column on the even points. */
    if (lde[0] != column[0] || lde[2] != column[1])
        abort();
    put(quot);
    put(lde);
    put(tw);
    put(coeffs);
    put(itw);
    put(column);
    return digest;
}

int main(int argc, char **argv)
{
    bench_check_preload();
    int logn = (int)bench_arg(argc, argv, 1, 18);
    long rounds = bench_arg(argc, argv, 2, 4);
    long reps = bench_arg(argc, argv, 3, 3);
    long warm = bench_arg(argc, argv, 4, 1);
    long want_floor = bench_arg(argc, argv, 5, 1);
    if (logn < 4 || logn > 28 || rounds < 1) {
        fprintf(stderr, "usage: prover LOG2N [ROUNDS] [REPS] [WARMUP] [FLOOR]\n");
        return 2;
    }
    struct bench_series s, f;
    bench_series_init(&s, (size_t)reps);
    bench_series_init(&f, (size_t)reps);
    fe digest_alloc = 0, digest_floor = 0;
    for (long r = -warm; r < reps; r++) {
        uint64_t seed = 12345;
        uint64_t t0 = bench_now_ns();
        fe d = 0;
        for (long k = 0; k < rounds; k++) {
            fe dk = prove_round(logn, &seed);
            if (k == 0)
                digest_alloc = dk;
            d = fadd(d, dk);
        }
        uint64_t t1 = bench_now_ns();
        bench_escape(&d);
        if (r >= 0)
            bench_series_add(&s, (double)(t1 - t0) / 1e6);
    }
    long maxrss = bench_maxrss_kb();
    size_t n = (size_t)1 << logn;
    arena_cap = 8 * n * sizeof(fe) + 6 * 4096;
    arena = bench_map(arena_cap, 1, 1);
    use_arena = 1;
    for (long r = want_floor ? -warm : 0; r < (want_floor ? reps : 1); r++) {
        uint64_t seed = 12345;
        uint64_t t0 = bench_now_ns();
        fe d = 0;
        for (long k = 0; k < (want_floor ? rounds : 1); k++) {
            fe dk = prove_round(logn, &seed);
            if (k == 0)
                digest_floor = dk;
            d = fadd(d, dk);
        }
        uint64_t t1 = bench_now_ns();
        bench_escape(&d);
        if (want_floor && r >= 0)
            bench_series_add(&f, (double)(t1 - t0) / 1e6);
    }
    if (digest_alloc != digest_floor) {
        fprintf(stderr, "prover: digest mismatch (%llx vs %llx): memory contents differ\n",
                (unsigned long long)digest_alloc, (unsigned long long)digest_floor);
        return 4;
    }
    char casename[64], extra[160];
    snprintf(casename, sizeof casename, "prover NTT 2^%d", logn);
    snprintf(extra, sizeof extra, "\"log2n\":%d,\"rounds\":%ld,\"maxrss_kb\":%ld", logn, rounds,
             maxrss);
    bench_emit("prover", casename, "ms", &s, want_floor ? &f : NULL, extra);
    return 0;
}
