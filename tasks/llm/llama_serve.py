"""`python -m tasks.llm.llama_serve ARGS...`: llama-cpp-python's OpenAI-compatible server
(`python -m llama_cpp.server`, same arguments) with a RAM prompt cache that keeps one prefix per
conversation and counts the memory it really holds. Started by `scripts/llama_server.sh`.

Why: the server evaluates one request at a time and keeps the KV cache of the last request only,
so the profile stage's readers, whose scored requests interleave, each re-read their reviews on
every request. llama-cpp-python's `--cache true --cache_type ram` keeps saved states and restores
the one with the longest common prefix, which is what those readers need, but as shipped:

* its `--cache_size` counts only llama.cpp's state (the KV cells, ~28 KB a token for the 1.5B),
  not the logits array each state carries when `logits_all` is on (the server's default, needed
  for `logprobs`): n_vocab x 4 bytes a token, 0.6 MB for Qwen2.5's 151,936 tokens. A 2 GB setting
  then holds ~45 GB; measured: 8.8 MB counted against 186 MB held for a 321-token prompt.
* every request adds an entry (its prompt plus completion), so a reader asking 30 statements over
  the same reviews leaves 30 near-identical entries, and with readers taking turns the LRU must
  hold two entries per reader in flight to keep any.

`SizedRAMCache` fixes both, and keeps only the last logits row of a saved state: its size is the
bytes the entries hold, and a new entry replaces the entries it supersedes (those it shares at
least `SUPERSEDED` of their tokens with). A restored prompt always has its last token evaluated
again, and the logprobs of a chat reply come from rows computed after that, so the prompt's rows
are never read; only `/v1/completions` with `echo` and `logprobs` reads them (the prompt's own
logprobs), and over a restored prefix those would repeat the last row. GRAVITY never asks for
`echo`. With one row an entry of the 1.5B is about 28 KB a token instead of 0.6 MB, so the
profile stage's prefixes in flight (values, Big Five and summary prompts of 8 readers, ~24 of
~1k tokens) fit in well under 1 GB.

A reply with `logprobs` also made llama-cpp-python 0.3.36 take the log-softmax of every row of
its logits, the prompt's included, and then keep only the reply's rows
(`logits_to_logprobs(self._scores)[token_offset:]`): for a 800-token prompt 0.5 GB of float32 and
its temporaries per request, several seconds of page faults on 2 cores, for 30 rows it reads.
`RowLogprobs` computes only the rows sliced out; the figures are the same (the log-softmax is per
row).
"""
from __future__ import annotations

from typing import Sequence

import llama_cpp
import numpy as np
from llama_cpp.llama_cache import LlamaRAMCache

# An entry sharing this fraction of its tokens with a newer one is dropped when the newer one is
# saved: the newer covers the same prefix (a reader's reviews) and differs only in its tail.
SUPERSEDED = 0.9


def entry_bytes(state) -> int:
    """The memory a saved state holds: llama.cpp's state, the logits rows and the token ids."""
    return int(state.llama_state_size) + int(state.scores.nbytes) + int(state.input_ids.nbytes)


class SizedRAMCache(LlamaRAMCache):
    """LlamaRAMCache whose capacity is the memory its entries really hold, one entry per prefix."""

    @property
    def cache_size(self) -> int:
        return sum(entry_bytes(state) for state in self.cache_state.values())

    def __setitem__(self, key: Sequence[int], value) -> None:
        key = tuple(key)
        # load_state assigns scores[:n_tokens] = state.scores, so one row broadcasts.
        value.scores = value.scores[-1:].copy()
        for old in [k for k in self.cache_state if k != key]:
            if llama_cpp.Llama.longest_token_prefix(old, key) >= SUPERSEDED * len(old):
                del self.cache_state[old]
        super().__setitem__(key, value)


_LOG_SOFTMAX = llama_cpp.Llama.logits_to_logprobs


class RowLogprobs:
    """The log-softmax of a logits matrix's rows, computed for the rows sliced out only."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    def __len__(self) -> int:
        return len(self.logits)

    def __getitem__(self, rows):
        return _LOG_SOFTMAX(self.logits[rows], axis=-1)

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self[:], dtype=dtype)


def logits_to_logprobs(logits, axis: int = -1):
    """`Llama.logits_to_logprobs`, deferred for a 2-D matrix until its rows are sliced out."""
    if isinstance(logits, np.ndarray) and logits.ndim == 2 and axis in (-1, 1):
        return RowLogprobs(logits)
    return _LOG_SOFTMAX(logits, axis=axis)


def main() -> None:
    # llama_cpp.server.model builds its RAM cache as `llama_cpp.LlamaRAMCache(capacity_bytes=...)`.
    llama_cpp.LlamaRAMCache = SizedRAMCache
    llama_cpp.Llama.logits_to_logprobs = staticmethod(logits_to_logprobs)
    from llama_cpp.server.__main__ import main as serve
    serve()


if __name__ == "__main__":
    main()
