"""GPU-only training paths: 4-bit QLoRA through bitsandbytes, and DeepSpeed ZeRO-2 under
accelerate. Skipped without CUDA (see conftest); run them on a GPU machine."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_training import BASE, CACHE, layout  # noqa: F401 (fixture)

pytestmark = pytest.mark.gpu
GPU = {**BASE, "bf16": True, "use_cpu": False}


def test_qlora_4bit_trains_and_saves_an_adapter(layout):  # noqa: F811
    import torch
    from safetensors.torch import load_file

    from tasks.training import train_adapter
    summary = train_adapter({**GPU, "quantization": "4bit"}, layout, "qlora", CACHE)
    weights = load_file(str(Path(summary["adapter"]) / "adapter_model.safetensors"))
    assert any(t.abs().sum() > 0 for n, t in weights.items() if "lora_B" in n)
    assert torch.cuda.max_memory_allocated() > 0


def test_deepspeed_zero2_launch(layout, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    (run / "pairs").mkdir(parents=True)
    (run / "pairs" / "hf").symlink_to(layout.pairs_hf)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {reviews: [x], meta: [y]}\nllm: {cache_dir: " + json.dumps(str(CACHE.resolve())) + "}\n"
                      + "train: " + json.dumps({**GPU, "deepspeed": "deployments/deepspeed/zero2.json"}) + "\n")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "deployments/accelerate/zero2.yaml",
           "--num_processes", "1", "-m", "tasks.train_main", "--recipe", str(recipe), "--out", str(run)]
    subprocess.run(cmd, check=True, timeout=1200)
    assert (run / "train" / "gravity" / "adapter" / "adapter_model.safetensors").exists()
