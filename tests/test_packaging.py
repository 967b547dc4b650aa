"""The package installs without `-e`: its wheel carries every module, the shipped configs and MATH-500,
and an installed copy finds them with no source tree around (pyproject.toml maps conf/ and data/ into
the package)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ttsearch", "actors", "pipelines")
SOURCES = ("pyproject.toml", "README.md", *PACKAGES, "conf", "data")


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
    modules = {path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*.py")}
    assert modules - names == set(), "a package missing from [tool.setuptools] packages in pyproject.toml"
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
from ttsearch.data import load_problems
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
