"""MicroBatcher with a fake batch function: how batches form, group, fail and keep serving."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rlaif.engines.batching import MicroBatcher


class FakeBackend:
    """Doubles each number and records every batch it was given."""

    def __init__(self, fail_on: int | None = None):
        self.batches: list[list[int]] = []
        self.fail_on = fail_on

    def __call__(self, batch: list[int]) -> list[int]:
        self.batches.append(list(batch))
        if self.fail_on in batch:
            raise ValueError(f"cannot process {self.fail_on}")
        return [2 * x for x in batch]


async def _submit_all(batcher: MicroBatcher, items: list[int]) -> list:
    return await asyncio.gather(*(batcher.submit(x) for x in items), return_exceptions=True)


def test_concurrent_requests_form_one_batch_with_results_in_order():
    backend = FakeBackend()
    results = asyncio.run(_submit_all(MicroBatcher(backend, max_batch=8), [3, 1, 4, 1, 5]))
    assert results == [6, 2, 8, 2, 10]
    assert backend.batches == [[3, 1, 4, 1, 5]]


def test_max_batch_is_respected_in_arrival_order():
    backend = FakeBackend()
    results = asyncio.run(_submit_all(MicroBatcher(backend, max_batch=4), list(range(10))))
    assert results == [2 * x for x in range(10)]
    assert backend.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_batches_only_mix_requests_with_the_same_group_key():
    backend = FakeBackend()
    batcher = MicroBatcher(backend, max_batch=8, group_key=lambda x: x % 2)
    results = asyncio.run(_submit_all(batcher, [1, 2, 3, 4, 5]))
    assert results == [2, 4, 6, 8, 10]
    assert backend.batches == [[1, 3, 5], [2, 4]]  # the oldest request's group goes first


def test_the_drain_yields_once_so_tasks_created_just_after_the_first_join_its_batch():
    backend = FakeBackend()

    async def scenario() -> list[int]:
        batcher = MicroBatcher(backend, max_batch=8)
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0)  # ``first`` enqueues and schedules the drain task
        rest = [asyncio.create_task(batcher.submit(x)) for x in (2, 3)]
        return await asyncio.gather(first, *rest)

    assert asyncio.run(scenario()) == [2, 4, 6]
    assert backend.batches == [[1, 2, 3]]


def test_an_exception_fails_only_its_own_batch():
    backend = FakeBackend(fail_on=3)
    batcher = MicroBatcher(backend, max_batch=8, group_key=lambda x: x % 2)
    results = asyncio.run(_submit_all(batcher, [1, 2, 3, 4]))
    assert isinstance(results[0], ValueError) and isinstance(results[2], ValueError)
    assert str(results[0]) == "cannot process 3"
    assert results[1::2] == [4, 8]


def test_a_wrong_number_of_results_fails_the_batch():
    batcher = MicroBatcher(lambda batch: batch[:1], max_batch=8)
    results = asyncio.run(_submit_all(batcher, [1, 2]))
    assert all(isinstance(r, RuntimeError) for r in results)
    assert "1 results for 2 requests" in str(results[0])


def test_requests_arriving_during_a_batch_join_the_next_one():
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def slow_backend(batch: list[int]) -> list[int]:
        batches.append(list(batch))
        started.set()
        release.wait(timeout=60)  # the first batch blocks until the late requests are queued (bounded, generous)
        return [-x for x in batch]

    async def scenario() -> list[int]:
        batcher = MicroBatcher(slow_backend, max_batch=8)
        early = [asyncio.create_task(batcher.submit(x)) for x in (1, 2)]
        assert await asyncio.to_thread(started.wait, 60)
        late = [asyncio.create_task(batcher.submit(x)) for x in (3, 4, 5)]
        await asyncio.sleep(0)  # one loop step: the late tasks enqueue; batch 1 is held until release
        release.set()
        return await asyncio.gather(*early, *late)

    assert asyncio.run(scenario()) == [-1, -2, -3, -4, -5]
    assert batches == [[1, 2], [3, 4, 5]]


def test_cancelled_requests_are_skipped():
    backend = FakeBackend()

    async def scenario() -> list[int]:
        batcher = MicroBatcher(backend, max_batch=8)
        tasks = [asyncio.create_task(batcher.submit(x)) for x in (1, 2, 3)]
        await asyncio.sleep(0)  # every task has enqueued; the drain task has not formed a batch yet
        tasks[1].cancel()
        return await asyncio.gather(tasks[0], tasks[2])

    assert asyncio.run(scenario()) == [2, 6]
    assert backend.batches == [[1, 3]]


def test_one_batcher_serves_successive_event_loops():
    backend = FakeBackend()
    batcher = MicroBatcher(backend, max_batch=8)
    assert asyncio.run(_submit_all(batcher, [1, 2])) == [2, 4]
    assert asyncio.run(_submit_all(batcher, [5])) == [10]
    assert backend.batches == [[1, 2], [5]]


def test_batches_run_one_at_a_time_in_a_worker_thread():
    seen_threads, active, overlap = set(), [0], []
    lock = threading.Lock()

    def backend(batch: list[int]) -> list[int]:
        with lock:
            active[0] += 1
            overlap.append(active[0])
        seen_threads.add(threading.get_ident())
        threading.Event().wait(0.01)
        with lock:
            active[0] -= 1
        return batch

    batcher = MicroBatcher(backend, max_batch=2)
    assert asyncio.run(_submit_all(batcher, [1, 2, 3, 4, 5])) == [1, 2, 3, 4, 5]
    assert max(overlap) == 1
    assert seen_threads and threading.get_ident() not in seen_threads


def test_max_batch_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        MicroBatcher(FakeBackend(), max_batch=0)
