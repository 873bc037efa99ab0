"""A local fake of an OpenAI-style Batch API (files + batches) on loopback, for tests.

Endpoints: POST /v1/files (multipart upload), POST /v1/batches, GET /v1/batches/{id},
GET /v1/files/{id}/content, and POST /v1/chat/completions (single calls, echo).

A batch is `validating` on its first poll, `in_progress` for `polls_in_progress` polls, then
ends with the next status of `end_statuses` (default `completed`). Each item's reply echoes its
last message; the output file lists the items in REVERSE input order. Scripting by custom id:
`error_batches[cid] = n` puts the item in the error file in its first n batches;
`statuses[cid] = code` answers it with that HTTP status in the output file, every time.
"""
from __future__ import annotations

import json
import threading
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def completion(text: str) -> dict:
    return {"id": "c1", "object": "chat.completion", "created": 0, "model": "fake-batch",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}


def _multipart(content_type: str, data: bytes) -> dict[str, bytes]:
    message = BytesParser(policy=email_policy).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + data)
    return {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
            for part in message.iter_parts()}


class FakeBatchServer:
    """In-memory files and batches; every request is logged as (method, path)."""

    def __init__(self, polls_in_progress: int = 2):
        self.polls_in_progress = polls_in_progress
        self.end_statuses: list[str] = []
        self.error_batches: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.log: list[tuple[str, str]] = []
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- what tests look at --------------------------------------------------------------
    def created(self) -> list[dict]:
        """Batches created, in order."""
        return list(self.batches.values())

    def input_lines(self, batch: dict) -> list[dict]:
        return [json.loads(line) for line in self.files[batch["input_file_id"]]["data"].decode().splitlines()]

    # -- the API -------------------------------------------------------------------------
    def _file(self, data: bytes, purpose: str, name: str) -> dict:
        fid = f"file-{len(self.files) + 1}"
        self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": 0, "filename": name,
                           "purpose": purpose, "status": "processed", "data": data}
        return {k: v for k, v in self.files[fid].items() if k != "data"}

    def _create_batch(self, body: dict) -> dict:
        bid = f"batch_{len(self.batches) + 1}"
        self.batches[bid] = {"id": bid, "object": "batch", "endpoint": body["endpoint"], "errors": None,
                             "input_file_id": body["input_file_id"], "completion_window": body["completion_window"],
                             "status": "validating", "created_at": 0, "output_file_id": None, "error_file_id": None,
                             "request_counts": {"total": 0, "completed": 0, "failed": 0}, "polls": 0,
                             "end": self.end_statuses.pop(0) if self.end_statuses else "completed"}
        return self._public(self.batches[bid])

    def _public(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in ("polls", "end")}

    def _poll(self, bid: str) -> dict:
        batch = self.batches[bid]
        if batch["status"] in ("validating", "in_progress"):
            batch["polls"] += 1
            if batch["polls"] > self.polls_in_progress + 1:
                self._finish(batch)
            elif batch["polls"] > 1:
                batch["status"] = "in_progress"
        return self._public(batch)

    def _finish(self, batch: dict) -> None:
        batch["status"] = batch["end"]
        if batch["end"] in ("failed", "cancelled"):
            batch["errors"] = {"object": "list", "data": [{"code": "scripted", "message": "scripted failure"}]}
            return
        out, err = [], []
        for line in self.input_lines(batch):
            cid = line["custom_id"]
            self._seen[cid] = self._seen.get(cid, 0) + 1
            if self._seen[cid] <= self.error_batches.get(cid, 0):
                err.append({"id": f"r-{cid[:6]}", "custom_id": cid, "response": None,
                            "error": {"code": "server_error", "message": "scripted item failure"}})
            elif cid in self.statuses:
                out.append({"id": f"r-{cid[:6]}", "custom_id": cid, "error": None, "response": {
                    "status_code": self.statuses[cid], "request_id": "x",
                    "body": {"error": {"message": "scripted status", "type": "scripted"}}}})
            else:
                out.append({"id": f"r-{cid[:6]}", "custom_id": cid, "error": None, "response": {
                    "status_code": 200, "request_id": "x",
                    "body": completion(line["body"]["messages"][-1]["content"])}})
        out.reverse()  # results come back in any order: callers must match by custom_id
        batch["request_counts"] = {"total": len(out) + len(err), "completed": len(out), "failed": len(err)}
        for key, rows in (("output_file_id", out), ("error_file_id", err)):
            if rows:
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                batch[key] = self._file(data, "batch_output", f"{batch['id']}_{key}.jsonl")["id"]

    def _route(self, method: str, path: str, headers, data: bytes) -> tuple[int, object]:
        parts = path.split("?")[0].strip("/").split("/")  # v1, resource, id, action
        with self._lock:
            self.log.append((method, path))
            if method == "POST" and parts[1:] == ["files"]:
                form = _multipart(headers["content-type"], data)
                return 200, self._file(form["file"], form["purpose"].decode(), "upload.jsonl")
            if method == "POST" and parts[1:] == ["batches"]:
                return 200, self._create_batch(json.loads(data))
            if method == "GET" and parts[1] == "batches" and len(parts) == 3 and parts[2] in self.batches:
                return 200, self._poll(parts[2])
            if method == "GET" and parts[1] == "files" and parts[3:] == ["content"] and parts[2] in self.files:
                return 200, self.files[parts[2]]["data"]
            if method == "POST" and parts[1:] == ["chat", "completions"]:
                return 200, completion(json.loads(data)["messages"][-1]["content"])
        return 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, method: str) -> None:
                data = self.rfile.read(int(self.headers.get("content-length", 0)))
                status, payload = server._route(method, self.path, self.headers, data)
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/octet-stream" if isinstance(payload, bytes)
                                 else "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                self._answer("GET")

            def do_POST(self):
                self._answer("POST")

        return Handler

    def start(self) -> "FakeBatchServer":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
