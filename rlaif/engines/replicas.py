"""Choosing among replicas of one model (several OpenAI-compatible base URLs): where a request finishes soonest.

Each replica keeps a moving average of its request latency. A new request goes to the replica with the least
``(in_flight + 1) x mean latency``: the "peak EWMA" cost of Finagle's and Linkerd's load balancers. The mean
latency is the inverse of a replica's measured throughput per request in flight (the request mix is the same
random mix everywhere), so a replica twice as fast carries about twice the requests, and one whose latency
climbs as it fills up sheds load to the others. Before anything is measured every cost is ``in_flight + 1``:
least-in-flight, ties round-robin.

Failures that are the server's fault (connection refused, timeouts, 5xx, 429) double the replica's average, so
a dead or overloaded server is soon avoided; its cost is capped at ``SLOWEST_RATIO`` times the fastest replica's,
so it is still tried now and then and comes back when it answers again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

LATENCY_ALPHA = 0.3  # weight of the newest sample in a replica's latency average
SLOWEST_RATIO = 20.0  # a replica counts as at most this many times slower than the fastest
FAILURE_FLOOR_S = 0.05  # a failure counts as at least this slow, even when the refusal was instant


@dataclass
class Replica:
    """One endpoint: its client, the requests on the wire, and its measured mean latency (None until measured)."""

    url: str
    client: Any  # openai.AsyncOpenAI
    in_flight: int = 0
    latency_s: float | None = None

    def observe(self, latency_s: float, *, failed: bool = False) -> None:
        """Fold one finished try into the average; a failure the server caused doubles it."""
        if failed:
            self.latency_s = 2 * max(self.latency_s or 0.0, latency_s, FAILURE_FLOOR_S)
        elif self.latency_s is None:
            self.latency_s = latency_s
        else:
            self.latency_s += LATENCY_ALPHA * (latency_s - self.latency_s)


def pick(replicas: list[Replica], turn: int) -> int:
    """The index of the replica with the least cost; among equal costs, the first from ``turn`` on."""
    measured = [r.latency_s for r in replicas if r.latency_s is not None]
    fastest = min(measured) if measured else 1.0

    def cost(r: Replica) -> float:
        latency = fastest if r.latency_s is None else min(r.latency_s, SLOWEST_RATIO * fastest)
        return (r.in_flight + 1) * latency

    costs = [cost(r) for r in replicas]
    least = min(costs)
    n = len(replicas)
    return next(i for i in ((turn + k) % n for k in range(n)) if costs[i] <= least * (1 + 1e-9))
