/* boldc runtime: hand-written C shared by all generated models (docs/backend.md).
 *
 * C99, libc/libm only, no allocation: every buffer is passed in by the caller
 * (the generated code points into its one arena). Compiles warning-free with
 * -std=c99 -Wall -Wextra -Werror.
 *
 * Storage conventions (boldc/backend/layout.py):
 *  - rank-4 tensors are channels-last: [N][H][W][C]; filters [M][kh][kw][C/g];
 *  - b1 tensors are packed along the channel (last stored) axis in 64-bit words,
 *    element c in bit c%64 of word c/64; padding bits are always 0.
 *
 * Build-time switches (macros):
 *  - BD_PORTABLE_POPCOUNT: use the portable bit-twiddling popcount instead of the
 *    compiler builtin;
 *  - BD_NO_SIMD: never use SIMD intrinsics, even if the target has them;
 *  - the ISA of the micro-kernels is selected in bd_isa.h (the runtime's ISA layer)
 *    from the target macros the compiler sets from its flags (-mavx512vpopcntdq,
 *    -march=native): AVX-512 VPOPCNTDQ (with BW and VL), else AVX2 (with FMA and
 *    POPCNT), else NEON on aarch64, else the portable C kernels (which the compiler may
 *    still vectorise, and which use the popcnt instruction when the target has one).
 *    BD_SIMD_NAME (bd_isa.h) names the one selected.
 *  - _OPENMP (set by -fopenmp): kernels split their outer loops over threads.
 */
#ifndef BOLDC_RT_H
#define BOLDC_RT_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- popcount ------------------------------------------------------------------------ */
#if defined(BD_PORTABLE_POPCOUNT) || !defined(__GNUC__)
/* SWAR popcount (Hacker's Delight 5-2): a handful of shifts, masks and a multiply. */
static inline int bd_popcount64(uint64_t v)
{
    v = v - ((v >> 1) & UINT64_C(0x5555555555555555));
    v = (v & UINT64_C(0x3333333333333333)) + ((v >> 2) & UINT64_C(0x3333333333333333));
    v = (v + (v >> 4)) & UINT64_C(0x0f0f0f0f0f0f0f0f);
    return (int)((v * UINT64_C(0x0101010101010101)) >> 56);
}
#define BD_POPCOUNT_NAME "portable"
#else
#define bd_popcount64(v) __builtin_popcountll(v)
#define BD_POPCOUNT_NAME "builtin"
#endif

/* ---- threads ------------------------------------------------------------------------- */
/* Kernels that split work declare `const int bd_nt = <threads>;` in scope. */
#define BD_PRAGMA(x) _Pragma(#x)
#ifdef _OPENMP
#include <omp.h>
#define BD_OMP_FOR BD_PRAGMA(omp parallel for schedule(static) num_threads(bd_nt))
#define BD_OMP_FOR_IF(c) BD_PRAGMA(omp parallel for schedule(static) num_threads(bd_nt) if(c))
#define bd_thread_id() omp_get_thread_num()
#else
#define BD_OMP_FOR
#define BD_OMP_FOR_IF(c)
#define bd_thread_id() 0
#endif

/* ---- element types --------------------------------------------------------------------- */
enum bd_dtype { BD_F32 = 0, BD_I8 = 1, BD_I16 = 2, BD_I32 = 3, BD_B1 = 4 };

/* What a generated function gets besides its buffers. */
typedef struct {
    int n;       /* batch size of this call */
    int threads; /* threads kernels may use (1 without OpenMP) */
} bd_exec;

#define BD_WORDS(d) (((d) + 63) / 64)

/* f32 -> integer cast: round half to even (the default rounding mode), saturate to
 * [lo, hi]; NaN gives 0 (numpy leaves it undefined). */
static inline double bd_rint_sat(double v, double lo, double hi)
{
    if (v != v) return 0.0;
    v = rint(v);
    return v < lo ? lo : (v > hi ? hi : v);
}
/* Element i of a dense f32, i8, i16 or i32 array, as a double (exact). */
static inline double bd_load_f64(const void *x, int type, long i)
{
    switch (type) {
    case BD_F32: return (double)((const float *)x)[i];
    case BD_I8: return (double)((const int8_t *)x)[i];
    case BD_I16: return (double)((const int16_t *)x)[i];
    default: return (double)((const int32_t *)x)[i];
    }
}

/* ---- exp and the tanh derivative, the interpreter's bits (boldc/ops/common.py) ------------
 * numpy's exp and tanh differ from libm's in the last bit for many inputs, so the values
 * that reach the integer signals use this fixed sequence of IEEE double operations, the one
 * exp_fixed performs, each product and each sum rounded on its own: that needs the build's
 * -ffp-contract=off (boldc's flags and the exported Makefile set it), since a compiler
 * that contracts may fuse a product into a later sum even across statements. */

/* 2^k for -1022 <= k <= 1023, from its bits (exact). */
static inline double bd_pow2i(int k)
{
    const uint64_t bits = (uint64_t)(k + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* rint(v) (half to even) for |v| < 2^51 with no libm call: adding 1.5 * 2^52 rounds v to an
 * integer in the default rounding mode, and the subtraction is exact. */
static inline double bd_rint_small(double v)
{
    const double shifter = 0x1.8p52;
    const double t = v + shifter;
    return t - shifter;
}

/* e^x as common.exp_fixed: c = x clipped to [-746, 710]; k = rint(c * log2 e);
 * r = (c - k * LN2_HI) - k * LN2_LO; p = Horner's rule on 1/n! for n = 13 .. 0
 * (p = p * r + 1/n!); the result p * 2^k rounded once, as ldexp (two exact steps where 2^k
 * is not a normal double). NaN gives NaN. */
static const double bd_exp_terms[14] = { /* 1/n!, n = 0 .. 13 */
    0x1p+0, 0x1p+0, 0x1p-1, 0x1.5555555555555p-3, 0x1.5555555555555p-5, 0x1.1111111111111p-7,
    0x1.6c16c16c16c17p-10, 0x1.a01a01a01a01ap-13, 0x1.a01a01a01a01ap-16, 0x1.71de3a556c734p-19,
    0x1.27e4fb7789f5cp-22, 0x1.ae64567f544e4p-26, 0x1.1eed8eff8d898p-29, 0x1.6124613a86d09p-33,
};

static inline double bd_exp(double x)
{
    const double *terms = bd_exp_terms;
    if (x != x) return x;
    const double c = x < -746.0 ? -746.0 : (x > 710.0 ? 710.0 : x);
    const double t = c * 0x1.71547652b82fep+0; /* LOG2_E */
    const double k = bd_rint_small(t);
    const double hi = k * 0x1.62e42feep-1;       /* LN2_HI */
    const double lo = k * 0x1.a39ef35793c76p-33; /* LN2_LO */
    const double r = (c - hi) - lo;
    double p = terms[13];
    for (int n = 12; n >= 0; --n) {
        p = p * r;
        p = p + terms[n];
    }
    const int ki = (int)k; /* -1076 .. 1024 */
    if (ki > 1023) {
        const double big = p * bd_pow2i(ki - 1);
        return big * 2.0;
    }
    if (ki < -1022) {
        const double small = p * bd_pow2i(ki + 64);
        return small * 0x1p-64;
    }
    return p * bd_pow2i(ki);
}

/* e^x for x <= 0 (a softmax's x - max), written without branches or calls so that a loop
 * of it vectorizes: the operations of bd_exp for -708 <= x <= 0, so the same bits there;
 * below -708 it gives e^-708 (about 3.3e-308) instead of a smaller number, which no f32
 * quotient by a sum >= 1 can tell from it. 2^k comes from the bits of k + 1.5 * 2^52 (the
 * rounding step of bd_rint_small), so only integer operations on the double's bits are
 * needed. NaN gives NaN. */
static inline double bd_exp_nonpos(double x)
{
    const double c = x < -708.0 ? -708.0 : x;
    const double t = c * 0x1.71547652b82fep+0 + 0x1.8p52; /* rint(c * LOG2_E) + 1.5 * 2^52 */
    const double k = t - 0x1.8p52;
    const double hi = k * 0x1.62e42feep-1;
    const double lo = k * 0x1.a39ef35793c76p-33;
    const double r = (c - hi) - lo;
    double p = bd_exp_terms[13];
    for (int n = 12; n >= 0; --n) {
        p = p * r;
        p = p + bd_exp_terms[n];
    }
    uint64_t bits;
    memcpy(&bits, &t, sizeof bits);
    bits = (bits - UINT64_C(0x4338000000000000) + 1023) << 52; /* the bits of 2^k, -1021 <= k <= 0 */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* d/du tanh(u) = 1 - tanh(u)^2 = 4t / ((1 + t)(1 + t)) with t = bd_exp(-2|u|), in double (the
 * threshold's backward, docs/method.md §3): common.tanh_derivative's bits. */
static inline double bd_dtanh(double u)
{
    const double t = bd_exp(-2.0 * fabs(u));
    const double one_t = 1.0 + t;
    const double num = 4.0 * t;
    return num / (one_t * one_t);
}

/* The Bi-Real derivative max(0, 2 - 2|u|) of the threshold's backward; NaN stays NaN (numpy's
 * maximum), where fmax would give 0. */
static inline double bd_dbireal(double u)
{
    const double v = 2.0 - 2.0 * fabs(u);
    return v != v ? v : (v > 0.0 ? v : 0.0);
}

#define BD_ALIGN 64
#define BD_SCRATCH_ROUND(b) (((b) + (size_t)(BD_ALIGN - 1)) & ~(size_t)(BD_ALIGN - 1))

/* ---- Boolean convolution / linear ------------------------------------------------------- */
/* s = sign * (m - 2 * popcount(x XOR w)) + e(bias), m the true fan-in (padding bits of
 * the packed words are 0 on both sides, so they never count), docs/method.md §2. */
typedef struct {
    int C, H, W;                 /* input channels (all groups), height, width */
    int M, OH, OW;               /* output channels, height, width */
    int kh, kw, sh, sw, dh, dw;  /* kernel, stride, dilation */
    int pt, pl;                  /* top and left padding (bottom/right follow from OH, OW) */
    int groups;
    int sign;                    /* +1 xnor, -1 xor */
    int neutral;                 /* pad_mode "neutral": padded taps contribute 0 */
    int out_type;                /* BD_I8, BD_I16 or BD_I32 */
    int max_threads;             /* scratch was sized for this many threads */
} bd_bconv;

/* Arena scratch the kernel needs (bytes); the emitter reserves exactly this. */
size_t bd_bconv2d_scratch(const bd_bconv *g);
/* x: [n][H][W][ceil(C/64)] words; w: [M][kh][kw][ceil(C/g/64)] words; bias: M bits or
 * NULL; y: [n][OH][OW][M] of out_type. */
void bd_bconv2d(const bd_bconv *g, const bd_exec *ex, const uint64_t *x, const uint64_t *w,
                const uint64_t *bias, void *y, unsigned char *scratch);

typedef struct {
    int K;          /* input features (fan-in m) */
    int M;          /* output features */
    int sign;       /* +1 xnor, -1 xor */
    int out_type;   /* BD_I8, BD_I16 or BD_I32 */
    int max_threads;
} bd_blinear;

size_t bd_blinear_scratch(const bd_blinear *g);
/* x: [rows][ceil(K/64)] words; w: [M][ceil(K/64)] words; y: [rows][M]. */
void bd_blinear_run(const bd_blinear *g, const bd_exec *ex, long rows, const uint64_t *x, const uint64_t *w,
                    const uint64_t *bias, void *y, unsigned char *scratch);

/* counts[r * ldc + j] = sum_k popcount(A[r * lda + k] ^ B[(m0 + j) * ldb + k]),
 * for r < rows, m0 <= m0 + j < m1 (the plain reference the ISA layer's kernels match). */
void bd_bgemm_ref(int rows, int K, const uint64_t *A, long lda, const uint64_t *B, long ldb, int m0, int m1,
                  int32_t *counts, long ldc);

/* ---- threshold: x (channels last) -> packed bits --------------------------------------- */
/* bit = le[c] ? x <= t[c] : x >= t[c] for integer x (x_type BD_I8/16/32), t int32. */
void bd_threshold_int(const bd_exec *ex, const void *x, int x_type, long pixels, int C, const int32_t *t,
                      const uint8_t *le, uint64_t *y);
/* Same comparison in float32 for float x. */
void bd_threshold_f32(const bd_exec *ex, const float *x, long pixels, int C, const float *t, const uint8_t *le,
                      uint64_t *y);

/* ---- float layers (also mixed: b1 weights, and b1/int inputs read as numbers) ------------ */
typedef struct {
    int C, H, W, M, OH, OW;
    int kh, kw, sh, sw, dh, dw, pt, pl, groups;
    int x_type;      /* BD_F32, BD_I8, BD_I16, BD_I32 or BD_B1 (read as +-1) */
    int w_type;      /* BD_F32, or BD_B1 (mixed layer: e(w) times sign) */
    int sign;        /* +1, or -1 for a mixed xor layer */
    int max_threads;
} bd_fconv;

size_t bd_fconv2d_scratch(const bd_fconv *g);
/* x: [n][H][W][C] (packed words if b1); w: [M][kh][kw][C/g] floats or packed bits;
 * bias: M floats or NULL; y: [n][OH][OW][M] floats; zero padding. */
void bd_fconv2d(const bd_fconv *g, const bd_exec *ex, const void *x, const void *w, const float *bias, float *y,
                unsigned char *scratch);

typedef struct {
    int K, M;
    int x_type, w_type, sign;
    int max_threads;
} bd_flinear;

size_t bd_flinear_scratch(const bd_flinear *g);
/* x: [rows][K] (words if b1); w: [M][K] floats or packed bits; y: [rows][M] floats:
 * y = (float)(sign * acc + bias) (no bias: (float)(sign * acc)), acc = sum_k x * e(w) in double
 * in k order, x as float32 (float_ops.Linear, boolean_ops.MLinear: the interpreter's bits). */
void bd_flinear_run(const bd_flinear *g, const bd_exec *ex, long rows, const void *x, const void *w,
                    const float *bias, float *y, unsigned char *scratch);

/* ---- gradients (bd_grad.c): GEMMs over packed panels, exact for integer signals ---------- */
/* linear_grad_x: dx[rows][K] = scale * dy[rows][M] . e(w)[M][K];
 * linear_grad_w: dw[M][K] = scale * dy^T[M][rows] . e(x)[rows][K]. other_type is the dtype
 * of w (grad_x: BD_F32 or BD_B1) or of x (grad_w: any; b1 read as +-1). */
typedef struct {
    int M, K;
    int other_type;
    double scale;
    long max_rows;      /* rows at the planned batch (scratch is sized for it) */
    int max_threads;
    int dy_type;        /* the *_int functions: BD_I8 or BD_I16 (the f32 functions ignore it) */
} bd_lgrad;

/* An f32 signal: each sum in double in the order of its index (the output features j for
 * grad_x, the rows for grad_w; acc = acc + a * b, the product exact), then
 * dx = (float)(scale * acc): common.matmul_in_order's bits. Vectorised across the outputs;
 * no scratch (the functions return 0). */
size_t bd_linear_grad_x_scratch(const bd_lgrad *g);
void bd_linear_grad_x(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *w, float *dx,
                      unsigned char *scratch);
size_t bd_linear_grad_w_scratch(const bd_lgrad *g);
void bd_linear_grad_w(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *x, float *dw,
                      unsigned char *scratch);

/* An integer signal dy (g->dy_type BD_I8 or BD_I16) with its power-of-two scale *dy_scale,
 * against b1 w (grad_x) or b1 x (grad_w): the sums are exact integers (the integer GEMM
 * kernels' int32 tiles of k-blocks, added into int32 accumulators, or int64 ones where max
 * reduction * max|dy| exceeds 2^31 - 1: see bd_grad.c and bd_gemm.c), then
 * dx = (float)(((double)sum * dy_scale) * scale). */
size_t bd_linear_grad_x_int_scratch(const bd_lgrad *g);
void bd_linear_grad_x_int(const bd_lgrad *g, const bd_exec *ex, long rows, const void *dy, const uint64_t *w,
                          const float *dy_scale, float *dx, unsigned char *scratch);
size_t bd_linear_grad_w_int_scratch(const bd_lgrad *g);
void bd_linear_grad_w_int(const bd_lgrad *g, const bd_exec *ex, long rows, const void *dy, const uint64_t *x,
                          const float *dy_scale, float *dw, unsigned char *scratch);

/* Convolution gradients; maps channels-last, filters [M][kh][kw][C/g] (docs/training.md).
 * conv2d_grad_x: dx (input size H, W) from dy [n][OH][OW][M] and w (other_type F32 or B1);
 * conv2d_grad_w: dw [M][kh][kw][C/g] from dy and x (other_type any), x padded with pad_value. */
typedef struct {
    int C, H, W, M, OH, OW;
    int kh, kw, sh, sw, dh, dw, pt, pl, groups;
    int other_type;
    double scale;
    float pad_value;
    int max_batch;
    int max_threads;
    int dy_type;        /* the *_int functions: BD_I8 or BD_I16 (the f32 functions ignore it) */
} bd_cgrad;

size_t bd_conv2d_grad_x_scratch(const bd_cgrad *g);
void bd_conv2d_grad_x(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *w, float *dx,
                      unsigned char *scratch);
size_t bd_conv2d_grad_w_scratch(const bd_cgrad *g);
void bd_conv2d_grad_w(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *x, float *dw,
                      unsigned char *scratch);
/* The same with an integer signal (g->dy_type) and its scale, against b1 w / b1 x, exact as
 * the linear ones (pad_value must be -1, 0 or 1 for the sums to be integers). */
size_t bd_conv2d_grad_x_int_scratch(const bd_cgrad *g);
void bd_conv2d_grad_x_int(const bd_cgrad *g, const bd_exec *ex, const void *dy, const uint64_t *w,
                          const float *dy_scale, float *dx, unsigned char *scratch);
size_t bd_conv2d_grad_w_int_scratch(const bd_cgrad *g);
void bd_conv2d_grad_w_int(const bd_cgrad *g, const bd_exec *ex, const void *dy, const uint64_t *x,
                          const float *dy_scale, float *dw, unsigned char *scratch);

/* channel_sum of an integer signal stored [outer][C][inner] (dy_type BD_I8 or BD_I16):
 * y[c] = (float)((double)sum * dy_scale), the sum exact in int64. */
void bd_channel_sum_int(const bd_exec *ex, long outer, int C, long inner, const void *dy, int dy_type,
                        const float *dy_scale, float *y);

/* ---- integer signals (bd_signal.c): quantize_signal ------------------------------------ */
enum { BD_ROUND_NEAREST = 0, BD_ROUND_STOCHASTIC = 1, BD_ROUND_LOG = 2 };
typedef struct {
    int bits;            /* 16 (q int16), 8 or 4 (q int8) */
    int rounding;        /* BD_ROUND_* */
    uint64_t seed;       /* the seed attribute modulo 2^64 (stochastic rounding) */
    uint64_t stream;     /* the stream attribute modulo 2^64 */
    long hw;             /* storage [outer][hw][C]: hw = H*W of a channels-last map, else 1 */
    int C;               /* channels of a map, else the elements of a row (all dims but the first) */
    int max_threads;
} bd_quant;
/* z ~ q * scale (signal_ops.QuantizeSignal): m = max|z| = f * 2^E; scale = 2^e, e = max(E - S,
 * -126), S = bits - 1 (log: 2^(bits-1) - 2); v = z / 2^e; q = rint(v), floor(v + u) (u from the
 * SplitMix64 hash of seed, stream, *step and the element's logical row-major index) or
 * +-2^round(log2|v|); clamped to the largest level. A non-finite m gives q = 0, scale = NaN. */
void bd_quantize_signal(const bd_quant *g, const bd_exec *ex, long outer, const float *z, const int32_t *step,
                        void *q, float *scale);
/* u in [0, 1) of element `index` (signal_ops.uniform): the top 24 bits of the hash / 2^24. */
double bd_uniform(uint64_t seed, uint64_t stream, uint64_t step, uint64_t index);

/* ---- optimizer (bd_train.c), docs/method.md §4 and docs/training.md ------------------------------ */
/* The Boolean optimizer on a b1 param stored as `runs` runs of D bits (each BD_WORDS(D)
 * words) and its accumulator m / weight signal q (runs x D floats, same order):
 * M = fl(fl(beta*M) + fl(eta*q)); flip = W ? M >= 1 : M <= -1; W ^= flip; M = 0 where
 * flipped; beta = (float)((double)kept / numel). */
void bd_flip_update(const bd_exec *ex, long runs, int D, uint64_t *w, float *m, float *beta, const float *q,
                    const float *eta);
/* The same with an i16 accumulator M = m * m_step (m_step a power of two): the new M is
 * rounded to a multiple of m_step (half to even) and saturated at +-32767 steps, the flip
 * decided on it; *saturated (i32) counts the entries that saturated, up to 2^31 - 1. */
void bd_flip_update_i16(const bd_exec *ex, long runs, int D, uint64_t *w, int16_t *m, float *beta, const float *q,
                        const float *eta, float m_step, int32_t *saturated);
/* threshold_grad in tanh mode on f32 operands of one layout: y[i] = (float)((double)dy[i] *
 * bd_dtanh(alpha * ((double)x[i] - tau))) for i < count, the map kernel's bits; y may be dy or x. */
void bd_threshold_grad_tanh(const bd_exec *ex, long count, const float *dy, const float *x, double alpha, double tau,
                            float *y);
/* Adam (PyTorch's), in double, rounded to f32; t = *step + 1. */
void bd_adam_update(const bd_exec *ex, long count, float *p, float *m, float *v, const float *g, const float *lr,
                    const int32_t *step, double beta1, double beta2, double eps, double weight_decay);

/* softmax_xent_grad of logits z [rows][classes] and labels in range (loss_ops): per row
 * e_c = bd_exp(z_c - max z), their sum in class order, dz_c = e_c / sum - [c = label], divided
 * by rows when mean; in double, rounded once. */
void bd_softmax_xent_grad(long rows, int classes, const float *z, const int32_t *labels, int mean, float *dz);
/* The same per position of dense logits: outer samples of inner positions each, position s of
 * sample k at z + k*classes*inner + s*pos_stride, class c class_stride further ([N][C][L]: 1
 * and L; channels-last [N][H*W][C]: C and 1), its label labels[k*inner + s]. A label equal to
 * ignore_index gives dz 0 for every class; mean divides by the count of the other labels. */
void bd_softmax_xent_grad_map(long outer, long inner, int classes, long pos_stride, long class_stride, const float *z,
                              const int32_t *labels, int32_t ignore_index, int mean, float *dz);

/* ---- batch normalisation in training (bd_norm.c, norm_ops) -------------------------------- */
/* x [n][C][inner] (rank 2: inner 1; rank 3: row-major) or channels last [n][inner][C] (rank 4).
 * The per-channel sums are sequential in double from 0.0, sample b then position p ascending
 * (k = b * inner + p; channels last: the pixels' storage order), as norm_ops.channel_sums;
 * mean = sum / count, var = sum((x - mean)^2) / count. Scratch: 5 * round64(8 * C) bytes. */
typedef struct {
    int C;
    long inner;
    int channels_last;
    int x_type;         /* BD_F32, BD_I8, BD_I16 or BD_I32 */
    double epsilon, momentum;
    int max_batch;      /* scratch is sized for it */
    int max_threads;
} bd_bnorm;

size_t bd_batchnorm_scratch(const bd_bnorm *g);
/* y = ((x - mean) * invstd) * scale + bias; running_mean = (1 - mom) * rm + mom * mean;
 * running_var = (1 - mom) * rv + (mom * var) * (count / (count - 1)); invstd = 1 / sqrt(var + eps). */
void bd_batchnorm_train(const bd_bnorm *g, const bd_exec *ex, const void *x, const float *scale, const float *bias,
                        float *running_mean, float *running_var, float *y, unsigned char *scratch);
/* dx = ((scale * invstd) / count) * ((count * dy - sum dy) - xhat * sum(dy * xhat)), xhat = (x - mean) * invstd. */
void bd_batchnorm_train_grad_x(const bd_bnorm *g, const bd_exec *ex, const float *dy, const void *x,
                               const float *scale, float *dx, unsigned char *scratch);
/* dscale = sum(dy * xhat). */
void bd_batchnorm_train_grad_scale(const bd_bnorm *g, const bd_exec *ex, const float *dy, const void *x,
                                   float *dscale, unsigned char *scratch);

/* ---- checkpoints (bd_ckpt.c): the format of docs/training.md ---------------------------- */
typedef struct {
    const char *name;        /* UTF-8 */
    int dtype;               /* BD_F32 .. BD_B1 */
    int rank;                /* 0..8 */
    const uint32_t *dims;    /* logical dims (NCHW order for maps, [M][C][kh][kw] for filters) */
    size_t offset;           /* byte offset in the params image (storage layout) */
} bd_param_info;

enum {
    BD_CK_OK = 0, BD_CK_OPEN, BD_CK_IO, BD_CK_SHORT, BD_CK_MAGIC, BD_CK_VERSION, BD_CK_CRC, BD_CK_TABLE,
    BD_CK_MODEL, BD_CK_META, BD_CK_RENAME, BD_CK_ARG
};
/* Writes <path>.tmp then renames it over path. meta: free bytes (JSON by convention). */
int bd_checkpoint_save(const char *path, const bd_param_info *params, int count, const unsigned char *image,
                       const void *meta, size_t meta_len);
/* Verifies everything before it changes the image; meta (may be NULL) gets the meta bytes
 * (BD_CK_META, image untouched, if more than meta_cap), *meta_len (may be NULL) their count. */
int bd_checkpoint_load(const char *path, const bd_param_info *params, int count, unsigned char *image, void *meta,
                       size_t meta_cap, size_t *meta_len);
const char *bd_checkpoint_error(int code);

/* ---- weights blob -------------------------------------------------------------------- */
/* CRC-32 as zlib computes it; _update continues a running value (start with 0). */
uint32_t bd_crc32_update(uint32_t crc, const void *data, size_t len);
uint32_t bd_crc32(const void *data, size_t len);
/* A weights blob is a 32-byte header then the params image:
 * "BOLDCW01" | u64 image bytes | u32 crc32 of the image | u32 0 | u64 model hash, little-endian.
 * Returns the image, or NULL (with *why set) if the blob is not this model's. */
const unsigned char *bd_weights_image(const void *blob, size_t len, size_t want_bytes, uint64_t model_hash,
                                      const char **why);

const char *bd_build_info(void);
/* Wall-clock seconds (monotonic where POSIX clocks exist, else C's clock()): profiling only. */
double bd_seconds(void);

#endif /* BOLDC_RT_H */
