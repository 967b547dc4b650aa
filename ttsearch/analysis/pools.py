"""What the sample pools did for a sweep (`ttsearch.sweep.pools`): the samples they saved, and how much their
expectations narrow the accuracy curves against the first k samples that searching each budget alone reads."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import pyarrow as pa

from ttsearch.analysis.curves import as_frame, with_strategy_config
from ttsearch.analysis.render import markdown_table


@dataclass(frozen=True)
class SampleCounts:
    """Generations the sweep's saved searches requested, and what its budgets would have requested searched one by
    one: what the sample pools saved (`ttsearch.sweep.pools`). Read from the rows' `samples`, so early stopping's
    replayed rows count what each budget spends, not its pool."""

    generated: int
    alone: int

    def line(self) -> str:
        saved = f", {1 - self.generated / self.alone:.0%} saved by sample pools" if self.generated < self.alone else ""
        return f"samples: {self.generated:,} generated; each budget searched alone: {self.alone:,}{saved}"


SAMPLE_COLUMNS = ["unique_id", "strategy_config", "budget", "seed", "pool_budget", "samples"]


def sample_counts(table_or_frame: pa.Table | pd.DataFrame) -> SampleCounts:
    """Samples of the searches behind the rows: each job's at its own budget once, against every budget's."""
    rows = table_or_frame.select(SAMPLE_COLUMNS) if isinstance(table_or_frame, pa.Table) else table_or_frame
    jobs = as_frame(rows)[SAMPLE_COLUMNS].drop_duplicates(["unique_id", "strategy_config", "budget", "seed"])
    searched = jobs[jobs["budget"] == jobs["pool_budget"].fillna(jobs["budget"])]
    return SampleCounts(int(searched["samples"].sum()), int(jobs["samples"].sum()))


def pool_standard_errors(finished: pd.DataFrame) -> pd.DataFrame:
    """Of finished rows, per (strategy_label, budget) derived from a sample pool: the standard error across
    questions of the accuracy as the first k samples give it (`correct`, the realisation: what searching each
    budget alone measures) and as the pool's expectation gives it (`accuracy`), in points. First-k needs
    (first-k s.e. / pool s.e.)² times the questions for the same error."""
    derived = finished[(finished["budget"] < finished["pool_budget"]) & finished["accuracy"].notna()]
    rows = []
    for (label, budget), group in derived.groupby(["strategy_label", "budget"], sort=True):
        first_k = group.dropna(subset=["correct"]).astype({"correct": float}).groupby("unique_id")["correct"].mean()
        pooled = group.groupby("unique_id")["accuracy"].mean()
        rows.append(
            {
                "label": label,
                "budget": budget,
                "questions": len(pooled),
                "first-k accuracy %": 100 * first_k.mean(),
                "first-k s.e.": 100 * first_k.sem(),
                "pool accuracy %": 100 * pooled.mean(),
                "pool s.e.": 100 * pooled.sem(),
            }
        )
    return pd.DataFrame(rows)


def pool_section(frame: pd.DataFrame) -> list[str]:
    """How much the sample pools' expectations narrow the curves against first-k (`pool_standard_errors`)."""
    errors = pool_standard_errors(frame)
    if errors.empty:
        return []
    shown = errors.assign(
        **{
            column: errors[column].map("{:.2f}".format)
            for column in errors.columns
            if "%" in column or "s.e." in column
        }
    )
    return [
        "## Sample pools",
        "",
        "Budgets below a pool's are derived from its samples (the docs' *How results are computed*, *Sample pools*). "
        f"{sample_counts(with_strategy_config(frame)).line().capitalize()}. Their accuracy is the expectation over "
        "the pool's subsets; the first k "
        "samples alone (what searching the budget by itself measures) give the same mean with a larger standard "
        "error across questions:",
        "",
        markdown_table(shown.set_index("label").rename_axis("strategy_label")),
        "",
    ]
