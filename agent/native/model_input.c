/* Raw features -> the int8 model input, in one pass: the compiled twin of Preprocessor.transform
 * (agent/detect/preprocess.py) followed by Classifier.quantize.
 *
 * It must give the numpy path's bytes exactly (the tests compare them): every step repeats numpy's
 * arithmetic in the same order (cap, noise floor, mantissa rounding, nan_to_num, np.interp, float32
 * round half to even), and the library is built with -ffp-contract=off so no multiply-add is fused.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define DROPPED_BITS 32 /* preprocess.DROPPED_BITS */

/* denoise()'s rounding to a 20-bit mantissa, on the bits as numpy does it on an int64 view. */
static double round_mantissa(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    bits += (uint64_t)1 << (DROPPED_BITS - 1);
    bits &= ~(((uint64_t)1 << DROPPED_BITS) - 1);
    memcpy(&v, &bits, sizeof v);
    return v;
}

/* Index j with xs[j] <= v < xs[j + 1] (n - 1 when v == xs[n - 1]); xs strictly increasing, xs[0] <= v <= xs[n - 1].
 * Else branch-free bisection: the compiler turns the step into a conditional move, so no mispredicted jumps. */
static int64_t interval(const double *xs, int64_t n, double v, int64_t guess)
{
    if (guess >= 0 && guess < n - 1 && xs[guess] <= v && v < xs[guess + 1]) /* consecutive packets: mostly the same interval */
        return guess;
    const double *base = xs;
    int64_t len = n;
    while (len > 1) {
        int64_t half = len / 2;
        base = base[half] <= v ? base + half : base;
        len -= half;
    }
    return base - xs;
}

/* np.interp(v, xs, ys) for one finite v, with numpy's own formula and special cases; slopes[j] is numpy's
 * (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j]), computed once by the caller. */
static double interp(const double *xs, const double *ys, const double *slopes, int64_t n, double v, int64_t *guess)
{
    if (v > xs[n - 1])
        return ys[n - 1];
    if (v < xs[0])
        return ys[0];
    int64_t j = interval(xs, n, v, *guess);
    *guess = j;
    if (j == n - 1 || xs[j] == v)
        return ys[j];
    double slope = slopes[j];
    double y = slope * (v - xs[j]) + ys[j];
    if (isnan(y)) {
        y = slope * (v - xs[j + 1]) + ys[j + 1];
        if (isnan(y) && ys[j] == ys[j + 1])
            y = ys[j];
    }
    return y;
}

/* features: n x ncols raw rows (N-BaIoT order).  order[g]: the raw column at grid position g.  caps, mean_of
 * (-1: none), quad, lin: per raw column (preprocess.column_caps and _noise_floors).  Grid position g's knots are
 * knots_x/knots_y/slopes[knot_start[g] : knot_start[g + 1]].  guess: ncols scratch values (start at -1).
 * out: n x ncols int8 = clip(rint(interp / scale) + zero_point). */
void iotguard_model_input_v2(int64_t n, int64_t ncols, const double *features, const int64_t *order,
                             const double *caps, const int64_t *mean_of, const double *quad, const double *lin,
                             const double *knots_x, const double *knots_y, const double *slopes,
                             const int64_t *knot_start, float scale, int32_t zero_point, int64_t *guess, int8_t *out)
{
    double capped[ncols];
    for (int64_t i = 0; i < n; i++) {
        const double *row = features + i * ncols;
        for (int64_t c = 0; c < ncols; c++) /* np.minimum: NaN stays NaN */
            capped[c] = row[c] > caps[c] ? caps[c] : row[c];
        for (int64_t g = 0; g < ncols; g++) {
            const int64_t c = order[g], k = knot_start[g], nk = knot_start[g + 1] - k;
            double v = capped[c];
            if (mean_of[c] >= 0) {
                double mu = fabs(capped[mean_of[c]]);
                double floor_ = quad[c] * (1 + mu * mu) + lin[c] * (1 + mu);
                if (fabs(v) < floor_)
                    v = 0.0;
            }
            v = round_mantissa(v);
            if (isnan(v))
                v = 0.0;
            else if (isinf(v))
                v = v > 0 ? DBL_MAX : -DBL_MAX;
            float y = nk > 1 ? (float)interp(knots_x + k, knots_y + k, slopes + k, nk, v, &guess[g]) : 0.0f;
            float q = rintf(y / scale) + (float)zero_point;
            out[i * ncols + g] = (int8_t)(q < -128.0f ? -128.0f : (q > 127.0f ? 127.0f : q));
        }
    }
}
