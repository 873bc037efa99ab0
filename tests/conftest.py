"""Shared fixtures: a scripted OpenAI-compatible HTTP server on loopback, a Prefect harness."""
from __future__ import annotations

import atexit
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One Prefect home per test process (each xdist worker has its own), never the user's ~/.prefect.
# The `gravity` subprocesses of the slow tests inherit it: their temporary servers then find a
# migrated database instead of migrating a fresh one each time (about 10 s a run on 2 cores).
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="gravity-tests-prefect-")
atexit.register(shutil.rmtree, os.environ["PREFECT_HOME"], True)
# Packaged models (the embedded SmolLM2) are converted from their GGUF once, into the project's
# own model store where `make run` puts them, not again for every test's temporary llm.cache_dir
# (about 15 s of CPU each time a test process loads the model).
os.environ.setdefault("GRAVITY_MODEL_DIR", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        ".gravity", "cache", "models"))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs 2 workers on 2 cores: one torch thread per worker and per `gravity`
    # subprocess it starts (2 x 2 threads on 2 cores ran training 3 times slower).
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GRAVITY_TORCH_THREADS="1")


class ScriptedServer:
    """Replies from a queue of (status, body, headers); the default reply is a completion.

    A body of "ECHO_HEADERS" sends the request headers back (a hostile endpoint, for the
    secrets test). Every request is recorded (path, headers, JSON body).
    """

    def __init__(self):
        self.queue: list[tuple[int, object, dict]] = []
        self.requests: list[dict] = []
        self.default_text = '{"ok": true}'
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def completion(self, text: str) -> dict:
        return {"id": "c1", "object": "chat.completion", "created": 0, "model": "scripted",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, payload, headers = (server.queue.pop(0) if server.queue
                                            else (200, server.completion(server.default_text), {}))
                if payload == "ECHO_HEADERS":
                    payload = {"error": {"message": f"echo {dict(self.headers)}", "type": "server_error"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def start(self):
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._server.shutdown()


@pytest.fixture
def openai_server():
    server = ScriptedServer().start()
    yield server
    server.stop()


def apt_install(*packages: str, timeout: float = 900) -> subprocess.CompletedProcess:
    """`apt-get update` + `apt-get install` of Debian packages, one test process at a time (xdist
    workers would otherwise race for apt's locks and one of them would fail)."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    with open("/tmp/gravity-tests-apt.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True, timeout=timeout)
        if done.returncode == 0:
            done = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        return done


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    """One temporary Prefect server for the whole session, results under a temp folder."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, PREFECT_RESULTS_PERSIST_BY_DEFAULT, temporary_settings
    from prefect.testing.utilities import prefect_test_harness
    storage = tmp_path_factory.mktemp("prefect-results")
    with prefect_test_harness(server_startup_timeout=120), temporary_settings(
            {PREFECT_LOCAL_STORAGE_PATH: str(storage), PREFECT_RESULTS_PERSIST_BY_DEFAULT: True}):
        yield storage


def pytest_collection_modifyitems(config, items):
    """The longest tests first (the Docker build, then the other slow ones), so that with
    `-n 2 --dist worksteal` they start at once and the fast ones fill the gaps. GPU tests run
    only where CUDA is present; elsewhere they are skipped and say why."""
    items.sort(key=lambda item: 0 if "docker" in item.keywords and "slow" in item.keywords
               else 1 if "slow" in item.keywords else 2)  # stable: file order within each group
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (QLoRA/DeepSpeed paths); none on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
