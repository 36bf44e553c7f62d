"""kill -9 of a real `rlaif generate sft` process mid-run on a real DuckDB file, then the same command again.

The engine is the fake one, slowed down and logging every request key it is sent (to a file per process), so
the test can tell which engine calls each process made. After the rerun: every prompt of the source has its
rows, no row is duplicated, and no request whose result was stored before the kill was sent again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlaif.prompts import make_prompt
from rlaif.store import Store

PROMPTS = [f"Give me one short tip about topic number {i}." for i in range(80)]
CALLS_PER_PROMPT = 5  # respond, critique, revise, judge in both orders

# The real CLI entry point, with the fake engine slowed down and writing each request key it gets to a file.
SCRIPT = """
import asyncio, sys
from rlaif.engines.fake import FakeEngine

log = open(sys.argv[1], "a", buffering=1)
chat, choose = FakeEngine.chat, FakeEngine.choose

async def slow_chat(self, request):
    log.write(request.key + "\\n")
    await asyncio.sleep(0.05)
    return await chat(self, request)

async def slow_choose(self, request):
    log.write(request.key + "\\n")
    await asyncio.sleep(0.05)
    return await choose(self, request)

FakeEngine.chat, FakeEngine.choose = slow_chat, slow_choose
from rlaif.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _command(tmp_path: Path, log: Path) -> list[str]:
    source = tmp_path / "prompts.jsonl"
    if not source.exists():
        source.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS), encoding="utf-8")
    return [sys.executable, "-c", SCRIPT, str(log), "--db", str(tmp_path / "run.duckdb"), "--engine", "fake",
            "generate", "sft", "--prompts", str(source), "--judge", "--no-prefect", "--no-progress"]


def _env(tmp_path: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "RLAIF_CONFIG": str(tmp_path / "absent.toml"), "RLAIF_CONCURRENCY": "4",
            "RLAIF_BATCH_SIZE": "4", "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_kill_9_mid_run_then_rerun_resumes_without_duplicates_or_repeated_calls(tmp_path):
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    proc = subprocess.Popen(_command(tmp_path, first_log), env=_env(tmp_path), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    total = len(PROMPTS) * CALLS_PER_PROMPT
    deadline = time.monotonic() + 120
    while len(_lines(first_log)) < total // 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()

    store = Store(tmp_path / "run.duckdb")
    stored = {r["key"] for r in store.fetch("SELECT key FROM generations")}
    assert 0 < len(stored) < total, "the kill must land mid-run, after some rows were flushed"
    (run,) = store.fetch("SELECT run_id, status FROM runs")
    assert run["status"] == "running"  # killed: nobody recorded an end

    done = subprocess.run(_command(tmp_path, second_log), env=_env(tmp_path), cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming run {run['run_id']} (running)" in done.stdout

    resent = set(_lines(second_log)) & stored
    assert resent == set(), f"{len(resent)} requests were sent again although their results were stored"
    assert len(_lines(second_log)) < total  # the rerun did only what was missing
    wanted = {make_prompt(p).prompt_id for p in PROMPTS}
    assert {r["prompt_id"] for r in store.fetch("SELECT prompt_id FROM responses")} == wanted
    assert {r["prompt_id"] for r in store.fetch("SELECT prompt_id FROM sft_candidates WHERE final")} == wanted
    assert {r["prompt_id"] for r in store.fetch("SELECT prompt_id FROM comparisons")} == wanted
    for table, key in (("generations", "key"), ("responses", "chain_id"), ("comparisons", "comparison_id"),
                       ("prompts", "prompt_id"), ("attempts", "attempt_id")):
        (row,) = store.fetch(f"SELECT count(*) AS n, count(DISTINCT {key}) AS k FROM {table}")
        assert row["n"] == row["k"] > 0, table
    assert store.fetch("SELECT count(*) AS n FROM generations")[0]["n"] == total
    (after,) = store.fetch("SELECT run_id, status FROM runs")
    assert after == {"run_id": run["run_id"], "status": "completed"}
