"""Hostile input, round three (issue 19), on the user's own machine: a legal module of hundreds of
MiB signed and verified in bounded memory, a module name that would stop the offline matrix page's
script, and a cache entry planted by someone who can write to the explain cache."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import zstandard
from cryptography.hazmat.primitives import serialization
from support.hostile import run_cli

from kabigate.errors import InputError
from kabigate.explain import cache as explain_cache
from kabigate.explain import sources as explain_sources
from kabigate.explain.crc import KernelTypes
from kabigate.formats.cheaders import HeaderIndex
from kabigate.formats.modsig import MAGIC, TRAILER
from kabigate.model import Export
from kabigate.reports.html import matrix_html
from kabigate.services.matrix import Matrix
from kabigate.signing import keys
from kabigate.store.store import BuildRecord, Cell, KernelRecord

MiB = 1 << 20
MODULE = Path(__file__).resolve().parent / "fuzz" / "corpus" / "module" / "acpi_call.ko"

# -- sign: a module of hundreds of MiB -------------------------------------------------------------

PADDING = 300 * MiB
# The interpreter and its libraries take ~150 MiB of address space; signing held the module
# three times over (read, cut, joined with its signature): 1.6 GiB for a 511 MiB module.
ADDRESS_SPACE = 300 * MiB


def padded_module(path: Path, padding: int) -> None:
    """A real module with one more section, unnamed and not loaded, of `padding` zero bytes: a
    legal module as large as one built with full debug information, written sparse (cheap)."""
    module = MODULE.read_bytes()
    (shoff,) = struct.unpack_from("<Q", module, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", module, 0x3A)
    start = (len(module) + 7) & ~7
    head = bytearray(module)
    struct.pack_into("<Q", head, 0x28, start + padding)
    struct.pack_into("<H", head, 0x3C, shnum + 1)
    with open(path, "wb") as out:
        out.write(head)
        out.seek(start + padding)
        out.write(module[shoff:shoff + shnum * shentsize])
        out.write(struct.pack("<IIQQQQIIQQ", 0, 1, 0, 0, start, padding, 0, 0, 1, 0))  # SHT_PROGBITS, no flags


def file_digest(path: Path, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        remaining = size if size is not None else path.stat().st_size
        while remaining:
            chunk = file.read(min(remaining, 4 * MiB))
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def signing_key(tmp_path_factory) -> tuple[Path, Path]:
    directory = tmp_path_factory.mktemp("key")
    private_key, certificate = keys.generate_key(keys.KeygenSpec("rsa", 2048))
    (directory / "k.key").write_bytes(keys.private_key_pem(private_key, None))
    (directory / "k.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return directory / "k.key", directory / "k.crt"


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_a_300_mib_module_is_signed_and_verified_in_bounded_memory(tmp_path, signing_key, compression):
    key, certificate = signing_key
    original = tmp_path / "original.ko"
    padded_module(original, PADDING)
    module = tmp_path / ("big.ko.zst" if compression else "big.ko")
    if compression:
        with open(original, "rb") as source, open(module, "wb") as target:
            zstandard.ZstdCompressor().copy_stream(source, target, size=original.stat().st_size)
    else:
        shutil.copy(original, module)
    try:
        signed = run_cli("sign", "--key", key, "--cert", certificate, module, address_space=ADDRESS_SPACE)
        assert signed.returncode == 0, signed
        verified = run_cli("verify", "--trust", certificate, module, address_space=ADDRESS_SPACE)
        assert verified.returncode == 0 and "VERIFIED" in verified.stdout, verified
        if compression:
            plain = tmp_path / "signed.ko"
            with open(module, "rb") as source, open(plain, "wb") as target:
                zstandard.ZstdDecompressor().copy_stream(source, target)
            module.unlink()
            module = plain
        # The module, then sign-file's signature of it, as openssl's CMS verifier sees it.
        size = module.stat().st_size
        with open(module, "rb") as file:
            file.seek(size - len(MAGIC) - TRAILER.size)
            trailer, magic = file.read(TRAILER.size), file.read()
            cms_size = TRAILER.unpack(trailer)[-1]
            file.seek(size - len(MAGIC) - TRAILER.size - cms_size)
            (tmp_path / "sig.der").write_bytes(file.read(cms_size))
        assert magic == MAGIC
        assert size - len(MAGIC) - TRAILER.size - cms_size == original.stat().st_size
        assert file_digest(module, original.stat().st_size) == file_digest(original)
        if shutil.which("openssl"):
            result = subprocess.run(["openssl", "cms", "-verify", "-binary", "-inform", "DER", "-in",
                                     tmp_path / "sig.der", "-content", original, "-certfile", certificate,
                                     "-CAfile", certificate, "-purpose", "any", "-out", "/dev/null"],
                                    capture_output=True, check=False)
            assert result.returncode == 0, result.stderr
    finally:
        for path in tmp_path.glob("*.ko*"):
            path.unlink()  # 600 MiB that pytest would otherwise keep for three runs


# -- matrix --format html: a name that opens a comment in the page's script -------------------------

HOSTILE_NAME = "<!--<script>x"


def hostile_page(tmp_path: Path) -> Path:
    kernel = KernelRecord(1, "6.1.0-50-amd64", "x86_64", "amd64", None, None, None, None, (), 0, (("debian", 1),))
    build = BuildRecord(1, HOSTILE_NAME, None, "1.0", "x86_64", "deb", "6.1.0-47-amd64", "x.deb", (HOSTILE_NAME,))
    cell = Cell(1, 1, 1, False, 1, 0, "crc-mismatch", 1)
    matrix = Matrix([kernel], [build], {(1, 1): cell}, [], "debian")
    details = {(1, 1): [{"name": HOSTILE_NAME, "reasons": [
        {"code": "crc-mismatch", "symbol": "</script><script>x", "message": "<!-- CRC of <script> differs"}]}]}
    page = tmp_path / "matrix.html"
    page.write_text(matrix_html(matrix, details))
    return page


def test_the_matrix_pages_data_cannot_open_a_comment_or_a_script(tmp_path):
    page = hostile_page(tmp_path).read_text()
    data = page.split('<script type="application/json" id="cells">', 1)[1].split("</script>", 1)[0]
    for opener in ("<!--", "<script", "</script"):
        assert opener not in data.lower()
    [cell] = json.loads(data).values()
    assert cell["reasons"][0]["module"] == HOSTILE_NAME  # JSON's \u003c is "<" again once parsed


def test_the_matrix_pages_script_runs_with_such_a_name_in_chromium(tmp_path):
    from test_web_browser import CHROMIUM, CHROMIUM_ARGS

    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no {CHROMIUM} (Debian's chromium package)")
    page_file = hostile_page(tmp_path)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_file.as_uri())
            page.click("td.fails")
            detail = page.locator("#detail")
            detail.wait_for(state="visible", timeout=10_000)
            assert HOSTILE_NAME in detail.inner_text() and "</script><script>x" in detail.inner_text()
            assert not errors
        finally:
            browser.close()


# -- the explain cache: a planted entry -----------------------------------------------------------

class CreatesMarker:
    """Unpickled, creates the marker directory: what a planted pickle could do as kabigate."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("KABIGATE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "btf").mkdir(parents=True)
    return tmp_path / "cache" / "btf"


def test_a_planted_pickle_in_an_entrys_place_is_never_run(tmp_path, cache):
    marker = tmp_path / "ran"
    planted = pickle.dumps(CreatesMarker(marker))
    image = tmp_path / "vmlinuz"
    image.write_bytes(b"not a kernel")
    identity = explain_sources._image_identity(str(image))
    for entry in (explain_cache.entry_path(identity), explain_cache.entry_path("causes")):
        entry.write_bytes(planted)
    assert explain_cache.read_entry("causes") is None
    with pytest.raises(InputError, match="vmlinuz"):  # computed again: the file is no kernel
        explain_sources.load_types(str(image))
    assert not marker.exists()


@pytest.mark.parametrize("document", [
    {"kind": "json", "value": ["not", "an", "object"]},
    {"kind": "types", "value": {"release": "x"}},
    {"kind": "json"},
    [[[[]]]],
    "[" * 100_000,
    "1" * 5000,
])
def test_a_damaged_or_foreign_entry_is_computed_again(cache, document):
    raw = (document if isinstance(document, str) else json.dumps(document)).encode()
    explain_cache.entry_path("causes").write_bytes(zstandard.ZstdCompressor().compress(raw))
    assert explain_cache.read_entry("causes") is None
    explain_cache.write_entry("causes", {"a": {"b": 1}})
    assert explain_cache.read_entry("causes") == {"a": {"b": 1}}


def test_every_kind_of_entry_comes_back_as_written():
    types = KernelTypes(
        "6.1.0-50-amd64", {"api": Export("api", 7, "vmlinux"),
                           "mod_api": Export("mod_api", None, "drivers/x", "EXPORT_SYMBOL_GPL", "NS")},
        {1: "struct a { int x; }", 2: "typedef struct a a_t"}, {1: ("struct", "a"), 2: ("typedef", "a_t")},
        {1: (), 2: (1,)}, {1: (("x", "int"),)}, {1: (4, (("x", 0),))},
        {"api": ("int api(a_t *)", (("return", ()), ("p", (2, 1)))), "f": ("void f()", (("return", ()),))},
        {"v": ("int v", ())})
    types.modules = {"drivers/x": KernelTypes("6.1.0-50-amd64", {}, {3: "struct b { }"},
                                                            {3: ("struct", "b")}, {3: ()}, {3: ()}, {3: (0, ())},
                                                            {}, {})}
    headers = HeaderIndex({("struct", "a"): "include/linux/a.h"},
                                        {"include/linux/a.h": {"include/linux/b.h", "include/linux/c.h"}})
    for codec, value in [(explain_cache.TYPES, types), (explain_cache.MODULE_TYPES, types.modules),
                         (explain_cache.HEADERS, headers), (explain_cache.JSON_OBJECT, {"x": [1, "y", None]})]:
        back = explain_cache.decode_entry(codec, explain_cache.encode_entry(codec, value))
        assert back == value and type(back) is type(value)
    back = explain_cache.decode_entry(explain_cache.TYPES, explain_cache.encode_entry(explain_cache.TYPES, types))
    assert back.by_key == types.by_key and back.funcs["api"][1][1] == ("p", (2, 1))  # tuples, not lists
    with pytest.raises(InputError):
        explain_cache.decode_entry(explain_cache.HEADERS, explain_cache.encode_entry(explain_cache.TYPES, types))
