"""`ttsearch` command line: one subcommand per pipeline."""

from __future__ import annotations

import argparse
import os
import sys

from ttsearch.config import ConfigError, load_config
from ttsearch.data import DataError


def _sweep(args: argparse.Namespace) -> None:
    from pipelines.sweep import run_sweep, summary

    cfg = load_config(args.config, args.overrides)
    table = run_sweep(cfg)
    print(f"\n{table.num_rows} rows written to {cfg.output_dir}/results\n")
    print(summary(table))


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no model hub here; real clusters may unset it
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="ttsearch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    sweep = commands.add_parser("sweep", help="run strategies × budgets × seeds over a problem set")
    sweep.add_argument("--config", help="YAML config (defaults apply where it is silent)")
    sweep.add_argument("overrides", nargs="*", help="key=value overrides, e.g. data.limit=8 budgets=[4,16]")
    sweep.set_defaults(handler=_sweep)
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except (ConfigError, DataError, FileExistsError) as exc:
        print(f"ttsearch: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
