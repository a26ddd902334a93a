/* dumps(value, newline): json.dumps(value, indent=2)'s text (ensure_ascii), written in one pass
 * (issue 23: json's indenting encoder is pure Python; its compact C encoder and a second pass to
 * indent its text cost twice a module's bytes). `newline` is "\n" and the indent the value starts
 * at. Only what json writes one way is written here: exact dicts with str keys, exact lists and
 * tuples, str (an enum's subclass too: json writes its text), exact int and float, True, False,
 * None. Anything else -- a key json would convert, another type, nesting deeper than MAX_DEPTH --
 * returns None and the caller's Python path writes the value (or refuses it, as json does). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#define MAX_DEPTH 100

typedef struct {
    char *data;
    size_t length, capacity;
    const char *newline;
    size_t newline_len;
} buffer_t;

/* 0 written, -1 out of memory (exception set), 1 for the Python path. */
static int grow(buffer_t *b, size_t n) {
    if (n <= b->capacity - b->length) return 0;
    size_t capacity = b->capacity;
    while (n > capacity - b->length) {
        if (capacity > PY_SSIZE_T_MAX / 2) { PyErr_NoMemory(); return -1; }
        capacity *= 2;
    }
    char *grown = PyMem_Realloc(b->data, capacity);
    if (grown == NULL) { PyErr_NoMemory(); return -1; }
    b->data = grown;
    b->capacity = capacity;
    return 0;
}

static int put(buffer_t *b, const char *s, size_t n) {
    if (grow(b, n) < 0) return -1;
    memcpy(b->data + b->length, s, n);
    b->length += n;
    return 0;
}

static int line(buffer_t *b, int depth) {
    if (grow(b, b->newline_len + 2 * (size_t)depth) < 0) return -1;
    memcpy(b->data + b->length, b->newline, b->newline_len);
    b->length += b->newline_len;
    memset(b->data + b->length, ' ', 2 * (size_t)depth);
    b->length += 2 * (size_t)depth;
    return 0;
}

/* json's py_encode_basestring_ascii(): printable ASCII but '"' and '\\' as is, the usual short
 * escapes, anything else \uXXXX (a surrogate pair above the BMP). */
static int put_string(buffer_t *b, PyObject *text) {
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (grow(b, (size_t)n * 12 + 2) < 0) return -1; /* the longest escape: a surrogate pair */
    char *out = b->data + b->length;
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        if (c >= ' ' && c <= '~' && c != '\\' && c != '"') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
            case '\\': *out++ = '\\'; break;
            case '"': *out++ = '"'; break;
            case '\b': *out++ = 'b'; break;
            case '\f': *out++ = 'f'; break;
            case '\n': *out++ = 'n'; break;
            case '\r': *out++ = 'r'; break;
            case '\t': *out++ = 't'; break;
            default:
                if (c >= 0x10000) {
                    Py_UCS4 v = c - 0x10000, high = 0xd800 | ((v >> 10) & 0x3ff), low = 0xdc00 | (v & 0x3ff);
                    out += sprintf(out, "u%04x\\", (unsigned)high);
                    c = low;
                }
                out += sprintf(out, "u%04x", (unsigned)c);
        }
    }
    *out++ = '"';
    b->length = (size_t)(out - b->data);
    return 0;
}

static int put_text_of(buffer_t *b, PyObject *value) {
    PyObject *text = PyObject_Repr(value);
    if (text == NULL) return -1;
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(text, &n);
    int result = s == NULL ? -1 : put(b, s, (size_t)n);
    Py_DECREF(text);
    return result;
}

static int put_value(buffer_t *b, PyObject *value, int depth) {
    if (PyUnicode_Check(value)) return put_string(b, value);
    if (value == Py_None) return put(b, "null", 4);
    if (value == Py_True) return put(b, "true", 4);
    if (value == Py_False) return put(b, "false", 5);
    if (PyLong_CheckExact(value)) return put_text_of(b, value);
    if (PyFloat_CheckExact(value)) { /* float.__repr__, or json's words for what is not a number */
        double d = PyFloat_AS_DOUBLE(value);
        if (isnan(d)) return put(b, "NaN", 3);
        if (isinf(d)) return d > 0 ? put(b, "Infinity", 8) : put(b, "-Infinity", 9);
        return put_text_of(b, value);
    }
    if (depth >= MAX_DEPTH) return 1;
    if (PyDict_CheckExact(value)) {
        if (PyDict_GET_SIZE(value) == 0) return put(b, "{}", 2);
        Py_ssize_t position = 0;
        PyObject *key, *item;
        char open = '{';
        while (PyDict_Next(value, &position, &key, &item)) {
            if (!PyUnicode_Check(key)) return 1;
            int failed;
            if ((failed = put(b, &open, 1)) != 0 || (failed = line(b, depth + 1)) != 0
                    || (failed = put_string(b, key)) != 0 || (failed = put(b, ": ", 2)) != 0
                    || (failed = put_value(b, item, depth + 1)) != 0)
                return failed;
            open = ',';
        }
        return line(b, depth) < 0 || put(b, "}", 1) < 0 ? -1 : 0;
    }
    if (PyList_CheckExact(value) || PyTuple_CheckExact(value)) {
        PyObject *items = PySequence_Fast(value, "");
        if (items == NULL) return -1;
        Py_ssize_t n = PySequence_Fast_GET_SIZE(items);
        int failed = 0;
        if (n == 0) failed = put(b, "[]", 2);
        for (Py_ssize_t i = 0; i < n && failed == 0; i++) /* a list's length read each time: json's too */
            if ((failed = put(b, i ? "," : "[", 1)) == 0 && (failed = line(b, depth + 1)) == 0)
                failed = put_value(b, PySequence_Fast_GET_ITEM(items, i), depth + 1);
        if (failed == 0 && n) failed = line(b, depth) < 0 || put(b, "]", 1) < 0 ? -1 : 0;
        Py_DECREF(items);
        return failed;
    }
    return 1;
}

static PyObject *jsonindent_dumps(PyObject *module, PyObject *args) {
    PyObject *value, *newline_object;
    (void)module;
    if (!PyArg_ParseTuple(args, "OU", &value, &newline_object)) return NULL;
    if (!PyUnicode_IS_ASCII(newline_object)) {
        PyErr_SetString(PyExc_ValueError, "an ASCII newline expected");
        return NULL;
    }
    buffer_t b = {PyMem_Malloc(4096), 0, 4096, (const char *)PyUnicode_DATA(newline_object),
                  (size_t)PyUnicode_GET_LENGTH(newline_object)};
    if (b.data == NULL) return PyErr_NoMemory();
    /* the depth counts levels below the newline's own indent */
    int failed = put_value(&b, value, 0);
    PyObject *result = failed < 0 ? NULL
                       : failed > 0 ? Py_NewRef(Py_None) : PyUnicode_DecodeASCII(b.data, (Py_ssize_t)b.length, NULL);
    PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"dumps", jsonindent_dumps, METH_VARARGS,
     "json.dumps(value, indent=2)'s text at the newline's indent, or None for the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_jsonindent", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonindent(void) { return PyModule_Create(&definition); }
