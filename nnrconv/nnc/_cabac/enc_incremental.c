/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder, incremental variants: coding an update against its parent tensor. */
#include <stdlib.h>

#include "encoder.h"

/* ---- incremental coding: temporal context adaptation (TCA) and HDSP ---------------------- *
 * A separate, general (codebook-aware) path for tensors coded against a base tensor or with a
 * significance history: the binarization of nc_enc_weight (enc_levels.c) and of opt_weight
 * (enc_params.c), with the contexts chosen by nc_sig_ctx_x / nc_sign_ctx_x / nc_gtx_ctx_x from
 * the co-located base level and the history bit (ContextModeler of the reference).  Its parameter-set choice records the bins per
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

static inline void inc_at(const nc_inc_ctx *ic, uint64_t pos, int32_t *b, int *h)
{
    *b = ic->base != NULL ? ic->base[pos] : 0;
    *h = ic->hist != NULL && ic->hist[pos] != 0;
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

/* The parameter-set recording (rec != NULL) or the coding (e) of all the levels, with TCA / HDSP
 * context selection (the scan and restarts of nc_enc_code_levels and record_levels). */
static void scan_levels_x(nc_encoder *e, nc_rec *rec, const int32_t *levels, const nc_tensor *t,
                          const uint8_t *skip, const nc_inc_ctx *ic, int *oom)
{
    const uint64_t width = t->width;
    const uint32_t ng = t->num_gtx;
    const size_t nctx = NC_CTX_COUNT(ng);
    uint64_t x;
    int state = 0;
    int nb = 0;
    size_t i;
    nc_scan sc;

    nc_scan_init(&sc, t, 0, nc_block_rows(t));
    while (nc_scan_block_row(&sc)) {
        while (nc_scan_segment(&sc)) {
            const int32_t *row = levels + sc.y * width;
            if (skip != NULL && skip[sc.y]) {
                if (t->dq) {
                    state = nc_dq_skip((uint8_t)state, width);
                }
                continue;
            }
            for (x = sc.x0; x < sc.x1; x++) {
                int32_t v = row[x], b;
                int32_t k = t->dq ? nc_level_to_index(v, state) : v;
                int h;
                inc_at(ic, sc.y * width + x, &b, &h);
                if (rec != NULL) {
                    /* the reference estimates rates on the stored level, not on k */
                    opt_weight_x(rec, ng, v, state, nb, b, h, oom);
                    nb = nc_nb_class(v);
                } else {
                    nc_enc_weight(e, e->ctx, t, k, state, nb, b, h);
                    nb = nc_nb_class(k);
                }
                if (t->dq) {
                    state = nc_dq_next[state][k & 1];
                }
            }
        }
        if (nc_scan_more_rows(&sc)) {
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

int nc_enc_choose_sets_x(const int32_t *levels, const nc_tensor *t, const uint8_t *skip, const nc_inc_ctx *ic,
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

void nc_enc_code_levels_x(nc_encoder *e, const int32_t *levels, const nc_tensor *t, const uint8_t *skip,
                          const nc_inc_ctx *ic)
{
    int oom = 0; /* coding never records */
    scan_levels_x(e, NULL, levels, t, skip, ic, &oom);
}
