"""Options of the RL trainers: ``TrainOptions`` plus three small groups (rollouts, the update, the KL penalty).

``batch_size`` (from ``TrainOptions``) is the number of *rollouts* per update, ``samples`` per prompt, so each
update answers ``batch_size / samples`` prompts; ``micro_batch_size`` is the rows of one forward pass. ``epochs``
(the passes over the prompts when ``max_steps`` is unset) is not ``update.epochs`` (PPO's passes over one batch).

Defaults that differ per estimator (``ESTIMATOR_DEFAULTS``) are filled in for the fields a user leaves out:
PPO samples once per prompt and makes 4 passes over its batch (N+ details, Huang et al. 2024, arXiv
2403.17031), with Ziegler et al. 2019's adaptive KL controller (target 6 nats, horizon 10,000); the
group-relative estimators sample 4 per prompt, make one pass, and use GRPO's fixed beta 0.04 (Shao et al. 2024).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlaif.train.options import TrainOptions

EstimatorName = Literal["ppo", "grpo", "rloo"]


class RolloutOptions(BaseModel):
    """How rollouts are sampled from the policy (pure temperature sampling: no top-k, no top-p)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(1, ge=1, le=256, description="responses sampled per prompt (K); group-relative needs >= 2")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="tokens per response; longer ones are cut")
    temperature: float = Field(0.7, gt=0.0, le=2.0, description="sampling temperature; log-probs use the same")
    batch_size: int = Field(16, ge=1, le=4096, description="sequences per generate call")
    engine: Literal["generate", "vllm"] = Field(
        "generate", description="who samples: generate (transformers, in the trainer) | vllm (a vLLM server the "
        "trainer pushes each update to; rlaif.train.rl_vllm)")


class UpdateOptions(BaseModel):
    """The optimisation over one rollout batch (PPO's clipped objective; the value fields are PPO's only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(4, ge=1, le=64, description="passes over one rollout batch")
    minibatches: int = Field(1, ge=1, le=1024, description="optimizer steps per pass (the batch is split)")
    clip: float = Field(0.2, gt=0.0, le=10.0, description="policy ratio clip range epsilon")
    vf_clip: float = Field(0.2, gt=0.0, le=100.0, description="value clip range (PPO)")
    vf_coef: float = Field(0.1, ge=0.0, le=100.0, description="value loss weight in the shared trunk (PPO)")
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="discount (PPO)")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda (PPO)")
    whiten: bool = Field(True, description="whiten PPO's advantages over the batch")


class KlOptions(BaseModel):
    """The KL penalty to the frozen reference and its controller (Ziegler et al. 2019, section 2.2)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    coef: float = Field(0.05, ge=0.0, le=100.0, description="initial KL coefficient beta")
    target: float | None = Field(6.0, ge=0.0, description="adaptive controller's target KL in nats; 0 or None = fixed")
    horizon: float = Field(10_000.0, gt=0.0, description="controller horizon, in rollouts")

    @field_validator("target")
    @classmethod
    def _zero_is_fixed(cls, value: float | None) -> float | None:
        return value or None


ESTIMATOR_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "ppo": {"rollout": {"samples": 1}, "update": {"epochs": 4}, "kl": {"coef": 0.05, "target": 6.0}},
    "grpo": {"rollout": {"samples": 4}, "update": {"epochs": 1}, "kl": {"coef": 0.04, "target": None}},
    "rloo": {"rollout": {"samples": 4}, "update": {"epochs": 1}, "kl": {"coef": 0.05, "target": None}},
}


class RlOptions(TrainOptions):
    """PPO or group-relative RL on prompts, against the rewards named in ``rewards``."""

    lr: float = Field(3e-6, gt=0, le=1.0, description="peak learning rate (AdamW; N+ details use 3e-6)")
    lr_schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="decay after warm-up")
    batch_size: int = Field(16, ge=1, le=65536, description="rollouts per update (prompts x samples)")
    estimator: EstimatorName = Field("ppo", description="ppo | grpo | rloo")
    rewards: tuple[str, ...] = Field(..., min_length=1, description="reward specs: rm:CKPT, judge, rule:mod:fn")
    eos_penalty: float = Field(1.0, ge=0.0, le=100.0, description="subtracted from a response without EOS")
    monitor_every: int = Field(0, ge=0, description="steps between over-optimisation measurements; 0 = start, end")
    monitor_prompts: int = Field(16, ge=0, le=4096, description="held-out prompts the monitor answers; 0 = off")
    rollout: RolloutOptions = Field(default_factory=RolloutOptions)
    update: UpdateOptions = Field(default_factory=UpdateOptions)
    kl: KlOptions = Field(default_factory=KlOptions)

    @model_validator(mode="before")
    @classmethod
    def _estimator_defaults(cls, values: Any) -> Any:
        """Fill the per-estimator defaults into the groups for every field the user left out."""
        if not isinstance(values, dict):
            return values
        defaults = ESTIMATOR_DEFAULTS.get(values.get("estimator", "ppo"), {})
        out = dict(values)
        for group, fields in defaults.items():
            given = out.get(group)
            if not isinstance(given, BaseModel):  # a built group is taken as it is
                out[group] = {**fields, **(given or {})}
        return out

    @model_validator(mode="after")
    def _shapes(self) -> RlOptions:
        k = self.rollout.samples
        if self.estimator != "ppo" and k < 2:
            raise ValueError(f"{self.estimator} takes its baseline from the group: rollout.samples must be >= 2, "
                             f"got {k}")
        if self.batch_size % k:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of rollout.samples {k}")
        if self.batch_size % self.update.minibatches:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of update.minibatches "
                             f"{self.update.minibatches}")
        return self

    def identity(self) -> dict[str, Any]:
        """As ``TrainOptions.identity``; the monitor's cadence may change on a resume too."""
        ident = super().identity()
        ident.pop("monitor_every", None)
        return ident

    @property
    def prompts_per_step(self) -> int:
        return self.batch_size // self.rollout.samples
