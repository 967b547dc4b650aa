"""The results store: claiming a run directory, the fingerprint, one filesystem layer for every command,
and the CLI's one-line errors for what a user can fix."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from tests.fixtures import (
    PROBLEM,
    ScriptedGrader,
    beam_rows,
    best_of_n_rows,
    boxed,
    realised_estimates,
    result_row,
)
from ttsearch.analysis.curves import flops_rates
from ttsearch.analysis.policy import POLICY_FILE, POLICY_VERSION
from ttsearch.analysis.report import build_report
from ttsearch.cli import main
from ttsearch.config import StrategySpec, load_config
from ttsearch.search.outcomes import JobOutcome, ModelSizes, Usage
from ttsearch.sweep.jobs import outcome_rows
from ttsearch.sweep.results import (
    MANIFEST,
    RESULT_SCHEMA,
    ResultsError,
    RunStore,
    load_results,
    shard_file,
    sweep_fingerprint,
)

PROBLEMS = [
    {"unique_id": "a", "problem": "1 + 1?", "answer": "2"},
    {"unique_id": "b", "problem": "2 + 2?", "answer": "4"},
]


def rows() -> pa.Table:
    return pa.Table.from_pylist(
        [
            r | {"strategy_config": r["strategy_label"].split("/")[0], "cached_verifier_tokens": 0}
            for uid in ("q00", "q01")
            for r in best_of_n_rows(uid) + beam_rows(uid)
        ],
        schema=RESULT_SCHEMA,
    )


def test_files_written_before_cached_verifier_tokens_read_it_as_0(tmp_path):
    older = rows().drop_columns(["cached_verifier_tokens"])
    for folder in ("results", "partial"):
        (tmp_path / folder).mkdir()
        pq.write_table(older, tmp_path / folder / shard_file(0, 1))
    store = RunStore(tmp_path)
    for table in (store.read_results(), store.read_partial(0, 1)):
        assert table.schema == RESULT_SCHEMA and table["cached_verifier_tokens"].to_pylist() == [0] * older.num_rows
    frame = load_results(tmp_path)
    assert frame["cached_verifier_tokens"].tolist() == [0] * older.num_rows
    assert flops_rates(frame) == flops_rates(older.to_pandas()), "an older frame's costs read the same"


@pytest.mark.parametrize(
    "override",
    [
        "generator.backend=transformers",
        "generator.dtype=float32",
        "generator.max_model_len=1024",
        "verifier.dtype=bfloat16",
        "verifier.max_input_tokens=512",
        "search.temperature=0.5",
    ],
)
def test_fingerprint_covers_what_changes_rows(override):
    assert sweep_fingerprint(load_config(None, [override]), PROBLEMS) != sweep_fingerprint(load_config(), PROBLEMS)


def test_fingerprint_covers_problem_content_not_only_ids():
    edited = [PROBLEMS[0] | {"answer": "3"}, PROBLEMS[1]]
    reworded = [PROBLEMS[0] | {"problem": "1+1?"}, PROBLEMS[1]]
    base = sweep_fingerprint(load_config(), PROBLEMS)["problems"]
    assert len({base, *(sweep_fingerprint(load_config(), p)["problems"] for p in (edited, reworded))}) == 3


def test_claim_checks_the_sweep_and_never_mixes(tmp_path):
    cfg = load_config()
    store = RunStore(tmp_path / "run")
    store.claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    assert store.manifest()["num_problems"] == 2 and store.exists("config.yaml")
    store.claim(sweep_fingerprint(cfg, PROBLEMS), cfg)  # the same sweep again: resumes
    before = (tmp_path / "run" / MANIFEST).read_text()
    other = load_config(None, ["budgets=[8]", "generator.dtype=float32"])
    with pytest.raises(ResultsError, match=r"different sweep \(it differs in: budgets, generator\)"):
        store.claim(sweep_fingerprint(other, PROBLEMS), other)
    assert (tmp_path / "run" / MANIFEST).read_text() == before
    (tmp_path / "foreign" / "results").mkdir(parents=True)
    with pytest.raises(ResultsError, match="not a sweep of ours"):
        RunStore(tmp_path / "foreign").claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    assert not (tmp_path / "foreign" / MANIFEST).exists()


def test_a_sweep_claimed_before_a_strategy_setting_existed_is_the_same_sweep_after(tmp_path):
    cfg = load_config(None, ["strategies=[{name: beam, beam_width: 2}]"])
    store = RunStore(tmp_path / "run")
    store.claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    older = store.manifest()
    # As written before the strategy registry and before early stopping existed: every strategy's settings in
    # every entry, and no early_stop_* keys.
    older["strategies"] = [
        {"name": "beam", "selections": ["weighted"], "aggregation": "last", "beam_width": 2, "lookahead": 0}
        | {"revision_length": 4, "revision_chains": 0, "revision_window": 4}
        | {"rebase_temperature": 0.2, "particle_temperature": 1.0}
    ]
    (tmp_path / "run" / MANIFEST).write_text(json.dumps(older))
    store.claim(sweep_fingerprint(cfg, PROBLEMS), cfg)  # resumes
    other = load_config(None, ["strategies=[{name: beam, beam_width: 4}]"])
    with pytest.raises(ResultsError, match=r"different sweep \(it differs in: strategies\)"):
        store.claim(sweep_fingerprint(other, PROBLEMS), other)


def test_a_file_uri_reads_what_a_path_wrote(tmp_path):
    by_path, by_uri = RunStore(tmp_path), RunStore(f"file://{tmp_path}")
    by_path.write_shard(0, 2, rows())
    by_uri.write_partial(1, 2, rows().slice(0, 3))
    assert by_uri.finished_shards(2) == {0} and by_uri.read_results().equals(rows())
    assert by_uri.read_results(include_partial=True).num_rows == rows().num_rows + 3
    assert load_results(f"file://{tmp_path}").shape[0] == rows().num_rows
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "shard-00000-of-00002.parquet",
        "shard-00001-of-00002.parquet",
    ], "no temporary files left"


def test_flops_bill_only_the_tokens_each_model_computed():
    """One rule per model: generator FLOPs = 2 × parameters × (generated + prompt − cached prompt tokens), verifier
    FLOPs = 2 × parameters × (verifier − cached verifier tokens); majority rows are billed no verifier at all."""
    usage = Usage(
        generated_tokens=30,
        prompt_tokens=20,
        cached_prompt_tokens=5,
        samples=3,
        verifier_tokens=40,
        cached_verifier_tokens=25,
    )
    sizes = ModelSizes(generator=100, verifier=10)
    assert sizes.flops(usage) == (2 * 100 * (30 + 20 - 5), 2 * 10 * (40 - 25))
    spec = StrategySpec.of(name="best_of_n", selections=["weighted", "majority"])
    outcome = JobOutcome((PROBLEM, spec, 3, 0), [boxed("5", 0.9, 10), boxed("4", 0.1, 12)], usage, wall_s=1.0)
    rows = {row["selection"]: row for row in outcome_rows(outcome, ScriptedGrader({"5": True, "4": False}), sizes)}
    billing = {
        selection: [row[c] for c in ("verifier_tokens", "cached_verifier_tokens", "verifier_flops")]
        for selection, row in rows.items()
    }
    assert billing == {"weighted": [40, 25, 300], "majority": [0, 0, 0]}
    table = pa.Table.from_pylist(list(rows.values()), schema=RESULT_SCHEMA)  # the column is in the schema
    # The rates the analysis reads back are parameters × 2 per computed token, cached tokens left out.
    assert flops_rates(table.to_pandas()) == (2 * 100, 2 * 10)


def test_report_on_a_non_local_filesystem_uploads_its_files(tmp_path):
    """A SubTreeFileSystem is not a LocalFileSystem, so the report is built locally and copied, as on s3://."""
    RunStore(tmp_path / "run").write_shard(0, 1, rows())
    remote = RunStore("run", pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem()))
    written = build_report(remote)
    assert written.path == "run/report/report.md" and written.excluded_rows == 0
    assert "# Sweep report: run" in (tmp_path / "run" / "report" / "report.md").read_text()
    assert (tmp_path / "run" / "report" / "accuracy_vs_budget.png").stat().st_size > 5000


def cli_error(capsys, argv: list[str], code: int = 2) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ttsearch: error: "), err
    return err


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert "does not exist" in cli_error(capsys, ["report", str(tmp_path / "nope")])
    assert "no policy.json" in cli_error(capsys, ["solve", str(tmp_path), "What is 1+1?", "--budget", "4"])
    RunStore(tmp_path / "run").write_shard(0, 1, rows())
    (tmp_path / "run" / "config.yaml").write_text("verifier:\n  kind: oracle\n")
    (tmp_path / "run" / POLICY_FILE).write_text(
        json.dumps(
            {
                "version": POLICY_VERSION,
                "difficulty": {"kind": "predicted", "estimation_samples": 2, "n_bins": 1, "thresholds": []},
                "choices": [],
            }
        )
    )
    assert "verifier.kind=oracle cannot score a new question" in cli_error(
        capsys, ["solve", str(tmp_path / "run"), "What is 1+1?", "--budget", "4"]
    )


def test_relative_output_dir_is_refused_when_joining_a_cluster(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_ADDRESS", "http://127.0.0.1:8265")
    err = cli_error(capsys, ["sweep", "output_dir=runs/x", "data.limit=1"])
    assert "output_dir 'runs/x' is relative" in err and "s3://" in err
    assert not Path("runs").exists(), "nothing claimed"


def test_a_filter_that_leaves_no_problems_claims_nothing(tmp_path, capsys):
    data = tmp_path / "one.jsonl"
    data.write_text(json.dumps({"problem": "1+1?", "answer": "2", "unique_id": "a", "level": "Level 1"}) + "\n")
    cli_error(capsys, ["sweep", f"data.path={data}", "data.levels=[2]", f"output_dir={tmp_path / 'out'}"])
    assert not (tmp_path / "out").exists()


def test_row_counts_say_done_failed_and_missing(tmp_path):
    from ttsearch.sweep.jobs import row_counts

    cfg = load_config(
        None,
        ["strategies=[{name: best_of_n, selections: [naive, majority]}]", "budgets=[2,4]", f"output_dir={tmp_path}"],
    )
    RunStore(tmp_path).claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    saved = rows().slice(0, 5).to_pylist()
    saved[0]["error"] = "ValueError: a strategy bug"
    saved[1]["correct"] = None  # grading failed twice
    saved[0]["correct"] = None  # an error row is failed, not ungraded
    counts = row_counts(cfg, pa.Table.from_pylist(saved, schema=RESULT_SCHEMA))
    # 2 problems x 2 selections x 2 budgets expected
    assert counts.line() == "rows: 4 done (1 ungraded), 1 failed (problem errors), 3 missing"


def test_summary_leaves_ungraded_rows_out_of_accuracy_and_counts_any_right_candidate_as_covered():
    from ttsearch.analysis.report import sweep_summary

    def tables(*jobs: tuple[bool | None, list[bool | None]]) -> list[list[str]]:
        saved = [r for r in rows().to_pylist() if r["strategy_label"] == "best_of_n/weighted"][: len(jobs)]
        for row, (correct, flags) in zip(saved, jobs, strict=True):
            row |= {"budget": 4, "correct": correct, "candidate_correct": flags, "error": None}
            row |= realised_estimates(correct, flags, 4)
        # read back through pandas, as a sweep's
        text = sweep_summary(pa.Table.from_pylist(saved, schema=RESULT_SCHEMA))
        return [part.splitlines()[-1].split() for part in text.split("\n\n")]

    # Without nulls the flags come back as numpy bools (not `True`), with a null as Python objects: both count.
    assert tables((True, [False, True])) == [["best_of_n/weighted", "100.0"]] * 2
    accuracy, coverage = tables((True, [False, True]), (None, [None, False]))
    assert accuracy == ["best_of_n/weighted", "100.0"], "the ungraded row is left out, not counted wrong"
    assert coverage == ["best_of_n/weighted", "50.0"]


def test_sweep_exits_1_with_the_row_summary_when_rows_are_missing(tmp_path, capsys, monkeypatch):
    import ttsearch.pipelines.sweep

    overrides = [
        "strategies=[{name: best_of_n, selections: [naive, majority]}]",
        "budgets=[2,4]",
        f"output_dir={tmp_path}",
    ]
    cfg = load_config(None, overrides)
    RunStore(tmp_path).claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    saved = rows().slice(0, 5).to_pylist()
    saved[0]["error"] = "ValueError: a strategy bug"
    monkeypatch.setattr(
        ttsearch.pipelines.sweep, "run_sweep", lambda cfg: pa.Table.from_pylist(saved, schema=RESULT_SCHEMA)
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", *overrides])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 1
    assert out.rstrip().endswith("rows: 4 done (0 ungraded), 1 failed (problem errors), 3 missing")
    assert err == "ttsearch: error: 3 rows missing (infrastructure failures): re-run the same command to compute them\n"


def test_rows_written_before_the_settings_column_read_it_from_the_runs_config(tmp_path):
    """Older sweeps wrote `beam_width` and `lookahead` columns and no `settings`; their config.yaml (every strategy's
    settings in every entry) names each row's configuration, so the rows read with today's settings column."""
    store = RunStore(tmp_path / "run")
    cfg = load_config(None, ["strategies=[{name: best_of_n}, {name: beam, beam_width: 2}]"])
    store.claim(sweep_fingerprint(cfg, PROBLEMS), cfg)
    old_entry = {
        "aggregation": "last",
        "selections": ["weighted"],
        "beam_width": 2,
        "lookahead": 0,
        "revision_window": 4,
    }
    (tmp_path / "run" / "config.yaml").write_text(
        yaml.safe_dump({"strategies": [old_entry | {"name": "best_of_n"}, old_entry | {"name": "beam"}]})
    )
    rows = [result_row("q00", "best_of_n", "best_of_n/weighted", 4, 0, [True], True, strategy_config="best_of_n")]
    rows += [result_row("q00", "beam", "beam(M=2)/weighted", 4, 0, [True], True, strategy_config="beam(M=2)")]
    old = pa.Table.from_pylist(rows).drop_columns(["settings"])
    old = old.append_column("beam_width", pa.array([2, 2], pa.int32()))
    pq.write_table(old, tmp_path / "run" / "results" / "shard-00000-of-00001.parquet")
    frame = store.load_frame()
    assert [json.loads(s) for s in frame["settings"]] == [{}, {"beam_width": 2}]
    assert [json.loads(s) for s in store.read_results()["settings"].to_pylist()] == [{}, {"beam_width": 2}]
