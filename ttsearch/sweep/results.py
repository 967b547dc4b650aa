"""The results store: one sweep's run directory, on any pyarrow filesystem (local, `file://`, `s3://`, `gs://`).

Layout of a run directory:

    sweep.json                     the sweep's fingerprint: what decides its rows (see `sweep_fingerprint`)
    config.yaml                    the full config the sweep ran with
    results/shard-K-of-N.parquet   a finished shard: the rows of every job (answers, or deterministic error rows)
    partial/shard-K-of-N.parquet   an unfinished shard's finished jobs (some jobs hit infrastructure failures)
    grading/shard-K-of-N.json      what grading did in the shard's latest run (`Grader.stats`)
    report/, policy.json           written by `ttsearch report` / `ttsearch optimize`

Every write is atomic (a temporary name, then a rename), so a killed task never leaves a file that looks
finished. Every command goes through `RunStore`, so `report`, `optimize` and `solve` read a run directory
exactly where `sweep` wrote it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml
from omegaconf import OmegaConf

from ttsearch.config import SweepConfig, entry_record, load_config_text
from ttsearch.errors import TTSearchError
from ttsearch.search.grading import GradingStats
from ttsearch.search.strategies import strategy_config

RESULT_SCHEMA = pa.schema(
    [
        ("unique_id", pa.string()),
        ("level", pa.int32()),
        ("subject", pa.string()),
        ("strategy", pa.string()),
        ("strategy_config", pa.string()),
        ("strategy_label", pa.string()),
        ("selection", pa.string()),
        ("aggregation", pa.string()),
        ("settings", pa.json_()),
        ("budget", pa.int32()),
        ("seed", pa.int64()),
        ("answer", pa.string()),
        ("reference", pa.string()),
        ("correct", pa.bool_()),
        ("accuracy", pa.float64()),
        ("accuracy_low", pa.float64()),
        ("accuracy_high", pa.float64()),
        ("accuracy_se", pa.float64()),
        ("coverage", pa.float64()),
        ("pool_budget", pa.int32()),
        ("pool_subsets", pa.int32()),
        ("score", pa.float64()),
        ("samples", pa.int64()),
        ("generated_tokens", pa.int64()),
        ("prompt_tokens", pa.int64()),
        ("cached_prompt_tokens", pa.int64()),
        ("verifier_tokens", pa.int64()),
        ("cached_verifier_tokens", pa.int64()),
        ("generator_flops", pa.float64()),
        ("verifier_flops", pa.float64()),
        ("total_flops", pa.float64()),
        ("wall_s", pa.float64()),
        ("candidate_answers", pa.list_(pa.string())),
        ("candidate_scores", pa.list_(pa.float64())),
        ("candidate_correct", pa.list_(pa.bool_())),
        ("candidate_generated_tokens", pa.list_(pa.int64())),
        ("candidate_verifier_tokens", pa.list_(pa.int64())),
        ("error", pa.string()),
        ("shard", pa.int32()),
        ("node_id", pa.string()),
    ]
)
# What the report and optimize need; files of older sweep versions lack e.g. the FLOPs columns.
REQUIRED_COLUMNS = (
    "unique_id",
    "level",
    "subject",
    "strategy",
    "strategy_label",
    "selection",
    "aggregation",
    "budget",
    "seed",
    "answer",
    "reference",
    "correct",
    "score",
    "samples",
    "generated_tokens",
    "prompt_tokens",
    "cached_prompt_tokens",
    "verifier_tokens",
    "wall_s",
    "candidate_answers",
    "candidate_scores",
    "candidate_correct",
    "error",
)
ADDED_COLUMNS = {"cached_verifier_tokens": 0}
"""Columns newer than the first sweeps, and the value a row of an older file reads as (no verifier prefix cache)."""
MANIFEST = "sweep.json"
CONFIG = "config.yaml"
RESULTS = "results"
PARTIAL = "partial"
GRADING = "grading"


def with_added_columns(table: pa.Table, schema: pa.Schema = RESULT_SCHEMA) -> pa.Table:
    """`table` with every column of `ADDED_COLUMNS` that `schema` has, rows of files written before it existed
    reading its default."""
    for name, default in ADDED_COLUMNS.items():
        if schema.get_field_index(name) < 0:
            continue
        if name not in table.column_names:
            table = table.append_column(name, pa.array([default] * table.num_rows, schema.field(name).type))
        elif table[name].null_count:
            table = table.set_column(table.column_names.index(name), name, pc.fill_null(table[name], default))
    return table


def with_estimate_columns(table: pa.Table) -> pa.Table:
    """`table` with the sample-pool estimate columns (`ttsearch.sweep.pools`). A row written before them searched
    its budget alone and broke ties by position, so it reads its own realisation: accuracy (and its tie bounds) =
    `correct`, standard error 0, coverage = any candidate right, its own budget as its pool."""
    if all(name in table.column_names and not table[name].null_count for name in ("accuracy", "pool_budget")):
        return table
    correct = pc.cast(table["correct"], pa.float64())
    covered = [
        None if flags is None else float(any(flag is True for flag in flags))
        for flags in table["candidate_correct"].to_pylist()
    ]
    own = {
        "accuracy": correct,
        "accuracy_low": correct,
        "accuracy_high": correct,
        "accuracy_se": pa.array([0.0] * table.num_rows),
        "coverage": pa.array(covered, pa.float64()),
        "pool_budget": pc.cast(table["budget"], pa.int32()),
        "pool_subsets": pa.array([1] * table.num_rows, pa.int32()),
    }
    old = table["pool_budget"].is_null() if "pool_budget" in table.column_names else None
    for name, values in own.items():
        if name not in table.column_names:
            table = table.append_column(name, values)
        elif old is not None:
            column = table.column_names.index(name)
            table = table.set_column(column, name, pc.if_else(old, pc.cast(values, table[name].type), table[name]))
    return table


class ResultsError(TTSearchError):
    """A run directory that cannot be used as asked: missing, foreign, or holding a different sweep."""


def shard_file(index: int, total: int) -> str:
    return f"shard-{index:05d}-of-{total:05d}.parquet"


def output_path(output_dir: str) -> str:
    """A filesystem URI as given, a local path made absolute (shard tasks may run elsewhere)."""
    return output_dir if "://" in output_dir else str(Path(output_dir).resolve())


def problems_fingerprint(cfg: SweepConfig, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """The problems (by content: id, text, answer), their sharding and the generator (everything that changes
    its numbers): what every sharded run's rows depend on."""
    content = hashlib.sha256()
    for problem in problems:
        content.update(json.dumps([problem["unique_id"], problem["problem"], problem["answer"]]).encode())
    generator = cfg.generator
    return {
        "problems": content.hexdigest(),
        "num_problems": len(problems),
        "shards": min(cfg.data.shards, len(problems)),
        "generator": {
            "model": generator.model,
            "backend": generator.backend,
            "dtype": generator.dtype,
            "max_model_len": generator.max_model_len,
        },
    }


def sweep_fingerprint(cfg: SweepConfig, problems: list[dict[str, Any]]) -> dict[str, Any]:
    """Everything that decides which rows a sweep produces and what they mean.

    Problems count by content (id, text, answer), so an edited dataset is a different sweep; models by
    everything that changes their numbers (backend, dtype, context length, verifier truncation).
    """
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    verifier = cfg.verifier
    return {
        **problems_fingerprint(cfg, problems),
        "verifier": {
            "kind": verifier.kind,
            "model": verifier.model,
            "dtype": verifier.dtype,
            "max_input_tokens": verifier.max_input_tokens,
        },
        **{key: plain[key] for key in ("search", "budgets", "seeds", "pool_subsets")},
        "strategies": [spec.record() for spec in cfg.strategies],
    }


def with_new_strategy_settings(manifest: dict[str, Any]) -> dict[str, Any]:
    """A sweep manifest whose strategies are today's records (`entry_record`: settings added since at their
    defaults, older versions' settings of other strategies dropped), as its config reads when loaded now: a sweep
    started before an upgrade is still the same sweep after it."""
    if "strategies" not in manifest:
        return manifest
    return manifest | {"strategies": [entry_record(entry) for entry in manifest["strategies"]]}


def run_config_text(text: str) -> str:
    """A run's saved config.yaml as today's `load_config` reads it: its strategy entries migrated (`entry_record`)."""
    saved = yaml.safe_load(text) or {}
    if isinstance(saved.get("strategies"), list):
        saved["strategies"] = [entry_record(entry) for entry in saved["strategies"]]
    if isinstance(saved.get("serve", {}).get("strategy"), dict):
        saved["serve"]["strategy"] = entry_record(saved["serve"]["strategy"])
    return yaml.safe_dump(saved, sort_keys=False)


def saved_config(cfg: SweepConfig) -> str:
    """The config.yaml a sweep saves: every section, its strategies as flat records (as a user writes them)."""
    plain = OmegaConf.to_container(OmegaConf.structured(cfg))
    plain["strategies"] = [spec.record() for spec in cfg.strategies]
    plain["serve"]["strategy"] = cfg.serve.strategy.record()
    return yaml.safe_dump(plain, sort_keys=False)


def settings_column(store: RunStore, table: pa.Table) -> pa.Table:
    """`table` with its `settings` column, filled for the rows of files written before it existed from the run's
    config.yaml (each row's `strategy_config` names the entry); null where the directory has no config.yaml."""
    if "settings" in table.column_names and not table["settings"].null_count:
        return table
    if not store.exists(CONFIG):
        return (
            table
            if "settings" in table.column_names
            else table.append_column("settings", pa.nulls(len(table), pa.json_()))
        )
    saved = load_config_text(run_config_text(store.read_text(CONFIG)))
    by_config = {strategy_config(spec): json.dumps(spec.filled_settings()) for spec in saved.strategies}
    filled = [by_config.get(config) for config in table["strategy_config"].to_pylist()]
    if "settings" in table.column_names:
        filled = [
            old if old is not None else new for old, new in zip(table["settings"].to_pylist(), filled, strict=True)
        ]
        table = table.drop_columns(["settings"])
    return table.append_column("settings", pa.array(filled, pa.json_()))


class RunStore:
    """One run directory behind one pyarrow filesystem; every path below is relative to the directory.

    `schema` is the rows' schema: a sweep's result rows by default, `ttsearch label`'s step labels for a
    labelling run; both are sharded, resumed and claimed the same way.
    """

    def __init__(
        self, location: str | Path, filesystem: pafs.FileSystem | None = None, schema: pa.Schema = RESULT_SCHEMA
    ):
        """`location`: a local path or a filesystem URI; or, with `filesystem`, a path inside that filesystem."""
        self.schema = schema
        if filesystem is not None:
            self.uri, self.fs, self.root = str(location), filesystem, str(location)
            return
        self.uri = output_path(str(location))
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ResultsError(f"cannot open run directory {self.uri}: {exc}") from None

    @classmethod
    def of(cls, run: str | Path | RunStore) -> RunStore:
        return run if isinstance(run, RunStore) else cls(run)

    # -- paths and plain files ------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The run directory's own name, for titles."""
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def location(self, *parts: str) -> Path | str:
        """Where a file is, for messages and callers: a local `Path`, or the URI on a remote filesystem."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            return Path(self.path(*parts))
        return "/".join([self.uri.rstrip("/"), *parts])

    def _type(self, *parts: str) -> pafs.FileType:
        return self.fs.get_file_info(self.path(*parts)).type

    def exists(self, *parts: str) -> bool:
        return self._type(*parts) != pafs.FileType.NotFound

    def read_text(self, *parts: str) -> str:
        if self._type(*parts) != pafs.FileType.File:
            raise ResultsError(f"no {'/'.join(parts)} in {self.uri}")
        with self.fs.open_input_stream(self.path(*parts)) as stream:
            return stream.read().decode()

    def write_text(self, text: str, *parts: str) -> None:
        self._atomic(lambda tmp: self._write_bytes(tmp, text.encode()), *parts)

    def _write_bytes(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

    def _atomic(self, write: Any, *parts: str) -> None:
        """`write(temporary path)`, then rename into place: readers see the old file or the whole new one."""
        final = self.path(*parts)
        parent, _, name = final.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.{name}.{uuid.uuid4().hex}.tmp"
        write(tmp)
        self.fs.move(tmp, final)

    @contextlib.contextmanager
    def local_dir(self, *parts: str) -> Iterator[Path]:
        """A local directory to write into (plots, Markdown); on a remote filesystem it is uploaded on exit."""
        if isinstance(self.fs, pafs.LocalFileSystem):
            path = Path(self.path(*parts))
            path.mkdir(parents=True, exist_ok=True)
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="ttsearch-") as tmp:
            yield Path(tmp)
            self.fs.create_dir(self.path(*parts), recursive=True)
            pafs.copy_files(tmp, self.path(*parts), destination_filesystem=self.fs)

    # -- claiming the directory for a sweep -----------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.read_text(MANIFEST))

    def claim(self, fingerprint: dict[str, Any], cfg: SweepConfig) -> None:
        """Claim the directory for this sweep, or check it already is this sweep's.

        Refuses, without touching anything, a directory that holds another sweep or foreign results.
        """
        if self._type(MANIFEST) == pafs.FileType.File:
            saved = with_new_strategy_settings(self.manifest())
            changed = sorted(key for key in fingerprint.keys() | saved.keys() if fingerprint.get(key) != saved.get(key))
            if changed == ["budgets"] and set(saved["budgets"]) < set(fingerprint["budgets"]):
                self._grow_budgets(fingerprint, cfg)
            elif changed:
                raise ResultsError(
                    f"{self.uri} holds results of a different sweep (it differs in: {', '.join(changed)}); "
                    "choose another output_dir"
                )
        elif self.exists(RESULTS):
            raise ResultsError(
                f"{self.path(RESULTS)} exists but {self.uri} has no {MANIFEST}: not a sweep of ours, refusing to mix"
            )
        else:
            # The manifest's presence means claimed, so it goes before `results/`: a run killed in between
            # leaves a directory the same sweep can claim again.
            self.write_text(saved_config(cfg), CONFIG)
            self.write_text(json.dumps(fingerprint, indent=2), MANIFEST)
            self.fs.create_dir(self.path(RESULTS), recursive=True)

    def _grow_budgets(self, fingerprint: dict[str, Any], cfg: SweepConfig) -> None:
        """The same sweep with budgets added: every finished shard is reopened as a partial record, so the run
        computes the new budgets' jobs and extends the pools it saved (`ttsearch.sweep.pools.saved_pools`).
        Shards first, manifest last: a run killed in between finds the old budgets and reopens again."""
        self.fs.create_dir(self.path(PARTIAL), recursive=True)
        for name in sorted(self._names(RESULTS)):
            self.fs.move(self.path(RESULTS, name), self.path(PARTIAL, name))
        self.write_text(saved_config(cfg), CONFIG)
        self.write_text(json.dumps(fingerprint, indent=2), MANIFEST)

    # -- shards ---------------------------------------------------------------------------------
    def _names(self, folder: str) -> set[str]:
        if self._type(folder) != pafs.FileType.Directory:
            return set()
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(folder)))
        return {info.base_name for info in infos if info.base_name.endswith(".parquet")}

    def finished_shards(self, total: int) -> set[int]:
        """Shards whose final file exists: every job has a row (an answer or a deterministic error)."""
        names = self._names(RESULTS)
        return {i for i in range(total) if shard_file(i, total) in names}

    def write_shard(self, index: int, total: int, table: pa.Table) -> None:
        """Write the finished shard, then drop its partial record (a crash in between leaves both: harmless,
        the finished file wins)."""
        self._atomic(lambda tmp: pq.write_table(table, tmp, filesystem=self.fs), RESULTS, shard_file(index, total))
        if self._type(PARTIAL, shard_file(index, total)) == pafs.FileType.File:
            self.fs.delete_file(self.path(PARTIAL, shard_file(index, total)))

    def write_partial(self, index: int, total: int, table: pa.Table) -> None:
        """The finished jobs of a shard that could not finish; a re-run computes only the rest."""
        self._atomic(lambda tmp: pq.write_table(table, tmp, filesystem=self.fs), PARTIAL, shard_file(index, total))

    def write_grading(self, index: int, total: int, stats: GradingStats) -> None:
        """What grading did in the shard's latest run (`Grader.stats`), for the run's summary."""
        name = shard_file(index, total).removesuffix(".parquet") + ".json"
        self.write_text(json.dumps(dataclasses.asdict(stats)), GRADING, name)

    def grading(self) -> GradingStats:
        """Grading statistics summed over the shards (each as its latest run left it); zero when none saved."""
        if self._type(GRADING) != pafs.FileType.Directory:
            return GradingStats()
        infos = self.fs.get_file_info(pafs.FileSelector(self.path(GRADING)))
        names = sorted(info.base_name for info in infos if info.base_name.endswith(".json"))
        return sum(
            (GradingStats.from_record(json.loads(self.read_text(GRADING, name))) for name in names), GradingStats()
        )

    def read_partial(self, index: int, total: int) -> pa.Table | None:
        path = self.path(PARTIAL, shard_file(index, total))
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return with_added_columns(pq.read_table(path, filesystem=self.fs, schema=self.schema), self.schema)

    def _read(self, folder: str, as_written: bool = False) -> list[tuple[str, pa.Table]]:
        """Each file of `folder` in the store's schema (its added columns read as their defaults), or as written."""
        schema = None if as_written else self.schema
        read = [
            (name, pq.read_table(self.path(folder, name), filesystem=self.fs, schema=schema))
            for name in sorted(self._names(folder))
        ]
        if as_written:
            return read
        return [(name, self._upgraded(with_added_columns(table, self.schema))) for name, table in read]

    def _upgraded(self, table: pa.Table) -> pa.Table:
        """Rows of sweep files written before the `settings` column get it from the run's config.yaml, and before the
        sample-pool estimates their own realisation's (`with_estimate_columns`)."""
        if "settings" not in self.schema.names:
            return table
        return with_estimate_columns(settings_column(self, table))

    def read_saved(self, command: str) -> pa.Table:
        """Every row a (finished or partly finished) run of `ttsearch <command>` saved here; FileNotFoundError
        when it saved none, for readers of another command's output (training data)."""
        if not self.exists(RESULTS) and not self.exists(PARTIAL):
            raise FileNotFoundError(f"{self.location()} holds no `ttsearch {command}` output (no results/ or partial/)")
        return self.read_results(include_partial=True)

    def read_results(self, include_partial: bool = False) -> pa.Table:
        """Every row of the finished shards (and of the partial records if asked), in the sweep's schema."""
        folders = (RESULTS, PARTIAL) if include_partial else (RESULTS,)
        tables = [table for folder in folders for _, table in self._read(folder)]
        return pa.concat_tables(tables) if tables else self.schema.empty_table()

    def load_frame(self) -> pd.DataFrame:
        """The finished rows as a DataFrame, for the report and optimize.

        Files are read one by one so that a foreign or truncated file is named; files from sweep versions
        with extra columns (e.g. FLOPs) merge, the extras being null where absent, except the `ADDED_COLUMNS`,
        which read as their defaults.
        """
        if self._type() != pafs.FileType.Directory:
            raise ResultsError(f"run directory {self.location()} does not exist")
        files = self._read(RESULTS, as_written=True)
        if not files:
            raise ResultsError(
                f"no Parquet files in {self.location(RESULTS)}: run `ttsearch sweep` with output_dir={self.location()}"
            )
        for name, table in files:
            missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
            if missing:
                raise ResultsError(f"{name} in {self.location(RESULTS)} lacks required columns: {', '.join(missing)}")
        merged = pa.concat_tables([self._upgraded(table) for _, table in files], promote_options="permissive")
        frame = with_added_columns(merged).to_pandas()
        if frame.empty:
            raise ResultsError(f"the Parquet files in {self.location(RESULTS)} hold no rows")
        return frame


def load_results(run_dir: str | Path | RunStore) -> pd.DataFrame:
    """All finished result rows of a sweep, one per (problem, strategy configuration, budget, seed, selection)."""
    return RunStore.of(run_dir).load_frame()
