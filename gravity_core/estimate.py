"""Cost before spending (`gravity estimate`): token rules, prices, the per-stage table. Pure.

`tasks.estimate` renders every call a cold run would make (the real prompt templates on the
recipe's data) and counts its tokens; this module holds what that count rests on (the chars/4
rule, the output-token rule and its fill factors, the stand-in text for upstream model outputs)
and turns the counted `CallGroup`s into dollars per pipeline stage at list prices and at the
Batch API discount, plus the comparison with a finished run's ledger.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import polars as pl

from gravity_core.guided import UnsupportedSchema, check_supported, guided_json
from gravity_core.layout import STAGES
from gravity_core.llm import ChatRequest, Message
from gravity_core.llm_config import LLMConfig
from gravity_core.profile.records import AGE_BINS, GENDERS, Demographics, UserInput, UserReview, age_bin

# Output tokens are not known before a call: a free-text reply is taken as FREE_TEXT_FILL of
# its max_tokens (the sample run's SmolLM2 wrote 85-100% of the cap for summaries and
# descriptions); a JSON reply is a schema-valid reply whose strings are filled to STRING_FILL of
# their cap (an assumption, not calibrated on an API model; the sample's SmolLM2 filled about 10%
# of its scenario strings' cap, so its scenario output is overestimated about 2.7x).
FREE_TEXT_FILL = 0.9
STRING_FILL = 0.35
# Models without a local tokenizer (OpenAI): ceil(chars / 4) per message plus OpenAI's chat
# framing of about 4 tokens per message and 3 to prime the reply.
CHARS_PER_TOKEN = 4.0
MESSAGE_TOKENS = 4
REPLY_TOKENS = 3
REFERENCE_MODEL = "gpt-4o"
STAND_IN_DESCRIPTION_CHARS = 1000  # a target book's description when the recipe's data is not here
FILLER = ("The reader found the story moving and the characters well drawn, with a plot that kept "
          "the pages turning late into the night and an ending that stayed with them for days. ")


@dataclass(frozen=True)
class CallGroup:
    """One kind of model call of a cold run: ledger stage (e.g. profiles.values), prompt, the
    `llm` step and model that serve it, how many calls (ledger rows), how many of them repeat an
    earlier request of the run (served by the request cache, free), and the summed tokens of the
    calls made (those not rendered are counted at the mean of those that were)."""

    stage: str
    prompt: str
    step: str
    backend: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    rendered: int
    structured: bool = False
    repeats: int = 0

    @property
    def made(self) -> int:
        return self.calls - self.repeats

    @property
    def pipeline_stage(self) -> str:
        return pipeline_stage(self.stage)


def pipeline_stage(ledger_stage: str) -> str:
    """The pipeline stage of a ledger stage name: its first part (cohort.country belongs to ingest)."""
    head = ledger_stage.split(".")[0]
    return "ingest" if head == "cohort" else head


def nominal_cohort_size(user_ids: list[str] | None, users_per_country: int | None, max_users: int | None,
                        n_countries: int) -> int | None:
    """The largest cohort the recipe's rules allow (the cohort size when the data has enough
    users), or None when no rule bounds it."""
    bounds = [len(user_ids)] if user_ids else []
    bounds += [users_per_country * n_countries] if users_per_country else []
    bounds += [max_users] if max_users else []
    return min(bounds) if bounds else None


def filler_text(chars: int) -> str:
    """Neutral English prose of exactly `chars` characters (stand-in reviews and descriptions)."""
    return (FILLER * (chars // len(FILLER) + 1))[:chars].strip()


def chars_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class CharCounter:
    """The chars/4 rule, for models without a tokenizer here (OpenAI's are not downloadable offline)."""

    name = "chars/4"

    def prompt(self, messages: Sequence[Message]) -> int:
        return sum(chars_tokens(m.content) + MESSAGE_TOKENS for m in messages) + REPLY_TOKENS

    def reply(self, pieces: list[str]) -> int:
        return chars_tokens("".join(pieces))

    def filler(self, tokens: int) -> str:
        return filler_text(int(tokens * CHARS_PER_TOKEN))


class WordCounter:
    """The scripted fake backend's own rule: whitespace-separated words."""

    name = "words (fake backend)"

    def prompt(self, messages: Sequence[Message]) -> int:
        return sum(len(m.content.split()) for m in messages)

    def reply(self, pieces: list[str]) -> int:
        return len("".join(pieces).split())

    def filler(self, tokens: int) -> str:
        return " ".join((FILLER.split() * (tokens // 20 + 1))[:tokens])


class TokenizerCounter(CharCounter):
    """A local model's own tokenizer through its chat template, as `tasks.llm.local_backend` counts."""

    def __init__(self, tokenizer, name: str):
        self.tok, self.name = tokenizer, name
        self._filler = tokenizer.encode(FILLER * 4, add_special_tokens=False)

    def prompt(self, messages: Sequence[Message]) -> int:
        text = self.tok.apply_chat_template([m.model_dump() for m in messages], tokenize=False,
                                            add_generation_prompt=True)
        return len(self.tok.encode(text, add_special_tokens=False))

    def reply(self, pieces: list[str]) -> int:  # guided decoding feeds each piece on its own
        return sum(len(self.tok.encode(p, add_special_tokens=False)) for p in pieces)

    def filler(self, tokens: int) -> str:
        return self.tok.decode((self._filler * (tokens // max(len(self._filler), 1) + 1))[:tokens])


def assumed_demographics(user: UserInput, country: str | None) -> Demographics:
    """The demographics the profile stage will hold: given attributes, inferred ones as fixed labels
    (`country` where none is given)."""
    return Demographics(user_id=user.user_id, country=user.country or country, age=user.age,
                        age_bin=age_bin(user.age) if user.age is not None else AGE_BINS[1],
                        gender=user.gender or GENDERS[0], sources={})


def stand_in_cohort(size: int, countries: list[str], n_reviews: int, review_chars: int, books_per_user: int,
                    lamp_reviews: int) -> tuple[list[UserInput], dict[str, list[dict]], dict[str, list[str]]]:
    """(users, target books by user, LaMP reviews by user) when the data is not here: `size` users
    over `countries`, each with `n_reviews` filler reviews of `review_chars`, no age or gender, and
    `books_per_user` targets of their own with STAND_IN_DESCRIPTION_CHARS descriptions."""
    text = filler_text(review_chars)
    reviews = tuple(UserReview(review_id=f"r{j}", parent_asin=f"b{j}", rating=5.0, title="A review", text=text,
                               timestamp=j, book_title="A Book Title") for j in range(n_reviews))
    users = [UserInput(user_id=f"user-{i:04d}", country=countries[i % len(countries)], reviews=reviews)
             for i in range(size)]
    book = {"title": "A Book Title", "description": filler_text(STAND_IN_DESCRIPTION_CHARS), "genre": "-"}
    targets = {u.user_id: [{**book, "parent_asin": f"{u.user_id}-t{j}"} for j in range(books_per_user)]
               for u in users}  # no book shared between users: no request repeats
    return users, targets, {u.user_id: [text] * min(lamp_reviews, n_reviews) for u in users}


class _FillOps:
    """`gravity_core.guided.Ops` that writes a representative reply: first option, filled strings."""

    def __init__(self, filler: Callable[[int], str]):
        self.filler, self.pieces = filler, []

    def feed(self, text: str) -> None:
        self.pieces.append(text)

    def choose(self, options: list[str]) -> int:
        self.pieces.append(options[0])
        return 0

    def write_string(self, max_tokens: int) -> str:
        text = self.filler(max(1, round(max_tokens * STRING_FILL))).replace('"', "")
        self.pieces.append(text)
        return text


def reply_pieces(schema: dict, string_tokens: int, filler: Callable[[int], str]) -> list[str] | None:
    """The pieces of a schema-valid reply as guided decoding writes them (keys and punctuation
    fed, enum values chosen, strings filled), or None when the schema cannot be walked."""
    try:
        check_supported(schema)
    except UnsupportedSchema:
        return None
    ops = _FillOps(filler)
    guided_json(schema, ops, string_tokens=string_tokens)
    return ops.pieces


def output_tokens(request: ChatRequest, counter, capped: bool) -> int:
    """Expected reply tokens: a representative JSON reply for a walkable schema (`capped` at
    max_tokens where the endpoint caps the whole reply; the local backend caps each string),
    else FREE_TEXT_FILL of max_tokens."""
    cap = request.params.max_tokens
    pieces = reply_pieces(request.output_schema, cap, counter.filler) if request.output_schema else None
    if pieces is None:
        return max(1, round(cap * FREE_TEXT_FILL))
    tokens = counter.reply(pieces)
    return min(tokens, cap) if capped else tokens


def _priced(llm: LLMConfig, model: str) -> bool:
    return model in llm.prices_per_mtok


def stage_table(groups: list[CallGroup], llm: LLMConfig, reference: str = REFERENCE_MODEL) -> pl.DataFrame:
    """Per pipeline stage (every stage, in order) and a total row: calls made (a run's repeated
    requests are cache hits), their tokens and USD at list prices, at the Batch API price
    (x `batch_discount`) and, when some model has no price (a local one), the same tokens at
    `reference`'s list price.
    Returns: stage, model, calls, input_tokens, output_tokens, usd, usd_batch[, usd_<reference>]."""
    rows = []
    for stage in STAGES:
        mine = [g for g in groups if g.pipeline_stage == stage]
        models = sorted({f"{g.backend}/{g.model}" for g in mine})
        tin, tout = sum(g.input_tokens for g in mine), sum(g.output_tokens for g in mine)
        rows.append({"stage": stage, "model": ", ".join(models) or "-", "calls": sum(g.made for g in mine),
                     "input_tokens": tin, "output_tokens": tout,
                     "usd": sum(llm.cost_usd(g.model, g.input_tokens, g.output_tokens) for g in mine),
                     "usd_batch": sum(llm.cost_usd(g.model, g.input_tokens, g.output_tokens, True) for g in mine),
                     "usd_ref": llm.cost_usd(reference, tin, tout)})
    table = pl.DataFrame(rows, schema={"stage": pl.String, "model": pl.String, "calls": pl.Int64,
                                       "input_tokens": pl.Int64, "output_tokens": pl.Int64, "usd": pl.Float64,
                                       "usd_batch": pl.Float64, "usd_ref": pl.Float64})
    total = table.select(pl.lit("total").alias("stage"), pl.lit("").alias("model"), pl.exclude("stage", "model").sum())
    table = pl.concat([table, total])
    if all(_priced(llm, g.model) for g in groups) or not _priced(llm, reference):
        return table.drop("usd_ref")
    return table.rename({"usd_ref": f"usd_{reference}"})


def reask_bound(groups: list[CallGroup], max_reasks: int) -> int:
    """At most this many more calls if every structured call used all its re-asks."""
    return max_reasks * sum(g.made for g in groups if g.structured)


def footnotes(groups: list[CallGroup], llm: LLMConfig, counters: dict[str, str], source: str,
              assumptions: list[str], reference: str = REFERENCE_MODEL) -> list[str]:
    """The assumptions the figures rest on, one line each, for under the table."""
    rendered, calls = sum(g.rendered for g in groups), sum(g.calls for g in groups)
    repeats = sum(g.repeats for g in groups)
    price_in, price_out = llm.prices_per_mtok.get(reference, (0.0, 0.0))
    notes = [
        f"cold run: an empty request cache and no re-asks; {repeats:,} requests the run repeats (the same book "
        "and persona for several users) are served by the cache and not counted; re-asks (llm.max_reasks="
        f"{llm.max_reasks}) could add up to {reask_bound(groups, llm.max_reasks):,} calls, each re-sending its prompt",
        f"input tokens: the real prompt templates rendered on {source}; {rendered:,} of {calls:,} calls rendered, "
        "the rest counted at their kind's mean",
        "token counts: " + "; ".join(f"{model}: {how}" for model, how in sorted(counters.items())),
        f"output tokens: free text = max_tokens x {FREE_TEXT_FILL}; JSON replies = a schema-valid reply with "
        f"each string filled to {STRING_FILL} of its cap",
        f"USD at list prices (llm.prices_per_mtok); Batch API = x {llm.batch_discount} of list; "
        "unpriced (local) models cost 0" + (f"; usd_{reference} prices the same tokens at {reference} list "
                                            f"(${price_in:.2f}/${price_out:.2f} per Mtok)" if price_in else ""),
    ]
    return notes + assumptions


def ledger_comparison(estimate: pl.DataFrame, ledger: pl.DataFrame) -> pl.DataFrame:
    """The estimate beside a run's ledger, per pipeline stage with model calls, and a total over
    the stages the ledger has (a partial run is compared on what it ran).

    Takes: estimate (stage, calls, input_tokens, output_tokens: `stage_table`); ledger rows
    (stage, request_key, input_tokens, output_tokens), each distinct request counted once (so a warm
    re-run's cache hits do not count twice; re-asks are requests of their own). Returns: stage, then
    calls/in/out each as _est, _run and _diff (the estimate's difference in % of the run's)."""
    names = {"calls": "calls", "input_tokens": "in", "output_tokens": "out"}
    run = (ledger.unique(["stage", "request_key"], keep="first", maintain_order=True)
           .with_columns(pl.col("stage").map_elements(pipeline_stage, return_dtype=pl.String))
           .group_by("stage").agg(pl.len().cast(pl.Int64).alias("calls"), pl.col("input_tokens").sum(),
                                  pl.col("output_tokens").sum()))
    joined = (estimate.filter(pl.col("stage") != "total").select("stage", *names)
              .rename({c: f"{n}_est" for c, n in names.items()})
              .join(run.rename({c: f"{n}_run" for c, n in names.items()}), on="stage", how="full", coalesce=True)
              .fill_null(0).filter((pl.col("calls_est") > 0) | (pl.col("calls_run") > 0)))
    both = joined.filter(pl.col("calls_run") > 0)
    total = both.select(pl.lit("total (stages in the ledger)").alias("stage"), pl.exclude("stage").sum())
    order = {s: i for i, s in enumerate(STAGES)}
    table = pl.concat([joined.sort(pl.col("stage").replace_strict(order, default=len(order))), total])
    diffs = [pl.when(pl.col(f"{n}_run") > 0).then((100 * (pl.col(f"{n}_est") - pl.col(f"{n}_run"))
                                                   / pl.col(f"{n}_run")).round(1)).alias(f"{n}_diff")
             for n in names.values()]
    columns = [f"{n}_{k}" for n in names.values() for k in ("est", "run", "diff")]
    return table.with_columns(diffs).select("stage", *columns)


def groups_frame(groups: list[CallGroup]) -> pl.DataFrame:
    """One row per kind of call: stage, prompt, model, calls made, repeats (cache hits), rendered,
    input/output tokens and per call."""
    return pl.DataFrame([{"stage": g.stage, "prompt": g.prompt, "model": f"{g.backend}/{g.model}",
                          "calls": g.made, "repeats": g.repeats, "rendered": g.rendered,
                          "input_tokens": g.input_tokens, "output_tokens": g.output_tokens,
                          "input_per_call": round(g.input_tokens / max(g.made, 1)),
                          "output_per_call": round(g.output_tokens / max(g.made, 1))} for g in groups])


def display_frame(frame: pl.DataFrame) -> pl.DataFrame:
    """Every column as text: counts with thousands separators, dollars with cents (sub-cent as such),
    percentages with a sign."""
    def text(column: str, value) -> str:
        if value is None:
            return "-"
        if column.startswith("usd"):
            return f"${value:,.2f}" if value == 0 or value >= 0.01 else f"${value:.4f}"
        if column.endswith("_diff"):
            return f"{value:+.1f}%"
        return f"{value:,}" if isinstance(value, int) else str(value)
    return pl.DataFrame({c: [text(c, v) for v in frame[c].to_list()] for c in frame.columns},
                        schema={c: pl.String for c in frame.columns})
