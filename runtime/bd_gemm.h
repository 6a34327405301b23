/* boldc runtime: the packed GEMM of the layer gradients (bd_gemm.c), for the drivers of
 * bd_grad.c only (not part of the API of boldc_rt.h).
 *
 * C (M x N) = alpha * A.B over a reduction of K, with A and B read through the op's packers
 * into panels: A in micro-panels of BD_MR rows, B in panels of BD_NR columns. What the panels
 * hold (the call's elem):
 *   BD_ELEM_F32  float32 values; C = alpha * A.B in float32 (f32 signals);
 *   BD_ELEM_I16  the int16 groups of bd_isa_igemm_i16 (i16 signals against e = -1, 0, 1);
 *   BD_ELEM_I8   the int8 groups of bd_isa_igemm_i8 (i8 signals; A as a = z + 128).
 * The integer sums are exact: each k-block's int32 tile is added into int32 accumulators
 * (BD_ACC_I32: the caller's bound says they cannot overflow) or int64 ones (BD_ACC_I64).
 */
#ifndef BD_GEMM_H
#define BD_GEMM_H

#include "bd_isa.h"

enum { BD_ELEM_F32 = 0, BD_ELEM_I16 = 1, BD_ELEM_I8 = 2 };
/* Where the tiles go: C = alpha * acc (f32), or integer accumulators (the same indices as C). */
enum { BD_ACC_F32 = 0, BD_ACC_I32 = 1, BD_ACC_I64 = 2 };
/* A panel's element kind: the elem's, except the int8 B panels (int8 e, not biased bytes). */
enum { BD_PANEL_F32 = 0, BD_PANEL_I16 = 1, BD_PANEL_I8A = 2, BD_PANEL_I8B = 3 };

/* One panel being packed. The packers write plain rows, as for floats: element (k, j) of a B
 * panel at k * BD_NR + j, element (r, k) of an A panel at k * BD_MR + r (k-major) or
 * r * rowlen + k (row-major); the driver then puts the integer panels' values in the groups of
 * the micro-kernels (bd_isa.h). */
typedef struct {
    void *p;
    int kind;    /* BD_PANEL_* */
    long rowlen; /* row-major A panels: elements per row (the k-block rounded up to the group) */
    int to_rows; /* bd_panel_columns writes rows (r * rowlen + k), not k-major (the AMX panels) */
} bd_panel;

/* Panel elements at .. at + n - 1 = elements k0 .. k0 + n - 1 of run `run` of x (runs of len
 * elements; b1 runs are BD_WORDS(len) words): numbers as themselves, b1 as e = +-1. */
void bd_panel_run(const bd_panel *d, long at, const void *x, int type, long run, long len, long k0, int n);
/* Panel elements at .. at + n - 1 = value (a pad value, or 0 for a missing signal). */
void bd_panel_fill(const bd_panel *d, long at, float value, int n);
/* A k-major A panel: A(r, k) = x[(k0 + k) * ld + i0 + r] for k < kc, r < rows (numbers); in rows
 * when d->to_rows. */
void bd_panel_columns(const bd_panel *d, const void *x, int type, long ld, long k0, int kc, long i0, int rows);

/* An A packer fills one micro-panel: A(i0 + r, k0 + k) for r < rows, k < kc, k-major or, for
 * packers that copy whole row pieces, row-major (bd_gemm_call.a_rows); a B packer fills
 * B(k0 + k, j0 + j) for j < cols. The driver zeroes a partial panel first. */
typedef void (*bd_pack_a_fn)(const void *src, long i0, int rows, long k0, int kc, const bd_panel *d);
typedef void (*bd_pack_b_fn)(const void *src, long k0, int kc, long j0, int cols, const bd_panel *d);

typedef struct {
    long M, N, K;          /* this call's sizes */
    bd_pack_a_fn pack_a;
    const void *a;
    int a_rows;            /* the A packer writes row-major panels */
    bd_pack_b_fn pack_b;
    const void *b;
    float *C;              /* BD_ACC_F32: the result, leading dimension ldc */
    long ldc;
    double alpha;
    int mode;              /* BD_ACC_* */
    void *acc;             /* the integer accumulators (mode != BD_ACC_F32), leading dimension ldc */
    int elem;              /* BD_ELEM_*: BD_ELEM_F32 with BD_ACC_F32, an integer one otherwise */
} bd_gemm_call;

/* Blocking from the largest sizes the op is planned for (docs/backend.md, "Scratch"). */
typedef struct {
    long mc, kc, nc;
    int g;                 /* k values per group of the elem */
    int amx;               /* integer panels in the AMX forms (bd_isa_igemm_amx): bd_isa_amx_ready() */
    size_t a_panel, b_panel; /* bytes of one panel (an int8 B panel ends with its BD_NR column sums) */
    size_t b_bytes, a_bytes; /* the packed B block, and one thread's A block */
} bd_gemm_plan;

bd_gemm_plan bd_gemm_plan_of(long max_m, long max_n, long max_k, int elem);
/* Scratch of a plan: the B block and max_threads A blocks. */
size_t bd_gemm_plan_bytes(const bd_gemm_plan *p, int max_threads);
/* C = alpha * A.B (or the sums into acc), blocked by the plan. With several threads the row
 * blocks are split when there are enough of them, else the column panels of each block
 * (every C element is written by one thread: no races). */
void bd_gemm_run(const bd_gemm_call *c, const bd_gemm_plan *p, int nt, unsigned char *scratch);

#endif /* BD_GEMM_H */
