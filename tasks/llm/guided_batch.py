"""Schema-guided JSON decoding in the embedded backend, with concurrent walks decoded in lockstep.

`gravity_core.guided` walks a JSON schema and asks its `Ops` for one thing at a time: append fixed
text, choose among options, write a string. `GuidedOps` answers over a KV cache. Each walk runs in
its caller's thread (a Prefect task per seed statement or per user); its prompt is prefilled alone
(compute-bound: batching it gains nothing on a CPU), then every later forward pass goes through
`GuidedBatch`, which runs the walks that are waiting at the same time as one batch: one forward of
B rows costs about what one row costs on a CPU, where a decoding step is overhead-bound.

The batch keeps one KV cache for its rows. Rows have different lengths and append different
numbers of tokens per step (a string's next token, a key's fixed text), so the cache has holes:
the attention mask marks them and each row's positions are given explicitly, so a row's logits
are those it would get alone. Each walk samples with its own seeded generator: its reply does not
depend on which walks shared its steps.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import torch

from tasks.environment import trim_heap

TRIM_EVERY_S = 10.0  # freed KV-cache pages go back to the OS at most this often (re-faulting them costs)

if TYPE_CHECKING:
    from tasks.llm.local_backend import LocalBackend


class GuidedOps:
    """`gravity_core.guided.Ops` over a KV cache.

    Fixed text is buffered and sent with the next forward pass, when logits are next needed.
    `choose` is greedy decoding over the options' token trie: shared tokens are fed, and at each
    point where options diverge the most likely next token decides (one forward per choice).
    """

    def __init__(self, backend: "LocalBackend", prompt_ids: list[int], temperature: float, seed: int | None):
        self.b = backend
        self.cache = None       # own KV cache until the walk joins a batch
        self.position = 0       # tokens in context (the next token's position)
        self.pending: list[int] = list(prompt_ids)
        self.generated = -len(prompt_ids)
        self.gen = torch.Generator().manual_seed(seed or 0)
        self.temperature = temperature
        self._recent: list[int] = []
        # lockstep state, owned by GuidedBatch under its condition
        self.submitted: list[int] | None = None
        self.result: torch.Tensor | None = None
        self.error: BaseException | None = None
        self.left = False

    def _sync(self) -> torch.Tensor:
        if self.pending:
            tokens, self.pending = self.pending, []
            self.logits = self.b.guided_forward(self, tokens)
            self.generated += len(tokens)
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


class GuidedBatch:
    """Lockstep forward passes for the guided walks in flight (at most `capacity` rows).

    A walk submits its next tokens and waits; when every row has submitted (or left), the last
    one to arrive runs the step for all under the model lock. Rows join with the cache of their
    prompt (merged at the next step) and leave when their walk ends (dropped at the next step).
    """

    def __init__(self, backend: "LocalBackend", capacity: int):
        self.b = backend
        self.capacity = capacity
        self.cv = threading.Condition()
        self.rows: list[GuidedOps] = []      # in the batch cache, in its row order
        self.joining: list[GuidedOps] = []   # submitted with their own cache; merged at the next step
        self.cache = None
        self.mask: torch.Tensor | None = None  # [rows, cache length]: 1 = a real token, 0 = a hole
        self.stepping = False
        self.in_step: list[GuidedOps] = []  # the rows of the step being run
        self.widest = 0   # the most rows one step has run (for tests and diagnostics)
        self.steps = 0

    def step(self, walk: GuidedOps, tokens: list[int]) -> torch.Tensor:
        """The logits after `tokens` for this walk, computed together with the other walks' steps."""
        with self.cv:
            if walk not in self.rows and walk not in self.joining:
                while len(self._members()) >= self.capacity:
                    self.cv.wait()
                self.joining.append(walk)
            walk.submitted, walk.result, walk.error = tokens, None, None
            while walk.result is None and walk.error is None:
                if not self._run_if_ready():
                    self.cv.wait()
            if walk.error is not None:
                raise walk.error
            result, walk.result = walk.result, None
            return result

    def leave(self, walk: GuidedOps) -> None:
        """The walk is over (done or failed): its row goes at the next step."""
        with self.cv:
            if walk in self.joining:
                self.joining.remove(walk)
            walk.left, walk.submitted, walk.cache = True, None, None
            if not self._members() and not self.stepping:
                self.rows, self.cache, self.mask = [], None, None  # the last one out frees the cache
            self.cv.notify_all()
            self._run_if_ready()

    def _members(self) -> list[GuidedOps]:
        return [w for w in dict.fromkeys(self.rows + self.joining + self.in_step) if not w.left]

    def _run_if_ready(self) -> bool:
        """Run a step in this thread if every member has submitted (call with the condition held)."""
        members = self._members()
        if self.stepping or not members or any(w.submitted is None for w in members):
            return False
        self.stepping, self.in_step = True, members
        joining, self.joining = self.joining, []
        error = None
        self.cv.release()
        try:
            with self.b.lock, torch.inference_mode():
                self._merge(joining)
                self._forward()
        except BaseException as exc:  # noqa: BLE001 - every row of the step gets the failure
            error = exc
        finally:
            self.cv.acquire()
        for walk in self.in_step:
            walk.submitted = None
            if error is not None:
                walk.error = error
        if error is not None:  # the batch cache is in an unknown state: its walks are failed
            self.rows, self.cache, self.mask = [], None, None
        self.stepping, self.in_step = False, []
        self.cv.notify_all()
        trim_heap(TRIM_EVERY_S)
        return True

    def _merge(self, joining: list[GuidedOps]) -> None:
        """Drop the rows that left, add the joining ones (left-padded to one length), and cut the
        columns that are holes in every row."""
        from transformers import DynamicCache
        keep = [i for i, w in enumerate(self.rows) if not w.left]
        layers = _layers(self.cache) if self.cache is not None else None
        mask = self.mask
        if layers is not None and not keep:  # every row left: start the cache afresh
            layers, mask = None, None
        elif layers is not None and len(keep) < len(self.rows):
            index = torch.tensor(keep, dtype=torch.long)
            layers = [(k[index], v[index]) for k, v in layers]
            mask = mask[index]
        rows = [self.rows[i] for i in keep]
        for walk in joining:
            own = _layers(walk.cache)
            own_mask = torch.ones(1, own[0][0].shape[-2], dtype=torch.long)
            walk.cache = None
            if layers is None or not rows:
                layers, mask = own, own_mask
            else:
                width = max(mask.shape[1], own_mask.shape[1])
                layers = [(torch.cat([_pad_left(k, width), _pad_left(k2, width)]),
                           torch.cat([_pad_left(v, width), _pad_left(v2, width)]))
                          for (k, v), (k2, v2) in zip(layers, own)]
                mask = torch.cat([_pad_left(mask, width), _pad_left(own_mask, width)])
            rows.append(walk)
        if layers is None:
            self.rows, self.cache, self.mask = [], None, None
            return
        lead = int(mask.any(0).long().argmax())  # leading columns that are holes in every row
        if lead:
            layers = [(k[:, :, lead:], v[:, :, lead:]) for k, v in layers]
            mask = mask[:, lead:]
        self.rows, self.mask = rows, mask
        self.cache = DynamicCache(ddp_cache_data=layers)

    def _forward(self) -> None:
        rows = self.rows
        width = max(len(w.submitted) for w in rows)
        pad = self.b.pad_id
        ids = torch.tensor([w.submitted + [pad] * (width - len(w.submitted)) for w in rows])
        new = torch.tensor([[1] * len(w.submitted) + [0] * (width - len(w.submitted)) for w in rows])
        positions = torch.tensor([[w.position + j for j in range(width)] for w in rows])
        mask = torch.cat([self.mask, new], dim=1)
        last = torch.tensor([[len(w.submitted) - 1] for w in rows])  # each row's last real token
        out = self.b.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           **self.b.cache_arg(self.cache), logits_to_keep=last)
        self.cache, self.mask = self.b.cache_of(out), mask
        for i, walk in enumerate(rows):
            walk.result = out.logits[i, 0].to(torch.float32, copy=True)
            walk.position += len(walk.submitted)
        self.steps += 1
        self.widest = max(self.widest, len(rows))


def batchable(cache) -> bool:
    """Only plain full-attention layers can be padded and stacked (not sliding windows)."""
    from transformers.cache_utils import DynamicLayer
    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _pad_left(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros before the sequence axis (-2 for KV tensors [B, H, T, D], -1 for masks [B, T])."""
    axis = -1 if t.dim() == 2 else -2
    missing = width - t.shape[axis]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[axis] = missing
    return torch.cat([t.new_zeros(shape), t], dim=axis)
