"""kill -9 of a process running ``rlaif generate prefs`` mid-run (real subprocess, real DuckDB file, slowed fake
engine), then a rerun: nothing lost, nothing stored twice, no engine call repeated for a stored result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rlaif.prompts import make_prompt
from rlaif.store import Store

CHILD = Path(__file__).with_name("slow_fake_cli.py")
PROMPTS, SAMPLES = 40, 3
PAIRS = SAMPLES * (SAMPLES - 1) // 2
CALLS = PROMPTS * (SAMPLES + 2 * PAIRS) + 2  # samples, both orders of each pair, one canary check
KILL_AFTER = CALLS // 2


def _command(db: Path, prompts: Path) -> list[str]:
    return [sys.executable, str(CHILD), "--db", str(db), "generate", "prefs", "--prompts", str(prompts),
            "--samples", str(SAMPLES), "--judge-mode", "choice", "--no-prefect", "--no-progress"]


def _kill_midway(command: list[str], env: dict, served: int, timeout_s: float = 120.0) -> datetime:
    """Start the child, SIGKILL it once ``served`` engine calls have come back; returns the kill time."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + timeout_s
    try:
        for line in child.stdout:  # type: ignore[union-attr]
            if line.startswith("served ") and int(line.split()[1]) >= served:
                break
            assert time.monotonic() < deadline, "the child never got halfway"
        else:
            raise AssertionError(f"the child ended before it was killed: {child.stderr.read()}")  # type: ignore
        child.send_signal(signal.SIGKILL)
        killed_at = datetime.now(UTC).replace(tzinfo=None)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    return killed_at


def test_kill_9_mid_run_then_rerun_loses_and_repeats_nothing(tmp_path):
    prompts, db = tmp_path / "prompts.jsonl", tmp_path / "kill.duckdb"
    texts = [f"Question {i}: how should I handle situation {i}?" for i in range(PROMPTS)]
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts), encoding="utf-8")
    root = str(Path(__file__).resolve().parents[1])  # this checkout's rlaif, whatever is installed
    env = {**os.environ, "RLAIF_ENGINE": "fake", "RLAIF_CONFIG": str(tmp_path / "absent.toml"),
           "SLOW_FAKE_DELAY_S": "0.01", "SLOW_FAKE_WIDTH": "2",
           "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    killed_at = _kill_midway(_command(db, prompts), env, KILL_AFTER)

    store = Store(db)
    stored = {r["key"] for r in store.fetch("SELECT key FROM generations")}
    (run,) = store.fetch("SELECT run_id, status FROM runs")
    assert run["status"] == "running"  # it never got to record an end
    assert 0 < len(stored) < CALLS, "the kill must come after some results were stored and before the end"

    rerun = subprocess.run(_command(db, prompts), capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming run {run['run_id']} (running)" in rerun.stdout

    (again,) = store.fetch("SELECT run_id, status FROM runs")
    assert again == {"run_id": run["run_id"], "status": "completed"}
    # no engine call repeated for a result stored before the kill
    retried = {r["key"] for r in store.fetch("SELECT key FROM attempts WHERE started_at > ?", [killed_at])}
    assert retried and not (retried & stored)
    assert len(retried) == CALLS - len(stored)  # exactly the calls whose results the kill lost, once each
    # everything there exactly once: every call one generations row, every prompt its candidates and pairs
    assert store.fetch("SELECT count(*) AS n, count(DISTINCT key) AS keys FROM generations")[0] == {
        "n": CALLS, "keys": CALLS}
    per_prompt = store.fetch("SELECT prompt_id, count(DISTINCT pair_id) AS pairs, count(*) AS n "
                             "FROM comparisons GROUP BY prompt_id")
    assert {r["prompt_id"] for r in per_prompt} == {make_prompt(t).prompt_id for t in texts}
    assert all(r["pairs"] == PAIRS == r["n"] for r in per_prompt)
    assert store.fetch("SELECT count(*) AS n FROM candidates")[0]["n"] == PROMPTS * SAMPLES
    assert store.fetch("SELECT count(DISTINCT seq) AS n FROM canary_results")[0]["n"] == 1
