/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder of one tensor: the per-tensor flags (HDSP, row skipping), then the
 * parameter-set search, its signalling and the coding of the levels, each on one thread, on
 * several (block-row spans) or in its incremental variant.  The parts live in enc_*.c; see
 * encoder.h for which file has which job. */
#include <stdlib.h>

#include "encoder.h"

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

int nc_encode_tensor(nc_encoder *e, const int32_t *levels, const nc_tensor *tin, uint32_t threads,
                     nc_status *st)
{
    nc_tensor t = *tin;
    uint8_t *skip = NULL;
    const uint32_t ng = t.num_gtx;
    size_t i, nctx;
    int flags_present, incremental;
    nc_inc_ctx ic;
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
        spans = nc_enc_make_spans(levels, &t, skip, nspans);
        if (spans == NULL) {
            free(skip);
            free(bits);
            return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for encoding threads");
        }
    }

    if (t.param_opt && (t.cb_size != 1 || t.profile == 0) && spans != NULL) {
        if (nc_enc_record_spans(spans, nspans, bits, st) != NC_OK) {
            free(spans);
            free(skip);
            free(bits);
            return st->code;
        }
    } else if (t.param_opt && (t.cb_size != 1 || t.profile == 0)) {
        int oom = 0;
        if (incremental) {
            oom = !nc_enc_choose_sets_x(levels, &t, skip, &ic, bits);
        } else {
            oom = !nc_enc_record_levels(levels, &t, skip, 0, nc_block_rows(&t), 0, 0, bits);
        }
        if (oom) {
            free(skip);
            free(bits);
            return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory for the parameter-set choice");
        }
    }
    nc_enc_signal_sets(e, &t, (const uint64_t (*)[9])bits, t.base != NULL, ic.hist != NULL);
    free(bits);

    if (t.scan_order != 0 && nc_block_rows(&t) > 1) {
        e->range = 256;
    }
    if (incremental) {
        nc_enc_code_levels_x(e, levels, &t, skip, &ic);
    } else if (spans != NULL) {
        if (nc_enc_code_spans(e, spans, nspans, st) != NC_OK) {
            free(spans);
            free(skip);
            return st->code;
        }
    } else {
        nc_enc_code_levels(e, levels, &t, skip, 0, nc_block_rows(&t), 0);
    }
    free(spans);
    free(skip);
    if (e->oom) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory while writing the CABAC payload");
    }
    return NC_OK;
}
