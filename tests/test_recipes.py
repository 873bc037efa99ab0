"""Every recipe loads; unknown keys are errors naming the key; overrides apply."""
from __future__ import annotations

from pathlib import Path

import pytest

from gravity_core.recipe import RecipeError, parse_recipe

RECIPES = sorted(Path(__file__).parent.parent.joinpath("recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_every_recipe_loads(path):
    from gravity_core.training.config import check_train_keys
    recipe = parse_recipe(path.read_text(), source=str(path))
    check_train_keys(recipe.train)
    assert recipe.data.reviews and recipe.llm.for_step("profile").backend


def test_sample_recipe_builds_its_training_config():
    from gravity_core.training.config import parse_train_config
    recipe = parse_recipe(Path("recipes/sample.yaml").read_text())
    config = parse_train_config(recipe.train)
    assert (config.beta, config.use_cpu, config.report_to) == (0.3, True, [])


def test_paper_recipe_has_the_paper_settings():
    recipe = parse_recipe(Path("recipes/paper.yaml").read_text())
    t = recipe.train
    assert (t["beta"], t["learning_rate"], t["lr_scheduler_type"], t["warmup_steps"], t["weight_decay"],
            t["per_device_train_batch_size"], t["gradient_accumulation_steps"], t["num_train_epochs"]) == \
        (0.3, 2e-5, "cosine", 0.05, 0.01, 64, 2, 3)
    assert recipe.banks.seed_limit is None and recipe.scenarios.pairs_per_seed == 3
    assert recipe.pairs.items_per_trait * 5 == 300 and recipe.llm.default.model == "gpt-4o"
    assert recipe.train["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"


BASE = "data: {reviews: [a.jsonl], meta: [b.jsonl]}\n"


@pytest.mark.parametrize("text,key", [
    (BASE + "bogus: 1\n", "bogus"),
    (BASE + "profiles: {values_batch: 3}\n", "profiles.values_batch"),
    (BASE + "llm: {default: {backend: local, temprature: 1}}\n", "llm.default.temprature"),
])
def test_unknown_keys_name_the_key(text, key):
    with pytest.raises(RecipeError, match=f"unknown key '{key}'"):
        parse_recipe(text)


def test_unknown_train_key_names_the_key():
    from gravity_core.training.config import check_train_keys
    with pytest.raises(RecipeError, match="train.learning_rat"):
        check_train_keys({"learning_rat": 1})


def test_overrides_apply_and_validate():
    recipe = parse_recipe(BASE, ["profiles.values_batch_size=5", "llm.default.backend=openai", "run.seed=3"])
    assert (recipe.profiles.values_batch_size, recipe.llm.default.backend, recipe.run.seed) == (5, "openai", 3)
    with pytest.raises(RecipeError, match="values_batch_size"):
        parse_recipe(BASE, ["profiles.values_batch_size=0"])
    with pytest.raises(RecipeError, match="not key=value"):
        parse_recipe(BASE, ["profiles"])


def test_step_override_inherits_the_default():
    recipe = parse_recipe(BASE + "llm: {default: {backend: openai, model: gpt-4o}, steps: {judge: {model: gpt-4o-mini}}}")
    judge = recipe.llm.for_step("judge")
    assert (judge.backend, judge.model) == ("openai", "gpt-4o-mini")
    assert recipe.llm.for_step("profile").model == "gpt-4o"


def test_a_step_narrows_only_the_limits_it_names():
    """A step served by a one-request-at-a-time server caps its own concurrency; the default's other
    throttles and every other step stay as they were."""
    recipe = parse_recipe(BASE + "llm: {default: {limits: {max_concurrency: 6, requests_per_second: 4}}}",
                          ["llm.steps.judge.limits.max_concurrency=1", "llm.steps.judge.timeout_s=300"])
    judge, profile = recipe.llm.for_step("judge"), recipe.llm.for_step("profile")
    assert (judge.limits.max_concurrency, judge.limits.requests_per_second, judge.timeout_s) == (1, 4, 300)
    assert (profile.limits.max_concurrency, profile.limits.requests_per_second, profile.timeout_s) == (6, 4, 120)
    with pytest.raises(RecipeError, match="max_concurrency"):
        parse_recipe(BASE, ["llm.steps.judge.limits.max_concurrency=0"])
    with pytest.raises(RecipeError, match="llm.steps.judge.limits"):
        parse_recipe(BASE, ["llm.steps.judge.limits.max_inflight=1"])


def test_report_to_must_be_explicit():
    from gravity_core.training.config import parse_train_config
    with pytest.raises(RecipeError, match="report_to"):
        parse_train_config({"use_cpu": True, "bf16": False})


def test_gravity_torch_threads_wins_over_the_recipe(monkeypatch):
    """Several workers on one machine: GRAVITY_TORCH_THREADS caps every torch user of the process."""
    from tasks.environment import torch_threads
    monkeypatch.delenv("GRAVITY_TORCH_THREADS", raising=False)
    assert torch_threads(2) == 2 and torch_threads(None) is None
    monkeypatch.setenv("GRAVITY_TORCH_THREADS", "1")
    assert torch_threads(2) == 1 and torch_threads(None) == 1
    monkeypatch.setenv("GRAVITY_TORCH_THREADS", "half")
    with pytest.raises(ValueError, match="GRAVITY_TORCH_THREADS"):
        torch_threads(2)
