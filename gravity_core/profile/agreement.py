"""Agreement of inferred profiles with planted ground truth (the sample cohort's
`ground_truth.json`). With the 135M embedded model this is expected near chance."""
from __future__ import annotations

from statistics import fmean

from gravity_core.profile.records import Profile, age_bin

CHANCE = {"stances": 1 / 3, "ocean": 1 / 2, "age_bin": 1 / 3, "gender": 1 / 2}


def _share(hits: list[bool]) -> float | None:
    return round(fmean(hits), 3) if hits else None


def agreement(profiles: list[Profile], truth: dict[str, dict]) -> dict:
    """Per facet: share of planted facts the profile recovers, items compared, and chance level.

    truth: user_id -> {age, gender, top_genres, stances, ocean}."""
    stances, ocean, genres, ages, genders, planted = [], [], [], [], [], []
    for p in profiles:
        t = truth.get(p.user_id)
        if t is None:
            continue
        got = p.values.stances
        stances += [got[sid] == want for sid, want in t.get("stances", {}).items() if sid in got]
        planted += [want for sid, want in t.get("stances", {}).items() if sid in got]
        ocean += [p.personality.levels[k] == v for k, v in t.get("ocean", {}).items()]
        top = set(t.get("top_genres", []))
        genres.append(len(top & set(p.interests.genres)) / len(top) if top else 0.0)
        demo, sources = p.demographics, p.demographics.sources
        if sources.get("age", "").startswith("inferred") and t.get("age") is not None:
            ages.append(demo.age_bin == age_bin(int(t["age"])))
        if sources.get("gender", "").startswith("inferred") and t.get("gender"):
            genders.append(demo.gender == t["gender"])
    return {"users": sum(p.user_id in truth for p in profiles),
            "stances": {"agreement": _share(stances), "n": len(stances), "chance": round(CHANCE["stances"], 3),
                        "always_majority_label": _majority_baseline(profiles, planted)},
            "ocean": {"agreement": _share(ocean), "n": len(ocean), "chance": CHANCE["ocean"]},
            "top_genres_recall": {"mean": round(fmean(genres), 3) if genres else None, "n": len(genres)},
            "inferred_age_bin": {"agreement": _share(ages), "n": len(ages), "chance": round(CHANCE["age_bin"], 3)},
            "inferred_gender": {"agreement": _share(genders), "n": len(genders), "chance": CHANCE["gender"]}}


def _majority_baseline(profiles: list[Profile], planted: list[str]) -> float | None:
    """Agreement a model would get by always answering its own most frequent stance label:
    a model biased toward one label scores this without reading anything."""
    labels = [s for p in profiles for s in p.values.stances.values()]
    if not labels or not planted:
        return None
    majority = max(sorted(set(labels)), key=labels.count)  # ties: alphabetical, deterministic
    return _share([want == majority for want in planted])
