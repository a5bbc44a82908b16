/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC decoder of one tensor: the per-tensor flags (HDSP, row skipping), the context
 * parameter sets, and the levels in scan order, with the general binarization (codebook limits,
 * incremental TCA / HDSP contexts) or the fast path for plain levels (dec_fast.c), on one
 * thread or on several at the entry points (dec_spans.c).  See decoder.h for the files' jobs. */
#include <stdlib.h>
#include <string.h>

#include "decoder.h"

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

/* nc_dec_block_rows with the fast path's copy of the contexts (fctx, NULL unless the levels are
 * plain). */
static int decode_block_rows_fd(nc_decoder *d, block_rows_job *job, uint64_t first, uint64_t end, int state,
                                nc_status *st, fd_ctx *fctx)
{
    const nc_tensor *t = job->t;
    const uint64_t width = t->width;
    const uint32_t ng = t->num_gtx;
    const size_t nctx = NC_CTX_COUNT(ng);
    const int32_t *tca_base = job->tca_base;
    const uint8_t *hist = job->hist;
    const int plain = (t->cb_size == 0 || t->profile == 0) && tca_base == NULL && hist == NULL;
    const uint8_t *skip = job->skip;
    uint64_t x;
    size_t i;
    int nb = 0;
    nc_scan sc;

    nc_scan_init(&sc, t, first, end);
    while (nc_scan_block_row(&sc)) {
        const uint64_t block_row = sc.block_row;
        if (job->eps_in != NULL && block_row > 0) {
            if (nc_dec_seek(d, job->starts[block_row], job->eps_in[block_row - 1].value, st) != NC_OK) {
                return st->code;
            }
            state = (int)(job->eps_in[block_row - 1].dq_state & 7);
        }
        while (nc_scan_segment(&sc)) {
            const uint64_t y = sc.y, bx = sc.x0, xe = sc.x1;
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
                const uint64_t done = nc_dec_fast_segment(d, fctx, ng, row + bx, xe - bx, &state, &nb, t->dq);
                if (done < xe - bx) {
                    return nc_fail(st, NC_ERR_STREAM, d->pos,
                                   "decoded level at row %llu, column %llu does not fit in int32",
                                   (unsigned long long)y, (unsigned long long)(bx + done));
                }
                if (d->overrun) {
                    return nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated (while decoding row %llu)",
                                   (unsigned long long)y);
                }
                continue;
            }
            for (x = bx; x < xe; x++) {
                int64_t k = dec_weight(d, d->ctx, t, state, nb, tca_base != NULL ? tca_base[y * width + x] : 0,
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
                nb = nc_nb_class(k);
                if (t->dq) {
                    state = nc_dq_next[state][k & 1];
                }
            }
            if (d->overrun) {
                return nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated (while decoding row %llu)",
                               (unsigned long long)y);
            }
        }
        if (nc_scan_more_rows(&sc)) {
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

/* The fast path's copy of the contexts is on the stack for the usual numbers of flags. */
#define NC_FD_CTX_STACK 256
int nc_dec_block_rows(nc_decoder *d, block_rows_job *job, uint64_t first, uint64_t end, int state,
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
        rc = nc_dec_spans(d, &job, nblock_rows, threads, st);
    } else {
        if (eps_out != NULL && nblock_rows > 1) {
            job.eps_out = eps_out;
            job.n_eps_out = n_eps_out;
        }
        rc = nc_dec_block_rows(d, &job, 0, nblock_rows, 0, st);
    }
done:
    free(starts);
    free(skip);
    return rc;
}
