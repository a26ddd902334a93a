"""A kernel .config (`/boot/config-<kver>`, a headers tree's `.config` or `include/config/auto.conf`)."""

from __future__ import annotations

import re
from itertools import islice

from kabigate.errors import InputError
from kabigate.formats.compression import MAX_LINES, lazy_lines

_SETTING = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")


def looks_like_kconfig(text: str) -> bool:
    return any(_SETTING.match(line) for line in islice(lazy_lines(text), 200))


def parse_kconfig(text: str, what: str) -> dict[str, str]:
    """CONFIG_* settings; options that are 'not set' are absent, string values unquoted. The
    caller reads the text within the text caps (compression.text_lines); lines are capped here too."""
    if text.count("\n") >= MAX_LINES:
        raise InputError(f"{what}: more than {MAX_LINES} lines, not a plausible kernel config")
    config = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if not line or line.startswith("#"):
            continue
        match = _SETTING.match(line)
        if match is None:
            raise InputError(f"{what}:{number}: not a kernel config line: {line[:80]!r}")
        value = match.group(2)
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        config[match.group(1)] = value
    return config


def machine_of_config(config: dict[str, str]) -> str | None:
    """The kernel's architecture (`uname -m`) from the options arch/*/Kconfig selects."""
    for option, machine in (("CONFIG_X86_64", "x86_64"), ("CONFIG_ARM64", "aarch64"), ("CONFIG_S390", "s390x"),
                            ("CONFIG_RISCV", "riscv64"), ("CONFIG_X86_32", "i386")):
        if config.get(option) == "y":
            return machine
    if config.get("CONFIG_PPC64") == "y":
        return "ppc64le" if config.get("CONFIG_CPU_LITTLE_ENDIAN") == "y" else "ppc64"
    return None
