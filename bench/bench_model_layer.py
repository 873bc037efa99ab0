"""Model-layer benchmark: local backend load time, prompt and generation tokens/s, guided
(stance) decoding, and the per-call overhead of the request cache and the ledger.

Run: .venv/bin/python bench/bench_model_layer.py   (prints its figures; no assertions)
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from gravity_core.llm import ChatRequest, Message, SamplingParams
from gravity_core.llm_config import BackendConfig, LLMConfig
from gravity_core.profile.facets import parse_stances, stance_schema
from tasks.llm.cache import NullCache, RequestCache
from tasks.llm.client import ModelClient
from tasks.llm.fake import FakeBackend
from tasks.llm.ledger import Ledger
from tasks.llm.local_backend import LocalBackend

REVIEW = ("I loved how the detective in this novel kept her family's traditions while solving the case. "
          "The pacing was slow in the middle but the ending moved me to tears. ")


def bench_local(threads: int) -> None:
    t0 = time.perf_counter()
    backend = LocalBackend(BackendConfig(torch_threads=threads), Path(".gravity/cache")).load()
    print(f"local load (threads={threads}): {time.perf_counter() - t0:.2f} s (includes a one-off GGUF conversion on first use)")
    prompt = (Message(role="user", content=REVIEW * 12 + "Summarise."),)
    t0 = time.perf_counter()
    reply = backend.complete(ChatRequest(messages=prompt, params=SamplingParams(max_tokens=1)))
    print(f"prompt: {reply.input_tokens} tokens in {time.perf_counter() - t0:.2f} s = "
          f"{reply.input_tokens / (time.perf_counter() - t0):.0f} tokens/s (prefill)")
    short = (Message(role="user", content="Write a paragraph about a mystery novel."),)
    t0 = time.perf_counter()
    reply = backend.complete(ChatRequest(messages=short, params=SamplingParams(max_tokens=64, temperature=0.7)))
    dt = time.perf_counter() - t0
    print(f"generation: {reply.output_tokens} tokens in {dt:.2f} s = {reply.output_tokens / dt:.1f} tokens/s")
    ids = [f"s{i:02d}" for i in range(25)]
    stance = (Message(role="user", content=REVIEW * 6 + "Give a stance for each statement id."),)
    t0 = time.perf_counter()
    reply = backend.complete(ChatRequest(messages=stance, output_schema=stance_schema(ids)))
    parse_stances(reply.text, ids)
    print(f"guided stance batch (25 seeds, {reply.input_tokens}-token prompt): {time.perf_counter() - t0:.2f} s, valid JSON")


def _per_call(client: ModelClient, n: int, prefix: str) -> float:
    times = []
    for i in range(n):
        request = ChatRequest(messages=(Message(role="user", content=f"{prefix}{i}"),))
        t0 = time.perf_counter()
        client.complete(request, stage="bench", user_id="u")
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def bench_overhead(n: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        backend, cfg, llm = FakeBackend("echo"), BackendConfig(backend="fake", fake_script="echo"), LLMConfig()
        bare = ModelClient(backend, cfg, llm, NullCache(), Ledger(None, "b"))
        cached = ModelClient(backend, cfg, llm, RequestCache(Path(tmp) / "c.sqlite"), Ledger(Path(tmp), "b"))
        base = _per_call(bare, n, "a")
        miss = _per_call(cached, n, "b")
        hit = _per_call(cached, n, "b")
        t0 = time.perf_counter()
        rows = cached.ledger.flush()
        flush = time.perf_counter() - t0
    print(f"per call (median of {n}): no cache {base:.0f} us; cache miss+store {miss:.0f} us "
          f"(+{miss - base:.0f} us); cache hit {hit:.0f} us; ledger flush of {rows} rows {flush * 1e3:.1f} ms")


def main() -> None:
    bench_overhead()
    bench_local(threads=2)


if __name__ == "__main__":
    main()
