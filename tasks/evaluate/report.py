"""The report stage's I/O: read the judge's verdicts, write report.md, report.html and metrics."""
from __future__ import annotations

import polars as pl
from prefect import task

from gravity_core.evaluation.breakdowns import assign_paper_genres, parse_paper_genre_groups
from gravity_core.evaluation.reference import metric_frame, parse_paper_results
from gravity_core.evaluation.render import render_html, render_markdown
from gravity_core.evaluation.report import report_data
from gravity_core.layout import RunLayout
from gravity_core.llm_config import LLMConfig
from gravity_core.recipe import Recipe
from gravity_core.records import Verdict
from tasks.evaluate.figures import country_figure, table2_figure
from tasks.evaluate.targets import read_targets
from tasks.llm.ledger import read_ledger
from tasks.records_io import read_frame, read_profiles
from tasks.resources import resolve_path
from tasks.rundir import write_parquet_atomic, write_text_atomic


def stage_costs(ledger: pl.DataFrame, llm: LLMConfig) -> pl.DataFrame:
    """Per stage: calls, made (not cached), input/output tokens, USD at the recipe's prices (the
    Batch API discount applied). Takes: the ledger. Returns: stage, calls, made, input_tokens,
    output_tokens, cost_usd."""
    made = ledger.filter(~pl.col("cached"))
    usd = [llm.cost_usd(m, i, o, mode == "batch") for m, i, o, mode in
           made.select("model", "input_tokens", "output_tokens", "mode").iter_rows()]
    priced = made.with_columns(pl.Series("usd", usd, dtype=pl.Float64))
    stage = pl.col("stage").str.split(".").list.first().alias("stage")
    counts = ledger.group_by(stage).agg(pl.len().alias("calls"), (~pl.col("cached")).sum().alias("made"),
                                        pl.col("input_tokens").sum(), pl.col("output_tokens").sum())
    dollars = priced.group_by(stage).agg(pl.col("usd").sum().round(4).alias("cost_usd"))
    table = counts.join(dollars, on="stage", how="left").with_columns(pl.col("cost_usd").fill_null(0.0)).sort("stage")
    return pl.concat([table, table.select(pl.lit("total").alias("stage"), pl.exclude("stage").sum())])


def _groups(layout: RunLayout) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(user_id, country) of the profiled users; (parent_asin, paper_category) of the target books."""
    countries = pl.DataFrame([{"user_id": p.user_id, "country": p.demographics.country or "unknown"}
                              for p in read_profiles(layout)], schema={"user_id": pl.String, "country": pl.String})
    groups = parse_paper_genre_groups(resolve_path("package:paper_genre_groups.yaml").read_text(encoding="utf-8"))
    books = read_targets(layout).select("parent_asin", "genre").unique("parent_asin")
    return countries, assign_paper_genres(books, groups).select("parent_asin", "paper_category")


@task(name="write-report")
def write_report(layout: RunLayout, recipe: Recipe) -> dict:
    """RUN_DIR/report/report.md, report.html (self-contained) and metrics.parquet (Table 2 per method)."""
    cfg = recipe.evaluate
    sanity = read_frame(layout.sanity_verdicts, Verdict) if layout.sanity_verdicts.exists() else pl.DataFrame()
    countries, genres = _groups(layout)
    data = report_data(read_frame(layout.verdicts, Verdict), sanity, pl.read_parquet(layout.similarity),
                       n_boot=cfg.n_boot, seed=recipe.run.seed, reference=cfg.reference,
                       thresholds=cfg.thresholds, countries=countries, genres=genres)
    paper = parse_paper_results(resolve_path("package:paper_results.yaml").read_text(encoding="utf-8"))
    published, cost = metric_frame(paper.table2), stage_costs(read_ledger(layout.root), recipe.llm)
    title = f"GRAVITY evaluation: run {recipe.run.name}"
    figures = {"Table 2 metrics: ours (bars, 95% CI) vs the paper (diamonds)": table2_figure(data.intervals, published)}
    if data.by_country is not None:
        figures["Preference gain per country (Figure 2)"] = country_figure(data.by_country)
    write_text_atomic(layout.report_md, render_markdown(data, published, paper.methods, cost, title))
    write_text_atomic(layout.report_html, render_html(data, published, paper.methods, cost, title, figures))
    write_parquet_atomic(data.metrics, layout.report_metrics)
    return {"methods": data.metrics.height, "users": data.n_users, "warnings": data.warnings, "flags": data.flags}
