/* The bottom layer: the library's output. write(2) only, since stdio may
 * allocate and this runs inside malloc. */
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "out.h"

static _Atomic int logged;

void zkn__write_str(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w <= 0)
            return; /* nowhere to report a failing stderr */
        s += w;
        n -= (size_t)w;
    }
}

char *zkn__fmt_u64(char *buf, uint64_t v)
{
    char *p = buf + 20;
    *p = '\0';
    do
        *--p = (char)('0' + v % 10);
    while (v /= 10);
    return p;
}

char *zkn__fmt_hex(char *buf, uint64_t v)
{
    char *p = buf + 18;
    *p = '\0';
    do
        *--p = "0123456789abcdef"[v & 15];
    while (v >>= 4);
    *--p = 'x';
    *--p = '0';
    return p;
}

void zkn__log_once(const char *msg)
{
    if (!atomic_exchange(&logged, 1))
        zkn__write_str(2, msg);
}
