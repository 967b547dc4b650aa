"""pass@1 of revision attempt t, from a sweep's rows: what `ttsearch report`'s revisions section and `ttsearch
eval-revision` both read.

A `revisions` job's candidates are its chains' attempts, chain by chain (`ttsearch.search.strategies.revisions`):
with T attempts per chain, candidate i is attempt i % T + 1 of chain i // T. T is read back from the row's
`settings` column by the rule the strategy itself uses (its settings' `chain_length`). Error rows are left out of
everything; ungraded candidates (null flags) out of every mean (`ttsearch.analysis.curves`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
from matplotlib import colormaps
from matplotlib.figure import Figure

from ttsearch.analysis.curves import as_frame, finished_rows, search_jobs
from ttsearch.analysis.render import curve_style, mean_se_text, y_limits
from ttsearch.config import StrategySpec

ATTEMPT_COLUMNS = ["strategy_config", "budget", "attempt", "mean", "se", "candidates", "questions"]


def chain_length(settings: str, budget: int) -> int:
    """T, the attempts per chain, of a revisions row (its `settings` column)."""
    return StrategySpec("revisions", settings=json.loads(settings)).options.chain_length(budget)


def attempt_accuracy(rows: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """pass@1 (%) of attempt t of the revisions chains, per configuration, budget and t = 1..T.

    Columns `ATTEMPT_COLUMNS`: mean is the share of graded attempt-t candidates that are right (over chains,
    questions and seeds), se the standard error of the per-question shares (NaN with one question), candidates
    and questions those graded. Each job counts once, however many selections it has; no revisions job: empty.
    """
    frame, _ = finished_rows(as_frame(rows))
    jobs = search_jobs(frame[frame["strategy"] == "revisions"])
    jobs = jobs[jobs["settings"].notna()]  # an old run's rows its config.yaml gave no settings for: T unknown
    if jobs.empty:
        return pd.DataFrame(columns=ATTEMPT_COLUMNS)
    lengths = [
        chain_length(settings, budget) for settings, budget in zip(jobs["settings"], jobs["budget"], strict=True)
    ]
    flags = (
        jobs[["unique_id", "strategy_config", "budget", "candidate_correct"]]
        .assign(length=lengths)
        .reset_index(drop=True)
        .explode("candidate_correct")
    )
    flags["attempt"] = flags.groupby(level=0).cumcount() % flags["length"] + 1  # position in the job → attempt
    flags = flags.dropna(subset=["candidate_correct"])  # ungraded candidates, and jobs without any
    flags["correct"] = flags["candidate_correct"].astype(bool)
    keys = ["strategy_config", "budget", "attempt"]
    per_question = flags.groupby([*keys, "unique_id"])["correct"].mean()
    points = flags.groupby(keys)["correct"]
    return pd.DataFrame(
        {
            "mean": 100 * points.mean(),
            "se": 100 * per_question.groupby(level=keys).sem(),
            "candidates": points.size(),
            "questions": per_question.groupby(level=keys).size(),
        }
    ).reset_index()[ATTEMPT_COLUMNS]


def curve_label(strategy_config: str, budget: int) -> str:
    """One per-attempt curve of a sweep: a revisions configuration at one budget."""
    return f"{strategy_config} N={budget}"


def attempt_table(curves: pd.DataFrame) -> pd.DataFrame:
    """label × attempt ("t=1", …) of "mean ± se" strings from points with `label`, `attempt`, `mean`, `se`, in the
    curves' order; "–" where a curve has no such attempt."""
    text = curves.assign(text=[mean_se_text(m, s) for m, s in zip(curves["mean"], curves["se"], strict=True)])
    table = text.pivot(index="label", columns="attempt", values="text").reindex(pd.unique(curves["label"]))
    table = table.reindex(columns=sorted(table.columns)).fillna("–")
    table.columns = [f"t={attempt}" for attempt in table.columns]
    return table


def plot_attempt_curves(path: Path | None, title: str, curves: pd.DataFrame) -> Figure:
    """pass@1 (%) vs attempt t, a line per `label` (in the curves' order) with ±1 s.e. bars; saved as a PNG at
    `path` unless None. Attempts are few and evenly spaced, so the x-axis is linear; y fitted by `y_limits`; each
    curve has its own marker, so equal curves stay distinguishable."""
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    palette = colormaps["tab10"]
    curves = curves.assign(se=curves["se"].astype(float).fillna(0))  # no error bar where the error is undefined
    labels = pd.unique(curves["label"])
    for i, label in enumerate(labels):
        line = curves[curves["label"] == label].sort_values("attempt")
        ax.errorbar(
            line["attempt"],
            line["mean"],
            yerr=line["se"],
            marker=curve_style(i, len(labels))[0],  # the attempt axis is linear: markers, not a log-axis dodge
            capsize=3,
            color=palette(i % palette.N),
            label=label,
        )
    ax.set_ylim(*y_limits(float((curves["mean"] - curves["se"]).min()), float((curves["mean"] + curves["se"]).max())))
    ax.set_xticks(sorted(curves["attempt"].unique()))
    ax.set_xlabel("attempt t of a revision chain (t − 1 revisions)")
    ax.set_ylabel("pass@1 %")
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    if len(curves):
        ax.legend(fontsize=9)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig
