"""DPO (and SFT) training with TRL + PEFT LoRA/QLoRA (GRAVITY section 3.4).

`train_adapter` is a plain function so that it runs the same under Prefect (one process) and
under `accelerate launch` with DeepSpeed (one process per GPU, see `tasks/train_main.py`).
With `peft_config`, TRL's reference model is the base with the adapter disabled: no second copy.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from unittest.mock import patch

import torch
from datasets import Dataset, load_from_disk
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from gravity_core.layout import RunLayout
from gravity_core.training.card import last_complete_checkpoint, model_card, sft_kwargs
from gravity_core.training.config import GravityDPOConfig, parse_train_config
from tasks.environment import release_memory
from tasks.model_packages import resolve_model_path

TRAIN_COLUMNS = ["prompt", "chosen", "rejected"]


class MetricsFile(TrainerCallback):
    """Every logged step (loss, rewards/chosen, rewards/rejected, margins, accuracies...) as a JSON line."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and state.is_world_process_zero:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


def load_base(cfg: GravityDPOConfig, cache_dir: Path):
    """Base model + tokenizer: bf16 on CUDA when asked, 4-bit NF4 (QLoRA) when the recipe says so."""
    path = resolve_model_path(cfg.base_model, cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    cuda = torch.cuda.is_available()
    kwargs: dict = {"dtype": torch.bfloat16 if cuda and cfg.bf16 else torch.float32}
    if cfg.quantization == "4bit":
        if not cuda:
            raise RuntimeError("train.quantization=4bit (QLoRA) needs a CUDA GPU; use 'none' on CPU")
        from transformers import BitsAndBytesConfig
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if cfg.quantization == "4bit":
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    return model, tokenizer


def lora_config(cfg: GravityDPOConfig) -> LoraConfig:
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")


def _splits(data_dir: Path, cfg: GravityDPOConfig) -> tuple[Dataset, Dataset | None]:
    """Train/eval datasets: preference pairs (prompt, chosen, rejected), or (UserSFT) chat examples."""
    data = load_from_disk(str(data_dir))
    if "messages" in data["train"].column_names:
        return data["train"].select_columns(["messages"]), None
    train = data["train"].select_columns(TRAIN_COLUMNS)
    evaluation = data["eval"].select_columns(TRAIN_COLUMNS) if "eval" in data and data["eval"].num_rows else None
    return train, evaluation


def _sft_rows(dataset: Dataset) -> Dataset:
    """Chosen responses only (paper 4.4, SFT variant): prompt turns + the chosen turn."""
    if "messages" in dataset.column_names:
        return dataset
    return dataset.map(lambda row: {"messages": row["prompt"] + row["chosen"]},
                       remove_columns=dataset.column_names)


def _trainer(cfg: GravityDPOConfig, model, tokenizer, train, evaluation, callbacks):
    if cfg.method == "sft":
        import dataclasses
        from trl import SFTConfig, SFTTrainer
        from transformers import TrainingArguments
        # Only the Trainer-level settings carry over (DPO's loss_type etc. mean other things in SFT).
        shared = {f.name for f in dataclasses.fields(TrainingArguments)} | {"max_length"}
        args = SFTConfig(**sft_kwargs(cfg, shared & {f.name for f in dataclasses.fields(SFTConfig)}))
        return SFTTrainer(model=model, args=args, train_dataset=_sft_rows(train),
                          eval_dataset=_sft_rows(evaluation) if evaluation is not None else None,
                          processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=callbacks)
    from trl import DPOTrainer
    return DPOTrainer(model=model, args=cfg, train_dataset=train, eval_dataset=evaluation,
                      processing_class=tokenizer, peft_config=lora_config(cfg), callbacks=callbacks)


def _quiet(trainer):
    """Metrics go to metrics.jsonl (MetricsFile), not to the console as printed dicts or bars."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def resume_point(checkpoints: Path) -> str | None:
    if not checkpoints.is_dir():
        return None
    listing = {d.name: [f.name for f in d.iterdir()] for d in checkpoints.iterdir() if d.is_dir()}
    name = last_complete_checkpoint(listing)
    return str(checkpoints / name) if name else None


def _single_process_distributed_env() -> None:
    """DeepSpeed without a launcher (one process, e.g. a recipe's `train.deepspeed` on one device):
    give it the rendezvous variables a launcher would set, instead of letting it probe for MPI."""
    import socket
    if "RANK" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "LOCAL_RANK": "0",
                       "WORLD_SIZE": "1"}.items():
        os.environ.setdefault(key, value)


def cpu_precision(raw: dict) -> dict:
    """On a machine without CUDA whose CPU multiplies bf16 natively, train with bf16 autocast
    (`train.cpu_bf16`, on by default; the weights stay fp32). Elsewhere the config as given."""
    from tasks.environment import cpu_has_bf16
    if torch.cuda.is_available() or not raw.get("cpu_bf16", True) or raw.get("fp16") or not cpu_has_bf16():
        return raw
    return {**raw, "bf16": True}


# Undo what training writes to os.environ (the rendezvous variables above; transformers sets
# ACCELERATE_USE_DEEPSPEED for a DeepSpeed config): a later training, or a subprocess, of the same
# process must not inherit a DeepSpeed launch it did not ask for.
@patch.dict(os.environ)
def train_adapter(raw_cfg: dict, layout: RunLayout, method: str, cache_dir: Path, resume: bool = False,
                  callbacks: list | None = None, run_id: str = "", facets: dict[str, int] | None = None) -> dict:
    """Train one LoRA adapter for `method` on its data (`RunLayout.training_data`) into RUN_DIR/train/<method>;
    save it with a model card. Returns a summary."""
    if raw_cfg.get("deepspeed"):
        _single_process_distributed_env()
    cfg = parse_train_config(cpu_precision({**raw_cfg, "output_dir": str(layout.checkpoints(method))}))
    started = time.time()
    train, evaluation = _splits(layout.training_data(method), cfg)
    if train.num_rows == 0:  # e.g. every PrefAlign pair was dropped: say so instead of crashing in TRL
        return {"adapter": None, "metrics": {"train_rows": 0}, "seconds": 0.0, "steps": 0, "method": cfg.method,
                "skipped": f"no training examples in {layout.relative(layout.training_data(method))}"}
    model, tokenizer = load_base(cfg, cache_dir)
    trainer = _quiet(_trainer(cfg, model, tokenizer, train, evaluation,
                              [MetricsFile(layout.train_metrics(method)), *(callbacks or [])]))
    checkpoint = resume_point(layout.checkpoints(method)) if resume else None
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        adapter = layout.adapter(method)
        trainer.save_model(str(adapter))
        tokenizer.save_pretrained(str(adapter))
        args, steps = trainer.args, trainer.state.global_step
    finally:  # the next adapter's training must not start on top of this one's memory
        del trainer, model
        release_memory()
    metrics = {**result.metrics, "train_rows": train.num_rows, "resumed_from": checkpoint}
    if args.process_index == 0:
        hyper = {k: getattr(cfg, k) for k in ("beta", "learning_rate", "lr_scheduler_type", "warmup_steps",
                                               "weight_decay", "optim", "per_device_train_batch_size",
                                               "gradient_accumulation_steps", "num_train_epochs", "max_steps",
                                               "lora_r", "lora_alpha", "lora_dropout", "quantization", "seed")}
        (adapter / "README.md").write_text(model_card(cfg.base_model, cfg.method, facets or {}, hyper, metrics, run_id, method))
    return {"adapter": str(adapter), "metrics": metrics, "seconds": round(time.time() - started, 1),
            "steps": steps, "method": cfg.method}
