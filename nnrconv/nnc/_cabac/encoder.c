/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder: M-coder arithmetic engine, level binarization, context-parameter-set
 * choice and signalling (ISO/IEC 15938-17 clause 9.3), bit-exact with NNCodec 2.1.3. */
#include <stdlib.h>
#include <string.h>

#include "cabac.h"

/* ---- byte output -------------------------------------------------------------------------- */

static void enc_push(nc_encoder *e, uint32_t byte)
{
    if (e->len == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 4096;
        uint8_t *nb = (uint8_t *)realloc(e->buf, ncap);
        if (nb == NULL) {
            e->oom = 1;
            return;
        }
        e->buf = nb;
        e->cap = ncap;
    }
    e->buf[e->len++] = (uint8_t)byte;
}

int nc_encoder_init(nc_encoder *e, size_t reserve)
{
    memset(e, 0, sizeof(*e));
    if (reserve < 64) {
        reserve = 64;
    }
    e->buf = (uint8_t *)malloc(reserve);
    if (e->buf == NULL) {
        return NC_ERR_NOMEM;
    }
    e->cap = reserve;
    e->low = 0;
    e->range = 510;
    e->bits_left = 23;
    e->num_buffered = 0;
    e->buffered = 0;
    return NC_OK;
}

void nc_encoder_free(nc_encoder *e)
{
    free(e->buf);
    free(e->ctx);
    free(e->opt);
    e->buf = NULL;
    e->ctx = NULL;
    e->opt = NULL;
}

/* Emit the settled byte above the 'bits_left' window; 0xFF bytes wait for a possible carry. */
static void enc_write_out(nc_encoder *e)
{
    uint32_t lead = e->low >> (24 - e->bits_left);
    e->bits_left += 8;
    e->low &= 0xffffffffu >> e->bits_left;
    if (lead == 0xff) {
        e->num_buffered++;
    } else if (e->num_buffered > 0) {
        uint32_t carry = lead >> 8;
        uint32_t byte = e->buffered + carry;
        e->buffered = lead & 0xff;
        enc_push(e, byte);
        byte = (0xff + carry) & 0xff;
        while (e->num_buffered > 1) {
            enc_push(e, byte);
            e->num_buffered--;
        }
    } else {
        e->num_buffered = 1;
        e->buffered = lead;
    }
}

static inline void enc_bin(nc_encoder *e, int bin, nc_ctx *c)
{
    uint32_t lps = nc_ctx_lps(c, e->range);
    e->range -= lps;
    if (bin == nc_ctx_mps(c)) {
        if (e->range < 256) {
            e->range <<= 1;
            e->low <<= 1;
            if (--e->bits_left < 12) {
                enc_write_out(e);
            }
        }
    } else {
        int n = nc_clz32(lps) - 23;
        e->low += e->range;
        e->range = lps << n;
        e->low <<= n;
        e->bits_left -= n;
        if (e->bits_left < 12) {
            enc_write_out(e);
        }
    }
    nc_ctx_update(c, bin);
}

static inline void enc_bypass(nc_encoder *e, int bin)
{
    e->low <<= 1;
    if (bin) {
        e->low += e->range;
    }
    if (--e->bits_left < 12) {
        enc_write_out(e);
    }
}

void nc_enc_bypass_bits(nc_encoder *e, uint32_t value, uint32_t num_bits)
{
    if (num_bits < 32) {
        value &= (((uint32_t)1 << num_bits) - 1);
    }
    while (num_bits > 8) {
        uint32_t pattern;
        num_bits -= 8;
        pattern = value >> num_bits;
        e->low = (e->low << 8) + e->range * pattern;
        value -= pattern << num_bits;
        e->bits_left -= 8;
        if (e->bits_left < 12) {
            enc_write_out(e);
        }
    }
    e->low = (e->low << num_bits) + e->range * value;
    e->bits_left -= (int32_t)num_bits;
    if (e->bits_left < 12) {
        enc_write_out(e);
    }
}

int nc_encoder_finish(nc_encoder *e, nc_status *st)
{
    uint32_t i, nbits;
    if (e->finished) {
        return nc_fail(st, NC_ERR_VALUE, 0, "encoder already finished");
    }
    e->finished = 1;
    /* terminating bin = 1 */
    e->range -= 2;
    e->low += e->range;
    e->low <<= 7;
    e->range = 2 << 7;
    e->bits_left -= 7;
    if (e->bits_left < 12) {
        enc_write_out(e);
    }
    /* resolve the carry into the buffered bytes */
    if (e->low >> (32 - e->bits_left)) {
        enc_push(e, e->buffered + 1);
        while (e->num_buffered > 1) {
            enc_push(e, 0x00);
            e->num_buffered--;
        }
        e->low -= (uint32_t)1 << (32 - e->bits_left);
    } else {
        if (e->num_buffered > 0) {
            enc_push(e, e->buffered);
        }
        while (e->num_buffered > 1) {
            enc_push(e, 0xff);
            e->num_buffered--;
        }
    }
    /* stop bit, then zero bits up to the byte boundary */
    e->low >>= 8;
    e->low <<= 1;
    e->low++;
    e->bits_left--;
    nbits = (uint32_t)(24 - e->bits_left);
    e->low <<= (32 - nbits);
    for (i = 0; i < nbits; i += 8) {
        enc_push(e, (e->low >> (24 - i)) & 0xff);
    }
    if (e->oom) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory while writing the CABAC payload");
    }
    return NC_OK;
}

/* ---- binarization ------------------------------------------------------------------------- */

#define NC_UNLIMITED INT64_C(-1)

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
static void enc_weight(nc_encoder *e, nc_ctx *ctx, const nc_tensor *t, int32_t k, int state,
                       int nb)
{
    int neg;
    int64_t max_abs;
    uint32_t rem, n;
    int flag;
    const int cb = t->profile == 1 && t->cb_size > 0;

    if (t->cb_size == 1 && t->profile == 1) {
        return;
    }
    enc_bin(e, k != 0, &ctx[NC_CTX_SIG + 3 * state + nb]);
    if (k == 0) {
        return;
    }
    neg = k < 0;
    max_abs = cb ? (neg ? (int64_t)t->cb_zero : (int64_t)t->cb_size - t->cb_zero - 1) : NC_UNLIMITED;
    if (!(t->cb_size > 0 && (t->cb_zero == 0 || t->cb_zero == t->cb_size - 1)) || t->profile == 0) {
        enc_bin(e, neg, &ctx[NC_CTX_SIGN + nb]);
    }
    if (max_abs == 1) {
        return;
    }
    rem = (neg ? (uint32_t)0 - (uint32_t)k : (uint32_t)k) - 1;
    if (!(max_abs == NC_UNLIMITED || max_abs > 1)) {
        return;
    }
    flag = rem ? 1 : 0;
    enc_bin(e, flag, &ctx[NC_CTX_GTX + neg]);
    n = 1;
    while (flag && n < t->num_gtx && (max_abs == NC_UNLIMITED || max_abs > (int64_t)n + 1)) {
        rem--;
        flag = rem ? 1 : 0;
        enc_bin(e, flag, &ctx[NC_CTX_GTX + 2 * n + neg]);
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

/* ---- tensor ------------------------------------------------------------------------------- */

static inline int nb_class(int32_t v)
{
    return v == 0 ? 0 : (v < 0 ? 1 : 2);
}

/* Quantization index from the stored level: level = 2k - sgn(k) * (state & 1). */
static inline int32_t level_to_index(int32_t v, int state)
{
    if (v != 0) {
        v += v < 0 ? -(state & 1) : (state & 1);
        v >>= 1;
    }
    return v;
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
static void signal_sets(nc_encoder *e, const nc_tensor *t, const uint64_t (*opt)[9], int tca, int hdsp)
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

static int row_is_zero(const int32_t *row, uint64_t width)
{
    uint64_t x;
    for (x = 0; x < width; x++) {
        if (row[x] != 0) {
            return 0;
        }
    }
    return 1;
}

/* ---- hot path: engine state in locals ----------------------------------------------------- *
 * The coding loops keep low / range / bits_left in a local struct whose address never escapes
 * (only the rare byte output goes through the nc_encoder), so they stay in registers. */

typedef struct {
    uint32_t low;
    uint32_t range;
    int32_t bits_left;
} enc_state;

static __attribute__((noinline)) void enc_flush(nc_encoder *e, enc_state *s)
{
    e->low = s->low;
    e->bits_left = s->bits_left;
    enc_write_out(e);
    s->low = e->low;
    s->bits_left = e->bits_left;
}

static inline void fast_bin(nc_encoder *e, enc_state *s, int bin, nc_ctx *c)
{
    /* mask arithmetic instead of ?: so the compiler keeps the MPS/LPS choice branch-free */
    const uint32_t r = s->range >> 5;
    const uint32_t lps = c->row->lps[r];
    const uint32_t aux = c->row->aux[r];
    const uint32_t rmps = s->range - lps;
    const int is_lps = bin != (int)NC_AUX_MPS(aux);
    const uint32_t mask = 0u - (uint32_t)is_lps;
    const uint32_t n_mps = rmps < 256;
    const uint32_t n = is_lps ? NC_AUX_SHIFT(aux) : n_mps;
    s->low = (s->low + (rmps & mask)) << n;
    s->range = is_lps ? NC_AUX_RANGE(aux) : rmps << n_mps;
    s->bits_left -= (int32_t)n;
    if (__builtin_expect(s->bits_left < 12, 0)) {
        enc_state t = *s;
        enc_flush(e, &t);
        *s = t;
    }
    nc_ctx_update(c, bin);
}

static inline void fast_bypass_bits(nc_encoder *e, enc_state *s, uint32_t value, uint32_t num_bits)
{
    while (num_bits > 8) {
        uint32_t pattern;
        num_bits -= 8;
        pattern = value >> num_bits;
        s->low = (s->low << 8) + s->range * pattern;
        value -= pattern << num_bits;
        s->bits_left -= 8;
        if (s->bits_left < 12) {
            enc_state t = *s;
            enc_flush(e, &t);
            *s = t;
        }
    }
    s->low = (s->low << num_bits) + s->range * value;
    s->bits_left -= (int32_t)num_bits;
    if (s->bits_left < 12) {
        enc_state t = *s;
        enc_flush(e, &t);
        *s = t;
    }
}

/* enc_weight without codebook limits. */
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

/* Walk the scan over block rows [first, end) and record (and evaluate) the bins of every
 * context for the parameter-set choice; state and nb are the DQ state and the neighbour class
 * at the start of block row `first`. */
static void record_levels(nc_recorder *r, const int32_t *levels, const nc_tensor *t,
                          const uint8_t *skip, uint64_t first, uint64_t end, int state, int nb)
{
    const uint64_t rows = t->rows, width = t->width;
    const uint64_t bh = t->scan_order ? ((uint64_t)4 << t->scan_order) : rows;
    const uint64_t bw = t->scan_order ? ((uint64_t)4 << t->scan_order) : width;
    const uint64_t by_end = end * bh < rows ? end * bh : rows;
    const uint32_t ng = t->num_gtx;
    uint8_t **const wp = r->wp;
    uint64_t by, bx, y, x, ye, xe;
    size_t i;

    for (by = first * bh; by < by_end; by += bh) {
        ye = by + bh < rows ? by + bh : rows;
        for (bx = 0; bx < width; bx += bw) {
            xe = bx + bw < width ? bx + bw : width;
            for (y = by; y < ye; y++) {
                const int32_t *row = levels + y * width;
                if (skip != NULL && skip[y]) {
                    /* The reference advances the state by the full layer width per segment. */
                    if (t->dq) {
                        state = nc_dq_skip((uint8_t)state, width);
                    }
                    continue;
                }
                for (x = bx; x < xe; x++) {
                    int32_t v = row[x];
                    int32_t k = t->dq ? level_to_index(v, state) : v;
                    rec_reserve(r);
                    /* The reference estimates rates on the stored level, not on k. */
                    opt_weight(wp, ng, v, state, nb);
                    nb = nb_class(v);
                    if (t->dq) {
                        state = nc_dq_next[state][k & 1];
                    }
                }
            }
        }
        if (ye < rows) {
            /* End of a block row: the estimators restart (the neighbour does not). */
            rec_reserve(r);
            for (i = 0; i < r->nctx; i++) {
                REC(i, NC_OPT_RESET);
            }
        }
    }
    rec_flush(r);
}

/* Walk the scan over block rows [first, end) and code the levels; state is the DQ state at the
 * start of block row `first` (the neighbour class starts at 0 in every block row). */
static void code_levels(nc_encoder *e, const int32_t *levels, const nc_tensor *t,
                        const uint8_t *skip, uint64_t first, uint64_t end, int state)
{
    const uint64_t rows = t->rows, width = t->width;
    const uint64_t bh = t->scan_order ? ((uint64_t)4 << t->scan_order) : rows;
    const uint64_t bw = t->scan_order ? ((uint64_t)4 << t->scan_order) : width;
    const uint64_t by_end = end * bh < rows ? end * bh : rows;
    const uint32_t ng = t->num_gtx;
    const size_t nctx = NC_CTX_COUNT(ng);
    const int plain = t->cb_size == 0 || t->profile == 0;
    nc_ctx *const ctx = e->ctx;
    uint64_t by, bx, y, x, ye, xe;
    int nb = 0;
    size_t i;
    enc_state s;

    s.low = e->low;
    s.range = e->range;
    s.bits_left = e->bits_left;
    for (by = first * bh; by < by_end; by += bh) {
        ye = by + bh < rows ? by + bh : rows;
        for (bx = 0; bx < width; bx += bw) {
            xe = bx + bw < width ? bx + bw : width;
            for (y = by; y < ye; y++) {
                const int32_t *row = levels + y * width;
                if (skip != NULL && skip[y]) {
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
                        int32_t k = t->dq ? level_to_index(row[x], state) : row[x];
                        enc_weight(e, ctx, t, k, t->dq ? state : 0, nb);
                        nb = nb_class(k);
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
                        nb = nb_class(v);
                    }
                } else {
                    for (x = bx; x < xe; x++) {
                        int32_t k = level_to_index(row[x], state);
                        fast_weight(e, &s, ctx, ng, k, state, nb);
                        nb = nb_class(k);
                        state = nc_dq_next[state][k & 1];
                    }
                }
            }
        }
        if (ye < rows) {
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

/* ---- block rows on several threads -------------------------------------------------------- *
 * The estimators and the coder both restart at every block row, so a tensor's block rows can be
 * split into contiguous spans that are worked on side by side:
 *  - parameter-set choice: a context's cost under each set is a sum over block rows, so each span
 *    records its own block rows into its own sums, which are then added;
 *  - coding: at a block-row start the contexts are reset to their sets, the neighbour to 0 and
 *    range to 256 while low carries on.  Every operation on low is (low + a) << n, so coding a span
 *    from low = 0, range = 256 gives a value S with, over the span's total shift T,
 *    low_after = low_before * 2^T + S exactly.  Each span but the first codes into its own
 *    buffer; S is then fed into the tensor's encoder (its top 8 bits added, then its other T
 *    bits shifted in 8 at a time, carries resolved by the ordinary byte output).  Once the
 *    first byte is out, the bytes depend only on the value and the total shift, so this leaves
 *    the same bytes as coding the span in place; before that (a leading 0xFF is buffered as 0)
 *    the span is coded in place instead.
 * The DQ state at a span's start comes from a sequential walk over the levels; the estimators'
 * neighbour class (which, unlike the coder's, does not restart) from the last coded level. */


#define NC_MAX_SPANS 256

typedef struct {
    const int32_t *levels;
    const nc_tensor *t;
    const uint8_t *skip;
    uint64_t first, end; /* block rows */
    int state;           /* DQ state at the start of block row `first` */
    int nb;              /* estimators' neighbour class there */
    uint64_t (*bits)[9]; /* phase 1: this span's parameter-set costs */
    nc_encoder *enc;     /* phase 2: the encoder this span codes into */
    int coding;          /* 0: record (phase 1), 1: code (phase 2) */
    int oom;
} enc_span;

static void *enc_span_run(void *arg)
{
    enc_span *w = (enc_span *)arg;
    const nc_tensor *t = w->t;
    if (!w->coding) {
        const uint64_t bh = (uint64_t)4 << t->scan_order;
        const uint64_t y0 = w->first * bh, y1 = w->end * bh < t->rows ? w->end * bh : t->rows;
        nc_recorder r;
        /* values plus block-row restarts bound what any context can receive */
        if (rec_init(&r, NC_CTX_COUNT(t->num_gtx), (y1 - y0) * t->width + (w->end - w->first), w->bits)) {
            record_levels(&r, w->levels, t, w->skip, w->first, w->end, w->state, w->nb);
        } else {
            w->oom = 1;
        }
        rec_free(&r);
    } else {
        code_levels(w->enc, w->levels, t, w->skip, w->first, w->end, w->state);
    }
    return NULL;
}

/* DQ state and estimators' neighbour class at the start of each span (w[k].first ascending). */
static void span_starts(enc_span *w, uint64_t n, const int32_t *levels, const nc_tensor *t,
                        const uint8_t *skip)
{
    const uint64_t rows = t->rows, width = t->width;
    const uint64_t bh = (uint64_t)4 << t->scan_order, bw = bh;
    uint64_t k, br = 0, by, bx, y, x, ye, xe;
    int state = 0;

    for (k = 0; k < n; k++) {
        /* the DQ state: walk the block rows before this span's first */
        for (; t->dq && br < w[k].first; br++) {
            by = br * bh;
            ye = by + bh < rows ? by + bh : rows;
            for (bx = 0; bx < width; bx += bw) {
                xe = bx + bw < width ? bx + bw : width;
                for (y = by; y < ye; y++) {
                    const int32_t *row = levels + y * width;
                    if (skip != NULL && skip[y]) {
                        state = nc_dq_skip((uint8_t)state, width);
                        continue;
                    }
                    for (x = bx; x < xe; x++) {
                        state = nc_dq_next[state][level_to_index(row[x], state) & 1];
                    }
                }
            }
        }
        w[k].state = state;
        /* the neighbour: the last level in scan order of the last block row with a coded row,
         * i.e. the last column of its last coded row (a level and its index share the class) */
        w[k].nb = 0;
        for (y = w[k].first * bh; y > 0; y--) {
            if (skip == NULL || !skip[y - 1]) {
                w[k].nb = nb_class(levels[(y - 1) * width + width - 1]);
                break;
            }
        }
    }
}

/* low := low * 2^T + S for a span coded into s from low = 0, range = 256 (s starts with one
 * buffered zero byte, so its first byte out is never a leading 0xFF and its bytes are S's
 * digits); then e continues with s's range.  Returns 1, 0 when out of memory, -1 on an
 * internal inconsistency. */
static int stitch_span(nc_encoder *e, nc_encoder *s)
{
    const uint32_t win = (uint32_t)(32 - s->bits_left); /* bits of s->low below its digits */
    uint32_t i, carry = s->low >> win;
    uint64_t nbits, pos;
    uint32_t top;

    s->low &= ((uint32_t)1 << win) - 1;
    enc_push(s, s->buffered + carry);
    for (i = 1; i < s->num_buffered; i++) {
        enc_push(s, (0xff + carry) & 0xff);
    }
    /* low's win bits, MSB first, then padding for the two-byte reads below */
    nbits = (uint64_t)s->len * 8 + win;
    for (i = 0; i < win; i += 8) {
        enc_push(s, ((s->low << (32 - win)) >> (24 - i)) & 0xff);
    }
    enc_push(s, 0);
    if (s->oom) {
        return 0;
    }
    /* S < 2^(T + 8): its top 9 bits are zero, the next 8 are added before any shift and the
     * remaining T bits are shifted in 8 at a time. */
#define SPAN_BITS(p, n)                                                                              \
    ((((uint32_t)s->buf[(p) >> 3] << 8 | s->buf[((p) >> 3) + 1]) >> (16 - ((p) & 7) - (n))) &        \
     (((uint32_t)1 << (n)) - 1))
    if (SPAN_BITS((uint64_t)0, 8) != 0 || SPAN_BITS((uint64_t)8, 1) != 0) {
        return -1; /* cannot happen: S is below 2^(T + 8) */
    }
    top = SPAN_BITS((uint64_t)9, 8);
    e->low += top;
    e->range = 1;
    for (pos = 17; pos + 8 <= nbits; pos += 8) {
        nc_enc_bypass_bits(e, SPAN_BITS(pos, 8), 8);
    }
    if (pos < nbits) {
        const uint32_t rest = (uint32_t)(nbits - pos);
        nc_enc_bypass_bits(e, SPAN_BITS(pos, rest), rest);
    }
#undef SPAN_BITS
    e->range = s->range;
    return 1;
}

/* Split block rows [0, nblock_rows) into n spans and find where each starts; NULL when out of
 * memory. */
static enc_span *make_spans(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, uint64_t n)
{
    const uint64_t nbr = nc_block_rows(t);
    enc_span *w = (enc_span *)calloc((size_t)n, sizeof(enc_span));
    uint64_t k;
    if (w == NULL) {
        return NULL;
    }
    for (k = 0; k < n; k++) {
        w[k].levels = levels;
        w[k].t = t;
        w[k].skip = skip;
        w[k].first = nbr * k / n;
        w[k].end = nbr * (k + 1) / n;
    }
    span_starts(w, n, levels, t, skip);
    return w;
}

/* Add the parameter-set costs of the n spans to bits. */
static int record_spans(enc_span *w, uint64_t n, uint64_t (*bits)[9], nc_status *st)
{
    const size_t nctx = NC_CTX_COUNT(w[0].t->num_gtx);
    uint64_t (*all)[9] = (uint64_t (*)[9])calloc((size_t)n * nctx, sizeof(*all));
    uint64_t k;
    size_t i;
    int j, oom = 0;

    if (all == NULL) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the parameter-set choice");
    }
    for (k = 0; k < n; k++) {
        w[k].coding = 0;
        w[k].oom = 0;
        w[k].bits = all + k * nctx;
    }
    nc_run_spans(enc_span_run, w, (size_t)n, sizeof(*w));
    for (k = 0; k < n; k++) {
        oom |= w[k].oom;
        for (i = 0; i < nctx; i++) {
            for (j = 0; j < 9; j++) {
                bits[i][j] += w[k].bits[i][j];
            }
        }
        w[k].bits = NULL;
    }
    free(all);
    if (oom) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the parameter-set choice");
    }
    return NC_OK;
}

/* Code the n spans; e holds the chosen sets in e->ctx and range 256. */
static int code_spans(nc_encoder *e, enc_span *w, uint64_t n, nc_status *st)
{
    const nc_tensor *t = w[0].t;
    const size_t nctx = NC_CTX_COUNT(t->num_gtx);
    const uint64_t per_row = (((uint64_t)4 << t->scan_order) * t->width) / 4 + 64;
    nc_encoder *sub = (nc_encoder *)calloc((size_t)n, sizeof(nc_encoder));
    uint64_t k;
    int rc = NC_OK;

    if (sub == NULL) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for encoding threads");
    }
    for (k = 0; k < n; k++) {
        w[k].coding = 1;
        w[k].enc = k == 0 ? e : &sub[k];
        if (k > 0) {
            const uint64_t reserve = per_row * (w[k].end - w[k].first);
            if (nc_encoder_init(&sub[k], reserve > ((uint64_t)1 << 26) ? ((size_t)1 << 26) : (size_t)reserve) != NC_OK ||
                (sub[k].ctx = (nc_ctx *)malloc(nctx * sizeof(nc_ctx))) == NULL) {
                rc = nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for encoding threads");
                goto cleanup;
            }
            memcpy(sub[k].ctx, e->ctx, nctx * sizeof(nc_ctx));
            sub[k].ctx_cap = nctx;
            sub[k].range = 256;
            sub[k].num_buffered = 1; /* a leading zero byte: see stitch_span */
            sub[k].buffered = 0;
        }
    }
    nc_run_spans(enc_span_run, w, (size_t)n, sizeof(*w));
    for (k = 1; k < n; k++) {
        if (e->num_buffered == 0) {
            /* Nothing written yet: the first byte out has its own rule (a leading 0xFF is
             * buffered as 0), so code this span in place instead of stitching. */
            code_levels(e, w[k].levels, t, w[k].skip, w[k].first, w[k].end, w[k].state);
        } else {
            const int ok = sub[k].oom ? 0 : stitch_span(e, &sub[k]);
            if (ok <= 0) {
                rc = ok == 0 ? nc_fail(st, NC_ERR_NOMEM, 0, "out of memory while writing the CABAC payload")
                             : nc_fail(st, NC_ERR_VALUE, 0, "internal error: span value out of range");
                goto cleanup;
            }
        }
    }
cleanup:
    for (k = 1; k < n; k++) {
        nc_encoder_free(&sub[k]);
    }
    free(sub);
    return rc;
}

/* ---- incremental coding: temporal context adaptation (TCA) and HDSP ---------------------- *
 * A separate, general (codebook-aware) path for tensors coded against a base tensor or with a
 * significance history: the same binarization as enc_weight / opt_weight, with the contexts
 * chosen by nc_sig_ctx_x / nc_sign_ctx_x / nc_gtx_ctx_x from the co-located base level and the
 * history bit (ContextModeler of the reference).  Its parameter-set choice records the bins per
 * context in growable buffers and evaluates them with nc_opt_eval: simple rather than fast, as
 * updates are small. */

typedef struct {
    uint8_t *data;
    size_t len;
    size_t cap;
} nc_rec;

static __attribute__((noinline)) int rec_grow(nc_rec *r)
{
    size_t ncap = r->cap ? 2 * r->cap : 4096;
    uint8_t *nd = (uint8_t *)realloc(r->data, ncap);
    if (nd == NULL) {
        return 0;
    }
    r->data = nd;
    r->cap = ncap;
    return 1;
}

static inline void rec_push(nc_rec *r, int bin, int *oom)
{
    if (__builtin_expect(r->len == r->cap, 0) && !rec_grow(r)) {
        *oom = 1;
        return;
    }
    r->data[r->len++] = (uint8_t)bin;
}

static void free_recs(nc_rec *rec, size_t n)
{
    size_t i;
    if (rec == NULL) {
        return;
    }
    for (i = 0; i < n; i++) {
        free(rec[i].data);
    }
    free(rec);
}

typedef struct {
    const int32_t *base; /* NULL: no TCA contexts */
    const uint8_t *hist; /* NULL: no HDSP contexts */
} inc_ctx;

static inline void inc_at(const inc_ctx *ic, uint64_t pos, int32_t *b, int *h)
{
    *b = ic->base != NULL ? ic->base[pos] : 0;
    *h = ic->hist != NULL && ic->hist[pos] != 0;
}

static void enc_weight_x(nc_encoder *e, nc_ctx *ctx, const nc_tensor *t, int32_t k, int state, int nb,
                         int32_t b, int h)
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

static void opt_weight_x(nc_rec *rec, uint32_t num_gtx, int32_t v, int state, int nb, int32_t b, int h,
                         int *oom)
{
    int neg;
    uint32_t rem, n, ci;
    int flag;
    uint64_t base, log2;

    rec_push(&rec[nc_sig_ctx_x(state, nb, b, h)], v != 0, oom);
    if (v == 0) {
        return;
    }
    neg = v < 0;
    rec_push(&rec[nc_sign_ctx_x(nb, b)], neg, oom);
    rem = (neg ? (uint32_t)0 - (uint32_t)v : (uint32_t)v) - 1;
    flag = rem ? 1 : 0;
    rec_push(&rec[nc_gtx_ctx_x(num_gtx, 0, neg, b)], flag, oom);
    n = 1;
    while (flag && n < num_gtx) {
        rem--;
        flag = rem ? 1 : 0;
        rec_push(&rec[nc_gtx_ctx_x(num_gtx, n, neg, b)], flag, oom);
        n++;
    }
    if (!flag) {
        return;
    }
    rem--;
    ci = NC_CTX_REM(num_gtx);
    if (rem == 0) {
        rec_push(&rec[ci], 0, oom);
        return;
    }
    rec_push(&rec[ci], 1, oom);
    base = 1;
    ci++;
    log2 = 1;
    while ((uint64_t)rem > base + ((uint64_t)1 << log2) - 1) {
        rec_push(&rec[ci], 1, oom);
        base += (uint64_t)1 << log2;
        ci++;
        log2++;
    }
    rec_push(&rec[ci], 0, oom);
}

/* record_levels / code_levels with TCA / HDSP context selection (same scan and resets). */
static void scan_levels_x(nc_encoder *e, nc_rec *rec, const int32_t *levels, const nc_tensor *t,
                          const uint8_t *skip, const inc_ctx *ic, int *oom)
{
    const uint64_t rows = t->rows, width = t->width;
    const uint64_t bh = t->scan_order ? ((uint64_t)4 << t->scan_order) : rows;
    const uint64_t bw = t->scan_order ? ((uint64_t)4 << t->scan_order) : width;
    const uint32_t ng = t->num_gtx;
    const size_t nctx = NC_CTX_COUNT(ng);
    uint64_t by, bx, y, x, ye, xe;
    int state = 0;
    int nb = 0;
    size_t i;

    for (by = 0; by < rows; by += bh) {
        ye = by + bh < rows ? by + bh : rows;
        for (bx = 0; bx < width; bx += bw) {
            xe = bx + bw < width ? bx + bw : width;
            for (y = by; y < ye; y++) {
                const int32_t *row = levels + y * width;
                if (skip != NULL && skip[y]) {
                    if (t->dq) {
                        state = nc_dq_skip((uint8_t)state, width);
                    }
                    continue;
                }
                for (x = bx; x < xe; x++) {
                    int32_t v = row[x], b;
                    int32_t k = t->dq ? level_to_index(v, state) : v;
                    int h;
                    inc_at(ic, y * width + x, &b, &h);
                    if (rec != NULL) {
                        /* the reference estimates rates on the stored level, not on k */
                        opt_weight_x(rec, ng, v, state, nb, b, h, oom);
                        nb = nb_class(v);
                    } else {
                        enc_weight_x(e, e->ctx, t, k, state, nb, b, h);
                        nb = nb_class(k);
                    }
                    if (t->dq) {
                        state = nc_dq_next[state][k & 1];
                    }
                }
            }
        }
        if (ye < rows) {
            if (rec != NULL) {
                /* the estimators restart, the neighbour does not */
                for (i = 0; i < nctx; i++) {
                    rec_push(&rec[i], NC_OPT_RESET, oom);
                }
            } else {
                for (i = 0; i < nctx; i++) {
                    nc_ctx_reset(&e->ctx[i]);
                }
                nb = 0;
                e->range = 256;
            }
        }
    }
}

/* Parameter-set costs of every context for the incremental path; 0 when out of memory. */
static int choose_sets_x(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, const inc_ctx *ic,
                         uint64_t (*bits)[9])
{
    const size_t nctx = NC_CTX_COUNT(t->num_gtx);
    nc_rec *rec = (nc_rec *)calloc(nctx, sizeof(nc_rec));
    int oom = 0;
    size_t i;
    if (rec == NULL) {
        return 0;
    }
    scan_levels_x(NULL, rec, levels, t, skip, ic, &oom);
    for (i = 0; !oom && i < nctx; i++) {
        if (rec[i].len > 0) {
            nc_opt_eval(rec[i].data, rec[i].len, bits[i]);
        }
    }
    free_recs(rec, nctx);
    return !oom;
}


/* ---- end of the incremental-coding path ---------------------------------------------------- */

int nc_encode_tensor(nc_encoder *e, const int32_t *levels, const nc_tensor *tin, uint32_t threads,
                     nc_status *st)
{
    nc_tensor t = *tin;
    uint8_t *skip = NULL;
    const uint32_t ng = t.num_gtx;
    size_t i, nctx;
    int flags_present, incremental;
    inc_ctx ic;
    uint64_t y, nspans = 1;
    uint64_t (*bits)[9] = NULL;
    enc_span *spans = NULL;

    if (e->finished) {
        return nc_fail(st, NC_ERR_VALUE, 0, "encoder already finished");
    }
    if (nc_tensor_check(&t, st) != NC_OK) {
        return st->code;
    }
    if (nc_ctx_reserve(&e->ctx, &e->ctx_cap, ng, st) != NC_OK) {
        return st->code;
    }
    nctx = NC_CTX_COUNT(ng);
    bits = (uint64_t (*)[9])calloc(nctx, sizeof(*bits));
    if (bits == NULL) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for context models");
    }
    for (i = 0; i < nctx; i++) {
        nc_ctx_init(&e->ctx[i], 0);
    }

    /* Profile 1 per-tensor flags, only for real matrices. */
    flags_present = t.profile == 1 && t.width > 1 && t.rows > 1 && t.cb_size != 1;
    /* TCA: context-parameter groups whenever there is a base, base contexts in profile 1 only;
     * HDSP only where its flag can be coded. */
    ic.base = t.profile == 1 ? t.base : NULL;
    ic.hist = flags_present && t.parent_present ? t.hist : NULL;
    incremental = t.base != NULL || ic.hist != NULL;
    if (t.base != NULL && t.profile == 1 && !t.parent_present) {
        free(bits);
        return nc_fail(st, NC_ERR_VALUE, 0,
                       "temporal context adaptation needs parent_node_id_present_flag (profile 1)");
    }
    if (flags_present) {
        if (t.parent_present) {
            enc_bypass(e, ic.hist != NULL); /* hist_dep_sig_prob_enabled_flag */
        }
        enc_bypass(e, t.row_skip ? 1 : 0);
        if (t.row_skip) {
            skip = (uint8_t *)malloc(t.rows);
            if (skip == NULL) {
                free(bits);
                return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the row-skip list");
            }
            for (y = 0; y < t.rows; y++) {
                skip[y] = (uint8_t)row_is_zero(levels + y * t.width, t.width);
                enc_bin(e, skip[y], &e->ctx[NC_CTX_ROW_SKIP(ng)]);
            }
        }
    }

    /* Block rows on several threads: not for the incremental path.  At most NC_MAX_SPANS
     * spans, however many threads are asked for. */
    if (!incremental && t.scan_order != 0 && threads > 1) {
        const uint64_t nbr = nc_block_rows(&t);
        nspans = threads < nbr ? threads : nbr;
        nspans = nspans < NC_MAX_SPANS ? nspans : NC_MAX_SPANS;
    }
    if (nspans > 1) {
        spans = make_spans(levels, &t, skip, nspans);
        if (spans == NULL) {
            free(skip);
            free(bits);
            return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for encoding threads");
        }
    }

    if (t.param_opt && (t.cb_size != 1 || t.profile == 0) && spans != NULL) {
        if (record_spans(spans, nspans, bits, st) != NC_OK) {
            free(spans);
            free(skip);
            free(bits);
            return st->code;
        }
    } else if (t.param_opt && (t.cb_size != 1 || t.profile == 0)) {
        int oom = 0;
        if (incremental) {
            oom = !choose_sets_x(levels, &t, skip, &ic, bits);
        } else {
            nc_recorder r;
            /* values plus block-row restarts bound what any context can receive */
            oom = !rec_init(&r, nctx, t.rows * t.width + nc_block_rows(&t), bits);
            if (!oom) {
                record_levels(&r, levels, &t, skip, 0, nc_block_rows(&t), 0, 0);
            }
            rec_free(&r);
        }
        if (oom) {
            free(skip);
            free(bits);
            return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the parameter-set choice");
        }
    }
    signal_sets(e, &t, (const uint64_t (*)[9])bits, t.base != NULL, ic.hist != NULL);
    free(bits);

    if (t.scan_order != 0 && nc_block_rows(&t) > 1) {
        e->range = 256;
    }
    if (incremental) {
        int oom = 0; /* coding never records */
        scan_levels_x(e, NULL, levels, &t, skip, &ic, &oom);
    } else if (spans != NULL) {
        if (code_spans(e, spans, nspans, st) != NC_OK) {
            free(spans);
            free(skip);
            return st->code;
        }
    } else {
        code_levels(e, levels, &t, skip, 0, nc_block_rows(&t), 0);
    }
    free(spans);
    free(skip);
    if (e->oom) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory while writing the CABAC payload");
    }
    return NC_OK;
}
