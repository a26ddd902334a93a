"""emit_json() (cli/shared.py) writes json.dumps(document, indent=2)'s text, by its Python path
and by the C writer (cli/_jsonindent.c dumps(), issue 23): a real tree's
`inspect --json` document, and generated documents full of what a naive indenter would get
wrong (braces, commas, colons, quotes and backslashes inside strings, empty containers)."""

from __future__ import annotations

import contextlib
import io
import json
import random

import pytest

from kabigate.cli import abi, shared
from kabigate.inputs.modules import read_modules
from kabigate.model import ReasonCode

C_INDENT = shared._c_indenter()


@pytest.fixture(params=["c", "python"])
def indenter(request, monkeypatch):
    if request.param == "c" and C_INDENT is None:
        pytest.fail("the C indenter (kabigate.cli._jsonindent) is not built: pip install -e . builds it")
    monkeypatch.setattr(shared, "_c_indenter", lambda: C_INDENT if request.param == "c" else None)
    return request.param


def _emitted(document) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        shared.emit_json(document)
    return out.getvalue()


def test_a_tree_inspected_is_json_dumps_indented(testdata, indenter):
    tree = testdata.modules_dir("6.1.0-56-amd64") / "kernel" / "drivers" / "net"
    document = {"modules": [abi._module_json(module) for module in read_modules([str(tree)])]}
    assert len(document["modules"]) > 200
    assert _emitted(document) == json.dumps(document, indent=2) + "\n"


TRICKY = ["", "{", "}", "[]", "{}", ",", ":", '"', "\\", '\\"', 'a",b', "\n\t", "é", "\u2603", "\U0001f600",
          "\0", "[{,:}]", "\\\\", "x" * 300]


def _value(rng: random.Random, depth: int):
    kind = rng.randrange(10 if depth < 5 else 6)
    if kind == 0:
        return rng.choice(TRICKY) + rng.choice(TRICKY)
    if kind == 1:
        return rng.choice([0, -1, 2**70, 1.5, -0.0, 1e300, float("nan"), float("inf")])
    if kind == 2:
        return rng.choice([True, False, None])
    if kind == 3:
        return rng.choice(list(ReasonCode))  # a StrEnum: written as its string
    if kind in (4, 5):
        return rng.choice(TRICKY)
    if kind in (6, 7):
        items = [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
        return tuple(items) if rng.random() < 0.3 else items
    keys = [rng.choice(TRICKY + [1, 2.5, True, None]) for _ in range(rng.randrange(4))]
    return {key: _value(rng, depth + 1) for key in keys}


def test_generated_documents_are_json_dumps_indented(indenter):
    rng = random.Random(23)
    for _ in range(3000):
        document = {"modules": [_value(rng, 2) for _ in range(rng.randrange(4))], "other": _value(rng, 1)}
        assert _emitted(document) == json.dumps(document, indent=2) + "\n", document


def test_what_json_cannot_write_is_refused_alike(indenter):
    with pytest.raises(TypeError, match="is not JSON serializable"):
        _emitted({"modules": [{"a": {"b": object()}}]})


def test_the_c_writer_writes_what_json_writes_or_leaves_it_to_python():
    """dumps() itself, at an indent: json.dumps' text, or None for what it leaves to the Python path
    (a non-str key, a type json writes otherwise); the generated documents mostly stay in C."""
    if C_INDENT is None:
        pytest.fail("the C writer (kabigate.cli._jsonindent) is not built: pip install -e . builds it")
    rng = random.Random(2323)
    written = 0
    for _ in range(3000):
        value = _value(rng, 2)
        text = C_INDENT(value, "\n    ")
        if text is not None:
            written += 1
            assert text == json.dumps(value, indent=2).replace("\n", "\n    "), value
    assert written > 2000
    assert C_INDENT({"a": [object()]}, "\n") is None
    assert C_INDENT({1: "one"}, "\n") is None
    assert C_INDENT(["\U0001f600\x7f\0é"], "\n") == json.dumps(["\U0001f600\x7f\0é"], indent=2)


def test_every_module_of_the_corpus_is_written_in_c_as_in_python(testdata):
    """inspect --json's record of a module, written by cli/_jsonindent.c module() from its fields,
    is the text of the Python path's _module_json() dict, for every module of the real corpus;
    and a field of an unexpected type is left to the Python path."""
    write = shared.c_module_writer()
    if write is None:
        pytest.fail("the C writer (kabigate.cli._jsonindent) is not built: pip install -e . builds it")
    root = testdata.root
    trees = sorted({str(p.parent) for p in root.glob("*kernels/*/lib/modules/*/kernel")})
    modules = read_modules([*trees, str(root / "drivers"), str(root / "synthetic")])
    assert len(modules) > 10_000
    for module in modules:
        text = write(abi._module_head(module), module.versions, module.imports, module.exports,
                     abi._signature_json(module.signature), abi.MODULE_NEWLINE)
        assert text == shared.json_text(abi._module_json(module), abi.MODULE_NEWLINE), module.path
    module = modules[0]
    assert write(abi._module_head(module), module.versions, module.imports, module.exports,
                 {"size": object()}, abi.MODULE_NEWLINE) is None
    assert write({}, None, (), (), None, abi.MODULE_NEWLINE) is None
