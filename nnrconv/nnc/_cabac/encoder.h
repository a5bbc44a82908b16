/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to the encoder's files: the arithmetic engine's inline bin coding, used by every
 * file that codes bins, and what the files call of each other.
 *
 *   enc_engine.c       M-coder engine: byte output, bypass bits, flush, termination, stitching
 *   enc_levels.c       binarization of levels / codebook indices and the scan loop that codes them
 *   enc_params.c       context-parameter-set search (bin recording, cost per set) and signalling
 *   enc_spans.c        block rows split across threads (search and coding)
 *   enc_incremental.c  the incremental variants: TCA / HDSP context selection
 *   encoder.c          nc_encode_tensor: per-tensor flags, row skipping, and the order of it all
 */
#ifndef NNRCONV_CABAC_ENCODER_H
#define NNRCONV_CABAC_ENCODER_H

#include <stdint.h>

#include "cabac.h"
#include "scan.h"

#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility push(hidden)
#define NC_ENC_VISIBILITY_PUSHED 1
#endif

/* ---- engine (enc_engine.c) -------------------------------------------------------------------- */

/* Append one byte to the payload (sets e->oom when out of memory). */
void nc_enc_push(nc_encoder *e, uint32_t byte);
/* Emit the settled byte above the 'bits_left' window; 0xFF bytes wait for a possible carry. */
void nc_enc_write_out(nc_encoder *e);

static inline void enc_bin(nc_encoder *e, int bin, nc_ctx *c)
{
    uint32_t lps = nc_ctx_lps(c, e->range);
    e->range -= lps;
    if (bin == nc_ctx_mps(c)) {
        if (e->range < 256) {
            e->range <<= 1;
            e->low <<= 1;
            if (--e->bits_left < 12) {
                nc_enc_write_out(e);
            }
        }
    } else {
        int n = nc_clz32(lps) - 23;
        e->low += e->range;
        e->range = lps << n;
        e->low <<= n;
        e->bits_left -= n;
        if (e->bits_left < 12) {
            nc_enc_write_out(e);
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
        nc_enc_write_out(e);
    }
}

/* The coding loops keep low / range / bits_left in a local struct whose address never escapes
 * (only the rare byte output goes through the nc_encoder), so they stay in registers. */
typedef struct {
    uint32_t low;
    uint32_t range;
    int32_t bits_left;
} enc_state;

/* Write out settled bytes of s (the slow part of fast_bin, kept out of line). */
void nc_enc_flush(nc_encoder *e, enc_state *s);

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
        nc_enc_flush(e, &t);
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
            nc_enc_flush(e, &t);
            *s = t;
        }
    }
    s->low = (s->low << num_bits) + s->range * value;
    s->bits_left -= (int32_t)num_bits;
    if (s->bits_left < 12) {
        enc_state t = *s;
        nc_enc_flush(e, &t);
        *s = t;
    }
}

/* low := low * 2^T + S for a span coded into s from low = 0, range = 256 (s starts with one
 * buffered zero byte, so its first byte out is never a leading 0xFF and its bytes are S's
 * digits); then e continues with s's range.  Returns 1, 0 when out of memory, -1 on an
 * internal inconsistency. */
int nc_enc_stitch_span(nc_encoder *e, nc_encoder *s);

/* ---- levels (enc_levels.c) ---------------------------------------------------------------------- */

#define NC_UNLIMITED INT64_C(-1)

/* One quantization index k with the general binarization (codebook limits; contexts chosen by
 * the base level b and history bit h, both 0 without incremental coding). */
void nc_enc_weight(nc_encoder *e, nc_ctx *ctx, const nc_tensor *t, int32_t k, int state, int nb, int32_t b,
                   int h);
/* Code block rows [first, end) of the levels; state is the DQ state at the start of block row
 * `first` (the neighbour class starts at 0 in every block row). */
void nc_enc_code_levels(nc_encoder *e, const int32_t *levels, const nc_tensor *t, const uint8_t *skip,
                        uint64_t first, uint64_t end, int state);

/* ---- parameter-set search (enc_params.c) ------------------------------------------------------ */

/* Add to bits[i][0..8] the estimated cost of context i's bins in block rows [first, end) under
 * each parameter set; state and nb are the DQ state and the estimators' neighbour class at the
 * start of block row `first`.  Returns 0 when out of memory. */
int nc_enc_record_levels(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, uint64_t first,
                         uint64_t end, int state, int nb, uint64_t (*bits)[9]);
/* Choose each context's parameter set from its costs, signal the choices (clause 9.3.2) and
 * initialise the contexts with them; tca / hdsp: the TCA and HDSP groups are present. */
void nc_enc_signal_sets(nc_encoder *e, const nc_tensor *t, const uint64_t (*opt)[9], int tca, int hdsp);

/* ---- threads (enc_spans.c) ---------------------------------------------------------------------- */

#define NC_MAX_SPANS 256
typedef struct enc_span enc_span;
/* Split block rows [0, nblock_rows) into n spans and find where each starts; NULL when out of
 * memory.  Release with free(). */
enc_span *nc_enc_make_spans(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, uint64_t n);
/* Add the parameter-set costs of the n spans to bits. */
int nc_enc_record_spans(enc_span *w, uint64_t n, uint64_t (*bits)[9], nc_status *st);
/* Code the n spans; e holds the chosen sets in e->ctx and range 256. */
int nc_enc_code_spans(nc_encoder *e, enc_span *w, uint64_t n, nc_status *st);

/* ---- incremental coding (enc_incremental.c) --------------------------------------------------- */

typedef struct {
    const int32_t *base; /* NULL: no TCA contexts */
    const uint8_t *hist; /* NULL: no HDSP contexts */
} nc_inc_ctx;

/* Parameter-set costs of every context with TCA / HDSP context selection; 0 when out of memory. */
int nc_enc_choose_sets_x(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, const nc_inc_ctx *ic,
                         uint64_t (*bits)[9]);
/* Code all the levels with TCA / HDSP context selection. */
void nc_enc_code_levels_x(nc_encoder *e, const int32_t *levels, const nc_tensor *t, const uint8_t *skip,
                          const nc_inc_ctx *ic);

#if defined(NC_ENC_VISIBILITY_PUSHED)
#pragma GCC visibility pop
#undef NC_ENC_VISIBILITY_PUSHED
#endif

#endif /* NNRCONV_CABAC_ENCODER_H */
