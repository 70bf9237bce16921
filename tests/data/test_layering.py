"""The data package imports only what lies below it (docs/architecture.md): no upward import."""

from __future__ import annotations

import ast
from pathlib import Path

import thawkit.data

# What data may use: itself, models, config, and the foundation modules at the top level.
ALLOWED = ("thawkit.data", "thawkit.models", "thawkit.config", "thawkit.seeding",
           "thawkit.atomic", "thawkit.console", "thawkit.compat", "thawkit.textio")  # fmt: skip


def _thawkit_imports(path: Path) -> list[str]:
    """Every `thawkit...` module that `path` imports, at module level or inside functions."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [a.name for a in node.names]
    return [n for n in names if n == "thawkit" or n.startswith("thawkit.")]


def test_data_imports_nothing_above_it() -> None:
    upward = {
        f"{path.name}: {name}"
        for path in Path(thawkit.data.__file__).parent.glob("*.py")
        for name in _thawkit_imports(path)
        if not any(name == a or name.startswith(a + ".") for a in ALLOWED)
    }
    assert not upward, f"data/ imports from above it: {sorted(upward)}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from thawkit.reporting.plots import new_figure\n")
    assert _thawkit_imports(module) == ["thawkit.reporting.plots"]
