"""The report as Markdown and as one self-contained HTML page (figures embedded as base64 PNG).
Pure: takes the computed `ReportData`, the paper's numbers and the cost table; returns text."""
from __future__ import annotations

import html

import polars as pl

from gravity_core.evaluation.report import ReportData

METRICS = [("top1_win_rate", "Top-1 Win (%)", 100.0), ("preference_gain", "Pref. Gain (%)", 100.0),
           ("interestingness", "Int. Score", 1.0), ("similarity", "Similarity (%)", 100.0)]
UNRELIABLE = "UNRELIABLE JUDGE"


def _fmt(value, scale: float) -> str:
    return "–" if value is None else f"{value * scale:.2f}" if scale != 1.0 else f"{value:.2f}"


def table2_rows(data: ReportData, paper: pl.DataFrame, names: dict[str, str]) -> list[list[str]]:
    """Table 2's layout: per method, ours [95% CI] beside the paper's published value, per metric.

    Takes: paper (method, top1_win_rate, preference_gain, interestingness, similarity; percent as printed).
    """
    ci = {(r["method"], r["metric"]): r for r in data.intervals.iter_rows(named=True)}
    published = {r["method"]: r for r in paper.iter_rows(named=True)}
    rows = []
    for row in data.metrics.sort("method").iter_rows(named=True):
        cells = [names.get(row["method"], row["method"])]
        for metric, _, scale in METRICS:
            interval = ci.get((row["method"], metric))
            ours = _fmt(row.get(metric), scale)
            if interval is not None and interval["ci_low"] == interval["ci_low"]:
                ours += f" [{_fmt(interval['ci_low'], scale)}, {_fmt(interval['ci_high'], scale)}]"
            cells += [ours, _fmt(published.get(row["method"], {}).get(metric), 1.0)]
        cells.append(f"{row['bt_strength']:.2f}" if row.get("bt_strength") is not None else "–")
        rows.append(cells)
    return rows


def table2_header(unreliable: bool) -> list[str]:
    header = ["Method"]
    for metric, label, _ in METRICS:
        mark = f" ({UNRELIABLE})" if unreliable and metric in ("top1_win_rate", "preference_gain") else ""
        header += [f"{label} ours{mark}", f"{label} paper"]
    return header + ["Bradley-Terry"]


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _frame_rows(frame: pl.DataFrame, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    def cell(v):
        return f"{v:.{digits}g}" if isinstance(v, float) else "–" if v is None else str(v)
    return frame.columns, [[cell(v) for v in row] for row in frame.iter_rows()]


def sections(data: ReportData, paper: pl.DataFrame, names: dict[str, str], cost: pl.DataFrame,
             title: str) -> list[tuple[str, str, list[str], list[list[str]]]]:
    """(key, heading, header, rows) of every table the report shows, in order."""
    unreliable = any(data.flags.values())
    out = [("table2", f"Table 2: personalization metrics ({data.n_users} users; ours with 95% bootstrap CI "
                      "by user, beside the paper's published values)", table2_header(unreliable),
            table2_rows(data, paper, names))]
    if data.tests.height:
        out.append(("tests", "Wilcoxon signed-rank (paired by user) of the reference vs each method, Holm-corrected",
                    *_frame_rows(data.tests)))
    rel = pl.DataFrame([{"judge": j, **{k: v for k, v in r.items()}, "flags": "; ".join(data.flags[j]) or "ok"}
                        for j, r in data.reliability.items()])
    out.append(("reliability", "Judge reliability", *_frame_rows(rel)))
    if data.by_country is not None:
        out.append(("country", "Per country (Figure 2)", *_frame_rows(data.by_country.drop("n_similarity"))))
    if data.by_genre is not None:
        out.append(("genre", "Per book category (Figure 3)", *_frame_rows(data.by_genre.drop("n_similarity"))))
    out.append(("cost", "Cost per stage (ledger; dollars at the recipe's prices)", *_frame_rows(cost)))
    return out


def render_markdown(data: ReportData, paper: pl.DataFrame, names: dict[str, str], cost: pl.DataFrame,
                    title: str) -> str:
    """The report as Markdown (tables only; the HTML page carries the figures)."""
    parts = [f"# {title}", ""]
    parts += [f"> **Warning:** {w}; its win rates and preference gains are unreliable." for w in data.warnings]
    for _, heading, header, rows in sections(data, paper, names, cost, title):
        parts += ["", f"## {heading}", "", _md_table(header, rows)]
    return "\n".join(parts) + "\n"


_STYLE = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
          "table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 6px}"
          "th{background:#eee}.flag{color:#b00;font-weight:bold}tr.flagged td{background:#fdd;color:#b00}")


def _html_table(key: str, header: list[str], rows: list[list[str]], flagged: set[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    flag = ' class="flagged"'
    body = "".join(f"<tr{flag if key == 'reliability' and r[0] in flagged else ''}>"
                   + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table id=\"{key}\"><tr>{head}</tr>{body}</table>"


def render_html(data: ReportData, paper: pl.DataFrame, names: dict[str, str], cost: pl.DataFrame, title: str,
                figures: dict[str, str]) -> str:
    """One self-contained page: every table, flagged judges in red, figures as base64 PNG `<img>`s.

    Takes: figures {caption: base64 PNG}."""
    flagged = {j for j, f in data.flags.items() if f}
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class=\"flag\">{html.escape(w)}; its win rates and preference gains are labelled "
              f"{UNRELIABLE}.</p>" for w in data.warnings]
    for key, heading, header, rows in sections(data, paper, names, cost, title):
        parts.append(f"<h2>{html.escape(heading)}</h2>{_html_table(key, header, rows, flagged)}")
    for caption, png in figures.items():
        parts.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,{png}\">"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "".join(parts) + "</body></html>\n"
