"""The OpenAI-compatible engine against a small fake server on loopback: retries, the window, replicas, choices.

The fake is a raw HTTP/1.1 server on ``asyncio`` (about sixty lines) so that it can do what a real server does
when things go wrong: answer 429/5xx/400, stall past the client's timeout, or drop the connection without a reply.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import time
from collections import deque
from typing import Any

import pytest

from rlaif.engines.base import ChatRequest, ChoiceRequest, SamplingParams, run_all
from rlaif.engines.openai_endpoint import list_models, prefix_cache_stats
from rlaif.engines.openai_engine import OpenAIEngine, choice_tail_logprob
from rlaif.errors import EngineError

MODEL = "fake-model"
METRICS = """# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="fake-model"} 400.0
vllm:prefix_cache_hits_total{engine="0",model_name="fake-model"} 300.0
"""


class FakeServer:
    """An OpenAI-compatible server in a background thread; ``faults`` scripts what the next requests get.

    Faults: "429", "500", "503", "400" (that status), "timeout" (stall 5 s), "drop" (close without a reply).
    ``completions=False`` removes ``/v1/completions`` (404); ``logprobs=False`` ignores log-prob requests.
    """

    def __init__(self, *, delay: float = 0.0, completions: bool = True, logprobs: bool = True):
        self.delay, self.completions, self.logprobs = delay, completions, logprobs
        self.faults: deque[str] = deque()
        self.top = {"A": -0.2, "B": -1.8, "C": -4.0}  # top log-probs of the first generated token
        self.top_after: dict[str, dict[str, float]] = {}  # ... instead, after a prompt ending with the key
        self.seen: list[tuple[float, str, dict[str, Any]]] = []  # (arrival time, path, body) of every request
        self.active = self.max_active = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        started.wait(5)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    def close(self) -> None:
        async def shutdown() -> None:
            self._server.close()
            handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def paths(self) -> list[str]:
        return [path for _, path, _ in self.seen]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():  # HTTP/1.1 keep-alive: many requests per connection
                method, path, _ = line.decode().split(" ", 2)
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, value = header.decode().split(":", 1)
                    headers[name.strip().lower()] = value.strip()
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                status, payload = await self._answer(method, path, json.loads(raw) if raw else {})
                if status is None:
                    break  # "drop": close the connection without a reply
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                head = f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                writer.write(head.encode() + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server is shutting down
        finally:
            writer.close()

    async def _answer(self, method: str, path: str, body: dict[str, Any]) -> tuple[int | None, Any]:
        if method == "GET":
            if path == "/metrics":
                return 200, METRICS.encode()
            return 200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]}
        self.seen.append((time.monotonic(), path, body))
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await asyncio.sleep(self.delay)
            fault = self.faults.popleft() if self.faults else None
            if fault == "timeout":
                await asyncio.sleep(5)
            if fault == "drop":
                return None, None
            if fault is not None:
                return int(fault), {"error": {"message": f"scripted {fault}", "code": int(fault)}}
            if path == "/tokenize":
                return 200, self._tokenize(body)
            if path.endswith("/completions") and "chat" not in path:
                return self._completion(body)
            return 200, self._chat(body)
        finally:
            self.active -= 1

    def _chat(self, body: dict[str, Any]) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
        if "structured_outputs" in body:
            content = body["structured_outputs"]["choice"][-1]
        else:
            content = f"seed={body.get('seed')}: {body['messages'][-1]['content']}"
        if body.get("logprobs") and self.logprobs:
            top = [{"token": t, "logprob": lp} for t, lp in self.top.items()]
            choice["logprobs"] = {"content": [{"token": "A", "logprob": -0.2, "top_logprobs": top}]}
        choice["message"] = {"role": "assistant", "content": content}
        usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        head = {"id": "c1", "object": "chat.completion", "created": 0, "model": MODEL}
        return {**head, "choices": [choice], "usage": usage}

    @staticmethod
    def _tokenize(body: dict[str, Any]) -> dict[str, Any]:
        """One token per character; a conversation is templated as <role>content</role> turns, then <assistant>."""
        if "messages" in body:
            text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in body["messages"]) + "<assistant>"
        else:
            text = body["prompt"]
        return {"count": len(text), "max_model_len": 2048, "tokens": [ord(c) for c in text]}

    def _completion(self, body: dict[str, Any]) -> tuple[int, Any]:
        if not self.completions:
            return 404, {"detail": "Not Found"}
        prompt = body["prompt"]
        if isinstance(prompt, list):  # token ids: score each as -(id % 10) / 10, the first one unscored
            scored = [None] + [{str(t): {"logprob": -(t % 10) / 10, "rank": 1, "decoded_token": chr(t)}}
                               for t in prompt[1:]]
            choice = {"index": 0, "text": "x", "finish_reason": "length", "logprobs": None,
                      "prompt_logprobs": scored if body.get("prompt_logprobs") is not None else None}
            usage = {"prompt_tokens": len(prompt), "completion_tokens": 1, "total_tokens": len(prompt) + 1}
            return 200, {"id": "t2", "object": "text_completion", "created": 0, "model": MODEL,
                         "choices": [choice], "usage": usage}
        if body.get("echo"):  # one token per character, each scored -0.5; then one generated token "x"
            tokens = list(prompt) + ["x"]
            logprobs = {"tokens": tokens, "token_logprobs": [None] + [-0.5] * len(prompt), "top_logprobs": None}
            n_prompt = len(prompt)
        else:
            top = next((t for end, t in self.top_after.items() if prompt.endswith(end)), self.top)
            tokens, n_prompt = ["A"], 5
            logprobs = {"tokens": tokens, "token_logprobs": [-0.2], "top_logprobs": [top]}
        choice = {"index": 0, "text": "".join(tokens), "finish_reason": "length", "logprobs": logprobs}
        usage = {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}
        head = {"id": "t1", "object": "text_completion", "created": 0, "model": MODEL}
        return 200, {**head, "choices": [choice], "usage": usage}


@pytest.fixture
def server():
    fake = FakeServer()
    yield fake
    fake.close()


def engine_for(*servers: FakeServer, **options: Any) -> OpenAIEngine:
    options = {"backoff_base_s": 0.05, "backoff_max_s": 0.4, "timeout_s": 5.0, **options}
    return OpenAIEngine([s.url for s in servers], MODEL, **options)


def chat_request(text: str = "hello", **params: Any) -> ChatRequest:
    return ChatRequest(key=text, messages=({"role": "user", "content": text},), params=SamplingParams(**params))


def run(engine: OpenAIEngine, *coros: Any) -> list[Any]:
    async def go() -> list[Any]:
        try:
            return list(await asyncio.gather(*coros))
        finally:
            await engine.aclose()

    return asyncio.run(go())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- chat and retries ---------------------------------------------------------------------------------------


def test_chat_sends_the_sampling_options_and_reads_the_reply(server):
    engine = engine_for(server)
    [done] = run(engine, engine.chat(chat_request(seed=7, stop=("\n",), ignore_eos=True, max_tokens=9)))
    assert done.ok and done.text == "seed=7: hello" and done.finish_reason == "stop"
    assert (done.prompt_tokens, done.completion_tokens) == (7, 3)
    assert [a.status for a in done.attempts] == ["ok"]
    sent = server.seen[0][2]
    assert sent["seed"] == 7 and sent["stop"] == ["\n"] and sent["max_tokens"] == 9 and sent["ignore_eos"] is True


def test_no_ignore_eos_unless_asked(server):
    engine = engine_for(server)
    run(engine, engine.chat(chat_request()))
    assert "ignore_eos" not in server.seen[0][2] and "seed" not in server.seen[0][2]


def test_transient_failures_are_retried_with_growing_backoff(server):
    server.faults.extend(["429", "500", "drop", "503"])
    engine = engine_for(server, max_retries=4)
    [done] = run(engine, engine.chat(chat_request()))
    assert done.ok and done.text == "seed=None: hello"
    assert [a.status for a in done.attempts] == ["failed"] * 4 + ["ok"]
    assert [a.number for a in done.attempts] == [1, 2, 3, 4, 5]
    errors = [a.error for a in done.attempts[:4]]
    assert errors[0] == "HTTP 429: scripted 429" and errors[1] == "HTTP 500: scripted 500"  # the server's message
    assert errors[2].startswith("connection error") and errors[3].startswith("HTTP 503: ")
    assert all("\n" not in e and len(e) <= 200 for e in errors)
    arrivals = [t for t, _, _ in server.seen]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    # equal jitter: the n-th backoff lies in [d/2, d] with d = 0.05 * 2**(n-1), capped at 0.4
    for n, gap in enumerate(gaps, start=1):
        assert gap >= min(0.4, 0.05 * 2 ** (n - 1)) / 2


def test_a_stalled_request_times_out_and_is_retried(server):
    server.faults.append("timeout")
    engine = engine_for(server, timeout_s=0.3)
    started = time.monotonic()
    [done] = run(engine, engine.chat(chat_request()))
    assert done.ok and [a.status for a in done.attempts] == ["failed", "ok"]
    assert done.attempts[0].error == "timeout after 0.3 s"
    assert 0.25 < done.attempts[0].latency_s < 1.5 and time.monotonic() - started < 3


def test_permanent_failure_returns_an_error_after_max_retries_plus_one_tries(server):
    server.faults.extend(["500"] * 10)
    engine = engine_for(server, max_retries=2)
    [done] = run(engine, engine.chat(chat_request()))
    assert not done.ok and done.text is None and done.error.startswith("HTTP 500: ")
    assert [a.status for a in done.attempts] == ["failed"] * 3
    assert len(server.seen) == 3


def test_a_bad_request_is_not_retried(server):
    server.faults.append("400")
    engine = engine_for(server, max_retries=4)
    [done] = run(engine, engine.chat(chat_request()))
    assert done.error.startswith("HTTP 400: ") and len(done.attempts) == 1 and len(server.seen) == 1


def test_the_window_fills_up_to_concurrency_and_never_beyond():
    server = FakeServer(delay=0.1)
    try:
        engine = engine_for(server, concurrency=5)
        done = run(engine, *(engine.chat(chat_request(f"q{i}")) for i in range(30)))
        assert all(d.ok for d in done) and len(server.seen) == 30
        assert server.max_active == 5
    finally:
        server.close()


def test_the_window_is_released_during_backoff():
    server = FakeServer(delay=0.05)
    try:
        server.faults.append("500")
        engine = engine_for(server, concurrency=1, backoff_base_s=0.6, backoff_max_s=0.6)

        async def second() -> Any:
            await asyncio.sleep(0.02)  # let the first request take the only slot
            return await engine.chat(chat_request("second"))

        first, later = run(engine, engine.chat(chat_request("first")), second())
        assert first.ok and later.ok
        order = [body["messages"][0]["content"] for _, _, body in server.seen]
        assert order == ["first", "second", "first"]  # "second" ran while "first" slept between its tries
    finally:
        server.close()


def test_requests_spread_over_replicas():
    one, two = FakeServer(delay=0.05), FakeServer(delay=0.05)
    try:
        engine = engine_for(one, two, concurrency=8)
        done = run(engine, *(engine.chat(chat_request(f"q{i}")) for i in range(24)))
        assert all(d.ok for d in done)
        assert len(one.seen) + len(two.seen) == 24 and min(len(one.seen), len(two.seen)) >= 8
    finally:
        one.close()
        two.close()


def test_the_engine_survives_several_event_loops(server):
    engine = engine_for(server)
    first = run_all([engine.chat(chat_request("a"))])
    second = run_all([engine.chat(chat_request("b"))])
    assert first[0].ok and second[0].ok


# --- choices ------------------------------------------------------------------------------------------------


def test_choose_reads_top_logprobs_of_the_raw_prompt(server):
    engine = engine_for(server)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="The answer is: (", choices=("A", "B"))))
    assert result.ok and result.method == "logprobs" and result.prompt_tokens == 5
    assert result.logprobs == {"A": -0.2, "B": -1.8}
    assert result.probabilities()["A"] == pytest.approx(1 / (1 + math.exp(-1.6)))
    assert server.paths() == ["/v1/completions"] and server.seen[0][2]["prompt"] == "The answer is: ("


def test_choose_scores_choices_outside_the_top_with_an_echo_request(server):
    engine = engine_for(server)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="Score: ", choices=("10", "A"))))
    assert result.logprobs == {"10": pytest.approx(-1.0), "A": -0.2}  # two characters of -0.5 each
    echo = [body for _, _, body in server.seen if body.get("echo")]
    assert len(echo) == 1 and echo[0]["prompt"] == "Score: 10"


def test_choose_reads_a_multi_token_choice_token_by_token_before_any_echo(server):
    server.top = {"1": -1.0, "2": -1.5}
    server.top_after = {"Score: 1": {"0": -0.5, ")": -0.2}}
    engine = engine_for(server)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="Score: ", choices=("1", "2", "10"))))
    assert result.logprobs == {"1": -1.0, "2": -1.5, "10": -1.5}  # P("1") * P("0" | "1")
    assert [body["prompt"] for _, _, body in server.seen] == ["Score: ", "Score: 1"]
    assert not any(body.get("echo") for _, _, body in server.seen)  # next-token reads only: prefix-cache friendly
    assert len(result.attempts) == 2


def test_score_tokenizes_the_conversation_then_reads_prompt_logprobs(server):
    from rlaif.engines.base import ScoreRequest

    engine = engine_for(server)
    messages = ({"role": "user", "content": "hi"},)
    request = ScoreRequest(key="s", messages=messages, continuation="ok!")
    [first, again] = run(engine, engine.score(request), engine.score(request))
    assert first.ok and first.token_logprobs == [-(ord(c) % 10) / 10 for c in "ok!"]
    assert first.prompt_tokens == len("<user>hi</user><assistant>") and first.tokens == 3
    assert first.mean == pytest.approx(sum(first.token_logprobs) / 3)
    tokenize = [body for _, path, body in server.seen if path == "/tokenize"]
    assert {"messages", "add_generation_prompt"} <= set(tokenize[0]) or {"messages"} <= set(tokenize[1])
    assert any(b.get("add_special_tokens") is False and b.get("prompt") == "ok!" for b in tokenize)
    sent = [body for _, path, body in server.seen if path == "/v1/completions"]
    assert sent[0]["prompt_logprobs"] == 0 and sent[0]["max_tokens"] == 1 and "echo" not in sent[0]
    assert [a.status for a in first.attempts] == ["ok"] * 3
    assert [a.status for a in again.attempts] == ["ok"]  # the same inputs: tokenized once, by the first ask


def test_scores_of_one_conversation_tokenize_it_once(server):
    from rlaif.engines.base import ScoreRequest

    engine = engine_for(server)
    messages = ({"role": "user", "content": "hi"},)
    requests = [ScoreRequest(key=f"s{i}", messages=messages, continuation=c) for i, c in enumerate("abcd")]
    results = run(engine, *(engine.score(r) for r in requests))
    assert all(r.ok and r.tokens == 1 for r in results)
    tokenize = [body for _, path, body in server.seen if path == "/tokenize"]
    assert sum("messages" in b for b in tokenize) == 1 and sum("prompt" in b for b in tokenize) == 4
    assert sum(len(r.attempts) for r in results) == 1 + 4 + 4


def test_score_on_a_server_without_tokenize_is_an_error_result(server):
    from rlaif.engines.base import ScoreRequest

    server.faults.append("400")
    engine = engine_for(server)
    [result] = run(engine, engine.score(ScoreRequest(key="s", messages=({"role": "user", "content": "x"},),
                                                     continuation="")))
    assert not result.ok and result.error.startswith("HTTP 400")


def test_choice_tail_logprob_needs_tokens_that_spell_the_choice():
    assert choice_tail_logprob(["The", " answer", " (", "1", "0"], [None, -1.0, -0.5, -2.0, -0.25], "10") == -2.25
    assert choice_tail_logprob(["The", " answer", " (A"], [None, -1.0, -0.5], "A") is None  # merged with "("
    assert choice_tail_logprob(["AB"], [None], "AB") is None  # the first token is never scored


def test_choose_falls_back_to_chat_top_logprobs_without_completions():
    server = FakeServer(completions=False)
    try:
        engine = engine_for(server)
        request = ChoiceRequest(key="k", prompt="The answer is: (", choices=("A", "B"))
        first, second = run(engine, engine.choose(request)), run(engine, engine.choose(request))
        assert first[0].method == "logprobs" and first[0].logprobs == {"A": -0.2, "B": -1.8}
        assert [a.status for a in first[0].attempts] == ["failed", "ok"]  # the 404 probe is a recorded try
        assert second[0].attempts[0].status == "ok"  # the downgrade is remembered
        assert server.paths() == ["/v1/completions", "/v1/chat/completions", "/v1/chat/completions"]
    finally:
        server.close()


def test_choose_falls_back_to_structured_output_without_logprobs():
    server = FakeServer(completions=False, logprobs=False)
    try:
        engine = engine_for(server)
        [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="Pick: (", choices=("A", "B"))))
        assert result.ok and result.method == "structured" and result.logprobs == {"A": None, "B": 0.0}
        assert result.probabilities() == {"A": 0.0, "B": 1.0}
        assert server.seen[-1][2]["structured_outputs"] == {"choice": ["A", "B"]}
    finally:
        server.close()


def test_choose_failure_is_an_error_result(server):
    server.faults.extend(["503"] * 3)
    engine = engine_for(server, max_retries=2)
    [result] = run(engine, engine.choose(ChoiceRequest(key="k", prompt="p", choices=("A", "B"))))
    assert not result.ok and result.error.startswith("HTTP 503") and len(result.attempts) == 3
    assert result.logprobs == {"A": None, "B": None}


# --- discovery and statistics -------------------------------------------------------------------------------


def test_list_models_and_from_settings(server, settings):
    assert list_models(server.url) == [MODEL]
    engine = OpenAIEngine.from_settings(settings.model_copy(update={"base_url": [server.url], "model": MODEL}))
    assert engine.model == MODEL and engine.concurrency == settings.concurrency
    with pytest.raises(EngineError, match=r"'other' is not served at .*it serves: fake-model"):
        OpenAIEngine.from_settings(settings.model_copy(update={"base_url": [server.url], "model": "other"}))


def test_an_unreachable_endpoint_fails_fast_with_a_hint(settings):
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    with pytest.raises(EngineError, match=r"no OpenAI-compatible server at .*rlaif serve"):
        OpenAIEngine.from_settings(settings.model_copy(update={"base_url": [url]}), wait_s=1.0)
    assert time.monotonic() - started < 4


def test_prefix_cache_stats_read_vllm_metrics(server):
    assert prefix_cache_stats(server.url) == {"queries": 400.0, "hits": 300.0, "hit_rate": 0.75}
    missing = prefix_cache_stats(f"http://127.0.0.1:{free_port()}/v1")
    assert missing == {"queries": None, "hits": None, "hit_rate": None}
