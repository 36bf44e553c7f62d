"""Many writers, one dataset, no merge: real ``rlaif generate sft`` processes committing into one lake at once.

A real PostgreSQL catalog (tests/pg_server.py) and Parquet files in a temporary folder. Three ``--shard i/3``
workers start together (and migrate the empty lake together) while ``rlaif sql`` reads in a loop; then a fourth
run on another prompt file is killed with SIGKILL mid-run and run again. The fake engine logs every request key
it is sent, one file per process, so the test can tell which engine calls each process made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pg_server import PgServer, require

from rlaif.prompts import make_prompt
from rlaif.store import Store

ROOT = Path(__file__).resolve().parents[1]
CALLS_PER_PROMPT = 5  # respond, critique, revise, judge in both orders
SHARDED = [f"Give me one short tip about topic number {i}." for i in range(36)]
KILLED = [f"Name one good book about subject number {i}." for i in range(60)]
SCRIPT = """
import asyncio, sys
from rlaif.engines.fake import FakeEngine

log = open(sys.argv[1], "a", buffering=1)
delay = float(sys.argv[2])
chat, choose = FakeEngine.chat, FakeEngine.choose

async def slow_chat(self, request):
    log.write(request.key + "\\n")
    await asyncio.sleep(delay)
    return await chat(self, request)

async def slow_choose(self, request):
    log.write(request.key + "\\n")
    await asyncio.sleep(delay)
    return await choose(self, request)

FakeEngine.chat, FakeEngine.choose = slow_chat, slow_choose
from rlaif.cli import main
sys.exit(main(sys.argv[3:]))
"""
KEYS = {"generations": "key", "attempts": "attempt_id", "prompts": "prompt_id", "responses": "chain_id",
        "revisions": "chain_id || '/' || round", "comparisons": "comparison_id", "runs": "run_id"}


@pytest.fixture(scope="module")
def pg():
    require()
    server = PgServer().start()
    yield server
    server.stop()


def _source(tmp_path: Path, name: str, prompts: list[str]) -> Path:
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts), encoding="utf-8")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "RLAIF_CONFIG": str(tmp_path / "absent.toml"), "RLAIF_CONCURRENCY": "4",
            "RLAIF_BATCH_SIZE": "4", "RLAIF_LAKE_DATA_PATH": str(tmp_path / "lake-files"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _generate(tmp_path: Path, db: str, log: Path, source: Path, delay: float, *extra: str) -> list[str]:
    return [sys.executable, "-c", SCRIPT, str(log), str(delay), "--db", db, "--engine", "fake", "generate", "sft",
            "--prompts", str(source), "--judge", "--no-prefect", "--no-progress", *extra]


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _read(tmp_path: Path, db: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlaif.cli", "--db", db, "sql", "--format", "csv",
                           "SELECT count(*) AS n FROM generations"], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def _no_duplicate_keys(store: Store) -> None:
    for table, key in KEYS.items():
        (row,) = store.fetch(f"SELECT count(*) AS n, count(DISTINCT {key}) AS k FROM {table}")
        assert row["n"] == row["k"] > 0, f"{table}: {row['n']} rows, {row['k']} keys"


def _prompt_ids(prompts: list[str]) -> set[str]:
    return {make_prompt(p).prompt_id for p in prompts}


def test_three_shard_workers_and_a_killed_fourth_write_one_lake(pg: PgServer, tmp_path: Path) -> None:
    db = f"ducklake:postgres:{pg.create_db('writers')}"
    env, source = _env(tmp_path), _source(tmp_path, "sharded", SHARDED)
    logs = [tmp_path / f"shard{i}.log" for i in (1, 2, 3)]
    workers = [subprocess.Popen(_generate(tmp_path, db, log, source, 0.02, "--shard", f"{i}/3"), env=env,
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for i, log in zip((1, 2, 3), logs)]
    reads: list[int] = []
    deadline = time.monotonic() + 300
    while any(w.poll() is None for w in workers) and time.monotonic() < deadline:
        done = _read(tmp_path, db)
        if done.returncode == 0:
            reads.append(int(done.stdout.split()[1]))
        else:  # only before the first worker has created the lake's tables
            assert not reads, done.stderr
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-3000:]
    assert len(reads) >= 2 and reads == sorted(reads), reads  # answered during the run, never going back

    store = Store(db)
    _no_duplicate_keys(store)
    calls = [set(_lines(log)) for log in logs]
    assert all(calls) and sum(map(len, calls)) == len(set().union(*calls)) == len(SHARDED) * CALLS_PER_PROMPT
    assert {r["prompt_id"] for r in store.fetch("SELECT prompt_id FROM responses")} == _prompt_ids(SHARDED)
    assert {r["prompt_id"] for r in store.fetch("SELECT prompt_id FROM sft_candidates WHERE final")} == _prompt_ids(
        SHARDED)
    runs = store.fetch("SELECT status FROM runs")
    assert [r["status"] for r in runs] == ["completed"] * 3

    killed_source, first, second = _source(tmp_path, "killed", KILLED), tmp_path / "first.log", tmp_path / "2.log"
    proc = subprocess.Popen(_generate(tmp_path, db, first, killed_source, 0.1), env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total, before = len(KILLED) * CALLS_PER_PROMPT, len(SHARDED) * CALLS_PER_PROMPT
    deadline = time.monotonic() + 180
    while proc.poll() is None and time.monotonic() < deadline:  # until some of its rows are committed
        if store.fetch("SELECT count(*) AS n FROM generations")[0]["n"] > before + 10:
            break
        time.sleep(0.1)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    stored = {r["key"] for r in store.fetch("SELECT key FROM generations")}
    assert before < len(stored) < before + total, "the kill must land mid-run, after some rows were committed"

    done = subprocess.run(_generate(tmp_path, db, second, killed_source, 0.0), env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(resumed)" in done.stdout
    assert set(_lines(second)) & stored == set(), "requests sent again although their results were stored"
    assert len(_lines(second)) < total
    _no_duplicate_keys(store)
    assert {r["prompt_id"] for r in store.fetch("SELECT prompt_id FROM responses")} == _prompt_ids(
        SHARDED + KILLED)
    assert store.fetch("SELECT count(*) AS n FROM generations")[0]["n"] == (len(SHARDED) + len(KILLED)) * 5
    assert [r["status"] for r in store.fetch("SELECT status FROM runs")] == ["completed"] * 4
