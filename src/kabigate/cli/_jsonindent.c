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
#include <structmember.h>
#include <string.h>

#define MAX_DEPTH 100

typedef struct {
    char *data;
    size_t length, capacity;
    const char *newline;
    size_t newline_len;
} buffer_t;

/* 0 written, -1 out of memory (exception set), 1 for the Python path. */
static int grow_slowly(buffer_t *b, size_t n) {
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

static inline int grow(buffer_t *b, size_t n) {
    return n <= b->capacity - b->length ? 0 : grow_slowly(b, n);
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
    if (PyUnicode_IS_ASCII(text)) { /* the usual symbol name: copied whole unless it needs an escape */
        const unsigned char *ascii = data;
        Py_ssize_t i = 0;
        while (i < n && ascii[i] >= ' ' && ascii[i] <= '~' && ascii[i] != '\\' && ascii[i] != '"') i++;
        if (i == n) {
            memcpy(out, ascii, (size_t)n);
            out[n] = '"';
            b->length = (size_t)(out + n + 1 - b->data);
            return 0;
        }
    }
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

/* -- a module's `inspect --json` record (cli/abi.py _module_json(), its pure path) -----------------
 * module(head, versions, imports, exports, signature, newline): the record's text as dumps() writes
 * _module_json()'s dict, without making a dict per version, import and export (a tree has
 * ~400,000): `head` (its first members, a dict) and `signature` (None or a dict) are written as
 * dumps() writes them; versions (None or SymbolVersions), imports (Imports) and exports (Exports)
 * from their fields, a CRC as crc_text() writes it. None for the Python path when something is not
 * of the types expected. */

/* A member of a record at `depth`: "{" or "," (`first`), a line, "key": */
static int put_member(buffer_t *b, const char *key, int first, int depth) {
    if (put(b, first ? "{" : ",", 1) < 0 || line(b, depth) < 0 || put(b, "\"", 1) < 0
            || put(b, key, strlen(key)) < 0 || put(b, "\": ", 3) < 0)
        return -1;
    return 0;
}

/* crc_text(): "0x%08x" of an int below 2**32, null for None; 1 for anything else. */
static int put_crc(buffer_t *b, PyObject *crc) {
    if (crc == Py_None) return put(b, "null", 4);
    if (!PyLong_CheckExact(crc)) return 1;
    unsigned long value = PyLong_AsUnsignedLong(crc);
    if (value == (unsigned long)-1 && PyErr_Occurred()) { PyErr_Clear(); return 1; }
    if (value > 0xFFFFFFFFul) return 1;
    char text[12] = "\"0x00000000\""; /* 12 characters, no NUL */
    for (int i = 10; i >= 3; i--, value >>= 4) text[i] = "0123456789abcdef"[value & 0xF];
    return put(b, text, sizeof text);
}

/* A field read straight from its slot when `item` is of `type` and the field a slot of it (a
 * slotted dataclass's: a tree's ~760,000 version and import fields), else by getattr; a new
 * reference, NULL with an exception when it fails or the slot is unset. */
typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset; /* -1: read by getattr */
    PyObject *name;
} field_t;

static void field_init(field_t *field, PyObject *items, PyObject *name) {
    field->type = NULL;
    field->offset = -1;
    field->name = name;
    if (name == NULL || items == Py_None || PyTuple_GET_SIZE(items) == 0) return;
    field->type = Py_TYPE(PyTuple_GET_ITEM(items, 0));
    PyObject *descriptor = _PyType_Lookup(field->type, name); /* borrowed */
    if (descriptor != NULL && Py_IS_TYPE(descriptor, &PyMemberDescr_Type)
            && ((PyMemberDescrObject *)descriptor)->d_member->type == T_OBJECT_EX)
        field->offset = ((PyMemberDescrObject *)descriptor)->d_member->offset;
}

static PyObject *field_of(PyObject *item, const field_t *field) {
    if (field->offset < 0 || Py_TYPE(item) != field->type) return PyObject_GetAttr(item, field->name);
    PyObject *value = *(PyObject **)((char *)item + field->offset);
    if (value == NULL) {
        PyErr_SetObject(PyExc_AttributeError, field->name);
        return NULL;
    }
    return Py_NewRef(value);
}

static int put_text_field(buffer_t *b, PyObject *object, PyObject *name) {
    PyObject *value = PyObject_GetAttr(object, name);
    if (value == NULL) return -1;
    int result = PyUnicode_Check(value) ? put_string(b, value) : 1;
    Py_DECREF(value);
    return result;
}

/* A list of records, at depth 1: "[]" or "[<newline>{...},<newline>{...}<newline>]" */
static int list_open(buffer_t *b, Py_ssize_t i) { return put(b, i ? "," : "[", 1) < 0 || line(b, 2) < 0 ? -1 : 0; }
static int record_close(buffer_t *b) { return line(b, 2) < 0 || put(b, "}", 1) < 0 ? -1 : 0; }
static int list_close(buffer_t *b, Py_ssize_t n) {
    if (n == 0) return put(b, "[]", 2);
    return line(b, 1) < 0 || put(b, "]", 1) < 0 ? -1 : 0;
}

static PyObject *jsonindent_module(PyObject *module, PyObject *args) {
    PyObject *head, *versions, *imports, *exports, *signature, *newline_object;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!OO!O!OU", &PyDict_Type, &head, &versions, &PyTuple_Type, &imports,
                          &PyTuple_Type, &exports, &signature, &newline_object))
        return NULL;
    if (!PyUnicode_IS_ASCII(newline_object) || (versions != Py_None && !PyTuple_Check(versions))) Py_RETURN_NONE;
    buffer_t b = {PyMem_Malloc(16384), 0, 16384, (const char *)PyUnicode_DATA(newline_object),
                  (size_t)PyUnicode_GET_LENGTH(newline_object)};
    if (b.data == NULL) return PyErr_NoMemory();
    PyObject *crcs = PyDict_New(), *key, *value;
    PyObject *s_name = PyUnicode_InternFromString("name"), *s_crc = PyUnicode_InternFromString("crc");
    PyObject *s_weak = PyUnicode_InternFromString("weak"), *s_type = PyUnicode_InternFromString("export_type");
    PyObject *s_gpl = PyUnicode_InternFromString("gpl_only"), *s_ns = PyUnicode_InternFromString("namespace");
    PyObject *s_owner = PyUnicode_InternFromString("owner");
    int failed = crcs == NULL || !s_name || !s_crc || !s_weak || !s_type || !s_gpl || !s_ns || !s_owner ? -1 : 0;
    Py_ssize_t position = 0;
    int first = 1;
    while (failed == 0 && PyDict_Next(head, &position, &key, &value)) {
        if (!PyUnicode_Check(key)) { failed = 1; break; }
        if ((failed = put(&b, first ? "{" : ",", 1)) == 0 && (failed = line(&b, 1)) == 0
                && (failed = put_string(&b, key)) == 0 && (failed = put(&b, ": ", 2)) == 0)
            failed = put_value(&b, value, 1);
        first = 0;
    }
    if (first) failed = failed ? failed : 1; /* an empty head: not a record this writes */
    /* "versions": each {"symbol", "crc"}; the first record's CRC of a name kept for its imports */
    Py_ssize_t n = versions == Py_None ? 0 : PyTuple_GET_SIZE(versions);
    field_t version_name, version_crc, import_name, import_weak;
    field_init(&version_name, versions, s_name);
    field_init(&version_crc, versions, s_crc);
    field_init(&import_name, imports, s_name);
    field_init(&import_weak, imports, s_weak);
    if (failed == 0) failed = put_member(&b, "versions", 0, 1);
    if (failed == 0 && versions == Py_None) failed = put(&b, "null", 4);
    for (Py_ssize_t i = n - 1; failed == 0 && i >= 0; i--) { /* backwards: the first record of a name wins */
        PyObject *item = PyTuple_GET_ITEM(versions, i), *name = field_of(item, &version_name);
        PyObject *crc = name ? field_of(item, &version_crc) : NULL;
        if (name == NULL || crc == NULL || PyDict_SetItem(crcs, name, crc) < 0) failed = -1;
        Py_XDECREF(name);
        Py_XDECREF(crc);
    }
    for (Py_ssize_t i = 0; failed == 0 && i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(versions, i), *name = field_of(item, &version_name);
        PyObject *crc = name ? field_of(item, &version_crc) : NULL;
        if (crc == NULL) { Py_XDECREF(name); failed = -1; break; }
        if (crc == Py_None || !PyUnicode_Check(name)) failed = 1; /* a version's CRC is never None */
        if (failed == 0 && (failed = list_open(&b, i)) == 0 && (failed = put_member(&b, "symbol", 1, 3)) == 0
                && (failed = put_string(&b, name)) == 0 && (failed = put_member(&b, "crc", 0, 3)) == 0
                && (failed = put_crc(&b, crc)) == 0)
            failed = record_close(&b);
        Py_DECREF(name);
        Py_DECREF(crc);
    }
    if (failed == 0 && versions != Py_None) failed = list_close(&b, n);
    /* "imports": each {"symbol", "weak", "crc" (its version's, or null)} */
    n = PyTuple_GET_SIZE(imports);
    if (failed == 0) failed = put_member(&b, "imports", 0, 1);
    for (Py_ssize_t i = 0; failed == 0 && i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(imports, i), *name = field_of(item, &import_name);
        PyObject *weak = name ? field_of(item, &import_weak) : NULL;
        if (name == NULL || weak == NULL) failed = -1;
        else if (!PyUnicode_Check(name) || !PyBool_Check(weak)) failed = 1;
        PyObject *crc = failed ? NULL : PyDict_GetItemWithError(crcs, name);
        if (failed == 0 && crc == NULL && PyErr_Occurred()) failed = -1;
        if (failed == 0 && (failed = list_open(&b, i)) == 0 && (failed = put_member(&b, "symbol", 1, 3)) == 0
                && (failed = put_string(&b, name)) == 0 && (failed = put_member(&b, "weak", 0, 3)) == 0
                && (failed = put(&b, weak == Py_True ? "true" : "false", weak == Py_True ? 4 : 5)) == 0
                && (failed = put_member(&b, "crc", 0, 3)) == 0 && (failed = put_crc(&b, crc ? crc : Py_None)) == 0)
            failed = record_close(&b);
        Py_XDECREF(name);
        Py_XDECREF(weak);
    }
    if (failed == 0) failed = list_close(&b, n);
    /* "exports": each {"symbol", "crc", "type", "gpl_only", "namespace", "owner"} */
    n = PyTuple_GET_SIZE(exports);
    if (failed == 0) failed = put_member(&b, "exports", 0, 1);
    for (Py_ssize_t i = 0; failed == 0 && i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(exports, i), *crc = PyObject_GetAttr(item, s_crc);
        PyObject *gpl = crc ? PyObject_GetAttr(item, s_gpl) : NULL;
        if (crc == NULL || gpl == NULL) failed = -1;
        else if (!PyBool_Check(gpl)) failed = 1;
        if (failed == 0 && (failed = list_open(&b, i)) == 0 && (failed = put_member(&b, "symbol", 1, 3)) == 0
                && (failed = put_text_field(&b, item, s_name)) == 0 && (failed = put_member(&b, "crc", 0, 3)) == 0
                && (failed = put_crc(&b, crc)) == 0 && (failed = put_member(&b, "type", 0, 3)) == 0
                && (failed = put_text_field(&b, item, s_type)) == 0 && (failed = put_member(&b, "gpl_only", 0, 3)) == 0
                && (failed = put(&b, gpl == Py_True ? "true" : "false", gpl == Py_True ? 4 : 5)) == 0
                && (failed = put_member(&b, "namespace", 0, 3)) == 0 && (failed = put_text_field(&b, item, s_ns)) == 0
                && (failed = put_member(&b, "owner", 0, 3)) == 0 && (failed = put_text_field(&b, item, s_owner)) == 0)
            failed = record_close(&b);
        Py_XDECREF(crc);
        Py_XDECREF(gpl);
    }
    if (failed == 0) failed = list_close(&b, n);
    if (failed == 0 && (failed = put_member(&b, "signature", 0, 1)) == 0 && (failed = put_value(&b, signature, 1)) == 0
            && (failed = line(&b, 0)) == 0)
        failed = put(&b, "}", 1);
    PyObject *result = failed < 0 ? NULL
                       : failed > 0 ? Py_NewRef(Py_None) : PyUnicode_DecodeASCII(b.data, (Py_ssize_t)b.length, NULL);
    Py_XDECREF(crcs);
    Py_XDECREF(s_name);
    Py_XDECREF(s_crc);
    Py_XDECREF(s_weak);
    Py_XDECREF(s_type);
    Py_XDECREF(s_gpl);
    Py_XDECREF(s_ns);
    Py_XDECREF(s_owner);
    PyMem_Free(b.data);
    return result;
}

static PyMethodDef methods[] = {
    {"dumps", jsonindent_dumps, METH_VARARGS,
     "json.dumps(value, indent=2)'s text at the newline's indent, or None for the Python path."},
    {"module", jsonindent_module, METH_VARARGS,
     "A module's inspect --json record from its head, versions, imports, exports and signature, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_jsonindent", NULL, -1, methods,
                                        NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__jsonindent(void) { return PyModule_Create(&definition); }
