/* fsbench's compiled CPU kernels: the loops of the scoring protocols that numpy runs as several
 * passes (or a sort), fused into one. fsbench/metrics/native.py compiles this file with the
 * system's C compiler on first use and loads it with ctypes; without a compiler every caller
 * keeps its numpy path, which gives the same numbers (tests/test_native.py checks both).
 *
 * Plain C99, no intrinsics, no -march: the same code on every x86-64 (and any other) CPU.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The order-preserving key of a float32: its bit pattern, read as unsigned, after -0.0 is made
 * +0.0; negative floats get every bit flipped, the others their sign bit (the bins of
 * fsbench.metrics.anomaly.score_bins are the top bits of this key). */
static inline uint32_t key_of(float value) {
    float positive_zero = value + 0.0f; /* -0.0 + 0.0 = +0.0 (IEEE 754, no -ffast-math) */
    uint32_t pattern;
    memcpy(&pattern, &positive_zero, sizeof pattern);
    uint32_t sign = (uint32_t)-(int32_t)(pattern >> 31); /* all ones for negative floats */
    return pattern ^ (sign | 0x80000000u);
}

/* AnomalyMetrics' fold (fsbench.metrics.anomaly.add_to_histogram) for float32 scores and uint8
 * labels: each pixel labelled 0 or 1 adds `sign` to counts[label][key >> (32 - bits)]
 * (counts: int64 [2][2**bits], row-major). range[0], range[1] are widened to the lowest and
 * highest bin written. Returns the number of pixels whose label is neither 0, 1 nor
 * void_label. */
int64_t fsb_fold_u8(const float *score, const uint8_t *label, int64_t n, int64_t *counts,
                    int32_t bits, int32_t void_label, int64_t sign, int64_t *range) {
    const int shift = 32 - bits;
    const int64_t row = (int64_t)1 << bits;
    int64_t low = range[0], high = range[1], unexpected = 0;
    for (int64_t i = 0; i < n; i++) {
        const uint8_t l = label[i];
        if (l > 1) {
            unexpected += (l != void_label);
            continue;
        }
        const int64_t bin = (int64_t)(key_of(score[i]) >> shift);
        counts[l * row + bin] += sign;
        low = bin < low ? bin : low;
        high = bin > high ? bin : high;
    }
    range[0] = low;
    range[1] = high;
    return unexpected;
}

enum { DIGIT = 8, RADIX = 1 << DIGIT, PASSES = 32 / DIGIT };

/* Sorts the m keys of `keys` ascending (work: room for m) by a least-significant-digit radix
 * sort of four 8-bit digits whose counts are in counts[PASSES][RADIX]; a digit that every key
 * shares costs no pass. */
static void radix_sort(uint32_t *keys, uint32_t *work, int64_t m, int64_t counts[][RADIX]) {
    uint32_t *from = keys, *to = work;
    for (int pass = 0; pass < PASSES; pass++) {
        int64_t *start = counts[pass], total = 0;
        int shared = 0;
        for (int d = 0; d < RADIX; d++) {
            const int64_t c = start[d];
            shared |= (c == m);
            start[d] = total;
            total += c;
        }
        if (shared) continue;
        const int at = pass * DIGIT;
        for (int64_t i = 0; i < m; i++) {
            const uint32_t key = from[i];
            to[start[(key >> at) & (RADIX - 1)]++] = key;
        }
        uint32_t *swap = from;
        from = to;
        to = swap;
    }
    if (from != keys) memcpy(keys, from, (size_t)m * sizeof *keys);
}

/* The order-preserving keys (key_of) of the float32 scores of the pixels labelled 0 into
 * inlier and of those labelled 1 into anomaly (each with room for n), each sorted ascending
 * (work: room for n); other labels are skipped. found[0], found[1]: how many of each. */
void fsb_sorted_classes_u8(const float *score, const uint8_t *label, int64_t n,
                           uint32_t *inlier, uint32_t *anomaly, uint32_t *work, int64_t *found) {
    static const int64_t zero[2][PASSES][RADIX];
    int64_t counts[2][PASSES][RADIX];
    memcpy(counts, zero, sizeof counts);
    uint32_t *out[2] = {inlier, anomaly};
    int64_t m[2] = {0, 0};
    for (int64_t i = 0; i < n; i++) {
        const uint8_t l = label[i];
        if (l > 1) continue;
        const uint32_t key = key_of(score[i]);
        out[l][m[l]++] = key;
        for (int pass = 0; pass < PASSES; pass++) counts[l][pass][(key >> (pass * DIGIT)) & 255]++;
    }
    for (int c = 0; c < 2; c++) radix_sort(out[c], work, m[c], counts[c]);
    found[0] = m[0];
    found[1] = m[1];
}

/* For each of the q ascending keys `values`: below[k], how many of the n ascending keys
 * `sorted` are smaller, and equal[k], how many are equal (one merge of the two). */
void fsb_ranks_u32(const uint32_t *sorted, int64_t n, const uint32_t *values, int64_t q,
                   int64_t *below, int64_t *equal) {
    int64_t i = 0;
    for (int64_t k = 0; k < q; k++) {
        const uint32_t value = values[k];
        while (i < n && sorted[i] < value) i++;
        int64_t j = i;
        while (j < n && sorted[j] == value) j++;
        below[k] = i;
        equal[k] = j - i;
        i = j;
    }
}

/* The SMIYC protocol's per-frame counts (fsbench.metrics.protocols.smiyc_frame_counts) for
 * void = 255: counts[0][b] += 1 for each inlier (label 0) and counts[1][b] += 1 for each anomaly
 * (label 1..254) whose float16 bit pattern is b (counts: int64 [2][65536]). */
void fsb_count_f16_u8(const uint16_t *bits, const uint8_t *label, int64_t n, int64_t *counts) {
    for (int64_t i = 0; i < n; i++) {
        const uint8_t l = label[i];
        if (l == 255) continue;
        counts[(l != 0) * 65536 + bits[i]]++;
    }
}

/* How many of the n float16 bit patterns are not finite (all exponent bits set: inf, NaN). */
int64_t fsb_nonfinite_f16(const uint16_t *bits, int64_t n) {
    int64_t found = 0;
    for (int64_t i = 0; i < n; i++) found += (bits[i] & 0x7C00) == 0x7C00;
    return found;
}
