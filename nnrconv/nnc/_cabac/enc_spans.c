/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder on several threads: a tensor's block rows split into spans. */
#include <stdlib.h>
#include <string.h>

#include "encoder.h"

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

struct enc_span {
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
};

static void *enc_span_run(void *arg)
{
    enc_span *w = (enc_span *)arg;
    if (!w->coding) {
        w->oom = !nc_enc_record_levels(w->levels, w->t, w->skip, w->first, w->end, w->state, w->nb, w->bits);
    } else {
        nc_enc_code_levels(w->enc, w->levels, w->t, w->skip, w->first, w->end, w->state);
    }
    return NULL;
}

/* DQ state and estimators' neighbour class at the start of each span (w[k].first ascending). */
static void span_starts(enc_span *w, uint64_t n, const int32_t *levels, const nc_tensor *t,
                        const uint8_t *skip)
{
    const uint64_t width = t->width;
    const uint64_t bh = (uint64_t)4 << t->scan_order;
    uint64_t k, br = 0, y, x;
    int state = 0;
    nc_scan sc;

    for (k = 0; k < n; k++) {
        /* the DQ state: walk the block rows before this span's first */
        if (t->dq && br < w[k].first) {
            nc_scan_init(&sc, t, br, w[k].first);
            while (nc_scan_block_row(&sc)) {
                while (nc_scan_segment(&sc)) {
                    const int32_t *row = levels + sc.y * width;
                    if (skip != NULL && skip[sc.y]) {
                        state = nc_dq_skip((uint8_t)state, width);
                        continue;
                    }
                    for (x = sc.x0; x < sc.x1; x++) {
                        state = nc_dq_next[state][nc_level_to_index(row[x], state) & 1];
                    }
                }
            }
            br = w[k].first;
        }
        w[k].state = state;
        /* the neighbour: the last level in scan order of the last block row with a coded row,
         * i.e. the last column of its last coded row (a level and its index share the class) */
        w[k].nb = 0;
        for (y = w[k].first * bh; y > 0; y--) {
            if (skip == NULL || !skip[y - 1]) {
                w[k].nb = nc_nb_class(levels[(y - 1) * width + width - 1]);
                break;
            }
        }
    }
}

enc_span *nc_enc_make_spans(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, uint64_t n)
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

int nc_enc_record_spans(enc_span *w, uint64_t n, uint64_t (*bits)[9], nc_status *st)
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

int nc_enc_code_spans(nc_encoder *e, enc_span *w, uint64_t n, nc_status *st)
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
            sub[k].num_buffered = 1; /* a leading zero byte: see nc_enc_stitch_span */
            sub[k].buffered = 0;
        }
    }
    nc_run_spans(enc_span_run, w, (size_t)n, sizeof(*w));
    for (k = 1; k < n; k++) {
        if (e->num_buffered == 0) {
            /* Nothing written yet: the first byte out has its own rule (a leading 0xFF is
             * buffered as 0), so code this span in place instead of stitching. */
            nc_enc_code_levels(e, w[k].levels, t, w[k].skip, w[k].first, w[k].end, w[k].state);
        } else {
            const int ok = sub[k].oom ? 0 : nc_enc_stitch_span(e, &sub[k]);
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
