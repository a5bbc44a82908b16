/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC core shared by the encoder, decoder, quantizer and the Python bindings.
 *
 * Everything declared here is plain C without Python objects, so the bindings can run it with
 * the GIL released.  Functions report failures through an nc_status instead of aborting; the
 * bindings turn them into Python exceptions once the GIL is held again.
 *
 * Syntax and semantics follow ISO/IEC 15938-17:2024 (NNC 2nd edition) clause 9.3 and, where the
 * standard leaves the encoder free (parameter-set choice, quantization), the reference encoder
 * NNCodec 2.1.3, so that identical inputs give identical bitstreams.
 */
#ifndef NNRCONV_CABAC_H
#define NNRCONV_CABAC_H

#include <stddef.h>
#include <stdint.h>

/* ---- portability ------------------------------------------------------------------------ */

#if defined(_MSC_VER)
#include <intrin.h>
static __inline int nc_clz32(uint32_t x)
{
    unsigned long i;
    _BitScanReverse(&i, x);
    return 31 - (int)i;
}
#else
#define nc_clz32(x) __builtin_clz(x)
#endif

/* Everything declared here lives in this extension module: hidden visibility lets the compiler
 * address the tables directly instead of through the GOT. */
#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility push(hidden)
#define NC_VISIBILITY_PUSHED 1
#endif

/* ---- status ---------------------------------------------------------------------------- */

enum {
    NC_OK = 0,
    NC_ERR_STREAM = 1,   /* corrupt or truncated bitstream */
    NC_ERR_VALUE = 2,    /* bad argument (caller error) */
    NC_ERR_NOMEM = 3,
    NC_ERR_UNSUPPORTED = 4,
    NC_ERR_OVERFLOW = 5, /* quantization would overflow int32 */
};

typedef struct {
    int code;
    uint64_t byte_offset; /* position in the payload where a stream error was detected */
    char msg[200];
} nc_status;

int nc_fail(nc_status *st, int code, uint64_t byte_offset, const char *fmt, ...);

/* ---- tables (tables.c, ctxmodel.c) ----------------------------------------------------- */

extern const uint8_t nc_lps_table[8][32];
extern const uint32_t nc_rate[2][1024]; /* estimated cost of bin 0 / 1 by 512 + (s >> 3) */
#define nc_rate_zero (nc_rate[0])
#define nc_rate_one (nc_rate[1])
extern const int16_t nc_step_table[32];
extern const uint8_t nc_renorm_table[512]; /* renormalisation shift by range (< 512) */
extern const int16_t nc_param_sets[9][4]; /* SH0, SH1, initial S, initial S0 */
extern const uint8_t nc_dq_next[8][2];    /* dependent-quantization state transition */

/* ---- context layout (store size 90 + 4N, N = number of greater-than flags) ----------- */

#define NC_CTX_SIG 0        /* 24: 3 * state + neighbour class */
#define NC_CTX_SIG_TCA 24   /* 16: temporal context adaptation, 2 * state + (|base| > 1) */
#define NC_CTX_SIG_HDSP 40  /* 8: history-dependent significance, by state */
#define NC_CTX_SIGN 48      /* 3 + 2 (TCA) */
#define NC_CTX_SIGN_TCA 51  /* 2: base < 0, base > 0 */
#define NC_CTX_GTX 53       /* 2N + 2N (TCA) */
#define NC_CTX_GTX_TCA(n) (53 + 2 * (n))
#define NC_CTX_REM(n) (53 + 4 * (n))          /* 31 (+1 spare) remainder prefix contexts */
#define NC_CTX_PARAM_FLAG(n) (53 + 4 * (n) + 34)
#define NC_CTX_ROW_SKIP(n) (53 + 4 * (n) + 36)
#define NC_CTX_COUNT(n) (90 + 4 * (n))
#define NC_MAX_GTX 256 /* cabac_unary_length_minus1 is u(8) */

/* Estimator transitions, built by nc_tables_init: new S0 = nc_next0[SH0][bin][S0 + 128], new
 * S1 = nc_next1[SH1 - 4][bin][S1 + 2048] (S0 stays in [-128, 127], S1 in [-2048, 2047]). */
extern int8_t nc_next0[4][2][256];
extern int16_t nc_next1[3][2][4096];
/* The same transitions on biased unsigned states A = S0 + 128, B = S1 + 2048:
 * new A = nc_bnext0[SH0][bin][A], new B = nc_bnext1[SH1 - 4][bin][B]. */
extern uint8_t nc_bnext0[4][2][256];
extern uint16_t nc_bnext1[3][2][4096];

/* LPS lookup by context state and range: row nc_lps_rows[(S >> 7) + 32], column range >> 5
 * (range in [256, 511], so columns 8..15 are used).  lps is rLPS; aux packs rLPS renormalised
 * (bits 0-8), the renormalisation shift after an LPS (bits 9-11) and the MPS (bit 12).  Built by
 * nc_tables_init from nc_lps_table; one row is one 64-byte cache line. */
typedef struct {
    uint16_t lps[16];
    uint16_t aux[16];
} nc_lps_row;
extern nc_lps_row nc_lps_rows[64];
/* Decoder only: the range after an MPS, renormalised, by LPS row (as nc_lps_rows) and range -
 * 256: with q = |S >> 7| & 31 and rMPS = range - nc_lps_table[(range >> 5) & 7][q], the entry is
 * rMPS, doubled when it is below 256.  Built by nc_tables_init.  One load instead of a load, a
 * subtraction and a shift on the decoder's range dependency chain. */
extern uint16_t nc_dec_mps_range[64][256];
/* Decoder only: the estimator transitions with the parameter set folded into the state, so a
 * context needs no table pointers.  A decoder context holds A = 512 SH0 + (S0 + 128) and
 * B = 8192 (SH1 - 4) + (S1 + 2048); the next state is t0[A + 256 bin] and t1[B + 4096 bin],
 * and the byte offset of its LPS row is (8 A + (B >> 1)) & 0xFC0 (the set parts are multiples
 * of 4096).  Built by nc_tables_init. */
typedef struct {
    uint16_t t0[4 * 2 * 256];
    uint16_t t1[3 * 2 * 4096];
} nc_dec_trans_tables;
extern nc_dec_trans_tables nc_dec_trans;
#define NC_AUX_RANGE(a) ((a) & 511u)
#define NC_AUX_SHIFT(a) (((a) >> 9) & 7u)
#define NC_AUX_MPS(a) ((a) >> 12)

/* One adaptive context: SBMP two-rate estimator, S = 16 * S0 + S1, held as a = S0 + 128 and
 * b = S1 + 2048 (so the LPS row (S >> 7) + 32 is (16 * a + b) >> 7).  row is the LPS-table row
 * of the current S; n0 / n1 point at the bin-0 row of its biased transition tables; no
 * char-typed members, so stores to a context are not assumed to alias the coder state. */
typedef struct {
    const nc_lps_row *row;
    const uint8_t *n0;
    const uint16_t *n1;
    uint16_t a;
    uint16_t b;
    uint32_t set;
} nc_ctx;

/* The nine candidate parameter sets of one context, used by the encoder to pick a set. */
typedef struct {
    int32_t s[9];
    int32_t s0[9];
    uint64_t bits[9];
} nc_ctx_opt;

/* Grow a coder's context store to hold a tensor with num_gtx greater-than flags. */
int nc_ctx_reserve(nc_ctx **ctx, size_t *cap, uint32_t num_gtx, nc_status *st);
void nc_ctx_init(nc_ctx *c, int set);
void nc_ctx_reset(nc_ctx *c);
void nc_ctx_opt_init(nc_ctx_opt *o);
void nc_ctx_opt_reset(nc_ctx_opt *o);
void nc_ctx_opt_code(nc_ctx_opt *o, int bin);
int nc_ctx_opt_best(const nc_ctx_opt *o);

/* Add to bits[0..8] the estimated cost of a recorded bin sequence (0, 1, or NC_OPT_RESET for a
 * block-row restart) under each of the nine parameter sets. */
#define NC_OPT_RESET 2
void nc_opt_eval(const uint8_t *bins, size_t n, uint64_t bits[9]);
/* The same evaluation in pieces: the nine estimator states of one context between pieces. */
typedef struct {
    size_t a[9];
    size_t b[9];
} nc_opt_state;
void nc_opt_state_init(nc_opt_state *s);
/* Continue one context's evaluation with its next n recorded bins. */
void nc_opt_eval_more(nc_opt_state *s, const uint8_t *bins, size_t n, uint64_t bits[9]);
/* Build the estimator transition tables nc_opt_eval uses; call once before any encoding. */
void nc_tables_init(void);

static inline void nc_ctx_update(nc_ctx *c, int bin)
{
    const size_t a = c->n0[256 * (size_t)(unsigned)bin + c->a];
    const size_t b = c->n1[4096 * (size_t)(unsigned)bin + c->b];
    c->a = (uint16_t)a;
    c->b = (uint16_t)b;
    c->row = &nc_lps_rows[(16 * a + b) >> 7];
}

static inline uint32_t nc_ctx_lps(const nc_ctx *c, uint32_t range)
{
    return c->row->lps[range >> 5];
}

static inline int nc_ctx_mps(const nc_ctx *c)
{
    return (int)NC_AUX_MPS(c->row->aux[8]);
}

/* ---- per-tensor coding parameters ------------------------------------------------------ */

typedef struct {
    uint64_t rows;        /* dims[0] */
    uint64_t width;       /* prod(dims[1:]), 1 for 1-d tensors */
    int dq;               /* dq_flag */
    int scan_order;       /* 0..4 */
    int profile;          /* general_profile_idc (0 or 1) */
    uint32_t num_gtx;     /* cabac_unary_length_minus1 + 1 */
    int param_opt;        /* encoder: choose context parameter sets */
    int row_skip;         /* encoder: row_skip_enabled_flag */
    int parent_present;   /* parent_node_id_present_flag: hist_dep_sig_prob flag is coded */
    uint32_t cb_size;     /* codebook_size, 0 without codebook */
    uint32_t cb_zero;     /* CbZeroOffset */
    /* Incremental coding (profile 1; NULL = none).  base: the co-located int32 levels of the
     * parent tensor, turning on temporal context adaptation (TCA) and its context-parameter
     * groups.  hist: per element, 1 if the element was non-zero in an earlier update.  The
     * encoder codes hist_dep_sig_prob_enabled_flag = 1 iff hist is given (and the flag is
     * coded); the decoder reads the flag and uses hist (all-zero when NULL) if it is set. */
    const int32_t *base;
    const uint8_t *hist;
} nc_tensor;

/* Context selection with TCA / HDSP (ContextModeler of the reference): base is the co-located
 * base level (0 when none or no TCA), hdsp is 1 when HDSP is on and the history marks this
 * element. */
static inline uint32_t nc_uabs32(int32_t v)
{
    return v < 0 ? (uint32_t)0 - (uint32_t)v : (uint32_t)v;
}

static inline uint32_t nc_sig_ctx_x(int state, int nb, int32_t base, int hdsp)
{
    if (hdsp) {
        return NC_CTX_SIG_HDSP + (uint32_t)state;
    }
    if (base != 0) {
        return NC_CTX_SIG_TCA + 2 * (uint32_t)state + (nc_uabs32(base) > 1 ? 1u : 0u);
    }
    return NC_CTX_SIG + 3 * (uint32_t)state + (uint32_t)nb;
}

static inline uint32_t nc_sign_ctx_x(int nb, int32_t base)
{
    if (base != 0) {
        return NC_CTX_SIGN_TCA + (base < 0 ? 0u : 1u);
    }
    return NC_CTX_SIGN + (uint32_t)nb;
}

/* Greater-than flag j (0-based) of an index with sign neg. */
static inline uint32_t nc_gtx_ctx_x(uint32_t num_gtx, uint32_t j, int neg, int32_t base)
{
    if (base != 0) {
        return NC_CTX_GTX_TCA(num_gtx) + 2 * j + (nc_uabs32(base) >= j ? 0u : 1u);
    }
    return NC_CTX_GTX + 2 * j + (neg ? 1u : 0u);
}

/* Normalise a tensor description (forced scan order 0, codebook ignored in profile 0) and
 * validate it.  Returns NC_OK or NC_ERR_VALUE. */
int nc_tensor_check(nc_tensor *t, nc_status *st);

/* Block geometry of a scan order: 0 means the whole matrix is one block. */
static inline uint64_t nc_block_rows(const nc_tensor *t)
{
    uint64_t bh;
    if (t->scan_order == 0) {
        return 1;
    }
    bh = (uint64_t)4 << t->scan_order;
    return (t->rows + bh - 1) / bh;
}

/* Apply parity-0 transitions n times (a skipped row segment). */
uint8_t nc_dq_skip(uint8_t state, uint64_t n);

/* ---- threads (threads.c) ----------------------------------------------------------------- */

/* Call run on each of count items (item_size bytes apart): the first on the calling thread, the
 * others on their own threads, or here when threads are unavailable or cannot be created. */
void nc_run_spans(void *(*run)(void *), void *items, size_t count, size_t item_size);

/* ---- entry points ---------------------------------------------------------------------- */

typedef struct {
    uint64_t bit_offset; /* distance in bits from the previous entry point (or level-data start) */
    uint32_t value;      /* decoder value register >> 7 at that point, 8 bits */
    uint32_t dq_state;   /* 3 bits */
} nc_entry_point;

/* ---- arithmetic encoder (encoder.c, enc_*.c; see encoder.h) -------------------------- */

typedef struct {
    uint8_t *buf;
    size_t len;
    size_t cap;
    int oom;
    uint32_t low;
    uint32_t range;
    int32_t bits_left;
    uint32_t buffered;
    uint32_t num_buffered;
    int finished;
    nc_ctx *ctx;
    nc_ctx_opt *opt;
    size_t ctx_cap;
} nc_encoder;

int nc_encoder_init(nc_encoder *e, size_t reserve);
void nc_encoder_free(nc_encoder *e);
void nc_enc_bypass_bits(nc_encoder *e, uint32_t value, uint32_t num_bits);
/* Terminating bin and flush; the payload is then e->buf[0 .. e->len). */
int nc_encoder_finish(nc_encoder *e, nc_status *st);
/* Code one tensor's levels.  With scan order 1..4 and several block rows (and no base or
 * history) the block rows are worked on on up to `threads` threads; the bytes do not change. */
int nc_encode_tensor(nc_encoder *e, const int32_t *levels, const nc_tensor *t, uint32_t threads,
                     nc_status *st);

/* ---- arithmetic decoder (dec_*.c; see decoder.h) -------------------------------------- */

typedef struct {
    const uint8_t *buf;
    uint64_t len;
    uint64_t pos; /* bytes consumed, may run past len on corrupt input (then overrun is set) */
    int overrun;
    int started;
    uint32_t range;
    uint32_t value;
    int32_t bits_needed;
    nc_ctx *ctx;
    size_t ctx_cap;
} nc_decoder;

int nc_decoder_init(nc_decoder *d, const uint8_t *buf, uint64_t len, nc_status *st);
void nc_decoder_free(nc_decoder *d);
uint32_t nc_dec_bypass_bits(nc_decoder *d, uint32_t num_bits);
int nc_decoder_check(const nc_decoder *d, nc_status *st);
/* Decode the terminating bin and check the stop pattern; returns bytes consumed in *used. */
int nc_decoder_finish(nc_decoder *d, uint64_t *used, nc_status *st);
/* Decode one tensor's levels into out[rows * width].  With eps_in (n_eps_in == block rows - 1)
 * each block row starts at its entry point, and the block rows are decoded on up to `threads`
 * threads; with eps_out (capacity block rows - 1) the entry points are produced. */
int nc_decode_tensor(nc_decoder *d, int32_t *out, const nc_tensor *t,
                     const nc_entry_point *eps_in, uint64_t n_eps_in,
                     nc_entry_point *eps_out, uint64_t *n_eps_out, uint32_t threads, nc_status *st);

/* ---- quantization (quant.c) ------------------------------------------------------------ */

double nc_step_size(int32_t qp, int32_t qp_density);
/* Overflow limits of the quantizers exactly as the reference evaluates them. */
#define NC_URQ_MAX 2147483647.0
#define NC_URQ_MIN -2147483648.0
#define NC_TCQ_MAX 2147483645.0
#define NC_TCQ_MIN -2147483646.0
/* Whether every trellis index round(w * scale) stays within [NC_TCQ_MIN, NC_TCQ_MAX]. */
int nc_tcq_fits(const float *w, uint64_t n, float scale);

/* Trellis candidates of one weight: slot j (0..3) holds the reconstruction index q = j mod 4
 * nearest |w|/step with its quantization index k = sgn(w) * ((q + 1) >> 1), slot 4 is zero;
 * distortions times dscale (1.0 leaves them exact, for the distortion-only trellis). */
typedef struct {
    double dist[5];
    int32_t level[5];
} nc_tcq_cand;

static inline void nc_tcq_candidates(double value, double qscale, double dscale, nc_tcq_cand *c)
{
    const int32_t sign = value < 0 ? -1 : 1;
    const double org = qscale * value * (double)sign;
    int64_t q = (int64_t)org - 1;
    int64_t end;
    if (q < 1) {
        q = 1;
    }
    c->level[4] = 0;
    c->dist[4] = dscale * (org * org);
    for (end = q + 4; q < end; q++) {
        const double diff = org - (double)q;
        c->dist[q & 3] = dscale * (diff * diff);
        c->level[q & 3] = sign * (int32_t)((q + 1) >> 1);
    }
}

/* Traceback of either trellis: the level stored for the weight whose chosen candidate slot is
 * cand, coded in state: 2k - sgn(k) * (state & 1). */
static inline int32_t nc_tcq_level(double value, double qscale, unsigned cand, int state)
{
    nc_tcq_cand c;
    int32_t k;
    nc_tcq_candidates(value, qscale, 1.0, &c);
    k = c.level[cand];
    return k == 0 ? 0 : 2 * k + (k < 0 ? (state & 1) : -(state & 1));
}
/* Quantize weights[rows * width] to integer levels.  *qp may be raised if the levels would
 * overflow int32 (as the reference encoder does). */
int nc_quantize(const float *weights, int32_t *levels, uint64_t rows, uint64_t width,
                int32_t *qp, int32_t qp_density, int dq, int scan_order, double lambda_scale,
                nc_status *st);
void nc_dequantize(const int32_t *levels, float *out, uint64_t n, int32_t qp, int32_t qp_density);

/* ---- rate-distortion quantization (quant.c, rdq.c) ------------------------------------ */

/* nc_quantize's rate model uses this many greater-than flags (NNCodec's default
 * cabac_unary_length_minus1, which its pipeline passes as maxNumNoRem). */
#define NC_RD_DEFAULT_NUM_NO_REM 10u
/* Smallest non-zero lambda_scale accepted: keeps 2^15 / lambda and the scaled distortions finite. */
#define NC_RD_MIN_LAMBDA 1e-9
/* nc_quantize with the rate model's number of greater-than flags given (0..NC_MAX_GTX);
 * lambda_scale is rounded to float32 first, as the reference receives it. */
int nc_quantize_rd(const float *weights, int32_t *levels, uint64_t rows, uint64_t width,
                   int32_t *qp, int32_t qp_density, int dq, int scan_order, double lambda_scale,
                   uint32_t max_num_no_rem, nc_status *st);
/* The two rate-distortion quantizers over n weights in scan order (pos[i] = position of scan
 * index i, NULL for row-major).  Return 1 on success, 0 if the levels would overflow int32
 * (the caller retries at a coarser QP), -1 with st set on failure. */
int nc_rdq_urq(const float *w, int32_t *levels, uint64_t n, const uint64_t *pos, double qstep,
               double lambda_scale, uint32_t max_num_no_rem, nc_status *st);
int nc_rdq_tcq(const float *w, int32_t *levels, uint64_t n, const uint64_t *pos, double qstep,
               double lambda_scale, uint32_t max_num_no_rem, nc_status *st);

#if defined(NC_VISIBILITY_PUSHED)
#pragma GCC visibility pop
#undef NC_VISIBILITY_PUSHED
#endif

#endif /* NNRCONV_CABAC_H */
