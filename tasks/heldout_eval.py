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
from tasks.rundir import write_text_atomic
from tasks.training import load_base


class Scorer:
    """Sequence log-probability of an assistant reply given the prompt turns."""

    def __init__(self, model, tokenizer, max_length: int):
        self.model, self.tok, self.max_length = model, tokenizer, max_length

    @torch.inference_mode()
    def logp(self, prompt: list[dict], reply: str) -> float:
        head = self.tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = self.tok.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=False)
        head_ids = self.tok.encode(head, add_special_tokens=False)
        ids = self.tok.encode(full, add_special_tokens=False)[: self.max_length]
        if len(ids) <= len(head_ids):
            return 0.0
        logits = self.model(input_ids=torch.tensor([ids])).logits[0, :-1]
        logprobs = torch.log_softmax(logits.float(), -1)
        targets = torch.tensor(ids[1:])
        picked = logprobs[torch.arange(len(targets)), targets]
        return float(picked[len(head_ids) - 1:].sum())


def _both(model, scorer: Scorer, prompt, reply) -> tuple[float, float]:
    trained = scorer.logp(prompt, reply)
    with model.disable_adapter():
        base = scorer.logp(prompt, reply)
    return trained, base


def _pair_rows(model, scorer, rows) -> list[dict]:
    out = []
    for row in rows:
        ct, cb = _both(model, scorer, row["prompt"], row["chosen"][0]["content"])
        rt, rb = _both(model, scorer, row["prompt"], row["rejected"][0]["content"])
        out.append({"chosen_trained": ct, "chosen_base": cb, "rejected_trained": rt, "rejected_base": rb})
    return out


def _flip_rows(model, scorer, rows: list[dict]) -> tuple[list[dict], list[dict]]:
    trained, base = [], []
    for row in rows:
        scores = {}
        for side, supports in (("support", True), ("oppose", False)):
            user = {"role": "user", "content": with_stance(row["prompt_text"], row["statement"], supports,
                                                           load_phrasing().stance_probe)}
            prompt = [row["prompt"][0], user]
            for name, text in (("aligned", row["aligned"]), ("contra", row["contradicting"])):
                scores[f"{name}_{side}"] = _both(model, scorer, prompt, text)
        trained.append({k: v[0] for k, v in scores.items()})
        base.append({k: v[1] for k, v in scores.items()})
    return trained, base


def evaluate_heldout(layout: RunLayout, method: str, raw_cfg: dict, statements: dict[str, str],
                     cache_dir: Path) -> dict:
    """Metrics on the held-out split (whole scenarios/items never trained on), written to
    RUN_DIR/train/<method>/heldout_eval.json. `statements`: seed id -> seed statement."""
    from peft import PeftModel
    from gravity_core.training.config import parse_train_config
    cfg = parse_train_config(raw_cfg)
    base, tokenizer = load_base(cfg, cache_dir)
    model = PeftModel.from_pretrained(base, str(layout.adapter(method))).eval()
    scorer = Scorer(model, tokenizer, cfg.max_length or 512)
    heldout = load_from_disk(str(layout.pairs_hf))["heldout"]
    rows = [heldout[i] for i in range(min(cfg.heldout_eval_rows, heldout.num_rows))]
    values = _value_rows(layout, [r["pair_id"] for r in rows if r["facet"] == "value"], statements)
    flip_trained, flip_base = _flip_rows(model, scorer, values)
    result = {"preference": preference_metrics(_pair_rows(model, scorer, rows), cfg.beta),
              "profile_sensitivity": {"trained": sensitivity(flip_trained), "base": sensitivity(flip_base)},
              "heldout_rows": heldout.num_rows, "evaluated_rows": len(rows)}
    write_text_atomic(layout.heldout_eval(method), json.dumps(result, indent=2))
    return result


def _value_rows(layout: RunLayout, pair_ids: list[str], statements: dict[str, str]) -> list[dict]:
    """Held-out value pairs with their seed statement (by the pair's typed seed_id) and both scenarios."""
    pool = pl.read_parquet(layout.pool).select("scenario_id", "aligned", "contradicting")
    seeds = pl.DataFrame({"seed_id": list(statements), "statement": list(statements.values())},
                         schema={"seed_id": pl.String, "statement": pl.String})
    chosen = (read_frame(layout.pairs, PreferencePair).filter(pl.col("pair_id").is_in(pair_ids))
              .join(pool, left_on="source_id", right_on="scenario_id").join(seeds, on="seed_id"))
    return chosen.select("prompt", "prompt_text", "statement", "aligned", "contradicting").to_dicts()
