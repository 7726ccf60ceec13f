/* See fdstore.h. */
#include "fdstore.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"

struct save_ctx {
    int stored;
    int failed;
    uint32_t nonce;
};

static void save_one(void *arg, struct region *r, int clean)
{
    struct save_ctx *ctx = arg;
    char state[128];
    (void)clean; /* the next instance trusts no claim of cleanliness */
    if (ctx->failed)
        return;
    /* One name per region: the manager keeps an fd's first name and removes
     * by name, so shared names would alias regions and pin them. */
    snprintf(state, sizeof state, "FDSTORE=1\nFDNAME=" FDSTORE_PREFIX "%d-%lld-%08x%016llx",
             r->size_class, r->uid == REGION_UNOWNED ? -1LL : (long long)r->uid, ctx->nonce,
             (unsigned long long)r->id);
    int rc = zkn_sd_notify_fds(state, &r->fd, 1);
    if (rc == 1)
        ctx->stored++;
    else if (rc < 0) {
        log_warn("fd store: %s; the pool will start cold", strerror(-rc));
        ctx->failed = 1;
    }
}

int fdstore_save(struct pool *p)
{
    struct save_ctx ctx = {0, 0, 0};
    if (getrandom(&ctx.nonce, sizeof ctx.nonce, GRND_NONBLOCK) != sizeof ctx.nonce)
        ctx.nonce = (uint32_t)getpid() ^ (uint32_t)time(NULL);
    pool_for_each_idle(p, save_one, &ctx);
    pool_count_saved(p, (uint64_t)ctx.stored);
    if (ctx.stored)
        log_info("fd store: %d pooled regions handed to the service manager", ctx.stored);
    return ctx.stored;
}

static int is_listener(int fd)
{
    struct stat st;
    int type = 0, listening = 0;
    socklen_t len = sizeof type;
    if (fstat(fd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return 0;
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        return 0;
    return listening;
}

static int valid_token(const char *t)
{
    if (!*t)
        return 0;
    for (; *t; t++)
        if (!isalnum((unsigned char)*t))
            return 0;
    return 1;
}

/* Returns 0 when pooled, 1 when pool_adopt destroyed it (cap), -1 when the
 * fd is not a region of ours (still open). */
static int restore_region(struct pool *p, int fd, const char *name)
{
    int cls, off = 0;
    long long uid;
    struct stat st;
    if (sscanf(name + strlen(FDSTORE_PREFIX), "%d-%lld-%n", &cls, &uid, &off) != 2 || !off ||
        !valid_token(name + strlen(FDSTORE_PREFIX) + off) || zkn_class_size(cls) == 0 ||
        uid < -1 || uid > (long long)UINT32_MAX - 1)
        return -1;
    /* Trust the file, not the name: exactly the class's size, and sealed
     * unless it came from a tmpfs backing, whose files cannot be sealed. */
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != zkn_class_size(cls))
        return -1;
    int seals = fcntl(fd, F_GET_SEALS);
    int need_seals = p->backing->dirfd < 0 || zkn_class_size(cls) < ZKN_HUGE_PAGE_SIZE;
    if (need_seals && (seals < 0 || (seals & (F_SEAL_SHRINK | F_SEAL_GROW)) !=
                                        (F_SEAL_SHRINK | F_SEAL_GROW)))
        return -1;
    struct region *r = region_from_fd(fd, cls, 0);
    if (!r)
        return -1;
    /* Dirty unless proven clean (no page ever allocated): another manager's
     * copy may have outlived an earlier instance under a stale name. Owned
     * regions go back to their uid's partition, zeroed in the background;
     * unowned ones could go to any uid, so they are zeroed now. */
    int clean = st.st_blocks == 0;
    if (uid < 0 && !clean) {
        int err = backing_zero(p->backing, r->fd, r->map, r->size);
        if (err) {
            log_warn("fd store: zeroing '%s' failed (%s): dropped", name, strerror(-err));
            region_destroy(r);
            return 1;
        }
        clean = 1;
    }
    return pool_adopt(p, r, uid < 0 ? REGION_UNOWNED : (uid_t)uid, clean) == 0 ? 0 : 1;
}

/* The manager's copy would pin the memory after we trim or decay it. */
static void forget_stored(const char *name)
{
    char state[160];
    snprintf(state, sizeof state, "FDSTOREREMOVE=1\nFDNAME=%s", name);
    int rc = zkn_sd_notify(state);
    if (rc < 0)
        log_warn("fd store: cannot remove '%s': %s", name, strerror(-rc));
}

int fdstore_restore(struct pool *p, int *listen_fd)
{
    int n = zkn_sd_listen_fds(1), restored = 0;
    *listen_fd = -1;
    if (n < 0) {
        log_warn("ignoring malformed LISTEN_FDS: %s", strerror(-n));
        return 0;
    }
    for (int i = 0; i < n; i++) {
        int fd = ZKN_SD_LISTEN_FDS_START + i;
        const char *name = zkn_sd_listen_fd_name(i);
        if (*listen_fd < 0 && is_listener(fd)) {
            *listen_fd = fd;
            continue;
        }
        if (name && strncmp(name, FDSTORE_PREFIX, strlen(FDSTORE_PREFIX)) == 0) {
            forget_stored(name);
            int rc = restore_region(p, fd, name);
            if (rc == 0) {
                restored++;
                continue;
            }
            if (rc > 0)
                continue; /* pool_adopt destroyed it (cap): fd already closed */
            log_warn("fd store: dropping '%s': not a region this daemon can use", name);
        } else {
            log_warn("ignoring passed fd %d ('%s')", fd, name ? name : "?");
        }
        close(fd);
    }
    if (restored)
        log_info("fd store: %d warm regions restored", restored);
    return restored;
}
