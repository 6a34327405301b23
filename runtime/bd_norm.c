/* Batch normalisation in training (boldc/ops/norm_ops.py): the batch statistics, the
 * normalisation and the running statistics, and the two gradients, with the interpreter's
 * bits.
 *
 * Every value is a double operation of the interpreter's formula, in its order. The
 * per-channel sums (of x, (x - mean)^2, dy, dy * xhat) are sequential, as norm_ops.channel_sums:
 *
 *   sum_c = (...((0.0 + v(0, c, 0)) + v(0, c, 1)) + ...) + v(n - 1, c, inner - 1),
 *
 * sample b ascending, and within a sample position p ascending (k = b * inner + p), one double
 * addition at a time. Channels last ([n][inner][C]) that is the storage order of the pixels.
 * Blocks of BD_BN_LANES channels are summed side by side (each in its own accumulator, so
 * each sum keeps its order), and the blocks are split across threads.
 */
#include "boldc_rt.h"

#define BD_BN_LANES 8 /* channels summed side by side (the blocks are what threads share) */

enum { SUM_X, SUM_DEV2, SUM_DY, SUM_DY_XHAT }; /* x; (x - mean)^2; dy; dy * xhat */

/* The tensors a statistic reads, and the per-channel values it needs. */
typedef struct {
    const bd_bnorm *g;
    long n;               /* batch of this call */
    const void *x;
    const float *dy;
    const double *mean;   /* SUM_DEV2, SUM_DY_XHAT */
    const double *invstd; /* SUM_DY_XHAT */
} bn_src;

static long bn_offset(const bd_bnorm *g, long b, int c, long p)
{
    return g->channels_last ? (b * g->inner + p) * g->C + c : (b * g->C + c) * g->inner + p;
}

static double x_at(const bd_bnorm *g, const void *x, long i)
{
    return bd_load_f64(x, g->x_type, i);
}

/* The value `what` of element (b, c, p). */
static double bn_value(const bn_src *s, int what, long b, int c, long p)
{
    const long i = bn_offset(s->g, b, c, p);
    switch (what) {
    case SUM_X: return x_at(s->g, s->x, i);
    case SUM_DEV2: {
        const double d = x_at(s->g, s->x, i) - s->mean[c];
        return d * d;
    }
    case SUM_DY: return (double)s->dy[i];
    default: {
        const double xhat = (x_at(s->g, s->x, i) - s->mean[c]) * s->invstd[c];
        return (double)s->dy[i] * xhat;
    }
    }
}

/* out[c] = the sequential sum of `what` over (b, p) for every channel c (see above). */
static void channel_sums(const bn_src *s, int what, double *out, int nt)
{
    const bd_bnorm *g = s->g;
    const long blocks = (g->C + BD_BN_LANES - 1) / BD_BN_LANES;
    int bd_nt = nt;
    (void)bd_nt;
    BD_OMP_FOR_IF(blocks > 1 && s->n * g->inner * (long)g->C > 65536)
    for (long blk = 0; blk < blocks; ++blk) {
        const int c0 = (int)blk * BD_BN_LANES;
        const int lanes = g->C - c0 < BD_BN_LANES ? g->C - c0 : BD_BN_LANES;
        double acc[BD_BN_LANES] = {0.0};
        for (long b = 0; b < s->n; ++b)
            for (long p = 0; p < g->inner; ++p)
                for (int l = 0; l < lanes; ++l) acc[l] = acc[l] + bn_value(s, what, b, c0 + l, p);
        for (int l = 0; l < lanes; ++l) out[c0 + l] = acc[l];
    }
}

/* ---- scratch: mean, invstd, var, two sums (C doubles each) ---- */

static size_t bn_vector_bytes(const bd_bnorm *g) { return BD_SCRATCH_ROUND(sizeof(double) * (size_t)g->C); }

static int bn_threads(const bd_bnorm *g, const bd_exec *ex)
{
    int nt = ex->threads < g->max_threads ? ex->threads : g->max_threads;
    return nt < 1 ? 1 : nt;
}

size_t bd_batchnorm_scratch(const bd_bnorm *g)
{
    return 5 * bn_vector_bytes(g);
}

typedef struct {
    double *mean, *invstd, *var, *sum_a, *sum_b;
    long count; /* values per channel, n * inner */
    int nt;
} bn_work;

static bn_work bn_work_of(const bd_bnorm *g, const bd_exec *ex, unsigned char *scratch)
{
    bn_work w;
    const size_t v = bn_vector_bytes(g);
    w.mean = (double *)scratch;
    w.invstd = (double *)(scratch + v);
    w.var = (double *)(scratch + 2 * v);
    w.sum_a = (double *)(scratch + 3 * v);
    w.sum_b = (double *)(scratch + 4 * v);
    w.count = (long)ex->n * g->inner;
    w.nt = bn_threads(g, ex);
    return w;
}

/* mean = sum x / count, var = sum (x - mean)^2 / count, invstd = 1 / sqrt(var + eps). */
static void batch_statistics(const bd_bnorm *g, const bd_exec *ex, const void *x, bn_work *w)
{
    bn_src s = {g, ex->n, x, NULL, w->mean, NULL};
    const double count = (double)w->count;
    channel_sums(&s, SUM_X, w->mean, w->nt);
    for (int c = 0; c < g->C; ++c) w->mean[c] = w->mean[c] / count;
    channel_sums(&s, SUM_DEV2, w->var, w->nt);
    for (int c = 0; c < g->C; ++c) {
        w->var[c] = w->var[c] / count;
        w->invstd[c] = 1.0 / sqrt(w->var[c] + g->epsilon);
    }
}

/* Every element (b, c, p) of the call's tensors, in storage order, threads over samples. */
#define BN_EACH(g, ex, nt, ...)                                                                       \
    do {                                                                                              \
        int bd_nt = (nt);                                                                             \
        (void)bd_nt;                                                                                  \
        BD_OMP_FOR_IF((long)(ex)->n * (g)->inner * (long)(g)->C > 65536)                              \
        for (long b = 0; b < (long)(ex)->n; ++b)                                                      \
            for (long p = 0; p < (g)->inner; ++p)                                                     \
                for (int c = 0; c < (g)->C; ++c) {                                                    \
                    const long i = bn_offset((g), b, c, p);                                           \
                    __VA_ARGS__                                                                       \
                }                                                                                     \
    } while (0)

void bd_batchnorm_train(const bd_bnorm *g, const bd_exec *ex, const void *x, const float *scale, const float *bias,
                        float *running_mean, float *running_var, float *y, unsigned char *scratch)
{
    bn_work w = bn_work_of(g, ex, scratch);
    batch_statistics(g, ex, x, &w);
    const double *mean = w.mean, *invstd = w.invstd;
    BN_EACH(g, ex, w.nt, {
        const double d = x_at(g, x, i) - mean[c];
        const double t = d * invstd[c];
        const double u = t * (double)scale[c];
        y[i] = (float)(u + (double)bias[c]);
    });
    const double mom = g->momentum, keep = 1.0 - mom;
    const double unbias = (double)w.count / (double)(w.count - 1);
    for (int c = 0; c < g->C; ++c) {
        const double old_mean = keep * (double)running_mean[c], new_mean = mom * mean[c];
        running_mean[c] = (float)(old_mean + new_mean);
        const double old_var = keep * (double)running_var[c], batch_var = mom * w.var[c];
        const double new_var = batch_var * unbias;
        running_var[c] = (float)(old_var + new_var);
    }
}

void bd_batchnorm_train_grad_x(const bd_bnorm *g, const bd_exec *ex, const float *dy, const void *x,
                               const float *scale, float *dx, unsigned char *scratch)
{
    bn_work w = bn_work_of(g, ex, scratch);
    batch_statistics(g, ex, x, &w);
    const bn_src s = {g, ex->n, x, dy, w.mean, w.invstd};
    channel_sums(&s, SUM_DY, w.sum_a, w.nt);
    channel_sums(&s, SUM_DY_XHAT, w.sum_b, w.nt);
    const double count = (double)w.count;
    double *k = w.var; /* var is not needed any more: k = (scale * invstd) / count */
    for (int c = 0; c < g->C; ++c) {
        const double t = (double)scale[c] * w.invstd[c];
        k[c] = t / count;
    }
    const double *mean = w.mean, *invstd = w.invstd, *sum_dy = w.sum_a, *sum_dy_xhat = w.sum_b;
    BN_EACH(g, ex, w.nt, {
        const double d = x_at(g, x, i) - mean[c];
        const double xhat = d * invstd[c];
        const double ndy = count * (double)dy[i];
        const double centred = ndy - sum_dy[c];
        const double along = xhat * sum_dy_xhat[c];
        dx[i] = (float)(k[c] * (centred - along));
    });
}

void bd_batchnorm_train_grad_scale(const bd_bnorm *g, const bd_exec *ex, const float *dy, const void *x,
                                   float *dscale, unsigned char *scratch)
{
    bn_work w = bn_work_of(g, ex, scratch);
    batch_statistics(g, ex, x, &w);
    const bn_src s = {g, ex->n, x, dy, w.mean, w.invstd};
    channel_sums(&s, SUM_DY_XHAT, w.sum_a, w.nt);
    for (int c = 0; c < g->C; ++c) dscale[c] = (float)w.sum_a[c];
}
