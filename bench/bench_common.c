#include "bench_common.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void bench_wait_gate(void)
{
    const char *text = getenv("ZKB_GATE_FD");
    if (!text || !*text)
        return;
    int fd = (int)bench_arg_text(text, "ZKB_GATE_FD");
    char byte;
    ssize_t n;
    /* The driver writes nothing: EOF, when it closes its end, is the signal. */
    while ((n = read(fd, &byte, 1)) != 0) {
        if (n < 0 && errno != EINTR) {
            perror("bench: ZKB_GATE_FD");
            exit(2);
        }
    }
    close(fd);
}

static int maps_contains(const char *needle)
{
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

const char *bench_check_preload(void)
{
    static char from[1024];
    const char *expect = getenv("ZKB_EXPECT");
    void *sym = dlsym(RTLD_DEFAULT, "malloc");
    Dl_info info;
    if (!sym || !dladdr(sym, &info) || !info.dli_fname) {
        fprintf(stderr, "bench: cannot tell which object provides malloc\n");
        exit(3);
    }
    snprintf(from, sizeof from, "%s", info.dli_fname);
    if (!expect || !*expect)
        return from;
    static const struct {
        const char *name, *lib;
    } libs[] = {
        {"glibc", "libc.so"},          {"jemalloc", "libjemalloc"}, {"mimalloc", "libmimalloc"},
        {"tcmalloc", "libtcmalloc"},   {"zknalloc", "libzknalloc"},
    };
    const char *lib = NULL;
    for (size_t i = 0; i < sizeof libs / sizeof libs[0]; i++)
        if (strcmp(expect, libs[i].name) == 0)
            lib = libs[i].lib;
    if (!lib) {
        fprintf(stderr, "bench: unknown ZKB_EXPECT=%s\n", expect);
        exit(3);
    }
    if (!strstr(from, lib) || !maps_contains(lib)) {
        fprintf(stderr, "bench: expected malloc from %s (%s) but it comes from %s; preload failed\n",
                expect, lib, from);
        exit(3);
    }
    /* glibc: no other allocator may be mapped at all. */
    if (strcmp(expect, "glibc") == 0)
        for (size_t i = 1; i < sizeof libs / sizeof libs[0]; i++)
            if (maps_contains(libs[i].lib)) {
                fprintf(stderr, "bench: expected plain glibc but %s is mapped\n", libs[i].lib);
                exit(3);
            }
    return from;
}

void *bench_map(size_t len, int huge, int populate)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("bench: mmap");
        exit(2);
    }
    if (huge)
        madvise(p, len, MADV_HUGEPAGE);
    if (populate && madvise(p, len, MADV_POPULATE_WRITE) != 0)
        memset(p, 1, len);
    return p;
}

void bench_unmap(void *p, size_t len)
{
    if (p)
        munmap(p, len);
}

void bench_series_init(struct bench_series *s, size_t cap)
{
    s->cap = cap ? cap : 1;
    s->n = 0;
    s->v = bench_map(s->cap * sizeof(double), 0, 0);
}

void bench_series_add(struct bench_series *s, double x)
{
    if (s->n == s->cap) {
        double *nv = bench_map(2 * s->cap * sizeof(double), 0, 0);
        memcpy(nv, s->v, s->n * sizeof(double));
        bench_unmap(s->v, s->cap * sizeof(double));
        s->v = nv;
        s->cap *= 2;
    }
    s->v[s->n++] = x;
}

void bench_series_free(struct bench_series *s)
{
    bench_unmap(s->v, s->cap * sizeof(double));
    s->v = NULL;
    s->n = s->cap = 0;
}

void bench_read_mem(struct bench_mem *m)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen("/proc/self/smaps_rollup", "re");
    if (!f)
        return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        long v;
        if (sscanf(line, "Rss: %ld", &v) == 1)
            m->rss_kb = v;
        else if (sscanf(line, "AnonHugePages: %ld", &v) == 1)
            m->anon_huge_kb = v;
        else if (sscanf(line, "ShmemPmdMapped: %ld", &v) == 1)
            m->shmem_pmd_kb = v;
        else if (sscanf(line, "FilePmdMapped: %ld", &v) == 1)
            m->file_pmd_kb = v;
    }
    fclose(f);
}

long bench_maxrss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

static void write_array(FILE *out, const struct bench_series *s)
{
    fputc('[', out);
    for (size_t i = 0; s && i < s->n; i++)
        fprintf(out, "%s%.6g", i ? "," : "", s->v[i]);
    fputc(']', out);
}

static void emit_array(const struct bench_series *s)
{
    write_array(stdout, s);
}

int bench_extra_series(char *extra, size_t cap, const char *name, const struct bench_series *s)
{
    char *field = NULL;
    size_t len = 0, used = strlen(extra);
    FILE *f = open_memstream(&field, &len);
    if (!f)
        return -1;
    fprintf(f, "%s\"%s\":", used ? "," : "", name);
    write_array(f, s);
    if (fclose(f) != 0 || used + len + 1 > cap) {
        free(field);
        return -1;
    }
    memcpy(extra + used, field, len + 1);
    free(field);
    return 0;
}

static void emit_string(const char *s)
{
    putchar('"');
    for (; s && *s; s++) {
        if (*s == '"' || *s == '\\')
            putchar('\\');
        if ((unsigned char)*s >= 0x20)
            putchar(*s);
    }
    putchar('"');
}

void bench_emit(const char *bench, const char *casename, const char *unit,
                const struct bench_series *samples, const struct bench_series *floor,
                const char *extra)
{
    printf("{\"bench\":");
    emit_string(bench);
    printf(",\"case\":");
    emit_string(casename);
    printf(",\"unit\":");
    emit_string(unit);
    printf(",\"malloc_from\":");
    emit_string(bench_check_preload());
    printf(",\"samples\":");
    emit_array(samples);
    if (floor) {
        printf(",\"floor\":");
        emit_array(floor);
    }
    if (extra && *extra)
        printf(",%s", extra);
    printf("}\n");
    fflush(stdout);
}

long bench_arg_text(const char *text, const char *what)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 0) {
        fprintf(stderr, "bench: bad %s '%s'\n", what, text);
        exit(2);
    }
    return v;
}

long bench_arg(int argc, char **argv, int i, long dflt)
{
    return i < argc ? bench_arg_text(argv[i], "argument") : dflt;
}
