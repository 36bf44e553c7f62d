"""The judge's part of a constitution file: the optional ``judge:`` block and per-principle judge fields.

Kept apart from ``rlaif.constitution`` (which imports these models) so that the judge's prompt formats live next
to the judge. Everything here is optional: a constitution without a ``judge:`` block still judges in the
multiple-choice mode of ``templates.judge``; the other modes say which field they need when it is missing.

Validation errors come back as ``file:line: judge.contrast.framing.user: ...`` like every constitution error,
because ``rlaif.constitution`` walks these models' locations through the YAML tree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# For each judge template: (placeholders it must use, placeholders it may use).
JUDGE_TEMPLATE_FIELDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "candidate": (frozenset({"text"}), frozenset({"text"})),
    "cot": (
        frozenset({"conversation", "question", "response_a", "response_b"}),
        frozenset({"conversation", "question", "response_a", "response_b"}),
    ),
    "cot_answer": (frozenset(), frozenset()),
    "score": (frozenset({"conversation", "question", "response"}), frozenset({"conversation", "question", "response"})),
    "framing_user": (frozenset(), frozenset({"prompt", "statement", "contrary"})),
    "framing_system": (frozenset(), frozenset({"statement", "contrary"})),
}
# What a framing template may take from its judge principle: ``{statement}`` (what the principle prefers, said of
# a response) and ``{contrary}`` (its opposite). ``rlaif.judge.prompts.framings`` fills them per principle.
PRINCIPLE_FIELDS = ("statement", "contrary")
ENDS_WITH_PAREN = frozenset({"cot_answer", "score"})  # the next token is read: a letter or a digit after "("


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check(name: str, value: str) -> str:
    from rlaif.constitution import check_placeholders, render  # constitution imports this module first

    required, allowed = JUDGE_TEMPLATE_FIELDS[name]
    check_placeholders(value, required, allowed)
    if name in ENDS_WITH_PAREN:
        rendered = render(value, **{f: "x" for f in allowed})
        if not rendered.endswith("("):
            raise ValueError(f"must end with '(' so that the next token is read; it ends with {rendered[-20:]!r}")
    return value


class Framing(_Model):
    """How the likelihood-contrast mode frames a conversation: an optional system turn and the last user turn.

    ``user`` replaces the conversation's last user turn; ``{prompt}`` is that turn's text. A framing without
    ``{prompt}`` hides the request, which makes the contrast a relevance measure (domain-conditional PMI). Both
    may use ``{statement}`` and ``{contrary}``, filled from each judge principle: one template in the
    constitution then gives every principle its own framing.
    """

    system: str | None = Field(None, description="system message under this framing; null for none; may use "
                                                 "{statement} and {contrary} of the judge principle")
    user: str = Field("{prompt}", min_length=1, description="the last user turn; {prompt} is the original text")

    @field_validator("system")
    @classmethod
    def _system_placeholders(cls, value: str | None) -> str | None:
        return None if value is None else _check("framing_system", value)

    @field_validator("user")
    @classmethod
    def _user_placeholders(cls, value: str) -> str:
        return _check("framing_user", value)


class Contrast(_Model):
    """The two framings of the likelihood-contrast mode, for principles that do not set their own."""

    framing: Framing = Field(default_factory=Framing, description="the principle's framing (the numerator)")
    baseline: Framing = Field(description="the neutral or contrary framing subtracted from it")


class JudgeFormats(_Model):
    """The judge's optional prompt formats (the multiple-choice prompt itself is ``templates.judge``)."""

    candidate: str | None = Field(None, description="how a candidate is fenced in a prompt; {text} is the candidate")
    cot: str | None = Field(None, description="chain-of-thought prompt: like templates.judge, ending with the cue")
    cot_answer: str | None = Field(None, description="after the rationale, up to the '(' before the letter")
    score: str | None = Field(None, description="1-10 rating prompt, ending with '('; {response} is one candidate")
    contrast: Contrast | None = Field(None, description="framings of the likelihood-contrast mode")

    @field_validator("candidate", "cot", "cot_answer", "score")
    @classmethod
    def _templates(cls, value: str | None, info: Any) -> str | None:
        return None if value is None else _check(info.field_name, value)

    @field_validator("candidate")
    @classmethod
    def _fence_has_delimiters(cls, value: str | None) -> str | None:
        if value is not None:
            before, _, after = value.partition("{text}")
            if not before.strip() or not after.strip():
                raise ValueError("needs visible delimiters on both sides of {text}, e.g. '<<<{text}>>>'")
        return value
