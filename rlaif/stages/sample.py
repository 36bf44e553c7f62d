"""Stage: K candidate responses per prompt from the policy, the raw material of preference pairs.

Bai et al. 2022 (arXiv 2212.08073, section 4.1) sample pairs of responses from the SL-CAI model for each
red-team prompt and let the feedback model say which is better; Lee et al. 2023 (RLAIF, arXiv 2309.00267) do
the same with two samples per prompt. Kept: the candidates are the policy's own samples, in the chat form the
policy answers in (``respond``'s messages: the constitution's system prompt, if any, then the conversation).
Changed: any K >= 2, each sample with its own seed derived from (run seed, prompt, sample index), so a rerun or a
resumed run draws exactly the same candidates, and their pairs are formed all against all or capped per prompt
(``rlaif.judge.pairing.candidate_pairs``). Identical samples collapse into one candidate, and an empty sample is
kept as data (a NULL ``response``) but never paired.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from rlaif.engines.base import ChatRequest, Completion, Engine, content_hash
from rlaif.judge.pairing import Candidate, Pair, candidate_pairs
from rlaif.prompts import PromptRow
from rlaif.stages import Overflow, RunContext, chat_request, check_fits, clean_output, overflow_from_error
from rlaif.stages.respond import response_messages
from rlaif.store import utcnow

STAGE = "sample"


def sample_requests(ctx: RunContext, prompt: PromptRow, k: int, model: str) -> list[ChatRequest]:
    """Input: a prompt row. Output: its ``k`` chat requests, one seed per (run seed, prompt, sample index)."""
    messages = response_messages(prompt, ctx.constitution)
    return [chat_request(messages, ctx.seeded(prompt.prompt_id, STAGE, i), model, STAGE, prompt.prompt_id)
            for i in range(k)]


@dataclass
class Samples:
    """One prompt's sampled responses. ``completions`` is empty when the requests were not sent (overflow)."""

    prompt: PromptRow
    requests: list[ChatRequest]
    completions: list[Completion]
    overflow: Overflow | None = None

    @property
    def error(self) -> str | None:
        """The first engine failure (to retry next run), or None; a prompt too long for the context is not one."""
        if self.overflow is not None:
            return None
        return next((c.error for c in self.completions if not c.ok), None)

    def texts(self) -> list[str | None]:
        """Each sample's text, None when it came back empty (or failed)."""
        return [clean_output(c.text) if c.ok else None for c in self.completions]

    def candidates(self) -> list[Candidate]:
        """The non-empty samples as judge candidates, with their lineage (sample index, model, generation key)."""
        return [Candidate(text, f"sample:{i}", c.model, c.key)
                for i, (c, text) in enumerate(zip(self.completions, self.texts())) if text is not None]


async def sample(ctx: RunContext, prompt: PromptRow, engine: Engine, k: int) -> Samples:
    """Ask the policy for ``k`` responses at once; failures come back in ``Samples``, never as exceptions."""
    requests = sample_requests(ctx, prompt, k, engine.model)
    overflow = check_fits(engine, requests[0])  # every sample shares the messages and max_tokens
    if overflow is not None:
        return Samples(prompt, requests, [], overflow)
    completions = list(await asyncio.gather(*(engine.chat(r) for r in requests)))
    refused = next((o for o in (overflow_from_error(c.error) for c in completions) if o is not None), None)
    return Samples(prompt, requests, completions, refused)


def sample_pairs(ctx: RunContext, samples: Samples, max_pairs: int | None) -> list[Pair]:
    """Input: a prompt's samples. Output: its pairs to judge, all against all or a seeded draw of ``max_pairs``."""
    prompt = samples.prompt
    return candidate_pairs(prompt.prompt_id, prompt.messages, samples.candidates(), max_pairs=max_pairs,
                           seed=ctx.seed)


def candidate_id(ctx: RunContext, prompt_id: str, index: int) -> str:
    """The id of sample ``index`` of a prompt in this run's configuration (its ``candidates`` row)."""
    return content_hash("candidate", ctx.chain_id(prompt_id), index)


def candidate_rows(ctx: RunContext, samples: Samples) -> list[dict]:
    """The ``candidates`` rows (storage/009_prefs.sql) of the samples that came back, empty or not."""
    now, prompt = utcnow(), samples.prompt
    return [{
        "candidate_id": candidate_id(ctx, prompt.prompt_id, i), "run_id": ctx.run_id,
        "prompt_id": prompt.prompt_id, "sample": i, "response_key": c.key, "response": text,
        "finish_reason": c.finish_reason, "model": c.model, "config_hash": ctx.config_hash, "created_at": now,
    } for i, (c, text) in enumerate(zip(samples.completions, samples.texts())) if c.ok]
