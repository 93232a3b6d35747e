"""``pipeline/`` is pure science: it opens no file, reads no environment variable and imports no I/O shell.

Files, package data, the environment, Kafka, Cassandra and SQLite belong to ``streamer/``, which reads them and
hands the pipeline data (camera tables, crosstalk, defects, pixels). The check is static: it walks the syntax
tree of every module of ``pipeline/`` and names each offending line.
"""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[3] / "pipeline"

FORBIDDEN_IMPORTS = ("streamer", "simulator", "confluent_kafka", "cassandra", "sqlite3", "importlib.resources",
                     "pkgutil", "subprocess", "socket", "shutil", "glob")
"""Modules (and their submodules) the pipeline must not import: the shell, servers and databases, the file
system and package data."""

FILE_METHODS = frozenset({
    "open",  # fits.open, Path.open, io.open, gzip.open, builtins.open
    "read", "write", "writeto",  # Table.read / Table.write, HDUList.writeto, file objects
    "read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "glob", "rglob", "exists", "is_file",
    "is_dir", "mkdir", "unlink", "stat",  # pathlib
    "getdata", "getheader", "getval",  # astropy.io.fits convenience readers
    "load", "save", "savez", "savez_compressed", "savetxt", "loadtxt", "genfromtxt", "fromfile", "tofile",
    "memmap",  # numpy files
})
"""Method names whose call reads or writes a file (called on any object, ``fits.open(...)`` or
``Table.read(...)`` alike)."""

ENVIRONMENT = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})
"""Attributes of ``os`` that read or change the environment."""


def _forbidden_module(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in FORBIDDEN_IMPORTS)


def _os_names(tree: ast.Module) -> set[str]:
    """The names that ``os`` is bound to in a module (``import os``, ``import os as o``)."""
    return {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
            for alias in node.names if alias.name == "os"} | {"os"}


def _import_violations(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [f"import {alias.name}" for alias in node.names if _forbidden_module(alias.name)]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        if _forbidden_module(node.module):
            return [f"from {node.module} import ..."]
        if node.module == "os":
            return [f"from os import {alias.name}" for alias in node.names if alias.name in ENVIRONMENT]
        qualified = [f"{node.module}.{alias.name}" for alias in node.names]
        return [f"from {node.module} import {name.rpartition('.')[2]}" for name in qualified
                if _forbidden_module(name)]
    return []


def _call_violations(node: ast.Call) -> list[str]:
    func = node.func
    if isinstance(func, ast.Name) and func.id == "open":
        return ["open(...)"]
    if isinstance(func, ast.Attribute) and func.attr in FILE_METHODS:
        return [f"{ast.unparse(func)}(...)"]
    dynamic_import = (isinstance(func, ast.Name) and func.id == "__import__") or (
        isinstance(func, ast.Attribute) and func.attr == "import_module")
    if dynamic_import and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str) and _forbidden_module(node.args[0].value):
        return [f"{ast.unparse(node)}"]
    return []


def violations(path: Path, root: Path = PIPELINE.parent) -> list[str]:
    """Every impure line of one module, as ``path:line: what`` (the path relative to ``root``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    os_names = _os_names(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        what = _import_violations(node)
        if isinstance(node, ast.Call):
            what += _call_violations(node)
        if isinstance(node, ast.Attribute) and node.attr in ENVIRONMENT and isinstance(node.value, ast.Name) \
                and node.value.id in os_names:
            what.append(f"{node.value.id}.{node.attr}")
        found += [(node.lineno, w) for w in what]
    relative = path.relative_to(root)
    return [f"{relative}:{line}: {what}" for line, what in sorted(set(found))]


def test_pipeline_opens_no_file_reads_no_environment_imports_no_shell():
    modules = sorted(PIPELINE.rglob("*.py"))
    assert modules, f"no module under {PIPELINE}"
    found = [v for module in modules for v in violations(module)]
    assert not found, "pipeline/ must stay pure (the shell reads files and settings):\n" + "\n".join(found)


def test_the_check_sees_each_kind_of_violation(tmp_path):
    """The walker itself: every forbidden form is reported, pure look-alikes are not."""
    source = "\n".join([
        "import os as o",
        "import sqlite3",
        "from streamer.decam import camera_tables",
        "from confluent_kafka import Producer",
        "import cassandra.cluster",
        "from astropy.io import fits",
        "from astropy.table import Table",
        "from importlib import resources",
        "from os import environ",
        "x = open('a')",
        "h = fits.open('b')",
        "t = Table.read('c.ecsv')",
        "s = Path('d').read_text()",
        "f = Path('e').open()",
        "v = o.environ['BLINK']",
        "w = o.getenv('BLINK')",
        "m = __import__('streamer.cli')",
        "ok = (fits.Card('A', 1), Table(rows=[]), 'a'.join([]), o.path.basename('x'), fits.ImageHDU())",
    ])
    path = tmp_path / "sample.py"
    path.write_text(source)
    found = violations(path, root=tmp_path)
    lines = sorted({int(v.split(":")[1]) for v in found})
    assert lines == list(range(2, 6)) + [8, 9] + list(range(10, 18)), found
