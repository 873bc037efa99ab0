"""Builds backends and clients from recipe configs (called by flows and the CLI)."""
from __future__ import annotations

import hashlib
from pathlib import Path

from gravity_core.llm import ChatBackend
from gravity_core.llm_config import BackendConfig, LLMConfig, StepOverride
from tasks.llm.cache import RequestCache
from tasks.llm.client import ModelClient, QuarantineSink
from tasks.llm.ledger import Ledger

_LOCAL_MODELS: dict[tuple, ChatBackend] = {}


def build_backend(cfg: BackendConfig, cache_dir: Path) -> ChatBackend:
    """One backend per config; local models are shared within a process (loaded once).
    `batch: true` (openai only) picks the provider Batch API backend, its state under
    `<cache_dir>/batches/`."""
    if cfg.backend == "openai":
        from tasks.llm.openai_backend import OpenAIBackend
        from tasks.llm.secrets import resolve_api_key
        if cfg.batch:
            from tasks.llm.batch import BatchAPIBackend
            return BatchAPIBackend(cfg, resolve_api_key(cfg), state_dir=Path(cache_dir) / "batches")
        return OpenAIBackend(cfg, resolve_api_key(cfg))
    if cfg.backend == "fake":
        from tasks.llm.fake import FakeBackend
        return FakeBackend(cfg.fake_script, model=cfg.model)
    from tasks.llm.local_backend import LocalBackend
    tag = adapter_tag(cfg.adapter) if cfg.adapter else None
    key = (cfg.model, tag, cfg.dtype, str(Path(cache_dir).resolve()))
    if key not in _LOCAL_MODELS:
        _LOCAL_MODELS[key] = LocalBackend(cfg, cache_dir, adapter_tag=tag)
    return _LOCAL_MODELS[key]


def release_local_models() -> None:
    """Unload every in-process model (weights and KV caches) and hand the freed memory back to
    the OS: called when a stage ends, so one stage's models (the profiler, four adapters in
    generation and baselines) do not stay resident through training and the stages after it.
    A backend object stays (its identity keys caches); it loads again on its next call."""
    if not _LOCAL_MODELS:
        return
    from tasks.environment import release_memory
    for backend in _LOCAL_MODELS.values():
        backend.unload()
    release_memory()


def adapter_tag(adapter: str) -> str:
    """'<folder>@<content hash>' of a LoRA adapter folder (its weights and config)."""
    folder = Path(adapter)
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(f"no LoRA adapter at {folder} (adapter_config.json missing)")
    digest = hashlib.sha256()
    for name in sorted(p.name for p in folder.iterdir() if p.name.startswith("adapter_")):
        digest.update((folder / name).read_bytes())
    return f"{folder.resolve()}@{digest.hexdigest()[:12]}"


def build_client(llm: LLMConfig, step: str, run_dir: Path | None, run_id: str,
                 ledger: Ledger | None = None, quarantine: QuarantineSink | None = None) -> ModelClient:
    """A `ModelClient` for one step of a run, with the shared request cache."""
    cfg = llm.for_step(step)
    cache_dir = Path(llm.cache_dir)
    backend = build_backend(cfg, cache_dir)
    return ModelClient(backend, cfg, llm, RequestCache(cache_dir / "requests.sqlite"),
                       ledger or Ledger(run_dir, run_id), quarantine)


def generation_llm(llm: LLMConfig, adapter: str | None, step: str = "generate") -> LLMConfig:
    """The recipe's model layer with a trained adapter set on a generation step (local backends;
    an OpenAI-compatible server such as vLLM serves the adapter under its own model name instead).
    A step other than `generate` (a trained baseline's) starts from the `generate` step's settings."""
    if adapter is None or llm.for_step("generate").backend != "local":
        return llm
    steps = dict(llm.steps)
    current = steps.get(step) or steps.get("generate")
    steps[step] = (current.model_copy(update={"adapter": adapter}) if current
                   else StepOverride(adapter=adapter))
    return llm.model_copy(update={"steps": steps})
