/* Copyright nnrconv contributors */
/* SPDX-License-Identifier: Apache-2.0 */
/* Python bindings of the DeepCABAC core: module nnrconv.nnc._cabac.
 *
 * Contract (see nnrconv/nnc/_cabac.pyi): inputs are borrowed through the buffer protocol and
 * must be C-contiguous with the exact dtype (int32 levels, float32 weights); nothing is silently
 * converted.  Outputs are bytes/bytearray objects this module allocates.  The GIL is released
 * around pure C coding work only.  An Encoder or Decoder must not be used from two threads at
 * once (a second concurrent call raises RuntimeError), and the caller must not mutate a buffer
 * while a call that borrows it runs.  Only nnrconv/nnc/cabac.py imports this module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
#include <string.h>

#include "cabac.h"

static PyObject *CabacError; /* (message, byte_offset) */

static PyObject *raise_status(const nc_status *st)
{
    switch (st->code) {
    case NC_ERR_NOMEM:
        return PyErr_NoMemory();
    case NC_ERR_VALUE:
        PyErr_SetString(PyExc_ValueError, st->msg);
        return NULL;
    case NC_ERR_UNSUPPORTED:
        PyErr_SetString(PyExc_NotImplementedError, st->msg);
        return NULL;
    case NC_ERR_OVERFLOW:
        PyErr_SetString(PyExc_OverflowError, st->msg);
        return NULL;
    default: {
        PyObject *args = Py_BuildValue("(sK)", st->msg, (unsigned long long)st->byte_offset);
        if (args != NULL) {
            PyErr_SetObject(CabacError, args);
            Py_DECREF(args);
        }
        return NULL;
    }
    }
}

/* Borrow a C-contiguous buffer of 4-byte items of the given kind ('i' int32, 'f' float32). */
static int get_array(PyObject *obj, Py_buffer *view, char kind, const char *name)
{
    const char *fmt;
    if (!PyObject_CheckBuffer(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a %s numpy array (buffer), got %.100s", name,
                     kind == 'i' ? "int32" : "float32", Py_TYPE(obj)->tp_name);
        return -1;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s must be C-contiguous; pass numpy.ascontiguousarray(%s)", name,
                     name);
        return -1;
    }
    fmt = view->format != NULL ? view->format : "B";
    if (*fmt == '@' || *fmt == '=' || *fmt == '<') {
        fmt++;
    }
    if (view->itemsize != 4 || fmt[1] != '\0' ||
        !(kind == 'i' ? (fmt[0] == 'i' || fmt[0] == 'l') : fmt[0] == 'f')) {
        PyErr_Format(PyExc_TypeError, "%s must have dtype %s, got buffer format %.20s (item size %zd)", name,
                     kind == 'i' ? "int32" : "float32", view->format ? view->format : "B", view->itemsize);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

static int parse_dims(unsigned long long rows, unsigned long long width, Py_ssize_t nbytes,
                      const char *name)
{
    if (rows == 0 || width == 0 || rows > ((unsigned long long)1 << 40) / width) {
        PyErr_Format(PyExc_ValueError, "invalid matrix view %llu x %llu", rows, width);
        return -1;
    }
    if (nbytes >= 0 && (unsigned long long)nbytes != rows * width * 4) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd elements, expected %llu x %llu", name, nbytes / 4,
                     rows, width);
        return -1;
    }
    return 0;
}

/* Optional side inputs of incremental coding: base (int32 levels of the parent tensor) and hist
 * (one byte per element, 0/1: non-zero in an earlier update), both rows * width elements.  None
 * leaves the view empty.  Released by release_side. */
typedef struct {
    Py_buffer base;
    Py_buffer hist;
    int has_base;
    int has_hist;
} side_views;

static void release_side(side_views *sv)
{
    if (sv->has_base) {
        PyBuffer_Release(&sv->base);
        sv->has_base = 0;
    }
    if (sv->has_hist) {
        PyBuffer_Release(&sv->hist);
        sv->has_hist = 0;
    }
}

static int get_side(PyObject *base_obj, PyObject *hist_obj, unsigned long long n, side_views *sv)
{
    memset(sv, 0, sizeof(*sv));
    if (base_obj != Py_None) {
        if (get_array(base_obj, &sv->base, 'i', "base") < 0) {
            return -1;
        }
        sv->has_base = 1;
        if ((unsigned long long)sv->base.len != n * 4) {
            PyErr_Format(PyExc_ValueError, "base holds %zd elements, the tensor %llu", sv->base.len / 4, n);
            release_side(sv);
            return -1;
        }
    }
    if (hist_obj != Py_None) {
        const char *fmt;
        if (PyObject_GetBuffer(hist_obj, &sv->hist, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
            PyErr_Clear();
            PyErr_SetString(PyExc_TypeError, "hist must be a C-contiguous uint8 numpy array");
            release_side(sv);
            return -1;
        }
        sv->has_hist = 1;
        fmt = sv->hist.format != NULL ? sv->hist.format : "B";
        if (*fmt == '@' || *fmt == '=' || *fmt == '<' || *fmt == '|') {
            fmt++;
        }
        if (sv->hist.itemsize != 1 || fmt[1] != '\0' || !(fmt[0] == 'B' || fmt[0] == 'b' || fmt[0] == '?')) {
            PyErr_Format(PyExc_TypeError, "hist must have dtype uint8, got buffer format %.20s",
                         sv->hist.format ? sv->hist.format : "B");
            release_side(sv);
            return -1;
        }
        if ((unsigned long long)sv->hist.len != n) {
            PyErr_Format(PyExc_ValueError, "hist holds %zd elements, the tensor %llu", sv->hist.len, n);
            release_side(sv);
            return -1;
        }
    }
    return 0;
}

/* ---- Encoder ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    nc_encoder enc;
    int ready;
    int busy;
} EncoderObject;

static int Encoder_init(EncoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"reserve", NULL};
    Py_ssize_t reserve = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|n:Encoder", kwlist, &reserve)) {
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder is in use by another thread");
        return -1;
    }
    if (self->ready) {
        nc_encoder_free(&self->enc);
        self->ready = 0;
    }
    if (reserve < 0 || reserve > ((Py_ssize_t)1 << 34)) {
        reserve = 0;
    }
    if (nc_encoder_init(&self->enc, (size_t)reserve) != NC_OK) {
        PyErr_NoMemory();
        return -1;
    }
    self->ready = 1;
    return 0;
}

static void Encoder_dealloc(EncoderObject *self)
{
    if (self->ready) {
        nc_encoder_free(&self->enc);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int encoder_usable(EncoderObject *self)
{
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder was not initialised");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder is in use by another thread");
        return 0;
    }
    if (self->enc.finished) {
        PyErr_SetString(PyExc_RuntimeError, "Encoder is finished; start a new one for the next payload");
        return 0;
    }
    return 1;
}

static PyObject *Encoder_encode_bypass(EncoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", "num_bits", NULL};
    long long value;
    int num_bits;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Li:encode_bypass", kwlist, &value, &num_bits)) {
        return NULL;
    }
    if (!encoder_usable(self)) {
        return NULL;
    }
    if (num_bits < 0 || num_bits > 32) {
        PyErr_Format(PyExc_ValueError, "num_bits %d is not in 0..32", num_bits);
        return NULL;
    }
    if (num_bits < 32 && (value >= (1LL << num_bits) || value < -(1LL << num_bits))) {
        PyErr_Format(PyExc_ValueError, "value %lld does not fit in %d bits", value, num_bits);
        return NULL;
    }
    nc_enc_bypass_bits(&self->enc, (uint32_t)(unsigned long long)value, (uint32_t)num_bits);
    Py_RETURN_NONE;
}

static PyObject *Encoder_encode_levels(EncoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"levels", "rows", "width", "dq", "scan_order", "profile", "num_gtx",
                             "param_opt", "row_skip", "parent_present", "codebook_size",
                             "codebook_zero_offset", "base", "hist", "threads", NULL};
    PyObject *levels_obj, *base_obj = Py_None, *hist_obj = Py_None;
    side_views sv;
    unsigned long long rows, width;
    int dq = 0, scan_order = 0, profile = 1, param_opt = 1, row_skip = 0, parent_present = 0;
    unsigned int num_gtx = 11, cb_size = 0, cb_zero = 0, threads = 1;
    Py_buffer view;
    nc_tensor t;
    nc_status st = {0};
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKK|$pipIpppIIOOI:encode_levels", kwlist, &levels_obj, &rows,
                                     &width, &dq, &scan_order, &profile, &num_gtx, &param_opt, &row_skip,
                                     &parent_present, &cb_size, &cb_zero, &base_obj, &hist_obj, &threads)) {
        return NULL;
    }
    if (!encoder_usable(self)) {
        return NULL;
    }
    if (get_array(levels_obj, &view, 'i', "levels") < 0) {
        return NULL;
    }
    if (parse_dims(rows, width, view.len, "levels") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    if (get_side(base_obj, hist_obj, rows * width, &sv) < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    memset(&t, 0, sizeof(t));
    t.base = sv.has_base ? (const int32_t *)sv.base.buf : NULL;
    t.hist = sv.has_hist ? (const uint8_t *)sv.hist.buf : NULL;
    t.rows = rows;
    t.width = width;
    t.dq = dq;
    t.scan_order = scan_order;
    t.profile = profile;
    t.num_gtx = num_gtx;
    t.param_opt = param_opt;
    t.row_skip = row_skip;
    t.parent_present = parent_present;
    t.cb_size = cb_size;
    t.cb_zero = cb_zero;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = nc_encode_tensor(&self->enc, (const int32_t *)view.buf, &t, threads, &st);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&view);
    release_side(&sv);
    if (rc != NC_OK) {
        return raise_status(&st);
    }
    Py_RETURN_NONE;
}

static PyObject *Encoder_finish(EncoderObject *self, PyObject *Py_UNUSED(ignored))
{
    nc_status st = {0};
    if (!encoder_usable(self)) {
        return NULL;
    }
    if (nc_encoder_finish(&self->enc, &st) != NC_OK) {
        return raise_status(&st);
    }
    return PyBytes_FromStringAndSize((const char *)self->enc.buf, (Py_ssize_t)self->enc.len);
}

static PyMethodDef Encoder_methods[] = {
    {"encode_bypass", (PyCFunction)(void (*)(void))Encoder_encode_bypass, METH_VARARGS | METH_KEYWORDS,
     "encode_bypass(value, num_bits)\n--\n\nWrite num_bits bypass bins, MSB first (two's complement "
     "for negative values)."},
    {"encode_levels", (PyCFunction)(void (*)(void))Encoder_encode_levels, METH_VARARGS | METH_KEYWORDS,
     "encode_levels(levels, rows, width, *, dq, scan_order, profile, num_gtx, param_opt, row_skip, "
     "parent_present, codebook_size, codebook_zero_offset, base=None, hist=None, threads=1)\n--\n\nCode "
     "one tensor's int32 levels (row-skip flags, context-parameter signalling, levels); base: parent "
     "levels (TCA), hist: uint8 significance history (HDSP flag 1).  With scan order 1..4, several block "
     "rows and no base or hist, the block rows are worked on on up to `threads` threads (same bytes)."},
    {"finish", (PyCFunction)Encoder_finish, METH_NOARGS,
     "finish()\n--\n\nCode the terminating bin, flush, and return the payload bytes."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EncoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nnrconv.nnc._cabac.Encoder",
    .tp_basicsize = sizeof(EncoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One DeepCABAC arithmetic-coder stream (the payload of one NDU).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Encoder_init,
    .tp_dealloc = (destructor)Encoder_dealloc,
    .tp_methods = Encoder_methods,
};

/* ---- Decoder ------------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    int has_view;
    nc_decoder dec;
    int ready;
    int failed;
    int finished;
    int busy;
} DecoderObject;

static void decoder_release(DecoderObject *self)
{
    if (self->ready) {
        nc_decoder_free(&self->dec);
        self->ready = 0;
    }
    if (self->has_view) {
        PyBuffer_Release(&self->view);
        self->has_view = 0;
    }
}

static int Decoder_init(DecoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"payload", NULL};
    PyObject *payload;
    nc_status st = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Decoder", kwlist, &payload)) {
        return -1;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder is in use by another thread");
        return -1;
    }
    decoder_release(self);
    self->failed = 0;
    self->finished = 0;
    if (PyObject_GetBuffer(payload, &self->view, PyBUF_C_CONTIGUOUS) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "payload must be a contiguous bytes-like object, got %.100s",
                     Py_TYPE(payload)->tp_name);
        return -1;
    }
    self->has_view = 1;
    if (nc_decoder_init(&self->dec, (const uint8_t *)self->view.buf, (uint64_t)self->view.len, &st) != NC_OK) {
        self->ready = 1;
        self->failed = 1;
        raise_status(&st);
        return -1;
    }
    self->ready = 1;
    return 0;
}

static void Decoder_dealloc(DecoderObject *self)
{
    decoder_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int decoder_usable(DecoderObject *self)
{
    if (!self->ready || self->failed) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder is not usable (not initialised, or an earlier call failed)");
        return 0;
    }
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder is in use by another thread");
        return 0;
    }
    if (self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "Decoder is finished");
        return 0;
    }
    return 1;
}

static PyObject *Decoder_decode_bypass(DecoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"num_bits", NULL};
    int num_bits;
    uint32_t v;
    nc_status st = {0};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i:decode_bypass", kwlist, &num_bits)) {
        return NULL;
    }
    if (!decoder_usable(self)) {
        return NULL;
    }
    if (num_bits < 0 || num_bits > 32) {
        PyErr_Format(PyExc_ValueError, "num_bits %d is not in 0..32", num_bits);
        return NULL;
    }
    v = nc_dec_bypass_bits(&self->dec, (uint32_t)num_bits);
    if (nc_decoder_check(&self->dec, &st) != NC_OK) {
        self->failed = 1;
        return raise_status(&st);
    }
    return PyLong_FromUnsignedLong(v);
}

static int parse_entry_points(PyObject *obj, nc_entry_point **out, uint64_t *n)
{
    PyObject *seq = PySequence_Fast(obj, "entry_points must be a sequence of (bit_offset, value, dq_state)");
    Py_ssize_t i, len;
    nc_entry_point *eps;
    if (seq == NULL) {
        return -1;
    }
    len = PySequence_Fast_GET_SIZE(seq);
    eps = (nc_entry_point *)PyMem_Malloc((size_t)(len > 0 ? len : 1) * sizeof(nc_entry_point));
    if (eps == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (i = 0; i < len; i++) {
        unsigned long long off;
        unsigned int value, dq_state;
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyArg_ParseTuple(item, "KII;entry point must be (bit_offset, value, dq_state)", &off, &value,
                              &dq_state)) {
            PyMem_Free(eps);
            Py_DECREF(seq);
            return -1;
        }
        if (value > 255 || dq_state > 7) {
            PyErr_Format(PyExc_ValueError, "entry point %zd has value %u / dq_state %u out of range", i, value,
                         dq_state);
            PyMem_Free(eps);
            Py_DECREF(seq);
            return -1;
        }
        eps[i].bit_offset = off;
        eps[i].value = value;
        eps[i].dq_state = dq_state;
    }
    Py_DECREF(seq);
    *out = eps;
    *n = (uint64_t)len;
    return 0;
}

static PyObject *Decoder_decode_levels(DecoderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rows", "width", "dq", "scan_order", "profile", "num_gtx", "parent_present",
                             "codebook_size", "codebook_zero_offset", "entry_points",
                             "create_entry_points", "max_elements", "base", "hist", "threads", NULL};
    PyObject *base_obj = Py_None, *hist_obj = Py_None;
    side_views sv;
    unsigned long long rows, width, max_elements = (1ULL << 31);
    unsigned int threads = 1;
    int dq = 0, scan_order = 0, profile = 1, parent_present = 0, create_eps = 0;
    unsigned int num_gtx = 11, cb_size = 0, cb_zero = 0;
    PyObject *eps_obj = Py_None, *out = NULL, *eps_list = NULL, *result;
    nc_entry_point *eps_in = NULL, *eps_out = NULL;
    uint64_t n_eps_in = 0, n_eps_out = 0, nbr;
    nc_tensor t;
    nc_status st = {0};
    int rc;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KK|$piiIpIIOpKOOI:decode_levels", kwlist, &rows, &width, &dq,
                                     &scan_order, &profile, &num_gtx, &parent_present, &cb_size, &cb_zero,
                                     &eps_obj, &create_eps, &max_elements, &base_obj, &hist_obj, &threads)) {
        return NULL;
    }
    if (!decoder_usable(self)) {
        return NULL;
    }
    if (parse_dims(rows, width, -1, "levels") < 0) {
        return NULL;
    }
    /* Declared sizes come from the (possibly corrupt) bitstream: check before allocating. */
    if (rows * width > max_elements) {
        PyObject *a = Py_BuildValue("(sK)", "tensor size exceeds the element limit", 0ULL);
        if (a != NULL) {
            PyErr_SetObject(CabacError, a);
            Py_DECREF(a);
        }
        return NULL;
    }
    memset(&t, 0, sizeof(t));
    t.rows = rows;
    t.width = width;
    t.dq = dq;
    t.scan_order = scan_order;
    t.profile = profile;
    t.num_gtx = num_gtx;
    t.parent_present = parent_present;
    t.cb_size = cb_size;
    t.cb_zero = cb_zero;
    if (nc_tensor_check(&t, &st) != NC_OK) {
        return raise_status(&st);
    }
    if (get_side(base_obj, hist_obj, rows * width, &sv) < 0) {
        return NULL;
    }
    t.base = sv.has_base ? (const int32_t *)sv.base.buf : NULL;
    t.hist = sv.has_hist ? (const uint8_t *)sv.hist.buf : NULL;
    if (eps_obj != Py_None && parse_entry_points(eps_obj, &eps_in, &n_eps_in) < 0) {
        release_side(&sv);
        return NULL;
    }
    nbr = nc_block_rows(&t);
    if (create_eps && nbr > 1) {
        eps_out = (nc_entry_point *)PyMem_Malloc((size_t)nbr * sizeof(nc_entry_point));
        if (eps_out == NULL) {
            PyMem_Free(eps_in);
            release_side(&sv);
            return PyErr_NoMemory();
        }
    }
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(rows * width * 4));
    if (out == NULL) {
        PyMem_Free(eps_in);
        PyMem_Free(eps_out);
        release_side(&sv);
        return NULL;
    }
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    rc = nc_decode_tensor(&self->dec, (int32_t *)PyByteArray_AS_STRING(out), &t, eps_in,
                          eps_obj != Py_None ? n_eps_in : 0, eps_out, &n_eps_out, threads, &st);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    release_side(&sv);
    if (eps_obj == Py_None) {
        eps_in = NULL;
    }
    PyMem_Free(eps_in);
    if (rc != NC_OK) {
        PyMem_Free(eps_out);
        Py_DECREF(out);
        self->failed = rc == NC_ERR_STREAM || rc == NC_ERR_UNSUPPORTED;
        return raise_status(&st);
    }
    if (create_eps) {
        uint64_t i;
        eps_list = PyList_New((Py_ssize_t)n_eps_out);
        if (eps_list == NULL) {
            PyMem_Free(eps_out);
            Py_DECREF(out);
            return NULL;
        }
        for (i = 0; i < n_eps_out; i++) {
            PyObject *tup = Py_BuildValue("(KII)", (unsigned long long)eps_out[i].bit_offset, eps_out[i].value,
                                          eps_out[i].dq_state);
            if (tup == NULL) {
                PyMem_Free(eps_out);
                Py_DECREF(out);
                Py_DECREF(eps_list);
                return NULL;
            }
            PyList_SET_ITEM(eps_list, (Py_ssize_t)i, tup);
        }
    } else {
        eps_list = Py_None;
        Py_INCREF(eps_list);
    }
    PyMem_Free(eps_out);
    result = PyTuple_Pack(2, out, eps_list);
    Py_DECREF(out);
    Py_DECREF(eps_list);
    return result;
}

static PyObject *Decoder_finish(DecoderObject *self, PyObject *Py_UNUSED(ignored))
{
    nc_status st = {0};
    uint64_t used = 0;
    if (!decoder_usable(self)) {
        return NULL;
    }
    if (nc_decoder_finish(&self->dec, &used, &st) != NC_OK) {
        self->failed = 1;
        return raise_status(&st);
    }
    self->finished = 1;
    return PyLong_FromUnsignedLongLong(used);
}

static PyObject *Decoder_get_bytes_read(DecoderObject *self, void *Py_UNUSED(closure))
{
    if (!self->ready) {
        return PyLong_FromLong(0);
    }
    return PyLong_FromUnsignedLongLong(self->dec.pos);
}

static PyMethodDef Decoder_methods[] = {
    {"decode_bypass", (PyCFunction)(void (*)(void))Decoder_decode_bypass, METH_VARARGS | METH_KEYWORDS,
     "decode_bypass(num_bits)\n--\n\nRead num_bits bypass bins (unsigned, MSB first)."},
    {"decode_levels", (PyCFunction)(void (*)(void))Decoder_decode_levels, METH_VARARGS | METH_KEYWORDS,
     "decode_levels(rows, width, *, dq, scan_order, profile, num_gtx, parent_present, codebook_size, "
     "codebook_zero_offset, entry_points=None, create_entry_points=False, max_elements=2**31, base=None, "
     "hist=None, threads=1)\n--\n\nDecode one tensor; returns (int32 levels as bytearray, entry points or None). "
     "base: parent levels (TCA); hist: uint8 significance history used if the HDSP flag is set. With entry "
     "points the block rows are decoded on up to `threads` threads."},
    {"finish", (PyCFunction)Decoder_finish, METH_NOARGS,
     "finish()\n--\n\nDecode the terminating bin, check the stop pattern, return bytes consumed."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Decoder_getset[] = {
    {"bytes_read", (getter)Decoder_get_bytes_read, NULL, "Bytes of the payload consumed so far.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject DecoderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "nnrconv.nnc._cabac.Decoder",
    .tp_basicsize = sizeof(DecoderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Decoder of one DeepCABAC payload; borrows the payload buffer for its lifetime.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Decoder_init,
    .tp_dealloc = (destructor)Decoder_dealloc,
    .tp_methods = Decoder_methods,
    .tp_getset = Decoder_getset,
};

/* ---- functions ---------------------------------------------------------------------------- */

static PyObject *mod_quantize(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"weights", "rows", "width", "qp", "qp_density", "dq", "scan_order",
                             "lambda_scale", "max_num_no_rem", NULL};
    PyObject *w_obj, *out;
    unsigned long long rows, width;
    int qp, qp_density, dq = 0, scan_order = 0, rc;
    double lambda_scale = 0.0;
    unsigned int max_num_no_rem = NC_RD_DEFAULT_NUM_NO_REM;
    int32_t qp_used;
    Py_buffer view;
    nc_status st = {0};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OKKii|$pidI:quantize", kwlist, &w_obj, &rows, &width, &qp,
                                     &qp_density, &dq, &scan_order, &lambda_scale, &max_num_no_rem)) {
        return NULL;
    }
    if (get_array(w_obj, &view, 'f', "weights") < 0) {
        return NULL;
    }
    if (parse_dims(rows, width, view.len, "weights") < 0) {
        PyBuffer_Release(&view);
        return NULL;
    }
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(rows * width * 4));
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    qp_used = qp;
    Py_BEGIN_ALLOW_THREADS
    rc = nc_quantize_rd((const float *)view.buf, (int32_t *)PyByteArray_AS_STRING(out), rows, width, &qp_used,
                        qp_density, dq, scan_order, lambda_scale, (uint32_t)max_num_no_rem, &st);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (rc != NC_OK) {
        Py_DECREF(out);
        return raise_status(&st);
    }
    return Py_BuildValue("(Ni)", out, (int)qp_used);
}

static PyObject *mod_dequantize(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"levels", "qp", "qp_density", "in_place", NULL};
    PyObject *l_obj, *out;
    int qp, qp_density, in_place = 0;
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "Oii|$p:dequantize", kwlist, &l_obj, &qp, &qp_density,
                                     &in_place)) {
        return NULL;
    }
    if (qp_density < 0 || qp_density > 7) {
        PyErr_Format(PyExc_ValueError, "qp_density %d is not in 0..7", qp_density);
        return NULL;
    }
    if (get_array(l_obj, &view, 'i', "levels") < 0) {
        return NULL;
    }
    if (in_place) {
        /* each element is read as int32 before the float32 is stored over it */
        if (view.readonly) {
            PyBuffer_Release(&view);
            PyErr_SetString(PyExc_ValueError, "in-place dequantization needs a writable levels buffer");
            return NULL;
        }
        Py_BEGIN_ALLOW_THREADS
        nc_dequantize((const int32_t *)view.buf, (float *)view.buf, (uint64_t)(view.len / 4), qp, qp_density);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    out = PyByteArray_FromStringAndSize(NULL, view.len);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    Py_BEGIN_ALLOW_THREADS
    nc_dequantize((const int32_t *)view.buf, (float *)PyByteArray_AS_STRING(out), (uint64_t)(view.len / 4), qp,
                  qp_density);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    return out;
}

static PyObject *mod_step_size(PyObject *Py_UNUSED(mod), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"qp", "qp_density", NULL};
    int qp, qp_density;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ii:step_size", kwlist, &qp, &qp_density)) {
        return NULL;
    }
    if (qp_density < 0 || qp_density > 7) {
        PyErr_Format(PyExc_ValueError, "qp_density %d is not in 0..7", qp_density);
        return NULL;
    }
    return PyFloat_FromDouble(nc_step_size(qp, qp_density));
}

static PyMethodDef module_methods[] = {
    {"quantize", (PyCFunction)(void (*)(void))mod_quantize, METH_VARARGS | METH_KEYWORDS,
     "quantize(weights, rows, width, qp, qp_density, *, dq, scan_order, lambda_scale, max_num_no_rem)\n--\n\n"
     "Quantize float32 weights; returns (int32 levels as bytearray, QP actually used)."},
    {"dequantize", (PyCFunction)(void (*)(void))mod_dequantize, METH_VARARGS | METH_KEYWORDS,
     "dequantize(levels, qp, qp_density, *, in_place=False)\n--\n\nfloat32 step * level, as bytearray (in_place: "
     "written over the levels, returns None)."},
    {"step_size", (PyCFunction)(void (*)(void))mod_step_size, METH_VARARGS | METH_KEYWORDS,
     "step_size(qp, qp_density)\n--\n\nQuantization step size (float32 precision)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cabac_module = {
    PyModuleDef_HEAD_INIT, "nnrconv.nnc._cabac",
    "DeepCABAC entropy coding and quantization (ISO/IEC 15938-17), compiled core.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cabac(void)
{
    PyObject *m;
    nc_tables_init();
    if (PyType_Ready(&EncoderType) < 0 || PyType_Ready(&DecoderType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&cabac_module);
    if (m == NULL) {
        return NULL;
    }
    CabacError = PyErr_NewExceptionWithDoc("nnrconv.nnc._cabac.CabacError",
                                           "Corrupt or truncated CABAC payload: args are (message, byte_offset).",
                                           PyExc_ValueError, NULL);
    if (CabacError == NULL) {
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&EncoderType);
    Py_INCREF(&DecoderType);
    Py_INCREF(CabacError); /* the module steals one reference, the static pointer keeps one */
    if (PyModule_AddObject(m, "Encoder", (PyObject *)&EncoderType) < 0 ||
        PyModule_AddObject(m, "Decoder", (PyObject *)&DecoderType) < 0 ||
        PyModule_AddObject(m, "CabacError", CabacError) < 0 ||
        PyModule_AddIntConstant(m, "MAX_GTX_FLAGS", NC_MAX_GTX) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
