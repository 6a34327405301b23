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
 *   exact. The float GEMM below runs on them unchanged, with k-blocks of at most
 *   BD_KC_EXACT = 512 products of |dy| <= 2^15 by +-1 (or the pad value, -1, 0 or 1): every
 *   partial sum is an integer of magnitude at most 2^24, exact in float32 in any order, fused
 *   or not. Each block's tile is
 *   added into int32 accumulators kept in the result's own bytes, or into int64 ones in
 *   scratch when K * max|dy| may pass 2^31 - 1 (K the reduction length at the planned
 *   batch, max|dy| = 2^7 or 2^15 by type); the result is (float)((sum * dy_scale) * scale)
 *   in double at the end (grad_ops.signal_result).
 * - f32 signals of linear layers: the double GEMM in k order (common.matmul_in_order, the
 *   interpreter's bits), the ISA layer's bd_isa_dgemm4_* on 4 x 32 tiles.
 * - f32 signals of convolutions: C = alpha * A.B in float32 (k in blocks of BD_KC: within
 *   float tolerance of the interpreter's double sums, docs/training.md).
 *
 * The float GEMM packs A in micro-panels of BD_MR rows (k-major) and B in panels of BD_NR
 * columns, from whatever the operands are, through the packers below: no operand is ever
 * expanded to floats as a whole. Micro-kernels: the ISA layer's bd_isa_sgemm_tile (f32
 * results) and bd_isa_sgemm_acc (the exact sums), a tile of BD_MR = 8 rows x BD_NR = 32.
 */
#include "bd_isa.h"

#define BD_KC 256
#define BD_KC_EXACT 512 /* integer signals: 512 * 2^15 = 2^24, the float32 partial sums stay exact */
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

/* dst[j] = e(bit) or the number, for `cols` consecutive elements k0.. of one run. */
static void read_run(const void *x, int type, long run, long len, long k0, int cols, float *dst)
{
    if (type == BD_F32) {
        memcpy(dst, (const float *)x + run * len + k0, sizeof(float) * (size_t)cols);
    } else if (type == BD_I16) {
        const int16_t *src = (const int16_t *)x + run * len + k0;
        for (int j = 0; j < cols; ++j) dst[j] = (float)src[j];
    } else if (type == BD_I8) {
        const int8_t *src = (const int8_t *)x + run * len + k0;
        for (int j = 0; j < cols; ++j) dst[j] = (float)src[j];
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
            for (int j = 0; j < n; ++j) dst[j0 + j] = ((bits >> j) & 1u) ? 1.0f : -1.0f;
        }
    } else {
        for (int j = 0; j < cols; ++j) dst[j] = number_at(x, type, run, len, k0 + j);
    }
}

/* A transposed micro-panel: dst[k * BD_MR + r] = x[(k0 + k) * ld + i0 + r] for k < kc, r < rows,
 * as floats (x f32, i8 or i16); a full panel's 8 values per k in one vector step. */
#define BD_COLUMNS(T)                                                                                      \
    do {                                                                                                   \
        const T *src = (const T *)x + k0 * ld + i0;                                                        \
        if (rows == BD_MR)                                                                                 \
            for (int k = 0; k < kc; ++k)                                                                   \
                for (int r = 0; r < BD_MR; ++r) dst[k * BD_MR + r] = (float)src[k * ld + r];               \
        else                                                                                               \
            for (int k = 0; k < kc; ++k)                                                                   \
                for (int r = 0; r < rows; ++r) dst[k * BD_MR + r] = (float)src[k * ld + r];                \
    } while (0)

static void read_columns(const void *x, int type, long ld, long k0, int kc, long i0, int rows, float *dst)
{
    if (type == BD_F32) BD_COLUMNS(float);
    else if (type == BD_I16) BD_COLUMNS(int16_t);
    else BD_COLUMNS(int8_t);
}
#undef BD_COLUMNS

/* ---- GEMM driver ------------------------------------------------------------------------- */

/* An A packer fills one micro-panel of BD_MR rows: A(i0 + r, k0 + k) for r < rows,
 * k < kc, at dst[k * BD_MR + r] (k-major) or, for packers that copy whole row pieces,
 * dst[r * kc + k] (row-major: gemm_call.a_rows); a B packer fills
 * dst[k * BD_NR + j] = B(k0 + k, j0 + j) for j < cols. The driver zeroes the rest of a
 * partial panel first. */
typedef void (*pack_a_fn)(const void *src, long i0, int rows, long k0, int kc, float *dst);
typedef void (*pack_b_fn)(const void *src, long k0, int kc, long j0, int cols, float *dst);

/* Where the tiles go: C = alpha * acc (f32), or exact integer accumulators (int32 or int64,
 * `acc`, the same indices as C) that bd_grad.c's finish() turns into floats. */
enum { ACC_F32 = 0, ACC_I32 = 1, ACC_I64 = 2 };

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
    int mode;               /* ACC_F32, ACC_I32, ACC_I64 */
    void *acc;              /* the integer accumulators (mode != ACC_F32), leading dimension ldc */
} gemm_call;

/* Blocking from the largest sizes the op is planned for (docs/backend.md, "Scratch"). */
typedef struct {
    long mc, kc, nc;
    size_t b_bytes, a_bytes;
} gemm_plan;

static gemm_plan plan_of(long max_m, long max_n, long max_k, long kc_cap)
{
    gemm_plan p;
    p.mc = lmin(BD_MC, up(max_m > 0 ? max_m : 1, BD_MR));
    p.kc = lmin(kc_cap, max_k > 0 ? max_k : 1);
    p.nc = lmin(BD_NC, up(max_n > 0 ? max_n : 1, BD_NR));
    p.b_bytes = BD_SCRATCH_ROUND(sizeof(float) * (size_t)p.kc * (size_t)p.nc);
    p.a_bytes = BD_SCRATCH_ROUND(sizeof(float) * (size_t)p.mc * (size_t)p.kc);
    return p;
}

static size_t gemm_scratch(long max_m, long max_n, long max_k, long kc_cap, int max_threads)
{
    const gemm_plan p = plan_of(max_m, max_n, max_k, kc_cap);
    return p.b_bytes + (size_t)(max_threads > 0 ? max_threads : 1) * p.a_bytes;
}

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

/* The tile at rows i0.., columns j0.. of one k-block (add: onto the earlier blocks'). */
static void gemm_tile(const gemm_call *g, int kc, const float *Ap, long ars, long aks, const float *Bp, long i0,
                      long j0, int rows, int cols, int add)
{
    if (g->mode == ACC_F32) {
        bd_isa_sgemm_tile(kc, Ap, ars, aks, Bp, g->C + i0 * g->ldc + j0, g->ldc, rows, cols, g->alpha, add);
        return;
    }
    float acc[BD_MR * BD_NR];
    bd_isa_sgemm_acc(kc, Ap, ars, aks, Bp, acc);
    for (int r = 0; r < rows; ++r) {
        const float *a = acc + r * BD_NR;
        const long off = (i0 + r) * g->ldc + j0;
        if (g->mode == ACC_I32) {
            int32_t *c = (int32_t *)g->acc + off;
            if (add) for (int j = 0; j < cols; ++j) c[j] += (int32_t)a[j];
            else for (int j = 0; j < cols; ++j) c[j] = (int32_t)a[j];
        } else {
            int64_t *c = (int64_t *)g->acc + off;
            if (add) for (int j = 0; j < cols; ++j) c[j] += (int64_t)a[j];
            else for (int j = 0; j < cols; ++j) c[j] = (int64_t)a[j];
        }
    }
}

/* Every result of an empty reduction (K = 0): 0. */
static void gemm_zero(const gemm_call *g)
{
    for (long i = 0; i < g->M; ++i) {
        const long off = i * g->ldc;
        if (g->mode == ACC_F32) memset(g->C + off, 0, sizeof(float) * (size_t)g->N);
        else if (g->mode == ACC_I32) memset((int32_t *)g->acc + off, 0, sizeof(int32_t) * (size_t)g->N);
        else memset((int64_t *)g->acc + off, 0, sizeof(int64_t) * (size_t)g->N);
    }
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
        gemm_zero(g);
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
                            gemm_tile(g, kc, Ap + ip * (long)kc * BD_MR, ars, aks, Bp + jp * (long)kc * BD_NR,
                                      ic + ip * BD_MR, jc + jp * BD_NR, (int)lmin(BD_MR, mc - ip * BD_MR), cols, add);
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
                            gemm_tile(g, kc, Ap + ip * (long)kc * BD_MR, ars, aks, Bp + jp * (long)kc * BD_NR,
                                      ic + ip * BD_MR, jc + jp * BD_NR, (int)lmin(BD_MR, mc - ip * BD_MR), cols, add);
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

/* ---- exact sums of integer signals ---------------------------------------------------------- */

/* int64 accumulators are needed when a sum of max_k terms |dy * e| <= 2^7 (i8) or 2^15 (i16)
 * may pass 2^31 - 1. */
static int exact_mode(long max_k, int dy_type)
{
    const double most = dy_type == BD_I8 ? 128.0 : 32768.0;
    return (double)(max_k > 0 ? max_k : 0) * most > 2147483647.0 ? ACC_I64 : ACC_I32;
}

/* gemm scratch, then the int64 accumulators of `outputs` results when they are needed. */
static size_t exact_scratch(long max_m, long max_n, long max_k, int max_threads, int dy_type, long outputs)
{
    const size_t wide = exact_mode(max_k, dy_type) == ACC_I64 ? BD_SCRATCH_ROUND(8 * (size_t)outputs) : 0;
    return gemm_scratch(max_m, max_n, max_k, BD_KC_EXACT, max_threads) + wide;
}

/* The accumulators: the result's own bytes (int32), or int64 ones after the gemm scratch. */
static void *exact_acc(int mode, float *out, const gemm_plan *p, int max_threads, unsigned char *scratch)
{
    const size_t gemm = p->b_bytes + (size_t)(max_threads > 0 ? max_threads : 1) * p->a_bytes;
    return mode == ACC_I32 ? (void *)out : (void *)(scratch + gemm);
}

/* The k-block of a mode: BD_KC for f32 results, BD_KC_EXACT for the exact sums. */
static long kc_cap(int mode)
{
    return mode == ACC_F32 ? BD_KC : BD_KC_EXACT;
}

/* Element `off` of the accumulators (NULL in f32 mode). */
static void *acc_at(int mode, void *acc, long off)
{
    if (mode == ACC_F32) return NULL;
    return mode == ACC_I64 ? (void *)((int64_t *)acc + off) : (void *)((int32_t *)acc + off);
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
        if (mode == ACC_I32) {
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
static void pack_a_rows(const void *src, long i0, int rows, long k0, int kc, float *dst)
{
    const rows_src *s = (const rows_src *)src;
    for (int r = 0; r < rows; ++r) read_run(s->x, s->type, i0 + r, s->len, k0, kc, dst + (long)r * kc);
}

/* A(i, k) = row k, element i (A is the transpose of the rows; f32, i8 or i16). */
static void pack_a_trans(const void *src, long i0, int rows, long k0, int kc, float *dst)
{
    const rows_src *s = (const rows_src *)src;
    read_columns(s->x, s->type, s->len, k0, kc, i0, rows, dst);
}

/* B(k, j) = row k, element j. */
static void pack_b_rows(const void *src, long k0, int kc, long j0, int cols, float *dst)
{
    const rows_src *s = (const rows_src *)src;
    for (int k = 0; k < kc; ++k) read_run(s->x, s->type, k0 + k, s->len, j0, cols, dst + k * BD_NR);
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
                         pack_a_fn pack_a, int a_rows, const rows_src *a, const rows_src *b, const float *dy_scale,
                         float *out, unsigned char *scratch)
{
    const gemm_plan p = plan_of(max_m, g->K, max_red, BD_KC_EXACT);
    const int mode = exact_mode(max_red, g->dy_type), nt = threads_of(ex, g->max_threads);
    void *acc = exact_acc(mode, out, &p, g->max_threads, scratch);
    const gemm_call call = {m, g->K, red, pack_a, a, a_rows, pack_b_rows, b, out, g->K, 1.0, mode, acc};
    gemm_run(&call, &p, nt, scratch);
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

/* `len` signal values of pixel p from channel c on, as floats (exact for the integer types). */
static void read_dy(const conv_src *s, long p, long c, int len, float *dst)
{
    if (s->dy_type == BD_F32) memcpy(dst, (const float *)s->dy + p * s->g->M + c, sizeof(float) * (size_t)len);
    else read_run(s->dy, s->dy_type, p, s->g->M, c, len, dst);
}

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
                read_run(s->x, g->other_type, (b * g->H + ih) * g->W + iw, g->C, (long)s->gi * Cg + c, len, row + j);
            }
            j += len;
        }
    }
}

/* conv2d_grad_w, A(m, p) = dy[p][gi*Mg + m]. */
static void pack_a_dy_trans(const void *src, long i0, int rows, long k0, int kc, float *dst)
{
    const conv_src *s = (const conv_src *)src;
    read_columns(s->dy, s->dy_type, s->g->M, k0, kc, (long)s->gi * (s->g->M / s->g->groups) + i0, rows, dst);
}

static long grad_w_reduction(const bd_cgrad *g, long batch)
{
    return batch * g->OH * g->OW;
}

static gemm_plan grad_w_plan(const bd_cgrad *g, long kc_cap)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    return plan_of(Mg, (long)g->kh * g->kw * Cg, grad_w_reduction(g, g->max_batch), kc_cap);
}

size_t bd_conv2d_grad_w_scratch(const bd_cgrad *g)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    return gemm_scratch(Mg, (long)g->kh * g->kw * Cg, grad_w_reduction(g, g->max_batch), BD_KC, g->max_threads);
}

/* The groups of conv2d_grad_w into dw (f32 mode) or the integer accumulators acc. */
static void grad_w_groups(const bd_cgrad *g, const bd_exec *ex, const void *dy, int dy_type, const void *x,
                          float *dw, int mode, void *acc, unsigned char *scratch)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    const long taps_c = (long)g->kh * g->kw * Cg;
    const gemm_plan p = grad_w_plan(g, kc_cap(mode));
    const double alpha = mode == ACC_F32 ? g->scale : 1.0;
    for (int gi = 0; gi < g->groups; ++gi) {
        const conv_src s = {g, gi, ex->n, x, dy, dy_type};
        const long off = (long)gi * Mg * taps_c;
        const gemm_call call = {Mg, taps_c, grad_w_reduction(g, ex->n), pack_a_dy_trans, &s, 0, pack_b_im2col, &s,
                                dw + off, taps_c, alpha, mode, acc_at(mode, acc, off)};
        gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
    }
}

void bd_conv2d_grad_w(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *x, float *dw,
                      unsigned char *scratch)
{
    grad_w_groups(g, ex, dy, BD_F32, x, dw, ACC_F32, NULL, scratch);
}

size_t bd_conv2d_grad_w_int_scratch(const bd_cgrad *g)
{
    const int Mg = g->M / g->groups, Cg = g->C / g->groups;
    const long taps_c = (long)g->kh * g->kw * Cg;
    return exact_scratch(Mg, taps_c, grad_w_reduction(g, g->max_batch), g->max_threads, g->dy_type,
                         (long)g->M * taps_c);
}

/* The groups of a convolution gradient into the f32 result (ACC_F32) or the accumulators. */
typedef void (*conv_groups_fn)(const bd_cgrad *g, const bd_exec *ex, const void *dy, int dy_type, const void *other,
                               float *out, int mode, void *acc, unsigned char *scratch);

/* An exact convolution gradient: `count` results, reductions of up to max_red terms. */
static void exact_conv(const bd_cgrad *g, const bd_exec *ex, conv_groups_fn groups, const gemm_plan *p,
                       long max_red, long count, const void *dy, const uint64_t *other, const float *dy_scale,
                       float *out, unsigned char *scratch)
{
    const int mode = exact_mode(max_red, g->dy_type);
    void *acc = exact_acc(mode, out, p, g->max_threads, scratch);
    groups(g, ex, dy, g->dy_type, other, out, mode, acc, scratch);
    finish(mode, acc, count, *dy_scale, g->scale, out, threads_of(ex, g->max_threads));
}

void bd_conv2d_grad_w_int(const bd_cgrad *g, const bd_exec *ex, const void *dy, const uint64_t *x,
                          const float *dy_scale, float *dw, unsigned char *scratch)
{
    const gemm_plan p = grad_w_plan(g, BD_KC_EXACT);
    exact_conv(g, ex, grad_w_groups, &p, grad_w_reduction(g, g->max_batch),
               (long)g->M * g->kh * g->kw * (g->C / g->groups), dy, x, dy_scale, dw, scratch);
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
                read_dy(s, (b * g->OH + oh) * g->OW + ow, (long)s->gi * Mg + m, len, row);
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
        read_run(s->x, g->other_type, ((long)s->gi * Mg + m) * taps + t, Cg, j0, cols, dst + k * BD_NR);
    }
}

static long grad_x_reduction(const bd_cgrad *g)
{
    return (long)g->kh * g->kw * (g->M / g->groups);
}

static gemm_plan grad_x_plan(const bd_cgrad *g, long kc_cap)
{
    return plan_of((long)g->max_batch * g->H * g->W, g->C / g->groups, grad_x_reduction(g), kc_cap);
}

size_t bd_conv2d_grad_x_scratch(const bd_cgrad *g)
{
    return gemm_scratch((long)g->max_batch * g->H * g->W, g->C / g->groups, grad_x_reduction(g), BD_KC,
                        g->max_threads);
}

/* The groups of conv2d_grad_x into dx (f32 mode) or the integer accumulators acc. */
static void grad_x_groups(const bd_cgrad *g, const bd_exec *ex, const void *dy, int dy_type, const void *w,
                          float *dx, int mode, void *acc, unsigned char *scratch)
{
    const int Cg = g->C / g->groups;
    const gemm_plan p = grad_x_plan(g, kc_cap(mode));
    const double alpha = mode == ACC_F32 ? g->scale : 1.0;
    for (int gi = 0; gi < g->groups; ++gi) {
        const conv_src s = {g, gi, ex->n, w, dy, dy_type};
        const long off = (long)gi * Cg;
        const gemm_call call = {(long)ex->n * g->H * g->W, Cg, grad_x_reduction(g), pack_a_gather, &s, 1,
                                pack_b_filters, &s, dx + off, g->C, alpha, mode, acc_at(mode, acc, off)};
        gemm_run(&call, &p, threads_of(ex, g->max_threads), scratch);
    }
}

void bd_conv2d_grad_x(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *w, float *dx,
                      unsigned char *scratch)
{
    grad_x_groups(g, ex, dy, BD_F32, w, dx, ACC_F32, NULL, scratch);
}

size_t bd_conv2d_grad_x_int_scratch(const bd_cgrad *g)
{
    const long pixels = (long)g->max_batch * g->H * g->W;
    return exact_scratch(pixels, g->C / g->groups, grad_x_reduction(g), g->max_threads, g->dy_type, pixels * g->C);
}

void bd_conv2d_grad_x_int(const bd_cgrad *g, const bd_exec *ex, const void *dy, const uint64_t *w,
                          const float *dy_scale, float *dx, unsigned char *scratch)
{
    const gemm_plan p = grad_x_plan(g, BD_KC_EXACT);
    exact_conv(g, ex, grad_x_groups, &p, grad_x_reduction(g), (long)ex->n * g->H * g->W * g->C, dy, w, dy_scale, dx,
               scratch);
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
