/* Entropy coding of y for formats 3 and 4: integer-only GMM frequency tables and a 64-bit rANS
 * coder over independent substreams (ecf_engine/rans.py is the Python side and the
 * reference; tests/test_rans.py compares them).
 *
 * Tables. An element has K mixture components with integer parameters (entropy.quantize_*):
 * logits l (units 1/8), means m (units 1/32) and log-scale indices k (sigma = exp(k/32)).
 * Weights e_i = EXPW[max l - l_i] (2**-16 units), centre c = round(sum e_i m_i / (32 sum e_i)),
 * half-width R = the smallest bucket covering every |m_i - 32c| + 8 sigma_i (SIG32 table),
 * and the cumulative table over the window c-R .. c+R (the edge bins carry the tails):
 * Phi((x - m) / sigma) = interpolated PHI table at z = (32x - m) * INVS[k] (2**-20 units),
 * mixed with the e_i, and every bin given at least one of the 2**PREC slots. All integer
 * arithmetic: the tables come out the same on every machine.
 *
 * rANS: 64-bit state, 32-bit words, PREC-bit frequencies (after F. Giesen's rans64). The
 * encoder runs backwards over a substream's symbols from an initial state x0; the decoder
 * reads forward and checks at the end that the state is back at x0 and every word was used.
 * Format 3 starts at x0 = RANS_L, the bottom of the normalized interval [RANS_L, RANS_L << 32).
 * Format 4 starts at x0 = 1: the state first grows from 1 to RANS_L without writing words, so
 * the two flushed words carry ~31 bits more information. Decoding is the same for both: the
 * state falls below RANS_L either when the encoder wrote a word (there is one left to read)
 * or, at the very end of a format-4 substream, in that start-up phase (every word read).
 * The decoder bounds-checks every read: garbage in gives an error code, never a crash.
 */
#include <stdint.h>
#include <string.h>

/* The constants of the format. ecf_engine/rans.py and entropy.py hold them too (the Python
 * side is the reference); ecf_rans_constants() reports these, and rans.py refuses a library
 * whose constants differ from its own (tests/test_rans.py checks that they agree). */
#define PREC 20                            /* frequencies in units of 2**-PREC */
#define TOT (1u << PREC)
#define RANS_L (1ull << 31)                /* bottom of the normalized state interval */
#define MAX_R 128                          /* the widest window half-width (the last bucket) */
#define MEAN_STEPS 32                      /* means in units of 1/32 */
#define WINDOW_SIGMAS 8                    /* a window reaches this many sigma past every mean */
#define Z_BITS 20                          /* (x - mean) / sigma in units of 2**-20 (INVS) */
#define PHI_STEP_BITS 10                   /* PHI's step: 2**-10 in z */
#define PHI_REACH 8                        /* PHI covers z in [-8, 8] */
#define PHI_BITS 32                        /* PHI values in units of 2**-32 */
#define ESC_LEN_BITS 6                     /* escape: the bit length of overflow + 1, in 6 bits */
#define ESC_CHUNK 16                       /* then its bits, in chunks of at most 16 */
#define MAX_ESC_BITS 40                    /* longer escapes are refused */
#define MAX_K 16                           /* mixture components per element at most (stack arrays) */
#define ZMAX ((int64_t)PHI_REACH << Z_BITS)
#define PHI_SHIFT (Z_BITS - PHI_STEP_BITS) /* z units per PHI step, as a shift */

enum { OK = 0, ERR_ESCAPE = 2, ERR_PARAMS = 4 };

/* The constants above, in this order, for rans.py's check; returns how many there are. */
int64_t ecf_rans_constants(int64_t *out, int64_t n) {
    const int64_t c[] = {PREC, RANS_L, MAX_R, MEAN_STEPS, WINDOW_SIGMAS, Z_BITS, PHI_STEP_BITS, PHI_REACH, PHI_BITS,
                         ESC_LEN_BITS, ESC_CHUNK, MAX_ESC_BITS, MAX_K};
    int64_t count = (int64_t)(sizeof c / sizeof c[0]);
    for (int64_t i = 0; i < n && i < count; i++) out[i] = c[i];
    return count;
}

typedef struct {
    const int64_t *expw;        /* EXPW[d], d = 0 .. n_expw-1 (last entry 0) */
    int64_t n_expw;
    const int64_t *sig32;       /* ceil(32 sigma) for k = k_min .. */
    const int64_t *invs;        /* round(2**20 / (32 sigma)) */
    int64_t k_min, n_k;
    const int64_t *phi;         /* round(2**32 Phi(i / 1024 - 8)), i = 0 .. 16384 */
    const int64_t *buckets;     /* window half-widths, ascending */
    int64_t n_buckets;
} Tables;

static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

static inline int64_t phi(const Tables *t, int64_t z) {
    if (z <= -ZMAX) return 0;
    if (z >= ZMAX) return (int64_t)1 << PHI_BITS;
    int64_t u = z + ZMAX, i = u >> PHI_SHIFT, f = u & ((1 << PHI_SHIFT) - 1);
    return t->phi[i] + (((t->phi[i + 1] - t->phi[i]) * f) >> PHI_SHIFT);
}

/* Window and cumulative frequencies of one element: cum[0..2R+1], cum[0] = 0, cum[2R+1] = TOT.
 * Returns R, or -1 for parameters outside the tables (cannot happen for quantize_* output). */
static int build(const Tables *t, const int32_t *lg, const int32_t *mu, const int32_t *ks, int K,
                 int64_t *c_out, uint32_t *cum) {
    int64_t e[MAX_K], w = 0, num = 0, lmax = lg[0];
    if (K > MAX_K) return -1;
    for (int i = 1; i < K; i++) if (lg[i] > lmax) lmax = lg[i];
    for (int i = 0; i < K; i++) {
        int64_t d = lmax - lg[i];
        e[i] = t->expw[d < t->n_expw ? d : t->n_expw - 1];
        w += e[i];
        num += e[i] * (int64_t)mu[i];
        if (ks[i] < t->k_min || ks[i] >= t->k_min + t->n_k) return -1;
    }
    int64_t c = floor_div(2 * num + MEAN_STEPS * w, 2 * MEAN_STEPS * w);     /* round(num / (MEAN_STEPS w)) */
    int64_t reach = 0;
    for (int i = 0; i < K; i++) {
        int64_t dm = (int64_t)mu[i] - MEAN_STEPS * c;
        int64_t r = (dm < 0 ? -dm : dm) + WINDOW_SIGMAS * t->sig32[ks[i] - t->k_min];
        if (r > reach) reach = r;
    }
    int64_t R = t->buckets[t->n_buckets - 1];
    for (int64_t b = 0; b < t->n_buckets; b++)
        if (MEAN_STEPS * t->buckets[b] >= reach) { R = t->buckets[b]; break; }
    uint64_t spare = TOT - (uint64_t)(2 * R + 1);
    cum[0] = 0;
    for (int64_t j = 0; j < 2 * R; j++) {
        int64_t x32 = MEAN_STEPS * (c - R + j) + MEAN_STEPS / 2, mix = 0;   /* edge between bins j and j+1 */
        for (int i = 0; i < K; i++) mix += e[i] * phi(t, (x32 - mu[i]) * t->invs[ks[i] - t->k_min]);
        uint64_t u = (uint64_t)(mix / w);                     /* <= 2**PHI_BITS */
        cum[j + 1] = (uint32_t)((u * spare) >> PHI_BITS) + (uint32_t)(j + 1);
    }
    cum[2 * R + 1] = TOT;
    *c_out = c;
    return (int)R;
}

/* Public for tests: windows and cumulative tables of n elements, cum rows of 2*MAX_R+2. */
int ecf_gmm_tables(const Tables *t, const int32_t *lg, const int32_t *mu, const int32_t *ks, int64_t n, int K,
                   int64_t *c, int64_t *R, uint32_t *cum) {
    for (int64_t i = 0; i < n; i++) {
        int r = build(t, lg + i * K, mu + i * K, ks + i * K, K, c + i, cum + i * (2 * MAX_R + 2));
        if (r < 0) return ERR_PARAMS;
        R[i] = r;
    }
    return OK;
}

/* -- encoder side: symbols as (start, freq) pairs, in decoding order ------------------------ */

/* For each element: its symbol, then (edge symbols only) the escape: the bit length n of
 * overflow + 1 (ESC_LEN_BITS, uniform), then its n low bits in chunks of <= ESC_CHUNK (uniform).
 * Writes up to 2 + MAX_ESC_BITS / ESC_CHUNK rounded up pairs per element; returns the number
 * written, -1 on bad parameters, -2 for a value too far from its window for the escape code. */
int64_t ecf_gmm_symbols(const Tables *t, const int32_t *lg, const int32_t *mu, const int32_t *ks,
                        const int64_t *values, int64_t n, int K, uint32_t *start, uint32_t *freq) {
    uint32_t cum[2 * MAX_R + 2];
    int64_t out = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t c;
        int R = build(t, lg + i * K, mu + i * K, ks + i * K, K, &c, cum);
        if (R < 0) return -1;
        int64_t v = values[i], idx = v - c + R;
        if (idx < 0) idx = 0;
        if (idx > 2 * R) idx = 2 * R;
        start[out] = cum[idx];
        freq[out++] = cum[idx + 1] - cum[idx];
        if (idx == 0 || idx == 2 * R) {
            uint64_t over = (uint64_t)(v < c ? (c - R) - v : v - (c + R)) + 1;
            int bits = 63 - __builtin_clzll(over);
            if (bits > MAX_ESC_BITS) return -2;              /* the decoder would refuse it */
            start[out] = (uint32_t)bits << (PREC - ESC_LEN_BITS);
            freq[out++] = 1u << (PREC - ESC_LEN_BITS);
            while (bits > 0) {
                int take = bits < ESC_CHUNK ? bits : ESC_CHUNK;
                bits -= take;
                start[out] = (uint32_t)((over >> bits) & ((1u << take) - 1)) << (PREC - take);
                freq[out++] = 1u << (PREC - take);
            }
        }
    }
    return out;
}

/* Encode n (start, freq) pairs (in decoding order) into 32-bit words, written backwards
 * from out[cap-1], starting in state x0 (1 <= x0 <= RANS_L); returns the number of words
 * (they end at out[cap-1]), or -1 if cap is too small. */
int64_t ecf_rans_encode(const uint32_t *start, const uint32_t *freq, int64_t n, uint32_t *out, int64_t cap,
                        uint64_t x0) {
    uint64_t x = x0;
    int64_t pos = cap;
    for (int64_t i = n - 1; i >= 0; i--) {
        uint64_t f = freq[i];
        uint64_t x_max = ((RANS_L >> PREC) << 32) * f;
        if (x >= x_max) {
            if (pos == 0) return -1;
            out[--pos] = (uint32_t)x;
            x >>= 32;
        }
        x = ((x / f) << PREC) + (x % f) + start[i];
    }
    if (pos < 2) return -1;
    out[--pos] = (uint32_t)(x >> 32);
    out[--pos] = (uint32_t)x;
    return cap - pos;
}

/* -- decoder ----------------------------------------------------------------------------- */

typedef struct {
    uint64_t x;
    int64_t pos, end;           /* next word, one past the last word of this substream */
    int64_t error;
} Decoder;

static inline void decode_slot(Decoder *d, const uint32_t *words, uint32_t start, uint32_t freq) {
    d->x = (uint64_t)freq * (d->x >> PREC) + (d->x & (TOT - 1)) - start;
    if (d->x < RANS_L && d->pos < d->end)  /* else: start-up phase, or damage (caught at the end) */
        d->x = (d->x << 32) | words[d->pos++];
}

static inline uint32_t decode_uniform(Decoder *d, const uint32_t *words, int bits) {
    uint32_t v = (uint32_t)(d->x & (TOT - 1)) >> (PREC - bits);
    decode_slot(d, words, v << (PREC - bits), 1u << (PREC - bits));
    return v;
}

/* Decode n values of one substream; stops at the first error (kept in d->error). */
static void decode_values(const Tables *t, Decoder *d, const uint32_t *words, const int32_t *lg,
                          const int32_t *mu, const int32_t *ks, int64_t n, int K, int64_t *values) {
    uint32_t cum[2 * MAX_R + 2];
    for (int64_t i = 0; i < n && d->error == OK; i++) {
        int64_t c;
        int R = build(t, lg + i * K, mu + i * K, ks + i * K, K, &c, cum);
        if (R < 0) { d->error = ERR_PARAMS; return; }
        uint32_t slot = (uint32_t)(d->x & (TOT - 1));
        int lo = 0, hi = 2 * R + 1;                 /* cum[lo] <= slot < cum[hi] */
        while (hi - lo > 1) {
            int mid = (lo + hi) / 2;
            if (cum[mid] <= slot) lo = mid; else hi = mid;
        }
        decode_slot(d, words, cum[lo], cum[lo + 1] - cum[lo]);
        int64_t v = c - R + lo;
        if (lo == 0 || lo == 2 * R) {
            int bits = (int)decode_uniform(d, words, ESC_LEN_BITS);
            if (bits > MAX_ESC_BITS) { d->error = ERR_ESCAPE; return; }
            uint64_t over = 1;
            while (bits > 0) {
                int take = bits < ESC_CHUNK ? bits : ESC_CHUNK;
                bits -= take;
                over = (over << take) | decode_uniform(d, words, take);
            }
            v = lo == 0 ? v - (int64_t)(over - 1) : v + (int64_t)(over - 1);
        }
        values[i] = v;
    }
}

/* One coding group over S substreams, in parallel: substream s decodes elements
 * offsets[s] .. offsets[s+1]-1. Returns the first error code of any substream (0: none). */
int ecf_rans_decode_group(const Tables *t, Decoder *decoders, const uint32_t *words, const int64_t *offsets,
                          int64_t S, const int32_t *lg, const int32_t *mu, const int32_t *ks, int K,
                          int64_t *values, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t s = 0; s < S; s++) {
        int64_t a = offsets[s], b = offsets[s + 1];
        decode_values(t, decoders + s, words, lg + a * K, mu + a * K, ks + a * K, b - a, K, values + a);
    }
    for (int64_t s = 0; s < S; s++) if (decoders[s].error) return (int)decoders[s].error;
    return OK;
}
