"""Engines: one protocol (``base.Engine``), one module per backend, imported only when selected.

``create_engine(settings, role)`` is the one place that maps a role's ``engine`` setting to a backend, so
selecting ``openai`` never imports torch and selecting ``transformers`` never imports vLLM. ``open_engines``
builds both roles, sharing one instance when they resolve to the same engine settings: the embedded default
loads one model, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.engines.base import Engine

# The policy answers prompts (and is what training improves); the feedback model critiques, revises and labels;
# the eval model judges trained policies (win rates, the RL monitor), ideally neither of the other two.
Role = Literal["policy", "feedback", "eval"]
ROLES: tuple[Role, ...] = ("policy", "feedback", "eval")


def create_engine(settings: "Settings", role: Role = "policy") -> "Engine":
    """Build the engine of ``role`` from its effective settings (``settings.policy`` / ``settings.feedback``)."""
    chosen = settings.for_role(role)  # engine constructors read the flat fields
    if chosen.engine == "transformers":
        from rlaif.engines.transformers_engine import TransformersEngine

        return TransformersEngine.from_settings(chosen)
    if chosen.engine == "openai":
        from rlaif.engines.openai_engine import OpenAIEngine

        return OpenAIEngine.from_settings(chosen)
    if chosen.engine == "vllm":
        from rlaif.engines.vllm_engine import VLLMEngine

        return VLLMEngine.from_settings(chosen)
    if chosen.engine == "fake":
        from rlaif.engines.fake import FakeEngine

        return FakeEngine(model=chosen.model, keep_requests=False)  # nobody reads its log from settings
    raise ValueError(f"unknown engine {chosen.engine!r}")  # Settings validation makes this unreachable


@dataclass(frozen=True)
class Engines:
    """The engine of each role; ``policy is feedback`` when both roles share one instance."""

    policy: "Engine"
    feedback: "Engine"

    @property
    def shared(self) -> bool:
        return self.policy is self.feedback

    async def aclose(self) -> None:
        """Close each distinct engine once."""
        await self.policy.aclose()
        if not self.shared:
            await self.feedback.aclose()


def open_engines(settings: "Settings") -> Engines:
    """Build both roles' engines; one instance when ``settings.policy == settings.feedback``."""
    policy = create_engine(settings, "policy")
    if settings.role("feedback") == settings.role("policy"):
        return Engines(policy, policy)
    return Engines(policy, create_engine(settings, "feedback"))
