/* Learned targets and background preparation (see prepare.c). */
#ifndef ZKND_PREPARE_H
#define ZKND_PREPARE_H

#include <stdint.h>
#include <sys/types.h>

#include "pool.h"

/* A LEND of count regions found none of the class ready for uid (it is
 * answered not_warm): counts the miss, raises uid's target for the class
 * and prepares regions in the background, within the pool cap. */
void pool_note_not_warm(struct pool *p, uid_t uid, int size_class, uint32_t count);

/* A LEND of count regions was answered from the pool with got regions:
 * counts it, keeps the class's decay clock running and prepares regions while
 * those uid holds and those ready for it fall short of its target (raised to
 * count when the pool fell short). */
void pool_note_served(struct pool *p, uid_t uid, int size_class, uint32_t count, uint32_t got);

/* The class's ready target, summed over uids. */
uint64_t pool_class_target(const struct pool *p, int size_class);

/* Starts creating count warm, clean regions of the class for any uid. */
void pool_prewarm(struct pool *p, int size_class, uint32_t count);

#endif
