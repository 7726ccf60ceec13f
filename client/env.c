/* See env.h. */
#include "env.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "out.h"

/* More than the library has variables, so every one is reported once. */
#define REPORTED_MAX 16
static const char *_Atomic reported[REPORTED_MAX];

/* 1 the first time name is seen (then remembered), 0 after. */
static int first_report(const char *name)
{
    for (int i = 0; i < REPORTED_MAX; i++) {
        const char *seen = atomic_load(&reported[i]);
        while (!seen) {
            if (atomic_compare_exchange_weak(&reported[i], &seen, name))
                return 1;
        }
        if (strcmp(seen, name) == 0)
            return 0;
    }
    return 1; /* table full: report rather than stay silent */
}

const char *zkn__env(const char *name)
{
    const char *v = secure_getenv(name);
    return v && *v ? v : NULL;
}

void zkn__env_reject(const char *name, const char *value, const char *expected)
{
    if (!first_report(name))
        return;
    /* One write, so that lines from several threads do not interleave. */
    char line[256];
    size_t n = 0;
    const char *parts[] = {"zknalloc: ", name, "=", value, ": expected ", expected, "; ignored\n"};
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t len = strlen(parts[i]);
        if (i == 3 && len > 64)
            len = 64; /* the value, cut short */
        if (len > sizeof line - 1 - n)
            len = sizeof line - 1 - n;
        memcpy(line + n, parts[i], len);
        n += len;
    }
    if (n && line[n - 1] != '\n')
        line[n - 1] = '\n';
    line[n] = '\0';
    zkn__write_str(2, line);
}

uint64_t zkn__env_uint(const char *name, uint64_t min, uint64_t max, uint64_t dflt)
{
    const char *s = zkn__env(name);
    if (!s)
        return dflt;
    uint64_t v = 0;
    const char *p = s;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            break;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    if (!*p && v >= min && v <= max)
        return v;
    char lo[21], hi[21], expected[64];
    const char *parts[] = {"a whole number from ", zkn__fmt_u64(lo, min), " to ",
                           zkn__fmt_u64(hi, max)};
    expected[0] = '\0';
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        strncat(expected, parts[i], sizeof expected - 1 - strlen(expected));
    zkn__env_reject(name, s, expected);
    return dflt;
}

int zkn__env_flag(const char *name)
{
    const char *s = zkn__env(name);
    if (!s || strcmp(s, "0") == 0)
        return 0;
    if (strcmp(s, "1") == 0)
        return 1;
    zkn__env_reject(name, s, "0 or 1");
    return 0;
}
