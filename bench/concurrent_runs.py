"""Two writers and a reader on one DuckDB file: lock waits, flush latency, staleness and reader latency.

Each writer is a process of its own running the project's ``Writer`` (background thread, default flush sizes),
fed generation-like rows (~1.3 KB) at a fixed rate, as a generation run feeds it. The reader is a process that
runs ``rlaif sql``'s query path (``sandbox_query``) back to back with a short pause, as a user watching a run
would. At the end every row of both writers must be in the file exactly once.

    python bench/concurrent_runs.py                      # the scenarios of docs/storage.md (~3 min on 2 cores)
    python bench/concurrent_runs.py --rate 2000 --base-rows 1000000 --seconds 20 --max-busy 1.0

Figures go to docs/storage.md ("Two runs at once"), with the machine's load beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROW_TEXT = "x" * 400
OUTPUT_TEXT = "y" * 800


def generation_row(key: str, run_id: str) -> dict:
    from rlaif.store import utcnow

    return {"key": key, "run_id": run_id, "kind": "chat", "stage": "respond", "prompt_id": key[:16],
            "messages": [{"role": "user", "content": ROW_TEXT}], "params": '{"temperature": 0.7}',
            "engine": "fake", "model": "m", "output": OUTPUT_TEXT, "completion_tokens": 160,
            "latency_s": time.monotonic(),  # the add time (CLOCK_MONOTONIC is shared by processes): staleness
            "created_at": utcnow()}


def grow(db: Path, rows: int) -> None:
    """Fill the generations table to ``rows`` rows in large batches, so flushes meet a realistic index."""
    from rlaif.store import Store

    store = Store(db)
    store.migrate()
    done = 0
    while done < rows:
        n = min(20_000, rows - done)
        store.write({"generations": [generation_row(f"base-{i:012d}", "base") for i in range(done, done + n)]})
        done += n


def writer(db: Path, name: str, rate: float, seconds: float, max_busy: float) -> dict:
    from rlaif.store import Store, Writer

    store = Store(db, lock_timeout_s=120)
    flushes: list[dict] = []
    inner_write = store.write

    def timed_write(batches: dict[str, list[dict]]) -> dict[str, int]:
        rows = batches.get("generations", [])
        oldest = min((r["latency_s"] for r in rows), default=time.monotonic())
        before = store.stats.wait_s
        t0 = time.monotonic()
        counts = inner_write(batches)
        t1 = time.monotonic()
        flushes.append({"rows": len(rows), "s": t1 - t0, "held_s": store.last_hold_s,
                        "wait_s": store.stats.wait_s - before, "staleness_s": t1 - oldest})
        return counts

    store.write = timed_write  # type: ignore[method-assign]
    w = Writer(store, background=True, max_busy=max_busy)
    start = time.monotonic()
    added = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * rate) - added
        for _ in range(due):
            w.add("generations", generation_row(f"{name}-{added:09d}", name))
            added += 1
        time.sleep(0.005)
    w.close()
    return {"name": name, "added": added, "wall_s": time.monotonic() - start, "flushes": flushes,
            "opens": store.stats.opens, "waited_opens": store.stats.waited, "wait_s": store.stats.wait_s,
            "max_wait_s": store.stats.max_wait_s, "held_s": store.stats.held_s}


def reader(db: Path, seconds: float, pause_s: float) -> dict:
    from rlaif.errors import StoreError
    from rlaif.sandbox import sandbox_query

    latencies, errors = [], []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        t0 = time.monotonic()
        try:
            sandbox_query(db, "SELECT run_id, count(*) AS n FROM generations GROUP BY run_id", fmt="json")
        except StoreError as exc:
            errors.append(str(exc))
        latencies.append(time.monotonic() - t0)
        time.sleep(pause_s)
    return {"queries": len(latencies), "latencies": latencies, "errors": errors}


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def scenario(rate: float, base_rows: int, seconds: float, max_busy: float, work: Path, writers: int = 2) -> dict:
    db = work / f"bench-{int(rate)}-{base_rows}-{max_busy}.duckdb"
    for path in (db, Path(f"{db}.wal")):
        path.unlink(missing_ok=True)
    base = work / f"base-{base_rows}.duckdb"  # grown once per size, copied for each scenario
    if not base.exists():
        grow(base, base_rows)
    shutil.copyfile(base, db)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    me = [sys.executable, __file__]
    common = ["--db", str(db), "--seconds", str(seconds)]
    procs = [subprocess.Popen(me + ["--role", "writer", "--name", n, "--rate", str(rate), "--max-busy",
                                    str(max_busy)] + common, stdout=subprocess.PIPE, text=True, env=env)
             for n in [f"run-{chr(97 + k)}" for k in range(writers)]]
    procs.append(subprocess.Popen(me + ["--role", "reader"] + common, stdout=subprocess.PIPE, text=True, env=env))
    results = [json.loads(p.communicate(timeout=seconds + 300)[0]) for p in procs]
    read = results.pop()
    writers = results
    from rlaif.store import Store

    counts = {r["run_id"]: r["n"] for r in Store(db).fetch("SELECT run_id, count(*) AS n FROM generations "
                                                            "WHERE run_id <> 'base' GROUP BY run_id")}
    flushes = [f for w in writers for f in w["flushes"]]
    wall = max(w["wall_s"] for w in writers)
    return {
        "writers": len(writers), "rate_per_writer": rate, "base_rows": base_rows, "seconds": seconds,
        "max_busy": max_busy,
        "rows_added": {w["name"]: w["added"] for w in writers}, "rows_stored": counts,
        "flush_log": [[round(f["s"], 3), round(f["staleness_s"], 2), f["rows"]] for f in writers[0]["flushes"]],
        "every_row_once": all(counts.get(w["name"]) == w["added"] for w in writers),
        "flushes": len(flushes), "rows_per_flush": round(statistics.mean(f["rows"] for f in flushes), 1),
        "flush_p50_s": pct([f["s"] for f in flushes], 0.5), "flush_p95_s": pct([f["s"] for f in flushes], 0.95),
        "flush_max_s": max(f["s"] for f in flushes), "hold_p50_s": pct([f["held_s"] for f in flushes], 0.5),
        "writer_waited_opens": sum(w["waited_opens"] for w in writers),
        "writer_opens": sum(w["opens"] for w in writers),
        "writer_max_wait_s": max(w["max_wait_s"] for w in writers),
        "staleness_p95_s": pct([f["staleness_s"] for f in flushes], 0.95),
        "staleness_max_s": max(f["staleness_s"] for f in flushes),
        "file_busy_fraction": round(sum(w["held_s"] for w in writers) / wall, 3),
        "reader_queries": read["queries"], "reader_errors": len(read["errors"]),
        "reader_p50_s": pct(read["latencies"], 0.5), "reader_p95_s": pct(read["latencies"], 0.95),
        "reader_max_s": max(read["latencies"], default=0.0),
    }


SCENARIOS = [  # (rows/s per writer, rows already in the file, pacing)
    (150, 10_000, 0.2),  # a GPU run's rate: ~60 engine calls/s, a generation and an attempt row each
    (2000, 10_000, 0.2),  # a cluster's worth of engines feeding each run
    (2000, 10_000, 1.0),  # the same without pacing (the writer flushes as soon as a flush is due)
    (150, 1_000_000, 0.2),  # a big database: each flush checks a 1M-row primary key
    (2000, 1_000_000, 0.2),
    (2000, 1_000_000, 1.0),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="bench", choices=["bench", "writer", "reader"])
    parser.add_argument("--db", type=Path)
    parser.add_argument("--name", default="run-a")
    parser.add_argument("--rate", type=float)
    parser.add_argument("--base-rows", type=int)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-busy", type=float)
    parser.add_argument("--writers", type=int, default=2, help="writer processes (with --rate)")
    parser.add_argument("--reader-pause-s", type=float, default=0.1)
    parser.add_argument("--out-json", type=Path)
    args = parser.parse_args()
    if args.role == "writer":
        print(json.dumps(writer(args.db, args.name, args.rate, args.seconds, args.max_busy)))
        return 0
    if args.role == "reader":
        print(json.dumps(reader(args.db, args.seconds, args.reader_pause_s)))
        return 0
    todo = SCENARIOS
    if args.rate is not None:
        todo = [(args.rate, args.base_rows or 10_000, args.max_busy or 0.2, args.writers)]
    print(f"load before: {os.getloadavg()}", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="rlaif-concurrent-") as tmp:
        for rate, base, busy, *count in todo:
            result = scenario(rate, base, args.seconds, busy, Path(tmp), *count)
            results.append(result)
            print(json.dumps({k: v for k, v in result.items() if k not in ("rows_added", "rows_stored", "flush_log")}),
                  flush=True)
    print(f"load after: {os.getloadavg()}", flush=True)
    if args.out_json:
        args.out_json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["every_row_once"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
