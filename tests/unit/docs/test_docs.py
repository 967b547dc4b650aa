"""The commands the documentation hands to a user are valid: every page of the site (docs/**/*.md), the README, the
Makefile and the deploy files.

Each `ttsearch sweep` command is parsed by the real CLI parser and its config files and overrides are loaded and
validated, as `ttsearch sweep` does before any compute; a `$ ` transcript must print exactly what it shows. Each
model-training command (`label`, `train-prm`, `revision-data`, ...) parses and loads its config.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.fixtures import mismatches, stated_values
from ttsearch.cli import COMMANDS, build_parser, main
from ttsearch.config import load_config, resolve_config_path

ROOT = Path(__file__).resolve().parents[3]
DEPLOY_SOURCES = ["Makefile", "cluster.yaml", "deploy/README.md", "deploy/gcp.yaml", "deploy/kuberay-rayjob.yaml"]
PAGES = ["README.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").rglob("*.md"))]
SOURCES = [*PAGES, *DEPLOY_SOURCES]
COMMAND = re.compile(r"^(?P<prompt>\$ )?.*?ttsearch sweep (?P<args>[^`#\n]*)(?:\n(?P<output>.*))?", re.MULTILINE)


def documented_sweeps() -> list[tuple[str, list[str], str | None]]:
    """(where, argv after `sweep`, the transcript's printed line or None), lines joined at a trailing `\\`."""
    found = []
    for source in SOURCES:
        text = re.sub(r"\\\n#?\s*", " ", (ROOT / source).read_text())
        for match in COMMAND.finditer(text):
            args = match["args"].strip()
            if args.startswith("--config conf/main.yaml [") or "..." in args.split():  # a syntax summary or
                continue  # an elided command in prose, not a command
            output = match["output"] if match["prompt"] else None
            found.append((f"{source}: ttsearch sweep {args}", shlex.split(args), output))
    return found


SWEEPS = documented_sweeps()
MIN_SWEEPS = 16
"""What the docs held when this was last counted (README 1, docs/ 9, the Makefile and deploy files 6): a command
that vanishes from the docs, or a page this test stops reading, fails the count."""


def test_the_docs_give_the_commands_this_test_expects():
    assert len(PAGES) >= 15 and "docs/configuration.md" in PAGES, PAGES
    assert len(SWEEPS) >= MIN_SWEEPS, [where for where, *_ in SWEEPS]
    in_docs = {where.split(":")[0] for where, *_ in SWEEPS if where.startswith("docs/")}
    assert {"docs/getting-started.md", "docs/guides/cluster.md", "docs/config-files.md"} <= in_docs, in_docs
    assert sum(output is not None for *_, output in SWEEPS) == 1, "the error transcript in docs/config-files.md"
    assert [where.split(":")[0] for where, _, output in SWEEPS if output is not None] == ["docs/config-files.md"]


@pytest.mark.parametrize(("where", "argv", "output"), SWEEPS, ids=[where for where, *_ in SWEEPS])
def test_documented_sweep_command_is_valid(
    where: str, argv: list[str], output: str | None, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(ROOT)
    if output is not None:  # a transcript: the error it shows is the one the CLI prints, before any compute
        with pytest.raises(SystemExit):
            main(["sweep", *argv])
        assert capsys.readouterr().err.strip() == output.strip()
        return
    args = build_parser().parse_args(["sweep", *argv])
    cfg = load_config(args.config, args.overrides)
    # The command's files and overrides, read independently: the sweep it runs is the one the docs describe.
    stated = stated_values([resolve_config_path(path) for path in args.config or []], args.overrides)
    assert args.config and stated, f"{where}: names no config file"
    assert mismatches(stated, cfg) == [], where


TRAINING_COMMANDS = (
    "label",
    "bench --label",
    "train-prm",
    "eval-prm",
    "revision-data",
    "train-revision",
    "eval-revision",
)
"""The model-training commands (and `bench --label`, which times labelling): each reads its own default configs."""
PRM_COMMAND = re.compile(
    rf"ttsearch (?P<command>{'|'.join(map(re.escape, TRAINING_COMMANDS))})(?=[\s`])(?P<args>[^`#\n]*)"
)


def documented_prm_commands() -> list[tuple[str, list[str]]]:
    """(where, argv) of every model-training command on the site and in the README (`label`, `train-prm`, ...)."""
    found = []
    for source in PAGES:
        text = re.sub(r"\\\n#?\s*", " ", (ROOT / source).read_text())
        found += [
            (f"{source}: ttsearch {m['command']}{m['args']}", [*m["command"].split(), *shlex.split(m["args"])])
            for m in PRM_COMMAND.finditer(text)
        ]
    return found


PRM_COMMANDS = documented_prm_commands()
MIN_PRM_COMMANDS = 39
"""As MIN_SWEEPS: the training commands and their mentions the README and the written pages held when last counted
(README 6, the guides 23, other pages 10). The generated configuration reference is read too but not counted: its
mentions come from the config's docstrings."""


@pytest.mark.parametrize(("where", "argv"), PRM_COMMANDS, ids=[where for where, _ in PRM_COMMANDS])
def test_documented_prm_command_is_valid(where: str, argv: list[str], monkeypatch) -> None:
    """The labelling, training and evaluation commands parse and load their config as the CLI would."""
    monkeypatch.chdir(ROOT)
    args = build_parser().parse_args(argv)
    command = COMMANDS[" ".join(argv[:2]) if argv[0] == "bench" else argv[0]]
    load_config(args.config or list(command.configs or ()), args.overrides)


def test_the_docs_document_each_prm_command():
    written = [where for where, _ in PRM_COMMANDS if not where.startswith("docs/configuration.md:")]
    assert len(written) >= MIN_PRM_COMMANDS, written
    assert {" ".join(argv[:2]) if argv[0] == "bench" else argv[0] for _, argv in PRM_COMMANDS} == set(TRAINING_COMMANDS)
    guides = {where.split(":")[0] for where, _ in PRM_COMMANDS}
    assert {"docs/guides/prm-training.md", "docs/guides/revision-model.md", "README.md"} <= guides, guides
