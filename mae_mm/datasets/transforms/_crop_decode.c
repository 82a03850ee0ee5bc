/*
 * Fast path of FastRandomResizedCrop: decode only a JPEG's crop region, through libjpeg-turbo's
 * public API. The resize is done in Python by a maintained library (Pillow or OpenCV).
 *
 * decode_region(data, left, top, width, height, scale_denom=1) -> bytearray (height, width, 3) BGR
 *     libjpeg-turbo's jpeg_crop_scanline / jpeg_skip_scanlines: columns outside the region (but
 *     two on each side) are neither inverse-transformed nor colour-converted, rows below it are
 *     never read. The pixels equal the same region of a full decode (tests check it against
 *     OpenCV's decoder).
 *     ``scale_denom`` (1, 2, 4, 8) decodes at a reduced DCT scale; the region is then given in
 *     the scaled image's pixels.
 * jpeg_info(data) -> (width, height, components)
 *
 * libjpeg reports errors by calling error_exit, which longjmps back to the setjmp of the
 * function that is decoding; the rows are read without the GIL, by a function that returns a
 * flag instead of touching Python objects.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

/* ------------------------------------------------------------------------------------------ */
/* JPEG decoding                                                                               */

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf escape;
    char message[JMSG_LENGTH_MAX];
} ErrorManager;

static void error_exit(j_common_ptr cinfo) {
    ErrorManager *err = (ErrorManager *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->escape, 1);
}

/* Corrupt-but-decodable data only warns, as in OpenCV's decoder. */
static void emit_message(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; }

static PyObject *jpeg_info(PyObject *self, PyObject *args) {
    Py_buffer data;
    if (!PyArg_ParseTuple(args, "y*", &data)) return NULL;
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = error_exit;
    err.pub.emit_message = emit_message;
    if (setjmp(err.escape)) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_ValueError, "not a decodable JPEG: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
    jpeg_read_header(&cinfo, TRUE);
    PyObject *result = Py_BuildValue("(iii)", (int)cinfo.image_width, (int)cinfo.image_height,
                                     cinfo.num_components);
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    return result;
}

#define EDGE_COLUMNS 2

/* Decode the region's rows (skipping the first `top`) into dst, `width` pixels from column
 * `skip_columns` of each decoded row. Runs without the GIL, so no Python C API: a libjpeg error
 * returns 1 (message in err->message) to the caller, which reports it once it holds the GIL
 * again. Only `y` changes between setjmp and a longjmp, and it is not read afterwards. */
static int read_region_rows(struct jpeg_decompress_struct *cinfo, ErrorManager *err,
                            JSAMPLE *row, unsigned char *dst, int top, int width, int height,
                            size_t skip_columns) {
    if (setjmp(err->escape)) return 1;
    if (top > 0) jpeg_skip_scanlines(cinfo, (JDIMENSION)top);
    for (int y = 0; y < height; y++) {
        JSAMPROW rows[1] = {row};
        jpeg_read_scanlines(cinfo, rows, 1);
        memcpy(dst + (size_t)y * width * 3, row + skip_columns * 3, (size_t)width * 3);
    }
    return 0;
}

static PyObject *decode_region(PyObject *self, PyObject *args) {
    Py_buffer data;
    int left, top, width, height, scale_denom = 1;
    if (!PyArg_ParseTuple(args, "y*iiii|i", &data, &left, &top, &width, &height, &scale_denom))
        return NULL;
    if (scale_denom != 1 && scale_denom != 2 && scale_denom != 4 && scale_denom != 8) {
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_ValueError, "scale_denom=%d: use 1, 2, 4 or 8", scale_denom);
        return NULL;
    }
    struct jpeg_decompress_struct cinfo;
    ErrorManager err;
    /* Assigned after setjmp and read after a longjmp back to it: volatile (C11 7.13.2.1). */
    PyObject *volatile out = NULL;
    JSAMPLE *volatile row = NULL;
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = error_exit;
    err.pub.emit_message = emit_message;
    if (setjmp(err.escape)) {  /* an error while the GIL is held (header, start, set-up) */
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        free(row);
        Py_XDECREF(out);
        PyErr_Format(PyExc_ValueError, "not a decodable JPEG: %s", err.message);
        return NULL;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, (const unsigned char *)data.buf, (unsigned long)data.len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.num_components != 1 && cinfo.num_components != 3) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_ValueError, "JPEG with %d components: only grey and colour images "
                     "take the region path", cinfo.num_components);
        return NULL;
    }
    cinfo.out_color_space = JCS_EXT_BGR;  /* grey is replicated, as OpenCV's IMREAD_COLOR */
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)scale_denom;
    jpeg_start_decompress(&cinfo);
    if (left < 0 || top < 0 || width <= 0 || height <= 0 ||
        (JDIMENSION)(left + width) > cinfo.output_width ||
        (JDIMENSION)(top + height) > cinfo.output_height) {
        int out_w = (int)cinfo.output_width, out_h = (int)cinfo.output_height;
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        PyErr_Format(PyExc_ValueError, "region (%d, %d, %d x %d) is outside the %d x %d image",
                     left, top, width, height, out_w, out_h);
        return NULL;
    }
    /* libjpeg's fancy chroma upsampling treats the first and last decoded column as an image
     * edge: decode EDGE_COLUMNS more on each side so that the region's own edge columns are
     * interior, as in a full decode. The decoded columns then start at an iMCU boundary. */
    const int req_left = left > EDGE_COLUMNS ? left - EDGE_COLUMNS : 0;
    const int req_right = left + width + EDGE_COLUMNS < (int)cinfo.output_width
                              ? left + width + EDGE_COLUMNS : (int)cinfo.output_width;
    JDIMENSION x_offset = (JDIMENSION)req_left, crop_width = (JDIMENSION)(req_right - req_left);
    jpeg_crop_scanline(&cinfo, &x_offset, &crop_width);
    const size_t skip_columns = (size_t)left - x_offset;
    row = (JSAMPLE *)malloc((size_t)crop_width * 3);
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)width * height * 3);
    if (row == NULL || out == NULL) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        free(row);
        Py_XDECREF(out);
        return PyErr_NoMemory();
    }
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out);
    int failed;
    Py_BEGIN_ALLOW_THREADS
    failed = read_region_rows(&cinfo, &err, row, dst, top, width, height, skip_columns);
    Py_END_ALLOW_THREADS
    /* err.escape now names read_region_rows's finished frame; nothing below can call
     * error_exit (jpeg_abort/destroy_decompress only free memory). */
    if (failed) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&data);
        free(row);
        Py_DECREF(out);
        PyErr_Format(PyExc_ValueError, "not a decodable JPEG: %s", err.message);
        return NULL;
    }
    /* The rows below the region are not needed: abort instead of finishing. */
    jpeg_abort_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&data);
    free(row);
    return out;
}

static PyMethodDef methods[] = {
    {"jpeg_info", jpeg_info, METH_VARARGS, "jpeg_info(data) -> (width, height, components)"},
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, left, top, width, height, scale_denom=1) -> BGR bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_crop_decode",
                                    "JPEG region decoding (libjpeg-turbo crop/skip-scanline API).",
                                    -1, methods};

PyMODINIT_FUNC PyInit__crop_decode(void) { return PyModule_Create(&module); }
