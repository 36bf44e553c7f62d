"""Many writer processes into one dataset: the lake (PostgreSQL catalog, Parquet files) against one DuckDB file.

Each writer is a process of its own committing ``--batches`` batches of ``--rows`` generation-like rows (~1.3 KB,
as bench/concurrent_runs.py makes them) with ``Store.write``, back to back, as a generation run's flushes do at
full speed. Every batch repeats ``--overlap`` rows of the previous one, so the dedup is exercised too. On the
file, writers take turns at the lock; on the lake they commit at once and a write that loses a commit race is
retried whole. At the end every key must be stored exactly once in both.

    python bench/lake_writers.py                        # 1 and 3 writers, both stores (~2-4 min on 2 cores)
    python bench/lake_writers.py --writers 3 --batches 40 --rows 500

PostgreSQL is started from Debian's binaries as tests/pg_server.py does. Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from concurrent_runs import generation_row  # noqa: E402  (the same rows as the two-runs benchmark)


def writer(db: str, name: str, batches: int, rows: int, overlap: int) -> dict:
    """One writer process: ``batches`` writes; returns its timings and the store's conflict/lock counts."""
    from rlaif.store import Store

    store = Store(db, lock_timeout_s=300)
    store.migrate()
    start, latencies = time.monotonic(), []
    for b in range(batches):
        first = max(0, b * rows - overlap)
        batch = [generation_row(f"{name}-{i:09d}", name) for i in range(first, (b + 1) * rows)]
        t = time.monotonic()
        store.write({"generations": batch})
        latencies.append(time.monotonic() - t)
    s = store.stats
    return {"seconds": time.monotonic() - start, "max_write_s": max(latencies), "commits": s.commits,
            "conflicts": s.conflicts, "lock_waits": s.waited, "lock_wait_s": round(s.wait_s, 3)}


def run_case(db: str, writers: int, batches: int, rows: int, overlap: int) -> dict:
    from rlaif.store import Store

    Store(db).migrate()  # the schema first: the timed part is the writes
    start = time.monotonic()
    procs = [subprocess.Popen([sys.executable, __file__, "--child", db, f"w{i}", str(batches), str(rows),
                               str(overlap)], stdout=subprocess.PIPE, text=True) for i in range(writers)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=1800)
        if proc.returncode:
            raise SystemExit(f"a writer failed ({proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    wall = time.monotonic() - start
    (n, k), = [tuple(r.values()) for r in Store(db).fetch(
        "SELECT count(*) AS n, count(DISTINCT key) AS k FROM generations")]
    expected = writers * batches * rows
    assert n == k == expected, f"{n} rows, {k} keys, expected {expected}"
    return {"store": "lake" if db.startswith("ducklake:") else "file", "writers": writers, "rows": expected,
            "wall_s": round(wall, 2), "rows_per_s": round(expected / wall), "commits": sum(r["commits"] for r in
            results), "conflicts": sum(r["conflicts"] for r in results), "lock_waits": sum(r["lock_waits"] for r in
            results), "max_write_s": round(max(r["max_write_s"] for r in results), 2)}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        db, name, batches, rows, overlap = sys.argv[2:7]
        print(json.dumps(writer(db, name, int(batches), int(rows), int(overlap))))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rows", type=int, default=256, help="new rows per batch (a Writer's max_rows)")
    parser.add_argument("--overlap", type=int, default=16, help="rows of the previous batch written again")
    args = parser.parse_args()
    from pg_server import PgServer

    server = PgServer().start()
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="rlaif-lake-bench-") as tmp:
            for n in args.writers:
                lake = f"ducklake:postgres:{server.create_db(f'bench{n}')}"
                from rlaif.store import Store

                Store(lake, data_path=Path(tmp) / f"lake{n}").migrate()
                for db in (str(Path(tmp) / f"file{n}.duckdb"), lake):
                    results.append(run_case(db, n, args.batches, args.rows, args.overlap))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        server.stop()
    print(json.dumps({"machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                      "load_avg": os.getloadavg(), "batches": args.batches, "rows": args.rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
