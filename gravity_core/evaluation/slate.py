"""What the judge is shown (appendix D.3): per (user, book) the candidates (the original and
every method that described the book), their position-balanced orderings and the sanity pair.
Pure."""
from __future__ import annotations

import polars as pl

from gravity_core.evaluation.degrade import degrade_description
from gravity_core.evaluation.metrics import ORIGINAL
from gravity_core.evaluation.orderings import latin_square_orderings
from gravity_core.evaluation.reliability import DEGRADED
from gravity_core.evaluation.requests import item_seed


def candidate_texts(generations: pl.DataFrame) -> dict[tuple[str, str], dict[str, str]]:
    """{(user_id, parent_asin): {method: text}} with the original description as method "original".

    Takes: generations (user_id, parent_asin, method, original, generated), every method's rows.
    """
    slates: dict[tuple[str, str], dict[str, str]] = {}
    for row in generations.sort("user_id", "parent_asin", "method").iter_rows(named=True):
        slate = slates.setdefault((row["user_id"], row["parent_asin"]), {ORIGINAL: row["original"]})
        slate[row["method"]] = row["generated"]
    return slates


def judge_items(slates: dict[tuple[str, str], dict[str, str]], n_orderings: int | None, seed: int,
                sanity: bool) -> dict[str, list[dict]]:
    """Per user: one item per book with its candidates, Latin-square orderings (n_orderings capped
    at the number of candidates; None = all) and the sanity pair (original vs degraded, both orders)."""
    items: dict[str, list[dict]] = {}
    for (user_id, asin), texts in sorted(slates.items()):
        methods = sorted(texts)
        k = None if n_orderings is None else min(n_orderings, len(methods))
        item = {"parent_asin": asin, "texts": texts,
                "orderings": latin_square_orderings(methods, k, item_seed(seed, user_id, asin))}
        if sanity:
            item["degraded"] = degrade_description(texts[ORIGINAL], item_seed(seed, "degrade", user_id, asin))
            item["sanity_orderings"] = [[ORIGINAL, DEGRADED], [DEGRADED, ORIGINAL]]
        items.setdefault(user_id, []).append(item)
    return items
