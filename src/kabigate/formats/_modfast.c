/* The module parser's hot path in C (issue 23): the facts formats/module.py parse_module() reads
 * from a module's ELF image (section headers, the symbol table's undefined, common and exported
 * entries, __versions, .modinfo, __ksymtab* and the layout), computed as its Python path does;
 * the signature's PKCS#7 (formats/modsig.py) and Module.symvers' lines (formats/symvers.py) too.
 *
 * Modules are hostile input. Every offset and size read from the file is checked against the
 * image's length before it is used, with arithmetic that cannot overflow (checked_range()).
 * Anything unusual -- any file the Python path might refuse or read differently -- returns None,
 * and the caller reads the file with the Python path, which gives the error message: this code
 * only ever accepts, never refuses.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHT_SYMTAB 2
#define SHT_STRTAB 3
#define SHT_NOBITS 8
#define SHN_UNDEF 0
#define SHN_LORESERVE 0xFF00
#define SHN_ABS 0xFFF1
#define SHN_COMMON 0xFFF2
#define SHN_XINDEX 0xFFFF
#define SHF_WRITE 0x1
#define SHF_ALLOC 0x2
#define SHF_EXECINSTR 0x4
#define MODVERSION_INFO_SIZE 64
#define THIS_MODULE ".gnu.linkonce.this_module"

typedef struct {
    const unsigned char *name; /* into the section name table, NUL-terminated or ending at the table's end */
    size_t name_len;
    uint32_t type;
    uint64_t flags, offset, size, link, entsize, name_off;
} section_t;

typedef struct {
    const unsigned char *data;
    uint64_t size; /* the ELF image's length (a signature after it is not part of it) */
    int is64, little;
    section_t *sections;
    uint64_t count;
} elf_t;

/* offset + length lies within [0, limit]: written so that no sum can overflow. */
static int checked_range(uint64_t offset, uint64_t length, uint64_t limit) {
    return offset <= limit && length <= limit - offset;
}

static uint64_t get(const elf_t *elf, uint64_t offset, int width) {
    const unsigned char *p = elf->data + offset;
    uint64_t value = 0;
    if (elf->little)
        for (int i = width - 1; i >= 0; i--) value = (value << 8) | p[i];
    else
        for (int i = 0; i < width; i++) value = (value << 8) | p[i];
    return value;
}

static int name_is(const section_t *s, const char *name) {
    size_t n = strlen(name);
    return s->name_len == n && memcmp(s->name, name, n) == 0;
}

static int name_starts(const section_t *s, const char *prefix) {
    size_t n = strlen(prefix);
    return s->name_len >= n && memcmp(s->name, prefix, n) == 0;
}

/* The first section so named (ElfFile.section()), or -1. */
static int64_t find_section(const elf_t *elf, const char *name) {
    for (uint64_t i = 0; i < elf->count; i++)
        if (name_is(&elf->sections[i], name)) return (int64_t)i;
    return -1;
}

static PyObject *decode(const unsigned char *s, size_t n) {
    return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, "replace");
}

/* A symbol name's str, one per distinct name for the process: a tree's 4,023 modules name
 * ~380,000 imports and versions, ~20,000 distinct. Shared, they are made, hashed (by the dicts
 * that look them up) and freed once each; a kernel's exports looked up by them compare by
 * identity once their Module.symvers names come from here too. ASCII names of at most
 * NAME_CACHE_LONGEST bytes are kept, up to NAME_CACHE_MOST of them (a hostile module's millions
 * of names are made, not kept); anything else is decoded as decode() does. */
#define NAME_CACHE_MOST (1 << 18)
#define NAME_CACHE_LONGEST 128

typedef struct {
    uint64_t hash;
    PyObject *text;
} name_slot_t;

static name_slot_t *name_slots;
static size_t name_capacity, name_count;

static int name_cache_grow(void) {
    size_t capacity = name_capacity ? name_capacity * 2 : 1 << 15;
    name_slot_t *slots = PyMem_Calloc(capacity, sizeof(name_slot_t));
    if (slots == NULL) return -1;
    for (size_t i = 0; i < name_capacity; i++) {
        if (name_slots[i].text == NULL) continue;
        size_t at = (size_t)name_slots[i].hash & (capacity - 1);
        while (slots[at].text != NULL) at = (at + 1) & (capacity - 1);
        slots[at] = name_slots[i];
    }
    PyMem_Free(name_slots);
    name_slots = slots;
    name_capacity = capacity;
    return 0;
}

static PyObject *name_text(const unsigned char *s, size_t n) {
    if (n > NAME_CACHE_LONGEST) return decode(s, n);
    uint64_t hash = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        if (s[i] & 0x80) return decode(s, n);
        hash = (hash ^ s[i]) * 1099511628211ull;
    }
    if (name_count * 2 >= name_capacity && name_count < NAME_CACHE_MOST && name_cache_grow() < 0) return decode(s, n);
    size_t at = (size_t)hash & (name_capacity - 1);
    for (; name_slots[at].text != NULL; at = (at + 1) & (name_capacity - 1)) {
        PyObject *text = name_slots[at].text;
        if (name_slots[at].hash == hash && (size_t)PyUnicode_GET_LENGTH(text) == n && memcmp(PyUnicode_DATA(text), s, n) == 0)
            return Py_NewRef(text);
    }
    PyObject *text = PyUnicode_New((Py_ssize_t)n, 127);
    if (text == NULL) return NULL;
    memcpy(PyUnicode_DATA(text), s, n);
    if (name_count < NAME_CACHE_MOST) { /* the table is at most half full: the slot found is free */
        name_slots[at].hash = hash;
        name_slots[at].text = Py_NewRef(text);
        name_count++;
    }
    return text;
}

/* Length up to the first NUL within [s, s + limit), or limit. */
static size_t bounded_strlen(const unsigned char *s, size_t limit) {
    const unsigned char *end = memchr(s, 0, limit);
    return end ? (size_t)(end - s) : limit;
}

/* ElfFile.__init__ and _read_section_headers(): 0 on success, -1 to fall back. */
static int read_headers(elf_t *elf, uint64_t *shstrndx_out) {
    uint64_t size = elf->size;
    const unsigned char *d = elf->data;
    if (size < 16 || memcmp(d, "\x7f" "ELF", 4) != 0) return -1;
    if (d[4] != 1 && d[4] != 2) return -1;
    if (d[5] != 1 && d[5] != 2) return -1;
    elf->is64 = d[4] == 2;
    elf->little = d[5] == 1;
    uint64_t header_end = elf->is64 ? 64 : 52;
    if (size < header_end) return -1;
    uint64_t shoff = elf->is64 ? get(elf, 0x28, 8) : get(elf, 0x20, 4);
    uint64_t shentsize = get(elf, elf->is64 ? 58 : 46, 2);
    uint64_t shnum = get(elf, elf->is64 ? 60 : 48, 2);
    uint64_t shstrndx = get(elf, elf->is64 ? 62 : 50, 2);
    uint64_t entry = elf->is64 ? 64 : 40;
    if (shnum == 0 || shoff == 0 || shentsize != entry) return -1;
    if (!checked_range(shoff, shnum * entry, size)) return -1; /* shnum < 2^16: no overflow */
    elf->sections = PyMem_Calloc((size_t)shnum, sizeof(section_t));
    if (elf->sections == NULL) return -1;
    elf->count = shnum;
    for (uint64_t i = 0; i < shnum; i++) {
        uint64_t h = shoff + i * entry;
        section_t *s = &elf->sections[i];
        s->name_off = get(elf, h, 4);
        s->type = (uint32_t)get(elf, h + 4, 4);
        if (elf->is64) {
            s->flags = get(elf, h + 8, 8);
            s->offset = get(elf, h + 24, 8);
            s->size = get(elf, h + 32, 8);
            s->link = get(elf, h + 40, 4);
            s->entsize = get(elf, h + 56, 8);
        } else {
            s->flags = get(elf, h + 8, 4);
            s->offset = get(elf, h + 16, 4);
            s->size = get(elf, h + 20, 4);
            s->link = get(elf, h + 24, 4);
            s->entsize = get(elf, h + 36, 4);
        }
    }
    if (shstrndx == SHN_XINDEX) shstrndx = elf->sections[0].link;
    if (!(0 < shstrndx && shstrndx < shnum)) return -1;
    const section_t *names = &elf->sections[shstrndx];
    if (!checked_range(names->offset, names->size, size)) return -1;
    for (uint64_t i = 0; i < shnum; i++) {
        section_t *s = &elf->sections[i];
        uint64_t off = s->name_off;
        if (!(off < (names->size > 1 ? names->size : 1))) return -1;
        if (off >= names->size) { /* an empty name table: every name is "" */
            s->name = d;
            s->name_len = 0;
        } else {
            s->name = d + names->offset + off;
            s->name_len = bounded_strlen(s->name, (size_t)(names->size - off));
        }
        if (s->type != SHT_NOBITS && !checked_range(s->offset, s->size, size)) return -1;
    }
    *shstrndx_out = shstrndx;
    return 0;
}

typedef struct {
    uint64_t name_off, value, shndx;
    unsigned char info;
    const unsigned char *name;
    size_t name_len;
} symbol_t;

static int is_table(const section_t *s) {
    static const char *names[] = {"__ksymtab", "___ksymtab+", "__ksymtab_gpl", "___ksymtab_gpl+", "__kcrctab",
                                  "___kcrctab+", "__kcrctab_gpl", "___kcrctab_gpl+", "__ksymtab_strings"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++)
        if (name_is(s, names[i])) return 1;
    return name_starts(s, "___ksymtab+") || name_starts(s, "___ksymtab_gpl+") || name_starts(s, "___kcrctab+")
           || name_starts(s, "___kcrctab_gpl+");
}

static int wanted(const elf_t *elf, const char *tables, uint64_t shndx, int any_table) {
    if (shndx == SHN_UNDEF || shndx == SHN_COMMON) return 1;
    if (!any_table) return 0;
    return shndx == SHN_ABS || (shndx < elf->count && tables[shndx]);
}

/* ElfFile.symbols_in(): the wanted entries of the first symbol table, in order; -1 to fall back. */
static int read_symbols(const elf_t *elf, const char *tables, int any_table, symbol_t **out, Py_ssize_t *count) {
    *out = NULL;
    *count = 0;
    int64_t symtab = -1;
    for (uint64_t i = 0; i < elf->count; i++)
        if (elf->sections[i].type == SHT_SYMTAB) { symtab = (int64_t)i; break; }
    if (symtab < 0) return 0;
    const section_t *table = &elf->sections[symtab];
    if (table->link >= elf->count) return -1;
    const section_t *strings = &elf->sections[table->link];
    uint64_t names_size = strings->type == SHT_NOBITS ? 0 : strings->size;
    /* checked with the section headers; a NOBITS table has no bytes (only name offset 0, "", is read) */
    const unsigned char *names = strings->type == SHT_NOBITS ? elf->data : elf->data + strings->offset;
    uint64_t entry = elf->is64 ? 24 : 16;
    if (table->entsize != 0 && table->entsize != entry) return -1;
    uint64_t n = table->size / entry;
    symbol_t *symbols = PyMem_Calloc(n ? (size_t)n : 1, sizeof(symbol_t));
    if (symbols == NULL) return -1;
    Py_ssize_t found = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = table->offset + i * entry; /* within the section, itself within the image */
        symbol_t sym;
        sym.name_off = get(elf, e, 4);
        if (elf->is64) {
            sym.info = elf->data[e + 4];
            sym.shndx = get(elf, e + 6, 2);
            sym.value = get(elf, e + 8, 8);
        } else {
            sym.value = get(elf, e + 4, 4);
            sym.info = elf->data[e + 12];
            sym.shndx = get(elf, e + 14, 2);
        }
        if (!wanted(elf, tables, sym.shndx, any_table)) continue;
        if (sym.name_off >= names_size && sym.name_off != 0) { PyMem_Free(symbols); return -1; }
        if (sym.name_off >= names_size) {
            sym.name = names;
            sym.name_len = 0;
        } else {
            sym.name = names + sym.name_off;
            sym.name_len = bounded_strlen(sym.name, (size_t)(names_size - sym.name_off));
        }
        symbols[found++] = sym;
    }
    *out = symbols;
    *count = found;
    return 0;
}

/* _read_exports(): a list of (name, crc, owner, export_type, namespace); NULL with no exception to fall back.
 * Symbols are looked up by their decoded names in a dict, as the Python path's by_name: the last
 * symbol of a name, at its first one's place. */
static PyObject *read_exports(const elf_t *elf, const char *tables, const symbol_t *symbols, Py_ssize_t count,
                              PyObject *owner) {
    PyObject *exports = PyList_New(0), *by_name = PyDict_New(), *crc = NULL, *namespace = NULL;
    if (exports == NULL || by_name == NULL) goto error;
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t shndx = symbols[i].shndx;
        if (!(shndx == SHN_ABS || (shndx < elf->count && tables[shndx]))) continue;
        PyObject *name = decode(symbols[i].name, symbols[i].name_len), *index = PyLong_FromSsize_t(i);
        if (name == NULL || index == NULL || PyDict_SetItem(by_name, name, index) < 0) {
            Py_XDECREF(name);
            Py_XDECREF(index);
            goto error;
        }
        Py_DECREF(name);
        Py_DECREF(index);
    }
    uint64_t limit = elf->count < SHN_LORESERVE ? elf->count : SHN_LORESERVE;
    Py_ssize_t position = 0;
    PyObject *key, *value;
    while (PyDict_Next(by_name, &position, &key, &value)) {
        if (!PyUnicode_Check(key) || PyUnicode_GET_LENGTH(key) < 10) continue;
        PyObject *prefix = PyUnicode_Substring(key, 0, 10);
        if (prefix == NULL) goto error;
        int is_ksymtab = PyUnicode_CompareWithASCIIString(prefix, "__ksymtab_") == 0;
        Py_DECREF(prefix);
        if (!is_ksymtab) continue;
        const symbol_t *sym = &symbols[PyLong_AsSsize_t(value)];
        if (sym->shndx >= elf->count) continue; /* section_name "" */
        const section_t *section = &elf->sections[sym->shndx];
        if (!(name_starts(section, "__ksymtab") || name_starts(section, "___ksymtab"))
            || name_is(section, "__ksymtab_strings"))
            continue;
        int gpl = name_starts(section, "__ksymtab_gpl") || name_starts(section, "___ksymtab_gpl+");
        PyObject *exported = PyUnicode_Substring(key, 10, PyUnicode_GET_LENGTH(key));
        if (exported == NULL) goto error;
        PyObject *crc_name = PyUnicode_FromFormat("__crc_%U", exported);
        PyObject *ns_name = PyUnicode_FromFormat("__kstrtabns_%U", exported);
        PyObject *crc_index = crc_name ? PyDict_GetItemWithError(by_name, crc_name) : NULL;
        PyObject *ns_index = ns_name && !PyErr_Occurred() ? PyDict_GetItemWithError(by_name, ns_name) : NULL;
        Py_XDECREF(crc_name);
        Py_XDECREF(ns_name);
        if (crc_name == NULL || ns_name == NULL || PyErr_Occurred()) { Py_DECREF(exported); goto error; }
        crc = Py_None;
        Py_INCREF(crc);
        if (crc_index != NULL) {
            const symbol_t *crc_sym = &symbols[PyLong_AsSsize_t(crc_index)];
            if (crc_sym->shndx == SHN_ABS) {
                Py_SETREF(crc, PyLong_FromUnsignedLongLong(crc_sym->value & 0xFFFFFFFFu));
            } else if (crc_sym->shndx != SHN_UNDEF && crc_sym->shndx < limit) {
                const section_t *s = &elf->sections[crc_sym->shndx];
                uint64_t room = s->type == SHT_NOBITS ? 0 : s->size;
                if (room < 4 || crc_sym->value > room - 4) { Py_DECREF(exported); goto fall_back; }
                Py_SETREF(crc, PyLong_FromUnsignedLongLong(get(elf, s->offset + crc_sym->value, 4)));
            }
        }
        if (crc == NULL) { Py_DECREF(exported); goto error; }
        const symbol_t *ns_sym = ns_index ? &symbols[PyLong_AsSsize_t(ns_index)] : NULL;
        if (ns_sym == NULL || ns_sym->shndx == SHN_UNDEF || ns_sym->shndx >= limit) {
            namespace = PyUnicode_FromStringAndSize("", 0);
        } else {
            const section_t *s = &elf->sections[ns_sym->shndx];
            if (s->type == SHT_NOBITS || ns_sym->value >= s->size) { Py_DECREF(exported); goto fall_back; }
            const unsigned char *start = elf->data + s->offset + ns_sym->value; /* within the section */
            const unsigned char *end = memchr(start, 0, (size_t)(s->size - ns_sym->value));
            if (end == NULL) { Py_DECREF(exported); goto fall_back; } /* unterminated: string_at()'s error */
            namespace = decode(start, (size_t)(end - start));
        }
        if (namespace == NULL) { Py_DECREF(exported); goto error; }
        PyObject *item = Py_BuildValue("(NNONN)", exported, crc, owner,
                                       PyUnicode_FromString(gpl ? "EXPORT_SYMBOL_GPL" : "EXPORT_SYMBOL"), namespace);
        crc = namespace = NULL;
        if (item == NULL || PyList_Append(exports, item) < 0) { Py_XDECREF(item); goto error; }
        Py_DECREF(item);
    }
    Py_DECREF(by_name);
    return exports;
fall_back:
    PyErr_Clear();
error:
    Py_XDECREF(crc);
    Py_XDECREF(namespace);
    Py_XDECREF(exports);
    Py_XDECREF(by_name);
    return NULL;
}

/* _read_versions(): None, or (names, crcs) lists; NULL with no exception to fall back. */
static PyObject *read_versions(const elf_t *elf) {
    int64_t ext_crcs = find_section(elf, "__version_ext_crcs"), ext_names = find_section(elf, "__version_ext_names");
    PyObject *names = NULL, *crcs = NULL;
    if (ext_crcs >= 0 && ext_names >= 0) {
        const section_t *c = &elf->sections[ext_crcs], *s = &elf->sections[ext_names];
        uint64_t crc_bytes = c->type == SHT_NOBITS ? 0 : c->size - c->size % 4;
        uint64_t name_bytes = s->type == SHT_NOBITS ? 0 : s->size;
        uint64_t count = crc_bytes / 4;
        names = PyList_New(0);
        crcs = PyList_New(0);
        if (names == NULL || crcs == NULL) goto error;
        const unsigned char *p = name_bytes ? elf->data + s->offset : elf->data, *end = p + name_bytes;
        for (uint64_t i = 0; i < count; i++) {
            if (p > end) goto fall_back; /* fewer names than CRCs: the Python path's error */
            size_t len = bounded_strlen(p, (size_t)(end - p));
            PyObject *name = name_text(p, len), *crc = PyLong_FromUnsignedLongLong(get(elf, c->offset + i * 4, 4));
            if (name == NULL || crc == NULL || PyList_Append(names, name) < 0 || PyList_Append(crcs, crc) < 0) {
                Py_XDECREF(name);
                Py_XDECREF(crc);
                goto error;
            }
            Py_DECREF(name);
            Py_DECREF(crc);
            p += len + 1; /* past the NUL; one past `end` when the last name is unterminated */
        }
        return Py_BuildValue("(NN)", names, crcs);
    }
    int64_t index = find_section(elf, "__versions");
    if (index < 0) Py_RETURN_NONE;
    const section_t *s = &elf->sections[index];
    uint64_t bytes = s->type == SHT_NOBITS ? 0 : s->size;
    uint64_t count = bytes / MODVERSION_INFO_SIZE, crc_size = elf->is64 ? 8 : 4;
    names = PyList_New((Py_ssize_t)count);
    crcs = PyList_New((Py_ssize_t)count);
    if (names == NULL || crcs == NULL) goto error;
    for (uint64_t i = 0; i < count; i++) {
        uint64_t record = s->offset + i * MODVERSION_INFO_SIZE;
        const unsigned char *name = elf->data + record + crc_size;
        PyObject *text = name_text(name, bounded_strlen(name, (size_t)(MODVERSION_INFO_SIZE - crc_size)));
        PyObject *crc = PyLong_FromUnsignedLongLong(get(elf, record, (int)crc_size) & 0xFFFFFFFFu);
        if (text == NULL || crc == NULL) { Py_XDECREF(text); Py_XDECREF(crc); goto error; }
        PyList_SET_ITEM(names, (Py_ssize_t)i, text);
        PyList_SET_ITEM(crcs, (Py_ssize_t)i, crc);
    }
    return Py_BuildValue("(NN)", names, crcs);
fall_back:
    PyErr_Clear();
error:
    Py_XDECREF(names);
    Py_XDECREF(crcs);
    return NULL;
}

/* _parse_modinfo(): ((key, value), ...) of the NUL-separated key=value entries. */
static PyObject *read_modinfo(const elf_t *elf, const section_t *s) {
    PyObject *entries = PyList_New(0);
    if (entries == NULL) return NULL;
    uint64_t bytes = s->type == SHT_NOBITS ? 0 : s->size;
    const unsigned char *p = bytes ? elf->data + s->offset : elf->data, *end = p + bytes;
    while (p < end) {
        size_t len = bounded_strlen(p, (size_t)(end - p));
        const unsigned char *eq = memchr(p, '=', len);
        if (eq != NULL) { /* '=' is one byte no UTF-8 sequence contains: splitting before decoding is the same */
            PyObject *item = Py_BuildValue("(NN)", name_text(p, (size_t)(eq - p)), decode(eq + 1, len - (eq - p) - 1));
            if (item == NULL || PyList_Append(entries, item) < 0) { Py_XDECREF(item); Py_DECREF(entries); return NULL; }
            Py_DECREF(item);
        }
        p += len + 1;
    }
    PyObject *result = PyList_AsTuple(entries);
    Py_DECREF(entries);
    return result;
}

/* _read_layout(): the ElfLayout fields in order, but for arch_sections and e_flags (last two). */
static PyObject *read_layout(const elf_t *elf, uint64_t shstrndx, const symbol_t *symbols, Py_ssize_t count) {
    int64_t first = -1, first_symtab = -1;
    long this_module = 0, modinfo = 0, symtabs = 0;
    int ctors = 0, init_array = 0, arch[3] = {0, 0, 0};
    static const char *arch_names[] = {".plt", ".init.plt", ".stubs"};
    PyObject *write_exec = PyList_New(0), *common = PySet_New(NULL), *sorted = NULL, *arch_list = NULL;
    if (write_exec == NULL || common == NULL) goto error;
    for (uint64_t i = 0; i < elf->count; i++) {
        const section_t *s = &elf->sections[i];
        if (name_is(s, THIS_MODULE)) { this_module++; if (first < 0) first = (int64_t)i; }
        modinfo += name_is(s, ".modinfo");
        if (s->type == SHT_SYMTAB) { symtabs++; if (first_symtab < 0) first_symtab = (int64_t)i; }
        ctors |= name_is(s, ".ctors");
        init_array |= name_is(s, ".init_array");
        for (int a = 0; a < 3; a++) arch[a] |= name_is(s, arch_names[a]);
        if ((s->flags & (SHF_WRITE | SHF_EXECINSTR)) == (SHF_WRITE | SHF_EXECINSTR)) {
            PyObject *name = decode(s->name, s->name_len);
            PyObject *text = name ? PyUnicode_FromFormat("%U (index %llu)", name, (unsigned long long)i) : NULL;
            Py_XDECREF(name);
            if (text == NULL || PyList_Append(write_exec, text) < 0) { Py_XDECREF(text); goto error; }
            Py_DECREF(text);
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        const symbol_t *sym = &symbols[i];
        if (sym->shndx != SHN_COMMON) continue;
        if (sym->name_len >= 9 && memcmp(sym->name, "__gnu_lto", 9) == 0) continue;
        PyObject *name = decode(sym->name, sym->name_len);
        if (name == NULL || PySet_Add(common, name) < 0) { Py_XDECREF(name); goto error; }
        Py_DECREF(name);
    }
    sorted = PySequence_List(common);
    if (sorted == NULL || PyList_Sort(sorted) < 0) goto error;
    arch_list = PyList_New(0);
    if (arch_list == NULL) goto error;
    for (int a = 0; a < 3; a++) {
        if (!arch[a]) continue;
        PyObject *name = PyUnicode_FromString(arch_names[a]);
        if (name == NULL || PyList_Append(arch_list, name) < 0) { Py_XDECREF(name); goto error; }
        Py_DECREF(name);
    }
    const section_t *module = &elf->sections[first]; /* the caller checked there is one */
    int strings_ok = first_symtab >= 0 && 0 < elf->sections[first_symtab].link
                     && elf->sections[first_symtab].link < elf->count
                     && elf->sections[elf->sections[first_symtab].link].type == SHT_STRTAB;
    uint64_t e_flags = get(elf, elf->is64 ? 48 : 36, 4);
    PyObject *result = Py_BuildValue("(KlOOllOONNONK)", (unsigned long long)module->size, this_module,
                                     module->type == SHT_NOBITS ? Py_True : Py_False,
                                     module->flags & SHF_ALLOC ? Py_True : Py_False, modinfo, symtabs,
                                     strings_ok ? Py_True : Py_False,
                                     elf->sections[shstrndx].type == SHT_STRTAB ? Py_True : Py_False,
                                     PyList_AsTuple(write_exec), PyList_AsTuple(sorted),
                                     ctors && init_array ? Py_True : Py_False, PyList_AsTuple(arch_list),
                                     (unsigned long long)e_flags);
    Py_DECREF(write_exec);
    Py_DECREF(common);
    Py_DECREF(sorted);
    Py_DECREF(arch_list);
    return result;
error:
    Py_XDECREF(write_exec);
    Py_XDECREF(common);
    Py_XDECREF(sorted);
    Py_XDECREF(arch_list);
    return NULL;
}

/* read(image, size, path): the facts of the module whose ELF image is the first `size` bytes of
 * `image` (a buffer: bytes or an mmap), as (e_machine, little_endian, modinfo, versions,
 * import_names, import_weak, exports, layout); None when the Python path must read it. */
static PyObject *read_image(const unsigned char *data, Py_ssize_t length, Py_ssize_t size, PyObject *path) {
    elf_t elf = {0};
    char *tables = NULL;
    symbol_t *symbols = NULL;
    Py_ssize_t count = 0;
    PyObject *modinfo = NULL, *versions = NULL, *names = NULL, *weak = NULL, *exports = NULL, *layout = NULL;
    PyObject *result = NULL;
    uint64_t shstrndx = 0;
    if (size < 0 || size > length) goto fall_back;
    elf.data = data;
    elf.size = (uint64_t)size;
    if (read_headers(&elf, &shstrndx) < 0) goto fall_back;
    if (get(&elf, 16, 2) != 1) goto fall_back; /* ET_REL */
    int64_t modinfo_index = find_section(&elf, ".modinfo");
    if (modinfo_index < 0 || find_section(&elf, THIS_MODULE) < 0) goto fall_back;
    versions = read_versions(&elf);
    if (versions == NULL) goto done;
    tables = PyMem_Calloc((size_t)elf.count, 1);
    if (tables == NULL) { PyErr_NoMemory(); goto done; }
    int any_table = 0;
    for (uint64_t i = 0; i < elf.count; i++) any_table |= tables[i] = (char)is_table(&elf.sections[i]);
    if (read_symbols(&elf, tables, any_table, &symbols, &count) < 0) goto fall_back;
    names = PyList_New(0);
    weak = PyList_New(0);
    if (names == NULL || weak == NULL) goto done;
    for (Py_ssize_t i = 0; i < count; i++) {
        const symbol_t *sym = &symbols[i];
        int bind = sym->info >> 4;
        if (sym->shndx != SHN_UNDEF || sym->name_len == 0 || (bind != 1 && bind != 2)) continue;
        PyObject *name = name_text(sym->name, sym->name_len);
        if (name == NULL || PyList_Append(names, name) < 0 || PyList_Append(weak, bind == 2 ? Py_True : Py_False) < 0) {
            Py_XDECREF(name);
            goto done;
        }
        Py_DECREF(name);
    }
    if (any_table) {
        exports = read_exports(&elf, tables, symbols, count, path);
        if (exports == NULL) goto done;
    } else {
        exports = PyList_New(0);
        if (exports == NULL) goto done;
    }
    modinfo = read_modinfo(&elf, &elf.sections[modinfo_index]);
    if (modinfo == NULL) goto done;
    layout = read_layout(&elf, shstrndx, symbols, count);
    if (layout == NULL) goto done;
    result = Py_BuildValue("(KOOOOOOO)", (unsigned long long)get(&elf, 18, 2), elf.little ? Py_True : Py_False,
                           modinfo, versions, names, weak, exports, layout);
    goto done;
fall_back:
    Py_INCREF(Py_None);
    result = Py_None;
done:
    if (result == NULL && !PyErr_Occurred()) { /* a part asked for the Python path */
        Py_INCREF(Py_None);
        result = Py_None;
    }
    Py_XDECREF(modinfo);
    Py_XDECREF(versions);
    Py_XDECREF(names);
    Py_XDECREF(weak);
    Py_XDECREF(exports);
    Py_XDECREF(layout);
    PyMem_Free(symbols);
    PyMem_Free(tables);
    PyMem_Free(elf.sections);
    return result;
}

static PyObject *modfast_read(PyObject *module, PyObject *args) {
    Py_buffer view;
    Py_ssize_t size;
    PyObject *path;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*nU", &view, &size, &path)) return NULL;
    PyObject *result = read_image(view.buf, view.len, size, path);
    PyBuffer_Release(&view);
    return result;
}

/* instances(cls, fields, columns): a tuple of cls objects, the i-th with each field set to its
 * column's i-th value through the field's slot (a member descriptor), as cls(*row) would set them:
 * a frozen dataclass's __init__ sets each field with object.__setattr__, the most costly part of
 * reading a tree's ~500,000 imports and versions. Only for slotted classes without __post_init__. */
static PyObject *modfast_instances(PyObject *module, PyObject *args) {
    PyTypeObject *cls;
    PyObject *fields, *columns;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyType_Type, &cls, &PyTuple_Type, &fields, &PyTuple_Type, &columns))
        return NULL;
    Py_ssize_t width = PyTuple_GET_SIZE(fields);
    if (width != PyTuple_GET_SIZE(columns) || width == 0 || width > 8) {
        PyErr_SetString(PyExc_ValueError, "one to eight fields, a column each");
        return NULL;
    }
    PyObject *slots[8], *result = NULL;
    Py_ssize_t rows = -1;
    for (Py_ssize_t f = 0; f < width; f++)
        slots[f] = NULL;
    for (Py_ssize_t f = 0; f < width; f++) {
        slots[f] = PyObject_GetAttr((PyObject *)cls, PyTuple_GET_ITEM(fields, f)); /* the class's descriptor */
        PyObject *column = PyTuple_GET_ITEM(columns, f);
        if (slots[f] == NULL || !Py_IS_TYPE(slots[f], &PyMemberDescr_Type) || !PyList_Check(column)) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "fields must be slots of the class, columns lists");
            goto error;
        }
        if (rows >= 0 && PyList_GET_SIZE(column) != rows) {
            PyErr_SetString(PyExc_ValueError, "columns of different lengths");
            goto error;
        }
        rows = PyList_GET_SIZE(column);
    }
    result = PyTuple_New(rows);
    if (result == NULL) goto error;
    for (Py_ssize_t i = 0; i < rows; i++) {
        PyObject *item = cls->tp_alloc(cls, 0);
        if (item == NULL) goto error;
        PyTuple_SET_ITEM(result, i, item);
        int atomic = PyObject_GC_IsTracked(item);
        for (Py_ssize_t f = 0; f < width; f++) {
            PyObject *value = PyList_GET_ITEM(PyTuple_GET_ITEM(columns, f), i);
            if (Py_TYPE(slots[f])->tp_descr_set(slots[f], item, value) < 0)
                goto error;
            atomic &= PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || PyBool_Check(value) || value == Py_None;
        }
        /* Only strs, ints and bools in it: it cannot be part of a cycle, so the cyclic GC need not
         * scan it (as CPython untracks such tuples and dicts): a tree's ~500,000 imports and versions
         * made the collector's passes a third of reading a package's modules. */
        if (atomic) PyObject_GC_UnTrack(item);
    }
    for (Py_ssize_t f = 0; f < width; f++) Py_DECREF(slots[f]);
    return result;
error:
    for (Py_ssize_t f = 0; f < width; f++) Py_XDECREF(slots[f]);
    Py_XDECREF(result);
    return NULL;
}

/* instance(cls, fields, values): one cls object with each field set to its value through its slot,
 * as instances() sets them: a frozen dataclass's __init__ (object.__setattr__ a field) is ~3 us
 * for a Module or an ElfLayout, made for each of a tree's 4,023 modules. Every slot must be given. */
static PyObject *modfast_instance(PyObject *module, PyObject *args) {
    PyTypeObject *cls;
    PyObject *fields, *values;
    (void)module;
    if (!PyArg_ParseTuple(args, "O!O!O!", &PyType_Type, &cls, &PyTuple_Type, &fields, &PyTuple_Type, &values))
        return NULL;
    if (PyTuple_GET_SIZE(fields) != PyTuple_GET_SIZE(values)) {
        PyErr_SetString(PyExc_ValueError, "a value for each field");
        return NULL;
    }
    PyObject *item = cls->tp_alloc(cls, 0);
    for (Py_ssize_t f = 0; item != NULL && f < PyTuple_GET_SIZE(fields); f++) {
        PyObject *slot = PyObject_GetAttr((PyObject *)cls, PyTuple_GET_ITEM(fields, f)); /* the class's descriptor */
        if (slot == NULL || !Py_IS_TYPE(slot, &PyMemberDescr_Type)
                || Py_TYPE(slot)->tp_descr_set(slot, item, PyTuple_GET_ITEM(values, f)) < 0) {
            if (slot != NULL && !PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "fields must be slots of the class");
            Py_CLEAR(item);
        }
        Py_XDECREF(slot);
    }
    return item;
}

/* -- Module.symvers (formats/symvers.py parse_symvers()) -------------------------------------------
 * symvers(text): the lines modpost writes today (write_dump(): "0x<crc>\t<symbol>\t<module>\t<export
 * type>\t<namespace>"), as five columns (names, CRCs, modules, export types, namespaces), or None
 * for anything else -- an older layout, another export type, a byte outside printable ASCII, a
 * field the Python path might split otherwise -- which the Python path then reads (and refuses). */

/* A field as str.split() delimits it: printable ASCII but space, at least `least` bytes; its end. */
static const unsigned char *symvers_field(const unsigned char *p, const unsigned char *end, size_t least) {
    const unsigned char *start = p;
    while (p < end && *p > 0x20 && *p < 0x7f) p++;
    return (size_t)(p - start) >= least ? p : NULL;
}

static int append_text(PyObject *list, const unsigned char *s, size_t n) {
    PyObject *text = PyUnicode_DecodeASCII((const char *)s, (Py_ssize_t)n, NULL);
    int failed = text == NULL || PyList_Append(list, text) < 0;
    Py_XDECREF(text);
    return failed ? -1 : 0;
}

static PyObject *modfast_symvers(PyObject *module, PyObject *args) {
    Py_buffer view;
    (void)module;
    if (!PyArg_ParseTuple(args, "y*", &view)) return NULL;
    static const char *types[] = {"EXPORT_SYMBOL", "EXPORT_SYMBOL_GPL"};
    PyObject *columns[5] = {NULL}, *type_texts[2] = {NULL}, *owner = NULL, *result = NULL;
    const unsigned char *owner_bytes = NULL, *p = view.buf, *end = p + view.len;
    size_t owner_len = 0;
    for (int c = 0; c < 5; c++)
        if ((columns[c] = PyList_New(0)) == NULL) goto done;
    for (int t = 0; t < 2; t++)
        if ((type_texts[t] = PyUnicode_FromString(types[t])) == NULL) goto done;
    while (p < end) {
        const unsigned char *line = p, *eol = memchr(p, '\n', (size_t)(end - p));
        eol = eol ? eol : end;
        p = eol + (eol < end);
        const unsigned char *q = line;
        while (q < eol && (*q == ' ' || *q == '\t' || *q == '\r' || *q == '\v' || *q == '\f')) q++;
        if (q == eol) continue; /* a blank line */
        if (eol > line && eol[-1] == '\r') eol--;
        if (eol - line < 3 || line[0] != '0' || line[1] != 'x') goto fall_back;
        uint32_t crc = 0;
        q = line + 2;
        int digits = 0;
        for (; q < eol && *q != '\t'; q++, digits++) {
            int value = *q >= '0' && *q <= '9' ? *q - '0' : (*q | 0x20) >= 'a' && (*q | 0x20) <= 'f' ? (*q | 0x20) - 'a' + 10 : -1;
            if (value < 0 || digits == 8) goto fall_back;
            crc = (crc << 4) | (uint32_t)value;
        }
        if (digits == 0 || q == eol) goto fall_back;
        const unsigned char *fields[4], *ends[4];
        for (int f = 0; f < 4; f++) { /* symbol, module, export type: non-empty; the namespace may be */
            fields[f] = ++q;
            q = symvers_field(q, eol, f < 3);
            if (q == NULL || (f < 3 ? q == eol || *q != '\t' : q != eol)) goto fall_back;
            ends[f] = q;
        }
        size_t type_len = (size_t)(ends[2] - fields[2]);
        int type = type_len == 13 && memcmp(fields[2], types[0], 13) == 0 ? 0
                   : type_len == 17 && memcmp(fields[2], types[1], 17) == 0 ? 1 : -1;
        size_t ns_len = (size_t)(ends[3] - fields[3]);
        /* a namespace spelled like an export type reads as the 5.4 layout in the Python path */
        if (type < 0 || (ns_len >= 13 && memcmp(fields[3], "EXPORT_", 7) == 0)) goto fall_back;
        size_t module_len = (size_t)(ends[1] - fields[1]);
        if (owner == NULL || module_len != owner_len || memcmp(fields[1], owner_bytes, module_len) != 0) {
            Py_XDECREF(owner); /* one str for a run of lines of one module */
            if ((owner = PyUnicode_DecodeASCII((const char *)fields[1], (Py_ssize_t)module_len, NULL)) == NULL) goto done;
            owner_bytes = fields[1];
            owner_len = module_len;
        }
        PyObject *crc_value = PyLong_FromUnsignedLong(crc);
        PyObject *symbol = name_text(fields[0], (size_t)(ends[0] - fields[0])); /* shared with modules' imports */
        int failed = crc_value == NULL || symbol == NULL || PyList_Append(columns[0], symbol) < 0
                     || PyList_Append(columns[1], crc_value) < 0 || PyList_Append(columns[2], owner) < 0
                     || PyList_Append(columns[3], type_texts[type]) < 0
                     || append_text(columns[4], fields[3], ns_len) < 0;
        Py_XDECREF(crc_value);
        Py_XDECREF(symbol);
        if (failed) goto done;
    }
    result = PyTuple_Pack(5, columns[0], columns[1], columns[2], columns[3], columns[4]);
    goto done;
fall_back:
    Py_INCREF(Py_None);
    result = Py_None;
done:
    for (int c = 0; c < 5; c++) Py_XDECREF(columns[c]);
    for (int t = 0; t < 2; t++) Py_XDECREF(type_texts[t]);
    Py_XDECREF(owner);
    PyBuffer_Release(&view);
    return result;
}

/* -- the module signature's PKCS#7 (formats/modsig.py parse_pkcs7(), formats/der.py) ------------
 * The walk of der.py's Element: the same length rules (short or 1-4 byte long form, each element
 * within its container, every child of a list read), to the first SignerInfo's digest OID, its
 * signer's commonName (its string tag and bytes) and key id. Anything parse_pkcs7() would call a
 * defect, and an OID it would have to read to know, returns None: the Python path then tells. */

#define DER_SEQUENCE 0x30
#define DER_SET 0x31
#define DER_INTEGER 0x02
#define DER_OID 0x06
#define DER_CONTEXT_0 0xA0
#define DER_CONTEXT_0_PRIMITIVE 0x80

typedef struct {
    unsigned char tag;
    Py_ssize_t start, end; /* the content */
} der_t;

/* der.py read_element() */
static int der_read(const unsigned char *d, Py_ssize_t offset, Py_ssize_t limit, der_t *element) {
    if (offset > limit || limit - offset < 2) return 0;
    unsigned char tag = d[offset], first = d[offset + 1];
    uint64_t length = first;
    offset += 2;
    if (first & 0x80) {
        int count = first & 0x7F;
        if (count == 0 || count > 4 || limit - offset < count) return 0;
        length = 0;
        for (int i = 0; i < count; i++) length = (length << 8) | d[offset + i];
        offset += count;
    }
    if (length > (uint64_t)(limit - offset)) return 0;
    element->tag = tag;
    element->start = offset;
    element->end = offset + (Py_ssize_t)length;
    return 1;
}

/* der.py Element.children(): every child read; the first `max` kept in `out`, the last in `last`.
 * Their number, -1 if one is malformed. */
static Py_ssize_t der_children(const unsigned char *d, const der_t *element, der_t *out, Py_ssize_t max,
                               der_t *last) {
    Py_ssize_t count = 0, offset = element->start;
    der_t child;
    while (offset < element->end) {
        if (!der_read(d, offset, element->end, &child)) return -1;
        if (count < max) out[count] = child;
        *last = child;
        count++;
        offset = child.end;
    }
    return count;
}

/* An OID element against one OID's DER content: 1 the same, 0 another, -1 not an OID, empty, or
 * not minimally encoded (der.py oid_text() may read such bytes as the same OID: Python decides). */
static int der_oid_is(const unsigned char *d, const der_t *element, const unsigned char *oid, Py_ssize_t size) {
    Py_ssize_t length = element->end - element->start;
    const unsigned char *raw = d + element->start;
    if (element->tag != DER_OID || length == 0 || (raw[length - 1] & 0x80)) return -1;
    for (Py_ssize_t i = 1; i < length; i++)
        if (raw[i] == 0x80 && (i == 1 || !(raw[i - 1] & 0x80))) return -1; /* a subidentifier's leading zero */
    return length == size && memcmp(raw, oid, (size_t)size) == 0;
}

static const unsigned char OID_SIGNED_DATA[] = {0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x07, 0x02};
static const unsigned char OID_COMMON_NAME[] = {0x55, 0x04, 0x03};

/* modsig.py _common_name(): the first commonName of the issuer, 1 with *tag 0 when there is none,
 * 0 for the Python path. */
static int der_common_name(const unsigned char *d, const der_t *issuer, der_t *value) {
    der_t name, attribute, pair[2], last;
    value->tag = 0;
    if (der_children(d, issuer, NULL, 0, &last) < 0) return 0;
    for (Py_ssize_t offset = issuer->start; offset < issuer->end; offset = name.end) {
        der_read(d, offset, issuer->end, &name);
        if (name.tag != DER_SET || der_children(d, &name, NULL, 0, &last) < 0) return 0;
        for (Py_ssize_t at = name.start; at < name.end; at = attribute.end) {
            der_read(d, at, name.end, &attribute);
            if (attribute.tag != DER_SEQUENCE || der_children(d, &attribute, pair, 2, &last) < 2) return 0;
            int found = der_oid_is(d, &pair[0], OID_COMMON_NAME, sizeof OID_COMMON_NAME);
            if (found < 0) return 0;
            if (found) {
                unsigned char tag = pair[1].tag; /* der.py STRING_TAGS */
                if (tag != 0x0C && tag != 0x13 && tag != 0x16 && tag != 0x14 && tag != 0x1E) return 0;
                *value = pair[1];
                return 1;
            }
        }
    }
    return 1;
}

/* The (digest OID, signer's string tag or 0, its bytes, key id) of the DER at d[0:length]; NULL
 * (no exception) for the Python path. */
static PyObject *pkcs7_fields(const unsigned char *d, Py_ssize_t length) {
    der_t top, kids[3], last, infos, info, sid, digest, signer = {0, 0, 0}, pair[2];
    PyObject *result = NULL;
    /* ContentInfo { contentType signedData, content [0] { SignedData { ..., signerInfos SET } } } */
    if (!der_read(d, 0, length, &top) || top.end != length || top.tag != DER_SEQUENCE
            || der_children(d, &top, kids, 2, &last) < 2
            || der_oid_is(d, &kids[0], OID_SIGNED_DATA, sizeof OID_SIGNED_DATA) != 1
            || kids[1].tag != DER_CONTEXT_0 || der_children(d, &kids[1], kids, 1, &last) < 1
            || kids[0].tag != DER_SEQUENCE || der_children(d, &kids[0], NULL, 0, &last) < 1
            || (infos = last).tag != DER_SET || der_children(d, &infos, kids, 1, &last) < 1
            || kids[0].tag != DER_SEQUENCE)
        goto done;
    /* SignerInfo { version, sid, digestAlgorithm { algorithm OID, ... }, ... } */
    info = kids[0];
    if (der_children(d, &info, kids, 3, &last) < 3) goto done;
    sid = kids[1];
    if (kids[2].tag != DER_SEQUENCE || der_children(d, &kids[2], &digest, 1, &last) < 1
            || digest.tag != DER_OID || digest.start == digest.end)
        goto done;
    Py_ssize_t key_start, key_end;
    if (sid.tag == DER_SEQUENCE) { /* issuerAndSerialNumber */
        if (der_children(d, &sid, pair, 2, &last) != 2 || pair[0].tag != DER_SEQUENCE || pair[1].tag != DER_INTEGER
                || !der_common_name(d, &pair[0], &signer))
            goto done;
        key_start = pair[1].start;
        key_end = pair[1].end;
        while (key_start < key_end && d[key_start] == 0) key_start++;
    } else if (sid.tag == DER_CONTEXT_0_PRIMITIVE) { /* subjectKeyIdentifier */
        key_start = sid.start;
        key_end = sid.end;
    } else {
        goto done;
    }
    const unsigned char *key = d + key_start;
    Py_ssize_t key_size = key_end - key_start;
    if (sid.tag == DER_SEQUENCE && key_size == 0) { /* a serial number of zeros: b"\0" */
        key = (const unsigned char *)"";
        key_size = 1;
    }
    result = Py_BuildValue("(y#iy#y#)", d + digest.start, digest.end - digest.start, (int)signer.tag,
                           d + signer.start, signer.end - signer.start, key, key_size);
done:
    return result;
}

static PyObject *modfast_pkcs7(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:pkcs7", &view)) return NULL;
    PyObject *result = pkcs7_fields(view.buf, view.len);
    PyBuffer_Release(&view);
    if (result == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return result;
}

/* formats/modsig.py split_signature() of a module image, as mod_check_sig() reads its trailer:
 * (its length, None) when unsigned; (the signed length, the DER's length, then pkcs7()'s four
 * fields) for a well-formed PKCS#7 signature that pkcs7() reads; None for anything else (a defect
 * to report, a signature pkcs7() leaves to Python), which the Python path then reads. */
#define SIGNATURE_MAGIC "~Module signature appended~\n"
#define SIGNATURE_MAGIC_SIZE 28
#define SIGNATURE_TRAILER_SIZE 12 /* struct module_signature */

static PyObject *split_signature(const unsigned char *d, Py_ssize_t size) {
    PyObject *result = NULL;
    if (size <= SIGNATURE_MAGIC_SIZE || memcmp(d + size - SIGNATURE_MAGIC_SIZE, SIGNATURE_MAGIC, SIGNATURE_MAGIC_SIZE)) {
        result = Py_BuildValue("(nO)", size, Py_None);
        goto done;
    }
    Py_ssize_t end = size - SIGNATURE_MAGIC_SIZE;
    if (end < SIGNATURE_TRAILER_SIZE) goto done;
    const unsigned char *trailer = d + end - SIGNATURE_TRAILER_SIZE;
    uint32_t sig_len = (uint32_t)trailer[8] << 24 | (uint32_t)trailer[9] << 16 | (uint32_t)trailer[10] << 8 | trailer[11];
    if ((Py_ssize_t)sig_len >= end - SIGNATURE_TRAILER_SIZE || trailer[2] != 2 /* PKEY_ID_PKCS7 */) goto done;
    for (int i = 0; i < 8; i++)
        if (i != 2 && trailer[i]) goto done; /* algo, hash, signer_len, key_id_len, padding: all zero */
    Py_ssize_t signed_size = end - SIGNATURE_TRAILER_SIZE - (Py_ssize_t)sig_len;
    PyObject *fields = pkcs7_fields(d + signed_size, (Py_ssize_t)sig_len);
    if (fields != NULL) {
        result = Py_BuildValue("(nnO)", signed_size, (Py_ssize_t)sig_len, fields);
        Py_DECREF(fields);
    }
done:
    if (result == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return result;
}

static PyObject *modfast_signature(PyObject *Py_UNUSED(self), PyObject *args) {
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "y*:signature", &view)) return NULL;
    PyObject *result = split_signature(view.buf, view.len);
    PyBuffer_Release(&view);
    return result;
}

/* read_file(path): (signature(), read()) of the uncompressed module file at `path`, mapped here:
 * the open, fstat, mmap, munmap and close that formats/module.py read_module() does in Python
 * cost a tree's 4,023 modules as much as reading them. None, for read_module()'s Python path to
 * open the file and tell (or to decompress it), when it cannot be opened, is not a regular file,
 * is empty, is not an ELF image, or when signature() or read() would give None. */
static PyObject *modfast_read_file(PyObject *Py_UNUSED(self), PyObject *args) {
    PyObject *path, *encoded, *result = NULL;
    if (!PyArg_ParseTuple(args, "U:read_file", &path) || !PyUnicode_FSConverter(path, &encoded)) return NULL;
    const char *name = PyBytes_AS_STRING(encoded);
    int fd = strlen(name) == (size_t)PyBytes_GET_SIZE(encoded) ? open(name, O_RDONLY | O_NONBLOCK | O_CLOEXEC) : -1;
    Py_DECREF(encoded);
    struct stat status;
    if (fd < 0) Py_RETURN_NONE;
    if (fstat(fd, &status) < 0 || !S_ISREG(status.st_mode) || status.st_size < 4
            || (uint64_t)status.st_size > (uint64_t)PY_SSIZE_T_MAX) {
        close(fd);
        Py_RETURN_NONE;
    }
    Py_ssize_t size = (Py_ssize_t)status.st_size;
    unsigned char *data = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (data == MAP_FAILED) Py_RETURN_NONE;
    PyObject *signature = NULL, *facts = NULL;
    if (memcmp(data, "\x7f" "ELF", 4) == 0 && (signature = split_signature(data, size)) != NULL && signature != Py_None
            && (facts = read_image(data, size, PyLong_AsSsize_t(PyTuple_GET_ITEM(signature, 0)), path)) != NULL
            && facts != Py_None)
        result = PyTuple_Pack(2, signature, facts);
    munmap(data, (size_t)size);
    Py_XDECREF(signature);
    Py_XDECREF(facts);
    if (result == NULL && !PyErr_Occurred()) Py_RETURN_NONE;
    return result;
}

static PyMethodDef methods[] = {
    {"instances", modfast_instances, METH_VARARGS, "A tuple of slotted objects, their fields set from columns."},
    {"instance", modfast_instance, METH_VARARGS, "A slotted object, its fields set from values."},
    {"read", modfast_read, METH_VARARGS, "The facts of a module's ELF image, or None for the Python path."},
    {"symvers", modfast_symvers, METH_VARARGS, "Module.symvers' columns, or None for the Python path."},
    {"read_file", modfast_read_file, METH_VARARGS,
     "(signature(), read()) of an uncompressed module file, or None for the Python path."},
    {"signature", modfast_signature, METH_VARARGS,
     "(length, None) of an unsigned module image, (signed length, DER length, pkcs7()'s fields) of a signed one, "
     "or None for the Python path."},
    {"pkcs7", modfast_pkcs7, METH_VARARGS,
     "(digest OID, signer's string tag or 0, its bytes, key id) of a module signature, or None for the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_modfast", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__modfast(void) { return PyModule_Create(&definition); }
