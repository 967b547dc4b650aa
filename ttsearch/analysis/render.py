"""Rendering a report: curves as plots (matplotlib's object API, no pyplot state) and tables as Markdown."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API renders with Agg and leaves pyplot's global state alone
from matplotlib.ticker import (
    FuncFormatter,
    LogFormatterSciNotation,
    LogLocator,
    MaxNLocator,
    NullFormatter,
    NullLocator,
)

from ttsearch.analysis.curves import mean_curves


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


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p")
"""One marker per curve (cycled past 12), so curves of one colour family or on top of each other stay apart."""
DODGE = 2**0.03
"""Curve i of n is drawn at x × DODGE^(i − (n − 1)/2) on its log axis (±3 % of a doubling per step), so identical
curves show side by side instead of hiding each other; tick labels stay at the true values."""
MAX_LOG10_TICKS = 6
"""At most this many labelled decades on a log10 axis (tokens, FLOPs) spanning many decades."""


def curve_style(i: int, n: int) -> tuple[str, float]:
    """The marker and the x factor (`DODGE`) of curve i of n."""
    return MARKERS[i % len(MARKERS)], DODGE ** (i - (n - 1) / 2)


def _log10_axis(ax) -> None:
    """log10 x-axis in scientific notation whose tick labels cannot crowd, call after plotting (reads the x-range).

    Over 2 decades: at most MAX_LOG10_TICKS powers of 10. From 0.8 to 2: 1, 2 and 5 × 10^k (at most 7; any range
    over 2.5² = 6.25× holds two of them). Narrower: at most 5 evenly spaced ticks. Minor ticks stay unlabelled.
    """
    ax.set_xscale("log", base=10)
    low, high = ax.get_xlim()
    decades = math.log10(high / low)
    if decades > 2:
        locator = LogLocator(base=10, numticks=MAX_LOG10_TICKS)
    elif decades > 0.8:
        locator = LogLocator(base=10, subs=(1.0, 2.0, 5.0))
    else:
        locator = MaxNLocator(nbins=4)
    ax.xaxis.set_major_locator(locator)
    # labels every tick the locator chose (its own thresholds would blank 2 and 5 × 10^k over a decade)
    ax.xaxis.set_major_formatter(LogFormatterSciNotation(base=10, labelOnlyBase=False, minor_thresholds=(math.inf, 0)))
    ax.xaxis.set_minor_formatter(NullFormatter())


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
    is log10 in scientific notation (`_log10_axis`). Each curve has its own marker and is shifted slightly
    along x (`curve_style`). The y-range is fitted to the points and their error bars (`y_limits`).
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
            marker, dodge = curve_style(names.index(name), len(names))
            handles[name] = ax.errorbar(
                line["x"] * dodge,
                line["mean"],
                yerr=line["se"].fillna(0),
                marker=marker,
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
            _log10_axis(ax)
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
    """A written report and how many error and ungraded rows it left out; printed as the line `ttsearch report`
    and `ttsearch optimize` show."""

    path: Path | str
    """A local path, or the URI on a remote filesystem."""
    excluded_rows: int
    """Error rows, left out of everything."""
    ungraded_rows: int = 0
    """Rows without a verdict, left out of every accuracy."""
    kind: str = "report"
    """What the file is, as the printed line names it ("report", "compute-optimal report")."""

    def __str__(self) -> str:
        left_out = [
            f"{count} {what} rows"
            for count, what in ((self.excluded_rows, "error"), (self.ungraded_rows, "ungraded"))
            if count
        ]
        note = f" ({' and '.join(left_out)} excluded from accuracy)" if left_out else ""
        return f"{self.kind} written to {self.path}{note}"
