"""The OpenAI-compatible engine (``engine=openai``): any server speaking ``/v1/chat/completions``, usually vLLM.

Throughput comes from keeping the server busy, not from batching here. vLLM batches continuously on its side, so
the client's job is to keep a steady window of ``concurrency`` requests on the wire: a new request goes out the
moment one finishes, and nobody waits for the slowest member of a batch (NOTES.md measured a client that keeps
every request in flight at 0.98 of offline ``vllm.LLM``, and one capped at 16 in flight at 0.78). Callers just
start many ``chat()`` tasks; an ``asyncio.Semaphore`` held only while a request is on the wire is the window.

Every try is ours and counted: the OpenAI client's own retries are off (``max_retries=0``), and this engine
retries 429, 5xx, timeouts and dropped connections (``openai_errors.py`` decides which) with capped exponential
backoff and jitter, recording one ``Attempt`` per try. A request that still fails comes back as a result with
``error`` set; it never raises.
Several base URLs are replicas: each request goes to the one where it should finish soonest, by requests in
flight and measured latency (``rlaif/engines/replicas.py``).

``choose`` reads the judge's answer from log-probs of the raw prompt's continuation (Bai et al. 2022,
arXiv 2212.08073, section 4.1; Lee et al. 2023, arXiv 2309.00267, section 2.1), through ``/v1/completions``
when the server has it, then chat ``top_logprobs``, and only as a last resort structured output, which gives a
choice but no probability. ``score`` (``openai_scoring.py``) gives a continuation's token log-probs.

The ``openai`` client is imported inside the functions that use it, so importing this module stays cheap.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

from rlaif.engines.base import Attempt, ChatRequest, ChoiceRequest, ChoiceResult, Completion
from rlaif.engines.openai_endpoint import wait_for_models
from rlaif.engines.openai_errors import (
    RETRY_STATUS,  # noqa: F401 (re-exported)
    _BadResponse,
    _classify,
    _Failure,
    _first_choice,
)
from rlaif.engines.openai_scoring import ScoringMixin
from rlaif.engines.replicas import Replica as _Replica
from rlaif.engines.replicas import pick as _pick
from rlaif.errors import EngineError

if TYPE_CHECKING:
    from rlaif.config import Settings

TOP_LOGPROBS = 20  # vLLM's default --max-logprobs: the most alternatives a server returns per position
MAX_CHAIN = 4  # next-token reads spent on one multi-token choice before falling back to an echo request
NO_ENDPOINT_STATUS = frozenset({404, 405, 501})  # the server lacks /v1/completions: fall back to chat

ChoiceApi = Literal["completions", "chat", "structured"]


class _LoopState:
    """Clients and the in-flight window of one event loop.

    An ``AsyncOpenAI`` client's connection pool and an ``asyncio.Semaphore`` belong to the loop that first used
    them, and callers may drive the engine from several ``asyncio.run`` calls in turn; each loop gets its own.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, replicas: list[_Replica], concurrency: int):
        self.loop = loop
        self.replicas = replicas
        self.window = asyncio.Semaphore(concurrency)
        self._turn = 0

    def pick(self) -> _Replica:
        """The replica where a request should finish soonest (``replicas.pick``); ties go round-robin."""
        index = _pick(self.replicas, self._turn)
        self._turn = (index + 1) % len(self.replicas)
        return self.replicas[index]


class OpenAIEngine(ScoringMixin):
    """The engine protocol over one or more OpenAI-compatible endpoints (replicas of one model).

    Seeds are per request: each request's ``seed`` goes to the server, and vLLM gives every request its own
    generator. Whether a seeded request then gives the same text whatever else shares its batch is the server's
    dtype's doing: yes in every case measured for vLLM on CPU in float32, no in bfloat16 (``serve_dtype``;
    docs/engines.md, "Seeds").
    """

    name = "openai"

    def __init__(
        self,
        base_urls: list[str],
        model: str,
        *,
        api_key: str = "EMPTY",
        concurrency: int = 64,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ):
        if not base_urls:
            raise EngineError("the openai engine needs at least one base URL (RLAIF_BASE_URL)")
        if concurrency < 1 or max_retries < 0:
            raise ValueError(f"need concurrency >= 1 and max_retries >= 0, got {concurrency} and {max_retries}")
        self.model = model
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._state: _LoopState | None = None
        self._choice_api: ChoiceApi = "completions"  # downgraded once if the server lacks it

    @classmethod
    def from_settings(cls, settings: Settings, *, wait_s: float = 5.0) -> OpenAIEngine:
        """Build the engine, first checking that every endpoint answers and serves ``settings.model``."""
        for url in settings.base_url:
            served = wait_for_models(url, settings.api_key, wait_s=wait_s)
            if settings.model not in served:
                raise EngineError(
                    f"model {settings.model!r} is not served at {url}; it serves: {', '.join(served) or 'nothing'} "
                    "(set RLAIF_MODEL to one of them)"
                )
        return cls(
            list(settings.base_url),
            settings.model,
            api_key=settings.api_key,
            concurrency=settings.concurrency,
            timeout_s=settings.request_timeout_s,
            max_retries=settings.max_retries,
        )

    # --- the protocol ---------------------------------------------------------------------------------------

    async def chat(self, request: ChatRequest) -> Completion:
        """One chat completion; failures after bounded retries come back as ``Completion(error=...)``."""
        started = time.monotonic()
        attempts: list[Attempt] = []
        kwargs = self._chat_kwargs(request)

        async def send(client: Any) -> tuple[str, str | None, int | None, int | None]:
            response = await client.chat.completions.create(**kwargs)
            choice = _first_choice(response)
            usage = response.usage
            return (
                choice.message.content or "",
                choice.finish_reason,
                getattr(usage, "prompt_tokens", None),
                getattr(usage, "completion_tokens", None),
            )

        text = finish = prompt_tokens = completion_tokens = error = None
        try:
            text, finish, prompt_tokens, completion_tokens = await self._with_retries(send, attempts)
        except _Failure as gave_up:
            error = gave_up.message
        return Completion(
            key=request.key,
            model=self.model,
            text=text,
            finish_reason=finish,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            latency_s=time.monotonic() - started,
            attempts=attempts,
            error=error,
        )

    async def choose(self, request: ChoiceRequest) -> ChoiceResult:
        """Log-prob of each choice as the continuation of the raw prompt (see ``_choose_*`` for the methods)."""
        started = time.monotonic()
        attempts: list[Attempt] = []
        logprobs: dict[str, float | None] = {c: None for c in request.choices}
        method, prompt_tokens, error = "logprobs", None, None
        try:
            logprobs, method, prompt_tokens = await self._choose_any(request, attempts)
        except _Failure as gave_up:
            error = gave_up.message
        return ChoiceResult(
            key=request.key,
            model=self.model,
            logprobs=logprobs,
            method=method,
            prompt_tokens=prompt_tokens,
            latency_s=time.monotonic() - started,
            attempts=attempts,
            error=error,
        )

    async def aclose(self) -> None:
        """Close the HTTP clients of the current event loop (those of finished loops went with them)."""
        state, self._state = self._state, None
        if state is not None and not state.loop.is_closed():
            await asyncio.gather(*(r.client.close() for r in state.replicas), return_exceptions=True)

    # --- requests -------------------------------------------------------------------------------------------

    def _chat_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        params = request.params
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in request.messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if params.stop:
            kwargs["stop"] = list(params.stop)
        if params.ignore_eos:
            kwargs["extra_body"] = {"ignore_eos": True}  # a vLLM extension: benchmarks want exact lengths
        return kwargs

    async def _choose_any(
        self, request: ChoiceRequest, attempts: list[Attempt]
    ) -> tuple[dict[str, float | None], Literal["logprobs", "structured"], int | None]:
        """Try the best method the server supports; remember a downgrade so later requests skip the probe."""
        if self._choice_api == "completions":
            found = await self._choose_completions(request, attempts)
            if found is not None:
                return found[0], "logprobs", found[1]
            self._choice_api = "chat"
        if self._choice_api == "chat":
            found = await self._choose_chat(request, attempts)
            if found is not None:
                return found[0], "logprobs", found[1]
            self._choice_api = "structured"
        logprobs, prompt_tokens = await self._choose_structured(request, attempts)
        return logprobs, "structured", prompt_tokens

    async def _choose_completions(
        self, request: ChoiceRequest, attempts: list[Attempt]
    ) -> tuple[dict[str, float | None], int | None] | None:
        """Top log-probs of the first generated token after the raw prompt; None if the server cannot say.

        A choice missing from the top ``TOP_LOGPROBS`` (a multi-token "10", an unlikely letter) is read token by
        token (``_chained_logprob``): next-token requests on longer prompts that share the cached prefix.
        """
        found = await self._next_top(request.prompt, attempts)
        if found is None:
            return None
        top, prompt_tokens = found
        result: dict[str, float | None] = {c: top.get(c) for c in request.choices}
        missing = [c for c in request.choices if result[c] is None]
        chained = await asyncio.gather(
            *(self._chained_logprob(request.prompt, c, top, attempts) for c in missing), return_exceptions=True
        )  # all finish before the result is built, so no attempt is appended after it
        for choice, value in zip(missing, chained):
            if isinstance(value, BaseException):
                raise value
            result[choice] = value
        return result, prompt_tokens

    async def _next_top(self, prompt: str, attempts: list[Attempt]) -> tuple[dict[str, float], int | None] | None:
        """The top log-probs of the next token after raw ``prompt``; None when the server lacks completions."""

        async def send(client: Any) -> tuple[dict[str, float] | None, int | None]:
            response = await client.completions.create(
                model=self.model, prompt=prompt, max_tokens=1, temperature=0, logprobs=TOP_LOGPROBS
            )
            logprobs = _first_choice(response).logprobs
            top = logprobs.top_logprobs if logprobs is not None else None
            return (dict(top[0]) if top and top[0] else None), getattr(response.usage, "prompt_tokens", None)

        try:
            top, prompt_tokens = await self._with_retries(send, attempts)
        except _Failure as gave_up:
            if gave_up.status in NO_ENDPOINT_STATUS:
                return None
            raise
        return None if top is None else (top, prompt_tokens)

    async def _chained_logprob(self, prompt: str, choice: str, top: dict[str, float],
                               attempts: list[Attempt]) -> float | None:
        """log P(choice | prompt) read token by token (the longest top token that continues the choice, then the
        next token after ``prompt`` plus what is spelt so far); an echo request only when a step cannot be read.
        It follows the one tokenization the top tokens spell: other spellings are left out, a small underestimate.
        """
        spelt, total = "", 0.0
        for _ in range(MAX_CHAIN):
            rest = choice[len(spelt):]
            steps = [t for t in top if t and rest.startswith(t)]
            if not steps:
                break
            token = max(steps, key=len)
            spelt, total = spelt + token, total + top[token]
            if spelt == choice:
                return total
            found = await self._next_top(prompt + spelt, attempts)
            if found is None:
                break
            top = found[0]
        return await self._echo_logprob(prompt, choice, attempts)

    async def _echo_logprob(self, prompt: str, choice: str, attempts: list[Attempt]) -> float | None:
        """log P(choice | prompt) from the prompt log-probs of ``prompt + choice`` (``echo=True``).

        vLLM returns, for every prompt token, its text and its log-prob given the tokens before it (the first
        token has None), then the one generated token. The choice's log-prob is the sum over the trailing prompt
        tokens that spell it. None when the tokenizer merged the choice with the prompt's last characters, so
        that no run of tokens spells exactly the choice.
        """

        async def send(client: Any) -> float | None:
            response = await client.completions.create(
                model=self.model, prompt=prompt + choice, max_tokens=1, temperature=0, logprobs=1, echo=True
            )
            logprobs = _first_choice(response).logprobs
            if logprobs is None or not logprobs.tokens:
                raise _BadResponse("echo request returned no prompt log-probs")
            n_prompt = getattr(response.usage, "prompt_tokens", None) or len(logprobs.tokens) - 1
            return choice_tail_logprob(logprobs.tokens[:n_prompt], logprobs.token_logprobs[:n_prompt], choice)

        return await self._with_retries(send, attempts)

    async def _choose_chat(
        self, request: ChoiceRequest, attempts: list[Attempt]
    ) -> tuple[dict[str, float | None], int | None] | None:
        """Fallback for servers without ``/v1/completions``: chat ``top_logprobs`` of the first reply token (the
        chat template wraps the prompt: an approximation, kept because a probability beats a bare choice)."""

        async def send(client: Any) -> tuple[dict[str, float] | None, int | None]:
            response = await client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": request.prompt}],
                max_tokens=1,
                temperature=0,
                logprobs=True,
                top_logprobs=TOP_LOGPROBS,
            )
            logprobs = _first_choice(response).logprobs
            content = logprobs.content if logprobs is not None else None
            if not content:
                return None, None
            top = {t.token: t.logprob for t in content[0].top_logprobs or []}
            return top, getattr(response.usage, "prompt_tokens", None)

        top, prompt_tokens = await self._with_retries(send, attempts)
        if top is None:
            return None
        return {c: top.get(c) for c in request.choices}, prompt_tokens

    async def _choose_structured(
        self, request: ChoiceRequest, attempts: list[Attempt]
    ) -> tuple[dict[str, float | None], int | None]:
        """Last resort: constrain a greedy reply to one of the choices; it gets log-prob 0, the others None."""
        choices = list(request.choices)

        async def send(client: Any) -> tuple[str, int | None]:
            response = await client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": request.prompt}],
                temperature=0,
                max_tokens=8 + max(len(c) for c in choices),  # a token spells at least one character
                extra_body={"structured_outputs": {"choice": choices}},
            )
            picked = _first_choice(response).message.content or ""
            return picked.strip(), getattr(response.usage, "prompt_tokens", None)

        picked, prompt_tokens = await self._with_retries(send, attempts)
        return {c: (0.0 if c == picked else None) for c in choices}, prompt_tokens

    # --- retries and the in-flight window -------------------------------------------------------------------

    async def _with_retries(self, send: Callable[[Any], Awaitable[Any]], attempts: list[Attempt]) -> Any:
        """``send(client)`` until it succeeds, at most ``max_retries + 1`` tries, one ``Attempt`` appended each.

        The window is released during backoff sleeps, so a failing request does not hold a slot others could use.
        """
        failure: _Failure | None = None
        for retry in range(self.max_retries + 1):
            if failure is not None:
                await asyncio.sleep(self._backoff_s(retry, failure.retry_after_s))
            ok, value, attempt = await self._try_once(send, number=len(attempts) + 1)
            attempts.append(attempt)
            if ok:
                return value
            failure = value
            if not failure.retryable:
                break
        assert failure is not None
        raise failure

    async def _try_once(self, send: Callable[[Any], Awaitable[Any]], number: int) -> tuple[bool, Any, Attempt]:
        """One request on the wire, inside the window, on the least busy replica; never raises for API errors."""
        state = self._loop_state()
        async with state.window:
            replica = state.pick()
            replica.in_flight += 1
            started, clock = time.time(), time.monotonic()
            try:
                async with asyncio.timeout(self.timeout_s):
                    value = await send(replica.client)
            except Exception as exc:
                failure = _classify(exc, self.timeout_s)
                attempt = Attempt(number, "failed", time.monotonic() - clock, started, error=failure.message)
                if failure.retryable:  # the server's fault (down, overloaded), not the request's
                    replica.observe(attempt.latency_s, failed=True)
                return False, failure, attempt
            finally:
                replica.in_flight -= 1
        latency = time.monotonic() - clock
        replica.observe(latency)
        return True, value, Attempt(number, "ok", latency, started)

    def _backoff_s(self, retry: int, retry_after_s: float | None) -> float:
        """Capped exponential backoff with "equal jitter" (half fixed, half random), spreading retry storms.

        A server's ``Retry-After`` is honoured up to the cap.
        """
        delay = min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)
        if retry_after_s is not None:
            delay = max(delay, min(retry_after_s, self.backoff_max_s))
        return delay

    def _loop_state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        if self._state is None or self._state.loop is not loop:
            replicas = [_Replica(url, self._make_client(url)) for url in self.base_urls]
            self._state = _LoopState(loop, replicas, self.concurrency)
        return self._state

    def _make_client(self, base_url: str) -> Any:
        """An ``AsyncOpenAI`` client with retries off and a connection pool as wide as the window."""
        import openai

        http_lib = openai_http_library()
        limits = http_lib.Limits(max_connections=self.concurrency + 8, max_keepalive_connections=self.concurrency + 8)
        http = openai.DefaultAsyncHttpxClient(limits=limits, timeout=http_lib.Timeout(self.timeout_s))
        return openai.AsyncOpenAI(
            base_url=base_url, api_key=self.api_key, max_retries=0, timeout=self.timeout_s, http_client=http
        )


def openai_http_library() -> Any:
    """The HTTP library the installed openai's client is built on (httpx2 for openai 3.x, httpx before it).

    The pool's ``Limits`` and ``Timeout`` must be that library's own classes. Asking openai, instead of importing
    one by name, keeps the engine working with whichever openai is installed (vLLM's image keeps its own).
    """
    import importlib

    import openai

    base = next(c for c in openai.DefaultAsyncHttpxClient.__mro__[1:] if c.__name__ == "AsyncClient")
    return importlib.import_module(base.__module__.partition(".")[0])


def choice_tail_logprob(tokens: list[str], logprobs: list[float | None], choice: str) -> float | None:
    """Sum the log-probs of the trailing tokens that spell ``choice`` exactly; None if no such run exists.

    ``tokens``/``logprobs`` are the prompt tokens of ``prompt + choice`` as an echo request returns them.
    """
    text, total = "", 0.0
    for token, logprob in zip(reversed(tokens), reversed(logprobs)):
        if logprob is None:  # the first token of a sequence is never scored
            return None
        text, total = token + text, total + logprob
        if len(text) >= len(choice):
            break
    return total if text == choice else None
