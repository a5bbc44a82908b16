/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Rate-distortion quantization (lambda_scale > 0): the encoder-side choices the standard leaves
 * free, made the way NNCodec 2.1.3 makes them so that levels come out identical.
 *
 * Rate model.  The cost of a level is estimated with DeepCABAC's binarization over contexts that
 * all start from parameter set 0 (S = 0) and adapt with the SBMP update as levels are decided:
 * significance by quantizer state and previous level (3 * state + class), sign by previous
 * level, `max_num_no_rem` greater-than flags by flag index and sign, then the Exp-Golomb
 * remainder (context-coded prefix, bypass suffix at one bit each).  Bins cost nc_rate (scaled by
 * 2^15).  The model knows neither the block scan's context resets, the context parameter sets
 * the real encoder picks, nor temporal/HDSP contexts: it is an estimate, as in the reference.
 * NNCodec's pipeline passes cabac_unary_length_minus1 as `max_num_no_rem`, one flag fewer than
 * the bitstream then codes; callers mirror that.
 *
 * Uniform quantization: per weight in scan order, the cheaper of 0, max(1, r - 1) and r (r =
 * round(|w| / step)) under D * 2^15 / lambda + R, with lambda = lambda_scale * ln2 / 6; the rate
 * of a non-zero candidate is estimated for the positive level (the reference does), the
 * contexts are then updated with the signed choice.
 *
 * Dependent quantization: the 8-state Viterbi trellis with lambda = lambda_scale * 4 * ln2/6 *
 * 0.7.  Every state carries its own context store, inherited from the predecessor on the chosen
 * branch.  Two details of the reference are reproduced on purpose: the rate of a branch is
 * estimated in the predecessor state with the predecessor's previous level, but the store is
 * then updated as if the level were coded in the successor state and with the previous level
 * that the successor slot itself held one step earlier (the reference copies the contexts, not
 * the neighbour value, and its state objects alternate between two banks).
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cabac.h"

/* One context of the rate model: the biased SBMP state a = S0 + 128, b = S1 + 2048. */
typedef struct {
    uint16_t a;
    uint16_t b;
} rd_ctx;

/* Layout of a store: significance 0..23, sign 24..26, greater-than flag f with sign s at
 * 27 + 2f + s, remainder prefix bin r at 27 + 2N + r.  With N = 0 the first greater-than flag
 * shares its contexts with the remainder prefix, as in the reference's layout. */
#define RD_SIG 0
#define RD_SIGN 24
#define RD_GTX 27
#define RD_REM_BINS 32

typedef struct {
    const uint8_t *n0;  /* set-0 transition of a: n0[256 * bin + a] */
    const uint16_t *n1; /* set-0 transition of b: n1[4096 * bin + b] */
    rd_ctx init;        /* set-0 initial state */
    uint32_t num_gtx;   /* greater-than flags before the remainder */
    uint32_t rem;       /* first remainder-prefix context */
    size_t size;        /* contexts in one store */
} rd_model;

static void rd_model_init(rd_model *m, uint32_t num_gtx)
{
    nc_ctx c;
    nc_ctx_init(&c, 0);
    m->n0 = c.n0;
    m->n1 = c.n1;
    m->init.a = c.a;
    m->init.b = c.b;
    m->num_gtx = num_gtx;
    m->rem = RD_GTX + 2 * num_gtx;
    m->size = (size_t)m->rem + RD_REM_BINS;
}

static void rd_store_init(const rd_model *m, rd_ctx *store)
{
    size_t i;
    for (i = 0; i < m->size; i++) {
        store[i] = m->init;
    }
}

static inline uint32_t rd_bin(const rd_ctx *c, uint32_t bin)
{
    return nc_rate[bin][(16u * c->a + c->b) >> 3];
}

static inline void rd_learn(const rd_model *m, rd_ctx *c, uint32_t bin)
{
    c->a = m->n0[256u * bin + c->a];
    c->b = m->n1[4096u * bin + c->b];
}

static inline uint32_t rd_class(int32_t previous)
{
    return previous == 0 ? 0u : (previous < 0 ? 1u : 2u);
}

/* Estimated bits of the Exp-Golomb remainder v: context-coded unary prefix, bypass suffix. */
static uint32_t rd_rem_bits(const rd_ctx *c, uint32_t v)
{
    uint32_t bits, base = 1, lg = 1;
    if (v == 0) {
        return rd_bin(&c[0], 0);
    }
    bits = rd_bin(c++, 1);
    while (v > base + (1u << lg) - 1u) {
        bits += rd_bin(c++, 1);
        base += 1u << lg;
        lg++;
    }
    return bits + rd_bin(c, 0) + (lg << 15);
}

/* Estimated bits (x 2^15) of coding index k in `state` after `previous`; the store is read only. */
static uint32_t rd_bits(const rd_model *m, const rd_ctx *store, int32_t k, int state, int32_t previous)
{
    const uint32_t cls = rd_class(previous);
    uint32_t bits = rd_bin(&store[RD_SIG + 3 * (uint32_t)state + cls], k != 0);
    uint32_t neg, rem, f;
    if (k == 0) {
        return bits;
    }
    neg = k < 0;
    bits += rd_bin(&store[RD_SIGN + cls], neg);
    rem = (neg ? (uint32_t)0 - (uint32_t)k : (uint32_t)k) - 1u;
    bits += rd_bin(&store[RD_GTX + neg], rem != 0);
    for (f = 1; rem != 0 && f < m->num_gtx; f++) {
        rem--;
        bits += rd_bin(&store[RD_GTX + 2 * f + neg], rem != 0);
    }
    if (rem != 0) {
        bits += rd_rem_bits(store + m->rem, rem - 1u);
    }
    return bits;
}

/* Estimated bits of the two non-zero indices of equal sign with magnitudes mag and mag + 1 (the
 * trellis' two candidates per state), sharing the walk over their common bins. */
static void rd_bits_pair(const rd_model *m, const rd_ctx *store, uint32_t mag, uint32_t neg, int state,
                         int32_t previous, uint32_t *lo, uint32_t *hi)
{
    const uint32_t cls = rd_class(previous);
    const uint32_t flags = m->num_gtx > 1 ? m->num_gtx : 1; /* the first is always coded */
    uint32_t prefix = rd_bin(&store[RD_SIG + 3 * (uint32_t)state + cls], 1) + rd_bin(&store[RD_SIGN + cls], neg);
    uint32_t f;
    /* greater-than flags that are 1 for both */
    for (f = 0; f + 1 < mag && f < flags; f++) {
        prefix += rd_bin(&store[RD_GTX + 2 * f + neg], 1);
    }
    if (mag - 1 >= flags) { /* both continue into the remainder */
        *lo = prefix + rd_rem_bits(store + m->rem, mag - 1 - flags);
        *hi = prefix + rd_rem_bits(store + m->rem, mag - flags);
        return;
    }
    /* flag mag - 1 ends the smaller one; the larger codes 1 there, then 0 or a zero remainder */
    {
        const rd_ctx *c = &store[RD_GTX + 2 * f + neg];
        *lo = prefix + rd_bin(c, 0);
        *hi = prefix + rd_bin(c, 1) +
              (f + 1 < flags ? rd_bin(&store[RD_GTX + 2 * (f + 1) + neg], 0) : rd_rem_bits(store + m->rem, 0));
    }
}

/* Adapt the store to the bins of index k coded in `state` after `previous` (same binarization). */
static void rd_update(const rd_model *m, rd_ctx *store, int32_t k, int state, int32_t previous)
{
    const uint32_t cls = rd_class(previous);
    uint32_t neg, rem, f;
    rd_learn(m, &store[RD_SIG + 3 * (uint32_t)state + cls], k != 0);
    if (k == 0) {
        return;
    }
    neg = k < 0;
    rd_learn(m, &store[RD_SIGN + cls], neg);
    rem = (neg ? (uint32_t)0 - (uint32_t)k : (uint32_t)k) - 1u;
    rd_learn(m, &store[RD_GTX + neg], rem != 0);
    for (f = 1; rem != 0 && f < m->num_gtx; f++) {
        rem--;
        rd_learn(m, &store[RD_GTX + 2 * f + neg], rem != 0);
    }
    if (rem != 0) {
        rd_ctx *c = store + m->rem;
        uint32_t v = rem - 1u, base, lg;
        if (v == 0) {
            rd_learn(m, &c[0], 0);
            return;
        }
        rd_learn(m, c++, 1);
        base = 1;
        lg = 1;
        while (v > base + (1u << lg) - 1u) {
            rd_learn(m, c++, 1);
            base += 1u << lg;
            lg++;
        }
        rd_learn(m, c, 0);
    }
}


int nc_rdq_urq(const float *w, int32_t *levels, uint64_t n, const uint64_t *pos, double qstep,
               double lambda_scale, uint32_t max_num_no_rem, nc_status *st)
{
    const double lambda = lambda_scale * (log(2.0) / 6.0);
    const double dscale = 32768.0 / lambda;
    const double qscale = 1.0 / qstep;
    rd_model m;
    rd_ctx *store;
    int32_t previous = 0;
    uint64_t i;

    rd_model_init(&m, max_num_no_rem);
    store = (rd_ctx *)malloc(m.size * sizeof(rd_ctx));
    if (store == NULL) {
        nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the rate model");
        return -1;
    }
    rd_store_init(&m, store);
    for (i = 0; i < n; i++) {
        const uint64_t at = pos ? pos[i] : i;
        const double value = (double)w[at];
        const double scaled = round(value * qscale);
        double absw, cost, best_cost, diff;
        int32_t q, top, best = 0;
        /* The reference's limits, except that -2^31 is refused too: its magnitude does not fit
         * the int32 candidate (undefined behaviour in the reference), so the QP is raised. */
        if (scaled > NC_URQ_MAX || scaled <= NC_URQ_MIN) {
            free(store);
            return 0;
        }
        absw = (value < 0 ? -1.0 : 1.0) * value * qscale;
        best_cost = dscale * (absw * absw) + (double)rd_bits(&m, store, 0, 0, previous);
        top = (int32_t)round(absw);
        for (q = top - 1 > 1 ? top - 1 : 1; q <= top; q++) {
            diff = absw - (double)q;
            cost = dscale * (diff * diff) + (double)rd_bits(&m, store, q, 0, previous);
            if (cost < best_cost) {
                best = q;
                best_cost = cost;
            }
        }
        if (value < 0) {
            best = -best;
        }
        levels[at] = best;
        rd_update(&m, store, best, 0, previous);
        previous = best;
    }
    free(store);
    return 1;
}

/* Branch into a state: predecessor, candidate slot, and which of the predecessor's three
 * estimated rates (0: candidate 3q, 1: zero, 2: candidate 2 - q) applies. */
typedef struct {
    uint8_t prev;
    uint8_t cand;
    uint8_t rate;
} rd_branch;

/* One bank of the eight trellis states: context stores, previous levels, accumulated costs. */
typedef struct {
    rd_ctx *ctx;
    int32_t previous[8];
    double cost[8];
} rd_bank;

int nc_rdq_tcq(const float *w, int32_t *levels, uint64_t n, const uint64_t *pos, double qstep,
               double lambda_scale, uint32_t max_num_no_rem, nc_status *st)
{
    const double lambda = lambda_scale * 4.0 * (log(2.0) / 6.0) * 0.7;
    const double dscale = 32768.0 / lambda;
    const double qscale = 1.0 / qstep;
    const float scale = (float)(1.0 / qstep);
    rd_branch br[8][3];
    int nbr[8] = {0};
    rd_model m;
    rd_bank banks[2], *prev = &banks[0], *curr = &banks[1], *tmp;
    rd_ctx *stores = NULL;
    uint16_t *decision = NULL; /* per weight, 2 bits per state: which of its 3 branches won */
    uint32_t rates[8][3];
    nc_tcq_cand cand;
    uint64_t i;
    int p, s, best;

    if (!nc_tcq_fits(w, n, scale)) {
        return 0;
    }
    /* Branches in the reference's order: ties go to the first. */
    for (p = 0; p < 8; p++) {
        const int q = p & 1;
        const int s0 = nc_dq_next[p][0], s1 = nc_dq_next[p][1];
        br[s0][nbr[s0]++] = (rd_branch){(uint8_t)p, (uint8_t)(3 * q), 0};
        br[s0][nbr[s0]++] = (rd_branch){(uint8_t)p, 4, 1};
        br[s1][nbr[s1]++] = (rd_branch){(uint8_t)p, (uint8_t)(2 - q), 2};
    }
    for (s = 0; s < 8; s++) {
        if (nbr[s] != 3) {
            nc_fail(st, NC_ERR_VALUE, 0, "internal error: trellis state %d has %d branches", s, nbr[s]);
            return -1;
        }
    }
    rd_model_init(&m, max_num_no_rem);
    decision = (uint16_t *)malloc((n + 1) * sizeof(uint16_t));
    stores = (rd_ctx *)malloc(16 * m.size * sizeof(rd_ctx));
    if (decision == NULL || stores == NULL) {
        free(decision);
        free(stores);
        nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the trellis (%llu weights)", (unsigned long long)n);
        return -1;
    }
    for (s = 0; s < 16; s++) {
        rd_store_init(&m, stores + (size_t)s * m.size);
    }
    for (s = 0; s < 2; s++) {
        banks[s].ctx = stores + (size_t)s * 8 * m.size;
        for (p = 0; p < 8; p++) {
            banks[s].previous[p] = 0;
            banks[s].cost[p] = 0.5 * DBL_MAX;
        }
    }
    curr->cost[0] = 0.0;

    for (i = 0; i < n; i++) {
        uint16_t dec = 0;
        nc_tcq_candidates((double)w[pos ? pos[i] : i], qscale, dscale, &cand);
        tmp = prev;
        prev = curr;
        curr = tmp;
        for (p = 0; p < 8; p++) {
            const rd_ctx *store = prev->ctx + (size_t)p * m.size;
            const int q = p & 1;
            const int32_t k0 = cand.level[3 * q], k2 = cand.level[2 - q];
            const uint32_t neg = k0 < 0;
            const uint32_t mag0 = neg ? (uint32_t)0 - (uint32_t)k0 : (uint32_t)k0;
            const uint32_t mag2 = neg ? (uint32_t)0 - (uint32_t)k2 : (uint32_t)k2;
            /* both candidates are non-zero, of the weight's sign, one magnitude apart */
            if (mag0 + 1 == mag2) {
                rd_bits_pair(&m, store, mag0, neg, p, prev->previous[p], &rates[p][0], &rates[p][2]);
            } else if (mag2 + 1 == mag0) {
                rd_bits_pair(&m, store, mag2, neg, p, prev->previous[p], &rates[p][2], &rates[p][0]);
            } else { /* not reached (see nc_tcq_candidates); kept exact all the same */
                rates[p][0] = rd_bits(&m, store, k0, p, prev->previous[p]);
                rates[p][2] = rd_bits(&m, store, k2, p, prev->previous[p]);
            }
            rates[p][1] = rd_bits(&m, store, 0, p, prev->previous[p]);
        }
        for (s = 0; s < 8; s++) {
            double min_cost = DBL_MAX;
            int chosen = 0, b;
            const rd_branch *bb;
            int32_t k;
            for (b = 0; b < 3; b++) {
                const rd_branch *x = &br[s][b];
                const double cost = prev->cost[x->prev] + cand.dist[x->cand] + (double)rates[x->prev][x->rate];
                if (cost < min_cost) {
                    min_cost = cost;
                    chosen = b;
                }
            }
            dec |= (uint16_t)(chosen << (2 * s));
            bb = &br[s][chosen];
            k = cand.level[bb->cand];
            memcpy(curr->ctx + (size_t)s * m.size, prev->ctx + (size_t)bb->prev * m.size, m.size * sizeof(rd_ctx));
            rd_update(&m, curr->ctx + (size_t)s * m.size, k, s, curr->previous[s]);
            curr->previous[s] = k;
            curr->cost[s] = min_cost;
        }
        decision[i] = dec;
    }
    best = 0;
    for (s = 1; s < 8; s++) {
        if (curr->cost[s] < curr->cost[best]) {
            best = s;
        }
    }
    s = best;
    for (i = n; i-- > 0;) {
        const uint64_t at = pos ? pos[i] : i;
        const rd_branch *bb = &br[s][(decision[i] >> (2 * s)) & 3];
        s = bb->prev;
        levels[at] = nc_tcq_level((double)w[at], qscale, bb->cand, s);
    }
    free(stores);
    free(decision);
    return 1;
}
