"""The build manifest (`ingest drivers --manifest`): what it holds, and one-line refusals."""

from __future__ import annotations

import pytest

from kabigate.errors import InputError
from kabigate.formats.buildmanifest import BuildEntry, FailureEntry, parse_build_manifest
from kabigate.inputs.manifest import read_build_manifest


def test_builds_and_failures_with_paths_relative_to_the_manifest(tmp_path):
    manifest = tmp_path / "corpus.toml"
    manifest.write_text('[[build]]\npath = "drivers/jool"\nname = "jool"\nversion = "4.1.9-1"\n\n'
                        '[[build]]\npath = "https://repo.example/kmod-jool.rpm"\n\n'
                        '[[failure]]\nname = "jool"\nversion = "4.1.9-1"\nkernel = "6.12.107+deb12-amd64"\n'
                        'error = "nl_core.c:42:9: error: implicit declaration"\n')
    read = read_build_manifest(str(manifest))
    assert read.builds == [BuildEntry(str(tmp_path / "drivers/jool"), "jool", "4.1.9-1"),
                           BuildEntry("https://repo.example/kmod-jool.rpm", None, None)]
    assert read.failures == [FailureEntry("jool", "4.1.9-1", "6.12.107+deb12-amd64",
                                          "nl_core.c:42:9: error: implicit declaration")]


@pytest.mark.parametrize("text, message", [
    ("", "no [[build]] or [[failure]] table"),
    ("[[builds]]\npath = 'x'\n", "unknown table 'builds'"),
    ("build = 'x'\n", "'build' must be an array of tables"),
    ("[[build]]\nname = 'x'\n", "build #1: no 'path'"),
    ("[[build]]\npath = 'x'\ncolour = 'red'\n", "build #1: unknown key 'colour'"),
    ("[[build]]\npath = 3\n", "build #1: 'path' must be a non-empty string"),
    ("[[failure]]\nname = 'x'\nversion = '1'\nkernel = 'k'\n", "failure #1: no 'error'"),
    ("[[build]\n", "m"),
])
def test_refusals(text, message):
    with pytest.raises(InputError) as refused:
        parse_build_manifest(text.encode(), "m.toml")
    assert message in str(refused.value) and "\n" not in str(refused.value)
