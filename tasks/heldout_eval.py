"""Held-out evaluation: log-probabilities of held-out pairs under the trained adapter and under
the same weights with the adapter disabled (the untrained base), plus profile sensitivity."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import torch
from datasets import load_from_disk

from gravity_core.layout import RunLayout
from gravity_core.records import PreferencePair
from gravity_core.training.evaluate import preference_metrics, sensitivity, with_stance
from tasks.records_io import read_frame
from tasks.resources import load_phrasing
from tasks.environment import release_memory
from tasks.rundir import write_text_atomic
from tasks.training import cpu_precision, load_base


class Scorer:
    """Sequence log-probabilities of assistant replies given their prompt turns, scored in
    right-padded batches (one forward pass per batch, not per reply)."""

    def __init__(self, model, tokenizer, max_length: int, batch_size: int = 8, cpu_bf16: bool = False):
        self.model, self.tok, self.max_length, self.batch_size = model, tokenizer, max_length, batch_size
        self.cpu_bf16 = cpu_bf16  # bf16 autocast on a CPU that multiplies bf16 natively, as training does

    def _encode(self, prompt: list[dict], reply: str) -> tuple[list[int], int]:
        """Token ids of prompt + reply (cut to max_length) and where the reply starts."""
        head = self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = self.tok.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
        start = len(self.tok.encode(head, add_special_tokens=False))
        return self.tok.encode(full, add_special_tokens=False)[: self.max_length], start

    @torch.inference_mode()
    def logp_many(self, items: list[tuple[list[dict], str]]) -> list[float]:
        """log p(reply | prompt) for every (prompt, reply); 0.0 where the reply was cut off entirely."""
        encoded = [self._encode(p, r) for p, r in items]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))  # similar lengths pad less
        scores = [0.0] * len(encoded)
        for at in range(0, len(order), self.batch_size):
            chunk = order[at:at + self.batch_size]
            for i, value in zip(chunk, self._batch([encoded[i] for i in chunk])):
                scores[i] = value
        return scores

    def _batch(self, encoded: list[tuple[list[int], int]]) -> list[float]:
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        width = max(len(ids) for ids, _ in encoded)
        ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in encoded])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in encoded])
        # Logits only from the first position that predicts a reply token: the prompts (most of
        # each sequence) need no vocabulary projection. Replies cut off entirely score 0.0.
        starts = [start for x, start in encoded if len(x) > start]
        if not starts:
            return [0.0] * len(encoded)
        first = max(min(starts) - 1, 0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_bf16):
            out = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=width - first)
        logits = out.logits[:, :-1].float()  # position first + j predicts token first + j + 1
        picked = logits.gather(-1, ids[:, first + 1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
        return [float(picked[row, start - 1 - first:len(x) - 1 - first].sum()) if len(x) > start else 0.0
                for row, (x, start) in enumerate(encoded)]


def _both(model, scorer: Scorer, items: list[tuple[list[dict], str]]) -> tuple[list[float], list[float]]:
    """Scores under the trained adapter and under the base (the same weights, adapter disabled)."""
    trained = scorer.logp_many(items)
    with model.disable_adapter():
        base = scorer.logp_many(items)
    return trained, base


def _pair_rows(model, scorer, rows) -> list[dict]:
    items = [(row["prompt"], row[side][0]["content"]) for row in rows for side in ("chosen", "rejected")]
    trained, base = _both(model, scorer, items)
    return [{"chosen_trained": trained[2 * i], "chosen_base": base[2 * i],
             "rejected_trained": trained[2 * i + 1], "rejected_base": base[2 * i + 1]} for i in range(len(rows))]


FLIP_KEYS = [(f"{name}_{side}", side, name) for side in ("support", "oppose") for name in ("aligned", "contra")]


def _flip_rows(model, scorer, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Each held-out value pair scored with the reader's stated support and stated opposition."""
    probe, items = load_phrasing().stance_probe, []
    for row in rows:
        for _, side, name in FLIP_KEYS:
            user = {"role": "user", "content": with_stance(row["prompt_text"], row["statement"], side == "support",
                                                           probe)}
            items.append(([row["prompt"][0], user], row["aligned" if name == "aligned" else "contradicting"]))
    trained, base = _both(model, scorer, items)
    n = len(FLIP_KEYS)
    return tuple([{key: scores[i * n + k] for k, (key, _, _) in enumerate(FLIP_KEYS)} for i in range(len(rows))]
                 for scores in (trained, base))


def evaluate_heldout(layout: RunLayout, method: str, raw_cfg: dict, statements: dict[str, str],
                     cache_dir: Path) -> dict:
    """Metrics on the held-out split (whole scenarios/items never trained on), written to
    RUN_DIR/train/<method>/heldout_eval.json. `statements`: seed id -> seed statement."""
    from peft import PeftModel
    from gravity_core.training.config import parse_train_config
    cfg = parse_train_config(raw_cfg)
    base, tokenizer = load_base(cfg, cache_dir)
    model = PeftModel.from_pretrained(base, str(layout.adapter(method))).eval()
    cpu_bf16 = not torch.cuda.is_available() and bool(cpu_precision(raw_cfg).get("bf16"))
    scorer = Scorer(model, tokenizer, cfg.max_length or 512, cpu_bf16=cpu_bf16)
    heldout = load_from_disk(str(layout.pairs_hf))["heldout"]
    rows = [heldout[i] for i in range(min(cfg.heldout_eval_rows, heldout.num_rows))]
    values = _value_rows(layout, [r["pair_id"] for r in rows if r["facet"] == "value"], statements)
    flip_trained, flip_base = _flip_rows(model, scorer, values)
    result = {"preference": preference_metrics(_pair_rows(model, scorer, rows), cfg.beta),
              "profile_sensitivity": {"trained": sensitivity(flip_trained), "base": sensitivity(flip_base)},
              "heldout_rows": heldout.num_rows, "evaluated_rows": len(rows),
              "precision": "bf16 autocast (CPU)" if cpu_bf16 else str(base.dtype).removeprefix("torch.")}
    write_text_atomic(layout.heldout_eval(method), json.dumps(result, indent=2))
    del model, base, scorer
    release_memory()
    return result


def _value_rows(layout: RunLayout, pair_ids: list[str], statements: dict[str, str]) -> list[dict]:
    """Held-out value pairs with their seed statement (by the pair's typed seed_id) and both scenarios."""
    pool = pl.read_parquet(layout.pool).select("scenario_id", "aligned", "contradicting")
    seeds = pl.DataFrame({"seed_id": list(statements), "statement": list(statements.values())},
                         schema={"seed_id": pl.String, "statement": pl.String})
    chosen = (read_frame(layout.pairs, PreferencePair).filter(pl.col("pair_id").is_in(pair_ids))
              .join(pool, left_on="source_id", right_on="scenario_id").join(seeds, on="seed_id"))
    return chosen.select("prompt", "prompt_text", "statement", "aligned", "contradicting").to_dicts()
