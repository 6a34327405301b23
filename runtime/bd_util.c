/* Weights blob checks, build information, a clock for profiles. */
#if !defined(_POSIX_C_SOURCE) && (defined(__unix__) || defined(__APPLE__))
#define _POSIX_C_SOURCE 199309L /* clock_gettime; must precede the system headers */
#endif
#include "boldc_rt.h"

#include <time.h>

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32), bit by bit: no table, no state. */
uint32_t bd_crc32(const void *data, size_t len)
{
    const unsigned char *p = (const unsigned char *)data;
    uint32_t crc = 0xffffffffu;
    for (size_t i = 0; i < len; ++i) {
        crc ^= p[i];
        for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xffffffffu;
}

static uint64_t read_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

const unsigned char *bd_weights_image(const void *blob, size_t len, size_t want_bytes, uint64_t model_hash,
                                      const char **why)
{
    const unsigned char *p = (const unsigned char *)blob;
    const char *reason = NULL;
    if (len < 32 || memcmp(p, "BOLDCW01", 8) != 0) reason = "not a boldc weights file";
    else if (read_le(p + 24, 8) != model_hash) reason = "weights of another model";
    else if (read_le(p + 8, 8) != (uint64_t)want_bytes || len != 32 + want_bytes) reason = "wrong size (truncated?)";
    else if ((uint32_t)read_le(p + 16, 4) != bd_crc32(p + 32, want_bytes)) reason = "checksum mismatch (corrupt)";
    if (why) *why = reason;
    return reason ? NULL : p + 32;
}

const char *bd_build_info(void)
{
#ifdef _OPENMP
    return "simd=" BD_SIMD_NAME " popcount=" BD_POPCOUNT_NAME " openmp=yes";
#else
    return "simd=" BD_SIMD_NAME " popcount=" BD_POPCOUNT_NAME " openmp=no";
#endif
}

double bd_seconds(void)
{
#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 199309L && defined(CLOCK_MONOTONIC)
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
#else
    return (double)clock() / CLOCKS_PER_SEC;
#endif
}
