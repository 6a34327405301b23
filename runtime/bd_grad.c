/* Gradient kernels of the training step: the weight and input signals of linear and
 * convolution layers (SPEC §3), as float GEMMs with packed panels.
 *
 *   linear_grad_x  dx[r][i]  = scale * sum_j dy[r][j] * e(W[j][i])          A = dy,    B = e(W)
 *   linear_grad_w  dW[j][i]  = scale * sum_r dy[r][j] * e(x[r][i])          A = dy^T,  B = e(x)
 *   conv2d_grad_x  dx[p][c]  = scale * sum_(t,m) dy[o(p,t)][m] * e(W[m][t][c])  (gathered dy, the
 *                  transposed convolution: o(p,t) the output pixel whose tap t reads input pixel p)
 *   conv2d_grad_w  dW[m][t,c] = scale * sum_p dy[p][m] * e(xpad[p + t][c])  (im2col of x)
 *
 * b1 operands are read as e(b) = +-1; integer ones as their values. The GEMM
 * C = alpha * A.B (f32 accumulation, k in blocks of BD_KC: the sums are within float
 * tolerance of the interpreter's double sums, docs/training.md) packs A in
 * micro-panels of BD_MR rows (k-major) and B in panels of BD_NR columns, from
 * whatever the operands are, through the packers below: no operand is ever expanded
 * to floats as a whole. Micro-kernel: 8 rows x 32 columns, 16 AVX-512 accumulators
 * (or plain C loops the compiler vectorises).
 */
#include "boldc_rt.h"

#ifdef BD_SIMD_AVX512
#include <immintrin.h>
#endif

#define BD_MR 8
#define BD_NR 32
#define BD_KC 256
#define BD_MC 128
#define BD_NC 256

static long up(long v, long m) { return (v + m - 1) / m * m; }
static long lmin(long a, long b) { return a < b ? a : b; }

/* ---- operand readers --------------------------------------------------------------------- */

/* Element k of a run of `len` elements starting at run `run` of x (words for b1). */
static inline float number_at(const void *x, int type, long run, long len, long k)
{
    switch (type) {
    case BD_F32: return ((const float *)x)[run * len + k];
    case BD_I8: return (float)((const int8_t *)x)[run * len + k];
    case BD_I16: return (float)((const int16_t *)x)[run * len + k];
    case BD_I32: return (float)((const int32_t *)x)[run * len + k];
    default: {
        const uint64_t w = ((const uint64_t *)x)[run * BD_WORDS(len) + (k >> 6)];
        return ((w >> (k & 63)) & 1u) ? 1.0f : -1.0f;
    }
    }
}

/* dst[j] = v * e(bit) or v * number, for `cols` consecutive elements k0.. of one run. */
static void read_run(const void *x, int type, long run, long len, long k0, int cols, float v, float *dst)
{
    if (type == BD_F32) {
        const float *src = (const float *)x + run * len + k0;
        if (v == 1.0f) memcpy(dst, src, sizeof(float) * (size_t)cols);
        else for (int j = 0; j < cols; ++j) dst[j] = v * src[j];
    } else if (type == BD_B1) {
        /* 32 bits at a time out of the 64-bit words, then one select per element (the
         * compiler vectorises the inner loop: variable shifts and blends) */
        const uint64_t *row = (const uint64_t *)x + run * BD_WORDS(len);
        for (int j0 = 0; j0 < cols; j0 += 32) {
            const long k = k0 + j0;
            const int sh = (int)(k & 63), n = cols - j0 < 32 ? cols - j0 : 32;
            uint64_t w = row[k >> 6] >> sh;
            if (sh > 32 && ((k + n - 1) >> 6) != (k >> 6)) w |= row[(k >> 6) + 1] << (64 - sh);
            const uint32_t bits = (uint32_t)w;
            for (int j = 0; j < n; ++j) dst[j0 + j] = ((bits >> j) & 1u) ? v : -v;
        }
    } else {
        for (int j = 0; j < cols; ++j) dst[j] = v * number_at(x, type, run, len, k0 + j);
    }
}

/* ---- GEMM driver ------------------------------------------------------------------------- */

/* An A packer fills one micro-panel of BD_MR rows: A(i0 + r, k0 + k) for r < rows,
 * k < kc, at dst[k * BD_MR + r] (k-major) or, for packers that copy whole row pieces,
 * dst[r * kc + k] (row-major: gemm_call.a_rows); a B packer fills
 * dst[k * BD_NR + j] = B(k0 + k, j0 + j) for j < cols. The driver zeroes the rest of a
 * partial panel first. */
typedef void (*pack_a_fn)(const void *src, long i0, int rows, long k0, int kc, float *dst);
typedef void (*pack_b_fn)(const void *src, long k0, int kc, long j0, int cols, float *dst);

typedef struct {
    long M, N, K;           /* this call's sizes */
    pack_a_fn pack_a;
    const void *a;
    int a_rows;             /* the A packer writes row-major panels */
    pack_b_fn pack_b;
    const void *b;
    float *C;
    long ldc;
    double alpha;
} gemm_call;

/* Blocking from the largest sizes the op is planned for (docs/backend.md, "Scratch"). */
typedef struct {
    long mc, kc, nc;
    size_t b_bytes, a_bytes;
} gemm_plan;

static gemm_plan plan_of(long max_m, long max_n, long max_k)
{
    gemm_plan p;
    p.mc = lmin(BD_MC, up(max_m > 0 ? max_m : 1, BD_MR));
    p.kc = lmin(BD_KC, max_k > 0 ? max_k : 1);
    p.nc = lmin(BD_NC, up(max_n > 0 ? max_n : 1, BD_NR));
    p.b_bytes = BD_SCRATCH_ROUND(sizeof(float) * (size_t)p.kc * (size_t)p.nc);
    p.a_bytes = BD_SCRATCH_ROUND(sizeof(float) * (size_t)p.mc * (size_t)p.kc);
    return p;
}

static size_t gemm_scratch(long max_m, long max_n, long max_k, int max_threads)
{
    const gemm_plan p = plan_of(max_m, max_n, max_k);
    return p.b_bytes + (size_t)(max_threads > 0 ? max_threads : 1) * p.a_bytes;
}

/* C tile (rows x cols of 8 x 32) = alpha * acc, or += when `add`. */
static void store_tile(const float *acc, float *C, long ldc, int rows, int cols, double alpha, int add)
{
    for (int r = 0; r < rows; ++r) {
        float *c = C + r * ldc;
        const float *a = acc + r * BD_NR;
        if (add) for (int j = 0; j < cols; ++j) c[j] += (float)(alpha * (double)a[j]);
        else for (int j = 0; j < cols; ++j) c[j] = (float)(alpha * (double)a[j]);
    }
}

/* A(r, k) of a packed micro-panel is Ap[r * ars + k * aks]. */
#ifdef BD_SIMD_AVX512
static void micro_kernel(int kc, const float *Ap, long ars, long aks, const float *Bp, float *C, long ldc, int rows,
                         int cols, double alpha, int add)
{
    __m512 c0[BD_MR], c1[BD_MR];
    for (int r = 0; r < BD_MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int k = 0; k < kc; ++k) {
        const __m512 b0 = _mm512_loadu_ps(Bp + k * BD_NR), b1 = _mm512_loadu_ps(Bp + k * BD_NR + 16);
        const float *a = Ap + k * aks;
        for (int r = 0; r < BD_MR; ++r) {
            const __m512 av = _mm512_set1_ps(a[r * ars]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
    }
    if (alpha == 1.0 && rows == BD_MR && cols == BD_NR) {
        for (int r = 0; r < BD_MR; ++r) {
            float *c = C + r * ldc;
            if (add) {
                _mm512_storeu_ps(c, _mm512_add_ps(_mm512_loadu_ps(c), c0[r]));
                _mm512_storeu_ps(c + 16, _mm512_add_ps(_mm512_loadu_ps(c + 16), c1[r]));
            } else {
                _mm512_storeu_ps(c, c0[r]);
                _mm512_storeu_ps(c + 16, c1[r]);
            }
        }
        return;
    }
    float acc[BD_MR * BD_NR];
    for (int r = 0; r < BD_MR; ++r) {
        _mm512_storeu_ps(acc + r * BD_NR, c0[r]);
        _mm512_storeu_ps(acc + r * BD_NR + 16, c1[r]);
    }
    store_tile(acc, C, ldc, rows, cols, alpha, add);
}
#else
static void micro_kernel(int kc, const float *Ap, long ars, long aks, const float *Bp, float *C, long ldc, int rows,
                         int cols, double alpha, int add)
{
    float acc[BD_MR * BD_NR];
    for (int i = 0; i < BD_MR * BD_NR; ++i) acc[i] = 0.0f;
    for (int k = 0; k < kc; ++k) {
        const float *b = Bp + k * BD_NR, *a = Ap + k * aks;
        for (int r = 0; r < BD_MR; ++r) {
            const float av = a[r * ars];
            float *o = acc + r * BD_NR;
            for (int j = 0; j < BD_NR; ++j) o[j] += av * b[j];
        }
    }
    store_tile(acc, C, ldc, rows, cols, alpha, add);
}
#endif

static void pack_a_panel(const gemm_call *g, long i0, int rows, long k0, int kc, float *dst)
{
    if (rows < BD_MR) memset(dst, 0, sizeof(float) * (size_t)BD_MR * (size_t)kc);
    g->pack_a(g->a, i0, rows, k0, kc, dst);
}

static void pack_b_panel(const gemm_call *g, long k0, int kc, long j0, int cols, float *dst)
{
    if (cols < BD_NR) memset(dst, 0, sizeof(float) * (size_t)BD_NR * (size_t)kc);
    g->pack_b(g->b, k0, kc, j0, cols, dst);
}

/* C = alpha * A.B (M x N, reduction K), blocked for the plan's sizes. With several
 * threads the row blocks are split when there are enough of them, else the column
 * panels of each block (every C element is written by one thread: no races). */
static void gemm_run(const gemm_call *g, const gemm_plan *p, int nt, unsigned char *scratch)
{
    float *Bp = (float *)scratch;
    unsigned char *a_area = scratch + p->b_bytes;
    int bd_nt = nt < 1 ? 1 : nt;
    (void)bd_nt;
    if (g->M <= 0 || g->N <= 0) return;
    if (g->K <= 0) {
        for (long i = 0; i < g->M; ++i)
            for (long j = 0; j < g->N; ++j) g->C[i * g->ldc + j] = 0.0f;
        return;
    }
    const long mblocks = (g->M + p->mc - 1) / p->mc;
    const int by_rows = bd_nt == 1 || mblocks >= 2L * bd_nt;
    for (long jc = 0; jc < g->N; jc += p->nc) {
        const long nc = lmin(p->nc, g->N - jc);
        const long npanels = (nc + BD_NR - 1) / BD_NR;
        for (long pc = 0; pc < g->K; pc += p->kc) {
            const int kc = (int)lmin(p->kc, g->K - pc);
            const int add = pc > 0;
            const long ars = g->a_rows ? kc : 1, aks = g->a_rows ? 1 : BD_MR;
            BD_OMP_FOR_IF(npanels > 1)
            for (long jp = 0; jp < npanels; ++jp) {
                const int cols = (int)lmin(BD_NR, nc - jp * BD_NR);
                pack_b_panel(g, pc, kc, jc + jp * BD_NR, cols, Bp + jp * (long)kc * BD_NR);
            }
            if (by_rows) {
                BD_OMP_FOR
                for (long ib = 0; ib < mblocks; ++ib) {
                    float *Ap = (float *)(a_area + (size_t)bd_thread_id() * p->a_bytes);
                    const long ic = ib * p->mc, mc = lmin(p->mc, g->M - ic);
                    const long ipanels = (mc + BD_MR - 1) / BD_MR;
                    for (long ip = 0; ip < ipanels; ++ip)
                        pack_a_panel(g, ic + ip * BD_MR, (int)lmin(BD_MR, mc - ip * BD_MR), pc, kc,
                                     Ap + ip * (long)kc * BD_MR);
                    for (long jp = 0; jp < npanels; ++jp) {
                        const int cols = (int)lmin(BD_NR, nc - jp * BD_NR);
                        for (long ip = 0; ip < ipanels; ++ip)
                            micro_kernel(kc, Ap + ip * (long)kc * BD_MR, ars, aks, Bp + jp * (long)kc * BD_NR,
                                         g->C + (ic + ip * BD_MR) * g->ldc + jc + jp * BD_NR, g->ldc,
                                         (int)lmin(BD_MR, mc - ip * BD_MR), cols, g->alpha, add);
                    }
                }
            } else {
                float *Ap = (float *)a_area;
                for (long ib = 0; ib < mblocks; ++ib) {
                    const long ic = ib * p->mc, mc = lmin(p->mc, g->M - ic);
                    const long ipanels = (mc + BD_MR - 1) / BD_MR;
                    BD_OMP_FOR_IF(ipanels > 1)
                    for (long ip = 0; ip < ipanels; ++ip)
                        pack_a_panel(g, ic + ip * BD_MR, (int)lmin(BD_MR, mc - ip * BD_MR), pc, kc,
                                     Ap + ip * (long)kc * BD_MR);
                    BD_OMP_FOR
                    for (long jp = 0; jp < npanels; ++jp) {
                        const int cols = (int)lmin(BD_NR, nc - jp * BD_NR);
                        for (long ip = 0; ip < ipanels; ++ip)
                            micro_kernel(kc, Ap + ip * (long)kc * BD_MR, ars, aks, Bp + jp * (long)kc * BD_NR,
                                         g->C + (ic + ip * BD_MR) * g->ldc + jc + jp * BD_NR, g->ldc,
                                         (int)lmin(BD_MR, mc - ip * BD_MR), cols, g->alpha, add);
                    }
                }
            }
        }
    }
}

static int threads_of(const bd_exec *ex, int max_threads)
{
    int nt = ex->threads < max_threads ? ex->threads : max_threads;
    return nt < 1 ? 1 : nt;
}

/* ---- packers: dense matrices --------------------------------------------------------------- */

typedef struct {
    const void *x;
    int type;     /* BD_F32 .. BD_B1 */
    long len;     /* elements per row (runs of `len` elements; b1 rows are BD_WORDS(len) words) */
    float sign;   /* e(b) is read as +-sign for b1, numbers times sign */
} rows_src;

/* A(i, k) = row i, element k (row-major panel). */
static void pack_a_rows(const void *src, long i0, int rows, long k0, int kc, float *dst)
{
    const rows_src *s = (const rows_src *)src;
    for (int r = 0; r < rows; ++r) read_run(s->x, s->type, i0 + r, s->len, k0, kc, s->sign, dst + (long)r * kc);
}

/* A(i, k) = row k, element i (A is the transpose of the rows). */
static void pack_a_trans(const void *src, long i0, int rows, long k0, int kc, float *dst)
{
    const rows_src *s = (const rows_src *)src;
    for (int k = 0; k < kc; ++k) read_run(s->x, s->type, k0 + k, s->len, i0, rows, s->sign, dst + k * BD_MR);
}

/* B(k, j) = row k, element j. */
static void pack_b_rows(const void *src, long k0, int kc, long j0, int cols, float *dst)
{
    const rows_src *s = (const rows_src *)src;
    for (int k = 0; k < kc; ++k) read_run(s->x, s->type, k0 + k, s->len, j0, cols, s->sign, dst + k * BD_NR);
}

/* ---- linear layers ----------------------------------------------------------------------- */

size_t bd_linear_grad_x_scratch(const bd_lgrad *g)
{
    return gemm_scratch(g->max_rows, g->K, g->M, g->max_threads);
}

void bd_linear_grad_x(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *w, float *dx,
                      unsigned char *scratch)
{
    const gemm_plan p = plan_of(g->max_rows, g->K, g->M);
    const rows_src a = {dy, BD_F32, g->M, 1.0f};
    const rows_src b = {w, g->other_type, g->K, 1.0f};
    const gemm_call call = {rows, g->K, g->M, pack_a_rows, &a, 1, pack_b_rows, &b, dx, g->K, g->scale};
    gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
}

size_t bd_linear_grad_w_scratch(const bd_lgrad *g)
{
    return gemm_scratch(g->M, g->K, g->max_rows, g->max_threads);
}

void bd_linear_grad_w(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *x, float *dw,
                      unsigned char *scratch)
{
    const gemm_plan p = plan_of(g->M, g->K, g->max_rows);
    const rows_src a = {dy, BD_F32, g->M, 1.0f};
    const rows_src b = {x, g->other_type, g->K, 1.0f};
    const gemm_call call = {g->M, g->K, rows, pack_a_trans, &a, 0, pack_b_rows, &b, dw, g->K, g->scale};
    gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
}

/* ---- convolutions ------------------------------------------------------------------------ */

typedef struct {
    const bd_cgrad *g;
    int gi;            /* group */
    int n;             /* batch of this call */
    const void *x;     /* conv2d_grad_w: the input; conv2d_grad_x: the filters */
    const float *dy;
} conv_src;

/* conv2d_grad_w, B(p, t * Cg + c) = e(x) at tap t of output pixel p, channel gi*Cg + c
 * (pad_value outside the input). */
static void pack_b_im2col(const void *src, long k0, int kc, long j0, int cols, float *dst)
{
    const conv_src *s = (const conv_src *)src;
    const bd_cgrad *g = s->g;
    const int Cg = g->C / g->groups;
    for (int k = 0; k < kc; ++k) {
        const long p = k0 + k;
        const long b = p / ((long)g->OH * g->OW);
        const int oh = (int)(p / g->OW % g->OH), ow = (int)(p % g->OW);
        float *row = dst + k * BD_NR;
        int j = 0;
        while (j < cols) {
            const long kk = j0 + j;
            const int t = (int)(kk / Cg), c = (int)(kk % Cg);
            const int len = (int)lmin(cols - j, Cg - c);
            const int ih = oh * g->sh - g->pt + (t / g->kw) * g->dh, iw = ow * g->sw - g->pl + (t % g->kw) * g->dw;
            if (ih < 0 || ih >= g->H || iw < 0 || iw >= g->W) {
                for (int q = 0; q < len; ++q) row[j + q] = g->pad_value;
            } else {
                read_run(s->x, g->other_type, (b * g->H + ih) * g->W + iw, g->C, (long)s->gi * Cg + c, len, 1.0f,
                         row + j);
            }
            j += len;
        }
    }
}

/* conv2d_grad_w, A(m, p) = dy[p][gi*Mg + m]. */
static void pack_a_dy_trans(const void *src, long i0, int rows, long k0, int kc, float *dst)
{
    const conv_src *s = (const conv_src *)src;
    const bd_cgrad *g = s->g;
    const long off = (long)s->gi * (g->M / g->groups) + i0;
    for (int k = 0; k < kc; ++k) memcpy(dst + k * BD_MR, s->dy + (k0 + k) * g->M + off, sizeof(float) * (size_t)rows);
}

size_t bd_conv2d_grad_w_scratch(const bd_cgrad *g)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    return gemm_scratch(Mg, (long)g->kh * g->kw * Cg, (long)g->max_batch * g->OH * g->OW, g->max_threads);
}

void bd_conv2d_grad_w(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *x, float *dw,
                      unsigned char *scratch)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    const long taps_c = (long)g->kh * g->kw * Cg;
    const gemm_plan p = plan_of(Mg, taps_c, (long)g->max_batch * g->OH * g->OW);
    for (int gi = 0; gi < g->groups; ++gi) {
        const conv_src s = {g, gi, ex->n, x, dy};
        const gemm_call call = {Mg, taps_c, (long)ex->n * g->OH * g->OW, pack_a_dy_trans, &s, 0, pack_b_im2col, &s,
                                dw + (long)gi * Mg * taps_c, taps_c, g->scale};
        gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
    }
}

/* conv2d_grad_x, A(p, t * Mg + m) = dy at the output pixel whose tap t reads input pixel
 * p (0 if there is none), channel gi*Mg + m (row-major panel: whole channel runs copied). */
static void pack_a_gather(const void *src, long i0, int rows, long k0, int kc, float *dst)
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
            float *row = dst + (long)r * kc + k;
            if (nh < 0 || nw < 0 || nh % g->sh || nw % g->sw || oh >= g->OH || ow >= g->OW)
                memset(row, 0, sizeof(float) * (size_t)len);
            else
                memcpy(row, s->dy + ((b * g->OH + oh) * g->OW + ow) * g->M + (long)s->gi * Mg + m,
                       sizeof(float) * (size_t)len);
            k += len;
        }
    }
}

/* conv2d_grad_x, B(t * Mg + m, c) = e(W[gi*Mg + m][t][c]) (filters stored [M][kh][kw][Cg]). */
static void pack_b_filters(const void *src, long k0, int kc, long j0, int cols, float *dst)
{
    const conv_src *s = (const conv_src *)src;
    const bd_cgrad *g = s->g;
    const int Mg = g->M / g->groups, Cg = g->C / g->groups, taps = g->kh * g->kw;
    for (int k = 0; k < kc; ++k) {
        const long kk = k0 + k;
        const long t = kk / Mg, m = kk % Mg;
        read_run(s->x, g->other_type, ((long)s->gi * Mg + m) * taps + t, Cg, j0, cols, 1.0f, dst + k * BD_NR);
    }
}

size_t bd_conv2d_grad_x_scratch(const bd_cgrad *g)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    return gemm_scratch((long)g->max_batch * g->H * g->W, Cg, (long)g->kh * g->kw * Mg, g->max_threads);
}

void bd_conv2d_grad_x(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *w, float *dx,
                      unsigned char *scratch)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    const gemm_plan p = plan_of((long)g->max_batch * g->H * g->W, Cg, (long)g->kh * g->kw * Mg);
    for (int gi = 0; gi < g->groups; ++gi) {
        const conv_src s = {g, gi, ex->n, w, dy};
        const gemm_call call = {(long)ex->n * g->H * g->W, Cg, (long)g->kh * g->kw * Mg, pack_a_gather, &s, 1,
                                pack_b_filters, &s, dx + (long)gi * Cg, g->C, g->scale};
        gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
    }
}
