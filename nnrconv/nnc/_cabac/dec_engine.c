/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* DeepCABAC decoder, the M-decoder arithmetic engine (ISO/IEC 15938-17 clause 9.3): start,
 * bypass bits, termination and stop pattern, and restarting at an entry point. */
#include <stdlib.h>
#include <string.h>

#include "decoder.h"

int nc_decoder_init(nc_decoder *d, const uint8_t *buf, uint64_t len, nc_status *st)
{
    memset(d, 0, sizeof(*d));
    d->buf = buf;
    d->len = len;
    if (len < 2) {
        return nc_fail(st, NC_ERR_STREAM, 0, "CABAC payload of %llu bytes is too short",
                       (unsigned long long)len);
    }
    d->range = 510;
    d->bits_needed = -8;
    d->value = (dec_byte(d) << 8);
    d->value |= dec_byte(d);
    d->started = 1;
    if (d->value >= (d->range << 7)) {
        return nc_fail(st, NC_ERR_STREAM, 0, "CABAC payload starts with an impossible value");
    }
    return NC_OK;
}

void nc_decoder_free(nc_decoder *d)
{
    free(d->ctx);
    d->ctx = NULL;
    d->ctx_cap = 0;
}

uint32_t nc_dec_bypass_bits(nc_decoder *d, uint32_t num_bits)
{
    uint32_t v = 0, i;
    for (i = 0; i < num_bits; i++) {
        v = (v << 1) | (uint32_t)dec_bypass(d);
    }
    return v;
}

int nc_decoder_check(const nc_decoder *d, nc_status *st)
{
    if (d->overrun) {
        return nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated");
    }
    return NC_OK;
}

int nc_decoder_finish(nc_decoder *d, uint64_t *used, nc_status *st)
{
    uint32_t scaled, last;
    d->range -= 2;
    scaled = d->range << 7;
    if (d->value < scaled) {
        return nc_fail(st, NC_ERR_STREAM, d->pos, "terminating bin of the CABAC payload not received");
    }
    if (d->overrun || d->pos == 0 || d->pos > d->len) {
        return nc_fail(st, NC_ERR_STREAM, d->len, "CABAC payload is truncated");
    }
    last = d->buf[d->pos - 1];
    if (((last << (8 + d->bits_needed)) & 0xff) != 0x80) {
        return nc_fail(st, NC_ERR_STREAM, d->pos - 1, "no stop bit and alignment at the end of the CABAC payload");
    }
    *used = d->pos;
    return NC_OK;
}

int nc_dec_seek(nc_decoder *d, uint64_t offset, uint32_t value, nc_status *st)
{
    uint64_t byte_off = (offset + 9) >> 3;
    uint32_t bit_off = (uint32_t)((offset + 9) & 7);
    uint64_t pos = byte_off + (bit_off != 0 ? 1 : 0);
    int32_t needed = (int32_t)bit_off - 9 + (bit_off == 0 ? 8 : 0);
    if (pos < 1 || pos > d->len || value > 255) {
        return nc_fail(st, NC_ERR_STREAM, d->len, "entry point at bit %llu lies outside the CABAC payload",
                       (unsigned long long)offset);
    }
    d->pos = pos;
    d->bits_needed = needed;
    d->range = 256;
    d->value = (value << 7) + (((uint32_t)d->buf[pos - 1] << (8 + needed)) & 127);
    return NC_OK;
}
