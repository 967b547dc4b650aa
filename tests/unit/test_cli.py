"""The command table (`ttsearch.cli.COMMANDS`): what each handler is called with, what the CLI prints of its result,
and the exit codes; the handlers here are stand-ins, so nothing starts."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from ttsearch import cli
from ttsearch.analysis.render import ReportFile
from ttsearch.config import CONF_DIR, SweepConfig

CALLS: list[dict] = []


@dataclasses.dataclass(frozen=True)
class Printed:
    """A stand-in result: printed as its text, with a failure and JSON as a real one has them."""

    text: str
    failure: str | None = None

    def __str__(self) -> str:
        return self.text

    def to_json(self) -> str:
        return json.dumps({"text": self.text})


def record(**values) -> Printed:
    CALLS.append(values)
    return Printed("the result")


def incomplete(**values) -> Printed:
    return Printed("half done", failure="3 rows   missing:\nre-run")


@pytest.fixture
def handled(monkeypatch):
    """Every row's handler replaced by `record`; returns what it was called with."""
    CALLS.clear()
    for name, row in cli.COMMANDS.items():
        monkeypatch.setitem(cli.COMMANDS, name, dataclasses.replace(row, handler=f"{__name__}:record"))
    return CALLS


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def test_every_command_parses_and_its_modes_belong_to_one():
    usage = cli.build_parser().format_usage()
    names = {name for name in cli.COMMANDS if " " not in name}
    assert names == set(re.search(r"\{(.*?)\}", usage)[1].split(","))
    assert len(names) == 15
    for name in cli.COMMANDS:
        command, _, flag = name.partition(" ")
        assert command in names and (not flag or flag.startswith("--")), name


def test_a_config_command_gets_the_loaded_config_and_its_defaults(handled, capsys):
    assert run(["label", "data.limit=3"], capsys) == (0, "the result\n", "")
    [call] = handled
    assert isinstance(call["cfg"], SweepConfig) and call["cfg"].data.limit == 3
    assert call["cfg"].label == cli.load_config([CONF_DIR / "label.yaml"], ["data.limit=3"]).label
    assert set(call) == {"cfg"}


def test_a_mode_takes_its_own_handler_configs_and_arguments_with_the_commands(handled, capsys, tmp_path):
    out = tmp_path / "bench.json"
    code, printed, _ = run(["bench", "--faults", "--kill-at", "0.5", "--json", str(out), "data.limit=2"], capsys)
    assert code == 0 and printed == f"the result\n\nwritten to {out}\n"
    assert json.loads(out.read_text()) == {"text": "the result"}
    assert handled == [{"config": [str(CONF_DIR / "faults.yaml")], "overrides": ["data.limit=2"], "kill_at": 0.5}]
    handled.clear()
    run(["bench", "--label"], capsys)
    assert (
        set(handled[0]) == {"cfg"}
        and handled[0]["cfg"].data.limit == cli.load_config(CONF_DIR / "label.yaml").data.limit
    )


def test_arguments_arrive_by_name_and_unset_ones_leave_the_handlers_defaults(handled, capsys):
    run(["optimize", "runs/x", "--r", "1", "--r", "2.5"], capsys)
    run(["solve", "runs/x", "What is 1+1?", "seed=3", "--budget", "8"], capsys)
    run(["loadtest", "--concurrency", "1", "2", "--strategy", "beam"], capsys)
    optimize, solve, loadtest = handled
    assert optimize == {"run_dir": "runs/x", "r_values": [1.0, 2.5]}
    assert solve == {"run_dir": "runs/x", "question": "What is 1+1?", "budget": 8, "overrides": ["seed=3"]}
    assert loadtest == {
        "config": list(cli.SERVE_CONFIGS),
        "overrides": [],
        "concurrency": [1, 2],
        "requests_per_client": 2,
        "strategy": "beam",
    }


def test_a_result_with_a_failure_exits_1_with_one_line(monkeypatch, capsys):
    monkeypatch.setitem(
        cli.COMMANDS, "report", dataclasses.replace(cli.COMMANDS["report"], handler=f"{__name__}:incomplete")
    )
    assert run(["report", "runs/x"], capsys) == (1, "half done\n", "ttsearch: error: 3 rows missing: re-run\n")


def test_the_report_commands_print_where_and_what_they_left_out():
    assert str(ReportFile(Path("runs/x/report/report.md"), 0)) == "report written to runs/x/report/report.md"
    written = ReportFile("s3://b/x/report/compute_optimal.md", 2, 1, "compute-optimal report")
    assert str(written) == (
        "compute-optimal report written to s3://b/x/report/compute_optimal.md "
        "(2 error rows and 1 ungraded rows excluded from accuracy)"
    )
