"""Where the CPU goes during a run: per process tree, for the whole machine, and sampled over time (Linux /proc).

On 2 cores the engine is CPU-bound, so every CPU second spent by a client, Prefect, DuckDB or anybody else's
process is taken from generation. The benchmark reads these counters around each path, so a missed target can be
traced to who used the CPU, and a run disturbed by other processes shows it.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and all its live descendants.

    The tree is walked through ``/proc/PID/task/TID/children``: a few small reads, cheap enough to sample.
    """
    total, frontier, seen = 0, [root], set()
    while frontier:
        pid = frontier.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
            for task in Path(f"/proc/{pid}/task").iterdir():
                frontier += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return total / os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds used so far by process ``pid`` alone (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (all processes, all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def reading(trees: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process tree, of its root process alone (``<name>_main``) and of the
    machine, with the time (``perf_counter``)."""
    out = {name: tree_cpu_s(pid) for name, pid in trees.items()}
    out.update({f"{name}_main": process_cpu_s(pid) for name, pid in trees.items()})
    out.update(machine=machine_busy_s(), at=time.perf_counter())
    return out


class CpuSampler:
    """``reading(trees)`` once a second in a thread of the benchmark's own process (not the measured one).

    ``time.perf_counter`` is CLOCK_MONOTONIC on Linux, shared by all processes, so moments reported by the
    measured process can be looked up here with ``at``.
    """

    def __init__(self, trees: dict[str, int], every_s: float = 1.0):
        self.trees, self.every_s = trees, every_s
        self.readings: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.readings.append(reading(self.trees))
            self._stop.wait(self.every_s)

    def __enter__(self) -> CpuSampler:  # noqa: PYI034 (a final class in practice)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def at(self, moment: float) -> dict[str, float]:
        """The reading closest to ``moment``."""
        return min(self.readings, key=lambda r: abs(r["at"] - moment))
