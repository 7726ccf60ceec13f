/* Header helpers and names for the wire protocol (see PROTOCOL.md). */
#include "zkn_proto.h"

#include <string.h>

/* Every message once: its name, its payload size (-1: variable) and who sends
 * it. The daemon's dispatch, zknallocctl and the names in logs all read this. */
static const struct {
    const char *name;
    long fixed_size;
    int is_request; /* client -> daemon */
} messages[] = {
    [ZKN_MSG_HELLO] = {"HELLO", sizeof(struct zkn_hello), 1},
    [ZKN_MSG_HELLO_OK] = {"HELLO_OK", sizeof(struct zkn_hello_ok), 0},
    [ZKN_MSG_LEND] = {"LEND", sizeof(struct zkn_lend), 1},
    [ZKN_MSG_REGIONS] = {"REGIONS", -1, 0},
    [ZKN_MSG_RETURN] = {"RETURN", -1, 1},
    [ZKN_MSG_RETURN_OK] = {"RETURN_OK", sizeof(struct zkn_return_ok), 0},
    [ZKN_MSG_STATS] = {"STATS", 0, 1},
    [ZKN_MSG_STATS_REPLY] = {"STATS_REPLY", -1, 0},
    [ZKN_MSG_ERROR] = {"ERROR", -1, 0},
    [ZKN_MSG_TRIM] = {"TRIM", sizeof(struct zkn_trim), 1},
    [ZKN_MSG_TRIM_OK] = {"TRIM_OK", sizeof(struct zkn_trim_ok), 0},
    [ZKN_MSG_PING] = {"PING", 0, 1},
    [ZKN_MSG_PONG] = {"PONG", 0, 0},
};

static int known(uint16_t type)
{
    return type < sizeof messages / sizeof messages[0] && messages[type].name;
}

const char *zkn_msg_type_name(uint16_t type)
{
    return known(type) ? messages[type].name : "UNKNOWN";
}

int zkn_msg_is_request(uint16_t type)
{
    return known(type) && messages[type].is_request;
}

const char *zkn_err_name(uint32_t code)
{
    switch (code) {
    case ZKN_E_MALFORMED: return "malformed";
    case ZKN_E_VERSION: return "version";
    case ZKN_E_BAD_TYPE: return "bad_type";
    case ZKN_E_NEED_HELLO: return "need_hello";
    case ZKN_E_BAD_CLASS: return "bad_class";
    case ZKN_E_CLIENT_CAP: return "client_cap";
    case ZKN_E_NOMEM: return "nomem";
    case ZKN_E_UNKNOWN_ID: return "unknown_id";
    case ZKN_E_UNEXPECTED_FD: return "unexpected_fd";
    case ZKN_E_BUSY: return "busy";
    case ZKN_E_DENIED: return "denied";
    case ZKN_E_NOT_WARM: return "not_warm";
    default: return "unknown";
    }
}

const char *zkn_backing_name(uint32_t backing)
{
    switch (backing) {
    case ZKN_BACKING_MEMFD_THP: return "memfd-thp";
    case ZKN_BACKING_TMPFS_HUGE: return "tmpfs-huge";
    case ZKN_BACKING_HUGETLB: return "hugetlb";
    case ZKN_BACKING_MEMFD_4K: return "memfd-4k";
    case ZKN_BACKING_MEMFD_COLLAPSE: return "memfd-collapse";
    default: return "unknown";
    }
}

void zkn_hdr_init(struct zkn_hdr *h, uint16_t type, uint32_t length, uint32_t request_id)
{
    h->magic = ZKN_PROTO_MAGIC;
    h->version = ZKN_PROTO_VERSION;
    h->type = type;
    h->length = length;
    h->request_id = request_id;
}

int zkn_hdr_check(const void *frame, size_t len)
{
    struct zkn_hdr h;
    if (len < sizeof h || len > ZKN_MAX_FRAME)
        return ZKN_E_MALFORMED;
    memcpy(&h, frame, sizeof h);
    if (h.magic != ZKN_PROTO_MAGIC)
        return ZKN_E_MALFORMED;
    if (h.length != len - sizeof h)
        return ZKN_E_MALFORMED;
    /* HELLO may carry any version: it is how versions are negotiated. */
    if (h.type != ZKN_MSG_HELLO &&
        (h.version < ZKN_PROTO_MIN_VERSION || h.version > ZKN_PROTO_VERSION))
        return ZKN_E_VERSION;
    return 0;
}

long zkn_fixed_payload_size(uint16_t type)
{
    return known(type) ? messages[type].fixed_size : -1;
}
