"""A fake engine for unit tests: canned replies, recorded requests, no model.

Readable in ten lines of use::

    engine = FakeEngine()
    engine.enqueue("first reply", "second reply")      # chat replies, in order
    engine.prefer("A", 0.8)                             # choose() puts 0.8 on the letter A
    engine.choice_rule = lambda req: {"A": -0.1, "B": -2.3}   # or any log-probs per request
    engine.structured = True                            # choose() answers like an engine without log-probs
    engine.score_rule = lambda req: [-1.0, -0.5]        # score(): one log-prob per continuation token
    ...
    engine.chat_requests[0].messages                    # what the stage sent

With nothing queued, chat replies are derived from the request (``"reply to: <last user turn>"``), so a test can
run many prompts without scripting each one. The default score rule is a readable stand-in for relevance: each
whitespace-separated word of the continuation is a token, with log-prob -1 if the word also occurs in the
conversation (case-insensitive, punctuation stripped) and -2 otherwise.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from typing import Callable

from rlaif.engines.base import (
    Attempt,
    ChatRequest,
    ChoiceRequest,
    ChoiceResult,
    Completion,
    ScoreRequest,
    ScoreResult,
    ok_attempt,
)


def _default_reply(request: ChatRequest) -> str:
    last_user = next((m["content"] for m in reversed(request.messages) if m["role"] == "user"), "")
    return f"reply to: {last_user[:60]}"


def _words(text: str) -> list[str]:
    return [w for w in (re.sub(r"[^\w]", "", t).lower() for t in text.split()) if w]


def overlap_score(request: ScoreRequest) -> list[float]:
    """-1 per continuation word that the conversation contains, -2 per other word (the default score rule)."""
    seen = {w for m in request.messages for w in _words(m["content"])}
    return [-1.0 if w in seen else -2.0 for w in _words(request.continuation)] or [-2.0]


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
        self.choice_rule: Callable[[ChoiceRequest], dict[str, float | None]] | None = None
        self.score_rule: Callable[[ScoreRequest], list[float]] = overlap_score
        self.structured = False  # True: choose() emits one choice, like a server without log-probs
        self.structured_output: str | None = None  # what that emitted text is (default: the favourite)
        self.special_tokens = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
        self.chat_requests: list[ChatRequest] = []
        self.choice_requests: list[ChoiceRequest] = []
        self.score_requests: list[ScoreRequest] = []

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

    def _fails(self, request: ChatRequest | ChoiceRequest | ScoreRequest) -> bool:
        return request.key in self._fail_keys or request.stage in self._fail_stages

    @staticmethod
    def _failure(started: float) -> list[Attempt]:
        return [Attempt(1, "failed", 0.0, started, "fake failure")]

    async def chat(self, request: ChatRequest) -> Completion:
        started = time.time()
        if self.keep_requests:
            self.chat_requests.append(request)
        if self._fails(request):
            return Completion(key=request.key, model=self.model, error="fake failure",
                              attempts=self._failure(started))
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
                                attempts=self._failure(started))
        logprobs = self.choice_rule(request) if self.choice_rule else self._preferred(request.choices)
        output = None
        if self.structured:  # the likeliest choice, or scripted raw text, and no probabilities
            output = self.structured_output or max(logprobs, key=lambda c: logprobs[c] or -math.inf)
            logprobs = {c: (0.0 if c == output else None) for c in request.choices}
        return ChoiceResult(key=request.key, model=self.model, logprobs=logprobs,
                            method="structured" if self.structured else "logprobs", output=output,
                            prompt_tokens=len(request.prompt.split()), attempts=[ok_attempt(started)])

    def _preferred(self, choices: tuple[str, ...]) -> dict[str, float | None]:
        favourite, p = self._preference
        others = [c for c in choices if c != favourite]
        rest = (1.0 - p) / len(others) if others else 0.0
        return {c: math.log(p if c == favourite else rest) for c in choices}

    async def score(self, request: ScoreRequest) -> ScoreResult:
        started = time.time()
        self.score_requests.append(request)
        if self._fails(request):
            return ScoreResult(key=request.key, model=self.model, error="fake failure",
                               attempts=self._failure(started))
        return ScoreResult(key=request.key, model=self.model, token_logprobs=list(self.score_rule(request)),
                           prompt_tokens=sum(len(m["content"].split()) for m in request.messages),
                           attempts=[ok_attempt(started)])

    async def aclose(self) -> None:
        return None
