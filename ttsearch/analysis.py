"""Shared analysis of a sweep's rows: cells, difficulty bins, curves, plots and Markdown tables.

`ttsearch report` and `ttsearch optimize` both build on these, so a bin or a curve means the same in both.
Error rows (cells that failed deterministically) carry no answer: `finished_rows` drops them before any
accuracy, difficulty or policy is computed, and the reports say how many were dropped.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API renders with Agg and leaves pyplot's global state alone

from ttsearch.errors import TTSearchError


class AnalysisError(TTSearchError, ValueError):
    """A sweep whose rows cannot answer the question asked (e.g. no best-of-N rows to estimate difficulty)."""


# One search job: rows that differ only in `selection` were picked from the same candidates.
CELL_KEYS = ["unique_id", "strategy_config", "budget", "seed"]
N_BINS = 5
NEAR_ZERO_ACCURACY = 10.0  # % below which absolute accuracy says little and coverage/order are the signal


def as_frame(table_or_frame: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table_or_frame.to_pandas() if isinstance(table_or_frame, pa.Table) else table_or_frame


def search_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per search job, so that candidates shared by several selections count once."""
    if "strategy_config" not in frame:  # written before the column existed: the label minus its selection
        frame = frame.assign(strategy_config=frame["strategy_label"].str.replace(r"/[^/]+", "", n=1, regex=True))
    return frame.drop_duplicates(subset=CELL_KEYS)


def oracle_pass_at_1(table_or_frame: pa.Table | pd.DataFrame) -> pd.Series:
    """unique_id → share of correct best-of-N candidates over all budgets and seeds (the paper's oracle difficulty).

    Questions without any best-of-N candidate (none run, or every job failed) are absent.
    """
    frame = as_frame(table_or_frame)
    cells = search_cells(frame[frame["strategy"] == "best_of_n"])
    outcomes = cells[["unique_id", "candidate_correct"]].explode("candidate_correct").dropna()
    return outcomes["candidate_correct"].astype(bool).groupby(outcomes["unique_id"]).mean().rename("pass@1")


def difficulty_bins(table_or_frame: pa.Table | pd.DataFrame, n_bins: int = N_BINS) -> pd.Series:
    """unique_id → difficulty bin 1..n_bins: equal-size quantiles of oracle pass@1, bin 1 the easiest.

    Bins are cut on ranks, not on pass@1 values, so that a small model's pile of pass@1 = 0 questions
    still yields n_bins populated bins (value quantiles would collapse onto duplicate edges). Ties are
    ranked by MATH level (higher level → harder bin), then by a CRC32 of unique_id: deterministic,
    and unlike the id's spelling not sorted by subject. Tied questions may therefore straddle a bin
    edge; the report shows each bin's pass@1 range so that this is visible.
    """
    frame = as_frame(table_or_frame)
    pass1 = oracle_pass_at_1(frame)
    if pass1.empty:
        return pd.Series(dtype="int64", name="bin")
    order = pd.DataFrame({
        "pass1": pass1,
        "level": frame.drop_duplicates("unique_id").set_index("unique_id")["level"].reindex(pass1.index),
        "hash": [zlib.crc32(str(uid).encode()) for uid in pass1.index],
    }).sort_values(["pass1", "level", "hash"], ascending=[False, True, True])
    ranks = np.arange(len(order))
    return pd.Series(1 + ranks * n_bins // len(order), index=order.index, name="bin").sort_index()


def mean_curves(frame: pd.DataFrame, value: str, label: str, x: str = "budget") -> pd.DataFrame:
    """Mean of boolean `value` in % per (label, budget), its standard error, placed at the mean of `x`.

    The error is across seeds when a point has several (what a re-run would change), else across
    problems (how much the problem sample matters).
    """
    rows = []
    for (name, budget), group in frame.groupby([label, "budget"], sort=True):
        per_seed = group.groupby("seed")[value].mean()
        spread = per_seed if len(per_seed) > 1 else group.groupby("unique_id")[value].mean()
        rows.append({"label": name, "budget": budget, "x": group[x].mean(),
                     "mean": 100 * group[value].mean(), "se": 100 * spread.sem()})
    return pd.DataFrame(rows, columns=["label", "budget", "x", "mean", "se"])


def plot_curves(path: Path, title: str, frame: pd.DataFrame, *, value: str, label: str, ylabel: str,
          x: str = "budget", xlabel: str = "budget N (samples per problem)",
          facets: tuple[str, dict] | None = None) -> None:
    """One PNG of `value` vs `x` (log2), a line per `label`; `facets` = (column, {key: subplot title})."""
    keys = [None] if facets is None else list(facets[1])
    fig = Figure(figsize=(max(6.4, 3.6 * len(keys)), 4.8), layout="constrained")
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    names = sorted(frame[label].unique())
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {name: palette(i % palette.N) for i, name in enumerate(names)}  # same strategy, same colour
    handles = {}
    for ax, key in zip(axes, keys, strict=True):
        part = frame if facets is None else frame[frame[facets[0]] == key]
        points = mean_curves(part, value, label, x)
        points = points[points["x"] > 0]  # log axis; a point with no tokens/FLOPs recorded has no place on it
        for name, line in points.groupby("label"):
            handles[name] = ax.errorbar(line["x"], line["mean"], yerr=line["se"].fillna(0), marker="o", capsize=3,
                                        color=colors[name], label=name)
        ax.set_xscale("log", base=2)
        if x == "budget":
            budgets = sorted(part["budget"].unique())
            ax.set_xticks(budgets, labels=[str(b) for b in budgets])
            ax.minorticks_off()
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if facets is not None:
            ax.set_title(facets[1][key], fontsize=10)
    axes[0].set_ylabel(ylabel)
    top = min(105, max(5, axes[0].get_ylim()[1]))  # all-zero curves would otherwise span ±0.05
    axes[0].set_ylim(-0.02 * top, top)  # a little room below 0 keeps zero-accuracy points visible
    fig.suptitle(title)
    fig.legend([handles[n] for n in sorted(handles)], sorted(handles), loc="outside lower center",
               ncols=max(1, min(len(handles), 2 * len(keys))), fontsize=9)
    fig.savefig(path, dpi=110)


def markdown_table(table: pd.DataFrame) -> str:
    """A markdown table with the index as first column (pandas' `to_markdown` needs `tabulate`, not installed)."""
    lines = [[table.index.name or "", *table.columns], ["---"] * (len(table.columns) + 1)]
    lines += [[key, *row] for key, row in zip(table.index, table.itertuples(index=False), strict=True)]
    return "\n".join("| " + " | ".join(str(v).replace("|", r"\|").replace("\n", " ") for v in line) + " |"
                     for line in lines)


@dataclass(frozen=True)
class ReportFile:
    """A written report and how many error rows it left out."""

    path: Path | str
    """A local path, or the URI on a remote filesystem."""
    excluded_rows: int


def finished_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows that hold an answer, and how many error rows were left out of every accuracy."""
    failed = frame["error"].notna()
    return frame[~failed], int(failed.sum())


def excluded_note(excluded: int) -> str:
    """The sentence both reports print about the error rows they left out."""
    return (f"{excluded} error rows (cells that failed deterministically) are excluded from accuracy, difficulty "
            "and policy fitting.")
