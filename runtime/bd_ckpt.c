/* Checkpoints: every param of a model (weights and optimizer state) in one file, the
 * byte format of docs/training.md ("Checkpoint format"), the same as
 * boldc/checkpoint.py writes and reads: a 40-byte header (magic, version, counts, the
 * table's hash), the param table, the meta, each param's data at its 8-aligned offset
 * (row-major, b1 packed 8 per byte), and the CRC-32 of every preceding byte.
 *
 * The params image stores tensors in their storage layout (channels-last for rank 4,
 * b1 in 64-bit words along the last stored axis; boldc/backend/layout.py); this file
 * converts element by element. Nothing is allocated: the streams go through small
 * stack buffers.
 *
 * Save writes "<path>.tmp", flushes it (and fsyncs it on POSIX systems), then renames
 * it over <path>: a reader sees the old file or the new one. Load checks the magic,
 * version, CRC-32, table hash, that the table is exactly this model's and that the size
 * is exactly the one the header and the table give (bytes after the data are refused, as
 * by boldc/checkpoint.py) before it writes a single byte of the image; it then reads the
 * data through the same open file (a writer that replaces the file by renaming cannot
 * change what it reads).
 */
#if !defined(_POSIX_C_SOURCE) && (defined(__unix__) || defined(__APPLE__))
#define _POSIX_C_SOURCE 200112L /* fileno, fsync; must precede the system headers */
#endif
#include "boldc_rt.h"

#include <stdio.h>

#if defined(_POSIX_C_SOURCE) && _POSIX_C_SOURCE >= 200112L
#include <unistd.h>
#define BD_HAVE_FSYNC 1
#endif

#define CK_HEADER 40
#define CK_VERSION 1
#define CK_CHUNK 4096

const char *bd_checkpoint_error(int code)
{
    switch (code) {
    case BD_CK_OK: return "ok";
    case BD_CK_OPEN: return "cannot open the file";
    case BD_CK_IO: return "read or write error";
    case BD_CK_SHORT: return "its size is not the one its header and table give (truncated, or bytes after its data)";
    case BD_CK_MAGIC: return "not a boldc checkpoint (bad magic)";
    case BD_CK_VERSION: return "checkpoint format version is not 1 (written by another boldc?)";
    case BD_CK_CRC: return "checksum mismatch: the file is truncated or corrupt";
    case BD_CK_TABLE: return "param table hash mismatch: the file is corrupt";
    case BD_CK_MODEL: return "written for another model (its param table differs from this model's)";
    case BD_CK_META: return "meta section larger than the buffer given";
    case BD_CK_RENAME: return "cannot rename the temporary file over the checkpoint";
    case BD_CK_ARG: return "bad argument (NULL pointer or path too long)";
    default: return "unknown checkpoint error";
    }
}

/* ---- little-endian fields, hashes -------------------------------------------------- */

static void put_le(unsigned char *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; ++i) p[i] = (unsigned char)(v >> (8 * i));
}

static uint64_t get_le(const unsigned char *p, int bytes)
{
    uint64_t v = 0;
    for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

#define FNV_BASIS UINT64_C(0xcbf29ce484222325)
#define FNV_PRIME UINT64_C(0x100000001b3)

static uint64_t fnv_update(uint64_t h, const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; ++i) h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* ---- the param table ---------------------------------------------------------------------- */

static uint64_t numel_of(const bd_param_info *p)
{
    uint64_t n = 1;
    for (int a = 0; a < p->rank; ++a) n *= p->dims[a];
    return n;
}

static int elem_bytes(int dtype)
{
    return dtype == BD_F32 || dtype == BD_I32 ? 4 : dtype == BD_I16 ? 2 : 1;
}

static uint64_t data_bytes_of(const bd_param_info *p)
{
    const uint64_t n = numel_of(p);
    return p->dtype == BD_B1 ? (n + 7) / 8 : n * (uint64_t)elem_bytes(p->dtype);
}

static uint64_t align8(uint64_t v) { return (v + 7) & ~(uint64_t)7; }

static uint64_t entry_bytes(const bd_param_info *p) { return 2 + strlen(p->name) + 2 + 4 * (uint64_t)p->rank + 16; }

static uint64_t table_bytes(const bd_param_info *params, int count)
{
    uint64_t t = 0;
    for (int i = 0; i < count; ++i) t += entry_bytes(&params[i]);
    return t;
}

/* One table entry (name excluded) with its data offset: the fixed part after the name. */
static size_t entry_tail(const bd_param_info *p, uint64_t offset, unsigned char *out)
{
    size_t k = 0;
    out[k++] = (unsigned char)p->dtype;
    out[k++] = (unsigned char)p->rank;
    for (int a = 0; a < p->rank; ++a, k += 4) put_le(out + k, p->dims[a], 4);
    put_le(out + k, offset, 8);
    put_le(out + k + 8, data_bytes_of(p), 8);
    return k + 16;
}

/* Feeds the table bytes (offsets from data_start) to `sink`; returns 0 or its error. */
typedef int (*table_sink)(void *state, const unsigned char *bytes, size_t len);

static int walk_table(const bd_param_info *params, int count, uint64_t data_start, table_sink sink, void *state)
{
    uint64_t off = data_start;
    unsigned char buf[2 + 4 * 8 + 16];
    for (int i = 0; i < count; ++i) {
        const bd_param_info *p = &params[i];
        const size_t n = strlen(p->name);
        int rc;
        put_le(buf, n, 2);
        if ((rc = sink(state, buf, 2)) != 0) return rc;
        if ((rc = sink(state, (const unsigned char *)p->name, n)) != 0) return rc;
        if ((rc = sink(state, buf, entry_tail(p, off, buf))) != 0) return rc;
        off = align8(off + data_bytes_of(p));
    }
    return 0;
}

static int hash_sink(void *state, const unsigned char *bytes, size_t len)
{
    *(uint64_t *)state = fnv_update(*(uint64_t *)state, bytes, len);
    return 0;
}

static int check_params(const bd_param_info *params, int count)
{
    for (int i = 0; i < count; ++i)
        if (!params[i].name || strlen(params[i].name) > 65535 || params[i].rank < 0 || params[i].rank > 8)
            return BD_CK_ARG;
    return BD_CK_OK;
}

/* ---- storage <-> logical order ------------------------------------------------------------- */

/* Where logical element `idx` (one index per axis) lives in the storage layout:
 * channels-last for rank 4, b1 (rank >= 1) packed in words along the last stored axis. */
typedef struct {
    int rank, packed;
    int perm[8];
    uint64_t stride[8];  /* storage units (elements, or words for the packed axis' runs) per stored axis */
} storage_map;

static storage_map map_of(const bd_param_info *p)
{
    storage_map s;
    s.rank = p->rank;
    s.packed = p->dtype == BD_B1 && p->rank > 0;
    for (int a = 0; a < p->rank; ++a) s.perm[a] = a;
    if (p->rank == 4) {
        s.perm[1] = 2;
        s.perm[2] = 3;
        s.perm[3] = 1;
    }
    uint64_t acc = 1;
    for (int q = p->rank - 1; q >= 0; --q) {
        s.stride[q] = acc;
        const uint64_t d = p->dims[s.perm[q]];
        acc *= (s.packed && q == p->rank - 1) ? (d + 63) / 64 : d;
    }
    return s;
}

/* Storage position of idx: unit offset and, when packed, the bit within the word. */
static uint64_t storage_pos(const storage_map *s, const uint32_t *idx, int *bit)
{
    uint64_t off = 0;
    *bit = 0;
    for (int q = 0; q < s->rank; ++q) {
        const uint32_t i = idx[s->perm[q]];
        if (s->packed && q == s->rank - 1) {
            off += (i >> 6) * s->stride[q];
            *bit = (int)(i & 63);
        } else {
            off += i * s->stride[q];
        }
    }
    return off;
}

static void next_index(const bd_param_info *p, uint32_t *idx)
{
    for (int a = p->rank - 1; a >= 0; --a) {
        if (++idx[a] < p->dims[a]) return;
        idx[a] = 0;
    }
}

/* Logical element -> little-endian bytes. */
static void get_elem(const bd_param_info *p, const storage_map *s, const unsigned char *base, const uint32_t *idx,
                     unsigned char *out, int *bitval)
{
    int bit;
    const uint64_t off = storage_pos(s, idx, &bit);
    if (p->dtype == BD_B1) {
        *bitval = s->packed ? (int)((((const uint64_t *)base)[off] >> bit) & 1u) : (base[off] != 0);
        return;
    }
    const int eb = elem_bytes(p->dtype);
    uint32_t v = 0;
    if (eb == 4) memcpy(&v, base + off * 4, 4);
    else if (eb == 2) { uint16_t h; memcpy(&h, base + off * 2, 2); v = h; }
    else v = base[off];
    put_le(out, v, eb);
}

static void set_elem(const bd_param_info *p, const storage_map *s, unsigned char *base, const uint32_t *idx,
                     const unsigned char *in, int bitval)
{
    int bit;
    const uint64_t off = storage_pos(s, idx, &bit);
    if (p->dtype == BD_B1) {
        if (s->packed) {
            if (bitval) ((uint64_t *)base)[off] |= (uint64_t)1 << bit;
        } else {
            base[off] = (unsigned char)(bitval ? 1 : 0);
        }
        return;
    }
    const int eb = elem_bytes(p->dtype);
    const uint64_t v = get_le(in, eb);
    if (eb == 4) { const uint32_t w = (uint32_t)v; memcpy(base + off * 4, &w, 4); }
    else if (eb == 2) { const uint16_t h = (uint16_t)v; memcpy(base + off * 2, &h, 2); }
    else base[off] = (unsigned char)v;
}

static uint64_t storage_units(const storage_map *s, const bd_param_info *p)
{
    if (p->rank == 0) return 1;
    const uint64_t d = p->dims[s->perm[0]];
    return s->stride[0] * ((s->packed && p->rank == 1) ? (d + 63) / 64 : d);
}

/* ---- writing --------------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    uint32_t crc;
    uint64_t written;
} writer;

static int put(void *state, const unsigned char *bytes, size_t len)
{
    writer *w = (writer *)state;
    if (len && fwrite(bytes, 1, len, w->f) != len) return BD_CK_IO;
    w->crc = bd_crc32_update(w->crc, bytes, len);
    w->written += len;
    return 0;
}

static int put_zeros_to(writer *w, uint64_t end)
{
    static const unsigned char zeros[8] = {0};
    while (w->written < end) {
        const int rc = put(w, zeros, (size_t)(end - w->written < 8 ? end - w->written : 8));
        if (rc) return rc;
    }
    return 0;
}

static int put_param(writer *w, const bd_param_info *p, const unsigned char *image)
{
    const storage_map s = map_of(p);
    const unsigned char *base = image + p->offset;
    const uint64_t n = numel_of(p);
    unsigned char buf[CK_CHUNK];
    size_t used = 0;
    uint32_t idx[8] = {0};
    const int eb = elem_bytes(p->dtype);
    unsigned char byte = 0;
    for (uint64_t e = 0; e < n; ++e) {
        int bitval = 0;
        if (p->dtype == BD_B1) {
            get_elem(p, &s, base, idx, NULL, &bitval);
            byte |= (unsigned char)(bitval << (e % 8));
            if (e % 8 == 7 || e == n - 1) {
                buf[used++] = byte;
                byte = 0;
            }
        } else {
            get_elem(p, &s, base, idx, buf + used, &bitval);
            used += (size_t)eb;
        }
        if (used + 8 > sizeof buf) {
            const int rc = put(w, buf, used);
            if (rc) return rc;
            used = 0;
        }
        next_index(p, idx);
    }
    return put(w, buf, used);
}

static int write_all(writer *w, const bd_param_info *params, int count, const unsigned char *image,
                     const void *meta, size_t meta_len)
{
    const uint64_t tlen = table_bytes(params, count);
    const uint64_t data_start = align8(CK_HEADER + tlen + meta_len);
    uint64_t hash = FNV_BASIS;
    walk_table(params, count, data_start, hash_sink, &hash);
    unsigned char h[CK_HEADER];
    memcpy(h, "BOLDCKPT", 8);
    put_le(h + 8, CK_VERSION, 4);
    put_le(h + 12, (uint64_t)count, 4);
    put_le(h + 16, tlen, 8);
    put_le(h + 24, hash, 8);
    put_le(h + 32, meta_len, 4);
    put_le(h + 36, 0, 4);
    int rc;
    if ((rc = put(w, h, sizeof h)) != 0) return rc;
    if ((rc = walk_table(params, count, data_start, put, w)) != 0) return rc;
    if ((rc = put(w, (const unsigned char *)meta, meta_len)) != 0) return rc;
    for (int i = 0; i < count; ++i) {
        if ((rc = put_zeros_to(w, align8(w->written))) != 0) return rc;
        if ((rc = put_param(w, &params[i], image)) != 0) return rc;
    }
    if ((rc = put_zeros_to(w, align8(w->written))) != 0) return rc;
    unsigned char c[4];
    put_le(c, w->crc, 4);
    if (fwrite(c, 1, 4, w->f) != 4) return BD_CK_IO;
    return 0;
}

int bd_checkpoint_save(const char *path, const bd_param_info *params, int count, const unsigned char *image,
                       const void *meta, size_t meta_len)
{
    char tmp[4096];
    if (!path || !params || !image || (meta_len && !meta) || meta_len > 0xffffffffu) return BD_CK_ARG;
    if (check_params(params, count) != BD_CK_OK) return BD_CK_ARG;
    const size_t plen = strlen(path);
    if (plen + 5 > sizeof tmp) return BD_CK_ARG;
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    writer w = {fopen(tmp, "wb"), 0u, 0};
    if (!w.f) return BD_CK_OPEN;
    int rc = write_all(&w, params, count, image, meta, meta_len);
    if (fflush(w.f) != 0 && !rc) rc = BD_CK_IO;
#ifdef BD_HAVE_FSYNC
    if (!rc && fsync(fileno(w.f)) != 0) rc = BD_CK_IO;
#endif
    if (fclose(w.f) != 0 && !rc) rc = BD_CK_IO;
    if (!rc && rename(tmp, path) != 0) rc = BD_CK_RENAME;
    if (rc) remove(tmp);
    return rc;
}

/* ---- reading --------------------------------------------------------------------------------- */

typedef struct {
    FILE *f;
    int mismatch;
} comparer;

static int compare_sink(void *state, const unsigned char *bytes, size_t len)
{
    comparer *c = (comparer *)state;
    unsigned char buf[256];
    while (len) {
        const size_t k = len < sizeof buf ? len : sizeof buf;
        if (fread(buf, 1, k, c->f) != k) return BD_CK_SHORT;
        if (memcmp(buf, bytes, k) != 0) c->mismatch = 1;
        bytes += k;
        len -= k;
    }
    return 0;
}

static int get_param(FILE *f, const bd_param_info *p, unsigned char *image)
{
    const storage_map s = map_of(p);
    unsigned char *base = image + p->offset;
    const uint64_t n = numel_of(p);
    if (p->dtype == BD_B1 && s.packed) memset(base, 0, (size_t)(storage_units(&s, p) * 8));
    unsigned char buf[CK_CHUNK];
    size_t have = 0, at = 0;
    uint64_t left = data_bytes_of(p);
    uint32_t idx[8] = {0};
    const int eb = elem_bytes(p->dtype);
    for (uint64_t e = 0; e < n; ++e) {
        const size_t need = p->dtype == BD_B1 ? (e % 8 == 0 ? 1u : 0u) : (size_t)eb;
        if (at + need > have) {
            memmove(buf, buf + at, have - at);
            have -= at;
            at = 0;
            size_t want = sizeof buf - have;
            if (want > left) want = (size_t)left;
            if (fread(buf + have, 1, want, f) != want) return BD_CK_IO;
            have += want;
            left -= want;
        }
        if (p->dtype == BD_B1) {
            const int bitval = (buf[at] >> (e % 8)) & 1;
            set_elem(p, &s, base, idx, NULL, bitval);
            if (e % 8 == 7 || e == n - 1) at += 1;
        } else {
            set_elem(p, &s, base, idx, buf + at, 0);
            at += (size_t)eb;
        }
        next_index(p, idx);
    }
    return 0;
}

static int verify(FILE *f, const bd_param_info *params, int count, uint64_t *meta_len_out, uint64_t *data_start)
{
    unsigned char h[CK_HEADER], buf[CK_CHUNK];
    if (fseek(f, 0, SEEK_END) != 0) return BD_CK_IO;
    const long size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) return BD_CK_IO;
    const size_t head = size < CK_HEADER ? (size_t)size : CK_HEADER;
    if (fread(h, 1, head, f) != head) return BD_CK_IO;
    if (head < 8 || memcmp(h, "BOLDCKPT", 8) != 0) return BD_CK_MAGIC;
    if (size < CK_HEADER + 4) return BD_CK_SHORT;
    if (get_le(h + 8, 4) != CK_VERSION) return BD_CK_VERSION;
    /* CRC-32 of everything before the trailer */
    uint32_t crc = bd_crc32_update(0u, h, CK_HEADER);
    long pos = CK_HEADER;
    while (pos < size - 4) {
        const size_t k = (size_t)(size - 4 - pos < (long)sizeof buf ? size - 4 - pos : (long)sizeof buf);
        if (fread(buf, 1, k, f) != k) return BD_CK_IO;
        crc = bd_crc32_update(crc, buf, k);
        pos += (long)k;
    }
    if (fread(buf, 1, 4, f) != 4) return BD_CK_IO;
    if ((uint32_t)get_le(buf, 4) != crc) return BD_CK_CRC;
    /* the stored table: intact (its hash), then exactly this model's */
    const uint64_t tlen = get_le(h + 16, 8), meta_len = get_le(h + 32, 4);
    if (tlen > (uint64_t)size || (uint64_t)CK_HEADER + tlen + meta_len > (uint64_t)size - 4) return BD_CK_SHORT;
    if (fseek(f, CK_HEADER, SEEK_SET) != 0) return BD_CK_IO;
    uint64_t stored = FNV_BASIS;
    for (uint64_t left = tlen; left;) {
        const size_t k = left < sizeof buf ? (size_t)left : sizeof buf;
        if (fread(buf, 1, k, f) != k) return BD_CK_IO;
        stored = fnv_update(stored, buf, k);
        left -= k;
    }
    if (get_le(h + 24, 8) != stored) return BD_CK_TABLE;
    if (get_le(h + 12, 4) != (uint64_t)count || tlen != table_bytes(params, count)) return BD_CK_MODEL;
    const uint64_t start = align8(CK_HEADER + tlen + meta_len);
    comparer c = {f, 0};
    if (fseek(f, CK_HEADER, SEEK_SET) != 0) return BD_CK_IO;
    const int rc = walk_table(params, count, start, compare_sink, &c);
    if (rc) return rc;
    if (c.mismatch) return BD_CK_MODEL;
    uint64_t end = start;
    for (int i = 0; i < count; ++i) end = align8(end + data_bytes_of(&params[i]));
    if (end != (uint64_t)size - 4) return BD_CK_SHORT; /* the format fixes the size: no byte after the data */
    *meta_len_out = meta_len;
    *data_start = start;
    return 0;
}

int bd_checkpoint_load(const char *path, const bd_param_info *params, int count, unsigned char *image, void *meta,
                       size_t meta_cap, size_t *meta_len)
{
    if (!path || !params || !image) return BD_CK_ARG;
    if (check_params(params, count) != BD_CK_OK) return BD_CK_ARG;
    FILE *f = fopen(path, "rb");
    if (!f) return BD_CK_OPEN;
    uint64_t mlen = 0, start = 0;
    int rc = verify(f, params, count, &mlen, &start);
    if (!rc) {
        if (meta_len) *meta_len = (size_t)mlen;
        if (meta && mlen > meta_cap) rc = BD_CK_META;
    }
    if (!rc && meta && mlen) {
        if (fseek(f, (long)(CK_HEADER + table_bytes(params, count)), SEEK_SET) != 0 ||
            fread(meta, 1, (size_t)mlen, f) != (size_t)mlen)
            rc = BD_CK_IO;
    }
    /* Verified: now (and only now) the image changes. */
    uint64_t off = start;
    for (int i = 0; !rc && i < count; ++i) {
        if (fseek(f, (long)off, SEEK_SET) != 0) rc = BD_CK_IO;
        else rc = get_param(f, &params[i], image);
        off = align8(off + data_bytes_of(&params[i]));
    }
    fclose(f);
    return rc;
}
