"""Just enough DER to walk a CMS SignedData to its first SignerInfo.

asn1crypto parsed a module signature in 0.14 ms, about a third of kabigate's whole extraction
time for a kernel tree (bench/extract_vs_modinfo.py); this walker takes 0.04 ms because it reads
only the few fields kabigate reports. Every length is checked against its enclosing element.
"""

from __future__ import annotations

from typing import NamedTuple

SEQUENCE, SET, INTEGER, OCTET_STRING, OID = 0x30, 0x31, 0x02, 0x04, 0x06
CONTEXT_0, CONTEXT_0_PRIMITIVE = 0xA0, 0x80
STRING_TAGS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be"}


class DerError(ValueError):
    pass


class Element(NamedTuple):  # a tuple: ~20 made per module signature of a tree read, 3x cheaper than a dataclass
    tag: int
    data: bytes
    start: int  # offset of the content in `data`
    end: int

    @property
    def content(self) -> bytes:
        return self.data[self.start:self.end]

    def children(self) -> list[Element]:
        items, offset = [], self.start
        while offset < self.end:
            item = read_element(self.data, offset, self.end)
            items.append(item)
            offset = item.end
        return items

    def expect(self, tag: int, what: str) -> Element:
        if self.tag != tag:
            raise DerError(f"{what}: tag 0x{self.tag:02x}, expected 0x{tag:02x}")
        return self


def read_element(data: bytes, offset: int, limit: int) -> Element:
    if offset + 2 > limit:
        raise DerError("truncated element header")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or offset + count > limit:
            raise DerError("bad length encoding")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    if offset + length > limit:
        raise DerError(f"element of {length} bytes overruns its container")
    return Element(tag, data, offset, offset + length)


def parse(data: bytes) -> Element:
    top = read_element(data, 0, len(data))
    if top.end != len(data):
        raise DerError("trailing bytes after the DER element")
    return top


def oid_text(element: Element) -> str:
    raw = element.expect(OID, "object identifier").content
    if not raw:
        raise DerError("empty object identifier")
    parts, value = [], 0
    for byte in raw[1:]:
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = raw[0]
    return ".".join(map(str, [min(first // 40, 2), first - 40 * min(first // 40, 2), *parts]))


def string_value(element: Element) -> str:
    encoding = STRING_TAGS.get(element.tag)
    if encoding is None:
        raise DerError(f"tag 0x{element.tag:02x} is not a string")
    return element.content.decode(encoding, "replace")


# -- writing: what `cryptography` cannot write byte for byte (module signatures) --------------
# Its PKCS7SignatureBuilder (NoAttributes, NoCerts, DetachedSignature, Binary) gives the digest
# AlgorithmIdentifiers NULL parameters where OpenSSL's CMS, and so sign-file, omits them.

def encode(tag: int, *parts: bytes) -> bytes:
    content = b"".join(parts)
    size = len(content)
    if size < 0x80:
        return bytes((tag, size)) + content
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + content


def encode_oid(dotted: str) -> bytes:
    first, second, *rest = map(int, dotted.split("."))
    body = bytearray([40 * first + second])
    for value in rest:
        chunk = [value & 0x7F]
        while value > 0x7F:
            value >>= 7
            chunk.append(0x80 | (value & 0x7F))
        body += bytes(reversed(chunk))
    return encode(0x06, bytes(body))


def tlv(element: Element) -> bytes:
    """The whole encoding (tag, length, content) of an element, from its parent's bytes."""
    header = 2 if element.end - element.start < 0x80 else 2 + ((element.end - element.start).bit_length() + 7) // 8
    return element.data[element.start - header:element.end]


def children_tlv(element: Element) -> list[tuple[Element, bytes]]:
    items, offset = [], element.start
    while offset < element.end:
        item = read_element(element.data, offset, element.end)
        items.append((item, element.data[offset:item.end]))
        offset = item.end
    return items
