/* The integer GEMMs on the AMX tile unit (bd_isa.h, "integer GEMMs on the AMX tile unit").
 *
 * Every build has both functions: bd_isa_amx_ready() is 0 outside BD_ISA_AMX builds, and
 * bd_isa_igemm_amx() then computes in plain C (the form its tails use; the driver does not
 * call it when the tiles are not ready). In a BD_ISA_AMX build one tdpbusd/tdpbssd takes
 * BD_MR rows x 16 columns x 64 values of k: 8192 multiply-adds, against 512 for a vpdpbusd.
 *
 * The tile configuration is checked at every call: it is per thread, and another library of
 * the process (oneDNN in PyTorch uses AMX) may load its own between two of ours.
 */
#if defined(__linux__)
#define _DEFAULT_SOURCE 1 /* syscall() under -std=c99 */
#endif
#include "bd_isa.h"

#define BD_AMX_ROWS (2 * BD_MR) /* the most rows of one call: a whole tile */

/* T(r, j) += the products of k = k0 .. kp - 1, in plain C. */
static void tail_sums(int i8, int kp, int k0, long lda, const unsigned char *A, const int8_t *B, int rows,
                      int32_t T[BD_AMX_ROWS][BD_NR])
{
    for (int r = 0; r < rows; ++r) {
        const unsigned char *a = A + r * lda;
        for (int k = k0; k < kp; ++k) {
            const int32_t v = i8 ? (int32_t)a[k] : 256 * (int32_t)(int8_t)a[k] + (int32_t)a[lda / 2 + k];
            const int8_t *e = B + (long)(k / 4) * 4 * BD_NR + k % 4;
            for (int j = 0; j < BD_NR; ++j) T[r][j] += v * e[4 * j];
        }
    }
}

#if defined(BD_ISA_AMX)
#include <immintrin.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#define BD_ARCH_REQ_XCOMP_PERM 0x1023 /* asm/prctl.h */
#define BD_XFEATURE_XTILEDATA 18

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} bd_tilecfg;

static int amx_state; /* 0: not asked yet, 1: ready, -1: not available */

int bd_isa_amx_ready(void)
{
    if (amx_state == 0) {
        const char *off = getenv("BOLDC_NO_AMX");
        const int granted = syscall(SYS_arch_prctl, BD_ARCH_REQ_XCOMP_PERM, BD_XFEATURE_XTILEDATA) == 0;
        amx_state = granted && !(off && *off && *off != '0') ? 1 : -1;
    }
    return amx_state == 1;
}

/* Tiles 0, 1: A (i8; i16 hi, lo), m rows of 64 bytes; 2, 3: B, columns 0-15 and 16-31, 16 groups of
 * 4 k values; 4, 5: T of columns 0-15, 16-31 (i16: of hi), m rows; 6, 7: i16: of lo. Loaded only
 * when the thread's configuration is another (reading it back is cheap; loading one is not:
 * measured, loading at every call took 60% of an int16 tile's time). */
static void load_config(int m)
{
    bd_tilecfg cfg, cur;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; ++t) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = (uint8_t)(t == 2 || t == 3 ? 16 : m);
    }
    _tile_storeconfig(&cur);
    if (memcmp(&cur, &cfg, sizeof cfg) != 0) _tile_loadconfig(&cfg);
}

void bd_isa_igemm_amx(int i8, int kp, long lda, const void *Ap, const void *Bp, const int32_t *bsum, int32_t *C,
                      long ldc, int rows, int cols, int add)
{
    const unsigned char *A = (const unsigned char *)Ap;
    const int8_t *B = (const int8_t *)Bp;
    const int whole = kp / 64 * 64, m = rows > BD_MR ? BD_AMX_ROWS : BD_MR;
    int32_t T[BD_AMX_ROWS][BD_NR], lo[BD_AMX_ROWS][BD_NR];
    load_config(m);
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    for (int k = 0; k < whole; k += 64) {
        const int8_t *b = B + (long)k * BD_NR; /* 16 groups of BD_NR columns x 4 bytes */
        _tile_loadd(2, b, 4 * BD_NR);
        _tile_loadd(3, b + 64, 4 * BD_NR);
        _tile_loadd(0, A + k, lda);
        if (i8) {
            _tile_dpbusd(4, 0, 2);
            _tile_dpbusd(5, 0, 3);
        } else {
            _tile_loadd(1, A + lda / 2 + k, lda);
            _tile_dpbssd(4, 0, 2);
            _tile_dpbssd(5, 0, 3);
            _tile_dpbusd(6, 1, 2);
            _tile_dpbusd(7, 1, 3);
        }
    }
    _tile_stored(4, &T[0][0], 4 * BD_NR);
    _tile_stored(5, &T[0][16], 4 * BD_NR);
    if (!i8) {
        _tile_stored(6, &lo[0][0], 4 * BD_NR);
        _tile_stored(7, &lo[0][16], 4 * BD_NR);
    }
    int planes = !i8; /* T still holds hi, and lo its own sums */
    if (whole < kp) {  /* the plain-C tail adds whole values to T: combine first */
        if (planes)
            for (int r = 0; r < m; ++r)
                for (int j = 0; j < BD_NR; ++j) T[r][j] = 256 * T[r][j] + lo[r][j];
        planes = 0;
        tail_sums(i8, kp, whole, lda, A, B, rows, T);
    }
    /* T (planes: 256 * hi + lo; i8: minus 128 * bsum) into the corner of C, 16 columns a vector */
    const __m512i s0 = i8 ? _mm512_slli_epi32(_mm512_loadu_si512((const void *)bsum), 7) : _mm512_setzero_si512();
    const __m512i s1 = i8 ? _mm512_slli_epi32(_mm512_loadu_si512((const void *)(bsum + 16)), 7)
                          : _mm512_setzero_si512();
    const __mmask16 m0 = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1u);
    const __mmask16 m1 = cols >= 32 ? (__mmask16)0xffff : (__mmask16)(cols > 16 ? (1u << (cols - 16)) - 1u : 0u);
    for (int r = 0; r < rows; ++r) {
        __m512i v0 = _mm512_loadu_si512((const void *)&T[r][0]), v1 = _mm512_loadu_si512((const void *)&T[r][16]);
        if (i8) {
            v0 = _mm512_sub_epi32(v0, s0);
            v1 = _mm512_sub_epi32(v1, s1);
        } else if (planes) {
            v0 = _mm512_add_epi32(_mm512_slli_epi32(v0, 8), _mm512_loadu_si512((const void *)&lo[r][0]));
            v1 = _mm512_add_epi32(_mm512_slli_epi32(v1, 8), _mm512_loadu_si512((const void *)&lo[r][16]));
        }
        int32_t *c = C + r * ldc;
        if (add) {
            v0 = _mm512_add_epi32(v0, _mm512_maskz_loadu_epi32(m0, c));
            v1 = _mm512_add_epi32(v1, _mm512_maskz_loadu_epi32(m1, c + 16));
        }
        _mm512_mask_storeu_epi32(c, m0, v0);
        _mm512_mask_storeu_epi32(c + 16, m1, v1);
    }
}

#else

/* The corner of T into C (minus 128 * bsum for i8). */
static void put_tile(int i8, int32_t T[BD_AMX_ROWS][BD_NR], const int32_t *bsum, int32_t *C, long ldc, int rows,
                     int cols, int add)
{
    for (int r = 0; r < rows; ++r) {
        int32_t *c = C + r * ldc;
        for (int j = 0; j < cols; ++j) {
            const int32_t v = T[r][j] - (i8 ? 128 * bsum[j] : 0);
            c[j] = add ? c[j] + v : v;
        }
    }
}

int bd_isa_amx_ready(void)
{
    return 0;
}

void bd_isa_igemm_amx(int i8, int kp, long lda, const void *Ap, const void *Bp, const int32_t *bsum, int32_t *C,
                      long ldc, int rows, int cols, int add)
{
    int32_t T[BD_AMX_ROWS][BD_NR];
    memset(T, 0, sizeof T);
    tail_sums(i8, kp, 0, lda, (const unsigned char *)Ap, (const int8_t *)Bp, rows, T);
    put_tile(i8, T, bsum, C, ldc, rows, cols, add);
}

#endif
