"""`ttsearch` command line: one subcommand per pipeline."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from ttsearch.config import CONF_DIR, load_config
from ttsearch.errors import TTSearchError
from ttsearch.runtime.interrupts import exit_status, stop_on_signals


@dataclass(frozen=True)
class Argument:
    """One `add_argument` call of a command: its name or flags and argparse's keywords. The handler receives the
    value by its dest (`--kill-at` as `kill_at`); a value left None is not passed, so the handler's default holds."""

    flags: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Argument:
    """An `Argument` written as the `add_argument` call it stands for."""
    return Argument(flags, options)


@dataclass(frozen=True)
class Command:
    """One row of `COMMANDS`: how a command parses and which function does its work.

    A row named `<command> --<flag>` is a mode of `<command>`: its flag (with the row's help) and its arguments join
    the command's parser, and when the flag is given the row's handler and configs run instead of the command's,
    with the command's arguments and the row's own (`bench --faults --kill-at 0.5 --json out.json`).
    """

    help: str
    handler: str
    """`module:function`, imported only when the command runs (so `ttsearch report` loads no Ray): called with the
    loaded config as `cfg` and each argument by name (a command without `--config` gets its `overrides` as they are),
    it returns the result the CLI prints (`str(result)`)."""
    configs: tuple[str, ...] | None = None
    """The `--config` files read when none is given (empty: the built-in defaults); None: no `--config` option."""
    config_help: str = ""
    overrides_help: str | None = None
    """Help of the trailing key=value overrides; None: the command takes none."""
    arguments: tuple[Argument, ...] = ()
    loaded: bool = True
    """False: the handler takes the files and overrides themselves (`config`, `overrides`) instead of `cfg`, for a
    pipeline that hands them on to a child process (`bench --faults` runs `ttsearch sweep`, `loadtest` runs
    `ttsearch serve`)."""


@runtime_checkable
class Incomplete(Protocol):
    """A result that can say its run is unfinished: the command then exits 1 with `failure` on stderr."""

    @property
    def failure(self) -> str | None: ...


def _conf(*names: str) -> tuple[str, ...]:
    """Shipped config files, as a command's defaults."""
    return tuple(str(CONF_DIR / name) for name in names)


REVISION_CONFIGS = _conf("revision.yaml", "revision_prompt.yaml")
"""The revision model's commands' default: its settings, with the revision prompt texts the trajectories use."""
SERVE_CONFIGS = _conf("serve.yaml", "revision_prompt.yaml")
"""`ttsearch serve`'s default: the service, with the revision prompt texts so `strategy: revisions` is servable."""
SERVE_CONFIG_HELP = "YAML config, repeatable (default conf/serve.yaml + conf/revision_prompt.yaml)"
REVISION_HELP = "YAML config, repeatable (default conf/revision.yaml + conf/revision_prompt.yaml)"
RUN_DIR = arg("run_dir", help="the sweep's output_dir")
JSON = arg("--json", help="also write the report as JSON here")
"""Writes the result's `to_json()` to the path given, after printing the result."""

COMMANDS: dict[str, Command] = {
    "sweep": Command(
        "run strategies × budgets × seeds over a problem set",
        "ttsearch.pipelines.sweep:sweep",
        configs=(),
        config_help="YAML config; repeat to layer files (later ones win)",
        overrides_help="key=value overrides, e.g. data.limit=8 budgets=[4,16]",
    ),
    "label": Command(
        "Monte Carlo step labels for PRM training (K samples, R rollouts from every step prefix)",
        "ttsearch.pipelines.label:run_label",
        configs=_conf("label.yaml"),
        config_help="YAML config, repeatable (default conf/label.yaml)",
        overrides_help="key=value overrides, e.g. data.limit=100 label.rollouts=8",
    ),
    "train-prm": Command(
        "train a Math-Shepherd-format PRM on step labels with transformers' Trainer in Ray Train",
        "ttsearch.pipelines.train_prm:run_train_prm",
        configs=_conf("prm.yaml"),
        config_help="YAML config, repeatable (default conf/prm.yaml)",
        overrides_help="key=value overrides, e.g. 'prm.labels=[runs/labels]' prm.epochs=2",
    ),
    "eval-prm": Command(
        "a verifier on ProcessBench (first-error F1) and on held-out `ttsearch label` steps (ROC AUC)",
        "ttsearch.pipelines.eval_prm:run_eval_prm",
        configs=_conf("prm.yaml"),
        config_help="YAML config, repeatable (default conf/prm.yaml)",
        overrides_help="key=value overrides, e.g. verifier.kind=math_shepherd verifier.model=runs/prm/model "
        "eval_prm.labels=runs/labels",
    ),
    "revision-data": Command(
        "training trajectories for a revision model: K attempts per question, near-miss wrong attempts then a "
        "correct one",
        "ttsearch.pipelines.revision_data:run_revision_data",
        configs=REVISION_CONFIGS,
        config_help=REVISION_HELP,
        overrides_help="key=value overrides, e.g. data.limit=100 revision_data.samples=32",
    ),
    "train-revision": Command(
        "fine-tune the generator to revise, on `ttsearch revision-data` trajectories, with transformers' Trainer in "
        "Ray Train",
        "ttsearch.pipelines.train_revision:run_train_revision",
        configs=REVISION_CONFIGS,
        config_help=REVISION_HELP,
        overrides_help="key=value overrides, e.g. 'revision.data=[runs/revision_data]' revision.epochs=2",
    ),
    "eval-revision": Command(
        "pass@1 of revision attempt t, and revisions vs best-of-N at equal budget, for a base and a fine-tuned "
        "generator",
        "ttsearch.pipelines.eval_revision:run_eval_revision",
        configs=(*REVISION_CONFIGS, *_conf("eval_revision.yaml")),
        config_help="YAML config, repeatable (default conf/revision.yaml + conf/revision_prompt.yaml + "
        "conf/eval_revision.yaml)",
        overrides_help="key=value overrides, e.g. 'eval_revision.models=[embedded,runs/revision/model]'",
    ),
    "bench": Command(
        "throughput: ready queue vs offline ceiling vs synchronous search",
        "ttsearch.pipelines.bench:run_bench",
        configs=_conf("bench.yaml", "revision_prompt.yaml"),  # every strategy, so the revisions prompt texts too
        config_help="YAML config, repeatable (default conf/bench.yaml)",
        overrides_help="key=value overrides",
        arguments=(JSON,),
    ),
    "bench --faults": Command(
        "instead: the same sweep clean and with one generator and one verifier replica SIGKILLed (default config "
        "conf/faults.yaml)",
        "ttsearch.pipelines.fault_bench:run_fault_bench",
        configs=_conf("faults.yaml"),
        arguments=(
            arg(
                "--kill-at",
                type=float,
                default=0.2,
                help="with --faults: kill at this fraction of the clean run's search time",
            ),
        ),
        loaded=False,
    ),
    "bench --label": Command(
        "instead: labelled steps per minute of `ttsearch label`, the ready queue vs one prefix at a time on one "
        "engine (default config conf/label.yaml)",
        "ttsearch.pipelines.label_bench:run_label_bench",
        configs=_conf("label.yaml"),
    ),
    "report": Command(
        "Markdown report with plots, from a sweep's Parquet only",
        "ttsearch.analysis.report:build_report",
        arguments=(RUN_DIR,),
    ),
    "optimize": Command(
        "compute-optimal policy (2-fold CV) and its efficiency",
        "ttsearch.analysis.compute_optimal_report:build_optimize_report",
        arguments=(
            RUN_DIR,
            arg(
                "--larger",
                dest="larger_run_dir",
                metavar="LARGER",
                help="a larger model's sweep output_dir, for the FLOPs-matched comparison",
            ),
            arg(
                "--estimation-samples",
                type=int,
                help="best-of-N samples per question for the predicted difficulty (k; default 16, capped by the "
                "largest best-of-N job)",
            ),
            arg(
                "--r",
                dest="r_values",
                metavar="R",
                type=float,
                action="append",
                help="D_inference/D_pretrain ratios (repeatable)",
            ),
        ),
    ),
    "import": Command(
        "recorded generations (samples, verifier scores, answers) as a run directory that report and optimize read",
        "ttsearch.pipelines.import_run:run_import",
        configs=(),
        config_help="YAML config; repeat to layer files (later ones win)",
        overrides_help="key=value overrides, e.g. recorded.format=search_and_learn recorded.verifier=rlhflow_8b",
        arguments=(
            arg("source", help="the recorded file (JSON Lines; search-and-learn's Parquet too)"),
            arg("run_dir", help="the run directory to write (a re-import of the same recording rewrites it)"),
        ),
    ),
    "export": Command(
        "a run's best-of-N pools as generic recorded JSON Lines (what `ttsearch import` reads)",
        "ttsearch.pipelines.export_run:run_export",
        arguments=(
            RUN_DIR,
            arg("output", help="the JSON Lines file to write"),
            arg("--seed", type=int, help="the seed whose pools to write (default: the smallest)"),
        ),
    ),
    "solve": Command(
        "answer one question with a sweep's compute-optimal policy",
        "ttsearch.pipelines.solve:run_solve",
        overrides_help="key=value overrides of the sweep's config",
        arguments=(
            arg("run_dir", help="a sweep's output_dir holding policy.json (from `ttsearch optimize`)"),
            arg("question"),
            arg("--budget", type=int, required=True, help="total samples, difficulty estimation included"),
        ),
    ),
    "serve": Command(
        "an OpenAI-compatible search service on Ray Serve",
        "ttsearch.pipelines.serve:run_serve",
        configs=SERVE_CONFIGS,
        config_help=SERVE_CONFIG_HELP,
        overrides_help="key=value overrides, e.g. serve.port=8001",
    ),
    "loadtest": Command(
        "closed-loop load test of the service at several concurrencies",
        "ttsearch.pipelines.loadtest:run_loadtest",
        configs=SERVE_CONFIGS,
        config_help=SERVE_CONFIG_HELP,
        overrides_help="key=value overrides",
        arguments=(
            arg("--url", help="a running service's base URL (default: start one from the config, localhost only)"),
            arg("--concurrency", type=int, nargs="+", default=[1, 4, 16, 32], help="clients at each level"),
            arg("--requests-per-client", type=int, default=2, help="requests each client sends per level"),
            arg("--strategy", help="the search every request asks for (default: the service's)"),
            arg("--budget", type=int, help="the requests' budget (default: the service's)"),
            arg("--beam-width", type=int, help="the requests' beam width (beam, lookahead)"),
            JSON,
        ),
        loaded=False,
    ),
}
"""Every `ttsearch` command: adding one is a pipeline module and a row here."""


@dataclass(frozen=True)
class _Choice:
    """A row a parsed command may run, and the names of the parsed values its handler receives."""

    row: Command
    names: tuple[str, ...]
    switch: str | None = None
    """The dest of the mode flag that selects this row; None: the command's own row."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttsearch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        if " " not in name:
            _add_command(commands, name)
    return parser


def _add_command(commands: Any, name: str) -> None:
    """`name`'s parser, with its modes' flags and arguments; the options in the order `--help` lists them."""
    command = COMMANDS[name]
    modes = [(row_name.split(" ", 1)[1], row) for row_name, row in COMMANDS.items() if row_name.startswith(f"{name} ")]
    parser = commands.add_parser(name, help=command.help)
    if command.configs is not None:
        parser.add_argument("--config", action="append", help=command.config_help)

    def add(argument: Argument) -> str:
        return parser.add_argument(*argument.flags, **argument.options).dest

    own = tuple(add(argument) for argument in command.arguments)
    switches = [parser.add_argument(flag, action="store_true", help=row.help).dest for flag, row in modes]
    choices = [
        _Choice(row, (*own, *(add(argument) for argument in row.arguments)), switch)
        for switch, (_, row) in zip(switches, modes, strict=True)
    ]
    if command.overrides_help is not None:
        parser.add_argument("overrides", nargs="*", help=command.overrides_help)
    parser.set_defaults(choices=(*choices, _Choice(command, own)))


def _handler(path: str) -> Callable[..., Any]:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command's handler and print its result; 1 when the result reports a failure."""
    choice = next(choice for choice in args.choices if choice.switch is None or getattr(args, choice.switch))
    row = choice.row
    values = {name: getattr(args, name) for name in choice.names if getattr(args, name) is not None}
    json_path = values.pop("json", None)
    if row.configs is not None:
        files = args.config or list(row.configs)
        if row.loaded:
            values["cfg"] = load_config(files, args.overrides)
        else:
            values |= {"config": files, "overrides": args.overrides}
    elif "overrides" in args:
        values["overrides"] = args.overrides
    result = _handler(row.handler)(**values)
    if result is not None:
        print(result)
    if json_path:
        Path(json_path).write_text(result.to_json())  # the commands with --json return a result that has it
        print(f"\nwritten to {json_path}")
    if isinstance(result, Incomplete) and result.failure:
        _error(result.failure)
        return 1
    return 0


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
        code = _run(args)
    except TTSearchError as exc:
        _error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt as stop:
        _shutdown_ray()
        print(f"ttsearch: {args.command} stopped by {stop or 'SIGINT'}", file=sys.stderr)
        sys.exit(exit_status(stop))
    sys.exit(code)


def _shutdown_ray() -> None:
    """Disconnect from Ray, which ends this driver's actors (the replicas, and their engines with them) and stops a
    local instance the command started itself; a cluster it joined keeps running."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


if __name__ == "__main__":
    main()
