/* Optimizer updates and the loss gradient of the training step (docs/method.md §4, docs/training.md
 * "Determinism").
 *
 * The Boolean update must give the interpreter's flips bit for bit from the same f32
 * inputs, so M's update is written as three f32 operations in separate statements and
 * the runtime is compiled without FP contraction (-ffp-contract=off; -std=c99 implies
 * it for gcc): no fused multiply-add may merge them. Adam follows the interpreter's
 * double-precision formula operation by operation, rounded once to f32.
 */
#include "boldc_rt.h"

/* beta for the next step: (float)((double)kept / numel), 1 for an empty param. */
static float kept_fraction(long numel, long flips)
{
    return numel ? (float)((double)(numel - flips) / (double)numel) : 1.0f;
}

/* The i16 accumulator of entry i (units of `step`): M = fl(fl(beta * m * step) + fl(eta * q)) in
 * f32 (m * step exact), then units = rint(M / step) in double (the scaling by a power of two is
 * exact, so M * (1 / step) is the same; half to even), saturated at +-32767 (*sats counts
 * it), the flip decided on the units against 1 / step. Returns the flip; m becomes the units,
 * 0 where flipped (and for a NaN M, which numpy's cast leaves undefined). */
static inline int flip_i16(int16_t *m, float b, float e, float q, float step, double per_one, int bit, long *sats)
{
    const float current = (float)*m * step;
    const float m1 = b * current;
    const float m2 = e * q;
    const float acc = m1 + m2;
    const double v = (double)acc * per_one;
    double units = fabs(v) <= 65536.0 ? bd_rint_small(v) : v; /* beyond: saturates (or NaN) */
    *sats += fabs(units) > 32767.0;
    units = units > 32767.0 ? 32767.0 : (units < -32767.0 ? -32767.0 : units);
    const int flip = (bit & (units >= per_one)) | ((bit ^ 1) & (units <= -per_one));
    *m = (int16_t)(flip || units != units ? 0.0 : units);
    return flip;
}

/* The f32 accumulator of one entry: M = fl(fl(beta * M) + fl(eta * q)), three statements. */
static inline int flip_f32(float *m, float b, float e, float q, int bit)
{
    const float m1 = b * *m;
    const float m2 = e * q;
    const float acc = m1 + m2;
    const int flip = (bit & (acc >= 1.0f)) | ((bit ^ 1) & (acc <= -1.0f)); /* no branch on random bits */
    *m = flip ? 0.0f : acc;
    return flip;
}

#ifdef _OPENMP
#define BD_FLIP_OMP(flips, sats, cond) \
    BD_PRAGMA(omp parallel for schedule(static) num_threads(bd_nt) reduction(+:flips, sats) if(cond))
#else
#define BD_FLIP_OMP(flips, sats, cond)
#endif

/* Every entry i of W (runs of D bits, in words) with `flip`, an expression of i and of the
 * entry's bit `bit` giving its flip; counts the flips into `flips` (one loop per update kind,
 * each compiled on its own). */
#define BD_FLIP_RUNS(runs, D, w, flips, sats, flip)                                                     \
    do {                                                                                                \
        const int words_ = BD_WORDS(D);                                                                 \
        int bd_nt = ex->threads < 1 ? 1 : ex->threads;                                                  \
        (void)bd_nt;                                                                                    \
        BD_FLIP_OMP(flips, sats, (runs) * (long)(D) > 65536)                                            \
        for (long r = 0; r < (runs); ++r) {                                                             \
            for (int wd = 0; wd < words_; ++wd) {                                                       \
                const uint64_t word = (w)[r * words_ + wd];                                             \
                const int end = (D) - 64 * wd < 64 ? (D) - 64 * wd : 64;                                \
                const long i0 = r * (long)(D) + 64L * wd;                                               \
                uint64_t flipped = 0;                                                                   \
                for (int k = 0; k < end; ++k) {                                                         \
                    const long i = i0 + k;                                                              \
                    const int bit = (int)((word >> k) & 1u);                                            \
                    flipped |= (uint64_t)(flip) << k;                                                   \
                }                                                                                       \
                (w)[r * words_ + wd] = word ^ flipped;                                                  \
                flips += bd_popcount64(flipped);                                                        \
            }                                                                                           \
        }                                                                                               \
    } while (0)

void bd_flip_update(const bd_exec *ex, long runs, int D, uint64_t *w, float *m, float *beta, const float *q,
                    const float *eta)
{
    const float b = *beta, e = *eta;
    long flips = 0, sats = 0;
    BD_FLIP_RUNS(runs, D, w, flips, sats, flip_f32(m + i, b, e, q[i], bit));
    (void)sats;
    *beta = kept_fraction(runs * (long)D, flips);
}

void bd_flip_update_i16(const bd_exec *ex, long runs, int D, uint64_t *w, int16_t *m, float *beta, const float *q,
                        const float *eta, float m_step, int32_t *saturated)
{
    const float b = *beta, e = *eta;
    const double per_one = 1.0 / (double)m_step;
    long flips = 0, sats = 0;
    BD_FLIP_RUNS(runs, D, w, flips, sats, flip_i16(m + i, b, e, q[i], m_step, per_one, bit, &sats));
    *beta = kept_fraction(runs * (long)D, flips);
    const int64_t total = (int64_t)*saturated + sats;
    *saturated = total > INT32_MAX ? INT32_MAX : (int32_t)total;
}
#undef BD_FLIP_RUNS
#undef BD_FLIP_OMP

#define BD_TANH_CHUNK 256

/* In chunks: bd_dtanh's t = bd_exp(-2|u|) is bd_exp_nonpos(-2|u|) for -2|u| >= -708 (the same
 * operations, branch-free: the compiler vectorises the chunk), so a chunk whose every -2|u| is
 * there keeps those values; a chunk with a smaller one (or a NaN) is computed again with
 * bd_dtanh. The chunk is written after it is read (in place is safe). */
void bd_threshold_grad_tanh(const bd_exec *ex, long count, const float *dy, const float *x, double alpha, double tau,
                            float *y)
{
    const long chunks = (count + BD_TANH_CHUNK - 1) / BD_TANH_CHUNK;
    int bd_nt = ex->threads < 1 ? 1 : ex->threads;
    (void)bd_nt;
    BD_OMP_FOR_IF(count > 65536)
    for (long ch = 0; ch < chunks; ++ch) {
        const long i0 = ch * BD_TANH_CHUNK;
        const int n = count - i0 < BD_TANH_CHUNK ? (int)(count - i0) : BD_TANH_CHUNK;
        float out[BD_TANH_CHUNK];
        int outside = 0;
        for (int i = 0; i < n; ++i) {
            const double u = alpha * ((double)x[i0 + i] - tau);
            const double a = -2.0 * fabs(u);
            const double t = bd_exp_nonpos(a);
            const double one_t = 1.0 + t;
            const double num = 4.0 * t;
            out[i] = (float)((double)dy[i0 + i] * (num / (one_t * one_t)));
            outside |= !(a >= -708.0);
        }
        if (outside)
            for (int i = 0; i < n; ++i) out[i] = (float)((double)dy[i0 + i] * bd_dtanh(alpha * ((double)x[i0 + i] - tau)));
        memcpy(y + i0, out, sizeof(float) * (size_t)n);
    }
}

void bd_adam_update(const bd_exec *ex, long count, float *p, float *m, float *v, const float *g, const float *lr,
                    const int32_t *step, double beta1, double beta2, double eps, double weight_decay)
{
    const double t = (double)*step + 1.0;
    const double bc1 = 1.0 - pow(beta1, t), bc2 = 1.0 - pow(beta2, t), rate = (double)*lr;
    int bd_nt = ex->threads < 1 ? 1 : ex->threads;
    (void)bd_nt;
    BD_OMP_FOR_IF(count > 65536)
    for (long i = 0; i < count; ++i) {
        const double pi = (double)p[i];
        const double gi = (double)g[i] + weight_decay * pi;
        const double mi = beta1 * (double)m[i] + (1.0 - beta1) * gi;
        const double vi = beta2 * (double)v[i] + (1.0 - beta2) * gi * gi;
        p[i] = (float)(pi - rate * (mi / bc1) / (sqrt(vi / bc2) + eps));
        m[i] = (float)mi;
        v[i] = (float)vi;
    }
}

void bd_softmax_xent_grad_map(long outer, long inner, int classes, long pos_stride, long class_stride, const float *z,
                              const int32_t *labels, int32_t ignore_index, int mean, float *dz)
{
    long count = 0; /* what "mean" divides by: the labels that are not ignored */
    for (long p = 0; p < outer * inner; ++p) count += labels[p] != ignore_index;
    for (long k = 0; k < outer; ++k) {
        for (long s = 0; s < inner; ++s) {
            const long base = k * classes * inner + s * pos_stride;
            const float *zr = z + base;
            float *o = dz + base;
            const int32_t label = labels[k * inner + s];
            if (label == ignore_index) {
                for (int c = 0; c < classes; ++c) o[c * class_stride] = 0.0f;
                continue;
            }
            double top = classes > 0 ? (double)zr[0] : 0.0; /* numpy's max: the first NaN wins */
            for (int c = 1; c < classes; ++c) {
                const double v = (double)zr[c * class_stride];
                if (top == top && (v > top || v != v)) top = v;
            }
            double total = 0.0;
            for (int c = 0; c < classes; ++c) total = total + bd_exp((double)zr[c * class_stride] - top);
            for (int c = 0; c < classes; ++c) {
                double g = bd_exp((double)zr[c * class_stride] - top) / total;
                if (c == label) g = g - 1.0;
                if (mean) g = g / (double)count;
                o[c * class_stride] = (float)g;
            }
        }
    }
}

void bd_softmax_xent_grad(long rows, int classes, const float *z, const int32_t *labels, int mean, float *dz)
{
    bd_softmax_xent_grad_map(rows, 1, classes, classes, 1, z, labels, -1, mean, dz); /* -1: no label in range */
}
