"""Imports inside thawkit run one way, and no two modules import each other.

The layers of docs/architecture.md, top to bottom. A module may import from its own folder and
from any layer below its own; folders of one layer may use each other, but not both ways.
Every import counts, those inside functions too: a deferred import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Folder of src/thawkit/ -> its layer (higher imports lower). Modules at the top level of
# thawkit/ (seeding, atomic, console, ...) are the foundation, layer 0, except the console
# script, which is the entry above everything.
ENTRY_MODULES = {"thawkit.cli": 7}
LAYERS = {
    "run": 6,
    "inference": 5,
    "audit": 5,
    "reporting": 5,
    "finetune": 4,
    "transfer": 3,
    "data": 2,
    "models": 2,
    "config": 1,
    "conf": 1,
}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((SRC / "thawkit").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports() -> dict[str, list[tuple[str, int]]]:
    """Module -> the thawkit modules it imports, with the line of each import."""
    mods = modules()

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    found: dict[str, list[tuple[str, int]]] = {}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        edges = []
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_package else mod.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from thawkit.models import batchnorm` imports the module models.batchnorm.
                names = [f"{base}.{a.name}" for a in node.names]
            for name in names:
                target = resolve(name)
                if target and target != mod and target.startswith("thawkit"):
                    edges.append((target, node.lineno))
        found[mod] = edges
    return found


def folder(mod: str) -> str | None:
    """The folder of src/thawkit/ a module is in; None for the top-level modules."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS) else None


def layer(mod: str) -> int:
    if mod in ENTRY_MODULES:
        return ENTRY_MODULES[mod]
    return LAYERS[folder(mod)] if folder(mod) else 0


# Modules allowed to import upwards, each with the reason (docs/architecture.md, "Layering").
UPWARD_ALLOWED = {
    "thawkit.config.checks": "checks a config against what it configures (backbone names, the "
    "backbone's layer-group count) before any data is read; only the run entry calls it",
}


def test_the_allowed_exceptions_still_exist() -> None:
    """An exception that is no longer needed is removed, so the list only shrinks."""
    mods = modules()
    gone = [m for m in UPWARD_ALLOWED if m not in mods]
    assert not gone, f"UPWARD_ALLOWED names modules that no longer exist: {gone}"


def test_every_folder_has_a_layer() -> None:
    folders = {p.name for p in (SRC / "thawkit").iterdir() if p.is_dir() and p.name in LAYERS}
    unplaced = {
        p.name
        for p in (SRC / "thawkit").iterdir()
        if p.is_dir() and p.name != "__pycache__" and p.name not in LAYERS
    }
    assert not unplaced, f"src/thawkit/{sorted(unplaced)}: give each a layer in LAYERS"
    assert folders, "no folders found in src/thawkit/"


def test_no_import_runs_upwards() -> None:
    upward = []
    for mod, edges in imports().items():
        if mod in UPWARD_ALLOWED:
            continue
        for target, line in edges:
            if folder(target) != folder(mod) and layer(target) > layer(mod):
                upward.append(
                    f"{mod} (line {line}) imports {target}: layer {layer(target)} is above "
                    f"{layer(mod)}"
                )
    assert not upward, "imports that run upwards (move the shared piece down):\n" + "\n".join(
        sorted(set(upward))
    )


def test_folders_of_one_layer_do_not_use_each_other_both_ways() -> None:
    uses: dict[str, set[str]] = defaultdict(set)
    for mod, edges in imports().items():
        for target, _ in edges:
            a, b = folder(mod), folder(target)
            if a and b and a != b and layer(mod) == layer(target):
                uses[a].add(b)
    both = sorted({tuple(sorted((a, b))) for a in uses for b in uses[a] if a in uses.get(b, ())})
    assert not both, f"folders that import each other: {both}"


def circles(graph: dict[str, list[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_circles_finds_a_circle() -> None:
    assert circles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert circles({"a": ["b"], "b": []}) == []


def test_no_import_circle() -> None:
    graph = {mod: [t for t, _ in edges] for mod, edges in imports().items()}
    found = circles(graph)
    assert not found, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in found)
