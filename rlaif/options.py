"""The options of one generation run: one pydantic model for the CLI, the Prefect flows and ``rlaif demo``.

``RunOptions`` is the only place an option is declared, described and range-checked. The CLI takes each
option's help from here and passes what the user gave to ``RunOptions.parse``; the flows take a ``RunOptions``
parameter, so Prefect validates a deployment's parameters with the same model; ``rlaif demo`` is a preset
instance (``rlaif.demo.demo_options``). Infrastructure (database, engines, endpoints) is not here: it lives in
``rlaif.config.Settings``.

Which options decide the outputs is written down here too (``OUTPUT_NEUTRAL``): the run's configuration hash
(``rlaif.runs.config_hash``) covers every other option, so changing one of them starts a new run instead of
silently resuming an old one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlaif.errors import ConfigError
from rlaif.judge.config import JudgeConfig, Mode

if TYPE_CHECKING:
    from rlaif.engines.base import SamplingParams

ContextMode = Literal["transcript", "fresh"]

# Options that do not change any generated row: how many prompts to take, whether a bad row stops the run, and
# whether to add the judge's comparisons (which are keyed by their own pair, not by the chain). A rerun that
# changes only these resumes the earlier run. `prompts` and `constitution` enter the hash as what they resolve
# to (the source's identity, the constitution's content version), not as the text the user typed.
# A shard (`--shard i/n`) only picks which prompts this worker takes; each prompt's rows are the same in any shard,
# which is what lets `rlaif shards merge` give the rows of one single run.
OUTPUT_NEUTRAL = frozenset({"limit", "skip_bad_rows", "judge", "prompts", "constitution", "shard"})


class RunOptions(BaseModel):
    """What one supervised critique-and-revise run reads and how it generates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- what to read
    prompts: str = Field(
        description="prompt source: a .jsonl/.json, .csv, .tsv, .parquet or .txt file, a datasets folder, "
                    "or 'sql:SELECT ...' over the project database",
    )
    prompt_column: str = Field("prompt", min_length=1, description="column holding the prompt text")
    helpful_column: str | None = Field(
        None, min_length=1,
        description="column marking prompts whose answer is kept unrevised, helpfulness samples (true, 1, yes "
                    "or 'helpful' marks a row)",
    )
    no_revise: bool = Field(False, description="keep every answer unrevised: the whole source is helpfulness data")
    skip_bad_rows: bool = Field(False, description="record bad rows with their reason and go on, instead of stopping")
    limit: int | None = Field(None, ge=1, le=100_000_000, description="use only the first N distinct prompts")
    shard: str | None = Field(
        None, description="I/N: take only shard I of N (a prompt-hash range), for N workers on N machines, each "
                          "writing its own database; then `rlaif shards merge`",
    )
    # -- how to generate
    constitution: str = Field("harmless", min_length=1, description="shipped constitution name or YAML path")
    rounds: int = Field(1, ge=1, le=16, description="critique/revision rounds per prompt, a principle drawn per round")
    context: ContextMode = Field(
        "transcript",
        description="transcript: each round sees the earlier critiques and revisions (the paper); "
                    "fresh: each round sees only the latest revision (short-context models)",
    )
    max_tokens: int = Field(160, ge=1, le=32768, description="most tokens per generated turn")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="sampling temperature (0 is greedy)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling: keep the top tokens up to this mass")
    seed: int | None = Field(
        None, ge=0, le=2**63 - 1,
        description="run seed for request seeds and principle draws (default: the seed setting, RLAIF_SEED)",
    )
    judge: bool = Field(False, description="also judge each original answer against its final revision")
    ignore_eos: bool = Field(False, description="benchmarks only: every generated turn runs to exactly max_tokens")

    @model_validator(mode="after")
    def _consistent(self) -> RunOptions:
        if self.no_revise and self.helpful_column:
            raise ValueError("give --helpful-column or --no-revise, not both (--no-revise marks every prompt)")
        if self.no_revise and self.judge:
            raise ValueError("--judge compares answers with their revisions, and --no-revise makes none")
        if self.shard is not None:
            from rlaif.shards import parse_shard

            parse_shard(self.shard)  # a ConfigError names the problem in one line
        return self

    @classmethod
    def parse(cls, **values: Any) -> RunOptions:
        """Validate ``values`` (None means not given); a bad one becomes one ConfigError line with the numbers."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(describe_error(exc, cls)) from None

    def with_seed(self, default: int) -> RunOptions:
        """These options with the seed filled in (the run records a concrete seed)."""
        return self if self.seed is not None else self.model_copy(update={"seed": default})

    def sampling(self) -> "SamplingParams":
        """The sampling options every request of the run starts from (each stage adds its request's seed)."""
        from rlaif.engines.base import SamplingParams

        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens,
                              ignore_eos=self.ignore_eos)

    def hashed(self) -> dict[str, Any]:
        """The options that decide the outputs, by name (see ``OUTPUT_NEUTRAL``)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in OUTPUT_NEUTRAL}


def option_help(name: str, model: type[BaseModel] | None = None) -> str:
    """The help text of option ``name`` of ``model`` (RunOptions), with its default when it has one (for the CLI)."""
    field = (model or RunOptions).model_fields[name]
    text = field.description or name
    if not field.is_required() and field.default not in (None, False):
        text += f" (default: {field.default})"
    return text


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def describe_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """The first error of ``exc`` (from ``model``, RunOptions by default) as ``--rounds must be between 1 and 16,
    got 0``."""
    fields = (model or RunOptions).model_fields
    err = exc.errors()[0]
    if not err["loc"]:  # a cross-field rule: its message already names the options
        return str(err["msg"]).removeprefix("Value error, ")
    name = str(err["loc"][0])
    field = fields.get(name)
    got = err.get("input")
    if err["type"] == "extra_forbidden":
        return f"unknown option {name!r}; expected one of: {', '.join(fields)}"
    if err["type"] == "missing":
        return f"{flag(name)} is required"
    bounds = _bounds(field) if field is not None else ""
    if bounds and err["type"] in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{flag(name)} must be {bounds}, got {got!r}"
    if err["type"] == "literal_error":
        return f"{flag(name)} must be {err['ctx']['expected']}, got {got!r}"
    return f"{flag(name)}: {err['msg']}, got {got!r}"


def _bounds(field: Any) -> str:
    """``between 1 and 16`` / ``at least 1`` / ``greater than 0 and at most 1`` from a field's constraints."""
    low = high = ""
    for meta in field.metadata:
        if getattr(meta, "ge", None) is not None:
            low = f"at least {meta.ge}"
        if getattr(meta, "gt", None) is not None:
            low = f"greater than {meta.gt}"
        if getattr(meta, "le", None) is not None:
            high = f"at most {meta.le}"
        if getattr(meta, "lt", None) is not None:
            high = f"less than {meta.lt}"
    if low.startswith("at least") and high.startswith("at most"):
        return f"between {low.removeprefix('at least ')} and {high.removeprefix('at most ')}"
    return " and ".join(x for x in (low, high) if x)


# --- preference-data runs (`rlaif generate prefs`, `rlaif judge pairs`) -------------------------------------------

# A prefs run's options that change no row: how much to take, whether a bad row stops the run, and the sources,
# which enter the configuration as their identity (an absolute path, a query, a run id), as in an SFT run.
PREFS_OUTPUT_NEUTRAL = frozenset({"limit", "skip_bad_rows", "prompts", "from_run", "pairs", "constitution"})
_SHARED = RunOptions.model_fields  # options both kinds of run have: declared once, above, and reused here


class PrefsOptions(BaseModel):
    """What one preference-data run reads, samples and judges.

    Candidates come from exactly one source: ``prompts`` (``samples`` responses drawn from the policy per
    prompt and paired, all against all or at most ``max_pairs``), ``from_run`` (each chain's original answer
    against its final revision, from an SL-CAI run), or ``pairs`` (a file of pairs the user brings). The
    options an SFT run has too are RunOptions' fields, reused as they are declared there.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- what to read: one of three
    prompts: str | None = Field(None, description=_SHARED["prompts"].description)
    from_run: str | None = Field(
        None, min_length=1,
        description="pair each chain's original answer with its final revision from this SL-CAI run "
                    "(runs.run_id of `generate sft` or `demo`) instead of sampling",
    )
    pairs: str | None = Field(
        None, min_length=1,
        description="pairs to label: prompt, response_a, response_b (or prompt, chosen, rejected), in any "
                    "prompt-source format",
    )
    prompt_column: str = _SHARED["prompt_column"]
    skip_bad_rows: bool = _SHARED["skip_bad_rows"]
    limit: int | None = _SHARED["limit"]
    constitution: str = _SHARED["constitution"]
    # -- candidates from the policy
    samples: int = Field(2, ge=2, le=32, description="responses sampled from the policy per prompt, each seeded")
    max_pairs: int | None = Field(
        None, ge=1, le=496, description="judge at most N pairs per prompt, a seeded draw (default: all K(K-1)/2)")
    max_tokens: int = _SHARED["max_tokens"]
    temperature: float = _SHARED["temperature"]
    top_p: float = _SHARED["top_p"]
    seed: int | None = _SHARED["seed"]
    ignore_eos: bool = _SHARED["ignore_eos"]
    # -- the judge (the feedback role)
    principles: int = JudgeConfig.model_fields["principles"]
    judge_mode: Mode | None = Field(
        None, description="choice | cot | score | contrast (default: the feedback engine's measured default, "
                          "docs/judge.md)",
    )

    @model_validator(mode="after")
    def _consistent(self) -> PrefsOptions:
        given = [name for name in ("prompts", "from_run", "pairs") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of --prompts, --from-run or --pairs"
                             + (f" (got {', '.join(flag(n) for n in given)})" if given else ""))
        sampling_only = sorted({"samples", "max_pairs", "skip_bad_rows", "prompt_column"} & self.model_fields_set)
        if self.prompts is None and sampling_only:
            raise ValueError(f"{flag(sampling_only[0])} applies to candidates sampled from --prompts, "
                             f"not to {flag(given[0])}")
        return self

    @classmethod
    def parse(cls, **values: Any) -> PrefsOptions:
        """Validate ``values`` (None means not given); a bad one becomes one ConfigError line."""
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except ValidationError as exc:
            raise ConfigError(describe_error(exc, cls)) from None

    with_seed = RunOptions.with_seed  # the same rule: the run records a concrete seed
    sampling = RunOptions.sampling  # the candidates' sampling options, built from the same fields

    def with_judge_mode(self, default: str) -> PrefsOptions:
        """These options with the judge mode filled in (the feedback engine's default when none was given)."""
        return self if self.judge_mode is not None else self.model_copy(update={"judge_mode": default})

    def judge_config(self) -> JudgeConfig:
        """The judge's options; the mode must be filled in first (``with_judge_mode``)."""
        return JudgeConfig(mode=self.judge_mode or "choice", principles=self.principles)

    def hashed(self) -> dict[str, Any]:
        """The options that decide the outputs, by name (see ``PREFS_OUTPUT_NEUTRAL``)."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in PREFS_OUTPUT_NEUTRAL}
