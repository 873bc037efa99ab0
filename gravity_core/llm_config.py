"""Typed configuration of the model layer (recipe section `llm`).

A recipe names one default backend and may override it per step (profile, scenarios,
generate, judge...). Secrets never appear here: only the *name* of the environment
variable or Prefect Secret block that holds the key.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gravity_core.model_catalog import EMBEDDED_MODEL


class RetryConfig(BaseModel):
    """Retries of one logical call (the SDK's own retries are switched off)."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(5, ge=1, le=20, description="attempts per call, first included")
    backoff_base_s: float = Field(0.5, ge=0.0, description="first backoff delay")
    backoff_cap_s: float = Field(8.0, ge=0.0, description="longest backoff delay")
    jitter: float = Field(0.25, ge=0.0, le=1.0, description="random extra delay, as a fraction")


class LimitsConfig(BaseModel):
    """Per-backend throttles so a large fan-out cannot stampede an endpoint."""

    model_config = ConfigDict(extra="forbid")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")
    requests_per_second: float | None = Field(None, gt=0, description="sustained request rate; null = unlimited")
    use_prefect: bool = Field(True, description="use Prefect global concurrency/rate limits when an API is reachable")


class BatchPollConfig(BaseModel):
    """How often a submitted provider batch is polled: grows by `factor`, capped at `max_s`."""

    model_config = ConfigDict(extra="forbid")
    initial_s: float = Field(15.0, ge=0.0, description="wait before the second poll")
    max_s: float = Field(300.0, ge=0.0, description="longest wait between polls")
    factor: float = Field(2.0, ge=1.0, description="growth of the wait from one poll to the next")

    def interval(self, polls_done: int) -> float:
        """Seconds to wait after poll number `polls_done` (0-based): min(initial * factor^n, max)."""
        return min(self.initial_s * self.factor ** min(polls_done, 64), self.max_s)


class BackendConfig(BaseModel):
    """One chat backend."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["openai", "local", "fake"] = Field("local", description="which implementation")
    model: str = Field(EMBEDDED_MODEL, description="model name, HF id, local folder, or the embedded alias")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint; null = api.openai.com")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the key")
    api_key_block: str | None = Field(None, description="Prefect Secret block holding the key (wins over env)")
    adapter: str | None = Field(None, description="LoRA adapter folder applied on top (local backend)")
    json_schema: Literal["auto", "on", "off"] = Field(
        "auto", description="use response_format json_schema; auto = try, fall back once unsupported")
    timeout_s: float = Field(120.0, gt=0, description="per-request timeout")
    torch_threads: int | None = Field(None, ge=1, description="local backend: torch threads (null = cores)")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="local backend: weights' precision; auto = bf16 on CUDA and on CPUs with native "
                            "bf16 matmuls (AVX512-BF16 or AMX), else fp32")
    max_batch: int = Field(8, ge=1, description="local backend: free-text requests that wait for the model at "
                           "the same time are decoded together, up to this many")
    prefix_cache_mb: int = Field(
        512, ge=0, description="local backend: memory for the KV caches of scored prompts' heads, so each "
                               "reader's reviews are computed once while every reader in flight fits; the log "
                               "says how many prompt tokens were reused and recomputed")
    fake_script: str | None = Field(None, description="fake backend: name of a registered script")
    batch: bool = Field(False, description="send batched calls through the provider Batch API "
                                           "(openai only; discounted, up to 24 h latency)")
    batch_poll: BatchPollConfig = BatchPollConfig()
    retry: RetryConfig = RetryConfig()
    limits: LimitsConfig = LimitsConfig()

    @model_validator(mode="after")
    def _check(self) -> "BackendConfig":
        if self.backend == "fake" and not self.fake_script:
            raise ValueError("backend 'fake' needs fake_script")
        if self.batch and self.backend != "openai":
            raise ValueError(f"batch: true needs backend openai (the provider Batch API), not {self.backend!r}")
        return self


class StepOverride(BaseModel):
    """Fields a step may override on the default backend (unset = inherit)."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["openai", "local", "fake"] | None = None
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    api_key_block: str | None = None
    adapter: str | None = None
    json_schema: Literal["auto", "on", "off"] | None = None
    fake_script: str | None = None
    batch: bool | None = Field(None, description="provider Batch API for this step (openai only)")
    timeout_s: float | None = Field(None, gt=0, description="per-request timeout for this step")
    limits: LimitsConfig | None = Field(
        None, description="throttles for this step's endpoint; the fields given replace the default's, "
                          "e.g. max_concurrency: 1 for a server that answers one request at a time")


Price = tuple[float, float]


class LLMConfig(BaseModel):
    """Recipe section `llm`: default backend, per-step overrides, cache, prices, re-asks."""

    model_config = ConfigDict(extra="forbid")
    default: BackendConfig = BackendConfig()
    steps: dict[str, StepOverride] = Field(default_factory=dict, description="per-step overrides, by step name")
    cache_dir: str = Field(".gravity/cache", description="request cache + converted models; stable across runs")
    max_reasks: int = Field(2, ge=0, le=10, description="re-asks with the validation error before quarantine")
    prices_per_mtok: dict[str, Price] = Field(
        default_factory=lambda: {"gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60)},
        description="USD per million (input, output) tokens, by model name; others cost 0")
    batch_discount: float = Field(
        0.5, ge=0.0, le=1.0, description="price factor for calls made through the provider Batch API")

    @model_validator(mode="after")
    def _check_batch_steps(self) -> "LLMConfig":
        for step, override in self.steps.items():
            backend = override.backend or self.default.backend
            batch = self.default.batch if override.batch is None else override.batch
            if batch and backend != "openai":
                raise ValueError(f"llm.steps.{step}: batch: true needs backend openai, not {backend!r} "
                                 "(set batch: false on this step)")
        return self

    def for_step(self, step: str) -> BackendConfig:
        """The backend config a step uses: the default with that step's overrides applied."""
        override = self.steps.get(step)
        if override is None:
            return self.default
        base = self.default.model_dump()
        changes = {k: v for k, v in override.model_dump(exclude_unset=True).items() if v is not None}
        if "limits" in changes:
            changes["limits"] = {**base["limits"], **changes["limits"]}
        return BackendConfig.model_validate({**base, **changes})

    def cost_usd(self, model: str, input_tokens: int, output_tokens: int, batch: bool = False) -> float:
        """Cost from the price table (times `batch_discount` for Batch API calls); models not
        listed (local, self-hosted) cost 0."""
        price_in, price_out = self.prices_per_mtok.get(model, (0.0, 0.0))
        factor = self.batch_discount if batch else 1.0
        return factor * (input_tokens * price_in + output_tokens * price_out) / 1e6
