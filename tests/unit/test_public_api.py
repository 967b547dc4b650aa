"""The Python API (`ttsearch/__init__.py`): importing it is cheap, every public name resolves, and both documented
examples run as written: the module docstring's doctest, and docs/getting-started.md's "Python API" block on a tiny
sweep's results (no Ray, no model)."""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import ttsearch
from tests.fixtures import QUESTIONS, beam_rows, best_of_n_rows
from ttsearch.sweep.results import RESULT_SCHEMA

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("ray", "vllm", "torch", "transformers", "pandas", "pyarrow", "matplotlib")


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after `code` (run from the source tree, so this tree's
    `ttsearch` is the one imported)."""
    script = f"import json, sys\n{code}\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_import_ttsearch_loads_no_ray_model_or_pandas():
    assert loaded_after("import ttsearch") == []
    assert loaded_after("import ttsearch; ttsearch.load_config; ttsearch.StrategySpec") == []
    assert "ray" not in loaded_after("import ttsearch; ttsearch.build_report; ttsearch.load_results")


def test_every_public_name_resolves_to_the_librarys_own():
    for name in ttsearch.__all__:
        value = getattr(ttsearch, name)
        if name != "__version__":
            assert value.__module__.startswith("ttsearch."), name
    assert ttsearch.build_report.__module__ == "ttsearch.analysis.report"
    assert ttsearch.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert set(ttsearch.__all__) <= set(dir(ttsearch))
    with pytest.raises(AttributeError, match="no attribute 'run_everything'"):
        ttsearch.run_everything  # noqa: B018


def test_the_docstring_example_runs():
    result = doctest.testmod(ttsearch, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 5 and result.failed == 0


def documented_example() -> str:
    """The first Python block of docs/getting-started.md's "Python API" section."""
    section = (ROOT / "docs" / "getting-started.md").read_text().split("\n## Python API\n", 1)[1].split("\n## ")[0]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


def test_the_getting_started_example_runs_on_a_sweeps_results(tmp_path, monkeypatch):
    rows = [row for uid in QUESTIONS[:8] for row in best_of_n_rows(uid) + beam_rows(uid)]
    (tmp_path / "runs" / "main" / "results").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA), tmp_path / "runs/main/results/0.parquet")
    monkeypatch.chdir(tmp_path)  # where the example's relative runs/main is
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(documented_example(), "docs/getting-started.md", "exec"), {})
    assert printed.getvalue().startswith("[4, 16] ['best_of_n', 'beam', 'revisions'] {'beam_width': 4}\n")
    last = printed.getvalue().splitlines()[-1]
    assert last == f"report written to {tmp_path / 'runs/main/report/report.md'}"
    assert "# Sweep report: main" in (tmp_path / "runs/main/report/report.md").read_text()
