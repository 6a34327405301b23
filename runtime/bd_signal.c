/* Integer backward signals: quantize_signal (boldc/ops/signal_ops.py, docs/training.md).
 *
 * z ~ q * 2^e: every step is an exact operation (the maximum, frexp, a power of two, the
 * scaling by it) or an exactly rounded one (rint, floor, v + u in double), so the integers
 * and the scale are the interpreter's on every machine. Storage [outer][hw][C] (a
 * channels-last map: hw = H*W, C channels; any other tensor: hw = 1), so element
 * (b, p, c) has the logical row-major index (b * C + c) * hw + p, the counter of the
 * stochastic rounding's hash.
 */
#include "boldc_rt.h"

#define BD_F32_MIN_EXP (-126) /* the scale stays a normal f32 */

double bd_uniform(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index)
{
    uint64_t z = seed * UINT64_C(0x9E3779B97F4A7C15) + stream * UINT64_C(0xD1B54A32D192ED03) +
                 step * UINT64_C(0x8CB92BA72F3D8DD7) + index;
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    z = z ^ (z >> 31);
    return (double)(z >> 40) / 16777216.0;
}

/* S: |q| < 2^S (linear rounding, S = bits - 1) or |q| <= 2^S (log: S = 2^(bits-1) - 2). */
static int span_of(int bits, int rounding)
{
    return rounding == BD_ROUND_LOG ? (1 << (bits - 1)) - 2 : bits - 1;
}

/* floor(v) for |v| < 2^51 (rint, one step down where it rounded up: exact). */
static double floor_small(double v)
{
    const double r = bd_rint_small(v);
    return r > v ? r - 1.0 : r;
}

/* +-2^k, k = round(log2 |v|): k = E if f >= sqrt(1/2) else E - 1 (|v| = f * 2^E, f in [0.5, 1));
 * 0 where k < 0, 2^kmax where k is larger (signal_ops.log_round). */
static double log_round(double v, int kmax)
{
    int big;
    const double f = frexp(fabs(v), &big);
    int k = f >= 0x1.6a09e667f3bcdp-1 ? big : big - 1; /* sqrt(0.5) rounded to double */
    if (k < 0) return 0.0;
    if (k > kmax) k = kmax;
    return v < 0.0 ? -bd_pow2i(k) : bd_pow2i(k);
}

/* max |z| (0 for no element), and whether every z is finite. On the bits: |z| is z's bits without
 * the sign, and for floats that are not NaN their order is the order of those integers, with
 * inf at 0x7f800000 and every NaN above it; an integer max the compiler vectorises (a float max
 * with a finiteness flag it did not). */
static float max_magnitude(const bd_exec *ex, long count, const float *z, int *finite)
{
    uint32_t top = 0;
    int bd_nt = ex->threads < 1 ? 1 : ex->threads;
    (void)bd_nt;
#ifdef _OPENMP
    BD_PRAGMA(omp parallel for schedule(static) num_threads(bd_nt) reduction(max:top) if(count > 65536))
#endif
    for (long i = 0; i < count; ++i) {
        uint32_t a;
        memcpy(&a, z + i, sizeof a);
        a &= UINT32_C(0x7fffffff);
        top = a > top ? a : top;
    }
    *finite = top < UINT32_C(0x7f800000);
    float m;
    memcpy(&m, &top, sizeof m);
    return m;
}

void bd_quantize_signal(const bd_quant *g, const bd_exec *ex, long outer, const float *z, const int32_t *step,
                        void *q, float *scale)
{
    const long runs = outer * g->hw, count = runs * g->C;
    const int wide = g->bits > 8, S = span_of(g->bits, g->rounding);
    const double top = g->rounding == BD_ROUND_LOG ? (double)(1 << S) : (double)((1 << S) - 1);
    int finite;
    const float m = max_magnitude(ex, count, z, &finite);
    if (!finite) {
        memset(q, 0, (size_t)count * (wide ? 2 : 1));
        *scale = NAN;
        return;
    }
    int big;
    (void)frexp((double)m, &big); /* m = f * 2^big; frexp(0) gives 0 */
    const int e = big - S > BD_F32_MIN_EXP ? big - S : BD_F32_MIN_EXP;
    const double inv = bd_pow2i(-e);
    const uint64_t counter = step ? (uint64_t)(int64_t)*step : 0;
    int bd_nt = ex->threads < 1 ? 1 : ex->threads;
    (void)bd_nt;
    *scale = (float)bd_pow2i(e);
    if (g->rounding == BD_ROUND_NEAREST) {
        /* the common case as one flat loop the compiler vectorises (no index arithmetic) */
        if (wide) {
            int16_t *out = (int16_t *)q;
            BD_OMP_FOR_IF(count > 65536)
            for (long i = 0; i < count; ++i) {
                const double level = bd_rint_small((double)z[i] * inv);
                out[i] = (int16_t)(level > top ? top : (level < -top ? -top : level));
            }
        } else {
            int8_t *out = (int8_t *)q;
            BD_OMP_FOR_IF(count > 65536)
            for (long i = 0; i < count; ++i) {
                const double level = bd_rint_small((double)z[i] * inv);
                out[i] = (int8_t)(level > top ? top : (level < -top ? -top : level));
            }
        }
        return;
    }
    BD_OMP_FOR_IF(count > 65536)
    for (long run = 0; run < runs; ++run) {
        const long b = run / g->hw, p = run % g->hw;
        for (int c = 0; c < g->C; ++c) {
            const long i = run * g->C + c;
            const double v = (double)z[i] * inv; /* exact: z / 2^e */
            double level;
            if (g->rounding == BD_ROUND_STOCHASTIC) {
                const uint64_t index = (uint64_t)((b * g->C + c) * g->hw + p);
                level = floor_small(v + bd_uniform(g->seed, g->stream, counter, index));
            } else {
                level = log_round(v, S);
            }
            level = level > top ? top : (level < -top ? -top : level);
            if (wide) ((int16_t *)q)[i] = (int16_t)level;
            else ((int8_t *)q)[i] = (int8_t)level;
        }
    }
}
