/* The decision stage's per-key decayed sums in C: the optional fast path of agent/detect/tracked.py.
 *
 * Plain C with no Python API, loaded with ctypes (agent/native).  Tracked.update's numpy path computes
 * the same sums as segmented prefix sums (agent/features/decayed_sums.py); here each key's packets are
 * walked in time order through the recurrence S_k = 2^(-lam (T_k - T_{k-1})) S_{k-1} + c_k, which
 * rounds differently in the last bits only (the tests hold both paths to each other).
 *
 * The packets come in key order through ``order`` (key order -> packet order); segment s (one per key)
 * covers key-order positions start[s] .. start[s] + length[s] - 1.  Each packet's terms are 1 (its
 * weight), scores[p][1 .. n_scores] (the attack classes' scores) and extra[p][0 .. n_extra - 1].
 * The stored state of key s is state[s][0 .. q - 1] (q = 1 + n_scores + n_extra), valid at t_init[s],
 * with its lifetime packet count and episode start at state[s][count_col] and state[s][episode_col].
 */
#include <math.h>
#include <stdint.h>

/* Outputs, in key order: ts (the packets' times), T (the time each packet decays its key to: the running
 * maximum of t_init and the times), sums (the key's decayed sums right after each packet, column by column:
 * sums[j * n + i] is sum j after packet i, so that each column is contiguous for the rules that read it),
 * ratio (ratio[(j - 1) * n + i] = sums[j * n + i] / sums[i], j >= 1: the score averages and evidence shares),
 * count (lifetime packets of the key), episode (start of the key's current episode: the last packet that
 * found less than half a packet of recent weight besides itself, else the stored episode).
 * At most TRACKED_MAX_SUMS sums (q). */
#define TRACKED_MAX_SUMS 64
#define TRACKED_AHEAD 8 /* packets ahead whose rows are prefetched */
#define TRACKED_TILE 64 /* packets whose sums are gathered row by row, then written out column by column */

void iotguard_tracked_sums_by_column(int64_t n, int64_t nseg, const int64_t *start, const int64_t *length,
                                     const int64_t *order, const double *t, const double *scores, int64_t score_width,
                                     int64_t n_scores, const double *extra, int64_t n_extra, const double *t_init,
                                     const double *state, int64_t state_width, int64_t count_col, int64_t episode_col,
                                     double lam, double *ts, double *T, double *sums, double *ratio, double *count,
                                     double *episode)
{
    const int64_t q = 1 + n_scores + n_extra;
    double tile[TRACKED_TILE * TRACKED_MAX_SUMS];
    if (q > TRACKED_MAX_SUMS)
        return;
    /* The segments are consecutive and cover 0 .. n - 1 (key order): walk them packet by packet. */
    int64_t s = -1, seg_end = 0;
    const double *st = state, *prev = 0;
    double t_prev = 0.0, ep = 0.0;
    for (int64_t i0 = 0; i0 < n; i0 += TRACKED_TILE) {
        const int64_t i1 = i0 + TRACKED_TILE < n ? i0 + TRACKED_TILE : n;
        for (int64_t i = i0; i < i1; i++) {
            while (i == seg_end && s + 1 < nseg) { /* the next key's first packet: start from its stored state */
                s++;
                seg_end = start[s] + length[s];
                st = state + s * state_width;
                prev = st;
                t_prev = t_init[s];
                ep = st[episode_col];
            }
            const int64_t p = order[i];
#ifdef __GNUC__
            if (i + TRACKED_AHEAD < n) { /* a packet a little ahead: its rows sit anywhere in the batch */
                const int64_t pa = order[i + TRACKED_AHEAD];
                __builtin_prefetch(t + pa);
                __builtin_prefetch(scores + pa * score_width);
                if (n_extra > 0) {
                    __builtin_prefetch(extra + pa * n_extra);
                    __builtin_prefetch(extra + pa * n_extra + n_extra - 1);
                }
            }
#endif
            const double ti = t[p];
            const double Ti = ti > t_prev ? ti : t_prev;
            const double f = exp2(-lam * (Ti - t_prev));
            const double *sc = scores + p * score_width + 1, *ex = extra + p * n_extra;
            double *row = tile + (i - i0) * q;
            row[0] = prev[0] * f + 1.0;
            for (int64_t j = 0; j < n_scores; j++)
                row[1 + j] = prev[1 + j] * f + sc[j];
            for (int64_t j = 0; j < n_extra; j++)
                row[1 + n_scores + j] = prev[1 + n_scores + j] * f + ex[j];
            if ((row[0] - 1.0) < 0.5)
                ep = ti;
            ts[i] = ti;
            T[i] = Ti;
            count[i] = (double)(i - start[s] + 1) + st[count_col];
            episode[i] = ep;
            prev = row;
            t_prev = Ti;
        }
        for (int64_t j = 0; j < q; j++) {
            double *column = sums + j * n;
            for (int64_t i = i0; i < i1; i++)
                column[i] = tile[(i - i0) * q + j];
        }
        for (int64_t j = 1; j < q; j++) {
            double *column = ratio + (j - 1) * n;
            for (int64_t i = i0; i < i1; i++)
                column[i] = tile[(i - i0) * q + j] / tile[(i - i0) * q];
        }
        /* The next tile's first packet may continue this key: its previous sums are the tile's last row. */
        if (prev != st) {
            double *keep = tile + (TRACKED_TILE - 1) * q;
            if (prev != keep)
                for (int64_t j = 0; j < q; j++)
                    keep[j] = prev[j];
            prev = keep;
        }
    }
}

/* A stable argsort of 64-bit keys (the tables' key order): an LSD radix sort, byte by byte, skipping the bytes
 * all keys share; the same permutation as numpy's argsort(kind="stable").  Scratch: kbuf (2n keys), ibuf (n). */
void iotguard_argsort_keys(int64_t n, const uint64_t *keys, int64_t *order, uint64_t *kbuf, int64_t *ibuf)
{
    int64_t count[8][256] = {{0}};
    for (int64_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            count[b][(keys[i] >> (8 * b)) & 0xFF]++;
    const uint64_t *src_k = keys;
    uint64_t *dst_k = kbuf;
    int64_t *src_i = 0, *dst_i = order, *spare_i = ibuf;
    int passes = 0;
    for (int b = 0; b < 8; b++) {
        int64_t *c = count[b], sum = 0;
        int trivial = 0;
        for (int v = 0; v < 256; v++) {
            if (c[v] == n)
                trivial = 1;
            int64_t here = c[v];
            c[v] = sum;
            sum += here;
        }
        if (trivial)  /* every key has the same byte here: the order stays */
            continue;
        for (int64_t i = 0; i < n; i++) {
            uint64_t k = src_k[i];
            int64_t at = c[(k >> (8 * b)) & 0xFF]++;
            dst_k[at] = k;
            dst_i[at] = src_i ? src_i[i] : i;
        }
        passes++;
        /* The next pass reads what this one wrote. */
        src_k = dst_k;
        dst_k = (dst_k == kbuf) ? kbuf + n : kbuf;
        src_i = dst_i;
        dst_i = (dst_i == order) ? spare_i : order;
    }
    if (passes == 0) {
        for (int64_t i = 0; i < n; i++)
            order[i] = i;
    } else if (src_i != order) {
        for (int64_t i = 0; i < n; i++)
            order[i] = src_i[i];
    }
}
