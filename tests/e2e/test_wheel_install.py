"""The README's first command on a fresh machine: Blink's wheel, installed into a new virtual environment in an
empty folder (no checkout, no sibling ``shared/``), simulates a tiny night, processes it and reports.

The wheel is built from a copy of the checkout's files (what a clone has, plus uncommitted work), so the
checkout gets no ``build/`` folder. The virtual environment is made without the system's site-packages and
sees them through a ``.pth`` file of plain path lines: Python adds those folders to ``sys.path`` without running
their own ``.pth`` files, so the editable install's finder (``__editable__.blink-*.pth``, which maps ``pipeline``
and ``streamer`` to this checkout) never runs, while numpy, astropy and the other heavy dependencies need not
be downloaded again. The wheel itself is installed with ``--no-deps``. About a minute in all on two cores: the
wheel build (an isolated build environment), then one CCD of one epoch.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import site
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import fastavro
import pytest

from pipeline.reliability import DEFAULT_MIN_RELIABILITY

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "streamer", "simulator", "schemas")
DECAM_DATA = "pipeline/decam/data"
TINY_NIGHT = ["--ccds", "35", "--epochs", "1"]
"""One central CCD of one epoch: the README's night is three of each."""

pytestmark = pytest.mark.timeout(1200)


def _checkout_files() -> list[str]:
    """The checkout's files as a clone has them, plus untracked files that git does not ignore."""
    try:
        out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an unpacked archive)
        skipped = {".git", "build", "blink-data", "__pycache__", ".venv", ".cache", ".run"}
        relative = [p.relative_to(REPO) for p in REPO.rglob("*") if p.is_file()]
        return [str(p) for p in relative
                if not skipped & set(p.parts) and not any(part.endswith(".egg-info") for part in p.parts)]
    return [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, f"{cmd} exited {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    return result


def _fresh_environment(venv: Path) -> dict[str, str]:
    """The environment of a new user's shell with the venv activated: no PYTHONPATH, no BLINK_* setting."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BLINK_", "PYTHON", "VIRTUAL_ENV", "CONDA_PREFIX", "PYTEST_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(venv)
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Blink's wheel, built from a copy of the checkout."""
    work = tmp_path_factory.mktemp("wheel-build")
    source = work / "src"
    for name in _checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    _run([sys.executable, "-m", "build", "--wheel", "--outdir", str(work / "dist"), str(source)], cwd=work)
    (built,) = (work / "dist").glob("blink-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A virtual environment with the wheel installed and the system's packages visible as plain paths."""
    venv = tmp_path_factory.mktemp("venv") / "blink-env"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--force-reinstall", "--disable-pip-version-check", str(wheel)])
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        env=_fresh_environment(venv)).stdout.strip())
    system = [*site.getsitepackages(), site.getusersitepackages()]
    system = [p for p in dict.fromkeys(system) if Path(p).is_dir() and not Path(p).resolve().is_relative_to(REPO)]
    # Path lines only (no "import" line): their folders' own .pth files, the editable finder's, are not run.
    (purelib / "zz_system_site_packages.pth").write_text("".join(f"{p}\n" for p in system))
    return venv


@pytest.fixture()
def empty_folder(tmp_path) -> Path:
    folder = tmp_path / "fresh"
    folder.mkdir()
    return folder


def test_wheel_ships_the_package_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = [name for name in _checkout_files() if name.startswith(PACKAGES) and not name.endswith(".py")]
    missing = sorted(set(data) - names)
    assert not missing, f"files of the packages missing from the wheel: {missing}"
    for table in ("segmentfile.txt", "chipcenters.txt", "DECam_xtalk_20130606.txt", "README.md"):
        assert f"{DECAM_DATA}/{table}" in names, f"{DECAM_DATA}/{table} is not package data"
    assert any(name.startswith(f"{DECAM_DATA}/defects/") and name.endswith(".ecsv") for name in names)


def test_blink_imports_from_the_venv_only(venv, empty_folder):
    probe = ("import json, sys, pipeline, schemas, simulator, streamer, streamer.cli\n"
             "print(json.dumps({'files': [m.__file__ for m in (pipeline, schemas, simulator, streamer)],\n"
             "                  'meta_path': [repr(f) for f in sys.meta_path], 'path': sys.path}))")
    found = json.loads(_run([str(venv / "bin" / "python"), "-c", probe], cwd=empty_folder,
                            env=_fresh_environment(venv)).stdout)
    for file in found["files"]:
        assert Path(file).resolve().is_relative_to(venv.resolve()), f"{file} is not the venv's"
    assert not [f for f in found["meta_path"] if "editable" in f.lower()], found["meta_path"]
    assert not [p for p in found["path"] if p and Path(p).resolve().is_relative_to(REPO)], found["path"]


def _runtime_strings(path: Path) -> list[str]:
    """The string constants of a module that are not docstrings (comments are not in the tree)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


def test_installed_code_reads_nothing_beside_a_checkout(venv):
    purelib = next((venv / "lib").glob("python3*/site-packages"))
    modules = [p for package in PACKAGES for p in (purelib / package).rglob("*.py")]
    assert modules
    found = [f"{p.relative_to(purelib)}: {s!r}" for p in modules for s in _runtime_strings(p)
             if "shared/reference" in s or "BLINK_SHARED" in s or s.strip("./") == "shared"]
    assert not found, "installed code looks for the checkout's sibling shared/ folder:\n" + "\n".join(found)


def test_readme_first_command_in_an_empty_folder(venv, empty_folder):
    """``blink run --simulate`` (the README's first command after the install) on a tiny night."""
    result = subprocess.run([str(venv / "bin" / "blink"), "run", "--simulate", *TINY_NIGHT], cwd=empty_folder,
                            env=_fresh_environment(venv), capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}"
    out = empty_folder / "blink-data" / "out"
    alert_files = sorted((out / "alerts").glob("*.avro"))
    assert [p.name for p in alert_files] == ["01100000_35.avro"]
    with alert_files[0].open("rb") as f:
        n_alerts = sum(1 for _ in fastavro.reader(f))
    with sqlite3.connect(out / "apdb.sqlite") as db:
        n_sources = db.execute("SELECT count(*) FROM DiaSource").fetchone()[0]
        n_objects = db.execute("SELECT count(*) FROM DiaObject").fetchone()[0]
        n_distributed = db.execute("SELECT count(*) FROM DiaSource WHERE reliability >= ?",
                                   (DEFAULT_MIN_RELIABILITY,)).fetchone()[0]
    # A fresh environment has the default distribution threshold: DiaSources below it are stored, not alerted
    # (the rest of the suite distributes every DiaSource: tests/conftest.py).
    assert n_alerts == n_distributed > 0 and n_sources >= n_distributed and n_objects > 0
    assert "Blink against the simulator's truth" in result.stdout
    assert "matched transients" in result.stdout
    assert (out / "truth_report.png").stat().st_size > 0
