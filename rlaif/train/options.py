"""Training options: small pydantic models, one per trainer, whose validation errors state the numbers.

Infrastructure (database, engines, cache) stays in ``rlaif.config.Settings``; what a training run does is here.
The options a run was started with are stored with its row (``train_runs.config``) and hashed into its id, so the
same command run again resumes it, and a changed option starts a new run instead of silently mixing two.
Options that only say how long to go on or how often to save (``RESUMABLE_CHANGES``) stay out of the hash: a run
may be extended, or saved more often, without starting over.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rlaif.errors import ConfigError

PairLossName = Literal["dpo", "cdpo", "ipo", "dpo-norm", "simpo"]
RESUMABLE_CHANGES = frozenset({"max_steps", "save_every", "keep_checkpoints", "eval_every", "report_to"})
ReportTo = Literal["auto", "tensorboard", "wandb", "mlflow", "none"]


class LoraOptions(BaseModel):
    """Low-rank adapters (Hu et al. 2021, arXiv 2106.09685) through ``peft``; merged into the saved model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    r: int = Field(16, ge=1, le=1024, description="adapter rank")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapter input")
    target_modules: str | tuple[str, ...] = Field("all-linear", description="modules to adapt (peft's names)")


class TrainOptions(BaseModel):
    """What every trainer shares: optimisation, batching, length, saving, precision."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lr: float = Field(1e-5, gt=0, le=1.0, description="peak learning rate (AdamW)")
    epochs: int = Field(1, ge=1, le=1000, description="passes over the training split (when max_steps is unset)")
    max_steps: int | None = Field(None, ge=1, description="optimizer steps to run; overrides epochs")
    batch_size: int = Field(8, ge=1, le=65536, description="rows per optimizer step, over all processes")
    micro_batch_size: int = Field(4, ge=1, le=4096, description="rows per forward pass in one process")
    max_length: int = Field(1024, ge=8, le=131072, description="tokens per sequence; longer completions are cut")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("linear", description="decay after warm-up")
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping norm; 0 turns clipping off")
    seed: int = Field(0, description="seeds the batch order and every random draw of the run")
    save_every: int = Field(100, ge=0, description="steps between resumable checkpoints; 0 = only at the end")
    keep_checkpoints: int = Field(2, ge=1, le=1000, description="newest resumable checkpoints kept on disk")
    eval_every: int = Field(0, ge=0, description="steps between passes over the eval split; 0 = start and end")
    lora: LoraOptions | None = Field(None, description="train low-rank adapters instead of every weight")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto: bf16 on CUDA, fp32 on CPU")
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward to save memory")
    report_to: ReportTo = Field(
        "auto", description="where the metrics also go, through accelerate's trackers: tensorboard (event files in "
        "OUT/tensorboard/RUN) | wandb | mlflow | none; auto = tensorboard when it is installed, else none")

    @model_validator(mode="after")
    def _micro_fits(self) -> TrainOptions:
        if self.micro_batch_size > self.batch_size:
            raise ValueError(f"micro_batch_size {self.micro_batch_size} exceeds batch_size {self.batch_size}")
        return self

    def identity(self) -> dict[str, Any]:
        """The options that define the run (hashed into its id): all but those a resume may change."""
        return self.model_dump(mode="json", exclude=set(RESUMABLE_CHANGES))


class SftOptions(TrainOptions):
    """Supervised fine-tuning on ``sft_dataset`` (the paper's SL-CAI model)."""

    lr: float = Field(2e-5, gt=0, le=1.0, description="peak learning rate (AdamW)")
    rounds: Literal["final", "all"] = Field(
        "final", description="final: each chain's last revision; all: every round's revision (sft_rounds)")
    train_on: Literal["last", "all"] = Field(
        "last", description="assistant turns in the loss: the completion only, or every assistant turn")


class RewardOptions(TrainOptions):
    """A scalar-head reward model trained with the soft-label Bradley-Terry loss on ``preference_dataset``."""

    norm_split: Literal["train", "eval"] = Field(
        "train", description="the reference set whose responses define reward mean 0 and std 1")


# Defaults of beta per loss, with why: the sequence-level losses use DPO's usual 0.1 (Rafailov et al. 2023
# use 0.1-0.5); the length-normalised ones see per-token log-ratios about |y| times smaller, so they take
# SimPO's scale (Meng et al. 2024 report beta 2.0-2.5).
DEFAULT_BETA: dict[str, float] = {"dpo": 0.1, "cdpo": 0.1, "ipo": 0.1, "dpo-norm": 2.0, "simpo": 2.0}


class DpoOptions(TrainOptions):
    """The DPO family on ``preference_dataset``; reference log-probs are computed once, before training."""

    lr: float = Field(1e-6, gt=0, le=1.0, description="peak learning rate (AdamW)")
    loss: PairLossName = Field("dpo", description="dpo | cdpo | ipo | dpo-norm | simpo")
    beta: float | None = Field(None, gt=0, le=1000, description="inverse temperature; None: the loss's default")
    gamma: float = Field(1.0, ge=0, le=100, description="SimPO's target reward margin (simpo only)")
    ref_batch_size: int = Field(8, ge=1, le=4096, description="rows per forward pass of the reference pass")

    @property
    def effective_beta(self) -> float:
        return self.beta if self.beta is not None else DEFAULT_BETA[self.loss]


def parse_options(cls: type[BaseModel], values: dict[str, Any], what: str = "training option") -> Any:
    """Build ``cls`` from ``values`` (None means "the default"); a bad value is one ``ConfigError`` line."""
    given = {k: v for k, v in values.items() if v is not None}
    try:
        return cls(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "options"
        got = f" (got {err['input']!r})" if field != "options" and not isinstance(err["input"], dict) else ""
        raise ConfigError(f"{what} {field}: {err['msg']}{got}") from None
