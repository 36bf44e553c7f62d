"""The one library call behind ``rlaif train sft|rm|dpo`` and the training flow.

It turns plain option values into the trainer's validated options, finds the base model's folder (never a
download), opens the project database and runs the trainer. Under ``accelerate launch`` every process calls it;
the session makes only the main process read the database and write to it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlaif.errors import ConfigError
from rlaif.train.options import DpoOptions, LoraOptions, RewardOptions, SftOptions, TrainOptions, parse_options

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.train.session import TrainResult

KINDS: dict[str, type[TrainOptions]] = {"sft": SftOptions, "rm": RewardOptions, "dpo": DpoOptions}


def is_main_process() -> bool:
    """True outside ``accelerate launch``/``torchrun`` and on their rank 0 (they set RANK)."""
    return int(os.environ.get("RANK", "0")) == 0


def policy_model(settings: Settings) -> str:
    """The model the policy role runs, which training starts from by default (one place for per-role settings)."""
    role = getattr(settings, "policy", None)
    return str(getattr(role, "model", None) or settings.model)


def build_options(kind: str, values: dict[str, Any]) -> TrainOptions:
    """Validated options of trainer ``kind`` from plain values (None = default; ``lora`` True = default LoRA)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown trainer {kind!r}; expected one of: {', '.join(KINDS)}")
    values = dict(values)
    lora = values.pop("lora", None)
    lora_values = {k.removeprefix("lora_"): values.pop(k) for k in list(values) if k.startswith("lora_")}
    if lora:
        values["lora"] = LoraOptions(**{k: v for k, v in lora_values.items() if v is not None})
    return parse_options(KINDS[kind], values)


def run_train(settings: Settings, kind: str, *, out: Path, model: str | None = None,
              options: dict[str, Any] | TrainOptions | None = None, log: Callable[[str], None] = print,
              prefect_flow_run_id: str | None = None) -> TrainResult:
    """Train ``kind`` ('sft' | 'rm' | 'dpo') on ``settings.db`` from ``model`` (default: the policy model)."""
    from rlaif.store import Store
    from rlaif.train.models import base_model_path

    opts = options if isinstance(options, TrainOptions) else build_options(kind, options or {})
    base = model or policy_model(settings)
    base_path = base_model_path(base, settings.cache_dir)
    trainer = _trainer(kind)
    return trainer(Store(settings.db), options=opts, base_model=base, base_path=base_path, out_dir=Path(out),
                   device=settings.device, log=log if is_main_process() else (lambda _: None),
                   prefect_flow_run_id=prefect_flow_run_id)


def _trainer(kind: str) -> Callable[..., TrainResult]:
    if kind == "sft":
        from rlaif.train.sft import train_sft

        return train_sft
    if kind == "rm":
        from rlaif.train.reward_model import train_reward_model

        return train_reward_model
    from rlaif.train.dpo import train_dpo

    return train_dpo
