"""The `gravity` command: help for every stage, banks counts, recipe errors, ledger report."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from flows.cli import app

runner = CliRunner()
COMMANDS = ["ingest", "profiles", "scenarios", "pairs", "train", "generate", "run", "banks", "ledger", "agreement"]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


@pytest.mark.parametrize("command", ["ingest", "profiles", "scenarios", "pairs", "train", "generate", "run"])
def test_stage_commands_take_recipe_out_and_set(command):
    text = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"}).output
    assert "--recipe" in text and "--out" in text and "--set" in text


def test_banks_prints_the_counts():
    result = runner.invoke(app, ["banks"])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    assert counts["seeds"]["by_source"] == {"hofstede": 10, "schwartz": 10, "wvs7": 130}
    assert all(n >= 20 for n in counts["items"]["by_trait"].values())


def test_unknown_recipe_key_exits_with_its_name(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {reviews: [a], meta: [b]}\nprofiles: {values_batch: 3}\n")
    result = runner.invoke(app, ["profiles", "--recipe", str(recipe), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "unknown key 'profiles.values_batch'" in result.output


def test_ledger_on_a_run_without_calls(tmp_path):
    result = runner.invoke(app, ["ledger", str(tmp_path)])
    assert result.exit_code == 0 and "no ledger rows" in result.output
