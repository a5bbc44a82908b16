/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder, context-parameter-set search: which of the nine estimator parameter sets
 * each context uses is chosen, as NNCodec does, by recording the bins the tensor gives every
 * context (the rate-only binarization opt_weight) and evaluating their cost under each set
 * (nc_opt_eval_more, ctxmodel.c); the choices are then signalled (clause 9.3.2). */
#include <stdlib.h>

#include "encoder.h"

/* Bins recorded per context for the parameter-set choice (see nc_opt_eval_more).  Each value,
 * and each block-row restart, adds at most one bin to each context, so with room for `cap` bins
 * per context the records are evaluated every `cap` values or restarts: no bounds checks per
 * bin, and the records are still in cache when they are evaluated. */
typedef struct {
    uint8_t *buf;       /* nctx * cap */
    uint8_t **wp;       /* next write position per context */
    nc_opt_state *st;   /* evaluation state per context */
    uint64_t (*bits)[9];
    size_t nctx;
    size_t cap;
    size_t used;        /* values and restarts since the last evaluation */
} nc_recorder;

/* About 128 KiB of records whatever the number of contexts (ng up to 256 gives 1114): they stay
 * in L2 next to the evaluation tables (512 KiB measured slower). */
#define REC_BYTES ((size_t)1 << 17)

static int rec_init(nc_recorder *r, size_t nctx, uint64_t units, uint64_t (*bits)[9])
{
    size_t i, cap = REC_BYTES / nctx;
    if (cap < 256) {
        cap = 256;
    }
    if ((uint64_t)cap > units) {
        cap = (size_t)units; /* small tensors: no more than they can use */
    }
    r->nctx = nctx;
    r->cap = cap;
    r->used = 0;
    r->bits = bits;
    r->buf = (uint8_t *)malloc(nctx * cap);
    r->wp = (uint8_t **)malloc(nctx * sizeof(*r->wp));
    r->st = (nc_opt_state *)malloc(nctx * sizeof(*r->st));
    if (r->buf == NULL || r->wp == NULL || r->st == NULL) {
        return 0;
    }
    for (i = 0; i < nctx; i++) {
        r->wp[i] = r->buf + i * cap;
        nc_opt_state_init(&r->st[i]);
    }
    return 1;
}

static void rec_free(nc_recorder *r)
{
    free(r->buf);
    free(r->wp);
    free(r->st);
}

static __attribute__((noinline)) void rec_flush(nc_recorder *r)
{
    size_t i;
    for (i = 0; i < r->nctx; i++) {
        uint8_t *start = r->buf + i * r->cap;
        if (r->wp[i] != start) {
            nc_opt_eval_more(&r->st[i], start, (size_t)(r->wp[i] - start), r->bits[i]);
            r->wp[i] = start;
        }
    }
    r->used = 0;
}

/* Make room for one more value or restart. */
static inline void rec_reserve(nc_recorder *r)
{
    if (__builtin_expect(r->used == r->cap, 0)) {
        rec_flush(r);
    }
    r->used++;
}

#define REC(ci, bin) (*wp[ci]++ = (uint8_t)(bin))

/* Rate-only counterpart used to choose parameter sets: records the bins per context.  Like the
 * reference it ignores codebook limits, always codes the remainder terminator and skips the
 * bypass bits. */
static inline void opt_weight(uint8_t **wp, uint32_t ng, int32_t v, int state, int nb)
{
    int neg;
    uint32_t rem, n, i, ci;
    uint64_t base, log2;

    REC(NC_CTX_SIG + 3 * state + nb, v != 0);
    if (v == 0) {
        return;
    }
    neg = v < 0;
    REC(NC_CTX_SIGN + nb, neg);
    rem = (neg ? (uint32_t)0 - (uint32_t)v : (uint32_t)v) - 1;
    /* greater-than flags: min(rem, ng) ones, then a zero if rem < ng */
    n = rem < ng ? rem : ng;
    for (i = 0; i < n; i++) {
        REC(NC_CTX_GTX + 2 * i + neg, 1);
    }
    if (rem < ng) {
        REC(NC_CTX_GTX + 2 * n + neg, 0);
        return;
    }
    rem -= ng;
    ci = NC_CTX_REM(ng);
    if (rem == 0) {
        REC(ci, 0);
        return;
    }
    REC(ci, 1);
    base = 1;
    ci++;
    log2 = 1;
    while ((uint64_t)rem > base + ((uint64_t)1 << log2) - 1) {
        REC(ci, 1);
        base += (uint64_t)1 << log2;
        ci++;
        log2++;
    }
    REC(ci, 0);
}

/* Walk the scan over block rows [first, end) and record (and evaluate) the bins of every
 * context for the parameter-set choice; state and nb are the DQ state and the neighbour class
 * at the start of block row `first`.  Not inlined into its caller: the loop gets the registers
 * to itself (inlined, the search measured about 1% slower). */
static __attribute__((noinline)) void record_levels(nc_recorder *r, const int32_t *levels, const nc_tensor *t,
                                                    const uint8_t *skip, uint64_t first, uint64_t end, int state,
                                                    int nb)
{
    const uint64_t width = t->width;
    const uint32_t ng = t->num_gtx;
    uint8_t **const wp = r->wp;
    uint64_t x;
    size_t i;
    nc_scan sc;

    nc_scan_init(&sc, t, first, end);
    while (nc_scan_block_row(&sc)) {
        while (nc_scan_segment(&sc)) {
            const int32_t *row = levels + sc.y * width;
            const uint64_t bx = sc.x0, xe = sc.x1;
            if (skip != NULL && skip[sc.y]) {
                /* The reference advances the state by the full layer width per segment. */
                if (t->dq) {
                    state = nc_dq_skip((uint8_t)state, width);
                }
                continue;
            }
            for (x = bx; x < xe; x++) {
                int32_t v = row[x];
                int32_t k = t->dq ? nc_level_to_index(v, state) : v;
                rec_reserve(r);
                /* The reference estimates rates on the stored level, not on k. */
                opt_weight(wp, ng, v, state, nb);
                nb = nc_nb_class(v);
                if (t->dq) {
                    state = nc_dq_next[state][k & 1];
                }
            }
        }
        if (nc_scan_more_rows(&sc)) {
            /* End of a block row: the estimators restart (the neighbour does not). */
            rec_reserve(r);
            for (i = 0; i < r->nctx; i++) {
                REC(i, NC_OPT_RESET);
            }
        }
    }
    rec_flush(r);
}

int nc_enc_record_levels(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, uint64_t first,
                         uint64_t end, int state, int nb, uint64_t (*bits)[9])
{
    const uint64_t bh = t->scan_order ? ((uint64_t)4 << t->scan_order) : t->rows;
    const uint64_t nbr = nc_block_rows(t);
    const uint64_t last = end < nbr ? end : nbr;
    const uint64_t y0 = first * bh, y1 = last * bh < t->rows ? last * bh : t->rows;
    nc_recorder r;
    int ok;
    /* values plus block-row restarts bound what any context can receive */
    ok = rec_init(&r, NC_CTX_COUNT(t->num_gtx), (y1 - y0) * t->width + (last - first), bits);
    if (ok) {
        record_levels(&r, levels, t, skip, first, end, state, nb);
    }
    rec_free(&r);
    return ok;
}

/* Cheapest set; a non-default set costs 3 extra bits for its index. Ties keep the lower index. */
static int best_set(const uint64_t bits[9])
{
    int i, best = 0;
    uint64_t min_bits = bits[0];
    for (i = 1; i < 9; i++) {
        uint64_t b = bits[i] + (uint64_t)3 * 32768;
        if (b < min_bits) {
            best = i;
            min_bits = b;
        }
    }
    return best;
}

static void signal_set(nc_encoder *e, nc_ctx *ctx, const uint64_t (*opt)[9], uint32_t num_gtx,
                       uint32_t i, int coded)
{
    int best = 0;
    if (coded) {
        best = best_set(opt[i]);
        enc_bin(e, best != 0, &ctx[NC_CTX_PARAM_FLAG(num_gtx)]);
        if (best != 0) {
            nc_enc_bypass_bits(e, (uint32_t)(best - 1), 3);
        }
    }
    nc_ctx_init(&ctx[i], best);
}

/* Context-parameter signalling (clause 9.3.2, "shift parameter ids"); the TCA groups when the
 * tensor has a base, the HDSP group when hist_dep_sig_prob_enabled_flag is 1. */
void nc_enc_signal_sets(nc_encoder *e, const nc_tensor *t, const uint64_t (*opt)[9], int tca, int hdsp)
{
    nc_ctx *ctx = e->ctx;
    const uint32_t ng = t->num_gtx;
    const uint32_t cbs = t->cb_size, zo = t->cb_zero;
    int64_t max_abs, level;
    uint32_t i, a;
    int sign_coded;

    for (i = 0; i < (t->dq ? 24u : 3u); i++) {
        signal_set(e, ctx, opt, ng, NC_CTX_SIG + i, cbs != 1);
    }
    for (i = 0; tca && i < (t->dq ? 16u : 2u); i++) {
        signal_set(e, ctx, opt, ng, NC_CTX_SIG_TCA + i, cbs != 1);
    }
    for (i = 0; hdsp && i < (t->dq ? 8u : 1u); i++) {
        signal_set(e, ctx, opt, ng, NC_CTX_SIG_HDSP + i, cbs != 1);
    }
    sign_coded = !(cbs > 0 && (zo == 0 || zo == cbs - 1)) && cbs != 1;
    for (a = 0; a < (tca ? 5u : 3u); a++) {
        signal_set(e, ctx, opt, ng, NC_CTX_SIGN + a, sign_coded);
    }
    max_abs = cbs > 0 ? (int64_t)(zo > cbs - 1 - zo ? zo : cbs - 1 - zo) : NC_UNLIMITED;
    for (a = 0; a < 2 * ng; a++) {
        signal_set(e, ctx, opt, ng, NC_CTX_GTX + a, max_abs == NC_UNLIMITED || (int64_t)a < max_abs * 2);
    }
    for (a = 2 * ng; tca && a < 4 * ng; a++) {
        /* the reference's bound for the TCA half, (max_abs - 1) * 2 + 2N */
        signal_set(e, ctx, opt, ng, NC_CTX_GTX + a,
                   max_abs == NC_UNLIMITED || (int64_t)a < (max_abs - 1) * 2 + 2 * (int64_t)ng);
    }
    level = (int64_t)ng - 1;
    for (a = 0; a < 31; a++) {
        level += (int64_t)1 << a;
        signal_set(e, ctx, opt, ng, NC_CTX_REM(ng) + a, max_abs == NC_UNLIMITED || level < max_abs);
    }
}
