"""`ttsearch sweep`: every (strategy, budget, seed) cell on every problem, results as Parquet.

The sweep itself (sharding, resume, replicas) is `ttsearch.sweep.cells.run_sweep`; this module adds the summary the
command prints.
"""

from __future__ import annotations

import pyarrow as pa

from ttsearch.analysis.curves import covered


def summary(table: pa.Table) -> str:
    """Accuracy and coverage (%) per strategy × budget, averaged over problems and seeds; error rows left out,
    ungraded rows left out of accuracy.

    Coverage is the share of cells where any candidate was right: what an oracle verifier would get.
    """
    frame = table.select(["strategy_label", "budget", "correct", "candidate_correct", "error"]).to_pandas()
    frame = frame[frame["error"].isna()]
    if frame.empty:
        return "no rows without an error"
    frame["correct"] = frame["correct"].astype("float")  # ungraded (None) becomes NaN, which the mean skips
    frame["covered"] = frame["candidate_correct"].map(covered)
    parts = []
    for column, title in (("correct", "accuracy %"), ("covered", "coverage % (pass@N)")):
        pivot = frame.pivot_table(index="strategy_label", columns="budget", values=column, aggfunc="mean") * 100
        pivot.columns = [f"N={budget}" for budget in pivot.columns]
        pivot.index.name = title
        parts.append(pivot.round(1).to_string())
    return "\n\n".join(parts)
