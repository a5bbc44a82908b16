/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder, levels: the binarization of a quantization index (or codebook index) into
 * significance, sign, greater-than flags and an Exp-Golomb remainder (clause 9.3.3), and the scan
 * loop that codes a tensor's levels with it.  The common case (no codebook, no incremental
 * contexts) has its own inlined binarization on the engine state held in registers. */
#include <stddef.h>
#include <stdint.h>

#include "encoder.h"

/* Remainder |k| - (N + 1): context-coded unary prefix of group sizes 1, 2, 4, ... then the
 * offset in the last group as bypass bits.  rem_max limits the prefix for codebooks. */
static void enc_remainder(nc_encoder *e, nc_ctx *ctx, uint32_t num_gtx, uint32_t value,
                          int64_t rem_max)
{
    uint32_t ci = NC_CTX_REM(num_gtx);
    int64_t base = 0;
    uint32_t log2 = 0;
    if (!(rem_max == NC_UNLIMITED || rem_max > base)) {
        return;
    }
    if (value == 0) {
        enc_bin(e, 0, &ctx[ci]);
        return;
    }
    enc_bin(e, 1, &ctx[ci]);
    base = 1;
    ci++;
    log2 = 1;
    while ((int64_t)value > base + ((int64_t)1 << log2) - 1 &&
           (rem_max == NC_UNLIMITED || rem_max >= base + ((int64_t)1 << log2))) {
        enc_bin(e, 1, &ctx[ci]);
        base += (int64_t)1 << log2;
        ci++;
        log2++;
    }
    if (rem_max == NC_UNLIMITED || rem_max >= base + ((int64_t)1 << log2)) {
        enc_bin(e, 0, &ctx[ci]);
    }
    nc_enc_bypass_bits(e, (uint32_t)((int64_t)value - base), log2);
}

/* One quantization index k: sig, sign, greater-than flags, remainder. nb = neighbour class. */
void nc_enc_weight(nc_encoder *e, nc_ctx *ctx, const nc_tensor *t, int32_t k, int state, int nb, int32_t b,
                   int h)
{
    int neg;
    int64_t max_abs;
    uint32_t rem, n;
    int flag;
    const int cb = t->profile == 1 && t->cb_size > 0;

    if (t->cb_size == 1 && t->profile == 1) {
        return;
    }
    enc_bin(e, k != 0, &ctx[nc_sig_ctx_x(state, nb, b, h)]);
    if (k == 0) {
        return;
    }
    neg = k < 0;
    max_abs = cb ? (neg ? (int64_t)t->cb_zero : (int64_t)t->cb_size - t->cb_zero - 1) : NC_UNLIMITED;
    if (!(t->cb_size > 0 && (t->cb_zero == 0 || t->cb_zero == t->cb_size - 1)) || t->profile == 0) {
        enc_bin(e, neg, &ctx[nc_sign_ctx_x(nb, b)]);
    }
    if (max_abs == 1) {
        return;
    }
    rem = (neg ? (uint32_t)0 - (uint32_t)k : (uint32_t)k) - 1;
    if (!(max_abs == NC_UNLIMITED || max_abs > 1)) {
        return;
    }
    flag = rem ? 1 : 0;
    enc_bin(e, flag, &ctx[nc_gtx_ctx_x(t->num_gtx, 0, neg, b)]);
    n = 1;
    while (flag && n < t->num_gtx && (max_abs == NC_UNLIMITED || max_abs > (int64_t)n + 1)) {
        rem--;
        flag = rem ? 1 : 0;
        enc_bin(e, flag, &ctx[nc_gtx_ctx_x(t->num_gtx, n, neg, b)]);
        n++;
    }
    if (max_abs != NC_UNLIMITED && max_abs == (int64_t)n + 1) {
        rem--;
        n++;
        flag = 0;
    }
    if (flag && (max_abs == NC_UNLIMITED || max_abs > (int64_t)n + 1)) {
        rem--;
        enc_remainder(e, ctx, t->num_gtx, rem,
                      max_abs == NC_UNLIMITED ? NC_UNLIMITED : max_abs - ((int64_t)n + 1));
    }
}

/* nc_enc_weight without codebook limits or incremental contexts, on the engine state in registers. */
static inline void fast_weight(nc_encoder *e, enc_state *s, nc_ctx *ctx, uint32_t ng, int32_t k,
                               int state, int nb)
{
    int neg;
    uint32_t rem, n, ci, log2, base;

    fast_bin(e, s, k != 0, &ctx[NC_CTX_SIG + 3 * state + nb]);
    if (k == 0) {
        return;
    }
    neg = k < 0;
    fast_bin(e, s, neg, &ctx[NC_CTX_SIGN + nb]);
    rem = (neg ? (uint32_t)0 - (uint32_t)k : (uint32_t)k) - 1;
    /* greater-than flags: min(rem, ng) ones, then a zero if rem < ng */
    n = rem < ng ? rem : ng;
    for (ci = 0; ci < n; ci++) {
        fast_bin(e, s, 1, &ctx[NC_CTX_GTX + 2 * ci + neg]);
    }
    if (rem < ng) {
        fast_bin(e, s, 0, &ctx[NC_CTX_GTX + 2 * ci + neg]);
        return;
    }
    rem -= ng;
    ci = NC_CTX_REM(ng);
    if (rem == 0) {
        fast_bin(e, s, 0, &ctx[ci]);
        return;
    }
    fast_bin(e, s, 1, &ctx[ci]);
    base = 1;
    ci++;
    log2 = 1;
    while ((uint64_t)rem > (uint64_t)base + ((uint64_t)1 << log2) - 1) {
        fast_bin(e, s, 1, &ctx[ci]);
        base += (uint32_t)1 << log2;
        ci++;
        log2++;
    }
    fast_bin(e, s, 0, &ctx[ci]);
    fast_bypass_bits(e, s, rem - base, log2);
}

/* The scan loop of nc_encode_tensor (and of each span on its thread). */
void nc_enc_code_levels(nc_encoder *e, const int32_t *levels, const nc_tensor *t, const uint8_t *skip,
                        uint64_t first, uint64_t end, int state)
{
    const uint64_t width = t->width;
    const uint32_t ng = t->num_gtx;
    const size_t nctx = NC_CTX_COUNT(ng);
    const int plain = t->cb_size == 0 || t->profile == 0;
    nc_ctx *const ctx = e->ctx;
    uint64_t x;
    int nb = 0;
    size_t i;
    enc_state s;
    nc_scan sc;

    s.low = e->low;
    s.range = e->range;
    s.bits_left = e->bits_left;
    nc_scan_init(&sc, t, first, end);
    while (nc_scan_block_row(&sc)) {
        while (nc_scan_segment(&sc)) {
            const int32_t *row = levels + sc.y * width;
            const uint64_t bx = sc.x0, xe = sc.x1;
            if (skip != NULL && skip[sc.y]) {
                if (t->dq) {
                    state = nc_dq_skip((uint8_t)state, width);
                }
                continue;
            }
            if (!plain) {
                /* codebook limits: the general (slow) binarization on the encoder object */
                e->low = s.low;
                e->range = s.range;
                e->bits_left = s.bits_left;
                for (x = bx; x < xe; x++) {
                    int32_t k = t->dq ? nc_level_to_index(row[x], state) : row[x];
                    nc_enc_weight(e, ctx, t, k, t->dq ? state : 0, nb, 0, 0);
                    nb = nc_nb_class(k);
                    if (t->dq) {
                        state = nc_dq_next[state][k & 1];
                    }
                }
                s.low = e->low;
                s.range = e->range;
                s.bits_left = e->bits_left;
            } else if (!t->dq) {
                for (x = bx; x < xe; x++) {
                    int32_t v = row[x];
                    fast_weight(e, &s, ctx, ng, v, 0, nb);
                    nb = nc_nb_class(v);
                }
            } else {
                for (x = bx; x < xe; x++) {
                    int32_t k = nc_level_to_index(row[x], state);
                    fast_weight(e, &s, ctx, ng, k, state, nb);
                    nb = nc_nb_class(k);
                    state = nc_dq_next[state][k & 1];
                }
            }
        }
        if (nc_scan_more_rows(&sc)) {
            /* End of a block row: contexts and the neighbour restart, and range 256 lets a
             * decoder enter here. */
            for (i = 0; i < nctx; i++) {
                nc_ctx_reset(&ctx[i]);
            }
            nb = 0;
            s.range = 256;
        }
    }
    e->low = s.low;
    e->range = s.range;
    e->bits_left = s.bits_left;
}
