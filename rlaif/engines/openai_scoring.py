"""Scoring on an OpenAI-compatible server: the log-likelihood of a continuation given a chat conversation.

The OpenAI API has no such call. vLLM's extensions give it in three requests, all retried and recorded like any
other try:

1. ``POST /tokenize`` with ``messages`` and ``add_generation_prompt: true``: the ids of the conversation under
   the server's own chat template, ending where the assistant's reply starts.
2. ``POST /tokenize`` with the continuation as ``prompt`` and ``add_special_tokens: false``: its ids, tokenized
   on their own, as generation would emit them after the template.
   Both are asked once per distinct input (the judge scores several responses under each framing of a prompt,
   and each response under two framings), so a score costs one completion plus its share of the tokenizing.
3. ``POST /v1/completions`` on the token ids of both, ``max_tokens: 1`` and ``prompt_logprobs: 0``: for every
   prompt token, the log-prob of that very token given the tokens before it. The last ``len(continuation)`` are
   the continuation's.

Cost: vLLM computes prompt log-probs by running the whole prompt, so such a request skips the prefix cache (vllm
PR #23399) even when the conversation's blocks are cached: each score pays its full prefill. This is why the
judge's multiple-choice and score modes read next-token log-probs only, and why scoring is the contrast mode's
price (docs/judge.md gives the figures).
"""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

from rlaif.engines.base import Attempt, Message, ScoreRequest, ScoreResult, content_hash
from rlaif.engines.openai_errors import _BadResponse, _Failure

TOKENIZE_CACHE = 4096  # templated conversations kept; cleared when full (a run's conversations come in waves)


class ScoringMixin:
    """``score`` for ``OpenAIEngine``, which provides ``model`` and ``_with_retries``."""

    model: str

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Per-token log-probs of ``request.continuation`` after the templated conversation (see the module)."""
        started = time.monotonic()
        attempts: list[Attempt] = []
        values, prompt_tokens, error = None, None, None
        try:
            prompt_ids, continuation_ids = await asyncio.gather(
                self._conversation_ids(request.messages, attempts), self._text_ids(request.continuation, attempts)
            )
            prompt_tokens = len(prompt_ids)
            values = await self._prompt_logprobs(prompt_ids, continuation_ids, attempts) if continuation_ids else []
        except _Failure as gave_up:
            error = gave_up.message
        return ScoreResult(key=request.key, model=self.model, token_logprobs=values, prompt_tokens=prompt_tokens,
                           latency_s=time.monotonic() - started, attempts=attempts, error=error)

    async def _conversation_ids(self, messages: tuple[Message, ...], attempts: list[Attempt]) -> list[int]:
        body = {"model": self.model, "messages": [dict(m) for m in messages], "add_generation_prompt": True}
        return await self._cached_ids(content_hash("template", list(messages)), body, attempts)

    async def _text_ids(self, text: str, attempts: list[Attempt]) -> list[int]:
        if not text:
            return []
        body = {"model": self.model, "prompt": text, "add_special_tokens": False}
        return await self._cached_ids(content_hash("text", text), body, attempts)

    async def _cached_ids(self, key: str, body: dict[str, Any], attempts: list[Attempt]) -> list[int]:
        """``/tokenize`` once per distinct input: concurrent askers await the first one's request.

        The judge scores every response under two framings, and several responses under each framing of one
        prompt, all at once; without this every score would tokenize its conversation and text again. The cache
        holds futures of the current event loop; a failed tokenization is dropped so the next ask retries it.
        """
        loop = asyncio.get_running_loop()
        cache: dict[str, asyncio.Future[list[int]]] = self.__dict__.setdefault("_tokenized", {})
        cached = cache.get(key)
        if cached is not None and cached.get_loop() is loop and not (cached.done() and cached.exception()):
            return list(await asyncio.shield(cached))
        if len(cache) >= TOKENIZE_CACHE:
            cache.clear()
        future: asyncio.Future[list[int]] = loop.create_future()
        cache[key] = future
        try:
            ids = await self._tokenize(body, attempts)
        except BaseException as exc:
            cache.pop(key, None)
            future.set_exception(exc)
            future.exception()  # retrieved here: whoever else waits gets it raised
            raise
        future.set_result(ids)
        return list(ids)

    async def _tokenize(self, body: dict[str, Any], attempts: list[Attempt]) -> list[int]:
        async def send(client: Any) -> list[int]:
            answer = await client.post(_root(str(client.base_url)) + "/tokenize", cast_to=object, body=body)
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if not isinstance(tokens, list):
                raise _BadResponse(f"/tokenize answered without token ids: {str(answer)[:120]}")
            return [int(t) for t in tokens]

        return await self._with_retries(send, attempts)  # type: ignore[attr-defined]

    async def _prompt_logprobs(self, prompt_ids: list[int], continuation_ids: list[int],
                               attempts: list[Attempt]) -> list[float]:
        ids = prompt_ids + continuation_ids
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}

        async def send(client: Any) -> list[float]:
            answer = await client.post("/completions", cast_to=object, body=body)
            try:
                positions = answer["choices"][0]["prompt_logprobs"]
                return [_logprob_of(positions[i], ids[i]) for i in range(len(prompt_ids), len(ids))]
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                raise _BadResponse(f"no prompt log-probs in the answer ({exc!r})") from None

        return await self._with_retries(send, attempts)  # type: ignore[attr-defined]


def _logprob_of(position: dict[str, Any] | None, token_id: int) -> float:
    """The log-prob vLLM gives ``token_id`` at one prompt position (its entries are keyed by id as text)."""
    if position is None:
        raise ValueError("position has no log-probs")
    entry = position[str(token_id)]
    return float(entry["logprob"] if isinstance(entry, dict) else entry)


def _root(base_url: str) -> str:
    """``http://host:port`` from ``http://host:port/v1/``: vLLM serves ``/tokenize`` beside ``/v1``."""
    return re.sub(r"/v1/?$", "", base_url.rstrip("/"))
