"""The judge's options: which mode, how many principles, and the few numbers each mode needs.

One small pydantic model (STYLE.md habit 8) with help text and validated ranges, for the CLI, the flows and the
eval alike. Every field that changes a verdict is part of ``JudgeConfig.fingerprint``, which goes into each
comparison's id: a changed option makes new rows, never overwrites old ones.
"""

from __future__ import annotations

import functools
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlaif.engines.base import content_hash

Mode = Literal["choice", "cot", "score", "contrast"]
MODES: tuple[Mode, ...] = ("choice", "cot", "score", "contrast")

# Each engine's default mode, chosen by measuring `rlaif judge eval` on SmolLM2 (docs/judge.md, "Which mode").
DEFAULT_MODES: dict[str, Mode] = {"transformers": "contrast", "openai": "contrast", "vllm": "contrast",
                                  "fake": "choice"}


def default_mode(engine_name: str) -> Mode:
    return DEFAULT_MODES.get(engine_name, "choice")


class JudgeConfig(BaseModel):
    """Options of the AI judge; the defaults are the documented ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Mode = Field("choice", description="choice | cot | score | contrast")
    principles: int = Field(1, ge=1, le=16, description="judge principles sampled per pair (an ensemble)")
    cot_max_tokens: int = Field(160, ge=8, le=2048, description="tokens of a chain-of-thought rationale")
    cot_temperature: float = Field(0.0, ge=0.0, le=2.0, description="sampling temperature of the rationale")
    score_temperature: float = Field(1.0, gt=0.0, le=100.0,
                                     description="rating points per logistic unit: p(a>b) from two 1-10 scores")
    contrast_temperature: float = Field(0.2, gt=0.0, le=100.0,
                                        description="nats per token per logistic unit: p(a>b) from two PMI scores")

    def fingerprint(self) -> str:
        """A hash of the options that change this mode's verdicts (``principles`` only changes which rows exist)."""
        relevant = {"choice": (), "cot": ("cot_max_tokens", "cot_temperature"), "score": ("score_temperature",),
                    "contrast": ("contrast_temperature",)}[self.mode]
        return content_hash("judge-config", self.mode, {k: getattr(self, k) for k in relevant}, length=16)


@functools.lru_cache(maxsize=None)
def default_config(engine_name: str) -> JudgeConfig:
    """The documented options in the engine's default mode: what the SFT run's comparisons and the win-rate
    evaluation judge with. One frozen instance per engine name serves every pair."""
    return JudgeConfig(mode=default_mode(engine_name))
