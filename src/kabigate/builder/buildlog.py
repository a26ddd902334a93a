"""A build's log, bounded, and the line of it that says why the build failed."""

from __future__ import annotations

import os
import re
from pathlib import Path

HEAD_BYTES = 256 << 10
TAIL_BYTES = 768 << 10
# gcc's diagnostic: FILE:LINE:COLUMN: error: ... (or fatal error:), as gcc prints it
COMPILER_ERROR = re.compile(r":\d+:\d+: (?:fatal )?error: ")
MAX_ERROR = 240


class BoundedLog:
    """The first HEAD_BYTES and the last TAIL_BYTES of what was written; `total` counts it all."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def write(self, data: bytes) -> None:
        self.total += len(data)
        room = HEAD_BYTES - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        self.tail += data
        if len(self.tail) > 2 * TAIL_BYTES:  # trim now and then, not on every write
            del self.tail[:-TAIL_BYTES]

    @classmethod
    def of_file(cls, path: Path) -> BoundedLog:
        """A file written by the build (dkms's make.log): only its head and tail are read."""
        log = cls()
        with path.open("rb") as handle:
            log.write(handle.read(HEAD_BYTES))
            size = os.fstat(handle.fileno()).st_size
            handle.seek(max(HEAD_BYTES, size - TAIL_BYTES))
            log.write(handle.read(TAIL_BYTES))
        log.total = size
        return log

    def text(self) -> str:
        tail = self.tail[-TAIL_BYTES:]
        dropped = self.total - len(self.head) - len(tail)
        cut = f"\n[... {dropped} bytes left out ...]\n".encode() if dropped else b""
        return bytes(self.head + cut + tail).decode(errors="replace")


def first_error(log: str, strip: tuple[str, ...] = ()) -> str | None:
    """The first compiler error line (gcc's `FILE:LINE:COL: error:`), else modpost's `ERROR:`, else
    None; the sandbox's folders (`strip`) are taken off the paths so the line reads the same from
    any build, and it is cut at MAX_ERROR characters."""
    lines = log.splitlines()
    found = (next((line for line in lines if COMPILER_ERROR.search(line)), None)
             or next((line for line in lines if "ERROR: modpost:" in line), None))
    if found is None:
        return None
    for prefix in strip:
        found = found.replace(prefix.rstrip("/") + "/", "")
    found = " ".join(found.split())
    return found if len(found) <= MAX_ERROR else found[:MAX_ERROR - 3] + "..."
