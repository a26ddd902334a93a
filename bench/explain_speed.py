"""How long `kabigate explain` takes on a whole real kernel pair, first and second time.

The pair: Debian's 6.1.0-50-amd64 -> 6.1.0-56-amd64 (their vmlinuz and the old kernel's headers),
every export whose CRC changed explained (vmlinux's and modules'; the latter say why BTF cannot),
then one symbol. Cold: an empty cache (decompress both images, parse their
BTF, render every named type, index the headers, explain); warm: the same question again, the
parsed kernels and header index read back from kabigate's cache. The standard tool for comparison:
pahole reading the same BTF (`pahole -F btf vmlinux`, every struct printed; no tool explains
CRC changes) on the decompressed images.

    .venv/bin/python bench/explain_speed.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root
from timing import best_of

from kabigate.explain.crc import explain
from kabigate.explain.sources import header_trees, kernel_types_of, load_headers, warm
from kabigate.formats.bzimage import kernel_image
from kabigate.inputs.kernels import load_kernel

OLD, NEW = "6.1.0-50-amd64", "6.1.0-56-amd64"


def explain_pair(roots: list[Path], *symbols: str) -> tuple[float, int]:
    """One explanation (the whole pair, or SYMBOLs) in a fresh process: only the cache is kept."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kabigate", "explain", "--from", str(roots[0]), "--to", str(roots[1]),
                           "--json", *symbols], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(done.stderr)
    return elapsed, done.stdout.count('"symbol"')


def main() -> None:
    root = testdata_root() / "kernels"
    roots = [root / OLD, root / NEW]
    old, new = (load_kernel([str(r)]) for r in roots)
    vmlinux = sorted(n for n, e in old.exports.items()
                     if e.owner == "vmlinux" and n in new.exports and new.exports[n].crc != e.crc)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KABIGATE_CACHE"] = cache
        start = time.perf_counter()  # the service alone (no report printed), vmlinux's BTF only
        trees = header_trees([str(roots[0])])
        warm([old, new], trees, with_modules=False)
        result = explain(kernel_types_of(old, with_modules=False), kernel_types_of(new, with_modules=False),
                         vmlinux, load_headers(trees))
        cold_vmlinux = time.perf_counter() - start
        explained = sum(bool(s.candidates) for s in result.symbols)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["KABIGATE_CACHE"] = cache
        cold, symbols = explain_pair(roots)
        cached = best_of(3, lambda: explain_pair(roots))
        one = best_of(3, lambda: explain_pair(roots, "skb_copy_bits"))
        images = []
        for release, kernel_root in zip((OLD, NEW), roots):
            path = Path(cache) / f"vmlinux-{release}"
            path.write_bytes(kernel_image((kernel_root / "boot" / f"vmlinuz-{release}").read_bytes(), release))
            images.append(path)
        pahole = best_of(3, lambda: [subprocess.run(["pahole", "-F", "btf", str(p)], stdout=subprocess.DEVNULL,
                                                    check=True) for p in images])
    print(f"{OLD} -> {NEW}: {symbols} changed exports explained")
    print(f"  cold, vmlinux's {len(vmlinux)} only (the explain service, {explained} explained): {cold_vmlinux:6.2f} s")
    print(f"  cold (empty cache), kabigate explain --json, modules' BTF too: {cold:6.2f} s")
    print(f"  warm (cached):      {cached:6.2f} s   {cold / cached:.1f}x faster than cold")
    print(f"  warm, one symbol:   {one:6.2f} s   (the second question)")
    print(f"  pahole -F btf on both vmlinux (print every struct): {pahole:.2f} s; "
          f"kabigate cold {cold / pahole:.0f}x, warm {cached / pahole:.0f}x that")


if __name__ == "__main__":
    main()
