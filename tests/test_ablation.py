"""Ablations (Table 5): the recipe switch of each row, and the deltas with their intervals."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from gravity_core.evaluation.ablation import PREFIX, ablation_overrides, ablation_table
from gravity_core.recipe import parse_recipe

RECIPE = "data: {reviews: [x], meta: [y]}\n"


@pytest.mark.parametrize("name, facets, traits", [
    ("user_interests", ["interest-category", "interest-summary"], []), ("category", ["interest-category"], []),
    ("summary", ["interest-summary"], []), ("values_beliefs", ["value"], []), ("personality", ["personality"], []),
    ("openness", [], ["openness"]), ("neuroticism", [], ["neuroticism"])])
def test_each_ablation_is_a_valid_recipe_switch(name, facets, traits):
    recipe = parse_recipe(RECIPE, ablation_overrides(name))
    assert recipe.pairs.drop_facets == facets and recipe.pairs.drop_traits == traits
    assert recipe.evaluate.trained == []  # an ablated run trains GRAVITY only


def test_unknown_ablations_are_refused_in_the_recipe_and_the_switch():
    with pytest.raises(Exception, match="unknown ablation"):
        parse_recipe(RECIPE, ["evaluate.ablations=[values, openness]"])
    with pytest.raises(ValueError, match="unknown ablation"):
        ablation_overrides("values")


def _per_user(values: dict[str, list[float]]) -> pl.DataFrame:
    return pl.DataFrame([{"user_id": f"u{i}", "method": m, "value": v} for m, vs in values.items()
                         for i, v in enumerate(vs)])


def test_deltas_are_ablated_minus_full_with_hand_computed_values():
    full = [0.8, 0.6, 1.0, 0.4]
    table = ablation_table(_per_user({"gravity": full, PREFIX + "values_beliefs": [0.6, 0.5, 0.7, 0.4],
                                      PREFIX + "openness": full}), ["values_beliefs", "openness"], n_boot=500)
    rows = {r["ablation"]: r for r in table.iter_rows(named=True)}
    assert rows["values_beliefs"]["delta"] == pytest.approx(-0.15)  # mean of -0.2, -0.1, -0.3, 0
    assert rows["values_beliefs"]["pref_gain"] == pytest.approx(0.55)
    assert rows["values_beliefs"]["ci_low"] <= -0.15 <= rows["values_beliefs"]["ci_high"] < 0
    assert rows["openness"]["delta"] == 0 and rows["openness"]["p_value"] == 1.0  # no change at all
    assert rows["openness"]["ci_low"] == rows["openness"]["ci_high"] == 0
    assert table["n_users"].to_list() == [4, 4]


def test_the_interval_covers_the_true_drop_on_simulated_users():
    rng = np.random.default_rng(1)
    covered = 0
    for trial in range(40):
        full = rng.uniform(0.5, 0.9, 60)
        ablated = full - 0.05 + rng.normal(0, 0.05, 60)
        row = ablation_table(_per_user({"gravity": list(full), PREFIX + "personality": list(ablated)}),
                             ["personality"], n_boot=300, seed=trial).row(0, named=True)
        covered += row["ci_low"] <= -0.05 <= row["ci_high"]
    assert covered >= 34  # nominal 95%: 38 of 40 expected


def test_an_ablation_of_the_sample_recipe_validates_and_trains_gravity_only():
    """The sample recipe sets train_overrides for the trained baselines; an ablated run, which
    trains none of them, must still validate (a `gravity ablate` on the sample's run)."""
    from gravity_core.evaluation.trained import train_configs
    from tasks.environment import load_recipe
    recipe = load_recipe("sample", ablation_overrides("personality"))
    assert set(train_configs(recipe.train, recipe.evaluate.trained, recipe.evaluate.train_overrides)) == {"gravity"}
