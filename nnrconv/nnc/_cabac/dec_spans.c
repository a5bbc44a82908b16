/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC decoder on several threads: a tensor's block rows split into spans at their entry
 * points. */
#include <stdlib.h>
#include <string.h>

#include "decoder.h"

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
    w->rc = nc_dec_block_rows(&w->d, w->job, w->first, w->end, w->state, &w->st);
    return NULL;
}

int nc_dec_spans(nc_decoder *d, block_rows_job *job, uint64_t nblock_rows, uint32_t threads, nc_status *st)
{
    const size_t nctx = NC_CTX_COUNT(job->t->num_gtx);
    uint64_t n = threads < nblock_rows ? threads : nblock_rows, k;
    span_work *w;
    int rc = NC_OK;

    if (n <= 1) {
        return nc_dec_block_rows(d, job, 0, nblock_rows, 0, st);
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
