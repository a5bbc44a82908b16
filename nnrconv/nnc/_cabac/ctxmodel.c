/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Context models: the SBMP probability estimator, its nine parameter sets, the encoder-side
 * parameter-set optimiser, and helpers shared by encoder and decoder. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cabac.h"

/* Adaptation step by quantized state: 2512 down to 720 in steps of 224, 560..272 in steps of
 * 96, 208..80 in steps of 64, then 64 and a final 0 (clause 9.3.4.3). */
const int16_t nc_step_table[32] = {
    2512, 2288, 2064, 1840, 1616, 1392, 1168, 944, 720, 560, 464, 368, 272, 208, 144, 80,
    64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 64, 0,
};

/* Left shifts that bring a range in [2, 511] back to [256, 511], by range. */
const uint8_t nc_renorm_table[512] = {
    0, 8, 7, 7, 6, 6, 6, 6, 5, 5, 5, 5, 5, 5, 5, 5, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
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
    c->set = (uint16_t)set;
    c->n0 = nc_bnext0[nc_param_sets[set][0]][0];
    c->n1 = nc_bnext1[nc_param_sets[set][1] - 4][0];
    nc_ctx_reset(c);
}

void nc_ctx_reset(nc_ctx *c)
{
    const int s = nc_param_sets[c->set][2];
    const int s0 = nc_param_sets[c->set][3];
    c->a = (uint16_t)(s0 + 128);
    c->b = (uint16_t)(s - 16 * s0 + 2048);
    c->row = &nc_lps_rows[(s >> 7) + 32];
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

/* ---- parameter-set optimisation over a recorded bin sequence ----------------------------------
 *
 * The bins a context sees do not depend on its parameter set, only their estimated costs do, so
 * the encoder records each context's bins once (NC_OPT_RESET marks a block-row restart) and the
 * nine candidate sets are then run over that sequence here, all in one pass (eighteen
 * independent state chains per bin).  The estimator's updates are precomputed as full transition tables
 * (new S0 by S0, new S1 by S1, per shift and bin), so one bin under one set costs two table
 * loads and one rate load.  The sums equal those of the per-bin estimator nc_ctx_opt_code. */

/* S0 lies in [-128, 127] and S1 in [-2048, 2047]: at the ends of those ranges the step is 0
 * (index 31 of nc_step_table) or pulls back towards the middle. */
int8_t nc_next0[4][2][256];   /* [SH0][bin][S0 + 128] */
int16_t nc_next1[3][2][4096]; /* [SH1 - 4][bin][S1 + 2048] */

static int opt_step_index(int x)
{
    int j = 16 + x;
    return j < 0 ? 0 : (j > 31 ? 31 : j);
}

nc_lps_row nc_lps_rows[64];

static void bnext_tables_init(void);

void nc_tables_init(void)
{
    int sh, bin, v, r;
    for (v = -32; v < 32; v++) {
        const int q = (v < 0 ? -v : v) & 31;
        for (r = 8; r < 16; r++) {
            const uint32_t lps = nc_lps_table[r - 8][q];
            const uint32_t n = nc_renorm_table[lps];
            nc_lps_rows[v + 32].lps[r] = (uint16_t)lps;
            nc_lps_rows[v + 32].aux[r] = (uint16_t)((lps << n) | (n << 9) | ((uint32_t)(v >= 0) << 12));
        }
    }
    for (sh = 0; sh < 4; sh++) {
        for (bin = 0; bin < 2; bin++) {
            const int d = bin ? 1 : -1;
            for (v = -128; v < 128; v++) {
                int nv = v + d * (nc_step_table[opt_step_index((d * v) >> 3)] >> (sh + 4));
                nc_next0[sh][bin][v + 128] = (int8_t)(nv < -128 ? -128 : (nv > 127 ? 127 : nv));
            }
        }
    }
    for (sh = 0; sh < 3; sh++) {
        for (bin = 0; bin < 2; bin++) {
            const int d = bin ? 1 : -1;
            for (v = -2048; v < 2048; v++) {
                int nv = v + d * (nc_step_table[opt_step_index((d * v) >> 7)] >> (sh + 4));
                nc_next1[sh][bin][v + 2048] = (int16_t)(nv < -2048 ? -2048 : (nv > 2047 ? 2047 : nv));
            }
        }
    }
    bnext_tables_init();
}

/* Rates are below 2^18, so 32-bit sums over this many bins cannot overflow. */
#define OPT_CHUNK 16384

/* Biased copies of the transition tables (contexts and nc_opt_eval): states are held as
 * unsigned indices A = S0 + 128 and B = S1 + 2048, so no sign extension is needed, the LPS row
 * (S >> 7) + 32 is (16 * A + B) >> 7 and the rate index 512 + (S >> 3) is (16 * A + B) >> 3
 * (4096 is a multiple of 128). */
uint8_t nc_bnext0[4][2][256];   /* [SH0][bin][A] -> new A */
uint16_t nc_bnext1[3][2][4096]; /* [SH1 - 4][bin][B] -> new B */
/* For nc_opt_eval, which holds 2 * A: opt_next0w[SH0][bin][A] = 2 * new A, read at byte offset
 * 2 * A; the rate index (16 * A + B) >> 3 is then 2 * A + (B >> 3). */
static uint16_t opt_next0w[4][2][256];

static void bnext_tables_init(void)
{
    int sh, bin, v;
    for (sh = 0; sh < 4; sh++) {
        for (bin = 0; bin < 2; bin++) {
            for (v = 0; v < 256; v++) {
                nc_bnext0[sh][bin][v] = (uint8_t)(nc_next0[sh][bin][v] + 128);
                opt_next0w[sh][bin][v] = (uint16_t)(2 * (nc_next0[sh][bin][v] + 128));
            }
        }
    }
    for (sh = 0; sh < 3; sh++) {
        for (bin = 0; bin < 2; bin++) {
            for (v = 0; v < 4096; v++) {
                nc_bnext1[sh][bin][v] = (uint16_t)(nc_next1[sh][bin][v] + 2048);
            }
        }
    }
}

/* Rates are below 2^18, so 32-bit sums over this many bins cannot overflow. */
#define OPT_CHUNK 16384

/* Three sets per pass over the sequence: with three the states, sums and table bases all stay
 * in registers (nine at once spill).  The groups share shifts where possible, so a pass needs
 * few distinct transition tables. */
#define OPT_INIT(j, k)                                                                          \
    do {                                                                                        \
        a##j = (size_t)(2 * (nc_param_sets[k][3] + 128));                                       \
        b##j = (size_t)(nc_param_sets[k][2] - 16 * nc_param_sets[k][3] + 2048);                 \
    } while (0)
#define OPT_BIN(j, k)                                                                           \
    do {                                                                                        \
        c##j += r[a##j + (b##j >> 3)];                                                          \
        a##j = *(const uint16_t *)((const char *)opt_next0w[nc_param_sets[k][0]][bin] + a##j);  \
        b##j = nc_bnext1[nc_param_sets[k][1] - 4][bin][b##j];                                   \
    } while (0)

static inline __attribute__((always_inline)) void opt_group(const uint8_t *bins, size_t n, uint64_t bits[9],
                                                           const int k0, const int k1, const int k2)
{
    size_t a0, b0, a1, b1, a2, b2;
    size_t t = 0;
    OPT_INIT(0, k0);
    OPT_INIT(1, k1);
    OPT_INIT(2, k2);
    while (t < n) {
        /* A segment free of NC_OPT_RESET and at most OPT_CHUNK bins long. */
        const size_t lim = n - t > OPT_CHUNK ? t + OPT_CHUNK : n;
        const uint8_t *rst = (const uint8_t *)memchr(bins + t, NC_OPT_RESET, lim - t);
        const size_t end = rst != NULL ? (size_t)(rst - bins) : lim;
        uint32_t c0 = 0, c1 = 0, c2 = 0;
        for (; t < end; t++) {
            const size_t bin = bins[t];
            const uint32_t *r = nc_rate[bin];
            OPT_BIN(0, k0);
            OPT_BIN(1, k1);
            OPT_BIN(2, k2);
        }
        bits[k0] += c0;
        bits[k1] += c1;
        bits[k2] += c2;
        if (rst != NULL) {
            OPT_INIT(0, k0);
            OPT_INIT(1, k1);
            OPT_INIT(2, k2);
            t++;
        }
    }
}

void nc_opt_eval(const uint8_t *bins, size_t n, uint64_t bits[9])
{
    opt_group(bins, n, bits, 0, 1, 2);
    opt_group(bins, n, bits, 4, 5, 6);
    opt_group(bins, n, bits, 3, 7, 8);
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
