/* PROXY protocol v2 for the UDP fast path: the C twin of resolver/proxyv2.py.
 *
 * A datagram from a trusted sender (dnsdist, HAProxy) starts with a PROXY v2 header naming the
 * real client; the ACL and the rate limits apply to that client, the answer goes back to the
 * sender. A trusted sender's datagram without a valid header is dropped (counted as an error);
 * a header from any other sender is refused (dropped, counted). LOCAL (health checks) keeps the
 * sender as the client. Both twins accept and refuse exactly the same bytes.
 */
#define PX_MAX_NETS 64
#define PX_MAX_LEN 512 /* addresses and TLVs after the 16-byte fixed part */

static const uint8_t PX_SIG[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

typedef struct {
    uint32_t v4net[PX_MAX_NETS], v4mask[PX_MAX_NETS];
    uint8_t v6net[PX_MAX_NETS][16];
    int v6len[PX_MAX_NETS], nv4, nv6;
    unsigned long long refused, errors;
} ProxyTrust;

static int px_trusted(const ProxyTrust *p, const struct sockaddr_storage *sa) {
    if (sa->ss_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        for (int i = 0; i < p->nv4; i++)
            if ((a & p->v4mask[i]) == p->v4net[i]) return 1;
        return 0;
    }
    if (sa->ss_family != AF_INET6) return 0;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    for (int i = 0; i < p->nv6; i++) {
        int bits = p->v6len[i], full = bits / 8, rest = bits % 8;
        if (memcmp(a, p->v6net[i], (size_t)full) != 0) continue;
        if (rest && ((a[full] ^ p->v6net[i][full]) & (0xFF << (8 - rest)) & 0xFF)) continue;
        return 1;
    }
    return 0;
}

/* The header length (>= 16) with *client set (left as is for LOCAL), or -1 when malformed. */
static Py_ssize_t px_parse(const uint8_t *d, Py_ssize_t n, struct sockaddr_storage *client) {
    if (n < 16 || memcmp(d, PX_SIG, 12) != 0) return -1;
    int version = d[12] >> 4, cmd = d[12] & 0x0F, af = d[13] >> 4;
    Py_ssize_t len = (Py_ssize_t)(d[14] << 8 | d[15]);
    if (version != 2 || len > PX_MAX_LEN || 16 + len > n) return -1;
    if (cmd == 0) return 16 + len; /* LOCAL */
    if (cmd != 1) return -1;
    if (af == 1 && len >= 12) {
        memset(client, 0, sizeof *client);
        struct sockaddr_in *s4 = (struct sockaddr_in *)client;
        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, d + 16, 4);
        return 16 + len;
    }
    if (af == 2 && len >= 36) {
        memset(client, 0, sizeof *client);
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)client;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, d + 16, 16);
        return 16 + len;
    }
    return -1;
}

/* For one datagram from `sender`: how many leading bytes to skip (0: no header expected), with
 * *client the address the ACL and limits see; -1: drop it (counted). */
static Py_ssize_t px_strip(ProxyTrust *p, const struct sockaddr_storage *sender, const uint8_t *d,
                           Py_ssize_t n, struct sockaddr_storage *client) {
    memcpy(client, sender, sizeof *client);
    if (px_trusted(p, sender)) {
        Py_ssize_t hl = px_parse(d, n, client);
        if (hl < 0) p->errors++;
        return hl;
    }
    if (n >= 12 && memcmp(d, PX_SIG, 12) == 0) {
        p->refused++;
        return -1;
    }
    return 0;
}
