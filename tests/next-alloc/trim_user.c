/* Whether glibc trims the top of its main heap before and after the program
 * frees a 16 MiB block: glibc alone stops trimming at its 128 KiB default
 * once it has freed a block it mmapped, and must behave the same with
 * libzknalloc preloaded (which takes that free from it). With the argument
 * "mallopt" the program fixes the trim threshold itself first, and then
 * glibc trims after the big free too. Prints one line per phase. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { BLOCKS = 128, BLOCK = 32 << 10 };

/* 4 MiB of 32 KiB blocks on the main heap, freed newest first, so that each
 * joins the top: "trimmed" when the heap's end came down after it. */
static const char *heap_top_after_frees(void)
{
    static void *b[BLOCKS];
    for (int i = 0; i < BLOCKS; i++) {
        b[i] = malloc(BLOCK);
        if (!b[i])
            exit(2);
        memset(b[i], 1, BLOCK);
    }
    uintptr_t before = (uintptr_t)sbrk(0);
    for (int i = BLOCKS - 1; i >= 0; i--)
        free(b[i]);
    return (uintptr_t)sbrk(0) < before ? "trimmed" : "kept";
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "mallopt") && !mallopt(M_TRIM_THRESHOLD, 128 << 10))
        return 3;
    printf("before a big free: %s\n", heap_top_after_frees());
    unsigned char *big = malloc(16 << 20);
    if (!big)
        return 2;
    memset(big, 1, 16 << 20);
    free(big);
    printf("after a big free: %s\n", heap_top_after_frees());
    return 0;
}
