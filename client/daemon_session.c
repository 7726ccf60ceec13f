/* Connecting to zknallocd: the socket path, whom to trust, HELLO within the
 * wait, and a fork child's fresh start (see daemon_core.h). */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "daemon_core.h"
#include "env.h"
#include "os.h"
#include "sockpath.h"
#include "wire.h"

static struct zkn__link_state *const L = &zkn__link;

static int hello_arrived(void) { return L->hello_rid == 0; }

int zkn__link_wait_ms(void)
{
    static int ms;
    if (!ms)
        ms = (int)zkn__env_uint("ZK_NALLOC_DAEMON_WAIT_MS", 1, WAIT_MS_MAX, WAIT_MS_DEFAULT);
    return ms;
}

/* Not connected: try to be, within zkn__link_wait_ms(). 0 when connected. */
int zkn__link_connect(void)
{
    const char *path = L->link_path;
    if (L->sock < 0) {
        if (zkn_socket_path(L->link_path, sizeof L->link_path, ZKN_PATH_CLIENT) != 0)
            return -1;
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        uid_t dir_owner;
        if (zkn__trust_socket_dir(path, &dir_owner) != 0) {
            /* Missing (no daemon) or not safe: either way nobody to talk to. */
            struct stat st;
            if (lstat(path, &st) == 0)
                zkn__log_once("zknalloc: not trusting the zknallocd socket (its directory is "
                             "not owned by root, this user or ZK_NALLOC_DAEMON_UID, or is "
                             "writable by others); large blocks come from private memory\n");
            return -1;
        }
        memcpy(a.sun_path, path, strlen(path) + 1);
        int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s < 0)
            return -1;
        /* A Unix socket connects at once or fails (EAGAIN: backlog full). */
        if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
            close(s);
            return -1;
        }
        if (zkn__trust_peer(s, dir_owner) != 0) {
            zkn__log_once("zknalloc: the process serving the zknallocd socket is not root, "
                         "this user or ZK_NALLOC_DAEMON_UID; large blocks come from private "
                         "memory\n");
            close(s);
            return -1;
        }
        L->sock = s;
        L->owner_pid = getpid();
        L->outstanding = 0;
        struct zkn_hello h = {.min_version = ZKN_PROTO_MIN_VERSION,
                              .max_version = ZKN_PROTO_VERSION};
        if (zkn__link_send_frame(ZKN_MSG_HELLO, &h, sizeof h, &L->hello_rid) != 0) {
            zkn__link_disconnect();
            return -1;
        }
    }
    if (!L->hello_rid)
        return atomic_load(&L->connected) ? 0 : -1;
    int rc = zkn__link_wait(hello_arrived, zkn__link_wait_ms());
    if (rc == 0) /* the late HELLO_OK is read by whoever comes next */
        zkn__link_be_quiet(zkn__now_ns());
    return atomic_load(&L->connected) ? 0 : -1;
}

void zkn__daemon_atfork_child(void)
{
    pthread_mutex_init(&L->dlock, NULL);
    zkn__queue_child_reset();
    zkn__link_reset();
}
