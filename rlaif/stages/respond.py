"""Stage 1: the initial response to a prompt.

Bai et al. 2022 ("Constitutional AI", arXiv 2212.08073, section 3.1) start from a helpful-only model's answer to
a red-team prompt, then critique and revise it. Here the answering model is whatever engine is configured, and
the constitution may add a system prompt in front of the conversation (the paper used none).
"""

from __future__ import annotations

from rlaif.constitution import Constitution
from rlaif.engines.base import ChatRequest, Completion, Engine, Message, SamplingParams, chat_key
from rlaif.prompts import PromptRow

STAGE = "respond"


def response_messages(prompt: PromptRow, constitution: Constitution) -> list[Message]:
    """Input: a prompt row. Output: the chat messages that ask for the first answer."""
    system = [{"role": "system", "content": constitution.system_prompt}] if constitution.system_prompt else []
    return system + [dict(m) for m in prompt.messages]


def response_request(prompt: PromptRow, constitution: Constitution, params: SamplingParams, model: str) -> ChatRequest:
    messages = response_messages(prompt, constitution)
    return ChatRequest(chat_key(messages, params, model), tuple(messages), params, STAGE, prompt.prompt_id)


async def respond(prompt: PromptRow, engine: Engine, constitution: Constitution, params: SamplingParams) -> Completion:
    """Ask the engine for the initial response; a failure comes back as a Completion with ``error`` set."""
    return await engine.chat(response_request(prompt, constitution, params, engine.model))
