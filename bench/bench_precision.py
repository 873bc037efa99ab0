"""fp32 against bf16 for an in-process model on this CPU: prompt prefill and greedy generation in
tokens per second, and what `llm.*.dtype: auto` picks here (bf16 only where the CPU multiplies
bf16 natively: AVX512-BF16 or AMX-BF16; elsewhere torch emulates it and fp32 is faster).

    .venv/bin/python bench/bench_precision.py [--model smollm2-135m-instruct] [--threads 2]

Prints one JSON line per precision, then the choice. The model must be in the model store
(the embedded one always is; the quality model after `make run RECIPE=recipes/quality.yaml`)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from gravity_core.model_catalog import EMBEDDED_MODEL  # noqa: E402
from tasks.environment import cpu_has_bf16  # noqa: E402
from tasks.llm.local_backend import compute_dtype  # noqa: E402
from tasks.model_packages import resolve_model_path  # noqa: E402

TEXT = ("A reader wrote about a quiet harbour town, a family saga across three generations, and the "
        "slow work of forgiveness; she praised the prose and disliked the rushed ending. ")


def measure(path: Path, dtype: torch.dtype, prompt_tokens: int, new_tokens: int, repeats: int) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
    ids = tokenizer.encode(TEXT * (prompt_tokens // 30 + 1), add_special_tokens=False)[:prompt_tokens]
    batch = torch.tensor([ids])
    prefill, generate = [], []
    with torch.inference_mode():
        model(input_ids=batch[:, :32])  # warm-up: first-call allocations and kernel selection
        for _ in range(repeats):
            started = time.perf_counter()
            model(input_ids=batch, logits_to_keep=1)
            prefill.append(prompt_tokens / (time.perf_counter() - started))
            started = time.perf_counter()
            out = model.generate(batch[:, :64], max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=tokenizer.eos_token_id)
            generate.append((out.shape[1] - 64) / (time.perf_counter() - started))
    return {"dtype": str(dtype).removeprefix("torch."), "prefill_tok_s": round(max(prefill), 1),
            "generate_tok_s": round(max(generate), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--prompt-tokens", type=int, default=800)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache-dir", default=str(ROOT / ".gravity" / "cache"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = resolve_model_path(args.model, Path(args.cache_dir))
    rows = [measure(path, dtype, args.prompt_tokens, args.new_tokens, args.repeats)
            for dtype in (torch.float32, torch.bfloat16)]
    for row in rows:
        print(json.dumps({"model": args.model, "threads": args.threads, **row}))
    faster = max(rows, key=lambda r: r["prefill_tok_s"])["dtype"]
    print(json.dumps({"cpu_native_bf16": cpu_has_bf16(), "auto_picks": str(compute_dtype("auto")).removeprefix("torch."),
                      "faster_prefill": faster}))


if __name__ == "__main__":
    main()
