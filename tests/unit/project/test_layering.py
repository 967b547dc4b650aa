"""The shape of the house, read from the source (AST, nothing imported): which layer may import which.

Rules (the package docstrings say them too):
- the search core (`ttsearch/search/`) imports no Ray, torch, transformers or vLLM, not even lazily;
- the library never imports `ttsearch.actors` or `ttsearch.pipelines` at module level (starting replicas imports an
  actor module inside the function that starts them);
- nothing imports a pipeline, not even the CLI: its command table names each handler by a `module:function` string,
  imported when the command runs (tests are exempt: they test the pipelines);
- no import cycle between the packages, counting module-level imports (what runs when a module loads);
- no module over `MAX_LINES` lines, and only `LOOSE_MODULES` at the top of `ttsearch/`.

Run alone: `pytest tests/unit/project/test_layering.py -q` (it prints the package graph on failure).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
MAX_LINES = 600
LOOSE_MODULES = {"__init__.py", "cli.py", "errors.py"}
ENGINE_LIBRARIES = {"ray", "torch", "transformers", "vllm"}
SOURCE_DIRS = {
    "ttsearch": ROOT / "ttsearch",
    "ttsearch.actors": ROOT / "actors",
    "ttsearch.pipelines": ROOT / "pipelines",
}


@dataclass(frozen=True)
class Import:
    importer: str
    """The importing module's dotted name."""
    imported: str
    """The imported module's dotted name (for `from a.b import c`: `a.b.c` if that is a module, else `a.b`)."""
    module_level: bool
    """False for an import inside a function (lazy: it runs when the function is called)."""
    line: int


def modules() -> dict[str, Path]:
    """Dotted name → file of every module of the package, wherever its source sits."""
    found = {}
    for package, folder in SOURCE_DIRS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "ttsearch" and parts[:1] in (("actors",), ("pipelines",)):
                continue  # not there in a source tree; listed under their own folders
            found[".".join((package, *parts))] = path
    return found


MODULES = modules()


def imports_of(name: str, path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    functions = {id(node) for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}

    def visit(node: ast.AST, lazy: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            inside = lazy or id(child) in functions
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, not inside, child.lineno)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    base = ".".join(package.split(".")[: len(package.split(".")) - child.level + 1] + [base]).strip(".")
                for alias in child.names:
                    full = f"{base}.{alias.name}"
                    yield Import(name, full if full in MODULES else base, not inside, child.lineno)
            else:
                yield from visit(child, inside)

    yield from visit(tree, False)


IMPORTS = [found for name, path in MODULES.items() for found in imports_of(name, path)]


def layer(module: str) -> str:
    """The package a module belongs to: `ttsearch.X` for a subpackage's modules, the module itself if loose."""
    parts = module.split(".")
    if parts[0] != "ttsearch" or len(parts) == 1:
        return parts[0]
    candidate = ".".join(parts[:2])
    is_package = candidate in ("ttsearch.actors", "ttsearch.pipelines") or (ROOT / "ttsearch" / parts[1]).is_dir()
    return candidate if is_package else candidate


def where(found: Import) -> str:
    return f"{MODULES[found.importer].relative_to(ROOT)}:{found.line} imports {found.imported}"


def test_the_search_core_imports_no_ray_torch_or_vllm():
    bad = [
        where(i)
        for i in IMPORTS
        if i.importer.startswith("ttsearch.search") and i.imported.split(".")[0] in ENGINE_LIBRARIES
    ]
    assert bad == []


def test_the_library_imports_actors_and_pipelines_only_lazily():
    library = [i for i in IMPORTS if layer(i.importer) not in ("ttsearch.actors", "ttsearch.pipelines", "ttsearch.cli")]
    bad = [
        where(i) for i in library if i.module_level and layer(i.imported) in ("ttsearch.actors", "ttsearch.pipelines")
    ]
    assert bad == []


def test_nothing_imports_a_pipeline():
    assert [where(i) for i in IMPORTS if layer(i.imported) == "ttsearch.pipelines"] == []


HANDLER = re.compile(r"(ttsearch(?:\.\w+)+):(\w+)")


def test_the_clis_handler_strings_name_functions_that_exist():
    """How the CLI reaches a pipeline (or a library function): each `module:function` string in cli.py names a
    module-level function of a module of the package."""
    tree = ast.parse(MODULES["ttsearch.cli"].read_text())
    handlers = [
        match.groups()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        for match in [HANDLER.fullmatch(node.value)]
        if match
    ]
    assert len(handlers) >= 15, handlers  # every command and mode
    missing = [
        f"{module}:{function}"
        for module, function in handlers
        if module not in MODULES
        or function not in {node.name for node in ast.parse(MODULES[module].read_text()).body if hasattr(node, "name")}
    ]
    assert missing == []


def package_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for found in IMPORTS:
        source, target = layer(found.importer), layer(found.imported)
        if found.module_level and target.startswith("ttsearch") and source != target:
            graph.setdefault(source, set()).add(target)
    return graph


def cycle_in(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a path that ends where it starts, or None."""
    state: dict[str, str] = {}

    def walk(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target] if target in path else [node, target]
            if target not in state and (found := walk(target, [*path, target])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := walk(start, [start])):
            return found
    return None


def test_no_import_cycle_between_packages():
    graph = package_graph()
    shown = "\n".join(f"  {source} -> {', '.join(sorted(targets))}" for source, targets in sorted(graph.items()))
    assert cycle_in(graph) is None, f"cycle {' -> '.join(cycle_in(graph))}\npackage graph:\n{shown}"


def test_no_import_cycle_inside_actors():
    graph: dict[str, set[str]] = {}
    for found in IMPORTS:
        if found.importer.startswith("ttsearch.actors.") and found.imported.startswith("ttsearch.actors."):
            graph.setdefault(found.importer, set()).add(found.imported)
    assert cycle_in(graph) is None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_no_module_is_too_long(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines: split it by role"


def test_only_a_few_loose_modules_at_the_top():
    loose = {path.name for path in (ROOT / "ttsearch").glob("*.py")}
    assert loose <= LOOSE_MODULES, f"move {sorted(loose - LOOSE_MODULES)} into the subpackage of its role"


def test_the_rules_see_every_kind_of_import():
    """The checker itself: module-level and lazy imports, `from` imports of modules and of names, relative ones."""
    by_target = {(i.importer, i.imported): i for i in IMPORTS}
    lazy = by_target[("ttsearch.runtime.replicas", "ttsearch.actors.generator")]
    assert not lazy.module_level
    assert by_target[("ttsearch.actors.generator", "ttsearch.engines.process_guard")].module_level
    assert layer("ttsearch.search.strategies.beam") == "ttsearch.search"
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": {"c"}}) is None
