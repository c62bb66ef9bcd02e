"""The layer diagram in docs/architecture.md is the code's: imports point down, and nothing goes round.

From the AST of every module under ``src/banditroute`` (module-level *and* function-level imports —
a lazy import is still a dependency) this test builds the import graph and checks that

* no chain of imports leads from a module back to itself (no circle, e.g. ``cli/main`` ↔ ``cli/serve``);
* each package imports only from packages on a *lower* floor of the diagram (same-floor packages are
  independent of each other);
* every package sits on the lowest floor its imports allow (its height in the package graph), so the
  diagram is the one the imports determine, not merely one they happen to respect.
"""

from __future__ import annotations

import ast
import re
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "banditroute"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path) -> set[str]:
    """The banditroute modules ``path`` imports (``from pkg import submodule`` counts as the submodule)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES and node.level == 0:
            subs = {f"{node.module}.{a.name}" for a in node.names} & MODULES.keys()
            found |= subs or {node.module}
            if len(subs) < len(node.names):  # names from the module itself
                found.add(node.module)
    return found


GRAPH = {name: imports_of(path) - {name} for name, path in MODULES.items()}


def package(module: str) -> str | None:
    """The package of a module; ``None`` for the top level (``banditroute/__init__.py``, and
    ``__main__.py``, the ``python -m banditroute`` entry point above every floor)."""
    parts = module.split(".")
    top_level_file = len(parts) == 2 and MODULES[module].name != "__init__.py"
    return None if len(parts) < 2 or top_level_file else parts[1]


def package_graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for module, targets in GRAPH.items():
        src = package(module)
        if src is None:
            continue
        out.setdefault(src, set())
        out[src] |= {t for t in map(package, targets) if t is not None and t != src}
    return out


def floors_in_docs() -> list[list[str]]:
    """The diagram's floors, top first: each floor line starts with its packages (``cli/``, ``llm/  twostage/``)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    floors = []
    for line in block.splitlines()[1:]:
        if line and not line[0].isspace():
            head = re.match(r"((?:[a-z_]+/\s*)+)", line)
            assert head, f"diagram line does not start with packages: {line!r}"
            floors.append(re.findall(r"([a-z_]+)/", head.group(1)))
    return floors


def test_no_import_circles() -> None:
    try:
        tuple(TopologicalSorter(GRAPH).static_order())
    except CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None


def test_imports_point_down_the_documented_floors() -> None:
    floors = floors_in_docs()
    level = {pkg: len(floors) - i for i, floor in enumerate(floors) for pkg in floor}
    graph = package_graph()
    assert sorted(level) == sorted(graph), "docs/architecture.md's diagram must list every package once"
    upward = [
        f"{module} imports {target}"
        for module, targets in GRAPH.items()
        for target in targets
        if (src := package(module)) and (dst := package(target)) and src != dst and level[dst] >= level[src]
    ]
    assert not upward, "imports that do not point down the layers:\n" + "\n".join(sorted(upward))


def test_each_package_sits_on_the_lowest_floor_its_imports_allow() -> None:
    graph = package_graph()
    height: dict[str, int] = {}
    for pkg in TopologicalSorter(graph).static_order():
        height[pkg] = 1 + max((height[d] for d in graph[pkg]), default=0)
    floors = floors_in_docs()
    documented = {pkg: len(floors) - i for i, floor in enumerate(floors) for pkg in floor}
    assert documented == height, f"draw the diagram from the imports: floors (1 = ground) {height}"


def test_cost_aware_routing_sits_below_the_application_areas() -> None:
    """``costaware`` is shared by LLM routing, the gateway and retrieval studies: it must stay below them
    all (it imports none of them), so the routers run on any reward table (docs/architecture.md)."""
    floors = floors_in_docs()
    level = {pkg: len(floors) - i for i, floor in enumerate(floors) for pkg in floor}
    assert all(level["costaware"] < level[pkg] for pkg in ("llm", "studies", "gateway"))
    assert all(level["costaware"] > level[pkg] for pkg in ("policies", "core"))
