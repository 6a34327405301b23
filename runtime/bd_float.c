/* Float and mixed layers: convolution (f32 accumulation) and linear (double, fixed order).
 *
 * Convolution: y[p][m] = bias[m] + sum_k A[p][k] * Wt[k][m], summed in k order in float32,
 * A the im2col patch of pixel p (zero padding) converted to float from its dtype (b1 reads
 * as e(b) = +-1, docs/method.md §1); mixed layers (b1 weights) use sign * e(w). The filters are
 * transposed into scratch once per call so the ISA layer's micro-kernel (bd_isa_fgemm4,
 * bd_isa.h) runs over BD_FM = 32 output channels.
 *
 * Linear (float_ops.Linear, boolean_ops.MLinear): y[r][m] = (float)(sign * acc + bias[m]) with
 * acc = sum_k x[r][k] * e(W[m][k]) in double, k ascending, one rounding per addition
 * (common.matmul_in_order: the interpreter's bits on every machine), x read as float32 as
 * the interpreter reads it (an i32 input rounded to float first). The same transposed
 * weights, the ISA layer's bd_isa_dgemm4_f32 on 4 rows x 32 output channels.
 */
#include "bd_isa.h"

#define BD_FCHUNK 16

static long fround_up(long v, long m) { return (v + m - 1) / m * m; }

static float load_number(const void *x, int x_type, long elem_off, long word_off, int bit)
{
    switch (x_type) {
    case BD_F32: return ((const float *)x)[elem_off];
    case BD_I8: return (float)((const int8_t *)x)[elem_off];
    case BD_I16: return (float)((const int16_t *)x)[elem_off];
    case BD_I32: return (float)((const int32_t *)x)[elem_off];
    default: return ((((const uint64_t *)x)[word_off] >> bit) & 1u) ? 1.0f : -1.0f;
    }
}

/* Element c of the run starting at run-th position of x (runs of `len` elements). */
static float load_run(const void *x, int x_type, long run, int len, int c)
{
    return load_number(x, x_type, run * len + c, run * BD_WORDS(len) + (c >> 6), c & 63);
}

/* Wt[k][m] (m < Mp, zero beyond M) from w: M rows of K floats, or of K bits per run of
 * `run` bits (rows of K/run runs, each ceil(run/64) words). */
static void transpose_weights(const void *w, int w_type, int sign, int M, int K, int run, float *Wt, long ldt)
{
    const int runs = K / run, rw = BD_WORDS(run);
    for (int m = 0; m < M; ++m) {
        for (int k = 0; k < K; ++k) {
            float v;
            if (w_type == BD_F32) {
                v = ((const float *)w)[(long)m * K + k];
            } else {
                const uint64_t *row = (const uint64_t *)w + (long)m * runs * rw;
                const int t = k / run, c = k % run;
                v = ((row[(long)t * rw + (c >> 6)] >> (c & 63)) & 1u) ? (float)sign : (float)-sign;
            }
            Wt[(long)k * ldt + m] = v;
        }
    }
    for (int k = 0; k < K; ++k)
        for (long m = M; m < ldt; ++m) Wt[(long)k * ldt + m] = 0.0f;
}

/* y rows (stride M, starting at column m_off) for `rows` rows of A against all Mg channels. */
static void fgemm_rows(const float *A, int rows, int K, const float *Wt, long ldt, int Mg, const float *bias,
                       float *y, long ldy)
{
    float acc[BD_FQUAD * BD_FM];
    for (int r = 0; r < rows; r += BD_FQUAD) {
        for (int mb = 0; mb < Mg; mb += BD_FM) {
            bd_isa_fgemm4(A + (long)r * K, K, Wt + mb, ldt, acc);
            const int len = Mg - mb < BD_FM ? Mg - mb : BD_FM;
            for (int q = 0; q < BD_FQUAD && r + q < rows; ++q) {
                float *o = y + (long)(r + q) * ldy + mb;
                for (int j = 0; j < len; ++j) o[j] = bias ? acc[q * BD_FM + j] + bias[mb + j] : acc[q * BD_FM + j];
            }
        }
    }
}

/* ---- conv ------------------------------------------------------------------------------- */

typedef struct {
    int Cg, taps, K, Mg, Mgp;
    size_t wt_bytes, patch_bytes;
} fconv_sizes;

static fconv_sizes fconv_sizes_of(const bd_fconv *g)
{
    fconv_sizes s;
    s.Cg = g->C / g->groups;
    s.taps = g->kh * g->kw;
    s.K = s.taps * s.Cg;
    s.Mg = g->M / g->groups;
    s.Mgp = (int)fround_up(s.Mg, BD_FM);
    s.wt_bytes = BD_SCRATCH_ROUND(sizeof(float) * (size_t)g->groups * (size_t)s.K * (size_t)s.Mgp);
    s.patch_bytes = BD_SCRATCH_ROUND(sizeof(float) * (size_t)BD_FCHUNK * (size_t)s.K);
    return s;
}

size_t bd_fconv2d_scratch(const bd_fconv *g)
{
    const fconv_sizes s = fconv_sizes_of(g);
    return s.wt_bytes + (size_t)g->max_threads * s.patch_bytes;
}

void bd_fconv2d(const bd_fconv *g, const bd_exec *ex, const void *x, const void *w, const float *bias, float *y,
                unsigned char *scratch)
{
    const fconv_sizes s = fconv_sizes_of(g);
    float *Wt = (float *)scratch;
    unsigned char *per_thread = scratch + s.wt_bytes;
    for (int gi = 0; gi < g->groups; ++gi) {
        const void *wg = g->w_type == BD_F32 ? (const void *)((const float *)w + (long)gi * s.Mg * s.K)
                                             : (const void *)((const uint64_t *)w +
                                                              (long)gi * s.Mg * s.taps * BD_WORDS(s.Cg));
        transpose_weights(wg, g->w_type, g->sign, s.Mg, s.K, s.Cg, Wt + (long)gi * s.K * s.Mgp, s.Mgp);
    }
    const long pixels = (long)ex->n * g->OH * g->OW;
    const long chunks = (pixels + BD_FCHUNK - 1) / BD_FCHUNK;
    int bd_nt = ex->threads < g->max_threads ? ex->threads : g->max_threads;
    if (bd_nt < 1) bd_nt = 1;
    (void)bd_nt;
    BD_OMP_FOR
    for (long ch = 0; ch < chunks; ++ch) {
        float *P = (float *)(per_thread + (size_t)bd_thread_id() * s.patch_bytes);
        const long p0 = ch * BD_FCHUNK;
        const int rows = pixels - p0 < BD_FCHUNK ? (int)(pixels - p0) : BD_FCHUNK;
        for (int gi = 0; gi < g->groups; ++gi) {
            for (int r = 0; r < BD_FCHUNK; ++r) {
                float *row = P + (long)r * s.K;
                if (r >= rows) {
                    memset(row, 0, sizeof(float) * (size_t)s.K);
                    continue;
                }
                const long p = p0 + r;
                const long b = p / ((long)g->OH * g->OW);
                const int oh = (int)(p / g->OW % g->OH), ow = (int)(p % g->OW);
                for (int i = 0; i < g->kh; ++i) {
                    const int ih = oh * g->sh - g->pt + i * g->dh;
                    for (int j = 0; j < g->kw; ++j) {
                        const int iw = ow * g->sw - g->pl + j * g->dw;
                        float *dst = row + (long)(i * g->kw + j) * s.Cg;
                        if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) {
                            for (int c = 0; c < s.Cg; ++c) dst[c] = 0.0f;
                            continue;
                        }
                        const long px = (b * g->H + ih) * g->W + iw;
                        if (g->x_type == BD_F32) {
                            memcpy(dst, (const float *)x + px * g->C + (long)gi * s.Cg, sizeof(float) * (size_t)s.Cg);
                        } else {
                            for (int c = 0; c < s.Cg; ++c) dst[c] = load_run(x, g->x_type, px, g->C, gi * s.Cg + c);
                        }
                    }
                }
            }
            fgemm_rows(P, rows, s.K, Wt + (long)gi * s.K * s.Mgp, s.Mgp, s.Mg, bias ? bias + gi * s.Mg : NULL,
                       y + p0 * g->M + (long)gi * s.Mg, g->M);
        }
    }
}

/* ---- linear -------------------------------------------------------------------------------- */

typedef char bd_flinear_tile_check[(BD_FQUAD == BD_DQ && BD_FM == BD_DN) ? 1 : -1]; /* the scratch's tile */

static int flinear_Mp(const bd_flinear *g) { return (int)fround_up(g->M, BD_FM); }

size_t bd_flinear_scratch(const bd_flinear *g)
{
    return BD_SCRATCH_ROUND(sizeof(float) * (size_t)g->K * (size_t)flinear_Mp(g)) +
           (size_t)g->max_threads * BD_SCRATCH_ROUND(sizeof(float) * BD_FQUAD * (size_t)g->K);
}

void bd_flinear_run(const bd_flinear *g, const bd_exec *ex, long rows, const void *x, const void *w,
                    const float *bias, float *y, unsigned char *scratch)
{
    const int Mp = flinear_Mp(g);
    float *Wt = (float *)scratch;
    unsigned char *per_thread = scratch + BD_SCRATCH_ROUND(sizeof(float) * (size_t)g->K * (size_t)Mp);
    const size_t quad_bytes = BD_SCRATCH_ROUND(sizeof(float) * BD_FQUAD * (size_t)g->K);
    const double sign = (double)g->sign;
    transpose_weights(w, g->w_type, 1, g->M, g->K, g->K, Wt, Mp); /* e(w): the sign goes on the sum */
    const long quads = (rows + BD_FQUAD - 1) / BD_FQUAD;
    const long mblocks = Mp / BD_FM;
    int bd_nt = ex->threads < g->max_threads ? ex->threads : g->max_threads;
    if (bd_nt < 1) bd_nt = 1;
    (void)bd_nt;
    BD_OMP_FOR
    for (long item = 0; item < quads * mblocks; ++item) {
        const long q = item / mblocks;
        const int mb = (int)(item % mblocks) * BD_FM;
        const int nr = rows - q * BD_FQUAD < BD_FQUAD ? (int)(rows - q * BD_FQUAD) : BD_FQUAD;
        const float *A = (const float *)x + q * BD_FQUAD * g->K;
        if (g->x_type != BD_F32) {
            float *quad = (float *)(per_thread + (size_t)bd_thread_id() * quad_bytes);
            for (int r = 0; r < nr; ++r)
                for (int k = 0; k < g->K; ++k) quad[(long)r * g->K + k] = load_run(x, g->x_type, q * BD_FQUAD + r, g->K, k);
            A = quad;
        }
        double acc[BD_DQ * BD_DN];
        bd_isa_dgemm4_f32(g->K, A, g->K, 1, nr, Wt + mb, Mp, BD_DN, acc);
        const int len = g->M - mb < BD_FM ? g->M - mb : BD_FM;
        for (int r = 0; r < nr; ++r) {
            float *o = y + (q * BD_FQUAD + r) * g->M + mb;
            for (int j = 0; j < len; ++j) {
                const double s = sign * acc[r * BD_DN + j];
                o[j] = bias ? (float)(s + (double)bias[mb + j]) : (float)s;
            }
        }
    }
}
