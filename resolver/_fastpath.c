/* The resolver's compiled UDP fast path (docs/resolver.md, "Fast path").
 *
 * A C transcription of what `resolver.engine.Resolver.handle` does for a UDP query that needs
 * no upstream, byte for byte: parse the question on the raw bytes, then answer malformed
 * queries (FORMERR/NOTIMP/BADVERS), ACL refusals, cache hits (id, question case and TTLs
 * patched) and listed names (SHA-256 of the name's suffixes looked up in the list's packed,
 * sorted digest column). Everything else (misses, answers that need truncation, names with a
 * dot inside a label) goes back to Python, which stays the reference: tests feed both the same
 * corpus and require identical bytes. While the resolver diverts hosts to the URL proxy
 * (resolver/divert.py), a name with a URLHOST suffix is handed to Python too (never answered
 * from the cache), which decides whether to divert it.
 *
 *   ListIndex(digests, ids, kinds)  a bucket index over ListState's packed columns (no copy)
 *   Engine(max_entries, max_bytes)  the response cache (LRU, bounded by entries and bytes, the
 *                                   same interface as resolver.cache.ResponseCache), the list
 *                                   in force, the ACL, counters, and `drain(fd)`: recvmmsg a
 *                                   batch, answer, sendmmsg; returns what Python must handle.
 *
 * SHA-256 is embedded (FIPS 180-4, portable C) so the module needs only a C compiler and the
 * Python headers: no libcrypto at build or run time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "_proxy.h"
#include "_ratelimit.h"

/* ------------------------------------------------------------------------------------------ */
/* SHA-256 */

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
    0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
    0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
    0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
    0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
    0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
    0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
    0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(uint32_t h[8], const uint8_t *p) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) +
                      K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b;
        b = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

static void sha256(const uint8_t *msg, size_t len, uint8_t out[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha256_block(h, msg + i);
    uint8_t buf[128];
    size_t rem = len - i;
    memcpy(buf, msg + i, rem);
    buf[rem] = 0x80;
    size_t total = rem + 9 <= 64 ? 64 : 128;
    memset(buf + rem + 1, 0, total - rem - 1);
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) buf[total - 1 - j] = (uint8_t)(bits >> (8 * j));
    sha256_block(h, buf);
    if (total == 128) sha256_block(h, buf + 64);
    for (int j = 0; j < 8; j++) {
        out[4 * j] = (uint8_t)(h[j] >> 24);
        out[4 * j + 1] = (uint8_t)(h[j] >> 16);
        out[4 * j + 2] = (uint8_t)(h[j] >> 8);
        out[4 * j + 3] = (uint8_t)h[j];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Small helpers */

static inline uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(uint8_t *p, unsigned v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline uint8_t lower(uint8_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------------------------ */
/* ListIndex: lookups in ListState's packed columns (sorted by digest) */

#define BUCKET_BITS 16

typedef struct {
    PyObject_HEAD PyObject *digests, *ids, *kinds;
    const uint8_t *d, *id, *k;
    Py_ssize_t n, domains;
    uint32_t *bucket; /* first index whose digest's top 16 bits are >= b; 2^16 + 1 slots */
} ListIndex;

static PyTypeObject ListIndexType;

static int index_build(ListIndex *self) {
    self->bucket = PyMem_RawMalloc(sizeof(uint32_t) * ((1 << BUCKET_BITS) + 1));
    if (!self->bucket) {
        PyErr_NoMemory();
        return -1;
    }
    const uint8_t *d = self->d, *k = self->k;
    Py_ssize_t n = self->n, domains = 0, prev_ok = 1;
    Py_BEGIN_ALLOW_THREADS;
    uint32_t b = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint32_t top = get16(d + 32 * i);
        while (b <= top) self->bucket[b++] = (uint32_t)i;
        if (i && memcmp(d + 32 * (i - 1), d + 32 * i, 32) > 0) prev_ok = 0;
        domains += k[i] == 1;
    }
    while (b <= (1u << BUCKET_BITS)) self->bucket[b++] = (uint32_t)n;
    Py_END_ALLOW_THREADS;
    if (!prev_ok) {
        PyErr_SetString(PyExc_ValueError, "digests are not sorted");
        return -1;
    }
    self->domains = domains;
    return 0;
}

static PyObject *ListIndex_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    PyObject *digests, *ids, *kinds;
    static char *names[] = {"digests", "ids", "kinds", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "SSS", names, &digests, &ids, &kinds)) return NULL;
    Py_ssize_t n = PyBytes_GET_SIZE(kinds);
    if (PyBytes_GET_SIZE(digests) != 32 * n || PyBytes_GET_SIZE(ids) != 8 * n) {
        PyErr_SetString(PyExc_ValueError, "column lengths disagree");
        return NULL;
    }
    if (n >= (Py_ssize_t)UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many entries");
        return NULL;
    }
    ListIndex *self = (ListIndex *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    Py_INCREF(digests);
    Py_INCREF(ids);
    Py_INCREF(kinds);
    self->digests = digests;
    self->ids = ids;
    self->kinds = kinds;
    self->d = (const uint8_t *)PyBytes_AS_STRING(digests);
    self->id = (const uint8_t *)PyBytes_AS_STRING(ids);
    self->k = (const uint8_t *)PyBytes_AS_STRING(kinds);
    self->n = n;
    if (index_build(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void ListIndex_dealloc(ListIndex *self) {
    Py_XDECREF(self->digests);
    Py_XDECREF(self->ids);
    Py_XDECREF(self->kinds);
    PyMem_RawFree(self->bucket);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Entry id of the DOMAIN entry with this digest: 1 and *id when found; 2 when `divert` is set
 * and the digest is a URLHOST entry's; else 0. */
static int index_lookup(const ListIndex *x, const uint8_t dg[32], uint64_t *id, int divert) {
    uint32_t top = get16(dg);
    Py_ssize_t lo = x->bucket[top], hi = x->bucket[top + 1];
    while (lo < hi) {
        Py_ssize_t mid = (lo + hi) / 2;
        if (memcmp(x->d + 32 * mid, dg, 32) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (; lo < x->n && memcmp(x->d + 32 * lo, dg, 32) == 0; lo++) {
        if (x->k[lo] == 1) {
            const uint8_t *p = x->id + 8 * lo;
            uint64_t v = 0;
            for (int j = 0; j < 8; j++) v = v << 8 | p[j];
            *id = v;
            return 1;
        }
        if (divert && x->k[lo] == 3) return 2;
    }
    return 0;
}

/* Is the lowercase dotted `name` (or a parent with two labels or more) listed (1), or, with
 * `divert`, does a suffix hit a URLHOST entry first (2: Python decides)? */
static int index_match(const ListIndex *x, const uint8_t *name, Py_ssize_t len, uint64_t *id,
                       int divert) {
    if (!x || !x->n) return 0;
    Py_ssize_t end = -1;
    for (Py_ssize_t i = len - 1; i >= 0; i--)
        if (name[i] == '.') {
            end = i;
            break;
        }
    Py_ssize_t start = 0;
    uint8_t dg[32];
    while (0 <= start && start <= end) {
        sha256(name + start, (size_t)(len - start), dg);
        int found = index_lookup(x, dg, id, divert);
        if (found) return found;
        const uint8_t *dot = memchr(name + start, '.', (size_t)(len - start));
        start = dot ? (Py_ssize_t)(dot - name) + 1 : 0;
    }
    return 0;
}

static PyObject *ListIndex_match(ListIndex *self, PyObject *arg) {
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "name must be bytes");
        return NULL;
    }
    uint64_t id;
    if (index_match(self, (const uint8_t *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), &id, 0))
        return PyLong_FromUnsignedLongLong(id);
    return PyLong_FromLong(-1);
}

static PyObject *ListIndex_match_any(ListIndex *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "names must be a sequence");
    if (!seq) return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *r = ListIndex_match(self, PySequence_Fast_GET_ITEM(seq, i));
        if (!r || PyLong_AsLong(r) != -1 || PyErr_Occurred()) {
            Py_DECREF(seq);
            return r;
        }
        Py_DECREF(r);
    }
    Py_DECREF(seq);
    return PyLong_FromLong(-1);
}

static Py_ssize_t ListIndex_len(ListIndex *self) { return self->n; }

static PyObject *ListIndex_get_domains(ListIndex *self, void *c) {
    return PyLong_FromSsize_t(self->domains);
}

static PyMethodDef ListIndex_methods[] = {
    {"match", (PyCFunction)ListIndex_match, METH_O,
     "Entry id blocking the lowercase dotted name (itself or a parent domain), or -1."},
    {"match_any", (PyCFunction)ListIndex_match_any, METH_O,
     "Entry id blocking the first listed name among names, or -1."},
    {NULL}};
static PyGetSetDef ListIndex_getset[] = {
    {"domains", (getter)ListIndex_get_domains, NULL, "DOMAIN entries", NULL}, {NULL}};
static PySequenceMethods ListIndex_seq = {.sq_length = (lenfunc)ListIndex_len};

static PyTypeObject ListIndexType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resolver._fastpath.ListIndex",
    .tp_basicsize = sizeof(ListIndex),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = ListIndex_new,
    .tp_dealloc = (destructor)ListIndex_dealloc,
    .tp_methods = ListIndex_methods,
    .tp_getset = ListIndex_getset,
    .tp_as_sequence = &ListIndex_seq,
    .tp_doc = "Lookups of query names in a list state's packed digest column.",
};

/* ------------------------------------------------------------------------------------------ */
/* Engine: cache entries */

typedef struct Entry {
    struct Entry *hnext, *prev, *next;
    uint64_t hash;
    PyObject *obj;   /* the resolver.cache.CacheEntry */
    PyObject *data;  /* its bytes */
    PyObject *names; /* its CNAME-chain names (tuple of bytes) */
    uint32_t *ttl;   /* TTL offsets */
    Py_ssize_t nttl, size;
    int qend, opt_start, opt_end;
    double stored, expires;
    uint64_t gen, blocked_id;
    int blocked, via;
    Py_ssize_t keylen;
    uint8_t key[];
} Entry;

/* Outcomes: indices of resolver.stats.OUTCOMES. */
enum { O_BLOCKED, O_BLOCKED_CNAME, O_CACHED, O_FORWARDED, O_SERVFAIL, O_REFUSED,
       O_FORMERR, O_NOTIMP, O_BADVERS, O_DROPPED, N_OUTCOMES };
/* What answer() decided. */
enum { R_ERROR = -1, R_ANSWER = 0, R_DROP = 1, R_PUNT = 2, R_MISS = 3, R_UNSENT = 4 };

#define BATCH 64
#define RECV_SIZE 65536
#define OUT_SIZE 4096 /* the largest UDP payload a client may ask for (dnswire.MAX_UDP) */
#define MAX_NETS 256

typedef struct {
    uint8_t counts[8];
    PyObject *tail; /* bytes */
    int qtype;      /* -1: the NODATA template */
} Template;

typedef struct {
    Template by_type[8];
    int ntypes;
    Template nodata;
} Variant;

typedef struct {
    PyObject_HEAD
    /* cache */
    Entry **table;
    size_t nbuckets, count;
    Entry *head, *tail; /* least recently used first */
    Py_ssize_t bytes, max_bytes, max_entries, evictions;
    /* list in force */
    ListIndex *index;
    uint64_t gen;
    int loaded, servfail_without_list, have_templates;
    int divert; /* URLHOST names go to Python (resolver.divert) */
    Variant variants[3];
    PyObject *ede_text;
    /* ACL */
    uint32_t v4net[MAX_NETS], v4mask[MAX_NETS];
    uint8_t v6net[MAX_NETS][16];
    int v6len[MAX_NETS], nv4, nv6, refuse;
    /* counters */
    unsigned long long udp, outcomes[N_OUTCOMES], cache_hits, blocked_other;
    PyObject *blocked_counts; /* dict entry id -> count (resolver.stats.Stats.blocked_by_entry) */
    Py_ssize_t max_entry_labels;
    /* blocks Python decides (exemptions, log-only): see set_punt */
    uint64_t *punt_ids;
    Py_ssize_t npunt;
    int punt_all;
    RateLimiter *rl; /* per-client rate limits, NULL when off: see set_ratelimit */
    ProxyTrust *px;  /* PROXY v2 senders, NULL when off: see set_proxy */
    /* batch buffers, allocated by the first drain */
    uint8_t *rbuf, *obuf;
    struct mmsghdr rmsg[BATCH], smsg[BATCH];
    struct iovec riov[BATCH], siov[BATCH];
    struct sockaddr_storage raddr[BATCH];
    int sidx[BATCH];
} Engine;

static uint64_t hash_key(const uint8_t *k, Py_ssize_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

static Entry *cache_find(Engine *e, const uint8_t *key, Py_ssize_t n, uint64_t h) {
    if (!e->nbuckets) return NULL;
    for (Entry *x = e->table[h & (e->nbuckets - 1)]; x; x = x->hnext)
        if (x->hash == h && x->keylen == n && memcmp(x->key, key, (size_t)n) == 0) return x;
    return NULL;
}

static void lru_unlink(Engine *e, Entry *x) {
    if (x->prev) x->prev->next = x->next; else e->head = x->next;
    if (x->next) x->next->prev = x->prev; else e->tail = x->prev;
    x->prev = x->next = NULL;
}

static void lru_append(Engine *e, Entry *x) {
    x->prev = e->tail;
    x->next = NULL;
    if (e->tail) e->tail->next = x; else e->head = x;
    e->tail = x;
}

static void cache_remove(Engine *e, Entry *x) {
    Entry **p = &e->table[x->hash & (e->nbuckets - 1)];
    while (*p != x) p = &(*p)->hnext;
    *p = x->hnext;
    lru_unlink(e, x);
    e->count--;
    e->bytes -= x->size;
    Py_DECREF(x->obj);
    Py_DECREF(x->data);
    Py_DECREF(x->names);
    PyMem_Free(x->ttl);
    PyMem_Free(x);
}

static int cache_grow(Engine *e) {
    size_t nb = e->nbuckets ? e->nbuckets * 2 : 1024;
    Entry **t = PyMem_Calloc(nb, sizeof(Entry *));
    if (!t) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < e->nbuckets; i++) {
        Entry *x = e->table[i];
        while (x) {
            Entry *nx = x->hnext;
            x->hnext = t[x->hash & (nb - 1)];
            t[x->hash & (nb - 1)] = x;
            x = nx;
        }
    }
    PyMem_Free(e->table);
    e->table = t;
    e->nbuckets = nb;
    return 0;
}

static void cache_clear(Engine *e) {
    while (e->head) cache_remove(e, e->head);
    e->bytes = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Engine: the per-query decision */

typedef struct {
    uint16_t id, flags, qtype, qclass;
    int name_end; /* offset just past the root label */
    int qend;     /* offset just past the question */
    int edns, do_, cd, udp_size;
} Query;

/* dnswire._skip_name */
static Py_ssize_t skip_name(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end) {
    while (pos < end) {
        uint8_t len = d[pos];
        if (len == 0) return pos + 1;
        if (len < 64)
            pos += 1 + len;
        else if (len >= 0xC0)
            return pos + 2 <= end ? pos + 2 : -1;
        else
            return -1;
    }
    return -1;
}

/* dnswire.parse_query: 0 with *q filled, -1 to drop, or the RCODE to answer with. */
static int parse_query(const uint8_t *d, Py_ssize_t n, Query *q) {
    if (n < 12) return -1;
    uint16_t flags = get16(d + 2), qd = get16(d + 4), an = get16(d + 6), ns = get16(d + 8),
             ar = get16(d + 10);
    if (flags & 0x8000) return -1;
    if (flags & 0x7800) return 4;
    if (qd != 1 || an || ns) return 1;
    Py_ssize_t pos = 12;
    if (pos >= n) return 1;
    uint8_t len = d[12];
    while (len) {
        if (len > 63) return 1;
        pos = pos + 1 + len;
        if (pos > 266) return 1;
        if (pos >= n) return 1;
        len = d[pos];
    }
    Py_ssize_t name_end = pos + 1;
    if (name_end + 4 > n) return 1;
    q->qtype = get16(d + name_end);
    q->qclass = get16(d + name_end + 2);
    pos = name_end + 4;
    q->qend = (int)pos;
    q->name_end = (int)name_end;
    int edns = 0, do_ = 0, version = 0, udp = 512;
    for (unsigned i = 0; i < ar; i++) {
        if (pos >= n) return 1;
        int root = d[pos] == 0;
        pos = root ? pos + 1 : skip_name(d, pos, n);
        if (pos < 0) return 1;
        if (pos + 10 > n) return 1;
        uint16_t rtype = get16(d + pos), rclass = get16(d + pos + 2);
        uint32_t rttl = get32(d + pos + 4);
        uint16_t rdlen = get16(d + pos + 8);
        pos += 10;
        Py_ssize_t end = pos + rdlen;
        if (rtype == 41) {
            if (edns || !root) return 1;
            edns = 1;
            udp = rclass < 512 ? 512 : rclass > 4096 ? 4096 : rclass;
            version = (rttl >> 16) & 0xFF;
            do_ = (rttl & 0x8000) != 0;
            while (pos < end) {
                if (pos + 4 > n) return 1;
                pos += 4 + get16(d + pos + 2);
            }
            if (pos != end) return 1;
        }
        pos = end;
    }
    if (pos != n) return 1;
    if (version) return 16;
    q->id = get16(d);
    q->flags = flags;
    q->edns = edns;
    q->do_ = do_;
    q->cd = (flags & 0x0010) != 0;
    q->udp_size = udp;
    return 0;
}

/* dnswire._opt_rr */
static Py_ssize_t opt_rr(uint8_t *o, int ext, int do_, const uint8_t *opts, Py_ssize_t optlen) {
    o[0] = 0;
    put16(o + 1, 41);
    put16(o + 3, 1232);
    o[5] = (uint8_t)ext;
    o[6] = 0;
    put16(o + 7, do_ ? 0x8000 : 0);
    put16(o + 9, (unsigned)optlen);
    if (optlen) memcpy(o + 11, opts, (size_t)optlen);
    return 11 + optlen;
}

/* dnswire.error_response, for a query parse_query refused with `rcode`. */
static Py_ssize_t error_response(const uint8_t *d, Py_ssize_t n, int rcode, uint8_t *o) {
    uint16_t flags = get16(d + 2), qd = get16(d + 4);
    unsigned rr = (unsigned)get16(d + 6) + get16(d + 8) + get16(d + 10);
    Py_ssize_t qlen = 0;
    if (qd == 1) {
        Py_ssize_t pos = 12;
        while (pos < n && d[pos] > 0 && d[pos] < 64) pos += 1 + d[pos];
        if (pos < n && d[pos] == 0 && pos + 5 <= n && pos + 1 - 12 <= 255) qlen = pos + 5 - 12;
    }
    /* dnswire._find_opt */
    int found = 0, do_ = 0;
    Py_ssize_t pos = 12;
    int ok = 1;
    for (unsigned i = 0; i < qd; i++) {
        pos = skip_name(d, pos, n);
        if (pos < 0 || pos + 4 > n) {
            ok = 0;
            break;
        }
        pos += 4;
    }
    for (unsigned i = 0; ok && i < rr; i++) {
        Py_ssize_t owner = pos;
        pos = skip_name(d, pos, n);
        if (pos < 0 || pos + 10 > n) break;
        uint16_t rtype = get16(d + pos);
        uint32_t rttl = get32(d + pos + 4);
        pos += 10 + get16(d + pos + 8);
        if (pos > n) break;
        if (rtype == 41 && d[owner] == 0) {
            found = 1;
            do_ = (rttl & 0x8000) != 0;
            break;
        }
    }
    if (!found && rcode > 15) rcode = 2;
    unsigned out_flags = 0x8000 | 0x0080 | (flags & (0x7800 | 0x0100 | 0x0010)) | (rcode & 0xF);
    put16(o, get16(d));
    put16(o + 2, out_flags);
    put16(o + 4, qlen ? 1 : 0);
    put16(o + 6, 0);
    put16(o + 8, 0);
    put16(o + 10, found);
    memcpy(o + 12, d + 12, (size_t)qlen);
    Py_ssize_t len = 12 + qlen;
    if (found) len += opt_rr(o + len, rcode >> 4, do_, NULL, 0);
    return len;
}

/* dnswire.response_for */
static Py_ssize_t response_for(const uint8_t *d, const Query *q, int rcode, int ede_code,
                               const uint8_t *text, Py_ssize_t tlen, uint8_t *o) {
    if (!q->edns && rcode > 15) rcode = 2;
    unsigned flags = 0x8000 | 0x0080 | (q->flags & (0x7800 | 0x0100 | 0x0010)) | (rcode & 0xF);
    put16(o, q->id);
    put16(o + 2, flags);
    put16(o + 4, 1);
    put16(o + 6, 0);
    put16(o + 8, 0);
    put16(o + 10, q->edns ? 1 : 0);
    memcpy(o + 12, d + 12, (size_t)(q->qend - 12));
    Py_ssize_t len = q->qend;
    if (q->edns) {
        uint8_t opts[6 + 255];
        Py_ssize_t olen = 0;
        if (ede_code >= 0) {
            put16(opts, 15);
            put16(opts + 2, (unsigned)(2 + tlen));
            put16(opts + 4, (unsigned)ede_code);
            if (tlen) memcpy(opts + 6, text, (size_t)tlen);
            olen = 6 + tlen;
        }
        len += opt_rr(o + len, rcode >> 4, q->do_, opts, olen);
    }
    return len;
}

/* BlockedAnswers.build: -1 when it would not fit in the client's UDP size (Python truncates). */
static Py_ssize_t blocked_answer(Engine *e, const uint8_t *d, const Query *q, uint8_t *o) {
    if (q->qclass != 1 && q->qclass != 255) {
        /* at most 12 + 259 + 11 + 6 + 255 bytes: fits in `o` whatever the client's size */
        Py_ssize_t len = response_for(d, q, 5, 16, (const uint8_t *)PyBytes_AS_STRING(e->ede_text),
                                      PyBytes_GET_SIZE(e->ede_text), o);
        return len > q->udp_size ? -1 : len;
    }
    const Variant *v = &e->variants[q->edns ? 1 + q->do_ : 0];
    const Template *t = &v->nodata;
    for (int i = 0; i < v->ntypes; i++)
        if (v->by_type[i].qtype == q->qtype) {
            t = &v->by_type[i];
            break;
        }
    Py_ssize_t tl = PyBytes_GET_SIZE(t->tail), len = q->qend + tl;
    if (len > q->udp_size) return -1;
    put16(o, q->id);
    put16(o + 2, 0x8080 | (q->flags & 0x0110));
    memcpy(o + 4, t->counts, 8);
    memcpy(o + 12, d + 12, (size_t)(q->qend - 12));
    memcpy(o + q->qend, PyBytes_AS_STRING(t->tail), (size_t)tl);
    return len;
}

/* dnswire.rewrite_response for a cache hit: -1 when Python must do it (truncation, odd case). */
static Py_ssize_t cached_answer(const Entry *x, const uint8_t *d, const Query *q, double now,
                                uint8_t *o) {
    const uint8_t *c = (const uint8_t *)PyBytes_AS_STRING(x->data);
    Py_ssize_t clen = PyBytes_GET_SIZE(x->data), len = clen;
    int drop_opt = !q->edns && x->opt_start >= 0 && x->opt_end == clen;
    if (drop_opt) len = x->opt_start;
    if (len > q->udp_size || x->qend != q->qend || x->qend > clen) return -1;
    const uint8_t *qa = d + 12, *qb = c + 12;
    Py_ssize_t ql = q->qend - 12;
    if (memcmp(qa + ql - 4, qb + ql - 4, 4) != 0) return -1;
    for (Py_ssize_t i = 0; i < ql; i++)
        if (lower(qa[i]) != lower(qb[i])) return -1;
    memcpy(o, c, (size_t)len);
    put16(o, q->id);
    memcpy(o + 12, qa, (size_t)ql);
    double delta = now - x->stored;
    long long age = (long long)delta; /* int() truncates toward zero, as here */
    if (age > 0) {
        for (Py_ssize_t i = 0; i < x->nttl; i++) {
            uint32_t off = x->ttl[i];
            if (off + 4 > (uint32_t)len) continue; /* inside the dropped OPT: cannot happen */
            uint32_t ttl = get32(o + off);
            put32(o + off, ((long long)ttl > age && ttl < 0x80000000u) ? ttl - (uint32_t)age : 0);
        }
    }
    if (drop_opt) put16(o + 10, get16(o + 10) - 1);
    return len;
}

/* Lowercase dotted name of the question; -1 when a label holds a dot (Python escapes those). */
static Py_ssize_t dotted(const uint8_t *d, const Query *q, uint8_t *out) {
    Py_ssize_t pos = 12, n = 0;
    while (d[pos]) {
        uint8_t len = d[pos];
        if (n) out[n++] = '.';
        for (int i = 1; i <= len; i++) {
            uint8_t ch = d[pos + i];
            if (ch == '.') return -1;
            out[n++] = lower(ch);
        }
        pos += 1 + len;
    }
    return n;
}

static PyObject *one_obj; /* the int 1 */

static int count_blocked(Engine *e, uint64_t id) {
    if (!e->blocked_counts) return 0;
    PyObject *key = PyLong_FromUnsignedLongLong(id);
    if (!key) return -1;
    PyObject *have = PyDict_GetItemWithError(e->blocked_counts, key);
    int rc = 0;
    if (have) {
        PyObject *more = PyNumber_Add(have, one_obj);
        rc = more ? PyDict_SetItem(e->blocked_counts, key, more) : -1;
        Py_XDECREF(more);
    } else if (PyErr_Occurred()) {
        rc = -1;
    } else if (PyDict_GET_SIZE(e->blocked_counts) < e->max_entry_labels) {
        rc = PyDict_SetItem(e->blocked_counts, key, one_obj);
    } else {
        e->blocked_other++;
    }
    Py_DECREF(key);
    return rc;
}

/* A block by entry `id` that Python must decide (an exempted name, log-only mode). */
static inline int punts(const Engine *e, uint64_t id) {
    if (e->punt_all) return 1;
    for (Py_ssize_t i = 0; i < e->npunt; i++)
        if (e->punt_ids[i] == id) return 1;
    return 0;
}

/* Re-evaluate a cache entry against a list that changed since it was stored
 * (Resolver._recheck); -1 when Python must (a name with a dot inside a label, or a URLHOST
 * name while diverting: the entry keeps its old generation, so every hit comes back here). */
static int recheck(Engine *e, Entry *x, const uint8_t *d, const Query *q) {
    uint8_t name[256];
    Py_ssize_t nlen = dotted(d, q, name);
    if (nlen < 0) return -1;
    uint64_t id = 0;
    int found = index_match(e->index, name, nlen, &id, e->divert), via = 0;
    if (found == 2) return -1;
    if (!found) {
        Py_ssize_t k = PyTuple_GET_SIZE(x->names);
        for (Py_ssize_t i = 0; i < k && !found; i++) {
            PyObject *nm = PyTuple_GET_ITEM(x->names, i);
            found = index_match(e->index, (const uint8_t *)PyBytes_AS_STRING(nm),
                                PyBytes_GET_SIZE(nm), &id, 0);
        }
        via = found;
    }
    x->blocked = found;
    x->blocked_id = id;
    x->via = via;
    x->gen = e->gen;
    return 0;
}

static int acl_allows(const Engine *e, const struct sockaddr_storage *sa) {
    if (sa->ss_family == AF_INET) {
        uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
        for (int i = 0; i < e->nv4; i++)
            if ((a & e->v4mask[i]) == e->v4net[i]) return 1;
        return 0;
    }
    if (sa->ss_family != AF_INET6) return 0;
    const uint8_t *a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) {
        uint32_t v4 = get32(a + 12);
        for (int i = 0; i < e->nv4; i++)
            if ((v4 & e->v4mask[i]) == e->v4net[i]) return 1;
        return 0;
    }
    for (int i = 0; i < e->nv6; i++) {
        int bits = e->v6len[i], full = bits / 8, rest = bits % 8;
        if (memcmp(a, e->v6net[i], (size_t)full) != 0) continue;
        if (rest && ((a[full] ^ e->v6net[i][full]) & (0xFF << (8 - rest)) & 0xFF)) continue;
        return 1;
    }
    return 0;
}

static PyObject *query_type; /* resolver.dnswire.Query, set by set_query_type() */

/* The dnswire.Query that parse_query would return, for a query that needs no escaping. */
static PyObject *make_query(const uint8_t *d, const Query *q, const uint8_t *name,
                            Py_ssize_t nlen) {
    PyTypeObject *t = (PyTypeObject *)query_type;
    PyObject *o = t->tp_alloc(t, 14);
    if (!o) return NULL;
    PyObject *items[14] = {
        PyLong_FromLong(q->id),
        PyLong_FromLong(q->flags),
        PyLong_FromLong(0),
        PyBool_FromLong(q->flags & 0x0100),
        PyBool_FromLong(q->cd),
        PyBytes_FromStringAndSize((const char *)d + 12, q->name_end - 12),
        PyBytes_FromStringAndSize((const char *)name, nlen),
        PyLong_FromLong(q->qtype),
        PyLong_FromLong(q->qclass),
        PyBytes_FromStringAndSize((const char *)d + 12, q->qend - 12),
        PyBool_FromLong(q->edns),
        PyLong_FromLong(q->udp_size),
        PyBool_FromLong(q->do_),
        PyLong_FromLong(0),
    };
    int ok = 1;
    for (int i = 0; i < 14; i++) {
        if (!items[i]) ok = 0;
        PyTuple_SET_ITEM(o, i, items[i]);
    }
    if (!ok) {
        Py_DECREF(o);
        return NULL;
    }
    return o;
}

/* One UDP query: R_ANSWER with *olen bytes in `o`, R_DROP, R_PUNT (Python handles it all),
 * R_MISS (parsed, not cached, not listed: Python forwards *miss, the parsed Query, or parses
 * it when no Query type was set) or R_ERROR (exception set).
 * Counters are bumped only for what is answered or dropped here. */
static int answer(Engine *e, const uint8_t *d, Py_ssize_t n, int allowed, double now, uint8_t *o,
                  Py_ssize_t *olen, PyObject **miss) {
    Query q;
    int rc = parse_query(d, n, &q);
    if (rc < 0 || (rc > 0 && !allowed)) {
        e->outcomes[O_DROPPED]++;
        return R_DROP;
    }
    if (rc > 0) {
        e->outcomes[rc == 4 ? O_NOTIMP : rc == 16 ? O_BADVERS : O_FORMERR]++;
        *olen = error_response(d, n, rc, o);
        return R_ANSWER;
    }
    if (!allowed) {
        if (!e->refuse) {
            e->outcomes[O_DROPPED]++;
            return R_DROP;
        }
        e->outcomes[O_REFUSED]++;
        *olen = response_for(d, &q, 5, 18, NULL, 0, o);
        return R_ANSWER;
    }
    if (!e->have_templates) return R_PUNT;
    /* dnswire.cache_key */
    uint8_t key[262];
    Py_ssize_t kl = q.name_end - 12;
    for (Py_ssize_t i = 0; i < kl; i++) key[i] = lower(d[12 + i]);
    put16(key + kl, q.qtype);
    put16(key + kl + 2, q.qclass);
    key[kl + 4] = (uint8_t)(q.do_ | (q.cd << 1));
    kl += 5;
    uint64_t h = hash_key(key, kl);
    Entry *x = cache_find(e, key, kl, h);
    if (x && x->expires <= now) {
        cache_remove(e, x);
        x = NULL;
    }
    if (x) {
        if (x->gen != e->gen && recheck(e, x, d, &q) < 0) return R_PUNT;
        lru_unlink(e, x);
        lru_append(e, x);
        if (x->blocked) {
            if (punts(e, x->blocked_id)) return R_PUNT;
            Py_ssize_t len = blocked_answer(e, d, &q, o);
            if (len < 0) return R_PUNT;
            e->cache_hits++;
            e->outcomes[x->via ? O_BLOCKED_CNAME : O_BLOCKED]++;
            if (count_blocked(e, x->blocked_id) < 0) return R_ERROR;
            *olen = len;
            return R_ANSWER;
        }
        Py_ssize_t len = cached_answer(x, d, &q, now, o);
        if (len < 0) return R_PUNT;
        e->cache_hits++;
        e->outcomes[O_CACHED]++;
        *olen = len;
        return R_ANSWER;
    }
    uint8_t name[256];
    Py_ssize_t nlen = dotted(d, &q, name);
    if (nlen < 0) return R_PUNT;
    uint64_t id;
    int found = index_match(e->index, name, nlen, &id, e->divert);
    if (found == 2) return R_PUNT;
    if (found) {
        if (punts(e, id)) return R_PUNT;
        Py_ssize_t len = blocked_answer(e, d, &q, o);
        if (len < 0) return R_PUNT;
        e->outcomes[O_BLOCKED]++;
        if (count_blocked(e, id) < 0) return R_ERROR;
        *olen = len;
        return R_ANSWER;
    }
    if (!e->loaded && e->servfail_without_list) {
        e->outcomes[O_SERVFAIL]++;
        *olen = response_for(d, &q, 2, 23, (const uint8_t *)"no list", 7, o);
        return R_ANSWER;
    }
    if (query_type) {
        *miss = make_query(d, &q, name, nlen);
        if (!*miss) return R_ERROR;
    }
    return R_MISS;
}

/* The empty truncated reply a rate-limited client gets on a slip (ratelimit.slip_answer);
 * -1 when the query does not parse (then it is dropped). */
static Py_ssize_t slip_answer(const uint8_t *d, Py_ssize_t n, uint8_t *o) {
    Query q;
    if (parse_query(d, n, &q) != 0) return -1;
    uint16_t flags = 0x8000 | 0x0200 | 0x0080 | (get16(d + 2) & (0x7800 | 0x0100 | 0x0010));
    memcpy(o, d, 2);
    put16(o + 2, flags);
    put16(o + 4, 1);
    memset(o + 6, 0, 6);
    memcpy(o + 12, d + 12, (size_t)(q.qend - 12));
    return q.qend;
}

/* ------------------------------------------------------------------------------------------ */
/* Engine: Python interface */

static PyTypeObject EngineType;

static PyObject *Engine_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Py_ssize_t max_entries, max_bytes;
    static char *names[] = {"max_entries", "max_bytes", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "nn", names, &max_entries, &max_bytes))
        return NULL;
    Engine *e = (Engine *)type->tp_alloc(type, 0);
    if (!e) return NULL;
    e->max_entries = max_entries;
    e->max_bytes = max_bytes;
    e->refuse = 1;
    e->max_entry_labels = 0;
    return (PyObject *)e;
}

static void Engine_dealloc(Engine *e) {
    if (e->nbuckets) cache_clear(e);
    PyMem_Free(e->table);
    Py_XDECREF(e->index);
    for (int v = 0; v < 3; v++) {
        for (int i = 0; i < e->variants[v].ntypes; i++) Py_XDECREF(e->variants[v].by_type[i].tail);
        Py_XDECREF(e->variants[v].nodata.tail);
    }
    Py_XDECREF(e->ede_text);
    Py_XDECREF(e->blocked_counts);
    PyMem_Free(e->punt_ids);
    rl_free(e->rl);
    PyMem_Free(e->px);
    PyMem_RawFree(e->rbuf);
    PyMem_RawFree(e->obuf);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static Py_ssize_t Engine_len(Engine *e) { return (Py_ssize_t)e->count; }

static int template_from(PyObject *pair, int qtype, Template *t) {
    PyObject *counts, *tail;
    if (!PyArg_ParseTuple(pair, "SS", &counts, &tail)) return -1;
    if (PyBytes_GET_SIZE(counts) != 8) {
        PyErr_SetString(PyExc_ValueError, "counts must be 8 bytes");
        return -1;
    }
    memcpy(t->counts, PyBytes_AS_STRING(counts), 8);
    Py_INCREF(tail);
    Py_XSETREF(t->tail, tail);
    t->qtype = qtype;
    return 0;
}

/* set_list(index, gen, loaded, variants, ede_text[, divert]): variants as
 * BlockedAnswers.export(); divert: hand URLHOST names to Python. */
static PyObject *Engine_set_list(Engine *e, PyObject *args) {
    PyObject *index, *variants, *ede;
    unsigned long long gen;
    int loaded, divert = 0;
    if (!PyArg_ParseTuple(args, "O!KpOS|p", &ListIndexType, &index, &gen, &loaded, &variants, &ede,
                          &divert))
        return NULL;
    if (!PyTuple_Check(variants) || PyTuple_GET_SIZE(variants) != 3) {
        PyErr_SetString(PyExc_ValueError, "variants must be a 3-tuple");
        return NULL;
    }
    Variant fresh[3];
    memset(fresh, 0, sizeof fresh);
    int ok = 1;
    for (int v = 0; v < 3 && ok; v++) {
        PyObject *table, *nodata;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(variants, v), "O!O", &PyDict_Type, &table, &nodata)) {
            ok = 0;
            break;
        }
        if (template_from(nodata, -1, &fresh[v].nodata) < 0) {
            ok = 0;
            break;
        }
        Py_ssize_t pos = 0;
        PyObject *k, *val;
        while (PyDict_Next(table, &pos, &k, &val)) {
            if (fresh[v].ntypes >= 8) {
                PyErr_SetString(PyExc_ValueError, "too many templates");
                ok = 0;
                break;
            }
            long qt = PyLong_AsLong(k);
            if (qt == -1 && PyErr_Occurred()) {
                ok = 0;
                break;
            }
            if (template_from(val, (int)qt, &fresh[v].by_type[fresh[v].ntypes]) < 0) {
                ok = 0;
                break;
            }
            fresh[v].ntypes++;
        }
    }
    if (!ok) {
        for (int v = 0; v < 3; v++) {
            for (int i = 0; i < 8; i++) Py_XDECREF(fresh[v].by_type[i].tail);
            Py_XDECREF(fresh[v].nodata.tail);
        }
        return NULL;
    }
    /* The swap: everything above was built aside; the loop thread holds the GIL here. */
    for (int v = 0; v < 3; v++) {
        for (int i = 0; i < e->variants[v].ntypes; i++) Py_XDECREF(e->variants[v].by_type[i].tail);
        Py_XDECREF(e->variants[v].nodata.tail);
        e->variants[v] = fresh[v];
    }
    Py_INCREF(index);
    Py_XSETREF(e->index, (ListIndex *)index);
    Py_INCREF(ede);
    Py_XSETREF(e->ede_text, ede);
    e->gen = gen;
    e->loaded = loaded;
    e->divert = divert;
    e->have_templates = 1;
    Py_RETURN_NONE;
}

/* set_acl(v4, v6, refuse): v4 [(network int, prefix length)], v6 [(16 bytes, prefix length)]. */
static PyObject *Engine_set_acl(Engine *e, PyObject *args) {
    PyObject *v4, *v6;
    int refuse;
    if (!PyArg_ParseTuple(args, "O!O!p", &PyList_Type, &v4, &PyList_Type, &v6, &refuse))
        return NULL;
    if (PyList_GET_SIZE(v4) > MAX_NETS || PyList_GET_SIZE(v6) > MAX_NETS) {
        PyErr_SetString(PyExc_ValueError, "too many networks for the fast path");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v4); i++) {
        unsigned long net;
        int bits;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(v4, i), "ki", &net, &bits)) return NULL;
        uint32_t mask = bits <= 0 ? 0 : bits >= 32 ? 0xFFFFFFFFu : ~((1u << (32 - bits)) - 1);
        e->v4mask[i] = mask;
        e->v4net[i] = (uint32_t)net & mask;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v6); i++) {
        const char *net;
        Py_ssize_t len;
        int bits;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(v6, i), "y#i", &net, &len, &bits)) return NULL;
        if (len != 16 || bits < 0 || bits > 128) {
            PyErr_SetString(PyExc_ValueError, "bad IPv6 network");
            return NULL;
        }
        memcpy(e->v6net[i], net, 16);
        e->v6len[i] = bits;
    }
    e->nv4 = (int)PyList_GET_SIZE(v4);
    e->nv6 = (int)PyList_GET_SIZE(v6);
    e->refuse = refuse;
    Py_RETURN_NONE;
}

/* set_stats(blocked_by_entry dict, max_entry_labels, servfail_without_list) */
static PyObject *Engine_set_stats(Engine *e, PyObject *args) {
    PyObject *counts;
    Py_ssize_t max_labels;
    int servfail;
    if (!PyArg_ParseTuple(args, "O!np", &PyDict_Type, &counts, &max_labels, &servfail))
        return NULL;
    Py_INCREF(counts);
    Py_XSETREF(e->blocked_counts, counts);
    e->max_entry_labels = max_labels;
    e->servfail_without_list = servfail;
    Py_RETURN_NONE;
}

/* set_proxy(v4, v6): senders trusted to prefix PROXY v2 headers (as set_acl), or (None). */
static PyObject *Engine_set_proxy(Engine *e, PyObject *args) {
    PyObject *v4, *v6;
    if (PyTuple_GET_SIZE(args) == 1 && PyTuple_GET_ITEM(args, 0) == Py_None) {
        PyMem_Free(e->px);
        e->px = NULL;
        Py_RETURN_NONE;
    }
    if (!PyArg_ParseTuple(args, "O!O!", &PyList_Type, &v4, &PyList_Type, &v6)) return NULL;
    if (PyList_GET_SIZE(v4) > PX_MAX_NETS || PyList_GET_SIZE(v6) > PX_MAX_NETS) {
        PyErr_SetString(PyExc_ValueError, "too many trusted proxy networks");
        return NULL;
    }
    ProxyTrust *p = PyMem_Calloc(1, sizeof *p);
    if (!p) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v4); i++) {
        unsigned long net;
        int bits;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(v4, i), "ki", &net, &bits)) goto fail;
        uint32_t mask = bits <= 0 ? 0 : bits >= 32 ? 0xFFFFFFFFu : ~((1u << (32 - bits)) - 1);
        p->v4mask[i] = mask;
        p->v4net[i] = (uint32_t)net & mask;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(v6); i++) {
        const char *net;
        Py_ssize_t len;
        int bits;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(v6, i), "y#i", &net, &len, &bits)) goto fail;
        if (len != 16 || bits < 0 || bits > 128) {
            PyErr_SetString(PyExc_ValueError, "bad IPv6 network");
            goto fail;
        }
        memcpy(p->v6net[i], net, 16);
        p->v6len[i] = bits;
    }
    p->nv4 = (int)PyList_GET_SIZE(v4);
    p->nv6 = (int)PyList_GET_SIZE(v6);
    if (e->px) {
        p->refused = e->px->refused;
        p->errors = e->px->errors;
    }
    PyMem_Free(e->px);
    e->px = p;
    Py_RETURN_NONE;
fail:
    PyMem_Free(p);
    return NULL;
}

static PyObject *Engine_proxy_counts(Engine *e, PyObject *unused) {
    if (!e->px) return Py_BuildValue("(KK)", 0ULL, 0ULL);
    return Py_BuildValue("(KK)", e->px->refused, e->px->errors);
}

/* set_ratelimit(rate, burst, v4_prefix, v6_prefix, slip, max_clients), or set_ratelimit(None). */
static PyObject *Engine_set_ratelimit(Engine *e, PyObject *args) {
    double rate = 0, burst = 0;
    int v4 = 32, v6 = 128, slip = 0;
    Py_ssize_t max_clients = 0;
    if (PyTuple_GET_SIZE(args) == 1 && PyTuple_GET_ITEM(args, 0) == Py_None) {
        rl_free(e->rl);
        e->rl = NULL;
        Py_RETURN_NONE;
    }
    if (!PyArg_ParseTuple(args, "ddiiin", &rate, &burst, &v4, &v6, &slip, &max_clients))
        return NULL;
    if (max_clients < 1 || v4 < 0 || v4 > 32 || v6 < 0 || v6 > 128 || slip < 0) {
        PyErr_SetString(PyExc_ValueError, "bad rate limit settings");
        return NULL;
    }
    RateLimiter *rl = rl_new(rate, burst, v4, v6, slip, (size_t)max_clients);
    if (!rl) return PyErr_NoMemory();
    rl_free(e->rl);
    e->rl = rl;
    Py_RETURN_NONE;
}

/* limit(host, now): the rate limiter's verdict for one query from `host` (0 allow, 1 drop,
 * 2 slip); what the UDP loop applies to each datagram, for TCP and for tests. */
static PyObject *Engine_limit(Engine *e, PyObject *args) {
    const char *host;
    double now;
    if (!PyArg_ParseTuple(args, "sd", &host, &now)) return NULL;
    if (!e->rl) return PyLong_FromLong(RL_ALLOW);
    struct sockaddr_storage sa;
    memset(&sa, 0, sizeof sa);
    if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&sa)->sin_addr) == 1) {
        sa.ss_family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&sa)->sin6_addr) == 1) {
        sa.ss_family = AF_INET6;
    } else {
        return PyLong_FromLong(RL_ALLOW);
    }
    return PyLong_FromLong(rl_check(e->rl, &sa, now));
}

static PyObject *Engine_ratelimit_counts(Engine *e, PyObject *unused) {
    if (!e->rl) return Py_BuildValue("(KK)", 0ULL, 0ULL);
    return Py_BuildValue("(KK)", e->rl->dropped, e->rl->slipped);
}

/* set_punt(entry ids, all): blocks by these entries (or by any, with `all`) go to Python. */
static PyObject *Engine_set_punt(Engine *e, PyObject *args) {
    PyObject *ids;
    int all;
    if (!PyArg_ParseTuple(args, "O!p", &PyTuple_Type, &ids, &all)) return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(ids);
    uint64_t *fresh = n ? PyMem_Malloc((size_t)n * sizeof *fresh) : NULL;
    if (n && !fresh) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        fresh[i] = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(ids, i));
        if (PyErr_Occurred()) {
            PyMem_Free(fresh);
            return NULL;
        }
    }
    PyMem_Free(e->punt_ids);
    e->punt_ids = fresh;
    e->npunt = n;
    e->punt_all = all;
    Py_RETURN_NONE;
}

static PyObject *Engine_counters(Engine *e, PyObject *unused) {
    PyObject *outs = PyList_New(N_OUTCOMES);
    if (!outs) return NULL;
    for (int i = 0; i < N_OUTCOMES; i++)
        PyList_SET_ITEM(outs, i, PyLong_FromUnsignedLongLong(e->outcomes[i]));
    return Py_BuildValue("{s:K,s:N,s:K,s:K}", "udp", e->udp, "outcomes", outs, "cache_hits",
                         e->cache_hits, "blocked_other", e->blocked_other);
}

/* cache.get(key, now): the CacheEntry, or None (an expired one is dropped). */
static PyObject *Engine_get(Engine *e, PyObject *args) {
    const char *key;
    Py_ssize_t kl;
    double now;
    if (!PyArg_ParseTuple(args, "y#d", &key, &kl, &now)) return NULL;
    uint64_t h = hash_key((const uint8_t *)key, kl);
    Entry *x = cache_find(e, (const uint8_t *)key, kl, h);
    if (!x) Py_RETURN_NONE;
    if (x->expires <= now) {
        cache_remove(e, x);
        Py_RETURN_NONE;
    }
    lru_unlink(e, x);
    lru_append(e, x);
    Py_INCREF(x->obj);
    return x->obj;
}

/* Cache entries hold only bytes, ints, floats and tuples of them: they cannot be part of a
 * reference cycle, so the cyclic GC need not scan them. With a large cache, full collections
 * walking every entry took a quarter of the CPU on misses (perf). */
static void untrack(PyObject *o) {
    if (PyObject_IS_GC(o) && PyObject_GC_IsTracked(o)) PyObject_GC_UnTrack(o);
    if (PyTuple_CheckExact(o))
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(o); i++)
            if (PyTuple_CheckExact(PyTuple_GET_ITEM(o, i))) untrack(PyTuple_GET_ITEM(o, i));
}

static int attr_double(PyObject *o, const char *name, double *out) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v) return -1;
    *out = PyFloat_AsDouble(v);
    Py_DECREF(v);
    return (*out == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

static int attr_ssize(PyObject *o, const char *name, Py_ssize_t *out) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (!v) return -1;
    *out = PyLong_AsSsize_t(v);
    Py_DECREF(v);
    return (*out == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* cache.put(key, entry): as ResponseCache.put (LRU, bounded by entries and bytes). */
static PyObject *Engine_put(Engine *e, PyObject *args) {
    const char *key;
    Py_ssize_t kl;
    PyObject *obj;
    if (!PyArg_ParseTuple(args, "y#O", &key, &kl, &obj)) return NULL;
    Py_ssize_t size, qend, opt_start, opt_end, gen;
    double stored, expires;
    if (attr_ssize(obj, "size", &size) < 0) return NULL;
    if (size > e->max_bytes || !e->max_entries) Py_RETURN_NONE;
    PyObject *data = PyObject_GetAttrString(obj, "data");
    PyObject *info = data ? PyObject_GetAttrString(obj, "info") : NULL;
    PyObject *names = info ? PyObject_GetAttrString(obj, "names") : NULL;
    PyObject *via = names ? PyObject_GetAttrString(obj, "via_cname") : NULL;
    Entry *x = NULL;
    if (!via) goto fail;
    if (!PyBytes_Check(data) || !PyTuple_Check(info) || PyTuple_GET_SIZE(info) < 13 ||
        !PyTuple_Check(names)) {
        PyErr_SetString(PyExc_TypeError, "not a CacheEntry");
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(names); i++)
        if (!PyBytes_Check(PyTuple_GET_ITEM(names, i))) {
            PyErr_SetString(PyExc_TypeError, "names must be bytes");
            goto fail;
        }
    qend = PyLong_AsSsize_t(PyTuple_GET_ITEM(info, 5));
    opt_start = PyLong_AsSsize_t(PyTuple_GET_ITEM(info, 11));
    opt_end = PyLong_AsSsize_t(PyTuple_GET_ITEM(info, 12));
    PyObject *offs = PyTuple_GET_ITEM(info, 6);
    if (PyErr_Occurred() || !PyTuple_Check(offs)) goto fail;
    if (attr_double(obj, "stored", &stored) < 0 || attr_double(obj, "expires", &expires) < 0 ||
        attr_ssize(obj, "gen", &gen) < 0)
        goto fail;
    x = PyMem_Calloc(1, sizeof(Entry) + (size_t)kl);
    if (!x) {
        PyErr_NoMemory();
        goto fail;
    }
    x->nttl = PyTuple_GET_SIZE(offs);
    x->ttl = PyMem_Malloc(sizeof(uint32_t) * (size_t)(x->nttl ? x->nttl : 1));
    if (!x->ttl) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < x->nttl; i++) {
        Py_ssize_t off = PyLong_AsSsize_t(PyTuple_GET_ITEM(offs, i));
        if (off < 0 || off + 4 > PyBytes_GET_SIZE(data)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "TTL offset out of range");
            goto fail;
        }
        x->ttl[i] = (uint32_t)off;
    }
    PyObject *b = PyObject_GetAttrString(obj, "blocked");
    if (!b) goto fail;
    int overflow = 0;
    long long small = PyLong_AsLongLongAndOverflow(b, &overflow);
    x->blocked = overflow > 0 || small >= 0;
    x->blocked_id = overflow > 0 ? PyLong_AsUnsignedLongLong(b) : (uint64_t)small;
    Py_DECREF(b);
    if (PyErr_Occurred()) goto fail;
    x->via = PyObject_IsTrue(via);
    x->qend = (int)qend;
    x->opt_start = (int)opt_start;
    x->opt_end = (int)opt_end;
    x->stored = stored;
    x->expires = expires;
    x->gen = (uint64_t)gen;
    x->size = size;
    x->keylen = kl;
    memcpy(x->key, key, (size_t)kl);
    x->hash = hash_key((const uint8_t *)key, kl);
    x->obj = obj;
    x->data = data;
    x->names = names;
    Py_INCREF(obj);
    untrack(obj);
    untrack(info);
    untrack(names);
    Py_DECREF(info);
    Py_DECREF(via);
    Entry *old = cache_find(e, x->key, kl, x->hash);
    if (old) cache_remove(e, old);
    if (e->count >= e->nbuckets && cache_grow(e) < 0) {
        Py_DECREF(x->obj);
        Py_DECREF(x->data);
        Py_DECREF(x->names);
        PyMem_Free(x->ttl);
        PyMem_Free(x);
        return NULL;
    }
    size_t slot = x->hash & (e->nbuckets - 1);
    x->hnext = e->table[slot];
    e->table[slot] = x;
    lru_append(e, x);
    e->count++;
    e->bytes += size;
    while ((Py_ssize_t)e->count > e->max_entries || e->bytes > e->max_bytes) {
        cache_remove(e, e->head);
        e->evictions++;
    }
    Py_RETURN_NONE;
fail:
    if (x) {
        PyMem_Free(x->ttl);
        PyMem_Free(x);
    }
    Py_XDECREF(data);
    Py_XDECREF(info);
    Py_XDECREF(names);
    Py_XDECREF(via);
    return NULL;
}

static PyObject *Engine_clear(Engine *e, PyObject *unused) {
    if (e->nbuckets) cache_clear(e);
    Py_RETURN_NONE;
}

/* answer(data, allowed, now=None): bytes, None (drop), the parsed Query of a miss to forward,
 * or the int 2 (Python handles it all; 3 for a miss when no Query type was set). What `drain`
 * does for each datagram. */
static PyObject *Engine_answer(Engine *e, PyObject *args) {
    const char *data;
    Py_ssize_t n;
    int allowed;
    PyObject *now_obj = Py_None;
    if (!PyArg_ParseTuple(args, "y#p|O", &data, &n, &allowed, &now_obj)) return NULL;
    double now = now_obj == Py_None ? monotonic_now() : PyFloat_AsDouble(now_obj);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    uint8_t out[OUT_SIZE];
    Py_ssize_t olen = 0;
    PyObject *miss = NULL;
    int r = answer(e, (const uint8_t *)data, n, allowed, now, out, &olen, &miss);
    if (r == R_ERROR) return NULL;
    if (r == R_ANSWER) return PyBytes_FromStringAndSize((const char *)out, olen);
    if (r == R_DROP) Py_RETURN_NONE;
    if (miss) return miss;
    return PyLong_FromLong(r);
}

static PyObject *make_addr(const struct sockaddr_storage *sa) {
    char host[INET6_ADDRSTRLEN];
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(s4->sin_port));
    }
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
    return Py_BuildValue("(siIi)", host, ntohs(s6->sin6_port), ntohl(s6->sin6_flowinfo),
                         (int)s6->sin6_scope_id);
}

/* Append (reason, obj or the bytes, addr, allowed) to `list`; steals the reference to obj. */
static int push(PyObject *list, int reason, const uint8_t *data, Py_ssize_t n, PyObject *obj,
                const struct sockaddr_storage *sa, int allowed) {
    PyObject *addr = make_addr(sa);
    if (!addr) {
        Py_XDECREF(obj);
        return -1;
    }
    PyObject *item =
        obj ? Py_BuildValue("(iNNO)", reason, obj, addr, allowed ? Py_True : Py_False)
            : Py_BuildValue("(iy#NO)", reason, (const char *)data, n, addr,
                            allowed ? Py_True : Py_False);
    if (!item) return -1;
    int rc = PyList_Append(list, item);
    Py_DECREF(item);
    return rc;
}

/* drain(fd, rounds, now): up to `rounds` recvmmsg batches of 64 datagrams, answered and sent
 * with sendmmsg; `now` is the resolver's monotonic clock (the same one Python reads).
 * Returns [(reason, item, addr, allowed)]: 2 = handle the datagram (bytes) in Python, 3 = a
 * miss to forward (its Query), 4 = a reply the socket had no room for (bytes: queue it). */
static PyObject *Engine_drain(Engine *e, PyObject *args) {
    int fd, rounds;
    double now;
    if (!PyArg_ParseTuple(args, "iid", &fd, &rounds, &now)) return NULL;
    if (!e->rbuf) {
        e->rbuf = PyMem_RawMalloc((size_t)BATCH * RECV_SIZE);
        e->obuf = PyMem_RawMalloc((size_t)BATCH * OUT_SIZE);
        if (!e->rbuf || !e->obuf) return PyErr_NoMemory();
    }
    PyObject *rest = PyList_New(0);
    if (!rest) return NULL;
    for (int round = 0; round < rounds; round++) {
        for (int i = 0; i < BATCH; i++) {
            e->riov[i].iov_base = e->rbuf + (size_t)i * RECV_SIZE;
            e->riov[i].iov_len = RECV_SIZE;
            memset(&e->rmsg[i].msg_hdr, 0, sizeof(struct msghdr));
            e->rmsg[i].msg_hdr.msg_iov = &e->riov[i];
            e->rmsg[i].msg_hdr.msg_iovlen = 1;
            e->rmsg[i].msg_hdr.msg_name = &e->raddr[i];
            e->rmsg[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_storage);
        }
        int got = recvmmsg(fd, e->rmsg, BATCH, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            continue; /* EINTR, or an ICMP error queued for an earlier reply */
        }
        int nsend = 0;
        for (int i = 0; i < got; i++) {
            e->udp++;
            const uint8_t *d = e->rbuf + (size_t)i * RECV_SIZE;
            Py_ssize_t n = e->rmsg[i].msg_len;
            const struct sockaddr_storage *client = &e->raddr[i];
            struct sockaddr_storage real;
            if (e->px) { /* PROXY v2: the ACL and limits see the real client */
                Py_ssize_t skip = px_strip(e->px, &e->raddr[i], d, n, &real);
                if (skip < 0) continue;
                d += skip;
                n -= skip;
                client = &real;
            }
            int limited = e->rl ? rl_check(e->rl, client, now) : RL_ALLOW;
            int allowed = acl_allows(e, client);
            if (limited == RL_ALLOW && (e->rmsg[i].msg_hdr.msg_flags & MSG_TRUNC)) {
                /* longer than we read: Python */
                if (push(rest, R_PUNT, d, n, NULL, &e->raddr[i], allowed) < 0) goto error;
                continue;
            }
            uint8_t *o = e->obuf + (size_t)nsend * OUT_SIZE;
            Py_ssize_t olen = 0;
            PyObject *miss = NULL;
            int r = limited == RL_ALLOW ? answer(e, d, n, allowed, now, o, &olen, &miss)
                    : limited == RL_SLIP && (olen = slip_answer(d, n, o)) > 0
                        ? R_ANSWER
                        : R_DROP;
            if (r == R_ERROR) goto error;
            if (r == R_ANSWER) {
                e->siov[nsend].iov_base = o;
                e->siov[nsend].iov_len = (size_t)olen;
                memset(&e->smsg[nsend].msg_hdr, 0, sizeof(struct msghdr));
                e->smsg[nsend].msg_hdr.msg_iov = &e->siov[nsend];
                e->smsg[nsend].msg_hdr.msg_iovlen = 1;
                e->smsg[nsend].msg_hdr.msg_name = &e->raddr[i];
                e->smsg[nsend].msg_hdr.msg_namelen = e->rmsg[i].msg_hdr.msg_namelen;
                e->sidx[nsend] = i;
                nsend++;
            } else if (r != R_DROP) {
                if (push(rest, r, d, n, miss, &e->raddr[i], allowed) < 0) goto error;
            }
        }
        int sent = 0;
        while (sent < nsend) {
            int k = sendmmsg(fd, e->smsg + sent, (unsigned)(nsend - sent), MSG_DONTWAIT);
            if (k > 0) {
                sent += k;
                continue;
            }
            if (k < 0 && errno == EINTR) continue;
            if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                for (; sent < nsend; sent++)
                    if (push(rest, R_UNSENT, e->siov[sent].iov_base,
                             (Py_ssize_t)e->siov[sent].iov_len, NULL, &e->raddr[e->sidx[sent]],
                             1) < 0)
                        goto error;
                break;
            }
            sent++; /* e.g. the client's address became unreachable: like a lost reply */
        }
        if (got < BATCH) break;
    }
    return rest;
error:
    Py_DECREF(rest);
    return NULL;
}

static PyObject *Engine_get_bytes(Engine *e, void *c) { return PyLong_FromSsize_t(e->bytes); }
static PyObject *Engine_get_evictions(Engine *e, void *c) {
    return PyLong_FromSsize_t(e->evictions);
}
static PyObject *Engine_get_max_entries(Engine *e, void *c) {
    return PyLong_FromSsize_t(e->max_entries);
}
static PyObject *Engine_get_max_bytes(Engine *e, void *c) {
    return PyLong_FromSsize_t(e->max_bytes);
}
static PyObject *Engine_get_gen(Engine *e, void *c) { return PyLong_FromUnsignedLongLong(e->gen); }

static PyMethodDef Engine_methods[] = {
    {"set_list", (PyCFunction)Engine_set_list, METH_VARARGS,
     "set_list(index, gen, loaded, variants, ede_text): swap the list in force."},
    {"set_acl", (PyCFunction)Engine_set_acl, METH_VARARGS, "set_acl(v4, v6, refuse)"},
    {"set_stats", (PyCFunction)Engine_set_stats, METH_VARARGS,
     "set_stats(blocked_by_entry, max_entry_labels, servfail_without_list)"},
    {"set_proxy", (PyCFunction)Engine_set_proxy, METH_VARARGS,
     "set_proxy(v4, v6) or (None): senders trusted to send PROXY v2 headers."},
    {"proxy_counts", (PyCFunction)Engine_proxy_counts, METH_NOARGS,
     "(refused, errors): PROXY headers from untrusted senders, bad headers from trusted ones."},
    {"set_ratelimit", (PyCFunction)Engine_set_ratelimit, METH_VARARGS,
     "set_ratelimit(rate, burst, v4_prefix, v6_prefix, slip, max_clients) or (None)."},
    {"limit", (PyCFunction)Engine_limit, METH_VARARGS,
     "limit(host, now): 0 allow, 1 drop, 2 slip (counts like a datagram would)."},
    {"ratelimit_counts", (PyCFunction)Engine_ratelimit_counts, METH_NOARGS,
     "(dropped, slipped) by the rate limiter."},
    {"set_punt", (PyCFunction)Engine_set_punt, METH_VARARGS,
     "set_punt(entry_ids, all): hand blocks by these entries (or all blocks) to Python."},
    {"counters", (PyCFunction)Engine_counters, METH_NOARGS, "Counters kept by the fast path."},
    {"get", (PyCFunction)Engine_get, METH_VARARGS, "get(key, now): a cache entry or None."},
    {"put", (PyCFunction)Engine_put, METH_VARARGS, "put(key, entry): store a cache entry."},
    {"clear", (PyCFunction)Engine_clear, METH_NOARGS, "Empty the cache."},
    {"answer", (PyCFunction)Engine_answer, METH_VARARGS,
     "answer(data, allowed, now=None): bytes, None, or what Python must do (2 all, 3 miss)."},
    {"drain", (PyCFunction)Engine_drain, METH_VARARGS,
     "drain(fd, rounds, now): answer what the socket holds; returns what Python must handle."},
    {NULL}};
static PyGetSetDef Engine_getset[] = {
    {"bytes", (getter)Engine_get_bytes, NULL, "cached bytes", NULL},
    {"evictions", (getter)Engine_get_evictions, NULL, "entries evicted", NULL},
    {"max_entries", (getter)Engine_get_max_entries, NULL, NULL, NULL},
    {"max_bytes", (getter)Engine_get_max_bytes, NULL, NULL, NULL},
    {"gen", (getter)Engine_get_gen, NULL, "generation of the list in force", NULL},
    {NULL}};
static PySequenceMethods Engine_seq = {.sq_length = (lenfunc)Engine_len};

static PyTypeObject EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "resolver._fastpath.Engine",
    .tp_basicsize = sizeof(Engine),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = Engine_new,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
    .tp_getset = Engine_getset,
    .tp_as_sequence = &Engine_seq,
    .tp_doc = "The UDP fast path: response cache, list in force, ACL and the batch loop.",
};

static PyObject *mod_sha256(PyObject *m, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    uint8_t out[32];
    sha256(b.buf, (size_t)b.len, out);
    PyBuffer_Release(&b);
    return PyBytes_FromStringAndSize((const char *)out, 32);
}

static PyObject *mod_set_query_type(PyObject *m, PyObject *arg) {
    if (!PyType_Check(arg) || !PyType_IsSubtype((PyTypeObject *)arg, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "a tuple subclass is needed");
        return NULL;
    }
    Py_INCREF(arg);
    Py_XSETREF(query_type, arg);
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_query_type", mod_set_query_type, METH_O,
     "set_query_type(Query): misses are handed back as this 14-field tuple type."},
    {"sha256", mod_sha256, METH_O, "SHA-256 digest of a bytes-like object (the embedded one)."},
    {NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "resolver._fastpath",
                                       "The resolver's compiled UDP fast path.", -1,
                                       module_methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&ListIndexType) < 0 || PyType_Ready(&EngineType) < 0) return NULL;
    one_obj = PyLong_FromLong(1);
    if (!one_obj) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&ListIndexType);
    Py_INCREF(&EngineType);
    if (PyModule_AddObject(m, "ListIndex", (PyObject *)&ListIndexType) < 0 ||
        PyModule_AddObject(m, "Engine", (PyObject *)&EngineType) < 0 ||
        PyModule_AddIntConstant(m, "PUNT", R_PUNT) < 0 ||
        PyModule_AddIntConstant(m, "MISS", R_MISS) < 0 ||
        PyModule_AddIntConstant(m, "UNSENT", R_UNSENT) < 0 ||
        PyModule_AddIntConstant(m, "BATCH", BATCH) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
