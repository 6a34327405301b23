/* Peak popcount throughput of this core for one ISA (the roofline of bench/bench_layers.py).
 *
 * Built with the flags of the kernels it bounds (bench/infer_common.py passes boldc's
 * ISA_FLAGS), it measures the ISA those flags select, as runtime/bd_isa.h does, and prints
 * "isa NAME" and rates in 64-bit words per second, one per line:
 *  - "popcount": the most words this core can count per second, register- or L1-resident
 *    (every word of an XNOR-popcount kernel needs its bits counted, so no kernel can beat
 *    it; the XOR and the accumulation come on top):
 *      avx512-vpopcntdq  VPOPCNTQ, 8 independent chains in registers;
 *      avx2              the faster of POPCNT (scalar, 8 chains in registers) and the AVX2
 *                        nibble-table count (vpshufb) with Harley-Seal carry-save adders
 *                        over a 4 KB buffer in L1 (both printed too);
 *      neon              CNT + UADALP (vcntq_u8, vpadalq_u8), 8 chains in registers;
 *      portable          the compiler's popcount, 8 chains in registers;
 *  - "xor_popcount_add": acc += popcount(a ^ b) streaming two arrays from L1 (the naive
 *    inner loop, for reference).
 * Build: cc -O2 [-march=native | -mavx2 -mfma -mpopcnt | ...] popcount_peak.c; run:
 * ./a.out [REPS] (default 20000000; under qemu-user, where the rates are the emulator's and
 * not the CPU's, give fewer).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
#define ISA "avx512-vpopcntdq"
#include <immintrin.h>
#elif defined(__AVX2__) && defined(__FMA__) && defined(__POPCNT__)
#define ISA "avx2"
#include <immintrin.h>
#elif defined(__aarch64__) && defined(__ARM_NEON)
#define ISA "neon"
#include <arm_neon.h>
#else
#define ISA "portable"
#endif

#define WORDS 512 /* 4 KB per array: L1-resident */
#define TRIALS 5

static uint64_t a[WORDS], b[WORDS];
static volatile uint64_t sink;

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Best of TRIALS timings of fn(reps), as words per second (fn counts `words` per rep). */
static double rate(uint64_t (*fn)(long), long reps, double words)
{
    double best = 1e30;
    for (int trial = 0; trial < TRIALS; ++trial) {
        const double t = now();
        sink += fn(reps);
        const double dt = now() - t;
        if (dt < best) best = dt;
    }
    return (double)reps * words / best;
}

/* acc += popcount(a[k] ^ b[k]) over the arrays, scalar (the compiler's popcount). */
static uint64_t stream_scalar(long reps)
{
    uint64_t acc = 0;
    for (long r = 0; r < reps; ++r) {
        for (int k = 0; k < WORDS; ++k) acc += (uint64_t)__builtin_popcountll(a[k] ^ b[k]);
        __asm__ volatile("" ::: "memory");
    }
    return acc;
}

/* 8 independent chains of the compiler's popcount on registers. */
static uint64_t chains_scalar(long reps)
{
    uint64_t x0 = 1, x1 = 2, x2 = 3, x3 = 4, x4 = 5, x5 = 6, x6 = 7, x7 = 8;
    for (long r = 0; r < reps; ++r) {
        x0 = (uint64_t)__builtin_popcountll(x0);
        x1 = (uint64_t)__builtin_popcountll(x1);
        x2 = (uint64_t)__builtin_popcountll(x2);
        x3 = (uint64_t)__builtin_popcountll(x3);
        x4 = (uint64_t)__builtin_popcountll(x4);
        x5 = (uint64_t)__builtin_popcountll(x5);
        x6 = (uint64_t)__builtin_popcountll(x6);
        x7 = (uint64_t)__builtin_popcountll(x7);
        __asm__ volatile("" : "+r"(x0), "+r"(x1), "+r"(x2), "+r"(x3), "+r"(x4), "+r"(x5), "+r"(x6), "+r"(x7));
    }
    return x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7;
}

#if defined(__AVX512F__) && defined(__AVX512VPOPCNTDQ__)
static uint64_t chains_simd(long reps)
{
    __m512i x0 = _mm512_set1_epi64(1), x1 = _mm512_set1_epi64(2), x2 = _mm512_set1_epi64(3),
            x3 = _mm512_set1_epi64(4), x4 = _mm512_set1_epi64(5), x5 = _mm512_set1_epi64(6),
            x6 = _mm512_set1_epi64(7), x7 = _mm512_set1_epi64(8);
    for (long r = 0; r < reps; ++r) {
        x0 = _mm512_popcnt_epi64(x0);
        x1 = _mm512_popcnt_epi64(x1);
        x2 = _mm512_popcnt_epi64(x2);
        x3 = _mm512_popcnt_epi64(x3);
        x4 = _mm512_popcnt_epi64(x4);
        x5 = _mm512_popcnt_epi64(x5);
        x6 = _mm512_popcnt_epi64(x6);
        x7 = _mm512_popcnt_epi64(x7);
        __asm__ volatile("" : "+v"(x0), "+v"(x1), "+v"(x2), "+v"(x3), "+v"(x4), "+v"(x5), "+v"(x6), "+v"(x7));
    }
    const __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(x0, x1), _mm512_add_epi64(x2, x3)),
                                       _mm512_add_epi64(_mm512_add_epi64(x4, x5), _mm512_add_epi64(x6, x7)));
    return (uint64_t)_mm512_reduce_add_epi64(s);
}
#define SIMD_WORDS 64.0 /* words per rep of chains_simd */
#endif

#if defined(__AVX2__) && defined(__FMA__) && defined(__POPCNT__) && !defined(__AVX512VPOPCNTDQ__)
static __m256i byte_counts(__m256i v)
{
    const __m256i table = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1,
                                           2, 2, 3, 2, 3, 3, 4);
    const __m256i low = _mm256_set1_epi8(0x0f);
    return _mm256_add_epi8(_mm256_shuffle_epi8(table, _mm256_and_si256(v, low)),
                           _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(v, 4), low)));
}

#define CSA(h, l, x, y, z)                                                                      \
    do {                                                                                        \
        const __m256i u_ = _mm256_xor_si256(x, y);                                              \
        h = _mm256_or_si256(_mm256_and_si256(x, y), _mm256_and_si256(u_, z));                  \
        l = _mm256_xor_si256(u_, z);                                                            \
    } while (0)
#define LD(i) _mm256_loadu_si256((const __m256i *)(a + 4 * (i)))

/* Harley-Seal over the array (16 vectors per step: 15 carry-save adders, one table count). */
static uint64_t chains_simd(long reps)
{
    __m256i total = _mm256_setzero_si256();
    for (long r = 0; r < reps; ++r) {
        __m256i ones = _mm256_setzero_si256(), twos = ones, fours = ones, eights = ones, bytes = ones;
        __m256i twosA, twosB, foursA, foursB, eightsA, eightsB, sixteens;
        for (int i = 0; i < WORDS / 4; i += 16) {
            CSA(twosA, ones, ones, LD(i), LD(i + 1));
            CSA(twosB, ones, ones, LD(i + 2), LD(i + 3));
            CSA(foursA, twos, twos, twosA, twosB);
            CSA(twosA, ones, ones, LD(i + 4), LD(i + 5));
            CSA(twosB, ones, ones, LD(i + 6), LD(i + 7));
            CSA(foursB, twos, twos, twosA, twosB);
            CSA(eightsA, fours, fours, foursA, foursB);
            CSA(twosA, ones, ones, LD(i + 8), LD(i + 9));
            CSA(twosB, ones, ones, LD(i + 10), LD(i + 11));
            CSA(foursA, twos, twos, twosA, twosB);
            CSA(twosA, ones, ones, LD(i + 12), LD(i + 13));
            CSA(twosB, ones, ones, LD(i + 14), LD(i + 15));
            CSA(foursB, twos, twos, twosA, twosB);
            CSA(eightsB, fours, fours, foursA, foursB);
            CSA(sixteens, eights, eights, eightsA, eightsB);
            bytes = _mm256_add_epi8(bytes, byte_counts(sixteens));
        }
        const __m256i z = _mm256_setzero_si256();
        total = _mm256_add_epi64(total, _mm256_slli_epi64(_mm256_sad_epu8(bytes, z), 4));
        total = _mm256_add_epi64(total, _mm256_slli_epi64(_mm256_sad_epu8(byte_counts(eights), z), 3));
        total = _mm256_add_epi64(total, _mm256_slli_epi64(_mm256_sad_epu8(byte_counts(fours), z), 2));
        total = _mm256_add_epi64(total, _mm256_slli_epi64(_mm256_sad_epu8(byte_counts(twos), z), 1));
        total = _mm256_add_epi64(total, _mm256_sad_epu8(byte_counts(ones), z));
        __asm__ volatile("" ::: "memory");
    }
    return (uint64_t)(_mm256_extract_epi64(total, 0) + _mm256_extract_epi64(total, 1) +
                      _mm256_extract_epi64(total, 2) + _mm256_extract_epi64(total, 3));
}
#define SIMD_WORDS ((double)WORDS)
#endif

#if defined(__aarch64__) && defined(__ARM_NEON)
static uint64_t chains_simd(long reps)
{
    uint8x16_t x[8];
    uint16x8_t acc[8];
    for (int j = 0; j < 8; ++j) {
        x[j] = vdupq_n_u8((uint8_t)(j * 37 + 1));
        acc[j] = vdupq_n_u16(0);
    }
    for (long r = 0; r < reps; ++r) {
        for (int j = 0; j < 8; ++j) acc[j] = vpadalq_u8(acc[j], vcntq_u8(x[j]));
        __asm__ volatile("" : "+w"(x[0]), "+w"(x[1]), "+w"(x[2]), "+w"(x[3]), "+w"(x[4]), "+w"(x[5]), "+w"(x[6]),
                         "+w"(x[7]));
    }
    uint64_t s = 0;
    for (int j = 0; j < 8; ++j) s += vaddlvq_u16(acc[j]);
    return s;
}
#define SIMD_WORDS 16.0
#endif

int main(int argc, char **argv)
{
    for (int i = 0; i < WORDS; ++i) {
        a[i] = (uint64_t)i * 0x9E3779B97F4A7C15ull;
        b[i] = ~a[i] * 3u;
    }
    const long reps = argc > 1 ? atol(argv[1]) : 20000000; /* fewer under an emulator */
    if (reps < WORDS) {
        fprintf(stderr, "usage: popcount_peak [REPS >= %d]\n", WORDS);
        return 2;
    }
    const double scalar = rate(chains_scalar, reps, 8.0);
    double peak = scalar;
    printf("isa %s\n", ISA);
#if defined(SIMD_WORDS)
    const double simd = rate(chains_simd, (long)(reps * 8.0 / SIMD_WORDS), SIMD_WORDS);
    printf("popcount_scalar %.6g\npopcount_simd %.6g\n", scalar, simd);
    if (simd > peak) peak = simd;
#endif
    printf("popcount %.6g\nxor_popcount_add %.6g\n", peak, rate(stream_scalar, reps / WORDS * 8, WORDS));
    return 0;
}
