"""`kabigate build` against the same `dkms build` run in a shell, on Debian's DKMS packages.

For each package (default: small ones of the corpus) against one kernel tree of the corpus: a
`kabigate build` process (Python's start, the sandbox, extracting the .deb, dkms.conf read in the
sandbox, `dkms build` with private trees, the outcome) against the commands a shell loop would run
for it (`dpkg-deb -x`, `dkms build` with private trees and --kernelsourcedir, as root, no sandbox).
Best of N each (after a warm-up), the sums and their ratio.

    .venv/bin/python bench/build_vs_dkms.py [--kernel 6.1.0-47-amd64] [--runs 3] [PACKAGE...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the tests' support package

from support.testdata import testdata_root
from timing import best_of

DEFAULT_PACKAGES = ("acpi-call", "v4l2loopback", "tp-smapi", "vpoll", "dpdk-kmods")


def kabigate_build(tree: Path, deb: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "kabigate", "build", "--json", "-k", str(tree), str(deb)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"kabigate build {deb.name}: {done.stderr or json.loads(done.stdout)['error']}")


def plain_dkms(tree: Path, headers: Path, release: str, deb: Path) -> None:
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["dpkg-deb", "-x", str(deb), f"{work}/pkg"], check=True)
        (source,) = Path(work, "pkg/usr/src").iterdir()
        name = subprocess.run(["bash", "-c", '. "$1"; printf %s "$PACKAGE_NAME"', "bash", str(source / "dkms.conf")],
                              capture_output=True, text=True, check=True).stdout
        version = source.name[len(name) + 1:]
        os.mkdir(f"{work}/dkms")
        # dkms would make its signing key in /var/lib/dkms: elsewhere
        env = dict(os.environ, mok_signing_key=f"{work}/mok.key", mok_certificate=f"{work}/mok.pub")
        subprocess.run(["dkms", "build", "-m", name, "-v", version, "-k", release, f"--dkmstree={work}/dkms",
                        f"--sourcetree={source.parent}", f"--kernelsourcedir={headers}"],
                       capture_output=True, check=True, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", default="6.1.0-47-amd64")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("packages", nargs="*", default=DEFAULT_PACKAGES)
    args = parser.parse_args()
    root = testdata_root()
    manifest = json.loads((root / "manifest.json").read_text())
    kernel = manifest["build_kernels"][args.kernel]
    tree, headers = root / kernel["root"], root / kernel["headers_dir"]
    totals = [0.0, 0.0]
    for package in args.packages:
        (deb,) = (root / "debs").glob(f"{package}-dkms_*.deb")
        ours = best_of(args.runs, lambda deb=deb: kabigate_build(tree, deb))
        theirs = best_of(args.runs, lambda deb=deb: plain_dkms(tree, headers, args.kernel, deb))
        totals[0] += ours
        totals[1] += theirs
        print(f"{package:20} kabigate build {ours:6.2f} s   dkms build {theirs:6.2f} s   {ours / theirs:.2f}x",
              flush=True)
    print(f"{'all':20} kabigate build {totals[0]:6.2f} s   dkms build {totals[1]:6.2f} s   "
          f"{totals[0] / totals[1]:.2f}x")


if __name__ == "__main__":
    main()
