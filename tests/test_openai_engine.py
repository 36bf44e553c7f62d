"""The OpenAI-compatible engine against a small fake server on loopback (tests/openai_fakes.py): retries, the
window, replicas, discovery and statistics. Choices and scores are in tests/test_openai_choices.py.
"""

from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import free_port
from openai_fakes import MODEL, FakeClock, FakeServer, chat_request, engine_for, run, until

from rlaif.engines import openai_endpoint, openai_engine
from rlaif.engines.base import run_all
from rlaif.engines.openai_endpoint import list_models, prefix_cache_stats
from rlaif.engines.openai_engine import OpenAIEngine
from rlaif.errors import EngineError

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
    [done] = run(engine, engine.chat(chat_request()))
    # The timeout, not the stall's end, ended the first try: a try that waited the stall out would be "ok".
    assert done.ok and [a.status for a in done.attempts] == ["failed", "ok"]
    assert done.attempts[0].error == "timeout after 0.3 s"
    assert done.attempts[0].latency_s >= 0.25  # it waited for the timeout (no upper bound: speed is for bench/)


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
    gate = threading.Event()
    server = FakeServer(gate=gate)
    try:
        engine = engine_for(server, concurrency=5)

        async def scenario() -> tuple[int, list]:
            tasks = [asyncio.create_task(engine.chat(chat_request(f"q{i}"))) for i in range(30)]
            await until(lambda: server.active == 5)  # the first window, held unanswered by the gate
            in_window = len(server.seen)  # nothing came back, so nothing beyond the window went out
            gate.set()
            return in_window, await asyncio.gather(*tasks)

        in_window, done = run(engine, scenario())[0]
        assert in_window == 5
        assert all(d.ok for d in done) and len(server.seen) == 30
        assert server.max_active == 5
    finally:
        gate.set()
        server.close()


def test_the_window_is_released_during_backoff(monkeypatch):
    server = FakeServer(delay=0.05)
    try:
        server.faults.append("500")
        engine = engine_for(server, concurrency=1)

        def contents() -> list[str]:
            return [body["messages"][0]["content"] for _, _, body in server.seen]

        async def backoff(delay: float) -> None:  # the engine's only sleep: its backoff lasts until "second" is in
            await until(lambda: "second" in contents())

        monkeypatch.setattr(openai_engine, "asyncio", SimpleNamespace(**{**vars(asyncio), "sleep": backoff}))

        async def second() -> Any:
            await until(lambda: contents() == ["first"])  # the first request holds the only slot
            return await engine.chat(chat_request("second"))

        first, later = run(engine, engine.chat(chat_request("first")), second())
        assert first.ok and later.ok
        order = [body["messages"][0]["content"] for _, _, body in server.seen]
        assert order == ["first", "second", "first"]  # "second" ran while "first" slept between its tries
    finally:
        server.close()


def test_requests_spread_over_replicas():
    gate = threading.Event()
    one, two = FakeServer(gate=gate), FakeServer(gate=gate)
    try:
        engine = engine_for(one, two, concurrency=8)

        async def scenario() -> tuple[tuple[int, int], list]:
            tasks = [asyncio.create_task(engine.chat(chat_request(f"q{i}"))) for i in range(24)]
            await until(lambda: len(one.seen) + len(two.seen) == 8)  # the first window, unanswered
            first_window = (len(one.seen), len(two.seen))
            gate.set()
            return first_window, await asyncio.gather(*tasks)

        first_window, done = run(engine, scenario())[0]
        assert first_window == (4, 4)  # fewest in flight first, ties round-robin; later ones follow replies
        assert all(d.ok for d in done) and len(one.seen) + len(two.seen) == 24
    finally:
        gate.set()
        one.close()
        two.close()


def test_the_engine_survives_several_event_loops(server):
    engine = engine_for(server)
    first = run_all([engine.chat(chat_request("a"))])
    second = run_all([engine.chat(chat_request("b"))])
    assert first[0].ok and second[0].ok

# --- discovery and statistics -------------------------------------------------------------------------------


def test_list_models_and_from_settings(server, settings):
    assert list_models(server.url) == [MODEL]
    engine = OpenAIEngine.from_settings(settings.model_copy(update={"base_url": [server.url], "model": MODEL}))
    assert engine.model == MODEL and engine.concurrency == settings.concurrency
    with pytest.raises(EngineError, match=r"'other' is not served at .*it serves: fake-model"):
        OpenAIEngine.from_settings(settings.model_copy(update={"base_url": [server.url], "model": "other"}))


def test_an_unreachable_endpoint_fails_fast_with_a_hint(settings, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/v1"
    clock = FakeClock()  # the waiting is counted on a fake clock: refused connections take no time to count
    monkeypatch.setattr(openai_endpoint, "time", clock)
    with pytest.raises(EngineError, match=r"no OpenAI-compatible server at .*rlaif serve"):
        OpenAIEngine.from_settings(settings.model_copy(update={"base_url": [url]}), wait_s=1.0)
    assert clock.now == pytest.approx(1.0) and clock.sleeps == 2  # three tries in wait_s, then it gave up


def test_prefix_cache_stats_read_vllm_metrics(server):
    assert prefix_cache_stats(server.url) == {"queries": 400.0, "hits": 300.0, "hit_rate": 0.75}
    missing = prefix_cache_stats(f"http://127.0.0.1:{free_port()}/v1")
    assert missing == {"queries": None, "hits": None, "hit_rate": None}
