/* loom_samplers._randn: torch.randn's float32 CPU draws, bit for bit and faster, and the
 * Brownian tree's float32 arithmetic, for the tree in loom_samplers.brownian.
 *
 * The kernels are in randn_kernels.h (x86 AVX2 and AVX-512). Nothing here is trusted blindly:
 * loom_samplers.fast_randn compares each kernel this CPU can run with torch.randn at first use
 * and uses the module only where the bits are equal. Buffers are float32, C-contiguous,
 * writable and of 16 or more elements; the GIL is released while the numbers are made.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define LOOM_X86 1
#include "randn_kernels.h"
#else
#define LOOM_X86 0
typedef struct {
    float scale;
    const float *w;
    float *right;
    float left_diff, h_reciprocal;
} Finish;
#endif

enum { KERNEL_NONE = 0, KERNEL_AVX2 = 1, KERNEL_AVX512 = 2 };
static const char *kernel_names[] = {"none", "avx2", "avx512"};
static int best_kernel = -1; /* what the CPU runs, found at first use */
static int kernel = -1;      /* in use: best_kernel unless use() chose another */

static int find_kernel(void) {
    if (best_kernel < 0) {
        best_kernel = KERNEL_NONE;
#if LOOM_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
            best_kernel = KERNEL_AVX2;
            if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq"))
                best_kernel = KERNEL_AVX512;
        }
#endif
        kernel = best_kernel;
    }
    return kernel;
}

/* torch.randn(seed) into out, finished with f, by the kernel in use (never KERNEL_NONE here). */
static void draw(float *out, int64_t count, uint64_t seed, const Finish *f) {
#if LOOM_X86
    if (kernel == KERNEL_AVX512)
        randn_avx512(out, count, seed, f);
    else
        randn_avx2(out, count, seed, f);
#endif
}

/* f applied to noise already in out (never without a kernel here). */
static void finish(float *out, int64_t count, const Finish *f) {
#if LOOM_X86
    finish_range(out, 0, count, f);
#endif
}

static int check_kernel(void) {
    if (find_kernel() != KERNEL_NONE)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "loom_samplers._randn needs an x86-64 CPU with AVX2 and FMA");
    return -1;
}

/* A writable, C-contiguous float32 buffer of 16 or more elements from ``target``. */
static int get_buffer(PyObject *target, Py_buffer *view) {
    if (PyObject_GetBuffer(target, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0)
        return -1;
    if (view->itemsize != 4 || view->format == NULL || strcmp(view->format, "f") != 0 || view->len / 4 < 16) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "expected a C-contiguous float32 buffer of 16 or more elements");
        return -1;
    }
    return 0;
}

static void release_buffers(Py_buffer *views, int count, int taken) {
    for (int k = 0; k < count; k++)
        if (taken & (1 << k))
            PyBuffer_Release(&views[k]);
}

/* ``count`` buffers of one size from ``objects`` (NULL or None entries are skipped and left
 * unset); on failure those taken are released. */
static int get_buffers(PyObject **objects, Py_buffer *views, int count, int *taken) {
    *taken = 0;
    for (int k = 0; k < count; k++) {
        views[k].buf = NULL;
        if (objects[k] == NULL || objects[k] == Py_None)
            continue;
        if (get_buffer(objects[k], &views[k]) < 0)
            goto fail;
        *taken |= 1 << k;
        for (int j = 0; j < k; j++)
            if (views[j].buf != NULL && views[j].len != views[k].len) {
                PyErr_SetString(PyExc_ValueError, "the buffers must have one size");
                goto fail;
            }
    }
    return 0;
fail:
    release_buffers(views, count, *taken);
    *taken = 0;
    return -1;
}

/* A seed as torch's manual_seed takes it: a non-negative integer below 2**64. */
static int get_seed(PyObject *object, uint64_t *seed) {
    unsigned long long value = PyLong_AsUnsignedLongLong(object);
    if (value == (unsigned long long)-1 && PyErr_Occurred())
        return -1;
    *seed = (uint64_t)value;
    return 0;
}

PyDoc_STRVAR(fill_doc,
"fill(out, seed, scale=1.0)\n\n"
"Fill ``out`` with what ``torch.randn`` draws from a CPU generator seeded with ``seed``,\n"
"times ``scale`` (a float32 multiply, as ``tensor.mul_(scale)``).");

static PyObject *fill(PyObject *self, PyObject *args) {
    PyObject *target, *seed_object;
    uint64_t seed;
    double scale = 1.0;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "OO|d:fill", &target, &seed_object, &scale) || check_kernel() < 0
        || get_seed(seed_object, &seed) < 0 || get_buffer(target, &view) < 0)
        return NULL;
    Finish finish = {(float)scale, NULL, NULL, 0.0f, 0.0f};
    Py_BEGIN_ALLOW_THREADS
    draw((float *)view.buf, (int64_t)(view.len / 4), seed, &finish);
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
    if (!PyArg_ParseTuple(args, "OOO:fill_many", &outs, &seeds, &scales) || check_kernel() < 0)
        return NULL;
    PyObject *out_list = PySequence_Fast(outs, "outs must be a sequence");
    PyObject *seed_list = out_list ? PySequence_Fast(seeds, "seeds must be a sequence") : NULL;
    PyObject *scale_list = seed_list ? PySequence_Fast(scales, "scales must be a sequence") : NULL;
    Py_buffer views[FILL_MANY_MAX];
    uint64_t seed_values[FILL_MANY_MAX];
    Finish finishes[FILL_MANY_MAX];
    Py_ssize_t count = 0, ready = 0;
    PyObject *result = NULL;
    if (scale_list == NULL)
        goto done;
    count = PySequence_Fast_GET_SIZE(out_list);
    if (count > FILL_MANY_MAX || PySequence_Fast_GET_SIZE(seed_list) != count
        || PySequence_Fast_GET_SIZE(scale_list) != count) {
        PyErr_SetString(PyExc_ValueError, "fill_many: outs, seeds and scales must have one length (at most 64)");
        goto done;
    }
    for (; ready < count; ready++) {
        if (get_seed(PySequence_Fast_GET_ITEM(seed_list, ready), &seed_values[ready]) < 0)
            goto done;
        double scale = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(scale_list, ready));
        if (PyErr_Occurred() || get_buffer(PySequence_Fast_GET_ITEM(out_list, ready), &views[ready]) < 0)
            goto done;
        finishes[ready] = (Finish){(float)scale, NULL, NULL, 0.0f, 0.0f};
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        draw((float *)views[i].buf, (int64_t)(views[i].len / 4), seed_values[i], &finishes[i]);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    while (ready > 0)
        PyBuffer_Release(&views[--ready]);
    Py_XDECREF(out_list);
    Py_XDECREF(seed_list);
    Py_XDECREF(scale_list);
    return result;
}

/* A node's split: ``left`` (noise drawn here from ``seed_object``, else already in it) becomes
 * ``left_diff * w * h_reciprocal + noise`` and, if given, ``right`` becomes ``w - left``. */
static PyObject *split_node(PyObject *w, PyObject *left, PyObject *right, PyObject *seed_object,
                            double scale, double left_diff, double h_reciprocal) {
    PyObject *objects[3] = {w, left, right};
    uint64_t seed = 0;
    Py_buffer views[3];
    int taken;
    if (check_kernel() < 0 || (seed_object != NULL && get_seed(seed_object, &seed) < 0)
        || get_buffers(objects, views, 3, &taken) < 0)
        return NULL;
    const char *problem = NULL;
    if (views[1].buf == views[0].buf)
        problem = "left must not be w";
    else if (views[2].buf != NULL && (views[2].buf == views[0].buf || views[2].buf == views[1].buf))
        problem = "right must be a buffer of its own";
    if (problem != NULL) {
        release_buffers(views, 3, taken);
        PyErr_SetString(PyExc_ValueError, problem);
        return NULL;
    }
    Finish node = {(float)scale, (const float *)views[0].buf, (float *)views[2].buf,
                   (float)left_diff, (float)h_reciprocal};
    float *out = (float *)views[1].buf;
    int64_t count = (int64_t)(views[1].len / 4);
    Py_BEGIN_ALLOW_THREADS
    if (seed_object != NULL)
        draw(out, count, seed, &node);
    else
        finish(out, count, &node);
    Py_END_ALLOW_THREADS
    release_buffers(views, 3, taken);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(split_doc,
"split(w, seed, scale, left, left_diff, h_reciprocal, right=None)\n\n"
"A tree node's split: ``fill(left, seed, scale)``, then torchsde's ``left = left_diff * w *\n"
"h_reciprocal + noise`` in place and, if given, ``right = w - left`` into ``right``, each\n"
"operation rounded to float32 in that order, as torch and numpy round them.");

static PyObject *split(PyObject *self, PyObject *args) {
    PyObject *w, *seed_object, *left, *right = Py_None;
    double scale, left_diff, h_reciprocal;
    if (!PyArg_ParseTuple(args, "OOdOdd|O:split", &w, &seed_object, &scale, &left, &left_diff,
                          &h_reciprocal, &right))
        return NULL;
    return split_node(w, left, right, seed_object, scale, left_diff, h_reciprocal);
}

PyDoc_STRVAR(bridge_doc,
"bridge(w, left, left_diff, h_reciprocal, right=None)\n\n"
"``split`` for noise drawn elsewhere (already scaled) that ``left`` holds.");

static PyObject *bridge(PyObject *self, PyObject *args) {
    PyObject *w, *left, *right = Py_None;
    double left_diff, h_reciprocal;
    if (!PyArg_ParseTuple(args, "OOdd|O:bridge", &w, &left, &left_diff, &h_reciprocal, &right))
        return NULL;
    return split_node(w, left, right, NULL, 1.0, left_diff, h_reciprocal);
}

#define SUM_MAX 4096
#define SUM_LANES 16

/* sum = pieces[0] + pieces[1] + ... per element, left to right. The running sums of 16
 * elements stay in registers while every piece streams past once: ~3x faster than adding
 * piece by piece into ``sum`` when the pieces are out of cache, as a query's mostly are. */
static void sum_pieces(float *sum, const float *const *pieces, Py_ssize_t count, Py_ssize_t total) {
    Py_ssize_t i = 0;
    for (; i + SUM_LANES <= total; i += SUM_LANES) {
        float acc[SUM_LANES];
        for (int j = 0; j < SUM_LANES; j++)
            acc[j] = pieces[0][i + j];
        for (Py_ssize_t k = 1; k < count; k++) {
            const float *piece = pieces[k] + i;
            for (int j = 0; j < SUM_LANES; j++)
                acc[j] = acc[j] + piece[j];
        }
        for (int j = 0; j < SUM_LANES; j++)
            sum[i + j] = acc[j];
    }
    for (; i < total; i++) {
        float acc = pieces[0][i];
        for (Py_ssize_t k = 1; k < count; k++)
            acc = acc + pieces[k][i];
        sum[i] = acc;
    }
}

PyDoc_STRVAR(sum_into_doc,
"sum_into(out, pieces)\n\n"
"``out = pieces[0] + pieces[1] + ...``, added left to right in float32 (torchsde's\n"
"``W = W + Wi`` loop), in one call: buffers of one size, at least one piece, none of them out.");

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
    const float **starts = NULL;
    PyObject *result = NULL;
    int have_out = 0;
    if (count < 1 || count > SUM_MAX) {
        PyErr_SetString(PyExc_ValueError, "sum_into: between 1 and 4096 pieces");
        goto done;
    }
    if (get_buffer(target, &out) < 0)
        goto done;
    have_out = 1;
    views = PyMem_Malloc(sizeof(Py_buffer) * (size_t)count);
    starts = PyMem_Malloc(sizeof(float *) * (size_t)count);
    if (views == NULL || starts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (; ready < count; ready++) {
        if (get_buffer(PySequence_Fast_GET_ITEM(list, ready), &views[ready]) < 0)
            goto done;
        if (views[ready].len != out.len || views[ready].buf == out.buf) {
            ready++;
            PyErr_SetString(PyExc_ValueError, "sum_into: pieces must have out's size and not be out");
            goto done;
        }
        starts[ready] = (const float *)views[ready].buf;
    }
    Py_BEGIN_ALLOW_THREADS
    sum_pieces((float *)out.buf, starts, count, out.len / 4);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    while (ready > 0)
        PyBuffer_Release(&views[--ready]);
    PyMem_Free(views);
    PyMem_Free(starts);
    if (have_out)
        PyBuffer_Release(&out);
    Py_DECREF(list);
    return result;
}

static PyObject *kernels(PyObject *self, PyObject *unused) {
    find_kernel();
    PyObject *names = PyList_New(0);
    for (int k = best_kernel; names != NULL && k > KERNEL_NONE; k--) {
        PyObject *name = PyUnicode_FromString(kernel_names[k]);
        if (name == NULL || PyList_Append(names, name) < 0)
            Py_CLEAR(names);
        Py_XDECREF(name);
    }
    return names;
}

static PyObject *use(PyObject *self, PyObject *args) {
    const char *name;
    if (!PyArg_ParseTuple(args, "s:use", &name))
        return NULL;
    find_kernel();
    for (int k = KERNEL_AVX2; k <= best_kernel; k++)
        if (strcmp(name, kernel_names[k]) == 0) {
            kernel = k;
            return PyUnicode_FromString(kernel_names[k]);
        }
    PyErr_Format(PyExc_ValueError, "kernel %R is not one this CPU runs", PyTuple_GET_ITEM(args, 0));
    return NULL;
}

static PyObject *in_use(PyObject *self, PyObject *unused) {
    return PyUnicode_FromString(kernel_names[find_kernel()]);
}

static PyMethodDef methods[] = {
    {"fill", fill, METH_VARARGS, fill_doc},
    {"fill_many", fill_many, METH_VARARGS, fill_many_doc},
    {"bridge", bridge, METH_VARARGS, bridge_doc},
    {"split", split, METH_VARARGS, split_doc},
    {"sum_into", sum_into, METH_VARARGS, sum_into_doc},
    {"kernels", kernels, METH_NOARGS, "The kernels this CPU runs, fastest first (empty: none)."},
    {"use", use, METH_VARARGS, "use(name): draw with this kernel (one of kernels())."},
    {"in_use", in_use, METH_NOARGS, "The kernel that draws (\"none\": this CPU runs none)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "loom_samplers._randn",
    "torch.randn's float32 CPU draws, bit for bit and faster, and the Brownian tree's float32\n"
    "arithmetic (see loom_samplers.fast_randn).", -1, methods,
};

PyMODINIT_FUNC PyInit__randn(void) { return PyModule_Create(&module); }
