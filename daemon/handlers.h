/* The requests: HELLO, LEND, RETURN, STATS, TRIM, PING (see handlers.c). */
#ifndef ZKND_HANDLERS_H
#define ZKND_HANDLERS_H

#include <stddef.h>

struct conn;

/* Checks one frame read from c and answers it. */
void handle_frame(struct conn *c, const char *frame, size_t len);

#endif
