"""The configuration reference (docs/configuration.md), generated from the config dataclasses themselves.

Every section reachable from `SweepConfig` (and any other config dataclass `ttsearch.config` exports) becomes one
table: the key's dotted path, its type, its default and its documentation. A field's documentation is read from the
source, never from an instance: an attribute docstring (a string literal right after the field) or the comment on
the field's line, with comment lines that continue it or lead into the next field. Defaults that are computed when a
config is made (a path of this checkout, the cache directory) are shown as the code that computes them, so the page
is the same on every machine.

If the strategy registry (`ttsearch.search.strategies.registry`) is importable, each registered strategy's settings
dataclass gets a table too; without it, that part is left out.

Regenerate the page: `python -m ttsearch.config.reference > docs/configuration.md`.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import io
import json
import sys
import textwrap
import tokenize
from functools import cache
from typing import Any

import ttsearch.config as config

REGISTRY_MODULE = "ttsearch.search.strategies.registry"
REGENERATE = "python -m ttsearch.config.reference > docs/configuration.md"


@dataclasses.dataclass(frozen=True)
class FieldSource:
    """What the source says about one field of a dataclass."""

    doc: str
    """Attribute docstring, else its comments, joined into one paragraph; '' when it has none."""
    default: ast.expr | None
    """The default expression as written (None: no default)."""


@dataclasses.dataclass(frozen=True)
class ClassSource:
    doc: str
    fields: dict[str, FieldSource]


def _comments(source: str) -> dict[int, tuple[str, bool]]:
    """1-based line → (comment text without '#', whether the line holds nothing but the comment)."""
    found: dict[int, tuple[str, bool]] = {}
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            alone = not lines[row - 1][:col].strip()
            found[row] = (token.string.lstrip("#").strip(), alone)
    return found


@cache
def class_source(cls: type) -> ClassSource:
    """The docstring of `cls` and of each field it declares itself (inherited fields: see `field_source`)."""
    source = textwrap.dedent(inspect.getsource(cls))
    node = ast.parse(source).body[0]
    assert isinstance(node, ast.ClassDef), cls
    comments = _comments(source)
    body = node.body
    fields: dict[str, tuple[ast.AnnAssign, str | None]] = {}
    for i, stmt in enumerate(body):
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            following = body[i + 1] if i + 1 < len(body) else None
            docstring = None
            if (
                isinstance(following, ast.Expr)
                and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)
            ):
                docstring = inspect.cleandoc(following.value.value)
            fields[stmt.target.id] = (stmt, docstring)
    docs: dict[str, list[str]] = {}
    trailing: dict[str, bool] = {}
    for name, (stmt, docstring) in fields.items():
        rows = range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1)
        own = [comments[row][0] for row in rows if row in comments and not comments[row][1]]
        docs[name] = [docstring] if docstring else own
        trailing[name] = bool(own) and not docstring
    # Comment lines alone between two fields continue the first one's trailing comment when the second field has
    # documentation of its own; otherwise they lead into the second field (as lines above the first field do).
    earlier: str | None = None
    for name, (stmt, _) in fields.items():
        index = body.index(stmt)
        start = body[index - 1].end_lineno if index else node.lineno
        between = [comments[row][0] for row in range(start + 1, stmt.lineno) if comments.get(row, ("", False))[1]]
        if between and earlier is not None and trailing[earlier] and docs[name]:
            docs[earlier] += between
        elif between:
            docs[name] = [*between, *docs[name]]
        earlier = name
    return ClassSource(
        doc=inspect.cleandoc(ast.get_docstring(node) or ""),
        fields={
            name: FieldSource(" ".join(" ".join(docs[name]).split()), stmt.value) for name, (stmt, _) in fields.items()
        },
    )


def field_source(cls: type, name: str) -> FieldSource:
    """The field as the most derived class that declares it wrote it; its documentation from the first class up the
    hierarchy that documents it (a subclass that only changes a default keeps its base's words)."""
    declared = [
        class_source(base).fields[name]
        for base in cls.__mro__
        if dataclasses.is_dataclass(base) and name in class_source(base).fields
    ]
    doc = next((found.doc for found in declared if found.doc), "")
    return FieldSource(doc, declared[0].default if declared else None)


def _value(value: Any) -> str:
    """A default as YAML would write it in a config file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    return repr(value)


def _nested_type(annotation: Any, owner: type) -> tuple[type | None, bool]:
    """(the dataclass a field holds, whether it holds a list of them) or (None, False)."""
    if isinstance(annotation, str):
        module = sys.modules[owner.__module__]
        namespace = {**vars(config), **vars(module)}
        text = annotation.strip()
        is_list = text.startswith("list[") and text.endswith("]")
        inner = text[5:-1] if is_list else text
        found = namespace.get(inner.strip())
        if isinstance(found, type) and dataclasses.is_dataclass(found):
            return found, is_list
    elif isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return annotation, False
    return None, False


def _computed(written: ast.expr) -> bool:
    """Whether a default calls something (its value may depend on the machine); names of constants do not."""
    return any(isinstance(node, ast.Call) for node in ast.walk(written))


def _joined(doc: str, more: str) -> str:
    if not doc:
        return more
    return f"{doc} {more}" if doc.endswith((".", "!", "?", ":")) else f"{doc}. {more}"


def _default(cls: type, field: dataclasses.Field, written: ast.expr | None) -> str:
    """The default as a value when it is one, else as the code that computes it."""
    if isinstance(written, ast.Call) and getattr(written.func, "id", None) == "field":
        factory = next((kw.value for kw in written.keywords if kw.arg == "default_factory"), None)
        if isinstance(factory, ast.Lambda):
            if _computed(factory.body):
                return f"`{ast.unparse(factory.body)}`"
            return f"`{_value(field.default_factory())}`"  # type: ignore[misc]
        if isinstance(factory, ast.Name) and factory.id in ("list", "dict"):
            return "`[]`" if factory.id == "list" else "`{}`"
        if factory is not None:
            return f"`{ast.unparse(factory)}()`"
        default = next((kw.value for kw in written.keywords if kw.arg == "default"), None)
        written = default
    if written is None:
        return "(required)"
    if _computed(written):  # computed when the config is made: a path, the environment
        return f"`{ast.unparse(written)}`"
    if field.default is not dataclasses.MISSING:
        return f"`{_value(field.default)}`"
    return f"`{ast.unparse(written)}`"


def _type(annotation: Any) -> str:
    """A field's type as written, a union as its members in code joined by "or" (a `|` would end the table cell)."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return " or ".join(f"`{part.strip()}`" for part in parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclasses.dataclass
class Section:
    key: str
    """Dotted path of the section's keys ('' for the top level, `strategies[]` for each item of a list)."""
    cls: type
    rows: list[tuple[str, str, str, str]] = dataclasses.field(default_factory=list)


def _sections(cls: type, key: str, seen: dict[type, str], out: list[Section]) -> None:
    section = Section(key, cls)
    out.append(section)
    seen.setdefault(cls, key)
    nested: list[tuple[type, str]] = []
    for field in dataclasses.fields(cls):
        path = f"{key}.{field.name}" if key else field.name
        found = field_source(cls, field.name)
        inner, is_list = _nested_type(field.type, cls)
        doc = found.doc
        if inner is not None:
            inner_key = f"{path}[]" if is_list else path
            if inner in seen:
                doc = _joined(doc, f"Same keys as `{seen[inner]}`.")
            else:
                nested.append((inner, inner_key))
                doc = _joined(doc, f"A section: see `{inner_key}`.")
            default = f"`{inner.__name__}()`" + (" (one item)" if is_list else "")
        else:
            default = _default(cls, field, found.default)
        if "bound" in field.metadata:  # the rule written beside the field, as its error states it
            doc = _joined(doc, f"Rule: {field.metadata['bound'].rule()}.")
        section.rows.append((f"`{path}`", _type(field.type), default, doc or "–"))
    for inner, inner_key in nested:
        if inner not in seen:
            _sections(inner, inner_key, seen, out)


def _table(rows: list[tuple[str, str, str, str]], head: str = "key") -> list[str]:
    lines = [f"| {head} | type | default | what |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return lines


def _registered_strategies() -> list[tuple[str, Any]]:
    """(name, Strategy object) of every strategy in the registry; [] when there is no registry to import."""
    try:
        registry = importlib.import_module(REGISTRY_MODULE)
    except ImportError:
        return []
    table = getattr(registry, "STRATEGIES", {})
    found = []
    for name, target in table.items():
        if isinstance(target, str):
            module, _, attribute = target.partition(":") if ":" in target else target.rpartition(".")
            target = getattr(importlib.import_module(module), attribute)
        found.append((name, target))
    return found


def reference_markdown() -> str:
    """The configuration reference as one Markdown page."""
    sections: list[Section] = []
    seen: dict[type, str] = {}
    _sections(config.SweepConfig, "", seen, sections)
    reached = set(seen)
    others = [
        getattr(config, name)
        for name in config.__all__
        if isinstance(getattr(config, name), type) and dataclasses.is_dataclass(getattr(config, name))
    ]
    for cls in others:  # exported sections a sweep's config does not hold (bases of held ones are covered)
        if cls not in reached and not any(issubclass(held, cls) for held in reached):
            _sections(cls, cls.__name__, seen, sections)

    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated from the config dataclasses (ttsearch/config/): do not edit by hand. Regenerate with",
        f"     {REGENERATE} -->",
        "",
        "Every key a config file or a `key=value` override can set, one table per section, generated from the",
        "dataclasses in `ttsearch/config/` and their documentation. How files and overrides are merged and what is",
        "checked before a run starts: [Config files and checks](config-files.md).",
        "",
        "Defaults are the dataclasses' own; the shipped `conf/*.yaml` files change many of them. A default in",
        "backticks that is code (`str(DEFAULT_DATASET)`) is computed when the config is made.",
        "",
    ]
    for section in sections:
        title = f"`{section.key}`" if section.key else "Top level"
        lines += [f"## {title}", ""]
        doc = class_source(section.cls).doc
        lines += [f"`{section.cls.__name__}`" + (f": {' '.join(doc.split())}" if doc else "."), ""]
        lines += [*_table(section.rows), ""]
    strategies = _registered_strategies()
    if strategies:
        lines += [
            "## Strategy settings",
            "",
            "Each registered strategy's settings (`ttsearch/search/strategies/registry.py`), set in a `strategies`",
            "item whose `name` is the strategy's.",
            "",
        ]
        for name, strategy in strategies:
            settings = getattr(strategy, "settings", None)
            if settings is None or not dataclasses.is_dataclass(settings):
                continue
            doc = class_source(settings).doc
            lines += [f"### `{name}`", ""]
            lines += [f"`{settings.__name__}`" + (f": {' '.join(doc.split())}" if doc else "."), ""]
            rows = []
            for field in dataclasses.fields(settings):
                found = field_source(settings, field.name)
                default = _default(settings, field, found.default)
                rows.append((f"`{field.name}`", _type(field.type), default, found.doc or "–"))
            lines += [*_table(rows, head="setting"), ""]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
