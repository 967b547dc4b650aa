"""`ttsearch` command line: one subcommand per pipeline."""

from __future__ import annotations

import argparse
import os
import sys

from ttsearch.config import CONF_DIR, ConfigError, load_config
from ttsearch.data import DataError


def _sweep(args: argparse.Namespace) -> None:
    from pipelines.sweep import run_sweep, summary

    cfg = load_config(args.config, args.overrides)
    table = run_sweep(cfg)
    print(f"\n{table.num_rows} rows written to {cfg.output_dir}/results\n")
    print(summary(table))


def _bench(args: argparse.Namespace) -> None:
    from pipelines.bench import format_report, run_bench, write_json

    report = run_bench(load_config(args.config or [CONF_DIR / "bench.yaml"], args.overrides))
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
        print(f"\nwritten to {args.json}")


def _report(args: argparse.Namespace) -> None:
    from pipelines.report import build_report

    print(f"report written to {build_report(args.run_dir)}")


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here; real clusters may unset it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="ttsearch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="run strategies × budgets × seeds over a problem set")
    sweep.add_argument("--config", action="append", help="YAML config; repeat to layer files (later ones win)")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.limit=8 budgets=[4,16]")
    sweep.set_defaults(handler=_sweep)
    bench = commands.add_parser("bench", help="throughput: ready queue vs offline ceiling vs synchronous search")
    bench.add_argument("--config", action="append", help="YAML config, repeatable (default conf/bench.yaml)")
    bench.add_argument("--json", help="also write the report as JSON here")
    bench.add_argument("overrides", nargs="*", help="key=value overrides")
    bench.set_defaults(handler=_bench)
    report = commands.add_parser("report", help="Markdown report with plots, from a sweep's Parquet only")
    report.add_argument("run_dir", help="the sweep's output_dir")
    report.set_defaults(handler=_report)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (ConfigError, DataError, FileExistsError, FileNotFoundError, ValueError) as exc:
        print(f"ttsearch: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
