/* Optimizer updates of the training step (SPEC §4, docs/training.md "Determinism").
 *
 * The Boolean update must give the interpreter's flips bit for bit from the same f32
 * inputs, so M's update is written as three f32 operations in separate statements and
 * the runtime is compiled without FP contraction (-ffp-contract=off; -std=c99 implies
 * it for gcc): no fused multiply-add may merge them. Adam follows the interpreter's
 * double-precision formula operation by operation, rounded once to f32.
 */
#include "boldc_rt.h"

void bd_flip_update(const bd_exec *ex, long runs, int D, uint64_t *w, float *m, float *beta, const float *q,
                    const float *eta)
{
    const float b = *beta, e = *eta;
    const int words = BD_WORDS(D);
    long flips = 0;
    int bd_nt = ex->threads < 1 ? 1 : ex->threads;
    (void)bd_nt;
#ifdef _OPENMP
    BD_PRAGMA(omp parallel for schedule(static) num_threads(bd_nt) reduction(+:flips) if(runs * (long)D > 65536))
#endif
    for (long r = 0; r < runs; ++r) {
        for (int wd = 0; wd < words; ++wd) {
            const uint64_t word = w[r * words + wd];
            const int end = D - 64 * wd < 64 ? D - 64 * wd : 64;
            float *mr = m + r * (long)D + 64L * wd;
            const float *qr = q + r * (long)D + 64L * wd;
            uint64_t flipped = 0;
            for (int k = 0; k < end; ++k) {
                const float m1 = b * mr[k];
                const float m2 = e * qr[k];
                const float acc = m1 + m2;
                const int flip = ((word >> k) & 1u) ? acc >= 1.0f : acc <= -1.0f;
                mr[k] = flip ? 0.0f : acc;
                flipped |= (uint64_t)flip << k;
            }
            w[r * words + wd] = word ^ flipped;
            flips += bd_popcount64(flipped);
        }
    }
    const long numel = runs * (long)D;
    *beta = numel ? (float)((double)(numel - flips) / (double)numel) : 1.0f;
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
