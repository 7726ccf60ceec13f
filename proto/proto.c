/* Header helpers and names for the wire protocol (see PROTOCOL.md). */
#include "zkn_proto.h"

#include <string.h>

const char *zkn_msg_type_name(uint16_t type)
{
    switch (type) {
    case ZKN_MSG_HELLO: return "HELLO";
    case ZKN_MSG_HELLO_OK: return "HELLO_OK";
    case ZKN_MSG_LEND: return "LEND";
    case ZKN_MSG_REGIONS: return "REGIONS";
    case ZKN_MSG_RETURN: return "RETURN";
    case ZKN_MSG_RETURN_OK: return "RETURN_OK";
    case ZKN_MSG_STATS: return "STATS";
    case ZKN_MSG_STATS_REPLY: return "STATS_REPLY";
    case ZKN_MSG_ERROR: return "ERROR";
    case ZKN_MSG_TRIM: return "TRIM";
    case ZKN_MSG_TRIM_OK: return "TRIM_OK";
    case ZKN_MSG_PING: return "PING";
    case ZKN_MSG_PONG: return "PONG";
    default: return "UNKNOWN";
    }
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
    switch (type) {
    case ZKN_MSG_HELLO: return sizeof(struct zkn_hello);
    case ZKN_MSG_HELLO_OK: return sizeof(struct zkn_hello_ok);
    case ZKN_MSG_LEND: return sizeof(struct zkn_lend);
    case ZKN_MSG_RETURN_OK: return sizeof(struct zkn_return_ok);
    case ZKN_MSG_STATS: return 0;
    case ZKN_MSG_TRIM: return sizeof(struct zkn_trim);
    case ZKN_MSG_TRIM_OK: return sizeof(struct zkn_trim_ok);
    case ZKN_MSG_PING: return 0;
    case ZKN_MSG_PONG: return 0;
    default: return -1;
    }
}
