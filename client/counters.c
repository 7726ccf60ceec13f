/* The library's counters (internal.h), read by zkn_stats(). A file of their
 * own so that every layer can count without depending on the public API. */
#include "internal.h"

struct zkn__counters zkn__ctr;
