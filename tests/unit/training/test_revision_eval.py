"""Does revising help: per-attempt pass@1 and revisions vs best-of-N on synthetic rows with hand-computed values,
the figure, and `ttsearch eval-revision`'s checks, sweeps and files with the sweep itself scripted (no Ray)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict

import pandas as pd
import pyarrow as pa
import pytest
import ttsearch.pipelines.eval_revision
from ttsearch.pipelines.eval_revision import run_eval_revision

from tests.fixtures import result_row
from ttsearch.analysis.revisions import attempt_accuracy, chain_length, plot_attempt_curves
from ttsearch.config import CONF_DIR, ConfigError, StrategySpec, load_config
from ttsearch.search.strategies import strategy_config, strategy_label
from ttsearch.sweep.jobs import RowCounts
from ttsearch.sweep.results import RESULT_SCHEMA
from ttsearch.training.revision_eval import format_revision_eval, model_sweeps, revisions_vs_best_of_n

T2 = StrategySpec.of(name="revisions", revision_length=2, revision_window=1, selections=["majority", "naive"])
P1 = StrategySpec.of(name="revisions", revision_chains=1, revision_window=2, selections=["majority"])
BEST_OF_N = StrategySpec.of(name="best_of_n", selections=["majority", "naive", "weighted"])


def row(
    uid: str, spec: StrategySpec, budget: int, flags: list[bool | None], picked: dict[str, bool | None], **extra
) -> list[dict]:
    """A job's rows, one per selection in `picked` (selection → correct), sharing the candidates `flags`."""
    return [
        result_row(
            uid,
            spec.name,
            strategy_label(spec, selection),
            budget,
            0,
            flags,
            correct,
            selection=selection,
            strategy_config=strategy_config(spec),
            settings=json.dumps(spec.filled_settings()),
            **extra,
        )
        for selection, correct in picked.items()
    ]


def attempt_rows() -> list[dict]:
    """Two chains of 2 attempts (budget 4) on q0 and q1, one chain of 3 (P=1, budget 3) on q0; an error row, a
    best-of-N job and the second selection of every revisions job must not count."""
    rows = row("q0", T2, 4, [False, True, False, True], {"majority": True, "naive": False})
    rows += row("q1", T2, 4, [False, None, True, False], {"majority": False, "naive": False})  # one ungraded
    rows += row("q0", P1, 3, [False, False, True], {"majority": True})
    rows += row("q1", P1, 3, [True, True, True], {"majority": True}, error="RuntimeError: a strategy bug")
    rows += row("q1", BEST_OF_N, 4, [True, True, True, True], {"majority": True})
    return rows


def points(frame: pd.DataFrame) -> dict[tuple[str, int, int], tuple]:
    return {
        (p.strategy_config, p.budget, p.attempt): (
            round(p.mean, 4),
            None if math.isnan(p.se) else round(p.se, 4),
            p.candidates,
            p.questions,
        )
        for p in frame.itertuples()
    }


@pytest.mark.parametrize(
    "spec, budget, length",
    [
        (T2, 4, 2),
        (T2, 8, 2),
        (P1, 3, 3),
        (P1, 8, 8),
        (StrategySpec.of(name="revisions", revision_chains=2), 8, 4),
        (StrategySpec.of(name="revisions", revision_length=4, aggregation="min"), 8, 4),
    ],
)
def test_chain_length_is_read_from_the_settings_column(spec, budget, length):
    assert chain_length(json.dumps(spec.filled_settings()), budget) == length


@pytest.mark.parametrize("as_table", [False, True])
def test_attempt_accuracy_by_hand(as_table):
    rows = attempt_rows()
    data = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA) if as_table else pd.DataFrame(rows)
    t2, p1 = strategy_config(T2), strategy_config(P1)
    assert points(attempt_accuracy(data)) == {
        # attempt 1 of q0's chains F, F; of q1's F, T: 1 of 4 right; per question 0 and ½: s.e. 0.354 / √2 = ¼
        (t2, 4, 1): (25.0, 25.0, 4, 2),
        # attempt 2: q0 T, T; q1 ungraded (left out), F: 2 of 3 right; per question 1 and 0: s.e. 0.707 / √2 = ½
        (t2, 4, 2): (round(200 / 3, 4), 50.0, 3, 2),
        # one chain of 3 on q0 (q1's is an error row): one question, no standard error
        (p1, 3, 1): (0.0, None, 1, 1),
        (p1, 3, 2): (0.0, None, 1, 1),
        (p1, 3, 3): (100.0, None, 1, 1),
    }


def test_no_revisions_rows_give_no_points():
    assert attempt_accuracy(pd.DataFrame(row("q0", BEST_OF_N, 4, [True] * 4, {"majority": True}))).empty


def comparison_rows() -> list[dict]:
    rows = []
    for uid, revisions, best in (
        ("q0", ([False, True, False, True], True, False), ([True, False, False, False], True, True)),
        ("q1", ([False, False, False, False], False, False), ([True, True, False, False], True, False)),
        ("q2", ([None, True, False, False], None, True), ([False, False, False, False], False, False)),
    ):  # (candidates, majority right, naive right)
        rows += row(uid, T2, 4, revisions[0], {"majority": revisions[1], "naive": revisions[2]})
        rows += row(uid, BEST_OF_N, 4, best[0], {"majority": best[1], "naive": best[2], "weighted": True})
        rows += row(uid, BEST_OF_N, 8, [True] * 8, {"majority": True})  # no revisions at budget 8
    return rows


def test_revisions_vs_best_of_n_at_equal_budget_per_selection():
    table = revisions_vs_best_of_n(pa.Table.from_pylist(comparison_rows(), schema=RESULT_SCHEMA))
    third = 100 / 3  # s.e. of three question values with one 1: std 0.577 / √3 = ⅓
    got = {
        (r.selection, r.strategy): (
            round(r.accuracy, 4),
            round(r.accuracy_se, 4),
            round(r.coverage, 4),
            round(r.coverage_se, 4),
            r.questions,
            r.budget,
        )
        for r in table.itertuples()
    }
    coverage = (round(200 / 3, 4), round(third, 4))
    assert got == {  # weighted and budget 8 ran for best-of-N only: left out
        ("majority", "revisions"): (50.0, 50.0, *coverage, 3, 4),  # q2 ungraded: T, F of two
        ("majority", "best_of_n"): (round(200 / 3, 4), round(third, 4), *coverage, 3, 4),
        ("naive", "revisions"): (round(third, 4), round(third, 4), *coverage, 3, 4),
        ("naive", "best_of_n"): (round(third, 4), round(third, 4), *coverage, 3, 4),
    }


def test_the_attempt_figure_is_a_png(tmp_path):
    curves = attempt_accuracy(pd.DataFrame(attempt_rows())).assign(label=lambda f: f["strategy_config"])
    figure = plot_attempt_curves(tmp_path / "curve.png", "pass@1 by attempt", curves)
    data = (tmp_path / "curve.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 5000
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend == list(pd.unique(curves["label"])) and set(legend) == {strategy_config(T2), strategy_config(P1)}
    assert [tick for tick in figure.axes[0].get_xticks()] == [1, 2, 3]


def eval_config(tmp_path, *overrides: str):
    return load_config(
        [CONF_DIR / "revision_prompt.yaml"],
        [
            f"eval_revision.output={tmp_path / 'eval'}",
            "eval_revision.budget=4",
            "eval_revision.revision_length=2",
            "eval_revision.revision_window=1",
            *overrides,
        ],
    )


def test_a_model_that_cannot_be_loaded_is_named_before_anything_starts(tmp_path):
    missing = tmp_path / "runs" / "revision" / "model"
    cfg = eval_config(tmp_path, f"eval_revision.models=[embedded,{missing}]")
    with pytest.raises(ConfigError, match=r"key 'eval_revision.models\[1\]': .* does not exist"):
        run_eval_revision(cfg)
    assert not (tmp_path / "eval").exists()
    missing.mkdir(parents=True)  # an unfinished training run: a directory without a saved model
    with pytest.raises(ConfigError, match=r"key 'eval_revision.models\[1\]': .*\(no config.json"):
        run_eval_revision(cfg)
    (missing / "config.json").write_text("{}")
    assert len(model_sweeps(cfg)) == 2


def test_each_model_gets_its_own_sweep(tmp_path):
    model = tmp_path / "tuned"
    model.mkdir()
    (model / "config.json").write_text("{}")
    base, tuned = model_sweeps(eval_config(tmp_path, f"eval_revision.models=[embedded,{model}]"))
    assert (base.generator.model, tuned.generator.model) == ("embedded", str(model))
    assert base.output_dir == f"{tmp_path / 'eval'}/model-0-embedded"
    assert tuned.output_dir.startswith(f"{tmp_path / 'eval'}/model-1-") and tuned.output_dir.endswith("-tuned")
    for sweep in (base, tuned):
        assert sweep.budgets == [4]
        assert [spec.record() for spec in sweep.strategies] == [
            {
                "name": "revisions",
                "selections": ["majority", "naive"],
                "aggregation": "last",
                "revision_length": 2,
                "revision_chains": 0,
                "revision_window": 1,
            },
            {"name": "best_of_n", "selections": ["majority", "naive"], "aggregation": "last"},
        ]
    assert not (tmp_path / "eval").exists()


def test_eval_revision_sweeps_each_model_in_turn_and_writes_its_files(tmp_path, monkeypatch):
    swept = []

    def fake_sweep(sweep):
        swept.append(sweep.generator.model)
        rows = comparison_rows() if sweep.generator.model == "embedded" else attempt_rows()[:4]  # budget 4, T=2
        return pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)

    monkeypatch.setattr(ttsearch.pipelines.eval_revision, "run_sweep", fake_sweep)
    monkeypatch.setattr(
        ttsearch.pipelines.eval_revision, "row_counts", lambda sweep, table: RowCounts(table.num_rows, 1, 0, 2)
    )
    evaluation = run_eval_revision(
        eval_config(tmp_path, "eval_revision.models=[embedded,HuggingFaceTB/SmolLM2-360M]", "verifier.kind=majority")
    )
    report = evaluation.report
    assert swept == ["embedded", "HuggingFaceTB/SmolLM2-360M"]
    out = tmp_path / "eval"
    assert (out / "revision_curve.png").read_bytes().startswith(b"\x89PNG")
    saved = json.loads((out / "eval.json").read_text())
    assert saved == json.loads(json.dumps(asdict(report), allow_nan=False))  # no NaN: valid JSON
    assert saved["models"][0]["rows"] == {"done": len(comparison_rows()), "ungraded": 1, "failed": 0, "missing": 2}
    markdown = (out / "eval.md").read_text()
    assert markdown == format_revision_eval(report)
    assert str(evaluation) == f"{markdown}\n\nwritten to {out}/eval.md, eval.json and revision_curve.png"
    # the base's T=2 attempts: attempt 1 of q0 F, F; q1 F, F; q2 (ungraded), F → 0 of 5; attempt 2: T, T, F, F, T, F
    assert "| embedded (base) | 0.0 ± 0.0 | 50.0 ± 28.9 |" in markdown
    assert "| embedded (base) | majority | 50.0 ± 50.0 | 66.7 ± 33.3 | 66.7 ± 33.3 | 66.7 ± 33.3 |" in markdown
    assert "- embedded (base): attempt 1 0.0 % → attempt 2 50.0 % (+50.0 points, within twice" in markdown
    assert "`naive` selection takes the first candidate" in markdown
    assert "re-run `ttsearch eval-revision`" in markdown
