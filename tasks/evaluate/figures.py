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


def country_figure(by_country: pl.DataFrame) -> str:
    """Preference gain per country and method (Figure 2). Takes: country, method, preference_gain."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    frame = by_country.filter(pl.col("preference_gain").is_not_null()).sort("country", "method")
    countries, methods = sorted(set(frame["country"])), sorted(set(frame["method"]))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        rows = frame.filter(pl.col("method") == method).iter_rows(named=True)
        mine = {r["country"]: r["preference_gain"] for r in rows}
        ax.bar([i + j * width for i in range(len(countries))], [100 * (mine.get(c) or 0) for c in countries],
               width, label=method)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(countries))], countries)
    ax.set_ylabel("Preference gain (%)")
    ax.legend(fontsize=7, ncol=4)
    return _png(fig)
