/* The library's environment variables (README's table). A variable set to a
 * value it cannot use is reported on stderr, by name, once per process, and
 * then ignored: a typo must not pass silently for the default. Nothing here
 * allocates. */
#ifndef ZKN_CLIENT_ENV_H
#define ZKN_CLIENT_ENV_H

#include <stdint.h>

/* secure_getenv(name), or NULL when unset or empty. */
const char *zkn__env(const char *name);
/* "zknalloc: NAME=VALUE: expected EXPECTED; ignored", once per name. */
void zkn__env_reject(const char *name, const char *value, const char *expected);
/* A decimal number in [min, max]; dflt when unset, empty or rejected. */
uint64_t zkn__env_uint(const char *name, uint64_t min, uint64_t max, uint64_t dflt);
/* 1 for "1", 0 for "0", unset, empty or rejected. */
int zkn__env_flag(const char *name);

#endif
