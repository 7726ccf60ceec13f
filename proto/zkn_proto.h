/* The zk-nalloc wire protocol, shared by zknallocd, libzknalloc and zknallocctl.
 * Every message is documented in proto/PROTOCOL.md; keep the two in step.
 *
 * Nothing here allocates: the client library runs inside malloc. */
#ifndef ZKN_PROTO_H
#define ZKN_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define ZKN_PROTO_MAGIC 0x314e4b5au /* "ZKN1" read as little-endian bytes */
/* Version 2: LEND never waits for a region to be made (ERROR not_warm), and
 * RETURN can FORGET regions another process may still map. A version 1 peer
 * would re-lend such regions, so version 1 is no longer spoken. */
#define ZKN_PROTO_VERSION 2u
#define ZKN_PROTO_MIN_VERSION 2u

/* Limits both sides enforce. A frame is one SOCK_SEQPACKET message. */
#define ZKN_MAX_FRAME 65536u          /* header + payload */
#define ZKN_MAX_PAYLOAD (ZKN_MAX_FRAME - sizeof(struct zkn_hdr))
#define ZKN_MAX_REGIONS_PER_REPLY 16u /* fds per REGIONS frame */
#define ZKN_MAX_RETURN_IDS 256u       /* ids per RETURN frame */
#define ZKN_MAX_ERROR_TEXT 200u

enum zkn_msg_type {
    ZKN_MSG_HELLO = 1,       /* client -> daemon */
    ZKN_MSG_HELLO_OK = 2,    /* daemon -> client */
    ZKN_MSG_LEND = 3,        /* client -> daemon */
    ZKN_MSG_REGIONS = 4,     /* daemon -> client, with fds */
    ZKN_MSG_RETURN = 5,      /* client -> daemon */
    ZKN_MSG_RETURN_OK = 6,   /* daemon -> client */
    ZKN_MSG_STATS = 7,       /* client -> daemon */
    ZKN_MSG_STATS_REPLY = 8, /* daemon -> client, JSON text */
    ZKN_MSG_ERROR = 9,       /* daemon -> client */
    ZKN_MSG_TRIM = 10,       /* client -> daemon */
    ZKN_MSG_TRIM_OK = 11,    /* daemon -> client */
    ZKN_MSG_PING = 12,       /* client -> daemon, answered by PONG */
    ZKN_MSG_PONG = 13,
};

enum zkn_err_code {
    ZKN_E_MALFORMED = 1,     /* frame shorter/longer than its type demands, bad magic */
    ZKN_E_VERSION = 2,       /* no common protocol version */
    ZKN_E_BAD_TYPE = 3,      /* unknown or direction-wrong message type */
    ZKN_E_NEED_HELLO = 4,    /* request before HELLO */
    ZKN_E_BAD_CLASS = 5,     /* size class out of range */
    ZKN_E_CLIENT_CAP = 6,    /* lease would exceed the per-client byte or count cap */
    ZKN_E_NOMEM = 7,         /* the daemon could not create a region */
    ZKN_E_UNKNOWN_ID = 8,    /* RETURN of an id this client does not hold */
    ZKN_E_UNEXPECTED_FD = 9, /* a client sent file descriptors */
    ZKN_E_BUSY = 10,         /* too many clients or requests in flight */
    ZKN_E_DENIED = 11,       /* the request needs the daemon's uid or root */
    ZKN_E_NOT_WARM = 12,     /* no region of the class is ready now; the daemon prepares some */
};

/* All integers are in host byte order: both peers share one host. */
struct zkn_hdr {
    uint32_t magic;
    uint16_t version;
    uint16_t type;
    uint32_t length; /* payload bytes after this header */
    uint32_t request_id;
};

struct zkn_hello {
    uint16_t min_version;
    uint16_t max_version;
    uint32_t flags; /* none defined; must be 0 */
};

struct zkn_hello_ok {
    uint16_t version;
    uint16_t class_count;
    uint32_t max_regions_per_reply;
    uint64_t client_cap_bytes;
    uint32_t daemon_pid;
    uint32_t backing; /* enum zkn_backing */
};

enum zkn_backing {
    ZKN_BACKING_MEMFD_THP = 1,   /* memfd + MADV_HUGEPAGE, shmem THP on */
    ZKN_BACKING_TMPFS_HUGE = 2,  /* O_TMPFILE on a huge=always tmpfs */
    ZKN_BACKING_HUGETLB = 3,     /* memfd with MFD_HUGETLB, reserved pages */
    ZKN_BACKING_MEMFD_4K = 4,    /* plain memfd, 4 KiB pages */
    ZKN_BACKING_MEMFD_COLLAPSE = 5, /* memfd whose pages the daemon collapsed
                                       into huge pages (MADV_COLLAPSE), shmem THP off */
};
/* Only ZKN_BACKING_MEMFD_4K lends regions without huge pages. */

#define ZKN_LEND_ZEROED 1u /* every region must be all zero */
struct zkn_lend {
    uint16_t size_class;
    uint16_t count;    /* 1..ZKN_MAX_REGIONS_PER_REPLY: wanted now */
    uint32_t flags;    /* ZKN_LEND_* */
    uint32_t demand;   /* regions of the class the client expects to want
                          soon, for the daemon to keep ready; 0: count */
    uint32_t reserved; /* 0 */
};

#define ZKN_REGION_CLEAN 1u /* contents are all zero */
struct zkn_region_desc {
    uint64_t id;
    uint64_t size;
    uint16_t size_class;
    uint16_t flags; /* ZKN_REGION_* */
    uint32_t reserved;
};

/* REGIONS payload: this, then count descriptors; fd i belongs to descriptor i. */
struct zkn_regions {
    uint32_t count;
    uint32_t reserved;
};

/* RETURN payload: this, then count uint64 ids. */
#define ZKN_RETURN_FORGET 1u /* another process may still map these (a fork child):
                                close them, never zero, pool or re-lend them */
struct zkn_return {
    uint32_t count;
    uint32_t flags; /* ZKN_RETURN_* */
};

struct zkn_return_ok {
    uint32_t count;
    uint32_t reserved;
};

struct zkn_trim {
    uint64_t target_bytes; /* shrink idle pool to at most this */
};

struct zkn_trim_ok {
    uint64_t freed_bytes;
    uint64_t pool_bytes;
};

/* ERROR payload: this, then `length - sizeof` bytes of UTF-8 text, no NUL. */
struct zkn_error {
    uint32_t code;
    uint32_t reserved;
};

_Static_assert(sizeof(struct zkn_hdr) == 16, "wire layout");
_Static_assert(sizeof(struct zkn_hello) == 8, "wire layout");
_Static_assert(sizeof(struct zkn_hello_ok) == 24, "wire layout");
_Static_assert(sizeof(struct zkn_lend) == 16, "wire layout");
_Static_assert(sizeof(struct zkn_region_desc) == 24, "wire layout");
_Static_assert(sizeof(struct zkn_trim_ok) == 16, "wire layout");

const char *zkn_msg_type_name(uint16_t type);
const char *zkn_err_name(uint32_t code);
const char *zkn_backing_name(uint32_t backing);

/* Fill a header. */
void zkn_hdr_init(struct zkn_hdr *h, uint16_t type, uint32_t length, uint32_t request_id);

/* Check a received frame of `len` bytes: magic, version, that length matches.
 * Returns 0 or a ZKN_E_* code. Does not judge the type. */
int zkn_hdr_check(const void *frame, size_t len);

/* Expected payload size for fixed-size messages, or -1 for variable ones. */
long zkn_fixed_payload_size(uint16_t type);
/* 1 for the messages a client sends (HELLO, LEND, RETURN, STATS, TRIM, PING). */
int zkn_msg_is_request(uint16_t type);

#endif
