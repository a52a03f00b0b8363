/* torch.randn for float32 CPU tensors, the same bits, ~4x faster: loom_samplers._randn.
 *
 * torch draws a contiguous float32 tensor of 16 or more elements in two passes: one uniform
 * per element from its MT19937 engine, ``(random() & 0xFFFFFF) * 2**-24``, then Box-Muller
 * over each block of 16 (pairs j, j + 8) with avx_mathfun's Cephes log and sincos; a size
 * that is not a multiple of 16 draws 16 more uniforms for a last, overlapping block. The
 * engine's one-number-at-a-time loop is most of the time. Here the engine makes 624 numbers
 * per twist in loops the compiler vectorises, and the Box-Muller repeats avx_mathfun's
 * operations with the multiply-adds that torch's build fuses written as explicit FMAs (this
 * file is compiled with -ffp-contract=off, so the compiler adds no others).
 *
 * Nothing here is trusted blindly: loom_samplers.fast_randn compares this module with
 * torch.randn at first use and uses it only where the bits are equal.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define LOOM_X86 1
#include <immintrin.h>
#else
#define LOOM_X86 0
#endif

#define MT_N 624
#define MT_M 397
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu
#define MT_MATRIX 0x9908b0dfu

#if LOOM_X86
#define AVX2 __attribute__((target("avx2,fma")))

static inline AVX2 uint32_t mt_twist_one(uint32_t current, uint32_t next, uint32_t far) {
    uint32_t y = (current & MT_UPPER) | (next & MT_LOWER);
    return far ^ (y >> 1) ^ ((0u - (next & 1u)) & MT_MATRIX);
}

/* One twist of the state: the standard MT19937 recurrence in its three independent runs. */
static AVX2 void mt_twist(uint32_t *restrict s) {
    int j;
    for (j = 0; j < MT_N - MT_M; j++)
        s[j] = mt_twist_one(s[j], s[j + 1], s[j + MT_M]);
    for (; j < MT_N - 1; j++)
        s[j] = mt_twist_one(s[j], s[j + 1], s[j + MT_M - MT_N]);
    s[MT_N - 1] = mt_twist_one(s[MT_N - 1], s[0], s[MT_M - 1]);
}

/* Tempered outputs of a fresh block turned into torch's float uniforms. */
static AVX2 void mt_uniforms(const uint32_t *restrict s, float *restrict out, int count) {
    for (int j = 0; j < count; j++) {
        uint32_t y = s[j];
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c5680u;
        y ^= (y << 15) & 0xefc60000u;
        y ^= y >> 18;
        out[j] = (float)(y & 0xFFFFFFu) * (1.0f / 16777216.0f);
    }
}

typedef struct {
    uint32_t state[MT_N];
    int next; /* index of the next unused number in state; MT_N: twist first */
} Engine;

/* torch's at::mt19937(seed): the reference Knuth seeding of the low 32 bits. */
static void engine_seed(Engine *engine, uint64_t seed) {
    uint32_t *s = engine->state;
    s[0] = (uint32_t)(seed & 0xffffffffu);
    for (uint32_t j = 1; j < MT_N; j++)
        s[j] = 1812433253u * (s[j - 1] ^ (s[j - 1] >> 30)) + j;
    engine->next = MT_N;
}

static AVX2 void engine_uniforms(Engine *engine, float *out, int64_t count) {
    while (count > 0) {
        if (engine->next == MT_N) {
            mt_twist(engine->state);
            engine->next = 0;
        }
        int take = MT_N - engine->next;
        if (take > count)
            take = (int)count;
        mt_uniforms(engine->state + engine->next, out, take);
        engine->next += take;
        out += take;
        count -= take;
    }
}

/* avx_mathfun's log256_ps, with torch's fused multiply-adds. */
static inline AVX2 __m256 cephes_log(__m256 x) {
    const __m256 one = _mm256_set1_ps(1.0f);
    x = _mm256_max_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x00800000)));
    __m256i exponent = _mm256_srli_epi32(_mm256_castps_si256(x), 23);
    x = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(~0x7f800000)));
    x = _mm256_or_ps(x, _mm256_set1_ps(0.5f));
    exponent = _mm256_sub_epi32(exponent, _mm256_set1_epi32(0x7f));
    __m256 e = _mm256_add_ps(_mm256_cvtepi32_ps(exponent), one);
    __m256 small = _mm256_cmp_ps(x, _mm256_set1_ps(0.707106781186547524f), _CMP_LT_OS);
    __m256 shifted = _mm256_and_ps(x, small);
    x = _mm256_sub_ps(x, one);
    e = _mm256_sub_ps(e, _mm256_and_ps(one, small));
    x = _mm256_add_ps(x, shifted);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(7.0376836292E-2f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.1514610310E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.1676998740E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.2420140846E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.4249322787E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-1.6668057665E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(2.0000714765E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(-2.4999993993E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(3.3333331174E-1f));
    y = _mm256_mul_ps(y, x);
    y = _mm256_fmadd_ps(y, z, _mm256_mul_ps(e, _mm256_set1_ps(-2.12194440e-4f)));
    y = _mm256_fnmadd_ps(z, _mm256_set1_ps(0.5f), y);
    x = _mm256_add_ps(x, y);
    return _mm256_fmadd_ps(e, _mm256_set1_ps(0.693359375f), x);
}

/* avx_mathfun's sincos256_ps, with torch's fused multiply-adds. */
static inline AVX2 void cephes_sincos(__m256 x, __m256 *sine, __m256 *cosine) {
    const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32((int)0x80000000u));
    __m256 sign_sin = _mm256_and_ps(x, sign_mask);
    x = _mm256_andnot_ps(sign_mask, x);
    __m256i octant = _mm256_cvttps_epi32(_mm256_mul_ps(x, _mm256_set1_ps(1.27323954473516f)));
    octant = _mm256_and_si256(_mm256_add_epi32(octant, _mm256_set1_epi32(1)), _mm256_set1_epi32(~1));
    __m256 y = _mm256_cvtepi32_ps(octant);
    __m256 swap_sign = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_and_si256(octant, _mm256_set1_epi32(4)), 29));
    __m256 use_sine_poly = _mm256_castsi256_ps(_mm256_cmpeq_epi32(
        _mm256_and_si256(octant, _mm256_set1_epi32(2)), _mm256_setzero_si256()));
    __m256 sign_cos = _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_andnot_si256(_mm256_sub_epi32(octant, _mm256_set1_epi32(2)), _mm256_set1_epi32(4)), 29));
    sign_sin = _mm256_xor_ps(sign_sin, swap_sign);
    x = _mm256_fmadd_ps(y, _mm256_set1_ps(-0.78515625f), x);
    x = _mm256_fmadd_ps(y, _mm256_set1_ps(-2.4187564849853515625e-4f), x);
    x = _mm256_fmadd_ps(y, _mm256_set1_ps(-3.77489497744594108e-8f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 c = _mm256_fmadd_ps(_mm256_set1_ps(2.443315711809948E-005f), z, _mm256_set1_ps(-1.388731625493765E-003f));
    c = _mm256_fmadd_ps(c, z, _mm256_set1_ps(4.166664568298827E-002f));
    c = _mm256_mul_ps(c, z);
    c = _mm256_fmsub_ps(c, z, _mm256_mul_ps(z, _mm256_set1_ps(0.5f)));
    c = _mm256_add_ps(c, _mm256_set1_ps(1.0f));
    __m256 s = _mm256_fmadd_ps(_mm256_set1_ps(-1.9515295891E-4f), z, _mm256_set1_ps(8.3321608736E-3f));
    s = _mm256_fmadd_ps(s, z, _mm256_set1_ps(-1.6666654611E-1f));
    s = _mm256_mul_ps(s, z);
    s = _mm256_fmadd_ps(s, x, x);
    *sine = _mm256_xor_ps(_mm256_blendv_ps(c, s, use_sine_poly), sign_sin);
    *cosine = _mm256_xor_ps(_mm256_blendv_ps(s, c, use_sine_poly), sign_cos);
}

/* torch's normal_fill_16_AVX2 with mean 0 and std 1: uniforms to normals, in place. */
static inline AVX2 void box_muller_16(float *data) {
    const __m256 one = _mm256_set1_ps(1.0f);
    __m256 u1 = _mm256_sub_ps(one, _mm256_loadu_ps(data));
    __m256 u2 = _mm256_loadu_ps(data + 8);
    __m256 radius = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), cephes_log(u1)));
    __m256 theta = _mm256_mul_ps(_mm256_set1_ps((float)(2.0 * 3.14159265358979323846)), u2);
    __m256 sine, cosine;
    cephes_sincos(theta, &sine, &cosine);
    __m256 zero = _mm256_setzero_ps();
    _mm256_storeu_ps(data, _mm256_fmadd_ps(_mm256_mul_ps(radius, cosine), one, zero));
    _mm256_storeu_ps(data + 8, _mm256_fmadd_ps(_mm256_mul_ps(radius, sine), one, zero));
}

/* torch.randn(count, generator=Generator().manual_seed(seed)) into out (count >= 16), then,
 * if scale is not 1, out *= scale in float32 (torch's mul_ by a Python float). */
static AVX2 void randn_avx2(float *out, int64_t count, uint64_t seed, float scale) {
    Engine engine;
    engine_seed(&engine, seed);
    engine_uniforms(&engine, out, count);
    for (int64_t i = 0; i + 16 <= count; i += 16)
        box_muller_16(out + i);
    if (count % 16 != 0) {
        engine_uniforms(&engine, out + count - 16, 16);
        box_muller_16(out + count - 16);
    }
    if (scale != 1.0f) {
        __m256 factor = _mm256_set1_ps(scale);
        int64_t i = 0;
        for (; i + 8 <= count; i += 8)
            _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_loadu_ps(out + i), factor));
        for (; i < count; i++)
            out[i] *= scale;
    }
}

static int cpu_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static int cpu_supported(void) { return 0; }
#endif

/* A writable, C-contiguous float32 buffer of 16 or more elements from ``target``. */
static int get_out(PyObject *target, Py_buffer *view) {
    if (PyObject_GetBuffer(target, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0 || view->len / 4 < 16) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "out must be a C-contiguous float32 buffer of 16 or more elements");
        return -1;
    }
    return 0;
}

/* A seed as torch's manual_seed takes it: a non-negative integer below 2**64. */
static int get_seed(PyObject *object, uint64_t *seed) {
    unsigned long long value = PyLong_AsUnsignedLongLong(object);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *seed = (uint64_t)value;
    return 0;
}

static int check_cpu(void) {
    if (cpu_supported())
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "loom_samplers._randn needs an x86 CPU with AVX2 and FMA");
    return -1;
}

#if LOOM_X86
#define RANDN(view, seed, scale) randn_avx2((float *)(view).buf, (int64_t)((view).len / 4), (seed), (scale))
#else
#define RANDN(view, seed, scale) ((void)0) /* unreachable: check_cpu refuses */
#endif

PyDoc_STRVAR(fill_doc,
"fill(out, seed, scale=1.0)\n\n"
"Fill ``out`` (a writable, C-contiguous float32 buffer of 16 or more elements) with what\n"
"``torch.randn`` draws from a CPU generator seeded with ``seed``, times ``scale`` (a float32\n"
"multiply, as ``tensor.mul_(scale)``). The GIL is released while it runs.");

static PyObject *fill(PyObject *self, PyObject *args) {
    PyObject *target, *seed_object;
    uint64_t seed;
    double scale = 1.0;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OO|d:fill", &target, &seed_object, &scale) || check_cpu() < 0
        || get_seed(seed_object, &seed) < 0 || get_out(target, &view) < 0)
        return NULL;
    Py_BEGIN_ALLOW_THREADS
    RANDN(view, seed, (float)scale);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
}

#define FILL_MANY_MAX 64

PyDoc_STRVAR(fill_many_doc,
"fill_many(outs, seeds, scales)\n\n"
"``fill(out, seed, scale)`` for each triple (at most 64), releasing the GIL once.");

static PyObject *fill_many(PyObject *self, PyObject *args) {
    PyObject *outs, *seeds, *scales;
    if (!PyArg_ParseTuple(args, "OOO:fill_many", &outs, &seeds, &scales) || check_cpu() < 0)
        return NULL;
    PyObject *out_list = PySequence_Fast(outs, "outs must be a sequence");
    PyObject *seed_list = out_list ? PySequence_Fast(seeds, "seeds must be a sequence") : NULL;
    PyObject *scale_list = seed_list ? PySequence_Fast(scales, "scales must be a sequence") : NULL;
    Py_buffer views[FILL_MANY_MAX];
    uint64_t seed_values[FILL_MANY_MAX];
    float scale_values[FILL_MANY_MAX];
    Py_ssize_t count = 0, ready = 0;
    PyObject *result = NULL;
    if (scale_list == NULL)
        goto done;
    count = PySequence_Fast_GET_SIZE(out_list);
    if (count > FILL_MANY_MAX || PySequence_Fast_GET_SIZE(seed_list) != count
        || PySequence_Fast_GET_SIZE(scale_list) != count) {
        PyErr_SetString(PyExc_ValueError, "fill_many: outs, seeds and scales must have the same length (at most 64)");
        goto done;
    }
    for (; ready < count; ready++) {
        if (get_seed(PySequence_Fast_GET_ITEM(seed_list, ready), &seed_values[ready]) < 0)
            goto done;
        double scale = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(scale_list, ready));
        if (PyErr_Occurred() || get_out(PySequence_Fast_GET_ITEM(out_list, ready), &views[ready]) < 0)
            goto done;
        scale_values[ready] = (float)scale;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        RANDN(views[i], seed_values[i], scale_values[i]);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    for (Py_ssize_t i = 0; i < ready; i++)
        PyBuffer_Release(&views[i]);
    Py_XDECREF(out_list);
    Py_XDECREF(seed_list);
    Py_XDECREF(scale_list);
    return result;
}

/* left = (w * left_diff) * h_reciprocal + noise, one float32 rounding per operation, and,
 * when right is given, right = w - left. */
static void bridge_values(const float *w, const float *noise, float *left, float *right,
                          Py_ssize_t count, float left_diff, float h_reciprocal) {
    for (Py_ssize_t i = 0; i < count; i++) {
        float mean = w[i] * left_diff;
        mean = mean * h_reciprocal;
        float value = mean + noise[i];
        left[i] = value;
        if (right != NULL)
            right[i] = w[i] - value;
    }
}

PyDoc_STRVAR(bridge_doc,
"bridge(w, noise, left, left_diff, h_reciprocal, right=None)\n\n"
"A Brownian bridge's split, torchsde's ``left = left_diff * w * h_reciprocal + noise`` into\n"
"``left`` and, if given, ``right = w - left`` into ``right``: float32 buffers of one size\n"
"(``left`` may be ``noise``), each operation rounded to float32 in that order, as torch and\n"
"numpy round them.");

/* bridge() and split(): ``seed_object`` NULL for bridge (objects[1] holds the noise), else
 * the noise is drawn into ``left`` first. */
static PyObject *bridge_or_split(PyObject *objects[4], PyObject *seed_object, double scale,
                                 double left_diff, double h_reciprocal) {
    uint64_t seed = 0;
    if (seed_object != NULL && (check_cpu() < 0 || get_seed(seed_object, &seed) < 0))
        return NULL;
    int wanted = objects[3] == Py_None ? 3 : 4, ready = 0;
    Py_buffer views[4];
    PyObject *result = NULL;
    for (; ready < wanted; ready++)
        if (get_out(objects[ready], &views[ready]) < 0)
            goto done;
    for (int k = 1; k < wanted; k++)
        if (views[k].len != views[0].len) {
            PyErr_SetString(PyExc_ValueError, "bridge: w, noise, left and right must have one size");
            goto done;
        }
    if (wanted == 4 && (views[3].buf == views[0].buf || views[3].buf == views[1].buf
                        || views[3].buf == views[2].buf)) {
        PyErr_SetString(PyExc_ValueError, "bridge: right must be a buffer of its own");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    if (seed_object != NULL)
        RANDN(views[2], seed, (float)scale);
    bridge_values((const float *)views[0].buf, (const float *)views[1].buf, (float *)views[2].buf,
                  wanted == 4 ? (float *)views[3].buf : NULL, views[0].len / 4, (float)left_diff,
                  (float)h_reciprocal);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    while (ready > 0)
        PyBuffer_Release(&views[--ready]);
    return result;
}

static PyObject *bridge(PyObject *self, PyObject *args) {
    PyObject *objects[4] = {NULL, NULL, NULL, Py_None};
    double left_diff, h_reciprocal;
    if (!PyArg_ParseTuple(args, "OOOdd|O:bridge", &objects[0], &objects[1], &objects[2], &left_diff,
                          &h_reciprocal, &objects[3]))
        return NULL;
    return bridge_or_split(objects, NULL, 1.0, left_diff, h_reciprocal);
}

PyDoc_STRVAR(split_doc,
"split(w, seed, scale, left, left_diff, h_reciprocal, right=None)\n\n"
"``fill(left, seed, scale)`` then ``bridge(w, left, left, left_diff, h_reciprocal, right)``\n"
"in one call: a tree node's split, its noise drawn here.");

static PyObject *split(PyObject *self, PyObject *args) {
    PyObject *objects[4] = {NULL, NULL, NULL, Py_None};
    PyObject *seed_object;
    double scale, left_diff, h_reciprocal;
    if (!PyArg_ParseTuple(args, "OOdOdd|O:split", &objects[0], &seed_object, &scale, &objects[2],
                          &left_diff, &h_reciprocal, &objects[3]))
        return NULL;
    objects[1] = objects[2];
    return bridge_or_split(objects, seed_object, scale, left_diff, h_reciprocal);
}

#define SUM_MAX 4096
#define SUM_BLOCK 1024 /* elements per pass over the pieces: stays in L1 */

PyDoc_STRVAR(sum_into_doc,
"sum_into(out, pieces)\n\n"
"``out = pieces[0] + pieces[1] + ...``, added left to right in float32 (torchsde's\n"
"``W = W + Wi`` loop), in one call: float32 buffers of one size, at least one piece.");

static PyObject *sum_into(PyObject *self, PyObject *args) {
    PyObject *target, *pieces;
    if (!PyArg_ParseTuple(args, "OO:sum_into", &target, &pieces))
        return NULL;
    PyObject *list = PySequence_Fast(pieces, "pieces must be a sequence");
    if (list == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(list), ready = 0;
    Py_buffer out;
    Py_buffer *views = NULL;
    PyObject *result = NULL;
    int have_out = 0;
    if (count < 1 || count > SUM_MAX) {
        PyErr_SetString(PyExc_ValueError, "sum_into: between 1 and 4096 pieces");
        goto done;
    }
    if (get_out(target, &out) < 0)
        goto done;
    have_out = 1;
    views = PyMem_Malloc(sizeof(Py_buffer) * (size_t)count);
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++) {
        if (get_out(PySequence_Fast_GET_ITEM(list, ready), &views[ready]) < 0)
            goto done;
        if (views[ready].len != out.len || views[ready].buf == out.buf) {
            ready++;
            PyErr_SetString(PyExc_ValueError, "sum_into: pieces must have out's size and not be out");
            goto done;
        }
    }
    float *sum = (float *)out.buf;
    Py_ssize_t total = out.len / 4;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t start = 0; start < total; start += SUM_BLOCK) {
        Py_ssize_t stop = start + SUM_BLOCK < total ? start + SUM_BLOCK : total;
        const float *first = (const float *)views[0].buf;
        memcpy(sum + start, first + start, sizeof(float) * (size_t)(stop - start));
        for (Py_ssize_t k = 1; k < count; k++) {
            const float *piece = (const float *)views[k].buf;
            for (Py_ssize_t i = start; i < stop; i++)
                sum[i] = sum[i] + piece[i];
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    while (ready > 0)
        PyBuffer_Release(&views[--ready]);
    PyMem_Free(views);
    if (have_out)
        PyBuffer_Release(&out);
    Py_DECREF(list);
    return result;
}

static PyObject *supported(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(cpu_supported());
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS, fill_doc},
    {"fill_many", fill_many, METH_VARARGS, fill_many_doc},
    {"bridge", bridge, METH_VARARGS, bridge_doc},
    {"split", split, METH_VARARGS, split_doc},
    {"sum_into", sum_into, METH_VARARGS, sum_into_doc},
    {"supported", supported, METH_NOARGS, "Whether this CPU can run fill (x86 with AVX2 and FMA)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "loom_samplers._randn",
    "torch.randn's float32 CPU draws, bit for bit and faster (see fast_randn).", -1, methods,
};

PyMODINIT_FUNC PyInit__randn(void) { return PyModule_Create(&module); }
