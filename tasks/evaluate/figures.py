"""The report's figures (matplotlib, headless) as base64 PNG, to embed in the HTML page."""
from __future__ import annotations

import base64
import io

import polars as pl

PANELS = [("top1_win_rate", "Top-1 win rate (%)"), ("preference_gain", "Preference gain (%)")]


def _png(fig) -> str:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def table2_figure(intervals: pl.DataFrame, paper: pl.DataFrame) -> str:
    """Win rate and preference gain per method: ours with 95% CI bars, the paper's as hollow markers.

    Takes: intervals (method, metric, estimate, ci_low, ci_high: shares), paper (method, metrics in percent)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(PANELS), figsize=(11, 3.6))
    published = {r["method"]: r for r in paper.iter_rows(named=True)}
    for ax, (metric, label) in zip(axes, PANELS):
        part = intervals.filter(pl.col("metric") == metric).sort("method")
        methods = part["method"].to_list()
        est = [100 * v for v in part["estimate"]]
        err = [[100 * (e - lo) for e, lo in zip(part["estimate"], part["ci_low"])],
               [100 * (hi - e) for e, hi in zip(part["estimate"], part["ci_high"])]]
        ax.bar(range(len(methods)), est, yerr=err, capsize=3, color="#4c72b0", label="ours (95% CI)")
        paper_y = [published.get(m, {}).get(metric) for m in methods]
        ax.scatter([i for i, y in enumerate(paper_y) if y is not None], [y for y in paper_y if y is not None],
                   marker="D", facecolors="none", edgecolors="#c44e52", label="paper")
        ax.set_xticks(range(len(methods)), methods, rotation=40, ha="right")
        ax.set_title(label)
    axes[0].legend(fontsize=8)
    return _png(fig)


def _axes(figsize):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(figsize=figsize)


def country_figure(by_country: pl.DataFrame, paper: pl.DataFrame) -> str:
    """Preference gain per country and method (Figure 2): ours as bars, the paper's (Tables 14-17)
    as hollow diamonds on the same bar. Takes: by_country (country, method, preference_gain: share),
    paper (`country_frame`: country, method, preference_gain in percent)."""
    frame = by_country.filter(pl.col("preference_gain").is_not_null()).sort("country", "method")
    countries, methods = sorted(set(frame["country"])), sorted(set(frame["method"]))
    published = {(r["country"], r["method"]): r["preference_gain"] for r in paper.iter_rows(named=True)}
    fig, ax = _axes((10, 3.6))
    width = 0.8 / max(len(methods), 1)
    marks = []
    for j, method in enumerate(methods):
        rows = frame.filter(pl.col("method") == method).iter_rows(named=True)
        mine = {r["country"]: r["preference_gain"] for r in rows}
        xs = [i + j * width for i in range(len(countries))]
        ax.bar(xs, [100 * (mine.get(c) or 0) for c in countries], width, label=method)
        marks += [(x, published[(c, method)]) for x, c in zip(xs, countries)
                  if published.get((c, method)) is not None]
    if marks:
        ax.scatter(*zip(*marks), marker="D", s=14, facecolors="none", edgecolors="#222", zorder=3,
                   label="paper (Tables 14-17)")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(countries))], countries)
    ax.set_ylabel("Preference gain (%)")
    ax.set_ylim(0, 120)  # room for the legend above the bars
    ax.legend(fontsize=7, ncol=5, loc="upper center")
    return _png(fig)


def genre_figure(by_genre: pl.DataFrame, by_group: pl.DataFrame | None, claims: pl.DataFrame,
                 method: str) -> str:
    """One method's preference gain per paper category, fiction then non-fiction (Figure 3): ours
    as bars, our group mean dotted, the paper's claimed group levels dashed.

    Takes: by_genre (paper_category_name, fiction_group, method, preference_gain: share; rows in the
    paper's order), by_group (fiction_group, method, preference_gain) or None, claims
    (`genre_claims`: fiction_group, relation, value in percent, source)."""
    rows = by_genre.filter((pl.col("method") == method) & pl.col("preference_gain").is_not_null())
    groups = list(dict.fromkeys(rows["fiction_group"]))
    fig, ax = _axes((10, 3.8))
    colors = {"fiction": "#4c72b0", "nonfiction": "#dd8452"}
    x, ticks = 0, []
    for group in groups:
        part = rows.filter(pl.col("fiction_group") == group)
        xs = list(range(x, x + part.height))
        ax.bar(xs, [100 * v for v in part["preference_gain"]], color=colors.get(group, "#999"), label=group)
        ticks += list(zip(xs, part["paper_category_name"]))
        _group_lines(ax, xs, group, by_group, claims, method, first=x == 0)
        x += part.height + 1
    ax.set_xticks([t for t, _ in ticks], [n for _, n in ticks], rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(f"Preference gain (%), {method}")
    ax.set_ylim(0, 120)
    ax.legend(fontsize=7, ncol=4, loc="upper center")
    return _png(fig)


def _group_lines(ax, xs: list[int], group: str, by_group, claims: pl.DataFrame, method: str, first: bool) -> None:
    """Over one group's bars: our group mean (dotted) and the paper's claimed levels (dashed)."""
    left, right = xs[0] - 0.4, xs[-1] + 0.4
    if by_group is not None:
        mean = by_group.filter((pl.col("fiction_group") == group) & (pl.col("method") == method))["preference_gain"]
        if mean.len() and mean[0] is not None:
            ax.hlines(100 * mean[0], left, right, colors="#222", linestyles=":",
                      label="ours, group mean" if first else None)
    levels = claims.filter(pl.col("fiction_group") == group).unique(["relation", "value"], maintain_order=True)
    for i, r in enumerate(levels.iter_rows(named=True)):
        ax.hlines(r["value"], left, right, colors="#c44e52", linestyles="--",
                  label="paper's claimed level" if first and i == 0 else None)
        ax.annotate(f"paper {r['relation']} {r['value']:g}%", (right, r["value"]), fontsize=7, color="#c44e52",
                    ha="right", va="bottom")
