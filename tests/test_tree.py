"""The shape of the source tree, where ruff has no rule: modules under about 600 lines, and no module imports
another module's private (``_underscore``) names."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "streamer", "simulator", "schemas")
MAX_MODULE_LINES = 600

OVERSIZED: frozenset[str] = frozenset()
"""Modules over the limit today, being split (issue 15). The list only shrinks: a module leaves it when it is
split (the test says so), none joins it, and it is empty at the end of the renovation."""


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py") if "__pycache__" not in p.parts)


def _n_lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def test_modules_are_under_600_lines():
    modules = _modules()
    assert modules
    too_long = {str(p.relative_to(REPO)): _n_lines(p) for p in modules}
    too_long = {name: n for name, n in too_long.items() if n > MAX_MODULE_LINES and name not in OVERSIZED}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines (split them by job): {too_long}"


def test_the_oversized_list_only_shrinks():
    stale = sorted(name for name in OVERSIZED
                   if not (REPO / name).is_file() or _n_lines(REPO / name) <= MAX_MODULE_LINES)
    assert not stale, f"split or gone, remove from tests/test_tree.py OVERSIZED: {stale}"


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{path.relative_to(REPO)}:{node.lineno}: from {'.' * node.level}{node.module or ''} import {alias.name}"
            for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
            for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]


def test_no_module_imports_private_names():
    found = [line for p in _modules() for line in _private_imports(p)]
    assert not found, "private names imported from another module (make them public or move them):\n" \
        + "\n".join(found)
