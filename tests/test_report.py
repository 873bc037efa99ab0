"""The report's paper comparisons (issue: Figures 2-3, Tables 5-6 beside the paper) and the
report's tables as Prefect artifacts. A hand-made verdict set whose numbers are known."""
from __future__ import annotations

import base64
import json
import re
import uuid
from pathlib import Path

import polars as pl
import pytest

from gravity_core.evaluation import JudgeThresholds, parse_paper_genre_groups, parse_paper_results
from gravity_core.evaluation.reference import country_frame, genre_claims
from gravity_core.evaluation.render import (
    NO_ABLATIONS, NO_SFT, artifact_key, artifact_tables, render_html, render_markdown, sections,
)
from gravity_core.evaluation.report import check_ablations, paper_categories, report_data

DATA = Path(__file__).resolve().parents[1] / "gravity_core" / "data"
PAPER = parse_paper_results((DATA / "paper_results.yaml").read_text())
GROUPS = parse_paper_genre_groups((DATA / "paper_genre_groups.yaml").read_text())
COST = pl.DataFrame({"stage": ["total"], "calls": [0]})
USERS = [f"u{i}" for i in range(8)]
# One book per user. gravity is above the original for u0-u6 (pref. gain 7/8) and first for
# u0-u6 (win 7/8); gravity_sft is above the original for u0-u4 and u7 (6/8) and first for u7 (1/8).
RANKINGS = [["gravity", "gravity_sft", "lamp", "original"]] * 5 + \
           [["gravity", "lamp", "original", "gravity_sft"]] * 2 + [["gravity_sft", "original", "gravity", "lamp"]]
SCORES = {"gravity": 4, "gravity_sft": 3, "lamp": 3, "original": 2}
SIMILARITY = {"gravity": 0.7, "gravity_sft": 0.8, "lamp": 0.6}
COUNTRIES = pl.DataFrame({"user_id": USERS, "country": ["USA", "Brazil", "Japan", "India"] * 2})
# u0-u3 read romance, u4-u5 self-help, u6-u7 science fiction
CATEGORY = ["romance"] * 4 + ["self_help"] * 2 + ["scifi_fantasy"] * 2
ABLATIONS = pl.DataFrame({"ablation": ["user_interests", "openness", "no_stance"], "pref_gain": [0.7775, 0.85, 0.865],
                          "delta": [-0.0975, -0.025, -0.01], "ci_low": [-0.15, -0.06, -0.03],
                          "ci_high": [-0.04, 0.01, 0.01], "p_value": [0.004, 0.2, 0.03], "n_users": [8, 8, 8]})


def _verdicts(methods: set[str] | None = None) -> pl.DataFrame:
    keep = methods or set(SCORES)
    rankings = [[m for m in r if m in keep] for r in RANKINGS]
    rows = [{"kind": "ranking", "user_id": u, "parent_asin": f"b{i}", "ordering": 0, "judge_model": "judge",
             "candidates": sorted(r), "ranking": r} for i, (u, r) in enumerate(zip(USERS, rankings))]
    rows += [{"kind": "score", "user_id": u, "parent_asin": f"b{i}", "judge_model": "judge", "method": m,
              "score": SCORES[m]} for i, u in enumerate(USERS) for m in sorted(keep)]
    return pl.DataFrame(rows)


def _similarity(methods: set[str] | None = None) -> pl.DataFrame:
    return pl.DataFrame([{"user_id": u, "parent_asin": f"b{i}", "method": m, "similarity": s}
                         for i, u in enumerate(USERS) for m, s in SIMILARITY.items() if m in (methods or SCORES)])


def _data(methods: set[str] | None = None, ablations: pl.DataFrame | None = ABLATIONS):
    genres = pl.DataFrame({"parent_asin": [f"b{i}" for i in range(8)], "paper_category": CATEGORY})
    return report_data(_verdicts(methods), pl.DataFrame(), _similarity(methods), n_boot=20, seed=0,
                       reference="gravity", thresholds=JudgeThresholds(), countries=COUNTRIES, genres=genres,
                       categories=paper_categories(GROUPS), ablations=ablations)


def _md_rows(markdown: str, heading: str) -> list[list[str]]:
    """The table rows (cells stripped, header and rule excluded) of the section starting `## heading`."""
    part = markdown.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in part.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]


def _section(markdown: str, heading: str) -> str:
    return markdown.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]


# ---------------------------------------------------------------- Table 6

def test_table6_compares_dpo_and_sft_beside_the_paper():
    data = _data()
    rows = {r[0]: r for r in _md_rows(render_markdown(data, PAPER, COST, "t"), "Table 6")}
    assert list(rows) == ["GRAVITY: SFT", "GRAVITY: DPO", "DPO − SFT"]
    sft, dpo, diff = rows["GRAVITY: SFT"], rows["GRAVITY: DPO"], rows["DPO − SFT"]
    # cells: method, then (ours, paper) per metric: win, gain, interestingness, similarity
    assert sft[1].startswith("12.50 [") and sft[2] == "20.25" and sft[3].startswith("75.00 [") and sft[4] == "72.58"
    assert dpo[1].startswith("87.50 [") and dpo[2] == "24.50" and dpo[3].startswith("87.50 [") and dpo[4] == "82.67"
    assert (sft[5].split()[0], sft[6], dpo[5].split()[0], dpo[6]) == ("3.00", "3.98", "4.00", "4.10")
    assert dpo[7].startswith("70.00") and dpo[8] == "–"  # Table 6 prints no similarity
    p_gain = data.tests.filter(metric="preference_gain", method="gravity_sft")["p_value"][0]
    assert diff[3] == f"+12.50 (p={p_gain:.3g})" and diff[4] == "+10.09"
    assert diff[1].startswith("+75.00") and diff[2] == "+4.25" and diff[6] == "+0.12"


def test_table6_says_in_one_line_when_gravity_sft_was_not_run():
    markdown = render_markdown(_data({"gravity", "lamp", "original"}), PAPER, COST, "t")
    section = _section(markdown, "Table 6")
    assert NO_SFT in section and "|" not in section and "82.67" not in markdown


# ---------------------------------------------------------------- Table 5

def test_table5_shows_each_ablation_beside_the_paper():
    rows = {r[0]: r for r in _md_rows(render_markdown(_data(), PAPER, COST, "t"), "Table 5")}
    header_free = list(rows)
    assert header_free[0] == "All (full model, gravity, judged beside the ablations)" and header_free[-1] == "no_stance"  # ours-only row last
    assert rows["All (full model, gravity, judged beside the ablations)"][1:3] == ["87.50", "86.73"]
    # ablation, gain ours, gain paper, delta ours [CI], delta paper, p ours, sig ours, sig paper, users
    assert rows["user_interests"] == ["user_interests", "77.75", "–", "-9.75 [-15.00, -4.00]", "-10.34", "0.004",
                                      "**", "**", "8"]
    assert rows["personality: openness"][3:8] == ["-2.50 [-6.00, +1.00]", "-5.45", "0.2", "n.s.", "**"]
    assert rows["user_interests: category"][1] == "–" and rows["user_interests: category"][4] == "-6.23"
    assert rows["no_stance"][4] == "–" and rows["no_stance"][6] == "*"
    assert len(rows) == 1 + len(PAPER.table5.rows) + 1


def test_table5_without_ablations_says_how_to_run_them():
    section = _section(render_markdown(_data(ablations=None), PAPER, COST, "t"), "Table 5")
    assert NO_ABLATIONS in section and "no ablations run (gravity ablate)" == NO_ABLATIONS and "|" not in section


@pytest.mark.parametrize("change, match", [
    (lambda f: f.drop("p_value"), "missing columns"),
    (lambda f: f.with_columns(pl.col("pref_gain") * 100), "out of range"),  # percent, not shares
    (lambda f: f.with_columns(pl.lit("same").alias("ablation")), "duplicated"),
    (lambda f: f.with_columns(pl.lit(None, pl.Float64).alias("delta")), "nulls"),
])
def test_ablation_input_is_validated(change, match):
    assert check_ablations(ABLATIONS).equals(ABLATIONS)
    with pytest.raises(ValueError, match=match):
        check_ablations(change(ABLATIONS))


# ---------------------------------------------------------------- Figures 2 and 3

def test_genre_table_groups_categories_and_prints_the_papers_claims():
    rows = _md_rows(render_markdown(_data(), PAPER, COST, "t"), "Per book category")
    assert [r[:2] for r in rows] == [["fiction", "Romance"], ["fiction", "Science Fiction/Fantasy"],
                                     ["fiction", "all categories"],
                                     ["nonfiction", "Self-Help/Personal Development"], ["nonfiction", "all categories"]]
    # columns: group, category, verdicts, gravity, gravity_sft, lamp (ours), then the paper's claim
    assert rows[1][3:6] == ["50.00", "50.00", "50.00"] and rows[2][3] == "83.33" and rows[3][4] == "50.00"
    assert rows[0][-1] == "> 70 (caption); > 75 (text)" and rows[4][-1] == "≈ 65 (caption, text)"


def test_genre_claims_are_read_from_the_papers_text():
    claims = genre_claims(PAPER.per_genre)
    assert sorted(zip(claims["fiction_group"], claims["value"])) == [
        ("fiction", 70.0), ("fiction", 75.0), ("nonfiction", 65.0), ("nonfiction", 65.0)]
    changed = PAPER.per_genre.model_copy(update={"claims": ["fiction above 60%", "nothing"]})
    with pytest.raises(ValueError, match="not in claim"):
        genre_claims(changed)


def test_country_table_prints_the_papers_tables_14_to_17():
    rows = {(r[0], r[1]): r for r in _md_rows(render_markdown(_data(), PAPER, COST, "t"), "Per country")}
    japan = rows[("Japan", "GRAVITY (Ours)")]
    assert japan[5:7] == ["100.00", "86.25"] and japan[3:5] == ["100.00", "28.00"]
    assert rows[("India", "GRAVITY (Ours)")][5:7] == ["50.00", "83.75"]


def test_html_carries_figure_2_with_the_paper_and_figure_3():
    from tasks.evaluate.figures import country_figure
    from tasks.evaluate.report import _figures
    data = _data()
    figures = _figures(data, PAPER)
    page = render_html(data, PAPER, COST, "t", figures)
    match = re.search(r'<img alt="(Figure 3[^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert match and base64.b64decode(match.group(2)).startswith(b"\x89PNG")
    assert 'alt="Figure 2' in page and 'id="table5"' in page and 'id="table6"' in page
    no_paper = country_frame(PAPER.per_country).clear()
    assert country_figure(data.by_country, no_paper) != country_figure(data.by_country,
                                                                       country_frame(PAPER.per_country))


# ---------------------------------------------------------------- artifacts

def test_artifact_keys_are_valid_for_prefect():
    assert artifact_key("My Run_1", "table2") == "gravity-my-run-1-table2"
    assert artifact_key("--x__", "Table 5") == "gravity-x-table-5"


def test_artifact_rows_are_the_report_tables():
    data = _data({"gravity", "lamp", "original"}, ablations=None)
    tables = {key: (description, rows) for key, description, rows in artifact_tables(sections(data, PAPER, COST), "r")}
    assert set(tables) == {f"gravity-r-{k}" for k in
                           ("table2", "tests", "reliability", "country", "genre", "table5", "table6", "cost")}
    assert all(re.fullmatch(r"[a-z0-9-]+", k) for k in tables)
    table2 = {r["Method"]: r for r in tables["gravity-r-table2"][1]}
    assert table2["GRAVITY (Ours)"]["Top-1 Win (%) paper"] == "26.75"
    assert table2["LaMP"]["Pref. Gain (%) paper"] == "75.50"
    assert tables["gravity-r-table5"][1] == [{"note": NO_ABLATIONS}]
    assert tables["gravity-r-table6"][1] == [{"note": NO_SFT}]
    japan = [r for r in tables["gravity-r-country"][1] if r["Country"] == "Japan" and r["Method"] == "LaMP"]
    assert japan[0]["Pref. Gain (%) paper"] == "70.50"


# ---------------------------------------------------------------- the report stage, in and out of a flow

def _run_dir(root: Path) -> Path:
    """A run directory with what `write_report` reads: profiles, targets, verdicts, similarity."""
    from gravity_core.layout import RunLayout
    from gravity_core.profile.records import Profile
    from gravity_core.records import Verdict, records_frame
    from tasks.records_io import write_profile
    layout = RunLayout.of(root)
    for user, country in zip(COUNTRIES["user_id"], COUNTRIES["country"]):
        write_profile(layout, Profile.model_validate({
            "user_id": user, "user_summary": "s",
            "values": {"user_id": user, "stances": {}, "summary": "v", "review_ids": [], "calls": 0},
            "personality": {"user_id": user, "levels": {}, "source": "llm"},
            "interests": {"user_id": user, "genres": [], "shares": {}},
            "demographics": {"user_id": user, "country": country, "age": None, "age_bin": None, "gender": None,
                             "sources": {"country": "given"}},
            "provenance": {"models": {}, "prompts": {}, "review_ids": [], "banks": {}}}))
    genre = {"romance": "romance", "self_help": "self_help", "scifi_fantasy": "fantasy"}
    layout.targets.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame({"user_id": USERS, "parent_asin": [f"b{i}" for i in range(8)], "title": "t", "description": "d",
                  "genre": [genre[c] for c in CATEGORY]}).write_parquet(layout.targets)
    verdicts = [Verdict.model_validate({**{k: v for k, v in row.items() if v is not None}, "prompt_version": "1"})
                for row in _verdicts().iter_rows(named=True)]
    records_frame(verdicts, Verdict).write_parquet(layout.verdicts)
    _similarity().write_parquet(layout.similarity)
    layout.ablations.parent.mkdir(parents=True, exist_ok=True)
    ABLATIONS.write_parquet(layout.ablations)
    return root


def _recipe():
    from gravity_core.recipe import parse_recipe
    return parse_recipe("data: {reviews: [x], meta: [y]}\nrun: {name: Report_Test}\n"
                        "llm: {default: {backend: fake, fake_script: schema-fill, model: scripted}}\n"
                        "evaluate: {n_boot: 20}\n")


def test_write_report_outside_a_flow_run_writes_and_publishes_nothing(tmp_path):
    from gravity_core.layout import RunLayout
    from tasks.evaluate.report import write_report
    layout = RunLayout.of(_run_dir(tmp_path / "run"))
    summary = write_report.fn(layout, _recipe())
    assert summary["artifacts"] == 0
    markdown = layout.report_md.read_text()
    assert "| user_interests | 77.75 |" in markdown and "| GRAVITY: DPO | 87.50 [" in markdown
    assert 'alt="Figure 3' in layout.report_html.read_text()


@pytest.mark.slow
def test_write_report_in_a_flow_publishes_the_tables_as_artifacts(prefect_harness, tmp_path):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from gravity_core.layout import RunLayout
    from tasks.evaluate.report import write_report

    layout = RunLayout.of(_run_dir(tmp_path / "run"))

    @flow(name=f"report-artifacts-{uuid.uuid4().hex[:6]}")
    def tiny(layout, recipe):
        return write_report(layout, recipe)

    state = tiny(layout, _recipe(), return_state=True)
    assert state.is_completed(), state.message
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id])))
    by_key = {a.key: a for a in found}
    keys = {f"gravity-report-test-{k}" for k in
            ("table2", "tests", "reliability", "country", "genre", "table5", "table6", "cost", "report")}
    assert keys <= set(by_key), sorted(by_key)
    assert state.result()["artifacts"] == len(keys)
    table6 = {r["Method"]: r for r in json.loads(by_key["gravity-report-test-table6"].data)}
    assert table6["GRAVITY: DPO"]["Pref. Gain (%) paper"] == "82.67"
    table5 = {r["Ablation"]: r for r in json.loads(by_key["gravity-report-test-table5"].data)}
    assert table5["user_interests"]["Δ (pp) paper"] == "-10.34" and table5["user_interests"]["p ours"] == "0.004"
    assert by_key["gravity-report-test-report"].type == "markdown"
    assert layout.report_html.resolve().as_uri() in by_key["gravity-report-test-report"].data
