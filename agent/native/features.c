/* The per-packet N-BaIoT recurrences in C: the optional fast path of the feature engine.
 *
 * Plain C with no Python API, loaded with ctypes (agent/native), so one
 * file builds with any C compiler for any board (also cross-compiled for the QEMU
 * tests).  The numpy engine (engine.py) stays the fallback and the tests compare the
 * two.  Each function walks the packets in order and updates the stream tables'
 * state rows in place, exactly as agent/features/reference.py does for one packet;
 * the Python side has already looked up each packet's row ("slot").
 *
 * State layouts (per slot, blocks of nl values, one per decay rate) are those of
 * engine.py: single streams [w, LS, SS]; pairs [W0 LS0 SS0 W1 LS1 SS1 R0 R1 CF3 W3
 * MU0 VAR0 MU1 VAR1] (direction 0 is the stream with the smaller key).
 */
#include <math.h>
#include <stdint.h>

enum { W0, LS0, SS0, W1, LS1, SS1, R0, R1, CF3, W3, MU0, VAR0, MU1, VAR1, PAIR_WIDTH };

static double mean_of(double w, double ls) { return w > 0 ? ls / w : 0.0; }

static double variance_of(double w, double ls, double ss)
{
    if (w <= 0)
        return 0.0;
    double mu = ls / w;
    return fabs(ss / w - mu * mu);
}

/* MI_dir, H and HH_jit.  out[i * out_stride + 3 * l + {0, 1, 2}] = weight, mean, variance. */
void iotguard_single_update(int64_t n, const double *t, const double *x, const int64_t *slot, int32_t jitter,
                            double *state, double *t_last, const double *lam, int64_t nl,
                            double *out, int64_t out_stride)
{
    for (int64_t i = 0; i < n; i++) {
        double *row = state + slot[i] * 3 * nl;
        double *o = out + i * out_stride;
        double tl = t_last[slot[i]], ti = t[i];
        double xi = jitter ? fmax(ti - tl, 0.0) : x[i];
        int decays = ti > tl;
        if (decays)
            t_last[slot[i]] = ti;
        for (int64_t l = 0; l < nl; l++) {
            double *w = row + l, *ls = row + nl + l, *ss = row + 2 * nl + l;
            if (decays) {
                double f = exp2(-lam[l] * (ti - tl));
                *w *= f;
                *ls *= f;
                *ss *= f;
            }
            *w += 1.0;
            *ls += xi;
            *ss += xi * xi;
            o[3 * l] = *w;
            o[3 * l + 1] = mean_of(*w, *ls);
            o[3 * l + 2] = variance_of(*w, *ls, *ss);
        }
    }
}

/* HH and HpHp.  dir: the packet's direction in its pair; self_paired: the stream is its own reverse;
 * created: the packet created the pair (the pair update then runs once, else twice).
 * out[i * out_stride + 7 * l + k] = weight, mean, std, magnitude, radius, covariance, pcc. */
void iotguard_pair_update(int64_t n, const double *t, const double *x, const int64_t *slot, const uint8_t *dir,
                          const uint8_t *self_paired, const uint8_t *created, double *state, double *t_last,
                          const double *lam, int64_t nl, double *out, int64_t out_stride)
{
    for (int64_t i = 0; i < n; i++) {
        double *row = state + slot[i] * PAIR_WIDTH * nl;
        double *o = out + i * out_stride;
        double tl = t_last[slot[i]], ti = t[i], xi = x[i];
        int d = dir[i], sp = self_paired[i], decays = ti > tl;
        if (decays)
            t_last[slot[i]] = ti;
        /* Column blocks of this packet's direction (a) and of its reverse (b). */
        int wa = d ? W1 : W0, la = d ? LS1 : LS0, sa = d ? SS1 : SS0, ra = d ? R1 : R0;
        int mua = d ? MU1 : MU0, vara = d ? VAR1 : VAR0;
        int rb = sp ? ra : (d ? R0 : R1), mub = d ? MU0 : MU1, varb = d ? VAR0 : VAR1;
        for (int64_t l = 0; l < nl; l++) {
#define AT(col) row[(col) * nl + l]
            if (decays) {
                /* Both directions and the pair decay; of the residuals only the packet's own one
                 * (the reference decays residual[key_a] alone). */
                double f = exp2(-lam[l] * (ti - tl));
                AT(W0) *= f; AT(LS0) *= f; AT(SS0) *= f;
                AT(W1) *= f; AT(LS1) *= f; AT(SS1) *= f;
                AT(CF3) *= f; AT(W3) *= f; AT(ra) *= f;
            }
            AT(wa) += 1.0;
            AT(la) += xi;
            AT(sa) += xi * xi;
            double mu_a = mean_of(AT(wa), AT(la)), var_a = variance_of(AT(wa), AT(la), AT(sa));
            AT(mua) = mu_a;
            AT(vara) = var_a;
            double r = xi - mu_a;
            AT(CF3) += r * AT(rb);
            AT(W3) += 1.0;
            AT(ra) = r;
            if (!created[i]) {
                AT(CF3) += r * AT(rb); /* for a stream paired with itself, rb is now r */
                AT(W3) += 1.0;
            }
            double mu_b = sp ? mu_a : AT(mub), var_b = sp ? var_a : AT(varb);
            double cov = AT(CF3) / AT(W3), denom = sqrt(var_a) * sqrt(var_b);
            double *ol = o + 7 * l;
            ol[0] = AT(wa);
            ol[1] = mu_a;
            ol[2] = sqrt(var_a);
            ol[3] = sqrt(mu_a * mu_a + mu_b * mu_b);
            ol[4] = sqrt(var_a * var_a + var_b * var_b);
            ol[5] = cov;
            ol[6] = denom != 0 ? cov / denom : 0.0;
#undef AT
        }
    }
}
