/* What the SecretBuf suites (test_client_secret*.c) share: the backing each
 * loop iteration uses, and reading back the mappings and limits. */
#ifndef ZKN_TEST_SECRET_HELPERS_H
#define ZKN_TEST_SECRET_HELPERS_H

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "runner.h"
#include "zknalloc.h"

static size_t ps;


/* ---- helpers ---- */

static const char *const backings[] = {NULL, "mlock"};

/* Loop index 0: default backing; 1: forced private mlock'd memory. */
static inline void use_backing(int i)
{
    if (backings[i])
        ck_assert_int_eq(setenv("ZK_NALLOC_SECRET_BACKING", backings[i], 1), 0);
    else
        ck_assert_int_eq(unsetenv("ZK_NALLOC_SECRET_BACKING"), 0);
}

/* Whether memfd_secret works here, found independently of the library. */
static inline int kernel_has_memfd_secret(void)
{
#ifdef SYS_memfd_secret
    int fd = (int)syscall(SYS_memfd_secret, (unsigned int)O_CLOEXEC);
    if (fd < 0)
        return 0;
    int ok = ftruncate(fd, (off_t)ps) == 0;
    if (ok) {
        void *p = mmap(NULL, ps, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        ok = p != MAP_FAILED;
        if (ok)
            munmap(p, ps);
    }
    close(fd);
    return ok;
#else
    return 0;
#endif
}

static inline enum zkn_secret_backing expected_backing(int i)
{
    return i == 0 && kernel_has_memfd_secret() ? ZKN_SECRET_MEMFD_SECRET : ZKN_SECRET_MLOCKED;
}

static inline size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

/* VmLck of this process in kB, or -1. */
static inline long vmlck_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

/* The /proc/self/smaps header line and VmFlags line of the mapping that holds
 * addr. 0, or -1 if not found. */
static inline int mapping_of(const void *addr, char *head, size_t headlen, char *flags, size_t flagslen)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    int in = 0, found = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        /* Only a mapping's header line starts with "hex-hex". */
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
            in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
            if (in)
                snprintf(head, headlen, "%s", line);
        } else if (in && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, flagslen, "%s", line + 8);
            found = 0;
            break;
        }
    }
    fclose(f);
    return found;
}

static inline int has_flag(const char *flags, const char *flag)
{
    char want[8];
    snprintf(want, sizeof want, " %s", flag);
    const char *p = flags;
    while ((p = strstr(p, want)) != NULL) {
        char after = p[strlen(want)];
        if (after == ' ' || after == '\n' || after == 0)
            return 1;
        p++;
    }
    return 0;
}

/* Forks; the child writes one byte at p and exits 0 if it survives.
 * Returns the wait status. */
static inline int status_of_write(volatile unsigned char *p)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        /* No core file for the expected fault, and no sanitizer handler
         * turning the signal into an exit. */
        struct rlimit rl = {0, 0};
        setrlimit(RLIMIT_CORE, &rl);
        signal(SIGSEGV, SIG_DFL);
        *p = 0x42;
        _exit(0);
    }
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    return st;
}

#define ck_assert_segv(st)                                                                   \
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGSEGV, "no SIGSEGV (status %#x)", st)

#endif
