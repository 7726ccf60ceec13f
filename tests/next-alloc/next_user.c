/* Run preloaded with libzknalloc and then another allocator: contents must
 * survive moving between the two, and every block must go back to the
 * allocator that made it. Behind the fake allocator (fake_alloc.c), which
 * says which blocks are its own, also: every small block is the fake's.
 * Prints "next allocator ok" and exits 0, or says what failed and exits 1. */
#include <dlfcn.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int (*fake_owns)(void *);
static unsigned long (*calls)(void);
static int failures;

/* Whether p is the next allocator's: known behind the fake, assumed else. */
static int owns(void *p)
{
    return fake_owns ? fake_owns(p) : 1;
}

/* Whether p is the library's (a large block): the fake's blocks are not. */
static int ours(void *p)
{
    return fake_owns ? !fake_owns(p) : 1;
}

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (!(cond)) {                                                                       \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fputc('\n', stderr);                                                             \
            failures++;                                                                      \
        }                                                                                    \
    } while (0)

static void fill(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * 131 + seed);
}

static int intact(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 131 + seed))
            return 0;
    return 1;
}

int main(void)
{
    fake_owns = (int (*)(void *))dlsym(RTLD_DEFAULT, "zkn_fake_next_owns");
    calls = (unsigned long (*)(void))dlsym(RTLD_DEFAULT, "zkn_fake_next_calls");
    unsigned long before = calls ? calls() : 0;

    /* Every small size grown into the library's classes keeps every byte
     * (the copy's length comes from the small block's allocator). */
    for (size_t n = 8; n < 64 * 1024; n = n * 3 / 2 + 1) {
        unsigned char *p = malloc(n);
        CHECK(p != NULL, "malloc(%zu) failed", n);
        if (!p)
            continue;
        fill(p, n, (unsigned)n);
        unsigned char *q = realloc(p, 1 << 20);
        CHECK(q && intact(q, n, (unsigned)n), "bytes lost growing %zu bytes to 1 MiB", n);
        free(q);
    }

    /* Small blocks are the fake's, with its exact sizes. */
    unsigned char *small = malloc(1000);
    CHECK(small && owns(small), "malloc(1000) did not come from the next allocator");
    if (fake_owns)
        CHECK(malloc_usable_size(small) == 1000, "usable size %zu, not the fake's 1000",
              malloc_usable_size(small));
    fill(small, 1000, 1);

    /* Growing into the library's classes: every byte moves over (glibc's
     * malloc_usable_size on this block would say 992), the old block goes
     * back to the fake (whose free aborts on anything else). */
    unsigned char *big = realloc(small, 1 << 20);
    CHECK(big && ours(big), "realloc to 1 MiB did not move to the library");
    CHECK(big && intact(big, 1000, 1), "bytes lost growing from the next allocator");

    /* And back: shrinking below 64 KiB keeps the block where it is (a large
     * block stays large); a new small block is the fake's again. */
    fill(big, 1 << 20, 2);
    unsigned char *shrunk = realloc(big, 100);
    CHECK(shrunk && intact(shrunk, 100, 2), "bytes lost shrinking a large block");
    free(shrunk);

    unsigned char *zeroed = calloc(10, 100);
    int zero = zeroed != NULL;
    for (size_t i = 0; zeroed && i < 1000; i++)
        zero &= zeroed[i] == 0;
    CHECK(zeroed && owns(zeroed) && zero, "calloc(10, 100): not the next allocator's or not zero");
    free(zeroed);

    void *aligned = memalign(4096, 5000);
    CHECK(aligned && owns(aligned) && ((uintptr_t)aligned & 4095) == 0,
          "memalign(4096, 5000): not the next allocator's or misaligned");
    free(aligned);
    void *pm = NULL;
    CHECK(posix_memalign(&pm, 256, 300) == 0 && owns(pm) && ((uintptr_t)pm & 255) == 0,
          "posix_memalign(256, 300): not the next allocator's or misaligned");
    free(pm);

    /* Small reallocs stay with the fake and keep their bytes. */
    unsigned char *s = malloc(64);
    fill(s, 64, 3);
    s = realloc(s, 5000);
    CHECK(s && owns(s) && intact(s, 64, 3), "small realloc left the next allocator or lost bytes");
    free(s);

    unsigned char *large = malloc(8 << 20);
    CHECK(large && ours(large), "an 8 MiB block came from the next allocator");
    fill(large, 8 << 20, 4);
    CHECK(intact(large, 8 << 20, 4), "8 MiB block did not keep its bytes");
    free(large);

    if (calls)
        CHECK(calls() > before, "the fake allocator was never called");
    if (failures)
        return 1;
    printf("next allocator ok\n");
    return 0;
}
