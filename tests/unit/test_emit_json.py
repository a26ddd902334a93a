"""emit_json() writes what json.dumps(document, indent=2) writes (it makes the text itself, as
json's indenting encoder is pure Python and slow), for every kind of value a report holds."""

from __future__ import annotations

import json
import math

import pytest

from kabigate.cli import shared
from kabigate.model import ReasonCode

DOCUMENTS = [
    {},
    {"a": []},
    {"modules": [{"path": "/x/ü.ko", "crc": "0x0000abcd", "weak": False, "n": None, "size": 12},
                 {"list": [[], {}, [1, [2, {"deep": True}]], ["\u2603", "tab\tnew\nline\"\\"]]}]},
    {"code": ReasonCode.CRC_MISMATCH, "floats": [0.5, 1e100, -0.0, math.inf, -math.inf, math.nan],
     "tuple": (1, "two"), "big": 2**70, "negative": -5},
    {1: "int key", 2.5: "float key", False: "bool key", None: "none key", "\x00": "control"},
    {"many": [{"symbol": f"s{i}", "crc": i} for i in range(shared._FLUSH_PIECES)]},
    # Lists of dicts of scalars are written whole by json's C encoder: strings that look like
    # their separators, an empty dict, an enum or a container among them.
    {"records": [{"a": "},\n    {", "b": "}, {"}, {"c": "\n}\n", "d": 1.5}], "tuple": ({"x": None},)},
    {"records": [{"a": 1}, {}], "more": [{"a": 1}, {"code": ReasonCode.UNSIGNED}], "deep": [{"a": 1}, {"b": [2]}]},
]


@pytest.mark.parametrize("document", DOCUMENTS)
def test_emit_json_is_json_dumps_indent_2(document, capsys):
    shared.emit_json(document)
    assert capsys.readouterr().out == json.dumps(document, indent=2) + "\n"


@pytest.mark.parametrize("document", [{"set": {1}}, {("tuple", "key"): 1}, {"bytes": b"x"}])
def test_emit_json_refuses_what_json_refuses(document):
    with pytest.raises(TypeError):
        json.dumps(document, indent=2)
    with pytest.raises(TypeError):
        shared.emit_json(document)
