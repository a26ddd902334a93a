"""The module parser's fast paths (issue 23) against the parser they replaced (tests/support/slow_module.py,
kept verbatim): the C reader (formats/_modfast.c) and the Python one (the symbol table filtered on its
st_shndx bytes, one pass for imports, exports and layout, tuples for sections). Identical Modules for
every module of the real corpus from both, the C reader accepting every one of them itself, and the
same files refused when real modules are damaged byte by byte."""

from __future__ import annotations

import gc
import hashlib
import random
from pathlib import Path

import pytest
from support.slow_module import ElfFile
from support.slow_module import parse_module as slow_parse_module
from support.testdata import testdata_root as corpus_root

from kabigate import processes
from kabigate.errors import InputError
from kabigate.formats import module as module_format
from kabigate.formats import symvers as symvers_format
from kabigate.formats.compression import compression_of, decompress
from kabigate.formats.elf import SHT_SYMTAB
from kabigate.formats.modsig import parse_pkcs7, split_signature
from kabigate.formats.module import parse_module, read_module
from kabigate.inputs.modules import find_module_files, map_modules, read_modules
from kabigate.model import MODULE_SUFFIXES
from kabigate.processes import PARALLEL_MIN_ITEMS

ROOT = corpus_root()
TREES = sorted({path.parent for path in ROOT.glob("*kernels/*/lib/modules/*/kernel")})


C_READER = module_format._modfast


@pytest.fixture(params=["c", "python"])
def reader(request, monkeypatch):
    """Each test once with the C reader (the default where it is built) and once with the Python path."""
    if request.param == "c":
        if C_READER is None:
            pytest.fail("the C reader (kabigate.formats._modfast) is not built: pip install -e . builds it")
        monkeypatch.setattr(module_format, "_modfast", C_READER)
    else:
        monkeypatch.setattr(module_format, "_modfast", None)
    return request.param


def _modules_under(top) -> list[str]:
    return sorted(str(path) for path in top.rglob("*") if path.name.endswith(MODULE_SUFFIXES) and path.is_file())


def _reads_the_same(paths: list[str], reader: str) -> None:
    for path in paths:
        with open(path, "rb") as file:
            raw = file.read()
        assert read_module(path) == slow_parse_module(raw, path), path
        if reader == "c":  # the C reader read it itself: it never left a real module to the Python path
            data = decompress(raw, path) if compression_of(raw) else raw
            size, signature = split_signature(data)
            assert C_READER.read(data, size, path) is not None, path
            if signature is not None and not signature.defect:  # and its PKCS#7 too
                der = data[signature.signed_size:signature.signed_size + signature.signature_size]
                assert C_READER.pkcs7(der) is not None, path


def test_imports_and_versions_read_in_c_are_left_out_of_the_cyclic_gc():
    """An Import or a SymbolVersion holds only a str and an int or bool: it cannot be in a cycle, so
    the C reader untracks it (the collector's passes over a package's ~500,000 were a third of
    reading its modules); equality with the Python path's is held by the tests above."""
    if C_READER is None:
        pytest.fail("the C reader (kabigate.formats._modfast) is not built: pip install -e . builds it")
    modules = [read_module(path) for path in _modules_under(TREES[0] / "kernel")]
    items = [item for module in modules for item in (*module.imports, *(module.versions or ()))]
    assert len(items) > 1000 and not any(gc.is_tracked(item) for item in items)
    assert gc.is_tracked(modules[0])


@pytest.mark.parametrize("tree", TREES, ids=lambda path: path.parent.parent.parent.name)
def test_every_in_tree_module_reads_the_same(tree, reader):
    paths = _modules_under(tree / "kernel")
    assert len(paths) > 40
    _reads_the_same(paths, reader)


def test_every_driver_and_synthetic_module_reads_the_same(reader):
    paths = _modules_under(ROOT / "drivers") + _modules_under(ROOT / "synthetic")
    assert len(paths) > 150
    _reads_the_same(paths, reader)


def _outcome(parse, data: bytes, path: str):
    try:
        return parse(data, path)
    except InputError as error:
        return InputError, str(error)


# Exported symbols (absolute and section CRCs, namespaces), a big-endian module, an arm64 one.
DAMAGED = ["kernels/6.1.0-47-amd64/lib/modules/6.1.0-47-amd64/kernel/drivers/media/mc/mc.ko",
           *(f"foreign-kernels/{release}/lib/modules/{release}/kernel/drivers/media/common/videobuf2/videobuf2-common.ko"
             for release in ("6.1.0-47-s390x", "6.1.0-47-arm64"))]


@pytest.mark.parametrize("relative", DAMAGED, ids=lambda relative: relative.split("/")[1])
def test_damaged_modules_are_refused_alike(relative, reader):
    """Bytes of the ELF header, the section headers and the symbol table overwritten at random:
    both parsers accept the result with identical facts, or both refuse it."""
    original = (ROOT / relative).read_bytes()
    module = slow_parse_module(original, relative)
    assert module.exports or module.imports
    rng = random.Random(relative)
    sections = ElfFile(original, relative).sections
    symtab = next(s for s in sections if s.type == SHT_SYMTAB)
    shoff = int.from_bytes(original[0x28:0x30], "little" if original[5] == 1 else "big")  # ELF64's e_shoff
    regions = [(0, 64), (shoff, len(original)), (symtab.offset, symtab.offset + symtab.size)]
    accepted = refused = 0
    for _ in range(1500):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            start, end = rng.choice(regions)
            data[rng.randrange(start, min(end, len(data)))] = rng.randrange(256)
        data = bytes(data)
        fast, slow = _outcome(parse_module, data, relative), _outcome(slow_parse_module, data, relative)
        if isinstance(slow, tuple):
            assert isinstance(fast, tuple) and fast[0] is InputError, (fast, slow)
            refused += 1
        else:
            assert fast == slow
            accepted += 1
    assert accepted > 100 and refused > 100, (accepted, refused)


def _generated_signatures(tmp_path) -> list[bytes]:
    """CMS signatures as sign-file makes them, of other kinds than the corpus's (issuer and serial,
    RSA, sha256): ECDSA, other digests, a subject of several names and non-ASCII, a key id."""
    from cryptography.hazmat.primitives import serialization

    from kabigate.signing import keys
    from kabigate.signing.cms import cms_signature

    signatures = []
    for index, (spec, hash_name, use_key_id) in enumerate([
            (keys.KeygenSpec("ecdsa", subject="O=Ünïcode Org,CN=kabigate ☃ key"), "sha512", False),
            (keys.KeygenSpec("rsa", 2048, subject="C=DE,O=only an organisation"), "sha384", False),
            (keys.KeygenSpec("rsa", 2048), "sha256", True)]):
        private_key, certificate = keys.generate_key(spec)
        (tmp_path / f"{index}.key").write_bytes(keys.private_key_pem(private_key, None))
        (tmp_path / f"{index}.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key = keys.load_signing_key(str(tmp_path / f"{index}.key"), str(tmp_path / f"{index}.crt"), None)
        signatures.append(cms_signature(key, hashlib.new(hash_name, b"module").digest(), hash_name, use_key_id))
    return signatures


def test_damaged_signatures_read_alike(tmp_path):
    """A module signature's PKCS#7 with bytes overwritten, cut or grown: the C reader's fields (or
    its None, then the Python walk) give the ModuleSignature the Python walk alone gives, defects
    included."""
    data = (ROOT / DAMAGED[0]).read_bytes()
    signature = split_signature(data)[1]
    assert signature is not None and not signature.defect
    signatures = [data[signature.signed_size:signature.signed_size + signature.signature_size],
                  *_generated_signatures(tmp_path)]
    for der in signatures:  # whole, each read by the C reader itself
        assert C_READER.pkcs7(der) is not None
        assert parse_pkcs7(der, 100, C_READER.pkcs7) == parse_pkcs7(der, 100)
    rng = random.Random(0)
    fast_read = 0
    for _ in range(3000):
        der = bytearray(rng.choice(signatures))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(der))
            if rng.random() < 0.8:
                der[at] = rng.choice([0, 0x80, 0x81, 0x82, 0xFF, rng.randrange(256)])
            elif rng.random() < 0.5:
                del der[max(at, 1):]
            else:
                der[at:at] = bytes([rng.randrange(256)])
        der = bytes(der)
        fast_read += C_READER.pkcs7(der) is not None
        assert parse_pkcs7(der, 100, C_READER.pkcs7) == parse_pkcs7(der, 100), der.hex()
    assert fast_read > 100, fast_read


def test_damaged_signature_trailers_split_alike(monkeypatch):
    """A signed module's end (the magic, struct module_signature, the PKCS#7's end) overwritten or
    cut: the C reader's split (or its None, then the Python path's) is split_signature()'s."""
    monkeypatch.setattr(module_format, "_modfast", C_READER)
    original = (ROOT / DAMAGED[0]).read_bytes()
    assert module_format._split_signature(original) == split_signature(original)
    assert C_READER.signature(original) is not None
    rng = random.Random(1)
    fast_read = 0
    for _ in range(3000):
        data = bytearray(original)
        for _ in range(rng.randint(1, 3)):
            at = len(data) - rng.randint(1, 60)
            if rng.random() < 0.8:
                data[at] = rng.choice([0, 1, 2, 0xFF, rng.randrange(256)])
            else:
                del data[at:]
        data = bytes(data)
        fast_read += C_READER.signature(data) is not None
        assert module_format._split_signature(data) == split_signature(data), data[-60:].hex()
    assert fast_read > 1000, fast_read


@pytest.fixture
def two_processes(monkeypatch):
    """Trees shared out between this process and a forked child, however busy the machine is."""
    monkeypatch.setenv("KABIGATE_JOBS", "2")


def test_a_tree_read_by_worker_processes_is_the_tree_read_in_order(testdata, reader, two_processes):
    """read_modules() of a whole tree (a forked child, each module sent back as the C reader's facts
    or packed into tuples) gives the Modules read_module() gives file by file, in the same order."""
    tree = testdata.modules_dir("6.1.0-56-amd64") / "kernel"
    paths = find_module_files([str(tree)])
    assert len(paths) > PARALLEL_MIN_ITEMS
    assert read_modules([str(tree)]) == [read_module(path) for path in paths]


def test_a_tree_with_a_damaged_module_raises_its_error(tmp_path, testdata, two_processes):
    """The first damaged file in order raises its InputError, as when read one by one."""
    tree = testdata.modules_dir("6.1.0-56-amd64") / "kernel" / "drivers" / "net"
    for path in find_module_files([str(tree)])[:PARALLEL_MIN_ITEMS * 2]:
        (tmp_path / Path(path).name).write_bytes(Path(path).read_bytes())
    names = sorted(p.name for p in tmp_path.iterdir())
    (tmp_path / names[100]).write_bytes(b"\x7fELF" + b"\0" * 60)
    (tmp_path / names[110]).write_bytes(b"junk")
    with pytest.raises(InputError, match=names[100].replace(".", r"\.") + ": unknown ELF class"):
        read_modules([str(tmp_path)])


def test_a_tree_mapped_by_forked_children_is_mapped_in_order(testdata, two_processes):
    """map_modules() of a whole tree (shared out between this process and forked children, their
    results pickled back) gives what mapping read_module() file by file gives, in the same order."""
    tree = testdata.modules_dir("6.1.0-56-amd64") / "kernel"
    paths = find_module_files([str(tree)])
    assert map_modules([str(tree)], repr) == [repr(read_module(path)) for path in paths]


def test_a_mapped_tree_is_shared_out_in_at_most_most_runs(testdata, monkeypatch, two_processes):
    """Runs grow past MAPPED_RUN files when there would be more than MOST_RUNS of them (their
    numbers must fit in a pipe written before it is read); the order stays the files'."""
    tree = testdata.modules_dir("6.1.0-56-amd64") / "kernel" / "drivers" / "net"
    monkeypatch.setattr(processes, "MOST_RUNS", 3)
    paths = find_module_files([str(tree)])
    assert len(paths) > PARALLEL_MIN_ITEMS * 3
    assert map_modules([str(tree)], lambda module: module.path) == paths


def test_a_mapped_tree_with_damaged_modules_raises_the_first_error(tmp_path, testdata, two_processes):
    """The first damaged file in order raises its InputError, wherever its share was read; a
    damaged file only in a child's share too."""
    tree = testdata.modules_dir("6.1.0-56-amd64") / "kernel" / "drivers" / "net"
    for path in find_module_files([str(tree)])[:PARALLEL_MIN_ITEMS * 2]:
        (tmp_path / Path(path).name).write_bytes(Path(path).read_bytes())
    names = sorted(p.name for p in tmp_path.iterdir())
    (tmp_path / names[-2]).write_bytes(b"junk")
    with pytest.raises(InputError, match=names[-2].replace(".", r"\.") + ": not an ELF file"):
        map_modules([str(tmp_path)], repr)
    (tmp_path / names[3]).write_bytes(b"\x7fELF" + b"\0" * 60)
    with pytest.raises(InputError, match=names[3].replace(".", r"\.") + ": unknown ELF class"):
        map_modules([str(tmp_path)], repr)


def _symvers_outcome(data: bytes, fast):
    saved = symvers_format._modfast
    symvers_format._modfast = fast
    try:
        return symvers_format.parse_symvers(data, "Module.symvers")
    except InputError as error:
        return InputError, str(error)
    finally:
        symvers_format._modfast = saved


def test_symvers_read_in_c_as_in_python():
    """Module.symvers: every real one read by the C reader itself, to the exports the Python path
    reads; lines damaged byte by byte (tabs, spaces, CRCs, export types, namespaces, CRLF, non-ASCII)
    read alike, or refused alike."""
    files = sorted(ROOT.glob("*kernels/*/usr/src/linux-headers-*/Module.symvers"))
    assert len(files) >= 8
    for path in files:
        data = path.read_bytes()
        assert C_READER.symvers(data) is not None, path
        assert _symvers_outcome(data, C_READER) == _symvers_outcome(data, None), path
    lines = files[0].read_bytes().splitlines(keepends=True)[:400]
    rng = random.Random(0)
    fast_read = refused = 0
    for _ in range(3000):
        text = bytearray(b"".join(rng.sample(lines, 20)))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text))
            text[at:at + rng.randint(0, 2)] = rng.choice(
                [b"\t", b" ", b"\r", b"\n", b"", b"0x", b"EXPORT_SYMBOL", b"EXPORT_SYMBOL_GPL_FUTURE", b"\xc3\xa9",
                 b"\x1c", b"\t\t", bytes([rng.randrange(256)])])
        data = bytes(text)
        fast_read += C_READER.symvers(data) is not None
        outcome = _symvers_outcome(data, C_READER)
        refused += isinstance(outcome, tuple)
        assert outcome == _symvers_outcome(data, None), data
    assert fast_read > 100 and refused > 100, (fast_read, refused)
