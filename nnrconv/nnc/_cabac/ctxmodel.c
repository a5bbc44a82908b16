/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Context models: the SBMP probability estimator, its nine parameter sets, the encoder-side
 * parameter-set optimiser, and helpers shared by encoder and decoder. */
#include <stdarg.h>
#include <stdio.h>

#include "cabac.h"

/* Adaptation step by quantized state: 2512 down to 720 in steps of 224, 560..272 in steps of
 * 96, 208..80 in steps of 64, then 64 and a final 0 (clause 9.3.4.3). */
const int16_t nc_step_table[32] = {
    2512, 2288, 2064, 1840, 1616, 1392, 1168, 944, 720, 560, 464, 368, 272, 208, 144, 80,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0,
};

/* Parameter sets selectable per context: SH0, SH1, initial S (= 16*S0 + S1), initial S0. */
const int16_t nc_param_sets[9][4] = {
    {1, 4, 0, 0},    {1, 4, -1310, -41}, {1, 4, 3039, 95},
    {0, 5, 0, 0},    {2, 6, 962, 30},    {2, 6, 3039, 95},
    {2, 6, -673, -21}, {3, 5, 0, 0},     {3, 5, 962, 30},
};

/* Next dependent-quantization state for parity 0 / parity 1 of the coded index. */
const uint8_t nc_dq_next[8][2] = {
    {0, 2}, {7, 5}, {1, 3}, {6, 4}, {2, 0}, {5, 7}, {3, 1}, {4, 6},
};

int nc_fail(nc_status *st, int code, uint64_t byte_offset, const char *fmt, ...)
{
    va_list ap;
    if (st->code != NC_OK) {
        return st->code; /* keep the first (innermost) failure */
    }
    st->code = code;
    st->byte_offset = byte_offset;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof(st->msg), fmt, ap);
    va_end(ap);
    return code;
}

void nc_ctx_init(nc_ctx *c, int set)
{
    c->set = (uint8_t)set;
    c->sh0 = (uint8_t)(nc_param_sets[set][0] + 4);
    c->sh1 = (uint8_t)nc_param_sets[set][1];
    nc_ctx_reset(c);
}

void nc_ctx_reset(nc_ctx *c)
{
    c->s = nc_param_sets[c->set][2];
    c->s0 = (int8_t)nc_param_sets[c->set][3];
}

void nc_ctx_opt_init(nc_ctx_opt *o)
{
    int i;
    nc_ctx_opt_reset(o);
    for (i = 0; i < 9; i++) {
        o->bits[i] = 0;
    }
}

void nc_ctx_opt_reset(nc_ctx_opt *o)
{
    int i;
    for (i = 0; i < 9; i++) {
        o->s[i] = nc_param_sets[i][2];
        o->s0[i] = nc_param_sets[i][3];
    }
}

/* Charge the estimated cost of `bin` to every candidate set, then adapt each.  The shifts are
 * spelled out per set so the compiler can unroll with constant shifts (this is the hot loop of
 * the encoder's parameter optimisation). */
#define NC_OPT_STEP(i, sh0, sh1)                                                                 \
    do {                                                                                        \
        int s0 = o->s0[i];                                                                      \
        int s1 = o->s[i] - 16 * s0;                                                             \
        o->bits[i] += rate[512 + (o->s[i] >> 3)];                                               \
        s0 += d * (nc_step_table[16 + ((d * s0) >> 3)] >> (sh0));                                \
        s1 += d * (nc_step_table[16 + ((d * s1) >> 7)] >> (sh1));                                \
        o->s0[i] = s0;                                                                          \
        o->s[i] = s1 + 16 * s0;                                                                 \
    } while (0)

void nc_ctx_opt_code(nc_ctx_opt *o, int bin)
{
    const uint32_t *rate = bin ? nc_rate_one : nc_rate_zero;
    const int d = bin ? 1 : -1;
    /* (SH0 + 4, SH1) of nc_param_sets */
    NC_OPT_STEP(0, 5, 4);
    NC_OPT_STEP(1, 5, 4);
    NC_OPT_STEP(2, 5, 4);
    NC_OPT_STEP(3, 4, 5);
    NC_OPT_STEP(4, 6, 6);
    NC_OPT_STEP(5, 6, 6);
    NC_OPT_STEP(6, 6, 6);
    NC_OPT_STEP(7, 7, 5);
    NC_OPT_STEP(8, 7, 5);
}

/* Cheapest set; a non-default set costs 3 extra bits for its index. Ties keep the lower index. */
int nc_ctx_opt_best(const nc_ctx_opt *o)
{
    int i, best = 0;
    uint64_t min_bits = o->bits[0];
    for (i = 1; i < 9; i++) {
        uint64_t b = o->bits[i] + (uint64_t)3 * 32768;
        if (b < min_bits) {
            best = i;
            min_bits = b;
        }
    }
    return best;
}

uint8_t nc_dq_skip(uint8_t state, uint64_t n)
{
    /* Parity-0 transitions form cycles of length 1, 1, 2 and 4, so n mod 4 steps suffice. */
    uint64_t k = n & 3;
    while (k--) {
        state = nc_dq_next[state][0];
    }
    return state;
}

int nc_tensor_check(nc_tensor *t, nc_status *st)
{
    if (t->rows == 0 || t->width == 0) {
        return nc_fail(st, NC_ERR_VALUE, 0, "tensor has no elements (rows=%llu, width=%llu)",
                       (unsigned long long)t->rows, (unsigned long long)t->width);
    }
    if (t->rows > UINT64_MAX / t->width || t->rows * t->width > ((uint64_t)1 << 40)) {
        return nc_fail(st, NC_ERR_VALUE, 0, "tensor too large (rows=%llu, width=%llu)",
                       (unsigned long long)t->rows, (unsigned long long)t->width);
    }
    if (t->scan_order < 0 || t->scan_order > 4) {
        return nc_fail(st, NC_ERR_VALUE, 0, "scan_order %d is not in 0..4", t->scan_order);
    }
    if (t->profile != 0 && t->profile != 1) {
        return nc_fail(st, NC_ERR_VALUE, 0, "general_profile_idc %d is not 0 or 1", t->profile);
    }
    if (t->num_gtx < 1 || t->num_gtx > NC_MAX_GTX) {
        return nc_fail(st, NC_ERR_VALUE, 0, "number of greater-than flags %u is not in 1..%d",
                       t->num_gtx, NC_MAX_GTX);
    }
    if (t->cb_size > 0 && t->cb_zero >= t->cb_size) {
        return nc_fail(st, NC_ERR_VALUE, 0, "codebook zero offset %u outside codebook of size %u",
                       t->cb_zero, t->cb_size);
    }
    t->dq = t->dq ? 1 : 0;
    /* The matrix view has one row (or one column): there is nothing to block-scan. */
    if (t->width == 1 || t->rows == 1) {
        t->scan_order = 0;
    }
    if (t->profile == 0) {
        /* Profile 0 has no codebook-aware binarization, row skipping or history flags. */
        t->cb_size = 0;
        t->cb_zero = 0;
        t->row_skip = 0;
        t->parent_present = 0;
    }
    return NC_OK;
}
