/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Internal to the decoder's files: the arithmetic engine's inline bin decoding and what the
 * files call of each other.  Every byte read is bounds-checked (reads past the end yield zeros
 * and set `overrun`, which fails the tensor), every loop is bounded by the element count or a
 * constant, and decoded magnitudes are checked against the int32 range before they are stored.
 *
 *   dec_engine.c  M-decoder engine: start, bypass bits, termination, seeking to entry points
 *   dec_fast.c    the fast path for plain levels: 64-bit bit window, branch-free bins
 *   dec_levels.c  binarization of levels / codebook indices (with the incremental TCA / HDSP
 *                 contexts), parameter-set reading, the scan loop and nc_decode_tensor
 *   dec_spans.c   block rows split across threads at their entry points
 */
#ifndef NNRCONV_CABAC_DECODER_H
#define NNRCONV_CABAC_DECODER_H

#include <stdint.h>

#include "cabac.h"
#include "scan.h"

#if defined(__GNUC__) && !defined(_WIN32)
#pragma GCC visibility push(hidden)
#define NC_DEC_VISIBILITY_PUSHED 1
#endif

/* ---- engine (dec_engine.c) -------------------------------------------------------------------- */

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

/* Bit position used by entry points: counts the bits the decoder has consumed, minus 9. */
static inline uint64_t dec_bit_offset(const nc_decoder *d)
{
    return 8 * d->pos - 8 + (uint64_t)(int64_t)d->bits_needed;
}

/* Restart the decoder at an entry point: bit offset (as dec_bit_offset) and its value byte. */
int nc_dec_seek(nc_decoder *d, uint64_t offset, uint32_t value, nc_status *st);

/* ---- fast path (dec_fast.c) ------------------------------------------------------------------- */

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

/* Decode n plain levels (no codebook, no incremental contexts) of one row segment into out,
 * with the DQ state and neighbour class carried in *state / *nb; returns the column of a level
 * that overflows int32, or n. */
uint64_t nc_dec_fast_segment(nc_decoder *d, fd_ctx *ctx, uint32_t ng, int32_t *out, uint64_t n, int *state,
                             int *nb, int dq);

/* ---- block rows (dec_levels.c) and threads (dec_spans.c) -------------------------------------- */

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
int nc_dec_block_rows(nc_decoder *d, block_rows_job *job, uint64_t first, uint64_t end, int state,
                      nc_status *st);
/* Decode all block rows (with entry points) on up to `threads` threads; falls back to one span
 * when threads cannot be created.  On failure the error of the earliest failing span is
 * reported. */
int nc_dec_spans(nc_decoder *d, block_rows_job *job, uint64_t nblock_rows, uint32_t threads, nc_status *st);

#if defined(NC_DEC_VISIBILITY_PUSHED)
#pragma GCC visibility pop
#undef NC_DEC_VISIBILITY_PUSHED
#endif

#endif /* NNRCONV_CABAC_DECODER_H */
