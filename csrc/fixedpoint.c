/* Fused CPU loops for the fixed-point entropy-parameter networks (ecf_engine/fixedpoint.py).
 *
 * Every value is an integer held in a double (|v| < 2**52, so exact). Each function does
 * what a chain of PyTorch ops in fixedpoint.py does, in one pass over the data, with
 * exactly the same integer results (tests/test_fixedpoint.py compares them). Rows are
 * independent, so the thread count cannot change a result. Plain C with OpenMP, loaded
 * through ctypes: it builds in about a second and needs no PyTorch headers.
 *
 * Build: cc -O3 -fPIC -shared -fopenmp -ffp-contract=off fixedpoint.c -o libecf_fixedpoint.so
 * (no -ffast-math: the code relies on IEEE floor and exact integer arithmetic).
 */
#include <math.h>
#include <stdint.h>

/* floor(a / b) for b > 0 */
static inline int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* a / b rounded to nearest, ties up, for b > 0 (fixedpoint.div_round) */
static inline int64_t div_round(int64_t a, int64_t b) { return floor_div(2 * a + b, 2 * b); }

static inline double clampd(double v, double limit) { return v < -limit ? -limit : (v > limit ? limit : v); }

/* x (outer, channels, inner) += bias[channel]; then round(x * scale) (ties up; scale = 2**-k,
 * k > 0) or x * scale (k <= 0); then clamp to +-limit. In place. bias may be NULL. */
void fp_requant(double *x, int64_t outer, int64_t channels, int64_t inner, const double *bias, double scale,
                int round_half, double limit, int threads) {
    int64_t n = outer * channels * inner;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        if (bias) v += bias[(i / inner) % channels];
        v = round_half ? floor(v * scale + 0.5) : v * scale;
        x[i] = clampd(v, limit);
    }
}

/* GELU by table: x >= reach -> x, x <= -reach -> 0, else table[x + reach]. In place. */
void fp_gelu(double *x, int64_t n, const double *table, double reach, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        x[i] = v >= reach ? v : (v <= -reach ? 0.0 : table[(int64_t)(v + reach)]);
    }
}

/* Attention weights, in place. scores: (B, nW, heads, Nq, Nk) raw q.k products (2*frac
 * fractional bits); bias: (heads, Nq, Nk); key_valid: (nW, Nk); causal: (Nq, Nk) (1 where
 * the query may see the key). For each row: s = round(q.k * 2**-frac) + bias on allowed
 * keys, then exp_table[min(max s - s, table_len - 1)] (0 on the others); sums[row] gets
 * max(1, the row's sum). */
void fp_softmax_weights(double *scores, const double *bias, const uint8_t *key_valid, const uint8_t *causal,
                        double *sums, int64_t B, int64_t nW, int64_t heads, int64_t Nq, int64_t Nk,
                        double scale, const double *exp_table, int64_t table_len, int threads) {
    int64_t rows = B * nW * heads * Nq;
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t q = r % Nq, h = (r / Nq) % heads, w = (r / (Nq * heads)) % nW;
        double *s = scores + r * Nk;
        const double *b = bias + (h * Nq + q) * Nk;
        const uint8_t *kv = key_valid + w * Nk, *cz = causal + q * Nk;
        double m = -INFINITY;
        for (int64_t k = 0; k < Nk; k++) {
            if (kv[k] && cz[k]) {
                double v = floor(s[k] * scale + 0.5) + b[k];
                s[k] = v;
                if (v > m) m = v;
            } else {
                s[k] = -INFINITY;
            }
        }
        double total = 0.0;
        for (int64_t k = 0; k < Nk; k++) {
            double e = 0.0;
            if (s[k] != -INFINITY) {
                double t = m - s[k];
                e = exp_table[t < (double)(table_len - 1) ? (int64_t)t : table_len - 1];
            }
            s[k] = e;
            total += e;
        }
        sums[r] = total < 1.0 ? 1.0 : total;
    }
}

/* o (rows, width) = div_round(o, sums[row]), in place. */
void fp_normalize(double *o, const double *sums, int64_t rows, int64_t width, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        int64_t den = (int64_t)sums[r];
        for (int64_t j = 0; j < width; j++) o[r * width + j] = (double)div_round((int64_t)o[r * width + j], den);
    }
}

static inline int64_t isqrt64(int64_t v) {
    int64_t s = (int64_t)floor(sqrt((double)v));
    if (s * s > v) s--;
    if ((s + 1) * (s + 1) <= v) s++;
    return s;
}

/* LayerNorm over rows of n (fixedpoint.LayerNorm): y = clamp(round(d * one / isqrt(var) *
 * gamma * 2**-gamma_frac) + beta), d = x - round(mean), var = round(mean(d^2)) + eps. */
void fp_layernorm(const double *x, double *y, int64_t rows, int64_t n, const double *gamma, const double *beta,
                  int64_t eps, int64_t one, int gamma_frac, double limit, int threads) {
    #pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * n;
        double *yr = y + r * n;
        int64_t sum = 0;
        for (int64_t i = 0; i < n; i++) sum += (int64_t)xr[i];
        int64_t mean = div_round(sum, n), sq = 0;
        for (int64_t i = 0; i < n; i++) {
            int64_t d = (int64_t)xr[i] - mean;
            sq += d * d;
        }
        int64_t sd = isqrt64(floor_div(2 * sq + n, 2 * n) + eps);
        for (int64_t i = 0; i < n; i++) {
            int64_t v = div_round(((int64_t)xr[i] - mean) * one, sd);
            int64_t g = (int64_t)(v * (int64_t)gamma[i]);
            double out = (double)((g + ((int64_t)1 << (gamma_frac - 1))) >> gamma_frac) + beta[i];
            yr[i] = clampd(out, limit);
        }
    }
}
