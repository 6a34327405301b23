/* The packed GEMM of the layer gradients (bd_gemm.h): panels, blocking, threads and the tile
 * loop, in plain C; the micro-kernels are the ISA layer's bd_isa_sgemm_tile (f32 results)
 * and bd_isa_igemm_i16 / bd_isa_igemm_i8 (the exact sums of integer signals), a tile of
 * BD_MR = 8 rows x BD_NR = 32 columns.
 *
 * Blocks: BD_MC rows x BD_NC columns x a k-block of BD_KC floats, or BD_MC_INT rows x BD_NC
 * columns x BD_KC_I16 / BD_KC_I8 values in the integer panels (a B panel of 32 KB, held in L1
 * while the A panels of the row block stream past it). An integer k-block's int32 tile is
 * exact: at most BD_KC_I16 terms of |z * e| <= 2^15, far below 2^31.
 *
 * The packers write plain rows; the integer panels are then put in the kernels' groups in
 * place (to_groups). Writing the groups directly would make every row write a strided one,
 * which the compiler does not vectorise: measured slower (the +-1 expansion of a weight
 * gradient's im2col took longer than its kernel).
 */
#include "bd_gemm.h"

#define BD_KC 256
#define BD_KC_I16 512  /* int16 panels: a B panel is 512 x 32 x 2 bytes = 32 KB */
#define BD_KC_I8 1024  /* int8 panels: 1024 x 32 bytes */
#define BD_MC 128
/* integer panels: an A block of 512 rows x 512 int16 (or 1024 int8) is 512 KB, held in L2; a
 * weight gradient (M = the layer's output channels, up to 512) is then one row block, packed
 * once per k-block for all the column blocks */
#define BD_MC_INT 512
#define BD_NC 256

static long up(long v, long m) { return (v + m - 1) / m * m; }
static long lmin(long a, long b) { return a < b ? a : b; }

/* ---- panel elements ------------------------------------------------------------------------ */

/* Element k of a run of `len` elements starting at run `run` of x (a number). */
static inline float number_at(const void *x, int type, long run, long len, long k)
{
    switch (type) {
    case BD_F32: return ((const float *)x)[run * len + k];
    case BD_I8: return (float)((const int8_t *)x)[run * len + k];
    case BD_I16: return (float)((const int16_t *)x)[run * len + k];
    default: return (float)((const int32_t *)x)[run * len + k];
    }
}

/* dst[j] = e(bit j of bits), +1 or -1 in type T, for j < 32: a function of its own with a restrict
 * destination, so that the compiler vectorises it (inside the loop over the words it did not). */
#define BD_SIGNS32(NAME, T)                                                       \
    static inline void NAME(T *restrict dst, uint32_t bits)                       \
    {                                                                             \
        for (int j = 0; j < 32; ++j) dst[j] = (T)((int)((bits >> j) & 1u) * 2 - 1); \
    }
BD_SIGNS32(signs32_f32, float)
BD_SIGNS32(signs32_i16, int16_t)
BD_SIGNS32(signs32_i8, int8_t)
#undef BD_SIGNS32

/* dst[j] = e(bit k0 + j) of a b1 row, +1 or -1 in type T, for j < n: 32 bits at a time out
 * of the 64-bit words. */
#define BD_E_BITS(T, SIGNS32)                                                                  \
    do {                                                                                       \
        T *dst = (T *)d->p + at;                                                               \
        for (int j0 = 0; j0 < n; j0 += 32) {                                                   \
            const long k = k0 + j0;                                                            \
            const int sh = (int)(k & 63), m = n - j0 < 32 ? n - j0 : 32;                       \
            uint64_t w = row[k >> 6] >> sh;                                                    \
            if (sh > 32 && ((k + m - 1) >> 6) != (k >> 6)) w |= row[(k >> 6) + 1] << (64 - sh); \
            const uint32_t bits = (uint32_t)w;                                                 \
            if (m == 32)                                                                       \
                SIGNS32(dst + j0, bits);                                                       \
            else                                                                               \
                for (int j = 0; j < m; ++j) dst[j0 + j] = (T)((int)((bits >> j) & 1u) * 2 - 1); \
        }                                                                                      \
    } while (0)

static void panel_bits(const bd_panel *d, long at, const uint64_t *row, long k0, int n)
{
    if (d->kind == BD_PANEL_F32) BD_E_BITS(float, signs32_f32);
    else if (d->kind == BD_PANEL_I16) BD_E_BITS(int16_t, signs32_i16);
    else BD_E_BITS(int8_t, signs32_i8); /* BD_PANEL_I8B: b1 operands are B values */
}
#undef BD_E_BITS

void bd_panel_run(const bd_panel *d, long at, const void *x, int type, long run, long len, long k0, int n)
{
    if (type == BD_B1) {
        panel_bits(d, at, (const uint64_t *)x + run * BD_WORDS(len), k0, n);
    } else if (d->kind == BD_PANEL_F32) {
        float *dst = (float *)d->p + at;
        if (type == BD_F32) memcpy(dst, (const float *)x + run * len + k0, sizeof(float) * (size_t)n);
        else for (int j = 0; j < n; ++j) dst[j] = number_at(x, type, run, len, k0 + j);
    } else if (d->kind == BD_PANEL_I16 && type == BD_I16) {
        memcpy((int16_t *)d->p + at, (const int16_t *)x + run * len + k0, sizeof(int16_t) * (size_t)n);
    } else if (d->kind == BD_PANEL_I8A && type == BD_I8) {
        const int8_t *src = (const int8_t *)x + run * len + k0;
        uint8_t *dst = (uint8_t *)d->p + at;
        for (int j = 0; j < n; ++j) dst[j] = (uint8_t)(src[j] + 128);
    } else { /* any other number into an integer panel (not used by the drivers: kept general) */
        for (int j = 0; j < n; ++j) bd_panel_fill(d, at + j, (float)bd_load_int(x, type, run * len + k0 + j), 1);
    }
}

void bd_panel_fill(const bd_panel *d, long at, float value, int n)
{
    const int v = (int)value;
    switch (d->kind) { /* one loop per kind (the compiler vectorises each) */
    case BD_PANEL_F32:
        for (long i = at; i < at + n; ++i) ((float *)d->p)[i] = value;
        break;
    case BD_PANEL_I16:
        for (long i = at; i < at + n; ++i) ((int16_t *)d->p)[i] = (int16_t)v;
        break;
    case BD_PANEL_I8A:
        memset((uint8_t *)d->p + at, (uint8_t)(v + 128), (size_t)n);
        break;
    default:
        memset((int8_t *)d->p + at, (int8_t)v, (size_t)n);
        break;
    }
}

/* The k-major panel from columns of x: element (r, k) at k * BD_MR + r (a full panel's BD_MR
 * values per k in one vector step). */
#define BD_COLUMNS(T, S, CONV)                                                                \
    do {                                                                                      \
        const S *src = (const S *)x + k0 * ld + i0;                                           \
        T *dst = (T *)d->p;                                                                   \
        if (d->to_rows) { /* element (r, k) at r * rowlen + k: BD_MR rows written in step */ \
            const long rl = d->rowlen;                                                        \
            for (int k = 0; k < kc; ++k) {                                                    \
                const S *s = src + k * ld;                                                    \
                for (int r = 0; r < rows; ++r) dst[r * rl + k] = CONV(s[r]);                  \
            }                                                                                 \
        } else {                                                                              \
            for (int k = 0; k < kc; ++k) {                                                    \
                T *o = dst + k * BD_MR;                                                       \
                const S *s = src + k * ld;                                                    \
                if (rows == BD_MR)                                                            \
                    for (int r = 0; r < BD_MR; ++r) o[r] = CONV(s[r]);                        \
                else                                                                          \
                    for (int r = 0; r < rows; ++r) o[r] = CONV(s[r]);                         \
            }                                                                                 \
        }                                                                                     \
    } while (0)
#define BD_AS_FLOAT(v) ((float)(v))
#define BD_AS_SELF(v) (v)
#define BD_AS_BIASED(v) ((uint8_t)((v) + 128))

void bd_panel_columns(const bd_panel *d, const void *x, int type, long ld, long k0, int kc, long i0, int rows)
{
    if (d->kind == BD_PANEL_I16) BD_COLUMNS(int16_t, int16_t, BD_AS_SELF);
    else if (d->kind == BD_PANEL_I8A) BD_COLUMNS(uint8_t, int8_t, BD_AS_BIASED);
    else if (type == BD_F32) BD_COLUMNS(float, float, BD_AS_FLOAT);
    else if (type == BD_I16) BD_COLUMNS(float, int16_t, BD_AS_FLOAT);
    else BD_COLUMNS(float, int8_t, BD_AS_FLOAT);
}
#undef BD_COLUMNS
#undef BD_AS_FLOAT
#undef BD_AS_SELF
#undef BD_AS_BIASED

/* An integer panel from rows of `width` values (row k at k * width) to the micro-kernels'
 * groups (group q: for each of the width columns, its g values of k = q*g .. q*g + g - 1), in
 * place: a group occupies the same bytes in both orders, so each is transposed through a
 * copy on the stack (loops the compiler vectorises). */
static void to_groups(unsigned char *panel, int elem, long kp, int width)
{
    const size_t group = 4 * (size_t)width; /* bytes of a group, in either order */
    if (elem == BD_ELEM_I16) {
        for (long q = 0; q < kp / BD_IG16; ++q) {
            int16_t rows[BD_IG16 * BD_NR], out[BD_IG16 * BD_NR];
            memcpy(rows, panel + q * group, group);
            for (int i = 0; i < width; ++i) {
                out[BD_IG16 * i] = rows[i];
                out[BD_IG16 * i + 1] = rows[width + i];
            }
            memcpy(panel + q * group, out, group);
        }
    } else {
        for (long q = 0; q < kp / BD_IG8; ++q) {
            int8_t rows[BD_IG8 * BD_NR], out[BD_IG8 * BD_NR];
            memcpy(rows, panel + q * group, group);
            for (int i = 0; i < width; ++i)
                for (int t = 0; t < BD_IG8; ++t) out[BD_IG8 * i + t] = rows[t * width + i];
            memcpy(panel + q * group, out, group);
        }
    }
}

/* The AMX forms of the integer panels (bd_isa.h, bd_isa_igemm_amx), in place from the plain values
 * the packers write, through copies on the stack (at most 8 KB). The rows of A are lda = size * pk
 * bytes apart, pk the planned k-block's values (p->kc rounded up to the group): the same in every
 * panel, so two panels in a row are one tile of 2 * BD_MR rows. The k-major packers write those
 * rows directly (bd_panel.to_rows). */

/* A, i16: each row of int16 z (2 * pk bytes) to its two byte planes, hi = z >> 8 in the first pk
 * bytes and lo = z & 255 in the next pk. */
static void amx_planes(unsigned char *panel, long kp, long pk)
{
    for (int r = 0; r < BD_MR; ++r) {
        unsigned char *row = panel + 2 * r * pk;
        int16_t z[BD_KC_I16];
        memcpy(z, row, sizeof(int16_t) * (size_t)kp);
        for (long k = 0; k < kp; ++k) {
            row[k] = (unsigned char)(uint8_t)(int8_t)(z[k] >> 8);
            row[pk + k] = (unsigned char)(z[k] & 255);
        }
    }
}

/* B, i16: rows of int16 e (element (k, j) at k * BD_NR + j) to int8 groups of 4 (byte
 * (k / 4 * BD_NR + j) * 4 + k % 4, zero past kp). Group q's bytes come before its rows'. */
static void amx_b_groups(unsigned char *panel, long kp)
{
    for (long q = 0; q < (kp + 3) / 4; ++q) {
        int16_t rows[4 * BD_NR] = {0};
        int8_t out[4 * BD_NR];
        const long n = kp - 4 * q < 4 ? kp - 4 * q : 4;
        memcpy(rows, panel + 2 * 4 * BD_NR * q, sizeof(int16_t) * (size_t)(n * BD_NR));
        for (int j = 0; j < BD_NR; ++j)
            for (int t = 0; t < 4; ++t) out[4 * j + t] = (int8_t)rows[t * BD_NR + j];
        memcpy(panel + 4 * BD_NR * q, out, sizeof out);
    }
}

/* ---- plan ---------------------------------------------------------------------------------- */

bd_gemm_plan bd_gemm_plan_of(long max_m, long max_n, long max_k, int elem)
{
    bd_gemm_plan p;
    const long kc_cap = elem == BD_ELEM_F32 ? BD_KC : (elem == BD_ELEM_I16 ? BD_KC_I16 : BD_KC_I8);
    const size_t size = elem == BD_ELEM_F32 ? 4 : (elem == BD_ELEM_I16 ? 2 : 1);
    p.g = elem == BD_ELEM_F32 ? 1 : (elem == BD_ELEM_I16 ? BD_IG16 : BD_IG8);
    p.amx = elem != BD_ELEM_F32 && bd_isa_amx_ready();
    p.mc = lmin(elem == BD_ELEM_F32 ? BD_MC : BD_MC_INT, up(max_m > 0 ? max_m : 1, BD_MR));
    p.kc = lmin(kc_cap, max_k > 0 ? max_k : 1);
    p.nc = lmin(BD_NC, up(max_n > 0 ? max_n : 1, BD_NR));
    const size_t kp = (size_t)up(p.kc, p.g);
    p.a_panel = size * kp * BD_MR;
    p.b_panel = size * kp * BD_NR + (elem == BD_ELEM_I8 ? sizeof(int32_t) * BD_NR : 0);
    p.b_bytes = BD_SCRATCH_ROUND(p.b_panel * (size_t)(p.nc / BD_NR));
    p.a_bytes = BD_SCRATCH_ROUND(p.a_panel * (size_t)(p.mc / BD_MR));
    return p;
}

size_t bd_gemm_plan_bytes(const bd_gemm_plan *p, int max_threads)
{
    return p->b_bytes + (size_t)(max_threads > 0 ? max_threads : 1) * p->a_bytes;
}

/* ---- driver -------------------------------------------------------------------------------- */

static void pack_a_panel(const bd_gemm_call *c, const bd_gemm_plan *p, long i0, int rows, long k0, int kc,
                         unsigned char *dst)
{
    const long kp = up(kc, p->g), pk = up(p->kc, p->g);
    /* AMX: rows pk apart, the k-major packers' too (to_rows) */
    const bd_panel d = {dst, c->elem, p->amx ? pk : kp, p->amx};
    if (rows < BD_MR || kc < kp) memset(dst, 0, p->a_panel);
    c->pack_a(c->a, i0, rows, k0, kc, &d);
    if (p->amx) {
        if (c->elem == BD_ELEM_I16) amx_planes(dst, kp, pk);
    } else if (c->elem != BD_ELEM_F32 && !c->a_rows) {
        to_groups(dst, c->elem, kp, BD_MR); /* row-major: pairs in place */
    }
}

/* The column sums of an int8 B panel of kp rows (still rows: a vectorised sum of rows), where
 * bd_isa_igemm_i8 reads them. */
static void b_sums(const int8_t *panel, long kp, int32_t *sums)
{
    int32_t sum[BD_NR] = {0}; /* on the stack: the panel's bytes cannot alias it */
    for (long k = 0; k < kp; ++k)
        for (int j = 0; j < BD_NR; ++j) sum[j] += panel[k * BD_NR + j];
    memcpy(sums, sum, sizeof sum);
}

static void pack_b_panel(const bd_gemm_call *c, const bd_gemm_plan *p, long k0, int kc, long j0, int cols,
                         unsigned char *dst)
{
    const long kp = up(kc, p->g);
    const bd_panel d = {dst, c->elem == BD_ELEM_I8 ? BD_PANEL_I8B : c->elem, 0, 0};
    if (cols < BD_NR || kc < kp) memset(dst, 0, p->b_panel);
    c->pack_b(c->b, k0, kc, j0, cols, &d);
    if (c->elem == BD_ELEM_I8) b_sums((const int8_t *)dst, kp, (int32_t *)(dst + p->b_panel) - BD_NR);
    if (p->amx && c->elem == BD_ELEM_I16) amx_b_groups(dst, kp);
    else if (c->elem != BD_ELEM_F32) to_groups(dst, c->elem, kp, BD_NR);
}

/* An integer tile of the elem's kernel into o (rows ldo apart): BD_MR rows, or up to 2 * BD_MR
 * (two panels) on AMX. */
static void int_tile(const bd_gemm_plan *p, int elem, int kg, const unsigned char *Ap, long ars, long aks,
                     const unsigned char *Bp, const int32_t *bsum, int32_t *o, long ldo, int rows, int cols, int add)
{
    if (p->amx) {
        const long lda = (elem == BD_ELEM_I16 ? 2 : 1) * up(p->kc, p->g);
        bd_isa_igemm_amx(elem == BD_ELEM_I8, kg * p->g, lda, Ap, Bp, bsum, o, ldo, rows, cols, add);
    } else if (elem == BD_ELEM_I16) {
        bd_isa_igemm_i16(kg, Ap, ars, aks, Bp, o, ldo, rows, cols, add);
    } else {
        bd_isa_igemm_i8(kg, Ap, ars, aks, Bp, bsum, o, ldo, rows, cols, add);
    }
}

/* The tile at rows i0.., columns j0.. of one k-block (add: onto the earlier blocks'). */
static void gemm_tile(const bd_gemm_call *c, const bd_gemm_plan *p, int kc, const unsigned char *Ap, long ars,
                      long aks, const unsigned char *Bp, long i0, long j0, int rows, int cols, int add)
{
    if (c->mode == BD_ACC_F32) {
        bd_isa_sgemm_tile(kc, (const float *)Ap, ars, aks, (const float *)Bp, c->C + i0 * c->ldc + j0, c->ldc, rows,
                          cols, c->alpha, add);
        return;
    }
    const int kg = (int)(up(kc, p->g) / p->g);
    const int32_t *bsum = (const int32_t *)(Bp + p->b_panel) - BD_NR; /* int8 panels only */
    if (c->mode == BD_ACC_I32) { /* the kernel adds into the result's bytes */
        int_tile(p, c->elem, kg, Ap, ars, aks, Bp, bsum, (int32_t *)c->acc + i0 * c->ldc + j0, c->ldc, rows, cols, add);
        return;
    }
    int32_t tile[2 * BD_MR * BD_NR];
    int_tile(p, c->elem, kg, Ap, ars, aks, Bp, bsum, tile, BD_NR, rows, cols, 0);
    for (int r = 0; r < rows; ++r) {
        int64_t *o = (int64_t *)c->acc + (i0 + r) * c->ldc + j0;
        const int32_t *t = tile + r * BD_NR;
        if (add) for (int j = 0; j < cols; ++j) o[j] += t[j];
        else for (int j = 0; j < cols; ++j) o[j] = t[j];
    }
}

/* Every result of an empty reduction (K = 0): 0. */
static void gemm_zero(const bd_gemm_call *c)
{
    for (long i = 0; i < c->M; ++i) {
        const long off = i * c->ldc;
        if (c->mode == BD_ACC_F32) memset(c->C + off, 0, sizeof(float) * (size_t)c->N);
        else if (c->mode == BD_ACC_I32) memset((int32_t *)c->acc + off, 0, sizeof(int32_t) * (size_t)c->N);
        else memset((int64_t *)c->acc + off, 0, sizeof(int64_t) * (size_t)c->N);
    }
}

/* The row panels of one row block against every column panel of the packed B block. */
static void block_tiles(const bd_gemm_call *c, const bd_gemm_plan *p, int kc, const unsigned char *Ap,
                        const unsigned char *Bp, long ic, long mc, long jc, long jp, int add)
{
    const long ars = c->a_rows ? up(kc, p->g) / p->g : 1, aks = c->a_rows ? 1 : BD_MR;
    const int cols = (int)lmin(BD_NR, lmin(p->nc, c->N - jc) - jp * BD_NR);
    const long ipanels = (mc + BD_MR - 1) / BD_MR;
    const int step = p->amx ? 2 : 1; /* AMX: two panels are one tile of 2 * BD_MR rows */
    for (long ip = 0; ip < ipanels; ip += step)
        gemm_tile(c, p, kc, Ap + (size_t)ip * p->a_panel, ars, aks, Bp + (size_t)jp * p->b_panel, ic + ip * BD_MR,
                  jc + jp * BD_NR, (int)lmin(step * BD_MR, mc - ip * BD_MR), cols, add);
}

/* The A panels of rows ic .. ic + mc - 1 (split among the threads when `split`). */
static void pack_a_block(const bd_gemm_call *c, const bd_gemm_plan *p, long ic, long mc, long pc, int kc,
                         unsigned char *Ap, int split, int bd_nt)
{
    const long ipanels = (mc + BD_MR - 1) / BD_MR;
    (void)bd_nt;
    (void)split;
    BD_OMP_FOR_IF(split && ipanels > 1)
    for (long ip = 0; ip < ipanels; ++ip)
        pack_a_panel(c, p, ic + ip * BD_MR, (int)lmin(BD_MR, mc - ip * BD_MR), pc, kc, Ap + (size_t)ip * p->a_panel);
}

void bd_gemm_run(const bd_gemm_call *c, const bd_gemm_plan *p, int nt, unsigned char *scratch)
{
    unsigned char *Bp = scratch, *a_area = scratch + p->b_bytes;
    int bd_nt = nt < 1 ? 1 : nt;
    if (c->M <= 0 || c->N <= 0) return;
    if (c->K <= 0) {
        gemm_zero(c);
        return;
    }
    const long mblocks = (c->M + p->mc - 1) / p->mc;
    const int by_rows = bd_nt == 1 || mblocks >= 2L * bd_nt;
    /* A single row block (the weight gradients: M is the layer's channels) is packed once per
     * k-block for all the column blocks, not once per column block. */
    const int one_block = mblocks == 1;
    for (long pc = 0; pc < c->K; pc += p->kc) {
        const int kc = (int)lmin(p->kc, c->K - pc);
        const int add = pc > 0;
        if (one_block) pack_a_block(c, p, 0, c->M, pc, kc, a_area, 1, bd_nt);
        for (long jc = 0; jc < c->N; jc += p->nc) {
            const long nc = lmin(p->nc, c->N - jc);
            const long npanels = (nc + BD_NR - 1) / BD_NR;
            BD_OMP_FOR_IF(npanels > 1)
            for (long jp = 0; jp < npanels; ++jp)
                pack_b_panel(c, p, pc, kc, jc + jp * BD_NR, (int)lmin(BD_NR, nc - jp * BD_NR),
                             Bp + (size_t)jp * p->b_panel);
            if (by_rows) {
                BD_OMP_FOR
                for (long ib = 0; ib < mblocks; ++ib) {
                    unsigned char *Ap = a_area + (size_t)bd_thread_id() * p->a_bytes;
                    const long ic = ib * p->mc, mc = lmin(p->mc, c->M - ic);
                    if (!one_block) pack_a_block(c, p, ic, mc, pc, kc, Ap, 0, bd_nt);
                    for (long jp = 0; jp < npanels; ++jp) block_tiles(c, p, kc, Ap, Bp, ic, mc, jc, jp, add);
                }
            } else {
                for (long ib = 0; ib < mblocks; ++ib) {
                    const long ic = ib * p->mc, mc = lmin(p->mc, c->M - ic);
                    if (!one_block) pack_a_block(c, p, ic, mc, pc, kc, a_area, 1, bd_nt);
                    BD_OMP_FOR
                    for (long jp = 0; jp < npanels; ++jp) block_tiles(c, p, kc, a_area, Bp, ic, mc, jc, jp, add);
                }
            }
        }
    }
}
