"""The judge's options: which mode, how many principles, and the few numbers each mode needs.

One small pydantic model (STYLE.md habit 8) with help text and validated ranges, for the CLI, the flows and the
eval alike. Every field that changes a verdict is part of ``JudgeConfig.fingerprint``, which goes into each
comparison's id: a changed option makes new rows, never overwrites old ones.
"""

from __future__ import annotations

import functools
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from rlaif.engines.base import content_hash

Mode = Literal["choice", "cot", "score", "contrast"]
MODES: tuple[Mode, ...] = ("choice", "cot", "score", "contrast")

# Each engine's default mode is what `rlaif judge eval --dev` chose on the shipped set's dev split, recorded in
# this file (regenerate it with `--write-defaults`); docs/judge.md has the figures. An engine not in it: "choice".
DEFAULTS_FILE = ("data", "judge_defaults.json")
FALLBACK_MODE: Mode = "choice"


@functools.lru_cache(maxsize=1)
def measured_defaults() -> dict[str, dict]:
    """The shipped measurements, by engine name: ``mode``, ``signal``, ``model``, the figures and the command."""
    from rlaif.resources import package_file

    path = package_file(*DEFAULTS_FILE)
    return json.loads(path.read_text(encoding="utf-8")).get("engines", {}) if path.exists() else {}


def default_mode(engine_name: str) -> Mode:
    """The mode `judge eval --dev` chose for this engine (the one whose lower bound beat every baseline, or the
    best of modes that all failed to)."""
    mode = measured_defaults().get(engine_name, {}).get("mode", FALLBACK_MODE)
    return mode if mode in MODES else FALLBACK_MODE


def default_has_signal(engine_name: str) -> bool:
    """Whether this engine's default mode was measured above every baseline that cannot read (its agreement's
    95% lower bound beat the best of always-longer, always-shorter, word overlap and slot (A) on the dev split).
    False for an engine never measured."""
    return bool(measured_defaults().get(engine_name, {}).get("signal", False))


def mode_has_signal(engine_name: str, mode: str) -> bool:
    """The same for any mode that `judge eval --dev` measured on this engine (False when not measured)."""
    entry = measured_defaults().get(engine_name, {})
    return bool(entry.get("modes", {}).get(mode, {}).get("signal", False))


def signal_warning(engine_name: str, mode: str) -> str | None:
    """One line for a run's summary when it labels with a judge that carries no measured signal, else None."""
    if mode_has_signal(engine_name, mode):
        return None
    entry = measured_defaults().get(engine_name)
    where = f"on {entry.get('model')}" if entry else "(never measured on this engine)"
    return (f"warning: the {mode} judge carries no measured signal {where}: it did not beat the baselines that "
            "cannot read (docs/judge.md); treat these labels as unvalidated")


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
