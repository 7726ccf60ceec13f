/* Whom a client trusts with its heap. A daemon at the client's socket path
 * gets to see and write every block it lends, so before the first byte is
 * shared the client checks, with no malloc (this runs inside it):
 *   - the socket's directory: owned by a trusted uid (root, our euid, the
 *     uid in ZK_NALLOC_DAEMON_UID), or by the uid root made it for (its
 *     parent is root's and writable by nobody else, like /run/zknalloc), and
 *     not writable by others. A directory another user made in /tmp fails;
 *   - the peer (SO_PEERCRED): root, our euid, ZK_NALLOC_DAEMON_UID, or the
 *     owner of that directory;
 *   - every received fd: a regular file on tmpfs/shmem or hugetlbfs of the
 *     announced size, sealed against shrinking and growing unless the daemon
 *     announced the tmpfs backing, whose files cannot be sealed.
 * Anything else: one log line, private memory, nothing shared.
 * Also here: telling one daemon instance from the next, whose ids must never
 * receive the earlier one's RETURNs. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "env.h"
#include "internal.h"
#include "os.h"
#include "zkn_proto.h"

#define TMPFS_FS_MAGIC 0x01021994
#define HUGETLBFS_FS_MAGIC 0x958458f6

/* ZK_NALLOC_DAEMON_UID: a numeric uid (no name lookup: that would allocate).
 * (uid_t)-1 when unset or rejected (then it trusts no further uid). */
static uid_t configured_uid(void)
{
    return (uid_t)zkn__env_uint("ZK_NALLOC_DAEMON_UID", 0, UINT32_MAX - 1, UINT32_MAX);
}

static int uid_trusted(uid_t u)
{
    return u == 0 || u == geteuid() || u == configured_uid();
}

/* Cuts path at its last '/', into buf; "" for a path without one. */
static void dir_of(const char *path, char *buf, size_t cap)
{
    const char *slash = strrchr(path, '/');
    size_t n = slash ? (size_t)(slash - path) : 0;
    if (slash == path)
        n = 1; /* "/sock" lives in "/" */
    if (n >= cap)
        n = 0;
    memcpy(buf, path, n);
    buf[n] = '\0';
}

int zkn__trust_socket_dir(const char *sock_path, uid_t *dir_owner)
{
    char dir[256], parent[256];
    struct stat st, pst;
    dir_of(sock_path, dir, sizeof dir);
    if (!dir[0] || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || (st.st_mode & S_IWOTH))
        return -1;
    *dir_owner = st.st_uid;
    if (uid_trusted(st.st_uid))
        return 0;
    /* Not ours: acceptable when only root could have made it and handed it
     * to its owner (systemd's RuntimeDirectory= under /run, say). */
    dir_of(dir, parent, sizeof parent);
    if (!parent[0] || stat(parent, &pst) != 0 || pst.st_uid != 0 ||
        (pst.st_mode & (S_IWGRP | S_IWOTH)))
        return -1;
    return 0;
}

int zkn__trust_peer(int sock, uid_t dir_owner)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) != 0)
        return -1;
    return uid_trusted(cr.uid) || cr.uid == dir_owner ? 0 : -1;
}

static int trust_region_fd(int fd, uint64_t size, uint32_t backing)
{
    struct stat st;
    struct statfs fs;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != size)
        return -1;
    if (fstatfs(fd, &fs) != 0 ||
        (fs.f_type != TMPFS_FS_MAGIC && fs.f_type != HUGETLBFS_FS_MAGIC))
        return -1;
    if (backing == ZKN_BACKING_TMPFS_HUGE)
        return 0;
    int seals = fcntl(fd, F_GET_SEALS);
    const int need = F_SEAL_SHRINK | F_SEAL_GROW;
    return seals >= 0 && (seals & need) == need ? 0 : -1;
}

int zkn__trust_regions(const char *frame, size_t len, const int *fds, size_t nfds, int c,
                       int asked, uint32_t backing, struct zkn__lent *out)
{
    struct zkn_hdr h;
    struct zkn_regions r = {0};
    memcpy(&h, frame, sizeof h);
    if (len >= sizeof h + sizeof r)
        memcpy(&r, frame + sizeof h, sizeof r);
    if (h.type != ZKN_MSG_REGIONS || r.count == 0 || r.count > (uint32_t)asked ||
        r.count != nfds || len != sizeof h + sizeof r + r.count * sizeof(struct zkn_region_desc))
        return -1;
    for (uint32_t i = 0; i < r.count; i++) {
        struct zkn_region_desc d;
        memcpy(&d, frame + sizeof h + sizeof r + i * sizeof d, sizeof d);
        if (d.size != zkn_class_size(c) || d.size_class != c ||
            trust_region_fd(fds[i], d.size, backing) != 0) {
            zkn__log_once("zknalloc: zknallocd lent a file that is not a sealed region of the "
                          "size it announced; not using it\n");
            return -2;
        }
        out[i].fd = fds[i];
        out[i].id = d.id;
        out[i].clean = (d.flags & ZKN_REGION_CLEAN) != 0;
    }
    return (int)r.count;
}

/* The identity of the daemon process at the other end: its pid as we see it
 * (SO_PEERCRED) and its start time from /proc, so a restarted daemon that got
 * the same pid (pid 1 in a container, say) is still a new instance whose ids
 * must never receive our old RETURNs. Without /proc, the socket file's inode
 * stands in (a restarted daemon binds a new one). */
void zkn__daemon_instance(int s, const char *path, uint64_t out[2])
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    out[0] = out[1] = 0;
    if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) == 0 && cr.pid > 0) {
        char name[40], buf[512];
        out[0] = (uint64_t)cr.pid;
        /* "/proc/%d/stat" by hand: no stdio in here. */
        char digits[24], *d = zkn__fmt_u64(digits, (uint64_t)cr.pid);
        size_t n = 0;
        for (const char *q = "/proc/"; *q; q++)
            name[n++] = *q;
        while (*d)
            name[n++] = *d++;
        for (const char *q = "/stat"; *q; q++)
            name[n++] = *q;
        name[n] = '\0';
        int fd = open(name, O_RDONLY | O_CLOEXEC);
        ssize_t r = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
        if (fd >= 0)
            close(fd);
        if (r > 0) {
            buf[r] = '\0';
            char *p = strrchr(buf, ')'); /* the command name may hold spaces */
            /* After ") ": state is field 3, starttime field 22. */
            for (int field = 2; p && *p && field < 22; field++)
                p = strchr(p + 1, ' ');
            if (p && *p) {
                uint64_t v = 0;
                for (p++; *p >= '0' && *p <= '9'; p++)
                    v = v * 10 + (uint64_t)(*p - '0');
                out[1] = v;
            }
        }
    }
    struct stat st;
    if (out[1] == 0 && stat(path, &st) == 0)
        out[1] = ((uint64_t)st.st_dev << 32) ^ (uint64_t)st.st_ino;
}
