"""Builders of hostile inputs for the tests and the fuzz harness: RPM headers and cpio payloads,
tar headers byte by byte, deb (ar) packages, and a CLI runner that measures peak memory.

Everything here writes the formats from their specifications (rpm's lib/header.c, cpio newc,
POSIX/GNU tar, ar), independently of kabigate's readers, so a crafted field stays as crafted.
"""

from __future__ import annotations

import gzip
import io
import os
import resource
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass

# -- RPM --------------------------------------------------------------------------------------

RPM_CHAR, RPM_INT8, RPM_INT16, RPM_INT32, RPM_INT64 = 1, 2, 3, 4, 5
RPM_STRING, RPM_BIN, RPM_STRING_ARRAY, RPM_I18NSTRING = 6, 7, 8, 9
HEADER_MAGIC = b"\x8e\xad\xe8\x01"


def rpm_lead(name: str = "evil") -> bytes:
    return (b"\xed\xab\xee\xdb" + bytes([3, 0]) + struct.pack(">HH", 0, 1) + name.encode()[:65].ljust(66, b"\0")
            + struct.pack(">HH", 1, 5) + bytes(16))


def rpm_structure(entries: list[tuple[int, int, int, int]], store: bytes) -> bytes:
    """A header structure from raw index entries (tag, type, offset, count) and its data store."""
    index = b"".join(struct.pack(">iIiI", *entry) for entry in entries)
    return HEADER_MAGIC + bytes(4) + struct.pack(">II", len(entries), len(store)) + index + store


def rpm_tags(tags: list[tuple[int, int, object]]) -> bytes:
    """A header structure from (tag, type, value): value is str, list[str], list[int] or bytes."""
    entries, store = [], bytearray()
    for tag, kind, value in tags:
        if kind == RPM_STRING:
            data, count = value.encode() + b"\0", 1
        elif kind in (RPM_STRING_ARRAY, RPM_I18NSTRING):
            data, count = b"".join(v.encode() + b"\0" for v in value), len(value)
        elif kind == RPM_BIN:
            data, count = bytes(value), len(value)
        else:
            code, width = {RPM_CHAR: ("B", 1), RPM_INT8: ("B", 1), RPM_INT16: ("H", 2), RPM_INT32: ("I", 4),
                           RPM_INT64: ("Q", 8)}[kind]
            store += bytes(-len(store) % width)
            data, count = struct.pack(f">{len(value)}{code}", *value), len(value)
        entries.append((tag, kind, len(store), count))
        store += data
    return rpm_structure(entries, bytes(store))


def rpm(header: bytes, payload: bytes, signature: bytes | None = None) -> bytes:
    """lead + signature header (empty unless given, padded to 8) + header + payload."""
    signature = rpm_structure([], b"") if signature is None else signature
    signature += bytes(-len(signature) % 8)
    return rpm_lead() + signature + header + payload


NAME_TAGS = [(1000, RPM_STRING, "evil"), (1001, RPM_STRING, "1"), (1002, RPM_STRING, "1"),
             (1022, RPM_STRING, "x86_64")]


def cpio(entries: list[tuple], trailer: bool = True) -> bytes:
    """newc archive of (name, data) or (name, data, {field index: 8-char raw field}) entries."""
    out = io.BytesIO()
    all_entries = [*entries, ("TRAILER!!!", b"")] if trailer else entries
    for number, entry in enumerate(all_entries):
        name, data = entry[0], entry[1]
        overrides = entry[2] if len(entry) > 2 else {}
        raw = name.encode() + b"\0"
        mode = 0o100644 if name != "TRAILER!!!" else 0
        fields = [b"%08x" % v for v in (number + 1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)]
        for index, value in overrides.items():
            fields[index] = value
        out.write(b"070701" + b"".join(fields))
        out.write(raw + b"\0" * (-(110 + len(raw)) % 4))
        out.write(data + b"\0" * (-len(data) % 4))
    return out.getvalue()


def rpm_with_files(files: list[tuple], tags: list[tuple[int, int, object]] | None = None) -> bytes:
    """An RPM of NAME_TAGS (+ `tags`) whose gzip payload is a cpio of `files`."""
    return rpm(rpm_tags(NAME_TAGS + (tags or [])), gzip.compress(cpio(files), mtime=0))


# -- tar and deb ---------------------------------------------------------------------------------

def tar_header(name: bytes, size: int | bytes = 0, typeflag: bytes = b"0", linkname: bytes = b"",
               magic: bytes = b"ustar\x0000", prefix: bytes = b"", mode: bytes = b"0000644") -> bytes:
    """One 512-byte header with a correct checksum; `size` may be a raw 12-byte field."""
    size_field = size if isinstance(size, bytes) else b"%011o\0" % size
    header = bytearray(512)
    header[0:100] = name[:100].ljust(100, b"\0")
    header[100:108] = mode.ljust(8, b"\0")
    header[108:116] = b"0000000\0"
    header[116:124] = b"0000000\0"
    header[124:136] = size_field[:12].ljust(12, b"\0")
    header[136:148] = b"00000000000\0"
    header[148:156] = b" " * 8
    header[156:157] = typeflag
    header[157:257] = linkname[:100].ljust(100, b"\0")
    header[257:265] = magic[:8].ljust(8, b"\0")
    header[345:500] = prefix[:155].ljust(155, b"\0")
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


def tar_member(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **fields) -> bytes:
    return tar_header(name, len(data), typeflag, **fields) + data + bytes(-len(data) % 512)


def pax_record(key: str, value: str | bytes) -> bytes:
    body = key.encode() + b"=" + (value if isinstance(value, bytes) else value.encode()) + b"\n"
    length = len(body) + 2
    while len(b"%d " % length) + len(body) != length:
        length += 1
    return b"%d " % length + body


TAR_END = bytes(1024)


def control_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in (("./control", b"Package: evil\nVersion: 1\nArchitecture: amd64\n"),
                           ("./md5sums", b"00000000000000000000000000000000  lib/modules/x/a.ko\n")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            archive.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


def ar(members: list[tuple[str, bytes]]) -> bytes:
    out = b"!<arch>\n"
    for member, content in members:
        out += f"{member:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(content):<10}`\n".encode() + content
        out += b"\n" if len(content) % 2 else b""
    return out


def deb(data_member: bytes, name: str = "data.tar.gz", control: bytes | None = None) -> bytes:
    return ar([("debian-binary", b"2.0\n"), ("control.tar.gz", control if control is not None else control_tar()),
               (name, data_member)])


# -- running the CLI -------------------------------------------------------------------------------

# The peak is VmHWM, the high-water mark of this program's own memory map: getrusage()'s ru_maxrss
# also counts the forked copy of the test process before exec (Linux keeps it in the signal
# struct), which is the size of the whole pytest session, not kabigate's.
_MEASURED_MAIN = """
import os, sys
sys.argv = ["kabigate", *sys.argv[1:]]
from kabigate.cli import main
try:
    main()
finally:
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    with open(os.environ["KABIGATE_TEST_PEAK"], "w") as out:
        out.write(str(peak * 1024))
"""


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    peak: int  # bytes of resident memory at the peak

    def __repr__(self) -> str:
        return f"Run(rc={self.returncode}, peak={self.peak >> 20} MiB, stderr={self.stderr[-1500:]!r})"


def run_cli(*args, address_space: int | None = None, timeout: float = 120, cwd=None) -> Run:
    """`kabigate ARGS` in a child process, its address space optionally capped; returns its
    exit status, output and peak resident memory."""
    with tempfile.NamedTemporaryFile() as peak_file:
        env = {**os.environ, "KABIGATE_TEST_PEAK": peak_file.name}

        def limit() -> None:
            if address_space is not None:
                resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))

        result = subprocess.run([sys.executable, "-c", _MEASURED_MAIN, *map(str, args)], capture_output=True,
                                text=True, timeout=timeout, env=env, preexec_fn=limit, cwd=cwd, check=False)
        with open(peak_file.name) as written:
            peak = int(written.read() or 0)
    return Run(result.returncode, result.stdout, result.stderr, peak)


def assert_input_error(run: Run, fragment: str = "") -> None:
    """The contract: exit 2, one line `kabigate: error: ...` on stderr, nothing on stdout."""
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr, run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kabigate: error: "), run
    assert fragment in lines[0], (fragment, run)
    assert run.stdout == "", run
