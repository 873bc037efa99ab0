"""Preference-pair assembly at paper scale: 400 synthetic users, about 1,000 pairs each
(150 seeds x 3 scenario pairs, 300 personality items, category and summary pairs), through
`build_pairs` (polars). Prints wall time, rows and peak memory; target < 10 s and < 2 GB.

Run: .venv/bin/python bench/bench_pairs.py
"""
from __future__ import annotations

import random
import resource
import time

import polars as pl

from gravity_core.pairs.build import build_pairs, profile_prefixes, sample_items
from gravity_core.stage_configs import PairsConfig
from tasks.resources import load_phrasing, load_prompt

USERS, SEEDS, GENRES, BOOKS_PER_GENRE = 400, 150, 15, 200
TRAITS = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]
SENTENCE = "A quiet, character-driven story about family, memory and the small choices of ordinary days. "


def synthetic_inputs(rng: random.Random) -> tuple[dict, pl.DataFrame]:
    users = [f"U{i:04d}" for i in range(USERS)]
    genres = [f"g{i:02d}" for i in range(GENRES)]
    stances = pl.DataFrame({"user_id": [u for u in users for _ in range(SEEDS)],
                            "seed_id": [f"s{j:03d}" for _ in users for j in range(SEEDS)],
                            "stance": rng.choices(["support", "no support", "neutral"], k=USERS * SEEDS)})
    pool = pl.DataFrame({"scenario_id": [f"s{j:03d}#{k}" for j in range(SEEDS) for k in range(3)],
                         "seed_id": [f"s{j:03d}" for j in range(SEEDS) for _ in range(3)],
                         "aligned": [f"I help my neighbour ({j},{k}). " + SENTENCE for j in range(SEEDS) for k in range(3)],
                         "contradicting": [f"I refuse to help ({j},{k}). " + SENTENCE for j in range(SEEDS) for k in range(3)]})
    items = pl.DataFrame({"item_id": [f"{t[0]}-{s[0]}-{i:02d}" for t in TRAITS for s in ("scenario", "dialogue") for i in range(40)],
                          "trait": [t for t in TRAITS for _ in range(80)],
                          "style": [s for _ in TRAITS for s in ("scenario", "dialogue") for _ in range(40)],
                          "situation": ["A friend invites you to a book club. What do you do?"] * 400,
                          "high_response": ["I go and bring snacks for everyone."] * 400,
                          "low_response": ["I stay home with my book."] * 400})
    books = pl.DataFrame({"parent_asin": [f"B{g}{i:04d}" for g in genres for i in range(BOOKS_PER_GENRE)],
                          "title": [f"Title {g} {i}" for g in genres for i in range(BOOKS_PER_GENRE)],
                          "description": [SENTENCE * 2] * (GENRES * BOOKS_PER_GENRE),
                          "genre": [g for g in genres for _ in range(BOOKS_PER_GENRE)],
                          "average_rating": [round(rng.uniform(3.5, 5.0), 1) for _ in range(GENRES * BOOKS_PER_GENRE)]})
    interests = pl.DataFrame([{"user_id": u, "genre": g, "rank": r} for u in users
                              for r, g in enumerate(rng.sample(genres[:9], 5))])
    distinct = pl.DataFrame([{"user_id": u, "distinct_genre": g} for u in users for g in genres[12:]])
    reviewed = books.sample(n=USERS * 20, with_replacement=True, seed=1).select("parent_asin").with_columns(
        pl.Series("user_id", [u for u in users for _ in range(20)]))
    levels = pl.DataFrame([{"user_id": u, "trait": t, "level": rng.choice(["high", "low"])} for u in users for t in TRAITS])
    inputs = {"stances": stances.lazy(), "pool": pool.lazy(), "levels": levels.lazy(),
              "seeds": pl.LazyFrame({"seed_id": [f"s{j:03d}" for j in range(SEEDS)], "statement": ["Most people can be trusted."] * SEEDS}),
              "items": sample_items(items, 60, 0).lazy(), "books": books.lazy(), "interests": interests.lazy(),
              "distinct": distinct.lazy(), "genres": pl.LazyFrame({"genre": genres, "name": genres, "description": [SENTENCE] * GENRES}),
              "reviewed": reviewed.lazy()}
    profiles = [{"user_id": u, "profile_version": "pv", "demographics": "country: USA; age: young; gender: female",
                 "value_summary": SENTENCE * 3, "traits": ", ".join(f"high {t}" for t in TRAITS)} for u in users]
    return inputs, profiles


def main() -> None:
    rng = random.Random(0)
    inputs, profiles = synthetic_inputs(rng)
    template = load_prompt("gravity_training")
    started = time.perf_counter()
    prefixes = profile_prefixes(profiles, template)
    pairs = build_pairs(PairsConfig(summary_books_per_genre=80), inputs, prefixes, "pool-bench", 0, load_phrasing(), "bench")
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2
    per_user = pairs.group_by("user_id").len()["len"]
    print(f"pairs: {pairs.height:,} for {USERS} users (per user min {per_user.min()}, mean {per_user.mean():.0f}, "
          f"max {per_user.max()}); facets {dict(pairs.group_by('facet').len().iter_rows())}")
    print(f"wall time: {seconds:.2f} s; peak memory (process max RSS): {peak_gb:.2f} GB")


if __name__ == "__main__":
    main()
