#!/usr/bin/env python3
"""Benchmark: sign every module of a kernel tree, `kabigate sign` (one command, a worker process per
CPU) vs a loop of the kernel's scripts/sign-file (one process per module, as Kbuild and DKMS run it).

The tree's modules are copied twice with their signatures stripped; each side signs its copy in
place with the same RSA key, certificate and hash. Prints seconds, the ratio, and whether the
two trees came out byte-identical.

    .venv/bin/python bench/sign_vs_signfile.py [MODULE_TREE] [--bits 2048|3072|4096] [--hash sha256]
"""

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root

from kabigate.formats.modsig import split_signature
from kabigate.inputs.modules import find_module_files
from kabigate.signing import keys, sign

KERNEL = testdata_root() / "kernels/6.1.0-47-amd64"
DEFAULT_TREE = KERNEL / "lib/modules/6.1.0-47-amd64/kernel"
SIGN_FILE = KERNEL / "usr/lib/linux-kbuild-6.1/scripts/sign-file"


def stripped_copy(files: list[str], top: str, into: Path) -> list[Path]:
    copies = []
    for path in files:
        data = sign.read_module_data(path)
        target = into / os.path.relpath(path, top)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[:split_signature(data)[0]])
        copies.append(target)
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tree", nargs="?", default=str(DEFAULT_TREE))
    parser.add_argument("--bits", type=int, default=4096, help="RSA key size (Debian's build key: 4096)")
    parser.add_argument("--hash", default="sha256", choices=list(keys.HASHES))
    parser.add_argument("--sign-file", default=str(SIGN_FILE))
    args = parser.parse_args()
    files = [f for f in find_module_files([args.tree]) if f.endswith(".ko")]
    if not files or not os.path.isfile(args.sign_file):
        sys.exit(f"no modules under {args.tree} or no {args.sign_file} (run scripts/fetch-testdata)")
    with tempfile.TemporaryDirectory(prefix="kabigate-bench-") as work:
        work = Path(work)
        private_key, certificate = keys.generate_key(keys.KeygenSpec("rsa", args.bits))
        key, cert = work / "signing_key.pem", work / "signing_key.x509"
        key.write_bytes(keys.private_key_pem(private_key, None))
        cert.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
        ours_tree, theirs_tree = work / "kabigate", work / "sign-file"
        theirs = stripped_copy(files, args.tree, theirs_tree)
        stripped_copy(files, args.tree, ours_tree)
        size = sum(p.stat().st_size for p in theirs)
        print(f"{len(files)} modules, {size / 2**20:.0f} MiB, RSA-{args.bits} {args.hash}")

        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "kabigate", "sign", "--key", key, "--cert", cert, "--hash", args.hash,
                        ours_tree], check=True, stdout=subprocess.DEVNULL)
        ours_seconds = time.perf_counter() - start

        start = time.perf_counter()
        for module in theirs:
            subprocess.run([args.sign_file, args.hash, key, cert, module], check=True)
        theirs_seconds = time.perf_counter() - start

        differ = [p for p in theirs if not filecmp.cmp(p, ours_tree / p.relative_to(theirs_tree), shallow=False)]
    print(f"kabigate sign (one command)       {ours_seconds:7.2f} s")
    print(f"sign-file loop (one per module)   {theirs_seconds:7.2f} s   sign-file/kabigate = "
          f"{theirs_seconds / ours_seconds:.1f}x")
    print("identical bytes: " + ("yes, every module" if not differ else f"NO, {len(differ)} differ: {differ[:3]}"))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
