/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC decoder (ISO/IEC 15938-17 clause 9.3).
 *
 * Robustness: every byte read is bounds-checked (reads past the end yield zeros and set
 * `overrun`, which fails the tensor), every loop is bounded by the element count or a constant,
 * and decoded magnitudes are checked against the int32 range before they are stored.
 */
#include <stdlib.h>
#include <string.h>

#include "cabac.h"

static inline uint32_t dec_byte(nc_decoder *d)
{
    uint32_t b = 0;
    if (d->pos < d->len) {
        b = d->buf[d->pos];
    } else {
        d->overrun = 1;
    }
    d->pos++;
    return b;
}

int nc_decoder_init(nc_decoder *d, const uint8_t *buf, uint64_t len, nc_status *st)
{
    memset(d, 0, sizeof(*d));
    d->buf = buf;
    d->len = len;
    if (len < 2) {
        return nc_fail(st, NC_ERR_STREAM, 0, "CABAC payload of %llu bytes is too short",
                       (unsigned long long)len);
    }
    d->range = 510;
    d->bits_needed = -8;
    d->value = (dec_byte(d) << 8);
    d->value |= dec_byte(d);
    d->started = 1;
    if (d->value >= (d->range << 7)) {
        return nc_fail(st, NC_ERR_STREAM, 0, "CABAC payload starts with an impossible value");
    }
    return NC_OK;
}

void nc_decoder_free(nc_decoder *d)
{
    free(d->ctx);
    d->ctx = NULL;
    d->ctx_cap = 0;
}

static inline int dec_bin(nc_decoder *d, nc_ctx *c)
{
    uint32_t lps = nc_ctx_lps(c, d->range);
    uint32_t mps_range = d->range - lps;
    int bin;
    int n;
    if (d->value < (mps_range << 7)) {
        bin = nc_ctx_mps(c);
        d->range = mps_range;
        if (mps_range >= 256) {
            nc_ctx_update(c, bin);
            return bin;
        }
        n = 1;
    } else {
        bin = !nc_ctx_mps(c);
        d->value -= mps_range << 7;
        d->range = lps;
        n = nc_clz32(lps) - 23;
    }
    d->range <<= n;
    d->value <<= n;
    d->bits_needed += n;
    if (d->bits_needed >= 0) {
        d->value += dec_byte(d) << d->bits_needed;
        d->bits_needed -= 8;
    }
    nc_ctx_update(c, bin);
    return bin;
}

static inline int dec_bypass(nc_decoder *d)
{
    uint32_t scaled;
    d->value += d->value;
    if (++d->bits_needed >= 0) {
        d->value += dec_byte(d);
        d->bits_needed = -8;
    }
    scaled = d->range << 7;
    if (d->value >= scaled) {
        d->value -= scaled;
        return 1;
    }
    return 0;
}

uint32_t nc_dec_bypass_bits(nc_decoder *d, uint32_t num_bits)
{
    uint32_t v = 0, i;
    for (i = 0; i < num_bits; i++) {
        v = (v << 1) | (uint32_t)dec_bypass(d);
    }
    return v;
}

int nc_decoder_check(const nc_decoder *d, nc_status *st)
{
    if (d->overrun) {
        return nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated");
    }
    return NC_OK;
}

int nc_decoder_finish(nc_decoder *d, uint64_t *used, nc_status *st)
{
    uint32_t scaled, last;
    d->range -= 2;
    scaled = d->range << 7;
    if (d->value < scaled) {
        return nc_fail(st, NC_ERR_STREAM, d->pos, "terminating bin of the CABAC payload not received");
    }
    if (d->overrun || d->pos == 0 || d->pos > d->len) {
        return nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated");
    }
    last = d->buf[d->pos - 1];
    if (((last << (8 + d->bits_needed)) & 0xff) != 0x80) {
        return nc_fail(st, NC_ERR_STREAM, d->pos - 1, "no stop bit and alignment at the end of the CABAC payload");
    }
    *used = d->pos;
    return NC_OK;
}

/* Bit position used by entry points: counts the bits the decoder has consumed, minus 9. */
static inline uint64_t dec_bit_offset(const nc_decoder *d)
{
    return 8 * d->pos - 8 + (uint64_t)(int64_t)d->bits_needed;
}

static int dec_seek(nc_decoder *d, uint64_t offset, uint32_t value, nc_status *st)
{
    uint64_t byte_off = (offset + 9) >> 3;
    uint32_t bit_off = (uint32_t)((offset + 9) & 7);
    uint64_t pos = byte_off + (bit_off != 0 ? 1 : 0);
    int32_t needed = (int32_t)bit_off - 9 + (bit_off == 0 ? 8 : 0);
    if (pos < 1 || pos > d->len || value > 255) {
        return nc_fail(st, NC_ERR_STREAM, d->len, "entry point at bit %llu lies outside the CABAC payload",
                       (unsigned long long)offset);
    }
    d->pos = pos;
    d->bits_needed = needed;
    d->range = 256;
    d->value = (value << 7) + (((uint32_t)d->buf[pos - 1] << (8 + needed)) & 127);
    return NC_OK;
}

/* ---- levels ------------------------------------------------------------------------------- */

#define NC_UNLIMITED INT64_C(-1)

/* Returns the decoded index k as int64 (|k| may be up to about 2^32 on corrupt input). */
static int64_t dec_weight(nc_decoder *d, nc_ctx *ctx, const nc_tensor *t, int state, int nb, int32_t b,
                          int h)
{
    int64_t val, max_abs;
    int neg, flag;
    uint32_t j, rem_bits;
    const uint32_t ng = t->num_gtx;

    if (!(t->profile == 0 || t->cb_size != 1)) {
        return 0;
    }
    if (!dec_bin(d, &ctx[nc_sig_ctx_x(state, nb, b, h)])) {
        return 0;
    }
    val = 1;
    if (t->profile == 1 && t->cb_size > 0 && (t->cb_zero == 0 || t->cb_zero == t->cb_size - 1)) {
        neg = t->cb_zero != 0;
    } else {
        neg = dec_bin(d, &ctx[nc_sign_ctx_x(nb, b)]);
    }
    max_abs = (t->profile == 1 && t->cb_size > 0)
                  ? (neg ? (int64_t)t->cb_zero : (int64_t)t->cb_size - t->cb_zero - 1)
                  : NC_UNLIMITED;
    if (max_abs > 1 || max_abs == NC_UNLIMITED) {
        j = 0;
        for (;;) {
            flag = dec_bin(d, &ctx[nc_gtx_ctx_x(ng, j, neg, b)]);
            val += flag;
            if (!(flag && j < ng - 1 && (max_abs > val || max_abs == NC_UNLIMITED))) {
                break;
            }
            j++;
        }
        if (flag && (max_abs > val || max_abs == NC_UNLIMITED)) {
            rem_bits = 0;
            j = 0;
            for (;;) {
                flag = dec_bin(d, &ctx[NC_CTX_REM(ng) + j]);
                if (flag && (max_abs > val || max_abs == NC_UNLIMITED)) {
                    val += (int64_t)1 << rem_bits;
                    rem_bits++;
                }
                if (!(flag && j < 30 &&
                      (max_abs >= val + ((int64_t)1 << rem_bits) || max_abs == NC_UNLIMITED))) {
                    break;
                }
                j++;
            }
            val += nc_dec_bypass_bits(d, rem_bits);
        }
    }
    return neg ? -val : val;
}

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

/* The fast path's own copy of a context (nc_dec_trans): the LPS row of the current state and
 * the state with its parameter set folded in, so an update needs no table pointers. */
typedef struct {
    const nc_lps_row *row;
    uint32_t a; /* 512 SH0 + S0 + 128 */
    uint32_t b; /* 8192 (SH1 - 4) + S1 + 2048 */
} fd_ctx;

static inline void fd_ctx_from(fd_ctx *f, const nc_ctx *c)
{
    f->row = c->row;
    f->a = 512u * (uint32_t)nc_param_sets[c->set][0] + c->a;
    f->b = 8192u * (uint32_t)(nc_param_sets[c->set][1] - 4) + c->b;
}

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

/* One row segment without codebook (dec_weight with the level mapping of decode_block_rows):
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

static __attribute__((noinline)) uint64_t fd_row_dq(fast_dec *f, fd_ctx *ctx, uint32_t ng, int32_t *out,
                                                    uint64_t n, int *state, int *nb)
{
    if (ng == NC_GTX_COMMON) {
        return fd_row(f, ctx, NC_GTX_COMMON, out, n, state, nb, 1);
    }
    return fd_row(f, ctx, ng, out, n, state, nb, 1);
}

static __attribute__((noinline)) uint64_t fd_row_nodq(fast_dec *f, fd_ctx *ctx, uint32_t ng, int32_t *out,
                                                      uint64_t n, int *state, int *nb)
{
    if (ng == NC_GTX_COMMON) {
        return fd_row(f, ctx, NC_GTX_COMMON, out, n, state, nb, 0);
    }
    return fd_row(f, ctx, ng, out, n, state, nb, 0);
}

static int read_set(nc_decoder *d, nc_ctx *ctx, uint32_t ng, uint32_t i, int coded)
{
    int set = 0;
    if (coded && dec_bin(d, &ctx[NC_CTX_PARAM_FLAG(ng)])) {
        set = 1 + (int)nc_dec_bypass_bits(d, 3);
    }
    nc_ctx_init(&ctx[i], set);
    return set;
}

/* The context-parameter groups in signalled order; TCA groups with a base, the HDSP group when
 * hist_dep_sig_prob_enabled_flag is 1. */
static void read_sets(nc_decoder *d, const nc_tensor *t, int tca, int hdsp)
{
    nc_ctx *ctx = d->ctx;
    const uint32_t ng = t->num_gtx;
    const uint32_t cbs = t->cb_size, zo = t->cb_zero;
    int64_t max_abs, level;
    uint32_t i, a;
    int sign_coded;

    for (i = 0; i < (t->dq ? 24u : 3u); i++) {
        read_set(d, ctx, ng, NC_CTX_SIG + i, cbs != 1);
    }
    for (i = 0; tca && i < (t->dq ? 16u : 2u); i++) {
        read_set(d, ctx, ng, NC_CTX_SIG_TCA + i, cbs != 1);
    }
    for (i = 0; hdsp && i < (t->dq ? 8u : 1u); i++) {
        read_set(d, ctx, ng, NC_CTX_SIG_HDSP + i, cbs != 1);
    }
    sign_coded = !(cbs > 0 && (zo == 0 || zo == cbs - 1)) && cbs != 1;
    for (a = 0; a < (tca ? 5u : 3u); a++) {
        read_set(d, ctx, ng, NC_CTX_SIGN + a, sign_coded);
    }
    max_abs = cbs > 0 ? (int64_t)(zo > cbs - 1 - zo ? zo : cbs - 1 - zo) : NC_UNLIMITED;
    for (a = 0; a < 2 * ng; a++) {
        read_set(d, ctx, ng, NC_CTX_GTX + a, max_abs == NC_UNLIMITED || (int64_t)a < max_abs * 2);
    }
    for (a = 2 * ng; tca && a < 4 * ng; a++) {
        read_set(d, ctx, ng, NC_CTX_GTX + a,
                 max_abs == NC_UNLIMITED || (int64_t)a < (max_abs - 1) * 2 + 2 * (int64_t)ng);
    }
    level = (int64_t)ng - 1;
    for (a = 0; a < 31; a++) {
        level += (int64_t)1 << a;
        read_set(d, ctx, ng, NC_CTX_REM(ng) + a, max_abs == NC_UNLIMITED || level < max_abs);
    }
}

/* ---- block rows ----------------------------------------------------------------------------- */

/* What the block-row loop needs besides the decoder: the tensor, its row-skip list, and either
 * the entry points to start each block row at (starts[j] = absolute bit offset of block row j,
 * eps_in[j - 1] its value and dq_state) or, when creating entry points, where to put them. */
typedef struct {
    const nc_tensor *t;
    const uint8_t *skip;
    const nc_entry_point *eps_in; /* NULL: block rows follow each other in the stream */
    const uint64_t *starts;       /* with eps_in */
    nc_entry_point *eps_out;      /* NULL: do not create */
    uint64_t *n_eps_out;
    uint64_t last_offset;         /* with eps_out: offset of the previous entry point */
    const int32_t *tca_base;      /* co-located parent levels (TCA), or NULL */
    const uint8_t *hist;          /* significance history (HDSP), or NULL */
    int32_t *out;
} block_rows_job;

/* Decode block rows [first, end): with entry points, block row `first` starts at its own entry
 * point; the contexts in d->ctx must hold their chosen sets (they are reset at every block row). */
static int decode_block_rows_fd(nc_decoder *d, block_rows_job *job, uint64_t first, uint64_t end, int state,
                                nc_status *st, fd_ctx *fctx)
{
    const nc_tensor *t = job->t;
    const uint64_t rows = t->rows, width = t->width;
    const uint64_t bh = t->scan_order ? ((uint64_t)4 << t->scan_order) : rows;
    const uint64_t bw = t->scan_order ? ((uint64_t)4 << t->scan_order) : width;
    const uint32_t ng = t->num_gtx;
    const size_t nctx = NC_CTX_COUNT(ng);
    const int32_t *tca_base = job->tca_base;
    const uint8_t *hist = job->hist;
    const int plain = (t->cb_size == 0 || t->profile == 0) && tca_base == NULL && hist == NULL;
    const uint8_t *skip = job->skip;
    uint64_t by, bx, y, x, ye, xe, block_row;
    size_t i;
    int nb = 0;

    for (block_row = first, by = first * bh; block_row < end; by += bh, block_row++) {
        ye = by + bh < rows ? by + bh : rows;
        if (job->eps_in != NULL && block_row > 0) {
            if (dec_seek(d, job->starts[block_row], job->eps_in[block_row - 1].value, st) != NC_OK) {
                return st->code;
            }
            state = (int)(job->eps_in[block_row - 1].dq_state & 7);
        }
        for (bx = 0; bx < width; bx += bw) {
            xe = bx + bw < width ? bx + bw : width;
            for (y = by; y < ye; y++) {
                int32_t *row = job->out + y * width;
                if (skip != NULL && skip[y]) {
                    for (x = bx; x < xe; x++) {
                        row[x] = 0;
                    }
                    if (t->dq) {
                        state = nc_dq_skip((uint8_t)state, width);
                    }
                    continue;
                }
                if (plain) {
                    /* fast path */
                    fast_dec f;
                    uint64_t done;
                    fd_load(&f, d);
                    done = t->dq ? fd_row_dq(&f, fctx, ng, row + bx, xe - bx, &state, &nb)
                                 : fd_row_nodq(&f, fctx, ng, row + bx, xe - bx, &state, &nb);
                    fd_store(&f, d);
                    if (done < xe - bx) {
                        return nc_fail(st, NC_ERR_STREAM, d->pos,
                                       "decoded level at row %llu, column %llu does not fit in int32",
                                       (unsigned long long)y, (unsigned long long)(bx + done));
                    }
                    if (d->overrun) {
                        return nc_fail(st, NC_ERR_STREAM, d->len,
                                       "CABAC payload is truncated (while decoding row %llu)", (unsigned long long)y);
                    }
                    continue;
                }
                for (x = bx; x < xe; x++) {
                    int64_t k = dec_weight(d, d->ctx, t, state, nb,
                                           tca_base != NULL ? tca_base[y * width + x] : 0,
                                           hist != NULL && hist[y * width + x] != 0);
                    int64_t level = k;
                    if (t->dq && k != 0) {
                        level = 2 * k + (k < 0 ? (state & 1) : -(state & 1));
                    }
                    if (level > INT32_MAX || level < INT32_MIN) {
                        return nc_fail(st, NC_ERR_STREAM, d->pos,
                                       "decoded level at row %llu, column %llu does not fit in int32",
                                       (unsigned long long)y, (unsigned long long)x);
                    }
                    row[x] = (int32_t)level;
                    nb = k == 0 ? 0 : (k < 0 ? 1 : 2);
                    if (t->dq) {
                        state = nc_dq_next[state][k & 1];
                    }
                }
                if (d->overrun) {
                    return nc_fail(st, NC_ERR_STREAM, d->len,
                                   "CABAC payload is truncated (while decoding row %llu)", (unsigned long long)y);
                }
            }
        }
        if (ye < rows) {
            for (i = 0; i < nctx; i++) {
                nc_ctx_reset(&d->ctx[i]);
            }
            for (i = 0; plain && i < nctx; i++) {
                fd_ctx_from(&fctx[i], &d->ctx[i]);
            }
            nb = 0;
            if (job->eps_in == NULL) {
                d->range = 256;
                if (d->value >= (256u << 7)) {
                    return nc_fail(st, NC_ERR_STREAM, d->pos, "invalid arithmetic-decoder state at an entry point");
                }
            }
            if (job->eps_out != NULL) {
                uint64_t off = dec_bit_offset(d);
                nc_entry_point *ep = &job->eps_out[block_row];
                ep->bit_offset = off - job->last_offset;
                ep->value = (d->value >> 7) & 255;
                ep->dq_state = (uint32_t)state;
                job->last_offset = off;
                *job->n_eps_out = block_row + 1;
            }
        }
    }
    return NC_OK;
}

/* decode_block_rows_fd with the fast path's copy of the contexts (on the stack for the usual
 * numbers of flags). */
#define NC_FD_CTX_STACK 256
static int decode_block_rows(nc_decoder *d, block_rows_job *job, uint64_t first, uint64_t end, int state,
                             nc_status *st)
{
    const nc_tensor *t = job->t;
    const size_t nctx = NC_CTX_COUNT(t->num_gtx);
    const int plain =
        (t->cb_size == 0 || t->profile == 0) && job->tca_base == NULL && job->hist == NULL;
    fd_ctx buf[NC_FD_CTX_STACK];
    fd_ctx *fctx = buf;
    size_t i;
    int rc;
    if (!plain) {
        return decode_block_rows_fd(d, job, first, end, state, st, NULL);
    }
    if (nctx > NC_FD_CTX_STACK) {
        fctx = (fd_ctx *)malloc(nctx * sizeof(fd_ctx));
        if (fctx == NULL) {
            return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for context models");
        }
    }
    for (i = 0; i < nctx; i++) {
        fd_ctx_from(&fctx[i], &d->ctx[i]);
    }
    rc = decode_block_rows_fd(d, job, first, end, state, st, fctx);
    if (fctx != buf) {
        free(fctx);
    }
    return rc;
}

/* ---- block rows on several threads -------------------------------------------------------- *
 * With entry points every block row can start on its own: contexts are reset to their chosen
 * sets, the arithmetic decoder restarts from the entry point's value, and DQ from its state.  So
 * the block rows are split into contiguous spans, each decoded by its own copy of the decoder
 * and contexts.  The stream position after the tensor is the one the last span ends at. */


typedef struct {
    nc_decoder d;
    block_rows_job *job;
    uint64_t first, end;
    int state;
    int rc;
    nc_status st;
} span_work;

static void *decode_span(void *arg)
{
    span_work *w = (span_work *)arg;
    w->rc = decode_block_rows(&w->d, w->job, w->first, w->end, w->state, &w->st);
    return NULL;
}

/* Decode all block rows on up to `threads` threads; falls back to one span when threads cannot
 * be created.  On failure the error of the earliest failing span is reported. */
static int decode_spans(nc_decoder *d, block_rows_job *job, uint64_t nblock_rows, uint32_t threads, nc_status *st)
{
    const size_t nctx = NC_CTX_COUNT(job->t->num_gtx);
    uint64_t n = threads < nblock_rows ? threads : nblock_rows, k;
    span_work *w;
    int rc = NC_OK;

    if (n <= 1) {
        return decode_block_rows(d, job, 0, nblock_rows, 0, st);
    }
    w = (span_work *)calloc((size_t)n, sizeof(span_work));
    if (w == NULL) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for decoding threads");
    }
    for (k = 0; k < n; k++) {
        w[k].d = *d;
        w[k].job = job;
        w[k].first = nblock_rows * k / n;
        w[k].end = nblock_rows * (k + 1) / n;
        w[k].state = k == 0 ? 0 : (int)(job->eps_in[w[k].first - 1].dq_state & 7);
        if (k > 0) {
            w[k].d.ctx = (nc_ctx *)malloc(nctx * sizeof(nc_ctx));
            if (w[k].d.ctx == NULL) {
                rc = nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for decoding threads");
                n = k;
                goto cleanup;
            }
            memcpy(w[k].d.ctx, d->ctx, nctx * sizeof(nc_ctx));
            w[k].d.ctx_cap = nctx;
        }
    }
    nc_run_spans(decode_span, w, (size_t)n, sizeof(*w));
    for (k = 0; k < n; k++) {
        if (w[k].rc != NC_OK) {
            *st = w[k].st;
            rc = w[k].rc;
            break;
        }
    }
    if (rc == NC_OK) {
        /* continue after the tensor where the last span stopped */
        nc_ctx *ctx = d->ctx;
        size_t cap = d->ctx_cap;
        *d = w[n - 1].d;
        d->ctx = ctx;
        d->ctx_cap = cap;
    }
cleanup:
    for (k = 1; k < n; k++) {
        free(w[k].d.ctx);
    }
    free(w);
    return rc;
}

int nc_decode_tensor(nc_decoder *d, int32_t *out, const nc_tensor *tin,
                     const nc_entry_point *eps_in, uint64_t n_eps_in,
                     nc_entry_point *eps_out, uint64_t *n_eps_out, uint32_t threads, nc_status *st)
{
    nc_tensor t = *tin;
    uint8_t *skip = NULL;
    uint64_t *starts = NULL;
    uint64_t rows, width, y, nblock_rows, j;
    uint32_t ng;
    size_t i, nctx;
    int flags_present, rc = NC_OK, use_eps, hdsp = 0;
    block_rows_job job;

    if (n_eps_out != NULL) {
        *n_eps_out = 0;
    }
    if (nc_tensor_check(&t, st) != NC_OK) {
        return st->code;
    }
    ng = t.num_gtx;
    rows = t.rows;
    width = t.width;
    if (nc_ctx_reserve(&d->ctx, &d->ctx_cap, ng, st) != NC_OK) {
        return st->code;
    }
    nctx = NC_CTX_COUNT(ng);
    for (i = 0; i < nctx; i++) {
        nc_ctx_init(&d->ctx[i], 0);
    }

    flags_present = t.profile == 1 && width > 1 && rows > 1 && t.cb_size != 1;
    if (flags_present) {
        if (t.parent_present) {
            hdsp = dec_bypass(d); /* hist_dep_sig_prob_enabled_flag */
        }
        if (dec_bypass(d)) {
            skip = (uint8_t *)malloc(rows);
            if (skip == NULL) {
                return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the row-skip list");
            }
            for (y = 0; y < rows; y++) {
                skip[y] = (uint8_t)dec_bin(d, &d->ctx[NC_CTX_ROW_SKIP(ng)]);
            }
            if (d->overrun) {
                rc = nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated (row-skip flags)");
                goto done;
            }
        }
    }
    read_sets(d, &t, t.base != NULL, hdsp);

    nblock_rows = nc_block_rows(&t);
    use_eps = eps_in != NULL && nblock_rows > 1;
    if (use_eps && n_eps_in != nblock_rows - 1) {
        rc = nc_fail(st, NC_ERR_STREAM, d->pos, "%llu entry points given, the scan has %llu block rows",
                     (unsigned long long)n_eps_in, (unsigned long long)nblock_rows);
        goto done;
    }
    memset(&job, 0, sizeof(job));
    job.t = &t;
    job.skip = skip;
    job.out = out;
    /* TCA contexts in profile 1 only; HDSP by the history (none: all positions off) */
    job.tca_base = t.profile == 1 ? t.base : NULL;
    job.hist = hdsp ? t.hist : NULL;
    if (t.scan_order != 0 && nblock_rows > 1) {
        d->range = 256;
        if (d->value >= (256u << 7)) {
            rc = nc_fail(st, NC_ERR_STREAM, d->pos, "invalid arithmetic-decoder state at an entry point");
            goto done;
        }
        job.last_offset = dec_bit_offset(d);
    }
    if (use_eps) {
        starts = (uint64_t *)malloc((size_t)nblock_rows * sizeof(uint64_t));
        if (starts == NULL) {
            rc = nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for entry points");
            goto done;
        }
        starts[0] = job.last_offset;
        for (j = 1; j < nblock_rows; j++) {
            starts[j] = starts[j - 1] + eps_in[j - 1].bit_offset;
            if (starts[j] < starts[j - 1]) {
                rc = nc_fail(st, NC_ERR_STREAM, d->pos, "entry point %llu lies outside the CABAC payload",
                             (unsigned long long)j);
                goto done;
            }
        }
        job.eps_in = eps_in;
        job.starts = starts;
        rc = decode_spans(d, &job, nblock_rows, threads, st);
    } else {
        if (eps_out != NULL && nblock_rows > 1) {
            job.eps_out = eps_out;
            job.n_eps_out = n_eps_out;
        }
        rc = decode_block_rows(d, &job, 0, nblock_rows, 0, st);
    }
done:
    free(starts);
    free(skip);
    return rc;
}
