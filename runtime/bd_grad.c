/* Gradient kernels of the training step: the weight and input signals of linear and
 * convolution layers (docs/method.md §3).
 *
 *   linear_grad_x  dx[r][i]  = scale * sum_j dy[r][j] * e(W[j][i])          A = dy,    B = e(W)
 *   linear_grad_w  dW[j][i]  = scale * sum_r dy[r][j] * e(x[r][i])          A = dy^T,  B = e(x)
 *   conv2d_grad_x  dx[p][c]  = scale * sum_(t,m) dy[o(p,t)][m] * e(W[m][t][c])  (gathered dy, the
 *                  transposed convolution: o(p,t) the output pixel whose tap t reads input pixel p)
 *   conv2d_grad_w  dW[m][t,c] = scale * sum_p dy[p][m] * e(xpad[p + t][c])  (im2col of x)
 *
 * b1 operands are read as e(b) = +-1; integer ones as their values. Three kinds of sums:
 *
 * - Integer signals (the *_int functions: dy i8/i16 with its power-of-two scale, against b1):
 *   exact, on the integer panels of the packed GEMM (bd_gemm.h: int16 or int8 groups, the
 *   ISA layer's bd_isa_igemm_i16 / _i8). Each k-block's int32 tile is added into int32
 *   accumulators kept in the result's own bytes, or into int64 ones in scratch when K *
 *   max|dy| may pass 2^31 - 1 (K the reduction length at the planned batch, max|dy| = 2^7 or
 *   2^15 by type); the result is (float)((sum * dy_scale) * scale) in double at the end
 *   (grad_ops.signal_result).
 * - f32 signals of linear layers: the double GEMM in k order (common.matmul_in_order, the
 *   interpreter's bits), the ISA layer's bd_isa_dgemm4_* on 4 x 32 tiles.
 * - f32 signals of convolutions: C = alpha * A.B on the float panels of the packed GEMM (k in
 *   blocks of 256: within float tolerance of the interpreter's double sums, docs/training.md).
 *
 * The packers below read the operands into the GEMM's panels (A in micro-panels of BD_MR
 * rows, B in panels of BD_NR columns) from whatever they are: no operand is ever expanded
 * as a whole.
 */
#include "bd_gemm.h"

static long lmin(long a, long b) { return a < b ? a : b; }

static int threads_of(const bd_exec *ex, int max_threads)
{
    int nt = ex->threads < max_threads ? ex->threads : max_threads;
    return nt < 1 ? 1 : nt;
}

/* ---- exact sums of integer signals ---------------------------------------------------------- */

/* int64 accumulators are needed when a sum of max_k terms |dy * e| <= 2^7 (i8) or 2^15 (i16)
 * may pass 2^31 - 1. */
static int exact_mode(long max_k, int dy_type)
{
    const double most = dy_type == BD_I8 ? 128.0 : 32768.0;
    return (double)(max_k > 0 ? max_k : 0) * most > 2147483647.0 ? BD_ACC_I64 : BD_ACC_I32;
}

/* What the panels of a mode hold: floats for f32 results, the signal's integer groups for the
 * exact sums. */
static int elem_of(int mode, int dy_type)
{
    if (mode == BD_ACC_F32) return BD_ELEM_F32;
    return dy_type == BD_I8 ? BD_ELEM_I8 : BD_ELEM_I16;
}

/* gemm scratch, then the int64 accumulators of `outputs` results when they are needed. */
static size_t exact_scratch(long max_m, long max_n, long max_k, int max_threads, int dy_type, long outputs)
{
    const int mode = exact_mode(max_k, dy_type);
    const size_t wide = mode == BD_ACC_I64 ? BD_SCRATCH_ROUND(8 * (size_t)outputs) : 0;
    const bd_gemm_plan p = bd_gemm_plan_of(max_m, max_n, max_k, elem_of(mode, dy_type));
    return bd_gemm_plan_bytes(&p, max_threads) + wide;
}

/* The accumulators: the result's own bytes (int32), or int64 ones after the gemm scratch. */
static void *exact_acc(int mode, float *out, const bd_gemm_plan *p, int max_threads, unsigned char *scratch)
{
    return mode == BD_ACC_I32 ? (void *)out : (void *)(scratch + bd_gemm_plan_bytes(p, max_threads));
}

/* Element `off` of the accumulators (NULL in f32 mode). */
static void *acc_at(int mode, void *acc, long off)
{
    if (mode == BD_ACC_F32) return NULL;
    return mode == BD_ACC_I64 ? (void *)((int64_t *)acc + off) : (void *)((int32_t *)acc + off);
}

/* out[i] = (float)(((double)acc[i] * dy_scale) * scale) for i < count (in place for int32:
 * each element is read before its bytes are written, through memcpy: no aliasing). */
static void finish(int mode, const void *acc, long count, float dy_scale, double scale, float *out, int nt)
{
    const double ds = (double)dy_scale;
    int bd_nt = nt;
    (void)bd_nt;
    BD_OMP_FOR_IF(count > 65536)
    for (long i = 0; i < count; ++i) {
        double total;
        if (mode == BD_ACC_I32) {
            int32_t v;
            memcpy(&v, (const unsigned char *)acc + 4 * (size_t)i, sizeof v);
            total = (double)v;
        } else {
            total = (double)((const int64_t *)acc)[i];
        }
        const double scaled = total * ds;
        const float r = (float)(scaled * scale);
        memcpy((unsigned char *)out + 4 * (size_t)i, &r, sizeof r);
    }
}

/* ---- double GEMM in k order (f32 signals of linear layers) ------------------------------------ */

/* C[i][j] = (float)(alpha * sum_k A(i, k) * B(k, j)), each sum in double in k order
 * (common.matmul_in_order). A(i, k) = A[i * ars + k * aks] (f32); B of b_type: f32 or any
 * number at B[k * ldb + j], b1 as e(bit j of the row B + k * ldb words). */
typedef struct {
    long M, N, K;
    const float *A;
    long ars, aks;
    const void *B;
    int b_type;
    long ldb;
    float *C;
    long ldc;
    double alpha;
} dgemm_call;

/* The tile for integer B (no micro-kernel: exact in double, as the interpreter reads them),
 * in the same order: acc = acc + A(r, k) * B(k, j), k ascending. */
static void dgemm_numbers(const dgemm_call *g, const float *A, int rows, long j0, int cols, double *out)
{
    memset(out, 0, sizeof(double) * BD_DQ * BD_DN);
    for (long k = 0; k < g->K; ++k) {
        double b[BD_DN];
        for (int j = 0; j < cols; ++j) b[j] = bd_load_f64(g->B, g->b_type, k * g->ldb + j0 + j);
        for (int r = 0; r < rows; ++r) {
            const double a = (double)A[r * g->ars + k * g->aks];
            double *o = out + r * BD_DN;
            for (int j = 0; j < cols; ++j) {
                const double prod = a * b[j];
                o[j] = o[j] + prod;
            }
        }
    }
}

static void dgemm_in_order(const dgemm_call *g, int nt)
{
    const long ti = (g->M + BD_DQ - 1) / BD_DQ, tj = (g->N + BD_DN - 1) / BD_DN;
    int bd_nt = nt;
    (void)bd_nt;
    BD_OMP_FOR_IF(ti * tj > 1 && (double)g->M * (double)g->N * (double)g->K > 65536.0)
    for (long t = 0; t < ti * tj; ++t) {
        const long i0 = (t % ti) * BD_DQ, j0 = (t / ti) * BD_DN; /* tiles of one column panel in a row */
        const int rows = (int)lmin(BD_DQ, g->M - i0), cols = (int)lmin(BD_DN, g->N - j0);
        const float *a = g->A + i0 * g->ars;
        double acc[BD_DQ * BD_DN];
        if (g->b_type == BD_F32)
            bd_isa_dgemm4_f32((int)g->K, a, g->ars, g->aks, rows, (const float *)g->B + j0, g->ldb, cols, acc);
        else if (g->b_type == BD_B1)
            bd_isa_dgemm4_b1((int)g->K, a, g->ars, g->aks, rows, (const uint64_t *)g->B, g->ldb, j0, acc);
        else
            dgemm_numbers(g, a, rows, j0, cols, acc);
        for (int r = 0; r < rows; ++r) {
            float *c = g->C + (i0 + r) * g->ldc + j0;
            for (int j = 0; j < cols; ++j) c[j] = (float)(g->alpha * acc[r * BD_DN + j]);
        }
    }
}

/* Elements (f32, numbers) or words (b1) per row of a [rows][len] operand. */
static long row_stride(int type, long len)
{
    return type == BD_B1 ? BD_WORDS(len) : len;
}

/* ---- packers: dense matrices --------------------------------------------------------------- */

typedef struct {
    const void *x;
    int type;     /* BD_F32 .. BD_B1 */
    long len;     /* elements per row (runs of `len` elements; b1 rows are BD_WORDS(len) words) */
} rows_src;

/* A(i, k) = row i, element k (row-major panel). */
static void pack_a_rows(const void *src, long i0, int rows, long k0, int kc, const bd_panel *d)
{
    const rows_src *s = (const rows_src *)src;
    for (int r = 0; r < rows; ++r) bd_panel_run(d, r * d->rowlen, s->x, s->type, i0 + r, s->len, k0, kc);
}

/* A(i, k) = row k, element i (A is the transpose of the rows; f32, i8 or i16). */
static void pack_a_trans(const void *src, long i0, int rows, long k0, int kc, const bd_panel *d)
{
    const rows_src *s = (const rows_src *)src;
    bd_panel_columns(d, s->x, s->type, s->len, k0, kc, i0, rows);
}

/* B(k, j) = row k, element j. */
static void pack_b_rows(const void *src, long k0, int kc, long j0, int cols, const bd_panel *d)
{
    const rows_src *s = (const rows_src *)src;
    for (int k = 0; k < kc; ++k) bd_panel_run(d, (long)k * BD_NR, s->x, s->type, k0 + k, s->len, j0, cols);
}

/* ---- linear layers ----------------------------------------------------------------------- */

size_t bd_linear_grad_x_scratch(const bd_lgrad *g)
{
    (void)g;
    return 0;
}

void bd_linear_grad_x(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *w, float *dx,
                      unsigned char *scratch)
{
    (void)scratch;
    const dgemm_call call = {rows, g->K, g->M, dy, g->M, 1, w, g->other_type, row_stride(g->other_type, g->K),
                             dx, g->K, g->scale};
    dgemm_in_order(&call, threads_of(ex, g->max_threads));
}

size_t bd_linear_grad_w_scratch(const bd_lgrad *g)
{
    (void)g;
    return 0;
}

void bd_linear_grad_w(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *x, float *dw,
                      unsigned char *scratch)
{
    (void)scratch;
    const dgemm_call call = {g->M, g->K, rows, dy, 1, g->M, x, g->other_type, row_stride(g->other_type, g->K),
                             dw, g->K, g->scale};
    dgemm_in_order(&call, threads_of(ex, g->max_threads));
}

size_t bd_linear_grad_x_int_scratch(const bd_lgrad *g)
{
    return exact_scratch(g->max_rows, g->K, g->M, g->max_threads, g->dy_type, g->max_rows * (long)g->K);
}

/* An exact linear gradient: out = (M x K, a reduction of `red` terms) from the packers,
 * planned for max_m rows and max_red terms. */
static void exact_linear(const bd_lgrad *g, const bd_exec *ex, long m, long red, long max_m, long max_red,
                         bd_pack_a_fn pack_a, int a_rows, const rows_src *a, const rows_src *b,
                         const float *dy_scale, float *out, unsigned char *scratch)
{
    const int mode = exact_mode(max_red, g->dy_type), nt = threads_of(ex, g->max_threads);
    const int elem = elem_of(mode, g->dy_type);
    const bd_gemm_plan p = bd_gemm_plan_of(max_m, g->K, max_red, elem);
    void *acc = exact_acc(mode, out, &p, g->max_threads, scratch);
    const bd_gemm_call call = {m, g->K, red, pack_a, a, a_rows, pack_b_rows, b, out, g->K, 1.0, mode, acc, elem};
    bd_gemm_run(&call, &p, nt, scratch);
    finish(mode, acc, m * g->K, *dy_scale, g->scale, out, nt);
}

void bd_linear_grad_x_int(const bd_lgrad *g, const bd_exec *ex, long rows, const void *dy, const uint64_t *w,
                          const float *dy_scale, float *dx, unsigned char *scratch)
{
    const rows_src a = {dy, g->dy_type, g->M}, b = {w, BD_B1, g->K};
    exact_linear(g, ex, rows, g->M, g->max_rows, g->M, pack_a_rows, 1, &a, &b, dy_scale, dx, scratch);
}

size_t bd_linear_grad_w_int_scratch(const bd_lgrad *g)
{
    return exact_scratch(g->M, g->K, g->max_rows, g->max_threads, g->dy_type, (long)g->M * g->K);
}

void bd_linear_grad_w_int(const bd_lgrad *g, const bd_exec *ex, long rows, const void *dy, const uint64_t *x,
                          const float *dy_scale, float *dw, unsigned char *scratch)
{
    const rows_src a = {dy, g->dy_type, g->M}, b = {x, BD_B1, g->K};
    exact_linear(g, ex, g->M, rows, g->M, g->max_rows, pack_a_trans, 0, &a, &b, dy_scale, dw, scratch);
}

/* ---- convolutions ------------------------------------------------------------------------ */

typedef struct {
    const bd_cgrad *g;
    int gi;            /* group */
    int n;             /* batch of this call */
    const void *x;     /* conv2d_grad_w: the input; conv2d_grad_x: the filters */
    const void *dy;    /* the signal, of dy_type */
    int dy_type;       /* BD_F32, BD_I8 or BD_I16 */
} conv_src;

/* conv2d_grad_w, B(p, t * Cg + c) = e(x) at tap t of output pixel p, channel gi*Cg + c
 * (pad_value outside the input). The panel's columns are cut once into runs of one tap
 * (dh/dw: the tap's offset, c: its first channel), and the pixels are walked in order, so
 * no division is left in the loops. */
static void pack_b_im2col(const void *src, long k0, int kc, long j0, int cols, const bd_panel *d)
{
    const conv_src *s = (const conv_src *)src;
    const bd_cgrad *g = s->g;
    const int Cg = g->C / g->groups;
    int runs = 0, at[BD_NR], len[BD_NR], dh[BD_NR], dw[BD_NR], ch[BD_NR];
    for (int j = 0; j < cols; j += len[runs++]) {
        const int t = (int)((j0 + j) / Cg), c = (int)((j0 + j) % Cg);
        at[runs] = j;
        len[runs] = (int)lmin(cols - j, Cg - c);
        dh[runs] = (t / g->kw) * g->dh - g->pt;
        dw[runs] = (t % g->kw) * g->dw - g->pl;
        ch[runs] = s->gi * Cg + c;
    }
    long b = k0 / ((long)g->OH * g->OW);
    int oh = (int)(k0 / g->OW % g->OH), ow = (int)(k0 % g->OW);
    for (int k = 0; k < kc; ++k) {
        for (int q = 0; q < runs; ++q) {
            const int ih = oh * g->sh + dh[q], iw = ow * g->sw + dw[q];
            const long to = (long)k * BD_NR + at[q];
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W)
                bd_panel_fill(d, to, g->pad_value, len[q]);
            else
                bd_panel_run(d, to, s->x, g->other_type, (b * g->H + ih) * g->W + iw, g->C, ch[q], len[q]);
        }
        if (++ow == g->OW) { /* the next output pixel */
            ow = 0;
            if (++oh == g->OH) {
                oh = 0;
                ++b;
            }
        }
    }
}

/* conv2d_grad_w, A(m, p) = dy[p][gi*Mg + m]. */
static void pack_a_dy_trans(const void *src, long i0, int rows, long k0, int kc, const bd_panel *d)
{
    const conv_src *s = (const conv_src *)src;
    bd_panel_columns(d, s->dy, s->dy_type, s->g->M, k0, kc, (long)s->gi * (s->g->M / s->g->groups) + i0, rows);
}

static long grad_w_reduction(const bd_cgrad *g, long batch)
{
    return batch * g->OH * g->OW;
}

static bd_gemm_plan grad_w_plan(const bd_cgrad *g, int elem)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    return bd_gemm_plan_of(Mg, (long)g->kh * g->kw * Cg, grad_w_reduction(g, g->max_batch), elem);
}

size_t bd_conv2d_grad_w_scratch(const bd_cgrad *g)
{
    const bd_gemm_plan p = grad_w_plan(g, BD_ELEM_F32);
    return bd_gemm_plan_bytes(&p, g->max_threads);
}

/* The groups of conv2d_grad_w into dw (f32 mode) or the integer accumulators acc. */
static void grad_w_groups(const bd_cgrad *g, const bd_exec *ex, const void *dy, int dy_type, const void *x,
                          float *dw, int mode, void *acc, unsigned char *scratch)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    const long taps_c = (long)g->kh * g->kw * Cg;
    const int elem = elem_of(mode, dy_type);
    const bd_gemm_plan p = grad_w_plan(g, elem);
    const double alpha = mode == BD_ACC_F32 ? g->scale : 1.0;
    for (int gi = 0; gi < g->groups; ++gi) {
        const conv_src s = {g, gi, ex->n, x, dy, dy_type};
        const long off = (long)gi * Mg * taps_c;
        const bd_gemm_call call = {Mg, taps_c, grad_w_reduction(g, ex->n), pack_a_dy_trans, &s, 0, pack_b_im2col, &s,
                                   dw + off, taps_c, alpha, mode, acc_at(mode, acc, off), elem};
        bd_gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
    }
}

void bd_conv2d_grad_w(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *x, float *dw,
                      unsigned char *scratch)
{
    grad_w_groups(g, ex, dy, BD_F32, x, dw, BD_ACC_F32, NULL, scratch);
}

size_t bd_conv2d_grad_w_int_scratch(const bd_cgrad *g)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    const long taps_c = (long)g->kh * g->kw * Cg;
    return exact_scratch(Mg, taps_c, grad_w_reduction(g, g->max_batch), g->max_threads, g->dy_type,
                         (long)g->M * taps_c);
}

/* The groups of a convolution gradient into the f32 result (BD_ACC_F32) or the accumulators,
 * and the plan they run by. */
typedef void (*conv_groups_fn)(const bd_cgrad *g, const bd_exec *ex, const void *dy, int dy_type, const void *other,
                               float *out, int mode, void *acc, unsigned char *scratch);
typedef bd_gemm_plan (*conv_plan_fn)(const bd_cgrad *g, int elem);

/* An exact convolution gradient: `count` results, reductions of up to max_red terms. */
static void exact_conv(const bd_cgrad *g, const bd_exec *ex, conv_groups_fn groups, conv_plan_fn plan,
                       long max_red, long count, const void *dy, const uint64_t *other, const float *dy_scale,
                       float *out, unsigned char *scratch)
{
    const int mode = exact_mode(max_red, g->dy_type);
    const bd_gemm_plan p = plan(g, elem_of(mode, g->dy_type));
    void *acc = exact_acc(mode, out, &p, g->max_threads, scratch);
    groups(g, ex, dy, g->dy_type, other, out, mode, acc, scratch);
    finish(mode, acc, count, *dy_scale, g->scale, out, threads_of(ex, g->max_threads));
}

void bd_conv2d_grad_w_int(const bd_cgrad *g, const bd_exec *ex, const void *dy, const uint64_t *x,
                          const float *dy_scale, float *dw, unsigned char *scratch)
{
    exact_conv(g, ex, grad_w_groups, grad_w_plan, grad_w_reduction(g, g->max_batch),
               (long)g->M * g->kh * g->kw * (g->C / g->groups), dy, x, dy_scale, dw, scratch);
}

/* conv2d_grad_x, A(p, t * Mg + m) = dy at the output pixel whose tap t reads input pixel
 * p (0 if there is none), channel gi*Mg + m (row-major panel: whole channel runs copied). */
static void pack_a_gather(const void *src, long i0, int rows, long k0, int kc, const bd_panel *d)
{
    const conv_src *s = (const conv_src *)src;
    const bd_cgrad *g = s->g;
    const int Mg = g->M / g->groups;
    for (int r = 0; r < rows; ++r) {
        const long p = i0 + r;
        const long b = p / ((long)g->H * g->W);
        const int h = (int)(p / g->W % g->H), w = (int)(p % g->W);
        int k = 0;
        while (k < kc) {
            const long kk = k0 + k;
            const int t = (int)(kk / Mg), m = (int)(kk % Mg);
            const int len = (int)lmin(kc - k, Mg - m);
            const int nh = h + g->pt - (t / g->kw) * g->dh, nw = w + g->pl - (t % g->kw) * g->dw;
            const int oh = nh / g->sh, ow = nw / g->sw;
            const long at = r * d->rowlen + k;
            if (nh < 0 || nw < 0 || nh % g->sh || nw % g->sw || oh >= g->OH || ow >= g->OW)
                bd_panel_fill(d, at, 0.0f, len);
            else
                bd_panel_run(d, at, s->dy, s->dy_type, (b * g->OH + oh) * g->OW + ow, g->M, (long)s->gi * Mg + m, len);
            k += len;
        }
    }
}

/* conv2d_grad_x, B(t * Mg + m, c) = e(W[gi*Mg + m][t][c]) (filters stored [M][kh][kw][Cg]). */
static void pack_b_filters(const void *src, long k0, int kc, long j0, int cols, const bd_panel *d)
{
    const conv_src *s = (const conv_src *)src;
    const bd_cgrad *g = s->g;
    const int Mg = g->M / g->groups, Cg = g->C / g->groups, taps = g->kh * g->kw;
    for (int k = 0; k < kc; ++k) {
        const long kk = k0 + k;
        const long t = kk / Mg, m = kk % Mg;
        bd_panel_run(d, (long)k * BD_NR, s->x, g->other_type, ((long)s->gi * Mg + m) * taps + t, Cg, j0, cols);
    }
}

static long grad_x_reduction(const bd_cgrad *g)
{
    return (long)g->kh * g->kw * (g->M / g->groups);
}

static bd_gemm_plan grad_x_plan(const bd_cgrad *g, int elem)
{
    return bd_gemm_plan_of((long)g->max_batch * g->H * g->W, g->C / g->groups, grad_x_reduction(g), elem);
}

size_t bd_conv2d_grad_x_scratch(const bd_cgrad *g)
{
    const bd_gemm_plan p = grad_x_plan(g, BD_ELEM_F32);
    return bd_gemm_plan_bytes(&p, g->max_threads);
}

/* The groups of conv2d_grad_x into dx (f32 mode) or the integer accumulators acc. */
static void grad_x_groups(const bd_cgrad *g, const bd_exec *ex, const void *dy, int dy_type, const void *w,
                          float *dx, int mode, void *acc, unsigned char *scratch)
{
    const int Cg = g->C / g->groups;
    const int elem = elem_of(mode, dy_type);
    const bd_gemm_plan p = grad_x_plan(g, elem);
    const double alpha = mode == BD_ACC_F32 ? g->scale : 1.0;
    for (int gi = 0; gi < g->groups; ++gi) {
        const conv_src s = {g, gi, ex->n, w, dy, dy_type};
        const long off = (long)gi * Cg;
        const bd_gemm_call call = {(long)ex->n * g->H * g->W, Cg, grad_x_reduction(g), pack_a_gather, &s, 1,
                                   pack_b_filters, &s, dx + off, g->C, alpha, mode, acc_at(mode, acc, off), elem};
        bd_gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
    }
}

void bd_conv2d_grad_x(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *w, float *dx,
                      unsigned char *scratch)
{
    grad_x_groups(g, ex, dy, BD_F32, w, dx, BD_ACC_F32, NULL, scratch);
}

size_t bd_conv2d_grad_x_int_scratch(const bd_cgrad *g)
{
    const long pixels = (long)g->max_batch * g->H * g->W;
    return exact_scratch(pixels, g->C / g->groups, grad_x_reduction(g), g->max_threads, g->dy_type, pixels * g->C);
}

void bd_conv2d_grad_x_int(const bd_cgrad *g, const bd_exec *ex, const void *dy, const uint64_t *w,
                          const float *dy_scale, float *dx, unsigned char *scratch)
{
    exact_conv(g, ex, grad_x_groups, grad_x_plan, grad_x_reduction(g), (long)ex->n * g->H * g->W * g->C, dy, w,
               dy_scale, dx, scratch);
}

/* ---- channel_sum of an integer signal --------------------------------------------------------- */

#define BD_SUM_CHANNELS 128 /* int64 sums of a chunk of channels on the stack (1 KB) */

/* acc[c] += dy[at + c * stride + i] for c < cn, i < inner. */
static void add_channels(const void *dy, int dy_type, long at, long stride, long inner, int cn, int64_t *acc)
{
    if (dy_type == BD_I8) {
        const int8_t *d = (const int8_t *)dy + at;
        if (inner == 1) for (int c = 0; c < cn; ++c) acc[c] += d[c];
        else for (int c = 0; c < cn; ++c) for (long i = 0; i < inner; ++i) acc[c] += d[c * stride + i];
    } else {
        const int16_t *d = (const int16_t *)dy + at;
        if (inner == 1) for (int c = 0; c < cn; ++c) acc[c] += d[c];
        else for (int c = 0; c < cn; ++c) for (long i = 0; i < inner; ++i) acc[c] += d[c * stride + i];
    }
}

void bd_channel_sum_int(const bd_exec *ex, long outer, int C, long inner, const void *dy, int dy_type,
                        const float *dy_scale, float *y)
{
    const long chunks = (C + BD_SUM_CHANNELS - 1) / BD_SUM_CHANNELS;
    const double ds = (double)*dy_scale;
    int bd_nt = ex->threads < 1 ? 1 : ex->threads;
    (void)bd_nt;
    BD_OMP_FOR_IF(chunks > 1 && outer * inner * (long)C > 65536)
    for (long ch = 0; ch < chunks; ++ch) {
        const int c0 = (int)ch * BD_SUM_CHANNELS, cn = C - c0 < BD_SUM_CHANNELS ? C - c0 : BD_SUM_CHANNELS;
        int64_t acc[BD_SUM_CHANNELS] = {0};
        for (long o = 0; o < outer; ++o) add_channels(dy, dy_type, (o * C + c0) * inner, inner, inner, cn, acc);
        for (int c = 0; c < cn; ++c) y[c0 + c] = (float)((double)acc[c] * ds);
    }
}
