"""Requests of the prompting baselines (paper Table 12, appendix D.2) and the judge (D.3).

Pure: templates are passed in (`tasks.resources.load_prompt` reads them). Every stranger-written
text (title, description, reviews, the review-derived user summary, model drafts built from
them) is fenced here, in the user turn, so no caller can forget it.
"""
from __future__ import annotations

import hashlib

from gravity_core.fences import fence
from gravity_core.llm import ChatRequest, SamplingParams
from gravity_core.prompts import PromptTemplate

# method -> the template of its (first) call; TriAgent's later calls are built from its replies
BASELINE_PROMPTS = {"base_rewrite": "baseline_base_rewrite", "demo_based": "baseline_demo_based",
                    "user_summary": "baseline_user_summary", "lamp": "baseline_lamp",
                    "triagent": "baseline_triagent_rewrite"}
TRIAGENT_PROMPTS = ("baseline_triagent_edit", "baseline_triagent_final")


def persona_fields(demographics: dict) -> dict[str, str]:
    """'You are a {age} {gender} from {country}' fields (paper D.3) from a profile's demographics
    (keys age_bin, gender, country); unknown attributes read as neutral words."""
    return {"age": demographics.get("age_bin") or "", "gender": demographics.get("gender") or "person",
            "country": demographics.get("country") or "an unknown country"}


def item_seed(seed: int, *parts: str) -> int:
    """A stable per-item seed (orderings, degraded copies) from the run seed and the item's keys."""
    return int(hashlib.sha256(":".join([str(seed), *parts]).encode()).hexdigest()[:8], 16)


def _book(book: dict) -> dict:
    return {"book": fence(book["title"], "BOOK TITLE")}


def first_request(method: str, template: PromptTemplate, params: SamplingParams, user: dict,
                  book: dict) -> ChatRequest:
    """A baseline's single call (TriAgent: its first, generic rewrite).

    Takes: user (persona: age/gender/country, user_summary), book (title, description, lamp_reviews).
    """
    description = fence(book["description"], "BOOK DESCRIPTION")
    inputs = {"base_rewrite": lambda: {}, "triagent": lambda: {},
              "demo_based": lambda: dict(user["persona"]),
              "user_summary": lambda: {"user_summary": fence(user["user_summary"], "USER SUMMARY")},
              "lamp": lambda: {"reviews": [fence(r, f"REVIEW {i}")
                                           for i, r in enumerate(book.get("lamp_reviews", []), 1)]},
              }[method]()  # only what this method's template takes (a persona-only user has no summary)
    return template.request(params, **inputs, **_book(book), description=description)


def edit_request(template: PromptTemplate, params: SamplingParams, user: dict, draft: str) -> ChatRequest:
    """TriAgent call 2: suggested edits from the user summary and the draft."""
    return template.request(params, user_summary=fence(user["user_summary"], "USER SUMMARY"),
                            personalized_description=fence(draft, "DRAFT DESCRIPTION"))


def final_request(template: PromptTemplate, params: SamplingParams, user: dict, book: dict, draft: str,
                  edits: str) -> ChatRequest:
    """TriAgent call 3: the final rewrite from the user summary, the edits and the draft."""
    return template.request(params, user_summary=fence(user["user_summary"], "USER SUMMARY"),
                            suggested_edits=fence(edits, "SUGGESTED EDITS"), **_book(book),
                            personalized_description=fence(draft, "DRAFT DESCRIPTION"))


def ranking_request(template: PromptTemplate, params: SamplingParams, user: dict, ids: list[str],
                    texts: list[str], schema: dict) -> ChatRequest:
    """The judge's ranking of `texts` shown under the neutral `ids`, in that order (paper D.3)."""
    shown = [{"id": i, "text": fence(t, f"DESCRIPTION {i}")} for i, t in zip(ids, texts, strict=True)]
    return template.request(params, schema, **user["persona"],
                            user_summary=fence(user["user_summary"], "USER SUMMARY"), descriptions=shown)


def score_request(template: PromptTemplate, params: SamplingParams, user: dict, text: str,
                  schema: dict) -> ChatRequest:
    """The judge's 1-5 interestingness score of one description (paper D.3)."""
    return template.request(params, schema, **user["persona"],
                            user_summary=fence(user["user_summary"], "USER SUMMARY"),
                            description=fence(text, "BOOK DESCRIPTION"))
