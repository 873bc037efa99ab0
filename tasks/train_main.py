"""Training entry point for multi-GPU launches (one process per GPU, no Prefect):

    accelerate launch --config_file deployments/accelerate/zero2.yaml -m tasks.train_main \\
        --recipe recipes/paper.yaml --out runs/paper [--resume]

It trains on RUN_DIR's pairs exactly as `gravity train` does; accelerate + DeepSpeed
(ZeRO-2 or ZeRO-3, configs in deployments/) shard it across the GPUs.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from gravity_core.evaluation.trained import train_configs
from gravity_core.layout import GRAVITY, RunLayout
from gravity_core.recipe import parse_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="run directory with pairs/hf")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--method", default=GRAVITY,
                        help="gravity (default) or a trained baseline (gravity_sft, user_sft, prefalign): its data, "
                             "its settings, its train/<method>/ folder")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    recipe = parse_recipe(args.recipe.read_text(), args.overrides, source=str(args.recipe))
    from tasks.training import train_adapter
    configs = train_configs(recipe.train, recipe.evaluate.trained, recipe.evaluate.train_overrides)
    if args.method not in configs:
        parser.error(f"--method {args.method}: not gravity and not in the recipe's evaluate.trained {sorted(configs)}")
    summary = train_adapter(configs[args.method], RunLayout.of(args.out), args.method, Path(recipe.llm.cache_dir),
                            resume=args.resume)
    print(json.dumps({k: v for k, v in summary.items() if k != "metrics"}, default=str))


if __name__ == "__main__":
    main()
