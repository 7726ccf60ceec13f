/* Leveled logging. Lines carry an sd-daemon priority prefix ("<3>") when
 * stderr goes to the journal, so levels survive there too. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static enum log_level current = LOG_LVL_INFO;

void log_set_level(enum log_level level) { current = level; }

int log_parse_level(const char *name)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    for (int i = 0; i < 4; i++)
        if (name && strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

int log_enabled(enum log_level level) { return level <= current; }

/* JOURNAL_STREAM names the journal's stream as DEV:INODE; stderr is the
 * journal only if it is that very file (a wrapper may have redirected it). */
static int stderr_is_journal(void)
{
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    static const char *const tags[] = {"error", "warning", "info", "debug"};
    static const int priorities[] = {3, 4, 6, 7};
    static int journal = -1;
    char line[1024];
    va_list ap;

    if (level > current)
        return;
    if (journal < 0)
        journal = stderr_is_journal();
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (journal)
        fprintf(stderr, "<%d>%s\n", priorities[level], line);
    else
        fprintf(stderr, "zknallocd: %s: %s\n", tags[level], line);
}
