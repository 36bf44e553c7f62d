"""Stage 1: the policy's initial response to a prompt.

Bai et al. 2022 ("Constitutional AI", arXiv 2212.08073, section 3.1) start from a helpful-only model's answer to
a red-team prompt, then critique and revise it, and mix in answers to helpfulness prompts unrevised.
Kept: the answer comes from the policy (whatever engine that role is configured to), and prompts marked helpful
keep it as their SFT completion. Changed: the constitution may put a system prompt in front of the conversation
(the paper used none), and a prompt too long for the policy's context is skipped with its reason recorded
instead of being truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlaif.constitution import Constitution
from rlaif.engines.base import ChatRequest, Completion, Engine, Message
from rlaif.prompts import PromptRow
from rlaif.stages import Overflow, RunContext, chat_request, clean_output, opening_turns, send_if_fits
from rlaif.store import utcnow

STAGE = "respond"


def response_messages(prompt: PromptRow, constitution: Constitution) -> list[Message]:
    """Input: a prompt row. Output: the chat messages that ask for the first answer (system turn first)."""
    system, turns = opening_turns(constitution, prompt.messages)
    return system + turns


def response_request(ctx: RunContext, prompt: PromptRow, model: str) -> ChatRequest:
    """The seeded request for ``prompt``'s first answer."""
    return chat_request(response_messages(prompt, ctx.constitution), ctx.seeded(prompt.prompt_id, STAGE), model,
                        STAGE, prompt.prompt_id)


@dataclass
class Response:
    """The first answer of one prompt's chain. ``completion`` is None when the request was not sent."""

    prompt: PromptRow
    chain_id: str
    request: ChatRequest
    completion: Completion | None
    overflow: Overflow | None = None

    @property
    def text(self) -> str | None:
        return clean_output(self.completion.text) if self.completion is not None and self.completion.ok else None

    @property
    def error(self) -> str | None:
        """An engine failure to retry next run; None when it succeeded, came back empty, or cannot fit."""
        if self.overflow is not None or self.completion is None:
            return None
        return self.completion.error


async def respond(ctx: RunContext, prompt: PromptRow, engine: Engine) -> Response:
    """Ask the policy for the initial response; failures come back in the Response, never as exceptions."""
    request = response_request(ctx, prompt, engine.model)
    chain = ctx.chain_id(prompt.prompt_id)
    completion, overflow = await send_if_fits(engine, request)
    return Response(prompt, chain, request, completion, overflow)


def response_row(ctx: RunContext, response: Response, *, helpful: bool) -> dict:
    """The ``responses`` row (storage/004_sft.sql) of an answer that came back, empty or not."""
    c = response.completion
    assert c is not None and c.ok, "only answers that came back are stored"
    return {
        "chain_id": response.chain_id, "run_id": ctx.run_id, "prompt_id": response.prompt.prompt_id,
        "response_key": c.key, "response": response.text, "helpful": helpful,
        "rounds": 0 if helpful else ctx.rounds, "context": ctx.context, "finish_reason": c.finish_reason,
        "model": c.model, "config_hash": ctx.config_hash, "constitution_name": ctx.constitution.name,
        "constitution_version": ctx.constitution_version, "created_at": utcnow(),
    }
