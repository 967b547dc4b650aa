"""The documentation as a whole: a short README that links only to pages that exist, a site that `mkdocs build
--strict` builds with every page of its nav, and a configuration reference that matches the config dataclasses."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from ttsearch.config import SweepConfig
from ttsearch.config.reference import REGENERATE, REGISTRY_MODULE, field_source, reference_markdown

ROOT = Path(__file__).resolve().parents[3]
README_MAX_LINES = 200
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav: list) -> list[str]:
    """Every page file the nav lists, in order."""
    pages = []
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def mkdocs_config() -> dict:
    # mkdocs.yml may use `!!python/name:` tags in time; the keys read here are plain YAML.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_the_readme_is_short_and_links_only_to_what_exists():
    text = (ROOT / "README.md").read_text()
    lines = text.count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move detail to docs/"
    targets = [target for target in LINK.findall(text) if not re.match(r"[a-z]+://", target)]
    assert targets, "the README links to no page"
    missing = [target for target in targets if not (ROOT / target.split("#", 1)[0]).exists()]
    assert missing == [], f"README.md links to files that do not exist: {missing}"
    assert "make test" in text and "make run" in text, "the two commands"


def test_every_page_is_in_the_nav_and_every_nav_page_exists():
    config = mkdocs_config()
    assert config["strict"] is True and config["docs_dir"] == "docs" and config["site_dir"] == "site"
    listed = nav_pages(config["nav"])
    pages = sorted(str(path.relative_to(ROOT / "docs")) for path in (ROOT / "docs").rglob("*.md"))
    assert sorted(listed) == pages, "mkdocs.yml's nav and docs/ differ"
    assert len(listed) == len(set(listed)), "a page listed twice"


def test_the_site_builds_strictly_with_every_page(tmp_path: Path):
    if importlib.util.find_spec("mkdocs") is None:
        pytest.skip("mkdocs is not installed (it is in the dev extra: pip install -e '.[dev]')")
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout}\n{proc.stderr}"
    for page in nav_pages(mkdocs_config()["nav"]):
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), f"{page} was not built ({built})"
    assert (site / "architecture.svg").is_file(), "the data-flow picture"


def test_the_configuration_reference_is_current():
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == reference_markdown(), f"docs/configuration.md is stale: run `.venv/bin/{REGENERATE}`"


def config_keys(cls: type, prefix: str = "", seen: set[type] | None = None) -> list[str]:
    """Every key path of a config dataclass, read with `dataclasses` rather than the generator's own walk. A section
    type met again (`serve.strategy` is a `StrategySpec` like `strategies[]`) has a row; its keys are not repeated."""
    seen = set() if seen is None else seen
    seen.add(cls)
    keys = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        path = f"{prefix}{item.name}"
        keys.append(path)
        is_list = typing.get_origin(hints[item.name]) is list
        inner = typing.get_args(hints[item.name])[0] if is_list else hints[item.name]
        if dataclasses.is_dataclass(inner) and inner not in seen:
            keys += config_keys(inner, f"{path}[]." if is_list else f"{path}.", seen)
    return keys


def test_the_reference_has_a_row_for_every_key():
    text = reference_markdown()
    missing = [key for key in config_keys(SweepConfig) if f"| `{key}` |" not in text]
    assert missing == []
    # Computed defaults are shown as code, so the page is the same on every machine.
    assert "`str(DEFAULT_DATASET)`" in text and "`default_cache_dir()`" in text
    assert str(Path.home()) not in text and str(ROOT) not in text


@dataclass
class Documented:
    """A section written every way the config modules document their fields."""

    plain: int = 1  # a trailing comment
    continued: bool = False  # a trailing comment
    # continued on the next line
    after: int = 2  # its own comment
    # A comment that leads into a field
    # without one of its own.
    led: str = "x"
    with_docstring: list[str] = field(default_factory=lambda: ["a"])
    """An attribute docstring."""
    optional: int | None = None


def test_field_documentation_is_read_in_every_form():
    assert field_source(Documented, "plain").doc == "a trailing comment"
    assert field_source(Documented, "continued").doc == "a trailing comment continued on the next line"
    assert field_source(Documented, "after").doc == "its own comment"
    assert field_source(Documented, "led").doc == "A comment that leads into a field without one of its own."
    assert field_source(Documented, "with_docstring").doc == "An attribute docstring."
    assert field_source(Documented, "optional").doc == ""


@dataclass(frozen=True)
class ToySettings:
    """Settings of a strategy registered by this test."""

    width: int = 4
    """Children per node."""
    temperature: float = 0.5  # softmax temperature of the shares


def test_the_reference_renders_registered_strategy_settings(monkeypatch):
    """With a strategy registry (`ttsearch.search.strategies.registry`), each strategy's settings get a table."""
    registry = types.ModuleType(REGISTRY_MODULE)
    registry.STRATEGIES = {"toy": f"{__name__}:TOY"}
    monkeypatch.setitem(sys.modules, REGISTRY_MODULE, registry)
    monkeypatch.setattr(sys.modules[__name__], "TOY", types.SimpleNamespace(name="toy", settings=ToySettings), False)
    text = reference_markdown()
    assert "### `toy`" in text and "`ToySettings`: Settings of a strategy registered by this test." in text
    assert "| `width` | `int` | `4` | Children per node. |" in text
    assert "| `temperature` | `float` | `0.5` | softmax temperature of the shares |" in text
