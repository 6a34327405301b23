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
 *  - the SIMD path is chosen from the target macros the compiler sets from its
 *    flags (-mavx512vpopcntdq, -march=native): AVX-512 VPOPCNTDQ kernels when the
 *    target has them, else the portable C kernels (which the compiler may still
 *    vectorise, and which use the popcnt instruction when the target has one).
 *    BD_SIMD_NAME names the path compiled in.
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

/* ---- SIMD path ----------------------------------------------------------------------- */
#if !defined(BD_NO_SIMD) && defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#define BD_SIMD_AVX512 1
#define BD_SIMD_NAME "avx512-vpopcntdq"
#else
#define BD_SIMD_NAME "portable"
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
/* d/du tanh(u) = 1 - tanh(u)^2, in double (the threshold's backward, SPEC §3). */
static inline double bd_dtanh(double u)
{
    const double t = tanh(u);
    return 1.0 - t * t;
}
#define BD_ALIGN 64
#define BD_SCRATCH_ROUND(b) (((b) + (size_t)(BD_ALIGN - 1)) & ~(size_t)(BD_ALIGN - 1))

/* ---- Boolean convolution / linear ------------------------------------------------------- */
/* s = sign * (m - 2 * popcount(x XOR w)) + e(bias), m the true fan-in (padding bits of
 * the packed words are 0 on both sides, so they never count), SPEC §2. */
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
 * for r < rows, m0 <= m0 + j < m1 (the portable reference the SIMD kernels match). */
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
/* x: [rows][K] (words if b1); w: [M][K] floats or packed bits; y: [rows][M] floats. */
void bd_flinear_run(const bd_flinear *g, const bd_exec *ex, long rows, const void *x, const void *w,
                    const float *bias, float *y, unsigned char *scratch);

/* ---- gradients (bd_grad.c): float GEMMs over packed panels ------------------------------- */
/* linear_grad_x: dx[rows][K] = scale * dy[rows][M] . e(w)[M][K];
 * linear_grad_w: dw[M][K] = scale * dy^T[M][rows] . e(x)[rows][K]. other_type is the dtype
 * of w (grad_x: BD_F32 or BD_B1) or of x (grad_w: any; b1 read as +-1). */
typedef struct {
    int M, K;
    int other_type;
    double scale;
    long max_rows;      /* rows at the planned batch (scratch is sized for it) */
    int max_threads;
} bd_lgrad;

size_t bd_linear_grad_x_scratch(const bd_lgrad *g);
void bd_linear_grad_x(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *w, float *dx,
                      unsigned char *scratch);
size_t bd_linear_grad_w_scratch(const bd_lgrad *g);
void bd_linear_grad_w(const bd_lgrad *g, const bd_exec *ex, long rows, const float *dy, const void *x, float *dw,
                      unsigned char *scratch);

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
} bd_cgrad;

size_t bd_conv2d_grad_x_scratch(const bd_cgrad *g);
void bd_conv2d_grad_x(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *w, float *dx,
                      unsigned char *scratch);
size_t bd_conv2d_grad_w_scratch(const bd_cgrad *g);
void bd_conv2d_grad_w(const bd_cgrad *g, const bd_exec *ex, const float *dy, const void *x, float *dw,
                      unsigned char *scratch);

/* ---- optimizer (bd_train.c), SPEC §4 and docs/training.md ------------------------------ */
/* The Boolean optimizer on a b1 param stored as `runs` runs of D bits (each BD_WORDS(D)
 * words) and its accumulator m / weight signal q (runs x D floats, same order):
 * M = fl(fl(beta*M) + fl(eta*q)); flip = W ? M >= 1 : M <= -1; W ^= flip; M = 0 where
 * flipped; beta = (float)((double)kept / numel). */
void bd_flip_update(const bd_exec *ex, long runs, int D, uint64_t *w, float *m, float *beta, const float *q,
                    const float *eta);
/* Adam (PyTorch's), in double, rounded to f32; t = *step + 1. */
void bd_adam_update(const bd_exec *ex, long count, float *p, float *m, float *v, const float *g, const float *lr,
                    const int32_t *step, double beta1, double beta2, double eps, double weight_decay);

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
