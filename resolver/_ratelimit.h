/* Per-client rate limiting for the UDP fast path: the C twin of resolver/ratelimit.py.
 *
 * A token bucket per client prefix (IPv4 /v4_prefix, IPv6 /v6_prefix): `burst` tokens, refilled
 * at `rate` per second; a query takes one. A client with no token left is dropped, except every
 * `slip`-th denied query, answered with an empty truncated reply (TC=1) so a real client retries
 * over TCP while a spoofed victim gets nothing larger than the query (RRL-style slip). At most
 * `max_clients` buckets: when the table is full and a new client comes, it is emptied (every
 * client starts again with a full bucket), a bound the Python twin applies identically.
 * Both take the same decisions, in the same floating-point steps, for the same (client, time)
 * sequence; tests/test_resolver_ratelimit.py checks it.
 */
#include <math.h>
#include <stdlib.h>

enum { RL_ALLOW = 0, RL_DROP = 1, RL_SLIP = 2 };

typedef struct {
    uint8_t used;
    uint8_t key[17]; /* 4 or 6, then the masked address */
    uint32_t denied;
    double tokens, last;
} RlSlot;

typedef struct {
    RlSlot *slots;
    size_t cap, count, max_clients;
    double rate, burst;
    int v4_prefix, v6_prefix, slip;
    unsigned long long dropped, slipped;
} RateLimiter;

static RateLimiter *rl_new(double rate, double burst, int v4_prefix, int v6_prefix, int slip,
                           size_t max_clients) {
    RateLimiter *rl = calloc(1, sizeof *rl);
    if (!rl) return NULL;
    size_t cap = 16;
    while (cap < 2 * max_clients) cap <<= 1;
    rl->slots = calloc(cap, sizeof *rl->slots);
    if (!rl->slots) {
        free(rl);
        return NULL;
    }
    rl->cap = cap;
    rl->max_clients = max_clients;
    rl->rate = rate;
    rl->burst = burst;
    rl->v4_prefix = v4_prefix;
    rl->v6_prefix = v6_prefix;
    rl->slip = slip;
    return rl;
}

static void rl_free(RateLimiter *rl) {
    if (rl) {
        free(rl->slots);
        free(rl);
    }
}

static void rl_mask(uint8_t *addr, int len, int prefix) {
    for (int i = 0; i < len; i++) {
        int bits = prefix - 8 * i;
        addr[i] &= bits >= 8 ? 0xFF : bits <= 0 ? 0 : (uint8_t)(0xFF << (8 - bits));
    }
}

/* The bucket key of a client address; 0 for a family we do not limit. */
static int rl_key(const RateLimiter *rl, const struct sockaddr_storage *sa, uint8_t key[17]) {
    memset(key, 0, 17);
    if (sa->ss_family == AF_INET) {
        key[0] = 4;
        memcpy(key + 1, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        rl_mask(key + 1, 4, rl->v4_prefix);
        return 1;
    }
    if (sa->ss_family == AF_INET6) {
        key[0] = 6;
        memcpy(key + 1, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
        rl_mask(key + 1, 16, rl->v6_prefix);
        return 1;
    }
    return 0;
}

static int rl_check_key(RateLimiter *rl, const uint8_t key[17], double now) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < 17; i++) h = (h ^ key[i]) * 1099511628211ULL;
    size_t mask = rl->cap - 1, i = (size_t)h & mask;
    while (rl->slots[i].used && memcmp(rl->slots[i].key, key, 17) != 0) i = (i + 1) & mask;
    RlSlot *s = &rl->slots[i];
    if (!s->used) {
        if (rl->count >= rl->max_clients) {
            memset(rl->slots, 0, rl->cap * sizeof *rl->slots);
            rl->count = 0;
            i = (size_t)h & mask;
            s = &rl->slots[i];
        }
        s->used = 1;
        memcpy(s->key, key, 17);
        s->tokens = rl->burst;
        s->last = now;
        s->denied = 0;
        rl->count++;
    }
    double tokens = s->tokens + (now - s->last) * rl->rate;
    if (tokens > rl->burst) tokens = rl->burst;
    s->last = now;
    if (tokens >= 1.0) {
        s->tokens = tokens - 1.0;
        return RL_ALLOW;
    }
    s->tokens = tokens;
    s->denied++;
    if (rl->slip && s->denied % (uint32_t)rl->slip == 0) {
        rl->slipped++;
        return RL_SLIP;
    }
    rl->dropped++;
    return RL_DROP;
}

static int rl_check(RateLimiter *rl, const struct sockaddr_storage *sa, double now) {
    uint8_t key[17];
    if (!rl_key(rl, sa, key)) return RL_ALLOW;
    return rl_check_key(rl, key, now);
}
