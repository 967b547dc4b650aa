"""Shared analysis of a sweep's rows: cells, graded rows, difficulty, curves, plots and Markdown tables.

`ttsearch report` and `ttsearch optimize` both build on these, so a bin or a curve means the same in both.
Error rows (cells that failed deterministically) carry no answer: `finished_rows` drops them before any
accuracy, difficulty or policy is computed. Ungraded rows (`correct` null: grading failed twice, which is no
verdict) keep their candidates and costs but take no part in any accuracy: `graded_rows` drops them, and
ungraded candidates (null flags) are left out of pass@1 and coverage. The reports say how many of each were
left out.

Difficulty bins, oracle and predicted alike, follow the one rule of `ttsearch.policy.fit_thresholds` /
`bin_of`, the rule the deployed policy bins new questions with.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API renders with Agg and leaves pyplot's global state alone
from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

from ttsearch.errors import TTSearchError
from ttsearch.policy import bin_of, fit_thresholds
from ttsearch.results import ADDED_COLUMNS, generator_computed_tokens, verifier_computed_tokens


class AnalysisError(TTSearchError, ValueError):
    """A sweep whose rows cannot answer the question asked (e.g. no best-of-N rows to estimate difficulty)."""


# One search job: rows that differ only in `selection` were picked from the same candidates.
CELL_KEYS = ["unique_id", "strategy_config", "budget", "seed"]
N_BINS = 5
NEAR_ZERO_ACCURACY = 10.0  # % below which absolute accuracy says little and coverage/order are the signal
DEFAULT_ESTIMATION_SAMPLES = 16
"""Best-of-N samples per question for the predicted difficulty when none is asked for (capped by the largest
best-of-N cell). Chosen with `sampling_study` (500 questions, 5 bins, 40 trials): bins of a k-sample pass@1
agree with the bins of the true pass@1 on 24 % of the questions at k = 1 (chance is 20 %; one sample makes
only 2 distinct scores, so 2 bins), 51–57 % at k = 4, 57–67 % at k = 8, 66–75 % at k = 16 and 75–82 % at
k = 32 (true pass@1 uniform – Beta(½, ½)); within one bin: 50 % at k = 1, 91–95 % at k = 4, 95–99 % at k = 8,
≥ 98.7 % at k = 16. k = 16 is where nearly every question lands in its own or a neighbouring bin, at 16
generations of cost; doubling it buys ~8 points of exact agreement. This counts sampling noise only: a
verifier's score adds its own error."""

# Per-question costs of a search job or of a difficulty estimate.
COST_COLUMNS = (
    "samples",
    "generated_tokens",
    "prompt_tokens",
    "cached_prompt_tokens",
    "verifier_tokens",
    "cached_verifier_tokens",
    "generator_flops",
    "verifier_flops",
    "total_flops",
)
CANDIDATE_COST_COLUMNS = ("candidate_generated_tokens", "candidate_verifier_tokens")


def as_frame(table_or_frame: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table_or_frame.to_pandas() if isinstance(table_or_frame, pa.Table) else table_or_frame


def with_strategy_config(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows with `strategy_config` filled in from the label where older files lack it."""
    config = frame["strategy_label"].str.replace(r"/[^/]+", "", n=1, regex=True)  # the label minus its selection
    if "strategy_config" not in frame:  # written before the column existed
        return frame.assign(strategy_config=config)
    if frame["strategy_config"].isna().any():  # older files merged with newer ones: null where absent
        return frame.assign(strategy_config=frame["strategy_config"].fillna(config))
    return frame


def search_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per search job, so that candidates shared by several selections count once."""
    return with_strategy_config(frame).drop_duplicates(subset=CELL_KEYS)


def finished_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows that hold an answer, and how many error rows were left out of every accuracy."""
    failed = frame["error"].notna()
    return frame[~failed], int(failed.sum())


def graded_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Of finished rows, those whose `correct` is a verdict (as bool), and how many ungraded rows were left out.

    An ungraded row (`correct` null: grading failed twice) is neither right nor wrong, so it takes no part in
    any accuracy; its candidates still count for pass@1 and coverage where they were graded.
    """
    ungraded = frame["correct"].isna()
    return frame[~ungraded].assign(correct=frame.loc[~ungraded, "correct"].astype(bool)), int(ungraded.sum())


def excluded_note(excluded: int) -> str:
    """The sentence both reports print about the error rows they left out."""
    return (
        f"{excluded} error rows (cells that failed deterministically) are excluded from accuracy, difficulty "
        "and policy fitting."
    )


def ungraded_note(ungraded: int) -> str:
    """The sentence both reports print about the ungraded rows they left out of accuracy."""
    return (
        f"{ungraded} ungraded rows (grading failed twice: no verdict) are excluded from every accuracy; "
        "their graded candidates still count for pass@1 and coverage."
    )


def flag_values(flags) -> list[bool]:
    """The graded flags of one candidate list (null = ungraded, left out)."""
    return [] if flags is None else [bool(f) for f in flags if f is not None and not pd.isna(f)]


def covered(flags) -> bool:
    """A cell is covered when any of its candidates was graded right."""
    return any(flag_values(flags))


def _best_of_n_outcomes(frame: pd.DataFrame) -> pd.Series:
    """Every graded best-of-N sample, once (cells, not selections), as a bool Series indexed by unique_id."""
    cells = search_cells(frame[frame["strategy"] == "best_of_n"])
    flags = cells["candidate_correct"].map(flag_values)
    outcomes = pd.Series(
        [f for fs in flags for f in fs],
        dtype=bool,
        index=np.repeat(cells["unique_id"].to_numpy(), flags.map(len).to_numpy(dtype="int64")),
    )
    return outcomes.rename_axis("unique_id")


def oracle_pass_at_1(table_or_frame: pa.Table | pd.DataFrame) -> pd.Series:
    """unique_id → share of correct best-of-N candidates over all budgets and seeds (the paper's oracle difficulty).

    Ungraded candidates are left out. Questions without any graded best-of-N candidate are absent.
    """
    outcomes = _best_of_n_outcomes(as_frame(table_or_frame))
    return outcomes.groupby(level=0).mean().rename("pass@1")


def oracle_samples(table_or_frame: pa.Table | pd.DataFrame) -> pd.Series:
    """unique_id → how many graded best-of-N samples `oracle_pass_at_1` averages."""
    outcomes = _best_of_n_outcomes(as_frame(table_or_frame))
    return outcomes.groupby(level=0).size().rename("samples")


def samples_note(samples: pd.Series) -> str:
    """'min / median / max' of per-question sample counts, as the reports state them."""
    if samples.empty:
        return "no samples"
    low, mid, high = samples.min(), samples.median(), samples.max()
    return f"{low} samples per question" if low == high else f"{low} / {mid:g} / {high} (min / median / max)"


def score_bins(score: pd.Series, n_bins: int = N_BINS, min_size: int = 1) -> tuple[pd.Series, tuple[float, ...]]:
    """unique_id → bin (1 the easiest) of a per-question score (higher = easier), and the thresholds that give it.

    The bins are `ttsearch.policy.bin_of(score, thresholds)` of every question, thresholds fitted on these
    scores by `fit_thresholds`: tied scores share a bin, and a new question with the same score gets the same
    bin. Fewer than n_bins come out when ties fill several quantiles.
    """
    thresholds = fit_thresholds(score.to_numpy(), n_bins, min_size)
    bins = score.map(lambda value: bin_of(value, thresholds)).astype("int64").rename("bin")
    return bins, thresholds


def difficulty_bins(table_or_frame: pa.Table | pd.DataFrame, n_bins: int = N_BINS) -> pd.Series:
    """unique_id → oracle difficulty bin 1..≤ n_bins: `score_bins` of pass@1 over every best-of-N sample."""
    pass1 = oracle_pass_at_1(table_or_frame)
    if pass1.empty:
        return pd.Series(dtype="int64", name="bin")
    return score_bins(pass1, n_bins)[0]


def sampling_study(
    ks: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64),
    questions: int = 500,
    trials: int = 40,
    beta: tuple[float, float] = (1.0, 1.0),
    n_bins: int = N_BINS,
    seed: int = 0,
) -> pd.DataFrame:
    """How well k samples per question sort questions: the computation behind DEFAULT_ESTIMATION_SAMPLES.

    Per trial, `questions` true pass@1 values p ~ Beta(*beta); each question's estimate is a Binomial(k, p)/k;
    both are binned by `score_bins`. Returns per k the mean over trials of: `agreement` (share of questions
    whose estimated bin is their true bin), `within_one` (off by at most one bin), `bins` (how many bins the
    estimate makes), `monotone` (share of trials whose estimated bins have strictly decreasing mean true p).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        agree, near, made, monotone = [], [], [], []
        for _ in range(trials):
            p = pd.Series(rng.beta(*beta, size=questions))
            truth = score_bins(p, n_bins)[0]
            estimate = score_bins(pd.Series(rng.binomial(k, p) / k), n_bins)[0]
            agree.append(float((truth == estimate).mean()))
            near.append(float(((truth - estimate).abs() <= 1).mean()))
            made.append(estimate.nunique())
            means = p.groupby(estimate).mean().to_numpy()
            monotone.append(bool((np.diff(means) < 0).all()))
        rows.append(
            {
                "k": k,
                "agreement": np.mean(agree),
                "within_one": np.mean(near),
                "bins": np.mean(made),
                "monotone": np.mean(monotone),
            }
        )
    return pd.DataFrame(rows).set_index("k")


# ---------------------------------------------------------------- difficulty estimation

DIFFICULTY_KINDS = ("oracle", "predicted")


def added_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """A column of `ttsearch.results.ADDED_COLUMNS`, its default where the rows predate it (absent or null)."""
    default = ADDED_COLUMNS[name]
    return frame[name].fillna(default) if name in frame else pd.Series(default, index=frame.index)


def computed_tokens(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per row, the tokens the generator and the verifier computed (prefix-cache hits are not computed)."""
    generator = generator_computed_tokens(
        frame["generated_tokens"], frame["prompt_tokens"], frame["cached_prompt_tokens"]
    )
    return generator, verifier_computed_tokens(frame["verifier_tokens"], added_column(frame, "cached_verifier_tokens"))


def flops_rates(frame: pd.DataFrame) -> tuple[float, float]:
    """FLOPs per computed token of the generator and of the verifier, as the sweep billed them (NaN: unknown).

    Generator: generator_flops / (generated + prompt − cached prompt tokens). Verifier: verifier_flops /
    (verifier − cached verifier tokens) over rows with computed verifier tokens only, since rows whose selection
    reads no score are billed no verifier compute (0 FLOPs, 0 tokens). Medians over rows: one generator and one
    verifier per sweep.
    """

    def rate(flops: str, tokens: pd.Series) -> float:
        if flops not in frame:
            return math.nan
        ratio = (frame[flops].astype(float) / tokens.where(tokens > 0).astype(float)).dropna()
        return float(ratio.median()) if len(ratio) else math.nan

    generator, verifier = computed_tokens(frame)
    return rate("generator_flops", generator), rate("verifier_flops", verifier)


@dataclass(frozen=True)
class Difficulty:
    """Per-question difficulty, its bins, and (predicted) the cost of the samples it was estimated from."""

    kind: str
    """"oracle" (pass@1 of every graded best-of-N sample) or "predicted" (mean verifier score of k samples)."""
    score: pd.Series
    """unique_id → pass@1 or mean final-answer score; higher = easier."""
    samples: pd.Series
    """unique_id → how many samples the score is from."""
    bins: pd.Series
    """unique_id → 1..n, 1 the easiest: `bin_of(score, thresholds)`."""
    thresholds: tuple[float, ...]
    """Descending score edges fitted on these questions (`ttsearch.policy.fit_thresholds`)."""
    estimation_samples: int | None = None
    """k, the best-of-N samples a predicted estimate reads; None for oracle (every sample)."""
    capped: bool = False
    """The default k was cut to the largest best-of-N cell."""
    aggregation: str | None = None
    """The step-score aggregation of the candidate scores a predicted estimate averages."""
    cost: pd.DataFrame | None = None
    """Predicted: unique_id → COST_COLUMNS of the k samples (NaN where the sweep recorded no per-candidate
    tokens). Oracle: None, it needs the ground truth and is not deployable."""

    @property
    def n_bins(self) -> int:
        return len(self.thresholds) + 1


def estimation_cells(frame: pd.DataFrame, estimation_samples: int | None = None) -> tuple[pd.DataFrame, int, bool]:
    """Per question, its largest best-of-N cell cut to the first k candidates; k; whether the default was capped.

    Cells with aggregation `last` (the PRM's score of the final answer, what `solve` uses by default) are
    preferred; lowest seed. The first k of N independent samples are distributed as a best-of-k run's, so k
    may be any number up to the largest cell. k defaults to DEFAULT_ESTIMATION_SAMPLES, capped by the largest
    best-of-N cell. Questions whose cells all hold fewer than k candidates are absent.
    """
    # The estimate reads verifier scores: keep each cell's row that was billed the verifier, with its cached tokens.
    best_of_n = frame[frame["strategy"] == "best_of_n"].sort_values("verifier_tokens", ascending=False, kind="stable")
    best_of_n = search_cells(best_of_n)
    if best_of_n.empty:
        raise AnalysisError(
            "no best_of_n rows: difficulty is estimated from best-of-N samples; add best_of_n to the sweep's strategies"
        )
    sizes = best_of_n["candidate_answers"].map(lambda values: 0 if values is None else len(values))
    capped = estimation_samples is None and int(sizes.max()) < DEFAULT_ESTIMATION_SAMPLES
    k = min(DEFAULT_ESTIMATION_SAMPLES, int(sizes.max())) if estimation_samples is None else int(estimation_samples)
    if k < 1:
        raise AnalysisError(f"estimation_samples must be ≥ 1, got {k}")
    usable = best_of_n[sizes >= k]
    if usable.empty:
        raise AnalysisError(
            f"estimation_samples={k} exceeds every best-of-N cell (the largest holds {sizes.max()} candidates)"
        )
    aggregation = "last" if usable["aggregation"].eq("last").any() else sorted(usable["aggregation"].unique())[0]
    chosen = (
        usable[usable["aggregation"] == aggregation]
        .sort_values(["unique_id", "budget", "seed"], ascending=[True, False, True])
        .drop_duplicates("unique_id")
    )
    columns = (
        "candidate_answers",
        "candidate_scores",
        "candidate_correct",
        *(c for c in CANDIDATE_COST_COLUMNS if c in chosen),
    )
    first_k = {
        column: chosen[column].map(lambda values: [] if values is None else list(values[:k])) for column in columns
    }
    return chosen.assign(**first_k), k, capped


def _sum_or_nan(values: list) -> float:
    """Sum of per-candidate counts; NaN when any is missing (that candidate has no cost of its own)."""
    if any(v is None or pd.isna(v) for v in values):
        return math.nan
    return float(sum(values))


def estimation_cost(frame: pd.DataFrame, cells: pd.DataFrame, k: int) -> pd.DataFrame:
    """unique_id → COST_COLUMNS of the k samples `estimation_cells` kept: what the estimate really spent.

    Generated and verifier tokens are the sums over the k candidates' own counts; the prompt is the cell's one
    prefill as recorded (a best-of-N cell is one request with n samples, so k samples pay one prompt too). Cached
    verifier tokens are not recorded per candidate: the k candidates get the cell's cached share of its verifier
    tokens. FLOPs are the sweep's per-token rates (`flops_rates`) times the computed tokens (`computed_tokens`'
    rules). Without per-candidate token columns (an older sweep) every cost but `samples` is NaN: unknown, not
    scaled.
    """
    generator_rate, verifier_rate = flops_rates(frame)
    known = all(column in cells for column in CANDIDATE_COST_COLUMNS)
    nan = pd.Series(math.nan, index=cells.index)
    generated = cells["candidate_generated_tokens"].map(_sum_or_nan) if known else nan
    verifier = cells["candidate_verifier_tokens"].map(_sum_or_nan) if known else nan
    prompt = cells["prompt_tokens"].astype(float) if known else nan
    cached = cells["cached_prompt_tokens"].astype(float) if known else nan
    cell_verifier = cells["verifier_tokens"].astype(float)
    cached_share = (added_column(cells, "cached_verifier_tokens") / cell_verifier.where(cell_verifier > 0)).fillna(0.0)
    cached_verifier = verifier * cached_share
    generator_flops = generator_rate * generator_computed_tokens(generated, prompt, cached)
    verifier_flops = (verifier_rate * verifier_computed_tokens(verifier, cached_verifier)).where(verifier != 0, 0.0)
    cost = pd.DataFrame(
        {
            "samples": float(k),
            "generated_tokens": generated,
            "prompt_tokens": prompt,
            "cached_prompt_tokens": cached,
            "verifier_tokens": verifier,
            "cached_verifier_tokens": cached_verifier,
            "generator_flops": generator_flops,
            "verifier_flops": verifier_flops,
            "total_flops": generator_flops + verifier_flops,
        }
    )
    return cost.set_axis(cells["unique_id"].to_numpy()).rename_axis("unique_id")


def estimate_difficulty(
    frame: pd.DataFrame,
    kind: str = "oracle",
    estimation_samples: int | None = None,
    n_bins: int = N_BINS,
    min_size: int = 1,
) -> Difficulty:
    """Oracle pass@1 over every graded best-of-N sample, or predicted (mean verifier score of k samples), binned.

    Both bin by `score_bins` (bins of fewer than `min_size` questions merge into a neighbour). `estimation_samples`
    only affects the predicted estimate.
    """
    if kind not in DIFFICULTY_KINDS:
        raise AnalysisError(f"unknown difficulty kind {kind!r}; choose one of {', '.join(DIFFICULTY_KINDS)}")
    if kind == "oracle":
        if not (frame["strategy"] == "best_of_n").any():
            raise AnalysisError(
                "no best_of_n rows: difficulty is estimated from best-of-N samples; add best_of_n to "
                "the sweep's strategies"
            )
        score, samples = oracle_pass_at_1(frame), oracle_samples(frame)
        if score.empty:
            raise AnalysisError("no graded best-of-N candidates: oracle difficulty needs them")
        bins, thresholds = score_bins(score, n_bins, min_size)
        return Difficulty(kind, score, samples.reindex(score.index), bins, thresholds)
    cells, k, capped = estimation_cells(frame, estimation_samples)
    scores = cells[["unique_id", "candidate_scores"]].explode("candidate_scores").dropna()
    score = scores["candidate_scores"].astype(float).groupby(scores["unique_id"]).mean().rename("score")
    if score.empty:
        raise AnalysisError("no verifier scores on the best-of-N candidates: predicted difficulty needs them")
    samples = scores.groupby("unique_id").size().reindex(score.index).rename("samples")
    bins, thresholds = score_bins(score, n_bins, min_size)
    cost = estimation_cost(frame, cells, k).loc[score.index]
    return Difficulty(kind, score, samples, bins, thresholds, k, capped, str(cells["aggregation"].iloc[0]), cost)


def bin_sorting(pass1: pd.Series, binnings: dict[str, pd.Series], questions: pd.Index) -> pd.DataFrame:
    """bin → per kind of bins (unique_id → bin), the questions' mean pass@1 over every sample and how many."""
    columns = {}
    for kind, binned in binnings.items():
        bins = binned.reindex(questions).dropna().astype(int)
        by_bin = pass1.reindex(bins.index).groupby(bins)
        columns[f"{kind} bins: mean pass@1, all samples"] = by_bin.mean().map("{:.3f}".format)
        columns[f"{kind}: questions"] = by_bin.size().map(str)  # a bin one kind lacks would make the counts floats
    table = pd.DataFrame(columns).fillna("–")
    table.index.name = "bin"
    return table


# ---------------------------------------------------------------- curves, plots, tables


def mean_curves(frame: pd.DataFrame, value: str, label: str, x: str = "budget") -> pd.DataFrame:
    """Mean of boolean `value` in % per (label, budget), its standard error, placed at the mean of `x`.

    The error is across seeds when a point has several (what a re-run would change), else across
    problems (how much the problem sample matters). NaN values (e.g. ungraded) are left out.
    """
    rows = []
    frame = frame.assign(**{value: frame[value].astype(float)})
    for (name, budget), group in frame.groupby([label, "budget"], sort=True):
        per_seed = group.groupby("seed")[value].mean()
        spread = per_seed if len(per_seed) > 1 else group.groupby("unique_id")[value].mean()
        rows.append(
            {
                "label": name,
                "budget": budget,
                "x": group[x].mean(),
                "mean": 100 * group[value].mean(),
                "se": 100 * spread.sem(),
            }
        )
    return pd.DataFrame(rows, columns=["label", "budget", "x", "mean", "se"])


# ---------------------------------------------------------------- compute to reach an accuracy

ACCURACY_TOLERANCE = 1e-12  # accuracies are means of the same per-question values: equal up to rounding


def cost_to_reach(costs: Sequence[float], accuracy: Sequence[float], target: float) -> tuple[float, str]:
    """Smallest cost at which a measured curve reaches `target`, interpolated on log2(cost) between points.

    Returns (cost, bound): "=" interpolated or measured; "<=" already reached at the smallest measured cost
    (the true cost may be lower); ">" never reached, cost = the largest measured (the true cost is higher).
    """
    points = sorted(zip(costs, accuracy, strict=True))
    if any(not math.isfinite(c) or c <= 0 or not math.isfinite(a) for c, a in points):
        return math.nan, ""
    if points[0][1] >= target - ACCURACY_TOLERANCE:
        return points[0][0], "<="
    for (c0, a0), (c1, a1) in zip(points, points[1:], strict=False):
        if abs(a1 - target) <= ACCURACY_TOLERANCE:
            return c1, "="
        if a1 > target:
            fraction = (target - a0) / (a1 - a0)
            return float(np.exp2(np.log2(c0) + fraction * (np.log2(c1) - np.log2(c0)))), "="
    return points[-1][0], ">"


EQUAL_ACCURACY_COLUMNS = [
    "baseline",
    "selection",
    "budget",
    "accuracy",
    "baseline_samples",
    "baseline_flops",
    "label",
    "samples",
    "samples_bound",
    "samples_ratio",
    "flops",
    "flops_bound",
    "flops_ratio",
]


def _ratio(cost: float, baseline: float) -> float:
    """cost ÷ baseline, NaN where the baseline is no positive number (e.g. FLOPs not recorded)."""
    return cost / baseline if math.isfinite(baseline) and baseline > 0 else math.nan


def cost_at_equal_accuracy(frame: pd.DataFrame) -> pd.DataFrame:
    """Per best-of-N label, budget N and other label of the same selection mode: the compute that label needs to
    reach best-of-N's accuracy at N, in mean samples spent per question and in mean total FLOPs.

    The x axes are what the searches spent (the `samples` column, as the scheduler counted it), not the nominal
    budget, so a search that stops early is charged only the rounds it ran. Costs come from `cost_to_reach` over
    the label's measured points (bounds kept); ratios are the label's cost ÷ best-of-N's at N (< 1: cheaper), NaN
    where unknown. `accuracy` is best-of-N's accuracy at N in %. Error rows and ungraded rows take no part.
    """
    graded, _ = graded_rows(finished_rows(frame)[0])
    flops = graded["total_flops"].astype(float) if "total_flops" in graded else math.nan
    graded = graded.assign(samples=graded["samples"].astype(float), total_flops=flops)
    by_samples = mean_curves(graded, "correct", "strategy_label", x="samples")
    by_flops = mean_curves(graded, "correct", "strategy_label", x="total_flops")
    curves = by_samples.rename(columns={"x": "samples"}).assign(flops=by_flops["x"], accuracy=by_samples["mean"] / 100)
    labels = graded.drop_duplicates("strategy_label").set_index("strategy_label")[["strategy", "selection"]]
    rows = []
    for baseline in sorted(labels.index[labels["strategy"] == "best_of_n"]):
        selection = labels.at[baseline, "selection"]
        others = sorted(labels.index[(labels["strategy"] != "best_of_n") & (labels["selection"] == selection)])
        for target in curves[curves["label"] == baseline].itertuples():
            for label in others:
                curve = curves[curves["label"] == label]
                samples, samples_bound = cost_to_reach(curve["samples"], curve["accuracy"], target.accuracy)
                flops, flops_bound = cost_to_reach(curve["flops"], curve["accuracy"], target.accuracy)
                rows.append(
                    {
                        "baseline": baseline,
                        "selection": selection,
                        "budget": target.budget,
                        "accuracy": target.mean,
                        "baseline_samples": target.samples,
                        "baseline_flops": target.flops,
                        "label": label,
                        "samples": samples,
                        "samples_bound": samples_bound,
                        "samples_ratio": _ratio(samples, target.samples),
                        "flops": flops,
                        "flops_bound": flops_bound,
                        "flops_ratio": _ratio(flops, target.flops),
                    }
                )
    return pd.DataFrame(rows, columns=EQUAL_ACCURACY_COLUMNS)


EARLY_STOP_CONFIG = re.compile(r"early_stop\((?P<inner>.+),r=\d+,s=[^,)]+\)(?P<aggregation>.*)")
"""An early_stop `strategy_config` (`ttsearch.strategies.strategy_config`): the inner configuration, then the
round size and share, then any aggregation suffix."""


def inner_config(config: str) -> str | None:
    """The configuration an early_stop configuration runs in rounds, its aggregation kept; None for any other.

    `early_stop(beam(M=4),r=4,s=0.75)` → `beam(M=4)`; `early_stop(best_of_n,r=4,s=0.75)/min` → `best_of_n/min`.
    """
    match = EARLY_STOP_CONFIG.fullmatch(config)
    return match["inner"] + match["aggregation"] if match else None


EARLY_STOP_COLUMNS = ["config", "budget", "inner_config", "samples", "full_samples", "saved"]


def early_stop_savings(frame: pd.DataFrame) -> pd.DataFrame:
    """Per early_stop configuration and nominal budget N: mean samples spent per question, what the full inner
    search spends at N, and the share saved (1 − spent ÷ full). Its selections share one search, so one row.

    A full best-of-N run spends exactly N; any other inner configuration is taken from the sweep's own rows of
    that configuration at N (its mean `samples`, each search job once), NaN where the sweep did not run it.
    Error rows take no part; ungraded rows do (what a search spent does not depend on its grade).
    """
    cells = search_cells(finished_rows(frame)[0])
    rows = []
    stops = cells[cells["strategy"] == "early_stop"]
    for (config, budget), group in stops.groupby(["strategy_config", "budget"], sort=True):
        inner = inner_config(config)
        if inner is None:
            full = math.nan
        elif inner.split("/")[0] == "best_of_n":
            full = float(budget)
        else:
            spent = cells.loc[(cells["strategy_config"] == inner) & (cells["budget"] == budget), "samples"]
            full = float(spent.astype(float).mean()) if len(spent) else math.nan
        samples = float(group["samples"].astype(float).mean())
        rows.append(
            {
                "config": config,
                "budget": budget,
                "inner_config": inner,
                "samples": samples,
                "full_samples": full,
                "saved": 1 - _ratio(samples, full),
            }
        )
    return pd.DataFrame(rows, columns=EARLY_STOP_COLUMNS)


def y_limits(low: float, high: float) -> tuple[float, float]:
    """A y-range (in %) fitted to data spanning [low, high], error bars included.

    Pads by a tenth of the span (at least 1 point); a range that would reach below 0 starts just below 0 (zero-
    accuracy points stay visible); the top is at least 5 (all-zero curves) and at most 105.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return -0.1, 5.0
    pad = max(1.0, 0.1 * (high - low))
    top = min(105.0, max(high + pad, 5.0))
    bottom = low - pad
    return (-0.02 * top if bottom < 0 else bottom), top


def _integer_log2_axis(ax) -> None:
    """log2 x-axis labelled with plain numbers (1, 2, 4, …), not powers of two."""
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())


def plot_curves(
    path: Path | None,
    title: str,
    frame: pd.DataFrame,
    *,
    value: str,
    label: str,
    ylabel: str,
    x: str = "budget",
    xlabel: str = "budget N (samples per problem)",
    facets: tuple[str, dict] | None = None,
    x_log2: bool | None = None,
) -> Figure:
    """A figure of `value` vs `x`, a line per `label`; `facets` = (column, {key: subplot title}). Returns it,
    after saving it as a PNG at `path` (unless None).

    The budget axis (x = "budget", or `x_log2`) is log2 with integer tick labels; any other x (tokens, FLOPs)
    is log10 in scientific notation. The y-range is fitted to the points and their error bars (`y_limits`).
    """
    log2 = x == "budget" if x_log2 is None else x_log2
    keys = [None] if facets is None else list(facets[1])
    fig = Figure(figsize=(max(6.4, 3.6 * len(keys)), 4.8), layout="constrained")
    axes = fig.subplots(1, len(keys), sharey=True, squeeze=False)[0]
    names = sorted(frame[label].unique())
    palette = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = {name: palette(i % palette.N) for i, name in enumerate(names)}  # same strategy, same colour
    handles, low, high = {}, math.inf, -math.inf
    for ax, key in zip(axes, keys, strict=True):
        part = frame if facets is None else frame[frame[facets[0]] == key]
        points = mean_curves(part, value, label, x)
        points = points[(points["x"] > 0) & points["mean"].notna()]  # log axis: no tokens/FLOPs, no place
        for name, line in points.groupby("label"):
            handles[name] = ax.errorbar(
                line["x"],
                line["mean"],
                yerr=line["se"].fillna(0),
                marker="o",
                capsize=3,
                color=colors[name],
                label=name,
            )
        if len(points):
            se = points["se"].fillna(0)
            low, high = min(low, float((points["mean"] - se).min())), max(high, float((points["mean"] + se).max()))
        if x == "budget":
            ax.set_xscale("log", base=2)
            budgets = sorted(part["budget"].unique())
            ax.set_xticks(budgets, labels=[str(b) for b in budgets])
            ax.minorticks_off()
        elif log2:
            _integer_log2_axis(ax)
        else:
            ax.set_xscale("log", base=10)  # LogFormatterSciNotation: 10^k labels
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if facets is not None:
            ax.set_title(facets[1][key], fontsize=10)
    axes[0].set_ylabel(ylabel)
    axes[0].set_ylim(*y_limits(low, high))
    fig.suptitle(title)
    if handles:
        fig.legend(
            [handles[n] for n in sorted(handles)],
            sorted(handles),
            loc="outside lower center",
            ncols=max(1, min(len(handles), 2 * len(keys))),
            fontsize=9,
        )
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def mean_se_text(mean: float, se: float | None) -> str:
    """A point as the reports' tables print it (%, one decimal): "mean ± se", or the mean alone where the error is
    undefined (one seed and one question)."""
    return f"{mean:.1f}" if se is None or pd.isna(se) else f"{mean:.1f} ± {se:.1f}"


def markdown_table(table: pd.DataFrame) -> str:
    """A markdown table with the index as first column (pandas' `to_markdown` needs `tabulate`, not installed)."""
    lines = [[table.index.name or "", *table.columns], ["---"] * (len(table.columns) + 1)]
    lines += [[key, *row] for key, row in zip(table.index, table.itertuples(index=False), strict=True)]
    return "\n".join(
        "| " + " | ".join(str(v).replace("|", r"\|").replace("\n", " ") for v in line) + " |" for line in lines
    )


@dataclass(frozen=True)
class ReportFile:
    """A written report and how many error and ungraded rows it left out."""

    path: Path | str
    """A local path, or the URI on a remote filesystem."""
    excluded_rows: int
    """Error rows, left out of everything."""
    ungraded_rows: int = 0
    """Rows without a verdict, left out of every accuracy."""
