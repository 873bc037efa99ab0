"""Scale bench: N synthetic users through ingest, profiles, scenarios and pairs with the real
Prefect machinery (a temporary local server, the project's own `gravity-pipeline` flow) against an
instant OpenAI-compatible endpoint on loopback that answers schema-valid JSON.

Prints, as the last line, one JSON object: wall time of the pipeline run (the temporary server is
started before it, its start printed apart, as is a fresh cache's one-time TRL import), time the endpoint was busy, the rest (Prefect + our
own code + client-side throttling: `throttle_floor_s` is requests / rate), task runs per user, peak RSS of the whole process tree
(the temporary Prefect server included), requests and the peak requests/s against the rate limit,
and the Prefect API 503s seen in the run's log. Targets: 400 users with overhead <= 60 s and
<= 10 task runs per user; 2,000 users with peak RSS <= 4 GB, no 503s, the rate limit never exceeded.

Run: .venv/bin/python bench/bench_scale.py --users 400 [--rate 100] [--keep DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REVIEWS_PER_USER = 4
WORDS = ("quiet family memory garden war letters courage kitchen harbour village faith debt promise "
         "winter journey honest teacher mother brother stranger river ledger fire friendship").split()


class InstantEndpoint:
    """OpenAI-compatible chat completions on 127.0.0.1: schema-filled JSON, counted per second."""

    def __init__(self):
        self.per_second: Counter = Counter()
        self.requests = 0
        self._lock = threading.Lock()
        self._in_flight, self._busy_since, self.busy_s = 0, 0.0, 0.0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _enter(self) -> None:
        with self._lock:
            now = time.monotonic()
            self.requests += 1
            self.per_second[int(time.time())] += 1
            if self._in_flight == 0:
                self._busy_since = now
            self._in_flight += 1

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.busy_s += time.monotonic() - self._busy_since

    def reply(self, body: dict) -> dict:
        from gravity_core.guided import guided_json
        from tasks.llm.fake import _HashOps
        seed = hashlib.sha256(json.dumps(body.get("messages", [])).encode()).hexdigest()
        fmt = body.get("response_format") or {}
        schema = (fmt.get("json_schema") or {}).get("schema")
        text = guided_json(schema, _HashOps(seed)) if schema else f"Scripted reply {seed[:8]}."
        return {"id": seed[:12], "object": "chat.completion", "created": 0, "model": body.get("model", "bench"),
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}}

    def _handler(self):
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                endpoint._enter()
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                    data = json.dumps(endpoint.reply(body)).encode()
                    self.send_response(200)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    endpoint._leave()

        return Handler

    def start(self) -> "InstantEndpoint":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()


class TreeRss:
    """Samples the RSS of this process and all its descendants every `every_s`; keeps the peak."""

    def __init__(self, every_s: float = 0.5):
        import psutil
        self._proc, self._every, self.peak_mb = psutil.Process(), every_s, 0.0
        self._stop = threading.Event()

    def _sample(self) -> float:
        import psutil
        total = 0
        for proc in [self._proc, *self._proc.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            self.peak_mb = max(self.peak_mb, self._sample())

    def __enter__(self) -> "TreeRss":
        threading.Thread(target=self._loop, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self.peak_mb = max(self.peak_mb, self._sample())


def _write_cohort(folder: Path, users: int, seed: int) -> tuple[Path, Path]:
    """Amazon Reviews 2023 style files: the sample's books (meta) and REVIEWS_PER_USER reviews per user."""
    sample = Path(__file__).resolve().parents[1] / "gravity_core" / "data" / "sample"
    meta = folder / "meta_Books.jsonl"
    shutil.copy(sample / "meta_Books.jsonl", meta)
    asins = [json.loads(line)["parent_asin"] for line in meta.read_text().splitlines() if line.strip()]
    rng = random.Random(seed)
    reviews = folder / "Books.jsonl"
    with reviews.open("w") as out:
        for u in range(users):
            user_id = f"BENCH{u:06d}"
            for asin in rng.sample(asins, REVIEWS_PER_USER):
                text = " ".join(rng.choices(WORDS, k=40)).capitalize() + "."
                out.write(json.dumps({"rating": float(rng.randint(1, 5)), "title": "A review", "text": text,
                                      "images": [], "asin": asin, "parent_asin": asin, "user_id": user_id,
                                      "timestamp": 1_500_000_000_000 + u, "helpful_vote": 0,
                                      "verified_purchase": True}) + "\n")
    return reviews, meta


class Prefect503s(logging.Handler):
    """Counts the Prefect client's retries on 503 (logged at debug level by `prefect.client`)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        self.count += int("status code 503" in message or "503 Service Unavailable" in message)

    def install(self) -> "Prefect503s":
        client_logger = logging.getLogger("prefect.client")
        client_logger.setLevel(logging.DEBUG)
        client_logger.addHandler(self)
        return self


def logged_503s(run_dir: Path) -> int:
    """503s named in the run's own logs (logs/*.log), in case a stage logged one."""
    logs = run_dir / "logs"
    return sum(path.read_text(errors="replace").count("503 Service Unavailable")
               for path in (logs.glob("*.log") if logs.exists() else []))


def count_task_runs() -> int:
    """Task runs on the temporary server, paged (the API caps a page at 200)."""
    from prefect.client.orchestration import get_client
    total = 0
    with get_client(sync_client=True) as client:
        while page := client.read_task_runs(limit=200, offset=total):
            total += len(page)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--rate", type=float, default=100.0, help="llm.default.limits.requests_per_second")
    parser.add_argument("--concurrency", type=int, default=8, help="llm.default.limits.max_concurrency")
    parser.add_argument("--users-per-task", type=int, default=25,
                        help="run.users_per_task: users profiled per task run (1 = a task run per user and facet)")
    parser.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="gravity-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["PREFECT_HOME"] = str(work / "prefect")  # before Prefect is imported: a fresh temporary server
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # 2 shared cores
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("OPENAI_API_KEY", "bench-no-key")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    reviews, meta = _write_cohort(work, args.users, seed=0)
    endpoint = InstantEndpoint().start()
    errors_503 = Prefect503s().install()
    overrides = [f"data.reviews=[{reviews}]", f"data.meta=[{meta}]", "data.users=null",
                 f"cohort.min_reviews={REVIEWS_PER_USER}", "cohort.country_source=given",
                 "llm.default.backend=openai", f"llm.default.base_url={endpoint.url}", "llm.default.model=bench",
                 f"llm.default.limits.requests_per_second={args.rate}",
                 f"llm.default.limits.max_concurrency={args.concurrency}",
                 f"llm.cache_dir={work / 'cache'}", f"scenarios.pool_dir={work / 'pool'}",
                 f"run.users_per_task={args.users_per_task}"]
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.pipeline import gravity_pipeline
    run_dir = work / "run"
    error = None
    with TreeRss() as rss:
        # The server is started before the clock, as a worker's runs find it running; its start
        # (10-20 s on 2 shared cores) is printed on its own as server_start_s.
        server, started = SubprocessASGIServer(), time.monotonic()
        server.start(timeout=180)
        server_start = time.monotonic() - started
        # A fresh llm.cache_dir once learns the `train:` keys TRL accepts, by importing TRL (about
        # 9 s here); every later run with that cache reads them from a file. A nightly job's cache
        # has them, so this first use is done before the clock too and printed as first_use_s.
        from tasks.environment import train_keys
        started = time.monotonic()
        train_keys(work / "cache")
        first_use = time.monotonic() - started
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            started = time.monotonic()
            try:
                gravity_pipeline(recipe="sample", overrides=overrides, out=str(run_dir),
                                 stages=["ingest", "profiles", "scenarios", "pairs"])
            except Exception as exc:  # reported in the JSON line: a failed run is a result too
                error = f"{type(exc).__name__}: {exc}"[:300]
            wall = time.monotonic() - started
            try:
                task_runs = count_task_runs()
            except Exception:
                task_runs = None
            from prefect.logging.handlers import APILogWorker
            APILogWorker.drain_all(timeout=10)  # the run's last logs reach the server before it stops
        server.stop()
    endpoint.stop()
    stages = json.loads((run_dir / "manifest.json").read_text())["stages"] if (run_dir / "manifest.json").exists() else {}
    peak = max(endpoint.per_second.values(), default=0)
    print(json.dumps({
        "users": args.users, "cohort_users": stages.get("ingest", {}).get("rows", {}).get("cohort_users"),
        "error": error,
        **{f"{s}_status": stages.get(s, {}).get("status") for s in ("profiles", "scenarios", "pairs")},
        "server_start_s": round(server_start, 1), "first_use_s": round(first_use, 1), "wall_s": round(wall, 1), "endpoint_s": round(endpoint.busy_s, 1),
        "overhead_s": round(wall - endpoint.busy_s, 1),
        "throttle_floor_s": round(endpoint.requests / args.rate, 1),
        "stage_s": {s: round(v.get("seconds", 0), 1) for s, v in stages.items()},
        "stages_total_s": round(sum(v.get("seconds", 0) for v in stages.values()), 1),
        "task_runs": task_runs, "task_runs_per_user": round(task_runs / args.users, 2) if task_runs else None,
        "peak_rss_mb": round(rss.peak_mb), "requests": endpoint.requests, "peak_requests_per_s": peak,
        "rate_limit": args.rate, "rate_limit_exceeded": peak > args.rate,
        "prefect_503s": errors_503.count + logged_503s(run_dir) + int("503" in (error or "")), "work_dir": str(work)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
