"""Replica choice of the OpenAI engine: least-in-flight until measured, then weighted by measured throughput.

The end-to-end test uses the fake OpenAI server of tests/openai_fakes.py with a fixed number of slots, so each
replica has a throughput (slots / delay) and requests beyond its slots queue, as on a real server.
"""

from __future__ import annotations

import asyncio

import pytest
from openai_fakes import FakeServer, chat_request, engine_for, run

from rlaif.engines.replicas import SLOWEST_RATIO, Replica, pick


def fill(replicas: list[Replica], requests: int) -> list[int]:
    """Pick ``requests`` times with nothing finishing, as the window fills; returns the picks per replica."""
    turn, picks = 0, [0] * len(replicas)
    for _ in range(requests):
        i = pick(replicas, turn)
        replicas[i].in_flight += 1
        picks[i] += 1
        turn = (i + 1) % len(replicas)
    return picks


def test_unmeasured_replicas_are_least_in_flight_round_robin() -> None:
    assert fill([Replica("a", None), Replica("b", None), Replica("c", None)], 7) == [3, 2, 2]
    busy = [Replica("a", None, in_flight=3), Replica("b", None)]
    assert fill(busy, 3) == [0, 3]


def test_measured_replicas_carry_load_in_proportion_to_their_speed() -> None:
    assert fill([Replica("fast", None, latency_s=0.1), Replica("slow", None, latency_s=0.3)], 8) == [6, 2]
    # One measured, one not yet: the unmeasured one counts as fast as the fastest, so it gets tried.
    assert fill([Replica("a", None, latency_s=0.5), Replica("new", None)], 2) == [1, 1]


def test_failures_push_a_replica_away_but_it_is_still_probed() -> None:
    dead, good = Replica("dead", None, latency_s=0.1), Replica("good", None, latency_s=0.1)
    for _ in range(10):
        dead.observe(0.001, failed=True)  # connection refused: instant, but it must not look fast
    assert dead.latency_s > 50
    picks = fill([dead, good], 40)
    assert picks[0] == 1 and picks[1] == 39  # capped at SLOWEST_RATIO x the fastest: one probe in 40
    assert SLOWEST_RATIO == 20
    dead.observe(0.1)  # answering again brings it back, step by step
    assert dead.latency_s < 2 * 50


class SlottedServer(FakeServer):
    """The fake server with ``slots`` requests served at once, ``delay`` seconds each; more wait their turn."""

    def __init__(self, *, slots: int, delay: float):
        self.slots = slots
        super().__init__(delay=delay)

    async def _answer(self, method, path, body):
        if method == "GET":
            return await super()._answer(method, path, body)
        if getattr(self, "slot_gate", None) is None:  # not `gate`: the base server has a gate of its own
            self.slot_gate = asyncio.Semaphore(self.slots)  # made on the server's own loop, at its first request
        async with self.slot_gate:
            return await super()._answer(method, path, body)


def served(measure: bool, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    fast, slow = SlottedServer(slots=8, delay=0.03), SlottedServer(slots=8, delay=0.3)
    try:
        with monkeypatch.context() as m:
            if not measure:  # what least-in-flight alone does with the same servers
                m.setattr(Replica, "observe", lambda self, latency_s, failed=False: None)
            engine = engine_for(fast, slow, concurrency=8)
            done = run(engine, *(engine.chat(chat_request(f"q{i}")) for i in range(200)))
        assert all(d.ok for d in done)
        return len(fast.seen), len(slow.seen)
    finally:
        fast.close()
        slow.close()


def test_two_replicas_of_different_speeds_are_weighted_by_measured_speed(monkeypatch) -> None:
    weighted_fast, weighted_slow = served(True, monkeypatch)
    plain_fast, plain_slow = served(False, monkeypatch)
    assert weighted_fast + weighted_slow == plain_fast + plain_slow == 200
    # Least-in-flight keeps half the window on the slow replica (24-28 of 200 requests landed there on 2 busy
    # cores); weighted by measured latency it gets the first requests, sent before anything was measured, and
    # then only what finishes sooner there than behind the fast replica's queue (8-10).
    assert 1 <= weighted_slow and 2 * weighted_slow <= plain_slow
