"""Run GRAVITY the way its users do: a real Prefect server on loopback, `make deploy`'s script
against it, a process worker on `gravity-cpu`, a `gravity-backfill` run for a two-user cohort
(scripted fake model, two real DPO steps), its artifacts, then the run's page in a real
headless Chromium. Also: the API key from a Prefect Secret block, and the failure webhook
automation firing for a failed run."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import apt_install

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
USERS = ["A5S0J1LGBV4CPW53TDQ5INKQO7GH", "ABB7P8XUX288ERXL82894ZW2TE4J"]  # 24 reviews each (min_reviews 20)
FAKE = ["llm.default.backend=fake", "llm.default.fake_script=schema-fill", "llm.default.model=scripted"]
SMALL = ["banks.seed_limit=12", "train.max_steps=2", "train.max_length=128", "train.heldout_eval_rows=4",
         "train.per_device_train_batch_size=1", "train.gradient_accumulation_steps=1",
         "train.save_steps=10"]
CHROME_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(what: str, check, timeout: float, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except OSError:
            pass
        time.sleep(2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail}")


def _api(url: str, body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"},
                                 method="POST" if data is not None else "GET")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


class Procs:
    """Background processes, each in its own process group; stopped by pid, group and all."""

    def __init__(self):
        self.started: list[subprocess.Popen] = []

    def start(self, cmd: list[str], log: Path, env: dict) -> subprocess.Popen:
        proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                start_new_session=True)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            # A worker starts flow runs in their own sessions: find them before the worker goes.
            groups = {group for pid in _descendants(proc.pid) if (group := _pgid(pid))} | {proc.pid}
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):  # a worker needs a third signal
                if proc.poll() is not None:
                    break
                _signal_group(proc.pid, sig)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    continue
            for group in groups:  # leave no orphan (a flow run, the server's services) behind
                _signal_group(group, signal.SIGKILL)


def _descendants(pid: int) -> list[int]:
    """Every live descendant of pid (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found.extend(kids)
        todo.extend(kids)
    return found


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


class Hook(BaseHTTPRequestHandler):
    """The failure webhook: records every POST body."""

    received: list[dict] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        Hook.received.append(json.loads(body or b"{}"))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def stack(tmp_path):
    """A Prefect server on a free loopback port, PREFECT_HOME under tmp; yields (env, procs)."""
    port, procs = _free_port(), Procs()
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_UI_API_URL": api, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "COLUMNS": "160"}
    server_log = tmp_path / "server.log"
    procs.start([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port),
                 "--analytics-off"], server_log, env)
    try:
        _wait_for("the Prefect server's /api/health", lambda: _api(f"{api}/health") is True, 180, server_log)
        yield env, procs
    finally:
        procs.stop_all()


def _deploy(env: dict, tmp_path: Path, webhook: str) -> str:
    make = subprocess.run(["make", "-n", "deploy"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "scripts/deploy.py" in make.stdout  # `make deploy` runs exactly this script
    done = subprocess.run([sys.executable, "scripts/deploy.py", "--api-key-block", "gravity-test-key"],
                          input="sk-from-the-secret-block\n", cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**env, "GRAVITY_WEBHOOK_URL": webhook})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "prefect worker start --pool gravity-cpu" in done.stdout
    assert "sk-from-the-secret-block" not in done.stdout + done.stderr
    return done.stdout


def _check_server_setup(api: str) -> None:
    deployments = {d["name"]: d for d in _api(f"{api}/deployments/filter", {})}
    assert set(deployments) == {"gravity-nightly", "gravity-backfill", "gravity-sample"}
    nightly = deployments["gravity-nightly"]
    assert nightly["work_pool_name"] == "gravity-gpu" and nightly["parameters"]["recipe"] == "paper"
    assert nightly["schedules"][0]["schedule"]["timezone"] and nightly["schedules"][0]["schedule"]["cron"]
    assert deployments["gravity-sample"]["work_pool_name"] == "gravity-cpu"
    assert not deployments["gravity-backfill"]["schedules"]
    assert deployments["gravity-backfill"]["job_variables"]["working_dir"] == str(ROOT)
    cohort = deployments["gravity-backfill"]["parameter_openapi_schema"]["definitions"]["CohortFilter"]
    assert {"reviews_since", "reviews_until"} <= set(cohort["properties"])
    pools = {p["name"]: p["type"] for p in _api(f"{api}/work_pools/filter", {})}
    assert pools["gravity-gpu"] == pools["gravity-cpu"] == "process"
    limits = {c["name"]: c for c in _api(f"{api}/v2/concurrency_limits/filter", {})}
    assert limits["gravity-llm-openai"]["limit"] == 16 and limits["gravity-llm-openai"]["slot_decay_per_second"] == 8
    assert "gravity-llm-local" in limits
    assert [a["name"] for a in _api(f"{api}/automations/filter", {})] == ["gravity-pipeline failed or crashed"]


def _check_secret_block(env: dict) -> None:
    """tasks/llm/secrets.py reads the key from the Secret block the deploy script saved."""
    code = ("from gravity_core.llm_config import BackendConfig; from tasks.llm.secrets import resolve_api_key; "
            "key = resolve_api_key(BackendConfig(backend='openai', api_key_block='gravity-test-key')); "
            "print(key.get_secret_value() == 'sk-from-the-secret-block', repr(key))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.stdout.split() == ["True", "SecretStr('**********')"], done.stderr[-2000:]


def _run_deployment(env: dict, params: dict) -> str:
    done = subprocess.run([str(BIN / "prefect"), "deployment", "run", "gravity-pipeline/gravity-backfill",
                           "--params", json.dumps(params)], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return next(line.split("UUID:")[1].strip() for line in done.stdout.splitlines() if "UUID:" in line)


def _final_state(api: str, run_id: str, timeout: float, log: Path) -> dict:
    def final():
        run = _api(f"{api}/flow_runs/{run_id}")
        return run if run["state_type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None
    return _wait_for(f"flow run {run_id} to finish", final, timeout, log)


def test_deploy_worker_backfill_and_the_ui(stack, tmp_path):
    env, procs = stack
    api, started = env["PREFECT_API_URL"], time.monotonic()
    # Chromium's packages (a fresh CI machine has none) install while the backfill runs.
    chromium_install = ThreadPoolExecutor(max_workers=1).submit(_ensure_chromium)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        _deploy(env, tmp_path, f"http://127.0.0.1:{hook.server_address[1]}/hook")
        _check_server_setup(api)
        _check_secret_block(env)
        worker_log = tmp_path / "worker.log"
        procs.start([str(BIN / "prefect"), "worker", "start", "--pool", "gravity-cpu"], worker_log, env)

        run_dir = tmp_path / "run"
        params = {"recipe": "sample", "out": str(run_dir), "cohort": {"user_ids": USERS},
                  "overrides": [*FAKE, *SMALL, f"llm.cache_dir={tmp_path / 'cache'}",
                                f"scenarios.pool_dir={tmp_path / 'pool'}"]}
        run_id = _run_deployment(env, params)
        run = _final_state(api, run_id, 1800, worker_log)  # 2 DPO steps on a busy 2-core machine
        assert run["state_type"] == "COMPLETED", worker_log.read_text(errors="replace")[-4000:]
        stages = json.loads((run_dir / "manifest.json").read_text())["stages"]
        assert {"ingest", "profiles", "scenarios", "pairs", "train", "generate"} <= set(stages)
        assert all(stage["status"] == "completed" for stage in stages.values()), stages
        assert stages["ingest"]["rows"]["cohort_users"] == 2
        assert (run_dir / "generate" / "gravity" / "generations.parquet").stat().st_size > 0

        shot = _check_ui(api, run, tmp_path, chromium_install)
        print(f"\nscreenshots: {shot}")
        _check_failure_webhook(env, api, worker_log)
    finally:
        hook.shutdown()
        hook.server_close()
    print(f"wall time: {time.monotonic() - started:.0f} s")


def _check_failure_webhook(env: dict, api: str, log: Path) -> None:
    """A run that fails (an unknown recipe) posts one notification to the webhook."""
    run_id = _run_deployment(env, {"recipe": "no-such-recipe", "out": "unused"})
    assert _final_state(api, run_id, 300, log)["state_type"] == "FAILED"
    _wait_for("the failure notification", lambda: Hook.received, 120, log)
    assert "Failed" in Hook.received[0]["text"]


def _profiles_subflow(api: str, run_id: str) -> dict:
    children = _api(f"{api}/flow_runs/filter",
                    {"flow_runs": {"parent_flow_run_id": {"operator": "and_", "any_": [run_id]}}})
    flows = {f["id"]: f["name"] for f in _api(f"{api}/flows/filter", {})}
    return next(c for c in children if flows[c["flow_id"]] == "gravity-profiles")


def _ensure_chromium() -> tuple[str | None, str | None, str]:
    """(chromium, chromedriver, why not) with Debian's packages installed if missing."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver, ""
    install = apt_install("chromium", "chromium-driver")
    return shutil.which("chromium"), shutil.which("chromedriver"), (install.stderr or install.stdout).strip()[-300:]


def _browser(chromium_install: Future):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium, driver, why = chromium_install.result(timeout=900)
    if not (chromium and driver):
        pytest.skip(f"no headless Chromium: apt-get install chromium chromium-driver failed: {why}")
    options = webdriver.ChromeOptions()
    for flag in [*CHROME_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"]:
        options.add_argument(flag)
    options.binary_location = chromium
    return webdriver.Chrome(service=Service(driver), options=options)


def _page_shows(browser, url: str, texts: list[str], shot: Path, timeout: float = 90) -> None:
    """Open `url` and wait until the JS app has rendered every text; keep a screenshot."""
    browser.get(url)
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        body = browser.find_element("tag name", "body").text
        if all(t in body for t in texts):
            break
        time.sleep(1)
    browser.save_screenshot(str(shot))
    missing = [t for t in texts if t not in body]
    assert not missing, f"{url} never showed {missing}; it shows: {body[:1500]} (screenshot {shot})"


def _check_ui(api: str, run: dict, tmp_path: Path, chromium_install: Future) -> Path:
    """The pipeline run's page names the run; its profiles stage lists the per-user task runs."""
    ui = api.removesuffix("/api")
    profiles = _profiles_subflow(api, run["id"])
    shots = tmp_path / "screenshots"
    shots.mkdir()
    browser = _browser(chromium_install)
    try:
        _page_shows(browser, f"{ui}/runs/flow-run/{run['id']}", [run["name"], "gravity-pipeline"],
                    shots / "pipeline-run.png")
        _page_shows(browser, f"{ui}/runs/flow-run/{profiles['id']}?tab=Task+Runs",
                    [profiles["name"], f"demographics-{USERS[0]}", f"values-{USERS[1]}"],
                    shots / "profiles-task-runs.png")
    finally:
        browser.quit()
    return shots
