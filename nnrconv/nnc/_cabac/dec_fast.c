/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC decoder, the fast path for plain levels (no codebook, no incremental contexts):
 * the engine in registers with a 64-bit bit window, branch-free bins, and the level loop of a
 * row segment specialised for DQ on / off and the usual 11 greater-than flags. */
#include <stdlib.h>
#include <string.h>

#include "decoder.h"

/* ---- hot path: 64-bit bit window ---------------------------------------------------------- *
 * The level loop keeps the engine in a local struct whose address never escapes, so it stays in
 * registers.  val holds the 16-bit decoder value V (the `value` register of nc_decoder with its
 * missing low bits filled in) in bits 48..63, followed by cnt look-ahead bits from bit 47 down,
 * then a sentinel 1 bit (the bits below are zero): val = (2 (V * 2^cnt + next cnt bits) + 1) *
 * 2^(47 - cnt).  A bin shifts val left by its renormalisation; the sentinel tells how many
 * look-ahead bits are left (cnt = 47 - trailing zeros), so the bins keep no count: the window
 * takes four bytes, below the look-ahead, when cnt < 16, i.e. when the low 32 bits are all zero
 * (one 32-bit test; a bin shifts by at most 7, and cnt + 32 bits fit).  Bytes past the end read
 * as zero; whether the decoder really consumed them is worked out when the state goes back into
 * the nc_decoder (fd_store). */

typedef struct {
    const uint8_t *buf;
    uint64_t len;
    uint64_t bpos; /* bytes loaded into val */
    uint64_t val;
    uint32_t range;
} fast_dec;

/* Look-ahead bits in val: 47 - position of the sentinel (val is never 0). */
static inline int32_t fd_cnt(uint64_t val)
{
#if defined(__GNUC__)
    return 47 - (int32_t)__builtin_ctzll(val);
#else
    int32_t z = 0;
    while (!((val >> z) & 1)) {
        z++;
    }
    return 47 - z;
#endif
}

static inline uint32_t fd_byte(const fast_dec *f, uint64_t pos)
{
    return pos < f->len ? f->buf[pos] : 0u;
}

static __attribute__((noinline)) uint64_t fd_refill_slow(const uint8_t *buf, uint64_t len, uint64_t bpos,
                                                         uint64_t val)
{
    int i;
    for (i = 0; i < 4; i++) {
        val = (val << 8) | (bpos + (uint64_t)i < len ? buf[bpos + (uint64_t)i] : 0u);
    }
    return val;
}

static inline void fd_refill(fast_dec *f)
{
    if (__builtin_expect((uint32_t)f->val == 0, 0)) {
        const int32_t cnt = fd_cnt(f->val);
        f->val &= f->val - 1; /* clear the sentinel */
        if (__builtin_expect(f->bpos + 4 <= f->len, 1)) {
            uint32_t w;
            memcpy(&w, f->buf + f->bpos, 4);
#if defined(__GNUC__)
            w = __builtin_bswap32(w);
#else
            w = (w << 24) | ((w & 0xff00) << 8) | ((w >> 8) & 0xff00) | (w >> 24);
#endif
            f->val |= (uint64_t)w << (16 - cnt);
        } else {
            f->val |= fd_refill_slow(f->buf, f->len, f->bpos, 0) << (16 - cnt);
        }
        f->val |= UINT64_C(1) << (15 - cnt);
        f->bpos += 4;
    }
}

/* nc_decoder (value with 8 + bits_needed missing low bits, pos bytes read) -> fast_dec. */
static inline void fd_load(fast_dec *f, const nc_decoder *d)
{
    const uint32_t m = (uint32_t)(8 + d->bits_needed);
    f->buf = d->buf;
    f->len = d->len;
    f->range = d->range;
    f->val = ((((uint64_t)d->value << (8 - m)) | fd_byte(f, d->pos)) << (40 + m)) |
             (UINT64_C(1) << (39 + m)); /* the sentinel, below the 8 - m look-ahead bits */
    f->bpos = d->pos + 1;
    fd_refill(f);
}

static inline void fd_store(const fast_dec *f, nc_decoder *d)
{
    const uint64_t vend = 8 * f->bpos - (uint64_t)fd_cnt(f->val);
    const uint32_t m = (uint32_t)(vend & 7);
    d->pos = vend >> 3;
    d->bits_needed = (int32_t)m - 8;
    d->value = (uint32_t)(f->val >> 48) & ~((1u << m) - 1u);
    d->range = f->range;
    if (d->pos > d->len) {
        d->overrun = 1;
    }
}

/* The byte-offset arithmetic on LPS rows below relies on rows of 64 bytes. */
typedef char fd_lps_row_is_64_bytes[sizeof(nc_lps_row) == 64 ? 1 : -1];

/* nc_ctx_update on an fd_ctx, the row address formed from its byte offset
 * ((16 a + b) >> 7 rows of 64 bytes = (8 a + (b >> 1)) & ~63 bytes, the set parts masked out). */
static inline void fd_ctx_update(fd_ctx *c, const int bin)
{
    const uint32_t a = nc_dec_trans.t0[(size_t)256 * (unsigned)bin + c->a];
    const uint32_t b = nc_dec_trans.t1[(size_t)4096 * (unsigned)bin + c->b];
    c->a = a;
    c->b = b;
    c->row = (const nc_lps_row *)((const char *)nc_lps_rows + ((8 * a + (b >> 1)) & 0xFC0u));
}

static inline int fd_bin_row(fast_dec *f, fd_ctx *c, const nc_lps_row *p);

static inline int fd_bin(fast_dec *f, fd_ctx *c)
{
    return fd_bin_row(f, c, c->row);
}

/* fd_bin with the context's LPS row already loaded (p == c->row). */
static inline int fd_bin_row(fast_dec *f, fd_ctx *c, const nc_lps_row *p)
{
    /* V sits at bits 48..63 of val, so the comparison is against rMPS << 55 (a constant
     * shift); the selects below compile to conditional moves. */
    const uint32_t r = f->range >> 5;
    const uint32_t lps = p->lps[r];
    const uint32_t aux = p->aux[r];
    const uint64_t v = f->val;
    const uint32_t rmps = f->range - lps;
    const uint32_t n_mps = rmps < 256;
    const uint64_t scaled = (uint64_t)rmps << 55;
    uint32_t range = rmps << n_mps, n = n_mps, is_lps = 0;
    uint64_t sub = 0;
    int bin;
#if defined(__GNUC__) && defined(__x86_64__)
    {
        const uint32_t r_lps = NC_AUX_RANGE(aux), n_lps = NC_AUX_SHIFT(aux);
        __asm__("cmpq %[sc], %[v]\n\t"
                "cmovaeq %[sc], %[sub]\n\t"
                "cmovael %[rl], %[range]\n\t"
                "cmovael %[nl], %[n]\n\t"
                "setae %b[il]"
                : [sub] "+r"(sub), [range] "+r"(range), [n] "+r"(n), [il] "+q"(is_lps)
                : [v] "r"(v), [sc] "r"(scaled), [rl] "r"(r_lps), [nl] "r"(n_lps)
                : "cc");
    }
#else
    {
        uint32_t m;
        is_lps = v >= scaled;
        m = 0u - is_lps;
        sub = scaled & (0 - (uint64_t)is_lps);
        range ^= (range ^ NC_AUX_RANGE(aux)) & m;
        n ^= (n ^ NC_AUX_SHIFT(aux)) & m;
    }
#endif
    bin = (int)(NC_AUX_MPS(aux) ^ is_lps);
    f->val = (f->val - sub) << n;
    f->range = range;
    fd_refill(f);
    fd_ctx_update(c, bin);
    return bin;
}

/* fd_bin for bins that are usually the MPS (the greater-than flags and remainder prefix of
 * dense tensors): branches instead of conditional moves, so on the predicted path the next
 * bin's range does not wait for the value comparison, and each path updates the context with
 * a constant bin (constant table offsets; the caller's test of the result folds away).  The MPS
 * of a context is 1 exactly when its LPS row is in the upper half of nc_lps_rows.  The range
 * after an MPS comes from one load indexed by the range itself (nc_dec_mps_range), so a run of
 * MPS bins costs one dependent load per bin; the range is always in [256, 511] here. */
static inline int fd_bin_mps_row(fast_dec *f, fd_ctx *c, const nc_lps_row *const p)
{
    const uint32_t r = f->range >> 5;
    const uint32_t rmps = f->range - p->lps[r];
    const uint64_t scaled = (uint64_t)rmps << 55;
    const uintptr_t off = (uintptr_t)((const char *)p - (const char *)nc_lps_rows);
    const int mps = off >= 32 * sizeof(nc_lps_row);
    /* nc_dec_mps_range[p - nc_lps_rows][range - 256], addressed from the byte offset of p
     * (rows of 64 bytes there, 512 here) in integer arithmetic: the row base does not depend
     * on the range, so the range only feeds the index of one load. */
    uintptr_t mr = (uintptr_t)nc_dec_mps_range - 512 + 8 * off;
    uint32_t rnext;
#if defined(__GNUC__)
    __asm__("" : "+r"(mr)); /* keep the compiler from re-associating the range into the sum */
#endif
    rnext = ((const uint16_t *)mr)[f->range];
    if (__builtin_expect(f->val < scaled, 1)) {
        const uint32_t n = rmps < 256;
        f->range = rnext;
        f->val <<= n;
    } else {
        const uint32_t aux = p->aux[r];
        const uint32_t n = NC_AUX_SHIFT(aux);
        f->range = NC_AUX_RANGE(aux);
        f->val = (f->val - scaled) << n;
        fd_refill(f);
        if (mps) {
            fd_ctx_update(c, 0);
            return 0;
        }
        fd_ctx_update(c, 1);
        return 1;
    }
    fd_refill(f);
    if (__builtin_expect(mps, 1)) {
        fd_ctx_update(c, 1);
        return 1;
    }
    fd_ctx_update(c, 0);
    return 0;
}

static inline int fd_bin_mps(fast_dec *f, fd_ctx *c)
{
    return fd_bin_mps_row(f, c, c->row);
}

static inline uint32_t fd_bypass_step(fast_dec *f, uint64_t scaled, uint32_t v)
{
    /* 2V + next bit >= range << 7, tested before the shift (2V may need 17 bits).  Bypass bins
     * are coin flips, so the subtraction is masked instead of branched on. */
    const uint64_t bit = f->val >= scaled;
    f->val = (f->val - (scaled & (0 - bit))) << 1;
    return (v << 1) | (uint32_t)bit;
}

static inline uint32_t fd_bypass_bits(fast_dec *f, uint32_t num_bits)
{
    const uint64_t scaled = (uint64_t)f->range << 54;
    uint32_t v = 0, i;
    if (num_bits <= 16) {
        /* At least 16 look-ahead bits are loaded before every bin (fd_refill), enough for
         * these at once.  Bypass decoding is restoring long division: with W = V * 2^n + the
         * next n bits and D = range << 7 (V < D), the n bits are W / D and the new V is
         * W % D.  W has at most 32 bits; one division instead of a loop whose exit the branch
         * predictor misses. */
        const uint32_t d = f->range << 7;
        const uint32_t w = (uint32_t)(f->val >> (48 - num_bits));
        v = w / d;
        f->val = ((uint64_t)(w - v * d) << 48) | ((f->val << num_bits) & ((UINT64_C(1) << 48) - 1));
        fd_refill(f);
        return v;
    }
    for (i = 0; i < num_bits; i++) {
        v = fd_bypass_step(f, scaled, v);
        fd_refill(f);
    }
    return v;
}

/* With the usual 11 flags (cabac_unary_length_minus1 = 10) fd_row is instantiated with a
 * constant ng, and the flag loop is unrolled: each flag context is then a constant offset and
 * the loop needs no counter. */
#define NC_GTX_COMMON 11u
#if defined(__clang__)
#define NC_UNROLL_GTX _Pragma("unroll 16")
#elif defined(__GNUC__)
#define NC_UNROLL_GTX _Pragma("GCC unroll 16")
#else
#define NC_UNROLL_GTX
#endif

/* One row segment without codebook (dec_weight with the level mapping of nc_dec_block_rows):
 * returns the column of a level that overflows int32, or n.  The significance flag decides
 * between the zero and the non-zero bookkeeping; the sign is applied arithmetically, so nothing
 * branches on it. */
static inline __attribute__((always_inline)) uint64_t fd_row(fast_dec *f, fd_ctx *ctx, uint32_t ng,
                                                              int32_t *out, uint64_t n, int *pstate,
                                                              int *pnb, const int dq)
{
    int state = *pstate, nb = *pnb;
    uint64_t x;
    fast_dec s = *f; /* a local copy that stays in registers */
    for (x = 0; x < n; x++) {
        uint64_t m; /* |k| */
        uint32_t neg, lm;
        if (!fd_bin_mps(&s, &ctx[NC_CTX_SIG + 3 * (dq ? state : 0) + nb])) {
            out[x] = 0;
            nb = 0;
            if (dq) {
                state = nc_dq_next[state][0];
            }
            continue;
        }
        {
            /* Both candidate first-flag rows are loaded before the sign is known and then
             * selected, so the first flag does not wait for a load after the sign bin.  The
             * flag contexts are walked by pointer: no index arithmetic per bin.  ng >= 1
             * (num_gtx is cabac_unary_length_minus1 + 1), so the first flag is always coded. */
            const nc_lps_row *const row_pos = ctx[NC_CTX_GTX].row, *const row_neg = ctx[NC_CTX_GTX + 1].row;
            fd_ctx *g0, *gtx, *gend;
            uint32_t rem_bits;
            neg = (uint32_t)fd_bin(&s, &ctx[NC_CTX_SIGN + nb]);
            g0 = &ctx[NC_CTX_GTX + neg];
            gend = g0 + 2 * (size_t)ng;
            if (!fd_bin_mps_row(&s, g0, neg ? row_neg : row_pos)) {
                m = 1;
                goto nonzero;
            }
            NC_UNROLL_GTX
            for (gtx = g0 + 2; gtx != gend; gtx += 2) {
                if (!fd_bin_mps(&s, gtx)) {
                    m = 1 + (uint64_t)((size_t)(gtx - g0) >> 1);
                    goto nonzero;
                }
            }
            /* Exp-Golomb remainder: rem_bits one-prefix bins (at most 31) add
             * 2^rem_bits - 1, then as many bypass bits.  Only here can the level leave the
             * int32 range: |level| may be at most 2^31 when negative, 2^31 - 1 otherwise. */
            rem_bits = 0;
            while (rem_bits < 31 && fd_bin_mps(&s, &ctx[NC_CTX_REM(ng) + rem_bits])) {
                rem_bits++;
            }
            m = (uint64_t)ng + ((uint64_t)1 << rem_bits) + fd_bypass_bits(&s, rem_bits);
            if (__builtin_expect((dq ? 2 * m - (uint64_t)(state & 1) : m) > (uint64_t)INT32_MAX + neg, 0)) {
                break;
            }
        }
    nonzero:
        /* DQ: level = sign * (2 |k| - (state & 1)) */
        lm = dq ? 2 * (uint32_t)m - (uint32_t)(state & 1) : (uint32_t)m;
        out[x] = (int32_t)((lm ^ (0u - neg)) + neg);
        nb = 2 - (int)neg;
        if (dq) {
            state = nc_dq_next[state][m & 1];
        }
    }
    *f = s;
    *pstate = state;
    *pnb = nb;
    return x;
}

/* One specialisation per DQ setting, each with the engine loaded from and stored back into the
 * nc_decoder around the loop (the local copy stays in registers). */
static __attribute__((noinline)) uint64_t fd_row_dq(nc_decoder *d, fd_ctx *ctx, uint32_t ng, int32_t *out,
                                                    uint64_t n, int *state, int *nb)
{
    fast_dec f;
    uint64_t done;
    fd_load(&f, d);
    if (ng == NC_GTX_COMMON) {
        done = fd_row(&f, ctx, NC_GTX_COMMON, out, n, state, nb, 1);
    } else {
        done = fd_row(&f, ctx, ng, out, n, state, nb, 1);
    }
    fd_store(&f, d);
    return done;
}

static __attribute__((noinline)) uint64_t fd_row_nodq(nc_decoder *d, fd_ctx *ctx, uint32_t ng, int32_t *out,
                                                      uint64_t n, int *state, int *nb)
{
    fast_dec f;
    uint64_t done;
    fd_load(&f, d);
    if (ng == NC_GTX_COMMON) {
        done = fd_row(&f, ctx, NC_GTX_COMMON, out, n, state, nb, 0);
    } else {
        done = fd_row(&f, ctx, ng, out, n, state, nb, 0);
    }
    fd_store(&f, d);
    return done;
}

uint64_t nc_dec_fast_segment(nc_decoder *d, fd_ctx *ctx, uint32_t ng, int32_t *out, uint64_t n, int *state,
                             int *nb, int dq)
{
    return dq ? fd_row_dq(d, ctx, ng, out, n, state, nb) : fd_row_nodq(d, ctx, ng, out, n, state, nb);
}
