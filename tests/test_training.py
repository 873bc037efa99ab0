"""Training on the embedded tiny model: a few DPO steps change the adapter, it reloads in the
local backend and changes outputs; resume from a checkpoint ends where an uninterrupted run does."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from safetensors.torch import load_file

from gravity_core.layout import RunLayout
from gravity_core.training.card import last_complete_checkpoint

CACHE = Path(".gravity/cache")
BASE = {"base_model": "smollm2-135m-instruct", "beta": 0.3, "learning_rate": 5e-3, "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05, "weight_decay": 0.01, "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "max_steps": 4, "max_length": 96, "bf16": False, "use_cpu": True, "activation_checkpointing": False,
        "report_to": "none", "logging_steps": 1, "save_steps": 2, "seed": 7, "lora_r": 4, "lora_alpha": 8,
        "lora_dropout": 0.0, "dataloader_num_workers": 0}


def turn(role, text):
    return [{"role": role, "content": text}]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A run directory holding only exported pairs (RUN_DIR/pairs/hf)."""
    rows = [{"prompt": turn("user", f"Reader profile: loves quiet stories. Describe book {i}."),
             "chosen": turn("assistant", "A gentle, quiet story of a lighthouse keeper."),
             "rejected": turn("assistant", "EXPLOSIONS! Car chases! Total chaos!")} for i in range(8)]
    run = RunLayout.of(tmp_path_factory.mktemp("run"))
    DatasetDict({"train": Dataset.from_list(rows), "eval": Dataset.from_list(rows[:2]),
                 "heldout": Dataset.from_list(rows[:1])}).save_to_disk(str(run.pairs_hf))
    return run


def test_last_complete_checkpoint_skips_half_written_saves():
    listing = {"checkpoint-2": ["trainer_state.json", "adapter_model.safetensors"],
               "checkpoint-4": ["adapter_model.safetensors"], "runs": []}
    assert last_complete_checkpoint(listing) == "checkpoint-2"
    assert last_complete_checkpoint({}) is None


@pytest.mark.slow
def test_dpo_steps_change_the_adapter_and_it_loads_for_generation(layout):
    from gravity_core.llm import ChatRequest, Message, SamplingParams
    from gravity_core.llm_config import BackendConfig
    from tasks.llm.local_backend import LocalBackend
    from tasks.training import train_adapter
    summary = train_adapter(BASE, layout, "dpo-test", CACHE, facets={"value": 8})
    adapter = Path(summary["adapter"])
    assert adapter == layout.adapter("dpo-test")
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # B starts at zero: training moved it
    assert layout.train_metrics("dpo-test").read_text().count("rewards/margins") >= 4
    assert "smollm2-135m-instruct" in (adapter / "README.md").read_text()
    request = ChatRequest(messages=(Message(role="user", content="Describe book 3 for a reader who loves quiet stories."),),
                          params=SamplingParams(max_tokens=24))
    base = LocalBackend(BackendConfig(torch_threads=2), CACHE).complete(request).text
    tuned = LocalBackend(BackendConfig(torch_threads=2, adapter=str(adapter)), CACHE).complete(request).text
    assert tuned != base


@pytest.mark.slow
def test_resume_ends_with_the_same_parameters(layout):
    from transformers import TrainerCallback

    from tasks.training import train_adapter

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= 2:
                control.should_training_stop = True

    straight = train_adapter(BASE, layout, "straight", CACHE)
    train_adapter(BASE, layout, "resumed", CACHE, callbacks=[Stop()])  # "killed" after step 2's checkpoint
    resumed = train_adapter(BASE, layout, "resumed", CACHE, resume=True)
    assert resumed["metrics"]["resumed_from"].endswith("checkpoint-2") and resumed["steps"] == 4
    a = load_file(str(Path(straight["adapter"]) / "adapter_model.safetensors"))
    b = load_file(str(Path(resumed["adapter"]) / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.slow
def test_sft_variant_on_user_reviews(tmp_path):
    from tasks.training import train_adapter
    run = RunLayout.of(tmp_path / "run")
    rows = [{"messages": turn("user", f"Write your review of book {i}.") + turn("assistant", "Quiet and lovely.")}
            for i in range(4)]
    DatasetDict({"train": Dataset.from_list(rows)}).save_to_disk(str(run.usersft))
    cfg = {k: v for k, v in BASE.items() if k != "beta"}
    summary = train_adapter({**cfg, "method": "sft", "learning_rate": 1e-4, "max_steps": 2}, run, "user_sft", CACHE)
    assert summary["method"] == "sft" and summary["steps"] == 2
    assert (Path(summary["adapter"]) / "adapter_model.safetensors").exists()


@pytest.mark.slow
def test_deepspeed_zero2_config_trains_in_one_cpu_process(layout, monkeypatch):
    """The shipped ZeRO-2 config through TRL/accelerate, one process, DeepSpeed's CPU accelerator."""
    import os

    from tasks.training import train_adapter
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(key, raising=False)
    before = dict(os.environ)
    summary = train_adapter({**BASE, "max_steps": 2, "save_steps": 10, "deepspeed": "deployments/deepspeed/zero2.json"},
                            layout, "zero2", CACHE)
    assert summary["steps"] == 2
    assert (Path(summary["adapter"]) / "adapter_model.safetensors").exists()
    # Nothing of the DeepSpeed launch stays behind (a later `gravity train` subprocess of this
    # process once inherited ACCELERATE_USE_DEEPSPEED and died probing for MPI).
    assert dict(os.environ) == before


@pytest.mark.slow
def test_batched_scoring_equals_one_reply_at_a_time():
    """The held-out scorer pads replies of different lengths into one batch; padding must not
    change any reply's log-probability."""
    from gravity_core.training.config import parse_train_config
    from tasks.heldout_eval import Scorer
    from tasks.training import load_base
    model, tokenizer = load_base(parse_train_config({**BASE, "output_dir": "/tmp/unused"}), CACHE)
    items = [(turn("user", "Describe a quiet book."), "A gentle story."),
             (turn("system", "You write for one reader.") + turn("user", "Describe book 3 for a reader who "
              "loves long, slow family sagas set by the sea."), "Three generations of a fishing family " * 4),
             (turn("user", "Hi"), "Short.")]
    batched = Scorer(model, tokenizer, max_length=96, batch_size=8).logp_many(items)
    single = Scorer(model, tokenizer, max_length=96, batch_size=1).logp_many(items)
    assert all(b < 0 for b in batched)
    # a batch whose replies are all cut off by max_length (a long prompt) scores 0.0, and one
    # with a reply that still fits beside it is unaffected
    long = (turn("user", "Describe this book. " * 40), "A gentle story.")
    assert Scorer(model, tokenizer, max_length=96, batch_size=8).logp_many([long, long]) == [0.0, 0.0]
    assert Scorer(model, tokenizer, max_length=96, batch_size=8).logp_many([long, items[0]])[1] == \
        pytest.approx(batched[0], abs=1e-3)
    assert batched == pytest.approx(single, abs=1e-3)
    # against the full logits, computed by hand (the scorer projects only the reply positions)
    import torch
    prompt, reply = items[1]
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(prompt + turn("assistant", reply), tokenize=False)
    start, ids = len(tokenizer.encode(head, add_special_tokens=False)), tokenizer.encode(full, add_special_tokens=False)
    with torch.inference_mode():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
    assert batched[1] == pytest.approx(sum(logp[k - 1, ids[k]].item() for k in range(start, len(ids))), abs=1e-3)


@pytest.mark.parametrize("cuda, native, raw, bf16", [
    (False, True, {}, True),                                  # a CPU with AVX512-BF16/AMX: bf16 autocast
    (False, True, {"cpu_bf16": False}, None),                 # switched off: fp32
    (False, False, {}, None),                                 # emulated bf16 would be slower: fp32
    (True, True, {"bf16": False}, False),                     # CUDA: the recipe's own `bf16` decides
])
def test_cpu_training_precision(monkeypatch, cuda, native, raw, bf16):
    import tasks.environment
    from tasks.training import cpu_precision
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(tasks.environment, "cpu_has_bf16", lambda: native)
    assert cpu_precision(raw).get("bf16") == bf16


def test_a_new_train_key_of_ours_is_accepted_by_the_cached_key_list(tmp_path):
    from tasks.environment import load_recipe
    load_recipe("sample", [f"llm.cache_dir={tmp_path}", "train.cpu_bf16=false"])  # cache written, key known
    assert load_recipe("sample", [f"llm.cache_dir={tmp_path}", "train.cpu_bf16=false"], build_train=False)
    assert len(list(tmp_path.glob("train-keys-*.json"))) == 1
