"""The report as Markdown, as one self-contained HTML page (figures embedded as base64 PNG) and as
table rows for Prefect artifacts. Pure: takes the computed `ReportData`, the paper's numbers and
the cost table; returns text and rows. Every table prints ours beside the paper's published value."""
from __future__ import annotations

import html
import re
from dataclasses import dataclass

import polars as pl

from gravity_core.evaluation.reference import (
    PaperResults, ablation_frame, country_frame, genre_claims, metric_frame, sft_vs_dpo_frame,
)
from gravity_core.evaluation.report import ReportData
from gravity_core.evaluation.stats import significance_stars

METRICS = [("top1_win_rate", "Top-1 Win (%)", 100.0), ("preference_gain", "Pref. Gain (%)", 100.0),
           ("interestingness", "Int. Score", 1.0), ("similarity", "Similarity (%)", 100.0)]
UNRELIABLE = "UNRELIABLE JUDGE"
NO_ABLATIONS = "no ablations run (gravity ablate)"
NO_SFT = "gravity_sft was not run (no verdicts for it in this run), so there is no SFT vs DPO comparison."
SFT_LABELS = {"gravity_sft": "GRAVITY: SFT", "gravity": "GRAVITY: DPO"}


@dataclass(frozen=True)
class Section:
    """One table of the report; a section with no rows shows only its note."""

    key: str
    heading: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""


def _fmt(value, scale: float) -> str:
    return "–" if value is None else f"{value * scale:.2f}" if scale != 1.0 else f"{value:.2f}"


def _signed(value, scale: float) -> str:
    return "–" if value is None else f"{value * scale:+.2f}"


def table2_rows(data: ReportData, paper: pl.DataFrame, names: dict[str, str],
                methods: list[str] | None = None) -> list[list[str]]:
    """Table 2's layout: per method, ours [95% CI] beside the paper's published value, per metric.

    Takes: paper (method, top1_win_rate, preference_gain, interestingness, similarity; percent as
    printed); methods, in the order shown (default: every method, sorted).
    """
    ci = {(r["method"], r["metric"]): r for r in data.intervals.iter_rows(named=True)}
    published = {r["method"]: r for r in paper.iter_rows(named=True)}
    ours = {r["method"]: r for r in data.metrics.iter_rows(named=True)}
    rows = []
    for method in methods or sorted(ours):
        row, cells = ours[method], [names.get(method, method)]
        for metric, _, scale in METRICS:
            interval, value = ci.get((method, metric)), _fmt(row.get(metric), scale)
            if interval is not None and interval["ci_low"] == interval["ci_low"]:
                value += f" [{_fmt(interval['ci_low'], scale)}, {_fmt(interval['ci_high'], scale)}]"
            cells += [value, _fmt(published.get(method, {}).get(metric), 1.0)]
        cells.append(f"{row['bt_strength']:.2f}" if row.get("bt_strength") is not None else "–")
        rows.append(cells)
    return rows


def table2_header(unreliable: bool) -> list[str]:
    header = ["Method"]
    for metric, label, _ in METRICS:
        mark = f" ({UNRELIABLE})" if unreliable and metric in ("top1_win_rate", "preference_gain") else ""
        header += [f"{label} ours{mark}", f"{label} paper"]
    return header + ["Bradley-Terry"]


def table6_section(data: ReportData, paper: PaperResults, unreliable: bool) -> Section:
    """Table 6: GRAVITY trained with SFT vs DPO on the same preference data, beside the paper's
    values, with a DPO - SFT row (ours: paired Wilcoxon p when `gravity` is the reference)."""
    heading = "Table 6: SFT vs DPO on GRAVITY data (ours with 95% CI, beside the paper's published values)"
    if not {"gravity", "gravity_sft"} <= set(data.metrics["method"]):
        return Section("table6", heading, [], [], NO_SFT)
    published = sft_vs_dpo_frame(paper.table6)
    rows = table2_rows(data, published, SFT_LABELS, ["gravity_sft", "gravity"])
    ours = {r["method"]: r for r in data.metrics.iter_rows(named=True)}
    theirs = {r["method"]: r for r in published.iter_rows(named=True)}
    tests = {} if data.reference != "gravity" or not data.tests.height else {
        r["metric"]: r["p_value"] for r in data.tests.filter(pl.col("method") == "gravity_sft").iter_rows(named=True)}
    diff = ["DPO − SFT"]
    for metric, _, scale in METRICS:
        a, b = ours["gravity"].get(metric), ours["gravity_sft"].get(metric)
        value = _signed(None if a is None or b is None else a - b, scale)
        value += f" (p={tests[metric]:.3g})" if metric in tests else ""
        p_a, p_b = theirs["gravity"].get(metric), theirs["gravity_sft"].get(metric)
        diff += [value, _signed(None if p_a is None or p_b is None else p_a - p_b, 1.0)]
    return Section("table6", heading, table2_header(unreliable), rows + [diff + ["–"]])


def _ablation_row(name: str, mine: dict | None, theirs: dict | None) -> list[str]:
    """One row of Table 5: ours (from ABLATION_SCHEMA, shares) beside the paper's (percentage points)."""
    label = f"{theirs['parent']}: {name}" if theirs and theirs["parent"] else name
    ours = ["–", "–", "–", "–"] if mine is None else [
        _fmt(mine["pref_gain"], 100.0),
        f"{_signed(mine['delta'], 100.0)} [{_signed(mine['ci_low'], 100.0)}, {_signed(mine['ci_high'], 100.0)}]",
        f"{mine['p_value']:.3g}", significance_stars(mine["p_value"]) or "n.s."]
    paper = ["–", "–"] if theirs is None else [_signed(theirs["delta"], 1.0), theirs["stars"] or "n.s."]
    return [label, ours[0], "–", ours[1], paper[0], ours[2], ours[3], paper[1],
            "–" if mine is None else str(mine["n_users"])]


def table5_section(data: ReportData, paper: PaperResults) -> Section:
    """Table 5: per ablation, the change in preference gain vs the full model (percentage points,
    ablated - full) with its 95% CI and paired Wilcoxon p, beside the paper's delta and stars.
    The paper's rows come first in its order (ours "–" when not run), then ablations it lacks."""
    heading = "Table 5: ablations, change in preference gain vs the full model (percentage points)"
    if data.ablations is None:
        return Section("table5", heading, [], [], NO_ABLATIONS)
    header = ["Ablation", "Pref. Gain (%) ours", "Pref. Gain (%) paper", "Δ (pp) ours [95% CI]", "Δ (pp) paper",
              "p ours", "sig. ours", "sig. paper", "Users"]
    # the full model as the ablations' own judge saw it (its slate holds the ablated models, not the
    # baselines, so its gain differs from Table 2's): any row's gain minus its change
    first = data.ablations.row(0, named=True) if data.ablations.height else None
    full = [first["pref_gain"] - first["delta"]] if first else []
    rows = [[f"All (full model, {data.reference}, judged beside the ablations)", _fmt(full[0] if full else None, 100.0),
             _fmt(paper.table5.full_preference_gain, 1.0), "–", "–", "–", "–", "–", str(data.n_users)]]
    ours = {r["ablation"]: r for r in data.ablations.iter_rows(named=True)}
    published = {r["ablation"]: r for r in ablation_frame(paper.table5).iter_rows(named=True)}
    for name in [*published, *sorted(set(ours) - set(published))]:
        rows.append(_ablation_row(name, ours.get(name), published.get(name)))
    note = ("sig.: * p < 0.05, ** p < 0.01 (paired Wilcoxon by user, uncorrected as in the paper). The paper's "
            "full-model gain is printed as in its Table 5 (it equals Table 4's user-study value).")
    return Section("table5", heading, header, rows, note)


def country_rows(data: ReportData, paper: pl.DataFrame, names: dict[str, str]) -> list[list[str]]:
    """Per (country, method): ours beside the paper's Tables 14-17 (no similarity there).

    Takes: paper (`country_frame`: country, method, metrics in percent)."""
    published = {(r["country"], r["method"]): r for r in paper.iter_rows(named=True)}
    rows = []
    for row in data.by_country.sort("country", "method").iter_rows(named=True):
        theirs = published.get((row["country"], row["method"]), {})
        cells = [row["country"], names.get(row["method"], row["method"]), str(row["n_verdicts"] or 0)]
        for metric, _, scale in METRICS[:3]:
            cells += [_fmt(row.get(metric), scale), _fmt(theirs.get(metric), 1.0)]
        rows.append(cells + [_fmt(row.get("similarity"), 100.0)])
    return rows


def country_header() -> list[str]:
    cells = [f"{label} {who}" for _, label, _ in METRICS[:3] for who in ("ours", "paper")]
    return ["Country", "Method", "Verdicts", *cells, "Similarity (%) ours"]


def _claim_text(claims: pl.DataFrame) -> dict[str, str]:
    """fiction_group -> the paper's claimed level(s) of GRAVITY, e.g. "> 70 (caption); > 75 (text)"."""
    merged = claims.group_by("fiction_group", "relation", "value", maintain_order=True).agg("source")
    out: dict[str, list[str]] = {}
    for r in merged.iter_rows(named=True):
        out.setdefault(r["fiction_group"], []).append(f"{r['relation']} {r['value']:g} ({', '.join(r['source'])})")
    return {group: "; ".join(levels) for group, levels in out.items()}


def _gain_cells(gains: pl.DataFrame, by_group: pl.DataFrame | None) -> dict[tuple[str, str], dict]:
    """{(fiction_group, category name or "all categories"): {method: metrics row}}, each group's
    categories in the paper's order and then its total."""
    keyed = [(r["fiction_group"], r["paper_category_name"], r) for r in gains.iter_rows(named=True)]
    if by_group is not None:
        keyed += [(r["fiction_group"], "all categories", r) for r in
                  by_group.filter(pl.col("preference_gain").is_not_null()).iter_rows(named=True)]
    cells: dict[tuple[str, str], dict] = {}
    for group, name, row in keyed:
        cells.setdefault((group, name), {})[row["method"]] = row
    order = list(dict.fromkeys(group for group, _ in cells))
    return dict(sorted(cells.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1] == "all categories")))


def genre_section(data: ReportData, paper: PaperResults, names: dict[str, str]) -> Section:
    """Figure 3 as a table: preference gain (%) per paper category and per fiction group, one
    column per method (reference first), beside the paper's claimed level for GRAVITY."""
    by_genre = data.by_genre
    if "fiction_group" not in by_genre.columns:
        by_genre = by_genre.with_columns(pl.col("paper_category").alias("paper_category_name"),
                                         pl.lit("–").alias("fiction_group"))
    gains = by_genre.filter(pl.col("preference_gain").is_not_null())
    methods = sorted(set(gains["method"]), key=lambda m: (m != data.reference, m))
    claims = _claim_text(genre_claims(paper.per_genre))
    header = ["Group", "Category", "Verdicts", *[f"{names.get(m, m)} ours" for m in methods],
              f"{names.get('gravity', 'gravity')} paper (Figure 3 text)"]
    cells = _gain_cells(gains, data.by_genre_group)
    rows = []
    for (group, name), by_method in cells.items():
        rows.append([group, name, str(max(r["n_verdicts"] or 0 for r in by_method.values())),
                     *[_fmt(by_method.get(m, {}).get("preference_gain"), 100.0) for m in methods],
                     claims.get(group, "–")])
    note = "The paper prints no per-category numbers for Figure 3; its text claims the levels shown."
    return Section("genre", "Per book category (Figure 3): preference gain (%)", header, rows, note)


def _frame_rows(frame: pl.DataFrame, digits: int = 4) -> tuple[list[str], list[list[str]]]:
    def cell(v):
        return f"{v:.{digits}g}" if isinstance(v, float) else "–" if v is None else str(v)
    return frame.columns, [[cell(v) for v in row] for row in frame.iter_rows()]


def sections(data: ReportData, paper: PaperResults, cost: pl.DataFrame) -> list[Section]:
    """Every table the report shows, in order."""
    unreliable, names = any(data.flags.values()), paper.methods
    out = [Section("table2", f"Table 2: personalization metrics ({data.n_users} users; ours with 95% bootstrap CI "
                             "by user, beside the paper's published values)", table2_header(unreliable),
                   table2_rows(data, metric_frame(paper.table2), names))]
    if data.tests.height:
        out.append(Section("tests", "Wilcoxon signed-rank (paired by user) of the reference vs each method, "
                                    "Holm-corrected", *_frame_rows(data.tests)))
    rel = pl.DataFrame([{"judge": j, **dict(r.items()), "flags": "; ".join(data.flags[j]) or "ok"}
                        for j, r in data.reliability.items()])
    out.append(Section("reliability", "Judge reliability", *_frame_rows(rel)))
    if data.by_country is not None:
        out.append(Section("country", "Per country (Figure 2; paper: Tables 14-17)", country_header(),
                           country_rows(data, country_frame(paper.per_country), names)))
    if data.by_genre is not None:
        out.append(genre_section(data, paper, names))
    out += [table5_section(data, paper), table6_section(data, paper, unreliable)]
    out.append(Section("cost", "Cost per stage (ledger; dollars at the recipe's prices)", *_frame_rows(cost)))
    return out


def _md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def render_markdown(data: ReportData, paper: PaperResults, cost: pl.DataFrame, title: str) -> str:
    """The report as Markdown (tables only; the HTML page carries the figures)."""
    parts = [f"# {title}", ""]
    parts += [f"> **Warning:** {w}; its win rates and preference gains are unreliable." for w in data.warnings]
    for section in sections(data, paper, cost):
        parts += ["", f"## {section.heading}", ""]
        parts += [_md_table(section.header, section.rows)] if section.rows else []
        parts += (["", section.note] if section.rows else [section.note]) if section.note else []
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


def render_html(data: ReportData, paper: PaperResults, cost: pl.DataFrame, title: str,
                figures: dict[str, str]) -> str:
    """One self-contained page: every table, flagged judges in red, figures as base64 PNG `<img>`s.

    Takes: figures {caption: base64 PNG}."""
    flagged = {j for j, f in data.flags.items() if f}
    parts = [f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]
    parts += [f"<p class=\"flag\">{html.escape(w)}; its win rates and preference gains are labelled "
              f"{UNRELIABLE}.</p>" for w in data.warnings]
    for s in sections(data, paper, cost):
        parts.append(f"<h2>{html.escape(s.heading)}</h2>")
        parts += [_html_table(s.key, s.header, s.rows, flagged)] if s.rows else []
        parts += [f"<p id=\"{s.key}-note\">{html.escape(s.note)}</p>"] if s.note else []
    for caption, png in figures.items():
        parts.append(f"<figure><img alt=\"{html.escape(caption)}\" src=\"data:image/png;base64,{png}\">"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    return "".join(parts) + "</body></html>\n"


def artifact_key(run_name: str, key: str) -> str:
    """A Prefect artifact key (lowercase letters, digits, dashes): gravity-<run>-<table>."""
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", f"gravity-{run_name}-{key}".lower())).strip("-")


def artifact_tables(report_sections: list[Section], run_name: str) -> list[tuple[str, str, list[dict[str, str]]]]:
    """(artifact key, description, rows as {column: cell}) per report table; a section with only
    a note becomes one row {"note": ...}, so "not run" is visible in the UI too."""
    out = []
    for s in report_sections:
        rows = [dict(zip(s.header, r)) for r in s.rows] or [{"note": s.note}]
        out.append((artifact_key(run_name, s.key), s.heading, rows))
    return out


def report_link_markdown(title: str, links: dict[str, str], warnings: list[str]) -> str:
    """The markdown artifact pointing to the written report. Takes: links {label: path or URI}."""
    parts = [f"# {title}", ""] + [f"- [{label}]({uri})" for label, uri in links.items()]
    return "\n".join(parts + ["", *[f"> **Warning:** {w}" for w in warnings]]) + "\n"
