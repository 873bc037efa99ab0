"""API keys: environment variable or Prefect Secret block, held as `SecretStr` only."""
from __future__ import annotations

from pydantic import Field, SecretStr, create_model
from pydantic_settings import BaseSettings

from gravity_core.llm_config import BackendConfig


class MissingSecret(RuntimeError):
    """No key where the recipe said to look (the message names the place, never a value)."""


def _env_key(var: str) -> SecretStr | None:
    """Read one variable through pydantic-settings, straight into a SecretStr."""
    settings = create_model("_KeySettings", __base__=BaseSettings,
                            key=(SecretStr | None, Field(None, validation_alias=var)))
    return settings().key


def resolve_api_key(cfg: BackendConfig) -> SecretStr:
    """The backend's key: the Prefect Secret block if named, else the environment variable."""
    if cfg.api_key_block:
        from prefect.blocks.system import Secret
        return SecretStr(str(Secret.load(cfg.api_key_block).get()))
    key = _env_key(cfg.api_key_env)
    if key is None or not key.get_secret_value():
        if cfg.base_url:  # self-hosted endpoints (vLLM, llama.cpp) often need no key
            return SecretStr("not-needed")
        raise MissingSecret(f"set the environment variable {cfg.api_key_env} or llm api_key_block")
    return key
