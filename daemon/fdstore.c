/* See fdstore.h. */
#include "fdstore.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "sdnotify.h"

struct save_ctx {
    int stored;
    int failed;
};

static void save_one(void *arg, struct region *r, int clean)
{
    struct save_ctx *ctx = arg;
    char state[128];
    if (ctx->failed)
        return;
    snprintf(state, sizeof state, "FDSTORE=1\nFDNAME=" FDSTORE_PREFIX "%d-%lld-%c",
             r->size_class, r->uid == REGION_UNOWNED ? -1LL : (long long)r->uid,
             clean ? 'c' : 'd');
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
    struct save_ctx ctx = {0, 0};
    pool_for_each_idle(p, save_one, &ctx);
    p->saved += (uint64_t)ctx.stored;
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

static int restore_region(struct pool *p, int fd, const char *name)
{
    int cls;
    long long uid;
    char state;
    struct stat st;
    if (sscanf(name + strlen(FDSTORE_PREFIX), "%d-%lld-%c", &cls, &uid, &state) != 3 ||
        (state != 'c' && state != 'd') || zkn_class_size(cls) == 0 || uid < -1 ||
        uid > (long long)UINT32_MAX - 1)
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
    return pool_adopt(p, r, uid < 0 ? REGION_UNOWNED : (uid_t)uid, state == 'c') == 0 ? 0 : 1;
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
