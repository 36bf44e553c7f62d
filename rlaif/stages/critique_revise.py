"""Stage 2: critique-and-revise rounds, the supervised phase of Constitutional AI.

Bai et al. 2022 (arXiv 2212.08073, section 3.1): the model is shown a conversation, asked to critique its last
response against one principle, then asked to rewrite the response in light of the critique; the revision can be
critiqued again with a freshly sampled principle, and few-shot examples of the procedure come first.

Kept from the paper: one principle drawn at random per round (with replacement, weighted here by the YAML
``weight``), the critique request -> critique -> revision request -> revision order, few-shot exemplars placed
before the conversation, and (``context="transcript"``, the default) one growing conversation: round n sees every
earlier critique request, critique, revision request and revision.
Changed: the paper wrote the exchange as one raw transcript ("Critique Request: ... Critique: ..."); chat models
get it as alternating user/assistant turns. ``context="fresh"`` starts each round from a new conversation holding
only the latest revision as the assistant's answer, for models whose context cannot hold the whole history. The
critic and reviser is the feedback role, which may be another model than the policy that wrote the answer (the
paper used one model). Principle draws are seeded per (run seed, prompt, round), so they do not depend on the
order prompts run in or on where a resumed run restarts. A conversation that would overflow the model's context
ends the chain with that reason recorded; an engine failure ends it without a row, so the next run retries it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from rlaif.constitution import Constitution, Principle, render
from rlaif.engines.base import ChatRequest, Completion, Engine, Message, content_hash
from rlaif.prompts import PromptRow
from rlaif.stages import Overflow, RunContext, chat_request, clean_output, opening_turns, send_if_fits
from rlaif.store import utcnow

__all__ = [
    "Revisions", "Round", "clean_output", "critique_messages", "critique_request", "critique_revise",
    "draw_principle", "fewshot_turns", "revision_messages", "revision_request", "revision_rows",
]


@dataclass
class Round:
    """One critique/revision round. ``before`` is the text that was critiqued."""

    number: int
    principle_id: str
    before: str
    critique: Completion
    revision: Completion | None  # None when the critique came back empty
    revision_request: ChatRequest | None = None  # where a transcript's next round continues

    @property
    def revised_text(self) -> str | None:
        return clean_output(self.revision.text) if self.revision and self.revision.ok else None


@dataclass
class Revisions:
    """The rounds of one chain that came back, and why the chain stopped early, if it did."""

    rounds: list[Round] = field(default_factory=list)
    target: int = 1  # the rounds the run asked for
    error: str | None = None  # an engine failure; that round has no row, so a rerun retries it
    failed_at: str | None = None  # where: "round 2 revise"
    overflow: Overflow | None = None  # the conversation outgrew the context; the prompt is skipped from here
    overflow_stage: str | None = None

    @property
    def final(self) -> str | None:
        """The last revision when every asked-for round produced one, else None."""
        if len(self.rounds) != self.target:
            return None
        return self.rounds[-1].revised_text


# -- principles and messages -------------------------------------------------------------------------------------


def draw_principle(constitution: Constitution, run_seed: int, prompt_id: str, round_number: int) -> Principle:
    """Draw one principle with replacement, by weight, seeded by (run seed, prompt, round) alone."""
    rng = random.Random(content_hash("principle", run_seed, prompt_id, round_number))
    weights = [p.weight for p in constitution.principles]
    return rng.choices(constitution.principles, weights=weights, k=1)[0]


def fewshot_turns(constitution: Constitution) -> list[Message]:
    """The constitution's worked examples as prior turns: prompt, answer, critique request, critique, ..."""
    turns: list[Message] = []
    for ex in constitution.fewshot.critique_revision:
        principle = constitution.principle(ex.principle)
        turns += [
            {"role": "user", "content": ex.prompt},
            {"role": "assistant", "content": ex.response},
            {"role": "user", "content": render(constitution.templates.critique,
                                               critique_request=principle.critique_request)},
            {"role": "assistant", "content": ex.critique},
            {"role": "user", "content": render(constitution.templates.revision,
                                               revision_request=principle.revision_request, critique=ex.critique)},
            {"role": "assistant", "content": ex.revision},
        ]
    return turns


def critique_messages(constitution: Constitution, prompt: PromptRow, answer: str, principle: Principle,
                      fewshot: tuple[Message, ...] | None = None) -> list[Message]:
    """Input: prompt, the answer to critique, a principle. Output: a new conversation ending in the critique
    request: the system turn (if any), the exemplars, the prompt's turns, the answer, the request.

    ``fewshot`` is the constitution's rendered exemplars when the caller has them already (``RunContext``).
    """
    system, turns = opening_turns(constitution, prompt.messages)
    return [
        *system,
        *(fewshot if fewshot is not None else fewshot_turns(constitution)),
        *turns,
        {"role": "assistant", "content": answer},
        _critique_turn(constitution, principle),
    ]


def revision_messages(constitution: Constitution, critique_msgs: list[Message], critique: str,
                      principle: Principle) -> list[Message]:
    """Input: the critique conversation and its critique. Output: messages ending in the revision request."""
    return [
        *critique_msgs,
        {"role": "assistant", "content": critique},
        {"role": "user", "content": render(constitution.templates.revision,
                                           revision_request=principle.revision_request, critique=critique)},
    ]


def _critique_turn(constitution: Constitution, principle: Principle) -> Message:
    return {"role": "user", "content": render(constitution.templates.critique,
                                              critique_request=principle.critique_request)}


def critique_request(ctx: RunContext, prompt: PromptRow, number: int, current: str, previous: Round | None,
                     model: str) -> tuple[ChatRequest, Principle]:
    """Round ``number``'s critique request of ``current``, and the principle drawn for the round.

    Transcript mode continues the previous round's revision conversation with the revision as the assistant's
    turn; fresh mode (and round 1) start a new conversation from the prompt.
    """
    principle = draw_principle(ctx.constitution, ctx.seed, prompt.prompt_id, number)
    if ctx.context == "transcript" and previous is not None and previous.revision_request is not None:
        messages = [*previous.revision_request.messages, {"role": "assistant", "content": current},
                    _critique_turn(ctx.constitution, principle)]
    else:
        messages = critique_messages(ctx.constitution, prompt, current, principle, ctx.fewshot)
    params = ctx.seeded(prompt.prompt_id, "critique", number)
    return chat_request(messages, params, model, "critique", prompt.prompt_id), principle


def revision_request(ctx: RunContext, prompt: PromptRow, number: int, critique_req: ChatRequest, critique: str,
                     principle: Principle, model: str) -> ChatRequest:
    """Round ``number``'s revision request, continuing the critique conversation."""
    messages = revision_messages(ctx.constitution, list(critique_req.messages), critique, principle)
    params = ctx.seeded(prompt.prompt_id, "revise", number)
    return chat_request(messages, params, model, "revise", prompt.prompt_id)


# -- calling the engine ------------------------------------------------------------------------------------------


async def critique_revise(ctx: RunContext, prompt: PromptRow, answer: str, engine: Engine) -> Revisions:
    """Run ``ctx.rounds`` critique/revision rounds on ``answer``; stops early at an empty output, a failed call
    or a conversation that no longer fits the context."""
    out = Revisions(target=ctx.rounds)
    current, previous = answer, None
    for number in range(1, ctx.rounds + 1):
        c_req, principle = critique_request(ctx, prompt, number, current, previous, engine.model)
        critique = await _send(out, engine, c_req, f"round {number} critique")
        if critique is None:
            return out
        critique_text = clean_output(critique.text)
        if critique_text is None:
            out.rounds.append(Round(number, principle.id, current, critique, None))
            return out
        r_req = revision_request(ctx, prompt, number, c_req, critique_text, principle, engine.model)
        revision = await _send(out, engine, r_req, f"round {number} revise")
        if revision is None:
            return out
        out.rounds.append(Round(number, principle.id, current, critique, revision, r_req))
        previous, current = out.rounds[-1], out.rounds[-1].revised_text
        if current is None:
            return out
    return out


async def _send(out: Revisions, engine: Engine, request: ChatRequest, where: str) -> Completion | None:
    """The completion, or None after noting on ``out`` why the chain stops (overflow or failure)."""
    completion, overflow = await send_if_fits(engine, request)
    if completion is not None and completion.ok:
        return completion
    if overflow is None:
        assert completion is not None  # not sent only when it cannot fit
        out.error, out.failed_at = completion.error, where
        return None
    out.overflow, out.overflow_stage = overflow, request.stage
    return None


def revision_rows(ctx: RunContext, chain_id: str, prompt: PromptRow, original: str, response_key: str,
                  revisions: Revisions, *, policy_model: str) -> list[dict]:
    """The ``revisions`` rows of the rounds that came back; ``model`` is the feedback model that wrote them."""
    rows = []
    for r in revisions.rounds:
        rows.append({
            "chain_id": chain_id, "round": r.number, "run_id": ctx.run_id, "prompt_id": prompt.prompt_id,
            "principle_id": r.principle_id, "original": original, "before": r.before,
            "critique": clean_output(r.critique.text), "revision": r.revised_text, "response_key": response_key,
            "critique_key": r.critique.key, "revision_key": r.revision.key if r.revision is not None else None,
            "constitution_name": ctx.constitution.name, "constitution_version": ctx.constitution_version,
            "model": r.critique.model, "policy_model": policy_model, "created_at": utcnow(),
        })
    return rows
