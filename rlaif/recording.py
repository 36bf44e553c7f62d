"""Every engine call is a row: an engine wrapper that records calls and answers repeats from the database.

``RecordingEngine`` sits between the stages and the real engine. Stages keep calling ``chat``/``choose`` as if
nothing were there; the wrapper
- answers a request whose key is already stored (from an earlier, perhaps crashed, run) from the stored row, so
  no engine call is ever repeated for stored work;
- otherwise calls the engine, writes one ``attempts`` row per try, and one ``generations`` row when it succeeded.
Failed requests leave only attempts rows, so the next run retries them.

Stored results come from ``StoredResults``: the pipeline loads them with one query per batch of prompts as the
batch enters its window, and drops each prompt's results when its chain ends, so memory follows the window and
not the size of the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import orjson

from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    Engine,
    EngineWrapper,
    ScoreRequest,
    ScoreResult,
    content_hash,
)
from rlaif.store import utcnow

if TYPE_CHECKING:
    from rlaif.store import Store, Writer

_STORED_COLUMNS = ("key, prompt_id, output, finish_reason, prompt_tokens, completion_tokens, latency_s, "
                   "choice_logprobs, choice_method, model, token_logprobs")


def _naive_utc(unix: float) -> datetime:
    """An attempt's start (unix time) in the tables' convention, naive UTC (see ``rlaif.store.utcnow``)."""
    return datetime.fromtimestamp(unix, UTC).replace(tzinfo=None)


class StoredResults:
    """The stored generations of the prompts in flight, by prompt id and request key."""

    def __init__(self, store: "Store"):
        self.store = store
        self._by_prompt: dict[str, dict[str, dict]] = {}
        self.loaded = 0  # rows fetched over the run
        (count,) = store.fetch("SELECT count(*) AS n FROM generations")[0].values()
        self._nothing_stored = count == 0  # a first run into a fresh database skips every lookup

    def load(self, prompt_ids: Iterable[str]) -> int:
        """Fetch the stored results of these prompts (one query); returns how many rows came back."""
        ids = list(prompt_ids)
        for pid in ids:
            self._by_prompt.setdefault(pid, {})
        if self._nothing_stored or not ids:
            return 0
        rows = self.store.fetch(
            f"SELECT {_STORED_COLUMNS} FROM generations WHERE prompt_id IN (SELECT unnest(?::VARCHAR[]))", [ids])
        for row in rows:
            self._by_prompt[row["prompt_id"]][row["key"]] = row
        self.loaded += len(rows)
        return len(rows)

    def get(self, prompt_id: str | None, key: str) -> dict | None:
        return self._by_prompt.get(prompt_id, {}).get(key) if prompt_id is not None else None

    def release(self, prompt_id: str) -> None:
        """Forget a prompt whose chain has ended."""
        self._by_prompt.pop(prompt_id, None)


class RecordingEngine(EngineWrapper):
    """Wraps an engine; records every attempt and result of this run, replays stored results."""

    def __init__(self, engine: Engine, writer: "Writer", *, run_id: str, constitution_version: str | None,
                 stored: StoredResults | None = None):
        super().__init__(engine)
        self.writer = writer
        self.run_id = run_id
        self.constitution_version = constitution_version
        self.stored = stored
        # An engine with a tokenizer lets stages check a request fits its context before sending it.
        self.count_tokens = getattr(engine, "count_tokens", None)
        self.context_length = getattr(engine, "context_length", None)
        self.engine_calls = 0  # tries sent to the engine (retries included)
        self.replayed = 0  # requests answered from the database instead
        self.tokens_out = 0

    def preload(self, store: "Store", prompt_ids: Iterable[str]) -> int:
        """Load the stored results of these prompts (a whole small run, e.g. ``judge eval``'s pairs at once)."""
        if self.stored is None:
            self.stored = StoredResults(store)
        return self.stored.load(prompt_ids)

    def _stored(self, request: ChatRequest | ChoiceRequest | ScoreRequest) -> dict | None:
        return self.stored.get(request.prompt_id, request.key) if self.stored is not None else None

    async def chat(self, request: ChatRequest) -> Completion:
        row = self._stored(request)
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
                         messages=list(request.messages), params=request.params.as_dict(),
                         output=result.text, finish_reason=result.finish_reason, model=result.model,
                         prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                         latency_s=result.latency_s)
        return result

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        row = self._stored(request)
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
        row = self._stored(request)
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

    def _record_attempts(self, key: str, stage: str, attempts: list) -> None:
        self.engine_calls += len(attempts)
        for a in attempts:
            self.writer.add("attempts", {
                # started_at as text keeps the hash on content_hash's fast path (floats take the slow one)
                "attempt_id": content_hash("attempt", key, self.run_id, a.number, f"{a.started_at:.6f}"),
                "key": key, "run_id": self.run_id, "stage": stage, "number": a.number, "status": a.status,
                "error": a.error, "latency_s": a.latency_s, "started_at": _naive_utc(a.started_at),
            })

    def _record(self, key: str, stage: str, prompt_id: str | None, *, kind: str, params: dict, **fields) -> None:
        row = {
            "key": key, "run_id": self.run_id, "kind": kind, "stage": stage, "prompt_id": prompt_id,
            "messages": None, "prompt_text": None, "params": orjson.dumps(params).decode(), "engine": self.name,
            "output": None, "choice_logprobs": None, "choice_method": None, "finish_reason": None,
            "prompt_tokens": None, "completion_tokens": None, "latency_s": None,
            "constitution_version": self.constitution_version, "created_at": utcnow(),
        }
        row.update(fields)
        self.writer.add("generations", row)
