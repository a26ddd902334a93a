"""A kernel .config (`/boot/config-<kver>`, a headers tree's `.config` or `include/config/auto.conf`)."""

from __future__ import annotations

import re

from kabigate.errors import InputError

_SETTING = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")


def looks_like_kconfig(text: str) -> bool:
    return any(_SETTING.match(line) for line in text.splitlines()[:200])


def parse_kconfig(text: str, what: str) -> dict[str, str]:
    """CONFIG_* settings; options that are 'not set' are absent, string values unquoted."""
    config = {}
    for number, line in enumerate(text.splitlines(), 1):
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
