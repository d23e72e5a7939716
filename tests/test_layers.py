"""The house rules, read from the source: which room may import which, paho in one module,
and no import circle anywhere (every import counts: module level, inside functions, and
under ``TYPE_CHECKING``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PARTS = ["edge", "converters", "trainer", "monitor", "deploy"]


def _modules() -> dict[str, Path]:
    """Module name -> file, for every part and the front door."""
    found: dict[str, Path] = {}
    roots = [ROOT / part / "src" for part in PARTS] + [ROOT]
    for root in roots:
        base = root / "edgewise"
        for path in sorted(base.rglob("*.py")) if root != ROOT else sorted(base.glob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The edgewise modules (and third-party top names) ``path`` imports, anywhere in it."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                out.add(full if full in MODULES else node.module)
    return out


GRAPH = {name: {m for m in _imports(path) if m in MODULES} for name, path in MODULES.items()}
ALL = {name: _imports(path) for name, path in MODULES.items()}


def _room(module: str) -> str:
    """``edgewise.edge.core.agent`` -> ``edge.core``; ``edgewise.edge.app`` -> ``edge.app``."""
    parts = module.split(".")
    return ".".join(parts[1:3]) if len(parts) > 2 else ".".join(parts[1:])


RULES = [
    # (rooms the rule is about, rooms they must not import)
    ({"edge.core"}, {"edge.fleet", "edge.observe", "edge.remote", "edge.app", "edge.workers",
                     "edge.helper", "edge.cli", "edge.streams"}),
    # Streams are a feature: they use the core, the link and the runtime, no other feature.
    ({"edge.streams"}, {"edge.fleet", "edge.observe", "edge.remote", "edge.app",
                        "edge.workers", "edge.helper", "edge.cli"}),
    ({"edge.runtime"}, {"edge.link", "edge.core", "edge.fleet", "edge.observe",
                        "edge.streams", "edge.remote", "edge.app", "edge.workers",
                        "edge.helper", "edge.cli"}),
    ({"edge.link"}, {"edge.core", "edge.fleet", "edge.observe", "edge.streams",
                     "edge.remote", "edge.app",
                     "edge.workers", "edge.helper", "edge.cli"}),
    ({"edge.remote"}, {"edge.core", "edge.fleet", "edge.observe", "edge.app", "edge.workers",
                       "edge.helper", "edge.cli"}),
]  # fmt: skip


@pytest.mark.parametrize(("rooms", "forbidden"), RULES, ids=[sorted(r[0])[0] for r in RULES])
def test_rooms_import_only_downwards(rooms: set[str], forbidden: set[str]) -> None:
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if _room(m) in rooms
        for d in deps
        if _room(d) in forbidden
    )
    assert not bad, bad


def test_edge_imports_no_host_part() -> None:
    bad = sorted(
        f"{m} imports {d}"
        for m, deps in GRAPH.items()
        if m.startswith("edgewise.edge")
        for d in deps
        if d.split(".")[1] in ("trainer", "converters", "monitor")
    )
    assert not bad, bad


def test_only_the_link_module_imports_paho() -> None:
    users = sorted(m for m, deps in ALL.items() if any(d.split(".")[0] == "paho" for d in deps))
    assert users == ["edgewise.edge.link.mqtt"]


def test_no_import_circle() -> None:
    """Tarjan's strongly connected components over every edgewise module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert not circles, circles


def test_the_rooms_are_there_and_modules_stay_small() -> None:
    rooms = {_room(m) for m in MODULES if m.startswith("edgewise.edge.")}
    assert {"edge.core", "edge.link", "edge.runtime", "edge.fleet", "edge.observe",
            "edge.remote"} <= rooms  # fmt: skip
    # The one module that touches paho holds all of it on purpose (its docstring says why).
    allowed = {"edgewise.edge.link.mqtt": 540}
    big = {
        m: n
        for m, p in MODULES.items()
        if m.startswith(("edgewise.edge", "edgewise.converters"))
        and (n := len(p.read_text(encoding="utf-8").splitlines())) > allowed.get(m, 490)
    }
    assert not big, big
