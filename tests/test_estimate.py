"""`gravity estimate`: the arithmetic on a hand-built case, the output-token rule, the call counts of
each stage for known sizes, the paper recipe's cohort without its data, and the estimate against
what a fake-backend run of the stages actually ledgers."""
from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from gravity_core import estimate as core
from gravity_core.banks import SeedStatement
from gravity_core.llm import ChatRequest, Message, SamplingParams
from gravity_core.llm_config import LLMConfig
from gravity_core.profile.records import UserInput
from gravity_core.recipe import parse_recipe
from tasks import estimate as est

FAKE = ["llm.default.backend=fake", "llm.default.fake_script=schema-fill", "llm.default.model=scripted"]


def group(stage: str, model: str, calls: int, tin: int, tout: int, backend: str = "openai") -> core.CallGroup:
    return core.CallGroup(stage, "p", "s", backend, model, calls, tin, tout, calls)


def recipe(*overrides: str):
    return parse_recipe(Path("recipes/sample.yaml").read_text(), [*FAKE, *overrides])


# --- arithmetic -----------------------------------------------------------------------------------

def test_stage_table_prices_a_hand_built_case():
    llm = LLMConfig()  # gpt-4o: $2.50 in, $10.00 out per Mtok; batch x 0.5
    groups = [group("profiles.values", "gpt-4o", 10, 1_000_000, 100_000),
              group("profiles.user_summary", "gpt-4o", 2, 200_000, 0),
              group("generate", "smollm2", 4, 200_000, 50_000, backend="local")]
    table = core.stage_table(groups, llm)
    rows = {r["stage"]: r for r in table.iter_rows(named=True)}
    # profiles: 1.2 Mtok in x 2.50 + 0.1 Mtok out x 10.00 = 3.00 + 1.00
    assert (rows["profiles"]["calls"], rows["profiles"]["usd"], rows["profiles"]["usd_batch"]) == (12, 4.0, 2.0)
    # generate: a local model costs 0; at gpt-4o list: 0.2 x 2.50 + 0.05 x 10.00 = 1.00
    assert (rows["generate"]["usd"], rows["generate"]["usd_gpt-4o"]) == (0.0, 1.0)
    assert rows["train"]["calls"] == 0 and list(table["stage"])[-1] == "total"
    assert (rows["total"]["calls"], rows["total"]["input_tokens"], rows["total"]["output_tokens"]) == (
        16, 1_400_000, 150_000)
    assert (rows["total"]["usd"], rows["total"]["usd_batch"], rows["total"]["usd_gpt-4o"]) == (4.0, 2.0, 5.0)
    assert "usd_gpt-4o" not in core.stage_table(groups[:2], llm).columns  # every model priced: no reference column


def test_footnotes_say_cold_run_fill_factors_and_the_reask_bound():
    structured = [core.CallGroup("judge", "p", "judge", "openai", "gpt-4o", 10, 1, 1, 10, structured=True),
                  core.CallGroup("generate", "p", "generate", "local", "m", 5, 1, 1, 5, structured=False)]
    assert core.reask_bound(structured, 2) == 20  # 10 judge calls x 2 re-asks; generate is never re-asked
    notes = " ".join(core.footnotes(structured, LLMConfig(), {"openai/gpt-4o": "chars/4"}, "data", []))
    assert "cold run" in notes and "x 0.9" in notes and "0.35" in notes and "x 0.5" in notes


def test_chars_rule_and_output_tokens():
    counter = core.CharCounter()
    messages = (Message(role="system", content="abcd" * 10), Message(role="user", content="abc"))
    assert counter.prompt(messages) == (10 + 4) + (1 + 4) + 3  # ceil(chars/4) + 4 per message + 3
    free = ChatRequest(messages=messages, params=SamplingParams(max_tokens=100))
    assert core.output_tokens(free, counter, capped=True) == 90  # free text: 0.9 of max_tokens
    score = {"type": "object", "properties": {"score": {"enum": [1, 2, 3, 4, 5]}}}
    scored = free.model_copy(update={"output_schema": score, "params": SamplingParams(max_tokens=2)})
    assert core.output_tokens(scored, counter, capped=False) == 3  # '{"score": 1}': 12 chars
    assert core.output_tokens(scored, counter, capped=True) == 2  # an endpoint stops at max_tokens
    text = {"type": "object", "properties": {"text": {"type": "string"}}}
    written = free.model_copy(update={"output_schema": text})
    assert core.output_tokens(written, core.WordCounter(), capped=False) == 1 + 35  # '{"text":' + 0.35 x 100 words


def test_nominal_cohort_size_and_ledger_comparison():
    assert core.nominal_cohort_size(None, 100, None, 4) == 400
    assert core.nominal_cohort_size(["a", "b"], 100, 1, 4) == 1
    assert core.nominal_cohort_size(None, None, None, 4) is None
    table = core.stage_table([group("profiles.values", "gpt-4o", 10, 100, 10), group("judge", "gpt-4o", 5, 50, 5)],
                             LLMConfig())
    ledger = pl.DataFrame({"stage": ["profiles.values"] * 12, "request_key": [*map(str, range(11)), "0"],
                           "input_tokens": [10] * 12, "output_tokens": [1] * 12})  # key 0 again: a cache hit
    rows = {r["stage"]: r for r in core.ledger_comparison(table, ledger).iter_rows(named=True)}
    assert (rows["profiles"]["calls_run"], rows["profiles"]["calls_diff"], rows["profiles"]["in_diff"]) == (
        11, -9.1, -9.1)
    assert rows["judge"]["calls_run"] == 0 and rows["judge"]["calls_diff"] is None
    assert rows["total (stages in the ledger)"]["calls_est"] == 10  # judge is not in this ledger


# --- call counts of each stage --------------------------------------------------------------------

USER = UserInput(user_id="u1", country="Japan", age=None, gender="female", reviews=())
BOOKS = [{"parent_asin": f"B{i}", "title": f"Book {i}", "description": f"Maria sails home in 198{i}.",
          "genre": "fantasy"} for i in range(2)]


@pytest.mark.parametrize("orderings, baselines, judge, baseline", [
    (2, None, 2 * (2 + 2 + 7), 2 * (5 + 2)),  # 7 candidates: 2 rankings + sanity pair + 7 scores; TriAgent = 3 calls
    (None, None, 2 * (7 + 2 + 7), 2 * (5 + 2)),  # paper: every ordering
    (None, '["base_rewrite", "lamp"]', 2 * (4 + 2 + 4), 2 * 2),  # 4 candidates, no TriAgent
    (1, '["triagent"]', 2 * (1 + 2 + 3), 2 * 3),
])
def test_judge_and_baseline_calls_for_a_known_slate(orderings, baselines, judge, baseline):
    spec = recipe(f"evaluate.orderings={orderings or 'null'}", "evaluate.trained=[]",
                  *([f"evaluate.baselines={baselines}"] if baselines else []))
    fill = core.WordCounter().filler
    calls = est.judge_calls(USER, BOOKS, spec, fill)
    assert len(calls) == judge
    sanity = [c for c in calls if c.prompt == "judge_ranking (sanity)"]
    assert len(sanity) == 2 * 2 and all(c.make().prompt_name == "judge_ranking" for c in sanity)
    ranked = next(c for c in calls if c.prompt == "judge_ranking").make()
    assert len(est.baseline_calls(USER, BOOKS, ["a review"], spec, fill)) == baseline
    assert ranked.messages[1].content.count("<<<END DESCRIPTION") == len(ranked.output_schema["properties"]
                                                                         ["ranking"]["items"]["enum"])


@pytest.mark.parametrize("backend, steps, generated", [
    ("local", {}, ["gravity", "gravity_sft", "user_sft", "prefalign"]),  # in-process: every trained adapter
    ("openai", {}, ["gravity"]),  # an endpoint generates a trained baseline only where its adapter is served
    ("openai", {"generate_user_sft": {"model": "served-user-sft"}}, ["gravity", "user_sft"]),
])
def test_trained_baselines_generate_and_join_the_judged_slate(backend, steps, generated):
    import json
    spec = recipe(f"llm.steps={json.dumps({'generate': {'backend': backend, 'model': 'm'}, **steps})}",
                  "evaluate.orderings=2", "evaluate.baselines=[base_rewrite]")
    fill = core.WordCounter().filler
    calls = est.generate_calls(USER, BOOKS, spec, fill)
    assert len(calls) == 2 * len(generated)  # one description per book and method
    assert {c.step for c in calls} == {"generate", *(f"generate_{m}" for m in generated[1:])}
    assert all(c.make().messages for c in calls)
    candidates = 1 + len(generated) + 1  # the original, the generating methods, BaseRewrite
    assert len(est.judge_calls(USER, BOOKS, spec, fill)) == 2 * (2 + 2 + candidates)
    if backend == "local":
        assert est.step_configs(spec.llm, spec.evaluate.trained)["generate_prefalign"].model == "m"


def test_requests_that_do_not_depend_on_the_user_are_made_once():
    from gravity_core.llm_config import BackendConfig
    spec = recipe("evaluate.trained=[]")
    fill = core.WordCounter().filler
    twin = USER.model_copy(update={"user_id": "u2"})  # same persona, same books
    other = USER.model_copy(update={"user_id": "u3", "country": "Brazil"})
    plan = [c for u in (USER, twin, other) for c in est.baseline_calls(u, BOOKS, ["a review"], spec, fill)]
    groups = est.count_groups(plan, {"baselines": BackendConfig(backend="fake", fake_script="schema-fill")},
                              {"baselines": core.WordCounter()})
    repeats = {g.prompt: g.repeats for g in groups}
    # BaseRewrite and TriAgent's rewrite show only the book: 3 users x 2 books, 2 requests; DemoBased
    # adds the persona: the twin repeats; the rest show the user's summary or reviews
    assert repeats == {"baseline_base_rewrite": 4, "baseline_triagent_rewrite": 4, "baseline_demo_based": 2,
                       "baseline_user_summary": 0, "baseline_lamp": 0, "baseline_triagent_edit": 0,
                       "baseline_triagent_final": 0}
    table = core.stage_table(groups, LLMConfig())
    assert table.filter(pl.col("stage") == "baselines")["calls"].item() == 3 * 2 * 7 - 10


def test_prefalign_writes_two_descriptions_per_book():
    calls = est.prefalign_calls(USER, BOOKS * 3, recipe())
    assert len(calls) == 2 * 6 and {c.stage for c in calls} == {"pairs"}
    aligned, misaligned = (calls[i].make().messages[1].content for i in (0, 1))
    assert "more engaging" in aligned and "less engaging" in misaligned


@pytest.mark.parametrize("user, personality, expected", [
    (USER, "llm", 1 + 2 + 1 + 1 + 1),  # age missing: 1 demographics call; 30 seeds in batches of 25: 2 value calls
    (USER.model_copy(update={"age": 40}), "llm", 0 + 2 + 1 + 1 + 1),  # nothing to infer
    (USER.model_copy(update={"country": None, "age": 40}), "hf", 1 + 0 + 2 + 1 + 1),  # country call; hf personality
])
def test_profile_calls_follow_what_is_missing(user, personality, expected):
    spec = recipe(f"profiles.personality.backend={personality}", "profiles.personality.model=x")
    seeds = [SeedStatement(id=f"s{i}", statement=f"Statement {i}.", source="wvs7", topic="ethics", construct="c")
             for i in range(30)]
    calls = est.profile_calls(user, spec, seeds, ["USA", "Japan"])
    assert len(calls) == expected
    assert all(c.make().messages for c in calls)  # every request renders with the real templates


def test_the_paper_recipe_without_its_data_uses_the_nominal_cohort(monkeypatch):
    monkeypatch.setattr(est, "MAX_RENDERED", 2)
    spec = parse_recipe(Path("recipes/paper.yaml").read_text())
    result = est.estimate_run(spec)
    calls = dict(zip(result.table["stage"], result.table["calls"]))
    # 400 users x (1 demographics + 150 value calls + value summary + personality + user summary)
    assert calls["profiles"] == 400 * 154 and calls["scenarios"] == 150
    assert calls["pairs"] == 400 * 100 * 2  # PrefAlign: 100 books per user (>= 50 reviewed, topped up), 2 sides
    # 2000 target books: GRAVITY + 3 trained baselines; 5 prompting baselines (TriAgent: 3 calls);
    # the judge: 10 candidates, all 10 orderings + the sanity pair + 10 scores
    assert (calls["generate"], calls["baselines"], calls["judge"]) == (2000 * 4, 2000 * 7, 2000 * (10 + 2 + 10))
    assert "stand-in cohort of 400 users" in " ".join(result.notes)
    total = result.table.filter(pl.col("stage") == "total").row(0, named=True)
    assert total["usd_batch"] == pytest.approx(total["usd"] * 0.5) and total["usd"] > 100


def test_countries_inferred_at_ingest_are_counted():
    spec = recipe("data.users=null", "cohort.country_source=inferred", "cohort.users_per_country=3")
    result = est.estimate_run(spec)
    assert sum(g.calls for g in result.groups if g.stage == "cohort.country") == 16  # every candidate, once
    assert dict(zip(result.table["stage"], result.table["calls"]))["ingest"] == 16


# --- against a run --------------------------------------------------------------------------------

def test_the_estimate_matches_what_a_fake_run_of_the_stages_ledgers(prefect_harness, tmp_path, monkeypatch):
    from flows.evaluate import baselines_flow, judge_flow, targets_flow
    from flows.generate import generate_flow
    from flows.ingest import ingest_flow
    from flows.profiles import profiles_flow
    from flows.scenarios import scenarios_flow
    from tasks.llm.ledger import read_ledger
    from tasks.stage import RunContext
    for module in ("tasks.evaluate.lamp", "tasks.evaluate.judge"):  # sentence embeddings are no model calls
        monkeypatch.setattr(f"{module}.embed", lambda texts, *_: np.full((len(texts), 4), 0.5, dtype=np.float32))
    spec = recipe("cohort.users_per_country=1", "banks.seed_limit=12", "profiles.values_batch_size=5",
                  "evaluate.trained=[]",  # trained baselines generate only after the train stage
                  "evaluate.orderings=1", "evaluate.books_per_user=2", f"llm.cache_dir={tmp_path / 'cache'}",
                  f"scenarios.pool_dir={tmp_path / 'pool'}")
    before = est.estimate_run(spec)
    ctx = RunContext(run_dir=str(tmp_path / "run"), run_id=uuid.uuid4().hex[:8], recipe_name="t", recipe_hash="h")
    for flow in (ingest_flow, profiles_flow, scenarios_flow, targets_flow, generate_flow, baselines_flow, judge_flow):
        assert flow(spec, ctx, return_state=True).is_completed()
    ledger = read_ledger(ctx.layout.root)
    ran = dict(ledger.group_by("stage").len().iter_rows())
    planned, repeats = {}, {}
    for g in before.groups:
        planned[g.stage] = planned.get(g.stage, 0) + g.calls
        repeats[g.stage] = repeats.get(g.stage, 0) + g.repeats
    assert planned == ran  # every ledger stage, exactly
    hits = dict(ledger.filter(pl.col("cached")).group_by("stage").len().iter_rows())
    assert {s: n for s, n in repeats.items() if n} == hits  # same book for two users: one request, one cache hit
    compared = core.ledger_comparison(before.table, ledger)
    assert compared.filter(pl.col("stage").str.starts_with("total"))["calls_diff"].item() == 0.0
    # profile prompts show only the data and the given demographics: their input tokens match the fake's count
    inputs = ledger.filter(pl.col("stage") == "profiles.values")["input_tokens"].sum()
    assert sum(g.input_tokens for g in before.groups if g.stage == "profiles.values") == inputs


# --- the command ----------------------------------------------------------------------------------

def test_gravity_estimate_has_help():
    from typer.testing import CliRunner
    from flows.cli import app
    text = CliRunner().invoke(app, ["estimate", "--help"], env={"COLUMNS": "200"}).output
    assert "--recipe" in text and "--out" in text and "--set" in text and "--steps" in text


def test_gravity_estimate_prints_the_table_the_footnotes_and_the_ledger_comparison(monkeypatch, capsys, tmp_path):
    import sys
    from flows.cli import main
    from tasks.llm.ledger import LedgerRow, append_rows
    append_rows(tmp_path, [LedgerRow(run_id="r", stage="scenarios", backend="fake", model="scripted", prompt="p",
                                     request_key=str(i), input_tokens=80) for i in range(30)])
    sets = [a for s in FAKE for a in ("--set", s)]
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["gravity", "estimate", "--recipe", "sample", *sets, "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as done:
        main()
        sys.exit(0)
    out = capsys.readouterr().out
    assert (done.value.code or 0) == 0, out
    assert "estimate: recipe sample, 8 users, 30 seed statements, 8 target books (cold run)" in out
    assert "│ judge " in out and "│ total " in out and "[1] cold run" in out
    assert "estimate vs the run's ledger" in out and "total (stages in the ledger)" in out
    monkeypatch.setattr(sys, "argv", ["gravity", "estimate", "--recipe", "no-such-recipe"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2 and capsys.readouterr().err.startswith("error: recipe not found")
