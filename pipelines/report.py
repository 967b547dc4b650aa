"""`ttsearch report RUN_DIR`: the paper's plots and tables for one sweep, from its Parquet alone.

Nothing is re-run: every number is a function of `RUN_DIR/results/*.parquet`, so a report can be
rebuilt (or built on another machine) long after the replicas are gone. Plots follow the paper's
figures: budget N on a log2 axis, accuracy in %.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API renders with Agg and leaves pyplot's global state alone

REQUIRED_COLUMNS = (
    "unique_id", "level", "subject", "strategy", "strategy_label", "selection", "aggregation", "beam_width",
    "lookahead", "budget", "seed", "answer", "reference", "correct", "score", "samples", "generated_tokens",
    "prompt_tokens", "cached_prompt_tokens", "verifier_tokens", "wall_s", "candidate_answers", "candidate_scores",
    "candidate_correct", "error",
)
# One search job: rows that differ only in `selection` were picked from the same candidates.
CELL_KEYS = ["unique_id", "strategy_config", "budget", "seed"]
N_BINS = 5
NEAR_ZERO_ACCURACY = 10.0  # % below which absolute accuracy says little and coverage/order are the signal
ERRORS_LISTED = 5
# Per-problem costs shown per strategy × budget when the column exists: (column, table title, format).
COST_COLUMNS = (
    ("generated_tokens", "mean generated tokens per problem", "{:,.0f}"),
    ("verifier_tokens", "mean verifier tokens per problem", "{:,.0f}"),
    ("total_flops", "mean FLOPs per problem", "{:.3g}"),
    ("wall_s", "mean wall seconds per problem", "{:.1f}"),
)


def load_results(run_dir: str | Path) -> pd.DataFrame:
    """All result rows of a sweep, one per (problem, strategy configuration, budget, seed).

    Files are read one by one so that a foreign or truncated file is named; files from sweep
    versions with extra columns (e.g. FLOPs) merge, the extras being null where absent.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    results_dir = run_dir / "results"
    files = sorted(results_dir.rglob("*.parquet")) if results_dir.is_dir() else []
    if not files:
        raise FileNotFoundError(f"no Parquet files in {results_dir}: run `ttsearch sweep` with output_dir={run_dir}")
    tables = []
    for file in files:
        table = pq.read_table(file)
        missing = [column for column in REQUIRED_COLUMNS if column not in table.column_names]
        if missing:
            raise ValueError(f"{file.name} in {results_dir} lacks required columns: {', '.join(missing)}")
        tables.append(table)
    frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    if frame.empty:
        raise ValueError(f"the Parquet files in {results_dir} hold no rows")
    return frame


def _frame(table_or_frame: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table_or_frame.to_pandas() if isinstance(table_or_frame, pa.Table) else table_or_frame


def _cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per search job, so that candidates shared by several selections count once."""
    if "strategy_config" not in frame:  # written before the column existed: the label minus its selection
        frame = frame.assign(strategy_config=frame["strategy_label"].str.replace(r"/[^/]+", "", n=1, regex=True))
    return frame.drop_duplicates(subset=CELL_KEYS)


def oracle_pass_at_1(table_or_frame: pa.Table | pd.DataFrame) -> pd.Series:
    """unique_id → share of correct best-of-N candidates over all budgets and seeds (the paper's oracle difficulty).

    Questions without any best-of-N candidate (none run, or every job failed) are absent.
    """
    frame = _frame(table_or_frame)
    cells = _cells(frame[frame["strategy"] == "best_of_n"])
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
    frame = _frame(table_or_frame)
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


def _curves(frame: pd.DataFrame, value: str, label: str, x: str = "budget") -> pd.DataFrame:
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


def _plot(path: Path, title: str, frame: pd.DataFrame, *, value: str, label: str, ylabel: str,
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
        curves = _curves(part, value, label, x)
        curves = curves[curves["x"] > 0]  # log axis; a point with no tokens/FLOPs recorded has no place on it
        for name, line in curves.groupby("label"):
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


def _markdown_table(table: pd.DataFrame) -> str:
    """A markdown table with the index as first column (pandas' `to_markdown` needs `tabulate`, not installed)."""
    lines = [[table.index.name or "", *table.columns], ["---"] * (len(table.columns) + 1)]
    lines += [[key, *row] for key, row in zip(table.index, table.itertuples(index=False), strict=True)]
    return "\n".join("| " + " | ".join(str(v).replace("|", r"\|").replace("\n", " ") for v in line) + " |"
                     for line in lines)


def _by_budget(long: pd.DataFrame, title: str, text: Callable[[pd.Series], str]) -> str:
    """Markdown table label × budget of a long frame with `label`, `budget` columns; `text` formats one row."""
    cells = long.assign(text=long.apply(text, axis=1))
    table = cells.pivot(index="label", columns="budget", values="text").fillna("–")
    table.columns = [f"N={budget}" for budget in table.columns]
    table.index.name = title
    return _markdown_table(table)


def _mean_se(row: pd.Series) -> str:
    return f"{row['mean']:.1f}" if pd.isna(row["se"]) else f"{row['mean']:.1f} ± {row['se']:.1f}"


def _bin_table(frame: pd.DataFrame, bins: pd.Series) -> tuple[pd.DataFrame, dict[int, str]]:
    """Per bin: pass@1 range and question count, and the subplot titles that repeat them."""
    stats = oracle_pass_at_1(frame).groupby(bins).agg(["min", "max", "mean", "size"])
    table = pd.DataFrame({
        "pass@1 range": [f"{lo:.3f} – {hi:.3f}" for lo, hi in zip(stats["min"], stats["max"], strict=True)],
        "mean pass@1": stats["mean"].map("{:.3f}".format),
        "questions": stats["size"],
    }, index=pd.Index(stats.index, name="bin"))
    first, last = stats.index.min(), stats.index.max()
    titles = {b: f"bin {b}{' (easiest)' if b == first else ' (hardest)' if b == last else ''}\n"
                 f"pass@1 {stats.at[b, 'min']:.2f}–{stats.at[b, 'max']:.2f}, {stats.at[b, 'size']} q."
              for b in stats.index}
    return table, titles


def _how_to_read(frame: pd.DataFrame, accuracy: pd.DataFrame, coverage: pd.DataFrame, bins: pd.Series) -> str:
    """A paragraph of caveats that depend on this run's data, so the reader does not over-read the plots."""
    seeds, problems = frame["seed"].nunique(), frame["unique_id"].nunique()
    spread = f"across {seeds} seeds" if seeds > 1 else "across problems (one seed)"
    notes = [f"Each point averages {problems} problems × {seeds} seed{'s' if seeds > 1 else ''}; bars are ±1 "
             f"standard error {spread}. "
             "Coverage (pass@N) is the share of (problem, seed) whose candidates include a right answer: what a "
             "perfect verifier would score on the same samples, so the gap between coverage and accuracy is what "
             "better selection could recover. Budget N counts generator samples per problem; lookahead also spends "
             "k roll-out steps per sample, so compare strategies at equal generated tokens too."]
    best = accuracy["mean"].max()
    if best < NEAR_ZERO_ACCURACY:
        notes.append(f"Accuracy is near zero everywhere (best {best:.1f} %), as expected for a tiny generator such as "
                     "the embedded 135M model: the meaningful signals are coverage and the relative order of "
                     "strategies, and differences within the error bars are noise.")
        if coverage["mean"].max() < NEAR_ZERO_ACCURACY:
            notes.append(f"Coverage is near zero too (best {coverage['mean'].max():.1f} %): this run shows that the "
                         "machinery works, not which strategy is better; more samples or an easier set would.")
    if problems < 10 * N_BINS and not bins.empty:
        notes.append(f"With {problems} problems a difficulty bin holds about {problems // N_BINS}: per-bin curves "
                     "are noisy.")
    pass1 = oracle_pass_at_1(frame)
    ranges = pass1.groupby(bins).agg(["min", "max"])
    if pass1.nunique() == 1:
        notes.append(f"Every question has the same pass@1 ({pass1.iloc[0]:.3f}), so the difficulty bins carry no "
                     "difficulty information: they are an arbitrary equal-size split (by MATH level, then id hash).")
    elif (ranges["min"].to_numpy()[:-1] <= ranges["max"].to_numpy()[1:]).any():
        notes.append("Some questions with equal pass@1 fall in different bins (see the bins' ranges): bins are equal-"
                     "size rank quantiles, ties split by MATH level then by a hash of the id.")
    errors = int(frame["error"].notna().sum())
    if errors:
        notes.append(f"{errors} rows failed and count as wrong.")
    notes.append("Wall seconds are per problem while sharing replicas with every other problem in flight: a latency, "
                 "not a cost.")
    return " ".join(notes)


def _contents(frame: pd.DataFrame) -> list[str]:
    """Markdown lines: what the run holds, and its most frequent errors (by their last line, the exception)."""
    errors = frame["error"].dropna()
    counts = pd.DataFrame({"count": {
        "rows": len(frame), "problems": frame["unique_id"].nunique(), "seeds": frame["seed"].nunique(),
        "strategy configurations": frame["strategy_label"].nunique(), "budgets": frame["budget"].nunique(),
        "rows with an error": len(errors)}})
    counts.index.name = "what"
    lines = ["## Run contents", "", _markdown_table(counts), ""]
    if len(errors):
        first = errors.map(lambda e: e.strip().splitlines()[-1][:160] if e.strip() else "(empty)").value_counts()
        listed = first.head(ERRORS_LISTED).rename("rows").to_frame()
        listed.index.name = "error (last line)"
        lines += [f"Most frequent errors ({len(first)} distinct):", "", _markdown_table(listed), ""]
    return lines


def build_report(run_dir: str | Path) -> Path:
    """Write `RUN_DIR/report/report.md` and its PNG plots from the sweep's Parquet; return the markdown's path."""
    run_dir = Path(run_dir)
    frame = load_results(run_dir)
    frame["covered"] = frame["candidate_correct"].map(lambda flags: flags is not None and bool(any(flags)))
    frame["search"] = frame["strategy_label"].str.split("/").str[0]  # label without selection: shares the samples
    cells = _cells(frame)
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    accuracy = _curves(frame, "correct", "strategy_label")
    coverage = _curves(cells, "covered", "search")
    bins = difficulty_bins(frame)
    bin_table, bin_titles = _bin_table(frame, bins) if not bins.empty else (None, {})

    def plot(name: str, title: str, data: pd.DataFrame, **kwargs) -> str:
        _plot(out / name, title, data, **kwargs)
        return f"![{title}]({name})"

    acc = {"value": "correct", "label": "strategy_label", "ylabel": "accuracy %"}
    config = " (sweep [config](../config.yaml))" if (run_dir / "config.yaml").exists() else ""
    md = [f"# Sweep report: {run_dir.name}", "",
          f"Built from the Parquet in `{run_dir / 'results'}`{config}; nothing was re-run.", "",
          "## How to read this", "", _how_to_read(frame, accuracy, coverage, bins), ""]

    md += ["## Accuracy vs budget", "",
           plot("accuracy_vs_budget.png", "Accuracy vs test-time budget", frame, **acc), "",
           _by_budget(accuracy, "accuracy % (± s.e.)", _mean_se), ""]

    md += ["## Coverage (pass@N, oracle verifier)", "",
           plot("coverage_vs_budget.png", "Coverage: any candidate correct (pass@N)", cells, value="covered",
                label="search", ylabel="coverage %"), "",
           "For best-of-N the candidates are all N samples; for beam and lookahead they are the final beams.", "",
           _by_budget(coverage, "coverage % (± s.e.)", _mean_se), ""]

    md += ["## By difficulty (oracle pass@1 bins)", ""]
    if bin_table is None:
        md += ["No best-of-N candidates in this run, so no oracle difficulty bins: add `best_of_n` to the sweep's "
               "strategies to get them.", ""]
    else:
        md += [plot("accuracy_by_difficulty.png", "Accuracy vs budget per difficulty bin",
                    frame.join(bins, "unique_id"), facets=("bin", bin_titles), **acc), "",
               f"Bins are {N_BINS} equal-size quantiles of each question's pass@1 over all its best-of-N candidates "
               "(all budgets and seeds, each sample once); bin 1 is the easiest.", "",
               _markdown_table(bin_table), ""]

    per_level = frame.groupby("level")["unique_id"].nunique()
    levels = {lvl: f"{f'MATH level {lvl}' if lvl else 'level unknown'} ({n} q.)" for lvl, n in per_level.items()}
    md += ["## By MATH level", "", plot("accuracy_by_level.png", "Accuracy vs budget per MATH level", frame,
                                        facets=("level", levels), **acc), ""]

    md += ["## Compute", "", plot("accuracy_vs_tokens.png", "Accuracy vs generated tokens", frame,
                                  x="generated_tokens", xlabel="mean generated tokens per problem", **acc), ""]
    if "total_flops" in frame and frame["total_flops"].notna().any():
        md += [plot("accuracy_vs_flops.png", "Accuracy vs inference FLOPs", frame, x="total_flops",
                    xlabel="mean FLOPs per problem", **acc), ""]
    for column, title, fmt in COST_COLUMNS:
        if column in cells and cells[column].notna().any():
            means = cells.groupby(["search", "budget"])[column].mean().rename("mean").reset_index()
            means = means.rename(columns={"search": "label"})
            md += [_by_budget(means, title, lambda row, f=fmt: f.format(row["mean"])), ""]
    md += _contents(frame)
    path = out / "report.md"
    path.write_text("\n".join(md))
    return path
