"""Every engine call is a row: an engine wrapper that records calls and answers repeats from the database.

``RecordingEngine`` sits between the stages and the real engine. Stages keep calling ``chat``/``choose`` as if
nothing were there; the wrapper
- answers a request whose key is already stored (from an earlier, perhaps crashed, run) from the stored row, so
  no engine call is ever repeated for stored work;
- otherwise calls the engine, writes one ``attempts`` row per try, and one ``generations`` row when it succeeded.
Failed requests leave only attempts rows, so the next run retries them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    Engine,
    ScoreRequest,
    ScoreResult,
    content_hash,
    special_tokens_of,
)

if TYPE_CHECKING:
    from rlaif.store import Store, Writer


def _ts(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, tz=timezone.utc)


class RecordingEngine:
    """Wraps an engine; records every attempt and result of this run, replays stored results."""

    def __init__(self, engine: Engine, writer: "Writer", *, run_id: str, constitution_version: str | None):
        self.inner = engine
        self.name = engine.name
        self.model = engine.model
        self.special_tokens = special_tokens_of(engine)
        self.writer = writer
        self.run_id = run_id
        self.constitution_version = constitution_version
        self.stored: dict[str, dict] = {}
        self.engine_calls = 0  # tries sent to the engine (retries included)
        self.replayed = 0  # requests answered from the database instead
        self.tokens_out = 0

    def preload(self, store: "Store", prompt_ids: Iterable[str]) -> int:
        """Load the stored results of these prompts, so repeats are answered without the engine."""
        ids = list(prompt_ids)
        if not ids:
            return 0
        rows = store.fetch(
            "SELECT key, output, finish_reason, prompt_tokens, completion_tokens, latency_s, choice_logprobs, "
            "choice_method, model, token_logprobs FROM generations WHERE prompt_id IN (SELECT unnest(?))",
            [ids],
        )
        self.stored.update({r["key"]: r for r in rows})
        return len(rows)

    async def chat(self, request: ChatRequest) -> Completion:
        row = self.stored.get(request.key)
        if row is not None:
            self.replayed += 1
            return Completion(key=request.key, model=row["model"], text=row["output"],
                              finish_reason=row["finish_reason"], prompt_tokens=row["prompt_tokens"],
                              completion_tokens=row["completion_tokens"], latency_s=row["latency_s"] or 0.0)
        result = await self.inner.chat(request)
        self._record_attempts(request.key, request.stage, result.attempts)
        if result.ok:
            self.tokens_out += result.completion_tokens or 0
            self._record(request.key, request.stage, request.prompt_id, kind="chat",
                         messages=[dict(m) for m in request.messages], params=request.params.as_dict(),
                         output=result.text, finish_reason=result.finish_reason, model=result.model,
                         prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                         latency_s=result.latency_s)
        return result

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        row = self.stored.get(request.key)
        if row is not None:
            self.replayed += 1
            return ChoiceResult(key=request.key, model=row["model"], logprobs=json.loads(row["choice_logprobs"]),
                                method=row["choice_method"], prompt_tokens=row["prompt_tokens"],
                                latency_s=row["latency_s"] or 0.0, output=row["output"])
        result = await self.inner.choose(request)
        self._record_attempts(request.key, request.stage, result.attempts)
        if result.ok:
            self._record(request.key, request.stage, request.prompt_id, kind="choice",
                         prompt_text=request.prompt, params={"choices": list(request.choices)},
                         choice_logprobs=json.dumps(result.logprobs), choice_method=result.method,
                         output=result.output, model=result.model, prompt_tokens=result.prompt_tokens,
                         latency_s=result.latency_s)
        return result

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """A continuation's token log-probs: a ``generations`` row of kind 'score' (migration 005's columns)."""
        row = self.stored.get(request.key)
        if row is not None:
            self.replayed += 1
            return ScoreResult(key=request.key, model=row["model"], token_logprobs=list(row["token_logprobs"]),
                               prompt_tokens=row["prompt_tokens"], latency_s=row["latency_s"] or 0.0)
        result = await self.inner.score(request)
        self._record_attempts(request.key, request.stage, result.attempts)
        if result.ok:
            self._record(request.key, request.stage, request.prompt_id, kind="score",
                         messages=[dict(m) for m in request.messages], params={}, continuation=request.continuation,
                         token_logprobs=list(result.token_logprobs or []), model=result.model,
                         prompt_tokens=result.prompt_tokens, completion_tokens=result.tokens,
                         latency_s=result.latency_s)
        return result

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _record_attempts(self, key: str, stage: str, attempts: list) -> None:
        self.engine_calls += len(attempts)
        for a in attempts:
            self.writer.add("attempts", {
                "attempt_id": content_hash("attempt", key, self.run_id, a.number, a.started_at),
                "key": key, "run_id": self.run_id, "stage": stage, "number": a.number, "status": a.status,
                "error": a.error, "latency_s": a.latency_s, "started_at": _ts(a.started_at),
            })

    def _record(self, key: str, stage: str, prompt_id: str | None, *, kind: str, params: dict, **fields) -> None:
        row = {
            "key": key, "run_id": self.run_id, "kind": kind, "stage": stage, "prompt_id": prompt_id,
            "messages": None, "prompt_text": None, "params": json.dumps(params), "engine": self.name,
            "output": None, "choice_logprobs": None, "choice_method": None, "finish_reason": None,
            "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
            "constitution_version": self.constitution_version, "created_at": datetime.now(timezone.utc),
        }
        row.update(fields)
        self.writer.add("generations", row)
        self.stored[key] = row
