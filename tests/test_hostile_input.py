"""Modules and kernels are hostile input: every malformed byte string must end in an
InputError (one line, exit 2 from the CLI), never another exception, never a traceback."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from kabigate.errors import InputError
from kabigate.formats.module import parse_module
from kabigate.inputs.kernels import load_kernel
from kabigate.rules import check_modules

KABIGATE = [sys.executable, "-m", "kabigate"]


@pytest.fixture(scope="module")
def real_module(testdata) -> bytes:
    return testdata.in_tree("6.1.0-47-amd64", "net/key/af_key.ko").read_bytes()


def parse_or_input_error(data: bytes) -> None:
    try:
        parse_module(data, "fuzzed.ko")
    except InputError as error:
        assert "\n" not in str(error)


def test_every_truncation_is_an_input_error_or_a_module(real_module):
    for length in list(range(0, 256)) + list(range(256, len(real_module), 97)):
        parse_or_input_error(real_module[:length])


def test_random_corruption_never_escapes_as_another_exception(real_module):
    rng = random.Random(20261127)
    for _ in range(3000):
        data = bytearray(real_module)
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(len(data)) if rng.random() < 0.5 else rng.randrange(64)  # favour headers
            data[position] = rng.randrange(256)
        parse_or_input_error(bytes(data))


def test_malformed_signatures_are_modules_the_kernel_refuses(real_module, testdata):
    """mod_check_sig() returns EBADMSG, which module_sig_check() treats as fatal even when
    signatures are not enforced: a verdict, not an input error."""
    magic = b"~Module signature appended~\n"
    assert real_module.endswith(magic)
    trailer_at = len(real_module) - len(magic) - 12
    huge_length = real_module[:-len(magic) - 4] + b"\xff\xff\xff\xff" + magic
    nonzero_params = real_module[:trailer_at] + b"\x01" + real_module[trailer_at + 1:]
    sig_len = int.from_bytes(real_module[trailer_at + 8:trailer_at + 12], "big")
    garbage_cms = bytearray(real_module)
    garbage_cms[trailer_at - sig_len:trailer_at - sig_len + 8] = bytes(8)  # the CMS SEQUENCE header
    kernel = load_kernel([str(testdata.kernel_root("6.1.0-47-amd64"))])
    for data, defect in ((huge_length, "exceeds the module"), (nonzero_params, "unexpected non-zero params"),
                         (bytes(garbage_cms), "unparseable PKCS#7")):
        module = parse_module(data, "af_key.ko")
        assert defect in module.signature.defect
        verdict = check_modules([module], kernel)[0]
        assert [r.code for r in verdict.reasons] == ["bad-signature"]
    intact = check_modules([parse_module(real_module, "af_key.ko")], kernel)[0]
    assert intact.loads and not intact.warnings


def test_compressed_module_bomb_is_refused():
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(600 << 20))  # 19 KB that expands to 600 MiB
    with pytest.raises(InputError, match="decompresses to more than the 512 MiB limit"):
        parse_module(bomb, "bomb.ko.zst")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*KABIGATE, *args], capture_output=True, text=True)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kabigate: error: ") and fragment in lines[0], result.stderr
    assert result.stdout == ""


def test_cli_bad_inputs(tmp_path: Path, testdata, real_module):
    kernel = str(testdata.kernel_root("6.1.0-47-amd64"))
    truncated = tmp_path / "truncated.ko"
    truncated.write_bytes(real_module[:5000])
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    corrupt_symvers = tmp_path / "Module.symvers"
    corrupt_symvers.write_text("0x00000001\tok\tvmlinux\tEXPORT_SYMBOL\n0xZZ\tbad\tvmlinux\tEXPORT_SYMBOL\n")
    assert_one_line_error(run("check", "-k", kernel, str(truncated)), "truncated")
    assert_one_line_error(run("check", "-k", kernel, str(text)), "not an ELF file")
    assert_one_line_error(run("check", "-k", kernel, "/bin/ls"), "not a kernel module")
    assert_one_line_error(run("check", "-k", kernel, str(tmp_path / "missing.ko")), "no such file")
    assert_one_line_error(run("check", "-k", str(corrupt_symvers), str(truncated)), "Module.symvers:2: bad CRC")
    assert_one_line_error(run("check", "-k", str(text), str(truncated)), "not a symvers file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run("check", "-k", str(empty), str(truncated)), "not a kernel")
    assert_one_line_error(run("inspect", str(empty)), "no kernel modules")
    assert_one_line_error(run("diff", kernel, str(corrupt_symvers)), "bad CRC")


def test_cli_usage_errors_exit_2():
    for args in (("check",), ("check", "-k"), ("frobnicate",), ("diff", "one")):
        result = run(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
