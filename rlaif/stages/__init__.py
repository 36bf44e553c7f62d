"""Pipeline stages: small functions from rows to rows, with the engine passed in.

Each module builds its requests in one set of functions and calls the engine in another, so the exact message
sequences can be tested without a model, and benchmarks can build the same requests. A stage owns its requests,
its seeds and the rows it produces; ``rlaif.pipeline`` only schedules stages and hands their rows to the writer.
Prompt text comes from the constitution's templates, never from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rlaif.engines.base import ChatRequest, Message, SamplingParams, chat_key, content_hash

if TYPE_CHECKING:
    from rlaif.constitution import Constitution
    from rlaif.engines.base import Completion
    from rlaif.options import ContextMode


def derive_seed(run_seed: int, *parts: object) -> int:
    """A per-request seed from the run seed and the request's place (prompt, stage, round).

    Seeds depend only on what a request is, never on the order requests run in, so a resumed or re-ordered run
    asks for the same seeds. Whether a seed then gives the same sample depends on the engine and its dtype: yes
    for vLLM in float32, not across batches for vLLM in bfloat16 or for transformers (docs/engines.md, "Seeds").
    """
    return int(content_hash("seed", run_seed, *parts)[:8], 16)


@dataclass(frozen=True)
class RunContext:
    """What every stage of one run needs besides its engine and its prompt."""

    run_id: str
    seed: int  # the run seed; every request's seed derives from it
    constitution: "Constitution"
    params: SamplingParams  # the run's sampling options; stages add each request's seed
    config_hash: str  # rlaif.runs.config_hash of the run's configuration
    rounds: int = 1
    context: "ContextMode" = "transcript"
    # Computed once per run: a constitution's version hashes its whole content, and its few-shot turns are the
    # same rendered text in every critique request.
    constitution_version: str = field(init=False, repr=False)
    fewshot: tuple[Message, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from rlaif.stages.critique_revise import fewshot_turns

        object.__setattr__(self, "constitution_version", self.constitution.version)
        object.__setattr__(self, "fewshot", tuple(fewshot_turns(self.constitution)))

    def seeded(self, *place: object) -> SamplingParams:
        """The run's sampling options with the seed of the request at ``place`` (prompt id, stage, round)."""
        p = self.params  # built directly: dataclasses.replace costs ~10x more, once per request
        return SamplingParams(p.temperature, p.top_p, p.max_tokens, derive_seed(self.seed, *place), p.stop,
                              p.ignore_eos)

    def chain_id(self, prompt_id: str) -> str:
        """The id of a prompt's chain in this configuration: same prompt and configuration, same rows."""
        return content_hash("chain", prompt_id, self.config_hash)


def chat_request(messages: list[Message], params: SamplingParams, model: str, stage: str,
                 prompt_id: str) -> ChatRequest:
    return ChatRequest(chat_key(messages, params, model), tuple(messages), params, stage, prompt_id)


# -- does a request fit the model's context? ---------------------------------------------------------------------

# What OpenAI-compatible servers (vLLM, OpenAI) say when a prompt plus max_tokens exceeds the context window.
_SERVER_OVERFLOW = re.compile(r"maximum context length|context length is|context_length_exceeded|too many tokens",
                              re.IGNORECASE)


@dataclass(frozen=True)
class Overflow:
    """A request that cannot fit: ``tokens`` prompt tokens plus ``max_tokens`` new ones over ``limit``."""

    reason: str
    tokens: int | None = None
    limit: int | None = None


def check_fits(engine: Any, request: ChatRequest) -> Overflow | None:
    """Count the request's tokens with the engine's tokenizer, when it has one, against its context length.

    Engines without a tokenizer (a remote server) are not asked; their own context-length error is recognised
    afterwards by ``overflow_from_error``.
    """
    count = getattr(engine, "count_tokens", None)
    limit = getattr(engine, "context_length", None)
    if count is None or not limit:
        return None
    tokens = count(list(request.messages))
    if tokens + request.params.max_tokens <= limit:
        return None
    return Overflow(f"{tokens} prompt tokens + {request.params.max_tokens} new exceed the context of {limit}",
                    tokens, limit)


def overflow_from_error(error: str | None) -> Overflow | None:
    """A failed request whose error is the server's context-length refusal: a property of the prompt, not a fault."""
    if error and _SERVER_OVERFLOW.search(error):
        return Overflow(error)
    return None


async def send_if_fits(engine: Any, request: ChatRequest) -> tuple["Completion | None", Overflow | None]:
    """Send ``request`` unless it cannot fit the engine's context. Returns the completion (None when it was not
    sent) and the overflow: found before sending (``check_fits``) or in the server's refusal (``overflow_from_error``).
    """
    overflow = check_fits(engine, request)
    if overflow is not None:
        return None, overflow
    completion = await engine.chat(request)
    return completion, overflow_from_error(completion.error)


# -- small helpers several stages share ------------------------------------------------------------------------


def clean_output(text: str | None) -> str | None:
    """Strip whitespace; an empty output is no output (kept as NULL and flagged 'empty', counted with SQL)."""
    if text is None:
        return None
    text = text.strip()
    return text or None


def opening_turns(constitution: "Constitution", messages: tuple[Message, ...]) -> tuple[list[Message], list[Message]]:
    """Split a conversation into the system turn to put first and the turns after it.

    A conversation that brings its own system turn keeps it; otherwise the constitution's ``system_prompt`` (if
    any) is used. Few-shot exemplars go between the two, so the system turn always comes first, as chat
    templates expect.
    """
    turns = [dict(m) for m in messages]
    if turns and turns[0]["role"] == "system":
        return turns[:1], turns[1:]
    system = [{"role": "system", "content": constitution.system_prompt}] if constitution.system_prompt else []
    return system, turns


def skipped_row(ctx: RunContext, prompt_id: str, stage: str, round_number: int | None, overflow: Overflow) -> dict:
    """The ``skipped_prompts`` row (storage/004_sft.sql) of a prompt whose request would not fit the context."""
    from rlaif.store import utcnow

    return {"run_id": ctx.run_id, "prompt_id": prompt_id, "stage": stage, "round": round_number,
            "reason": overflow.reason, "tokens": overflow.tokens, "context_length": overflow.limit,
            "created_at": utcnow()}
