"""kabigate weak-modules (run as root, from rpm scriptlets) on roots someone else prepared: links
planted at every name it writes, lib/ or a kernel's folder leading out of --basedir, module paths
with `..`, a journal that is not kabigate's, names depmod cannot take, and two runs at once.
Each test builds the hostile root (tests/support/weakroot.py, real kernels and DKMS builds) beside files
that stand for the rest of the system, and checks that nothing outside the root changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import weakroot

from kabigate.host import weakmodules as wm

pytestmark = pytest.mark.realdata

OLD, RESPIN = "6.1.0-47-amd64", "6.1.0-47.1-amd64"  # RESPIN: OLD's kernel under another release (one kABI)
LINKED = {"acpi-call/acpi_call.ko": f"/lib/modules/{OLD}/extra/acpi-call/acpi_call.ko",
          "v4l2loopback/v4l2loopback.ko": f"/lib/modules/{OLD}/extra/v4l2loopback/v4l2loopback.ko"}


@pytest.fixture
def root(tmp_path, testdata):
    """<tmp>/root: OLD and RESPIN, OLD's acpi-call and v4l2loopback builds in its extra/ (both load
    on RESPIN); <tmp>/outside: the rest of the system, which no run may change."""
    base = tmp_path / "root"
    weakroot.add_kernel(base, testdata, OLD)
    weakroot.add_kernel(base, testdata, OLD, release=RESPIN, symvers_in_boot=False)
    for driver in ("acpi-call", "v4l2loopback"):
        weakroot.add_driver(base, testdata, driver, OLD)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("the system's own file\n")
    return base


def _run(base: Path, *args: str, stdin: bytes = b"", cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kabigate", "weak-modules", "--basedir", str(base), "--no-initramfs",
                           *args], input=stdin, capture_output=True, check=False, cwd=cwd)


def _state(top: Path, leave_out: Path) -> dict[str, str]:
    """Everything under `top` but `leave_out`: path -> a link's text, "dir", or a file's digest."""
    found = {}
    for directory, folders, files in os.walk(top):
        folders[:] = [f for f in folders if Path(directory, f) != leave_out]
        for name in folders + files:
            path = Path(directory, name)
            found[str(path.relative_to(top))] = (f"-> {os.readlink(path)}" if path.is_symlink() else "dir"
                                                 if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _one_error(result: subprocess.CompletedProcess, *words: str) -> str:
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 2 and len(stderr.strip().splitlines()) == 1, (result.returncode, stderr)
    assert stderr.startswith("kabigate: error: ") and all(w in stderr for w in words), stderr
    return stderr


def _links(base: Path, krel: str = RESPIN) -> dict[str, str]:
    return wm.Root(str(base)).links(krel)


# --------------------------------------------------------------------------- planted links


@pytest.mark.parametrize("name", [wm.JOURNAL_TEMP, wm.JOURNAL_TEMP + "-dangling"])
def test_a_link_at_the_journal_temp_name_writes_nothing_outside(root, name):
    """A link at the journal's temporary name was opened "w": the journal JSON overwrote the file it
    led to (or created it), and the rename then removed the evidence."""
    victim = root.parent / "outside" / ("precious" if not name.endswith("dangling") else "created")
    (root / "lib" / "modules" / wm.JOURNAL_TEMP).symlink_to(victim)
    before = _state(root.parent, root)
    result = _run(root, "--add-kernel", RESPIN)
    assert result.returncode == 0, result.stderr
    assert _links(root) == LINKED
    assert _state(root.parent, root) == before
    assert not os.path.lexists(root / "lib" / "modules" / wm.JOURNAL_TEMP)


@pytest.mark.parametrize("victim", ["nologin", "precious"])
def test_a_link_at_the_lock_name_is_refused_and_creates_nothing(root, victim):
    """A link at the lock's name created an empty file where it led (as /etc/nologin: no logins)."""
    (root / "lib" / "modules" / wm.LOCK).symlink_to(root.parent / "outside" / victim)
    before = _state(root.parent, root)
    _one_error(_run(root, "--add-kernel", RESPIN), wm.LOCK, "symbolic link", "remove it")
    assert _state(root.parent, root) == before and not _links(root)


@pytest.mark.parametrize("leading_out", ["lib", "lib/modules", f"lib/modules/{RESPIN}"])
@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_a_root_whose_module_folders_lead_out_is_refused(root, leading_out, how):
    """lib/, lib/modules/ or a kernel's folder a link to another tree (the host's): the run worked
    on that tree (weak-updates/ and modules.dep written there)."""
    elsewhere = root.parent / "elsewhere"
    root.rename(elsewhere)
    shutil.copytree(elsewhere, root, symlinks=True)
    shutil.rmtree(root / leading_out)
    target = elsewhere / leading_out
    link = root / leading_out
    link.symlink_to(target if how == "absolute" else os.path.relpath(target, link.parent))
    before = _state(root.parent, root)
    v4l2 = LINKED["v4l2loopback/v4l2loopback.ko"]
    for args, stdin in ((["--add-kernel", RESPIN], b""), (["--add-modules"], v4l2.encode()),
                        (["--remove-kernel", RESPIN], b"")):
        _one_error(_run(root, *args, stdin=stdin), str(root / leading_out), "leads out of")
    assert _state(root.parent, root) == before


@pytest.mark.parametrize("how", ["relative", "absolute"])
def test_links_that_stay_in_the_root_are_followed(root, how):
    """RHEL's layout: /lib -> usr/lib (a link in the root, to a folder in the root)."""
    (root / "usr").mkdir()
    (root / "lib").rename(root / "usr" / "lib")
    (root / "lib").symlink_to("usr/lib" if how == "relative" else root / "usr" / "lib")
    result = _run(root, "--add-kernel", RESPIN)
    assert result.returncode == 0, result.stderr
    assert _links(root) == LINKED
    weak = root / "usr" / "lib" / "modules" / RESPIN / "weak-updates"
    assert os.readlink(weak / "acpi-call" / "acpi_call.ko") == f"../../../{OLD}/extra/acpi-call/acpi_call.ko"
    assert "weak-updates/acpi-call/acpi_call.ko:" in (weak.parent / "modules.dep").read_text()


def test_a_weak_updates_link_is_replaced_and_what_it_led_to_kept(root):
    """weak-updates/ a link to a folder outside: every run ended in "<basedir>: None" (rmtree of
    the link swapped out), the journal stayed, depmod never ran."""
    elsewhere = root.parent / "outside" / "weak"
    (elsewhere / "acpi-call").mkdir(parents=True)
    (elsewhere / "keep").write_text("not kabigate's\n")
    (elsewhere / "acpi-call" / "acpi_call.ko").symlink_to(root / LINKED["acpi-call/acpi_call.ko"].lstrip("/"))
    weak = root / "lib" / "modules" / RESPIN / "weak-updates"
    weak.symlink_to(elsewhere)
    before = _state(root.parent, root)
    for _ in range(2):
        result = _run(root, "--add-kernel", RESPIN)
        assert result.returncode == 0, result.stderr
        assert weak.is_dir() and not weak.is_symlink() and _links(root) == LINKED
    assert (weak.parent / "modules.dep").is_file()
    assert _state(root.parent, root) == before
    weak.rename(weak.with_name("made"))
    weak.symlink_to(elsewhere)
    result = _run(root, "--remove-kernel", RESPIN)
    assert result.returncode == 0 and weak.is_dir() and not weak.is_symlink() and not os.listdir(weak)
    assert _state(root.parent, root) == before


@pytest.mark.parametrize("name", [wm.STAGED, wm.SWAPPED])
def test_leftover_staging_names_that_are_links_are_removed_as_links(root, name):
    elsewhere = root.parent / "outside" / "tree"
    elsewhere.mkdir()
    (elsewhere / "keep").write_text("not kabigate's\n")
    (root / "lib" / "modules" / RESPIN / name).symlink_to(elsewhere)
    (root / "lib" / "modules" / OLD / name).symlink_to(root.parent / "outside" / "precious")
    before = _state(root.parent, root)
    result = _run(root, "--add-kernel", RESPIN)
    assert result.returncode == 0, result.stderr
    assert _links(root) == LINKED and weakroot.tree_state(root)["leftovers"] == []
    assert _state(root.parent, root) == before


def test_a_link_at_the_new_initramfs_name_is_not_written_through(root, tmp_path):
    """dracut -f writes the new image with cp, which follows a link planted at its name."""
    generator = tmp_path / "dracut"
    generator.write_text("#!/bin/sh\nprintf 'new image' > \"$2\"\n")
    generator.chmod(0o755)
    image = root / "boot" / f"initramfs-{RESPIN}.img"
    image.write_text("old image")
    Path(f"{image}.kabigate-new").symlink_to(root.parent / "outside" / "precious")
    before = _state(root.parent, root)
    result = subprocess.run([sys.executable, "-m", "kabigate", "weak-modules", "--basedir", str(root), "--dracut",
                             str(generator), "--add-kernel", RESPIN], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    assert image.read_text() == "new image" and not os.path.lexists(f"{image}.kabigate-new")
    assert _state(root.parent, root) == before


# --------------------------------------------------------------------------- module paths


def test_module_paths_are_normalised_and_kept_in_the_root(root):
    """The issue's path: RHEL's /usr/lib/modules/<krel>/extra/ then `..` back to /lib/...: the
    link was made outside --basedir (staged/<the path with ..>), and nothing in weak-updates/."""
    (root / "usr" / "lib" / "modules" / OLD / "extra").mkdir(parents=True)
    v4l2 = LINKED["v4l2loopback/v4l2loopback.ko"]
    climbing = f"/usr/lib/modules/{OLD}/extra/../../../../..{v4l2}"
    before = _state(root.parent, root)
    result = _run(root, "--add-modules", stdin=climbing.encode() + b"\n")
    assert result.returncode == 0, result.stderr
    assert _links(root) == {"v4l2loopback/v4l2loopback.ko": v4l2}
    assert _state(root.parent, root) == before


def test_module_paths_that_climb_out_are_refused(root):
    outside = root.parent / "outside" / "v4l2loopback.ko"
    shutil.copyfile(root / LINKED["v4l2loopback/v4l2loopback.ko"].lstrip("/"), outside)
    before = _state(root.parent, root)
    for path, words in (("/../../outside/v4l2loopback.ko", ("leads out of the root",)),
                        (f"{root}/lib/modules/{OLD}/extra/../../../../../outside/v4l2loopback.ko",
                         ("leads out of", str(root))),
                        ("../" * 20 + "x.ko", ("leads out of the root",)),
                        (f"/lib/modules/{OLD}/extra/a\tb.ko", ("white space",)),
                        (f"/lib/modules/{OLD}/extra/\x1b[2J.ko", ("control character",)),
                        ("/lib/modules/\udcff.ko", ("not UTF-8",))):
        result = _run(root, "--add-modules", stdin=path.encode("utf-8", "surrogateescape"), cwd=root)
        _one_error(result, *words)
    assert _state(root.parent, root) == before and not _links(root)


# --------------------------------------------------------------------------- the journal

TXN = "0123456789abcdef0123456789abcdef"


def _journal(**fields) -> bytes:
    return json.dumps({"transaction": TXN, "kernels": [], "depmod": [], "initramfs": [], **fields}).encode()


@pytest.mark.parametrize("journal", [
    b"{not json", b"\xff\xfe", b"[]", b"null", b"{}", _journal(transaction="../x"), _journal(kernels="abc"),
    _journal(kernels=[1]), _journal(depmod={"a": 1}), _journal(kernels=["9.9.9-none"]),
    _journal(kernels=["../../../outside/data"]), _journal(initramfs=[f"../{RESPIN}"]),
    b"[" * 100_000, b" " * (wm.MAX_JOURNAL + 1), "link", "fifo", "folder"],
    ids=lambda journal: journal if isinstance(journal, str) else journal[:40].decode(errors="replace"))
def test_a_journal_that_is_not_kabigates_is_set_aside_once(root, journal):
    """The journal is read as root from the root: a non-JSON or mis-shaped one was a traceback on
    every later run; "kernels": ["../../../outside/data"] removed .weak-updates.kabigate/ there;
    "kernels": "abc" walked 'a', 'b', 'c'. Now: one line naming it, moved to *.bad, and the next
    run works."""
    data = root.parent / "outside" / "data" / wm.STAGED
    data.mkdir(parents=True)
    (data / wm.MARKER).write_text(TXN)
    (data / "keep.ko").write_text("not kabigate's\n")
    path = root / "lib" / "modules" / wm.JOURNAL
    if journal == "link":
        path.symlink_to(root.parent / "outside" / "precious")
    elif journal == "fifo":
        os.mkfifo(path)
    elif journal == "folder":
        path.mkdir()
    else:
        path.write_bytes(journal)
    before = _state(root.parent, root)
    _one_error(_run(root, "--add-kernel", RESPIN), str(path), "not a kabigate journal", f"{wm.JOURNAL}.bad")
    assert os.path.lexists(f"{path}.bad") and not os.path.lexists(path)
    result = _run(root, "--add-kernel", RESPIN)
    assert result.returncode == 0, result.stderr
    assert _links(root) == LINKED
    assert _state(root.parent, root) == before


# --------------------------------------------------------------------------- two runs at once


def test_two_add_modules_at_once_both_links_stay(root):
    """Two kmod packages' scriptlets at once: each run planned before taking the lock and wrote its
    whole tree, so one package's link was lost (3 of 3 trials). Planned under the lock, both stay."""
    weak = root / "lib" / "modules" / RESPIN / "weak-updates"
    for _trial in range(3):
        runs = [subprocess.Popen([sys.executable, "-m", "kabigate", "weak-modules", "--basedir", str(root),
                                  "--no-initramfs", "--add-modules", module],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                for module in LINKED.values()]
        for run in runs:
            _out, err = run.communicate()
            assert run.returncode == 0, err
        assert _links(root) == LINKED
        shutil.rmtree(weak)


# --------------------------------------------------------------------------- names depmod cannot take


def test_links_with_names_depmod_cannot_take_are_dropped_one_message_each(root):
    """Link names with a line break or bytes that are not UTF-8 in weak-updates/ (a tree made by
    other tools) made depmod crash; they are left out of the new tree, each said once."""
    weak = root / "lib" / "modules" / RESPIN / "weak-updates"
    weak.mkdir()
    target = f"../../{OLD}/extra/v4l2loopback/v4l2loopback.ko"
    for name in ("odd\nname.ko", "\udcff.ko"):
        (weak / name).symlink_to(target)
    result = _run(root, "--add-kernel", RESPIN)
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1 and stderr.count("not used:") == 2 and len(stderr.splitlines()) == 2, stderr
    assert sorted(os.listdir(weak)) == ["acpi-call", "v4l2loopback"] and _links(root) == LINKED
    assert "odd" not in (weak.parent / "modules.dep").read_text()
    result = _run(root, "--compat", "--add-kernel", RESPIN)
    assert result.returncode == 0 and not result.stderr


def test_which_duplicate_build_is_linked_does_not_depend_on_odd_names(root):
    """A second build of acpi_call in extra/ under a folder whose name depmod cannot take sorted
    after the real one, so it was tried first and linked."""
    build = root / LINKED["acpi-call/acpi_call.ko"].lstrip("/")
    for folder in ("\udcff", "zz\nzz"):
        (build.parent.parent / folder).mkdir()
        shutil.copyfile(build, build.parent.parent / folder / build.name)
    result = _run(root, "--add-kernel", RESPIN)
    assert _links(root) == LINKED
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1 and stderr.count("not used:") == 2, stderr
