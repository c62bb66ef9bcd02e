"""No module reads another module's private attributes (docs/architecture.md, "Readable code").

The rule, checked on the AST of every module under ``src/banditroute``: an attribute access
``obj._name`` (a single leading underscore; dunders are public protocol) is allowed only when

* ``obj`` is ``self``, ``cls`` or ``super()`` — a class using its own (or inherited) members, or
* ``_name`` is a member of a class defined in the same module (a method, a class attribute or an
  attribute assigned on an instance) — the module's own private API, e.g. ``other._x`` between two
  instances of one class;

and no module imports a private name from another (``from m import _f``). Anything else reaches into
a collaborator's internals, which the collaborator is then not free to change.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "banditroute"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _class_members(tree: ast.Module) -> set[str]:
    members: set[str] = set()
    for cls in ast.walk(tree):
        if not isinstance(cls, ast.ClassDef):
            continue
        for node in ast.walk(cls):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                members.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                members.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                members.add(node.id)
    return members


def _own(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def private_reads(source: str) -> list[tuple[int, str]]:
    """``(line, expression)`` of every access the module docstring forbids."""
    tree = ast.parse(source)
    members = _class_members(tree)
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            hits += [(node.lineno, f"from {node.module} import {a.name}") for a in node.names if _private(a.name)]
        elif (
            isinstance(node, ast.Attribute)
            and _private(node.attr)
            and not _own(node.value)
            and node.attr not in members
        ):
            hits.append((node.lineno, ast.unparse(node)))
    return hits


def test_the_rule_flags_reads_into_other_modules() -> None:
    source = """
from elsewhere import _helper
class Mine:
    def __init__(self):
        self._state = 1
    def merge(self, other):
        return self._state + other._state + super()._base() + type(self).__name__
def use(policy, mine):
    return policy._means(1), mine._state, policy.public
"""
    assert [expr for _, expr in private_reads(source)] == ["from elsewhere import _helper", "policy._means"]


def test_no_module_reads_another_modules_private_attributes() -> None:
    found = [
        f"{path.relative_to(SRC.parent)}:{line}: {expr}"
        for path in sorted(SRC.rglob("*.py"))
        for line, expr in private_reads(path.read_text(encoding="utf-8"))
    ]
    assert not found, "private attributes read across modules:\n" + "\n".join(found)
