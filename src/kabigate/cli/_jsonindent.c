/* indent(compact, newline): json.dumps(value, indent=2)'s text from json.dumps(value,
 * separators=(",", ":"))'s, both with ensure_ascii (issue 23: json's indenting encoder is pure
 * Python, its compact one C). `newline` is "\n" and the indent the value starts at. The compact
 * text is scanned once; outside strings, `{` and `[` open a line one level deeper (an empty pair
 * stays as it is), `,` starts a line at the same level, `:` gets its space, `}` and `]` close a
 * level. Inside strings (json escapes every control character and quote) nothing changes. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    char *data;
    size_t length, capacity;
} buffer_t;

static int put(buffer_t *b, const char *s, size_t n) {
    if (n > b->capacity - b->length) {
        size_t capacity = b->capacity;
        while (n > capacity - b->length) {
            if (capacity > PY_SSIZE_T_MAX / 2) return -1;
            capacity *= 2;
        }
        char *grown = PyMem_Realloc(b->data, capacity);
        if (grown == NULL) return -1;
        b->data = grown;
        b->capacity = capacity;
    }
    memcpy(b->data + b->length, s, n);
    b->length += n;
    return 0;
}

static int line(buffer_t *b, const char *newline, size_t newline_len, size_t depth) {
    if (put(b, newline, newline_len) < 0) return -1;
    for (size_t i = 0; i < depth; i++)
        if (put(b, "  ", 2) < 0) return -1;
    return 0;
}

static PyObject *jsonindent_indent(PyObject *module, PyObject *args) {
    PyObject *compact, *newline_object;
    (void)module;
    if (!PyArg_ParseTuple(args, "UU", &compact, &newline_object)) return NULL;
    if (!PyUnicode_IS_ASCII(compact) || !PyUnicode_IS_ASCII(newline_object)) {
        PyErr_SetString(PyExc_ValueError, "ensure_ascii JSON and an ASCII newline expected");
        return NULL;
    }
    const char *s = (const char *)PyUnicode_DATA(compact), *newline = (const char *)PyUnicode_DATA(newline_object);
    size_t n = (size_t)PyUnicode_GET_LENGTH(compact), newline_len = (size_t)PyUnicode_GET_LENGTH(newline_object);
    buffer_t b = {PyMem_Malloc(n * 2 + 64), 0, n * 2 + 64};
    if (b.data == NULL) return PyErr_NoMemory();
    size_t depth = 0;
    int failed = 0;
    for (size_t i = 0; i < n && !failed; i++) {
        char c = s[i];
        if (c == '"') {
            size_t j = i + 1;
            while (j < n && s[j] != '"') j += s[j] == '\\' ? 2 : 1;
            if (j >= n) { failed = 2; break; }
            failed = put(&b, s + i, j - i + 1) < 0;
            i = j;
        } else if (c == '{' || c == '[') {
            if (i + 1 < n && s[i + 1] == (c == '{' ? '}' : ']')) {
                failed = put(&b, s + i, 2) < 0;
                i++;
            } else {
                failed = put(&b, &c, 1) < 0 || line(&b, newline, newline_len, ++depth) < 0;
            }
        } else if (c == '}' || c == ']') {
            if (depth == 0) { failed = 2; break; }
            failed = line(&b, newline, newline_len, --depth) < 0 || put(&b, &c, 1) < 0;
        } else if (c == ',') {
            failed = put(&b, ",", 1) < 0 || line(&b, newline, newline_len, depth) < 0;
        } else if (c == ':') {
            failed = put(&b, ": ", 2) < 0;
        } else {
            failed = put(&b, &c, 1) < 0;
        }
    }
    if (failed || depth != 0) {
        PyMem_Free(b.data);
        if (failed == 1) return PyErr_NoMemory();
        PyErr_SetString(PyExc_ValueError, "not compact JSON");
        return NULL;
    }
    PyObject *result = PyUnicode_DecodeASCII(b.data, (Py_ssize_t)b.length, "strict");
    PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"indent", jsonindent_indent, METH_VARARGS, "json.dumps(indent=2)'s text from the compact text."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_jsonindent", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonindent(void) { return PyModule_Create(&definition); }
