"""A fake engine for unit tests: canned replies, recorded requests, no model.

Readable in ten lines of use::

    engine = FakeEngine()
    engine.enqueue("first reply", "second reply")      # chat replies, in order
    engine.prefer("A", 0.8)                             # choose() puts 0.8 on the letter A
    ...
    engine.chat_requests[0].messages                    # what the stage sent

With nothing queued, chat replies are derived from the request (``"reply to: <last user turn>"``), so a test can
run many prompts without scripting each one.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Callable

from rlaif.engines.base import (
    Attempt,
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    ok_attempt,
)


def _default_reply(request: ChatRequest) -> str:
    last_user = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
    return f"reply to: {last_user[:60]}"


class FakeEngine:
    """Implements the engine protocol from canned data; every request is kept for assertions."""

    name = "fake"

    def __init__(self, model: str = "fake-model", reply: Callable[[ChatRequest], str] = _default_reply, *,
                 keep_requests: bool = True):
        self.model = model
        self.keep_requests = keep_requests  # off for long runs (CLI, benchmarks): the lists would grow with them
        self._reply = reply
        self._queue: deque[str] = deque()
        self._fail_keys: set[str] = set()
        self._fail_stages: set[str] = set()
        self._preference: tuple[str, float] = ("A", 0.75)
        self.chat_requests: list[ChatRequest] = []
        self.choice_requests: list[ChoiceRequest] = []

    def enqueue(self, *replies: str) -> "FakeEngine":
        self._queue.extend(replies)
        return self

    def prefer(self, choice: str, probability: float) -> "FakeEngine":
        """Make choose() give ``probability`` to ``choice`` (whatever the order) and share the rest."""
        self._preference = (choice, probability)
        return self

    def fail(self, *keys: str, stages: tuple[str, ...] = ()) -> "FakeEngine":
        """Requests with these keys, or from these stages, fail (one failed attempt, ``error`` set)."""
        self._fail_keys.update(keys)
        self._fail_stages.update(stages)
        return self

    def _fails(self, request: ChatRequest | ChoiceRequest) -> bool:
        return request.key in self._fail_keys or request.stage in self._fail_stages

    async def chat(self, request: ChatRequest) -> Completion:
        started = time.time()
        if self.keep_requests:
            self.chat_requests.append(request)
        if self._fails(request):
            return Completion(key=request.key, model=self.model, error="fake failure",
                              attempts=[Attempt(1, "failed", 0.0, started, "fake failure")])
        text = self._queue.popleft() if self._queue else self._reply(request)
        n_prompt = len(" ".join([m["content"] for m in request.messages]).split())  # words, one split for all
        return Completion(
            key=request.key, model=self.model, text=text, finish_reason="stop",
            prompt_tokens=n_prompt, completion_tokens=len(text.split()),
            latency_s=time.time() - started, attempts=[ok_attempt(started)],
        )

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        started = time.time()
        if self.keep_requests:
            self.choice_requests.append(request)
        if self._fails(request):
            return ChoiceResult(key=request.key, model=self.model, error="fake failure",
                                attempts=[Attempt(1, "failed", 0.0, started, "fake failure")])
        favourite, p = self._preference
        others = [c for c in request.choices if c != favourite]
        rest = (1.0 - p) / len(others) if others else 0.0
        logprobs = {c: math.log(p if c == favourite else rest) for c in request.choices}
        return ChoiceResult(key=request.key, model=self.model, logprobs=logprobs,
                            prompt_tokens=len(request.prompt.split()), attempts=[ok_attempt(started)])

    async def aclose(self) -> None:
        return None
