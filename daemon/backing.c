/* Backing selection and the memory operations that depend on it.
 *
 * Order: an explicit --hugetlb or --backing-dir; memfd + MADV_HUGEPAGE when
 * shmem THP is enabled; memfd + MADV_COLLAPSE (works with shmem THP at
 * "never", needs no privilege and keeps seals); a private huge=always tmpfs
 * when the daemon may mount one; plain memfd with one warning naming the fix. */
#include "backing.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "log.h"
#include "sizeclass.h"
#include "zkn_proto.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_NOEXEC_SEAL
#define MFD_NOEXEC_SEAL 0x0008U
#endif
#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif

#define SEALS (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)

static void read_thp_mode(const char *path, char *out, size_t cap)
{
    char buf[256];
    FILE *f = fopen(path, "r");
    snprintf(out, cap, "unavailable");
    if (!f)
        return;
    if (fgets(buf, sizeof buf, f)) {
        char *open = strchr(buf, '['), *close = open ? strchr(open, ']') : NULL;
        if (open && close && (size_t)(close - open - 1) < cap) {
            memcpy(out, open + 1, (size_t)(close - open - 1));
            out[close - open - 1] = '\0';
        }
    }
    fclose(f);
}

static int memfd_flags_extra = MFD_NOEXEC_SEAL;

static int new_memfd(const char *name, unsigned extra)
{
    int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | memfd_flags_extra | extra);
    if (fd < 0 && errno == EINVAL && memfd_flags_extra) {
        /* Kernels before 6.3 do not know MFD_NOEXEC_SEAL. */
        memfd_flags_extra = 0;
        fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | extra);
    }
    return fd < 0 ? -errno : fd;
}

int backing_new_file(const struct backing *b, uint64_t size, const char *name)
{
    int fd;
    if (b->dirfd >= 0 && size >= ZKN_HUGE_PAGE_SIZE) {
        fd = openat(b->dirfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
    } else {
        unsigned extra = 0;
        if (b->kind == ZKN_BACKING_HUGETLB && size % ZKN_HUGE_PAGE_SIZE == 0)
            extra = MFD_HUGETLB;
        fd = new_memfd(name, extra);
        if (fd < 0)
            return fd;
    }
    if (ftruncate(fd, (off_t)size) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    /* Sealed before any client sees it: nobody can resize it and SIGBUS us. */
    if (b->dirfd < 0 || size < ZKN_HUGE_PAGE_SIZE) {
        if (fcntl(fd, F_ADD_SEALS, SEALS) < 0) {
            int e = errno;
            close(fd);
            return -e;
        }
    }
    return fd;
}

static int touch_range(void *p, uint64_t len)
{
    if (madvise(p, len, MADV_POPULATE_WRITE) == 0)
        return 0;
    return -errno;
}

int backing_warm(const struct backing *b, int fd, void *map, uint64_t size)
{
    if (b->dirfd >= 0 && size >= ZKN_HUGE_PAGE_SIZE) {
        /* Unsealed file: allocate through the file, never by touching. */
        int r = posix_fallocate(fd, 0, (off_t)size);
        return r ? -r : 0;
    }
    if (b->kind == ZKN_BACKING_MEMFD_COLLAPSE && size >= ZKN_HUGE_PAGE_SIZE) {
        /* One present page per 2 MiB is enough for MADV_COLLAPSE to build a
         * whole huge page (the rest is zero-filled): ~15 ms per 128 MiB here,
         * against ~100-300 ms to fault in every 4 KiB page first. */
        for (uint64_t off = 0; off < size; off += ZKN_HUGE_PAGE_SIZE) {
            int r = touch_range((char *)map + off, 4096);
            if (r)
                return r;
        }
        if (madvise(map, size, MADV_COLLAPSE) < 0) {
            /* No free huge page right now: stay 4 KiB but fully resident. */
            log_debug("MADV_COLLAPSE of %llu bytes: %s", (unsigned long long)size,
                      strerror(errno));
        }
    }
    return touch_range(map, size);
}

int backing_zero(const struct backing *b, int fd, void *map, uint64_t size)
{
    if (b->dirfd >= 0 && size >= ZKN_HUGE_PAGE_SIZE) {
        static const char zeros[1 << 16];
        for (uint64_t off = 0; off < size;) {
            uint64_t n = size - off < sizeof zeros ? size - off : sizeof zeros;
            ssize_t w = pwrite(fd, zeros, n, (off_t)off);
            if (w < 0) {
                if (errno == EINTR)
                    continue;
                return -errno;
            }
            if (w == 0)
                return -EIO;
            off += (uint64_t)w;
        }
        return 0;
    }
    memset(map, 0, size);
    return 0;
}

uint64_t backing_huge_mapped_bytes(void)
{
    char line[256];
    uint64_t total = 0;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long long kb;
        if (sscanf(line, "ShmemPmdMapped: %llu kB", &kb) == 1 ||
            sscanf(line, "FilePmdMapped: %llu kB", &kb) == 1)
            total += (uint64_t)kb * 1024;
    }
    fclose(f);
    return total;
}

/* A 2 MiB memfd, touched once and collapsed: proves MADV_COLLAPSE works on
 * shmem here (kernel 6.1+, shmem THP not "deny"). */
static int collapse_works(void)
{
    int fd = new_memfd("zknalloc-probe", 0), ok = 0;
    uint64_t size = ZKN_HUGE_PAGE_SIZE;
    if (fd < 0)
        return 0;
    if (ftruncate(fd, (off_t)size) == 0) {
        char *raw = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (raw != MAP_FAILED) {
            char *al = (char *)(((uintptr_t)raw + size - 1) & ~(uintptr_t)(size - 1));
            if (mmap(al, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == al &&
                touch_range(al, 4096) == 0 && madvise(al, size, MADV_COLLAPSE) == 0)
                ok = 1;
            munmap(raw, 2 * size);
        }
    }
    close(fd);
    return ok;
}

static int open_tmpfs_dir(const char *dir, char *why, size_t cap)
{
    struct statfs sf;
    int fd = open(dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, cap, "%s: %s", dir, strerror(errno));
        return -1;
    }
    if (fstatfs(fd, &sf) < 0 || sf.f_type != TMPFS_MAGIC) {
        snprintf(why, cap, "%s is not a tmpfs", dir);
        close(fd);
        return -1;
    }
    int probe = openat(fd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (probe < 0) {
        snprintf(why, cap, "%s: cannot create files: %s", dir, strerror(errno));
        close(fd);
        return -1;
    }
    close(probe);
    return fd;
}

/* Mounts a huge=always tmpfs visible to this process alone: a new mount
 * namespace, the mount, then a lazy unmount that leaves only our open
 * directory fd holding it. Needs CAP_SYS_ADMIN. */
static int private_huge_mount(void)
{
    char dir[] = "/tmp/zknallocd-XXXXXX";
    int fd = -1;
    if (unshare(CLONE_NEWNS) < 0)
        return -1;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        return -1;
    if (!mkdtemp(dir))
        return -1;
    if (mount("zknalloc", dir, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
              "huge=always,size=100%,mode=0700") == 0) {
        char why[128];
        fd = open_tmpfs_dir(dir, why, sizeof why);
        umount2(dir, MNT_DETACH);
    }
    rmdir(dir);
    return fd;
}

static int shmem_thp_on(const char *mode)
{
    return !strcmp(mode, "always") || !strcmp(mode, "within_size") || !strcmp(mode, "advise") ||
           !strcmp(mode, "force");
}

static long hugetlb_free_pages(void)
{
    char line[128];
    long free_pages = -1;
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "HugePages_Free: %ld", &free_pages) == 1)
            break;
    fclose(f);
    return free_pages;
}

int backing_init(struct backing *b, const struct config *cfg)
{
    char why[200];
    memset(b, 0, sizeof *b);
    b->dirfd = -1;
    b->sealed = 1;
    read_thp_mode("/sys/kernel/mm/transparent_hugepage/enabled", b->thp_anon, sizeof b->thp_anon);
    read_thp_mode("/sys/kernel/mm/transparent_hugepage/shmem_enabled", b->thp_shmem,
                  sizeof b->thp_shmem);

    if (cfg->hugetlb) {
        long free_pages = hugetlb_free_pages();
        if (free_pages <= 0) {
            log_error("--hugetlb: no free reserved huge pages (HugePages_Free is %ld); reserve "
                      "some with: sysctl vm.nr_hugepages=N",
                      free_pages);
            return -1;
        }
        b->kind = ZKN_BACKING_HUGETLB;
        snprintf(b->detail, sizeof b->detail,
                 "hugetlb memfds (%ld reserved 2 MiB pages free at start)", free_pages);
        return 0;
    }
    if (cfg->backing_dir[0]) {
        b->dirfd = open_tmpfs_dir(cfg->backing_dir, why, sizeof why);
        if (b->dirfd < 0) {
            log_error("--backing-dir: %s", why);
            return -1;
        }
        b->kind = ZKN_BACKING_TMPFS_HUGE;
        b->sealed = 0;
        snprintf(b->detail, sizeof b->detail,
                 "files on %.180s (mount it huge=always); tmpfs files cannot be sealed",
                 cfg->backing_dir);
        return 0;
    }
    if (shmem_thp_on(b->thp_shmem)) {
        b->kind = ZKN_BACKING_MEMFD_THP;
        snprintf(b->detail, sizeof b->detail, "memfd + MADV_HUGEPAGE (shmem THP '%s')",
                 b->thp_shmem);
        return 0;
    }
    if (strcmp(b->thp_shmem, "deny") != 0 && collapse_works()) {
        b->kind = ZKN_BACKING_MEMFD_COLLAPSE;
        snprintf(b->detail, sizeof b->detail,
                 "memfd, collapsed into huge pages with MADV_COLLAPSE (shmem THP '%s')",
                 b->thp_shmem);
        return 0;
    }
    if (!cfg->no_private_mount && (b->dirfd = private_huge_mount()) >= 0) {
        b->kind = ZKN_BACKING_TMPFS_HUGE;
        b->sealed = 0;
        snprintf(b->detail, sizeof b->detail,
                 "files on a private huge=always tmpfs; tmpfs files cannot be sealed");
        return 0;
    }
    b->kind = ZKN_BACKING_MEMFD_4K;
    snprintf(b->detail, sizeof b->detail, "plain memfd, 4 KiB pages (shmem THP '%s')",
             b->thp_shmem);
    log_warn("regions get 4 KiB pages, so lending them saves little: enable huge pages for "
             "shared memory (echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled) "
             "or pass --backing-dir with a tmpfs mounted huge=always");
    return 0;
}

void backing_close(struct backing *b)
{
    if (b->dirfd >= 0)
        close(b->dirfd);
    b->dirfd = -1;
}
