/*
 * Fast path of FastRandomResizedCrop: decode only a JPEG's crop region, and resize it with
 * Pillow's bicubic (antialiased, fixed-point) algorithm reproduced bit for bit.
 *
 * decode_region(data, left, top, width, height, scale_denom=1) -> bytearray (height, width, 3) BGR
 *     libjpeg-turbo's jpeg_crop_scanline / jpeg_skip_scanlines: columns outside the region (but
 *     two on each side) are neither inverse-transformed nor colour-converted, rows below it are
 *     never read. The pixels equal the same region of a full decode (tests check it against
 *     OpenCV's decoder).
 *     ``scale_denom`` (1, 2, 4, 8) decodes at a reduced DCT scale; the region is then given in
 *     the scaled image's pixels.
 * jpeg_info(data) -> (width, height, components)
 * resize_bicubic(src, height, width, out_height, out_width, box, vertical_first=False) -> bytearray
 *     Pillow's ImagingResample(BICUBIC) for a 3-channel uint8 image: coefficients in double,
 *     22-bit fixed-point taps, horizontal pass then vertical pass over the rows used, each
 *     rounded and clipped to uint8. ``box`` = (x0, y0, x1, y1) in source pixels, as
 *     Image.resize(box=...). Written so that the compiler vectorises the inner loops; compiled
 *     without floating-point contraction so the coefficients equal Pillow's.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <setjmp.h>
#include <stdint.h>
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

/* ------------------------------------------------------------------------------------------ */
/* Pillow's bicubic resampling (libImaging/Resample.c), 3 x uint8 channels                      */

#define PRECISION_BITS (32 - 8 - 2)

/* The passes are compiled twice on x86-64 (AVX2 and baseline), picked at load time. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MULTIVERSIONED __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSIONED
#endif

static double bicubic_filter(double x) {
    const double a = -0.5;  /* Pillow's (and Keys') bicubic */
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Taps of every output pixel along one axis: bounds[2i] = first input index, bounds[2i+1] =
 * number of taps; 22-bit fixed-point weights in kk[i * ksize ...]. Returns ksize or -1. */
static int precompute_coeffs(int in_size, float in0, float in1, int out_size, int **bounds_out,
                             int32_t **kk_out) {
    const double support_base = 2.0;
    double scale = (double)(in1 - in0) / out_size, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = support_base * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *prekk = (double *)malloc((size_t)out_size * ksize * sizeof(double));
    int32_t *kk = (int32_t *)malloc((size_t)out_size * ksize * sizeof(int32_t));
    int *bounds = (int *)malloc((size_t)out_size * 2 * sizeof(int));
    if (!prekk || !kk || !bounds) {
        free(prekk); free(kk); free(bounds);
        return -1;
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = &prekk[xx * ksize];
        int x;
        for (x = 0; x < xmax; x++) {
            double w = bicubic_filter((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++) if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        bounds[xx * 2 + 0] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    for (int i = 0; i < out_size * ksize; i++)
        kk[i] = prekk[i] < 0 ? (int32_t)(-0.5 + prekk[i] * (1 << PRECISION_BITS))
                             : (int32_t)(0.5 + prekk[i] * (1 << PRECISION_BITS));
    free(prekk);
    *bounds_out = bounds;
    *kk_out = kk;
    return ksize;
}

static inline uint8_t clip8(int32_t in) {
    int32_t v = in >> PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

/* Rows [y_begin, y_end) of the horizontal pass: out[x] = sum_t in[bounds[x] + t] * k[x][t]. */
static void horizontal_rows_scalar(const uint8_t *image, uint8_t *out_image, int y_begin,
                                   int y_end, int width, int out_width, int ksize,
                                   const int *bounds, const int32_t *kk) {
    for (int y = y_begin; y < y_end; y++) {
        const uint8_t *in = image + (size_t)y * width * 3;
        uint8_t *out = out_image + (size_t)y * out_width * 3;
        for (int xx = 0; xx < out_width; xx++) {
            const int xmin = bounds[xx * 2], taps = bounds[xx * 2 + 1];
            const int32_t *k = &kk[xx * ksize];
            const uint8_t *p = in + (size_t)xmin * 3;
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int t = 0; t < taps; t++) {
                s0 += p[t * 3 + 0] * k[t];
                s1 += p[t * 3 + 1] * k[t];
                s2 += p[t * 3 + 2] * k[t];
            }
            out[xx * 3 + 0] = clip8(s0);
            out[xx * 3 + 1] = clip8(s1);
            out[xx * 3 + 2] = clip8(s2);
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_AVX2_KERNEL 1

/* Two taps' weights for a 16-bit multiply-add: k = hi * 4096 + lo with 16-bit hi and lo, so
 * that (sum p*hi) * 4096 + sum p*lo equals Pillow's 32-bit sum exactly. Each packs (k0, k1). */
static inline int32_t weight_pair_hi(int32_t k0, int32_t k1) {
    return (int32_t)(((uint32_t)(uint16_t)(k1 >> 12) << 16) | (uint16_t)(k0 >> 12));
}

static inline int32_t weight_pair_lo(int32_t k0, int32_t k1) {
    return (int32_t)(((uint32_t)(k1 & 0xFFF) << 16) | (uint32_t)(k0 & 0xFFF));
}

/* Two rows at a time, two taps per 16-bit multiply-add. A weight k (22-bit fixed point) is split
 * as k = hi * 4096 + lo with 16-bit hi and lo, so (sum p*hi) * 4096 + sum p*lo is Pillow's
 * 32-bit sum exactly. ``pairs_hi``/``pairs_lo`` hold (k[2j], k[2j+1]) halves packed per output
 * pixel. Returns the first row it did not do (the rest needs reads past ``readable`` bytes). */
__attribute__((target("avx2")))
static int horizontal_rows_avx2(const uint8_t *image, size_t readable, uint8_t *out_image,
                                int rows, int width, int out_width, int npairs,
                                const int *bounds, const int32_t *pairs_hi,
                                const int32_t *pairs_lo) {
    const __m256i spread = _mm256_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1,
                                            -1, 0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1,
                                            -1, -1);
    const __m256i bias = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    const size_t row_bytes = (size_t)width * 3;
    int y = 0;
    /* The last pair of taps reads 8 bytes from its first pixel: stay inside ``readable``. */
    for (; y + 1 < rows && (size_t)(y + 2) * row_bytes + 8 <= readable; y += 2) {
        const uint8_t *row0 = image + (size_t)y * row_bytes, *row1 = row0 + row_bytes;
        uint8_t *out0 = out_image + (size_t)y * out_width * 3, *out1 = out0 + (size_t)out_width * 3;
        for (int xx = 0; xx < out_width; xx++) {
            const int xmin = bounds[xx * 2], pairs = (bounds[xx * 2 + 1] + 1) / 2;
            const uint8_t *p0 = row0 + (size_t)xmin * 3, *p1 = row1 + (size_t)xmin * 3;
            const int32_t *wh = pairs_hi + (size_t)xx * npairs, *wl = pairs_lo + (size_t)xx * npairs;
            __m256i acc_hi = _mm256_setzero_si256(), acc_lo = _mm256_setzero_si256();
            for (int j = 0; j < pairs; j++) {
                __m128i v0 = _mm_loadl_epi64((const __m128i *)(p0 + 6 * j));
                __m128i v1 = _mm_loadl_epi64((const __m128i *)(p1 + 6 * j));
                __m256i v = _mm256_shuffle_epi8(
                    _mm256_inserti128_si256(_mm256_castsi128_si256(v0), v1, 1), spread);
                acc_hi = _mm256_add_epi32(acc_hi, _mm256_madd_epi16(v, _mm256_set1_epi32(wh[j])));
                acc_lo = _mm256_add_epi32(acc_lo, _mm256_madd_epi16(v, _mm256_set1_epi32(wl[j])));
            }
            __m256i sum = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(acc_hi, 12), acc_lo),
                                           bias);
            sum = _mm256_srai_epi32(sum, PRECISION_BITS);
            sum = _mm256_packus_epi16(_mm256_packus_epi32(sum, sum), sum);  /* clip to 0..255 */
            uint32_t bgr0 = (uint32_t)_mm256_extract_epi32(sum, 0);
            uint32_t bgr1 = (uint32_t)_mm256_extract_epi32(sum, 4);
            memcpy(out0 + xx * 3, &bgr0, 3);
            memcpy(out1 + xx * 3, &bgr1, 3);
        }
    }
    return y;
}

/* The same with AVX-512 (BW): four rows per 512-bit register. */
__attribute__((target("avx512f,avx512bw")))
static int horizontal_rows_avx512(const uint8_t *image, size_t readable, uint8_t *out_image,
                                  int rows, int width, int out_width, int npairs,
                                  const int *bounds, const int32_t *pairs_hi,
                                  const int32_t *pairs_lo) {
    const __m512i spread = _mm512_broadcast_i32x4(_mm_setr_epi8(0, -1, 3, -1, 1, -1, 4, -1, 2,
                                                                -1, 5, -1, -1, -1, -1, -1));
    const __m512i bias = _mm512_set1_epi32(1 << (PRECISION_BITS - 1));
    const size_t row_bytes = (size_t)width * 3;
    int y = 0;
    for (; y + 3 < rows && (size_t)(y + 4) * row_bytes + 8 <= readable; y += 4) {
        const uint8_t *row0 = image + (size_t)y * row_bytes;
        uint8_t *out0 = out_image + (size_t)y * out_width * 3;
        for (int xx = 0; xx < out_width; xx++) {
            const int xmin = bounds[xx * 2], pairs = (bounds[xx * 2 + 1] + 1) / 2;
            const uint8_t *p = row0 + (size_t)xmin * 3;
            const int32_t *wh = pairs_hi + (size_t)xx * npairs, *wl = pairs_lo + (size_t)xx * npairs;
            __m512i acc_hi = _mm512_setzero_si512(), acc_lo = _mm512_setzero_si512();
            for (int j = 0; j < pairs; j++) {
                const uint8_t *q = p + 6 * j;
                __m512i v = _mm512_castsi128_si512(_mm_loadl_epi64((const __m128i *)q));
                v = _mm512_inserti32x4(v, _mm_loadl_epi64((const __m128i *)(q + row_bytes)), 1);
                v = _mm512_inserti32x4(v, _mm_loadl_epi64((const __m128i *)(q + 2 * row_bytes)), 2);
                v = _mm512_inserti32x4(v, _mm_loadl_epi64((const __m128i *)(q + 3 * row_bytes)), 3);
                v = _mm512_shuffle_epi8(v, spread);
                acc_hi = _mm512_add_epi32(acc_hi, _mm512_madd_epi16(v, _mm512_set1_epi32(wh[j])));
                acc_lo = _mm512_add_epi32(acc_lo, _mm512_madd_epi16(v, _mm512_set1_epi32(wl[j])));
            }
            __m512i sum = _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(acc_hi, 12), acc_lo),
                                           bias);
            sum = _mm512_srai_epi32(sum, PRECISION_BITS);
            sum = _mm512_packus_epi16(_mm512_packus_epi32(sum, sum), sum);  /* clip to 0..255 */
            uint32_t bgr[16];
            _mm512_storeu_si512((void *)bgr, sum);
            for (int r = 0; r < 4; r++)
                memcpy(out0 + (size_t)r * out_width * 3 + xx * 3, &bgr[4 * r], 3);
        }
    }
    return y;
}
#endif

/* The horizontal pass over ``rows`` rows (``readable`` bytes may be read from ``image``). */
static void resample_horizontal(const uint8_t *image, size_t readable, uint8_t *out_image,
                                int rows, int width, int out_width, int ksize, const int *bounds,
                                const int32_t *kk) {
    int done = 0;
#ifdef HAVE_AVX2_KERNEL
    if (__builtin_cpu_supports("avx2")) {
        const int npairs = (ksize + 1) / 2;
        int32_t *pairs = (int32_t *)malloc((size_t)out_width * npairs * 2 * sizeof(int32_t));
        if (pairs != NULL) {
            int32_t *pairs_hi = pairs, *pairs_lo = pairs + (size_t)out_width * npairs;
            for (int xx = 0; xx < out_width; xx++) {
                for (int j = 0; j < npairs; j++) {
                    const int32_t k0 = kk[xx * ksize + 2 * j];
                    const int32_t k1 = 2 * j + 1 < ksize ? kk[xx * ksize + 2 * j + 1] : 0;
                    pairs_hi[xx * npairs + j] = weight_pair_hi(k0, k1);
                    pairs_lo[xx * npairs + j] = weight_pair_lo(k0, k1);
                }
            }
            if (__builtin_cpu_supports("avx512bw"))
                done = horizontal_rows_avx512(image, readable, out_image, rows, width,
                                              out_width, npairs, bounds, pairs_hi, pairs_lo);
            done += horizontal_rows_avx2(image + (size_t)done * width * 3,
                                         readable - (size_t)done * width * 3,
                                         out_image + (size_t)done * out_width * 3, rows - done,
                                         width, out_width, npairs, bounds, pairs_hi, pairs_lo);
            free(pairs);
        }
    }
#else
    (void)readable;
#endif
    horizontal_rows_scalar(image, out_image, done, rows, width, out_width, ksize, bounds, kk);
}

/* The vertical pass over whole rows: contiguous, so the inner loop vectorises. */
MULTIVERSIONED static void resample_vertical_plain(const uint8_t *in, uint8_t *out,
                                                   int out_height, int row_len, int ksize,
                                                   const int *bounds, const int32_t *kk,
                                                   int32_t *acc) {
    for (int yy = 0; yy < out_height; yy++) {
        const int ymin = bounds[yy * 2], taps = bounds[yy * 2 + 1];
        const int32_t *k = &kk[yy * ksize];
        for (int i = 0; i < row_len; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int t = 0; t < taps; t++) {
            const uint8_t *src = in + (size_t)(ymin + t) * row_len;
            const int32_t w = k[t];
            for (int i = 0; i < row_len; i++) acc[i] += src[i] * w;
        }
        uint8_t *dst = out + (size_t)yy * row_len;
        for (int i = 0; i < row_len; i++) dst[i] = clip8(acc[i]);
    }
}

#ifdef HAVE_AVX2_KERNEL
/* 16 outputs at a time, two taps per 16-bit multiply-add (weights split as in the horizontal
 * kernel); the row tail is left to the plain loop. */
__attribute__((target("avx2")))
static int vertical_columns_avx2(const uint8_t *in, uint8_t *out, int out_height, int row_len,
                                 int ksize, const int *bounds, const int32_t *kk) {
    const int blocks = row_len / 16;
    const __m256i bias = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
    for (int yy = 0; yy < out_height; yy++) {
        const int ymin = bounds[yy * 2], taps = bounds[yy * 2 + 1];
        const int32_t *k = &kk[yy * ksize];
        uint8_t *dst = out + (size_t)yy * row_len;
        for (int b = 0; b < blocks; b++) {
            const uint8_t *base = in + (size_t)ymin * row_len + b * 16;
            __m256i hi0 = _mm256_setzero_si256(), lo0 = hi0, hi1 = hi0, lo1 = hi0;
            for (int t = 0; t < taps; t += 2) {
                const int32_t k0 = k[t], k1 = t + 1 < taps ? k[t + 1] : 0;
                const __m128i r0 = _mm_loadu_si128((const __m128i *)(base + (size_t)t * row_len));
                const __m128i r1 = t + 1 < taps
                    ? _mm_loadu_si128((const __m128i *)(base + (size_t)(t + 1) * row_len))
                    : _mm_setzero_si128();
                const __m256i pairs_a = _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(r0, r1));
                const __m256i pairs_b = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(r0, r1));
                const __m256i wh = _mm256_set1_epi32(weight_pair_hi(k0, k1));
                const __m256i wl = _mm256_set1_epi32(weight_pair_lo(k0, k1));
                hi0 = _mm256_add_epi32(hi0, _mm256_madd_epi16(pairs_a, wh));
                lo0 = _mm256_add_epi32(lo0, _mm256_madd_epi16(pairs_a, wl));
                hi1 = _mm256_add_epi32(hi1, _mm256_madd_epi16(pairs_b, wh));
                lo1 = _mm256_add_epi32(lo1, _mm256_madd_epi16(pairs_b, wl));
            }
            __m256i s0 = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi0, 12), lo0), bias);
            __m256i s1 = _mm256_add_epi32(_mm256_add_epi32(_mm256_slli_epi32(hi1, 12), lo1), bias);
            s0 = _mm256_srai_epi32(s0, PRECISION_BITS);
            s1 = _mm256_srai_epi32(s1, PRECISION_BITS);
            /* packs work within 128-bit lanes: restore the order of the 16 outputs. */
            __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(s0, s1), 0xD8);
            __m128i bytes = _mm_packus_epi16(_mm256_castsi256_si128(words),
                                             _mm256_extracti128_si256(words, 1));
            _mm_storeu_si128((__m128i *)(dst + b * 16), bytes);
        }
    }
    return blocks * 16;
}
#endif

static void resample_vertical(const uint8_t *in, uint8_t *out, int out_height, int row_len,
                              int ksize, const int *bounds, const int32_t *kk, int32_t *acc) {
#ifdef HAVE_AVX2_KERNEL
    if (__builtin_cpu_supports("avx2")) {
        const int done = vertical_columns_avx2(in, out, out_height, row_len, ksize, bounds, kk);
        if (done == row_len) return;
        /* The columns past the last full block, by the plain loop on a narrow view. */
        for (int yy = 0; yy < out_height; yy++) {
            const int ymin = bounds[yy * 2], taps = bounds[yy * 2 + 1];
            const int32_t *k = &kk[yy * ksize];
            for (int i = done; i < row_len; i++) {
                int32_t sum = 1 << (PRECISION_BITS - 1);
                for (int t = 0; t < taps; t++) sum += in[(size_t)(ymin + t) * row_len + i] * k[t];
                out[(size_t)yy * row_len + i] = clip8(sum);
            }
        }
        return;
    }
#endif
    resample_vertical_plain(in, out, out_height, row_len, ksize, bounds, kk, acc);
}

static PyObject *resize_bicubic(PyObject *self, PyObject *args) {
    Py_buffer src;
    int height, width, out_height, out_width;
    double x0, y0, x1, y1;
    int vertical_first = 0;
    if (!PyArg_ParseTuple(args, "y*iiii(dddd)|p", &src, &height, &width, &out_height, &out_width,
                          &x0, &y0, &x1, &y1, &vertical_first))
        return NULL;
    if (height <= 0 || width <= 0 || out_height <= 0 || out_width <= 0 ||
        src.len != (Py_ssize_t)height * width * 3) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "resize_bicubic: src must hold height x width x 3 "
                        "bytes and all sizes must be positive");
        return NULL;
    }
    int *bounds_h = NULL, *bounds_v = NULL;
    int32_t *kk_h = NULL, *kk_v = NULL;
    int ksize_h = precompute_coeffs(width, (float)x0, (float)x1, out_width, &bounds_h, &kk_h);
    int ksize_v = precompute_coeffs(height, (float)y0, (float)y1, out_height, &bounds_v, &kk_v);
    PyObject *out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)out_height * out_width * 3);
    /* Pillow keeps the box in single precision. */
    const float fx0 = (float)x0, fy0 = (float)y0, fx1 = (float)x1, fy1 = (float)y1;
    const int need_horizontal = out_width != width || fx0 != 0 || fx1 != out_width;
    const int need_vertical = out_height != height || fy0 != 0 || fy1 != out_height;
    /* Rows the vertical pass reads: a first horizontal pass runs on these only. */
    const int first_row = ksize_v < 0 ? 0 : bounds_v[0];
    const int last_row = ksize_v < 0 ? 0 : bounds_v[out_height * 2 - 2] + bounds_v[out_height * 2 - 1];
    const size_t temp_size = vertical_first ? (size_t)out_height * width * 3
                                            : (size_t)(last_row - first_row) * out_width * 3;
    uint8_t *temp = (uint8_t *)malloc(temp_size + 8);
    int32_t *acc = (int32_t *)malloc((size_t)(width > out_width ? width : out_width) * 3 *
                                     sizeof(int32_t));  /* + the AVX2 kernel's overread */
    if (ksize_h < 0 || ksize_v < 0 || out == NULL || temp == NULL || acc == NULL) {
        Py_XDECREF(out);
        out = PyErr_NoMemory();
        goto done;
    }
    {
        const uint8_t *in = (const uint8_t *)src.buf;
        uint8_t *dst = (uint8_t *)PyByteArray_AS_STRING(out);
        Py_BEGIN_ALLOW_THREADS
        if (!need_horizontal && !need_vertical) {
            memcpy(dst, in, (size_t)out_height * out_width * 3);
        } else if (!need_horizontal) {
            resample_vertical(in, dst, out_height, width * 3, ksize_v, bounds_v, kk_v, acc);
        } else if (!need_vertical) {
            resample_horizontal(in, (size_t)src.len, dst, height, width, out_width, ksize_h,
                                bounds_h, kk_h);
        } else if (vertical_first) {
            resample_vertical(in, temp, out_height, width * 3, ksize_v, bounds_v, kk_v, acc);
            resample_horizontal(temp, temp_size + 8, dst, out_height, width, out_width, ksize_h,
                                bounds_h, kk_h);
        } else {
            const size_t offset = (size_t)first_row * width * 3;
            resample_horizontal(in + offset, (size_t)src.len - offset, temp, last_row - first_row,
                                width, out_width, ksize_h, bounds_h, kk_h);
            for (int i = 0; i < out_height; i++) bounds_v[i * 2] -= first_row;
            resample_vertical(temp, dst, out_height, out_width * 3, ksize_v, bounds_v, kk_v, acc);
        }
        Py_END_ALLOW_THREADS
    }
done:
    free(bounds_h); free(kk_h); free(bounds_v); free(kk_v); free(temp); free(acc);
    PyBuffer_Release(&src);
    return out;
}

static PyMethodDef methods[] = {
    {"jpeg_info", jpeg_info, METH_VARARGS, "jpeg_info(data) -> (width, height, components)"},
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, left, top, width, height, scale_denom=1) -> BGR bytes"},
    {"resize_bicubic", resize_bicubic, METH_VARARGS,
     "resize_bicubic(src, height, width, out_height, out_width, box) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_crop_decode",
                                    "JPEG region decoding and Pillow-exact bicubic resizing.",
                                    -1, methods};

PyMODINIT_FUNC PyInit__crop_decode(void) { return PyModule_Create(&module); }
