"""Shared analysis of a sweep's rows: jobs, graded rows, difficulty and accuracy curves (costs at equal accuracy:
`ttsearch.analysis.costs`; plots and tables: `ttsearch.analysis.render`).

`ttsearch report` and `ttsearch optimize` both build on these, so a bin or a curve means the same in both.
Error rows (jobs that failed deterministically) carry no answer: `finished_rows` drops them before any
accuracy, difficulty or policy is computed. Ungraded rows (`correct` null: grading failed twice, which is no
verdict) keep their candidates and costs but take no part in any accuracy: `graded_rows` drops them, and
ungraded candidates (null flags) are left out of pass@1 and coverage. The reports say how many of each were
left out.

Difficulty bins, oracle and predicted alike, follow the one rule of `ttsearch.analysis.policy.fit_thresholds` /
`bin_of`, the rule the deployed policy bins new questions with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from ttsearch.analysis.policy import bin_of, fit_thresholds
from ttsearch.errors import TTSearchError
from ttsearch.search.outcomes import generator_computed_tokens, verifier_computed_tokens
from ttsearch.sweep.results import ADDED_COLUMNS


class AnalysisError(TTSearchError, ValueError):
    """A sweep whose rows cannot answer the question asked (e.g. no best-of-N rows to estimate difficulty)."""


# The columns that name a job (`ttsearch.sweep.jobs.JobKey`): its rows differ only in `selection`, picked from the
# same candidates.
JOB_KEY_COLUMNS = ["unique_id", "strategy_config", "budget", "seed"]
N_BINS = 5
NEAR_ZERO_ACCURACY = 10.0  # % below which absolute accuracy says little and coverage/order are the signal
DEFAULT_ESTIMATION_SAMPLES = 16
"""Best-of-N samples per question for the predicted difficulty when none is asked for (capped by the largest
best-of-N job). Chosen with `sampling_study` (500 questions, 5 bins, 40 trials): bins of a k-sample pass@1
agree with the bins of the true pass@1 on 24 % of the questions at k = 1 (chance is 20 %; one sample makes
only 2 distinct scores, so 2 bins), 51–57 % at k = 4, 57–67 % at k = 8, 66–75 % at k = 16 and 75–82 % at
k = 32 (true pass@1 uniform – Beta(½, ½)); within one bin: 50 % at k = 1, 91–95 % at k = 4, 95–99 % at k = 8,
≥ 98.7 % at k = 16. k = 16 is where nearly every question lands in its own or a neighbouring bin, at 16
generations of cost; doubling it buys ~8 points of exact agreement. This counts sampling noise only: a
verifier's score adds its own error."""

# Per-question costs of a job or of a difficulty estimate.
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


def search_jobs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per job, so that candidates shared by several selections count once."""
    return with_strategy_config(frame).drop_duplicates(subset=JOB_KEY_COLUMNS)


def finished_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows that hold an answer, and how many error rows were left out of every accuracy."""
    failed = frame["error"].notna()
    return frame[~failed], int(failed.sum())


def graded_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Of finished rows, those with an accuracy, and how many ungraded rows were left out.

    Every accuracy averages a row's `accuracy`, the expectation over its sample pool's subsets and its score ties
    (`ttsearch.sweep.pools`), returned as the `correct` column so every mean reads it. An ungraded row (no
    accuracy: every choice it could make failed grading twice) is neither right nor wrong, so it takes no part in
    any accuracy; its candidates still count for pass@1 and coverage where they were graded.
    """
    ungraded = frame["accuracy"].isna()
    graded = frame[~ungraded]
    return graded.assign(correct=graded["accuracy"].astype(float)), int(ungraded.sum())


def excluded_note(excluded: int) -> str:
    """The sentence both reports print about the error rows they left out."""
    return (
        f"{excluded} error rows (jobs that failed deterministically) are excluded from accuracy, difficulty "
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
    """A job is covered when any of its candidates was graded right."""
    return any(flag_values(flags))


def coverage_of(frame: pd.DataFrame) -> pd.Series:
    """Per row, the probability its budget holds a right candidate: the `coverage` column (exact pass@k over a
    sample pool, `ttsearch.sweep.pools`), or, for rows without one, whether any of its candidates was right."""
    realised = frame["candidate_correct"].map(covered).astype(float)
    return frame["coverage"].astype(float).fillna(realised) if "coverage" in frame else realised


def _best_of_n_outcomes(frame: pd.DataFrame) -> pd.Series:
    """Every graded best-of-N sample, once, as a bool Series indexed by unique_id.

    Per (question, seed) only the largest best-of-N job's candidates count, of one configuration: a smaller
    budget's samples are the first of the largest's and configurations differing in aggregation share their
    samples, so counting them again would weigh the first samples more than the rest.
    """
    best_of_n = with_strategy_config(frame[frame["strategy"] == "best_of_n"])
    largest = best_of_n.sort_values(["budget", "strategy_config"], ascending=[False, True], kind="stable")
    jobs = largest.drop_duplicates(subset=["unique_id", "seed"])
    flags = jobs["candidate_correct"].map(flag_values)
    outcomes = pd.Series(
        [f for fs in flags for f in fs],
        dtype=bool,
        index=np.repeat(jobs["unique_id"].to_numpy(), flags.map(len).to_numpy(dtype="int64")),
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

    The bins are `ttsearch.analysis.policy.bin_of(score, thresholds)` of every question, thresholds fitted on these
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
    """A column of `ttsearch.sweep.results.ADDED_COLUMNS`, its default where the rows predate it (absent or null)."""
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
    """Descending score edges fitted on these questions (`ttsearch.analysis.policy.fit_thresholds`)."""
    estimation_samples: int | None = None
    """k, the best-of-N samples a predicted estimate reads; None for oracle (every sample)."""
    capped: bool = False
    """The default k was cut to the largest best-of-N job."""
    aggregation: str | None = None
    """The step-score aggregation of the candidate scores a predicted estimate averages."""
    cost: pd.DataFrame | None = None
    """Predicted: unique_id → COST_COLUMNS of the k samples (NaN where the sweep recorded no per-candidate
    tokens). Oracle: None, it needs the ground truth and is not deployable."""

    @property
    def n_bins(self) -> int:
        return len(self.thresholds) + 1


def estimation_jobs(frame: pd.DataFrame, estimation_samples: int | None = None) -> tuple[pd.DataFrame, int, bool]:
    """Per question, its largest best-of-N job cut to the first k candidates; k; whether the default was capped.

    Jobs with aggregation `last` (the PRM's score of the final answer, what `solve` uses by default) are
    preferred; lowest seed. The first k of N independent samples are distributed as a best-of-k job's, so k
    may be any number up to the largest job. k defaults to DEFAULT_ESTIMATION_SAMPLES, capped by the largest
    best-of-N job. Questions whose jobs all hold fewer than k candidates are absent.
    """
    # The estimate reads verifier scores: keep each job's row that was billed the verifier, with its cached tokens.
    best_of_n = frame[frame["strategy"] == "best_of_n"].sort_values("verifier_tokens", ascending=False, kind="stable")
    best_of_n = search_jobs(best_of_n)
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
            f"estimation_samples={k} exceeds every best-of-N job (the largest holds {sizes.max()} candidates)"
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


def estimation_cost(frame: pd.DataFrame, jobs: pd.DataFrame, k: int) -> pd.DataFrame:
    """unique_id → COST_COLUMNS of the k samples `estimation_jobs` kept: what the estimate really spent.

    Generated and verifier tokens are the sums over the k candidates' own counts; the prompt is the job's one
    prefill as recorded (a best-of-N job is one request with n samples, so k samples pay one prompt too). Cached
    verifier tokens are not recorded per candidate: the k candidates get the job's cached share of its verifier
    tokens. FLOPs are the sweep's per-token rates (`flops_rates`) times the computed tokens (`computed_tokens`'
    rules). Without per-candidate token columns (an older sweep) every cost but `samples` is NaN: unknown, not
    scaled.
    """
    generator_rate, verifier_rate = flops_rates(frame)
    known = all(column in jobs for column in CANDIDATE_COST_COLUMNS)
    nan = pd.Series(math.nan, index=jobs.index)
    generated = jobs["candidate_generated_tokens"].map(_sum_or_nan) if known else nan
    verifier = jobs["candidate_verifier_tokens"].map(_sum_or_nan) if known else nan
    prompt = jobs["prompt_tokens"].astype(float) if known else nan
    cached = jobs["cached_prompt_tokens"].astype(float) if known else nan
    job_verifier = jobs["verifier_tokens"].astype(float)
    cached_share = (added_column(jobs, "cached_verifier_tokens") / job_verifier.where(job_verifier > 0)).fillna(0.0)
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
    return cost.set_axis(jobs["unique_id"].to_numpy()).rename_axis("unique_id")


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
    jobs, k, capped = estimation_jobs(frame, estimation_samples)
    scores = jobs[["unique_id", "candidate_scores"]].explode("candidate_scores").dropna()
    score = scores["candidate_scores"].astype(float).groupby(scores["unique_id"]).mean().rename("score")
    if score.empty:
        raise AnalysisError("no verifier scores on the best-of-N candidates: predicted difficulty needs them")
    samples = scores.groupby("unique_id").size().reindex(score.index).rename("samples")
    bins, thresholds = score_bins(score, n_bins, min_size)
    cost = estimation_cost(frame, jobs, k).loc[score.index]
    return Difficulty(kind, score, samples, bins, thresholds, k, capped, str(jobs["aggregation"].iloc[0]), cost)


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
