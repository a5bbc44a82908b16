/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Quantization (ISO/IEC 15938-17 clause 8): step size from QP, uniform reconstruction
 * quantization by rounding, and dependent (trellis-coded) quantization with the 8-state machine.
 *
 * The floating-point operations and their precisions (float for the uniform scale, double for
 * the trellis distortions) follow the reference encoder so levels come out identical.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cabac.h"

double nc_step_size(int32_t qp, int32_t qp_density)
{
    const int32_t k = (int32_t)1 << qp_density;
    const int32_t mul = k + (qp & (k - 1));
    const int32_t shift = qp >> qp_density; /* arithmetic shift: floor division */
    /* The reference stores the step in float32. */
    return (double)(float)(mul * pow(2.0, (double)(shift - qp_density)));
}

int nc_tcq_fits(const float *w, uint64_t n, float scale)
{
    /* round(x) > NC_TCQ_MAX  <=>  x >= NC_TCQ_MAX + 0.5, round(x) < NC_TCQ_MIN  <=>  x <= NC_TCQ_MIN - 0.5
     * (round half away from zero), so the check needs no rounding. */
    int bad = 0;
    uint64_t i;
    for (i = 0; i < n; i++) {
        const double x = (double)(w[i] * scale);
        bad |= (x >= NC_TCQ_MAX + 0.5) | (x <= NC_TCQ_MIN - 0.5);
    }
    return !bad;
}

static int scan_positions(uint64_t rows, uint64_t width, int scan_order, uint64_t **out)
{
    /* Position in the matrix of each scan index (block scans only). */
    const uint64_t bs = (uint64_t)4 << scan_order;
    uint64_t *pos = (uint64_t *)malloc(rows * width * sizeof(uint64_t));
    uint64_t by, bx, y, x, n = 0;
    if (pos == NULL) {
        return NC_ERR_NOMEM;
    }
    for (by = 0; by < rows; by += bs) {
        uint64_t ye = by + bs < rows ? by + bs : rows;
        for (bx = 0; bx < width; bx += bs) {
            uint64_t xe = bx + bs < width ? bx + bs : width;
            for (y = by; y < ye; y++) {
                for (x = bx; x < xe; x++) {
                    pos[n++] = y * width + x;
                }
            }
        }
    }
    *out = pos;
    return NC_OK;
}

static int urq(const float *w, int32_t *levels, uint64_t n, float qstep)
{
    const float scale = 1.0f / qstep;
    uint64_t i;
    for (i = 0; i < n; i++) {
        float p = scale * w[i];
        double r = round((double)p);
        if (r > NC_URQ_MAX || r < NC_URQ_MIN) {
            return 0;
        }
        levels[i] = (int32_t)r;
    }
    return 1;
}

typedef struct {
    uint8_t prev;
    uint8_t cand;
} tcq_branch;

static int tcq(const float *w, int32_t *levels, uint64_t n, const uint64_t *pos, double qstep, nc_status *st)
{
    const float scale = (float)(1.0 / qstep);
    const double qscale = 1.0 / qstep;
    tcq_branch br[8][3];
    int nbr[8] = {0};
    double cost_a[8], cost_b[8];
    double *prev = cost_a, *curr = cost_b, *tmp;
    uint16_t *decision = NULL; /* per weight, 2 bits per state: which of its 3 branches won */
    unsigned char *decision_bytes;
    uint64_t i;
    int p, s, best;
    nc_tcq_cand cand;

    if (!nc_tcq_fits(w, n, scale)) {
        return 0;
    }
    /* Branches into each state, in the reference's order (it breaks ties by order). */
    for (p = 0; p < 8; p++) {
        int q = p & 1;
        int s0 = nc_dq_next[p][0], s1 = nc_dq_next[p][1];
        br[s0][nbr[s0]].prev = (uint8_t)p;
        br[s0][nbr[s0]++].cand = (uint8_t)(3 * q);
        br[s0][nbr[s0]].prev = (uint8_t)p;
        br[s0][nbr[s0]++].cand = 4;
        br[s1][nbr[s1]].prev = (uint8_t)p;
        br[s1][nbr[s1]++].cand = (uint8_t)(2 - q);
    }
    for (s = 0; s < 8; s++) {
        if (nbr[s] != 3) {
            return nc_fail(st, NC_ERR_VALUE, 0, "internal error: trellis state %d has %d branches", s, nbr[s]), -1;
        }
    }
    /* Row-major scans keep the decisions in the levels' own buffer (2 of its 4 bytes per weight):
     * the traceback writes level i, bytes 4i..4i+3, after reading decision i, and only decisions
     * j < i (bytes below 2i) are still needed, so nothing is overwritten before use and the
     * trellis costs no memory beyond its output. Block scans write levels out of order. */
    if (pos == NULL) {
        decision_bytes = (unsigned char *)levels;
    } else {
        decision = (uint16_t *)malloc((n ? n : 1) * sizeof(uint16_t));
        if (decision == NULL) {
            nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the trellis (%llu weights)", (unsigned long long)n);
            return -1;
        }
        decision_bytes = (unsigned char *)decision;
    }
    for (s = 0; s < 8; s++) {
        curr[s] = 0.5 * DBL_MAX;
    }
    curr[0] = 0.0;
    for (i = 0; i < n; i++) {
        uint16_t dec = 0;
        nc_tcq_candidates((double)w[pos ? pos[i] : i], qscale, 1.0, &cand);
        tmp = prev;
        prev = curr;
        curr = tmp;
        for (s = 0; s < 8; s++) {
            /* three branches into every state; selects, first of equal costs wins */
            const double c0 = prev[br[s][0].prev] + cand.dist[br[s][0].cand];
            const double c1 = prev[br[s][1].prev] + cand.dist[br[s][1].cand];
            const double c2 = prev[br[s][2].prev] + cand.dist[br[s][2].cand];
            const int p1 = c1 < c0;
            const double m01 = p1 ? c1 : c0;
            const int p2 = c2 < m01;
            curr[s] = p2 ? c2 : m01;
            dec |= (uint16_t)((p2 ? 2 : p1) << (2 * s));
        }
        memcpy(decision_bytes + 2 * i, &dec, sizeof dec); /* char access: may alias the levels */
    }
    best = 0;
    for (s = 1; s < 8; s++) {
        if (curr[s] < curr[best]) {
            best = s;
        }
    }
    /* Trace back; level = 2k - sgn(k) * (state & 1) with the state the index was coded in. */
    s = best;
    for (i = n; i-- > 0;) {
        uint64_t at = pos ? pos[i] : i;
        uint16_t dec;
        const tcq_branch *bb;
        memcpy(&dec, decision_bytes + 2 * i, sizeof dec);
        bb = &br[s][(dec >> (2 * s)) & 3];
        s = bb->prev;
        levels[at] = nc_tcq_level((double)w[at], qscale, bb->cand, s);
    }
    free(decision);
    return 1;
}

/* QP whose step keeps max|w| within int32 levels (the reference's fallback). */
static int32_t qp_for_range(const float *w, uint64_t n, int32_t qp_density)
{
    const int32_t k = (int32_t)1 << qp_density;
    float max_abs = 0.0f, base_qp, new_qp;
    double min_step;
    uint64_t i;
    for (i = 0; i < n; i++) {
        float a = fabsf(w[i]);
        if (a > max_abs) {
            max_abs = a;
        }
    }
    min_step = (double)max_abs / (double)2147483645u;
    base_qp = (float)(floor(log2(min_step)) * k);
    new_qp = (float)((double)base_qp + ((min_step * k) / pow(2.0, (double)(base_qp / (float)k)) - k));
    return (int32_t)ceil((double)new_qp);
}

int nc_quantize(const float *weights, int32_t *levels, uint64_t rows, uint64_t width,
                int32_t *qp, int32_t qp_density, int dq, int scan_order, double lambda_scale,
                nc_status *st)
{
    return nc_quantize_rd(weights, levels, rows, width, qp, qp_density, dq, scan_order, lambda_scale,
                          NC_RD_DEFAULT_NUM_NO_REM, st);
}

int nc_quantize_rd(const float *weights, int32_t *levels, uint64_t rows, uint64_t width,
                   int32_t *qp, int32_t qp_density, int dq, int scan_order, double lambda_scale,
                   uint32_t max_num_no_rem, nc_status *st)
{
    const uint64_t n = rows * width;
    uint64_t i;
    uint64_t *pos = NULL;
    double lambda;
    int attempt, ok = 0;

    if (qp_density < 0 || qp_density > 7) {
        return nc_fail(st, NC_ERR_VALUE, 0, "qp_density %d is not in 0..7", qp_density);
    }
    if (scan_order < 0 || scan_order > 4) {
        return nc_fail(st, NC_ERR_VALUE, 0, "scan_order %d is not in 0..4", scan_order);
    }
    /* The reference takes lambda_scale as float32; below NC_RD_MIN_LAMBDA the distortion
     * scale 2^15 / lambda could overflow, so such values are refused rather than mis-coded. */
    if (!(lambda_scale >= 0.0) || lambda_scale > FLT_MAX) {
        return nc_fail(st, NC_ERR_VALUE, 0, "lambda_scale %g is not a finite number >= 0", lambda_scale);
    }
    lambda = (double)(float)lambda_scale;
    if (lambda != 0.0 && lambda < NC_RD_MIN_LAMBDA) {
        return nc_fail(st, NC_ERR_VALUE, 0, "lambda_scale %g is neither 0 nor at least %g", lambda_scale,
                       NC_RD_MIN_LAMBDA);
    }
    if (lambda > 0.0 && max_num_no_rem > NC_MAX_GTX) {
        return nc_fail(st, NC_ERR_VALUE, 0, "max_num_no_rem %u is above %d", (unsigned)max_num_no_rem, NC_MAX_GTX);
    }
    for (i = 0; i < n; i++) {
        if (!isfinite(weights[i])) {
            return nc_fail(st, NC_ERR_VALUE, 0, "weight %llu is not finite (%g)", (unsigned long long)i,
                           (double)weights[i]);
        }
    }
    if (width == 1 || rows == 1) {
        scan_order = 0;
    }
    /* Plain rounding is element-wise; the trellis and the rate model follow the scan order. */
    if (scan_order != 0 && (dq || lambda > 0.0) && scan_positions(rows, width, scan_order, &pos) != NC_OK) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the scan order");
    }
    for (attempt = 0; attempt < 2; attempt++) {
        double step = nc_step_size(*qp, qp_density);
        if (!(step > 0.0) || !isfinite(step)) {
            free(pos);
            return nc_fail(st, NC_ERR_VALUE, 0, "QP %d gives no usable step size", *qp);
        }
        if (dq && lambda > 0.0) {
            ok = nc_rdq_tcq(weights, levels, n, pos, step, lambda, max_num_no_rem, st);
        } else if (dq) {
            ok = tcq(weights, levels, n, pos, step, st);
        } else if (lambda > 0.0) {
            ok = nc_rdq_urq(weights, levels, n, pos, step, lambda, max_num_no_rem, st);
        } else {
            ok = urq(weights, levels, n, (float)step);
        }
        if (ok < 0) {
            free(pos);
            return st->code;
        }
        if (ok) {
            free(pos);
            return NC_OK;
        }
        *qp = qp_for_range(weights, n, qp_density);
    }
    free(pos);
    return nc_fail(st, NC_ERR_OVERFLOW, 0, "levels overflow int32 even at QP %d", *qp);
}

void nc_dequantize(const int32_t *levels, float *out, uint64_t n, int32_t qp, int32_t qp_density)
{
    const float step = (float)nc_step_size(qp, qp_density);
    uint64_t i;
    for (i = 0; i < n; i++) {
        out[i] = step * (float)levels[i];
    }
}
