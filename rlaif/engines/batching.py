"""Turn many concurrent one-request awaits into batches for an in-process model (transformers, offline vLLM).

Callers ``await batcher.submit(req)`` from as many asyncio tasks as they like. The first submit starts a drain
task; it yields once to the event loop so that tasks created together all enqueue, then runs batches of up to
``max_batch`` pending requests that share a ``group_key`` (e.g. the same sampling options, which one
``generate`` call needs) until nothing is pending. Batching is continuous: requests that arrive while a batch
runs go into the next one, and no batch waits to fill up. Batches run one at a time in a worker thread, because
the model is not thread-safe, and so the event loop stays free to accept new requests meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Generic, TypeVar

from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    ScoreRequest,
    ScoreResult,
    failed_attempt,
)

Req = TypeVar("Req")
Res = TypeVar("Res")


class MicroBatcher(Generic[Req, Res]):
    """Async per-request front of a ``run_batch(list[Req]) -> list[Res]`` function (results in request order).

    Pass one ``executor`` to several batchers (say, chat and choice batchers of one engine) so that their
    batches, too, run one at a time; by default each batcher owns a single worker thread. Use it from one event
    loop at a time.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Req]], list[Res]],
        *,
        max_batch: int,
        group_key: Callable[[Req], Hashable] = lambda r: None,
        executor: Executor | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.group_key = group_key
        self._owns_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="rlaif-batch")
        self._pending: list[tuple[Req, asyncio.Future[Res]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def submit(self, req: Req) -> Res:
        """Queue ``req`` and wait for its result; an exception from its batch is raised here."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Res] = loop.create_future()
        self._pending.append((req, future))
        # One drain task per event loop at a time; a new loop (a second ``asyncio.run``) gets its own.
        if self._drain is None or self._drain.done() or self._drain.get_loop() is not loop:
            self._drain = loop.create_task(self._drain_pending())
        return await future

    async def _drain_pending(self) -> None:
        await asyncio.sleep(0)  # let tasks created in the same loop step enqueue before the first batch forms
        loop = asyncio.get_running_loop()
        while batch := self._take_batch():
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, [req for req, _ in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} requests")
            except Exception as exc:  # the batch fails together; other batches go on
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                if not future.done():  # the caller may have been cancelled meanwhile
                    future.set_result(result)

    def _take_batch(self) -> list[tuple[Req, asyncio.Future[Res]]]:
        """Remove and return up to ``max_batch`` live requests sharing the oldest live request's group key."""
        loop = asyncio.get_running_loop()  # futures of a finished earlier loop are dropped, never resolved
        self._pending = [(req, fut) for req, fut in self._pending if not fut.done() and fut.get_loop() is loop]
        if not self._pending:
            return []
        key = self.group_key(self._pending[0][0])
        batch, rest = [], []
        for item in self._pending:
            if len(batch) < self.max_batch and self.group_key(item[0]) == key:
                batch.append(item)
            else:
                rest.append(item)
        self._pending = rest
        return batch

    def close(self) -> None:
        """Stop the worker thread this batcher owns (a shared executor is left to its owner)."""
        if self._owns_executor:
            self._executor.shutdown(wait=False, cancel_futures=True)


class BatchedEngine:
    """``chat``/``choose``/``score`` for engines whose backend runs batches (transformers, in-process vLLM).

    Subclasses set ``model``, ``_chats``, ``_choices`` and ``_scores`` (MicroBatchers over their batch functions).
    A batch that raises turns into an error result for each of its requests, so a stage never sees an exception.
    """

    model: str
    _chats: MicroBatcher[ChatRequest, Completion]
    _choices: MicroBatcher[ChoiceRequest, ChoiceResult]
    _scores: MicroBatcher[ScoreRequest, ScoreResult]

    async def chat(self, request: ChatRequest) -> Completion:
        """Generate one chat reply; a failure comes back as ``Completion(error=...)``, never as an exception."""
        started = time.time()
        try:
            return await self._chats.submit(request)
        except Exception as exc:
            attempt = failed_attempt(started, exc)
            return Completion(key=request.key, model=self.model, latency_s=attempt.latency_s, attempts=[attempt],
                              error=attempt.error)

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        """Score each choice as the continuation of the raw prompt; failures come back as ``error`` results."""
        started = time.time()
        try:
            return await self._choices.submit(request)
        except Exception as exc:
            attempt = failed_attempt(started, exc)
            return ChoiceResult(key=request.key, model=self.model, logprobs={c: None for c in request.choices},
                                latency_s=attempt.latency_s, attempts=[attempt], error=attempt.error)

    async def score(self, request: ScoreRequest) -> ScoreResult:
        """Log-prob of each continuation token given the templated conversation; failures come back as errors."""
        started = time.time()
        try:
            return await self._scores.submit(request)
        except Exception as exc:
            attempt = failed_attempt(started, exc)
            return ScoreResult(key=request.key, model=self.model, latency_s=attempt.latency_s, attempts=[attempt],
                               error=attempt.error)
