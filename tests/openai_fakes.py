"""A fake OpenAI-compatible server on loopback, and the few calls the engine tests make against it
(tests/test_openai_engine.py, tests/test_openai_choices.py, tests/test_replicas.py).

The fake is a raw HTTP/1.1 server on ``asyncio`` (about sixty lines) so that it can do what a real server does
when things go wrong: answer 429/5xx/400, stall past the client's timeout, or drop the connection without a reply.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from typing import Any

from rlaif.engines.base import ChatRequest, SamplingParams
from rlaif.engines.openai_engine import OpenAIEngine

MODEL = "fake-model"
METRICS = """# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="fake-model"} 400.0
vllm:prefix_cache_hits_total{engine="0",model_name="fake-model"} 300.0
"""


class FakeServer:
    """An OpenAI-compatible server in a background thread; ``faults`` scripts what the next requests get.

    Faults: "429", "500", "503", "400" (that status), "timeout" (stall 5 s), "drop" (close without a reply).
    ``completions=False`` removes ``/v1/completions`` (404); ``logprobs=False`` ignores log-prob requests.
    ``gate``: requests arrive (and are counted) but get no answer until the event is set, so a test can look at
    a window of requests in flight without racing the clock.
    """

    def __init__(self, *, delay: float = 0.0, completions: bool = True, logprobs: bool = True,
                 gate: threading.Event | None = None):
        self.delay, self.completions, self.logprobs, self.gate = delay, completions, logprobs, gate
        self.faults: deque[str] = deque()
        self.top = {"A": -0.2, "B": -1.8, "C": -4.0}  # top log-probs of the first generated token
        self.top_after: dict[str, dict[str, float]] = {}  # ... instead, after a prompt ending with the key
        self.seen: list[tuple[float, str, dict[str, Any]]] = []  # (arrival time, path, body) of every request
        self.active = self.max_active = 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(60):  # generous: a loaded machine starts a thread slowly; the wait ends early
            raise RuntimeError("the fake server did not start")
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
            if self.gate is not None:
                await until(self.gate.is_set)
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


async def until(condition: Any, limit_s: float = 60.0) -> None:
    """Poll ``condition()`` on the event loop until it holds; bounded, generous for a loaded machine."""
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        await asyncio.sleep(0.005)


class FakeClock:
    """``time.monotonic`` and ``time.sleep`` for code that waits: sleeping moves the clock, nothing else does."""

    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, 0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.sleeps += 1
