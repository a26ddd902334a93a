"""What a kernel's shipped C headers (include/, arch/<arch>/include of a headers package) tell
`kabigate explain`: which header defines each struct, union, enum and typedef, and how many
headers include that header, directly or not.

genksyms hashes a type's definition only when the exporting file sees it; a type defined in a
header half the kernel includes (linux/mm_types.h) is seen by nearly every exporting file, one in
a header few include (linux/iommu.h) rarely, one no header defines (a .c file's own) only by its
own file. This is a line scanner, not a C parser: definitions are recognised as `struct name {`
at the start of a line and `typedef ... name;`, includes as `#include <...>`/`"..."`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

_DIRECTIVE = re.compile(rb"^[ \t]*#[ \t]*(if|ifdef|ifndef|else|elif|endif|include)\b([^\n]{0,512})", re.MULTILINE)
_INCLUDE_NAME = re.compile(rb'[<"]([^>"\n]{1,256})[>"]')
_EXCLUDED_IFS = (b"!defined(__KERNEL__)", b"!defined__KERNEL__", b"defined(__ASSEMBLY__)", b"defined__ASSEMBLY__")
_DEFINITION = re.compile(rb"^[ \t]*(?:typedef[ \t]+)?(struct|union|enum)[ \t]+(\w{1,256})[ \t\n]*\{", re.MULTILINE)
_TYPEDEF = re.compile(rb"^typedef[ \t][^;{}]{0,512}?\b(\w{1,256})[ \t]*(?:\[[^;\]]*\][ \t]*)?;", re.MULTILINE)
_TYPEDEF_FUNCTION = re.compile(rb"^typedef[ \t][^;{}]{0,512}?\([ \t]*\*?[ \t]*(\w{1,256})[ \t]*\)[ \t]*\(",
                               re.MULTILINE)
# Where `#include <x>` is looked up, in the kernel's -I order (Makefile's LINUXINCLUDE).
SEARCH = ("arch/{arch}/include", "arch/{arch}/include/generated", "include", "arch/{arch}/include/uapi",
          "arch/{arch}/include/generated/uapi", "include/uapi", "include/generated/uapi")


@dataclass
class HeaderIndex:
    """Type key ("struct", name) -> the header defining it; header -> headers including it."""

    defined_in: dict[tuple[str, str], str] = field(default_factory=dict)
    included_by: dict[str, set[str]] = field(default_factory=dict)
    _reach: dict[str, int] = field(default_factory=dict)

    def popularity(self, key: tuple[str, str]) -> int:
        """How many shipped headers see the type's definition (its own header counts): 0 when no
        shipped header defines it, a private type."""
        header = self.defined_in.get(key)
        if header is None:
            return 0
        known = self._reach.get(header)
        if known is None:
            seen, stack = {header}, [header]
            while stack:
                for parent in self.included_by.get(stack.pop(), ()):
                    if parent not in seen:
                        seen.add(parent)
                        stack.append(parent)
            known = self._reach[header] = len(seen)
        return known


def index_headers(files: dict[str, bytes], arch: str = "x86") -> HeaderIndex:
    """`files`: path relative to the headers tree -> content, for every .h file."""
    index = HeaderIndex()
    search = [s.format(arch=arch) for s in SEARCH]
    for path, data in files.items():
        for name in _kernel_includes(data):
            target = _resolve(files, search, path, name)
            if target is not None:
                index.included_by.setdefault(target, set()).add(path)
        for match in _DEFINITION.finditer(data):
            index.defined_in.setdefault((match.group(1).decode(), match.group(2).decode()), path)
        for pattern in (_TYPEDEF, _TYPEDEF_FUNCTION):
            for match in pattern.finditer(data):
                index.defined_in.setdefault(("typedef", match.group(1).decode()), path)
    return index


def _kernel_includes(data: bytes) -> list[str]:
    """The headers a file includes when the kernel is built: those under `#ifndef __KERNEL__` or
    `#ifdef __ASSEMBLY__` (uapi headers' userspace side, assembly) are not; every other condition
    (CONFIG_*, ...) is taken as true, the wider reading."""
    included, stack = [], []  # stack: is this conditional block excluded from a kernel C build?
    for match in _DIRECTIVE.finditer(data):
        directive, rest = match.group(1), match.group(2).strip()
        if directive in (b"if", b"ifdef", b"ifndef"):
            stack.append((directive == b"ifndef" and rest == b"__KERNEL__")
                         or (directive == b"ifdef" and rest == b"__ASSEMBLY__")
                         or (directive == b"if" and rest.replace(b" ", b"") in _EXCLUDED_IFS))
        elif directive == b"else" and stack:
            stack[-1] = not stack[-1] if stack[-1] else False
        elif directive == b"endif" and stack:
            stack.pop()
        elif directive == b"include" and not any(stack):
            name = _INCLUDE_NAME.match(rest)
            if name:
                included.append(name.group(1).decode("utf-8", "replace"))
    return included


def _resolve(files: dict[str, bytes], search: list[str], source: str, name: str) -> str | None:
    local = posixpath.normpath(posixpath.join(posixpath.dirname(source), name))
    if local in files:
        return local
    return next((f"{base}/{name}" for base in search if f"{base}/{name}" in files), None)
