"""Two generation runs at once on one DuckDB file, as real processes, with a third process polling `rlaif sql`;
and what a run does when another process holds the file (docs/storage.md, "Two runs at once")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlaif.errors import StoreError
from rlaif.store import Store

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "gen_worker.py"

# Polls `rlaif sql` (the CLI's own entry point, in this process) until the stop file appears; one JSON line each.
READER = textwrap.dedent("""
    import contextlib, io, json, sys, time
    from pathlib import Path
    from rlaif.cli import main
    db, stop = sys.argv[1], Path(sys.argv[2])
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        out, err = io.StringIO(), io.StringIO()
        t0 = time.monotonic()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["--db", db, "sql", "SELECT run_id, count(*) AS n FROM generations GROUP BY run_id",
                       "--format", "json"])
        print(json.dumps({"rc": rc, "s": time.monotonic() - t0, "out": out.getvalue(), "err": err.getvalue()}),
              flush=True)
        time.sleep(0.05)
""")


def child_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLAIF_")}
    return {**env, "PYTHONPATH": str(ROOT), "RLAIF_CONFIG": str(tmp_path / "absent.toml")}


def start_worker(db: Path, tmp_path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), str(db), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=child_env(tmp_path))


def finish(proc: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_runs_at_once_store_every_row_once_while_rlaif_sql_answers(tmp_path: Path) -> None:
    db = tmp_path / "shared.duckdb"
    Store(db).migrate()  # so the reader has tables from its first query on
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(db), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=child_env(tmp_path))
    # Same prompts, different seeds: the runs' requests differ, their prompts rows are shared.
    runs = [start_worker(db, tmp_path, "--seed", str(seed), "--prompts", "24", "--delay", "0.06", "--judge")
            for seed in (1, 2)]
    try:
        summaries = [finish(p) for p in runs]
    finally:
        stop.touch()
        polls = [json.loads(line) for line in reader.communicate(timeout=60)[0].splitlines()]

    store = Store(db)
    rows = {r["run_id"]: r for r in store.fetch("SELECT * FROM runs")}
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"completed"}
    a, b = rows.values()
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"], "the runs must overlap"

    for s in summaries:  # each run's rows, counted by SQL, against what the run itself reported
        assert s["prompts"] == 24 and s["failed_prompts"] == 0 and s["engine_calls"] > 0
        counts = store.fetch(
            "SELECT (SELECT count(*) FROM generations WHERE run_id = $r) AS generations, "
            "(SELECT count(*) FROM attempts WHERE run_id = $r) AS attempts, "
            "(SELECT count(*) FROM responses WHERE run_id = $r) AS responses, "
            "(SELECT count(*) FROM revisions WHERE run_id = $r) AS revisions, "
            "(SELECT count(*) FROM comparisons WHERE run_id = $r) AS comparisons", {"r": s["run_id"]})[0]
        assert s["revisions"] == s["comparisons"] == 24  # one round each, every chain judged
        assert counts == {"generations": s["engine_calls"], "attempts": s["engine_calls"],
                          "responses": s["responses"], "revisions": s["revisions"],
                          "comparisons": s["comparisons"]}
    assert store.fetch("SELECT count(*) AS n FROM prompts")[0]["n"] == 24  # shared rows once
    (dupes,) = store.fetch("SELECT count(*) - count(DISTINCT key) AS n FROM generations")
    assert dupes["n"] == 0

    assert polls and all(p["rc"] == 0 for p in polls), [p["err"] for p in polls if p["rc"]]
    seen = [{r["run_id"] for r in json.loads(p["out"])} for p in polls]
    assert any(len(ids) == 2 for ids in seen[:-1]), "rlaif sql should see both runs' rows while they write"
    assert max(p["s"] for p in polls) < 10.0


HOLDER = textwrap.dedent("""
    import sys, time, duckdb
    con = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
    con.close()
""")


def hold(db: Path, seconds: float) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def test_a_run_that_cannot_get_the_database_fails_in_one_line_with_on_locked_fail(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    Store(db).migrate()
    holder = hold(db, 60)
    env = {**child_env(tmp_path), "RLAIF_ON_LOCKED": "fail"}  # lock_wait_s stays 30: fail must not wait it out
    try:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "rlaif.cli", "--db", str(db), "--engine", "fake", "demo",
                               "--limit", "2", "--no-prefect", "--no-progress"],
                              capture_output=True, text=True, env=env, timeout=60)
        took = time.monotonic() - started
    finally:
        holder.terminate()
        holder.wait(timeout=10)
    assert proc.returncode == StoreError.exit_code
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: database {db} is locked by another process (pid {holder.pid})")
    assert "on_locked=fail" in lines[0]
    assert took < 25, "on_locked=fail stops after one turn, not after lock_wait_s"


def test_on_locked_wait_says_so_once_then_gets_in(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    Store(db).migrate()
    notices: list[str] = []
    store = Store(db, lock_timeout_s=20, on_locked="wait", notice=notices.append, turn_s=0.3)
    holder = hold(db, 1.5)
    started = time.monotonic()
    with store.connect() as con:
        assert con.execute("SELECT count(*) FROM runs").fetchone() == (0,)
    waited = time.monotonic() - started
    holder.wait(timeout=10)
    assert 1.0 < waited < 15
    assert len(notices) == 1 and f"held by another process (pid {holder.pid}); waiting up to 20s" in notices[0]
    assert store.stats.waited == 1 and store.stats.max_wait_s >= 1.0


def test_on_locked_wait_gives_up_after_lock_wait_s(tmp_path: Path) -> None:
    db = tmp_path / "held.duckdb"
    Store(db).migrate()
    holder = hold(db, 30)
    try:
        store = Store(db, lock_timeout_s=0.8, on_locked="wait", notice=lambda line: None, turn_s=0.2)
        with pytest.raises(StoreError, match=r"locked by another process .* for over 0\.8s; wait for it"):
            store.fetch("SELECT 1")
    finally:
        holder.terminate()
        holder.wait(timeout=10)


def prompt_row(i: int) -> dict:
    from rlaif.store import utcnow

    return {"prompt_id": f"p{i}", "text": "t", "messages": [{"role": "user", "content": "t"}], "created_at": utcnow()}


@pytest.mark.parametrize("background", [False, True], ids=["sync", "background"])
def test_writer_paces_flushes_by_the_time_it_held_the_file(tmp_path: Path, background: bool) -> None:
    from rlaif.store import Writer

    store = Store(tmp_path / "paced.duckdb")
    store.migrate()
    paced = Writer(store, max_rows=1, max_age_s=60, max_busy=0.01, background=background)  # gap = 99 x hold
    paced.add("prompts", prompt_row(0))
    deadline = time.monotonic() + 10
    while paced.flushes < 1 and time.monotonic() < deadline:  # the writer thread's first flush
        time.sleep(0.01)
    for i in range(1, 10):
        paced.add("prompts", prompt_row(i))
        time.sleep(0.01)
    assert paced.flushes == 1 and paced.pending == 9  # every add was due; the pause keeps them for one batch
    started = time.monotonic()
    paced.close()  # not paced, and it cuts the writer thread's pause short
    assert time.monotonic() - started < 2.0 and paced.flushes == 2 and paced.pending == 0

    eager = Writer(store, max_rows=1, max_age_s=60, max_busy=1.0)
    for i in range(10, 15):
        eager.add("prompts", prompt_row(i))
    eager.close()
    assert eager.flushes == 5

    capped = Writer(store, max_rows=1, max_age_s=0.2, max_busy=0.01)  # the pause never outlasts max_age_s
    capped.add("prompts", prompt_row(15))
    time.sleep(0.3)
    capped.add("prompts", prompt_row(16))
    assert capped.flushes == 2 and capped.pending == 0
    assert store.fetch("SELECT count(*) AS n FROM prompts")[0]["n"] == 17
