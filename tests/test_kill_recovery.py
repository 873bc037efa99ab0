"""kill -9 recovery through the CLI: a `gravity profiles` killed mid-stage and a `gravity train`
killed after its first checkpoint are re-run to completion; nothing finished is paid for twice,
nothing is lost or duplicated, no temporary Prefect server outlives the killed run, and a
resumed training ends with the weights of an uninterrupted one."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import psutil
import pytest
import torch
from safetensors.torch import load_file

from tasks.llm.ledger import read_ledger

pytestmark = pytest.mark.slow
FAKE = ["llm.default.backend=fake", "llm.default.fake_script=schema-fill", "llm.default.model=scripted"]
SMALL = ["cohort.users_per_country=2", "banks.seed_limit=8", "profiles.values_batch_size=8"]
TRAIN = ["train.max_steps=4", "train.save_steps=1", "train.per_device_train_batch_size=1",
         "train.gradient_accumulation_steps=1",
         "train.heldout_eval_rows=2", "train.lora_r=4", "train.lora_alpha=8", "train.learning_rate=0.005",
         "evaluate.trained=[]"]
FACET_STAGES = {"profiles.values", "profiles.value_summary", "profiles.personality", "profiles.user_summary"}


class SlowEndpoint:
    """OpenAI-compatible on 127.0.0.1: schema-filled JSON after `delay_s`; records each request's
    fingerprint (a hash of its messages) in arrival order."""

    def __init__(self, delay_s: float):
        self.delay_s, self.fingerprints = delay_s, []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                from gravity_core.guided import guided_json
                from tasks.llm.fake import _HashOps
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                seed = hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()
                endpoint.fingerprints.append(seed)
                time.sleep(endpoint.delay_s)
                schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
                text = guided_json(schema, _HashOps(seed)) if schema else "A short reply."
                data = json.dumps({"id": seed[:8], "object": "chat.completion", "created": 0, "model": "slow",
                                   "choices": [{"index": 0, "finish_reason": "stop",
                                                "message": {"role": "assistant", "content": text}}],
                                   "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self) -> "SlowEndpoint":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()


def _command(tmp_path: Path, args: list[str], overrides: list[str], api_url: str | None = None
             ) -> tuple[list[str], dict]:
    """The command line and environment of `gravity ARGS`: its own temporary Prefect server, or
    the server at `api_url` (a worker's setting; spares the ~15 s CPU of starting one)."""
    sets = [f"llm.cache_dir={tmp_path / 'cache'}", f"scenarios.pool_dir={tmp_path / 'pool'}", *overrides]
    cmd = [sys.executable, "-c", "from flows.cli import main; main()", *args, *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "COLUMNS": "160", "OPENAI_API_KEY": "test-key",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    return cmd, env


def gravity(tmp_path: Path, *args: str, overrides: list[str] = (), api_url: str | None = None
            ) -> subprocess.CompletedProcess:
    cmd, env = _command(tmp_path, list(args), list(overrides), api_url)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def kill_when(tmp_path: Path, args: list[str], overrides: list[str], ready, limit_s: float = 600,
              api_url: str | None = None) -> dict[int, str]:
    """Start `gravity ARGS` in its own session, SIGKILL its whole group once `ready()` holds;
    returns its process tree (pid: command line) as it was just before the kill."""
    cmd, env = _command(tmp_path, args, overrides, api_url)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + limit_s
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the kill point"
            assert time.monotonic() < deadline, "the kill point never came"
            time.sleep(0.1)
        root = psutil.Process(proc.pid)
        tree = {p.pid: " ".join(p.cmdline()) for p in [root, *root.children(recursive=True)]}
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return tree


def survivors(pids) -> list[str]:
    """Processes of a killed tree still alive a moment later (killed here so no test leaks them)."""
    time.sleep(2)
    alive = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(" ".join(proc.cmdline())[:200])
                proc.kill()
        except psutil.NoSuchProcess:
            pass
    return alive


def completed_users(run_dir: Path) -> set[str]:
    """Users whose every LLM facet has a flushed ledger row (a task flushes when it finishes)."""
    try:
        ledger = read_ledger(run_dir)
    except Exception:  # mid-replace; the next poll reads it
        return set()
    done = ledger.filter(pl.col("status") == "ok").group_by("user_id").agg(pl.col("stage").unique())
    return {row["user_id"] for row in done.iter_rows(named=True) if FACET_STAGES <= set(row["stage"])}


def test_profiles_killed_mid_stage_recompute_nothing_finished(tmp_path):
    run_dir = tmp_path / "run"
    assert gravity(tmp_path, "ingest", "--reviews", "package:sample/Books.jsonl", "--meta", "package:sample/meta_Books.jsonl",
                   "--users", "package:sample/users.csv", "--out", str(run_dir), overrides=[*FAKE, *SMALL]).returncode == 0
    cohort = set(pl.read_parquet(run_dir / "ingest" / "cohort.parquet")["user_id"])
    with SlowEndpoint(delay_s=0.3) as endpoint:
        openai = [*SMALL, "llm.default.backend=openai", f"llm.default.base_url={endpoint.url}",
                  "llm.default.model=slow", "llm.default.limits.max_concurrency=2"]
        tree = kill_when(tmp_path, ["profiles", "--out", str(run_dir)], openai,
                         ready=lambda: len(completed_users(run_dir)) >= 2)
        assert any("uvicorn" in cmd and "prefect.server" in cmd for cmd in tree.values()), tree  # the temporary server
        orphans = survivors(tree)
        done_before, sent_before = completed_users(run_dir), list(endpoint.fingerprints)
        first_run = set(read_ledger(run_dir)["run_id"])
        assert done_before < cohort  # killed mid-stage: some users done, not all

        again = gravity(tmp_path, "profiles", "--out", str(run_dir), overrides=openai)
        assert again.returncode == 0, again.stderr[-2000:]
        sent_after = endpoint.fingerprints[len(sent_before):]

    assert not orphans, f"processes of the killed run survived it: {orphans}"
    ledger = read_ledger(run_dir)
    rerun = ledger.filter(~pl.col("run_id").is_in(list(first_run)))
    # completed users: served from Prefect's task cache (no rows) or the request cache (cached rows), never paid again
    assert rerun.filter(pl.col("user_id").is_in(list(done_before)) & ~pl.col("cached")).height == 0
    # the endpoint saw no request twice, beyond the <= 2 in flight when the kill came
    assert len(set(sent_before) & set(sent_after)) <= 2
    paid = ledger.filter(~pl.col("cached") & (pl.col("status") == "ok"))
    assert paid["request_key"].is_unique().all()  # each answer paid for once across both runs
    profiles = pl.read_parquet(run_dir / "profiles" / "profiles.parquet")
    stances = pl.read_parquet(run_dir / "profiles" / "stances.parquet")
    assert set(profiles["user_id"]) == cohort and profiles.height == len(cohort)  # none lost, none twice
    assert stances.select("user_id", "seed_id").is_unique().all()
    print(f"kill -9 mid-profiles: {len(done_before)} of {len(cohort)} users done before the kill; the re-run paid "
          f"{rerun.filter(~pl.col('cached')).height} calls (0 for those users), re-sent "
          f"{len(set(sent_before) & set(sent_after))} request(s) in flight at the kill; {profiles.height} profiles, "
          f"{stances.height} stances, no duplicates, {len(orphans)} orphaned processes")  # figures for pytest -s
    per_user = stances.group_by("user_id").len()["len"]
    assert per_user.n_unique() == 1 and per_user[0] >= 8  # every seed (the limit plus the recipe's included ones)


def _adapter(run_dir: Path) -> dict:
    return load_file(str(run_dir / "train" / "gravity" / "adapter" / "adapter_model.safetensors"))


def test_training_killed_after_a_checkpoint_resumes_to_the_same_weights(tmp_path, prefect_harness):
    # Every process here talks to the session's Prefect server, as runs on a worker do (the
    # profiles test above covers a killed run's own temporary server).
    from prefect.settings import PREFECT_API_URL
    api = PREFECT_API_URL.value()
    base = tmp_path / "base"
    prep = gravity(tmp_path, "run", "--out", str(base), *[a for s in ("ingest", "profiles", "scenarios", "pairs")
                                                          for a in ("--stage", s)],
                   overrides=[*FAKE, *SMALL, *TRAIN], api_url=api)
    assert prep.returncode == 0, prep.stderr[-2000:]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    shutil.copytree(base, straight)
    shutil.copytree(base, killed)

    done = gravity(tmp_path, "train", "--out", str(straight), overrides=[*FAKE, *SMALL, *TRAIN], api_url=api)
    assert done.returncode == 0, done.stderr[-2000:]
    checkpoints = killed / "train" / "gravity" / "checkpoints"
    tree = kill_when(tmp_path, ["train", "--out", str(killed)], [*FAKE, *SMALL, *TRAIN],
                     ready=lambda: any(checkpoints.glob("checkpoint-*/trainer_state.json")), api_url=api)
    assert not survivors(tree)
    assert not (killed / "train" / "gravity" / "adapter" / "adapter_model.safetensors").exists()
    resumed = gravity(tmp_path, "train", "--out", str(killed), "--resume", overrides=[*FAKE, *SMALL, *TRAIN],
                      api_url=api)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    metrics = json.loads((killed / "manifest.json").read_text())["stages"]["train"]
    assert "checkpoint-" in json.dumps(metrics)  # it resumed instead of starting over
    a, b = _adapter(straight), _adapter(killed)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    print(f"kill -9 mid-training: resumed from {metrics['notes'].get('final', {}).get('resumed_from')}; largest "
          f"difference to the uninterrupted adapter {max(float((a[k] - b[k]).abs().max()) for k in a):.2e}")
