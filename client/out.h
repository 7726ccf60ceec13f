/* The bottom layer: output without stdio (see out.c). */
#ifndef ZKN_CLIENT_OUT_H
#define ZKN_CLIENT_OUT_H

#include <stdint.h>

/* Writes one line to stderr, once per process, whatever the caller. */
void zkn__log_once(const char *msg);
void zkn__write_str(int fd, const char *s);
char *zkn__fmt_u64(char *buf, uint64_t v); /* buf >= 21 bytes; returns start */
char *zkn__fmt_hex(char *buf, uint64_t v); /* buf >= 19 bytes */

#endif
