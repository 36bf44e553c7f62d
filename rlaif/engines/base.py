"""The one engine protocol every backend implements: chat generation, choice log-probs and scoring.

Both calls are async and take one logical request. Callers keep many requests in flight at once (``asyncio``
tasks) and each engine turns that into what its backend does best: the OpenAI engine keeps a continuous window of
HTTP requests open, the in-process engines gather whatever is pending into batches. Stages and flows never see
the difference, and a request is never held back waiting for the slowest member of a fixed batch.

Engines do no storage. Every result carries the list of attempts that produced it (retries included), so the
caller can write one ``attempts`` row per try and one output row per logical request, keyed by ``request.key``.
A request that fails for good comes back as a result with ``error`` set; it does not raise, so the rest of a
run goes on and the next run retries it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, Sequence, TypeVar, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """Sampling options for one generation; part of the request key, so changing one makes a new row."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks only: always produce max_tokens tokens

    def as_dict(self) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict, which deep-copies: this runs for every request key.
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
                "seed": self.seed, "stop": list(self.stop), "ignore_eos": self.ignore_eos}


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to produce. ``key`` is the deterministic id of this logical request."""

    key: str
    messages: tuple[Message, ...]
    params: SamplingParams = SamplingParams()
    # Where the request comes from, for the row that records it; not part of the key, ignored by engines.
    stage: str = ""
    prompt_id: str | None = None


@dataclass(frozen=True)
class ChoiceRequest:
    """Score how likely each of ``choices`` is as the continuation of a raw-text ``prompt``.

    The judge uses this with a prompt ending in ``The answer is: (`` and choices ``("A", "B")``: the paper's
    multiple-choice form (Bai et al. 2022, section 4.1), read from the model's log-probs, not from sampled text.
    The prompt is plain text on purpose: no chat template is applied, because the choice tokens must follow the
    prompt's last character exactly.
    """

    key: str
    prompt: str
    choices: tuple[str, ...] = ("A", "B")
    stage: str = ""
    prompt_id: str | None = None


@dataclass(frozen=True)
class ScoreRequest:
    """The log-likelihood of ``continuation`` as the assistant's reply to the chat conversation ``messages``.

    The engine applies the model's chat template to ``messages`` (ending with the assistant's turn opened, as for
    generation) and scores the continuation's tokens by teacher forcing: each token's log-probability given the
    templated conversation and the continuation tokens before it. The continuation is tokenized on its own and
    appended to the templated prompt's tokens, which is how the model would emit it; no end-of-turn token is
    added. The judge's likelihood-contrast mode compares a response's score under two framings of one
    conversation (pointwise mutual information).
    """

    key: str
    messages: tuple[Message, ...]
    continuation: str
    stage: str = ""
    prompt_id: str | None = None


@dataclass
class Attempt:
    """One try at a request: what the ``attempts`` table stores, one row each."""

    number: int
    status: Literal["ok", "failed"]
    latency_s: float
    started_at: float  # unix time
    error: str | None = None


@dataclass
class Completion:
    """The outcome of a ``ChatRequest``; ``error`` is set (and ``text`` is None) when every attempt failed."""

    key: str
    model: str
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class ChoiceResult:
    """The outcome of a ``ChoiceRequest``.

    ``logprobs`` maps each choice to the engine's log-probability of it as the next token(s), or None when the
    engine did not rank it (it fell outside the returned top log-probs). ``method`` records how it was read:
    ``logprobs`` (real probabilities) or ``structured`` (the engine could only emit one choice; the chosen one
    gets log-prob 0 and the others None).
    """

    key: str
    model: str
    logprobs: dict[str, float | None] = field(default_factory=dict)
    method: Literal["logprobs", "structured"] = "logprobs"
    prompt_tokens: int | None = None
    latency_s: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None
    output: str | None = None  # structured: the raw text the engine emitted, kept when it is no choice

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def readable(self) -> bool:
        """Whether at least one choice has a finite log-prob (else nothing can be read, not even a decision)."""
        return any(lp is not None and math.isfinite(lp) for lp in self.logprobs.values())

    def probabilities(self) -> dict[str, float]:
        """Normalise over the choices only: P(c) = exp(lp_c) / sum_k exp(lp_k); unranked choices get 0.

        Empty when no choice is readable: an unreadable result has no probabilities, never a made-up uniform one.
        """
        finite = {c: lp for c, lp in self.logprobs.items() if lp is not None and math.isfinite(lp)}
        if not finite:
            return {}
        top = max(finite.values())
        weights = {c: math.exp(finite[c] - top) if c in finite else 0.0 for c in self.logprobs}
        total = sum(weights.values())
        return {c: w / total for c, w in weights.items()}


@dataclass
class ScoreResult:
    """The outcome of a ``ScoreRequest``: one log-prob per continuation token (``error`` set when it failed)."""

    key: str
    model: str
    token_logprobs: list[float] | None = None
    prompt_tokens: int | None = None
    latency_s: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def tokens(self) -> int:
        return len(self.token_logprobs or [])

    @property
    def total(self) -> float | None:
        """Sum of the continuation's token log-probs: log P(continuation | conversation)."""
        return math.fsum(self.token_logprobs) if self.token_logprobs else None

    @property
    def mean(self) -> float | None:
        """Per-token log-likelihood, the length-normalised score the judge compares."""
        return self.total / self.tokens if self.token_logprobs else None


@runtime_checkable
class Engine(Protocol):
    """What stages and flows need from a model backend."""

    name: str  # "transformers", "openai", "vllm" or "fake"
    model: str  # the model name recorded on every row

    async def chat(self, request: ChatRequest) -> Completion: ...

    async def choose(self, request: ChoiceRequest) -> ChoiceResult: ...

    async def score(self, request: ScoreRequest) -> ScoreResult: ...

    async def aclose(self) -> None: ...


def content_hash(*parts: Any, length: int = 32) -> str:
    """A stable hex digest of JSON-serialisable parts: the deterministic keys of prompts, requests and rows.

    The digest is of ``json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))``. Parts
    made only of strings, integers, booleans and None (nested in lists and dicts) are encoded by orjson, whose
    output for those is the same bytes and ~10x faster; floats and objects take the json path.
    """
    if _plain(parts, 0):
        try:
            return _hash_json(_orjson_sorted(parts), length)
        except TypeError:  # an integer beyond 64 bits, which orjson refuses
            pass
    return _hash_json(_json(parts), length)


_SCALARS = (str, int, bool, type(None))


def _plain(value: Any, depth: int) -> bool:
    """Only strings, integers, booleans and None, in lists, tuples and str-keyed dicts up to a few levels."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if depth > 4:
        return False
    if kind is list or kind is tuple:
        for v in value:
            if type(v) not in _SCALARS and not _plain(v, depth + 1):
                return False
        return True
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or (type(v) not in _SCALARS and not _plain(v, depth + 1)):
                return False
        return True
    return False


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "as_dict"):
        return obj.as_dict()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    raise TypeError(f"cannot hash {type(obj).__name__}")


def chat_key(messages: Sequence[Message], params: SamplingParams, model: str) -> str:
    """The key of a chat request: same conversation, sampling options and model -> same row.

    Equal to ``content_hash("chat", list(messages), params, model)``, computed faster: the conversation (which
    holds every few-shot exemplar, kilobytes per request) is encoded by orjson, whose output for strings is
    byte-identical to ``json.dumps(sort_keys=True, ensure_ascii=False, separators=(",", ":"))`` (tested over
    every code point); the sampling options, whose floats the two libraries format differently, go through json.
    """
    for m in messages:
        for v in m.values():
            if type(v) is not str:
                return content_hash("chat", list(messages), params, model)
    if type(model) is not str:
        return content_hash("chat", list(messages), params, model)
    return _hash_json(b'["chat",' + _orjson_sorted(list(messages)) + b"," + _params_json(params) + b","
                      + _orjson_sorted(model) + b"]")


def choice_key(prompt: str, choices: Sequence[str], model: str) -> str:
    """The key of a choice request; ``content_hash("choice", prompt, list(choices), model)``, the long prompt
    encoded by orjson as in ``chat_key``."""
    if type(prompt) is not str or type(model) is not str or not all(type(c) is str for c in choices):
        return content_hash("choice", prompt, list(choices), model)
    return _hash_json(b'["choice",' + _orjson_sorted(prompt) + b"," + _orjson_sorted(list(choices)) + b","
                      + _orjson_sorted(model) + b"]")


def _orjson_sorted(value: Any) -> bytes:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _params_json(p: SamplingParams) -> bytes:
    """``json.dumps(p.as_dict(), sort_keys=True, ...)`` spelled out: json writes ints and floats with their
    ``repr`` and strings as orjson does, so only the layout is ours. Other types take the json path."""
    numbers = (p.temperature, p.top_p, p.max_tokens)
    if not all(type(x) in (int, float) and math.isfinite(x) for x in numbers) or type(p.ignore_eos) is not bool \
            or not (p.seed is None or type(p.seed) is int) or not all(type(x) is str for x in p.stop):
        return _json(p)
    seed = "null" if p.seed is None else repr(p.seed)
    return (f'{{"ignore_eos":{"true" if p.ignore_eos else "false"},"max_tokens":{p.max_tokens!r},"seed":{seed},'
            f'"stop":').encode() + _orjson_sorted(list(p.stop)) + \
        f',"temperature":{p.temperature!r},"top_p":{p.top_p!r}}}'.encode()


def _json(value: Any) -> bytes:
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_jsonable)
    return text.encode("utf-8")


def _hash_json(blob: bytes, length: int = 32) -> str:
    return hashlib.sha256(blob).hexdigest()[:length]


def score_key(messages: Sequence[Message], continuation: str, model: str) -> str:
    """The key of a score request: the same conversation, continuation and model score the same."""
    return content_hash("score", list(messages), continuation, model)


# Chat special tokens neutralised in judge prompts when the engine cannot say which its tokenizer has (the
# OpenAI engine: a server does not list them). ChatML (SmolLM2, Qwen), Llama 2/3, Mistral, Gemma, Phi.
DEFAULT_SPECIAL_TOKENS = (
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|eot_id|>", "<s>", "</s>", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",
    "<start_of_turn>", "<end_of_turn>", "<|user|>", "<|assistant|>", "<|system|>", "<|end|>",
)


def special_tokens_of(engine: object) -> tuple[str, ...]:
    """The chat special tokens of ``engine``'s tokenizer when it knows them, else ``DEFAULT_SPECIAL_TOKENS``.

    In-process engines expose ``special_tokens`` (read from their tokenizer); wrappers pass it through.
    """
    tokens = getattr(engine, "special_tokens", None)
    return tuple(tokens) if tokens else DEFAULT_SPECIAL_TOKENS


class EngineWrapper:
    """What every engine wrapper shares (``RecordingEngine``, ``SharedCalls``): the inner engine, its name, model
    and special tokens passed through, and ``aclose``. A subclass implements the calls it intercepts."""

    def __init__(self, engine: Engine):
        self.inner = engine
        self.name = engine.name
        self.model = engine.model
        self.special_tokens = special_tokens_of(engine)

    async def aclose(self) -> None:
        await self.inner.aclose()


T = TypeVar("T")


def run_all(coros: Sequence[Any]) -> list[Any]:
    """Run awaitables concurrently from synchronous code and return their results in order."""

    async def _gather() -> list[Any]:
        return list(await asyncio.gather(*coros))

    return asyncio.run(_gather())


def ok_attempt(started: float, number: int = 1) -> Attempt:
    """The single successful attempt of an engine that does not retry (in-process engines)."""
    return Attempt(number=number, status="ok", latency_s=time.time() - started, started_at=started)


ERROR_CHARS = 200  # an attempt's error is one short line; the server log has the rest


def one_line(text: str, limit: int | None = ERROR_CHARS) -> str:
    """``text`` on one line, whitespace squeezed, at most ``limit`` characters (None: all of it).

    The one home of one-line error text: engine attempts, DuckDB errors, constitution errors.
    """
    squeezed = " ".join(str(text).split())
    return squeezed if limit is None else squeezed[:limit]


def failed_attempt(started: float, exc: BaseException, number: int = 1) -> Attempt:
    """A failed attempt whose error is the exception's message on one line."""
    return Attempt(number=number, status="failed", latency_s=time.time() - started, started_at=started,
                   error=one_line(str(exc) or type(exc).__name__))
