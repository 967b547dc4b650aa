"""The package installs without `-e` under one name: its wheel carries every module (actors/ and pipelines/ as
`ttsearch.actors` and `ttsearch.pipelines`, no bare top-level package), the shipped configs and MATH-500; an installed
copy finds them with no source tree around, and the same imports work in a source tree, where actors/ and
pipelines/ sit beside the package. (The third place code runs, the workers of `ray job submit --working-dir .`, is a
source tree too: `tests/integration/test_sweep.py` submits a job whose workers import the actors.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("ttsearch", "actors", "pipelines")
SOURCES = ("pyproject.toml", "README.md", *PACKAGES, "compat", "conf", "data")


OLD_SERVE_PATH = """
import json, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from pipelines.serve import build_app
print(json.dumps({"builder": build_app.__module__, "warnings": [str(w.message) for w in caught
                  if issubclass(w.category, DeprecationWarning) and "pipelines" in str(w.message)]}))
"""
"""A Serve config's old import path, `pipelines.serve:build_app`: it must still load, with a deprecation warning."""
IMPORTS = """
import json, ttsearch, ttsearch.actors.generator, ttsearch.actors.verifier, ttsearch.pipelines.sweep
print(json.dumps({"package": ttsearch.__file__, "actors": ttsearch.actors.generator.__file__,
                  "pipelines": ttsearch.pipelines.sweep.__file__}))
"""
"""The imports every replica and command makes, and where each module came from."""


def installed_path(source: Path) -> str:
    """Where a source file lands in the wheel: actors/ and pipelines/ inside the package."""
    return f"ttsearch/{source.as_posix()}" if source.parts[0] in ("actors", "pipelines") else source.as_posix()


def imported_from(cwd: Path, env: dict[str, str], script: str = IMPORTS) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def pip(*args: str) -> None:
    """Offline pip in this interpreter; its output only on failure."""
    done = subprocess.run([sys.executable, "-m", "pip", *args, "--no-index", "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built from a copy of the tree, since a build writes build/ and *.egg-info."""
    work = tmp_path_factory.mktemp("wheel")
    (work / "src").mkdir()
    for name in SOURCES:
        source, copy = ROOT / name, work / "src" / name
        if source.is_dir():
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, copy)
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"), str(work / "src"))
    [built] = (work / "dist").glob("ttsearch-*.whl")
    return built


def test_the_wheel_holds_every_module_the_configs_and_the_dataset(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {
        installed_path(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*.py")
    }
    assert modules - names == set(), "a package missing from [tool.setuptools] packages in pyproject.toml"
    top_level = {name.split("/")[0] for name in names if name.endswith(".py")}
    assert top_level == {"ttsearch", "pipelines"}, "one installed name, and the deprecated shim"
    assert {name for name in names if name.startswith("pipelines/")} == {"pipelines/__init__.py", "pipelines/serve.py"}
    configs = {f"ttsearch/conf/{path.name}" for path in (ROOT / "conf").glob("*.yaml")}
    assert {"ttsearch/conf/main.yaml", "ttsearch/conf/gpu.yaml"} <= configs <= names
    assert "ttsearch/datasets/math500.jsonl" in names


def test_an_installed_wheel_finds_its_configs_and_dataset_outside_the_source_tree(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel))
    elsewhere = tmp_path / "elsewhere"  # no conf/ or data/ here: `conf/main.yaml` is the shipped one
    elsewhere.mkdir()
    script = """
import json, ttsearch
from ttsearch.config import CONF_DIR, load_config
from ttsearch.sweep.data import load_problems
cfg = load_config(["conf/main.yaml", "conf/revision_prompt.yaml"], ["data.limit=2"])
rows = load_problems(cfg.data.path, cfg.data.limit, cfg.data.offset, cfg.data.levels)
print(json.dumps({"package": ttsearch.__file__, "conf": str(CONF_DIR), "data": cfg.data.path, "rows": len(rows)}))
"""
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.splitlines()[-1])
    package = site / "ttsearch"
    assert Path(found["package"]).parent == package, "imported the installed copy, not the source tree"
    assert Path(found["conf"]) == package / "conf"
    assert Path(found["data"]) == package / "datasets" / "math500.jsonl" and found["rows"] == 2


def test_the_installed_wheel_imports_actors_and_pipelines_inside_the_package(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel))
    found = imported_from(tmp_path, {**os.environ, "PYTHONPATH": str(site)})
    package = site / "ttsearch"
    assert Path(found["actors"]) == package / "actors" / "generator.py"
    assert Path(found["pipelines"]) == package / "pipelines" / "sweep.py"
    old = imported_from(tmp_path, {**os.environ, "PYTHONPATH": str(site)}, OLD_SERVE_PATH)
    assert old["builder"] == "ttsearch.pipelines.serve" and len(old["warnings"]) == 1


def test_a_source_tree_imports_actors_and_pipelines_beside_the_package(tmp_path: Path) -> None:
    """A copy of the tree (as `ray job submit --working-dir .` unpacks it), on a machine that has another checkout
    installed in editable mode: the copy's own folders are the ones imported."""
    tree = tmp_path / "tree"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, tree / name, ignore=shutil.ignore_patterns("__pycache__"))
    found = imported_from(tree, dict(os.environ))
    assert Path(found["package"]) == tree / "ttsearch" / "__init__.py"
    assert Path(found["actors"]) == tree / "actors" / "generator.py"
    assert Path(found["pipelines"]) == tree / "pipelines" / "sweep.py"
    old = imported_from(tree, dict(os.environ), OLD_SERVE_PATH)
    assert old["builder"] == "pipelines.serve" and len(old["warnings"]) == 1, "the old path, from the tree's folder"
