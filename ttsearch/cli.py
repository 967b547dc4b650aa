"""`ttsearch` command line: one subcommand per pipeline."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from ttsearch.config import CONF_DIR, load_config
from ttsearch.errors import TTSearchError
from ttsearch.runtime.interrupts import exit_status, stop_on_signals

if TYPE_CHECKING:  # the analysis stack (pandas, matplotlib) loads only for the commands that use it
    from ttsearch.analysis.render import ReportFile


REVISION_CONFIGS = [str(CONF_DIR / "revision.yaml"), str(CONF_DIR / "revision_prompt.yaml")]
"""The revision model's commands' default: its settings, with the revision prompt texts the trajectories use."""
DEFAULT_CONFIGS: dict[str, list[str]] = {
    "label": [str(CONF_DIR / "label.yaml")],
    "bench --label": [str(CONF_DIR / "label.yaml")],
    "train-prm": [str(CONF_DIR / "prm.yaml")],
    "eval-prm": [str(CONF_DIR / "prm.yaml")],
    "revision-data": REVISION_CONFIGS,
    "train-revision": REVISION_CONFIGS,
    "eval-revision": [*REVISION_CONFIGS, str(CONF_DIR / "eval_revision.yaml")],
}
"""The configs a command reads without `--config` (the model-training commands'; the sweep has none)."""
BENCH_CONFIGS = [str(CONF_DIR / "bench.yaml"), str(CONF_DIR / "revision_prompt.yaml")]
"""`ttsearch bench`'s default: every strategy, so the revisions strategy's prompt texts too."""


def _sweep(args: argparse.Namespace) -> int:
    """Exit code 1 when rows are missing (a re-run computes them) or failed (error rows, kept)."""
    from ttsearch.pipelines.sweep import summary
    from ttsearch.sweep.cells import row_counts, run_sweep

    cfg = load_config(args.config, args.overrides)
    table = run_sweep(cfg)
    counts = row_counts(cfg, table)
    print(f"\n{table.num_rows} rows saved in {cfg.output_dir}\n")
    print(summary(table))
    print(counts.line())
    if counts.missing:
        _error(f"{counts.missing} rows missing (infrastructure failures): re-run the same command to compute them")
    elif counts.failed:
        _error(
            f"{counts.failed} rows failed (a strategy bug or a request no engine can serve): see their 'error' column"
        )
    return 1 if counts.missing or counts.failed else 0


def _label(args: argparse.Namespace) -> int:
    """Exit code 1 when questions are missing (a re-run computes them) or failed (error rows, kept)."""
    from ttsearch.pipelines.label import run_label, summarize

    cfg = load_config(args.config or DEFAULT_CONFIGS["label"], args.overrides)
    summary = summarize(cfg, run_label(cfg))
    print(f"\nlabels saved in {cfg.output_dir}\n{summary.lines()}")
    return _questions_exit_code(summary.missing_questions, summary.failed_questions, "label")


def _questions_exit_code(missing: int, failed: int, verb: str) -> int:
    """Exit code 1 when questions are missing (a re-run computes them) or failed (error rows, kept)."""
    if missing:
        _error(f"{missing} questions missing (infrastructure failures): re-run the same command to {verb} them")
    elif failed:
        _error(f"{failed} questions failed (a request no engine can serve): see their 'error' column")
    return 1 if missing or failed else 0


def _train_prm(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.train_prm import format_report, run_train_prm

    print(format_report(run_train_prm(load_config(args.config or DEFAULT_CONFIGS["train-prm"], args.overrides))))


def _eval_prm(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.eval_prm import format_report, run_eval_prm

    cfg = load_config(args.config or DEFAULT_CONFIGS["eval-prm"], args.overrides)
    print(format_report(run_eval_prm(cfg)))
    print(f"\nwritten to {cfg.eval_prm.output}/eval.md and eval.json")


def _revision_data(args: argparse.Namespace) -> int:
    from ttsearch.pipelines.revision_data import run_revision_data, summarize

    cfg = load_config(args.config or DEFAULT_CONFIGS["revision-data"], args.overrides)
    summary = summarize(cfg, run_revision_data(cfg))
    print(f"\ntrajectories saved in {cfg.output_dir}\n{summary.lines()}")
    return _questions_exit_code(summary.missing_questions, summary.failed_questions, "sample")


def _train_revision(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.train_revision import format_report, run_train_revision

    cfg = load_config(args.config or DEFAULT_CONFIGS["train-revision"], args.overrides)
    print(format_report(run_train_revision(cfg)))


def _eval_revision(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.eval_revision import format_report, run_eval_revision

    cfg = load_config(args.config or DEFAULT_CONFIGS["eval-revision"], args.overrides)
    print(format_report(run_eval_revision(cfg)))
    print(f"\nwritten to {cfg.eval_revision.output}/eval.md, eval.json and revision_curve.png")


def _bench(args: argparse.Namespace) -> None:
    if args.faults:
        from ttsearch.pipelines.fault_bench import format_report, run_fault_bench, write_json

        report = run_fault_bench(args.config or [str(CONF_DIR / "faults.yaml")], args.overrides, args.kill_at)
    elif args.label:
        from ttsearch.pipelines.label_bench import format_report, run_label_bench, write_json

        report = run_label_bench(load_config(args.config or DEFAULT_CONFIGS["bench --label"], args.overrides))
    else:
        from ttsearch.pipelines.bench import format_report, run_bench, write_json

        report = run_bench(load_config(args.config or BENCH_CONFIGS, args.overrides))
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwritten to {args.json}")


def _report(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.report import build_report

    _written("report", build_report(args.run_dir))


def _optimize(args: argparse.Namespace) -> None:
    from ttsearch.analysis.compute_optimal import R_VALUES
    from ttsearch.pipelines.optimize import build_optimize_report

    r_values = args.r or R_VALUES
    _written(
        "compute-optimal report", build_optimize_report(args.run_dir, args.larger, args.estimation_samples, r_values)
    )


def _written(what: str, report: ReportFile) -> None:
    left_out = [
        f"{count} {kind} rows"
        for count, kind in ((report.excluded_rows, "error"), (report.ungraded_rows, "ungraded"))
        if count
    ]
    note = f" ({' and '.join(left_out)} excluded from accuracy)" if left_out else ""
    print(f"{what} written to {report.path}{note}")


def _solve(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.solve import run_solve

    solution = run_solve(args.run_dir, args.question, args.budget, args.overrides)
    print(f"answer: {solution.answer}")
    print(
        f"difficulty: bin {solution.difficulty_bin} (predicted score {solution.difficulty_score:.3f}, "
        f"{solution.estimation.samples} samples)"
    )
    print(f"strategy: {solution.strategy_label} at budget {solution.search_budget}")
    spent = solution.estimation.samples + solution.search.samples
    tokens = solution.estimation.generated_tokens + solution.search.generated_tokens
    print(
        f"compute: {spent} samples, {tokens} generated tokens, "
        f"{solution.estimation.verifier_tokens + solution.search.verifier_tokens} verifier tokens, "
        f"{solution.flops:.3g} FLOPs (difficulty estimation included)"
    )


SERVE_CONFIGS = [str(CONF_DIR / "serve.yaml"), str(CONF_DIR / "revision_prompt.yaml")]
"""`ttsearch serve`'s default: the service, with the revision prompt texts so `strategy: revisions` is servable."""


def _serve(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.serve import run_serve

    run_serve(args.config or SERVE_CONFIGS, args.overrides)


def _loadtest(args: argparse.Namespace) -> None:
    from ttsearch.pipelines.loadtest import format_report, run_loadtest, write_json

    search = {
        name: value
        for name, value in (("strategy", args.strategy), ("budget", args.budget), ("beam_width", args.beam_width))
        if value is not None
    }
    report = run_loadtest(
        args.config or SERVE_CONFIGS, args.overrides, args.url, args.concurrency, args.requests_per_client, search
    )
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwritten to {args.json}")


SERVE_CONFIG_HELP = "YAML config, repeatable (default conf/serve.yaml + conf/revision_prompt.yaml)"


def _config_command(
    commands: Any, name: str, handler: Any, help: str, config_help: str, overrides_help: str
) -> argparse.ArgumentParser:
    """A subcommand that reads layered `--config` files plus trailing key=value overrides."""
    command = commands.add_parser(name, help=help)
    command.add_argument("--config", action="append", help=config_help)
    command.add_argument("overrides", nargs="*", help=overrides_help)
    command.set_defaults(handler=handler)
    return command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttsearch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _config_command(
        commands,
        "sweep",
        _sweep,
        "run strategies × budgets × seeds over a problem set",
        "YAML config; repeat to layer files (later ones win)",
        "key=value overrides, e.g. data.limit=8 budgets=[4,16]",
    )
    _config_command(
        commands,
        "label",
        _label,
        "Monte Carlo step labels for PRM training (K samples, R rollouts from every step prefix)",
        "YAML config, repeatable (default conf/label.yaml)",
        "key=value overrides, e.g. data.limit=100 label.rollouts=8",
    )
    _config_command(
        commands,
        "train-prm",
        _train_prm,
        "train a Math-Shepherd-format PRM on step labels with transformers' Trainer in Ray Train",
        "YAML config, repeatable (default conf/prm.yaml)",
        "key=value overrides, e.g. 'prm.labels=[runs/labels]' prm.epochs=2",
    )
    _config_command(
        commands,
        "eval-prm",
        _eval_prm,
        "a verifier on ProcessBench (first-error F1) and on held-out `ttsearch label` steps (ROC AUC)",
        "YAML config, repeatable (default conf/prm.yaml)",
        "key=value overrides, e.g. verifier.kind=math_shepherd verifier.model=runs/prm/model "
        "eval_prm.labels=runs/labels",
    )
    revision_help = "YAML config, repeatable (default conf/revision.yaml + conf/revision_prompt.yaml)"
    _config_command(
        commands,
        "revision-data",
        _revision_data,
        "training trajectories for a revision model: K "
        "attempts per question, near-miss wrong attempts then a correct one",
        revision_help,
        "key=value overrides, e.g. data.limit=100 revision_data.samples=32",
    )
    _config_command(
        commands,
        "train-revision",
        _train_revision,
        "fine-tune the generator to revise, on "
        "`ttsearch revision-data` trajectories, with transformers' Trainer in Ray Train",
        revision_help,
        "key=value overrides, e.g. 'revision.data=[runs/revision_data]' revision.epochs=2",
    )
    _config_command(
        commands,
        "eval-revision",
        _eval_revision,
        "pass@1 of revision attempt t, and revisions vs "
        "best-of-N at equal budget, for a base and a fine-tuned generator",
        "YAML config, repeatable (default conf/revision.yaml + conf/revision_prompt.yaml + conf/eval_revision.yaml)",
        "key=value overrides, e.g. 'eval_revision.models=[embedded,runs/revision/model]'",
    )
    bench = commands.add_parser("bench", help="throughput: ready queue vs offline ceiling vs synchronous search")
    bench.add_argument("--config", action="append", help="YAML config, repeatable (default conf/bench.yaml)")
    bench.add_argument("--json", help="also write the report as JSON here")
    bench.add_argument(
        "--faults",
        action="store_true",
        help="instead: the same sweep clean and with one generator and one verifier replica SIGKILLed "
        "(default config conf/faults.yaml)",
    )
    bench.add_argument(
        "--label",
        action="store_true",
        help="instead: labelled steps per minute of `ttsearch label`, the ready queue vs one prefix at a time on "
        "one engine (default config conf/label.yaml)",
    )
    bench.add_argument(
        "--kill-at", type=float, default=0.2, help="with --faults: kill at this fraction of the clean run's search time"
    )
    bench.add_argument("overrides", nargs="*", help="key=value overrides")
    bench.set_defaults(handler=_bench)
    report = commands.add_parser("report", help="Markdown report with plots, from a sweep's Parquet only")
    report.add_argument("run_dir", help="the sweep's output_dir")
    report.set_defaults(handler=_report)
    optimize = commands.add_parser("optimize", help="compute-optimal policy (2-fold CV) and its efficiency")
    optimize.add_argument("run_dir", help="the sweep's output_dir")
    optimize.add_argument("--larger", help="a larger model's sweep output_dir, for the FLOPs-matched comparison")
    optimize.add_argument(
        "--estimation-samples",
        type=int,
        help="best-of-N samples per question for the predicted difficulty (k; default 16, capped by "
        "the largest best-of-N cell)",
    )
    optimize.add_argument("--r", type=float, action="append", help="D_inference/D_pretrain ratios (repeatable)")
    optimize.set_defaults(handler=_optimize)
    solve = commands.add_parser("solve", help="answer one question with a sweep's compute-optimal policy")
    solve.add_argument("run_dir", help="a sweep's output_dir holding policy.json (from `ttsearch optimize`)")
    solve.add_argument("question")
    solve.add_argument("--budget", type=int, required=True, help="total samples, difficulty estimation included")
    solve.add_argument("overrides", nargs="*", help="key=value overrides of the sweep's config")
    solve.set_defaults(handler=_solve)
    _config_command(
        commands,
        "serve",
        _serve,
        "an OpenAI-compatible search service on Ray Serve",
        SERVE_CONFIG_HELP,
        "key=value overrides, e.g. serve.port=8001",
    )
    loadtest = _config_command(
        commands,
        "loadtest",
        _loadtest,
        "closed-loop load test of the service at several concurrencies",
        SERVE_CONFIG_HELP,
        "key=value overrides",
    )
    loadtest.add_argument(
        "--url", help="a running service's base URL (default: start one from the config, localhost only)"
    )
    loadtest.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32], help="clients at each level")
    loadtest.add_argument("--requests-per-client", type=int, default=2, help="requests each client sends per level")
    loadtest.add_argument("--strategy", help="the search every request asks for (default: the service's)")
    loadtest.add_argument("--budget", type=int, help="the requests' budget (default: the service's)")
    loadtest.add_argument("--beam-width", type=int, help="the requests' beam width (beam, lookahead)")
    loadtest.add_argument("--json", help="also write the report as JSON here")
    return parser


def _error(message: str) -> None:
    """One line on stderr, whatever the message holds."""
    print(f"ttsearch: error: {' '.join(message.split())}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Errors the user can fix (TTSearchError) exit 2 with one line; anything else is a bug and keeps its traceback.

    SIGINT and SIGTERM stop a command cleanly (`ttsearch.runtime.interrupts`): what it started is stopped on the way
    out, Ray
    is shut down here, and the exit status is 128 + the signal number."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    stop_on_signals()
    try:
        code = args.handler(args)
    except TTSearchError as exc:
        _error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt as stop:
        _shutdown_ray()
        print(f"ttsearch: {args.command} stopped by {stop or 'SIGINT'}", file=sys.stderr)
        sys.exit(exit_status(stop))
    sys.exit(code or 0)


def _shutdown_ray() -> None:
    """Disconnect from Ray, which ends this driver's actors (the replicas, and their engines with them) and stops a
    local instance the command started itself; a cluster it joined keeps running."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    main()
