/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Context models: the SBMP probability estimator, its nine parameter sets, the encoder-side
 * parameter-set optimiser, and helpers shared by encoder and decoder. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
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

int nc_ctx_reserve(nc_ctx **ctx, size_t *cap, uint32_t num_gtx, nc_status *st)
{
    const size_t need = NC_CTX_COUNT(num_gtx);
    if (*cap < need) {
        nc_ctx *c = (nc_ctx *)realloc(*ctx, need * sizeof(nc_ctx));
        if (c == NULL) {
            return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for context models");
        }
        *ctx = c;
        *cap = need;
    }
    return NC_OK;
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
 * nine candidate sets are then run over that sequence here.  The estimator's updates are
 * precomputed as full transition tables (new S0 by S0, new S1 by S1, per shift and bin), so one
 * bin under one set costs two table loads and one rate load; sets whose chains have merged or
 * frozen share or skip them (see opt_segment).  The sums equal those of the per-bin estimator
 * nc_ctx_opt_code. */

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
uint16_t nc_dec_mps_range[64][256];
nc_dec_trans_tables nc_dec_trans;

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
        /* the decoder's renormalised range after an MPS, by row and range - 256 */
        for (r = 256; r < 512; r++) {
            const uint32_t rmps = (uint32_t)r - nc_lps_table[(r >> 5) & 7][q];
            nc_dec_mps_range[v + 32][r - 256] = (uint16_t)(rmps < 256 ? 2 * rmps : rmps);
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
    for (sh = 0; sh < 4; sh++) {
        for (bin = 0; bin < 2; bin++) {
            for (v = 0; v < 256; v++) {
                nc_dec_trans.t0[512 * sh + 256 * bin + v] = (uint16_t)(512 * sh + nc_bnext0[sh][bin][v]);
            }
        }
    }
    for (sh = 0; sh < 3; sh++) {
        for (bin = 0; bin < 2; bin++) {
            for (v = 0; v < 4096; v++) {
                nc_dec_trans.t1[8192 * sh + 4096 * bin + v] = (uint16_t)(8192 * sh + nc_bnext1[sh][bin][v]);
            }
        }
    }
}

/* Biased copies of the transition tables (contexts and nc_opt_eval): states are held as
 * unsigned indices A = S0 + 128 and B = S1 + 2048, so no sign extension is needed, the LPS row
 * (S >> 7) + 32 is (16 * A + B) >> 7 and the rate index 512 + (S >> 3) is (16 * A + B) >> 3
 * (4096 is a multiple of 128). */
uint8_t nc_bnext0[4][2][256];   /* [SH0][bin][A] -> new A */
uint16_t nc_bnext1[3][2][4096]; /* [SH1 - 4][bin][B] -> new B */
/* nc_opt_eval's tables, one block per bin so that a single base register, chosen once per bin,
 * addresses all of them (the evaluation loops are short of registers).  States are held as a =
 * 2 * A and b = B: n0[SH0] read at byte offset a gives 2 * new A, and the rate index
 * (16 * A + B) >> 3 is a + (B >> 3).  The rates come twice, as is and shifted up by 32 bits, so
 * one 64-bit register can sum the costs of two sets. */
typedef struct {
    uint16_t n0[4][256];   /* [SH0][A] -> 2 * new A */
    uint16_t n1[3][4096];  /* [SH1 - 4][B] -> new B */
    uint64_t rate[1024];   /* nc_rate[bin] */
    uint64_t rate_hi[1024]; /* nc_rate[bin] << 32 */
} opt_table;
/* Padded to a power of two so the block of a bin is found with a shift. */
#define OPT_TABLE_SHIFT 16
typedef union {
    opt_table t;
    uint8_t pad[(size_t)1 << OPT_TABLE_SHIFT];
} opt_table_slot;
static opt_table_slot opt_tab[2];

static void bnext_tables_init(void)
{
    int sh, bin, v;
    for (sh = 0; sh < 4; sh++) {
        for (bin = 0; bin < 2; bin++) {
            for (v = 0; v < 256; v++) {
                nc_bnext0[sh][bin][v] = (uint8_t)(nc_next0[sh][bin][v] + 128);
                opt_tab[bin].t.n0[sh][v] = (uint16_t)(2 * (nc_next0[sh][bin][v] + 128));
            }
        }
    }
    for (sh = 0; sh < 3; sh++) {
        for (bin = 0; bin < 2; bin++) {
            for (v = 0; v < 4096; v++) {
                nc_bnext1[sh][bin][v] = (uint16_t)(nc_next1[sh][bin][v] + 2048);
                opt_tab[bin].t.n1[sh][v] = nc_bnext1[sh][bin][v];
            }
        }
    }
    for (bin = 0; bin < 2; bin++) {
        for (v = 0; v < 1024; v++) {
            opt_tab[bin].t.rate[v] = nc_rate[bin][v];
            opt_tab[bin].t.rate_hi[v] = (uint64_t)nc_rate[bin][v] << 32;
        }
    }
}

/* Rates are below 2^18, so 32-bit sums over this many bins cannot overflow. */
#define OPT_CHUNK 16384

/* Estimator states of the nine sets while a sequence is evaluated: a = 2 * A and b = B (see
 * opt_table). */
typedef nc_opt_state opt_states;

void nc_opt_state_init(nc_opt_state *s)
{
    int k;
    for (k = 0; k < 9; k++) {
        s->a[k] = (size_t)(2 * (nc_param_sets[k][3] + 128));
        s->b[k] = (size_t)(nc_param_sets[k][2] - 16 * nc_param_sets[k][3] + 2048);
    }
}

#define OPT_AI static inline __attribute__((always_inline))
#define OPT_T(bin) (&((const opt_table_slot *)((const char *)opt_tab + ((size_t)(bin) << OPT_TABLE_SHIFT)))->t)
#define OPT_N0(T, sh0, a) (*(const uint16_t *)((const char *)(T)->n0[sh0] + (a)))
#define OPT_N1(T, sh1, b) ((T)->n1[(sh1) - 4][b])
#define OPT_R(T, a, b) ((T)->rate[(a) + ((b) >> 3)])
#define OPT_RH(T, a, b) ((T)->rate_hi[(a) + ((b) >> 3)])

/* Estimator chains over bins[t .. end), each with its own S0 (a) and S1 (b) state, adding each
 * chain's cost to c[k]; the sets, and so the shifts, are compile-time constants after inlining.
 * Three chains at most per loop: then the states, sums and table bases all stay in registers. */
OPT_AI void opt_run1(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9],
                     const int k0)
{
    const int p0 = nc_param_sets[k0][0], q0 = nc_param_sets[k0][1];
    size_t a0 = s->a[k0], b0 = s->b[k0];
    uint32_t c0 = 0;
    for (; t < end; t++) {
        const opt_table *T = OPT_T(bins[t]);
        c0 += (uint32_t)OPT_R(T, a0, b0);
        a0 = OPT_N0(T, p0, a0);
        b0 = OPT_N1(T, q0, b0);
    }
    s->a[k0] = a0;
    s->b[k0] = b0;
    c[k0] += c0;
}

OPT_AI void opt_run2(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9],
                     const int k0, const int k1)
{
    const int p0 = nc_param_sets[k0][0], q0 = nc_param_sets[k0][1];
    const int p1 = nc_param_sets[k1][0], q1 = nc_param_sets[k1][1];
    size_t a0 = s->a[k0], b0 = s->b[k0], a1 = s->a[k1], b1 = s->b[k1];
    uint64_t c01 = 0;
    for (; t < end; t++) {
        const opt_table *T = OPT_T(bins[t]);
        c01 += OPT_R(T, a0, b0) + OPT_RH(T, a1, b1);
        a0 = OPT_N0(T, p0, a0);
        b0 = OPT_N1(T, q0, b0);
        a1 = OPT_N0(T, p1, a1);
        b1 = OPT_N1(T, q1, b1);
    }
    s->a[k0] = a0;
    s->b[k0] = b0;
    s->a[k1] = a1;
    s->b[k1] = b1;
    c[k0] += (uint32_t)c01;
    c[k1] += (uint32_t)(c01 >> 32);
}

/* With share_b the first two chains have the same S1 shift and state, so one S1 chain serves
 * both. */
OPT_AI void opt_run3(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9],
                     const int k0, const int k1, const int k2, const int share_b)
{
    const int p0 = nc_param_sets[k0][0], q0 = nc_param_sets[k0][1];
    const int p1 = nc_param_sets[k1][0], q1 = nc_param_sets[k1][1];
    const int p2 = nc_param_sets[k2][0], q2 = nc_param_sets[k2][1];
    size_t a0 = s->a[k0], b0 = s->b[k0], a1 = s->a[k1], b1 = s->b[k1], a2 = s->a[k2], b2 = s->b[k2];
    uint64_t c01 = 0, c2 = 0;
    for (; t < end; t++) {
        const opt_table *T = OPT_T(bins[t]);
        c01 += OPT_R(T, a0, b0) + OPT_RH(T, a1, b1);
        c2 += OPT_R(T, a2, b2);
        a0 = OPT_N0(T, p0, a0);
        a1 = OPT_N0(T, p1, a1);
        a2 = OPT_N0(T, p2, a2);
        b0 = OPT_N1(T, q0, b0);
        b1 = share_b ? b0 : OPT_N1(T, q1, b1);
        b2 = OPT_N1(T, q2, b2);
    }
    s->a[k0] = a0;
    s->b[k0] = b0;
    s->a[k1] = a1;
    s->b[k1] = b1;
    s->a[k2] = a2;
    s->b[k2] = b2;
    c[k0] += (uint32_t)c01;
    c[k1] += (uint32_t)(c01 >> 32);
    c[k2] += (uint32_t)c2;
}

/* Sets 3, 7, 8 once all three share one S1 state (they share its shift): one S1 chain, and no
 * S0 chain for set 7, nor for set 8 if frozen8 (their S0 states are fixed points, see
 * opt_frozen). */
OPT_AI void opt_run_mixed(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9],
                          const int frozen8)
{
    const int p3 = nc_param_sets[3][0], p8 = nc_param_sets[8][0], q = nc_param_sets[3][1];
    size_t a3 = s->a[3], a8 = s->a[8], b = s->b[3];
    const size_t a7 = s->a[7];
    uint64_t c37 = 0, c8 = 0;
    for (; t < end; t++) {
        const opt_table *T = OPT_T(bins[t]);
        c37 += OPT_R(T, a3, b) + OPT_RH(T, a7, b);
        c8 += OPT_R(T, a8, b);
        a3 = OPT_N0(T, p3, a3);
        if (!frozen8) {
            a8 = OPT_N0(T, p8, a8);
        }
        b = OPT_N1(T, q, b);
    }
    s->a[3] = a3;
    s->a[8] = a8;
    s->b[3] = s->b[7] = s->b[8] = b;
    c[3] += (uint32_t)c37;
    c[7] += (uint32_t)(c37 >> 32);
    c[8] += (uint32_t)c8;
}

/* Two sets with the same shifts that reach the same state stay equal (same transitions, same
 * bins) up to the next restart, so one chain serves both; and an S0 state that both bins map to
 * itself (S0 in [-8, 8] with SH0 = 3: the step is 0) needs no chain.  The evaluation checks for
 * both every OPT_BLOCK bins.  On real data most bins see merged chains: sets 4, 5, 6 merge early,
 * 0 with 1 or 1 with 2 often, the S1 state of set 8 joins that of 3 and 7 (which start equal),
 * and S0 of set 7 starts frozen. */
#define OPT_BLOCK 256

static inline int opt_same(const opt_states *s, int i, int j)
{
    return s->a[i] == s->a[j] && s->b[i] == s->b[j];
}

static inline int opt_frozen(const opt_states *s, int k)
{
    const int p = nc_param_sets[k][0];
    return OPT_N0(OPT_T(0), p, s->a[k]) == s->a[k] && OPT_N0(OPT_T(1), p, s->a[k]) == s->a[k];
}

/* Representatives of three same-shift sets k, k + 1, k + 2: bit i set if set k + i runs its own
 * chain; fol[i] is the set whose chain k + i follows. */
static inline unsigned opt_reps(const opt_states *s, int k, int fol[3])
{
    const int m01 = opt_same(s, k, k + 1), m12 = opt_same(s, k + 1, k + 2);
    fol[0] = k;
    fol[1] = m01 ? k : k + 1;
    fol[2] = m12 ? fol[1] : (opt_same(s, k, k + 2) ? k : k + 2);
    return 1u | (fol[1] == k + 1 ? 2u : 0u) | (fol[2] == k + 2 ? 4u : 0u);
}

/* The usual state after the first few blocks, in one loop: sets 0, 1, 2 down to one or two
 * chains (kA0 and kA1 >= 0), 4, 5, 6 down to one (kB), and 3, 7, 8 sharing one S1 chain with
 * S0 of 7 (and of 8 if frozen8) frozen.  One loop instead of two halves the serial
 * load-to-load latency per bin, which is what bounds these loops. */
OPT_AI void opt_run_fused(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9],
                          const int kA0, const int kA1, const int kB, const int frozen8)
{
    const int pA0 = nc_param_sets[kA0][0], qA0 = nc_param_sets[kA0][1];
    const int pB = nc_param_sets[kB][0], qB = nc_param_sets[kB][1];
    const int p3 = nc_param_sets[3][0], p8 = nc_param_sets[8][0], q = nc_param_sets[3][1];
    const int kA1_ = kA1 >= 0 ? kA1 : kA0;
    const int pA1 = nc_param_sets[kA1_][0], qA1 = nc_param_sets[kA1_][1];
    size_t aA0 = s->a[kA0], bA0 = s->b[kA0], aA1 = s->a[kA1_], bA1 = s->b[kA1_];
    size_t aB = s->a[kB], bB = s->b[kB], a3 = s->a[3], a8 = s->a[8], b = s->b[3];
    const size_t a7 = s->a[7];
    /* cost sums two to a register: low half kA0 / 3 / 8, high half kA1 / kB / 7 */
    uint64_t cA = 0, cB3 = 0, c78 = 0;
    for (; t < end; t++) {
        const opt_table *T = OPT_T(bins[t]);
        cA += OPT_R(T, aA0, bA0);
        if (kA1 >= 0) {
            cA += OPT_RH(T, aA1, bA1);
        }
        cB3 += OPT_RH(T, aB, bB) + OPT_R(T, a3, b);
        c78 += OPT_RH(T, a7, b) + OPT_R(T, a8, b);
        aA0 = OPT_N0(T, pA0, aA0);
        bA0 = OPT_N1(T, qA0, bA0);
        if (kA1 >= 0) {
            aA1 = OPT_N0(T, pA1, aA1);
            bA1 = OPT_N1(T, qA1, bA1);
        }
        aB = OPT_N0(T, pB, aB);
        bB = OPT_N1(T, qB, bB);
        a3 = OPT_N0(T, p3, a3);
        if (!frozen8) {
            a8 = OPT_N0(T, p8, a8);
        }
        b = OPT_N1(T, q, b);
    }
    s->a[kA0] = aA0;
    s->b[kA0] = bA0;
    c[kA0] += (uint32_t)cA;
    if (kA1 >= 0) {
        s->a[kA1] = aA1;
        s->b[kA1] = bA1;
        c[kA1] += (uint32_t)(cA >> 32);
    }
    s->a[kB] = aB;
    s->b[kB] = bB;
    c[kB] += (uint32_t)(cB3 >> 32);
    s->a[3] = a3;
    s->a[8] = a8;
    s->b[3] = s->b[7] = s->b[8] = b;
    c[3] += (uint32_t)cB3;
    c[7] += (uint32_t)(c78 >> 32);
    c[8] += (uint32_t)c78;
}

/* Sets 0, 1, 2 (shifts 1, 4) and 4, 5, 6 (shifts 2, 6) over one block: their representatives run
 * together in one loop when there are at most three. */
OPT_AI void opt_groups(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9],
                       const unsigned ra, const unsigned rb)
{
    switch (ra * 8 + rb) {
    case 1 * 8 + 1:
        opt_run2(bins, t, end, s, c, 0, 4);
        return;
    case 1 * 8 + 3:
        opt_run3(bins, t, end, s, c, 0, 4, 5, 0);
        return;
    case 1 * 8 + 5:
        opt_run3(bins, t, end, s, c, 0, 4, 6, 0);
        return;
    case 3 * 8 + 1:
        opt_run3(bins, t, end, s, c, 0, 1, 4, 0);
        return;
    case 5 * 8 + 1:
        opt_run3(bins, t, end, s, c, 0, 2, 4, 0);
        return;
    default:
        break;
    }
    switch (ra) {
    case 1:
        opt_run1(bins, t, end, s, c, 0);
        break;
    case 3:
        opt_run2(bins, t, end, s, c, 0, 1);
        break;
    case 5:
        opt_run2(bins, t, end, s, c, 0, 2);
        break;
    default:
        opt_run3(bins, t, end, s, c, 0, 1, 2, 0);
        break;
    }
    switch (rb) {
    case 1:
        opt_run1(bins, t, end, s, c, 4);
        break;
    case 3:
        opt_run2(bins, t, end, s, c, 4, 5);
        break;
    case 5:
        opt_run2(bins, t, end, s, c, 4, 6);
        break;
    default:
        opt_run3(bins, t, end, s, c, 4, 5, 6, 0);
        break;
    }
}

/* One segment (no restart inside): blocks of OPT_BLOCK bins, each run with the fewest chains the
 * merges found at its start allow; followers take their leader's cost and state after each block.
 * Once nothing can merge or freeze any more the rest of the segment is one block. */
static void opt_segment(const uint8_t *bins, size_t t, size_t end, opt_states *s, uint32_t c[9])
{
    while (t < end) {
        int fa[3], fb[3], i;
        const unsigned ra = opt_reps(s, 0, fa), rb = opt_reps(s, 4, fb);
        /* sets 3, 7, 8: S1 shift 5 for all (3 and 7 start with the same S1 state), S0 shifts
         * 0, 3, 3 */
        const int b37 = s->b[3] == s->b[7];
        const int mixed = b37 && s->b[8] == s->b[3] && opt_frozen(s, 7);
        const int frozen8 = mixed && opt_frozen(s, 8);
        size_t stop = end - t > OPT_BLOCK ? t + OPT_BLOCK : end;
        uint32_t before[9];
        memcpy(before, c, sizeof(before));
        if (mixed && rb == 1 && (ra == 1 || ra == 3 || ra == 5)) {
            if (ra == 1 && frozen8) {
                stop = end;
                opt_run_fused(bins, t, stop, s, c, 0, -1, 4, 1);
            } else if (ra == 1) {
                opt_run_fused(bins, t, stop, s, c, 0, -1, 4, 0);
            } else if (frozen8) {
                opt_run_fused(bins, t, stop, s, c, 0, ra == 3 ? 1 : 2, 4, 1);
            } else {
                opt_run_fused(bins, t, stop, s, c, 0, ra == 3 ? 1 : 2, 4, 0);
            }
        } else {
            opt_groups(bins, t, stop, s, c, ra, rb);
            if (frozen8) {
                opt_run_mixed(bins, t, stop, s, c, 1);
            } else if (mixed) {
                opt_run_mixed(bins, t, stop, s, c, 0);
            } else {
                opt_run3(bins, t, stop, s, c, 3, 7, 8, b37);
            }
        }
        for (i = 1; i < 3; i++) {
            if (fa[i] != i) {
                c[i] += c[fa[i]] - before[fa[i]];
                s->a[i] = s->a[fa[i]];
                s->b[i] = s->b[fa[i]];
            }
            if (fb[i] != 4 + i) {
                c[4 + i] += c[fb[i]] - before[fb[i]];
                s->a[4 + i] = s->a[fb[i]];
                s->b[4 + i] = s->b[fb[i]];
            }
        }
        t = stop;
    }
}

void nc_opt_eval_more(nc_opt_state *s, const uint8_t *bins, size_t n, uint64_t bits[9])
{
    size_t t = 0;
    int k;
    while (t < n) {
        /* A segment free of NC_OPT_RESET and at most OPT_CHUNK bins long. */
        const size_t lim = n - t > OPT_CHUNK ? t + OPT_CHUNK : n;
        const uint8_t *rst = (const uint8_t *)memchr(bins + t, NC_OPT_RESET, lim - t);
        const size_t end = rst != NULL ? (size_t)(rst - bins) : lim;
        uint32_t c[9] = {0};
        opt_segment(bins, t, end, s, c);
        for (k = 0; k < 9; k++) {
            bits[k] += c[k];
        }
        t = end;
        if (rst != NULL) {
            nc_opt_state_init(s);
            t++;
        }
    }
}

void nc_opt_eval(const uint8_t *bins, size_t n, uint64_t bits[9])
{
    nc_opt_state s;
    nc_opt_state_init(&s);
    nc_opt_eval_more(&s, bins, n, bits);
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
