"""Storms from a real OpenAI-compatible server: `transformers serve` with the embedded model,
behind a fault-injecting proxy (tests/fault_proxy.py) that answers a share of requests with 429 +
Retry-After, 500/503 bursts, stalls past the client timeout, truncated bodies and one 401.
The profiles stage completes, never re-sends before Retry-After, and the ledger's attempts
match what the proxy saw; a key the endpoint rejects fails fast with one clear line."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fault_proxy import FaultProxy  # noqa: E402

from tasks.llm.ledger import read_ledger  # noqa: E402

pytestmark = pytest.mark.slow
ONE_USER = ["cohort.countries=[USA]", "cohort.users_per_country=1", "banks.seed_limit=4", "banks.include_seeds=[]",
            "profiles.values_batch_size=4", "profiles.summary_max_tokens=16", "profiles.review_token_budget=150",
            "profiles.max_review_chars=150", "llm.max_reasks=2", "run.max_failed_fraction=1.0"]
STORM = ["429:2", "500", "503", "503", "pass", "stall:35", "truncate", "429:1", "pass", "401"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def served_model():
    """`transformers serve` on 127.0.0.1 with the converted embedded model; (base url, model name)."""
    from gravity_core.model_catalog import EMBEDDED_MODEL
    from tasks.model_packages import resolve_model_path
    folder = str(Path(resolve_model_path(EMBEDDED_MODEL, Path(".gravity/cache"))).resolve())
    port = _free_port()
    serve = Path(sys.executable).parent / "transformers"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([str(serve), "serve", folder, "--host", "127.0.0.1", "--port", str(port),
                             "--dtype", "bfloat16", "--device", "cpu"], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, "transformers serve exited"
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "transformers serve did not come up in 180 s"
                time.sleep(1)
        yield url, folder
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def gravity(tmp_path: Path, *args: str, overrides: list[str] = ()) -> subprocess.CompletedProcess:
    sets = [f"llm.cache_dir={tmp_path / 'cache'}", f"scenarios.pool_dir={tmp_path / 'pool'}", *overrides]
    cmd = [sys.executable, "-c", "from flows.cli import main; main()", *args, *[a for s in sets for a in ("--set", s)]]
    env = {**os.environ, "COLUMNS": "160", "OPENAI_API_KEY": "sk-test",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)


def ingest(tmp_path: Path, run_dir: Path) -> None:
    done = gravity(tmp_path, "ingest", "--reviews", "package:sample/Books.jsonl", "--meta",
                   "package:sample/meta_Books.jsonl", "--users", "package:sample/users.csv", "--out", str(run_dir),
                   overrides=ONE_USER)
    assert done.returncode == 0, done.stderr[-2000:]


def endpoint(url: str, model: str, timeout_s: float) -> list[str]:
    return ["llm.default.backend=openai", f"llm.default.base_url={url}", f"llm.default.model={model}",
            f"llm.default.timeout_s={timeout_s}", "llm.default.limits.max_concurrency=1",
            "llm.default.retry.max_attempts=8", "llm.default.retry.backoff_base_s=0.2"]


def test_profiles_survive_a_storm_from_a_real_server(served_model, tmp_path):
    url, model = served_model
    run_dir = tmp_path / "run"
    ingest(tmp_path, run_dir)
    proxy = FaultProxy(url, STORM).start()
    try:
        done = gravity(tmp_path, "profiles", "--out", str(run_dir), overrides=[*ONE_USER, *endpoint(proxy.url, model, 30)])
    finally:
        proxy.stop()
    chat = [e for e in proxy.log if e["path"].endswith("/chat/completions")]
    print("proxy answers:", proxy.answers(), "requests:", len(chat))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert not proxy.script, f"the storm was not used up: {proxy.script}"
    assert proxy.retry_after_violations() == []
    ledger = read_ledger(run_dir)
    paid = ledger.filter(~pl.col("cached"))
    assert paid["attempts"].sum() == len(chat)  # every request the proxy saw is one ledgered attempt
    assert paid.filter(pl.col("status") == "error: http_401")["attempts"].to_list() == [1]  # not retried
    assert pl.read_parquet(run_dir / "profiles" / "profiles.parquet").height + \
        pl.read_parquet(run_dir / "profiles" / "failures.parquet").height >= 1
