"""One engine call per distinct request while judging: identical requests share one result.

The score and contrast modes look at one response at a time, so with K candidates per prompt each response is
scored for K - 1 pairs, and principles without framings of their own share the constitution's framings. Every
such request has the same key; ``SharedCalls`` sends it once (later callers await the first call's result) and
keeps successful results, so the engine sees each distinct request once. Failures are not kept: the next call
tries again. Wrap the ``RecordingEngine`` with it, so the one call is also the one row.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import Any, Awaitable, Callable

from rlaif.engines.base import (
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    Engine,
    EngineWrapper,
    ScoreRequest,
    ScoreResult,
)

KEEP = 65_536  # results kept (least recently used dropped first): a run's working set, not its history


class SharedCalls(EngineWrapper):
    """An engine wrapper that deduplicates requests by key (see the module docstring)."""

    def __init__(self, engine: Engine, keep: int = KEEP):
        super().__init__(engine)
        self.keep = keep
        self._calls: OrderedDict[tuple[str, str], asyncio.Future[Any]] = OrderedDict()

    async def _once(self, kind: str, key: str, call: Callable[[], Awaitable[Any]]) -> Any:
        slot = (kind, key)
        future = self._calls.get(slot)
        if future is not None and future.get_loop() is asyncio.get_running_loop():
            self._calls.move_to_end(slot)
            return await asyncio.shield(future)
        future = asyncio.get_running_loop().create_future()
        self._calls[slot] = future
        while len(self._calls) > self.keep:
            self._calls.popitem(last=False)
        try:
            result = await call()
        except BaseException as exc:
            self._calls.pop(slot, None)
            future.set_exception(exc)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        if not result.ok:
            self._calls.pop(slot, None)
        future.set_result(result)
        return result

    async def chat(self, request: ChatRequest) -> Completion:
        return await self._once("chat", request.key, lambda: self.inner.chat(request))

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        return await self._once("choice", request.key, lambda: self.inner.choose(request))

    async def score(self, request: ScoreRequest) -> ScoreResult:
        return await self._once("score", request.key, lambda: self.inner.score(request))
