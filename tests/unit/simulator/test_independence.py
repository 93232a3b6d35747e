"""The simulator is its own world: no module of ``simulator/`` imports the pipeline or the shell, and the
pipeline imports nothing of the simulator. The check is static (the syntax tree of every module), so an
import inside a function counts as well as one at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def _imported_roots(path: Path) -> set[str]:
    """Top-level packages a module imports (absolute imports; relative ones stay in its package)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and (
                    (isinstance(node.func, ast.Name) and node.func.id == "__import__")
                    or (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")):
            roots.add(node.args[0].value.split(".")[0])
    return roots


@pytest.mark.parametrize(("package", "forbidden"), [("simulator", {"pipeline", "streamer"}),
                                                     ("pipeline", {"simulator"})])
def test_no_import_across_the_wall(package, forbidden):
    modules = sorted((REPO / package).rglob("*.py"))
    assert len(modules) > 5
    found = [f"{p.relative_to(REPO)}: imports {sorted(_imported_roots(p) & forbidden)}" for p in modules
             if _imported_roots(p) & forbidden]
    assert not found, "\n".join(found)


def test_the_check_sees_every_kind_of_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import pipeline.psf\nfrom streamer import cli\ndef f():\n    from pipeline import ccd\n"
                      "    return __import__('streamer.events')\nfrom . import optics\n")
    assert _imported_roots(module) == {"pipeline", "streamer"}
