/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* The DeepCABAC scan (clause 9.3.4): one iterator for every walk over a tensor's levels.
 *
 * Scan order 0 is row-major.  Scan orders 1..4 cut the rows x width matrix into blocks of
 * 2^(scan_order + 2) rows and columns: the block rows in order, in a block row the blocks from
 * left to right, in a block the rows from top to bottom, in a row the columns from left to
 * right.  Coders and estimators restart at every block row, so block rows are the unit of entry
 * points and threading.
 *
 * The iterator yields row segments, not single positions: a segment is the part of row y that
 * lies in the current block, columns [x0, x1), walked left to right by the caller's own inner
 * loop (which is where the time goes).  Usage, for block rows [first, end):
 *
 *     nc_scan s;
 *     nc_scan_init(&s, t, first, end);
 *     while (nc_scan_block_row(&s)) {         // s.block_row, rows [s.by, s.ye)
 *         while (nc_scan_segment(&s)) {       // row s.y, columns [s.x0, s.x1)
 *             ...
 *         }
 *         if (nc_scan_more_rows(&s)) { ... }  // another block row follows in the tensor
 *     }
 */
#ifndef NNRCONV_CABAC_SCAN_H
#define NNRCONV_CABAC_SCAN_H

#include <stdint.h>

#include "cabac.h"

typedef struct {
    uint64_t rows, width;
    uint64_t bh, bw;     /* block height and width (the whole matrix for scan order 0) */
    uint64_t by_end;     /* first matrix row after the last block row to walk */
    uint64_t block_row;  /* index of the current block row */
    uint64_t by, ye;     /* rows [by, ye) of the current block row */
    uint64_t y, x0, x1;  /* the current segment: row y, columns [x0, x1) */
} nc_scan;

/* Walk block rows [first, end) of tensor t (end may exceed the block-row count). */
static inline void nc_scan_init(nc_scan *s, const nc_tensor *t, uint64_t first, uint64_t end)
{
    s->rows = t->rows;
    s->width = t->width;
    s->bh = t->scan_order ? ((uint64_t)4 << t->scan_order) : t->rows;
    s->bw = t->scan_order ? ((uint64_t)4 << t->scan_order) : t->width;
    s->by_end = end * s->bh < s->rows ? end * s->bh : s->rows;
    s->block_row = first;
    s->by = first * s->bh;
    s->ye = s->by; /* no block row entered yet */
    s->y = 0;
    s->x0 = 0;
    s->x1 = 0;
}

/* Enter the next block row; 0 when all are done. */
static inline int nc_scan_block_row(nc_scan *s)
{
    if (s->ye != s->by) {
        /* leave the current one */
        s->by += s->bh;
        s->block_row++;
    }
    if (s->by >= s->by_end) {
        s->ye = s->by;
        return 0;
    }
    s->ye = s->by + s->bh < s->rows ? s->by + s->bh : s->rows;
    s->x0 = 0;
    s->x1 = 0;        /* the first block starts at column 0 */
    s->y = s->ye - 1; /* so that the first nc_scan_segment moves to (by, block 0) */
    return 1;
}

/* Move to the next row segment of the current block row; 0 at its end. */
static inline int nc_scan_segment(nc_scan *s)
{
    if (s->y + 1 < s->ye) {
        s->y++;
        return 1;
    }
    if (s->x1 >= s->width) {
        return 0;
    }
    s->x0 = s->x1;
    s->x1 = s->x0 + s->bw < s->width ? s->x0 + s->bw : s->width;
    s->y = s->by;
    return 1;
}

/* Whether another block row follows the current one in the tensor (whether or not it is
 * walked): where coders and estimators restart. */
static inline int nc_scan_more_rows(const nc_scan *s)
{
    return s->ye < s->rows;
}

/* ---- levels in scan order ------------------------------------------------------------------- */

/* Neighbour class of the previous level in scan order: 0 zero, 1 negative, 2 positive. */
static inline int nc_nb_class(int64_t v)
{
    return v == 0 ? 0 : (v < 0 ? 1 : 2);
}

/* Quantization index from the stored level: level = 2k - sgn(k) * (state & 1). */
static inline int32_t nc_level_to_index(int32_t v, int state)
{
    if (v != 0) {
        v += v < 0 ? -(state & 1) : (state & 1);
        v >>= 1;
    }
    return v;
}

#endif /* NNRCONV_CABAC_SCAN_H */
