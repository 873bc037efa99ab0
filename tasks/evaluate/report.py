"""The report stage's I/O: read the judge's verdicts (and the ablations, if run), write report.md,
report.html and metrics, and publish the report's tables as Prefect artifacts on the flow run."""
from __future__ import annotations

import polars as pl
from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging import get_run_logger

from gravity_core.evaluation.breakdowns import assign_paper_genres, parse_paper_genre_groups
from gravity_core.evaluation.reference import (
    PaperResults, country_frame, genre_claims, metric_frame, parse_paper_results,
)
from gravity_core.evaluation.render import (
    artifact_key, artifact_tables, render_html, render_markdown, report_link_markdown, sections,
)
from gravity_core.evaluation.report import ReportData, paper_categories, report_data
from gravity_core.layout import RunLayout
from gravity_core.llm_config import LLMConfig
from gravity_core.recipe import Recipe
from gravity_core.records import Verdict
from tasks.evaluate.figures import country_figure, genre_figure, table2_figure
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


def _groups(layout: RunLayout) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(user_id, country) of the profiled users; (parent_asin, paper_category) of the target books;
    the paper's categories (`paper_categories`)."""
    countries = pl.DataFrame([{"user_id": p.user_id, "country": p.demographics.country or "unknown"}
                              for p in read_profiles(layout)], schema={"user_id": pl.String, "country": pl.String})
    groups = parse_paper_genre_groups(resolve_path("package:paper_genre_groups.yaml").read_text(encoding="utf-8"))
    books = read_targets(layout).select("parent_asin", "genre").unique("parent_asin")
    genres = assign_paper_genres(books, groups).select("parent_asin", "paper_category")
    return countries, genres, paper_categories(groups)


def _figures(data: ReportData, paper: PaperResults) -> dict[str, str]:
    """{caption: base64 PNG} of Table 2, Figure 2 and Figure 3, each with the paper's values."""
    figures = {"Table 2 metrics: ours (bars, 95% CI) vs the paper (diamonds)":
               table2_figure(data.intervals, metric_frame(paper.table2))}
    if data.by_country is not None:
        figures["Figure 2: preference gain per country, ours (bars) vs the paper's Tables 14-17 (diamonds)"] = \
            country_figure(data.by_country, country_frame(paper.per_country))
    if data.by_genre is not None and "fiction_group" in data.by_genre.columns:
        figures[f"Figure 3: preference gain of {data.reference} per book category, ours (bars; dotted: our "
                "group mean) vs the paper's claimed group levels (dashed)"] = \
            genre_figure(data.by_genre, data.by_genre_group, genre_claims(paper.per_genre), data.reference)
    return figures


def publish_artifacts(layout: RunLayout, data: ReportData, paper: PaperResults, cost: pl.DataFrame,
                      title: str, run_name: str) -> int:
    """The report's tables as Prefect table artifacts, and a markdown artifact linking the files,
    on the current flow run. Outside a flow or task run there is nothing to attach them to: does
    nothing and returns 0. Returns: the number of artifacts created."""
    if FlowRunContext.get() is None and TaskRunContext.get() is None:
        return 0
    tables = artifact_tables(sections(data, paper, cost), run_name)
    for key, description, rows in tables:
        create_table_artifact(table=rows, key=key, description=description)
    links = {"report.html": layout.report_html.resolve().as_uri(), "report.md": layout.report_md.resolve().as_uri()}
    create_markdown_artifact(markdown=report_link_markdown(title, links, data.warnings),
                             key=artifact_key(run_name, "report"), description=f"{title}: where the report is")
    get_run_logger().info("published %d report artifacts", len(tables) + 1)
    return len(tables) + 1


@task(name="write-report")
def write_report(layout: RunLayout, recipe: Recipe) -> dict:
    """RUN_DIR/report/report.md, report.html (self-contained) and metrics.parquet (Table 2 per
    method); Table 5 from RUN_DIR/report/ablations.parquet when the ablations were run; the
    tables as Prefect artifacts on the flow run."""
    cfg = recipe.evaluate
    sanity = read_frame(layout.sanity_verdicts, Verdict) if layout.sanity_verdicts.exists() else pl.DataFrame()
    ablations = pl.read_parquet(layout.ablations) if layout.ablations.exists() else None
    countries, genres, categories = _groups(layout)
    data = report_data(read_frame(layout.verdicts, Verdict), sanity, pl.read_parquet(layout.similarity),
                       n_boot=cfg.n_boot, seed=recipe.run.seed, reference=cfg.reference,
                       thresholds=cfg.thresholds, countries=countries, genres=genres, categories=categories,
                       ablations=ablations)
    paper = parse_paper_results(resolve_path("package:paper_results.yaml").read_text(encoding="utf-8"))
    cost, title = stage_costs(read_ledger(layout.root), recipe.llm), f"GRAVITY evaluation: run {recipe.run.name}"
    write_text_atomic(layout.report_md, render_markdown(data, paper, cost, title))
    write_text_atomic(layout.report_html, render_html(data, paper, cost, title, _figures(data, paper)))
    write_parquet_atomic(data.metrics, layout.report_metrics)
    try:
        published = publish_artifacts(layout, data, paper, cost, title, recipe.run.name)
    except Exception as exc:  # the files are written; an unreachable API must not fail the report
        get_run_logger().warning("report artifacts not published: %s", exc)
        published = 0
    return {"methods": data.metrics.height, "users": data.n_users, "warnings": data.warnings, "flags": data.flags,
            "artifacts": published}
