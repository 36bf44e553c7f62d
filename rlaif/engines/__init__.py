"""Engines: one protocol (``base.Engine``), one module per backend, imported only when selected.

``create_engine(settings)`` is the one place that maps ``RLAIF_ENGINE`` to a backend, so selecting ``openai``
never imports torch and selecting ``transformers`` never imports vLLM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.engines.base import Engine

# The policy answers prompts (and is what training improves); the feedback model critiques, revises and judges.
Role = Literal["policy", "feedback"]


def create_engine(settings: "Settings", role: Role = "policy") -> "Engine":
    """Build the engine of ``role``. Both roles read the flat engine settings until per-role settings exist."""
    if settings.engine == "transformers":
        from rlaif.engines.transformers_engine import TransformersEngine

        return TransformersEngine.from_settings(settings)
    if settings.engine == "openai":
        from rlaif.engines.openai_engine import OpenAIEngine

        return OpenAIEngine.from_settings(settings)
    if settings.engine == "vllm":
        from rlaif.engines.vllm_engine import VLLMEngine

        return VLLMEngine.from_settings(settings)
    if settings.engine == "fake":
        from rlaif.engines.fake import FakeEngine

        return FakeEngine(model=settings.model)
    raise ValueError(f"unknown engine {settings.engine!r}")  # Settings validation makes this unreachable
