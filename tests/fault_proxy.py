"""A fault-injecting HTTP proxy on loopback for OpenAI-compatible endpoints (storm tests).

Each chat-completions request takes the next action of a script (then `default`): pass it
upstream, or answer it here with a fault. Every request is logged with its arrival time, a
fingerprint of its messages and what it was answered, so a test can check Retry-After
compliance and count attempts.

Actions: "pass"; "429:SECONDS" (429 with Retry-After); "500"; "503"; "401";
"stall:SECONDS" (hold the connection, then close it without a reply); "truncate" (the upstream
reply cut in half, as a 200).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    """`FaultProxy(upstream, script).start()`; `url` is its /v1 base; `log` its request log."""

    def __init__(self, upstream: str, script: list[str] | None = None, default: str = "pass",
                 upstream_timeout_s: float = 300):
        self.upstream, self.script, self.default = upstream.rstrip("/"), list(script or []), default
        self.upstream_timeout_s = upstream_timeout_s
        self.log: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def _next(self, path: str, body: bytes) -> dict:
        try:
            messages = json.loads(body).get("messages", [])
        except ValueError:
            messages = []
        with self._lock:
            action = self.script.pop(0) if self.script and path.endswith("/chat/completions") else self.default
            entry = {"t": time.time(), "path": path, "action": action,
                     "fingerprint": hashlib.sha256(json.dumps(messages).encode()).hexdigest()[:16]}
            self.log.append(entry)
        return entry

    def _forward(self, path: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        request = urllib.request.Request(self.upstream + path.removeprefix("/v1"), data=body, method="POST",
                                         headers={"content-type": "application/json",
                                                  "authorization": headers.get("authorization", "")})
        try:
            with urllib.request.urlopen(request, timeout=self.upstream_timeout_s) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status: int, data: bytes, extra: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                for key, value in (extra or {}).items():
                    self.send_header(key, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, code: str, extra: dict | None = None) -> None:
                body = {"error": {"message": message, "type": code, "code": code}}
                self._send(status, json.dumps(body).encode(), extra)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                entry = proxy._next(self.path, body)
                kind, _, arg = entry["action"].partition(":")
                if kind == "429":
                    entry["retry_after_s"] = float(arg)
                    return self._error(429, "rate limited (injected)", "rate_limit_exceeded", {"retry-after": arg})
                if kind in ("500", "503"):
                    return self._error(int(kind), "server error (injected)", "server_error")
                if kind == "401":
                    return self._error(401, "Incorrect API key provided (injected)", "invalid_api_key")
                if kind == "stall":
                    time.sleep(float(arg))
                    self.close_connection = True
                    return
                status, data = proxy._forward(self.path, body, dict(self.headers))
                entry["upstream_status"] = status
                self._send(status, data[: len(data) // 2] if kind == "truncate" else data)

        return Handler

    def start(self) -> "FaultProxy":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()

    def answers(self) -> dict[str, int]:
        """How many chat requests got each kind of answer."""
        counts: dict[str, int] = {}
        for entry in self.log:
            kind = entry["action"].partition(":")[0]
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def retry_after_violations(self) -> list[dict]:
        """Requests re-sent (same fingerprint) before the Retry-After of their last 429 elapsed."""
        violations, pending = [], {}
        for entry in self.log:
            due = pending.pop(entry["fingerprint"], None)
            if due is not None and entry["t"] < due:
                violations.append({**entry, "early_by_s": round(due - entry["t"], 3)})
            if "retry_after_s" in entry:
                pending[entry["fingerprint"]] = entry["t"] + entry["retry_after_s"]
        return violations
