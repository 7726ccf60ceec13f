/* What the arena suites (test_client_arena*.c) share. */
#ifndef ZKN_TEST_ARENA_HELPERS_H
#define ZKN_TEST_ARENA_HELPERS_H

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdalign.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#ifdef TEST_ASAN
#include <sanitizer/asan_interface.h>
/* A request no machine can meet is answered with NULL, as by a real malloc,
 * not by ASan ending the process. */
__attribute__((visibility("default"))) const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}
#endif

#define MiB ((size_t)1 << 20)
/* check 0.15 has no ordered pointer comparisons. */
#define assert_ptr_ge(a, b) ck_assert_uint_ge((uintptr_t)(a), (uintptr_t)(b))
#define assert_ptr_le(a, b) ck_assert_uint_le((uintptr_t)(a), (uintptr_t)(b))

/* The arena's first byte: an align-1 allocation at offset 0. */
static inline unsigned char *arena_base(zkn_arena *a)
{
    zkn_arena_reset(a);
    unsigned char *p = zkn_arena_alloc(a, 1, 1);
    ck_assert_ptr_nonnull(p);
    zkn_arena_reset(a);
    return p;
}

#endif
