"""The closed vocabularies (model.ReasonCode, kabigate/vocabulary.py) against the code that speaks
them and the documents that list them: a code the rules emit is a member, no member is dead, no
distinctive code is spelled as a bare string outside its enum, and the README's "Reason codes",
docs/loader-checks.md and the message schemas name exactly the members. Reads source, no corpus."""

from __future__ import annotations

import ast
import re
from enum import StrEnum
from pathlib import Path

import kabigate
import kabigate_messages
from kabigate import vocabulary
from kabigate.boot import qemu
from kabigate.formats import gatepolicy
from kabigate.model import LoadVerdict, ReasonCode

SOURCE = Path(kabigate.__file__).parent
ROOT = SOURCE.parent.parent
# A backticked word shaped like a code: lower case, hyphens inside (`-fno-common`, `CONFIG_*`,
# `.gnu.linkonce.this_module` and `--require-signature` are not).
CODE_WORD = re.compile(r"`([a-z][a-z-]*[a-z])`")
NOT_A_LOADER_RULE = {ReasonCode.UNREADABLE}  # weak-modules' own refusal
VOCABULARIES = [ReasonCode, LoadVerdict, vocabulary.GateClass, vocabulary.GateCategory, vocabulary.Outcome,
                vocabulary.PackageState, vocabulary.ExportChange, vocabulary.TaskState, vocabulary.RequiresVerdict,
                vocabulary.BuildOutcome, vocabulary.EventKind, vocabulary.SubscriptionTarget, vocabulary.ChannelKind,
                vocabulary.DeliveryState, vocabulary.WaiverLink]


def _reason_code_argument(node: ast.expr) -> str:
    """The member a code argument names; `code` is a rule's own variable, itself set from members."""
    if isinstance(node, ast.Name) and node.id == "code":
        return "code"
    assert isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "ReasonCode", \
        f"line {node.lineno}: a reason code that is not a ReasonCode member: {ast.unparse(node)}"
    assert node.attr in ReasonCode.__members__, f"line {node.lineno}: no ReasonCode.{node.attr}"
    return node.attr


def test_every_code_the_rules_emit_is_a_member_and_every_member_is_emitted():
    tree = ast.parse((SOURCE / "rules.py").read_text())
    emitted = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "Reason":
                emitted.add(_reason_code_argument(node.args[0]))
            elif node.func.id == "_try_to_force_load":
                emitted.add(_reason_code_argument(node.args[2]))
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "code" for t in node.targets):
            emitted |= {_reason_code_argument(n) for n in ast.walk(node.value) if isinstance(n, ast.Attribute)}
    emitted.discard("code")
    assert {ReasonCode[name] for name in emitted} == set(ReasonCode) - NOT_A_LOADER_RULE
    # The kernel's refusals that boot-check reads from a booted kernel are the same codes.
    assert all(isinstance(code, ReasonCode) for _pattern, code in qemu._KERNEL_REFUSALS)


def _enum_definitions(tree: ast.Module) -> set[int]:
    """The string constants that define StrEnum members (NAME = "text" in a StrEnum class)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(isinstance(b, ast.Name) and b.id == "StrEnum" for b in node.bases):
            found |= {id(s.value) for s in node.body if isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant)}
    return found


def _docstrings(tree: ast.Module) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def test_no_distinctive_code_is_a_bare_string_outside_its_enum():
    """A typo in a bare "crc-mismatch" is a silent bug; a misspelt member is an AttributeError. Single
    words ("new", "done", "INFO", "unsigned") are also JSON keys, log levels and display text, so only
    the codes with a hyphen or an underscore are policed."""
    distinctive = {member.value: f"{enum.__name__}.{member.name}" for enum in VOCABULARIES for member in enum
                   if "-" in member.value or "_" in member.value}
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        tree = ast.parse(path.read_text())
        allowed = _enum_definitions(tree) | _docstrings(tree)
        found += [f"{path.relative_to(SOURCE)}:{node.lineno}: {node.value!r} is {distinctive[node.value]}"
                  for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
                  and node.value in distinctive and id(node) not in allowed]
    assert found == []


def test_the_readme_lists_exactly_the_reason_codes():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Reason codes"):]
    section = section[:section.index("\n## ")]
    named = set(CODE_WORD.findall(section)) - {"reasons"}  # the JSON field the failures are in
    assert named == set(ReasonCode)


def test_loader_checks_doc_names_exactly_the_loader_rules_codes():
    """The kabigate column of docs/loader-checks.md: every code there is a member, every loader
    rule's code is there."""
    named = set()
    for line in (ROOT / "docs" / "loader-checks.md").read_text().splitlines():
        if re.match(r"\| \d+ \|", line):
            named |= set(CODE_WORD.findall(line.rstrip(" |").rsplit(" | ", 1)[-1]))
    assert named == set(ReasonCode) - NOT_A_LOADER_RULE


def test_policies_and_message_schemas_speak_the_gate_vocabulary():
    """kabigate_messages needs only fedora-messaging, so its schemas spell the words out: they must
    be the members, in order."""
    assert tuple(vocabulary.GateCategory) == gatepolicy.CLASSES
    assert set(gatepolicy.DEFAULT_OUTCOMES) == set(vocabulary.GateCategory)
    assert kabigate_messages._OUTCOME["enum"] == list(vocabulary.Outcome)
    counts = kabigate_messages.GateResultV1.body_schema["properties"]["counts"]
    assert counts["required"] == list(vocabulary.GateClass)
    notification = kabigate_messages.NotificationV1.body_schema["properties"]
    assert notification["kind"]["enum"] == list(vocabulary.EventKind)


def test_members_print_and_compare_as_their_text():
    """What keeps JSON, the store's columns, f-strings and dictionaries keyed by text unchanged."""
    for enum in VOCABULARIES:
        assert issubclass(enum, StrEnum)
        for member in enum:
            assert f"{member}" == str(member) == member.value and member == member.value
            assert {member.value: 1}[member] == 1
