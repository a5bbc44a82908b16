/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC encoder, the M-coder arithmetic engine: byte output with carry resolution, bypass
 * bits, termination, and the stitching of block-row spans coded apart (enc_spans.c). */
#include <stdlib.h>
#include <string.h>

#include "encoder.h"

/* ---- byte output -------------------------------------------------------------------------- */

void nc_enc_push(nc_encoder *e, uint32_t byte)
{
    if (e->len == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 4096;
        uint8_t *nb = (uint8_t *)realloc(e->buf, ncap);
        if (nb == NULL) {
            e->oom = 1;
            return;
        }
        e->buf = nb;
        e->cap = ncap;
    }
    e->buf[e->len++] = (uint8_t)byte;
}

int nc_encoder_init(nc_encoder *e, size_t reserve)
{
    memset(e, 0, sizeof(*e));
    if (reserve < 64) {
        reserve = 64;
    }
    e->buf = (uint8_t *)malloc(reserve);
    if (e->buf == NULL) {
        return NC_ERR_NOMEM;
    }
    e->cap = reserve;
    e->low = 0;
    e->range = 510;
    e->bits_left = 23;
    e->num_buffered = 0;
    e->buffered = 0;
    return NC_OK;
}

void nc_encoder_free(nc_encoder *e)
{
    free(e->buf);
    free(e->ctx);
    free(e->opt);
    e->buf = NULL;
    e->ctx = NULL;
    e->opt = NULL;
}

/* Emit the settled byte above the 'bits_left' window; 0xFF bytes wait for a possible carry. */
void nc_enc_write_out(nc_encoder *e)
{
    uint32_t lead = e->low >> (24 - e->bits_left);
    e->bits_left += 8;
    e->low &= 0xffffffffu >> e->bits_left;
    if (lead == 0xff) {
        e->num_buffered++;
    } else if (e->num_buffered > 0) {
        uint32_t carry = lead >> 8;
        uint32_t byte = e->buffered + carry;
        e->buffered = lead & 0xff;
        nc_enc_push(e, byte);
        byte = (0xff + carry) & 0xff;
        while (e->num_buffered > 1) {
            nc_enc_push(e, byte);
            e->num_buffered--;
        }
    } else {
        e->num_buffered = 1;
        e->buffered = lead;
    }
}

void nc_enc_bypass_bits(nc_encoder *e, uint32_t value, uint32_t num_bits)
{
    if (num_bits < 32) {
        value &= (((uint32_t)1 << num_bits) - 1);
    }
    while (num_bits > 8) {
        uint32_t pattern;
        num_bits -= 8;
        pattern = value >> num_bits;
        e->low = (e->low << 8) + e->range * pattern;
        value -= pattern << num_bits;
        e->bits_left -= 8;
        if (e->bits_left < 12) {
            nc_enc_write_out(e);
        }
    }
    e->low = (e->low << num_bits) + e->range * value;
    e->bits_left -= (int32_t)num_bits;
    if (e->bits_left < 12) {
        nc_enc_write_out(e);
    }
}

int nc_encoder_finish(nc_encoder *e, nc_status *st)
{
    uint32_t i, nbits;
    if (e->finished) {
        return nc_fail(st, NC_ERR_VALUE, 0, "encoder already finished");
    }
    e->finished = 1;
    /* terminating bin = 1 */
    e->range -= 2;
    e->low += e->range;
    e->low <<= 7;
    e->range = 2 << 7;
    e->bits_left -= 7;
    if (e->bits_left < 12) {
        nc_enc_write_out(e);
    }
    /* resolve the carry into the buffered bytes */
    if (e->low >> (32 - e->bits_left)) {
        nc_enc_push(e, e->buffered + 1);
        while (e->num_buffered > 1) {
            nc_enc_push(e, 0x00);
            e->num_buffered--;
        }
        e->low -= (uint32_t)1 << (32 - e->bits_left);
    } else {
        if (e->num_buffered > 0) {
            nc_enc_push(e, e->buffered);
        }
        while (e->num_buffered > 1) {
            nc_enc_push(e, 0xff);
            e->num_buffered--;
        }
    }
    /* stop bit, then zero bits up to the byte boundary */
    e->low >>= 8;
    e->low <<= 1;
    e->low++;
    e->bits_left--;
    nbits = (uint32_t)(24 - e->bits_left);
    e->low <<= (32 - nbits);
    for (i = 0; i < nbits; i += 8) {
        nc_enc_push(e, (e->low >> (24 - i)) & 0xff);
    }
    if (e->oom) {
        return nc_fail(st, NC_ERR_NOMEM, 0, "out of memory while writing the CABAC payload");
    }
    return NC_OK;
}

__attribute__((noinline)) void nc_enc_flush(nc_encoder *e, enc_state *s)
{
    e->low = s->low;
    e->bits_left = s->bits_left;
    nc_enc_write_out(e);
    s->low = e->low;
    s->bits_left = e->bits_left;
}

int nc_enc_stitch_span(nc_encoder *e, nc_encoder *s)
{
    const uint32_t win = (uint32_t)(32 - s->bits_left); /* bits of s->low below its digits */
    uint32_t i, carry = s->low >> win;
    uint64_t nbits, pos;
    uint32_t top;

    s->low &= ((uint32_t)1 << win) - 1;
    nc_enc_push(s, s->buffered + carry);
    for (i = 1; i < s->num_buffered; i++) {
        nc_enc_push(s, (0xff + carry) & 0xff);
    }
    /* low's win bits, MSB first, then padding for the two-byte reads below */
    nbits = (uint64_t)s->len * 8 + win;
    for (i = 0; i < win; i += 8) {
        nc_enc_push(s, ((s->low << (32 - win)) >> (24 - i)) & 0xff);
    }
    nc_enc_push(s, 0);
    if (s->oom) {
        return 0;
    }
    /* S < 2^(T + 8): its top 9 bits are zero, the next 8 are added before any shift and the
     * remaining T bits are shifted in 8 at a time. */
#define SPAN_BITS(p, n)                                                                              \
    ((((uint32_t)s->buf[(p) >> 3] << 8 | s->buf[((p) >> 3) + 1]) >> (16 - ((p) & 7) - (n))) &        \
     (((uint32_t)1 << (n)) - 1))
    if (SPAN_BITS((uint64_t)0, 8) != 0 || SPAN_BITS((uint64_t)8, 1) != 0) {
        return -1; /* cannot happen: S is below 2^(T + 8) */
    }
    top = SPAN_BITS((uint64_t)9, 8);
    e->low += top;
    e->range = 1;
    for (pos = 17; pos + 8 <= nbits; pos += 8) {
        nc_enc_bypass_bits(e, SPAN_BITS(pos, 8), 8);
    }
    if (pos < nbits) {
        const uint32_t rest = (uint32_t)(nbits - pos);
        nc_enc_bypass_bits(e, SPAN_BITS(pos, rest), rest);
    }
#undef SPAN_BITS
    e->range = s->range;
    return 1;
}
