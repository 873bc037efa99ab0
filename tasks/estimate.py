"""`gravity estimate`: every model call a cold run of the recipe would make, counted before any is made.

The cohort comes from the run directory's ingest outputs, else from the recipe's data files run
through the real ingest and cohort code into a temporary folder, else (no data here) from a
stand-in cohort of the recipe's nominal size. Each stage's calls are built as the stage builds
them (same templates, inputs and schemas; model outputs that later prompts show stand in as filler
of their expected length), rendered, and counted with the tokenizer of the model that serves them.
Rules, prices and tables: `gravity_core.estimate`.
"""
from __future__ import annotations

import random
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import polars as pl

from gravity_core import estimate as core
from gravity_core.cohort import candidates, select_cohort, to_infer
from gravity_core.evaluation.config import baselines_llm
from gravity_core.evaluation.metrics import ORIGINAL
from gravity_core.evaluation.parsing import candidate_ids, ranking_schema, score_schema
from gravity_core.evaluation.reliability import DEGRADED
from gravity_core.evaluation.requests import (
    BASELINE_PROMPTS, TRIAGENT_PROMPTS, edit_request, final_request, first_request, persona_fields,
    ranking_request, score_request,
)
from gravity_core.evaluation.slate import judge_items
from gravity_core.evaluation.trained import prefalign_books
from gravity_core.fences import fence
from gravity_core.generate import GENERATION_PROMPT, select_targets
from gravity_core.layout import GRAVITY, RunLayout
from gravity_core.llm import ChatRequest, SamplingParams
from gravity_core.llm_config import BackendConfig, LLMConfig
from gravity_core.pairs.scenarios import scenario_schema
from gravity_core.profile import facets
from gravity_core.profile.assemble import build_user_inputs
from gravity_core.profile.country import country_schema
from gravity_core.profile.records import TRAITS, UserInput
from gravity_core.recipe import Recipe, RecipeError
from tasks.resources import load_prompt, resolve_path

MAX_RENDERED = 64  # calls rendered per kind of call (a seeded sample); the rest count at their mean
ASSUMPTIONS = [
    "every user and seed passes every stage (failed items would make fewer calls)",
    "model outputs that later prompts show (summaries, descriptions, drafts, edits) stand in as filler of their "
    "expected length; stances split evenly between support and no support; inferred attributes take fixed labels",
    "LaMP shows the user's first k reviewed books (its embedding retrieval is not run); train, targets and "
    "report make no model calls; every trained baseline's adapter is trained before generate",
]


@dataclass(frozen=True)
class Planned:
    """One call a stage would make: ledger stage, prompt, `llm` step, how to build its request,
    whether an invalid reply is re-asked (`ModelClient.structured`), and for a request that does
    not depend on the user beyond the persona, what it does depend on (equal keys: one request)."""

    stage: str
    prompt: str
    step: str
    make: Callable[[], ChatRequest]
    structured: bool = True
    key: tuple | None = None


@dataclass
class Inputs:
    """The cohort as the stages will see it, where it came from, and what was assumed about it."""

    users: list[UserInput]
    targets: dict[str, list[dict]]
    history: dict[str, list[str]]
    prefalign: dict[str, list[dict]]
    seeds: list
    to_infer: list[UserInput]
    source: str
    assumptions: list[str]


@dataclass
class Estimate:
    groups: list[core.CallGroup]
    table: pl.DataFrame
    notes: list[str]
    inputs: Inputs


def _options(recipe: Recipe) -> list[str]:
    from tasks.profile_io import country_options
    return country_options(recipe)


# --- the cohort -----------------------------------------------------------------------------------

def load_inputs(recipe: Recipe, run_dir: Path | None) -> Inputs:
    """RUN_DIR's ingest outputs, else the recipe's data files, else a stand-in cohort."""
    from tasks.profile_io import load_seeds
    seeds, _ = load_seeds.fn(recipe.banks, recipe.run.seed)
    layout = RunLayout.of(run_dir) if run_dir else None
    if layout and layout.reviews.exists() and layout.books.exists():
        read = {p: pl.read_parquet(p) if p.exists() else None for p in (layout.users, layout.cohort)}
        return _from_frames(recipe, seeds, pl.read_parquet(layout.reviews), pl.read_parquet(layout.books),
                            read[layout.users], read[layout.cohort], f"the ingest outputs in {layout.ingest_dir}")
    files = [resolve_path(p) for p in [*recipe.data.reviews, *recipe.data.meta, *filter(None, [recipe.data.users])]]
    missing = [str(f) for f in files if not f.is_file()]
    return _stand_in(recipe, seeds, missing) if missing else _ingested(recipe, seeds)


def _ingested(recipe: Recipe, seeds: list) -> Inputs:
    """The recipe's files through the real ingest code, into a temporary folder."""
    from tasks.bank_io import load_genre_taxonomy
    from tasks.ingest_io import ingest_files
    data = recipe.data
    with tempfile.TemporaryDirectory(prefix="gravity-estimate-") as tmp:
        out = ingest_files([resolve_path(p) for p in data.reviews], [resolve_path(p) for p in data.meta],
                           resolve_path(data.users) if data.users else None, Path(tmp),
                           load_genre_taxonomy(resolve_path(recipe.banks.genres))).outputs
        frames = {name: pl.read_parquet(path) for name, path in out.items()}
    return _from_frames(recipe, seeds, frames["reviews"], frames["books"], frames.get("users"), None,
                        "the recipe's data files (ingested into a temporary folder)")


def _from_frames(recipe: Recipe, seeds: list, reviews: pl.DataFrame, books: pl.DataFrame,
                 users: pl.DataFrame | None, cohort: pl.DataFrame | None, source: str) -> Inputs:
    """Cohort (as the ingest stage selects it, unless given), user inputs, targets (as the targets
    stage picks them, from the interests the profile stage computes without a model), LaMP reviews."""
    from tasks.evaluate.lamp import reviewed_books
    notes, wanted, cfg = [], [], recipe.evaluate
    if cohort is None:
        cands = candidates(reviews.lazy(), users, recipe.cohort)
        infer, options = to_infer(cands, recipe.cohort), _options(recipe)
        assumed = pl.DataFrame({"user_id": infer, "country": [options[i % len(options)] for i in range(len(infer))]},
                               schema={"user_id": pl.String, "country": pl.String})
        cohort = select_cohort(reviews.lazy(), users, recipe.cohort, assumed if infer else None).cohort
        if infer:
            wanted = build_user_inputs(reviews, books, cands.filter(pl.col("user_id").is_in(infer)).with_columns(
                pl.lit("unknown").alias("country_source")), users)
            notes.append(f"{len(infer)} candidates' countries are inferred at ingest; the cohort assumes them spread "
                         "evenly over the options")
    people = build_user_inputs(reviews, books, cohort, users)
    interests = pl.DataFrame([{"user_id": u.user_id, "genre": g, "rank": i} for u in people
                              for i, g in enumerate(facets.interests(u, recipe.profiles).genres)],
                             schema={"user_id": pl.String, "genre": pl.String, "rank": pl.Int64})
    chosen = select_targets(books.lazy(), interests.lazy(), reviews.lazy().select("user_id", "parent_asin"),
                            cfg.books_per_user, cfg.min_book_rating)
    targets = {u: f.drop("user_id").to_dicts() for (u,), f in chosen.group_by("user_id", maintain_order=True)}
    history = {u: f["review"].to_list()[: cfg.lamp_reviews]
               for (u,), f in reviewed_books(reviews, books).group_by("user_id")}
    return Inputs(people, targets, history, _prefalign(recipe, reviews, books, interests), seeds, wanted, source,
                  notes)


def _prefalign(recipe: Recipe, reviews: pl.DataFrame, books: pl.DataFrame, interests: pl.DataFrame) -> dict:
    """PrefAlign's books per cohort user, as tasks.evaluate.prefalign picks them."""
    cfg = recipe.evaluate
    if "prefalign" not in cfg.trained:
        return {}
    reviewed = reviews.select("user_id", "parent_asin").unique().join(interests.select("user_id").unique(),
                                                                      on="user_id")
    chosen = prefalign_books(reviewed, books.select("parent_asin", "title", "description", "genre"),
                             interests.select("user_id", "genre"), cfg.prefalign_books, cfg.prefalign_max_books,
                             recipe.run.seed)
    return {u: f.drop("user_id").to_dicts() for (u,), f in chosen.group_by("user_id", maintain_order=True)}


def _stand_in(recipe: Recipe, seeds: list, missing: list[str]) -> Inputs:
    """No data here: the recipe's nominal cohort of stand-in users (`core.stand_in_cohort`)."""
    cfg, profiles, countries = recipe.cohort, recipe.profiles, recipe.cohort.countries or _options(recipe)
    size = core.nominal_cohort_size(cfg.user_ids, cfg.users_per_country, cfg.max_users, len(countries))
    if size is None:
        raise RecipeError(f"data files not found ({missing[0]}) and the recipe does not bound the cohort: set "
                          "cohort.users_per_country or cohort.max_users, or pass --out with ingest outputs")
    ev = recipe.evaluate
    users, targets, history = core.stand_in_cohort(size, countries, cfg.min_reviews, profiles.max_review_chars,
                                                   ev.books_per_user, ev.lamp_reviews)
    n_prefalign = min(max(cfg.min_reviews, ev.prefalign_books), ev.prefalign_max_books or 10**9)  # reviewed, topped up
    prefalign = {u: [{**books[0], "parent_asin": f"{u}-p{j}"} for j in range(n_prefalign)]
                 for u, books in targets.items()} if "prefalign" in ev.trained else {}
    return Inputs(users, targets, history, prefalign, seeds, [], f"a stand-in cohort of {size} users (not found: "
                  f"{', '.join(missing)})", [
                      f"stand-in users: country given, age and gender inferred, {cfg.min_reviews} reviews of "
                      f"{profiles.max_review_chars} chars each (their review budget filled), "
                      f"{ev.books_per_user} target books with {core.STAND_IN_DESCRIPTION_CHARS}-char descriptions"
                      + (f", {n_prefalign} PrefAlign books" if prefalign else "")
                      + "; no book shared between users; country inference at ingest, if any, not counted"])


# --- the calls, as each stage makes them ----------------------------------------------------------

def _demo(user: UserInput, recipe: Recipe):
    return core.assumed_demographics(user, _options(recipe)[0] if recipe.profiles.infer_country else None)


def _country_call(user: UserInput, options: list[str], recipe: Recipe, stage: str) -> Planned:
    """tasks.profiles.infer_country (the ingest stage's too)."""
    return Planned(stage, "profile_country", "profile", lambda: load_prompt("profile_country").request(
        SamplingParams(max_tokens=16), country_schema(options),
        reviews=facets.fit_reviews(user.reviews, recipe.profiles)[0], options=options))


def profile_calls(user: UserInput, recipe: Recipe, seeds: list, options: list[str]) -> list[Planned]:
    """tasks.profiles: demographics (country, age/gender where missing), stance batches, value
    summary, personality, user summary."""
    cfg, demo = recipe.profiles, _demo(user, recipe).describe()
    text = cache(lambda: facets.fit_reviews(user.reviews, cfg)[0])
    calls = [_country_call(user, options, recipe, "profiles.demographics")] if (
        user.country is None and cfg.infer_country) else []
    missing = [f for f, given, conf in (("age_bin", user.age, cfg.age), ("gender", user.gender, cfg.gender))
               if given is None and conf.backend == "llm"]
    if missing:
        calls.append(Planned("profiles.demographics", "profile_demographics", "profile", lambda: load_prompt(
            "profile_demographics").request(SamplingParams(max_tokens=16), facets.demographics_schema(missing),
                                            reviews=text(), fields=missing)))
    # scored (profiles.scoring: likelihood): the line-format prompt, no schema; over an endpoint the
    # reply is one short `<id>: <label>` line per item (in-process nothing is generated)
    # (the scripted fake backend cannot score: it is asked for JSON, as the stage does)
    scored = cfg.scoring == "likelihood" and recipe.llm.for_step("profile").backend != "fake"
    values_prompt = "profile_values_scored" if scored else "profile_values"
    calls += [Planned("profiles.values", values_prompt, "profile", lambda b=b: load_prompt(values_prompt).request(
        SamplingParams(max_tokens=12 * len(b) + 16), None if scored else facets.stance_schema([s.id for s in b]),
        demographics=demo, reviews=text(), statements=facets.statement_rows(b)))
        for b in facets.batches(seeds, cfg.values_batch_size)]
    stances = {"support": [s.statement for s in seeds[::2]], "no_support": [s.statement for s in seeds[1::2]]}
    summary = SamplingParams(max_tokens=cfg.summary_max_tokens)
    calls.append(Planned("profiles.value_summary", "profile_value_summary", "profile", lambda: load_prompt(
        "profile_value_summary").request(summary, demographics=demo, stances=stances,
                                         max_sentences=cfg.summary_max_sentences)))
    if cfg.personality.backend == "llm":
        personality = "profile_personality_scored" if scored else "profile_personality"
        calls.append(Planned("profiles.personality", personality, "profile", lambda: load_prompt(
            personality).request(SamplingParams(max_tokens=48), None if scored else facets.levels_schema(),
                                 demographics=demo, reviews=text())))
    return calls + [Planned("profiles.user_summary", "profile_user_summary", "profile", lambda: load_prompt(
        "profile_user_summary").request(summary, demographics=demo, reviews=text(),
                                        max_sentences=cfg.summary_max_sentences))]


def scenario_calls(recipe: Recipe, seeds: list) -> list[Planned]:
    """tasks.scenarios: one call per seed statement."""
    cfg = recipe.scenarios
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    return [Planned("scenarios", "scenario_pairs", "scenarios", lambda s=s: load_prompt("scenario_pairs").request(
        params, scenario_schema(cfg.pairs_per_seed, cfg.max_chars), statement=s.statement,
        n_pairs=cfg.pairs_per_seed)) for s in seeds]


def _expected(max_tokens: int) -> int:
    return max(1, round(max_tokens * core.FREE_TEXT_FILL))


def generation_steps(llm: LLMConfig, trained: list[str]) -> list[tuple[str, str]]:
    """(method, `llm` step) of each method the generate stage runs after a full train stage, as
    tasks.generate.generation_plan decides: GRAVITY, then each trained baseline (in-process: its
    adapter; on an endpoint: only where llm.steps.generate_<method> names the served adapter)."""
    local = llm.for_step("generate").backend != "openai"
    return [(GRAVITY, "generate")] + [(m, f"generate_{m}") for m in trained if local or f"generate_{m}" in llm.steps]


def generate_calls(user: UserInput, books: list[dict], recipe: Recipe, fill: Callable) -> list[Planned]:
    """tasks.generate: one description per target book and method, GRAVITY's (and GRAVITY-SFT's) from
    the profile view, UserSFT's and PrefAlign's from the persona."""
    cfg, demo = recipe.generate, _demo(user, recipe)
    params = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_p=cfg.top_p)
    summary, traits = fill(_expected(recipe.profiles.summary_max_tokens)), ", ".join(f"high {t}" for t in TRAITS)
    persona = _persona(user, recipe, fill)
    calls = []
    for method, step in generation_steps(recipe.llm, recipe.evaluate.trained):
        prompt = GENERATION_PROMPT[method]
        label = prompt if method == GRAVITY else f"{prompt} ({method})"
        if prompt == GENERATION_PROMPT[GRAVITY]:
            calls += [Planned("generate", label, step, lambda b=b, prompt=prompt: load_prompt(prompt).request(
                params, demographics=demo.describe(), value_summary=summary, traits=traits,
                title=fence(b["title"], "BOOK TITLE"), description=fence(b["description"], "BOOK DESCRIPTION")),
                False) for b in books]
        else:
            calls += [Planned("generate", label, step, lambda b=b, prompt=prompt: first_request(
                "demo_based", load_prompt(prompt), params, persona, b), False,
                (*persona["persona"].values(), b["parent_asin"])) for b in books]
    return calls


def prefalign_calls(user: UserInput, books: list[dict], recipe: Recipe) -> list[Planned]:
    """tasks.evaluate.prefalign (pairs stage): an aligned and a misaligned description per book."""
    cfg, persona = recipe.evaluate, persona_fields(_demo(user, recipe).model_dump())
    params = SamplingParams(max_tokens=cfg.prefalign_max_tokens, temperature=cfg.baseline_temperature)
    return [Planned("pairs", "baseline_prefalign_pairs", "prefalign", lambda b=b, a=a: load_prompt(
        "baseline_prefalign_pairs").request(params, **persona, book=fence(b["title"], "BOOK TITLE"),
                                            description=fence(b["description"], "BOOK DESCRIPTION"), aligned=a),
        False, (*persona.values(), b["parent_asin"], a)) for b in books for a in (True, False)]


def _persona(user: UserInput, recipe: Recipe, fill: Callable) -> dict:
    return {"user_id": user.user_id, "persona": persona_fields(_demo(user, recipe).model_dump()),
            "user_summary": fill(_expected(recipe.profiles.summary_max_tokens))}


def _shared(method: str, who: dict, book: dict) -> tuple | None:
    """What a baseline's first request depends on when it is not the user: the book alone
    (BaseRewrite, TriAgent's rewrite), the persona and the book (DemoBased)."""
    if method in ("base_rewrite", "triagent"):
        return (book["parent_asin"],)
    return (*who["persona"].values(), book["parent_asin"]) if method == "demo_based" else None


def baseline_calls(user: UserInput, books: list[dict], history: list[str], recipe: Recipe,
                   fill: Callable) -> list[Planned]:
    """tasks.evaluate.baselines: every method's first call per book, then TriAgent's edit and final."""
    cfg, who = recipe.evaluate, _persona(user, recipe, fill)
    books = [{**b, "lamp_reviews": history} for b in books]
    params = SamplingParams(max_tokens=cfg.baseline_max_tokens, temperature=cfg.baseline_temperature)
    calls = [Planned("baselines", BASELINE_PROMPTS[m], "baselines", lambda m=m, b=b: first_request(
        m, load_prompt(BASELINE_PROMPTS[m]), params, who, b), False, _shared(m, who, b))
        for b in books for m in cfg.baselines]
    if "triagent" in cfg.baselines:
        edit_t, final_t = TRIAGENT_PROMPTS
        draft, edits = fill(_expected(cfg.baseline_max_tokens)), fill(_expected(cfg.edits_max_tokens))
        edit_params = params.model_copy(update={"max_tokens": cfg.edits_max_tokens})
        calls += [Planned("baselines", edit_t, "baselines", lambda: edit_request(
            load_prompt(edit_t), edit_params, who, draft), False) for _ in books]
        calls += [Planned("baselines", final_t, "baselines", lambda b=b: final_request(
            load_prompt(final_t), params, who, b, draft, edits), False) for b in books]
    return calls


def judge_calls(user: UserInput, books: list[dict], recipe: Recipe, fill: Callable) -> list[Planned]:
    """tasks.evaluate.judge: per book, rankings over its orderings and the sanity pair's, a score per candidate."""
    cfg, who, uid = recipe.evaluate, _persona(user, recipe, fill), user.user_id
    methods = [m for m, _ in generation_steps(recipe.llm, cfg.trained)]
    generated = {**{m: fill(_expected(recipe.generate.max_tokens)) for m in methods},
                 **{m: fill(_expected(cfg.baseline_max_tokens)) for m in cfg.baselines}}
    slates = {(uid, b["parent_asin"]): {ORIGINAL: b["description"], **generated} for b in books}
    ranking, score = (SamplingParams(max_tokens=n, temperature=0.0) for n in (cfg.judge_max_tokens, 16))
    calls = []
    for item in judge_items(slates, cfg.orderings, recipe.run.seed, cfg.sanity).get(uid, []):
        shown = [("judge_ranking", o, item["texts"]) for o in item["orderings"]]
        shown += [("judge_ranking (sanity)", o, {**item["texts"], DEGRADED: item["degraded"]})
                  for o in item.get("sanity_orderings", [])]
        calls += [Planned("judge", kind, "judge", lambda o=o, t=t, ids=candidate_ids(len(o), cfg.id_style):
                          ranking_request(load_prompt("judge_ranking"), ranking, who, ids, [t[m] for m in o],
                                          ranking_schema(ids))) for kind, o, t in shown]
        calls += [Planned("judge", "judge_interestingness", "judge", lambda text=text: score_request(
            load_prompt("judge_interestingness"), score, who, text, score_schema()))
            for _, text in sorted(item["texts"].items())]
    return calls


def plan_calls(recipe: Recipe, inputs: Inputs, fillers: dict[str, Callable]) -> list[Planned]:
    """Every call of a cold run, in pipeline order (each stage's per-user fan-out)."""
    options = _options(recipe)
    plan = [_country_call(u, options, recipe, "cohort.country") for u in inputs.to_infer]
    plan += [c for u in inputs.users for c in profile_calls(u, recipe, inputs.seeds, options)]
    plan += scenario_calls(recipe, inputs.seeds)
    plan += [c for u in inputs.users for c in prefalign_calls(u, inputs.prefalign.get(u.user_id, []), recipe)]
    targeted = [(u, inputs.targets[u.user_id]) for u in inputs.users if u.user_id in inputs.targets]
    plan += [c for u, b in targeted for c in generate_calls(u, b, recipe, fillers["generate"])]
    plan += [c for u, b in targeted
             for c in baseline_calls(u, b, inputs.history.get(u.user_id, []), recipe, fillers["baselines"])]
    return plan + [c for u, b in targeted for c in judge_calls(u, b, recipe, fillers["judge"])]


# --- counting and printing ------------------------------------------------------------------------

def step_configs(llm: LLMConfig, trained: list[str]) -> dict[str, BackendConfig]:
    """The backend each `llm` step uses (baselines: the generate step's base model, no adapter; a
    trained baseline's generation: the generate step's, with its adapter)."""
    from tasks.llm.factory import generation_llm
    steps = {s: llm.for_step(s) for s in ("profile", "scenarios", "prefalign", "generate", "judge")}
    steps |= {step: generation_llm(llm, "adapter", step).for_step(step) for _, step in generation_steps(llm, trained)}
    return {**steps, "baselines": baselines_llm(llm).for_step("baselines")}


def counter_for(cfg: BackendConfig, cache_dir: Path) -> tuple[object, str]:
    """(token counter, how it counts) for one backend; a local model's tokenizer is loaded offline."""
    if cfg.backend == "fake":
        return core.WordCounter(), "words (the fake backend's rule)"
    if cfg.backend == "local":
        counter = _local_counter(cfg.model, str(cache_dir))
        if counter is not None:
            return counter, "its own tokenizer and chat template"
        return core.CharCounter(), "chars/4 (its tokenizer is not in the local Hugging Face cache)"
    return core.CharCounter(), "chars/4 (OpenAI's tokenizer is not available offline)"


@cache
def _local_counter(model: str, cache_dir: str) -> core.TokenizerCounter | None:
    """The model's tokenizer from local files only (never the network), or None."""
    from transformers import AutoTokenizer
    from tasks.model_packages import resolve_model_path
    try:
        path = resolve_model_path(model, Path(cache_dir))
        return core.TokenizerCounter(AutoTokenizer.from_pretrained(path, local_files_only=True), model)
    except (OSError, ValueError):
        return None


def count_groups(plan: list[Planned], steps: dict[str, BackendConfig], counters: dict) -> list[core.CallGroup]:
    """Per (stage, prompt): calls, repeated requests, and the tokens of a seeded sample of up to
    MAX_RENDERED calls, scaled to the calls made (a kind's calls differ only in the user, book or
    seed they show)."""
    groups = []
    for stage, prompt in dict.fromkeys((p.stage, p.prompt) for p in plan):
        calls = [p for p in plan if (p.stage, p.prompt) == (stage, prompt)]
        rendered = [p.make() for p in random.Random(0).sample(calls, min(len(calls), MAX_RENDERED))]
        cfg, counter = steps[calls[0].step], counters[calls[0].step]
        tin = sum(counter.prompt(r.messages) for r in rendered)
        tout = sum(core.output_tokens(r, counter, capped=cfg.backend == "openai") for r in rendered)
        keys = [p.key for p in calls if p.key is not None]
        repeats = len(keys) - len(set(keys))
        scale = (len(calls) - repeats) / len(rendered)
        groups.append(core.CallGroup(stage, prompt, calls[0].step, cfg.backend, cfg.model, len(calls),
                                     round(tin * scale), round(tout * scale), len(rendered), calls[0].structured,
                                     repeats))
    return groups


def estimate_run(recipe: Recipe, run_dir: Path | None = None) -> Estimate:
    """The estimate for the recipe's cohort (RUN_DIR's ingest outputs when it has them)."""
    inputs, steps = load_inputs(recipe, run_dir), step_configs(recipe.llm, recipe.evaluate.trained)
    counted = {s: counter_for(cfg, Path(recipe.llm.cache_dir)) for s, cfg in steps.items()}
    counters = {s: c for s, (c, _) in counted.items()}
    groups = count_groups(plan_calls(recipe, inputs, {s: c.filler for s, c in counters.items()}), steps, counters)
    how = {f"{steps[s].backend}/{steps[s].model}": counted[s][1] for s in {g.step for g in groups}}
    notes = core.footnotes(groups, recipe.llm, how, inputs.source, inputs.assumptions + ASSUMPTIONS)
    return Estimate(groups, core.stage_table(groups, recipe.llm), notes, inputs)


def print_estimate(est: Estimate, name: str, console, ledger: pl.DataFrame | None = None,
                   steps: bool = False) -> None:
    """The per-stage table, per kind of call when asked, the footnotes, and the comparison with
    the run's ledger when there is one."""
    from tasks.console import frame_table
    inputs = est.inputs
    title = (f"estimate: recipe {name}, {len(inputs.users)} users, {len(inputs.seeds)} seed statements, "
             f"{sum(map(len, inputs.targets.values()))} target books (cold run)")

    def show(heading: str, frame: pl.DataFrame) -> None:
        table = frame_table(heading, core.display_frame(frame))
        for column in table.columns[1:]:
            column.justify = "left" if column.header in ("model", "prompt") else "right"
        console.print(table)
    show(title, est.table)
    if steps:
        show("per kind of call", core.groups_frame(est.groups))
    for number, note in enumerate(est.notes, 1):
        console.print(f"[{number}] {note}", highlight=False, soft_wrap=True, markup=False)
    if ledger is not None and ledger.height:
        show("estimate vs the run's ledger (distinct requests: re-asks included, a re-run's cache hits once)",
             core.ledger_comparison(est.table, ledger))
